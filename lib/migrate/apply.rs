//! The I/O of `migrate`: safe output files, the checkpoint, the streaming re-encryption
//! pipeline and the verification that reads the output back from the device. Every write path
//! here states what a failure leaves behind.
//!
//! ```text
//!  worker 0: pread chunk 0,2,4… → decrypt (legacy) → encrypt (XTS) → O_DIRECT pwrite ─┐
//!  worker 1: pread chunk 1,3,5… → decrypt (legacy) → encrypt (XTS) → O_DIRECT pwrite ─┤
//!                     hasher ◄── in chunk order: SHA-256(plaintext) (its own core),
//!                                every CHECKPOINT_BYTES: mark → flusher: fdatasync, checkpoint
//!  then, once durable (compare_with_source):
//!  workers: O_DIRECT pread output chunk → XTS decrypt ┐ == ? (no second SHA-256)
//!           pread source chunk → legacy decrypt ──────┘
//! ```
//!
//! Output files are only ever created under a temporary name (`OUT.partial`), mode 0600, and
//! renamed to their final name after an fsync and a verification pass; the directory is fsynced
//! after the rename. The checkpoint (`OUT.partial.checkpoint`) records how many payload bytes are
//! durably written, the new header's UUID and the source's identity and parameters — never key
//! material: a resumed run unlocks the partial output's own keyslot with the new passphrase.

use crate::crypto::SectorCipher;
use crate::output::direct::{AlignedBuf, DirectWriter, ReadBack};
use crate::progress::Run;
use crate::source::ByteSource;
use crate::volume::Layout;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Durable progress is recorded at least this often (bytes)…
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
/// …or this often (time), whichever comes first.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5);

/// The three paths of one output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPaths {
    /// Where the result ends up.
    pub final_path: PathBuf,
    /// Where it is built (`FINAL.partial`).
    pub partial: PathBuf,
    /// The checkpoint (`FINAL.partial.checkpoint`).
    pub checkpoint: PathBuf,
}

impl OutputPaths {
    /// Paths for `final_path`.
    pub fn new(final_path: &Path) -> OutputPaths {
        let with = |suffix: &str| {
            let mut s = final_path.as_os_str().to_owned();
            s.push(suffix);
            PathBuf::from(s)
        };
        OutputPaths {
            final_path: final_path.to_path_buf(),
            partial: with(".partial"),
            checkpoint: with(".partial.checkpoint"),
        }
    }
}

