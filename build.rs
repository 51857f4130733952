//! Build script: the git revision for `loopkit --version` (`LOOPKIT_GIT_REV`), falling back to
//! nothing (just the crate version) when the source is not a git checkout or git is missing.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LOOPKIT_GIT_REV");
    if let Ok(rev) = std::env::var("LOOPKIT_GIT_REV") {
        println!("cargo:rustc-env=LOOPKIT_GIT_REV={rev}");
        return;
    }
    // Rebuild when HEAD moves: HEAD itself, its reflog (appended on every commit and checkout),
    // the branch it points to, packed refs. Only files that exist: cargo treats a missing
    // rerun-if-changed file as always changed (a repository without packed-refs rebuilt loopkit
    // on every `cargo build`).
    for p in [
        Some("HEAD".to_string()),
        Some("logs/HEAD".to_string()),
        git(&["symbolic-ref", "-q", "HEAD"]),
        Some("packed-refs".to_string()),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(path) = git(&["rev-parse", "--git-path", &p])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let rev = git(&["rev-parse", "--short=12", "HEAD"]);
    println!("cargo:rustc-env=LOOPKIT_GIT_REV={}", rev.unwrap_or_default());
}
