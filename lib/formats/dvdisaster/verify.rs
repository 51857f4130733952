//! Verifying an image against its dvdisaster error-correction data: every sector is checked for
//! dead-sector markers, every data sector against its CRC, the image against `mediumSum`, the
//! header copies against their `selfCRC`, the CRC and ECC sections against `crcSum`/`eccSum` (RS01,
//! RS02) or the CRC blocks and Reed–Solomon syndromes (RS03). Damage is reported, never an error;
//! `Err` means the check could not run.
//!
//! ```text
//!  worker 0: MD5 of the data (one stream, the bound)      ─┐
//!  worker 1: data CRCs ─► ECC layers (RS02 MD5s / RS03     ├─► main thread: progress, merge
//!            syndromes, in parallel chunks) ◄─ worker 0 ──┘     → Report
//! ```
//! The single MD5 stream over the data is what cannot be split; everything else is cut into
//! independent jobs that the other cores (and worker 0 after the MD5) pull from one queue
//! (`pipeline::Pool`). This file holds what the methods share (options, report, CRC table,
//! sector reads); `rs01.rs`, `rs02.rs`, `rs03.rs` hold each method, `problems.rs` the findings.

use super::layout::{
    self, CrcBlock, ECC_SECTOR_BYTES, HEADER_BYTES, Method, Rs02Layout, Rs03Layout, Rs03Place, SECTOR,
};
use super::rs::{self, MulTable};
use super::{Ecc, Layout, Placement};
use crate::finding::Finding as Problem;
use crate::pipeline::{Pool, Tick};
use crate::progress::Run;
use crate::source::ByteSource;
use md5::{Digest, Md5};
use std::path::PathBuf;

mod problems;
mod rs01;
mod rs02;
mod rs03;

use problems::problems;
use rs01::verify_rs01;
pub(crate) use rs02::rs02_crc_table;
use rs02::verify_rs02;
pub(crate) use rs03::rs03_crc_table;
use rs03::verify_rs03;

/// Sectors per read (1 MiB).
const CHUNK_SECTORS: u64 = 512;
/// Data sectors per CRC-checking job (64 MiB), so idle workers can share the work.
const CRC_JOB_SECTORS: u64 = 32 * 1024;
/// RS03 ECC blocks per job: 255 layers × this many sectors are held in memory (8 MiB).
const RS03_GROUP: u64 = 16;
/// Roots whose syndromes the default RS03 block test evaluates (see [`SyndromeCheck`]).
const QUICK_SYNDROMES: usize = 8;
/// At most this many ranges are spelled out in a problem message (the JSON lists all).
const MAX_RANGES_IN_MESSAGE: usize = 12;

/// How thoroughly RS03 codewords are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyndromeCheck {
    /// Syndromes of the first 8 roots: every codeword with up to 8 wrong bytes is caught with
    /// certainty (those 8 roots alone form a distance-9 code); larger damage slips through
    /// with probability 2⁻⁶⁴. About 20× cheaper than all roots at 170 roots.
    #[default]
    Quick,
    /// All `nroots` syndromes, like `dvdisaster -t`.
    Full,
}

/// Tuning for [`verify`].
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Worker threads (default: available cores).
    pub workers: usize,
    /// RS03 block test thoroughness.
    pub syndromes: SyndromeCheck,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8),
            syndromes: SyndromeCheck::Quick,
        }
    }
}

