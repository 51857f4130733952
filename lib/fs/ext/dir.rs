//! ext directories: linear blocks of `ext2_dir_entry_2` records, hashed (htree, `INDEX_FL`)
//! directories whose index blocks are checked and skipped (their leaves are ordinary entry
//! blocks, so every name is found by reading the leaves in order), inline directories, and the
//! `metadata_csum` leaf tails and index tails. Hash values are not recomputed (that needs the
//! half-MD4/TEA hashes); a wrong hash only slows lookups, it loses no names.
//! Sources: linux `fs/ext4/namei.c` (`dx_root`, `dx_node`, `dx_tail`), `fs/ext4/ext4.h`.

use super::csum;
use crate::bytes::{le16, le32};
use crate::fs::tree::{DirEntry, Issue};

/// The `file_type` byte that marks a checksum tail (`EXT4_FT_DIR_CSUM`).
pub const FT_DIR_CSUM: u8 = 0xDE;
/// Size of a leaf block's checksum tail.
pub const TAIL_BYTES: usize = 12;

/// Decode `rec_len` (64 KiB blocks store 65536 as 0 or 65535).
pub fn rec_len(raw: u16, block_size: usize) -> usize {
    if block_size < 65536 {
        usize::from(raw)
    } else if raw == 0 || raw == 65535 {
        block_size
    } else {
        (usize::from(raw) & 65532) | ((usize::from(raw) & 3) << 16)
    }
}

/// What the parser needs to know about the file system.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Bytes per block.
    pub block_size: usize,
    /// Entries carry a type byte (else the name length is 16-bit).
    pub filetype: bool,
    /// Highest valid inode number.
    pub inodes_count: u32,
    /// Leaf blocks carry checksum tails.
    pub metadata_csum: bool,
}

/// Parse the entries in `data` (one leaf block, or an inline area), appending to `out`.
/// `where_` names the block in messages. Damage stops this block only.
pub fn parse_entries(g: &Geometry, data: &[u8], where_: &str, out: &mut Vec<DirEntry>, issues: &mut Vec<Issue>) {
    let mut pos = 0usize;
    while pos < data.len() {
        if pos + 8 > data.len() {
            issues.push(Issue::error("ext.dir-entry", format!("{where_}: truncated entry at byte {pos}")));
            return;
        }
        let ino = le32(data, pos);
        let rl = rec_len(le16(data, pos + 4), g.block_size);
        let name_len = if g.filetype { usize::from(data[pos + 6]) } else { usize::from(le16(data, pos + 6)) };
        if rl < 8 || !rl.is_multiple_of(4) || pos + rl > data.len() || 8 + name_len > rl {
            issues.push(Issue::error(
                "ext.dir-entry",
                format!(
                    "{where_}: entry at byte {pos} has rec_len {rl} and name_len {name_len} (rest of the block skipped)"
                ),
            ));
            return;
        }
        if ino != 0 {
            let name = &data[pos + 8..pos + 8 + name_len];
            if ino > g.inodes_count {
                issues.push(Issue::error(
                    "ext.dir-entry",
                    format!(
                        "{where_}: entry {:?} points to inode {ino}, past the last inode {}",
                        String::from_utf8_lossy(name),
                        g.inodes_count
                    ),
                ));
            } else if name != b"." && name != b".." {
                out.push(DirEntry { name: name.to_vec(), id: u64::from(ino) });
            }
        }
        pos += rl;
    }
}

/// Split a leaf block into its entry area and check its checksum tail (metadata_csum).
pub fn leaf_area<'b>(g: &Geometry, block: &'b [u8], seed: u32, where_: &str, issues: &mut Vec<Issue>) -> &'b [u8] {
    if !g.metadata_csum || block.len() < TAIL_BYTES {
        return block;
    }
    let t = block.len() - TAIL_BYTES;
    let is_tail = le32(block, t) == 0
        && rec_len(le16(block, t + 4), g.block_size) == TAIL_BYTES
        && block[t + 6] == 0
        && block[t + 7] == FT_DIR_CSUM;
    if !is_tail {
        issues.push(Issue::error("ext.checksum", format!("{where_}: directory block has no checksum tail")));
        return block;
    }
    if csum::crc32c(seed, &[&block[..t]]) != le32(block, t + 8) {
        issues.push(Issue::error("ext.checksum", format!("{where_}: directory block checksum mismatch")));
    }
    &block[..t]
}

