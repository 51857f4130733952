//! ext inodes (128 bytes in revision 0, usually 256 in revision 1): the fields a read-only
//! walker needs, 64-bit sizes and block counts, extended timestamps, device numbers, the
//! `metadata_csum` inode checksum, and inline data (`system.data`). Offsets follow e2fsprogs
//! `struct ext2_inode_large`.

use super::csum;
use crate::bytes::{le16, le32};

/// `i_flags`: the directory has an htree index.
pub const INDEX_FL: u32 = 0x0000_1000;
/// `i_flags`: the file is encrypted (fscrypt).
pub const ENCRYPT_FL: u32 = 0x0000_0800;
/// `i_flags`: `i_blocks` counts file-system blocks, not 512-byte sectors.
pub const HUGE_FILE_FL: u32 = 0x0004_0000;
/// `i_flags`: `i_block` holds an extent tree.
pub const EXTENTS_FL: u32 = 0x0008_0000;
/// `i_flags`: the data lives in the inode (`i_block` plus the `system.data` attribute).
pub const INLINE_DATA_FL: u32 = 0x1000_0000;
/// Size of `i_block` (the block map / extent root / inline data / fast symlink target).
pub const I_BLOCK_BYTES: usize = 60;
/// Offset of `i_block`.
pub const I_BLOCK_OFFSET: usize = 0x28;
/// Size of a revision-0 inode; fields past it exist only when `i_extra_isize` covers them.
pub const GOOD_OLD_INODE_SIZE: usize = 128;
/// Magic of the in-inode extended-attribute area (`EXT2_EXT_ATTR_MAGIC`).
pub const XATTR_MAGIC: u32 = 0xEA02_0000;
/// Attribute name index of `system.*` attributes.
const XATTR_INDEX_SYSTEM: u8 = 7;

/// One inode, parsed.
#[derive(Debug, Clone)]
pub struct Inode {
    /// Its number.
    pub ino: u32,
    /// The raw on-disk record (inode-size bytes).
    pub raw: Vec<u8>,
    /// `i_mode` (type and permission bits).
    pub mode: u16,
    /// Owner (32-bit).
    pub uid: u32,
    /// Group (32-bit).
    pub gid: u32,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Modification time in seconds.
    pub mtime: i64,
    /// `i_links_count`.
    pub links: u16,
    /// `i_flags`.
    pub flags: u32,
    /// `i_generation` (part of the checksum seed).
    pub generation: u32,
    /// Extended-attribute block (`i_file_acl`), 0 if none.
    pub file_acl: u64,
    /// Allocated 512-byte sectors (`i_blocks`, already scaled for huge files).
    pub sectors: u64,
    /// `i_extra_isize` (0 for 128-byte inodes).
    pub extra_isize: usize,
}

impl Inode {
    /// Parse an inode record; `huge_file` tells whether `i_blocks_hi` and `HUGE_FILE_FL` apply;
    /// `block_size` scales `i_blocks` for huge files.
    ///
    /// # Errors
    /// `Corrupt` when the record is too short or `i_extra_isize` runs past it.
    pub fn parse(ino: u32, raw: Vec<u8>, huge_file: bool, block_size: u32) -> crate::Result<Inode> {
        if raw.len() < GOOD_OLD_INODE_SIZE {
            return Err(crate::Error::corrupt(format!("inode {ino}: record of {} bytes is too short", raw.len())));
        }
        let extra_isize = if raw.len() > GOOD_OLD_INODE_SIZE { usize::from(le16(&raw, 0x80)) } else { 0 };
        if GOOD_OLD_INODE_SIZE + extra_isize > raw.len() || extra_isize % 4 != 0 {
            return Err(crate::Error::corrupt(format!(
                "inode {ino}: i_extra_isize {extra_isize} does not fit the {}-byte inode",
                raw.len()
            )));
        }
        let mode = le16(&raw, 0x00);
        let flags = le32(&raw, 0x20);
        let size_bytes = u64::from(le32(&raw, 0x04)) | (u64::from(le32(&raw, 0x6C)) << 32);
        let mut sectors = u64::from(le32(&raw, 0x1C));
        if huge_file {
            sectors |= u64::from(le16(&raw, 0x74)) << 32;
            if flags & HUGE_FILE_FL != 0 {
                sectors = sectors.saturating_mul(u64::from(block_size / 512));
            }
        }
        let mut mtime = i64::from(le32(&raw, 0x10) as i32);
        // i_mtime_extra (0x88): low 2 bits extend the epoch, the rest are nanoseconds.
        if extra_isize >= 0x88 + 4 - GOOD_OLD_INODE_SIZE {
            mtime += i64::from(le32(&raw, 0x88) & 3) << 32;
        }
        Ok(Inode {
            ino,
            mode,
            uid: u32::from(le16(&raw, 0x02)) | (u32::from(le16(&raw, 0x78)) << 16),
            gid: u32::from(le16(&raw, 0x18)) | (u32::from(le16(&raw, 0x7A)) << 16),
            size_bytes,
            mtime,
            links: le16(&raw, 0x1A),
            flags,
            generation: le32(&raw, 0x64),
            file_acl: u64::from(le32(&raw, 0x68)) | (u64::from(le16(&raw, 0x76)) << 32),
            sectors,
            extra_isize,
            raw,
        })
    }

