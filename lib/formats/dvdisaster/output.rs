//! Writing result files safely: refuse to replace an existing file (without `force`) or the
//! source itself, write under a temporary name beside the target, fsync, then rename. The
//! temporary file is removed on every error path.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A temporary output file, removed on drop unless [`TempFile::persist`] renamed it.
#[derive(Debug)]
pub(crate) struct TempFile {
    /// The open file (read-write).
    pub file: File,
    /// Its temporary path.
    pub path: PathBuf,
    armed: bool,
}

impl TempFile {
    /// Create `.NAME.loopkit-PID.partial` beside `target`, exclusively.
    pub fn beside(target: &Path) -> crate::Result<TempFile> {
        let dir = parent_dir(target);
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let path = dir.join(format!(".{name}.loopkit-{}.partial", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(|e| crate::Error::io(format!("cannot create {}", path.display()), e))?;
        Ok(TempFile { file, path, armed: true })
    }

    /// fsync the file, rename it to `target` (refusing if `target` appeared meanwhile and
    /// `force` is off), fsync the directory.
    pub fn persist(mut self, target: &Path, force: bool) -> crate::Result<()> {
        self.file.sync_all().map_err(|e| crate::Error::io(format!("syncing {}", self.path.display()), e))?;
        if !force && std::fs::symlink_metadata(target).is_ok() {
            return Err(unsafe_error(format!(
                "{} appeared while writing; give --force to replace it",
                target.display()
            )));
        }
        std::fs::rename(&self.path, target)
            .map_err(|e| crate::Error::io(format!("renaming {} to {}", self.path.display(), target.display()), e))?;
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

fn parent_dir(p: &Path) -> &Path {
    p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn unsafe_error(msg: String) -> crate::Error {
    crate::Error::new(crate::ErrorKind::Unsafe, msg)
}

/// Refuse outputs that would destroy data: one of the `sources`, a non-file, or an existing
/// file without `force`.
pub(crate) fn check_output(out: &Path, sources: &[&Path], force: bool) -> crate::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(out) else {
        return Ok(());
    };
    if let Ok(o) = std::fs::metadata(out) {
        for src in sources {
            if let Ok(s) = std::fs::metadata(src)
                && o.dev() == s.dev()
                && o.ino() == s.ino()
            {
                return Err(unsafe_error(format!(
                    "{} is the source {} itself; refusing to write over it",
                    out.display(),
                    src.display()
                )));
            }
        }
    }
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
