//! `loopkit protect` writes the same bytes as `dvdisaster -c` 0.79.5. For each case the same
//! input is protected by both (dvdisaster through `testdata/gen/ecc.py`: under `ulimit -f`, a
//! timeout, never fewer than 32 roots, the roots it printed checked), and the outputs are
//! compared with `cmp`; `dvdisaster -t` must accept loopkit's output, and damage made in it
//! (dvdisaster's own dead-sector markers and byte flips) must be found by `loopkit verify` and
//! undone by `loopkit repair` — the repaired file compared with `cmp` against the undamaged one.
//! Inputs are small raw files whose size is not a multiple of anything, a genisoimage ISO and a
//! sparse file.

use crate::ecc_verify::{augment, ecc_py, iso_input, p, prerequisites, raw_input};
use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `loopkit protect --json -q IMAGE ARGS…` → (exit code, JSON); the image must be unchanged.
fn protect(img: &Path, args: &[&str]) -> Result<(i32, serde_json::Value), Failed> {
    let before = sha256_file(img)?;
    let mut cmd = loopkit(&["protect", "--json", "-q", p(img)]);
    cmd.args(args);
    let o = run(&mut cmd)?;
    ensure!(sha256_file(img)? == before, "protect modified its input {}", img.display());
    let c = code(&o);
    ensure!(c <= 2, "protect exit {c} (crash?): {}", String::from_utf8_lossy(&o.stderr));
    Ok((c, json(&o)?))
}

/// `cmp A B` (the independent byte comparison).
fn same_bytes(a: &Path, b: &Path) -> Result<(), Failed> {
    let o = run(Command::new("cmp").arg(a).arg(b))?;
    ensure!(
        o.status.success(),
        "{} and {} differ: {}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&o.stdout).trim()
    );
    Ok(())
}

/// `dvdisaster -t` on loopkit's output: no missing sectors, no CRC errors, block test passed
/// (RS03), MD5s good (RS01/RS02).
fn dvdisaster_accepts(image: &Path, ecc: Option<&Path>, capacity: Option<u64>, what: &str) -> Result<(), Failed> {
    let t = crate::ecc_verify::oracle(image, ecc, capacity)?;
    let empty = |k: &str| t[k].as_array().is_some_and(|a| a.is_empty());
    ensure!(
        empty("missing") && empty("crc_errors") && empty("missing_ecc_file"),
        "{what}: dvdisaster -t finds damage in loopkit's output: {}",
        t["lines"]
    );
    ensure!(t["exit"] == 0, "{what}: dvdisaster -t exit {}: {}", t["exit"], t["lines"]);
    if t.get("ecc_blocks_bad").is_some() {
        ensure!(t["ecc_blocks_bad"] == 0, "{what}: dvdisaster block test failed: {}", t["lines"]);
    }
    for k in ["crc_md5", "ecc_md5"] {
        if let Some(v) = t.get(k) {
            ensure!(v == "good", "{what}: dvdisaster reports {k} {v}");
        }
    }
    Ok(())
}

/// A sparse input: `bytes` long, data only in a few places (the rest holes).
fn sparse_input(d: &Scratch, name: &str, bytes: u64) -> Result<PathBuf, Failed> {
    let f = d.path(name);
    let file = std::fs::File::create(&f).map_err(|e| format!("create {}: {e}", f.display()))?;
    file.set_len(bytes).map_err(|e| format!("set_len: {e}"))?;
    for (k, at) in [0u64, 16 * 2048 + 100, bytes / 2, bytes - 700].into_iter().enumerate() {
        let chunk: Vec<u8> = (0..600u32).map(|i| (i * 37 + k as u32 * 11) as u8 | 1).collect();
        file.write_all_at(&chunk[..(bytes - at).min(600) as usize], at).map_err(|e| format!("write: {e}"))?;
    }
    Ok(f)
}

/// One comparison: loopkit's output against dvdisaster's for the same input and parameters.
struct Case<'a> {
    name: &'a str,
    input: &'a Path,
    /// `rs01`/`rs02`/`rs03`.
    method: &'a str,
    /// Separate `.ecc` file (else augmented image).
    ecc_file: bool,
    /// loopkit's arguments (besides the method and output).
    lk: &'a [&'a str],
    /// ecc.py's arguments for dvdisaster (besides image, method and output).
    dvd: &'a [&'a str],
    /// Non-standard RS03 medium: dvdisaster -t needs `--debug -n` with it.
    capacity: Option<u64>,
    /// Roots loopkit must report.
    roots: usize,
}

