//! The common read-only file-system model that the ext and ISO9660 readers implement and that
//! `manifest`, `verify` and `extract` walk: node ids, `stat`, directory listings, symlink
//! targets and positioned reads of file contents. Nothing here writes or mounts anything.
//!
//! ```text
//!   ext::Ext ────────┐
//!   iso9660::Iso ────┴──> FileSystem ──> walk() ──> manifest / verify / extract
//! ```
//! Readers never panic on bad data: a structure that does not make sense becomes an `Err` of
//! kind `Corrupt` (the whole node is unusable) or an [`Issue`] in a [`Listing`] (some entries of a
//! directory were lost), which the walker turns into a reported problem with the path.

use std::collections::HashSet;

/// Identifies a node inside one file system (ext: the inode number; ISO9660: the byte offset of
/// its directory record).
pub type NodeId = u64;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device node (listed, never read).
    Chardev,
    /// A block device node (listed, never read).
    Blockdev,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

impl FileType {
    /// From the `S_IFMT` bits of a Unix mode (`None` for an unknown type).
    pub fn from_mode(mode: u32) -> Option<FileType> {
        Some(match mode & 0o170000 {
            0o100000 => FileType::File,
            0o040000 => FileType::Dir,
            0o120000 => FileType::Symlink,
            0o020000 => FileType::Chardev,
            0o060000 => FileType::Blockdev,
            0o010000 => FileType::Fifo,
            0o140000 => FileType::Socket,
            _ => return None,
        })
    }

    /// The lower-case name used in manifests.
    pub fn name(self) -> &'static str {
        match self {
            FileType::File => "file",
            FileType::Dir => "dir",
            FileType::Symlink => "symlink",
            FileType::Chardev => "chardev",
            FileType::Blockdev => "blockdev",
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
        }
    }
}

/// Metadata of one node. Fields a file system does not record are `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The type.
    pub file_type: FileType,
    /// Content length in bytes (files: data; symlinks: target length; others: as recorded).
    pub size_bytes: u64,
    /// Permission bits (`mode & 0o7777`).
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Modification time, whole seconds since the Unix epoch (UTC).
    pub mtime: Option<i64>,
    /// Inode change time, whole seconds since the Unix epoch (UTC), when recorded apart from
    /// the mtime (ext); shown by `mount`, not part of manifests.
    pub ctime: Option<i64>,
    /// Hard-link count as recorded.
    pub nlink: u32,
    /// Device number `(major, minor)` of device nodes.
    pub rdev: Option<(u32, u32)>,
    /// Identity shared by all names of one hard-linked file (None: the fs cannot tell).
    pub link_key: Option<u64>,
}

/// One name in a directory (never `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The raw name bytes.
    pub name: Vec<u8>,
    /// The node it names.
    pub id: NodeId,
}

/// Something wrong found while reading a structure that did not stop the read as a whole (the
/// library-wide [`crate::finding::Finding`]; the walker prefixes the path).
pub type Issue = crate::finding::Finding;

/// Issues kept per directory listing; a directory full of garbage would otherwise give one per
/// block or sector.
pub const MAX_ISSUES: usize = 64;

/// Keep the first [`MAX_ISSUES`] issues and say how many more there were.
pub fn cap_issues(issues: &mut Vec<Issue>) {
    if issues.len() > MAX_ISSUES {
        let more = issues.len() - MAX_ISSUES;
        let code = issues[MAX_ISSUES].code.clone();
        issues.truncate(MAX_ISSUES);
        issues.push(Issue::error(code, format!("… and {more} more problems in this directory")));
    }
}

/// The entries of a directory plus what went wrong reading it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Entries in on-disk order, without `.` and `..`.
    pub entries: Vec<DirEntry>,
    /// Damage found (entries may be missing because of it).
    pub issues: Vec<Issue>,
}

/// A file system's own size figures (what `statfs` reports for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Figures {
    /// Block size in bytes.
    pub block_size: u32,
    /// Blocks in the file system.
    pub blocks: u64,
    /// Free blocks.
    pub free_blocks: u64,
    /// Inodes (0 when the file system has no inode table).
    pub files: u64,
    /// Free inodes.
    pub free_files: u64,
}

/// An opened regular file (or symlink target) whose block map has been resolved once.
pub trait FileReader: Send {
    /// Content length in bytes.
    fn size_bytes(&self) -> u64;
    /// Read up to `buf.len()` bytes at `offset_bytes`; 0 only at or past the end. Holes read
    /// as zeros.
    ///
    /// # Errors
    /// `Io` on read failures, `Corrupt` when the file's map points outside the file system.
    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> crate::Result<usize>;
    /// Problems found while resolving the file's map (blocks past the end, loops…).
    fn issues(&self) -> &[Issue];
    /// Byte ranges that hold data (everything else is a hole), in order, when known.
    fn data_ranges(&self) -> Option<Vec<std::ops::Range<u64>>> {
        None
    }
    /// Where the content lives in the file system's image (byte extents, FIEMAP's model), when
    /// the file system maps files to blocks and the content is not stored inline.
    fn extents(&self) -> Option<Vec<crate::extent::Extent>> {
        None
    }
    /// Byte ranges of the content that the file's damaged map could not locate (they read as
    /// zeros; [`FileReader::issues`] says why): `Some(empty)` when the map is sound, `None` when
    /// the reader cannot tell where the damage lies (then every hole may be lost data).
    fn damaged_ranges(&self) -> Option<Vec<std::ops::Range<u64>>> {
        if self.issues().iter().any(|i| i.is_error()) { None } else { Some(Vec::new()) }
    }
}

