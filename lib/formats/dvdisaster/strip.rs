//! `strip-ecc`: write the original image back out of an RS02/RS03-augmented one. The original is
//! exactly the first `(sectors − 1)·2048 + inLast` bytes (dvdisaster only zero-pads the last
//! sector and appends; §10). The copy is checked on the way (dead-sector markers, per-sector
//! CRCs, MD5 against `mediumSum` when stored), written to a temporary name, fsynced, read back
//! and compared, and only then renamed into place. All-zero chunks become holes.

use super::layout::{self, ECC_SECTOR_BYTES, SECTOR};
use super::verify::{CrcTable, format_ranges, rs02_crc_table, rs03_crc_table};
use super::{Ecc, Layout};
use crate::output::{TempFile, check_output};
use crate::progress::Run;
use crate::source::ByteSource;
use md5::{Digest, Md5};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes per read/write.
const CHUNK: usize = 1 << 20;

/// Options for [`strip`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Replace an existing output file.
    pub force: bool,
    /// Write the data even if sectors are damaged (the result is then not the original).
    pub allow_damaged: bool,
}

/// How the written copy was checked against the error-correction data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// MD5 equals the `mediumSum` recorded at creation (and every CRC matched).
    Md5,
    /// Every data sector matched its CRC (RS03 records no MD5).
    Crcs,
}

/// What [`strip`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The output file.
    pub path: PathBuf,
    /// Bytes written.
    pub bytes: u64,
    /// MD5 of the written bytes.
    pub md5: [u8; 16],
    /// How the content was confirmed (None: damaged, written with `allow_damaged`).
    pub check: Option<Check>,
    /// Data sectors that are dead-sector markers.
    pub missing_sectors: Vec<u64>,
    /// Data sectors failing their CRC.
    pub bad_sectors: Vec<u64>,
    /// Data sectors whose CRC is lost (not checked).
    pub unchecked_sectors: u64,
}

/// Write the original image bytes of the augmented image `image` (at `image_path`) to `out`.
///
/// # Errors
/// `InvalidInput` when the ECC is in a separate file (the image is already the original);
/// `Unsafe` when `out` exists (without `force`) or is the source; `Corrupt` when data sectors
/// are damaged (without `allow_damaged`: repair first); `Io`; `Interrupted`. On any error no
/// output file is left behind.
pub fn strip(
    ecc: &Ecc,
    image: &dyn ByteSource,
    image_path: &Path,
    out: &Path,
    opts: &Options,
    run: &mut Run<'_>,
) -> crate::Result<Outcome> {
    if !ecc.is_augmented() {
        return Err(crate::Error::invalid(format!(
            "{} keeps its error correction data in a separate .ecc file; the image is already the original, \
             there is nothing to strip",
            image_path.display()
        )));
    }
    check_output(out, &[image_path], opts.force)?;
    let h = &ecc.header;
    let fp = h.medium_fp;
    let table: CrcTable = match &ecc.layout {
        Layout::Rs02(l) => rs02_crc_table(l, image, &fp)?,
        Layout::Rs03(l) => rs03_crc_table(l, image, None)?,
        Layout::Rs01(_) => return Err(crate::Error::invalid("BUG: RS01 is never augmented")),
    };
    let len = ecc.data_bytes();
    if image.size_bytes() < len {
        return Err(crate::Error::corrupt(format!(
            "{} is truncated: it has {} bytes, the original image had {len}; nothing was written",
            image_path.display(),
            image.size_bytes()
        )));
    }

    let mut tmp = TempFile::beside(out)?;
    let tmp_path = tmp.path.clone();
    let Copied { md5, missing, bad, unchecked } = copy_checked(image, len, &table, &fp, &mut tmp, run)?;
    let damaged = !missing.is_empty() || !bad.is_empty() || (h.medium_sum_valid() && md5 != h.medium_sum);
    if damaged && !opts.allow_damaged {
        return Err(damaged_error(image_path, &missing, &bad));
    }

    // Read the copy back before it takes the final name.
    let back = read_back_md5(&tmp.path, &tmp.file, len, run).map_err(|e| e.context(tmp_path.display()))?;
    if back != md5 {
        return Err(crate::Error::new(
            crate::ErrorKind::Io,
            format!("{} reads back differently from what was written (storage error?)", tmp_path.display()),
        ));
    }
    tmp.persist(out, opts.force)?;
    let check = if damaged {
        None
    } else if h.medium_sum_valid() {
        Some(Check::Md5)
    } else {
        Some(Check::Crcs)
    };
    Ok(Outcome {
        path: out.to_path_buf(),
        bytes: len,
        md5,
        check,
        missing_sectors: missing,
        bad_sectors: bad,
        unchecked_sectors: unchecked,
    })
}

