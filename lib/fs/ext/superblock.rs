//! The ext2/3/4 superblock: parse the 1024 bytes at byte 1024 with staged checks (magic,
//! geometry, feature flags) and compute the derived geometry the reader needs. Offsets follow
//! e2fsprogs `lib/ext2fs/ext2_fs.h` (`struct ext2_super_block`).

use super::csum;
use crate::bytes::{self, le16, le32};
use crate::fs::kind::FsKind;
use crate::fs::kind::Strictness;

/// ext superblock magic (`EXT2_SUPER_MAGIC`), at superblock offset 56.
pub const EXT_SUPER_MAGIC: u16 = 0xEF53;
/// Byte offset of the primary ext superblock.
pub const EXT_SUPERBLOCK_OFFSET: u64 = 1024;
/// Incompat features ext3 supports (FILETYPE | RECOVER | META_BG), per libblkid.
const EXT3_INCOMPAT_SUPP: u32 = 0x0002 | 0x0004 | 0x0010;
/// Ro-compat features ext2/ext3 support (SPARSE_SUPER | LARGE_FILE | BTREE_DIR).
const EXT3_RO_COMPAT_SUPP: u32 = 0x0001 | 0x0002 | 0x0004;

/// `s_feature_compat`: the file system has a journal (ext3/ext4).
pub const COMPAT_HAS_JOURNAL: u32 = 0x0004;
/// `s_feature_compat`: backups only in the groups named by `s_backup_bgs`.
pub const COMPAT_SPARSE_SUPER2: u32 = 0x0200;

/// `s_feature_incompat`: compression (never finished upstream; unsupported).
pub const INCOMPAT_COMPRESSION: u32 = 0x0001;
/// Directory entries carry a file type byte.
pub const INCOMPAT_FILETYPE: u32 = 0x0002;
/// The journal needs recovery.
pub const INCOMPAT_RECOVER: u32 = 0x0004;
/// This is an external journal device, not a file system.
pub const INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
/// Group descriptors are spread over "meta block groups".
pub const INCOMPAT_META_BG: u32 = 0x0010;
/// Files may use extent trees.
pub const INCOMPAT_EXTENTS: u32 = 0x0040;
/// 64-bit block numbers and (usually) 64-byte group descriptors.
pub const INCOMPAT_64BIT: u32 = 0x0080;
/// Multiple-mount protection.
pub const INCOMPAT_MMP: u32 = 0x0100;
/// Flexible block groups (metadata placement only).
pub const INCOMPAT_FLEX_BG: u32 = 0x0200;
/// Large extended attributes in inodes.
pub const INCOMPAT_EA_INODE: u32 = 0x0400;
/// Data in directory entries (Lustre; unsupported).
pub const INCOMPAT_DIRDATA: u32 = 0x1000;
/// The metadata checksum seed is stored in the superblock.
pub const INCOMPAT_CSUM_SEED: u32 = 0x2000;
/// Directories larger than 2 GiB / 3-level htrees.
pub const INCOMPAT_LARGEDIR: u32 = 0x4000;
/// Small files and directories stored inside the inode.
pub const INCOMPAT_INLINE_DATA: u32 = 0x8000;
/// Encrypted files and names.
pub const INCOMPAT_ENCRYPT: u32 = 0x10000;
/// Case-insensitive directories.
pub const INCOMPAT_CASEFOLD: u32 = 0x20000;
/// Incompatible features this reader understands.
const INCOMPAT_KNOWN: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;

/// `s_feature_ro_compat`: superblock backups only in groups 0, 1 and powers of 3, 5, 7.
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
/// `i_blocks` may count file-system blocks (with `EXT4_HUGE_FILE_FL`).
pub const RO_COMPAT_HUGE_FILE: u32 = 0x0008;
/// Group descriptors carry a CRC-16 (`uninit_bg`).
pub const RO_COMPAT_GDT_CSUM: u32 = 0x0010;
/// Allocation in clusters of 2^n blocks (`bigalloc`): `s_clusters_per_group`, and
/// `s_first_data_block` 0 even with 1 KiB blocks. Block maps still count blocks.
pub const RO_COMPAT_BIGALLOC: u32 = 0x0200;
/// Largest `s_log_cluster_size − s_log_block_size` the kernel mounts
/// (`EXT4_MAX_CLUSTER_LOG_SIZE − EXT4_MIN_BLOCK_LOG_SIZE`).
pub const MAX_CLUSTER_BITS: u32 = 20;
/// All metadata carries CRC-32C checksums.
pub const RO_COMPAT_METADATA_CSUM: u32 = 0x0400;
/// Blocks may be shared between files (deduplicated read-only images; e2fsck accepts
/// multiply-claimed blocks).
pub const RO_COMPAT_SHARED_BLOCKS: u32 = 0x4000;

