//! Damage mapped to files: every bad, unreadable or uncorrectable part of an image is followed
//! through the layers — the image bytes, the payload window (container header and appended ECC
//! data are outside it), the cipher's sector size (damaged ciphertext spoils its whole cipher
//! sector), the file-system block — to what it hits: each file, directory or symlink (with the
//! byte ranges inside it), inode tables, the journal, other metadata, free space.
//!
//! ```text
//!  ECC report (bad + missing 2048-byte sectors, per codeword ≤ nroots?) ─┐
//!  unreadable image ranges (I/O errors)                                  ├─> BadRange (image bytes)
//!                 payload offset, cipher sector ─> plaintext ranges ─> owners (ext.rs / iso.rs)
//!                                                                   ─> Damage {files, areas}
//! ```
//! A file's verdict is `repairable` when every damaged byte of it lies in sectors whose ECC
//! codeword has enough roots, `lost` otherwise (with the lost byte ranges); files not listed
//! are intact. The owners come from the file system as read, so damage to metadata that hides
//! files (a lost directory block) is reported as that metadata, not as the files it named.

mod ext;
mod iso;
pub mod salvage;

use crate::formats::dvdisaster::verify::Report as EccReport;
use crate::fs::tree::{FileSystem, FileType, NodeId};
use crate::image::Opened;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

/// dvdisaster's (and optical media's) sector size.
pub const MEDIUM_SECTOR_BYTES: u64 = 2048;
/// Most files and areas listed (the counts are always complete).
pub const MAX_LISTED: usize = 100_000;

/// Whether damaged bytes can be restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The dvdisaster error-correction data can restore them (their codeword has enough roots).
    Repairable,
    /// Nothing here can restore them.
    Lost,
}

/// A damaged range of image bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRange {
    /// Image (file) byte range.
    pub range: Range<u64>,
    /// Can it be restored?
    pub status: Status,
}

/// The verdict on one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Untouched by the damage.
    Intact,
    /// Damaged, but the ECC data restores every damaged byte.
    Repairable,
    /// Some bytes cannot be restored.
    Lost,
}

/// Which part of a node the damage hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    /// Its contents (file data, directory entries, a slow symlink's target).
    Data,
    /// Its inode (ext): without it nothing of the file can be found, so all of it counts.
    Inode,
    /// Its block map (ext extent-tree or indirect blocks): all of it counts.
    Map,
    /// Its extended-attribute block (ext): the contents are not affected.
    Xattr,
}

/// A damaged file, directory or symlink (one entry per name: hard links are listed per name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDamage {
    /// Path from the root, no leading slash (raw bytes).
    pub path: Vec<u8>,
    /// The node.
    pub id: NodeId,
    /// Its type (None: its node cannot be read, e.g. its inode is damaged; then its size is
    /// unknown and given as 0).
    pub file_type: Option<FileType>,
    /// Its length in bytes.
    pub size_bytes: u64,
    /// `repairable` or `lost`; `intact` when only the slack after its end is hit.
    pub verdict: Verdict,
    /// What of it is hit.
    pub parts: Vec<Part>,
    /// Byte ranges of its contents that cannot be restored (merged, in order).
    pub lost: Vec<Range<u64>>,
    /// Byte ranges of its contents that the ECC data restores.
    pub repairable: Vec<Range<u64>>,
}

/// What a damaged range that is not a file's hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AreaKind {
    /// Before the payload (an encryption header).
    ContainerHeader,
    /// After the payload (dvdisaster ECC data, trailing bytes).
    EccData,
    /// In the payload, beyond the end of the file system.
    OutsideFileSystem,
    /// ext superblock (primary or backup).
    Superblock,
    /// ext group descriptors (and reserved descriptor blocks).
    GroupDescriptors,
    /// ext block or inode bitmaps.
    Bitmap,
    /// ext inode table (slots of walked inodes are also reported with their files).
    InodeTable,
    /// ext journal.
    Journal,
    /// ext blocks the bitmaps mark free.
    FreeSpace,
    /// ISO9660 system area and volume descriptors.
    VolumeDescriptors,
    /// ISO9660 path tables.
    PathTable,
    /// In use, but by nothing the walk found (ext: reserved blocks, special inodes, unlinked
    /// inodes; ISO9660: boot records, the tree not read, padding).
    OtherMetadata,
    /// The file system could not be read, so what is there is unknown.
    Unknown,
}

