//! Manifests: every entry of a file system (or of a directory tree on disk) as JSON — path,
//! type, size, mode, owner, mtime, symlink/hard-link target and SHA-256 of the contents — sorted
//! by path so two manifests diff cleanly, and the comparison of two manifests (missing / extra /
//! changed). The schema is documented in `docs/JSON.md` ("Manifest"); what the comparison
//! deliberately ignores is listed in [`compare`].
//!
//! ```text
//!   FileSystem ──walk──> from_fs ──┐
//!   directory on disk ──> from_dir ┴─> Manifest ──compare──> Diff
//! ```

use crate::finding::{Finding as Problem, Severity};
use crate::fs::tree::{self, FileSystem, FileType, Found, PathIssue};
use crate::progress::Run;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Version of the manifest format (`loopkit_manifest`).
pub const MANIFEST_VERSION: u32 = 1;
/// Bytes read per call while hashing.
const CHUNK_BYTES: usize = 1 << 20;

/// What an entry is (a [`FileType`], plus `hardlink` for the second and later names of a file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    /// A regular file (the first name of a hard-linked file in path order).
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Another name of a regular file listed earlier; `target` names it.
    Hardlink,
    /// A character device.
    Chardev,
    /// A block device.
    Blockdev,
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
}

impl EntryType {
    fn of(t: FileType) -> EntryType {
        match t {
            FileType::File => EntryType::File,
            FileType::Dir => EntryType::Dir,
            FileType::Symlink => EntryType::Symlink,
            FileType::Chardev => EntryType::Chardev,
            FileType::Blockdev => EntryType::Blockdev,
            FileType::Fifo => EntryType::Fifo,
            FileType::Socket => EntryType::Socket,
        }
    }
}

/// One entry of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Path from the file-system root, `/`-separated, no leading slash, [`escape`]d.
    pub path: String,
    /// What it is.
    #[serde(rename = "type")]
    pub kind: EntryType,
    /// Content bytes for files and hard links, target length for symlinks, 0 otherwise.
    pub size: u64,
    /// Permission bits (`mode & 0o7777`, decimal in JSON); null when not recorded.
    pub mode: Option<u32>,
    /// Owner; null when not recorded.
    pub uid: Option<u32>,
    /// Group; null when not recorded.
    pub gid: Option<u32>,
    /// Modification time in whole seconds since the epoch (UTC); null when not recorded.
    pub mtime: Option<i64>,
    /// Symlink target ([`escape`]d) or, for a hard link, the path of the first name.
    pub target: Option<String>,
    /// SHA-256 of the contents (files and hard links), lower-case hex; null otherwise or when
    /// the contents could not be read.
    pub sha256: Option<String>,
}

/// A whole manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_VERSION`].
    #[serde(default = "version")]
    pub loopkit_manifest: u32,
    /// Entries sorted by `path` (code-point order of the escaped string).
    pub entries: Vec<Entry>,
}

fn version() -> u32 {
    MANIFEST_VERSION
}

impl Manifest {
    /// Parse a manifest from JSON.
    ///
    /// # Errors
    /// `InvalidInput` when it is not a manifest.
    pub fn from_json(bytes: &[u8]) -> crate::Result<Manifest> {
        let mut m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| crate::Error::invalid(format!("not a loopkit manifest: {e}")))?;
        if m.loopkit_manifest != MANIFEST_VERSION {
            return Err(crate::Error::invalid(format!("manifest version {} is not supported", m.loopkit_manifest)));
        }
        m.entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(m)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Total content bytes of regular files (hard links counted once).
    pub fn file_bytes(&self) -> u64 {
        crate::bytes::sum_saturating(self.entries.iter().filter(|e| e.kind == EntryType::File).map(|e| e.size))
    }
}

/// Escape raw name bytes into a string, reversibly: valid UTF-8 is kept, a backslash becomes
/// `\\`, and each byte that is not part of valid UTF-8 becomes `\xNN` (lower-case hex).
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Undo [`escape`].
///
/// # Errors
/// `InvalidInput` for a malformed escape.
pub fn unescape(s: &str) -> crate::Result<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            Some(b'x') if i + 4 <= b.len() => {
                let h = std::str::from_utf8(&b[i + 2..i + 4]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(h.ok_or_else(|| crate::Error::invalid(format!("bad escape in {s:?}")))?);
                i += 4;
            }
            _ => return Err(crate::Error::invalid(format!("bad escape in {s:?}"))),
        }
    }
    Ok(out)
}

/// A manifest plus what went wrong building it.
#[derive(Debug, Clone)]
pub struct Built {
    /// The manifest (entries that could not be read at all are absent).
    pub manifest: Manifest,
    /// Problems found (structural damage, unreadable files), each naming its path.
    pub problems: Vec<Problem>,
}