/// `s_checksum_type` for CRC-32C.
pub const CHECKSUM_TYPE_CRC32C: u8 = 1;
/// Byte offset of `s_checksum` (the superblock's own CRC-32C covers everything before it).
pub const SB_CHECKSUM_OFFSET: usize = 0x3FC;
/// Smallest 64-bit group descriptor (`EXT4_MIN_DESC_SIZE_64BIT`).
pub const MIN_DESC_SIZE_64BIT: u16 = 64;
/// Classic group descriptor size.
pub const DESC_SIZE_32: u16 = 32;

/// The fields of the superblock the reader uses, plus derived geometry.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// `s_inodes_count`.
    pub inodes_count: u32,
    /// `s_blocks_count` (64-bit with `64bit`).
    pub blocks_count: u64,
    /// `s_free_blocks_count` (low 32 bits).
    pub free_blocks_count: u64,
    /// `s_free_inodes_count`.
    pub free_inodes_count: u32,
    /// `s_first_data_block` (1 for 1 KiB blocks, else 0).
    pub first_data_block: u32,
    /// Block size in bytes (1 KiB – 64 KiB).
    pub block_size: u32,
    /// `s_blocks_per_group`.
    pub blocks_per_group: u32,
    /// Blocks per allocation cluster (`bigalloc`; 1 otherwise).
    pub cluster_blocks: u32,
    /// `s_block_group_nr`: the group this copy of the superblock lives in (0 = primary).
    pub block_group_nr: u16,
    /// `s_inodes_per_group`.
    pub inodes_per_group: u32,
    /// `s_state` (1 = clean, 2 = errors).
    pub state: u16,
    /// `s_rev_level`.
    pub rev_level: u32,
    /// Inode record size (128 for revision 0).
    pub inode_size: u32,
    /// `s_feature_compat`.
    pub compat: u32,
    /// `s_feature_incompat`.
    pub incompat: u32,
    /// `s_feature_ro_compat`.
    pub ro_compat: u32,
    /// `s_uuid`.
    pub uuid: [u8; 16],
    /// `s_volume_name` (NUL-padded).
    pub label: [u8; 16],
    /// Group descriptor size in bytes.
    pub desc_size: u32,
    /// `s_first_meta_bg`.
    pub first_meta_bg: u32,
    /// `s_backup_bgs` (sparse_super2).
    pub backup_bgs: [u32; 2],
    /// Seed of all metadata checksums (`s_checksum_seed` or CRC-32C of the UUID).
    pub csum_seed: u32,
    /// Number of block groups.
    pub groups: u32,
    /// Whether the stored superblock checksum matches (None: the fs has no checksums).
    pub checksum_ok: Option<bool>,
}

/// The fields of one block-group descriptor the reader uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupDesc {
    /// `bg_inode_table` (64-bit with `64bit` and 64-byte descriptors).
    pub inode_table: u64,
    /// `bg_flags`.
    pub flags: u16,
    /// `bg_itable_unused`.
    pub itable_unused: u32,
    /// Whether the stored checksum matches (`None`: the file system has no descriptor checksums).
    pub checksum_ok: Option<bool>,
}

/// A `Corrupt` error about the superblock.
fn bad(what: String) -> crate::Error {
    crate::Error::corrupt(format!("ext superblock: {what}"))
}

impl Superblock {
    /// Parse and check a superblock (strictly: what the reader needs).
    ///
    /// # Errors
    /// `NotRecognized` without the magic; `Corrupt` for impossible geometry; `Unsupported` for
    /// incompatible features this reader does not know.
    pub fn parse(sb: &[u8]) -> crate::Result<Superblock> {
        Self::parse_with(sb, Strictness::Strict)
    }

