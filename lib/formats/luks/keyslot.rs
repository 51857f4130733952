//! LUKS keyslots: passphrase → slot key (PBKDF2 or Argon2), slot key → encrypted, AF-split
//! volume key in the keyslot area, and the volume-key digest that says whether a candidate key
//! is right (LUKS1 spec §2.4–2.5, LUKS2 spec §3.2–3.4, cryptsetup `luks2_keyslot_luks2.c`).
//!
//! The area is encrypted like a tiny payload: 512-byte sectors, IV sector 0 at the start of the
//! area, with the area's own cipher (LUKS1: the payload cipher; LUKS2: `area.encryption`).
//! Argon2 comes from the `argon2` crate (v0x13, no secret, no associated data), PBKDF2 from
//! `pbkdf2`; both run on a helper thread that can be abandoned on Ctrl-C when the parameters come
//! from a header (capped by [`KdfPolicy`]). Digest comparisons are constant-time (`subtle`).

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
/// Default cap on PBKDF2 iterations taken from a header (keyslot or digest): about 10–30 s of
/// work here; cryptsetup's 2-second benchmark gives 1–4 million on current CPUs.
pub const DEFAULT_MAX_PBKDF2_ITERATIONS: u32 = 20_000_000;
/// Default cap on Argon2 memory taken from a header, in KiB (cryptsetup's default maximum, 1 GiB).
pub const DEFAULT_MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;
/// Default cap on Argon2 passes taken from a header (cryptsetup benchmarks to 4–20 passes).
pub const DEFAULT_MAX_ARGON2_TIME: u32 = 64;

/// How much work a key derivation whose parameters come from a header may cost, and the flag
/// that stops it. Hostile or damaged metadata cannot make loopkit spend hours or gigabytes.
#[derive(Debug, Clone)]
pub struct KdfPolicy {
    /// Most PBKDF2 iterations (keyslots and volume-key digests).
    pub max_pbkdf2_iterations: u32,
    /// Most Argon2 memory, KiB.
    pub max_argon2_memory_kib: u32,
    /// Most Argon2 passes.
    pub max_argon2_time: u32,
    /// Polled while PBKDF2 or Argon2 runs on its helper thread.
    pub interrupt: crate::progress::Interrupt,
}

impl Default for KdfPolicy {
    fn default() -> Self {
        KdfPolicy {
            max_pbkdf2_iterations: DEFAULT_MAX_PBKDF2_ITERATIONS,
            max_argon2_memory_kib: DEFAULT_MAX_ARGON2_MEMORY_KIB,
            max_argon2_time: DEFAULT_MAX_ARGON2_TIME,
            interrupt: crate::progress::Interrupt::new(),
        }
    }
}

impl KdfPolicy {
    /// No caps beyond the formats' own limits (`--allow-expensive-kdf`, for an image you trust).
    pub fn unlimited() -> Self {
        KdfPolicy {
            max_pbkdf2_iterations: u32::MAX,
            max_argon2_memory_kib: ARGON2_MAX_MEMORY_KIB,
            max_argon2_time: u32::MAX,
            ..KdfPolicy::default()
        }
    }

    /// Refuse PBKDF2 `iterations` above the cap (`what` names the keyslot or digest).
    ///
    /// # Errors
    /// `Unsupported` (another keyslot may still open) naming the flag that raises the cap.
    pub fn check_pbkdf2(&self, iterations: u32, what: &str) -> crate::Result<()> {
        if iterations > self.max_pbkdf2_iterations {
            return Err(over_cap(format!(
                "{what}: {iterations} PBKDF2 iterations exceed the limit of {}",
                self.max_pbkdf2_iterations
            )));
        }
        Ok(())
    }
}

