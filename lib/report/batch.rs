//! The JSON documents of batch verification and the fixity catalog (`verify PATH... --json-lines`,
//! `--catalog FILE`, `loopkit catalog FILE`): the batch summary and its table rows, one catalog record, and the
//! catalog summary (a per-image error is the generic [`super::ErrorDoc`]). See `docs/JSON.md`.

use serde::{Deserialize, Serialize};

/// What became of one image in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Verified: no error-severity problems.
    Verified,
    /// Checked, and problems were found (exit 1).
    Problems,
    /// Could not be checked: unreadable, needs a secret, no parameters match, time budget (exit 2).
    Failed,
    /// Not an image (nothing recognised by content), or skipped by `--since-days`/`--changed-only`
    /// /`--resume` (the row's `message` says which).
    Skipped,
    /// The batch was interrupted before this image finished.
    Interrupted,
}

impl Verdict {
    /// The stable spelling (`verified`, `problems`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Problems => "problems",
            Verdict::Failed => "failed",
            Verdict::Skipped => "skipped",
            Verdict::Interrupted => "interrupted",
        }
    }
}

/// One line of the batch table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// The image path as found (argument, or argument joined with the path below it).
    pub image: String,
    /// What became of it.
    pub verdict: Verdict,
    /// `cryptoloop`, `loop-aes`, `luks1`, `luks2`, `plain`, or null when unknown.
    pub scheme: Option<String>,
    /// File-system type (blkid spelling) or null.
    pub filesystem: Option<String>,
    /// dvdisaster: sectors failing their CRC plus missing sectors (null without ECC data).
    pub bad_sectors: Option<u64>,
    /// Bytes that could not be read from the image (read errors).
    pub unreadable_bytes: u64,
    /// Files missing, extra or changed against the reference, or null.
    pub files_changed: Option<u64>,
    /// Codes of the error-severity problems (or the error kind for `failed`).
    pub problems: Vec<String>,
    /// A one-line explanation for `failed`, `skipped` and `interrupted`.
    pub message: Option<String>,
    /// SHA-256 of the decrypted payload, when it was computed.
    pub payload_sha256: Option<String>,
    /// Wall time spent on this image.
    pub elapsed_ms: u64,
}

/// Counts by verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Images verified.
    pub verified: u64,
    /// Images with problems.
    pub problems: u64,
    /// Images that could not be checked.
    pub failed: u64,
    /// Files skipped.
    pub skipped: u64,
    /// Images not finished because the batch was interrupted.
    pub interrupted: u64,
}

impl Counts {
    /// Count one more `v`.
    pub fn add(&mut self, v: Verdict) {
        match v {
            Verdict::Verified => self.verified += 1,
            Verdict::Problems => self.problems += 1,
            Verdict::Failed => self.failed += 1,
            Verdict::Skipped => self.skipped += 1,
            Verdict::Interrupted => self.interrupted += 1,
        }
    }
}

/// The last line of `verify --json-lines` in batch mode: the summary with one row per file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Always [`super::JSON_VERSION`].
    pub loopkit_json: u32,
    /// `verify-batch`.
    pub command: String,
    /// No image had problems or failed, and the batch was not interrupted.
    pub ok: bool,
    /// The batch was interrupted (SIGINT): rows list what finished.
    pub interrupted: bool,
    /// Files considered.
    pub total: u64,
    /// Counts by verdict.
    pub counts: Counts,
    /// Images checked at once (at most).
    pub jobs: usize,
    /// Wall time of the batch.
    pub elapsed_ms: u64,
    /// One row per file, in the order the files were found (not the order they finished).
    pub rows: Vec<Row>,
}

