//! Review finding L8: hostile input reaching the terminal and the report.
//! - A file system (built by mkfs.ext2 -d, the oracle) holds names with ESC sequences, a
//!   newline and a bidi override. `verify --against`, `extract` and `manifest -o` human output
//!   must carry no raw control bytes (checked byte by byte) and show the names escaped, while
//!   `--json` and the manifest keep them exact (read back with serde_json and compared with the
//!   names the test wrote), and extract recreates them exactly on disk.
//! - A results file with absurd sector numbers (a real `verify --json` document patched by
//!   Python) makes `loopkit report` exit 0 with a page html5lib parses, not panic.

use crate::ecc_verify::{ecc_py, p, prerequisites, raw_input};
use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, loopkit, run, run_ok, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output};

/// A name with a colour escape, an OSC title sequence, a newline and a right-to-left override.
const EVIL: &str = "evil\u{1b}[31mred\nline\u{1b}]0;pwned\u{7}\u{202e}txt";
/// The same name as loopkit's human output shows it.
const EVIL_SHOWN: &str = "evil\\x1b[31mred\\nline\\x1b]0;pwned\\x07\\u{202e}txt";
/// A fifo (never extracted: its skip warning names it) with an escape sequence.
const FIFO: &str = "fifo\u{1b}[2J";

/// Fail if `out` (stdout and stderr) holds a control byte other than newline, or a C1 control
/// or bidi override (as UTF-8), or the name's raw newline; require the escaped name when
/// `want_shown`.
fn clean_human(what: &str, out: &Output, want_shown: Option<&str>) -> Result<(), Failed> {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        if let Some(i) = bytes.iter().position(|&b| (b < 0x20 && b != b'\n') || b == 0x7f) {
            return Err(format!(
                "{what}: raw control byte {:#04x} at {i} of {stream}: {:?}",
                bytes[i],
                String::from_utf8_lossy(bytes)
            )
            .into());
        }
        let text = String::from_utf8_lossy(bytes);
        ensure!(
            !text.contains('\u{202e}') && !text.chars().any(|c| ('\u{80}'..='\u{9f}').contains(&c)),
            "{what}: a C1 control or bidi override reached {stream}: {text:?}"
        );
        ensure!(!text.contains("red\nline"), "{what}: the name's newline reached {stream} raw: {text:?}");
    }
    if let Some(s) = want_shown {
        let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        ensure!(all.contains(s), "{what}: the escaped name {s:?} is not shown: {all:?}");
    }
    Ok(())
}

fn json_of(out: &Output) -> Result<serde_json::Value, Failed> {
    util::json(out)
}

fn names_escaped_in_human_output_exact_in_json() -> TestResult {
    for t in ["mkfs.ext2", "mkfifo"] {
        if !util::have(t) {
            return util::skip(format!("{t} missing"));
        }
    }
    let s = Scratch::new("hostile-names");
    let tree = s.path("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join(EVIL), b"original\n")?;
    std::fs::write(tree.join("plain.txt"), b"plain\n")?;
    run_ok(Command::new("mkfifo").arg(tree.join(FIFO)))?;
    let img = s.path("evil.img");
    std::fs::File::create(&img)?.set_len(4 << 20)?;
    run_ok(Command::new("mkfs.ext2").args(["-q", "-F", "-d"]).arg(&tree).arg(&img))?;
    // The reference tree differs in the evil file: verify --against names it.
    std::fs::write(tree.join(EVIL), b"changed!\n")?;
    std::fs::remove_file(tree.join(FIFO))?;
    run_ok(Command::new("mkfifo").arg(tree.join(FIFO)))?;

    let against = || {
        let mut c = loopkit(&["verify"]);
        c.arg(&img).arg("--against").arg(&tree);
        c
    };
    let out = run(&mut against())?;
    ensure!(code(&out) == 1, "verify --against: exit {} (1 expected)", code(&out));
    clean_human("verify --against", &out, Some(EVIL_SHOWN))?;
    let out = run(against().arg("--json"))?;
    let v = json_of(&out)?;
    let exact = v["problems"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["message"].as_str().is_some_and(|m| m.contains(EVIL))));
    ensure!(exact, "verify --against --json: no problem names {EVIL:?} exactly: {v}");

    let dest = s.path("dest");
    let out = run(loopkit(&["extract", "--quiet"]).arg(&img).arg(&dest))?;
    ensure!(code(&out) <= 1, "extract: exit {}: {}", code(&out), String::from_utf8_lossy(&out.stderr));
    clean_human("extract", &out, Some("fifo\\x1b[2J"))?;
    ensure!(std::fs::read(dest.join(EVIL))? == b"original\n", "extract did not recreate the name exactly");
    let dest2 = s.path("dest2");
    let out = run(loopkit(&["extract", "--quiet", "--json"]).arg(&img).arg(&dest2))?;
    let v = json_of(&out)?;
    let exact = v["problems"]
        .as_array()
        .is_some_and(|a| a.iter().any(|p| p["message"].as_str().is_some_and(|m| m.contains(FIFO))));
    ensure!(exact, "extract --json: no problem names {FIFO:?} exactly: {v}");

    // manifest: stdout is the manifest (JSON, exact); with -o the human line and problems are clean.
    let out = run_ok(loopkit(&["manifest"]).arg(&img))?;
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("manifest JSON: {e}"))?;
    let paths: Vec<&str> =
        m["entries"].as_array().map(|a| a.iter().filter_map(|e| e["path"].as_str()).collect()).unwrap_or_default();
    ensure!(paths.contains(&EVIL) && paths.contains(&FIFO), "manifest: names not exact: {paths:?}");
    let mo = s.path("m.json");
    let out = run_ok(loopkit(&["manifest"]).arg(&img).arg("-o").arg(&mo))?;
    clean_human("manifest -o", &out, None)?;
    ensure!(std::fs::read(&mo)? == run_ok(loopkit(&["manifest"]).arg(&img))?.stdout, "manifest -o differs from stdout");
    // The names on disk, read back by the OS: exactly what the test wrote.
    let on_disk: Vec<Vec<u8>> =
        std::fs::read_dir(&dest)?.filter_map(|e| e.ok()).map(|e| e.file_name().as_bytes().to_vec()).collect();
    ensure!(on_disk.contains(&OsStr::new(EVIL).as_bytes().to_vec()), "extracted names: {on_disk:?}");
    Ok(Completion::Completed)
}

