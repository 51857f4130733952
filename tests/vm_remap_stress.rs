//! `attach --remap` against every way another process can change an image's blocks (the rows of
//! docs/formats/remap.md's contract table), on both kernels (Debian 6.12, trixie-backports 7.x)
//! and on ext4 and XFS with reflink, in the test VM. Guest side: tests/vm/remap_stress.py.
//!
//! Contract rows (one boot per kernel and file system; each row is its own trial reading that
//! boot's results). For each operation: a sparse 16 MiB root-owned image on a 64 MiB file system
//! (dm-linear over the virtio disk, so that it can grow; for XFS a disk with 4 KiB logical
//! blocks, so that xfs_fsr's direct I/O works) with 12 MiB of bystander files; attach --remap
//! (read-write); holes filled through the device in a scrambled order (fragmented; for defrag
//! through the file before attach, so that FIEMAP of the image before the defrag is known), then
//! overwritten (raw writes); a writer thread keeps writing 64 KiB pieces through the device
//! while this process does the operation once (paused for whole-file FICLONE and for xfs_fsr,
//! which swaps only a file that did not change during its copy); then free space is filled with
//! new files and all 16 MiB are rewritten through the device. Checks: attach reported the change
//! (`--list`: `stopped: … (remap.lease-broken)` with `remap_code` `remap.lease-broken`; `active`
//! and a null `remap_code` after a grow, which moves nothing); the
//! file held every acknowledged byte right after the operation and after detach (a byte model of
//! the writes and of the operation's documented effect); every other file on the file system
//! hashes as before (sha256), including files made from blocks the operation freed and
//! destinations that share the image's blocks; a defrag left fewer extents and moved at least
//! half of the image's blocks (FIEMAP before and after); the guest kernel logged no I/O error of
//! the test disk. An operation the kernel refuses (ext4 has no reflink or dedupe: `EOPNOTSUPP`)
//! still opened the image, which broke the lease; a row whose every operation is refused is
//! ignored with that reason.
//!
//! The stress test (`random_mutations_*`): cycles of attach --remap, fio random 4 KiB writes
//! with crc32c verification through the device, and a seeded mutator doing random
//! data-preserving changes to the image (open, truncate and punch beyond fio's 16 MiB, defrag,
//! dedupe/reflink/copy_file_range with the image as source, reflink into its tail) and any
//! change to neighbour files (modelled byte for byte). Each cycle: fio's own verify pass on the
//! device, `fio --verify_only` on the image file after detach, neighbours equal their model,
//! clones and dedupe destinations unchanged; at the end every bystander unchanged and no I/O
//! error of the test disks. Half the time on ext4, half on XFS (on a 4Kn disk).
//! `random_mutations_short_*` runs 80 s (in CI); `random_mutations_*` (declared ignored for its
//! length) `LOOPKIT_STRESS_SECS` (default 600). `LOOPKIT_STRESS_SEED` sets the seed (default:
//! from the clock; printed either way).

use crate::util::{self, Scratch, TestResult};
use crate::vm::{self, Disk, Unavailable, VmJob};
use libtest_mimic::{Completion, Trial};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

const DRIVER: &str = include_str!("vm/remap_stress.py");

/// Contract rows: (trial name, operations run for it).
const ROWS: &[(&str, &[&str])] = &[
    ("truncate", &["truncate-path", "ftruncate"]),
    ("fallocate", &["punch", "collapse", "insert", "zero-range"]),
    ("defrag", &["defrag"]),
    ("reflink_into_the_image", &["ficlone-dst", "ficlonerange-dst", "cfr-dst"]),
    ("reflink_from_the_image", &["ficlone-src", "ficlonerange-src", "cfr-src"]),
    ("dedupe_from_the_image", &["dedupe-src"]),
    ("hidden_descriptor_dedupe_into_the_image", &["dedupe-hidden-fd"]),
    ("swapon", &["swapon"]),
    ("online_grow", &["grow"]),
    ("online_shrink", &["shrink"]),
];

/// Seconds of the short stress (half on ext4, half on XFS) that CI runs.
const SHORT_STRESS_SECS: u64 = 80;

const KERNELS: &[(&str, &str)] = &[("trixie_6_12", vm::TRIXIE), ("backports_7", vm::BACKPORTS)];
const FILESYSTEMS: &[&str] = &["ext4", "xfs"];

/// Rows that do not exist on a file system: ext4 has no dedupe (`FIDEDUPERANGE` is
/// `EOPNOTSUPP` there), so those rows are XFS's only — not tests that cannot run here.
const NOT_APPLICABLE: &[(&str, &str)] =
    &[("dedupe_from_the_image", "ext4"), ("hidden_descriptor_dedupe_into_the_image", "ext4")];