fn over_cap(msg: String) -> crate::Error {
    crate::Error::unsupported(format!(
        "{msg} (a damaged or hostile header could make this take hours; --allow-expensive-kdf lifts the \
         limit for an image you trust)"
    ))
}

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

    /// Derive `out_len` bytes from `pass` and `salt` (parameters chosen by loopkit itself: no
    /// caps, no interruption).
    ///
    /// # Errors
    /// `Corrupt` for parameters that fail [`Kdf::check`]; `Io` if Argon2 cannot allocate.
    pub fn derive(&self, pass: &[u8], salt: &[u8], out_len: usize) -> crate::Result<Key> {
        self.derive_with(pass, salt, out_len, &KdfPolicy::unlimited())
    }

    /// Derive with parameters taken from a header: refused above `policy`'s caps, and stopped
    /// when its interrupt fires (both KDFs run on a helper thread that is abandoned to finish on
    /// its own).
    ///
    /// # Errors
    /// As [`Kdf::derive`]; `Unsupported` above a cap; `Interrupted`.
    pub fn derive_with(&self, pass: &[u8], salt: &[u8], out_len: usize, policy: &KdfPolicy) -> crate::Result<Key> {
        self.check()?;
        let mut out = Zeroizing::new(vec![0u8; out_len]);
        match *self {
            Kdf::Pbkdf2 { hash, iterations } => {
                policy.check_pbkdf2(iterations, "the key derivation")?;
                pbkdf2_interruptible(hash, pass, salt, iterations, &mut out, &policy.interrupt)?;
            }
            Kdf::Argon2 { variant, time, memory_kib, cpus } => {
                if memory_kib > policy.max_argon2_memory_kib || time > policy.max_argon2_time {
                    return Err(over_cap(format!(
                        "the key derivation: argon2 memory {memory_kib} KiB × {time} passes exceed the limit of {} KiB × {} passes",
                        policy.max_argon2_memory_kib, policy.max_argon2_time
                    )));
                }
                let alg = match variant {
                    Argon2Variant::I => argon2::Algorithm::Argon2i,
                    Argon2Variant::Id => argon2::Algorithm::Argon2id,
                };
                let params = argon2::Params::new(memory_kib, time, cpus, Some(out_len))
                    .map_err(|e| crate::Error::corrupt(format!("argon2 parameters rejected: {e}")))?;
                argon2_interruptible(alg, params, pass, salt, &mut out, &policy.interrupt)?;
            }
        }
        Ok(Key::new(std::mem::take(&mut *out)))
    }
}

/// Argon2 through [`interruptible`].
fn argon2_interruptible(
    alg: argon2::Algorithm,
    params: argon2::Params,
    pass: &[u8],
    salt: &[u8],
    out: &mut [u8],
    interrupt: &crate::progress::Interrupt,
) -> crate::Result<()> {
    interruptible("argon2", pass, salt, out, interrupt, move |pass: &[u8], salt: &[u8], out: &mut [u8]| {
        argon2::Argon2::new(alg, argon2::Version::V0x13, params.clone())
            .hash_password_into(pass, salt, out)
            .map_err(|e| crate::Error::new(crate::ErrorKind::Io, format!("argon2 failed: {e}")))
    })
}

/// PBKDF2 (the `pbkdf2` crate) through [`interruptible`]: `Interrupted` returns within 50 ms
/// of Ctrl-C even for a hostile iteration count.
///
/// # Errors
/// `Interrupted`.
pub fn pbkdf2_interruptible(
    hash: HashAlg,
    pass: &[u8],
    salt: &[u8],
    iterations: u32,
    out: &mut [u8],
    interrupt: &crate::progress::Interrupt,
) -> crate::Result<()> {
    interruptible("pbkdf2", pass, salt, out, interrupt, move |pass: &[u8], salt: &[u8], out: &mut [u8]| {
        pbkdf2(hash, pass, salt, iterations, out)
    })
}

/// Run a KDF that cannot stop midway on a helper thread while this one polls `interrupt`; on
/// interrupt the helper is left to finish (its buffers are zeroized when it does) and
/// `Interrupted` returns at once. Without a thread it runs here.
fn interruptible<F>(
    name: &str,
    pass: &[u8],
    salt: &[u8],
    out: &mut [u8],
    interrupt: &crate::progress::Interrupt,
    run: F,
) -> crate::Result<()>
where
    F: Fn(&[u8], &[u8], &mut [u8]) -> crate::Result<()> + Clone + Send + 'static,
{
    interrupt.check()?;
    let (p, s) = (Zeroizing::new(pass.to_vec()), salt.to_vec());
    let len = out.len();
    let (tx, rx) = std::sync::mpsc::channel::<crate::Result<Zeroizing<Vec<u8>>>>();
    let run_bg = run.clone();
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        let mut o = Zeroizing::new(vec![0u8; len]);
        let _ = tx.send(run_bg(&p, &s, &mut o).map(|()| o));
    });
    if spawned.is_err() {
        return run(pass, salt, out);
    }
    loop {
        match rx.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(r) => {
                out.copy_from_slice(&r?);
                return Ok(());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => interrupt.check()?,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(crate::Error::new(
                    crate::ErrorKind::Io,
                    format!("{name} failed: its thread ended without a result"),
                ));
            }
        }
    }
}

