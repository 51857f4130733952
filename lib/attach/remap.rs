//! [`RemapBackend`]: the ublk seam over the remap engine (`loopkit attach --remap`). Requests
//! split into raw-device pieces for mapped extents, zeros for holes and unwritten extents, and
//! image-file pieces for the rest; writes that need the file system (holes, unwritten, shared,
//! unaligned) go through the engine's slow path, which re-maps the range afterwards. With a
//! [`Crypt`], the device shows the decryption of `size` bytes from byte `base` of the image
//! (`--remap --decrypt`).

use super::backend::{Backend, Crypt, Seg, Target, punch_granularity};
use crate::remap::engine::SyncTarget;
use crate::remap::{Engine, Guard, Options, Piece, Preflight};
use crate::source::ByteSink;
use std::cell::RefCell;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

fn sync_target(t: Target) -> SyncTarget {
    match t {
        Target::Device => SyncTarget::Device,
        Target::Image => SyncTarget::File,
    }
}

/// The re-validation waits at least this many times its own last duration before it runs again,
/// so it costs at most about a tenth of one core however large the map is.
const REVALIDATE_COST_FACTOR: u32 = 10;

/// The remap engine as a ublk backend.
#[derive(Debug)]
pub struct RemapBackend {
    engine: Engine,
    base: u64,
    size: u64,
    writable: bool,
    crypt: Option<Crypt>,
    /// When the last re-validation ended and how long it took.
    last_revalidation: std::sync::Mutex<(std::time::Instant, std::time::Duration)>,
    /// DISCARD/WRITE_ZEROES granularity, when advertised (writable, no cipher, the image's file
    /// system punches holes).
    discard: Option<u32>,
    /// Discards running on their own threads; [`Backend::flush`] waits for them.
    discards: std::sync::Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>,
}

/// How long the flush at shutdown waits for discards still running on their threads.
const DISCARD_DRAIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Counts a discard thread while it runs.
struct Running(std::sync::Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>);

impl Running {
    fn new(c: &std::sync::Arc<(std::sync::Mutex<usize>, std::sync::Condvar)>) -> Running {
        if let Ok(mut n) = c.0.lock() {
            *n += 1;
        }
        Running(std::sync::Arc::clone(c))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.0.lock() {
            *n = n.saturating_sub(1);
        }
        self.0.1.notify_all();
    }
}

/// Benchmark knob, not for real use: `LOOPKIT_REMAP_REVALIDATE_MS` sets how often the state
/// thread re-validates the extent map (default [`REVALIDATE_SECS`](crate::remap::engine::REVALIDATE_SECS));
/// `0` turns off both the re-validation and the lease poll, so that their cost can be measured
/// (`testdata/bench/remap-revalidate.sh`). Breaks are still seen through SIGIO and at FLUSH.
fn revalidate_period() -> Option<std::time::Duration> {
    static PERIOD: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *PERIOD.get_or_init(|| {
        let default = std::time::Duration::from_secs(crate::remap::engine::REVALIDATE_SECS);
        match std::env::var("LOOPKIT_REMAP_REVALIDATE_MS").ok().map(|v| v.trim().parse::<u64>()) {
            None | Some(Err(_)) => Some(default),
            Some(Ok(0)) => None,
            Some(Ok(ms)) => Some(std::time::Duration::from_millis(ms)),
        }
    })
}

thread_local! {
    static PIECES: RefCell<Vec<Piece>> = const { RefCell::new(Vec::new()) };
}

impl RemapBackend {
    /// Open `path` with the remap engine (preflight, lease, …) and serve `size` bytes from byte
    /// `base` (the whole file when `None`).
    ///
    /// # Errors
    /// `Unsafe` with the reasons when preflight refuses (callers fall back to the file path);
    /// `Unsupported` on a device whose logical blocks are not 512 bytes; `InvalidInput` for a
    /// window that is not whole sectors.
    pub fn open(
        path: &Path,
        read_only: bool,
        window: Option<(u64, u64)>,
        crypt: Option<Crypt>,
    ) -> crate::Result<(RemapBackend, Preflight)> {
        let mut oo = std::fs::OpenOptions::new();
        oo.read(true).write(!read_only);
        let file = oo.open(path).map_err(|e| crate::Error::io(format!("cannot open {}", path.display()), e))?;
        RemapBackend::open_file(file, path, read_only, window, crypt)
    }

