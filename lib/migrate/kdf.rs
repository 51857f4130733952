//! Choosing the new keyslot's KDF the way cryptsetup does: `--pbkdf`, `--iter-time`,
//! `--pbkdf-memory`, `--pbkdf-parallel`, `--pbkdf-force-iterations`, with a quick calibration
//! of PBKDF2 iterations and Argon2 memory on this machine.

use super::Format;
use crate::formats::luks::{keyslot, keyslot::Argon2Variant, keyslot::Kdf};
use std::time::{Duration, Instant};

/// cryptsetup's default `--iter-time` (ms).
pub const DEFAULT_ITER_TIME_MS: u32 = 2000;
/// cryptsetup's default Argon2 memory ceiling (KiB, 1 GiB).
pub const DEFAULT_ARGON2_MAX_MEMORY_KIB: u32 = 1 << 20;
/// cryptsetup's benchmark floor for Argon2 memory (KiB, 64 MiB).
pub const DEFAULT_ARGON2_MIN_MEMORY_KIB: u32 = 64 << 10;
/// cryptsetup's minimum Argon2 time cost for new keyslots.
pub const ARGON2_MIN_TIME: u32 = 4;
/// How long the volume-key digest's PBKDF2 should take (cryptsetup `LUKS_MKD_ITERATIONS_MS`).
pub const DIGEST_ITER_TIME_MS: u32 = 125;

/// `--pbkdf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pbkdf {
    /// Argon2id (LUKS2 default).
    Argon2id,
    /// Argon2i.
    Argon2i,
    /// PBKDF2-SHA256 (the only choice for LUKS1).
    Pbkdf2,
}

impl std::str::FromStr for Pbkdf {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "argon2id" => Pbkdf::Argon2id,
            "argon2i" => Pbkdf::Argon2i,
            "pbkdf2" => Pbkdf::Pbkdf2,
            _ => return Err(crate::Error::invalid(format!("--pbkdf {s:?}: use argon2id, argon2i or pbkdf2"))),
        })
    }
}

/// How the new keyslot's KDF is chosen (cryptsetup's flags and defaults).
#[derive(Debug, Clone, Default)]
pub struct KdfOptions {
    /// `--pbkdf` (default: argon2id for LUKS2, pbkdf2 for LUKS1).
    pub pbkdf: Option<Pbkdf>,
    /// `--iter-time` in ms (default 2000): calibrate to take about this long here.
    pub iter_time_ms: Option<u32>,
    /// `--pbkdf-memory` in KiB (Argon2).
    pub memory_kib: Option<u32>,
    /// `--pbkdf-parallel` (Argon2 lanes, 1..4).
    pub parallel: Option<u32>,
    /// `--pbkdf-force-iterations`: PBKDF2 iterations or the Argon2 time cost; skips
    /// calibration (and the volume-key digest then uses 1000 iterations, like cryptsetup).
    pub force_iterations: Option<u32>,
}

/// Pick the keyslot KDF and the digest iteration count.
///
/// # Errors
/// `InvalidInput` for parameters cryptsetup would refuse.
pub fn choose_kdf(o: &KdfOptions, format: Format) -> crate::Result<(Kdf, u32)> {
    let pbkdf = o.pbkdf.unwrap_or(if format == Format::Luks1 { Pbkdf::Pbkdf2 } else { Pbkdf::Argon2id });
    if format == Format::Luks1 && pbkdf != Pbkdf::Pbkdf2 {
        return Err(crate::Error::invalid("LUKS1 keyslots support only --pbkdf pbkdf2"));
    }
    let iter_ms = o.iter_time_ms.unwrap_or(DEFAULT_ITER_TIME_MS).max(1);
    let digest_iterations = match o.force_iterations {
        Some(_) => keyslot::PBKDF2_MIN_ITERATIONS,
        None => pbkdf2_iterations_for(DIGEST_ITER_TIME_MS, 32),
    };
    let kdf = match pbkdf {
        Pbkdf::Pbkdf2 => {
            if o.memory_kib.is_some() || o.parallel.is_some() {
                return Err(crate::Error::invalid("--pbkdf-memory and --pbkdf-parallel apply to argon2 only"));
            }
            let iterations = match o.force_iterations {
                Some(n) if n < keyslot::PBKDF2_MIN_ITERATIONS => {
                    return Err(crate::Error::invalid(format!(
                        "--pbkdf-force-iterations {n}: PBKDF2 needs at least {}",
                        keyslot::PBKDF2_MIN_ITERATIONS
                    )));
                }
                Some(n) => n,
                None => pbkdf2_iterations_for(iter_ms, 64),
            };
            Kdf::Pbkdf2 { hash: crate::crypto::HashAlg::Sha256, iterations }
        }
        Pbkdf::Argon2id | Pbkdf::Argon2i => {
            let variant = if pbkdf == Pbkdf::Argon2i { Argon2Variant::I } else { Argon2Variant::Id };
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            let cpus = o.parallel.unwrap_or(cores.min(keyslot::ARGON2_MAX_CPUS));
            if !(1..=keyslot::ARGON2_MAX_CPUS).contains(&cpus) {
                return Err(crate::Error::invalid(format!("--pbkdf-parallel {cpus}: use 1..4")));
            }
            let time = o.force_iterations.unwrap_or(ARGON2_MIN_TIME);
            if time < ARGON2_MIN_TIME {
                return Err(crate::Error::invalid(format!(
                    "argon2 time cost {time}: cryptsetup requires at least {ARGON2_MIN_TIME}"
                )));
            }
            let memory_kib = match (o.memory_kib, o.force_iterations) {
                (Some(m), _) => m,
                (None, Some(_)) => DEFAULT_ARGON2_MAX_MEMORY_KIB,
                (None, None) => argon2_memory_for(variant, iter_ms, time, cpus)?,
            };
            if !(keyslot::ARGON2_MIN_MEMORY_KIB..=keyslot::ARGON2_MAX_MEMORY_KIB).contains(&memory_kib) {
                return Err(crate::Error::invalid(format!(
                    "--pbkdf-memory {memory_kib}: use {}..{} KiB",
                    keyslot::ARGON2_MIN_MEMORY_KIB,
                    keyslot::ARGON2_MAX_MEMORY_KIB
                )));
            }
            Kdf::Argon2 { variant, time, memory_kib, cpus }
        }
    };
    kdf.check().map_err(|e| crate::Error::invalid(e.message().to_string()))?;
    Ok((kdf, digest_iterations))
}

