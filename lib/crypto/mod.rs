//! Shared crypto with no format knowledge: secret containers that wipe themselves, the
//! [`SectorCipher`] trait (decrypt/encrypt whole 512-byte sectors given the IV sector), sector
//! modes (CBC/ECB/XTS/LRW) over the block ciphers of [`block`], typed dm-crypt cipher specs
//! ([`spec`]), the legacy key derivations and the hash family.
//!
//! One primitive is our own: Twofish ([`twofish`], table-driven, checked against the paper's
//! known answers and the `twofish` crate) because the crate is ~100× too slow for whole images.
//! AES comes from `aes`, Serpent/Blowfish/CAST5/3DES from their RustCrypto crates, hashes from
//! `sha1`/`sha2`/`ripemd`/`md-5`/`whirlpool`. Only the chaining (CBC per sector, ESSIV, XTS
//! tweaks, LRW's GF(2¹²⁸) tweak products, loop-AES's MD5 IV) is composed here, on top of the
//! crates' batched block calls, because that is where the speed is.

pub mod block;
pub mod cbc;
pub mod hash;
pub mod kdf;
pub mod lmk;
pub mod lrw;
pub mod spec;
pub mod twofish;
pub mod xts;

use std::fmt;
use zeroize::{Zeroize, Zeroizing};

pub use hash::HashAlg;

/// Key material; wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Zeroizing<Vec<u8>>);

impl Key {
    /// Take ownership of key bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Key(Zeroizing::new(bytes))
    }
    /// Copy key bytes.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Key(Zeroizing::new(bytes.to_vec()))
    }
    /// The raw bytes (handle with care).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True for an empty key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(<{} bytes redacted>)", self.0.len())
    }
}

/// A passphrase as raw bytes (old images may be Latin-1); wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Passphrase(Zeroizing<Vec<u8>>);

impl Passphrase {
    /// Take ownership of passphrase bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Passphrase(Zeroizing::new(bytes))
    }
    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
    /// The bytes up to the first NUL, as C code using `strlen` saw them.
    pub fn c_str(&self) -> &[u8] {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        &self.0[..end]
    }
    /// Parse the contents of a passphrase file or fd: the first line, without its newline.
    pub fn from_file_contents(mut contents: Vec<u8>) -> Self {
        if let Some(nl) = contents.iter().position(|&b| b == b'\n') {
            contents[nl..].zeroize();
            contents.truncate(nl);
        }
        Passphrase::new(contents)
    }
    /// Read a passphrase source (file, fd, stdin): at most [`PASSPHRASE_SOURCE_MAX_BYTES`],
    /// of which the first line is the passphrase. `what` names the source in errors.
    ///
    /// # Errors
    /// `Io` naming `what`.
    pub fn read_bounded(r: impl std::io::Read, what: &str) -> crate::Result<Self> {
        use std::io::Read;
        // Sized once for the most read: a growing Vec frees copies without zeroizing them.
        let mut buf = Zeroizing::new(Vec::with_capacity(PASSPHRASE_SOURCE_MAX_BYTES as usize));
        r.take(PASSPHRASE_SOURCE_MAX_BYTES)
            .read_to_end(&mut buf)
            .map_err(|e| crate::Error::io(format!("cannot read the passphrase from {what}"), e))?;
        Ok(Passphrase::from_file_contents(std::mem::take(&mut *buf)))
    }
}

/// Largest passphrase source read (only its first line is used).
pub const PASSPHRASE_SOURCE_MAX_BYTES: u64 = 64 * 1024;

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Decrypts/encrypts whole 512-byte sectors. The caller passes the **IV sector** of the first
/// sector in `data` (never a byte offset: legacy formats disagree about offsets); sector `i`
/// of `data` uses IV sector `iv_sector + i`. IV scheme and multi-key choice hide behind this.
pub trait SectorCipher: Send + Sync {
    /// Decrypt `data` (a multiple of 512 bytes) in place.
    fn decrypt_sectors(&self, iv_sector: u64, data: &mut [u8]);
    /// Encrypt `data` (a multiple of 512 bytes) in place.
    fn encrypt_sectors(&self, iv_sector: u64, data: &mut [u8]);
    /// [`SectorCipher::decrypt_sectors`] from `src` into `dst` (the same length; a partial
    /// sector at the end is copied as it is, as the in-place call leaves it). Implementations
    /// may skip the copy of `src` into `dst` that the default does first.
    fn decrypt_sectors_to(&self, iv_sector: u64, src: &[u8], dst: &mut [u8]) {
        dst.copy_from_slice(src);
        self.decrypt_sectors(iv_sector, dst);
    }
    /// [`SectorCipher::encrypt_sectors`] from `src` into `dst` (the same length), like
    /// [`SectorCipher::decrypt_sectors_to`].
    fn encrypt_sectors_to(&self, iv_sector: u64, src: &[u8], dst: &mut [u8]) {
        dst.copy_from_slice(src);
        self.encrypt_sectors(iv_sector, dst);
    }
    /// Decrypt one all-zero ciphertext sector (a hole in a sparse image) into `out`.
    /// Implementations may make this much cheaper than a full decryption.
    fn decrypt_zero_sector(&self, iv_sector: u64, out: &mut [u8; 512]) {
        out.fill(0);
        self.decrypt_sectors(iv_sector, out);
    }
    /// The dm-crypt spelling, e.g. `aes-cbc-plain`.
    fn dm_name(&self) -> String;
    /// The encryption unit in bytes (512 for every legacy mode; LUKS2 may use up to 4096).
    /// `data` passed to the methods above is a multiple of it, and `iv_sector` still counts
    /// 512-byte units.
    fn sector_bytes(&self) -> usize {
        512
    }
}

