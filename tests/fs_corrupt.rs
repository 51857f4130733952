//! Damaged file systems: bytes flipped in the superblock, group descriptors, inode table,
//! extent headers, directory and htree blocks (located with debugfs, the oracle for where the
//! structures are), truncated images, and a few thousand random mutations run through the
//! library in-process. Every case must end with a clear exit code (1 or 2) and message — never
//! a panic, a hang or a runaway allocation.

use crate::ensure;
use crate::fs_fixtures::{self as fx};
use crate::util::{Scratch, TestResult, code, have, loopkit_bin, repo_root, run, run_ok, skip, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::Path;
use std::process::Command;

fn debugfs(img: &Path, req: &str) -> Result<String, Failed> {
    let out = run_ok(Command::new("debugfs").args(["-R", req]).arg(img))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Byte offset of inode `spec` (`<2>` or a path) from `debugfs imap`.
fn inode_offset(img: &Path, spec: &str, block_size: u64) -> Result<u64, Failed> {
    let t = debugfs(img, &format!("imap {spec}"))?;
    let block = t
        .split("located at block ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse::<u64>().ok());
    let off = t
        .split("offset 0x")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| u64::from_str_radix(s, 16).ok());
    match (block, off) {
        (Some(b), Some(o)) => Ok(b * block_size + o),
        _ => Err(format!("cannot parse imap output: {t}").into()),
    }
}

/// First data block of `path` from `debugfs blocks`.
fn first_block(img: &Path, path: &str) -> Result<u64, Failed> {
    let t = debugfs(img, &format!("blocks {path}"))?;
    t.split_whitespace().next().and_then(|s| s.parse().ok()).ok_or_else(|| format!("no blocks for {path}: {t}").into())
}

/// Block size from `dumpe2fs -h`.
fn block_size(img: &Path) -> Result<u64, Failed> {
    let out = run_ok(Command::new("dumpe2fs").arg("-h").arg(img))?;
    let t = String::from_utf8_lossy(&out.stdout);
    t.lines()
        .find_map(|l| l.strip_prefix("Block size:").and_then(|v| v.trim().parse().ok()))
        .ok_or_else(|| format!("no block size in dumpe2fs output: {t}").into())
}

/// The primary group-descriptor table follows the superblock's block.
fn gdt_offset(bs: u64) -> u64 {
    if bs == 1024 { 2048 } else { bs }
}

fn poke(p: &Path, off: u64, bytes: &[u8]) -> Result<(), Failed> {
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new().write(true).open(p)?.write_all_at(bytes, off)?;
    Ok(())
}

/// Run `loopkit verify` and `manifest` on a damaged image under a time limit.
fn check_damaged(img: &Path, what: &str, expect_problem: bool) -> Result<(), Failed> {
    for args in [&["verify", "--quiet", "--json"][..], &["manifest", "--quiet"][..]] {
        let out = run(Command::new("timeout").arg("120").arg(loopkit_bin()).args(args).arg(img))?;
        let c = code(&out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(c != 124, "{what}: loopkit {args:?} hung (killed after 120 s)");
        ensure!(c == 1 || c == 2 || (c == 0 && !expect_problem), "{what}: loopkit {args:?} exit {c}: {stderr}");
        ensure!(!stderr.contains("panicked"), "{what}: panic: {stderr}");
        if c == 2 {
            ensure!(stderr.contains("loopkit: error:"), "{what}: exit 2 without a message");
        }
        if args[0] == "verify" && c == 1 {
            let v = crate::util::json(&out)?;
            ensure!(v["problems"].as_array().is_some_and(|p| !p.is_empty()), "{what}: exit 1 without problems");
        }
    }
    Ok(())
}

fn targeted_damage() -> TestResult {
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("corrupt");
    // The closure gets the block size (from dumpe2fs, 2048 for ISO images).
    type Damage = fn(&Path, u64) -> Result<(), Failed>;
    let cases: &[(&str, &str, Damage)] = &[
        ("superblock log block size", "ext4.img", |p, _| poke(p, 1024 + 0x18, &[9, 0, 0, 0])),
        ("superblock inodes per group", "ext2-1k.img", |p, _| poke(p, 1024 + 0x28, &[0, 0, 0, 0])),
        ("superblock block count", "ext3.img", |p, _| poke(p, 1024 + 0x04, &[0xff, 0xff, 0xff, 0x7f])),
        ("group descriptor inode table (ext2)", "ext2-1k.img", |p, bs| {
            poke(p, gdt_offset(bs) + 8, &[0xff, 0xff, 0xff, 0x0f])
        }),
        ("group descriptor inode table (ext4)", "ext4.img", |p, bs| {
            poke(p, gdt_offset(bs) + 8, &[0xff, 0xff, 0xff, 0x0f])
        }),
        ("root inode mode", "ext2-1k.img", |p, bs| poke(p, inode_offset(p, "<2>", bs)?, &[0xff, 0xff])),
        ("root inode size and blocks (ext3)", "ext3.img", |p, bs| {
            let o = inode_offset(p, "<2>", bs)?;
            poke(p, o + 0x28, &[0xff; 60])
        }),
        ("extent header magic", "ext4-inline.img", |p, bs| poke(p, inode_offset(p, "/big.bin", bs)? + 0x28, &[0, 0])),
        ("extent header depth", "ext4-inline.img", |p, bs| poke(p, inode_offset(p, "/big.bin", bs)? + 0x2E, &[9, 0])),
        ("indirect block pointer", "ext2-1k.img", |p, bs| {
            poke(p, inode_offset(p, "/big.bin", bs)? + 0x28 + 13 * 4, &[0xfe, 0xff, 0xff, 0x00])
        }),
        ("block map cycle (double-indirect = indirect block)", "ext2-1k.img", |p, bs| {
            use std::os::unix::fs::FileExt;
            let o = inode_offset(p, "/big.bin", bs)? + 0x28;
            let mut ind = [0u8; 4];
            std::fs::File::open(p)?.read_exact_at(&mut ind, o + 12 * 4)?;
            poke(p, o + 13 * 4, &ind)
        }),
        ("directory block rec_len", "ext2-1k.img", |p, bs| poke(p, first_block(p, "/dir")? * bs + 4, &[3, 0])),
        ("directory block (csum)", "ext4.img", |p, bs| poke(p, first_block(p, "/dir")? * bs + 12, &[0x55; 16])),
        ("htree root", "ext3.img", |p, bs| poke(p, first_block(p, "/many")? * bs + 0x1C, &[0xff, 0xff, 0xff])),
        ("htree root count", "ext4-inline.img", |p, bs| poke(p, first_block(p, "/many")? * bs + 0x22, &[0xff, 0xff])),
        ("iso root record", "iso-rr.iso", |p, _| poke(p, 32768 + 156, &[7])),
        ("iso root extent", "iso-rr.iso", |p, _| poke(p, 32768 + 156 + 2, &[0xff, 0xff, 0xff, 0x7f])),
        ("iso volume descriptor", "iso-rr.iso", |p, _| poke(p, 32768 + 128, &[3, 0, 0, 3])),
    ];
    for (what, img, damage) in cases {
        let p = fx::copy_image(f, img, &s)?;
        let bs = if img.ends_with(".iso") { 2048 } else { block_size(&p)? };
        damage(&p, bs)?;
        check_damaged(&p, what, true)?;
        std::fs::remove_file(&p)?;
    }
    // Truncated images: a third, half, and all but the last block of each kind.
    for img in ["ext2-1k.img", "ext4.img", "ext4-64k.img", "iso-rr.iso"] {
        for frac in [3u64, 2] {
            let p = fx::copy_image(f, img, &s)?;
            let len = std::fs::metadata(&p)?.len();
            std::fs::OpenOptions::new().write(true).open(&p)?.set_len(len / frac)?;
            check_damaged(&p, &format!("{img} truncated to 1/{frac}"), true)?;
            std::fs::remove_file(&p)?;
        }
    }
    Ok(Completion::Completed)
}

/// An image with a few bytes changed and maybe cut short, without copying it.
struct Overlay {
    base: std::sync::Arc<Vec<u8>>,
    patches: Vec<(usize, u8)>,
    len: u64,
}

impl loopkit::source::ByteSource for Overlay {
    fn size_bytes(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> std::io::Result<usize> {
        if offset_bytes >= self.len {
            return Ok(0);
        }
        let a = offset_bytes as usize;
        let n = buf.len().min((self.len - offset_bytes) as usize);
        buf[..n].copy_from_slice(&self.base[a..a + n]);
        for &(at, v) in &self.patches {
            if at >= a && at < a + n {
                buf[at - a] = v;
            }
        }
        Ok(n)
    }
}

/// Progress that fires the interrupt after `left` bytes.
struct Budget {
    left: u64,
    interrupt: loopkit::progress::Interrupt,
}

impl loopkit::progress::Progress for Budget {
    fn start(&mut self, _label: &str, _total_bytes: Option<u64>) {}
    fn advance(&mut self, bytes: u64) {
        self.left = self.left.saturating_sub(bytes);
        if self.left == 0 {
            self.interrupt.trigger();
        }
    }
}

/// A directory hard-linked into its own subtree (made with `debugfs -w link`): the walker
/// reports the loop once and finishes.
fn directory_loop() -> TestResult {
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("dirloop");
    let img = fx::copy_image(f, "ext2-1k.img", &s)?;
    run_ok(Command::new("debugfs").args(["-w", "-R", "link /deep /deep/level0/back-to-deep"]).arg(&img))?;
    let ls = debugfs(&img, "ls /deep/level0")?;
    ensure!(ls.contains("back-to-deep"), "debugfs did not create the link: {ls}");
    let out =
        run(Command::new("timeout").arg("120").arg(loopkit_bin()).args(["verify", "--json", "--quiet"]).arg(&img))?;
    ensure!(code(&out) == 1, "exit {} (1 expected)", code(&out));
    let v = crate::util::json(&out)?;
    let problems = v["problems"].as_array().cloned().unwrap_or_default();
    ensure!(
        problems
            .iter()
            .any(|p| p["code"] == "fs.dir-loop" && p["message"].as_str().is_some_and(|m| m.contains("back-to-deep"))),
        "no fs.dir-loop problem naming the path: {problems:?}"
    );
    Ok(Completion::Completed)
}

/// A tiny xorshift generator: deterministic mutations, reproducible by seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_mutations() -> TestResult {
    if !have("mkfs.ext4") || !have("genisoimage") {
        return skip("mkfs.ext4 or genisoimage missing");
    }
    if let Some(why) = crate::util::python_missing() {
        return skip(why);
    }
    let s = Scratch::new("mutate");
    run_ok(
        Command::new(crate::util::python())
            .arg(repo_root().join("testdata/gen/tree.py"))
            .arg(s.path("t"))
            .args(["--profile", "small"]),
    )?;
    let mut images = Vec::new();
    for (name, args) in [
        ("ext2", &["mkfs.ext2", "-b", "1024"][..]),
        ("ext4", &["mkfs.ext4", "-O", "^metadata_csum"][..]),
        ("ext4csum", &["mkfs.ext4", "-O", "inline_data"][..]),
    ] {
        let p = s.path(name);
        std::fs::File::create(&p)?.set_len(4 << 20)?;
        run_ok(Command::new(args[0]).args(&args[1..]).args(["-q", "-F", "-N", "512", "-d"]).arg(s.path("t")).arg(&p))?;
        let _ = run(Command::new("e2fsck").arg("-fyD").arg(&p));
        images.push((name, std::sync::Arc::new(std::fs::read(&p)?)));
    }
    let iso = s.path("iso");
    run_ok(Command::new("genisoimage").args(["-quiet", "-R", "-o"]).arg(&iso).arg(s.path("t")))?;
    images.push(("iso", std::sync::Arc::new(std::fs::read(&iso)?)));

    // The mutations run in a worker thread; the test watches for a hang.
    let (tx, rx) = std::sync::mpsc::channel::<Result<u64, String>>();
    // What runs now: description, and the mutated image's parts (to save it if it hangs).
    type Current = (String, Option<std::sync::Arc<Vec<u8>>>, Vec<(usize, u8)>, u64);
    let current = std::sync::Arc::new(std::sync::Mutex::new(Current::default()));
    let now = current.clone();
    std::thread::spawn(move || {
        let mut total = 0u64;
        for (name, base) in &images {
            let start = std::time::Instant::now();
            // LOOPKIT_MUTATION_SEED=N explores other mutations (the default run is fixed).
            let extra = std::env::var("LOOPKIT_MUTATION_SEED").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ base.len() as u64 ^ extra.wrapping_mul(0x2545_F491_4F6C_DD1D));
            let mut i = 0u64;
            while i < 1500 && start.elapsed().as_secs_f64() < 4.0 {
                let seed = rng.0;
                let mut patches = Vec::new();
                let flips = 1 + rng.next() % 6;
                for _ in 0..flips {
                    // Mostly metadata (the first MiB), sometimes anywhere.
                    let span = if rng.next() % 10 < 8 { base.len().min(1 << 20) } else { base.len() };
                    let at = (rng.next() % span as u64) as usize;
                    let v = if rng.next().is_multiple_of(2) {
                        base[at] ^ (1 << (rng.next() % 8))
                    } else {
                        rng.next() as u8
                    };
                    patches.push((at, v));
                }
                let len =
                    if rng.next().is_multiple_of(50) { rng.next() % base.len() as u64 } else { base.len() as u64 };
                if let Ok(mut c) = now.lock() {
                    *c = (format!("{name}, seed {seed:#x}, iteration {i}"), Some(base.clone()), patches.clone(), len);
                }
                // Oracle for truncation: cutting the image short without touching the superblock
                // or the volume descriptors (which state the size) must be reported as truncated.
                let header = if *name == "iso" { 32768..36864 } else { 1024..2048 };
                let cut = len < base.len() as u64 && patches.iter().all(|(p, _)| !header.contains(p));
                let img = Overlay { base: base.clone(), patches, len };
                let r = std::panic::catch_unwind(|| -> Result<(), String> {
                    let fs = match loopkit::fs::open(&img) {
                        Ok(fs) => fs,
                        Err(e) => {
                            use loopkit::ErrorKind::*;
                            return match e.kind() {
                                Corrupt | NotRecognized | Unsupported | Io => Ok(()),
                                k => Err(format!("opening failed with an unexpected kind {k:?}: {e}")),
                            };
                        }
                    };
                    if cut && !fs.issues().iter().any(|i| i.code.ends_with(".truncated")) {
                        return Err(format!("cut to {len} of {} bytes but no truncation was reported", base.len()));
                    }
                    // A mutated size can make a file a legitimately huge sparse file whose
                    // holes take minutes to hash; stop such work the way Ctrl-C would
                    // (parsing itself never checks the flag, so a parser loop still hangs).
                    let interrupt = loopkit::progress::Interrupt::new();
                    let mut budget = Budget { left: 64 << 20, interrupt: interrupt.clone() };
                    match loopkit::manifest::from_fs(&*fs, 1, &mut loopkit::progress::Run::new(&mut budget, &interrupt))
                    {
                        Ok(_) => Ok(()),
                        Err(e)
                            if matches!(
                                e.kind(),
                                loopkit::ErrorKind::Interrupted | loopkit::ErrorKind::Corrupt | loopkit::ErrorKind::Io
                            ) =>
                        {
                            Ok(())
                        }
                        Err(e) => Err(format!("the manifest failed with an unexpected kind {:?}: {e}", e.kind())),
                    }
                });
                if let Ok(Err(e)) = &r {
                    let _ = tx.send(Err(format!("{name}: {e} (mutation seed {seed:#x}, iteration {i})")));
                    return;
                }
                if r.is_err() {
                    let _ = tx.send(Err(format!("{name}: panic with mutation seed {seed:#x} (iteration {i})")));
                    return;
                }
                i += 1;
                let _ = tx.send(Ok(1));
            }
            total += i;
        }
        let _ = tx.send(Ok(u64::MAX - total));
    });
    let mut done = 0u64;
    loop {
        match rx.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(Ok(n)) if n > 1 << 40 => {
                let total = u64::MAX - n;
                ensure!(total >= 1000, "only {total} mutations ran");
                return Ok(Completion::Completed);
            }
            Ok(Ok(n)) => done += n,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                let (at, base, patches, len) = current.lock().map(|c| c.clone()).unwrap_or_default();
                // Keep the image for debugging (target/fixtures/hang-*.img).
                let mut saved = String::new();
                if let Some(b) = base {
                    let mut img = b[..len as usize].to_vec();
                    for (p, v) in patches {
                        if p < img.len() {
                            img[p] = v;
                        }
                    }
                    let path = repo_root().join(format!("target/fixtures/hang-{}.img", std::process::id()));
                    if std::fs::write(&path, img).is_ok() {
                        saved = format!(", saved as {}", path.display());
                    }
                }
                return Err(format!("a mutated image hung the reader ({at}; after {done} mutations{saved})").into());
            }
        }
    }
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("fs_corrupt::targeted_damage", targeted_damage),
        trial("fs_corrupt::random_mutations", random_mutations),
        trial("fs_corrupt::directory_loop", directory_loop),
    ]
}
