//! dvdisaster error-correction data: RS01 `.ecc` files, RS02 augmented images, RS03 augmented
//! images and `.ecc` files. Finding the header ([`find_in_image`], [`open_ecc_file`]), verifying
//! every sector against it ([`verify`]), writing the original image back out ([`strip`]) and
//! Reed–Solomon repair ([`repair`]). Format reference: `docs/formats/dvdisaster.md`.
//!
//! ```text
//!  rs        GF(2^8) Reed–Solomon codec (no knowledge of sectors)
//!  layout    EccHeader / CrcBlock / marker sectors, RS01/RS02/RS03 geometry
//!  mod       detection: which codec, where the header is, where the data ends
//!  verify    per-sector CRCs, dead-sector markers, MD5s, syndromes → Report
//!  strip     the original image bytes, verified, to a new file
//!  repair    erasure/error decoding into a repaired copy
//! ```

pub mod create;
pub mod layout;
pub mod repair;

pub mod rs;
pub mod strip;
pub mod verify;

use crate::finding::Finding;
use crate::source::{ByteSource, FileSource};
use layout::{
    COOKIE, CrcBlock, ECC_SECTOR_BYTES, EccHeader, HEADER_BYTES, HeaderFault, MFLAG_ECC_FILE, Method, Rs01Layout,
    Rs02Layout, Rs03Layout, SECTOR,
};
use md5::Digest;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many sectors after the header of a damaged RS03 `.ecc` file are searched for a CrcBlock.
const ECC_FILE_CRCBLOCK_SEARCH: u64 = 4096;
/// How many neighbouring sectors are tried when an RS03 CRC-layer probe hits a damaged block.
const RS03_CRCBLOCK_TRIES: u64 = 8;

/// The geometry of the error-correction data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// RS01 `.ecc` file.
    Rs01(Rs01Layout),
    /// RS02 augmented image.
    Rs02(Rs02Layout),
    /// RS03 augmented image or `.ecc` file.
    Rs03(Rs03Layout),
}

/// Where the error-correction data is.
#[derive(Clone)]
pub enum Placement {
    /// Appended to the image (RS02, RS03).
    Augmented,
    /// In a separate file (RS01, RS03).
    EccFile {
        /// Its path.
        path: PathBuf,
        /// The file (or any other source of its bytes), read-only.
        file: Arc<dyn ByteSource>,
    },
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::Augmented => f.write_str("Augmented"),
            Placement::EccFile { path, .. } => f.debug_struct("EccFile").field("path", path).finish_non_exhaustive(),
        }
    }
}

/// Error-correction data found for an image.
#[derive(Debug, Clone)]
pub struct Ecc {
    /// The header in use.
    pub header: EccHeader,
    /// Its geometry.
    pub layout: Layout,
    /// Augmented image or `.ecc` file.
    pub placement: Placement,
    /// Sector (of the image, or of the `.ecc` file) the header was read from.
    pub header_sector: u64,
    /// The header was damaged and rebuilt from the RS03 CrcBlock at this sector.
    pub rebuilt_from: Option<u64>,
    /// Remarks about how the header was found (`ecc.*` info findings).
    pub notes: Vec<crate::finding::Finding>,
}

impl Layout {
    /// The codeword (ECC block) image sector `s` belongs to, or `None` for sectors outside every
    /// codeword (RS02 header copies, sectors past the layout). Sectors of one codeword are its
    /// erasures: up to `nroots` of them can be restored.
    pub fn codeword_of(&self, s: u64) -> Option<u64> {
        match self {
            Layout::Rs01(l) => (s < l.sectors).then(|| s % l.spl),
            Layout::Rs03(l) => {
                let limit = if l.ecc_file { l.ds } else { 255 * l.spl };
                (s < limit).then(|| s % l.spl)
            }
            Layout::Rs02(l) => rs02_codeword(l, s),
        }
    }
}

