//! `loopkit attach`: serve an image as a ublk block device (`/dev/ublkbN`). [`backend`] is the
//! seam (how each request maps onto the image file or the raw device), [`server`] the libublk
//! server that issues the I/O through io_uring, [`state`] the registry `attach --list` and
//! `detach` read. [`run`] puts them together for any backend: the file path ([`FileBackend`],
//! also with a sector cipher for `--decrypt`) or the remap engine.

pub mod backend;
pub mod remap;
pub mod server;
pub mod state;

pub use backend::{Backend, Crypt, FileBackend, Seg, Target};
pub use remap::RemapBackend;
pub use server::{DataPath, Finished};

use crate::progress::Interrupt;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The image file opened for serving.
#[derive(Debug)]
pub struct ImageFile {
    /// The file.
    pub file: File,
    /// Its absolute path: where the opened inode is now (`readlink /proc/self/fd/N`), which is
    /// what `--list` shows and `detach IMAGE` matches.
    pub path: PathBuf,
    /// Opened for writing.
    pub writable: bool,
    /// `O_DIRECT` is set.
    pub direct_io: bool,
    /// log2 of the physical block size of the device the file lives on (9 or 12…).
    pub physical_bs_shift: u8,
    /// Remarks for the user (why read-only, why buffered).
    pub notes: Vec<crate::finding::Finding>,
    /// The raw device the remap engine verified and uses (`/dev/vda (254:0)`), if remapping.
    pub raw_device: Option<String>,
}

/// Stable code of the refusal when the served descriptor is not the inode `attach` opened.
pub const IMAGE_CHANGED: &str = "attach.image-changed";

/// Stable code of the refusal when the user who ran `attach` through sudo or pkexec may not
/// read (or, for a writable device, write) the image ([`check_invoker_access`]).
pub const INVOKER_DENIED: &str = "attach.invoker-denied";

/// Open `path` for serving, once: every later step (format detection, secrets, the remap engine,
/// the file path, the state record) works on this descriptor or duplicates of it, so a rename or
/// symlink swap of `path` after this call changes nothing served. Read-write when `want_write`
/// (falling back to read-only, with a note, when the file cannot be written). `O_DIRECT` is not
/// set yet: [`ImageFile::serve_through_file`] sets it for the file path, the remap engine for
/// itself. The path recorded is where the opened inode is (`readlink /proc/self/fd/N`).
///
/// # Errors
/// `Io` when the file cannot be opened; `InvalidInput` when it is not a regular file.
pub fn open_image(path: &Path, want_write: bool) -> crate::Result<ImageFile> {
    let mut notes = Vec::new();
    let mut writable = want_write;
    let shown = path.display();
    let file = if want_write {
        match std::fs::OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS | libc::EPERM | libc::ETXTBSY)) => {
                notes.push(crate::finding::Finding::info(
                    "attach.read-only",
                    format!("the image cannot be opened for writing ({e}): the device is read-only"),
                ));
                writable = false;
                File::open(path).map_err(|e| crate::Error::io(format!("cannot open {shown}"), e))?
            }
            Err(e) => return Err(crate::Error::io(format!("cannot open {shown}"), e)),
        }
    } else {
        File::open(path).map_err(|e| crate::Error::io(format!("cannot open {shown}"), e))?
    };
    let meta = file.metadata().map_err(|e| crate::Error::io(format!("cannot stat {shown}"), e))?;
    if !meta.is_file() {
        return Err(crate::Error::invalid(format!("{shown} is not a regular file")));
    }
    let abs = served_path(&file).unwrap_or_else(|| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    let physical_bs_shift = physical_block_shift(&meta);
    Ok(ImageFile { file, path: abs, writable, direct_io: false, physical_bs_shift, notes, raw_device: None })
}

/// Where the inode open as `file` is now: `readlink /proc/self/fd/N` (the kernel's path of the
/// open file, ` (deleted)` appended once it is unlinked).
pub fn served_path(file: &File) -> Option<PathBuf> {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()
}

impl ImageFile {
    /// A duplicate of the descriptor (the same open file description, so the same inode and the
    /// same lease), for the format analysis or the remap engine.
    ///
    /// # Errors
    /// `Io` when the descriptor cannot be duplicated.
    pub fn duplicate(&self) -> crate::Result<File> {
        self.file.try_clone().map_err(|e| crate::Error::io("cannot duplicate the image descriptor", e))
    }

