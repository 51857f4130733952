//! `mount`: the file tree inside an image (or, raw, its decrypted payload as one file) served as
//! a read-only FUSE file system, through the `fuser` crate without libfuse: `mount(2)` as root,
//! the `fusermount3` binary otherwise. Everything is read on demand through the existing readers
//! ([`crate::fs::tree`] over [`crate::image::Opened::volume`], so decryption happens per read).
//!
//! ```text
//!   kernel FUSE ──> Server (fuser::Filesystem) ──> FileSystem / FileReader ──> Volume ──> image
//!                     ├─ inode table: FUSE inode ↔ NodeId (hard links share one inode)
//!                     ├─ stat and directory caches (bounded), offset-based readdir
//!                     └─ damage: EIO over the bytes a damaged map or a failed read covers
//! ```
//! Damage is never served as silent zeros: bytes a damaged block map cannot locate, and reads
//! the image fails, give `EIO` for the bytes they cover — files with a known damaged map are
//! opened with direct I/O so that a read stops exactly where the damage starts — unless
//! `allow_damaged`, which serves zeros there. Each damaged file is logged once (through the
//! caller's log function: the library never prints). Device nodes are listed, never opened
//! (`nodev`); nothing is writable. Extended attributes come from the reader (ext: in-inode and
//! block attributes, POSIX ACLs in the kernel's xattr form).

use crate::fs::tree::{Figures, FileReader, FileSystem, FileType, NodeId, Stat};
use crate::source::ByteSource;
use fuser::{
    Errno, FileAttr, FileHandle, FopenFlags, Generation, INodeNo, KernelConfig, LockOwner, MountOption, OpenAccMode,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr,
    Request, SessionACL,
};
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// How long the kernel may cache names and attributes: the image never changes under a mount.
const TTL: Duration = Duration::from_secs(3600);
/// Name of the one file a raw mount shows.
pub const RAW_NAME: &str = "payload.img";
/// `st_blksize` reported for files: tools size their reads by it.
const BLKSIZE: u32 = 128 << 10;
/// Cached stats before the cache is emptied and refilled (bounded memory on huge trees).
const MAX_CACHED_STATS: usize = 200_000;
/// Cached directory entries (over all cached directories) before the cache is emptied.
const MAX_CACHED_ENTRIES: usize = 1_000_000;
/// Unit in which `allow_damaged` retries a read that failed.
const RETRY_BYTES: usize = 4096;
/// Threads serving requests (the kernel sends readahead requests in parallel).
const THREADS: usize = 2;
/// Read-ahead asked for this mount's files (the FUSE connection's bdi `read_ahead_kb`, which the
/// kernel starts at 128 KiB and lets only root raise): sequential reads then arrive as requests
/// of up to 1 MiB, FUSE's 256-page limit, instead of 128 KiB ones.
const READ_AHEAD_KB: u64 = 1024;
/// The subtype the kernel shows (`fuse.loopkit` in /proc/mounts); `unmount` looks for it.
pub const SUBTYPE: &str = "loopkit";

/// What a mount serves.
pub enum Content {
    /// The file tree of a file system; `fallback` answers `statfs` when the reader records no
    /// figures (ISO9660).
    Tree {
        /// The file system.
        fs: &'static dyn FileSystem,
        /// Size figures from identification.
        fallback: Option<Figures>,
    },
    /// The decrypted payload as one read-only file, [`RAW_NAME`].
    Raw(&'static dyn ByteSource),
}

/// Mount options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve zeros where data is damaged instead of `EIO`.
    pub allow_damaged: bool,
    /// Let other users in (`allow_other`; the image's permissions are then enforced by the
    /// kernel, `default_permissions`). Needs `user_allow_other` in /etc/fuse.conf for a normal
    /// user.
    pub allow_other: bool,
    /// The source shown in /proc/mounts after `loopkit:` (the image path).
    pub fs_name: String,
}

/// Where remarks about damage go (one line each).
pub type Log = Box<dyn Fn(&str) + Send + Sync>;

/// One directory, listed once: names in on-disk order. What readdir needs of each entry (its
/// inode number and type, which take a read of the entry's inode) is found when a readdir page or
/// a lookup first reaches it, so the first page of a huge directory does not wait for every
/// inode in it.
struct Dir {
    entries: Vec<Entry>,
    by_name: HashMap<Vec<u8>, usize>,
}

