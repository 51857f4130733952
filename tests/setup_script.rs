//! `tests/setup.sh --check`: on the machine the suite runs on it reports
//! complete (tests/run-all.sh runs `tests/setup.sh` first), and with lists naming things that are
//! not there it exits 1 and names exactly those, the Python one with the interpreter the tests
//! run ([`util::python`], also through `LOOPKIT_PYTHON`).

use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, run, trial};
use libtest_mimic::{Completion, Trial};
use std::path::Path;
use std::process::Command;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("setup_script::check_reports_complete", check_reports_complete),
        trial("setup_script::check_names_exactly_what_is_missing", check_names_exactly_what_is_missing),
    ]
}

const FAKE_APT: &str = "loopkit-test-no-such-package";
const FAKE_MODULE: &str = "loopkit_test_no_such_module";
const FAKE_TOOL: &str = "loopkit-test-no-such-tool";

fn setup_check() -> Command {
    let mut c = Command::new("sh");
    c.arg(util::repo_root().join("tests/setup.sh")).arg("--check");
    c
}

fn not_debian() -> Option<String> {
    (!util::have("dpkg-query")).then(|| "no dpkg-query: tests/setup.sh checks Debian packages".to_string())
}

fn show(o: &std::process::Output) -> String {
    format!("stdout:\n{}stderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn check_reports_complete() -> TestResult {
    if let Some(why) = not_debian() {
        return util::skip(why);
    }
    let o = run(&mut setup_check())?;
    ensure!(
        code(&o) == 0 && String::from_utf8_lossy(&o.stdout).trim_end().ends_with("setup: complete"),
        "`sh tests/setup.sh --check` exit {} (this machine lacks what the suite needs; run `sh tests/setup.sh` \
         as root):\n{}",
        code(&o),
        show(&o)
    );
    Ok(Completion::Completed)
}

fn check_names_exactly_what_is_missing() -> TestResult {
    if let Some(why) = not_debian() {
        return util::skip(why);
    }
    if let Some(why) = util::python_missing() {
        return util::skip(why);
    }
    let d = Scratch::new("setup-check");
    // One present and one missing item of each kind; comments and blank lines are ignored.
    let apt = d.path("apt.txt");
    std::fs::write(&apt, format!("# present\ncoreutils\n\n{FAKE_APT}   # missing\n")).map_err(|e| e.to_string())?;
    let py = d.path("python.txt");
    std::fs::write(&py, format!("# IMPORT PIP DEBIAN WHERE\njson - - tests\n{FAKE_MODULE}\t-\t-\ttests\n"))
        .map_err(|e| e.to_string())?;
    let cargo = d.path("cargo.txt");
    std::fs::write(&cargo, format!("# BINARY CRATE VERSION\n{FAKE_TOOL} {FAKE_TOOL} 0.0.1\n"))
        .map_err(|e| e.to_string())?;
    let with_lists = |c: &mut Command| {
        c.env("LOOPKIT_SETUP_APT_LIST", &apt)
            .env("LOOPKIT_SETUP_PYTHON_LIST", &py)
            .env("LOOPKIT_SETUP_CARGO_LIST", &cargo);
    };
    let expect = |o: &std::process::Output, interpreter: &Path| -> TestResult {
        let out = String::from_utf8_lossy(&o.stdout);
        // (The device line depends on this machine, not on the lists: not part of this check.)
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with("missing device ")).collect();
        let want_python = format!("missing python {FAKE_MODULE} (python3 = {})", interpreter.display());
        ensure!(
            code(o) == 1
                && lines.len() == 3
                && lines[0] == format!("missing apt {FAKE_APT}")
                && lines[1] == want_python
                && lines[2].starts_with(&format!("missing cargo-tool {FAKE_TOOL} (")),
            "want exit 1 and exactly: missing apt {FAKE_APT} / {want_python} / missing cargo-tool {FAKE_TOOL} (…); \
             got exit {}\n{}",
            code(o),
            show(o)
        );
        Ok(Completion::Completed)
    };
    // The tests' interpreter, as the tests resolve it.
    let mut c = setup_check();
    with_lists(&mut c);
    expect(&run(&mut c)?, &util::python())?;
    // LOOPKIT_PYTHON names another interpreter (a wrapper around the same one): the check uses it.
    let wrapper = d.path("python-wrapper");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec '{}' \"$@\"\n", util::python().display()))
        .map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let mut c = setup_check();
    with_lists(&mut c);
    c.env(util::PYTHON_ENV, &wrapper);
    expect(&run(&mut c)?, &wrapper)?;
    Ok(Completion::Completed)
}
