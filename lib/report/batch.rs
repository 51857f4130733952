//! The JSON documents of batch verification and the fixity catalog (`verify PATH... --json-lines`,
//! `loopkit catalog FILE`): each image's document and table row made from the batch's typed
//! results ([`Rows`]), the batch summary, and the catalog summary (a per-image error is the
//! generic [`super::ErrorDoc`]; the catalog's own lines are [`CatalogRecord`] and [`CatalogRun`],
//! kept by `batch::catalog`). See `docs/JSON.md`.

pub use crate::batch::catalog::{CatalogRecord, CatalogRun};
pub use crate::batch::{Counts, Verdict};
use crate::batch::{Failure, Finished, ImageResult, Totals};
use serde::{Deserialize, Serialize};
use std::path::Path;

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

/// One image's document in `--json-lines`: the `verify` document, or the error document.
#[derive(Debug, Clone)]
pub enum Doc {
    /// The document single-image `verify --json` prints.
    Verify(Box<super::Verify>),
    /// The error document (could not check it).
    Error(super::ErrorDoc),
}

/// The document of a finished image (none for skipped and interrupted files, nor for a job that
/// could not start).
pub fn doc_of(f: &Finished) -> Option<Doc> {
    let image = || Some(f.image.display().to_string());
    match &f.result {
        ImageResult::Checked(c) => Some(Doc::Verify(Box::new(super::verify(&c.image, c.pass_len, &c.found)))),
        ImageResult::Failed(Failure::Error(e)) => Some(Doc::Error(super::ErrorDoc::new(
            "verify",
            image(),
            super::error_kind_name(e.kind()),
            super::error_chain(e),
        ))),
        ImageResult::Failed(Failure::TimeBudget(msg)) => {
            Some(Doc::Error(super::ErrorDoc::new("verify", image(), "time-budget", msg.clone())))
        }
        ImageResult::Failed(Failure::NotStarted(_)) | ImageResult::Skipped(_) | ImageResult::Interrupted { .. } => None,
    }
}

/// The table row of a finished image (`doc`: its [`doc_of`]).
pub fn row_of_finished(f: &Finished, doc: Option<&Doc>) -> Row {
    let path = f.image.as_path();
    match (&f.result, doc) {
        (ImageResult::Checked(_), Some(Doc::Verify(d))) => row_of(&path.display().to_string(), d, f.elapsed_ms),
        (ImageResult::Failed(Failure::Error(e)), _) => {
            failed_row(path, super::error_kind_name(e.kind()), super::error_chain(e), f.elapsed_ms)
        }
        (ImageResult::Failed(Failure::TimeBudget(msg)), _) => {
            failed_row(path, "batch.time-budget", msg.clone(), f.elapsed_ms)
        }
        (ImageResult::Failed(Failure::NotStarted(msg)), _) => failed_row(path, "io", msg.clone(), f.elapsed_ms),
        (ImageResult::Skipped(why), _) => Row { message: Some(why.clone()), ..blank_row(path, Verdict::Skipped, 0) },
        (ImageResult::Interrupted { message, coded }, _) => Row {
            message: Some(message.clone()),
            problems: if *coded { vec!["interrupted".into()] } else { Vec::new() },
            ..blank_row(path, Verdict::Interrupted, f.elapsed_ms)
        },
        // A checked image's row comes from its document.
        (ImageResult::Checked(c), _) => {
            row_of(&path.display().to_string(), &super::verify(&c.image, c.pass_len, &c.found), f.elapsed_ms)
        }
    }
}

fn blank_row(path: &Path, verdict: Verdict, elapsed_ms: u64) -> Row {
    Row {
        image: path.display().to_string(),
        verdict,
        scheme: None,
        filesystem: None,
        bad_sectors: None,
        unreadable_bytes: 0,
        files_changed: None,
        problems: Vec::new(),
        message: None,
        payload_sha256: None,
        elapsed_ms,
    }
}

fn failed_row(path: &Path, kind: &str, message: String, elapsed_ms: u64) -> Row {
    Row { problems: vec![kind.to_string()], message: Some(message), ..blank_row(path, Verdict::Failed, elapsed_ms) }
}

/// The rows of a batch, one slot per file found, filled as images finish (the summary lists them
/// in the order found, not the order they finished).
#[derive(Debug, Default)]
pub struct Rows {
    rows: Vec<Option<Row>>,
}

impl Rows {
    /// Room for `files` files.
    pub fn new(files: usize) -> Rows {
        Rows { rows: vec![None; files] }
    }

    /// Record a finished image; returns its document.
    pub fn add(&mut self, f: &Finished) -> Option<Doc> {
        let doc = doc_of(f);
        let row = row_of_finished(f, doc.as_ref());
        if f.index >= self.rows.len() {
            self.rows.resize(f.index + 1, None);
        }
        self.rows[f.index] = Some(row);
        doc
    }

    /// The summary document (the last line of `verify --json-lines`).
    pub fn summary(self, t: &Totals) -> Summary {
        let rows: Vec<Row> = self.rows.into_iter().flatten().collect();
        let mut counts = Counts::default();
        for r in &rows {
            counts.add(r.verdict);
        }
        Summary {
            loopkit_json: super::JSON_VERSION,
            command: "verify-batch".into(),
            ok: !t.interrupted && counts.problems == 0 && counts.failed == 0,
            interrupted: t.interrupted,
            total: rows.len() as u64,
            counts,
            jobs: t.jobs,
            elapsed_ms: t.elapsed_ms,
            rows,
        }
    }
}

/// `loopkit catalog FILE`: counts, the oldest latest check, changed and failing images.
pub fn catalog_summary(path: &Path, c: &crate::batch::catalog::Contents, imported: Option<u64>) -> CatalogSummary {
    let latest = c.latest();
    let mut counts = Counts::default();
    for r in latest.values() {
        counts.add(r.verdict);
    }
    let oldest = latest.values().min_by_key(|r| (r.verified_at, r.path.clone())).map(|r| CatalogOldest {
        path: r.path.clone(),
        verified_at: r.verified_at,
        verified_at_utc: r.verified_at_utc.clone(),
    });
    let mut digests: std::collections::BTreeMap<&str, std::collections::HashSet<&str>> = Default::default();
    for r in c.records() {
        if let Some(d) = &r.payload_sha256 {
            digests.entry(&r.path).or_default().insert(d);
        }
    }
    let changed = digests.into_iter().filter(|(_, d)| d.len() > 1).map(|(p, _)| p.to_string()).collect();
    let failing = latest
        .values()
        .filter(|r| matches!(r.verdict, Verdict::Problems | Verdict::Failed))
        .map(|r| r.path.clone())
        .collect();
    CatalogSummary {
        loopkit_json: super::JSON_VERSION,
        command: "catalog".into(),
        catalog: path.display().to_string(),
        records: c.records().count() as u64,
        images: latest.len() as u64,
        counts,
        oldest,
        changed,
        failing,
        imported,
        unreadable_lines: c.unreadable,
        unreadable_line_numbers: c.unreadable_line_numbers.clone(),
    }
}
