//! `extract`: restore files, directories, symlinks, hard links, modes and mtimes from a
//! file system inside an image into a destination directory — and never anywhere else.
//!
//! Safety rules, in order:
//! - names come from [`crate::fs::tree::walk`], which refuses empty, `.`, `..`, NUL and
//!   `/`-containing names and duplicates, so every output path is `DEST/` + plain components;
//! - a file is only ever created inside a directory this run created (or, with `force`, found
//!   to be a real directory, not a symlink), with `O_CREAT|O_EXCL|O_NOFOLLOW`, so no symlink —
//!   from the image or already in DEST — is ever followed;
//! - every operation works on directory descriptors, not paths: an entry's directory is opened
//!   from DEST's descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (per-component
//!   `O_NOFOLLOW` opens on kernels without `openat2`), and the entry is created, replaced,
//!   linked, chmod-ed and timestamped relative to that descriptor (`mkdirat`, `openat`,
//!   `unlinkat`, `linkat`, `symlinkat`, `fchmod`, `futimens`), so a directory swapped for a
//!   symlink while extracting cannot redirect a write outside DEST;
//! - DEST itself is held by descriptor from the start: created with `mkdirat` or opened with
//!   `O_DIRECTORY|O_NOFOLLOW` relative to its parent's descriptor, and checked (emptiness,
//!   owner) on that descriptor, so swapping DEST's path for a symlink cannot redirect anything.
//!   A DEST that is a symlink is refused, even with `force` (name the directory it points to);
//!   symlinks in DEST's parent path are followed (the user named them). As root, an existing
//!   DEST owned by another user is refused;
//! - a non-empty DEST is refused unless `force`; with `force`, existing files and symlinks in
//!   the way are replaced, existing directories are reused, never followed if they are links.
//!
//! Not restored: owners (needs root; planned as an option), device nodes, fifos and sockets
//! (listed as skipped), symlink mtimes (setting them needs `lutimes`), extended attributes, and
//! the setuid/setgid bits (without the owners they would hand the extracting user's — often
//! root's — privileges to a program from the image). A file whose data cannot be read from the
//! image (a damaged sector, a corrupt block map, blocks mapped outside the file system) is
//! removed and reported (`extract.unreadable`) — never left as silent zeros — unless
//! `allow_damaged`, which keeps what could be read and reports each such file
//! (`extract.damaged`). An entry that cannot exist on Linux (a symlink target with a NUL byte, an
//! empty target, a name the destination file system refuses) is skipped and reported
//! (`extract.skipped`); extraction goes on with the rest of the tree.
//! Files are written in place (DEST is new or empty) and not fsynced one by one; holes in the
//! image stay holes in the output. A failure leaves the files written so far.

use crate::finding::Finding as Problem;
use crate::fs::tree::{self, FileSystem, FileType, Found, NodeId};
use crate::output::parent_dir;
use crate::progress::Run;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
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
    /// Write files whose data could not all be read or mapped, with zeros where the data is
    /// missing, each reported as `extract.damaged` (without it such files are not written and are
    /// reported as `extract.unreadable`).
    pub allow_damaged: bool,
    /// `--salvage`: write damaged files too, with zeros in these lost byte ranges (per node, from
    /// [`crate::damage`]) and wherever a read fails; each such file is reported as
    /// `extract.salvaged` and listed in [`Outcome::salvaged`].
    pub salvage: Option<std::collections::BTreeMap<NodeId, Vec<std::ops::Range<u64>>>>,
    /// Do not create symlinks: list each (path, target) in [`Outcome::symlinks_listed`] instead
    /// (a BagIt payload holds only files and directories).
    pub list_symlinks: bool,
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
    /// `--salvage`: files written with lost bytes as zeros: (path, size, lost byte ranges).
    pub salvaged: Vec<(Vec<u8>, u64, Vec<std::ops::Range<u64>>)>,
    /// With [`Options::list_symlinks`]: the symlinks not created, as (path, target).
    pub symlinks_listed: Vec<(Vec<u8>, Vec<u8>)>,
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

