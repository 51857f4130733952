//! Logical → physical block maps of ext files: extent trees (ext4, `EXTENTS_FL`) and the
//! classic direct / indirect / double / triple-indirect block map (ext2/ext3). Both become a
//! sorted list of [`Extent`]s in bytes (the model FIEMAP uses, so an image's files can be
//! compared with FIEMAP of the same image loop-mounted); holes are whatever no extent covers. Every pointer is checked against
//! the file system, extent-tree depths must descend, tree blocks may appear only once (cycles),
//! and the total mapped is capped at the file system's block count, so corrupted maps end in
//! [`Issue`]s, never in loops or unbounded memory. Sources: linux `fs/ext4/ext4_extents.h`,
//! e2fsprogs `lib/ext2fs/block.c`.

use super::Ext;
use super::csum;
use super::inode::Inode;
use crate::bytes::{le16, le32};
use crate::extent::{Extent, ExtentFlags};
use crate::fs::tree::Issue;
use std::collections::HashSet;

/// Extent header magic (`EXT4_EXT_MAGIC`).
pub const EXTENT_MAGIC: u16 = 0xF30A;
/// Deepest extent tree the kernel builds (`EXT4_MAX_EXTENT_DEPTH`).
pub const MAX_EXTENT_DEPTH: u16 = 5;
/// `ee_len` above this marks an unwritten (preallocated, reads as zeros) extent.
const EXT_INIT_MAX_LEN: u16 = 32768;

/// A contiguous piece of a file, in blocks (while building).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// First logical block.
    pub logical: u64,
    /// First physical block.
    pub physical: u64,
    /// Length in blocks.
    pub len: u64,
    /// Preallocated but never written: reads as zeros.
    pub unwritten: bool,
}

/// Builds a map while enforcing the limits.
struct Builder<'a> {
    ext: &'a Ext<'a>,
    ino: u32,
    /// Logical blocks that can hold file data (beyond EOF is ignored).
    file_blocks: u64,
    runs: Vec<Run>,
    issues: Vec<Issue>,
    tree_blocks: HashSet<u64>,
    mapped: u64,
    stopped: bool,
    /// Logical byte ranges whose blocks the map points outside the file system (read as zeros).
    bad: Vec<std::ops::Range<u64>>,
    /// Whether some damage could not be tied to a byte range (cycles, unreadable map blocks…).
    unranged: bool,
}

