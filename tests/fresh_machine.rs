//! The fresh-machine test: a brand-new Debian machine builds, runs and tests loopkit
//! with the README's two commands, and installs it like a package.
//!
//! A minimal Debian root of this machine's own suite, from its own configured mirror
//! (`tests/fresh-root.sh prepare`: `debootstrap --variant=minbase` plus gcc, libc6-dev, git,
//! ca-certificates; cached in `target/fresh-cache/`), copied afresh for every run, gets this
//! machine's Rust toolchain bind-mounted read-only at /opt/rust, its CA trust store, proxy
//! variables and cargo configuration. Inside it (chroot in private mount and PID namespaces, so no
//! mount outlives the test): `git clone` of the committed HEAD, the README's first command (read
//! from README.md's Quick start section) must exit 0 and print the sample's verified result with
//! the payload SHA-256 recorded independently in `testdata/sample/plaintext.sha256`; then
//! `sh tests/setup.sh` and `sh tests/setup.sh --check` must exit 0. Finally the .deb made on this
//! machine by `bin/build-deb.sh` is installed there with apt, and `loopkit --version`,
//! `man -w loopkit` and `loopkit verify` on the sample must succeed.
//!
//! Cached between runs: the pristine root, the root's apt archives and cargo registry. Fresh every
//! run: the working root, the clone and the build.

use crate::ensure;
use crate::util::{self, TestResult, fail, run, run_ok, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

pub fn trials() -> Vec<Trial> {
    vec![trial("fresh_machine::readme_setup_and_deb", readme_setup_and_deb)]
}

/// Where step scripts and the .deb are put inside the root (outside the clone).
const STEPS: &str = "/root/fresh-steps";

/// Whether one path is the other or inside it.
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// The first ```sh block of README.md's "Quick start" section: the README's command 1.
pub fn readme_command_1(readme: &str) -> Result<String, Failed> {
    let mut lines = readme.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with("## ") && l.to_ascii_lowercase().contains("quick start"))
        .ok_or("README.md has no \"## Quick start\" section")?;
    for line in lines.by_ref() {
        if line.starts_with("## ") {
            break;
        }
        if line.trim() == "```sh" {
            let mut block = String::new();
            for l in lines.by_ref() {
                if l.trim() == "```" {
                    ensure!(!block.trim().is_empty(), "README.md's first Quick start sh block is empty");
                    return Ok(block);
                }
                block.push_str(l);
                block.push('\n');
            }
            return fail("README.md's first Quick start sh block is not closed");
        }
    }
    fail("README.md's Quick start section has no ```sh block")
}

/// The last `n` lines of a command's output.
fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fail unless the step exited 0 (with the tail of its output).
fn require_ok(what: &str, out: &Output) -> Result<(), Failed> {
    if out.status.success() {
        return Ok(());
    }
    fail(format!(
        "{what}: exit {}\n--- stdout (tail):\n{}\n--- stderr (tail):\n{}",
        util::code(out),
        tail(&out.stdout, 60),
        tail(&out.stderr, 60)
    ))
}

/// `loopkit verify` on the sample, human output: `result OK` and the payload SHA-256 recorded
/// in testdata/sample/plaintext.sha256.
fn require_verified(what: &str, stdout: &str, expected_sha256: &str) -> Result<(), Failed> {
    // A field starts its line ("payload      sha256 …"); continuation lines are indented.
    let field = |name: &str| {
        stdout.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?;
            rest.starts_with(' ').then(|| rest.split_whitespace().collect::<Vec<_>>().join(" "))
        })
    };
    ensure!(field("result").as_deref() == Some("OK"), "{what}: no `result OK` line in its output:\n{stdout}");
    let payload = field("payload").unwrap_or_default();
    ensure!(
        payload == format!("sha256 {expected_sha256}"),
        "{what}: payload line {payload:?}, expected the SHA-256 of testdata/sample/plaintext.sha256 ({expected_sha256})"
    );
    Ok(())
}

/// A mount point at or under `dir` in this mount namespace, if any.
fn mount_under(dir: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let dir = dir.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .find(|m| *m == dir || m.starts_with(&format!("{dir}/")))
}