/// Protect with both, compare, let dvdisaster test loopkit's output. Returns loopkit's output.
fn compare(d: &Scratch, c: &Case<'_>) -> Result<PathBuf, Failed> {
    let m = c.method.to_uppercase();
    let ours = d.path(&format!("{}.lk", c.name));
    let theirs = d.path(&format!("{}.dvd", c.name));
    let mut args = vec!["-m", c.method];
    if c.ecc_file {
        args.extend(["--ecc-file", p(&ours)]);
    } else {
        args.extend(["-o", p(&ours)]);
    }
    args.extend_from_slice(c.lk);
    let (code, v) = protect(c.input, &args)?;
    ensure!(code == 0 && v["ok"] == true, "{}: loopkit protect exit {code}: {v}", c.name);
    ensure!(
        v["roots"] == c.roots && v["method"] == m.as_str(),
        "{}: {} roots {} (want {})",
        c.name,
        v["method"],
        v["roots"],
        c.roots
    );
    if c.ecc_file {
        let mut a = vec!["eccfile", "--image", p(c.input), "--method", m.as_str(), "--out", p(&theirs)];
        a.extend_from_slice(c.dvd);
        ecc_py(&a)?;
    } else {
        augment(c.input, &theirs, &m, c.dvd)?;
    }
    same_bytes(&ours, &theirs)?;
    if c.ecc_file {
        dvdisaster_accepts(c.input, Some(&ours), None, c.name)?;
    } else {
        dvdisaster_accepts(&ours, None, c.capacity, c.name)?;
    }
    Ok(ours)
}

fn rs03_ecc_files() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("protect-rs03e");
    let raw = raw_input(&d, "raw.bin", 500 * 2048 - 1000)?;
    let tiny = raw_input(&d, "tiny.bin", 15 * 2048 - 3)?;
    let iso = iso_input(&d, "base.iso")?;
    let sparse = sparse_input(&d, "sparse.bin", 1234 * 2048 + 77)?;
    let cases = [
        Case {
            name: "raw-default",
            input: &raw,
            method: "rs03",
            ecc_file: true,
            lk: &[],
            dvd: &["--spec", "normal", "--expect-roots", "32"],
            capacity: None,
            roots: 32,
        },
        Case {
            name: "raw-40",
            input: &raw,
            method: "rs03",
            ecc_file: true,
            lk: &["-n", "40"],
            dvd: &["--roots", "40"],
            capacity: None,
            roots: 40,
        },
        Case {
            name: "tiny-64",
            input: &tiny,
            method: "rs03",
            ecc_file: true,
            lk: &["-n", "high"],
            dvd: &["--roots", "64"],
            capacity: None,
            roots: 64,
        },
        Case {
            name: "iso-20pct",
            input: &iso,
            method: "rs03",
            ecc_file: true,
            lk: &["--redundancy", "20%"],
            dvd: &["--spec", "20%", "--expect-roots", "43"],
            capacity: None,
            roots: 43,
        },
        Case {
            name: "sparse-170",
            input: &sparse,
            method: "rs03",
            ecc_file: true,
            lk: &["-n", "170r"],
            dvd: &["--roots", "170"],
            capacity: None,
            roots: 170,
        },
    ];
    for c in &cases {
        compare(&d, c)?;
    }
    Ok(Completion::Completed)
}

