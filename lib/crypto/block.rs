//! The block ciphers legacy images and old LUKS volumes used, as one run-time-dispatched type:
//! [`CipherKind`] (the typed name: `aes`, `twofish`, `serpent`, `blowfish`, `cast5`,
//! `des3_ede`) and [`BlockCipher`] (a keyed instance). Twofish is our table-driven
//! [`super::twofish::Twofish`] (the `twofish` crate, ~100× slower, is its reference in tests);
//! every other primitive comes from a RustCrypto crate of the same generation as `aes` 0.9
//! (cipher 0.5): `serpent` 0.6, `blowfish` 0.10, `cast5` 0.12, `des` 0.9.
//!
//! Key lengths follow the Linux kernel's crypto modules (what dm-crypt and cryptoloop accept),
//! narrowed to what the crates implement: aes and twofish 16/24/32 bytes; serpent 16..=32
//! (shorter keys are padded with one 1 bit as the Serpent specification says — the kernel
//! does the same); blowfish 4..=56; cast5 5..=16; des3_ede 24. See
//! `docs/formats/legacy-ciphers.md`.

use super::Aes;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, BlockSizeUser, KeyInit};
use std::fmt;
use std::str::FromStr;

/// A block cipher by name (kernel crypto API spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CipherKind {
    /// AES (Rijndael, 128-bit block).
    Aes,
    /// Twofish (128-bit block): SUSE's default, loop-AES `loop_twofish`.
    Twofish,
    /// Serpent (128-bit block): loop-AES `loop_serpent`, some LUKS volumes.
    Serpent,
    /// Blowfish (64-bit block, big-endian as the kernel's `blowfish`).
    Blowfish,
    /// CAST-128 (64-bit block), kernel `cast5`.
    Cast5,
    /// Triple DES EDE with a 24-byte key (64-bit block), kernel `des3_ede`.
    Des3Ede,
}

impl CipherKind {
    /// Every cipher, in detection order (most common in the era first).
    pub const ALL: [CipherKind; 6] = [
        CipherKind::Aes,
        CipherKind::Twofish,
        CipherKind::Serpent,
        CipherKind::Blowfish,
        CipherKind::Cast5,
        CipherKind::Des3Ede,
    ];

    /// The kernel / dm-crypt name.
    pub fn name(self) -> &'static str {
        match self {
            CipherKind::Aes => "aes",
            CipherKind::Twofish => "twofish",
            CipherKind::Serpent => "serpent",
            CipherKind::Blowfish => "blowfish",
            CipherKind::Cast5 => "cast5",
            CipherKind::Des3Ede => "des3_ede",
        }
    }

    /// Block size in bytes (16 or 8).
    pub fn block_bytes(self) -> usize {
        match self {
            CipherKind::Aes | CipherKind::Twofish | CipherKind::Serpent => 16,
            CipherKind::Blowfish | CipherKind::Cast5 | CipherKind::Des3Ede => 8,
        }
    }

    /// True when a key of `n` bytes is accepted (kernel rules ∩ crate rules).
    pub fn key_len_ok(self, n: usize) -> bool {
        match self {
            CipherKind::Aes | CipherKind::Twofish => matches!(n, 16 | 24 | 32),
            CipherKind::Serpent => (16..=32).contains(&n),
            CipherKind::Blowfish => (4..=56).contains(&n),
            CipherKind::Cast5 => (5..=16).contains(&n),
            CipherKind::Des3Ede => n == 24,
        }
    }

    /// The key sizes (bits) detection tries for this cipher, most likely first.
    pub fn detect_key_bits(self) -> &'static [u32] {
        match self {
            CipherKind::Aes | CipherKind::Twofish | CipherKind::Serpent => &[256, 128, 192],
            CipherKind::Blowfish => &[256, 128, 192, 448],
            CipherKind::Cast5 => &[128],
            CipherKind::Des3Ede => &[192],
        }
    }
}

impl fmt::Display for CipherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CipherKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "aes" | "rijndael" => CipherKind::Aes,
            "twofish" => CipherKind::Twofish,
            "serpent" => CipherKind::Serpent,
            "blowfish" => CipherKind::Blowfish,
            "cast5" | "cast128" => CipherKind::Cast5,
            "des3_ede" | "3des" | "tripledes" | "des3" => CipherKind::Des3Ede,
            _ => {
                return Err(crate::Error::unsupported(format!(
                    "cipher {s:?} is not supported (aes, twofish, serpent, blowfish, cast5, des3_ede)"
                )));
            }
        })
    }
}

