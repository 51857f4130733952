//! The registry of attached devices: one JSON file per ublk device in a state directory
//! (`/run/loopkit/attach`, or `$LOOPKIT_STATE_DIR`), written by the serving process once the
//! device is live and removed at detach; `attach --list` and `detach` read it. The directory is
//! created 0700 and trusted only when owned by the user (or root) and writable by nobody else;
//! records are written with `O_EXCL|O_NOFOLLOW` and renamed in place relative to its descriptor,
//! and carry the server's start time so `detach` can tell it from a process that reused its pid.

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Environment variable overriding the state directory.
pub const STATE_DIR_ENV: &str = "LOOPKIT_STATE_DIR";

/// One attached device (also the JSON `attach` prints once live).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The image file (absolute path).
    pub image: String,
    /// `/dev/ublkbN`.
    pub device: String,
    /// The ublk device number N.
    pub dev_id: u32,
    /// The serving process.
    pub pid: u32,
    /// `file` (through the image file), `decrypt` (plaintext of an encrypted image), `remap`.
    pub mode: String,
    /// The device is read-only.
    pub read_only: bool,
    /// Device size in bytes.
    pub size_bytes: u64,
    /// Logical block size of the device.
    pub logical_block_bytes: u32,
    /// Physical block size of the device.
    pub physical_block_bytes: u32,
    /// `zero-copy` or `copy`.
    pub data_path: String,
    /// The image file is read and written with `O_DIRECT`.
    pub direct_io: bool,
    /// Remap engine state: `off` without `--remap`.
    pub remap: String,
    /// The stable code of a stopped remap engine (`remap.lease-broken`, `remap.map-changed`…),
    /// recorded by the engine with the stop; null while `remap` is `off` or `active`.
    #[serde(default)]
    pub remap_code: Option<String>,
    /// The lease held on the image (remap), or null.
    pub lease: Option<String>,
    /// Hardware queues.
    pub queues: u16,
    /// Queue depth.
    pub depth: u16,
    /// `/dev/mapper/NAME` opened on the device by `--open-crypt`, or null.
    pub mapper: Option<String>,
    /// The kernel release serving it.
    pub kernel: String,
    /// The block device the remap engine sends raw I/O to, as verified on its open descriptor
    /// (`/dev/vda (254:0)`: the node, and its `st_rdev`, equal to the image's `st_dev`), or null
    /// when not remapping.
    #[serde(default)]
    pub raw_device: Option<String>,
    /// The device was created with ublk user recovery (`UBLK_F_USER_RECOVERY` and, where the
    /// driver has it, `_REISSUE`): when its server dies it waits, I/O queued, for
    /// `attach --recover` (at most [`Entry::recovery_timeout_secs`]) instead of failing at once.
    #[serde(default)]
    pub recovery: bool,
    /// How long an orphaned device waits for recovery before its I/O fails and it is removed
    /// (0 without recovery).
    #[serde(default)]
    pub recovery_timeout_secs: u64,
    /// `st_dev` of the image file served (recovery serves only this inode again).
    #[serde(default)]
    pub image_dev: u64,
    /// `st_ino` of the image file served.
    #[serde(default)]
    pub image_ino: u64,
    /// The user on whose behalf the device was attached (`SUDO_UID`/`PKEXEC_UID`, else the real
    /// uid); only that user (or root acting for itself) may recover it.
    #[serde(default)]
    pub owner_uid: Option<u32>,
    /// The device advertises DISCARD and WRITE_ZEROES (punched through the image's file
    /// system).
    #[serde(default)]
    pub discard: bool,
}