    /// Prepare to serve through the file, in `block`-byte logical blocks: `O_DIRECT` when the
    /// file system supports it at that granularity (cleared otherwise, also when a remap attempt
    /// set it).
    pub fn serve_through_file(&mut self, block: u32) {
        self.direct_io = set_direct_io(&self.file, &mut self.notes, block);
    }

    /// Check that `fd` (what a backend serves) is this very inode (`st_dev`/`st_ino`).
    ///
    /// # Errors
    /// `Unsafe` ([`IMAGE_CHANGED`]) when it is another file; `Io` when either cannot be examined.
    pub fn check_same_inode(&self, fd: std::os::fd::BorrowedFd<'_>) -> crate::Result<()> {
        let a = rustix::fs::fstat(&self.file).map_err(|e| crate::Error::io("cannot examine the image", e.into()))?;
        let b = rustix::fs::fstat(fd).map_err(|e| crate::Error::io("cannot examine the served file", e.into()))?;
        same_inode((a.st_dev, a.st_ino), (b.st_dev, b.st_ino)).map_err(|why| {
            crate::Error::new(crate::ErrorKind::Unsafe, format!("{}: {why} ({IMAGE_CHANGED})", self.path.display()))
        })
    }
}

/// The comparison behind [`ImageFile::check_same_inode`]: `(st_dev, st_ino)` pairs.
///
/// # Errors
/// What differs, for the message.
pub fn same_inode(analysed: (u64, u64), served: (u64, u64)) -> Result<(), String> {
    if analysed == served {
        Ok(())
    } else {
        Err(format!(
            "the file about to be served (device {:#x}, inode {}) is not the one analysed (device {:#x}, inode {}); \
             the path was replaced meanwhile, refusing to serve it",
            served.0, served.1, analysed.0, analysed.1
        ))
    }
}

/// For `attach` run through sudo or pkexec (as root on behalf of user `uid`, group `gid`): may
/// that user read `path` (and, with `write`, write it), and is what the user reaches through
/// `path` the inode open as `file`? Checked on a short-lived thread that takes the user's ids
/// (real, effective, saved and file-system uid and gid; supplementary groups cleared: only the
/// user's primary group counts, so access through a secondary group is refused) and calls
/// `faccessat(path, R_OK[|W_OK], AT_EACCESS)` and `stat(path)`; the process's own credentials
/// never change. Root (`uid` 0) passes.
///
/// # Errors
/// `Unsafe` ([`INVOKER_DENIED`]) when the user may not, or reaches another file; `Io` when the
/// check cannot run.
pub fn check_invoker_access(path: &Path, file: &File, uid: u32, gid: u32, write: bool) -> crate::Result<()> {
    use rustix::fs::{Access, AtFlags};
    if uid == 0 {
        return Ok(());
    }
    let me = rustix::fs::fstat(file).map_err(|e| crate::Error::io("cannot examine the image", e.into()))?;
    let path_owned = path.to_path_buf();
    let result = std::thread::Builder::new()
        .name("loopkit-access".into())
        .spawn(move || -> Result<(), String> {
            let (u, g) = (rustix::process::Uid::from_raw(uid), rustix::process::Gid::from_raw(gid));
            rustix::thread::set_thread_groups(&[]).map_err(|e| format!("cannot drop groups: {e}"))?;
            rustix::thread::set_thread_res_gid(g, g, g).map_err(|e| format!("cannot take gid {gid}: {e}"))?;
            rustix::thread::set_thread_res_uid(u, u, u).map_err(|e| format!("cannot take uid {uid}: {e}"))?;
            let mode = if write { Access::READ_OK | Access::WRITE_OK } else { Access::READ_OK };
            let what = if write { "read and write" } else { "read" };
            rustix::fs::accessat(rustix::fs::CWD, &path_owned, mode, AtFlags::EACCESS)
                .map_err(|e| format!("uid {uid} may not {what} it ({e})"))?;
            let st = rustix::fs::stat(&path_owned).map_err(|e| format!("uid {uid} cannot examine it ({e})"))?;
            same_inode((me.st_dev, me.st_ino), (st.st_dev, st.st_ino))
                .map_err(|_| format!("uid {uid} reaches another file through the path"))
        })
        .map_err(|e| crate::Error::io("cannot start the access check", e))?
        .join()
        .map_err(|_| crate::Error::invalid("the access check failed"))?;
    result.map_err(|why| {
        crate::Error::new(
            crate::ErrorKind::Unsafe,
            format!(
                "{}: attach runs as root on behalf of uid {uid} (sudo/pkexec), and {why}; refusing ({INVOKER_DENIED})",
                path.display()
            ),
        )
    })
}

