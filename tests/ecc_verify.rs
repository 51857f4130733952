//! Dvdisaster error-correction data — detection and verification. Fixtures are made,
//! damaged and checked by the real dvdisaster 0.79.5 through `testdata/gen/ecc.py` (under
//! `ulimit -f` and a timeout, never fewer than 32 roots); the expected damage lists are what
//! `dvdisaster -t` prints, the expected MD5s/SHA-256s come from `md5sum`/`sha256sum` of the
//! original files. loopkit's output is never its own oracle.

use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, run_ok, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A raw (non-ISO) input: 500 sectors minus 1000 bytes, so the last sector is partial.
pub const RAW_BYTES: u64 = 500 * 2048 - 1000;
/// RS03 capacity for small augmented images (`--debug -n`): 10 sectors per layer.
pub const RS03_CAPACITY: u64 = 2550;

/// Why the ECC tests cannot run here, if they cannot.
pub fn prerequisites() -> Option<String> {
    let missing: Vec<&str> = ["dvdisaster", "md5sum", "genisoimage"].into_iter().filter(|t| !util::have(t)).collect();
    if missing.is_empty() { util::python_missing() } else { Some(format!("missing tools: {}", missing.join(", "))) }
}

/// Run `testdata/gen/ecc.py ARGS` and parse its JSON.
pub fn ecc_py(args: &[&str]) -> Result<Value, Failed> {
    let out = run_ok(Command::new(util::python()).arg(util::repo_root().join("testdata/gen/ecc.py")).args(args))?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("ecc.py {args:?}: bad JSON ({e})").into())
}

/// A path as a command-line argument.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap_or("")
}

/// `md5sum FILE`, the independent MD5.
pub fn md5_file(path: &Path) -> Result<String, Failed> {
    let out = run_ok(Command::new("md5sum").arg(path))?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string())
}

/// A deterministic raw input file.
pub fn raw_input(d: &Scratch, name: &str, bytes: u64) -> Result<PathBuf, Failed> {
    let f = d.path(name);
    ecc_py(&["data", "--bytes", &bytes.to_string(), "--seed", name, "--out", p(&f)])?;
    Ok(f)
}

/// A small ISO made by genisoimage.
pub fn iso_input(d: &Scratch, name: &str) -> Result<PathBuf, Failed> {
    let f = d.path(name);
    ecc_py(&["iso", "--kib", "900", "--seed", name, "--out", p(&f)])?;
    Ok(f)
}

/// Copy `src` to `dst` in the scratch dir and augment it; returns the augmented path.
pub fn augment(src: &Path, dst: &Path, method: &str, how: &[&str]) -> Result<Value, Failed> {
    std::fs::copy(src, dst).map_err(|e| format!("copy: {e}"))?;
    let mut args = vec!["augment", "--image", p(dst), "--method", method];
    args.extend_from_slice(how);
    ecc_py(&args)
}

/// `dvdisaster -t`, parsed by ecc.py.
pub fn oracle(image: &Path, ecc: Option<&Path>, capacity: Option<u64>) -> Result<Value, Failed> {
    let cap = capacity.map(|c| c.to_string());
    let mut args = vec!["test", "--image", p(image)];
    if let Some(e) = ecc {
        args.extend(["--ecc", p(e)]);
    }
    if let Some(c) = &cap {
        args.extend(["--capacity", c.as_str()]);
    }
    ecc_py(&args)
}

/// `loopkit verify --ecc-only --json IMAGE EXTRA…`: (exit code, JSON), checking that the image
/// (and .ecc file) are unchanged and that it ran in bounded time without crashing.
pub fn lk_verify(image: &Path, extra: &[&str]) -> Result<(i32, Value), Failed> {
    let before = sha256_file(image)?;
    let t = Instant::now();
    let mut cmd = loopkit(&["verify", "--json", p(image)]);
    cmd.args(extra);
    let out = run(&mut cmd)?;
    ensure!(t.elapsed() < Duration::from_secs(60), "verify took {:?}", t.elapsed());
    ensure!(sha256_file(image)? == before, "verify modified {}", image.display());
    let c = code(&out);
    ensure!(
        c == 0 || c == 1 || c == 2,
        "verify exit {c} (crash?) on {}:\n{}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out)?;
    Ok((c, v))
}

fn nums(v: &Value) -> Vec<u64> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
}

