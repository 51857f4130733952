//! `migrate --to dmcrypt`: move a legacy (or plain) loop image to a layout any current Linux
//! opens with `losetup` + `cryptsetup open`, at three levels (`docs/MIGRATE.md`):
//!
//! - [`plain`]: write nothing into the image; produce the exact `cryptsetup open --type
//!   plain|loopaes` command, a crypttab line and optionally a raw key file (mode 0600).
//! - [`detached_header`]: a LUKS2 header *file* whose volume key is the legacy key and whose
//!   segment is the legacy cipher/offset, so `cryptsetup open --header HDR IMAGE` maps the old
//!   ciphertext unchanged, plus an Argon2id keyslot for a new passphrase.
//! - [`reencrypt`]: a new LUKS2 (or LUKS1) container, aes-xts-plain64 with a fresh 512-bit key,
//!   512-byte sectors, cryptsetup's default layout; streamed once, checkpointed, verified by
//!   re-reading, then renamed into place.
//!
//! The source is only ever opened read-only. Outputs follow `apply`'s rules: temporary name,
//! fsync, verify, rename; never overwrite without `force`.

pub mod apply;
pub mod plan;

use crate::crypto::{Key, Passphrase, SectorCipher};
use crate::formats::luks::{self, keyslot, keyslot::Argon2Variant, keyslot::Kdf, write};
use crate::image::Opened;
use crate::progress::{Interrupt, Progress};
use crate::source::{ByteSource, FileSource};
use apply::{Checkpoint, OutputPaths, Sink, StreamOptions};
use plan::{SourceInfo, TargetLayout};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

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

/// The new container's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// LUKS2 (default).
    Luks2,
    /// LUKS1 (`--luks1`).
    Luks1,
}

impl Format {
    /// `luks2` / `luks1`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Luks2 => "luks2",
            Format::Luks1 => "luks1",
        }
    }
}

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
    keyslot::pbkdf2(crate::crypto::HashAlg::Sha256, b"benchmark", &[0u8; 32], probe, &mut out);
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

/// What a migration produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// `plain`, `detached-header`, `reencrypt`.
    pub mode: &'static str,
    /// The file written (header or image); None for `plain` without outputs.
    pub output: Option<PathBuf>,
    /// `luks2`/`luks1` (None for plain).
    pub format: Option<Format>,
    /// The new header's UUID.
    pub uuid: Option<String>,
    /// The source's description.
    pub source: SourceInfo,
    /// SHA-256 of the source plaintext (None for plain mode).
    pub source_sha256: Option<[u8; 32]>,
    /// SHA-256 of the plaintext read back through the new header.
    pub migrated_sha256: Option<[u8; 32]>,
    /// The new keyslot's KDF.
    pub kdf: Option<String>,
    /// Where a resumed run started (payload bytes already done), if resumed.
    pub resumed_from_bytes: Option<u64>,
    /// The command that opens the result.
    pub cryptsetup: Option<String>,
    /// Remarks.
    pub notes: Vec<String>,
}

fn now_iso() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    plan::iso8601(secs)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn source_path(opened: &Opened) -> String {
    std::fs::canonicalize(&opened.path).unwrap_or_else(|_| opened.path.clone()).display().to_string()
}

/// Options for [`reencrypt`].
#[derive(Debug, Clone)]
pub struct ReencryptOptions {
    /// The new container (`-o OUT.img`).
    pub output: PathBuf,
    /// LUKS2 or LUKS1.
    pub format: Format,
    /// Keyslot KDF.
    pub kdf: KdfOptions,
    /// Replace an existing output / discard an interrupted run.
    pub force: bool,
    /// Continue an interrupted run from its checkpoint.
    pub resume: bool,
    /// LUKS2 label.
    pub label: String,
    /// Pipeline tuning.
    pub stream: StreamOptions,
}