/// The inverse of `Rs02Layout::ecc_sector` for the ECC part; data, header and CRC sectors
/// (`s < protected`) are layer `s / spl`, sector `s % spl`.
pub(crate) fn rs02_codeword(l: &Rs02Layout, s: u64) -> Option<u64> {
    if s < l.protected {
        return Some(s % l.spl);
    }
    let base = l.first_repeat - l.protected;
    let idx = if s < l.first_repeat {
        s - l.protected
    } else {
        let q = s - l.first_repeat;
        let r = q % l.modulo;
        if r < 2 {
            return None; // a header copy
        }
        base + (q / l.modulo) * (l.modulo - 2) + (r - 2)
    };
    (idx < l.rs_sectors).then(|| idx % l.spl)
}

impl Ecc {
    /// The codec.
    pub fn method(&self) -> Method {
        self.header.method
    }

    /// Bytes of the original image (where the data ends and the ECC begins).
    pub fn data_bytes(&self) -> u64 {
        self.header.image_bytes()
    }

    /// Sectors (2048 bytes) of the original image.
    pub fn data_sectors(&self) -> u64 {
        self.header.sectors
    }

    /// Whether the ECC is appended to the image.
    pub fn is_augmented(&self) -> bool {
        matches!(self.placement, Placement::Augmented)
    }

    /// Parity symbols per codeword.
    pub fn nroots(&self) -> usize {
        match &self.layout {
            Layout::Rs01(l) => l.nroots,
            Layout::Rs02(l) => l.nroots,
            Layout::Rs03(l) => l.nroots,
        }
    }

    /// A one-line description: `RS02, 32 roots (14.3% redundancy), augmented image`.
    pub fn describe(&self) -> String {
        let n = self.nroots();
        let where_ = match &self.placement {
            Placement::Augmented => "augmented image".to_string(),
            Placement::EccFile { path, .. } => format!("error correction file {}", path.display()),
        };
        format!("{}, {n} roots ({:.1}% redundancy), {where_}", self.method(), n as f64 * 100.0 / (255 - n) as f64)
    }
}

fn header_error(what: &str, f: &HeaderFault) -> crate::Error {
    crate::Error::corrupt(format!("{what}: {f}"))
}

/// Read up to `len` bytes at `off`; short at the end of the source.
fn read_at_most(src: &dyn ByteSource, off: u64, len: usize) -> crate::Result<Vec<u8>> {
    crate::source::read_vec(src, off, len).map_err(|e| crate::Error::io(format!("reading at byte {off}"), e))
}

/// What a 4096-byte read at a candidate header position holds.
enum Probe {
    /// No header cookie for the method looked for.
    NoCookie,
    /// A cookie, but unusable (short read, dead sector marker, bad selfCRC, stale fingerprint).
    Damaged,
    /// A valid header.
    Found(Box<EccHeader>),
}

/// Reads candidate headers (each position once) and checks them.
struct Prober<'a> {
    src: &'a dyn ByteSource,
    nsec: u64,
    cache: HashMap<(u64, Method), bool>,
    fingerprints: HashMap<u64, Option<[u8; 16]>>,
    /// A valid header whose fingerprint did not match (used if nothing better turns up).
    stale: Option<(u64, Box<EccHeader>)>,
    /// Headers with the right cookie that fail their checksum or field checks.
    unusable: Vec<(u64, HeaderFault, Option<Box<EccHeader>>)>,
}

impl<'a> Prober<'a> {
    fn new(src: &'a dyn ByteSource) -> Self {
        Prober {
            src,
            nsec: src.size_bytes() / ECC_SECTOR_BYTES,
            cache: HashMap::new(),
            fingerprints: HashMap::new(),
            stale: None,
            unusable: Vec::new(),
        }
    }