/// Turn on `O_DIRECT` when the file system reports direct-I/O alignment of at most `block` bytes
/// (statx `STATX_DIOALIGN`; the device's requests are whole logical blocks, its buffers at
/// least that aligned); otherwise make sure it is off (a remap attempt may have set it on the
/// shared description) and say why.
fn set_direct_io(file: &File, notes: &mut Vec<crate::finding::Finding>, block: u32) -> bool {
    use rustix::fs::{AtFlags, OFlags, StatxFlags};
    let why = match rustix::fs::statx(file.as_fd(), "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN) {
        Ok(st) if StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::DIOALIGN) => {
            let (mem, off) = (st.stx_dio_mem_align, st.stx_dio_offset_align);
            if off == 0 {
                "the file system does not support direct I/O".to_string()
            } else if off > block || mem > block {
                format!(
                    "direct I/O needs {off}-byte offsets and {mem}-byte buffers, the device serves {block}-byte blocks \
                     (--logical-block-size {off} would allow it)"
                )
            } else {
                match rustix::fs::fcntl_getfl(file).and_then(|fl| rustix::fs::fcntl_setfl(file, fl | OFlags::DIRECT)) {
                    Ok(()) => return true,
                    Err(e) => format!("cannot set O_DIRECT: {e}"),
                }
            }
        }
        Ok(_) => "the kernel does not report direct-I/O alignment".to_string(),
        Err(e) => format!("statx failed: {e}"),
    };
    let _ = rustix::fs::fcntl_getfl(file).and_then(|fl| rustix::fs::fcntl_setfl(file, fl - OFlags::DIRECT));
    notes.push(crate::finding::Finding::info("attach.page-cache", format!("serving through the page cache: {why}")));
    false
}

/// log2 of the physical block size of the block device holding the file (sysfs), 9 if unknown.
fn physical_block_shift(meta: &std::fs::Metadata) -> u8 {
    use std::os::unix::fs::MetadataExt;
    let dev = meta.dev();
    let (maj, min) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    let base = format!("/sys/dev/block/{maj}:{min}");
    // A partition has no queue/ of its own: its disk's is one level up.
    let read = |p: String| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u32>().ok());
    let pbs = read(format!("{base}/queue/physical_block_size"))
        .or_else(|| read(format!("{base}/../queue/physical_block_size")))
        .unwrap_or(512);
    if pbs.is_power_of_two() && (512..=65536).contains(&pbs) { pbs.trailing_zeros() as u8 } else { 9 }
}

/// Put this process into its own mount namespace with private propagation, so a file system
/// mounted from the device it serves never lives in the server's namespace (the libublk
/// README's deadlock at exit). Call before the device exists.
///
/// # Errors
/// `Io` when `unshare` or the propagation change fails (not root).
pub fn private_mount_namespace() -> crate::Result<()> {
    crate::sys::unshare_mount_namespace()
        .map_err(|e| crate::Error::io("cannot unshare the mount namespace (attach needs root)", e))?;
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| crate::Error::io("cannot make the mounts private", e.into()))
}

/// The most hardware queues [`default_queues`] gives: each queue is a server thread (and, on
/// the copy path, a buffer of up to [`server::MAX_IO_BYTES`] per tag); past a few, one server
/// thread per CPU adds threads, not speed, for one image.
pub const DEFAULT_QUEUES_MAX: u16 = 4;

/// The default number of hardware queues: one per CPU this process may run on, at most
/// [`DEFAULT_QUEUES_MAX`]. With one queue per CPU each submitting CPU has its own queue, so
/// requests from different CPUs are served (and under `--decrypt` decrypted) by different
/// server threads.
pub fn default_queues() -> u16 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    u16::try_from(cpus).unwrap_or(u16::MAX).clamp(1, DEFAULT_QUEUES_MAX)
}

