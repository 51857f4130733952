//! `extract`: restore files, directories, symlinks, hard links, modes and mtimes from a
//! file system inside an image into a destination directory — and never anywhere else.
//!
//! Safety rules, in order:
//! - names come from [`crate::fs::tree::walk`], which refuses empty, `.`, `..`, NUL and
//!   `/`-containing names and duplicates, so every output path is `DEST/` + plain components;
//! - a file is only ever created inside a directory this run created (or, with `force`, found
//!   to be a real directory, not a symlink), with `O_CREAT|O_EXCL|O_NOFOLLOW`, so no symlink —
//!   from the image or already in DEST — is ever followed;
//! - a non-empty DEST is refused unless `force`; with `force`, existing files and symlinks in
//!   the way are replaced, existing directories are reused, never followed if they are links.
//!
//! Not restored: owners (needs root; planned as an option), device nodes, fifos and sockets
//! (listed as skipped), symlink mtimes (setting them needs `lutimes`), extended attributes, and
//! the setuid/setgid bits (without the owners they would hand the extracting user's — often
//! root's — privileges to a program from the image). A file whose data cannot be read from the
//! image (a damaged sector, a corrupt block map) is removed and reported, and extraction goes on.
//! Files are written in place (DEST is new or empty) and not fsynced one by one; holes in the
//! image stay holes in the output. A failure leaves the files written so far.

use crate::fs::tree::{self, FileSystem, FileType, Found, NodeId};
use crate::progress::{Interrupt, Progress};
use crate::verify::Problem;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// setuid and setgid: never restored (see the module docs).
const SET_ID_BITS: u32 = 0o6000;

/// What to extract and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only this path inside the file system (`/`-separated; a directory's contents or a single
    /// entry). Symlinks on the way are not followed.
    pub subpath: Option<Vec<u8>>,
    /// Allow a non-empty destination (replacing files in the way).
    pub force: bool,
}

/// What `extract` wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Content bytes written (holes included).
    pub bytes: u64,
    /// Entries not restored (device nodes, fifos, sockets, unreadable entries).
    pub skipped: u64,
}

/// What `extract` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// What was written.
    pub counts: Counts,
    /// Problems met (damage in the image, skipped entries).
    pub problems: Vec<Problem>,
}

fn io(what: &Path, e: std::io::Error) -> crate::Error {
    crate::Error::io(format!("writing {}", what.display()), e)
}

fn time_of(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Find `subpath` below the root without following symlinks; returns (node, its name, stat).
fn resolve(fs: &dyn FileSystem, subpath: &[u8]) -> crate::Result<(NodeId, Vec<u8>, tree::Stat)> {
    let mut node = fs.root();
    let mut stat = fs.stat(node)?;
    let mut name = Vec::new();
    let shown = String::from_utf8_lossy(subpath).into_owned();
    for comp in subpath.split(|&c| c == b'/').filter(|c| !c.is_empty() && *c != b".") {
        if comp == b".." {
            return Err(crate::Error::invalid(format!("--path {shown}: '..' is not allowed")));
        }
        if stat.file_type != FileType::Dir {
            return Err(crate::Error::invalid(format!(
                "--path {shown}: {} is a {}, not a directory (symlinks are not followed)",
                String::from_utf8_lossy(&name),
                stat.file_type.name()
            )));
        }
        let listing = fs.read_dir(node)?;
        let entry = listing.entries.into_iter().find(|e| e.name == comp).ok_or_else(|| {
            crate::Error::invalid(format!("--path {shown}: {} not found", String::from_utf8_lossy(comp)))
        })?;
        node = entry.id;
        stat = fs.stat(node)?;
        name = comp.to_vec();
    }
    Ok((node, name, stat))
}

/// Prepare DEST: create it, or check it is an empty (or, with `force`, any) directory.
fn prepare(dest: &Path, force: bool) -> crate::Result<()> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir(dest).map_err(|e| io(dest, e))?;
        }
        Err(e) => return Err(io(dest, e)),
        Ok(_) => {
            let md = std::fs::metadata(dest).map_err(|e| io(dest, e))?;
            if !md.is_dir() {
                return Err(crate::Error::invalid(format!("{} exists and is not a directory", dest.display())));
            }
            let mut rd = std::fs::read_dir(dest).map_err(|e| io(dest, e))?;
            if rd.next().is_some() && !force {
                return Err(crate::Error::new(
                    crate::ErrorKind::Unsafe,
                    format!("{} is not empty; refusing to extract into it (use --force to allow)", dest.display()),
                ));
            }
        }
    }
    Ok(())
}

