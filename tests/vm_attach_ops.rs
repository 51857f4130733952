//! Running `attach` as a service, in the guest of `tests/vm.rs` on both kernels, and the unit
//! file on the host. Oracles: the kernel (which device nodes exist, `rmmod`, the
//! `kernel.io_uring_disabled` sysctl), a Python `AF_UNIX` datagram socket standing in for
//! systemd's `$NOTIFY_SOCKET`, the bytes read back through the device (`cmp` with what was
//! written), and `systemd-analyze verify` for the unit file.
//! (m) `ublk_drv` unloaded (`rmmod`): `attach` fails with exit 2 and one line naming
//!     `modprobe ublk_drv`;
//! (n) `kernel.io_uring_disabled=2`: `attach` fails with exit 2 and one line naming the sysctl;
//! (o) `dist/systemd/loopkit-attach@.service`'s `ExecStart=` line, run as systemd runs it
//!     (`$OPTIONS` split at spaces, `${IMAGE}` one word, `$NOTIFY_SOCKET` set): `READY=1` arrives
//!     once the device serves; `--list --json` shows it `live` with its pid, image and device;
//!     after `kill -9` it lists as `orphaned`; the same line run again (what `Restart=on-failure`
//!     does) resumes the same device, notifies again, and the bytes written before the kill read
//!     back; SIGTERM (what `systemctl stop` sends) ends it with exit 0 and removes the device.

use crate::util::{self, Scratch, TestResult, trial};
use crate::vm::{self, Disk, VmJob};
use libtest_mimic::{Completion, Trial};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("vm_attach_ops::systemd_unit_verifies", unit_verifies),
        trial("vm_attach_ops::service_and_failures_on_trixie_6_12", || ops(vm::TRIXIE)),
        trial("vm_attach_ops::service_and_failures_on_backports_7", || ops(vm::BACKPORTS)),
    ]
}

fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd/loopkit-attach@.service")
}

/// The unit's `KEY=` lines (first occurrence).
fn unit_value(unit: &str, key: &str) -> Option<String> {
    unit.lines().find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// `systemd-analyze verify` on the shipped unit (instance `t`), with `/usr/bin/loopkit` pointed
/// at the binary under test (the only change) and man page lookups off (the host need not have
/// them installed).
fn unit_verifies() -> TestResult {
    if !util::have("systemd-analyze") {
        return util::skip("systemd-analyze not installed (Debian package systemd)");
    }
    let text = std::fs::read_to_string(unit_path())?;
    let bin = util::loopkit_bin();
    let d = Scratch::new("systemd-unit");
    let unit = d.path("loopkit-attach@t.service");
    std::fs::write(&unit, text.replace("/usr/bin/loopkit", &bin.display().to_string()))?;
    let out = util::run(Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&unit))?;
    let err = String::from_utf8_lossy(&out.stderr);
    crate::ensure!(out.status.success() && err.trim().is_empty(), "systemd-analyze verify: {}\n{err}", out.status);
    for (key, want) in [("Type", "notify"), ("Restart", "on-failure"), ("KillSignal", "SIGTERM")] {
        crate::ensure!(unit_value(&text, key).as_deref() == Some(want), "{key}= is not {want}");
    }
    Ok(Completion::Completed)
}

/// The unit's `ExecStart=` as a guest shell command: the binary as `"$LK"`, `$OPTIONS` left
/// unquoted (split at spaces, as systemd splits `$VAR`), `${IMAGE}` quoted (one word, as systemd
/// keeps `${VAR}`), any other word quoted.
fn exec_start(unit: &str) -> Result<String, String> {
    let line = unit_value(unit, "ExecStart").ok_or("no ExecStart= in the unit")?;
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| match w {
            "/usr/bin/loopkit" => "\"$LK\"".to_string(),
            "$OPTIONS" => "$OPTIONS".to_string(),
            "${IMAGE}" => "\"$IMAGE\"".to_string(),
            w if w.contains('$') => format!("unexpected variable {w}"),
            w => vm::sh_quote(w),
        })
        .collect();
    if let Some(bad) = words.iter().find(|w| w.starts_with("unexpected")) {
        return Err(format!("ExecStart={line}: {bad}"));
    }
    Ok(words.join(" "))
}

