//! Pure planning for `migrate` (no I/O): what the source is, what the target layout will be,
//! whether LUKS can express the legacy mapping, the cryptsetup/crypttab text for `--mode plain`,
//! and the provenance token. Everything here is a function of its arguments, so it is unit
//! tested without files.

use crate::formats::cryptsetup::{DeviceType, KEY_FILE_PLACEHOLDER, KeySource, OpenCommand};
use crate::formats::legacy::{Mode, Params, shell_quote};
use crate::formats::luks::write::{LUKS1_PAYLOAD_SECTOR, LUKS2_DATA_OFFSET, LUKS2_HDR_SIZE};
use crate::image::{Content, Opened};
use crate::volume::Layout;
use serde::{Deserialize, Serialize};

/// The source as the provenance token and checkpoint record it (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceInfo {
    /// `cryptoloop`, `loop-aes`, `plain`, `luks1`, `luks2`.
    pub scheme: String,
    /// dm-crypt cipher spelling (`aes-cbc-plain`…), null for plain images.
    pub cipher: Option<String>,
    /// Key size in bits (null for plain images).
    pub key_bits: Option<u32>,
    /// How the key came from the passphrase (legacy images).
    pub key_derivation: Option<String>,
    /// loop-AES multi-key version.
    pub multi_key: Option<String>,
    /// Payload start in the source file.
    pub offset_bytes: u64,
    /// IV sector of the payload's first sector.
    pub iv_offset_sectors: u64,
    /// Payload length.
    pub payload_bytes: u64,
}

/// Describe the source of a migration.
///
/// # Errors
/// `InvalidInput` when the image has no readable payload (locked, needs a secret).
pub fn source_info(opened: &Opened, layout: Layout) -> crate::Result<SourceInfo> {
    let base = |scheme: &str| SourceInfo {
        scheme: scheme.into(),
        cipher: None,
        key_bits: None,
        key_derivation: None,
        multi_key: None,
        offset_bytes: layout.offset_bytes,
        iv_offset_sectors: layout.iv_offset_sectors,
        payload_bytes: layout.size_bytes,
    };
    Ok(match &opened.content {
        Content::Plain { .. } | Content::UnknownPlain { .. } => base("plain"),
        Content::Legacy(o) => {
            let f =
                o.found.as_ref().ok_or_else(|| crate::Error::invalid("no parameter set was found for the source"))?;
            let p = &f.params;
            SourceInfo {
                cipher: Some(p.cipher_name()),
                key_bits: Some(p.key_bits),
                key_derivation: Some(p.derivation.to_string()),
                multi_key: p.multi_key.map(|m| m.to_string()),
                ..base(p.scheme.name())
            }
        }
        Content::LuksUnlocked(u) => {
            let h = &u.luks.header;
            SourceInfo {
                cipher: Some(h.cipher.clone()),
                key_bits: Some(h.key_bits),
                ..base(&format!("luks{}", h.version))
            }
        }
        Content::Luks { .. } | Content::NeedsSecret { .. } => {
            return Err(crate::Error::invalid(
                "the source is encrypted and locked: give its passphrase (--passphrase-file/--passphrase-fd) or --key-file",
            ));
        }
    })
}

/// The new container's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetLayout {
    /// LUKS2 (true) or LUKS1.
    pub luks2: bool,
    /// Where the payload starts in the output.
    pub payload_offset_bytes: u64,
    /// Payload length (= source payload length).
    pub payload_bytes: u64,
}

impl TargetLayout {
    /// cryptsetup's default layout for a payload of `payload_bytes`.
    pub fn new(luks2: bool, payload_bytes: u64) -> TargetLayout {
        let payload_offset_bytes = if luks2 { LUKS2_DATA_OFFSET } else { u64::from(LUKS1_PAYLOAD_SECTOR) * 512 };
        TargetLayout { luks2, payload_offset_bytes, payload_bytes }
    }
    /// Total output size.
    pub fn total_bytes(&self) -> u64 {
        self.payload_offset_bytes + self.payload_bytes
    }
}

