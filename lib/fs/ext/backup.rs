//! Backup superblocks, as `e2fsck -b` uses them: when the primary superblock (byte 1024) is wiped
//! or fails its checks, the copy at the start of group 1 is tried for each block size, at the
//! place mke2fs puts it with the default group size (`8 × block size` blocks per group: block
//! 8193 with 1 KiB blocks, 16384 with 2 KiB, 32768 with 4 KiB…). A candidate counts only when it
//! parses strictly, says it lives in group 1 (`s_block_group_nr`), and its own geometry puts
//! group 1 exactly there. Only tried when the primary looks like a damaged ext superblock (its
//! magic is there, or it is all zeros): random data never sends the search past the head.

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
}

/// Whether the primary superblock bytes are worth a backup search: the ext magic is there (the
/// rest is damaged) or the whole superblock was wiped to zeros.
pub fn primary_looks_damaged(raw: &[u8]) -> bool {
    raw.len() >= 0x3A && (le16(raw, 0x38) == EXT_SUPER_MAGIC || raw.iter().all(|&b| b == 0))
}

/// Look for group 1's superblock at the default places.
///
/// # Errors
/// None in practice: a candidate past the end or in an unreadable sector (a failing disk) is
/// skipped; the `Result` keeps the probe signature.
pub fn find(src: &dyn ByteSource) -> std::io::Result<Option<Backup>> {
    for log in 0..=6u32 {
        let bs = 1024u64 << log;
        let block = 8 * bs + u64::from(bs == 1024);
        let Some(at) = block.checked_mul(bs) else { continue };
        if at.saturating_add(1024) > src.size_bytes() {
            continue;
        }
        let mut raw = vec![0u8; 1024];
        if src.read_exact_at(&mut raw, at).is_err() {
            continue;
        }
        let Ok(sb) = Superblock::parse(&raw) else { continue };
        if u64::from(sb.block_size) == bs && sb.block_group_nr == 1 && sb.groups > 1 && sb.superblock_block(1) == block
        {
            return Ok(Some(Backup { sb, raw, block }));
        }
    }
    Ok(None)
}
