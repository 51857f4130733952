//! `loopkit extents` on real ext4 / XFS / btrfs / tmpfs / overlayfs mounts, checked extent by
//! extent against `filefrag -v -b1` (e2fsprogs), `--check` against a raw write made behind the
//! file system's back with `dd`, and the ext reader's block maps against FIEMAP of the same image
//! loop-mounted (the kernel's ext4 driver as the oracle).

use crate::ensure;
use crate::mounts::{self, FragExtent, Mounted, SimpleMount};
use crate::util::{self, TestResult, code, json, loopkit, run_ok, sha256_file, skip, trial};
use libtest_mimic::{Completion, Failed, Trial};
use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("extents::ext4_matches_filefrag_and_check_finds_raw_writes", ext4_matches_filefrag),
        trial("extents::xfs_matches_filefrag_with_reflinks", xfs_matches_filefrag),
        trial("extents::refused_file_systems", refused_file_systems),
        trial("extents::ext_reader_matches_kernel_fiemap", ext_reader_matches_kernel_fiemap),
    ]
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn write_file(p: &Path, data: &[u8]) -> Result<(), Failed> {
    let mut f = std::fs::File::create(p).map_err(|e| format!("create {}: {e}", p.display()))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(|e| format!("write {}: {e}", p.display()).into())
}

/// Two files appended to in turn, each piece made durable before the next, so their blocks
/// interleave on disk.
fn write_interleaved(a: &Path, b: &Path, pieces: usize, piece: usize) -> Result<(), Failed> {
    let open = |p: &Path| std::fs::OpenOptions::new().create(true).append(true).custom_flags(libc::O_SYNC).open(p);
    let mut fa = open(a).map_err(|e| format!("open: {e}"))?;
    let mut fb = open(b).map_err(|e| format!("open: {e}"))?;
    for i in 0..pieces {
        fa.write_all(&pattern(i as u64, piece)).map_err(|e| format!("write: {e}"))?;
        fb.write_all(&pattern(1000 + i as u64, piece)).map_err(|e| format!("write: {e}"))?;
    }
    Ok(())
}

/// A sparse file: data blocks at `blocks` (4 KiB each) in a file of `size` bytes.
fn write_sparse(p: &Path, size: u64, blocks: &[u64]) -> Result<(), Failed> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(p).map_err(|e| format!("create: {e}"))?;
    f.set_len(size).map_err(|e| format!("truncate: {e}"))?;
    for &b in blocks {
        f.write_all_at(&pattern(b, 4096), b * 4096).map_err(|e| format!("write: {e}"))?;
    }
    f.sync_all().map_err(|e| format!("sync: {e}").into())
}

/// `loopkit extents FILE --json [more]`: the exit code and the document; the file's SHA-256 is
/// the same before and after.
fn extents_json(file: &Path, more: &[&str]) -> Result<(i32, Value), Failed> {
    let before = sha256_file(file)?;
    let mut args = vec!["extents", "--json", "--quiet"];
    let f = file.to_string_lossy().into_owned();
    args.push(&f);
    args.extend_from_slice(more);
    let out = util::run(&mut loopkit(&args))?;
    let doc = json(&out)?;
    ensure!(sha256_file(file)? == before, "loopkit extents changed {}", file.display());
    Ok((code(&out), doc))
}

/// The document's extents equal filefrag's, one by one; returns the classes.
fn compare_with_filefrag(file: &Path, doc: &Value) -> Result<Vec<String>, Failed> {
    let frag = mounts::filefrag(file)?;
    let ours = doc["extents"].as_array().ok_or("no extents array")?;
    ensure!(
        ours.len() == frag.len(),
        "{}: loopkit lists {} extents, filefrag {}:\n{:#?}\n{}",
        file.display(),
        ours.len(),
        frag.len(),
        frag,
        serde_json::to_string_pretty(ours).unwrap_or_default()
    );
    let mut classes = Vec::new();
    for (o, f) in ours.iter().zip(&frag) {
        let flags: Vec<String> =
            o["flags"].as_array().ok_or("flags")?.iter().filter_map(|v| v.as_str().map(str::to_string)).collect();
        let mine = FragExtent {
            logical: o["logical"].as_u64().ok_or("logical")?,
            physical: o["physical"].as_u64().ok_or("physical")?,
            length: o["length"].as_u64().ok_or("length")?,
            flags,
        };
        ensure!(mine == *f, "{}: extent differs: loopkit {mine:?}, filefrag {f:?}", file.display());
        classes.push(o["class"].as_str().ok_or("class")?.to_string());
    }
    Ok(classes)
}

