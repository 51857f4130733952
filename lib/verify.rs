//! `verify`: stream the whole payload once — read, decrypt, SHA-256 — in a multi-threaded
//! pipeline with constant memory, then check the file system against the payload and collect
//! [`Problem`]s. Problems found in the data are not errors: `Err` means the check could not run.
//!
//! ```text
//!  worker 0: pread chunk 0, 2, 4… (holes not read) → decrypt ─┐ bounded channels
//!  worker 1: pread chunk 1, 3, 5… (holes not read) → decrypt ─┤ (3 × 1 MiB each)
//!                                                   hasher ◄──┘ in chunk order → SHA-256
//! ```
//! Holes in a sparse ciphertext file are all-zero ciphertext; they are decrypted without reading
//! the disk (and, for CBC, without AES work: see `SectorCipher::decrypt_zero_sector`).

use crate::crypto::SectorCipher;
use crate::image::{Content, Opened};
use crate::progress::Run;
use crate::source::{ByteSource, SECTOR_BYTES};
use crate::volume::Layout;
use sha2::Digest;
use std::ops::Range;

/// Pipeline tuning.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Decrypting workers (default: available cores − 1, at least 1).
    pub workers: usize,
    /// Bytes per chunk (a multiple of 512; default 1 MiB).
    pub chunk_bytes: usize,
    /// Check only the dvdisaster error-correction data, not the payload (no secret needed).
    pub ecc_only: bool,
    /// How thoroughly RS03 codewords are checked.
    pub ecc_syndromes: crate::formats::dvdisaster::verify::SyndromeCheck,
}

impl Default for Options {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Options {
            workers: cores.saturating_sub(1).clamp(1, 8),
            chunk_bytes: 1 << 20,
            ecc_only: false,
            ecc_syndromes: Default::default(),
        }
    }
}

/// The result of streaming a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadDigest {
    /// Payload start in the image.
    pub offset_bytes: u64,
    /// Payload length.
    pub size_bytes: u64,
    /// SHA-256 of the decrypted payload.
    pub sha256: [u8; 32],
    /// Bytes that were holes in the image (not read from disk).
    pub hole_bytes: u64,
    /// File byte ranges that could not be read (taken as zero ciphertext), merged, at most
    /// [`MAX_UNREADABLE_RANGES`] of them.
    pub unreadable: Vec<Range<u64>>,
    /// Total unreadable bytes (all of them, even beyond the listed ranges).
    pub unreadable_bytes: u64,
}

/// Most unreadable ranges kept in a [`PayloadDigest`] (the byte total is always exact).
pub const MAX_UNREADABLE_RANGES: usize = 10_000;

/// Findings in the data (the library-wide model, [`crate::finding`]).
pub use crate::finding::{Finding as Problem, Severity};

/// Stream `layout` of `src` through `cipher` and hash the plaintext.
///
/// # Errors
/// `Io` on read errors (with the byte offset), `Interrupted` when `interrupt` fires.
pub fn hash_payload(
    src: &dyn ByteSource,
    cipher: &dyn SectorCipher,
    layout: Layout,
    opts: Options,
    run: &mut Run<'_>,
) -> crate::Result<PayloadDigest> {
    let chunk = (opts.chunk_bytes.max(512) / 512 * 512) as u64;
    let nchunks = layout.size_bytes.div_ceil(chunk);
    run.progress.start("verify", Some(layout.size_bytes));
    let mut hasher = sha2::Sha256::new();
    let mut hole_bytes = 0u64;
    let mut unreadable: Vec<Range<u64>> = Vec::new();
    let mut unreadable_bytes = 0u64;

    let result = crate::pipeline::run_ordered(
        nchunks,
        opts.workers,
        || (Vec::with_capacity(chunk as usize), 0u64, Vec::new()),
        |c, (buf, holes, bad)| {
            let start = c * chunk;
            let len = chunk.min(layout.size_bytes - start) as usize;
            bad.clear();
            *holes = fill_and_decrypt(src, cipher, layout, start, len, buf, Some(bad))?;
            Ok(())
        },
        |_, (buf, holes, bad)| {
            hasher.update(buf);
            hole_bytes += *holes;
            for r in bad {
                unreadable_bytes += r.end - r.start;
                let full = unreadable.len() >= MAX_UNREADABLE_RANGES;
                match unreadable.last_mut() {
                    Some(last) if last.end == r.start => last.end = r.end,
                    _ if !full => unreadable.push(r.clone()),
                    _ => {}
                }
            }
            run.progress.advance(buf.len() as u64);
            Ok(())
        },
        run.interrupt,
    );
    run.progress.finish();
    result?;
    Ok(PayloadDigest {
        offset_bytes: layout.offset_bytes,
        size_bytes: layout.size_bytes,
        sha256: hasher.finalize().into(),
        hole_bytes,
        unreadable,
        unreadable_bytes,
    })
}