/// Re-encrypt the source payload into a new LUKS container at `opts.output`.
///
/// Steps: header (keyslot for `new_pass`, fresh random 512-bit volume key) into `OUT.partial`,
/// fsync, checkpoint; stream the payload (decrypt legacy → encrypt aes-xts-plain64) with
/// checkpoints; add the provenance token (LUKS2); re-open `OUT.partial` with `new_pass` through
/// the normal LUKS reader, hash its payload and compare with the source's plaintext SHA-256;
/// rename to `OUT`, fsync the directory, remove the checkpoint.
///
/// What a failure leaves: the source is never written. Before the rename, only `OUT.partial`
/// and `OUT.partial.checkpoint` exist (resume with `resume`, or discard with `force`); `OUT`
/// appears only after verification. A crash between the rename and the checkpoint's removal
/// leaves a stale checkpoint, which a resumed run recognises (it verifies `OUT` and finishes).
///
/// # Errors
/// `Unsafe` when an output exists (without `force`) or clashes with the source;
/// `InvalidInput` for a locked source or bad options; `WrongKey` when resuming with another
/// passphrase; `Corrupt` when verification fails; `Io`; `Interrupted`.
pub fn reencrypt(
    opened: &Opened,
    new_pass: &Passphrase,
    opts: &ReencryptOptions,
    progress: &mut dyn Progress,
    interrupt: &Interrupt,
) -> crate::Result<Outcome> {
    let (layout, src_cipher) = opened
        .payload()?
        .ok_or_else(|| crate::Error::invalid("the source is locked: give its passphrase or key file"))?;
    if layout.size_bytes == 0 {
        return Err(crate::Error::invalid("the source payload is empty: nothing to migrate"));
    }
    let info = plan::source_info(opened, layout)?;
    let out = OutputPaths::new(&opts.output);
    apply::refuse_clobbering_inputs(&out, &[&opened.path])?;
    if let crate::image::Content::LuksUnlocked(u) = &opened.content
        && let Some(h) = &u.detached_header
    {
        apply::refuse_clobbering_inputs(&out, &[h])?;
    }
    let target = TargetLayout::new(opts.format == Format::Luks2, layout.size_bytes);
    let src_path = source_path(opened);
    let src_size = opened.file.size_bytes();
    let mut notes = Vec::new();

    let existing = Checkpoint::load(&out.checkpoint)?;
    let final_exists = out.final_path.exists();
    let partial_exists = out.partial.exists();
    if opts.resume && final_exists && !partial_exists {
        // A previous run renamed OUT into place; finish (or refuse) by verifying it.
        let (sha_src, uuid, direct) =
            verify_existing(opened, &*src_cipher, layout, &out.final_path, new_pass, opts.stream, progress, interrupt)
                .map_err(|e| match e.kind() {
                    crate::ErrorKind::Corrupt => crate::Error::new(
                        crate::ErrorKind::Unsafe,
                        format!(
                            "{} exists but its payload differs from the source ({e}); use --force to replace it",
                            out.final_path.display()
                        ),
                    ),
                    _ => e,
                })?;
        // Compared byte for byte: the same plaintext, the same digest.
        let sha_out = sha_src;
        if !direct {
            notes.push(READ_BACK_FALLBACK.into());
        }
        let _ = std::fs::remove_file(&out.checkpoint);
        notes.push("an earlier run had already completed this migration; it was verified again".into());
        return Ok(Outcome {
            mode: "reencrypt",
            output: Some(out.final_path.clone()),
            format: Some(opts.format),
            uuid: Some(uuid),
            source: info,
            source_sha256: Some(sha_src),
            migrated_sha256: Some(sha_out),
            kdf: None,
            resumed_from_bytes: Some(layout.size_bytes),
            cryptsetup: Some(open_command(&out.final_path, None)),
            notes,
        });
    }
    // A resumed run may replace OUT if the run it continues was allowed to.
    let may_replace = opts.force || (opts.resume && existing.as_ref().is_some_and(|c| c.replace_output));
    if final_exists && !may_replace {
        return Err(crate::Error::new(
            crate::ErrorKind::Unsafe,
            format!("{} already exists; give --force to replace it", out.final_path.display()),
        ));
    }
    if (partial_exists || existing.is_some()) && !opts.resume && !opts.force {
        return Err(crate::Error::new(
            crate::ErrorKind::Unsafe,
            format!(
                "{} is left from an interrupted migration; rerun with --resume to continue it, or --force to start over",
                out.partial.display()
            ),
        ));
    }

    // Resume or start.
    let resume_from = match (&existing, opts.resume && !opts.force && partial_exists) {
        (Some(c), true) => {
            let want = Checkpoint {
                done_bytes: c.done_bytes,
                replace_output: c.replace_output,
                ..checkpoint_for(&src_path, src_size, &info, opts.format, &c.target_uuid, target, false)
            };
            if *c != want {
                return Err(crate::Error::new(
                    crate::ErrorKind::Unsafe,
                    format!(
                        "the checkpoint {} was made for another source, parameters or format; use --force to start over",
                        out.checkpoint.display()
                    ),
                ));
            }
            Some(c.clone())
        }
        _ => None,
    };
    // The replace permission of the run being continued (or of this one).
    let replace = may_replace;
    let fresh = |notes: &mut Vec<String>| -> crate::Result<(std::fs::File, Key, String, Option<String>, u64)> {
        let _ = notes;
        let (kdf, digest_iterations) = choose_kdf(&opts.kdf, opts.format)?;
        let vk = Key::new(luks::random_bytes::<64>()?.to_vec());
        let written = new_header(&vk, new_pass, opts, &kdf, digest_iterations, target)?;
        // The checkpoint first: a crash from here on leaves a checkpoint with done = 0, which a
        // resumed run turns into a fresh start (keeping the --force permission).
        checkpoint_for(&src_path, src_size, &info, opts.format, &written.uuid, target, replace)
            .save(&out.checkpoint)?;
        let file = apply::create_partial(&out.partial, true)?;
        file.set_len(target.total_bytes())
            .map_err(|e| crate::Error::io(format!("sizing {}", out.partial.display()), e))?;
        apply::write_at(&file, &out.partial, &written.bytes, 0)?;
        apply::sync(&file, &out.partial)?;
        apply::sync_dir_of(&out.partial)?;
        Ok((file, vk, written.uuid, Some(kdf.describe()), 0))
    };
    let (file, vk, uuid, kdf_desc, done) = match &resume_from {
        Some(c) => match reopen_partial(&out, c, new_pass) {
            Ok((file, vk, kdf)) => {
                notes.push(format!(
                    "resumed after {} of {} payload bytes",
                    c.done_bytes.min(layout.size_bytes),
                    layout.size_bytes
                ));
                (file, vk, c.target_uuid.clone(), kdf, c.done_bytes.min(layout.size_bytes))
            }
            // Interrupted before any payload was durable (even mid-header): nothing to keep.
            Err(e) if c.done_bytes == 0 && e.kind() != crate::ErrorKind::WrongKey => {
                notes.push("the interrupted run had written no payload yet; started over".into());
                fresh(&mut notes)?
            }
            Err(e) => return Err(e),
        },
        None => fresh(&mut notes)?,
    };

    let dst_cipher = crate::crypto::xts::XtsSectors::new(vk.bytes(), 512)?;
    let writer = crate::output::direct::DirectWriter::new(&out.partial, &file)
        .map_err(|e| crate::Error::io(format!("opening {} for direct writes", out.partial.display()), e))?;
    let sink = Sink {
        file: &file,
        writer: &writer,
        path: &out.partial,
        offset_bytes: target.payload_offset_bytes,
        cipher: &dst_cipher,
    };
    let base = checkpoint_for(&src_path, src_size, &info, opts.format, &uuid, target, replace);
    let mut on_durable = |n: u64| Checkpoint { done_bytes: n, ..base.clone() }.save(&out.checkpoint);
    let src_sha = apply::stream(
        &*opened.data,
        &*src_cipher,
        layout,
        &sink,
        done,
        opts.stream,
        &mut on_durable,
        progress,
        interrupt,
    )?;
    if !writer.is_direct() {
        notes.push(format!(
            "the file system of {} does not take O_DIRECT writes: the output went through the page cache",
            out.partial.display()
        ));
    }

    // Provenance (LUKS2): rewrite both header copies with the token, then flush.
    if opts.format == Format::Luks2 {
        let hdr = FileSource::open(&out.partial)?;
        let Some(luks::Luks { parsed: luks::Parsed::V2(l2), .. }) = luks::read(&hdr)? else {
            return Err(crate::Error::corrupt(format!(
                "{}: the LUKS2 header no longer reads back",
                out.partial.display()
            )));
        };
        let mut meta = l2.meta.clone();
        meta.tokens.retain(|_, t| t.get("type").and_then(|v| v.as_str()) != Some("loopkit-migration"));
        let id =
            (0..32u32).map(|i| i.to_string()).find(|k| !meta.tokens.contains_key(k)).unwrap_or_else(|| "31".into());
        meta.tokens.insert(id, plan::provenance_token(&info, &src_path, &hex(&src_sha), &now_iso()));
        let bytes = write::luks2_rewrite(&l2, &meta, l2.bin.seqid + 1)?;
        apply::write_at(&file, &out.partial, &bytes, 0)?;
    } else {
        notes.push(
            "LUKS1 has no place for provenance metadata; the source and its SHA-256 are only in this report".into(),
        );
    }
    // Make everything durable and record it; then read the output back from the device (not
    // from the page cache) through the normal LUKS reader with the new passphrase, and compare
    // its plaintext with the source's, byte for byte.
    apply::sync(&file, &out.partial)?;
    Checkpoint { done_bytes: layout.size_bytes, ..base.clone() }.save(&out.checkpoint)?;
    let read_back = verify_output(
        &out.partial,
        &file,
        new_pass,
        Some(&vk),
        (&*opened.data, &*src_cipher, layout),
        false,
        opts.stream,
        progress,
        interrupt,
    );
    drop(file);
    let (_, out_uuid, direct) = read_back.map_err(|e| {
        e.context(format!(
            "verification failed ({} was kept for inspection and {} was not created)",
            out.partial.display(),
            out.final_path.display()
        ))
    })?;
    if out_uuid != uuid {
        return Err(crate::Error::corrupt(format!(
            "verification failed: {} reads back with UUID {out_uuid}, not {uuid}; {} was not created",
            out.partial.display(),
            out.final_path.display()
        )));
    }
    if !direct {
        notes.push(READ_BACK_FALLBACK.into());
    }
    // Byte-for-byte equal plaintext: the same SHA-256.
    let out_sha = src_sha;
    if out.final_path.exists() && !replace {
        return Err(crate::Error::new(
            crate::ErrorKind::Unsafe,
            format!("{} appeared while migrating; give --force to replace it", out.final_path.display()),
        ));
    }
    std::fs::rename(&out.partial, &out.final_path).map_err(|e| {
        crate::Error::io(format!("renaming {} to {}", out.partial.display(), out.final_path.display()), e)
    })?;
    apply::sync_dir_of(&out.final_path)?;
    let _ = std::fs::remove_file(&out.checkpoint);
    apply::sync_dir_of(&out.checkpoint)?;
    Ok(Outcome {
        mode: "reencrypt",
        output: Some(out.final_path.clone()),
        format: Some(opts.format),
        uuid: Some(uuid),
        source: info,
        source_sha256: Some(src_sha),
        migrated_sha256: Some(out_sha),
        kdf: kdf_desc,
        resumed_from_bytes: resume_from.map(|c| c.done_bytes),
        cryptsetup: Some(open_command(&out.final_path, None)),
        notes,
    })
}