    /// MD5 of sector `n` (None when absent or a dead sector).
    fn fingerprint(&mut self, n: u64) -> crate::Result<Option<[u8; 16]>> {
        if let Some(v) = self.fingerprints.get(&n) {
            return Ok(*v);
        }
        let buf = read_at_most(self.src, n * ECC_SECTOR_BYTES, SECTOR)?;
        let v = if buf.len() < SECTOR || layout::dead_sector(&buf, n, None).is_some() {
            None
        } else {
            Some(md5::Md5::digest(&buf).into())
        };
        self.fingerprints.insert(n, v);
        Ok(v)
    }

    /// Whether `h` matches the image's fingerprint sector (true when it cannot be checked).
    fn fingerprint_matches(&mut self, h: &EccHeader) -> crate::Result<bool> {
        if h.medium_fp == [0u8; 16] {
            return Ok(true);
        }
        Ok(self.fingerprint(h.fp_sector.max(0) as u64)?.is_none_or(|fp| fp == h.medium_fp))
    }

    fn note_unusable(&mut self, p: u64, f: HeaderFault, h: Option<Box<EccHeader>>) {
        if !self.unusable.iter().any(|(q, ..)| *q == p) {
            self.unusable.push((p, f, h));
        }
    }

    /// `try_sector` (§6.6): the augmented-image header of `method` at sector `p`.
    fn probe(&mut self, p: u64, method: Method) -> crate::Result<Probe> {
        if p >= self.nsec {
            return Ok(Probe::Damaged);
        }
        if self.cache.get(&(p, method)) == Some(&false) {
            return Ok(Probe::Damaged);
        }
        let buf = read_at_most(self.src, p * ECC_SECTOR_BYTES, HEADER_BYTES)?;
        if buf.len() < HEADER_BYTES
            || layout::dead_sector(&buf[..SECTOR], p, None).is_some()
            || layout::dead_sector(&buf[SECTOR..], p + 1, None).is_some()
        {
            self.cache.insert((p, method), false);
            return Ok(Probe::Damaged);
        }
        if &buf[..12] != COOKIE || &buf[12..16] != method.name().as_bytes() {
            return Ok(Probe::NoCookie);
        }
        self.cache.insert((p, method), false);
        let checked = EccHeader::parse(&buf).and_then(|h| h.validate().map(|()| h));
        let h = match checked {
            // An RS03 .ecc file stored inside the image is not this image's ECC.
            Ok(h) if method == Method::Rs03 && h.method_flags[0] & MFLAG_ECC_FILE != 0 => return Ok(Probe::Damaged),
            Ok(h) => h,
            Err(f) => {
                self.note_unusable(p, f, EccHeader::parse_unchecked(&buf).ok().map(Box::new));
                return Ok(Probe::Damaged);
            }
        };
        if !self.fingerprint_matches(&h)? {
            if self.stale.is_none() {
                self.stale = Some((p, Box::new(h)));
            }
            return Ok(Probe::Damaged);
        }
        self.cache.remove(&(p, method));
        Ok(Probe::Found(Box::new(h)))
    }
}

/// The ISO 9660 volume size in sectors, if sector 16 holds a primary volume descriptor.
fn iso_volume_sectors(src: &dyn ByteSource) -> crate::Result<Option<u64>> {
    let pvd = read_at_most(src, 16 * ECC_SECTOR_BYTES, SECTOR)?;
    Ok(crate::fs::iso9660::vd::primary(&pvd, crate::fs::Strictness::Strict).map(|p| u64::from(p.volume_blocks)))
}

/// Look for RS02 or RS03 error-correction data appended to the image in `src`.
/// `Ok(None)`: the image carries none (the common case for plain and encrypted images).
///
/// Search order, after dvdisaster (§6.6, §7.6): the ISO volume size (header at `vol` or
/// `vol − 150`); the RS02 header-copy positions, largest modulo first; RS03 CRC layers for the
/// layer sizes the file size suggests. A header whose fingerprint disagrees with sector 16 is
/// skipped in favour of a matching one.
///
/// # Errors
/// `Io` on read errors; `Corrupt` when a header is found but its layout is impossible.
pub fn find_in_image(src: &dyn ByteSource) -> crate::Result<Option<Ecc>> {
    scan_image(src).map(|s| s.ecc)
}

