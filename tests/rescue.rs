//! `loopkit rescue`: the map format and the rescue's outcome against GNU ddrescue (the same
//! simulated faults through both tools' `--test-mode`; `ddrescuelog` reads loopkit's maps and
//! loopkit continues ddrescue's), and the early stop with dvdisaster error-correction data
//! (the oracle: the undamaged image dvdisaster made).

use crate::ecc_verify::{RAW_BYTES, RS03_CAPACITY, augment, ecc_py, p, prerequisites, raw_input};
use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, run_ok, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("rescue::same_bad_sectors_as_ddrescue", same_bad_sectors_as_ddrescue),
        trial("rescue::maps_continue_across_tools", maps_continue_across_tools),
        trial("rescue::refusals", refusals),
        trial("rescue::stops_early_when_ecc_suffices", stops_early_when_ecc_suffices),
        trial("rescue::damage_names_the_files_debugfs_names", damage_names_the_files_debugfs_names),
    ]
}

fn ddrescue_missing() -> Option<String> {
    (!util::have("ddrescue") || !util::have("ddrescuelog"))
        .then(|| "ddrescue/ddrescuelog (package gddrescue) not installed".into())
}

/// A deterministic file of `len` bytes.
fn source(path: &Path, len: usize) -> Result<(), Failed> {
    let mut x: u64 = 0x243F_6A88_85A3_08D3;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()).into())
}

/// `ddrescuelog -c-+`: a test-mode map with the listed 2048-byte sectors bad.
fn fault_map(path: &Path, size: u64, bad: &[u64]) -> Result<(), Failed> {
    let list: String = bad.iter().map(|s| format!("{s}\n")).collect();
    let mut child = Command::new("ddrescuelog")
        .args(["-b", "2048", "-s", &size.to_string(), "-c-+", p(path)])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("ddrescuelog: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        stdin.write_all(list.as_bytes()).map_err(|e| e.to_string())?;
    }
    let st = child.wait().map_err(|e| e.to_string())?;
    ensure!(st.success(), "ddrescuelog -c failed");
    Ok(())
}

/// The 2048-byte blocks of `types` in a map, as `ddrescuelog -l` lists them.
fn ddrescuelog_list(map: &Path, types: &str) -> Result<Vec<u64>, Failed> {
    let out = run_ok(Command::new("ddrescuelog").args(["-b", "2048", &format!("-l{types}"), p(map)]))?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|w| w.parse().ok()).collect())
}

fn rescue(args: &[&str]) -> Result<(i32, Value), Failed> {
    let mut full = vec!["rescue", "--json", "-q"];
    full.extend_from_slice(args);
    let o = run(&mut loopkit(&full))?;
    let c = code(&o);
    let v = json(&o).map_err(|e| format!("{e:?}; stderr: {}", String::from_utf8_lossy(&o.stderr)))?;
    Ok((c, v))
}

fn same_bad_sectors_as_ddrescue() -> TestResult {
    if let Some(r) = ddrescue_missing() {
        return util::skip(r);
    }
    let d = Scratch::new("rescue-dd");
    let src = d.path("src.bin");
    let size: u64 = 3_000_000; // not a multiple of the sector
    source(&src, size as usize)?;
    let before = sha256_file(&src)?;
    // Scattered sectors, a zone, and the last whole sector (ddrescuelog -c makes no block of a
    // partial last sector).
    let mut bad: Vec<u64> = vec![0, 100, 101, 102, 700];
    bad.extend(900..960);
    bad.push(size / 2048 - 1);
    let faults = d.path("faults.map");
    fault_map(&faults, size, &bad)?;
    let img = d.path("lk.img");
    let (c, v) = rescue(&[p(&src), "-o", p(&img), "--test-mode", p(&faults)])?;
    ensure!(c == 1 && v["stopped"] == "passes-exhausted" && v["ok"] == false, "exit {c}: {v}");
    ensure!(!img.exists(), "an incomplete rescue must not appear under the output name");
    let map = d.path("lk.img.map");
    let partial = d.path("lk.img.map.partial");
    // ddrescue on the same simulated faults.
    let dd_img = d.path("dd.img");
    let dd_map = d.path("dd.map");
    let o = run(Command::new("ddrescue").args([
        "-q",
        "-b",
        "2048",
        &format!("--test-mode={}", p(&faults)),
        p(&src),
        p(&dd_img),
        p(&dd_map),
    ]))?;
    ensure!(o.status.code().is_some(), "ddrescue did not run");
    let lk_bad = ddrescuelog_list(&map, "-")?;
    let dd_bad = ddrescuelog_list(&dd_map, "-")?;
    ensure!(lk_bad == bad, "loopkit's bad sectors (read by ddrescuelog) {lk_bad:?}, expected {bad:?}");
    ensure!(dd_bad == bad, "ddrescue's bad sectors {dd_bad:?}, expected {bad:?}");
    ensure!(ddrescuelog_list(&map, "?*/")?.is_empty(), "loopkit left untried areas");
    ensure!(v["bytes"]["bad"].as_u64() == Some(bad.len() as u64 * 2048), "{}", v["bytes"]);
    // Every sector both tools finished is the source's; the bad ones carry dead-sector markers.
    let (s, l, dd) = (
        std::fs::read(&src).map_err(|e| e.to_string())?,
        std::fs::read(&partial).map_err(|e| e.to_string())?,
        std::fs::read(&dd_img).map_err(|e| e.to_string())?,
    );
    ensure!(l.len() == s.len(), "partial image size {} vs {}", l.len(), s.len());
    for sec in 0..size.div_ceil(2048) {
        let r = (sec * 2048) as usize..((sec + 1) * 2048).min(size) as usize;
        if bad.contains(&sec) {
            ensure!(l[r.clone()].starts_with(b"dvdisaster dead sector marker"), "sector {sec} not marked");
        } else {
            ensure!(l[r.clone()] == s[r.clone()], "sector {sec} differs from the source");
            ensure!(dd.len() >= r.end && dd[r.clone()] == l[r], "sector {sec} differs from ddrescue's");
        }
    }
    ensure!(sha256_file(&src)? == before, "the source changed");
    Ok(Completion::Completed)
}

