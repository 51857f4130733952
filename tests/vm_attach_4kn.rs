//! `attach` on a 4Kn disk (4096-byte logical blocks: a QEMU virtio disk with
//! `logical_block_size=4096`), in the guest of `tests/vm.rs` on both kernels. Oracles: the
//! kernel (`blockdev --getss` of the disk and of the ublk device, sysfs) and
//! `fio --verify=crc32c`, also re-read through ext4 after detach.
//! (k) `--remap` of a sparse and of a fully written image on ext4 (4 KiB blocks) on the 4Kn disk:
//!     the remap engine serves (`remap` `active`, no fallback note), the device shows 4096-byte
//!     logical blocks, fio writes and verifies through it, and after detach fio verifies the
//!     image files through ext4; discard is advertised in whole 4096-byte blocks (the disk's
//!     logical block and the file system's: `discard_granularity` 4096).
//! (l) the file path with `--logical-block-size 4096`: the device shows 4096-byte blocks and the
//!     image is opened `O_DIRECT` (`direct_io` true: 4096-byte direct I/O fits), fio verifies;
//!     `--remap --logical-block-size 512` there is refused (exit 2, the disk needs 4096).

use crate::util::{self, Scratch, TestResult, trial};
use crate::vm::{self, Disk, VmJob};
use crate::vm_attach::HELPERS;
use libtest_mimic::{Completion, Trial};
use std::process::Command;
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("vm_attach_4kn::remap_on_a_4kn_disk_on_trixie_6_12", || four_kn(vm::TRIXIE)),
        trial("vm_attach_4kn::remap_on_a_4kn_disk_on_backports_7", || four_kn(vm::BACKPORTS)),
    ]
}

/// Random 4 KiB writes over 16 MiB (4 MiB of them), crc32c-stamped, then verified.
fn fio(file: &str, extra: &str) -> String {
    format!(
        "fio --name=k --filename={file} --ioengine=libaio --direct=1 --rw=randwrite --bs=4k --iodepth=16 \
         --size=16M --io_size=4M --verify=crc32c --verify_fatal=1 --randrepeat=1 --output-format=terse {extra} >/dev/null"
    )
}

fn script(bin: &str) -> String {
    let mut s = format!("LK={}\n{HELPERS}", vm::sh_quote(bin));
    s.push_str(
        r#"
echo "kernel:$(uname -r)"
disk=""
for b in /sys/block/vd*; do
    [ "$(cat "$b/queue/logical_block_size")" = 4096 ] && disk=/dev/$(basename "$b")
done
echo "k-disk-ss:$(blockdev --getss "$disk")"
mkdir -p /tmp/h
mount -t ext4 "$disk" /tmp/h
dd if=/dev/zero of=/tmp/h/full.img bs=1M count=16 conv=fsync status=none
truncate -s 16M /tmp/h/sparse.img
sync
for n in full sparse; do
    dev=$(start k-$n --remap --json /tmp/h/$n.img)
    dev=$(sed -n 's/^ *"device": "\(.*\)",$/\1/p' /tmp/k-$n.out)
    cp /tmp/k-$n.out /run/vm/k-$n.json
    echo "k-ss:$n=$(blockdev --getss "$dev")"
    echo "k-gran:$n=$(cat /sys/block/$(basename "$dev")/queue/discard_granularity)"
    rc=0
"#,
    );
    s.push_str(&format!("    {} || rc=$?\n", fio("\"$dev\"", "")));
    s.push_str(
        r#"    echo "k-dev:$n=$rc"
    stop k-$n "$dev"
done
umount /tmp/h
mount -t ext4 "$disk" /tmp/h
for n in full sparse; do
    rc=0
"#,
    );
    s.push_str(&format!("    {} || rc=$?\n", fio("/tmp/h/$n.img", "--verify_only")));
    s.push_str(
        r#"    echo "k-file:$n=$rc"
done

# (l) the file path in 4096-byte blocks
dd if=/dev/zero of=/tmp/h/l.img bs=1M count=16 conv=fsync status=none
dev=$(start l --logical-block-size 4096 --json /tmp/h/l.img)
dev=$(sed -n 's/^ *"device": "\(.*\)",$/\1/p' /tmp/l.out)
cp /tmp/l.out /run/vm/l.json
echo "l-ss:$(blockdev --getss "$dev")"
rc=0
"#,
    );
    s.push_str(&format!("{} || rc=$?\n", fio("\"$dev\"", "")));
    s.push_str(
        r#"echo "l-dev:$rc"
stop l "$dev"
rc=0; "$LK" attach --remap --logical-block-size 512 /tmp/h/l.img >/dev/null 2>/tmp/l-refused.err || rc=$?
echo "l-refused:$rc:$(grep -c 'smaller than the 4096-byte' /tmp/l-refused.err || true)"
umount /tmp/h
"#,
    );
    s
}

