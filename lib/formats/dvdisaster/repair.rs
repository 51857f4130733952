//! `repair`: Reed–Solomon erasure/error decoding of a damaged image into a new file, producing
//! the same bytes as `dvdisaster -f` on the same damage. dvdisaster repairs in place; loopkit
//! copies the image (and an RS03 `.ecc` file) to temporary files, runs dvdisaster's repair
//! procedure on the copies — same block order, same erasure rules (dead-sector markers and
//! CRC mismatches), same decoder, same sector writes — and renames them into place. The source
//! files are only read.
//!
//! Per codec (following `rs01-fix.c`, `rs02-fix.c`, `rs03-fix.c` of dvdisaster 0.79.5):
//! * RS02: a truncated image is extended with dead-sector markers; all header copies are
//!   rewritten from the header in use; blocks are processed from the one whose CRCs the header
//!   carries (`firstCrcLayerIndex`), so each repaired block restores the CRCs of the next.
//! * RS03: blocks in order, in batches of 64 (dvdisaster's default 32 MiB cache): the first block
//!   of a batch takes its CRCs from the previous batch's last CRC block as read before repair.
//! * RS01: only blocks with erasures are decoded, only the erased image sectors are written.
//!
//! Whatever dvdisaster leaves alone (blocks with more erasures than roots, blocks with a
//! "decoder problem") is left alone here too and reported as unrepaired.

use super::layout::{
    self, ECC_SECTOR_BYTES, FINGERPRINT_SECTOR, HEADER_BYTES, Rs01Layout, Rs02Layout, Rs03Layout, SECTOR,
};
use super::rs::{Code, DecodeError, N};
use super::{Ecc, Layout, Placement};
use crate::output::{TempFile, check_output};
use crate::progress::{Interrupt, Run};
use md5::{Digest, Md5};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// dvdisaster's default cache (`--cache-size 32`) holds 2·32 ECC blocks per batch.
const CACHE_BLOCKS: u64 = 64;

/// Options for [`repair`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Replace existing output files.
    pub force: bool,
    /// Remove more than 2 surplus sectors at the end of the image (dvdisaster `--truncate`).
    pub truncate: bool,
    /// RS03 `.ecc` files: where to write the repaired `.ecc` file (None: repairs to it are
    /// computed and counted but not kept).
    pub ecc_out: Option<PathBuf>,
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The repaired image.
    pub path: PathBuf,
    /// The repaired `.ecc` file, if one was written.
    pub ecc_path: Option<PathBuf>,
    /// Image sectors rewritten with corrected content.
    pub repaired: Vec<u64>,
    /// `.ecc`-file sectors rewritten with corrected content (RS03 `.ecc`).
    pub repaired_ecc_file: Vec<u64>,
    /// Sectors in ECC blocks that could not be corrected (image numbering; RS03 `.ecc`: CRC and
    /// ECC layers in `.ecc`-file numbering, listed in `unrepaired_ecc_file`).
    pub unrepaired: Vec<u64>,
    /// `.ecc`-file sectors that could not be corrected.
    pub unrepaired_ecc_file: Vec<u64>,
    /// Sectors added as dead-sector markers to a truncated image before repair.
    pub expanded_sectors: u64,
    /// Bytes cut from the end of an over-long image.
    pub truncated_bytes: u64,
}

/// A read-write working copy, read and written at offsets like dvdisaster's image file.
struct Work {
    tmp: TempFile,
    size: u64,
}

impl Work {
    /// Copy `src` (all of it) into a temporary file beside `target`.
    fn copy_of(src: &Path, target: &Path, run: &mut Run<'_>) -> crate::Result<Work> {
        let tmp = TempFile::beside(target)?;
        let mut input = File::open(src).map_err(|e| crate::Error::io(format!("cannot open {}", src.display()), e))?;
        let size = input.metadata().map_err(|e| crate::Error::io(format!("reading {}", src.display()), e))?.len();
        run.progress.start("copying", Some(size));
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        loop {
            run.interrupt.check()?;
            let n = std::io::Read::read(&mut input, &mut buf)
                .map_err(|e| crate::Error::io(format!("reading {}", src.display()), e))?;
            if n == 0 {
                break;
            }
            // All-zero chunks stay holes.
            if buf[..n].iter().any(|&b| b != 0) {
                tmp.file
                    .write_all_at(&buf[..n], off)
                    .map_err(|e| crate::Error::io(format!("writing {}", tmp.path.display()), e))?;
            }
            off += n as u64;
            run.progress.advance(n as u64);
        }
        tmp.file.set_len(off).map_err(|e| crate::Error::io(format!("writing {}", tmp.path.display()), e))?;
        run.progress.finish();
        Ok(Work { tmp, size: off })
    }