struct Entry {
    name: Vec<u8>,
    id: NodeId,
    /// `(inode number, type)` once resolved; `None` inside when the entry's inode is unreadable
    /// (the entry is then left out of listings and lookups fail with its error).
    resolved: std::sync::OnceLock<Option<(u64, fuser::FileType)>>,
}

/// Identity of a node for the inode table: hard links of one file share a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Node(NodeId),
    Link(u64),
}

#[derive(Default)]
struct Tables {
    ino_of: HashMap<Key, u64>,
    node_of: HashMap<u64, NodeId>,
    next_ino: u64,
    stats: HashMap<NodeId, Stat>,
    dirs: HashMap<NodeId, Arc<Dir>>,
    cached_entries: usize,
}

/// An open file.
struct Handle {
    node: NodeId,
    /// One reader per server thread (a reader is not shareable): parallel readahead requests
    /// on one file each take a free one. Empty for the raw payload.
    readers: Vec<Mutex<Box<dyn FileReader>>>,
    size: u64,
    /// Byte ranges the reader could not locate (sorted).
    damaged: Vec<Range<u64>>,
    /// Opened with direct I/O (reads may be short: they stop where damage starts).
    direct: bool,
}

/// The FUSE server.
pub struct Server {
    content: Content,
    opts: Options,
    log: Log,
    uid: u32,
    gid: u32,
    tables: Mutex<Tables>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Nodes whose damage was logged (once per file), or that failed a read (opened with
    /// direct I/O from then on).
    logged: Mutex<HashSet<NodeId>>,
    /// The mount point (absolute), once mounted.
    dir: std::sync::OnceLock<PathBuf>,
    /// Whether the read-ahead was raised (or tried: once per mount).
    read_ahead_tried: std::sync::atomic::AtomicBool,
}

thread_local! {
    /// The read buffer of a server thread.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn kind_of(t: FileType) -> fuser::FileType {
    match t {
        FileType::File => fuser::FileType::RegularFile,
        FileType::Dir => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::Chardev => fuser::FileType::CharDevice,
        FileType::Blockdev => fuser::FileType::BlockDevice,
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::Socket => fuser::FileType::Socket,
    }
}

fn time_of(secs: Option<i64>) -> SystemTime {
    match secs {
        Some(s) if s >= 0 => SystemTime::UNIX_EPOCH + Duration::from_secs(s as u64),
        Some(s) => {
            SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(s.unsigned_abs())).unwrap_or(SystemTime::UNIX_EPOCH)
        }
        None => SystemTime::UNIX_EPOCH,
    }
}

/// The kernel's `new_encode_dev` (what FUSE's `rdev` carries).
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn errno_of(e: &crate::Error) -> Errno {
    match e.kind() {
        crate::ErrorKind::Interrupted => Errno::EINTR,
        _ => Errno::EIO,
    }
}

/// The sorted, merged ranges of `r` that intersect `0..size`.
fn normalise(mut r: Vec<Range<u64>>, size: u64) -> Vec<Range<u64>> {
    r.retain(|x| x.start < x.end.min(size));
    r.sort_by_key(|x| x.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(r.len());
    for x in r {
        let x = x.start..x.end.min(size);
        match out.last_mut() {
            Some(l) if x.start <= l.end => l.end = l.end.max(x.end),
            _ => out.push(x),
        }
    }
    out
}

/// The parts of `0..size` outside `data` (both sorted).
fn holes(data: &[Range<u64>], size: u64) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0;
    for d in data {
        if d.start > at {
            out.push(at..d.start.min(size));
        }
        at = at.max(d.end);
    }
    if at < size {
        out.push(at..size);
    }
    out
}