/// The state directory: `$LOOPKIT_STATE_DIR`, else `/run/loopkit/attach`. Either is trusted only
/// if it passes [`open_dir`]'s checks, so as root an override pointing somewhere another user
/// can write is refused, never followed.
pub fn dir() -> PathBuf {
    std::env::var_os(STATE_DIR_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/run/loopkit/attach"))
}

/// Largest record read.
const MAX_RECORD_BYTES: u64 = 64 << 10;

/// Open the state directory (creating it, and missing parents, with mode 0700 when `create`),
/// never through a symlink as its last component, and check it: a directory owned by the
/// effective user (or root), writable by nobody else. Anyone else able to write there could plant
/// records (an arbitrary pid to signal, a device to delete) or symlinks.
///
/// # Errors
/// `Io` when it cannot be created or opened (`NotFound` when missing and not `create`);
/// `Unsafe` when it fails the checks.
pub fn open_dir(create: bool) -> crate::Result<OwnedFd> {
    let d = dir();
    if create {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|err| crate::Error::io(format!("cannot create {}", d.display()), err))?;
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(rfs::CWD, &d, flags, Mode::empty())
        .map_err(|err| crate::Error::io(format!("cannot open the state directory {}", d.display()), err.into()))?;
    let st = rfs::fstat(&fd).map_err(|err| crate::Error::io(format!("cannot examine {}", d.display()), err.into()))?;
    let me = rustix::process::geteuid().as_raw();
    if (st.st_uid != me && st.st_uid != 0) || st.st_mode & 0o022 != 0 {
        return Err(crate::Error::new(
            crate::ErrorKind::Unsafe,
            format!(
                "the state directory {} is owned by uid {} with mode {:o}: it must belong to uid {me} (or root) and be \
                 writable by nobody else; its records are not trusted{}",
                d.display(),
                st.st_uid,
                st.st_mode & 0o7777,
                if std::env::var_os(STATE_DIR_ENV).is_some() {
                    format!(" (set by ${STATE_DIR_ENV})")
                } else {
                    String::new()
                }
            ),
        ));
    }
    Ok(fd)
}

fn entry_name(dev_id: u32) -> String {
    format!("ublkb{dev_id}.json")
}

/// A record as stored: the entry and the server's start time (`/proc/PID/stat` field 22, clock
/// ticks since boot), so a reused pid is recognised. Records of older versions have none.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    entry: Entry,
    #[serde(default)]
    server_start_ticks: Option<u64>,
}

/// Record `e`: a new temporary file (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0644) in the checked
/// state directory, then renamed over the record, both relative to the directory's descriptor.
/// When `e.pid` is this process, its start time is recorded too.
///
/// # Errors
/// `Io` when the state directory cannot be written; `Unsafe` when it fails [`open_dir`]'s checks.
pub fn record(e: &Entry) -> crate::Result<PathBuf> {
    let d = dir();
    let dfd = open_dir(true)?;
    let path = d.join(entry_name(e.dev_id));
    let tmp = format!(".ublkb{}.json.{}", e.dev_id, std::process::id());
    let start = if e.pid == std::process::id() { process_start_ticks(e.pid) } else { None };
    let stored = Stored { entry: e.clone(), server_start_ticks: start };
    let text = serde_json::to_vec_pretty(&stored).map_err(|err| crate::Error::invalid(format!("BUG: {err}")))?;
    let werr = |err: std::io::Error| crate::Error::io(format!("cannot write {}", d.join(&tmp).display()), err);
    // A leftover of ours (same pid) or anything planted under the name: removed, never followed.
    let _ = rfs::unlinkat(&dfd, tmp.as_str(), AtFlags::empty());
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(&dfd, tmp.as_str(), flags, Mode::from_bits_truncate(0o644)).map_err(|err| werr(err.into()))?;
    let mut f = std::fs::File::from(fd);
    if let Err(err) = f.write_all(&text).and_then(|()| f.sync_data()) {
        let _ = rfs::unlinkat(&dfd, tmp.as_str(), AtFlags::empty());
        return Err(werr(err));
    }
    rfs::renameat(&dfd, tmp.as_str(), &dfd, entry_name(e.dev_id).as_str())
        .map_err(|err| crate::Error::io(format!("cannot write {}", path.display()), err.into()))?;
    Ok(path)
}

/// The lock that keeps recovery of device `dev_id` and its supervisor's removal of it apart: an
/// exclusive `flock` on `ublkbN.lock` in the state directory (created 0600, never through a
/// symlink), held by `attach --recover` from before `START_USER_RECOVERY` until the device is
/// live, and by the supervisor while it removes the device. `Ok(None)` when someone else holds
/// it.
///
/// # Errors
/// From [`open_dir`]; `Io` when the lock file cannot be opened.
pub fn recovery_lock(dev_id: u32) -> crate::Result<Option<OwnedFd>> {
    let dfd = open_dir(true)?;
    let name = format!("ublkb{dev_id}.lock");
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(&dfd, name.as_str(), flags, Mode::from_bits_truncate(0o600))
        .map_err(|err| crate::Error::io(format!("cannot open {}", dir().join(&name).display()), err.into()))?;
    match rfs::flock(&fd, rfs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(fd)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(err) => Err(crate::Error::io(format!("cannot lock {}", dir().join(&name).display()), err.into())),
    }
}

