//! `loopkit mount`: the tree under the mount point of every fixture image (plain ext2/3/4, ISO
//! with Rock Ridge and Joliet, cryptoloop, loop-AES single- and multi-key, LUKS2) equals the generator's tree (oracle:
//! `manifest.py`, os.lstat + hashlib over the mount) and, for ext, `debugfs rdump` of the same
//! image, ctimes `debugfs stat`'s; `statfs` equals `dumpe2fs -h`; a block map damaged with `debugfs sif` gives EIO on
//! exactly that block and zeros with --allow-damaged; `--raw` serves the payload whose SHA-256 is
//! verify's and on which `e2fsck -fn` is clean; a killed server leaves ENOTCONN that
//! `loopkit umount` clears; SIGTERM unmounts; a normal user can mount; `--json` documents agree
//! with /proc/self/mountinfo, `stat` of the mount point, /proc/PID/fd and `blkid`. Every command runs under
//! `timeout`, and every mount is unmounted on drop (also when a check fails).

use crate::ensure;
use crate::fs_fixtures::{self as fx, CASES};
use crate::util::{self, Scratch, TestResult, code, have, loopkit_bin, repo_root, run, run_ok, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("mount::every_fixture_shows_its_tree", every_fixture_shows_its_tree),
        trial("mount::luks2_tree", luks2_tree),
        trial("mount::loopaes_multikey_tree", loopaes_multikey_tree),
        trial("mount::damaged_map_gives_eio_there_only", damaged_map_gives_eio_there_only),
        trial("mount::raw_payload", raw_payload),
        trial("mount::extended_attributes", extended_attributes),
        trial("mount::killed_server_and_signals", killed_server_and_signals),
        trial("mount::as_a_normal_user", as_a_normal_user),
        trial("mount::json_documents", json_documents),
        trial("mount::huge_directory", huge_directory),
    ]
}

/// Why FUSE cannot be used here, if it cannot.
fn no_fuse() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse (FUSE module not loaded or not available in this container)".into());
    }
    None
}

/// `timeout SECS PROGRAM`: nothing a test runs may hang.
fn timed(secs: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "5", &secs.to_string()]).arg(program);
    c
}

fn lk(secs: u32) -> Command {
    timed(secs, loopkit_bin())
}

fn is_mounted(dir: &Path) -> bool {
    let Ok(abs) = std::fs::canonicalize(dir.parent().unwrap_or(Path::new("/"))) else { return false };
    let want = abs.join(dir.file_name().unwrap_or_default());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|mp| Path::new(mp) == want))
}

/// A live mount, unmounted on drop (`loopkit umount`, then `umount -l` as a last resort).
struct Mounted {
    dir: PathBuf,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = run(lk(30).arg("umount").arg(&self.dir));
        }
        if is_mounted(&self.dir) {
            let _ = run(timed(30, "umount").arg("-l").arg(&self.dir));
        }
    }
}

/// `loopkit mount IMAGE DIR ARGS` (DIR created), exit 0 required.
fn mount(image: &Path, dir: &Path, args: &[&str]) -> Result<Mounted, Failed> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let out = run(lk(120).arg("mount").arg(image).arg(dir).args(args))?;
    let m = Mounted { dir: dir.to_path_buf() };
    ensure!(
        code(&out) == 0 && is_mounted(dir),
        "mount {} (exit {}): {}",
        image.display(),
        code(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(m)
}

/// The oracle's manifest of a directory (the mount), `manifest.py` under a timeout.
fn manifest(dir: &Path, extra: &[&str]) -> Result<Vec<serde_json::Value>, Failed> {
    let out =
        run_ok(timed(600, util::python()).arg(repo_root().join("testdata/gen/manifest.py")).arg(dir).args(extra))?;
    Ok(fx::entries(&out.stdout)?)
}

/// Without mkfs's `lost+found` (not part of the generator's tree).
fn without_lost_found(v: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    v.into_iter()
        .filter(|e| e["path"].as_str().is_some_and(|p| p != "lost+found" && !p.starts_with("lost+found/")))
        .collect()
}

/// What `debugfs rdump` cannot restore, left out on both sides: hard links (it writes copies),
/// symlink mtimes, special files, setuid/setgid/sticky bits.
fn as_rdump_sees(v: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    v.into_iter()
        .filter(|e| !matches!(e["type"].as_str(), Some("fifo" | "socket" | "chardev" | "blockdev")))
        .map(|mut e| {
            if e["type"] == "hardlink" {
                e["type"] = "file".into();
                e["target"] = serde_json::Value::Null;
            }
            if e["type"] == "symlink" {
                e["mtime"] = serde_json::Value::Null;
            }
            if let Some(m) = e["mode"].as_u64() {
                e["mode"] = (m & 0o777).into();
            }
            e
        })
        .collect()
}

/// `stat -f` figures of a mount: (block size, blocks, free blocks, inodes, free inodes).
fn statfs(dir: &Path) -> Result<Vec<u64>, Failed> {
    let out = run_ok(timed(30, "stat").args(["-f", "-c", "%S %b %f %c %d"]).arg(dir))?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|w| w.parse().ok()).collect())
}

