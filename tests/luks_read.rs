//! Reading LUKS: containers made by `cryptsetup luksFormat` (LUKS1/LUKS2, pbkdf2,
//! argon2i/argon2id, 512/4096-byte sectors, detached headers, second keyslots) with payloads
//! written by Python `cryptography` (`testdata/gen/luks_oracle.py`) from known volume keys; loopkit
//! must unlock them and hash the payload to the plaintext's SHA-256. Also damaged and truncated
//! headers: clear errors, never a panic, inputs unchanged. Also the shared cryptsetup oracle
//! helpers the migrate tests use.

use crate::ensure;
use crate::legacy::{Fixture, plains};
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, run_ok, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The new passphrase the LUKS tests use (files hold it without a newline, so cryptsetup's
/// `--key-file` and loopkit's first-line rule read the same bytes).
pub const NEW_PASS: &str = "new archival passphrase 2026";

/// Cheap KDF flags for loopkit (tests stay fast).
pub const CHEAP_ARGON2: &[&str] =
    &["--pbkdf-memory", "32768", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "2"];
/// PBKDF2 with cryptsetup's minimum iterations.
pub const CHEAP_PBKDF2: &[&str] = &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];

/// Tools the LUKS tests need, or the reason to skip.
pub fn missing() -> Option<String> {
    if let Err(e) = plains() {
        return Some(e);
    }
    if !util::have("cryptsetup") {
        return Some("missing tools: cryptsetup".into());
    }
    // luks_oracle.py imports cryptography (plains() has checked it already).
    util::python_module_missing("cryptography")
}

/// What every LUKS/migrate test starts from: a scratch directory, the legacy fixtures' passphrase
/// file and a new-passphrase file (no newline).
pub struct Env {
    pub d: Scratch,
    pub pass: PathBuf,
    pub np: PathBuf,
    pub plains: &'static crate::legacy::Plains,
}

impl Env {
    /// `Ok(Err(reason))` means: skip the test.
    pub fn new(name: &str) -> Result<Result<Env, String>, Failed> {
        if let Some(r) = missing() {
            return Ok(Err(r));
        }
        let plains = plains().map_err(Failed::from)?;
        let d = Scratch::new(name);
        let np = d.path("newpass");
        write_pass(&np, NEW_PASS)?;
        Ok(Ok(Env { pass: plains.dir.join("pass"), d, np, plains }))
    }

    /// A cryptoloop fixture of `fs` (`legacy.py encrypt --scheme cryptoloop …`).
    pub fn cryptoloop(
        &self,
        name: &str,
        fs: &str,
        derivation: &str,
        key_bits: &str,
        extra: &[&str],
    ) -> Result<Fixture, Failed> {
        let mut a = vec!["--scheme", "cryptoloop", "--derivation", derivation, "--key-bits", key_bits];
        a.extend(["--passphrase-file", self.pass.to_str().unwrap()]);
        a.extend(extra);
        crate::legacy::encrypt(&self.d.0, name, fs, &a)
    }

    /// A loop-AES fixture made by aespipe with `aespipe_args` and `secret` (`--passphrase-file F`
    /// or `--keyfile K`).
    pub fn loopaes(&self, name: &str, fs: &str, aespipe_args: &str, secret: &[&str]) -> Result<Fixture, Failed> {
        let mut a = vec!["--scheme", "loop-aes", "--aespipe-args", aespipe_args];
        a.extend(secret);
        crate::legacy::encrypt(&self.d.0, name, fs, &a)
    }

    /// A deterministic loop-AES multi-key key file of 64 or 65 lines.
    pub fn keyfile(&self, lines: &str) -> Result<PathBuf, Failed> {
        let k = self.d.path(&format!("k{lines}"));
        run_ok(Command::new(util::python()).arg(util::repo_root().join("testdata/gen/legacy.py")).args([
            "keyfile",
            "--lines",
            lines,
            "--out",
            k.to_str().unwrap(),
        ]))?;
        Ok(k)
    }
}

/// `let e = env!("name");` — an [`Env`], or return a skip.
#[macro_export]
macro_rules! luks_env {
    ($name:expr) => {
        match $crate::luks_read::Env::new($name)? {
            Ok(e) => e,
            Err(reason) => return $crate::util::skip(reason),
        }
    };
}