/// A damaged range of something other than a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Area {
    /// What it is.
    pub kind: AreaKind,
    /// Payload byte range (image bytes for [`AreaKind::ContainerHeader`] / [`AreaKind::EccData`]).
    pub range: Range<u64>,
    /// Can it be restored?
    pub status: Status,
    /// Which one (`group 3`…), when known.
    pub detail: Option<String>,
}

/// Everything the damage hits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Damage {
    /// The unit of the damage list: 2048 with ECC data, 512 otherwise.
    pub medium_sector_bytes: u64,
    /// The cipher's sector (1 for unencrypted payloads).
    pub cipher_sector_bytes: u64,
    /// The file system's block size (None when no file system was read).
    pub block_bytes: Option<u64>,
    /// Damaged image bytes that the ECC data restores.
    pub repairable_bytes: u64,
    /// Damaged image bytes that cannot be restored.
    pub lost_bytes: u64,
    /// The damaged image ranges, merged.
    pub ranges: Vec<BadRange>,
    /// Damaged files, directories and symlinks, by path.
    pub files: Vec<FileDamage>,
    /// Damaged metadata, free space and areas outside the file system.
    pub areas: Vec<Area>,
    /// Why the picture may be incomplete (the file system could not be read, nodes skipped).
    pub notes: Vec<String>,
}

impl Damage {
    /// (damaged, repairable, lost) entries.
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |v| self.files.iter().filter(|f| f.verdict == v).count();
        let (r, l) = (count(Verdict::Repairable), count(Verdict::Lost));
        (r + l, r, l)
    }

    /// `3 files damaged: 2 repairable, 1 lost`, plus the metadata hit.
    pub fn summary(&self) -> String {
        let (n, r, l) = self.counts();
        let mut s = format!("{n} {} damaged: {r} repairable, {l} lost", if n == 1 { "file" } else { "files" });
        let mut kinds: BTreeMap<AreaKind, Status> = BTreeMap::new();
        for a in &self.areas {
            let e = kinds.entry(a.kind).or_insert(a.status);
            *e = (*e).max(a.status);
        }
        if !kinds.is_empty() {
            let parts: Vec<String> =
                kinds.iter().map(|(k, st)| format!("{} ({})", area_name(*k), status_name(*st))).collect();
            s.push_str(&format!("; also hit: {}", parts.join(", ")));
        }
        s
    }

    /// The lost byte ranges of every damaged node (for `extract --salvage`).
    pub fn lost_by_node(&self) -> BTreeMap<NodeId, Vec<Range<u64>>> {
        self.files.iter().map(|f| (f.id, f.lost.clone())).collect()
    }
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Repairable => "repairable",
        Status::Lost => "lost",
    }
}

/// A human name of an area kind.
pub fn area_name(k: AreaKind) -> &'static str {
    match k {
        AreaKind::ContainerHeader => "container header",
        AreaKind::EccData => "ECC data",
        AreaKind::OutsideFileSystem => "outside the file system",
        AreaKind::Superblock => "superblock",
        AreaKind::GroupDescriptors => "group descriptors",
        AreaKind::Bitmap => "bitmaps",
        AreaKind::InodeTable => "inode table",
        AreaKind::Journal => "journal",
        AreaKind::FreeSpace => "free space",
        AreaKind::VolumeDescriptors => "volume descriptors",
        AreaKind::PathTable => "path table",
        AreaKind::OtherMetadata => "other metadata",
        AreaKind::Unknown => "unknown (file system unreadable)",
    }
}