/// What verification found. Sector numbers are image sectors (2048 bytes) unless the field
/// says `ecc_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Codec.
    pub method: Method,
    /// Parity symbols per codeword.
    pub nroots: usize,
    /// ECC appended to the image (else a separate file).
    pub augmented: bool,
    /// The `.ecc` file, if separate.
    pub ecc_file: Option<PathBuf>,
    /// Bytes of the original image.
    pub data_bytes: u64,
    /// Sectors of the original image.
    pub data_sectors: u64,
    /// Sectors the image should have (augmented: data + ECC; `.ecc` file: data).
    pub expected_sectors: u64,
    /// Sectors the image has (partial last sector counted).
    pub image_sectors: u64,
    /// `.ecc` file size in sectors: (expected, actual). RS01 files are counted in whole sectors.
    pub ecc_file_sectors: Option<(u64, u64)>,
    /// Header copies that should exist (RS02: the first plus the interleaved copies; else 1).
    pub header_copies_total: u64,
    /// Copies that are present with a valid `selfCRC`.
    pub header_copies_ok: u64,
    /// Copies with the cookie but a wrong `selfCRC`.
    pub header_copies_damaged: Vec<u64>,
    /// Copies that are absent (no cookie, dead sector, past the end).
    pub header_copies_missing: Vec<u64>,
    /// Valid copies that differ from the header in use.
    pub header_copies_differ: Vec<u64>,
    /// Sectors whose CRC does not match (dvdisaster's "CRC error, sector").
    pub bad_sectors: Vec<u64>,
    /// Sectors that are dead-sector markers or past the end of the image.
    pub missing_sectors: Vec<u64>,
    /// `.ecc`-file sectors that are dead-sector markers or past its end (RS03 `.ecc`).
    pub missing_ecc_file_sectors: Vec<u64>,
    /// Data sectors whose CRC could not be checked (their CRC is lost).
    pub unchecked_sectors: u64,
    /// MD5 of the original image bytes as read.
    pub md5: [u8; 16],
    /// `md5` equals the stored `mediumSum` (None: none stored).
    pub md5_ok: Option<bool>,
    /// MD5 of the fingerprint sector matches the header (None: not checkable).
    pub fingerprint_ok: Option<bool>,
    /// CRC section intact (RS01: its `eccSum` covers CRCs and parity together).
    pub crc_section_ok: bool,
    /// RS02 `crcSum` matches (None: not applicable, or sectors missing).
    pub crc_sum_ok: Option<bool>,
    /// RS03 CRC blocks that are present but fail their signature / `selfCRC`.
    pub crc_blocks_bad: Vec<u64>,
    /// ECC section intact.
    pub ecc_section_ok: bool,
    /// RS01/RS02 `eccSum` matches (None: not applicable, or sectors missing).
    pub ecc_sum_ok: Option<bool>,
    /// RS03 block test: ECC blocks with at least one failing codeword (None: not run).
    pub ecc_blocks_bad: Option<u64>,
    /// RS03 block test: failing codewords (dvdisaster's "bad sub blocks").
    pub codewords_bad: Option<u64>,
    /// RS03 block test: ECC blocks tested.
    pub ecc_blocks: Option<u64>,
    /// Problems found (codes `ecc.*`).
    pub problems: Vec<Problem>,
}

impl Report {
    /// No error-severity problems.
    pub fn ok(&self) -> bool {
        !self.problems.iter().any(|p| p.severity == crate::finding::Severity::Error)
    }
}

/// Sorted, merged `a-b` ranges of a sorted list.
pub fn ranges(v: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &x in v {
        match out.last_mut() {
            Some((_, b)) if *b + 1 == x => *b = x,
            Some((_, b)) if *b == x => {}
            _ => out.push((x, x)),
        }
    }
    out
}

/// `100, 9990, 20000-20001` (shortened after [`MAX_RANGES_IN_MESSAGE`] ranges).
pub fn format_ranges(v: &[u64]) -> String {
    let r = ranges(v);
    let mut parts: Vec<String> = r
        .iter()
        .take(MAX_RANGES_IN_MESSAGE)
        .map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
        .collect();
    if r.len() > MAX_RANGES_IN_MESSAGE {
        parts.push(format!("… ({} more ranges)", r.len() - MAX_RANGES_IN_MESSAGE));
    }
    parts.join(", ")
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Read sectors `[first, first + n)` of `src` into `buf` (`n·2048` bytes); what lies past the
/// end reads as zeros. Returns how many sectors exist (a partial last one counts).
fn read_sectors(src: &dyn ByteSource, first: u64, buf: &mut [u8]) -> crate::Result<u64> {
    let off = first * ECC_SECTOR_BYTES;
    let avail = src.size_bytes().saturating_sub(off).min(buf.len() as u64) as usize;
    src.read_exact_at(&mut buf[..avail], off).map_err(|e| crate::Error::io(format!("reading sector {first}"), e))?;
    buf[avail..].fill(0);
    Ok((avail as u64).div_ceil(ECC_SECTOR_BYTES))
}

/// MD5 of `src[0..len)`, streamed.
fn md5_stream(src: &dyn ByteSource, start: u64, len: u64, ctx: &Tick<'_>) -> crate::Result<[u8; 16]> {
    let mut h = Md5::new();
    let mut buf = vec![0u8; (CHUNK_SECTORS * ECC_SECTOR_BYTES) as usize];
    let end = start.saturating_add(len).min(src.size_bytes());
    let mut off = start;
    while off < end {
        let n = (end - off).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], off).map_err(|e| crate::Error::io(format!("reading byte {off}"), e))?;
        h.update(&buf[..n]);
        off += n as u64;
        ctx.tick(n as u64)?;
    }
    Ok(h.finalize().into())
}