fn maps_continue_across_tools() -> TestResult {
    if let Some(r) = ddrescue_missing() {
        return util::skip(r);
    }
    let d = Scratch::new("rescue-resume");
    let src = d.path("src.bin");
    let size: u64 = 2_000_000;
    source(&src, size as usize)?;
    let bad: Vec<u64> = [5].into_iter().chain(300..340).chain([800]).collect();
    let faults = d.path("faults.map");
    fault_map(&faults, size, &bad)?;
    // 1. ddrescue starts (with faults), loopkit finishes with the drive now reading everything.
    let dd_img = d.path("dd.img");
    let dd_map = d.path("dd.map");
    run(Command::new("ddrescue").args([
        "-q",
        "-b",
        "2048",
        &format!("--test-mode={}", p(&faults)),
        p(&src),
        p(&dd_img),
        p(&dd_map),
    ]))?;
    ensure!(ddrescuelog_list(&dd_map, "-")? == bad, "ddrescue did not leave the expected bad sectors");
    // Only bad sectors are left, so continuing means retrying them (as ddrescue -r1).
    let (c, v) = rescue(&[p(&src), "-o", p(&dd_img), "--map", p(&dd_map), "--resume"])?;
    ensure!(c == 1 && v["reads"] == 0, "--resume with bad sectors left and no --passes reads nothing: exit {c}: {v}");
    let (c, v) = rescue(&[p(&src), "-o", p(&dd_img), "--map", p(&dd_map), "--resume", "--passes", "1"])?;
    ensure!(c == 0 && v["stopped"] == "complete", "exit {c}: {v}");
    ensure!(sha256_file(&dd_img)? == sha256_file(&src)?, "the continued ddrescue output differs from the source");
    let reread = v["bytes_read"].as_u64().unwrap_or(u64::MAX);
    ensure!(
        reread <= bad.len() as u64 * 2048,
        "loopkit re-read {reread} bytes; only {} were missing",
        bad.len() * 2048
    );
    let st = run(Command::new("ddrescuelog").args(["-D", p(&dd_map)]))?;
    ensure!(st.status.success(), "ddrescuelog -D: the map loopkit finished is not done");
    // 2. loopkit starts (with faults), ddrescue finishes its partial image with loopkit's map.
    let img = d.path("lk.img");
    let (c, _) = rescue(&[p(&src), "-o", p(&img), "--test-mode", p(&faults)])?;
    ensure!(c == 1, "first pass exit {c}");
    let map = d.path("lk.img.map");
    let partial = d.path("lk.img.map.partial");
    run_ok(Command::new("ddrescue").args(["-q", "-b", "2048", "-r1", p(&src), p(&partial), p(&map)]))?;
    ensure!(
        run(Command::new("ddrescuelog").args(["-D", p(&map)]))?.status.success(),
        "ddrescue did not finish loopkit's map"
    );
    ensure!(
        sha256_file(&partial)? == sha256_file(&src)?,
        "ddrescue's continuation of loopkit's partial image differs from the source"
    );
    // 3. loopkit continues its own interrupted map: the finished map makes it rename at once.
    let (c, v) = rescue(&[p(&src), "-o", p(&img), "--resume"])?;
    ensure!(c == 0 && v["reads"] == 0 && sha256_file(&img)? == sha256_file(&src)?, "exit {c}: {v}");
    Ok(Completion::Completed)
}