fn codes(v: &Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["code"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// loopkit's missing / bad lists equal dvdisaster's.
fn same_damage(ours: &Value, theirs: &Value) -> Result<(), Failed> {
    let e = &ours["ecc"];
    ensure!(
        nums(&e["missing_sectors"]) == nums(&theirs["missing"]),
        "missing sectors: loopkit {:?}, dvdisaster {:?}",
        nums(&e["missing_sectors"]),
        nums(&theirs["missing"])
    );
    ensure!(
        nums(&e["missing_ecc_file_sectors"]) == nums(&theirs["missing_ecc_file"]),
        "missing .ecc-file sectors: loopkit {:?}, dvdisaster {:?}",
        nums(&e["missing_ecc_file_sectors"]),
        nums(&theirs["missing_ecc_file"])
    );
    ensure!(
        nums(&e["bad_sectors"]) == nums(&theirs["crc_errors"]),
        "CRC errors: loopkit {:?}, dvdisaster {:?}",
        nums(&e["bad_sectors"]),
        nums(&theirs["crc_errors"])
    );
    Ok(())
}

/// A clean image: exit 0, ok, no damage, the MD5 is md5sum's of the original.
fn clean(image: &Path, original: &Path, extra: &[&str], method: &str) -> Result<Value, Failed> {
    let (c, v) = lk_verify(image, extra)?;
    let e = &v["ecc"];
    ensure!(c == 0 && v["ok"] == true, "clean {method} image: exit {c}, problems {}", v["problems"]);
    ensure!(e["method"] == method, "method {} (want {method})", e["method"]);
    ensure!(e["md5"] == md5_file(original)?.as_str(), "data MD5 {} differs from md5sum of the original", e["md5"]);
    let len = std::fs::metadata(original).map_err(|e| e.to_string())?.len();
    ensure!(e["data_bytes"] == len, "data_bytes {} (original has {len})", e["data_bytes"]);
    ensure!(e["data_sectors"] == len.div_ceil(2048), "data_sectors {}", e["data_sectors"]);
    ensure!(
        nums(&e["missing_sectors"]).is_empty() && nums(&e["bad_sectors"]).is_empty(),
        "damage reported on a clean image: {e}"
    );
    ensure!(e["crc_section_ok"] == true && e["ecc_section_ok"] == true, "sections not ok: {e}");
    Ok(v)
}

fn rs02_raw_clean() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("ecc-rs02");
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let img = d.path("raw-rs02.bin");
    augment(&orig, &img, "RS02", &["--roots", "32"])?;
    let o = oracle(&img, None, None)?;
    ensure!(o["missing"].as_array().is_some_and(|a| a.is_empty()), "dvdisaster sees damage: {o}");
    let v = clean(&img, &orig, &["--ecc-only"], "RS02")?;
    let e = &v["ecc"];
    ensure!(e["md5_ok"] == true && e["roots"] == 32, "md5_ok/roots: {e}");
    ensure!(e["header_copies_ok"] == e["header_copies_total"], "header copies: {e}");
    Ok(Completion::Completed)
}

fn rs02_iso_clean_with_payload() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("ecc-rs02-iso");
    let orig = iso_input(&d, "base.iso")?;
    let img = d.path("rs02.iso");
    augment(&orig, &img, "RS02", &["--roots", "40"])?;
    // Full verify: ECC first, then the payload, which must be exactly the original ISO.
    let v = clean(&img, &orig, &[], "RS02")?;
    ensure!(v["filesystem"]["type"] == "iso9660", "file system {}", v["filesystem"]);
    ensure!(
        v["payload"]["sha256"] == sha256_file(&orig)?.as_str(),
        "payload is not the original ISO: {}",
        v["payload"]
    );
    ensure!(v["payload"]["size_bytes"] == v["ecc"]["data_bytes"], "payload size {}", v["payload"]);
    // inspect reports the ECC too (without check results).
    let out = run(&mut loopkit(&["inspect", "--json", p(&img)]))?;
    let i = json(&out)?;
    ensure!(i["ecc"]["method"] == "RS02" && i["ecc"]["ok"].is_null(), "inspect ecc: {}", i["ecc"]);
    Ok(Completion::Completed)
}

