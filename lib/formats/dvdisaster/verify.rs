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
//! independent jobs that the other cores (and worker 0 after the MD5) pull from one queue.

use super::layout::{
    self, CrcBlock, ECC_SECTOR_BYTES, HEADER_BYTES, Method, Rs02Layout, Rs03Layout, Rs03Place, SECTOR,
};
use super::rs::{self, MulTable};
use super::{Ecc, Layout, Placement};
use crate::finding::Finding as Problem;
use crate::pipeline::{Tick, run_all};
use crate::progress::{Interrupt, Progress};
use crate::source::ByteSource;
use md5::{Digest, Md5};
use std::path::PathBuf;

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
pub fn verify(
    ecc: &Ecc,
    image: &dyn ByteSource,
    opts: &Options,
    progress: &mut dyn Progress,
    interrupt: &Interrupt,
) -> crate::Result<Report> {
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
        (Layout::Rs02(l), _) => verify_rs02(ecc, l, image, opts, &mut r, progress, interrupt)?,
        (Layout::Rs03(l), placement) => {
            let ecc_src: Option<&dyn ByteSource> = match placement {
                Placement::EccFile { file, .. } => Some(&**file),
                Placement::Augmented => None,
            };
            verify_rs03(ecc, l, image, ecc_src, opts, &mut r, progress, interrupt)?
        }
        (Layout::Rs01(l), Placement::EccFile { file, .. }) => {
            verify_rs01(ecc, l, image, &**file, opts, &mut r, progress, interrupt)?
        }
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

/// Read the RS02 CRC area (4 bytes per data sector) and sort it into sector order (§6.4).
pub(crate) fn rs02_crc_table(l: &Rs02Layout, image: &dyn ByteSource, fp: &[u8; 16]) -> crate::Result<CrcTable> {
    let crc_bytes = (l.crc_sectors * ECC_SECTOR_BYTES) as usize;
    let mut area = vec![0u8; crc_bytes];
    let have = read_sectors(image, l.ds + 2, &mut area)?;
    let mut sector_ok = vec![true; l.crc_sectors as usize];
    let mut missing = Vec::new();
    for k in 0..l.crc_sectors {
        let s = l.ds + 2 + k;
        let sec = &area[(k * ECC_SECTOR_BYTES) as usize..((k + 1) * ECC_SECTOR_BYTES) as usize];
        if k >= have || layout::dead_sector(sec, s, Some(fp)).is_some() {
            sector_ok[k as usize] = false;
            if k < have {
                missing.push(s);
            }
        }
    }
    let area_md5: [u8; 16] = Md5::digest(&area).into();
    let mut crc = vec![0u32; l.ds as usize];
    let mut valid = vec![false; l.ds as usize];
    for (n, s) in l.crc_order().enumerate() {
        let w = n * 4;
        crc[s as usize] = u32::from_le_bytes([area[w], area[w + 1], area[w + 2], area[w + 3]]);
        valid[s as usize] = sector_ok[w / SECTOR];
    }
    Ok(CrcTable { crc, valid, area_md5, missing })
}

/// The RS03 CRCs of the image's data sectors, from the valid CRC blocks (§7.3).
pub(crate) fn rs03_crc_table(
    l: &Rs03Layout,
    image: &dyn ByteSource,
    ecc_src: Option<&dyn ByteSource>,
) -> crate::Result<CrcTable> {
    let mut crc = vec![0u32; l.ds as usize];
    let mut valid = vec![false; l.ds as usize];
    let mut missing = Vec::new();
    let crc_layer = l.ndata - 1;
    let mut buf = vec![0u8; (CHUNK_SECTORS * ECC_SECTOR_BYTES) as usize];
    let mut i0 = 0u64;
    while i0 < l.spl {
        let n = (l.spl - i0).min(CHUNK_SECTORS);
        let (src, first) = match l.place(crc_layer, i0) {
            Rs03Place::EccFile(fs) => (ecc_src.unwrap_or(image), fs),
            Rs03Place::Image(s) | Rs03Place::Padding(s) => (image, s),
        };
        let chunk = &mut buf[..(n * ECC_SECTOR_BYTES) as usize];
        let have = read_sectors(src, first, chunk)?;
        for q in 0..have.min(n) {
            let sec = &chunk[(q * ECC_SECTOR_BYTES) as usize..((q + 1) * ECC_SECTOR_BYTES) as usize];
            if layout::dead_sector(sec, first + q, None).is_some() {
                missing.push(first + q);
                continue;
            }
            if CrcBlock::parse(sec).is_none() {
                continue;
            }
            // Block i carries the CRCs of block i+1.
            let next = (i0 + q + 1) % l.spl;
            for j in 0..l.data_layers() {
                let s = j as u64 * l.spl + next;
                if s < l.ds {
                    crc[s as usize] = CrcBlock::crc_at(sec, j);
                    valid[s as usize] = true;
                }
            }
        }
        i0 += n;
    }
    Ok(CrcTable { crc, valid, area_md5: [0; 16], missing })
}

#[allow(clippy::too_many_arguments)]
fn verify_rs02(
    ecc: &Ecc,
    l: &Rs02Layout,
    image: &dyn ByteSource,
    opts: &Options,
    r: &mut Report,
    progress: &mut dyn Progress,
    interrupt: &Interrupt,
) -> crate::Result<()> {
    let h = &ecc.header;
    let fp = h.medium_fp;
    let nsec = r.image_sectors;
    r.expected_sectors = l.total;
    r.missing_sectors.extend(past_end(nsec, l.total));

    // Header copies (the first at ds counts as one).
    let copies: Vec<u64> = l.header_copies().collect();
    r.header_copies_total = copies.len() as u64;
    r.header_copies_ok = 0;
    r.header_copies_damaged.clear();
    let mut buf = vec![0u8; HEADER_BYTES];
    for &q in &copies {
        if q >= nsec {
            r.header_copies_missing.push(q);
            continue;
        }
        let have = read_sectors(image, q, &mut buf)?;
        for k in 0..have.min(2) {
            if layout::dead_sector(&buf[k as usize * SECTOR..(k as usize + 1) * SECTOR], q + k, Some(&fp)).is_some() {
                r.missing_sectors.push(q + k);
            }
        }
        match layout::EccHeader::parse(&buf) {
            Ok(c) => {
                r.header_copies_ok += 1;
                if c.raw != h.raw {
                    r.header_copies_differ.push(q);
                }
            }
            Err(layout::HeaderFault::SelfCrc { .. }) => r.header_copies_damaged.push(q),
            Err(_) => r.header_copies_missing.push(q),
        }
    }

    let t = rs02_crc_table(l, image, &fp)?;
    r.missing_sectors.extend(&t.missing);
    r.crc_sum_ok = if t.missing.is_empty() { Some(t.area_md5 == h.crc_sum) } else { None };
    r.crc_section_ok = t.missing.is_empty() && r.crc_sum_ok == Some(true);
    let CrcTable { crc: crcs, valid: crc_valid, .. } = t;

    // Jobs: the data MD5 first (the long serial stream), then data CRCs, then ECC layers.
    enum Job {
        DataMd5,
        DataCrc(u64, u64),
        Layer(usize),
    }
    let data_end = l.ds.min(nsec);
    let mut jobs = vec![Job::DataMd5];
    jobs.extend(crc_jobs(data_end).map(|(a, n)| Job::DataCrc(a, n)));
    jobs.extend((0..l.nroots).map(Job::Layer));
    let total = r.data_bytes + data_end * ECC_SECTOR_BYTES + l.nroots as u64 * l.spl * ECC_SECTOR_BYTES;
    let crc_of = |s: u64| if crc_valid[s as usize] { Some(crcs[s as usize]) } else { None };
    let results = run_all(
        &jobs,
        opts.workers,
        "checking ECC (RS02)",
        Some(total),
        progress,
        interrupt,
        || Ok(()),
        |job, _, ctx| {
            Ok(match job {
                Job::DataMd5 => {
                    (Found { md5: Some(md5_stream(image, 0, r.data_bytes, ctx)?), ..Found::default() }, None)
                }
                Job::DataCrc(a, n) => (check_data_sectors(image, *a, *n, &fp, &crc_of, ctx)?, None),
                Job::Layer(k) => {
                    let (f, md5) = rs02_layer(image, l, *k, nsec, &fp, ctx)?;
                    (f, Some(md5))
                }
            })
        },
    )?;
    let mut found = Found::default();
    let mut meta = Md5::new();
    let mut ecc_missing = false;
    for (f, layer_md5) in results {
        if let Some(m) = f.md5 {
            r.md5 = m;
        }
        if let Some(m) = layer_md5 {
            meta.update(m);
        }
        found.merge(f);
    }
    for k in 0..l.nroots {
        for i in 0..l.spl {
            if l.ecc_sector(k, i) >= nsec {
                ecc_missing = true;
            }
        }
    }
    let ecc_missing =
        ecc_missing || found.missing.iter().any(|&s| s >= l.protected && !copies.iter().any(|&q| s == q || s == q + 1));
    let ecc_sum: [u8; 16] = meta.finalize().into();
    r.ecc_sum_ok = if ecc_missing { None } else { Some(ecc_sum == h.ecc_sum) };
    r.ecc_section_ok = !ecc_missing && r.ecc_sum_ok == Some(true);
    r.md5_ok = Some(r.md5 == h.medium_sum);
    r.missing_sectors.extend(found.missing);
    r.bad_sectors.extend(found.bad);
    r.unchecked_sectors = found.unchecked;
    Ok(())
}

/// MD5 and dead-sector check of RS02 ECC layer `k`.
fn rs02_layer(
    image: &dyn ByteSource,
    l: &Rs02Layout,
    k: usize,
    nsec: u64,
    fp: &[u8; 16],
    ctx: &Tick<'_>,
) -> crate::Result<(Found, [u8; 16])> {
    let mut f = Found::default();
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; (CHUNK_SECTORS * ECC_SECTOR_BYTES) as usize];
    let mut i = 0u64;
    while i < l.spl {
        // A run of physically consecutive sectors (header copies break the runs).
        let start = l.ecc_sector(k, i);
        let mut n = 1u64;
        while i + n < l.spl && n < CHUNK_SECTORS && l.ecc_sector(k, i + n) == start + n {
            n += 1;
        }
        let chunk = &mut buf[..(n * ECC_SECTOR_BYTES) as usize];
        let have = read_sectors(image, start, chunk)?;
        for q in 0..have {
            let sec = &chunk[(q * ECC_SECTOR_BYTES) as usize..((q + 1) * ECC_SECTOR_BYTES) as usize];
            if layout::dead_sector(sec, start + q, Some(fp)).is_some() {
                f.missing.push(start + q);
            }
        }
        let _ = nsec;
        md5.update(&*chunk);
        ctx.tick(n * ECC_SECTOR_BYTES)?;
        i += n;
    }
    Ok((f, md5.finalize().into()))
}

