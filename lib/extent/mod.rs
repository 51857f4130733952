//! The extent model shared by everything that maps a file's logical bytes to physical bytes:
//! FIEMAP of a live file ([`fiemap`]), the ext reader's block maps, and the remap engine.
//!
//! An [`Extent`] is `{logical, physical, length, flags}` in bytes with FIEMAP's flag bits. An
//! [`ExtentMap`] keeps extents sorted and merged, knows which logical ranges it has been told
//! about (`covered`: lazily filled maps leave the rest unknown), and answers
//! [`ExtentMap::segments`]: a range cut into pieces that are [`SegKind::Mapped`] (safe for raw
//! device I/O), [`SegKind::Zero`] (hole or unwritten: reads are zeros, writes must go through the
//! file system), [`SegKind::ViaFile`] (shared, encoded, inline, delalloc, unaligned, …: all I/O
//! through the file) or [`SegKind::Unknown`] (not filled yet).
//!
//! Memory: 30 bytes per extent (an 8-byte start array, a packed 20-byte body, and a bucket table
//! of about one 4-byte entry per two extents), so a map of one million extents takes 30 MB. A
//! lookup needs no search in the common case: the offset's bucket (its high bits) names the
//! first extent starting in it, a few starts after that are counted, and the body's cache lines
//! are prefetched meanwhile — three dependent memory accesses (bucket, starts, body) instead of a
//! binary search's ~20. A bucket holding many starts (a crowded stretch of a skewed map) is
//! binary-searched, so no lookup is slower than a binary search of that bucket.

pub mod fiemap;

use std::fmt;
use std::ops::Range;

/// FIEMAP extent flags (`FIEMAP_EXTENT_*`, `include/uapi/linux/fiemap.h`); unknown bits are kept.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ExtentFlags(u32);

impl ExtentFlags {
    /// The last extent of the file.
    pub const LAST: Self = Self(0x1);
    /// Location unknown (no storage allocated yet).
    pub const UNKNOWN: Self = Self(0x2);
    /// Delayed allocation (also sets UNKNOWN).
    pub const DELALLOC: Self = Self(0x4);
    /// Not plain file-system blocks (compressed…): raw reads are undefined.
    pub const ENCODED: Self = Self(0x8);
    /// File-system encryption (also sets ENCODED).
    pub const DATA_ENCRYPTED: Self = Self(0x80);
    /// Offsets may not be block aligned.
    pub const NOT_ALIGNED: Self = Self(0x100);
    /// Data inside a metadata block (also sets NOT_ALIGNED).
    pub const DATA_INLINE: Self = Self(0x200);
    /// Block shared with other files' tails (also sets NOT_ALIGNED).
    pub const DATA_TAIL: Self = Self(0x400);
    /// Allocated but never written: reads as zeros through the file system.
    pub const UNWRITTEN: Self = Self(0x800);
    /// Merged from block-mapped (ext2/3-style) pieces.
    pub const MERGED: Self = Self(0x1000);
    /// Space shared with other files (reflink, snapshot).
    pub const SHARED: Self = Self(0x2000);

    const NAMES: [(u32, &'static str); 11] = [
        (0x1, "last"),
        (0x2, "unknown_loc"),
        (0x4, "delalloc"),
        (0x8, "encoded"),
        (0x80, "encrypted"),
        (0x100, "not_aligned"),
        (0x200, "inline"),
        (0x400, "tail_packed"),
        (0x800, "unwritten"),
        (0x1000, "merged"),
        (0x2000, "shared"),
    ];

    /// From raw FIEMAP bits (unknown bits are kept and reported).
    pub const fn from_bits(bits: u32) -> Self {
        Self(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// These flags plus `other`'s.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// These flags without `other`'s.
    #[must_use]
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    /// Every set flag by name (filefrag's names; `0x…` for bits without one), in bit order.
    pub fn names(self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = self.0;
        for (bit, name) in Self::NAMES {
            if rest & bit != 0 {
                out.push(name.to_string());
                rest &= !bit;
            }
        }
        for i in 0..32 {
            if rest & (1 << i) != 0 {
                out.push(format!("{:#x}", 1u32 << i));
            }
        }
        out
    }
}

impl fmt::Debug for ExtentFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExtentFlags({})", self.names().join(","))
    }
}

/// A contiguous piece of a file: `length` bytes at file offset `logical` live at byte
/// `physical` of the device (or of the image, for the ext reader).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset in the file.
    pub logical: u64,
    /// Byte offset on the device.
    pub physical: u64,
    /// Length in bytes.
    pub length: u64,
    /// FIEMAP flags.
    pub flags: ExtentFlags,
}