/// Prepare DEST and return it opened as a directory; everything after works on that descriptor.
///
/// DEST's parent is opened by path as the user named it (symlinks in it are the user's choice);
/// DEST itself is created there with `mkdirat`, or, if it exists, opened with
/// `O_DIRECTORY|O_NOFOLLOW` relative to the parent's descriptor. A DEST that is a symlink is
/// refused, even with `force` (give the directory it points to), so swapping DEST for a symlink
/// cannot redirect the extraction. Emptiness is checked on the opened descriptor, not by path.
/// As root, an existing DEST owned by another user is refused: that user could read or rearrange
/// the files as they are written.
fn prepare(dest: &Path, force: bool) -> crate::Result<OwnedFd> {
    let Some(name) = dest.file_name() else {
        // `.`, `..` or `/`: no last component that could be swapped; open it as it is.
        let fd = rfs::openat(rfs::CWD, dest, DIR_FLAGS & !OFlags::NOFOLLOW, Mode::empty())
            .map_err(|e| io(dest, e.into()))?;
        check_existing(&fd, dest, force)?;
        return Ok(fd);
    };
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let pfd = rfs::openat(rfs::CWD, parent, DIR_FLAGS & !OFlags::NOFOLLOW, Mode::empty())
        .map_err(|e| io(parent, e.into()))?;
    let created = match rfs::mkdirat(&pfd, name, Mode::from_bits_truncate(0o777)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(io(dest, e.into())),
    };
    let fd = match rfs::openat(&pfd, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
            return Err(match rfs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Symlink => crate::Error::new(
                    crate::ErrorKind::Unsafe,
                    format!("{} is a symlink; refusing to follow it (give the directory it points to)", dest.display()),
                ),
                Ok(_) => crate::Error::invalid(format!("{} exists and is not a directory", dest.display())),
                Err(_) => io(dest, e.into()),
            });
        }
        Err(e) => return Err(io(dest, e.into())),
    };
    if !created {
        check_existing(&fd, dest, force)?;
    }
    Ok(fd)
}

/// Checks on an existing DEST, made on its descriptor: empty unless `force`; as root, owned by
/// root.
fn check_existing(fd: &OwnedFd, dest: &Path, force: bool) -> crate::Result<()> {
    let st = rfs::fstat(fd).map_err(|e| io(dest, e.into()))?;
    if rustix::process::geteuid().is_root() && st.st_uid != 0 {
        return Err(crate::Error::new(
            crate::ErrorKind::Unsafe,
            format!(
                "{} is owned by uid {}; as root, extract only into a new directory or one root owns \
                 (another user could read or rearrange the files as they are written)",
                dest.display(),
                st.st_uid
            ),
        ));
    }
    if force {
        return Ok(());
    }
    let dir = rfs::Dir::read_from(fd).map_err(|e| io(dest, e.into()))?;
    for entry in dir {
        let entry = entry.map_err(|e| io(dest, e.into()))?;
        if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
            return Err(crate::Error::new(
                crate::ErrorKind::Unsafe,
                format!("{} is not empty; refusing to extract into it (use --force to allow)", dest.display()),
            ));
        }
    }
    Ok(())
}

/// Flags of every directory open: a directory, never through a symlink.
const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

/// Open directory `rel` (`/`-separated, relative to DEST; empty for DEST) from DEST's descriptor,
/// never through a symlink and never outside DEST.
fn open_dir(root: BorrowedFd<'_>, rel: &[u8]) -> std::io::Result<OwnedFd> {
    let path = if rel.is_empty() { &b"."[..] } else { rel };
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    for _ in 0..8 {
        match rfs::openat2(root, OsStr::from_bytes(path), DIR_FLAGS, Mode::empty(), how) {
            // A concurrent rename somewhere on the system makes the kernel ask for a retry.
            Err(Errno::AGAIN) => continue,
            Err(Errno::NOSYS) => break,
            r => return r.map_err(Into::into),
        }
    }
    // No openat2 (Linux < 5.6): one O_NOFOLLOW open per component ("." and ".." never occur:
    // tree::walk refuses such names).
    let mut fd = rfs::openat(root, ".", DIR_FLAGS, Mode::empty())?;
    for comp in rel.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
        fd = rfs::openat(&fd, OsStr::from_bytes(comp), DIR_FLAGS, Mode::empty())?;
    }
    Ok(fd)
}

