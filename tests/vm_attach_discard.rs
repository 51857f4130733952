//! DISCARD and WRITE_ZEROES through `attach` (the file path), in the guest of `tests/vm.rs` on
//! both kernels. Oracles: the kernel (the device's `discard_granularity` in sysfs, `fstrim`,
//! `blkdiscard -z`), `stat -c %b` of the image (its allocated blocks, as ext4 counts them) and
//! `cmp` against data kept aside.
//! (d) a sparse 192 MiB image on an ext4 disk, attached; `mkfs.ext4` on the device, mounted;
//!     an 8 MiB file of random data kept, a 64 MiB file of random data written (`conv=fsync`),
//!     deleted, `fstrim`: the image's allocated size must drop by at least 60 MiB and the kept
//!     file must read back equal (after `drop_caches`); then 4 MiB of random data written raw
//!     past the file system's data and `blkdiscard -z` over them: they read back as zeros.
//! (r) the same with `--remap` (the remap engine: a discard forgets the range, waits for the raw
//!     I/O planned from the old map, punches through the file system and re-maps it; it runs on
//!     a thread of its own, since raw I/O of the same queue may be what it waits for): `fstrim`
//!     frees ≥ 60 MiB, the kept file reads back; then, on a file system mounted `-o discard`,
//!     fio `--verify` random writes (raw: the file is written first) while another loop writes
//!     and deletes files (each delete discards at once): fio verifies, no hang; `blkdiscard -z`
//!     (WRITE_ZEROES with NOUNMAP: `FALLOC_FL_ZERO_RANGE`) reads back as zeros through the
//!     device and in the image; remapping is still `active` in `attach --list --json` at the end.
//! (x) `--decrypt --read-write` does not advertise discard (a punched hole would decrypt to
//!     noise): `discard_granularity` 0, `discard` false in the JSON.

use crate::legacy::{encrypt, plains};
use crate::util::{self, Scratch, TestResult, trial};
use crate::vm::{self, Disk, VmJob};
use crate::vm_attach::HELPERS;
use libtest_mimic::{Completion, Trial};
use std::process::Command;
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("vm_attach_discard::fstrim_punches_the_image_on_trixie_6_12", || discard(vm::TRIXIE)),
        trial("vm_attach_discard::fstrim_punches_the_image_on_backports_7", || discard(vm::BACKPORTS)),
    ]
}

