//! The ublk server (libublk 0.4.8): creates `/dev/ublkbN`, runs one thread per hardware queue
//! with one async task per tag, asks the [`Backend`] how each request splits and issues the
//! pieces through the queue's io_uring on the registered fixed files. Zero copy
//! (`UBLK_F_AUTO_BUF_REG`, Linux ≥ 6.16) when the driver has it and the data needs no
//! transformation; otherwise each tag owns a copy buffer.

use super::backend::{Backend, Seg, Target};
use crate::progress::{Interrupt, Level, Remarks};
use io_uring::{opcode, types};
use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::helpers::IoBuf;
use libublk::io::{BufDesc, UblkDev, UblkQueue};
use libublk::{UblkError, UblkFlags, sys};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the request data travels between the kernel and the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    /// `UBLK_F_AUTO_BUF_REG`: the request's pages are an io_uring fixed buffer; the image or
    /// device I/O reads and writes them directly.
    ZeroCopy,
    /// The kernel copies request data to and from a buffer per tag in the server.
    Copy,
}

impl DataPath {
    /// `zero-copy` or `copy` (the JSON spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            DataPath::ZeroCopy => "zero-copy",
            DataPath::Copy => "copy",
        }
    }
}

/// Device settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Hardware queues (one server thread each).
    pub queues: u16,
    /// Tags per queue (requests in flight per queue).
    pub depth: u16,
    /// Show the device read-only.
    pub read_only: bool,
    /// Use zero copy when the driver has it (off: always copy).
    pub allow_zero_copy: bool,
    /// log2 of the logical block size (9 = 512 bytes).
    pub logical_bs_shift: u8,
    /// log2 of the physical block size.
    pub physical_bs_shift: u8,
    /// Create the device with user recovery (`UBLK_F_USER_RECOVERY`, plus `_REISSUE` where the
    /// driver has it), so it outlives a crashed server; off, or a driver without it, gives the
    /// old behaviour (the device fails and goes away with its server).
    pub recovery: bool,
    /// Resume serving existing device N (quiesced, its server gone) instead of creating one:
    /// `START_USER_RECOVERY`, the queues fetch again, `END_USER_RECOVERY` (the requests that
    /// were in flight are issued again).
    pub recover: Option<u32>,
}

/// What the device looks like once it serves I/O.
#[derive(Debug, Clone)]
pub struct Live {
    /// ublk device number N.
    pub dev_id: u32,
    /// `/dev/ublkbN`.
    pub device: String,
    /// The data path in use.
    pub data_path: DataPath,
    /// The driver's feature bits (`UBLK_F_*`).
    pub features: u64,
    /// The device has user recovery.
    pub recovery: bool,
    /// The device advertises DISCARD and WRITE_ZEROES.
    pub discard: bool,
}

/// How serving ended.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// Whether any write request reached the backend.
    pub wrote: bool,
}

/// Is there a ublk driver, and may this process use io_uring (the driver's control and data
/// paths both run on it)? `Err` says why not, in one line that names the fix.
pub fn available() -> crate::Result<u64> {
    if !std::path::Path::new("/dev/ublk-control").exists() {
        return Err(crate::Error::unsupported(
            "ublk is not available: /dev/ublk-control is missing; load the driver with `modprobe ublk_drv` \
             (Linux >= 6.0 with CONFIG_BLK_DEV_UBLK)",
        ));
    }
    io_uring_usable()?;
    // GET_FEATURES exists since 6.5; older drivers have no zero copy either.
    Ok(UblkCtrl::get_features().unwrap_or(0))
}

/// Whether this process may create an io_uring: `kernel.io_uring_disabled` (Linux >= 6.6) set
/// to 2, or to 1 for a process outside `kernel.io_uring_group` without `CAP_SYS_ADMIN`, makes
/// `io_uring_setup` fail with `EPERM`; a kernel without io_uring gives `ENOSYS`.
fn io_uring_usable() -> crate::Result<()> {
    let Err(e) = io_uring::IoUring::new(2) else { return Ok(()) };
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok();
    let why = match (e.raw_os_error(), sysctl.as_deref().map(str::trim)) {
        (Some(libc::EPERM), Some(v @ ("1" | "2"))) => format!(
            "io_uring is disabled (sysctl kernel.io_uring_disabled = {v}{}); allow it with `sysctl -w \
             kernel.io_uring_disabled=0`",
            if v == "1" { ", and this process is neither in kernel.io_uring_group nor CAP_SYS_ADMIN" } else { "" }
        ),
        (Some(libc::ENOSYS), _) => "this kernel has no io_uring (CONFIG_IO_URING is off)".to_string(),
        _ => format!("cannot create an io_uring ({e}; a seccomp filter or container policy may forbid it)"),
    };
    Err(crate::Error::unsupported(format!("ublk needs io_uring: {why}")))
}

/// Delete ublk device `dev_id` whose server is gone (what `detach` does with a stale record):
/// stop it first (its queued I/O fails, also on a device waiting for recovery), then delete it
/// without waiting for its last opener (`DEL_DEV_ASYNC`, falling back to `DEL_DEV`).
pub fn delete_device(dev_id: u32) {
    if !std::path::Path::new("/dev/ublk-control").exists() {
        return;
    }
    let _ = ctrl_cmd(sys::UBLK_U_CMD_STOP_DEV, sys::UBLK_CMD_STOP_DEV, dev_id, 0, &[]);
    if !matches!(ctrl_cmd(sys::UBLK_U_CMD_DEL_DEV_ASYNC, 0, dev_id, 0, &[]), Ok((r, _)) if r >= 0) {
        let _ = ctrl_cmd(sys::UBLK_U_CMD_DEL_DEV, sys::UBLK_CMD_DEL_DEV, dev_id, 0, &[]);
    }
}