/// The same figures from `dumpe2fs -h`.
fn dumpe2fs(img: &Path) -> Result<Vec<u64>, Failed> {
    let out = run_ok(timed(60, "dumpe2fs").arg("-h").arg(img))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.trim_start_matches(':').trim().parse().ok()))
            .unwrap_or(u64::MAX)
    };
    Ok(vec![
        field("Block size"),
        field("Block count"),
        field("Free blocks"),
        field("Inode count"),
        field("Free inodes"),
    ])
}

fn every_fixture_shows_its_tree() -> TestResult {
    if let Some(r) = no_fuse() {
        return util::skip(r);
    }
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("mount-tree");
    for case in CASES {
        let dir = s.path(&format!("mnt-{}", case.image));
        let mut args: Vec<String> = Vec::new();
        if case.encrypted {
            args.extend(["--passphrase-file".into(), f.path("pass").display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let img = f.path(case.image);
        let m = mount(&img, &dir, &args)?;
        let mut got = without_lost_found(manifest(&m.dir, &[])?);
        let mut want = fx::entries(&std::fs::read(f.path(case.want))?)?;
        if case.image == "iso-joliet.iso" {
            // Joliet records no modes or owners: the mount shows defaults, the oracle nulls.
            for e in got.iter_mut().chain(want.iter_mut()) {
                e["mode"] = serde_json::Value::Null;
                e["uid"] = serde_json::Value::Null;
                e["gid"] = serde_json::Value::Null;
            }
        }
        let d = fx::diff(&got, &want);
        ensure!(d.is_empty(), "{}: the mounted tree differs from the generator's:\n{d}", case.image);
        // Independent reader: debugfs rdump of the same image (not for inline-data files, which
        // debugfs 1.47.0 dumps as the 60 raw bytes of i_block).
        if case.image.starts_with("ext") && !case.encrypted && case.image != "ext4-inline.img" {
            let out = s.path(&format!("rdump-{}", case.image));
            std::fs::create_dir_all(&out)?;
            run_ok(timed(300, "debugfs").arg("-R").arg(format!("rdump / {}", out.display())).arg(&img))?;
            let theirs = as_rdump_sees(without_lost_found(manifest(&out, &[])?));
            let ours = as_rdump_sees(got.clone());
            let d = fx::diff(&ours, &theirs);
            ensure!(d.is_empty(), "{}: the mounted tree differs from debugfs rdump:\n{d}", case.image);
            // ctimes as debugfs reads them from the inodes.
            // (Plain names only: manifest paths escape odd bytes.)
            let plain = |e: &&serde_json::Value| {
                e["path"].as_str().is_some_and(|p| p.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-/".contains(&c)))
            };
            for e in want.iter().filter(|e| e["type"] != "symlink").filter(plain).take(5) {
                use std::os::unix::fs::MetadataExt;
                let p = e["path"].as_str().unwrap_or("");
                let out = run_ok(timed(60, "debugfs").arg("-R").arg(format!("stat \"/{p}\"")).arg(&img))?;
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let theirs = text
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("ctime: 0x"))
                    .and_then(|h| i64::from_str_radix(h.get(..8)?, 16).ok());
                let ours = m.dir.join(p).symlink_metadata()?.ctime();
                ensure!(theirs == Some(ours), "{}: /{p}: ctime {ours}, debugfs {theirs:?}", case.image);
            }
            let (a, b) = (statfs(&m.dir)?, dumpe2fs(&img)?);
            ensure!(a == b, "{}: statfs {a:?}, dumpe2fs -h {b:?} (bsize blocks bfree files ffree)", case.image);
        }
        // Hard links share one inode number, as in the source tree.
        if let Some(h) = want.iter().find(|e| e["type"] == "hardlink") {
            use std::os::unix::fs::MetadataExt;
            let (p, t) = (h["path"].as_str().unwrap_or(""), h["target"].as_str().unwrap_or(""));
            let (a, b) = (m.dir.join(p).metadata()?, m.dir.join(t).metadata()?);
            ensure!(a.ino() == b.ino() && a.nlink() > 1, "{}: {p} and {t} are not one inode", case.image);
        }
        // Device nodes are shown but cannot be opened (nodev).
        if let Some(c) = want.iter().find(|e| e["type"] == "chardev") {
            let p = m.dir.join(c["path"].as_str().unwrap_or(""));
            ensure!(std::fs::File::open(&p).is_err(), "{}: device node {} opened", case.image, p.display());
        }
        // Read-only.
        ensure!(std::fs::write(m.dir.join("new-file"), b"x").is_err(), "{}: a file was created", case.image);
        drop(m);
        ensure!(!is_mounted(&dir), "{}: still mounted after loopkit umount", case.image);
    }
    Ok(Completion::Completed)
}

/// loop-AES multi-key v3 (65-line key file, AES-256), encrypted by aespipe over the ext4
/// fixture: the mounted tree is the generator's.
fn loopaes_multikey_tree() -> TestResult {
    if let Some(r) = no_fuse() {
        return util::skip(r);
    }
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("mount-lmk");
    let script = repo_root().join("testdata/gen/legacy.py");
    let keys = s.path("keys65");
    run_ok(timed(60, util::python()).arg(&script).args(["keyfile", "--lines", "65", "--out"]).arg(&keys))?;
    let img = s.path("lmk-ext4.img");
    run_ok(
        timed(300, util::python())
            .arg(&script)
            .arg("encrypt")
            .arg("--plain")
            .arg(f.path("ext4.img"))
            .args(["--scheme", "loop-aes", "--aespipe-args", "-e AES256", "--keyfile"])
            .arg(&keys)
            .arg("--out")
            .arg(&img),
    )?;
    let key_arg = keys.display().to_string();
    let m = mount(&img, &s.path("mnt"), &["--key-file", &key_arg])?;
    let got = without_lost_found(manifest(&m.dir, &[])?);
    let want = fx::entries(&std::fs::read(f.path("want.json"))?)?;
    let d = fx::diff(&got, &want);
    ensure!(d.is_empty(), "loop-AES multi-key: the mounted tree differs from the generator's:\n{d}");
    Ok(Completion::Completed)
}

fn luks2_tree() -> TestResult {
    if let Some(r) = no_fuse() {
        return util::skip(r);
    }
    let env = match crate::luks_read::Env::new("mount-luks")? {
        Ok(e) => e,
        Err(r) => return util::skip(r),
    };
    let f = crate::fixtures_or_skip!();
    // The generator's ext4 image as the payload of a cryptsetup-made LUKS2 container.
    let (img, _) = crate::luks_read::make_container(
        &env.d.0,
        "luks2.img",
        &f.path("ext4.img"),
        &env.np,
        &["--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"],
        64,
    )?;
    let pass = env.np.display().to_string();
    let m = mount(&img, &env.d.path("mnt"), &["--passphrase-file", &pass])?;
    let got = without_lost_found(manifest(&m.dir, &[])?);
    let want = fx::entries(&std::fs::read(f.path("want.json"))?)?;
    let d = fx::diff(&got, &want);
    ensure!(d.is_empty(), "LUKS2: the mounted tree differs from the generator's:\n{d}");
    Ok(Completion::Completed)
}

/// Per 1 KiB block of `path`: `Some(bytes)` or `None` where pread fails with EIO (Python's
/// os.pread, the oracle for what a reader sees).
fn blocks(path: &Path) -> Result<Vec<Option<Vec<u8>>>, Failed> {
    let code = r#"
import os, sys, errno
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
for off in range(0, size, 1024):
    try:
        b = os.pread(fd, 1024, off)
        print("ok " + b.hex())
    except OSError as e:
        print("EIO" if e.errno == errno.EIO else "ERR %d" % e.errno)
"#;
    let out = run_ok(timed(60, util::python()).arg("-c").arg(code).arg(path))?;
    let mut v = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        match l.strip_prefix("ok ") {
            Some(h) => v.push(Some(
                (0..h.len() / 2).filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok()).collect(),
            )),
            None if l == "EIO" => v.push(None),
            None => return util::fail(format!("{}: unexpected read error {l}", path.display())),
        }
    }
    Ok(v)
}

fn damaged_map_gives_eio_there_only() -> TestResult {
    if let Some(r) = no_fuse() {
        return util::skip(r);
    }
    if let Some(r) = crate::ext_damage::missing() {
        return util::skip(r);
    }
    let s = Scratch::new("mount-damage");
    let t = s.path("tree");
    std::fs::create_dir_all(&t)?;
    let data: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(t.join("f"), &data)?;
    std::fs::write(t.join("g"), &data[..3000])?;
    let img = s.path("ext2.img");
    run_ok(Command::new("mke2fs").args(["-q", "-F", "-t", "ext2", "-b", "1024", "-d"]).arg(&t).arg(&img).arg("8M"))?;
    // /f's third block (bytes 2048..3072) points far outside the file system.
    run_ok(Command::new("debugfs").args(["-w", "-R", "sif /f block[2] 99999999"]).arg(&img))?;
    let log = s.path("mount.log");
    let logs = log.display().to_string();
    {
        let m = mount(&img, &s.path("mnt"), &["--log", &logs])?;
        let got = blocks(&m.dir.join("f"))?;
        ensure!(got.len() == 8, "{} blocks", got.len());
        for (i, b) in got.iter().enumerate() {
            match b {
                None => ensure!(i == 2, "EIO at block {i}, which is intact"),
                Some(b) => {
                    ensure!(i != 2, "block 2 (damaged) read without error");
                    ensure!(b[..] == data[i * 1024..(i + 1) * 1024], "block {i} differs")
                }
            }
        }
        // A sequential read stops at the damage: the bytes before it, then EIO.
        let e = std::fs::read(m.dir.join("f")).err().and_then(|e| e.raw_os_error());
        ensure!(e == Some(libc::EIO), "reading all of /f: {e:?}, want EIO");
        ensure!(std::fs::read(m.dir.join("g"))? == data[..3000], "the intact file differs");
        // Logged once, naming the damage.
        let _ = std::fs::read(m.dir.join("f"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        ensure!(text.lines().filter(|l| l.contains("EIO")).count() == 1, "log:\n{text}");
    }
    let m = mount(&img, &s.path("mnt2"), &["--allow-damaged"])?;
    let got = std::fs::read(m.dir.join("f"))?;
    ensure!(got.len() == data.len(), "length {}", got.len());
    ensure!(got[..2048] == data[..2048] && got[3072..] == data[3072..], "intact bytes differ with --allow-damaged");
    ensure!(got[2048..3072].iter().all(|&b| b == 0), "the damaged block is not zeros with --allow-damaged");
    Ok(Completion::Completed)
}

/// A directory of 20 000 entries (names resolved page by page as readdir reaches them): the
/// mount lists exactly the names, inode numbers and types `debugfs ls -p` reads from the image,
/// across many readdir pages, and a lookup of a name far down the directory works before any
/// listing.
fn huge_directory() -> TestResult {
    if let Some(r) = no_fuse() {
        return util::skip(r);
    }
    if !have("mke2fs") || !have("debugfs") {
        return util::skip("e2fsprogs (mke2fs, debugfs) not installed");
    }
    let s = Scratch::new("mount-huge-dir");
    let big = s.path("tree/big");
    std::fs::create_dir_all(&big)?;
    for i in 0..20_000u32 {
        let name = big.join(format!("entry-{i:05}"));
        if i % 1000 == 7 {
            std::fs::create_dir(&name)?;
        } else if i % 1000 == 9 {
            std::os::unix::fs::symlink("entry-00000", &name)?;
        } else {
            std::fs::write(&name, b"")?;
        }
    }
    let img = s.path("ext4.img");
    run_ok(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-N", "25000", "-d"])
            .arg(s.path("tree"))
            .arg(&img)
            .arg("128M"),
    )?;
    // The oracle: `ls -p` prints /inode/mode/uid/gid/name/size/ per entry.
    let out = run_ok(Command::new("debugfs").args(["-R", "ls -p /big"]).arg(&img))?;
    let mut want: Vec<(String, u64, u32)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split('/').collect();
            let (ino, mode, name) =
                (f.get(1)?.parse().ok()?, u32::from_str_radix(f.get(2)?, 8).ok()?, f.get(5)?.to_string());
            (name != "." && name != "..").then_some((name, ino, mode & 0o170000))
        })
        .collect();
    want.sort();
    ensure!(want.len() == 20_000, "debugfs lists {} entries", want.len());
    let m = mount(&img, &s.path("mnt"), &[])?;
    use std::os::unix::fs::{DirEntryExt, MetadataExt};
    // A lookup deep in the directory before anything lists it.
    let deep = std::fs::symlink_metadata(m.dir.join("big/entry-19998"))?;
    let w = &want[19_998];
    ensure!(deep.ino() == w.1, "entry-19998: inode {} before listing, debugfs {}", deep.ino(), w.1);
    let mut got = Vec::new();
    for e in std::fs::read_dir(m.dir.join("big"))? {
        let e = e?;
        let md = std::fs::symlink_metadata(e.path())?;
        ensure!(e.ino() == md.ino(), "{:?}: readdir inode {} but stat {}", e.file_name(), e.ino(), md.ino());
        got.push((e.file_name().to_string_lossy().into_owned(), e.ino(), md.mode() & 0o170000));
    }
    got.sort();
    ensure!(got.len() == want.len(), "the mount lists {} entries, debugfs {}", got.len(), want.len());
    if let Some((g, w)) = got.iter().zip(&want).find(|(g, w)| g != w) {
        return Err(format!("first difference: mount {g:?}, debugfs {w:?}").into());
    }
    Ok(Completion::Completed)
}

/// `{path: {name: value hex}}` of every entry under `dir` (Python os.listxattr/os.getxattr,
/// without following symlinks): the oracle on the source tree and on the mount alike.
fn xattrs_of(dir: &Path) -> Result<serde_json::Value, Failed> {
    let code = r#"
import os, sys, json
root = sys.argv[1]
out = {}
for d, dirs, files in os.walk(root):
    for n in dirs + files:
        p = os.path.join(d, n)
        names = [x for x in os.listxattr(p, follow_symlinks=False) if x.startswith(("user.", "system.posix_acl"))]
        if names:
            out[os.path.relpath(p, root)] = {x: os.getxattr(p, x, follow_symlinks=False).hex() for x in sorted(names)}
json.dump(out, sys.stdout, sort_keys=True)
"#;
    let out = run_ok(timed(120, util::python()).arg("-c").arg(code).arg(dir))?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("xattr JSON: {e}").into())
}

