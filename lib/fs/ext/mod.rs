//! Read-only ext2/ext3/ext4 reader over any [`ByteSource`] (a decrypted volume, a window, a
//! file): superblock (1–64 KiB blocks), 32/64-bit group descriptors (also `meta_bg`),
//! 128/256-byte inodes, block maps and extent trees, linear/htree/inline directories, fast and
//! slow symlinks, sparse files, device nodes, and `metadata_csum`/`uninit_bg` checksums. The
//! journal is opaque: a file system that needs recovery is read as last checkpointed, with a
//! warning. No mounting, no root, no writes. See `docs/formats/ext.md`.
//!
//! ```text
//!   superblock ─> group descriptors ─> inode ─┬─> map (extents | block map) ─> file bytes
//!                                             └─> dir (linear | htree | inline) ─> names
//! ```

pub mod backup;
pub mod claims;
pub mod csum;
pub mod dir;
pub mod inode;
pub mod map;
pub mod superblock;
pub mod xattr;

use crate::bytes;
use crate::extent::{Extent, ExtentFlags};
use crate::fs::tree::read_err;
use crate::fs::tree::{FileReader, FileSystem, FileType, Issue, Listing, NodeId, Stat};
use crate::source::ByteSource;
use inode::Inode;

pub use superblock::{EXT_SUPER_MAGIC, EXT_SUPERBLOCK_OFFSET, GroupDesc, Superblock};

/// Inode number of the root directory.
pub const ROOT_INO: u32 = 2;
/// `bg_flags`: the group's inode table is not initialised.
pub const BG_INODE_UNINIT: u16 = 0x0001;
/// `s_feature_compat`: htree directories may exist.
pub const COMPAT_DIR_INDEX: u32 = 0x0020;
/// Longest symlink target accepted (a block at most; larger is corruption).
const MAX_SYMLINK_BYTES: u64 = 65536;
/// Largest directory read (bigger is treated as corruption).
const MAX_DIR_BYTES: u64 = 4 << 30;

/// One block group's descriptor (the fields the reader uses).
#[derive(Debug, Clone)]
struct Group {
    inode_table: u64,
    flags: u16,
    itable_unused: u32,
    /// The inode table lies inside the file system.
    usable: bool,
}

/// An opened ext2/3/4 file system.
pub struct Ext<'a> {
    src: &'a dyn ByteSource,
    /// The parsed superblock.
    pub sb: Superblock,
    groups: Vec<Group>,
    issues: Vec<Issue>,
    /// The block of the superblock in use (the primary's, or a backup's).
    sb_block: u64,
    /// Groups whose `bg_itable_unused` / `INODE_UNINIT` hint hides inodes a directory uses
    /// (found while reading; reported by `issues()`).
    stale_hints: std::sync::Mutex<std::collections::BTreeMap<u32, u32>>,
    /// Blocks the maps read so far claim (multiply-claimed blocks are reported).
    claims: claims::Claims,
}

impl std::fmt::Debug for Ext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ext").field("sb", &self.sb).field("groups", &self.groups.len()).finish()
    }
}