impl Builder<'_> {
    fn issue(&mut self, code: &'static str, msg: String) {
        self.unranged = true;
        self.note(code, msg);
    }

    /// Record an issue whose damaged byte range is already in `bad`.
    fn note(&mut self, code: &'static str, msg: String) {
        // Bound the number of messages per file.
        if self.issues.len() < 16 {
            self.issues.push(Issue::error(code, format!("inode {}: {msg}", self.ino)));
        }
    }

    /// Whether `[physical, physical+len)` lies inside the file system's data blocks.
    fn in_range(&self, physical: u64, len: u64) -> bool {
        let sb = &self.ext.sb;
        physical >= u64::from(sb.first_data_block) && physical.checked_add(len).is_some_and(|e| e <= sb.blocks_count)
    }

    fn add(&mut self, logical: u64, physical: u64, len: u64, unwritten: bool) {
        if self.stopped || len == 0 || logical >= self.file_blocks {
            return;
        }
        let len = len.min(self.file_blocks - logical);
        if !self.in_range(physical, len) {
            let bs = u64::from(self.ext.sb.block_size);
            let start = logical.saturating_mul(bs);
            self.bad.push(start..start.saturating_add(len.saturating_mul(bs)));
            self.note(
                "ext.bad-block-pointer",
                format!(
                    "logical block {logical}: blocks {physical}..{} lie outside the file system (0..{}); read as zeros",
                    physical.saturating_add(len),
                    self.ext.sb.blocks_count
                ),
            );
            return;
        }
        self.mapped += len;
        if self.mapped > self.ext.sb.blocks_count {
            self.issue("ext.map-too-large", "the block map claims more blocks than the file system has".into());
            self.stopped = true;
            return;
        }
        if let Some(last) = self.runs.last_mut()
            && last.unwritten == unwritten
            && last.logical + last.len == logical
            && last.physical + last.len == physical
        {
            last.len += len;
            return;
        }
        self.runs.push(Run { logical, physical, len, unwritten });
    }

    /// Remember a tree/indirect block; false (and an issue) if it was already used.
    fn visit(&mut self, block: u64) -> bool {
        if !self.tree_blocks.insert(block) {
            self.issue("ext.map-cycle", format!("map block {block} is used twice (a cycle in the block map)"));
            return false;
        }
        true
    }

    fn finish(mut self) -> Mapped {
        self.runs.sort_by_key(|r| r.logical);
        // Overlapping logical ranges mean a corrupted map: keep the first.
        let mut out: Vec<Run> = Vec::with_capacity(self.runs.len());
        let mut overlap = false;
        for r in self.runs {
            match out.last() {
                Some(p) if p.logical + p.len > r.logical => overlap = true,
                _ => out.push(r),
            }
        }
        if overlap {
            let ino = self.ino;
            self.unranged = true;
            self.issues.push(Issue::error("ext.map-overlap", format!("inode {ino}: extents overlap")));
        }
        // In range of the file system (checked in `add`), so the byte offsets fit in u64 unless
        // the block count itself is absurd; such runs are dropped with an issue.
        let bs = u64::from(self.ext.sb.block_size);
        let mut extents = Vec::with_capacity(out.len());
        for r in out {
            let bytes = |n: u64| n.checked_mul(bs);
            match (bytes(r.logical), bytes(r.physical), bytes(r.len)) {
                (Some(logical), Some(physical), Some(length)) => extents.push(Extent {
                    logical,
                    physical,
                    length,
                    flags: if r.unwritten { ExtentFlags::UNWRITTEN } else { ExtentFlags::default() },
                }),
                _ => {
                    let ino = self.ino;
                    self.unranged = true;
                    self.issues.push(Issue::error(
                        "ext.bad-block-pointer",
                        format!("inode {ino}: blocks {}.. lie beyond 2^64 bytes; read as zeros", r.physical),
                    ));
                }
            }
        }
        let damaged = (!self.unranged).then_some(self.bad);
        let mut map_blocks: Vec<u64> = self.tree_blocks.into_iter().collect();
        map_blocks.sort_unstable();
        Mapped { extents, issues: self.issues, damaged, map_blocks }
    }
}

/// A resolved file map.
pub struct Mapped {
    /// Byte extents, in logical order.
    pub extents: Vec<Extent>,
    /// Damage found.
    pub issues: Vec<Issue>,
    /// Logical byte ranges the map's damage covers (they read as zeros), when every problem could
    /// be tied to a range; `None` when some could not (then any hole may be lost data).
    pub damaged: Option<Vec<std::ops::Range<u64>>>,
    /// The blocks of the map itself (extent-tree nodes below the inode, indirect blocks), sorted.
    pub map_blocks: Vec<u64>,
}

/// Resolve the map of `inode` (extent tree or block map), for `file_bytes` bytes of content.
///
/// # Errors
/// `Io` when a map block cannot be read; damage is reported as issues.
pub fn map(ext: &Ext<'_>, inode: &Inode, file_bytes: u64) -> crate::Result<Mapped> {
    let bs = u64::from(ext.sb.block_size);
    let mut b = Builder {
        ext,
        ino: inode.ino,
        file_blocks: file_bytes.div_ceil(bs),
        runs: Vec::new(),
        issues: Vec::new(),
        tree_blocks: HashSet::new(),
        mapped: 0,
        stopped: false,
        bad: Vec::new(),
        unranged: false,
    };
    if inode.flags & super::inode::EXTENTS_FL != 0 {
        let seed = inode.csum_seed(ext.sb.csum_seed);
        extent_node(&mut b, inode.i_block(), None, seed, 0)?;
    } else {
        block_map(&mut b, inode.i_block())?;
    }
    Ok(b.finish())
}

