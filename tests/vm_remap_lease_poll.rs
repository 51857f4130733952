//! `attach --remap`'s 200 ms lease poll against the real kernel, one boot per kernel (Debian 6.12
//! and trixie-backports 7.x): a lease broken without the engine ever receiving the break signal
//! must still stop raw I/O within the contract's bound (`F_GETLEASE` every 200 ms).
//!
//! Hiding the signal: the kernel signals a lease break (`lease_break_callback` →
//! `kill_fasync(…, SIGIO, …)`) to the owner of the leased *open file*, read when the signal is
//! sent (`send_sigio` with the file's `f_owner`). A root helper takes a copy of each of the
//! server's descriptors of the image (`pidfd_getfd`: the same open file, no new open, so no
//! lease break) and makes itself the owner (`F_SETOWN`), with SIGIO ignored, then exits: the
//! break signal goes nowhere and the server's SIGIO watcher never runs. Nothing else tells the engine either:
//! the writer never sends a FLUSH.
//!
//! Each run: a fresh ext4 on vda, a fully written 16 MiB image attached with `--remap`
//! (`lease-break-time` 10 s, its floor, at attach; 5 s during the break), a writer doing 4 KiB
//! `O_DIRECT` writes at random offsets through the device without pause, then another process
//! truncates the image to 0 (`truncate(2)` waits for the lease break; the rest of the file
//! system was filled beforehand, so the freed blocks are the only free ones), an 8 MiB victim
//! file takes them (`conv=fsync`) and the writer goes on for 3 s more. Oracles: how long the
//! `truncate` call waited (the kernel lets it go when the holder releases the lease, or after
//! `lease-break-time`), and the victim read back from its disk blocks after `drop_caches`.
//! (off) the control: `LOOPKIT_REMAP_REVALIDATE_MS=0` (the benchmark knob that turns the poll
//!      off): the truncate must wait the whole `lease-break-time` (proof that the break signal
//!      was hidden) and the victim must change or become unreadable (raw writes went on into
//!      the freed blocks after the kernel revoked the lease, its extent tree block among them:
//!      the hazard the poll bounds). Run second, on a file system of its own.
//! (on) the default, run first: the truncate must return well before `lease-break-time` (the
//!      poll saw the break, stopped raw I/O, drained, released the lease), the victim must be
//!      unchanged, and `--list` must say `stopped: … (remap.lease-lost)`.

use crate::util::{self, Scratch, TestResult, trial};
use crate::vm::{self, Disk, VmJob};
use libtest_mimic::{Completion, Trial};
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("vm_remap_lease_poll::an_unsignalled_lease_break_stops_raw_io_on_trixie_6_12", on_trixie),
        trial("vm_remap_lease_poll::an_unsignalled_lease_break_stops_raw_io_on_backports_7", on_backports),
    ]
}

fn on_trixie() -> TestResult {
    checks(vm::TRIXIE)
}

fn on_backports() -> TestResult {
    checks(vm::BACKPORTS)
}

/// Redirect the lease-break signal of every descriptor process `pid` holds on `path` to this
/// process (which ignores SIGIO and then exits).
const HIDE: &str = r#"
import ctypes, os, signal, sys
pid, path = int(sys.argv[1]), sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
SYS_pidfd_getfd, F_SETOWN = 438, 8
signal.signal(signal.SIGIO, signal.SIG_IGN)
pidfd = os.pidfd_open(pid)
n = 0
for name in os.listdir("/proc/%d/fd" % pid):
    try:
        if os.readlink("/proc/%d/fd/%s" % (pid, name)) != path:
            continue
    except OSError:
        continue
    fd = libc.syscall(SYS_pidfd_getfd, pidfd, int(name), 0)
    if fd < 0:
        raise SystemExit("pidfd_getfd: errno %d" % ctypes.get_errno())
    if libc.fcntl(fd, F_SETOWN, os.getpid()) < 0:
        raise SystemExit("F_SETOWN: errno %d" % ctypes.get_errno())
    os.close(fd)
    n += 1
print(n)
"#;

