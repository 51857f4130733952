//! Repair: `loopkit repair` must write the same bytes `dvdisaster -f` leaves after
//! repairing a copy of the same damaged files in place. The oracle is dvdisaster 0.79.5 itself
//! (through `testdata/gen/ecc.py fix`); the check is `sha256sum` equality, and that loopkit never
//! touched its inputs.

use crate::ecc_verify::{RAW_BYTES, RS03_CAPACITY, augment, ecc_py, iso_input, p, prerequisites, raw_input};
use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, run_ok, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A damaged image (and .ecc file), repaired by dvdisaster in a copy and by loopkit into a new
/// file; the results must be identical. Returns loopkit's JSON.
fn same_as_dvdisaster(
    d: &Scratch,
    name: &str,
    image: &Path,
    ecc: Option<&Path>,
    capacity: Option<u64>,
) -> Result<Value, Failed> {
    // dvdisaster -f on copies.
    let dvd_img = d.path(&format!("{name}.dvd.img"));
    std::fs::copy(image, &dvd_img).map_err(|e| e.to_string())?;
    let dvd_ecc: Option<PathBuf> = match ecc {
        Some(e) => {
            let c = d.path(&format!("{name}.dvd.ecc"));
            std::fs::copy(e, &c).map_err(|e| e.to_string())?;
            Some(c)
        }
        None => None,
    };
    let cap = capacity.map(|c| c.to_string());
    let mut args = vec!["fix", "--image", p(&dvd_img)];
    if let Some(e) = &dvd_ecc {
        args.extend(["--ecc", p(e)]);
    }
    if let Some(c) = &cap {
        args.extend(["--capacity", c.as_str()]);
    }
    let fixed = ecc_py(&args)?;
    ensure!(
        fixed["summary"].as_array().is_some_and(|a| !a.is_empty()),
        "dvdisaster -f did not run a repair: {}",
        fixed["lines"]
    );
    // loopkit repair into new files.
    let before_img = sha256_file(image)?;
    let before_ecc = ecc.map(sha256_file).transpose()?;
    let out = d.path(&format!("{name}.lk.img"));
    let out_ecc = d.path(&format!("{name}.lk.ecc"));
    let mut cmd = loopkit(&["repair", "--json", p(image), "-o", p(&out)]);
    if let Some(e) = ecc {
        cmd.args(["--ecc", p(e), "--ecc-output", p(&out_ecc)]);
    }
    let o = run(&mut cmd)?;
    let c = code(&o);
    ensure!(c == 0 || c == 1, "repair exit {c}: {}", String::from_utf8_lossy(&o.stderr));
    let v = json(&o)?;
    ensure!(sha256_file(image)? == before_img, "repair modified its source image");
    if let (Some(e), Some(b)) = (ecc, before_ecc) {
        ensure!(sha256_file(e)? == b, "repair modified the .ecc file");
    }
    ensure!(
        sha256_file(&out)? == sha256_file(&dvd_img)?,
        "{name}: repaired image differs from dvdisaster -f's ({})\nloopkit: {v}",
        fixed["summary"]
    );
    if let Some(e) = &dvd_ecc
        && out_ecc.exists()
    {
        ensure!(sha256_file(&out_ecc)? == sha256_file(e)?, "{name}: repaired .ecc file differs from dvdisaster's");
    }
    ensure!((c == 0) == (v["ok"] == true), "exit code {c} vs ok {}", v["ok"]);
    Ok(v)
}

