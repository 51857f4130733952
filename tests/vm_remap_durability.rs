//! Remap durability and file-system state against the real kernel, one boot per kernel (Debian
//! 6.12 and trixie-backports 7.x), three disks:
//! (a) FUA after a hole fill (dm-flakey crash, xfstests style): ext4 on `flakey` over vda, a
//!     sparse image attached with `--remap`; a plain write fills block 0 through the file (the
//!     allocation sits in the running jbd2 transaction: `commit=120`), then the same block is
//!     written by fio through io_uring on a descriptor opened `O_DIRECT|O_DSYNC`: the block
//!     layer marks the bio `REQ_FUA` and, the write being asynchronous, sends no FLUSH after it
//!     (`blkdev_write_iter` calls `generic_write_sync` only for a write that completed in the
//!     call; `dio_bio_write_op` adds `REQ_FUA` for a dsync iocb) — so ublk receives a FUA write
//!     and nothing else, and the write goes raw. The table then drops every write, the server
//!     stops and the file system unmounts; after the table passes writes again and the file
//!     system is mounted (journal replay), block 0 of the image must hold the FUA data. Before
//!     the raw FUA write synced the image first, the allocation was not committed and block 0
//!     read as a hole (docs/TESTING.md has the run with that build). A synchronous `pwritev2(…,
//!     RWF_DSYNC)` does not isolate this: the kernel follows it with a FLUSH
//!     (`generic_write_sync` → `blkdev_fsync`), whose image sync commits the allocation anyway.
//! (b) fsfreeze: the image's first extent is read on the raw device before and 5 s after a write
//!     through the ublk device while the file system is frozen: the bytes must not change. After
//!     the thaw the write completes and is in the file.
//! (c) ext4 with `errors=remount-ro` after `trigger_fs_error`: a write through the device fails,
//!     the raw extent is unchanged, `--list` shows the stop code (`remap.fs-…`).
//! (d) XFS after `xfs_io -x -c shutdown`: the same, `remap.fs-error`.
//! Oracles: the kernel (journal replay, `filefrag -v -b1` for the extent, raw reads of the disk,
//! reads of the image through the file system, dd's exit status).

use crate::util::{self, Scratch, TestResult, trial};
use crate::vm::{self, Disk, VmJob};
use libtest_mimic::{Completion, Trial};
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("vm_remap_durability::fua_freeze_and_fs_failure_on_trixie_6_12", on_trixie),
        trial("vm_remap_durability::fua_freeze_and_fs_failure_on_backports_7", on_backports),
    ]
}

fn on_trixie() -> TestResult {
    checks(vm::TRIXIE)
}

fn on_backports() -> TestResult {
    checks(vm::BACKPORTS)
}

/// (a)'s writes, on one descriptor of the ublk device that stays open until writes are dropped
/// (closing the last one could make the kernel or udev touch the device): 0x01 into the hole
/// with a plain `O_DIRECT` write, then 0x02 by fio through io_uring with `O_DSYNC` (a FUA write
/// with no FLUSH after it), then the flakey table drops writes. jbd2's commit count is printed
/// after each step.
const FUA: &str = r#"
import glob, mmap, os, subprocess, sys
dev, sz = sys.argv[1], sys.argv[2]
def commits(tag):
    n = [open(f).readline().split()[0] for f in glob.glob("/proc/fs/jbd2/dm-*/info")]
    print("a-jbd2-%s:%s" % (tag, ",".join(n)), flush=True)
fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
commits("start")
buf.write(b"\x01" * 4096)
os.pwritev(fd, [buf], 0)
commits("filled")
subprocess.run(["fio", "--name=fua", "--filename=" + dev, "--ioengine=io_uring", "--direct=1",
                "--sync=dsync", "--rw=write", "--bs=4k", "--size=4k", "--offset=0", "--iodepth=1",
                "--buffer_pattern=0x02", "--scramble_buffers=0", "--invalidate=0",
                "--output-format=terse"], check=True, stdout=subprocess.DEVNULL)
commits("fua")
for cmd in (["dmsetup", "suspend", "--nolockfs", "--noflush", "fl"],
            ["dmsetup", "load", "fl", "--table", "0 %s flakey /dev/vda 0 0 600 1 drop_writes" % sz],
            ["dmsetup", "resume", "fl"]):
    subprocess.run(cmd, check=True)
os.close(fd)
"#;