fn ext4_matches_filefrag() -> TestResult {
    if let Some(why) = mounts::unavailable("mkfs.ext4") {
        return skip(why);
    }
    let m = Mounted::new("ext4", 96, &["-q", "-F", "-O", "inline_data", "-b", "4096"], "")?;
    let contig = m.path("contiguous.img");
    write_file(&contig, &pattern(1, 3 << 20))?;
    let (fa, fb) = (m.path("frag-a.img"), m.path("frag-b.img"));
    write_interleaved(&fa, &fb, 24, 64 << 10)?;
    let sparse = m.path("sparse.img");
    write_sparse(&sparse, 16 << 20, &[3, 4, 1000, 2047])?;
    let falloc = m.path("fallocated.img");
    run_ok(Command::new("fallocate").args(["-l", "4M"]).arg(&falloc))?;
    let tiny = m.path("tiny.img");
    write_file(&tiny, b"small enough to live inside the inode")?;

    let mut fragmented = false;
    for (file, want) in [
        (&contig, "mapped"),
        (&fa, "mapped"),
        (&fb, "mapped"),
        (&sparse, "mapped"),
        (&falloc, "zero"),
        (&tiny, "via-file"),
    ] {
        let (rc, doc) = extents_json(file, &[])?;
        ensure!(rc == 0, "{}: exit {rc}, expected 0 (remap-safe):\n{doc:#}", file.display());
        ensure!(doc["verdict"] == "remap-safe", "{}: verdict {}", file.display(), doc["verdict"]);
        ensure!(
            doc["backing"]["device"] == m.loopdev.as_str(),
            "backing device {} != {}",
            doc["backing"]["device"],
            m.loopdev
        );
        let classes = compare_with_filefrag(file, &doc)?;
        ensure!(!classes.is_empty(), "{}: no extents", file.display());
        ensure!(classes.iter().all(|c| c == want), "{}: classes {classes:?}, expected all {want}", file.display());
        if file == &fa || file == &fb {
            fragmented |= doc["summary"]["fragments"].as_u64().unwrap_or(0) > 0;
        }
    }
    ensure!(fragmented, "the interleaved files did not fragment; the test does not cover fragmentation");
    let (_, doc) = extents_json(&sparse, &[])?;
    ensure!(doc["summary"]["holes"].as_u64() == Some(4), "sparse holes: {}", doc["summary"]);
    ensure!(
        doc["summary"]["hole_bytes"].as_u64() == Some((16 << 20) - 4 * 4096),
        "sparse hole bytes: {}",
        doc["summary"]
    );

    // --check passes on every file.
    for file in [&contig, &fa, &sparse, &falloc] {
        let (rc, doc) = extents_json(file, &["--check"])?;
        ensure!(
            rc == 0 && doc["check"]["ok"] == true,
            "{}: --check failed (exit {rc}): {}",
            file.display(),
            doc["check"]
        );
    }
    let (_, doc) = extents_json(&fa, &["--check"])?;
    let mapped: u64 = doc["summary"]["mapped_bytes"].as_u64().unwrap_or(0);
    ensure!(
        doc["check"]["bytes_checked"].as_u64() == Some(mapped),
        "bytes checked {} != mapped {mapped}",
        doc["check"]
    );

    // A raw write behind the file system's back (the page cache holds the file): --check names
    // exactly the extent it hit, and where.
    let data = std::fs::read(&fb).map_err(|e| format!("read: {e}"))?;
    let (_, doc) = extents_json(&fb, &[])?;
    let target = &doc["extents"][1];
    let (logical, physical) =
        (target["logical"].as_u64().ok_or("logical")?, target["physical"].as_u64().ok_or("physical")?);
    let at = 4096u64.min(target["length"].as_u64().unwrap_or(0) / 2) / 512 * 512;
    let xs = m.scratch.path("xs");
    std::fs::write(&xs, vec![b'X'; 512]).map_err(|e| format!("write: {e}"))?;
    ensure!(data[(logical + at) as usize] != b'X', "test data already holds X");
    run_ok(Command::new("dd").args([
        format!("if={}", xs.display()),
        format!("of={}", m.loopdev),
        "bs=512".into(),
        format!("seek={}", (physical + at) / 512),
        "count=1".into(),
        "oflag=direct".into(),
        "conv=notrunc".into(),
        "status=none".into(),
    ]))?;
    let (rc, doc) = extents_json(&fb, &["--check"])?;
    ensure!(rc == 1, "--check after a raw write: exit {rc}, expected 1");
    let mism = doc["check"]["mismatches"].as_array().ok_or("mismatches")?;
    ensure!(mism.len() == 1, "expected exactly one differing extent, got {mism:?}");
    ensure!(mism[0]["logical"].as_u64() == Some(logical), "wrong extent named: {}", mism[0]);
    ensure!(mism[0]["first_difference"].as_u64() == Some(logical + at), "wrong first difference: {}", mism[0]);
    Ok(Completion::Completed)
}