/// Settings for [`run`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Hardware queues.
    pub queues: u16,
    /// Queue depth.
    pub depth: u16,
    /// Show the device read-only (also when the backend cannot write).
    pub read_only: bool,
    /// Use zero copy when the driver has it.
    pub allow_zero_copy: bool,
    /// `file`, `decrypt`, `remap` (for `--list`).
    pub mode: String,
    /// The image's absolute path (for `--list` and `detach IMAGE`).
    pub image: PathBuf,
    /// `O_DIRECT` on the image (for `--list`).
    pub direct_io: bool,
    /// log2 of the physical block size to advertise.
    pub physical_bs_shift: u8,
    /// The remap engine's verified raw device (for `--list`), if remapping.
    pub raw_device: Option<String>,
    /// Seconds a device whose server died waits for `attach --recover` before its I/O fails
    /// and it is removed ([`supervise`]); 0: no user recovery (the device fails and goes away
    /// with its server).
    pub recovery_timeout_secs: u64,
    /// Resume serving this existing device (quiesced, its server gone) instead of creating one.
    pub recover: Option<u32>,
    /// The logical block size asked for (`--logical-block-size`); at least what the backend and
    /// the cipher need. `None`: the smallest they allow (512 on most disks).
    pub logical_block_bytes: Option<u32>,
    /// The user on whose behalf the device is attached (recorded; only they may recover it).
    pub owner_uid: Option<u32>,
}

/// Serve `backend` until `stop` (or until the device is removed): unshare the mount namespace,
/// create the device, record it in the state directory, call `announce` with the record once
/// live (print the path), run `on_stop` when stopping begins (close layers such as dm-crypt),
/// then flush, drop the image's cached pages, update its mtime if written, forget the record.
/// Failed requests are told to `remarks` (the library never prints).
///
/// # Errors
/// `Unsupported` without ublk; `Io` from the kernel; whatever `announce` returns.
pub fn run<B: Backend>(
    backend: Arc<B>,
    opts: &Options,
    stop: &Interrupt,
    announce: impl FnOnce(&state::Entry) -> crate::Result<Option<String>> + Send + Sync + 'static,
    on_stop: impl FnOnce() + Send + Sync + 'static,
    remarks: Arc<dyn crate::progress::Remarks>,
) -> crate::Result<Finished> {
    server::available()?;
    private_mount_namespace()?;
    let unit = logical_block(&*backend, opts.logical_block_bytes)?;
    let lbs = unit.trailing_zeros() as u8;
    let cfg = server::Config {
        queues: opts.queues,
        depth: opts.depth,
        read_only: opts.read_only || !backend.writable(),
        allow_zero_copy: opts.allow_zero_copy,
        logical_bs_shift: lbs,
        physical_bs_shift: opts.physical_bs_shift.max(lbs),
        recovery: opts.recovery_timeout_secs > 0,
        recover: opts.recover,
    };
    let image_st =
        rustix::fs::fstat(backend.image_fd()).map_err(|e| crate::Error::io("cannot examine the image", e.into()))?;
    // Recovery and the supervisor's removal of the device exclude each other until it is live.
    let recovery_lock = match opts.recover {
        Some(id) => Some(state::recovery_lock(id)?.ok_or_else(|| {
            crate::Error::new(
                crate::ErrorKind::Unsafe,
                format!("/dev/ublkb{id} is being recovered or removed by another process right now"),
            )
        })?),
        None => None,
    };
    let entry = new_entry(&*backend, opts, &cfg, &image_st);
    let timeout_secs = opts.recovery_timeout_secs;
    let recorded = Arc::new(std::sync::Mutex::new(None::<state::Entry>));
    let rec = recorded.clone();
    let on_live = move |live: &server::Live| -> crate::Result<()> {
        let mut e = entry;
        e.dev_id = live.dev_id;
        e.device = live.device.clone();
        e.data_path = live.data_path.as_str().to_string();
        e.recovery = live.recovery;
        e.discard = live.discard;
        e.recovery_timeout_secs = if live.recovery { timeout_secs } else { 0 };
        state::record(&e)?;
        drop(recovery_lock);
        *rec.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
        if let Some(mapper) = announce(&e)? {
            e.mapper = Some(mapper);
            state::record(&e)?;
            *rec.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
        Ok(())
    };
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = spawn_state_watcher(backend.clone(), recorded.clone(), done.clone());
    let result = server::serve(backend.clone(), &cfg, stop, on_live, on_stop, remarks);
    done.store(true, std::sync::atomic::Ordering::Release);
    if let Some(w) = watcher {
        let _ = w.join();
    }
    if let Some(e) = recorded.lock().unwrap_or_else(|p| p.into_inner()).take() {
        state::forget(e.dev_id);
    }
    let fin = result?;
    release_image(backend.image_fd(), fin.wrote);
    Ok(fin)
}

/// The state record of a device about to be served: what `opts` and `backend` say; the device,
/// its data path and recovery are filled in once it is live.
fn new_entry<B: Backend>(
    backend: &B,
    opts: &Options,
    cfg: &server::Config,
    image_st: &rustix::fs::Stat,
) -> state::Entry {
    state::Entry {
        image: opts.image.to_string_lossy().into_owned(),
        device: String::new(),
        dev_id: 0,
        pid: std::process::id(),
        mode: opts.mode.clone(),
        read_only: cfg.read_only,
        size_bytes: backend.size_bytes(),
        logical_block_bytes: 1 << cfg.logical_bs_shift,
        physical_block_bytes: 1 << cfg.physical_bs_shift,
        data_path: String::new(),
        direct_io: opts.direct_io,
        remap: backend.remap_state(),
        remap_code: backend.remap_code(),
        lease: backend.lease(),
        queues: opts.queues.clamp(1, 64),
        depth: opts.depth.clamp(1, 4096),
        mapper: None,
        kernel: rustix::system::uname().release().to_string_lossy().into_owned(),
        raw_device: opts.raw_device.clone(),
        recovery: false,
        recovery_timeout_secs: 0,
        image_dev: image_st.st_dev,
        image_ino: image_st.st_ino,
        owner_uid: opts.owner_uid,
        discard: false,
    }
}

/// Keep the record's remap state and lease current (a lease break switches the remap engine
/// to the file while the device stays up), so `attach --list` shows what is true now; the
/// thread ends when `done` is set.
fn spawn_state_watcher<B: Backend>(
    backend: Arc<B>,
    recorded: Arc<std::sync::Mutex<Option<state::Entry>>>,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("loopkit-state".into())
        .spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(200));
                backend.watch();
                let mut g = recorded.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = g.as_mut() {
                    let (remap, code, lease) = (backend.remap_state(), backend.remap_code(), backend.lease());
                    if e.remap != remap || e.remap_code != code || e.lease != lease {
                        e.remap = remap;
                        e.remap_code = code;
                        e.lease = lease;
                        let _ = state::record(e);
                    }
                }
            }
        })
        .ok()
}

