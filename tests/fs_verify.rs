//! `loopkit verify --manifest FILE` / `--against DIR` and the `files` JSON object: the image is
//! compared with the tree it was built from (equal) and with altered copies whose differences
//! the test itself made (missing / extra / changed must name exactly those paths).

use crate::ensure;
use crate::fs_fixtures::{self as fx, CASES};
use crate::util::{Scratch, TestResult, code, json, loopkit, run, run_ok, trial};
use libtest_mimic::{Completion, Trial};
use std::process::Command;

fn strs(v: &serde_json::Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
}

fn against_source_trees() -> TestResult {
    let f = crate::fixtures_or_skip!();
    for case in CASES.iter().filter(|c| c.image.starts_with("ext4.") || c.image.contains("iso-rr.") || c.encrypted) {
        let mut cmd = fx::loopkit_on(f, case, &["verify", "--json", "--quiet"]);
        cmd.arg("--against").arg(f.path(case.tree));
        let out = run(&mut cmd)?;
        let v = json(&out)?;
        ensure!(code(&out) == 0, "{}: exit {} {}", case.image, code(&out), v["problems"]);
        let want = fx::entries(&std::fs::read(f.path(case.want))?)?;
        let files = &v["files"];
        ensure!(
            files["count"].as_u64() == Some(want.len() as u64),
            "{}: count {} want {}",
            case.image,
            files["count"],
            want.len()
        );
        let bytes: u64 = want.iter().filter(|e| e["type"] == "file").map(|e| e["size"].as_u64().unwrap_or(0)).sum();
        ensure!(files["bytes"].as_u64() == Some(bytes), "{}: bytes {} want {bytes}", case.image, files["bytes"]);
        for k in ["missing", "extra", "changed"] {
            ensure!(strs(&files[k]).is_empty(), "{}: {k} = {}", case.image, files[k]);
        }
        ensure!(files["problems"] == 0, "{}: problems {}", case.image, files["problems"]);
    }
    Ok(Completion::Completed)
}