/// A new header for `vk` in the chosen format.
fn new_header(
    vk: &Key,
    pass: &Passphrase,
    opts: &ReencryptOptions,
    kdf: &Kdf,
    digest_iterations: u32,
    target: TargetLayout,
) -> crate::Result<write::Written> {
    let written = match opts.format {
        Format::Luks2 => write::luks2(
            vk,
            pass,
            &write::Luks2Spec {
                cipher: "aes-xts-plain64".into(),
                sector_bytes: 512,
                data_offset_bytes: target.payload_offset_bytes,
                data_size_bytes: None,
                kdf: kdf.clone(),
                digest_iterations,
                label: opts.label.clone(),
                tokens: Vec::new(),
            },
        )?,
        Format::Luks1 => {
            let Kdf::Pbkdf2 { iterations, .. } = *kdf else {
                return Err(crate::Error::invalid("LUKS1 needs a pbkdf2 keyslot"));
            };
            write::luks1(
                vk,
                pass,
                &write::Luks1Spec {
                    cipher_name: "aes".into(),
                    cipher_mode: "xts-plain64".into(),
                    iterations,
                    digest_iterations,
                },
            )?
        }
    };
    if written.bytes.len() as u64 != target.payload_offset_bytes {
        return Err(crate::Error::invalid("BUG: header length differs from the payload offset"));
    }
    Ok(written)
}