    fn sectors(&self) -> u64 {
        self.size.div_ceil(ECC_SECTOR_BYTES)
    }

    /// Read into `buf` at `off`; bytes past the end read as zeros.
    fn read(&self, off: u64, buf: &mut [u8]) -> crate::Result<()> {
        let have = self.size.saturating_sub(off).min(buf.len() as u64) as usize;
        self.tmp
            .file
            .read_exact_at(&mut buf[..have], off)
            .map_err(|e| crate::Error::io(format!("reading {} at byte {off}", self.tmp.path.display()), e))?;
        buf[have..].fill(0);
        Ok(())
    }

    fn write(&mut self, off: u64, data: &[u8]) -> crate::Result<()> {
        self.tmp
            .file
            .write_all_at(data, off)
            .map_err(|e| crate::Error::io(format!("writing {} at byte {off}", self.tmp.path.display()), e))?;
        self.size = self.size.max(off + data.len() as u64);
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> crate::Result<()> {
        self.tmp
            .file
            .set_len(len)
            .map_err(|e| crate::Error::io(format!("truncating {}", self.tmp.path.display()), e))?;
        self.size = len;
        Ok(())
    }
}

/// How a sector of an ECC block entered the erasure list (dvdisaster's `erasure_map`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Clean,
    /// Dead-sector marker.
    Dead,
    /// CRC mismatch.
    Crc,
    /// Found by the decoder.
    Found,
}

/// One ECC block in memory: 255 sectors, their marks, the erasure list.
struct Block {
    data: Vec<u8>,
    marks: [Mark; N],
    erasures: Vec<usize>,
}

impl Block {
    fn new() -> Block {
        Block { data: vec![0u8; N * SECTOR], marks: [Mark::Clean; N], erasures: Vec::new() }
    }
    fn sector(&self, j: usize) -> &[u8] {
        &self.data[j * SECTOR..(j + 1) * SECTOR]
    }
    fn sector_mut(&mut self, j: usize) -> &mut [u8] {
        &mut self.data[j * SECTOR..(j + 1) * SECTOR]
    }
    fn reset(&mut self) {
        self.marks = [Mark::Clean; N];
        self.erasures.clear();
    }
    fn erase(&mut self, j: usize, m: Mark) {
        self.marks[j] = m;
        self.erasures.push(j);
    }

    /// Decode all 2048 codewords. `only_below`: apply corrections only at positions below it
    /// (RS01 corrects only data). Returns false on a "decoder problem" (dvdisaster then stops
    /// working on the block; RS01 still writes it, RS02/RS03 do not).
    fn decode(&mut self, code: &Code, only_below: usize) -> bool {
        let mut cw = [0u8; N];
        for b in 0..SECTOR {
            for (j, c) in cw.iter_mut().enumerate() {
                *c = self.data[j * SECTOR + b];
            }
            match code.corrections(&cw, &self.erasures) {
                Ok(fixes) => {
                    for (loc, v) in fixes {
                        if loc >= only_below {
                            continue;
                        }
                        if self.marks[loc] == Mark::Clean {
                            self.marks[loc] = Mark::Found;
                        }
                        self.data[loc * SECTOR + b] ^= v;
                    }
                }
                Err(DecodeError::Uncorrectable) | Err(DecodeError::TooManyErasures) => return false,
            }
        }
        true
    }
}

fn is_dead(buf: &[u8], n: u64) -> bool {
    layout::dead_sector(buf, n, None).is_some()
}

