//! LRW (Liskov–Rivest–Wagner tweakable narrow-block mode, as IEEE P1619 drafted it and the
//! Linux kernel's `lrw` template runs it) over any 128-bit block cipher: dm-crypt's
//! `aes-lrw-plain64`, an old cryptsetup/LUKS1 choice, and `aes-lrw-benbi`.
//!
//! The key is the cipher key followed by a 16-byte tweak key `K2`. The sector's IV (16 bytes,
//! from the IV scheme) is read as a big-endian 128-bit block index `I` of the sector's first
//! block; block `j` of the sector has index `I + j` and is encrypted as
//! `C = E_K1(P ⊕ T) ⊕ T` with `T = K2 ⊗ (I + j)` in GF(2¹²⁸) (x¹²⁸ = x⁷ + x² + x + 1), the
//! field elements in the kernel's "bbe" order: the 16 bytes as a big-endian integer whose bit
//! `i` is the coefficient of `xⁱ`. As in the kernel, the tweak of the next block is the tweak of
//! this one XOR `K2 ⊗ (I ⊕ (I + 1))` (a table of 128 products), so only the sector's first
//! tweak needs a full multiplication.
//!
//! The block cipher comes from its crate (`aes`…, through [`BlockCipher`]); only the field
//! multiplication and the tweak chaining are here.

use super::SectorCipher;
use super::block::{BlockCipher, CipherKind};
use super::cbc::IvScheme;
use std::fmt;

/// Bytes handled per batched pass.
const BATCH_BYTES: usize = 32 * 1024;

/// Multiply in GF(2¹²⁸) with the kernel's `gf128mul_bbe` representation (bit `i` of the
/// big-endian integer is the coefficient of `xⁱ`). Branch-free on the operands.
pub fn gf128_mul_bbe(a: u128, b: u128) -> u128 {
    let (mut a, mut b, mut r) = (a, b, 0u128);
    for _ in 0..128 {
        r ^= a & 0u128.wrapping_sub(b & 1);
        b >>= 1;
        a = (a << 1) ^ (0x87 & 0u128.wrapping_sub(a >> 127));
    }
    r
}

/// LRW over sectors of `sector_bytes` (512 unless LUKS2 says otherwise).
#[derive(Clone)]
pub struct LrwSectors {
    cipher: BlockCipher,
    /// `K2 ⊗ I` for the first block: needs `K2`.
    k2: u128,
    /// `mulinc[k] = K2 ⊗ (2^(k+1) − 1)`: the tweak change when the index's `k` low bits are
    /// all ones and it is incremented.
    mulinc: Box<[u128; 128]>,
    iv: IvScheme,
    sector_bytes: usize,
    key_bits: u32,
}

impl fmt::Debug for LrwSectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LrwSectors({}-{}-lrw-{}, sector {})", self.cipher.kind(), self.key_bits, self.iv, self.sector_bytes)
    }
}

impl Drop for LrwSectors {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.k2);
        zeroize::Zeroize::zeroize(&mut self.mulinc[..]);
    }
}

impl LrwSectors {
    /// LRW of the 128-bit block cipher `kind`: `key` is the cipher key followed by the 16-byte
    /// tweak key (dm-crypt's split: `aes-lrw-plain64` with a 256-bit volume key is AES-128 plus
    /// the tweak key). IV scheme `plain64`, `plain` or `benbi`.
    ///
    /// # Errors
    /// `InvalidInput` for an 8-byte-block cipher, a key length the cipher does not take after
    /// the tweak key, or a sector size that is not 512·2ⁿ up to 4096; `Unsupported` for another
    /// IV scheme.
    pub fn with_cipher(kind: CipherKind, iv: IvScheme, key: &[u8], sector_bytes: usize) -> crate::Result<Self> {
        if kind.block_bytes() != 16 {
            return Err(crate::Error::invalid(format!("LRW needs a 128-bit block cipher, not {kind}")));
        }
        if !matches!(iv, IvScheme::Plain | IvScheme::Plain64 | IvScheme::Benbi) {
            return Err(crate::Error::unsupported(format!(
                "{kind}-lrw-{iv} (LRW runs with plain, plain64 or benbi IVs)"
            )));
        }
        if key.len() <= 16 || !kind.key_len_ok(key.len() - 16) {
            return Err(crate::Error::invalid(format!(
                "{kind}-lrw key of {} bytes (a {kind} key followed by a 16-byte tweak key)",
                key.len()
            )));
        }
        if !matches!(sector_bytes, 512 | 1024 | 2048 | 4096) {
            return Err(crate::Error::invalid(format!(
                "LRW sector size {sector_bytes} (need 512, 1024, 2048 or 4096)"
            )));
        }
        let (k1, tweak_key) = key.split_at(key.len() - 16);
        let mut k2b = [0u8; 16];
        k2b.copy_from_slice(tweak_key);
        let k2 = u128::from_be_bytes(k2b);
        zeroize::Zeroize::zeroize(&mut k2b);
        let mut mulinc = Box::new([0u128; 128]);
        let mut ones = 0u128;
        for (k, m) in mulinc.iter_mut().enumerate() {
            ones |= 1u128 << k;
            *m = gf128_mul_bbe(k2, ones);
        }
        Ok(LrwSectors {
            cipher: BlockCipher::new(kind, k1)?,
            k2,
            mulinc,
            iv,
            sector_bytes,
            key_bits: (k1.len() * 8) as u32,
        })
    }