/// Why a detached LUKS2 header cannot describe this source, or the segment it would use:
/// `(cipher, offset_bytes, fixed size)`.
///
/// # Errors
/// `Unsupported` with an explanation that points at `--mode plain` / `--mode reencrypt`.
pub fn detached_segment(opened: &Opened) -> crate::Result<(String, u64, Option<u64>)> {
    let p: &Params = match &opened.content {
        Content::Legacy(o) => {
            &o.found.as_ref().ok_or_else(|| crate::Error::invalid("no parameters were found"))?.params
        }
        Content::Plain { .. } | Content::UnknownPlain { .. } => {
            return Err(crate::Error::unsupported(
                "the source is not encrypted: a LUKS header cannot describe plaintext; use --mode reencrypt to encrypt it \
                 into a new LUKS2 container",
            ));
        }
        Content::LuksUnlocked(_) | Content::Luks { .. } => {
            return Err(crate::Error::unsupported(
                "the source already has a LUKS header; use --mode reencrypt to rewrite it as a new container",
            ));
        }
        Content::NeedsSecret { .. } => return Err(crate::Error::invalid("the source needs its passphrase")),
    };
    if p.mode == Mode::Lmk {
        return Err(crate::Error::unsupported(format!(
            "loop-AES multi-key ({}) uses 64 keys and an MD5-based IV (dm-crypt lmk); a LUKS header holds one key \
             and cannot express it. Use --mode plain for the exact `cryptsetup open --type loopaes` mapping, or \
             --mode reencrypt to rewrite the data into a LUKS2 aes-xts-plain64 container",
            p.multi_key.map_or_else(|| "v2".to_string(), |m| m.to_string())
        )));
    }
    if p.iv_offset_sectors != 0 {
        return Err(crate::Error::unsupported(format!(
            "the payload's first sector uses IV sector {} (losetup offset counted in the IV); cryptsetup ignores a \
             LUKS2 segment's iv_tweak outside re-encryption and always starts IVs at 0, so a LUKS header cannot map \
             this image unchanged. Use --mode plain (cryptsetup --type plain --skip {}) or --mode reencrypt",
            p.iv_offset_sectors, p.iv_offset_sectors
        )));
    }
    let min = 2 * LUKS2_HDR_SIZE + (u64::from(p.key_bits / 8) * 4000).div_ceil(4096) * 4096;
    if !p.offset_bytes.is_multiple_of(512) || (p.offset_bytes != 0 && p.offset_bytes < min) {
        return Err(crate::Error::unsupported(format!(
            "the payload starts at byte {}; a LUKS2 header can only describe data at byte 0 or at a 512-aligned \
             offset of at least {min} bytes (cryptsetup's keyslot-area rule). Use --mode plain or --mode reencrypt",
            p.offset_bytes
        )));
    }
    // A fixed segment size is the payload actually mapped (whole sectors, within the file), as
    // cryptsetup requires a non-zero multiple of the sector size.
    let fixed = match p.size_limit_bytes {
        Some(_) => opened.payload()?.map(|(layout, _)| layout.size_bytes),
        None => None,
    };
    Ok((p.cipher_name(), p.offset_bytes, fixed))
}

/// What `--mode plain` prints (and writes with `-o`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainMapping {
    /// The command that asks for the passphrase (None if cryptsetup cannot derive the key).
    pub passphrase_command: Option<OpenCommand>,
    /// The command that reads the raw key (or loop-AES key file) from the key file.
    pub key_file_command: Option<OpenCommand>,
    /// An `/etc/crypttab` line using the key file (None where no crypttab type fits).
    pub crypttab: Option<String>,
    /// What the key file must hold: the raw key, or the loop-AES key file.
    pub key_file_kind: KeyFileKind,
    /// Caveats.
    pub notes: Vec<crate::finding::Finding>,
}

/// What `--key-out` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFileKind {
    /// The raw volume key (cryptsetup plain `--key-file`, exactly `--key-size` bits).
    RawKey,
    /// The cleartext loop-AES key file (64/65 lines) for `--type loopaes`.
    LoopAesKeyFile,
    /// No key (unencrypted image).
    None,
}

