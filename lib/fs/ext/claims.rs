//! Blocks claimed by two inodes (e2fsck pass 1B "multiply-claimed blocks"): ext has no shared
//! extents, so two files whose maps name the same block mean one of them is corrupt. Every map
//! the reader resolves is recorded once per inode; a file whose blocks overlap another inode's
//! gets `ext.shared-blocks` on its reader (so `verify`/`manifest` report it with its path and
//! `extract` does not write it unless `--allow-damaged`). Which of the two is flagged depends on
//! the reading order; the message names the other inode. The recorded ranges stay disjoint (only
//! the unclaimed parts of an extent are added), so every overlap is found, not just one with the
//! nearest range.

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
        // `ranges` stays a set of disjoint ranges: of each extent only the parts no inode claimed
        // yet are recorded, so the neighbours found below are all the ranges that overlap it.
        let mut hit: Option<(u64, u64, u32)> = None;
        for e in extents {
            let (a, b) = (e.physical, e.physical.saturating_add(e.length));
            if a >= b {
                continue;
            }
            let mut overlapping: Vec<(u64, u64, u32)> = Vec::new();
            if let Some((&s, &(end, other))) = st.ranges.range(..a).next_back()
                && end > a
            {
                overlapping.push((s, end, other));
            }
            overlapping.extend(st.ranges.range(a..b).map(|(&s, &(end, other))| (s, end, other)));
            let mut pos = a;
            let mut free: Vec<(u64, u64)> = Vec::new();
            for (s, end, other) in overlapping {
                if other != ino && hit.is_none() {
                    hit = Some((a.max(s), b.min(end), other));
                }
                if s > pos {
                    free.push((pos, s));
                }
                pos = pos.max(end);
            }
            if pos < b {
                free.push((pos, b));
            }
            for (x, y) in free {
                st.ranges.insert(x, (y, ino));
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::ExtentFlags;

    fn ext(p: u64, n: u64) -> Extent {
        Extent { logical: 0, physical: p, length: n, flags: ExtentFlags::default() }
    }

    /// Every overlap is found, whatever lies between: a long range followed by short ones, the
    /// same start twice, a file overlapping itself.
    #[test]
    fn overlaps_are_found_exactly() {
        let c = Claims::default();
        assert!(c.claim(1, &[ext(0, 1000)], 1).is_none());
        assert!(c.claim(2, &[ext(2000, 10), ext(2020, 10)], 1).is_none());
        // Starts after ranges 0..1000 and 2000..2010 begin; only the long one overlaps.
        let i = c.claim(3, &[ext(500, 10)], 1).expect("overlap with inode 1");
        assert!(i.message.contains("inode 1"), "{}", i.message);
        // Same start as inode 2's first range.
        assert!(c.claim(4, &[ext(2000, 5)], 1).is_some());
        // Between recorded ranges: no overlap.
        assert!(c.claim(5, &[ext(2010, 10), ext(3000, 1)], 1).is_none());
        // Spanning several: reported; a later claim on what inode 6 newly took is found too.
        assert!(c.claim(6, &[ext(2025, 100)], 1).is_some());
        assert!(c.claim(7, &[ext(2100, 1)], 1).is_some_and(|i| i.message.contains("inode 6")));
        // A file whose own extents overlap is not "claimed by another inode".
        assert!(c.claim(8, &[ext(5000, 10), ext(5005, 10)], 1).is_none());
        // Each inode once.
        assert!(c.claim(3, &[ext(500, 10)], 1).is_none());
    }
}
