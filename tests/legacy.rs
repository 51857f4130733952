//! Reading legacy cryptoloop / loop-AES / plain images. Images are made by
//! `testdata/gen/legacy.py` (mkfs/genisoimage + Python `cryptography` or `aespipe`); the truth is
//! the plaintext image's SHA-256 computed by that script, never loopkit's own output.

use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, run_ok, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const PASS: &str = "correct horse battery staple";
const LONG_PASS: &str = "this passphrase is longer than thirty-one bytes, by far";

/// Plaintext images shared by all tests (built once per run).
pub struct Plains {
    _dir: Scratch,
    /// Holds `tree/`, `{ext2,ext3,ext4,iso9660,vfat}.img`, `pass`, `longpass`.
    pub dir: PathBuf,
}

fn generator() -> PathBuf {
    util::repo_root().join("testdata/gen/legacy.py")
}

fn tools_missing(tools: &[&str]) -> Option<String> {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !util::have(t)).collect();
    if missing.is_empty() { None } else { Some(format!("missing tools: {}", missing.join(", "))) }
}

static PLAINS: OnceLock<Result<Plains, String>> = OnceLock::new();

/// Remove the shared plaintext images (statics are never dropped; tests/tests.rs calls this
/// once every test has run).
pub fn cleanup() {
    if let Some(Ok(p)) = PLAINS.get()
        && std::env::var_os("LOOPKIT_KEEP_TMP").is_none()
    {
        let _ = std::fs::remove_dir_all(&p.dir);
    }
}

