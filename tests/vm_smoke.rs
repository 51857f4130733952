//! Smoke tests of the real-kernel harness (tests/vm.rs): the guest kernel has device-mapper,
//! dm-crypt and ublk; it mounts an ext4 image made on the host by mkfs.ext4 and reads the same
//! bytes sha256sum reads on the host; writable and read-only disks behave; a failing guest
//! script is reported as a failure, not a pass; and a guest kernel crash outside ublk is run once
//! more on writable disks restored to their first bytes, and fails if it crashes again.

use crate::ensure;
use crate::util::{self, Scratch, TestResult, fail, have, run_ok, sha256_file, skip, trial};
use crate::vm::{self, Disk, VmJob};
use libtest_mimic::{Completion, Trial};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("vm_smoke::kernel_has_dm_ublk_and_mounts_ext4", kernel_has_dm_ublk_and_mounts_ext4),
        trial("vm_smoke::failing_guest_script_is_a_failure", failing_guest_script_is_a_failure),
        trial("vm_smoke::guest_crash_retried_once_on_restored_disks", guest_crash_retried_once_on_restored_disks),
        trial("vm_smoke::only_crashes_outside_ublk_are_retried", only_crashes_outside_ublk_are_retried),
    ]
}

/// A small tree with awkward names, an empty file and a multi-block binary file.
fn make_tree(root: &Path) -> Result<(), libtest_mimic::Failed> {
    std::fs::create_dir_all(root.join("sub/deeper"))?;
    std::fs::write(root.join("hello.txt"), b"hello from the host\n")?;
    std::fs::write(root.join("with space.txt"), b"a name with a space\n")?;
    std::fs::write(root.join("sub/empty"), b"")?;
    // 300 KiB of random bytes (the expected sums are computed from the tree, so any content works).
    let mut data = vec![0u8; 300 * 1024];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut data)?;
    std::fs::write(root.join("sub/deeper/random.bin"), data)?;
    std::os::unix::fs::symlink("hello.txt", root.join("link-to-hello"))?;
    Ok(())
}

fn kernel_has_dm_ublk_and_mounts_ext4() -> TestResult {
    if !have("mkfs.ext4") {
        return skip("mkfs.ext4 not installed (e2fsprogs)");
    }
    let s = Scratch::new("vm-smoke");
    let tree = s.path("tree");
    make_tree(&tree)?;
    let img = s.path("ext4.img");
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-L", "vmsmoke", "-d"]).arg(&tree).arg(&img).arg("8M"))?;
    let rw = s.path("rw.img");
    std::fs::write(&rw, vec![0u8; 64 * 1024])?;
    let img_sum = sha256_file(&img)?;
    let want = vm::host_tree_sums(&tree)?;

    let mut script = String::from(
        r#"
test -c /dev/mapper/control || { echo "no /dev/mapper/control" >&2; exit 1; }
test -c /dev/ublk-control || { echo "no /dev/ublk-control" >&2; exit 1; }
for m in dm_mod dm_crypt ublk_drv loop ext4; do
    grep -q "^$m " /proc/modules || { echo "module $m not loaded" >&2; exit 1; }
done
echo "kernel:$(uname -r)"
echo "disk:$(sha256sum </dev/vda | cut -d' ' -f1)"
if dd if=/dev/zero of=/dev/vda bs=512 count=1 conv=fsync status=none 2>/dev/null; then echo "ro-disk:writable"; else echo "ro-disk:refused"; fi
mkdir /tmp/m
mount -t ext4 -o ro /dev/vda /tmp/m
echo "label:$(blkid -o value -s LABEL /dev/vda)"
"#,
    );
    script.push_str(&vm::guest_tree_sums("/tmp/m", "file:"));
    // Host files are visible: the host's /tmp (this scratch directory) and the loopkit under test.
    let hello = vm::guest_path(&tree.join("hello.txt")).ok_or("scratch directory not visible in the guest")?;
    script.push_str(&format!("echo \"host-tmp:$(cat {})\"\n", vm::sh_quote(&hello)));
    let bin = util::loopkit_bin();
    let bin_in_guest = if bin.exists() { vm::guest_path(&bin) } else { None };
    if let Some(b) = &bin_in_guest {
        script.push_str(&format!("echo \"loopkit:$({} --version)\"\n", vm::sh_quote(b)));
    }
    script.push_str(
        r#"umount /tmp/m
printf 'written-by-the-guest' | dd of=/dev/vdb bs=512 conv=sync,notrunc,fsync status=none
"#,
    );
    let job = VmJob {
        disks: &[Disk::ro(&img), Disk::rw(&rw)],
        script: &script,
        timeout: Duration::from_secs(180),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(out) => out,
        Err(unavailable) => return unavailable.skip(),
    };
    out.check()?;
    let t = out.transcript();
    let kernel: Vec<&str> = out.tagged("kernel:").collect();
    ensure!(kernel.first().is_some_and(|k| k.starts_with("6.")), "unexpected guest kernel {kernel:?}\n{t}");
    ensure!(out.tagged("disk:").eq([img_sum.as_str()]), "guest /dev/vda sha256 != host image sha256 {img_sum}\n{t}");
    ensure!(out.tagged("label:").eq(["vmsmoke"]), "blkid in the guest did not see the label\n{t}");
    ensure!(out.tagged("host-tmp:").eq(["hello from the host"]), "the host's /tmp is not readable in the guest\n{t}");
    if bin_in_guest.is_some() {
        let host_version =
            String::from_utf8_lossy(&run_ok(&mut util::loopkit(&["--version"]))?.stdout).trim().to_string();
        ensure!(
            out.tagged("loopkit:").eq([host_version.as_str()]),
            "the loopkit under test does not run in the guest\n{t}"
        );
    }
    ensure!(out.tagged("ro-disk:").eq(["refused"]), "the read-only disk was writable in the guest\n{t}");
    let got = out.tree_sums("file:");
    if got != want {
        return fail(format!("file sums differ\nhost:  {want:?}\nguest: {got:?}\n{t}"));
    }
    ensure!(sha256_file(&img)? == img_sum, "the read-only image changed");
    let written = std::fs::read(&rw)?;
    ensure!(written.starts_with(b"written-by-the-guest"), "the guest's write to /dev/vdb did not reach the host file");
    eprintln!(
        "vm_smoke: guest {} ({}), boot to script {:.1?}, whole run {:.1?}",
        kernel.first().unwrap_or(&"?"),
        vm::prepared().map(|p| p.package.as_str()).unwrap_or("?"),
        out.boot.unwrap_or_default(),
        out.elapsed
    );
    Ok(Completion::Completed)
}

