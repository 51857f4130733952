//! The `migrate` document.

use super::{JSON_VERSION, hex};
use serde::{Deserialize, Serialize};

/// The `--mode plain` part of a migrate document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainMapping {
    /// `cryptsetup open` reading the passphrase at the prompt (null when cryptsetup's hashing
    /// cannot reproduce the key).
    pub passphrase_command: Option<String>,
    /// The same command as an argument vector (program first), to run without a shell.
    pub passphrase_argv: Option<Vec<String>>,
    /// `cryptsetup open` reading the key file.
    pub key_file_command: Option<String>,
    /// The same command as an argument vector (program first).
    pub key_file_argv: Option<Vec<String>>,
    /// An `/etc/crypttab` line (null where no crypttab type fits).
    pub crypttab: Option<String>,
    /// `raw-key`, `loop-aes-key-file` or null.
    pub key_file_kind: Option<String>,
    /// The key file written by `--key-out`, if any.
    pub key_file: Option<String>,
}

/// `loopkit migrate --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migrate {
    /// Always [`JSON_VERSION`].
    pub loopkit_json: u32,
    /// `migrate`.
    pub command: String,
    /// `plain`, `detached-header`, `reencrypt`.
    pub mode: String,
    /// The source image as given.
    pub image: String,
    /// The file written (image, header or key file), or null.
    pub output: Option<String>,
    /// `luks2`, `luks1` or null.
    pub format: Option<String>,
    /// The new header's UUID.
    pub uuid: Option<String>,
    /// What the source is.
    pub source: crate::migrate::plan::SourceInfo,
    /// SHA-256 of the source plaintext (null in plain mode).
    pub source_sha256: Option<String>,
    /// SHA-256 of the plaintext read back through the new header.
    pub migrated_sha256: Option<String>,
    /// Whether the two are equal (null when not computed).
    pub sha256_match: Option<bool>,
    /// The new keyslot's KDF.
    pub kdf: Option<String>,
    /// Payload bytes an earlier, interrupted run had already written.
    pub resumed_from_bytes: Option<u64>,
    /// The command that opens the result.
    pub cryptsetup: Option<String>,
    /// The same command as an argument vector (program first), to run without a shell.
    pub cryptsetup_argv: Option<Vec<String>>,
    /// Plain-mode mapping (null for the other modes).
    pub plain: Option<PlainMapping>,
    /// Remarks.
    pub notes: Vec<String>,
    /// `--protect`: the error correction data created for the output (as `protect --json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protect: Option<super::Protect>,
}

/// Build the `migrate` document.
pub fn migrate(
    image: &str,
    o: &crate::migrate::Outcome,
    plain: Option<&crate::migrate::plan::PlainMapping>,
) -> Migrate {
    use crate::formats::cryptsetup::OpenCommand;
    use crate::migrate::plan::KeyFileKind;
    let mut notes = crate::finding::Finding::messages(&o.notes);
    if let Some(p) = plain {
        notes.extend(crate::finding::Finding::messages(&p.notes));
    }
    Migrate {
        loopkit_json: JSON_VERSION,
        command: "migrate".into(),
        mode: o.mode.name().into(),
        image: image.into(),
        output: o.output.as_ref().map(|p| p.display().to_string()),
        format: o.format.map(|f| f.name().to_string()),
        uuid: o.uuid.clone(),
        source: o.source.clone(),
        source_sha256: o.source_sha256.map(|h| hex(&h)),
        migrated_sha256: o.migrated_sha256.map(|h| hex(&h)),
        sha256_match: match (o.source_sha256, o.migrated_sha256) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        },
        kdf: o.kdf.clone(),
        resumed_from_bytes: o.resumed_from_bytes,
        cryptsetup: o.cryptsetup.as_ref().map(OpenCommand::shell_line),
        cryptsetup_argv: o.cryptsetup.as_ref().map(OpenCommand::argv),
        plain: plain.map(|p| PlainMapping {
            passphrase_command: p.passphrase_command.as_ref().map(OpenCommand::shell_line),
            passphrase_argv: p.passphrase_command.as_ref().map(OpenCommand::argv),
            key_file_command: p.key_file_command.as_ref().map(OpenCommand::shell_line),
            key_file_argv: p.key_file_command.as_ref().map(OpenCommand::argv),
            crypttab: p.crypttab.clone(),
            key_file_kind: match p.key_file_kind {
                KeyFileKind::RawKey => Some("raw-key".into()),
                KeyFileKind::LoopAesKeyFile => Some("loop-aes-key-file".into()),
                KeyFileKind::None => None,
            },
            key_file: if o.mode == crate::migrate::MigrationMode::Plain {
                o.output.as_ref().map(|p| p.display().to_string())
            } else {
                None
            },
        }),
        notes,
        protect: None,
    }
}
