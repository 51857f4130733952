//! Which physical device a file lives on, so a batch never runs two readers on one disk (an
//! optical drive or a rotating disk thrashes): `st_dev` → `/sys/dev/block/MAJ:MIN` → the whole
//! disk (a partition's parent), through device-mapper/md/loop layers to the disks under them
//! (`slaves/`). Files on no block device (tmpfs, NFS) each form a group of their own device
//! number.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A name for the set of physical disks holding `path` (e.g. `vda`, `sda+sdb`, `anon:0:45`).
pub fn key_for(path: &Path) -> String {
    let Ok(meta) = std::fs::metadata(path) else { return format!("unknown:{}", path.display()) };
    let (major, minor) = if meta.file_type().is_file() || meta.is_dir() {
        crate::sys::dev_major_minor(meta.dev())
    } else {
        // A block device given directly: the device itself.
        crate::sys::dev_major_minor(meta.rdev())
    };
    let Ok(sys) = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")) else {
        return format!("anon:{major}:{minor}");
    };
    let mut disks = Vec::new();
    whole_disks(&sys, 0, &mut disks);
    disks.sort();
    disks.dedup();
    if disks.is_empty() { format!("anon:{major}:{minor}") } else { disks.join("+") }
}

/// The whole disks under the sysfs block device `dir` (depth-limited against cycles).
fn whole_disks(dir: &Path, depth: u32, out: &mut Vec<String>) {
    let disk: PathBuf = if dir.join("partition").exists() {
        dir.parent().map_or_else(|| dir.to_path_buf(), Path::to_path_buf)
    } else {
        dir.to_path_buf()
    };
    let slaves: Vec<PathBuf> = std::fs::read_dir(disk.join("slaves"))
        .map(|rd| rd.filter_map(|e| e.ok()).filter_map(|e| std::fs::canonicalize(e.path()).ok()).collect())
        .unwrap_or_default();
    if slaves.is_empty() || depth > 8 {
        if let Some(n) = disk.file_name() {
            out.push(n.to_string_lossy().into_owned());
        }
        return;
    }
    for s in slaves {
        whole_disks(&s, depth + 1, out);
    }
}

/// Whether the disk behind `key` rotates (sysfs `queue/rotational`); false when unknown.
pub fn rotational(key: &str) -> bool {
    key.split('+')
        .any(|d| std::fs::read_to_string(format!("/sys/block/{d}/queue/rotational")).is_ok_and(|s| s.trim() == "1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_directory_same_device() {
        let here = std::env::current_dir().unwrap();
        assert_eq!(key_for(&here), key_for(&here.join("Cargo.toml")));
        assert!(!key_for(&here).is_empty());
    }
}
