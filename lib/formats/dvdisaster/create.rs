//! `protect`: create dvdisaster error-correction data — RS03 augmented images and `.ecc` files,
//! RS02 augmented images, RS01 `.ecc` files — byte-identical to what `dvdisaster -c` 0.79.5
//! writes for the same input and parameters (same parameter choices, layouts, headers, CRC
//! blocks, padding sectors and Reed–Solomon parity). The image is only read; the output goes to a
//! temporary file that is synced, read back through [`super::verify`] and only then renamed.
//!
//! ```text
//!  plan      dvdisaster's parameter choice: medium size, roots, layout (CalcRS0xLayout)
//!  scan      RS01/RS02: one pass for the CRCs, the image MD5 and the fingerprint
//!  encode    ECC blocks in groups, one group per worker at a time: read the ndata layer
//!            sectors (logging the CRCs of the image's sectors for an augmented output),
//!            LFSR-encode them byte-parallel, write the parity sectors (and RS03 CRC blocks)
//!            where the layout puts them; meanwhile one more thread copies the image into an
//!            augmented output (copy_file_range) and writeback is started as the output fills
//!  finish    headers (RS02: every copy), eccSum MD5s, sync, verify, rename
//! ```
//! Every header field is a pure function of the input and the parameters (dvdisaster writes no
//! time, host or path into its output), so the comparison with dvdisaster needs no masking.

use super::layout::{
    self, COOKIE, ECC_SECTOR_BYTES, FINGERPRINT_SECTOR, HEADER_BYTES, MFLAG_ECC_FILE, Method, RS03_MIN_DATA_LAYERS,
    Rs01Layout, Rs02Layout, Rs03Layout, SECTOR, crcblk, hdr,
};
use super::rs::{Code, N};
use crate::output::{TempFile, check_output};
use crate::progress::{Interrupt, Run};
use crate::source::{ByteSource, FileSource};
use md5::{Digest, Md5};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// dvdisaster 0.79.5's version number, written as `creatorVersion`.
pub const CREATOR_VERSION: i32 = 7905;
/// ECC blocks (sectors of every layer) per work unit.
const GROUP: u64 = 8;

/// Medium capacities in sectors (`dvdisaster.h`: CDR_SIZE … BD_DL_SIZE).
pub const CD: u64 = 351 * 1024;
/// Single-layer DVD.
pub const DVD: u64 = 2_295_104;
/// Double-layer DVD (dvdisaster's `DVD9`).
pub const DVD_DL: u64 = 4_171_712;
/// Single-layer BD.
pub const BD: u64 = 11_826_176;
/// Double-layer BD (dvdisaster's `BD2`).
pub const BD_DL: u64 = 23_652_352;
/// In the order dvdisaster tries them.
const MEDIA: [u64; 5] = [CD, DVD, DVD_DL, BD, BD_DL];

/// Augmented image or separate file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// ECC appended to (a copy of) the image: RS02, RS03.
    Augment,
    /// A separate `.ecc` file: RS01, RS03.
    EccFile,
}

/// The redundancy asked for (dvdisaster's `-n` spellings other than medium sizes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Redundancy {
    /// `normal` (32 roots).
    Normal,
    /// `high` (64 roots).
    High,
    /// `N` or `Nr`: this many roots.
    Roots(usize),
    /// `N%`.
    Percent(f64),
    /// `Nm`: the largest `.ecc` file not exceeding N MiB.
    EccMib(u64),
}

/// What to create.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// Codec.
    pub method: Method,
    /// Augmented image or `.ecc` file.
    pub target: Target,
    /// Medium capacity in sectors (None: dvdisaster's automatic choice).
    pub medium: Option<u64>,
    /// Redundancy (None: dvdisaster's default).
    pub redundancy: Option<Redundancy>,
}

/// One of dvdisaster's `-n` values, classified.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeSpec {
    /// A medium capacity in sectors (`CD`, `DVD`, `DVD9`, `BD`, `BD2`, or a bare number given
    /// for an augmented image).
    Medium(u64),
    /// A redundancy.
    Redundancy(Redundancy),
}

/// A medium name as `--medium` and dvdisaster's `-n` spell it (`cd`, `dvd`, `dvd-dl`/`dvd9`,
/// `bd`, `bd-dl`/`bd2`, case-insensitive) or a capacity in sectors.
///
/// # Errors
/// `InvalidInput` for anything else.
pub fn parse_medium(s: &str) -> crate::Result<u64> {
    let l = s.trim().to_ascii_lowercase();
    let cap = match l.as_str() {
        "cd" => CD,
        "dvd" => DVD,
        "dvd-dl" | "dvd9" | "dvd-9" => DVD_DL,
        "bd" => BD,
        "bd-dl" | "bd2" => BD_DL,
        _ => l.parse::<u64>().map_err(|_| {
            crate::Error::invalid(format!(
                "medium {s:?}: expected cd, dvd, dvd-dl (dvd9), bd, bd-dl (bd2) or a size in 2048-byte sectors"
            ))
        })?,
    };
    if cap == 0 {
        return Err(crate::Error::invalid("medium size 0 sectors"));
    }
    Ok(cap)
}

/// A `--redundancy` value in any of dvdisaster's `-n` spellings: `normal`, `high`, `32r`, `32`,
/// `20%`, `50m`, or a medium (`CD`, `DVD`, … or a size in sectors). `augmented` says how a bare
/// number is read, as dvdisaster reads it: a medium size for augmented images, roots for `.ecc`
/// files.
///
/// # Errors
/// `InvalidInput` when it is none of these.
pub fn parse_size_spec(s: &str, augmented: bool) -> crate::Result<SizeSpec> {
    let t = s.trim();
    let l = t.to_ascii_lowercase();
    let bad = || {
        crate::Error::invalid(format!(
            "redundancy {s:?}: expected normal, high, a number of roots (32r), a percentage (20%), an .ecc file \
             size (50m) or a medium (cd, dvd, dvd9, bd, bd2, or a size in sectors)"
        ))
    };
    match l.as_str() {
        "normal" => return Ok(SizeSpec::Redundancy(Redundancy::Normal)),
        "high" => return Ok(SizeSpec::Redundancy(Redundancy::High)),
        "cd" | "dvd" | "dvd-dl" | "dvd9" | "dvd-9" | "bd" | "bd-dl" | "bd2" => {
            return Ok(SizeSpec::Medium(parse_medium(&l)?));
        }
        _ => {}
    }
    if let Some(n) = l.strip_suffix('r') {
        return n.parse::<usize>().map(|r| SizeSpec::Redundancy(Redundancy::Roots(r))).map_err(|_| bad());
    }
    if let Some(n) = l.strip_suffix('%') {
        let p: f64 = n.parse().map_err(|_| bad())?;
        if !p.is_finite() {
            return Err(bad());
        }
        return Ok(SizeSpec::Redundancy(Redundancy::Percent(p)));
    }
    if let Some(n) = l.strip_suffix('m') {
        return n.parse::<u64>().map(|m| SizeSpec::Redundancy(Redundancy::EccMib(m))).map_err(|_| bad());
    }
    let n: u64 = l.parse().map_err(|_| bad())?;
    if augmented {
        Ok(SizeSpec::Medium(parse_medium(&l)?))
    } else {
        Ok(SizeSpec::Redundancy(Redundancy::Roots(usize::try_from(n).map_err(|_| bad())?)))
    }
}

/// The geometry chosen for the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// RS01 `.ecc` file.
    Rs01(Rs01Layout),
    /// RS02 augmented image (with the medium capacity it was sized for, if any).
    Rs02(Rs02Layout, Option<u64>),
    /// RS03 augmented image or `.ecc` file (with the medium capacity, augmented only).
    Rs03(Rs03Layout, Option<u64>),
}

impl Plan {
    /// Parity symbols per codeword.
    pub fn nroots(&self) -> usize {
        match self {
            Plan::Rs01(l) => l.nroots,
            Plan::Rs02(l, _) => l.nroots,
            Plan::Rs03(l, _) => l.nroots,
        }
    }

    /// Size of the output in bytes (augmented image or `.ecc` file).
    pub fn output_bytes(&self) -> u64 {
        match self {
            Plan::Rs01(l) => l.file_bytes(),
            Plan::Rs02(l, _) => l.total * ECC_SECTOR_BYTES,
            Plan::Rs03(l, _) => l.total_sectors() * ECC_SECTOR_BYTES,
        }
    }

    /// Whether the output is an augmented image.
    pub fn augmented(&self) -> bool {
        match self {
            Plan::Rs01(_) => false,
            Plan::Rs02(..) => true,
            Plan::Rs03(l, _) => !l.ecc_file,
        }
    }
}

fn percent_to_roots(p: f64, max_percent: f64) -> crate::Result<usize> {
    if !(3.2..=max_percent).contains(&p) {
        return Err(crate::Error::invalid(format!(
            "redundancy {p:.1}% is outside the useful range 3.2%..{max_percent}%"
        )));
    }
    Ok(((N as f64 * p) / (100.0 + p)).round() as usize)
}

fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(0x10_0000)
}

/// `.ecc`-file roots (RS01: 8..=100, RS03: 8..=170) from a redundancy, as `calculate_redundancy`
/// (`rs01-create.c`) and `CalcRS03Layout(ECC_FILE)` compute them.
fn ecc_file_roots(method: Method, ds: u64, r: Option<Redundancy>) -> crate::Result<usize> {
    let (max_roots, max_percent) = if method == Method::Rs01 { (100, 64.5) } else { (170, 200.0) };
    let file_mib = |nr: usize| {
        let nd = (N - nr) as u64;
        match method {
            Method::Rs01 => mib(4096 + 4 * ds + 2048 * nr as u64 * ds.div_ceil(nd)),
            _ => mib(4096 + 2048 * (nr as u64 + 1) * ds.div_ceil(nd)),
        }
    };
    let nr = match r {
        None | Some(Redundancy::Normal) => 32,
        Some(Redundancy::High) => 64,
        Some(Redundancy::Roots(n)) => n,
        Some(Redundancy::Percent(p)) => percent_to_roots(p, max_percent)?,
        Some(Redundancy::EccMib(m)) => {
            let (lo, hi) = (file_mib(8), file_mib(max_roots));
            if m < lo || m > hi {
                return Err(crate::Error::invalid(format!(
                    ".ecc file size {m} MiB is outside the useful range {lo}..{hi} MiB for this image"
                )));
            }
            (9..=max_roots).rev().find(|&nr| m >= file_mib(nr)).unwrap_or(8)
        }
    };
    if !(8..=max_roots).contains(&nr) {
        return Err(crate::Error::invalid(format!("{nr} roots is outside the useful range 8..={max_roots}")));
    }
    Ok(nr)
}

/// RS03 roots for `ds` data sectors on a medium of `cap` sectors (`get_roots`).
fn rs03_roots(ds: u64, cap: u64) -> i64 {
    let spl = cap / 255;
    if spl == 0 {
        return -1;
    }
    N as i64 - (ds + 2).div_ceil(spl) as i64 - 1
}