/// A control command through [`crate::sys::ublk_ctrl_cmd`] (never libublk's `new_simple`,
/// which reads the device's information on the way): the ioctl-encoded `op` first, then, for a
/// driver before `UBLK_F_CMD_IOCTL_ENCODE` (Linux 6.3), the plain `legacy` number when there is
/// one (not 0) and the device exists. Returns the result (`>= 0` or `-errno`) and the buffer.
fn ctrl_cmd(op: u32, legacy: u32, dev_id: u32, len: u16, input: &[u8]) -> std::io::Result<(i32, Vec<u8>)> {
    let (r, buf) = crate::sys::ublk_ctrl_cmd(op, dev_id, 0, len, input)?;
    if r >= 0 || legacy == 0 || r == -libc::ENODEV || r == -libc::EBUSY {
        return Ok((r, buf));
    }
    crate::sys::ublk_ctrl_cmd(legacy, dev_id, 0, len, input)
}

/// `GET_DEV_INFO` of device `dev_id`: `Ok(None)` when the driver has no such device.
///
/// # Errors
/// The OS error of the control device or of the command.
pub fn device_info(dev_id: u32) -> std::io::Result<Option<DeviceInfo>> {
    const LEN: u16 = std::mem::size_of::<sys::ublksrv_ctrl_dev_info>() as u16;
    let (r, b) = ctrl_cmd(sys::UBLK_U_CMD_GET_DEV_INFO, sys::UBLK_CMD_GET_DEV_INFO, dev_id, LEN, &[])?;
    if r == -libc::ENODEV {
        return Ok(None);
    }
    if r < 0 {
        return Err(std::io::Error::from_raw_os_error(-r));
    }
    Ok(Some(DeviceInfo::parse(&b).ok_or_else(|| std::io::Error::other("short GET_DEV_INFO answer"))?))
}

/// A ublk device's state as the driver reports it (`ublksrv_ctrl_dev_info.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceState {
    /// Not started, or stopped.
    Dead,
    /// Served.
    Live,
    /// Its server is gone and it waits for recovery (I/O queued).
    Quiesced,
    /// Its server is gone and I/O fails (`UBLK_F_USER_RECOVERY_FAIL_IO`).
    FailIo,
    /// A state this code does not know.
    Other(u16),
}

/// What the driver says about a device.
#[derive(Debug, Clone, Copy)]
pub struct DeviceInfo {
    /// Its state.
    pub state: DeviceState,
    /// The pid the driver names as its server (the last one that started or recovered it).
    pub server_pid: i32,
    /// Its `UBLK_F_*` flags.
    pub flags: u64,
    /// Hardware queues.
    pub queues: u16,
    /// Queue depth.
    pub depth: u16,
    /// The largest request in bytes (`max_io_buf_bytes`).
    pub max_io_buf_bytes: u32,
}

impl DeviceInfo {
    /// Whether the driver names no live server other than `dead_pid` for the device: its pid
    /// is `dead_pid` (Linux 6.x keeps the last server's pid on a quiesced device), or none at
    /// all (7.x sets it to -1 once the server is gone).
    pub fn no_server_but(&self, dead_pid: u32) -> bool {
        self.server_pid <= 0 || i64::from(self.server_pid) == i64::from(dead_pid)
    }

    /// From the driver's `struct ublksrv_ctrl_dev_info` (64 bytes, native endian): queues,
    /// depth and state at bytes 0, 2, 4; the largest request at 8; the server's pid at 16; the
    /// flags at 24.
    fn parse(b: &[u8]) -> Option<DeviceInfo> {
        let u16_at = |i: usize| b.get(i..i + 2).and_then(|s| s.try_into().ok()).map(u16::from_ne_bytes);
        let pid = b.get(16..20).and_then(|s| s.try_into().ok()).map(i32::from_ne_bytes)?;
        let flags = b.get(24..32).and_then(|s| s.try_into().ok()).map(u64::from_ne_bytes)?;
        let raw = u16_at(4)?;
        let state = match u32::from(raw) {
            sys::UBLK_S_DEV_DEAD => DeviceState::Dead,
            sys::UBLK_S_DEV_LIVE => DeviceState::Live,
            sys::UBLK_S_DEV_QUIESCED => DeviceState::Quiesced,
            sys::UBLK_S_DEV_FAIL_IO => DeviceState::FailIo,
            _ => DeviceState::Other(raw),
        };
        let max_io_buf_bytes = b.get(8..12).and_then(|s| s.try_into().ok()).map(u32::from_ne_bytes)?;
        Some(DeviceInfo { state, server_pid: pid, flags, queues: u16_at(0)?, depth: u16_at(2)?, max_io_buf_bytes })
    }
}

impl DeviceState {
    /// `dead`, `live`, `quiesced`, `fail-io`, `unknown-N` (the JSON spelling).
    pub fn as_str(self) -> String {
        match self {
            DeviceState::Dead => "dead".into(),
            DeviceState::Live => "live".into(),
            DeviceState::Quiesced => "quiesced".into(),
            DeviceState::FailIo => "fail-io".into(),
            DeviceState::Other(n) => format!("unknown-{n}"),
        }
    }
}

/// The driver's view of device `dev_id`; `None` when there is no ublk driver, no such device,
/// or the driver does not answer.
pub fn device_state(dev_id: u32) -> Option<DeviceInfo> {
    if !std::path::Path::new("/dev/ublk-control").exists() {
        return None;
    }
    device_info(dev_id).ok().flatten()
}

/// The user-recovery flags to create a device with: `UBLK_F_USER_RECOVERY` and
/// `UBLK_F_USER_RECOVERY_REISSUE` when the driver lists them (`GET_FEATURES`, Linux ≥ 6.5);
/// without `GET_FEATURES` (`features` 0), by kernel release: both exist since 6.1. Never
/// `UBLK_F_USER_RECOVERY_FAIL_IO`: it fails I/O as soon as the server dies, so writers above
/// the device would see errors during a recovery that succeeds (the failing after a timeout is
/// the supervisor's, [`super::supervise`]).
pub fn recovery_flags(features: u64, release: &str) -> u64 {
    let both = u64::from(sys::UBLK_F_USER_RECOVERY | sys::UBLK_F_USER_RECOVERY_REISSUE);
    if features != 0 {
        if features & u64::from(sys::UBLK_F_USER_RECOVERY) == 0 {
            return 0;
        }
        return features & both;
    }
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) if (major, minor) >= (6, 1) => both,
        _ => 0,
    }
}