/// A keyed block cipher of any [`CipherKind`]. Key schedules are wiped on drop (the crates'
/// `zeroize` feature; our Twofish's own `Drop`).
#[derive(Clone)]
#[allow(clippy::large_enum_variant, reason = "AES, the hot path, stays inline; the rarer ciphers are boxed")]
pub enum BlockCipher {
    /// AES (fast path, shared with the AES-only code).
    Aes(Aes),
    /// Twofish.
    Twofish(Box<super::twofish::Twofish>),
    /// Serpent.
    Serpent(Box<serpent::Serpent>),
    /// Blowfish (big-endian, the standard and the kernel's).
    Blowfish(Box<blowfish::Blowfish>),
    /// CAST-128.
    Cast5(Box<cast5::Cast5>),
    /// 3DES-EDE.
    Des3Ede(Box<des::TdesEde3>),
}

impl fmt::Debug for BlockCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockCipher({}, <key schedule redacted>)", self.kind())
    }
}

fn chunks<C: BlockSizeUser>(data: &mut [u8]) -> &mut [aes::cipher::Block<C>] {
    let (blocks, rest) = aes::cipher::Block::<C>::slice_as_chunks_mut(data);
    debug_assert!(rest.is_empty(), "BUG: data not a multiple of the block size");
    blocks
}

impl BlockCipher {
    /// Key a cipher of `kind`.
    ///
    /// # Errors
    /// `InvalidInput` for a key length the cipher does not take.
    pub fn new(kind: CipherKind, key: &[u8]) -> crate::Result<Self> {
        if !kind.key_len_ok(key.len()) {
            return Err(crate::Error::invalid(format!("{kind} does not take a key of {} bytes", key.len())));
        }
        let bad = |_| crate::Error::invalid(format!("{kind} does not take a key of {} bytes", key.len()));
        Ok(match kind {
            CipherKind::Aes => BlockCipher::Aes(Aes::new(key)?),
            CipherKind::Twofish => BlockCipher::Twofish(Box::new(super::twofish::Twofish::new(key)?)),
            CipherKind::Serpent => BlockCipher::Serpent(Box::new(serpent::Serpent::new_from_slice(key).map_err(bad)?)),
            CipherKind::Blowfish => {
                BlockCipher::Blowfish(Box::new(blowfish::Blowfish::new_from_slice(key).map_err(bad)?))
            }
            CipherKind::Cast5 => BlockCipher::Cast5(Box::new(cast5::Cast5::new_from_slice(key).map_err(bad)?)),
            CipherKind::Des3Ede => BlockCipher::Des3Ede(Box::new(des::TdesEde3::new_from_slice(key).map_err(bad)?)),
        })
    }

    /// Which cipher.
    pub fn kind(&self) -> CipherKind {
        match self {
            BlockCipher::Aes(_) => CipherKind::Aes,
            BlockCipher::Twofish(_) => CipherKind::Twofish,
            BlockCipher::Serpent(_) => CipherKind::Serpent,
            BlockCipher::Blowfish(_) => CipherKind::Blowfish,
            BlockCipher::Cast5(_) => CipherKind::Cast5,
            BlockCipher::Des3Ede(_) => CipherKind::Des3Ede,
        }
    }

    /// Block size in bytes.
    pub fn block_bytes(&self) -> usize {
        self.kind().block_bytes()
    }

    /// Decrypt whole blocks in place (ECB), batched. `data.len()` must be a multiple of the
    /// block size (a trailing partial block is left alone).
    pub fn decrypt_blocks(&self, data: &mut [u8]) {
        let n = data.len() - data.len() % self.block_bytes();
        let data = &mut data[..n];
        match self {
            BlockCipher::Aes(c) => c.decrypt_blocks(super::as_blocks(data)),
            BlockCipher::Twofish(c) => c.decrypt_blocks(data),
            BlockCipher::Serpent(c) => c.decrypt_blocks(chunks::<serpent::Serpent>(data)),
            BlockCipher::Blowfish(c) => c.decrypt_blocks(chunks::<blowfish::Blowfish>(data)),
            BlockCipher::Cast5(c) => c.decrypt_blocks(chunks::<cast5::Cast5>(data)),
            BlockCipher::Des3Ede(c) => c.decrypt_blocks(chunks::<des::TdesEde3>(data)),
        }
    }

    /// Decrypt whole blocks of `src` into `dst` (ECB, batched; the lengths must be equal and a
    /// multiple of the block size). AES goes buffer to buffer; the other ciphers copy first.
    pub fn decrypt_blocks_to(&self, src: &[u8], dst: &mut [u8]) {
        let n = src.len().min(dst.len());
        let n = n - n % self.block_bytes();
        match self {
            BlockCipher::Aes(c) => {
                c.decrypt_blocks_to(aes::Block::slice_as_chunks(&src[..n]).0, super::as_blocks(&mut dst[..n]))
            }
            _ => {
                dst[..n].copy_from_slice(&src[..n]);
                self.decrypt_blocks(&mut dst[..n]);
            }
        }
    }