pub fn trials() -> Vec<Trial> {
    let mut v = Vec::new();
    for &(row, _) in ROWS {
        for &fs in FILESYSTEMS {
            if NOT_APPLICABLE.contains(&(row, fs)) {
                continue;
            }
            for &(kname, suite) in KERNELS {
                v.push(Trial::ignorable_test(format!("vm_remap_stress::{row}_on_{fs}_{kname}"), move || {
                    contract_row(row, fs, suite)
                }));
            }
        }
    }
    // One boot per kernel with writes to mounted block devices forbidden and emulated pmem.
    for &(kname, suite) in KERNELS {
        v.push(Trial::ignorable_test(
            format!("vm_remap_stress::writes_to_the_mounted_device_forbidden_on_{kname}"),
            move || restricted_row("write-mounted", suite),
        ));
        for &fs in FILESYSTEMS {
            v.push(Trial::ignorable_test(format!("vm_remap_stress::dax_mount_refused_on_{fs}_{kname}"), move || {
                restricted_row(fs, suite)
            }));
        }
    }
    // The short stress runs in CI; the long one (LOOPKIT_STRESS_SECS, default 600 s) is declared
    // ignored only for its length (run it with `--ignored`).
    for &(kname, suite) in KERNELS {
        v.push(Trial::ignorable_test(format!("vm_remap_stress::random_mutations_short_on_{kname}"), move || {
            stress(suite, Some(SHORT_STRESS_SECS))
        }));
        v.push(
            Trial::ignorable_test(format!("vm_remap_stress::random_mutations_on_{kname}"), move || stress(suite, None))
                .with_ignored_flag(true),
        );
    }
    v
}

/// What one contract boot printed.
struct Ran {
    stdout: String,
    transcript: String,
    elapsed: Duration,
}

type Boot = Result<Arc<Ran>, Result<Unavailable, String>>;

fn tools_missing(fs: &str) -> Option<String> {
    let tools: &[&str] = if fs == "ext4" {
        &["mkfs.ext4", "e4defrag", "resize2fs", "dumpe2fs", "mkswap", "swapon", "dmsetup", "filefrag"]
    } else {
        &["mkfs.xfs", "xfs_fsr", "xfs_growfs", "xfs_info", "mkswap", "swapon", "dmsetup", "filefrag"]
    };
    tools.iter().find(|t| !util::have(t)).map(|t| format!("{t} not installed")).or_else(util::python_missing)
}

/// `LOOPKIT_REMAP_CONTRACT_OPS="op op…"`: boot with only these operations (a debugging aid; rows
/// with none of them are then ignored, saying so).
fn only_ops() -> Option<Vec<String>> {
    std::env::var("LOOPKIT_REMAP_CONTRACT_OPS").ok().map(|v| v.split_whitespace().map(str::to_string).collect())
}

fn contract_script(bin: &str, fs: &str) -> String {
    let only = only_ops();
    let ops: Vec<&str> = ROWS
        .iter()
        .flat_map(|r| r.1.iter().copied())
        .filter(|op| only.as_ref().is_none_or(|o| o.iter().any(|x| x == op)))
        .collect();
    let mkfs = if fs == "ext4" {
        "mkfs.ext4 -q -F -b 4096 /dev/mapper/lkfs"
    } else {
        // Below 300 MB mkfs.xfs wants --unsupported (as xfstests does); the kernel does not care.
        "modprobe -d \"$VM_MODROOT\" xfs\nmkfs.xfs -q -f --unsupported -m reflink=1 /dev/mapper/lkfs"
    };
    format!(
        r#"export LK={bin}
echo "kernel:$(uname -r)"
{mkfs}
mkdir -p /tmp/x
mount /dev/mapper/lkfs /tmp/x
echo "fs:$(stat -f -c %T /tmp/x)"
python3 /run/vm/remap_stress.py bystanders 4
for op in {ops}; do
    timeout 600 python3 /run/vm/remap_stress.py contract "$op" {fs} || echo "$op-crashed:$?"
done
umount /tmp/x
echo "vd-io-errors:$(dmesg | grep -c 'I/O error, dev vd' || true)"
"#,
        bin = vm::sh_quote(bin),
        ops = ops.join(" "),
    )
}

fn boot(fs: &'static str, suite: &'static str) -> Boot {
    type Cache = Mutex<BTreeMap<(&'static str, &'static str), Arc<OnceLock<Boot>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cell = {
        let mut m = CACHE.get_or_init(|| Mutex::new(BTreeMap::new())).lock().unwrap_or_else(|e| e.into_inner());
        m.entry((fs, suite)).or_default().clone()
    };
    cell.get_or_init(|| run_contract(fs, suite)).clone()
}

