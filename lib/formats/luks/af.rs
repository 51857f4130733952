//! The LUKS anti-forensic splitter (LUKS1 spec §2.4, cryptsetup `lib/luks1/af.c`): a key of `n`
//! bytes becomes `stripes` blocks of `n` bytes, all of which are needed to get it back, so
//! overwriting any part of a keyslot area destroys the key.
//!
//! `diffuse` hashes block `i` of the buffer as `H(BE32(i) ‖ block)` truncated to the block's
//! length (the last block may be shorter than the digest): the "H1" form cryptsetup has used
//! since 2005. The same code serves LUKS1 and LUKS2 (`af.type = "luks1"`).

use crate::crypto::HashAlg;
use zeroize::Zeroizing;

/// Stripes every LUKS implementation uses (`LUKS_STRIPES`); cryptsetup accepts no other value.
pub const STRIPES: usize = 4000;

/// Diffuse `buf` in place with `h`.
fn diffuse(h: HashAlg, buf: &mut [u8]) {
    let ds = h.digest_len();
    for (i, blk) in buf.chunks_mut(ds).enumerate() {
        let d = h.digest(&[&(i as u32).to_be_bytes(), blk]);
        let n = blk.len();
        blk.copy_from_slice(&d[..n]);
    }
}

/// Split `key` into `stripes` stripes (`key.len() * stripes` bytes) using random stripes from
/// the OS.
///
/// # Errors
/// `Io` if the OS random generator fails.
pub fn split(key: &[u8], stripes: usize, h: HashAlg) -> crate::Result<Zeroizing<Vec<u8>>> {
    let n = key.len();
    let mut out = Zeroizing::new(vec![0u8; n * stripes]);
    crate::formats::luks::random_fill(&mut out[..n * (stripes - 1)])?;
    let mut d = Zeroizing::new(vec![0u8; n]);
    for s in out[..n * (stripes - 1)].chunks_exact(n) {
        xor(&mut d, s);
        diffuse(h, &mut d);
    }
    let last = &mut out[n * (stripes - 1)..];
    last.copy_from_slice(&d);
    xor(last, key);
    Ok(out)
}

/// Recover a `key_len`-byte key from `stripes` stripes in `material` (which must hold at least
/// `key_len * stripes` bytes).
///
/// # Errors
/// `Corrupt` if `material` is too short.
pub fn merge(material: &[u8], key_len: usize, stripes: usize, h: HashAlg) -> crate::Result<Zeroizing<Vec<u8>>> {
    if stripes == 0 || material.len() < key_len * stripes {
        return Err(crate::Error::corrupt(format!(
            "keyslot material of {} bytes cannot hold {stripes} stripes of {key_len} bytes",
            material.len()
        )));
    }
    let mut d = Zeroizing::new(vec![0u8; key_len]);
    for s in material[..key_len * (stripes - 1)].chunks_exact(key_len) {
        xor(&mut d, s);
        diffuse(h, &mut d);
    }
    xor(&mut d, &material[key_len * (stripes - 1)..key_len * stripes]);
    Ok(d)
}

fn xor(a: &mut [u8], b: &[u8]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= *y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_merge_roundtrip_every_hash_and_length() {
        for h in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha512] {
            for len in [16usize, 32, 33, 64] {
                let key: Vec<u8> = (0..len as u8).collect();
                let m = split(&key, 40, h).unwrap();
                assert_eq!(m.len(), len * 40);
                assert_eq!(&merge(&m, len, 40, h).unwrap()[..], &key[..]);
                let mut bad = m.clone();
                bad[3] ^= 1;
                assert_ne!(&merge(&bad, len, 40, h).unwrap()[..], &key[..]);
            }
        }
        assert!(merge(&[0u8; 10], 32, 4000, HashAlg::Sha256).is_err());
    }

    /// Diffusion truncates the last, shorter block (a 33-byte key with SHA-256).
    #[test]
    fn diffuse_short_last_block() {
        let mut b = [7u8; 33];
        diffuse(HashAlg::Sha256, &mut b);
        let d1 = HashAlg::Sha256.digest(&[&1u32.to_be_bytes(), &[7u8]]);
        assert_eq!(b[32], d1[0]);
    }
}