/// Walk one extent-tree node: `data` is the node (60 bytes of `i_block` for the root, a block
/// otherwise); `expect_depth` is the depth its parent implies (None at the root).
fn extent_node(
    b: &mut Builder<'_>,
    data: &[u8],
    expect_depth: Option<u16>,
    seed: u32,
    level: u32,
) -> crate::Result<()> {
    if b.stopped {
        return Ok(());
    }
    let magic = le16(data, 0);
    let entries = le16(data, 2);
    let max = le16(data, 4);
    let depth = le16(data, 6);
    if magic != EXTENT_MAGIC {
        b.issue("ext.extent-header", format!("extent header magic {magic:#06x} (0xf30a expected)"));
        return Ok(());
    }
    let capacity = (data.len() - 12) / 12;
    if usize::from(max) > capacity || entries > max {
        b.issue("ext.extent-header", format!("extent header claims {entries} of {max} entries in room for {capacity}"));
        return Ok(());
    }
    if depth > MAX_EXTENT_DEPTH || expect_depth.is_some_and(|d| d != depth) || level > u32::from(MAX_EXTENT_DEPTH) {
        b.issue("ext.extent-header", format!("extent tree depth {depth} at level {level} is inconsistent"));
        return Ok(());
    }
    // Block nodes carry a checksum after `max` entries on metadata_csum file systems.
    if expect_depth.is_some() && b.ext.sb.metadata_csum() {
        let end = 12 + 12 * usize::from(max);
        if end + 4 <= data.len() {
            let stored = le32(data, end);
            if csum::crc32c(seed, &[&data[..end]]) != stored {
                b.issue("ext.checksum", "extent tree block checksum mismatch".into());
            }
        }
    }
    let mut prev_logical: Option<u64> = None;
    for i in 0..usize::from(entries) {
        let e = &data[12 + 12 * i..24 + 12 * i];
        let logical = u64::from(le32(e, 0));
        if prev_logical.is_some_and(|p| logical <= p) {
            b.issue(
                "ext.extent-order",
                format!("extent entries are not in ascending order at logical block {logical}"),
            );
            return Ok(());
        }
        prev_logical = Some(logical);
        if depth == 0 {
            let raw_len = le16(e, 4);
            let (len, unwritten) =
                if raw_len > EXT_INIT_MAX_LEN { (raw_len - EXT_INIT_MAX_LEN, true) } else { (raw_len, false) };
            let physical = u64::from(le32(e, 8)) | (u64::from(le16(e, 6)) << 32);
            b.add(logical, physical, u64::from(len), unwritten);
        } else {
            let child = u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32);
            if logical >= b.file_blocks {
                continue;
            }
            if !b.in_range(child, 1) {
                b.issue(
                    "ext.bad-block-pointer",
                    format!("extent index points to block {child}, outside the file system"),
                );
                continue;
            }
            if !b.visit(child) {
                continue;
            }
            let block = b.ext.read_block(child)?;
            extent_node(b, &block, Some(depth - 1), seed, level + 1)?;
        }
        if b.stopped {
            break;
        }
    }
    Ok(())
}

/// The ext2/ext3 block map: 12 direct pointers, then single, double and triple indirect.
fn block_map(b: &mut Builder<'_>, i_block: &[u8]) -> crate::Result<()> {
    let ppb = u64::from(b.ext.sb.block_size / 4);
    for i in 0..12u64 {
        let p = u64::from(le32(i_block, 4 * i as usize));
        if p != 0 {
            b.add(i, p, 1, false);
        }
    }
    let mut logical = 12u64;
    for (slot, level) in [(12usize, 1u32), (13, 2), (14, 3)] {
        let span = ppb.pow(level);
        if logical >= b.file_blocks {
            break;
        }
        let p = u64::from(le32(i_block, 4 * slot));
        if p != 0 {
            indirect(b, p, level, logical)?;
        }
        logical = logical.saturating_add(span);
    }
    Ok(())
}

/// An indirect block at `level` (1 = its pointers are data blocks) mapping from `logical`.
fn indirect(b: &mut Builder<'_>, block: u64, level: u32, logical: u64) -> crate::Result<()> {
    if b.stopped || logical >= b.file_blocks {
        return Ok(());
    }
    if !b.in_range(block, 1) {
        b.issue("ext.bad-block-pointer", format!("indirect block {block} lies outside the file system"));
        return Ok(());
    }
    if !b.visit(block) {
        return Ok(());
    }
    let data = b.ext.read_block(block)?;
    let ppb = u64::from(b.ext.sb.block_size / 4);
    let span = ppb.pow(level - 1);
    for i in 0..ppb {
        let l = logical.saturating_add(i.saturating_mul(span));
        if l >= b.file_blocks || b.stopped {
            break;
        }
        let p = u64::from(le32(&data, 4 * i as usize));
        if p == 0 {
            continue;
        }
        if level == 1 {
            b.add(l, p, 1, false);
        } else {
            indirect(b, p, level - 1, l)?;
        }
    }
    Ok(())
}