/// The code of a dvdisaster header found but not usable (damaged, implausible).
pub const UNUSABLE_HEADER: &str = "ecc.unusable-header";

/// What [`scan_image`] found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    /// Usable error-correction data.
    pub ecc: Option<Ecc>,
    /// Headers with the dvdisaster cookie that were not usable, when nothing usable was found:
    /// `ecc.unusable-header` warnings whose message says which and why (`"RS03 header at sector
    /// 512: …"`).
    pub unusable: Vec<Finding>,
}

/// [`find_in_image`], also telling which damaged or implausible headers were passed over.
///
/// # Errors
/// As [`find_in_image`].
pub fn scan_image(src: &dyn ByteSource) -> crate::Result<Scan> {
    let mut pr = Prober::new(src);
    let ecc = find_with(src, &mut pr)?;
    let unusable = if ecc.is_some() {
        Vec::new()
    } else {
        pr.unusable
            .iter()
            .map(|(p, f, h)| {
                let m = h.as_ref().map_or("dvdisaster", |h| h.method.name());
                Finding::warning(UNUSABLE_HEADER, format!("{m} header at sector {p}: {f}"))
            })
            .collect()
    };
    Ok(Scan { ecc, unusable })
}

fn find_with(src: &dyn ByteSource, pr: &mut Prober<'_>) -> crate::Result<Option<Ecc>> {
    if pr.nsec < 2 {
        return Ok(None);
    }
    // 1. ISO shortcut.
    if let Some(vol) = iso_volume_sectors(src)? {
        for p in [Some(vol), vol.checked_sub(150)].into_iter().flatten() {
            for m in [Method::Rs02, Method::Rs03] {
                if let Probe::Found(h) = pr.probe(p, m)?
                    && let Some(ecc) = accept_or_note(src, pr, *h, p)?
                {
                    return Ok(Some(ecc));
                }
            }
        }
    }
    // 2. RS02 header copies: for each modulo, walk down from the end; a sector without the
    //    cookie ends that modulo, a damaged copy is skipped.
    let mut modulo = 1u64 << 62;
    while modulo >= 32 {
        if modulo <= pr.nsec {
            let mut pos = pr.nsec & !(modulo - 1);
            while pos > 0 {
                match pr.probe(pos, Method::Rs02)? {
                    Probe::NoCookie => break,
                    Probe::Damaged => {}
                    Probe::Found(h) => {
                        if let Some(ecc) = accept_or_note(src, pr, *h, pos)? {
                            return Ok(Some(ecc));
                        }
                    }
                }
                pos -= modulo;
            }
        }
        modulo /= 2;
    }
    // 3. RS03: CRC layers for plausible layer sizes.
    if let Some(ecc) = find_rs03_by_crc_layer(src, pr)? {
        return Ok(Some(ecc));
    }
    // 4. A valid header with a mismatching fingerprint (sector 16 itself may be damaged), if
    //    the layout it describes ends where the file ends (not an image stored inside this one).
    if let Some((p, h)) = pr.stale.take()
        && let Ok(Some(mut ecc)) = accept_augmented(src, *h, p)
        && expected_sectors(&ecc.layout).is_some_and(|t| t + 2 >= pr.nsec)
    {
        ecc.notes.push(Finding::info(
            "ecc.fingerprint",
            format!(
                "the header's medium fingerprint does not match sector {} of the image (damaged sector, or a \
                 stale header)",
                ecc.header.fp_sector
            ),
        ));
        return Ok(Some(ecc));
    }
    // 5. Only damaged headers, at positions their own layout predicts: say so rather than treat
    //    data + ECC as one image.
    let damaged: Vec<String> = pr
        .unusable
        .iter()
        .filter(|(p, _, h)| {
            h.as_ref().is_some_and(|h| {
                h.method == Method::Rs02
                    && h.validate().is_ok()
                    && Rs02Layout::candidates(h)
                        .is_ok_and(|c| c.iter().any(|l| l.total + 2 >= pr.nsec && l.header_copies().any(|q| q == *p)))
            })
        })
        .map(|(p, f, _)| format!("sector {p}: {f}"))
        .collect();
    if !damaged.is_empty() {
        return Err(crate::Error::corrupt(format!(
            "the image carries dvdisaster RS02 error correction data, but no header copy is intact ({}); loopkit \
             cannot tell safely where the data ends",
            damaged.join("; ")
        )));
    }
    Ok(None)
}