/// PBKDF2-HMAC with a runtime-chosen hash.
///
/// # Errors
/// `Unsupported` for the kernel's truncated Whirlpool variants (`wp256`, `wp384`): no PBKDF2
/// library cryptsetup uses defines HMAC over them.
pub fn pbkdf2(hash: HashAlg, pass: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) -> crate::Result<()> {
    use pbkdf2::pbkdf2_hmac as p;
    match hash {
        HashAlg::Ripemd160 => p::<ripemd::Ripemd160>(pass, salt, iterations, out),
        HashAlg::Sha1 => p::<sha1::Sha1>(pass, salt, iterations, out),
        HashAlg::Sha256 => p::<sha2::Sha256>(pass, salt, iterations, out),
        HashAlg::Sha384 => p::<sha2::Sha384>(pass, salt, iterations, out),
        HashAlg::Sha512 => p::<sha2::Sha512>(pass, salt, iterations, out),
        HashAlg::Whirlpool => p::<whirlpool::Whirlpool>(pass, salt, iterations, out),
        HashAlg::Wp384 | HashAlg::Wp256 => {
            return Err(crate::Error::unsupported(format!("PBKDF2 over {hash} (a truncated kernel hash)")));
        }
    }
    Ok(())
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
    digest_matches_with(vk, hash, salt, iterations, expected, &KdfPolicy::unlimited()).unwrap_or(false)
}

