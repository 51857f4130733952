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
            // A later extent never starts before an earlier one ends; a buggy or racing answer
            // that does is dropped rather than allowed to overlap.
            if out.last().is_some_and(|p| r.fe_logical < p.logical_end()) || r.fe_length == 0 {
                continue;
            }
            out.push(Extent {
                logical: r.fe_logical,
                physical: r.fe_physical,
                length: r.fe_length,
                flags: ExtentFlags::from_bits(r.fe_flags),
            });
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
