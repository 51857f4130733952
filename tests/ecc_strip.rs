//! `loopkit strip-ecc` writes back exactly the file dvdisaster augmented. The oracle is
//! `sha256sum` of that original file, kept aside before dvdisaster touched its copy.

use crate::ecc_verify::{RAW_BYTES, RS03_CAPACITY, augment, ecc_py, iso_input, p, prerequisites, raw_input};
use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, sha256_file, trial};
use libtest_mimic::{Completion, Trial};
use std::path::Path;

/// `strip-ecc --json IMG -o OUT EXTRA…` → (exit code, JSON); the image must be unchanged.
fn strip(img: &Path, out: &Path, extra: &[&str]) -> Result<(i32, serde_json::Value), libtest_mimic::Failed> {
    let before = sha256_file(img)?;
    let mut cmd = loopkit(&["strip-ecc", "--json", p(img), "-o", p(out)]);
    cmd.args(extra);
    let o = run(&mut cmd)?;
    ensure!(sha256_file(img)? == before, "strip-ecc modified its source {}", img.display());
    let c = code(&o);
    ensure!(c <= 2, "strip-ecc exit {c}: {}", String::from_utf8_lossy(&o.stderr));
    Ok((c, json(&o)?))
}

/// No `.loopkit-*.partial` temporary files left behind in `dir`.
fn no_leftovers(dir: &Path) -> Result<(), libtest_mimic::Failed> {
    let left: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".partial"))
        .collect();
    ensure!(left.is_empty(), "temporary files left behind: {left:?}");
    Ok(())
}

fn byte_identical_originals() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("strip");
    let raw = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let iso = iso_input(&d, "base.iso")?;
    let glitch = raw_input(&d, "g.bin", 599 * 2048 - 500)?;
    let cap = RS03_CAPACITY.to_string();
    let cases: [(&Path, &str, &[&str], &str); 5] = [
        (&raw, "RS02", &["--roots", "32"], "md5"),
        (&iso, "RS02", &["--roots", "64"], "md5"),
        (&glitch, "RS02", &["--capacity", "1790"], "md5"),
        (&raw, "RS03", &["--capacity", &cap], "crcs"),
        (&iso, "RS03", &["--capacity", &cap], "crcs"),
    ];
    for (n, (orig, method, how, check)) in cases.into_iter().enumerate() {
        let img = d.path(&format!("aug{n}.img"));
        augment(orig, &img, method, how)?;
        let out = d.path(&format!("orig{n}.img"));
        let (c, v) = strip(&img, &out, &[])?;
        ensure!(c == 0 && v["ok"] == true && v["check"] == check, "{method} {how:?}: exit {c}, {v}");
        ensure!(
            sha256_file(&out)? == sha256_file(orig)?,
            "{method} {how:?}: stripped image differs from the original {}",
            orig.display()
        );
    }
    no_leftovers(&d.0)?;
    Ok(Completion::Completed)
}

fn refuses_to_overwrite_or_strip_damage() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("strip-refuse");
    let raw = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let img = d.path("aug.img");
    augment(&raw, &img, "RS02", &["--roots", "32"])?;
    // An existing output is kept unless --force.
    let out = d.path("out.img");
    std::fs::write(&out, b"precious").map_err(|e| e.to_string())?;
    let (c, v) = strip(&img, &out, &[])?;
    ensure!(c == 2 && v["error"]["kind"] == "unsafe", "overwrite without --force: exit {c}, {v}");
    ensure!(std::fs::read(&out).map_err(|e| e.to_string())? == b"precious", "existing output was touched");
    let (c, _) = strip(&img, &out, &["--force"])?;
    ensure!(c == 0 && sha256_file(&out)? == sha256_file(&raw)?, "--force: exit {c}");
    // The source itself is never an output, even with --force.
    let (c, v) = strip(&img, &img, &["--force"])?;
    ensure!(c == 2 && v["error"]["kind"] == "unsafe", "output = source: exit {c}, {v}");
    // Damaged data: refused (nothing written), or written with --allow-damaged and exit 1.
    ecc_py(&["flip", "--image", p(&img), "--at", "7:7"])?;
    let out2 = d.path("out2.img");
    let (c, v) = strip(&img, &out2, &[])?;
    ensure!(c == 2 && !out2.exists(), "damaged data must not be stripped silently: exit {c}, {v}");
    ensure!(v["error"]["message"].as_str().is_some_and(|m| m.contains('7')), "message names the sector: {v}");
    let (c, v) = strip(&img, &out2, &["--allow-damaged"])?;
    ensure!(c == 1 && v["ok"] == false && v["bad_sectors"] == serde_json::json!([7]), "--allow-damaged: exit {c}, {v}");
    // No ECC appended: nothing to strip.
    let (c, v) = strip(&raw, &d.path("out3.img"), &[])?;
    ensure!(c == 2 && v["error"]["kind"] == "not-recognized", "plain file: exit {c}, {v}");
    no_leftovers(&d.0)?;
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("ecc::strip_byte_identical_originals", byte_identical_originals),
        trial("ecc::strip_refuses_overwrite_and_damage", refuses_to_overwrite_or_strip_damage),
    ]
}