/// Per-job findings.
#[derive(Default)]
struct Found {
    missing: Vec<u64>,
    missing_ecc_file: Vec<u64>,
    bad: Vec<u64>,
    unchecked: u64,
    md5: Option<[u8; 16]>,
    crc_blocks_bad: Vec<u64>,
    blocks_bad: u64,
    blocks_bad_unexplained: u64,
    codewords_bad: u64,
}

impl Found {
    fn merge(&mut self, o: Found) {
        self.missing.extend(o.missing);
        self.missing_ecc_file.extend(o.missing_ecc_file);
        self.bad.extend(o.bad);
        self.unchecked += o.unchecked;
        self.crc_blocks_bad.extend(o.crc_blocks_bad);
        self.blocks_bad += o.blocks_bad;
        self.blocks_bad_unexplained += o.blocks_bad_unexplained;
        self.codewords_bad += o.codewords_bad;
    }
}

/// Check data sectors `[first, first+count)` of `src`: dead-sector markers, then CRCs from
/// `crc(s)` (None: no usable CRC). Sectors past the end are skipped (counted elsewhere).
fn check_data_sectors(
    src: &dyn ByteSource,
    first: u64,
    count: u64,
    fp: &[u8; 16],
    crc: &(dyn Fn(u64) -> Option<u32> + Sync),
    ctx: &Tick<'_>,
) -> crate::Result<Found> {
    let mut f = Found::default();
    let mut buf = vec![0u8; (CHUNK_SECTORS * ECC_SECTOR_BYTES) as usize];
    let mut s = first;
    let end = first + count;
    while s < end {
        let n = (end - s).min(CHUNK_SECTORS);
        let have = read_sectors(src, s, &mut buf[..(n * ECC_SECTOR_BYTES) as usize])?;
        for k in 0..have {
            let sec = &buf[(k * ECC_SECTOR_BYTES) as usize..((k + 1) * ECC_SECTOR_BYTES) as usize];
            let at = s + k;
            if layout::dead_sector(sec, at, Some(fp)).is_some() {
                f.missing.push(at);
                continue;
            }
            match crc(at) {
                Some(c) if c != layout::crc32(sec) => f.bad.push(at),
                Some(_) => {}
                None => f.unchecked += 1,
            }
        }
        ctx.tick(n * ECC_SECTOR_BYTES)?;
        s += n;
    }
    Ok(f)
}

/// Data-sector CRC jobs covering `[0, n)`.
fn crc_jobs(n: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..n.div_ceil(CRC_JOB_SECTORS)).map(move |j| (j * CRC_JOB_SECTORS, CRC_JOB_SECTORS.min(n - j * CRC_JOB_SECTORS)))
}

