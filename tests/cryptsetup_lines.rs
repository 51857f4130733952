//! The cryptsetup commands loopkit prints are typed: for images whose names are also words of the
//! line (`256`, a key size; `plain`, a `--type`; `legacy`, the mapping name) or need quoting
//! (space, quotes), the shell line `sh` parses is exactly the JSON argument vector, the image is
//! the device argument and nothing else changes; the crypttab line names the image as one field.
//! Oracles: `sh` (word splitting of the printed line) and, for a LUKS image named `256`,
//! `cryptsetup open --test-passphrase` run with the printed argument vector.

use crate::ensure;
use crate::legacy::{encrypt, plains};
use crate::luks_read::{CHEAP_PBKDF2, cryptsetup};
use crate::util::{self, Scratch, TestResult, json, loopkit, run, run_ok, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::Path;
use std::process::{Command, Stdio};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("cryptsetup_lines::image_names_that_are_words_of_the_line", image_names),
        trial("cryptsetup_lines::luks_argv_runs_with_cryptsetup", luks_argv_runs),
    ]
}

/// Names that used to be edited as text; the first is the baseline.
const NAMES: &[&str] = &["base.img", "256", "plain", "legacy", "a b'c\"d.img", "-x.img"];

/// The words `sh` makes of `line` (NUL-separated `printf` of them, the program word replaced).
fn sh_words(line: &str) -> Result<Vec<String>, Failed> {
    let out = run_ok(Command::new("sh").arg("-c").arg(format!("printf '%s\\0' {line}")))?;
    let mut w: Vec<String> = String::from_utf8_lossy(&out.stdout).split('\0').map(str::to_string).collect();
    w.pop(); // after the last NUL
    Ok(w)
}

