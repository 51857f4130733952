//! Writing result files safely, shared by every command that writes: refuse to replace an
//! existing file (without `force`) or a source itself, write under a temporary name beside the
//! target, fsync, read back where cheap, rename, fsync the directory. The temporary file is
//! removed on every error path; a crash can leave only a hidden `.NAME.loopkit-PID.partial`.

pub mod direct;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A temporary output file, removed on drop unless [`TempFile::persist`] renamed it.
#[derive(Debug)]
pub struct TempFile {
    /// The open file (read-write).
    pub file: File,
    /// Its temporary path.
    pub path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Create `.NAME.loopkit-PID.partial` beside `target`, exclusively, mode 0644.
    ///
    /// # Errors
    /// `Io`, with a hint for read-only, full or forbidden destinations.
    pub fn beside(target: &Path) -> crate::Result<TempFile> {
        Self::beside_with_mode(target, 0o644)
    }

    /// [`TempFile::beside`] with the given permission bits (0600 for key material).
    ///
    /// # Errors
    /// `Io`, with a hint for read-only, full or forbidden destinations.
    pub fn beside_with_mode(target: &Path, mode: u32) -> crate::Result<TempFile> {
        let dir = parent_dir(target);
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let path = dir.join(format!(".{name}.loopkit-{}.partial", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| create_error(&path, e))?;
        Ok(TempFile { file, path, armed: true })
    }

    /// fsync the file, drop its cached pages (later reads come from the device), rename it to
    /// `target` (refusing if `target` appeared meanwhile and `force` is off), fsync the directory.
    ///
    /// # Errors
    /// `Unsafe` if `target` appeared; `Io`. The temporary file is removed on error.
    pub fn persist(mut self, target: &Path, force: bool) -> crate::Result<()> {
        self.file.sync_all().map_err(|e| crate::Error::io(format!("syncing {}", self.path.display()), e))?;
        // Synced: drop its clean cached pages, so whatever reads it next (the checks of `repair`,
        // `strip-ecc`, `migrate`) reads what the device holds, not what memory holds.
        let _ = crate::output::direct::drop_cached(&self.file);
        let renamed = if force { std::fs::rename(&self.path, target) } else { no_replace_rename(&self.path, target) };
        renamed.map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                unsafe_error(format!("{} appeared while writing; give --force to replace it", target.display()))
            } else {
                crate::Error::io(format!("renaming {} to {}", self.path.display(), target.display()), e)
            }
        })?;
        self.armed = false;
        if let Ok(d) = File::open(parent_dir(target)) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Rename `from` to `to` unless `to` exists, atomically (`renameat2(RENAME_NOREPLACE)`; there is
/// no window between a check and the rename). A file system without it (`EINVAL`) gets the
/// check-then-rename fallback.
pub fn no_replace_rename(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(std::io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(from, to)
        }
        r => r.map_err(Into::into),
    }
}

/// The directory holding `p` (`.` for a bare file name).
pub fn parent_dir(p: &Path) -> &Path {
    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn unsafe_error(msg: String) -> crate::Error {
    crate::Error::new(crate::ErrorKind::Unsafe, msg)
}

/// Absolute, symlink-resolved form of `p` (whose last component may not exist yet).
fn resolve(p: &Path) -> PathBuf {
    if let Ok(c) = std::fs::canonicalize(p) {
        return c;
    }
    match (std::fs::canonicalize(parent_dir(p)), p.file_name()) {
        (Ok(d), Some(n)) => d.join(n),
        _ => p.to_path_buf(),
    }
}

/// Whether `a` and `b` name the same file: the same resolved path, or the same inode (hard links).
pub fn same_file(a: &Path, b: &Path) -> bool {
    if resolve(a) == resolve(b) {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Refuse outputs that would destroy data: one of the `sources`, a non-file, or an existing
/// file without `force`.
///
/// # Errors
/// `Unsafe` naming the clash.
pub fn check_output(out: &Path, sources: &[&Path], force: bool) -> crate::Result<()> {
    for src in sources {
        if same_file(out, src) {
            return Err(unsafe_error(format!(
                "{} is the source {} itself; refusing to write over it",
                out.display(),
                src.display()
            )));
        }
    }
    let Ok(meta) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    if !meta.is_file() {
        return Err(unsafe_error(format!(
            "{} exists and is not a regular file; refusing to replace it",
            out.display()
        )));
    }
    if !force {
        return Err(unsafe_error(format!("{} already exists; give --force to replace it", out.display())));
    }
    Ok(())
}

/// fsync the directory holding `p`, so a rename or creation in it is durable.
///
/// # Errors
/// `Io`.
pub fn sync_dir_of(p: &Path) -> crate::Result<()> {
    let dir = parent_dir(p);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| crate::Error::io(format!("syncing directory {}", dir.display()), e))
}

/// An error for a file that could not be created, with a hint for the usual causes.
pub fn create_error(p: &Path, e: std::io::Error) -> crate::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EROFS) => " (the destination is on a read-only file system; choose another output)",
        Some(libc::EACCES) | Some(libc::EPERM) => " (no permission to write there; choose another output)",
        Some(libc::ENOSPC) => " (the destination is full)",
        _ => "",
    };
    crate::Error::io(format!("cannot create {}{hint}", p.display()), e)
}