fn rs02_repair() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("repair-rs02");
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let img = d.path("dmg.bin");
    augment(&orig, &img, "RS02", &["--roots", "32"])?;
    let clean = d.path("clean.bin");
    std::fs::copy(&img, &clean).map_err(|e| e.to_string())?;
    // Dead data, CRC and ECC sectors, flips (one whose CRC is intact, one in a header copy),
    // a zeroed sector.
    ecc_py(&["erase", "--image", p(&img), "--sectors", "100,502,530-531"])?;
    ecc_py(&["flip", "--image", p(&img), "--at", "200:17,544:300"])?;
    ecc_py(&["zero", "--image", p(&img), "--sectors", "301"])?;
    let v = same_as_dvdisaster(&d, "a", &img, None, None)?;
    ensure!(v["ok"] == true, "fully repairable damage left problems: {}", v["problems"]);
    ensure!(sha256_file(&d.path("a.lk.img"))? == sha256_file(&clean)?, "repair did not restore the undamaged image");
    // More erasures in one ECC block than roots (spl=3: sectors 0,3,6,… share block 0), plus
    // truncation: partly unrepairable, still byte-identical to dvdisaster.
    let img2 = d.path("dmg2.bin");
    std::fs::copy(&clean, &img2).map_err(|e| e.to_string())?;
    let many: Vec<String> = (0..40).map(|k| (3 * k).to_string()).collect();
    ecc_py(&["erase", "--image", p(&img2), "--sectors", &many.join(",")])?;
    ecc_py(&["flip", "--image", p(&img2), "--at", "7:7"])?;
    ecc_py(&["truncate", "--image", p(&img2), "--sectors", "595"])?;
    let v = same_as_dvdisaster(&d, "b", &img2, None, None)?;
    ensure!(v["ok"] == false && !v["unrepaired_sectors"].as_array().is_some_and(|a| a.is_empty()), "{v}");
    // The header-modulo variant.
    let g = raw_input(&d, "g.bin", 599 * 2048 - 500)?;
    let img3 = d.path("dmg3.bin");
    augment(&g, &img3, "RS02", &["--capacity", "1790"])?;
    ecc_py(&["erase", "--image", p(&img3), "--sectors", "10-14,650"])?;
    ecc_py(&["flip", "--image", p(&img3), "--at", "400:1"])?;
    same_as_dvdisaster(&d, "c", &img3, None, None)?;
    Ok(Completion::Completed)
}

fn rs03_repair() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("repair-rs03");
    // ISO input (dvdisaster's own repair mishandles non-ISO augmented RS03 images; see docs).
    let iso = iso_input(&d, "base.iso")?;
    let img = d.path("dmg.iso");
    augment(&iso, &img, "RS03", &["--capacity", &RS03_CAPACITY.to_string()])?;
    let clean = d.path("clean.iso");
    std::fs::copy(&img, &clean).map_err(|e| e.to_string())?;
    ecc_py(&["erase", "--image", p(&img), "--sectors", "100,845,1500"])?;
    ecc_py(&["flip", "--image", p(&img), "--at", "200:5,846:7,2000:9,633:3"])?;
    ecc_py(&["zero", "--image", p(&img), "--sectors", "333"])?;
    let v = same_as_dvdisaster(&d, "a", &img, None, Some(RS03_CAPACITY))?;
    ensure!(v["ok"] == true && sha256_file(&d.path("a.lk.img"))? == sha256_file(&clean)?, "not restored: {v}");
    // Non-ISO input: loopkit repairs it (dvdisaster -f refuses: it applies the data's last-sector
    // size to the end of the augmented file); the oracle is the undamaged file.
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let img2 = d.path("dmg2.bin");
    augment(&orig, &img2, "RS03", &["--capacity", &RS03_CAPACITY.to_string()])?;
    let clean2 = sha256_file(&img2)?;
    ecc_py(&["erase", "--image", p(&img2), "--sectors", "5,777,2222"])?;
    ecc_py(&["flip", "--image", p(&img2), "--at", "499:1000"])?;
    let out = d.path("raw.lk.img");
    let o = run(&mut loopkit(&["repair", "--json", p(&img2), "-o", p(&out)]))?;
    ensure!(code(&o) == 0 && sha256_file(&out)? == clean2, "non-ISO RS03 repair: exit {}", code(&o));
    // RS03 .ecc file: damage in the image and in the .ecc file.
    let e3 = d.path("raw03.ecc");
    ecc_py(&["eccfile", "--image", p(&orig), "--method", "RS03", "--roots", "32", "--out", p(&e3)])?;
    let img3 = d.path("dmg3.bin");
    std::fs::copy(&orig, &img3).map_err(|e| e.to_string())?;
    ecc_py(&["erase", "--image", p(&img3), "--sectors", "100"])?;
    ecc_py(&["flip", "--image", p(&img3), "--at", "200:5"])?;
    ecc_py(&["erase", "--image", p(&e3), "--sectors", "3"])?;
    ecc_py(&["flip", "--image", p(&e3), "--at", "50:100"])?;
    let v = same_as_dvdisaster(&d, "e", &img3, Some(&e3), None)?;
    ensure!(v["ok"] == true && sha256_file(&d.path("e.lk.img"))? == sha256_file(&orig)?, "not restored: {v}");
    Ok(Completion::Completed)
}

