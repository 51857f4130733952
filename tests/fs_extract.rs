//! `loopkit extract`: every fixture extracted reproduces its source tree (contents, types,
//! symlink targets, hard links, modes, mtimes — checked by manifest.py on the output), a
//! non-empty DEST is refused, `--path` extracts a subtree, and crafted images whose names try
//! to escape DEST (`../../x`, duplicate names over a symlink) write nothing outside it.

use crate::ensure;
use crate::fs_fixtures::{self as fx, CASES};
use crate::util::{Scratch, TestResult, code, have, loopkit, repo_root, run, run_ok, skip, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::Path;
use std::process::Command;

/// Manifest of a directory by the oracle, without what extract deliberately does not restore
/// (owners, special files, symlink mtimes).
fn normalised(dir: &Path) -> Result<Vec<serde_json::Value>, Failed> {
    let out = run_ok(Command::new(crate::util::python()).arg(repo_root().join("testdata/gen/manifest.py")).arg(dir))?;
    Ok(normalise(fx::entries(&out.stdout)?))
}

fn normalise(v: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    v.into_iter()
        .filter(|e| !matches!(e["type"].as_str(), Some("fifo" | "socket" | "chardev" | "blockdev")))
        .map(|mut e| {
            e["uid"] = serde_json::Value::Null;
            e["gid"] = serde_json::Value::Null;
            // extract never restores setuid/setgid (no owners): compare the other bits.
            if let Some(m) = e["mode"].as_u64() {
                e["mode"] = (m & !0o6000).into();
            }
            if e["type"] == "symlink" {
                e["mtime"] = serde_json::Value::Null;
                e["mode"] = serde_json::Value::Null;
            }
            e
        })
        .collect()
}

fn every_fixture_reproduces_its_tree() -> TestResult {
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("extract");
    for case in CASES {
        let dest = s.path(case.image);
        let out = run(fx::loopkit_on(f, case, &["extract", "--quiet"]).arg(&dest))?;
        ensure!(code(&out) == 0, "{}: exit {}: {}", case.image, code(&out), String::from_utf8_lossy(&out.stderr));
        let mut want = normalise(fx::entries(&std::fs::read(f.path(case.want))?)?);
        if case.image == "iso-joliet.iso" {
            // Joliet records no modes: extract leaves the defaults, so compare without them.
            for e in &mut want {
                e["mode"] = serde_json::Value::Null;
            }
        }
        let mut got = normalised(&dest)?;
        if case.image == "iso-joliet.iso" {
            for e in &mut got {
                e["mode"] = serde_json::Value::Null;
            }
        }
        let d = fx::diff(&got, &want);
        ensure!(d.is_empty(), "{}: extracted tree differs:\n{d}", case.image);
        // The tree's setuid file (when the fixture has one) comes out without the bit.
        if want.iter().any(|e| e["path"] == "setuid") {
            use std::os::unix::fs::PermissionsExt;
            let mode = dest.join("setuid").metadata()?.permissions().mode();
            ensure!(mode & 0o6000 == 0, "{}: setuid bit restored (mode {mode:o})", case.image);
        }
        // Holes stay holes: the sparse file takes less space than its size.
        if case.image.starts_with("ext4.") {
            use std::os::unix::fs::MetadataExt;
            let md = dest.join("sparse.bin").metadata()?;
            ensure!(md.blocks() * 512 < md.len(), "sparse.bin was written densely ({} blocks)", md.blocks());
        }
        let _ = std::fs::remove_dir_all(&dest);
    }
    Ok(Completion::Completed)
}

fn refuses_non_empty_dest_and_extracts_subpaths() -> TestResult {
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("extract-dest");
    let dest = s.path("d");
    std::fs::create_dir(&dest)?;
    std::fs::write(dest.join("keep"), b"x")?;
    let img = f.path("ext4.img");
    let out = run(loopkit(&["extract", "--quiet"]).arg(&img).arg(&dest))?;
    ensure!(code(&out) == 2, "non-empty DEST: exit {}", code(&out));
    ensure!(String::from_utf8_lossy(&out.stderr).contains("--force"), "message does not mention --force");
    // A symlink already in DEST where the image has a directory: never followed.
    std::fs::create_dir(s.path("outside"))?;
    std::os::unix::fs::symlink(s.path("outside"), dest.join("dir"))?;
    let out = run(loopkit(&["extract", "--quiet", "--force"]).arg(&img).arg(&dest))?;
    ensure!(code(&out) == 0, "--force: exit {}: {}", code(&out), String::from_utf8_lossy(&out.stderr));
    ensure!(std::fs::read_dir(s.path("outside"))?.next().is_none(), "something was written through a symlink");
    ensure!(dest.join("dir/file.txt").is_file() && dest.join("keep").exists(), "force extraction incomplete");
    // --path: a directory's contents, and a single file.
    let sub = s.path("sub");
    let out = run(loopkit(&["extract", "--quiet", "--path", "/deep/level0/level1"]).arg(&img).arg(&sub))?;
    ensure!(code(&out) == 0, "--path dir: exit {}", code(&out));
    ensure!(
        sub.join("level2/level3/level4/level5/level6/level7/level8/level9/bottom.txt").is_file(),
        "subtree missing"
    );
    let one = s.path("one");
    let out = run(loopkit(&["extract", "--quiet", "--path", "dir/file.txt"]).arg(&img).arg(&one))?;
    ensure!(code(&out) == 0, "--path file: exit {}", code(&out));
    ensure!(std::fs::read(one.join("file.txt"))? == b"hello, world\n", "single file content");
    for bad in ["no/such/thing", "../etc", "link-dir/file.txt"] {
        let out = run(loopkit(&["extract", "--quiet", "--path", bad]).arg(&img).arg(s.path("bad")))?;
        ensure!(code(&out) == 2, "--path {bad}: exit {}", code(&out));
    }
    Ok(Completion::Completed)
}

/// Replace every occurrence of `from` by `to` (same length) in the file.
fn patch(p: &Path, from: &[u8], to: &[u8]) -> Result<usize, Failed> {
    assert_eq!(from.len(), to.len());
    let mut b = std::fs::read(p)?;
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= b.len() {
        if &b[i..i + from.len()] == from {
            b[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    std::fs::write(p, b)?;
    Ok(n)
}

fn crafted_names_cannot_escape() -> TestResult {
    if !have("mkfs.ext2") || !have("xorriso") {
        return skip("mkfs.ext2 or xorriso missing");
    }
    let s = Scratch::new("traversal");
    let t = s.path("t");
    std::fs::create_dir_all(t.join("dux"))?;
    std::fs::write(t.join("evil_name_1"), b"escaped!")?;
    std::fs::write(t.join("dux/payload"), b"through the link")?;
    std::fs::create_dir(s.path("outside"))?;
    std::os::unix::fs::symlink(s.path("outside"), t.join("dup"))?;
    let ext = s.path("evil.img");
    std::fs::File::create(&ext)?.set_len(4 << 20)?;
    run_ok(Command::new("mkfs.ext2").args(["-q", "-F", "-d"]).arg(&t).arg(&ext))?;
    let iso = s.path("evil.iso");
    run_ok(Command::new("xorriso").arg("-outdev").arg(&iso).arg("-map").arg(&t).arg("/"))?;
    for img in [&ext, &iso] {
        ensure!(patch(img, b"evil_name_1", b"../../pwned")? > 0, "{}: name not found", img.display());
        ensure!(patch(img, b"dux", b"dup")? > 0, "{}: dux not found", img.display());
        let dest = s.path("a/b/dest");
        std::fs::create_dir_all(&dest)?;
        let out = run(loopkit(&["extract", "--quiet", "--json"]).arg(img).arg(&dest))?;
        ensure!(
            code(&out) == 1,
            "{}: exit {} (1 expected): {}",
            img.display(),
            code(&out),
            String::from_utf8_lossy(&out.stdout)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for code in ["fs.bad-name", "fs.duplicate-name"] {
            ensure!(text.contains(code), "{}: no {code} problem: {text}", img.display());
        }
        for p in ["a/pwned", "pwned", "a/b/pwned", "outside/payload"] {
            ensure!(!fx::exists(&s.path(p)), "{}: {p} was written outside DEST", img.display());
        }
        ensure!(std::fs::read_dir(s.path("outside"))?.next().is_none(), "outside/ is not empty");
        std::fs::remove_dir_all(s.path("a"))?;
    }
    Ok(Completion::Completed)
}

/// M5: DEST in a parent directory another user controls. A DEST that is a symlink (the swap the
/// review describes, made before the run so the race is deterministic) is refused with and
/// without `--force`, and nothing appears where it points; as root, an empty DEST owned by
/// another user is refused too. The oracle is the file system state, read by the test.
fn symlinked_or_foreign_dest_is_refused() -> TestResult {
    if !have("mkfs.ext2") {
        return skip("mkfs.ext2 missing");
    }
    let s = Scratch::new("extract-m5");
    let t = s.path("t");
    std::fs::create_dir_all(t.join("cron"))?;
    std::fs::write(t.join("cron/job"), b"* * * * * root id\n")?;
    let img = s.path("m5.img");
    std::fs::File::create(&img)?.set_len(4 << 20)?;
    run_ok(Command::new("mkfs.ext2").args(["-q", "-F", "-d"]).arg(&t).arg(&img))?;
    let parent = s.path("attacker");
    let target = s.path("etc-cron.d");
    std::fs::create_dir(&parent)?;
    std::fs::create_dir(&target)?;
    let dest = parent.join("case42");
    std::os::unix::fs::symlink(&target, &dest)?;
    let root = rustix::process::geteuid().is_root();
    if root {
        // The attacker (nobody) owns the parent, as `/tmp/x` would be.
        std::os::unix::fs::chown(&parent, Some(65534), Some(65534))?;
        std::os::unix::fs::lchown(&dest, Some(65534), Some(65534))?;
    }
    for force in [false, true] {
        let mut c = loopkit(&["extract", "--quiet"]);
        if force {
            c.arg("--force");
        }
        let out = run(c.arg(&img).arg(&dest))?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(code(&out) == 2, "symlink DEST (force={force}): exit {} (2 expected): {err}", code(&out));
        ensure!(err.contains("symlink"), "the refusal does not say why: {err}");
        ensure!(std::fs::read_dir(&target)?.next().is_none(), "force={force}: written through the symlink");
        ensure!(std::fs::symlink_metadata(&dest)?.file_type().is_symlink(), "DEST symlink was replaced");
    }
    // The directory the symlink points to, named directly, is the user's choice and works.
    let out = run(loopkit(&["extract", "--quiet"]).arg(&img).arg(&target))?;
    ensure!(code(&out) == 0, "real DEST: exit {}: {}", code(&out), String::from_utf8_lossy(&out.stderr));
    ensure!(std::fs::read(target.join("cron/job"))? == b"* * * * * root id\n", "extracted content differs");
    if !root {
        return Ok(Completion::Completed);
    }
    // As root: an empty DEST that another user owns is refused, and stays empty.
    let theirs = parent.join("theirs");
    std::fs::create_dir(&theirs)?;
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534))?;
    for force in [false, true] {
        let mut c = loopkit(&["extract", "--quiet"]);
        if force {
            c.arg("--force");
        }
        let out = run(c.arg(&img).arg(&theirs))?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(code(&out) == 2, "foreign DEST (force={force}): exit {} (2 expected): {err}", code(&out));
        ensure!(err.contains("owned by uid 65534"), "the refusal does not say why: {err}");
        ensure!(std::fs::read_dir(&theirs)?.next().is_none(), "force={force}: written into the foreign DEST");
    }
    // A new DEST inside the attacker's parent is created by root and used.
    let fresh = parent.join("fresh");
    let out = run(loopkit(&["extract", "--quiet"]).arg(&img).arg(&fresh))?;
    ensure!(code(&out) == 0, "new DEST: exit {}: {}", code(&out), String::from_utf8_lossy(&out.stderr));
    use std::os::unix::fs::MetadataExt;
    ensure!(std::fs::symlink_metadata(&fresh)?.uid() == 0, "the new DEST is not root's");
    ensure!(fresh.join("cron/job").is_file(), "new DEST: not extracted");
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("fs_extract::every_fixture_reproduces_its_tree", every_fixture_reproduces_its_tree),
        trial("fs_extract::refuses_non_empty_dest_and_extracts_subpaths", refuses_non_empty_dest_and_extracts_subpaths),
        trial("fs_extract::crafted_names_cannot_escape", crafted_names_cannot_escape),
        trial("fs_extract::symlinked_or_foreign_dest_is_refused", symlinked_or_foreign_dest_is_refused),
    ]
}