impl Server {
    /// A server for `content`; `log` receives one line per damaged file.
    pub fn new(content: Content, opts: Options, log: Log) -> Server {
        Server {
            content,
            opts,
            log,
            uid: rustix::process::getuid().as_raw(),
            gid: rustix::process::getgid().as_raw(),
            tables: Mutex::new(Tables { next_ino: 1 << 48, ..Tables::default() }),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            logged: Mutex::new(HashSet::new()),
            dir: std::sync::OnceLock::new(),
            read_ahead_tried: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn tree(&self) -> Option<&'static dyn FileSystem> {
        match self.content {
            Content::Tree { fs, .. } => Some(fs),
            Content::Raw(_) => None,
        }
    }

    fn log_once(&self, node: NodeId, what: &str) {
        if lock(&self.logged).insert(node) {
            (self.log)(what);
        }
    }

    /// The node behind a FUSE inode number.
    fn node(&self, ino: INodeNo) -> Option<NodeId> {
        let fs = self.tree()?;
        if ino.0 == 1 {
            return Some(fs.root());
        }
        lock(&self.tables).node_of.get(&ino.0).copied()
    }

    /// The FUSE inode number of a node: the reader's own number (ext: the inode) when it is
    /// free, one shared number for all names of a hard-linked file.
    fn ino(&self, fs: &dyn FileSystem, id: NodeId, st: &Stat) -> u64 {
        if id == fs.root() {
            return 1;
        }
        let key = match st.link_key {
            Some(k) if st.file_type == FileType::File && st.nlink > 1 => Key::Link(k),
            _ => Key::Node(id),
        };
        let mut t = lock(&self.tables);
        if let Some(&i) = t.ino_of.get(&key) {
            return i;
        }
        let want = match key {
            Key::Node(n) | Key::Link(n) => n,
        };
        let ino = if (2..1 << 48).contains(&want) && !t.node_of.contains_key(&want) {
            want
        } else {
            t.next_ino += 1;
            t.next_ino
        };
        t.ino_of.insert(key, ino);
        t.node_of.insert(ino, id);
        ino
    }

    fn stat(&self, fs: &dyn FileSystem, id: NodeId) -> crate::Result<Stat> {
        if let Some(s) = lock(&self.tables).stats.get(&id) {
            return Ok(s.clone());
        }
        let s = fs.stat(id)?;
        let mut t = lock(&self.tables);
        if t.stats.len() >= MAX_CACHED_STATS {
            t.stats.clear();
        }
        t.stats.insert(id, s.clone());
        Ok(s)
    }

    fn attr(&self, ino: u64, st: &Stat) -> FileAttr {
        let perm = st.mode.unwrap_or(if st.file_type == FileType::Dir { 0o555 } else { 0o444 });
        let t = time_of(st.mtime);
        FileAttr {
            ino: INodeNo(ino),
            size: st.size_bytes,
            blocks: st.size_bytes.div_ceil(512),
            atime: t,
            mtime: t,
            ctime: if st.ctime.is_some() { time_of(st.ctime) } else { t },
            crtime: t,
            kind: kind_of(st.file_type),
            perm: (perm & 0o7777) as u16,
            nlink: st.nlink.max(1),
            uid: st.uid.unwrap_or(self.uid),
            gid: st.gid.unwrap_or(self.gid),
            rdev: st.rdev.map_or(0, |(a, b)| encode_dev(a, b)),
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    fn raw_attr(&self, ino: u64) -> FileAttr {
        let (kind, perm, size, nlink) = match (ino, &self.content) {
            (2, Content::Raw(src)) => (fuser::FileType::RegularFile, 0o444, src.size_bytes(), 1),
            _ => (fuser::FileType::Directory, 0o555, 0, 2),
        };
        let now = SystemTime::now();
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    /// A directory's entries, listed once and cached. Names no path can hold (empty, `.`, `..`,
    /// with `/` or NUL) and repeated names are left out, as the walker does.
    fn dir(&self, fs: &dyn FileSystem, id: NodeId) -> crate::Result<Arc<Dir>> {
        if let Some(d) = lock(&self.tables).dirs.get(&id) {
            return Ok(d.clone());
        }
        let listing = fs.read_dir(id)?;
        if listing.issues.iter().any(|i| i.is_error()) {
            let first = listing.issues.iter().find(|i| i.is_error()).map(|i| i.message.clone()).unwrap_or_default();
            self.log_once(id, &format!("directory (node {id}) is damaged, entries may be missing: {first}"));
        }
        let mut dir = Dir { entries: Vec::with_capacity(listing.entries.len()), by_name: HashMap::new() };
        for e in listing.entries {
            if e.name.is_empty()
                || e.name == b"."
                || e.name == b".."
                || e.name.contains(&b'/')
                || e.name.contains(&0)
                || dir.by_name.contains_key(&e.name)
            {
                continue;
            }
            dir.by_name.insert(e.name.clone(), dir.entries.len());
            dir.entries.push(Entry { name: e.name, id: e.id, resolved: std::sync::OnceLock::new() });
        }
        let dir = Arc::new(dir);
        let mut t = lock(&self.tables);
        if t.cached_entries + dir.entries.len() > MAX_CACHED_ENTRIES {
            t.dirs.clear();
            t.cached_entries = 0;
        }
        t.cached_entries += dir.entries.len();
        t.dirs.insert(id, dir.clone());
        Ok(dir)
    }

    /// An entry's inode number and type, read on first use; `None` (logged once) when its inode
    /// cannot be read.
    fn resolve(&self, fs: &dyn FileSystem, e: &Entry) -> Option<(u64, fuser::FileType)> {
        *e.resolved.get_or_init(|| match self.stat(fs, e.id) {
            Ok(st) => Some((self.ino(fs, e.id, &st), kind_of(st.file_type))),
            Err(_) => {
                self.log_once(e.id, &format!("{}: unreadable entry left out", String::from_utf8_lossy(&e.name)));
                None
            }
        })
    }

    fn open_file(&self, node: NodeId) -> crate::Result<Handle> {
        let Some(fs) = self.tree() else {
            return Ok(Handle {
                node,
                readers: Vec::new(),
                size: self.raw_attr(2).size,
                damaged: Vec::new(),
                direct: lock(&self.logged).contains(&node),
            });
        };
        let reader = fs.open(node)?;
        let size = reader.size_bytes();
        let damaged = match reader.damaged_ranges() {
            Some(r) => normalise(r, size),
            None => {
                let data = normalise(reader.data_ranges().unwrap_or_default(), size);
                holes(&data, size)
            }
        };
        if !damaged.is_empty() {
            let why: Vec<String> = reader.issues().iter().filter(|i| i.is_error()).map(|i| i.message.clone()).collect();
            let bytes: u64 = damaged.iter().map(|r| r.end - r.start).sum();
            self.log_once(
                node,
                &format!(
                    "node {node}: {bytes} bytes cannot be located ({}); {}",
                    why.join("; "),
                    if self.opts.allow_damaged { "served as zeros" } else { "reading them gives EIO" }
                ),
            );
        }
        let direct = !damaged.is_empty() || lock(&self.logged).contains(&node);
        let mut readers = vec![Mutex::new(reader)];
        // Small files are read in one request: one reader is enough.
        if size > u64::from(BLKSIZE) {
            for _ in 1..THREADS {
                readers.push(Mutex::new(fs.open(node)?));
            }
        }
        Ok(Handle { node, readers, size, damaged, direct })
    }

    fn read_some(&self, h: &Handle, buf: &mut [u8], offset: u64) -> crate::Result<usize> {
        match (h.readers.first(), &self.content) {
            (Some(first), _) => {
                let free = h.readers.iter().find_map(|r| r.try_lock().ok());
                free.unwrap_or_else(|| lock(first)).read_at(buf, offset)
            }
            (None, Content::Raw(src)) => src
                .read_at(buf, offset)
                .map_err(|e| crate::Error::io(format!("reading the payload at byte {offset}"), e)),
            (None, Content::Tree { .. }) => Err(crate::Error::invalid("no reader")),
        }
    }

    /// Fill `buf` from `offset`; `Err((done, error))` when a read fails after `done` bytes.
    fn fill(&self, h: &Handle, buf: &mut [u8], offset: u64) -> Result<(), (usize, crate::Error)> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_some(h, &mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    let e = crate::Error::corrupt(format!("the data ends at byte {}", offset + done as u64));
                    return Err((done, e));
                }
                Ok(n) => done += n,
                Err(e) => return Err((done, e)),
            }
        }
        Ok(())
    }

    /// Read up to `size` bytes at `offset` into `buf` (grown as needed, never shrunk: one
    /// buffer per server thread, so a request costs no allocation and no zeroing); the count.
    fn do_read(&self, h: &Handle, offset: u64, size: u32, buf: &mut Vec<u8>) -> Result<usize, Errno> {
        if offset >= h.size {
            return Ok(0);
        }
        let mut end = h.size.min(offset.saturating_add(u64::from(size)));
        if !self.opts.allow_damaged {
            let i = h.damaged.partition_point(|r| r.end <= offset);
            if let Some(r) = h.damaged.get(i).filter(|r| r.start < end) {
                if r.start <= offset || !h.direct {
                    return Err(Errno::EIO);
                }
                end = r.start;
            }
        }
        let len = (end - offset) as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let buf = &mut buf[..len];
        match self.fill(h, buf, offset) {
            Ok(()) => Ok(len),
            Err((done, e)) => {
                if e.kind() == crate::ErrorKind::Interrupted {
                    return Err(Errno::EINTR);
                }
                let first = lock(&self.logged).insert(h.node);
                if first {
                    (self.log)(&format!(
                        "node {}: read failed at byte {}: {e}; {}",
                        h.node,
                        offset + done as u64,
                        if self.opts.allow_damaged { "served as zeros" } else { "reading it gives EIO" }
                    ));
                }
                if self.opts.allow_damaged {
                    // Keep what can be read: retry in small pieces, zeros where not.
                    let mut p = done;
                    while p < buf.len() {
                        let k = (buf.len() - p).min(RETRY_BYTES);
                        if self.fill(h, &mut buf[p..p + k], offset + p as u64).is_err() {
                            buf[p..p + k].fill(0);
                        }
                        p += k;
                    }
                    Ok(len)
                } else if h.direct && done > 0 {
                    Ok(done)
                } else {
                    Err(errno_of(&e))
                }
            }
        }
    }

    fn figures(&self) -> Figures {
        match &self.content {
            Content::Tree { fs, fallback } => fs.figures().or(*fallback).unwrap_or_default(),
            Content::Raw(src) => {
                Figures { block_size: 4096, blocks: src.size_bytes().div_ceil(4096), ..Figures::default() }
            }
        }
    }
}

impl fuser::Filesystem for Server {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // As much readahead as the kernel allows: sequential reads become few large requests.
        if let Err(max) = config.set_max_readahead(4 << 20) {
            let _ = config.set_max_readahead(max);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(fs) = self.tree() else {
            return if parent.0 == 1 && name == RAW_NAME {
                reply.entry(&TTL, &self.raw_attr(2), Generation(0))
            } else {
                reply.error(Errno::ENOENT)
            };
        };
        let Some(p) = self.node(parent) else { return reply.error(Errno::ENOENT) };
        let dir = match self.dir(fs, p) {
            Ok(d) => d,
            Err(e) => return reply.error(errno_of(&e)),
        };
        let Some(e) = dir.by_name.get(name.as_bytes()).and_then(|&i| dir.entries.get(i)) else {
            return reply.error(Errno::ENOENT);
        };
        // An entry whose inode cannot be read is not there (as it is missing from listings).
        let Some((ino, _)) = self.resolve(fs, e) else { return reply.error(Errno::ENOENT) };
        match self.stat(fs, e.id) {
            Ok(st) => reply.entry(&TTL, &self.attr(ino, &st), Generation(0)),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let Some(fs) = self.tree() else {
            return if ino.0 <= 2 { reply.attr(&TTL, &self.raw_attr(ino.0)) } else { reply.error(Errno::ENOENT) };
        };
        let Some(id) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        match self.stat(fs, id) {
            Ok(st) => reply.attr(&TTL, &self.attr(ino.0, &st)),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let (Some(fs), Some(id)) = (self.tree(), self.node(ino)) else { return reply.error(Errno::EINVAL) };
        match fs.readlink(id) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let node = match self.tree() {
            Some(fs) => {
                let Some(id) = self.node(ino) else { return reply.error(Errno::ENOENT) };
                match self.stat(fs, id) {
                    Ok(st) if st.file_type == FileType::File => id,
                    Ok(st) if st.file_type == FileType::Dir => return reply.error(Errno::EISDIR),
                    Ok(_) => return reply.error(Errno::ENXIO),
                    Err(e) => return reply.error(errno_of(&e)),
                }
            }
            None if ino.0 == 2 => 2,
            None => return reply.error(Errno::EISDIR),
        };
        let h = match self.open_file(node) {
            Ok(h) => h,
            Err(e) => {
                self.log_once(node, &format!("node {node}: cannot be opened: {e}"));
                return reply.error(errno_of(&e));
            }
        };
        // After FUSE_INIT (which would lower it again), before the first file's readahead.
        if !self.read_ahead_tried.swap(true, Ordering::Relaxed)
            && let Some(dir) = self.dir.get()
        {
            let _ = raise_read_ahead(dir, READ_AHEAD_KB);
        }
        let flags = if h.direct { FopenFlags::FOPEN_DIRECT_IO } else { FopenFlags::FOPEN_KEEP_CACHE };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(h));
        reply.opened(FileHandle(fh), flags);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(h) = lock(&self.handles).get(&fh.0).cloned() else { return reply.error(Errno::EBADF) };
        READ_BUF.with_borrow_mut(|buf| match self.do_read(&h, offset, size, buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(e),
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let Some(fs) = self.tree() else {
            if ino.0 != 1 {
                return reply.error(Errno::ENOTDIR);
            }
            let all = [
                (1, fuser::FileType::Directory, "."),
                (1, fuser::FileType::Directory, ".."),
                (2, fuser::FileType::RegularFile, RAW_NAME),
            ];
            for (i, (n, k, name)) in all.iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(*n), i as u64 + 1, *k, name) {
                    break;
                }
            }
            return reply.ok();
        };
        let Some(id) = self.node(ino) else { return reply.error(Errno::ENOENT) };
        let dir = match self.dir(fs, id) {
            Ok(d) => d,
            Err(e) => return reply.error(errno_of(&e)),
        };
        // Offsets: 0 ".", 1 "..", 2 + i the i-th entry; each entry carries the next one's.
        let mut at = offset;
        while at < 2 {
            let name = if at == 0 { "." } else { ".." };
            if reply.add(INodeNo(if at == 0 { ino.0 } else { 1 }), at + 1, fuser::FileType::Directory, name) {
                return reply.ok();
            }
            at += 1;
        }
        for (i, e) in dir.entries.iter().enumerate().skip((at - 2) as usize) {
            let Some((ino, kind)) = self.resolve(fs, e) else { continue };
            if reply.add(INodeNo(ino), i as u64 + 3, kind, OsStr::from_bytes(&e.name)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let f = self.figures();
        let bs = f.block_size.max(512);
        reply.statfs(f.blocks, f.free_blocks, f.free_blocks, f.files, f.free_files, bs, 255, bs);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let (Some(fs), Some(id)) = (self.tree(), self.node(ino)) else { return reply.error(Errno::NO_XATTR) };
        let all = match fs.xattrs(id) {
            Ok(a) => a,
            Err(e) => return reply.error(errno_of(&e)),
        };
        match all.into_iter().find(|(n, _)| n == name.as_bytes()) {
            None => reply.error(Errno::NO_XATTR),
            Some((_, v)) => xattr_reply(&v, size, reply),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let names = match (self.tree(), self.node(ino)) {
            (Some(fs), Some(id)) => match fs.xattrs(id) {
                Ok(a) => a
                    .into_iter()
                    .flat_map(|(mut n, _)| {
                        n.push(0);
                        n
                    })
                    .collect(),
                Err(e) => return reply.error(errno_of(&e)),
            },
            _ => Vec::new(),
        };
        xattr_reply(&names, size, reply);
    }
}

/// Answer an xattr request: the size when asked with 0, the bytes when they fit, else ERANGE.
fn xattr_reply(v: &[u8], size: u32, reply: ReplyXattr) {
    match u32::try_from(v.len()) {
        Ok(n) if size == 0 => reply.size(n),
        Ok(n) if n <= size => reply.data(v),
        _ => reply.error(Errno::ERANGE),
    }
}

/// A mounted, not yet serving file system.
pub struct Mounted {
    session: fuser::Session<Server>,
}

/// Ends a mount from another thread (a signal handler's).
pub struct Unmounter(fuser::SessionUnmounter);

impl Unmounter {
    /// Unmount; the serving loop then returns.
    ///
    /// # Errors
    /// The unmount's OS error (`EBUSY` while files are open).
    pub fn unmount(&mut self) -> crate::Result<()> {
        self.0.unmount().map_err(|e| crate::Error::io("unmounting", e))
    }
}

/// Refuse a mount point that is not an empty directory (or is a dead FUSE mount).
///
/// # Errors
/// `InvalidInput` for a missing path or a non-directory; `Unsafe` for a non-empty directory;
/// `Io` for a dead mount (say `loopkit umount`).
pub fn check_mount_point(dir: &Path) -> crate::Result<()> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(crate::Error::io(
                format!(
                    "{}: a mount whose server has stopped is still there; run `loopkit umount {}` first",
                    dir.display(),
                    dir.display()
                ),
                e,
            ));
        }
        Err(e) => return Err(crate::Error::io(format!("mount point {}", dir.display()), e)),
    };
    if !meta.is_dir() {
        return Err(crate::Error::invalid(format!("{} is not a directory", dir.display())));
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| crate::Error::io(format!("listing {}", dir.display()), e))?;
    if entries.next().is_some() {
        return Err(crate::Error::new(
            crate::ErrorKind::Unsafe,
            format!("{} is not empty; refusing to mount over its contents", dir.display()),
        ));
    }
    Ok(())
}

/// Mount `server` on `dir` (checked with [`check_mount_point`] first).
///
/// # Errors
/// The mount point's problems; `Io` when FUSE cannot mount (no /dev/fuse, no fusermount3).
pub fn mount(server: Server, dir: &Path) -> crate::Result<Mounted> {
    check_mount_point(dir)?;
    if let Ok(abs) = absolute(dir) {
        let _ = server.dir.set(abs);
    }
    let mut config = fuser::Config::default();
    config.n_threads = Some(THREADS);
    config.clone_fd = true;
    // The source /proc/mounts shows: `loopkit:IMAGE` (as root the type is plain `fuse`, so
    // `unmount` recognises loopkit's mounts by this prefix).
    let name = format!("{SUBTYPE}:{}", server.opts.fs_name.replace(',', "_"));
    config.mount_options = vec![
        MountOption::FSName(name),
        MountOption::Subtype(SUBTYPE.into()),
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ];
    if server.opts.allow_other {
        config.acl = SessionACL::All;
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    let session = fuser::Session::new(server, dir, &config).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (is the fuse3 package, which provides fusermount3, installed?)"
        } else {
            ""
        };
        crate::Error::io(format!("mounting FUSE on {}{hint}", dir.display()), e)
    })?;
    Ok(Mounted { session })
}

