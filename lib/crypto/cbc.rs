//! AES per-sector modes of cryptoloop and loop-AES single-key: CBC with a fresh IV per
//! 512-byte sector (`plain` = LE32 sector, `plain64` = LE64 sector, `null` = zero IV) and
//! ECB (`aes-ecb`, IV ignored).
//!
//! Decryption is batched: many sectors' blocks go through `aes` in one call (the crate
//! pipelines AES-NI/VAES rounds across blocks), then each block is XORed with the previous
//! ciphertext block or the sector IV. Encryption uses the `cbc` crate sector by sector.

use super::{Aes, SectorCipher, as_blocks};
use std::fmt;

/// How the 16-byte IV of a sector is formed from its IV sector number (dm-crypt names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IvScheme {
    /// `LE32(sector mod 2^32) ‖ 0×12`: kernel cryptoloop, dm-crypt `plain`.
    Plain,
    /// `LE64(sector) ‖ 0×8`: loop-AES single-key, dm-crypt `plain64`.
    Plain64,
    /// All-zero IV: dm-crypt `null`.
    Null,
}

impl IvScheme {
    /// The IV for `sector`.
    pub fn iv(self, sector: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        match self {
            IvScheme::Plain => iv[..4].copy_from_slice(&(sector as u32).to_le_bytes()),
            IvScheme::Plain64 => iv[..8].copy_from_slice(&sector.to_le_bytes()),
            IvScheme::Null => {}
        }
        iv
    }
    /// dm-crypt's name.
    pub fn name(self) -> &'static str {
        match self {
            IvScheme::Plain => "plain",
            IvScheme::Plain64 => "plain64",
            IvScheme::Null => "null",
        }
    }
}

impl fmt::Display for IvScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Sectors decrypted per batched AES call (32 KiB).
const BATCH_SECTORS: usize = 64;

/// AES-CBC with a per-sector IV.
#[derive(Clone)]
pub struct CbcSectors {
    aes: Aes,
    iv: IvScheme,
    /// D_K(0^16): lets a hole (all-zero ciphertext) decrypt without AES work.
    d_zero: [u8; 16],
}

impl fmt::Debug for CbcSectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CbcSectors({:?}, {})", self.aes, self.iv)
    }
}

impl Drop for CbcSectors {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.d_zero);
    }
}

impl CbcSectors {
    /// AES-CBC with `key` (16/24/32 bytes) and the given IV scheme.
    ///
    /// # Errors
    /// `InvalidInput` for a bad key length.
    pub fn new(key: &[u8], iv: IvScheme) -> crate::Result<Self> {
        let aes = Aes::new(key)?;
        let mut z = [aes::Block::default()];
        aes.decrypt_blocks(&mut z);
        let mut d_zero = [0u8; 16];
        d_zero.copy_from_slice(&z[0]);
        zeroize::Zeroize::zeroize(&mut z[0][..]);
        Ok(CbcSectors { aes, iv, d_zero })
    }
}

impl SectorCipher for CbcSectors {
    fn decrypt_sectors(&self, iv_sector: u64, data: &mut [u8]) {
        let mut ct = [0u8; BATCH_SECTORS * 512];
        let mut sector = iv_sector;
        for batch in data.chunks_mut(BATCH_SECTORS * 512) {
            let n = batch.len() - batch.len() % 512;
            let batch = &mut batch[..n];
            ct[..n].copy_from_slice(batch);
            self.aes.decrypt_blocks(as_blocks(batch));
            for (pt, c) in batch.chunks_exact_mut(512).zip(ct[..n].chunks_exact(512)) {
                let iv = self.iv.iv(sector);
                xor16(&mut pt[..16], &iv);
                for i in (16..512).step_by(16) {
                    let (p, prev) = (&mut pt[i..i + 16], &c[i - 16..i]);
                    xor16(p, prev);
                }
                sector = sector.wrapping_add(1);
            }
        }
    }

    fn encrypt_sectors(&self, iv_sector: u64, data: &mut [u8]) {
        let mut sector = iv_sector;
        for s in data.chunks_exact_mut(512) {
            let mut prev = self.iv.iv(sector);
            for blk in s.chunks_exact_mut(16) {
                xor16(blk, &prev);
                let b = &mut as_blocks(blk)[0];
                self.aes.encrypt_block(b);
                prev.copy_from_slice(blk);
            }
            sector = sector.wrapping_add(1);
        }
    }

    fn decrypt_zero_sector(&self, iv_sector: u64, out: &mut [u8; 512]) {
        // CBC: P_0 = D(0) ^ IV, P_i = D(0) ^ C_{i-1} = D(0).
        for blk in out.chunks_exact_mut(16) {
            blk.copy_from_slice(&self.d_zero);
        }
        xor16(&mut out[..16], &self.iv.iv(iv_sector));
    }