/// The damaged sectors a dvdisaster check found, with their status: a sector is repairable when
/// its codeword has at most `nroots` erasures (CRC errors and dead-sector markers, anywhere in
/// the image). Sectors of a separate `.ecc` file that are missing cannot be placed in their
/// codeword here, so each counts against every codeword (conservative).
pub fn from_ecc(ecc: &crate::formats::dvdisaster::Ecc, report: &EccReport) -> Vec<BadRange> {
    let sectors: Vec<u64> = report.bad_sectors.iter().chain(&report.missing_sectors).copied().collect();
    from_sectors(Some(ecc), &sectors, report.missing_ecc_file_sectors.len() as u64)
}

/// Damaged 2048-byte image sectors (erasures), repairable when `ecc` is given and their
/// codeword has at most `nroots` erasures (`everywhere` more counted against each), else lost.
pub fn from_sectors(ecc: Option<&crate::formats::dvdisaster::Ecc>, sectors: &[u64], everywhere: u64) -> Vec<BadRange> {
    let mut sectors = sectors.to_vec();
    sectors.sort_unstable();
    sectors.dedup();
    let mut per: HashMap<u64, u64> = HashMap::new();
    if let Some(e) = ecc {
        for &s in &sectors {
            if let Some(c) = e.layout.codeword_of(s) {
                *per.entry(c).or_insert(0) += 1;
            }
        }
    }
    let out: Vec<BadRange> = sectors
        .iter()
        .map(|&s| {
            let ok = ecc.is_some_and(|e| {
                e.layout
                    .codeword_of(s)
                    .is_some_and(|c| per.get(&c).copied().unwrap_or(0) + everywhere <= e.nroots() as u64)
            });
            BadRange {
                range: s * MEDIUM_SECTOR_BYTES..(s + 1) * MEDIUM_SECTOR_BYTES,
                status: if ok { Status::Repairable } else { Status::Lost },
            }
        })
        .collect();
    merge_bad(out)
}

/// The damage `verify` found: the sectors the dvdisaster check found bad or missing (with
/// their status), and the image ranges that could not be read (lost).
pub fn from_checks(opened: &Opened, ecc: Option<&EccReport>, unreadable: Option<&[Range<u64>]>) -> Vec<BadRange> {
    let mut v = match (&opened.ecc, ecc) {
        (Some(e), Some(r)) => from_ecc(e, r),
        _ => Vec::new(),
    };
    v.extend(from_unreadable(unreadable.unwrap_or(&[])));
    merge_bad(v)
}

/// Unreadable image ranges (I/O errors): lost.
pub fn from_unreadable(ranges: &[Range<u64>]) -> Vec<BadRange> {
    merge_bad(ranges.iter().map(|r| BadRange { range: r.clone(), status: Status::Lost }).collect())
}

/// Sort and merge; where a repairable and a lost range overlap, lost wins.
pub fn merge_bad(mut v: Vec<BadRange>) -> Vec<BadRange> {
    let mut lost: Vec<Range<u64>> = v.iter().filter(|b| b.status == Status::Lost).map(|b| b.range.clone()).collect();
    let rep: Vec<Range<u64>> = v.iter().filter(|b| b.status == Status::Repairable).map(|b| b.range.clone()).collect();
    lost = merge(lost);
    let rep = subtract(&merge(rep), &lost);
    v.clear();
    v.extend(lost.into_iter().map(|range| BadRange { range, status: Status::Lost }));
    v.extend(rep.into_iter().map(|range| BadRange { range, status: Status::Repairable }));
    v.sort_by_key(|b| b.range.start);
    v
}

/// Sorted, merged, empty ranges dropped.
pub fn merge(mut v: Vec<Range<u64>>) -> Vec<Range<u64>> {
    v.retain(|r| r.start < r.end);
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(l) if r.start <= l.end => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// `a` without `b` (both merged).
fn subtract(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in a {
        let mut pos = r.start;
        let i = b.partition_point(|x| x.end <= r.start);
        for x in &b[i..] {
            if x.start >= r.end {
                break;
            }
            if x.start > pos {
                out.push(pos..x.start);
            }
            pos = pos.max(x.end);
        }
        if pos < r.end {
            out.push(pos..r.end);
        }
    }
    out
}

/// Who owns a byte range of the file system.
#[derive(Debug, Clone)]
pub(crate) enum Owner {
    /// A node's part; `logical` is the content offset at the range's start (data only).
    Node { node: usize, part: Part, logical: u64 },
    /// Metadata.
    Area { kind: AreaKind, detail: Option<String> },
}

/// One walked node.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub paths: Vec<Vec<u8>>,
    pub id: NodeId,
    /// None when its node cannot be read (then its size is unknown, 0).
    pub file_type: Option<FileType>,
    pub size_bytes: u64,
}