fn rs03_augmented() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("protect-rs03a");
    let raw = raw_input(&d, "raw.bin", 500 * 2048 - 1000)?;
    // 1500 sectors on a 2550-sector medium: more than 84 data layers, 103 roots.
    let big = raw_input(&d, "big.bin", 1500 * 2048 - 333)?;
    // Exactly full: 2218 sectors + header fill 222 layers of 10 (no padding sector), 32 roots.
    let full = raw_input(&d, "full.bin", 2218 * 2048)?;
    let sparse = sparse_input(&d, "sparse.bin", 700 * 2048 + 5)?;
    let cases = [
        Case {
            name: "raw",
            input: &raw,
            method: "rs03",
            ecc_file: false,
            lk: &["--medium", "2550"],
            dvd: &["--capacity", "2550"],
            capacity: Some(2550),
            roots: 170,
        },
        Case {
            name: "big",
            input: &big,
            method: "rs03",
            ecc_file: false,
            lk: &["--augment", "-n", "2550"],
            dvd: &["--capacity", "2550"],
            capacity: Some(2550),
            roots: 103,
        },
        Case {
            name: "full",
            input: &full,
            method: "rs03",
            ecc_file: false,
            lk: &["--medium", "2550"],
            dvd: &["--capacity", "2550"],
            capacity: Some(2550),
            roots: 32,
        },
        Case {
            name: "sparse",
            input: &sparse,
            method: "rs03",
            ecc_file: false,
            lk: &["--medium", "4000"],
            dvd: &["--capacity", "4000"],
            capacity: Some(4000),
            roots: 170,
        },
    ];
    for c in &cases {
        compare(&d, c)?;
    }
    // One sector more than fits: refused, naming a medium that would do.
    let over = raw_input(&d, "over.bin", 2459 * 2048)?;
    let (c, v) = protect(&over, &["--medium", "2550", "-o", p(&d.path("over.lk"))])?;
    ensure!(c == 2 && v["error"]["kind"] == "invalid-input", "too large for the medium: exit {c}, {v}");
    ensure!(v["error"]["message"].as_str().is_some_and(|m| m.contains("at least 8")), "message: {v}");
    ensure!(!d.path("over.lk").exists(), "an output was left for a refused image");
    Ok(Completion::Completed)
}

fn rs02_augmented() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("protect-rs02");
    let raw = raw_input(&d, "raw.bin", 500 * 2048 - 1000)?;
    let iso = iso_input(&d, "base.iso")?;
    // 601 sectors on an 1800-sector medium: the header modulo chosen from the preliminary roots
    // (64) is twice the one the final 165 roots give (layout variant 2).
    let glitch = raw_input(&d, "glitch.bin", 601 * 2048 - 5)?;
    let sparse = sparse_input(&d, "sparse.bin", 900 * 2048 + 1)?;
    let cases = [
        Case {
            name: "raw-32r",
            input: &raw,
            method: "rs02",
            ecc_file: false,
            lk: &["-n", "32r"],
            dvd: &["--roots", "32"],
            capacity: None,
            roots: 32,
        },
        Case {
            name: "iso-cd",
            input: &iso,
            method: "rs02",
            ecc_file: false,
            lk: &[],
            dvd: &["--spec", "CD", "--expect-roots", "170"],
            capacity: None,
            roots: 170,
        },
        Case {
            name: "glitch",
            input: &glitch,
            method: "rs02",
            ecc_file: false,
            lk: &["--medium", "1800"],
            dvd: &["--capacity", "1800"],
            capacity: None,
            roots: 165,
        },
        Case {
            name: "sparse-20pct",
            input: &sparse,
            method: "rs02",
            ecc_file: false,
            lk: &["-n", "20%"],
            dvd: &["--spec", "20%", "--expect-roots", "43"],
            capacity: None,
            roots: 43,
        },
    ];
    for c in &cases {
        compare(&d, c)?;
    }
    let v = ecc_py(&["test", "--image", p(&d.path("glitch.lk")), "--verbose"])?;
    ensure!(v["layout_variant"] == 2, "the glitch case is not layout variant 2: {}", v["lines"]);
    // Roots that do not fit the medium: refused, naming the largest redundancy that fits.
    let (c, v) = protect(&raw, &["-m", "rs02", "-n", "150r", "--medium", "1000", "-o", p(&d.path("no.lk"))])?;
    let msg = v["error"]["message"].as_str().unwrap_or("");
    ensure!(c == 2 && msg.contains("largest redundancy that fits"), "150 roots on 1000 sectors: exit {c}, {v}");
    Ok(Completion::Completed)
}