/// `testdata/gen/luks_oracle.py ARGS` → its JSON.
pub fn oracle(args: &[&str]) -> Result<serde_json::Value, Failed> {
    let out =
        run_ok(Command::new(util::python()).arg(util::repo_root().join("testdata/gen/luks_oracle.py")).args(args))?;
    serde_json::from_slice(&out.stdout).map_err(|e| format!("luks_oracle.py output: {e}").into())
}

/// Write `s` to `p` without a newline.
pub fn write_pass(p: &Path, s: &str) -> Result<(), Failed> {
    std::fs::write(p, s).map_err(|e| format!("writing {}: {e}", p.display()).into())
}

/// `cryptsetup --disable-locks ARGS` (locks off also turns cryptsetup's automatic header repair
/// off).
pub fn cryptsetup(args: &[&str]) -> Result<std::process::Output, Failed> {
    run(Command::new("cryptsetup").arg("--disable-locks").args(args))
}

/// What cryptsetup says about a LUKS file, after proving it reads it without repairing
/// anything and changes nothing: the volume key (dumped with the right passphrase) and, for
/// LUKS2, the JSON metadata. `header` is a detached header file (the data device is `image`).
pub struct CsView {
    /// The volume key cryptsetup recovered.
    pub volume_key: Vec<u8>,
    /// `luksDump --dump-json-metadata` (LUKS2) or Null.
    pub json: serde_json::Value,
}

/// Run the cryptsetup oracle on `meta` (the file holding the header: the image, or a detached
/// header) with the right passphrase in `passfile`.
pub fn cryptsetup_view(dir: &Path, meta: &Path, passfile: &Path) -> Result<CsView, Failed> {
    let before = sha256_file(meta)?;
    let m = meta.to_str().unwrap();
    let dump = cryptsetup(&["--debug", "luksDump", m])?;
    let text = String::from_utf8_lossy(&dump.stdout).to_string() + &String::from_utf8_lossy(&dump.stderr);
    ensure!(dump.status.success(), "cryptsetup luksDump {m} failed:\n{text}");
    for bad in ["Repairing", "validation failed", "requires recovery", "checksum error", "Checksum error"] {
        ensure!(!text.contains(bad), "cryptsetup luksDump {m} says {bad:?}:\n{text}");
    }
    let good = cryptsetup(&["open", "--test-passphrase", "--key-file", passfile.to_str().unwrap(), m])?;
    ensure!(
        code(&good) == 0,
        "test-passphrase (right) exit {}: {}",
        code(&good),
        String::from_utf8_lossy(&good.stderr)
    );
    let wrong = dir.join("wrong-pass");
    write_pass(&wrong, "definitely not it")?;
    let bad = cryptsetup(&["open", "--test-passphrase", "--key-file", wrong.to_str().unwrap(), m])?;
    ensure!(code(&bad) == 2, "test-passphrase (wrong) exit {} (want 2)", code(&bad));
    let vkf = dir.join("cryptsetup-vk");
    let _ = std::fs::remove_file(&vkf);
    let vk = cryptsetup(&[
        "luksDump",
        "--dump-volume-key",
        "--batch-mode",
        "--key-file",
        passfile.to_str().unwrap(),
        "--volume-key-file",
        vkf.to_str().unwrap(),
        m,
    ])?;
    ensure!(vk.status.success(), "dump-volume-key failed: {}", String::from_utf8_lossy(&vk.stderr));
    let volume_key = std::fs::read(&vkf).map_err(|e| format!("reading dumped key: {e}"))?;
    let js = cryptsetup(&["luksDump", "--dump-json-metadata", m])?;
    let json = if js.status.success() {
        serde_json::from_slice(&js.stdout).unwrap_or_default()
    } else {
        serde_json::Value::Null
    };
    ensure!(sha256_file(meta)? == before, "cryptsetup changed {m}");
    Ok(CsView { volume_key, json })
}