impl Extent {
    /// One past the last logical byte.
    pub fn logical_end(&self) -> u64 {
        self.logical.saturating_add(self.length)
    }
}

/// How a range of the file may be accessed behind the file system's back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Plain allocated, written blocks: raw device I/O at the physical offset is safe.
    Mapped,
    /// A hole or an unwritten extent: reads return zeros; writes must go through the file.
    Zero,
    /// Everything else (shared, encoded, inline, delalloc, unaligned…): through the file only.
    ViaFile,
}

impl Class {
    /// Stable lower-case name (JSON).
    pub fn name(self) -> &'static str {
        match self {
            Class::Mapped => "mapped",
            Class::Zero => "zero",
            Class::ViaFile => "via-file",
        }
    }
}

/// Every FIEMAP flag bit this code knows the meaning of.
pub const KNOWN_FLAGS: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800 | 0x1000 | 0x2000;

/// Classify an extent by its flags and alignment: the class and, unless mapped, why.
/// `align` is the device's logical block size (raw I/O needs it). A flag bit this code does not
/// know (a future kernel's) makes the extent via-file: it might mean "not plain blocks".
pub fn classify(e: &Extent, align: u64) -> (Class, &'static str) {
    let f = e.flags;
    if f.bits() & !KNOWN_FLAGS != 0 {
        return (Class::ViaFile, "a FIEMAP flag this version does not know");
    }
    let checks: [(ExtentFlags, &str); 8] = [
        (ExtentFlags::DELALLOC, "delayed allocation (not on disk yet)"),
        (ExtentFlags::UNKNOWN, "location unknown"),
        (ExtentFlags::DATA_ENCRYPTED, "encrypted by the file system"),
        (ExtentFlags::ENCODED, "encoded (compressed or transformed) data"),
        (ExtentFlags::DATA_INLINE, "data inline in metadata"),
        (ExtentFlags::DATA_TAIL, "tail packed with other files"),
        (ExtentFlags::NOT_ALIGNED, "not block aligned"),
        (ExtentFlags::SHARED, "shared with other files (reflink or snapshot)"),
    ];
    for (flag, why) in checks {
        if f.intersects(flag) {
            return (Class::ViaFile, why);
        }
    }
    if f.contains(ExtentFlags::UNWRITTEN) {
        return (Class::Zero, "unwritten (preallocated)");
    }
    let align = align.max(1);
    if !e.physical.is_multiple_of(align) || !e.logical.is_multiple_of(align) || !e.length.is_multiple_of(align) {
        return (Class::ViaFile, "not aligned to the device's logical block size");
    }
    (Class::Mapped, "")
}

/// Fail closed on what FIEMAP leaves out: every gap of `range` between (or around) `extents`
/// (sorted, not overlapping, as [`fiemap::query`] returns them) for which `has_data(gap)` is
/// true becomes an [`ExtentFlags::UNKNOWN`] extent (via file) instead of a hole. `has_data` is
/// the second opinion (`SEEK_DATA` for a live file); it should answer true when unsure.
pub fn close_gaps(
    range: Range<u64>,
    extents: Vec<Extent>,
    mut has_data: impl FnMut(Range<u64>) -> bool,
) -> Vec<Extent> {
    let mut out = Vec::with_capacity(extents.len() + 1);
    let mut pos = range.start;
    let mut check = |a: u64, b: u64, out: &mut Vec<Extent>| {
        if a < b && has_data(a..b) {
            out.push(Extent { logical: a, physical: 0, length: b - a, flags: ExtentFlags::UNKNOWN });
        }
    };
    for e in extents {
        check(pos, e.logical.min(range.end), &mut out);
        pos = pos.max(e.logical_end());
        out.push(e);
    }
    check(pos, range.end, &mut out);
    out
}