fn medium_name(cap: u64) -> String {
    match cap {
        CD => "CD".into(),
        DVD => "DVD".into(),
        DVD_DL => "DVD-DL".into(),
        BD => "BD".into(),
        BD_DL => "BD-DL".into(),
        c => format!("{c}-sector medium"),
    }
}

/// dvdisaster's parameter choice for an image of `ds` sectors.
///
/// # Errors
/// `InvalidInput` for impossible combinations (RS01 augmented, RS02 `.ecc` file, redundancy
/// out of range) and when the data does not fit the medium (naming the largest redundancy that
/// fits, or the medium it would need).
pub fn plan(req: &Request, ds: u64) -> crate::Result<Plan> {
    if ds == 0 {
        return Err(crate::Error::invalid("the image is empty; there is nothing to protect"));
    }
    match (req.method, req.target) {
        (Method::Rs01, Target::Augment) => Err(crate::Error::invalid(
            "RS01 keeps its data in a separate .ecc file; give --ecc-file (or use RS02/RS03)",
        )),
        (Method::Rs02, Target::EccFile) => {
            Err(crate::Error::invalid("RS02 always augments the image; use RS01 or RS03 for a separate .ecc file"))
        }
        (Method::Rs01, Target::EccFile) | (Method::Rs03, Target::EccFile) => {
            if req.medium.is_some() {
                return Err(crate::Error::invalid(
                    "--medium applies to augmented images; an .ecc file's size follows from --redundancy",
                ));
            }
            let nroots = ecc_file_roots(req.method, ds, req.redundancy)?;
            let ndata = N - nroots;
            if req.method == Method::Rs01 {
                Ok(Plan::Rs01(Rs01Layout { sectors: ds, nroots, ndata, spl: ds.div_ceil(ndata as u64) }))
            } else {
                let spl = ds.div_ceil(ndata as u64 - 1);
                Ok(Plan::Rs03(Rs03Layout { ds, nroots, ndata, spl, ecc_file: true }, None))
            }
        }
        (Method::Rs03, Target::Augment) => {
            if let Some(r) = req.redundancy {
                return Err(crate::Error::invalid(format!(
                    "an RS03-augmented image always fills its medium, so its redundancy follows from --medium; \
                     {r:?} cannot be chosen (use --ecc-file for a given redundancy)"
                )));
            }
            let cap = match req.medium {
                Some(c) => {
                    if ds >= c {
                        return Err(crate::Error::invalid(format!(
                            "the image ({ds} sectors) does not fit on the {} ({c} sectors)",
                            medium_name(c)
                        )));
                    }
                    c
                }
                None => MEDIA.iter().copied().find(|&c| rs03_roots(ds, c) >= 8).unwrap_or(BD_DL),
            };
            let roots = rs03_roots(ds, cap);
            if roots < 8 {
                let need = MEDIA.iter().copied().find(|&c| rs03_roots(ds, c) >= 8);
                return Err(crate::Error::invalid(format!(
                    "the image ({ds} sectors) leaves room for {} roots on the {} ({cap} sectors); RS03 needs at \
                     least 8{}",
                    roots.max(0),
                    medium_name(cap),
                    need.map_or(String::from(" (it is too large for any standard medium)"), |c| format!(
                        ": choose a larger medium ({})",
                        medium_name(c)
                    ))
                )));
            }
            let spl = cap / 255;
            let nd0 = RS03_MIN_DATA_LAYERS.max((ds + 2).div_ceil(spl));
            let ndata = nd0 as usize + 1;
            Ok(Plan::Rs03(Rs03Layout { ds, nroots: N - ndata, ndata, spl, ecc_file: false }, Some(cap)))
        }
        (Method::Rs02, Target::Augment) => plan_rs02(req, ds),
    }
}

/// `CalcRS02Layout`.
fn plan_rs02(req: &Request, ds: u64) -> crate::Result<Plan> {
    let auto_cap = MEDIA.iter().copied().find(|&c| ds < c).unwrap_or(BD_DL);
    let cap = req.medium.unwrap_or(auto_cap);
    let crc_sectors = (4 * ds).div_ceil(ECC_SECTOR_BYTES);
    let protected = ds + 2 + crc_sectors;
    let requested = match req.redundancy {
        None => None,
        Some(Redundancy::Roots(r)) => Some(r),
        Some(Redundancy::Percent(p)) => {
            // dvdisaster reads the percentage as an integer and takes the fewest roots reaching it.
            let p = p.trunc();
            (7..=170usize).find(|&r| r as f64 * 100.0 / (N - r) as f64 >= p)
        }
        Some(r) => {
            return Err(crate::Error::invalid(format!(
                "RS02 takes its redundancy as roots (32r) or a percentage (20%), or from --medium; not {r:?}"
            )));
        }
    };
    if let Some(r) = requested
        && !(8..=170).contains(&r)
    {
        return Err(crate::Error::invalid(format!("{r} roots is outside the useful range 8..=170")));
    }
    let prelim = match requested {
        Some(r) => r,
        None => {
            let rs = cap as i64 - protected as i64;
            ((N as i64 * rs) / cap as i64).clamp(0, 170) as usize
        }
    };
    let modulo = Rs02Layout::base_modulo(ds, prelim).map_err(|f| crate::Error::invalid(f.to_string()))?;
    let fits = |l: &Rs02Layout| l.total <= cap;
    let layout_for = |nroots: usize| {
        Rs02Layout::compute(ds, nroots, modulo).map_err(|f| {
            crate::Error::invalid(format!("{f} (dvdisaster would write a runaway image here; use more roots)"))
        })
    };
    if let Some(r) = requested {
        let l = layout_for(r)?;
        if req.medium.is_some() && !fits(&l) {
            let best = (8..r).rev().find(|&n| layout_for(n).is_ok_and(|l| fits(&l)));
            return Err(crate::Error::invalid(format!(
                "the image ({ds} sectors) with {r} roots needs {} sectors, more than the {} holds ({cap}); {}",
                l.total,
                medium_name(cap),
                match best {
                    Some(n) => format!(
                        "the largest redundancy that fits is {n} roots ({:.1}%)",
                        n as f64 * 100.0 / (N - n) as f64
                    ),
                    None => "not even 8 roots fit: choose a larger medium".into(),
                }
            )));
        }
        return Ok(Plan::Rs02(l, req.medium));
    }
    let mut nroots = prelim;
    while nroots > 7 {
        let l = layout_for(nroots)?;
        if fits(&l) {
            return Ok(Plan::Rs02(l, Some(cap)));
        }
        nroots -= 1;
    }
    Err(crate::Error::invalid(format!(
        "not enough space on the {} ({cap} sectors) for RS02 error correction data: the image has {ds} sectors and \
         even 8 roots do not fit; choose a larger medium or create a separate .ecc file (RS01/RS03)",
        medium_name(cap)
    )))
}

/// Options for [`protect`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Replace an existing output file.
    pub force: bool,
    /// Encoder threads.
    pub workers: usize,
    /// Fault injection for the crash-safety tests of [`protect_in_place`]: stop dead (no
    /// clean-up, as a crash would) right after this step.
    #[doc(hidden)]
    pub crash_after: Option<InPlaceStep>,
    /// Fault injection for the read-back tests: flip this byte of the output after it is synced.
    #[doc(hidden)]
    pub corrupt_before_read_back: Option<u64>,
    /// Test seam: copy the image into an augmented output with `pread`/`pwrite` (the fallback
    /// where the kernel cannot copy between the two files) instead of `copy_file_range`.
    #[doc(hidden)]
    pub buffered_copy: bool,
    /// Test seam: called with the image's path once the image has been read for the encoding,
    /// before the output is synced and read back (a test changes the image here, as another
    /// program could while `protect` runs).
    #[doc(hidden)]
    pub after_encoding: Option<fn(&Path)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            force: false,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 64),
            crash_after: None,
            corrupt_before_read_back: None,
            buffered_copy: false,
            after_encoding: None,
        }
    }
}

/// The steps of [`protect_in_place`], in order (the points the fault-injection tests stop at).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InPlaceStep {
    /// The journal (original size) is written and synced.
    Journal,
    /// The image is extended to its augmented size (zeros).
    Extended,
    /// Everything but the header is written and synced.
    TailSynced,
    /// The header is written (not synced).
    Header,
    /// The header is synced; the journal is still there.
    HeaderSynced,
}

/// What [`protect`] wrote.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Codec.
    pub method: Method,
    /// Augmented image (else `.ecc` file).
    pub augmented: bool,
    /// The file written.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Sectors of the image.
    pub data_sectors: u64,
    /// Parity symbols per codeword.
    pub nroots: usize,
    /// Medium capacity the layout was sized for (augmented images), in sectors.
    pub medium_sectors: Option<u64>,
    /// RS02/RS03: sectors per layer; RS01: sectors per layer.
    pub sectors_per_layer: u64,
    /// The error-correction data as read back from the written file.
    pub ecc: super::Ecc,
    /// Bytes of the written file read back from the device and found equal to what was
    /// written (the whole output; in place, everything past the original image).
    pub read_back_bytes: u64,
}

/// The image as dvdisaster sees it: sectors, bytes in the last one, fingerprint.
struct Input<'a> {
    src: &'a dyn ByteSource,
    size: u64,
    ds: u64,
    in_last: u32,
    fp: [u8; 16],
}

impl<'a> Input<'a> {
    fn new(src: &'a dyn ByteSource) -> crate::Result<Self> {
        let size = src.size_bytes();
        let ds = size.div_ceil(ECC_SECTOR_BYTES);
        let rem = (size % ECC_SECTOR_BYTES) as u32;
        let in_last = if rem == 0 { SECTOR as u32 } else { rem };
        // GetImageFingerprint: MD5 of sector 16 if all 2048 bytes can be read and it is not a
        // dead sector marker, else zeros.
        let mut fp = [0u8; 16];
        if size >= (FINGERPRINT_SECTOR + 1) * ECC_SECTOR_BYTES {
            let mut b = vec![0u8; SECTOR];
            src.read_exact_at(&mut b, FINGERPRINT_SECTOR * ECC_SECTOR_BYTES)
                .map_err(|e| crate::Error::io("reading the fingerprint sector", e))?;
            if layout::dead_sector(&b, FINGERPRINT_SECTOR, None).is_none() {
                fp = Md5::digest(&b).into();
            }
        }
        Ok(Input { src, size, ds, in_last, fp })
    }