fn display_path(p: &[u8]) -> String {
    if p.is_empty() { "(file system)".into() } else { format!("/{}", escape(p)) }
}

/// A walk issue as a problem whose message starts with the path (`(file system)` for the volume).
pub(crate) fn problem_of(pi: &PathIssue) -> Problem {
    let msg = format!("{}: {}", display_path(&pi.path), pi.issue.message);
    Problem { message: msg, ..pi.issue.clone() }
}

/// A node to hash: index into the entries, and how to read it.
struct Job {
    entry: usize,
    id: tree::NodeId,
    path: Vec<u8>,
}

/// Walk `fs` and build its manifest, hashing file contents with `workers` threads (an empty
/// `lost+found` that mkfs made is left out). Progress counts content bytes.
///
/// # Errors
/// `Interrupted`; `Corrupt`/`Io` only when the root directory is unusable (everything else is a
/// problem in [`Built::problems`]).
pub fn from_fs(fs: &dyn FileSystem, workers: usize, run: &mut Run<'_>) -> crate::Result<Built> {
    build(fs, true, workers, run)
}

/// [`from_fs`]; with `hash == false` every file's map is still resolved and checked, but its
/// contents are not read (`sha256` stays null): the structural walk of a plain `verify`, whose
/// payload pass has already read every byte.
fn build(fs: &dyn FileSystem, hash: bool, workers: usize, run: &mut Run<'_>) -> crate::Result<Built> {
    let mut found: Vec<Found> = Vec::new();
    run.progress.start("reading directories", None);
    let issues = match tree::walk(fs, run.interrupt, |f| found.push(f.clone())) {
        Ok(issues) => issues,
        // The walk fails as a whole only when its start, the root directory, cannot be read (or on
        // Ctrl-C): that is damage in the file system, reported like any other (exit 1, and with a
        // reference every file is missing), not a failure to do the job.
        Err(e) if e.kind() != crate::ErrorKind::Interrupted => {
            vec![PathIssue {
                path: Vec::new(),
                issue: tree::Issue::error("fs.root-unreadable", format!("the root directory cannot be read: {e}")),
            }]
        }
        Err(e) => return Err(e),
    };
    run.progress.finish();
    let mut problems: Vec<Problem> = issues.iter().map(problem_of).collect();
    let root = fs.root();
    // Leave out mkfs's empty lost+found (and what it contains: nothing).
    found.retain(|f| !(f.path == b"lost+found" && fs.is_bookkeeping(root, &f.path, f.id)));

    let mut rows: Vec<(String, Found)> = found.into_iter().map(|f| (escape(&f.path), f)).collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut entries = Vec::with_capacity(rows.len());
    let mut first_name: HashMap<u64, usize> = HashMap::new();
    let mut jobs = Vec::new();
    for (path, f) in &rows {
        let s = &f.stat;
        let mut e = Entry {
            path: path.clone(),
            kind: EntryType::of(s.file_type),
            size: 0,
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            mtime: s.mtime,
            target: None,
            sha256: None,
        };
        match s.file_type {
            FileType::File => {
                e.size = s.size_bytes;
                let linked = if s.nlink > 1 { s.link_key } else { None };
                match linked.and_then(|k| first_name.get(&k).copied()) {
                    Some(first) => {
                        e.kind = EntryType::Hardlink;
                        e.target = Some(entries.get(first).map_or_else(String::new, |x: &Entry| x.path.clone()));
                    }
                    None => {
                        if let Some(k) = linked {
                            first_name.insert(k, entries.len());
                        }
                        jobs.push(Job { entry: entries.len(), id: f.id, path: f.path.clone() });
                    }
                }
            }
            FileType::Symlink => match fs.readlink(f.id) {
                Ok(t) => {
                    e.size = t.len() as u64;
                    e.target = Some(escape(&t));
                }
                Err(err) => {
                    problems.push(Problem::error("fs.symlink-unreadable", format!("{}: {err}", display_path(&f.path))))
                }
            },
            _ => {}
        }
        entries.push(e);
    }

    let total = if hash { crate::bytes::sum_saturating(jobs.iter().map(|j| entries[j.entry].size)) } else { 0 };
    let label = if hash { "hashing files" } else { "checking files" };
    let results = crate::pipeline::Pool::new(workers.clamp(1, 16), &mut *run.progress, run.interrupt)
        .phase(label, Some(total))
        .run_each(&jobs, || Ok(vec![0u8; CHUNK_BYTES]), |job, buf, tick| hash_one(fs, job.id, hash, buf, tick))?;
    for (job, res) in jobs.iter().zip(results) {
        match res {
            Ok((digest, issues)) => {
                entries[job.entry].sha256 = digest.map(|d| crate::bytes::hex(&d));
                problems
                    .extend(issues.iter().map(|i| problem_of(&PathIssue { path: job.path.clone(), issue: i.clone() })));
            }
            Err(e) if e.kind() == crate::ErrorKind::Interrupted => return Err(e),
            Err(e) => problems.push(Problem::error("fs.file-unreadable", format!("{}: {e}", display_path(&job.path)))),
        }
    }
    // Hard links carry the digest of their first name.
    for i in 0..entries.len() {
        if entries[i].kind == EntryType::Hardlink {
            let t = entries[i].target.clone().unwrap_or_default();
            if let Ok(j) = entries.binary_search_by(|x| x.path.as_str().cmp(t.as_str())) {
                entries[i].sha256 = entries[j].sha256.clone();
            }
        }
    }
    Ok(Built { manifest: Manifest { loopkit_manifest: MANIFEST_VERSION, entries }, problems })
}

