//! Read-only ISO9660 reader (ECMA-119) with Rock Ridge (long names, symlinks, modes, owners,
//! times, device nodes, relocated deep directories) and a Joliet fallback (UCS-2 names) when
//! the image has no Rock Ridge; multi-extent files. Nodes are identified by the byte offset of
//! their directory record. See `docs/formats/iso9660.md`. UDF is not read.
//!
//! ```text
//!   volume descriptors (sector 16…) ─> root record ─> directory extents ─> records
//!                                                        └─> SUSP/Rock Ridge (+ CE areas)
//! ```

pub mod susp;
pub mod vd;

use crate::bytes::le32;
use crate::fs::kind::Strictness;
use crate::fs::tree::read_err;
use crate::fs::tree::{DirEntry, FileReader, FileSystem, FileType, Issue, Listing, NodeId, Stat};
use crate::source::ByteSource;
use susp::RockRidge;
pub use vd::ISO_VD_OFFSET;
use vd::{VD_PRIMARY, VD_TERMINATOR};

/// ISO9660 sectors are 2048 bytes; directory records never cross one.
pub const SECTOR_BYTES: u64 = 2048;
/// Offset of the root directory record in a volume descriptor.
const VD_ROOT_RECORD: u64 = 156;
/// Record flags.
const FLAG_DIR: u8 = 0x02;
const FLAG_ASSOCIATED: u8 = 0x04;
const FLAG_MULTI_EXTENT: u8 = 0x80;
/// Volume descriptors scanned at most.
const MAX_DESCRIPTORS: u64 = 64;
/// `CE` continuation areas followed per record at most.
const MAX_CONTINUATIONS: usize = 16;
/// Extents of one multi-extent file followed at most.
const MAX_EXTENTS: usize = 4096;
/// Largest directory read (bigger is treated as corruption).
const MAX_DIR_BYTES: u64 = 256 << 20;

/// Which directory tree is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// The primary tree with Rock Ridge extensions.
    RockRidge,
    /// The Joliet supplementary tree (UCS-2 names; no modes, owners or symlinks).
    Joliet,
    /// The bare primary tree (8.3-style names; no modes, owners or symlinks).
    Plain,
}

/// One directory record.
#[derive(Debug, Clone)]
struct Record {
    len: usize,
    extent: u32,
    data_len: u32,
    flags: u8,
    /// File unit size and interleave gap (bytes 26, 27): non-zero means an interleaved file.
    interleave: (u8, u8),
    name: Vec<u8>,
    date: [u8; 7],
    su: Vec<u8>,
}

/// An opened ISO9660 volume.
pub struct Iso<'a> {
    src: &'a dyn ByteSource,
    block_size: u64,
    volume_bytes: u64,
    root: NodeId,
    tree: Tree,
    susp_skip: usize,
    issues: Vec<Issue>,
}

impl std::fmt::Debug for Iso<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iso").field("tree", &self.tree).field("volume_bytes", &self.volume_bytes).finish()
    }
}

fn parse_record(b: &[u8]) -> Option<Record> {
    let len = usize::from(*b.first()?);
    if len < 34 || len > b.len() {
        return None;
    }
    let name_len = usize::from(b[32]);
    if 33 + name_len > len {
        return None;
    }
    let su_start = 33 + name_len + usize::from(name_len % 2 == 0);
    let mut date = [0u8; 7];
    date.copy_from_slice(&b[18..25]);
    Some(Record {
        len,
        extent: le32(b, 2),
        data_len: le32(b, 10),
        flags: b[25],
        interleave: (b[26], b[27]),
        name: b[33..33 + name_len].to_vec(),
        date,
        su: b.get(su_start.min(len)..len).map(<[u8]>::to_vec).unwrap_or_default(),
    })
}