/// Sectors an augmented image should have (None for `.ecc`-file layouts).
fn expected_sectors(l: &Layout) -> Option<u64> {
    match l {
        Layout::Rs02(l) => Some(l.total),
        Layout::Rs03(l) if !l.ecc_file => Some(l.total_sectors()),
        _ => None,
    }
}

/// [`accept_augmented`], remembering a header that does not fit as unusable.
fn accept_or_note(src: &dyn ByteSource, pr: &mut Prober<'_>, h: EccHeader, p: u64) -> crate::Result<Option<Ecc>> {
    let keep = Box::new(h.clone());
    let r = accept_augmented(src, h, p)?;
    if r.is_none() {
        let why = format!(
            "its layout ({} data sectors, {} roots) does not place a header at this sector",
            keep.sectors,
            keep.nroots()
        );
        pr.cache.insert((p, keep.method), false);
        pr.note_unusable(p, HeaderFault::Invalid(why), Some(keep));
    }
    Ok(r)
}

/// Check that a header found at sector `p` really describes this image: `p` must be one of
/// its header positions. Returns the Ecc (with layout) or `None` for a header from elsewhere
/// (for example an image stored inside a file system).
fn accept_augmented(src: &dyn ByteSource, h: EccHeader, p: u64) -> crate::Result<Option<Ecc>> {
    let file_sectors = src.size_bytes().div_ceil(ECC_SECTOR_BYTES);
    match h.method {
        Method::Rs02 => {
            let cands = Rs02Layout::candidates(&h).map_err(|f| header_error("RS02 header", &f))?;
            let at_header = |l: &Rs02Layout| l.header_copies().any(|q| q == p);
            let by_size = || {
                // Pre-0.79.5 header: the variant whose copies are here, preferring the file size.
                cands
                    .iter()
                    .find(|l| l.total == file_sectors && at_header(l))
                    .or_else(|| cands.iter().find(|l| at_header(l)))
            };
            let recorded = cands.iter().find(|l| l.ecc_sectors == h.sectors_added_by_ecc && at_header(l));
            let chosen = if h.sectors_added_by_ecc == 0 { by_size() } else { recorded.or_else(by_size) };
            let Some(l) = chosen.copied() else {
                return Ok(None);
            };
            let mut notes = Vec::new();
            if l.modulo != cands[0].modulo {
                notes.push(Finding::info(
                    "ecc.rs02-layout",
                    format!(
                        "RS02 header modulo {} (layout variant of dvdisaster's recomputed {})",
                        l.modulo, cands[0].modulo
                    ),
                ));
            }
            if h.sectors_added_by_ecc == 0 {
                notes.push(Finding::info(
                    "ecc.rs02-layout",
                    "pre-0.79.5 RS02 header (no recorded ECC size); layout taken from the header copies",
                ));
            } else if l.ecc_sectors != h.sectors_added_by_ecc {
                notes.push(Finding::info(
                    "ecc.rs02-layout",
                    format!(
                        "the header records {} ECC sectors, which matches no RS02 layout; layout taken from the \
                         header copies instead",
                        h.sectors_added_by_ecc
                    ),
                ));
            }
            // Prefer the primary header at ds when it is intact and identical.
            let mut p = p;
            if p != l.ds {
                let primary = read_at_most(src, l.ds * ECC_SECTOR_BYTES, HEADER_BYTES)?;
                match EccHeader::parse(&primary) {
                    Ok(ph) if ph.raw == h.raw => p = l.ds,
                    _ => notes.push(Finding::info(
                        "ecc.header-copy",
                        format!("the first header (sector {}) is damaged; using the copy at sector {p}", l.ds),
                    )),
                }
            }
            Ok(Some(Ecc {
                header: h,
                layout: Layout::Rs02(l),
                placement: Placement::Augmented,
                header_sector: p,
                rebuilt_from: None,
                notes,
            }))
        }
        Method::Rs03 => {
            let l = Rs03Layout::new(&h).map_err(|f| header_error("RS03 header", &f))?;
            if p != h.sectors {
                return Ok(None);
            }
            let crc_layer = (l.ndata as u64 - 1) * l.spl;
            if crc_layer >= file_sectors {
                return Err(crate::Error::corrupt(format!(
                    "RS03 header at sector {p}: the CRC layer would start at sector {crc_layer}, but the image has only \
                     {file_sectors} sectors (truncated, or a corrupted header)"
                )));
            }
            Ok(Some(Ecc {
                header: h,
                layout: Layout::Rs03(l),
                placement: Placement::Augmented,
                header_sector: p,
                rebuilt_from: None,
                notes: Vec::new(),
            }))
        }
        Method::Rs01 => Ok(None),
    }
}