fn argv(v: &serde_json::Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// `line` parses to `argv`, whose last two words are `device` and `name`; returns the options.
fn check_line(
    what: &str,
    line: &serde_json::Value,
    argv_v: &serde_json::Value,
    device: &str,
    name: &str,
) -> Result<Vec<String>, Failed> {
    let line = line.as_str().ok_or_else(|| format!("{what}: no line"))?;
    let a = argv(argv_v);
    ensure!(!a.is_empty(), "{what}: no argument vector beside {line:?}");
    ensure!(sh_words(line)? == a, "{what}: sh splits {line:?} into {:?}, the JSON argv is {a:?}", sh_words(line)?);
    ensure!(
        a.len() > 2 && a[a.len() - 2] == device && a[a.len() - 1] == name,
        "{what}: the device/name arguments of {a:?} are not {device:?} {name:?}"
    );
    Ok(a[..a.len() - 2].to_vec())
}

/// Unescape a crypttab field (`\040` space, `\011` tab, `\134` backslash).
fn crypttab_unescape(f: &str) -> String {
    f.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
}

fn image_names() -> TestResult {
    let p = match plains() {
        Ok(p) => p,
        Err(e) => return util::skip(e),
    };
    let d = Scratch::new("cs-lines");
    let pass = p.dir.join("pass");
    let ps = pass.to_str().unwrap_or_default();
    // A cryptoloop image with a payload offset (so --offset/--skip are in the line too).
    let fx = encrypt(
        &d.0,
        "src.img",
        "ext2",
        &[
            "--scheme",
            "cryptoloop",
            "--derivation",
            "rmd160",
            "--key-bits",
            "256",
            "--offset",
            "4096",
            "--passphrase-file",
            ps,
        ],
    )?;
    let mut base_inspect: Option<Vec<String>> = None;
    let mut base_plain: Option<(Vec<String>, Vec<String>)> = None;
    for name in NAMES {
        let img = d.path(name);
        std::fs::copy(&fx.image, &img)?;
        // Relative to the scratch directory, as a user would type it (`./-x.img` for the last).
        let given = if name.starts_with('-') { format!("./{name}") } else { (*name).to_string() };
        let out = run(loopkit(&["inspect", &given, "--passphrase-file", ps, "--json"]).current_dir(&d.0))?;
        ensure!(util::code(&out) == 0, "inspect {name:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v = json(&out)?;
        let opts = check_line(&format!("inspect {name:?}"), &v["cryptsetup"], &v["cryptsetup_argv"], &given, "legacy")?;
        ensure!(v["cryptsetup_stdin_from"].is_null(), "inspect {name:?}: stdin_from {}", v["cryptsetup_stdin_from"]);
        match &base_inspect {
            None => {
                ensure!(opts.iter().any(|w| w == "--offset"), "the baseline line has no --offset: {opts:?}");
                base_inspect = Some(opts);
            }
            Some(b) => ensure!(&opts == b, "inspect {name:?}: options {opts:?}, baseline {b:?}"),
        }

        // migrate --mode plain: both commands and the crypttab line.
        let key = d.path(&format!("{name}.key"));
        let kf = key.to_str().unwrap_or_default();
        let out = run(loopkit(&[
            "migrate",
            &given,
            "--to",
            "dmcrypt",
            "--mode",
            "plain",
            "--key-out",
            kf,
            "--passphrase-file",
            ps,
            "--json",
        ])
        .current_dir(&d.0))?;
        ensure!(util::code(&out) == 0, "migrate {name:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v = json(&out)?;
        let pl = &v["plain"];
        let po = check_line(
            &format!("migrate {name:?} passphrase"),
            &pl["passphrase_command"],
            &pl["passphrase_argv"],
            &given,
            "legacy",
        )?;
        let ko = check_line(
            &format!("migrate {name:?} key file"),
            &pl["key_file_command"],
            &pl["key_file_argv"],
            &given,
            "legacy",
        )?;
        ensure!(
            ko.windows(2).any(|w| w[0] == "--key-file" && w[1] == kf),
            "migrate {name:?}: key file not {kf:?} in {ko:?}"
        );
        let ko_no_key: Vec<String> = ko.iter().filter(|w| w.as_str() != kf).cloned().collect();
        match &base_plain {
            None => base_plain = Some((po, ko_no_key)),
            Some((bp, bk)) => {
                ensure!(&po == bp, "migrate {name:?}: passphrase options {po:?}, baseline {bp:?}");
                ensure!(&ko_no_key == bk, "migrate {name:?}: key-file options {ko_no_key:?}, baseline {bk:?}");
            }
        }
        let ct = pl["crypttab"].as_str().ok_or_else(|| format!("migrate {name:?}: no crypttab line: {v}"))?;
        let fields: Vec<&str> = ct.split_whitespace().collect();
        ensure!(fields.len() == 4, "crypttab {ct:?} has {} fields", fields.len());
        let abs = std::fs::canonicalize(&img)?;
        ensure!(
            crypttab_unescape(fields[1]) == abs.to_str().unwrap_or_default() && crypttab_unescape(fields[2]) == kf,
            "crypttab {ct:?}: device/key fields are not {} / {kf}",
            abs.display()
        );
        ensure!(
            fields[3].starts_with("plain,cipher=aes-cbc-plain,size=256,hash=plain,offset=8,skip="),
            "crypttab options {}",
            fields[3]
        );
    }
    Ok(Completion::Completed)
}

/// A LUKS2 image named `256` (a word of no LUKS line, but the name once broke attach's text
/// edits) and one with a space and quotes: cryptsetup itself runs the printed argument vector
/// (with `--test-passphrase`, which needs no device-mapper) and accepts the passphrase.
fn luks_argv_runs() -> TestResult {
    if !util::have("cryptsetup") {
        return util::skip("cryptsetup not installed");
    }
    let d = Scratch::new("cs-luks-argv");
    let pass = d.path("pass");
    std::fs::write(&pass, "luks name test")?;
    for name in ["256", "a b'c\"d.img"] {
        let img = d.path(name);
        run_ok(Command::new("truncate").args(["-s", "20M"]).arg(&img))?;
        let fmt = cryptsetup(
            &[
                &["luksFormat", "-q", "--type", "luks2", "--key-file", pass.to_str().unwrap_or_default()],
                CHEAP_PBKDF2,
                &[img.to_str().unwrap_or_default()],
            ]
            .concat(),
        )?;
        ensure!(fmt.status.success(), "luksFormat {name:?}: {}", String::from_utf8_lossy(&fmt.stderr));
        let out = run(loopkit(&["inspect", name, "--json"]).current_dir(&d.0))?;
        let v = json(&out)?;
        let a = argv(&v["cryptsetup_argv"]);
        let line = v["cryptsetup"].as_str().unwrap_or_default();
        ensure!(sh_words(line)? == a, "inspect {name:?}: line {line:?} vs argv {a:?}");
        ensure!(a.len() > 3 && a[0] == "cryptsetup" && a[a.len() - 2] == name, "inspect {name:?}: argv {a:?}");
        let mut cmd = Command::new(&a[0]);
        cmd.args(&a[1..]).arg("--test-passphrase").arg("--disable-locks").current_dir(&d.0);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("cannot run cryptsetup: {e}"))?;
        if let Some(mut w) = child.stdin.take() {
            std::io::Write::write_all(&mut w, b"luks name test")?;
        }
        let o = child.wait_with_output()?;
        ensure!(o.status.success(), "cryptsetup {a:?} --test-passphrase: {}", String::from_utf8_lossy(&o.stderr));
        ensure!(Path::new(&img).exists(), "the image went away");
    }
    Ok(Completion::Completed)
}