/// Open the partial output of an interrupted run: its header must be the checkpoint's and
/// unlock with `pass`. Returns the file, the volume key and the keyslot's KDF.
fn reopen_partial(
    out: &OutputPaths,
    c: &Checkpoint,
    pass: &Passphrase,
) -> crate::Result<(std::fs::File, Key, Option<String>)> {
    let file = apply::create_partial(&out.partial, false)?;
    let hdr = FileSource::open(&out.partial)?;
    let l = luks::read(&hdr)?
        .ok_or_else(|| crate::Error::corrupt(format!("{} has no LUKS header", out.partial.display())))?;
    if l.header.uuid != c.target_uuid {
        return Err(crate::Error::new(
            crate::ErrorKind::Unsafe,
            format!("{} does not belong to the checkpoint (UUID differs); use --force", out.partial.display()),
        ));
    }
    let u = l
        .unlock(&hdr, pass)
        .map_err(|e| e.context("unlocking the partial output to resume (give the same new passphrase)"))?;
    Ok((file, u.volume_key, l.header.keyslot_details.first().map(|k| k.kdf.clone())))
}

fn checkpoint_for(
    src_path: &str,
    src_size: u64,
    info: &SourceInfo,
    f: Format,
    uuid: &str,
    t: TargetLayout,
    replace_output: bool,
) -> Checkpoint {
    Checkpoint {
        loopkit_checkpoint: 1,
        source_path: src_path.to_string(),
        source_size_bytes: src_size,
        source: info.clone(),
        target_format: f.name().into(),
        target_uuid: uuid.to_string(),
        target_payload_offset_bytes: t.payload_offset_bytes,
        done_bytes: 0,
        replace_output,
    }
}

