//! Real file systems for the extent and remap tests: a sparse image file formatted with
//! `mkfs.*`, attached with `losetup`, mounted in a scratch directory, and cleaned up on drop (also
//! when a test fails). Plus `filefrag -v -b1` parsed as the independent extent oracle.

#![allow(dead_code)]

use crate::util::{self, Scratch, run, run_ok};
use libtest_mimic::Failed;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a real mount cannot be made here (None: it can).
pub fn unavailable(mkfs: &str) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root (losetup, mount)".into());
    }
    for tool in ["losetup", "mount", "umount", "filefrag", mkfs] {
        if !util::have(tool) {
            return Some(format!("missing tool: {tool}"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no loop devices (/dev/loop-control)".into());
    }
    None
}

/// A mounted file system on a loop device.
pub struct Mounted {
    pub scratch: Scratch,
    pub image: PathBuf,
    pub loopdev: String,
    pub mnt: PathBuf,
    pub fs: String,
    mounted: bool,
}

impl Mounted {
    /// `size_mib` sparse image, `mkfs.FS MKFS_ARGS`, `losetup`, `mount -o MOUNT_OPTS`.
    pub fn new(fs: &str, size_mib: u64, mkfs_args: &[&str], mount_opts: &str) -> Result<Mounted, Failed> {
        let scratch = Scratch::new(&format!("mnt-{fs}"));
        let image = scratch.path("fs.img");
        let f = std::fs::File::create(&image).map_err(|e| format!("create image: {e}"))?;
        f.set_len(size_mib << 20).map_err(|e| format!("size image: {e}"))?;
        drop(f);
        run_ok(Command::new(format!("mkfs.{fs}")).args(mkfs_args).arg(&image))?;
        let out = run_ok(Command::new("losetup").args(["--find", "--show"]).arg(&image))?;
        let loopdev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mnt = scratch.path("mnt");
        std::fs::create_dir_all(&mnt).map_err(|e| format!("mkdir: {e}"))?;
        let mut m = Mounted { scratch, image, loopdev, mnt, fs: fs.to_string(), mounted: false };
        m.mount(mount_opts)?;
        Ok(m)
    }

    pub fn mount(&mut self, opts: &str) -> Result<(), Failed> {
        let mut c = Command::new("mount");
        if !opts.is_empty() {
            c.args(["-o", opts]);
        }
        run_ok(c.arg(&self.loopdev).arg(&self.mnt))?;
        self.mounted = true;
        Ok(())
    }

    pub fn umount(&mut self) -> Result<(), Failed> {
        if self.mounted {
            run_ok(Command::new("umount").arg(&self.mnt))?;
            self.mounted = false;
        }
        Ok(())
    }

    /// A path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let ok = run(Command::new("umount").arg(&self.mnt)).is_ok_and(|o| o.status.success());
            if !ok {
                let _ = run(Command::new("umount").arg("-l").arg(&self.mnt));
            }
        }
        let _ = run(Command::new("losetup").arg("-d").arg(&self.loopdev));
    }
}

/// A tmpfs or overlay mount (no loop device), unmounted on drop.
pub struct SimpleMount {
    pub mnt: PathBuf,
}

impl SimpleMount {
    pub fn new(mnt: &Path, args: &[&str]) -> Result<SimpleMount, Failed> {
        std::fs::create_dir_all(mnt).map_err(|e| format!("mkdir: {e}"))?;
        run_ok(Command::new("mount").args(args).arg(mnt))?;
        Ok(SimpleMount { mnt: mnt.to_path_buf() })
    }
}

impl Drop for SimpleMount {
    fn drop(&mut self) {
        let _ = run(Command::new("umount").arg(&self.mnt));
    }
}

/// One extent as `filefrag -v -b1` prints it (bytes; flags without filefrag's own `eof`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragExtent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: Vec<String>,
}

/// `filefrag -s -v -b1 FILE` (sync first), parsed.
pub fn filefrag(file: &Path) -> Result<Vec<FragExtent>, Failed> {
    let out = run_ok(Command::new("filefrag").args(["-s", "-v", "-b1"]).arg(file))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(':').collect();
        // "   0:        0.. 2097151:   14681088..  16778239: 2097152: [expected:] flags"
        if parts.len() < 5 || parts[0].trim().parse::<u64>().is_err() {
            continue;
        }
        let range = |s: &str| -> Result<(u64, u64), Failed> {
            let (a, b) = s.split_once("..").ok_or_else(|| format!("bad filefrag range {s:?}"))?;
            let a: u64 = a.trim().parse().map_err(|_| format!("bad number in {s:?}"))?;
            let b: u64 = b.trim().parse().map_err(|_| format!("bad number in {s:?}"))?;
            Ok((a, b))
        };
        let (l0, l1) = range(parts[1])?;
        let (p0, _) = range(parts[2])?;
        let length: u64 = parts[3].trim().parse().map_err(|_| format!("bad length in {line:?}"))?;
        if l1 + 1 - l0 != length {
            return Err(format!("inconsistent filefrag line {line:?}").into());
        }
        let last = parts[parts.len() - 1].trim();
        let flags: Vec<String> = if last.chars().any(|c| c.is_ascii_alphabetic()) {
            last.split(',').filter(|f| *f != "eof").map(str::to_string).collect()
        } else {
            Vec::new()
        };
        v.push(FragExtent { logical: l0, physical: p0, length, flags });
    }
    Ok(v)
}