fn le_words(buf: &[u8]) -> Vec<u32> {
    buf.chunks_exact(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect()
}

/// Repair the image at `image_path` (with `ecc`) into `out`.
///
/// # Errors
/// `Unsafe` for outputs that exist (without `force`) or are a source; `InvalidInput` when the
/// image is longer than recorded by more than 2 sectors (without `truncate`) or, for RS01, when
/// the fingerprints say image and `.ecc` file do not belong together; `Io`; `Interrupted`.
/// Damage that cannot be repaired is reported in the [`Outcome`], not as an error.
pub fn repair(ecc: &Ecc, image_path: &Path, out: &Path, opts: &Options, run: &mut Run<'_>) -> crate::Result<Outcome> {
    let ecc_src = match &ecc.placement {
        Placement::EccFile { path, .. } => Some(path.clone()),
        Placement::Augmented => None,
    };
    let mut sources: Vec<&Path> = vec![image_path];
    if let Some(p) = &ecc_src {
        sources.push(p);
    }
    check_output(out, &sources, opts.force)?;
    if let Some(eo) = &opts.ecc_out {
        check_output(eo, &sources, opts.force)?;
        if eo == out {
            return Err(crate::Error::invalid("the repaired image and the repaired .ecc file cannot be the same file"));
        }
    }
    let mut img = Work::copy_of(image_path, out, run)?;
    let mut outcome = Outcome { path: out.to_path_buf(), ..Outcome::default() };
    run.progress.start("repairing", None);
    let mut ecc_work = None;
    let fix = Fix { ecc, opts, o: &mut outcome, interrupt: run.interrupt };
    match &ecc.layout {
        Layout::Rs02(l) => rs02(fix, l, &mut img)?,
        Layout::Rs03(l) => {
            if l.ecc_file {
                let (src, target) = match (&ecc_src, &opts.ecc_out) {
                    (Some(s), Some(t)) => (s.clone(), t.clone()),
                    (Some(s), None) => (s.clone(), out.with_extension("ecc.discarded")),
                    (None, _) => return Err(crate::Error::invalid("BUG: RS03 .ecc layout without an .ecc file")),
                };
                let mut w = Work::copy_of(&src, &target, run)?;
                rs03(fix, l, &mut img, Some(&mut w))?;
                ecc_work = Some(w);
            } else {
                rs03(fix, l, &mut img, None)?;
            }
        }
        Layout::Rs01(l) => {
            let Some(src) = &ecc_src else {
                return Err(crate::Error::invalid("BUG: RS01 without an .ecc file"));
            };
            let ecc_file =
                File::open(src).map_err(|e| crate::Error::io(format!("cannot open {}", src.display()), e))?;
            check_rs01_size(l, &ecc_file, src)?;
            rs01(fix, l, &mut img, &ecc_file)?;
        }
    }
    run.progress.finish();
    img.tmp.persist(out, opts.force)?;
    if let (Some(w), Some(target)) = (ecc_work, &opts.ecc_out) {
        w.tmp.persist(target, opts.force)?;
        outcome.ecc_path = Some(target.clone());
    }
    for v in [
        &mut outcome.repaired,
        &mut outcome.repaired_ecc_file,
        &mut outcome.unrepaired,
        &mut outcome.unrepaired_ecc_file,
    ] {
        v.sort_unstable();
        v.dedup();
    }
    Ok(outcome)
}

/// dvdisaster's handling of surplus sectors: up to 2 are a TAO/DAO artefact and removed; more
/// need `--truncate`.
fn cut_surplus(
    img: &mut Work,
    expected_sectors: u64,
    keep_bytes: u64,
    opts: &Options,
    o: &mut Outcome,
) -> crate::Result<()> {
    let have = img.sectors();
    if have <= expected_sectors {
        return Ok(());
    }
    let diff = have - expected_sectors;
    if diff > 2 && !opts.truncate {
        return Err(crate::Error::invalid(format!(
            "the image is {diff} sectors longer than its error correction data records; that may be padding, or \
             the image was changed after the ECC was made. Give --truncate to have the surplus removed"
        )));
    }
    o.truncated_bytes = img.size - keep_bytes;
    img.truncate(keep_bytes)
}

/// What every layout's repair works with besides the layout and the files.
struct Fix<'a> {
    ecc: &'a Ecc,
    opts: &'a Options,
    o: &'a mut Outcome,
    interrupt: &'a Interrupt,
}

