//! LUKS2 as cryptsetup means it. Oracles: cryptsetup's own header validation
//! suite (its generators and must-load / must-reject verdicts, generated at test time by
//! `testdata/gen/cryptsetup-validation.sh` from the installed cryptsetup's source package, and
//! the installed `cryptsetup luksDump` on each header), `cryptsetup luksAddKey --unbound` /
//! `open --test-passphrase`, `cryptsetup reencrypt --init-only` (encryption, and decryption with a
//! detached header, which leaves a `linear` segment), and `dd` wiping the primary header with
//! `cryptsetup open --test-passphrase` / `luksDump` as the judge.

use crate::ensure;
use crate::legacy::plains;
use crate::luks_read::{CHEAP_PBKDF2, NEW_PASS, cryptsetup, make_container, missing, verify_json, write_pass};
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::Path;
use std::process::Command;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("luks_semantics::cryptsetup_validation_suite", cryptsetup_validation_suite),
        trial("luks_semantics::unbound_keyslot", unbound_keyslot),
        trial("luks_semantics::reencryption_in_progress", reencryption_in_progress),
        trial("luks_semantics::wiped_primary_header", wiped_primary_header),
    ]
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

fn problems(v: &serde_json::Value) -> Vec<(String, String)> {
    v["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (p["code"].as_str().unwrap_or("").to_string(), p["severity"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every header of cryptsetup's validation suite: loopkit's verdict (`inspect`: exit 0 and a LUKS
/// report = loads; exit 2 with a `corrupt` error and a reason = rejects) equals cryptsetup's
/// expected verdict, and the installed cryptsetup agrees with that verdict too.
fn cryptsetup_validation_suite() -> TestResult {
    let m: Vec<&str> = ["cryptsetup", "jq", "xxd", "bash"].into_iter().filter(|t| !util::have(t)).collect();
    if !m.is_empty() {
        return util::skip(format!("missing tools: {}", m.join(", ")));
    }
    let d = Scratch::new("cs-validation");
    let cache = std::env::var_os("LOOPKIT_CRYPTSETUP_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| util::repo_root().join("target/cryptsetup-tests"));
    let out = d.path("out");
    let g = run(Command::new("sh")
        .arg(util::repo_root().join("testdata/gen/cryptsetup-validation.sh"))
        .arg(&cache)
        .arg(&out))?;
    let err = String::from_utf8_lossy(&g.stderr).to_string();
    match g.status.code() {
        Some(0) => {}
        Some(3) => return util::skip(format!("cryptsetup's validation suite is not available here: {}", err.trim())),
        _ => return util::fail(format!("cryptsetup-validation.sh failed:\n{err}")),
    }
    let expected = std::fs::read_to_string(out.join("expected")).map_err(|e| e.to_string())?;
    let (mut loads, mut rejects, mut checked) = (0, 0, 0);
    let mut wrong = Vec::new();
    let copy = d.path("copy.img");
    for line in expected.lines() {
        let mut w = line.split_whitespace();
        let (Some(name), Some(verdict)) = (w.next(), w.next()) else { continue };
        let img = out.join("images").join(name);
        ensure!(img.exists(), "generator did not make {name}");
        let must_load = verdict != "F";
        // The installed cryptsetup, on a copy (its recovery may write), must agree with the list.
        std::fs::copy(&img, &copy).map_err(|e| e.to_string())?;
        let cs = cryptsetup(&["luksDump", s(&copy)])?;
        ensure!(
            cs.status.success() == must_load,
            "{name}: the installed cryptsetup's luksDump (exit {:?}) disagrees with its suite's verdict {verdict}",
            cs.status.code()
        );
        let before = sha256_file(&img)?;
        let o = run(&mut loopkit(&["inspect", "--json", s(&img)]))?;
        ensure!(sha256_file(&img)? == before, "{name}: loopkit changed the header");
        let v = json(&o)?;
        let loaded = code(&o) == 0 && v["kind"] == "luks";
        let reason = v["error"]["message"].as_str().unwrap_or("").to_string();
        let rejected = code(&o) == 2 && v["error"]["kind"] == "corrupt" && !reason.is_empty();
        if (must_load && !loaded) || (!must_load && !rejected) {
            wrong.push(format!("{name} ({verdict}): exit {} {v}", code(&o)));
        }
        if must_load {
            loads += 1
        } else {
            rejects += 1
        }
        checked += 1;
    }
    ensure!(checked >= 80, "only {checked} verdicts in cryptsetup's list");
    ensure!(wrong.is_empty(), "{} of {checked} verdicts differ from cryptsetup's:\n{}", wrong.len(), wrong.join("\n"));
    eprintln!(
        "cryptsetup validation suite ({}): {checked} headers, {loads} must load, {rejects} must be rejected: all agree",
        std::fs::read_to_string(out.join("SOURCE")).unwrap_or_default().trim()
    );
    Ok(Completion::Completed)
}

/// `luksAddKey --unbound`: cryptsetup opens that slot only when asked for it by number and never
/// for the data; loopkit says "wrong passphrase" (exit 2, `wrong-key`), not garbage.
fn unbound_keyslot() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new("luks-unbound");
    let pass = d.path("pass");
    write_pass(&pass, NEW_PASS)?;
    let other = d.path("other");
    write_pass(&other, "only the unbound slot")?;
    let mut flags = vec!["--type", "luks2", "--sector-size", "512"];
    flags.extend(CHEAP_PBKDF2);
    let (img, want) = make_container(&d.0, "u.img", &p.dir.join("ext2.img"), &pass, &flags, 64)?;
    let mut add = vec!["luksAddKey", "--batch-mode", "--unbound", "--key-size", "512"];
    add.extend(CHEAP_PBKDF2);
    add.extend([s(&img), s(&other)]);
    let o = cryptsetup(&add)?;
    ensure!(o.status.success(), "luksAddKey --unbound: {}", String::from_utf8_lossy(&o.stderr));
    let dump = String::from_utf8_lossy(&cryptsetup(&["luksDump", s(&img)])?.stdout).to_string();
    ensure!(dump.contains("(unbound)"), "cryptsetup shows no unbound keyslot:\n{dump}");
    // The oracle: the unbound passphrase opens keyslot 1 only when named, never the data.
    let any = cryptsetup(&["open", "--test-passphrase", "--key-file", s(&other), s(&img)])?;
    ensure!(!any.status.success(), "cryptsetup unlocked the data with the unbound passphrase");
    let slot = cryptsetup(&["open", "--test-passphrase", "--key-slot", "1", "--key-file", s(&other), s(&img)])?;
    ensure!(slot.status.success(), "cryptsetup does not open the unbound slot by number");
    let before = sha256_file(&img)?;
    let (o, v) = verify_json(&img, &["--passphrase-file", s(&other)])?;
    ensure!(code(&o) == 2 && v["error"]["kind"] == "wrong-key", "unbound passphrase: exit {} {v}", code(&o));
    ensure!(v["error"]["message"].as_str().is_some_and(|m| m.contains("unbound")), "{v}");
    let (o, v) = verify_json(&img, &["--passphrase-file", s(&pass)])?;
    ensure!(code(&o) == 0 && v["payload"]["sha256"] == want.as_str(), "bound passphrase: exit {} {v}", code(&o));
    ensure!(sha256_file(&img)? == before, "the image changed");
    Ok(Completion::Completed)
}

/// `cryptsetup reencrypt --init-only`: the header carries the mandatory requirement
/// `online-reencrypt-v2`; nothing has moved, so loopkit reads the payload through its one data
/// segment (the plaintext's hash) with the `luks.reencryption` warning. A decryption started with
/// a detached header leaves a `linear` segment without `iv_tweak`, which must parse.
fn reencryption_in_progress() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new("luks-reencrypt");
    let pass = d.path("pass");
    write_pass(&pass, NEW_PASS)?;
    let mut flags = vec!["--type", "luks2", "--sector-size", "512"];
    flags.extend(CHEAP_PBKDF2);
    let (img, want) = make_container(&d.0, "r.img", &p.dir.join("ext2.img"), &pass, &flags, 64)?;
    // A clean container first: no problem at all.
    let (o, v) = verify_json(&img, &["--passphrase-file", s(&pass)])?;
    ensure!(code(&o) == 0 && v["payload"]["sha256"] == want.as_str(), "before: exit {} {v}", code(&o));
    let mut re = vec!["reencrypt", "--init-only", "--batch-mode", "--key-file", s(&pass)];
    re.extend(CHEAP_PBKDF2);
    re.push(s(&img));
    let o = cryptsetup(&re)?;
    ensure!(o.status.success(), "reencrypt --init-only: {}", String::from_utf8_lossy(&o.stderr));
    let meta = cryptsetup(&["luksDump", "--dump-json-metadata", s(&img)])?;
    let m: serde_json::Value = serde_json::from_slice(&meta.stdout).map_err(|e| e.to_string())?;
    let req = m["config"]["requirements"]["mandatory"].to_string();
    ensure!(req.contains("online-reencrypt"), "cryptsetup's metadata has no re-encryption requirement: {m}");
    let before = sha256_file(&img)?;
    // Nothing moved yet: read through its one data segment (luks_reencrypt covers part-way).
    let (o, v) = verify_json(&img, &["--passphrase-file", s(&pass)])?;
    ensure!(code(&o) == 0 && v["payload"]["sha256"] == want.as_str(), "mid-re-encryption: exit {} {v}", code(&o));
    ensure!(problems(&v).contains(&("luks.reencryption".into(), "warning".into())), "no luks.reencryption: {v}");
    let o = run(&mut loopkit(&["inspect", "--json", s(&img)]))?;
    ensure!(code(&o) == 0, "inspect mid-re-encryption: exit {}", code(&o));
    ensure!(sha256_file(&img)? == before, "the image changed");

    // Decryption with a detached header: cryptsetup writes a `linear` segment (no iv_tweak).
    let (img2, _) = make_container(&d.0, "dec.img", &p.dir.join("ext2.img"), &pass, &flags, 64)?;
    let hdr = d.path("dec.hdr");
    let mut dec = vec!["reencrypt", "--decrypt", "--init-only", "--batch-mode", "--force-offline-reencrypt"];
    dec.extend(["--key-file", s(&pass), "--header", s(&hdr), s(&img2)]);
    let o = cryptsetup(&dec)?;
    ensure!(o.status.success(), "reencrypt --decrypt --init-only: {}", String::from_utf8_lossy(&o.stderr));
    let meta = cryptsetup(&["luksDump", "--dump-json-metadata", s(&hdr)])?;
    let m: serde_json::Value = serde_json::from_slice(&meta.stdout).map_err(|e| e.to_string())?;
    let linear = m["segments"]
        .as_object()
        .is_some_and(|o| o.values().any(|sg| sg["type"] == "linear" && sg.get("iv_tweak").is_none()));
    ensure!(linear, "cryptsetup wrote no linear segment without iv_tweak: {m}");
    let o = run(&mut loopkit(&["inspect", "--json", "--header", s(&hdr), s(&img2)]))?;
    ensure!(code(&o) == 0, "a header with a linear segment: exit {} {}", code(&o), String::from_utf8_lossy(&o.stdout));
    let (o, v) = verify_json(&img2, &["--header", s(&hdr), "--passphrase-file", s(&pass)])?;
    ensure!(
        code(&o) == 0 && problems(&v).iter().any(|(c, _)| c == "luks.reencryption"),
        "decrypt: exit {} {v}",
        code(&o)
    );
    Ok(Completion::Completed)
}

/// The first 4 KiB wiped with dd: cryptsetup still opens the container from the secondary header
/// (`open --test-passphrase`, `luksDump` shows the same UUID), and so does loopkit, with the
/// `luks.header-copy` warning and the same payload; with both copies wiped, neither does.
fn wiped_primary_header() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new("luks-wiped");
    let pass = d.path("pass");
    write_pass(&pass, NEW_PASS)?;
    let mut flags = vec!["--type", "luks2", "--sector-size", "512"];
    flags.extend(CHEAP_PBKDF2);
    let (img, want) = make_container(&d.0, "w.img", &p.dir.join("ext4.img"), &pass, &flags, 64)?;
    let uuid = String::from_utf8_lossy(&cryptsetup(&["luksUUID", s(&img)])?.stdout).trim().to_string();
    let wipe = |f: &Path, seek_kib: u32| -> Result<(), Failed> {
        let o = run(Command::new("dd").args([
            "if=/dev/zero",
            &format!("of={}", s(f)),
            "bs=1024",
            &format!("seek={seek_kib}"),
            "count=4",
            "conv=notrunc",
            "status=none",
        ]))?;
        ensure!(o.status.success(), "dd failed");
        Ok(())
    };
    wipe(&img, 0)?;
    // cryptsetup on a copy (it may repair the primary); the image itself stays wiped.
    let copy = d.path("copy.img");
    std::fs::copy(&img, &copy).map_err(|e| e.to_string())?;
    let t = cryptsetup(&["open", "--test-passphrase", "--key-file", s(&pass), s(&copy)])?;
    ensure!(
        t.status.success(),
        "cryptsetup cannot open the wiped-primary copy: {}",
        String::from_utf8_lossy(&t.stderr)
    );
    std::fs::copy(&img, &copy).map_err(|e| e.to_string())?;
    let cs_uuid = String::from_utf8_lossy(&cryptsetup(&["luksUUID", s(&copy)])?.stdout).trim().to_string();
    ensure!(cs_uuid == uuid, "cryptsetup sees UUID {cs_uuid:?}, was {uuid:?}");
    let before = sha256_file(&img)?;
    let (o, v) = verify_json(&img, &["--passphrase-file", s(&pass)])?;
    ensure!(code(&o) == 0 && v["payload"]["sha256"] == want.as_str(), "wiped primary: exit {} {v}", code(&o));
    ensure!(v["luks"]["uuid"] == uuid.as_str(), "loopkit UUID {} != {uuid}", v["luks"]["uuid"]);
    ensure!(problems(&v).contains(&("luks.header-copy".into(), "warning".into())), "no luks.header-copy: {v}");
    ensure!(v["files"]["problems"] == 0, "{v}");
    ensure!(sha256_file(&img)? == before, "the image changed");
    // Both copies wiped: cryptsetup finds no LUKS device; loopkit cannot open it either (exit 2).
    wipe(&img, 16)?;
    std::fs::copy(&img, &copy).map_err(|e| e.to_string())?;
    let t = cryptsetup(&["open", "--test-passphrase", "--key-file", s(&pass), s(&copy)])?;
    ensure!(!t.status.success(), "cryptsetup opened a container with both headers wiped");
    let (o, v) = verify_json(&img, &["--passphrase-file", s(&pass)])?;
    ensure!(code(&o) == 2, "both wiped: exit {} {v}", code(&o));
    Ok(Completion::Completed)
}