fn run_contract(fs: &'static str, suite: &'static str) -> Boot {
    let d = Scratch::new("vm-remap-stress");
    let disk = d.path("fs.img");
    let make = || -> std::io::Result<()> { std::fs::File::create(&disk)?.set_len(128 << 20) };
    make().map_err(|e| Err(format!("cannot make the disk image: {e}")))?;
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(Err(format!("{} is not visible in the guest", bin.display())));
    };
    // The file system sits on dm-linear over the first 64 MiB of the disk (the grow row extends
    // the table to the whole disk).
    let script = format!(
        "echo \"disk-sector:$(blockdev --getss /dev/vda)\"\necho '0 131072 linear /dev/vda 0' | dmsetup create lkfs\n{}",
        contract_script(&bin_in_guest, fs)
    );
    // XFS on a disk with 4 KiB logical blocks: xfs_fsr aligns its direct-I/O buffer only to the
    // device's logical block (`XFS_IOC_DIOINFO`), and the test VM's disk fails requests from a
    // buffer that is not page-aligned (EIO; xfs_fsr then gives up without a swap).
    let disks = [if fs == "xfs" { Disk::rw_4kn(&disk) } else { Disk::rw(&disk) }];
    let job = VmJob {
        disks: &disks,
        script: &script,
        files: &[("remap_stress.py", DRIVER.as_bytes())],
        timeout: Duration::from_secs(2400),
        mem_mib: 512,
        suite: Some(suite),
        ..Default::default()
    };
    let out = vm::run(&job).map_err(Ok)?;
    if let Err(f) = out.check() {
        return Err(Err(f.message().unwrap_or("failed").to_string()));
    }
    Ok(Arc::new(Ran { stdout: out.stdout.clone(), transcript: out.transcript(), elapsed: out.elapsed }))
}

