//! FIEMAP of a live file: batched `FS_IOC_FIEMAP` calls turned into [`Extent`]s.

use super::{Extent, ExtentFlags};
use crate::sys;
use std::io;
use std::ops::Range;
use std::os::fd::BorrowedFd;

/// Extents asked for per ioctl call.
pub const BATCH: u32 = 512;

/// At most this many extents are collected by one [`query`] (32 bytes each in an
/// [`super::ExtentMap`]: 1 GiB), so a pathological file cannot exhaust memory.
pub const MAX_EXTENTS: usize = 32 << 20;

/// The extents of the file behind `fd` that intersect `range`, in logical order, as the file
/// system reports them (not merged, possibly starting before or ending after the range). With
/// `sync`, dirty data is written back first (`FIEMAP_FLAG_SYNC`), so delayed allocations get
/// their blocks.
///
/// # Errors
/// `Unsupported` (`EOPNOTSUPP`/`ENOTTY`) when the file system has no FIEMAP; `OutOfMemory`
/// past [`MAX_EXTENTS`]; another OS error.
pub fn query(fd: BorrowedFd<'_>, range: Range<u64>, sync: bool) -> io::Result<Vec<Extent>> {
    let flags = if sync { sys::FIEMAP_FLAG_SYNC } else { 0 };
    let mut out: Vec<Extent> = Vec::new();
    let mut pos = range.start;
    while pos < range.end {
        let batch = sys::fiemap(fd, pos, range.end - pos, flags, BATCH).map_err(|e| match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) => {
                io::Error::new(io::ErrorKind::Unsupported, "the file system does not support FIEMAP")
            }
            _ => e,
        })?;
        let Some(last) = batch.last().copied() else { break };
        let full = batch.len() as u32 == BATCH;
        for r in batch {
            if r.fe_length == 0 {
                continue;
            }
            push_fail_closed(
                &mut out,
                Extent {
                    logical: r.fe_logical,
                    physical: r.fe_physical,
                    length: r.fe_length,
                    flags: ExtentFlags::from_bits(r.fe_flags),
                },
            );
        }
        if out.len() > MAX_EXTENTS {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("more than {MAX_EXTENTS} extents: the file is too fragmented to map"),
            ));
        }
        let next = last.fe_logical.saturating_add(last.fe_length);
        if !full || last.fe_flags & ExtentFlags::LAST.bits() != 0 || next <= pos {
            break;
        }
        pos = next;
    }
    Ok(out)
}

/// Append `e` to `out` (sorted, not overlapping). A later extent never starts before an earlier
/// one ends; when a buggy or racing answer says otherwise, neither claim about the contested
/// bytes can be trusted: everything from the first contested byte to the end of both extents
/// becomes one [`ExtentFlags::UNKNOWN`] extent (through the file), and the uncontested head of the
/// earlier extents is kept. Nothing is dropped (a dropped range would read as a hole).
pub fn push_fail_closed(out: &mut Vec<Extent>, e: Extent) {
    if out.last().is_none_or(|p| e.logical >= p.logical_end()) {
        out.push(e);
        return;
    }
    let mut start = e.logical;
    let mut end = e.logical_end();
    while let Some(p) = out.last_mut() {
        if p.logical_end() <= start {
            break;
        }
        end = end.max(p.logical_end());
        if p.logical < start {
            p.length = start - p.logical;
            break;
        }
        start = start.min(p.logical);
        out.pop();
    }
    let flags = ExtentFlags::UNKNOWN.union(ExtentFlags::from_bits(e.flags.bits() & ExtentFlags::LAST.bits()));
    out.push(Extent { logical: start, physical: 0, length: end - start, flags });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::{Class, ExtentMap, SegKind, classify, close_gaps};

    const K: u64 = 1024;

    fn ext(logical: u64, physical: u64, length: u64) -> Extent {
        Extent { logical, physical, length, flags: ExtentFlags::default() }
    }

    #[test]
    fn an_overlap_is_kept_and_made_unknown() {
        let mut out = Vec::new();
        push_fail_closed(&mut out, ext(0, 1 << 20, 8 * K));
        push_fail_closed(&mut out, ext(4 * K, 2 << 20, 8 * K));
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0], ext(0, 1 << 20, 4 * K));
        assert_eq!((out[1].logical, out[1].length), (4 * K, 8 * K));
        assert!(out[1].flags.contains(ExtentFlags::UNKNOWN));
        // In a map, [8K,12K) must not come out as zeros, [4K,12K) not as raw device I/O.
        let mut map = ExtentMap::new(16 * K, 512);
        map.fill(0..16 * K, &out);
        for at in [4 * K, 8 * K, 11 * K] {
            let seg = map.lookup(at).unwrap();
            assert_eq!(seg.kind, SegKind::ViaFile, "at {at}: {seg:?}");
        }
        assert!(matches!(map.lookup(0).unwrap().kind, SegKind::Mapped { .. }));
        assert_eq!(map.lookup(12 * K).unwrap().kind, SegKind::Zero);
    }

    #[test]
    fn an_extent_starting_before_earlier_ones_swallows_them() {
        let mut out = vec![ext(0, 0, 4 * K), ext(8 * K, 8 * K, 4 * K), ext(12 * K, 12 * K, 4 * K)];
        push_fail_closed(&mut out, ext(6 * K, 100 * K, 4 * K));
        assert_eq!(out[0], ext(0, 0, 4 * K));
        assert_eq!((out[1].logical, out[1].length), (6 * K, 10 * K));
        assert!(out[1].flags.contains(ExtentFlags::UNKNOWN));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn gaps_not_confirmed_as_holes_go_through_the_file() {
        let extents = vec![ext(4 * K, 1 << 20, 4 * K), ext(12 * K, 2 << 20, 4 * K)];
        // The second opinion says there is data in [8K, 12K) but not in [0, 4K) or [16K, 20K).
        let closed = close_gaps(0..20 * K, extents, |g| g.start == 8 * K);
        let mut map = ExtentMap::new(20 * K, 512);
        map.fill(0..20 * K, &closed);
        assert_eq!(map.lookup(0).unwrap().kind, SegKind::Zero);
        assert_eq!(map.lookup(9 * K).unwrap().kind, SegKind::ViaFile);
        assert_eq!(map.lookup(17 * K).unwrap().kind, SegKind::Zero);
        // Unsure (true for every gap): nothing reads as zeros.
        let closed = close_gaps(0..20 * K, vec![ext(4 * K, 1 << 20, 4 * K)], |_| true);
        let mut map = ExtentMap::new(20 * K, 512);
        map.fill(0..20 * K, &closed);
        for at in [0, 8 * K, 19 * K] {
            assert_eq!(map.lookup(at).unwrap().kind, SegKind::ViaFile, "at {at}");
        }
    }

    #[test]
    fn unknown_flag_bits_are_via_file() {
        let mut e = ext(0, 0, 4 * K);
        assert_eq!(classify(&e, 512).0, Class::Mapped);
        e.flags = ExtentFlags::from_bits(0x4000);
        assert_eq!(classify(&e, 512).0, Class::ViaFile);
        e.flags = ExtentFlags::from_bits(0x1 | 0x1000);
        assert_eq!(classify(&e, 512).0, Class::Mapped, "LAST and MERGED are harmless");
    }
}