/// `rel` split into its directory and its last component.
fn split_rel(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&c| c == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// Clear the way for a new entry `name` in `dir` (with `force`): remove a file or symlink there.
/// A real directory is reported as `true` (reuse it when a directory is wanted).
fn clear(dir: BorrowedFd<'_>, name: &OsStr, p: &Path, force: bool) -> crate::Result<bool> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(io(p, e.into())),
        Ok(_) if !force => Err(crate::Error::new(crate::ErrorKind::Unsafe, format!("{} already exists", p.display()))),
        Ok(st) if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory => Ok(true),
        Ok(_) => {
            rfs::unlinkat(dir, name, AtFlags::empty()).map_err(|e| io(p, e.into()))?;
            Ok(false)
        }
    }
}

/// Extract `fs` (or `opts.subpath` of it) into `dest`.
///
/// # Errors
/// `Unsafe` for a non-empty DEST without `force`; `InvalidInput` for a bad `subpath`; `Io` when
/// writing fails (what was written so far stays); `Interrupted`.
pub fn extract(fs: &dyn FileSystem, dest: &Path, opts: &Options, run: &mut Run<'_>) -> crate::Result<Outcome> {
    let (start, start_name, start_stat) = match &opts.subpath {
        Some(p) => resolve(fs, p)?,
        None => (fs.root(), Vec::new(), fs.stat(fs.root())?),
    };
    let root = prepare(dest, opts.force)?;
    let mut x = Extraction {
        fs,
        dest,
        opts,
        root,
        out: Outcome::default(),
        safe_dirs: HashSet::from([Vec::new()]),
        dir_meta: Vec::new(),
        links: HashMap::new(),
        buf: vec![0u8; 1 << 20],
    };
    let found = x.list(start, start_name, start_stat, run)?;
    let total = crate::bytes::sum_saturating(
        found.iter().filter(|f| f.stat.file_type == FileType::File).map(|f| f.stat.size_bytes),
    );
    run.progress.start("extracting", Some(total));
    // The directory of the previous entry, kept open (entries come grouped by directory).
    let mut cur: Option<(Vec<u8>, OwnedFd)> = None;
    for f in &found {
        run.check()?;
        x.entry(f, &mut cur, run)?;
    }
    drop(cur);
    x.directory_metadata()?;
    run.progress.finish();
    Ok(x.out)
}

/// One extraction in progress.
struct Extraction<'a> {
    fs: &'a dyn FileSystem,
    dest: &'a Path,
    opts: &'a Options,
    /// DEST, opened.
    root: OwnedFd,
    out: Outcome,
    /// Directories (relative to DEST) this run created or verified as real directories: writes
    /// go only into these.
    safe_dirs: HashSet<Vec<u8>>,
    /// Directories whose mode and times are set at the end.
    dir_meta: Vec<(Vec<u8>, tree::Stat)>,
    /// Hard-link key → the first path written with it.
    links: HashMap<u64, Vec<u8>>,
    buf: Vec<u8>,
}