/// What the kernel must have done with the online shrink (remap_stress.py `shrink`, its
/// `shrink-kv` line: `tool` resize2fs's or the first xfs_growfs's exit status, block counts from
/// the superblock before (`was`), between (`mid`) and after (`now`)). ext4: resize2fs refuses,
/// and so does the kernel itself (`EXT4_IOC_RESIZE_FS` → `EINVAL`, `ext4_resize_fs` in
/// fs/ext4/resize.c), the block count unchanged. XFS: 1 MiB (256 blocks) of free tail goes
/// (`xfs_ag_shrink_space`); a shrink by more than the last AG (`ag` blocks) either fails with the
/// size unchanged or, on a kernel that can remove whole empty AGs, shrinks by exactly that much.
fn shrink_ok(fs: &str, kv: &str) -> bool {
    let v = |k: &str| -> Option<i64> {
        kv.split_whitespace().find_map(|f| f.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
    };
    let ioctl = kv.split_whitespace().find_map(|f| f.strip_prefix("ioctl="));
    match (fs, v("tool"), v("was"), v("mid"), v("now")) {
        ("ext4", Some(tool), Some(was), Some(mid), Some(now)) => {
            tool != 0 && ioctl == Some("EINVAL") && was == mid && mid == now
        }
        (_, Some(0), Some(was), Some(mid), Some(now)) => {
            let (Some(across), Some(ag)) = (v("across"), v("ag")) else { return false };
            mid == was - 256 && if across == 0 { now == mid - ag - 256 } else { now == mid }
        }
        _ => false,
    }
}

fn contract_row(row: &str, fs: &'static str, suite: &'static str) -> TestResult {
    if let Some(why) = tools_missing(fs) {
        return util::skip(why);
    }
    let ran = match boot(fs, suite) {
        Ok(r) => r,
        Err(Ok(u)) => return u.skip(),
        Err(Err(f)) => return util::fail(format!("the {fs} boot on {suite} failed: {f}")),
    };
    let ops: Vec<&str> = ROWS
        .iter()
        .find(|r| r.0 == row)
        .map_or(&[][..], |r| r.1)
        .iter()
        .copied()
        .filter(|op| only_ops().is_none_or(|o| o.iter().any(|x| x == op)))
        .collect();
    if ops.is_empty() {
        return util::skip("none of its operations is in LOOPKIT_REMAP_CONTRACT_OPS");
    }
    let get = |op: &str, tag: &str| -> String {
        let p = format!("{op}-{tag}:");
        ran.stdout.lines().find_map(|l| l.strip_prefix(p.as_str())).unwrap_or("<missing>").to_string()
    };
    let mut errors = Vec::new();
    let mut refused = Vec::new();
    for &op in &ops {
        let mut check = |ok: bool, what: String| {
            if !ok {
                errors.push(format!("{op}: {what}"));
            }
        };
        if ran.stdout.lines().any(|l| l.starts_with(&format!("{op}-crashed:"))) {
            check(false, "the guest driver crashed (see its stderr)".into());
            continue;
        }
        let res = get(op, "op");
        // ext4 has neither reflink nor dedupe; the open that came first still broke the lease.
        let unsupported = res.starts_with("errno 95 ");
        if unsupported {
            refused.push(format!("{op}: {res}"));
        }
        check(get(op, "mode") == "remap", format!("attach did not remap: {} ({})", get(op, "mode"), get(op, "notes")));
        check(get(op, "before") == "active", format!("remap state before the op: {}", get(op, "before")));
        let after = get(op, "after");
        if op == "grow" {
            let sizes: Vec<u64> = res
                .strip_prefix("grown from ")
                .map(|r| r.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).take(2).collect())
                .unwrap_or_default();
            check(sizes.len() == 2 && sizes[1] > sizes[0], format!("the grow: {res}"));
            check(after == "active", format!("a grow moves no data, yet attach stopped remapping: {after}"));
            let fin = get(op, "final-state");
            check(fin == "active", format!("remapping stopped while the grown file system was rewritten: {fin}"));
        } else if op == "shrink" {
            check(shrink_ok(fs, &get(op, "kv")), format!("the shrink: {res} ({})", get(op, "kv")));
            check(after == "active", format!("a shrink moves no data, yet attach stopped remapping: {after}"));
            let fin = get(op, "final-state");
            check(fin == "active", format!("remapping stopped while the shrunk file system was rewritten: {fin}"));
            let ext = get(op, "extents");
            check(ext.starts_with("ok: "), format!("the image's blocks after detach (FIEMAP): {ext}"));
            eprintln!("vm_remap_stress shrink on {fs}: {res}; {ext}");
        } else if op == "dedupe-hidden-fd" {
            if !unsupported {
                check(
                    after.starts_with("stopped") && after.ends_with("| remap_code=remap.map-changed"),
                    format!("attach's re-validation did not report the changed map: {after}"),
                );
                check(res.starts_with("status 0, 2097152 bytes"), format!("the dedupe: {res}"));
            }
        } else {
            // The break is seen either by the SIGIO watcher (`remap.lease-broken`) or first by
            // the 200 ms `F_GETLEASE` poll (`remap.lease-lost`: a lease being broken is no longer
            // held); both stop raw I/O and drain it before the lease is let go.
            check(
                after.starts_with("stopped")
                    && (after.ends_with("| remap_code=remap.lease-broken")
                        || after.ends_with("| remap_code=remap.lease-lost")),
                format!("attach did not report the lease break: {after}"),
            );
            let ok_res = match op {
                "cfr-dst" | "cfr-src" => res == "done" || res == "copied 2097152",
                "dedupe-src" => res == "status 0, 2097152 bytes" || unsupported,
                "defrag" => res.starts_with("exit 0") && defragmented(&get(op, "extents")),
                "swapon" => res.starts_with("swapon exit 0"),
                _ => res == "done" || (unsupported && fs == "ext4"),
            };
            check(ok_res, format!("the operation: {res}"));
        }
        let writer = get(op, "writer");
        if op == "swapon" {
            // Writes through the file fail while it is an active swap file (ETXTBSY → EIO);
            // which ones is open, so they are left out of the comparisons.
            check(writer.contains(" acknowledged"), format!("writer: {writer}"));
            check(get(op, "mkswap") == "0", format!("mkswap: {}", get(op, "mkswap")));
            check(
                get(op, "swapon-first").starts_with("0"),
                format!("swapon before attach: {}", get(op, "swapon-first")),
            );
            let (mode, notes) = (get(op, "refuse-mode"), get(op, "refuse-notes"));
            check(
                mode != "remap" && notes.contains("remap.swap-file"),
                format!("attach --remap of an active swap file: mode {mode}, notes {notes}"),
            );
            check(get(op, "swapoff") == "0", format!("swapoff: {}", get(op, "swapoff")));
        } else if op != "ficlone-dst" && op != "ficlone-src" && !(op == "defrag" && fs == "xfs") {
            // (The writer pauses for whole-file FICLONE and for xfs_fsr, which swaps only a
            // file that nothing changed during its copy.)
            check(
                writer.contains(" acknowledged, 0 failed") && !writer.starts_with("0 "),
                format!("the concurrent writer: {writer}"),
            );
        }
        if op != "grow" && op != "shrink" {
            check(get(op, "at-op") == "ok", format!("the image right after the op: {}", get(op, "at-op")));
        }
        check(get(op, "final-writes") == "16 of 16", format!("rewrite after the op: {}", get(op, "final-writes")));
        check(get(op, "rc") == "0", format!("server exit {}", get(op, "rc")));
        check(get(op, "data") == "ok", format!("the image after detach: {}", get(op, "data")));
        check(get(op, "others").starts_with("ok "), format!("other files: {}", get(op, "others")));
    }
    // The test disk itself must not have failed a request (that would test the error paths of
    // the file system, not the contract).
    let io_errors = ran.stdout.lines().find_map(|l| l.strip_prefix("vd-io-errors:")).unwrap_or("<missing>");
    let sector = ran.stdout.lines().find_map(|l| l.strip_prefix("disk-sector:")).unwrap_or("<missing>");
    if fs == "xfs" && sector != "4096" {
        errors.push(format!("the XFS disk's logical block is {sector}, not 4096"));
    }
    if io_errors != "0" {
        errors.push(format!("the guest kernel logged {io_errors} I/O errors of the test disk (console log)"));
    }
    let kernel = ran.stdout.lines().find_map(|l| l.strip_prefix("kernel:")).unwrap_or("?");
    if row == "defrag" {
        // What the defragmenter said it did, and the image's extents before and after (FIEMAP).
        eprintln!(
            "vm_remap_stress defrag on {fs}, kernel {kernel}: {}; {}",
            get("defrag", "op"),
            get("defrag", "extents")
        );
    }
    if !errors.is_empty() {
        return util::fail(format!(
            "{} problem(s), {row} on {fs}, kernel {kernel}:\n{}\n{}",
            errors.len(),
            errors.join("\n"),
            ran.transcript
        ));
    }
    if refused.len() == ops.len() {
        return util::skip(format!("{fs} on {kernel} refuses every operation of this row: {}", refused.join("; ")));
    }
    eprintln!(
        "vm_remap_stress {row} on {fs}, kernel {kernel}: passed (boot took {:.1?}){}",
        ran.elapsed,
        if refused.is_empty() { String::new() } else { format!("; refused by the kernel: {}", refused.join("; ")) }
    );
    Ok(Completion::Completed)
}