fn open_command(image: &Path, header: Option<&Path>) -> String {
    use crate::formats::legacy::shell_quote;
    let h = header.map(|h| format!(" --header {}", shell_quote(&h.display().to_string()))).unwrap_or_default();
    format!("cryptsetup open --readonly{h} {} migrated", shell_quote(&image.display().to_string()))
}

/// The note for file systems without `O_DIRECT` reads.
const READ_BACK_FALLBACK: &str = "the output's file system does not take O_DIRECT reads: it was read back after \
     dropping its cached pages (posix_fadvise DONTNEED) instead";

/// Verify the output `path` (its writer `written`, synced) from the device: drop its cached
/// pages, read the header back, check it reads cleanly, unlock it with `pass` (a full keyslot
/// unlock; with `vk`, the key must be that one), then read the payload back (`O_DIRECT` where
/// possible) and compare its plaintext with the source's byte for byte (and, with `hash`, hash
/// the source plaintext). Returns (source sha256 if hashed, uuid, whether reads were O_DIRECT).
#[allow(clippy::too_many_arguments)]
fn verify_output(
    path: &Path,
    written: &std::fs::File,
    pass: &Passphrase,
    vk: Option<&Key>,
    source: (&dyn ByteSource, &dyn SectorCipher, crate::volume::Layout),
    hash: bool,
    so: StreamOptions,
    progress: &mut dyn Progress,
    interrupt: &Interrupt,
) -> crate::Result<(Option<[u8; 32]>, String, bool)> {
    let back = crate::output::direct::ReadBack::open(path, written)
        .map_err(|e| crate::Error::io(format!("opening {} to read it back", path.display()), e))?;
    // The header through the plain handle: its pages were just dropped, so this reads the disk.
    let src = FileSource::open(path)?;
    let l = luks::read(&src)
        .map_err(|e| e.context(format!("reading the header of {} back from the disk", path.display())))?
        .ok_or_else(|| crate::Error::corrupt(format!("{} has no LUKS header when read back", path.display())))?;
    if !l.header.notes.is_empty() {
        return Err(crate::Error::corrupt(format!(
            "{}: the new header reads back with problems: {}",
            path.display(),
            l.header.notes.join("; ")
        )));
    }
    let u = l.unlock(&src, pass).map_err(|e| e.context(format!("unlocking {} read back", path.display())))?;
    if let Some(vk) = vk
        && !bool::from(u.volume_key.bytes().ct_eq(vk.bytes()))
    {
        return Err(crate::Error::corrupt(format!("{}: the keyslot yields another volume key", path.display())));
    }
    let (ol, oc) = l.payload(src.size_bytes(), &u.volume_key)?;
    let (s_data, s_cipher, s_layout) = source;
    if ol.size_bytes != s_layout.size_bytes || ol.iv_offset_sectors != 0 {
        return Err(crate::Error::corrupt(format!(
            "{} maps {} payload bytes (IV offset {}), the source has {}",
            path.display(),
            ol.size_bytes,
            ol.iv_offset_sectors,
            s_layout.size_bytes
        )));
    }
    let other = apply::Other::Output { back: &back, path, offset_bytes: ol.offset_bytes, cipher: &*oc };
    let sha = apply::compare_plaintext(s_data, s_cipher, s_layout, other, hash, so, progress, interrupt)?;
    Ok((sha, l.header.uuid, back.is_direct()))
}

