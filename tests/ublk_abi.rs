//! The committed ublk UAPI bindings (`lib/ublk-sys/src/ublk_cmd.rs`) against the kernel's own
//! header: every constant (request numbers included), struct size, alignment and field offset in
//! the bindings must be what a C compiler makes of `linux/ublk_cmd.h` from the newest Debian
//! kernel's `linux-libc-dev` (trixie-backports, downloaded by `testdata/gen/apt-deb.sh` and
//! cached under `target/ublk-abi/`). The Rust side of each size and offset is the literal in
//! bindgen's layout tests, which `cargo test -p libublk-rs-sys` checks against rustc.

use crate::ensure;
use crate::util::{self, Scratch, TestResult, run, run_ok, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::collections::BTreeMap;
use std::process::Command;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("ublk_abi::bindings_match_the_kernel_header", bindings_match_the_kernel_header),
        trial("ublk_abi::build_needs_no_libclang", build_needs_no_libclang),
    ]
}

/// Nothing in the build graph for this machine's target runs bindgen (which needs libclang):
/// `cargo tree -e normal,build` names neither `bindgen` nor `clang-sys`.
fn build_needs_no_libclang() -> TestResult {
    if !util::have("cargo") {
        return util::skip("cargo is not on PATH");
    }
    let out =
        run_ok(Command::new("cargo").current_dir(util::repo_root()).args(["tree", "--locked", "-e", "normal,build"]))?;
    let tree = String::from_utf8_lossy(&out.stdout);
    ensure!(tree.contains("libublk-rs-sys v0.1.2 ("), "libublk-rs-sys is not the in-tree crate:\n{tree}");
    let hits: Vec<&str> = tree.lines().filter(|l| l.contains("bindgen") || l.contains("clang-sys")).collect();
    ensure!(hits.is_empty(), "the build runs bindgen/libclang:\n{}", hits.join("\n"));
    Ok(Completion::Completed)
}

/// What the bindings say: constants, and per struct its size, alignment and field offsets.
#[derive(Default)]
struct Bindings {
    consts: BTreeMap<String, i128>,
    sizes: BTreeMap<String, u64>,
    aligns: BTreeMap<String, u64>,
    offsets: Vec<(String, String, u64)>,
}

/// Differences from the kernel's header that are known and harmless, with the reason.
/// Field names: (struct, field in the bindings) → the kernel's name for the same bytes.
const RENAMED_FIELDS: &[(&str, &str, &str)] = &[
    // Kernels with UBLK_F_IO_DESC_SIZE name the former padding; same two bytes, and libublk
    // leaves them zero (the kernel's default descriptor size).
    ("ublksrv_ctrl_dev_info", "pad0", "io_desc_size"),
];
/// Structs the kernel has since grown at the end: the bindings' struct must be a prefix (every
/// field at the kernel's offset, size not larger). `ublk_params`: newer kernels append `dma`,
/// `seg` and `integrity`; libublk sends its own `len`, and the kernel copies
/// min(len, sizeof) and zeroes the rest (`ublk_ctrl_set_params`).
const GROWN_STRUCTS: &[&str] = &["ublk_params"];

fn parse_bindings(text: &str) -> Result<Bindings, Failed> {
    let mut b = Bindings::default();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else { continue };
        let Some((name, rest)) = rest.split_once(':') else { continue };
        let Some((_, value)) = rest.split_once('=') else { continue };
        let value = value.trim().trim_end_matches(';').trim();
        if let Ok(v) = value.parse::<i128>() {
            b.consts.insert(name.trim().to_string(), v);
        }
    }
    // bindgen's layout tests, whitespace removed: one function per struct.
    let flat: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    for func in flat.split("fnbindgen_test_layout_").skip(1) {
        let Some(name) = func.split('(').next().map(str::to_string) else { continue };
        let number = |after: &str| -> Option<u64> {
            let i = func.find(after)? + after.len();
            func[i..].split("usize").next()?.parse().ok()
        };
        let size = number(&format!("size_of::<{name}>(),"));
        let align = number(&format!("align_of::<{name}>(),"));
        let (Some(size), Some(align)) = (size, align) else {
            return Err(format!("no size/alignment assertion for {name} in the bindings").into());
        };
        b.sizes.insert(name.clone(), size);
        b.aligns.insert(name.clone(), align);
        for part in func.split("addr_of!((*ptr).").skip(1) {
            let Some((field, tail)) = part.split_once(')') else { continue };
            let Some(v) = tail.split_once("},").and_then(|(_, t)| t.split("usize").next()).and_then(|n| n.parse().ok())
            else {
                return Err(format!("cannot read the offset of {name}::{field} in the bindings").into());
            };
            b.offsets.push((name.clone(), field.to_string(), v));
        }
    }
    Ok(b)
}

/// The C spelling of a field bindgen renamed because it is a Rust keyword (`type` → `type_`).
fn c_field(s: &str, field: &str) -> String {
    if let Some((_, _, k)) = RENAMED_FIELDS.iter().find(|(st, f, _)| *st == s && *f == field) {
        return (*k).to_string();
    }
    match field.strip_suffix('_') {
        Some(k) if ["type", "ref", "move", "match", "fn", "loop", "where", "impl"].contains(&k) => k.to_string(),
        _ => field.to_string(),
    }
}