fn rs02(fix: Fix<'_>, l: &Rs02Layout, img: &mut Work) -> crate::Result<()> {
    let Fix { ecc, opts, o, interrupt } = fix;
    let h = &ecc.header;
    let fp = h.medium_fp;
    let expected = l.total;
    // Extend a truncated image with dead-sector markers (written from the current end).
    let have = img.sectors();
    if have < expected {
        let mut buf = [0u8; SECTOR];
        let mut off = img.size;
        for s in have..expected {
            layout::dead_sector_marker(s, Some(&fp), FINGERPRINT_SECTOR, Some("RS02 fix placeholder"), &mut buf);
            img.write(off, &buf)?;
            off += ECC_SECTOR_BYTES;
        }
        o.expanded_sectors = expected - have;
    }
    cut_surplus(img, expected, expected * ECC_SECTOR_BYTES, opts, o)?;
    // All header copies rewritten from the header in use.
    for q in l.header_copies() {
        img.write(q * ECC_SECTOR_BYTES, &h.raw[..])?;
    }
    let image_sectors = img.sectors();
    let code = Code::new(l.nroots)?;
    let ndata = l.ndata;
    let mut blk = Block::new();
    // CRCs of the first block come from the header's copy, then the CRC area in order.
    let mut crc_buf = le_words(&h.raw[SECTOR..HEADER_BYTES]);
    let mut crc_idx = 0usize;
    let mut crc_pos = (l.ds + 2) * ECC_SECTOR_BYTES;
    let mut crc_valid = true;
    let mut sector_buf = [0u8; SECTOR];
    for s in 0..l.spl {
        interrupt.check()?;
        let si = (s + l.first_crc_layer) % l.spl;
        if s == 1 {
            crc_idx = 512;
        }
        blk.reset();
        for j in 0..ndata {
            let sec = j as u64 * l.spl + si;
            let buf = blk.sector_mut(j);
            if sec >= l.protected || sec == l.ds || sec == l.ds + 1 {
                buf.fill(0);
            } else if sec >= image_sectors {
                layout::dead_sector_marker(sec, None, 0, None, buf);
            } else {
                img.read(sec * ECC_SECTOR_BYTES, buf)?;
            }
        }
        for k in 0..l.nroots {
            let sec = l.ecc_sector(k, si);
            img.read(sec * ECC_SECTOR_BYTES, blk.sector_mut(ndata + k))?;
        }
        for j in 0..ndata {
            let sec = j as u64 * l.spl + si;
            if sec >= l.protected {
                continue;
            }
            if is_dead(blk.sector(j), sec) {
                blk.erase(j, Mark::Dead);
            }
            if sec < l.ds {
                let crc = layout::crc32(blk.sector(j));
                if crc_idx >= 512 {
                    img.read(crc_pos, &mut sector_buf)?;
                    crc_valid = !is_dead(&sector_buf, crc_pos / ECC_SECTOR_BYTES);
                    crc_buf = le_words(&sector_buf);
                    crc_pos += ECC_SECTOR_BYTES;
                    crc_idx = 0;
                }
                if crc_valid && blk.marks[j] == Mark::Clean && crc != crc_buf[crc_idx] {
                    blk.erase(j, Mark::Crc);
                }
                crc_idx += 1;
            }
        }
        for k in 0..l.nroots {
            if is_dead(blk.sector(ndata + k), l.ecc_sector(k, si)) {
                blk.erase(ndata + k, Mark::Dead);
            }
        }
        let place = |i: usize| if i < ndata { i as u64 * l.spl + si } else { l.ecc_sector(i - ndata, si) };
        if blk.erasures.len() > l.nroots || !blk.decode(&code, N) {
            o.unrepaired.extend(blk.erasures.iter().map(|&i| place(i)));
            continue;
        }
        for i in 0..N {
            if blk.marks[i] != Mark::Clean {
                img.write(place(i) * ECC_SECTOR_BYTES, blk.sector(i))?;
                o.repaired.push(place(i));
            }
        }
    }
    Ok(())
}

/// MD5 of sector 16 of the image as dvdisaster takes it when opening (zeros if absent or dead).
fn image_fingerprint(img: &Work) -> crate::Result<[u8; 16]> {
    let mut buf = [0u8; SECTOR];
    if img.size < (FINGERPRINT_SECTOR + 1) * ECC_SECTOR_BYTES {
        return Ok([0; 16]);
    }
    img.read(FINGERPRINT_SECTOR * ECC_SECTOR_BYTES, &mut buf)?;
    if is_dead(&buf, FINGERPRINT_SECTOR) {
        return Ok([0; 16]);
    }
    Ok(Md5::digest(buf).into())
}