    /// [`RemapBackend::open`] over the image already open as `file` ([`Engine::open_file`]: the
    /// inode behind `file` is served; `path` only names it).
    ///
    /// # Errors
    /// As [`RemapBackend::open`].
    pub fn open_file(
        file: std::fs::File,
        path: &Path,
        read_only: bool,
        window: Option<(u64, u64)>,
        crypt: Option<Crypt>,
    ) -> crate::Result<(RemapBackend, Preflight)> {
        let (engine, pf) = Engine::open_file(file, path, &Options { read_only, ..Options::default() })?;
        let align = engine.alignment() as u64;
        if !align.is_power_of_two() || !(512..=4096).contains(&align) {
            // Closed here, not on drop: the lease watcher may hold the engine for a while.
            let _ = engine.close();
            return Err(crate::Error::unsupported(format!(
                "the disk under {} has {align}-byte logical blocks; attach --remap serves 512 to 4096",
                path.display(),
            )));
        }
        let (base, size) = window.unwrap_or((0, engine.size()));
        // The device shows the disk's logical blocks (4Kn: 4096), so every request is aligned
        // for raw I/O.
        let unit = crypt.as_ref().map_or(512, |c| c.cipher.sector_bytes() as u64).max(align);
        if size == 0
            || !size.is_multiple_of(unit)
            || !base.is_multiple_of(align)
            || base.checked_add(size).is_none_or(|e| e > engine.size())
        {
            let _ = engine.close();
            return Err(crate::Error::invalid(format!(
                "cannot serve {size} bytes from byte {base} of a {}-byte image in {unit}-byte blocks",
                engine.size()
            )));
        }
        // Discards punch through the engine, which forgets the range, waits for raw I/O planned
        // before and re-maps it; with a cipher, zeros would have to be ciphertext of zeros.
        let discard = if read_only || crypt.is_some() {
            None
        } else {
            punch_granularity(engine.file_fd()).map(|g| g.max(align as u32))
        };
        Ok((
            RemapBackend {
                engine,
                base,
                size,
                writable: !read_only,
                crypt,
                last_revalidation: std::sync::Mutex::new((std::time::Instant::now(), std::time::Duration::ZERO)),
                discard,
                discards: std::sync::Arc::new((std::sync::Mutex::new(0), std::sync::Condvar::new())),
            },
            pf,
        ))
    }