/// Whether `before N after M, moved K of T blocks` (FIEMAP of the image before and after the
/// defrag) shows a defragmentation: fewer extents, and at least half of the blocks mapped before
/// now elsewhere. A defragmenter that gave up, or found nothing to do, fails the row.
fn defragmented(extents: &str) -> bool {
    let n: Vec<u64> = extents.split(|c: char| !c.is_ascii_digit()).filter_map(|x| x.parse().ok()).collect();
    matches!(n[..], [before, after, moved, total] if after < before && total > 0 && 2 * moved >= total)
}

/// The stress test: `fixed` seconds, or `LOOPKIT_STRESS_SECS` (default 600).
fn stress(suite: &'static str, fixed: Option<u64>) -> TestResult {
    for fs in FILESYSTEMS {
        if let Some(why) = tools_missing(fs) {
            return util::skip(why);
        }
    }
    if !util::have("fio") {
        return util::skip("fio not installed");
    }
    let secs: u64 = match (fixed, std::env::var("LOOPKIT_STRESS_SECS")) {
        (Some(n), _) => n,
        (None, Ok(v)) => match v.parse() {
            Ok(n) if n > 0 => n,
            _ => return util::fail(format!("LOOPKIT_STRESS_SECS={v:?} is not a positive number of seconds")),
        },
        (None, Err(_)) => 600,
    };
    let seed: u64 = match std::env::var("LOOPKIT_STRESS_SEED") {
        Ok(v) => match v.parse() {
            Ok(n) => n,
            Err(_) => return util::fail(format!("LOOPKIT_STRESS_SEED={v:?} is not a number")),
        },
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs()),
    };
    eprintln!(
        "vm_remap_stress::random_mutations ({suite}): seed {seed}, {secs} s (LOOPKIT_STRESS_SEED, LOOPKIT_STRESS_SECS)"
    );
    let d = Scratch::new("vm-remap-stress");
    let (ext4, xfs) = (d.path("ext4.img"), d.path("xfs.img"));
    std::fs::File::create(&ext4)?.set_len(96 << 20)?;
    std::fs::File::create(&xfs)?.set_len(96 << 20)?;
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    // Debugging knobs (see docs/TESTING.md): one file system only, the mutator restricted to
    // some operations, the watchdog's limit per step, the guest's lease-break-time.
    let only_fs = std::env::var("LOOPKIT_STRESS_FS").ok().filter(|v| !v.is_empty());
    if let Some(f) = &only_fs
        && !FILESYSTEMS.contains(&f.as_str())
    {
        return util::fail(format!("LOOPKIT_STRESS_FS={f:?} is neither ext4 nor xfs"));
    }
    let runs = |fs: &str| only_fs.as_deref().is_none_or(|f| f == fs);
    let half = if only_fs.is_some() { secs } else { secs.div_ceil(2) };
    let mut knobs = String::new();
    for var in ["LOOPKIT_STRESS_OPS", "LOOPKIT_STRESS_HANG_SECS", "LOOPKIT_STRESS_TRACE_DEFRAG"] {
        if let Ok(v) = std::env::var(var) {
            knobs.push_str(&format!("export {var}={}\n", vm::sh_quote(&v)));
        }
    }
    if let Ok(v) = std::env::var("LOOPKIT_STRESS_LEASE_BREAK_SECS") {
        match v.parse::<u32>() {
            Ok(n) => knobs.push_str(&format!("echo {n} >/proc/sys/fs/lease-break-time\n")),
            Err(_) => return util::fail(format!("LOOPKIT_STRESS_LEASE_BREAK_SECS={v:?} is not a number")),
        }
    }
    let ext4_half = if runs("ext4") {
        format!(
            "mkfs.ext4 -q -F -b 4096 \"$disk512\"\nmount \"$disk512\" /tmp/x\npython3 /run/vm/remap_stress.py bystanders \
             4\npython3 /run/vm/remap_stress.py stress {half} {seed} ext4\numount /tmp/x\n"
        )
    } else {
        String::new()
    };
    let xfs_half = if runs("xfs") {
        format!(
            "mkfs.xfs -q -f --unsupported -m reflink=1 \"$disk4k\"\nmount \"$disk4k\" /tmp/x\npython3 \
             /run/vm/remap_stress.py bystanders 4\npython3 /run/vm/remap_stress.py stress {half} {seed} xfs\numount \
             /tmp/x\n"
        )
    } else {
        String::new()
    };
    let script = format!(
        r#"export LK={bin}
{knobs}echo "kernel:$(uname -r)"
# A hang shows its kernel stacks: hung tasks after 30 s with their stacks on the console, and
# the driver's watchdog prints /proc stacks, triggers sysrq-w and fails when a step takes over
# 240 s or a cycle over 600 s.
echo 30 >/proc/sys/kernel/hung_task_timeout_secs
echo 50 >/proc/sys/kernel/hung_task_warnings
echo 1 >/proc/sys/kernel/sysrq
echo 8 >/proc/sys/kernel/printk
modprobe -d "$VM_MODROOT" xfs
mkdir -p /tmp/x
# The 4Kn disk's name depends on the PCI order: found by its logical block size.
disk4k=""; disk512=""
for b in /sys/block/vd*; do
    if [ "$(cat "$b/queue/logical_block_size")" = 4096 ]; then disk4k=/dev/${{b##*/}}; else disk512=/dev/${{b##*/}}; fi
done
echo "xfs-disk-sector:$(blockdev --getss "$disk4k")"
{ext4_half}{xfs_half}echo "vd-io-errors:$(dmesg | grep -c 'I/O error, dev vd' || true)"
"#,
        bin = vm::sh_quote(&bin_in_guest)
    );
    // XFS on a 4Kn disk, as in the contract rows (xfs_fsr's direct I/O; see `run_contract`).
    let job = VmJob {
        disks: &[Disk::rw(&ext4), Disk::rw_4kn(&xfs)],
        script: &script,
        files: &[("remap_stress.py", DRIVER.as_bytes())],
        timeout: Duration::from_secs(2 * secs + 900),
        mem_mib: 512,
        suite: Some(suite),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(o) => o,
        Err(u) => return u.skip(),
    };
    out.check().map_err(|e| {
        // A hang ends the driver with the kernel stacks it saw (stress-stack lines).
        let stacks: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("stress-stack:")).collect();
        format!("seed {seed}: {}\n{}", e.message().unwrap_or("failed"), stacks.join("\n"))
    })?;
    let results: Vec<&str> = out.tagged("stress-result:").collect();
    let summary: Vec<&str> =
        out.stdout.lines().filter(|l| l.starts_with("stress-") && !l.starts_with("stress-cycle:")).collect();
    let halves = if only_fs.is_some() { 1 } else { 2 };
    let sector = out.tagged("xfs-disk-sector:").next().unwrap_or("<missing>");
    if sector != "4096" {
        return util::fail(format!("seed {seed}: the XFS disk's logical block is {sector}, not 4096"));
    }
    let io_errors = out.tagged("vd-io-errors:").next().unwrap_or("<missing>");
    if io_errors != "0" {
        return util::fail(format!(
            "seed {seed}: the guest kernel logged {io_errors} I/O errors of the test disks\n{}\n{}",
            summary.join("\n"),
            out.transcript()
        ));
    }
    if results.len() != halves || results.iter().any(|r| *r != "ok") {
        return util::fail(format!("seed {seed}, {secs} s: {results:?}\n{}\n{}", summary.join("\n"), out.transcript()));
    }
    let num = |tag: &str| -> u64 { out.tagged(tag).filter_map(|v| v.parse::<u64>().ok()).sum() };
    let (ops, remapped) = (num("stress-mutator-ops:"), num("stress-cycles-remapped:"));
    if ops == 0 || remapped == 0 || num("stress-fio-verified-file:") == 0 {
        return util::fail(format!(
            "seed {seed}: the run did too little to mean anything (mutator ops {ops}, remapped cycles {remapped})\n{}",
            summary.join("\n")
        ));
    }
    eprintln!(
        "vm_remap_stress::random_mutations on {}: seed {seed}, {secs} s, passed in {:.1?}\n{}",
        out.tagged("kernel:").next().unwrap_or("?"),
        out.elapsed,
        summary.join("\n")
    );
    Ok(Completion::Completed)
}

