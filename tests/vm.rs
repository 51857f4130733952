//! Real-kernel test harness: run a shell script as root in a throw-away QEMU (TCG) guest running
//! Debian trixie's kernel, with raw images attached as virtio disks (see docs/TESTING.md,
//! "Real-kernel tests", and tests/vm/{prepare.sh,run.sh,init}).
//!
//! The guest runs the script by `bash -euo pipefail` in a chroot of the host's root file system
//! (shared read-only), so every host tool is there: the loopkit under test, cryptsetup, mkfs,
//! sha256sum, python3. The script's working directory `/run/vm` is a writable share with the
//! host ([`VmJob::files`] go in, [`VmOutcome::file`] reads what the script left). `/tmp` and
//! `/run` are fresh tmpfs; the host's `/tmp` is readable at `/run/host-tmp` ([`guest_path`]); `DM_DISABLE_UDEV=1` is set; modules dm-mod, dm-crypt, ublk_drv,
//! loop, ext4 (also ext2/ext3), isofs, udf, vfat are loaded; `modprobe -d "$VM_MODROOT" NAME`
//! loads others (xfs, btrfs…).
//!
//! ```ignore
//! let job = vm::VmJob { disks: &[vm::Disk::ro(&img)], script: "sha256sum /dev/vda", ..Default::default() };
//! let out = match vm::run(&job) { Ok(out) => out, Err(unavailable) => return unavailable.skip() };
//! out.check()?; // the script exited 0
//! ```
//!
//! VM runs are serialized (in this process by a mutex, across processes by a lock file), since
//! TCG is CPU-bound and the machine has 2 cores. Batch several checks into one script: a boot
//! costs about 10 s.

#![allow(dead_code)]

use crate::util::{self, TestResult};
use libtest_mimic::Failed;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// With `LOOPKIT_REQUIRE_KERNEL_TESTS=1` a VM test that cannot run fails instead of skipping.
pub const REQUIRE_ENV: &str = "LOOPKIT_REQUIRE_KERNEL_TESTS";
/// With `LOOPKIT_SKIP_KERNEL_TESTS=1` VM tests are skipped without trying (quick local runs).
pub const SKIP_ENV: &str = "LOOPKIT_SKIP_KERNEL_TESTS";

/// A raw image attached to the guest as a virtio disk (`/dev/vda`, `/dev/vdb`… in order).
#[derive(Debug, Clone, Copy)]
pub struct Disk<'a> {
    /// The image on the host (a regular file; no commas in the path).
    pub path: &'a Path,
    /// Attach read-only (the guest cannot write it).
    pub readonly: bool,
    /// 4096-byte logical and physical blocks (a 4Kn disk; writable). Such disks come after all
    /// the others, whatever their place in [`VmJob::disks`].
    pub native_4k: bool,
}

impl<'a> Disk<'a> {
    /// A read-only disk (use this for originals).
    pub fn ro(path: &'a Path) -> Disk<'a> {
        Disk { path, readonly: true, native_4k: false }
    }
    /// A writable disk.
    pub fn rw(path: &'a Path) -> Disk<'a> {
        Disk { path, readonly: false, native_4k: false }
    }
    /// A writable disk with 4096-byte logical blocks (4Kn), attached after the other disks.
    pub fn rw_4kn(path: &'a Path) -> Disk<'a> {
        Disk { path, readonly: false, native_4k: true }
    }
}

/// The guest's device node for the `i`th disk of a job: 0 → `/dev/vda`.
pub fn dev(i: usize) -> String {
    assert!(i < 26, "at most 26 disks");
    format!("/dev/vd{}", (b'a' + i as u8) as char)
}

/// One VM boot. Build it with `..Default::default()` so new fields do not break callers.
#[derive(Debug, Clone, Default)]
pub struct VmJob<'a> {
    /// Disks, attached in order as `/dev/vda`, `/dev/vdb`…
    pub disks: &'a [Disk<'a>],
    /// The guest script (bash, `-euo pipefail`, cwd `/run/vm`).
    pub script: &'a str,
    /// Files put into the share (the guest's `/run/vm`) before the boot: (name, contents).
    pub files: &'a [(&'a str, &'a [u8])],
    /// Kill the VM after this long; zero means 300 s. Waiting for the VM lock is not counted.
    pub timeout: Duration,
    /// Guest memory in MiB; zero means 1024.
    pub mem_mib: u32,
    /// Guest CPUs; zero means 1. (TCG runs them all on one host thread: more CPUs only help
    /// tests of multi-queue behaviour, not speed.)
    pub cpus: u32,
    /// Debian suite whose kernel boots ([`TRIXIE`], [`BACKPORTS`]); `None` means
    /// `$LOOPKIT_VM_SUITE` or trixie.
    pub suite: Option<&'static str>,
    /// More kernel command-line parameters (space-separated), e.g. `bdev_allow_write_mounted=0`.
    pub kernel_args: &'a str,
}

/// Debian 13's kernel (6.12: ublk without zero copy).
pub const TRIXIE: &str = "trixie";
/// The trixie-backports kernel (7.x: ublk zero copy, `UBLK_F_AUTO_BUF_REG`).
pub const BACKPORTS: &str = "trixie-backports";

/// The suite used when a job names none.
pub fn default_suite() -> String {
    std::env::var("LOOPKIT_VM_SUITE").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| TRIXIE.to_string())
}