fn xfs_matches_filefrag() -> TestResult {
    if let Some(why) = mounts::unavailable("mkfs.xfs") {
        return skip(why);
    }
    let m = Mounted::new("xfs", 320, &["-q", "-f", "-m", "reflink=1"], "")?;
    let contig = m.path("contiguous.img");
    write_file(&contig, &pattern(2, 2 << 20))?;
    let clone = m.path("clone.img");
    run_ok(Command::new("cp").arg("--reflink=always").arg(&contig).arg(&clone))?;
    let falloc = m.path("fallocated.img");
    run_ok(Command::new("fallocate").args(["-l", "2M"]).arg(&falloc))?;
    let sparse = m.path("sparse.img");
    write_sparse(&sparse, 8 << 20, &[10, 11, 500])?;
    for (file, want) in [(&contig, "via-file"), (&clone, "via-file"), (&falloc, "zero"), (&sparse, "mapped")] {
        let (rc, doc) = extents_json(file, &["--check"])?;
        ensure!(rc == 0, "{}: exit {rc}:\n{doc:#}", file.display());
        ensure!(doc["backing"]["filesystem"] == "xfs", "filesystem {}", doc["backing"]["filesystem"]);
        let classes = compare_with_filefrag(file, &doc)?;
        ensure!(classes.iter().all(|c| c == want), "{}: classes {classes:?}, expected {want}", file.display());
    }
    let (_, doc) = extents_json(&clone, &[])?;
    ensure!(
        doc["extents"][0]["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "shared")),
        "a reflinked extent is not reported shared: {}",
        doc["extents"][0]
    );
    Ok(Completion::Completed)
}

fn refusal_codes(doc: &Value) -> Vec<String> {
    doc["refusals"]
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().filter_map(|r| r["code"].as_str().map(str::to_string)).collect())
}

fn refused_file_systems() -> TestResult {
    if let Some(why) = mounts::unavailable("mkfs.btrfs") {
        return skip(why);
    }
    let b = Mounted::new("btrfs", 160, &["-q", "-f"], "")?;
    let f = b.path("image.img");
    write_file(&f, &pattern(3, 1 << 20))?;
    let (rc, doc) = extents_json(&f, &[])?;
    let codes = refusal_codes(&doc);
    ensure!(rc == 1 && doc["verdict"] == "not-remap-safe", "btrfs: exit {rc}, verdict {}", doc["verdict"]);
    ensure!(codes.contains(&"remap.fs-not-allowed".to_string()), "btrfs refusals: {codes:?}");
    ensure!(codes.contains(&"remap.anonymous-device".to_string()), "btrfs refusals: {codes:?}");

    let scratch = util::Scratch::new("refused");
    let t = SimpleMount::new(&scratch.path("tmpfs"), &["-t", "tmpfs", "-o", "size=8m", "none"])?;
    let tf = t.mnt.join("image.img");
    write_file(&tf, &pattern(4, 65536))?;
    let (rc, doc) = extents_json(&tf, &[])?;
    let codes = refusal_codes(&doc);
    ensure!(rc == 1 && codes.contains(&"remap.fs-not-allowed".to_string()), "tmpfs: exit {rc}, {codes:?}");

    // overlayfs over an ext4 lower directory: FIEMAP would answer, but the device is anonymous.
    let e = Mounted::new("ext4", 32, &["-q", "-F"], "")?;
    for d in ["lower", "upper", "work"] {
        std::fs::create_dir_all(e.path(d)).map_err(|err| format!("mkdir: {err}"))?;
    }
    write_file(&e.path("lower/image.img"), &pattern(5, 65536))?;
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        e.path("lower").display(),
        e.path("upper").display(),
        e.path("work").display()
    );
    let o = SimpleMount::new(&scratch.path("overlay"), &["-t", "overlay", "overlay", "-o", &opts])?;
    let (rc, doc) = extents_json(&o.mnt.join("image.img"), &[])?;
    let codes = refusal_codes(&doc);
    ensure!(rc == 1 && codes.contains(&"remap.fs-not-allowed".to_string()), "overlayfs: exit {rc}, {codes:?}");
    drop(o);

    // ext4 with data=journal: the journal may overwrite raw writes later.
    let mut j = Mounted::new("ext4", 32, &["-q", "-F"], "data=journal")?;
    let jf = j.path("image.img");
    write_file(&jf, &pattern(6, 65536))?;
    let (rc, doc) = extents_json(&jf, &[])?;
    let codes = refusal_codes(&doc);
    ensure!(rc == 1 && codes == ["remap.data-journal"], "data=journal: exit {rc}, {codes:?}");
    j.umount()?;
    j.mount("")?;
    let (rc, _) = extents_json(&jf, &[])?;
    ensure!(rc == 0, "the same file with data=ordered should be remap-safe (exit {rc})");

    // Not a file at all: exit 2.
    let out = util::run(&mut loopkit(&["extents", "--json", "/nonexistent/image.img"]))?;
    ensure!(code(&out) == 2, "missing file: exit {}", code(&out));
    Ok(Completion::Completed)
}