/// The fixed-file slots of every queue's ring (slot 0 is `/dev/ublkcN`).
#[derive(Debug, Clone, Copy)]
struct Slots {
    image: u32,
    zero: u32,
    bounce: u32,
    device: Option<u32>,
}

/// The largest request the device takes (its `max_sectors`, and each tag's buffer on the copy
/// path): 1 MiB, so a 1 MiB read or write reaches the server as one request, not two (at 512 KiB,
/// libublk's default, each one went through the driver and the server twice; the disk below
/// merged the halves again). Copy-path buffers are allocated untouched, so memory is only used
/// as large requests come.
pub const MAX_IO_BYTES: u32 = 1 << 20;

/// Per-device state shared by the queue threads.
struct Shared<B> {
    backend: Arc<B>,
    slots: Slots,
    zero_copy: bool,
    buf_bytes: u32,
    depth: u16,
    /// Scratch for writes that must take the backend's slow path on the zero-copy path (the data
    /// is only reachable through io_uring there): one region per (queue, tag).
    bounce: Option<std::fs::File>,
    wrote: AtomicBool,
    failures: AtomicUsize,
    /// Where failed requests and queues are told (the library never prints).
    remarks: Arc<dyn Remarks>,
}

/// Serve `backend` as a ublk device until `stop` is set or the device is removed. `on_live`
/// runs once the device is live (print its path, record it); an error from it stops the device
/// and is returned. `on_stop` runs when stopping begins, before the device goes away (close what
/// was layered on it). Failed requests and queues are told to `remarks` (the first few per
/// device).
///
/// # Errors
/// `Unsupported` without a ublk driver; `Io` when the driver refuses the device.
pub fn serve<B: Backend>(
    backend: Arc<B>,
    cfg: &Config,
    stop: &Interrupt,
    on_live: impl FnOnce(&Live) -> crate::Result<()> + Send + Sync + 'static,
    on_stop: impl FnOnce() + Send + Sync + 'static,
    remarks: Arc<dyn Remarks>,
) -> crate::Result<Finished> {
    let features = available()?;
    super::backend::Crypt::note_cpus();
    let (ctrl, zero_copy, queues, depth, buf_bytes) = open_ctrl(cfg, features, &*backend)?;
    let recovering = cfg.recover.is_some();
    let recovery = ctrl.dev_info().flags & u64::from(sys::UBLK_F_USER_RECOVERY) != 0;
    let ctrl = Arc::new(ctrl);

    let (zero, bounce, fds, slots) = fixed_files(&*backend, zero_copy)?;
    let size = backend.size_bytes();
    let discard = if cfg.read_only || !backend.writable() { None } else { backend.discard_granularity() };
    let params = device_params(cfg, size, backend.writable(), buf_bytes, discard);
    let tgt_init = move |dev: &mut UblkDev| -> Result<(), UblkError> {
        let tgt = &mut dev.tgt;
        for (i, fd) in fds.iter().enumerate() {
            tgt.fds[i + 1] = *fd;
        }
        tgt.nr_fds = fds.len() as i32 + 1;
        // Room for a few segments per tag.
        tgt.sq_depth = depth.saturating_mul(2);
        tgt.cq_depth = depth.saturating_mul(2);
        tgt.dev_size = size;
        tgt.params = params;
        Ok(())
    };

    let shared = Arc::new(Shared {
        backend,
        slots,
        zero_copy,
        buf_bytes,
        depth,
        bounce,
        wrote: AtomicBool::new(false),
        failures: AtomicUsize::new(0),
        remarks,
    });
    let running = Arc::new(AtomicUsize::new(usize::from(queues)));
    let q_shared = shared.clone();
    let q_running = running.clone();
    let threads: Arc<Mutex<Vec<rustix::thread::Pid>>> = Arc::new(Mutex::new(Vec::new()));
    let q_threads = threads.clone();
    let q_fn = move |qid: u16, dev: &UblkDev| {
        let _done = Decrement(q_running.clone());
        q_threads.lock().unwrap_or_else(|p| p.into_inner()).push(rustix::thread::gettid());
        queue(qid, dev, &q_shared);
    };
    let failure: Arc<Mutex<Option<crate::Error>>> = Arc::new(Mutex::new(None));
    let dev_failure = failure.clone();
    let dev_stop = stop.clone();
    let data_path = if zero_copy { DataPath::ZeroCopy } else { DataPath::Copy };
    let device_fn = move |ctrl: &UblkCtrl| {
        unpin(&threads.lock().unwrap_or_else(|p| p.into_inner()));
        let live = Live {
            dev_id: ctrl.dev_info().dev_id,
            device: ctrl.get_bdev_path(),
            data_path,
            features,
            recovery,
            discard: discard.is_some(),
        };
        if let Err(e) = on_live(&live) {
            *dev_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        } else {
            while !dev_stop.is_set() && running.load(Ordering::Acquire) == usize::from(queues) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        on_stop();
        let _ = ctrl.kill_dev();
    };
    let result = ctrl.run_target(tgt_init, q_fn, device_fn);
    if recovering && result.is_ok() {
        // A control made for recovery does not delete its device when dropped, as one made
        // for adding does: stopped by `device_fn`, deleted here.
        let _ = ctrl.del_dev();
    }
    drop(zero);
    result.map_err(|e| ublk_error("the ublk device failed", e))?;
    if let Some(e) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Err(e);
    }
    let wrote = shared.wrote.load(Ordering::Acquire);
    shared.backend.flush().map_err(|e| crate::Error::io("flushing the image at detach", e))?;
    Ok(Finished { wrote })
}