    /// Image sectors `[first, first+n)` into `buf`, zero beyond the end; refuses dead sectors.
    fn read(&self, first: u64, buf: &mut [u8]) -> crate::Result<()> {
        let off = first * ECC_SECTOR_BYTES;
        let avail = self.size.saturating_sub(off).min(buf.len() as u64) as usize;
        self.src.read_exact_at(&mut buf[..avail], off).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                crate::Error::corrupt(format!(
                    "the image got shorter while it was being protected (at sector {first}); the error correction \
                     data was not kept"
                ))
            } else {
                crate::Error::io(format!("reading image sector {first}"), e)
            }
        })?;
        buf[avail..].fill(0);
        for (k, sec) in buf[..avail].chunks(SECTOR).enumerate() {
            if sec.len() == SECTOR && layout::dead_sector(sec, first + k as u64, Some(&self.fp)).is_some() {
                return Err(dead_sector_error(first + k as u64));
            }
        }
        Ok(())
    }
}

fn dead_sector_error(s: u64) -> crate::Error {
    crate::Error::corrupt(format!(
        "image sector {s} is a dvdisaster dead-sector marker (it could not be read when the image was made); error \
         correction data can only be created for a complete image — repair or re-read it first"
    ))
}

/// A header with the fields every codec writes.
fn base_header(method: Method, flags0: u8, inp: &Input<'_>, ndata: usize, nroots: usize) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..12].copy_from_slice(COOKIE);
    h[hdr::METHOD..hdr::METHOD + 4].copy_from_slice(method.name().as_bytes());
    h[hdr::METHOD_FLAGS] = flags0;
    h[hdr::MEDIUM_FP..hdr::MEDIUM_FP + 16].copy_from_slice(&inp.fp);
    h[hdr::SECTORS..hdr::SECTORS + 8].copy_from_slice(&inp.ds.to_le_bytes());
    h[hdr::DATA_BYTES..hdr::DATA_BYTES + 4].copy_from_slice(&(ndata as i32).to_le_bytes());
    h[hdr::ECC_BYTES..hdr::ECC_BYTES + 4].copy_from_slice(&(nroots as i32).to_le_bytes());
    h[hdr::CREATOR_VERSION..hdr::CREATOR_VERSION + 4].copy_from_slice(&CREATOR_VERSION.to_le_bytes());
    h[hdr::FP_SECTOR..hdr::FP_SECTOR + 4].copy_from_slice(&(FINGERPRINT_SECTOR as i32).to_le_bytes());
    h[hdr::IN_LAST..hdr::IN_LAST + 4].copy_from_slice(&inp.in_last.to_le_bytes());
    h
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn sign(b: &mut [u8], at: usize) {
    let c = layout::self_crc(b, at);
    put32(b, at, c);
}

/// The RS03 CrcBlock template (`prepare_crc_block`) without the CRCs and selfCRC.
fn rs03_crc_block_template(l: &Rs03Layout, inp: &Input<'_>) -> [u8; SECTOR] {
    let mut b = [0u8; SECTOR];
    b[crcblk::COOKIE..crcblk::COOKIE + 12].copy_from_slice(COOKIE);
    b[crcblk::METHOD..crcblk::METHOD + 4].copy_from_slice(b"RS03");
    b[crcblk::METHOD_FLAGS] = if l.ecc_file { MFLAG_ECC_FILE } else { 0 };
    put32(&mut b, crcblk::CREATOR_VERSION, CREATOR_VERSION as u32);
    put32(&mut b, crcblk::NEEDED_VERSION, 7900);
    put32(&mut b, crcblk::FP_SECTOR, FINGERPRINT_SECTOR as u32);
    b[crcblk::MEDIUM_FP..crcblk::MEDIUM_FP + 16].copy_from_slice(&inp.fp);
    b[crcblk::DATA_SECTORS..crcblk::DATA_SECTORS + 8].copy_from_slice(&l.ds.to_le_bytes());
    put32(&mut b, crcblk::IN_LAST, inp.in_last);
    put32(&mut b, crcblk::DATA_BYTES, l.ndata as u32);
    put32(&mut b, crcblk::ECC_BYTES, l.nroots as u32);
    b[crcblk::SECTORS_PER_LAYER..crcblk::SECTORS_PER_LAYER + 8].copy_from_slice(&l.spl.to_le_bytes());
    b
}

/// The byte-parallel systematic encoder: the parity of many codewords at once, one codeword per
/// byte column (`crate::sys::gf_lfsr`: strips of 128 columns through all data rows, the parity
/// register in vectors; a multiplication by a generator coefficient is one `GF2P8AFFINEQB` per
/// 32 bytes with GFNI, two AVX2 byte shuffles of nibble-product tables without, table lookups
/// on other CPUs — checked at run time).
struct Encoder {
    kernel: crate::sys::GfKernel,
    /// Multiplication by `g[k+1]`.
    coef: Vec<crate::sys::GfMul>,
}

impl Encoder {
    fn new(code: &Code) -> Self {
        Self::with_kernel(code, crate::sys::GfKernel::best())
    }

    fn with_kernel(code: &Code, kernel: crate::sys::GfKernel) -> Self {
        let g = code.generator();
        let coef = (1..=code.nroots()).map(|k| crate::sys::GfMul::new(g[k], super::rs::mul)).collect();
        Encoder { kernel, coef }
    }

    /// `rows[j]` (ndata rows of `len` bytes) → `parity[k]` (nroots rows of `len` bytes).
    fn encode(&self, rows: &[Vec<u8>], parity: &mut [Vec<u8>], len: usize) {
        crate::sys::gf_lfsr(self.kernel, rows, parity, len, &self.coef);
    }
}

/// Where the encoder's rows come from and where its parity goes, per codec.
trait Codec: Sync {
    fn ndata(&self) -> usize;
    fn nroots(&self) -> usize;
    fn spl(&self) -> u64;
    /// Fill `rows[j]` with sectors `i0..i0+n` of data layer `j`; `extra` holds sector
    /// `(i0+n) % spl` of every layer when the codec needs it (RS03's chained CRCs).
    fn fill(&self, i0: u64, n: u64, rows: &mut [Vec<u8>], extra: &mut [Vec<u8>]) -> crate::Result<()>;
    /// Write the parity rows for sectors `i0..i0+n`.
    fn sink(&self, i0: u64, n: u64, parity: &[Vec<u8>]) -> crate::Result<()>;
    fn wants_extra(&self) -> bool {
        false
    }
}

/// Bytes of encoder progress between two requests to start the output's writeback.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// Parity rows for ECC blocks `i0..i0+n`, on their way from an encoder worker to the writer;
/// `back` returns the rows to that worker for its next blocks.
struct Encoded {
    i0: u64,
    n: u64,
    parity: Vec<Vec<u8>>,
    back: std::sync::mpsc::Sender<Vec<Vec<u8>>>,
}

/// Parity row sets each worker owns (one being filled while the writer writes the other).
const PARITY_SETS: usize = 2;

/// Run the encoder over all ECC blocks on `workers` threads; one more thread writes their parity
/// rows ([`Codec::sink`]) while they encode the next blocks — a single writer, so the workers
/// never wait for each other on the output file's lock (a buffered write holds the inode's lock,
/// and a writer preempted while holding it stalls every other writer). Meanwhile `copy` (if any)
/// copies the image into the augmented output on one more thread, and the calling thread starts
/// the writeback of what was written every [`WRITEBACK_EVERY`] bytes, so the final `fsync` has
/// little left to do and the disk writes while the CPUs encode.
fn encode_all(
    codec: &dyn Codec,
    workers: usize,
    run: &mut Run<'_>,
    out: &Out<'_>,
    copy: Option<&CopyJob<'_>>,
) -> crate::Result<()> {
    let code = Code::new(codec.nroots())?;
    let enc = Encoder::new(&code);
    let spl = codec.spl();
    let groups = spl.div_ceil(GROUP);
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let interrupt: &Interrupt = run.interrupt;
    let failed = AtomicBool::new(false);
    let total_bytes = spl * ECC_SECTOR_BYTES * codec.ndata() as u64;
    // Woken by every thread as it ends, so the progress loop below notices at once.
    let caller = std::thread::current();
    let finish = |r: crate::Result<()>| {
        if r.is_err() {
            failed.store(true, Ordering::Relaxed);
        }
        caller.unpark();
        r
    };
    let finish = &finish;
    run.progress.start("encoding", Some(total_bytes));
    let result = std::thread::scope(|s| -> crate::Result<()> {
        let copier = copy.map(|job| s.spawn(|| finish(copy_image(job, out, &failed, interrupt))));
        let (to_writer, jobs) = std::sync::mpsc::sync_channel::<Encoded>(workers.max(1) * PARITY_SETS);
        let writer = s.spawn(|| {
            finish((|| {
                for job in jobs {
                    if failed.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    codec.sink(job.i0, job.n, &job.parity)?;
                    // The worker may have stopped already: then the rows are just dropped.
                    let _ = job.back.send(job.parity);
                }
                Ok(())
            })())
        });
        let mut handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                let to_writer = to_writer.clone();
                let (next, done, failed, enc) = (&next, &done, &failed, &enc);
                s.spawn(move || finish(encode_worker(codec, enc, groups, next, done, failed, interrupt, &to_writer)))
            })
            .collect();
        // The writer ends when every worker has dropped its sender.
        drop(to_writer);
        handles.push(writer);
        // Progress from the calling thread while the others run.
        let mut reported = 0u64;
        let mut flushed = 0u64;
        while handles.iter().chain(&copier).any(|h| !h.is_finished()) {
            std::thread::park_timeout(std::time::Duration::from_millis(50));
            let d = done.load(Ordering::Relaxed);
            run.progress.advance(d - reported);
            reported = d;
            if d - flushed >= WRITEBACK_EVERY {
                // A hint only: the fsync after encoding reports any write error.
                let _ = out.start_writeback(0, 0);
                flushed = d;
            }
        }
        let mut first_err = None;
        for h in handles.into_iter().chain(copier) {
            let r = h.join().unwrap_or_else(|_| Err(crate::Error::invalid("BUG: an encoder thread panicked")));
            if let Err(e) = r
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    });
    run.progress.finish();
    result
}

