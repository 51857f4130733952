//! Recovery of an attached device whose server died, against the real kernel (the QEMU guest of
//! `tests/vm.rs`, Debian 13's 6.12 and trixie-backports 7.x). Oracles: `fio --verify=crc32c`
//! (every block written before, during and after the crash reads back with its checksum), the
//! kernel's own behaviour of the device node and of `dd` on it, and `timeout` for "no hang".
//! (r) fio writes sequentially through the device (rate-limited so the crash lands mid-run);
//!     the server is killed with SIGKILL; `attach --list` shows the device orphaned (the driver's
//!     state `quiesced`, its server pid the killed one or -1); recovery is
//!     refused to another user (sudo for uid 1000) and when the image path now names another
//!     inode; `attach --recover DEV` resumes serving the same device; fio finishes without an
//!     error and `fio --verify_only` over the whole written area passes; then the new server is
//!     killed too and a plain `attach IMAGE` finds the orphaned device and recovers it, and the
//!     area verifies again.
//! (n) no recovery attempted: after SIGKILL, a read of the device fails (not hangs) within the
//!     recovery timeout (5 s, plus the guest's slack), the device goes away, `--list` shows the
//!     record stale (the driver has no such device: `gone`) and `detach` forgets it.

use crate::util::{self, Scratch, TestResult, trial};
use crate::vm::{self, Disk, VmJob};
use crate::vm_attach::HELPERS;
use libtest_mimic::{Completion, Trial};
use std::process::Command;
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("vm_attach_recovery::kill_and_recover_on_trixie_6_12", || recovery(vm::TRIXIE)),
        trial("vm_attach_recovery::kill_and_recover_on_backports_7", || recovery(vm::BACKPORTS)),
    ]
}

/// The fio job: 64 KiB sequential writes over 24 MiB, each block stamped with crc32c; `extra`
/// adds the rate limit (writing) or `--verify_only` (re-reading everything written).
fn fio(file: &str, extra: &str) -> String {
    format!(
        "fio --name=r --filename={file} --ioengine=libaio --direct=1 --rw=write --bs=64k --iodepth=8 --size=24M \
         --verify=crc32c --verify_fatal=1 --do_verify=0 --output-format=terse {extra}"
    )
}