/// Byte ranges of a file system and their owners, plus what owns the rest.
#[derive(Default)]
pub(crate) struct Index {
    pub nodes: Vec<Node>,
    pub owned: Vec<(Range<u64>, Owner)>,
    pub block_bytes: u64,
    pub fs_bytes: u64,
    pub notes: Vec<String>,
}

/// What lies in the bytes no owner claims (ext: free or in use per the bitmaps).
pub(crate) trait Rest {
    /// Split `r` (inside the file system) into areas.
    fn classify(&self, r: Range<u64>) -> Vec<(Range<u64>, AreaKind)>;
}

/// Everything else is "other metadata".
pub(crate) struct AllOther;
impl Rest for AllOther {
    fn classify(&self, r: Range<u64>) -> Vec<(Range<u64>, AreaKind)> {
        vec![(r, AreaKind::OtherMetadata)]
    }
}

/// Walk the tree: every name with its node, nodes shared by hard links once. Unlike
/// [`crate::fs::tree::walk`], a name whose node cannot be read (its inode is damaged) is kept,
/// with an unknown type and size, so damage to it can still be named.
pub(crate) fn walk_nodes(
    fs: &dyn FileSystem,
    interrupt: &crate::progress::Interrupt,
) -> crate::Result<(Vec<Node>, Vec<String>)> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut by_id: HashMap<NodeId, usize> = HashMap::new();
    let mut seen_dirs: HashSet<NodeId> = HashSet::new();
    let root = fs.root();
    let root_stat = fs.stat(root)?;
    nodes.push(Node {
        paths: vec![Vec::new()],
        id: root,
        file_type: Some(FileType::Dir),
        size_bytes: root_stat.size_bytes,
    });
    seen_dirs.insert(root);
    let mut stack: Vec<(NodeId, Vec<u8>, usize)> = vec![(root, Vec::new(), 0)];
    while let Some((dir, dir_path, depth)) = stack.pop() {
        interrupt.check()?;
        let listing = match fs.read_dir(dir) {
            Ok(l) => l,
            Err(e) if e.kind() == crate::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                notes.push(format!("/{}: the directory cannot be read: {e}", String::from_utf8_lossy(&dir_path)));
                continue;
            }
        };
        if !listing.issues.is_empty() && notes.len() < 20 {
            notes.push(format!(
                "/{}: entries may be missing: {}",
                String::from_utf8_lossy(&dir_path),
                listing.issues[0].message
            ));
        }
        for entry in listing.entries {
            if entry.name.is_empty() || entry.name == b"." || entry.name == b".." || entry.name.contains(&b'/') {
                continue;
            }
            let mut path = dir_path.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&entry.name);
            let stat = fs.stat(entry.id).ok();
            let file_type = stat.as_ref().map(|s| s.file_type);
            if file_type != Some(FileType::Dir)
                && let Some(&i) = by_id.get(&entry.id)
            {
                nodes[i].paths.push(path);
                continue;
            }
            if file_type == Some(FileType::Dir) {
                if !seen_dirs.insert(entry.id) || depth + 1 >= crate::fs::tree::MAX_DEPTH {
                    continue;
                }
                stack.push((entry.id, path.clone(), depth + 1));
            }
            by_id.insert(entry.id, nodes.len());
            nodes.push(Node {
                paths: vec![path],
                id: entry.id,
                file_type,
                size_bytes: stat.map_or(0, |s| s.size_bytes),
            });
        }
    }
    Ok((nodes, notes))
}