/// A cryptsetup-made container holding `plain` (payload written by Python with a known key).
pub fn make_container(
    d: &Path,
    name: &str,
    plain: &Path,
    passfile: &Path,
    flags: &[&str],
    key_bytes: usize,
) -> Result<(PathBuf, String), Failed> {
    let img = d.join(name);
    let vk = d.join(format!("{name}.vk"));
    let key: Vec<u8> = (0..key_bytes).map(|i| (i as u8).wrapping_mul(29).wrapping_add(name.len() as u8)).collect();
    std::fs::write(&vk, &key).map_err(|e| e.to_string())?;
    let plen = std::fs::metadata(plain).map_err(|e| e.to_string())?.len();
    let f = std::fs::File::create(&img).map_err(|e| e.to_string())?;
    f.set_len((16 << 20) + plen).map_err(|e| e.to_string())?;
    drop(f);
    let mut args = vec![
        "luksFormat",
        "--batch-mode",
        "--volume-key-file",
        vk.to_str().unwrap(),
        "--key-file",
        passfile.to_str().unwrap(),
    ];
    let ks = (key_bytes * 8).to_string();
    args.extend(["--key-size", &ks]);
    args.extend(flags);
    args.push(img.to_str().unwrap());
    let o = cryptsetup(&args)?;
    ensure!(o.status.success(), "luksFormat {name} {flags:?}: {}", String::from_utf8_lossy(&o.stderr));
    let dump = String::from_utf8_lossy(&cryptsetup(&["luksDump", img.to_str().unwrap()])?.stdout).to_string();
    let (offset, sector) = payload_geometry(&dump)?;
    let r = oracle(&[
        "xts-encrypt",
        "--plain",
        plain.to_str().unwrap(),
        "--key-file",
        vk.to_str().unwrap(),
        "--image",
        img.to_str().unwrap(),
        "--offset",
        &offset.to_string(),
        "--sector",
        &sector.to_string(),
    ])?;
    Ok((img, r["plaintext_sha256"].as_str().unwrap_or("").to_string()))
}

/// Data offset (bytes) and sector size from `cryptsetup luksDump` text.
fn payload_geometry(dump: &str) -> Result<(u64, u64), Failed> {
    let num = |l: &str| l.split_whitespace().find_map(|w| w.parse::<u64>().ok());
    if let Some(l) = dump.lines().find(|l| l.trim_start().starts_with("Payload offset:")) {
        return Ok((num(l).unwrap_or(0) * 512, 512));
    }
    let off = dump.lines().find(|l| l.trim_start().starts_with("offset:")).and_then(num);
    let sec = dump.lines().find(|l| l.trim_start().starts_with("sector:")).and_then(num);
    match (off, sec) {
        (Some(o), Some(s)) => Ok((o, s)),
        _ => util::fail(format!("cannot find the payload geometry in:\n{dump}")),
    }
}

pub(crate) fn verify_json(img: &Path, extra: &[&str]) -> Result<(std::process::Output, serde_json::Value), Failed> {
    let mut c = loopkit(&["verify", "--json", "--no-prompt", img.to_str().unwrap()]);
    c.args(extra);
    let o = run(&mut c)?;
    let v = json(&o)?;
    Ok((o, v))
}

