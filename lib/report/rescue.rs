//! The `rescue` document: how far a rescue read got, what is still missing, and (with
//! error-correction data) whether the repair restored it.

use super::{JSON_VERSION, Repair};
use crate::rescue::job::Outcome;
use crate::rescue::mapfile::Status;
use serde::{Deserialize, Serialize};

/// Bytes per block state of the map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RescueBytes {
    /// Read and written (`+`).
    pub finished: u64,
    /// Not read yet (`?`).
    pub non_tried: u64,
    /// In a failed read, edges not trimmed (`*`).
    pub non_trimmed: u64,
    /// Trimmed, not scraped (`/`).
    pub non_scraped: u64,
    /// Failed sector by sector (`-`).
    pub bad: u64,
}

/// `loopkit rescue --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rescue {
    /// Always [`JSON_VERSION`].
    pub loopkit_json: u32,
    /// `rescue`.
    pub command: String,
    /// What was read.
    pub source: String,
    /// The image asked for.
    pub output: String,
    /// The ddrescue map file.
    pub map: String,
    /// Where the rescued bytes are now: `output` when complete, else `MAP.partial`.
    pub data_path: String,
    /// Source size in bytes.
    pub size: u64,
    /// Sector size in bytes.
    pub sector_size: u64,
    /// Whether the source was read with `O_DIRECT`.
    pub direct_io: bool,
    /// Why the run stopped: `complete`, `enough-for-ecc`, `passes-exhausted`, `interrupted`.
    pub stopped: String,
    /// Bytes per map state at the end.
    pub bytes: RescueBytes,
    /// Byte ranges not read, `[pos, len]`, in order (all non-finished blocks).
    pub missing: Vec<[u64; 2]>,
    /// Read requests sent this run.
    pub reads: u64,
    /// Bytes those reads asked for (a full single pass asks for `size`).
    pub bytes_read: u64,
    /// Of which failed.
    pub failed_reads: u64,
    /// Of which were slower than `--min-progress`.
    pub slow_reads: u64,
    /// Bytes skipped ahead in the copy pass.
    pub skipped_bytes: u64,
    /// Phases run, in order.
    pub phases: Vec<String>,
    /// Seconds this run took.
    pub seconds: f64,
    /// The repair from error-correction data, when the rescue stopped because it sufficed.
    pub repair: Option<Repair>,
    /// What the sectors still missing hit in the image produced (null: nothing missing, or not
    /// assessed).
    #[serde(default)]
    pub damage: Option<super::Damage>,
    /// The image at `output` is complete: every byte read, or restored and verified.
    pub ok: bool,
}

/// Build the document.
pub fn rescue(job: &crate::rescue::job::Job, o: &Outcome, seconds: f64, repair: Option<Repair>, ok: bool) -> Rescue {
    let m = &o.map;
    Rescue {
        loopkit_json: JSON_VERSION,
        command: "rescue".into(),
        source: job.source.display().to_string(),
        output: job.output.display().to_string(),
        map: job.map.display().to_string(),
        data_path: o.data_path.display().to_string(),
        size: m.size(),
        sector_size: o.sector,
        direct_io: o.direct,
        stopped: o.stop.name().into(),
        bytes: RescueBytes {
            finished: m.bytes_in(Status::Finished),
            non_tried: m.bytes_in(Status::NonTried),
            non_trimmed: m.bytes_in(Status::NonTrimmed),
            non_scraped: m.bytes_in(Status::NonScraped),
            bad: m.bytes_in(Status::Bad),
        },
        missing: m.blocks().filter(|b| b.status != Status::Finished).map(|b| [b.pos, b.size]).collect(),
        reads: o.stats.reads,
        bytes_read: o.stats.bytes_requested,
        failed_reads: o.stats.failed_reads,
        slow_reads: o.stats.slow_reads,
        skipped_bytes: o.stats.bytes_skipped,
        phases: o.stats.phases.iter().map(|s| (*s).to_string()).collect(),
        seconds,
        repair,
        damage: None,
        ok,
    }
}