fn differences_are_reported() -> TestResult {
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("verify-diff");
    let copy = s.path("tree");
    run_ok(Command::new("cp").arg("-a").arg(f.path("tree")).arg(&copy))?;
    // Alter the copy: one missing from the image's point of view (added here), one extra
    // (removed here), one changed content with the same size and mtime, one changed mode.
    std::fs::write(copy.join("only-in-reference"), b"new")?;
    std::fs::remove_file(copy.join("one-byte"))?;
    let p = copy.join("dir/file.txt");
    let mtime = p.metadata()?.modified()?;
    std::fs::write(&p, b"HELLO, WORLD\n")?;
    std::fs::File::options().write(true).open(&p)?.set_modified(mtime)?;
    run_ok(Command::new("chmod").arg("0600").arg(copy.join("script.sh")))?;
    let out = run(loopkit(&["verify", "--json", "--quiet", "--against"]).arg(&copy).arg(f.path("ext4.img")))?;
    let v = json(&out)?;
    ensure!(code(&out) == 1, "exit {} (1 expected)", code(&out));
    let files = &v["files"];
    ensure!(strs(&files["missing"]) == ["only-in-reference"], "missing {}", files["missing"]);
    ensure!(strs(&files["extra"]) == ["one-byte"], "extra {}", files["extra"]);
    ensure!(strs(&files["changed"]) == ["dir/file.txt", "script.sh"], "changed {}", files["changed"]);
    ensure!(v["ok"] == false, "ok should be false");

    // The same through a saved manifest edited by the test.
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(f.path("want.json"))?)?;
    let entries = m["entries"].as_array_mut().ok_or("entries")?;
    entries.retain(|e| e["path"] != "empty");
    for e in entries.iter_mut() {
        if e["path"] == "big.bin" {
            e["sha256"] = serde_json::json!("00".repeat(32));
        }
    }
    std::fs::write(s.path("m.json"), serde_json::to_vec(&m)?)?;
    let out =
        run(loopkit(&["verify", "--json", "--quiet", "--manifest"]).arg(s.path("m.json")).arg(f.path("iso-rr.iso")))?;
    let v = json(&out)?;
    ensure!(code(&out) == 1, "manifest: exit {}", code(&out));
    ensure!(strs(&v["files"]["extra"]) == ["empty"], "extra {}", v["files"]["extra"]);
    ensure!(strs(&v["files"]["changed"]) == ["big.bin"], "changed {}", v["files"]["changed"]);
    ensure!(strs(&v["files"]["missing"]).is_empty(), "missing {}", v["files"]["missing"]);
    // Human output names the differences too.
    let out = run(loopkit(&["verify", "--quiet", "--manifest"]).arg(s.path("m.json")).arg(f.path("iso-rr.iso")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(text.contains("files.changed") && text.contains("big.bin"), "human output:\n{text}");
    // A manifest that is not one: exit 2.
    std::fs::write(s.path("bad.json"), b"{\"nope\": 1}")?;
    let out = run(loopkit(&["verify", "--quiet", "--manifest"]).arg(s.path("bad.json")).arg(f.path("ext4.img")))?;
    ensure!(code(&out) == 2, "bad manifest: exit {}", code(&out));
    Ok(Completion::Completed)
}

fn plain_verify_counts_files() -> TestResult {
    let f = crate::fixtures_or_skip!();
    let want = fx::entries(&std::fs::read(f.path("want.json"))?)?;
    for img in ["ext2-1k.img", "iso-xorriso.iso"] {
        let out = run(loopkit(&["verify", "--json", "--quiet"]).arg(f.path(img)))?;
        let v = json(&out)?;
        ensure!(code(&out) == 0, "{img}: exit {} {}", code(&out), v["problems"]);
        ensure!(v["files"]["count"].as_u64() == Some(want.len() as u64), "{img}: count {}", v["files"]["count"]);
        ensure!(strs(&v["files"]["missing"]).is_empty(), "{img}: missing without a reference");
    }
    Ok(Completion::Completed)
}

/// An ext3 image whose journal needs recovery (flag set with `debugfs -w`): files are still
/// read and compared, and a warning says the journal was not replayed.
fn journal_needs_recovery() -> TestResult {
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("recover");
    let img = fx::copy_image(f, "ext3.img", &s)?;
    run_ok(Command::new("debugfs").args(["-w", "-R", "feature needs_recovery"]).arg(&img))?;
    let out = run_ok(Command::new("dumpe2fs").arg("-h").arg(&img))?;
    ensure!(String::from_utf8_lossy(&out.stdout).contains("needs_recovery"), "flag not set by debugfs");
    let out = run(loopkit(&["verify", "--json", "--quiet", "--against"]).arg(f.path("tree")).arg(&img))?;
    let v = json(&out)?;
    ensure!(code(&out) == 0, "exit {}: {}", code(&out), v["problems"]);
    let problems = v["problems"].as_array().cloned().unwrap_or_default();
    ensure!(
        problems.iter().any(|p| p["code"] == "ext.journal-needs-recovery" && p["severity"] == "warning"),
        "no journal warning: {problems:?}"
    );
    Ok(Completion::Completed)
}

/// An ext2 image whose root inode (inode 2) is overwritten with 0xFF (its place from `debugfs
/// imap`): e2fsck (the oracle) calls the file system damaged, so `verify` reports the image —
/// payload digest included — with an error problem `fs.root-unreadable` and exits 1, not 2; with
/// `--against`, every file of the tree is missing.
fn unreadable_root_is_damage() -> TestResult {
    let s = Scratch::new("badroot");
    let tree = s.path("tree");
    std::fs::create_dir_all(tree.join("d"))?;
    std::fs::write(tree.join("a.txt"), b"hello\n")?;
    std::fs::write(tree.join("d/b.txt"), b"world\n")?;
    let img = s.path("e.img");
    std::fs::File::create(&img)?.set_len(1 << 20)?;
    run_ok(Command::new("mkfs.ext2").args(["-q", "-F", "-b", "1024", "-I", "256", "-d"]).arg(&tree).arg(&img))?;
    let out = run_ok(Command::new("debugfs").args(["-R", "imap <2>"]).arg(&img))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // "located at block 8, offset 0x0100"
    let block: u64 = text
        .split("at block ")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|b| b.trim().parse().ok())
        .ok_or(format!("debugfs imap: {text}"))?;
    let off = text
        .split("offset 0x")
        .nth(1)
        .and_then(|t| u64::from_str_radix(t.trim(), 16).ok())
        .ok_or(format!("debugfs imap: {text}"))?;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&img)?;
        f.seek(SeekFrom::Start(block * 1024 + off))?;
        f.write_all(&[0xFF; 256])?;
    }
    let fsck = run(Command::new("e2fsck").args(["-fn"]).arg(&img))?;
    ensure!(code(&fsck) != 0, "e2fsck calls the image clean: {}", String::from_utf8_lossy(&fsck.stdout));
    let out = run(loopkit(&["verify", "--json", "--quiet"]).arg(&img))?;
    let v = json(&out)?;
    ensure!(code(&out) == 1, "exit {}: {v}", code(&out));
    let problems = v["problems"].as_array().cloned().unwrap_or_default();
    ensure!(
        problems.iter().any(|p| p["code"] == "fs.root-unreadable" && p["severity"] == "error"),
        "no fs.root-unreadable error: {problems:?}"
    );
    let want = crate::util::sha256_file(&img)?;
    ensure!(v["payload"]["sha256"] == want.as_str(), "payload digest {} is not the image's {want}", v["payload"]);
    let out = run(loopkit(&["verify", "--json", "--quiet", "--against"]).arg(&tree).arg(&img))?;
    let v = json(&out)?;
    ensure!(code(&out) == 1, "--against: exit {}: {v}", code(&out));
    let mut missing = strs(&v["files"]["missing"]);
    missing.sort();
    ensure!(missing == ["a.txt", "d", "d/b.txt"], "--against: missing {missing:?}");
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("fs_verify::against_source_trees", against_source_trees),
        trial("fs_verify::differences_are_reported", differences_are_reported),
        trial("fs_verify::plain_verify_counts_files", plain_verify_counts_files),
        trial("fs_verify::journal_needs_recovery", journal_needs_recovery),
        trial("fs_verify::unreadable_root_is_damage", unreadable_root_is_damage),
    ]
}
