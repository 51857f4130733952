//! `attach` serves the inode it analysed, on the device it checked, against the real kernel: one
//! boot per kernel (Debian 6.12 and trixie-backports 7.x).
//! (swap) the review's path swap: IMAGE is a symlink to a LUKS2 image `a.img`; a watcher
//!      (inotify `IN_OPEN|IN_CLOSE_NOWRITE` on `a.img`: the first open or read-only close of it,
//!      which before the fix was the analysis, after it the single open) re-points IMAGE at
//!      `b.img` while `attach --remap --decrypt --read-write IMAGE` starts. 1 MiB written
//!      through the device must leave `b.img` byte for byte unchanged (sha256 before and after)
//!      and be in `a.img` (cryptsetup's decryption of it, the oracle); `--list` names `a.img`.
//!      Before the fix the engine opened IMAGE again and wrote a.img's ciphertext at a.img's
//!      payload offset into b.img.
//! (delay) the review's lease-expiry scenario: ext4 over dm-delay (writes held 3 s),
//!      `lease-break-time` at its floor (10 s), 1 MiB direct writes through the remapped device
//!      in flight when another process truncates the image (`truncate(2)`, which waits for the
//!      lease break; coreutils `truncate` opens `O_NONBLOCK` and fails with `EAGAIN`) and a victim
//!      file takes the freed blocks. After everything settles, the victim read back through the
//!      file system after `drop_caches` (so from its disk blocks) must be unchanged: no raw write
//!      landed after the break. `--list` shows remapping stopped by the break.
//! (dev) `--list` carries the raw device the engine verified (`raw_device`: node and
//!      major:minor), equal to what `stat` says the image's file system is on and to the mount
//!      table's source (`findmnt`). A mismatch
//!      between the opened node and `st_dev` cannot be provoked without racing the open; it is a
//!      host unit test (`remap::preflight::tests::device_identity`).
//! (sudo) run as root with `SUDO_UID=1000`: an image only root may read is refused
//!      (`attach.invoker-denied`); one uid 1000 may read attaches read-only.
//! Oracles: the kernel (sha256sum, cryptsetup/dm-crypt, stat, the file system), not loopkit.

use crate::util::{self, Scratch, TestResult, trial};
use crate::vm::{self, Disk, VmJob};
use libtest_mimic::{Completion, Trial};
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("vm_remap_identity::swap_delay_device_sudo_on_trixie_6_12", on_trixie),
        trial("vm_remap_identity::swap_delay_device_sudo_on_backports_7", on_backports),
    ]
}

fn on_trixie() -> TestResult {
    checks(vm::TRIXIE)
}

fn on_backports() -> TestResult {
    checks(vm::BACKPORTS)
}

/// Re-point /tmp/h/IMAGE at b.img (atomically, as `ln -sfn` does) at the first open or
/// read-only close of a.img.
const WATCHER: &str = r#"
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
IN_OPEN, IN_CLOSE_NOWRITE = 0x20, 0x10
if fd < 0 or libc.inotify_add_watch(fd, b"/tmp/h/a.img", IN_OPEN | IN_CLOSE_NOWRITE) < 0:
    raise SystemExit("inotify failed")
open("/tmp/watching", "w").close()
os.read(fd, 4096)
os.symlink("b.img", "/tmp/h/IMAGE.new")
os.rename("/tmp/h/IMAGE.new", "/tmp/h/IMAGE")
open("/tmp/swapped", "w").close()
"#;