/// Build (once) the tree and plaintext images: ext2 (1 KiB blocks), ext3, ext4, iso9660, vfat.
pub fn plains() -> Result<&'static Plains, String> {
    PLAINS
        .get_or_init(|| {
            if let Some(m) = tools_missing(&["mkfs.ext2", "mkfs.ext4", "genisoimage", "mkfs.vfat"]) {
                return Err(m);
            }
            if let Some(why) = util::python_module_missing("cryptography") {
                return Err(why);
            }
            let s = Scratch::new("plains");
            let dir = s.0.clone();
            let tree = dir.join("tree");
            let g = |args: &[&str]| -> Result<(), String> {
                let out =
                    Command::new(util::python()).arg(generator()).args(args).output().map_err(|e| e.to_string())?;
                if !out.status.success() {
                    return Err(format!("legacy.py {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
                }
                Ok(())
            };
            g(&["tree", tree.to_str().unwrap()])?;
            for (fs, mib) in [("ext2", "3"), ("ext3", "4"), ("ext4", "4"), ("iso9660", "0"), ("vfat", "3")] {
                let out = dir.join(format!("{fs}.img"));
                g(&[
                    "plain",
                    "--fs",
                    fs,
                    "--size-mib",
                    mib,
                    "--tree",
                    tree.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                ])?;
            }
            std::fs::write(dir.join("pass"), format!("{PASS}\n")).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("longpass"), format!("{LONG_PASS}\n")).map_err(|e| e.to_string())?;
            Ok(Plains { _dir: s, dir })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// One encrypted fixture.
pub struct Fixture {
    pub image: PathBuf,
    pub plaintext_sha256: String,
}

/// Encrypt `fs`'s plaintext image with `legacy.py encrypt ARGS` into `dir/name`.
pub fn encrypt(dir: &Path, name: &str, fs: &str, args: &[&str]) -> Result<Fixture, Failed> {
    let p = plains().map_err(Failed::from)?;
    let image = dir.join(name);
    let plain = p.dir.join(format!("{fs}.img"));
    let out = run_ok(
        Command::new(util::python())
            .arg(generator())
            .args(["encrypt", "--plain", plain.to_str().unwrap(), "--out", image.to_str().unwrap()])
            .args(args),
    )?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("legacy.py output: {e}"))?;
    Ok(Fixture { image, plaintext_sha256: v["payload_sha256"].as_str().unwrap_or("").to_string() })
}

/// The most common fixture: Debian-style cryptoloop (rmd160, AES-256) over `fs`'s plaintext.
/// `Ok(Err(reason))` when the prerequisites are missing.
pub fn rmd160_fixture(dir: &str, name: &str, fs: &str) -> Result<Result<(Scratch, Fixture, PathBuf), String>, Failed> {
    if let Some(r) = prerequisites(&[]) {
        return Ok(Err(r));
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new(dir);
    let pass = p.dir.join("pass");
    let f = encrypt(
        &d.0,
        name,
        fs,
        &["--scheme", "cryptoloop", "--derivation", "rmd160", "--passphrase-file", pass.to_str().unwrap()],
    )?;
    Ok(Ok((d, f, pass)))
}

fn prerequisites(extra: &[&str]) -> Option<String> {
    if let Err(e) = plains() {
        return Some(e);
    }
    tools_missing(extra)
}

/// Run `loopkit verify --json` with `args`, check the payload digest against the oracle and the
/// encryption fields against `expect` (key → value), and that the image is unchanged.
fn verify_case(f: &Fixture, args: &[&str], expect: &[(&str, serde_json::Value)]) -> Result<serde_json::Value, Failed> {
    let before = sha256_file(&f.image)?;
    let mut cmd = loopkit(&["verify", "--json", f.image.to_str().unwrap()]);
    cmd.args(args);
    let out = run(&mut cmd)?;
    let after = sha256_file(&f.image)?;
    ensure!(before == after, "verify modified the image {}", f.image.display());
    let v = json(&out)?;
    ensure!(
        code(&out) == 0,
        "verify exit {} for {}: {}\n{}",
        code(&out),
        f.image.display(),
        String::from_utf8_lossy(&out.stderr),
        v
    );
    ensure!(v["ok"] == true, "not ok: {v}");
    ensure!(
        v["payload"]["sha256"] == f.plaintext_sha256.as_str(),
        "payload sha256 {} != plaintext {} for {}",
        v["payload"]["sha256"],
        f.plaintext_sha256,
        f.image.display()
    );
    for (k, want) in expect {
        let got = if let Some(fk) = k.strip_prefix("fs.") { &v["filesystem"][fk] } else { &v["encryption"][*k] };
        ensure!(got == want, "{}: {k} = {got}, want {want}\n{v}", f.image.display());
    }
    Ok(v)
}

/// (image name, fs, generator args, loopkit args, expected encryption/filesystem fields)
type Case<'a> = (&'a str, &'a str, Vec<&'a str>, Vec<&'a str>, Vec<(&'a str, serde_json::Value)>);

macro_rules! s {
    ($x:expr) => {
        serde_json::json!($x)
    };
}

fn cryptoloop_matrix() -> TestResult {
    if let Some(r) = prerequisites(&[]) {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new("cryptoloop");
    let pass = p.dir.join("pass");
    let longp = p.dir.join("longpass");
    let (ps, ls) = (pass.to_str().unwrap(), longp.to_str().unwrap());
    // (name, fs, generator args, loopkit args, expected fields)
    let cases: Vec<Case> = vec![
        (
            "rmd160-256.img",
            "ext2",
            vec!["--scheme", "cryptoloop", "--derivation", "rmd160", "--key-bits", "256", "--passphrase-file", ps],
            vec!["--passphrase-file", ps],
            vec![
                ("scheme", s!("cryptoloop")),
                ("cipher", s!("aes-cbc-plain")),
                ("key_bits", s!(256)),
                ("key_derivation", s!("rmd160")),
                ("fs.type", s!("ext2")),
            ],
        ),
        (
            "rmd160-128.img",
            "ext3",
            vec!["--scheme", "cryptoloop", "--derivation", "rmd160", "--key-bits", "128", "--passphrase-file", ps],
            vec!["--passphrase-file", ps],
            vec![("key_bits", s!(128)), ("key_derivation", s!("rmd160")), ("fs.type", s!("ext3"))],
        ),
        (
            "rmd160-192.img",
            "ext4",
            vec!["--scheme", "cryptoloop", "--derivation", "rmd160", "--key-bits", "192", "--passphrase-file", ps],
            vec!["--passphrase-file", ps],
            vec![("key_bits", s!(192)), ("fs.type", s!("ext4"))],
        ),
        (
            "raw.img",
            "ext2",
            vec![
                "--scheme",
                "cryptoloop",
                "--derivation",
                "util-linux-raw",
                "--key-bits",
                "256",
                "--passphrase-file",
                ps,
            ],
            vec!["--passphrase-file", ps],
            vec![("key_derivation", s!("util-linux-raw")), ("key_bits", s!(256)), ("offset_bytes", s!(0))],
        ),
        (
            "raw-long.img",
            "iso9660",
            vec![
                "--scheme",
                "cryptoloop",
                "--derivation",
                "util-linux-raw",
                "--key-bits",
                "256",
                "--passphrase-file",
                ls,
            ],
            vec!["--passphrase-file", ls],
            vec![("key_derivation", s!("util-linux-raw")), ("fs.type", s!("iso9660"))],
        ),
        (
            "debian-N-128.img",
            "vfat",
            vec!["--scheme", "cryptoloop", "--derivation", "unhashed", "--key-bits", "128", "--passphrase-file", ls],
            vec!["--passphrase-file", ls],
            vec![("key_derivation", s!("unhashed")), ("key_bits", s!(128)), ("fs.type", s!("vfat"))],
        ),
        (
            "offset-8k.img",
            "ext2",
            vec![
                "--scheme",
                "cryptoloop",
                "--derivation",
                "rmd160",
                "--key-bits",
                "256",
                "--offset",
                "8192",
                "--passphrase-file",
                ps,
            ],
            vec!["--passphrase-file", ps],
            vec![("offset_bytes", s!(8192)), ("iv_offset_sectors", s!(16))],
        ),
        (
            "offset-1m-sparse.img",
            "ext3",
            vec![
                "--scheme",
                "cryptoloop",
                "--derivation",
                "util-linux-raw",
                "--offset",
                "1048576",
                "--sparse",
                "--passphrase-file",
                ps,
            ],
            vec!["--passphrase-file", ps],
            vec![("offset_bytes", s!(1048576)), ("iv_offset_sectors", s!(2048))],
        ),
        (
            "offset-explicit.img",
            "ext2",
            vec!["--scheme", "cryptoloop", "--derivation", "rmd160", "--offset", "16384", "--passphrase-file", ps],
            vec!["--passphrase-file", ps, "--offset", "16K", "--key-bits", "256", "--scheme", "cryptoloop"],
            vec![("offset_bytes", s!(16384)), ("iv_offset_sectors", s!(32))],
        ),
        (
            "ecb.img",
            "ext2",
            vec!["--scheme", "cryptoloop", "--derivation", "rmd160", "--ecb", "--passphrase-file", ps],
            vec!["--passphrase-file", ps],
            vec![("cipher", s!("aes-ecb"))],
        ),
    ];
    for (name, fs, gen_args, lk_args, expect) in cases {
        let f = encrypt(&d.0, name, fs, &gen_args)?;
        verify_case(&f, &lk_args, &expect)?;
    }
    Ok(Completion::Completed)
}

fn loopaes_matrix() -> TestResult {
    if let Some(r) = prerequisites(&["aespipe"]) {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new("loopaes");
    let pass = p.dir.join("pass");
    let ps = pass.to_str().unwrap();
    let k64 = d.path("k64");
    let k65 = d.path("k65");
    for (n, k) in [("64", &k64), ("65", &k65)] {
        run_ok(Command::new(util::python()).arg(generator()).args([
            "keyfile",
            "--lines",
            n,
            "--out",
            k.to_str().unwrap(),
        ]))?;
    }
    let (k64s, k65s) = (k64.to_str().unwrap(), k65.to_str().unwrap());
    let cases: Vec<Case> = vec![
        (
            "aes128.img",
            "ext2",
            vec!["--scheme", "loop-aes", "--aespipe-args", "-e AES128", "--passphrase-file", ps],
            vec!["--passphrase-file", ps],
            vec![
                ("scheme", s!("loop-aes")),
                ("cipher", s!("aes-cbc-plain64")),
                ("key_bits", s!(128)),
                ("key_derivation", s!("sha256")),
                ("multi_key", serde_json::Value::Null),
            ],
        ),
        (
            "aes192.img",
            "ext3",
            vec!["--scheme", "loop-aes", "--aespipe-args", "-e AES192", "--passphrase-file", ps],
            vec!["--passphrase-file", ps],
            vec![("key_bits", s!(192)), ("key_derivation", s!("sha384"))],
        ),
        (
            "aes256.img",
            "ext4",
            vec!["--scheme", "loop-aes", "--aespipe-args", "-e AES256", "--passphrase-file", ps],
            vec!["--passphrase-file", ps],
            vec![("key_bits", s!(256)), ("key_derivation", s!("sha512"))],
        ),
        (
            "aes256-rmd160.img",
            "ext2",
            vec!["--scheme", "loop-aes", "--aespipe-args", "-e AES256 -H rmd160", "--passphrase-file", ps],
            vec!["--passphrase-file", ps, "--scheme", "loop-aes"],
            vec![("scheme", s!("loop-aes")), ("key_derivation", s!("rmd160")), ("cipher", s!("aes-cbc-plain64"))],
        ),
        (
            "aes128-seed.img",
            "ext2",
            vec!["--scheme", "loop-aes", "--aespipe-args", "-e AES128 -S saltsalt", "--passphrase-file", ps],
            vec!["--passphrase-file", ps, "--pseed", "saltsalt"],
            vec![("key_derivation", s!("sha256")), ("pseed", s!(true))],
        ),
        (
            "aes256-iter.img",
            "ext2",
            vec!["--scheme", "loop-aes", "--aespipe-args", "-e AES256 -C 3", "--passphrase-file", ps],
            vec!["--passphrase-file", ps, "--itercountk", "3"],
            vec![("key_derivation", s!("sha512")), ("itercountk", s!(3))],
        ),
        (
            "aes128-at-offset.img",
            "ext2",
            vec![
                "--scheme",
                "loop-aes",
                "--aespipe-args",
                "-e AES128",
                "--offset",
                "65536",
                "--iv-exclude-offset",
                "--passphrase-file",
                ps,
            ],
            vec!["--passphrase-file", ps],
            vec![("offset_bytes", s!(65536)), ("iv_offset_sectors", s!(0))],
        ),
        (
            "v2.img",
            "ext2",
            vec!["--scheme", "loop-aes", "--aespipe-args", "-e AES128", "--keyfile", k64s],
            vec!["--key-file", k64s],
            vec![
                ("cipher", s!("aes-cbc-lmk")),
                ("multi_key", s!("v2")),
                ("key_bits", s!(128)),
                ("key_derivation", s!("sha256")),
            ],
        ),
        (
            "v3.img",
            "ext3",
            vec!["--scheme", "loop-aes", "--aespipe-args", "-e AES256", "--keyfile", k65s],
            vec!["--key-file", k65s],
            vec![
                ("cipher", s!("aes-cbc-lmk")),
                ("multi_key", s!("v3")),
                ("key_bits", s!(256)),
                ("key_derivation", s!("sha512")),
            ],
        ),
        (
            "v3-192-offset.img",
            "ext2",
            vec!["--scheme", "loop-aes", "--aespipe-args", "-e AES192", "--keyfile", k65s, "--offset", "4096"],
            vec!["--key-file", k65s],
            vec![
                ("multi_key", s!("v3")),
                ("key_bits", s!(192)),
                ("offset_bytes", s!(4096)),
                ("iv_offset_sectors", s!(8)),
            ],
        ),
        (
            "v2-at-offset.img",
            "ext2",
            vec![
                "--scheme",
                "loop-aes",
                "--aespipe-args",
                "-e AES128",
                "--keyfile",
                k64s,
                "--offset",
                "4096",
                "--iv-exclude-offset",
            ],
            vec!["--key-file", k64s, "--offset", "@4096"],
            vec![("multi_key", s!("v2")), ("offset_bytes", s!(4096)), ("iv_offset_sectors", s!(0))],
        ),
    ];
    for (name, fs, gen_args, lk_args, expect) in cases {
        let f = encrypt(&d.0, name, fs, &gen_args)?;
        verify_case(&f, &lk_args, &expect)?;
    }
    Ok(Completion::Completed)
}

/// A gpg-encrypted (armoured, symmetric) multi-key key file, decrypted by loopkit through gpg
/// with the passphrase from --passphrase-file.
fn gpg_keyfile() -> TestResult {
    if let Some(r) = prerequisites(&["aespipe", "gpg"]) {
        return util::skip(r);
    }
    let d = Scratch::new("gpgkey");
    let k65 = d.path("k65");
    run_ok(Command::new(util::python()).arg(generator()).args([
        "keyfile",
        "--lines",
        "65",
        "--out",
        k65.to_str().unwrap(),
    ]))?;
    let gpgpass = d.path("gpgpass");
    std::fs::write(&gpgpass, "gpg passphrase of twenty+ chars\n").map_err(|e| e.to_string())?;
    let home = d.path("gnupg");
    std::fs::create_dir(&home).map_err(|e| e.to_string())?;
    let asc = d.path("k65.asc");
    let out = run(Command::new("sh").arg("-c").arg(format!(
        "gpg --homedir {} --batch --quiet --pinentry-mode loopback --passphrase-file {} --symmetric --armor -o {} {}",
        home.display(),
        gpgpass.display(),
        asc.display(),
        k65.display()
    )))?;
    ensure!(out.status.success(), "gpg --symmetric failed: {}", String::from_utf8_lossy(&out.stderr));
    let f = encrypt(
        &d.0,
        "v3.img",
        "ext2",
        &["--scheme", "loop-aes", "--aespipe-args", "-e AES128", "--keyfile", k65.to_str().unwrap()],
    )?;
    verify_case(
        &f,
        &["--key-file", asc.to_str().unwrap(), "--passphrase-file", gpgpass.to_str().unwrap()],
        &[("multi_key", s!("v3")), ("key_bits", s!(128))],
    )?;
    // Wrong gpg passphrase: a clear error, exit 2.
    let bad = d.path("badpass");
    std::fs::write(&bad, "not the gpg passphrase\n").map_err(|e| e.to_string())?;
    let out = run(&mut loopkit(&[
        "inspect",
        f.image.to_str().unwrap(),
        "--key-file",
        asc.to_str().unwrap(),
        "--passphrase-file",
        bad.to_str().unwrap(),
    ]))?;
    ensure!(code(&out) == 2, "wrong gpg passphrase: exit {}", code(&out));
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("gpg"),
        "message should name gpg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Completion::Completed)
}

/// L6: gpg is run with `--no-symkey-cache` (the agent must not keep the key file's passphrase)
/// and gets the passphrase on a pipe, never on its command line. A fake `gpg` first on PATH
/// records its arguments (the oracle) and fails.
fn gpg_gets_no_symkey_cache() -> TestResult {
    let d = Scratch::new("fake-gpg");
    let bin = d.path("bin");
    std::fs::create_dir(&bin).map_err(|e| e.to_string())?;
    let args = d.path("args");
    let script = format!(
        "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{}'\ncat >/dev/null\nexit 2\n",
        args.display()
    );
    let gpg = bin.join("gpg");
    std::fs::write(&gpg, script).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&gpg, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    let asc = d.path("k.asc");
    std::fs::write(&asc, "-----BEGIN PGP MESSAGE-----\n\njA0ECQMC\n=abcd\n-----END PGP MESSAGE-----\n")
        .map_err(|e| e.to_string())?;
    let pass = d.path("pass");
    let secret = "secret passphrase 123";
    std::fs::write(&pass, format!("{secret}\n")).map_err(|e| e.to_string())?;
    let img = d.path("img");
    std::fs::File::create(&img).and_then(|f| f.set_len(1 << 20)).map_err(|e| e.to_string())?;
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = run(loopkit(&["inspect", img.to_str().unwrap_or(""), "--key-file", asc.to_str().unwrap_or("")])
        .args(["--passphrase-file", pass.to_str().unwrap_or("")])
        .env("PATH", path))?;
    ensure!(
        code(&out) == 2,
        "fake gpg fails: exit {} (2 expected): {}",
        code(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read_to_string(&args).map_err(|e| format!("the fake gpg was not run: {e}"))?;
    let got: Vec<&str> = got.lines().collect();
    ensure!(got.contains(&"--no-symkey-cache"), "gpg arguments lack --no-symkey-cache: {got:?}");
    ensure!(got.contains(&"--passphrase-fd") && got.contains(&"--batch"), "gpg arguments: {got:?}");
    ensure!(!got.iter().any(|a| a.contains(secret)), "the passphrase is on gpg's command line: {got:?}");
    Ok(Completion::Completed)
}

/// Jari Ruusu's aespipe `make tests` vectors (legacy-loop-crypto.md §5.3): aespipe must reproduce
/// the published MD5s (that validates the oracle), and loopkit must decrypt each output back to
/// test-file3 with the parameters given explicitly.
fn aespipe_published_vectors() -> TestResult {
    if let Some(r) = tools_missing(&["aespipe", "md5sum"]) {
        return util::skip(r);
    }
    let d = Scratch::new("aespipe-vectors");
    let f1 = d.path("test-file1");
    std::fs::write(&f1, vec![0u8; 33 * 1024]).map_err(|e| e.to_string())?;
    let aespipe = |args: &str, pass: &str, input: &Path, out: &Path| -> Result<(), Failed> {
        let o = run(Command::new("sh").arg("-c").arg(format!(
            "exec 3<<EOF\n{pass}\nEOF\naespipe {args} -p 3 < {} > {}",
            input.display(),
            out.display()
        )))?;
        ensure!(o.status.success(), "aespipe {args}: {}", String::from_utf8_lossy(&o.stderr));
        Ok(())
    };
    let md5 = |p: &Path| -> Result<String, Failed> {
        let o = run_ok(Command::new("md5sum").arg(p))?;
        Ok(String::from_utf8_lossy(&o.stdout).split_whitespace().next().unwrap_or("").to_string())
    };
    let f3 = d.path("test-file3");
    aespipe("-e AES128", "09876543210987654321", &f1, &f3)?;
    let f3_sha = sha256_file(&f3)?;
    let rows: &[(&str, &str, &str, &[&str])] = &[
        (
            "-e AES128",
            "12345678901234567890",
            "7c1cfd4fdd0d7cc847dd0942a2d48e48",
            &["--key-bits", "128", "--key-derivation", "sha256"],
        ),
        (
            "-e AES192",
            "12345678901234567890",
            "51c91bcc04ee2a4ca00310b519b3228c",
            &["--key-bits", "192", "--key-derivation", "sha384"],
        ),
        (
            "-e AES256",
            "12345678901234567890",
            "1bf92ee337b653cdb32838047dec00fc",
            &["--key-bits", "256", "--key-derivation", "sha512"],
        ),
        (
            "-e AES256 -H rmd160",
            "12345678901234567890",
            "c85eb59da18876ae71ebd838675c6ef4",
            &["--key-bits", "256", "--key-derivation", "rmd160"],
        ),
        (
            "-e AES256 -C 10",
            "12345678901234567890",
            "dadad48a6d3d9b9914199626ed7b710c",
            &["--key-bits", "256", "--key-derivation", "sha512", "--itercountk", "10"],
        ),
        (
            "-e AES -H unhashed1",
            "1234567890123456789012345678901",
            "293b09053055af7ca5235dc6a5bc0b74",
            &["--key-bits", "128", "--key-derivation", "unhashed1"],
        ),
        (
            "-e AES -H unhashed1",
            "12345678901234567890123456789012",
            "6b157917570250ef4370bf9acae49279",
            &["--key-bits", "192", "--key-derivation", "unhashed1"],
        ),
        (
            "-e AES -H unhashed1",
            "123456789012345678901234567890123456789012",
            "6b157917570250ef4370bf9acae49279",
            &["--key-bits", "192", "--key-derivation", "unhashed1"],
        ),
        (
            "-e AES -H unhashed1",
            "1234567890123456789012345678901234567890123",
            "e12fd55fbae9fc0e03517593e253e239",
            &["--key-bits", "256", "--key-derivation", "unhashed1"],
        ),
    ];
    for (i, (args, pass, want_md5, lk)) in rows.iter().enumerate() {
        let out = d.path(&format!("out{i}"));
        aespipe(args, pass, &f3, &out)?;
        let got = md5(&out)?;
        ensure!(got == *want_md5, "aespipe {args}: md5 {got}, published {want_md5}");
        let pf = d.path(&format!("pass{i}"));
        std::fs::write(&pf, format!("{pass}\n")).map_err(|e| e.to_string())?;
        let mut cmd = loopkit(&[
            "verify",
            "--json",
            "--scheme",
            "loop-aes",
            out.to_str().unwrap(),
            "--passphrase-file",
            pf.to_str().unwrap(),
        ]);
        cmd.args(*lk);
        let o = run(&mut cmd)?;
        let v = json(&o)?;
        // No file system inside (the plaintext is itself ciphertext): exit 1, but the payload must decrypt.
        ensure!(code(&o) == 1, "expected exit 1 (fs.unrecognized) for {args}, got {}: {v}", code(&o));
        ensure!(
            v["problems"].as_array().is_some_and(|a| a.iter().any(|p| p["code"] == "fs.unrecognized")),
            "fs.unrecognized not reported: {v}"
        );
        ensure!(v["payload"]["sha256"] == f3_sha.as_str(), "loopkit decryption of aespipe {args} != test-file3");
    }
    Ok(Completion::Completed)
}

/// Plain (unencrypted) images: detected without a passphrase; encryption null.
fn plain_images() -> TestResult {
    if let Some(r) = prerequisites(&[]) {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    for (fs, kind) in [("ext2", "ext2"), ("ext3", "ext3"), ("ext4", "ext4"), ("iso9660", "iso9660"), ("vfat", "vfat")] {
        let img = p.dir.join(format!("{fs}.img"));
        let want = sha256_file(&img)?;
        let o = run(&mut loopkit(&["verify", "--json", img.to_str().unwrap()]))?;
        let v = json(&o)?;
        ensure!(code(&o) == 0, "plain {fs}: exit {} {v}", code(&o));
        ensure!(v["encryption"].is_null() && v["kind"] == "plain", "plain {fs}: {v}");
        ensure!(v["filesystem"]["type"] == kind, "plain {fs}: type {}", v["filesystem"]["type"]);
        ensure!(v["payload"]["sha256"] == want.as_str(), "plain {fs}: payload sha256 differs from sha256sum");
        ensure!(v["cryptsetup"].is_null(), "plain image has no cryptsetup line");
    }
    // blkid agrees on type, label and UUID (independent identification).
    if util::have("blkid") {
        let img = p.dir.join("ext3.img");
        let o = run_ok(Command::new("blkid").args(["-o", "export", "-p"]).arg(&img))?;
        let b = String::from_utf8_lossy(&o.stdout).to_string();
        let v = json(&run(&mut loopkit(&["inspect", "--json", img.to_str().unwrap()]))?)?;
        for (key, field) in [("TYPE", "type"), ("LABEL", "label"), ("UUID", "uuid")] {
            let want = b.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or("");
            ensure!(
                v["filesystem"][field] == want,
                "blkid {key}={want} but loopkit {field}={}",
                v["filesystem"][field]
            );
        }
    }
    Ok(Completion::Completed)
}

/// A sparse cryptoloop image: holes are not read, and the digest equals an independent
/// decryption of the sparse file (holes = zero ciphertext).
fn sparse_image() -> TestResult {
    if let Some(r) = prerequisites(&["fallocate"]) {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new("sparse");
    let pass = p.dir.join("pass");
    let f = encrypt(
        &d.0,
        "s.img",
        "ext2",
        &["--scheme", "cryptoloop", "--derivation", "rmd160", "--passphrase-file", pass.to_str().unwrap()],
    )?;
    // Grow to 64 MiB (a sparse tail) and punch a hole in the unused middle of the fs.
    let file = std::fs::OpenOptions::new().write(true).open(&f.image).map_err(|e| e.to_string())?;
    file.set_len(64 << 20).map_err(|e| e.to_string())?;
    drop(file);
    run_ok(
        Command::new("fallocate").args(["--punch-hole", "--offset", "2097152", "--length", "524288"]).arg(&f.image),
    )?;
    let want = python_rmd160_payload_sha256(&f.image, &pass)?;
    let o = run(&mut loopkit(&[
        "verify",
        "--json",
        f.image.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]))?;
    let v = json(&o)?;
    ensure!(v["payload"]["sha256"] == want.as_str(), "sparse payload {} != python {want}", v["payload"]["sha256"]);
    ensure!(v["payload"]["hole_bytes"].as_u64().unwrap_or(0) >= 60 << 20, "holes not skipped: {}", v["payload"]);
    ensure!(
        v["problems"].as_array().is_some_and(|a| a.iter().any(|p| p["code"] == "image.trailing-data")),
        "trailing data not reported: {v}"
    );
    ensure!(code(&o) == 0, "a sparse tail is not an error: exit {}", code(&o));
    Ok(Completion::Completed)
}

/// SHA-256 of a Debian-style cryptoloop image (rmd160 key from the passphrase file, AES-256-CBC,
/// IV = LE32(sector)) decrypted whole by Python `cryptography`: an independent oracle for images
/// that were changed after the generator made them (holes punched, sectors zeroed).
pub fn python_rmd160_payload_sha256(image: &Path, passfile: &Path) -> Result<String, Failed> {
    let script = r#"
import sys, hashlib
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
def rmd(d):
    try: return hashlib.new('ripemd160', d).digest()
    except ValueError:
        import subprocess; return subprocess.run(['openssl','dgst','-ripemd160','-binary'],input=d,capture_output=True).stdout
p = open(sys.argv[2],'rb').read().split(b'\n')[0]
key = (rmd(p) + rmd(b'A'+p))[:32]
h = hashlib.sha256()
with open(sys.argv[1],'rb') as f:
    k = 0
    while True:
        s = f.read(512)
        if len(s) < 512: break
        d = Cipher(algorithms.AES(key), modes.CBC(k.to_bytes(4,'little')+bytes(12))).decryptor()
        h.update(d.update(s)+d.finalize()); k += 1
print(h.hexdigest())
"#;
    let o = run_ok(Command::new(util::python()).arg("-c").arg(script).arg(image).arg(passfile))?;
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Passphrase from stdin (`-`) and from an inherited file descriptor.
fn passphrase_sources() -> TestResult {
    let (_d, f, pass) = match rmd160_fixture("passsrc", "c.img", "ext2")? {
        Ok(x) => x,
        Err(reason) => return util::skip(reason),
    };
    let lk = util::loopkit_bin();
    for how in [
        format!("{} inspect --json --passphrase-file - {} < {}", lk.display(), f.image.display(), pass.display()),
        format!("{} inspect --json --passphrase-fd 7 {} 7< {}", lk.display(), f.image.display(), pass.display()),
    ] {
        let o = run(Command::new("sh").arg("-c").arg(&how))?;
        let v = json(&o)?;
        ensure!(code(&o) == 0 && v["encryption"]["key_derivation"] == "rmd160", "{how}: exit {} {v}", code(&o));
        ensure!(!String::from_utf8_lossy(&o.stdout).contains(PASS), "the passphrase appears in the output");
    }
    // The no-echo prompt, on a pseudo-terminal (util-linux `script`).
    if util::have("script") {
        let cmd = format!("{} inspect {}", lk.display(), f.image.display());
        let mut child = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        {
            use std::io::Write;
            let mut i = child.stdin.take().ok_or("no stdin")?;
            std::thread::sleep(std::time::Duration::from_millis(500));
            let _ = writeln!(i, "{PASS}");
        }
        let o = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&o.stdout);
        ensure!(text.contains("Passphrase for"), "no prompt shown: {text}");
        ensure!(text.contains("rmd160"), "prompted passphrase not used: {text}");
        ensure!(!text.contains(PASS), "the passphrase was echoed: {text}");
    }
    Ok(Completion::Completed)
}

/// Bad input: clear message, right exit code, no panic, image unchanged.
fn bad_input() -> TestResult {
    if let Some(r) = prerequisites(&[]) {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new("bad");
    let pass = p.dir.join("pass");
    let ps = pass.to_str().unwrap();
    let f =
        encrypt(&d.0, "c.img", "ext2", &["--scheme", "cryptoloop", "--derivation", "rmd160", "--passphrase-file", ps])?;
    let img = f.image.to_str().unwrap();
    let wrong = d.path("wrong");
    std::fs::write(&wrong, "not the passphrase\n").map_err(|e| e.to_string())?;
    let ws = wrong.to_str().unwrap();
    // A truncated copy (not a multiple of 512) and a heavily truncated one.
    let data = std::fs::read(&f.image).map_err(|e| e.to_string())?;
    let trunc = d.path("trunc.img");
    std::fs::write(&trunc, &data[..data.len() / 2 + 100]).map_err(|e| e.to_string())?;
    let tiny = d.path("tiny.img");
    std::fs::write(&tiny, &data[..700]).map_err(|e| e.to_string())?;
    let empty = d.path("empty.img");
    std::fs::write(&empty, b"").map_err(|e| e.to_string())?;
    let random = d.path("random.img");
    let mut x = 0x9e3779b97f4a7c15u64;
    let rnd: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(&random, &rnd).map_err(|e| e.to_string())?;
    let dir = d.0.to_str().unwrap().to_string();
    let (nopass, nokey) = (d.path("nopass"), d.path("nokey"));
    let missing = d.path("missing.img");
    let (ts, tis, es, rs, ms) = (
        trunc.to_str().unwrap(),
        tiny.to_str().unwrap(),
        empty.to_str().unwrap(),
        random.to_str().unwrap(),
        missing.to_str().unwrap(),
    );
    // (args, expected exit code, a word the message must contain)
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["verify", img, "--passphrase-file", ws], 2, "combinations"),
        (vec!["inspect", img, "--passphrase-file", ws], 2, "combinations"),
        (vec!["verify", ts, "--passphrase-file", ps], 1, "truncated"),
        (vec!["verify", tis, "--passphrase-file", ps], 2, "no parameter set"),
        (vec!["verify", es, "--passphrase-file", ps], 2, "empty"),
        (vec!["inspect", es], 2, "empty"),
        // A directory is verified as a batch; this one holds images that cannot be
        // checked (empty, tiny, wrong passphrase), so the batch exits 2 and says it walked a directory.
        (vec!["verify", &dir, "--passphrase-file", ps], 2, "directory"),
        (vec!["verify", ms, "--passphrase-file", ps], 2, "cannot open"),
        (vec!["verify", rs, "--passphrase-file", ps], 2, "no parameter set"),
        (vec!["verify", rs, "--no-prompt"], 2, "passphrase"),
        (vec!["verify", img, "--passphrase-file", ps, "--offset", "99999999999"], 2, "past the end"),
        (vec!["verify", img, "--passphrase-file", ps, "--key-bits", "100"], 2, "128, 192 or 256"),
        (vec!["verify", img, "--passphrase-file", ps, "--cipher", "idea-cbc-plain"], 2, "not supported"),
        (vec!["verify", img, "--passphrase-file", ps, "--key-derivation", "md4"], 2, "unknown key derivation"),
        // Typed flags fail while the arguments are parsed, before any file is opened.
        (vec!["verify", "/nonexistent/x.img", "--cipher", "aes-cbc-plian"], 2, "not supported"),
        (vec!["inspect", "/nonexistent/x.img", "--scheme", "cryptolop"], 2, "unknown scheme"),
        (vec!["verify", img, "--passphrase-file", nopass.to_str().unwrap()], 2, "cannot open passphrase file"),
        (vec!["verify", img, "--key-file", nokey.to_str().unwrap()], 2, "cannot read key file"),
        (vec!["verify", img, "--passphrase-file", ps, "--offset", "12x"], 2, "unknown unit"),
        (vec!["verify"], 2, "IMAGE"),
        (vec!["frobnicate"], 2, "unrecognized subcommand"),
    ];
    for (args, want, word) in cases {
        let before: Vec<String> = args
            .iter()
            .filter(|a| Path::new(a).is_file())
            .map(|a| sha256_file(Path::new(a)))
            .collect::<Result<_, _>>()?;
        let o = run(&mut loopkit(&args))?;
        let err = String::from_utf8_lossy(&o.stderr);
        ensure!(
            code(&o) == want,
            "{args:?}: exit {} (want {want})\nstdout: {}\nstderr: {err}",
            code(&o),
            String::from_utf8_lossy(&o.stdout)
        );
        ensure!(!err.contains("panicked"), "{args:?} panicked: {err}");
        let all = format!("{}{err}", String::from_utf8_lossy(&o.stdout));
        ensure!(all.contains(word), "{args:?}: output should mention {word:?}:\n{all}");
        let after: Vec<String> = args
            .iter()
            .filter(|a| Path::new(a).is_file())
            .map(|a| sha256_file(Path::new(a)))
            .collect::<Result<_, _>>()?;
        ensure!(before == after, "{args:?} modified an input file");
    }
    // --json on failure still prints exactly one JSON document with the error.
    let o = run(&mut loopkit(&["verify", "--json", img, "--passphrase-file", ws]))?;
    let v = json(&o)?;
    ensure!(v["ok"] == false && v["error"]["kind"] == "no-match", "json error document: {v}");
    // Random data without a secret: inspect says "needs a passphrase", exit 0.
    let o = run(&mut loopkit(&["inspect", "--json", "--no-prompt", rs]))?;
    let v = json(&o)?;
    ensure!(code(&o) == 0 && v["needs_secret"] == true && v["kind"] == "needs-secret", "random inspect: {v}");
    Ok(Completion::Completed)
}

/// The exact JSON contract of `verify --json` (keys other work relies on).
fn json_contract() -> TestResult {
    let (_d, f, pass) = match rmd160_fixture("json", "c.img", "ext3")? {
        Ok(x) => x,
        Err(reason) => return util::skip(reason),
    };
    let v = json(&run(&mut loopkit(&[
        "verify",
        "--json",
        f.image.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]))?)?;
    for k in ["image", "size_bytes", "encryption", "filesystem", "cryptsetup", "payload", "ok", "problems"] {
        ensure!(v.get(k).is_some(), "verify --json lacks {k}");
    }
    for k in ["scheme", "cipher", "key_bits", "key_derivation", "multi_key", "offset_bytes", "iv_offset_sectors"] {
        ensure!(v["encryption"].get(k).is_some(), "encryption lacks {k}");
    }
    for k in ["type", "label", "uuid", "size_bytes"] {
        ensure!(v["filesystem"].get(k).is_some(), "filesystem lacks {k}");
    }
    for k in ["offset_bytes", "size_bytes", "sha256"] {
        ensure!(v["payload"].get(k).is_some(), "payload lacks {k}");
    }
    ensure!(
        v["size_bytes"].as_u64() == Some(std::fs::metadata(&f.image).map_err(|e| e.to_string())?.len()),
        "size_bytes"
    );
    ensure!(v["image"] == f.image.to_str().unwrap(), "image path");
    let s = serde_json::to_string(&v).map_err(|e| e.to_string())?;
    ensure!(!s.contains(PASS), "the passphrase appears in the JSON");
    Ok(Completion::Completed)
}

/// The sample shipped in testdata/ (README quick start) verifies, and its digest equals the
/// plaintext digest recorded by the generator when the sample was made.
fn shipped_sample() -> TestResult {
    let root = util::repo_root().join("testdata/sample");
    let img = root.join("archive-2008.img");
    let want = std::fs::read_to_string(root.join("plaintext.sha256")).map_err(|e| format!("sample digest: {e}"))?;
    let want = want.split_whitespace().next().unwrap_or("").to_string();
    let o = run(&mut loopkit(&[
        "verify",
        "--json",
        img.to_str().unwrap(),
        "--passphrase-file",
        root.join("passphrase.txt").to_str().unwrap(),
    ]))?;
    let v = json(&o)?;
    ensure!(code(&o) == 0, "sample verify exit {}: {v}", code(&o));
    ensure!(
        v["payload"]["sha256"] == want.as_str(),
        "sample payload {} != recorded plaintext {want}",
        v["payload"]["sha256"]
    );
    Ok(Completion::Completed)
}

/// SIGINT during a long verify: exit 130, a clear message, no output document claiming success.
fn interrupted() -> TestResult {
    let (_d, f, pass) = match rmd160_fixture("sigint", "c.img", "ext2")? {
        Ok(x) => x,
        Err(reason) => return util::skip(reason),
    };
    // A 1 GiB sparse tail keeps the hasher busy for a while without using disk space.
    let file = std::fs::OpenOptions::new().write(true).open(&f.image).map_err(|e| e.to_string())?;
    file.set_len(1 << 30).map_err(|e| e.to_string())?;
    drop(file);
    let child = loopkit(&[
        "verify",
        "--json",
        "--threads",
        "1",
        f.image.to_str().unwrap(),
        "--passphrase-file",
        pass.to_str().unwrap(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .map_err(|e| e.to_string())?;
    std::thread::sleep(std::time::Duration::from_millis(150));
    run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]))?;
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    if code(&o) == 0 {
        return util::skip("verify finished before SIGINT arrived (machine too fast for this check)");
    }
    ensure!(code(&o) == 130, "exit {} after SIGINT, want 130: {}", code(&o), String::from_utf8_lossy(&o.stderr));
    let v = json(&o)?;
    ensure!(v["ok"] == false && v["error"]["kind"] == "interrupted", "interrupted document: {v}");
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("legacy::cryptoloop_matrix", cryptoloop_matrix),
        trial("legacy::loopaes_matrix", loopaes_matrix),
        trial("legacy::gpg_keyfile", gpg_keyfile),
        trial("legacy::gpg_gets_no_symkey_cache", gpg_gets_no_symkey_cache),
        trial("legacy::aespipe_published_vectors", aespipe_published_vectors),
        trial("legacy::plain_images", plain_images),
        trial("legacy::sparse_image", sparse_image),
        trial("legacy::passphrase_sources", passphrase_sources),
        trial("legacy::bad_input", bad_input),
        trial("legacy::json_contract", json_contract),
        trial("legacy::shipped_sample", shipped_sample),
        trial("legacy::interrupted", interrupted),
    ]
}