impl<'a> Iso<'a> {
    /// Open the ISO9660 volume in `src`, preferring Rock Ridge, then Joliet, then plain names.
    ///
    /// # Errors
    /// `NotRecognized` without a primary volume descriptor; `Corrupt` for an unusable root;
    /// `Io`.
    pub fn open(src: &'a dyn ByteSource) -> crate::Result<Iso<'a>> {
        let mut pvd: Option<(u64, u64, u64)> = None; // (vd offset, block size, volume bytes)
        let mut joliet: Option<u64> = None;
        let mut vd = vec![0u8; 2048];
        for i in 0..MAX_DESCRIPTORS {
            let off = ISO_VD_OFFSET + i * SECTOR_BYTES;
            if src.read_exact_at(&mut vd, off).is_err() || !vd::is_descriptor(&vd) {
                break;
            }
            match vd[0] {
                VD_PRIMARY if pvd.is_none() => {
                    let Some(p) = vd::primary(&vd, Strictness::Strict) else {
                        let bs = crate::bytes::le16(&vd, 128);
                        return Err(crate::Error::corrupt(format!("ISO9660: logical block size {bs} is invalid")));
                    };
                    pvd = Some((off, u64::from(p.block_size), p.volume_bytes()));
                }
                _ if vd::is_joliet(&vd) => {
                    joliet.get_or_insert(off);
                }
                VD_TERMINATOR => break,
                _ => {}
            }
        }
        let Some((pvd_off, block_size, volume_bytes)) = pvd else {
            return Err(crate::Error::new(crate::ErrorKind::NotRecognized, "no ISO9660 primary volume descriptor"));
        };
        let mut iso = Iso {
            src,
            block_size,
            volume_bytes,
            root: pvd_off + VD_ROOT_RECORD,
            tree: Tree::Plain,
            susp_skip: 0,
            issues: Vec::new(),
        };
        if volume_bytes > src.size_bytes() {
            iso.issues.push(Issue::error(
                "iso9660.truncated",
                format!(
                    "the volume claims {volume_bytes} bytes but only {} are present: the image is truncated",
                    src.size_bytes()
                ),
            ));
        }
        let root = iso.record(iso.root)?;
        if root.flags & FLAG_DIR == 0 {
            return Err(crate::Error::corrupt("ISO9660: the root record is not a directory"));
        }
        // Rock Ridge: the root's "." record starts its system use area with SP (0xBE 0xEF).
        let dot_off = iso.extent_offset(root.extent)?;
        if let Ok(dot) = iso.record(dot_off) {
            let su = &dot.su;
            if su.len() >= 7 && &su[0..2] == b"SP" && su[4] == 0xBE && su[5] == 0xEF {
                iso.tree = Tree::RockRidge;
                iso.susp_skip = usize::from(su[6]);
            }
        }
        if iso.tree == Tree::Plain
            && let Some(j) = joliet
        {
            iso.tree = Tree::Joliet;
            iso.root = j + VD_ROOT_RECORD;
            iso.record(iso.root)?;
        }
        Ok(iso)
    }

    /// Which tree is being read.
    pub fn tree(&self) -> Tree {
        self.tree
    }

    /// Bytes of the volume as its primary descriptor records them.
    pub fn volume_bytes(&self) -> u64 {
        self.volume_bytes
    }

    /// Where the data of the file whose (first) record is at `id` lies: (byte offset, length)
    /// per extent, in file order.
    ///
    /// # Errors
    /// `Corrupt`/`Unsupported`/`Io` as [`FileSystem::open`].
    pub fn file_extents(&self, id: NodeId) -> crate::Result<Vec<(u64, u64)>> {
        self.extents(id)
    }

    /// Where the directory whose record is at `id` lies: (byte offset, length).
    ///
    /// # Errors
    /// `Corrupt`/`Io` when its record cannot be read.
    pub fn directory_extent(&self, id: NodeId) -> crate::Result<(u64, u64)> {
        let rec = self.record(id)?;
        let mut issues = Vec::new();
        let rr = self.rock_ridge(&rec, &mut issues);
        self.dir_extent(&rec, &rr)
    }

    fn extent_offset(&self, lba: u32) -> crate::Result<u64> {
        let off = u64::from(lba) * self.block_size;
        if off >= self.volume_bytes.max(self.src.size_bytes()) {
            return Err(crate::Error::corrupt(format!(
                "ISO9660: extent at block {lba} lies past the end of the volume"
            )));
        }
        Ok(off)
    }

    fn record(&self, off: NodeId) -> crate::Result<Record> {
        let mut b = [0u8; 255];
        let avail = self.src.size_bytes().saturating_sub(off).min(255) as usize;
        // A record never crosses a sector.
        let in_sector = (SECTOR_BYTES - off % SECTOR_BYTES) as usize;
        let n = avail.min(in_sector);
        self.src
            .read_exact_at(&mut b[..n], off)
            .map_err(|e| read_err(format!("reading the directory record at byte {off}"), e))?;
        parse_record(&b[..n])
            .ok_or_else(|| crate::Error::corrupt(format!("ISO9660: malformed directory record at byte {off}")))
    }

    fn rock_ridge(&self, rec: &Record, issues: &mut Vec<Issue>) -> RockRidge {
        if self.tree != Tree::RockRidge {
            return RockRidge::default();
        }
        let mut p = susp::Parser::default();
        let mut next = rec.su.get(self.susp_skip..).map(|a| p.feed(a, issues)).unwrap_or(None);
        let mut followed = 0;
        while let Some((block, offset, len)) = next.take() {
            followed += 1;
            if followed > MAX_CONTINUATIONS || u64::from(offset) + u64::from(len) > self.block_size * 4 {
                issues.push(Issue::error("iso9660.susp", "too many or oversized continuation areas (CE); ignored"));
                break;
            }
            let at = u64::from(block) * self.block_size + u64::from(offset);
            let mut area = vec![0u8; len as usize];
            if let Err(e) = self.src.read_exact_at(&mut area, at) {
                issues.push(Issue::error("iso9660.susp", format!("continuation area at byte {at}: {e}")));
                break;
            }
            next = p.feed(&area, issues);
        }
        p.rr
    }

    /// Name bytes of a record in the active tree (Rock Ridge name when present).
    fn name(&self, rec: &Record, rr: &RockRidge) -> Vec<u8> {
        if let Some(n) = &rr.name {
            return n.clone();
        }
        let raw: Vec<u8> = match self.tree {
            Tree::Joliet => {
                let units: Vec<u16> = rec.name.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
                String::from_utf16_lossy(&units).into_bytes()
            }
            _ => rec.name.clone(),
        };
        // Strip ";version" and, for files, a trailing "." of an empty extension.
        let mut n = match raw.iter().rposition(|&c| c == b';') {
            Some(i) if raw[i + 1..].iter().all(u8::is_ascii_digit) => raw[..i].to_vec(),
            _ => raw,
        };
        if rec.flags & FLAG_DIR == 0 && n.len() > 1 && n.last() == Some(&b'.') {
            n.pop();
        }
        n
    }

    /// The directory's extent (a `CL` relocation points elsewhere).
    fn dir_extent(&self, rec: &Record, rr: &RockRidge) -> crate::Result<(u64, u64)> {
        if let Some(cl) = rr.child_link {
            let off = self.extent_offset(cl)?;
            let dot = self.record(off)?;
            return Ok((off, u64::from(dot.data_len)));
        }
        Ok((self.extent_offset(rec.extent)?, u64::from(rec.data_len)))
    }

    /// The records of a directory extent, with their byte offsets (`.`/`..` included).
    fn records(&self, start: u64, len: u64, issues: &mut Vec<Issue>) -> crate::Result<Vec<(u64, Record)>> {
        if len > MAX_DIR_BYTES || start.saturating_add(len) > self.src.size_bytes() {
            return Err(crate::Error::corrupt(format!(
                "ISO9660: directory of {len} bytes at byte {start} is implausible or past the end of the image"
            )));
        }
        let mut data = vec![0u8; len as usize];
        self.src
            .read_exact_at(&mut data, start)
            .map_err(|e| read_err(format!("reading the directory at byte {start}"), e))?;
        let mut out = Vec::new();
        let mut pos = 0usize;
        while pos < data.len() {
            let sector_end = ((pos as u64 / SECTOR_BYTES + 1) * SECTOR_BYTES).min(len) as usize;
            if data[pos] == 0 {
                pos = sector_end;
                continue;
            }
            match parse_record(&data[pos..sector_end]) {
                Some(r) => {
                    let l = r.len;
                    out.push((start + pos as u64, r));
                    pos += l;
                }
                None => {
                    issues.push(Issue::error(
                        "iso9660.record",
                        format!(
                            "malformed directory record at byte {} (rest of the sector skipped)",
                            start + pos as u64
                        ),
                    ));
                    pos = sector_end;
                }
            }
        }
        Ok(out)
    }

    /// All extents of the file whose first record is at `id`: (byte offset, length).
    fn extents(&self, id: NodeId) -> crate::Result<Vec<(u64, u64)>> {
        let mut out = Vec::new();
        let mut off = id;
        let mut rec = self.record(off)?;
        let first_name = rec.name.clone();
        loop {
            if rec.interleave != (0, 0) {
                return Err(crate::Error::unsupported(format!(
                    "ISO9660: an interleaved file (unit size {}, gap {}) is not supported",
                    rec.interleave.0, rec.interleave.1
                )));
            }
            let start = u64::from(rec.extent) * self.block_size;
            let len = u64::from(rec.data_len);
            if len > 0 && start.checked_add(len).is_none_or(|e| e > self.volume_bytes.max(self.src.size_bytes())) {
                return Err(crate::Error::corrupt(format!(
                    "ISO9660: file data at block {} ({len} bytes) lies past the end of the volume",
                    rec.extent
                )));
            }
            out.push((start, len));
            if rec.flags & FLAG_MULTI_EXTENT == 0 {
                return Ok(out);
            }
            if out.len() >= MAX_EXTENTS {
                return Err(crate::Error::corrupt("ISO9660: a multi-extent file has too many extents"));
            }
            // The next record, possibly at the start of the next sector.
            off += rec.len as u64;
            let mut first = [0u8; 1];
            if off.is_multiple_of(SECTOR_BYTES) || self.src.read_exact_at(&mut first, off).is_err() || first[0] == 0 {
                off = off.div_ceil(SECTOR_BYTES) * SECTOR_BYTES;
            }
            rec = self.record(off).map_err(|e| e.context("following a multi-extent file"))?;
            if rec.name != first_name {
                return Err(crate::Error::corrupt("ISO9660: a multi-extent file's continuation record is missing"));
            }
        }
    }
}

/// A file's data: its extents laid end to end.
struct IsoFile<'i> {
    src: &'i dyn ByteSource,
    extents: Vec<(u64, u64)>,
    size: u64,
}