type HashResult = crate::Result<(Option<[u8; 32]>, Vec<tree::Issue>)>;

fn hash_one(
    fs: &dyn FileSystem,
    id: tree::NodeId,
    hash: bool,
    buf: &mut [u8],
    tick: &crate::pipeline::Tick<'_>,
) -> HashResult {
    let f = fs.open(id)?;
    if !hash {
        return Ok((None, f.issues().to_vec()));
    }
    let mut h = sha2::Sha256::new();
    let size = f.size_bytes();
    let mut off = 0u64;
    while off < size {
        tick.check()?;
        let n = f.read_at(buf, off)?;
        if n == 0 {
            return Err(crate::Error::corrupt(format!("the data ends after {off} of {size} bytes")));
        }
        h.update(&buf[..n]);
        off += n as u64;
        tick.tick(n as u64)?;
    }
    Ok((Some(h.finalize().into()), f.issues().to_vec()))
}

/// Build the manifest of a directory tree on disk (walked with walkdir, symlinks not followed).
/// Hard links are recognised by device and inode number.
///
/// # Errors
/// `Io` when `root` cannot be read; `Interrupted`.
pub fn from_dir(root: &Path, run: &mut Run<'_>) -> crate::Result<Built> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(root).map_err(|e| crate::Error::io(format!("cannot read {}", root.display()), e))?;
    if !meta.is_dir() {
        return Err(crate::Error::invalid(format!("{} is not a directory", root.display())));
    }
    let mut problems = Vec::new();
    // (escaped path, entry, file to hash, hard-link key (device, inode) when nlink > 1)
    type Row = (String, Entry, Option<std::path::PathBuf>, Option<(u64, u64)>);
    let mut rows: Vec<Row> = Vec::new();
    let mut first_name: HashMap<(u64, u64), String> = HashMap::new();
    run.progress.start("reading the directory tree", None);
    let mut walker: Vec<walkdir::DirEntry> = Vec::new();
    for item in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
        run.interrupt.check()?;
        match item {
            Ok(d) => walker.push(d),
            Err(e) => problems.push(Problem::error("dir.unreadable", e.to_string())),
        }
    }
    run.progress.finish();
    for d in walker {
        let rel = d.path().strip_prefix(root).unwrap_or(d.path());
        let path = escape(rel.as_os_str().as_bytes());
        let md = match d.path().symlink_metadata() {
            Ok(m) => m,
            Err(e) => {
                problems.push(Problem::error("dir.unreadable", format!("/{path}: {e}")));
                continue;
            }
        };
        let Some(ft) = FileType::from_mode(md.mode()) else { continue };
        let mut e = Entry {
            path: path.clone(),
            kind: EntryType::of(ft),
            size: 0,
            mode: Some(md.mode() & 0o7777),
            uid: Some(md.uid()),
            gid: Some(md.gid()),
            mtime: Some(md.mtime()),
            target: None,
            sha256: None,
        };
        let mut hash_path = None;
        match ft {
            FileType::File => {
                e.size = md.len();
                hash_path = Some(d.path().to_path_buf());
            }
            FileType::Symlink => match std::fs::read_link(d.path()) {
                Ok(t) => {
                    let t = t.as_os_str().as_bytes();
                    e.size = t.len() as u64;
                    e.target = Some(escape(t));
                }
                Err(err) => problems.push(Problem::error("dir.unreadable", format!("/{path}: {err}"))),
            },
            _ => {}
        }
        let key = (ft == FileType::File && md.nlink() > 1).then(|| (md.dev(), md.ino()));
        rows.push((path, e, hash_path, key));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    // Hard links: the first name in path order is the file, the others point to it.
    let total = crate::bytes::sum_saturating(rows.iter().filter(|r| r.2.is_some()).map(|r| r.1.size));
    run.progress.start("hashing files", Some(total));
    let mut entries = Vec::with_capacity(rows.len());
    let mut digests: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (path, mut e, hp, key) in rows {
        if let Some(p) = hp {
            if let Some(first) = key.and_then(|k| first_name.get(&k)) {
                e.kind = EntryType::Hardlink;
                e.sha256 = digests.get(first).cloned().flatten();
                e.target = Some(first.clone());
            } else {
                if let Some(k) = key {
                    first_name.insert(k, path.clone());
                }
                match hash_file(&p, run) {
                    Ok(d) => e.sha256 = Some(crate::bytes::hex(&d)),
                    Err(err) if err.kind() == crate::ErrorKind::Interrupted => return Err(err),
                    Err(err) => problems.push(Problem::error("dir.unreadable", format!("/{path}: {err}"))),
                }
                digests.insert(path.clone(), e.sha256.clone());
            }
        }
        entries.push(e);
    }
    run.progress.finish();
    Ok(Built { manifest: Manifest { loopkit_manifest: MANIFEST_VERSION, entries }, problems })
}