fn bindings_match_the_kernel_header() -> TestResult {
    if !util::have("cc") {
        return util::skip("no C compiler (cc) to read the kernel header with");
    }
    let text = std::fs::read_to_string(util::repo_root().join("lib/ublk-sys/src/ublk_cmd.rs"))
        .map_err(|e| format!("read the bindings: {e}"))?;
    let b = parse_bindings(&text)?;
    // Guard the parser itself: the bindings hold well over a hundred constants and a layout test
    // for every struct.
    let structs = text.matches(" pub struct ").count();
    ensure!(b.consts.len() >= 130, "only {} constants parsed from the bindings", b.consts.len());
    ensure!(
        b.sizes.len() + 1 >= structs && b.sizes.len() >= 15,
        "{} layout tests parsed for {structs} structs",
        b.sizes.len()
    );
    ensure!(b.offsets.len() >= 80, "only {} field offsets parsed", b.offsets.len());

    let cache = util::repo_root().join("target/ublk-abi");
    let got = run(Command::new("sh")
        .arg(util::repo_root().join("testdata/gen/apt-deb.sh"))
        .args(["trixie-backports", "linux-libc-dev"])
        .arg(&cache))?;
    let err = String::from_utf8_lossy(&got.stderr).trim().to_string();
    if util::code(&got) == 3 {
        return util::skip(format!("cannot get the kernel's UAPI headers: {err}"));
    }
    ensure!(got.status.success(), "apt-deb.sh failed: {err}");
    let root = std::path::PathBuf::from(String::from_utf8_lossy(&got.stdout).trim().to_string());
    let inc = root.join("usr/include");
    ensure!(inc.join("linux/ublk_cmd.h").is_file(), "{} has no linux/ublk_cmd.h", inc.display());

    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/errno.h>\n#include <linux/blkzoned.h>\n\
         #include <linux/ublk_cmd.h>\nint main(void) {\n",
    );
    for name in b.consts.keys() {
        c += &format!("  printf(\"const {name} %lld\\n\", (long long)({name}));\n");
    }
    for name in b.sizes.keys() {
        c += &format!("  printf(\"size {name} %zu\\n\", sizeof(struct {name}));\n");
        c += &format!("  printf(\"align {name} %zu\\n\", _Alignof(struct {name}));\n");
    }
    for (s, f, _) in &b.offsets {
        c += &format!("  printf(\"offset {s}.{f} %zu\\n\", offsetof(struct {s}, {}));\n", c_field(s, f));
    }
    for s in GROWN_STRUCTS {
        c += &format!("  printf(\"size {s} %zu\\n\", sizeof(struct {s}));\n");
    }
    c += "  return 0;\n}\n";
    let d = Scratch::new("ublk-abi");
    std::fs::write(d.path("abi.c"), &c).map_err(|e| format!("write abi.c: {e}"))?;
    // The downloaded headers come first; the multiarch asm directory of the package if it has one.
    let mut cc = Command::new("cc");
    cc.arg("-std=gnu11").arg("-I").arg(&inc);
    let multiarch = inc.join("x86_64-linux-gnu");
    if multiarch.is_dir() {
        cc.arg("-I").arg(multiarch);
    }
    run_ok(cc.arg("-o").arg(d.path("abi")).arg(d.path("abi.c")))?;
    let out = run_ok(&mut Command::new(d.path("abi")))?;
    let mut kernel: BTreeMap<String, i128> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut w = line.split_whitespace();
        if let (Some(kind), Some(key), Some(v)) = (w.next(), w.next(), w.next()) {
            let v: i128 = v.parse().map_err(|e| format!("bad line {line:?}: {e}"))?;
            kernel.insert(format!("{kind} {key}"), v);
        }
    }

    let mut bad = Vec::new();
    let mut checked = 0usize;
    let mut cmp = |key: String, rust: i128| match kernel.get(&key) {
        Some(&k) if k == rust => checked += 1,
        Some(&k) => bad.push(format!("{key}: bindings {rust}, kernel {k}")),
        None => bad.push(format!("{key}: not printed by the C program")),
    };
    for (n, v) in &b.consts {
        cmp(format!("const {n}"), *v);
    }
    for (n, v) in &b.aligns {
        cmp(format!("align {n}"), i128::from(*v));
    }
    for (s, f, v) in &b.offsets {
        cmp(format!("offset {s}.{f}"), i128::from(*v));
    }
    for (n, v) in &b.sizes {
        if GROWN_STRUCTS.contains(&n.as_str()) {
            continue;
        }
        cmp(format!("size {n}"), i128::from(*v));
    }
    for s in GROWN_STRUCTS {
        let rust = b.sizes.get(*s).copied().ok_or_else(|| format!("{s} not in the bindings"))?;
        let k = kernel.get(&format!("size {s}")).copied().unwrap_or(0);
        if i128::from(rust) > k {
            bad.push(format!("size {s}: bindings {rust} larger than the kernel's {k}"));
        } else {
            checked += 1;
        }
    }
    ensure!(bad.is_empty(), "the bindings differ from {}:\n{}", inc.display(), bad.join("\n"));
    let deb = std::fs::read_to_string(root.parent().unwrap_or(&root).join("DEB")).unwrap_or_default();
    eprintln!("ublk_abi: {checked} values agree with {}", deb.split_whitespace().nth(1).unwrap_or("the header"));
    Ok(Completion::Completed)
}