fn script(bin: &str) -> String {
    let mut s = format!("LK={}\n{HELPERS}", vm::sh_quote(bin));
    s.push_str(
        r#"
mkdir -p /tmp/h
mount -t ext4 /dev/vda /tmp/h
echo "kernel:$(uname -r)"

# (r) kill -9 mid-write, recover, verify
dd if=/dev/zero of=/tmp/h/r.img bs=1M count=32 conv=fsync status=none
dev=$(start r --recovery-timeout 300 /tmp/h/r.img)
echo "r-dev:$dev"
"#,
    );
    s.push_str(&format!("({} --rate=2m >/tmp/fio-w.out 2>&1; echo $? >/tmp/fio-w.rc) &\n", fio("\"$dev\"", "")));
    s.push_str(
        r#"sleep 4
echo "r-midrun:$(test -s /tmp/fio-w.rc && echo no || echo yes)"
echo "r-pid:$(cat /tmp/r.pid)"
kill -9 "$(cat /tmp/r.pid)"
for _ in $(seq 100); do [ -s /tmp/r.rc ] && break; sleep 0.1; done
echo "r-node-kept:$(test -e "$dev" && echo yes || echo no)"
for _ in $(seq 100); do "$LK" attach --list | grep -q orphaned && break; sleep 0.2; done
"$LK" attach --list --json >/run/vm/list-orphan.json
rc=0; SUDO_UID=1000 SUDO_GID=1000 "$LK" attach --recover "$dev" >/dev/null 2>/tmp/deny.err || rc=$?
echo "r-deny-owner:$rc:$(grep -c 'attach.recover-denied' /tmp/deny.err || true)"
mv /tmp/h/r.img /tmp/h/r.orig
cp /tmp/h/r.orig /tmp/h/r.img
rc=0; "$LK" attach --recover "$dev" >/dev/null 2>/tmp/deny2.err || rc=$?
echo "r-deny-inode:$rc:$(grep -c 'attach.image-changed' /tmp/deny2.err || true)"
rm /tmp/h/r.img
mv /tmp/h/r.orig /tmp/h/r.img
dev2=$(start r2 --recover "$dev")
echo "r-recovered:$dev2"
echo "r2-pid:$(cat /tmp/r2.pid)"
for _ in $(seq 1200); do [ -s /tmp/fio-w.rc ] && break; sleep 0.1; done
echo "r-write:$(cat /tmp/fio-w.rc 2>/dev/null || echo unfinished)"
sed 's/^/r-fio: /' /tmp/fio-w.out >&2
rc=0
"#,
    );
    s.push_str(&format!("{} >/tmp/fio-v.out 2>&1 || rc=$?\n", fio("\"$dev\"", "--verify_only")));
    s.push_str(
        r#"echo "r-verify:$rc"
sed 's/^/r-fio-v: /' /tmp/fio-v.out >&2
"$LK" attach --list --json >/run/vm/list-recovered.json
# again, recovered by a plain `attach IMAGE`
kill -9 "$(cat /tmp/r2.pid)"
for _ in $(seq 100); do [ -s /tmp/r2.rc ] && break; sleep 0.1; done
for _ in $(seq 100); do "$LK" attach --list | grep -q orphaned && break; sleep 0.2; done
dev3=$(start r3 /tmp/h/r.img)
echo "r-auto:$dev3"
echo "r-auto-note:$(grep -c 'recovering it' /tmp/r3.err || true)"
rc=0
"#,
    );
    s.push_str(&format!("{} >/tmp/fio-v2.out 2>&1 || rc=$?\n", fio("\"$dev\"", "--verify_only")));
    s.push_str(
        r#"echo "r-auto-verify:$rc"
stop r3 "$dev"
echo "r-gone:$(test -e "$dev" && echo no || echo yes)"

# (n) nobody recovers: I/O fails within the timeout, no hang
dd if=/dev/zero of=/tmp/h/n.img bs=1M count=8 conv=fsync status=none
dev=$(start n --recovery-timeout 5 /tmp/h/n.img)
kill -9 "$(cat /tmp/n.pid)"
for _ in $(seq 100); do [ -s /tmp/n.rc ] && break; sleep 0.1; done
t0=$(date +%s)
rc=0; timeout 120 dd if="$dev" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null || rc=$?
echo "n-io:$rc"
echo "n-secs:$(( $(date +%s) - t0 ))"
gone=no
for _ in $(seq 100); do if [ ! -e "$dev" ]; then gone=yes; break; fi; sleep 0.1; done
echo "n-gone:$gone"
echo "n-listed:$("$LK" attach --list | grep "$dev" | grep -c stale || true)"
"$LK" attach --list --json >/run/vm/list-removed.json
"$LK" detach "$dev" && echo "n-detach:ok"
umount /tmp/h
"#,
    );
    s
}

