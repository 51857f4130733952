//! The remap engine: reads and writes an image file by sending I/O straight to the disk blocks
//! the file occupies (aligned `O_DIRECT` on the raw device), zeros for holes and unwritten
//! extents, and the file itself (`O_DIRECT`) for everything else. Independent of any front end:
//! [`Engine`] is a [`ByteSource`] + [`ByteSink`], and [`Engine::plan_read`] /
//! [`Engine::plan_write`] cut a request into pieces for an asynchronous front end (ublk).
//!
//! Safety rules (docs/formats/remap.md): the file is the only open file description of the image
//! (the caller may keep duplicates of it: [`Engine::open_file`]) and holds
//! a write lease; it is fsynced and its page cache dropped before raw I/O starts; the extent map
//! is filled lazily with FIEMAP; a write into anything but a plain mapped extent goes through the
//! file under an interval lock, then exactly the written range is re-mapped (what is still not
//! plain-mapped becomes via-file, never zero, so written data is never hidden); a lease break
//! switches every range to the file before the lease is released; flush = device cache flush plus
//! `fdatasync` of the file, each when writes to it completed since its last sync (generation
//! counters, so several queues cannot skip each other's sync); a raw FUA write first `fdatasync`s
//! the image if file-path writes (hole fills) completed since its last sync, a FUA write through
//! the file carries `RWF_DSYNC`; mtime is updated at close and, so
//! that backups and inotify see raw writes even after a crash, before the first raw write of
//! every [`MTIME_PERIOD_SECS`]. After the lease is granted the engine looks for descriptors the
//! lease cannot see ([`preflight::other_holders`]) and re-runs preflight. The lease is re-checked
//! (`F_GETLEASE`) at every flush and by [`Engine::check_lease`] (the attach server calls it on a
//! timer): a lost lease stops raw I/O at once (`remap.lease-lost`). The file system's state is
//! checked the same way and before raw writes ([`Engine::check_fs`]): read-only or failed stops
//! raw I/O (`remap.fs-read-only`, `remap.fs-error`); a write that a frozen file system would
//! hold goes through the file instead ([`crate::sys::FreezeProbe`]). FIEMAP answers fail closed:
//! overlaps and gaps that `SEEK_DATA` does not confirm as holes go through the file.

use super::lease::{self, LeaseHolder};
use super::preflight::{self, Preflight};
use crate::extent::{Extent, ExtentFlags, ExtentMap, SegKind, fiemap};
use crate::output::direct::{AlignedBuf, read_at_aligned, write_at_aligned};
use crate::source::{ByteSink, ByteSource, sink::check_range};
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// How to open an engine.
#[derive(Debug, Clone)]
pub struct Options {
    /// Open the image and the device read-only; writes fail with `EROFS`.
    pub read_only: bool,
    /// Bytes of extent map filled per FIEMAP pass (lazily, around the first access).
    pub fill_window: u64,
    /// Test seam: called by [`Engine::open_file`] at each [`OpenPhase`], so that a test can
    /// change the image exactly there (another process's truncate, `chattr`…). `None` outside
    /// tests.
    #[doc(hidden)]
    pub open_hook: Option<OpenHook>,
}

impl Default for Options {
    fn default() -> Self {
        Options { read_only: false, fill_window: 64 << 20, open_hook: None }
    }
}

/// Where [`Engine::open_file`] calls [`Options::open_hook`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenPhase {
    /// Preflight passed and the device is open; the lease is not taken yet.
    BeforeLease,
    /// The lease is taken; the descriptor scan and the second preflight have not run yet.
    AfterLease,
}

/// A test seam of [`Options`]: a callback for each [`OpenPhase`].
#[doc(hidden)]
#[derive(Clone)]
pub struct OpenHook(pub Arc<dyn Fn(OpenPhase) + Send + Sync>);

impl std::fmt::Debug for OpenHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenHook")
    }
}

/// Where a piece of a planned request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// `len` bytes at byte `offset` of the raw device ([`Engine::device_fd`]).
    Device {
        /// Device byte offset.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// `len` bytes at byte `offset` of the image file ([`Engine::file_fd`], `O_DIRECT`).
    File {
        /// File byte offset.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// `len` bytes of zeros (reads only).
    Zero {
        /// Length.
        len: u64,
    },
}

impl Piece {
    /// The piece's length.
    pub fn len(&self) -> u64 {
        match *self {
            Piece::Device { len, .. } | Piece::File { len, .. } | Piece::Zero { len } => len,
        }
    }

    /// Whether the piece is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps a plan's device offsets valid until the I/O completes (a lease break waits for every
/// guard to drop before the lease is released).
pub struct Guard {
    inner: Arc<Inner>,
    /// What the planned I/O writes: its completion (this guard dropping) counts as a write in
    /// that target's generation.
    writes: Option<Written>,
    /// The discard epoch the guard was entered in.
    epoch: usize,
}

/// Which descriptor a planned write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Device,
    File,
}

/// What a plan or a file-path write does when part of its range is held by a file-path write
/// or a discard: wait for it (threads that hold no guard), or fail at once with `WouldBlock`
/// and hold nothing (a ublk queue thread, whose own requests' guards a discard may be waiting
/// for: it must go on completing them, and retries later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Block,
    NoWait,
}

fn would_block() -> io::Error {
    io::Error::from(io::ErrorKind::WouldBlock)
}

impl Drop for Guard {
    fn drop(&mut self) {
        // The I/O has completed (or failed): a sync that starts from now on covers it.
        match self.writes {
            Some(Written::Device) => self.inner.dev_gen.completed(),
            Some(Written::File) => self.inner.file_gen.completed(),
            None => {}
        }
        self.inner.epoch_inflight[self.epoch & 1].fetch_sub(1, Ordering::SeqCst);
        self.inner.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Write generations of one target (the raw device or the image file). Every write to the
/// target, once it has completed, advances `done`; a sync samples `done` before it starts and,
/// once it succeeded, raises `synced` to that sample. A sync can only make durable what had
/// completed before it started, so counting at completion (not at issue) is what lets several
/// queues share the counters: a FUA or FLUSH that needs generation `g` is covered exactly when
/// `synced >= g`, whatever ran in between on other threads.
#[derive(Debug, Default)]
struct Generations {
    done: AtomicU64,
    synced: AtomicU64,
}

impl Generations {
    fn completed(&self) {
        self.done.fetch_add(1, Ordering::SeqCst);
    }

    /// `Some(ticket)` when writes completed since the last sync: sync, then [`Self::covered`].
    fn dirty(&self) -> Option<u64> {
        let g = self.done.load(Ordering::SeqCst);
        (g > self.synced.load(Ordering::SeqCst)).then_some(g)
    }

    fn covered(&self, ticket: u64) {
        self.synced.fetch_max(ticket, Ordering::SeqCst);
    }
}

/// Which target a sync ticket ([`Engine::sync_ticket`]) is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncTarget {
    /// The raw device (a cache flush).
    Device,
    /// The image file (`fdatasync`: data and allocation metadata).
    File,
}

/// Counters (monotonic; for `--list`, tests and benchmarks).
#[derive(Debug, Default)]
pub struct Stats {
    /// Bytes read from the raw device.
    pub device_read: AtomicU64,
    /// Bytes written to the raw device.
    pub device_written: AtomicU64,
    /// Bytes read through the file.
    pub file_read: AtomicU64,
    /// Bytes written through the file.
    pub file_written: AtomicU64,
    /// Bytes of zeros served for holes and unwritten extents.
    pub zero_read: AtomicU64,
    /// FIEMAP passes (lazy fills and re-maps).
    pub fiemap_passes: AtomicU64,
    /// Writes that went through the file and re-mapped their range.
    pub remaps: AtomicU64,
    /// mtime/ctime updates made before raw writes.
    pub mtime_bumps: AtomicU64,
    /// Device cache flushes (`fsync` of the device) that completed.
    pub device_syncs: AtomicU64,
    /// `fdatasync`s of the image that completed.
    pub image_syncs: AtomicU64,
    /// Image `fdatasync`s a FUA write waited for before going raw: file-path writes (hole
    /// fills) had completed since the last image sync, so their allocation had to be committed
    /// before the FUA write could complete.
    pub fua_image_syncs: AtomicU64,
    /// Raw writes sent through the file instead because a write to the file system would have
    /// waited (a freeze; see [`crate::sys::FreezeProbe`]).
    pub freeze_waits: AtomicU64,
    /// FUA writes that went through the file (`RWF_DSYNC`).
    pub fua_file_writes: AtomicU64,
    /// File-system state checks ([`Engine::check_fs`]): `fstatvfs`, a zero-length read and the
    /// freeze probe.
    pub fs_checks: AtomicU64,
}

/// Raw writes re-check the file system's state ([`Engine::check_fs`]) when the last check is older
/// than this many milliseconds.
pub const FS_CHECK_MS: u64 = 10;

/// Stop reason: the image's file system went read-only.
pub const STOP_FS_READ_ONLY: &str = "remap.fs-read-only";
/// Stop reason: the image's file system reports an error (shut down, I/O error).
pub const STOP_FS_ERROR: &str = "remap.fs-error";
/// Stop reason: the extent map no longer matches FIEMAP (or could not be re-checked).
pub const STOP_MAP_CHANGED: &str = "remap.map-changed";
/// Stop reason: the write lease was lost without a break arriving (`F_GETLEASE` says so).
pub const STOP_LEASE_LOST: &str = "remap.lease-lost";
/// Stop reason: another process opened the image and the lease break arrived.
pub const STOP_LEASE_BROKEN: &str = "remap.lease-broken";

/// Why raw I/O stopped: one of the `STOP_*` codes, and the message for people (which names the
/// code too). Consumers that branch on the reason use `code`, never the message's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// A stable `STOP_*` code.
    pub code: &'static str,
    /// What happened, in words.
    pub why: String,
}

