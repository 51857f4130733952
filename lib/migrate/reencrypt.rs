//! `--mode reencrypt`: a new LUKS2 (or LUKS1) container, aes-xts-plain64 with a fresh 512-bit
//! key, streamed once with checkpoints (`--resume`), made durable, then verified by reading it
//! back from the device and comparing its plaintext with the source's before it is renamed
//! into place.

use super::apply::{self, Checkpoint, OutputPaths, Sink, StreamOptions};
use super::kdf::choose_kdf;
use super::plan::{self, SourceInfo, TargetLayout};
use super::{Format, KdfOptions, Outcome, now_iso, open_command, source_path};
use crate::bytes::hex;
use crate::crypto::{Key, Passphrase, SectorCipher};
use crate::formats::luks::{self, keyslot::Kdf, write};
use crate::image::Opened;
use crate::progress::Run;
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
    run: &mut Run<'_>,
) -> crate::Result<Outcome> {
    let job = Job::new(opened, new_pass, opts)?;
    let mut notes = Vec::new();
    let resume_from = match job.decide()? {
        Decision::AlreadyDone => return job.verify_completed(notes, run),
        Decision::Start => None,
        Decision::Resume(c) => Some(*c),
    };
    let target = job.open_target(resume_from.as_ref(), &mut notes)?;
    let streamed = job.stream(&target, run, &mut notes)?;
    job.stamp_provenance(&target, &streamed.src_sha, &mut notes)?;
    job.verify_and_commit(target, streamed, resume_from, notes, run)
}

/// What one `reencrypt` call works with, fixed before anything is written.
struct Job<'a> {
    opened: &'a Opened,
    new_pass: &'a Passphrase,
    opts: &'a ReencryptOptions,
    layout: crate::volume::Layout,
    src_cipher: std::sync::Arc<dyn SectorCipher>,
    info: SourceInfo,
    out: OutputPaths,
    target: TargetLayout,
    src_path: String,
    src_size: u64,
    /// The checkpoint an earlier run left, if any.
    existing: Option<Checkpoint>,
    /// Whether this run (or the run it continues) may replace `OUT`.
    replace: bool,
}

/// How [`reencrypt`] goes on after looking at what an earlier run left.
enum Decision {
    /// An earlier run renamed `OUT` into place: verify it again and finish.
    AlreadyDone,
    /// A fresh start (new header, payload from byte 0).
    Start,
    /// Continue the interrupted run of this checkpoint.
    Resume(Box<Checkpoint>),
}

/// The partial output being written: its handle, volume key and header identity.
struct Target {
    file: std::fs::File,
    vk: Key,
    uuid: String,
    kdf_desc: Option<String>,
    /// Payload bytes already durable (from the checkpoint of a resumed run).
    done: u64,
}

/// What streaming the payload produced.
struct Streamed {
    src_sha: [u8; 32],
    /// Every payload byte was read back from the device and compared while streaming.
    payload_checked: bool,
}

impl<'a> Job<'a> {
    /// The source payload, the output paths and the refusals that need no I/O on the output.
    fn new(opened: &'a Opened, new_pass: &'a Passphrase, opts: &'a ReencryptOptions) -> crate::Result<Self> {
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
        let existing = Checkpoint::load(&out.checkpoint)?;
        // A resumed run may replace OUT if the run it continues was allowed to.
        let replace = opts.force || (opts.resume && existing.as_ref().is_some_and(|c| c.replace_output));
        Ok(Job {
            opened,
            new_pass,
            opts,
            layout,
            src_cipher,
            info,
            target: TargetLayout::new(opts.format == Format::Luks2, layout.size_bytes),
            src_path: source_path(opened),
            src_size: opened.file.size_bytes(),
            out,
            existing,
            replace,
        })
    }