fn rs01_repair() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("repair-rs01");
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let e1 = d.path("raw01.ecc");
    ecc_py(&["eccfile", "--image", p(&orig), "--method", "RS01", "--roots", "32", "--out", p(&e1)])?;
    let img = d.path("dmg.bin");
    std::fs::copy(&orig, &img).map_err(|e| e.to_string())?;
    ecc_py(&["erase", "--image", p(&img), "--sectors", "100,101"])?;
    ecc_py(&["flip", "--image", p(&img), "--at", "200:5,499:10"])?;
    let v = same_as_dvdisaster(&d, "a", &img, Some(&e1), None)?;
    ensure!(v["ok"] == true && sha256_file(&d.path("a.lk.img"))? == sha256_file(&orig)?, "not restored: {v}");
    // Truncated image.
    let img2 = d.path("dmg2.bin");
    std::fs::copy(&orig, &img2).map_err(|e| e.to_string())?;
    ecc_py(&["truncate", "--image", p(&img2), "--sectors", "497"])?;
    same_as_dvdisaster(&d, "b", &img2, Some(&e1), None)?;
    // Outputs are never the inputs, and never replaced without --force.
    let o = run(&mut loopkit(&["repair", "--json", p(&img), "--ecc", p(&e1), "-o", p(&e1), "--force"]))?;
    ensure!(code(&o) == 2 && json(&o)?["error"]["kind"] == "unsafe", "output = .ecc source: exit {}", code(&o));
    let o = run(&mut loopkit(&["repair", "--json", p(&img), "--ecc", p(&e1), "-o", p(&orig)]))?;
    ensure!(code(&o) == 2 && json(&o)?["error"]["kind"] == "unsafe", "existing output: exit {}", code(&o));
    Ok(Completion::Completed)
}

/// L9: an RS01 `.ecc` whose header claims 2^40 sectors (and a zero fingerprint, which skips the
/// pairing check) must not make `repair` allocate 4 TiB of CRCs: under `ulimit -v` 1 GiB it exits
/// 2 with a message naming the claimed size, not an abort, and writes no output. (Opening the
/// `.ecc` file already compares its size with the header; `repair` checks again before it
/// allocates, for callers that build the `Ecc` another way, e.g. the `repair` fuzz target.)
fn rs01_absurd_sector_count() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("repair-rs01-absurd");
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let ecc = d.path("raw.ecc");
    ecc_py(&["eccfile", "--image", p(&orig), "--method", "RS01", "--roots", "32", "--out", p(&ecc)])?;
    // Patch the header with Python (an independent writer): sectors (offset 68, le64) and the
    // medium fingerprint (offset 20, 16 bytes).
    let patch = "import struct,sys\nb=bytearray(open(sys.argv[1],'rb').read())\nassert b[:16]==b'*dvdisaster*RS01'\n\
                 b[68:76]=struct.pack('<Q',1<<40)\nb[20:36]=bytes(16)\nopen(sys.argv[1],'wb').write(b)\n";
    run_ok(Command::new(util::python()).arg("-c").arg(patch).arg(&ecc))?;
    let out = d.path("out.img");
    let cmd = "ulimit -v 1048576 && exec \"$0\" repair --json \"$1\" --ecc \"$2\" -o \"$3\"";
    let o = run(Command::new("sh").arg("-c").arg(cmd).arg(util::loopkit_bin()).arg(&orig).arg(&ecc).arg(&out))?;
    let v = json(&o).unwrap_or_default();
    ensure!(
        code(&o) == 2 && (v["error"]["kind"] == "corrupt" || v["error"]["kind"] == "invalid-input"),
        "exit {} (2 expected), stdout {}, stderr {}",
        code(&o),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let msg = v["error"]["message"].as_str().unwrap_or("");
    ensure!(msg.contains("1099511627776"), "the message does not name the claimed size: {msg}");
    ensure!(!out.exists(), "an output was left behind");
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("ecc::repair_rs02_same_as_dvdisaster", rs02_repair),
        trial("ecc::repair_rs03_same_as_dvdisaster", rs03_repair),
        trial("ecc::repair_rs01_same_as_dvdisaster", rs01_repair),
        trial("ecc::repair_rs01_absurd_sector_count", rs01_absurd_sector_count),
    ]
}