/// What a piece of a requested range is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegKind {
    /// Raw device I/O at `physical` (for the segment's first byte).
    Mapped {
        /// Device byte offset of the segment's first byte.
        physical: u64,
    },
    /// Reads are zeros (hole or unwritten); writes go through the file.
    Zero,
    /// All I/O through the file.
    ViaFile,
    /// Not filled in yet (lazy maps).
    Unknown,
}

/// A piece of a range: `length` bytes from file offset `logical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Byte offset in the file.
    pub logical: u64,
    /// Length in bytes.
    pub length: u64,
    /// How to do I/O on it.
    pub kind: SegKind,
}

/// The stored part of an extent (its start lives in `ExtentMap::starts`): 20 bytes, 4-byte
/// aligned, so with the 8-byte start an extent costs 28 bytes (29 with the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Body {
    physical: [u32; 2],
    length_lo: u32,
    /// Bits 0..16: length bits 32..48; bits 16..18: class.
    length_hi_class: u32,
    flags: u32,
}

/// Longest extent stored in one piece (2^48 − 1 bytes); longer ones are split.
const MAX_PIECE: u64 = (1 << 48) - 1;

impl Body {
    fn new(physical: u64, length: u64, flags: u32, class: u8) -> Body {
        debug_assert!(length <= MAX_PIECE);
        Body {
            physical: [physical as u32, (physical >> 32) as u32],
            length_lo: length as u32,
            length_hi_class: ((length >> 32) as u32 & 0xFFFF) | (u32::from(class) << 16),
            flags,
        }
    }
    fn physical(&self) -> u64 {
        u64::from(self.physical[0]) | (u64::from(self.physical[1]) << 32)
    }
    fn length(&self) -> u64 {
        u64::from(self.length_lo) | (u64::from(self.length_hi_class & 0xFFFF) << 32)
    }
    fn class(&self) -> u8 {
        (self.length_hi_class >> 16) as u8
    }
}

const CLASS_MAPPED: u8 = 0;
const CLASS_ZERO: u8 = 1;
const CLASS_VIA_FILE: u8 = 2;

fn class_code(c: Class) -> u8 {
    match c {
        Class::Mapped => CLASS_MAPPED,
        Class::Zero => CLASS_ZERO,
        Class::ViaFile => CLASS_VIA_FILE,
    }
}

/// Buckets are sized for about this many extents each (two: the table costs 2 bytes per
/// extent, and a lookup counts at most [`BUCKET_SCAN`] starts in the usual case).
const EXTENTS_PER_BUCKET: u64 = 2;

/// A bucket with at most this many starts is counted without a search (one cache line of starts).
const BUCKET_SCAN: usize = 4;

/// Flags that do not change how an extent may be used (merging ignores them).
const COSMETIC: ExtentFlags = ExtentFlags::LAST.union(ExtentFlags::MERGED);

/// Sorted, merged, possibly partial extent map of one file of `size` bytes.
#[derive(Debug, Clone)]
pub struct ExtentMap {
    size: u64,
    align: u64,
    starts: Vec<u64>,
    bodies: Vec<Body>,
    /// `buckets[b]`: how many starts are `<= b << shift` (so the extent holding an offset in
    /// bucket b is among `buckets[b] - 1 ..= buckets[b + 1] - 1`); one more entry than buckets.
    /// Empty when the map is empty or has more than `u32::MAX` extents (then lookups
    /// binary-search the starts).
    buckets: Vec<u32>,
    /// log2 of the bucket width in bytes.
    shift: u32,
    covered: Vec<Range<u64>>,
}

impl ExtentMap {
    /// An empty map (nothing known yet) of a `size`-byte file on a device whose logical block
    /// size is `align`.
    pub fn new(size: u64, align: u64) -> ExtentMap {
        ExtentMap {
            size,
            align: align.max(1),
            starts: Vec::new(),
            bodies: Vec::new(),
            buckets: Vec::new(),
            shift: 63,
            covered: Vec::new(),
        }
    }