/// One encoder worker of [`encode_all`]: takes the next group of ECC blocks until none are left,
/// reads it, encodes it and hands the parity rows to the writer.
#[allow(clippy::too_many_arguments)]
fn encode_worker(
    codec: &dyn Codec,
    enc: &Encoder,
    groups: u64,
    next: &AtomicU64,
    done: &AtomicU64,
    failed: &AtomicBool,
    interrupt: &Interrupt,
    to_writer: &std::sync::mpsc::SyncSender<Encoded>,
) -> crate::Result<()> {
    let spl = codec.spl();
    let ndata = codec.ndata();
    let max = (GROUP * ECC_SECTOR_BYTES) as usize;
    // One sector more than a group: RS03 reads the sector after the group with it.
    let mut rows: Vec<Vec<u8>> = (0..ndata).map(|_| vec![0u8; max + SECTOR]).collect();
    let mut extra: Vec<Vec<u8>> =
        if codec.wants_extra() { (0..ndata).map(|_| vec![0u8; SECTOR]).collect() } else { Vec::new() };
    let (back, returned) = std::sync::mpsc::channel();
    let mut free: Vec<Vec<Vec<u8>>> =
        (0..PARITY_SETS).map(|_| (0..codec.nroots()).map(|_| vec![0u8; max]).collect()).collect();
    loop {
        if failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        interrupt.check()?;
        let g = next.fetch_add(1, Ordering::Relaxed);
        if g >= groups {
            return Ok(());
        }
        let i0 = g * GROUP;
        let n = GROUP.min(spl - i0);
        let len = (n * ECC_SECTOR_BYTES) as usize;
        codec.fill(i0, n, &mut rows, &mut extra)?;
        let mut parity = match free.pop() {
            Some(p) => p,
            None => loop {
                // A writer that failed keeps the rows (and `failed` tells why): look again now
                // and then rather than wait for rows that never come back.
                match returned.recv_timeout(std::time::Duration::from_millis(20)) {
                    Ok(p) => break p,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) if !failed.load(Ordering::Relaxed) => {}
                    Err(_) => return Ok(()),
                }
            },
        };
        enc.encode(&rows, &mut parity, len);
        if to_writer.send(Encoded { i0, n, parity, back: back.clone() }).is_err() {
            return Ok(());
        }
        done.fetch_add(len as u64 * ndata as u64, Ordering::Relaxed);
    }
}

fn write_at(f: &File, path: &Path, buf: &[u8], off: u64) -> crate::Result<()> {
    f.write_all_at(buf, off).map_err(|e| crate::Error::io(format!("writing {} at byte {off}", path.display()), e))
}

/// One write to the output: where, how long, and the CRC-32 of the bytes (what the read-back
/// compares the device's bytes against).
#[derive(Debug, Clone, Copy)]
struct Written {
    at: u64,
    len: u64,
    crc: u32,
}

/// The output file, with a log of every write to it (shared by the encoder threads).
struct Out<'a> {
    file: &'a File,
    path: &'a Path,
    log: std::sync::Mutex<Vec<Written>>,
}

impl<'a> Out<'a> {
    fn new(file: &'a File, path: &'a Path) -> Self {
        Out { file, path, log: std::sync::Mutex::new(Vec::new()) }
    }

    fn write(&self, buf: &[u8], off: u64) -> crate::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        write_at(self.file, self.path, buf, off)?;
        let w = Written { at: off, len: buf.len() as u64, crc: crc32fast::hash(buf) };
        self.log.lock().map_err(|_| crate::Error::invalid("BUG: an encoder thread panicked"))?.push(w);
        Ok(())
    }

    /// Log bytes that another writer puts at `off` (the image's copy, [`copy_image`]), so the
    /// read-back compares the device's bytes with these.
    fn expect(&self, buf: &[u8], off: u64) -> crate::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let w = Written { at: off, len: buf.len() as u64, crc: crc32fast::hash(buf) };
        self.log.lock().map_err(|_| crate::Error::invalid("BUG: an encoder thread panicked"))?.push(w);
        Ok(())
    }

    /// Write data sectors into an augmented output, all-zero sectors left out (the output is
    /// created at full size, so zeros stay holes: a sparse image gives a sparse output). With
    /// `copied`, the sectors are the image's and [`copy_image`] writes them: only logged.
    fn write_data(&self, buf: &[u8], off: u64, copied: bool) -> crate::Result<()> {
        let put = |b: &[u8], at: u64| if copied { self.expect(b, at) } else { self.write(b, at) };
        let mut start = 0;
        for (k, sec) in buf.chunks(SECTOR).enumerate() {
            let zero = sec.iter().all(|&b| b == 0);
            if zero {
                if start < k * SECTOR {
                    put(&buf[start..k * SECTOR], off + start as u64)?;
                }
                start = (k + 1) * SECTOR;
            }
        }
        if start < buf.len() {
            put(&buf[start..], off + start as u64)?;
        }
        Ok(())
    }

    /// Start writing back `off..off+len` (0: to the end) of the output ([`crate::sys::start_writeback`]).
    fn start_writeback(&self, off: u64, len: u64) -> std::io::Result<()> {
        crate::sys::start_writeback(std::os::fd::AsFd::as_fd(self.file), off, len)
    }

    /// The write log, sorted by offset.
    fn into_log(self) -> crate::Result<Vec<Written>> {
        let mut log = self.log.into_inner().map_err(|_| crate::Error::invalid("BUG: an encoder thread panicked"))?;
        log.sort_unstable_by_key(|w| w.at);
        Ok(log)
    }
}

/// Copying the image into an augmented output (`-o`).
struct CopyJob<'a> {
    src: &'a FileSource,
    /// Bytes of the image (copied to the same offsets).
    size: u64,
    /// `pread`/`pwrite` instead of `copy_file_range` (test seam).
    buffered: bool,
}

/// Bytes per copy request (each followed by a request to start its writeback).
const COPY_CHUNK: u64 = 8 << 20;

/// Copy the image's data regions (holes stay holes) into the output at the same offsets, in
/// order, with `copy_file_range` (the bytes stay in the kernel) or, where the kernel cannot copy
/// between the two files, `pread`/`pwrite`; start the writeback of each chunk once it is copied.
/// Nothing is logged here: the encoder workers log the CRC-32 of every image sector they read
/// ([`Out::write_data`] with `copied`), so the read-back checks that the output holds exactly
/// the bytes the error-correction data was computed from.
fn copy_image(job: &CopyJob<'_>, out: &Out<'_>, failed: &AtomicBool, interrupt: &Interrupt) -> crate::Result<()> {
    let src = job.src;
    let regions = src
        .data_regions(0..job.size)
        .map_err(|e| crate::Error::io(format!("finding the data regions of {}", src.path().display()), e))?;
    let shrank = || {
        crate::Error::corrupt(format!(
            "{} got shorter while it was being protected; the error correction data was not kept",
            src.path().display()
        ))
    };
    let mut kernel = !job.buffered;
    let mut buf = Vec::new();
    for r in regions {
        let mut pos = r.start;
        while pos < r.end {
            if failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            interrupt.check()?;
            let start = pos;
            let len = (r.end - pos).min(COPY_CHUNK) as usize;
            if kernel {
                let (mut off_in, mut off_out) = (pos, pos);
                match rustix::fs::copy_file_range(src.file(), Some(&mut off_in), out.file, Some(&mut off_out), len) {
                    Ok(0) => return Err(shrank()),
                    Ok(n) => pos += n as u64,
                    // The kernel cannot copy between these two (another file system, a block
                    // device, an old kernel): copy through memory from here on.
                    Err(
                        rustix::io::Errno::XDEV
                        | rustix::io::Errno::INVAL
                        | rustix::io::Errno::NOSYS
                        | rustix::io::Errno::OPNOTSUPP,
                    ) => kernel = false,
                    Err(e) => {
                        return Err(crate::Error::io(
                            format!("copying {} into {} at byte {pos}", src.path().display(), out.path.display()),
                            std::io::Error::from(e),
                        ));
                    }
                }
            } else {
                buf.resize(len, 0);
                src.read_exact_at(&mut buf, pos).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        shrank()
                    } else {
                        crate::Error::io(format!("reading {} at byte {pos}", src.path().display()), e)
                    }
                })?;
                write_at(out.file, out.path, &buf, pos)?;
                pos += len as u64;
            }
            if pos > start {
                // A hint only: the fsync after encoding reports any write error.
                let _ = out.start_writeback(start, pos - start);
            }
        }
    }
    Ok(())
}

/// Bytes per read of the read-back.
const READ_BACK_CHUNK: usize = 8 << 20;
/// Read-back threads (reads in flight at once, besides the compare).
const READ_BACK_READERS: usize = 3;

/// The write log is sorted, its writes do not overlap, and all lie in `from..end`.
fn check_write_log(path: &Path, from: u64, end: u64, log: &[Written]) -> crate::Result<()> {
    for w in log.windows(2) {
        if w[0].at + w[0].len > w[1].at {
            return Err(crate::Error::invalid(format!(
                "BUG: overlapping writes to {} at bytes {} and {}",
                path.display(),
                w[0].at,
                w[1].at
            )));
        }
    }
    if log.first().is_some_and(|w| w.at < from) || log.last().is_some_and(|w| w.at + w.len > end) {
        return Err(crate::Error::invalid(format!("BUG: a write to {} outside the checked range", path.display())));
    }
    Ok(())
}

/// Read bytes `from..end` of the synced output back from the device (`O_DIRECT`, or after its
/// cached pages are dropped) and compare them with what was written: every write in `log` (sorted)
/// must read back with its CRC-32, and every byte no write covered must read as zero (the file
/// was created, or extended, at full size: holes). Returns the bytes checked.
fn read_back_writes(
    file: &File,
    path: &Path,
    from: u64,
    end: u64,
    log: &[Written],
    run: &mut Run<'_>,
) -> crate::Result<u64> {
    use crate::output::direct::{ALIGN, AlignedBuf, ReadBack};
    check_write_log(path, from, end, log)?;
    let rb = ReadBack::open(path, file)
        .map_err(|e| crate::Error::io(format!("reopening {} to read it back", path.display()), e))?;
    run.progress.start("reading back", Some(end - from));
    let wrong = |a: u64, b: u64| {
        crate::Error::corrupt(format!(
            "{} reads back wrong: bytes {a}..{b} on the device are not the bytes written there",
            path.display()
        ))
    };
    let mut next = 0usize;
    let mut hasher = crc32fast::Hasher::new();
    let mut pos = from;
    let first = from - from % ALIGN as u64;
    let chunks = (end.saturating_sub(first)).div_ceil(READ_BACK_CHUNK as u64);
    let chunk_at = |k: u64| first + k * READ_BACK_CHUNK as u64;
    // READ_BACK_READERS threads read chunks k, k + READERS, … (each with two buffers, so it reads
    // the next while its last is being compared); this thread compares them in order.
    std::thread::scope(|s| -> crate::Result<()> {
        let mut lanes = Vec::new();
        for r in 0..READ_BACK_READERS {
            let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<std::io::Result<AlignedBuf>>(2);
            let (empty_tx, empty_rx) = std::sync::mpsc::channel::<AlignedBuf>();
            for _ in 0..2 {
                let _ = empty_tx.send(AlignedBuf::new(READ_BACK_CHUNK + ALIGN));
            }
            let rb = &rb;
            s.spawn(move || {
                let mut k = r as u64;
                while k < chunks {
                    let Ok(mut buf) = empty_rx.recv() else { return };
                    let at = chunk_at(k);
                    let len = (end - at).min(READ_BACK_CHUNK as u64) as usize;
                    let res = rb.read_exact_at(&mut buf, at, len).map(|_| ());
                    let failed = res.is_err();
                    if full_tx.send(res.map(|()| buf)).is_err() || failed {
                        return;
                    }
                    k += READ_BACK_READERS as u64;
                }
            });
            lanes.push((full_rx, empty_tx));
        }
        for k in 0..chunks {
            run.interrupt.check()?;
            let chunk = chunk_at(k);
            let len = (end - chunk).min(READ_BACK_CHUNK as u64) as usize;
            let (full_rx, empty_tx) = &lanes[(k % READ_BACK_READERS as u64) as usize];
            let buf = full_rx
                .recv()
                .map_err(|_| crate::Error::invalid("BUG: a read-back thread stopped"))?
                .map_err(|e| crate::Error::io(format!("reading {} back at byte {chunk}", path.display()), e))?;
            let data = &buf.as_slice()[..len];
            let chunk_end = chunk + len as u64;
            while pos < chunk_end {
                let here = &data[(pos - chunk) as usize..];
                match log.get(next) {
                    Some(w) if w.at <= pos => {
                        let w_end = w.at + w.len;
                        let m = (w_end.min(chunk_end) - pos) as usize;
                        hasher.update(&here[..m]);
                        pos += m as u64;
                        if pos == w_end {
                            if std::mem::take(&mut hasher).finalize() != w.crc {
                                return Err(wrong(w.at, w_end));
                            }
                            next += 1;
                        }
                    }
                    w => {
                        let gap_end = w.map_or(chunk_end, |w| w.at.min(chunk_end));
                        let m = (gap_end - pos) as usize;
                        if let Some(k) = here[..m].iter().position(|&b| b != 0) {
                            return Err(wrong(pos + k as u64, pos + k as u64 + 1));
                        }
                        pos = gap_end;
                    }
                }
            }
            run.progress.advance(len as u64);
            let _ = empty_tx.send(buf);
        }
        Ok(())
    })?;
    run.progress.finish();
    Ok(end - from)
}