/// Kernel parameters of the restricted boot: writes to mounted block devices forbidden
/// (`bdev_allow_write_mounted=0`, Linux 6.8+, `CONFIG_BLK_DEV_WRITE_MOUNTED=y` in both Debian
/// kernels), and 64 MiB of the guest's RAM at 384 MiB turned into emulated persistent memory
/// (`memmap=SIZE!START`, an e820 type-12 range that `nd_e820` makes `/dev/pmem0`, DAX-capable).
const RESTRICTED_ARGS: &str = "bdev_allow_write_mounted=0 memmap=64M!384M";

fn restricted_script(bin: &str) -> String {
    format!(
        r#"export LK={bin}
echo "kernel:$(uname -r)"
echo "cmdline:$(cat /proc/cmdline)"
mkfs.ext4 -q -F -b 4096 /dev/vda
mkdir -p /tmp/x /tmp/d
mount /dev/vda /tmp/x
python3 /run/vm/remap_stress.py bystanders 2
timeout 600 python3 /run/vm/remap_stress.py write-mounted /dev/vda || echo "wm-crashed:$?"
umount /tmp/x
for m in nd_e820 nd_pmem; do modprobe -d "$VM_MODROOT" "$m" || echo "modprobe-failed:$m"; done
for i in $(seq 100); do [ -b /dev/pmem0 ] && break; sleep 0.1; done
echo "pmem:$(cat /sys/block/pmem0/size 2>/dev/null || echo none) dax:$(cat /sys/block/pmem0/queue/dax 2>/dev/null || echo none)"
if [ -b /dev/pmem0 ]; then
    if mkfs.ext4 -q -F -b 4096 /dev/pmem0 && mount -o dax=always /dev/pmem0 /tmp/d; then
        timeout 300 python3 /run/vm/remap_stress.py dax ext4 || echo "dax-ext4-crashed:$?"
        umount /tmp/d
    else
        echo "dax-ext4-mount:failed"
    fi
    modprobe -d "$VM_MODROOT" xfs || echo "modprobe-failed:xfs"
    if mkfs.xfs -q -f --unsupported -m reflink=0 /dev/pmem0 && mount -o dax=always /dev/pmem0 /tmp/d; then
        timeout 300 python3 /run/vm/remap_stress.py dax xfs || echo "dax-xfs-crashed:$?"
        umount /tmp/d
    else
        echo "dax-xfs-mount:failed"
    fi
fi
"#,
        bin = vm::sh_quote(bin),
    )
}

