//! Benchmark (ignored by default; `testdata/bench/remap-revalidate.sh` runs it): the CPU and wall
//! time of one `Engine::revalidate_map` call — what `attach --remap` does once a second — on an
//! image with a very large extent map (default 1 M extents: 1 KiB written every 2 KiB of a
//! sparse file on ext4 with 1 KiB blocks; `LOOPKIT_BENCH_EXTENTS` changes the count), next to one
//! FIEMAP of the whole file (the kernel's share). Prints figures; asserts only that the map was
//! confirmed unchanged (a re-validation that found a difference would have stopped remapping).

use crate::mounts::{self, Mounted};
use crate::util::{TestResult, skip};
use libtest_mimic::{Completion, Trial};
use loopkit::remap::{Engine, Options};
use loopkit::source::ByteSource;
use std::os::unix::fs::FileExt;
use std::time::Instant;

pub fn trials() -> Vec<Trial> {
    vec![Trial::ignorable_test("bench_revalidate::revalidate_map_cost", revalidate_map_cost).with_ignored_flag(true)]
}

/// CPU time (user + system) of this thread so far, in seconds (`/proc/thread-self/schedstat`:
/// nanoseconds on a CPU). `revalidate_map` runs on the calling thread.
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .map_or(f64::NAN, |ns| ns / 1e9)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn revalidate_map_cost() -> TestResult {
    if let Some(why) = mounts::unavailable("mkfs.ext4") {
        return skip(why);
    }
    let n: u64 = std::env::var("LOOPKIT_BENCH_EXTENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let span = n * 2048;
    let m =
        Mounted::new("ext4", ((n * 1024 * 5 / 4) >> 20) + 96, &["-q", "-F", "-b", "1024", "-O", "^has_journal"], "")?;
    let img = m.path("fragmented.img");
    let t = Instant::now();
    {
        let f = std::fs::File::create(&img).map_err(|e| format!("create: {e}"))?;
        f.set_len(span).map_err(|e| format!("truncate: {e}"))?;
        let block = [0x5au8; 1024];
        for i in 0..n {
            f.write_all_at(&block, i * 2048).map_err(|e| format!("write: {e}"))?;
        }
        f.sync_all().map_err(|e| format!("sync: {e}"))?;
    }
    let made = t.elapsed();
    let (e, _) =
        Engine::open(&img, &Options { read_only: true, ..Options::default() }).map_err(|e| format!("open: {e}"))?;
    // Fill the whole map (it is filled lazily, 64 MiB windows around each first access).
    let mut b = vec![0u8; 1024];
    let t = Instant::now();
    let mut off = 0;
    while off < span {
        e.read_exact_at(&mut b, off).map_err(|e| format!("read: {e}"))?;
        off += 32 << 20;
    }
    let fill = t.elapsed();
    let extents = e.state().extents;
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..5 {
        let (c0, t0) = (cpu_secs(), Instant::now());
        let same = e.revalidate_map();
        wall.push(t0.elapsed().as_secs_f64());
        cpu.push(cpu_secs() - c0);
        if !same {
            return Err(format!(
                "revalidate_map reported a change on an untouched file: {:?}",
                e.state().stopped_because
            )
            .into());
        }
    }
    let f = std::fs::File::open(&img).map_err(|e| format!("open: {e}"))?;
    let mut fiemap = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let x = loopkit::extent::fiemap::query(std::os::fd::AsFd::as_fd(&f), 0..span, false)
            .map_err(|e| format!("fiemap: {e}"))?;
        fiemap.push(t0.elapsed().as_secs_f64());
        std::hint::black_box(x);
    }
    let (w, c, fm) = (median(&mut wall), median(&mut cpu), median(&mut fiemap));
    println!(
        "revalidate_map: {extents} extents in the map ({n} written 1 KiB blocks, file made in {:.1} s, map filled in {:.2} s)",
        made.as_secs_f64(),
        fill.as_secs_f64()
    );
    println!(
        "revalidate_map: median of 5 calls: {:.1} ms wall, {:.1} ms CPU ({:.2} us CPU per extent); one FIEMAP of the whole file: {:.1} ms wall",
        w * 1e3,
        c * 1e3,
        c * 1e6 / extents.max(1) as f64,
        fm * 1e3
    );
    println!("revalidate_map: at one call a second that is {:.1} % of one core", c * 100.0);
    e.close().map_err(|e| format!("close: {e}"))?;
    Ok(Completion::Completed)
}