/// Watch device `dev_id`'s server (run in a process of its own, started once the device is
/// live, that survives the server): while the server recorded in the state directory runs,
/// nothing; once it is gone, the device either is recovered within `timeout` (the driver names
/// another server and serves it: done) or is stopped and deleted, so the I/O queued on it fails
/// instead of waiting for ever. Also done when the device or its record goes away (a clean
/// detach). The record is kept (`--list` shows it stale, `detach` forgets it).
///
/// # Errors
/// From the state directory; when the record has no server start time.
pub fn supervise(dev_id: u32, timeout: std::time::Duration) -> crate::Result<Supervised> {
    use std::time::{Duration, Instant};
    let Some(rec) = state::find_id(dev_id)? else {
        return Ok(Supervised::Detached);
    };
    let (pid, ticks) = (rec.entry.pid, rec.server_start_ticks);
    if ticks.is_none() {
        return Err(crate::Error::invalid("the record carries no server start time"));
    }
    let tick = Duration::from_millis(200);
    while !state::server_gone(pid, ticks) {
        std::thread::sleep(tick);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let still_recorded = state::find_id(dev_id)?.is_some_and(|l| l.entry.pid == pid);
        let Some(info) = server::device_state(dev_id) else {
            return Ok(Supervised::Detached);
        };
        if !info.no_server_but(pid) {
            match info.state {
                server::DeviceState::Live => return Ok(Supervised::Recovered),
                // Being recovered right now (the recovering process holds the recovery lock,
                // so the deadline below cannot remove it meanwhile): see what it comes to.
                server::DeviceState::Quiesced => {}
                _ => return Ok(Supervised::Detached),
            }
        }
        if !still_recorded && info.state != server::DeviceState::Quiesced {
            // A clean detach stops the device, then forgets the record.
            return Ok(Supervised::Detached);
        }
        if Instant::now() >= deadline {
            // Unless a recovery holds the lock (then see what it comes to): still the dead
            // server's device, and nobody recovering it.
            if let Some(_lock) = state::recovery_lock(dev_id)?
                && server::device_state(dev_id)
                    .is_some_and(|i| i.no_server_but(pid) && i.state == server::DeviceState::Quiesced)
            {
                server::delete_device(dev_id);
                return Ok(Supervised::Removed);
            }
        }
        std::thread::sleep(tick);
    }
}