fn script(bin: &str) -> String {
    let mut s = format!("LK={}\n{}", vm::sh_quote(bin), crate::vm_attach::HELPERS);
    s.push_str(
        r#"
echo "kernel:$(uname -r)"
modprobe -d "$VM_MODROOT" dm-flakey
modprobe -d "$VM_MODROOT" xfs
# The byte offset of the file's first extent on its device.
phys() { filefrag -v -b1 "$1" | sed -n 's/^ *0: *[0-9]*\.\. *[0-9]*: *\([0-9]*\)\.\..*/\1/p'; }
# SHA-256 of 64 KiB of device $1 at byte $2, read O_DIRECT (what is on the disk).
rawsum() { dd if="$1" bs=64K count=1 skip="$2" iflag=skip_bytes,direct status=none | sha256sum | cut -c1-64; }
# The remap state `attach --list` shows for device $1.
remap_of() {
    "$LK" attach --list --json | python3 -c '
import json, sys
d = [x for x in json.load(sys.stdin)["devices"] if x["device"] == sys.argv[1]]
print(d[0]["remap"] if d else "none")' "$1"
}
head -c 4096 /dev/urandom >/tmp/p4k

# (a) FUA after a hole fill, dm-flakey crash
sz=$(blockdev --getsz /dev/vda)
dmsetup create fl --table "0 $sz linear /dev/vda 0"
mkfs.ext4 -q -F /dev/mapper/fl
mkdir -p /tmp/f
mount -o commit=120 /dev/mapper/fl /tmp/f
truncate -s 16M /tmp/f/a.img
sync
dev=$(start a --remap /tmp/f/a.img)
echo "a-remap:$(remap_of "$dev")"
python3 /run/vm/fua.py "$dev" "$sz"
stop a "$dev"
umount /tmp/f
dmsetup suspend --nolockfs --noflush fl
dmsetup load fl --table "0 $sz linear /dev/vda 0"
dmsetup resume fl
mount /dev/mapper/fl /tmp/f
echo "a-byte:$(od -An -tx1 -N1 /tmp/f/a.img | tr -d ' ')"
echo "a-block:$(head -c 4096 /tmp/f/a.img | tr -d '\002' | wc -c)"

# (b) fsfreeze
dd if=/dev/zero of=/tmp/f/b.img bs=1M count=8 conv=fsync status=none
p=$(phys /tmp/f/b.img)
echo "b-phys:$p"
dev=$(start b --remap /tmp/f/b.img)
dd if=/dev/urandom of="$dev" bs=4096 count=1 seek=1 oflag=direct status=none
echo "b-remap:$(remap_of "$dev")"
fsfreeze -f /tmp/f
h1=$(rawsum /dev/mapper/fl "$p")
( rc=0; dd if=/tmp/p4k of="$dev" bs=4096 count=1 oflag=direct status=none || rc=$?; echo "$rc" >/tmp/b.dd ) &
ddp=$!
sleep 5
h2=$(rawsum /dev/mapper/fl "$p")
echo "b-raw:$([ "$h1" = "$h2" ] && echo same || echo differs)"
echo "b-while-frozen:$(cat /tmp/b.dd 2>/dev/null || echo pending)"
fsfreeze -u /tmp/f
wait "$ddp" || true
echo "b-dd-rc:$(cat /tmp/b.dd 2>/dev/null || echo none)"
echo "b-state:$(remap_of "$dev")"
stop b "$dev"
echo "b-data:$(dd if=/tmp/f/b.img bs=4096 count=1 status=none | cmp -s - /tmp/p4k && echo ok || echo differs)"
umount /tmp/f

# (c) ext4, errors=remount-ro, an error
mkfs.ext4 -q -F /dev/vdb
mkdir -p /tmp/e
mount -o errors=remount-ro /dev/vdb /tmp/e
dd if=/dev/zero of=/tmp/e/c.img bs=1M count=8 conv=fsync status=none
p=$(phys /tmp/e/c.img)
echo "c-phys:$p"
dev=$(start c --remap /tmp/e/c.img)
dd if=/dev/urandom of="$dev" bs=4096 count=1 seek=1 oflag=direct status=none
echo "c-remap:$(remap_of "$dev")"
h1=$(rawsum /dev/vdb "$p")
echo 1 >/sys/fs/ext4/vdb/trigger_fs_error
rc=0; dd if=/tmp/p4k of="$dev" bs=4096 count=1 oflag=direct status=none 2>/dev/null || rc=$?
echo "c-dd-rc:$rc"
h2=$(rawsum /dev/vdb "$p")
echo "c-raw:$([ "$h1" = "$h2" ] && echo same || echo differs)"
sleep 1
echo "c-state:$(remap_of "$dev")"
stop c "$dev"
umount /tmp/e

# (d) XFS shutdown
mkfs.xfs -q -f /dev/vdc
mkdir -p /tmp/x
mount -t xfs /dev/vdc /tmp/x
dd if=/dev/zero of=/tmp/x/d.img bs=1M count=8 conv=fsync status=none
p=$(phys /tmp/x/d.img)
echo "d-phys:$p"
dev=$(start d --remap /tmp/x/d.img)
dd if=/dev/urandom of="$dev" bs=4096 count=1 seek=1 oflag=direct status=none
echo "d-remap:$(remap_of "$dev")"
h1=$(rawsum /dev/vdc "$p")
xfs_io -x -c "shutdown" /tmp/x
rc=0; dd if=/tmp/p4k of="$dev" bs=4096 count=1 oflag=direct status=none 2>/dev/null || rc=$?
echo "d-dd-rc:$rc"
h2=$(rawsum /dev/vdc "$p")
echo "d-raw:$([ "$h1" = "$h2" ] && echo same || echo differs)"
sleep 1
echo "d-state:$(remap_of "$dev")"
stop d "$dev"
umount /tmp/x
"#,
    );
    s
}