/// Map `bad` (image byte ranges) through the layers of `opened` to what they hit. `None` when
/// nothing is damaged.
///
/// # Errors
/// `Interrupted`; `Io` when the payload cannot be read at all. A file system that cannot be read
/// is a note, not an error.
pub fn assess(
    opened: &Opened,
    bad: &[BadRange],
    interrupt: &crate::progress::Interrupt,
) -> crate::Result<Option<Damage>> {
    let bad = merge_bad(bad.to_vec());
    if bad.is_empty() {
        return Ok(None);
    }
    let mut d = Damage {
        medium_sector_bytes: if opened.ecc.is_some() { MEDIUM_SECTOR_BYTES } else { 512 },
        cipher_sector_bytes: 1,
        ..Damage::default()
    };
    for b in &bad {
        match b.status {
            Status::Lost => d.lost_bytes += b.range.end - b.range.start,
            Status::Repairable => d.repairable_bytes += b.range.end - b.range.start,
        }
    }
    d.ranges = bad.clone();
    let payload = opened.payload()?;
    let Some((layout, cipher)) = payload else {
        d.notes.push("the payload is locked (no secret given): what the damage hits inside it is unknown".into());
        d.areas.extend(bad.iter().map(|b| Area {
            kind: AreaKind::Unknown,
            range: b.range.clone(),
            status: b.status,
            detail: None,
        }));
        return Ok(Some(d));
    };
    let encrypted =
        !matches!(opened.content, crate::image::Content::Plain { .. } | crate::image::Content::UnknownPlain { .. });
    let unit = if encrypted { cipher.sector_bytes() as u64 } else { 1 };
    d.cipher_sector_bytes = unit;
    let plain = to_payload(&bad, layout.offset_bytes, layout.size_bytes, unit, &mut d.areas);
    if plain.is_empty() {
        return Ok(Some(d));
    }
    let Some(vol) = opened.volume()? else { return Ok(Some(d)) };
    let built: crate::Result<(Index, Box<dyn Rest + '_>)> = match opened.filesystem().map(|f| f.kind) {
        Some(crate::fs::FsKind::Iso9660) => {
            iso::index(&*vol, interrupt).map(|i| (i, Box::new(AllOther) as Box<dyn Rest>))
        }
        Some(crate::fs::FsKind::Ext2 | crate::fs::FsKind::Ext3 | crate::fs::FsKind::Ext4) => {
            ext::index(&*vol, interrupt).map(|(i, b)| (i, Box::new(b) as Box<dyn Rest>))
        }
        _ => Err(crate::Error::unsupported("the payload holds no ext2/3/4 or ISO9660 file system")),
    };
    let (index, rest) = match built {
        Ok(x) => x,
        Err(e) if e.kind() == crate::ErrorKind::Interrupted => return Err(e),
        Err(e) => {
            d.notes.push(format!("what the damage hits inside the payload is unknown: {e}"));
            d.areas.extend(plain.iter().map(|b| Area {
                kind: AreaKind::Unknown,
                range: b.range.clone(),
                status: b.status,
                detail: None,
            }));
            return Ok(Some(d));
        }
    };
    d.block_bytes = Some(index.block_bytes);
    d.notes.extend(index.notes.iter().cloned());
    attribute(&index, &*rest, &plain, &mut d);
    Ok(Some(d))
}

/// Image ranges → payload plaintext ranges (widened to whole cipher sectors, clipped to the
/// payload); what lies outside the payload becomes an area.
fn to_payload(bad: &[BadRange], offset: u64, size: u64, unit: u64, areas: &mut Vec<Area>) -> Vec<BadRange> {
    let end = offset.saturating_add(size);
    let mut out = Vec::new();
    for b in bad {
        let r = &b.range;
        if r.start < offset {
            areas.push(Area {
                kind: AreaKind::ContainerHeader,
                range: r.start..r.end.min(offset),
                status: b.status,
                detail: None,
            });
        }
        if r.end > end {
            areas.push(Area {
                kind: AreaKind::EccData,
                range: r.start.max(end)..r.end,
                status: b.status,
                detail: None,
            });
        }
        let (a, z) = (r.start.max(offset), r.end.min(end));
        if a < z {
            let (a, z) = (a - offset, z - offset);
            let unit = unit.max(1);
            out.push(BadRange {
                range: a / unit * unit..z.div_ceil(unit).saturating_mul(unit).min(size),
                status: b.status,
            });
        }
    }
    merge_bad(out)
}

