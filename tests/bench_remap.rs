//! Benchmarks of the extent map and the remap engine (ignored by default; run by
//! `testdata/bench/remap.sh`, which records the figures in docs/PERFORMANCE.md). Not timed
//! tests: they print figures and ratios against baselines measured in the same run.

use crate::extents::pattern;
use crate::mounts::{self, Mounted};
use crate::util::{TestResult, run_ok, skip};
use libtest_mimic::{Completion, Trial};
use loopkit::extent::{Extent, ExtentFlags, ExtentMap, SegKind};
use loopkit::remap::{Engine, Options};
use loopkit::source::ByteSource;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::Command;
use std::time::Instant;

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::ignorable_test("bench_remap::extent_map", extent_map).with_ignored_flag(true),
        Trial::ignorable_test("bench_remap::engine_throughput", engine_throughput).with_ignored_flag(true),
    ]
}

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 11
}

/// CPU time consumed so far by the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in seconds: on a
/// shared machine the wall clock also counts the time other processes hold the core.
fn thread_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// The 1-minute load average (`/proc/loadavg`), as text.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split(' ').next().map(str::to_string))
        .unwrap_or_default()
}

/// `lookups` lookups at uniform random offsets below `size` (the same sequence on every call):
/// millions per wall-clock second and per CPU-second of this thread, and a checksum.
fn time_lookups(lookups: u64, size: u64, lookup: impl Fn(u64) -> u64) -> (f64, f64, u64) {
    let mut seed = 1u64;
    let (t, c) = (Instant::now(), thread_cpu());
    let mut acc = 0u64;
    for _ in 0..lookups {
        acc = acc.wrapping_add(lookup(lcg(&mut seed) % size));
    }
    let (wall, cpu) = (t.elapsed().as_secs_f64(), thread_cpu() - c);
    (lookups as f64 / wall / 1e6, lookups as f64 / cpu.max(1e-9) / 1e6, acc)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn extent_map() -> TestResult {
    let n = 1_000_000u64;
    let exts: Vec<Extent> = (0..n)
        .map(|i| Extent { logical: i * 8192, physical: i * 20480, length: 4096, flags: ExtentFlags::default() })
        .collect();
    let t = Instant::now();
    let mut m = ExtentMap::new(n * 8192, 512);
    m.fill(0..n * 8192, &exts);
    let fill = t.elapsed();
    println!(
        "extent map: {} extents filled in {:.1} ms, {:.1} bytes/extent",
        m.len(),
        fill.as_secs_f64() * 1e3,
        m.heap_bytes() as f64 / n as f64
    );
    // The baseline, in the same process: a binary search of the same extents' sorted starts,
    // then their body (what the map did before it had an index), 8 + 16 bytes per extent.
    let starts: Vec<u64> = exts.iter().map(|e| e.logical).collect();
    let bodies: Vec<(u64, u64)> = exts.iter().map(|e| (e.physical, e.length)).collect();
    drop(exts);
    let search = |off: u64| -> u64 {
        let Some(k) = starts.partition_point(|&s| s <= off).checked_sub(1) else { return 0 };
        let (start, (physical, length)) = (starts[k], bodies[k]);
        if off - start < length {
            physical + (off - start)
        } else {
            starts.get(k + 1).copied().unwrap_or(n * 8192) - off
        }
    };
    let map = |off: u64| -> u64 {
        match m.lookup(off) {
            Some(s) => match s.kind {
                SegKind::Mapped { physical } => physical,
                _ => s.length,
            },
            None => 0,
        }
    };
    let rounds = std::env::var("LOOPKIT_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5u32);
    let lookups = 20_000_000u64;
    println!(
        "extent map: {rounds} rounds of {} M lookups at uniform random offsets over {} GB, bucket table and binary search alternating; M lookups/s per wall-clock second and per CPU-second of the measuring thread",
        lookups / 1_000_000,
        n * 8192 / 1_000_000_000
    );
    let (mut wall, mut cpu, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let load = load_average();
        let (mw, mc, macc) = time_lookups(lookups, n * 8192, map);
        let (sw, sc, sacc) = time_lookups(lookups, n * 8192, search);
        if macc != sacc {
            return Err(format!("round {round}: the map and the search disagree (checksums {macc} and {sacc})").into());
        }
        println!(
            "round {round} (load {load}): bucket table {mw:.1} M/s wall, {mc:.1} M/s CPU; binary search {sw:.1} M/s wall, {sc:.1} M/s CPU; table/search {:.2} (CPU)",
            mc / sc
        );
        wall.push(mw);
        cpu.push(mc);
        ratio.push(mc / sc);
    }
    println!(
        "extent map: median {:.1} M lookups/s wall, {:.1} M/s per CPU-second (goal 10), {:.2}x the binary search; load now {}",
        median(wall),
        median(cpu),
        median(ratio),
        load_average()
    );

    if let Some(why) = mounts::unavailable("mkfs.ext4") {
        return skip(why);
    }
    let m = Mounted::new("ext4", 256, &["-q", "-F"], "")?;
    let img = m.path("sparse-1TiB.img");
    let f = File::create(&img).map_err(|e| format!("create: {e}"))?;
    f.set_len(1 << 40).map_err(|e| format!("truncate: {e}"))?;
    f.write_all_at(&pattern(1, 4096), 123 << 30).map_err(|e| format!("write: {e}"))?;
    f.sync_all().map_err(|e| format!("sync: {e}"))?;
    drop(f);
    let t = Instant::now();
    let (e, _) = Engine::open(&img, &Options::default()).map_err(|e| format!("open: {e}"))?;
    let attach = t.elapsed();
    let mut b = vec![0u8; 4096];
    let t = Instant::now();
    e.read_exact_at(&mut b, 123 << 30).map_err(|e| format!("read: {e}"))?;
    let first = t.elapsed();
    println!(
        "attach a 1 TiB sparse file: {:.2} ms (preflight, lease, fsync); first read of one block {:.2} ms (one 64 MiB FIEMAP window)",
        attach.as_secs_f64() * 1e3,
        first.as_secs_f64() * 1e3
    );
    e.close().map_err(|e| format!("close: {e}"))?;
    Ok(Completion::Completed)
}

/// Aligned buffer for O_DIRECT reads.
fn abuf(len: usize) -> Result<loopkit::output::direct::AlignedBuf, String> {
    loopkit::output::direct::AlignedBuf::zeroed(len, 4096).map_err(|e| e.to_string())
}

/// Write back, then drop, every cache (dirty pages of the loop device's backing file would
/// otherwise survive and serve the first round from memory).
fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

/// `threads` threads each doing `per` 4 KiB reads at random aligned offsets below `size`.
fn random_reads(
    threads: u64,
    per: u64,
    size: u64,
    read: &(dyn Fn(&mut [u8], u64) -> std::io::Result<()> + Sync),
) -> Result<f64, String> {
    let t = Instant::now();
    let r: Result<(), String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|k| {
                s.spawn(move || -> Result<(), String> {
                    let mut b = abuf(4096)?;
                    let mut seed = 99 + k;
                    for _ in 0..per {
                        let off = lcg(&mut seed) % (size / 4096) * 4096;
                        read(&mut b.as_mut_slice()[..4096], off).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err("panic".into())))
    });
    r?;
    Ok((threads * per) as f64 / t.elapsed().as_secs_f64())
}

fn sequential(size: u64, read: &dyn Fn(&mut [u8], u64) -> std::io::Result<()>) -> Result<f64, String> {
    let mut b = abuf(1 << 20)?;
    let t = Instant::now();
    let mut off = 0;
    while off < size {
        read(b.as_mut_slice(), off).map_err(|e| e.to_string())?;
        off += 1 << 20;
    }
    Ok(size as f64 / t.elapsed().as_secs_f64() / 1e6)
}

fn pread_all(f: &File, buf: &mut [u8], off: u64) -> std::io::Result<()> {
    f.read_exact_at(buf, off)
}

fn engine_throughput() -> TestResult {
    if let Some(why) = mounts::unavailable("mkfs.ext4") {
        return skip(why);
    }
    let size: u64 = std::env::var("LOOPKIT_BENCH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(512) << 20;
    let m = Mounted::new("ext4", (size >> 20) + 64, &["-q", "-F"], "")?;
    let img = m.path("data.img");
    run_ok(Command::new("dd").args([
        "if=/dev/urandom".to_string(),
        format!("of={}", img.display()),
        "bs=1M".into(),
        format!("count={}", size >> 20),
        "oflag=direct".into(),
        "status=none".into(),
    ]))?;
    let per = std::env::var("LOOPKIT_BENCH_READS").ok().and_then(|v| v.parse().ok()).unwrap_or(4000u64);
    // The raw-device baseline reads the very blocks the file occupies (an ideal dm-linear over its
    // extents), translated with the file system's own map.
    let map = {
        let f = File::open(&img).map_err(|e| format!("{e}"))?;
        let ext =
            loopkit::extent::fiemap::query(std::os::fd::AsFd::as_fd(&f), 0..size, true).map_err(|e| format!("{e}"))?;
        ExtentMap::complete(size, 512, &ext)
    };
    let phys = |o: u64| match map.lookup(o).map(|s| s.kind) {
        Some(SegKind::Mapped { physical }) => physical,
        _ => o,
    };
    println!(
        "engine throughput: {} MiB file on ext4 on {} (backed by a file on the host), 32 threads x {per} reads; baseline and engine rounds interleaved",
        size >> 20,
        m.loopdev
    );
    let mut rows = Vec::new();
    let mut eng = Vec::new();
    for round in 0..3 {
        let open_direct =
            |p: &std::path::Path| std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(p);
        let dev = open_direct(std::path::Path::new(&m.loopdev)).map_err(|e| format!("{e}"))?;
        let file_direct = open_direct(&img).map_err(|e| format!("{e}"))?;
        let file_buffered = File::open(&img).map_err(|e| format!("{e}"))?;
        drop_caches();
        let raw = random_reads(32, per, size, &|b, o| pread_all(&dev, b, phys(o)))?;
        let fd = random_reads(32, per, size, &|b, o| pread_all(&file_direct, b, o))?;
        drop_caches();
        let fb = random_reads(32, per, size, &|b, o| pread_all(&file_buffered, b, o))?;
        let seq_raw = sequential(size, &|b, o| pread_all(&dev, b, phys(o)))?;
        let seq_fd = sequential(size, &|b, o| pread_all(&file_direct, b, o))?;
        drop_caches();
        let seq_fb = sequential(size, &|b, o| pread_all(&file_buffered, b, o))?;
        rows.push((round, raw, fd, fb, seq_raw, seq_fd, seq_fb));
        drop((dev, file_direct, file_buffered));
        let (e, _) = Engine::open(&img, &Options::default()).map_err(|e| format!("open: {e}"))?;
        drop_caches();
        let r = random_reads(32, per, size, &|b, o| e.read_exact_at(b, o))?;
        let s = sequential(size, &|b, o| e.read_exact_at(b, o))?;
        eng.push((r, s));
        e.close().map_err(|e| format!("close: {e}"))?;
    }
    for (i, (round, raw, fd, fb, sr, sfd, sfb)) in rows.iter().enumerate() {
        let (er, es) = eng[i];
        println!(
            "round {round}: 4K random QD32 IOPS: raw device {raw:.0}, file O_DIRECT {fd:.0}, file buffered (cold) {fb:.0}, engine {er:.0} -> engine/raw {:.2}",
            er / raw
        );
        println!(
            "round {round}: 1 MiB sequential MB/s: raw device {sr:.0}, file O_DIRECT {sfd:.0}, file buffered (cold) {sfb:.0}, engine {es:.0} -> engine/raw {:.2}",
            es / sr
        );
    }
    Ok(Completion::Completed)
}