/// Why a VM test could not run: report it as skipped (via [`Unavailable::skip`]).
#[derive(Debug, Clone)]
pub struct Unavailable {
    /// Human-readable reason.
    pub reason: String,
}

impl Unavailable {
    fn new(reason: impl Into<String>) -> Unavailable {
        Unavailable { reason: reason.into() }
    }

    /// The test result for a test that could not run: skipped with the reason, or a failure
    /// under `LOOPKIT_REQUIRE_KERNEL_TESTS=1` (and `LOOPKIT_REQUIRE_ALL_TESTS=1`).
    pub fn skip(self) -> TestResult {
        if env_is_1(REQUIRE_ENV) {
            return Err(format!("real-kernel test could not run ({REQUIRE_ENV}=1): {}", self.reason).into());
        }
        util::skip(format!("real-kernel test: {}", self.reason))
    }
}

/// What happened in the guest once it reached the script.
pub struct VmOutcome {
    /// The script's exit status, or `None` if it did not finish (timeout or guest crash).
    pub exit_code: Option<i32>,
    /// The script's stdout.
    pub stdout: String,
    /// The script's stderr.
    pub stderr: String,
    /// The guest console: kernel messages (warnings and worse) and `vm-init:` lines.
    pub console: String,
    /// Wall time of the whole run (boot, script, power-off).
    pub elapsed: Duration,
    /// Guest uptime when the script started (boot + module loading).
    pub boot: Option<Duration>,
    /// The job directory (the guest's `/run/vm`), removed when the outcome is dropped.
    pub dir: util::Scratch,
}

impl VmOutcome {
    /// Whether the script exited 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Fail (with the script's output and the console's tail) unless the script exited 0.
    pub fn check(&self) -> Result<(), Failed> {
        if self.success() {
            return Ok(());
        }
        let what = match self.exit_code {
            Some(c) => format!("the guest script exited with {c}"),
            None => "the guest script did not finish (timeout or guest crash)".to_string(),
        };
        Err(format!("{what} after {:.1?}\n{}", self.elapsed, self.transcript()).into())
    }

    /// stdout, stderr and the console's tail, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "--- guest stdout:\n{}\n--- guest stderr:\n{}\n--- console (tail):\n{}",
            tail(&self.stdout, 60),
            tail(&self.stderr, 60),
            console_tail(&self.console)
        )
    }

    /// A file the guest script left in its working directory.
    pub fn file(&self, name: &str) -> Result<Vec<u8>, Failed> {
        std::fs::read(self.dir.path(name)).map_err(|e| format!("guest left no readable {name}: {e}").into())
    }

    /// The `PREFIX<sha256>  ./path` lines that [`guest_tree_sums`] printed, keyed by "./path".
    pub fn tree_sums(&self, prefix: &str) -> BTreeMap<String, String> {
        self.tagged(prefix).filter_map(|l| l.split_once("  ").map(|(h, p)| (p.to_string(), h.to_string()))).collect()
    }

    /// Lines of stdout that start with `prefix`, with the prefix removed (for scripts that
    /// print tagged results like `sha:NAME=HEX`).
    pub fn tagged<'s>(&'s self, prefix: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.stdout.lines().filter_map(move |l| l.strip_prefix(prefix))
    }
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    let start = v.len().saturating_sub(lines);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[… {start} lines cut]\n"));
    }
    out.push_str(&v[start..].join("\n"));
    out
}

/// The console's last 30 lines, or, when the guest kernel oopsed or panicked, everything from
/// the first such report on (at most 150 lines), so a crash's whole trace reaches the log.
fn console_tail(console: &str) -> String {
    const MARKS: [&str; 5] = ["BUG: ", "Oops", "general protection fault", "Kernel panic", "WARNING: "];
    let lines: Vec<&str> = console.lines().collect();
    match lines.iter().position(|l| MARKS.iter().any(|m| l.contains(m))) {
        Some(first) => {
            let from = &lines[first.saturating_sub(5)..];
            let shown = tail(&from.join("\n"), 150);
            format!("[… {} lines before the first kernel report cut]\n{shown}", first.saturating_sub(5))
        }
        None => tail(console, 30),
    }
}

