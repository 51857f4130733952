//! Per-sector modes of cryptoloop, loop-AES single-key, loop_fish2 and LUKS1 CBC specs, over
//! any [`BlockCipher`]: CBC with a fresh IV per 512-byte sector (`plain` = LE32 sector,
//! `plain64` = LE64 sector, `null` = zero IV, `essiv:HASH` = the LE64 sector encrypted with
//! `HASH(key)`) and ECB (`aes-ecb`, IV ignored). For 8-byte-block ciphers (blowfish, cast5,
//! des3_ede) the IV is the first 8 bytes of the 16-byte IV, as dm-crypt and cryptoloop form it.
//!
//! Decryption is batched: many sectors' blocks go through the cipher in one call (the `aes`
//! crate pipelines AES-NI/VAES rounds across blocks), then each block is XORed with the
//! previous ciphertext block or the sector IV. Encryption chains block by block.

use super::block::{BlockCipher, CipherKind};
use super::{HashAlg, SectorCipher};
use std::fmt;

/// How the IV of a sector is formed from its IV sector number (dm-crypt names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IvScheme {
    /// `LE32(sector mod 2^32) ‖ 0×12`: kernel cryptoloop, dm-crypt `plain`.
    Plain,
    /// `LE64(sector) ‖ 0×8`: loop-AES single-key, dm-crypt `plain64`.
    Plain64,
    /// All-zero IV: dm-crypt `null` (SUSE `loop_fish2`).
    Null,
    /// dm-crypt `essiv:HASH`: `E_{HASH(key)}(LE64(sector) ‖ 0…)` with the same block cipher
    /// (cryptsetup's LUKS1 default `aes-cbc-essiv:sha256`).
    Essiv(HashAlg),
    /// dm-crypt `benbi`: `0⁸ ‖ BE64(sector · 32 + 1)`, the 1-based index of the sector's first
    /// 16-byte block (for LRW's block-index tweaks; loopkit runs it with LRW only).
    Benbi,
}

impl IvScheme {
    /// The IV for `sector` for the key-independent schemes (`essiv` needs [`IvGen`]; here it
    /// yields the unencrypted `plain64` block).
    pub fn iv(self, sector: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        match self {
            IvScheme::Plain => iv[..4].copy_from_slice(&(sector as u32).to_le_bytes()),
            IvScheme::Plain64 | IvScheme::Essiv(_) => iv[..8].copy_from_slice(&sector.to_le_bytes()),
            IvScheme::Null => {}
            IvScheme::Benbi => iv[8..].copy_from_slice(&(sector << 5).wrapping_add(1).to_be_bytes()),
        }
        iv
    }
    /// dm-crypt's name.
    pub fn name(self) -> String {
        match self {
            IvScheme::Plain => "plain".into(),
            IvScheme::Plain64 => "plain64".into(),
            IvScheme::Null => "null".into(),
            IvScheme::Essiv(h) => format!("essiv:{}", h.cryptsetup_name()),
            IvScheme::Benbi => "benbi".into(),
        }
    }
}

impl fmt::Display for IvScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::str::FromStr for IvScheme {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        let l = s.to_ascii_lowercase();
        Ok(match l.as_str() {
            "plain" => IvScheme::Plain,
            "plain64" => IvScheme::Plain64,
            "null" => IvScheme::Null,
            "benbi" => IvScheme::Benbi,
            _ => match l.strip_prefix("essiv:") {
                Some(h) => IvScheme::Essiv(
                    h.parse().map_err(|_| crate::Error::unsupported(format!("IV scheme {s:?}: unknown hash")))?,
                ),
                None => {
                    return Err(crate::Error::unsupported(format!(
                        "IV scheme {s:?} is not supported (plain, plain64, null, essiv:HASH, benbi)"
                    )));
                }
            },
        })
    }
}

/// A keyed IV generator: the scheme plus, for `essiv`, the salt cipher.
#[derive(Clone, Debug)]
pub struct IvGen {
    scheme: IvScheme,
    essiv: Option<BlockCipher>,
}

