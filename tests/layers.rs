//! The layer check: every `crate::MODULE` reference in `lib/` must point to the same
//! module or a lower layer of `docs/ARCHITECTURE.md`'s diagram, so the library has no import
//! cycles between modules. Test modules (`#[cfg(test)]` onwards) and comments are not checked.
//! The ranks below are the diagram, top to bottom; the test also checks that the diagram lists
//! every module in that order, so the two cannot drift apart.

use crate::util::{TestResult, repo_root, trial};
use libtest_mimic::{Completion, Trial};
use std::path::Path;

/// Top-level library modules, highest layer first. Modules in one group are one layer and may
/// not import each other (that would allow a cycle): only strictly lower layers.
const LAYERS: &[&[&str]] = &[
    &["fuzzing"],
    &["batch"],
    &["report"],
    &["migrate"],
    &["attach"],
    &["mount"],
    &["verify"],
    &["extract"],
    &["manifest"],
    &["image"],
    &["detect"],
    &["formats"],
    &["fs"],
    &["volume"],
    &["remap"],
    &["crypto"],
    &["output", "pipeline"],
    &["source"],
    &["extent"],
    &["progress"],
    &["sys"],
    &["bytes", "finding", "error"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// `crate::NAME` references outside comments and test modules, with line numbers.
fn references(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + 7..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                out.push((n + 1, name));
            }
        }
    }
    out
}

fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            // A directory with its own Cargo.toml is a separate crate (lib/ublk-sys), not a module.
            if !p.join("Cargo.toml").exists() {
                walk(&p, files)?;
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
    Ok(())
}

fn no_upward_imports() -> TestResult {
    let lib = repo_root().join("lib");
    let mut files = Vec::new();
    walk(&lib, &mut files)?;
    files.sort();
    let mut bad = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&lib).unwrap_or(f);
        let module = rel.iter().next().and_then(|c| c.to_str()).unwrap_or("").trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let Some(from) = rank(&module) else {
            bad.push(format!("{}: module {module} is not in the layer table", rel.display()));
            continue;
        };
        for (line, target) in references(&std::fs::read_to_string(f)?) {
            if target == module || matches!(target.as_str(), "Error" | "ErrorKind" | "Result") {
                continue;
            }
            match rank(&target) {
                None => bad.push(format!("{}:{line}: crate::{target} is not in the layer table", rel.display())),
                Some(to) if to <= from => bad.push(format!(
                    "{}:{line}: {module} imports crate::{target}, which is {} layer",
                    rel.display(),
                    if to == from { "the same" } else { "a higher" }
                )),
                Some(_) => {}
            }
        }
    }
    // The diagram names each module's file or directory at the start of a line, in this order.
    let arch = std::fs::read_to_string(repo_root().join("docs/ARCHITECTURE.md"))?;
    let mut last = 0;
    for layer in LAYERS {
        for m in *layer {
            let pos = [format!("lib/{m}.rs"), format!("lib/{m}/")]
                .iter()
                .filter_map(|needle| arch.find(&format!("\n{needle}")))
                .min();
            match pos {
                None => bad.push(format!("docs/ARCHITECTURE.md: the layer diagram does not list lib/{m}")),
                Some(p) if p < last => {
                    bad.push(format!("docs/ARCHITECTURE.md: lib/{m} is listed above a higher layer"))
                }
                Some(p) => last = p,
            }
        }
    }
    crate::ensure!(bad.is_empty(), "layer violations:\n{}", bad.join("\n"));
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![trial("layers::no_upward_imports", no_upward_imports)]
}
