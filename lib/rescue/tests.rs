//! The rescue algorithm against a fault-injecting source: bad, slow and intermittently failing
//! sectors, interruptions and resumes, early stop.

use super::*;
use crate::progress::Interrupt;
use std::collections::HashMap;

const SECTOR: u64 = 2048;

/// A source of `sectors` sectors whose content is a function of the position, with faults.
#[derive(Default)]
struct Faulty {
    sectors: u64,
    /// Sectors that always fail.
    bad: Vec<std::ops::Range<u64>>,
    /// Sectors that fail this many times, then read.
    flaky: HashMap<u64, u32>,
    /// Sectors whose reads are slow (the read sleeps).
    slow: Vec<std::ops::Range<u64>>,
    slow_for: Duration,
    /// Every read: (first sector, sector count, ok).
    log: Vec<(u64, u64, bool)>,
    /// Trigger this interrupt at the given read number.
    interrupt_at: Option<(u64, Interrupt)>,
}

fn byte_at(pos: u64) -> u8 {
    (pos.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (pos >> 11) as u8
}

impl Faulty {
    fn new(sectors: u64) -> Faulty {
        Faulty { sectors, slow_for: Duration::from_millis(30), ..Default::default() }
    }
    fn sector_fails(&mut self, s: u64) -> bool {
        if self.bad.iter().any(|r| r.contains(&s)) {
            return true;
        }
        if let Some(n) = self.flaky.get_mut(&s)
            && *n > 0
        {
            *n -= 1;
            return true;
        }
        false
    }
}

impl RescueSource for Faulty {
    fn size(&self) -> u64 {
        self.sectors * SECTOR
    }
    fn read_at(&mut self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        assert!(pos.is_multiple_of(SECTOR), "reads are sector-aligned");
        assert!(pos + buf.len() as u64 <= self.size(), "reads stay inside the source");
        if let Some((n, i)) = &self.interrupt_at
            && self.log.len() as u64 == *n
        {
            i.trigger();
        }
        let first = pos / SECTOR;
        let count = (buf.len() as u64).div_ceil(SECTOR);
        if (first..first + count).any(|s| self.slow.iter().any(|r| r.contains(&s))) {
            std::thread::sleep(self.slow_for);
        }
        // A drive returns nothing for a request that hits a bad sector (like a SCSI read error),
        // except when the bad sector is not the first: then emulate a short read up to it.
        let mut good = 0u64;
        for s in first..first + count {
            if self.sector_fails(s) {
                break;
            }
            good += 1;
        }
        let ok = good == count;
        self.log.push((first, count, ok));
        let n = ((good * SECTOR) as usize).min(buf.len());
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = byte_at(pos + i as u64);
        }
        if n == 0 && !ok { Err(io::Error::from_raw_os_error(libc::EIO)) } else { Ok(n) }
    }
}

fn out_file(len: u64) -> File {
    let p =
        std::env::temp_dir().join(format!("loopkit-rescue-{}-{:?}", std::process::id(), std::thread::current().id()));
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).expect("temp file");
    std::fs::remove_file(&p).expect("unlink");
    f.set_len(len).expect("size");
    f
}

#[derive(Default)]
struct Recorder {
    saves: u32,
    saved: Option<RescueMap>,
    /// "Enough" when at most this many bytes are neither finished nor ... (None: never).
    enough_when_missing_at_most: Option<u64>,
}

impl Hooks for Recorder {
    fn enough(&mut self, map: &RescueMap, _at_phase_end: bool) -> bool {
        self.enough_when_missing_at_most.is_some_and(|limit| {
            map.size() - map.bytes_in(Status::Finished) <= limit && map.bytes_in(Status::NonTried) == 0
        })
    }
    fn save(&mut self, map: &RescueMap) -> crate::Result<()> {
        self.saves += 1;
        self.saved = Some(map.clone());
        Ok(())
    }
}

fn opts(sectors: u64) -> Options {
    let mut o = Options::for_device(SECTOR, sectors * SECTOR);
    o.skip_min = 4 * o.cluster;
    o.skip_max = 64 * o.cluster;
    o
}

/// Every finished byte of `out` equals the source; returns the finished byte count.
fn check_output(out: &File, map: &RescueMap) -> u64 {
    let mut buf = vec![0u8; map.size() as usize];
    out.read_exact_at(&mut buf, 0).expect("read output");
    for b in map.blocks().filter(|b| b.status == Status::Finished) {
        for p in b.pos..b.end() {
            assert_eq!(buf[p as usize], byte_at(p), "byte {p} of a finished block");
        }
    }
    map.bytes_in(Status::Finished)
}