impl IvGen {
    /// The generator for `scheme` under the data cipher `kind` keyed with `key`.
    ///
    /// # Errors
    /// `InvalidInput` when the ESSIV salt (the hash of the key) is not a valid key for the cipher
    /// (dm-crypt refuses the same spec).
    pub fn new(scheme: IvScheme, kind: CipherKind, key: &[u8]) -> crate::Result<Self> {
        let essiv = match scheme {
            IvScheme::Essiv(h) => {
                let salt = h.digest(&[key]);
                Some(BlockCipher::new(kind, &salt).map_err(|_| {
                    crate::Error::invalid(format!(
                        "{kind} with essiv:{}: the {}-byte hash of the key is not a {kind} key",
                        h.cryptsetup_name(),
                        salt.len()
                    ))
                })?)
            }
            _ => None,
        };
        Ok(IvGen { scheme, essiv })
    }
    /// The scheme.
    pub fn scheme(&self) -> IvScheme {
        self.scheme
    }
    /// The IV of `sector` (the first block-size bytes are used).
    pub fn iv(&self, sector: u64) -> [u8; 16] {
        let mut iv = self.scheme.iv(sector);
        if let Some(e) = &self.essiv {
            let bs = e.block_bytes();
            e.encrypt_blocks(&mut iv[..bs]);
        }
        iv
    }
}

/// Sectors decrypted per batched cipher call (32 KiB).
const BATCH_SECTORS: usize = 64;

/// CBC with a per-sector IV over any block cipher.
#[derive(Clone)]
pub struct CbcSectors {
    cipher: BlockCipher,
    iv: IvGen,
    /// D_K(0^bs): lets a hole (all-zero ciphertext) decrypt without cipher work.
    d_zero: [u8; 16],
}

impl fmt::Debug for CbcSectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CbcSectors({:?}, {})", self.cipher, self.iv.scheme)
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
        Self::with_cipher(CipherKind::Aes, key, iv)
    }

    /// CBC of cipher `kind` with `key` and the given IV scheme.
    ///
    /// # Errors
    /// `InvalidInput` for a key length the cipher does not take; `Unsupported` for `benbi`.
    pub fn with_cipher(kind: CipherKind, key: &[u8], iv: IvScheme) -> crate::Result<Self> {
        if iv == IvScheme::Benbi {
            return Err(crate::Error::unsupported(format!("{kind}-cbc-benbi (loopkit runs benbi with LRW only)")));
        }
        let cipher = BlockCipher::new(kind, key)?;
        let bs = cipher.block_bytes();
        let mut d_zero = [0u8; 16];
        cipher.decrypt_blocks(&mut d_zero[..bs]);
        Ok(CbcSectors { iv: IvGen::new(iv, kind, key)?, cipher, d_zero })
    }
}

impl SectorCipher for CbcSectors {
    fn decrypt_sectors(&self, iv_sector: u64, data: &mut [u8]) {
        let bs = self.cipher.block_bytes();
        let mut ct = [0u8; BATCH_SECTORS * 512];
        let mut sector = iv_sector;
        for batch in data.chunks_mut(BATCH_SECTORS * 512) {
            let n = batch.len() - batch.len() % 512;
            let batch = &mut batch[..n];
            ct[..n].copy_from_slice(batch);
            self.cipher.decrypt_blocks(batch);
            for (pt, c) in batch.chunks_exact_mut(512).zip(ct[..n].chunks_exact(512)) {
                let iv = self.iv.iv(sector);
                xor16(&mut pt[..bs], &iv[..bs]);
                if bs == 16 {
                    for i in (16..512).step_by(16) {
                        let (p, prev) = (&mut pt[i..i + 16], &c[i - 16..i]);
                        xor16(p, prev);
                    }
                } else {
                    for i in (bs..512).step_by(bs) {
                        xor16(&mut pt[i..i + bs], &c[i - bs..i]);
                    }
                }
                sector = sector.wrapping_add(1);
            }
        }
    }

    /// Out of place: the whole sectors of `src` go through the block cipher straight into `dst`
    /// (no copy of the ciphertext first), then each block is XORed with the previous ciphertext
    /// block, read from `src`, or the sector IV.
    fn decrypt_sectors_to(&self, iv_sector: u64, src: &[u8], dst: &mut [u8]) {
        let bs = self.cipher.block_bytes();
        let whole = src.len() - src.len() % 512;
        if dst.len() != src.len() {
            // A caller bug: keep the in-place semantics on what fits rather than panic here.
            let n = dst.len().min(src.len());
            dst[..n].copy_from_slice(&src[..n]);
            self.decrypt_sectors(iv_sector, &mut dst[..n]);
            return;
        }
        dst[whole..].copy_from_slice(&src[whole..]);
        let mut sector = iv_sector;
        let batch = BATCH_SECTORS * 512;
        for (c, pt) in src[..whole].chunks(batch).zip(dst[..whole].chunks_mut(batch)) {
            self.cipher.decrypt_blocks_to(c, pt);
            for (pt, c) in pt.chunks_exact_mut(512).zip(c.chunks_exact(512)) {
                let iv = self.iv.iv(sector);
                xor16(&mut pt[..bs], &iv[..bs]);
                if bs == 16 {
                    // Block j ^= ciphertext block j-1, 16 bytes at a time.
                    for (p, c) in pt.as_chunks_mut::<16>().0[1..].iter_mut().zip(c.as_chunks::<16>().0) {
                        *p = (u128::from_ne_bytes(*p) ^ u128::from_ne_bytes(*c)).to_ne_bytes();
                    }
                } else {
                    for i in (bs..512).step_by(bs) {
                        xor16(&mut pt[i..i + bs], &c[i - bs..i]);
                    }
                }
                sector = sector.wrapping_add(1);
            }
        }
    }