fn script(bin: &str) -> String {
    let mut s = format!("LK={}\n{}", vm::sh_quote(bin), crate::vm_attach::HELPERS);
    s.push_str(
        r#"
echo "kernel:$(uname -r)"
dev_of() { sed -n 's/^ *"device": "\(.*\)",$/\1/p' "$1"; }
head -c 1048576 /dev/urandom >/tmp/pattern
printf 'correct horse battery' >/tmp/pass
mkfs.ext4 -q -F -b 4096 /dev/vda
mkdir -p /tmp/h
mount -t ext4 /dev/vda /tmp/h

# (swap)
dd if=/dev/zero of=/tmp/h/a.img bs=1M count=32 conv=fsync status=none
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file /tmp/pass /tmp/h/a.img
head -c 33554432 /dev/urandom | dd of=/tmp/h/b.img bs=1M iflag=fullblock conv=fsync status=none
sync
echo 3 >/proc/sys/vm/drop_caches
ln -s a.img /tmp/h/IMAGE
echo "swap-b-before:$(sha256sum </tmp/h/b.img | cut -c1-64)"
python3 -c "$(cat /run/vm/watcher.py)" &
watcher=$!
for _ in $(seq 100); do [ -e /tmp/watching ] && break; sleep 0.05; done
rc=0
start swap --remap --decrypt --read-write --passphrase-file /tmp/pass --json /tmp/h/IMAGE >/dev/null || rc=$?
echo "swap-started:$rc"
for _ in $(seq 50); do [ -e /tmp/swapped ] && break; sleep 0.1; done
echo "swap-swapped:$(test -e /tmp/swapped && echo yes || echo no) -> $(readlink /tmp/h/IMAGE)"
if [ "$rc" = 0 ]; then
    cp /tmp/swap.out /run/vm/swap.json
    dev=$(dev_of /tmp/swap.out)
    "$LK" attach --list --json >/run/vm/swap-list.json
    dd if=/tmp/pattern of="$dev" bs=1M count=1 oflag=direct conv=fsync status=none
    stop swap "$dev"
else
    sed 's/^/swap-err: /' /tmp/swap.err
fi
kill "$watcher" 2>/dev/null || true
sync
echo 3 >/proc/sys/vm/drop_caches
echo "swap-b-after:$(sha256sum </tmp/h/b.img | cut -c1-64)"
# (The mapping stays: closing it hung in this guest, and the guest powers off at the end.)
cryptsetup open --type luks2 --key-file /tmp/pass --readonly /tmp/h/a.img swapa
echo "swap-a-data:$(dd if=/dev/mapper/swapa bs=1M count=1 status=none | cmp -s - /tmp/pattern && echo ok || echo differs)"
echo "dev-begin"

# (dev)
dd if=/dev/zero of=/tmp/h/plain.img bs=1M count=8 conv=fsync status=none
echo "dev-made"
start dev --remap --read-only --json /tmp/h/plain.img >/dev/null
dev=$(dev_of /tmp/dev.out)
"$LK" attach --list --json >/run/vm/dev-list.json
echo "dev-stat:$(stat -c '%Hd:%Ld' /tmp/h/plain.img)"
echo "dev-node:$(findmnt -n -o SOURCE /tmp/h)"
stop dev "$dev"

# (sudo)
dd if=/dev/zero of=/tmp/h/rootonly.img bs=1M count=4 status=none
chmod 600 /tmp/h/rootonly.img
dd if=/dev/zero of=/tmp/h/shared.img bs=1M count=4 status=none
chmod 644 /tmp/h/shared.img
rc=0; SUDO_UID=1000 SUDO_GID=1000 "$LK" attach --read-only /tmp/h/rootonly.img >/dev/null 2>/tmp/sudo1.err || rc=$?
echo "sudo-denied-rc:$rc"
sed 's/^/sudo-denied-err: /' /tmp/sudo1.err
rc=0; SUDO_UID=1000 SUDO_GID=1000 "$LK" attach /tmp/h/shared.img >/dev/null 2>/tmp/sudo2.err || rc=$?
echo "sudo-write-rc:$rc"
sed 's/^/sudo-write-err: /' /tmp/sudo2.err
export SUDO_UID=1000 SUDO_GID=1000
dev=$(start sudo --read-only /tmp/h/shared.img)
unset SUDO_UID SUDO_GID
echo "sudo-ok:$(test -b "$dev" && echo yes || echo no)"
stop sudo "$dev"

# (delay)
mkfs.ext4 -q -F -b 4096 /dev/vdb
modprobe -d "$VM_MODROOT" dm-delay
n=$(blockdev --getsz /dev/vdb)
dmsetup create slow --table "0 $n delay /dev/vdb 0 0 /dev/vdb 0 0"
mkdir -p /tmp/d
mount -t ext4 /dev/mapper/slow /tmp/d
head -c 8388608 /dev/urandom >/tmp/pattern8
dd if=/dev/zero of=/tmp/d/img bs=1M count=16 conv=fsync status=none
lbt=$(cat /proc/sys/fs/lease-break-time)
echo 10 >/proc/sys/fs/lease-break-time
start dl --remap --json /tmp/d/img >/dev/null
dev=$(dev_of /tmp/dl.out)
"$LK" attach --list --json >/run/vm/dl-before.json
dmsetup reload slow --table "0 $n delay /dev/vdb 0 0 /dev/vdb 0 3000"
dmsetup resume slow
( dd if=/tmp/pattern8 of="$dev" bs=1M count=8 oflag=direct status=none; echo "$?" >/tmp/dl-dd.rc ) &
sleep 2
t0=$(date +%s)
python3 -c 'import os; os.truncate("/tmp/d/img", 0)'
t1=$(date +%s)
echo "dl-break-wait:$((t1 - t0))"
dd if=/dev/urandom of=/tmp/d/victim bs=1M count=16 conv=fsync status=none
v1=$(sha256sum </tmp/d/victim | cut -c1-64)
for _ in $(seq 600); do [ -s /tmp/dl-dd.rc ] && break; sleep 0.1; done
echo "dl-dd-rc:$(cat /tmp/dl-dd.rc 2>/dev/null || echo none)"
"$LK" attach --list --json >/run/vm/dl-after.json
sync
sleep 5
stop dl "$dev"
dmsetup reload slow --table "0 $n delay /dev/vdb 0 0 /dev/vdb 0 0"
dmsetup resume slow
echo "$lbt" >/proc/sys/fs/lease-break-time
sync
echo 3 >/proc/sys/vm/drop_caches
v2=$(sha256sum </tmp/d/victim | cut -c1-64)
echo "dl-victim:$([ "$v1" = "$v2" ] && echo unchanged || echo changed)"
umount /tmp/d
dmsetup remove slow
"#,
    );
    s
}