/// What [`copy_checked`] found while copying.
struct Copied {
    md5: [u8; 16],
    missing: Vec<u64>,
    bad: Vec<u64>,
    unchecked: u64,
}

/// Copy the first `len` bytes of `image` to `tmp` (zero chunks as holes) and sync it, checking
/// every sector as it passes: dead-sector markers are missing, CRC mismatches (against `table`)
/// bad, sectors without a CRC unchecked.
fn copy_checked(
    image: &dyn ByteSource,
    len: u64,
    table: &CrcTable,
    fp: &[u8; 16],
    tmp: &mut TempFile,
    run: &mut Run<'_>,
) -> crate::Result<Copied> {
    let tmp_path = tmp.path.clone();
    run.progress.start("stripping ECC", Some(len));
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    let (mut missing, mut bad, mut unchecked) = (Vec::new(), Vec::new(), 0u64);
    let mut off = 0u64;
    let wr = |e| crate::Error::io(format!("writing {}", tmp_path.display()), e);
    while off < len {
        run.interrupt.check()?;
        let n = (len - off).min(CHUNK as u64) as usize;
        image.read_exact_at(&mut buf[..n], off).map_err(|e| crate::Error::io(format!("reading byte {off}"), e))?;
        md5.update(&buf[..n]);
        for (k, sec) in buf[..n].chunks(SECTOR).enumerate() {
            let s = off / ECC_SECTOR_BYTES + k as u64;
            let mut full = [0u8; SECTOR];
            full[..sec.len()].copy_from_slice(sec);
            if layout::dead_sector(&full, s, Some(fp)).is_some() {
                missing.push(s);
                continue;
            }
            match table.get(s) {
                Some(c) if c != layout::crc32(&full) => bad.push(s),
                Some(_) => {}
                None => unchecked += 1,
            }
        }
        if buf[..n].iter().all(|&b| b == 0) {
            tmp.file.seek(SeekFrom::Current(n as i64)).map_err(wr)?;
        } else {
            tmp.file.write_all(&buf[..n]).map_err(wr)?;
        }
        off += n as u64;
        run.progress.advance(n as u64);
    }
    tmp.file.set_len(len).map_err(wr)?;
    tmp.file.sync_all().map_err(wr)?;
    run.progress.finish();
    Ok(Copied { md5: md5.finalize().into(), missing, bad, unchecked })
}

/// The refusal to write a damaged data part (without `--allow-damaged`), naming the damage.
fn damaged_error(image_path: &Path, missing: &[u64], bad: &[u64]) -> crate::Error {
    let mut what = Vec::new();
    if !missing.is_empty() {
        what.push(format!("missing sectors {}", format_ranges(missing)));
    }
    if !bad.is_empty() {
        what.push(format!("sectors failing their CRC {}", format_ranges(bad)));
    }
    if what.is_empty() {
        what.push("the MD5 differs from the one recorded at creation".into());
    }
    crate::Error::corrupt(format!(
        "the data part of {} is damaged ({}); nothing was written. Repair it first (loopkit repair), or give \
         --allow-damaged to write it anyway",
        image_path.display(),
        what.join("; ")
    ))
}

/// MD5 of the synced copy read back from the device (`O_DIRECT`, or after dropping its cached
/// pages), so a write that did not reach the disk is caught.
fn read_back_md5(path: &Path, file: &File, len: u64, run: &mut Run<'_>) -> crate::Result<[u8; 16]> {
    use crate::output::direct::{AlignedBuf, ReadBack};
    let back = ReadBack::open(path, file).map_err(|e| crate::Error::io("opening the copy to read it back", e))?;
    run.progress.start("reading the copy back", Some(len));
    let mut md5 = Md5::new();
    let mut buf = AlignedBuf::new(CHUNK);
    let mut off = 0u64;
    while off < len {
        run.interrupt.check()?;
        let n = (len - off).min(CHUNK as u64) as usize;
        let got = back.read_exact_at(&mut buf, off, n).map_err(|e| crate::Error::io("reading the copy back", e))?;
        md5.update(&*got);
        off += n as u64;
        run.progress.advance(n as u64);
    }
    run.progress.finish();
    Ok(md5.finalize().into())
}