fn refusals() -> TestResult {
    let d = Scratch::new("rescue-refuse");
    let src = d.path("src.bin");
    source(&src, 100_000)?;
    let before = sha256_file(&src)?;
    let img = d.path("out.img");
    let (c, v) = rescue(&[p(&src), "-o", p(&img)])?;
    ensure!(c == 0 && v["ok"] == true && sha256_file(&img)? == before, "clean rescue: exit {c}: {v}");
    // The map exists: starting again needs --resume (or removing it).
    let img2 = d.path("out2.img");
    let (c, v) = rescue(&[p(&src), "-o", p(&img2), "--map", p(&d.path("out.img.map"))])?;
    ensure!(
        c == 2 && v["error"]["message"].as_str().is_some_and(|m| m.contains("--resume")),
        "existing map: exit {c}: {v}"
    );
    // The output exists.
    let (c, v) = rescue(&[p(&src), "-o", p(&img), "--map", p(&d.path("new.map"))])?;
    ensure!(c == 2 && v["error"]["kind"] == "unsafe", "existing output: exit {c}: {v}");
    // The output or the map is the source.
    for args in [vec![p(&src), "-o", p(&src)], vec![p(&src), "-o", p(&img2), "--map", p(&src)]] {
        let (c, v) = rescue(&args)?;
        ensure!(c == 2 && v["error"]["kind"] == "unsafe", "{args:?}: exit {c}: {v}");
    }
    // A map that is not a ddrescue map, or is of a larger source.
    let bad_map = d.path("bad.map");
    for text in ["garbage\n", "0x0 ?\n0x0 0x100000 +\n", "0x0 ?\n0x10 0x10 +\n"] {
        std::fs::write(&bad_map, text).map_err(|e| e.to_string())?;
        let (c, v) = rescue(&[p(&src), "-o", p(&img2), "--map", p(&bad_map), "--resume"])?;
        ensure!(c == 2 && v["error"]["kind"] == "corrupt", "map {text:?}: exit {c}: {v}");
    }
    // --resume without a map; a source that does not exist; a directory.
    let (c, _) = rescue(&[p(&src), "-o", p(&img2), "--map", p(&d.path("none.map")), "--resume"])?;
    ensure!(c == 2, "--resume without a map: exit {c}");
    let (c, _) = rescue(&[p(&d.path("nope")), "-o", p(&img2)])?;
    ensure!(c == 2, "missing source: exit {c}");
    let (c, _) = rescue(&[p(&d.0), "-o", p(&img2)])?;
    ensure!(c == 2, "directory source: exit {c}");
    ensure!(sha256_file(&src)? == before, "the source changed");
    Ok(Completion::Completed)
}

/// One protected image: the faults fit the code, so the rescue stops before reading what it
/// skipped, repairs and gets exactly the image dvdisaster made.
fn early_stop(d: &Scratch, name: &str, image: &Path, ecc: Option<&Path>, bad: &[u64]) -> Result<Value, Failed> {
    let size = std::fs::metadata(image).map_err(|e| e.to_string())?.len();
    let before = sha256_file(image)?;
    let faults = d.path(&format!("{name}.faults"));
    fault_map(&faults, size, bad)?;
    let out = d.path(&format!("{name}.rescued"));
    let mut args = vec![p(image), "-o", p(&out), "--test-mode", p(&faults)];
    if let Some(e) = ecc {
        args.extend(["--ecc", p(e)]);
    }
    let (c, v) = rescue(&args)?;
    ensure!(c == 0 && v["ok"] == true && v["stopped"] == "enough-for-ecc", "{name}: exit {c}: {v}");
    ensure!(sha256_file(&out)? == before, "{name}: the rescued and repaired image differs from dvdisaster's");
    let read = v["bytes_read"].as_u64().unwrap_or(u64::MAX);
    ensure!(read < size, "{name}: {read} bytes read of {size}: no early stop");
    ensure!(v["bytes"]["non_tried"].as_u64().is_some_and(|n| n > 0), "{name}: nothing was left unread: {v}");
    // Without the ECC the same faults leave the image incomplete (the control).
    let out2 = d.path(&format!("{name}.noecc"));
    let mut args = vec![p(image), "-o", p(&out2), "--test-mode", p(&faults), "--no-ecc"];
    if let Some(e) = ecc {
        args.extend(["--ecc", p(e)]);
    }
    let (c, v2) = rescue(&args)?;
    ensure!(c == 1 && v2["stopped"] == "passes-exhausted", "{name} --no-ecc: exit {c}: {v2}");
    ensure!(sha256_file(image)? == before, "{name}: the source changed");
    Ok(v)
}