fn script(bin: &str) -> String {
    let mut s = format!("LK={}\n{HELPERS}", vm::sh_quote(bin));
    s.push_str(
        r#"
echo "kernel:$(uname -r)"
mkdir -p /tmp/h /tmp/m
mount -t ext4 /dev/vda /tmp/h
head -c 8388608 /dev/urandom >/tmp/keep
head -c 4194304 /dev/urandom >/tmp/rnd
head -c 4194304 /dev/zero >/tmp/zero
# attach_sparse TAG IMG [OPTION...]: a sparse 192 MiB IMG attached with OPTIONs (--json added),
# its device in $dev, its --json output kept as TAG.json, its discard granularity as TAG-gran
attach_sparse() {
    local tag=$1 img=$2; shift 2
    truncate -s 192M "$img"
    start "$tag" "$@" --json "$img" >/dev/null
    dev=$(sed -n 's/^ *"device": "\(.*\)",$/\1/p' /tmp/$tag.out)
    cp /tmp/$tag.out /run/vm/$tag.json
    echo "$tag-gran:$(cat /sys/block/$(basename "$dev")/queue/discard_granularity)"
}
# trim TAG IMG: ext4 on $dev mounted on /tmp/m, the kept file copied in, 64 MiB written and
# deleted, fstrim (TAG-fstrim); TAG-freed-mib: how much IMG's allocation dropped. Stays mounted.
trim() {
    local tag=$1 img=$2 before after
    mkfs.ext4 -q -F -b 4096 "$dev" 160M
    mount -t ext4 "$dev" /tmp/m
    cp /tmp/keep /tmp/m/keep
    dd if=/dev/urandom of=/tmp/m/big bs=1M count=64 conv=fsync status=none
    sync
    before=$(stat -c %b "$img")
    rm /tmp/m/big
    sync
    fstrim -v /tmp/m >&2 && echo "$tag-fstrim:ok"
    sync
    after=$(stat -c %b "$img")
    echo "$tag-freed-mib:$(( (before - after) * 512 / 1048576 ))"
}
# keep_read TAG: the kept file, read back from /tmp/m without the page cache (TAG-keep)
keep_read() {
    echo 3 >/proc/sys/vm/drop_caches
    echo "$1-keep:$(cmp -s /tmp/keep /tmp/m/keep && echo ok || echo differs)"
}
# zero_past_fs TAG: 4 MiB of random data written raw past the 160 MiB file system on $dev
# (TAG-written), then blkdiscard -z over them (TAG-blkdiscard) and read back (TAG-zeroed)
zero_past_fs() {
    dd if=/tmp/rnd of="$dev" bs=1M seek=170 oflag=direct conv=fsync status=none
    echo "$1-written:$(dd if="$dev" bs=1M skip=170 count=4 iflag=direct status=none | cmp -s - /tmp/rnd && echo ok || echo differs)"
    blkdiscard -z -o $((170 * 1048576)) -l 4194304 "$dev" && echo "$1-blkdiscard:ok"
    echo "$1-zeroed:$(dd if="$dev" bs=1M skip=170 count=4 iflag=direct status=none | cmp -s - /tmp/zero && echo ok || echo differs)"
}
# zeroed_in_image TAG IMG: after detach, the same range of the image file (TAG-zeroed-in-image)
zeroed_in_image() {
    echo "$1-zeroed-in-image:$(dd if="$2" bs=1M skip=170 count=4 status=none | cmp -s - /tmp/zero && echo ok || echo differs)"
}

# (d) the file path
attach_sparse d /tmp/h/d.img
trim d /tmp/h/d.img
keep_read d
umount /tmp/m
zero_past_fs d
stop d "$dev"
zeroed_in_image d /tmp/h/d.img

# (r) --remap
attach_sparse r /tmp/h/r.img --remap
trim r /tmp/h/r.img
umount /tmp/m
mount -t ext4 -o discard "$dev" /tmp/m
keep_read r
dd if=/dev/zero of=/tmp/m/fio bs=1M count=16 conv=fsync status=none
( i=0; while [ ! -e /tmp/r.stop ]; do
    dd if=/dev/urandom of=/tmp/m/churn bs=1M count=4 conv=fsync status=none; rm /tmp/m/churn; sync; i=$((i+1))
  done; echo "r-churn:$i" ) >/tmp/r.churn 2>&1 &
churn=$!
timeout 300 fio --name=v --filename=/tmp/m/fio --ioengine=libaio --direct=1 --rw=randwrite --bs=4k --iodepth=16 \
    --size=16M --io_size=8M --verify=crc32c --verify_fatal=1 --randrepeat=1 --output-format=terse >/dev/null \
    && echo "r-fio:ok" || echo "r-fio:failed $?"
touch /tmp/r.stop; wait $churn
cat /tmp/r.churn
umount /tmp/m
zero_past_fs r
"$LK" attach --list --json >/run/vm/r-list.json
stop r "$dev"
zeroed_in_image r /tmp/h/r.img

# (x) --decrypt: no discard
start x --decrypt --read-write --json --passphrase-file /run/vm/pass /tmp/h/cl.img >/dev/null
dev=$(sed -n 's/^ *"device": "\(.*\)",$/\1/p' /tmp/x.out)
cp /tmp/x.out /run/vm/x.json
echo "x-gran:$(cat /sys/block/$(basename "$dev")/queue/discard_granularity)"
stop x "$dev"
umount /tmp/h
"#,
    );
    s
}