/// §7.6, generalised: find a sector of the RS03 CRC layer. The layer is `spl` consecutive
/// sectors starting at `(ndata−1)·spl ≥ 84·spl`, and `spl ≥ nsec/255` (equal when the image is
/// intact, larger when it is truncated). Probing every `floor(nsec/255)` sectors from
/// `84·floor(nsec/255)` on therefore lands in the layer whatever `spl` is — about 171 reads,
/// where dvdisaster only knows the standard medium sizes (or `--debug -n`).
fn find_rs03_by_crc_layer(src: &dyn ByteSource, pr: &mut Prober<'_>) -> crate::Result<Option<Ecc>> {
    let nsec = pr.nsec;
    let stride = (nsec / 255).max(1);
    for q in layout::RS03_MIN_DATA_LAYERS..=255 {
        let base = q * stride;
        if base >= nsec {
            break;
        }
        // A damaged block leaves the neighbours (also CRC blocks) to try.
        for s in base..(base + RS03_CRCBLOCK_TRIES).min(nsec) {
            let buf = read_at_most(src, s * ECC_SECTOR_BYTES, SECTOR)?;
            if buf.len() < SECTOR || layout::dead_sector(&buf, s, None).is_some() {
                continue;
            }
            let Some(cb) = CrcBlock::parse(&buf) else {
                if &buf[layout::crcblk::COOKIE..layout::crcblk::COOKIE + 12] == COOKIE {
                    continue;
                }
                break;
            };
            let spl = cb.sectors_per_layer;
            let layer = u64::try_from(cb.data_bytes).unwrap_or(0).saturating_sub(1);
            let first = layer.saturating_mul(spl);
            let here = first <= s && s < first.saturating_add(spl);
            if cb.method_flags[0] & MFLAG_ECC_FILE != 0 || spl == 0 || !here {
                break;
            }
            return rs03_from_crc_block(src, pr, &cb, s).map(Some);
        }
    }
    Ok(None)
}