impl Mounted {
    /// Something that ends the mount from another thread.
    pub fn unmounter(&mut self) -> Unmounter {
        Unmounter(self.session.unmount_callable())
    }

    /// Serve requests until the file system is unmounted.
    ///
    /// # Errors
    /// `Io` when the FUSE channel fails.
    pub fn run(self) -> crate::Result<()> {
        self.session.run().map_err(|e| crate::Error::io("serving the FUSE mount", e))
    }
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> Vec<u8> {
    crate::remap::preflight::unescape_mountinfo(s)
}

/// What /proc/self/mountinfo says about a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The device number, `MAJOR:MINOR` (what `stat` of the mount point gives as `st_dev`).
    pub device: String,
    /// The file-system type: `fuse.loopkit` (mounted through fusermount3) or `fuse` (as root).
    pub fstype: String,
    /// The source: `loopkit:IMAGE`.
    pub source: String,
}

/// The topmost mount on `dir` (absolute), from /proc/self/mountinfo (a `stat` of the mount
/// point from the server would be a request to this very server).
///
/// # Errors
/// `Io` when mountinfo cannot be read.
pub fn mount_entry(dir: &Path) -> crate::Result<Option<MountEntry>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| crate::Error::io("reading /proc/self/mountinfo", e))?;
    Ok(info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        if f.get(4).map(|x| unescape(x))? != dir.as_os_str().as_bytes() {
            return None;
        }
        let sep = f.iter().position(|x| *x == "-")?;
        Some(MountEntry {
            device: (*f.get(2)?).to_string(),
            fstype: (*f.get(sep + 1)?).to_string(),
            source: String::from_utf8_lossy(&unescape(f.get(sep + 2)?)).into_owned(),
        })
    }))
}

