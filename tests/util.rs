//! Shared test helpers: the loopkit binary, scratch directories, running commands, hashing
//! files, and skipping with a reason when a tool is missing.

#![allow(dead_code)]

use libtest_mimic::{Completion, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A test body: `Ok(Completion::Completed)`, `Ok(Completion::ignored_with(reason))`, or `Err`.
pub type TestResult = Result<Completion, Failed>;

/// Register a test function.
pub fn trial(name: &str, f: fn() -> TestResult) -> Trial {
    Trial::ignorable_test(name, f)
}

/// Skip (report as ignored) with a reason, unless `LOOPKIT_REQUIRE_ALL_TESTS=1`, which CI sets
/// for tests whose tools it installs: there a skip is a failure.
pub fn skip(reason: impl Into<String>) -> TestResult {
    let reason = reason.into();
    if std::env::var_os("LOOPKIT_REQUIRE_ALL_TESTS").is_some_and(|v| v == "1") {
        return Err(format!("required test could not run: {reason}").into());
    }
    Ok(Completion::ignored_with(reason))
}

/// Fail with a message.
pub fn fail<T>(msg: impl Into<String>) -> Result<T, Failed> {
    Err(msg.into().into())
}

/// `ensure!(cond, "message {}", x)`: fail the test with the message unless `cond`.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

/// Path of the loopkit binary under test.
pub fn loopkit_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("LOOPKIT_BIN") {
        return PathBuf::from(p);
    }
    // Cargo builds the binary for integration tests and says where (never a guessed path).
    PathBuf::from(env!("CARGO_BIN_EXE_loopkit"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool} >/dev/null 2>&1")).status().is_ok_and(|s| s.success())
}

/// The environment variable naming the Python interpreter the tests run (default: the first
/// `python3` on PATH). `tests/setup.sh` honours it too, so it installs the modules for this one.
pub const PYTHON_ENV: &str = "LOOPKIT_PYTHON";

/// The Python interpreter the oracles run: `$LOOPKIT_PYTHON`, else `python3`, resolved on PATH
/// the way `tests/setup.sh` resolves it (`command -v`), so both name the same file. Unresolved
/// (not found) it is returned as given, and running it fails with that name.
pub fn python() -> PathBuf {
    let name = std::env::var_os(PYTHON_ENV).filter(|v| !v.is_empty()).unwrap_or_else(|| "python3".into());
    let given = PathBuf::from(&name);
    if given.as_os_str().as_encoded_bytes().contains(&b'/') {
        return given;
    }
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(&name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .unwrap_or(given)
}

/// `Some(reason)` when the tests' interpreter ([`python()`]) cannot import `module`; the reason
/// names the interpreter and how to install what is missing.
pub fn python_module_missing(module: &str) -> Option<String> {
    python_fails(&format!("import {module}"), &format!("cannot import {module}"))
}

/// `Some(reason)` when the tests' interpreter ([`python()`]) cannot run at all.
pub fn python_missing() -> Option<String> {
    python_fails("pass", "cannot run")
}

fn python_fails(code: &str, what: &str) -> Option<String> {
    let py = python();
    let out =
        Command::new(&py).args(["-c", code]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).output();
    let why = match out {
        Ok(o) if o.status.success() => return None,
        Ok(o) => String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("").trim().to_string(),
        Err(e) => e.to_string(),
    };
    Some(format!(
        "python3 = {} {what} ({why}); run `sh tests/setup.sh` as root (`sh tests/setup.sh --check` \
         lists what is missing; ${PYTHON_ENV} picks another interpreter)",
        py.display()
    ))
}

/// A fresh scratch directory, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let base = std::env::var_os("LOOPKIT_TEST_TMP").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        let p = base.join(format!("loopkit-test-{}-{}-{}", name, std::process::id(), unique()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        Scratch(p)
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("LOOPKIT_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Run a command, capturing output.
pub fn run(cmd: &mut Command) -> Result<Output, Failed> {
    cmd.stdin(Stdio::null()).output().map_err(|e| format!("cannot run {cmd:?}: {e}").into())
}

/// Run a command and require exit status 0.
pub fn run_ok(cmd: &mut Command) -> Result<Output, Failed> {
    let out = run(cmd)?;
    if !out.status.success() {
        return fail(format!(
            "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// `loopkit ARGS…` as a Command.
pub fn loopkit(args: &[&str]) -> Command {
    let mut c = Command::new(loopkit_bin());
    c.args(args);
    c
}

/// SHA-256 of a file, computed with `sha256sum` (an independent implementation).
pub fn sha256_file(p: &Path) -> Result<String, Failed> {
    let out = run_ok(Command::new("sha256sum").arg(p))?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string())
}

/// Exit code of an output (signals map to 128+n like a shell).
pub fn code(out: &Output) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0))
}

/// Parse stdout as exactly one JSON document.
pub fn json(out: &Output) -> Result<serde_json::Value, Failed> {
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("stdout is not one JSON document ({e}):\n{}", String::from_utf8_lossy(&out.stdout)).into())
}

pub fn trials() -> Vec<Trial> {
    vec![trial("util::binary_exists", || {
        ensure!(loopkit_bin().exists(), "loopkit binary not found at {} (build it first)", loopkit_bin().display());
        Ok(Completion::Completed)
    })]
}
