//! `loopkit extents`: every extent of an image file as FIEMAP reports it (after writing dirty
//! data back), each classified, a fragmentation and hole summary, the backing device, and the
//! remap verdict; optionally the extent verification (`--check`): every mapped extent read both
//! through the raw device (`O_DIRECT`: what is on the disk) and through the file system (what
//! programs see, page cache included) and compared by SHA-256. A difference means the mapping is
//! wrong for raw I/O or the disk and the page cache disagree (a write behind the file system's
//! back) — either way remapping would serve different bytes than the file holds.

use super::preflight::{self, Preflight, Refusal};
use crate::extent::{Class, Extent, classify, fiemap};
use crate::output::direct::AlignedBuf;
use crate::progress::{Interrupt, Progress};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// One extent with its classification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// As FIEMAP reported it.
    pub extent: Extent,
    /// How it may be accessed.
    pub class: Class,
    /// Why, unless mapped.
    pub reason: &'static str,
}

/// Totals over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Extents reported.
    pub extents: u64,
    /// Bytes in mapped extents (within the file size).
    pub mapped_bytes: u64,
    /// Bytes in unwritten extents.
    pub unwritten_bytes: u64,
    /// Bytes in via-file extents.
    pub via_file_bytes: u64,
    /// Holes (gaps between extents and at the end).
    pub holes: u64,
    /// Bytes in holes.
    pub hole_bytes: u64,
    /// Physically discontiguous boundaries between consecutive extents (0 = contiguous).
    pub fragments: u64,
    /// Largest extent in bytes.
    pub largest_extent_bytes: u64,
}

/// An extent whose two readings differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The extent (clipped to the file size).
    pub extent: Extent,
    /// SHA-256 through the file system.
    pub file_sha256: [u8; 32],
    /// SHA-256 of the raw device bytes.
    pub device_sha256: [u8; 32],
    /// First differing byte (file offset).
    pub first_difference: u64,
}

/// The extent verification's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// Mapped extents compared.
    pub extents_checked: u64,
    /// Bytes compared.
    pub bytes_checked: u64,
    /// Extents that differ.
    pub mismatches: Vec<Mismatch>,
}

/// Everything `loopkit extents` reports.
#[derive(Debug, Clone)]
pub struct Survey {
    /// The image.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Bytes allocated (`st_blocks`).
    pub allocated_bytes: u64,
    /// Preflight facts and refusals (plus refusals from the extents themselves).
    pub preflight: Preflight,
    /// Every extent in logical order.
    pub rows: Vec<Row>,
    /// Totals.
    pub summary: Summary,
    /// The verification, when asked.
    pub check: Option<Check>,
}

impl Survey {
    /// Whether remapping is safe.
    pub fn remap_safe(&self) -> bool {
        self.preflight.is_safe()
    }
}

/// Survey `path` (opened read-only); with `check`, verify every mapped extent.
///
/// # Errors
/// `Io` when the file cannot be opened or FIEMAP fails on an allowed file system;
/// `Interrupted`.
pub fn survey(path: &Path, check: bool, progress: &mut dyn Progress, interrupt: &Interrupt) -> crate::Result<Survey> {
    let what = path.display().to_string();
    let file = File::open(path).map_err(|e| crate::Error::io(format!("cannot open {what}"), e))?;
    let meta = file.metadata().map_err(|e| crate::Error::io(format!("cannot examine {what}"), e))?;
    // Dirty data first, so delayed allocations have their blocks (the same as FIEMAP_FLAG_SYNC,
    // but also for file systems that ignore it).
    if meta.is_file() {
        let _ = file.sync_all();
    }
    let mut pf = preflight::check(&file, path);
    let size = meta.len();
    let mut rows = Vec::new();
    let mut listed = meta.is_file();
    if meta.is_file() && size > 0 {
        match fiemap::query(file.as_fd(), 0..size, true) {
            Ok(ext) => {
                let align = u64::from(pf.backing.logical_block.max(512));
                rows = ext
                    .into_iter()
                    .map(|e| {
                        let (class, reason) = classify(&e, align);
                        Row { extent: e, class, reason }
                    })
                    .collect();
            }
            Err(e) if pf.refusals.iter().any(|r| r.code == "remap.no-fiemap" || r.code == "remap.fs-not-allowed") => {
                pf.notes.push(crate::finding::Finding::info("remap.no-extents", format!("no extents listed: {e}")));
                listed = false;
            }
            Err(e) => return Err(crate::Error::io(format!("FIEMAP of {what}"), e)),
        }
    }
    if let Some(dev_bytes) = pf.backing.device_bytes {
        let outside = rows
            .iter()
            .filter(|r| {
                r.class == Class::Mapped && r.extent.physical.checked_add(r.extent.length).is_none_or(|e| e > dev_bytes)
            })
            .count();
        if outside > 0 {
            pf.refusals.push(Refusal::error(
                "remap.extent-outside-device",
                format!("{outside} extent(s) lie beyond the end of the device ({dev_bytes} bytes): the addresses are not device offsets"),
            ));
        }
    }
    let summary = if listed { summarise(&rows, size) } else { Summary::default() };
    let check = if check && meta.is_file() && pf.backing.device.is_some() {
        Some(verify_extents(&file, &pf, &rows, size, progress, interrupt)?)
    } else {
        None
    };
    Ok(Survey {
        path: path.to_path_buf(),
        size,
        allocated_bytes: meta.blocks() * 512,
        preflight: pf,
        rows,
        summary,
        check,
    })
}