    /// Parse a superblock with the checks `strictness` asks for. All arithmetic is checked.
    ///
    /// # Errors
    /// As [`Superblock::parse`], with fewer checks for the lenient levels.
    pub fn parse_with(sb: &[u8], strictness: Strictness) -> crate::Result<Superblock> {
        // Under a garbling IV the counts in bytes 0..16 (inodes, blocks, free counts) mean nothing;
        // a head scan sees one 512-byte sector (the fields past it then read as zero).
        let trusted = !matches!(strictness, Strictness::IvGarbled(_));
        if sb.len() < if trusted { 1024 } else { 512 } || le16(sb, 0x38) != EXT_SUPER_MAGIC {
            return Err(crate::Error::new(
                crate::ErrorKind::NotRecognized,
                "no ext2/3/4 superblock magic at byte 1080",
            ));
        }
        let strict = strictness == Strictness::Strict;
        let mut sbk = Self::fields(sb, trusted, strict)?;
        if sbk.is_journal_device() {
            // Lenient only: a journal device has no block groups to check.
            return Ok(sbk);
        }
        sbk.check_groups(sb)?;
        if !trusted {
            return Ok(sbk);
        }
        sbk.check_counts(strict)?;
        sbk.check_checksum(sb, strict)?;
        Ok(sbk)
    }

    /// Read the fields, checking the block size, revision, feature flags, inode size and
    /// descriptor size. Under an untrusted (garbled) head the counts are left zero.
    fn fields(sb: &[u8], trusted: bool, strict: bool) -> crate::Result<Superblock> {
        let log_bs = le32(sb, 0x18);
        if log_bs > 6 {
            return Err(bad(format!("s_log_block_size {log_bs} is above 6 (block sizes are 1 KiB to 64 KiB)")));
        }
        let block_size = 1024u32 << log_bs;
        let rev_level = le32(sb, 0x4C);
        if rev_level > 1 {
            return Err(bad(format!("revision {rev_level} is unknown (0 or 1 expected)")));
        }
        let incompat = le32(sb, 0x60);
        let ro_compat = le32(sb, 0x64);
        let compat = le32(sb, 0x5C);
        let journal_dev = incompat & INCOMPAT_JOURNAL_DEV != 0;
        if journal_dev && strict {
            return Err(crate::Error::unsupported("this is an external ext3/ext4 journal device, not a file system"));
        }
        let unknown = incompat & !INCOMPAT_KNOWN;
        if unknown != 0 && strict {
            return Err(crate::Error::unsupported(format!(
                "ext incompatible feature flags {unknown:#x} are not supported by this reader"
            )));
        }
        let inode_size = if rev_level == 0 { 128 } else { u32::from(le16(sb, 0x58)) };
        if !inode_size.is_power_of_two() || inode_size < 128 || inode_size > block_size {
            return Err(bad(format!("inode size {inode_size} (a power of two from 128 to the block size expected)")));
        }
        let mut blocks_count = if trusted { u64::from(le32(sb, 0x04)) } else { 0 };
        let mut desc_size = u32::from(DESC_SIZE_32);
        if incompat & INCOMPAT_64BIT != 0 {
            if trusted {
                blocks_count |= u64::from(le32(sb, 0x150)) << 32;
            }
            desc_size = u32::from(le16(sb, 0xFE));
            if desc_size < u32::from(MIN_DESC_SIZE_64BIT) || desc_size > 1024 || !desc_size.is_power_of_two() {
                if strict {
                    return Err(bad(format!(
                        "group descriptor size {desc_size} (64 to 1024, a power of two, expected)"
                    )));
                }
                desc_size = u32::from(MIN_DESC_SIZE_64BIT);
            }
        }
        Ok(Superblock {
            inodes_count: if trusted { le32(sb, 0x00) } else { 0 },
            blocks_count,
            free_blocks_count: if trusted { u64::from(le32(sb, 0x0C)) } else { 0 },
            free_inodes_count: if trusted { le32(sb, 0x10) } else { 0 },
            first_data_block: le32(sb, 0x14),
            block_size,
            blocks_per_group: le32(sb, 0x20),
            cluster_blocks: 1,
            block_group_nr: le16(sb, 0x5A),
            inodes_per_group: le32(sb, 0x28),
            state: le16(sb, 0x3A),
            rev_level,
            inode_size,
            compat,
            incompat,
            ro_compat,
            uuid: bytes::array(sb, 0x68),
            label: bytes::array(sb, 0x78),
            desc_size,
            first_meta_bg: le32(sb, 0x104),
            backup_bgs: [le32(sb, 0x24C), le32(sb, 0x250)],
            csum_seed: 0,
            groups: 0,
            checksum_ok: None,
        })
    }

