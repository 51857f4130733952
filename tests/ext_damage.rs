//! Ext as it exists and an extract that never claims what it did not do.
//! Oracles: `mke2fs -d` (bigalloc with 1 KiB and 4 KiB blocks, `-C 16384`), `debugfs` to make
//! the damage (`set_bg`, `sif`), `dd` to wipe the primary superblock, `e2fsck -fn` as the judge of
//! clean (exit 0) vs damaged (exit 4), and `debugfs rdump` (with `-s 8193 -b 1024` for the backup
//! superblock) as the second extractor. Every damaged fixture must give the same exit code to
//! `verify`, `manifest` and `extract` (1), and `inspect` 0.

use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, run_ok, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("ext_damage::bigalloc_is_read", bigalloc_is_read),
        trial("ext_damage::damaged_superblocks_and_hints", damaged_superblocks_and_hints),
        trial("ext_damage::extract_unreadable_and_unrestorable", extract_unreadable_and_unrestorable),
        trial("ext_damage::blocks_claimed_twice", blocks_claimed_twice),
        trial("ext_damage::directory_size_past_its_blocks", directory_size_past_its_blocks),
    ]
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

pub(crate) fn missing() -> Option<String> {
    let m: Vec<&str> = ["mke2fs", "debugfs", "e2fsck", "blkid"].into_iter().filter(|t| !util::have(t)).collect();
    if m.is_empty() { None } else { Some(format!("missing tools: {}", m.join(", "))) }
}

/// A small tree: a few files of odd sizes across several blocks, a directory, a symlink.
pub(crate) fn tree(d: &Scratch) -> Result<PathBuf, Failed> {
    let t = d.path("tree");
    std::fs::create_dir_all(t.join("sub/deeper")).map_err(|e| e.to_string())?;
    let mut x: u32 = 12345;
    for (name, len) in
        [("a.txt", 13usize), ("sub/f1", 70_000), ("sub/f2", 140_001), ("sub/deeper/f3", 33_333), ("z", 5000)]
    {
        let b: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        std::fs::write(t.join(name), b).map_err(|e| e.to_string())?;
    }
    std::os::unix::fs::symlink("abcdefgh", t.join("link")).map_err(|e| e.to_string())?;
    Ok(t)
}

pub(crate) fn mkfs(img: &Path, tree: &Path, args: &[&str], size: &str) -> Result<(), Failed> {
    let mut c = Command::new("mke2fs");
    c.env("E2FSPROGS_FAKE_TIME", "1700000000").args([
        "-q",
        "-F",
        "-E",
        "hash_seed=11111111-2222-3333-4444-555555555555",
    ]);
    c.args(args).args(["-U", "11111111-2222-3333-4444-555555555555", "-d", s(tree), s(img), size]);
    run_ok(&mut c)?;
    Ok(())
}

pub(crate) fn fsck_code(img: &Path) -> Result<i32, Failed> {
    Ok(code(&run(Command::new("e2fsck").args(["-fn", s(img)]))?))
}

/// A tree as [`hashes`] describes it.
pub(crate) type Tree = BTreeMap<String, (String, String)>;

/// Files below `dir`: path → ("file", sha256) / ("symlink", target) / ("dir", "").
pub(crate) fn hashes(dir: &Path) -> Result<BTreeMap<String, (String, String)>, Failed> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).map_err(|e| e.to_string())? {
            let e = e.map_err(|e| e.to_string())?;
            let path = e.path();
            let rel = path.strip_prefix(dir).map_err(|e| e.to_string())?.to_string_lossy().to_string();
            if rel == "lost+found" {
                continue;
            }
            let md = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
            let v = if md.file_type().is_symlink() {
                (
                    "symlink".to_string(),
                    std::fs::read_link(&path).map_err(|e| e.to_string())?.to_string_lossy().to_string(),
                )
            } else if md.is_dir() {
                stack.push(path.clone());
                ("dir".to_string(), String::new())
            } else {
                ("file".to_string(), format!("{} {}", md.size(), sha256_file(&path)?))
            };
            out.insert(rel, v);
        }
    }
    Ok(out)
}

