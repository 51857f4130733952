//! Remap safety (engine side) against the real kernel, one small boot per kernel
//! (Debian 6.12 and trixie-backports 7.x), on an XFS file system with reflink made in the guest:
//! (h1) the review's H1 scenario: uid 1000 owns the image and holds a descriptor opened with
//!      access mode 3 (invisible to the write lease) before `attach --remap`; after attach it
//!      `FIDEDUPERANGE`s a zero-filled twin into 1 MiB of the image. A pattern written through the
//!      device over that range must be in the image afterwards. Before the fix, remap was active
//!      and the write went to the blocks dedupe had freed (lost). Now attach falls back to the
//!      file, naming `remap.shareable-not-root-only` (the image is not root's; the descriptor
//!      scan, `remap.open-elsewhere`, is covered on the host by `remap_engine`).
//! (lb) `/proc/sys/fs/lease-break-time` at 5 s: attach refuses to remap
//!      (`remap.lease-break-time`) and serves through the file.
//! (m) a root-only image is remapped (`--list`: `active`); a raw write through the device moves
//!     its mtime forward while attached, and the newer mtime survives `kill -9` of the server.
//! Oracles: the kernel (dedupe status, `stat`, `cmp` of the image file through XFS), `xfs_info`.

use crate::util::{self, Scratch, TestResult, trial};
use crate::vm::{self, Disk, VmJob};
use libtest_mimic::{Completion, Trial};
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("vm_remap_safety::h1_dedupe_through_a_mode_3_fd_on_trixie_6_12", on_trixie),
        trial("vm_remap_safety::h1_dedupe_through_a_mode_3_fd_on_backports_7", on_backports),
    ]
}

fn on_trixie() -> TestResult {
    checks(vm::TRIXIE)
}

fn on_backports() -> TestResult {
    checks(vm::BACKPORTS)
}

/// The holder: open the image with access mode 3 as its owner, wait for the attach, then dedupe
/// 1 MiB of zeros from `twin` over bytes 4..5 MiB of the image through that descriptor.
const HOLDER: &str = r#"
import fcntl, os, struct, sys, time
fd3 = os.open("/tmp/x/img", 3)
open("/tmp/ready", "w").close()
while not os.path.exists("/tmp/attached"):
    time.sleep(0.05)
src = os.open("/tmp/x/twin", os.O_RDONLY)
arg = bytearray(struct.pack("QQHHI", 0, 1 << 20, 1, 0, 0) + struct.pack("qQQiI", fd3, 4 << 20, 0, 0, 0))
fcntl.ioctl(src, 0xC0189436, arg)  # FIDEDUPERANGE
_, _, done, status, _ = struct.unpack_from("qQQiI", arg, 24)
with open("/tmp/dedupe", "w") as f:
    f.write("%d/%d" % (status, done))
while True:
    time.sleep(1)
"#;

fn script(bin: &str) -> String {
    let mut s = format!("LK={}\n{}", vm::sh_quote(bin), crate::vm_attach::HELPERS);
    s.push_str(
        r#"
echo "kernel:$(uname -r)"
modprobe -d "$VM_MODROOT" xfs
mkfs.xfs -q -f -m reflink=1 /dev/vda
mkdir -p /tmp/x
mount -t xfs /dev/vda /tmp/x
echo "reflink:$(xfs_info /tmp/x | grep -o 'reflink=[01]' | head -n 1)"
head -c 1048576 /dev/urandom >/tmp/pattern
dev_of() { sed -n 's/^ *"device": "\(.*\)",$/\1/p' "$1"; }

# (h1)
dd if=/dev/zero of=/tmp/x/img bs=1M count=16 conv=fsync status=none
dd if=/dev/zero of=/tmp/x/twin bs=1M count=16 conv=fsync status=none
chown 1000:1000 /tmp/x/img
setpriv --reuid=1000 --regid=1000 --clear-groups python3 -c "$(cat /run/vm/holder.py)" &
holder=$!
for _ in $(seq 300); do [ -e /tmp/ready ] && break; sleep 0.1; done
echo "h1-ready:$(test -e /tmp/ready && echo yes || echo no)"
start h1 --remap --json /tmp/x/img >/dev/null
cp /tmp/h1.out /run/vm/h1.json
dev=$(dev_of /tmp/h1.out)
"$LK" attach --list --json >/run/vm/h1-list.json
touch /tmp/attached
for _ in $(seq 300); do [ -s /tmp/dedupe ] && break; sleep 0.1; done
echo "h1-dedupe:$(cat /tmp/dedupe 2>/dev/null || echo none)"
dd if=/tmp/pattern of="$dev" bs=1M seek=4 count=1 oflag=direct conv=fsync status=none
stop h1 "$dev"
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
echo "h1-found:$(dd if=/tmp/x/img bs=1M skip=4 count=1 status=none | cmp -s - /tmp/pattern && echo ok || echo differs)"

# (lb)
dd if=/dev/zero of=/tmp/x/ok.img bs=1M count=8 conv=fsync status=none
lbt=$(cat /proc/sys/fs/lease-break-time)
echo 5 >/proc/sys/fs/lease-break-time
start lb --remap --json /tmp/x/ok.img >/dev/null
echo "$lbt" >/proc/sys/fs/lease-break-time
cp /tmp/lb.out /run/vm/lb.json
stop lb "$(dev_of /tmp/lb.out)"

# (m)
touch -m -d '2001-01-01 00:00:00' /tmp/x/ok.img
echo "m-before:$(stat -c %Y /tmp/x/ok.img)"
dev=$(start m --remap /tmp/x/ok.img)
"$LK" attach --list --json >/run/vm/m-list.json
dd if=/tmp/pattern of="$dev" bs=1M seek=2 oflag=direct conv=fsync status=none
echo "m-attached:$(stat -c %Y /tmp/x/ok.img)"
kill -9 "$(cat /tmp/m.pid)"
for _ in $(seq 100); do [ -s /tmp/m.rc ] && break; sleep 0.1; done
for _ in $(seq 100); do [ -e "$dev" ] || break; sleep 0.1; done
echo "m-killed:$(stat -c %Y /tmp/x/ok.img)"
"$LK" detach "$dev" >/dev/null 2>&1 || true
echo "m-data:$(dd if=/tmp/x/ok.img bs=1M skip=2 count=1 status=none | cmp -s - /tmp/pattern && echo ok || echo differs)"
umount /tmp/x
"#,
    );
    s
}