    /// Check the group geometry: the first data block, the cluster size (bigalloc), and the blocks
    /// and inodes per group against what one bitmap block can hold.
    fn check_groups(&mut self, sb: &[u8]) -> crate::Result<()> {
        let Superblock { first_data_block, blocks_per_group, inodes_per_group, block_size, ro_compat, .. } = *self;
        let log_bs = le32(sb, 0x18);
        let bigalloc = ro_compat & RO_COMPAT_BIGALLOC != 0;
        // bigalloc: the first cluster starts at block 0 whatever the block size.
        if first_data_block != u32::from(block_size == 1024 && !bigalloc) {
            return Err(bad(format!(
                "s_first_data_block is {first_data_block} with {block_size}-byte blocks{}",
                if bigalloc { " and bigalloc" } else { "" }
            )));
        }
        let bits = u64::from(block_size) * 8;
        // The bitmaps count clusters: one bitmap block per group.
        let mut per_group_units = blocks_per_group;
        if bigalloc {
            let log_cluster = le32(sb, 0x1C);
            let Some(cbits) = log_cluster.checked_sub(log_bs).filter(|&c| c <= MAX_CLUSTER_BITS) else {
                return Err(bad(format!(
                    "s_log_cluster_size {log_cluster} with s_log_block_size {log_bs} (a cluster is 1 to 2^{MAX_CLUSTER_BITS} \
                     blocks)"
                )));
            };
            self.cluster_blocks = 1 << cbits;
            per_group_units = le32(sb, 0x24);
            if u64::from(per_group_units) << cbits != u64::from(blocks_per_group) {
                return Err(bad(format!(
                    "{blocks_per_group} blocks per group is not {per_group_units} clusters of {} blocks",
                    self.cluster_blocks
                )));
            }
        }
        if per_group_units < 8
            || u64::from(per_group_units) > bits
            || !per_group_units.is_multiple_of(8)
            || inodes_per_group == 0
            || u64::from(inodes_per_group) > bits
        {
            return Err(bad(format!(
                "{blocks_per_group} blocks and {inodes_per_group} inodes per group (8 to {bits} blocks, a multiple \
                 of 8, and 1 to {bits} inodes expected)"
            )));
        }
        Ok(())
    }

    /// Check the block and inode counts (a trusted head only) and work out the number of groups.
    fn check_counts(&mut self, strict: bool) -> crate::Result<()> {
        let Superblock {
            blocks_count,
            first_data_block,
            block_size,
            blocks_per_group,
            inodes_per_group,
            inodes_count,
            ..
        } = *self;
        let sbk = self;
        let Some(data_blocks) = blocks_count.checked_sub(u64::from(first_data_block)).filter(|&n| n > 0) else {
            return Err(bad(format!("the block count {blocks_count} leaves no data blocks")));
        };
        // Every block address times the block size must stay a byte offset.
        if blocks_count.checked_mul(u64::from(block_size)).is_none_or(|b| b > i64::MAX as u64) {
            return Err(bad(format!("{blocks_count} blocks of {block_size} bytes is beyond any device")));
        }
        let groups64 = data_blocks.div_ceil(u64::from(blocks_per_group));
        sbk.groups = u32::try_from(groups64).map_err(|_| bad(format!("{groups64} block groups is impossible")))?;
        if strict && u64::from(inodes_count) > sbk.inode_capacity() {
            return Err(bad(format!(
                "{inodes_count} inodes do not fit in {} groups of {inodes_per_group} inodes",
                sbk.groups
            )));
        }
        if !strict && (sbk.free_blocks_count > blocks_count || sbk.free_inodes_count > inodes_count || sbk.state > 7) {
            return Err(bad(format!(
                "{} free of {blocks_count} blocks, {} free of {inodes_count} inodes, state {:#x}",
                sbk.free_blocks_count, sbk.free_inodes_count, sbk.state
            )));
        }
        Ok(())
    }