fn stops_early_when_ecc_suffices() -> TestResult {
    if let Some(r) = ddrescue_missing().or_else(prerequisites) {
        return util::skip(r);
    }
    let d = Scratch::new("rescue-ecc");
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    // RS02 augmented: a zone in the data, one in the ECC area.
    let rs02 = d.path("rs02.img");
    augment(&orig, &rs02, "RS02", &["--roots", "32"])?;
    early_stop(&d, "rs02", &rs02, None, &(60..70).chain(530..534).collect::<Vec<_>>())?;
    // RS03 augmented.
    let rs03 = d.path("rs03.img");
    augment(&orig, &rs03, "RS03", &["--capacity", &RS03_CAPACITY.to_string()])?;
    early_stop(&d, "rs03", &rs03, None, &(200..204).chain(1000..1003).collect::<Vec<_>>())?;
    // RS01 and RS03 .ecc files beside a plain image.
    for method in ["RS01", "RS03"] {
        let e = d.path(&format!("raw.{method}.ecc"));
        ecc_py(&["eccfile", "--image", p(&orig), "--method", method, "--roots", "32", "--out", p(&e)])?;
        early_stop(&d, method, &orig, Some(&e), &[40, 41, 42, 300])?;
    }
    Ok(Completion::Completed)
}

/// A source with unreadable sectors and no error-correction data (so they stay lost): the
/// `damage` section of `rescue --json` names exactly the files `debugfs icheck`/`ncheck` name
/// for those sectors (oracle and comparison of tests/damage.rs), with their lost byte ranges.
fn damage_names_the_files_debugfs_names() -> TestResult {
    if let Some(r) = ddrescue_missing() {
        return util::skip(r);
    }
    if let Some(m) = crate::damage::missing() {
        return util::skip(m);
    }
    let d = Scratch::new("rescue-damage");
    let (_, plain) = crate::damage::ext4_fixture(&d)?;
    let size = std::fs::metadata(&plain).map_err(|e| e.to_string())?.len();
    let before = sha256_file(&plain)?;
    // 4 KiB blocks = 2 sectors: the second half of a block of /sub/f1, the slow symlink's block,
    // the sector holding /z's inode (so /z and its hard link /sub/z-again, and the other inodes
    // in that sector), and three sectors of /sub/big. Not a directory's block: the files below
    // it could then not be reached in the damaged image, though debugfs names them.
    let num = |cmd: &str| crate::damage::number(&plain, cmd);
    let f1 = num("bmap /sub/f1 3")?;
    let slow = num("bmap /slowlink 0")?;
    let big = num("bmap /sub/big 100")?;
    let imap = crate::damage::debugfs(&plain, &["imap /z".into()])?;
    let zb: u64 =
        imap.split("located at block ").nth(1).and_then(|r| r.split(',').next()?.trim().parse().ok()).ok_or("imap")?;
    let zo =
        imap.split("offset 0x").nth(1).and_then(|r| u64::from_str_radix(r.trim(), 16).ok()).ok_or("imap offset")?;
    let mut bad: Vec<u64> = vec![f1 * 2 + 1, slow * 2, (zb * 4096 + zo) / 2048, big * 2, big * 2 + 1, big * 2 + 5];
    bad.sort_unstable();
    bad.dedup();
    let faults = d.path("faults.map");
    fault_map(&faults, size, &bad)?;
    let img = d.path("out.img");
    let (c, v) = rescue(&[p(&plain), "-o", p(&img), "--test-mode", p(&faults)])?;
    ensure!(c == 1 && v["ok"] == false, "exit {c}: {v}");
    ensure!(v["bytes"]["bad"].as_u64() == Some(bad.len() as u64 * 2048), "{}", v["bytes"]);
    let hits: Vec<(std::ops::Range<u64>, bool)> = bad.iter().map(|&s| (s * 2048..(s + 1) * 2048, true)).collect();
    let (want, kinds) = crate::damage::ext_oracle(&plain, &hits)?;
    ensure!(
        ["sub/f1", "slowlink", "z", "sub/z-again", "sub/big"].iter().all(|k| want.contains_key(*k)),
        "the oracle should name the chosen files: {want:?}"
    );
    crate::damage::compare(&v, &want, &kinds)?;
    ensure!(v["damage"]["files_lost"].as_u64() == Some(want.len() as u64), "{}", v["damage"]);
    ensure!(sha256_file(&plain)? == before, "the source changed");
    Ok(Completion::Completed)
}