impl Extraction<'_> {
    /// Everything to extract, in walk order (entries grouped by directory).
    fn list(
        &mut self,
        start: NodeId,
        start_name: Vec<u8>,
        start_stat: tree::Stat,
        run: &mut Run<'_>,
    ) -> crate::Result<Vec<Found>> {
        let fs = self.fs;
        let mut found: Vec<Found> = Vec::new();
        if start_stat.file_type != FileType::Dir {
            found.push(Found { path: start_name, id: start, stat: start_stat });
            return Ok(found);
        }
        let issues = if self.opts.subpath.is_some() {
            tree::walk_from(fs, start, run.interrupt, |f| found.push(f.clone()))?
        } else {
            tree::walk(fs, run.interrupt, |f| found.push(f.clone()))?
        };
        self.out.problems.extend(issues.iter().map(crate::manifest::problem_of));
        if self.opts.subpath.is_none() {
            let root = fs.root();
            found.retain(|f| !(f.path == b"lost+found" && fs.is_bookkeeping(root, &f.path, f.id)));
        }
        Ok(found)
    }

    /// Count an entry as skipped, with its finding.
    fn skip(&mut self, p: Problem) {
        self.out.problems.push(p);
        self.out.counts.skipped += 1;
    }

    /// Create one entry in its (already created) directory, `cur` holding that directory open.
    fn entry(&mut self, f: &Found, cur: &mut Option<(Vec<u8>, OwnedFd)>, run: &mut Run<'_>) -> crate::Result<()> {
        let target = self.dest.join(OsStr::from_bytes(&f.path));
        let shown = format!("/{}", String::from_utf8_lossy(&f.path));
        let (parent, name) = split_rel(&f.path);
        let name = OsStr::from_bytes(name);
        if !self.safe_dirs.contains(parent) || name.is_empty() {
            self.skip(Problem::error("extract.skipped", format!("{shown}: its directory was not created; skipped")));
            return Ok(());
        }
        if cur.as_ref().is_none_or(|(p, _)| p != parent) {
            let fd = open_dir(self.root.as_fd(), parent).map_err(|e| io(parent_dir(&target), e))?;
            *cur = Some((parent.to_vec(), fd));
        }
        let Some((_, dir)) = cur else { return Ok(()) };
        let at = At { dir: dir.as_fd(), name, target: &target, shown: &shown };
        match f.stat.file_type {
            FileType::Dir => self.directory(f, &at),
            FileType::File => self.file(f, &at, run),
            FileType::Symlink => self.symlink(f, &at),
            other => {
                self.skip(Problem::warning(
                    "extract.skipped",
                    format!(
                        "{shown}: a {} is not created (extract restores files, directories and links); skipped",
                        other.name()
                    ),
                ));
                Ok(())
            }
        }
    }

    fn directory(&mut self, f: &Found, at: &At<'_>) -> crate::Result<()> {
        if !clear(at.dir, at.name, at.target, self.opts.force)? {
            match rfs::mkdirat(at.dir, at.name, Mode::from_bits_truncate(0o777)) {
                Ok(()) => {}
                Err(e) if unrestorable(e) => {
                    self.skip(Problem::error(
                        "extract.skipped",
                        format!("{}: the directory cannot be created here ({e}); skipped with its contents", at.shown),
                    ));
                    return Ok(());
                }
                Err(e) => return Err(io(at.target, e.into())),
            }
        }
        self.safe_dirs.insert(f.path.clone());
        self.dir_meta.push((f.path.clone(), f.stat.clone()));
        self.out.counts.dirs += 1;
        Ok(())
    }

    fn file(&mut self, f: &Found, at: &At<'_>, run: &mut Run<'_>) -> crate::Result<()> {
        let (s, shown, target) = (&f.stat, at.shown, at.target);
        let first = if s.nlink > 1 { s.link_key.and_then(|k| self.links.get(&k)) } else { None };
        if let Some(first) = first {
            clear(at.dir, at.name, target, self.opts.force)?;
            let (fp, fname) = split_rel(first);
            let fdir = open_dir(self.root.as_fd(), fp).map_err(|e| io(target, e))?;
            rfs::linkat(&fdir, OsStr::from_bytes(fname), at.dir, at.name, AtFlags::empty())
                .map_err(|e| io(target, e.into()))?;
            self.out.counts.hardlinks += 1;
            return Ok(());
        }
        clear(at.dir, at.name, target, self.opts.force)?;
        let known_lost = self.opts.salvage.as_ref().map(|m| m.get(&f.id).cloned().unwrap_or_default());
        let w = Writing {
            dir: at.dir,
            name: at.name,
            target,
            allow_damaged: self.opts.allow_damaged || known_lost.is_some(),
            known_lost,
        };
        let file = match write_file(self.fs, f.id, &w, &mut self.buf, run)? {
            Ok((file, n, damage, lost)) => {
                self.out.counts.bytes += n;
                self.out.counts.files += 1;
                if self.opts.salvage.is_some() && !lost.is_empty() {
                    let bytes: u64 = lost.iter().map(|r| r.end - r.start).sum();
                    self.out.problems.push(Problem::error(
                        "extract.salvaged",
                        format!(
                            "{shown}: {bytes} bytes in {} range(s) are lost and written as zeros (listed in the \
                             damage sidecar)",
                            lost.len()
                        ),
                    ));
                    self.out.salvaged.push((f.path.clone(), n, lost));
                } else if let Some(d) = damage {
                    self.out.problems.push(Problem::error(
                        "extract.damaged",
                        format!("{shown}: written with --allow-damaged, but {d}"),
                    ));
                }
                file
            }
            Err(Skip::Unreadable(e)) => {
                let _ = rfs::unlinkat(at.dir, at.name, AtFlags::empty());
                self.skip(Problem::error(
                    "extract.unreadable",
                    format!("{shown}: not written: {e} (--allow-damaged writes what can be read)"),
                ));
                return Ok(());
            }
            Err(Skip::Unrestorable(why)) => {
                self.skip(Problem::error("extract.skipped", format!("{shown}: {why}; skipped")));
                return Ok(());
            }
        };
        // fchmod / futimens on the descriptor just created: no path is looked up again.
        if let Some(m) = s.mode {
            file.set_permissions(std::fs::Permissions::from_mode(m & !SET_ID_BITS)).map_err(|e| io(target, e))?;
        }
        if let Some(t) = s.mtime {
            file.set_times(std::fs::FileTimes::new().set_modified(time_of(t))).map_err(|e| io(target, e))?;
        }
        if let Some(k) = s.link_key.filter(|_| s.nlink > 1) {
            self.links.insert(k, f.path.clone());
        }
        Ok(())
    }

    fn symlink(&mut self, f: &Found, at: &At<'_>) -> crate::Result<()> {
        let shown = at.shown;
        match self.fs.readlink(f.id) {
            Ok(t) if t.is_empty() || t.contains(&0) => {
                let why = if t.is_empty() { "the target is empty" } else { "the target contains a NUL byte" };
                self.skip(Problem::error(
                    "extract.skipped",
                    format!("{shown}: {why}, which no Linux symlink can hold; skipped"),
                ));
            }
            Ok(t) if self.opts.list_symlinks => {
                self.out.symlinks_listed.push((f.path.clone(), t));
                self.out.counts.symlinks += 1;
            }
            Ok(t) => {
                clear(at.dir, at.name, at.target, self.opts.force)?;
                match rfs::symlinkat(OsStr::from_bytes(&t), at.dir, at.name) {
                    Ok(()) => self.out.counts.symlinks += 1,
                    Err(e) if unrestorable(e) => self.skip(Problem::error(
                        "extract.skipped",
                        format!("{shown}: the symlink cannot be created here ({e}); skipped"),
                    )),
                    Err(e) => return Err(io(at.target, e.into())),
                }
            }
            Err(e) => self.skip(Problem::error("extract.unreadable", format!("{shown}: {e}"))),
        }
        Ok(())
    }

    /// Directory modes and times last (children change a directory's mtime; a read-only
    /// directory would block writing its children), deepest first, each on its own descriptor.
    fn directory_metadata(&self) -> crate::Result<()> {
        for (rel, s) in self.dir_meta.iter().rev() {
            let p = self.dest.join(OsStr::from_bytes(rel));
            let d = open_dir(self.root.as_fd(), rel).map_err(|e| io(&p, e))?;
            if let Some(m) = s.mode {
                rfs::fchmod(&d, Mode::from_bits_truncate(m & !SET_ID_BITS & 0o7777)).map_err(|e| io(&p, e.into()))?;
            }
            if let Some(t) = s.mtime {
                let omit = rfs::Timespec { tv_sec: 0, tv_nsec: rfs::UTIME_OMIT };
                let when = rfs::Timespec { tv_sec: t, tv_nsec: 0 };
                rfs::futimens(&d, &rfs::Timestamps { last_access: omit, last_modification: when })
                    .map_err(|e| io(&p, e.into()))?;
            }
        }
        Ok(())
    }
}

