//! Unit and property tests of [`ExtentMap`] against a byte-granular model.

use super::*;
use proptest::prelude::*;

const U: u64 = 512;

/// What the model says about one 512-byte unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Unknown,
    Hole,
    Ext { physical: u64, flags: u32 },
}

fn model_kind(u: Unit) -> SegKind {
    match u {
        Unit::Unknown => SegKind::Unknown,
        Unit::Hole => SegKind::Zero,
        Unit::Ext { physical, flags } => {
            let e = Extent { logical: 0, physical, length: U, flags: ExtentFlags(flags) };
            match classify(&e, U).0 {
                Class::Mapped => SegKind::Mapped { physical },
                Class::Zero => SegKind::Zero,
                Class::ViaFile => SegKind::ViaFile,
            }
        }
    }
}

fn apply(model: &mut [Unit], range: Range<u64>, extents: &[Extent]) {
    let size = model.len() as u64 * U;
    let (a, b) = (range.start, range.end.min(size));
    if a >= b {
        return;
    }
    for u in a / U..b / U {
        model[u as usize] = Unit::Hole;
    }
    let mut sorted: Vec<&Extent> = extents.iter().collect();
    sorted.sort_by_key(|e| e.logical);
    let mut end = a;
    for e in sorted {
        let (s, t) = (e.logical.max(a), e.logical_end().min(b));
        if s >= t {
            continue;
        }
        if s < end {
            continue;
        }
        end = t;
        for u in s / U..t / U {
            model[u as usize] = Unit::Ext { physical: e.physical + (u * U - e.logical), flags: e.flags.0 };
        }
    }
}

/// The kind of each unit according to the map.
fn expand(map: &ExtentMap) -> Vec<SegKind> {
    let mut out = Vec::new();
    for s in map.segments(0..map.size()) {
        for k in 0..s.length / U {
            out.push(match s.kind {
                SegKind::Mapped { physical } => SegKind::Mapped { physical: physical + k * U },
                other => other,
            });
        }
    }
    out
}

fn flags_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(0x1), Just(0x800), Just(0x2000), Just(0x1000), Just(0x6), Just(0x208)]
}