impl Stopped {
    fn new(code: &'static str, why: impl Into<String>) -> Self {
        Self { code, why: why.into() }
    }
}

thread_local! {
    /// Each thread's freeze-probe ring (`None` inside: io_uring cannot be used here).
    static PROBE: std::cell::RefCell<Option<Option<crate::sys::FreezeProbe>>> =
        const { std::cell::RefCell::new(None) };
}

/// How often `attach` re-validates the extent map ([`Engine::revalidate_map`]), in seconds.
pub const REVALIDATE_SECS: u64 = 1;

/// Raw writes bump the image's mtime/ctime (`futimens(UTIME_NOW)`) before the first raw write
/// and then at most once per this many seconds of writing.
pub const MTIME_PERIOD_SECS: u64 = 5;

/// A snapshot of the engine's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// Whether raw-device I/O is in use (false after a lease break).
    pub remapping: bool,
    /// Why remapping stopped, if it did.
    pub stopped_because: Option<String>,
    /// The stable code of that reason (one of the `STOP_*` constants).
    pub stopped_code: Option<&'static str>,
    /// Whether the write lease is held.
    pub lease_held: bool,
    /// Extents in the map now.
    pub extents: usize,
    /// Bytes of the file whose extents are known.
    pub mapped_bytes_known: u64,
}

struct Inner {
    path: PathBuf,
    /// The only descriptor on the image (`O_DIRECT`); the lease lives on it.
    file: File,
    /// The raw device (`O_DIRECT`).
    dev: File,
    dev_bytes: u64,
    size: u64,
    align: usize,
    read_only: bool,
    window: u64,
    map: RwLock<ExtentMap>,
    remap_on: AtomicBool,
    /// Remapping was stopped by a thread that could not wait for raw I/O in flight; the next
    /// [`Engine::check_fs`] with `drain` waits for it.
    needs_drain: AtomicBool,
    stopped_because: Mutex<Option<Stopped>>,
    inflight: AtomicUsize,
    /// Guards per discard epoch (by parity): a discard waits for every guard entered before it
    /// took its interval lock, so no plan made from the old map is still in flight when the
    /// blocks are freed.
    epoch: AtomicUsize,
    epoch_inflight: [AtomicUsize; 2],
    /// Serialises discards (one epoch change at a time).
    discarding: Mutex<()>,
    /// Ranges being written through the file (interval lock).
    busy: Mutex<Vec<Range<u64>>>,
    busy_cv: Condvar,
    busy_count: AtomicUsize,
    /// Raw-device writes completed / covered by a device flush.
    dev_gen: Generations,
    /// File-path writes (hole fills, punches, writes after a stop) completed / covered by an
    /// image `fdatasync`.
    file_gen: Generations,
    wrote: AtomicBool,
    /// Milliseconds after `opened` of the last file-system state check plus one (0: never).
    last_fs_check: AtomicU64,
    lease_held: AtomicBool,
    closed: AtomicBool,
    stats: Stats,
    opened: std::time::Instant,
    /// Milliseconds after `opened` of the last mtime bump plus one (0: never).
    last_bump: AtomicU64,
}

/// A remapped image. Cheap to share (`Arc` inside); closing happens on [`Engine::close`] or when
/// the last clone drops.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.inner.path).field("size", &self.inner.size).finish()
    }
}