/// Where one entry goes: its directory (open), its name there, its path for messages.
struct At<'a> {
    dir: BorrowedFd<'a>,
    name: &'a OsStr,
    target: &'a Path,
    /// `/path` inside the file system.
    shown: &'a str,
}

/// Whether creating an entry failed because of the entry itself (a name or target the
/// destination cannot hold), not because DEST is unusable: such an entry is skipped.
fn unrestorable(e: Errno) -> bool {
    matches!(e, Errno::NAMETOOLONG | Errno::INVAL | Errno::ILSEQ | Errno::NOENT)
}

/// Why a file was not written.
enum Skip {
    /// Its data could not be read or mapped from the image (without `allow_damaged`).
    Unreadable(crate::Error),
    /// It cannot be created in DEST (its name).
    Unrestorable(String),
}

/// Where one file goes.
struct Writing<'a> {
    dir: BorrowedFd<'a>,
    name: &'a OsStr,
    target: &'a Path,
    allow_damaged: bool,
    /// `--salvage`: byte ranges known to be lost (written as zeros whatever reads there).
    known_lost: Option<Vec<std::ops::Range<u64>>>,
}

/// A written file: it (still open), its size, what was missing (`allow_damaged`), and the byte
/// ranges written as zeros because they are lost (merged).
type Written = (std::fs::File, u64, Option<String>, Vec<std::ops::Range<u64>>);