fn env_is_1(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == "1")
}

/// Kernel and initramfs from tests/vm/prepare.sh.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// vmlinuz.
    pub kernel: PathBuf,
    /// initramfs.
    pub initrd: PathBuf,
    /// Kernel release (`uname -r` in the guest).
    pub kver: String,
    /// `modprobe -d` root for the guest's kernel modules.
    pub modroot: PathBuf,
    /// Debian package and version.
    pub package: String,
    /// How long preparing took in this process.
    pub took: Duration,
}

fn vm_dir() -> PathBuf {
    util::repo_root().join("tests/vm")
}

/// Where prepared kernels are cached: `$LOOPKIT_VM_CACHE` or `target/vm-cache`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("LOOPKIT_VM_CACHE").map(PathBuf::from).unwrap_or_else(|| util::repo_root().join("target/vm-cache"))
}

/// Prepare the default suite's kernel once per test-binary run (later callers get the same
/// result).
pub fn prepared() -> Result<&'static Prepared, Unavailable> {
    prepared_suite(&default_suite())
}

/// Prepare `suite`'s kernel once per test-binary run.
pub fn prepared_suite(suite: &str) -> Result<&'static Prepared, Unavailable> {
    type Cache = Mutex<BTreeMap<String, Result<&'static Prepared, String>>>;
    static PREPARED: OnceLock<Cache> = OnceLock::new();
    let map = PREPARED.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    let r = map.entry(suite.to_string()).or_insert_with(|| prepare(suite).map(|p| &*Box::leak(Box::new(p)))).clone();
    r.map_err(Unavailable::new)
}

fn prepare(suite: &str) -> Result<Prepared, String> {
    if env_is_1(SKIP_ENV) {
        return Err(format!("disabled by {SKIP_ENV}=1"));
    }
    if !util::have("qemu-system-x86_64") {
        return Err(
            "qemu-system-x86_64 is not installed (apt-get install --no-install-recommends qemu-system-x86)".into()
        );
    }
    let t0 = Instant::now();
    let out = Command::new("sh")
        .arg(vm_dir().join("prepare.sh"))
        .arg(cache_dir())
        .env("LOOPKIT_VM_SUITE", suite)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run tests/vm/prepare.sh: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let last = stderr.lines().last().unwrap_or("no message");
        return Err(format!("kernel preparation ({suite}) failed: {last}"));
    }
    let get = |key: &str| -> Result<String, String> {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .map(str::to_string)
            .ok_or_else(|| format!("tests/vm/prepare.sh printed no {key}"))
    };
    Ok(Prepared {
        kernel: get("VM_KERNEL")?.into(),
        initrd: get("VM_INITRD")?.into(),
        kver: get("VM_KVER")?,
        modroot: get("VM_MODROOT")?.into(),
        package: get("VM_KPKG")?,
        took: t0.elapsed(),
    })
}

/// Holds the VM lock: the in-process mutex and an flock on a machine-wide lock file.
struct VmLock {
    _guard: std::sync::MutexGuard<'static, ()>,
    _file: Option<std::fs::File>,
}

fn lock_vm() -> VmLock {
    use std::os::fd::AsRawFd;
    static MUTEX: Mutex<()> = Mutex::new(());
    let guard = MUTEX.lock().unwrap_or_else(|e| e.into_inner());
    // Across test binaries (other worktrees, other engineers): one VM at a time on this machine.
    let path = std::env::temp_dir().join("loopkit-vm.lock");
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).ok();
    if let Some(f) = &file {
        // SAFETY: flock on a valid open descriptor; blocks until the lock is ours.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    }
    VmLock { _guard: guard, _file: file }
}