fn rs02_header_modulo_variant() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("ecc-glitch");
    // 599 sectors sized for a 1790-sector medium: dvdisaster picks 164 roots and header modulo 64
    // while the recomputed modulo is 32 (the "glitch", docs/formats/dvdisaster.md §6.1).
    let orig = raw_input(&d, "g.bin", 599 * 2048 - 500)?;
    let img = d.path("g-rs02.bin");
    let a = augment(&orig, &img, "RS02", &["--capacity", "1790"])?;
    let o = ecc_py(&["test", "--image", p(&img), "--verbose"])?;
    ensure!(o["layout_variant"] == 2, "fixture does not trigger the modulo variant: roots {}, {o}", a["roots"]);
    let v = clean(&img, &orig, &["--ecc-only"], "RS02")?;
    ensure!(
        v["ecc"]["header_copies_ok"] == v["ecc"]["header_copies_total"] && v["ecc"]["md5_ok"] == true,
        "header copies at the variant modulo: {}",
        v["ecc"]
    );
    Ok(Completion::Completed)
}

fn rs03_augmented_clean() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("ecc-rs03");
    let cap = RS03_CAPACITY.to_string();
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let img = d.path("raw-rs03.bin");
    augment(&orig, &img, "RS03", &["--capacity", &cap])?;
    // Plain `dvdisaster -t` does not find RS03 in a non-ISO file of non-standard size; loopkit does.
    let o = oracle(&img, None, Some(RS03_CAPACITY))?;
    ensure!(o["ecc_blocks_bad"] == 0 && o["exit"] == 0, "dvdisaster -t: {o}");
    let v = clean(&img, &orig, &["--ecc-only", "--full-syndromes"], "RS03")?;
    ensure!(v["ecc"]["ecc_blocks_bad"] == 0 && v["ecc"]["md5_ok"].is_null(), "{}", v["ecc"]);
    // ISO input: found through the ISO volume size, as dvdisaster does.
    let iso = iso_input(&d, "base.iso")?;
    let img2 = d.path("rs03.iso");
    augment(&iso, &img2, "RS03", &["--capacity", &cap])?;
    let o = oracle(&img2, None, None)?;
    ensure!(o["ecc_blocks_bad"] == 0, "dvdisaster -t on the ISO: {o}");
    let v = clean(&img2, &iso, &[], "RS03")?;
    ensure!(v["payload"]["sha256"] == sha256_file(&iso)?.as_str(), "payload is not the original ISO");
    Ok(Completion::Completed)
}

fn ecc_files_clean() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("ecc-files");
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    for (method, roots) in [("RS01", "32"), ("RS03", "40")] {
        let ecc = d.path(&format!("raw-{method}.ecc"));
        ecc_py(&["eccfile", "--image", p(&orig), "--method", method, "--roots", roots, "--out", p(&ecc)])?;
        let o = oracle(&orig, Some(&ecc), None)?;
        ensure!(nums(&o["missing"]).is_empty() && nums(&o["crc_errors"]).is_empty(), "dvdisaster: {o}");
        let ecc_before = sha256_file(&ecc)?;
        let v = clean(&orig, &orig, &["--ecc-only", "--ecc", p(&ecc)], method)?;
        ensure!(v["ecc"]["placement"] == "ecc-file" && v["ecc"]["fingerprint_ok"] == true, "{}", v["ecc"]);
        ensure!(sha256_file(&ecc)? == ecc_before, "verify modified the .ecc file");
        if method == "RS01" {
            ensure!(v["ecc"]["md5_ok"] == true, "RS01 md5_ok: {}", v["ecc"]);
        }
    }
    // NAME.ecc beside the image is found without --ecc.
    std::fs::copy(d.path("raw-RS03.ecc"), d.path("raw.ecc")).map_err(|e| e.to_string())?;
    let v = clean(&orig, &orig, &["--ecc-only"], "RS03")?;
    ensure!(v["ecc"]["ecc_file"].as_str().is_some_and(|f| f.ends_with("raw.ecc")), "{}", v["ecc"]);
    // An .ecc file for another image: fingerprint mismatch, exit 1.
    let other = raw_input(&d, "other.bin", RAW_BYTES)?;
    let (c, v) = lk_verify(&other, &["--ecc-only", "--ecc", p(&d.path("raw-RS01.ecc"))])?;
    ensure!(c == 1 && codes(&v).contains(&"ecc.fingerprint-mismatch".to_string()), "wrong .ecc: exit {c}, {v}");
    Ok(Completion::Completed)
}