struct Rs03Codec<'a> {
    l: Rs03Layout,
    inp: &'a Input<'a>,
    /// Augmented: write data-layer sectors from this one on (0: a copy of the image; `ds + 2`:
    /// in place, where the image's sectors are already there). The header sectors `ds`,
    /// `ds + 1` are never written here: the caller writes them last.
    write_from: u64,
    /// The image's sectors are copied into the output by [`copy_image`]: only logged here.
    copied: bool,
    header: [u8; HEADER_BYTES],
    template: [u8; SECTOR],
    out: &'a Out<'a>,
}

impl Rs03Codec<'_> {
    /// Virtual data sector `s` (of data layers 0..ndata-1) into `buf`.
    fn data_sector(&self, s: u64, buf: &mut [u8]) -> crate::Result<()> {
        let ds = self.l.ds;
        if s < ds {
            self.inp.read(s, buf)
        } else if !self.l.ecc_file && s < ds + 2 {
            let k = (s - ds) as usize * SECTOR;
            buf.copy_from_slice(&self.header[k..k + SECTOR]);
            Ok(())
        } else {
            layout::padding_sector(s, &self.inp.fp, buf);
            Ok(())
        }
    }

    /// Sectors `s..s+n` of a data layer (`i` consecutive sectors of one layer are consecutive).
    fn data_run(&self, s: u64, buf: &mut [u8]) -> crate::Result<()> {
        let ds = self.l.ds;
        let n = (buf.len() / SECTOR) as u64;
        let real = ds.saturating_sub(s).min(n);
        if real > 0 {
            self.inp.read(s, &mut buf[..real as usize * SECTOR])?;
        }
        for k in real..n {
            let b = &mut buf[k as usize * SECTOR..(k as usize + 1) * SECTOR];
            self.data_sector(s + k, b)?;
        }
        Ok(())
    }
}

impl Codec for Rs03Codec<'_> {
    fn ndata(&self) -> usize {
        self.l.ndata
    }
    fn nroots(&self) -> usize {
        self.l.nroots
    }
    fn spl(&self) -> u64 {
        self.l.spl
    }
    fn wants_extra(&self) -> bool {
        true
    }
    fn fill(&self, i0: u64, n: u64, rows: &mut [Vec<u8>], extra: &mut [Vec<u8>]) -> crate::Result<()> {
        let l = &self.l;
        let len = (n * ECC_SECTOR_BYTES) as usize;
        let dl = l.data_layers();
        let next = (i0 + n) % l.spl;
        for j in 0..dl {
            let s = j as u64 * l.spl + i0;
            if next != 0 {
                // The sector after the group follows it: one read for both.
                self.data_run(s, &mut rows[j][..len + SECTOR])?;
                extra[j].copy_from_slice(&rows[j][len..len + SECTOR]);
            } else {
                self.data_run(s, &mut rows[j][..len])?;
                self.data_sector(j as u64 * l.spl, &mut extra[j])?;
            }
            if !l.ecc_file {
                // Skip what is already there (in place) and the header (written last).
                let row = &rows[j][..len];
                for (a, b, copied) in [(self.write_from, l.ds, self.copied), (l.ds + 2, u64::MAX, false)] {
                    let (a, b) = (a.max(s), b.min(s + n));
                    if a < b {
                        let r = &row[((a - s) as usize * SECTOR)..((b - s) as usize * SECTOR)];
                        self.out.write_data(r, a * ECC_SECTOR_BYTES, copied)?;
                    }
                }
            }
        }
        // CRC layer: block i carries the CRCs of block i+1.
        let (data, crc) = rows.split_at_mut(dl);
        let crc = &mut crc[0];
        for k in 0..n as usize {
            let cb = &mut crc[k * SECTOR..(k + 1) * SECTOR];
            cb.copy_from_slice(&self.template);
            for (j, layer) in data.iter().enumerate() {
                let sec: &[u8] =
                    if k + 1 < n as usize { &layer[(k + 1) * SECTOR..(k + 2) * SECTOR] } else { &extra[j] };
                put32(cb, crcblk::CRC + 4 * j, layout::crc32(sec));
            }
            sign(cb, crcblk::SELF_CRC);
        }
        let crc_off = if l.ecc_file { 2 + i0 } else { (l.ndata as u64 - 1) * l.spl + i0 };
        self.out.write(&rows[dl][..len], crc_off * ECC_SECTOR_BYTES)
    }
    fn sink(&self, i0: u64, n: u64, parity: &[Vec<u8>]) -> crate::Result<()> {
        let l = &self.l;
        let len = (n * ECC_SECTOR_BYTES) as usize;
        for (k, p) in parity.iter().enumerate() {
            let at = match l.place(l.ndata + k, i0) {
                layout::Rs03Place::Image(s) | layout::Rs03Place::EccFile(s) => s,
                layout::Rs03Place::Padding(_) => {
                    return Err(crate::Error::invalid("BUG: RS03 parity placed in padding"));
                }
            };
            self.out.write(&p[..len], at * ECC_SECTOR_BYTES)?;
        }
        Ok(())
    }
}

struct Rs02Codec<'a> {
    l: Rs02Layout,
    inp: &'a Input<'a>,
    /// In place: the image's sectors are already there; do not write them.
    in_place: bool,
    /// The image's sectors are copied into the output by [`copy_image`]: only logged here.
    copied: bool,
    crc_area: Vec<u8>,
    out: &'a Out<'a>,
}

impl Codec for Rs02Codec<'_> {
    fn ndata(&self) -> usize {
        self.l.ndata
    }
    fn nroots(&self) -> usize {
        self.l.nroots
    }
    fn spl(&self) -> u64 {
        self.l.spl
    }
    fn fill(&self, i0: u64, n: u64, rows: &mut [Vec<u8>], _extra: &mut [Vec<u8>]) -> crate::Result<()> {
        let l = &self.l;
        let len = (n * ECC_SECTOR_BYTES) as usize;
        for (j, row) in rows.iter_mut().enumerate() {
            let s0 = j as u64 * l.spl + i0;
            let row = &mut row[..len];
            let real = l.ds.saturating_sub(s0).min(n);
            if real > 0 {
                let b = &mut row[..real as usize * SECTOR];
                self.inp.read(s0, b)?;
                if !self.in_place {
                    self.out.write_data(b, s0 * ECC_SECTOR_BYTES, self.copied)?;
                }
            }
            for k in real..n {
                let s = s0 + k;
                let b = &mut row[k as usize * SECTOR..(k as usize + 1) * SECTOR];
                // The first header is zeros in the codewords (it holds eccSum); virtual padding too.
                if s >= l.ds + 2 && s < l.protected {
                    let c = (s - l.ds - 2) as usize * SECTOR;
                    b.copy_from_slice(&self.crc_area[c..c + SECTOR]);
                } else {
                    b.fill(0);
                }
            }
        }
        Ok(())
    }
    fn sink(&self, i0: u64, n: u64, parity: &[Vec<u8>]) -> crate::Result<()> {
        for (k, p) in parity.iter().enumerate() {
            for i in 0..n as usize {
                let at = self.l.ecc_sector(k, i0 + i as u64);
                self.out.write(&p[i * SECTOR..(i + 1) * SECTOR], at * ECC_SECTOR_BYTES)?;
            }
        }
        Ok(())
    }
}

struct Rs01Codec<'a> {
    l: Rs01Layout,
    inp: &'a Input<'a>,
    out: &'a Out<'a>,
}

impl Codec for Rs01Codec<'_> {
    fn ndata(&self) -> usize {
        self.l.ndata
    }
    fn nroots(&self) -> usize {
        self.l.nroots
    }
    fn spl(&self) -> u64 {
        self.l.spl
    }
    fn fill(&self, i0: u64, n: u64, rows: &mut [Vec<u8>], _extra: &mut [Vec<u8>]) -> crate::Result<()> {
        let len = (n * ECC_SECTOR_BYTES) as usize;
        for (j, row) in rows.iter_mut().enumerate() {
            let s0 = j as u64 * self.l.spl + i0;
            // Sectors past the image are zeros; Input::read pads them.
            self.inp.read(s0, &mut row[..len])?;
        }
        Ok(())
    }
    fn sink(&self, i0: u64, n: u64, parity: &[Vec<u8>]) -> crate::Result<()> {
        // Parity bytes of one codeword are stored consecutively.
        let nr = self.l.nroots;
        let len = (n * ECC_SECTOR_BYTES) as usize;
        let mut buf = vec![0u8; len * nr];
        for (k, p) in parity.iter().enumerate() {
            for (b, &v) in p[..len].iter().enumerate() {
                buf[b * nr + k] = v;
            }
        }
        let off = self.l.parity_offset() + i0 * ECC_SECTOR_BYTES * nr as u64;
        self.out.write(&buf, off)
    }
}

/// RS01/RS02: one pass over the image for the per-sector CRCs and the MD5 of its bytes.
fn scan(inp: &Input<'_>, run: &mut Run<'_>) -> crate::Result<(Vec<u32>, [u8; 16])> {
    const CHUNK: u64 = 512;
    run.progress.start("checksums", Some(inp.size));
    let mut crcs = Vec::with_capacity(inp.ds as usize);
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; (CHUNK * ECC_SECTOR_BYTES) as usize];
    let mut s = 0;
    while s < inp.ds {
        run.interrupt.check()?;
        let n = CHUNK.min(inp.ds - s);
        let b = &mut buf[..(n * ECC_SECTOR_BYTES) as usize];
        inp.read(s, b)?;
        let bytes = (inp.size - s * ECC_SECTOR_BYTES).min(b.len() as u64) as usize;
        md5.update(&b[..bytes]);
        crcs.extend(b.chunks(SECTOR).map(layout::crc32));
        run.progress.advance(bytes as u64);
        s += n;
    }
    run.progress.finish();
    Ok((crcs, md5.finalize().into()))
}

