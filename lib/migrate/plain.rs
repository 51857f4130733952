//! `--mode plain`: nothing written into the image; the `cryptsetup open --type plain|loopaes`
//! commands, a crypttab line and optionally a raw key file.

use super::plan;
use super::{Outcome, source_path};
use crate::image::Opened;
use std::path::{Path, PathBuf};

/// Options for [`plain`].
#[derive(Debug, Clone)]
pub struct PlainOptions {
    /// `--key-out FILE`: write the raw key (or the loop-AES key file) there, mode 0600.
    pub key_out: Option<PathBuf>,
    /// The device-mapper name to use in the commands.
    pub name: String,
    /// Replace an existing key file.
    pub force: bool,
    /// The loop-AES key file's cleartext contents, when the source is multi-key.
    pub loopaes_key_file: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// The passphrase length (never its bytes), to judge cryptsetup's own hashing.
    pub pass_len: Option<usize>,
}

/// `--mode plain`: nothing is written into the image. Builds the mapping commands and, with
/// `key_out`, writes the key file (atomically, mode 0600).
///
/// What a failure leaves: nothing but possibly `KEYFILE.partial` (mode 0600).
///
/// # Errors
/// `InvalidInput` for a locked source; `Unsafe` for an existing key file without `force`; `Io`.
pub fn plain(opened: &Opened, opts: &PlainOptions) -> crate::Result<(Outcome, plan::PlainMapping)> {
    let layout = opened.payload()?.map(|(l, _)| l);
    let info = match layout {
        Some(l) => plan::source_info(opened, l)?,
        None => {
            plan::source_info(opened, crate::volume::Layout { offset_bytes: 0, size_bytes: 0, iv_offset_sectors: 0 })?
        }
    };
    let image = opened.path.display().to_string();
    let abs_image = source_path(opened);
    let key_abs = opts.key_out.as_ref().map(|k| {
        let r = std::fs::canonicalize(k.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
            .map(|d| d.join(k.file_name().unwrap_or_default()))
            .unwrap_or_else(|_| k.clone());
        r.display().to_string()
    });
    let key_arg = opts.key_out.as_ref().map(|k| k.display().to_string());
    let key_file = key_arg.as_deref().zip(key_abs.as_deref());
    let mapping = plan::plain_mapping(opened, &image, &abs_image, key_file, &opts.name, opts.pass_len)?;
    let mut notes = Vec::new();
    if let Some(k) = &opts.key_out {
        let bytes: zeroize::Zeroizing<Vec<u8>> = match (mapping.key_file_kind, opened.keys()) {
            (plan::KeyFileKind::RawKey, Some(crate::formats::legacy::KeyMaterial::Single(key))) => {
                zeroize::Zeroizing::new(key.bytes().to_vec())
            }
            (plan::KeyFileKind::LoopAesKeyFile, _) => opts.loopaes_key_file.clone().ok_or_else(|| {
                crate::Error::invalid("a loop-AES multi-key image needs its --key-file to write a key file")
            })?,
            _ => return Err(crate::Error::invalid("this image has no key to write (--key-out)")),
        };
        crate::output::write_file_atomically(k, &bytes, opts.force, 0o600, &[&opened.path])?;
        notes.push(crate::finding::Finding::info(
            "migrate.key-written",
            format!("wrote the key to {} (mode 0600); keep it as safe as the passphrase", k.display()),
        ));
    }
    Ok((
        Outcome {
            mode: super::MigrationMode::Plain,
            output: opts.key_out.clone(),
            format: None,
            uuid: None,
            source: info,
            source_sha256: None,
            migrated_sha256: None,
            kdf: None,
            resumed_from_bytes: None,
            cryptsetup: mapping.key_file_command.clone().or_else(|| mapping.passphrase_command.clone()),
            notes,
        },
        mapping,
    ))
}