/// The data regions of the image bytes `file_start..file_start + len`.
pub(crate) fn data_regions(src: &dyn ByteSource, file_start: u64, len: usize) -> crate::Result<Vec<Range<u64>>> {
    src.data_regions(file_start..file_start + len as u64)
        .map_err(|e| crate::Error::io(format!("finding data regions at byte {file_start}"), e))
}

/// Whether `regions` is one region covering all of `file_start..file_start + len` (no hole).
pub(crate) fn covers(regions: &[Range<u64>], file_start: u64, len: usize) -> bool {
    matches!(regions, [r] if r.start == file_start && r.end == file_start + len as u64)
}

/// Read `len` payload bytes at payload offset `start` into `buf` (holes become zero ciphertext
/// without a read) and decrypt them. Returns the number of hole bytes. Without `unreadable` a
/// read error fails; with it, read errors are narrowed down to 512-byte sectors, which become
/// zero ciphertext and whose file byte ranges are appended to `unreadable`
/// ([`crate::source::read_exact_tolerant`]).
pub(crate) fn fill_and_decrypt(
    src: &dyn ByteSource,
    cipher: &dyn SectorCipher,
    layout: Layout,
    start: u64,
    len: usize,
    buf: &mut Vec<u8>,
    mut unreadable: Option<&mut Vec<Range<u64>>>,
) -> crate::Result<u64> {
    let file_start = layout.offset_bytes + start;
    let regions = data_regions(src, file_start, len)?;
    // One region over the whole range overwrites every byte: no need to zero the buffer first
    // (a reused buffer keeps its length, so this saves a pass over memory per chunk).
    if !covers(&regions, file_start, len) {
        buf.clear();
    }
    buf.resize(len, 0);
    let mut data_bytes = 0u64;
    for r in &regions {
        let a = (r.start - file_start) as usize;
        let b = (r.end - file_start) as usize;
        let out = &mut buf[a..b];
        match unreadable.as_deref_mut() {
            Some(bad) => crate::source::read_exact_tolerant(src, out, r.start, bad),
            None => src.read_exact_at(out, r.start),
        }
        .map_err(|e| crate::Error::io(format!("reading the image at byte {}", r.start), e))?;
        data_bytes += r.end - r.start;
    }
    let first_iv = layout.iv_offset_sectors.wrapping_add(start / SECTOR_BYTES);
    // Whole chunk of data, or a cipher whose unit is larger than 512 (holes are already zero
    // ciphertext in `buf`, so decrypting everything is correct, just not free).
    if data_bytes == len as u64 || cipher.sector_bytes() != 512 {
        cipher.decrypt_sectors(first_iv, buf);
        return Ok(0);
    }
    // Mixed chunk: runs of sectors touching data are decrypted; pure-hole sectors take the cheap path.
    let nsec = len / 512;
    let is_hole = |s: usize| {
        let a = file_start + (s * 512) as u64;
        let b = a + 512;
        !regions.iter().any(|r| r.start < b && r.end > a)
    };
    let mut s = 0;
    let mut zero = [0u8; 512];
    while s < nsec {
        if is_hole(s) {
            cipher.decrypt_zero_sector(first_iv.wrapping_add(s as u64), &mut zero);
            buf[s * 512..(s + 1) * 512].copy_from_slice(&zero);
            s += 1;
        } else {
            let mut e = s + 1;
            while e < nsec && !is_hole(e) {
                e += 1;
            }
            cipher.decrypt_sectors(first_iv.wrapping_add(s as u64), &mut buf[s * 512..e * 512]);
            s = e;
        }
    }
    Ok(len as u64 - data_bytes)
}

/// Everything `verify` found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The payload digest (None when there was nothing to stream, e.g. locked LUKS).
    pub digest: Option<PayloadDigest>,
    /// Problems found.
    pub problems: Vec<Problem>,
    /// The file-level check (ext2/3/4 and ISO9660 only; None for other file systems).
    pub files: Option<crate::manifest::FilesCheck>,
    /// What checking the dvdisaster error-correction data found (None: the image has none).
    pub ecc: Option<crate::formats::dvdisaster::verify::Report>,
    /// What the bad, unreadable and uncorrectable sectors hit (None: nothing is damaged).
    pub damage: Option<crate::damage::Damage>,
}

