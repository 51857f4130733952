//! A [`Window`]: an offset/length view into another source (losetup `-o`/`--sizelimit`, or the
//! data part of a dvdisaster-augmented image).

use super::ByteSource;
use std::io;
use std::ops::Range;

/// `len_bytes` bytes of `inner` starting at `offset_bytes`, clamped to what `inner` has.
#[derive(Debug, Clone)]
pub struct Window<S> {
    inner: S,
    offset_bytes: u64,
    len_bytes: u64,
}

impl<S: ByteSource> Window<S> {
    /// A view of `inner[offset_bytes .. offset_bytes + len_bytes]`; `len_bytes = None` means to
    /// the end. The view is clamped to the inner size (never reads past it).
    pub fn new(inner: S, offset_bytes: u64, len_bytes: Option<u64>) -> Self {
        let avail = inner.size_bytes().saturating_sub(offset_bytes);
        let len_bytes = len_bytes.map_or(avail, |l| l.min(avail));
        Window { inner, offset_bytes, len_bytes }
    }
    /// Where the window starts in the inner source.
    pub fn offset_bytes(&self) -> u64 {
        self.offset_bytes
    }
    /// The inner source.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: ByteSource> ByteSource for Window<S> {
    fn size_bytes(&self) -> u64 {
        self.len_bytes
    }
    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<usize> {
        if offset_bytes >= self.len_bytes {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len_bytes - offset_bytes) as usize;
        self.inner.read_at(&mut buf[..n], self.offset_bytes + offset_bytes)
    }
    fn data_regions(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        let end = range.end.min(self.len_bytes);
        if range.start >= end {
            return Ok(Vec::new());
        }
        let inner = self.inner.data_regions(self.offset_bytes + range.start..self.offset_bytes + end)?;
        Ok(inner.into_iter().map(|r| r.start - self.offset_bytes..r.end - self.offset_bytes).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemSource;
    #[test]
    fn conformance() {
        let data: Vec<u8> = (0..9000u32).map(|i| (i * 13 % 253) as u8).collect();
        let w = Window::new(MemSource::new(data.clone()), 1000, Some(5000));
        crate::source::conformance::check(&w, &data[1000..6000]);
        let w = Window::new(MemSource::new(data.clone()), 8000, Some(5000));
        crate::source::conformance::check(&w, &data[8000..]);
        let w = Window::new(MemSource::new(data.clone()), 20000, None);
        assert_eq!(w.size_bytes(), 0);
    }
}
