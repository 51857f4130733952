//! [`Volume`]: the decrypted payload of an encrypted image as a [`ByteSource`]. Sector `k` is read
//! from `offset_bytes + 512·k` of the ciphertext source and decrypted with IV sector
//! `iv_offset_sectors + k`. A trailing partial sector is not part of the volume (as with loop).

use crate::crypto::SectorCipher;
use crate::source::{ByteSource, SECTOR_BYTES};
use std::io;
use std::sync::Arc;

/// Where the payload lies and how its sectors are numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Byte offset of the payload in the ciphertext source.
    pub offset_bytes: u64,
    /// Payload length in bytes (a multiple of 512).
    pub size_bytes: u64,
    /// IV sector of payload sector 0.
    pub iv_offset_sectors: u64,
}

impl Layout {
    /// The payload of a source of `source_bytes` starting at `offset_bytes`, whole sectors only,
    /// optionally limited to `size_limit_bytes` (losetup `--sizelimit`).
    pub fn new(source_bytes: u64, offset_bytes: u64, size_limit_bytes: Option<u64>, iv_offset_sectors: u64) -> Layout {
        let mut avail = source_bytes.saturating_sub(offset_bytes);
        if let Some(l) = size_limit_bytes {
            avail = avail.min(l);
        }
        Layout { offset_bytes, size_bytes: avail - avail % SECTOR_BYTES, iv_offset_sectors }
    }
}

/// A decrypting view of a ciphertext source.
pub struct Volume<S> {
    src: S,
    cipher: Arc<dyn SectorCipher>,
    layout: Layout,
}

impl<S: ByteSource> Volume<S> {
    /// Decrypt `src` with `cipher` according to `layout`.
    pub fn new(src: S, cipher: Arc<dyn SectorCipher>, layout: Layout) -> Self {
        Volume { src, cipher, layout }
    }
    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// The cipher.
    pub fn cipher(&self) -> &Arc<dyn SectorCipher> {
        &self.cipher
    }
}

impl<S: ByteSource> ByteSource for Volume<S> {
    fn size_bytes(&self) -> u64 {
        self.layout.size_bytes
    }

    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<usize> {
        let size = self.layout.size_bytes;
        if offset_bytes >= size || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(size - offset_bytes);
        // Bound the work per call to 1 MiB.
        let want = want.min(1 << 20) as usize;
        // The cipher's unit (512 for legacy modes, up to 4096 for LUKS2).
        let unit = self.cipher.sector_bytes() as u64;
        let first = offset_bytes / unit;
        // Whole units at a unit boundary: read and decrypt in place, no bounce buffer.
        let whole = want - want % unit as usize;
        if offset_bytes.is_multiple_of(unit) && whole > 0 {
            let out = &mut buf[..whole];
            self.src.read_exact_at(out, self.layout.offset_bytes + offset_bytes)?;
            self.cipher.decrypt_sectors(self.layout.iv_offset_sectors.wrapping_add(offset_bytes / SECTOR_BYTES), out);
            return Ok(whole);
        }
        let last = (offset_bytes + want as u64).div_ceil(unit);
        let mut tmp = vec![0u8; ((last - first) * unit) as usize];
        self.src.read_exact_at(&mut tmp, self.layout.offset_bytes + first * unit)?;
        self.cipher.decrypt_sectors(self.layout.iv_offset_sectors.wrapping_add(first * unit / SECTOR_BYTES), &mut tmp);
        let skip = (offset_bytes - first * unit) as usize;
        buf[..want].copy_from_slice(&tmp[skip..skip + want]);
        Ok(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::cbc::{CbcSectors, IvScheme};
    use crate::source::MemSource;

    #[test]
    fn conformance() {
        let plain: Vec<u8> = (0..64 * 512u32).map(|i| (i % 251) as u8).collect();
        let c = Arc::new(CbcSectors::new(&[7u8; 32], IvScheme::Plain).unwrap());
        let mut file = vec![0xAAu8; 3 * 512];
        let mut ct = plain.clone();
        c.encrypt_sectors(3, &mut ct);
        file.extend_from_slice(&ct);
        file.extend_from_slice(&[1, 2, 3]); // partial trailing sector
        let layout = Layout::new(file.len() as u64, 3 * 512, None, 3);
        assert_eq!(layout.size_bytes, plain.len() as u64);
        let v = Volume::new(MemSource::new(file), c, layout);
        crate::source::conformance::check(&v, &plain);
    }
}