fn discard(suite: &'static str) -> TestResult {
    let p = match plains() {
        Ok(p) => p,
        Err(e) => return util::skip(e),
    };
    for t in ["mkfs.ext4", "fstrim", "blkdiscard"] {
        if !util::have(t) {
            return util::skip(format!("{t} not installed"));
        }
    }
    let d = Scratch::new("vm-attach-discard");
    let stage = d.path("stage");
    std::fs::create_dir_all(&stage)?;
    let pass = p.dir.join("pass");
    let ps = pass.to_str().ok_or("pass path")?;
    encrypt(
        &stage,
        "cl.img",
        "ext2",
        &["--scheme", "cryptoloop", "--derivation", "rmd160", "--key-bits", "256", "--passphrase-file", ps],
    )?;
    let outer = d.path("outer.img");
    util::run_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&stage).arg(&outer).arg("320M"))?;
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let script = script(&bin_in_guest);
    let pass_bytes = std::fs::read(&pass)?;
    let job = VmJob {
        disks: &[Disk::rw(&outer)],
        script: &script,
        files: &[("pass", &pass_bytes)],
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
    let j: serde_json::Value = serde_json::from_slice(&out.file("d.json")?).map_err(|e| format!("d.json: {e}"))?;
    check(j["discard"] == true, format!("(d) attach --json: {j}"));
    let gran: Option<u64> = one("d-gran:").first().and_then(|s| s.parse().ok());
    check(gran.is_some_and(|g| g >= 512), format!("(d) discard_granularity {gran:?}"));
    check(one("d-fstrim:") == ["ok"], "(d) fstrim failed".into());
    let freed: Option<i64> = one("d-freed-mib:").first().and_then(|s| s.parse().ok());
    check(freed.is_some_and(|f| f >= 60), format!("(d) the image's allocation dropped by {freed:?} MiB, want >= 60"));
    check(one("d-keep:") == ["ok"], "(d) the kept file changed".into());
    check(one("d-written:") == ["ok"], "(d) raw write before blkdiscard -z did not read back".into());
    check(one("d-blkdiscard:") == ["ok"], "(d) blkdiscard -z failed".into());
    check(one("d-zeroed:") == ["ok"], "(d) blkdiscard -z: the range does not read as zeros".into());
    check(one("d-zeroed-in-image:") == ["ok"], "(d) blkdiscard -z: the image file's range is not zeros".into());
    check(one("d-server-rc:") == ["0"], format!("(d) server exit {:?}", one("d-server-rc:")));
    let r: serde_json::Value = serde_json::from_slice(&out.file("r.json")?).map_err(|e| format!("r.json: {e}"))?;
    check(r["discard"] == true && r["remap"] == "active", format!("(r) attach --remap --json: {r}"));
    let rgran: Option<u64> = one("r-gran:").first().and_then(|s| s.parse().ok());
    check(rgran.is_some_and(|g| g >= 512), format!("(r) discard_granularity {rgran:?}"));
    check(one("r-fstrim:") == ["ok"], "(r) fstrim failed".into());
    let rfreed: Option<i64> = one("r-freed-mib:").first().and_then(|s| s.parse().ok());
    check(rfreed.is_some_and(|f| f >= 60), format!("(r) the image's allocation dropped by {rfreed:?} MiB, want >= 60"));
    check(one("r-keep:") == ["ok"], "(r) the kept file changed".into());
    check(one("r-fio:") == ["ok"], format!("(r) fio verify during discards: {:?}", one("r-fio:")));
    let churn: Option<u64> = one("r-churn:").first().and_then(|s| s.parse().ok());
    check(churn.is_some_and(|c| c >= 1), format!("(r) files written and deleted during fio: {churn:?}"));
    check(one("r-written:") == ["ok"], "(r) raw write before blkdiscard -z did not read back".into());
    check(one("r-blkdiscard:") == ["ok"], "(r) blkdiscard -z failed".into());
    check(one("r-zeroed:") == ["ok"], "(r) blkdiscard -z: the range does not read as zeros".into());
    check(one("r-zeroed-in-image:") == ["ok"], "(r) blkdiscard -z: the image file's range is not zeros".into());
    let rl: serde_json::Value =
        serde_json::from_slice(&out.file("r-list.json")?).map_err(|e| format!("r-list.json: {e}"))?;
    check(
        rl["devices"].as_array().is_some_and(|d| d.len() == 1)
            && rl["devices"][0]["remap"] == "active"
            && rl["devices"][0]["remap_code"].is_null()
            && rl["devices"][0]["discard"] == true,
        format!("(r) attach --list --json at the end: {rl}"),
    );
    check(one("r-server-rc:") == ["0"], format!("(r) server exit {:?}", one("r-server-rc:")));
    let x: serde_json::Value = serde_json::from_slice(&out.file("x.json")?).map_err(|e| format!("x.json: {e}"))?;
    check(x["discard"] == false, format!("(x) --decrypt advertised discard: {x}"));
    check(one("x-gran:") == ["0"], format!("(x) --decrypt discard_granularity {:?}", one("x-gran:")));
    if !errors.is_empty() {
        return util::fail(format!("{} ({suite}):\n{}\n{}", errors.len(), errors.join("\n"), out.transcript()));
    }
    eprintln!(
        "vm_attach_discard: {} passed in {:.1?} (fstrim freed {freed:?} MiB; with --remap {rfreed:?} MiB, {churn:?} \
         files written and deleted during fio)",
        one("kernel:").first().map_or("?", String::as_str),
        out.elapsed
    );
    Ok(Completion::Completed)
}