/// The record of device `dev_id`, if any.
///
/// # Errors
/// From [`list_checked`].
pub fn find_id(dev_id: u32) -> crate::Result<Option<Listed>> {
    Ok(list_checked()?.into_iter().find(|l| l.entry.dev_id == dev_id))
}

/// Forget device `dev_id` (missing is fine).
pub fn forget(dev_id: u32) {
    if let Ok(dfd) = open_dir(false) {
        let _ = rfs::unlinkat(&dfd, entry_name(dev_id).as_str(), AtFlags::empty());
    }
}

/// A recorded device and whether its server still runs.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// What was recorded.
    #[serde(flatten)]
    pub entry: Entry,
    /// The serving process is alive and the device node exists.
    pub live: bool,
    /// `live`; `orphaned` (the server is gone, the driver holds the device for recovery: its
    /// I/O waits); `stale` (the server is gone and so is its device, or the device number now
    /// belongs to another server).
    pub status: &'static str,
    /// The server's recorded start time (see [`process_start_ticks`]); `None` in records of
    /// older versions.
    #[serde(skip)]
    pub server_start_ticks: Option<u64>,
    /// The ublk driver's state of the device number now (`GET_DEV_INFO`): `live`, `quiesced`
    /// (waiting for recovery), `fail-io`, `dead`, `unknown-N`, or `gone` (no such device);
    /// `None` when the driver could not be asked.
    pub driver_state: Option<String>,
    /// The pid the driver names as the device's server, when it has the device.
    pub driver_server_pid: Option<i32>,
}

/// Every recorded device, sorted by device number; nothing when the state directory is missing
/// or untrusted. Unreadable entries are skipped.
pub fn list() -> Vec<Listed> {
    list_checked().unwrap_or_default()
}

/// [`list`], with an error when the state directory exists but fails [`open_dir`]'s checks.
///
/// # Errors
/// `Unsafe`/`Io` from [`open_dir`] (a missing directory is an empty list).
pub fn list_checked() -> crate::Result<Vec<Listed>> {
    let mut out = Vec::new();
    let dfd = match open_dir(false) {
        Ok(fd) => fd,
        Err(e) if e.kind() == crate::ErrorKind::Io && !dir().exists() => return Ok(out),
        Err(e) => return Err(e),
    };
    let Ok(mut rd) = rfs::Dir::read_from(&dfd) else {
        return Ok(out);
    };
    while let Some(Ok(ent)) = rd.next() {
        let name = ent.file_name().to_bytes();
        if !(name.starts_with(b"ublkb") && name.ends_with(b".json")) {
            continue;
        }
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let Ok(fd) = rfs::openat(&dfd, ent.file_name(), flags, Mode::empty()) else { continue };
        if !rfs::fstat(&fd).is_ok_and(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile) {
            continue;
        }
        let mut bytes = Vec::new();
        if std::fs::File::from(fd).take(MAX_RECORD_BYTES).read_to_end(&mut bytes).is_err() {
            continue;
        }
        let Ok(stored) = serde_json::from_slice::<Stored>(&bytes) else { continue };
        let live = process_alive(stored.entry.pid) && Path::new(&stored.entry.device).exists();
        let driver = if Path::new("/dev/ublk-control").exists() {
            super::server::device_info(stored.entry.dev_id).ok()
        } else {
            None
        };
        let status = if live {
            "live"
        } else if driver.flatten().is_some_and(|d| orphan_of(&stored.entry, stored.server_start_ticks, &d)) {
            "orphaned"
        } else {
            "stale"
        };
        out.push(Listed {
            live,
            status,
            server_start_ticks: stored.server_start_ticks,
            driver_state: driver.map(|d| d.map_or_else(|| "gone".to_string(), |d| d.state.as_str())),
            driver_server_pid: driver.flatten().map(|d| d.server_pid),
            entry: stored.entry,
        });
    }
    out.sort_by_key(|l| l.entry.dev_id);
    Ok(out)
}

/// Whether the driver still holds `e`'s device for a server that is gone: the device exists,
/// names the recorded pid or no pid as its server, and waits for recovery (quiesced).
pub fn orphaned(e: &Entry, server_start_ticks: Option<u64>) -> bool {
    super::server::device_state(e.dev_id).is_some_and(|d| orphan_of(e, server_start_ticks, &d))
}

/// [`orphaned`] with the driver's answer at hand.
fn orphan_of(e: &Entry, server_start_ticks: Option<u64>, d: &super::server::DeviceInfo) -> bool {
    e.recovery
        && server_gone(e.pid, server_start_ticks)
        && d.no_server_but(e.pid)
        && d.state == super::server::DeviceState::Quiesced
}