fn restricted_boot(suite: &'static str) -> Boot {
    type Cache = Mutex<BTreeMap<&'static str, Arc<OnceLock<Boot>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cell = {
        let mut m = CACHE.get_or_init(|| Mutex::new(BTreeMap::new())).lock().unwrap_or_else(|e| e.into_inner());
        m.entry(suite).or_default().clone()
    };
    cell.get_or_init(|| run_restricted(suite)).clone()
}

fn run_restricted(suite: &'static str) -> Boot {
    let d = Scratch::new("vm-remap-restricted");
    let disk = d.path("fs.img");
    let make = || -> std::io::Result<()> { std::fs::File::create(&disk)?.set_len(64 << 20) };
    make().map_err(|e| Err(format!("cannot make the disk image: {e}")))?;
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(Err(format!("{} is not visible in the guest", bin.display())));
    };
    let script = restricted_script(&bin_in_guest);
    let disks = [Disk::rw(&disk)];
    let job = VmJob {
        disks: &disks,
        script: &script,
        files: &[("remap_stress.py", DRIVER.as_bytes())],
        timeout: Duration::from_secs(900),
        mem_mib: 512,
        suite: Some(suite),
        kernel_args: RESTRICTED_ARGS,
        ..Default::default()
    };
    let out = vm::run(&job).map_err(Ok)?;
    if let Err(f) = out.check() {
        return Err(Err(f.message().unwrap_or("failed").to_string()));
    }
    Ok(Arc::new(Ran { stdout: out.stdout.clone(), transcript: out.transcript(), elapsed: out.elapsed }))
}