fn four_kn(suite: &'static str) -> TestResult {
    for t in ["mkfs.ext4", "fio"] {
        if !util::have(t) {
            return util::skip(format!("{t} not installed"));
        }
    }
    let d = Scratch::new("vm-attach-4kn");
    let disk = d.path("4kn.img");
    // 4 KiB file-system blocks: a 4Kn disk takes nothing smaller.
    util::run_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096"]).arg(&disk).arg("128M"))?;
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let script = script(&bin_in_guest);
    let job = VmJob {
        disks: &[Disk::rw_4kn(&disk)],
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
    let tagged = |tag: &str| -> std::collections::BTreeMap<String, String> {
        out.tagged(tag).filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let mut errors = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            errors.push(what);
        }
    };
    check(one("k-disk-ss:") == ["4096"], format!("the disk is not 4Kn in the guest: {:?}", one("k-disk-ss:")));
    let (ss, dev_rc, file_rc, gran) = (tagged("k-ss:"), tagged("k-dev:"), tagged("k-file:"), tagged("k-gran:"));
    for n in ["full", "sparse"] {
        let j: serde_json::Value =
            serde_json::from_slice(&out.file(&format!("k-{n}.json"))?).map_err(|e| format!("k-{n}.json: {e}"))?;
        let fell_back = j["notes"]
            .as_array()
            .is_some_and(|v| v.iter().any(|x| x.as_str().is_some_and(|s| s.contains("not remapping"))));
        check(
            j["mode"] == "remap" && j["remap"] == "active" && !fell_back && j["logical_block_bytes"] == 4096,
            format!("(k) {n}: attach --remap --json: {j}"),
        );
        check(ss.get(n).map(String::as_str) == Some("4096"), format!("(k) {n}: device logical block {:?}", ss.get(n)));
        // Discard under --remap (docs/CLI.md, "Discard and write-zeroes") in whole blocks of the
        // 4Kn disk: the kernel sees a 4096-byte granularity.
        check(
            j["discard"] == true && gran.get(n).map(String::as_str) == Some("4096"),
            format!("(k) {n}: --remap advertised discard: {} / discard_granularity {:?}", j["discard"], gran.get(n)),
        );
        check(
            dev_rc.get(n).map(String::as_str) == Some("0"),
            format!("(k) {n}: fio through the device: {:?}", dev_rc.get(n)),
        );
        check(
            file_rc.get(n).map(String::as_str) == Some("0"),
            format!("(k) {n}: fio --verify_only through ext4 after detach: {:?}", file_rc.get(n)),
        );
        check(
            one(&format!("k-{n}-server-rc:")) == ["0"],
            format!("(k) {n}: server exit {:?}", one(&format!("k-{n}-server-rc:"))),
        );
    }
    let l: serde_json::Value = serde_json::from_slice(&out.file("l.json")?).map_err(|e| format!("l.json: {e}"))?;
    check(
        l["mode"] == "file" && l["logical_block_bytes"] == 4096 && l["direct_io"] == true,
        format!("(l) attach --logical-block-size 4096 --json: {l}"),
    );
    check(one("l-ss:") == ["4096"], format!("(l) device logical block {:?}", one("l-ss:")));
    check(one("l-dev:") == ["0"], format!("(l) fio: {:?}", one("l-dev:")));
    check(one("l-server-rc:") == ["0"], format!("(l) server exit {:?}", one("l-server-rc:")));
    let refused = one("l-refused:");
    check(refused == ["2:1"], format!("(l) --remap --logical-block-size 512 on 4Kn: {refused:?}"));
    if !errors.is_empty() {
        return util::fail(format!("{} ({suite}):\n{}\n{}", errors.len(), errors.join("\n"), out.transcript()));
    }
    eprintln!("vm_attach_4kn: {} passed in {:.1?}", one("kernel:").first().map_or("?", String::as_str), out.elapsed);
    Ok(Completion::Completed)
}