impl Outcome {
    /// No error-severity problems.
    pub fn ok(&self) -> bool {
        !self.problems.iter().any(|p| p.severity == Severity::Error)
    }
}

/// Verify an opened image: check its dvdisaster error-correction data if it has any, then
/// stream its payload (only the data part of an augmented image) and check the file system
/// against it.
///
/// # Errors
/// `InvalidInput` when the image needs a secret that was not given; `Io`; `Interrupted`.
pub fn verify(opened: &Opened, opts: Options, run: &mut Run<'_>) -> crate::Result<Outcome> {
    verify_files(opened, opts, None, run)
}

/// [`verify`], then walk the files of an ext2/3/4 or ISO9660 file system (directories, inodes,
/// block maps) and, when `reference` is given, read and hash every file and compare them with it
/// ([`crate::manifest::check`]).
///
/// Damage found (ECC-checked sectors, unreadable ranges) is then mapped to the files it hits
/// ([`crate::damage`]).
///
/// # Errors
/// As [`verify`]; `Unsupported` when a reference is given but the file system cannot be read.
pub fn verify_files(
    opened: &Opened,
    opts: Options,
    reference: Option<&crate::manifest::Reference>,
    run: &mut Run<'_>,
) -> crate::Result<Outcome> {
    let mut outcome = check_files(opened, opts, reference, run)?;
    let bad =
        crate::damage::from_checks(opened, outcome.ecc.as_ref(), outcome.digest.as_ref().map(|d| &d.unreadable[..]));
    outcome.damage = crate::damage::assess(opened, &bad, run.interrupt)?;
    Ok(outcome)
}

fn check_files(
    opened: &Opened,
    opts: Options,
    reference: Option<&crate::manifest::Reference>,
    run: &mut Run<'_>,
) -> crate::Result<Outcome> {
    let mut outcome = verify_payload(opened, opts, run)?;
    if opts.ecc_only {
        return Ok(outcome);
    }
    let readable = opened.filesystem().is_some_and(|f| f.kind.is_readable());
    if !readable && reference.is_none() {
        return Ok(outcome);
    }
    if !readable {
        // File-level checks were asked for, but the payload holds no file system loopkit reads
        // (swap, an LVM physical volume, a partition table, raw data).
        if !outcome.problems.iter().any(|p| p.code == "fs.unrecognized") {
            let what = opened.filesystem().map_or_else(|| "unrecognised data".to_string(), |f| f.kind.describe());
            outcome.problems.push(Problem::error(
                "fs.unrecognized",
                format!(
                    "--manifest/--against ask for file-level checks, but the payload holds {what}, not a file system \
                     loopkit reads (ext2/3/4, ISO 9660)"
                ),
            ));
        }
        return Ok(outcome);
    }
    let Some(vol) = opened.volume()? else { return Ok(outcome) };
    let fs = match crate::fs::open(&*vol) {
        Ok(fs) => fs,
        Err(e) if reference.is_some() => return Err(e),
        Err(e) => {
            outcome.problems.push(Problem::error("fs.unreadable", format!("the file system cannot be read: {e}")));
            return Ok(outcome);
        }
    };
    let (files, problems) = crate::manifest::check(&*fs, reference, opts.workers, run)?;
    outcome.problems.extend(problems);
    outcome.files = Some(files);
    Ok(outcome)
}

fn verify_payload(opened: &Opened, opts: Options, run: &mut Run<'_>) -> crate::Result<Outcome> {
    let mut problems = Vec::new();
    let ecc = check_ecc(opened, opts, run, &mut problems)?;
    if opts.ecc_only {
        return Ok(Outcome { digest: None, problems, files: None, ecc, damage: None });
    }
    if let Content::LuksUnlocked(u) = &opened.content {
        problems.extend(u.luks.header.findings.iter().cloned());
    }
    let Some((layout, cipher)) = opened.payload()? else {
        return Err(opened.locked_error());
    };
    partial_sector(opened, layout, &mut problems);
    let digest = hash_payload(&*opened.data, &*cipher, layout, opts, run)?;
    if digest.unreadable_bytes > 0 {
        problems.push(unreadable(&digest));
    }
    filesystem_findings(opened, layout, &mut problems);
    Ok(Outcome { digest: Some(digest), problems, files: None, ecc, damage: None })
}