fn rs03(fix: Fix<'_>, l: &Rs03Layout, img: &mut Work, mut ecc_file: Option<&mut Work>) -> crate::Result<()> {
    let Fix { ecc, opts, o, interrupt } = fix;
    let h = &ecc.header;
    let in_last = u64::from(h.in_last);
    rs03_fit_size(l, in_last, img, opts, o)?;
    let image_sectors = img.sectors();
    let reader = Rs03Reader {
        l,
        medium_fp: &h.medium_fp,
        image_sectors,
        image_in_last: img.size - (image_sectors.max(1) - 1) * ECC_SECTOR_BYTES,
    };
    let code = Code::new(l.nroots)?;
    let mut batch = Rs03Batch::new(&reader, img, ecc_file.as_deref())?;
    let mut blk = Block::new();
    for s in 0..l.spl {
        interrupt.check()?;
        batch.load(&reader, img, ecc_file.as_deref(), s)?;
        batch.mark(&mut blk, l, s);
        let ok = blk.erasures.len() <= l.nroots && blk.decode(&code, N);
        // Corrections made before a decoder problem stay in memory (dvdisaster's cache).
        batch.store(&blk, s);
        if !ok {
            for &j in &blk.erasures {
                match l.place(j, s) {
                    layout::Rs03Place::EccFile(fs) => o.unrepaired_ecc_file.push(fs),
                    layout::Rs03Place::Image(v) | layout::Rs03Place::Padding(v) => o.unrepaired.push(v),
                }
            }
            continue;
        }
        rs03_write(&blk, l, s, in_last, img, ecc_file.as_deref_mut(), o)?;
    }
    Ok(())
}

/// Bring the image to the length its RS03 data records: extend a short one with dead-sector
/// markers, cut surplus bytes (refused without `--truncate`) and surplus sectors.
fn rs03_fit_size(l: &Rs03Layout, in_last: u64, img: &mut Work, opts: &Options, o: &mut Outcome) -> crate::Result<()> {
    let expected = if l.ecc_file { l.ds } else { l.total_sectors() };
    // dvdisaster applies the image's last-sector byte count to the end of the file even for an
    // augmented image, where the file ends with a full ECC sector: it then refuses (or, with
    // --truncate, cuts the last ECC sector and fails). loopkit uses whole sectors there; for
    // ISO images (in_last = 2048) both agree.
    let file_in_last = if l.ecc_file { in_last } else { ECC_SECTOR_BYTES };
    let have = img.sectors();
    if have < expected {
        let fp = image_fingerprint(img)?;
        let mut buf = [0u8; SECTOR];
        let mut off = img.size;
        for s in have..expected {
            layout::dead_sector_marker(s, Some(&fp), FINGERPRINT_SECTOR, Some("RS03 fix placeholder"), &mut buf);
            let len = if s + 1 == expected { file_in_last as usize } else { SECTOR };
            img.write(off, &buf[..len])?;
            off += len as u64;
        }
        o.expanded_sectors = expected - have;
    }
    let expected_bytes = (expected - 1) * ECC_SECTOR_BYTES + file_in_last;
    if img.sectors() == expected && img.size > expected_bytes {
        if !opts.truncate {
            return Err(crate::Error::invalid(format!(
                "the image is {} bytes longer than its error correction data records; give --truncate to remove them",
                img.size - expected_bytes
            )));
        }
        o.truncated_bytes = img.size - expected_bytes;
        img.truncate(expected_bytes)?;
    }
    cut_surplus(img, expected, expected_bytes, opts, o)
}

/// Reads the sectors of RS03 layers the way dvdisaster's `RS03ReadSectors` does.
struct Rs03Reader<'a> {
    l: &'a Rs03Layout,
    /// The medium fingerprint padding sectors are made from.
    medium_fp: &'a [u8; 16],
    /// The image's length in sectors and the bytes in its last sector, after fitting its size.
    image_sectors: u64,
    image_in_last: u64,
}

impl Rs03Reader<'_> {
    /// Read sector `i` of layer `j` into `buf`: from the image (a short last sector zero-filled),
    /// a padding sector, or the `.ecc` file.
    fn read(&self, img: &Work, ef: Option<&Work>, j: usize, i: u64, buf: &mut [u8]) -> crate::Result<()> {
        let l = self.l;
        match l.place(j, i) {
            layout::Rs03Place::Image(s) => {
                if l.ecc_file && s + 1 == self.image_sectors && self.image_in_last < ECC_SECTOR_BYTES {
                    buf.fill(0);
                    img.read(s * ECC_SECTOR_BYTES, &mut buf[..self.image_in_last as usize])
                } else {
                    img.read(s * ECC_SECTOR_BYTES, buf)
                }
            }
            layout::Rs03Place::Padding(s) => {
                layout::padding_sector(s, self.medium_fp, buf);
                Ok(())
            }
            layout::Rs03Place::EccFile(fs) => match ef {
                Some(w) => w.read(fs * ECC_SECTOR_BYTES, buf),
                None => Err(crate::Error::invalid("BUG: RS03 .ecc layout without an .ecc file")),
            },
        }
    }
}

/// The batch in memory: 255 layers × up to 64 sectors, corrected in place, and the last CRC
/// sectors of this batch and the one before as read before repair (the first block of a batch
/// takes its CRCs from the previous batch's last CRC block).
struct Rs03Batch {
    data: Vec<u8>,
    start: u64,
    len: u64,
    cache_size: u64,
    last_crc1: Vec<u8>,
    last_crc2: Vec<u8>,
}