/// The device's control, new or (`cfg.recover`) the orphaned device's, with whether it is zero
/// copy, its queues and depth, and its largest request as the driver took it (a recovered
/// device keeps its own): the device's max_sectors and, on the copy path, each tag's buffer.
fn open_ctrl<B: Backend>(cfg: &Config, features: u64, backend: &B) -> crate::Result<(UblkCtrl, bool, u16, u16, u32)> {
    let lbs = cfg.logical_bs_shift.max(9);
    let (ctrl, zero_copy, queues, depth) = match cfg.recover {
        Some(id) => recover_ctrl(id, backend, lbs)?,
        None => add_ctrl(cfg, features, backend, MAX_IO_BYTES)?,
    };
    let buf_bytes = match ctrl.dev_info().max_io_buf_bytes {
        0 => MAX_IO_BYTES,
        n => n,
    };
    Ok((ctrl, zero_copy, queues, depth, buf_bytes))
}

/// Let the queue threads run on every CPU the process may use. libublk binds each queue's
/// thread to the CPUs the driver maps to that queue (with one queue per CPU: that one CPU), so a
/// single submitter's requests all went to the server thread bound to the submitter's own CPU,
/// and the two took turns on it while the other CPUs idled (4 KiB random reads through two
/// queues ran at about half the rate of one queue in the TCG guest). Called once the device is
/// live: libublk sets the binding from its own thread while the queues start.
fn unpin(threads: &[rustix::thread::Pid]) {
    let Some(set) = &super::backend::process_cpus().0 else { return };
    for &tid in threads {
        let _ = rustix::thread::sched_setaffinity(Some(tid), set);
    }
}

/// The files every queue's ring registers after `/dev/ublkcN` (slot 0): the image, `/dev/zero`,
/// on the zero-copy path a bounce file, and the backend's device when it has one. Returns
/// `/dev/zero` and the bounce file (to keep open while the device runs), the descriptors of all
/// of them in slot order, and the slots.
fn fixed_files<B: Backend>(
    backend: &B,
    zero_copy: bool,
) -> crate::Result<(std::fs::File, Option<std::fs::File>, Vec<std::os::fd::RawFd>, Slots)> {
    let zero = std::fs::File::open("/dev/zero").map_err(|e| crate::Error::io("cannot open /dev/zero", e))?;
    let bounce = if zero_copy { Some(bounce_file()?) } else { None };
    let mut fds = vec![backend.image_fd().as_raw_fd(), zero.as_raw_fd()];
    let mut slots = Slots { image: 1, zero: 2, bounce: 0, device: None };
    if let Some(b) = &bounce {
        slots.bounce = fds.len() as u32 + 1;
        fds.push(b.as_raw_fd());
    }
    if let Some(d) = backend.device_fd() {
        slots.device = Some(fds.len() as u32 + 1);
        fds.push(d.as_raw_fd());
    }
    Ok((zero, bounce, fds, slots))
}

/// Create a new ublk device's control (for `serve` without `recover`): choose the data path
/// (zero-copy when allowed, offered by the driver and the backend does no crypt), clamp the
/// queue count and depth, and ask for user recovery when configured. Returns the control,
/// whether the data path is zero-copy, the queue count and the depth.
fn add_ctrl<B: Backend>(
    cfg: &Config,
    features: u64,
    backend: &B,
    buf_bytes: u32,
) -> crate::Result<(UblkCtrl, bool, u16, u16)> {
    let zero_copy =
        cfg.allow_zero_copy && features & u64::from(sys::UBLK_F_AUTO_BUF_REG) != 0 && backend.crypt().is_none();
    let depth = cfg.depth.clamp(1, 4096);
    let queues = cfg.queues.clamp(1, 64);
    let mut ctrl_flags = 0u64;
    if zero_copy {
        ctrl_flags |= u64::from(sys::UBLK_F_AUTO_BUF_REG);
    }
    if cfg.recovery {
        ctrl_flags |= recovery_flags(features, &rustix::system::uname().release().to_string_lossy());
    }
    let ctrl = UblkCtrlBuilder::default()
        .name("loopkit")
        .nr_queues(queues)
        .depth(depth)
        .io_buf_bytes(buf_bytes)
        .ctrl_flags(ctrl_flags)
        .dev_flags(UblkFlags::UBLK_DEV_F_ADD_DEV)
        .build()
        .map_err(|e| ublk_error("cannot create the ublk device", e))?;
    Ok((ctrl, zero_copy, queues, depth))
}

/// Prepare to serve existing device `id` again: it must wait for recovery (quiesced), and its
/// size and logical block size must be what `backend` serves; then `START_USER_RECOVERY` and a
/// control for `END_USER_RECOVERY` (issued by `run_target` once every queue fetches). The queue
/// count, depth and data path are the device's own.
fn recover_ctrl<B: Backend>(id: u32, backend: &B, lbs: u8) -> crate::Result<(UblkCtrl, bool, u16, u16)> {
    let refuse =
        |why: String| crate::Error::new(crate::ErrorKind::Unsafe, format!("cannot recover /dev/ublkb{id}: {why}"));
    let info = device_state(id).ok_or_else(|| refuse("the driver has no such device".into()))?;
    if info.state != DeviceState::Quiesced {
        return Err(refuse(format!("it does not wait for recovery (state {:?})", info.state)));
    }
    let sid = i32::try_from(id).map_err(|_| refuse("bad device number".into()))?;
    let params = device_params_of(id)?;
    let size = backend.size_bytes();
    if params.basic.dev_sectors != size >> 9 || params.basic.logical_bs_shift != lbs {
        return Err(refuse(format!(
            "it shows {} bytes in {}-byte blocks, the image now gives {size} bytes in {}-byte blocks",
            params.basic.dev_sectors << 9,
            1u64 << params.basic.logical_bs_shift,
            1u64 << lbs
        )));
    }
    if params.basic.attrs & sys::UBLK_ATTR_READ_ONLY == 0 && !backend.writable() {
        return Err(refuse("the device is writable, the image can now only be read".into()));
    }
    let zero_copy = info.flags & u64::from(sys::UBLK_F_AUTO_BUF_REG) != 0;
    if zero_copy && backend.crypt().is_some() {
        return Err(refuse("it was created for zero copy, which --decrypt cannot serve".into()));
    }
    match ctrl_cmd(sys::UBLK_U_CMD_START_USER_RECOVERY, sys::UBLK_CMD_START_USER_RECOVERY, id, 0, &[]) {
        Ok((r, _)) if r < 0 => return Err(ublk_error("START_USER_RECOVERY failed", UblkError::OtherError(r))),
        Ok(_) => {}
        Err(e) => return Err(crate::Error::io("START_USER_RECOVERY failed", e)),
    }
    let ctrl = UblkCtrlBuilder::default()
        .name("loopkit")
        .id(sid)
        .nr_queues(info.queues)
        .depth(info.depth)
        .io_buf_bytes(if info.max_io_buf_bytes == 0 { MAX_IO_BYTES } else { info.max_io_buf_bytes })
        .dev_flags(UblkFlags::UBLK_DEV_F_RECOVER_DEV)
        .build()
        .map_err(|e| ublk_error("cannot open the ublk device for recovery", e))?;
    Ok((ctrl, zero_copy, info.queues, info.depth))
}