    /// Start, resume or finish an earlier run — or refuse (an output or a leftover in the way).
    fn decide(&self) -> crate::Result<Decision> {
        let (opts, out) = (self.opts, &self.out);
        let final_exists = out.final_path.exists();
        let partial_exists = out.partial.exists();
        if opts.resume && final_exists && !partial_exists {
            return Ok(Decision::AlreadyDone);
        }
        if final_exists && !self.replace {
            return Err(crate::Error::new(
                crate::ErrorKind::Unsafe,
                format!("{} already exists; give --force to replace it", out.final_path.display()),
            ));
        }
        if (partial_exists || self.existing.is_some()) && !opts.resume && !opts.force {
            return Err(crate::Error::new(
                crate::ErrorKind::Unsafe,
                format!(
                    "{} is left from an interrupted migration; rerun with --resume to continue it, or --force to start over",
                    out.partial.display()
                ),
            ));
        }
        let Some(c) = self.existing.as_ref().filter(|_| opts.resume && !opts.force && partial_exists) else {
            return Ok(Decision::Start);
        };
        let want = Checkpoint {
            done_bytes: c.done_bytes,
            replace_output: c.replace_output,
            ..self.checkpoint(&c.target_uuid)
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
        Ok(Decision::Resume(Box::new(c.clone())))
    }

    /// The checkpoint of this run for the header `uuid`, nothing durable yet.
    fn checkpoint(&self, uuid: &str) -> Checkpoint {
        checkpoint_for(&self.src_path, self.src_size, &self.info, self.opts.format, uuid, self.target, self.replace)
    }

    /// `--resume` found `OUT` complete: verify it against the source and finish.
    fn verify_completed(&self, mut notes: Vec<crate::finding::Finding>, run: &mut Run<'_>) -> crate::Result<Outcome> {
        let out = &self.out;
        let (sha_src, uuid, direct) = self.verify_existing(run).map_err(|e| match e.kind() {
            crate::ErrorKind::Corrupt => crate::Error::new(
                crate::ErrorKind::Unsafe,
                format!(
                    "{} exists but its payload differs from the source ({e}); use --force to replace it",
                    out.final_path.display()
                ),
            ),
            _ => e,
        })?;
        if !direct {
            notes.push(crate::finding::Finding::info("migrate.read-back-buffered", READ_BACK_FALLBACK));
        }
        let _ = std::fs::remove_file(&out.checkpoint);
        notes.push(crate::finding::Finding::info(
            "migrate.verified-again",
            "an earlier run had already completed this migration; it was verified again",
        ));
        // Compared byte for byte: the same plaintext, the same digest.
        Ok(self.outcome(uuid, sha_src, None, Some(self.layout.size_bytes), notes))
    }

    /// The partial output: reopened from the checkpoint `resume_from`, or created with a fresh
    /// header (also when the interrupted run had made no payload durable).
    fn open_target(
        &self,
        resume_from: Option<&Checkpoint>,
        notes: &mut Vec<crate::finding::Finding>,
    ) -> crate::Result<Target> {
        let size = self.layout.size_bytes;
        let Some(c) = resume_from else { return self.fresh_target() };
        match reopen_partial(&self.out, c, self.new_pass) {
            Ok((file, vk, kdf_desc)) => {
                notes.push(crate::finding::Finding::info(
                    "migrate.resumed",
                    format!("resumed after {} of {size} payload bytes", c.done_bytes.min(size)),
                ));
                Ok(Target { file, vk, uuid: c.target_uuid.clone(), kdf_desc, done: c.done_bytes.min(size) })
            }
            // Interrupted before any payload was durable (even mid-header): nothing to keep.
            Err(e) if c.done_bytes == 0 && e.kind() != crate::ErrorKind::WrongKey => {
                notes.push(crate::finding::Finding::info(
                    "migrate.started-over",
                    "the interrupted run had written no payload yet; started over",
                ));
                self.fresh_target()
            }
            Err(e) => Err(e),
        }
    }

    /// A new volume key and header in `OUT.partial`, made durable after its checkpoint.
    fn fresh_target(&self) -> crate::Result<Target> {
        let (opts, out) = (self.opts, &self.out);
        let (kdf, digest_iterations) = choose_kdf(&opts.kdf, opts.format)?;
        let vk = Key::new(luks::random_bytes::<64>()?.to_vec());
        let written = new_header(&vk, self.new_pass, opts, &kdf, digest_iterations, self.target)?;
        // The checkpoint first: a crash from here on leaves a checkpoint with done = 0, which a
        // resumed run turns into a fresh start (keeping the --force permission).
        self.checkpoint(&written.uuid).save(&out.checkpoint)?;
        let file = apply::create_partial(&out.partial, true)?;
        file.set_len(self.target.total_bytes())
            .map_err(|e| crate::Error::io(format!("sizing {}", out.partial.display()), e))?;
        apply::write_at(&file, &out.partial, &written.bytes, 0)?;
        apply::sync(&file, &out.partial)?;
        apply::sync_dir_of(&out.partial)?;
        Ok(Target { file, vk, uuid: written.uuid, kdf_desc: Some(kdf.describe()), done: 0 })
    }

    /// Wrap a verification error with what was left behind.
    fn verification_failed(&self, e: crate::Error) -> crate::Error {
        e.context(format!(
            "verification failed ({} was kept for inspection and {} was not created)",
            self.out.partial.display(),
            self.out.final_path.display()
        ))
    }

    /// Stream the payload from `t.done` on: decrypt → encrypt aes-xts-plain64 → `O_DIRECT`
    /// writes, each chunk read back from the device and compared where both directions bypass
    /// the page cache, with checkpoints as the output becomes durable.
    fn stream(
        &self,
        t: &Target,
        run: &mut Run<'_>,
        notes: &mut Vec<crate::finding::Finding>,
    ) -> crate::Result<Streamed> {
        let out = &self.out;
        let dst_cipher = crate::crypto::xts::XtsSectors::new(t.vk.bytes(), 512)?;
        let writer = crate::output::direct::DirectWriter::new(&out.partial, &t.file)
            .map_err(|e| crate::Error::io(format!("opening {} for direct writes", out.partial.display()), e))?;
        // Read each chunk back from the device as it is written (apply::ReadCheck) when both
        // directions bypass the page cache; the payload cipher for that comes from the header as
        // it reads back from the disk (with the key in memory: the keyslot is unlocked at the end).
        let back = crate::output::direct::ReadBack::open(&out.partial, &t.file)
            .map_err(|e| crate::Error::io(format!("opening {} to read it back", out.partial.display()), e))?;
        let disk_cipher = if writer.is_direct() && back.is_direct() {
            Some(
                payload_cipher_from_disk(&out.partial, &t.vk, self.layout.size_bytes, self.target.payload_offset_bytes)
                    .map_err(|e| self.verification_failed(e))?,
            )
        } else {
            None
        };
        let sink = Sink {
            file: &t.file,
            writer: &writer,
            path: &out.partial,
            offset_bytes: self.target.payload_offset_bytes,
            cipher: &dst_cipher,
            check: disk_cipher.as_deref().map(|cipher| apply::ReadCheck { back: &back, cipher }),
        };
        let base = self.checkpoint(&t.uuid);
        let mut on_durable = |n: u64| Checkpoint { done_bytes: n, ..base.clone() }.save(&out.checkpoint);
        let src_sha = apply::stream(
            &*self.opened.data,
            &*self.src_cipher,
            self.layout,
            &sink,
            t.done,
            self.opts.stream,
            &mut on_durable,
            run,
        )
        .map_err(|e| if e.kind() == crate::ErrorKind::Corrupt { self.verification_failed(e) } else { e })?;
        if !writer.is_direct() {
            notes.push(crate::finding::Finding::info(
                "migrate.write-buffered",
                format!(
                    "the file system of {} does not take O_DIRECT writes: the output went through the page cache",
                    out.partial.display()
                ),
            ));
        }
        // Every chunk this run wrote was read back from the device and compared (unless O_DIRECT
        // reads were refused on the way); a resumed run's earlier chunks were not.
        Ok(Streamed { src_sha, payload_checked: sink.check.is_some() && back.is_direct() && t.done == 0 })
    }

    /// Provenance (LUKS2): rewrite both header copies with the token (flushed by the caller).
    fn stamp_provenance(
        &self,
        t: &Target,
        src_sha: &[u8; 32],
        notes: &mut Vec<crate::finding::Finding>,
    ) -> crate::Result<()> {
        let out = &self.out;
        if self.opts.format != Format::Luks2 {
            notes.push(crate::finding::Finding::info(
                "migrate.no-provenance",
                "LUKS1 has no place for provenance metadata; the source and its SHA-256 are only in this report",
            ));
            return Ok(());
        }
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
        meta.tokens.insert(id, plan::provenance_token(&self.info, &self.src_path, &hex(src_sha), &now_iso()));
        let bytes = write::luks2_rewrite(&l2, &meta, l2.bin.seqid + 1)?;
        apply::write_at(&t.file, &out.partial, &bytes, 0)
    }

    /// Make everything durable and record it; read the output back from the device (not from
    /// the page cache) through the normal LUKS reader with the new passphrase and compare its
    /// plaintext with the source's, byte for byte; then rename it into place.
    fn verify_and_commit(
        &self,
        t: Target,
        streamed: Streamed,
        resume_from: Option<Checkpoint>,
        mut notes: Vec<crate::finding::Finding>,
        run: &mut Run<'_>,
    ) -> crate::Result<Outcome> {
        let (out, layout) = (&self.out, self.layout);
        apply::sync(&t.file, &out.partial)?;
        Checkpoint { done_bytes: layout.size_bytes, ..self.checkpoint(&t.uuid) }.save(&out.checkpoint)?;
        let payload = if streamed.payload_checked { PayloadCheck::Done } else { PayloadCheck::Compare { hash: false } };
        let read_back = self.verify_output(&out.partial, &t.file, Some(&t.vk), payload, run);
        let Target { file, uuid, kdf_desc, .. } = t;
        drop(file);
        let (_, out_uuid, direct) = read_back.map_err(|e| self.verification_failed(e))?;
        if out_uuid != uuid {
            return Err(crate::Error::corrupt(format!(
                "verification failed: {} reads back with UUID {out_uuid}, not {uuid}; {} was not created",
                out.partial.display(),
                out.final_path.display()
            )));
        }
        if !direct {
            notes.push(crate::finding::Finding::info("migrate.read-back-buffered", READ_BACK_FALLBACK));
        }
        if out.final_path.exists() && !self.replace {
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
        // Byte-for-byte equal plaintext: the same SHA-256.
        Ok(self.outcome(uuid, streamed.src_sha, kdf_desc, resume_from.map(|c| c.done_bytes), notes))
    }

    fn outcome(
        &self,
        uuid: String,
        sha: [u8; 32],
        kdf: Option<String>,
        resumed_from_bytes: Option<u64>,
        notes: Vec<crate::finding::Finding>,
    ) -> Outcome {
        Outcome {
            mode: super::MigrationMode::Reencrypt,
            output: Some(self.out.final_path.clone()),
            format: Some(self.opts.format),
            uuid: Some(uuid),
            source: self.info.clone(),
            source_sha256: Some(sha),
            migrated_sha256: Some(sha),
            kdf,
            resumed_from_bytes,
            cryptsetup: Some(open_command(&self.out.final_path, None)),
            notes,
        }
    }
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

impl Job<'_> {
    /// Verify the output `path` (its writer `written`, synced) from the device: drop its cached
    /// pages, read the header back, check it reads cleanly, unlock it with the new passphrase
    /// (a full keyslot unlock; with `vk`, the key must be that one), then — unless `payload` says
    /// it was done while streaming — read the payload back (`O_DIRECT` where possible) and
    /// compare its plaintext with the source's byte for byte (and, with `hash`, hash the source
    /// plaintext). Returns (source sha256 if hashed, uuid, whether reads were O_DIRECT).
    fn verify_output(
        &self,
        path: &Path,
        written: &std::fs::File,
        vk: Option<&Key>,
        payload: PayloadCheck,
        run: &mut Run<'_>,
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
        let u =
            l.unlock(&src, self.new_pass).map_err(|e| e.context(format!("unlocking {} read back", path.display())))?;
        if let Some(vk) = vk
            && !bool::from(u.volume_key.bytes().ct_eq(vk.bytes()))
        {
            return Err(crate::Error::corrupt(format!("{}: the keyslot yields another volume key", path.display())));
        }
        let (ol, oc) = l.payload(src.size_bytes(), &u.volume_key)?;
        if ol.size_bytes != self.layout.size_bytes || ol.iv_offset_sectors != 0 {
            return Err(crate::Error::corrupt(format!(
                "{} maps {} payload bytes (IV offset {}), the source has {}",
                path.display(),
                ol.size_bytes,
                ol.iv_offset_sectors,
                self.layout.size_bytes
            )));
        }
        let PayloadCheck::Compare { hash } = payload else {
            return Ok((None, l.header.uuid, true));
        };
        let other = apply::Other::Output { back: &back, path, offset_bytes: ol.offset_bytes, cipher: &*oc };
        let (data, cipher) = (&*self.opened.data, &*self.src_cipher);
        let sha = apply::compare_plaintext(data, cipher, self.layout, other, hash, self.opts.stream, run)?;
        Ok((sha, l.header.uuid, back.is_direct()))
    }

    /// `--resume` found `OUT` complete: compare `OUT` (unlocked with the new passphrase, read
    /// from the device) with the source, hashing the source plaintext. Returns (sha256, uuid,
    /// O_DIRECT reads).
    fn verify_existing(&self, run: &mut Run<'_>) -> crate::Result<([u8; 32], String, bool)> {
        let path = &self.out.final_path;
        let f = std::fs::File::open(path).map_err(|e| crate::Error::io(format!("opening {}", path.display()), e))?;
        let (sha, uuid, direct) = self.verify_output(path, &f, None, PayloadCheck::Compare { hash: true }, run)?;
        let sha = sha.ok_or_else(|| crate::Error::invalid("BUG: no digest"))?;
        Ok((sha, uuid, direct))
    }
}