/// Unit in which `allow_damaged` retries a chunk that failed to read.
const RETRY_BYTES: usize = 4096;

/// Write one file's contents, leaving holes where the image has them. The outer error is a
/// failure to write DEST (which stops the extraction); the inner one a reason to skip the file.
/// Returns the open file, its size, and (with `allow_damaged`) what was missing.
fn write_file(
    fs: &dyn FileSystem,
    id: NodeId,
    w: &Writing<'_>,
    buf: &mut [u8],
    run: &mut Run<'_>,
) -> crate::Result<Result<Written, Skip>> {
    let reader = match fs.open(id) {
        Ok(r) => r,
        Err(e) => return Ok(Err(Skip::Unreadable(e))),
    };
    // A block map with pointers outside the file system reads as zeros there: that is damage,
    // not content.
    let map_damage: Vec<String> =
        reader.issues().iter().filter(|i| i.is_error()).map(|i| format!("{}: {}", i.code, i.message)).collect();
    if !map_damage.is_empty() && !w.allow_damaged {
        return Ok(Err(Skip::Unreadable(crate::Error::corrupt(format!(
            "its block map is damaged ({})",
            map_damage.join("; ")
        )))));
    }
    let size = reader.size_bytes();
    #[allow(clippy::single_range_in_vec_init)]
    let ranges = reader.data_ranges().unwrap_or_else(|| vec![0..size]);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let file = match rfs::openat(w.dir, w.name, flags, Mode::from_bits_truncate(0o600)) {
        Ok(fd) => std::fs::File::from(fd),
        Err(e) if unrestorable(e) => {
            return Ok(Err(Skip::Unrestorable(format!("the file cannot be created here ({e})"))));
        }
        Err(e) => return Err(io(w.target, e.into())),
    };
    let known: &[std::ops::Range<u64>] = w.known_lost.as_deref().unwrap_or(&[]);
    let mut losses = Losses { bytes: 0, ranges: known.to_vec(), first_error: None };
    if !map_damage.is_empty() {
        losses.ranges.extend(reader.damaged_ranges().unwrap_or_default());
    }
    let copy = FileCopy { reader: &*reader, size, file: &file, w };
    let mut advanced = 0u64;
    for r in ranges {
        match copy.range(r, buf, run, &mut losses)? {
            Ok(n) => advanced += n,
            Err(skip) => return Ok(Err(skip)),
        }
    }
    run.progress.advance(size.saturating_sub(advanced));
    file.set_len(size).map_err(|e| io(w.target, e))?;
    let mut damage = Vec::new();
    if !map_damage.is_empty() {
        damage.push(format!("parts its damaged block map does not locate are zeros ({})", map_damage.join("; ")));
    }
    let Losses { bytes: lost, ranges: mut lost_ranges, first_error } = losses;
    if let Some(e) = first_error {
        damage.push(format!("{lost} bytes could not be read and are zeros (first error: {e})"));
    }
    lost_ranges.retain(|r| r.start < size);
    for r in &mut lost_ranges {
        r.end = r.end.min(size);
    }
    let lost_ranges = crate::damage::merge(lost_ranges);
    Ok(Ok((file, size, (!damage.is_empty()).then(|| damage.join("; ")), lost_ranges)))
}