/// `GET_PARAMS` of device `id`: the basic parameters (size, block sizes, attributes).
fn device_params_of(id: u32) -> crate::Result<sys::ublk_params> {
    const LEN: u16 = std::mem::size_of::<sys::ublk_params>() as u16;
    // The driver reads `len` (the first four bytes) to know how much the caller takes.
    let input = u32::from(LEN).to_ne_bytes();
    let (r, b) = ctrl_cmd(sys::UBLK_U_CMD_GET_PARAMS, sys::UBLK_CMD_GET_PARAMS, id, LEN, &input)
        .map_err(|e| crate::Error::io("cannot read the device's parameters", e))?;
    if r < 0 {
        return Err(ublk_error("cannot read the device's parameters", UblkError::OtherError(r)));
    }
    let u32_at = |i: usize| b.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_ne_bytes);
    let u64_at = |i: usize| b.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_ne_bytes);
    let short = || crate::Error::invalid("short GET_PARAMS answer");
    // struct ublk_params: len, types, then ublk_param_basic at 8: attrs (u32), logical_bs_shift,
    // physical_bs_shift, io_opt_shift, io_min_shift (u8 each), max_sectors, chunk_sectors (u32),
    // dev_sectors (u64) at 8 + 16.
    let mut p = sys::ublk_params {
        len: u32_at(0).ok_or_else(short)?,
        types: u32_at(4).ok_or_else(short)?,
        ..Default::default()
    };
    p.basic.attrs = u32_at(8).ok_or_else(short)?;
    p.basic.logical_bs_shift = *b.get(12).ok_or_else(short)?;
    p.basic.physical_bs_shift = *b.get(13).ok_or_else(short)?;
    p.basic.dev_sectors = u64_at(24).ok_or_else(short)?;
    Ok(p)
}

