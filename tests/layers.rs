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

/// The longest a function outside tests may be, in lines from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 100;

/// Functions over [`MAX_FN_LINES`] that are still to be split into phases: (file under the
/// repository root, function name). The check fails for a long function not listed here and for
/// a listed one that is no longer long, so the list only shrinks.
const LONG_FNS_TO_SPLIT: &[(&str, &str)] = &[];

/// `text` with comments, string and character literals blanked to spaces (line breaks kept), so
/// braces and `fn` inside them are not code. Lifetimes (`'a`) stay.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, s: &[char]| {
        out.extend(s.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let start = i;
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0usize;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
            && matches!(c.get(i + 1), Some('"' | '#'))
            && {
                let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
                c.get(i + 1 + hashes) == Some(&'"')
            }
        {
            // Raw string r"…", r#"…"#: ends at a quote followed by as many hashes.
            let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
            i += hashes + 2;
            while i < c.len()
                && !(c[i] == '"' && c[i + 1..].iter().take(hashes).filter(|&&ch| ch == '#').count() == hashes)
            {
                i += 1;
            }
            i = (i + 1 + hashes).min(c.len());
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(c.len());
        } else if c[i] == '\'' && (c.get(i + 1) == Some(&'\\') || c.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\u{1F600}'), not a lifetime.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(c.len());
        } else {
            out.push(c[i]);
            i += 1;
            continue;
        }
        let end = i.min(c.len());
        blank(&mut out, &c[start..end]);
    }
    out
}

/// The index just past the brace that closes the one at `open` (or the end of `code`).
fn matching_brace(code: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, &b) in code.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// Byte ranges of test-only items: what follows `#[cfg(test)]` or `#[test]` up to its `;` or the
/// brace closing its body.
fn test_ranges(code: &str) -> Vec<std::ops::Range<usize>> {
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    for attr in ["#[cfg(test)]", "#[test]"] {
        for (at, _) in code.match_indices(attr) {
            let rest = &bytes[at + attr.len()..];
            let Some(k) = rest.iter().position(|&b| b == b'{' || b == b';') else { continue };
            let end =
                if rest[k] == b';' { at + attr.len() + k + 1 } else { matching_brace(bytes, at + attr.len() + k) };
            out.push(at..end);
        }
    }
    out
}

/// Every function with a body in `text` outside test-only items: (name, first line, length in
/// lines from the `fn` line to the closing brace, both counted).
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let code = code_only(text);
    let bytes = code.as_bytes();
    let tests = test_ranges(&code);
    let line_of = |pos: usize| code[..pos].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (at, _) in code.match_indices("fn") {
        let before_ok = at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let after = &code[at + 2..];
        let name: String = after.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        // `fn name`: a function item, not `fn(…)` (a pointer type) or part of another word.
        if !before_ok || !after.starts_with(char::is_whitespace) || name.is_empty() {
            continue;
        }
        if tests.iter().any(|r| r.contains(&at)) {
            continue;
        }
        let Some(k) = after.bytes().position(|b| b == b'{' || b == b';') else { continue };
        if after.as_bytes()[k] == b';' {
            continue; // a declaration without a body (trait method, extern)
        }
        let end = matching_brace(bytes, at + 2 + k);
        let (first, last) = (line_of(at), line_of(end.saturating_sub(1)));
        out.push((name, first, last - first + 1));
    }
    out
}

/// Every `.rs` file of the library and the CLI; tests (unit test files, `tests/`) are not code
/// this check is about.
fn code_files() -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    walk(&repo_root().join("lib"), &mut files)?;
    walk(&repo_root().join("bin"), &mut files)?;
    files.retain(|f| f.file_name().is_none_or(|n| n != "tests.rs"));
    files.sort();
    Ok(files)
}

/// No function in `lib/` or `bin/` outside tests is longer than [`MAX_FN_LINES`] lines (from its
/// `fn` line to its closing brace); a long one is split into named phases. Measured on the text
/// with comments and literals blanked, so a brace in a string does not count.
fn no_long_functions() -> TestResult {
    let root = repo_root();
    let mut long = Vec::new();
    for f in code_files()? {
        let rel = f.strip_prefix(&root).unwrap_or(&f).to_string_lossy().into_owned();
        for (name, line, len) in functions(&std::fs::read_to_string(&f)?) {
            if len > MAX_FN_LINES {
                long.push((rel.clone(), name, line, len));
            }
        }
    }
    let mut bad: Vec<String> = long
        .iter()
        .filter(|(file, name, ..)| !LONG_FNS_TO_SPLIT.contains(&(file.as_str(), name.as_str())))
        .map(|(file, name, line, len)| format!("{file}:{line}: fn {name} is {len} lines (over {MAX_FN_LINES})"))
        .collect();
    for (file, name) in LONG_FNS_TO_SPLIT {
        if !long.iter().any(|(f, n, ..)| f == file && n == name) {
            bad.push(format!("{file}: fn {name} is listed in LONG_FNS_TO_SPLIT but is not long (any more): remove it"));
        }
    }
    crate::ensure!(bad.is_empty(), "function length:\n{}", bad.join("\n"));
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![trial("layers::no_upward_imports", no_upward_imports), trial("layers::no_long_functions", no_long_functions)]
}