/// Boot a VM and run the job's script. `Err(Unavailable)` means the test cannot run here
/// (no qemu, no kernel, the guest never reached the script twice in a row); a script that
/// failed or did not finish is an `Ok` outcome whose [`VmOutcome::check`] fails.
pub fn run(job: &VmJob) -> Result<VmOutcome, Unavailable> {
    let prep = match job.suite {
        Some(s) => prepared_suite(s)?,
        None => prepared()?,
    };
    for d in job.disks {
        // Mistakes in the test itself fail it (panic), they are not reasons to skip.
        assert!(d.path.is_file(), "vm::run: disk image {} is not a file", d.path.display());
        assert!(!d.path.to_string_lossy().contains(','), "vm::run: qemu cannot take a disk path with a comma");
    }
    assert!(job.disks.len() <= 26, "vm::run: at most 26 disks");
    let pristine = Pristine::save(job.disks);
    let mut last_reason = String::new();
    for attempt in 1..=2 {
        match run_once(job, prep) {
            Attempt::Ran(outcome) => {
                let crash = if attempt == 1 { emulator_or_unrelated_crash(&outcome) } else { None };
                match (crash, &pristine) {
                    (Some(report), Ok(p)) if p.restore() => {
                        eprintln!(
                            "vm: attempt 1: the guest kernel crashed outside ublk (no ublk frame in its report: an \
                             emulator or kernel fault, not the code under test); the writable disks were restored \
                             from their copies and the job runs once more. The report:\n{report}"
                        );
                    }
                    _ => return Ok(outcome),
                }
            }
            Attempt::NoStart(reason, console) => {
                eprintln!("vm: attempt {attempt}: {reason}\n--- console (tail):\n{}", tail(&console, 40));
                last_reason = reason;
            }
            Attempt::Unavailable(reason) => return Err(Unavailable::new(reason)),
        }
    }
    Err(Unavailable::new(format!("infrastructure failure: {last_reason}")))
}

/// The kernel report of a guest that crashed (the script never finished and the console has an
/// oops or panic) when no frame or message of it names ublk: TCG guests very rarely die with
/// register states no CPU produces (in CI once: a NULL `inode` and `EFLAGS` with reserved bits
/// set in `ext4_iomap_begin` under fio, after the ublk devices were gone). `None` otherwise —
/// a crash through ublk, a hang, a failed script — which stays the test's failure.
pub fn emulator_or_unrelated_crash(outcome: &VmOutcome) -> Option<String> {
    if outcome.exit_code.is_some() {
        return None;
    }
    let lines: Vec<&str> = outcome.console.lines().collect();
    let first = lines.iter().position(|l| ["Kernel panic", "Oops", "BUG: "].iter().any(|m| l.contains(m)))?;
    let names_ublk =
        lines[first.saturating_sub(5)..].iter().any(|l| l.contains("ublk") && !l.contains("Modules linked in"));
    (!names_ublk).then(|| console_tail(&outcome.console))
}

/// Copies of a job's writable disks taken before its first boot, so that a second attempt after
/// an emulator crash starts from the same bytes (a retry on a half-written disk could pass for
/// the wrong reason). Sparse copies (`cp --sparse=always`); removed when dropped.
struct Pristine(Vec<(PathBuf, PathBuf)>);

impl Pristine {
    fn save(disks: &[Disk]) -> Result<Pristine, String> {
        let mut saved = Pristine(Vec::new());
        for d in disks.iter().filter(|d| !d.readonly) {
            let copy = PathBuf::from(format!("{}.vm-pristine", d.path.display()));
            let ok =
                Command::new("cp").arg("--sparse=always").arg(d.path).arg(&copy).status().is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("cannot copy {}", d.path.display()));
            }
            saved.0.push((d.path.to_path_buf(), copy));
        }
        Ok(saved)
    }

    /// Put the copies back (copying again, so they stay for the drop); false if any failed.
    fn restore(&self) -> bool {
        self.0.iter().all(|(disk, copy)| {
            Command::new("cp").arg("--sparse=always").arg(copy).arg(disk).status().is_ok_and(|s| s.success())
        })
    }
}

impl Drop for Pristine {
    fn drop(&mut self) {
        for (_, copy) in &self.0 {
            let _ = std::fs::remove_file(copy);
        }
    }
}

enum Attempt {
    Ran(VmOutcome),
    NoStart(String, String),
    Unavailable(String),
}

