//! LUKS keyslots: passphrase → slot key (PBKDF2 or Argon2), slot key → encrypted, AF-split
//! volume key in the keyslot area, and the volume-key digest that says whether a candidate key
//! is right (LUKS1 spec §2.4–2.5, LUKS2 spec §3.2–3.4, cryptsetup `luks2_keyslot_luks2.c`).
//!
//! The area is encrypted like a tiny payload: 512-byte sectors, IV sector 0 at the start of the
//! area, with the area's own cipher (LUKS1: the payload cipher; LUKS2: `area.encryption`).
//! Argon2 comes from the `argon2` crate (v0x13, no secret, no associated data), PBKDF2 from
//! `pbkdf2` + `hmac`. Digest comparisons are constant-time (`subtle`).

use super::af;
use crate::crypto::{HashAlg, Key, SectorCipher};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Largest Argon2 memory cost accepted, in KiB (cryptsetup's limit, 4 GiB).
pub const ARGON2_MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
/// Smallest Argon2 memory cost cryptsetup accepts, in KiB.
pub const ARGON2_MIN_MEMORY_KIB: u32 = 32;
/// Most Argon2 lanes cryptsetup uses.
pub const ARGON2_MAX_CPUS: u32 = 4;
/// Smallest PBKDF2 iteration count cryptsetup accepts when creating a keyslot or digest.
pub const PBKDF2_MIN_ITERATIONS: u32 = 1000;

/// Argon2 flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argon2Variant {
    /// Argon2i (`argon2i`).
    I,
    /// Argon2id (`argon2id`), cryptsetup's default since 2.4.
    Id,
}

/// A keyslot's key derivation.
#[derive(Clone, PartialEq, Eq)]
pub enum Kdf {
    /// PBKDF2-HMAC.
    Pbkdf2 {
        /// The HMAC hash.
        hash: HashAlg,
        /// Iterations.
        iterations: u32,
    },
    /// Argon2 version 0x13.
    Argon2 {
        /// i or id.
        variant: Argon2Variant,
        /// Passes (`time`).
        time: u32,
        /// Memory in KiB (`memory`).
        memory_kib: u32,
        /// Lanes (`cpus`).
        cpus: u32,
    },
}

impl fmt::Debug for Kdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Kdf {
    /// LUKS2 `kdf.type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Kdf::Pbkdf2 { .. } => "pbkdf2",
            Kdf::Argon2 { variant: Argon2Variant::I, .. } => "argon2i",
            Kdf::Argon2 { variant: Argon2Variant::Id, .. } => "argon2id",
        }
    }

    /// Human summary, e.g. `argon2id (time 4, memory 1048576 KiB, 4 cpus)`.
    pub fn describe(&self) -> String {
        match self {
            Kdf::Pbkdf2 { hash, iterations } => format!("pbkdf2-{} ({iterations} iterations)", hash.cryptsetup_name()),
            Kdf::Argon2 { time, memory_kib, cpus, .. } => {
                format!("{} (time {time}, memory {memory_kib} KiB, {cpus} cpus)", self.type_name())
            }
        }
    }

    /// Refuse parameters that are out of range or would allocate absurd amounts of memory.
    ///
    /// # Errors
    /// `Corrupt` (they come from a header) with what is wrong.
    pub fn check(&self) -> crate::Result<()> {
        match *self {
            Kdf::Pbkdf2 { iterations: 0, .. } => Err(crate::Error::corrupt("keyslot pbkdf2 iterations is 0")),
            Kdf::Argon2 { time, memory_kib, cpus, .. } => {
                if time == 0 {
                    return Err(crate::Error::corrupt("keyslot argon2 time is 0"));
                }
                if !(1..=0x00ff_ffff).contains(&cpus) {
                    return Err(crate::Error::corrupt(format!("keyslot argon2 cpus {cpus} is out of range")));
                }
                if !(ARGON2_MIN_MEMORY_KIB..=ARGON2_MAX_MEMORY_KIB).contains(&memory_kib) || memory_kib < 8 * cpus {
                    return Err(crate::Error::corrupt(format!(
                        "keyslot argon2 memory {memory_kib} KiB is outside {ARGON2_MIN_MEMORY_KIB}..{ARGON2_MAX_MEMORY_KIB} KiB \
                         (or below 8 KiB per lane)"
                    )));
                }
                Ok(())
            }
            Kdf::Pbkdf2 { .. } => Ok(()),
        }
    }

    /// Derive `out_len` bytes from `pass` and `salt`.
    ///
    /// # Errors
    /// `Corrupt` for parameters that fail [`Kdf::check`]; `Io` if Argon2 cannot allocate.
    pub fn derive(&self, pass: &[u8], salt: &[u8], out_len: usize) -> crate::Result<Key> {
        self.check()?;
        let mut out = Zeroizing::new(vec![0u8; out_len]);
        match *self {
            Kdf::Pbkdf2 { hash, iterations } => pbkdf2(hash, pass, salt, iterations, &mut out),
            Kdf::Argon2 { variant, time, memory_kib, cpus } => {
                let alg = match variant {
                    Argon2Variant::I => argon2::Algorithm::Argon2i,
                    Argon2Variant::Id => argon2::Algorithm::Argon2id,
                };
                let params = argon2::Params::new(memory_kib, time, cpus, Some(out_len))
                    .map_err(|e| crate::Error::corrupt(format!("argon2 parameters rejected: {e}")))?;
                argon2::Argon2::new(alg, argon2::Version::V0x13, params)
                    .hash_password_into(pass, salt, &mut out)
                    .map_err(|e| crate::Error::new(crate::ErrorKind::Io, format!("argon2 failed: {e}")))?;
            }
        }
        Ok(Key::new(std::mem::take(&mut *out)))
    }
}

