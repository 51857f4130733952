//! The archive pipeline of `docs/PIPELINE.md`, run end to end from the page's own script block:
//! verify a legacy cryptoloop disc image, `migrate --mode reencrypt --protect rs03`, verify,
//! "burn" (a copy; plus xorriso's cdrecord emulation onto a `stdio:` pseudo-drive when xorriso is
//! installed), verify the "disc". Only the substitutions the page lists are made. The results are
//! then checked with independent oracles: `dvdisaster -t` accepts the protected image; cryptsetup
//! reads its LUKS header and recovers the volume key with the new passphrase, and Python
//! `cryptography` decrypts the payload with that key to the plaintext's SHA-256; bytes damaged in
//! a copy of the disc are restored by `loopkit repair` and by `dvdisaster -f`, both compared with
//! `cmp` against what was burned.

use crate::ecc_verify::{ecc_py, oracle, p, prerequisites};
use crate::ensure;
use crate::luks_read::CHEAP_ARGON2;
use crate::migrate_modes::check_container;
use crate::util::{self, TestResult, code, loopkit_bin, run, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::Path;
use std::process::Command;

/// The medium the test protects for instead of a DVD (sectors): room for the 16 MiB LUKS2
/// header area plus the small fixture, with a few dozen roots.
const MEDIUM: u64 = 15_300;

/// The script block of docs/PIPELINE.md.
fn pipeline_script() -> Result<String, Failed> {
    let doc = std::fs::read_to_string(util::repo_root().join("docs/PIPELINE.md"))
        .map_err(|e| format!("reading docs/PIPELINE.md: {e}"))?;
    let start = doc.find("<!-- begin pipeline script").ok_or("docs/PIPELINE.md: no begin marker")?;
    let end = doc.find("<!-- end pipeline script -->").ok_or("docs/PIPELINE.md: no end marker")?;
    let block = &doc[start..end];
    let a = block.find("```sh\n").ok_or("docs/PIPELINE.md: no sh block")? + 6;
    let b = block[a..].find("```").ok_or("docs/PIPELINE.md: unterminated sh block")? + a;
    Ok(block[a..b].to_string())
}

/// The page's script with the listed substitutions; also returns its xorriso line.
fn adapt(script: &str) -> Result<(String, Option<String>), Failed> {
    let mut out = String::from("set -eu\n");
    let mut xorriso = None;
    let (mut burn, mut migrate) = (false, false);
    for line in script.lines() {
        let t = line.trim_start();
        if t.starts_with("OLD=") || t.starts_with("NEW=") || t.starts_with("DRIVE=") {
            continue; // set by the test
        }
        if t.starts_with("xorriso ") {
            xorriso = Some(t.to_string());
            out.push_str("cp \"$NEW\" \"$DRIVE\"\n");
            burn = true;
            continue;
        }
        if t.starts_with("loopkit migrate ") {
            ensure!(t.contains("--medium dvd"), "the migrate line no longer says --medium dvd: {t}");
            out.push_str(&t.replace("--medium dvd", &format!("--medium {MEDIUM}")));
            out.push(' ');
            out.push_str(&CHEAP_ARGON2.join(" "));
            out.push('\n');
            migrate = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    ensure!(burn && migrate, "docs/PIPELINE.md's script lost its burn or migrate step:\n{script}");
    Ok((out, xorriso))
}

fn same_bytes(a: &Path, b: &Path) -> Result<(), Failed> {
    let o = run(Command::new("cmp").arg(a).arg(b))?;
    ensure!(o.status.success(), "{} and {} differ: {}", a.display(), b.display(), String::from_utf8_lossy(&o.stdout));
    Ok(())
}

fn documented_pipeline() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let env = crate::luks_env!("pipeline");
    let d = &env.d;
    let f = env.cryptoloop("old-disc.img", "ext2", "util-linux-raw", "256", &[])?;
    let before = sha256_file(&f.image)?;
    std::fs::copy(&env.pass, d.path("old.pass")).map_err(|e| format!("copy pass: {e}"))?;
    std::fs::copy(&env.np, d.path("new.pass")).map_err(|e| format!("copy pass: {e}"))?;
    // `loopkit` on PATH is the binary under test.
    let bin = d.path("bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(loopkit_bin(), bin.join("loopkit")).map_err(|e| e.to_string())?;
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());

    let (script, xorriso) = adapt(&pipeline_script()?)?;
    let o = run(Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(&d.0)
        .env("PATH", &path)
        .env("OLD", "old-disc.img")
        .env("NEW", "archive.img")
        .env("DRIVE", "disc.img"))?;
    ensure!(
        o.status.success(),
        "the pipeline script failed (exit {}):\n{script}\nstdout:\n{}\nstderr:\n{}",
        code(&o),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    ensure!(sha256_file(&f.image)? == before, "the old disc image was modified");
    let (new, disc) = (d.path("archive.img"), d.path("disc.img"));
    ensure!(!d.path("archive.img.unprotected").exists(), "the unprotected intermediate was left behind");

    // dvdisaster accepts the protected image (RS03 for a MEDIUM-sector medium).
    let t = oracle(&new, None, Some(MEDIUM))?;
    let empty = |k: &str| t[k].as_array().is_some_and(|a| a.is_empty());
    ensure!(
        t["exit"] == 0 && empty("missing") && empty("crc_errors") && t["ecc_blocks_bad"] == 0,
        "dvdisaster -t on the protected image: {}",
        t["lines"]
    );
    ensure!(
        std::fs::metadata(&new).map_err(|e| e.to_string())?.len() == MEDIUM * 2048,
        "the RS03 image does not fill the {MEDIUM}-sector medium"
    );

    // cryptsetup and Python read the migrated payload: the image up to the end of the LUKS data
    // (16 MiB of LUKS2 header area plus the old payload), without the ECC behind it.
    let plen = std::fs::metadata(&f.image).map_err(|e| e.to_string())?.len();
    let luks = d.path("luks-part.img");
    let bytes = std::fs::read(&disc).map_err(|e| e.to_string())?;
    let luks_len = (16u64 << 20) + plen;
    ensure!(bytes.len() as u64 > luks_len, "the disc is shorter than the migrated image");
    std::fs::write(&luks, &bytes[..luks_len as usize]).map_err(|e| e.to_string())?;
    check_container(&d.0, &luks, &env.np, &f.plaintext_sha256, 16 << 20)?;

    // Damage a copy of the disc: loopkit repair and dvdisaster -f both restore it.
    let dmg = d.path("damaged.img");
    std::fs::copy(&disc, &dmg).map_err(|e| format!("copy: {e}"))?;
    ecc_py(&["erase", "--image", p(&dmg), "--sectors", "20,8200-8203,15000"])?;
    ecc_py(&["flip", "--image", p(&dmg), "--at", "100:7,9000:1000,14000:3"])?;
    let fixed = d.path("fixed-loopkit.img");
    let o = run(Command::new(loopkit_bin()).args(["repair", "-q", p(&dmg), "-o", p(&fixed)]))?;
    ensure!(code(&o) == 0, "loopkit repair exit {}: {}", code(&o), String::from_utf8_lossy(&o.stderr));
    same_bytes(&fixed, &disc)?;
    let theirs = d.path("fixed-dvdisaster.img");
    std::fs::copy(&dmg, &theirs).map_err(|e| format!("copy: {e}"))?;
    let r = ecc_py(&["fix", "--image", p(&theirs), "--capacity", &MEDIUM.to_string()])?;
    ensure!(r["exit"] == 0 || r["exit"] == 1, "dvdisaster -f: {}", r["lines"]);
    same_bytes(&theirs, &disc)?;

    // xorriso's cdrecord emulation, the page's own line, onto a stdio: pseudo-drive.
    if let Some(line) = xorriso.filter(|_| util::have("xorriso")) {
        let line = line.replace("dev=\"$DRIVE\"", "dev=\"stdio:$PWD/xorriso-disc.img\"");
        let o = run(Command::new("sh").arg("-c").arg(&line).current_dir(&d.0).env("NEW", "archive.img"))?;
        ensure!(o.status.success(), "{line}: {}", String::from_utf8_lossy(&o.stderr));
        let burned = std::fs::read(d.path("xorriso-disc.img")).map_err(|e| e.to_string())?;
        ensure!(
            burned.len() >= bytes.len() && burned[..bytes.len()] == bytes[..],
            "xorriso wrote {} bytes that do not start with the {}-byte image",
            burned.len(),
            bytes.len()
        );
    }
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![trial("pipeline::documented_pipeline", documented_pipeline)]
}