/// `debugfs [-c -s SB -b BS] -R "rdump / OUT"`: the second extractor (catastrophic mode with a
/// backup superblock: the backup descriptors' bitmap checksums are stale, and rdump needs no
/// bitmaps).
pub(crate) fn rdump(
    img: &Path,
    out: &Path,
    backup: Option<(u64, u64)>,
) -> Result<BTreeMap<String, (String, String)>, Failed> {
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let mut c = Command::new("debugfs");
    if let Some((sb, bs)) = backup {
        c.args(["-c", "-s", &sb.to_string(), "-b", &bs.to_string()]);
    }
    run_ok(c.args(["-R", &format!("rdump / {}", s(out)), s(img)]))?;
    hashes(out)
}

/// The four commands on one image: inspect 0, and verify/manifest/extract all `want`; returns
/// (verify's problem codes, the extracted tree).
pub(crate) fn all_commands(d: &Scratch, img: &Path, want: i32, extra: &[&str]) -> Result<(Vec<String>, Tree), Failed> {
    let before = sha256_file(img)?;
    let o = run(&mut loopkit(&["inspect", "--json", s(img)]))?;
    ensure!(code(&o) == 0, "{}: inspect exit {}", s(img), code(&o));
    let o = run(&mut loopkit(&["verify", "--json", s(img)]))?;
    let v = json(&o)?;
    ensure!(code(&o) == want, "{}: verify exit {} (want {want}) {v}", s(img), code(&o));
    let codes: Vec<String> = v["problems"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["code"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    let o = run(&mut loopkit(&["manifest", s(img)]))?;
    ensure!(code(&o) == want, "{}: manifest exit {} (want {want})", s(img), code(&o));
    let dest = d.path(&format!("x-{}-{}", img.file_name().unwrap_or_default().to_string_lossy(), extra.len()));
    let mut a = vec!["extract", "--json", s(img), s(&dest)];
    a.extend(extra);
    let o = run(&mut loopkit(&a))?;
    ensure!(
        code(&o) == want,
        "{}: extract {extra:?} exit {} (want {want}) {}",
        s(img),
        code(&o),
        String::from_utf8_lossy(&o.stdout)
    );
    ensure!(sha256_file(img)? == before, "{}: the image changed", s(img));
    let mut codes = codes;
    if let Ok(x) = json(&o) {
        codes.extend(
            x["problems"].as_array().into_iter().flatten().filter_map(|p| p["code"].as_str().map(String::from)),
        );
    }
    Ok((codes, hashes(&dest)?))
}

fn bigalloc_is_read() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("ext-bigalloc");
    let t = tree(&d)?;
    let want = hashes(&t)?;
    for bs in ["1024", "4096"] {
        let img = d.path(&format!("big{bs}.img"));
        mkfs(&img, &t, &["-t", "ext4", "-O", "bigalloc", "-C", "16384", "-b", bs], "16M")?;
        let dump = String::from_utf8_lossy(&run_ok(Command::new("dumpe2fs").args(["-h", s(&img)]))?.stdout).to_string();
        ensure!(dump.contains("bigalloc") && dump.contains("Cluster size:             16384"), "not bigalloc:\n{dump}");
        if bs == "1024" {
            ensure!(dump.lines().any(|l| l.starts_with("First block:") && l.ends_with(" 0")), "first block:\n{dump}");
        }
        ensure!(fsck_code(&img)? == 0, "e2fsck -fn does not call big{bs} clean");
        let (codes, got) = all_commands(&d, &img, 0, &[])?;
        ensure!(codes.is_empty(), "bigalloc {bs}: problems {codes:?}");
        ensure!(got == want, "bigalloc {bs}: extracted tree differs from the source:\n{got:?}\n{want:?}");
        ensure!(rdump(&img, &d.path(&format!("rd{bs}")), None)? == want, "debugfs rdump differs (oracle)");
        let v = json(&run(&mut loopkit(&["inspect", "--json", s(&img)]))?)?;
        ensure!(v["kind"] == "plain" && v["filesystem"]["type"] == "ext4", "bigalloc {bs}: {v}");
    }
    Ok(Completion::Completed)
}

fn damaged_superblocks_and_hints() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("ext-damage");
    let t = tree(&d)?;
    let want = hashes(&t)?;
    let base = d.path("base.img");
    // 1 KiB blocks, 20 MiB: three groups, the first backup superblock at block 8193.
    mkfs(&base, &t, &["-t", "ext4", "-b", "1024"], "20M")?;
    ensure!(fsck_code(&base)? == 0, "e2fsck -fn does not call the base image clean");
    let (codes, got) = all_commands(&d, &base, 0, &[])?;
    ensure!(codes.is_empty() && got == want, "base image: {codes:?}");
    let copy = |name: &str| -> Result<PathBuf, Failed> {
        let p = d.path(name);
        std::fs::copy(&base, &p).map_err(|e| e.to_string())?;
        Ok(p)
    };
    // The primary superblock wiped with dd, and one whose geometry was made impossible.
    let wiped = copy("wiped.img")?;
    run_ok(Command::new("dd").args([
        "if=/dev/zero",
        &format!("of={}", s(&wiped)),
        "bs=1024",
        "seek=1",
        "count=1",
        "conv=notrunc",
        "status=none",
    ]))?;
    let bad_geometry = copy("geometry.img")?;
    run_ok(Command::new("debugfs").args(["-w", "-R", "ssv blocks_per_group 12", s(&bad_geometry)]))?;
    for img in [&wiped, &bad_geometry] {
        ensure!(fsck_code(img)? != 0, "e2fsck -fn calls {} clean", s(img));
        let oracle = rdump(
            img,
            &d.path(&format!("rd-{}", img.file_name().unwrap_or_default().to_string_lossy())),
            Some((8193, 1024)),
        )?;
        ensure!(oracle == want, "debugfs -c -s 8193 does not read {} (oracle)", s(img));
        let (codes, got) = all_commands(&d, img, 1, &[])?;
        ensure!(codes.iter().any(|c| c == "ext.superblock-backup"), "{}: {codes:?}", s(img));
        ensure!(got == oracle, "{}: extract differs from debugfs -c -s 8193 rdump", s(img));
    }
    // A stale bg_itable_unused: the files are there, the hint says the inodes never were.
    let stale = copy("stale.img")?;
    let dump = String::from_utf8_lossy(&run_ok(Command::new("dumpe2fs").args(["-h", s(&stale)]))?.stdout).to_string();
    let ipg: u32 = dump
        .lines()
        .find(|l| l.starts_with("Inodes per group:"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .ok_or("no inodes per group")?;
    run_ok(Command::new("debugfs").args(["-w", "-R", &format!("set_bg 0 itable_unused {}", ipg - 5), s(&stale)]))?;
    run_ok(Command::new("debugfs").args(["-w", "-R", "set_bg 0 checksum calc", s(&stale)]))?;
    ensure!(fsck_code(&stale)? != 0, "e2fsck -fn calls the stale-hint image clean");
    let oracle = rdump(&stale, &d.path("rd-stale"), None)?;
    ensure!(oracle == want, "debugfs rdump of the stale-hint image (oracle)");
    let (codes, got) = all_commands(&d, &stale, 1, &[])?;
    ensure!(codes.iter().any(|c| c == "ext.itable-unused"), "stale hint: {codes:?}");
    ensure!(got == oracle, "stale hint: files hidden: {got:?}");
    Ok(Completion::Completed)
}

fn extract_unreadable_and_unrestorable() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("ext-extract");
    let t = tree(&d)?;
    let want = hashes(&t)?;
    let img = d.path("ext2.img");
    // ext2: classic block maps, so `sif block[N]` sets a data block pointer.
    mkfs(&img, &t, &["-t", "ext2", "-b", "1024"], "8M")?;
    // /sub/f2's 3rd block points far outside the file system; /link's target gets a NUL byte.
    run_ok(Command::new("debugfs").args(["-w", "-R", "sif /sub/f2 block[2] 99999999", s(&img)]))?;
    run_ok(Command::new("debugfs").args(["-w", "-R", "sif /link block[0] 0x41004141", s(&img)]))?;
    ensure!(fsck_code(&img)? != 0, "e2fsck -fn calls the damaged image clean");
    let (codes, got) = all_commands(&d, &img, 1, &[])?;
    ensure!(codes.iter().any(|c| c == "extract.unreadable"), "no extract.unreadable: {codes:?}");
    ensure!(codes.iter().any(|c| c == "extract.skipped"), "the NUL symlink was not reported: {codes:?}");
    ensure!(!got.contains_key("sub/f2"), "the unreadable file was written: {:?}", got.get("sub/f2"));
    ensure!(!got.contains_key("link"), "the NUL symlink was created");
    let mut rest = want.clone();
    rest.remove("sub/f2");
    rest.remove("link");
    ensure!(got == rest, "the rest of the tree was not extracted:\n{got:?}\n{rest:?}");
    // --allow-damaged: written with zeros where unreadable, said so, exit still 1.
    let (codes, got) = all_commands(&d, &img, 1, &["--allow-damaged"])?;
    ensure!(codes.iter().any(|c| c == "extract.damaged"), "no extract.damaged: {codes:?}");
    let f2 = got.get("sub/f2").ok_or("--allow-damaged did not write /sub/f2")?;
    ensure!(f2.1.starts_with("140001 ") && f2 != &want["sub/f2"], "/sub/f2 written as {f2:?}");
    // Outside the damaged block, the bytes are the original ones (debugfs dump is the oracle for
    // the readable blocks; block 2 of 1 KiB = bytes 2048..3072 are zeros).
    let ours = std::fs::read(d.path("x-ext2.img-1/sub/f2")).map_err(|e| e.to_string())?;
    let orig = std::fs::read(t.join("sub/f2")).map_err(|e| e.to_string())?;
    ensure!(ours[..2048] == orig[..2048] && ours[3072..] == orig[3072..], "readable parts differ");
    ensure!(ours[2048..3072].iter().all(|&b| b == 0), "the unreadable block is not zeros");
    Ok(Completion::Completed)
}

/// A data block claimed by two files (`sif` points /sub/f2's first block at /sub/f1's: e2fsck
/// pass 1B "multiply-claimed blocks") and an htree leaf referenced by two index entries (the
/// root's second entry patched to the first's block: e2fsck "block #1 referenced twice"): both
/// reported, the same exit code everywhere, and every name still listed.
fn blocks_claimed_twice() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("ext-twice");
    let t = tree(&d)?;
    let want = hashes(&t)?;
    let img = d.path("shared.img");
    mkfs(&img, &t, &["-t", "ext2", "-b", "1024"], "8M")?;
    let blocks =
        String::from_utf8_lossy(&run_ok(Command::new("debugfs").args(["-R", "blocks /sub/f1", s(&img)]))?.stdout)
            .to_string();
    let first = blocks.split_whitespace().next().ok_or("debugfs blocks printed nothing")?.to_string();
    run_ok(Command::new("debugfs").args(["-w", "-R", &format!("sif /sub/f2 block[0] {first}"), s(&img)]))?;
    let fsck = String::from_utf8_lossy(&run(Command::new("e2fsck").args(["-fn", s(&img)]))?.stdout).to_string();
    ensure!(fsck.contains("Multiply-claimed"), "e2fsck does not see the shared block:\n{fsck}");
    let (codes, got) = all_commands(&d, &img, 1, &[])?;
    ensure!(codes.iter().any(|c| c == "ext.shared-blocks"), "shared block not reported: {codes:?}");
    // One of the two files is not written without --allow-damaged; the rest is the source.
    let mut rest = want.clone();
    let dropped: Vec<&str> = ["sub/f1", "sub/f2"].into_iter().filter(|p| !got.contains_key(*p)).collect();
    ensure!(dropped.len() == 1, "expected exactly one of the two files to be held back: {dropped:?}");
    rest.remove(dropped[0]);
    ensure!(got == rest, "shared block: extracted tree\n{got:?}\n{rest:?}");

    // htree: 300 names, indexed by e2fsck -D, then the root's second entry pointed at the first leaf.
    let ht = d.path("ht");
    std::fs::create_dir_all(ht.join("many")).map_err(|e| e.to_string())?;
    for i in 0..300 {
        std::fs::write(ht.join(format!("many/a-rather-long-file-name-number-{i:04}")), format!("{i}\n"))
            .map_err(|e| e.to_string())?;
    }
    let want = hashes(&ht)?;
    let img = d.path("htree.img");
    mkfs(&img, &ht, &["-t", "ext3", "-b", "1024"], "8M")?;
    run(Command::new("e2fsck").args(["-fyD", s(&img)]))?;
    let stat = String::from_utf8_lossy(&run_ok(Command::new("debugfs").args(["-R", "stat /many", s(&img)]))?.stdout)
        .to_string();
    ensure!(stat.contains("Flags: 0x1000"), "/many is not an htree directory:\n{stat}");
    ensure!(fsck_code(&img)? == 0, "the indexed image is not clean");
    let blocks =
        String::from_utf8_lossy(&run_ok(Command::new("debugfs").args(["-R", "blocks /many", s(&img)]))?.stdout)
            .to_string();
    let root: u64 = blocks.split_whitespace().next().and_then(|b| b.parse().ok()).ok_or("no /many block")?;
    let mut b = std::fs::read(&img).map_err(|e| e.to_string())?;
    let at = (root * 1024) as usize;
    let first_leaf = [b[at + 0x24], b[at + 0x25], b[at + 0x26], b[at + 0x27]];
    b[at + 0x2C..at + 0x30].copy_from_slice(&first_leaf);
    std::fs::write(&img, b).map_err(|e| e.to_string())?;
    let fsck = String::from_utf8_lossy(&run(Command::new("e2fsck").args(["-fn", s(&img)]))?.stdout).to_string();
    ensure!(fsck.contains("referenced twice"), "e2fsck does not see the doubled htree reference:\n{fsck}");
    let (codes, got) = all_commands(&d, &img, 1, &[])?;
    ensure!(codes.iter().any(|c| c == "ext.htree"), "htree reference not reported: {codes:?}");
    ensure!(got == want, "htree: names lost or changed");
    Ok(Completion::Completed)
}