/// SHA-256 of a file's contents, read in chunks with progress and interruption.
///
/// # Errors
/// `Io` when it cannot be read; `Interrupted`.
pub fn hash_file(p: &Path, run: &mut Run<'_>) -> crate::Result<[u8; 32]> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).map_err(|e| crate::Error::io(format!("cannot open {}", p.display()), e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        run.interrupt.check()?;
        let n = f.read(&mut buf).map_err(|e| crate::Error::io(format!("reading {}", p.display()), e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        run.progress.advance(n as u64);
    }
    Ok(h.finalize().into())
}

/// One entry that differs, and in what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The path.
    pub path: String,
    /// Fields that differ: `type`, `size`, `sha256`, `target`, `mode`, `uid`, `gid`, `mtime`.
    pub fields: Vec<String>,
}

/// The result of [`compare`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// In the reference but not in the image.
    pub missing: Vec<String>,
    /// In the image but not in the reference.
    pub extra: Vec<String>,
    /// In both, but different.
    pub changed: Vec<Change>,
}

impl Diff {
    /// No differences.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }
}

fn is_empty_lost_found(m: &Manifest, e: &Entry) -> bool {
    e.path == "lost+found" && e.kind == EntryType::Dir && !m.entries.iter().any(|x| x.path.starts_with("lost+found/"))
}

/// Compare the manifest of an image with a reference (a saved manifest or a directory tree).
///
/// Deliberately not differences (see `docs/JSON.md`):
/// - an empty top-level `lost+found` on either side (mkfs makes it; a copy of a mounted file
///   system has it);
/// - fields one side does not record (`null`: modes and owners of Joliet-only ISOs);
/// - the mode and mtime of symlinks (Linux ignores a symlink's mode; extract cannot set a
///   symlink's time without following it);
/// - directory sizes (they depend on the file system, not on the contents), atimes, ctimes,
///   sub-second times, extended attributes and ACLs.
pub fn compare(image: &Manifest, reference: &Manifest) -> Diff {
    let mut d = Diff::default();
    let a: BTreeMap<&str, &Entry> = image.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let b: BTreeMap<&str, &Entry> = reference.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    for (p, r) in &b {
        if !a.contains_key(p) && !is_empty_lost_found(reference, r) {
            d.missing.push((*p).to_string());
        }
    }
    for (p, i) in &a {
        let Some(r) = b.get(p) else {
            if !is_empty_lost_found(image, i) {
                d.extra.push((*p).to_string());
            }
            continue;
        };
        let mut fields = Vec::new();
        if i.kind != r.kind {
            fields.push("type");
        } else {
            let content = matches!(i.kind, EntryType::File | EntryType::Hardlink);
            if content && i.size != r.size {
                fields.push("size");
            }
            if content && (i.sha256 != r.sha256 || i.sha256.is_none()) {
                fields.push("sha256");
            }
            if matches!(i.kind, EntryType::Symlink | EntryType::Hardlink) && i.target != r.target {
                fields.push("target");
            }
            let meta = i.kind != EntryType::Symlink;
            let differs = |x: Option<i64>, y: Option<i64>| matches!((x, y), (Some(x), Some(y)) if x != y);
            if meta && differs(i.mode.map(i64::from), r.mode.map(i64::from)) {
                fields.push("mode");
            }
            if differs(i.uid.map(i64::from), r.uid.map(i64::from)) {
                fields.push("uid");
            }
            if differs(i.gid.map(i64::from), r.gid.map(i64::from)) {
                fields.push("gid");
            }
            if meta && differs(i.mtime, r.mtime) {
                fields.push("mtime");
            }
        }
        if !fields.is_empty() {
            d.changed.push(Change { path: (*p).to_string(), fields: fields.into_iter().map(String::from).collect() });
        }
    }
    d
}

