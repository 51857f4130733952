//! The `damage` section of `verify` (and `rescue`), and the `extract --salvage` sidecar: what the
//! damaged sectors hit, per file and per metadata area.

use super::ByteRange;
use crate::damage::{AreaKind, Damage as Found, Part, Status, Verdict};
use serde::{Deserialize, Serialize};

/// `verify --json` → `damage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Damage {
    /// `3 files damaged: 2 repairable, 1 lost` (plus the metadata hit).
    pub summary: String,
    /// Unit of the damage list: 2048 with dvdisaster ECC data, 512 otherwise.
    pub medium_sector_bytes: u64,
    /// The cipher's sector size (damage spoils whole cipher sectors); 1 when unencrypted.
    pub cipher_sector_bytes: u64,
    /// The file system's block size (null when no file system was read).
    pub block_bytes: Option<u64>,
    /// Damaged image bytes the ECC data can restore.
    pub repairable_bytes: u64,
    /// Damaged image bytes nothing can restore.
    pub lost_bytes: u64,
    /// Files, directories and symlinks hit (per name; `intact` ones — slack hit only — excluded).
    pub files_damaged: u64,
    /// Of those, repairable.
    pub files_repairable: u64,
    /// Of those, lost.
    pub files_lost: u64,
    /// The damaged image byte ranges, merged.
    pub ranges: Vec<StatusRange>,
    /// Every file, directory and symlink hit.
    pub files: Vec<DamagedFile>,
    /// Metadata, free space and areas outside the file system hit.
    pub areas: Vec<DamagedArea>,
    /// Why the picture may be incomplete.
    pub notes: Vec<String>,
}

/// A byte range with its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusRange {
    /// Start.
    pub offset_bytes: u64,
    /// Length.
    pub size_bytes: u64,
    /// `repairable` or `lost`.
    pub status: Status,
}

/// One damaged file, directory or symlink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DamagedFile {
    /// Path from the root, no leading slash, escaped like manifest paths.
    pub path: String,
    /// `file`, `dir`, `symlink`… (null: its node — ext: its inode — cannot be read; then
    /// `size_bytes` is 0 and unknown).
    #[serde(rename = "type")]
    pub file_type: Option<crate::fs::FileType>,
    /// Its length.
    pub size_bytes: u64,
    /// `repairable`, `lost`, or `intact` (only the slack after its end is hit).
    pub verdict: Verdict,
    /// What of it is hit: `data`, `inode`, `map`, `xattr`.
    pub parts: Vec<Part>,
    /// Byte ranges of its contents that cannot be restored.
    pub lost_ranges: Vec<ByteRange>,
    /// Byte ranges of its contents the ECC data restores.
    pub repairable_ranges: Vec<ByteRange>,
}

/// One damaged metadata area.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DamagedArea {
    /// `inode-table`, `journal`, `free-space`, `superblock`, `group-descriptors`, `bitmap`,
    /// `volume-descriptors`, `path-table`, `other-metadata`, `outside-file-system`,
    /// `container-header`, `ecc-data`, `unknown`.
    pub kind: AreaKind,
    /// Payload byte offset (image offset for `container-header` and `ecc-data`).
    pub offset_bytes: u64,
    /// Length.
    pub size_bytes: u64,
    /// `repairable` or `lost`.
    pub status: Status,
    /// Which one (`group 3`, `primary`…).
    pub detail: Option<String>,
}

fn ranges(v: &[std::ops::Range<u64>]) -> Vec<ByteRange> {
    v.iter().map(|r| ByteRange { offset_bytes: r.start, size_bytes: r.end - r.start }).collect()
}

/// Build the section.
pub fn damage(d: &Found) -> Damage {
    let (n, r, l) = d.counts();
    Damage {
        summary: d.summary(),
        medium_sector_bytes: d.medium_sector_bytes,
        cipher_sector_bytes: d.cipher_sector_bytes,
        block_bytes: d.block_bytes,
        repairable_bytes: d.repairable_bytes,
        lost_bytes: d.lost_bytes,
        files_damaged: n as u64,
        files_repairable: r as u64,
        files_lost: l as u64,
        ranges: d
            .ranges
            .iter()
            .map(|b| StatusRange {
                offset_bytes: b.range.start,
                size_bytes: b.range.end - b.range.start,
                status: b.status,
            })
            .collect(),
        files: d
            .files
            .iter()
            .map(|f| DamagedFile {
                path: crate::manifest::escape(&f.path),
                file_type: f.file_type,
                size_bytes: f.size_bytes,
                verdict: f.verdict,
                parts: f.parts.clone(),
                lost_ranges: ranges(&f.lost),
                repairable_ranges: ranges(&f.repairable),
            })
            .collect(),
        areas: d
            .areas
            .iter()
            .map(|a| DamagedArea {
                kind: a.kind,
                offset_bytes: a.range.start,
                size_bytes: a.range.end - a.range.start,
                status: a.status,
                detail: a.detail.clone(),
            })
            .collect(),
        notes: d.notes.clone(),
    }
}

/// `extract --salvage` → `DEST.damage.json`: what was lost per file written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Salvage {
    /// [`super::JSON_VERSION`].
    pub loopkit_json: u32,
    /// `extract-salvage`.
    pub command: String,
    /// The image.
    pub image: String,
    /// The destination directory.
    pub dest: String,
    /// Whether the ECC data repaired the image first (in a temporary copy).
    pub repaired_first: bool,
    /// Files written with lost bytes (zeros there), by path.
    pub files: Vec<SalvagedFile>,
}

/// One salvaged file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalvagedFile {
    /// Path inside DEST (escaped like manifest paths).
    pub path: String,
    /// Its length.
    pub size_bytes: u64,
    /// Byte ranges written as zeros because their data is lost.
    pub lost_ranges: Vec<ByteRange>,
}

/// Build one sidecar entry.
pub fn salvaged_file(path: &[u8], size_bytes: u64, lost: &[std::ops::Range<u64>]) -> SalvagedFile {
    SalvagedFile { path: crate::manifest::escape(path), size_bytes, lost_ranges: ranges(lost) }
}