/// PBKDF2-HMAC with a runtime-chosen hash.
pub fn pbkdf2(hash: HashAlg, pass: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    use pbkdf2::pbkdf2_hmac as p;
    match hash {
        HashAlg::Ripemd160 => p::<ripemd::Ripemd160>(pass, salt, iterations, out),
        HashAlg::Sha1 => p::<sha1::Sha1>(pass, salt, iterations, out),
        HashAlg::Sha256 => p::<sha2::Sha256>(pass, salt, iterations, out),
        HashAlg::Sha384 => p::<sha2::Sha384>(pass, salt, iterations, out),
        HashAlg::Sha512 => p::<sha2::Sha512>(pass, salt, iterations, out),
    }
}

/// Bytes of keyslot material actually used: `key_len × stripes`, rounded up to whole sectors.
pub fn material_bytes(key_len: usize, stripes: usize) -> usize {
    (key_len * stripes).div_ceil(512) * 512
}

/// Recover the volume key candidate from encrypted keyslot `material` with `area_cipher`
/// (already keyed with the slot key) and the AF hash.
///
/// # Errors
/// `Corrupt` when the material is too short.
pub fn open_material(
    mut material: Zeroizing<Vec<u8>>,
    area_cipher: &dyn SectorCipher,
    key_len: usize,
    stripes: usize,
    af_hash: HashAlg,
) -> crate::Result<Key> {
    let n = material.len() - material.len() % area_cipher.sector_bytes();
    area_cipher.decrypt_sectors(0, &mut material[..n]);
    let mut vk = af::merge(&material, key_len, stripes, af_hash)?;
    Ok(Key::new(std::mem::take(&mut *vk)))
}

/// AF-split `vk` and encrypt it for a keyslot area with `area_cipher` (keyed with the slot key).
///
/// # Errors
/// `Io` if the OS random generator fails.
pub fn seal_material(vk: &Key, area_cipher: &dyn SectorCipher, af_hash: HashAlg) -> crate::Result<Zeroizing<Vec<u8>>> {
    let mut m = af::split(vk.bytes(), af::STRIPES, af_hash)?;
    m.resize(material_bytes(vk.len(), af::STRIPES), 0);
    area_cipher.encrypt_sectors(0, &mut m);
    Ok(m)
}

/// Constant-time check of a PBKDF2 volume-key digest (LUKS1 `mk-digest`, LUKS2 `digests.N`).
pub fn digest_matches(vk: &Key, hash: HashAlg, salt: &[u8], iterations: u32, expected: &[u8]) -> bool {
    if iterations == 0 || expected.is_empty() || expected.len() > 64 {
        return false;
    }
    let mut got = Zeroizing::new(vec![0u8; expected.len()]);
    pbkdf2(hash, vk.bytes(), salt, iterations, &mut got);
    bool::from(got.ct_eq(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6070 PBKDF2-HMAC-SHA1 vector; RFC 7914 §11 PBKDF2-HMAC-SHA256 vector.
    #[test]
    fn pbkdf2_vectors() {
        let mut o = [0u8; 20];
        pbkdf2(HashAlg::Sha1, b"password", b"salt", 2, &mut o);
        assert_eq!(hex(&o), "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
        let mut o = [0u8; 64];
        pbkdf2(HashAlg::Sha256, b"passwd", b"salt", 1, &mut o);
        assert_eq!(&hex(&o)[..32], "55ac046e56e3089fec1691c22544b605");
    }

    /// RFC 9106 §5.3 Argon2id test vector needs secret/AD; check the no-secret form against
    /// itself across variants instead, and the parameter guards.
    #[test]
    fn argon2_guards() {
        let k = Kdf::Argon2 { variant: Argon2Variant::Id, time: 1, memory_kib: 64, cpus: 1 };
        let a = k.derive(b"pw", &[1u8; 32], 64).unwrap();
        let b = Kdf::Argon2 { variant: Argon2Variant::I, time: 1, memory_kib: 64, cpus: 1 }
            .derive(b"pw", &[1u8; 32], 64)
            .unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        let huge = Kdf::Argon2 { variant: Argon2Variant::Id, time: 1, memory_kib: u32::MAX, cpus: 1 };
        assert_eq!(huge.derive(b"pw", &[0; 32], 32).unwrap_err().kind(), crate::ErrorKind::Corrupt);
        let zero = Kdf::Pbkdf2 { hash: HashAlg::Sha256, iterations: 0 };
        assert!(zero.derive(b"pw", &[0; 32], 32).is_err());
    }

    #[test]
    fn seal_open_roundtrip() {
        let vk = Key::new((0..64u8).collect());
        let area = crate::crypto::xts::XtsSectors::new(&[9u8; 64], 512).unwrap();
        let m = seal_material(&vk, &area, HashAlg::Sha256).unwrap();
        assert_eq!(m.len(), 256000);
        let back = open_material(m, &area, 64, af::STRIPES, HashAlg::Sha256).unwrap();
        assert_eq!(back, vk);
        let mut d = [0u8; 32];
        pbkdf2(HashAlg::Sha256, vk.bytes(), b"s", 1000, &mut d);
        assert!(digest_matches(&vk, HashAlg::Sha256, b"s", 1000, &d));
        assert!(digest_matches(&vk, HashAlg::Sha256, b"s", 1000, &d[..20]));
        assert!(!digest_matches(&vk, HashAlg::Sha256, b"t", 1000, &d));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