/// Raise the read-ahead of the mount on `dir` to at least `kb` KiB through its bdi in sysfs;
/// the value now in force. Root only (the file is root's, mode 0644): a normal user's mount keeps
/// the kernel's 128 KiB and this fails with `EACCES`.
///
/// # Errors
/// `Io` when the mount or its bdi cannot be found or written.
pub fn raise_read_ahead(dir: &Path, kb: u64) -> crate::Result<u64> {
    let dev = mount_entry(dir)?
        .map(|m| m.device)
        .ok_or_else(|| crate::Error::invalid(format!("{}: not in /proc/self/mountinfo", dir.display())))?;
    let path = PathBuf::from(format!("/sys/class/bdi/{dev}/read_ahead_kb"));
    let now = std::fs::read_to_string(&path).map_err(|e| crate::Error::io(format!("reading {}", path.display()), e))?;
    let now: u64 =
        now.trim().parse().map_err(|_| crate::Error::corrupt(format!("{}: not a number", path.display())))?;
    if now >= kb {
        return Ok(now);
    }
    std::fs::write(&path, format!("{kb}\n")).map_err(|e| crate::Error::io(format!("writing {}", path.display()), e))?;
    Ok(kb)
}

/// Whether `dir` (absolute) is a loopkit FUSE mount in this mount namespace.
fn is_loopkit_mount(dir: &Path) -> crate::Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| crate::Error::io("reading /proc/self/mountinfo", e))?;
    let want = format!("fuse.{SUBTYPE}");
    Ok(info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-");
        let fstype = sep.and_then(|s| f.get(s + 1)).copied().unwrap_or("");
        let source = sep.and_then(|s| f.get(s + 2)).map(|x| unescape(x)).unwrap_or_default();
        f.get(4).is_some_and(|mp| unescape(mp) == dir.as_os_str().as_bytes())
            && (fstype == want || (fstype == "fuse" && source.starts_with(format!("{SUBTYPE}:").as_bytes())))
    }))
}