/// Clear the way for a new entry at `p` (with `force`): remove a file or symlink there. A real
/// directory is reported as `true` (reuse it when a directory is wanted).
fn clear(p: &Path, force: bool) -> crate::Result<bool> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(p, e)),
        Ok(_) if !force => Err(crate::Error::new(crate::ErrorKind::Unsafe, format!("{} already exists", p.display()))),
        Ok(md) if md.is_dir() => Ok(true),
        Ok(_) => {
            std::fs::remove_file(p).map_err(|e| io(p, e))?;
            Ok(false)
        }
    }
}

/// Extract `fs` (or `opts.subpath` of it) into `dest`.
///
/// # Errors
/// `Unsafe` for a non-empty DEST without `force`; `InvalidInput` for a bad `subpath`; `Io` when
/// writing fails (what was written so far stays); `Interrupted`.
pub fn extract(
    fs: &dyn FileSystem,
    dest: &Path,
    opts: &Options,
    progress: &mut dyn Progress,
    interrupt: &Interrupt,
) -> crate::Result<Outcome> {
    let (start, start_name, start_stat) = match &opts.subpath {
        Some(p) => resolve(fs, p)?,
        None => (fs.root(), Vec::new(), fs.stat(fs.root())?),
    };
    prepare(dest, opts.force)?;
    let mut out = Outcome::default();
    let mut found: Vec<Found> = Vec::new();
    if start_stat.file_type == FileType::Dir {
        let issues = if opts.subpath.is_some() {
            tree::walk_from(fs, start, interrupt, |f| found.push(f.clone()))?
        } else {
            tree::walk(fs, interrupt, |f| found.push(f.clone()))?
        };
        out.problems.extend(issues.iter().map(crate::manifest::problem_of));
        if opts.subpath.is_none() {
            let root = fs.root();
            found.retain(|f| !(f.path == b"lost+found" && fs.is_bookkeeping(root, &f.path, f.id)));
        }
    } else {
        found.push(Found { path: start_name, id: start, stat: start_stat });
    }

    let total: u64 = found.iter().filter(|f| f.stat.file_type == FileType::File).map(|f| f.stat.size_bytes).sum();
    progress.start("extracting", Some(total));
    // Directories this run created or verified as real directories (writes go only into these).
    let mut safe_dirs: HashSet<PathBuf> = HashSet::from([dest.to_path_buf()]);
    let mut dir_meta: Vec<(PathBuf, tree::Stat)> = Vec::new();
    let mut links: HashMap<u64, PathBuf> = HashMap::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in &found {
        interrupt.check()?;
        let target = dest.join(OsStr::from_bytes(&f.path));
        let shown = format!("/{}", String::from_utf8_lossy(&f.path));
        let parent_ok = target.parent().is_some_and(|p| safe_dirs.contains(p));
        if !parent_ok || !target.starts_with(dest) {
            out.counts.skipped += 1;
            out.problems
                .push(Problem::error("extract.skipped", format!("{shown}: its directory was not created; skipped")));
            continue;
        }
        let s = &f.stat;
        match s.file_type {
            FileType::Dir => {
                if !clear(&target, opts.force)? {
                    std::fs::create_dir(&target).map_err(|e| io(&target, e))?;
                }
                safe_dirs.insert(target.clone());
                dir_meta.push((target, s.clone()));
                out.counts.dirs += 1;
            }
            FileType::File => {
                let first = if s.nlink > 1 { s.link_key.and_then(|k| links.get(&k)) } else { None };
                if let Some(first) = first {
                    clear(&target, opts.force)?;
                    std::fs::hard_link(first, &target).map_err(|e| io(&target, e))?;
                    out.counts.hardlinks += 1;
                    continue;
                }
                clear(&target, opts.force)?;
                let file = match write_file(fs, f.id, &target, &mut buf, progress, interrupt)? {
                    Ok((file, n)) => {
                        out.counts.bytes += n;
                        out.counts.files += 1;
                        file
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&target);
                        out.problems.push(Problem::error("extract.unreadable", format!("{shown}: {e}")));
                        out.counts.skipped += 1;
                        continue;
                    }
                };
                if let Some(m) = s.mode {
                    file.set_permissions(std::fs::Permissions::from_mode(m & !SET_ID_BITS))
                        .map_err(|e| io(&target, e))?;
                }
                if let Some(t) = s.mtime {
                    file.set_times(std::fs::FileTimes::new().set_modified(time_of(t))).map_err(|e| io(&target, e))?;
                }
                if let Some(k) = s.link_key.filter(|_| s.nlink > 1) {
                    links.insert(k, target.clone());
                }
            }
            FileType::Symlink => match fs.readlink(f.id) {
                Ok(t) => {
                    clear(&target, opts.force)?;
                    std::os::unix::fs::symlink(OsStr::from_bytes(&t), &target).map_err(|e| io(&target, e))?;
                    out.counts.symlinks += 1;
                }
                Err(e) => {
                    out.problems.push(Problem::error("extract.unreadable", format!("{shown}: {e}")));
                    out.counts.skipped += 1;
                }
            },
            other => {
                out.problems.push(Problem::warning(
                    "extract.skipped",
                    format!(
                        "{shown}: a {} is not created (extract restores files, directories and links); skipped",
                        other.name()
                    ),
                ));
                out.counts.skipped += 1;
            }
        }
    }
    // Directory modes and times last (children change a directory's mtime; a read-only
    // directory would block writing its children), deepest first.
    for (p, s) in dir_meta.iter().rev() {
        if let Some(m) = s.mode {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m & !SET_ID_BITS)).map_err(|e| io(p, e))?;
        }
        if let Some(t) = s.mtime {
            let d = std::fs::File::open(p).map_err(|e| io(p, e))?;
            d.set_times(std::fs::FileTimes::new().set_modified(time_of(t))).map_err(|e| io(p, e))?;
        }
    }
    progress.finish();
    Ok(out)
}