impl<'a> Ext<'a> {
    /// Open the file system at the start of `src`.
    ///
    /// # Errors
    /// `NotRecognized` without an ext superblock; `Corrupt` when the superblock or descriptor
    /// table is unusable; `Unsupported` for unknown incompatible features; `Io`.
    pub fn open(src: &'a dyn ByteSource) -> crate::Result<Ext<'a>> {
        let mut raw = vec![0u8; 1024];
        src.read_exact_at(&mut raw, EXT_SUPERBLOCK_OFFSET)
            .map_err(|e| read_err("reading the ext superblock".into(), e))?;
        let mut issues = Vec::new();
        let (sb, sb_block) = match Superblock::parse(&raw) {
            Ok(sb) => {
                let b = sb.superblock_block(0);
                (sb, b)
            }
            Err(e) if e.kind() != crate::ErrorKind::Unsupported && backup::primary_looks_damaged(&raw) => {
                match backup::find(src).map_err(|io| read_err("reading a backup ext superblock".into(), io))? {
                    Some(b) => {
                        issues.push(Issue::error(
                            "ext.superblock-backup",
                            format!(
                                "the primary superblock is unusable ({e}); the backup superblock at block {} (group {}) \
                                 and its group descriptors were used, as `e2fsck -b {}` would",
                                b.block, b.group, b.block
                            ),
                        ));
                        (b.sb, b.block)
                    }
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        if sb.checksum_ok == Some(false) {
            issues.push(Issue::error("ext.checksum", "superblock checksum mismatch"));
        }
        let bs = u64::from(sb.block_size);
        let fs_bytes = sb.blocks_count.saturating_mul(bs);
        if fs_bytes > src.size_bytes() {
            issues.push(Issue::error(
                "ext.truncated",
                format!(
                    "the file system claims {fs_bytes} bytes but only {} are present: the image is truncated",
                    src.size_bytes()
                ),
            ));
        }
        if sb.incompat & superblock::INCOMPAT_RECOVER != 0 {
            issues.push(Issue::warning(
                "ext.journal-needs-recovery",
                "the journal needs recovery (not unmounted cleanly): files are read as last checkpointed; \
                 changes still only in the journal are not applied (run e2fsck on a copy to replay them)",
            ));
        } else if sb.state & 1 == 0 {
            issues.push(Issue::warning("ext.not-clean", "the file system is marked not cleanly unmounted"));
        }
        if sb.state & 2 != 0 {
            issues.push(Issue::warning("ext.errors", "the file system is marked as having errors"));
        }
        let table_bytes = u64::from(sb.groups) * u64::from(sb.desc_size);
        if table_bytes > src.size_bytes() {
            return Err(crate::Error::corrupt(format!(
                "ext superblock: {} groups need a {table_bytes}-byte descriptor table, more than the whole image",
                sb.groups
            )));
        }
        let mut ext = Ext {
            src,
            sb,
            groups: Vec::new(),
            issues,
            sb_block,
            stale_hints: Default::default(),
            claims: Default::default(),
        };
        ext.read_groups()?;
        Ok(ext)
    }

    fn read_groups(&mut self) -> crate::Result<()> {
        let sb = &self.sb;
        let ds = sb.desc_size as usize;
        let per_block = sb.block_size as usize / ds;
        let itable_blocks =
            (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(u64::from(sb.block_size));
        let mut groups = Vec::with_capacity(sb.groups as usize);
        let mut bad_csum = 0u32;
        let mut bad_table = Vec::new();
        for (i, blk) in sb.descriptor_blocks_after(self.sb_block).into_iter().enumerate() {
            if blk >= sb.blocks_count {
                return Err(crate::Error::corrupt(format!(
                    "group descriptor block {blk} lies outside the file system"
                )));
            }
            let data = self.read_block(blk).map_err(|e| e.context("reading the group descriptor table"))?;
            for j in 0..per_block {
                let g = (i * per_block + j) as u32;
                if g >= sb.groups {
                    break;
                }
                let d = bytes::slice(&data, j * ds, ds);
                let GroupDesc { inode_table, flags, itable_unused, checksum_ok } = sb.group_desc(g, d);
                if checksum_ok == Some(false) {
                    bad_csum += 1;
                }
                let usable = inode_table >= u64::from(sb.first_data_block)
                    && inode_table.checked_add(itable_blocks).is_some_and(|e| e <= sb.blocks_count);
                if !usable {
                    bad_table.push(g);
                }
                groups.push(Group { inode_table, flags, itable_unused, usable });
            }
        }
        if bad_csum > 0 {
            self.issues.push(Issue::error("ext.checksum", format!("{bad_csum} group descriptor checksum(s) mismatch")));
        }
        if !bad_table.is_empty() {
            self.issues.push(Issue::error(
                "ext.group-descriptor",
                format!(
                    "the inode table of group(s) {:?} lies outside the file system; their inodes are unreadable",
                    &bad_table[..bad_table.len().min(10)]
                ),
            ));
        }
        self.groups = groups;
        Ok(())
    }

    /// Read file-system block `n` (exactly one block).
    ///
    /// # Errors
    /// `Corrupt` when the block is past the file system or the image; `Io`.
    pub fn read_block(&self, n: u64) -> crate::Result<Vec<u8>> {
        if n >= self.sb.blocks_count {
            return Err(crate::Error::corrupt(format!("block {n} is past the end of the file system")));
        }
        let bs = u64::from(self.sb.block_size);
        let mut b = vec![0u8; bs as usize];
        self.src.read_exact_at(&mut b, n * bs).map_err(|e| read_err(format!("reading block {n}"), e))?;
        Ok(b)
    }

    /// The block of the superblock in use (the primary's, or the backup's it fell back to).
    pub fn superblock_block_in_use(&self) -> u64 {
        self.sb_block
    }

    /// Where inode `ino` lies: its byte offset in the file system (None when out of range or
    /// its group's inode table is unusable).
    pub fn inode_offset(&self, ino: u32) -> Option<u64> {
        let sb = &self.sb;
        if ino == 0 || ino > sb.inodes_count || sb.inodes_per_group == 0 {
            return None;
        }
        let g = self.groups.get(((ino - 1) / sb.inodes_per_group) as usize).filter(|g| g.usable)?;
        let index = u64::from((ino - 1) % sb.inodes_per_group);
        Some(g.inode_table * u64::from(sb.block_size) + index * u64::from(sb.inode_size))
    }

    /// Read and check inode `ino`.
    ///
    /// # Errors
    /// `Corrupt` for an out-of-range or uninitialised inode, a bad checksum, or a table outside
    /// the image; `Io`.
    pub fn inode(&self, ino: u32) -> crate::Result<Inode> {
        let sb = &self.sb;
        if ino == 0 || ino > sb.inodes_count {
            return Err(crate::Error::corrupt(format!("inode {ino} does not exist (1..={})", sb.inodes_count)));
        }
        let g = (ino - 1) / sb.inodes_per_group;
        let index = (ino - 1) % sb.inodes_per_group;
        let group = self
            .groups
            .get(g as usize)
            .ok_or_else(|| crate::Error::corrupt(format!("inode {ino}: group {g} has no descriptor")))?;
        if !group.usable {
            return Err(crate::Error::corrupt(format!("inode {ino}: the inode table of group {g} is invalid")));
        }
        // The kernel and e2fsck do not trust these hints over a directory entry: the inode is
        // read, and the hint reported as stale when the inode is really in use.
        let hinted_unused = (sb.metadata_csum() || sb.gdt_csum())
            && (group.flags & BG_INODE_UNINIT != 0 || index >= sb.inodes_per_group.saturating_sub(group.itable_unused));
        let unused_err = || {
            crate::Error::corrupt(format!(
                "inode {ino} is in the unused part of group {g}'s inode table and holds no inode (a stale directory \
                 entry?)"
            ))
        };
        let isz = u64::from(sb.inode_size);
        let off = group.inode_table * u64::from(sb.block_size) + u64::from(index) * isz;
        let mut raw = vec![0u8; isz as usize];
        self.src.read_exact_at(&mut raw, off).map_err(|e| read_err(format!("reading inode {ino}"), e))?;
        let huge = sb.ro_compat & superblock::RO_COMPAT_HUGE_FILE != 0;
        let inode = match Inode::parse(ino, raw, huge, sb.block_size) {
            Err(_) if hinted_unused => return Err(unused_err()),
            r => r?,
        };
        if sb.metadata_csum() && !inode.checksum_ok(sb.csum_seed) {
            if hinted_unused {
                return Err(unused_err());
            }
            return Err(crate::Error::corrupt(format!("inode {ino}: checksum mismatch")));
        }
        if hinted_unused {
            if inode.mode == 0 || inode.links == 0 {
                return Err(unused_err());
            }
            if let Ok(mut m) = self.stale_hints.lock() {
                m.entry(g).or_insert(ino);
            }
        }
        Ok(inode)
    }

    /// The 512-byte sectors `i_blocks` counts for the inode's extended-attribute block: one
    /// cluster (the kernel's `ext4_inode_is_fast_symlink`: with bigalloc the block takes a whole
    /// cluster, `EXT4_CLUSTER_SIZE >> 9`), none without one.
    fn xattr_block_sectors(&self, inode: &Inode) -> u64 {
        if inode.file_acl == 0 {
            return 0;
        }
        u64::from(self.sb.block_size) * u64::from(self.sb.cluster_blocks) / 512
    }

    fn ino(id: NodeId) -> crate::Result<u32> {
        u32::try_from(id).map_err(|_| crate::Error::invalid(format!("{id} is not an ext inode number")))
    }

    fn geometry(&self) -> dir::Geometry {
        dir::Geometry {
            block_size: self.sb.block_size as usize,
            filetype: self.sb.has_filetype(),
            inodes_count: self.sb.inodes_count,
            metadata_csum: self.sb.metadata_csum(),
        }
    }

    /// The bytes of an inline-data inode (`i_block` + `system.data`), `size` long.
    fn inline_bytes(&self, inode: &Inode, size: u64) -> crate::Result<Vec<u8>> {
        let mut data = inode.i_block().to_vec();
        data.extend(inode.inline_xattr_data()?);
        if size > data.len() as u64 {
            return Err(crate::Error::corrupt(format!(
                "inode {}: inline data holds {} bytes but the size is {size}",
                inode.ino,
                data.len()
            )));
        }
        data.truncate(size as usize);
        Ok(data)
    }

    fn reader(&self, inode: &Inode, size: u64) -> crate::Result<ExtFile<'_>> {
        if inode.flags & inode::ENCRYPT_FL != 0 {
            return Err(crate::Error::unsupported(format!(
                "inode {}: the contents are encrypted (fscrypt)",
                inode.ino
            )));
        }
        if inode.flags & inode::INLINE_DATA_FL != 0 {
            let data = self.inline_bytes(inode, size)?;
            return Ok(ExtFile {
                ext: self,
                size,
                runs: Vec::new(),
                inline: Some(data),
                issues: Vec::new(),
                damaged: Some(Vec::new()),
            });
        }
        let max = max_file_bytes(&self.sb, inode.flags & inode::EXTENTS_FL != 0);
        if size > max {
            return Err(crate::Error::corrupt(format!(
                "inode {}: size {size} is beyond the largest file this file system can address ({max})",
                inode.ino
            )));
        }
        let map::Mapped { extents: runs, mut issues, damaged, .. } = map::map(self, inode, size)?;
        // `shared_blocks` (deduplicated read-only images): files may share blocks, e2fsck accepts it.
        if self.sb.ro_compat & superblock::RO_COMPAT_SHARED_BLOCKS == 0 {
            issues.extend(self.claims.claim(inode.ino, &runs, u64::from(self.sb.block_size)));
        }
        Ok(ExtFile { ext: self, size, runs, inline: None, issues, damaged })
    }

    fn list(&self, inode: &Inode) -> crate::Result<Listing> {
        if inode.flags & inode::ENCRYPT_FL != 0 {
            return Err(crate::Error::unsupported(format!("directory inode {}: the names are encrypted", inode.ino)));
        }
        let g = self.geometry();
        let mut listing = Listing::default();
        let size = inode.size_bytes;
        if inode.flags & inode::INLINE_DATA_FL != 0 {
            let data = self.inline_bytes(inode, size.min(inode::I_BLOCK_BYTES as u64 + 65536))?;
            // The first 4 bytes are the parent's inode number; entries follow in i_block and
            // continue in the attribute value.
            let ib = inode::I_BLOCK_BYTES.min(data.len());
            let g = dir::Geometry { metadata_csum: false, ..g };
            let where_ = format!("inline directory inode {}", inode.ino);
            if ib > 4 {
                dir::parse_entries(&g, &data[4..ib], &where_, &mut listing.entries, &mut listing.issues);
            }
            if data.len() > ib {
                dir::parse_entries(&g, &data[ib..], &where_, &mut listing.entries, &mut listing.issues);
            }
            return Ok(listing);
        }
        if size > MAX_DIR_BYTES {
            return Err(crate::Error::corrupt(format!("directory inode {}: size {size} is implausible", inode.ino)));
        }
        let bs = u64::from(self.sb.block_size);
        if !size.is_multiple_of(bs) {
            listing.issues.push(Issue::error(
                "ext.dir-size",
                format!("directory inode {}: size {size} is not a multiple of the block size", inode.ino),
            ));
        }
        let file = self.reader(inode, size)?;
        listing.issues.extend(file.issues.iter().cloned());
        let nblocks = size / bs;
        let seed = inode.csum_seed(self.sb.csum_seed);
        let mut read = |n: u64| -> crate::Result<Vec<u8>> {
            let mut b = vec![0u8; bs as usize];
            let mut done = 0;
            while done < b.len() {
                let k = file.read_at(&mut b[done..], n * bs + done as u64)?;
                if k == 0 {
                    break;
                }
                done += k;
            }
            Ok(b)
        };
        let mut index_blocks = Vec::new();
        if inode.flags & inode::INDEX_FL != 0 && self.sb.compat & COMPAT_DIR_INDEX != 0 && nblocks > 1 {
            let largedir = self.sb.incompat & superblock::INCOMPAT_LARGEDIR != 0;
            match dir::parse_index(&g, largedir, nblocks, seed, &mut read, &mut listing.issues) {
                Ok(idx) => index_blocks = idx.index_blocks,
                Err(e) => listing.issues.push(Issue::error("ext.htree", e.to_string())),
            }
        }
        index_blocks.sort_unstable();
        index_blocks.dedup();
        index_blocks.retain(|&n| n < nblocks);
        // Every block that is neither an htree index block nor mapped is a hole.
        let unmapped_index = index_blocks.iter().filter(|&&n| !file.is_mapped(n)).count() as u64;
        let mut mapped = 0u64;
        for n in file.mapped_blocks(nblocks) {
            mapped += 1;
            if index_blocks.binary_search(&n).is_ok() {
                continue;
            }
            let where_ = format!("directory inode {} block {n}", inode.ino);
            let block = match read(n) {
                Ok(b) => b,
                Err(e) => {
                    listing.issues.push(Issue::error("ext.dir-unreadable", format!("{where_}: {e}")));
                    continue;
                }
            };
            let area = dir::leaf_area(&g, &block, seed, &where_, &mut listing.issues);
            dir::parse_entries(&g, area, &where_, &mut listing.entries, &mut listing.issues);
        }
        let holes = nblocks.saturating_sub(mapped).saturating_sub(unmapped_index);
        if holes > 0 {
            listing.issues.push(Issue::error(
                "ext.dir-hole",
                format!("directory inode {}: {holes} of its {nblocks} blocks are holes", inode.ino),
            ));
        }
        crate::fs::tree::cap_issues(&mut listing.issues);
        Ok(listing)
    }
}

/// Largest file an ext file system can address: 2^32 logical blocks with extents, the 12 + 1 +
/// 2 + 3-level block map otherwise. A bigger size is corruption.
fn max_file_bytes(sb: &Superblock, extents: bool) -> u64 {
    let bs = u64::from(sb.block_size);
    let blocks = if extents {
        1u64 << 32
    } else {
        let ppb = bs / 4;
        12 + ppb + ppb * ppb + ppb * ppb * ppb
    };
    blocks.saturating_mul(bs)
}

/// A regular file (or slow symlink / directory) of an ext file system.
pub struct ExtFile<'e> {
    ext: &'e Ext<'e>,
    size: u64,
    /// Byte extents relative to the start of the file system.
    runs: Vec<Extent>,
    inline: Option<Vec<u8>>,
    issues: Vec<Issue>,
    /// Byte ranges the map's damage covers (`None`: not all of it could be located).
    damaged: Option<Vec<std::ops::Range<u64>>>,
}

impl ExtFile<'_> {
    /// Whether logical block `n` is backed by a written block.
    fn is_mapped(&self, n: u64) -> bool {
        let bs = u64::from(self.ext.sb.block_size);
        let Some(at) = n.checked_mul(bs) else { return false };
        let i = self.runs.partition_point(|r| r.logical_end() <= at);
        self.runs.get(i).is_some_and(|r| r.logical <= at && !r.flags.contains(ExtentFlags::UNWRITTEN))
    }

    /// The logical blocks below `nblocks` that are backed by written blocks, in order, without
    /// visiting the holes between them: a hostile directory size (up to `MAX_DIR_BYTES`) over
    /// a few mapped blocks costs as many steps as there are mapped blocks, not 4 million.
    fn mapped_blocks(&self, nblocks: u64) -> impl Iterator<Item = u64> + '_ {
        let bs = u64::from(self.ext.sb.block_size).max(1);
        let mut next = 0u64;
        self.runs.iter().flat_map(move |r| {
            // Block n is in run r when its first byte is: n in [ceil(logical/bs), ceil(end/bs)).
            let first = r.logical.div_ceil(bs).max(next);
            let end = r.logical_end().div_ceil(bs).min(nblocks).max(first);
            next = end;
            if r.flags.contains(ExtentFlags::UNWRITTEN) { first..first } else { first..end }
        })
    }
}

impl FileReader for ExtFile<'_> {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> crate::Result<usize> {
        if offset_bytes >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.size - offset_bytes);
        if let Some(data) = &self.inline {
            let a = offset_bytes as usize;
            let n = want as usize;
            buf[..n].copy_from_slice(&data[a..a + n]);
            return Ok(n);
        }
        let i = self.runs.partition_point(|r| r.logical_end() <= offset_bytes);
        match self.runs.get(i) {
            Some(r) if r.logical <= offset_bytes => {
                let n = want.min(r.logical_end() - offset_bytes) as usize;
                if r.flags.contains(ExtentFlags::UNWRITTEN) {
                    buf[..n].fill(0);
                } else {
                    let phys = r.physical + (offset_bytes - r.logical);
                    self.ext
                        .src
                        .read_exact_at(&mut buf[..n], phys)
                        .map_err(|e| read_err(format!("reading {n} bytes of file data at byte {phys}"), e))?;
                }
                Ok(n)
            }
            next => {
                let hole_end = next.map_or(self.size, |r| r.logical.min(self.size));
                let n = want.min(hole_end - offset_bytes) as usize;
                buf[..n].fill(0);
                Ok(n)
            }
        }
    }

    fn issues(&self) -> &[Issue] {
        &self.issues
    }

    fn data_ranges(&self) -> Option<Vec<std::ops::Range<u64>>> {
        if self.inline.is_some() {
            #[allow(clippy::single_range_in_vec_init)]
            return Some(vec![0..self.size]);
        }
        Some(
            self.runs
                .iter()
                .filter(|r| !r.flags.contains(ExtentFlags::UNWRITTEN))
                .map(|r| r.logical..r.logical_end().min(self.size))
                .filter(|r| r.start < r.end)
                .collect(),
        )
    }

    fn extents(&self) -> Option<Vec<Extent>> {
        self.inline.is_none().then(|| self.runs.clone())
    }

    fn damaged_ranges(&self) -> Option<Vec<std::ops::Range<u64>>> {
        self.damaged.clone()
    }
}