fn rs01_ecc_files() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("protect-rs01");
    let raw = raw_input(&d, "raw.bin", 500 * 2048 - 1000)?;
    let even = raw_input(&d, "even.bin", 333 * 2048)?;
    let iso = iso_input(&d, "base.iso")?;
    let sparse = sparse_input(&d, "sparse.bin", 777 * 2048 + 999)?;
    let cases = [
        Case {
            name: "raw-default",
            input: &raw,
            method: "rs01",
            ecc_file: true,
            lk: &[],
            dvd: &["--spec", "normal", "--expect-roots", "32"],
            capacity: None,
            roots: 32,
        },
        Case {
            name: "even-100",
            input: &even,
            method: "rs01",
            ecc_file: true,
            lk: &["-n", "100"],
            dvd: &["--roots", "100"],
            capacity: None,
            roots: 100,
        },
        Case {
            name: "iso-40",
            input: &iso,
            method: "rs01",
            ecc_file: true,
            lk: &["-n", "40r"],
            dvd: &["--roots", "40"],
            capacity: None,
            roots: 40,
        },
        Case {
            name: "sparse-high",
            input: &sparse,
            method: "rs01",
            ecc_file: true,
            lk: &["-n", "high"],
            dvd: &["--spec", "high", "--expect-roots", "64"],
            capacity: None,
            roots: 64,
        },
    ];
    for c in &cases {
        compare(&d, c)?;
    }
    Ok(Completion::Completed)
}

/// Damage loopkit's output; `loopkit verify` finds it, `loopkit repair` restores the bytes.
fn damaged_outputs_repair() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("protect-dmg");
    let raw = raw_input(&d, "raw.bin", 500 * 2048 - 1000)?;
    // RS03 augmented and RS02: dead-sector markers and flipped bytes in data and ECC.
    for (name, args, erase, flip) in [
        ("rs03", vec!["--medium", "2550"], "100,1900-1901", "200:7,2100:100"),
        ("rs02", vec!["-m", "rs02", "-n", "40r"], "100,560", "300:5,600:9"),
    ] {
        let out = d.path(&format!("{name}.img"));
        let mut a = args.clone();
        a.extend(["-o", p(&out)]);
        let (c, v) = protect(&raw, &a)?;
        ensure!(c == 0, "{name}: protect exit {c}: {v}");
        let dmg = d.path(&format!("{name}.dmg"));
        std::fs::copy(&out, &dmg).map_err(|e| format!("copy: {e}"))?;
        ecc_py(&["erase", "--image", p(&dmg), "--sectors", erase])?;
        ecc_py(&["flip", "--image", p(&dmg), "--at", flip])?;
        let o = run(&mut loopkit(&["verify", "--ecc-only", "--json", p(&dmg)]))?;
        ensure!(code(&o) == 1, "{name}: verify of the damaged copy exit {}", code(&o));
        let v = json(&o)?;
        ensure!(
            v["ecc"]["missing_sectors"].as_array().is_some_and(|a| a.iter().any(|x| x == 100)),
            "{name}: verify did not find the dead sector 100: {}",
            v["ecc"]
        );
        let fixed = d.path(&format!("{name}.fixed"));
        let o = run(&mut loopkit(&["repair", "--json", p(&dmg), "-o", p(&fixed)]))?;
        ensure!(code(&o) == 0, "{name}: repair exit {}: {}", code(&o), String::from_utf8_lossy(&o.stderr));
        same_bytes(&fixed, &out)?;
    }
    // RS01 and RS03 .ecc files: damage the image, repair with the file.
    for (name, m) in [("rs01", "rs01"), ("rs03e", "rs03")] {
        let ecc = d.path(&format!("{name}.ecc"));
        let (c, v) = protect(&raw, &["-m", m, "-n", "32", "--ecc-file", p(&ecc)])?;
        ensure!(c == 0, "{name}: protect exit {c}: {v}");
        let dmg = d.path(&format!("{name}.dmg"));
        std::fs::copy(&raw, &dmg).map_err(|e| format!("copy: {e}"))?;
        ecc_py(&["erase", "--image", p(&dmg), "--sectors", "5,250-251"])?;
        let fixed = d.path(&format!("{name}.fixed"));
        let o = run(&mut loopkit(&["repair", "--json", p(&dmg), "--ecc", p(&ecc), "-o", p(&fixed)]))?;
        ensure!(code(&o) == 0, "{name}: repair exit {}: {}", code(&o), String::from_utf8_lossy(&o.stderr));
        same_bytes(&fixed, &raw)?;
    }
    Ok(Completion::Completed)
}