/// Refuse outputs that are (or would overwrite) one of the `inputs`.
///
/// # Errors
/// `Unsafe` naming the clash.
pub fn refuse_clobbering_inputs(out: &OutputPaths, inputs: &[&Path]) -> crate::Result<()> {
    for input in inputs {
        for (what, p) in
            [("output", &out.final_path), ("temporary output", &out.partial), ("checkpoint", &out.checkpoint)]
        {
            if crate::output::same_file(p, input) {
                return Err(crate::Error::new(
                    crate::ErrorKind::Unsafe,
                    format!(
                        "the {what} {} is the source {}: refusing to overwrite the original",
                        p.display(),
                        input.display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

pub use crate::output::sync_dir_of;

/// Create (or, with `truncate`, reset) `p` for writing, mode 0600.
///
/// # Errors
/// `Io` with a hint for read-only file systems and permission problems.
pub fn create_partial(p: &Path, truncate: bool) -> crate::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(p)
        .map_err(|e| crate::output::create_error(p, e))
}

/// `pwrite` all of `buf` at `at`, with an error that says where and what to do about a full
/// disk.
///
/// # Errors
/// `Io`.
pub fn write_at(f: &File, p: &Path, buf: &[u8], at: u64) -> crate::Result<()> {
    f.write_all_at(buf, at).map_err(|e| write_error(p, at, e))
}

fn write_error(p: &Path, at: u64, e: std::io::Error) -> crate::Error {
    let hint = if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EFBIG) {
        format!(
            " — the destination is full: free space and rerun with --resume, or delete {} (the source was not touched)",
            p.display()
        )
    } else {
        String::new()
    };
    crate::Error::io(format!("writing {} at byte {at}{hint}", p.display()), e)
}

/// `fdatasync` with context.
///
/// # Errors
/// `Io`.
pub fn sync(f: &File, p: &Path) -> crate::Result<()> {
    f.sync_data().map_err(|e| write_error(p, 0, e)).map_err(|e| e.context("flushing to disk"))
}

/// The checkpoint of an interrupted re-encryption (no key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version (1).
    pub loopkit_checkpoint: u32,
    /// The source file (absolute).
    pub source_path: String,
    /// Its size.
    pub source_size_bytes: u64,
    /// Its parameters.
    pub source: super::plan::SourceInfo,
    /// `luks2` or `luks1`.
    pub target_format: String,
    /// The new header's UUID.
    pub target_uuid: String,
    /// Payload start in the output.
    pub target_payload_offset_bytes: u64,
    /// Payload bytes durably written (a multiple of the chunk size, or all).
    pub done_bytes: u64,
    /// The run that made it was allowed to replace an existing output (`--force`); a resumed
    /// run inherits that permission.
    #[serde(default)]
    pub replace_output: bool,
}

impl Checkpoint {
    /// Read a checkpoint; `Ok(None)` if there is none.
    ///
    /// # Errors
    /// `Corrupt` if it does not parse; `Io`.
    pub fn load(p: &Path) -> crate::Result<Option<Checkpoint>> {
        match std::fs::read(p) {
            Ok(b) if b.len() <= 1 << 20 => serde_json::from_slice(&b).map(Some).map_err(|e| {
                crate::Error::corrupt(format!(
                    "checkpoint {} does not parse ({e}); delete it and start over with --force",
                    p.display()
                ))
            }),
            Ok(_) => Err(crate::Error::corrupt(format!("checkpoint {} is too large", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crate::Error::io(format!("reading checkpoint {}", p.display()), e)),
        }
    }

    /// Write it atomically (temporary file, fsync, rename, fsync the directory). A crash leaves
    /// either the old or the new checkpoint.
    ///
    /// # Errors
    /// `Io`.
    pub fn save(&self, p: &Path) -> crate::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| {
            crate::Error::new(crate::ErrorKind::InvalidInput, format!("BUG: cannot serialise the checkpoint: {e}"))
        })?;
        crate::output::write_file_atomically(p, &text, true, 0o600, &[])
    }
}

/// What the streaming pipeline writes to.
pub struct Sink<'a> {
    /// The output file (synced by the flusher).
    pub file: &'a File,
    /// Its writer (`O_DIRECT` for whole aligned chunks where the file system allows it).
    pub writer: &'a DirectWriter<'a>,
    /// Its path (for messages).
    pub path: &'a Path,
    /// Where payload byte 0 goes.
    pub offset_bytes: u64,
    /// The new payload cipher (IV sector 0 at payload byte 0).
    pub cipher: &'a dyn SectorCipher,
    /// Read every chunk back from the device right after writing it, and compare.
    pub check: Option<ReadCheck<'a>>,
}

/// The in-stream verification of [`stream`]: right after a worker writes a chunk it reads the
/// same range back with `O_DIRECT` (from the device, not from memory: the writes bypassed the
/// page cache, and a direct read writes back any cached page of its range first), decrypts it
/// with `cipher` — the payload cipher built from the header *as read back from the disk* — and
/// compares it byte for byte with the plaintext it still holds. This replaces a second pass over
/// the whole payload after the final `fdatasync` (which had to decrypt the source again) by work
/// that overlaps the stream; the header itself is still read back and unlocked at the end.
#[derive(Clone, Copy)]
pub struct ReadCheck<'a> {
    /// The read-back handle (only worth it when [`ReadBack::is_direct`]).
    pub back: &'a ReadBack,
    /// The payload cipher from the header read back (IV sector 0 at payload byte 0).
    pub cipher: &'a dyn SectorCipher,
}

/// Tuning for [`stream`].
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// Worker threads.
    pub workers: usize,
    /// Chunk size (a multiple of 4096).
    pub chunk_bytes: usize,
    /// Make progress durable (fdatasync + checkpoint) at least every this many bytes.
    pub checkpoint_bytes: u64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        StreamOptions { workers: cores.clamp(1, 8), chunk_bytes: 1 << 20, checkpoint_bytes: CHECKPOINT_BYTES }
    }
}