const NOTIFY_LISTENER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(900)
n = 0
with open(sys.argv[2], "a") as out:
    while True:
        d = s.recv(4096).decode()
        out.write(d.replace("\n", "|") + "\n")
        out.flush()
"#;

fn script(bin: &str, start: &str) -> String {
    let mut s = format!("LK={}\n", vm::sh_quote(bin));
    // Run in the script's own shell (not in a command substitution), so `wait` can reap it.
    s.push_str(&format!("svc_start() {{\n    {start} >>/tmp/o.out 2>>/tmp/o.err &\n    pid=$!\n}}\n"));
    s.push_str(
        r#"
echo "kernel:$(uname -r)"
one_line() { echo "$(grep -c . "$1"):$(head -n 1 "$1")"; }

# (m) no ublk driver
truncate -s 16M /tmp/m.img
rmmod ublk_drv
echo "m-node:$(test -e /dev/ublk-control && echo present || echo gone)"
rc=0; "$LK" attach /tmp/m.img >/dev/null 2>/tmp/m.err || rc=$?
echo "m-rc:$rc"
echo "m-err:$(one_line /tmp/m.err)"
modprobe -d "$VM_MODROOT" ublk_drv
echo "m-reloaded:$(test -e /dev/ublk-control && echo yes || echo no)"

# (n) io_uring disabled
sysctl -qw kernel.io_uring_disabled=2
rc=0; "$LK" attach /tmp/m.img >/dev/null 2>/tmp/n.err || rc=$?
echo "n-rc:$rc"
echo "n-err:$(one_line /tmp/n.err)"
sysctl -qw kernel.io_uring_disabled=0

# (o) the unit's ExecStart line under a stand-in service manager
mkdir -p /tmp/h
mount -t ext4 /dev/vda /tmp/h
dd if=/dev/zero of=/tmp/h/o.img bs=1M count=16 conv=fsync status=none
python3 /run/vm/notify.py /tmp/notify.sock /run/vm/notify.txt &
listener=$!
for _ in $(seq 100); do [ -S /tmp/notify.sock ] && break; sleep 0.1; done
export NOTIFY_SOCKET=/tmp/notify.sock IMAGE=/tmp/h/o.img OPTIONS="--queues 2 --depth 32"
ready() { for _ in $(seq 900); do [ "$(grep -c READY=1 /run/vm/notify.txt 2>/dev/null || true)" -ge "$1" ] && return 0; sleep 0.2; done; return 1; }
svc_start
ready 1 && echo "o-ready1:yes" || echo "o-ready1:no"
"$LK" attach --list --json >/run/vm/o-list1.json
dev=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["devices"][0]["device"])' /run/vm/o-list1.json)
echo "o-pid1:$pid"
head -c 4194304 /dev/urandom >/tmp/o.data
dd if=/tmp/o.data of="$dev" bs=1M oflag=direct conv=fsync status=none
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
# (systemd waits RestartSec=2 before the restart; the driver needs a moment to quiesce the device)
for _ in $(seq 100); do "$LK" attach --list | grep -q orphaned && break; sleep 0.2; done
"$LK" attach --list --json >/run/vm/o-list2.json
svc_start
ready 2 && echo "o-ready2:yes" || echo "o-ready2:no"
"$LK" attach --list --json >/run/vm/o-list3.json
echo "o-pid2:$pid"
# (no process substitution: the chroot has no /dev/fd)
dd if="$dev" of=/tmp/o.back bs=1M count=4 iflag=direct status=none
cmp /tmp/o.back /tmp/o.data && echo "o-data:same" || echo "o-data:differs"
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
echo "o-stop-rc:$rc"
echo "o-dev-gone:$(test -e "$dev" && echo no || echo yes)"
"$LK" attach --list --json >/run/vm/o-list4.json
kill "$listener" 2>/dev/null || true
sed 's/^/o-err: /' /tmp/o.err >&2
umount /tmp/h
"#,
    );
    s
}