fn unsafe_err(msg: String) -> crate::Error {
    crate::Error::new(crate::ErrorKind::Unsafe, msg)
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Open-time phase of [`Engine::open_file`]: `file` must be open for reading and writing
/// (unless `opts.read_only`); then `O_DIRECT` is set on its open file description.
fn set_direct(file: &File, what: &str, opts: &Options) -> crate::Result<()> {
    let mode =
        rustix::fs::fcntl_getfl(file).map_err(|e| crate::Error::io(format!("cannot examine {what}"), errno(e)))?;
    let acc = mode & rustix::fs::OFlags::RWMODE;
    if !opts.read_only && acc != rustix::fs::OFlags::RDWR {
        return Err(crate::Error::invalid(format!("{what} is not open for reading and writing")));
    }
    rustix::fs::fcntl_setfl(file, mode | rustix::fs::OFlags::DIRECT)
        .map_err(|e| crate::Error::io(format!("cannot set O_DIRECT on {what}"), errno(e)))?;
    Ok(())
}

/// Open-time phase of [`Engine::open_file`]: open the raw device `dev_path` under the file
/// (`O_DIRECT`, read-write unless `opts.read_only`, with a hint when a mounted device refuses
/// writes) and check, from the opened descriptor, that it is the node of the file's `st_dev`
/// (`meta`), and read its size and logical block size. Returns the device, its size in bytes and
/// its logical block size.
fn open_device(
    dev_path: &Path,
    meta: &std::fs::Metadata,
    what: &str,
    opts: &Options,
) -> crate::Result<(File, u64, u32)> {
    let mut dd = std::fs::OpenOptions::new();
    dd.read(true).write(!opts.read_only).custom_flags(libc::O_DIRECT | libc::O_CLOEXEC | libc::O_NOFOLLOW);
    let dev = dd.open(dev_path).map_err(|e| {
        let (hint, code) = match e.raw_os_error() {
            Some(libc::EBUSY) | Some(libc::EPERM) | Some(libc::EACCES) if !opts.read_only => (
                " (the kernel refuses to open a mounted block device for writing: booted with \
                 bdev_allow_write_mounted=0, built without CONFIG_BLK_DEV_WRITE_MOUNTED, or a security policy)",
                " (remap.device-write-refused)",
            ),
            _ => ("", ""),
        };
        unsafe_err(format!("cannot open {} (the device under {what}) for raw I/O{hint}: {e}{code}", dev_path.display()))
    })?;
    // The node is trusted only for what the opened descriptor says it is.
    let (dev_bytes, logical) = {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let dm = dev.metadata().map_err(|e| crate::Error::io(format!("cannot examine {}", dev_path.display()), e))?;
        preflight::check_device(
            dev_path,
            meta.dev(),
            dm.file_type().is_block_device(),
            dm.rdev(),
            crate::sys::block_device_size(dev.as_fd()).map_err(|e| e.to_string()),
            rustix::fs::ioctl_blksszget(&dev).map_err(|e| e.to_string()),
        )
        .map_err(|r| unsafe_err(format!("{what} cannot be remapped: {} ({})", r.message, r.code)))?
    };
    Ok((dev, dev_bytes, logical))
}

/// Open-time phase of [`Engine::open_file`], once the lease is held: refuse when another
/// process holds a descriptor of `file` the lease does not see (`remap.open-elsewhere`), after
/// a few short retries for a process forked by another thread of ours; note in `pf` the
/// processes that could not be checked. Returns `pf`.
fn check_exclusive(file: &File, what: &str, pf: Preflight) -> crate::Result<Preflight> {
    // New opens now break the lease; descriptors it does not count (access mode 3, rings)
    // are looked for once. A process forked by another thread of ours holds our own
    // descriptor until it execs: a few short retries tell that apart from a real holder.
    let mut holders = preflight::other_holders(file);
    for pause_ms in [10, 40, 100, 200, 400] {
        if holders.0.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
        holders = preflight::other_holders(file);
    }
    if !holders.0.is_empty() {
        return Err(unsafe_err(format!(
            "{what} is open in another process through a descriptor the lease does not see ({}); remapping \
             needs exclusive access (remap.open-elsewhere)",
            holders.0.join(", ")
        )));
    }
    let mut pf = pf;
    if holders.1 > 0 {
        pf.notes.push(crate::finding::Finding::info(
            "remap.holders-unchecked",
            format!(
                "{} processes could not be checked for descriptors of the image (their /proc entries are not \
             readable)",
                holders.1
            ),
        ));
    }
    Ok(pf)
}

/// Open-time phase of [`Engine::open_file`], the last: preflight again now that nobody else can
/// open the file unnoticed (its size and inode flags must not have changed since the first
/// preflight, `flags_before`), then fsync the file and drop its cached pages, and check the lease
/// was not lost meanwhile (`remap.lease-lost`).
fn recheck_and_flush(
    inner: &Inner,
    path: &Path,
    what: &str,
    size: u64,
    flags_before: Option<u32>,
) -> crate::Result<()> {
    // What preflight saw before the lease could have changed in between (L3): again, now that
    // nobody else can open the file unnoticed.
    let again = preflight::check(&inner.file, path);
    let size_now = inner.file.metadata().map(|m| m.len()).ok();
    // Any flag change counts, not only the refused ones: append-only or immutable set on an
    // image already open for writing would be bypassed by raw writes.
    let flags_changed = again.inode_flags != flags_before;
    if !again.is_safe() || size_now != Some(size) || flags_changed {
        let mut reasons: Vec<String> = again.refusals.iter().map(|r| format!("{} ({})", r.message, r.code)).collect();
        if size_now != Some(size) {
            reasons.push("its size changed while the lease was being taken (remap.changed-before-lease)".into());
        }
        if flags_changed {
            let show = |f: Option<u32>| f.map_or_else(|| "unreadable".to_string(), |b| format!("{b:#x}"));
            reasons.push(format!(
                "its inode flags changed while the lease was being taken, from {} to {} (remap.changed-before-lease)",
                show(flags_before),
                show(again.inode_flags)
            ));
        }
        return Err(unsafe_err(format!("{what} cannot be remapped: {}", reasons.join("; "))));
    }
    // Everything the file system has cached goes to disk and out of the cache, so raw reads
    // see the latest data and file-system readers after us do not see stale pages.
    inner.file.sync_all().map_err(|e| crate::Error::io(format!("fsync {what}"), e))?;
    let _ = rustix::fs::fadvise(&inner.file, 0, None, rustix::fs::Advice::DontNeed);
    if !inner.remap_on.load(Ordering::SeqCst) || !lease::still_held(inner.file.as_fd()) {
        return Err(unsafe_err(format!(
            "{what} was opened by another process while remapping was being set up (remap.lease-lost)"
        )));
    }
    Ok(())
}

impl Engine {
    /// Open `path` for remapping: preflight, exclusive lease, fsync and page-cache drop, raw
    /// device opened `O_DIRECT`. Returns the engine and the preflight facts. The path is opened
    /// once, then [`Engine::open_file`].
    ///
    /// # Errors
    /// As [`Engine::open_file`]; `Io` when the file cannot be opened.
    pub fn open(path: &Path, opts: &Options) -> crate::Result<(Engine, Preflight)> {
        let mut oo = std::fs::OpenOptions::new();
        oo.read(true).write(!opts.read_only).custom_flags(libc::O_CLOEXEC);
        let file = oo.open(path).map_err(|e| crate::Error::io(format!("cannot open {}", path.display()), e))?;
        Engine::open_file(file, path, opts)
    }

    /// Remap the image already open as `file` (opened read-write unless `opts.read_only`; `path`
    /// names it in messages and is never opened): whatever inode `file` is, is the one served.
    /// `O_DIRECT` is set on it here (on the open file description: duplicates the caller keeps
    /// share it, and the lease, which counts descriptions, not descriptors). The raw device is
    /// the node of the file's `st_dev`; the opened node must be that device (`fstat` `st_rdev`,
    /// `remap.device-mismatch`) and its size and logical block size are read from the opened
    /// descriptor (`BLKGETSIZE64`, `BLKSSZGET`; unknown: `remap.device-unknown`), never assumed.
    ///
    /// # Errors
    /// `Unsafe` with every reason when preflight refuses, the device is not verified or someone
    /// else has the file open; `InvalidInput` when the size is not a multiple of the device's
    /// logical block or `file` is not open for writing although `opts.read_only` is false; `Io`
    /// when the device cannot be opened.
    pub fn open_file(file: File, path: &Path, opts: &Options) -> crate::Result<(Engine, Preflight)> {
        let what = path.display().to_string();
        set_direct(&file, &what, opts)?;
        let pf = preflight::check(&file, path);
        if !pf.is_safe() {
            let reasons: Vec<String> = pf.refusals.iter().map(|r| format!("{} ({})", r.message, r.code)).collect();
            return Err(unsafe_err(format!("{what} cannot be remapped: {}", reasons.join("; "))));
        }
        let meta = file.metadata().map_err(|e| crate::Error::io(format!("cannot examine {what}"), e))?;
        let size = meta.len();
        let Some(dev_path) = pf.backing.device.clone() else {
            return Err(unsafe_err(format!("{what}: no device node for its file system")));
        };
        let (dev, dev_bytes, logical) = open_device(&dev_path, &meta, &what, opts)?;
        let align = logical as usize;
        if !size.is_multiple_of(align as u64) {
            return Err(crate::Error::invalid(format!(
                "{what} is {size} bytes, not a multiple of the device's {align}-byte logical block"
            )));
        }
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            file,
            dev,
            dev_bytes,
            size,
            align,
            read_only: opts.read_only,
            window: opts.fill_window.max(1 << 20),
            map: RwLock::new(ExtentMap::new(size, align as u64)),
            remap_on: AtomicBool::new(true),
            needs_drain: AtomicBool::new(false),
            stopped_because: Mutex::new(None),
            inflight: AtomicUsize::new(0),
            epoch: AtomicUsize::new(0),
            epoch_inflight: [AtomicUsize::new(0), AtomicUsize::new(0)],
            discarding: Mutex::new(()),
            busy: Mutex::new(Vec::new()),
            busy_cv: Condvar::new(),
            busy_count: AtomicUsize::new(0),
            dev_gen: Generations::default(),
            file_gen: Generations::default(),
            last_fs_check: AtomicU64::new(0),
            wrote: AtomicBool::new(false),
            // Set before the lease is taken: a break during acquisition must be acted on.
            lease_held: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            stats: Stats::default(),
            opened: std::time::Instant::now(),
            last_bump: AtomicU64::new(0),
        });
        let hook = |phase| {
            if let Some(h) = &opts.open_hook {
                (h.0)(phase);
            }
        };
        hook(OpenPhase::BeforeLease);
        let holder: std::sync::Weak<dyn LeaseHolder> = Arc::downgrade(&inner) as _;
        if let Err(e) = lease::acquire(inner.file.as_fd(), holder, &what) {
            // Not ours: close() must not release someone else's view of it (it has none).
            inner.lease_held.store(false, Ordering::SeqCst);
            let _ = lease::release(inner.file.as_fd());
            return Err(e);
        }
        hook(OpenPhase::AfterLease);
        let flags_before = pf.inode_flags;
        let checked = check_exclusive(&inner.file, &what, pf)
            .and_then(|pf| recheck_and_flush(&inner, path, &what, size, flags_before).map(|()| pf));
        match checked {
            Ok(pf) => Ok((Engine { inner }, pf)),
            Err(e) => {
                // The lease goes now, not when `inner` is dropped: the lease watcher holds a
                // reference to every engine it watches while it answers a break (another
                // engine's drain can take a while), and a refused open must leave no lease.
                let _ = inner.close();
                Err(e)
            }
        }
    }

    /// Check that the write lease is still held (`F_GETLEASE`). If it is not (taken away after
    /// `lease-break-time`, a break whose signal was missed, …), raw I/O stops at once
    /// (`remap.lease-lost`); with `drain`, raw I/O in flight is also waited for and the lease
    /// released, as on a lease break (never with `drain` from a thread that holds a [`Guard`]).
    /// Returns whether remapping is still on.
    pub fn check_lease(&self, drain: bool) -> bool {
        self.inner.check_lease(drain)
    }

    /// Re-validate the extent map against FIEMAP: every range the map holds as plainly mapped
    /// must still be plainly mapped at the same device offset. Anything else (blocks moved by a
    /// dedupe or reflink through a descriptor nobody saw, a relocation) stops raw I/O, waiting
    /// for raw I/O in flight (`remap.map-changed`), so the damage is bounded by how often this
    /// runs (`attach` calls it every [`REVALIDATE_SECS`]). Must not be called by a thread that
    /// holds a [`Guard`]. Returns whether remapping is still on.
    pub fn revalidate_map(&self) -> bool {
        self.inner.revalidate_map()
    }

    /// Check the image's file system (`fstatvfs`, a zero-length read): read-only (remounted, or
    /// `errors=remount-ro` after an error) stops raw I/O (`remap.fs-read-only`), and so does an
    /// error such as `EIO` after a shutdown (`remap.fs-error`); with `drain`, raw I/O in flight
    /// is also waited for (never with `drain` from a thread that holds a [`Guard`]). The engine
    /// also checks at every flush and, at most every [`FS_CHECK_MS`], before raw writes; `attach`
    /// calls this on its 200 ms timer. Returns whether remapping is still on.
    pub fn check_fs(&self, drain: bool) -> bool {
        self.inner.check_fs_at(drain, true)
    }

    /// `Some(ticket)` when writes to `target` completed since its last sync: take it just before
    /// issuing a sync of `target` and hand it to [`Engine::synced`] once the sync succeeded.
    /// `None`: every completed write is covered by a sync that already completed.
    pub fn sync_ticket(&self, target: SyncTarget) -> Option<u64> {
        self.inner.gens(target).dirty()
    }

    /// A sync of `target` issued after `ticket` was taken ([`Engine::sync_ticket`]) succeeded;
    /// `for_fua`: it was issued before a raw FUA write (counted in [`Stats::fua_image_syncs`]).
    pub fn synced(&self, target: SyncTarget, ticket: u64, for_fua: bool) {
        self.inner.synced(target, ticket, for_fua);
    }

    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    /// The raw-I/O alignment (the device's logical block size).
    pub fn alignment(&self) -> usize {
        self.inner.align
    }

    /// The image file's descriptor (`O_DIRECT`), for [`Piece::File`].
    pub fn file_fd(&self) -> BorrowedFd<'_> {
        self.inner.file.as_fd()
    }

    /// The raw device's descriptor (`O_DIRECT`), for [`Piece::Device`].
    pub fn device_fd(&self) -> BorrowedFd<'_> {
        self.inner.dev.as_fd()
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The current state.
    pub fn state(&self) -> State {
        let (extents, known) = match self.inner.map.read() {
            Ok(m) => (m.len(), m.covered().iter().map(|r| r.end - r.start).sum()),
            Err(_) => (0, 0),
        };
        let stopped = self.inner.stopped_because.lock().ok().and_then(|g| g.clone());
        State {
            remapping: self.inner.remap_on.load(Ordering::SeqCst),
            stopped_code: stopped.as_ref().map(|s| s.code),
            stopped_because: stopped.map(|s| s.why),
            lease_held: self.inner.lease_held.load(Ordering::SeqCst),
            extents,
            mapped_bytes_known: known,
        }
    }

    /// Stop remapping: every range goes through the file from now on (also what a lease break
    /// does). Waits for raw I/O in flight, so it must not be called by a thread that holds a
    /// [`Guard`] (it would wait for itself).
    pub fn stop_remapping(&self, why: Stopped) {
        self.inner.stop_remapping(Some(why));
    }

    /// Plan a read of `len` bytes at `offset` into pieces (appended to `out`). Hold the guard
    /// until the I/O of every piece has completed.
    ///
    /// # Errors
    /// `InvalidInput` past the end; a FIEMAP error while filling the map.
    pub fn plan_read(&self, offset: u64, len: u64, out: &mut Vec<Piece>) -> io::Result<Guard> {
        self.plan_read_with(offset, len, out, Wait::Block)
    }

    /// [`Engine::plan_read`] that never waits: `WouldBlock` (nothing planned, nothing held) while
    /// a file-path write or a discard holds part of the range. For threads that must not block
    /// while their own guards are outstanding (a ublk queue thread); retry later.
    ///
    /// # Errors
    /// As [`Engine::plan_read`], and `WouldBlock`.
    pub fn try_plan_read(&self, offset: u64, len: u64, out: &mut Vec<Piece>) -> io::Result<Guard> {
        self.plan_read_with(offset, len, out, Wait::NoWait)
    }

    fn plan_read_with(&self, offset: u64, len: u64, out: &mut Vec<Piece>, wait: Wait) -> io::Result<Guard> {
        check_range(self.inner.size, offset, len)?;
        let guard = self.inner.enter_not_busy(offset..offset + len, wait)?;
        if !self.inner.remap_on.load(Ordering::SeqCst) {
            out.push(Piece::File { offset, len });
            return Ok(guard);
        }
        self.inner.pieces(offset..offset + len, out, false)?;
        Ok(guard)
    }

    /// Plan a write: `Some(guard)` with pieces in `out` when every byte can be written with
    /// plain I/O on the device or file as listed; `None` when the write must go through
    /// [`ByteSink::write_at`] (holes, unwritten or shared extents, unaligned ranges).
    ///
    /// # Errors
    /// `InvalidInput` past the end; `EROFS` on a read-only engine; a FIEMAP error.
    pub fn plan_write(&self, offset: u64, len: u64, out: &mut Vec<Piece>) -> io::Result<Option<Guard>> {
        self.plan_write_with(offset, len, out, Wait::Block)
    }

    /// [`Engine::plan_write`] that never waits (see [`Engine::try_plan_read`]).
    ///
    /// # Errors
    /// As [`Engine::plan_write`], and `WouldBlock`.
    pub fn try_plan_write(&self, offset: u64, len: u64, out: &mut Vec<Piece>) -> io::Result<Option<Guard>> {
        self.plan_write_with(offset, len, out, Wait::NoWait)
    }

    fn plan_write_with(&self, offset: u64, len: u64, out: &mut Vec<Piece>, wait: Wait) -> io::Result<Option<Guard>> {
        self.inner.check_writable()?;
        check_range(self.inner.size, offset, len)?;
        if !self.inner.aligned(offset, len) {
            return Ok(None);
        }
        self.inner.wrote.store(true, Ordering::Relaxed);
        if self.inner.remap_on.load(Ordering::SeqCst) {
            self.inner.check_fs_at(false, false);
            if self.inner.remap_on.load(Ordering::SeqCst) && self.inner.write_would_wait() {
                // A write to the file system would have to wait (a freeze, or a writer that holds
                // the inode): the file path waits in the kernel, as any writer must.
                self.inner.stats.freeze_waits.fetch_add(1, Ordering::Relaxed);
                return Ok(None);
            }
        }
        // Entered before remapping is looked at: a stop waits for this guard.
        let mut guard = self.inner.enter_not_busy(offset..offset + len, wait)?;
        if !self.inner.remap_on.load(Ordering::SeqCst) {
            guard.writes = Some(Written::File);
            out.push(Piece::File { offset, len });
            return Ok(Some(guard));
        }
        let start = out.len();
        if !self.inner.pieces(offset..offset + len, out, true)? {
            out.truncate(start);
            return Ok(None);
        }
        // Planned with the map read while remapping was on: raw device pieces only.
        guard.writes = Some(Written::Device);
        if out[start..].iter().any(|p| matches!(p, Piece::Device { .. })) {
            self.inner.bump_mtime_if_due();
        }
        Ok(Some(guard))
    }

    /// A write with FUA semantics (durable when it returns).
    ///
    /// # Errors
    /// As [`ByteSink::write_at`].
    pub fn write_at_fua(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write(buf, offset, true, Wait::Block)
    }

    /// A write (with FUA semantics if `fua`) that never waits for a file-path write or a
    /// discard holding part of its range: `WouldBlock` with nothing written (see
    /// [`Engine::try_plan_read`]).
    ///
    /// # Errors
    /// As [`ByteSink::write_at`], and `WouldBlock`.
    pub fn try_write_at(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.inner.write(buf, offset, fua, Wait::NoWait)
    }

    /// Zero `range` without giving its blocks back where the file system can
    /// (`FALLOC_FL_ZERO_RANGE`: the blocks stay allocated, unwritten), as a discard does
    /// otherwise; then it reads as zeros. May wait for raw I/O in flight, so it must not be
    /// called by a thread that holds a [`Guard`].
    ///
    /// # Errors
    /// As [`ByteSink::discard`].
    pub fn zero_range(&self, range: Range<u64>) -> io::Result<()> {
        self.inner.discard(range, true)
    }

    /// Flush, drop the file's cached pages, update mtime if anything was written, release the
    /// lease. Idempotent.
    ///
    /// # Errors
    /// The first error of those steps (all are attempted).
    pub fn close(&self) -> io::Result<()> {
        self.inner.close()
    }
}