fn cryptsetup_made_containers() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new("luks-read");
    let pass = d.path("pass");
    write_pass(&pass, NEW_PASS)?;
    let ps = pass.to_str().unwrap();
    let ext2 = p.dir.join("ext2.img");
    let ext4 = p.dir.join("ext4.img");
    let argon = [
        "--type",
        "luks2",
        "--pbkdf",
        "argon2id",
        "--pbkdf-memory",
        "32768",
        "--pbkdf-force-iterations",
        "4",
        "--pbkdf-parallel",
        "2",
        "--sector-size",
        "512",
    ];
    let argon_i = [
        "--type",
        "luks2",
        "--pbkdf",
        "argon2i",
        "--pbkdf-memory",
        "32768",
        "--pbkdf-force-iterations",
        "4",
        "--pbkdf-parallel",
        "3",
        "--sector-size",
        "512",
    ];
    let pb4k = ["--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--sector-size", "4096"];
    let l1 = ["--type", "luks1", "--pbkdf-force-iterations", "1000"];
    let l1sha1 = ["--type", "luks1", "--hash", "sha1", "--pbkdf-force-iterations", "1000"];
    type Case<'a> = (&'a str, &'a Path, &'a [&'a str], usize, &'a str, u32);
    let cases: Vec<Case> = vec![
        ("l2-argon2id.img", &ext2, &argon, 64, "luks2", 512),
        ("l2-argon2i-aes128.img", &ext4, &argon_i, 32, "luks2", 512),
        ("l2-pbkdf2-4k.img", &ext4, &pb4k, 64, "luks2", 4096),
        ("l1-sha256.img", &ext2, &l1, 64, "luks1", 512),
        ("l1-sha1-aes128.img", &ext4, &l1sha1, 32, "luks1", 512),
    ];
    for (name, plain, flags, kb, scheme, sector) in cases {
        let (img, want) = make_container(&d.0, name, plain, &pass, flags, kb)?;
        let before = sha256_file(&img)?;
        let (o, v) = verify_json(&img, &["--passphrase-file", ps])?;
        ensure!(code(&o) == 0, "{name}: verify exit {}: {}\n{v}", code(&o), String::from_utf8_lossy(&o.stderr));
        ensure!(
            v["payload"]["sha256"] == want.as_str(),
            "{name}: payload {} != plaintext {want}",
            v["payload"]["sha256"]
        );
        ensure!(v["kind"] == "luks" && v["encryption"]["scheme"] == scheme, "{name}: {v}");
        ensure!(v["encryption"]["cipher"] == "aes-xts-plain64" && v["encryption"]["key_bits"] == kb * 8, "{name}: {v}");
        ensure!(v["luks"]["sector_size"] == sector && v["luks"]["opened_keyslot"] == 0, "{name}: {}", v["luks"]);
        ensure!(v["filesystem"]["type"].is_string(), "{name}: no file system found: {v}");
        // Locked: inspect says a secret is needed and still describes the header.
        let o = run(&mut loopkit(&["inspect", "--json", "--no-prompt", img.to_str().unwrap()]))?;
        let i = json(&o)?;
        ensure!(code(&o) == 0 && i["needs_secret"] == true && i["luks"]["version"].is_number(), "{name} locked: {i}");
        // Wrong passphrase: exit 2, wrong-key.
        let bad = d.path("bad");
        write_pass(&bad, "not the passphrase")?;
        let (o, e) = verify_json(&img, &["--passphrase-file", bad.to_str().unwrap()])?;
        ensure!(code(&o) == 2 && e["error"]["kind"] == "wrong-key", "{name} wrong pass: exit {} {e}", code(&o));
        ensure!(sha256_file(&img)? == before, "{name} was modified");
    }
    Ok(Completion::Completed)
}