fn run_once(job: &VmJob, prep: &Prepared) -> Attempt {
    let dir = util::Scratch::new("vm");
    let share = dir.0.clone();
    let script = share.join("test.sh");
    let mut body = String::from("# loopkit VM job\n");
    body.push_str(job.script);
    body.push('\n');
    if let Err(e) = std::fs::write(&script, body) {
        return Attempt::Unavailable(format!("cannot write {}: {e}", script.display()));
    }
    for (name, data) in job.files {
        assert!(!name.contains('/') && !name.is_empty(), "VmJob::files names are plain file names");
        if let Err(e) = std::fs::write(share.join(name), data) {
            return Attempt::Unavailable(format!("cannot write {name}: {e}"));
        }
    }
    let timeout = if job.timeout.is_zero() { Duration::from_secs(300) } else { job.timeout };
    let mem = if job.mem_mib == 0 { 1024 } else { job.mem_mib };
    let mut cmd = Command::new("sh");
    cmd.arg(vm_dir().join("run.sh"))
        .arg("-w")
        .arg(&share)
        .arg("-t")
        .arg(timeout.as_secs().max(1).to_string())
        .arg("-m")
        .arg(mem.to_string())
        .arg("-c")
        .arg(job.cpus.max(1).to_string());
    if !job.kernel_args.is_empty() {
        cmd.arg("-a").arg(job.kernel_args);
    }
    for d in job.disks {
        cmd.arg(if d.native_4k {
            "-k"
        } else if d.readonly {
            "-r"
        } else {
            "-d"
        })
        .arg(d.path);
    }
    cmd.arg(&script)
        .env("VM_KERNEL", &prep.kernel)
        .env("VM_INITRD", &prep.initrd)
        .env("VM_MODROOT", &prep.modroot)
        .stdin(Stdio::null());

    let lock = lock_vm();
    let t0 = Instant::now();
    let out = cmd.output();
    let elapsed = t0.elapsed();
    drop(lock);
    let out = match out {
        Ok(o) => o,
        Err(e) => return Attempt::Unavailable(format!("cannot run tests/vm/run.sh: {e}")),
    };
    let read = |name: &str| std::fs::read(share.join(name)).map(|b| String::from_utf8_lossy(&b).into_owned());
    let console = read("console.log").unwrap_or_default();
    let status = read("status").unwrap_or_default().trim().to_string();
    let run_msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match status.as_str() {
        "passed" | "failed" | "unfinished" => {}
        "no-start" => {
            let qemu = read("qemu.log").unwrap_or_default();
            return Attempt::NoStart(format!("{run_msg} {}", qemu.trim()), console);
        }
        _ => return Attempt::Unavailable(format!("VM could not run: {run_msg}")),
    }
    let exit_code = read("exit_code").ok().and_then(|s| s.trim().parse().ok());
    let boot = read("started")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|t| t.parse::<f64>().ok()))
        .map(Duration::from_secs_f64);
    Attempt::Ran(VmOutcome {
        exit_code,
        stdout: read("stdout").unwrap_or_default(),
        stderr: read("stderr").unwrap_or_default(),
        console,
        elapsed,
        boot,
        dir,
    })
}

/// sha256 (by sha256sum) of every regular file under `root` on the host, keyed by
/// "./relative/path" (symlinks and directories are not listed); compare with
/// [`VmOutcome::tree_sums`].
pub fn host_tree_sums(root: &Path) -> Result<BTreeMap<String, String>, Failed> {
    let mut sums = BTreeMap::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e?;
        if e.file_type().is_file() {
            let rel = e.path().strip_prefix(root)?.to_string_lossy().into_owned();
            sums.insert(format!("./{rel}"), util::sha256_file(e.path())?);
        }
    }
    Ok(sums)
}

/// Guest script snippet: print `PREFIX<sha256>  ./path` for every regular file under `dir`
/// (symlinks skipped; not following symlinked directories). One `sha256sum` process: every exec
/// costs ~0.2–0.5 s under TCG, so `find | xargs` pipelines are avoided.
pub fn guest_tree_sums(dir: &str, prefix: &str) -> String {
    format!(
        "(cd {dir} && shopt -s globstar dotglob nullglob && f=() && for p in **; do if [[ -f $p && ! -L $p ]]; then f+=(\"./$p\"); fi; done; \
if (( ${{#f[@]}} )); then sha256sum -- \"${{f[@]}}\"; fi) | while IFS= read -r l; do printf '%s\\n' {prefix}\"$l\"; done\n",
        dir = sh_quote(dir),
        prefix = sh_quote(prefix)
    )
}

/// Where a host file is visible (read-only) in the guest: the same path, except that the host's
/// `/tmp` is at `/run/host-tmp` (the guest has its own `/tmp`). `None` for paths under the host's
/// `/run`, which the guest cannot see. Relative paths are taken from the current directory.
pub fn guest_path(host: &Path) -> Option<String> {
    let abs = if host.is_absolute() { host.to_path_buf() } else { std::env::current_dir().ok()?.join(host) };
    let s = abs.to_str()?;
    if let Some(rest) = s.strip_prefix("/tmp/") {
        Some(format!("/run/host-tmp/{rest}"))
    } else if s == "/run" || s.starts_with("/run/") {
        None
    } else {
        Some(s.to_string())
    }
}

/// Quote for the guest's shell.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