/// How [`supervise`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Supervised {
    /// The device (or its record) went away with a clean detach.
    Detached,
    /// Another server recovered it.
    Recovered,
    /// Not recovered in time: stopped and deleted (its I/O failed).
    Removed,
}

/// The device's logical block size: `asked` (`--logical-block-size`), else the smallest the
/// backend (the raw disk's logical block under `--remap`) and the cipher's sector allow; the
/// device size must be a whole number of them.
///
/// # Errors
/// `InvalidInput` when `asked` is not a power of two in 512..=4096, is smaller than what the
/// backend or the cipher needs, or does not divide the size.
pub fn logical_block<B: Backend>(backend: &B, asked: Option<u32>) -> crate::Result<u32> {
    let sector = backend.crypt().map_or(512, |c| u32::try_from(c.cipher.sector_bytes()).unwrap_or(u32::MAX));
    let need = sector.max(backend.logical_block()).max(512);
    let unit = match asked {
        Some(a) if !a.is_power_of_two() || !(512..=4096).contains(&a) => {
            return Err(crate::Error::invalid(format!("--logical-block-size {a}: use 512, 1024, 2048 or 4096")));
        }
        Some(a) if a < need => {
            return Err(crate::Error::invalid(format!(
                "--logical-block-size {a} is smaller than the {need}-byte blocks this image needs (the disk's logical \
                 block under --remap, or the cipher's sector)"
            )));
        }
        Some(a) => a,
        None => need,
    };
    if !backend.size_bytes().is_multiple_of(u64::from(unit)) {
        return Err(crate::Error::invalid(format!(
            "the device would be {} bytes, not a whole number of {unit}-byte logical blocks",
            backend.size_bytes()
        )));
    }
    Ok(unit)
}

/// At detach: drop the image's cached pages (the device may have written around the page
/// cache) and, if anything was written, set its mtime and ctime to now.
fn release_image(fd: std::os::fd::BorrowedFd<'_>, wrote: bool) {
    let _ = rustix::fs::fadvise(fd, 0, None, rustix::fs::Advice::DontNeed);
    if wrote {
        let now = rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW };
        let keep = rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_OMIT };
        let _ = rustix::fs::futimens(fd, &rustix::fs::Timestamps { last_access: keep, last_modification: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_inode_must_be_the_analysed_one() {
        assert!(same_inode((0x801, 12), (0x801, 12)).is_ok());
        assert!(same_inode((0x801, 12), (0x801, 13)).is_err(), "another inode on the same device");
        assert!(same_inode((0x801, 12), (0x802, 12)).is_err(), "the same inode number on another device");
    }

    #[test]
    fn open_image_records_where_the_inode_is_not_the_symlink() {
        let d = std::env::temp_dir().join(format!("loopkit-attach-open-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a.img"), vec![0u8; 4096]).unwrap();
        std::fs::write(d.join("b.img"), vec![1u8; 4096]).unwrap();
        let _ = std::fs::remove_file(d.join("IMAGE"));
        std::os::unix::fs::symlink("a.img", d.join("IMAGE")).unwrap();
        let img = open_image(&d.join("IMAGE"), false).unwrap();
        // Re-pointed after the open: the opened inode and the recorded path stay a.img's.
        std::fs::remove_file(d.join("IMAGE")).unwrap();
        std::os::unix::fs::symlink("b.img", d.join("IMAGE")).unwrap();
        assert_eq!(img.path.file_name().and_then(|n| n.to_str()), Some("a.img"));
        let mut buf = [9u8; 1];
        use std::os::unix::fs::FileExt;
        img.file.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [0]);
        let swapped = File::open(d.join("IMAGE")).unwrap();
        let err = img.check_same_inode(swapped.as_fd()).unwrap_err();
        assert!(err.to_string().contains(IMAGE_CHANGED), "{err}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