    /// The engine (state, counters).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn convert(pieces: &[Piece], out: &mut Vec<Seg>) -> io::Result<()> {
        for p in pieces {
            let len = |n: u64| u32::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
            out.push(match *p {
                Piece::Device { offset, len: n } => Seg::Io { target: Target::Device, offset, len: len(n)? },
                Piece::File { offset, len: n } => Seg::Io { target: Target::Image, offset, len: len(n)? },
                Piece::Zero { len: n } => Seg::Zero { len: len(n)? },
            });
        }
        Ok(())
    }

    fn window(&self, offset: u64, len: u32) -> io::Result<u64> {
        match offset.checked_add(u64::from(len)) {
            Some(end) if end <= self.size => Ok(self.base + offset),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
}

impl Backend for RemapBackend {
    type Guard = Guard;

    fn size_bytes(&self) -> u64 {
        self.size
    }
    fn image_fd(&self) -> BorrowedFd<'_> {
        self.engine.file_fd()
    }
    fn device_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.engine.device_fd())
    }
    fn writable(&self) -> bool {
        self.writable
    }
    fn logical_block(&self) -> u32 {
        self.engine.alignment() as u32
    }
    fn crypt(&self) -> Option<&Crypt> {
        self.crypt.as_ref()
    }
    fn remap_state(&self) -> String {
        let st = self.engine.state();
        match (st.remapping, st.stopped_because) {
            (true, _) => "active".into(),
            (false, Some(why)) => format!("stopped: {why}"),
            (false, None) => "stopped".into(),
        }
    }
    fn remap_code(&self) -> Option<String> {
        let st = self.engine.state();
        if st.remapping { None } else { st.stopped_code.map(str::to_string) }
    }
    fn lease(&self) -> Option<String> {
        Some(if self.engine.state().lease_held { "write lease held" } else { "released" }.into())
    }
    fn plan_read(&self, offset: u64, len: u32, out: &mut Vec<Seg>) -> io::Result<Guard> {
        let at = self.window(offset, len)?;
        PIECES.with(|p| {
            let mut p = p.borrow_mut();
            p.clear();
            // Queue threads never wait for a range another request holds: a discard holding it
            // may be waiting for this thread's own raw I/O (`WouldBlock`: the server retries).
            let g = self.engine.try_plan_read(at, u64::from(len), &mut p)?;
            Self::convert(&p, out)?;
            Ok(g)
        })
    }
    fn plan_write(&self, offset: u64, len: u32, out: &mut Vec<Seg>) -> io::Result<Option<Guard>> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        let at = self.window(offset, len)?;
        PIECES.with(|p| {
            let mut p = p.borrow_mut();
            p.clear();
            match self.engine.try_plan_write(at, u64::from(len), &mut p)? {
                Some(g) => {
                    Self::convert(&p, out)?;
                    Ok(Some(g))
                }
                None => Ok(None),
            }
        })
    }
    fn slow_write(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        let len = u32::try_from(buf.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let at = self.window(offset, len)?;
        self.engine.try_write_at(buf, at, fua)
    }
    fn watch(&self) {
        // The benchmark knob off: no lease poll, state check or re-validation at all.
        let Some(period) = revalidate_period() else { return };
        // The lease, the file system's state (read-only, shut down), then the extents.
        if self.engine.check_lease(true) && self.engine.check_fs(true) {
            // Every `period`, but never more than a tenth of the time: a map of a million
            // extents takes about a second of CPU to check, and holds the map's read lock
            // meanwhile (hole fills wait), so it is checked about every 10 s instead of
            // continuously.
            let due = self
                .last_revalidation
                .lock()
                .map(|last| last.0.elapsed() >= period.max(last.1 * REVALIDATE_COST_FACTOR))
                .unwrap_or(true);
            if due {
                let started = std::time::Instant::now();
                self.engine.revalidate_map();
                if let Ok(mut last) = self.last_revalidation.lock() {
                    *last = (std::time::Instant::now(), started.elapsed());
                }
            }
        }
    }
    fn plan_flush(&self, out: &mut Vec<Target>) {
        // A lost lease or a read-only / failed file system stops raw I/O before this FLUSH
        // completes (no draining here: this queue thread may hold guards of its own; the state
        // thread drains).
        self.engine.check_lease(false);
        self.engine.check_fs(false);
        if self.writable {
            // The device's cache when raw writes completed since its last flush, the image
            // (data and the metadata of holes filled through the file system) when file-path
            // writes did: a sync covers exactly the writes that completed before it started.
            if self.engine.sync_ticket(SyncTarget::Device).is_some() {
                out.push(Target::Device);
            }
            if self.engine.sync_ticket(SyncTarget::File).is_some() {
                out.push(Target::Image);
            }
        }
    }
    fn plan_fua(&self, segs: &[Seg], out: &mut Vec<Target>) {
        // A raw FUA write may land on blocks a file-path write allocated: that allocation is
        // committed first, or the FUA data could sit in blocks that are a hole after a crash.
        let raw = segs.iter().any(|s| matches!(s, Seg::Io { target: Target::Device, .. }));
        if raw && self.engine.sync_ticket(SyncTarget::File).is_some() {
            out.push(Target::Image);
        }
    }
    fn sync_ticket(&self, target: Target) -> u64 {
        self.engine.sync_ticket(sync_target(target)).unwrap_or(0)
    }
    fn synced(&self, target: Target, ticket: u64, for_fua: bool) {
        self.engine.synced(sync_target(target), ticket, for_fua);
    }
    fn flush(&self) -> io::Result<()> {
        // At shutdown: discards still running on their threads finish first (bounded).
        let (count, cv) = &*self.discards;
        if let Ok(n) = count.lock() {
            let _ = cv.wait_timeout_while(n, DISCARD_DRAIN, |n| *n > 0);
        }
        ByteSink::flush(&self.engine)
    }
    fn discard_granularity(&self) -> Option<u32> {
        self.discard
    }
    fn discard_off_thread(&self, offset: u64, len: u64, zero: bool) -> Option<io::Result<OwnedFd>> {
        Some(self.start_discard(offset, len, zero))
    }
}

impl RemapBackend {
    /// Run the engine's discard (or zeroing) of device bytes `offset..offset + len` on a thread
    /// of its own; the result (`i32`, 0 or `-errno`) is written to the returned pipe.
    fn start_discard(&self, offset: u64, len: u64, zero: bool) -> io::Result<OwnedFd> {
        if self.discard.is_none() {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        let start = match offset.checked_add(len) {
            Some(end) if end <= self.size => self.base + offset,
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        let (rx, tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let engine = self.engine.clone();
        let running = Running::new(&self.discards);
        std::thread::Builder::new().name("loopkit-discard".into()).spawn(move || {
            let _running = running;
            let r = if zero { engine.zero_range(start..start + len) } else { engine.discard(start..start + len) };
            let res: i32 = match r {
                Ok(()) => 0,
                Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
            };
            // A pipe write of 4 bytes is atomic; the reader gets EOF if this fails.
            let _ = rustix::io::write(&tx, &res.to_ne_bytes());
        })?;
        Ok(rx)
    }
}
