//! Crash safety and bad destinations for `migrate --mode reencrypt`:
//! - SIGKILL at pseudo-random points (two dozen runs): no final OUT exists unless it verifies,
//!   `--resume` always completes to a container whose payload decrypts (Python, with the key
//!   cryptsetup dumps) to the plaintext, and the source's SHA-256 never changes;
//! - Ctrl-C (SIGINT): exit 130, a checkpoint, and `--resume` continues from it;
//! - resuming with another new passphrase is refused; a full destination and a read-only
//!   destination (small tmpfs mounts, root only) give clear errors and lose nothing.

use crate::ensure;
use crate::legacy::plains;
use crate::luks_read::{CHEAP_PBKDF2, NEW_PASS, missing, write_pass};
use crate::migrate_modes::{check_container, migrate, migrate_to};
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, run_ok, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A 32 MiB cryptoloop image (ext2) and its plaintext SHA-256, made by the fixture generator.
fn big_source(d: &Path) -> Result<(PathBuf, String, PathBuf), Failed> {
    let p = plains().map_err(Failed::from)?;
    let generator = util::repo_root().join("testdata/gen/legacy.py");
    let plain = d.join("big-plain.img");
    run_ok(Command::new(util::python()).arg(&generator).args([
        "plain",
        "--fs",
        "ext2",
        "--size-mib",
        "32",
        "--tree",
        s(&p.dir.join("tree")),
        "--out",
        s(&plain),
    ]))?;
    let pass = p.dir.join("pass");
    let img = d.join("big.img");
    let out = run_ok(Command::new(util::python()).arg(&generator).args([
        "encrypt",
        "--plain",
        s(&plain),
        "--scheme",
        "cryptoloop",
        "--derivation",
        "rmd160",
        "--key-bits",
        "256",
        "--passphrase-file",
        s(&pass),
        "--out",
        s(&img),
    ]))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&plain);
    Ok((img, v["plaintext_sha256"].as_str().unwrap_or("").to_string(), pass))
}