/// The device's ublk parameters: size, block sizes, read-only, volatile cache with FUA,
/// requests of at most `buf_bytes`, and discard/write-zeroes when `discard` gives a granularity.
fn device_params(cfg: &Config, size: u64, writable: bool, buf_bytes: u32, discard: Option<u32>) -> sys::ublk_params {
    let mut attrs = sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA;
    if cfg.read_only || !writable {
        attrs |= sys::UBLK_ATTR_READ_ONLY;
    }
    let (lbs, pbs) = (cfg.logical_bs_shift.max(9), cfg.physical_bs_shift.max(cfg.logical_bs_shift).max(9));
    sys::ublk_params {
        types: sys::UBLK_PARAM_TYPE_BASIC | if discard.is_some() { sys::UBLK_PARAM_TYPE_DISCARD } else { 0 },
        discard: sys::ublk_param_discard {
            discard_granularity: discard.unwrap_or(0).max(1 << lbs),
            // 1 GiB per request, as the kernel loop driver's users see it.
            max_discard_sectors: if discard.is_some() { 1 << 21 } else { 0 },
            max_write_zeroes_sectors: if discard.is_some() { 1 << 21 } else { 0 },
            max_discard_segments: u16::from(discard.is_some()),
            ..Default::default()
        },
        basic: sys::ublk_param_basic {
            attrs,
            logical_bs_shift: lbs,
            physical_bs_shift: pbs,
            io_opt_shift: pbs,
            io_min_shift: lbs,
            max_sectors: buf_bytes >> 9,
            dev_sectors: size >> 9,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn ublk_error(what: &str, e: UblkError) -> crate::Error {
    let msg = match e {
        UblkError::OtherError(n) | UblkError::UringIOError(n) if n < 0 => {
            format!("{what}: {}", std::io::Error::from_raw_os_error(-n))
        }
        e => format!("{what}: {e}"),
    };
    crate::Error::new(crate::ErrorKind::Io, msg)
}

/// A sparse anonymous file (memfd) for the zero-copy slow-write bounce.
fn bounce_file() -> crate::Result<std::fs::File> {
    let fd: OwnedFd = rustix::fs::memfd_create("loopkit-bounce", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| crate::Error::io("cannot create a memfd", e.into()))?;
    Ok(std::fs::File::from(fd))
}

struct Decrement(Arc<AtomicUsize>);
impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn queue<B: Backend>(qid: u16, dev: &UblkDev, shared: &Arc<Shared<B>>) {
    let q = match UblkQueue::new(qid, dev) {
        Ok(q) => Rc::new(q),
        Err(e) => {
            shared.remarks.remark(Level::Error, &format!("ublk queue {qid}: {e}"));
            return;
        }
    };
    let exe = Rc::new(smol::LocalExecutor::new());
    let mut tasks = Vec::new();
    for tag in q.tags() {
        let q = q.clone();
        let s = shared.clone();
        tasks.push(exe.spawn(async move {
            match io_task(&q, tag, &s).await {
                Err(UblkError::QueueIsDown) | Ok(()) => {}
                Err(e) => s.remarks.remark(Level::Error, &format!("ublk queue {qid} tag {tag}: {e}")),
            }
        }));
    }
    let exe2 = exe.clone();
    let remarks = shared.remarks.clone();
    smol::block_on(exe.run(async move {
        let run_ops = || while exe2.try_tick() {};
        let done = || tasks.iter().all(|t| t.is_finished());
        if let Err(e) = libublk::wait_and_handle_io_events(&q, Some(20), run_ops, done).await {
            remarks.remark(Level::Error, &format!("ublk queue {qid}: {e}"));
        }
    }));
}

/// Where a request's data is: our copy buffer, or the request's pages registered as fixed
/// buffer `index` (zero copy).
enum Buf<'a> {
    Mem(&'a mut [u8]),
    Fixed(u16),
}

async fn io_task<B: Backend>(q: &UblkQueue<'_>, tag: u16, s: &Shared<B>) -> Result<(), UblkError> {
    let mut segs = Vec::with_capacity(4);
    if s.zero_copy {
        let reg = sys::ublk_auto_buf_reg { index: tag, ..Default::default() };
        q.submit_io_prep_cmd(tag, BufDesc::AutoReg(reg), 0, None).await?;
        loop {
            let res = handle(q, tag, s, &mut Buf::Fixed(tag), &mut segs).await;
            report_failure(q, tag, s, res);
            q.submit_io_commit_cmd(tag, BufDesc::AutoReg(reg), res).await?;
        }
    } else {
        let mut buf = IoBuf::<u8>::new(s.buf_bytes as usize);
        q.submit_io_prep_cmd(tag, BufDesc::Slice(buf.as_slice()), 0, Some(&buf)).await?;
        loop {
            let res = handle(q, tag, s, &mut Buf::Mem(buf.as_mut_slice()), &mut segs).await;
            report_failure(q, tag, s, res);
            q.submit_io_commit_cmd(tag, BufDesc::Slice(buf.as_slice()), res).await?;
        }
    }
}

/// Tell the remarks why a request failed (the first few per device; errors stay visible).
fn report_failure<B>(q: &UblkQueue<'_>, tag: u16, s: &Shared<B>, res: i32) {
    if res >= 0 || s.failures.fetch_add(1, Ordering::Relaxed) >= 20 {
        return;
    }
    let iod = q.get_iod(tag);
    s.remarks.remark(
        Level::Warning,
        &format!(
            "ublk request failed: op {} flags {:#x} sector {} count {}: {}",
            iod.op_flags & 0xff,
            iod.op_flags & !0xff,
            iod.start_sector,
            iod.nr_sectors,
            std::io::Error::from_raw_os_error(-res)
        ),
    );
}

fn errno(e: &std::io::Error) -> i32 {
    -e.raw_os_error().unwrap_or(libc::EIO)
}

/// Serve one request; the result is bytes done or `-errno`.
async fn handle<B: Backend>(q: &UblkQueue<'_>, tag: u16, s: &Shared<B>, buf: &mut Buf<'_>, segs: &mut Vec<Seg>) -> i32 {
    let iod = q.get_iod(tag);
    let (op, flags) = (iod.op_flags & 0xff, iod.op_flags);
    // Only reads and writes carry a position (a FLUSH's start_sector is all ones).
    let (offset, len) = match (iod.start_sector.checked_mul(512), iod.nr_sectors.checked_mul(512)) {
        (Some(o), Some(l)) if l <= s.buf_bytes => (o, l),
        _ if op == sys::UBLK_IO_OP_READ || op == sys::UBLK_IO_OP_WRITE => return -libc::EINVAL,
        _ => (0, 0),
    };
    let b = &*s.backend;
    segs.clear();
    match op {
        sys::UBLK_IO_OP_READ => {
            let guard = loop {
                match b.plan_read(offset, len, segs) {
                    Ok(g) => break g,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        segs.clear();
                        let r = pause(q).await;
                        if r < 0 {
                            return r;
                        }
                    }
                    Err(e) => return errno(&e),
                }
            };
            let r = run_segs(q, s, segs, buf, false, 0).await;
            drop(guard);
            if r < 0 {
                return r;
            }
            if let (Some(c), Buf::Mem(m)) = (b.crypt(), &mut *buf) {
                c.decrypt(offset, &mut m[..len as usize]);
            }
            len as i32
        }
        sys::UBLK_IO_OP_WRITE => {
            s.wrote.store(true, Ordering::Release);
            if let (Some(c), Buf::Mem(m)) = (b.crypt(), &mut *buf) {
                // The buffer is ours: the kernel copied the plaintext in; it goes out encrypted.
                c.encrypt(offset, &mut m[..len as usize]);
            }
            let fua = flags & sys::UBLK_IO_F_FUA != 0;
            let planned = loop {
                match b.plan_write(offset, len, segs) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        segs.clear();
                        let r = pause(q).await;
                        if r < 0 {
                            return r;
                        }
                    }
                    other => break other,
                }
            };
            match planned {
                Ok(Some(guard)) => {
                    if fua {
                        // What the FUA data depends on (the image's block allocations) first.
                        let mut first = Vec::new();
                        b.plan_fua(segs, &mut first);
                        let r = sync_targets(q, s, &first, true).await;
                        if r < 0 {
                            return r;
                        }
                    }
                    let r = run_segs(q, s, segs, buf, true, if fua { libc::RWF_DSYNC } else { 0 }).await;
                    drop(guard);
                    if r < 0 { r } else { len as i32 }
                }
                // The backend writes a FUA write with RWF_DSYNC itself.
                Ok(None) => match slow_write(q, tag, s, buf, offset, len, fua).await {
                    r if r < 0 => r,
                    _ => len as i32,
                },
                Err(e) => errno(&e),
            }
        }
        sys::UBLK_IO_OP_DISCARD | sys::UBLK_IO_OP_WRITE_ZEROES => discard(q, s, iod, op, flags).await,
        sys::UBLK_IO_OP_FLUSH => {
            let mut targets = Vec::with_capacity(2);
            b.plan_flush(&mut targets);
            sync_targets(q, s, &targets, false).await
        }
        _ => -libc::EOPNOTSUPP,
    }
}

