//! The `manifest -o FILE --json` document (what was written).

use crate::verify::Problem;
use serde::{Deserialize, Serialize};

/// `loopkit manifest -o FILE --json`: what was written (without `-o`, the manifest itself is
/// the document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRun {
    /// Always [`JSON_VERSION`].
    pub loopkit_json: u32,
    /// `manifest`.
    pub command: String,
    /// The image path as given.
    pub image: String,
    /// Where the manifest was written.
    pub output: String,
    /// blkid type of the file system read.
    pub filesystem_type: String,
    /// Entries listed.
    pub entries: u64,
    /// Content bytes of regular files.
    pub bytes: u64,
    /// No error-severity problems.
    pub ok: bool,
    /// Problems met while reading the file system.
    pub problems: Vec<Problem>,
}
