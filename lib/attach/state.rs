//! The registry of attached devices: one JSON file per ublk device in a state directory
//! (`/run/loopkit/attach`, or `$LOOPKIT_STATE_DIR`), written by the serving process once the
//! device is live and removed at detach; `attach --list` and `detach` read it.

use serde::{Deserialize, Serialize};
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
}

/// The state directory.
pub fn dir() -> PathBuf {
    std::env::var_os(STATE_DIR_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/run/loopkit/attach"))
}

fn entry_path(dir: &Path, dev_id: u32) -> PathBuf {
    dir.join(format!("ublkb{dev_id}.json"))
}

/// Record `e` (temporary file, then rename).
///
/// # Errors
/// `Io` when the state directory cannot be written.
pub fn record(e: &Entry) -> crate::Result<PathBuf> {
    let d = dir();
    std::fs::create_dir_all(&d).map_err(|err| crate::Error::io(format!("cannot create {}", d.display()), err))?;
    let path = entry_path(&d, e.dev_id);
    let tmp = d.join(format!(".ublkb{}.json.{}", e.dev_id, std::process::id()));
    let text = serde_json::to_vec_pretty(e).map_err(|err| crate::Error::invalid(format!("BUG: {err}")))?;
    std::fs::write(&tmp, text).map_err(|err| crate::Error::io(format!("cannot write {}", tmp.display()), err))?;
    std::fs::rename(&tmp, &path).map_err(|err| crate::Error::io(format!("cannot write {}", path.display()), err))?;
    Ok(path)
}

/// Forget device `dev_id` (missing is fine).
pub fn forget(dev_id: u32) {
    let _ = std::fs::remove_file(entry_path(&dir(), dev_id));
}

/// A recorded device and whether its server still runs.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// What was recorded.
    #[serde(flatten)]
    pub entry: Entry,
    /// The serving process is alive and the device node exists.
    pub live: bool,
}

/// Every recorded device, sorted by device number. Unreadable entries are skipped.
pub fn list() -> Vec<Listed> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir()) else {
        return out;
    };
    for ent in rd.flatten() {
        let name = ent.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("ublkb") && name.ends_with(".json")) {
            continue;
        }
        let Ok(bytes) = std::fs::read(ent.path()) else { continue };
        let Ok(entry) = serde_json::from_slice::<Entry>(&bytes) else { continue };
        let live = process_alive(entry.pid) && Path::new(&entry.device).exists();
        out.push(Listed { entry, live });
    }
    out.sort_by_key(|l| l.entry.dev_id);
    out
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
pub fn find(what: &Path) -> Option<Listed> {
    let canon = std::fs::canonicalize(what).ok();
    list().into_iter().find(|l| {
        let e = &l.entry;
        Path::new(&e.device) == what
            || what.to_str().is_some_and(|w| e.device.strip_prefix("/dev/") == Some(w))
            || canon.as_deref().is_some_and(|c| Path::new(&e.image) == c)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_is_alive_and_a_bogus_pid_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX));
    }
}