/// A read-only file system.
pub trait FileSystem: Send + Sync {
    /// blkid's name of the type (`ext2`, `ext3`, `ext4`, `iso9660`).
    fn kind(&self) -> &'static str;
    /// The root directory.
    fn root(&self) -> NodeId;
    /// Metadata of a node.
    ///
    /// # Errors
    /// `Corrupt` when the node cannot be read sensibly, `Io` on read failures.
    fn stat(&self, id: NodeId) -> crate::Result<Stat>;
    /// The entries of a directory.
    ///
    /// # Errors
    /// `Corrupt`/`Io` when nothing of the directory could be read.
    fn read_dir(&self, id: NodeId) -> crate::Result<Listing>;
    /// The target of a symbolic link, as raw bytes.
    ///
    /// # Errors
    /// `Corrupt`/`Io`.
    fn readlink(&self, id: NodeId) -> crate::Result<Vec<u8>>;
    /// Open a regular file for reading.
    ///
    /// # Errors
    /// `Corrupt`/`Io` when its map cannot be resolved at all.
    fn open(&self, id: NodeId) -> crate::Result<Box<dyn FileReader + '_>>;
    /// Remarks about the whole file system found when it was opened (journal needs recovery,
    /// superblock checksum…).
    fn issues(&self) -> Vec<Issue>;
    /// The extended attributes of a node as `(full name, value)` pairs in on-disk order (empty
    /// when the file system records none).
    ///
    /// # Errors
    /// `Corrupt`/`Io`.
    fn xattrs(&self, _id: NodeId) -> crate::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(Vec::new())
    }
    /// The size figures `statfs` reports (`mount`), when the file system records them.
    fn figures(&self) -> Option<Figures> {
        None
    }
    /// Whether a name in the root directory is an empty `lost+found` made by mkfs (or
    /// similar bookkeeping the file system adds by itself).
    fn is_bookkeeping(&self, _parent: NodeId, _name: &[u8], _id: NodeId) -> bool {
        false
    }
}

/// Longest path (in components) the walker descends; deeper trees are reported, not followed.
pub const MAX_DEPTH: usize = 4096;

/// One node found by [`walk`].
#[derive(Debug, Clone)]
pub struct Found {
    /// Path from the root, components joined by `/`, no leading slash (raw bytes).
    pub path: Vec<u8>,
    /// The node.
    pub id: NodeId,
    /// Its metadata.
    pub stat: Stat,
}

/// A problem found by [`walk`], with the path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathIssue {
    /// Path of the node (empty for the root or the whole file system).
    pub path: Vec<u8>,
    /// What is wrong.
    pub issue: Issue,
}

/// Everything under the root, depth first, plus the problems met on the way. Directory loops
/// (a directory reachable twice) are reported and not followed; `.`/`..`/empty names and names
/// containing `/` are reported and skipped. Bookkeeping entries (mkfs's `lost+found`) are kept:
/// the caller decides (see [`FileSystem::is_bookkeeping`]).
///
/// # Errors
/// `Interrupted`; `Corrupt`/`Io` only when the root itself cannot be read.
pub fn walk(
    fs: &dyn FileSystem,
    interrupt: &crate::progress::Interrupt,
    visit: impl FnMut(&Found),
) -> crate::Result<Vec<PathIssue>> {
    let below = walk_from(fs, fs.root(), interrupt, visit)?;
    // Asked after the walk: readers find some whole-file-system problems only while reading
    // (ext: stale bg_itable_unused hints).
    let mut issues: Vec<PathIssue> =
        fs.issues().into_iter().map(|issue| PathIssue { path: Vec::new(), issue }).collect();
    issues.extend(below);
    Ok(issues)
}

