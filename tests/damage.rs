//! Damage mapped to files (`verify`'s `damage` section) and `extract --salvage`. Fixtures are made
//! by mke2fs / genisoimage (and cryptoloop through `legacy.py`), augmented with RS02 by the real
//! dvdisaster (≥ 32 roots, bounded by `ecc.py`), then damaged with dvdisaster's own dead-sector
//! markers (`--erase`). Oracles, all independent of loopkit:
//! - which damaged sectors can be restored: dvdisaster `-f` on a copy, compared sector by sector
//!   with the undamaged image (restored = repairable, else lost);
//! - what a sector hits: `debugfs icheck` → `ncheck` (every name of the inode), `bmap` for the
//!   byte offsets inside the file, `imap` for inode slots, `testb` for free blocks, on the
//!   undamaged plaintext file system; for ISO9660 the extents `isoinfo -R -l` lists;
//! - salvaged files: the source tree, with zeros exactly in the lost ranges.

use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, run_ok, trial};
use libtest_mimic::{Completion, Failed, Trial};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("damage::ext4_repairable", ext4_repairable),
        trial("damage::ext4_lost_and_salvage", ext4_lost_and_salvage),
        trial("damage::ext2_cryptoloop", ext2_cryptoloop),
        trial("damage::iso9660_rs02", iso9660_rs02),
    ]
}

pub(crate) const SECTOR: u64 = 2048;

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

pub(crate) fn missing() -> Option<String> {
    if let Some(m) = crate::ecc_verify::prerequisites() {
        return Some(m);
    }
    let m: Vec<&str> = ["mke2fs", "debugfs", "isoinfo"].into_iter().filter(|t| !util::have(t)).collect();
    if m.is_empty() { None } else { Some(format!("missing tools: {}", m.join(", "))) }
}

/// What the oracle expects for one path: lost and repairable byte ranges, whether its inode or
/// map was hit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Want {
    pub(crate) lost: Vec<Range<u64>>,
    pub(crate) repairable: Vec<Range<u64>>,
    pub(crate) whole: bool,
    pub(crate) any_lost: bool,
}