/// Use the real header at `cb.data_sectors` if it is intact, else the one rebuilt from `cb`.
fn rs03_from_crc_block(src: &dyn ByteSource, pr: &mut Prober<'_>, cb: &CrcBlock, at: u64) -> crate::Result<Ecc> {
    let ds = cb.data_sectors;
    if let Probe::Found(h) = pr.probe(ds, Method::Rs03)?
        && h.sectors == ds
        && h.sectors_per_layer == cb.sectors_per_layer
        && let Some(ecc) = accept_augmented(src, *h, ds)?
    {
        return Ok(ecc);
    }
    let h = cb.to_header();
    h.validate().map_err(|f| header_error(&format!("RS03 CrcBlock at sector {at}"), &f))?;
    let l = Rs03Layout::new(&h).map_err(|f| header_error(&format!("RS03 CrcBlock at sector {at}"), &f))?;
    Ok(Ecc {
        header: h,
        layout: Layout::Rs03(l),
        placement: Placement::Augmented,
        header_sector: ds,
        rebuilt_from: Some(at),
        notes: vec![Finding::info(
            "ecc.header-rebuilt",
            format!(
                "the RS03 header at sector {ds} is damaged or missing; layout rebuilt from the CRC block at sector {at}"
            ),
        )],
    })
}

/// Open an RS01 or RS03 error-correction file.
///
/// # Errors
/// `Io` when it cannot be read; `NotRecognized` when it is not a dvdisaster `.ecc` file;
/// `Corrupt` when its header is damaged beyond use (RS03 headers are rebuilt from a CrcBlock
/// when possible); `InvalidInput` when it is an augmented image's header (give the image
/// itself instead).
pub fn open_ecc_file(path: &Path) -> crate::Result<Ecc> {
    open_ecc_source(Arc::new(FileSource::open(path)?), path)
}

/// [`open_ecc_file`] over any source of the `.ecc` file's bytes (in memory, an open descriptor);
/// `path` names it in messages and in the report.
///
/// # Errors
/// As [`open_ecc_file`].
pub fn open_ecc_source(file: Arc<dyn ByteSource>, path: &Path) -> crate::Result<Ecc> {
    let src: &dyn ByteSource = &*file;
    let buf = read_at_most(src, 0, HEADER_BYTES)?;
    let name = path.display();
    let parsed = EccHeader::parse_unchecked(&buf);
    let (header, rebuilt_from, mut notes) = match parsed {
        Ok(h) if h.method == Method::Rs01 => (h, None, Vec::new()),
        Ok(h) if h.method == Method::Rs02 => {
            return Err(crate::Error::invalid(format!(
                "{name} holds an RS02 header: RS02 data is always appended to the image, not kept in a separate \
                 file; verify the augmented image itself"
            )));
        }
        Ok(h) => match EccHeader::parse(&h.raw[..]) {
            Ok(h) => (h, None, Vec::new()),
            Err(f) => {
                let (cb, at) = find_crc_block_in_ecc_file(src)?
                    .ok_or_else(|| header_error(&format!("{name}: RS03 header"), &f))?;
                let note = Finding::info(
                    "ecc.header-rebuilt",
                    format!("the header of {name} is damaged ({f}); rebuilt from the CRC block at file sector {at}"),
                );
                (cb.to_header(), Some(at), vec![note])
            }
        },
        Err(HeaderFault::NoCookie) => match find_crc_block_in_ecc_file(src)? {
            Some((cb, at)) => {
                let note = Finding::info(
                    "ecc.header-rebuilt",
                    format!("{name} has no readable header; rebuilt from the CRC block at file sector {at}"),
                );
                (cb.to_header(), Some(at), vec![note])
            }
            None => {
                return Err(crate::Error::new(
                    crate::ErrorKind::NotRecognized,
                    format!("{name} is not a dvdisaster error correction file (no *dvdisaster* header)"),
                ));
            }
        },
        Err(f) => return Err(header_error(&format!("{name}"), &f)),
    };
    header.validate().map_err(|f| header_error(&format!("{name}: {} header", header.method), &f))?;
    let layout = match header.method {
        Method::Rs01 => Layout::Rs01(Rs01Layout::new(&header)),
        Method::Rs03 => {
            if header.method_flags[0] & MFLAG_ECC_FILE == 0 {
                return Err(crate::Error::invalid(format!(
                    "{name} holds the header of an RS03-augmented image, not of an .ecc file; verify that image itself"
                )));
            }
            Layout::Rs03(Rs03Layout::new(&header).map_err(|f| header_error(&format!("{name}: RS03 header"), &f))?)
        }
        Method::Rs02 => unreachable!("RS02 refused above"),
    };
    // The sizes the header claims must fit the file (bounds all later work by the file size).
    let size = src.size_bytes();
    let need = match &layout {
        Layout::Rs01(l) => l.parity_offset(),
        Layout::Rs03(l) => (2 + l.spl) * ECC_SECTOR_BYTES,
        Layout::Rs02(_) => 0,
    };
    if size < need {
        return Err(crate::Error::corrupt(format!(
            "{name} has {size} bytes, but its {} header ({} image sectors) needs at least {need} \
             (truncated, or a corrupted header)",
            header.method, header.sectors
        )));
    }
    if header.method == Method::Rs01 && header.creator_version < 6600 && header.in_last != SECTOR as u32 {
        notes.push(Finding::info("ecc.rs01-legacy", "RS01 file from before 0.66 with a partial last sector"));
    }
    Ok(Ecc {
        header,
        layout,
        placement: Placement::EccFile { path: path.to_path_buf(), file },
        header_sector: 0,
        rebuilt_from,
        notes,
    })
}