impl Rs03Batch {
    /// An empty batch; the CRC sector before the first block is the last one of the CRC layer.
    fn new(reader: &Rs03Reader<'_>, img: &Work, ef: Option<&Work>) -> crate::Result<Rs03Batch> {
        let mut last_crc2 = vec![0u8; SECTOR];
        reader.read(img, ef, reader.l.ndata - 1, reader.l.spl - 1, &mut last_crc2)?;
        Ok(Rs03Batch {
            data: Vec::new(),
            start: 0,
            len: 0,
            cache_size: CACHE_BLOCKS,
            last_crc1: vec![0u8; SECTOR],
            last_crc2,
        })
    }

    /// Read the next batch when block `s` is past the one in memory.
    fn load(&mut self, reader: &Rs03Reader<'_>, img: &Work, ef: Option<&Work>, s: u64) -> crate::Result<()> {
        if s < self.start + self.len {
            return Ok(());
        }
        let l = reader.l;
        if l.spl - s < self.cache_size {
            self.cache_size = l.spl - s;
        }
        self.start = s;
        self.len = self.cache_size;
        let n = self.len as usize;
        self.data.resize(N * n * SECTOR, 0);
        for j in 0..N {
            for q in 0..n {
                let at = (j * n + q) * SECTOR;
                reader.read(img, ef, j, s + q as u64, &mut self.data[at..at + SECTOR])?;
            }
        }
        self.last_crc1.copy_from_slice(&self.last_crc2);
        let at = ((l.ndata - 1) * n + n - 1) * SECTOR;
        self.last_crc2.copy_from_slice(&self.data[at..at + SECTOR]);
        Ok(())
    }

    /// Byte offset in the batch of block `s`'s sector in layer `j`.
    fn at(&self, j: usize, s: u64) -> usize {
        let n = self.len as usize;
        (j * n + (s - self.start) as usize) * SECTOR
    }

    /// Load block `s` into `blk` and erase its dead sectors and data sectors failing their CRC.
    fn mark(&self, blk: &mut Block, l: &Rs03Layout, s: u64) {
        let ndata = l.ndata;
        let crc_layer = ndata - 1;
        let n = self.len as usize;
        let q = (s - self.start) as usize;
        let crc_sector: &[u8] = if q == 0 {
            &self.last_crc1
        } else {
            let at = (crc_layer * n + q - 1) * SECTOR;
            &self.data[at..at + SECTOR]
        };
        let crc_valid = !is_dead(crc_sector, 0);
        let crc_buf = le_words(crc_sector);
        blk.reset();
        for j in 0..N {
            let at = self.at(j, s);
            blk.sector_mut(j).copy_from_slice(&self.data[at..at + SECTOR]);
        }
        for j in 0..ndata {
            if is_dead(blk.sector(j), j as u64 * l.spl + s) {
                blk.erase(j, Mark::Dead);
            }
            // CRC j of the block's CRC sector belongs to data layer j.
            let stored = crc_buf.get(j).copied().filter(|_| j < crc_layer);
            if let Some(stored) = stored
                && crc_valid
                && blk.marks[j] == Mark::Clean
                && layout::crc32(blk.sector(j)) != stored
            {
                blk.erase(j, Mark::Crc);
            }
        }
        for j in ndata..N {
            if is_dead(blk.sector(j), j as u64 * l.spl + s) {
                blk.erase(j, Mark::Dead);
            }
        }
    }

    /// Put block `s` back from `blk` (corrected or not).
    fn store(&mut self, blk: &Block, s: u64) {
        for j in 0..N {
            let at = self.at(j, s);
            self.data[at..at + SECTOR].copy_from_slice(blk.sector(j));
        }
    }
}

/// Write the corrected sectors of RS03 block `s` to the image or the `.ecc` file.
fn rs03_write(
    blk: &Block,
    l: &Rs03Layout,
    s: u64,
    in_last: u64,
    img: &mut Work,
    mut ecc_file: Option<&mut Work>,
    o: &mut Outcome,
) -> crate::Result<()> {
    for j in 0..N {
        if blk.marks[j] == Mark::Clean {
            continue;
        }
        let sector = blk.sector(j);
        match l.place(j, s) {
            layout::Rs03Place::EccFile(fs) => {
                if let Some(w) = ecc_file.as_deref_mut() {
                    w.write(fs * ECC_SECTOR_BYTES, sector)?;
                }
                o.repaired_ecc_file.push(fs);
            }
            layout::Rs03Place::Image(v) | layout::Rs03Place::Padding(v) => {
                let len = if v + 1 == l.ds { in_last as usize } else { SECTOR };
                img.write(v * ECC_SECTOR_BYTES, &sector[..len])?;
                o.repaired.push(v);
            }
        }
    }
    Ok(())
}

