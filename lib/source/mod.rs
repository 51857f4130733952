//! The bottom layer: bytes at offsets. [`ByteSource`] is implemented by files (read-only,
//! `pread`, sparse-aware), windows (losetup `-o`/`--sizelimit`, ECC stripping), memory
//! (tests, headers) and decrypted volumes, so nothing above knows where bytes come from.
//!
//! ```text
//!   FileSource ──┐
//!   MemSource  ──┼──> ByteSource <── Window<S> (offset/length view)
//!   Volume     ──┘                 <── Volume (decrypts sectors of another source)
//! ```

mod file;
mod mem;
pub mod sink;
mod window;

pub use file::FileSource;
pub use mem::MemSource;
pub use sink::{ByteSink, FileSink, MemSink};
pub use window::Window;

use std::io;
use std::ops::Range;
use std::sync::Arc;

/// Bytes per sector for every legacy loop format (and dm-crypt's default).
pub const SECTOR_BYTES: u64 = 512;

/// Positioned, thread-safe reads of an image.
pub trait ByteSource: Send + Sync {
    /// Total size in bytes.
    fn size_bytes(&self) -> u64;

    /// Read up to `buf.len()` bytes at `offset_bytes`; returns 0 only at or past the end.
    ///
    /// # Errors
    /// The underlying I/O error.
    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<usize>;

    /// The allocated (non-hole) regions intersecting `range`, in order. Bytes outside them read
    /// as zeros. The default says "everything is data"; sparse-aware sources override it.
    ///
    /// # Errors
    /// The underlying I/O error.
    fn data_regions(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        let end = range.end.min(self.size_bytes());
        if range.start >= end { Ok(Vec::new()) } else { Ok(std::iter::once(range.start..end).collect()) }
    }

    /// Fill `buf` completely from `offset_bytes`.
    ///
    /// # Errors
    /// `UnexpectedEof` if the source ends first; otherwise the underlying I/O error.
    fn read_exact_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], offset_bytes + done as u64) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "source ends at byte {}, wanted {} bytes at {}",
                            self.size_bytes(),
                            buf.len(),
                            offset_bytes
                        ),
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

macro_rules! forward_byte_source {
    ($($t:ty),*) => {$(
        impl<S: ByteSource + ?Sized> ByteSource for $t {
            fn size_bytes(&self) -> u64 { (**self).size_bytes() }
            fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<usize> {
                (**self).read_at(buf, offset_bytes)
            }
            fn data_regions(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
                (**self).data_regions(range)
            }
        }
    )*};
}
forward_byte_source!(&S, Box<S>, Arc<S>);

/// Read `len` bytes at `offset_bytes` into a new vector (short at the end of the source).
///
/// # Errors
/// The underlying I/O error.
pub fn read_vec(src: &dyn ByteSource, offset_bytes: u64, len: usize) -> io::Result<Vec<u8>> {
    let avail = src.size_bytes().saturating_sub(offset_bytes);
    let len = len.min(usize::try_from(avail).unwrap_or(usize::MAX));
    let mut v = vec![0u8; len];
    src.read_exact_at(&mut v, offset_bytes)?;
    Ok(v)
}

/// Fill `buf` from `offset_bytes` like [`ByteSource::read_exact_at`], but survive read errors
/// (a scratched disc): a failing read is retried in file-aligned 512-byte pieces, pieces that
/// still fail are zero-filled and their byte ranges appended to `unreadable` (merged with an
/// adjacent last range).
///
/// # Errors
/// `UnexpectedEof` if the source ends first.
pub fn read_exact_tolerant(
    src: &dyn ByteSource,
    buf: &mut [u8],
    offset_bytes: u64,
    unreadable: &mut Vec<Range<u64>>,
) -> io::Result<()> {
    match src.read_exact_at(buf, offset_bytes) {
        Err(e) if e.kind() != io::ErrorKind::UnexpectedEof => {}
        other => return other,
    }
    let end = offset_bytes + buf.len() as u64;
    let mut pos = offset_bytes;
    while pos < end {
        let next = ((pos / SECTOR_BYTES + 1) * SECTOR_BYTES).min(end);
        let piece = &mut buf[(pos - offset_bytes) as usize..(next - offset_bytes) as usize];
        if let Err(e) = src.read_exact_at(piece, pos) {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                return Err(e);
            }
            piece.fill(0);
            match unreadable.last_mut() {
                Some(last) if last.end == pos => last.end = next,
                _ => unreadable.push(pos..next),
            }
        }
        pos = next;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod conformance {
    //! Checks every ByteSource implementation must pass.
    use super::*;

    /// `src` must expose exactly `expected`.
    pub fn check(src: &dyn ByteSource, expected: &[u8]) {
        assert_eq!(src.size_bytes(), expected.len() as u64);
        let mut all = vec![0u8; expected.len()];
        src.read_exact_at(&mut all, 0).expect("full read");
        assert_eq!(all, expected);
        for &(off, len) in &[(0usize, 1usize), (1, 511), (511, 2), (expected.len() / 2, 700)] {
            let len = len.min(expected.len().saturating_sub(off));
            let mut b = vec![0u8; len];
            src.read_exact_at(&mut b, off as u64).expect("partial read");
            assert_eq!(&b[..], &expected[off..off + len]);
        }
        let mut b = [0u8; 4];
        assert_eq!(src.read_at(&mut b, expected.len() as u64).expect("read at end"), 0);
        assert!(src.read_exact_at(&mut b, expected.len() as u64 - 1).is_err());
        let regions = src.data_regions(0..expected.len() as u64).expect("regions");
        for (i, byte) in expected.iter().enumerate() {
            if *byte != 0 {
                assert!(regions.iter().any(|r| r.contains(&(i as u64))), "byte {i} outside data");
            }
        }
    }
}