/// MD5 of `len` bytes of `f` at `off`.
fn md5_of(f: &File, path: &Path, off: u64, len: u64) -> crate::Result<[u8; 16]> {
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut o = off;
    while o < off + len {
        let n = (off + len - o).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], o)
            .map_err(|e| crate::Error::io(format!("reading {} back", path.display()), e))?;
        h.update(&buf[..n]);
        o += n as u64;
    }
    Ok(h.finalize().into())
}

/// Write RS03 data: header, CRC layer and ECC layers (and, augmented, the data and padding).
/// The write that makes an augmented output an augmented image: the header at sector `ds`
/// (RS02: its first copy). Written last, after everything else is synced.
struct FinalWrite {
    header: [u8; HEADER_BYTES],
    at: u64,
}

fn write_rs03(
    l: &Rs03Layout,
    inp: &Input<'_>,
    out: &Out<'_>,
    in_place: bool,
    workers: usize,
    run: &mut Run<'_>,
    copy: Option<&CopyJob<'_>>,
) -> crate::Result<Option<FinalWrite>> {
    let flags = if l.ecc_file { MFLAG_ECC_FILE } else { 0 };
    let mut header = base_header(Method::Rs03, flags, inp, l.ndata, l.nroots);
    put32(&mut header, hdr::NEEDED_VERSION, 7900);
    header[hdr::SECTORS_PER_LAYER..hdr::SECTORS_PER_LAYER + 8].copy_from_slice(&l.spl.to_le_bytes());
    sign(&mut header, hdr::SELF_CRC);
    if l.ecc_file {
        out.write(&header, 0)?;
    }
    let write_from = if in_place { l.ds + 2 } else { 0 };
    let codec = Rs03Codec {
        l: *l,
        inp,
        write_from,
        copied: copy.is_some() && !in_place,
        header,
        template: rs03_crc_block_template(l, inp),
        out,
    };
    encode_all(&codec, workers, run, out, copy.filter(|_| !in_place))?;
    Ok((!l.ecc_file).then_some(FinalWrite { header, at: l.ds * ECC_SECTOR_BYTES }))
}

fn write_rs02(
    l: &Rs02Layout,
    inp: &Input<'_>,
    out: &Out<'_>,
    in_place: bool,
    workers: usize,
    run: &mut Run<'_>,
    copy: Option<&CopyJob<'_>>,
) -> crate::Result<Option<FinalWrite>> {
    let (crcs, md5) = scan(inp, run)?;
    let mut crc_area = Vec::with_capacity((l.crc_sectors * ECC_SECTOR_BYTES) as usize);
    for s in l.crc_order() {
        crc_area.extend_from_slice(&crcs[s as usize].to_le_bytes());
    }
    while crc_area.len() < (l.crc_sectors * ECC_SECTOR_BYTES) as usize {
        crc_area.extend_from_slice(&layout::SELF_CRC_PLACEHOLDER);
    }
    out.write(&crc_area, (l.ds + 2) * ECC_SECTOR_BYTES)?;
    let crc_sum: [u8; 16] = Md5::digest(&crc_area).into();
    let copy = copy.filter(|_| !in_place);
    let codec = Rs02Codec { l: *l, inp, in_place, copied: copy.is_some(), crc_area, out };
    encode_all(&codec, workers, run, out, copy)?;
    // eccSum: MD5 of the per-layer MD5s, each over the layer's sectors in order.
    let mut outer = Md5::new();
    let mut sec = vec![0u8; SECTOR];
    for k in 0..l.nroots {
        run.interrupt.check()?;
        let mut h = Md5::new();
        for i in 0..l.spl {
            let at = l.ecc_sector(k, i) * ECC_SECTOR_BYTES;
            out.file
                .read_exact_at(&mut sec, at)
                .map_err(|e| crate::Error::io(format!("reading {} back", out.path.display()), e))?;
            h.update(&sec);
        }
        outer.update(h.finalize());
    }
    let ecc_sum: [u8; 16] = outer.finalize().into();
    let mut header = base_header(Method::Rs02, 0, inp, l.ndata, l.nroots);
    header[hdr::MEDIUM_SUM..hdr::MEDIUM_SUM + 16].copy_from_slice(&md5);
    header[hdr::ECC_SUM..hdr::ECC_SUM + 16].copy_from_slice(&ecc_sum);
    put32(&mut header, hdr::NEEDED_VERSION, 6600);
    header[hdr::CRC_SUM..hdr::CRC_SUM + 16].copy_from_slice(&crc_sum);
    header[hdr::SECTORS_ADDED_BY_ECC..hdr::SECTORS_ADDED_BY_ECC + 8].copy_from_slice(&l.ecc_sectors.to_le_bytes());
    // The CRCs of ECC block firstCrcLayerIndex, in layer order.
    let mut at = SECTOR;
    let mut s = l.first_crc_layer;
    while s < l.ds && at + 4 <= HEADER_BYTES {
        put32(&mut header, at, crcs[s as usize]);
        at += 4;
        s += l.spl;
    }
    sign(&mut header, hdr::SELF_CRC);
    for p in l.header_copies().skip(1) {
        out.write(&header, p * ECC_SECTOR_BYTES)?;
    }
    Ok(Some(FinalWrite { header, at: l.ds * ECC_SECTOR_BYTES }))
}

fn write_rs01(l: &Rs01Layout, inp: &Input<'_>, out: &Out<'_>, workers: usize, run: &mut Run<'_>) -> crate::Result<()> {
    let (crcs, md5) = scan(inp, run)?;
    let crc_bytes: Vec<u8> = crcs.iter().flat_map(|c| c.to_le_bytes()).collect();
    out.write(&crc_bytes, l.crc_offset())?;
    let codec = Rs01Codec { l: *l, inp, out };
    encode_all(&codec, workers, run, out, None)?;
    let ecc_sum = md5_of(out.file, out.path, HEADER_BYTES as u64, l.file_bytes() - HEADER_BYTES as u64)?;
    let mut header = base_header(Method::Rs01, 1, inp, l.ndata, l.nroots);
    header[hdr::MEDIUM_SUM..hdr::MEDIUM_SUM + 16].copy_from_slice(&md5);
    header[hdr::ECC_SUM..hdr::ECC_SUM + 16].copy_from_slice(&ecc_sum);
    put32(&mut header, hdr::NEEDED_VERSION, if inp.in_last == SECTOR as u32 { 5500 } else { 6600 });
    out.write(&header, 0)
}

/// Create the error-correction data `req` asks for, for the image at `image_path`, in `out`
/// (the augmented copy of the image, or the `.ecc` file). The image is only read. `out` is
/// written under a temporary name, synced, verified with loopkit's verifier (the augmented
/// image, or the image against the new `.ecc` file), and renamed into place only if that
/// verification is clean.
///
/// # Errors
/// `InvalidInput` for impossible parameters or data that does not fit the medium;
/// `Unsafe` when `out` exists (without `force`) or is the image; `Corrupt` when the image holds
/// dead-sector markers or (augmenting) already carries dvdisaster data, or when the written
/// output does not verify; `Io`; `Interrupted`. No output is left behind on error.
pub fn protect(
    image_path: &Path,
    req: &Request,
    out: &Path,
    opts: &Options,
    run: &mut Run<'_>,
) -> crate::Result<Outcome> {
    check_output(out, &[image_path], opts.force)?;
    let src = FileSource::open(image_path)?;
    let before = image_state(&src, image_path)?;
    let inp = Input::new(&src)?;
    let plan = plan(req, inp.ds)?;
    if plan.augmented()
        && let Some(e) = super::find_in_image(&src)?
    {
        return Err(crate::Error::corrupt(format!(
            "{} already carries dvdisaster {} error correction data; strip it first (loopkit strip-ecc) to \
             protect the original again",
            image_path.display(),
            e.method()
        )));
    }
    let tmp = TempFile::beside(out)?;
    let tmp_path = tmp.path.clone();
    let size = plan.output_bytes();
    tmp.file.set_len(size).map_err(|e| crate::Error::io(format!("sizing {}", tmp_path.display()), e))?;
    let o = Out::new(&tmp.file, &tmp_path);
    // An augmented output starts as a copy of the image.
    let copy = plan.augmented().then_some(CopyJob { src: &src, size: inp.size, buffered: opts.buffered_copy });
    if let Some(fw) = write_all(&plan, &inp, &o, false, opts.workers, run, copy.as_ref())? {
        o.write(&fw.header, fw.at)?;
    }
    if let Some(hook) = opts.after_encoding {
        hook(image_path);
    }
    // A changed image is refused as early as it can be seen (and again after the read-back).
    let unchanged = || -> crate::Result<()> {
        if image_state(&src, image_path)? != before {
            return Err(crate::Error::corrupt(format!(
                "{} changed while it was being protected (its size, modification or change time is not what it \
                 was when protect started); the error correction data was not kept",
                image_path.display()
            )));
        }
        Ok(())
    };
    unchanged()?;
    let log = o.into_log()?;
    sync(&tmp.file, &tmp_path)?;
    inject_corruption(opts, &tmp.file, &tmp_path)?;

    // Read the written bytes back from the device before the file takes the final name.
    let (ecc, checked) = read_back(&plan, req, &tmp.file, &tmp_path, 0, size, &log, run)?;
    unchanged()?;
    tmp.persist(out, opts.force)?;
    Ok(outcome(&plan, req, &inp, out, size, ecc, checked))
}

/// What tells that the image read through `src` changed during the run: size, modification and
/// change times, inode — from the open descriptor (`fstat`), so it is the file that was read.
fn image_state(src: &FileSource, image: &Path) -> crate::Result<(u64, u64, u64, i64, i64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = src.metadata().map_err(|e| crate::Error::io(format!("stat {}", image.display()), e))?;
    Ok((m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec()))
}

/// Fault injection for the read-back tests: flip a byte of the synced output (and sync it), as a
/// device that stored other bytes than it was given would.
fn inject_corruption(opts: &Options, f: &File, path: &Path) -> crate::Result<()> {
    if let Some(at) = opts.corrupt_before_read_back {
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).map_err(|e| crate::Error::io(format!("reading {}", path.display()), e))?;
        write_at(f, path, &[b[0] ^ 0x40], at)?;
        sync(f, path)?;
    }
    Ok(())
}

/// The journal of an in-place run: beside the image, `.NAME.loopkit-protect-journal`.
pub fn in_place_journal(image: &Path) -> PathBuf {
    let name = image.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    crate::output::parent_dir(image).join(format!(".{name}.loopkit-protect-journal"))
}