/// An RS01 `.ecc` file must be as long as its header says (header, one CRC per image sector,
/// parity): the header's sector count then cannot make repair allocate more than the file holds
/// (a crafted header claiming 2^40 sectors would otherwise ask for 4 TiB of CRCs).
fn check_rs01_size(l: &Rs01Layout, ecc_file: &File, src: &Path) -> crate::Result<()> {
    let have = ecc_file.metadata().map_err(|e| crate::Error::io(format!("cannot examine {}", src.display()), e))?.len();
    let want = (l.nroots as u64)
        .checked_mul(l.spl)
        .and_then(|n| n.checked_mul(ECC_SECTOR_BYTES))
        .and_then(|n| l.sectors.checked_mul(4).and_then(|c| c.checked_add(n)))
        .and_then(|n| n.checked_add(l.crc_offset()));
    match want {
        Some(want) if have >= want => Ok(()),
        _ => Err(crate::Error::invalid(format!(
            "{} is {have} bytes, but its RS01 header describes an image of {} sectors, which needs {}: the .ecc \
             file is truncated, damaged or not what its header says",
            src.display(),
            l.sectors,
            want.map_or_else(|| "more bytes than a file can hold".to_string(), |w| format!("{w} bytes")),
        ))),
    }
}

fn rs01(fix: Fix<'_>, l: &Rs01Layout, img: &mut Work, ecc_file: &File) -> crate::Result<()> {
    let Fix { ecc, opts, o, interrupt } = fix;
    let h = &ecc.header;
    let in_last = u64::from(h.in_last);
    rs01_fit_size(l, in_last, img, opts, o)?;
    let image_sectors = img.sectors();
    let image_in_last = img.size - (image_sectors.max(1) - 1) * ECC_SECTOR_BYTES;
    rs01_check_fingerprint(&h.medium_fp, img, image_sectors)?;
    let code = Code::new(l.nroots)?;
    let ndata = l.ndata;
    let crcs = rs01_crcs(l, ecc_file)?;
    let mut parity = vec![0u8; SECTOR * l.nroots];
    let mut blk = Block::new();
    for si in 0..l.spl {
        interrupt.check()?;
        rs01_load(&mut blk, l, si, img, (image_sectors, image_in_last))?;
        rs01_mark(&mut blk, l, si, &crcs);
        if blk.erasures.is_empty() {
            continue;
        }
        if blk.erasures.len() > l.nroots {
            // Unrepairable: sectors past the end of a truncated image become dead-sector markers.
            for &j in &blk.erasures {
                let sec = j as u64 * l.spl + si;
                o.unrepaired.push(sec);
                if sec >= image_sectors {
                    let mut buf = [0u8; SECTOR];
                    layout::dead_sector_marker(sec, Some(&h.medium_fp), h.fp_sector.max(0) as u64, None, &mut buf);
                    img.write(sec * ECC_SECTOR_BYTES, &buf)?;
                }
            }
            continue;
        }
        // Parity: nroots consecutive bytes per codeword, 2048 codewords per block.
        let off = l.parity_offset() + si * (SECTOR * l.nroots) as u64;
        let got = ecc_file.read_at(&mut parity, off).map_err(|e| crate::Error::io("reading the .ecc file", e))?;
        parity[got..].fill(0);
        for b in 0..SECTOR {
            for k in 0..l.nroots {
                blk.data[(ndata + k) * SECTOR + b] = parity[b * l.nroots + k];
            }
        }
        // A decoder problem ends the block, but dvdisaster still writes its erasures.
        let _ = blk.decode(&code, ndata);
        for &j in &blk.erasures {
            let sec = j as u64 * l.spl + si;
            let len = if sec + 1 < l.sectors { SECTOR } else { in_last as usize };
            img.write(sec * ECC_SECTOR_BYTES, &blk.sector(j)[..len])?;
            o.repaired.push(sec);
        }
    }
    Ok(())
}