/// `verify --json` of an RS01-protected raw image, patched by Python: absurd sector numbers
/// and counts. `loopkit report` must exit 0 and html5lib must parse the page.
fn report_survives_absurd_numbers() -> TestResult {
    if let Some(r) = prerequisites() {
        return util::skip(r);
    }
    if let Some(r) = util::python_module_missing("html5lib") {
        return util::skip(r);
    }
    let d = Scratch::new("hostile-report");
    let img = raw_input(&d, "raw.bin", 100 * 2048)?;
    let ecc = d.path("raw.ecc");
    ecc_py(&["eccfile", "--image", p(&img), "--method", "RS01", "--roots", "32", "--out", p(&ecc)])?;
    let out = run(loopkit(&["verify", "--json", "--ecc", p(&ecc), p(&img)]).arg("--ecc-only"))?;
    ensure!(code(&out) == 0, "verify: exit {}: {}", code(&out), String::from_utf8_lossy(&out.stderr));
    let doc = d.path("doc.json");
    std::fs::write(&doc, &out.stdout)?;
    let results = d.path("results.jsonl");
    let patch = r#"
import json, sys
v = json.load(open(sys.argv[1]))
ins = v["inspect"] if "inspect" in v else v
e = ins["ecc"]
assert e is not None and "bad_sectors" in e, e
big = 2**64 - 1
lines = []
for sectors, bad in ((8193, [big, big - 1, 0]), (big, [big - 1, big]), (1, [big])):
    e["expected_sectors"] = sectors
    e["data_sectors"] = sectors
    e["bad_sectors"] = bad
    e["missing_sectors"] = [big, 5]
    ins["image"] = "img-%d" % len(lines)
    lines.append(json.dumps(v))
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
"#;
    run_ok(Command::new(util::python()).arg("-c").arg(patch).arg(&doc).arg(&results))?;
    let html = d.path("r.html");
    let out = run(&mut loopkit(&["report", p(&results), "-o", p(&html)]))?;
    ensure!(
        code(&out) == 0,
        "report on absurd numbers: exit {} (0 expected): {}",
        code(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let parse = "import html5lib,sys\nd=html5lib.parse(open(sys.argv[1],'rb'),namespaceHTMLElements=False)\n\
                 print(len(d.findall('.//figure')))\n";
    let figs = run_ok(Command::new(util::python()).arg("-c").arg(parse).arg(&html))?;
    ensure!(String::from_utf8_lossy(&figs.stdout).trim() == "3", "figures: {}", String::from_utf8_lossy(&figs.stdout));
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "hostile_names::names_escaped_in_human_output_exact_in_json",
            names_escaped_in_human_output_exact_in_json,
        ),
        trial("hostile_names::report_survives_absurd_numbers", report_survives_absurd_numbers),
    ]
}