/// The dvdisaster check first (when the image carries ECC data), and a warning for each ECC
/// header passed over.
fn check_ecc(
    opened: &Opened,
    opts: Options,
    run: &mut Run<'_>,
    problems: &mut Vec<Problem>,
) -> crate::Result<Option<crate::formats::dvdisaster::verify::Report>> {
    let ecc = match &opened.ecc {
        Some(e) => {
            let eo = crate::formats::dvdisaster::verify::Options {
                workers: (opts.workers + 1).clamp(1, 8),
                syndromes: opts.ecc_syndromes,
            };
            let r = crate::formats::dvdisaster::verify::verify(e, &*opened.file, &eo, run)?;
            problems.extend(r.problems.iter().cloned());
            Some(r)
        }
        None if opts.ecc_only => {
            let mut msg = "the image carries no usable dvdisaster error correction data (none appended, no --ecc \
                           file, no NAME.ecc beside it); there is nothing to check with --ecc-only"
                .to_string();
            if !opened.ecc_unusable.is_empty() {
                msg.push_str(&format!(". Passed over: {}", Problem::messages(&opened.ecc_unusable).join("; ")));
            }
            return Err(crate::Error::invalid(msg));
        }
        None => None,
    };
    for u in &opened.ecc_unusable {
        problems.push(Problem {
            message: format!(
                "a dvdisaster header was found but is not usable, so the whole file was treated as data: {}",
                u.message
            ),
            ..u.clone()
        });
    }
    Ok(ecc)
}

/// `image.partial-sector`: the image ends inside a sector (unless the payload size is pinned).
fn partial_sector(opened: &Opened, layout: Layout, problems: &mut Vec<Problem>) {
    let file_size = opened.data.size_bytes();
    let avail = file_size.saturating_sub(layout.offset_bytes);
    let tail = avail % SECTOR_BYTES;
    let limited = matches!(&opened.content, Content::Legacy(o) if o.found.as_ref().is_some_and(|f| f.params.size_limit_bytes.is_some()))
        || matches!(&opened.content, Content::LuksUnlocked(u) if u.luks.header.payload_size_bytes.is_some());
    if tail != 0 && !limited {
        problems.push(Problem::error(
            "image.partial-sector",
            format!(
                "the image ends with {tail} bytes that do not fill a 512-byte sector (truncated?); \
                 they are not part of the payload"
            ),
        ));
    }
}

/// `image.unreadable`: the ranges that could not be read.
fn unreadable(digest: &PayloadDigest) -> Problem {
    let shown: Vec<String> = digest.unreadable.iter().take(8).map(|r| format!("{}..{}", r.start, r.end)).collect();
    Problem::error(
        "image.unreadable",
        format!(
            "{} bytes in {}{} range(s) of the image could not be read (file bytes {}{}); they were taken as \
             zero ciphertext, so the payload SHA-256 does not describe the original data",
            digest.unreadable_bytes,
            digest.unreadable.len(),
            if digest.unreadable.len() >= MAX_UNREADABLE_RANGES { "+" } else { "" },
            shown.join(", "),
            if digest.unreadable.len() > 8 { ", …" } else { "" }
        ),
    )
}