impl FileSystem for Ext<'_> {
    fn kind(&self) -> &'static str {
        self.sb.kind().as_str()
    }

    fn root(&self) -> NodeId {
        NodeId::from(ROOT_INO)
    }

    fn stat(&self, id: NodeId) -> crate::Result<Stat> {
        let inode = self.inode(Self::ino(id)?)?;
        let mode = u32::from(inode.mode);
        let file_type = FileType::from_mode(mode)
            .ok_or_else(|| crate::Error::corrupt(format!("inode {id}: unknown file type in mode {mode:#o}")))?;
        if inode.links == 0 {
            return Err(crate::Error::corrupt(format!("inode {id} is deleted (link count 0) but still named")));
        }
        let rdev = matches!(file_type, FileType::Chardev | FileType::Blockdev).then(|| inode.rdev());
        Ok(Stat {
            file_type,
            size_bytes: inode.size_bytes,
            mode: Some(mode & 0o7777),
            uid: Some(inode.uid),
            gid: Some(inode.gid),
            mtime: Some(inode.mtime),
            ctime: Some(inode.ctime()),
            nlink: u32::from(inode.links),
            rdev,
            link_key: Some(id),
        })
    }

    fn read_dir(&self, id: NodeId) -> crate::Result<Listing> {
        let inode = self.inode(Self::ino(id)?)?;
        if FileType::from_mode(u32::from(inode.mode)) != Some(FileType::Dir) {
            return Err(crate::Error::corrupt(format!("inode {id} is not a directory")));
        }
        self.list(&inode)
    }

    fn readlink(&self, id: NodeId) -> crate::Result<Vec<u8>> {
        let inode = self.inode(Self::ino(id)?)?;
        let size = inode.size_bytes;
        if size == 0 || size > MAX_SYMLINK_BYTES {
            return Err(crate::Error::corrupt(format!("symlink inode {id}: target length {size} is implausible")));
        }
        let fast = inode.flags & (inode::EXTENTS_FL | inode::INLINE_DATA_FL) == 0
            && size < inode::I_BLOCK_BYTES as u64
            && inode.sectors.saturating_sub(self.xattr_block_sectors(&inode)) == 0;
        if fast {
            return Ok(inode.i_block()[..size as usize].to_vec());
        }
        let f = self.reader(&inode, size)?;
        if let Some(i) = f.issues.first() {
            return Err(crate::Error::corrupt(i.message.clone()));
        }
        crate::fs::tree::read_all(&f, MAX_SYMLINK_BYTES).map_err(|e| e.context(format!("symlink inode {id}")))
    }

    fn open(&self, id: NodeId) -> crate::Result<Box<dyn FileReader + '_>> {
        let inode = self.inode(Self::ino(id)?)?;
        if FileType::from_mode(u32::from(inode.mode)) != Some(FileType::File) {
            return Err(crate::Error::invalid(format!("inode {id} is not a regular file")));
        }
        Ok(Box::new(self.reader(&inode, inode.size_bytes)?))
    }

    fn xattrs(&self, id: NodeId) -> crate::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let inode = self.inode(Self::ino(id)?)?;
        xattr::read(&inode, |b| self.read_block(b))
    }

    fn figures(&self) -> Option<crate::fs::tree::Figures> {
        let sb = &self.sb;
        Some(crate::fs::tree::Figures {
            block_size: sb.block_size,
            blocks: sb.blocks_count,
            free_blocks: sb.free_blocks_count.min(sb.blocks_count),
            files: u64::from(sb.inodes_count),
            free_files: u64::from(sb.free_inodes_count.min(sb.inodes_count)),
        })
    }

    fn issues(&self) -> Vec<Issue> {
        let mut v = self.issues.clone();
        if let Ok(m) = self.stale_hints.lock() {
            for (g, ino) in m.iter() {
                v.push(Issue::error(
                    "ext.itable-unused",
                    format!(
                        "group {g}'s descriptor marks inodes as never used (bg_itable_unused / INODE_UNINIT) that \
                         directories use (first: inode {ino}); they were read anyway (e2fsck would fix the hint)"
                    ),
                ));
            }
        }
        v
    }

    fn is_bookkeeping(&self, parent: NodeId, name: &[u8], id: NodeId) -> bool {
        parent == NodeId::from(ROOT_INO)
            && name == b"lost+found"
            && self.read_dir(id).is_ok_and(|l| l.entries.is_empty() && l.issues.is_empty())
    }
}