    fn encrypt_sectors(&self, iv_sector: u64, data: &mut [u8]) {
        let bs = self.cipher.block_bytes();
        let mut sector = iv_sector;
        for s in data.chunks_exact_mut(512) {
            let mut prev = self.iv.iv(sector);
            for blk in s.chunks_exact_mut(bs) {
                xor16(blk, &prev[..bs]);
                self.cipher.encrypt_blocks(blk);
                prev[..bs].copy_from_slice(blk);
            }
            sector = sector.wrapping_add(1);
        }
    }

    fn decrypt_zero_sector(&self, iv_sector: u64, out: &mut [u8; 512]) {
        // CBC: P_0 = D(0) ^ IV, P_i = D(0) ^ C_{i-1} = D(0).
        let bs = self.cipher.block_bytes();
        for blk in out.chunks_exact_mut(bs) {
            blk.copy_from_slice(&self.d_zero[..bs]);
        }
        let iv = self.iv.iv(iv_sector);
        xor16(&mut out[..bs], &iv[..bs]);
    }

    fn dm_name(&self) -> String {
        format!("{}-cbc-{}", self.cipher.kind(), self.iv.scheme)
    }
}

/// ECB per block (cryptoloop `aes-ecb`, `twofish-ecb`…; the IV sector is ignored).
#[derive(Clone, Debug)]
pub struct EcbSectors {
    cipher: BlockCipher,
}

impl EcbSectors {
    /// AES-ECB with a 16/24/32-byte key.
    ///
    /// # Errors
    /// `InvalidInput` for a bad key length.
    pub fn new(key: &[u8]) -> crate::Result<Self> {
        Self::with_cipher(CipherKind::Aes, key)
    }
    /// ECB of cipher `kind`.
    ///
    /// # Errors
    /// `InvalidInput` for a key length the cipher does not take.
    pub fn with_cipher(kind: CipherKind, key: &[u8]) -> crate::Result<Self> {
        Ok(EcbSectors { cipher: BlockCipher::new(kind, key)? })
    }
}

impl SectorCipher for EcbSectors {
    fn decrypt_sectors(&self, _iv_sector: u64, data: &mut [u8]) {
        self.cipher.decrypt_blocks(data);
    }
    fn encrypt_sectors(&self, _iv_sector: u64, data: &mut [u8]) {
        self.cipher.encrypt_blocks(data);
    }
    fn dm_name(&self) -> String {
        format!("{}-ecb", self.cipher.kind())
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
    use crate::crypto::as_blocks;
    use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// docs/formats/research/legacy-loop-crypto.md §5.4 plaintext: byte i of sector t = (31t + i) & 0xff.
    fn plaintext(sectors: usize) -> Vec<u8> {
        (0..sectors * 512).map(|j| ((31 * (j / 512) + j % 512) & 0xff) as u8).collect()
    }

    use sha2::Digest;

    fn sha256_hex(b: &[u8]) -> String {
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
            // The out-of-place path (what `migrate` uses) gives the same bytes.
            let mut to = vec![0u8; ct.len()];
            c.decrypt_sectors_to(base, &ct, &mut to);
            assert_eq!(to, ours, "out of place {iv}");
            let mut z = [0u8; 512];
            c.decrypt_zero_sector(base + 3, &mut z);
            let mut full = [0u8; 512];
            c.decrypt_sectors(base + 3, &mut full);
            assert_eq!(z, full);
        }
    }