fn keyslots_and_detached() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new("luks-slots");
    let pass = d.path("pass");
    write_pass(&pass, NEW_PASS)?;
    let pass2 = d.path("pass2");
    write_pass(&pass2, "second keyslot passphrase")?;
    let flags = ["--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--sector-size", "512"];
    let (img, want) = make_container(&d.0, "two.img", &p.dir.join("ext2.img"), &pass, &flags, 64)?;
    let o = cryptsetup(&[
        "luksAddKey",
        "--batch-mode",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        pass.to_str().unwrap(),
        img.to_str().unwrap(),
        pass2.to_str().unwrap(),
    ])?;
    ensure!(o.status.success(), "luksAddKey: {}", String::from_utf8_lossy(&o.stderr));
    let (o, v) = verify_json(&img, &["--passphrase-file", pass2.to_str().unwrap()])?;
    ensure!(code(&o) == 0 && v["payload"]["sha256"] == want.as_str(), "second keyslot: {v}");
    ensure!(
        v["luks"]["opened_keyslot"] == 1 && v["luks"]["keyslots"].as_array().map(Vec::len) == Some(2),
        "{}",
        v["luks"]
    );

    // Detached header made by cryptsetup; data image is the bare payload.
    let data = d.path("data.img");
    std::fs::copy(p.dir.join("ext4.img"), &data).map_err(|e| e.to_string())?;
    let hdr = d.path("hdr.img");
    let vk = d.path("det.vk");
    std::fs::write(&vk, (0..64u8).map(|i| i.wrapping_mul(7).wrapping_add(3)).collect::<Vec<u8>>())
        .map_err(|e| e.to_string())?;
    let o = cryptsetup(&[
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--header",
        hdr.to_str().unwrap(),
        "--offset",
        "0",
        "--sector-size",
        "512",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--volume-key-file",
        vk.to_str().unwrap(),
        "--key-file",
        pass.to_str().unwrap(),
        data.to_str().unwrap(),
    ])?;
    ensure!(o.status.success(), "luksFormat --header: {}", String::from_utf8_lossy(&o.stderr));
    let r = oracle(&[
        "xts-encrypt",
        "--plain",
        p.dir.join("ext4.img").to_str().unwrap(),
        "--key-file",
        vk.to_str().unwrap(),
        "--image",
        data.to_str().unwrap(),
        "--offset",
        "0",
    ])?;
    let (o, v) = verify_json(&data, &["--passphrase-file", pass.to_str().unwrap(), "--header", hdr.to_str().unwrap()])?;
    ensure!(code(&o) == 0, "detached verify exit {}: {}", code(&o), String::from_utf8_lossy(&o.stderr));
    ensure!(
        v["payload"]["sha256"] == r["plaintext_sha256"],
        "detached payload {} != {}",
        v["payload"]["sha256"],
        r["plaintext_sha256"]
    );
    ensure!(v["cryptsetup"].as_str().is_some_and(|c| c.contains("--header")), "{v}");
    // Locked (no passphrase): the printed line must name the header too. cryptsetup runs it
    // (as `--test-passphrase`, which needs no device-mapper) and accepts the passphrase.
    let o = run(&mut loopkit(&["inspect", "--json", "--header", hdr.to_str().unwrap(), data.to_str().unwrap()]))?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
    let line = v["cryptsetup"].as_str().unwrap_or("").to_string();
    ensure!(line.starts_with("cryptsetup open --readonly ") && line.contains("--header"), "locked inspect: {v}");
    let test = line.replacen(
        "cryptsetup open --readonly ",
        &format!("cryptsetup open --test-passphrase --key-file {} ", pass.display()),
        1,
    );
    let o = run(Command::new("sh").arg("-c").arg(&test))?;
    ensure!(o.status.success(), "{test}: {}", String::from_utf8_lossy(&o.stderr));
    Ok(Completion::Completed)
}

/// Damaged, truncated and randomly mutated LUKS files: a clear error or a noted repair source,
/// never a panic (exit 101), never a change to the file.
fn damaged_headers() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new("luks-damage");
    let pass = d.path("pass");
    write_pass(&pass, NEW_PASS)?;
    let ps = pass.to_str().unwrap();
    let flags = ["--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--sector-size", "512"];
    let (img, want) = make_container(&d.0, "base.img", &p.dir.join("ext2.img"), &pass, &flags, 64)?;
    let orig = std::fs::read(&img).map_err(|e| e.to_string())?;
    let variant = |name: &str, f: &dyn Fn(&mut Vec<u8>)| -> Result<PathBuf, Failed> {
        let mut b = orig.clone();
        f(&mut b);
        let q = d.path(name);
        std::fs::write(&q, b).map_err(|e| e.to_string())?;
        Ok(q)
    };
    // Primary JSON damaged: the secondary copy is used, and the report says so.
    let prim = variant("primary.img", &|b| b[4096 + 10] ^= 0x20)?;
    let (o, v) = verify_json(&prim, &["--passphrase-file", ps])?;
    ensure!(code(&o) == 0 && v["payload"]["sha256"] == want.as_str(), "primary damaged: {v}");
    ensure!(v["notes"].to_string().contains("primary"), "damage not reported: {v}");
    // Both copies damaged: corrupt, exit 2.
    let both = variant("both.img", &|b| {
        b[4096 + 10] ^= 0x20;
        b[16384 + 4096 + 10] ^= 0x20;
    })?;
    let (o, v) = verify_json(&both, &["--passphrase-file", ps])?;
    ensure!(code(&o) == 2 && v["error"]["kind"] == "corrupt", "both damaged: exit {} {v}", code(&o));
    // Keyslot material damaged: the passphrase no longer opens it (wrong-key), exit 2.
    let ks = variant("keyslot.img", &|b| {
        for x in &mut b[32768 + 1000..32768 + 1100] {
            *x ^= 0xff;
        }
    })?;
    let (o, v) = verify_json(&ks, &["--passphrase-file", ps])?;
    ensure!(code(&o) == 2 && v["error"]["kind"] == "wrong-key", "keyslot damaged: exit {} {v}", code(&o));
    // Truncations and random mutations.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut cases: Vec<PathBuf> = Vec::new();
    for cut in [100usize, 600, 4096, 9000, 16384, 20000, 32768, 40000, 300_000] {
        cases.push(variant(&format!("cut{cut}.img"), &|b| b.truncate(cut))?);
    }
    for i in 0..24 {
        let (a, x) = (rnd() as usize % 40960, (rnd() % 255 + 1) as u8);
        cases.push(variant(&format!("mut{i}.img"), &|b| b[a] ^= x)?);
    }
    for q in &cases {
        let before = sha256_file(q)?;
        let o = run(&mut loopkit(&["verify", "--json", "--no-prompt", "--passphrase-file", ps, q.to_str().unwrap()]))?;
        ensure!(
            matches!(code(&o), 0..=2),
            "{}: exit {} (panic?): {}",
            q.display(),
            code(&o),
            String::from_utf8_lossy(&o.stderr)
        );
        ensure!(!String::from_utf8_lossy(&o.stderr).contains("panicked"), "{}: panic", q.display());
        json(&o)?;
        ensure!(sha256_file(q)? == before, "{} modified", q.display());
    }
    Ok(Completion::Completed)
}