/// User attributes (small ones in the inode, a large one in the attribute block) and a POSIX
/// access ACL, set on the source tree with setxattr, copied into the image by `mke2fs -d`: the
/// mount shows the same names and values (the ACL converted back from ext4's disk form).
fn extended_attributes() -> TestResult {
    if let Some(r) = no_fuse() {
        return util::skip(r);
    }
    if let Some(r) = crate::ext_damage::missing() {
        return util::skip(r);
    }
    let s = Scratch::new("mount-xattr");
    let t = s.path("tree");
    std::fs::create_dir_all(t.join("d"))?;
    std::fs::write(t.join("a"), b"a")?;
    std::fs::write(t.join("d/b"), b"b")?;
    let set = |p: &Path, name: &str, value: &[u8]| -> Result<(), Failed> {
        let code = "import os,sys; os.setxattr(sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]))";
        let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
        run_ok(Command::new(util::python()).args(["-c", code]).arg(p).arg(name).arg(hex)).map(|_| ())
    };
    if set(&t.join("a"), "user.probe", b"x").is_err() {
        return util::skip(format!("{} does not take user.* extended attributes", t.display()));
    }
    set(&t.join("a"), "user.comment", b"old archive")?;
    set(&t.join("d"), "user.dir", b"on a directory")?;
    let big: Vec<u8> = (0..700u32).map(|i| (i % 251) as u8).collect();
    set(&t.join("d/b"), "user.big", &big)?;
    // USER_OBJ rw-, USER 1000 r--, GROUP_OBJ r--, MASK r--, OTHER r-- (the kernel's xattr form).
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in
        [(1u16, 6u16, u32::MAX), (2, 4, 1000), (4, 4, u32::MAX), (0x10, 4, u32::MAX), (0x20, 4, u32::MAX)]
    {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    let with_acl = set(&t.join("d/b"), "system.posix_acl_access", &acl).is_ok();
    let want = xattrs_of(&t)?;
    let img = s.path("x.img");
    run_ok(Command::new("mke2fs").args(["-q", "-F", "-t", "ext4", "-I", "256", "-d"]).arg(&t).arg(&img).arg("8M"))?;
    let m = mount(&img, &s.path("mnt"), &[])?;
    let got = xattrs_of(&m.dir)?;
    ensure!(got == want, "extended attributes differ:\n mount  {got}\n source {want}");
    ensure!(want["d/b"]["user.big"].as_str().is_some_and(|v| v.len() == 1400), "the big value was not set: {want}");
    ensure!(!with_acl || want["d/b"]["system.posix_acl_access"].is_string(), "the ACL is missing: {want}");
    Ok(Completion::Completed)
}

fn raw_payload() -> TestResult {
    if let Some(r) = no_fuse() {
        return util::skip(r);
    }
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("mount-raw");
    let case = CASES.iter().find(|c| c.image == "cryptoloop-ext4.img").ok_or("no cryptoloop fixture")?;
    let pass = f.path("pass").display().to_string();
    let img = f.path(case.image);
    let v = run(lk(300).args(["verify", "--json", "--no-prompt", "--passphrase-file", &pass]).arg(&img))?;
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).map_err(|e| format!("verify JSON: {e}"))?;
    let want = v["payload"]["sha256"].as_str().ok_or_else(|| format!("no payload.sha256 in {v}"))?.to_string();
    let m = mount(&img, &s.path("mnt"), &["--raw", "--passphrase-file", &pass])?;
    let names: Vec<String> = std::fs::read_dir(&m.dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(names == ["payload.img"], "--raw shows {names:?}");
    let p = m.dir.join("payload.img");
    ensure!(sha256_file(&p)? == want, "payload.img's SHA-256 is not verify's payload digest");
    let out = run(timed(300, "e2fsck").arg("-fn").arg(&p))?;
    ensure!(code(&out) == 0, "e2fsck -fn payload.img: exit {}\n{}", code(&out), String::from_utf8_lossy(&out.stdout));
    Ok(Completion::Completed)
}

fn errno_of(p: &Path) -> Option<i32> {
    std::fs::symlink_metadata(p).err().and_then(|e| e.raw_os_error())
}

fn killed_server_and_signals() -> TestResult {
    if let Some(r) = no_fuse() {
        return util::skip(r);
    }
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("mount-kill");
    let img = f.path("ext4.img");
    let dir = s.path("mnt");
    // A non-empty mount point is refused.
    std::fs::create_dir_all(s.path("full"))?;
    std::fs::write(s.path("full/x"), b"x")?;
    let out = run(lk(60).arg("mount").arg(&img).arg(s.path("full")))?;
    ensure!(code(&out) == 2 && !is_mounted(&s.path("full")), "non-empty DIR: exit {}", code(&out));
    // kill -9 the server: the mount point fails with ENOTCONN, nothing hangs, umount clears it.
    let m = mount(&img, &dir, &[])?;
    let pid = server_pid(&dir)?;
    run_ok(Command::new("kill").args(["-9", &pid.to_string()]))?;
    wait_gone(pid)?;
    // A request in flight while the server's last thread exits ends with ECONNABORTED; once the
    // connection is gone, every access fails with ENOTCONN.
    let mut e = None;
    for _ in 0..100 {
        e = errno_of(&m.dir.join("big.bin"));
        if e == Some(libc::ENOTCONN) {
            break;
        }
        ensure!(e == Some(libc::ECONNABORTED), "after kill -9: {e:?}, want ENOTCONN");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ensure!(e == Some(libc::ENOTCONN), "after kill -9: {e:?}, want ENOTCONN");
    let out = run(lk(60).arg("mount").arg(&img).arg(&dir))?;
    ensure!(code(&out) == 2, "mounting over a dead mount: exit {}", code(&out));
    run_ok(lk(60).arg("umount").arg(&dir))?;
    ensure!(!is_mounted(&dir), "loopkit umount left the dead mount");
    drop(m);
    // SIGTERM and SIGINT unmount and end the server.
    for sig in ["-TERM", "-INT"] {
        let m = mount(&img, &dir, &[])?;
        let pid = server_pid(&dir)?;
        run_ok(Command::new("kill").args([sig, &pid.to_string()]))?;
        wait_gone(pid)?;
        ensure!(!is_mounted(&m.dir), "still mounted after kill {sig}");
    }
    // fusermount3 -u ends it too (when installed).
    if have("fusermount3") {
        let m = mount(&img, &dir, &[])?;
        let pid = server_pid(&dir)?;
        run_ok(timed(30, "fusermount3").arg("-u").arg(&m.dir))?;
        wait_gone(pid)?;
    }
    // --foreground serves in the command's own process; SIGTERM ends it with exit 0.
    let mut child = Command::new("timeout")
        .args(["-k", "5", "120"])
        .arg(loopkit_bin())
        .arg("mount")
        .arg(&img)
        .arg(&dir)
        .arg("--foreground")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let fg = Mounted { dir: dir.clone() };
    for _ in 0..200 {
        if is_mounted(&dir) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ensure!(is_mounted(&dir), "--foreground: not mounted within 10 s");
    ensure!(dir.join("big.bin").metadata().is_ok(), "--foreground: big.bin missing");
    let pid = server_pid(&dir)?;
    run_ok(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
    let status = child.wait()?;
    ensure!(status.code() == Some(0) && !is_mounted(&dir), "--foreground after SIGTERM: {status}");
    drop(fg);
    // -o allow_other: other users may enter, the kernel checks the image's permissions.
    let m = mount(&img, &dir, &["-o", "allow_other"])?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let line = info.lines().find(|l| l.contains(&*m.dir.to_string_lossy())).unwrap_or("").to_string();
    ensure!(line.contains("allow_other") && line.contains("default_permissions"), "-o allow_other: {line}");
    drop(m);
    let out = run(lk(60).arg("mount").arg(&img).arg(&dir).args(["-o", "rw"]))?;
    ensure!(code(&out) == 2 && !is_mounted(&dir), "-o rw: exit {}", code(&out));
    // Not a loopkit mount: refused.
    let out = run(lk(30).arg("umount").arg(s.path("full")))?;
    ensure!(code(&out) == 2, "umount of a plain directory: exit {}", code(&out));
    Ok(Completion::Completed)
}

/// The pid of the server of the mount on `dir` (the process holding /dev/fuse whose command
/// line names the mount point).
fn server_pid(dir: &Path) -> Result<i32, Failed> {
    let want = std::fs::canonicalize(dir)?;
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args.first().is_some_and(|a| Path::new(std::str::from_utf8(a).unwrap_or("")) == loopkit_bin())
            && args.get(1) == Some(&&b"mount"[..])
            && args
                .iter()
                .any(|a| std::fs::canonicalize(std::str::from_utf8(a).unwrap_or("")).ok() == Some(want.clone()))
        {
            return Ok(pid);
        }
    }
    util::fail(format!("no server process for {}", dir.display()))
}

fn wait_gone(pid: i32) -> Result<(), Failed> {
    for _ in 0..200 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or a zombie waiting for a parent that never reaps (init reaps daemons).
        if stat.is_empty() || stat.split(' ').nth(2) == Some("Z") {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    util::fail(format!("server {pid} did not end within 10 s"))
}

fn as_a_normal_user() -> TestResult {
    if let Some(r) = no_fuse() {
        return util::skip(r);
    }
    if !rustix::process::geteuid().is_root() {
        return util::skip("the test switches to user nobody, which needs root");
    }
    if !have("fusermount3") || !have("setpriv") {
        return util::skip("fusermount3 (fuse3) or setpriv (util-linux) missing");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata("/dev/fuse")?.permissions().mode();
    if mode & 0o006 != 0o006 {
        return util::skip(format!(
            "/dev/fuse is mode {:o} here (Debian's udev rule makes it 0666), so no normal user can mount FUSE",
            mode & 0o777
        ));
    }
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("mount-user");
    std::fs::set_permissions(&s.0, std::fs::Permissions::from_mode(0o755))?;
    let img = s.path("ext4.img");
    std::fs::copy(f.path("ext4.img"), &img)?;
    std::fs::set_permissions(&img, std::fs::Permissions::from_mode(0o644))?;
    let dir = s.path("mnt");
    std::fs::create_dir(&dir)?;
    run_ok(Command::new("chown").arg("nobody").arg(&dir))?;
    let as_nobody = |args: &[&std::ffi::OsStr]| {
        let mut c = timed(120, "setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]).args(args);
        c
    };
    let bin = loopkit_bin();
    let out = run(&mut as_nobody(&[bin.as_os_str(), "mount".as_ref(), img.as_os_str(), dir.as_os_str()]))?;
    let m = Mounted { dir: dir.clone() };
    ensure!(
        code(&out) == 0 && is_mounted(&dir),
        "mount as nobody: exit {}: {}",
        code(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    // The system interpreter: a per-user one (pyenv under /root) is out of nobody's reach.
    let py = PathBuf::from("/usr/bin/python3");
    let man = repo_root().join("testdata/gen/manifest.py");
    let out = run_ok(&mut as_nobody(&[py.as_os_str(), man.as_os_str(), dir.as_os_str()]))?;
    let got = without_lost_found(fx::entries(&out.stdout)?);
    let want = fx::entries(&std::fs::read(f.path("want.json"))?)?;
    let d = fx::diff(&got, &want);
    ensure!(d.is_empty(), "as nobody: the mounted tree differs:\n{d}");
    run_ok(&mut as_nobody(&[bin.as_os_str(), "umount".as_ref(), dir.as_os_str()]))?;
    ensure!(!is_mounted(&dir), "loopkit umount as nobody left the mount");
    drop(m);
    Ok(Completion::Completed)
}

/// The mount on `dir` in /proc/self/mountinfo: (MAJOR:MINOR, mount options, fstype, source).
fn mountinfo_of(dir: &Path) -> Result<(String, String, String, String), Failed> {
    let want = std::fs::canonicalize(dir.parent().unwrap_or(Path::new("/")))?.join(dir.file_name().unwrap_or_default());
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    for l in info.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-").unwrap_or(f.len());
        if f.get(4).is_some_and(|mp| Path::new(mp) == want) && sep + 2 < f.len() {
            return Ok((f[2].to_string(), f[5].to_string(), f[sep + 1].to_string(), f[sep + 2].to_string()));
        }
    }
    util::fail(format!("{} is not in /proc/self/mountinfo", dir.display()))
}

/// Whether process `pid` holds /dev/fuse open.
fn holds_dev_fuse(pid: i64) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == Path::new("/dev/fuse"))))
        .unwrap_or(false)
}

fn json_documents() -> TestResult {
    use std::io::BufRead;
    use std::os::unix::fs::MetadataExt;
    if let Some(r) = no_fuse() {
        return util::skip(r);
    }
    let f = crate::fixtures_or_skip!();
    let s = Scratch::new("mount-json");
    let pass = f.path("pass").display().to_string();
    let img = f.path("cryptoloop-ext4.img");
    let dir = s.path("mnt");
    std::fs::create_dir_all(&dir)?;
    // Daemon: one document on stdout once the mount is up.
    let out = run(lk(120).arg("mount").arg(&img).arg(&dir).args(["--json", "--passphrase-file", &pass]))?;
    let m = Mounted { dir: dir.clone() };
    ensure!(code(&out) == 0, "mount --json: exit {}: {}", code(&out), String::from_utf8_lossy(&out.stderr));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("mount --json: {e}"))?;
    ensure!(d["loopkit_json"] == 1 && d["command"] == "mount" && d["ok"] == true, "header: {d}");
    ensure!(d["event"] == "mounted" && d["content"] == "tree" && d["payload"].is_null(), "event/content: {d}");
    let abs_dir = std::fs::canonicalize(&dir)?;
    ensure!(d["mount_point"].as_str().map(PathBuf::from) == Some(abs_dir.clone()), "mount_point: {d}");
    let abs_img = std::fs::canonicalize(&img)?;
    ensure!(d["image"].as_str().map(|p| std::fs::canonicalize(p).ok()) == Some(Some(abs_img)), "image: {d}");
    let (dev, opts, fstype, source) = mountinfo_of(&dir)?;
    ensure!(
        d["device"] == dev.as_str() && d["fstype"] == fstype.as_str(),
        "device/fstype: {d} vs mountinfo {dev} {fstype}"
    );
    ensure!(source.starts_with("loopkit:"), "mountinfo source {source}");
    let st = std::fs::metadata(&dir)?;
    let stat_dev = format!("{}:{}", libc::major(st.dev()), libc::minor(st.dev()));
    ensure!(dev == stat_dev, "mountinfo {dev} vs stat of the mount point {stat_dev}");
    ensure!(d["read_only"] == true && opts.split(',').any(|o| o == "ro"), "read_only: {d}, mount options {opts}");
    let pid = i64::from(server_pid(&dir)?);
    ensure!(d["pid"] == pid && d["foreground"] == false, "pid: {d}, the server is {pid}");
    ensure!(holds_dev_fuse(pid), "pid {pid} does not hold /dev/fuse");
    ensure!(d["scheme"] == "cryptoloop" && d["kind"] == "legacy-encrypted", "scheme/kind: {d}");
    ensure!(d["filesystem"]["type"] == "ext4", "filesystem: {d}");
    // umount --json: one document, and the mount is gone.
    let out = run_ok(lk(60).arg("umount").arg(&dir).arg("--json"))?;
    let u: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("umount --json: {e}"))?;
    ensure!(u["command"] == "umount" && u["ok"] == true && !is_mounted(&dir), "umount --json: {u}");
    wait_gone(pid as i32)?;
    drop(m);
    // Foreground, raw: the ready line, then (SIGTERM) the final one; exit 0.
    let mut child = Command::new("timeout")
        .args(["-k", "5", "120"])
        .arg(loopkit_bin())
        .arg("mount")
        .arg(&img)
        .arg(&dir)
        .args(["--raw", "--foreground", "--json", "--passphrase-file", &pass])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let fg = Mounted { dir: dir.clone() };
    let mut lines = std::io::BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let first = lines.next().ok_or("--foreground --json: no ready line")??;
    let r: serde_json::Value = serde_json::from_str(&first).map_err(|e| format!("ready line {first}: {e}"))?;
    ensure!(is_mounted(&dir), "the ready line came before the mount: {r}");
    let pid = i64::from(server_pid(&dir)?);
    ensure!(r["event"] == "mounted" && r["foreground"] == true && r["pid"] == pid, "ready line: {r}, server {pid}");
    let payload = abs_dir.join("payload.img");
    ensure!(r["content"] == "raw" && r["payload"].as_str().map(PathBuf::from) == Some(payload.clone()), "raw: {r}");
    let (dev, ..) = mountinfo_of(&dir)?;
    ensure!(r["device"] == dev.as_str(), "device {r} vs mountinfo {dev}");
    let out = run_ok(timed(60, "blkid").args(["-p", "-o", "value", "-s", "UUID"]).arg(&payload))?;
    let uuid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(!uuid.is_empty() && r["filesystem"]["uuid"] == uuid.as_str(), "filesystem {r} vs blkid UUID {uuid}");
    run_ok(Command::new("kill").args(["-TERM", &pid.to_string()]))?;
    let last = lines.next().ok_or("--foreground --json: no final line")??;
    let e: serde_json::Value = serde_json::from_str(&last).map_err(|e| format!("final line {last}: {e}"))?;
    ensure!(e["event"] == "unmounted" && e["ended_by"] == "signal" && e["pid"] == pid && e["ok"] == true, "final: {e}");
    ensure!(lines.next().is_none(), "more than two documents");
    let status = child.wait()?;
    ensure!(status.code() == Some(0) && !is_mounted(&dir), "--foreground --json after SIGTERM: {status}");
    drop(fg);
    // An error is a document too.
    std::fs::write(dir.join("x"), b"x")?;
    let out = run(lk(60).arg("mount").arg(&img).arg(&dir).args(["--json", "--passphrase-file", &pass]))?;
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("error document: {e}"))?;
    ensure!(code(&out) == 2 && e["ok"] == false && e["error"]["kind"] == "unsafe", "non-empty DIR: {e}");
    Ok(Completion::Completed)
}