/// The file system found against the payload: truncated, trailing data, implausible, its own
/// notes; or no file system where nothing else confirms the key.
fn filesystem_findings(opened: &Opened, layout: Layout, problems: &mut Vec<Problem>) {
    match opened.filesystem() {
        Some(fs) => {
            if let Some(fs_size) = fs.size_bytes {
                if fs_size > layout.size_bytes {
                    problems.push(Problem::error(
                        "fs.truncated",
                        format!(
                            "the {} file system claims {fs_size} bytes but the payload holds only {} \
                             ({} bytes missing: the image is truncated)",
                            fs.kind,
                            layout.size_bytes,
                            fs_size - layout.size_bytes
                        ),
                    ));
                } else if fs_size < layout.size_bytes {
                    problems.push(Problem::warning(
                        "image.trailing-data",
                        format!(
                            "{} bytes follow the end of the {} file system ({fs_size} bytes)",
                            layout.size_bytes - fs_size,
                            fs.kind
                        ),
                    ));
                }
            }
            if fs.confidence < crate::fs::STRONG_CONFIDENCE && !fs.kind.is_container() {
                problems.push(Problem::error(
                    "fs.implausible",
                    format!(
                        "the {} superblock fails consistency checks: {}",
                        fs.kind,
                        Problem::messages(&fs.notes).join("; ")
                    ),
                ));
            } else {
                problems.extend(fs.notes.iter().cloned());
            }
        }
        // Only a legacy image opened with fully pinned parameters can get here without anything
        // confirming the key: there, no structure in the payload is the only sign of a wrong
        // passphrase. A LUKS digest (or no encryption at all) confirms the key, so content that
        // is not a file system (raw data, a database) is just what the payload holds.
        None if matches!(opened.content, Content::Legacy(_)) => problems.push(Problem::error(
            "fs.unrecognized",
            "no file system (or other known structure) was recognised in the payload, and nothing else confirms \
             the key (fully pinned parameters: a wrong passphrase looks exactly like this)",
        )),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::cbc::{CbcSectors, IvScheme};
    use crate::progress::{Interrupt, NoProgress};
    use crate::source::MemSource;

    /// A source whose bytes in `bad` fail with EIO (like a scratched disc).
    struct Flaky {
        inner: MemSource,
        bad: std::ops::Range<u64>,
    }

    impl ByteSource for Flaky {
        fn size_bytes(&self) -> u64 {
            self.inner.size_bytes()
        }
        fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> std::io::Result<usize> {
            let end = offset_bytes + buf.len() as u64;
            if offset_bytes < self.bad.end && end > self.bad.start {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            self.inner.read_at(buf, offset_bytes)
        }
    }

    #[test]
    fn unreadable_sectors_are_recorded_and_zeroed() {
        let c = CbcSectors::new(&[9u8; 32], IvScheme::Plain).unwrap();
        let ct: Vec<u8> = (0..(2 << 20) + 8192).map(|i: u32| (i.wrapping_mul(2246822519) >> 9) as u8).collect();
        let layout = Layout::new(ct.len() as u64, 8192, None, 16);
        // Two bad areas: one inside a chunk, one straddling the 1 MiB chunk edge.
        let (b1, b2) = (8192 + 5000..8192 + 5100, 8192 + (1 << 20) - 700..8192 + (1 << 20) + 300);
        let digest = |bad: std::ops::Range<u64>, workers: usize| {
            let flaky = Flaky { inner: MemSource::new(ct.clone()), bad };
            let opts = Options { workers, chunk_bytes: 1 << 20, ..Options::default() };
            hash_payload(&flaky, &c, layout, opts, &mut Run::new(&mut NoProgress, &Interrupt::new())).unwrap()
        };
        let d = digest(b1, 2);
        assert_eq!(d.unreadable, vec![(8192 + 4608)..(8192 + 5120)]);
        assert_eq!(d.unreadable_bytes, 512);
        let mut expect = ct[8192..].to_vec();
        expect[4608..5120].fill(0);
        c.decrypt_sectors(16, &mut expect);
        assert_eq!(d.sha256, <[u8; 32]>::from(sha2::Sha256::digest(&expect)));
        let d = digest(b2.clone(), 1);
        assert_eq!(d.unreadable, vec![(8192 + (1 << 20) - 1024)..(8192 + (1 << 20) + 512)], "merged across chunks");
        let flaky = Flaky { inner: MemSource::new(ct.clone()), bad: b2 };
        // The strict reader (migrate) fails instead.
        let mut buf = Vec::new();
        assert!(fill_and_decrypt(&flaky, &c, layout, (1 << 20) - 4096, 8192, &mut buf, None).is_err());
    }

    #[test]
    fn pipeline_matches_single_pass() {
        let c = CbcSectors::new(&[3u8; 16], IvScheme::Plain).unwrap();
        let data: Vec<u8> = (0..(3 << 20) + 4096).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let layout = Layout::new(data.len() as u64, 4096, None, 8);
        let mut expect = data[4096..].to_vec();
        c.decrypt_sectors(8, &mut expect);
        let want: [u8; 32] = sha2::Sha256::digest(&expect).into();
        for workers in [1, 2, 3] {
            let opts = Options { workers, chunk_bytes: 256 << 10, ..Options::default() };
            let d = hash_payload(
                &MemSource::new(data.clone()),
                &c,
                layout,
                opts,
                &mut Run::new(&mut NoProgress, &Interrupt::new()),
            )
            .unwrap();
            assert_eq!(d.sha256, want, "workers {workers}");
        }
        let i = Interrupt::new();
        i.trigger();
        let e = hash_payload(&MemSource::new(data), &c, layout, Options::default(), &mut Run::new(&mut NoProgress, &i))
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Interrupted);
    }
}