/// A DISCARD or WRITE_ZEROES (`NOUNMAP`: zeroed in place): on the backend's own thread when it
/// must wait for I/O in flight (remap), else a `fallocate` of the image through the ring;
/// 0 or `-errno`.
async fn discard<B: Backend>(q: &UblkQueue<'_>, s: &Shared<B>, iod: &sys::ublksrv_io_desc, op: u32, flags: u32) -> i32 {
    let b = &*s.backend;
    // These carry no data: their length is not bounded by the buffer.
    let (Some(o), Some(l)) = (iod.start_sector.checked_mul(512), u64::from(iod.nr_sectors).checked_mul(512)) else {
        return -libc::EINVAL;
    };
    let zero = op == sys::UBLK_IO_OP_WRITE_ZEROES && flags & sys::UBLK_IO_F_NOUNMAP != 0;
    if let Some(started) = b.discard_off_thread(o, l, zero) {
        s.wrote.store(true, Ordering::Release);
        return match started {
            Ok(done) => wait_for_result(q, &done).await,
            Err(e) => errno(&e),
        };
    }
    let at = match b.plan_discard(o, l) {
        Ok(at) => at,
        Err(e) => return errno(&e),
    };
    s.wrote.store(true, Ordering::Release);
    // Punch: the range reads as zeros and its blocks go back to the file system; a
    // WRITE_ZEROES that must not unmap zeroes the range in place instead.
    let mode = if zero {
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE
    } else {
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
    };
    let sqe = opcode::Fallocate::new(types::Fixed(s.slots.image), l).offset(at).mode(mode).build();
    let r = q.ublk_submit_sqe(sqe).await;
    if r < 0 { r } else { 0 }
}

/// How long a request waits before it plans again when another request holds part of its range
/// (a `static`: the kernel reads it, and nothing on a task's stack may be pointed at by an
/// operation that can outlive the task at shutdown).
static RETRY_PAUSE: types::Timespec = types::Timespec::new().sec(0).nsec(200_000);

/// Wait [`RETRY_PAUSE`] without blocking the queue thread (an io_uring timeout); 0 or `-errno`.
async fn pause(q: &UblkQueue<'_>) -> i32 {
    let sqe = opcode::Timeout::new(&RETRY_PAUSE).build();
    match q.ublk_submit_sqe(sqe).await {
        r if r == -libc::ETIME || r >= 0 => 0,
        r => r,
    }
}

/// Wait, without blocking the queue thread, for the result a discard thread writes to `done`
/// (an `i32`, 0 or `-errno`): an io_uring poll (no buffer in flight), then a plain read of what
/// is there; `-EIO` if the thread ended without a result.
async fn wait_for_result(q: &UblkQueue<'_>, done: &OwnedFd) -> i32 {
    let sqe = opcode::PollAdd::new(types::Fd(done.as_raw_fd()), libc::POLLIN as u32).build();
    let r = q.ublk_submit_sqe(sqe).await;
    if r < 0 {
        return r;
    }
    let mut res = [0u8; 4];
    match rustix::io::read(done, &mut res) {
        Ok(4) => i32::from_ne_bytes(res).min(0),
        Ok(_) => -libc::EIO,
        Err(e) => -e.raw_os_error(),
    }
}

/// `fdatasync` each target in turn (io_uring `Fsync`), telling the backend which writes each
/// covered; 0 or `-errno`.
async fn sync_targets<B: Backend>(q: &UblkQueue<'_>, s: &Shared<B>, targets: &[Target], for_fua: bool) -> i32 {
    let b = &*s.backend;
    for &t in targets {
        let Some(slot) = slot(s.slots, t) else {
            return -libc::EIO;
        };
        let ticket = b.sync_ticket(t);
        let sqe = opcode::Fsync::new(types::Fixed(slot)).flags(types::FsyncFlags::DATASYNC).build();
        let r = q.ublk_submit_sqe(sqe).await;
        if r < 0 {
            return r;
        }
        b.synced(t, ticket, for_fua);
    }
    0
}

fn slot(slots: Slots, t: Target) -> Option<u32> {
    match t {
        Target::Image => Some(slots.image),
        Target::Device => slots.device,
    }
}

/// Issue the segments in order into `buf`; 0 or `-errno`.
async fn run_segs<B: Backend>(
    q: &UblkQueue<'_>,
    s: &Shared<B>,
    segs: &[Seg],
    buf: &mut Buf<'_>,
    write: bool,
    rw_flags: i32,
) -> i32 {
    let mut pos: u32 = 0;
    for seg in segs {
        match *seg {
            Seg::Zero { len } => {
                if write {
                    return -libc::EIO;
                }
                match buf {
                    Buf::Mem(m) => match m.get_mut(pos as usize..(pos + len) as usize) {
                        Some(r) => r.fill(0),
                        None => return -libc::EIO,
                    },
                    Buf::Fixed(_) => {
                        let r = transfer(q, s.slots.zero, 0, buf, pos, len, false, 0).await;
                        if r < 0 {
                            return r;
                        }
                    }
                }
                pos += len;
            }
            Seg::Io { target, offset, len } => {
                let Some(slot) = slot(s.slots, target) else {
                    return -libc::EIO;
                };
                let r = transfer(q, slot, offset, buf, pos, len, write, rw_flags).await;
                if r < 0 {
                    return r;
                }
                pos += len;
            }
        }
    }
    0
}