fn reencrypt_args(img: &Path, out: &Path, pass: &Path, np: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> =
        ["migrate", "--to", "dmcrypt", "--json", "--no-prompt", "--mode", "reencrypt"].map(String::from).to_vec();
    a.extend(
        [
            s(img),
            "-o",
            s(out),
            "--passphrase-file",
            s(pass),
            "--new-passphrase-file",
            s(np),
            "--checkpoint-every",
            "2M",
            "--threads",
            "1",
        ]
        .map(String::from),
    );
    a.extend(CHEAP_PBKDF2.iter().map(|x| x.to_string()));
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// Start loopkit with `args` and SIGKILL it after `after` (if still running). Returns whether
/// the kill happened before it exited on its own.
fn run_and_kill(args: &[String], after: Duration) -> Result<bool, Failed> {
    let mut child = Command::new(util::loopkit_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let t = Instant::now();
    while t.elapsed() < after {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(true)
}

fn crash_and_resume() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("mig-crash");
    let (img, plain_sha, pass) = big_source(&d.0)?;
    let src_sha = sha256_file(&img)?;
    let np = d.path("newpass");
    write_pass(&np, NEW_PASS)?;
    let out = d.path("out.img");
    let partial = d.path("out.img.partial");
    // How long a whole run takes here, to spread the kills over it.
    let t = Instant::now();
    let o = run(Command::new(util::loopkit_bin()).args(reencrypt_args(&img, &out, &pass, &np, &[])))?;
    ensure!(code(&o) == 0, "uninterrupted run: {}", String::from_utf8_lossy(&o.stderr));
    let full = t.elapsed();
    std::fs::remove_file(&out).map_err(|e| e.to_string())?;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n.max(1)
    };
    let (mut kills, mut mid_resumes) = (0, 0);
    for round in 0..24 {
        // A fresh start (--force discards the previous round's output), killed somewhere.
        let after = Duration::from_micros(rnd(full.as_micros() as u64 * 11 / 10));
        if run_and_kill(&reencrypt_args(&img, &out, &pass, &np, &["--force"]), after)? {
            kills += 1;
        }
        if round % 3 == 1 {
            // Kill the resume as well.
            let after = Duration::from_micros(rnd(full.as_micros() as u64));
            if run_and_kill(&reencrypt_args(&img, &out, &pass, &np, &["--resume"]), after)? {
                kills += 1;
            }
        }
        // Invariant: OUT exists only if it is complete and verified.
        if out.exists() {
            let o = run(&mut loopkit(&["verify", "--json", "--no-prompt", "--passphrase-file", s(&np), s(&out)]))?;
            let v = json(&o)?;
            ensure!(
                code(&o) == 0 && v["payload"]["sha256"] == plain_sha.as_str(),
                "round {round}: OUT exists but does not verify: {v}"
            );
        }
        // --resume completes.
        let o = run(Command::new(util::loopkit_bin()).args(reencrypt_args(&img, &out, &pass, &np, &["--resume"])))?;
        let v = json(&o)?;
        ensure!(
            code(&o) == 0,
            "round {round}: --resume exit {}: {}\n{v}",
            code(&o),
            String::from_utf8_lossy(&o.stderr)
        );
        ensure!(
            v["migrated_sha256"] == plain_sha.as_str() && v["source_sha256"] == plain_sha.as_str(),
            "round {round}: {v}"
        );
        if v["resumed_from_bytes"].as_u64().is_some_and(|n| n > 0 && n < 32 << 20) {
            mid_resumes += 1;
        }
        ensure!(
            !partial.exists() && !d.path("out.img.partial.checkpoint").exists(),
            "round {round}: temporary files left after completion"
        );
        ensure!(sha256_file(&img)? == src_sha, "round {round}: the source changed");
    }
    ensure!(kills >= 12, "only {kills} of the runs were killed before finishing (timing too coarse?)");
    ensure!(mid_resumes >= 2, "only {mid_resumes} resumes started mid-payload; the checkpoint path is not exercised");
    // The last output, with the independent oracles.
    check_container(&d.0, &out, &np, &plain_sha, 16 << 20)?;
    Ok(Completion::Completed)
}

fn sigint_and_resume() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("mig-int");
    let (img, plain_sha, pass) = big_source(&d.0)?;
    let np = d.path("newpass");
    write_pass(&np, NEW_PASS)?;
    let out = d.path("out.img");
    // Send SIGINT as soon as the checkpoint shows payload progress (a few attempts: the run is
    // short, and the machine may be fast).
    let ck = d.path("out.img.partial.checkpoint");
    let mut interrupted = None;
    for _attempt in 0..5 {
        let mut child = Command::new(util::loopkit_bin())
            .args(reencrypt_args(&img, &out, &pass, &np, &["--force"]))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        let mut sent = false;
        while t.elapsed() < Duration::from_secs(60) {
            if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                break;
            }
            let done = std::fs::read(&ck)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["done_bytes"].as_u64());
            if done.is_some_and(|n| n > 0) {
                run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]))?;
                sent = true;
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let o = child.wait_with_output().map_err(|e| e.to_string())?;
        if sent && code(&o) != 0 {
            interrupted = Some(o);
            break;
        }
        let _ = std::fs::remove_file(&out);
    }
    let Some(o) = interrupted else {
        return util::fail("could not interrupt a migration mid-payload in 5 attempts");
    };
    let v = json(&o)?;
    ensure!(code(&o) == 130 && v["error"]["kind"] == "interrupted", "SIGINT: exit {} {v}", code(&o));
    ensure!(
        !out.exists() && ck.exists(),
        "after SIGINT: OUT exists {} checkpoint exists {}",
        out.exists(),
        ck.exists()
    );
    // Without --resume or --force the leftovers are protected.
    let (c, v, _) =
        migrate(&reencrypt_args(&img, &out, &pass, &np, &[])[5..].iter().map(String::as_str).collect::<Vec<_>>())?;
    ensure!(
        c == 2 && v["error"]["message"].as_str().is_some_and(|m| m.contains("--resume")),
        "leftovers without --resume: {v}"
    );
    // Another new passphrase cannot resume (the keyslot in the partial output decides).
    let other = d.path("other");
    write_pass(&other, "a different new passphrase")?;
    let o = run(Command::new(util::loopkit_bin()).args(reencrypt_args(&img, &out, &pass, &other, &["--resume"])))?;
    let v = json(&o)?;
    ensure!(code(&o) == 2 && v["error"]["kind"] == "wrong-key", "resume with another passphrase: {v}");
    let o = run(Command::new(util::loopkit_bin()).args(reencrypt_args(&img, &out, &pass, &np, &["--resume"])))?;
    let v = json(&o)?;
    ensure!(code(&o) == 0 && v["resumed_from_bytes"].as_u64().is_some_and(|n| n > 0), "resume: {v}");
    ensure!(v["migrated_sha256"] == plain_sha.as_str(), "resume result: {v}");
    Ok(Completion::Completed)
}