/// `RS03RecognizeFile`'s fallback: the first valid `.ecc`-file CrcBlock after the header.
fn find_crc_block_in_ecc_file(src: &dyn ByteSource) -> crate::Result<Option<(CrcBlock, u64)>> {
    let nsec = src.size_bytes() / ECC_SECTOR_BYTES;
    for s in 2..nsec.min(2 + ECC_FILE_CRCBLOCK_SEARCH) {
        let buf = read_at_most(src, s * ECC_SECTOR_BYTES, SECTOR)?;
        if let Some(cb) = CrcBlock::parse(&buf)
            && cb.method_flags[0] & MFLAG_ECC_FILE != 0
        {
            return Ok(Some((cb, s)));
        }
    }
    Ok(None)
}

/// The error-correction file dvdisaster would pair with `image`: `NAME.ecc` beside it (the
/// image's extension replaced), else `NAME.EXT.ecc`. `None` when neither exists.
pub fn ecc_file_beside(image: &Path) -> Option<PathBuf> {
    let replaced = image.with_extension("ecc");
    let appended = {
        let mut s = image.as_os_str().to_owned();
        s.push(".ecc");
        PathBuf::from(s)
    };
    [replaced, appended].into_iter().find(|p| p != image && p.is_file())
}

/// Everything `image::open` needs: the ECC given with `--ecc`, else the one appended to the
/// image, else an `.ecc` file beside it.
///
/// # Errors
/// As [`open_ecc_file`] and [`find_in_image`]. A `NAME.ecc` found automatically that is not a
/// usable ecc file is an error too (it is named in the message), never silently skipped.
pub fn find_for_image(image_path: &Path, image: &dyn ByteSource, ecc_file: Option<&Path>) -> crate::Result<Scan> {
    if let Some(p) = ecc_file {
        return Ok(Scan { ecc: Some(open_ecc_file(p)?), unusable: Vec::new() });
    }
    let scan = scan_image(image)?;
    if scan.ecc.is_some() {
        return Ok(scan);
    }
    match ecc_file_beside(image_path) {
        Some(p) => {
            let ecc = open_ecc_file(&p).map_err(|e| e.context(format!("{} (found beside the image)", p.display())))?;
            Ok(Scan { ecc: Some(ecc), unusable: scan.unusable })
        }
        None => Ok(scan),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemSource;

    #[test]
    fn plain_data_has_no_ecc() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
        assert!(find_in_image(&MemSource::new(data)).unwrap().is_none());
        assert!(find_in_image(&MemSource::new(vec![0u8; 100])).unwrap().is_none());
        assert!(find_in_image(&MemSource::new(Vec::new())).unwrap().is_none());
    }
}