/// Read or write `len` bytes at `offset` of fixed file `slot` from/into `buf[pos..]`, resuming
/// short transfers and retrying EAGAIN a few times; 0 or `-errno`.
#[allow(clippy::too_many_arguments)]
async fn transfer(
    q: &UblkQueue<'_>,
    slot: u32,
    offset: u64,
    buf: &mut Buf<'_>,
    pos: u32,
    len: u32,
    write: bool,
    rw_flags: i32,
) -> i32 {
    let mut done: u32 = 0;
    let mut again = 0;
    while done < len {
        let (at, n, off) = (pos + done, len - done, offset + u64::from(done));
        let fd = types::Fixed(slot);
        let sqe = match buf {
            Buf::Mem(m) => {
                let Some(region) = m.get_mut(at as usize..(at + n) as usize) else {
                    return -libc::EIO;
                };
                let p = region.as_mut_ptr();
                if write {
                    opcode::Write::new(fd, p, n).offset(off).rw_flags(rw_flags as _).build()
                } else {
                    opcode::Read::new(fd, p, n).offset(off).rw_flags(rw_flags as _).build()
                }
            }
            // A kernel (bvec) fixed buffer is addressed from 0: the "address" is the offset.
            Buf::Fixed(index) => {
                let p = std::ptr::without_provenance_mut::<u8>(at as usize);
                if write {
                    opcode::WriteFixed::new(fd, p, n, *index).offset(off).rw_flags(rw_flags as _).build()
                } else {
                    opcode::ReadFixed::new(fd, p, n, *index).offset(off).rw_flags(rw_flags as _).build()
                }
            }
        };
        let r = q.ublk_submit_sqe(sqe).await;
        if r == -libc::EAGAIN && again < 4 {
            again += 1;
            continue;
        }
        if r < 0 {
            return r;
        }
        if r == 0 {
            return -libc::EIO;
        }
        done += r as u32;
    }
    0
}

/// A write the backend cannot plan: hand the bytes to [`Backend::slow_write`] (blocking). On
/// the zero-copy path the bytes are reachable only through io_uring, so they go through the
/// memfd bounce region of this (queue, tag) first. With `fua`, the backend makes the write
/// durable before returning (`RWF_DSYNC` through the file).
#[allow(clippy::too_many_arguments)]
async fn slow_write<B: Backend>(
    q: &UblkQueue<'_>,
    tag: u16,
    s: &Shared<B>,
    buf: &mut Buf<'_>,
    offset: u64,
    len: u32,
    fua: bool,
) -> i32 {
    let data: Vec<u8> = match buf {
        Buf::Mem(m) => match m.get(..len as usize) {
            Some(d) => d.to_vec(),
            None => return -libc::EIO,
        },
        Buf::Fixed(_) => {
            let Some(file) = &s.bounce else {
                return -libc::EIO;
            };
            let region = (u64::from(q.get_qid()) * u64::from(s.depth) + u64::from(tag)) * u64::from(s.buf_bytes);
            let r = transfer(q, s.slots.bounce, region, buf, 0, len, true, 0).await;
            if r < 0 {
                return r;
            }
            let mut v = vec![0u8; len as usize];
            if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(file, &mut v, region) {
                return errno(&e);
            }
            // Give the memory back.
            let _ = rustix::fs::fallocate(
                file.as_fd(),
                rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                region,
                u64::from(len),
            );
            v
        }
    };
    loop {
        match s.backend.slow_write(&data, offset, fua) {
            Ok(()) => return 0,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let r = pause(q).await;
                if r < 0 {
                    return r;
                }
            }
            Err(e) => return errno(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_info_is_read_from_the_uapi_layout() {
        // struct ublksrv_ctrl_dev_info as the driver fills it: 2 queues, depth 64, QUIESCED,
        // max_io_buf_bytes, dev_id 3, pid -1 (7.x once the server is gone), flags.
        let mut b = vec![0u8; 64];
        b[0..2].copy_from_slice(&2u16.to_ne_bytes());
        b[2..4].copy_from_slice(&64u16.to_ne_bytes());
        b[4..6].copy_from_slice(&(sys::UBLK_S_DEV_QUIESCED as u16).to_ne_bytes());
        b[8..12].copy_from_slice(&(512u32 << 10).to_ne_bytes());
        b[12..16].copy_from_slice(&3u32.to_ne_bytes());
        b[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        b[24..32].copy_from_slice(&u64::from(sys::UBLK_F_USER_RECOVERY).to_ne_bytes());
        let i = DeviceInfo::parse(&b).unwrap();
        assert_eq!((i.queues, i.depth, i.state, i.server_pid), (2, 64, DeviceState::Quiesced, -1));
        assert_eq!(i.max_io_buf_bytes, 512 << 10);
        assert_eq!(i.flags, u64::from(sys::UBLK_F_USER_RECOVERY));
        assert!(i.no_server_but(4242), "7.x: no pid at all");
        b[16..20].copy_from_slice(&4242i32.to_ne_bytes());
        let i = DeviceInfo::parse(&b).unwrap();
        assert!(i.no_server_but(4242), "6.x: the dead server's pid");
        assert!(!i.no_server_but(77), "another server");
        b[4..6].copy_from_slice(&9u16.to_ne_bytes());
        assert_eq!(DeviceInfo::parse(&b).unwrap().state, DeviceState::Other(9));
        assert!(DeviceInfo::parse(&b[..20]).is_none(), "short");
        // The struct really is 64 bytes with the fields where parse reads them.
        assert_eq!(std::mem::size_of::<sys::ublksrv_ctrl_dev_info>(), 64);
    }

    #[test]
    fn recovery_flags_follow_the_driver_then_the_release() {
        let rec = u64::from(sys::UBLK_F_USER_RECOVERY);
        let reissue = u64::from(sys::UBLK_F_USER_RECOVERY_REISSUE);
        let fail_io = u64::from(sys::UBLK_F_USER_RECOVERY_FAIL_IO);
        let zc = u64::from(sys::UBLK_F_AUTO_BUF_REG);
        // GET_FEATURES answered: what it lists, never FAIL_IO.
        assert_eq!(recovery_flags(rec | reissue | fail_io | zc, "7.3.4"), rec | reissue);
        assert_eq!(recovery_flags(rec | zc, "6.12.1"), rec);
        assert_eq!(recovery_flags(zc, "6.12.1"), 0, "a driver without recovery");
        assert_eq!(recovery_flags(reissue, "6.12.1"), 0, "REISSUE alone means nothing");
        // No GET_FEATURES (before 6.5): both since 6.1.
        assert_eq!(recovery_flags(0, "6.1.0-13-amd64"), rec | reissue);
        assert_eq!(recovery_flags(0, "6.0.12"), 0);
        assert_eq!(recovery_flags(0, "5.19.0"), 0);
        assert_eq!(recovery_flags(0, "garbage"), 0);
    }
}
