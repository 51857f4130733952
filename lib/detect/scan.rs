//! The head scan: with CBC and a plain/plain64 IV only the first bytes of a sector depend on the
//! IV, so each candidate key decrypts the image head once (batched ECB, then one XOR) and every
//! sector is checked for IV-independent superblock fields (ext, ISO9660, FAT, btrfs) that propose
//! payload offsets. Also [`HeadCache`] (the head read once) and [`looks_random`].

use super::keys::{KeyCand, Trial};
use crate::crypto::Aes;
use crate::crypto::block::BlockCipher;
use crate::formats::legacy::{KeyMaterial, Mode};
use crate::source::{ByteSource, SECTOR_BYTES};
use std::io;
use std::ops::Range;

/// Most candidate offsets taken from a scan.
const MAX_SCAN_OFFSETS: usize = 32;

/// A source whose first bytes are cached in memory (detection reads the head many times).
pub struct HeadCache<'a> {
    src: &'a dyn ByteSource,
    head: Vec<u8>,
}

impl<'a> HeadCache<'a> {
    /// Cache the first `len` bytes of `src`.
    ///
    /// # Errors
    /// Read errors.
    pub fn new(src: &'a dyn ByteSource, len: u64) -> io::Result<Self> {
        let len = len.min(src.size_bytes()) as usize;
        let mut head = vec![0u8; len];
        // Unreadable sectors (a damaged disc) read as zeros here; verify reports them.
        let mut unreadable = Vec::new();
        crate::source::read_exact_tolerant(src, &mut head, 0, &mut unreadable)?;
        Ok(HeadCache { src, head })
    }
    /// The cached bytes.
    pub fn head(&self) -> &[u8] {
        &self.head
    }
}

impl ByteSource for HeadCache<'_> {
    fn size_bytes(&self) -> u64 {
        self.src.size_bytes()
    }
    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<usize> {
        let end = offset_bytes.saturating_add(buf.len() as u64);
        if end <= self.head.len() as u64 {
            let o = offset_bytes as usize;
            buf.copy_from_slice(&self.head[o..o + buf.len()]);
            return Ok(buf.len());
        }
        self.src.read_at(buf, offset_bytes)
    }
    fn data_regions(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        self.src.data_regions(range)
    }
}

/// IV-independent superblock checks on one plaintext sector whose first `unreliable` bytes may be
/// wrong. Returns the payload offset the signature implies, relative to this sector's start.
fn sector_signature(p: &[u8], unreliable: usize) -> Option<i64> {
    use crate::bytes::le16;
    use crate::fs::Strictness::IvGarbled;
    // ext superblock (payload + 1024).
    if crate::fs::ext::Superblock::parse_with(p, IvGarbled(unreliable)).is_ok() {
        return Some(-1024);
    }
    // ISO9660 primary volume descriptor (payload + 32768): both-endian fields.
    if crate::fs::iso9660::vd::primary(p, IvGarbled(unreliable)).is_some() {
        return Some(-32768);
    }
    // FAT boot sector (payload + 0).
    if p[510] == 0x55 && p[511] == 0xAA && (&p[54..57] == b"FAT" || &p[82..87] == b"FAT32") {
        let bps = le16(p, 11);
        if unreliable >= 13 || (bps.is_power_of_two() && (512..=4096).contains(&bps)) {
            return Some(0);
        }
    }
    // btrfs superblock (payload + 65536): magic at sb + 64.
    if &p[64..72] == b"_BHRfS_M" {
        return Some(-65536);
    }
    None
}

fn push_offset(out: &mut Vec<u64>, sector_index: usize, rel: i64) {
    let abs = sector_index as i64 * SECTOR_BYTES as i64 + rel;
    if abs >= 0 && !out.contains(&(abs as u64)) && out.len() < MAX_SCAN_OFFSETS {
        out.push(abs as u64);
    }
}

/// Byte offsets (within a sector) of the magic fields [`sector_signature`] insists on: ext
/// `s_magic` (56), btrfs magic (64), ISO9660 both-endian logical block size (128), FAT `55 AA`
/// (510). None lies in the first 8 bytes, so none depends on a plain/plain64/null IV.
const MAGIC_AT: [usize; 4] = [56, 64, 128, 510];

