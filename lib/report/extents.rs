//! The `extents` document (remap survey and `--check`).

use super::{JSON_VERSION, hex};
use serde::{Deserialize, Serialize};

/// What an image file lives on (`loopkit extents`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backing {
    /// File-system type (`ext4`, `xfs`, `btrfs`…).
    pub filesystem: String,
    /// `statfs` magic, hex.
    pub fs_magic: String,
    /// File-system block size.
    pub fs_block_size: u64,
    /// `major:minor` of the device FIEMAP offsets refer to.
    pub device_number: String,
    /// Its node (`/dev/loop0`), when found.
    pub device: Option<String>,
    /// Its size.
    pub device_bytes: Option<u64>,
    /// Logical block size (raw I/O alignment).
    pub logical_block_size: u32,
    /// Physical block size.
    pub physical_block_size: u32,
    /// Mount point.
    pub mount_point: Option<String>,
    /// Super-block mount options.
    pub mount_options: Option<String>,
}

/// One extent in `loopkit extents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtentRow {
    /// Byte offset in the file.
    pub logical: u64,
    /// Byte offset on the device.
    pub physical: u64,
    /// Length in bytes.
    pub length: u64,
    /// FIEMAP flag names (filefrag's spelling).
    pub flags: Vec<String>,
    /// The raw FIEMAP flag bits.
    pub flags_raw: u32,
    /// `mapped`, `zero` or `via-file`.
    pub class: String,
    /// Why it is not mapped.
    pub reason: Option<String>,
}

/// A refusal or finding with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// Stable code.
    pub code: String,
    /// For people.
    pub message: String,
}

impl From<&crate::finding::Finding> for Finding {
    /// The wire form of a finding in the `extents` document: its code and message (every
    /// refusal is an error, so the severity is not repeated).
    fn from(f: &crate::finding::Finding) -> Self {
        Finding { code: f.code.to_string(), message: f.message.clone() }
    }
}

/// Totals of `loopkit extents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtentSummary {
    /// Extents.
    pub extents: u64,
    /// Bytes in mapped extents.
    pub mapped_bytes: u64,
    /// Bytes in unwritten extents.
    pub unwritten_bytes: u64,
    /// Bytes in via-file extents.
    pub via_file_bytes: u64,
    /// Holes.
    pub holes: u64,
    /// Bytes in holes.
    pub hole_bytes: u64,
    /// Physical discontinuities between consecutive extents.
    pub fragments: u64,
    /// Largest extent.
    pub largest_extent_bytes: u64,
}

/// An extent whose raw-device and file-system readings differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtentMismatch {
    /// Byte offset in the file.
    pub logical: u64,
    /// Byte offset on the device.
    pub physical: u64,
    /// Length compared.
    pub length: u64,
    /// SHA-256 through the file system.
    pub file_sha256: String,
    /// SHA-256 of the device bytes.
    pub device_sha256: String,
    /// First differing byte (file offset).
    pub first_difference: u64,
}

/// `--check` results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtentCheck {
    /// Whether every mapped extent read the same both ways.
    pub ok: bool,
    /// Mapped extents compared.
    pub extents_checked: u64,
    /// Bytes compared.
    pub bytes_checked: u64,
    /// The extents that differ.
    pub mismatches: Vec<ExtentMismatch>,
}

/// The `loopkit extents` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extents {
    /// Format version.
    pub loopkit_json: u32,
    /// `extents`.
    pub command: String,
    /// The image path.
    pub image: String,
    /// Its size.
    pub size_bytes: u64,
    /// Bytes allocated on disk.
    pub allocated_bytes: u64,
    /// What it lives on.
    pub backing: Backing,
    /// `remap-safe` or `not-remap-safe`.
    pub verdict: String,
    /// Whether remapping is safe.
    pub remap_safe: bool,
    /// Why not.
    pub refusals: Vec<Finding>,
    /// Other facts.
    pub notes: Vec<String>,
    /// Totals.
    pub summary: ExtentSummary,
    /// Every extent.
    pub extents: Vec<ExtentRow>,
    /// The extent verification (`--check`), or null.
    pub check: Option<ExtentCheck>,
}

/// Build the `loopkit extents` document.
pub fn extents(s: &crate::remap::survey::Survey) -> Extents {
    let b = &s.preflight.backing;
    let safe = s.remap_safe();
    Extents {
        loopkit_json: JSON_VERSION,
        command: "extents".into(),
        image: s.path.display().to_string(),
        size_bytes: s.size,
        allocated_bytes: s.allocated_bytes,
        backing: Backing {
            filesystem: b.fs_name.clone(),
            fs_magic: format!("{:#x}", b.fs_magic),
            fs_block_size: b.fs_block,
            device_number: format!("{}:{}", b.dev.0, b.dev.1),
            device: b.device.as_ref().map(|p| p.display().to_string()),
            device_bytes: b.device_bytes,
            logical_block_size: b.logical_block,
            physical_block_size: b.physical_block,
            mount_point: b.mount_point.clone(),
            mount_options: b.mount_options.clone(),
        },
        verdict: if safe { "remap-safe" } else { "not-remap-safe" }.into(),
        remap_safe: safe,
        refusals: s.preflight.refusals.iter().map(Finding::from).collect(),
        notes: crate::finding::Finding::messages(&s.preflight.notes),
        summary: ExtentSummary {
            extents: s.summary.extents,
            mapped_bytes: s.summary.mapped_bytes,
            unwritten_bytes: s.summary.unwritten_bytes,
            via_file_bytes: s.summary.via_file_bytes,
            holes: s.summary.holes,
            hole_bytes: s.summary.hole_bytes,
            fragments: s.summary.fragments,
            largest_extent_bytes: s.summary.largest_extent_bytes,
        },
        extents: s
            .rows
            .iter()
            .map(|r| ExtentRow {
                logical: r.extent.logical,
                physical: r.extent.physical,
                length: r.extent.length,
                flags: r.extent.flags.names(),
                flags_raw: r.extent.flags.bits(),
                class: r.class.name().into(),
                reason: (!r.reason.is_empty()).then(|| r.reason.to_string()),
            })
            .collect(),
        check: s.check.as_ref().map(|c| ExtentCheck {
            ok: c.mismatches.is_empty(),
            extents_checked: c.extents_checked,
            bytes_checked: c.bytes_checked,
            mismatches: c
                .mismatches
                .iter()
                .map(|m| ExtentMismatch {
                    logical: m.extent.logical,
                    physical: m.extent.physical,
                    length: m.extent.length,
                    file_sha256: hex(&m.file_sha256),
                    device_sha256: hex(&m.device_sha256),
                    first_difference: m.first_difference,
                })
                .collect(),
        }),
    }
}