/// Like [`walk`] but below directory `root` (paths are relative to it) and without the
/// file-system-wide issues.
///
/// # Errors
/// As [`walk`]; `Corrupt` when `root` is not a directory.
pub fn walk_from(
    fs: &dyn FileSystem,
    root: NodeId,
    interrupt: &crate::progress::Interrupt,
    mut visit: impl FnMut(&Found),
) -> crate::Result<Vec<PathIssue>> {
    let mut issues = Vec::new();
    let root_stat = fs.stat(root)?;
    if root_stat.file_type != FileType::Dir {
        return Err(crate::Error::corrupt(format!(
            "the walk starts at a {}, not a directory",
            root_stat.file_type.name()
        )));
    }
    // Directories are recognised by their link key (ext: inode; ISO9660: extent), so two records
    // naming one directory extent count as a loop too.
    let mut seen_dirs: HashSet<NodeId> = HashSet::new();
    seen_dirs.insert(root_stat.link_key.unwrap_or(root));
    // Stack of (directory id, its path, depth).
    let mut stack: Vec<(NodeId, Vec<u8>, usize)> = vec![(root, Vec::new(), 0)];
    while let Some((dir, dir_path, depth)) = stack.pop() {
        interrupt.check()?;
        let listing = match fs.read_dir(dir) {
            Ok(l) => l,
            Err(e) if e.kind() == crate::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                issues.push(PathIssue {
                    path: dir_path.clone(),
                    issue: Issue::error("fs.dir-unreadable", e.to_string()),
                });
                continue;
            }
        };
        for issue in listing.issues {
            issues.push(PathIssue { path: dir_path.clone(), issue });
        }
        let mut subdirs = Vec::new();
        let mut names: HashSet<Vec<u8>> = HashSet::new();
        for entry in listing.entries {
            let Some(path) = entry_path(&dir_path, &entry, &mut names, &mut issues) else { continue };
            let stat = match fs.stat(entry.id) {
                Ok(s) => s,
                Err(e) if e.kind() == crate::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    issues.push(PathIssue { path, issue: Issue::error("fs.node-unreadable", e.to_string()) });
                    continue;
                }
            };
            let is_dir = stat.file_type == FileType::Dir;
            let dir_key = stat.link_key.unwrap_or(entry.id);
            let found = Found { path, id: entry.id, stat };
            visit(&found);
            if is_dir {
                match dir_refusal(dir_key, depth, &mut seen_dirs) {
                    Some(issue) => issues.push(PathIssue { path: found.path, issue }),
                    None => subdirs.push((entry.id, found.path, depth + 1)),
                }
            }
        }
        // Depth first in on-disk order.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(issues)
}

/// The path of `entry` below `dir_path`, or `None` (with an issue) when its name is invalid or
/// already in `names` (the directory's names so far).
fn entry_path(
    dir_path: &[u8],
    entry: &DirEntry,
    names: &mut HashSet<Vec<u8>>,
    issues: &mut Vec<PathIssue>,
) -> Option<Vec<u8>> {
    let mut path = dir_path.to_vec();
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(&entry.name);
    if entry.name.is_empty()
        || entry.name == b"."
        || entry.name == b".."
        || entry.name.contains(&b'/')
        || entry.name.contains(&0)
    {
        issues.push(PathIssue {
            path: dir_path.to_vec(),
            issue: Issue::error(
                "fs.bad-name",
                format!("an entry has an invalid name {:?}; skipped", String::from_utf8_lossy(&entry.name)),
            ),
        });
        return None;
    }
    if !names.insert(entry.name.clone()) {
        issues.push(PathIssue {
            path,
            issue: Issue::error("fs.duplicate-name", "the name appears twice in its directory; the second is skipped"),
        });
        return None;
    }
    Some(path)
}

/// Why a directory found at `depth` (recognised by `dir_key`) is not entered: seen before (a
/// loop or hard-linked directory) or too deep. `None` (and remembered in `seen_dirs`): enter it.
fn dir_refusal(dir_key: NodeId, depth: usize, seen_dirs: &mut HashSet<NodeId>) -> Option<Issue> {
    if !seen_dirs.insert(dir_key) {
        Some(Issue::error(
            "fs.dir-loop",
            "this directory is reachable by more than one path (a directory loop or hard-linked directory); it is \
             not entered again",
        ))
    } else if depth + 1 >= MAX_DEPTH {
        Some(Issue::error("fs.too-deep", format!("directories nest deeper than {MAX_DEPTH} levels; not entered")))
    } else {
        None
    }
}

/// Read a whole file into memory, refusing more than `limit_bytes`.
///
/// # Errors
/// `Corrupt` when the file is larger than the limit or shorter than it says; read errors.
pub fn read_all(reader: &dyn FileReader, limit_bytes: u64) -> crate::Result<Vec<u8>> {
    let size = reader.size_bytes();
    if size > limit_bytes {
        return Err(crate::Error::corrupt(format!("{size} bytes is more than the {limit_bytes} expected")));
    }
    let mut out = vec![0u8; size as usize];
    let mut done = 0usize;
    while done < out.len() {
        let n = reader.read_at(&mut out[done..], done as u64)?;
        if n == 0 {
            return Err(crate::Error::corrupt(format!("ends after {done} of {size} bytes")));
        }
        done += n;
    }
    Ok(out)
}

/// A read error from the image while reading `what`: reading past the end means the image is
/// truncated (`Corrupt`); anything else is `Io`.
pub(crate) fn read_err(what: String, e: std::io::Error) -> crate::Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        crate::Error::corrupt(format!("{what}: it lies past the end of the image (truncated?)"))
    } else {
        crate::Error::io(what, e)
    }
}