/// 4 KiB `O_DIRECT` writes at random offsets of device argv[1] (argv[2] bytes) until the file
/// argv[3] exists; never a flush. Prints how many succeeded and failed.
const WRITER: &str = r#"
import mmap, os, random, sys
dev, size, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
buf.write(os.urandom(4096))
ok = bad = 0
while not os.path.exists(stop):
    try:
        os.pwritev(fd, [buf], random.randrange(size // 4096) * 4096)
        ok += 1
    except OSError:
        bad += 1
print("%d %d" % (ok, bad), flush=True)
os.close(fd)
"#;

fn script(bin: &str) -> String {
    let mut s = format!("LK={}\n{}", vm::sh_quote(bin), crate::vm_attach::HELPERS);
    s.push_str(
        r#"
echo "kernel:$(uname -r)"
remap_of() {
    "$LK" attach --list --json | python3 -c '
import json, sys
d = [x for x in json.load(sys.stdin)["devices"] if x["device"] == sys.argv[1]]
print(d[0]["remap"] if d else "none")' "$1"
}
mkdir -p /tmp/p
lbt=$(cat /proc/sys/fs/lease-break-time)
# The poll first; the control last, on a file system of its own (it corrupts the victim, whose
# extent tree may sit in the freed blocks too).
for run in on off; do
    mkfs.ext4 -q -F -b 4096 /dev/vda
    mount -t ext4 /dev/vda /tmp/p
    dd if=/dev/zero of=/tmp/p/img bs=1M count=16 conv=fsync status=none
    # Nothing else free: the blocks the truncate frees are the only ones the victim can take.
    dd if=/dev/zero of=/tmp/p/filler bs=1M conv=fsync status=none 2>/dev/null || true
    sync
    echo 10 >/proc/sys/fs/lease-break-time
    if [ $run = off ]; then export LOOPKIT_REMAP_REVALIDATE_MS=0; fi
    dev=$(start $run --remap /tmp/p/img)
    unset LOOPKIT_REMAP_REVALIDATE_MS
    echo "$run-remap:$(remap_of "$dev")"
    echo "$run-hidden:$(python3 /run/vm/hide.py "$(cat /tmp/$run.pid)" /tmp/p/img)"
    echo 5 >/proc/sys/fs/lease-break-time
    rm -f /tmp/stop-writer
    python3 /run/vm/writer.py "$dev" 16777216 /tmp/stop-writer >/tmp/$run.writer &
    wp=$!
    sleep 1
    echo "$run-break-wait-ms:$(python3 -c 'import os, time
t = time.monotonic()
os.truncate("/tmp/p/img", 0)
print(round((time.monotonic() - t) * 1000))')"
    dd if=/dev/urandom of=/tmp/p/victim bs=1M count=8 conv=fsync status=none || echo "$run-victim-dd-failed"
    v1=$(sha256sum </tmp/p/victim | cut -c1-64)
    sleep 3
    touch /tmp/stop-writer
    wait "$wp" || true
    echo "$run-writes:$(cat /tmp/$run.writer)"
    echo "$run-state:$(remap_of "$dev")"
    stop $run "$dev"
    sync
    echo 3 >/proc/sys/vm/drop_caches
    v2=$({ sha256sum </tmp/p/victim 2>/dev/null || echo unreadable; } | cut -c1-64)
    echo "$run-victim:$([ "$v1" = "$v2" ] && echo unchanged || { [ "$v2" = unreadable ] && echo unreadable || echo changed; })"
    umount /tmp/p
done
echo "$lbt" >/proc/sys/fs/lease-break-time
"#,
    );
    s
}

fn checks(suite: &'static str) -> TestResult {
    for t in ["mkfs.ext4", "sha256sum"] {
        if !util::have(t) {
            return util::skip(format!("{t} not installed"));
        }
    }
    if let Some(why) = util::python_missing() {
        return util::skip(why);
    }
    let d = Scratch::new("vm-remap-lease-poll");
    let disk = d.path("ext4.img");
    std::fs::File::create(&disk)?.set_len(96 << 20)?;
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let script = script(&bin_in_guest);
    let job = VmJob {
        disks: &[Disk::rw(&disk)],
        script: &script,
        files: &[("hide.py", HIDE.as_bytes()), ("writer.py", WRITER.as_bytes())],
        timeout: Duration::from_secs(600),
        suite: Some(suite),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(o) => o,
        Err(u) => return u.skip(),
    };
    out.check()?;
    let t = out.transcript();
    let one = |tag: &str| -> String { out.tagged(tag).next().unwrap_or("(missing)").to_string() };
    let wait_ms = |run: &str| one(&format!("{run}-break-wait-ms:")).parse::<u64>().ok();
    let mut errors = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            errors.push(what);
        }
    };
    for run in ["off", "on"] {
        let st = one(&format!("{run}-remap:"));
        check(st == "active", format!("({run}) the image is not remapped: {st}"));
        let hidden = one(&format!("{run}-hidden:"));
        check(hidden.parse::<u32>().is_ok_and(|n| n >= 1), format!("({run}) no descriptor redirected: {hidden}"));
        let writes = one(&format!("{run}-writes:"));
        let ok_writes = writes.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
        check(ok_writes > 0, format!("({run}) the writer wrote nothing: {writes}"));
    }
    // The control: the signal really was hidden, so without the poll the kernel had to time out.
    check(
        wait_ms("off").is_some_and(|w| w >= 4500),
        format!(
            "(off) truncate waited {} ms, less than lease-break-time (5 s): something answered the break, \
             so the test does not isolate the poll",
            one("off-break-wait-ms:")
        ),
    );
    check(
        ["changed", "unreadable"].contains(&one("off-victim:").as_str()),
        format!(
            "(off) the victim is {} without the poll: the scenario did not put raw writes into freed blocks{}",
            one("off-victim:"),
            if t.contains("off-victim-dd-failed") { " (the victim's dd failed)" } else { "" }
        ),
    );
    // The poll: the break was answered well before the kernel's timeout, and no raw write landed after.
    check(
        wait_ms("on").is_some_and(|w| w <= 2000),
        format!("(on) truncate waited {} ms (the poll runs every 200 ms)", one("on-break-wait-ms:")),
    );
    check(
        one("on-victim:") == "unchanged",
        "(on) the victim file changed: a raw write landed after the lease was broken".into(),
    );
    let st = one("on-state:");
    check(st.starts_with("stopped:") && st.contains("remap.lease-lost"), format!("(on) --list after the break: {st}"));
    if !errors.is_empty() {
        return util::fail(format!("{} ({suite}):\n{}\n{t}", errors.len(), errors.join("\n")));
    }
    eprintln!(
        "vm_remap_lease_poll on {} passed in {:.1?}: truncate waited {} ms with the poll, {} ms without \
         (victim {} without); writes ok/failed {} with, {} without",
        one("kernel:"),
        out.elapsed,
        one("on-break-wait-ms:"),
        one("off-break-wait-ms:"),
        one("off-victim:"),
        one("on-writes:"),
        one("off-writes:"),
    );
    Ok(Completion::Completed)
}