    /// A complete map from `extents` (everything else in `0..size` is a hole).
    pub fn complete(size: u64, align: u64, extents: &[Extent]) -> ExtentMap {
        let mut m = ExtentMap::new(size, align);
        m.fill(0..size, extents);
        m
    }

    /// The file size the map covers.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of (merged) extents stored.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether no extent is stored.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Heap bytes used by the extents (capacity, not length).
    pub fn heap_bytes(&self) -> usize {
        self.starts.capacity() * size_of::<u64>()
            + self.bodies.capacity() * size_of::<Body>()
            + self.buckets.capacity() * size_of::<u32>()
            + self.covered.capacity() * size_of::<Range<u64>>()
    }

    /// The ranges whose extents are known.
    pub fn covered(&self) -> &[Range<u64>] {
        &self.covered
    }

    /// Whether all of `range` (clamped to the size) is known.
    pub fn is_covered(&self, range: Range<u64>) -> bool {
        let (a, b) = (range.start, range.end.min(self.size));
        if a >= b {
            return true;
        }
        let i = self.covered.partition_point(|r| r.end <= a);
        self.covered.get(i).is_some_and(|r| r.start <= a && r.end >= b)
    }

    /// The parts of `range` (clamped to the size) that are not known yet.
    pub fn uncovered(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let (mut a, b) = (range.start, range.end.min(self.size));
        let mut out = Vec::new();
        let mut i = self.covered.partition_point(|r| r.end <= a);
        while a < b {
            match self.covered.get(i) {
                Some(r) if r.start <= a => {
                    a = r.end;
                    i += 1;
                }
                Some(r) => {
                    let e = r.start.min(b);
                    out.push(a..e);
                    a = e;
                }
                None => {
                    out.push(a..b);
                    a = b;
                }
            }
        }
        out
    }

