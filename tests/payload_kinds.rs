//! Payloads that are not file systems (swap, an LVM2 physical volume, DOS and GPT
//! partition tables, raw data), plain and inside cryptsetup-made LUKS2 containers. `verify`
//! reports the payload hash and what the content is (exit 0), and flags `fs.unrecognized` only
//! when file-level checks are asked for (`--manifest`, `--against`). Oracles: `mkswap`, `sfdisk`,
//! `testdata/gen/lvm2_label.py` (pvcreate needs device-mapper), `blkid -p` for identity, the
//! generator's SHA-256 of the plaintext (`luks_oracle.py`) for the payload hash.

use crate::ensure;
use crate::luks_read::{CHEAP_PBKDF2, NEW_PASS, make_container, missing, verify_json, write_pass};
use crate::util::{self, Scratch, TestResult, code, run, run_ok, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub fn trials() -> Vec<Trial> {
    vec![trial("payload_kinds::not_a_file_system_is_not_a_failure", not_a_file_system_is_not_a_failure)]
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// `blkid -p` of a file: (TYPE or PTTYPE, UUID or PTUUID), or None when blkid finds nothing.
fn blkid(p: &Path) -> Result<Option<(String, String)>, Failed> {
    let o = run(Command::new("blkid").args(["-p", "-o", "export", s(p)]))?;
    if !o.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let get = |keys: &[&str]| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            keys.contains(&k).then(|| v.to_string())
        })
    };
    Ok(get(&["TYPE", "PTTYPE"]).map(|t| (t, get(&["UUID", "PTUUID"]).unwrap_or_default())))
}

fn sfdisk(p: &Path, script: &str) -> Result<(), Failed> {
    use std::io::Write;
    let mut c = Command::new("sfdisk")
        .args(["-q", s(p)])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("sfdisk: {e}"))?;
    c.stdin.take().ok_or("no stdin")?.write_all(script.as_bytes()).map_err(|e| e.to_string())?;
    ensure!(c.wait().map_err(|e| e.to_string())?.success(), "sfdisk {script:?} failed");
    Ok(())
}

fn not_a_file_system_is_not_a_failure() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let m: Vec<&str> = ["mkswap", "sfdisk", "blkid"].into_iter().filter(|t| !util::have(t)).collect();
    if !m.is_empty() {
        return util::skip(format!("missing tools: {}", m.join(", ")));
    }
    let d = Scratch::new("payload-kinds");
    let pass = d.path("pass");
    write_pass(&pass, NEW_PASS)?;
    let blank = |name: &str| -> Result<PathBuf, Failed> {
        let p = d.path(name);
        std::fs::File::create(&p).and_then(|f| f.set_len(4 << 20)).map_err(|e| e.to_string())?;
        Ok(p)
    };
    let mut payloads: Vec<(&str, PathBuf)> = Vec::new();
    let swap = blank("swap.bin")?;
    run_ok(Command::new("mkswap").args(["-U", "0badc0de-1234-4321-8765-0123456789ab", "-L", "oldswap", s(&swap)]))?;
    payloads.push(("swap", swap));
    let lvm = blank("lvm.bin")?;
    run_ok(Command::new(util::python()).arg(util::repo_root().join("testdata/gen/lvm2_label.py")).args([
        s(&lvm),
        "--uuid",
        "Xy12ZwAbCdEf0123456789GhIjKlMnOp",
    ]))?;
    payloads.push(("lvm2", lvm));
    let dos = blank("dos.bin")?;
    sfdisk(&dos, "label: dos\nlabel-id: 0x5eedf00d\n,1M,83\n,,82\n")?;
    payloads.push(("dos", dos));
    let gpt = blank("gpt.bin")?;
    sfdisk(&gpt, "label: gpt\nlabel-id: 0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0\n,1M\n,\n")?;
    payloads.push(("gpt", gpt));
    // Raw data (a database, an archive): deterministic bytes no probe recognises.
    let raw = d.path("raw.bin");
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let bytes: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&raw, bytes).map_err(|e| e.to_string())?;
    payloads.push(("raw", raw));

    let manifest = d.path("empty.manifest");
    std::fs::write(&manifest, r#"{"loopkit_manifest": 1, "entries": []}"#).map_err(|e| e.to_string())?;
    let against = d.path("against");
    std::fs::create_dir_all(&against).map_err(|e| e.to_string())?;
    let mut flags = vec!["--type", "luks2", "--sector-size", "512"];
    flags.extend(CHEAP_PBKDF2);
    for (name, plain) in &payloads {
        let id = blkid(plain)?;
        if *name == "raw" {
            ensure!(id.is_none(), "blkid recognises the raw payload: {id:?}");
        } else {
            ensure!(id.is_some(), "blkid does not recognise the {name} payload");
        }
        let (img, want) = make_container(&d.0, &format!("{name}.luks"), plain, &pass, &flags, 64)?;
        ensure!(want == sha256_file(plain)?, "{name}: generator plaintext hash");
        let before = sha256_file(&img)?;
        let mut cases: Vec<(PathBuf, Vec<&str>, &str)> =
            vec![(img.clone(), vec!["--passphrase-file", s(&pass)], "luks")];
        if *name != "raw" {
            // Unencrypted, the same payload is recognised by its signature alone.
            cases.push((plain.clone(), vec![], "plain"));
        }
        for (file, args, how) in &cases {
            let (o, v) = verify_json(file, args)?;
            ensure!(code(&o) == 0 && v["ok"] == true, "{name} ({how}): exit {} {v}", code(&o));
            ensure!(
                v["payload"]["sha256"] == want.as_str(),
                "{name} ({how}): payload {} != {want}",
                v["payload"]["sha256"]
            );
            match &id {
                Some((t, u)) => {
                    ensure!(
                        v["filesystem"]["type"] == t.as_str(),
                        "{name} ({how}): type {} != blkid {t}",
                        v["filesystem"]["type"]
                    );
                    ensure!(
                        v["filesystem"]["uuid"].as_str().is_some_and(|x| x.eq_ignore_ascii_case(u)),
                        "{name} ({how}): uuid {} != blkid {u}",
                        v["filesystem"]["uuid"]
                    );
                }
                None => ensure!(v["filesystem"].is_null(), "{name} ({how}): {v}"),
            }
            ensure!(
                !v["problems"].as_array().is_some_and(|a| a.iter().any(|p| p["severity"] == "error")),
                "{name} ({how}): error problems {v}"
            );
            // File-level checks asked for: now it is a problem (exit 1), not an exit-2 failure.
            for check in [["--manifest", s(&manifest)], ["--against", s(&against)]] {
                let mut a = args.clone();
                a.extend(check);
                let (o, v) = verify_json(file, &a)?;
                let codes: Vec<&str> = v["problems"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|p| p["code"].as_str()).collect())
                    .unwrap_or_default();
                ensure!(
                    code(&o) == 1 && codes.contains(&"fs.unrecognized"),
                    "{name} ({how}) {check:?}: exit {} {v}",
                    code(&o)
                );
            }
        }
        ensure!(sha256_file(&img)? == before, "{name}: the image changed");
    }
    Ok(Completion::Completed)
}