fn json(out: &vm::VmOutcome, name: &str) -> Result<serde_json::Value, libtest_mimic::Failed> {
    serde_json::from_slice(&out.file(name)?).map_err(|e| format!("{name}: {e}").into())
}

fn notes(v: &serde_json::Value) -> String {
    v["notes"]
        .as_array()
        .map(|n| n.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" | "))
        .unwrap_or_default()
}

fn checks(suite: &'static str) -> TestResult {
    for t in ["mkfs.xfs", "xfs_info", "setpriv"] {
        if !util::have(t) {
            return util::skip(format!("{t} not installed"));
        }
    }
    if let Some(why) = util::python_missing() {
        return util::skip(why);
    }
    let d = Scratch::new("vm-remap-safety");
    let disk = d.path("xfs.img");
    std::fs::File::create(&disk)?.set_len(320 << 20)?;
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let script = script(&bin_in_guest);
    let job = VmJob {
        disks: &[Disk::rw(&disk)],
        script: &script,
        files: &[("holder.py", HOLDER.as_bytes())],
        timeout: Duration::from_secs(400),
        suite: Some(suite),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(o) => o,
        Err(u) => return u.skip(),
    };
    out.check()?;
    let t = out.transcript();
    let one = |tag: &str| -> Vec<String> { out.tagged(tag).map(str::to_string).collect() };
    let mut errors = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            errors.push(what);
        }
    };
    check(one("reflink:") == ["reflink=1"], format!("the guest's XFS has no reflink: {:?}", one("reflink:")));

    // (h1)
    check(one("h1-ready:") == ["yes"], "(h1) the mode-3 holder never started".into());
    check(
        one("h1-dedupe:") == ["0/1048576"],
        format!("(h1) FIDEDUPERANGE through the mode-3 descriptor: status/bytes {:?}", one("h1-dedupe:")),
    );
    let h1 = json(&out, "h1.json")?;
    let n = notes(&h1);
    check(
        n.contains("not remapping") && n.contains("remap.shareable-not-root-only") && h1["mode"] == "file",
        format!("(h1) attach --remap did not fall back to the file with the dedupe rule: {h1}"),
    );
    let list = json(&out, "h1-list.json")?;
    check(list["devices"][0]["remap"] == "off", format!("(h1) --list: {list}"));
    check(one("h1-server-rc:") == ["0"], format!("(h1) server exit {:?}", one("h1-server-rc:")));
    check(
        one("h1-found:") == ["ok"],
        format!("(h1) the pattern written through the device is not in the image: {:?}", one("h1-found:")),
    );

    // (lb)
    let lb = json(&out, "lb.json")?;
    check(
        notes(&lb).contains("remap.lease-break-time") && lb["mode"] == "file",
        format!("(lb) lease-break-time 5 s: {lb}"),
    );

    // (m)
    let ml = json(&out, "m-list.json")?;
    check(ml["devices"][0]["remap"] == "active", format!("(m) a root-only image on reflink XFS is not remapped: {ml}"));
    let num = |tag: &str| one(tag).first().and_then(|v| v.parse::<i64>().ok());
    let (m0, m1, m2) = (num("m-before:"), num("m-attached:"), num("m-killed:"));
    check(
        matches!((m0, m1, m2), (Some(a), Some(b), Some(c)) if b > a && c > a),
        format!("(m) mtime before {m0:?}, after a raw write {m1:?}, after kill -9 {m2:?}"),
    );
    check(one("m-data:") == ["ok"], format!("(m) the raw write is not in the image: {:?}", one("m-data:")));

    if !errors.is_empty() {
        return util::fail(format!("{} ({suite}):\n{}\n{t}", errors.len(), errors.join("\n")));
    }
    eprintln!(
        "vm_remap_safety on {} passed in {:.1?}",
        one("kernel:").first().map_or("?", String::as_str),
        out.elapsed
    );
    Ok(Completion::Completed)
}
