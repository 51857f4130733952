//! `loopkit manifest` against independent oracles: the manifest of each source tree computed by
//! `testdata/gen/manifest.py` (os.lstat + hashlib) must equal loopkit's manifest of the image
//! built from it by mkfs.ext2/3/4 -d, genisoimage or xorriso — also through cryptoloop and
//! loop-AES encryption; one image is cross-checked with `debugfs -R "rdump / OUT"`.

use crate::ensure;
use crate::fs_fixtures::{self as fx, CASES};
use crate::util::{Scratch, TestResult, code, loopkit, run, run_ok, sha256_file, skip, trial};
use libtest_mimic::{Completion, Trial};
use std::process::Command;

fn every_image_equals_its_tree() -> TestResult {
    let f = crate::fixtures_or_skip!();
    for case in CASES {
        let before = sha256_file(&f.path(case.image))?;
        let out = run(&mut fx::loopkit_on(f, case, &["manifest", "--quiet"]))?;
        ensure!(code(&out) == 0, "{}: exit {} stderr {}", case.image, code(&out), String::from_utf8_lossy(&out.stderr));
        let got = fx::entries(&out.stdout)?;
        let want = fx::entries(&std::fs::read(f.path(case.want))?)?;
        let d = fx::diff(&got, &want);
        ensure!(d.is_empty(), "{}: manifest differs from {}:\n{d}", case.image, case.want);
        ensure!(sha256_file(&f.path(case.image))? == before, "{}: the image changed", case.image);
    }
    Ok(Completion::Completed)
}

