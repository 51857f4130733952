//! The layer check: every `crate::MODULE` reference in `lib/` must point to the same
//! module or a lower layer of `docs/ARCHITECTURE.md`'s diagram, so the library has no import
//! cycles between modules. Test modules (`#[cfg(test)]` onwards) and comments are not checked.
//! The ranks below are the diagram, top to bottom; the test also checks that the diagram lists
//! every module in that order, so the two cannot drift apart.
//!
//! Below the top level, [`SUBLAYERS`] orders the submodules of some modules the same way
//! (`crate::fs::ext` and `super::ext` both count; a name the module's root re-exports counts as
//! the submodule it comes from, and one the root defines itself as the root, which is above all
//! of them), so there is no cycle inside those modules either.

use crate::util::{TestResult, repo_root, trial};
use libtest_mimic::{Completion, Trial};
use std::path::Path;

/// Top-level library modules, highest layer first. Modules in one group are one layer and may
/// not import each other (that would allow a cycle): only strictly lower layers.
const LAYERS: &[&[&str]] = &[
    &["fuzzing"],
    &["report"],
    &["batch"],
    &["migrate"],
    &["attach"],
    &["rescue"],
    &["mount"],
    &["verify"],
    &["extract", "bag"],
    &["damage"],
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

/// Submodules of a module, highest layer first, with the same rule as [`LAYERS`]; the module's
/// `mod.rs` is the facade above them all.
const SUBLAYERS: &[(&str, &[&[&str]])] = &[
    // probe identifies with the readers' parsers; the readers build the tree model; kind is the
    // vocabulary (FsKind, Strictness) all of them share.
    ("fs", &[&["probe"], &["ext", "iso9660"], &["tree"], &["kind"]]),
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

/// The identifiers an import path names after `rest` (which follows a `::`): `a` for `a::b`,
/// and `a`, `b` for `{a, b::c, self}`.
fn heads(rest: &str) -> Vec<String> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let Some(inner) = rest.strip_prefix('{') else { return vec![ident(rest)] };
    let mut out = Vec::new();
    let (mut depth, mut item_start) = (0usize, true);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                item_start = false;
                out.push(ident(&inner[i..]));
            }
            _ => {}
        }
    }
    out.retain(|n| !n.is_empty());
    out
}

/// Second-level references inside `module`: `crate::MODULE::NAME` anywhere, and `super::NAME`
/// when `super` is `module` (files directly in its directory, or a submodule's `mod.rs`).
fn sub_references(text: &str, module: &str, super_is_module: bool) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let prefix = format!("crate::{module}::");
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        let code = line.split("//").next().unwrap_or("");
        for p in [prefix.as_str(), "super::"] {
            if p == "super::" && !super_is_module {
                continue;
            }
            let mut rest = code;
            while let Some(i) = rest.find(p) {
                rest = &rest[i + p.len()..];
                if p == "super::" && rest.starts_with("super::") {
                    // `super::super::…` leaves the module: the top-level check's business.
                    rest = rest.trim_start_matches("super::");
                    continue;
                }
                out.extend(heads(rest).into_iter().map(|h| (n + 1, h)));
            }
        }
    }
    out
}

/// What a module's root re-exports: name → the submodule it comes from (`pub use sub::{A, b};`).
fn reexports(root: &str) -> std::collections::HashMap<String, String> {
    let mut map = std::collections::HashMap::new();
    for line in root.lines() {
        let Some(rest) = line.trim_start().strip_prefix("pub use ") else { continue };
        let sub: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let Some(after) = rest.get(sub.len()..).and_then(|r| r.strip_prefix("::")) else { continue };
        for name in heads(after) {
            map.insert(name, sub.clone());
        }
    }
    map
}

/// The [`SUBLAYERS`] check: no reference inside a module points to a higher or same-rank
/// submodule, or to a name its root defines.
fn sub_violations(lib: &Path, files: &[std::path::PathBuf], bad: &mut Vec<String>) -> std::io::Result<()> {
    for (module, layers) in SUBLAYERS {
        let rank = |sub: &str| layers.iter().position(|l| l.contains(&sub));
        let dir = lib.join(module);
        let root = std::fs::read_to_string(dir.join("mod.rs"))?;
        let exported = reexports(&root);
        for f in files.iter().filter(|f| f.starts_with(&dir)) {
            let rel = f.strip_prefix(&dir).unwrap_or(f);
            let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
            let sub = parts[0].trim_end_matches(".rs");
            if sub == "mod" {
                continue;
            }
            let Some(from) = rank(sub) else {
                bad.push(format!("lib/{module}/{}: submodule {sub} is not in the sublayer table", rel.display()));
                continue;
            };
            let super_is_module = parts.len() == 1 || parts.get(1) == Some(&"mod.rs");
            for (line, name) in sub_references(&std::fs::read_to_string(f)?, module, super_is_module) {
                let target = if rank(&name).is_some() {
                    name.clone()
                } else if let Some(s) = exported.get(&name) {
                    s.clone()
                } else if name == "self" {
                    continue;
                } else {
                    // Defined by the root itself, which sits above every submodule.
                    String::from("mod")
                };
                if target == sub {
                    continue;
                }
                match rank(&target) {
                    Some(to) if to > from => {}
                    _ => bad.push(format!(
                        "lib/{module}/{}:{line}: {module}::{sub} uses {module}::{name} ({}), which is not a lower layer",
                        rel.display(),
                        if target == "mod" { "the root".to_string() } else { format!("in {target}") }
                    )),
                }
            }
        }
    }
    Ok(())
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
    sub_violations(&lib, &files, &mut bad)?;
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