    /// Cipher key size in bits (the LRW key is 128 bits longer).
    pub fn key_bits(&self) -> u32 {
        self.key_bits
    }

    /// The tweaks of the blocks of one sector whose first block has index `index`, written
    /// into `out` (a multiple of 16 bytes).
    fn sector_tweaks(&self, mut index: u128, out: &mut [u8]) {
        let mut t = gf128_mul_bbe(self.k2, index);
        for tb in out.as_chunks_mut::<16>().0 {
            *tb = t.to_be_bytes();
            // I ⊕ (I + 1) has trailing_ones(I) + 1 low bits set (all 128 when I wraps).
            let k = (index.trailing_ones() as usize).min(127);
            t ^= self.mulinc[k];
            index = index.wrapping_add(1);
        }
    }

    fn run(&self, iv_sector: u64, data: &mut [u8], encrypt: bool) {
        let ss = self.sector_bytes;
        let iv_step = (ss / 512) as u64;
        let mut tweaks = [0u8; BATCH_BYTES];
        let mut iv = iv_sector;
        let whole = data.len() - data.len() % ss;
        for batch in data[..whole].chunks_mut(BATCH_BYTES) {
            let tw = &mut tweaks[..batch.len()];
            for sector_tw in tw.chunks_exact_mut(ss) {
                let index = u128::from_be_bytes(self.iv.iv(iv));
                self.sector_tweaks(index, sector_tw);
                iv = iv.wrapping_add(iv_step);
            }
            xor_in_place(batch, tw);
            if encrypt {
                self.cipher.encrypt_blocks(batch);
            } else {
                self.cipher.decrypt_blocks(batch);
            }
            xor_in_place(batch, tw);
        }
        zeroize::Zeroize::zeroize(&mut tweaks[..]);
    }
}

#[inline]
fn xor_in_place(a: &mut [u8], b: &[u8]) {
    for (x, y) in a.as_chunks_mut::<16>().0.iter_mut().zip(b.as_chunks::<16>().0) {
        *x = (u128::from_ne_bytes(*x) ^ u128::from_ne_bytes(*y)).to_ne_bytes();
    }
}

impl SectorCipher for LrwSectors {
    fn decrypt_sectors(&self, iv_sector: u64, data: &mut [u8]) {
        self.run(iv_sector, data, false);
    }
    fn encrypt_sectors(&self, iv_sector: u64, data: &mut [u8]) {
        self.run(iv_sector, data, true);
    }
    fn dm_name(&self) -> String {
        format!("{}-lrw-{}", self.cipher.kind(), self.iv)
    }
    fn sector_bytes(&self) -> usize {
        self.sector_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }
    fn b16(s: &str) -> [u8; 16] {
        h(s).try_into().unwrap()
    }