/// Stream the source payload once: decrypt each chunk, encrypt it and `pwrite` it to `sink`
/// (workers, in parallel; chunks before `done_bytes` are only decrypted), and hash the plaintext
/// in order (this thread). A flusher thread makes the output durable in the background: every
/// [`StreamOptions::checkpoint_bytes`] or [`CHECKPOINT_INTERVAL`] it runs `fdatasync` and then
/// `on_durable(n)` (which records the checkpoint) for the `n` payload bytes written so far.
/// When this returns `Ok`, every byte is written but the tail may not be durable yet: the caller
/// syncs it (possibly while it verifies) and records the final checkpoint.
///
/// What a failure leaves: the output holds every chunk up to the last durable mark (and
/// possibly some later ones); the checkpoint names the mark, so a resumed run rewrites from
/// there. An interrupt stops at a chunk boundary after making what was written durable.
///
/// # Errors
/// `Io` (read or write, with the byte offset), `Interrupted`.
#[allow(clippy::too_many_arguments)]
pub fn stream(
    src: &dyn ByteSource,
    src_cipher: &dyn SectorCipher,
    layout: Layout,
    sink: &Sink<'_>,
    done_bytes: u64,
    opts: StreamOptions,
    on_durable: &mut (dyn FnMut(u64) -> crate::Result<()> + Send),
    run: &mut Run<'_>,
) -> crate::Result<[u8; 32]> {
    let chunk = (opts.chunk_bytes.max(4096) / 4096 * 4096) as u64;
    let nchunks = layout.size_bytes.div_ceil(chunk);
    let done = done_bytes / chunk * chunk;
    run.progress.start("migrate", Some(layout.size_bytes));
    let mut hasher = sha2::Sha256::new();

    let result = std::thread::scope(|scope| -> crate::Result<()> {
        let (mark_tx, mark_rx) = mpsc::channel::<u64>();
        let flusher = scope.spawn(move || -> crate::Result<()> {
            while let Ok(mut m) = mark_rx.recv() {
                while let Ok(n) = mark_rx.try_recv() {
                    m = m.max(n);
                }
                sync(sink.file, sink.path)?;
                // Written through the page cache (no O_DIRECT here)? Do not let it pile up.
                if !sink.writer.is_direct() {
                    let _ = crate::output::direct::drop_cached(sink.file);
                }
                on_durable(m)?;
            }
            Ok(())
        });
        // Chunk c is consumed only after its worker wrote it, and in order, so when it is
        // consumed every chunk up to its end is written: that end may be marked durable.
        let mut marked = done;
        let mut consumed_end = 0u64;
        let mut last_mark = Instant::now();
        let streamed = crate::pipeline::run_ordered(
            nchunks,
            opts.workers,
            || (Vec::with_capacity(chunk as usize), AlignedBuf::new(chunk as usize)),
            |c, (plain, enc)| {
                let start = c * chunk;
                let len = chunk.min(layout.size_bytes - start) as usize;
                read_plaintext(src, src_cipher, layout, start, len, enc, plain)?;
                if start >= done {
                    enc.set_len(len);
                    let out = enc.as_mut_slice();
                    sink.cipher.encrypt_sectors_to(start / 512, plain, out);
                    let at = sink.offset_bytes + start;
                    sink.writer.write_all_at(out, at).map_err(|e| write_error(sink.path, at, e))?;
                    if let Some(check) = sink.check {
                        let got = check.back.read_exact_at(enc, at, len).map_err(|e| {
                            crate::Error::io(
                                format!("reading {} back from the disk at byte {at}", sink.path.display()),
                                e,
                            )
                        })?;
                        check.cipher.decrypt_sectors(start / 512, got);
                        if got != plain.as_slice() {
                            let i = plain.iter().zip(got.iter()).position(|(x, y)| x != y).unwrap_or(0) as u64;
                            return Err(crate::Error::corrupt(format!(
                                "payload byte {} of {}, read back from the disk, differs from the source's plaintext",
                                start + i,
                                sink.path.display()
                            )));
                        }
                    }
                }
                Ok(())
            },
            |c, (plain, _)| {
                hasher.update(plain);
                let end = c * chunk + plain.len() as u64;
                consumed_end = end;
                run.progress.advance(plain.len() as u64);
                if end > marked
                    && (end - marked >= opts.checkpoint_bytes.max(1) || last_mark.elapsed() >= CHECKPOINT_INTERVAL)
                {
                    let _ = mark_tx.send(end);
                    marked = end;
                    last_mark = Instant::now();
                }
                Ok(())
            },
            run.interrupt,
        );
        // A failure or an interrupt stops at a chunk boundary: make what was written durable.
        if streamed.is_err() && consumed_end > marked {
            let _ = mark_tx.send(consumed_end);
        }
        drop(mark_tx);
        let flushed = flusher
            .join()
            .unwrap_or_else(|_| Err(crate::Error::new(crate::ErrorKind::Io, "BUG: the flusher panicked")));
        streamed?;
        flushed
    });
    run.progress.finish();
    result?;
    Ok(hasher.finalize().into())
}