fn run(
    src: &mut Faulty,
    map: RescueMap,
    o: Options,
    hooks: &mut Recorder,
    interrupt: &Interrupt,
) -> (Stop, RescueMap, Stats, File) {
    let out = out_file(src.size());
    let (stop, map, stats) = {
        let mut r = Rescue::new(src, &out, map, o).expect("rescue");
        let stop =
            r.run(hooks, &mut crate::progress::Run::new(&mut crate::progress::NoProgress, interrupt)).expect("run");
        (stop, r.map.clone(), r.stats.clone())
    };
    (stop, map, stats, out)
}

#[test]
fn a_clean_source_is_read_once_in_clusters() {
    let mut src = Faulty::new(1000);
    let (stop, map, stats, out) =
        run(&mut src, RescueMap::new(1000 * SECTOR), opts(1000), &mut Recorder::default(), &Interrupt::new());
    assert_eq!(stop, Stop::Complete);
    assert!(map.is_complete());
    assert_eq!(map.phase, Phase::Finished);
    assert_eq!(check_output(&out, &map), 1000 * SECTOR);
    assert_eq!(stats.reads, 1000_u64.div_ceil(32));
    assert_eq!(stats.phases, ["copy"]);
}

#[test]
fn a_bad_zone_ends_as_exactly_its_sectors() {
    let mut src = Faulty::new(4000);
    src.bad = vec![1000..1300, 2500..2501];
    let (stop, map, stats, out) =
        run(&mut src, RescueMap::new(4000 * SECTOR), opts(4000), &mut Recorder::default(), &Interrupt::new());
    assert_eq!(stop, Stop::Exhausted);
    let bad: Vec<(u64, u64)> = map.blocks_in(Status::Bad).iter().map(|b| (b.pos / SECTOR, b.size / SECTOR)).collect();
    assert_eq!(bad, [(1000, 300), (2500, 1)]);
    assert_eq!(check_output(&out, &map), (4000 - 301) * SECTOR);
    assert!(stats.bytes_skipped > 0, "the copy pass skipped past the failing zone");
    // Each bad sector is read at most a few times (the cluster read that found it, a bisect,
    // trim and scrape), never once per pass per neighbour.
    let bad_reads: u64 = src.log.iter().filter(|(_, _, ok)| !ok).count() as u64;
    assert!(bad_reads <= 301 + 40, "{bad_reads} failing reads for 301 bad sectors");
    assert_eq!(stats.phases, ["copy", "bisect", "trim", "scrape"]);
}

#[test]
fn good_zones_are_read_before_the_failing_one_is_scraped() {
    let mut src = Faulty::new(4000);
    src.bad.push(100..400);
    let _ = run(&mut src, RescueMap::new(4000 * SECTOR), opts(4000), &mut Recorder::default(), &Interrupt::new());
    // The last sector of the source is read before any single-sector read inside the bad zone.
    let last_read = src.log.iter().position(|(f, c, _)| f + c >= 4000).expect("end read");
    let first_scrape = src.log.iter().position(|(f, c, _)| *c == 1 && (100..400).contains(f)).expect("scrape");
    assert!(last_read < first_scrape, "end of the disc read at {last_read}, scraping started at {first_scrape}");
}

#[test]
fn retries_recover_intermittent_sectors() {
    let mut src = Faulty::new(500);
    src.flaky = HashMap::from([(10, 3), (200, 1), (201, 2)]);
    let mut o = opts(500);
    o.retries = 1;
    let (stop, map, _, _) =
        run(&mut src, RescueMap::new(500 * SECTOR), o.clone(), &mut Recorder::default(), &Interrupt::new());
    // Sector 10 fails at its cluster read, its trim and retry 1; sector 201 is first read in
    // the trim (the cluster read stopped at 200) and fails there and at retry 1.
    assert_eq!(stop, Stop::Exhausted);
    let bad: Vec<u64> = map.blocks_in(Status::Bad).iter().map(|b| b.pos / SECTOR).collect();
    assert_eq!(bad, [10, 201]);
    assert_eq!(map.bytes_in(Status::Bad), 2 * SECTOR);
    let mut src = Faulty::new(500);
    src.flaky = HashMap::from([(10, 3), (200, 1), (201, 2)]);
    o.retries = 3;
    let (stop, map, stats, out) =
        run(&mut src, RescueMap::new(500 * SECTOR), o, &mut Recorder::default(), &Interrupt::new());
    assert_eq!(stop, Stop::Complete);
    assert_eq!(check_output(&out, &map), 500 * SECTOR);
    assert!(stats.phases.contains(&"retry"));
}

#[test]
fn slow_zones_are_skipped_in_the_copy_pass_but_read_in_the_end() {
    let mut src = Faulty::new(2000);
    src.slow.push(300..340);
    let mut o = opts(2000);
    o.slow_read = Some(Duration::from_millis(10));
    let (stop, map, stats, out) =
        run(&mut src, RescueMap::new(2000 * SECTOR), o, &mut Recorder::default(), &Interrupt::new());
    assert_eq!(stop, Stop::Complete);
    assert_eq!(check_output(&out, &map), 2000 * SECTOR);
    assert!(stats.slow_reads >= 1);
    assert!(stats.bytes_skipped > 0);
    // The end of the source is read before the last read of the slow zone.
    let last_slow = src.log.iter().rposition(|(f, c, _)| *f < 340 && f + c > 300).expect("slow read");
    let end_read = src.log.iter().position(|(f, c, _)| f + c >= 2000).expect("end read");
    assert!(end_read < last_slow, "the end was read at {end_read}, the slow zone last at {last_slow}");
}