impl Inner {
    /// M2: raw writes bypass the file system, so nothing else updates mtime/ctime. Bumped before
    /// the first raw write of each period (the write is planned but not yet issued), so backups
    /// keyed on mtime and inotify see the change even if the process is killed afterwards.
    fn bump_mtime_if_due(&self) {
        let now = self.opened.elapsed().as_millis() as u64 + 1;
        let last = self.last_bump.load(Ordering::SeqCst);
        if last != 0 && now.saturating_sub(last) < MTIME_PERIOD_SECS * 1000 {
            return;
        }
        if self.last_bump.compare_exchange(last, now, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return;
        }
        let ts = rustix::fs::Timestamps {
            last_access: rustix::time::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT },
            last_modification: rustix::time::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW },
        };
        if rustix::fs::futimens(&self.file, &ts).is_ok() {
            self.stats.mtime_bumps.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn revalidate_map(&self) -> bool {
        if !self.remap_on.load(Ordering::SeqCst) {
            return false;
        }
        let changed = match self.map_differs() {
            Ok(None) => return true,
            Ok(Some(at)) => format!("the image's extents changed under the engine at byte {at} ({STOP_MAP_CHANGED})"),
            Err(e) => format!("the image's extents could not be re-checked: {e} ({STOP_MAP_CHANGED})"),
        };
        self.stop_remapping(Some(Stopped::new(STOP_MAP_CHANGED, changed)));
        false
    }

    /// The first byte whose mapping FIEMAP no longer confirms, if any. The map's read lock is
    /// held throughout, so the engine's own re-maps (which take it for writing) cannot interleave.
    fn map_differs(&self) -> io::Result<Option<u64>> {
        let map = self.map.read().map_err(|_| io::Error::other("map lock poisoned"))?;
        for r in map.covered().to_vec() {
            let old = map.segments(r.clone());
            if !old.iter().any(|s| matches!(s.kind, SegKind::Mapped { .. })) {
                continue;
            }
            let ext = self.query(r.clone(), false)?;
            let mut fresh = ExtentMap::new(self.size, self.align as u64);
            fresh.fill(r.clone(), &ext);
            for s in old {
                let SegKind::Mapped { physical } = s.kind else { continue };
                for n in fresh.segments(s.logical..s.logical + s.length) {
                    let want = physical + (n.logical - s.logical);
                    if n.kind != (SegKind::Mapped { physical: want }) {
                        return Ok(Some(n.logical));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Stop raw I/O for `why`: draining (see [`Engine::stop_remapping`]) or, from a thread that
    /// may hold guards, at once without waiting.
    fn stop_now(&self, why: Stopped, drain: bool) {
        if drain {
            self.stop_remapping(Some(why));
        } else if self.remap_on.swap(false, Ordering::SeqCst) {
            self.needs_drain.store(true, Ordering::SeqCst);
            if let Ok(mut g) = self.stopped_because.lock() {
                *g = Some(why);
            }
        }
    }

    /// See [`Engine::check_fs`]; without `force`, only when the last check is older than
    /// [`FS_CHECK_MS`].
    fn check_fs_at(&self, drain: bool, force: bool) -> bool {
        if !self.remap_on.load(Ordering::SeqCst) {
            if drain && self.needs_drain.swap(false, Ordering::SeqCst) {
                // Stopped without draining by a queue thread: drain now.
                self.stop_remapping(None);
            }
            return false;
        }
        let now = self.opened.elapsed().as_millis() as u64 + 1;
        let last = self.last_fs_check.load(Ordering::SeqCst);
        if !force && last != 0 && now.saturating_sub(last) < FS_CHECK_MS {
            return true;
        }
        self.last_fs_check.store(now, Ordering::SeqCst);
        self.stats.fs_checks.fetch_add(1, Ordering::Relaxed);
        let why = match rustix::fs::fstatvfs(&self.file) {
            Err(e) => Some(Stopped::new(
                STOP_FS_ERROR,
                format!("the image's file system reports an error: {} ({STOP_FS_ERROR})", errno(e)),
            )),
            Ok(st) if !self.read_only && st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) => {
                Some(Stopped::new(
                    STOP_FS_READ_ONLY,
                    format!(
                        "the image's file system is read-only (remounted, or after an error with errors=remount-ro) \
                         ({STOP_FS_READ_ONLY})"
                    ),
                ))
            }
            // A shut-down ext4 or XFS fails every read with EIO, even an empty one.
            Ok(_) => match rustix::io::pread(&self.file, &mut [0u8; 0][..], 0) {
                Err(e) if fs_failed(e) => Some(Stopped::new(
                    STOP_FS_ERROR,
                    format!("the image's file system reports an error: {} ({STOP_FS_ERROR})", errno(e)),
                )),
                _ => None,
            },
        };
        match why {
            Some(why) => self.stop_now(why, drain),
            // ext4 may refuse writes (EIO, EROFS) without showing read-only in statfs: ask a
            // write (which stops remapping itself when refused; a freeze is not a stop).
            None => {
                let _ = self.write_would_wait();
                if drain && !self.remap_on.load(Ordering::SeqCst) && self.needs_drain.swap(false, Ordering::SeqCst) {
                    self.stop_remapping(None);
                }
            }
        }
        self.remap_on.load(Ordering::SeqCst)
    }

    /// Whether a write to the image's file system would have to wait now (frozen): a zero-length
    /// `RWF_NOWAIT` write through this thread's probe ring ([`crate::sys::FreezeProbe`]). An
    /// error that means the file system failed stops remapping (without draining).
    fn write_would_wait(&self) -> bool {
        if self.read_only {
            return false;
        }
        let r = PROBE.with(|p| {
            let mut p = p.borrow_mut();
            let probe = p.get_or_insert_with(|| crate::sys::FreezeProbe::new().ok());
            probe.as_mut().map(|pr| pr.would_wait(self.file.as_fd()))
        });
        match r {
            Some(Ok(n)) if n == -libc::EAGAIN => true,
            Some(Ok(n)) if n == -libc::EROFS => {
                self.stop_now(
                    Stopped::new(
                        STOP_FS_READ_ONLY,
                        format!("the image's file system is read-only (a write was refused) ({STOP_FS_READ_ONLY})"),
                    ),
                    false,
                );
                false
            }
            Some(Ok(n)) if n < 0 && fs_failed(rustix::io::Errno::from_raw_os_error(-n)) => {
                let e = io::Error::from_raw_os_error(-n);
                self.stop_now(
                    Stopped::new(
                        STOP_FS_ERROR,
                        format!("the image's file system reports an error: {e} ({STOP_FS_ERROR})"),
                    ),
                    false,
                );
                false
            }
            // 0, an error that says nothing about the file system, or no io_uring here.
            _ => false,
        }
    }

    fn check_lease(&self, drain: bool) -> bool {
        if self.lease_held.load(Ordering::SeqCst) && !lease::still_held(self.file.as_fd()) {
            if drain {
                self.stop_remapping(Some(Stopped::new(
                    STOP_LEASE_LOST,
                    format!("the write lease was lost ({STOP_LEASE_LOST})"),
                )));
                if self.lease_held.swap(false, Ordering::SeqCst) {
                    let _ = lease::release(self.file.as_fd());
                }
            } else if self.remap_on.swap(false, Ordering::SeqCst)
                && let Ok(mut g) = self.stopped_because.lock()
            {
                *g = Some(Stopped::new(STOP_LEASE_LOST, format!("the write lease was lost ({STOP_LEASE_LOST})")));
            }
        }
        self.remap_on.load(Ordering::SeqCst)
    }

    fn enter(self: &Arc<Self>, writes: Option<Written>) -> Guard {
        self.inflight.fetch_add(1, Ordering::SeqCst);
        loop {
            let e = self.epoch.load(Ordering::SeqCst);
            self.epoch_inflight[e & 1].fetch_add(1, Ordering::SeqCst);
            if self.epoch.load(Ordering::SeqCst) == e {
                return Guard { inner: Arc::clone(self), writes, epoch: e };
            }
            // A discard moved on meanwhile: count in the new epoch instead.
            self.epoch_inflight[e & 1].fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// A guard taken while no file-path write or discard holds any part of `r` (readers never
    /// see a half-filled hole; nobody plans from a map a discard is changing). The guard is not
    /// held while waiting, so a discard waiting for earlier guards cannot wait for this one.
    fn enter_not_busy(self: &Arc<Self>, r: Range<u64>, wait: Wait) -> io::Result<Guard> {
        loop {
            let g = self.enter(None);
            if !self.is_busy(r.clone()) {
                return Ok(g);
            }
            drop(g);
            if wait == Wait::NoWait {
                return Err(would_block());
            }
            self.wait_not_busy(r.clone());
        }
    }

    fn is_busy(&self, r: Range<u64>) -> bool {
        if self.busy_count.load(Ordering::SeqCst) == 0 {
            return false;
        }
        self.busy.lock().map_or(true, |g| g.iter().any(|b| b.start < r.end && r.start < b.end))
    }

    /// Start a new discard epoch and wait for every guard of the old one to drop.
    fn wait_earlier_guards(&self) {
        let old = self.epoch.fetch_add(1, Ordering::SeqCst);
        while self.epoch_inflight[old & 1].load(Ordering::SeqCst) > 0 {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.read_only { Err(io::Error::from_raw_os_error(libc::EROFS)) } else { Ok(()) }
    }

    fn aligned(&self, offset: u64, len: u64) -> bool {
        let a = self.align as u64;
        offset.is_multiple_of(a) && len.is_multiple_of(a)
    }

    /// Stop raw I/O (recording `why` if this call is the one that stops it) and wait for the
    /// raw I/O planned before; `None` only drains after a stop recorded elsewhere.
    fn stop_remapping(&self, why: Option<Stopped>) {
        if self.remap_on.swap(false, Ordering::SeqCst)
            && let Ok(mut g) = self.stopped_because.lock()
        {
            *g = why;
        }
        // Raw I/O planned before the switch must finish before anyone else may touch the file:
        // every guard entered before it (a guard entered after it reads remapping off and plans
        // through the file only), not every guard in flight. Requests that never pause (a
        // queue kept full) keep the count of all guards above zero for as long as they come:
        // the lease break then waited until the kernel took the lease away after
        // lease-break-time, and the opener waited as long.
        match self.discarding.lock() {
            Ok(_one) => self.wait_earlier_guards(),
            Err(_) => {
                while self.inflight.load(Ordering::SeqCst) > 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
        }
        let _ = self.dev.sync_all();
        let _ = rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed);
    }

    /// Wait until no file-path write overlaps `r` (readers never see a half-filled hole).
    fn wait_not_busy(&self, r: Range<u64>) {
        if self.busy_count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let Ok(mut g) = self.busy.lock() else { return };
        while g.iter().any(|b| b.start < r.end && r.start < b.end) {
            g = match self.busy_cv.wait(g) {
                Ok(g) => g,
                Err(_) => return,
            };
        }
    }

    /// Take the interval lock on `r`.
    fn lock_range(&self, r: Range<u64>, wait: Wait) -> io::Result<BusyGuard<'_>> {
        let mut g = self.busy.lock().map_err(|_| io::Error::other("engine lock poisoned"))?;
        while g.iter().any(|b| b.start < r.end && r.start < b.end) {
            if wait == Wait::NoWait {
                return Err(would_block());
            }
            g = self.busy_cv.wait(g).map_err(|_| io::Error::other("engine lock poisoned"))?;
        }
        g.push(r.clone());
        self.busy_count.fetch_add(1, Ordering::SeqCst);
        Ok(BusyGuard { inner: self, range: r })
    }

    /// Make sure the extents of `r` are known (lazy FIEMAP fill, a window at a time).
    fn ensure_known(&self, r: Range<u64>) -> io::Result<()> {
        if self.map.read().map_err(|_| io::Error::other("map lock poisoned"))?.is_covered(r.clone()) {
            return Ok(());
        }
        let mut map = self.map.write().map_err(|_| io::Error::other("map lock poisoned"))?;
        for gap in map.uncovered(r) {
            let w = self.window;
            let start = gap.start / w * w;
            let end = gap.end.div_ceil(w).saturating_mul(w).min(self.size);
            for piece in map.uncovered(start..end) {
                let ext = self.query(piece.clone(), false)?;
                map.fill(piece, &ext);
            }
        }
        Ok(())
    }

    /// FIEMAP of `r`, with extents the device cannot hold marked unknown (via file).
    fn query(&self, r: Range<u64>, sync: bool) -> io::Result<Vec<Extent>> {
        self.stats.fiemap_passes.fetch_add(1, Ordering::Relaxed);
        let ext = fiemap::query(self.file.as_fd(), r.clone(), sync)?;
        // A gap FIEMAP leaves is a hole only if SEEK_DATA agrees; otherwise it goes through the
        // file (M7: never serve zeros the file system did not promise).
        let end = r.end.min(self.size);
        let mut ext = crate::extent::close_gaps(r.start..end, ext, |gap| {
            match rustix::fs::seek(&self.file, rustix::fs::SeekFrom::Data(gap.start)) {
                Ok(at) => at < gap.end,
                Err(rustix::io::Errno::NXIO) => false,
                Err(_) => true,
            }
        });
        for e in &mut ext {
            if e.physical.checked_add(e.length).is_none_or(|end| end > self.dev_bytes) {
                e.flags = e.flags.union(ExtentFlags::UNKNOWN);
            }
        }
        Ok(ext)
    }

    /// Cut `r` into pieces. For writes, returns false (and leaves partial pieces) when any part
    /// is not plainly mapped.
    fn pieces(&self, r: Range<u64>, out: &mut Vec<Piece>, for_write: bool) -> io::Result<bool> {
        self.ensure_known(r.clone())?;
        let map = self.map.read().map_err(|_| io::Error::other("map lock poisoned"))?;
        let mut pos = r.start;
        while pos < r.end {
            let Some(s) = map.lookup(pos) else { break };
            let len = s.length.min(r.end - pos);
            let piece = match s.kind {
                SegKind::Mapped { physical } => Piece::Device { offset: physical, len },
                SegKind::Zero if !for_write => Piece::Zero { len },
                SegKind::ViaFile if !for_write => Piece::File { offset: pos, len },
                // A range that went unknown again (forgotten concurrently): the file is safe.
                SegKind::Unknown if !for_write => Piece::File { offset: pos, len },
                _ => return Ok(false),
            };
            // Merge with a contiguous previous piece of the same kind.
            match (out.last_mut(), piece) {
                (Some(Piece::Device { offset, len: l }), Piece::Device { offset: o, len: n }) if *offset + *l == o => {
                    *l += n
                }
                (Some(Piece::File { offset, len: l }), Piece::File { offset: o, len: n }) if *offset + *l == o => {
                    *l += n
                }
                (Some(Piece::Zero { len: l }), Piece::Zero { len: n }) => *l += n,
                _ => out.push(piece),
            }
            pos += len;
        }
        Ok(true)
    }

    fn read(self: &Arc<Self>, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut pieces = Vec::new();
        let _g = Engine { inner: Arc::clone(self) }.plan_read(offset, buf.len() as u64, &mut pieces)?;
        let mut at = 0usize;
        for p in pieces {
            let n = p.len() as usize;
            let dst = &mut buf[at..at + n];
            match p {
                Piece::Device { offset, .. } => {
                    read_at_aligned(&self.dev, dst, offset, self.align)?;
                    self.stats.device_read.fetch_add(n as u64, Ordering::Relaxed);
                }
                Piece::File { offset, .. } => {
                    read_at_aligned(&self.file, dst, offset, self.align)?;
                    self.stats.file_read.fetch_add(n as u64, Ordering::Relaxed);
                }
                Piece::Zero { .. } => {
                    dst.fill(0);
                    self.stats.zero_read.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            at += n;
        }
        Ok(())
    }

    fn write(self: &Arc<Self>, buf: &[u8], offset: u64, fua: bool, wait: Wait) -> io::Result<()> {
        let mut pieces = Vec::new();
        let engine = Engine { inner: Arc::clone(self) };
        if let Some(_g) = engine.plan_write_with(offset, buf.len() as u64, &mut pieces, wait)? {
            if fua && pieces.iter().any(|p| matches!(p, Piece::Device { .. })) {
                // A raw FUA write over blocks a file-path write allocated: that allocation must
                // be committed before the FUA write completes.
                self.sync_file_for_fua()?;
            }
            let mut at = 0usize;
            for p in pieces {
                let n = p.len() as usize;
                let src = &buf[at..at + n];
                match p {
                    Piece::Device { offset, .. } => {
                        write_at_aligned(&self.dev, src, offset, self.align, fua)?;
                        self.stats.device_written.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Piece::File { offset, .. } => {
                        write_at_aligned(&self.file, src, offset, self.align, fua)?;
                        self.stats.file_written.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Piece::Zero { .. } => return Err(io::Error::other("internal: a write planned as zeros")),
                }
                at += n;
            }
            return Ok(());
        }
        self.slow_write(buf, offset, fua, wait)
    }

    /// A write through the file system (holes, unwritten, shared, unaligned), then the written
    /// range is re-mapped.
    fn slow_write(self: &Arc<Self>, buf: &[u8], offset: u64, fua: bool, wait: Wait) -> io::Result<()> {
        let a = self.align as u64;
        let start = offset / a * a;
        let end = (offset + buf.len() as u64).div_ceil(a) * a;
        // The interval lock first, the guard after: a discard holding the lock waits for guards.
        let _busy = self.lock_range(start..end, wait)?;
        let _g = self.enter(None);
        self.wrote.store(true, Ordering::Relaxed);
        let written = if start == offset && end == offset + buf.len() as u64 {
            write_at_aligned(&self.file, buf, offset, self.align, fua)
        } else {
            // Read-modify-write of the aligned blocks (under the interval lock).
            // An aligned buffer, so neither the read nor the write bounces through another.
            AlignedBuf::zeroed((end - start) as usize, self.align).and_then(|mut tmp| {
                let tmp = tmp.as_mut_slice();
                read_at_aligned(&self.file, tmp, start, self.align)?;
                let at = (offset - start) as usize;
                tmp[at..at + buf.len()].copy_from_slice(buf);
                write_at_aligned(&self.file, tmp, start, self.align, fua)
            })
        };
        // Completed (or failed part-way: an image sync must cover whatever reached the file)
        // before the range is re-mapped, so a raw write planned over the new blocks sees it.
        self.file_gen.completed();
        written?;
        if fua {
            self.stats.fua_file_writes.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.file_written.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if self.remap_on.load(Ordering::SeqCst) {
            self.remap_written(start..end)?;
        }
        Ok(())
    }

    /// Re-map exactly `r` after a file write: what is plainly mapped now becomes raw I/O, the
    /// rest via the file — never zero, which would hide the data just written.
    fn remap_written(&self, r: Range<u64>) -> io::Result<()> {
        // SYNC: if the file system fell back to buffered I/O, its dirty pages go to disk first.
        let ext = self.query(r.clone(), true)?;
        let mut fixed: Vec<Extent> = Vec::with_capacity(ext.len() + 2);
        let mut pos = r.start;
        let hidden = ExtentFlags::UNKNOWN;
        for mut e in ext {
            let (s, t) = (e.logical.max(r.start), e.logical_end().min(r.end));
            if s >= t {
                continue;
            }
            if s > pos {
                fixed.push(Extent { logical: pos, physical: 0, length: s - pos, flags: hidden });
            }
            if e.flags.contains(ExtentFlags::UNWRITTEN) {
                e.flags = e.flags.union(hidden);
            }
            fixed.push(e);
            pos = t;
        }
        if pos < r.end {
            fixed.push(Extent { logical: pos, physical: 0, length: r.end - pos, flags: hidden });
        }
        self.map.write().map_err(|_| io::Error::other("map lock poisoned"))?.fill(r.clone(), &fixed);
        // DONTNEED drops only whole pages inside the range: round outward, so the page a
        // buffered fallback left for a sub-page block goes too.
        let pages = page_span(r.clone());
        let _ = rustix::fs::fadvise(
            &self.file,
            pages.start,
            std::num::NonZeroU64::new(pages.end - pages.start),
            rustix::fs::Advice::DontNeed,
        );
        self.stats.remaps.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Punch `range` (or, with `zero`, zero it in place: `FALLOC_FL_ZERO_RANGE`).
    fn discard(self: &Arc<Self>, range: Range<u64>, zero: bool) -> io::Result<()> {
        self.check_writable()?;
        check_range(self.size, range.start, range.end.saturating_sub(range.start))?;
        if range.is_empty() {
            return Ok(());
        }
        let a = self.align as u64;
        // Whole blocks are punched; partial blocks at the ends are written with zeros.
        let (s, t) = (range.start.div_ceil(a) * a, range.end / a * a);
        let busy = self.lock_range(range.start / a * a..range.end.div_ceil(a) * a, Wait::Block)?;
        self.wrote.store(true, Ordering::Relaxed);
        if s < t {
            // Plans made before the interval lock (possibly from the old map) finish first.
            let _one = self.discarding.lock().map_err(|_| io::Error::other("engine lock poisoned"))?;
            self.wait_earlier_guards();
            use rustix::fs::FallocateFlags as F;
            // The map must not say "mapped" for a freed block once the interval lock is gone: the
            // range is forgotten before the punch (a plan meanwhile waits for the lock, then finds
            // the range unknown and asks FIEMAP again) and re-mapped before the lock is dropped.
            self.map.write().map_err(|_| io::Error::other("map lock poisoned"))?.forget(s..t);
            let mode = if zero { F::ZERO_RANGE | F::KEEP_SIZE } else { F::PUNCH_HOLE | F::KEEP_SIZE };
            let punched = rustix::fs::fallocate(&self.file, mode, s, t - s).map_err(errno);
            self.file_gen.completed();
            punched?;
            if self.remap_on.load(Ordering::SeqCst) {
                let ext = self.query(s..t, false)?;
                self.map.write().map_err(|_| io::Error::other("map lock poisoned"))?.fill(s..t, &ext);
            }
        }
        drop(busy);
        for r in [range.start..s.min(range.end), t.max(range.start).max(s)..range.end] {
            if r.start < r.end {
                self.slow_write(&vec![0u8; (r.end - r.start) as usize], r.start, false, Wait::Block)?;
            }
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        // Never drains here: the caller may be a queue thread with raw I/O of its own in flight.
        self.check_lease(false);
        self.check_fs_at(false, true);
        if let Some(t) = self.dev_gen.dirty() {
            // fsync of a block device: its page cache (unused) plus a cache flush to the disk.
            self.dev.sync_all()?;
            self.synced(SyncTarget::Device, t, false);
        }
        if let Some(t) = self.file_gen.dirty() {
            // File-path writes: data and the allocation metadata (filled holes) become durable.
            self.file.sync_data()?;
            self.synced(SyncTarget::File, t, false);
        }
        Ok(())
    }

    /// Before a raw FUA write: `fdatasync` the image if file-path writes completed since the
    /// last image sync (their block allocations may be what the FUA write lands on).
    fn sync_file_for_fua(&self) -> io::Result<()> {
        if let Some(t) = self.file_gen.dirty() {
            self.file.sync_data()?;
            self.synced(SyncTarget::File, t, true);
        }
        Ok(())
    }

    fn gens(&self, target: SyncTarget) -> &Generations {
        match target {
            SyncTarget::Device => &self.dev_gen,
            SyncTarget::File => &self.file_gen,
        }
    }

    /// A sync of `target` that started after `ticket` was taken has completed.
    fn synced(&self, target: SyncTarget, ticket: u64, for_fua: bool) {
        self.gens(target).covered(ticket);
        let n = match target {
            SyncTarget::Device => &self.stats.device_syncs,
            SyncTarget::File => &self.stats.image_syncs,
        };
        n.fetch_add(1, Ordering::Relaxed);
        if for_fua {
            self.stats.fua_image_syncs.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn close(&self) -> io::Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut first: Option<io::Error> = None;
        let mut keep = |r: io::Result<()>| {
            if let Err(e) = r
                && first.is_none()
            {
                first = Some(e);
            }
        };
        keep(self.flush());
        if self.wrote.load(Ordering::SeqCst) && !self.read_only {
            // Raw writes bypass the file system: tell backup tools the file changed.
            let now = rustix::time::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW };
            let ts = rustix::fs::Timestamps {
                last_access: rustix::time::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT },
                last_modification: now,
            };
            keep(rustix::fs::futimens(&self.file, &ts).map_err(errno));
            keep(self.file.sync_all());
        }
        keep(rustix::fs::fadvise(&self.file, 0, None, rustix::fs::Advice::DontNeed).map_err(errno));
        if self.lease_held.swap(false, Ordering::SeqCst) {
            keep(lease::release(self.file.as_fd()));
        }
        first.map_or(Ok(()), Err)
    }
}

struct BusyGuard<'a> {
    inner: &'a Inner,
    range: Range<u64>,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut g) = self.inner.busy.lock()
            && let Some(i) = g.iter().position(|r| *r == self.range)
        {
            g.swap_remove(i);
        }
        self.inner.busy_count.fetch_sub(1, Ordering::SeqCst);
        self.inner.busy_cv.notify_all();
    }
}

impl LeaseHolder for Inner {
    fn lease_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn lease_broken(&self) {
        if !self.lease_held.load(Ordering::SeqCst) {
            return;
        }
        self.stop_remapping(Some(Stopped::new(
            STOP_LEASE_BROKEN,
            format!("another process opened the image (lease broken; {STOP_LEASE_BROKEN})"),
        )));
        if self.lease_held.swap(false, Ordering::SeqCst) {
            let _ = lease::release(self.file.as_fd());
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Errors that mean the file system itself failed (shut down, aborted, corrupted).
fn fs_failed(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno as E;
    [E::IO, E::SHUTDOWN, E::UCLEAN, E::NOTCONN].contains(&e)
}

/// `r` rounded outward to whole pages (what `POSIX_FADV_DONTNEED` drops).
fn page_span(r: Range<u64>) -> Range<u64> {
    let page = rustix::param::page_size() as u64;
    r.start / page * page..r.end.div_ceil(page).saturating_mul(page)
}

impl ByteSource for Engine {
    fn size_bytes(&self) -> u64 {
        self.inner.size
    }

    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<usize> {
        if offset_bytes >= self.inner.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.inner.size - offset_bytes) as usize;
        self.inner.read(&mut buf[..n], offset_bytes)?;
        Ok(n)
    }

    fn data_regions(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        let end = range.end.min(self.inner.size);
        if range.start >= end {
            return Ok(Vec::new());
        }
        self.inner.ensure_known(range.start..end)?;
        let map = self.inner.map.read().map_err(|_| io::Error::other("map lock poisoned"))?;
        let mut out: Vec<Range<u64>> = Vec::new();
        for s in map.segments(range.start..end) {
            if s.kind != SegKind::Zero {
                match out.last_mut() {
                    Some(l) if l.end == s.logical => l.end += s.length,
                    _ => out.push(s.logical..s.logical + s.length),
                }
            }
        }
        Ok(out)
    }
}

impl ByteSink for Engine {
    fn write_at(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()> {
        self.inner.write(buf, offset_bytes, false, Wait::Block)
    }

    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }

    fn discard(&self, range: Range<u64>) -> io::Result<()> {
        self.inner.discard(range, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The FUA/FLUSH protocol on several threads: each writes (the write completes, then the
    /// generation advances), then asks for durability as a FUA does (`dirty` → sync → `covered`);
    /// a sync makes durable exactly the writes that completed before it started. When the FUA
    /// returns, every write that had completed before it began, on any thread, must be durable.
    #[test]
    fn a_fua_never_completes_before_a_sync_covering_earlier_writes() {
        let gens = Arc::new(Generations::default());
        let completed = Arc::new(Mutex::new(HashSet::<u64>::new()));
        let durable = Arc::new(Mutex::new(HashSet::<u64>::new()));
        let syncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (gens, completed, durable, syncs) =
                    (Arc::clone(&gens), Arc::clone(&completed), Arc::clone(&durable), Arc::clone(&syncs));
                std::thread::spawn(move || {
                    for i in 0..2000u64 {
                        let id = t << 32 | i;
                        completed.lock().unwrap().insert(id);
                        gens.completed();
                        if i % 3 != 0 {
                            continue; // a plain write: no FUA
                        }
                        let before: HashSet<u64> = completed.lock().unwrap().clone();
                        if let Some(ticket) = gens.dirty() {
                            // The sync starts after the ticket: it covers what completed so far.
                            let snapshot: HashSet<u64> = completed.lock().unwrap().clone();
                            if i % 7 == 0 {
                                std::thread::yield_now();
                            }
                            durable.lock().unwrap().extend(snapshot);
                            syncs.fetch_add(1, Ordering::Relaxed);
                            gens.covered(ticket);
                        }
                        let d = durable.lock().unwrap();
                        let lost: Vec<_> = before.iter().filter(|w| !d.contains(w)).collect();
                        assert!(lost.is_empty(), "thread {t}: FUA {i} completed before writes {lost:?} were synced");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Not every FUA needed its own sync (others covered it), but some syncs ran.
        let n = syncs.load(Ordering::Relaxed);
        assert!(n > 0 && n <= 4 * 667, "{n} syncs");
    }

    #[test]
    fn a_clean_target_needs_no_sync_and_a_sync_covers_only_its_ticket() {
        let g = Generations::default();
        assert_eq!(g.dirty(), None);
        g.completed();
        let t = g.dirty().unwrap();
        g.completed(); // completed while the sync ran: not covered by it
        g.covered(t);
        assert!(g.dirty().is_some());
        let t2 = g.dirty().unwrap();
        g.covered(t2);
        g.covered(t); // a slower, older sync finishing late does not go backwards
        assert_eq!(g.dirty(), None);
    }

    #[test]
    fn fadvise_ranges_are_rounded_out_to_whole_pages() {
        let page = rustix::param::page_size() as u64;
        assert_eq!(page_span(512..1024), 0..page);
        assert_eq!(page_span(page - 512..page + 512), 0..2 * page);
        assert_eq!(page_span(page..2 * page), page..2 * page);
        assert_eq!(page_span(3 * page + 1..3 * page + 2), 3 * page..4 * page);
    }
}