/// (original size, device, inode) from a journal.
fn read_journal(j: &Path) -> crate::Result<(u64, u64, u64)> {
    let text = std::fs::read_to_string(j).map_err(|e| crate::Error::io(format!("reading {}", j.display()), e))?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse::<u64>().ok()))
            .ok_or_else(|| crate::Error::corrupt(format!("{} is not a loopkit protect journal (no {k})", j.display())))
    };
    Ok((field("original_bytes ")?, field("device ")?, field("inode ")?))
}

fn crash_point(opts: &Options, step: InPlaceStep) -> crate::Result<()> {
    if opts.crash_after == Some(step) {
        return Err(crate::Error::new(crate::ErrorKind::Interrupted, format!("injected crash after {step:?}")));
    }
    Ok(())
}

fn sync(f: &File, path: &Path) -> crate::Result<()> {
    f.sync_all().map_err(|e| crate::Error::io(format!("syncing {}", path.display()), e))
}

/// Augment the image itself (RS02, RS03) — only on explicit request (`--in-place`). Crash-safe,
/// and the image's own bytes are never written:
///
/// 1. a journal beside the image records its size (and device/inode), synced with its
///    directory;
/// 2. the image is extended and everything past its end except the header — padding, CRC
///    blocks, ECC layers, RS02's CRC area and header copies — is written, then synced;
/// 3. the header at sector `ds` (the first thing dvdisaster and loopkit look for) is written
///    and synced: only now is it an augmented image;
/// 4. it is read back through the verifier (cached pages dropped first); on failure the image
///    is cut back to its original size;
/// 5. the journal is removed.
///
/// A run interrupted in 1–3 leaves the original bytes intact plus trailing data without a
/// header; the next run finds the journal and cuts the image back to the recorded size before
/// it starts. Interrupted after 3, the image is complete; the next run cuts it back and
/// protects it again (the same bytes).
///
/// # Errors
/// As [`protect`]; also `InvalidInput` for `.ecc`-file requests, `Corrupt` for a journal that
/// does not belong to the image.
pub fn protect_in_place(image_path: &Path, req: &Request, opts: &Options, run: &mut Run<'_>) -> crate::Result<Outcome> {
    use std::os::unix::fs::MetadataExt;
    if req.target != Target::Augment {
        return Err(crate::Error::invalid(
            "--in-place augments the image (RS02/RS03); an .ecc file is a separate file",
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image_path)
        .map_err(|e| crate::Error::io(format!("opening {} for augmenting in place", image_path.display()), e))?;
    let meta = file.metadata().map_err(|e| crate::Error::io(format!("stat {}", image_path.display()), e))?;
    if !meta.is_file() {
        return Err(crate::Error::new(
            crate::ErrorKind::Unsafe,
            format!("{} is not a regular file; --in-place augments image files only", image_path.display()),
        ));
    }
    let journal = in_place_journal(image_path);
    if journal.exists() {
        let (orig, dev, ino) = read_journal(&journal)?;
        if dev != meta.dev() || ino != meta.ino() || meta.len() < orig {
            return Err(crate::Error::corrupt(format!(
                "{} belongs to another file or a shorter one ({orig} bytes); remove it if {} is not the image an \
                 interrupted `protect --in-place` was augmenting",
                journal.display(),
                image_path.display()
            )));
        }
        // An interrupted run: back to the original bytes.
        file.set_len(orig).map_err(|e| crate::Error::io(format!("truncating {}", image_path.display()), e))?;
        sync(&file, image_path)?;
    }
    let src = FileSource::open(image_path)?;
    let inp = Input::new(&src)?;
    let plan = plan(req, inp.ds)?;
    if let Some(e) = super::find_in_image(&src)? {
        return Err(crate::Error::corrupt(format!(
            "{} already carries dvdisaster {} error correction data",
            image_path.display(),
            e.method()
        )));
    }
    let orig = inp.size;
    let tmp = crate::output::TempFile::beside(&journal)?;
    let text = format!(
        "loopkit protect --in-place journal: the image was {orig} bytes before augmenting\noriginal_bytes {orig}\ndevice \
         {}\ninode {}\n",
        meta.dev(),
        meta.ino()
    );
    write_at(&tmp.file, &tmp.path, text.as_bytes(), 0)?;
    tmp.persist(&journal, true)?;
    crash_point(opts, InPlaceStep::Journal)?;
    let undo = |e: crate::Error| {
        // Back to the original bytes; the journal goes only if that worked.
        if file.set_len(orig).and_then(|()| file.sync_all()).is_ok() {
            let _ = std::fs::remove_file(&journal);
        }
        e
    };
    let size = plan.output_bytes();
    file.set_len(size).map_err(|e| crate::Error::io(format!("extending {}", image_path.display()), e))?;
    crash_point(opts, InPlaceStep::Extended)?;
    let o = Out::new(&file, image_path);
    let fw = match write_all(&plan, &inp, &o, true, opts.workers, run, None) {
        Ok(Some(fw)) => fw,
        Ok(None) => return Err(undo(crate::Error::invalid("BUG: an augmented layout without a header"))),
        Err(e) => return Err(undo(e)),
    };
    sync(&file, image_path).map_err(undo)?;
    crash_point(opts, InPlaceStep::TailSynced)?;
    o.write(&fw.header, fw.at).map_err(undo)?;
    crash_point(opts, InPlaceStep::Header)?;
    sync(&file, image_path).map_err(undo)?;
    crash_point(opts, InPlaceStep::HeaderSynced)?;
    let log = o.into_log().map_err(undo)?;
    inject_corruption(opts, &file, image_path).map_err(undo)?;
    let (ecc, report) = read_back(&plan, req, &file, image_path, orig, size, &log, run)
        .map_err(|e| undo(e.context("the image was cut back to its original size")))?;
    std::fs::remove_file(&journal).map_err(|e| crate::Error::io(format!("removing {}", journal.display()), e))?;
    crate::output::sync_dir_of(image_path)?;
    Ok(outcome(&plan, req, &inp, image_path, size, ecc, report))
}

fn write_all(
    plan: &Plan,
    inp: &Input<'_>,
    out: &Out<'_>,
    in_place: bool,
    workers: usize,
    run: &mut Run<'_>,
    copy: Option<&CopyJob<'_>>,
) -> crate::Result<Option<FinalWrite>> {
    match plan {
        Plan::Rs03(l, _) => write_rs03(l, inp, out, in_place, workers, run, copy),
        Plan::Rs02(l, _) => write_rs02(l, inp, out, in_place, workers, run, copy),
        Plan::Rs01(l) => write_rs01(l, inp, out, workers, run).map(|()| None),
    }
}

/// The synced output `file` at `written_path`: its bytes `from..end` read back from the device
/// and compared with the write log (see [`read_back_writes`]), then its error-correction data
/// opened as a reader of the file finds it. Returns that and the bytes checked.
#[allow(clippy::too_many_arguments)]
fn read_back(
    plan: &Plan,
    req: &Request,
    file: &File,
    written_path: &Path,
    from: u64,
    end: u64,
    log: &[Written],
    run: &mut Run<'_>,
) -> crate::Result<(super::Ecc, u64)> {
    let checked = read_back_writes(file, written_path, from, end, log, run)?;
    let written = FileSource::open(written_path)?;
    let ecc = if plan.augmented() {
        super::find_in_image(&written)?
    } else {
        Some(super::open_ecc_source(Arc::new(written), written_path)?)
    };
    match ecc {
        Some(ecc) if ecc.method() == req.method && ecc.nroots() == plan.nroots() && ecc.rebuilt_from.is_none() => {
            Ok((ecc, checked))
        }
        _ => Err(crate::Error::corrupt(format!(
            "BUG: {} reads back without the {} header that was written",
            written_path.display(),
            req.method.name()
        ))),
    }
}

fn outcome(
    plan: &Plan,
    req: &Request,
    inp: &Input<'_>,
    out: &Path,
    size: u64,
    ecc: super::Ecc,
    read_back_bytes: u64,
) -> Outcome {
    let mut ecc = ecc;
    if let super::Placement::EccFile { path, .. } = &mut ecc.placement {
        *path = out.to_path_buf();
    }
    let (spl, medium) = match plan {
        Plan::Rs01(l) => (l.spl, None),
        Plan::Rs02(l, m) => (l.spl, *m),
        Plan::Rs03(l, m) => (l.spl, *m),
    };
    Outcome {
        method: req.method,
        augmented: plan.augmented(),
        path: out.to_path_buf(),
        bytes: size,
        data_sectors: inp.ds,
        nroots: plan.nroots(),
        medium_sectors: medium,
        sectors_per_layer: spl,
        ecc,
        read_back_bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dvdisaster_spellings() {
        assert_eq!(parse_medium("DVD9").unwrap(), DVD_DL);
        assert_eq!(parse_medium("bd-dl").unwrap(), BD_DL);
        assert_eq!(parse_medium("2550").unwrap(), 2550);
        assert!(parse_medium("floppy").is_err());
        assert_eq!(parse_size_spec("32r", true).unwrap(), SizeSpec::Redundancy(Redundancy::Roots(32)));
        assert_eq!(parse_size_spec("40", false).unwrap(), SizeSpec::Redundancy(Redundancy::Roots(40)));
        assert_eq!(parse_size_spec("400000", true).unwrap(), SizeSpec::Medium(400000));
        assert_eq!(parse_size_spec("CD", false).unwrap(), SizeSpec::Medium(CD));
        assert_eq!(parse_size_spec("20%", false).unwrap(), SizeSpec::Redundancy(Redundancy::Percent(20.0)));
        assert_eq!(parse_size_spec("5m", false).unwrap(), SizeSpec::Redundancy(Redundancy::EccMib(5)));
        assert!(parse_size_spec("lots", false).is_err());
    }

    #[test]
    fn rs02_plan_matches_the_worked_example() {
        // docs/formats/dvdisaster.md §6.7: 9978 sectors on a CD: 170 roots, 30138 sectors.
        let req = Request { method: Method::Rs02, target: Target::Augment, medium: None, redundancy: None };
        let Plan::Rs02(l, _) = plan(&req, 9978).unwrap() else { panic!("not RS02") };
        assert_eq!((l.nroots, l.total, l.modulo), (170, 30138, 512));
        // 20% → 43 roots (dvdisaster picks the fewest roots reaching the percentage).
        let req = Request { redundancy: Some(Redundancy::Percent(20.0)), ..req };
        assert_eq!(plan(&req, 9978).unwrap().nroots(), 43);
    }

    #[test]
    fn rs03_plans() {
        // §7.2: 9978 sectors on a CD: spl 1409, 170 roots.
        let req = Request { method: Method::Rs03, target: Target::Augment, medium: None, redundancy: None };
        let Plan::Rs03(l, Some(cap)) = plan(&req, 9978).unwrap() else { panic!("not RS03") };
        assert_eq!((cap, l.spl, l.nroots, l.total_sectors()), (CD, 1409, 170, 359295));
        // -n 20% for an .ecc file gave 43 roots (§7.4).
        let req = Request { target: Target::EccFile, redundancy: Some(Redundancy::Percent(20.0)), ..req };
        assert_eq!(plan(&req, 9978).unwrap().nroots(), 43);
        // Too large for the medium: a clear error naming the medium that fits.
        let req = Request { target: Target::Augment, medium: Some(CD), redundancy: None, ..req };
        let e = plan(&req, 350_000).unwrap_err();
        assert!(e.message().contains("DVD"), "{}", e.message());
    }

    fn run_protect<T>(f: impl FnOnce(&mut Run<'_>) -> T) -> T {
        let interrupt = Interrupt::new();
        f(&mut Run::new(&mut crate::progress::NoProgress, &interrupt))
    }

    /// Every interruption point of `protect_in_place` (stopping dead, no clean-up), with the
    /// tail a crash could leave half-written scribbled over: the image's own bytes are intact,
    /// and the next run produces exactly the bytes of an augmented copy (`protect -o`, which the
    /// integration tests compare with `dvdisaster -c`).
    #[test]
    fn in_place_survives_every_interruption() {
        let dir = std::env::temp_dir().join(format!("loopkit-protect-inplace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let orig: Vec<u8> = (0..300u32 * 2048 - 777).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for (method, medium, redundancy) in
            [(Method::Rs03, Some(2550), None), (Method::Rs02, None, Some(Redundancy::Roots(40)))]
        {
            let req = Request { method, target: Target::Augment, medium, redundancy };
            let src = dir.join("orig.img");
            std::fs::write(&src, &orig).unwrap();
            let copy = dir.join("copy.img");
            let _ = std::fs::remove_file(&copy);
            let opts = Options { workers: 2, ..Default::default() };
            run_protect(|r| protect(&src, &req, &copy, &opts, r)).unwrap();
            let want = std::fs::read(&copy).unwrap();
            assert_eq!(&want[..orig.len()], &orig[..]);
            for step in [
                InPlaceStep::Journal,
                InPlaceStep::Extended,
                InPlaceStep::TailSynced,
                InPlaceStep::Header,
                InPlaceStep::HeaderSynced,
            ] {
                let img = dir.join("inplace.img");
                std::fs::write(&img, &orig).unwrap();
                let crash = Options { crash_after: Some(step), ..opts.clone() };
                let e = run_protect(|r| protect_in_place(&img, &req, &crash, r)).unwrap_err();
                assert_eq!(e.kind(), crate::ErrorKind::Interrupted, "{method:?} {step:?}: {}", e.message());
                let mut now = std::fs::read(&img).unwrap();
                assert!(now.len() >= orig.len() && now[..orig.len()] == orig[..], "{method:?} {step:?}");
                assert!(in_place_journal(&img).exists(), "{method:?} {step:?}: no journal");
                if matches!(step, InPlaceStep::Extended) {
                    // A crash mid-write: some of the tail written, some garbage.
                    for (k, b) in now[orig.len()..].iter_mut().enumerate() {
                        *b = (k * 7) as u8;
                    }
                    std::fs::write(&img, &now).unwrap();
                }
                run_protect(|r| protect_in_place(&img, &req, &opts, r)).unwrap();
                let got = std::fs::read(&img).unwrap();
                assert!(got == want, "{method:?} {step:?}: the resumed in-place result differs from the copy");
                assert!(!in_place_journal(&img).exists(), "{method:?} {step:?}: journal left");
                // Protecting it again is refused; the image stays as it is.
                assert!(run_protect(|r| protect_in_place(&img, &req, &opts, r)).is_err());
                assert!(std::fs::read(&img).unwrap() == want);
            }
            // A failure (the header does not fit the medium) changes nothing.
            let img = dir.join("inplace.img");
            std::fs::write(&img, &orig).unwrap();
            let bad = Request { medium: Some(100), ..req };
            assert!(run_protect(|r| protect_in_place(&img, &bad, &opts, r)).is_err());
            assert!(std::fs::read(&img).unwrap() == orig && !in_place_journal(&img).exists());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A byte that reaches the device wrong (flipped after the sync, before the read-back) is
    /// caught: the run fails, the output never takes its name and no temporary file is left;
    /// in place, the image is cut back to its original bytes. Header, middle, last byte, and
    /// (in place) a byte that was never written (the zeros after the image's end).
    #[test]
    fn read_back_catches_a_corrupted_byte() {
        let dir = std::env::temp_dir().join(format!("loopkit-protect-readback-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let orig: Vec<u8> = (0..300u32 * 2048 - 777).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let src = dir.join("orig.img");
        std::fs::write(&src, &orig).unwrap();
        let roots = |n| Some(Redundancy::Roots(n));
        for req in [
            Request { method: Method::Rs03, target: Target::EccFile, medium: None, redundancy: roots(32) },
            Request { method: Method::Rs01, target: Target::EccFile, medium: None, redundancy: roots(32) },
            Request { method: Method::Rs03, target: Target::Augment, medium: Some(2550), redundancy: None },
            Request { method: Method::Rs02, target: Target::Augment, medium: None, redundancy: roots(40) },
        ] {
            let out = dir.join("out");
            let opts = Options { workers: 2, ..Default::default() };
            let size = run_protect(|r| protect(&src, &req, &out, &opts, r)).unwrap().bytes;
            std::fs::remove_file(&out).unwrap();
            let mut cases = vec![(5, false), (size / 2, false), (size - 1, false)];
            if req.target == Target::Augment {
                // Bytes of the image's copy (written by `copy_image`, checked against the CRCs
                // the encoder logged), through copy_file_range and through pread/pwrite.
                let mid = orig.len() as u64 / 3;
                cases.extend([(mid, false), (mid, true), (5, true), (orig.len() as u64 - 1, true)]);
            }
            for (at, buffered_copy) in cases {
                let bad = Options { corrupt_before_read_back: Some(at), buffered_copy, ..opts.clone() };
                let e = run_protect(|r| protect(&src, &req, &out, &bad, r)).unwrap_err();
                assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "{req:?} byte {at}: {}", e.message());
                assert!(e.message().contains("reads back wrong"), "{req:?} byte {at}: {}", e.message());
                let left: Vec<_> =
                    std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
                assert_eq!(left.len(), 1, "{req:?} byte {at}: left behind: {left:?}");
            }
            if req.target == Target::Augment {
                let img = dir.join("inplace.img");
                // The image's own bytes are not written in place, so not read back either.
                for at in [orig.len() as u64, (orig.len() as u64 + size) / 2, size - 1] {
                    std::fs::write(&img, &orig).unwrap();
                    let bad = Options { corrupt_before_read_back: Some(at), ..opts.clone() };
                    let e = run_protect(|r| protect_in_place(&img, &req, &bad, r)).unwrap_err();
                    assert_eq!(e.kind(), crate::ErrorKind::Corrupt, "in place {req:?} byte {at}: {}", e.message());
                    assert!(std::fs::read(&img).unwrap() == orig, "in place {req:?} byte {at}: not cut back");
                    assert!(!in_place_journal(&img).exists(), "in place {req:?} byte {at}: journal left");
                }
                std::fs::remove_file(&img).unwrap();
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The copy of the image in an augmented output (`copy_image`) is the image, byte for byte,
    /// through `copy_file_range` and through the `pread`/`pwrite` fallback alike, and holes of a
    /// sparse image stay holes (all-zero sectors that are allocated are copied as zeros); both
    /// give the same output.
    #[test]
    fn augmented_copy_is_the_image_and_keeps_holes() {
        let dir = std::env::temp_dir().join(format!("loopkit-protect-copy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("sparse.img");
        let len = 9000u64 * 2048 + 333;
        let f = File::create(&src).unwrap();
        f.set_len(len).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8 | 1).collect();
        for at in [0, 16 * 2048 + 5, 4000 * 2048 + 1, len - 70_000] {
            f.write_all_at(&data[..(len - at).min(data.len() as u64) as usize], at).unwrap();
        }
        f.write_all_at(&[0u8; 3 * 2048], 5000 * 2048).unwrap(); // allocated zeros
        f.sync_all().unwrap();
        drop(f);
        let orig = std::fs::read(&src).unwrap();
        for req in [
            Request { method: Method::Rs03, target: Target::Augment, medium: Some(30_000), redundancy: None },
            Request {
                method: Method::Rs02,
                target: Target::Augment,
                medium: None,
                redundancy: Some(Redundancy::Roots(40)),
            },
        ] {
            let mut outs = Vec::new();
            for buffered_copy in [false, true] {
                let out = dir.join(format!("out-{buffered_copy}"));
                let opts = Options { workers: 2, buffered_copy, ..Default::default() };
                let o = run_protect(|r| protect(&src, &req, &out, &opts, r)).unwrap();
                assert_eq!(o.read_back_bytes, o.bytes, "{req:?} buffered {buffered_copy}");
                let got = std::fs::read(&out).unwrap();
                assert!(got[..orig.len()] == orig[..], "{req:?} buffered {buffered_copy}: the copy differs");
                // The image's part of the output: data where the image has data, holes elsewhere.
                let regions = FileSource::open(&out).unwrap().data_regions(0..len).unwrap();
                let in_data: u64 = regions.iter().map(|r| r.end - r.start).sum();
                assert!(in_data < len / 4, "{req:?} buffered {buffered_copy}: holes filled ({regions:?})");
                std::fs::remove_file(&out).unwrap();
                outs.push(got);
            }
            assert!(outs[0] == outs[1], "{req:?}: copy_file_range and pread/pwrite give different outputs");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn encoder_matches_the_scalar_codec() {
        use crate::sys::GfKernel;
        for kernel in [GfKernel::Gfni512, GfKernel::Gfni, GfKernel::Avx2, GfKernel::Scalar] {
            if !kernel.available() {
                eprintln!("{kernel:?}: not on this CPU");
                continue;
            }
            for nroots in [8usize, 32, 170] {
                let code = Code::new(nroots).unwrap();
                let enc = Encoder::with_kernel(&code, kernel);
                let len = 2 * 1024 + 77;
                let rows: Vec<Vec<u8>> = (0..code.ndata())
                    .map(|j| {
                        (0..len).map(|b| ((j * 131 + b * 7) as u32).wrapping_mul(2654435761).to_le_bytes()[3]).collect()
                    })
                    .collect();
                let mut parity: Vec<Vec<u8>> = (0..nroots).map(|_| vec![0u8; len]).collect();
                enc.encode(&rows, &mut parity, len);
                for b in 0..len {
                    let data: Vec<u8> = rows.iter().map(|r| r[b]).collect();
                    let mut want = vec![0u8; nroots];
                    code.encode(&data, &mut want);
                    let got: Vec<u8> = parity.iter().map(|p| p[b]).collect();
                    assert_eq!(got, want, "{kernel:?}, {nroots} roots, column {b}");
                }
            }
        }
    }
}