/// Write a small file (a key file, a header, a manifest, a text) safely: a temporary file beside
/// `path` with permission bits `mode`, fsync, read back and compare, rename over `path` (only
/// with `force` if it exists; never over one of `sources`), fsync the directory.
///
/// On failure nothing exists under `path` that was not there before.
///
/// # Errors
/// `Unsafe` if `path` is one of `sources`, or exists and `force` is false; `Io`.
pub fn write_file_atomically(
    path: &Path,
    bytes: &[u8],
    force: bool,
    mode: u32,
    sources: &[&Path],
) -> crate::Result<()> {
    check_output(path, sources, force)?;
    let mut tmp = TempFile::beside_with_mode(path, mode)?;
    let io = |e: std::io::Error, p: &Path| crate::Error::io(format!("writing {}", p.display()), e);
    tmp.file.write_all(bytes).map_err(|e| io(e, &tmp.path))?;
    tmp.file.sync_all().map_err(|e| io(e, &tmp.path))?;
    if std::fs::read(&tmp.path).map_err(|e| io(e, &tmp.path))? != bytes {
        return Err(crate::Error::new(crate::ErrorKind::Io, format!("{} reads back differently", tmp.path.display())));
    }
    tmp.persist(path, force)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_refuse_clobbering() {
        let dir = std::env::temp_dir().join(format!("loopkit-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        write_file_atomically(&p, b"one", false, 0o600, &[]).unwrap();
        assert_eq!(write_file_atomically(&p, b"two", false, 0o600, &[]).unwrap_err().kind(), crate::ErrorKind::Unsafe);
        write_file_atomically(&p, b"two", true, 0o600, &[]).unwrap();
        let src = dir.join("src");
        std::fs::write(&src, b"original").unwrap();
        assert!(write_file_atomically(&src, b"x", true, 0o600, &[&src]).is_err());
        assert_eq!(std::fs::read(&src).unwrap(), b"original");
        std::fs::remove_file(&src).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let link = dir.join("hard");
        std::fs::hard_link(&p, &link).unwrap();
        assert!(check_output(&link, &[&p], true).is_err());
        assert!(check_output(&dir.join("./f"), &[&p], true).is_err());
        assert!(check_output(&dir, &[], true).is_err());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2, "no temporary files left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A target that appears between the check and the rename is never replaced (the rename
    /// itself refuses: RENAME_NOREPLACE), and the temporary file goes away.
    #[test]
    fn persist_never_replaces_a_late_target() {
        let dir = std::env::temp_dir().join(format!("loopkit-output-late-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("late");
        let mut t = TempFile::beside(&p).unwrap();
        t.file.write_all(b"new").unwrap();
        std::fs::write(&p, b"someone else's").unwrap();
        assert_eq!(t.persist(&p, false).unwrap_err().kind(), crate::ErrorKind::Unsafe);
        assert_eq!(std::fs::read(&p).unwrap(), b"someone else's");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary files left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