/// A tmpfs of `size` mounted at `dir` (root only); unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, opts: &str) -> Result<Option<Mount>, Failed> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "loopkit-test", s(dir)])
            .output()
            .map_err(|e| e.to_string())?;
        Ok(if o.status.success() { Some(Mount(dir.to_path_buf())) } else { None })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn bad_destinations() -> TestResult {
    let env = crate::luks_env!("mig-dest");
    let (d, pass, np) = (&env.d, &env.pass, &env.np);
    let f = env.cryptoloop("cl.img", "ext2", "rmd160", "256", &[])?;
    let src_sha = sha256_file(&f.image)?;
    let Some(full) = Mount::tmpfs(&d.path("full"), "size=12m")? else {
        return util::skip("cannot mount a tmpfs here (needs root)");
    };
    let out = full.0.join("out.img");
    let (c, v, e) =
        migrate(&reencrypt_args(&f.image, &out, pass, np, &[])[5..].iter().map(String::as_str).collect::<Vec<_>>())?;
    let msg = v["error"]["message"].as_str().unwrap_or("");
    ensure!(
        c == 2 && v["error"]["kind"] == "io" && msg.contains("full") && msg.contains("--resume"),
        "full disk: exit {c} {v}\n{e}"
    );
    ensure!(!out.exists(), "OUT exists after ENOSPC");
    ensure!(sha256_file(&f.image)? == src_sha, "the source changed");
    // Resume still refuses cleanly while the disk is full (no panic, no OUT).
    let (c, _, _) = migrate(
        &reencrypt_args(&f.image, &out, pass, np, &["--resume"])[5..].iter().map(String::as_str).collect::<Vec<_>>(),
    )?;
    ensure!(c == 2 && !out.exists(), "resume on a full disk: exit {c}");
    drop(full);

    let Some(ro) = Mount::tmpfs(&d.path("ro"), "ro,size=1m")? else {
        return util::skip("cannot mount a read-only tmpfs here");
    };
    let out = ro.0.join("out.img");
    let (c, v, _) =
        migrate(&reencrypt_args(&f.image, &out, pass, np, &[])[5..].iter().map(String::as_str).collect::<Vec<_>>())?;
    ensure!(
        c == 2 && v["error"]["message"].as_str().is_some_and(|m| m.contains("read-only")),
        "read-only destination: exit {c} {v}"
    );
    let hdr = ro.0.join("h.luks");
    let (c, v, _) = migrate_to(
        &f.image,
        "detached-header",
        &hdr,
        np,
        &[&["--passphrase-file", s(pass), "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]],
    )?;
    ensure!(
        c == 2 && v["error"]["message"].as_str().is_some_and(|m| m.contains("read-only")),
        "read-only header destination: exit {c} {v}"
    );
    ensure!(sha256_file(&f.image)? == src_sha, "the source changed");
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("migrate_safety::crash_and_resume", crash_and_resume),
        trial("migrate_safety::sigint_and_resume", sigint_and_resume),
        trial("migrate_safety::bad_destinations", bad_destinations),
    ]
}