/// PBKDF2-SHA256 iterations that take about `ms` here for `out_len` bytes (cryptsetup's
/// benchmark, simplified), at least 1000.
fn pbkdf2_iterations_for(ms: u32, out_len: usize) -> u32 {
    let probe = 1u32 << 15;
    let mut out = vec![0u8; out_len];
    let t = Instant::now();
    // Only the truncated kernel hashes fail; SHA-256 always runs.
    let _ = keyslot::pbkdf2(crate::crypto::HashAlg::Sha256, b"benchmark", &[0u8; 32], probe, &mut out);
    let el = t.elapsed().max(Duration::from_micros(100));
    let per_sec = f64::from(probe) / el.as_secs_f64();
    ((per_sec * f64::from(ms) / 1000.0) as u64).clamp(u64::from(keyslot::PBKDF2_MIN_ITERATIONS), u64::from(u32::MAX))
        as u32
}

/// Argon2 memory (KiB) that takes about `ms` here with `time` passes, between 64 MiB and 1 GiB.
fn argon2_memory_for(variant: Argon2Variant, ms: u32, time: u32, cpus: u32) -> crate::Result<u32> {
    let probe = 16 << 10;
    let t = Instant::now();
    Kdf::Argon2 { variant, time, memory_kib: probe, cpus }.derive(b"benchmark", &[0u8; 32], 32)?;
    let el = t.elapsed().max(Duration::from_micros(100));
    let kib = f64::from(probe) * f64::from(ms) / 1000.0 / el.as_secs_f64();
    Ok((kib as u64).clamp(u64::from(DEFAULT_ARGON2_MIN_MEMORY_KIB), u64::from(DEFAULT_ARGON2_MAX_MEMORY_KIB)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cryptsetup's rules for new keyslots, and the calibration staying inside its bounds.
    #[test]
    fn kdf_choice() {
        let quick = KdfOptions { iter_time_ms: Some(20), ..Default::default() };
        let (k, d) = choose_kdf(&quick, Format::Luks2).unwrap();
        match k {
            Kdf::Argon2 { variant: Argon2Variant::Id, time, memory_kib, cpus } => {
                assert_eq!(time, ARGON2_MIN_TIME);
                assert!((DEFAULT_ARGON2_MIN_MEMORY_KIB..=DEFAULT_ARGON2_MAX_MEMORY_KIB).contains(&memory_kib));
                assert!((1..=4).contains(&cpus));
            }
            other => panic!("default LUKS2 KDF is {other:?}"),
        }
        assert!(d >= keyslot::PBKDF2_MIN_ITERATIONS);
        let (k, _) = choose_kdf(&quick, Format::Luks1).unwrap();
        assert!(matches!(k, Kdf::Pbkdf2 { iterations, .. } if iterations >= 1000));
        let forced = KdfOptions { pbkdf: Some(Pbkdf::Pbkdf2), force_iterations: Some(1000), ..Default::default() };
        assert_eq!(choose_kdf(&forced, Format::Luks2).unwrap().1, 1000);
        let bad = |o: KdfOptions, f: Format| choose_kdf(&o, f).unwrap_err().kind();
        assert_eq!(
            bad(KdfOptions { pbkdf: Some(Pbkdf::Argon2id), ..Default::default() }, Format::Luks1),
            crate::ErrorKind::InvalidInput
        );
        assert_eq!(
            bad(KdfOptions { force_iterations: Some(3), memory_kib: Some(1024), ..Default::default() }, Format::Luks2),
            crate::ErrorKind::InvalidInput
        );
        assert_eq!(
            bad(KdfOptions { memory_kib: Some(8), force_iterations: Some(4), ..Default::default() }, Format::Luks2),
            crate::ErrorKind::InvalidInput
        );
        assert_eq!(
            bad(KdfOptions { parallel: Some(9), ..Default::default() }, Format::Luks2),
            crate::ErrorKind::InvalidInput
        );
        assert_eq!(
            bad(
                KdfOptions { pbkdf: Some(Pbkdf::Pbkdf2), force_iterations: Some(999), ..Default::default() },
                Format::Luks2
            ),
            crate::ErrorKind::InvalidInput
        );
        assert!("argon2x".parse::<Pbkdf>().is_err());
    }
}