fn recovery(suite: &'static str) -> TestResult {
    for t in ["mkfs.ext4", "fio"] {
        if !util::have(t) {
            return util::skip(format!("{t} not installed"));
        }
    }
    let d = Scratch::new("vm-attach-recovery");
    let outer = d.path("outer.img");
    util::run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&outer).arg("96M"))?;
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let script = script(&bin_in_guest);
    let job = VmJob {
        disks: &[Disk::rw(&outer)],
        script: &script,
        timeout: Duration::from_secs(900),
        cpus: 2,
        suite: Some(suite),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(o) => o,
        Err(u) => return u.skip(),
    };
    out.check()?;
    let one = |tag: &str| -> Vec<String> { out.tagged(tag).map(str::to_string).collect() };
    let mut errors = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            errors.push(what);
        }
    };
    let dev = one("r-dev:").first().cloned().unwrap_or_default();
    check(dev.starts_with("/dev/ublkb"), format!("(r) attach printed {dev:?}"));
    check(one("r-midrun:") == ["yes"], "(r) fio had finished before the kill: not a mid-run crash".into());
    check(one("r-node-kept:") == ["yes"], "(r) the device node went away with its server".into());
    let list: serde_json::Value =
        serde_json::from_slice(&out.file("list-orphan.json")?).map_err(|e| format!("list-orphan.json: {e}"))?;
    let entry = &list["devices"][0];
    // The driver's view: waiting for recovery, with the dead server's pid (6.x) or none (7.x).
    let killed: Option<i64> = one("r-pid:").first().and_then(|s| s.parse().ok());
    check(
        entry["device"] == dev.as_str()
            && entry["status"] == "orphaned"
            && entry["live"] == false
            && entry["recovery"] == true
            && entry["driver_state"] == "quiesced"
            && entry["driver_server_pid"].as_i64().is_some_and(|p| p == -1 || Some(p) == killed),
        format!("(r) --list after the kill (server pid {killed:?}): {list}"),
    );
    let denied = |tag: &str, what: &str| {
        let v = one(tag);
        let ok = v.len() == 1 && v[0].split(':').next().is_some_and(|c| c != "0") && v[0].ends_with(":1");
        (ok, format!("(r) recovery by {what} was not refused with its code: {v:?}"))
    };
    let (ok, why) = denied("r-deny-owner:", "another user");
    check(ok, why);
    let (ok, why) = denied("r-deny-inode:", "another inode at the image path");
    check(ok, why);
    check(one("r-recovered:") == [dev.clone()], format!("(r) attach --recover printed {:?}", one("r-recovered:")));
    check(one("r-write:") == ["0"], format!("(r) fio's writes across the crash: exit {:?}", one("r-write:")));
    check(one("r-verify:") == ["0"], format!("(r) fio --verify_only of the written area: exit {:?}", one("r-verify:")));
    let rec: serde_json::Value =
        serde_json::from_slice(&out.file("list-recovered.json")?).map_err(|e| format!("list-recovered.json: {e}"))?;
    let r2: Option<i64> = one("r2-pid:").first().and_then(|s| s.parse().ok());
    check(
        rec["devices"][0]["status"] == "live"
            && rec["devices"][0]["device"] == dev.as_str()
            && rec["devices"][0]["driver_state"] == "live"
            && r2.is_some()
            && rec["devices"][0]["driver_server_pid"].as_i64() == r2,
        format!("(r) --list after recovery (the recovering server is pid {r2:?}): {rec}"),
    );
    check(one("r-auto:") == [dev.clone()], format!("(r) attach IMAGE over an orphan printed {:?}", one("r-auto:")));
    check(one("r-auto-note:") == ["1"], "(r) attach IMAGE did not say it recovers the orphan".into());
    check(one("r-auto-verify:") == ["0"], format!("(r) verify after the second recovery: {:?}", one("r-auto-verify:")));
    check(one("r3-server-rc:") == ["0"], format!("(r) the recovered server's exit: {:?}", one("r3-server-rc:")));
    check(one("r-gone:") == ["yes"], "(r) the device is still there after detach".into());

    let io = one("n-io:");
    check(io.len() == 1 && io[0] != "0" && io[0] != "124", format!("(n) read of the orphan: exit {io:?} (124: hung)"));
    let secs: Option<u64> = one("n-secs:").first().and_then(|s| s.parse().ok());
    // The 5 s timeout, the supervisor's 200 ms polling, and a slow TCG guest.
    check(secs.is_some_and(|s| s <= 40), format!("(n) the read failed after {secs:?} s"));
    check(one("n-gone:") == ["yes"], "(n) the device did not go away".into());
    check(one("n-listed:") == ["1"], format!("(n) --list: {:?}", one("n-listed:")));
    check(one("n-detach:") == ["ok"], "(n) detach of the stale record failed".into());
    let removed: serde_json::Value =
        serde_json::from_slice(&out.file("list-removed.json")?).map_err(|e| format!("list-removed.json: {e}"))?;
    check(
        removed["devices"][0]["status"] == "stale" && removed["devices"][0]["driver_state"] == "gone",
        format!("(n) --list after the supervisor removed the device: {removed}"),
    );

    if !errors.is_empty() {
        return util::fail(format!("{} ({suite}):\n{}\n{}", errors.len(), errors.join("\n"), out.transcript()));
    }
    eprintln!(
        "vm_attach_recovery: {} passed in {:.1?} (read failed after {secs:?} s)",
        one("kernel:").first().map_or("?", String::as_str),
        out.elapsed
    );
    Ok(Completion::Completed)
}
