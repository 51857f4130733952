//! The `extract --json` document.

use crate::verify::Problem;
use serde::{Deserialize, Serialize};

/// `loopkit extract --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extract {
    /// Always [`JSON_VERSION`].
    pub loopkit_json: u32,
    /// `extract`.
    pub command: String,
    /// The image path as given.
    pub image: String,
    /// The destination directory.
    pub dest: String,
    /// `files`, `dirs`, `symlinks`, `hardlinks`, `bytes`, `skipped`.
    #[serde(flatten)]
    pub counts: crate::extract::Counts,
    /// No error-severity problems.
    pub ok: bool,
    /// Problems met.
    pub problems: Vec<Problem>,
    /// `--bag`: payload files and bytes in the manifest, symlinks listed in `symlinks.txt`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bag: Option<crate::bag::Summary>,
}