/// Build the `--mode plain` commands for `image` (as the user named it) mapped as `name`.
/// `key_file` is the key file as the user named it and as an absolute path; the crypttab line
/// uses `abs_image` and the absolute key file (crypttab needs absolute paths).
pub fn plain_mapping(
    opened: &Opened,
    image: &str,
    abs_image: &str,
    key_file: Option<(&str, &str)>,
    name: &str,
    pass_len: Option<usize>,
) -> crate::Result<PlainMapping> {
    let key = key_file.map_or(KeySource::Placeholder, |(k, _)| KeySource::File(k.to_string()));
    let abs_key = key_file.map_or(KEY_FILE_PLACEHOLDER, |(_, a)| a);
    let q = shell_quote(image);
    match &opened.content {
        Content::Plain { offset_bytes, .. } | Content::UnknownPlain { offset_bytes } => {
            let off = if *offset_bytes == 0 { String::new() } else { format!(" --offset {offset_bytes}") };
            Ok(PlainMapping {
                passphrase_command: None,
                key_file_command: None,
                crypttab: None,
                key_file_kind: KeyFileKind::None,
                notes: vec![crate::finding::Finding::info(
                    "migrate.not-encrypted",
                    format!(
                        "the image is not encrypted: map it with `losetup --read-only --find --show{off} {q}` and mount the \
                     loop device read-only"
                    ),
                )],
            })
        }
        Content::Legacy(o) => {
            let f = o.found.as_ref().ok_or_else(|| crate::Error::invalid("no parameters were found"))?;
            let p = &f.params;
            let cs = p.cryptsetup(image, pass_len);
            let mut notes = cs.notes.clone();
            let Some(cmd) = cs.command.map(|c| c.with_name(name)) else {
                return Ok(PlainMapping {
                    passphrase_command: None,
                    key_file_command: None,
                    crypttab: None,
                    key_file_kind: KeyFileKind::RawKey,
                    notes,
                });
            };
            if p.mode == Mode::Lmk {
                notes.push(crate::finding::Finding::info(
                    "migrate.no-crypttab-loop-aes",
                    "systemd-cryptsetup has no loop-AES mode, so no crypttab line is given; use --mode reencrypt for a \
                     container that boots from crypttab",
                ));
                return Ok(PlainMapping {
                    passphrase_command: None,
                    key_file_command: Some(cmd.with_key(key)),
                    crypttab: None,
                    key_file_kind: KeyFileKind::LoopAesKeyFile,
                    notes,
                });
            }
            // With --key-file cryptsetup plain mode takes the file's first --key-size bits: no --hash.
            let key_cmd = OpenCommand { hash: None, key, ..cmd.clone() };
            let crypttab = key_cmd.crypttab(abs_image, Some(abs_key));
            if p.size_limit_bytes.is_some() {
                notes.push(crate::finding::Finding::info(
                    "migrate.no-crypttab-size-limit",
                    "crypttab has no option for a size limit (losetup --sizelimit); use the cryptsetup command",
                ));
            }
            notes.push(crate::finding::Finding::info("migrate.key-file-no-hashing", 
                "with --key-file cryptsetup plain mode reads the first --key-size bits of the file and does no hashing: \
                 the raw key file removes every passphrase-hashing ambiguity"),
            );
            Ok(PlainMapping {
                passphrase_command: if cs.needs_raw_key_file { None } else { Some(cmd) },
                key_file_command: Some(key_cmd),
                crypttab,
                key_file_kind: KeyFileKind::RawKey,
                notes,
            })
        }
        Content::LuksUnlocked(_) | Content::Luks { .. } => {
            let cmd = OpenCommand::new(DeviceType::Luks, image, name);
            Ok(PlainMapping {
                crypttab: cmd.crypttab(abs_image, None),
                passphrase_command: Some(cmd),
                key_file_command: None,
                key_file_kind: KeyFileKind::None,
                notes: vec![crate::finding::Finding::info(
                    "migrate.already-luks",
                    "the image is already LUKS: it needs no migration to be mapped",
                )],
            })
        }
        Content::NeedsSecret { .. } => Err(crate::Error::invalid(
            "the image looks encrypted: give its passphrase or key file so the parameters can be found",
        )),
    }
}

/// The LUKS2 provenance token (`type` `loopkit-migration`).
pub fn provenance_token(source: &SourceInfo, source_path: &str, payload_sha256: &str, date: &str) -> serde_json::Value {
    let path: String = source_path.chars().take(512).collect();
    serde_json::json!({
        "type": "loopkit-migration",
        "keyslots": [],
        "loopkit_version": env!("CARGO_PKG_VERSION"),
        "date": date,
        "source_path": path,
        "source": source,
        "payload_sha256": payload_sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let t = TargetLayout::new(true, 1 << 20);
        assert_eq!((t.payload_offset_bytes, t.total_bytes()), (16 << 20, 17 << 20));
        let t = TargetLayout::new(false, 512);
        assert_eq!(t.payload_offset_bytes, 2 << 20);
        assert_eq!(crate::formats::cryptsetup::crypttab_field("a b"), "a\\040b");
    }
}