fn checks(suite: &'static str) -> TestResult {
    for t in ["mkfs.ext4", "mkfs.xfs", "xfs_io", "dmsetup", "filefrag", "fsfreeze", "blockdev", "fio"] {
        if !util::have(t) {
            return util::skip(format!("{t} not installed"));
        }
    }
    if let Some(why) = util::python_missing() {
        return util::skip(why);
    }
    let d = Scratch::new("vm-remap-durability");
    let (da, db, dc) = (d.path("flakey.img"), d.path("ext4.img"), d.path("xfs.img"));
    std::fs::File::create(&da)?.set_len(128 << 20)?;
    std::fs::File::create(&db)?.set_len(64 << 20)?;
    std::fs::File::create(&dc)?.set_len(320 << 20)?;
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let script = script(&bin_in_guest);
    let job = VmJob {
        disks: &[Disk::rw(&da), Disk::rw(&db), Disk::rw(&dc)],
        script: &script,
        files: &[("fua.py", FUA.as_bytes())],
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
    let mut errors = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            errors.push(what);
        }
    };
    for x in ["a", "b", "c", "d"] {
        let st = one(&format!("{x}-remap:"));
        check(st == "active", format!("({x}) the image is not remapped: {st}"));
    }
    // (a)
    check(
        one("a-byte:") == "02" && one("a-block:") == "0",
        format!(
            "(a) block 0 after the crash starts with {} ({} of 4096 bytes differ from 02): the FUA write was lost",
            one("a-byte:"),
            one("a-block:")
        ),
    );
    // (b)
    check(one("b-raw:") == "same", "(b) a write through the device changed the raw extent while frozen".into());
    check(one("b-dd-rc:") == "0", format!("(b) the write after the thaw failed: {}", one("b-dd-rc:")));
    check(one("b-data:") == "ok", "(b) the write made while frozen is not in the file after the thaw".into());
    // (c), (d)
    for (x, code) in [("c", "remap.fs-"), ("d", "remap.fs-error")] {
        check(one(&format!("{x}-dd-rc:")) != "0", format!("({x}) a write after the failure succeeded"));
        check(one(&format!("{x}-raw:")) == "same", format!("({x}) a write after the failure changed the raw extent"));
        let st = one(&format!("{x}-state:"));
        check(st.starts_with("stopped:") && st.contains(code), format!("({x}) --list after the failure: {st}"));
    }
    if !errors.is_empty() {
        return util::fail(format!("{} ({suite}):\n{}\n{t}", errors.len(), errors.join("\n")));
    }
    eprintln!(
        "vm_remap_durability on {} passed in {:.1?} (jbd2 commits in (a): {} at start, {} after the hole fill, \
         {} after the FUA write; while frozen the write was {})",
        one("kernel:"),
        out.elapsed,
        one("a-jbd2-start:"),
        one("a-jbd2-filled:"),
        one("a-jbd2-fua:"),
        one("b-while-frozen:")
    );
    Ok(Completion::Completed)
}