fn failing_guest_script_is_a_failure() -> TestResult {
    let job = VmJob {
        script: "echo to-stdout; echo to-stderr >&2; exit 7",
        timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(out) => out,
        Err(unavailable) => return unavailable.skip(),
    };
    let t = out.transcript();
    ensure!(out.exit_code == Some(7), "exit code {:?}, want Some(7)\n{t}", out.exit_code);
    ensure!(!out.success() && out.check().is_err(), "a failing script passed the check");
    ensure!(out.stdout == "to-stdout\n" && out.stderr == "to-stderr\n", "output not captured\n{t}");
    Ok(Completion::Completed)
}

/// The guest appends one byte to its writable disk and then panics its kernel (sysrq `c`): the
/// harness boots it a second time on the restored disk, so the disk ends with one byte, not two,
/// and the job, crashed twice, is a failure.
fn guest_crash_retried_once_on_restored_disks() -> TestResult {
    let d = Scratch::new("vm-crash");
    let disk = d.path("rw.img");
    std::fs::write(&disk, vec![0u8; 1 << 20])?;
    let script = format!(
        "n=$(head -c 512 {dev} | tr -d '\\000' | wc -c)\n\
         printf x | dd of={dev} bs=1 seek=\"$n\" conv=notrunc,fsync status=none\n\
         echo \"bytes-before:$n\"\n\
         echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger; sleep 60\n",
        dev = vm::dev(0)
    );
    let job =
        VmJob { disks: &[Disk::rw(&disk)], script: &script, timeout: Duration::from_secs(120), ..Default::default() };
    let out = match vm::run(&job) {
        Ok(out) => out,
        Err(unavailable) => return unavailable.skip(),
    };
    let t = out.transcript();
    ensure!(
        out.exit_code.is_none() && out.check().is_err(),
        "a crashed guest was not a failure: {:?}\n{t}",
        out.exit_code
    );
    ensure!(out.console.contains("sysrq triggered crash"), "the guest did not crash as asked\n{t}");
    ensure!(out.stdout.trim() == "bytes-before:0", "the second boot did not start from the restored disk\n{t}");
    let bytes = std::fs::read(&disk)?;
    let written = bytes.iter().filter(|&&b| b != 0).count();
    ensure!(
        written == 1 && bytes[0] == b'x',
        "the disk holds {written} written bytes after two boots, want 1 (restored, then written once)"
    );
    ensure!(!d.path("rw.img.vm-pristine").exists(), "the copy of the disk was left behind");
    Ok(Completion::Completed)
}

/// Which outcomes the harness boots again ([`vm::emulator_or_unrelated_crash`]), without a VM:
/// a panic whose report names no ublk frame is retried; the same panic with a ublk frame in its
/// call trace, a script that finished, and a hang without a kernel report are not.
fn only_crashes_outside_ublk_are_retried() -> TestResult {
    let outcome = |exit_code: Option<i32>, console: &str| vm::VmOutcome {
        exit_code,
        stdout: String::new(),
        stderr: String::new(),
        console: console.to_string(),
        elapsed: Duration::ZERO,
        boot: None,
        dir: Scratch::new("vm-crash-rule"),
    };
    let modules = "[ 16.1] Modules linked in: ublk_drv dm_crypt ext4\n";
    let ext4 = format!(
        "[ 16.0] vm-init: script started\n[ 16.1] BUG: kernel NULL pointer dereference, address: 0000000000000086\n\
         {modules}[ 16.1] Call Trace:\n[ 16.1]  iomap_iter+0x1/0x2\n[ 16.2] Kernel panic - not syncing: Fatal exception\n"
    );
    let ublk = ext4.replace("iomap_iter+0x1/0x2", "ublk_ch_uring_cmd+0x1/0x2 [ublk_drv]");
    ensure!(vm::emulator_or_unrelated_crash(&outcome(None, &ext4)).is_some(), "a crash outside ublk is not retried");
    ensure!(vm::emulator_or_unrelated_crash(&outcome(None, &ublk)).is_none(), "a crash through ublk is retried");
    ensure!(vm::emulator_or_unrelated_crash(&outcome(Some(1), &ext4)).is_none(), "a finished script is retried");
    ensure!(
        vm::emulator_or_unrelated_crash(&outcome(None, "[ 900.0] INFO: task fio blocked for more than 120 seconds\n"))
            .is_none(),
        "a hang is retried"
    );
    Ok(Completion::Completed)
}