/// The identity "cipher" for unencrypted images.
#[derive(Debug, Clone, Copy, Default)]
pub struct NullCipher;

impl SectorCipher for NullCipher {
    fn decrypt_sectors(&self, _iv_sector: u64, _data: &mut [u8]) {}
    fn encrypt_sectors(&self, _iv_sector: u64, _data: &mut [u8]) {}
    fn decrypt_zero_sector(&self, _iv_sector: u64, out: &mut [u8; 512]) {
        out.fill(0);
    }
    fn dm_name(&self) -> String {
        "cipher_null-ecb".into()
    }
}

/// AES with any of the three key sizes, dispatched at run time.
#[derive(Clone)]
pub enum Aes {
    /// AES-128.
    A128(aes::Aes128),
    /// AES-192.
    A192(aes::Aes192),
    /// AES-256.
    A256(aes::Aes256),
}

impl fmt::Debug for Aes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Aes{}(<key schedule redacted>)", self.key_bits())
    }
}

impl Aes {
    /// Build from a 16/24/32-byte key.
    ///
    /// # Errors
    /// `InvalidInput` for any other key length.
    pub fn new(key: &[u8]) -> crate::Result<Self> {
        use aes::cipher::KeyInit;
        let bad = |_| crate::Error::invalid(format!("AES key of {} bytes (need 16, 24 or 32)", key.len()));
        Ok(match key.len() {
            16 => Aes::A128(aes::Aes128::new_from_slice(key).map_err(bad)?),
            24 => Aes::A192(aes::Aes192::new_from_slice(key).map_err(bad)?),
            32 => Aes::A256(aes::Aes256::new_from_slice(key).map_err(bad)?),
            n => {
                return Err(crate::Error::invalid(format!("AES key of {n} bytes (need 16, 24 or 32)")));
            }
        })
    }
    /// 128, 192 or 256.
    pub fn key_bits(&self) -> u32 {
        match self {
            Aes::A128(_) => 128,
            Aes::A192(_) => 192,
            Aes::A256(_) => 256,
        }
    }
    /// Decrypt 16-byte blocks in place (ECB), batched for speed.
    pub fn decrypt_blocks(&self, blocks: &mut [aes::Block]) {
        use aes::cipher::BlockCipherDecrypt;
        match self {
            Aes::A128(c) => c.decrypt_blocks(blocks),
            Aes::A192(c) => c.decrypt_blocks(blocks),
            Aes::A256(c) => c.decrypt_blocks(blocks),
        }
    }
    /// Decrypt 16-byte blocks from `src` into `dst` (ECB, the same number of blocks), batched;
    /// nothing is written if the lengths differ (a caller bug, checked by the callers).
    pub fn decrypt_blocks_to(&self, src: &[aes::Block], dst: &mut [aes::Block]) {
        use aes::cipher::BlockCipherDecrypt;
        let _ = match self {
            Aes::A128(c) => c.decrypt_blocks_b2b(src, dst),
            Aes::A192(c) => c.decrypt_blocks_b2b(src, dst),
            Aes::A256(c) => c.decrypt_blocks_b2b(src, dst),
        };
    }
    /// Encrypt 16-byte blocks in place (ECB), batched for speed.
    pub fn encrypt_blocks(&self, blocks: &mut [aes::Block]) {
        use aes::cipher::BlockCipherEncrypt;
        match self {
            Aes::A128(c) => c.encrypt_blocks(blocks),
            Aes::A192(c) => c.encrypt_blocks(blocks),
            Aes::A256(c) => c.encrypt_blocks(blocks),
        }
    }
    /// Encrypt one block in place.
    pub fn encrypt_block(&self, block: &mut aes::Block) {
        self.encrypt_blocks(std::slice::from_mut(block));
    }
}

/// View a byte slice whose length is a multiple of 16 as AES blocks.
pub(crate) fn as_blocks(data: &mut [u8]) -> &mut [aes::Block] {
    let (blocks, rest) = aes::Block::slice_as_chunks_mut(data);
    debug_assert!(rest.is_empty(), "BUG: data not a multiple of 16 bytes");
    blocks
}
