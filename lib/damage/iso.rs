//! Who owns each byte of an ISO9660 volume: the system area, the volume descriptors, the path
//! tables, every walked directory's extent and every file's extents (multi-extent files in
//! order); the rest is other metadata (boot records, the directory tree not read, padding).

use super::{AreaKind, Index, Owner, Part};
use crate::bytes::le32;
use crate::fs::iso9660::{ISO_VD_OFFSET, Iso, SECTOR_BYTES};
use crate::fs::tree::FileType;
use crate::source::ByteSource;

/// Volume descriptors scanned at most.
const MAX_DESCRIPTORS: u64 = 64;

/// The owners of the ISO9660 volume in `src`.
///
/// # Errors
/// As [`Iso::open`]; `Interrupted`.
pub(crate) fn index(src: &dyn ByteSource, interrupt: &crate::progress::Interrupt) -> crate::Result<Index> {
    let iso = Iso::open(src)?;
    let mut ix = Index { block_bytes: SECTOR_BYTES, fs_bytes: iso.volume_bytes(), ..Index::default() };
    let area = |ix: &mut Index, r: std::ops::Range<u64>, kind: AreaKind, detail: &str| {
        ix.owned.push((r, Owner::Area { kind, detail: Some(detail.to_string()) }));
    };
    area(&mut ix, 0..ISO_VD_OFFSET, AreaKind::OtherMetadata, "system area");
    let mut vd = vec![0u8; SECTOR_BYTES as usize];
    for i in 0..MAX_DESCRIPTORS {
        let off = ISO_VD_OFFSET + i * SECTOR_BYTES;
        if src.read_exact_at(&mut vd, off).is_err() || &vd[1..6] != b"CD001" {
            break;
        }
        area(&mut ix, off..off + SECTOR_BYTES, AreaKind::VolumeDescriptors, "volume descriptor");
        if vd[0] == 255 {
            break;
        }
        if vd[0] == 1 || vd[0] == 2 {
            let size = u64::from(le32(&vd, 132));
            let be = |at: usize| u64::from(u32::from_be_bytes([vd[at], vd[at + 1], vd[at + 2], vd[at + 3]]));
            for loc in [u64::from(le32(&vd, 140)), u64::from(le32(&vd, 144)), be(148), be(152)] {
                if loc != 0 && size > 0 {
                    let at = loc * SECTOR_BYTES;
                    area(&mut ix, at..at.saturating_add(size), AreaKind::PathTable, "path table");
                }
            }
        }
    }
    let (nodes, notes) = super::walk_nodes(&iso, interrupt)?;
    ix.notes.extend(notes);
    for (n, node) in nodes.iter().enumerate() {
        interrupt.check()?;
        let extents = match node.file_type {
            Some(FileType::Dir) => iso.directory_extent(node.id).map(|e| vec![e]),
            Some(FileType::File) => iso.file_extents(node.id),
            _ => Ok(Vec::new()),
        };
        match extents {
            Ok(v) => {
                let mut logical = 0u64;
                for (start, len) in v {
                    if len > 0 {
                        ix.owned.push((
                            start..start.saturating_add(len),
                            Owner::Node { node: n, part: Part::Data, logical },
                        ));
                    }
                    logical = logical.saturating_add(len);
                }
            }
            Err(err) => ix.notes.push(format!(
                "/{}: where its data lies is unknown: {err}",
                String::from_utf8_lossy(node.paths.first().map_or(&[][..], |p| p))
            )),
        }
    }
    ix.nodes = nodes;
    Ok(ix)
}