#[allow(clippy::too_many_arguments)]
fn verify_rs01(
    ecc: &Ecc,
    l: &layout::Rs01Layout,
    image: &dyn ByteSource,
    ecc_file: &dyn ByteSource,
    opts: &Options,
    r: &mut Report,
    progress: &mut dyn Progress,
    interrupt: &Interrupt,
) -> crate::Result<()> {
    let h = &ecc.header;
    let fp = h.medium_fp;
    let nsec = r.image_sectors;
    r.missing_sectors.extend(past_end(nsec, l.sectors));
    let ecc_size = ecc_file.size_bytes();
    r.ecc_file_sectors = Some((l.file_bytes().div_ceil(ECC_SECTOR_BYTES), ecc_size.div_ceil(ECC_SECTOR_BYTES)));

    // The CRC section, as far as the file has it.
    let crc_len = (4 * l.sectors).min(ecc_size.saturating_sub(l.crc_offset()));
    let area = crate::source::read_vec(ecc_file, l.crc_offset(), crc_len as usize)
        .map_err(|e| crate::Error::io("reading the CRC section of the .ecc file", e))?;
    let crc_of = |s: u64| {
        let w = (s * 4) as usize;
        area.get(w..w + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    enum Job {
        DataMd5,
        EccMd5,
        DataCrc(u64, u64),
    }
    let data_end = l.sectors.min(nsec);
    let mut jobs = vec![Job::DataMd5, Job::EccMd5];
    jobs.extend(crc_jobs(data_end).map(|(a, n)| Job::DataCrc(a, n)));
    let ecc_tail = ecc_size.saturating_sub(HEADER_BYTES as u64);
    let total = r.data_bytes + ecc_tail + data_end * ECC_SECTOR_BYTES;
    let results = run_all(
        &jobs,
        opts.workers,
        "checking ECC (RS01)",
        Some(total),
        progress,
        interrupt,
        || Ok(()),
        |job, _, ctx| {
            Ok(match job {
                Job::DataMd5 => {
                    (Found { md5: Some(md5_stream(image, 0, r.data_bytes, ctx)?), ..Found::default() }, None)
                }
                Job::EccMd5 => (Found::default(), Some(md5_stream(ecc_file, HEADER_BYTES as u64, ecc_tail, ctx)?)),
                Job::DataCrc(a, n) => (check_data_sectors(image, *a, *n, &fp, &crc_of, ctx)?, None),
            })
        },
    )?;
    let mut found = Found::default();
    for (f, ecc_md5) in results {
        if let Some(m) = f.md5 {
            r.md5 = m;
        }
        if let Some(m) = ecc_md5 {
            r.ecc_sum_ok = Some(m == h.ecc_sum);
        }
        found.merge(f);
    }
    let size_ok = ecc_size == l.file_bytes();
    r.ecc_section_ok = size_ok && r.ecc_sum_ok == Some(true);
    r.crc_section_ok = r.ecc_section_ok;
    r.md5_ok = Some(r.md5 == h.medium_sum);
    r.missing_sectors.extend(found.missing);
    r.bad_sectors.extend(found.bad);
    r.unchecked_sectors = found.unchecked;
    Ok(())
}

/// RS03 ECC blocks `[i0, i1)`: read all 255 layers, check markers, CRC blocks, data CRCs and
/// syndromes.
struct Rs03Group<'a> {
    l: &'a Rs03Layout,
    image: &'a dyn ByteSource,
    ecc_src: Option<&'a dyn ByteSource>,
    fp: [u8; 16],
    image_sectors: u64,
    tables: &'a [MulTable],
}

impl Rs03Group<'_> {
    /// Fill `out` (n sectors) with layer `j`, sectors `i0..i0+n`. Returns per-sector "exists".
    fn read_layer(&self, j: usize, i0: u64, n: u64, out: &mut [u8], exists: &mut [bool]) -> crate::Result<()> {
        let l = self.l;
        match l.place(j, i0) {
            Rs03Place::Image(s0) if !l.ecc_file || j >= l.data_layers() => {
                let have = read_sectors(self.image, s0, out)?;
                for (q, e) in exists.iter_mut().enumerate() {
                    *e = (q as u64) < have;
                }
            }
            Rs03Place::EccFile(s0) => {
                let src = self.ecc_src.unwrap_or(self.image);
                let have = read_sectors(src, s0, out)?;
                for (q, e) in exists.iter_mut().enumerate() {
                    *e = (q as u64) < have;
                }
            }
            _ => {
                // .ecc file data layer: image sectors, then virtual padding sectors.
                for q in 0..n {
                    let s = j as u64 * l.spl + i0 + q;
                    let sec = &mut out[(q * ECC_SECTOR_BYTES) as usize..((q + 1) * ECC_SECTOR_BYTES) as usize];
                    if s < l.ds {
                        let have = read_sectors(self.image, s, sec)?;
                        exists[q as usize] = have == 1;
                    } else {
                        layout::padding_sector(s, &self.fp, sec);
                        exists[q as usize] = true;
                    }
                }
            }
        }
        Ok(())
    }

    fn run(&self, i0: u64, i1: u64, syndromes: SyndromeCheck, ctx: &Tick<'_>) -> crate::Result<Found> {
        let l = self.l;
        let n = i1 - i0;
        let nb = (n * ECC_SECTOR_BYTES) as usize;
        let mut layers = vec![0u8; 255 * nb];
        let mut exists = vec![false; 255 * n as usize];
        let mut f = Found::default();
        // Damage known per block, to tell data damage from ECC damage when syndromes fail.
        let mut explained = vec![false; n as usize];
        let crc_layer = l.ndata - 1;
        for j in 0..255 {
            self.read_layer(
                j,
                i0,
                n,
                &mut layers[j * nb..(j + 1) * nb],
                &mut exists[j * n as usize..(j + 1) * n as usize],
            )?;
            for q in 0..n {
                let sec =
                    &layers[j * nb + (q * ECC_SECTOR_BYTES) as usize..j * nb + ((q + 1) * ECC_SECTOR_BYTES) as usize];
                let (virt, file_sector) = self.numbering(j, i0 + q);
                let present = exists[j * n as usize + q as usize];
                let dead = present && layout::dead_sector(sec, virt, Some(&self.fp)).is_some();
                if !present || dead {
                    explained[q as usize] = true;
                    // Past-the-end sectors are listed by the caller; only markers here.
                    if dead {
                        match file_sector {
                            Some(fs) => f.missing_ecc_file.push(fs),
                            None => f.missing.push(virt),
                        }
                    }
                    exists[j * n as usize + q as usize] = false;
                } else if j == crc_layer && CrcBlock::parse(sec).is_none() {
                    f.crc_blocks_bad.push(file_sector.unwrap_or(virt));
                    explained[q as usize] = true;
                }
            }
            ctx.tick(nb as u64)?;
        }
        // CRCs of data-layer sectors: block i's come from the CrcBlock of block i−1.
        let prev = if i0 == 0 { l.spl - 1 } else { i0 - 1 };
        let mut prev_block = vec![0u8; SECTOR];
        let mut prev_exists = [false];
        self.read_layer(crc_layer, prev, 1, &mut prev_block, &mut prev_exists)?;
        let prev_ok = prev_exists[0] && CrcBlock::parse(&prev_block).is_some();
        for q in 0..n {
            let i = i0 + q;
            let (cb, cb_ok): (&[u8], bool) = if q == 0 {
                (&prev_block, prev_ok)
            } else {
                let at = crc_layer * nb + ((q - 1) * ECC_SECTOR_BYTES) as usize;
                let sec = &layers[at..at + SECTOR];
                (sec, exists[crc_layer * n as usize + q as usize - 1] && CrcBlock::parse(sec).is_some())
            };
            for j in 0..l.data_layers() {
                let s = j as u64 * l.spl + i;
                // dvdisaster checks every data-layer sector of an augmented image (header and
                // padding included), but only the real image sectors of an .ecc file.
                if l.ecc_file && s >= l.ds {
                    continue;
                }
                if !exists[j * n as usize + q as usize] {
                    continue;
                }
                if !cb_ok {
                    if s < l.ds {
                        f.unchecked += 1;
                    }
                    continue;
                }
                let sec =
                    &layers[j * nb + (q * ECC_SECTOR_BYTES) as usize..j * nb + ((q + 1) * ECC_SECTOR_BYTES) as usize];
                if layout::crc32(sec) != CrcBlock::crc_at(cb, j) {
                    f.bad.push(s);
                    explained[q as usize] = true;
                }
            }
        }
        // Syndromes, vectorised over the 2048 codewords of each block.
        let roots = match syndromes {
            SyndromeCheck::Quick => QUICK_SYNDROMES.min(self.tables.len()),
            SyndromeCheck::Full => self.tables.len(),
        };
        let mut acc = vec![0u8; roots * SECTOR];
        for q in 0..n {
            acc.fill(0);
            for j in 0..255 {
                let sec =
                    &layers[j * nb + (q * ECC_SECTOR_BYTES) as usize..j * nb + ((q + 1) * ECC_SECTOR_BYTES) as usize];
                for (t, a) in self.tables[..roots].iter().zip(acc.chunks_exact_mut(SECTOR)) {
                    rs::horner_step(a, t, sec);
                }
            }
            let bad = (0..SECTOR).filter(|&b| (0..roots).any(|k| acc[k * SECTOR + b] != 0)).count() as u64;
            if bad > 0 {
                f.blocks_bad += 1;
                f.codewords_bad += bad;
                if !explained[q as usize] {
                    f.blocks_bad_unexplained += 1;
                }
            }
        }
        Ok(f)
    }

    /// (sector number used in reports, `.ecc`-file sector if it lives there).
    fn numbering(&self, j: usize, i: u64) -> (u64, Option<u64>) {
        match self.l.place(j, i) {
            Rs03Place::Image(s) | Rs03Place::Padding(s) => (s, None),
            Rs03Place::EccFile(fs) => (j as u64 * self.l.spl + i, Some(fs)),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn verify_rs03(
    ecc: &Ecc,
    l: &Rs03Layout,
    image: &dyn ByteSource,
    ecc_src: Option<&dyn ByteSource>,
    opts: &Options,
    r: &mut Report,
    progress: &mut dyn Progress,
    interrupt: &Interrupt,
) -> crate::Result<()> {
    let h = &ecc.header;
    let nsec = r.image_sectors;
    if l.ecc_file {
        r.expected_sectors = l.ds;
        r.missing_sectors.extend(past_end(nsec, l.ds));
        let ecc_nsec = ecc_src.map_or(0, |s| s.size_bytes().div_ceil(ECC_SECTOR_BYTES));
        r.ecc_file_sectors = Some((l.total_sectors(), ecc_nsec));
        r.missing_ecc_file_sectors.extend(past_end(ecc_nsec, l.total_sectors()));
    } else {
        r.expected_sectors = l.total_sectors();
        r.missing_sectors.extend(past_end(nsec, l.total_sectors()));
        // The header at ds: present and valid?
        let mut buf = vec![0u8; HEADER_BYTES];
        if read_sectors(image, l.ds, &mut buf)? < 2 || layout::EccHeader::parse(&buf).is_err() {
            r.header_copies_ok = 0;
            if !r.header_copies_damaged.contains(&l.ds) {
                r.header_copies_damaged.push(l.ds);
            }
        }
    }
    let code = rs::Code::new(l.nroots)?;
    let group = Rs03Group { l, image, ecc_src, fp: h.medium_fp, image_sectors: nsec, tables: code.root_tables() };
    let _ = group.image_sectors;
    enum Job {
        DataMd5,
        Blocks(u64, u64),
    }
    let mut jobs = vec![Job::DataMd5];
    jobs.extend(
        (0..l.spl.div_ceil(RS03_GROUP)).map(|g| Job::Blocks(g * RS03_GROUP, ((g + 1) * RS03_GROUP).min(l.spl))),
    );
    let total = r.data_bytes + 255 * l.spl * ECC_SECTOR_BYTES;
    let results = run_all(
        &jobs,
        opts.workers,
        "checking ECC (RS03)",
        Some(total),
        progress,
        interrupt,
        || Ok(()),
        |job, _, ctx| match job {
            Job::DataMd5 => Ok(Found { md5: Some(md5_stream(image, 0, r.data_bytes, ctx)?), ..Found::default() }),
            Job::Blocks(a, b) => group.run(*a, *b, opts.syndromes, ctx),
        },
    )?;
    let mut found = Found::default();
    for f in results {
        if let Some(m) = f.md5 {
            r.md5 = m;
        }
        found.merge(f);
    }
    r.md5_ok = h.medium_sum_valid().then(|| r.md5 == h.medium_sum);
    r.ecc_blocks = Some(l.spl);
    r.ecc_blocks_bad = Some(found.blocks_bad);
    r.codewords_bad = Some(found.codewords_bad);
    // Section integrity: CRC layer = its sectors present and valid; ECC layers = present and
    // no failing block that known damage elsewhere does not explain.
    let crc_range = (l.ndata as u64 - 1) * l.spl..l.ndata as u64 * l.spl;
    let ecc_range = l.ndata as u64 * l.spl..255 * l.spl;
    let in_section = |range: &std::ops::Range<u64>| {
        if l.ecc_file {
            let to_file = |v: u64| 2 + v - (l.ndata as u64 - 1) * l.spl;
            let fr = to_file(range.start)..to_file(range.end);
            found.missing_ecc_file.iter().chain(&r.missing_ecc_file_sectors).any(|s| fr.contains(s))
        } else {
            found.missing.iter().chain(&r.missing_sectors).any(|s| range.contains(s))
        }
    };
    r.crc_section_ok = !in_section(&crc_range) && found.crc_blocks_bad.is_empty();
    r.ecc_section_ok = !in_section(&ecc_range) && found.blocks_bad_unexplained == 0;
    r.crc_blocks_bad = found.crc_blocks_bad;
    r.missing_sectors.extend(found.missing);
    r.missing_ecc_file_sectors.extend(found.missing_ecc_file);
    r.bad_sectors.extend(found.bad);
    r.unchecked_sectors = found.unchecked;
    Ok(())
}

/// Turn the findings into `ecc.*` problems.
fn problems(ecc: &Ecc, r: &mut Report) {
    let mut p = Vec::new();
    let h = &ecc.header;
    if let Some(at) = ecc.rebuilt_from {
        p.push(Problem::error(
            "ecc.header-damaged",
            format!(
                "the {} header is damaged; its parameters were rebuilt from the CRC block at sector {at}",
                h.method
            ),
        ));
    }
    if r.image_sectors < r.expected_sectors {
        p.push(Problem::error(
            "ecc.truncated",
            format!(
                "the image has {} sectors, the error correction data expects {} ({} missing at the end)",
                r.image_sectors,
                r.expected_sectors,
                r.expected_sectors - r.image_sectors
            ),
        ));
    } else if r.image_sectors > r.expected_sectors {
        p.push(Problem::warning(
            "ecc.excess-sectors",
            format!(
                "the image has {} sectors, {} more than the error correction data expects{}",
                r.image_sectors,
                r.image_sectors - r.expected_sectors,
                if r.image_sectors - r.expected_sectors <= 2 {
                    " (typical of a TAO/DAO mismatch when reading a disc)"
                } else {
                    ""
                }
            ),
        ));
    }
    if let Some((want, have)) = r.ecc_file_sectors
        && want != have
    {
        p.push(Problem::error(
            "ecc.ecc-file-size",
            format!("the .ecc file has {have} sectors, its header implies {want}"),
        ));
    }
    let lists: [(&str, &[u64], &str, &str); 3] = [
        ("ecc.missing-sector", &r.missing_sectors, "sector missing", "sectors missing"),
        (
            "ecc.missing-ecc-file-sector",
            &r.missing_ecc_file_sectors,
            "sector of the .ecc file missing",
            "sectors of the .ecc file missing",
        ),
        ("ecc.bad-sector", &r.bad_sectors, "sector fails its CRC", "sectors fail their CRC"),
    ];
    for (code, list, one, many) in lists {
        if !list.is_empty() {
            let why =
                if code == "ecc.missing-sector" { " (dead-sector markers or past the end of the image)" } else { "" };
            p.push(Problem::error(
                code,
                format!("{}{why}: {}", plural(list.len() as u64, one, many), format_ranges(list)),
            ));
        }
    }
    if r.unchecked_sectors > 0 {
        p.push(Problem::warning(
            "ecc.unchecked-sectors",
            format!(
                "{} could not be checked: the CRCs that cover them are damaged or missing",
                plural(r.unchecked_sectors, "data sector", "data sectors")
            ),
        ));
    }
    if r.md5_ok == Some(false) {
        p.push(Problem::error(
            "ecc.md5-mismatch",
            format!(
                "the image MD5 {} differs from the one recorded at creation ({})",
                crate::bytes::hex(&r.md5),
                crate::bytes::hex(&h.medium_sum)
            ),
        ));
    }
    if r.fingerprint_ok == Some(false) {
        p.push(Problem::error(
            "ecc.fingerprint-mismatch",
            format!(
                "sector {} of the image does not match the fingerprint in the .ecc file: image and .ecc file do not \
                 belong together (or that sector is damaged)",
                h.fp_sector
            ),
        ));
    }
    let bad_copies = r.header_copies_damaged.len() + r.header_copies_missing.len();
    if bad_copies > 0 && ecc.rebuilt_from.is_none() {
        let mut all: Vec<u64> = r.header_copies_damaged.iter().chain(&r.header_copies_missing).copied().collect();
        all.sort_unstable();
        p.push(Problem::error(
            "ecc.header-copy",
            format!(
                "{} of {} header copies damaged or missing (at {}); {} intact",
                bad_copies,
                r.header_copies_total,
                format_ranges(&all),
                r.header_copies_ok
            ),
        ));
    }
    if !r.header_copies_differ.is_empty() {
        p.push(Problem::warning(
            "ecc.header-copy-differs",
            format!(
                "header copies at {} are valid but differ from the header in use",
                format_ranges(&r.header_copies_differ)
            ),
        ));
    }
    if !r.crc_section_ok {
        let why = match r.method {
            Method::Rs01 => {
                "its checksum (shared with the parity section) does not match or the file is truncated".to_string()
            }
            Method::Rs02 => match r.crc_sum_ok {
                Some(false) => "its MD5 does not match crcSum".into(),
                _ => "sectors of it are missing".into(),
            },
            Method::Rs03 => {
                if r.crc_blocks_bad.is_empty() {
                    "sectors of it are missing".into()
                } else {
                    format!("CRC blocks fail their signature check at {}", format_ranges(&r.crc_blocks_bad))
                }
            }
        };
        p.push(Problem::error("ecc.crc-section", format!("the CRC section is damaged: {why}")));
    }
    if !r.ecc_section_ok {
        let why = match r.method {
            Method::Rs03 => {
                "sectors of it are missing, or ECC blocks fail the syndrome test where no data damage explains it"
                    .to_string()
            }
            _ => match r.ecc_sum_ok {
                Some(false) => "its MD5 does not match eccSum".into(),
                Some(true) => "the file size does not match its header".into(),
                None => "sectors of it are missing".into(),
            },
        };
        p.push(Problem::error("ecc.ecc-section", format!("the error correction section is damaged: {why}")));
    }
    if let (Some(bad), Some(blocks), Some(cw)) = (r.ecc_blocks_bad, r.ecc_blocks, r.codewords_bad)
        && bad > 0
    {
        p.push(Problem::error(
            "ecc.syndrome",
            format!("Reed-Solomon block test: {bad} of {blocks} ECC blocks fail ({cw} codewords)"),
        ));
    }
    r.problems = p;
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