/// `protect --in-place` on a copy of the input against `dvdisaster -c` on another copy: the same
/// bytes; the original bytes stay at the front; `dvdisaster -t` accepts it; no journal is left;
/// a second `--in-place` run is refused and changes nothing.
fn in_place_equals_dvdisaster() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("protect-inplace");
    let raw = raw_input(&d, "raw.bin", 700 * 2048 - 1001)?;
    let orig = std::fs::read(&raw).map_err(|e| e.to_string())?;
    for (name, method, lk, dvd, capacity) in [
        ("rs03", "RS03", &["--medium", "2550"][..], &["--capacity", "2550"][..], Some(2550)),
        ("rs02", "RS02", &["-m", "rs02", "-n", "40r"][..], &["--roots", "40"][..], None),
    ] {
        let ours = d.path(&format!("{name}.lk"));
        let theirs = d.path(&format!("{name}.dvd"));
        std::fs::copy(&raw, &ours).map_err(|e| format!("copy: {e}"))?;
        let mut cmd = loopkit(&["protect", "--json", "-q", "--in-place", p(&ours)]);
        cmd.args(lk);
        let o = run(&mut cmd)?;
        ensure!(code(&o) == 0, "{name}: protect --in-place exit {}: {}", code(&o), String::from_utf8_lossy(&o.stderr));
        let v = json(&o)?;
        ensure!(v["ok"] == true && v["placement"] == "augmented", "{name}: {v}");
        augment(&raw, &theirs, method, dvd)?;
        same_bytes(&ours, &theirs)?;
        let now = std::fs::read(&ours).map_err(|e| e.to_string())?;
        ensure!(now[..orig.len()] == orig[..], "{name}: the image's own bytes changed");
        dvdisaster_accepts(&ours, None, capacity, name)?;
        let journal = d.path(&format!(".{name}.lk.loopkit-protect-journal"));
        ensure!(!journal.exists(), "{name}: journal left behind");
        let before = sha256_file(&ours)?;
        let mut cmd = loopkit(&["protect", "--json", "-q", "--in-place", p(&ours)]);
        cmd.args(lk);
        let o = run(&mut cmd)?;
        ensure!(code(&o) == 2, "{name}: a second --in-place run exit {} (want 2, refused)", code(&o));
        ensure!(sha256_file(&ours)? == before, "{name}: the refused second run changed the image");
    }
    Ok(Completion::Completed)
}

fn refuses_unsafe_requests() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    let d = Scratch::new("protect-refuse");
    let raw = raw_input(&d, "raw.bin", 300 * 2048 - 1)?;
    // No output: the image itself is never modified.
    let (c, v) = protect(&raw, &[])?;
    ensure!(c == 2 && v["error"]["kind"] == "invalid-input", "no -o: exit {c}, {v}");
    // Output onto the input.
    let (c, v) = protect(&raw, &["-o", p(&raw)])?;
    ensure!(c == 2, "-o IMAGE: exit {c}, {v}");
    // An existing output is not replaced without --force.
    let out = d.path("out.img");
    std::fs::write(&out, b"keep").map_err(|e| e.to_string())?;
    let (c, _) = protect(&raw, &["--medium", "2550", "-o", p(&out)])?;
    ensure!(c == 2 && std::fs::read(&out).map_err(|e| e.to_string())? == b"keep", "existing output replaced");
    // Augmenting an image that already carries ECC is refused.
    let (c, _) = protect(&raw, &["--medium", "2550", "-o", p(&out), "--force"])?;
    ensure!(c == 0, "--force: exit {c}");
    let (c, v) = protect(&out, &["--medium", "5000", "-o", p(&d.path("twice.img"))])?;
    ensure!(c == 2 && v["error"]["kind"] == "corrupt", "protecting an augmented image again: exit {c}, {v}");
    // Invalid combinations.
    let (c, _) = protect(&raw, &["-m", "rs02", "--ecc-file", p(&d.path("x.ecc"))])?;
    ensure!(c == 2, "RS02 .ecc file accepted");
    let (c, _) = protect(&raw, &["-m", "rs01", "-n", "101", "--ecc-file", p(&d.path("x.ecc"))])?;
    ensure!(c == 2, "RS01 with 101 roots accepted");
    let left: Vec<String> = std::fs::read_dir(&d.0)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".partial"))
        .collect();
    ensure!(left.is_empty(), "temporary files left behind: {left:?}");
    Ok(Completion::Completed)
}