/// [`digest_matches`] for a digest read from a header: capped and interruptible.
///
/// # Errors
/// `Unsupported` above the PBKDF2 cap; `Interrupted`.
pub fn digest_matches_with(
    vk: &Key,
    hash: HashAlg,
    salt: &[u8],
    iterations: u32,
    expected: &[u8],
    policy: &KdfPolicy,
) -> crate::Result<bool> {
    if iterations == 0 || expected.is_empty() || expected.len() > 64 {
        return Ok(false);
    }
    policy.check_pbkdf2(iterations, "volume-key digest")?;
    let mut got = Zeroizing::new(vec![0u8; expected.len()]);
    pbkdf2_interruptible(hash, vk.bytes(), salt, iterations, &mut got, &policy.interrupt)?;
    Ok(bool::from(got.ct_eq(expected)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6070 PBKDF2-HMAC-SHA1 vector; RFC 7914 §11 PBKDF2-HMAC-SHA256 vector.
    #[test]
    fn pbkdf2_vectors() {
        let mut o = [0u8; 20];
        pbkdf2(HashAlg::Sha1, b"password", b"salt", 2, &mut o).unwrap();
        assert_eq!(hex(&o), "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
        let mut o = [0u8; 64];
        pbkdf2(HashAlg::Sha256, b"passwd", b"salt", 1, &mut o).unwrap();
        assert_eq!(&hex(&o)[..32], "55ac046e56e3089fec1691c22544b605");
    }

    /// PBKDF2-HMAC-Whirlpool (old LUKS1 `--hash whirlpool`) against OpenSSL 3.0's independent
    /// implementation: `openssl kdf -keylen 64 -kdfopt digest:whirlpool -kdfopt pass:password
    /// -kdfopt salt:salt -kdfopt iter:1000 -provider legacy -provider default PBKDF2`, and the
    /// same with `-keylen 20 -kdfopt pass:"pass phrase" -kdfopt
    /// hexsalt:00112233445566778899aabbccddeeff -kdfopt iter:3`. The truncated kernel variants
    /// have no PBKDF2.
    #[test]
    fn pbkdf2_whirlpool_matches_openssl() {
        let mut o = [0u8; 64];
        pbkdf2(HashAlg::Whirlpool, b"password", b"salt", 1000, &mut o).unwrap();
        assert_eq!(
            hex(&o),
            "5ad7361484c7dde6b23e573c4b61d1fd16023fd6c0170d0b26d70f7ac8c683f06e767804750357b4032297c2ad36cbd8\
             4d01476c1298826b71f605dbcda9e055"
        );
        let mut o = [0u8; 20];
        let salt: Vec<u8> = (0..16u8).map(|i| i * 0x11).collect();
        pbkdf2(HashAlg::Whirlpool, b"pass phrase", &salt, 3, &mut o).unwrap();
        assert_eq!(hex(&o), "8384840832d16cf70d5d6f3b18b0c04ceaebc769");
        assert!(pbkdf2(HashAlg::Wp256, b"p", b"s", 1, &mut o).is_err());
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

    /// The interruptible PBKDF2 gives the RFC 6070 vectors, stops when interrupted, and the caps
    /// refuse hostile header values.
    #[test]
    fn pbkdf2_interruptible_vectors_and_caps() {
        let never = crate::progress::Interrupt::new();
        // RFC 6070 (PBKDF2-HMAC-SHA1): "password" / "salt", c = 2 and c = 4096, dkLen 20.
        for (iters, want) in
            [(2u32, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"), (4096, "4b007901b765489abead49d926f721d065a429c1")]
        {
            let mut o = [0u8; 20];
            pbkdf2_interruptible(HashAlg::Sha1, b"password", b"salt", iters, &mut o, &never).unwrap();
            assert_eq!(crate::bytes::hex(&o), want, "c = {iters}");
        }
        let fired = crate::progress::Interrupt::new();
        fired.trigger();
        let mut o = [0u8; 32];
        let e = pbkdf2_interruptible(HashAlg::Sha256, b"p", b"s", u32::MAX, &mut o, &fired).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Interrupted);
        let policy = KdfPolicy::default();
        let hostile = Kdf::Pbkdf2 { hash: HashAlg::Sha256, iterations: u32::MAX };
        assert_eq!(hostile.derive_with(b"p", b"s", 32, &policy).unwrap_err().kind(), crate::ErrorKind::Unsupported);
        let big = Kdf::Argon2 { variant: Argon2Variant::Id, time: 4, memory_kib: 4 << 20, cpus: 4 };
        assert_eq!(big.derive_with(b"p", b"s", 32, &policy).unwrap_err().kind(), crate::ErrorKind::Unsupported);
        let slow = Kdf::Argon2 { variant: Argon2Variant::Id, time: 1000, memory_kib: 64, cpus: 1 };
        assert_eq!(slow.derive_with(b"p", b"s", 32, &policy).unwrap_err().kind(), crate::ErrorKind::Unsupported);
        let vk = Key::new(vec![1; 32]);
        let r = digest_matches_with(&vk, HashAlg::Sha256, b"s", u32::MAX, &[0; 32], &policy);
        assert_eq!(r.unwrap_err().kind(), crate::ErrorKind::Unsupported);
        // Argon2 returns Interrupted promptly while it runs (16 MiB × 1000 passes would take minutes).
        let long = Kdf::Argon2 { variant: Argon2Variant::Id, time: 1000, memory_kib: 16 << 10, cpus: 1 };
        let p = KdfPolicy { interrupt: crate::progress::Interrupt::new(), ..KdfPolicy::unlimited() };
        let i = p.interrupt.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            i.trigger();
        });
        let t0 = std::time::Instant::now();
        let e = long.derive_with(b"p", &[7; 32], 32, &p).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Interrupted, "{e:?}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(20));
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
        pbkdf2(HashAlg::Sha256, vk.bytes(), b"s", 1000, &mut d).unwrap();
        assert!(digest_matches(&vk, HashAlg::Sha256, b"s", 1000, &d));
        assert!(digest_matches(&vk, HashAlg::Sha256, b"s", 1000, &d[..20]));
        assert!(!digest_matches(&vk, HashAlg::Sha256, b"t", 1000, &d));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