fn ops(suite: &'static str) -> TestResult {
    for t in ["mkfs.ext4", "python3"] {
        if !util::have(t) {
            return util::skip(format!("{t} not installed"));
        }
    }
    let unit = std::fs::read_to_string(unit_path())?;
    let start = exec_start(&unit)?;
    let d = Scratch::new("vm-attach-ops");
    let disk = d.path("ext4.img");
    util::run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk).arg("64M"))?;
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let script = script(&bin_in_guest, &start);
    let job = VmJob {
        disks: &[Disk::rw(&disk)],
        script: &script,
        files: &[("notify.py", NOTIFY_LISTENER.as_bytes())],
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
    let one = |tag: &str| -> String { out.tagged(tag).next().unwrap_or("(missing)").to_string() };
    let json = |name: &str| -> Result<serde_json::Value, String> {
        let bytes = out.file(name).map_err(|e| format!("{name}: {e:?}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{name}: {e}"))
    };
    let mut errors = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            errors.push(what);
        }
    };
    // (m), (n): exit 2, exactly one line on stderr, naming the fix.
    check(one("m-node:") == "gone", format!("(m) /dev/ublk-control after rmmod: {}", one("m-node:")));
    check(one("m-rc:") == "2", format!("(m) exit code {}", one("m-rc:")));
    let m = one("m-err:");
    check(m.starts_with("1:") && m.contains("modprobe ublk_drv"), format!("(m) stderr (lines:first): {m}"));
    check(one("m-reloaded:") == "yes", "(m) ublk_drv did not load again".to_string());
    check(one("n-rc:") == "2", format!("(n) exit code {}", one("n-rc:")));
    let n = one("n-err:");
    check(
        n.starts_with("1:") && n.contains("kernel.io_uring_disabled") && n.contains("= 2"),
        format!("(n) stderr (lines:first): {n}"),
    );
    // (o)
    check(one("o-ready1:") == "yes", "(o) no READY=1 on $NOTIFY_SOCKET after the first start".to_string());
    check(one("o-ready2:") == "yes", "(o) no second READY=1 after the restart".to_string());
    let notes = String::from_utf8_lossy(&out.file("notify.txt").unwrap_or_default()).into_owned();
    let (l1, l2, l3, l4) = (json("o-list1.json")?, json("o-list2.json")?, json("o-list3.json")?, json("o-list4.json")?);
    let dev = l1["devices"][0]["device"].clone();
    let pid1: u64 = one("o-pid1:").parse().unwrap_or(0);
    let pid2: u64 = one("o-pid2:").parse().unwrap_or(0);
    let d1 = &l1["devices"][0];
    check(
        l1["command"] == "attach-list"
            && l1["devices"].as_array().map(Vec::len) == Some(1)
            && d1["status"] == "live"
            && d1["live"] == true
            && d1["pid"] == pid1
            && d1["image"] == "/tmp/h/o.img"
            && d1["queues"] == 2
            && d1["depth"] == 32
            && d1["remap"] == "off"
            && d1["remap_code"].is_null()
            && d1["recovery"] == true,
        format!("(o) --list --json while served: {l1}"),
    );
    check(
        notes.lines().filter(|l| l.contains("READY=1")).count() == 2
            && notes.lines().all(|l| dev.as_str().is_some_and(|d| l.contains(d))),
        format!("(o) notifications: {notes:?}"),
    );
    let d2 = &l2["devices"][0];
    eprintln!("vm_attach_ops ({suite}): after kill -9: status {}, live {}", d2["status"], d2["live"]);
    check(
        d2["status"] == "orphaned" && d2["live"] == false && d2["device"] == dev && d2["pid"] == pid1,
        format!("(o) --list --json after kill -9: {l2}"),
    );
    let d3 = &l3["devices"][0];
    check(
        l3["devices"].as_array().map(Vec::len) == Some(1)
            && d3["status"] == "live"
            && d3["device"] == dev
            && d3["pid"] == pid2
            && pid2 != pid1,
        format!("(o) --list --json after the restart: {l3}"),
    );
    check(one("o-data:") == "same", format!("(o) data written before the kill: {}", one("o-data:")));
    check(one("o-stop-rc:") == "0", format!("(o) exit code after SIGTERM: {}", one("o-stop-rc:")));
    check(one("o-dev-gone:") == "yes", "(o) the device is still there after SIGTERM".to_string());
    check(l4["devices"] == serde_json::json!([]), format!("(o) --list --json after the stop: {l4}"));
    if !errors.is_empty() {
        return util::fail(format!("{} ({suite}):\n{}\n{}", errors.len(), errors.join("\n"), out.transcript()));
    }
    eprintln!("vm_attach_ops: {} passed in {:.1?}", one("kernel:"), out.elapsed);
    Ok(Completion::Completed)
}