/// Whether the server recorded as `pid`, started at `start_ticks`, is gone (dead, a zombie, or
/// its pid now names another process).
pub fn server_gone(pid: u32, start_ticks: Option<u64>) -> bool {
    !process_alive(pid) || (start_ticks.is_some() && process_start_ticks(pid) != start_ticks)
}

/// Start time of process `pid` (`/proc/PID/stat` field 22, clock ticks since boot), which
/// together with the pid names one process for the machine's uptime.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses): field 3 first.
    let (_, rest) = s.rsplit_once(") ")?;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// Whether `pid` is the loopkit server a record describes: it runs the same executable as
/// this process (same device and inode behind `/proc/PID/exe`) and started when recorded.
///
/// # Errors
/// Why not, in words.
pub fn verify_server(pid: u32, recorded_start: Option<u64>) -> Result<(), String> {
    let Some(want) = recorded_start else {
        return Err("the record carries no start time (written by an older loopkit), so the pid cannot be told \
                    from a reused one"
            .into());
    };
    let exe =
        std::fs::metadata(format!("/proc/{pid}/exe")).map_err(|e| format!("cannot examine its executable ({e})"))?;
    let me = std::fs::metadata("/proc/self/exe").map_err(|e| format!("cannot examine loopkit's executable ({e})"))?;
    use std::os::unix::fs::MetadataExt;
    if (exe.dev(), exe.ino()) != (me.dev(), me.ino()) {
        let name = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
        return Err(format!("it runs {name:?}, not this loopkit executable"));
    }
    match process_start_ticks(pid) {
        Some(t) if t == want => Ok(()),
        Some(t) => Err(format!("it started at tick {t}, the recorded server at tick {want}: the pid was reused")),
        None => Err("it is gone".into()),
    }
}

/// Whether process `pid` exists.
pub fn process_alive(pid: u32) -> bool {
    let Some(p) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    // Zombies count as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
            state != Some('Z') && rustix::process::test_kill_process(p).is_ok()
        }
        Err(_) => false,
    }
}

/// The recorded device named by `what`: its device path (`/dev/ublkbN`), its name (`ublkbN`) or
/// the image path.
///
/// # Errors
/// From [`list_checked`] (an untrusted state directory).
pub fn find(what: &Path) -> crate::Result<Option<Listed>> {
    let canon = std::fs::canonicalize(what).ok();
    Ok(list_checked()?.into_iter().find(|l| {
        let e = &l.entry;
        Path::new(&e.device) == what
            || what.to_str().is_some_and(|w| e.device.strip_prefix("/dev/") == Some(w))
            || canon.as_deref().is_some_and(|c| Path::new(&e.image) == c)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_without_a_remap_code_reads_as_null_and_one_with_it_keeps_it() {
        // A record written by a version without the field, then the same with the field.
        let old = r#"{"image":"/i.img","device":"/dev/ublkb0","dev_id":0,"pid":1,"mode":"remap",
            "read_only":false,"size_bytes":4096,"logical_block_bytes":512,"physical_block_bytes":4096,
            "data_path":"copy","direct_io":true,"remap":"stopped: whatever the words (remap.map-changed)",
            "lease":null,"queues":1,"depth":32,"mapper":null,"kernel":"6.12"}"#;
        let stored: Stored = serde_json::from_str(old).unwrap();
        assert_eq!(stored.entry.remap_code, None, "the code is never parsed out of the words");
        let with = old.replacen(r#""lease":null"#, r#""remap_code":"remap.lease-broken","lease":null"#, 1);
        let stored: Stored = serde_json::from_str(&with).unwrap();
        assert_eq!(stored.entry.remap_code.as_deref(), Some("remap.lease-broken"));
        let back = serde_json::to_value(&stored).unwrap();
        assert_eq!(back["remap_code"], "remap.lease-broken");
    }

    #[test]
    fn a_live_process_is_alive_and_a_bogus_pid_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX));
    }

    #[test]
    fn start_ticks_tell_this_process_apart() {
        let me = std::process::id();
        let t = process_start_ticks(me).unwrap();
        assert!(verify_server(me, Some(t)).is_ok());
        assert!(verify_server(me, Some(t + 1)).unwrap_err().contains("reused"));
        assert!(verify_server(me, None).is_err());
        assert!(process_start_ticks(u32::MAX).is_none());
    }
}
