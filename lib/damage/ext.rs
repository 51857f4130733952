//! Who owns each byte of an ext2/3/4 file system: superblocks and descriptor tables, bitmaps,
//! inode tables (and each walked inode's slot), the journal, every walked node's data, extent-tree
//! and indirect blocks and extended-attribute block; the rest is free or in use per the block
//! bitmaps (bigalloc: one bit per cluster).

use super::{AreaKind, Index, Node, Owner, Part, Rest};
use crate::bytes::{le16, le32};
use crate::extent::ExtentFlags;
use crate::fs::ext::{Ext, inode, map, superblock};
use crate::fs::tree::FileType;
use crate::source::ByteSource;
use std::collections::HashMap;
use std::ops::Range;

/// `bg_flags`: the block bitmap is not initialised (every block not used by metadata is free).
const BG_BLOCK_UNINIT: u16 = 0x0002;
/// Byte of `s_journal_inum` in the superblock.
const JOURNAL_INUM_AT: usize = 0xE0;

/// The block bitmaps, read when asked.
pub(crate) struct Bitmaps<'a> {
    src: &'a dyn ByteSource,
    bs: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    cluster_blocks: u64,
    /// Per group: the block bitmap's block (None: uninitialised, all free).
    bitmaps: Vec<Option<u64>>,
}

impl Rest for Bitmaps<'_> {
    fn classify(&self, r: Range<u64>) -> Vec<(Range<u64>, AreaKind)> {
        let mut cache: HashMap<u64, Option<Vec<u8>>> = HashMap::new();
        let mut out: Vec<(Range<u64>, AreaKind)> = Vec::new();
        let mut pos = r.start;
        while pos < r.end {
            let b = pos / self.bs;
            let end = b.saturating_add(1).saturating_mul(self.bs).min(r.end);
            let kind = self.kind_of(b, &mut cache);
            match out.last_mut() {
                Some((l, k)) if *k == kind && l.end == pos => l.end = end,
                _ => out.push((pos..end, kind)),
            }
            pos = end;
        }
        out
    }
}

impl Bitmaps<'_> {
    fn kind_of(&self, b: u64, cache: &mut HashMap<u64, Option<Vec<u8>>>) -> AreaKind {
        if b < self.first_data_block || self.blocks_per_group == 0 {
            return AreaKind::OtherMetadata; // the boot block before a 1 KiB file system's superblock
        }
        let rel = b - self.first_data_block;
        let g = rel / self.blocks_per_group;
        let bit = (rel % self.blocks_per_group) / self.cluster_blocks.max(1);
        let Some(slot) = self.bitmaps.get(g as usize) else { return AreaKind::OtherMetadata };
        let Some(at) = *slot else { return AreaKind::FreeSpace };
        let map = cache.entry(g).or_insert_with(|| {
            let mut v = vec![0u8; self.bs as usize];
            self.src.read_exact_at(&mut v, at * self.bs).ok().map(|()| v)
        });
        match map.as_ref().and_then(|m| m.get((bit / 8) as usize)) {
            Some(byte) if byte & (1 << (bit % 8)) == 0 => AreaKind::FreeSpace,
            _ => AreaKind::OtherMetadata,
        }
    }
}

