//! The `inspect` document (and the inspect part `verify` flattens into its own).

use super::{Ecc, Encryption, Filesystem, JSON_VERSION, ecc_of, encryption_of, filesystem_of};
use crate::detect::Outcome as Detection;
use crate::image::{Content, Opened};
use serde::{Deserialize, Serialize};

/// Another parameter set that also matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alternative {
    /// Its encryption parameters.
    pub encryption: Encryption,
    /// Its file system type.
    pub filesystem_type: String,
}

/// How detection went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionReport {
    /// Parameter combinations decrypted and checked.
    pub combinations_tried: usize,
    /// Distinct keys derived.
    pub keys_tried: usize,
    /// Payload offsets considered.
    pub offsets_tried: Vec<u64>,
    /// Bytes scanned for signatures.
    pub scanned_bytes: u64,
    /// Milliseconds spent.
    pub elapsed_ms: u64,
    /// Lower-ranked matches.
    pub alternatives: Vec<Alternative>,
}

/// `loopkit inspect --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inspect {
    /// Always [`JSON_VERSION`].
    pub loopkit_json: u32,
    /// `inspect` or `verify`.
    pub command: String,
    /// The image path as given.
    pub image: String,
    /// Image size.
    pub size_bytes: u64,
    /// Bytes allocated on disk (sparse files use fewer).
    pub allocated_bytes: Option<u64>,
    /// `plain`, `legacy-encrypted`, `luks`, `needs-secret`, `unknown`.
    pub kind: String,
    /// A passphrase or key file is needed to go further.
    pub needs_secret: bool,
    /// Encryption, or null for an unencrypted image.
    pub encryption: Option<Encryption>,
    /// The file system, or null.
    pub filesystem: Option<Filesystem>,
    /// The `cryptsetup open` command that maps the same data, or null.
    pub cryptsetup: Option<String>,
    /// The same command as an argument vector (program first), to run without a shell, or null.
    pub cryptsetup_argv: Option<Vec<String>>,
    /// For a key piped into cryptsetup (`--key-file=-`): the argument vector of the program whose
    /// output is its standard input (`gpg --decrypt FILE`), else null.
    pub cryptsetup_stdin_from: Option<Vec<String>>,
    /// The typed command behind the three fields above (not part of the JSON).
    #[serde(skip)]
    pub cryptsetup_command: Option<crate::formats::cryptsetup::OpenCommand>,
    /// Caveats for that command.
    pub cryptsetup_notes: Vec<String>,
    /// Detection statistics (legacy images).
    pub detection: Option<DetectionReport>,
    /// dvdisaster error-correction data, or null (`verify` fills in the check results).
    pub ecc: Option<Ecc>,
    /// LUKS header details (LUKS images), or null.
    pub luks: Option<LuksDetails>,
    /// Remarks.
    pub notes: Vec<String>,
}

/// A LUKS keyslot in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuksKeyslot {
    /// Slot number.
    pub id: u32,
    /// KDF summary, e.g. `argon2id (time 4, memory 1048576 KiB, 4 cpus)`.
    pub kdf: String,
    /// LUKS2 priority (null = normal).
    pub priority: Option<u32>,
}

/// What a LUKS header says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuksDetails {
    /// 1 or 2.
    pub version: u16,
    /// Header UUID.
    pub uuid: String,
    /// LUKS2 label.
    pub label: Option<String>,
    /// Payload sector size.
    pub sector_size: u32,
    /// Payload length if fixed (null: to the end of the device).
    pub payload_size_bytes: Option<u64>,
    /// Active keyslots.
    pub keyslots: Vec<LuksKeyslot>,
    /// LUKS2 token types.
    pub tokens: Vec<String>,
    /// The keyslot the passphrase opened (null when locked).
    pub opened_keyslot: Option<u32>,
    /// The detached header file used, if any.
    pub detached_header: Option<String>,
}

fn detection_of(o: &Detection) -> DetectionReport {
    DetectionReport {
        combinations_tried: o.combinations_tried,
        keys_tried: o.keys_tried,
        offsets_tried: o.offsets_tried.clone(),
        scanned_bytes: o.scanned_bytes,
        elapsed_ms: o.elapsed.as_millis() as u64,
        alternatives: o
            .alternatives
            .iter()
            .map(|a| Alternative { encryption: encryption_of(&a.params, &[]), filesystem_type: a.fs.kind.to_string() })
            .collect(),
    }
}

