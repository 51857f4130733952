//! `migrate --to dmcrypt`: move a legacy (or plain) loop image to a layout any current Linux
//! opens with `losetup` + `cryptsetup open`, at three levels (`docs/MIGRATE.md`):
//!
//! - [`plain`]: write nothing into the image; produce the exact `cryptsetup open --type
//!   plain|loopaes` command, a crypttab line and optionally a raw key file (mode 0600).
//! - [`detached_header`]: a LUKS2 header *file* whose volume key is the legacy key and whose
//!   segment is the legacy cipher/offset, so `cryptsetup open --header HDR IMAGE` maps the old
//!   ciphertext unchanged, plus an Argon2id keyslot for a new passphrase.
//! - [`reencrypt`]: a new LUKS2 (or LUKS1) container, aes-xts-plain64 with a fresh 512-bit key,
//!   512-byte sectors, cryptsetup's default layout; streamed once, checkpointed, verified by
//!   reading it back from the device, then renamed into place.
//!
//! Files: `kdf.rs` (keyslot KDF choice and calibration), `plain.rs`, `detached.rs`,
//! `reencrypt.rs` (the three modes), `plan.rs` (pure planning), `apply.rs` (the I/O: outputs,
//! checkpoint, streaming pipeline, read-back comparison).
//!
//! The source is only ever opened read-only. Outputs follow `apply`'s rules: temporary name,
//! fsync, verify, rename; never overwrite without `force`.

pub mod apply;
mod detached;
pub mod kdf;
mod plain;
pub mod plan;
mod reencrypt;

pub use detached::{DetachedOptions, detached_header};
pub use kdf::{
    ARGON2_MIN_TIME, DEFAULT_ARGON2_MAX_MEMORY_KIB, DEFAULT_ARGON2_MIN_MEMORY_KIB, DEFAULT_ITER_TIME_MS,
    DIGEST_ITER_TIME_MS, KdfOptions, Pbkdf, choose_kdf,
};
pub use plain::{PlainOptions, plain};
pub use reencrypt::{ReencryptOptions, reencrypt};

use crate::image::Opened;
use plan::SourceInfo;
use std::path::{Path, PathBuf};

/// The new container's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// LUKS2 (default).
    Luks2,
    /// LUKS1 (`--luks1`).
    Luks1,
}

impl Format {
    /// `luks2` / `luks1`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Luks2 => "luks2",
            Format::Luks1 => "luks1",
        }
    }
}

/// Which migration ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationMode {
    /// Nothing written into the image: the cryptsetup commands (and a key file).
    Plain,
    /// A LUKS2 header file over the unchanged image.
    DetachedHeader,
    /// A new LUKS container with the data re-encrypted.
    Reencrypt,
}

impl MigrationMode {
    /// `plain` / `detached-header` / `reencrypt` (the JSON and CLI spelling).
    pub fn name(self) -> &'static str {
        match self {
            MigrationMode::Plain => "plain",
            MigrationMode::DetachedHeader => "detached-header",
            MigrationMode::Reencrypt => "reencrypt",
        }
    }
}

/// What a migration produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Which migration ran.
    pub mode: MigrationMode,
    /// The file written (header or image); None for `plain` without outputs.
    pub output: Option<PathBuf>,
    /// `luks2`/`luks1` (None for plain).
    pub format: Option<Format>,
    /// The new header's UUID.
    pub uuid: Option<String>,
    /// The source's description.
    pub source: SourceInfo,
    /// SHA-256 of the source plaintext (None for plain mode).
    pub source_sha256: Option<[u8; 32]>,
    /// SHA-256 of the plaintext read back through the new header.
    pub migrated_sha256: Option<[u8; 32]>,
    /// The new keyslot's KDF.
    pub kdf: Option<String>,
    /// Where a resumed run started (payload bytes already done), if resumed.
    pub resumed_from_bytes: Option<u64>,
    /// The command that opens the result.
    pub cryptsetup: Option<crate::formats::cryptsetup::OpenCommand>,
    /// Remarks.
    pub notes: Vec<crate::finding::Finding>,
}

fn now_iso() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    crate::bytes::rfc3339(secs)
}

fn source_path(opened: &Opened) -> String {
    std::fs::canonicalize(&opened.path).unwrap_or_else(|_| opened.path.clone()).display().to_string()
}

fn open_command(image: &Path, header: Option<&Path>) -> crate::formats::cryptsetup::OpenCommand {
    use crate::formats::cryptsetup::{DeviceType, OpenCommand};
    OpenCommand {
        header: header.map(|h| h.display().to_string()),
        ..OpenCommand::new(DeviceType::Luks, &image.display().to_string(), "migrated")
    }
}