impl FileReader for IsoFile<'_> {
    fn size_bytes(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> crate::Result<usize> {
        let mut base = 0u64;
        for &(start, len) in &self.extents {
            if offset_bytes < base + len {
                let within = offset_bytes - base;
                let n = (buf.len() as u64).min(len - within) as usize;
                self.src
                    .read_exact_at(&mut buf[..n], start + within)
                    .map_err(|e| read_err(format!("reading file data at byte {}", start + within), e))?;
                return Ok(n);
            }
            base += len;
        }
        Ok(0)
    }
    fn issues(&self) -> &[Issue] {
        &[]
    }
}

impl FileSystem for Iso<'_> {
    fn kind(&self) -> &'static str {
        "iso9660"
    }

    fn root(&self) -> NodeId {
        self.root
    }

    fn stat(&self, id: NodeId) -> crate::Result<Stat> {
        let rec = self.record(id)?;
        let mut issues = Vec::new();
        let rr = self.rock_ridge(&rec, &mut issues);
        let is_dir = rec.flags & FLAG_DIR != 0 || rr.child_link.is_some();
        let file_type = if is_dir {
            FileType::Dir
        } else if rr.symlink.is_some() {
            FileType::Symlink
        } else if let Some(m) = rr.mode {
            FileType::from_mode(m).ok_or_else(|| {
                crate::Error::corrupt(format!("ISO9660 record at byte {id}: unknown file type in mode {m:#o}"))
            })?
        } else {
            FileType::File
        };
        let size_bytes = match file_type {
            FileType::File => crate::bytes::sum_saturating(self.extents(id)?.iter().map(|e| e.1)),
            FileType::Symlink => rr.symlink.as_ref().map_or(0, |s| s.len() as u64),
            _ => 0,
        };
        let link_key = match file_type {
            FileType::Dir => Some(self.dir_extent(&rec, &rr)?.0),
            FileType::File => {
                Some(rr.ino.filter(|&i| i != 0).map_or(u64::from(rec.extent), |i| u64::from(i) | 1 << 40))
            }
            _ => None,
        };
        Ok(Stat {
            file_type,
            size_bytes,
            mode: rr.mode.map(|m| m & 0o7777),
            uid: rr.uid,
            gid: rr.gid,
            mtime: rr.mtime.or_else(|| susp::short_date(&rec.date)),
            ctime: None,
            nlink: rr.nlink.unwrap_or(1),
            rdev: rr.dev,
            link_key,
        })
    }

    fn read_dir(&self, id: NodeId) -> crate::Result<Listing> {
        let rec = self.record(id)?;
        let mut listing = Listing::default();
        let rr = self.rock_ridge(&rec, &mut listing.issues);
        if rec.flags & FLAG_DIR == 0 && rr.child_link.is_none() {
            return Err(crate::Error::corrupt(format!("ISO9660 record at byte {id} is not a directory")));
        }
        let (start, len) = self.dir_extent(&rec, &rr)?;
        let records = self.records(start, len, &mut listing.issues)?;
        let mut prev_multi: Option<Vec<u8>> = None;
        for (off, r) in records {
            if r.name == [0] || r.name == [1] {
                continue;
            }
            let continuation = prev_multi.as_ref().is_some_and(|n| *n == r.name);
            prev_multi = (r.flags & FLAG_MULTI_EXTENT != 0).then(|| r.name.clone());
            if continuation || r.flags & FLAG_ASSOCIATED != 0 {
                continue;
            }
            let rr = self.rock_ridge(&r, &mut listing.issues);
            if rr.relocated || rr.name_is_dot {
                continue;
            }
            let name = self.name(&r, &rr);
            if id == self.root && self.tree == Tree::RockRidge && (name == b"rr_moved" || name == b".rr_moved") {
                // The relocation directory of deep trees: hidden when it holds only placeholders.
                let mut scratch = Vec::new();
                if let Ok(inner) = self.dir_extent(&r, &rr).and_then(|(s, l)| self.records(s, l, &mut scratch)) {
                    let visible = inner
                        .iter()
                        .filter(|(_, x)| x.name != [0] && x.name != [1])
                        .any(|(_, x)| !self.rock_ridge(x, &mut scratch).relocated);
                    let any_relocated = inner.iter().any(|(_, x)| self.rock_ridge(x, &mut scratch).relocated);
                    if any_relocated && !visible {
                        continue;
                    }
                }
            }
            listing.entries.push(DirEntry { name, id: off });
        }
        crate::fs::tree::cap_issues(&mut listing.issues);
        Ok(listing)
    }

    fn readlink(&self, id: NodeId) -> crate::Result<Vec<u8>> {
        let rec = self.record(id)?;
        let mut issues = Vec::new();
        let rr = self.rock_ridge(&rec, &mut issues);
        match rr.symlink {
            Some(t) if issues.is_empty() => Ok(t),
            Some(_) => Err(crate::Error::corrupt(issues.into_iter().map(|i| i.message).collect::<Vec<_>>().join("; "))),
            None => Err(crate::Error::invalid(format!("ISO9660 record at byte {id} is not a symlink"))),
        }
    }

    fn open(&self, id: NodeId) -> crate::Result<Box<dyn FileReader + '_>> {
        let extents = self.extents(id)?;
        let size = crate::bytes::sum_saturating(extents.iter().map(|e| e.1));
        Ok(Box::new(IsoFile { src: self.src, extents, size }))
    }

    fn issues(&self) -> Vec<Issue> {
        let mut v = self.issues.clone();
        match self.tree {
            Tree::RockRidge => {}
            Tree::Joliet => v.push(Issue::warning(
                "iso9660.no-rock-ridge",
                "no Rock Ridge extensions: names come from the Joliet tree; modes, owners and symlinks are not recorded",
            )),
            Tree::Plain => v.push(Issue::warning(
                "iso9660.no-rock-ridge",
                "neither Rock Ridge nor Joliet: names are ISO9660 names; modes, owners and symlinks are not recorded",
            )),
        }
        v
    }
}
