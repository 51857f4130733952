//! `loopkit rescue` from a failing block device in the real kernel: device-mapper builds the
//! "disc" in the guest from `linear` segments over a dvdisaster-augmented image (RS02, RS03) with
//! an `error` zone and a `delay` zone (slow reads). The oracles: the image dvdisaster made (the
//! rescued and repaired output must equal it byte for byte), and the kernel's own I/O counters
//! (`/sys/block/dm-N/stat`: sectors read) comparing loopkit with a full GNU ddrescue pass on the
//! same device.

use crate::ecc_verify::{RAW_BYTES, RS03_CAPACITY, augment, prerequisites, raw_input};
use crate::ensure;
use crate::util::{self, Scratch, TestResult, sha256_file, trial};
use crate::vm::{self, Disk, VmJob};
use libtest_mimic::{Completion, Trial};
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![trial("vm_rescue::failing_device_with_ecc_stops_early", failing_device)]
}

/// The guest script for one disk: a 200 ms delay zone at sectors `slow` (2048-byte units), then an
/// error zone at `err`; loopkit rescue, then ddrescue, each with the device's read counters.
fn part(n: usize, dev: &str, bin: &str, err: (u64, u64), slow: (u64, u64)) -> String {
    let s = |x: u64| x * 4; // 2048-byte sectors → 512-byte dm sectors
    let (e0, e1) = (s(err.0), s(err.0 + err.1));
    let (d0, d1) = (s(slow.0), s(slow.0 + slow.1));
    format!(
        r#"
total=$(blockdev --getsz {dev})
{{
  printf '0 {d0} linear {dev} 0\n'
  printf '{d0} {dl} delay {dev} {d0} 200\n'
  printf '{d1} {gap} linear {dev} {d1}\n'
  printf '{e0} {el} error\n'
  printf '{e1} %s linear {dev} {e1}\n' $((total - {e1}))
}} | dmsetup create bad{n} || echo "setup{n}:dmsetup failed"
dm=$(dmsetup info -c --noheadings -o blkdevname bad{n} | tr -d " ")
reads() {{ awk '{{print $3}}' /sys/block/$dm/stat; }}
echo "size{n}:$((total * 512))"
r0=$(reads)
t0=$(date +%s.%N)
rc=0
{bin} rescue /dev/mapper/bad{n} -o /tmp/lk{n}.img --json --quiet >/run/vm/lk{n}.json 2>/run/vm/lk{n}.err || rc=$?
t1=$(date +%s.%N)
r1=$(reads)
echo "lk{n}-rc:$rc"
echo "lk{n}-sectors:$((r1 - r0))"
echo "lk{n}-secs:$(awk "BEGIN{{print $t1 - $t0}}")"
echo "lk{n}-sha:$(sha256sum /tmp/lk{n}.img 2>/dev/null | cut -d' ' -f1)"
ddrescue -q -d -b 2048 /dev/mapper/bad{n} /tmp/dd{n}.img /tmp/dd{n}.map || true
t2=$(date +%s.%N)
r2=$(reads)
echo "dd{n}-sectors:$((r2 - r1))"
echo "dd{n}-secs:$(awk "BEGIN{{print $t2 - $t1}}")"
echo "dd{n}-bad:$(ddrescuelog -b 2048 -l- /tmp/dd{n}.map | tr '\n' ' ')"
rc=0; timeout 60 dvdisaster -d /dev/mapper/bad{n} -i /tmp/dv{n}.iso -r >/tmp/dv{n}.log 2>&1 || rc=$?; echo "dv{n}-rc:$rc"
echo "dv{n}-says:$(grep -m1 -i -E 'not a|cannot|no such|failed|error' /tmp/dv{n}.log | tr -d '\r' | cut -c1-160)"
dmsetup remove bad{n}
"#,
        dl = d1 - d0,
        gap = e0 - d1,
        el = e1 - e0,
    )
}

fn failing_device() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    for t in ["ddrescue", "ddrescuelog"] {
        if !util::have(t) {
            return util::skip(format!("{t} not installed"));
        }
    }
    let d = Scratch::new("vm-rescue");
    let orig = raw_input(&d, "raw.bin", RAW_BYTES)?;
    let rs02 = d.path("rs02.img");
    augment(&orig, &rs02, "RS02", &["--roots", "32"])?;
    let rs03 = d.path("rs03.img");
    augment(&orig, &rs03, "RS03", &["--capacity", &RS03_CAPACITY.to_string()])?;
    let want = [sha256_file(&rs02)?, sha256_file(&rs03)?];
    let bin = util::loopkit_bin();
    let Some(bin) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let bin = vm::sh_quote(&bin);
    let mut script =
        String::from("modprobe -d \"$VM_MODROOT\" dm-delay || echo 'setup:no dm-delay'\necho \"kernel:$(uname -r)\"\n");
    // RS02: the errors in the data; RS03: in the ECC layers.
    script.push_str(&part(0, &vm::dev(0), &bin, (300, 8), (100, 16)));
    script.push_str(&part(1, &vm::dev(1), &bin, (1000, 6), (400, 16)));
    let job = VmJob {
        disks: &[Disk::ro(&rs02), Disk::ro(&rs03)],
        script: &script,
        timeout: Duration::from_secs(600),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(o) => o,
        Err(u) => return u.skip(),
    };
    out.check()?;
    let t = out.transcript();
    let one = |tag: &str| -> String { out.tagged(tag).next().unwrap_or("").to_string() };
    ensure!(one("setup:").is_empty(), "guest setup: {}\n{t}", one("setup:"));
    let mut rows = Vec::new();
    for (n, name) in ["RS02", "RS03"].iter().enumerate() {
        ensure!(one(&format!("setup{n}:")).is_empty(), "{name}: dmsetup failed\n{t}");
        let v: serde_json::Value = serde_json::from_slice(&out.file(&format!("lk{n}.json"))?)
            .map_err(|e| format!("{name}: rescue JSON: {e}\n{t}"))?;
        ensure!(
            one(&format!("lk{n}-rc:")) == "0" && v["ok"] == true,
            "{name}: rescue exit {}: {v}\n{t}",
            one(&format!("lk{n}-rc:"))
        );
        ensure!(v["stopped"] == "enough-for-ecc", "{name}: stopped {}: {v}", v["stopped"]);
        ensure!(one(&format!("lk{n}-sha:")) == want[n], "{name}: the rescued image differs from dvdisaster's\n{t}");
        let num = |tag: &str| one(tag).parse::<f64>().unwrap_or(f64::NAN);
        let (lk, dd) = (num(&format!("lk{n}-sectors:")), num(&format!("dd{n}-sectors:")));
        ensure!(
            lk.partial_cmp(&dd) == Some(std::cmp::Ordering::Less),
            "{name}: loopkit read {lk} sectors (kernel count), a full ddrescue pass {dd}\n{t}"
        );
        ensure!(
            !one(&format!("dd{n}-bad:")).trim().is_empty(),
            "{name}: ddrescue saw no bad sectors: the fault injection failed\n{t}"
        );
        rows.push(format!(
            "{name}: loopkit {lk} × 512 B read in {} s; ddrescue {dd} × 512 B in {} s; dvdisaster -r exit {} ({})",
            one(&format!("lk{n}-secs:")),
            one(&format!("dd{n}-secs:")),
            one(&format!("dv{n}-rc:")),
            one(&format!("dv{n}-says:"))
        ));
    }
    eprintln!("vm_rescue on {}:\n  {}", one("kernel:"), rows.join("\n  "));
    Ok(Completion::Completed)
}