/// The image changes after protect has read it (a seam of the library calls the change then,
/// so the test does not depend on timing): grown, rewritten with the same bytes (only the
/// modification time moves), its mode changed (only the change time moves), cut shorter. Each
/// time protect must fail with the `corrupt` error saying the image changed, and leave no
/// output (nor a temporary file) behind — for an `.ecc` file and for an augmented copy.
fn refuses_an_image_that_changes() -> TestResult {
    use loopkit::formats::dvdisaster::create::{self, Options, Request, Target};
    use loopkit::formats::dvdisaster::layout::Method;
    fn grow(img: &Path) {
        let f = std::fs::OpenOptions::new().append(true).open(img);
        let _ = f.and_then(|mut f| std::io::Write::write_all(&mut f, b"x"));
    }
    fn rewrite(img: &Path) {
        let f = std::fs::OpenOptions::new().read(true).write(true).open(img);
        let _ = f.and_then(|f| {
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, 4096)?;
            f.write_all_at(&b, 4096)
        });
    }
    fn chmod(img: &Path) {
        use std::os::unix::fs::PermissionsExt;
        // The change time has the file system's clock granularity (a tick, at most 10 ms):
        // let one pass since the set-up's last change.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let _ = std::fs::set_permissions(img, std::fs::Permissions::from_mode(0o600));
    }
    fn shrink(img: &Path) {
        let f = std::fs::OpenOptions::new().write(true).open(img);
        let _ = f.and_then(|f| f.set_len(150 * 2048));
    }
    let d = Scratch::new("protect-changing");
    type Change = (&'static str, fn(&Path));
    let changes: [Change; 4] = [("grown", grow), ("rewritten", rewrite), ("chmod", chmod), ("shrunk", shrink)];
    for (what, hook) in changes {
        for target in [Target::EccFile, Target::Augment] {
            let img = d.path("image.bin");
            let data: Vec<u8> = (0..300u32 * 2048 - 77).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
            std::fs::write(&img, &data).map_err(|e| format!("writing {}: {e}", img.display()))?;
            // An old modification time, so that any write moves it whatever the clock's granularity.
            let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
            std::fs::File::options()
                .write(true)
                .open(&img)
                .and_then(|f| f.set_modified(old))
                .map_err(|e| format!("setting the mtime of {}: {e}", img.display()))?;
            let out = d.path("out");
            let (medium, redundancy) = match target {
                Target::Augment => (Some(2550), None),
                _ => (None, Some(create::Redundancy::Roots(32))),
            };
            let req = Request { method: Method::Rs03, target, medium, redundancy };
            let opts = Options { workers: 2, after_encoding: Some(hook), ..Options::default() };
            let interrupt = loopkit::progress::Interrupt::new();
            let mut quiet = loopkit::progress::NoProgress;
            let mut run = loopkit::progress::Run::new(&mut quiet, &interrupt);
            let r = create::protect(&img, &req, &out, &opts, &mut run);
            let name = format!("{what}, {target:?}");
            match r {
                Ok(_) => return Err(format!("{name}: protect kept its output although the image changed").into()),
                Err(e) => ensure!(
                    e.kind() == loopkit::ErrorKind::Corrupt
                        && e.message().contains("changed while it was being protected"),
                    "{name}: not the image-changed error: {:?} {}",
                    e.kind(),
                    e.message()
                ),
            }
            ensure!(!out.exists(), "{name}: an output was left at {}", out.display());
            let left: Vec<String> = std::fs::read_dir(&d.0)
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .filter(|n| n != "image.bin")
                .collect();
            ensure!(left.is_empty(), "{name}: files left behind: {left:?}");
        }
    }
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("protect::rs03_ecc_files_equal_dvdisaster", rs03_ecc_files),
        trial("protect::rs03_augmented_equal_dvdisaster", rs03_augmented),
        trial("protect::rs02_augmented_equal_dvdisaster", rs02_augmented),
        trial("protect::rs01_ecc_files_equal_dvdisaster", rs01_ecc_files),
        trial("protect::damaged_outputs_verify_and_repair", damaged_outputs_repair),
        trial("protect::refuses_unsafe_requests", refuses_unsafe_requests),
        trial("protect::in_place_equals_dvdisaster", in_place_equals_dvdisaster),
        trial("protect::refuses_an_image_that_changes", refuses_an_image_that_changes),
    ]
}