/// Verify `image` (the whole image file, ECC included when augmented) against `ecc`.
///
/// # Errors
/// `Io` on read errors, `Interrupted`. Damage is reported in the [`Report`], not as an error.
pub fn verify(ecc: &Ecc, image: &dyn ByteSource, opts: &Options, run: &mut Run<'_>) -> crate::Result<Report> {
    let h = &ecc.header;
    let image_sectors = image.size_bytes().div_ceil(ECC_SECTOR_BYTES);
    let mut r = Report {
        method: h.method,
        nroots: ecc.nroots(),
        augmented: ecc.is_augmented(),
        ecc_file: match &ecc.placement {
            Placement::EccFile { path, .. } => Some(path.clone()),
            Placement::Augmented => None,
        },
        data_bytes: ecc.data_bytes(),
        data_sectors: ecc.data_sectors(),
        expected_sectors: ecc.data_sectors(),
        image_sectors,
        ecc_file_sectors: None,
        header_copies_total: 1,
        header_copies_ok: 1,
        header_copies_damaged: Vec::new(),
        header_copies_missing: Vec::new(),
        header_copies_differ: Vec::new(),
        bad_sectors: Vec::new(),
        missing_sectors: Vec::new(),
        missing_ecc_file_sectors: Vec::new(),
        unchecked_sectors: 0,
        md5: [0; 16],
        md5_ok: None,
        fingerprint_ok: None,
        crc_section_ok: true,
        crc_sum_ok: None,
        crc_blocks_bad: Vec::new(),
        ecc_section_ok: true,
        ecc_sum_ok: None,
        ecc_blocks_bad: None,
        codewords_bad: None,
        ecc_blocks: None,
        problems: Vec::new(),
    };
    if ecc.rebuilt_from.is_some() {
        r.header_copies_ok = 0;
        r.header_copies_damaged.push(ecc.header_sector);
    }
    match (&ecc.layout, &ecc.placement) {
        (Layout::Rs02(l), _) => verify_rs02(ecc, l, image, opts, &mut r, run)?,
        (Layout::Rs03(l), placement) => {
            let ecc_src: Option<&dyn ByteSource> = match placement {
                Placement::EccFile { file, .. } => Some(&**file),
                Placement::Augmented => None,
            };
            verify_rs03(ecc, l, image, ecc_src, opts, &mut r, run)?
        }
        (Layout::Rs01(l), Placement::EccFile { file, .. }) => verify_rs01(ecc, l, image, &**file, opts, &mut r, run)?,
        (Layout::Rs01(_), Placement::Augmented) => {
            return Err(crate::Error::invalid("BUG: RS01 data is never appended to an image"));
        }
    }
    if !ecc.is_augmented() {
        fingerprint_check(ecc, image, &mut r)?;
    }
    r.bad_sectors.sort_unstable();
    r.bad_sectors.dedup();
    r.missing_sectors.sort_unstable();
    r.missing_sectors.dedup();
    r.missing_ecc_file_sectors.sort_unstable();
    r.missing_ecc_file_sectors.dedup();
    r.crc_blocks_bad.sort_unstable();
    problems(ecc, &mut r);
    Ok(r)
}

/// `.ecc` files: does the image's fingerprint sector match the header?
fn fingerprint_check(ecc: &Ecc, image: &dyn ByteSource, r: &mut Report) -> crate::Result<()> {
    let h = &ecc.header;
    if h.medium_fp == [0u8; 16] {
        return Ok(());
    }
    let fp_sector = h.fp_sector.max(0) as u64;
    let mut buf = vec![0u8; SECTOR];
    if read_sectors(image, fp_sector, &mut buf)? == 0 || layout::dead_sector(&buf, fp_sector, None).is_some() {
        return Ok(());
    }
    let got: [u8; 16] = Md5::digest(&buf).into();
    r.fingerprint_ok = Some(got == h.medium_fp);
    Ok(())
}

/// The sectors past the end of the image, as a list (they are reported as missing).
fn past_end(from: u64, to: u64) -> impl Iterator<Item = u64> {
    from..to.max(from)
}

/// The stored CRC of every data sector, with whether it is usable.
pub(crate) struct CrcTable {
    /// CRC of data sector `s`.
    pub crc: Vec<u32>,
    /// Whether `crc[s]` came from an intact CRC sector.
    pub valid: Vec<bool>,
    /// RS02: MD5 of the whole CRC area as read.
    pub area_md5: [u8; 16],
    /// CRC-area sectors that are dead-sector markers.
    pub missing: Vec<u64>,
}

impl CrcTable {
    /// The usable CRC of data sector `s`.
    pub fn get(&self, s: u64) -> Option<u32> {
        let s = usize::try_from(s).ok()?;
        if *self.valid.get(s)? { Some(self.crc[s]) } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_formatting() {
        assert_eq!(format_ranges(&[100, 9990, 20000, 20001]), "100, 9990, 20000-20001");
        assert_eq!(ranges(&[1, 1, 2, 5]), vec![(1, 2), (5, 5)]);
        let many: Vec<u64> = (0..100).map(|x| x * 3).collect();
        assert!(format_ranges(&many).ends_with("(88 more ranges)"));
    }
}