fn summarise(rows: &[Row], size: u64) -> Summary {
    let mut s = Summary { extents: rows.len() as u64, ..Summary::default() };
    let mut pos = 0u64;
    let mut prev: Option<&Extent> = None;
    for r in rows {
        let e = &r.extent;
        let clipped = e.logical_end().min(size).saturating_sub(e.logical.min(size));
        match r.class {
            Class::Mapped => s.mapped_bytes += clipped,
            Class::Zero => s.unwritten_bytes += clipped,
            Class::ViaFile => s.via_file_bytes += clipped,
        }
        if e.logical > pos && pos < size {
            s.holes += 1;
            s.hole_bytes += e.logical.min(size) - pos;
        }
        if let Some(p) = prev
            && p.physical.checked_add(p.length) != Some(e.physical)
        {
            s.fragments += 1;
        }
        s.largest_extent_bytes = s.largest_extent_bytes.max(e.length);
        pos = pos.max(e.logical_end());
        prev = Some(e);
    }
    if pos < size {
        s.holes += 1;
        s.hole_bytes += size - pos;
    }
    s
}

const CHUNK: usize = 1 << 20;

fn verify_extents(
    file: &File,
    pf: &Preflight,
    rows: &[Row],
    size: u64,
    progress: &mut dyn Progress,
    interrupt: &Interrupt,
) -> crate::Result<Check> {
    let Some(dev_path) = &pf.backing.device else {
        return Ok(Check::default());
    };
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(dev_path)
        .map_err(|e| crate::Error::io(format!("cannot open {} for reading", dev_path.display()), e))?;
    let align = pf.backing.logical_block.max(512) as usize;
    let work: Vec<Extent> = rows
        .iter()
        .filter(|r| r.class == Class::Mapped && r.extent.logical < size)
        .map(|r| {
            let len = r.extent.length.min(size - r.extent.logical);
            Extent { length: len, ..r.extent }
        })
        .collect();
    let total: u64 = work.iter().map(|e| e.length).sum();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let found =
        crate::pipeline::Pool::new(threads, progress, interrupt).phase("checking extents", Some(total)).run_all(
            &work,
            || {
                let a = AlignedBuf::zeroed(CHUNK, align).map_err(|e| crate::Error::io("allocating buffers", e))?;
                let b = AlignedBuf::zeroed(CHUNK, align).map_err(|e| crate::Error::io("allocating buffers", e))?;
                Ok((a, b))
            },
            |e, bufs, tick| compare_extent(file, &dev, e, align, bufs, tick),
        )?;
    let mut check = Check::default();
    for (e, m) in work.iter().zip(found) {
        check.extents_checked += 1;
        check.bytes_checked += e.length;
        if let Some(m) = m {
            check.mismatches.push(m);
        }
    }
    check.mismatches.sort_by_key(|m| m.extent.logical);
    Ok(check)
}

fn compare_extent(
    file: &File,
    dev: &File,
    e: &Extent,
    align: usize,
    bufs: &mut (AlignedBuf, AlignedBuf),
    tick: &crate::pipeline::Tick<'_>,
) -> crate::Result<Option<Mismatch>> {
    let (mut hf, mut hd) = (Sha256::new(), Sha256::new());
    let mut first: Option<u64> = None;
    let mut done = 0u64;
    while done < e.length {
        tick.check()?;
        let n = (e.length - done).min(CHUNK as u64) as usize;
        // The device read is done in whole logical blocks.
        let n_dev = n.div_ceil(align) * align;
        let (fb, db) = (&mut bufs.0.as_mut_slice()[..n], &mut bufs.1.as_mut_slice()[..n_dev]);
        let at = e.logical + done;
        read_exact(file, fb, at).map_err(|err| crate::Error::io(format!("reading the file at byte {at}"), err))?;
        let phys = e.physical + done;
        read_exact(dev, db, phys).map_err(|err| crate::Error::io(format!("reading the device at byte {phys}"), err))?;
        let db = &db[..n];
        hf.update(&*fb);
        hd.update(db);
        if first.is_none()
            && let Some(k) = fb.iter().zip(db.iter()).position(|(a, b)| a != b)
        {
            first = Some(at + k as u64);
        }
        done += n as u64;
        tick.tick(n as u64)?;
    }
    Ok(first.map(|first_difference| Mismatch {
        extent: *e,
        file_sha256: hf.finalize().into(),
        device_sha256: hd.finalize().into(),
        first_difference,
    }))
}

fn read_exact(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "ends early")),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::ExtentFlags;

    fn row(l: u64, p: u64, n: u64, f: ExtentFlags) -> Row {
        let e = Extent { logical: l, physical: p, length: n, flags: f };
        let (class, reason) = classify(&e, 512);
        Row { extent: e, class, reason }
    }

    #[test]
    fn summary_counts_holes_and_fragments() {
        let rows = [
            row(0, 4096, 4096, ExtentFlags::default()),
            row(4096, 8192, 4096, ExtentFlags::default()),   // contiguous
            row(16384, 65536, 8192, ExtentFlags::UNWRITTEN), // hole before, fragment
            row(32768, 1 << 20, 4096, ExtentFlags::SHARED.union(ExtentFlags::LAST)), // hole before
        ];
        let s = summarise(&rows, 65536);
        assert_eq!(s.extents, 4);
        assert_eq!(s.mapped_bytes, 8192);
        assert_eq!(s.unwritten_bytes, 8192);
        assert_eq!(s.via_file_bytes, 4096);
        assert_eq!((s.holes, s.hole_bytes), (3, 8192 + 8192 + 28672));
        assert_eq!(s.fragments, 2);
        assert_eq!(s.largest_extent_bytes, 8192);
    }
}
