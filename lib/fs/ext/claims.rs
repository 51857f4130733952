//! Blocks claimed by two inodes (e2fsck pass 1B "multiply-claimed blocks"): ext has no shared
//! extents, so two files whose maps name the same block mean one of them is corrupt. Every map
//! the reader resolves is recorded once per inode; a file whose blocks overlap another inode's
//! gets `ext.shared-blocks` on its reader (so `verify`/`manifest` report it with its path and
//! `extract` does not write it unless `--allow-damaged`). Which of the two is flagged depends on
//! the reading order; the message names the other inode.

use crate::extent::Extent;
use crate::fs::tree::Issue;
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

#[derive(Default)]
struct State {
    /// Inodes whose maps are recorded.
    seen: HashSet<u32>,
    /// Recorded byte ranges on the device: start → (end, inode).
    ranges: BTreeMap<u64, (u64, u32)>,
}

/// The claims of the maps read so far.
#[derive(Default)]
pub struct Claims(Mutex<State>);

impl Claims {
    /// Record `ino`'s extents (once per inode) and return an issue if any overlaps another
    /// inode's.
    pub fn claim(&self, ino: u32, extents: &[Extent], block_size: u64) -> Option<Issue> {
        let mut st = self.0.lock().ok()?;
        if !st.seen.insert(ino) {
            return None;
        }
        let mut hit: Option<(u64, u64, u32)> = None;
        for e in extents {
            let (a, b) = (e.physical, e.physical.saturating_add(e.length));
            if hit.is_none()
                && let Some((&s, &(end, other))) = st.ranges.range(..b).next_back()
                && end > a
                && other != ino
            {
                hit = Some((a.max(s), b.min(end), other));
            }
            st.ranges.insert(a, (b, ino));
        }
        let (a, b, other) = hit?;
        Some(Issue::error(
            "ext.shared-blocks",
            format!(
                "inode {ino}: blocks {}..{} are also claimed by inode {other} (multiply-claimed blocks: one of the \
                 two files is damaged)",
                a / block_size,
                b.div_ceil(block_size)
            ),
        ))
    }
}