pub(crate) fn merge(mut v: Vec<Range<u64>>) -> Vec<Range<u64>> {
    v.retain(|r| r.start < r.end);
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in v {
        match out.last_mut() {
            Some(l) if r.start <= l.end => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

fn subtract(a: &[Range<u64>], b: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in a {
        let mut pieces = vec![r.clone()];
        for x in b {
            pieces = pieces
                .into_iter()
                .flat_map(|p| {
                    let mut v = Vec::new();
                    if x.start > p.start {
                        v.push(p.start..x.start.min(p.end));
                    }
                    if x.end < p.end {
                        v.push(x.end.max(p.start)..p.end);
                    }
                    v.into_iter().filter(|q| q.start < q.end).collect::<Vec<_>>()
                })
                .collect();
        }
        out.extend(pieces);
    }
    merge(out)
}

/// Copy, augment with RS02 (32 roots), keep the undamaged augmented image.
pub(crate) fn augmented(d: &Scratch, src: &Path, name: &str) -> Result<(PathBuf, PathBuf), Failed> {
    let img = d.path(name);
    crate::ecc_verify::augment(src, &img, "RS02", &["--roots", "32"])?;
    let orig = d.path(&format!("{name}.orig"));
    std::fs::copy(&img, &orig).map_err(|e| e.to_string())?;
    Ok((img, orig))
}

/// Erase `sectors` with dvdisaster's dead-sector markers, then ask dvdisaster which of them it
/// restores: sector → lost?
pub(crate) fn damage_and_judge(
    d: &Scratch,
    img: &Path,
    orig: &Path,
    sectors: &[u64],
) -> Result<BTreeMap<u64, bool>, Failed> {
    let mut list: Vec<String> = Vec::new();
    let mut sorted = sectors.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        list.push(if i == j { sorted[i].to_string() } else { format!("{}-{}", sorted[i], sorted[j]) });
        i = j + 1;
    }
    crate::ecc_verify::ecc_py(&["erase", "--image", s(img), "--sectors", &list.join(",")])?;
    let fixed = d.path("fixed.img");
    std::fs::copy(img, &fixed).map_err(|e| e.to_string())?;
    crate::ecc_verify::ecc_py(&["fix", "--image", s(&fixed)])?;
    let (a, b) = (std::fs::read(&fixed).map_err(|e| e.to_string())?, std::fs::read(orig).map_err(|e| e.to_string())?);
    let _ = std::fs::remove_file(&fixed);
    let sec = |v: &[u8], x: u64| v.get((x * SECTOR) as usize..((x + 1) * SECTOR) as usize).map(<[u8]>::to_vec);
    Ok(sectors.iter().map(|&x| (x, sec(&a, x) != sec(&b, x))).collect())
}

/// `debugfs -f CMDS IMG`, stdout.
pub(crate) fn debugfs(img: &Path, cmds: &[String]) -> Result<String, Failed> {
    let d = Scratch::new("damage-debugfs");
    let f = d.path("cmds");
    std::fs::write(&f, cmds.join("\n") + "\n").map_err(|e| e.to_string())?;
    let out = run_ok(Command::new("debugfs").args(["-f", s(&f), s(img)]))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `CMD ARGS…` split into lines of at most 50 arguments (debugfs -f cuts long lines).
fn chunked(cmd: &str, args: &[String]) -> Vec<String> {
    args.chunks(50).map(|c| format!("{cmd} {}", c.join(" "))).collect()
}

/// A `debugfs stats` field.
fn stat_field(stats: &str, name: &str) -> Option<u64> {
    stats.lines().find_map(|l| l.trim().strip_prefix(name)?.trim().trim_start_matches(':').trim().parse().ok())
}

/// The oracle for an ext file system in `plain` (the undamaged plaintext): damaged plaintext
/// ranges (lost?) → per path what is expected, and which area kinds must appear.
pub(crate) fn ext_oracle(
    plain: &Path,
    hits: &[(Range<u64>, bool)],
) -> Result<(BTreeMap<String, Want>, BTreeSet<&'static str>), Failed> {
    let stats = debugfs(plain, &["stats".into()])?;
    let bs = stat_field(&stats, "Block size").ok_or("no block size in debugfs stats")?;
    let isz = stat_field(&stats, "Inode size").ok_or("no inode size")?;
    let inodes = stat_field(&stats, "Inode count").ok_or("no inode count")?;
    let mut blocks: BTreeMap<u64, Vec<(Range<u64>, bool)>> = BTreeMap::new();
    for (r, lost) in hits {
        for b in r.start / bs..r.end.div_ceil(bs) {
            blocks.entry(b).or_default().push((r.start.max(b * bs)..r.end.min((b + 1) * bs), *lost));
        }
    }
    // icheck: block → inode.
    let list: Vec<String> = blocks.keys().map(u64::to_string).collect();
    let out = debugfs(plain, &chunked("icheck", &list))?;
    let mut owner: BTreeMap<u64, u64> = BTreeMap::new();
    for l in out.lines() {
        let mut w = l.split_whitespace();
        if let (Some(b), Some(i)) = (w.next().and_then(|x| x.parse().ok()), w.next().and_then(|x| x.parse().ok())) {
            owner.insert(b, i);
        }
    }
    // Every name of every inode (ncheck over all inode numbers).
    let all: Vec<String> = (1..=inodes).map(|i| i.to_string()).collect();
    let out = debugfs(plain, &chunked("ncheck", &all))?;
    let mut names: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for l in out.lines() {
        if let Some((i, p)) = l.split_once('\t')
            && let Ok(i) = i.trim().parse()
        {
            names.entry(i).or_default().push(p.trim().trim_start_matches('/').to_string());
        }
    }
    // The root has no ncheck name.
    names.entry(2).or_default().push(String::new());
    let mut want: BTreeMap<String, Want> = BTreeMap::new();
    let mut kinds: BTreeSet<&'static str> = BTreeSet::new();
    // Data and map blocks.
    for (b, parts) in &blocks {
        let Some(&ino) = owner.get(b) else {
            let t = debugfs(plain, &[format!("testb {b}")])?;
            if t.contains("not in use") {
                kinds.insert("free-space");
            }
            continue;
        };
        let Some(paths) = names.get(&ino) else {
            if ino == 8 {
                kinds.insert("journal");
            }
            continue;
        };
        let st = debugfs(plain, &[format!("stat <{ino}>")])?;
        let size: u64 = st
            .lines()
            .find_map(|l| l.split("Size: ").nth(1)?.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| format!("no size for inode {ino}"))?;
        let n = size.div_ceil(bs);
        let cmds: Vec<String> = (0..n).map(|l| format!("bmap <{ino}> {l}")).collect();
        let out = if n > 0 { debugfs(plain, &cmds)? } else { String::new() };
        let phys: Vec<u64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
        let logical = phys.iter().position(|p| p == b);
        for p in paths {
            let w = want.entry(p.clone()).or_default();
            for (r, lost) in parts {
                let range = match logical {
                    Some(l) => (l as u64 * bs + (r.start - b * bs))..(l as u64 * bs + (r.end - b * bs)).min(size),
                    None => {
                        w.whole = true;
                        0..size
                    }
                };
                w.any_lost |= *lost;
                if *lost { w.lost.push(range) } else { w.repairable.push(range) }
            }
        }
    }
    // Inode slots.
    let cmds: Vec<String> = names.keys().map(|i| format!("imap <{i}>")).collect();
    let out = debugfs(plain, &cmds)?;
    let mut cur: Option<u64> = None;
    for l in out.lines() {
        if let Some(rest) = l.trim().strip_prefix("Inode ") {
            cur = rest.split_whitespace().next().and_then(|x| x.parse().ok());
        } else if let (Some(ino), Some(rest)) = (cur, l.trim().strip_prefix("located at block ")) {
            let mut it = rest.split(", offset ");
            let blk: u64 = it.next().and_then(|x| x.trim().parse().ok()).unwrap_or(0);
            let off =
                it.next().and_then(|x| u64::from_str_radix(x.trim().trim_start_matches("0x"), 16).ok()).unwrap_or(0);
            let slot = blk * bs + off..blk * bs + off + isz;
            for (r, lost) in hits {
                if r.start < slot.end && r.end > slot.start {
                    kinds.insert("inode-table");
                    for p in names.get(&ino).into_iter().flatten() {
                        let w = want.entry(p.clone()).or_default();
                        w.whole = true;
                        w.any_lost |= *lost;
                    }
                }
            }
        }
    }
    Ok((want, kinds))
}

fn ranges_of(v: &Value) -> Vec<Range<u64>> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    Some(r["offset_bytes"].as_u64()?..r["offset_bytes"].as_u64()? + r["size_bytes"].as_u64()?)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// loopkit's `damage` section against the oracle.
pub(crate) fn compare(v: &Value, want: &BTreeMap<String, Want>, kinds: &BTreeSet<&'static str>) -> Result<(), Failed> {
    let d = &v["damage"];
    ensure!(d.is_object(), "no damage section: {v}");
    let files = d["files"].as_array().cloned().unwrap_or_default();
    let got: BTreeSet<String> = files.iter().filter_map(|f| f["path"].as_str().map(String::from)).collect();
    let expected: BTreeSet<String> = want.keys().cloned().collect();
    ensure!(got == expected, "damaged paths: loopkit {got:?}, oracle {expected:?}\n{d:#}");
    for f in &files {
        let path = f["path"].as_str().unwrap_or_default();
        let w = &want[path];
        let verdict = if w.any_lost { "lost" } else { "repairable" };
        ensure!(f["verdict"] == verdict, "/{path}: verdict {}, oracle {verdict}\n{f}", f["verdict"]);
        if f["type"].is_null() {
            ensure!(w.whole, "/{path}: loopkit could not read its node, but the oracle names only data");
            continue;
        }
        if w.whole {
            continue; // inode or map hit: the whole file counts; its size is checked below
        }
        let lost = merge(w.lost.clone());
        let rep = subtract(&merge(w.repairable.clone()), &lost);
        ensure!(
            ranges_of(&f["lost_ranges"]) == lost,
            "/{path}: lost {:?}, oracle {lost:?}",
            ranges_of(&f["lost_ranges"])
        );
        ensure!(
            ranges_of(&f["repairable_ranges"]) == rep,
            "/{path}: repairable {:?}, oracle {rep:?}",
            ranges_of(&f["repairable_ranges"])
        );
    }
    let got_kinds: BTreeSet<String> =
        d["areas"].as_array().into_iter().flatten().filter_map(|a| a["kind"].as_str().map(String::from)).collect();
    for k in kinds {
        ensure!(got_kinds.contains(*k), "area {k} not reported: {got_kinds:?}");
    }
    let (r, l) = (
        files.iter().filter(|f| f["verdict"] == "repairable").count(),
        files.iter().filter(|f| f["verdict"] == "lost").count(),
    );
    let summary = format!("{} {} damaged: {r} repairable, {l} lost", r + l, if r + l == 1 { "file" } else { "files" });
    ensure!(
        d["summary"].as_str().is_some_and(|x| x.starts_with(&summary)),
        "summary {}, want {summary}…",
        d["summary"]
    );
    Ok(())
}

/// `loopkit verify --json IMAGE ARGS`: exit 1 (damage is a problem), the JSON.
fn lk_verify(img: &Path, args: &[&str]) -> Result<Value, Failed> {
    let mut c = loopkit(&["verify", "--json", s(img)]);
    c.args(args);
    let out = run(&mut c)?;
    ensure!(code(&out) == 1, "verify exit {} (1 expected):\n{}", code(&out), String::from_utf8_lossy(&out.stderr));
    json(&out)
}

/// Damaged plaintext ranges of an unencrypted or cryptoloop (offset 0, 512-byte sectors)
/// payload of `payload_bytes`: the sectors themselves.
pub(crate) fn plain_hits(judged: &BTreeMap<u64, bool>, payload_bytes: u64) -> Vec<(Range<u64>, bool)> {
    judged
        .iter()
        .filter(|(x, _)| **x * SECTOR < payload_bytes)
        .map(|(&x, &lost)| (x * SECTOR..((x + 1) * SECTOR).min(payload_bytes), lost))
        .collect()
}

/// The tree of the ext fixtures: a 3 MB file, small files, a slow symlink, a hard link.
pub(crate) fn tree(d: &Scratch) -> Result<PathBuf, Failed> {
    let t = d.path("tree");
    std::fs::create_dir_all(t.join("sub/deeper")).map_err(|e| e.to_string())?;
    let mut x: u32 = 777;
    for (name, len) in
        [("a.txt", 13usize), ("sub/big", 3_000_000), ("sub/f1", 70_000), ("sub/deeper/f3", 33_333), ("z", 5000)]
    {
        let b: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        std::fs::write(t.join(name), b).map_err(|e| e.to_string())?;
    }
    std::os::unix::fs::symlink("t".repeat(100), t.join("slowlink")).map_err(|e| e.to_string())?;
    std::fs::hard_link(t.join("z"), t.join("sub/z-again")).map_err(|e| e.to_string())?;
    Ok(t)
}

pub(crate) fn ext4_fixture(d: &Scratch) -> Result<(PathBuf, PathBuf), Failed> {
    let t = tree(d)?;
    let plain = d.path("ext4.img");
    crate::ext_damage::mkfs(&plain, &t, &["-t", "ext4", "-b", "4096", "-J", "size=4"], "16M")?;
    Ok((t, plain))
}

/// The first line of `debugfs CMD` output that parses as a number.
pub(crate) fn number(plain: &Path, cmd: &str) -> Result<u64, Failed> {
    let out = debugfs(plain, &[cmd.to_string()])?;
    out.lines()
        .filter(|l| !l.starts_with("debugfs:"))
        .flat_map(|l| l.split(|c: char| !c.is_ascii_digit()))
        .find_map(|w| w.parse().ok())
        .ok_or_else(|| format!("{cmd}: {out}").into())
}

fn ext4_repairable() -> TestResult {
    if let Some(m) = missing() {
        return util::skip(m);
    }
    let d = Scratch::new("damage-ext4-rep");
    let (_, plain) = ext4_fixture(&d)?;
    let (img, orig) = augmented(&d, &plain, "a.img")?;
    // Chosen hits (4 KiB blocks = 2 sectors): the second half of a block of /sub/f1, the slow
    // symlink, /z's inode slot (and the 7 others in its sector), a free block, the journal.
    let f1 = number(&plain, "bmap /sub/f1 3")?;
    let slow = number(&plain, "bmap /slowlink 0")?;
    let jblk = number(&plain, "bmap <8> 5")?;
    let free = number(&plain, "ffb 1 1500")?;
    let imap = debugfs(&plain, &["imap /z".into()])?;
    let zb: u64 =
        imap.split("located at block ").nth(1).and_then(|r| r.split(',').next()?.trim().parse().ok()).ok_or("imap")?;
    let zo =
        imap.split("offset 0x").nth(1).and_then(|r| u64::from_str_radix(r.trim(), 16).ok()).ok_or("imap offset")?;
    let sectors: Vec<u64> =
        BTreeSet::from([f1 * 2 + 1, slow * 2, (zb * 4096 + zo) / SECTOR, free * 2, jblk * 2]).into_iter().collect();
    let judged = damage_and_judge(&d, &img, &orig, &sectors)?;
    ensure!(judged.values().all(|l| !l), "dvdisaster should restore these few sectors: {judged:?}");
    let size = std::fs::metadata(&plain).map_err(|e| e.to_string())?.len();
    let (want, kinds) = ext_oracle(&plain, &plain_hits(&judged, size))?;
    ensure!(kinds.contains("free-space") && kinds.contains("journal") && kinds.contains("inode-table"), "{kinds:?}");
    ensure!(want.contains_key("slowlink") && want.contains_key("sub/z-again"), "{want:?}");
    let v = lk_verify(&img, &[])?;
    compare(&v, &want, &kinds)?;
    Ok(Completion::Completed)
}

fn ext4_lost_and_salvage() -> TestResult {
    if let Some(m) = missing() {
        return util::skip(m);
    }
    let d = Scratch::new("damage-ext4-lost");
    let (t, plain) = ext4_fixture(&d)?;
    let (img, orig) = augmented(&d, &plain, "a.img")?;
    // 1300 sectors inside /sub/big: more erasures per codeword than roots (8192 sectors / 223
    // layers ≈ 37 per layer, × 33 = 1221), so everything damaged is lost; plus a block of
    // /sub/f1 and the block of directory /sub/deeper (its entry for f3 is lost; f3 itself is
    // not hit, and not found).
    let big = number(&plain, "bmap /sub/big 20")?;
    let f1 = number(&plain, "bmap /sub/f1 2")?;
    let deeper = number(&plain, "bmap /sub/deeper 0")?;
    let mut sectors: Vec<u64> = (big * 2 + 1..big * 2 + 1301).collect();
    sectors.extend([f1 * 2, deeper * 2]);
    let judged = damage_and_judge(&d, &img, &orig, &sectors)?;
    ensure!(judged.values().any(|l| *l), "dvdisaster restored everything: the damage is not beyond the ECC");
    let size = std::fs::metadata(&plain).map_err(|e| e.to_string())?.len();
    let (want, kinds) = ext_oracle(&plain, &plain_hits(&judged, size))?;
    ensure!(want.contains_key("sub/deeper") && want.contains_key("sub/big"), "{want:?}");
    let v = lk_verify(&img, &[])?;
    compare(&v, &want, &kinds)?;
    // extract --salvage: the original outside the lost ranges, zeros inside; the sidecar lists them.
    let dest = d.path("out");
    let out = run(&mut loopkit(&["extract", "--json", "--salvage", s(&img), s(&dest)]))?;
    ensure!(code(&out) == 1, "extract --salvage exit {}: {}", code(&out), String::from_utf8_lossy(&out.stderr));
    let side: Value = serde_json::from_slice(&std::fs::read(d.path("out.damage.json")).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let listed: BTreeMap<String, Vec<Range<u64>>> = side["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f["path"].as_str()?.to_string(), ranges_of(&f["lost_ranges"]))))
        .collect();
    for (path, w) in &want {
        let Ok(src) = std::fs::read(t.join(path)) else { continue }; // directories
        if std::fs::symlink_metadata(t.join(path)).map_err(|e| e.to_string())?.is_dir() {
            continue;
        }
        let lost = merge(w.lost.clone());
        ensure!(listed.get(path) == Some(&lost), "sidecar for {path}: {:?}, oracle {lost:?}", listed.get(path));
        let got = std::fs::read(dest.join(path)).map_err(|e| format!("{path}: {e}"))?;
        ensure!(got.len() == src.len(), "{path}: {} bytes, source {}", got.len(), src.len());
        let mut expect = src.clone();
        for r in &lost {
            expect[r.start as usize..r.end as usize].fill(0);
        }
        ensure!(
            got == expect,
            "{path}: salvaged bytes differ from the source outside the lost ranges or are not zero inside"
        );
    }
    // Intact files are written whole.
    ensure!(std::fs::read(dest.join("a.txt")).ok() == std::fs::read(t.join("a.txt")).ok(), "a.txt");
    Ok(Completion::Completed)
}

fn ext2_cryptoloop() -> TestResult {
    if let Some(m) = missing() {
        return util::skip(m);
    }
    let (d, f, pass) = match crate::legacy::rmd160_fixture("damage-cryptoloop", "c.img", "ext2")? {
        Ok(x) => x,
        Err(r) => return util::skip(r),
    };
    let plains = crate::legacy::plains().map_err(Failed::from)?;
    let plain = plains.dir.join("ext2.img");
    let (img, orig) = augmented(&d, &f.image, "c-rs02.img")?;
    // Arbitrary sectors: whatever they hit, the oracle names (1 KiB blocks: a sector is 2 blocks).
    let judged = damage_and_judge(&d, &img, &orig, &[30, 31, 200, 333, 700, 1000, 1400])?;
    let size = std::fs::metadata(&plain).map_err(|e| e.to_string())?.len();
    let (want, kinds) = ext_oracle(&plain, &plain_hits(&judged, size))?;
    ensure!(!want.is_empty(), "the chosen sectors hit no file: choose others");
    let v = lk_verify(&img, &["--passphrase-file", s(&pass)])?;
    ensure!(v["damage"]["cipher_sector_bytes"] == 512, "{}", v["damage"]);
    compare(&v, &want, &kinds)?;
    Ok(Completion::Completed)
}

fn iso9660_rs02() -> TestResult {
    if let Some(m) = missing() {
        return util::skip(m);
    }
    let d = Scratch::new("damage-iso");
    let iso = crate::ecc_verify::iso_input(&d, "in.iso")?;
    let (img, orig) = augmented(&d, &iso, "a.iso")?;
    // The oracle's extents: `isoinfo -R -l` — "[ LBA flags]" and the size column.
    let out = run_ok(Command::new("isoinfo").args(["-R", "-l", "-i", s(&iso)]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut extents: Vec<(String, Range<u64>)> = Vec::new();
    let mut dir = String::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("Directory listing of ") {
            dir = rest.trim().trim_start_matches('/').to_string();
            continue;
        }
        let Some((head, tail)) = l.split_once('[') else { continue };
        let Some((inside, name)) = tail.split_once(']') else { continue };
        let lba: u64 = inside.split_whitespace().next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let size: u64 = head.split_whitespace().nth(4).and_then(|x| x.parse().ok()).unwrap_or(0);
        let name = name.trim();
        let path = match name {
            "." => dir.trim_end_matches('/').to_string(),
            ".." => continue,
            n => format!("{dir}{n}"),
        };
        extents.push((path, lba * SECTOR..lba * SECTOR + size));
    }
    let f1 = extents.iter().find(|(p, _)| p == "file1.bin").map(|(_, r)| r.start / SECTOR).ok_or("no file1.bin")?;
    let f3 = extents.iter().find(|(p, _)| p == "file3.bin").map(|(_, r)| r.end / SECTOR).ok_or("no file3.bin")?;
    // Not the root directory: a dead-sector marker in its first sector hides the Rock Ridge
    // signature, so the reader falls back to the Joliet tree (another root extent).
    let sectors = [f1 + 3, f1 + 4, f3 - 1, 8];
    let judged = damage_and_judge(&d, &img, &orig, &sectors)?;
    let size = std::fs::metadata(&iso).map_err(|e| e.to_string())?.len();
    let mut want: BTreeMap<String, Want> = BTreeMap::new();
    for (r, lost) in plain_hits(&judged, size) {
        for (p, e) in &extents {
            if r.start < e.end && r.end > e.start {
                let w = want.entry(p.clone()).or_default();
                let range = r.start.max(e.start) - e.start..r.end.min(e.end) - e.start;
                w.any_lost |= lost;
                if lost { w.lost.push(range) } else { w.repairable.push(range) }
            }
        }
    }
    ensure!(want.len() == 2, "the chosen sectors should hit two files: {want:?}");
    let v = lk_verify(&img, &[])?;
    compare(&v, &want, &BTreeSet::from(["other-metadata"]))?;
    Ok(Completion::Completed)
}