/// What the file-level check of `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesCheck {
    /// Entries in the file system (lost+found left out).
    pub count: u64,
    /// Content bytes of regular files.
    pub bytes: u64,
    /// Structural problems found while walking (also in the verify outcome's problems).
    pub problems: u64,
    /// The comparison with a reference, if one was given.
    pub diff: Option<Diff>,
}

/// What to compare the image's files with.
#[derive(Debug, Clone)]
pub enum Reference {
    /// A saved manifest.
    Manifest(Manifest),
    /// A directory tree on disk.
    Dir(std::path::PathBuf),
}

/// Walk the file system (every directory, inode and block map; file contents are read and hashed
/// only when there is a reference to compare with), report problems, and compare with
/// `reference` when given. Differences
/// become `files.missing` / `files.extra` / `files.changed` problems (errors).
///
/// # Errors
/// As [`from_fs`] and [`from_dir`].
pub fn check(
    fs: &dyn FileSystem,
    reference: Option<&Reference>,
    workers: usize,
    run: &mut Run<'_>,
) -> crate::Result<(FilesCheck, Vec<Problem>)> {
    let built = build(fs, reference.is_some(), workers, run)?;
    let mut problems = built.problems;
    let m = &built.manifest;
    let walk_problems = problems.iter().filter(|p| p.severity == Severity::Error).count() as u64;
    let diff = match reference {
        None => None,
        Some(r) => {
            let reference = match r {
                Reference::Manifest(m) => m.clone(),
                Reference::Dir(p) => {
                    let b = from_dir(p, run)?;
                    problems.extend(b.problems);
                    b.manifest
                }
            };
            let d = compare(m, &reference);
            for p in &d.missing {
                problems.push(Problem::error("files.missing", format!("/{p}: in the reference but not in the image")));
            }
            for p in &d.extra {
                problems.push(Problem::error("files.extra", format!("/{p}: in the image but not in the reference")));
            }
            for c in &d.changed {
                problems.push(Problem::error("files.changed", format!("/{}: {} differ", c.path, c.fields.join(", "))));
            }
            Some(d)
        }
    };
    Ok((FilesCheck { count: m.entries.len() as u64, bytes: m.file_bytes(), problems: walk_problems, diff }, problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_roundtrip() {
        for raw in [&b"plain"[..], b"sp ace/\xc3\xa9t\xc3\xa9", b"back\\slash", b"bad\xff\xfe", b"\\x41", b"\xe2\x82"] {
            let e = escape(raw);
            assert_eq!(unescape(&e).unwrap(), raw, "{e}");
        }
        assert_eq!(escape(b"a\xffb\\"), "a\\xffb\\\\");
        assert!(unescape("a\\q").is_err());
        assert!(unescape("a\\x4").is_err());
    }

    fn entry(path: &str, kind: EntryType) -> Entry {
        Entry {
            path: path.into(),
            kind,
            size: 0,
            mode: Some(0o644),
            uid: Some(0),
            gid: Some(0),
            mtime: Some(1),
            target: None,
            sha256: None,
        }
    }

    #[test]
    fn compare_rules() {
        let mut f = entry("a", EntryType::File);
        f.sha256 = Some("00".into());
        let img = Manifest {
            loopkit_manifest: 1,
            entries: vec![f.clone(), entry("lost+found", EntryType::Dir), entry("x", EntryType::Dir)],
        };
        let mut f2 = f.clone();
        f2.mode = None; // not recorded: not a difference
        let mut l = entry("l", EntryType::Symlink);
        l.target = Some("a".into());
        let reference = Manifest { loopkit_manifest: 1, entries: vec![f2, l] };
        let d = compare(&img, &reference);
        assert_eq!(d.missing, vec!["l"]);
        assert_eq!(d.extra, vec!["x"]);
        assert!(d.changed.is_empty());
        let mut f3 = f.clone();
        f3.sha256 = Some("01".into());
        f3.mtime = Some(2);
        let d = compare(&img, &Manifest { loopkit_manifest: 1, entries: vec![f3] });
        assert_eq!(d.changed[0].fields, vec!["sha256", "mtime"]);
    }
}