    /// With `metadata_csum`: check the superblock's CRC-32C and work out the checksum seed.
    fn check_checksum(&mut self, sb: &[u8], strict: bool) -> crate::Result<()> {
        let sbk = self;
        let incompat = sbk.incompat;
        if sbk.metadata_csum() {
            let ty = sb[0x175];
            if ty == CHECKSUM_TYPE_CRC32C {
                let stored = le32(sb, SB_CHECKSUM_OFFSET);
                sbk.checksum_ok = Some(csum::crc32c(!0, &[&sb[..SB_CHECKSUM_OFFSET]]) == stored);
                sbk.csum_seed =
                    if incompat & INCOMPAT_CSUM_SEED != 0 { le32(sb, 0x270) } else { csum::crc32c(!0, &[&sbk.uuid]) };
            } else if strict {
                return Err(bad(format!("checksum type {ty} is unknown (1 = CRC-32C expected)")));
            }
        }
        Ok(())
    }

    /// Whether this is an external journal device (refused by [`Strictness::Strict`]; the
    /// lenient levels accept it after the block-size checks only).
    pub fn is_journal_device(&self) -> bool {
        self.incompat & INCOMPAT_JOURNAL_DEV != 0
    }

    /// `groups × inodes_per_group`: the inode count a consistent superblock states.
    pub fn inode_capacity(&self) -> u64 {
        u64::from(self.groups) * u64::from(self.inodes_per_group)
    }

    /// The volume label (`s_volume_name`), `None` when empty.
    pub fn label(&self) -> Option<String> {
        bytes::label(&self.label)
    }

    /// The size the file system claims, in bytes (`None` on overflow).
    pub fn size_bytes(&self) -> Option<u64> {
        self.blocks_count.checked_mul(u64::from(self.block_size))
    }

    /// Parse group `g`'s descriptor `d` (`desc_size` bytes) and check its checksum.
    pub fn group_desc(&self, g: u32, d: &[u8]) -> GroupDesc {
        let ds = self.desc_size as usize;
        let mut inode_table = u64::from(le32(d, 0x08));
        let mut itable_unused = u32::from(le16(d, 0x1C));
        if ds >= 64 {
            inode_table |= u64::from(le32(d, 0x28)) << 32;
            itable_unused |= u32::from(le16(d, 0x32)) << 16;
        }
        let stored = le16(d, 0x1E);
        let gnum = g.to_le_bytes();
        let head = bytes::slice(d, 0, 0x1E);
        let rest = d.get(0x20..ds.min(d.len())).unwrap_or(&[]);
        let computed = if self.metadata_csum() {
            Some((csum::crc32c(self.csum_seed, &[&gnum, head, &[0, 0], rest]) & 0xFFFF) as u16)
        } else if self.gdt_csum() {
            Some(csum::crc16(0xFFFF, &[&self.uuid, &gnum, head, rest]))
        } else {
            None
        };
        GroupDesc { inode_table, flags: le16(d, 0x12), itable_unused, checksum_ok: computed.map(|c| c == stored) }
    }

    /// Whether metadata carries CRC-32C checksums.
    pub fn metadata_csum(&self) -> bool {
        self.ro_compat & RO_COMPAT_METADATA_CSUM != 0
    }

    /// Whether group descriptors carry a CRC-16 (`uninit_bg` without `metadata_csum`).
    pub fn gdt_csum(&self) -> bool {
        !self.metadata_csum() && self.ro_compat & RO_COMPAT_GDT_CSUM != 0
    }

    /// Whether directory entries carry a type byte.
    pub fn has_filetype(&self) -> bool {
        self.incompat & INCOMPAT_FILETYPE != 0
    }

    /// blkid's name: ext4 when any ext4-only feature is on, ext3 with a journal, else ext2.
    pub fn kind(&self) -> FsKind {
        if self.is_journal_device() {
            return FsKind::Jbd;
        }
        if self.incompat & !EXT3_INCOMPAT_SUPP == 0 && self.ro_compat & !EXT3_RO_COMPAT_SUPP == 0 {
            if self.compat & COMPAT_HAS_JOURNAL != 0 { FsKind::Ext3 } else { FsKind::Ext2 }
        } else {
            FsKind::Ext4
        }
    }

