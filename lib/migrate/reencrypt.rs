//! `--mode reencrypt`: a new LUKS2 (or LUKS1) container, aes-xts-plain64 with a fresh 512-bit
//! key, streamed once with checkpoints (`--resume`), made durable, then verified by reading it
//! back from the device and comparing its plaintext with the source's before it is renamed
//! into place.

use super::apply::{self, Checkpoint, OutputPaths, Sink, StreamOptions};
use super::kdf::choose_kdf;
use super::plan::{self, SourceInfo, TargetLayout};
use super::{Format, KdfOptions, Outcome, hex, now_iso, open_command, source_path};
use crate::crypto::{Key, Passphrase, SectorCipher};
use crate::formats::luks::{self, keyslot::Kdf, write};
use crate::image::Opened;
use crate::progress::{Interrupt, Progress};
use crate::source::{ByteSource, FileSource};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

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
/// checkpoints, hashing the source plaintext once on its own thread and writing with `O_DIRECT`
/// where possible; add the provenance token (LUKS2); `fdatasync`; drop the cached pages and
/// re-open `OUT.partial` from the device through the normal LUKS reader with `new_pass`, read
/// its payload back (`O_DIRECT`), decrypt it and compare it byte for byte with the source's
/// plaintext (decrypted again, in parallel); rename to `OUT`, fsync the directory, remove the
/// checkpoint.
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
            mode: super::MigrationMode::Reencrypt,
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
    // Read each chunk back from the device as it is written (apply::ReadCheck) when both
    // directions bypass the page cache; the payload cipher for that comes from the header as it
    // reads back from the disk (with the key in memory: the keyslot is unlocked at the end).
    let back = crate::output::direct::ReadBack::open(&out.partial, &file)
        .map_err(|e| crate::Error::io(format!("opening {} to read it back", out.partial.display()), e))?;
    let verification_failed = |e: crate::Error| {
        e.context(format!(
            "verification failed ({} was kept for inspection and {} was not created)",
            out.partial.display(),
            out.final_path.display()
        ))
    };
    let disk_cipher = if writer.is_direct() && back.is_direct() {
        Some(
            payload_cipher_from_disk(&out.partial, &vk, layout.size_bytes, target.payload_offset_bytes)
                .map_err(verification_failed)?,
        )
    } else {
        None
    };
    let sink = Sink {
        file: &file,
        writer: &writer,
        path: &out.partial,
        offset_bytes: target.payload_offset_bytes,
        cipher: &dst_cipher,
        check: disk_cipher.as_deref().map(|cipher| apply::ReadCheck { back: &back, cipher }),
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
    )
    .map_err(|e| if e.kind() == crate::ErrorKind::Corrupt { verification_failed(e) } else { e })?;
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
    // Every chunk this run wrote was read back from the device and compared (unless O_DIRECT
    // reads were refused on the way); a resumed run's earlier chunks were not.
    let payload_checked = sink.check.is_some() && back.is_direct() && done == 0;
    drop(back);
    let read_back = verify_output(
        &out.partial,
        &file,
        new_pass,
        Some(&vk),
        (&*opened.data, &*src_cipher, layout),
        if payload_checked { PayloadCheck::Done } else { PayloadCheck::Compare { hash: false } },
        opts.stream,
        progress,
        interrupt,
    );
    drop(file);
    let (_, out_uuid, direct) = read_back.map_err(verification_failed)?;
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
        mode: super::MigrationMode::Reencrypt,
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

/// The note for file systems without `O_DIRECT` reads.
const READ_BACK_FALLBACK: &str = "the output's file system does not take O_DIRECT reads: it was read back after \
     dropping its cached pages (posix_fadvise DONTNEED) instead";

/// What [`verify_output`] does with the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PayloadCheck {
    /// Every byte was already read back from the device and compared while streaming.
    Done,
    /// Read it back and compare it with the source plaintext (with `hash`: hash that too).
    Compare {
        /// Also compute the source plaintext's SHA-256.
        hash: bool,
    },
}

/// The payload cipher of the LUKS header in `path` as it reads back from the disk (its cached
/// pages dropped by the caller), with the volume key `vk`; checks the payload it describes is
/// `size` bytes at `offset`, IV sector 0 first.
fn payload_cipher_from_disk(path: &Path, vk: &Key, size: u64, offset: u64) -> crate::Result<Box<dyn SectorCipher>> {
    let src = FileSource::open(path)?;
    let l = luks::read(&src)
        .map_err(|e| e.context(format!("reading the header of {} back from the disk", path.display())))?
        .ok_or_else(|| crate::Error::corrupt(format!("{} has no LUKS header when read back", path.display())))?;
    let (ol, oc) = l.payload(src.size_bytes(), vk)?;
    if ol.size_bytes != size || ol.iv_offset_sectors != 0 || ol.offset_bytes != offset {
        return Err(crate::Error::corrupt(format!(
            "{} maps {} payload bytes at byte {} (IV offset {}), not {size} at {offset}",
            path.display(),
            ol.size_bytes,
            ol.offset_bytes,
            ol.iv_offset_sectors
        )));
    }
    Ok(oc)
}

/// Verify the output `path` (its writer `written`, synced) from the device: drop its cached
/// pages, read the header back, check it reads cleanly, unlock it with `pass` (a full keyslot
/// unlock; with `vk`, the key must be that one), then — unless `payload` says it was done while
/// streaming — read the payload back (`O_DIRECT` where possible) and compare its plaintext with
/// the source's byte for byte (and, with `hash`, hash the source plaintext). Returns (source
/// sha256 if hashed, uuid, whether reads were O_DIRECT).
#[allow(clippy::too_many_arguments)]
fn verify_output(
    path: &Path,
    written: &std::fs::File,
    pass: &Passphrase,
    vk: Option<&Key>,
    source: (&dyn ByteSource, &dyn SectorCipher, crate::volume::Layout),
    payload: PayloadCheck,
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
            crate::finding::Finding::messages(&l.header.notes).join("; ")
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
    let PayloadCheck::Compare { hash } = payload else {
        return Ok((None, l.header.uuid, true));
    };
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
    let (sha, uuid, direct) = verify_output(
        path,
        &f,
        pass,
        None,
        (&*opened.data, src_cipher, layout),
        PayloadCheck::Compare { hash: true },
        so,
        progress,
        interrupt,
    )?;
    let sha = sha.ok_or_else(|| crate::Error::invalid("BUG: no digest"))?;
    Ok((sha, uuid, direct))
}