/// What could not be read from one file (with `allow_damaged`): bytes written as zeros, their
/// ranges (and the ones known lost beforehand), the first read error.
struct Losses {
    bytes: u64,
    ranges: Vec<std::ops::Range<u64>>,
    first_error: Option<String>,
}

/// One file being copied: from `reader` (`size` bytes) to `file`, as `w` says.
struct FileCopy<'a> {
    reader: &'a dyn tree::FileReader,
    size: u64,
    file: &'a std::fs::File,
    w: &'a Writing<'a>,
}

impl FileCopy<'_> {
    /// Copy the data range `r` through `buf`: all-zero chunks stay holes, known lost bytes are
    /// zeros, and (with `allow_damaged`) what cannot be read is retried in small pieces and
    /// recorded in `losses`. Returns the bytes accounted for in the progress; the inner error is
    /// a reason to skip the file.
    fn range(
        &self,
        r: std::ops::Range<u64>,
        buf: &mut [u8],
        run: &mut Run<'_>,
        losses: &mut Losses,
    ) -> crate::Result<Result<u64, Skip>> {
        let FileCopy { reader, size, file, w } = *self;
        let known: &[std::ops::Range<u64>] = w.known_lost.as_deref().unwrap_or(&[]);
        let mut advanced = 0u64;
        let mut off = r.start;
        while off < r.end {
            run.interrupt.check()?;
            let want = ((r.end - off) as usize).min(buf.len());
            let n = match reader.read_at(&mut buf[..want], off) {
                Ok(0) => {
                    let e = crate::Error::corrupt(format!("the data ends after {off} of {size} bytes"));
                    if !w.allow_damaged {
                        return Ok(Err(Skip::Unreadable(e)));
                    }
                    losses.first_error.get_or_insert_with(|| e.to_string());
                    losses.bytes += r.end - off;
                    losses.ranges.push(off..r.end);
                    advanced += r.end - off;
                    break;
                }
                Ok(n) => n,
                Err(e) if !w.allow_damaged => return Ok(Err(Skip::Unreadable(e))),
                Err(e) => {
                    losses.first_error.get_or_insert_with(|| e.to_string());
                    read_retrying(reader, &mut buf[..want], off, losses);
                    want
                }
            };
            // Known lost bytes read as whatever the damage left (dead-sector markers): zeros.
            for k in known.iter().filter(|k| k.start < off + n as u64 && k.end > off) {
                let a = (k.start.max(off) - off) as usize;
                let z = (k.end.min(off + n as u64) - off) as usize;
                buf[a..z].fill(0);
            }
            // All-zero chunks stay holes.
            if buf[..n].iter().any(|&b| b != 0) {
                file.write_all_at(&buf[..n], off).map_err(|e| io(w.target, e))?;
            }
            off += n as u64;
            advanced += n as u64;
            run.progress.advance(n as u64);
        }
        Ok(Ok(advanced))
    }
}