    /// Whether block group `g` holds a superblock backup (and so a descriptor-table copy).
    pub fn group_has_super(&self, g: u32) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return g == self.backup_bgs[0] || g == self.backup_bgs[1];
        }
        if self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 || g == 1 {
            return true;
        }
        [3u32, 5, 7].iter().any(|&p| {
            let mut x = g;
            while x.is_multiple_of(p) {
                x /= p;
            }
            x == 1
        })
    }

    /// First block of group `g`.
    pub fn group_first_block(&self, g: u32) -> u64 {
        u64::from(self.first_data_block) + u64::from(g) * u64::from(self.blocks_per_group)
    }

    /// Block numbers of the group-descriptor table, in order.
    pub fn descriptor_blocks(&self) -> Vec<u64> {
        self.descriptor_blocks_after(self.superblock_block(0))
    }

    /// The block holding group `g`'s copy of the superblock: the group's first block, except
    /// group 0 with 1 KiB blocks, where it is block 1 (byte 1024; with bigalloc the group itself
    /// starts at block 0).
    pub fn superblock_block(&self, g: u32) -> u64 {
        if g == 0 {
            return u64::from(self.block_size == 1024);
        }
        self.group_first_block(g)
    }

    /// Block numbers of the group-descriptor table that follows the superblock copy at block
    /// `sb_block` (group 0's for the primary; a backup's for `e2fsck -b`). With `meta_bg` the
    /// descriptors past `s_first_meta_bg` live in their meta groups whatever the copy.
    pub fn descriptor_blocks_after(&self, sb_block: u64) -> Vec<u64> {
        let per_block = self.block_size / self.desc_size;
        let n = self.groups.div_ceil(per_block);
        let first = sb_block + 1;
        if self.incompat & INCOMPAT_META_BG == 0 {
            return (0..u64::from(n)).map(|i| first + i).collect();
        }
        (0..n)
            .map(|i| {
                if i < self.first_meta_bg {
                    first + u64::from(i)
                } else {
                    let g = i.saturating_mul(per_block);
                    self.group_first_block(g) + u64::from(self.group_has_super(g))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[0x38..0x3A].copy_from_slice(&EXT_SUPER_MAGIC.to_le_bytes());
        sb[0x00..0x04].copy_from_slice(&128u32.to_le_bytes()); // inodes
        sb[0x04..0x08].copy_from_slice(&8192u32.to_le_bytes()); // blocks
        sb[0x14..0x18].copy_from_slice(&1u32.to_le_bytes()); // first data block (1 KiB)
        sb[0x20..0x24].copy_from_slice(&8192u32.to_le_bytes());
        sb[0x28..0x2C].copy_from_slice(&128u32.to_le_bytes());
        sb[0x4C..0x50].copy_from_slice(&1u32.to_le_bytes());
        sb[0x58..0x5A].copy_from_slice(&256u16.to_le_bytes());
        sb
    }

    #[test]
    fn parses_and_rejects() {
        let sb = Superblock::parse(&minimal()).unwrap();
        assert_eq!((sb.block_size, sb.groups, sb.inode_size), (1024, 1, 256));
        assert_eq!(sb.kind(), FsKind::Ext2);
        assert_eq!(sb.descriptor_blocks(), vec![2]);

        let mut b = minimal();
        b[0x18] = 7;
        assert_eq!(Superblock::parse(&b).unwrap_err().kind(), crate::ErrorKind::Corrupt);
        let mut b = minimal();
        b[0x60] = 0x01; // compression
        assert_eq!(Superblock::parse(&b).unwrap_err().kind(), crate::ErrorKind::Unsupported);
        let mut b = minimal();
        b[0x58] = 100;
        assert_eq!(Superblock::parse(&b).unwrap_err().kind(), crate::ErrorKind::Corrupt);
        let mut b = minimal();
        b[0x00..0x04].copy_from_slice(&129u32.to_le_bytes());
        assert_eq!(Superblock::parse(&b).unwrap_err().kind(), crate::ErrorKind::Corrupt);
        let mut b = minimal();
        b[0x38] = 0;
        assert_eq!(Superblock::parse(&b).unwrap_err().kind(), crate::ErrorKind::NotRecognized);
        assert!(Superblock::parse(&minimal()[..100]).is_err());
    }

    #[test]
    fn sparse_super_groups() {
        let mut b = minimal();
        b[0x64] = 0x01;
        let sb = Superblock::parse(&b).unwrap();
        let with: Vec<u32> = (0..60).filter(|&g| sb.group_has_super(g)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49]);
    }
}