/// The index part of an htree directory: which blocks are index (not leaf) blocks.
#[derive(Debug, Default)]
pub struct Index {
    /// Directory-relative numbers of index blocks (block 0 and interior nodes).
    pub index_blocks: Vec<u64>,
}

/// Parse the htree index rooted in directory block 0. `read` returns directory block `n`.
/// Structure errors become issues; the directory is then read linearly all the same.
pub fn parse_index(
    g: &Geometry,
    largedir: bool,
    dir_blocks: u64,
    seed: u32,
    read: &mut dyn FnMut(u64) -> crate::Result<Vec<u8>>,
    issues: &mut Vec<Issue>,
) -> crate::Result<Index> {
    let mut idx = Index { index_blocks: vec![0] };
    let root = read(0)?;
    let bs = g.block_size;
    if root.len() < 40 {
        return Ok(idx);
    }
    // '.' (rec_len 12) then '..' whose rec_len covers the rest of the block; dx_root_info at 24.
    let dot_ok = rec_len(le16(&root, 4), bs) == 12 && &root[8..9] == b".";
    let dotdot_ok = rec_len(le16(&root, 16), bs) == bs - 12 && &root[20..22] == b"..";
    let info_len = root[0x1D];
    let levels = root[0x1E];
    let hash_version = root[0x1C];
    let max_levels = if largedir { 3 } else { 2 };
    if !dot_ok || !dotdot_ok || le32(&root, 0x18) != 0 || info_len != 8 || levels >= max_levels || hash_version > 6 {
        issues.push(Issue::error(
            "ext.htree",
            format!(
                "htree root is malformed (info length {info_len}, {levels} indirect levels, hash version {hash_version}); \
                 the directory is read linearly"
            ),
        ));
        return Ok(idx);
    }
    let tail = if g.metadata_csum { 8 } else { 0 };
    // (block contents, count offset, remaining levels below)
    let mut frontier: Vec<(Vec<u8>, usize, u8)> = vec![(root, 0x20, levels)];
    let mut seen = std::collections::HashSet::from([0u64]);
    while let Some((node, off, below)) = frontier.pop() {
        let limit = usize::from(le16(&node, off));
        let count = usize::from(le16(&node, off + 2));
        let expect_limit = (bs - off - tail) / 8;
        if limit != expect_limit || count == 0 || count > limit {
            issues.push(Issue::error(
                "ext.htree",
                format!("htree node has limit {limit} (expected {expect_limit}) and count {count}"),
            ));
            continue;
        }
        if g.metadata_csum {
            let t = off + limit * 8;
            let c = csum::crc32c(seed, &[&node[..off + count * 8], &node[t..t + 4], &[0u8; 4]]);
            if c != le32(&node, t + 4) {
                issues.push(Issue::error("ext.checksum", "htree index block checksum mismatch".to_string()));
            }
        }
        for i in 0..count {
            // The first entry's hash field holds limit/count; its block is at off + 4.
            let blk = u64::from(le32(&node, off + 8 * i + 4));
            if blk >= dir_blocks {
                issues.push(Issue::error(
                    "ext.htree",
                    format!("htree entry points to block {blk} of a {dir_blocks}-block directory"),
                ));
                continue;
            }
            if below == 0 {
                // A leaf named by two index entries: the leaves are read linearly anyway (no
                // name is lost or listed twice), but the index is damaged (e2fsck pass 2).
                if !seen.insert(blk) {
                    issues.push(Issue::error("ext.htree", format!("htree leaf block {blk} is referenced twice")));
                }
                continue;
            }
            if below > 0 {
                if !seen.insert(blk) {
                    issues.push(Issue::error("ext.htree", format!("htree index block {blk} is referenced twice")));
                    continue;
                }
                idx.index_blocks.push(blk);
                let child = read(blk)?;
                // dx_node: a fake empty entry covering the block, then limit/count at 8.
                if child.len() >= 16 && le32(&child, 0) == 0 && rec_len(le16(&child, 4), bs) == bs {
                    frontier.push((child, 8, below - 1));
                } else {
                    issues.push(Issue::error("ext.htree", format!("htree interior block {blk} is not an index node")));
                }
            }
        }
    }
    Ok(idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ino: u32, rec_len: u16, name: &[u8], ft: u8) -> Vec<u8> {
        let mut e = ino.to_le_bytes().to_vec();
        e.extend(rec_len.to_le_bytes());
        e.push(name.len() as u8);
        e.push(ft);
        e.extend(name);
        e.resize(usize::from(rec_len), 0);
        e
    }

    fn geometry(block_size: usize) -> Geometry {
        Geometry { block_size, filetype: true, inodes_count: 100, metadata_csum: false }
    }

    #[test]
    fn rec_len_encoding() {
        assert_eq!(rec_len(12, 4096), 12);
        assert_eq!(rec_len(0, 65536), 65536);
        assert_eq!(rec_len(65535, 65536), 65536);
        assert_eq!(rec_len(0x0001 | 12, 65536), 12 | (1 << 16));
    }

    #[test]
    fn entries_and_damage() {
        let g = geometry(64);
        let mut block = entry(2, 12, b".", 2);
        block.extend(entry(0, 12, b"", 0)); // unused
        block.extend(entry(12, 20, b"file.txt", 1));
        block.extend(entry(13, 20, b"x", 1));
        let (mut out, mut issues) = (Vec::new(), Vec::new());
        parse_entries(&g, &block, "b", &mut out, &mut issues);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(
            out.iter().map(|e| (e.name.as_slice(), e.id)).collect::<Vec<_>>(),
            vec![(&b"file.txt"[..], 12), (b"x", 13)]
        );

        // rec_len past the block, too small for the name, unaligned: an issue, no entry.
        for bad_len in [68u16, 8, 14] {
            let mut block = entry(12, 12, b"a", 1);
            block[4..6].copy_from_slice(&bad_len.to_le_bytes());
            block.resize(64, 0);
            let (mut out, mut issues) = (Vec::new(), Vec::new());
            parse_entries(&g, &block, "b", &mut out, &mut issues);
            assert_eq!((out.len(), issues.len()), (0, 1), "rec_len {bad_len}");
        }
        let mut block = entry(500, 64, b"far", 1);
        block.truncate(64);
        let (mut out, mut issues) = (Vec::new(), Vec::new());
        parse_entries(&g, &block, "b", &mut out, &mut issues);
        assert!(out.is_empty() && issues.len() == 1);
        // Truncated header.
        let (mut out, mut issues) = (Vec::new(), Vec::new());
        parse_entries(&g, &[1, 0, 0], "b", &mut out, &mut issues);
        assert_eq!(issues.len(), 1);
    }

    #[test]
    fn csum_tail_detected() {
        let g = Geometry { metadata_csum: true, ..geometry(64) };
        let mut block = entry(12, 52, b"f", 1);
        let mut tail = entry(0, 12, b"", FT_DIR_CSUM);
        let c = crate::fs::ext::csum::crc32c(7, &[&block]);
        tail[8..12].copy_from_slice(&c.to_le_bytes());
        block.extend(&tail);
        let mut issues = Vec::new();
        assert_eq!(leaf_area(&g, &block, 7, "b", &mut issues).len(), 52);
        assert!(issues.is_empty());
        assert_eq!(leaf_area(&g, &block, 8, "b", &mut issues).len(), 52);
        assert_eq!(issues.len(), 1);
        block[60] ^= 1;
        let mut issues = Vec::new();
        leaf_area(&g, &block, 7, "b", &mut issues);
        assert_eq!(issues.len(), 1);
    }
}