#[test]
fn stops_as_soon_as_the_hook_says_enough() {
    let sectors = 8000;
    let mut src = Faulty::new(sectors);
    src.bad.push(3000..3600);
    let full = {
        let mut s2 = Faulty::new(sectors);
        s2.bad = src.bad.clone();
        let (_, _, stats, _) =
            run(&mut s2, RescueMap::new(sectors * SECTOR), opts(sectors), &mut Recorder::default(), &Interrupt::new());
        stats.reads
    };
    let mut hooks = Recorder { enough_when_missing_at_most: Some(700 * SECTOR), ..Default::default() };
    let (stop, map, stats, out) =
        run(&mut src, RescueMap::new(sectors * SECTOR), opts(sectors), &mut hooks, &Interrupt::new());
    assert_eq!(stop, Stop::Enough);
    assert!(map.size() - map.bytes_in(Status::Finished) <= 700 * SECTOR);
    check_output(&out, &map);
    assert!(stats.reads < full / 2, "{} reads with early stop, {full} without", stats.reads);
    assert_eq!(hooks.saved.as_ref(), Some(&map), "the final map is saved");
}

#[test]
fn an_interrupted_rescue_resumes_from_its_saved_map_without_rereading() {
    let sectors = 3000;
    let make = || {
        let mut s = Faulty::new(sectors);
        s.bad = vec![700..900, 2000..2010];
        s
    };
    let interrupt = Interrupt::new();
    let mut src = make();
    src.interrupt_at = Some((40, interrupt.clone()));
    let mut hooks = Recorder::default();
    let (stop, _, _, out1) = run(&mut src, RescueMap::new(sectors * SECTOR), opts(sectors), &mut hooks, &interrupt);
    assert_eq!(stop, Stop::Interrupted);
    let saved = hooks.saved.clone().expect("map saved on interrupt");
    // Through the text format, as a real resume does.
    let text = saved.render(&["loopkit test".into()]);
    let reloaded = RescueMap::parse(&text, sectors * SECTOR).expect("parse");
    assert_eq!(reloaded, saved);
    let finished_before: Vec<(u64, u64)> = reloaded.parts_in(0, sectors * SECTOR, Status::Finished);
    let mut src2 = make();
    let mut hooks2 = Recorder::default();
    let stats = {
        let mut r = Rescue::new(&mut src2, &out1, reloaded, opts(sectors)).expect("rescue");
        assert_eq!(
            r.run(&mut hooks2, &mut crate::progress::Run::new(&mut crate::progress::NoProgress, &Interrupt::new()))
                .expect("run"),
            Stop::Exhausted
        );
        let map = r.map.clone();
        assert_eq!(check_output(&out1, &map), (sectors - 210) * SECTOR);
        r.stats.clone()
    };
    // Nothing finished before the interruption is read again.
    for (f, c, _) in &src2.log {
        for (p, l) in &finished_before {
            let (a, b) = (f * SECTOR, (f + c) * SECTOR);
            assert!(b <= *p || a >= p + l, "re-read {a}..{b} inside finished {p}+{l}");
        }
    }
    assert!(stats.reads > 0);
}

#[test]
fn a_map_of_another_size_is_refused() {
    let mut src = Faulty::new(10);
    let out = out_file(10 * SECTOR);
    assert!(Rescue::new(&mut src, &out, RescueMap::new(11 * SECTOR), opts(10)).is_err());
    let mut o = opts(10);
    o.cluster = 3000;
    assert!(Rescue::new(&mut src, &out, RescueMap::new(10 * SECTOR), o).is_err());
}

#[test]
fn a_size_not_a_multiple_of_the_sector_is_read_to_its_last_byte() {
    struct Odd(u64);
    impl RescueSource for Odd {
        fn size(&self) -> u64 {
            self.0
        }
        fn read_at(&mut self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = byte_at(pos + i as u64);
            }
            Ok(buf.len())
        }
    }
    let size = 10 * SECTOR + 100;
    let mut src = Odd(size);
    let out = out_file(size);
    let mut r = Rescue::new(&mut src, &out, RescueMap::new(size), Options::for_device(SECTOR, size)).expect("rescue");
    assert_eq!(
        r.run(
            &mut Recorder::default(),
            &mut crate::progress::Run::new(&mut crate::progress::NoProgress, &Interrupt::new())
        )
        .expect("run"),
        Stop::Complete
    );
    assert_eq!(check_output(&out, &r.map), size);
}