    /// Every stored extent, in logical order.
    pub fn extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.starts.iter().zip(&self.bodies).map(|(&logical, b)| Extent {
            logical,
            physical: b.physical(),
            length: b.length(),
            flags: ExtentFlags(b.flags),
        })
    }

    /// Replace what is known about `range` (clamped to the size) with `extents`: the parts of
    /// `extents` inside the range are stored (clipped), everything else in the range becomes a
    /// hole, and the range is marked known. Overlapping or unsorted input is tolerated (later
    /// overlapping pieces are dropped).
    pub fn fill(&mut self, range: Range<u64>, extents: &[Extent]) {
        let (a, b) = (range.start, range.end.min(self.size));
        if a >= b {
            return;
        }
        // Clip the new extents to [a, b), sorted, without overlaps.
        let mut sorted: Vec<&Extent> = extents.iter().collect();
        sorted.sort_by_key(|e| e.logical);
        let mut new: Vec<Extent> = sorted
            .into_iter()
            .filter_map(|e| {
                let s = e.logical.max(a);
                let t = e.logical_end().min(b);
                (s < t).then(|| Extent {
                    logical: s,
                    physical: e.physical.saturating_add(s - e.logical),
                    length: t - s,
                    flags: e.flags,
                })
            })
            .collect();
        let mut end = a;
        new.retain(|e| {
            let keep = e.logical >= end;
            if keep {
                end = e.logical_end();
            }
            keep
        });
        // Existing extents overlapping [a, b): keep their parts outside.
        let lo = self.starts.partition_point(|&s| s < a);
        let lo = if lo > 0 && self.starts[lo - 1] + self.bodies[lo - 1].length() > a { lo - 1 } else { lo };
        let hi = self.starts.partition_point(|&s| s < b);
        let mut repl: Vec<Extent> = Vec::with_capacity(new.len() + 2);
        if lo < hi {
            let first = self.get(lo);
            if first.logical < a {
                repl.push(Extent { length: a - first.logical, ..first });
            }
        }
        repl.extend(new);
        if lo < hi {
            let last = self.get(hi - 1);
            if last.logical_end() > b {
                let cut = b - last.logical;
                repl.push(Extent { logical: b, physical: last.physical + cut, length: last.length - cut, ..last });
            }
        }
        // Pieces longer than MAX_PIECE are split (never happens with real file systems).
        let align = self.align;
        let mut starts: Vec<u64> = Vec::with_capacity(repl.len());
        let mut bodies: Vec<Body> = Vec::with_capacity(repl.len());
        for e in &repl {
            let class = class_code(classify(e, align).0);
            let mut done = 0u64;
            while done < e.length {
                let n = (e.length - done).min(MAX_PIECE / align * align);
                starts.push(e.logical + done);
                bodies.push(Body::new(e.physical.saturating_add(done), n, e.flags.0, class));
                done += n;
            }
        }
        let added = starts.len();
        self.starts.splice(lo..hi, starts);
        self.bodies.splice(lo..hi, bodies);
        self.add_covered(a..b);
        // Merge around the replaced stretch.
        let from = lo.saturating_sub(1);
        let to = (lo + added + 1).min(self.starts.len());
        self.merge_between(from, to);
        self.rebuild_index();
    }

    fn rebuild_index(&mut self) {
        self.buckets.clear();
        let n = self.starts.len() as u64;
        if n == 0 || self.size == 0 || n > u64::from(u32::MAX) {
            self.buckets.shrink_to_fit();
            self.shift = 63;
            return;
        }
        // The narrowest power-of-two width giving at most n / EXTENTS_PER_BUCKET buckets.
        let want = (n / EXTENTS_PER_BUCKET).max(1);
        let mut shift = 0u32;
        while shift < 63 && ((self.size - 1) >> shift) >= want {
            shift += 1;
        }
        self.shift = shift;
        let count = ((self.size - 1) >> shift) as usize + 2;
        self.buckets.reserve_exact(count);
        let mut i = 0usize;
        for b in 0..count as u64 {
            // The bucket's first byte (past u64::MAX for the last entry of a huge file: all).
            let at = b.checked_shl(shift).filter(|v| v >> shift == b).unwrap_or(u64::MAX);
            while self.starts.get(i).is_some_and(|&s| s <= at) {
                i += 1;
            }
            // i <= n <= u32::MAX (checked above).
            self.buckets.push(i as u32);
        }
    }

    /// Index of the last extent starting at or before `offset`, if any.
    fn find(&self, offset: u64) -> Option<usize> {
        let b = usize::try_from(offset >> self.shift).ok();
        let (Some(&t0), Some(&t1)) = (b.and_then(|b| self.buckets.get(b)), b.and_then(|b| self.buckets.get(b + 1)))
        else {
            return self.starts.partition_point(|&s| s <= offset).checked_sub(1);
        };
        let (t0, t1) = (t0 as usize, t1 as usize);
        let rank = if t1.saturating_sub(t0) <= BUCKET_SCAN {
            // The answer's start and body are at t0 - 1 ..= t0 + 1 in the usual case: start
            // loading them now, while the starts are counted.
            if let Some(s) = self.starts.get(t0) {
                crate::sys::prefetch(s);
            }
            if let Some(b) = self.bodies.get(t0.saturating_sub(1)) {
                crate::sys::prefetch(b);
            }
            if let Some(b) = self.bodies.get(t0 + 1) {
                crate::sys::prefetch(b);
            }
            // A fixed trip count (no branch on the data): the count of starts <= offset.
            let mut r = t0;
            for j in 0..BUCKET_SCAN {
                r += usize::from(t0 + j < t1 && self.starts.get(t0 + j).is_some_and(|&s| s <= offset));
            }
            r
        } else {
            t0 + self.starts.get(t0..t1).map_or(0, |w| w.partition_point(|&s| s <= offset))
        };
        rank.checked_sub(1)
    }

    /// Forget what is known about `range` (it becomes unknown again).
    pub fn forget(&mut self, range: Range<u64>) {
        let (a, b) = (range.start, range.end.min(self.size));
        if a >= b {
            return;
        }
        self.fill(a..b, &[]);
        let mut out = Vec::with_capacity(self.covered.len() + 1);
        for r in self.covered.drain(..) {
            if r.end <= a || r.start >= b {
                out.push(r);
            } else {
                if r.start < a {
                    out.push(r.start..a);
                }
                if r.end > b {
                    out.push(b..r.end);
                }
            }
        }
        self.covered = out;
    }

    fn get(&self, i: usize) -> Extent {
        let b = self.bodies[i];
        Extent { logical: self.starts[i], physical: b.physical(), length: b.length(), flags: ExtentFlags(b.flags) }
    }

    fn add_covered(&mut self, r: Range<u64>) {
        let i = self.covered.partition_point(|c| c.end < r.start);
        let mut j = i;
        let (mut s, mut e) = (r.start, r.end);
        while j < self.covered.len() && self.covered[j].start <= e {
            s = s.min(self.covered[j].start);
            e = e.max(self.covered[j].end);
            j += 1;
        }
        self.covered.splice(i..j, std::iter::once(s..e));
    }

    /// Merge adjacent compatible extents with indexes in `from..to` (one compacting pass).
    fn merge_between(&mut self, from: usize, to: usize) {
        if to <= from + 1 {
            return;
        }
        let mut w = from;
        for r in from + 1..to {
            let (x, y) = (self.get(w), self.get(r));
            let same = x.flags.without(COSMETIC) == y.flags.without(COSMETIC);
            let fits = x.length.checked_add(y.length).is_some_and(|n| n <= MAX_PIECE);
            if same && fits && x.logical_end() == y.logical && x.physical.checked_add(x.length) == Some(y.physical) {
                let flags = x.flags.without(ExtentFlags::LAST).union(ExtentFlags(y.flags.0 & ExtentFlags::LAST.0));
                let class = self.bodies[w].class();
                self.bodies[w] = Body::new(x.physical, x.length + y.length, flags.0, class);
            } else {
                w += 1;
                self.starts[w] = self.starts[r];
                self.bodies[w] = self.bodies[r];
            }
        }
        self.starts.drain(w + 1..to);
        self.bodies.drain(w + 1..to);
    }

    /// The segment at byte `offset` (clamped to one stored extent or gap; `None` past the end).
    pub fn lookup(&self, offset: u64) -> Option<Segment> {
        if offset >= self.size {
            return None;
        }
        let found = self.find(offset);
        let (kind, end) = match found {
            Some(k) if self.starts[k] + self.bodies[k].length() > offset => {
                let b = &self.bodies[k];
                let end = self.starts[k] + b.length();
                let kind = match b.class() {
                    CLASS_MAPPED => SegKind::Mapped { physical: b.physical() + (offset - self.starts[k]) },
                    CLASS_ZERO => SegKind::Zero,
                    _ => SegKind::ViaFile,
                };
                (kind, end)
            }
            _ => {
                let i = found.map_or(0, |k| k + 1);
                let next = self.starts.get(i).copied().unwrap_or(self.size).min(self.size);
                (SegKind::Zero, next)
            }
        };
        let end = end.min(self.size);
        // The gap or extent may be partly unknown: cut at the coverage boundary.
        let c = self.covered.partition_point(|r| r.end <= offset);
        match self.covered.get(c) {
            Some(r) if r.start <= offset => Some(Segment { logical: offset, length: end.min(r.end) - offset, kind }),
            next => {
                let stop = next.map_or(self.size, |r| r.start).min(self.size);
                Some(Segment { logical: offset, length: stop - offset, kind: SegKind::Unknown })
            }
        }
    }

    /// Cut `range` (clamped to the size) into segments, appended to `out` in order; they cover
    /// the clamped range exactly. Adjacent segments of the same kind are not merged.
    pub fn segments_into(&self, range: Range<u64>, out: &mut Vec<Segment>) {
        let (mut a, b) = (range.start, range.end.min(self.size));
        while a < b {
            let Some(mut s) = self.lookup(a) else { break };
            s.length = s.length.min(b - a);
            if s.length == 0 {
                break;
            }
            a += s.length;
            out.push(s);
        }
    }

    /// [`ExtentMap::segments_into`] into a new vector.
    pub fn segments(&self, range: Range<u64>) -> Vec<Segment> {
        let mut v = Vec::new();
        self.segments_into(range, &mut v);
        v
    }
}

#[cfg(test)]
mod tests;