/// The owners of an ext file system in `src`.
///
/// # Errors
/// As [`Ext::open`]; `Interrupted`.
pub(crate) fn index<'a>(
    src: &'a dyn ByteSource,
    interrupt: &crate::progress::Interrupt,
) -> crate::Result<(Index, Bitmaps<'a>)> {
    let e = Ext::open(src)?;
    let sb = &e.sb;
    let bs = u64::from(sb.block_size);
    let mut ix = Index { block_bytes: bs, fs_bytes: sb.blocks_count.saturating_mul(bs), ..Index::default() };
    let area = |ix: &mut Index, blocks: Range<u64>, kind: AreaKind, detail: String| {
        ix.owned.push((
            blocks.start.saturating_mul(bs)..blocks.end.saturating_mul(bs),
            Owner::Area { kind, detail: Some(detail) },
        ));
    };
    // Superblocks and descriptor tables.
    for g in 0..sb.groups {
        if !sb.group_has_super(g) {
            continue;
        }
        let at = sb.superblock_block(g);
        let which = if g == 0 { "primary".to_string() } else { format!("backup, group {g}") };
        area(&mut ix, at..at.saturating_add(1), AreaKind::Superblock, which.clone());
        for d in sb.descriptor_blocks_after(at) {
            area(&mut ix, d..d.saturating_add(1), AreaKind::GroupDescriptors, which.clone());
        }
    }
    // Bitmaps and inode tables, from the descriptors in use.
    let ds = sb.desc_size as usize;
    let per_block = (sb.block_size as usize / ds.max(1)).max(1);
    let itable_blocks = (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(bs);
    let mut bitmaps = Vec::with_capacity(sb.groups as usize);
    for (i, blk) in sb.descriptor_blocks_after(e.superblock_block_in_use()).into_iter().enumerate() {
        interrupt.check()?;
        let Ok(data) = e.read_block(blk) else {
            ix.notes.push(format!("group descriptor block {blk} cannot be read: its groups' bitmaps are unknown"));
            continue;
        };
        for j in 0..per_block {
            let g = (i * per_block + j) as u64;
            if g >= u64::from(sb.groups) {
                break;
            }
            let d = crate::bytes::slice(&data, j * ds, ds);
            let wide =
                |lo: usize, hi: usize| u64::from(le32(d, lo)) | if ds >= 64 { u64::from(le32(d, hi)) << 32 } else { 0 };
            let (bb, ib, it) = (wide(0, 0x20), wide(4, 0x24), wide(8, 0x28));
            let flags = le16(d, 0x12);
            let detail = format!("group {g}");
            area(&mut ix, bb..bb.saturating_add(1), AreaKind::Bitmap, format!("block bitmap, {detail}"));
            area(&mut ix, ib..ib.saturating_add(1), AreaKind::Bitmap, format!("inode bitmap, {detail}"));
            area(&mut ix, it..it.saturating_add(itable_blocks), AreaKind::InodeTable, detail);
            let uninit = (sb.metadata_csum() || sb.gdt_csum()) && flags & BG_BLOCK_UNINIT != 0;
            bitmaps.push((!uninit && bb < sb.blocks_count).then_some(bb));
        }
    }
    // The journal.
    if sb.compat & superblock::COMPAT_HAS_JOURNAL != 0 {
        let mut raw = vec![0u8; 1024];
        let jino = match src.read_exact_at(&mut raw, superblock::EXT_SUPERBLOCK_OFFSET) {
            Ok(()) => le32(&raw, JOURNAL_INUM_AT),
            Err(_) => 8,
        };
        match e.inode(jino).and_then(|i| map::map(&e, &i, i.size_bytes)) {
            Ok(m) => {
                for x in &m.extents {
                    ix.owned.push((
                        x.physical..x.physical.saturating_add(x.length),
                        Owner::Area { kind: AreaKind::Journal, detail: None },
                    ));
                }
                for b in m.map_blocks {
                    area(&mut ix, b..b.saturating_add(1), AreaKind::Journal, "its block map".into());
                }
            }
            Err(err) => ix.notes.push(format!("the journal (inode {jino}) cannot be located: {err}")),
        }
    }
    // Every node the walk finds.
    let (nodes, notes) = super::walk_nodes(&e, interrupt)?;
    ix.notes.extend(notes);
    for (n, node) in nodes.iter().enumerate() {
        interrupt.check()?;
        if let Err(err) = node_owners(&e, n, node, &mut ix) {
            ix.notes.push(format!(
                "/{}: where its data lies is unknown: {err}",
                String::from_utf8_lossy(node.paths.first().map_or(&[][..], |p| p))
            ));
        }
    }
    ix.nodes = nodes;
    let bitmaps = Bitmaps {
        src,
        bs,
        first_data_block: u64::from(e.sb.first_data_block),
        blocks_per_group: u64::from(e.sb.blocks_per_group),
        cluster_blocks: u64::from(e.sb.cluster_blocks),
        bitmaps,
    };
    Ok((ix, bitmaps))
}

/// The inode slot, data, map blocks and xattr block of one node.
fn node_owners(e: &Ext<'_>, n: usize, node: &Node, ix: &mut Index) -> crate::Result<()> {
    let ino = u32::try_from(node.id).map_err(|_| crate::Error::corrupt("not an inode number"))?;
    let bs = u64::from(e.sb.block_size);
    if let Some(at) = e.inode_offset(ino) {
        ix.owned.push((
            at..at.saturating_add(u64::from(e.sb.inode_size)),
            Owner::Node { node: n, part: Part::Inode, logical: 0 },
        ));
    }
    if node.file_type.is_none() {
        return Ok(()); // its inode cannot be read: only its slot is known
    }
    let i = e.inode(ino)?;
    if i.file_acl != 0 {
        let b = i.file_acl;
        ix.owned.push((
            b.saturating_mul(bs)..b.saturating_add(1).saturating_mul(bs),
            Owner::Node { node: n, part: Part::Xattr, logical: 0 },
        ));
    }
    let has_blocks = match node.file_type {
        Some(FileType::File | FileType::Dir) => true,
        Some(FileType::Symlink) => {
            let acl_sectors = if i.file_acl != 0 { bs * u64::from(e.sb.cluster_blocks) / 512 } else { 0 };
            let fast = i.flags & (inode::EXTENTS_FL | inode::INLINE_DATA_FL) == 0
                && i.size_bytes < inode::I_BLOCK_BYTES as u64
                && i.sectors.saturating_sub(acl_sectors) == 0;
            !fast
        }
        _ => false,
    };
    if !has_blocks || i.flags & inode::INLINE_DATA_FL != 0 {
        return Ok(());
    }
    let m = map::map(e, &i, i.size_bytes)?;
    for x in m.extents.iter().filter(|x| !x.flags.contains(ExtentFlags::UNWRITTEN)) {
        ix.owned.push((
            x.physical..x.physical.saturating_add(x.length),
            Owner::Node { node: n, part: Part::Data, logical: x.logical },
        ));
    }
    for b in m.map_blocks {
        ix.owned.push((
            b.saturating_mul(bs)..b.saturating_add(1).saturating_mul(bs),
            Owner::Node { node: n, part: Part::Map, logical: 0 },
        ));
    }
    Ok(())
}