    /// Every cipher's per-sector CBC (plain, plain64, essiv:sha256) equals the `cbc` crate
    /// chaining the same RustCrypto cipher with the dm-crypt IV, in both directions.
    #[test]
    fn all_ciphers_match_cbc_crate() {
        fn reference<C>(key: &[u8], ivs: &[Vec<u8>], pt: &[u8]) -> Vec<u8>
        where
            C: aes::cipher::BlockCipherEncrypt + aes::cipher::KeyInit,
        {
            let mut out = pt.to_vec();
            for (s, iv) in out.chunks_exact_mut(512).zip(ivs) {
                let mut e = cbc::Encryptor::<C>::new_from_slices(key, iv).unwrap();
                let (blocks, _) = aes::cipher::Block::<C>::slice_as_chunks_mut(s);
                e.encrypt_blocks(blocks);
            }
            out
        }
        let pt = plaintext(70);
        let base = 0xffff_ffe0u64;
        for kind in CipherKind::ALL {
            let klen = match kind {
                CipherKind::Cast5 => 16,
                CipherKind::Des3Ede => 24,
                _ => 32,
            };
            let key: Vec<u8> = (0..klen as u8).map(|i| i.wrapping_mul(7) ^ 0x5a).collect();
            for scheme in [IvScheme::Plain, IvScheme::Plain64, IvScheme::Null, IvScheme::Essiv(HashAlg::Sha256)] {
                if matches!(kind, CipherKind::Cast5 | CipherKind::Des3Ede) && matches!(scheme, IvScheme::Essiv(_)) {
                    continue; // a 32-byte salt is no cast5/des3_ede key (dm-crypt refuses it too)
                }
                let c = CbcSectors::with_cipher(kind, &key, scheme).unwrap();
                let bs = kind.block_bytes();
                let g = IvGen::new(scheme, kind, &key).unwrap();
                let ivs: Vec<Vec<u8>> = (0..70).map(|k| g.iv(base + k)[..bs].to_vec()).collect();
                let want = match kind {
                    CipherKind::Aes => reference::<aes::Aes256>(&key, &ivs, &pt),
                    CipherKind::Twofish => reference::<twofish::Twofish>(&key, &ivs, &pt),
                    CipherKind::Serpent => reference::<serpent::Serpent>(&key, &ivs, &pt),
                    CipherKind::Blowfish => reference::<blowfish::Blowfish>(&key, &ivs, &pt),
                    CipherKind::Cast5 => reference::<cast5::Cast5>(&key, &ivs, &pt),
                    CipherKind::Des3Ede => reference::<des::TdesEde3>(&key, &ivs, &pt),
                };
                let mut ct = pt.clone();
                c.encrypt_sectors(base, &mut ct);
                assert_eq!(ct, want, "{kind} {scheme} encrypt");
                // Out of place, with a partial sector at the end (copied as it is).
                let mut src = ct.clone();
                src.extend_from_slice(&[9u8; 100]);
                let mut to = vec![0xa5u8; src.len()];
                c.decrypt_sectors_to(base, &src, &mut to);
                assert_eq!(&to[..pt.len()], &pt[..], "{kind} {scheme} decrypt out of place");
                assert_eq!(&to[pt.len()..], &[9u8; 100][..]);
                c.decrypt_sectors(base, &mut ct);
                assert_eq!(ct, pt, "{kind} {scheme} decrypt");
                let mut z = [0u8; 512];
                c.decrypt_zero_sector(base + 3, &mut z);
                let mut full = [0u8; 512];
                c.decrypt_sectors(base + 3, &mut full);
                assert_eq!(z, full, "{kind} {scheme} zero sector");
            }
        }
    }

    /// ESSIV: the IV is the LE64 sector encrypted with the hash of the key (dm-crypt).
    #[test]
    fn essiv_iv_is_hashed_key_encryption() {
        use aes::cipher::{BlockCipherEncrypt, KeyInit};
        let key = [0x11u8; 32];
        let g = IvGen::new(IvScheme::Essiv(HashAlg::Sha256), CipherKind::Aes, &key).unwrap();
        let salt = sha2::Sha256::digest(key);
        let e = aes::Aes256::new_from_slice(&salt).unwrap();
        let mut b = aes::Block::default();
        b[..8].copy_from_slice(&77u64.to_le_bytes());
        e.encrypt_block(&mut b);
        assert_eq!(g.iv(77)[..], b[..]);
        assert!(IvGen::new(IvScheme::Essiv(HashAlg::Sha1), CipherKind::Aes, &key).is_err(), "20-byte salt");
    }

    #[test]
    fn plain_iv_wraps_plain64_does_not() {
        assert_eq!(IvScheme::Plain.iv(1 << 32), [0u8; 16]);
        assert_ne!(IvScheme::Plain64.iv(1 << 32), [0u8; 16]);
        assert_eq!(IvScheme::Plain.iv(5), IvScheme::Plain64.iv(5));
    }
}
