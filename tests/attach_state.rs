//! Review finding M6: `detach` must not trust the state records. Host tests, no ublk: records
//! are written by hand (JSON by the test) into a state directory named by `$LOOPKIT_STATE_DIR`,
//! for a `sleep` process the test spawned. Whatever the record says, `detach` must refuse and
//! the process must still be alive afterwards (checked through /proc and `kill -0` by the
//! test, not by loopkit). A state directory others can write is not trusted at all.

use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, loopkit, run, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A spawned `sleep`, killed on drop.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Sleeper {
    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

/// `/proc/PID/stat` field 22 (start time in clock ticks), read by the test.
fn start_ticks(pid: u32) -> Result<u64, Failed> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = s.rsplit_once(") ").map(|(_, r)| r).ok_or("bad /proc stat")?;
    rest.split_whitespace().nth(19).and_then(|t| t.parse().ok()).ok_or_else(|| "no start time".into())
}

fn write_record(dir: &Path, pid: u32, ticks: Option<u64>) -> Result<(), Failed> {
    let mut v = serde_json::json!({
        "image": "/nonexistent/image.img", "device": "/dev/null", "dev_id": 7, "pid": pid,
        "mode": "file", "read_only": true, "size_bytes": 0, "logical_block_bytes": 512,
        "physical_block_bytes": 512, "data_path": "copy", "direct_io": false, "remap": "off",
        "lease": null, "queues": 1, "depth": 1, "mapper": null, "kernel": "test"
    });
    if let Some(t) = ticks {
        v["server_start_ticks"] = t.into();
    }
    std::fs::write(dir.join("ublkb7.json"), serde_json::to_vec_pretty(&v)?)?;
    Ok(())
}

fn detach_refuses_records_it_cannot_verify() -> TestResult {
    if !util::have("sleep") {
        return util::skip("sleep missing");
    }
    let s = Scratch::new("attach-state");
    let dir = s.path("state");
    std::fs::create_dir(&dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let mut sleeper = Sleeper(Command::new("sleep").arg("100").stdin(Stdio::null()).spawn()?);
    let pid = sleeper.0.id();
    let ticks = start_ticks(pid)?;
    let detach = || {
        let mut c = loopkit(&["detach", "/dev/null"]);
        c.env("LOOPKIT_STATE_DIR", &dir);
        c
    };
    // The record names the sleep's pid and even its true start time: not loopkit, refused.
    for (what, t) in [("true start time", Some(ticks)), ("no start time", None), ("wrong start time", Some(ticks + 1))]
    {
        write_record(&dir, pid, t)?;
        let out = run(&mut detach())?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(code(&out) == 2, "{what}: detach exit {} (2 expected): {err}", code(&out));
        ensure!(err.contains("not the loopkit server"), "{what}: the refusal does not say why: {err}");
        ensure!(sleeper.alive(), "{what}: detach killed the sleep process");
        ensure!(dir.join("ublkb7.json").exists(), "{what}: the record was removed");
    }
    // A state directory others can write: not trusted at all.
    write_record(&dir, pid, Some(ticks))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    let out = run(&mut detach())?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(code(&out) == 2, "world-writable state dir: detach exit {} (2 expected): {err}", code(&out));
    ensure!(err.contains("writable by nobody else"), "world-writable state dir: {err}");
    ensure!(sleeper.alive(), "world-writable state dir: detach killed the sleep process");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    // A symlinked state directory is not followed.
    let link = s.path("link");
    std::os::unix::fs::symlink(&dir, &link)?;
    let out = run(loopkit(&["detach", "/dev/null"]).env("LOOPKIT_STATE_DIR", &link))?;
    ensure!(code(&out) == 2, "symlinked state dir: detach exit {}", code(&out));
    ensure!(sleeper.alive(), "symlinked state dir: detach killed the sleep process");
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![trial("attach_state::detach_refuses_records_it_cannot_verify", detach_refuses_records_it_cannot_verify)]
}