fn rs02_damage_matches_dvdisaster() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("ecc-rs02-dmg");
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let img = d.path("dmg.bin");
    augment(&orig, &img, "RS02", &["--roots", "32"])?;
    // ds=500, CRC area 502, header copies at 500, 512, 544, 576 (modulo 32), ECC elsewhere.
    ecc_py(&["erase", "--image", p(&img), "--sectors", "100,530-531"])?;
    ecc_py(&["flip", "--image", p(&img), "--at", "200:17,544:300"])?;
    ecc_py(&["zero", "--image", p(&img), "--sectors", "300,576-577"])?;
    let o = oracle(&img, None, None)?;
    ensure!(o["exit"] == 0, "dvdisaster exits 0 even on damage (that is the point): {o}");
    ensure!(
        nums(&o["missing"]) == vec![100, 530, 531] && nums(&o["crc_errors"]) == vec![200, 300],
        "the damage did not take effect as planned: {o}"
    );
    let (c, v) = lk_verify(&img, &["--ecc-only"])?;
    ensure!(c == 1 && v["ok"] == false, "damaged RS02: exit {c}");
    same_damage(&v, &o)?;
    let e = &v["ecc"];
    ensure!(
        e["header_copies_ok"] == o["headers_ok"],
        "header copies ok {} vs dvdisaster {}",
        e["header_copies_ok"],
        o["headers_ok"]
    );
    ensure!(e["md5_ok"] == false && e["ecc_section_ok"] == false, "{e}");
    let cs = codes(&v);
    for want in ["ecc.missing-sector", "ecc.bad-sector", "ecc.md5-mismatch", "ecc.header-copy"] {
        ensure!(cs.contains(&want.to_string()), "problem {want} missing: {cs:?}");
    }
    // A dead CRC sector: dvdisaster cannot check those CRCs any more, neither can loopkit.
    ecc_py(&["erase", "--image", p(&img), "--sectors", "502"])?;
    let o = oracle(&img, None, None)?;
    let (_, v) = lk_verify(&img, &["--ecc-only"])?;
    same_damage(&v, &o)?;
    ensure!(v["ecc"]["crc_section_ok"] == false, "{}", v["ecc"]);
    Ok(Completion::Completed)
}

fn rs03_damage_matches_dvdisaster() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("ecc-rs03-dmg");
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let img = d.path("dmg.bin");
    augment(&orig, &img, "RS03", &["--capacity", &RS03_CAPACITY.to_string()])?;
    // spl=10: data layers 0..83 (header at 500, padding up to 839), CRC layer 840..849, ECC 850..
    ecc_py(&["erase", "--image", p(&img), "--sectors", "100,845,1500"])?;
    ecc_py(&["flip", "--image", p(&img), "--at", "200:5,846:7,2000:9,501:3"])?;
    ecc_py(&["zero", "--image", p(&img), "--sectors", "333"])?;
    let o = oracle(&img, None, Some(RS03_CAPACITY))?;
    ensure!(
        nums(&o["missing"]) == vec![100, 845, 1500] && !nums(&o["crc_errors"]).is_empty() && o["exit"] == 13,
        "the damage did not take effect as planned: {o}"
    );
    for extra in [&["--ecc-only"][..], &["--ecc-only", "--full-syndromes"][..]] {
        let (c, v) = lk_verify(&img, extra)?;
        ensure!(c == 1, "damaged RS03: exit {c}");
        same_damage(&v, &o)?;
        ensure!(
            v["ecc"]["ecc_blocks_bad"] == o["ecc_blocks_bad"] && v["ecc"]["codewords_bad"] == o["bad_sub_blocks"],
            "block test: loopkit {}/{} vs dvdisaster {}/{} ({extra:?})",
            v["ecc"]["ecc_blocks_bad"],
            v["ecc"]["codewords_bad"],
            o["ecc_blocks_bad"],
            o["bad_sub_blocks"]
        );
        ensure!(v["ecc"]["crc_section_ok"] == false && v["ecc"]["ecc_section_ok"] == false, "{}", v["ecc"]);
    }
    Ok(Completion::Completed)
}