/// A row of the restricted boot: `write-mounted` (booted with `bdev_allow_write_mounted=0`: the
/// kernel refuses `dd of=/dev/vda` and any open for writing of the mounted disk with `EBUSY`,
/// while reading stays allowed; `attach --remap` then serves through the file, its notes and log
/// saying `remap.device-write-refused`; everything written through the device is in the file
/// after detach, sha256 through the file system, and no other file changed; `--read-only`, whose
/// device open the kernel allows, still remaps and reads the file's bytes) or a file system
/// name (`dax=always` on emulated pmem: `attach --remap` is refused with `remap.dax-file` and
/// serves through the file).
fn restricted_row(row: &'static str, suite: &'static str) -> TestResult {
    let needs: &[&str] =
        if row == "write-mounted" { &["mkfs.ext4", "dd"] } else { &["mkfs.ext4", "mkfs.xfs", "findmnt"] };
    if let Some(t) = needs.iter().find(|t| !util::have(t)) {
        return util::skip(format!("{t} not installed"));
    }
    if let Some(why) = util::python_missing() {
        return util::skip(why);
    }
    let ran = match restricted_boot(suite) {
        Ok(r) => r,
        Err(Ok(u)) => return u.skip(),
        Err(Err(f)) => return util::fail(format!("the restricted boot on {suite} failed: {f}")),
    };
    let get = |tag: &str| -> String {
        let p = format!("{tag}:");
        ran.stdout.lines().find_map(|l| l.strip_prefix(p.as_str())).unwrap_or("<missing>").to_string()
    };
    let mut errors = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            errors.push(what);
        }
    };
    let cmdline = get("cmdline");
    check(cmdline.contains("bdev_allow_write_mounted=0"), format!("kernel command line: {cmdline}"));
    let kernel = get("kernel");
    if row == "write-mounted" {
        check(!ran.stdout.contains("wm-crashed:"), "the guest driver crashed (see its stderr)".into());
        let dd = get("wm-dd");
        check(
            dd.starts_with("exit 1 ") && dd.contains("Device or resource busy"),
            format!("dd to the mounted disk: {dd}"),
        );
        check(get("wm-open") == "EBUSY", format!("open of the mounted disk for writing: {}", get("wm-open")));
        check(get("wm-open-ro") == "opened", format!("open of the mounted disk for reading: {}", get("wm-open-ro")));
        let (mode, notes, log) = (get("wm-mode"), get("wm-notes"), get("wm-log"));
        check(mode == "file", format!("attach --remap mode: {mode} (notes: {notes})"));
        check(notes.contains("(remap.device-write-refused)"), format!("attach's notes do not say why: {notes}"));
        check(
            notes.contains("bdev_allow_write_mounted=0"),
            format!("attach's notes do not name the boot parameter: {notes}"),
        );
        check(log.contains("remap.device-write-refused"), format!("attach's log (stderr) does not say why: {log}"));
        check(get("wm-list") == "off", format!("--list remap: {}", get("wm-list")));
        check(get("wm-rc") == "0", format!("server exit {}", get("wm-rc")));
        check(get("wm-data") == "ok", format!("the image after detach: {}", get("wm-data")));
        check(get("wm-others").starts_with("ok "), format!("other files: {}", get("wm-others")));
        check(get("wm-ro-mode") == "remap", format!("attach --remap --read-only mode: {}", get("wm-ro-mode")));
        check(get("wm-ro-list") == "active", format!("--read-only --list remap: {}", get("wm-ro-list")));
        check(get("wm-ro-read") == "ok", format!("the device read read-only: {}", get("wm-ro-read")));
        check(get("wm-ro-rc") == "0", format!("read-only server exit {}", get("wm-ro-rc")));
        eprintln!("vm_remap_stress write-mounted on {kernel}: dd {dd}; notes {notes}");
    } else {
        let fs = row;
        let pmem = get("pmem");
        check(pmem.starts_with("131072 ") && pmem.ends_with("dax:1"), format!("the emulated pmem disk: {pmem}"));
        check(!ran.stdout.contains(&format!("dax-{fs}-crashed:")), "the guest driver crashed".into());
        let mount = get(&format!("dax-{fs}-mount"));
        check(mount.split(',').any(|o| o == "dax=always" || o == "dax"), format!("mount options: {mount}"));
        let (mode, notes) = (get(&format!("dax-{fs}-mode")), get(&format!("dax-{fs}-notes")));
        check(mode == "file", format!("attach --remap on a dax=always mount: mode {mode} (notes: {notes})"));
        check(notes.contains("(remap.dax-file)"), format!("attach's notes do not say remap.dax-file: {notes}"));
        check(get(&format!("dax-{fs}-rc")) == "0", format!("server exit {}", get(&format!("dax-{fs}-rc"))));
    }
    if errors.is_empty() {
        eprintln!("vm_remap_stress restricted boot on {kernel}: {:.0} s", ran.elapsed.as_secs_f64());
        Ok(Completion::Completed)
    } else {
        util::fail(format!(
            "{row} on {kernel}:\n  {}\n--- guest transcript ---\n{}",
            errors.join("\n  "),
            ran.transcript
        ))
    }
}