/// `--resume` found `OUT` complete: compare `OUT` (unlocked with `pass`, read from the device)
/// with the source, hashing the source plaintext. Returns (sha256, uuid, O_DIRECT reads).
#[allow(clippy::too_many_arguments)]
fn verify_existing(
    opened: &Opened,
    src_cipher: &dyn SectorCipher,
    layout: crate::volume::Layout,
    path: &Path,
    pass: &Passphrase,
    so: StreamOptions,
    progress: &mut dyn Progress,
    interrupt: &Interrupt,
) -> crate::Result<([u8; 32], String, bool)> {
    let f = std::fs::File::open(path).map_err(|e| crate::Error::io(format!("opening {}", path.display()), e))?;
    let (sha, uuid, direct) =
        verify_output(path, &f, pass, None, (&*opened.data, src_cipher, layout), true, so, progress, interrupt)?;
    let sha = sha.ok_or_else(|| crate::Error::invalid("BUG: no digest"))?;
    Ok((sha, uuid, direct))
}

/// Options for [`detached_header`].
#[derive(Debug, Clone)]
pub struct DetachedOptions {
    /// The header file (`-o HEADER`).
    pub output: PathBuf,
    /// Keyslot KDF.
    pub kdf: KdfOptions,
    /// Replace an existing header file.
    pub force: bool,
    /// LUKS2 label.
    pub label: String,
    /// Read chunk size.
    pub chunk_bytes: usize,
}