/// The working root: removed before use (a killed run's leftover) and on drop, only when nothing
/// is mounted under it.
struct WorkRoot {
    dir: PathBuf,
    _lock: std::fs::File,
}

impl WorkRoot {
    fn remove(dir: &Path) -> Result<(), Failed> {
        if let Some(m) = mount_under(dir) {
            return fail(format!("{m} is mounted: not removing {}", dir.display()));
        }
        if dir.exists() {
            run_ok(Command::new("rm").arg("-rf").arg("--one-file-system").arg(dir))?;
        }
        Ok(())
    }

    fn new(cache: &Path) -> Result<WorkRoot, Failed> {
        let lock_path = cache.join("work.lock");
        let lock = std::fs::File::create(&lock_path).map_err(|e| format!("create {}: {e}", lock_path.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
        let dir = cache.join("work");
        WorkRoot::remove(&dir)?;
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        Ok(WorkRoot { dir, _lock: lock })
    }
}

impl Drop for WorkRoot {
    fn drop(&mut self) {
        if std::env::var_os("LOOPKIT_KEEP_TMP").is_some() {
            eprintln!("fresh_machine: kept {}", self.dir.display());
        } else if let Err(e) = WorkRoot::remove(&self.dir) {
            eprintln!("fresh_machine: {}", e.message().unwrap_or("cannot remove the working root"));
        }
    }
}

/// How to enter the root: the script, the root, the bind mounts.
struct Root {
    script: PathBuf,
    root: PathBuf,
    binds: Vec<(&'static str, PathBuf, String)>,
}

impl Root {
    /// Write `body` to STEPS/NAME.sh inside the root and run it there (`sh -eu`, from `cwd`),
    /// killed after `timeout_s` seconds.
    fn step(&self, name: &str, cwd: &str, body: &str, timeout_s: u64) -> Result<Output, Failed> {
        let dir = self.root.join(STEPS.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let file = dir.join(format!("{name}.sh"));
        std::fs::write(&file, format!("cd {cwd}\n{body}")).map_err(|e| format!("write {}: {e}", file.display()))?;
        let mut c = Command::new("timeout");
        c.args(["--kill-after=60", &timeout_s.to_string(), "sh"]).arg(&self.script).arg("enter").arg(&self.root);
        for (flag, src, dst) in &self.binds {
            c.arg(flag).arg(src).arg(dst);
        }
        c.args(["--", "sh", "-eu", &format!("{STEPS}/{name}.sh")]);
        run(&mut c)
    }
}

fn secs(t: Instant) -> String {
    format!("{:.0} s", t.elapsed().as_secs_f64())
}

fn readme_setup_and_deb() -> TestResult {
    let t_all = Instant::now();
    if !rustix::process::geteuid().is_root() {
        return util::skip("needs root (debootstrap, chroot, mount)");
    }
    for tool in ["debootstrap", "wget", "unshare", "chroot", "timeout", "git", "rustc", "cargo-deb"] {
        if !util::have(tool) {
            return util::skip(format!(
                "missing tool: {tool} (tests/apt-packages.txt, tests/cargo-tools.txt: sh tests/setup.sh)"
            ));
        }
    }
    let repo = util::repo_root();
    let script = repo.join("tests/fresh-root.sh");

    // What the test follows and checks, read before anything slow happens.
    let readme = std::fs::read_to_string(repo.join("README.md")).map_err(|e| format!("read README.md: {e}"))?;
    let command_1 = readme_command_1(&readme)?;
    let sha_file = repo.join("testdata/sample/plaintext.sha256");
    let expected_sha256 = std::fs::read_to_string(&sha_file)
        .map_err(|e| format!("read {}: {e}", sha_file.display()))?
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    ensure!(
        expected_sha256.len() == 64 && expected_sha256.bytes().all(|b| b.is_ascii_hexdigit()),
        "{} does not start with a SHA-256",
        sha_file.display()
    );

    // This machine's Rust toolchain (a rustup-style sysroot holds cargo next to rustc).
    let sysroot = text(&run_ok(Command::new("rustc").args(["--print", "sysroot"]))?).trim().to_string();
    let sysroot = PathBuf::from(sysroot);
    if !sysroot.join("bin/cargo").exists() || !sysroot.join("bin/rustc").exists() {
        return util::skip(format!("{} has no bin/cargo and bin/rustc to bind-mount", sysroot.display()));
    }
    // The committed HEAD and where its objects are (a worktree's live in the common dir).
    let git = |args: &[&str]| -> Result<String, Failed> {
        Ok(text(&run_ok(Command::new("git").arg("-C").arg(&repo).args(args))?).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let common_dir = PathBuf::from(git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])?);

    // The pristine root (debootstrap once per suite; skipped when the archive cannot be reached).
    let cache = repo.join("target/fresh-cache");
    let t = Instant::now();
    let out = run(Command::new("sh").arg(&script).arg("prepare").arg(&cache))?;
    match util::code(&out) {
        0 => {}
        3 => return util::skip(tail(&out.stderr, 1)),
        _ => require_ok("tests/fresh-root.sh prepare", &out)?,
    }
    let kv = text(&out);
    let get = |k: &str| kv.lines().find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string));
    let (Some(pristine), Some(suite)) = (get("ROOT"), get("SUITE")) else {
        return fail(format!("tests/fresh-root.sh prepare printed no ROOT/SUITE:\n{kv}"));
    };
    eprintln!("fresh_machine: pristine {suite} root ready ({})", secs(t));

    // A fresh working copy; caches for the root's apt archives and cargo registry.
    let t = Instant::now();
    let work = WorkRoot::new(&cache)?;
    let root = work.dir.join("root");
    require_ok(
        "tests/fresh-root.sh copy",
        &run(Command::new("sh").arg(&script).arg("copy").arg(&pristine).arg(&root))?,
    )?;
    let apt_cache = cache.join(format!("apt-archives-{suite}"));
    let cargo_cache = cache.join("cargo-registry");
    for d in [apt_cache.join("partial"), cargo_cache.clone()] {
        std::fs::create_dir_all(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    let mut binds = vec![
        ("--ro", sysroot.clone(), "/opt/rust".to_string()),
        ("--ro", repo.clone(), repo.to_string_lossy().into_owned()),
        ("--rw", apt_cache, "/var/cache/apt/archives".to_string()),
        ("--rw", cargo_cache, "/root/.cargo/registry".to_string()),
    ];
    if !common_dir.starts_with(&repo) {
        binds.push(("--ro", common_dir.clone(), common_dir.to_string_lossy().into_owned()));
    }
    // The clone goes to /root/loopkit, unless this repository is mounted there (same path as here).
    let mounted: Vec<PathBuf> = binds.iter().map(|(_, _, dst)| PathBuf::from(dst)).collect();
    let free = |p: &str| !mounted.iter().any(|m| overlaps(m, Path::new(p)));
    ensure!(
        free(STEPS) && free("/root/.cargo/bin"),
        "this repository's path overlaps {STEPS} or /root/.cargo in the fresh root"
    );
    let Some(clone) = ["/root/loopkit", "/root/fresh-clone/loopkit"].into_iter().find(|p| free(p)) else {
        return fail("no free path for the clone in the fresh root");
    };
    let r = Root { script: script.clone(), root: root.clone(), binds };
    eprintln!("fresh_machine: working copy ({})", secs(t));

    // 1. Clone the committed HEAD, then the README's command 1, as a user would.
    let t = Instant::now();
    let repo_s = repo.to_string_lossy();
    let out = r.step(
        "clone",
        "/root",
        &format!(
            "# the repository is someone else's directory in here\n\
             git config --global --add safe.directory '*'\n\
             git clone -q --no-local '{repo_s}' {clone}\n\
             cd {clone}\n\
             [ \"$(git rev-parse HEAD)\" = {head} ] || git checkout -q --detach {head}\n\
             git rev-parse HEAD\n"
        ),
        600,
    )?;
    require_ok("git clone in the fresh root", &out)?;
    ensure!(text(&out).trim() == head, "the clone is at {:?}, not at HEAD {head}", text(&out).trim());
    let out = r.step("readme-command-1", clone, &command_1, 2400)?;
    require_ok(&format!("README command 1 ({})", command_1.trim()), &out)?;
    require_verified("README command 1", &text(&out), &expected_sha256)?;
    eprintln!("fresh_machine: clone + README command 1 ({})", secs(t));

    // 2. The test-suite setup, then its check.
    let t = Instant::now();
    let out = r.step("setup", clone, "sh tests/setup.sh\n", 1800)?;
    require_ok("sh tests/setup.sh", &out)?;
    let out = r.step("setup-check", clone, "sh tests/setup.sh --check\n", 600)?;
    require_ok("sh tests/setup.sh --check", &out)?;
    eprintln!("fresh_machine: tests/setup.sh + --check ({})", secs(t));

    // 3. The .deb, built here, installed there with apt.
    let t = Instant::now();
    let debs = util::Scratch::new("fresh-deb");
    // The binary under test, packaged as it is (a `cargo build` now would replace it under the
    // tests running in parallel: see bin/build-deb.sh).
    let out = run(Command::new("sh")
        .arg(repo.join("bin/build-deb.sh"))
        .arg("--output")
        .arg(&debs.0)
        .env("LOOPKIT_DEB_PREBUILT", util::loopkit_bin()))?;
    require_ok("sh bin/build-deb.sh", &out)?;
    let deb = std::fs::read_dir(&debs.0)
        .map_err(|e| format!("read {}: {e}", debs.0.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("loopkit_") && n.to_string_lossy().ends_with(".deb"))
        });
    let Some(deb) = deb else {
        return fail(format!("bin/build-deb.sh made no loopkit_*.deb in {}", debs.0.display()));
    };
    let Some(deb_name) = deb.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return fail("no file name");
    };
    let inside = root.join(STEPS.trim_start_matches('/')).join(&deb_name);
    std::fs::copy(&deb, &inside).map_err(|e| format!("copy {} into the root: {e}", deb.display()))?;
    eprintln!("fresh_machine: bin/build-deb.sh ({})", secs(t));
    let t = Instant::now();
    let out = r.step(
        "install-deb",
        STEPS,
        &format!(
            "export DEBIAN_FRONTEND=noninteractive\n\
             apt-get update -q >/dev/null\n\
             apt-get install -y -q ./{deb_name} >&2\n\
             echo \"path $(command -v loopkit)\"\n\
             echo \"version $(loopkit --version)\"\n\
             echo \"man $(man -w loopkit)\"\n\
             for f in /usr/share/bash-completion/completions/loopkit /usr/share/zsh/vendor-completions/_loopkit \\\n\
                 /usr/share/fish/vendor_completions.d/loopkit.fish /usr/share/doc/loopkit/README.md \\\n\
                 /usr/share/doc/loopkit/docs/CLI.md; do\n\
                 [ -s \"$f\" ] || {{ echo \"missing $f\" >&2; exit 1; }}\n\
             done\n\
             dpkg-query -W -f='recommended ${{Package}} ${{Status}}\\n' cryptsetup gpg gpg-agent\n\
             cd {clone}\n\
             loopkit verify testdata/sample/archive-2008.img --passphrase-file testdata/sample/passphrase.txt\n"
        ),
        1200,
    )?;
    require_ok("installing the .deb and running loopkit from it", &out)?;
    let o = text(&out);
    let field = |k: &str| o.lines().find_map(|l| l.strip_prefix(&format!("{k} ")).map(str::to_string));
    ensure!(
        field("path").as_deref() == Some("/usr/bin/loopkit"),
        "loopkit on PATH is {:?}, not the package's",
        field("path")
    );
    let version = field("version").unwrap_or_default();
    ensure!(
        version.starts_with(&format!("loopkit {}", env!("CARGO_PKG_VERSION"))),
        "loopkit --version from the package printed {version:?}"
    );
    ensure!(field("man").as_deref() == Some("/usr/share/man/man1/loopkit.1.gz"), "man -w loopkit: {:?}", field("man"));
    for pkg in ["cryptsetup", "gpg", "gpg-agent"] {
        ensure!(
            o.lines().any(|l| l == format!("recommended {pkg} install ok installed")),
            "apt did not install the recommended {pkg}:\n{o}"
        );
    }
    require_verified("loopkit verify from the package", &o, &expected_sha256)?;
    eprintln!("fresh_machine: .deb installed and checked ({}); whole test {}", secs(t), secs(t_all));
    drop(work);
    Ok(Completion::Completed)
}
