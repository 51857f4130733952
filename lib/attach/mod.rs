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
    /// Its absolute path.
    pub path: PathBuf,
    /// Opened for writing.
    pub writable: bool,
    /// `O_DIRECT` is set.
    pub direct_io: bool,
    /// log2 of the physical block size of the device the file lives on (9 or 12…).
    pub physical_bs_shift: u8,
    /// Remarks for the user (why read-only, why buffered).
    pub notes: Vec<String>,
}

/// Open `path` for serving: read-write when `want_write` (falling back to read-only, with a
/// note, when the file cannot be written), `O_DIRECT` when the file system supports it at
/// 512-byte granularity.
///
/// # Errors
/// `Io` when the file cannot be opened; `InvalidInput` when it is not a regular file.
pub fn open_image(path: &Path, want_write: bool) -> crate::Result<ImageFile> {
    let abs =
        std::fs::canonicalize(path).map_err(|e| crate::Error::io(format!("cannot open {}", path.display()), e))?;
    let mut notes = Vec::new();
    let mut writable = want_write;
    let file = if want_write {
        match std::fs::OpenOptions::new().read(true).write(true).open(&abs) {
            Ok(f) => f,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EROFS | libc::EPERM | libc::ETXTBSY)) => {
                notes.push(format!("the image cannot be opened for writing ({e}): the device is read-only"));
                writable = false;
                File::open(&abs).map_err(|e| crate::Error::io(format!("cannot open {}", abs.display()), e))?
            }
            Err(e) => return Err(crate::Error::io(format!("cannot open {}", abs.display()), e)),
        }
    } else {
        File::open(&abs).map_err(|e| crate::Error::io(format!("cannot open {}", abs.display()), e))?
    };
    let meta = file.metadata().map_err(|e| crate::Error::io(format!("cannot stat {}", abs.display()), e))?;
    if !meta.is_file() {
        return Err(crate::Error::invalid(format!("{} is not a regular file", abs.display())));
    }
    let direct_io = set_direct_io(&file, &mut notes);
    let physical_bs_shift = physical_block_shift(&meta);
    Ok(ImageFile { file, path: abs, writable, direct_io, physical_bs_shift, notes })
}

/// Turn on `O_DIRECT` when the file system reports 512-byte direct-I/O alignment (statx
/// `STATX_DIOALIGN`); otherwise stay buffered and say why.
fn set_direct_io(file: &File, notes: &mut Vec<String>) -> bool {
    use rustix::fs::{AtFlags, OFlags, StatxFlags};
    let why = match rustix::fs::statx(file.as_fd(), "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN) {
        Ok(st) if StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::DIOALIGN) => {
            let (mem, off) = (st.stx_dio_mem_align, st.stx_dio_offset_align);
            if off == 0 {
                "the file system does not support direct I/O".to_string()
            } else if off > 512 || mem > 512 {
                format!("direct I/O needs {off}-byte offsets and {mem}-byte buffers, the device serves 512-byte blocks")
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
    notes.push(format!("serving through the page cache: {why}"));
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
}

/// Serve `backend` until `stop` (or until the device is removed): unshare the mount namespace,
/// create the device, record it in the state directory, call `announce` with the record once
/// live (print the path), run `on_stop` when stopping begins (close layers such as dm-crypt),
/// then flush, drop the image's cached pages, update its mtime if written, forget the record.
///
/// # Errors
/// `Unsupported` without ublk; `Io` from the kernel; whatever `announce` returns.
pub fn run<B: Backend>(
    backend: Arc<B>,
    opts: &Options,
    stop: &Interrupt,
    announce: impl FnOnce(&state::Entry) -> crate::Result<Option<String>> + Send + Sync + 'static,
    on_stop: impl FnOnce() + Send + Sync + 'static,
) -> crate::Result<Finished> {
    server::available()?;
    private_mount_namespace()?;
    let unit = backend.crypt().map_or(512, |c| c.cipher.sector_bytes().max(512));
    let lbs = unit.trailing_zeros() as u8;
    let cfg = server::Config {
        queues: opts.queues,
        depth: opts.depth,
        read_only: opts.read_only || !backend.writable(),
        allow_zero_copy: opts.allow_zero_copy,
        logical_bs_shift: lbs,
        physical_bs_shift: opts.physical_bs_shift.max(lbs),
    };
    let entry = state::Entry {
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
        lease: backend.lease(),
        queues: opts.queues.clamp(1, 64),
        depth: opts.depth.clamp(1, 4096),
        mapper: None,
        kernel: rustix::system::uname().release().to_string_lossy().into_owned(),
    };
    let recorded = Arc::new(std::sync::Mutex::new(None::<state::Entry>));
    let rec = recorded.clone();
    let on_live = move |live: &server::Live| -> crate::Result<()> {
        let mut e = entry;
        e.dev_id = live.dev_id;
        e.device = live.device.clone();
        e.data_path = live.data_path.as_str().to_string();
        state::record(&e)?;
        *rec.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.clone());
        if let Some(mapper) = announce(&e)? {
            e.mapper = Some(mapper);
            state::record(&e)?;
            *rec.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        }
        Ok(())
    };
    // Keep the record's remap state and lease current (a lease break switches the remap engine
    // to the file while the device stays up): `attach --list` shows what is true now.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (backend, recorded, done) = (backend.clone(), recorded.clone(), done.clone());
        std::thread::Builder::new()
            .name("loopkit-state".into())
            .spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    backend.watch();
                    let mut g = recorded.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(e) = g.as_mut() {
                        let (remap, lease) = (backend.remap_state(), backend.lease());
                        if e.remap != remap || e.lease != lease {
                            e.remap = remap;
                            e.lease = lease;
                            let _ = state::record(e);
                        }
                    }
                }
            })
            .ok()
    };
    let result = server::serve(backend.clone(), &cfg, stop, on_live, on_stop);
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