/// What hits one node: the parts, lost and repairable content ranges, whether a lost range hit
/// a part that is not its data.
type Hit = (Vec<Part>, Vec<Range<u64>>, Vec<Range<u64>>, bool);

/// Give every damaged plaintext range to its owners.
fn attribute(index: &Index, rest: &dyn Rest, plain: &[BadRange], d: &mut Damage) {
    let owners = Owners::new(index);
    // node → (parts, lost, repairable)
    let mut hits: BTreeMap<usize, Hit> = BTreeMap::new();
    let mut areas: Vec<Area> = Vec::new();
    for b in plain {
        let covered = owners.attribute(index, b, &mut hits, &mut areas);
        unowned_areas(index, rest, b, covered, &mut areas);
    }
    file_verdicts(index, hits, d);
    d.files.sort_by(|a, b| a.path.cmp(&b.path));
    merge_areas(areas, d);
}

/// The owned ranges sorted by start, with the running maximum of their ends (ranges may overlap:
/// an inode's slot inside its table), to find the owners of a range quickly.
struct Owners {
    owned: Vec<(Range<u64>, Owner)>,
    max_end: Vec<u64>,
}

impl Owners {
    fn new(index: &Index) -> Owners {
        let mut owned = index.owned.clone();
        owned.sort_by_key(|(r, _)| r.start);
        let mut max_end = Vec::with_capacity(owned.len());
        let mut m = 0u64;
        for (r, _) in &owned {
            m = m.max(r.end);
            max_end.push(m);
        }
        Owners { owned, max_end }
    }

    /// Record what damaged range `b` hits: nodes in `hits`, owned areas in `areas`. Returns the
    /// parts of it that some owner covers.
    fn attribute(
        &self,
        index: &Index,
        b: &BadRange,
        hits: &mut BTreeMap<usize, Hit>,
        areas: &mut Vec<Area>,
    ) -> Vec<Range<u64>> {
        let r = &b.range;
        // Owners starting before r.end whose range reaches past r.start.
        let hi = self.owned.partition_point(|(o, _)| o.start < r.end);
        let mut lo = hi;
        while lo > 0 && self.max_end[lo - 1] > r.start {
            lo -= 1;
        }
        let mut covered: Vec<Range<u64>> = Vec::new();
        for (o, owner) in &self.owned[lo..hi] {
            let (a, z) = (o.start.max(r.start), o.end.min(r.end));
            if a >= z {
                continue;
            }
            covered.push(a..z);
            match owner {
                Owner::Node { node, part, logical } => {
                    let size = index.nodes.get(*node).map_or(0, |n| n.size_bytes);
                    let range = match part {
                        Part::Data => logical + (a - o.start)..(logical + (z - o.start)).min(size),
                        Part::Inode | Part::Map => 0..size,
                        Part::Xattr => 0..0,
                    };
                    let e = hits.entry(*node).or_default();
                    if !e.0.contains(part) {
                        e.0.push(*part);
                    }
                    e.3 |= b.status == Status::Lost && *part != Part::Data;
                    let list = if b.status == Status::Lost { &mut e.1 } else { &mut e.2 };
                    if range.start < range.end {
                        list.push(range);
                    }
                }
                Owner::Area { kind, detail } => {
                    areas.push(Area { kind: *kind, range: a..z, status: b.status, detail: detail.clone() });
                }
            }
        }
        covered
    }
}

/// The parts of damaged range `b` no owner covers: classified by `rest` inside the file system,
/// [`AreaKind::OutsideFileSystem`] past its end.
fn unowned_areas(index: &Index, rest: &dyn Rest, b: &BadRange, covered: Vec<Range<u64>>, areas: &mut Vec<Area>) {
    for gap in subtract(std::slice::from_ref(&b.range), &merge(covered)) {
        let inside = gap.start..gap.end.min(index.fs_bytes);
        if inside.start < inside.end {
            for (g, kind) in rest.classify(inside) {
                areas.push(Area { kind, range: g, status: b.status, detail: None });
            }
        }
        if gap.end > index.fs_bytes {
            areas.push(Area {
                kind: AreaKind::OutsideFileSystem,
                range: gap.start.max(index.fs_bytes)..gap.end,
                status: b.status,
                detail: None,
            });
        }
    }
}