    fn dm_name(&self) -> String {
        format!("aes-cbc-{}", self.iv)
    }
}

/// AES-ECB per 16-byte block (cryptoloop `aes-ecb`; the IV sector is ignored).
#[derive(Clone, Debug)]
pub struct EcbSectors {
    aes: Aes,
}

impl EcbSectors {
    /// AES-ECB with a 16/24/32-byte key.
    ///
    /// # Errors
    /// `InvalidInput` for a bad key length.
    pub fn new(key: &[u8]) -> crate::Result<Self> {
        Ok(EcbSectors { aes: Aes::new(key)? })
    }
}

impl SectorCipher for EcbSectors {
    fn decrypt_sectors(&self, _iv_sector: u64, data: &mut [u8]) {
        let n = data.len() - data.len() % 16;
        self.aes.decrypt_blocks(as_blocks(&mut data[..n]));
    }
    fn encrypt_sectors(&self, _iv_sector: u64, data: &mut [u8]) {
        let n = data.len() - data.len() % 16;
        self.aes.encrypt_blocks(as_blocks(&mut data[..n]));
    }
    fn dm_name(&self) -> String {
        "aes-ecb".into()
    }
}

#[inline]
pub(crate) fn xor16(a: &mut [u8], b: &[u8]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= *y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cbc::cipher::{BlockModeDecrypt, KeyIvInit};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// docs/formats/research/legacy-loop-crypto.md §5.4 plaintext: byte i of sector t = (31t + i) & 0xff.
    fn plaintext(sectors: usize) -> Vec<u8> {
        (0..sectors * 512).map(|j| ((31 * (j / 512) + j % 512) & 0xff) as u8).collect()
    }

    fn sha256_hex(b: &[u8]) -> String {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(b))
    }

    #[test]
    fn cryptoloop_vectors_and_roundtrip() {
        let key = crate::crypto::kdf::Derivation::UtilLinuxRaw.derive(b"testpassword", 32).unwrap();
        let c = CbcSectors::new(key.bytes(), IvScheme::Plain).unwrap();
        let p = plaintext(4);
        let mut ct = p.clone();
        c.encrypt_sectors(0, &mut ct);
        assert_eq!(hex(&ct[..32]), "c7627bd77cec19f1944033932285037a3d299e530a4276752f4b13c18449c4b2");
        assert_eq!(sha256_hex(&ct), "f932d3dda4585019e23cb1996590b7ecd250a743967ea3eecf3fe7a892b96e89");
        let mut ct8 = p.clone();
        c.encrypt_sectors(8, &mut ct8);
        assert_eq!(sha256_hex(&ct8), "a6ee2cb504415f1d838b07185b2b971c5615a267071b8c181b550786f9d64409");
        let mut back = ct.clone();
        c.decrypt_sectors(0, &mut back);
        assert_eq!(back, p);
    }

    /// The batched decryption must equal the `cbc` crate's, per sector, across batch edges.
    #[test]
    fn batched_decrypt_matches_cbc_crate() {
        let key: Vec<u8> = (0..32u8).collect();
        for iv in [IvScheme::Plain, IvScheme::Plain64, IvScheme::Null] {
            let c = CbcSectors::new(&key, iv).unwrap();
            let ct: Vec<u8> = (0..200 * 512).map(|i| (i * 7 + i / 511) as u8).collect();
            let mut ours = ct.clone();
            let base = 0xffff_fff0u64;
            c.decrypt_sectors(base, &mut ours);
            for (k, (o, c)) in ours.chunks(512).zip(ct.chunks(512)).enumerate() {
                let ivb = iv.iv(base + k as u64);
                let mut buf = c.to_vec();
                let mut d = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &ivb).unwrap();
                let blocks = as_blocks(&mut buf);
                d.decrypt_blocks(blocks);
                assert_eq!(o, &buf[..], "sector {k} {iv}");
            }
            let mut z = [0u8; 512];
            c.decrypt_zero_sector(base + 3, &mut z);
            let mut full = [0u8; 512];
            c.decrypt_sectors(base + 3, &mut full);
            assert_eq!(z, full);
        }
    }

    #[test]
    fn plain_iv_wraps_plain64_does_not() {
        assert_eq!(IvScheme::Plain.iv(1 << 32), [0u8; 16]);
        assert_ne!(IvScheme::Plain64.iv(1 << 32), [0u8; 16]);
        assert_eq!(IvScheme::Plain.iv(5), IvScheme::Plain64.iv(5));
    }
}