/// A directory whose i_size claims far more blocks than it maps (`debugfs sif DIR size`): every
/// block past the mapped ones is a hole, and `verify` must count exactly the holes `debugfs
/// blocks` implies (size / block size minus the blocks listed) while still listing the files;
/// e2fsck must call the image damaged. Both block maps (ext2) and extents (ext4), and a size of
/// 1 GiB (a million holes: walked per mapped block, not per block).
fn directory_size_past_its_blocks() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("ext-dir-holes");
    let t = tree(&d)?;
    for (fs, size) in [("ext2", 4u64 << 20), ("ext4", 1 << 30)] {
        let img = d.path(&format!("{fs}.img"));
        mkfs(&img, &t, &["-t", fs, "-b", "1024"], "8M")?;
        let listed =
            String::from_utf8_lossy(&run_ok(Command::new("debugfs").args(["-R", "blocks sub", s(&img)]))?.stdout)
                .split_whitespace()
                .filter(|w| w.parse::<u64>().is_ok())
                .count() as u64;
        ensure!(listed > 0, "{fs}: debugfs lists no blocks for sub");
        run_ok(Command::new("debugfs").args(["-w", "-R", &format!("sif sub size {size}"), s(&img)]))?;
        ensure!(fsck_code(&img)? != 0, "{fs}: e2fsck -fn calls the image clean");
        let holes = size / 1024 - listed;
        let o = run(&mut loopkit(&["verify", "--json", s(&img)]))?;
        let v = json(&o)?;
        ensure!(code(&o) == 1, "{fs}: verify exit {} {v}", code(&o));
        let msgs: Vec<&str> = v["problems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["code"] == "ext.dir-hole")
            .filter_map(|p| p["message"].as_str())
            .collect();
        let want = format!("{holes} of its {} blocks are holes", size / 1024);
        ensure!(msgs.iter().any(|m| m.contains(&want)), "{fs}: want \"{want}\" (debugfs lists {listed}), got {msgs:?}");
        ensure!(v["files"]["count"].as_u64().is_some_and(|n| n >= 5), "{fs}: files {}", v["files"]);
    }
    Ok(Completion::Completed)
}