fn json(out: &vm::VmOutcome, name: &str) -> Result<serde_json::Value, libtest_mimic::Failed> {
    serde_json::from_slice(&out.file(name)?).map_err(|e| format!("{name}: {e}").into())
}

fn checks(suite: &'static str) -> TestResult {
    for t in ["mkfs.ext4", "cryptsetup", "dmsetup"] {
        if !util::have(t) {
            return util::skip(format!("{t} not installed"));
        }
    }
    if let Some(why) = util::python_missing() {
        return util::skip(why);
    }
    let d = Scratch::new("vm-remap-identity");
    let (disk_a, disk_b) = (d.path("ext4.img"), d.path("delay.img"));
    std::fs::File::create(&disk_a)?.set_len(160 << 20)?;
    std::fs::File::create(&disk_b)?.set_len(96 << 20)?;
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let script = script(&bin_in_guest);
    let job = VmJob {
        disks: &[Disk::rw(&disk_a), Disk::rw(&disk_b)],
        script: &script,
        files: &[("watcher.py", WATCHER.as_bytes())],
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
    let one = |tag: &str| -> Vec<String> { out.tagged(tag).map(str::to_string).collect() };
    let mut errors = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            errors.push(what);
        }
    };

    // (swap)
    check(
        one("swap-swapped:") == ["yes -> b.img"],
        format!("(swap) the watcher did not re-point IMAGE: {:?}", one("swap-swapped:")),
    );
    let (b0, b1) = (one("swap-b-before:"), one("swap-b-after:"));
    check(b0.len() == 1 && b0 == b1, format!("(swap) b.img changed: sha256 before {b0:?}, after {b1:?}"));
    if one("swap-started:") == ["0"] {
        let sj = json(&out, "swap.json")?;
        check(sj["mode"] == "remap+decrypt", format!("(swap) not remapped and decrypted: {sj}"));
        let list = json(&out, "swap-list.json")?;
        check(list["devices"][0]["image"] == "/tmp/h/a.img", format!("(swap) --list does not name a.img: {list}"));
        check(one("swap-server-rc:") == ["0"], format!("(swap) server exit {:?}", one("swap-server-rc:")));
        check(
            one("swap-a-data:") == ["ok"],
            format!("(swap) the pattern written through the device is not in a.img: {:?}", one("swap-a-data:")),
        );
    } else {
        // Refusing is the other acceptable answer; it must say why.
        let err = one("swap-err: ").join(" ");
        check(err.contains("attach.image-changed"), format!("(swap) attach failed without naming the swap: {err}"));
    }

    // (dev)
    let dl = json(&out, "dev-list.json")?;
    let stat = one("dev-stat:");
    let raw = dl["devices"][0]["raw_device"].as_str().unwrap_or("").to_string();
    check(
        dl["devices"][0]["remap"] == "active"
            && stat.len() == 1
            && raw.ends_with(&format!("({})", stat[0]))
            && one("dev-node:").first().is_some_and(|n| raw.starts_with(n.as_str())),
        format!("(dev) raw_device {raw:?}, stat {stat:?}, node {:?}: {dl}", one("dev-node:")),
    );

    // (sudo)
    let denied = one("sudo-denied-err: ").join(" ");
    check(
        one("sudo-denied-rc:") != ["0"] && denied.contains("attach.invoker-denied"),
        format!("(sudo) a root-only image was not refused for uid 1000: rc {:?}, {denied}", one("sudo-denied-rc:")),
    );
    let write = one("sudo-write-err: ").join(" ");
    check(
        one("sudo-write-rc:") != ["0"] && write.contains("attach.invoker-denied"),
        format!("(sudo) a read-write attach of a 0644 root image was not refused for uid 1000: {write}"),
    );
    check(
        one("sudo-ok:") == ["yes"],
        format!("(sudo) a readable image did not attach read-only: {:?}", one("sudo-ok:")),
    );

    // (delay)
    let before = json(&out, "dl-before.json")?;
    check(before["devices"][0]["remap"] == "active", format!("(delay) not remapping before the break: {before}"));
    let after = json(&out, "dl-after.json")?;
    let remap_after = after["devices"][0]["remap"].as_str().unwrap_or("").to_string();
    check(remap_after != "active", format!("(delay) still remapping after the lease break: {after}"));
    check(one("dl-dd-rc:") == ["0"], format!("(delay) the writes through the device failed: {:?}", one("dl-dd-rc:")));
    check(one("dl-server-rc:") == ["0"], format!("(delay) server exit {:?}", one("dl-server-rc:")));
    check(
        one("dl-victim:") == ["unchanged"],
        format!("(delay) the victim file changed after the break: a raw write landed late ({:?})", one("dl-victim:")),
    );

    if !errors.is_empty() {
        return util::fail(format!("{} ({suite}):\n{}\n{t}", errors.len(), errors.join("\n")));
    }
    eprintln!(
        "vm_remap_identity on {} passed in {:.1?} (truncate waited {} s for the lease break; remap after it: {remap_after})",
        one("kernel:").first().map_or("?", String::as_str),
        out.elapsed,
        one("dl-break-wait:").first().map_or("?", String::as_str)
    );
    Ok(Completion::Completed)
}