/// Write a detached LUKS2 header for a legacy single-key image: volume key = the legacy key,
/// segment = the legacy cipher and offset (IV offset 0), one keyslot for `new_pass`, and the
/// provenance token. Verified before it is renamed into place: the header is re-read and
/// unlocked with `new_pass`, and the whole payload is read once and hashed both through the
/// legacy parameters and through the header; the two SHA-256 must agree.
///
/// What a failure leaves: the image is never written; `HEADER.partial` may remain (replaced by
/// the next attempt); `HEADER` appears only after verification.
///
/// # Errors
/// `Unsupported` for sources LUKS cannot describe (loop-AES multi-key, IV offset ≠ 0, small
/// offsets, plain or LUKS sources), with what to use instead; `Unsafe` for an existing output;
/// `Corrupt` if verification fails; `Io`; `Interrupted`.
pub fn detached_header(
    opened: &Opened,
    new_pass: &Passphrase,
    opts: &DetachedOptions,
    progress: &mut dyn Progress,
    interrupt: &Interrupt,
) -> crate::Result<Outcome> {
    let (cipher, offset, size) = plan::detached_segment(opened)?;
    let key = match opened.keys() {
        Some(crate::formats::legacy::KeyMaterial::Single(k)) => k.clone(),
        _ => return Err(crate::Error::unsupported("only single-key images can get a detached LUKS2 header")),
    };
    let (layout, src_cipher) = opened.payload()?.ok_or_else(|| crate::Error::invalid("the source is locked"))?;
    let info = plan::source_info(opened, layout)?;
    let out = OutputPaths::new(&opts.output);
    apply::refuse_clobbering_inputs(&out, &[&opened.path])?;
    if out.final_path.exists() && !opts.force {
        return Err(crate::Error::new(
            crate::ErrorKind::Unsafe,
            format!("{} already exists; give --force to replace it", out.final_path.display()),
        ));
    }
    let (kdf, digest_iterations) = choose_kdf(&opts.kdf, Format::Luks2)?;
    let spec = write::Luks2Spec {
        cipher,
        sector_bytes: 512,
        data_offset_bytes: offset,
        data_size_bytes: size,
        kdf: kdf.clone(),
        digest_iterations,
        label: opts.label.clone(),
        tokens: Vec::new(),
    };
    let written = write::luks2(&key, new_pass, &spec)?;
    let file = apply::create_partial(&out.partial, true)?;
    apply::write_at(&file, &out.partial, &written.bytes, 0)?;
    apply::sync(&file, &out.partial)?;

    // Verify: read the header back from the disk (its cached pages dropped), unlock it with the
    // new passphrase and map the image through it.
    let _ = crate::output::direct::drop_cached(&file);
    let hdr = FileSource::open(&out.partial)?;
    let l = luks::read(&hdr)?.ok_or_else(|| crate::Error::corrupt("the new header does not read back"))?;
    let u = l.unlock(&hdr, new_pass)?;
    if !bool::from(u.volume_key.bytes().ct_eq(key.bytes())) {
        return Err(crate::Error::corrupt("the new header's keyslot does not yield the legacy key"));
    }
    let (new_layout, new_cipher) = l.payload(opened.data.size_bytes(), &u.volume_key)?;
    if new_layout != layout {
        return Err(crate::Error::corrupt(format!("the new header maps {new_layout:?}, the source is {layout:?}")));
    }
    // One pass over the image: the plaintext through both, compared byte for byte in parallel;
    // one SHA-256 (of the source plaintext) on its own core.
    let so = StreamOptions { chunk_bytes: opts.chunk_bytes, ..StreamOptions::default() };
    let sha_src = apply::compare_plaintext(
        &*opened.data,
        &*src_cipher,
        layout,
        apply::Other::Cipher(&*new_cipher),
        true,
        so,
        progress,
        interrupt,
    )
    .map_err(|e| match e.kind() {
        crate::ErrorKind::Corrupt => {
            e.context(format!("verification failed; {} was not created", out.final_path.display()))
        }
        _ => e,
    })?
    .ok_or_else(|| crate::Error::invalid("BUG: no digest"))?;
    let sha_new = sha_src;
    // Add provenance, flush, check the header still opens by digest, rename.
    let luks::Parsed::V2(l2) = &l.parsed else {
        return Err(crate::Error::corrupt("BUG: the new header is not LUKS2"));
    };
    let mut meta = l2.meta.clone();
    meta.tokens.insert("0".into(), plan::provenance_token(&info, &source_path(opened), &hex(&sha_src), &now_iso()));
    let bytes = write::luks2_rewrite(l2, &meta, l2.bin.seqid + 1)?;
    apply::write_at(&file, &out.partial, &bytes, 0)?;
    apply::sync(&file, &out.partial)?;
    let _ = crate::output::direct::drop_cached(&file);
    drop(file);
    let again = luks::read(&FileSource::open(&out.partial)?)?
        .ok_or_else(|| crate::Error::corrupt("the header does not read back"))?;
    if !again.check_volume_key(&key) || !again.header.notes.is_empty() {
        return Err(crate::Error::corrupt("the header with provenance does not read back cleanly"));
    }
    std::fs::rename(&out.partial, &out.final_path).map_err(|e| {
        crate::Error::io(format!("renaming {} to {}", out.partial.display(), out.final_path.display()), e)
    })?;
    apply::sync_dir_of(&out.final_path)?;
    let notes = vec![format!(
        "the image itself was not changed; keep {} with it (without the header the data opens only with the old passphrase)",
        out.final_path.display()
    )];
    Ok(Outcome {
        mode: "detached-header",
        output: Some(out.final_path.clone()),
        format: Some(Format::Luks2),
        uuid: Some(written.uuid),
        source: info,
        source_sha256: Some(sha_src),
        migrated_sha256: Some(sha_new),
        kdf: Some(kdf.describe()),
        resumed_from_bytes: None,
        cryptsetup: Some(open_command(&opened.path, Some(&out.final_path))),
        notes,
    })
}

