//! An in-memory [`ByteSource`], for tests and for headers already read.

use super::ByteSource;
use std::io;

/// Bytes held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemSource(Vec<u8>);

impl MemSource {
    /// Wrap a vector.
    pub fn new(bytes: Vec<u8>) -> Self {
        MemSource(bytes)
    }
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl ByteSource for MemSource {
    fn size_bytes(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<usize> {
        let Ok(off) = usize::try_from(offset_bytes) else {
            return Ok(0);
        };
        if off >= self.0.len() {
            return Ok(0);
        }
        let n = buf.len().min(self.0.len() - off);
        buf[..n].copy_from_slice(&self.0[off..off + n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn conformance() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        crate::source::conformance::check(&MemSource::new(data.clone()), &data);
    }
}