fn ecc_file_damage_matches_dvdisaster() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("ecc-file-dmg");
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let e1 = d.path("raw01.ecc");
    let e3 = d.path("raw03.ecc");
    ecc_py(&["eccfile", "--image", p(&orig), "--method", "RS01", "--roots", "32", "--out", p(&e1)])?;
    ecc_py(&["eccfile", "--image", p(&orig), "--method", "RS03", "--roots", "32", "--out", p(&e3)])?;
    ecc_py(&["erase", "--image", p(&orig), "--sectors", "100"])?;
    ecc_py(&["flip", "--image", p(&orig), "--at", "200:5"])?;
    // RS01: flip the stored CRC of sector 300 (byte 4096 + 4·300 of the .ecc file).
    ecc_py(&["flip", "--image", p(&e1), "--at", &format!("{}:{}", (4096 + 4 * 300) / 2048, (4096 + 4 * 300) % 2048)])?;
    let o = oracle(&orig, Some(&e1), None)?;
    ensure!(nums(&o["crc_errors"]) == vec![200, 300] && nums(&o["missing"]) == vec![100], "RS01 damage: {o}");
    let (c, v) = lk_verify(&orig, &["--ecc-only", "--ecc", p(&e1)])?;
    ensure!(c == 1, "RS01 damage: exit {c}");
    same_damage(&v, &o)?;
    ensure!(v["ecc"]["ecc_section_ok"] == false, "RS01 eccSum must catch the CRC flip: {}", v["ecc"]);
    // RS03 .ecc: a dead CRC block (file sector 3) and a flip in an ECC-layer sector.
    ecc_py(&["erase", "--image", p(&e3), "--sectors", "3"])?;
    ecc_py(&["flip", "--image", p(&e3), "--at", "50:100"])?;
    let o = oracle(&orig, Some(&e3), None)?;
    ensure!(nums(&o["missing_ecc_file"]) == vec![3] && nums(&o["missing"]) == vec![100], "RS03 .ecc damage: {o}");
    let (c, v) = lk_verify(&orig, &["--ecc-only", "--ecc", p(&e3)])?;
    ensure!(c == 1, "RS03 .ecc damage: exit {c}");
    same_damage(&v, &o)?;
    ensure!(v["ecc"]["ecc_blocks_bad"] == o["ecc_blocks_bad"], "block test {} vs {}", v["ecc"], o["ecc_blocks_bad"]);
    Ok(Completion::Completed)
}

fn truncated_images() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("ecc-trunc");
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let cap = RS03_CAPACITY.to_string();
    let cases: [(&str, &[&str], u64, Option<u64>); 2] =
        [("RS02", &["--roots", "32"], 590, None), ("RS03", &["--capacity", &cap], 2400, Some(RS03_CAPACITY))];
    for (method, how, keep, capacity) in cases {
        let img = d.path(&format!("t-{method}.bin"));
        augment(&orig, &img, method, how)?;
        ecc_py(&["truncate", "--image", p(&img), "--sectors", &keep.to_string()])?;
        let o = oracle(&img, None, capacity)?;
        ensure!(nums(&o["missing"]).first() == Some(&keep), "{method}: dvdisaster does not see the truncation: {o}");
        let (c, v) = lk_verify(&img, &["--ecc-only"])?;
        ensure!(c == 1 && codes(&v).contains(&"ecc.truncated".to_string()), "{method} truncated: exit {c}, {v}");
        same_damage(&v, &o)?;
        ensure!(nums(&v["ecc"]["missing_sectors"]).first() == Some(&keep), "{method}: tail not missing");
    }
    Ok(Completion::Completed)
}

fn corrupted_headers() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("ecc-fuzz");
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let aug02 = d.path("base02.bin");
    augment(&orig, &aug02, "RS02", &["--roots", "32"])?;
    let aug03 = d.path("base03.bin");
    augment(&orig, &aug03, "RS03", &["--capacity", &RS03_CAPACITY.to_string()])?;
    let e1 = d.path("base.ecc01");
    ecc_py(&["eccfile", "--image", p(&orig), "--method", "RS01", "--roots", "32", "--out", p(&e1)])?;
    let e3 = d.path("base.ecc03");
    ecc_py(&["eccfile", "--image", p(&orig), "--method", "RS03", "--roots", "32", "--out", p(&e3)])?;
    let fields = [
        "sectors=0xffffffffffff",
        "sectors=0",
        "sectors=1",
        "eccBytes=300",
        "eccBytes=7",
        "dataBytes=1",
        "inLast=5000",
        "sectorsPerLayer=0xffffffffffffff",
        "sectorsPerLayer=1",
        "sectorsAddedByEcc=0xffffffffffffffff",
        "fpSector=-1",
    ];
    let mut n = 0;
    // (image, .ecc file, fields the codec does not use: changing them may leave it intact)
    let cases: [(&PathBuf, Option<&PathBuf>, &[&str]); 4] = [
        // sectorsAddedByEcc only picks among layouts; the header copies decide when it fits none.
        (&aug02, None, &["sectorsPerLayer", "sectorsAddedByEcc"]),
        (&aug03, None, &[]),
        (&orig, Some(&e1), &["sectorsPerLayer", "sectorsAddedByEcc"]),
        (&orig, Some(&e3), &["sectorsAddedByEcc"]),
    ];
    for (base, ecc, unused) in cases {
        for f in fields {
            for resign in [true, false] {
                n += 1;
                let target = match ecc {
                    Some(_) => d.path(&format!("fuzz{n}.ecc")),
                    None => d.path(&format!("fuzz{n}.bin")),
                };
                std::fs::copy(ecc.unwrap_or(base), &target).map_err(|e| e.to_string())?;
                let mut args = vec!["fuzz", "--image", p(&target), "--set", f];
                if !resign {
                    args.push("--no-resign");
                }
                ecc_py(&args)?;
                let (img, extra): (&Path, Vec<&str>) = match ecc {
                    Some(_) => (base.as_path(), vec!["--ecc-only", "--ecc", p(&target)]),
                    None => (target.as_path(), vec!["--ecc-only"]),
                };
                // lk_verify checks: exit 0/1/2 (never a panic), bounded time, JSON, input unchanged.
                let (c, v) = lk_verify(img, &extra)?;
                let field = f.split('=').next().unwrap_or("");
                match c {
                    2 => {
                        let msg = v["error"]["message"].as_str().unwrap_or("");
                        ensure!(!msg.is_empty() && !msg.contains("BUG"), "{f}: unclear error {v}");
                    }
                    0 => ensure!(
                        unused.contains(&field),
                        "{f} (resign {resign}) on {}: reported intact: {v}",
                        target.display()
                    ),
                    _ => ensure!(v["ok"] == false, "{f}: exit 1 but ok: {v}"),
                }
            }
        }
    }
    Ok(Completion::Completed)
}