/// Options for [`plain`].
#[derive(Debug, Clone)]
pub struct PlainOptions {
    /// `--key-out FILE`: write the raw key (or the loop-AES key file) there, mode 0600.
    pub key_out: Option<PathBuf>,
    /// The device-mapper name to use in the commands.
    pub name: String,
    /// Replace an existing key file.
    pub force: bool,
    /// The loop-AES key file's cleartext contents, when the source is multi-key.
    pub loopaes_key_file: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// The passphrase length (never its bytes), to judge cryptsetup's own hashing.
    pub pass_len: Option<usize>,
}

/// `--mode plain`: nothing is written into the image. Builds the mapping commands and, with
/// `key_out`, writes the key file (atomically, mode 0600).
///
/// What a failure leaves: nothing but possibly `KEYFILE.partial` (mode 0600).
///
/// # Errors
/// `InvalidInput` for a locked source; `Unsafe` for an existing key file without `force`; `Io`.
pub fn plain(opened: &Opened, opts: &PlainOptions) -> crate::Result<(Outcome, plan::PlainMapping)> {
    let layout = opened.payload()?.map(|(l, _)| l);
    let info = match layout {
        Some(l) => plan::source_info(opened, l)?,
        None => {
            plan::source_info(opened, crate::volume::Layout { offset_bytes: 0, size_bytes: 0, iv_offset_sectors: 0 })?
        }
    };
    let image = opened.path.display().to_string();
    let abs_image = source_path(opened);
    let key_abs = opts.key_out.as_ref().map(|k| {
        let r = std::fs::canonicalize(k.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))
            .map(|d| d.join(k.file_name().unwrap_or_default()))
            .unwrap_or_else(|_| k.clone());
        r.display().to_string()
    });
    let key_arg = opts.key_out.as_ref().map(|k| k.display().to_string());
    let mut mapping = plan::plain_mapping(opened, &image, &abs_image, key_arg.as_deref(), &opts.name, opts.pass_len)?;
    if let (Some(ct), Some(abs), Some(arg)) = (&mapping.crypttab, &key_abs, &key_arg) {
        mapping.crypttab = Some(ct.replacen(&arg.replace(' ', "\\040"), &abs.replace(' ', "\\040"), 1));
    }
    let mut notes = Vec::new();
    if let Some(k) = &opts.key_out {
        let bytes: zeroize::Zeroizing<Vec<u8>> = match (mapping.key_file_kind, opened.keys()) {
            (plan::KeyFileKind::RawKey, Some(crate::formats::legacy::KeyMaterial::Single(key))) => {
                zeroize::Zeroizing::new(key.bytes().to_vec())
            }
            (plan::KeyFileKind::LoopAesKeyFile, _) => opts.loopaes_key_file.clone().ok_or_else(|| {
                crate::Error::invalid("a loop-AES multi-key image needs its --key-file to write a key file")
            })?,
            _ => return Err(crate::Error::invalid("this image has no key to write (--key-out)")),
        };
        crate::output::write_file_atomically(k, &bytes, opts.force, 0o600, &[&opened.path])?;
        notes.push(format!("wrote the key to {} (mode 0600); keep it as safe as the passphrase", k.display()));
    }
    Ok((
        Outcome {
            mode: "plain",
            output: opts.key_out.clone(),
            format: None,
            uuid: None,
            source: info,
            source_sha256: None,
            migrated_sha256: None,
            kdf: None,
            resumed_from_bytes: None,
            cryptsetup: mapping.key_file_command.clone().or_else(|| mapping.passphrase_command.clone()),
            notes,
        },
        mapping,
    ))
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