/// Keep what can be read of a chunk that failed: read `buf` from `off` again in
/// [`RETRY_BYTES`] pieces, zeros (recorded in `losses`) where a piece cannot be read.
fn read_retrying(reader: &dyn tree::FileReader, buf: &mut [u8], off: u64, losses: &mut Losses) {
    let want = buf.len();
    let mut p = 0usize;
    while p < want {
        let k = (want - p).min(RETRY_BYTES);
        match reader.read_at(&mut buf[p..p + k], off + p as u64) {
            Ok(got) if got == k => {}
            _ => {
                buf[p..p + k].fill(0);
                losses.bytes += k as u64;
                losses.ranges.push(off + p as u64..off + (p + k) as u64);
            }
        }
        p += k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Directory descriptors are opened only below DEST and never through a symlink, whatever
    /// the path says; `clear` removes a symlink in the way, never what it points to.
    #[test]
    fn descriptors_never_follow_symlinks_or_leave_dest() {
        let base = std::env::temp_dir().join(format!("loopkit-extract-fd-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (dest, outside) = (base.join("dest"), base.join("outside"));
        std::fs::create_dir_all(dest.join("real/sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("link")).unwrap();
        std::os::unix::fs::symlink("../outside", dest.join("real/up")).unwrap();
        let root = prepare(&dest, true).unwrap();
        assert!(open_dir(root.as_fd(), b"real/sub").is_ok());
        assert!(open_dir(root.as_fd(), b"").is_ok());
        for bad in [&b"link"[..], b"real/up", b"../outside", b"real/../../outside", b"/tmp"] {
            assert!(open_dir(root.as_fd(), bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let real = open_dir(root.as_fd(), b"real").unwrap();
        assert!(clear(real.as_fd(), OsStr::new("up"), Path::new("up"), true).is_ok());
        assert!(std::fs::symlink_metadata(dest.join("real/up")).is_err(), "the symlink is removed");
        assert!(clear(root.as_fd(), OsStr::new("link"), Path::new("link"), false).is_err(), "exists, no force");
        assert!(clear(root.as_fd(), OsStr::new("link"), Path::new("link"), true).is_ok());
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep");
        assert!(outside.is_dir());
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// M5: a DEST that is a symlink is refused (with and without `force`), and once DEST is
    /// open, swapping its path for a symlink redirects nothing: writes go through the descriptor.
    #[test]
    fn dest_is_held_by_descriptor() {
        let base = std::env::temp_dir().join(format!("loopkit-extract-dest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (dest, outside) = (base.join("dest"), base.join("outside"));
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, &dest).unwrap();
        for force in [false, true] {
            let e = prepare(&dest, force).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Unsafe, "{e}");
            assert!(e.to_string().contains("symlink"), "{e}");
        }
        std::fs::write(base.join("file"), b"x").unwrap();
        let e = prepare(&base.join("file"), true).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{e}");
        std::fs::remove_file(&dest).unwrap();
        // Created here, then swapped for a symlink to `outside` while "extracting".
        let root = prepare(&dest, false).unwrap();
        std::fs::rename(&dest, base.join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, &dest).unwrap();
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        drop(rfs::openat(&root, "new", flags, Mode::from_bits_truncate(0o600)).unwrap());
        assert!(open_dir(root.as_fd(), b"").is_ok());
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "written through the swapped symlink");
        assert!(base.join("moved/new").is_file());
        // An existing, empty directory is accepted; a non-empty one only with force.
        let d2 = base.join("d2");
        std::fs::create_dir(&d2).unwrap();
        assert!(prepare(&d2, false).is_ok());
        std::fs::write(d2.join("x"), b"").unwrap();
        assert_eq!(prepare(&d2, false).unwrap_err().kind(), crate::ErrorKind::Unsafe);
        assert!(prepare(&d2, true).is_ok());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