    /// Encrypt whole blocks in place (ECB), batched. Same length rule as
    /// [`BlockCipher::decrypt_blocks`].
    pub fn encrypt_blocks(&self, data: &mut [u8]) {
        let n = data.len() - data.len() % self.block_bytes();
        let data = &mut data[..n];
        match self {
            BlockCipher::Aes(c) => c.encrypt_blocks(super::as_blocks(data)),
            BlockCipher::Twofish(c) => c.encrypt_blocks(data),
            BlockCipher::Serpent(c) => c.encrypt_blocks(chunks::<serpent::Serpent>(data)),
            BlockCipher::Blowfish(c) => c.encrypt_blocks(chunks::<blowfish::Blowfish>(data)),
            BlockCipher::Cast5(c) => c.encrypt_blocks(chunks::<cast5::Cast5>(data)),
            BlockCipher::Des3Ede(c) => c.encrypt_blocks(chunks::<des::TdesEde3>(data)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hexv(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Published single-block vectors, one per cipher (sources in docs/formats/legacy-ciphers.md):
    /// each must encrypt to the expected ciphertext and decrypt back.
    #[test]
    fn published_vectors() {
        let cases: &[(CipherKind, &str, &str, &str)] = &[
            // FIPS-197 appendix C.3 (AES-256).
            (
                CipherKind::Aes,
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                "00112233445566778899aabbccddeeff",
                "8ea2b7ca516745bfeafc49904b496089",
            ),
            // Twofish paper / ecb_tbl.txt, KEYSIZE=128 I=1 (all-zero key and plaintext).
            (
                CipherKind::Twofish,
                "00000000000000000000000000000000",
                "00000000000000000000000000000000",
                "9f589f5cf6122c32b6bfec2f2ae8c35a",
            ),
            // Twofish ecb_tbl.txt KEYSIZE=256 I=1.
            (
                CipherKind::Twofish,
                "0000000000000000000000000000000000000000000000000000000000000000",
                "00000000000000000000000000000000",
                "57ff739d4dc92c1bd7fc01700cc8216f",
            ),
            // Serpent, NESSIE set 1 vector 0 (128-bit key 80 00.., plaintext zero).
            (
                CipherKind::Serpent,
                "80000000000000000000000000000000",
                "00000000000000000000000000000000",
                "264e5481eff42a4606abda06c0bfda3d",
            ),
            // Blowfish, Eric Young's vectors (key 0000000000000000, plaintext 0000000000000000).
            (CipherKind::Blowfish, "0000000000000000", "0000000000000000", "4ef997456198dd78"),
            // Blowfish, Eric Young's vectors (key FEDCBA9876543210, plaintext 0123456789ABCDEF).
            (CipherKind::Blowfish, "fedcba9876543210", "0123456789abcdef", "0aceab0fc6a0a28d"),
            // CAST-128, RFC 2144 appendix B.1 (128-bit key).
            (CipherKind::Cast5, "0123456712345678234567893456789a", "0123456789abcdef", "238b4fe5847e44b2"),
            // 3DES with K1=K2=K3: single DES FIPS 81-style vector (key 0123456789abcdef, "Now is t").
            (
                CipherKind::Des3Ede,
                "0123456789abcdef0123456789abcdef0123456789abcdef",
                "4e6f772069732074",
                "3fa40e8a984d4815",
            ),
        ];
        for (kind, key, pt, ct) in cases {
            let c = BlockCipher::new(*kind, &hexv(key)).unwrap();
            let mut b = hexv(pt);
            c.encrypt_blocks(&mut b);
            assert_eq!(b, hexv(ct), "{kind} encrypt");
            c.decrypt_blocks(&mut b);
            assert_eq!(b, hexv(pt), "{kind} decrypt");
        }
    }

    #[test]
    fn key_lengths_and_names() {
        assert!(BlockCipher::new(CipherKind::Twofish, &[0u8; 20]).is_err());
        assert!(BlockCipher::new(CipherKind::Cast5, &[0u8; 32]).is_err());
        assert!(BlockCipher::new(CipherKind::Des3Ede, &[0u8; 16]).is_err());
        assert!(BlockCipher::new(CipherKind::Blowfish, &[0u8; 56]).is_ok());
        for k in CipherKind::ALL {
            assert_eq!(k.name().parse::<CipherKind>().unwrap(), k);
        }
        assert!("idea".parse::<CipherKind>().is_err());
    }
}