/// Key-derivation costs read from a header are capped (a LUKS1 keyslot patched to
/// ~4 billion PBKDF2 iterations is refused at once, naming the flag), and with the cap lifted
/// the derivation stops on Ctrl-C (exit 130) instead of running for hours.
fn hostile_kdf_costs() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new("luks-kdf-cap");
    let pass = d.path("pass");
    write_pass(&pass, NEW_PASS)?;
    let ps = pass.to_str().unwrap();
    let flags = ["--type", "luks1", "--pbkdf-force-iterations", "1000"];
    let (img, _) = make_container(&d.0, "base.img", &p.dir.join("ext2.img"), &pass, &flags, 32)?;
    let mut b = std::fs::read(&img).map_err(|e| e.to_string())?;
    // LUKS1 phdr: keyslot 0 at byte 208 = active (u32 BE), iterations (u32 BE); no checksum.
    ensure!(b[208..212] == [0x00, 0xAC, 0x71, 0xF3], "keyslot 0 of the cryptsetup header is not active");
    b[212..216].copy_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
    let hostile = d.path("hostile.img");
    std::fs::write(&hostile, &b).map_err(|e| e.to_string())?;
    let before = sha256_file(&hostile)?;
    let t = std::time::Instant::now();
    let (o, v) = verify_json(&hostile, &["--passphrase-file", ps])?;
    ensure!(code(&o) == 2 && v["error"]["kind"] == "unsupported", "capped KDF: exit {} {v}", code(&o));
    ensure!(v["error"]["message"].to_string().contains("--allow-expensive-kdf"), "the flag is not named: {v}");
    ensure!(t.elapsed() < std::time::Duration::from_secs(30), "refusing took {:?}", t.elapsed());
    // Lifted cap: the derivation runs, and Ctrl-C stops it promptly.
    let child = Command::new(util::loopkit_bin())
        .args(["verify", "--json", "--no-prompt", "--allow-expensive-kdf", "--passphrase-file", ps])
        .arg(&hostile)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    run_ok(Command::new("kill").args(["-INT", &child.id().to_string()]))?;
    let t = std::time::Instant::now();
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    ensure!(code(&o) == 130, "after Ctrl-C: exit {} {}", code(&o), String::from_utf8_lossy(&o.stderr));
    ensure!(t.elapsed() < std::time::Duration::from_secs(10), "stopping took {:?}", t.elapsed());
    ensure!(sha256_file(&hostile)? == before, "the image was modified");
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("luks_read::hostile_kdf_costs", hostile_kdf_costs),
        trial("luks_read::cryptsetup_made_containers", cryptsetup_made_containers),
        trial("luks_read::keyslots_and_detached", keyslots_and_detached),
        trial("luks_read::damaged_headers", damaged_headers),
    ]
}