fn cryptoloop_pipeline() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let plains = match crate::legacy::plains() {
        Ok(p) => p,
        Err(e) => return util::skip(e),
    };
    let d = Scratch::new("ecc-pipeline");
    let pass = plains.dir.join("pass");
    // sparse file → cryptoloop → ext3, as archived in 2008, then dvdisaster RS02.
    let f = crate::legacy::encrypt(
        &d.0,
        "archive.img",
        "ext3",
        &["--scheme", "cryptoloop", "--derivation", "rmd160", "--key-bits", "256", "--passphrase-file", p(&pass)],
    )?;
    let img = d.path("archive-rs02.img");
    augment(&f.image, &img, "RS02", &["--roots", "48"])?;
    let (c, v) = lk_verify(&img, &["--passphrase-file", p(&pass)])?;
    ensure!(c == 0 && v["ok"] == true, "pipeline verify: exit {c}, {}", v["problems"]);
    ensure!(v["kind"] == "legacy-encrypted" && v["filesystem"]["type"] == "ext3", "{v}");
    ensure!(v["payload"]["sha256"] == f.plaintext_sha256.as_str(), "decrypted payload differs from the plaintext");
    ensure!(v["ecc"]["md5"] == md5_file(&f.image)?.as_str() && v["ecc"]["md5_ok"] == true, "{}", v["ecc"]);
    // Without a passphrase, --ecc-only still checks the ECC.
    let (c, v) = lk_verify(&img, &["--ecc-only", "--no-prompt"])?;
    ensure!(c == 0 && v["payload"].is_null(), "--ecc-only without passphrase: exit {c}, {v}");
    // A damaged data sector is an ECC finding (exit 1) before any decryption.
    ecc_py(&["flip", "--image", p(&img), "--at", "10:100"])?;
    let (c, v) = lk_verify(&img, &["--passphrase-file", p(&pass)])?;
    ensure!(c == 1 && nums(&v["ecc"]["bad_sectors"]) == vec![10], "flip in sector 10: exit {c}, {}", v["ecc"]);
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("ecc::rs02_raw_clean", rs02_raw_clean),
        trial("ecc::rs02_iso_clean_with_payload", rs02_iso_clean_with_payload),
        trial("ecc::rs02_header_modulo_variant", rs02_header_modulo_variant),
        trial("ecc::rs03_augmented_clean", rs03_augmented_clean),
        trial("ecc::ecc_files_clean", ecc_files_clean),
        trial("ecc::rs02_damage_matches_dvdisaster", rs02_damage_matches_dvdisaster),
        trial("ecc::rs03_damage_matches_dvdisaster", rs03_damage_matches_dvdisaster),
        trial("ecc::ecc_file_damage_matches_dvdisaster", ecc_file_damage_matches_dvdisaster),
        trial("ecc::truncated_images", truncated_images),
        trial("ecc::corrupted_headers", corrupted_headers),
        trial("ecc::cryptoloop_pipeline", cryptoloop_pipeline),
    ]
}