/// One line of a fixity catalog (`--catalog FILE`, JSON lines, append-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogRecord {
    /// Always 1.
    pub loopkit_catalog: u32,
    /// Absolute path of the image (symlinks resolved).
    pub path: String,
    /// Size of the image file.
    pub size_bytes: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// `st_dev` of the file.
    pub device: u64,
    /// Inode number.
    pub inode: u64,
    /// SHA-256 of the decrypted payload (null when it was not computed).
    pub payload_sha256: Option<String>,
    /// dvdisaster ECC check: `ok`, `damaged`, or null without ECC data.
    pub ecc: Option<String>,
    /// SHA-256 over the sorted list of file paths the file-system walk found damaged or changed
    /// (`files` of the verify document), null when there was no file-level check. A change of
    /// this digest between runs means different files are affected.
    pub manifest_digest: Option<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// Error-severity problem codes.
    pub problems: Vec<String>,
    /// loopkit version and git revision that checked it.
    pub loopkit_version: String,
    /// When the check finished, seconds since the epoch (UTC).
    pub verified_at: u64,
    /// The same as RFC 3339 UTC, for people.
    pub verified_at_utc: String,
    /// The batch run this record belongs to (`--resume` continues the last unfinished one).
    pub run: String,
    /// Time spent.
    pub elapsed_ms: u64,
}

/// A marker line in the catalog: a batch run started or finished (so `--resume` knows which
/// run was interrupted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogRun {
    /// Always 1.
    pub loopkit_catalog_run: u32,
    /// Run id (time and process id).
    pub run: String,
    /// `start` or `end`.
    pub event: String,
    /// When, seconds since the epoch.
    pub at: u64,
}

/// `loopkit catalog FILE --json`: what the catalog holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSummary {
    /// Always [`super::JSON_VERSION`].
    pub loopkit_json: u32,
    /// `catalog`.
    pub command: String,
    /// The catalog file.
    pub catalog: String,
    /// Records in the file.
    pub records: u64,
    /// Distinct images.
    pub images: u64,
    /// Latest verdict of each image, counted.
    pub counts: Counts,
    /// The image whose latest check is the oldest, and when (seconds since the epoch).
    pub oldest: Option<CatalogOldest>,
    /// Images whose payload SHA-256 differs between two of their records (bit rot or rewritten).
    pub changed: Vec<String>,
    /// Images whose latest verdict is `problems` or `failed`.
    pub failing: Vec<String>,
    /// `--import`: records added (duplicates are not added twice).
    pub imported: Option<u64>,
    /// Lines that are not catalog records (damaged by an interrupted writer, foreign).
    pub unreadable_lines: u64,
    /// The line numbers (from 1) of the first 100 of them.
    #[serde(default)]
    pub unreadable_line_numbers: Vec<u64>,
}

/// The oldest latest check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogOldest {
    /// The image.
    pub path: String,
    /// When it was last checked (seconds since the epoch).
    pub verified_at: u64,
    /// The same as RFC 3339 UTC.
    pub verified_at_utc: String,
}

/// The table row of a verify document.
pub fn row_of(image: &str, doc: &super::Verify, elapsed_ms: u64) -> Row {
    let i = &doc.inspect;
    let scheme = match (&i.encryption, i.kind.as_str()) {
        (Some(e), _) => Some(e.scheme.clone()),
        (None, "plain") => Some("plain".into()),
        _ => None,
    };
    let bad_sectors = i.ecc.as_ref().and_then(|e| {
        let bad = e.bad_sectors.as_ref()?.len() as u64;
        Some(bad + e.missing_sectors.as_ref().map_or(0, |m| m.len() as u64))
    });
    Row {
        image: image.to_string(),
        verdict: if doc.ok { Verdict::Verified } else { Verdict::Problems },
        scheme,
        filesystem: i.filesystem.as_ref().map(|f| f.kind.clone()),
        bad_sectors,
        unreadable_bytes: doc.payload.as_ref().map_or(0, |p| p.unreadable_bytes),
        files_changed: doc.files.as_ref().map(|f| (f.missing.len() + f.extra.len() + f.changed.len()) as u64),
        problems: doc.problems.iter().filter(|p| p.is_error()).map(|p| p.code.to_string()).collect(),
        message: None,
        payload_sha256: doc.payload.as_ref().map(|p| p.sha256.clone()),
        elapsed_ms,
    }
}
