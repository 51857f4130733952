//! Shared fixtures of the file-system tests: `testdata/gen/fs-images.sh` run once per test run
//! and cached under `target/fixtures/fs-<hash of the generator scripts>/`.

use crate::util::{self, Scratch, have, run, run_ok};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `let f = fixtures_or_skip!();`: the fixtures, or return a skip with the reason.
#[macro_export]
macro_rules! fixtures_or_skip {
    () => {
        match $crate::fs_fixtures::fixtures() {
            Ok(f) => f,
            Err(r) => return $crate::util::skip(r),
        }
    };
}

/// The built fixtures.
pub struct Fixtures {
    pub dir: PathBuf,
}

impl Fixtures {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// One image and the oracle manifest it must equal.
pub struct Case {
    pub image: &'static str,
    pub want: &'static str,
    pub tree: &'static str,
    pub encrypted: bool,
}

/// Every image with its source tree and oracle.
pub const CASES: &[Case] = &[
    Case { image: "ext2-1k.img", want: "want.json", tree: "tree", encrypted: false },
    Case { image: "ext3.img", want: "want.json", tree: "tree", encrypted: false },
    Case { image: "ext4.img", want: "want.json", tree: "tree", encrypted: false },
    Case { image: "ext4-64k.img", want: "want.json", tree: "tree", encrypted: false },
    Case { image: "ext4-inline.img", want: "want-inline.json", tree: "tree-inline", encrypted: false },
    Case { image: "ext4-metabg.img", want: "want.json", tree: "tree", encrypted: false },
    Case { image: "iso-rr.iso", want: "want.json", tree: "tree", encrypted: false },
    Case { image: "iso-xorriso.iso", want: "want.json", tree: "tree", encrypted: false },
    Case { image: "iso-rrj.iso", want: "want-utf8.json", tree: "tree-utf8", encrypted: false },
    Case { image: "iso-joliet.iso", want: "want-joliet.json", tree: "tree-joliet", encrypted: false },
    Case { image: "cryptoloop-ext4.img", want: "want.json", tree: "tree", encrypted: true },
    Case { image: "loopaes-ext2.img", want: "want.json", tree: "tree", encrypted: true },
];

/// Tools the fixtures need (and the tests' Python, [`util::python`], with `cryptography`).
pub const TOOLS: &[&str] = &["mkfs.ext4", "e2fsck", "debugfs", "genisoimage", "xorriso", "aespipe"];

fn missing() -> Option<String> {
    let gone: Vec<&str> = TOOLS.iter().copied().filter(|t| !have(t)).collect();
    if !gone.is_empty() {
        return Some(format!("missing tools: {}", gone.join(", ")));
    }
    util::python_module_missing("cryptography")
}

/// Build (or reuse) the fixtures; `Err(reason)` to skip when tools are missing.
pub fn fixtures() -> Result<&'static Fixtures, String> {
    static F: OnceLock<Result<Fixtures, String>> = OnceLock::new();
    F.get_or_init(|| {
        if let Some(r) = missing() {
            return Err(r);
        }
        let gendir = util::repo_root().join("testdata/gen");
        let mut key = String::new();
        for s in ["fs-images.sh", "tree.py", "manifest.py", "legacy.py"] {
            let h = util::sha256_file(&gendir.join(s)).map_err(|e| format!("{e:?}"))?;
            key.push_str(&h[..8.min(h.len())]);
        }
        let dir = util::repo_root().join("target/fixtures").join(format!("fs-{key}"));
        if !dir.join("done").exists() {
            let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            let out =
                run(Command::new("bash").arg(gendir.join("fs-images.sh")).arg(&tmp)).map_err(|e| format!("{e:?}"))?;
            if !out.status.success() {
                return Err(format!("fs-images.sh failed: {}", String::from_utf8_lossy(&out.stderr)));
            }
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir).map_err(|e| format!("rename fixtures: {e}"))?;
        }
        Ok(Fixtures { dir })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// `loopkit ARGS` for `case`'s image (with the passphrase when encrypted).
pub fn loopkit_on(f: &Fixtures, case: &Case, args: &[&str]) -> Command {
    let mut c = util::loopkit(args);
    c.arg(f.path(case.image));
    if case.encrypted {
        c.arg("--passphrase-file").arg(f.path("pass"));
    }
    c
}

/// The `entries` of a manifest file or output.
pub fn entries(bytes: &[u8]) -> Result<Vec<serde_json::Value>, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    v["entries"].as_array().cloned().ok_or_else(|| "no entries array".to_string())
}

/// Describe how two entry lists differ (empty when equal).
pub fn diff(got: &[serde_json::Value], want: &[serde_json::Value]) -> String {
    use std::collections::BTreeMap;
    let key = |e: &serde_json::Value| e["path"].as_str().unwrap_or("").to_string();
    let g: BTreeMap<String, &serde_json::Value> = got.iter().map(|e| (key(e), e)).collect();
    let w: BTreeMap<String, &serde_json::Value> = want.iter().map(|e| (key(e), e)).collect();
    let mut out = Vec::new();
    for (p, e) in &w {
        match g.get(p) {
            None => out.push(format!("missing {p}")),
            Some(x) if x != e => out.push(format!("differs {p}: got {x} want {e}")),
            _ => {}
        }
    }
    for p in g.keys().filter(|p| !w.contains_key(*p)) {
        out.push(format!("extra {p}"));
    }
    if out.is_empty() && got != want {
        out.push("same entries in a different order".into());
    }
    out.truncate(10);
    out.join("\n")
}

/// Copy a fixture image into a scratch dir (for tests that damage it).
pub fn copy_image(f: &Fixtures, name: &str, to: &Scratch) -> Result<PathBuf, libtest_mimic::Failed> {
    let dst = to.path(name);
    run_ok(Command::new("cp").arg("--sparse=always").arg(f.path(name)).arg(&dst))?;
    Ok(dst)
}

/// Whether `p` exists without following a final symlink.
pub fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}