/// The source plaintext of payload bytes `start..start + len` into `plain`. A range without
/// holes is read into `scratch` and decrypted from there into `plain` (no copy of the
/// ciphertext, no zeroing of the reused buffer); a range with holes goes through
/// [`crate::verify::fill_and_decrypt`].
///
/// # Errors
/// `Io` naming the byte offset.
fn read_plaintext(
    src: &dyn ByteSource,
    cipher: &dyn SectorCipher,
    layout: Layout,
    start: u64,
    len: usize,
    scratch: &mut AlignedBuf,
    plain: &mut Vec<u8>,
) -> crate::Result<()> {
    let file_start = layout.offset_bytes + start;
    let regions = crate::verify::data_regions(src, file_start, len)?;
    if !crate::verify::covers(&regions, file_start, len) {
        crate::verify::fill_and_decrypt(src, cipher, layout, start, len, plain, None)?;
        return Ok(());
    }
    scratch.set_len(len);
    src.read_exact_at(scratch.as_mut_slice(), file_start)
        .map_err(|e| crate::Error::io(format!("reading the image at byte {file_start}"), e))?;
    plain.resize(len, 0);
    cipher.decrypt_sectors_to(layout.iv_offset_sectors.wrapping_add(start / 512), scratch.as_slice(), plain);
    Ok(())
}

/// What [`compare_plaintext`] compares the source plaintext with.
#[derive(Clone, Copy)]
pub enum Other<'a> {
    /// The same source bytes decrypted by another cipher (the view a detached header gives).
    Cipher(&'a dyn SectorCipher),
    /// An output read back from the device: its payload starts at `offset_bytes` and is
    /// decrypted by `cipher` (IV sector 0 at payload byte 0).
    Output {
        /// The read-back handle (`O_DIRECT`, or after dropping the cached pages).
        back: &'a ReadBack,
        /// Its path (for messages).
        path: &'a Path,
        /// Where payload byte 0 is.
        offset_bytes: u64,
        /// The payload cipher.
        cipher: &'a dyn SectorCipher,
    },
}