/// The absolute path of `dir` without touching `dir` itself (a dead mount cannot be stat'ed).
fn absolute(dir: &Path) -> crate::Result<PathBuf> {
    let name = dir.file_name().ok_or_else(|| crate::Error::invalid(format!("{}: not a mount point", dir.display())))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = std::fs::canonicalize(parent).map_err(|e| crate::Error::io(format!("{}", parent.display()), e))?;
    Ok(parent.join(name))
}

/// Unmount the loopkit FUSE mount on `dir`, also one whose server died ("transport endpoint is
/// not connected"): `umount2` as root, `fusermount3 -u` otherwise.
///
/// # Errors
/// `InvalidInput` when `dir` is not a loopkit mount; `Io` when the unmount fails (`EBUSY`: files
/// are open).
pub fn unmount(dir: &Path) -> crate::Result<()> {
    let abs = absolute(dir)?;
    if !is_loopkit_mount(&abs)? {
        return Err(crate::Error::invalid(format!("{} is not a loopkit mount", dir.display())));
    }
    if rustix::process::geteuid().is_root() {
        return rustix::mount::unmount(&abs, rustix::mount::UnmountFlags::empty())
            .map_err(|e| crate::Error::io(format!("unmounting {}", abs.display()), e.into()));
    }
    let mut last = None;
    for bin in ["fusermount3", "fusermount"] {
        match std::process::Command::new(bin).arg("-u").arg("--").arg(&abs).output() {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                return Err(crate::Error::io(
                    format!("{bin} -u {}", abs.display()),
                    std::io::Error::other(String::from_utf8_lossy(&o.stderr).trim().to_string()),
                ));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(crate::Error::io(
        "running fusermount3 (install the fuse3 package)",
        last.unwrap_or_else(|| std::io::Error::other("not found")),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(normalise(vec![5..9, 0..2, 1..3, 20..30], 25), vec![0..3, 5..9, 20..25]);
        assert_eq!(holes(&[2..4, 6..8], 10), vec![0..2, 4..6, 8..10]);
        assert_eq!(holes(&[], 3), vec![0..3]);
        assert_eq!(unescape("/a\\040b"), b"/a b".to_vec());
        assert_eq!(encode_dev(8, 1), 0x801);
    }
}
