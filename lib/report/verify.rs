//! The `verify` document: inspect, the payload digest, the ECC check, problems and the file-level check.

use super::{ByteRange, Inspect, Payload, ecc_checked, hex, inspect};
use crate::image::Opened;
use crate::verify::{Outcome as VerifyOutcome, Problem};
use serde::{Deserialize, Serialize};

/// `loopkit verify --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// Everything `inspect` says.
    #[serde(flatten)]
    pub inspect: Inspect,
    /// The payload digest.
    pub payload: Option<Payload>,
    /// No error-severity problems.
    pub ok: bool,
    /// Problems found.
    pub problems: Vec<Problem>,
    /// The file-level check (null when the file system is not ext2/3/4 or ISO9660).
    pub files: Option<Files>,
    /// What the damaged sectors hit (null when nothing is damaged).
    #[serde(default)]
    pub damage: Option<super::Damage>,
}

/// `verify --json` → `files`: what walking the file system found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    /// Entries in the file system (an empty mkfs `lost+found` is not counted).
    pub count: u64,
    /// Content bytes of regular files (hard links counted once).
    pub bytes: u64,
    /// Structural problems found while walking (error severity).
    pub problems: u64,
    /// Paths in the reference (`--manifest`/`--against`) but not in the image.
    pub missing: Vec<String>,
    /// Paths in the image but not in the reference.
    pub extra: Vec<String>,
    /// Paths in both whose type, size, contents, target, mode, owner or mtime differ.
    pub changed: Vec<String>,
}

/// Build the `verify` document.
pub fn verify(opened: &Opened, pass_len: Option<usize>, outcome: &VerifyOutcome) -> Verify {
    let mut inspect = inspect(opened, pass_len);
    inspect.command = "verify".into();
    if let (Some(e), Some(r)) = (inspect.ecc.as_mut(), outcome.ecc.as_ref()) {
        ecc_checked(e, r);
    }
    Verify {
        inspect,
        payload: outcome.digest.as_ref().map(|d| Payload {
            offset_bytes: d.offset_bytes,
            size_bytes: d.size_bytes,
            sha256: hex(&d.sha256),
            hole_bytes: d.hole_bytes,
            unreadable_bytes: d.unreadable_bytes,
            unreadable_ranges: d
                .unreadable
                .iter()
                .map(|r| ByteRange { offset_bytes: r.start, size_bytes: r.end - r.start })
                .collect(),
        }),
        ok: outcome.ok(),
        problems: outcome.problems.clone(),
        damage: outcome.damage.as_ref().map(super::damage),
        files: outcome.files.as_ref().map(|f| {
            let d = f.diff.clone().unwrap_or_default();
            Files {
                count: f.count,
                bytes: f.bytes,
                problems: f.problems,
                missing: d.missing,
                extra: d.extra,
                changed: d.changed.into_iter().map(|c| c.path).collect(),
            }
        }),
    }
}