/// Decrypt the source payload chunk by chunk and compare each chunk, byte for byte, with the
/// same plaintext range of `other` — on the workers, in parallel; with `hash`, this thread also
/// computes the SHA-256 of the source plaintext in order. Equal bytes have equal digests, so a
/// second single-stream SHA-256 over `other` is not needed.
///
/// # Errors
/// `Corrupt` at the first payload byte that differs (naming it); `Io` (with the offset),
/// `Interrupted`.
pub fn compare_plaintext(
    src: &dyn ByteSource,
    src_cipher: &dyn SectorCipher,
    layout: Layout,
    other: Other<'_>,
    hash: bool,
    opts: StreamOptions,
    run: &mut Run<'_>,
) -> crate::Result<Option<[u8; 32]>> {
    let chunk = (opts.chunk_bytes.max(4096) / 4096 * 4096) as u64;
    let nchunks = layout.size_bytes.div_ceil(chunk);
    let mut hasher = hash.then(sha2::Sha256::new);
    run.progress.start(if hash { "verifying" } else { "verifying (reading back)" }, Some(layout.size_bytes));
    let r = crate::pipeline::run_ordered(
        nchunks,
        opts.workers,
        || (Vec::with_capacity(chunk as usize), Vec::new(), AlignedBuf::new(chunk as usize)),
        |c, (plain, alt, back_buf)| {
            let start = c * chunk;
            let len = chunk.min(layout.size_bytes - start) as usize;
            read_plaintext(src, src_cipher, layout, start, len, back_buf, plain)?;
            let theirs: &[u8] = match other {
                Other::Cipher(cipher) => {
                    crate::verify::fill_and_decrypt(src, cipher, layout, start, len, alt, None)?;
                    alt
                }
                Other::Output { back, path, offset_bytes, cipher } => {
                    let at = offset_bytes + start;
                    let got = back.read_exact_at(back_buf, at, len).map_err(|e| {
                        crate::Error::io(format!("reading {} back from the disk at byte {at}", path.display()), e)
                    })?;
                    cipher.decrypt_sectors(start / 512, got);
                    got
                }
            };
            if plain.as_slice() != theirs {
                let i = plain.iter().zip(theirs).position(|(x, y)| x != y).unwrap_or(0) as u64;
                return Err(crate::Error::corrupt(match other {
                    Other::Cipher(_) => format!(
                        "payload byte {} decrypts differently through the new header than through the source's parameters",
                        start + i
                    ),
                    Other::Output { path, .. } => format!(
                        "payload byte {} of {}, read back from the disk, differs from the source's plaintext",
                        start + i,
                        path.display()
                    ),
                }));
            }
            Ok(())
        },
        |_, (plain, _, _)| {
            if let Some(h) = hasher.as_mut() {
                h.update(plain);
            }
            run.progress.advance(plain.len() as u64);
            Ok(())
        },
        run.interrupt,
    );
    run.progress.finish();
    r?;
    Ok(hasher.map(|h| h.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::cbc::{CbcSectors, IvScheme};
    use crate::crypto::xts::XtsSectors;
    use crate::progress::{Interrupt, NoProgress};
    use crate::source::MemSource;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("loopkit-apply-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The pipeline's output equals a single-threaded decrypt/encrypt for any worker count and a
    /// resume point; the plaintext hash is the same either way.
    #[test]
    fn stream_matches_reference_and_resumes() {
        let d = scratch("stream");
        let legacy = CbcSectors::new(&[5u8; 32], IvScheme::Plain).unwrap();
        let plain: Vec<u8> = (0..(3 << 20) + 8192).map(|i: u32| (i.wrapping_mul(2654435761) >> 9) as u8).collect();
        let mut ct = plain.clone();
        legacy.encrypt_sectors(0, &mut ct);
        let layout = Layout::new(ct.len() as u64, 0, None, 0);
        let xts = XtsSectors::new(&[7u8; 64], 512).unwrap();
        let mut want = plain.clone();
        xts.encrypt_sectors(0, &mut want);
        let want_sha: [u8; 32] = sha2::Sha256::digest(&plain).into();
        for (workers, done) in [(1usize, 0u64), (3, 0), (2, 1 << 20)] {
            let p = d.join(format!("out-{workers}-{done}"));
            let f = create_partial(&p, true).unwrap();
            let off = 4096;
            if done > 0 {
                // Pretend the first `done` bytes were written by an earlier run.
                write_at(&f, &p, &want[..done as usize], off).unwrap();
            }
            let w = DirectWriter::new(&p, &f).unwrap();
            let sink = Sink { file: &f, writer: &w, path: &p, offset_bytes: off, cipher: &xts, check: None };
            let mut marks = Vec::new();
            let opts = StreamOptions { workers, chunk_bytes: 256 << 10, checkpoint_bytes: 1 << 20 };
            let sha = stream(
                &MemSource::new(ct.clone()),
                &legacy,
                layout,
                &sink,
                done,
                opts,
                &mut |n| {
                    marks.push(n);
                    Ok(())
                },
                &mut Run::new(&mut NoProgress, &Interrupt::new()),
            )
            .unwrap();
            assert_eq!(sha, want_sha);
            assert!(
                marks.windows(2).all(|w| w[0] < w[1]) && marks.iter().all(|&m| m > done && m <= layout.size_bytes),
                "{marks:?}"
            );
            let got = std::fs::read(&p).unwrap();
            assert_eq!(&got[off as usize..], &want[..], "workers {workers} done {done}");
            // The read-back comparison accepts it, and finds a changed byte.
            let src = MemSource::new(ct.clone());
            f.sync_data().unwrap();
            let back = ReadBack::open(&p, &f).unwrap();
            let output = Other::Output { back: &back, path: &p, offset_bytes: off, cipher: &xts };
            let sha = compare_plaintext(
                &src,
                &legacy,
                layout,
                output,
                true,
                opts,
                &mut Run::new(&mut NoProgress, &Interrupt::new()),
            );
            assert_eq!(sha.unwrap(), Some(want_sha));
            f.write_all_at(&[got[off as usize + 5000] ^ 1], off + 5000).unwrap();
            f.sync_data().unwrap();
            let back = ReadBack::open(&p, &f).unwrap();
            let output = Other::Output { back: &back, path: &p, offset_bytes: off, cipher: &xts };
            let e = compare_plaintext(
                &src,
                &legacy,
                layout,
                output,
                false,
                opts,
                &mut Run::new(&mut NoProgress, &Interrupt::new()),
            )
            .unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
            assert!(e.to_string().contains("payload byte 4992 "), "{e}");
        }
        // Two ciphers over the same source: equal, and different.
        let src = MemSource::new(ct.clone());
        let same = CbcSectors::new(&[5u8; 32], IvScheme::Plain).unwrap();
        let o = StreamOptions::default();
        let sha = compare_plaintext(
            &src,
            &legacy,
            layout,
            Other::Cipher(&same),
            true,
            o,
            &mut Run::new(&mut NoProgress, &Interrupt::new()),
        );
        assert_eq!(sha.unwrap(), Some(want_sha));
        let other = CbcSectors::new(&[5u8; 32], IvScheme::Null).unwrap();
        let e = compare_plaintext(
            &src,
            &legacy,
            layout,
            Other::Cipher(&other),
            true,
            o,
            &mut Run::new(&mut NoProgress, &Interrupt::new()),
        );
        assert_eq!(e.unwrap_err().kind(), crate::ErrorKind::Corrupt);
        let i = Interrupt::new();
        i.trigger();
        let p = d.join("int");
        let f = create_partial(&p, true).unwrap();
        let w = DirectWriter::new(&p, &f).unwrap();
        let sink = Sink { file: &f, writer: &w, path: &p, offset_bytes: 0, cipher: &xts, check: None };
        let e = stream(
            &MemSource::new(ct),
            &legacy,
            layout,
            &sink,
            0,
            StreamOptions::default(),
            &mut |_| Ok(()),
            &mut Run::new(&mut NoProgress, &i),
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Interrupted);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// With a read check, every chunk is read back and compared as it is written: the right
    /// cipher passes, another one fails on the first chunk with the byte it differs at.
    #[test]
    fn stream_reads_each_chunk_back() {
        let d = scratch("check");
        let legacy = CbcSectors::new(&[5u8; 32], IvScheme::Plain).unwrap();
        let plain: Vec<u8> = (0..(2 << 20) + 4608).map(|i: u32| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
        let mut ct = plain.clone();
        legacy.encrypt_sectors(0, &mut ct);
        let layout = Layout::new(ct.len() as u64, 0, None, 0);
        let xts = XtsSectors::new(&[7u8; 64], 512).unwrap();
        let other = XtsSectors::new(&[8u8; 64], 512).unwrap();
        let want_sha: [u8; 32] = sha2::Sha256::digest(&plain).into();
        for (name, reader) in [("same", &xts), ("other", &other)] {
            let p = d.join(name);
            let f = create_partial(&p, true).unwrap();
            let w = DirectWriter::new(&p, &f).unwrap();
            let back = ReadBack::open(&p, &f).unwrap();
            let check = Some(ReadCheck { back: &back, cipher: reader });
            let sink = Sink { file: &f, writer: &w, path: &p, offset_bytes: 8192, cipher: &xts, check };
            let opts = StreamOptions { workers: 2, chunk_bytes: 256 << 10, checkpoint_bytes: 1 << 20 };
            let src = MemSource::new(ct.clone());
            let r = stream(
                &src,
                &legacy,
                layout,
                &sink,
                0,
                opts,
                &mut |_| Ok(()),
                &mut Run::new(&mut NoProgress, &Interrupt::new()),
            );
            if name == "same" {
                assert_eq!(r.unwrap(), want_sha);
                let mut want = plain.clone();
                xts.encrypt_sectors(0, &mut want);
                assert_eq!(&std::fs::read(&p).unwrap()[8192..], &want[..]);
            } else {
                let e = r.unwrap_err();
                assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{e}");
                assert!(e.to_string().contains("read back from the disk"), "{e}");
            }
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn safe_files() {
        let d = scratch("files");
        let p = d.join("k");
        std::fs::write(&p, b"two").unwrap();
        let out = OutputPaths::new(&d.join("x.img"));
        assert!(refuse_clobbering_inputs(&out, &[&p]).is_ok());
        let out2 = OutputPaths::new(&d.join(".").join("k"));
        assert_eq!(refuse_clobbering_inputs(&out2, &[&p]).unwrap_err().kind(), crate::ErrorKind::Unsafe);
        std::fs::hard_link(&p, d.join("link")).unwrap();
        assert!(refuse_clobbering_inputs(&OutputPaths::new(&d.join("link")), &[&p]).is_err());
        let c = Checkpoint {
            loopkit_checkpoint: 1,
            source_path: "/x".into(),
            source_size_bytes: 1,
            source: crate::migrate::plan::SourceInfo {
                scheme: "plain".into(),
                cipher: None,
                key_bits: None,
                key_derivation: None,
                multi_key: None,
                offset_bytes: 0,
                iv_offset_sectors: 0,
                payload_bytes: 512,
            },
            target_format: "luks2".into(),
            target_uuid: "u".into(),
            target_payload_offset_bytes: 16 << 20,
            done_bytes: 0,
            replace_output: false,
        };
        c.save(&out.checkpoint).unwrap();
        assert_eq!(Checkpoint::load(&out.checkpoint).unwrap(), Some(c));
        assert_eq!(Checkpoint::load(&d.join("none")).unwrap(), None);
        std::fs::write(&out.partial, b"{").unwrap();
        assert!(Checkpoint::load(&out.partial).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