fn output_file_and_refusal() -> TestResult {
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("manifest-out");
    let m = s.path("m.json");
    let img = f.path("ext4.img");
    let out = run(loopkit(&["manifest", "--quiet", "-o"]).arg(&m).arg(&img))?;
    ensure!(code(&out) == 0, "exit {}: {}", code(&out), String::from_utf8_lossy(&out.stderr));
    let first = std::fs::read(&m)?;
    let want = fx::entries(&std::fs::read(f.path("want.json"))?)?;
    ensure!(fx::diff(&fx::entries(&first)?, &want).is_empty(), "-o file differs from the oracle");
    // Never overwrite without --force.
    let out = run(loopkit(&["manifest", "--quiet", "-o"]).arg(&m).arg(&img))?;
    ensure!(code(&out) == 2, "overwrite without --force: exit {}", code(&out));
    let out = run(loopkit(&["manifest", "--quiet", "--force", "--json", "-o"]).arg(&m).arg(&img))?;
    ensure!(code(&out) == 0, "--force: exit {}", code(&out));
    let v = crate::util::json(&out)?;
    ensure!(v["entries"].as_u64() == Some(want.len() as u64), "summary entries {} want {}", v["entries"], want.len());
    // Deterministic: byte-identical on a second run, sorted by path.
    ensure!(std::fs::read(&m)? == first, "a second run produced different bytes");
    let paths: Vec<String> = want.iter().map(|e| e["path"].as_str().unwrap_or("").to_string()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    ensure!(paths == sorted, "oracle not sorted (test bug)");
    Ok(Completion::Completed)
}

fn fixtures_have_the_claimed_structures() -> TestResult {
    let f = crate::fixtures_or_skip!();
    let debugfs = |img: &str, req: &str| -> Result<String, libtest_mimic::Failed> {
        let out = run_ok(Command::new("debugfs").args(["-R", req]).arg(f.path(img)))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    // /many is an htree directory (EXT2_INDEX_FL 0x1000) in every ext image.
    for img in ["ext2-1k.img", "ext3.img", "ext4.img", "ext4-64k.img", "ext4-metabg.img"] {
        let st = debugfs(img, "stat /many")?;
        let flags = st.split("Flags: 0x").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or("0");
        let flags = u32::from_str_radix(flags, 16).unwrap_or(0);
        ensure!(flags & 0x1000 != 0, "{img}: /many is not indexed: {st}");
    }
    // The ext2 1 KiB image maps big.bin through double-indirect blocks (> 12 + 256 blocks).
    let st = debugfs("ext2-1k.img", "stat /big.bin")?;
    ensure!(st.contains("(DIND)"), "ext2: big.bin has no double-indirect block:\n{st}");
    // The inline image really has inline files.
    let st = debugfs("ext4-inline.img", "stat /dir/file.txt")?;
    ensure!(st.contains("Flags: 0x10000000"), "ext4-inline: file.txt is not inline:\n{st}");
    // The slow symlink really is slow (has a block) on ext4.
    let st = debugfs("ext4.img", "stat /dir/link-slow")?;
    ensure!(st.contains("EXTENTS:") || st.contains("BLOCKS:"), "link-slow is a fast symlink:\n{st}");
    Ok(Completion::Completed)
}

/// debugfs's own extraction as a second oracle: rdump the ext4 image, hash the dump with
/// manifest.py, compare contents, types and symlink targets with loopkit's manifest.
fn debugfs_rdump_crosscheck() -> TestResult {
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("rdump");
    std::fs::create_dir(s.path("out"))?;
    run_ok(
        Command::new("debugfs").args(["-R", &format!("rdump / {}", s.path("out").display())]).arg(f.path("ext4.img")),
    )?;
    // rdump writes the root's children directly into OUT; remove what mkfs created.
    let _ = std::fs::remove_dir(s.path("out/lost+found"));
    let gendir = crate::util::repo_root().join("testdata/gen/manifest.py");
    let dump = run_ok(Command::new(crate::util::python()).arg(&gendir).arg("--exclude-special").arg(s.path("out")))?;
    let mine = run_ok(loopkit(&["manifest", "--quiet"]).arg(f.path("ext4.img")))?;
    let pick = |v: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        v.into_iter()
            .filter(|e| !matches!(e["type"].as_str(), Some("fifo" | "socket" | "chardev" | "blockdev")))
            .map(|e| {
                // rdump writes hard links as separate files.
                let t = if e["type"] == "hardlink" { serde_json::json!("file") } else { e["type"].clone() };
                let target = if e["type"] == "symlink" { e["target"].clone() } else { serde_json::Value::Null };
                serde_json::json!({"path": e["path"], "type": t, "size": e["size"], "target": target, "sha256": e["sha256"]})
            })
            .collect()
    };
    let d = fx::diff(&pick(fx::entries(&mine.stdout)?), &pick(fx::entries(&dump.stdout)?));
    ensure!(d.is_empty(), "loopkit vs debugfs rdump:\n{d}");
    Ok(Completion::Completed)
}

/// A file larger than 4 GiB without creating any large file: a small file is put into a 4 KiB-
/// block ext4 image, then debugfs (the oracle) moves its extent to logical block 2^20 (byte
/// 4 GiB) and sets the size to 4 GiB + 8 KiB; `e2fsck -fn` must find the image consistent. loopkit
/// must report the size, read zeros before 4 GiB and the file's bytes after it.
fn file_over_4gib() -> TestResult {
    if !crate::util::have("mkfs.ext4") || !crate::util::have("debugfs") || !crate::util::have("e2fsck") {
        return skip("mkfs.ext4, debugfs or e2fsck missing");
    }
    let s = Scratch::new("big4g");
    std::fs::create_dir(s.path("t"))?;
    let content: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    std::fs::write(s.path("t/huge.bin"), &content)?;
    let img = s.path("e.img");
    std::fs::File::create(&img)?.set_len(16 << 20)?;
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096", "-d"]).arg(s.path("t")).arg(&img))?;
    let base: u64 = 4 << 30;
    let size: u64 = base + content.len() as u64;
    for req in ["sif /huge.bin block[3] 1048576".to_string(), format!("sif /huge.bin size {size}")] {
        run_ok(Command::new("debugfs").args(["-w", "-R", &req]).arg(&img))?;
    }
    let st = run_ok(Command::new("debugfs").args(["-R", "stat /huge.bin"]).arg(&img))?;
    let st = String::from_utf8_lossy(&st.stdout).to_string();
    ensure!(st.contains(&format!("Size: {size}")) && st.contains("(1048576-1048577)"), "debugfs stat: {st}");
    run_ok(Command::new("e2fsck").args(["-fn"]).arg(&img))?;
    let source = loopkit::source::FileSource::open(&img).map_err(|e| e.to_string())?;
    let fs = loopkit::fs::open(&source).map_err(|e| e.to_string())?;
    let root = fs.read_dir(fs.root()).map_err(|e| e.to_string())?;
    let id = root.entries.iter().find(|e| e.name == b"huge.bin").map(|e| e.id).ok_or("huge.bin not listed")?;
    let stat = fs.stat(id).map_err(|e| e.to_string())?;
    ensure!(stat.size_bytes == size, "size {} want {size}", stat.size_bytes);
    let r = fs.open(id).map_err(|e| e.to_string())?;
    for off in [0u64, 4096, base - 10, base, base + 990, size - 100] {
        let mut got = vec![0u8; 100];
        let mut done = 0;
        while done < got.len() {
            let n = r.read_at(&mut got[done..], off + done as u64).map_err(|e| e.to_string())?;
            ensure!(n > 0, "short read at {off}");
            done += n;
        }
        let want: Vec<u8> = (off..off + 100).map(|o| if o < base { 0 } else { content[(o - base) as usize] }).collect();
        ensure!(got == want, "bytes at {off} differ");
    }
    Ok(Completion::Completed)
}

/// A multi-extent file: genisoimage output for two files `a1`, `a2` whose adjacent directory
/// records are patched into one file of two extents (flag 0x80 on the first record, the second
/// renamed to the first's name). The oracle is the concatenation of the two source files.
fn iso_multi_extent() -> TestResult {
    if !crate::util::have("genisoimage") {
        return skip("genisoimage missing");
    }
    let s = Scratch::new("multiextent");
    std::fs::create_dir(s.path("t"))?;
    let a1: Vec<u8> = (0..6144u32).map(|i| (i % 251) as u8).collect();
    let a2: Vec<u8> = (0..1000u32).map(|i| (i % 13) as u8 + 1).collect();
    std::fs::write(s.path("t/a1"), &a1)?;
    std::fs::write(s.path("t/a2"), &a2)?;
    let iso = s.path("x.iso");
    run_ok(Command::new("genisoimage").args(["-quiet", "-R", "-o"]).arg(&iso).arg(s.path("t")))?;
    let mut b = std::fs::read(&iso)?;
    let find = |b: &[u8], pat: &[u8]| b.windows(pat.len()).position(|w| w == pat);
    let n1 = find(&b, b"A1.;1").ok_or("record A1.;1 not found")?;
    let rec = n1 - 33;
    ensure!(b[rec + 32] == 5, "unexpected record layout");
    b[rec + 25] |= 0x80;
    let n2 = find(&b, b"A2.;1").ok_or("record A2.;1 not found")?;
    b[n2 + 1] = b'1';
    let nm = find(&b, b"NM\x07\x01\x00a2").ok_or("NM a2 not found")?;
    b[nm + 6] = b'1';
    std::fs::write(&iso, &b)?;
    let joined = s.path("joined");
    std::fs::write(&joined, [a1, a2].concat())?;
    let want = sha256_file(&joined)?;
    let out = run(loopkit(&["manifest", "--quiet"]).arg(&iso))?;
    ensure!(code(&out) == 0, "exit {}: {}", code(&out), String::from_utf8_lossy(&out.stderr));
    let e = fx::entries(&out.stdout)?;
    ensure!(e.len() == 1, "expected one entry, got {e:?}");
    ensure!(e[0]["path"] == "a1" && e[0]["size"] == 7144, "entry {}", e[0]);
    ensure!(e[0]["sha256"] == want.as_str(), "sha256 {} want {want}", e[0]["sha256"]);
    Ok(Completion::Completed)
}

/// Triple-indirect blocks: a sparse file with data past 64 MiB on 1 KiB blocks (12 + 256 +
/// 65536 blocks are reachable without the triple-indirect pointer).
fn ext2_triple_indirect() -> TestResult {
    if !crate::util::have("mkfs.ext2") || !crate::util::have("debugfs") {
        return skip("mkfs.ext2 or debugfs missing");
    }
    let s = Scratch::new("tind");
    std::fs::create_dir(s.path("t"))?;
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::File::create(s.path("t/far.bin"))?;
        file.set_len(80 << 20)?;
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
        file.write_all_at(&data, 5000)?;
        file.write_all_at(&data, (70 << 20) + 123)?;
    }
    let img = s.path("e.img");
    std::fs::File::create(&img)?.set_len(4 << 20)?;
    run_ok(Command::new("mkfs.ext2").args(["-q", "-F", "-b", "1024", "-d"]).arg(s.path("t")).arg(&img))?;
    let st = run_ok(Command::new("debugfs").args(["-R", "stat /far.bin"]).arg(&img))?;
    ensure!(String::from_utf8_lossy(&st.stdout).contains("(TIND)"), "no triple-indirect block in the fixture");
    let want = run_ok(
        Command::new(crate::util::python())
            .arg(crate::util::repo_root().join("testdata/gen/manifest.py"))
            .arg(s.path("t")),
    )?;
    let got = run(loopkit(&["manifest", "--quiet"]).arg(&img))?;
    ensure!(code(&got) == 0, "exit {}", code(&got));
    let d = fx::diff(&fx::entries(&got.stdout)?, &fx::entries(&want.stdout)?);
    ensure!(d.is_empty(), "{d}");
    Ok(Completion::Completed)
}

fn bad_input() -> TestResult {
    let s = Scratch::new("manifest-bad");
    std::fs::write(s.path("zeros.img"), vec![0u8; 1 << 20])?;
    let out = run(loopkit(&["manifest", "--quiet", "--scheme", "plain"]).arg(s.path("zeros.img")))?;
    ensure!(code(&out) == 2, "zeros: exit {} {}", code(&out), String::from_utf8_lossy(&out.stderr));
    ensure!(!out.stderr.is_empty(), "no message");
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("fs_manifest::every_image_equals_its_tree", every_image_equals_its_tree),
        trial("fs_manifest::output_file_and_refusal", output_file_and_refusal),
        trial("fs_manifest::fixtures_have_the_claimed_structures", fixtures_have_the_claimed_structures),
        trial("fs_manifest::debugfs_rdump_crosscheck", debugfs_rdump_crosscheck),
        trial("fs_manifest::file_over_4gib", file_over_4gib),
        trial("fs_manifest::iso_multi_extent", iso_multi_extent),
        trial("fs_manifest::ext2_triple_indirect", ext2_triple_indirect),
        trial("fs_manifest::bad_input", bad_input),
    ]
}
