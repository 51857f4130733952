//! Backup superblocks, as `e2fsck -b` uses them: when the primary superblock (byte 1024) is wiped
//! or fails its checks, the copies mke2fs writes are tried, nearest first, for each block size at
//! the default group size (`8 × block size` clusters per group, times the cluster size with
//! bigalloc): group 1 (block 8193 with 1 KiB blocks, 16384 with 2 KiB, 32768 with 4 KiB…), then
//! group 2 (every group has one without `sparse_super`), the powers of 3, 5 and 7 (`sparse_super`,
//! also what `meta_bg` uses), and the last group the image can hold (`sparse_super2`'s default
//! second backup, `s_backup_bgs[1]`). A candidate counts only when it parses strictly, says it
//! lives in that group (`s_block_group_nr`), its own geometry puts that group exactly there, and
//! its own features say the group holds a backup. Only tried when the primary looks like a damaged
//! ext superblock (its magic is there, or it is all zeros): random data never sends the search
//! past the head, and the candidates are a bounded list (a few hundred 1 KiB reads at most).

use super::superblock::{EXT_SUPER_MAGIC, Superblock};
use crate::bytes::le16;
use crate::source::ByteSource;

/// A backup superblock that was found.
#[derive(Debug, Clone)]
pub struct Backup {
    /// It, parsed strictly.
    pub sb: Superblock,
    /// Its raw 1024 bytes.
    pub raw: Vec<u8>,
    /// The block it lives in (what `e2fsck -b` takes).
    pub block: u64,
    /// The block group it lives in.
    pub group: u32,
}

/// Largest cluster (in blocks, as a power of two) the search tries: bigalloc images made with
/// `mke2fs -C` up to 16 blocks per cluster at any block size, up to 64 at 1 KiB.
const MAX_SEARCH_CLUSTER_BITS: u32 = 6;

/// Whether the primary superblock bytes are worth a backup search: the ext magic is there (the
/// rest is damaged) or the whole superblock was wiped to zeros.
pub fn primary_looks_damaged(raw: &[u8]) -> bool {
    raw.len() >= 0x3A && (le16(raw, 0x38) == EXT_SUPER_MAGIC || raw.iter().all(|&b| b == 0))
}

/// The groups that may hold a backup in a file system of `groups` groups, nearest first: 1, 2,
/// the powers of 3, 5 and 7, and the last group; each once.
pub fn candidate_groups(groups: u64) -> Vec<u32> {
    let mut v: Vec<u64> = vec![1, 2];
    for p in [3u64, 5, 7] {
        let mut x = p;
        while x < groups {
            v.push(x);
            x = x.saturating_mul(p);
        }
    }
    v.push(groups.saturating_sub(1));
    v.retain(|&g| g >= 1 && g < groups);
    v.sort_unstable();
    v.dedup();
    v.into_iter().filter_map(|g| u32::try_from(g).ok()).collect()
}

/// Look for a backup superblock at the places mke2fs puts them (see the module comment); the
/// nearest valid one wins, as `e2fsck` tries group 1 first.
///
/// # Errors
/// None in practice: a candidate past the end or in an unreadable sector (a failing disk) is
/// skipped; the `Result` keeps the probe signature.
pub fn find(src: &dyn ByteSource) -> std::io::Result<Option<Backup>> {
    let size = src.size_bytes();
    // (block size, first data block, blocks per group, groups the image can hold).
    let mut layouts: Vec<(u64, u64, u64, u64)> = Vec::new();
    for cbits in 0..=MAX_SEARCH_CLUSTER_BITS {
        for log in 0..=6u32 {
            let bs = 1024u64 << log;
            // bigalloc starts the first group at block 0 even with 1 KiB blocks.
            let first = u64::from(bs == 1024 && cbits == 0);
            let bpg = (8 * bs) << cbits;
            let blocks = size / bs;
            let groups = blocks.saturating_sub(first).div_ceil(bpg);
            if groups > 1 {
                layouts.push((bs, first, bpg, groups));
            }
        }
    }
    // Group 1 at every geometry first (the copy e2fsck uses), then the later ones.
    let mut tries: Vec<(u64, u64, u32)> = Vec::new();
    for &(bs, first, bpg, groups) in &layouts {
        for g in candidate_groups(groups) {
            tries.push((bs, first + u64::from(g) * bpg, g));
        }
    }
    tries.sort_by_key(|&(_, _, g)| g);
    for (bs, block, g) in tries {
        let Some(at) = block.checked_mul(bs) else { continue };
        if at.saturating_add(1024) > size {
            continue;
        }
        let mut raw = vec![0u8; 1024];
        if src.read_exact_at(&mut raw, at).is_err() || le16(&raw, 0x38) != EXT_SUPER_MAGIC {
            continue;
        }
        let Ok(sb) = Superblock::parse(&raw) else { continue };
        if u64::from(sb.block_size) == bs
            // mke2fs stores the group number in 16 bits, saturated.
            && u32::from(sb.block_group_nr) == g.min(u32::from(u16::MAX))
            && g < sb.groups
            && sb.superblock_block(g) == block
            && sb.group_has_super(g)
        {
            return Ok(Some(Backup { sb, raw, block, group: g }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates() {
        assert_eq!(candidate_groups(1), Vec::<u32>::new());
        assert_eq!(candidate_groups(2), vec![1]);
        assert_eq!(candidate_groups(5), vec![1, 2, 3, 4]);
        assert_eq!(candidate_groups(60), vec![1, 2, 3, 5, 7, 9, 25, 27, 49, 59]);
        // Bounded for any size.
        assert!(candidate_groups(u64::MAX).len() < 100);
    }
}