/// Bring the image to the length its RS01 `.ecc` file records: zero-fill a last sector a few
/// bytes short, cut surplus bytes (more than 2 surplus sectors only with `--truncate`).
fn rs01_fit_size(l: &Rs01Layout, in_last: u64, img: &mut Work, opts: &Options, o: &mut Outcome) -> crate::Result<()> {
    let expected_bytes = (l.sectors - 1) * ECC_SECTOR_BYTES + in_last;
    // A few bytes short in the last sector: zero-filled (the CRC catches a wrong guess).
    if img.sectors() == l.sectors && img.size < expected_bytes {
        let pad = vec![0u8; (expected_bytes - img.size) as usize];
        img.write(img.size, &pad)?;
    }
    if img.size > expected_bytes {
        let diff = img.sectors().saturating_sub(l.sectors);
        if (diff > 2 || diff == 0) && !opts.truncate {
            return Err(crate::Error::invalid(format!(
                "the image is {} bytes longer than its .ecc file records; give --truncate to remove them",
                img.size - expected_bytes
            )));
        }
        o.truncated_bytes = img.size - expected_bytes;
        img.truncate(expected_bytes)?;
    }
    Ok(())
}

/// Refuse an image whose fingerprint sector (when readable) does not match the `.ecc` file's.
fn rs01_check_fingerprint(medium_fp: &[u8; 16], img: &Work, image_sectors: u64) -> crate::Result<()> {
    if *medium_fp != [0u8; 16] && image_sectors > FINGERPRINT_SECTOR {
        let mut buf = [0u8; SECTOR];
        img.read(FINGERPRINT_SECTOR * ECC_SECTOR_BYTES, &mut buf)?;
        if !is_dead(&buf, FINGERPRINT_SECTOR) && <[u8; 16]>::from(Md5::digest(buf)) != *medium_fp {
            return Err(crate::Error::invalid(
                "the fingerprints of image and .ecc file do not match: they do not belong together",
            ));
        }
    }
    Ok(())
}

/// The CRC of every image sector, from the `.ecc` file (zero where the file ends early).
fn rs01_crcs(l: &Rs01Layout, ecc_file: &File) -> crate::Result<Vec<u32>> {
    // Bounded by the .ecc file's size (check_rs01_size); a failed allocation is an error, not an
    // abort.
    let crc_bytes = l
        .sectors
        .checked_mul(4)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| crate::Error::invalid(format!("{} sectors: too many CRCs for this machine", l.sectors)))?;
    let mut crcs = Vec::new();
    crcs.try_reserve_exact(crc_bytes).map_err(|_| {
        crate::Error::new(
            crate::ErrorKind::Unsupported,
            format!("cannot allocate {crc_bytes} bytes for the CRCs of {} sectors", l.sectors),
        )
    })?;
    crcs.resize(crc_bytes, 0);
    let have = ecc_file.read_at(&mut crcs, l.crc_offset()).map_err(|e| crate::Error::io("reading the .ecc file", e))?;
    crcs[have..].fill(0);
    Ok(le_words(&crcs))
}

/// Load the data sectors of RS01 block `si` into `blk`: sectors missing from a truncated image
/// as dead-sector markers, sectors past the recorded size as zeros.
/// `image_sectors` and `image_in_last` are the image's length before repair started.
fn rs01_load(blk: &mut Block, l: &Rs01Layout, si: u64, img: &Work, image: (u64, u64)) -> crate::Result<()> {
    let (image_sectors, image_in_last) = image;
    blk.reset();
    for j in 0..l.ndata {
        let sec = j as u64 * l.spl + si;
        let buf = blk.sector_mut(j);
        if sec >= image_sectors && sec < l.sectors {
            layout::dead_sector_marker(sec, None, 0, None, buf);
        } else if sec >= l.sectors {
            buf.fill(0);
        } else if sec + 1 == image_sectors {
            buf.fill(0);
            img.read(sec * ECC_SECTOR_BYTES, &mut buf[..image_in_last as usize])?;
        } else {
            img.read(sec * ECC_SECTOR_BYTES, buf)?;
        }
    }
    Ok(())
}

/// Erase the data sectors of RS01 block `si` that are dead-sector markers or fail their CRC.
fn rs01_mark(blk: &mut Block, l: &Rs01Layout, si: u64, crcs: &[u32]) {
    for j in 0..l.ndata {
        let sec = j as u64 * l.spl + si;
        if sec >= l.sectors {
            continue;
        }
        if is_dead(blk.sector(j), sec) {
            blk.erase(j, Mark::Dead);
        } else if layout::crc32(blk.sector(j)) != crcs[sec as usize] {
            blk.erase(j, Mark::Crc);
        }
    }
}