/// Build the `inspect` document. `pass_len` (the passphrase length, never its bytes) decides
/// whether cryptsetup's own hashing can reproduce a raw key.
pub fn inspect(opened: &Opened, pass_len: Option<usize>) -> Inspect {
    let image = opened.path.display().to_string();
    let mut r = Inspect {
        loopkit_json: JSON_VERSION,
        command: "inspect".into(),
        image: image.clone(),
        size_bytes: crate::source::ByteSource::size_bytes(&*opened.file),
        allocated_bytes: opened.allocated_bytes,
        kind: String::new(),
        needs_secret: false,
        encryption: None,
        filesystem: opened.filesystem().map(filesystem_of),
        cryptsetup: None,
        cryptsetup_argv: None,
        cryptsetup_stdin_from: None,
        cryptsetup_command: None,
        cryptsetup_notes: Vec::new(),
        detection: None,
        ecc: opened.ecc.as_ref().map(ecc_of),
        luks: None,
        notes: crate::finding::Finding::messages(&opened.notes),
    };
    match &opened.content {
        Content::Plain { offset_bytes, .. } => {
            r.kind = "plain".into();
            if *offset_bytes != 0 {
                r.notes
                    .push(format!("the file system starts at byte {offset_bytes} (losetup --offset {offset_bytes})"));
            }
        }
        Content::UnknownPlain { .. } => {
            r.kind = "unknown".into();
            r.notes.push("no known file system or header was recognised".into());
        }
        Content::Legacy(o) => {
            r.kind = "legacy-encrypted".into();
            if let Some(f) = &o.found {
                r.encryption = Some(encryption_of(&f.params, &f.equivalent_derivations));
                let kf = f.key_file.as_ref().map(|(p, gpg)| (p.to_str().unwrap_or("KEYFILE"), *gpg));
                let cs = f.params.cryptsetup_with_key_file(&image, pass_len, kf);
                set_command(&mut r, cs.command);
                r.cryptsetup_notes = crate::finding::Finding::messages(&cs.notes);
                if f.fs.is_none() {
                    r.notes.push("the parameters were given explicitly and no file system confirms them".into());
                }
                if let crate::formats::legacy::Mode::Cbc(
                    crate::crypto::cbc::IvScheme::Plain | crate::crypto::cbc::IvScheme::Plain64,
                ) = f.params.mode
                {
                    let c = f.params.cipher;
                    r.notes.push(format!(
                        "cryptoloop ({c}-cbc-plain) and loop-AES single-key ({c}-cbc-plain64) give identical bytes \
                         below 2 TiB; the scheme shown is the one whose tools used this key derivation"
                    ));
                }
                if !o.alternatives.is_empty() {
                    r.notes.push(format!(
                        "{} other parameter set(s) also produced a file system; the most likely one is shown",
                        o.alternatives.len()
                    ));
                }
            }
            r.detection = Some(detection_of(o));
        }
        Content::Luks { header, detached_header } => {
            let hdr = detached_header.as_ref().map(|p| p.display().to_string());
            luks_report(&mut r, header, &image, None, hdr);
            r.needs_secret = true;
        }
        Content::LuksUnlocked(u) => {
            let hdr = u.detached_header.as_ref().map(|p| p.display().to_string());
            luks_report(&mut r, &u.luks.header, &image, Some(u.keyslot), hdr);
        }
        Content::NeedsSecret { looks_random } => {
            r.kind = "needs-secret".into();
            r.needs_secret = true;
            r.notes.push(match looks_random {
                Some(true) => "no file system or header found and the data looks random: probably encrypted \
                               (cryptoloop or loop-AES); give the passphrase to find the parameters"
                    .into(),
                Some(false) => "no file system or header found, and the data does not look encrypted".into(),
                None => "no file system or header found (the image is mostly empty)".into(),
            });
        }
    }
    r
}

/// The command and its renderings (line, argument vectors).
fn set_command(r: &mut Inspect, c: Option<crate::formats::cryptsetup::OpenCommand>) {
    r.cryptsetup = c.as_ref().map(|c| c.shell_line());
    r.cryptsetup_argv = c.as_ref().map(|c| c.argv());
    r.cryptsetup_stdin_from = c.as_ref().and_then(|c| c.stdin_from());
    r.cryptsetup_command = c;
}

fn luks_report(
    r: &mut Inspect,
    h: &crate::formats::luks::Header,
    image: &str,
    opened: Option<u32>,
    detached_header: Option<String>,
) {
    use crate::formats::cryptsetup::{DeviceType, OpenCommand};
    r.kind = "luks".into();
    r.encryption = Some(Encryption {
        scheme: format!("luks{}", h.version),
        cipher: h.cipher.clone(),
        key_bits: h.key_bits,
        key_derivation: None,
        multi_key: None,
        offset_bytes: h.payload_offset_bytes,
        iv_offset_sectors: h.iv_offset_sectors,
        equivalent_derivations: Vec::new(),
        pseed: false,
        itercountk: None,
        size_limit_bytes: h.payload_size_bytes,
    });
    set_command(
        r,
        Some(OpenCommand { header: detached_header.clone(), ..OpenCommand::new(DeviceType::Luks, image, "luks") }),
    );
    r.notes.push(format!("LUKS{} UUID {}, {} keyslot(s)", h.version, h.uuid, h.keyslots));
    if let Some(k) = opened {
        r.notes.push(format!("keyslot {k} opened with the passphrase"));
    }
    r.luks = Some(LuksDetails {
        version: h.version,
        uuid: h.uuid.clone(),
        label: h.label.clone(),
        sector_size: h.sector_size,
        payload_size_bytes: h.payload_size_bytes,
        keyslots: h
            .keyslot_details
            .iter()
            .map(|k| LuksKeyslot { id: k.id, kdf: k.kdf.clone(), priority: k.priority })
            .collect(),
        tokens: h.token_types.clone(),
        opened_keyslot: opened,
        detached_header,
    });
}