/// A [`FileDamage`] with its verdict for every path of every hit node (up to [`MAX_LISTED`]).
fn file_verdicts(index: &Index, hits: BTreeMap<usize, Hit>, d: &mut Damage) {
    for (node, (mut parts, lost, rep, lost_hit)) in hits {
        let Some(n) = index.nodes.get(node) else { continue };
        parts.sort();
        let lost = merge(lost);
        let repairable = subtract(&merge(rep), &lost);
        // A hit node with nothing in range (a zero-length file's inode) still has its verdict.
        // Only the slack after the end of a file's last block hit: its contents are intact.
        let verdict = if !lost.is_empty() || lost_hit {
            Verdict::Lost
        } else if !repairable.is_empty() || parts.iter().any(|p| *p != Part::Data) {
            Verdict::Repairable
        } else {
            Verdict::Intact
        };
        for p in &n.paths {
            if d.files.len() >= MAX_LISTED {
                break;
            }
            d.files.push(FileDamage {
                path: p.clone(),
                id: n.id,
                file_type: n.file_type,
                size_bytes: n.size_bytes,
                verdict,
                parts: parts.clone(),
                lost: lost.clone(),
                repairable: repairable.clone(),
            });
        }
    }
}

/// Merge adjacent areas of one kind, detail and status into `d.areas` (up to [`MAX_LISTED`]),
/// container and ECC areas last.
fn merge_areas(mut areas: Vec<Area>, d: &mut Damage) {
    areas.sort_by(|a, b| {
        (a.kind, &a.detail, a.status, a.range.start).cmp(&(b.kind, &b.detail, b.status, b.range.start))
    });
    let mut merged: Vec<Area> = Vec::new();
    for a in areas {
        match merged.last_mut() {
            Some(l)
                if l.kind == a.kind && l.detail == a.detail && l.status == a.status && a.range.start <= l.range.end =>
            {
                l.range.end = l.range.end.max(a.range.end)
            }
            _ => merged.push(a),
        }
    }
    merged.sort_by_key(|a| a.range.start);
    merged.truncate(MAX_LISTED);
    d.areas.extend(merged);
    d.areas.sort_by_key(|a| (a.kind == AreaKind::ContainerHeader || a.kind == AreaKind::EccData, a.range.start));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_wins_over_repairable_and_ranges_merge() {
        let v = merge_bad(vec![
            BadRange { range: 0..2048, status: Status::Repairable },
            BadRange { range: 1024..4096, status: Status::Lost },
            BadRange { range: 4096..6144, status: Status::Repairable },
        ]);
        assert_eq!(
            v,
            vec![
                BadRange { range: 0..1024, status: Status::Repairable },
                BadRange { range: 1024..4096, status: Status::Lost },
                BadRange { range: 4096..6144, status: Status::Repairable },
            ]
        );
    }

    #[test]
    fn payload_ranges_widen_to_cipher_sectors() {
        let mut areas = Vec::new();
        let bad = vec![
            BadRange { range: 0..2048, status: Status::Lost },
            BadRange { range: 4096 + 100..4096 + 200, status: Status::Repairable },
            BadRange { range: 10_000..20_000, status: Status::Lost },
        ];
        let p = to_payload(&bad, 1024, 8192, 512, &mut areas);
        assert_eq!(p[0], BadRange { range: 0..1024, status: Status::Lost });
        assert_eq!(p[1], BadRange { range: 3072..3584, status: Status::Repairable });
        assert_eq!(p.len(), 2, "past the payload: ECC data");
        assert_eq!(areas.len(), 2, "{areas:?}");
        assert_eq!(areas[0].kind, AreaKind::ContainerHeader);
        assert_eq!(
            areas[1],
            Area { kind: AreaKind::EccData, range: 10_000..20_000, status: Status::Lost, detail: None }
        );
    }
}