    /// `i_block` (60 bytes).
    pub fn i_block(&self) -> &[u8] {
        &self.raw[I_BLOCK_OFFSET..I_BLOCK_OFFSET + I_BLOCK_BYTES]
    }

    /// Whether the in-inode checksum matches (`metadata_csum` file systems only).
    pub fn checksum_ok(&self, csum_seed: u32) -> bool {
        let raw = &self.raw;
        let has_hi = raw.len() > GOOD_OLD_INODE_SIZE && self.extra_isize >= 4;
        let mut copy = raw.clone();
        copy[0x7C..0x7E].fill(0);
        if has_hi {
            copy[0x82..0x84].fill(0);
        }
        let c = csum::crc32c(csum_seed, &[&self.ino.to_le_bytes(), &self.generation.to_le_bytes(), &copy]);
        let stored_lo = u32::from(le16(raw, 0x7C));
        if has_hi { c == stored_lo | (u32::from(le16(raw, 0x82)) << 16) } else { c & 0xFFFF == stored_lo }
    }

    /// Seed of this inode's metadata checksums (extent blocks, directory blocks).
    pub fn csum_seed(&self, fs_seed: u32) -> u32 {
        csum::crc32c(fs_seed, &[&self.ino.to_le_bytes(), &self.generation.to_le_bytes()])
    }

    /// Device number `(major, minor)` of a device node (old or new encoding in `i_block`).
    pub fn rdev(&self) -> (u32, u32) {
        let b = self.i_block();
        let old = le32(b, 0);
        if old != 0 {
            return ((old >> 8) & 0xFF, old & 0xFF);
        }
        let new = le32(b, 4);
        ((new & 0xFFF00) >> 8, (new & 0xFF) | ((new >> 12) & 0xFFF00))
    }

    /// Inode change time in seconds (`i_ctime`, extended by `i_ctime_extra`'s epoch bits).
    pub fn ctime(&self) -> i64 {
        let raw = &self.raw;
        let mut t = i64::from(le32(raw, 0x0C) as i32);
        // i_ctime_extra (0x84): low 2 bits extend the epoch, the rest are nanoseconds.
        if self.extra_isize >= 0x84 + 4 - GOOD_OLD_INODE_SIZE && raw.len() >= 0x88 {
            t += i64::from(le32(raw, 0x84) & 3) << 32;
        }
        t
    }

    /// The value of the in-inode `system.data` attribute (the part of inline data beyond
    /// `i_block`), or empty.
    ///
    /// # Errors
    /// `Corrupt` when the attribute area is malformed.
    pub fn inline_xattr_data(&self) -> crate::Result<Vec<u8>> {
        let start = GOOD_OLD_INODE_SIZE + self.extra_isize;
        let raw = &self.raw;
        if start + 4 > raw.len() || le32(raw, start) != XATTR_MAGIC {
            return Ok(Vec::new());
        }
        let base = start + 4; // value offsets are relative to the first entry
        let mut pos = base;
        let bad = |what: &str| crate::Error::corrupt(format!("inode {}: in-inode attribute area: {what}", self.ino));
        // Entries: name_len u8, name_index u8, value_offs u16, value_inum u32, value_size u32,
        // hash u32, name; padded to 4 bytes. A zero 4-byte word ends the list.
        while pos + 4 <= raw.len() && le32(raw, pos) != 0 {
            if pos + 16 > raw.len() {
                return Err(bad("entry runs past the inode"));
            }
            let name_len = usize::from(raw[pos]);
            let index = raw[pos + 1];
            let value_offs = usize::from(le16(raw, pos + 2));
            let value_inum = le32(raw, pos + 4);
            let value_size = le32(raw, pos + 8) as usize;
            let name_end = pos + 16 + name_len;
            if name_end > raw.len() {
                return Err(bad("name runs past the inode"));
            }
            if index == XATTR_INDEX_SYSTEM && &raw[pos + 16..name_end] == b"data" {
                if value_inum != 0 {
                    return Err(bad("system.data stored in a separate inode is not supported"));
                }
                let a = base.checked_add(value_offs).ok_or_else(|| bad("value offset overflows"))?;
                let b = a.checked_add(value_size).ok_or_else(|| bad("value size overflows"))?;
                if b > raw.len() {
                    return Err(bad("system.data value runs past the inode"));
                }
                return Ok(raw[a..b].to_vec());
            }
            pos = (name_end + 3) & !3;
        }
        Ok(Vec::new())
    }
}