    /// The single-block LRW-AES-128 vectors of IEEE P1619/D4 (Cyril Guyot's
    /// grouper.ieee.org/groups/1619/email/pdf00017.pdf, the source the kernel's `lrw.c` names),
    /// as libtomcrypt's `src/modes/lrw/lrw_test.c` lists them: key K1, tweak key K2, index I,
    /// plaintext, the tweak `K2 ⊗ I`, ciphertext. Those are written in GCM bit order (the first
    /// bit of byte 0 is x⁰); the kernel's bbe order is the same field with every 128-bit string
    /// bit-reversed, so the products are checked through `reverse_bits`, and the block through
    /// `C = E_K1(P ⊕ T) ⊕ T` with the listed tweak.
    #[test]
    fn ieee_p1619_d4_vectors() {
        let rows = [
            (
                "4562ac25f828176d4c268414b5680185",
                "258e2a05e73e9d03ee5a830ccc094c87",
                "80000000000000000000000000000000",
                "258e2a05e73e9d03ee5a830ccc094c87",
                "f1b273cd65a3df5fe95d489254634eb8",
            ),
            (
                "59704714f557478cd779e80f54887944",
                "3523c2dec5694fa872a9aca70b2beebc",
                "40000000000000000000000000000000",
                "1a91e16f62b4a7d43954d6538595f75e",
                "00c82bae95bbcde5274f0769b260e136",
            ),
            (
                "59704714f557478cd779e80f54887944",
                "6753c90cb7d8cde506a047781aad8511",
                "00000000000000000000000000000002",
                "1a91e16f62b4a7d43954d6538595f75e",
                "00c82bae95bbcde5274f0769b260e136",
            ),
            (
                "d82a9134b26a565030fe69e2377f9847",
                "4eb55d3105973a3f5e23dafb5a45d6c0",
                "00000000000000000000000200000000",
                "18c91f6d601a1a375d0b0ef73ad574c4",
                "76322183ed8ff182f9596203690e5e01",
            ),
        ];
        let plain = b16("30313233343536373839414243444546");
        for (k1, k2, i, t, c) in rows {
            let (k2, i, t) = (
                u128::from_be_bytes(b16(k2)).reverse_bits(),
                u128::from_be_bytes(b16(i)).reverse_bits(),
                u128::from_be_bytes(b16(t)).reverse_bits(),
            );
            assert_eq!(gf128_mul_bbe(k2, i), t, "tweak for key {k1}");
            // The whole mode: the kernel-order key is K1 ‖ K2 and the IV the bbe index.
            let mut key = h(k1);
            key.extend_from_slice(&k2.to_be_bytes());
            let lrw = LrwSectors::with_cipher(CipherKind::Aes, IvScheme::Plain64, &key, 512).unwrap();
            let mut tw = [0u8; 16];
            lrw.sector_tweaks(i, &mut tw);
            assert_eq!(u128::from_be_bytes(tw), t);
            // The listed ciphertext is E_K1(P ⊕ T) ⊕ T with the listed (GCM-order) bytes of T.
            let tg = t.reverse_bits().to_be_bytes();
            let mut b = plain;
            xor_in_place(&mut b, &tg);
            BlockCipher::new(CipherKind::Aes, &h(k1)).unwrap().encrypt_blocks(&mut b);
            xor_in_place(&mut b, &tg);
            assert_eq!(b.to_vec(), h(c), "ciphertext for key {k1}");
        }
    }

    /// The tweak chain (`T ⊕= mulinc[…]`) equals a full multiplication for every block, across
    /// carries out of many low bits and the 128-bit wrap.
    #[test]
    fn chained_tweaks_equal_products() {
        let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(5)).collect();
        let lrw = LrwSectors::with_cipher(CipherKind::Aes, IvScheme::Plain64, &key, 512).unwrap();
        for start in [0u128, 1, 0xff, (1u128 << 64) - 3, u128::MAX - 5, 0x0123_4567_89ab_cdef_u128 << 60] {
            let mut tw = [0u8; 512];
            lrw.sector_tweaks(start, &mut tw);
            for (j, t) in tw.as_chunks::<16>().0.iter().enumerate() {
                assert_eq!(
                    u128::from_be_bytes(*t),
                    gf128_mul_bbe(lrw.k2, start.wrapping_add(j as u128)),
                    "{start} {j}"
                );
            }
        }
    }

    #[test]
    fn roundtrip_and_key_rules() {
        let key = [7u8; 48];
        for iv in [IvScheme::Plain64, IvScheme::Plain, IvScheme::Benbi] {
            let l = LrwSectors::with_cipher(CipherKind::Aes, iv, &key, 512).unwrap();
            assert_eq!(l.key_bits(), 256);
            let orig: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
            let mut d = orig.clone();
            l.encrypt_sectors(99, &mut d);
            assert_ne!(d, orig);
            // Sector-by-sector equals the batch.
            let mut one = orig[512..1024].to_vec();
            l.encrypt_sectors(100, &mut one);
            assert_eq!(one, d[512..1024]);
            l.decrypt_sectors(99, &mut d);
            assert_eq!(d, orig);
        }
        assert!(LrwSectors::with_cipher(CipherKind::Aes, IvScheme::Plain64, &[1u8; 16], 512).is_err());
        assert!(LrwSectors::with_cipher(CipherKind::Aes, IvScheme::Plain64, &[1u8; 36], 512).is_err());
        assert!(LrwSectors::with_cipher(CipherKind::Blowfish, IvScheme::Plain64, &[1u8; 32], 512).is_err());
        assert!(LrwSectors::with_cipher(CipherKind::Aes, IvScheme::Null, &[1u8; 32], 512).is_err());
    }
}