/// The ext reader (over the unmounted image) and the kernel (FIEMAP through filefrag, image
/// loop-mounted) agree on where every file's bytes are.
fn ext_reader_matches_kernel_fiemap() -> TestResult {
    if let Some(why) = mounts::unavailable("mkfs.ext4") {
        return skip(why);
    }
    let mut m = Mounted::new("ext4", 64, &["-q", "-F", "-b", "1024"], "")?;
    std::fs::create_dir_all(m.path("d/e")).map_err(|e| format!("mkdir: {e}"))?;
    write_file(&m.path("a.bin"), &pattern(7, 300_000))?;
    write_interleaved(&m.path("d/x.bin"), &m.path("d/e/y.bin"), 12, 20_000)?;
    write_sparse(&m.path("d/sparse.bin"), 5 << 20, &[0, 77, 600])?;
    run_ok(Command::new("fallocate").args(["-l", "300K"]).arg(m.path("d/e/prealloc.bin")))?;
    write_file(&m.path("empty"), b"")?;
    // Files whose block map spans indirect blocks (1 KiB blocks: > 12 blocks).
    write_file(&m.path("d/e/indirect.bin"), &pattern(8, 2 << 20))?;
    m.umount()?;

    let src = loopkit::source::FileSource::open(&m.image).map_err(|e| format!("open image: {e}"))?;
    let fs = loopkit::fs::open(&src).map_err(|e| format!("open ext: {e}"))?;
    let mut files = Vec::new();
    loopkit::fs::tree::walk(&*fs, &loopkit::progress::Interrupt::new(), |f| {
        if f.stat.file_type == loopkit::fs::tree::FileType::File {
            files.push((String::from_utf8_lossy(&f.path).into_owned(), f.id));
        }
    })
    .map_err(|e| format!("walk: {e}"))?;
    let mut ours = Vec::new();
    for (path, id) in &files {
        let r = fs.open(*id).map_err(|e| format!("open {path}: {e}"))?;
        ours.push((path.clone(), r.extents().ok_or_else(|| format!("{path}: no extents"))?));
    }
    drop(fs);
    m.mount("ro")?;
    ensure!(files.len() == 7, "expected 7 files, found {files:?}");
    for (path, exts) in ours {
        let frag = mounts::filefrag(&m.path(&path))?;
        // FIEMAP does not merge extents of block-mapped files the way the reader does, and splits
        // ext4 extents at its own boundaries: compare byte by byte.
        let expand = |v: &[(u64, u64, u64, bool)]| -> Vec<(u64, u64, bool)> {
            let mut out = Vec::new();
            for &(l, p, n, unwritten) in v {
                for k in (0..n).step_by(1024) {
                    out.push((l + k, p + k, unwritten));
                }
            }
            out
        };
        let mine: Vec<_> = exts
            .iter()
            .map(|e| (e.logical, e.physical, e.length, e.flags.contains(loopkit::extent::ExtentFlags::UNWRITTEN)))
            .collect();
        let theirs: Vec<_> =
            frag.iter().map(|f| (f.logical, f.physical, f.length, f.flags.iter().any(|x| x == "unwritten"))).collect();
        ensure!(
            expand(&mine) == expand(&theirs),
            "{path}: the ext reader's map differs from FIEMAP:\nreader: {mine:?}\nfilefrag: {theirs:?}"
        );
    }
    Ok(Completion::Completed)
}