/// Write one file's contents, leaving holes where the image has them. The outer error is a
/// failure to write DEST (which stops the extraction); the inner one a failure to read the file
/// from the image (which skips it). Returns the open file and its size.
fn write_file(
    fs: &dyn FileSystem,
    id: NodeId,
    target: &Path,
    buf: &mut [u8],
    progress: &mut dyn Progress,
    interrupt: &Interrupt,
) -> crate::Result<crate::Result<(std::fs::File, u64)>> {
    let reader = match fs.open(id) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let size = reader.size_bytes();
    #[allow(clippy::single_range_in_vec_init)]
    let ranges = reader.data_ranges().unwrap_or_else(|| vec![0..size]);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(target)
        .map_err(|e| io(target, e))?;
    let mut advanced = 0u64;
    for r in ranges {
        let mut off = r.start;
        while off < r.end {
            interrupt.check()?;
            let want = ((r.end - off) as usize).min(buf.len());
            let n = match reader.read_at(&mut buf[..want], off) {
                Ok(0) => {
                    return Ok(Err(crate::Error::corrupt(format!("the data ends after {off} of {size} bytes"))));
                }
                Ok(n) => n,
                Err(e) => return Ok(Err(e)),
            };
            // All-zero chunks stay holes.
            if buf[..n].iter().any(|&b| b != 0) {
                file.write_all_at(&buf[..n], off).map_err(|e| io(target, e))?;
            }
            off += n as u64;
            advanced += n as u64;
            progress.advance(n as u64);
        }
    }
    progress.advance(size.saturating_sub(advanced));
    file.set_len(size).map_err(|e| io(target, e))?;
    Ok(Ok((file, size)))
}