fn extent_strategy(units: u64) -> impl Strategy<Value = Extent> {
    (0..units, 1..8u64, 0..1000u64, flags_strategy()).prop_map(|(l, n, p, f)| Extent {
        logical: l * U,
        physical: p * U,
        length: n * U,
        flags: ExtentFlags(f),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn fills_agree_with_the_model(
        ops in prop::collection::vec(
            (0..64u64, 1..32u64, prop::collection::vec(extent_strategy(64), 0..6), any::<bool>()),
            1..12,
        )
    ) {
        let units = 64usize;
        let mut map = ExtentMap::new(units as u64 * U, U);
        let mut model = vec![Unit::Unknown; units];
        for (start, len, exts, forget) in ops {
            let r = start * U..(start + len) * U;
            if forget {
                map.forget(r.clone());
                let size = units as u64 * U;
                for u in r.start / U..r.end.min(size) / U {
                    model[u as usize] = Unit::Unknown;
                }
            } else {
                map.fill(r.clone(), &exts);
                apply(&mut model, r, &exts);
            }
            let want: Vec<SegKind> = model.iter().map(|&u| model_kind(u)).collect();
            prop_assert_eq!(expand(&map), want);
            // Sorted, non-overlapping, merged where possible.
            let e: Vec<Extent> = map.extents().collect();
            for w in e.windows(2) {
                prop_assert!(w[0].logical_end() <= w[1].logical);
                let mergeable = w[0].logical_end() == w[1].logical
                    && w[0].physical + w[0].length == w[1].physical
                    && w[0].flags.without(COSMETIC) == w[1].flags.without(COSMETIC);
                prop_assert!(!mergeable, "unmerged neighbours {:?}", w);
            }
            // Coverage agrees with the model.
            for (i, u) in model.iter().enumerate() {
                let c = map.is_covered(i as u64 * U..(i as u64 + 1) * U);
                prop_assert_eq!(c, *u != Unit::Unknown);
            }
        }
    }

    #[test]
    fn lookups_agree_with_segments(exts in prop::collection::vec(extent_strategy(200), 0..40), at in 0..200u64) {
        let map = ExtentMap::complete(200 * U, U, &exts);
        let s = map.lookup(at * U).unwrap();
        let via = map.segments(at * U..at * U + 1);
        prop_assert_eq!(via[0].kind, s.kind);
        prop_assert!(s.length >= 1);
    }
}

/// A skewed map: clusters of tiny extents (crowded buckets, binary-searched) between long
/// extents and holes (empty buckets), as (gap, length) pairs in bytes.
fn skewed_strategy() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec(
        prop_oneof![
            (0..3u64, 1..3u64).prop_map(|(g, l)| (g * U, l * U)),
            (0..1u64 << 20, 1..1u64 << 20).prop_map(|(g, l)| (g * U, l * U)),
        ],
        0..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The bucket table finds the same extent as a binary search of the starts (the lookup
    /// before the table), and `lookup` agrees with a linear scan of the extents, on random
    /// maps — skewed, clustered, with a file size past the last extent — at random offsets and
    /// at every extent's first and last byte.
    #[test]
    fn bucketed_lookup_agrees_with_a_search(pieces in skewed_strategy(), tail in 0..1u64 << 30, probes in prop::collection::vec(any::<u64>(), 64)) {
        let mut exts = Vec::new();
        let mut at = 0u64;
        for (gap, len) in pieces {
            at += gap;
            // Neighbours touching with contiguous physical blocks merge: keep them apart.
            exts.push(Extent { logical: at, physical: 3 * at + 7 * U, length: len, flags: ExtentFlags::default() });
            at += len;
        }
        let size = at + tail * U + U;
        let map = ExtentMap::complete(size, U, &exts);
        let mut offsets: Vec<u64> = probes.iter().map(|p| p % size).collect();
        for e in map.extents() {
            offsets.extend([e.logical, e.logical_end() - 1, e.logical_end()]);
        }
        offsets.push(size - 1);
        let all: Vec<Extent> = map.extents().collect();
        for off in offsets.into_iter().filter(|&o| o < size) {
            let want = map.starts.partition_point(|&s| s <= off).checked_sub(1);
            prop_assert_eq!(map.find(off), want, "offset {}", off);
            // Linear oracle: the extent holding off, else the hole up to the next start.
            let s = map.lookup(off).unwrap();
            match all.iter().find(|e| e.logical <= off && off < e.logical_end()) {
                Some(e) => {
                    prop_assert_eq!(s.kind, SegKind::Mapped { physical: e.physical + (off - e.logical) });
                    prop_assert_eq!(s.length, e.logical_end() - off);
                }
                None => {
                    let next = all.iter().map(|e| e.logical).find(|&l| l > off).unwrap_or(size);
                    prop_assert_eq!(s.kind, SegKind::Zero);
                    prop_assert_eq!(s.length, next - off);
                }
            }
        }
    }
}

#[test]
fn a_map_whose_size_fills_the_offset_space_keeps_its_buckets_in_range() {
    let exts = [
        Extent { logical: 0, physical: 0, length: 4096, flags: ExtentFlags::default() },
        Extent { logical: u64::MAX - 8191, physical: 1 << 20, length: 4096, flags: ExtentFlags::default() },
    ];
    let m = ExtentMap::complete(u64::MAX, 512, &exts);
    assert_eq!(m.lookup(100).unwrap().kind, SegKind::Mapped { physical: 100 });
    assert_eq!(m.lookup(u64::MAX - 8191 + 5).unwrap().kind, SegKind::Mapped { physical: (1 << 20) + 5 });
    assert_eq!(m.lookup(u64::MAX - 4095).unwrap().kind, SegKind::Zero);
    assert_eq!(
        m.lookup(1 << 40).unwrap(),
        Segment { logical: 1 << 40, length: u64::MAX - 8191 - (1 << 40), kind: SegKind::Zero }
    );
}

#[test]
fn bodies_pack_into_20_bytes() {
    assert_eq!(size_of::<Body>(), 20);
    let b = Body::new(0x1234_5678_9abc, MAX_PIECE, 0x2001, CLASS_VIA_FILE);
    assert_eq!((b.physical(), b.length(), b.flags, b.class()), (0x1234_5678_9abc, MAX_PIECE, 0x2001, CLASS_VIA_FILE));
}

#[test]
fn classification_by_flag() {
    let e = |f: ExtentFlags, p: u64| Extent { logical: 0, physical: p, length: 4096, flags: f };
    assert_eq!(classify(&e(ExtentFlags::LAST, 8192), 512).0, Class::Mapped);
    assert_eq!(classify(&e(ExtentFlags::MERGED, 8192), 512).0, Class::Mapped);
    assert_eq!(classify(&e(ExtentFlags::UNWRITTEN, 8192), 512).0, Class::Zero);
    for f in [
        ExtentFlags::SHARED,
        ExtentFlags::DELALLOC.union(ExtentFlags::UNKNOWN),
        ExtentFlags::ENCODED,
        ExtentFlags::DATA_INLINE.union(ExtentFlags::NOT_ALIGNED),
        ExtentFlags::DATA_TAIL,
        ExtentFlags::DATA_ENCRYPTED.union(ExtentFlags::ENCODED),
        // shared beats unwritten: writes must never touch another file's blocks
        ExtentFlags::SHARED.union(ExtentFlags::UNWRITTEN),
    ] {
        assert_eq!(classify(&e(f, 8192), 512).0, Class::ViaFile, "{f:?}");
    }
    assert_eq!(classify(&e(ExtentFlags::LAST, 8192 + 1), 512).0, Class::ViaFile);
    assert_eq!(classify(&e(ExtentFlags::LAST, 8192 + 512), 4096).0, Class::ViaFile);
}

#[test]
fn flag_names_follow_filefrag() {
    let f = ExtentFlags::from_bits(0x1 | 0x800 | 0x4000_0000);
    assert_eq!(f.names(), ["last", "unwritten", "0x40000000"]);
}

#[test]
fn holes_unknown_and_past_eof() {
    let mut m = ExtentMap::new(10 * U, U);
    assert_eq!(m.segments(0..10 * U), [Segment { logical: 0, length: 10 * U, kind: SegKind::Unknown }]);
    m.fill(2 * U..6 * U, &[Extent { logical: 0, physical: 100 * U, length: 4 * U, flags: ExtentFlags::LAST }]);
    assert_eq!(
        m.segments(0..20 * U),
        [
            Segment { logical: 0, length: 2 * U, kind: SegKind::Unknown },
            Segment { logical: 2 * U, length: 2 * U, kind: SegKind::Mapped { physical: 102 * U } },
            Segment { logical: 4 * U, length: 2 * U, kind: SegKind::Zero },
            Segment { logical: 6 * U, length: 4 * U, kind: SegKind::Unknown },
        ]
    );
    assert_eq!(m.uncovered(0..10 * U), [0..2 * U, 6 * U..10 * U]);
    assert!(m.lookup(10 * U).is_none());
}

#[test]
fn a_million_extents_take_32_bytes_each() {
    let n = 1_000_000u64;
    let exts: Vec<Extent> = (0..n)
        .map(|i| Extent { logical: i * 8192, physical: i * 16384, length: 4096, flags: ExtentFlags::default() })
        .collect();
    let mut m = ExtentMap::new(n * 8192, 512);
    m.fill(0..n * 8192, &exts);
    assert_eq!(m.len(), n as usize);
    m.starts.shrink_to_fit();
    m.bodies.shrink_to_fit();
    m.buckets.shrink_to_fit();
    assert!(m.heap_bytes() <= 32 * n as usize, "{} bytes", m.heap_bytes());
    assert_eq!(m.lookup(5 * 8192 + 100).unwrap().kind, SegKind::Mapped { physical: 5 * 16384 + 100 });
    assert_eq!(m.lookup(5 * 8192 + 4096).unwrap().kind, SegKind::Zero);
}