/// Cheap early rejection for the head scan: decrypt only the cipher blocks that hold the magic
/// fields of every sector (4 blocks of 32, or of 64 for 8-byte-block ciphers, in one batched
/// call) and return the sectors where one of them matches — under CBC (plaintext block =
/// D(C_i) ⊕ C_{i-1}, IV-independent past block 0) or ECB. Only those get a full decryption.
/// Needed because some crates are slow (the `twofish` crate runs at a few MB/s).
fn prefilter(cipher: &BlockCipher, head: &[u8], cbc: bool, ecb: bool) -> Vec<usize> {
    let bs = cipher.block_bytes();
    let idx: Vec<usize> = MAGIC_AT.iter().map(|&m| m / bs).collect();
    let sectors = head.len() / 512;
    let mut buf = Vec::with_capacity(sectors * idx.len() * bs);
    for s in head.chunks_exact(512) {
        for &i in &idx {
            buf.extend_from_slice(&s[i * bs..(i + 1) * bs]);
        }
    }
    cipher.decrypt_blocks(&mut buf);
    let field = |plain: &[u8], at: usize| -> [u8; 8] {
        let mut f = [0u8; 8];
        let o = at % bs;
        let n = (bs - o).min(8);
        f[..n].copy_from_slice(&plain[o..o + n]);
        f
    };
    let matches = |fields: &[[u8; 8]]| -> bool {
        let iso = u16::from_le_bytes([fields[2][0], fields[2][1]]);
        (fields[0][..2] == [0x53, 0xEF])
            || &fields[1] == b"_BHRfS_M"
            || (iso.is_power_of_two() && (512..=2048).contains(&iso) && fields[2][2..4] == iso.to_be_bytes())
            || fields[3][..2] == [0x55, 0xAA]
    };
    let mut out = Vec::new();
    for (j, (d, s)) in buf.chunks_exact(idx.len() * bs).zip(head.chunks_exact(512)).enumerate() {
        let mut ecb_f = [[0u8; 8]; 4];
        let mut cbc_f = [[0u8; 8]; 4];
        for (k, (&i, &at)) in idx.iter().zip(&MAGIC_AT).enumerate() {
            let blk = &d[k * bs..(k + 1) * bs];
            ecb_f[k] = field(blk, at);
            let mut x = [0u8; 16];
            x[..bs].copy_from_slice(blk);
            if i > 0 {
                for (a, b) in x[..bs].iter_mut().zip(&s[(i - 1) * bs..i * bs]) {
                    *a ^= b;
                }
            }
            cbc_f[k] = field(&x[..bs], at);
        }
        if (ecb && matches(&ecb_f)) || (cbc && matches(&cbc_f)) {
            out.push(j);
        }
    }
    out
}

/// Scan `head` (ciphertext) for sectors that decrypt to a superblock under `k`.
pub(super) fn scan_key(head: &[u8], k: &KeyCand, modes: &[Trial], out: &mut Vec<u64>) -> crate::Result<()> {
    let n = head.len() / 512 * 512;
    if n == 0 {
        return Ok(());
    }
    match &k.keys {
        KeyMaterial::Single(key) => {
            let mut ciphers: Vec<_> = modes.iter().map(|t| t.cipher).collect();
            ciphers.dedup();
            for kind in ciphers {
                let cipher = BlockCipher::new(kind, key.bytes())?;
                let cbc = modes.iter().any(|t| t.cipher == kind && matches!(t.mode, Mode::Cbc(_)));
                let ecb = modes.iter().any(|t| t.cipher == kind && t.mode == Mode::Ecb);
                let mut p = [0u8; 512];
                for j in prefilter(&cipher, &head[..n], cbc, ecb) {
                    let cs = &head[j * 512..(j + 1) * 512];
                    p.copy_from_slice(cs);
                    cipher.decrypt_blocks(&mut p);
                    if ecb && let Some(rel) = sector_signature(&p, 0) {
                        push_offset(out, j, rel);
                    }
                    if cbc {
                        let bs = cipher.block_bytes();
                        for i in bs..512 {
                            p[i] ^= cs[i - bs];
                        }
                        // plain and plain64 IVs of sectors below 2^32 only touch bytes 0..4
                        // (null IVs none).
                        if let Some(rel) = sector_signature(&p, 4) {
                            push_offset(out, j, rel);
                        }
                    }
                }
            }
        }
        KeyMaterial::Multi(mk) => {
            let mut d = head[..n].to_vec();
            let aes: Vec<Aes> = mk.keys.iter().map(|k| Aes::new(k.bytes())).collect::<crate::Result<_>>()?;
            let mut p = [0u8; 512];
            for (j, (ds, cs)) in d.chunks_exact_mut(512).zip(head.chunks_exact(512)).enumerate() {
                // Assumes the IV counts the offset (the default); key = K[sector & 63].
                aes[j & 63].decrypt_blocks(crate::crypto::as_blocks(ds));
                p.copy_from_slice(ds);
                for i in 16..512 {
                    p[i] ^= cs[i - 16];
                }
                if let Some(rel) = sector_signature(&p, 16) {
                    push_offset(out, j, rel);
                }
            }
        }
    }
    Ok(())
}

/// Scan unencrypted data for signatures (plain images with an offset).
pub fn scan_plain(head: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    for (j, s) in head.chunks_exact(512).enumerate() {
        if let Some(rel) = sector_signature(s, 0) {
            push_offset(&mut out, j, rel);
        }
    }
    out
}

/// A rough test of whether data looks like ciphertext (or compressed/random data): byte
/// histogram chi-square over the allocated part of the head. `None` when there is too little
/// non-zero data to judge.
pub fn looks_random(head: &[u8]) -> Option<bool> {
    let data: Vec<&[u8]> = head.chunks(512).filter(|s| s.iter().any(|&b| b != 0)).collect();
    let n: usize = data.iter().map(|s| s.len()).sum();
    if n < 4096 {
        return None;
    }
    let mut hist = [0u64; 256];
    for s in &data {
        for &b in *s {
            hist[b as usize] += 1;
        }
    }
    let expected = n as f64 / 256.0;
    let chi2: f64 = hist.iter().map(|&o| (o as f64 - expected).powi(2) / expected).sum();
    // 255 degrees of freedom: mean 255, sd ~22.6; allow a generous margin.
    Some(chi2 < 400.0)
}
