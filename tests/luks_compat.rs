//! Old LUKS volumes made by other hands: cryptsetup's own LUKS1 compatibility images
//! (`tests/luks1-images.tar.xz` of the installed cryptsetup's Debian source package, fetched at
//! test time by `testdata/gen/apt-source.sh`, never committed: 12 images with PBKDF2 over sha1,
//! sha256 and whirlpool, aes/twofish/serpent XTS, `aes-xts-essiv:wp256`, `aes-cbc-essiv:sha256`
//! and `aes-lrw-plain64`, each a vfat file system with UUID `DEAD-BABE` opened by the key file
//! `keyfile1`, as cryptsetup's `luks1-compat-test` checks them), and fresh `cryptsetup
//! luksFormat --hash whirlpool` containers.
//!
//! Oracles: cryptsetup's volume-key digest in each header (loopkit must unlock with the key file
//! and refuse another), cryptsetup's `luksDump` cipher, cryptsetup's expected UUID, and — where
//! the host's cryptsetup can open the image without the kernel (its userspace AES) — the volume
//! key it dumps, from which Python `cryptography` (+ `openssl dgst` for Whirlpool ESSIV salts)
//! decrypts the payload to the hash loopkit must print. The other ciphers' payloads are checked
//! against the kernel by `vm_luks_compat`.

use crate::ensure;
use crate::luks_read::{CHEAP_PBKDF2, NEW_PASS, cryptsetup, make_container, missing, oracle, verify_json, write_pass};
use crate::util::{self, Scratch, TestResult, code, run};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn trials() -> Vec<Trial> {
    vec![
        util::trial("luks_compat::cryptsetup_luks1_images", cryptsetup_luks1_images),
        util::trial("luks_compat::fresh_whirlpool_containers", fresh_whirlpool_containers),
    ]
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// The 12 images, by name: (cipher spec cryptsetup's header names, PBKDF2 hash).
pub const IMAGES: &[(&str, &str, &str)] = &[
    ("luks1_aes-cbc-essiv-sha256-sha1.img", "aes-cbc-essiv:sha256", "sha1"),
    ("luks1_aes-lrw-plain64-sha1.img", "aes-lrw-plain64", "sha1"),
    ("luks1_aes-xts-essiv-wp256-whirlpool.img", "aes-xts-essiv:wp256", "whirlpool"),
    ("luks1_aes-xts-plain64-sha1.img", "aes-xts-plain64", "sha1"),
    ("luks1_aes-xts-plain64-sha256.img", "aes-xts-plain64", "sha256"),
    ("luks1_aes-xts-plain64-whirlpool.img", "aes-xts-plain64", "whirlpool"),
    ("luks1_serpent-xts-plain64-sha1.img", "serpent-xts-plain64", "sha1"),
    ("luks1_serpent-xts-plain64-sha256.img", "serpent-xts-plain64", "sha256"),
    ("luks1_serpent-xts-plain64-whirlpool.img", "serpent-xts-plain64", "whirlpool"),
    ("luks1_twofish-xts-plain64-sha1.img", "twofish-xts-plain64", "sha1"),
    ("luks1_twofish-xts-plain64-sha256.img", "twofish-xts-plain64", "sha256"),
    ("luks1_twofish-xts-plain64-whirlpool.img", "twofish-xts-plain64", "whirlpool"),
];

/// Unpack cryptsetup's `luks1-images.tar.xz` into `dir`: `Ok(Ok(images dir))`, or
/// `Ok(Err(reason))` when its source cannot be fetched here (skip).
pub fn luks1_images(dir: &Path) -> Result<Result<PathBuf, String>, Failed> {
    for t in ["tar", "xz"] {
        if !util::have(t) {
            return Ok(Err(format!("missing tool: {t}")));
        }
    }
    let cache = std::env::var_os("LOOPKIT_CRYPTSETUP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::repo_root().join("target/cryptsetup-tests"))
        .join("luks1-images");
    let g = run(Command::new("sh").arg(util::repo_root().join("testdata/gen/apt-source.sh")).args([
        "cryptsetup-bin",
        s(&cache),
        "COPYING",
        "tests/luks1-images.tar.xz",
        "tests/luks1-compat-test",
    ]))?;
    let err = String::from_utf8_lossy(&g.stderr).trim().to_string();
    match g.status.code() {
        Some(0) => {}
        Some(3) => return Ok(Err(format!("cryptsetup's source is not available here: {err}"))),
        _ => return util::fail(format!("apt-source.sh failed: {err}")),
    }
    let src = PathBuf::from(String::from_utf8_lossy(&g.stdout).trim());
    let tar = src.join("tests/luks1-images.tar.xz");
    ensure!(tar.exists(), "{} has no tests/luks1-images.tar.xz", src.display());
    let o = run(Command::new("tar").args(["-xJf", s(&tar), "-C", s(dir), "--no-same-owner"]))?;
    ensure!(o.status.success(), "untar: {}", String::from_utf8_lossy(&o.stderr));
    Ok(Ok(dir.join("luks1-images")))
}

/// Every image: loopkit unlocks it with `keyfile1` (cryptsetup's volume-key digest agrees), names
/// the cipher cryptsetup's header names, finds cryptsetup's `DEAD-BABE` vfat, and refuses another
/// key file; where the host's cryptsetup opens the image itself, the payload hash equals Python's
/// decryption with the volume key cryptsetup dumps.
fn cryptsetup_luks1_images() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let d = Scratch::new("luks1-images");
    let dir = match luks1_images(&d.0)? {
        Ok(p) => p,
        Err(r) => return util::skip(r),
    };
    let key = dir.join("keyfile1");
    let wrong = d.path("wrong");
    write_pass(&wrong, "not the key file")?;
    let (mut payload_checked, mut kernel_only) = (Vec::new(), Vec::new());
    let mut errors = Vec::new();
    for (name, spec, hash) in IMAGES {
        let img = dir.join(name);
        let dump = String::from_utf8_lossy(&cryptsetup(&["luksDump", s(&img)])?.stdout).to_string();
        let field =
            |k: &str| dump.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_default();
        ensure!(
            format!("{}-{}", field("Cipher name:"), field("Cipher mode:")) == *spec && field("Hash spec:") == *hash,
            "{name}: cryptsetup's luksDump disagrees with the list:\n{dump}"
        );
        let (o, v) = verify_json(&img, &["--key-file", s(&key)])?;
        if code(&o) != 0
            || v["encryption"]["cipher"] != *spec
            || v["filesystem"]["uuid"] != "DEAD-BABE"
            || v["luks"]["opened_keyslot"] != 0
        {
            errors.push(format!("{name}: exit {} {v}", code(&o)));
            continue;
        }
        let (ow, vw) = verify_json(&img, &["--key-file", s(&wrong)])?;
        if code(&ow) != 2 || vw["error"]["kind"] != "wrong-key" {
            errors.push(format!("{name}: another key file: exit {} {vw}", code(&ow)));
        }
        // The host's cryptsetup opens what its userspace crypto can (AES-XTS/CBC); the rest
        // need the kernel's ciphers (exit 1 here, checked in the VM).
        let vk = d.path(&format!("{name}.vk"));
        let dumped = cryptsetup(&[
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
            s(&key),
            "--volume-key-file",
            s(&vk),
            s(&img),
        ])?;
        if !dumped.status.success() {
            kernel_only.push(*name);
            continue;
        }
        let off = field("Payload offset:").parse::<u64>().map_err(|e| format!("{name}: payload offset: {e}"))? * 512;
        let (op, iv) = match spec.split_once('-').map(|(_, m)| m) {
            Some("xts-plain64") => ("xts-sha256", "plain64"),
            Some("cbc-essiv:sha256") => ("cbc-sha256", "essiv:sha256"),
            Some("xts-essiv:wp256") => ("xts-sha256", "essiv:wp256"),
            _ => return util::fail(format!("{name}: no Python oracle for {spec}")),
        };
        let r = oracle(&[op, "--image", s(&img), "--key-file", s(&vk), "--offset", &off.to_string(), "--iv", iv])?;
        if r["sha256"] != v["payload"]["sha256"] {
            errors.push(format!("{name}: payload {} but Python decrypts {}", v["payload"]["sha256"], r["sha256"]));
        }
        payload_checked.push(*name);
    }
    ensure!(errors.is_empty(), "{} of {} images differ:\n{}", errors.len(), IMAGES.len(), errors.join("\n"));
    ensure!(
        payload_checked.iter().any(|n| n.contains("whirlpool")),
        "no whirlpool image's payload was checked against Python (host cryptsetup opened only {payload_checked:?})"
    );
    eprintln!(
        "cryptsetup's LUKS1 images: {} unlocked with the right UUID; payload = Python's for {payload_checked:?}; \
         kernel-only here (vm_luks_compat): {kernel_only:?}",
        IMAGES.len()
    );
    Ok(Completion::Completed)
}

/// `cryptsetup luksFormat` with `--hash whirlpool` (LUKS1: keyslot PBKDF2, AF and volume-key
/// digest; LUKS2: `--pbkdf pbkdf2 --hash whirlpool`, AF and digest), payload written by Python
/// with the volume key given to cryptsetup: loopkit hashes the payload to the plaintext's SHA-256.
fn fresh_whirlpool_containers() -> TestResult {
    if let Some(r) = missing() {
        return util::skip(r);
    }
    let p = crate::legacy::plains().map_err(Failed::from)?;
    let d = Scratch::new("luks-whirlpool");
    let pass = d.path("pass");
    write_pass(&pass, NEW_PASS)?;
    let mut rows: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut l1 = vec!["--type", "luks1", "--hash", "whirlpool", "--cipher", "aes-xts-plain64"];
    l1.extend(["--pbkdf-force-iterations", "1000"]);
    rows.push(("w1.img", l1));
    let mut l2 = vec!["--type", "luks2", "--hash", "whirlpool", "--sector-size", "512"];
    l2.extend(CHEAP_PBKDF2);
    rows.push(("w2.img", l2));
    for (name, flags) in rows {
        let (img, want) = make_container(&d.0, name, &p.dir.join("ext2.img"), &pass, &flags, 64)?;
        let dump = String::from_utf8_lossy(&cryptsetup(&["luksDump", s(&img)])?.stdout).to_string();
        ensure!(dump.contains("whirlpool"), "{name}: cryptsetup did not use whirlpool:\n{dump}");
        let (o, v) = verify_json(&img, &["--passphrase-file", s(&pass)])?;
        ensure!(code(&o) == 0 && v["payload"]["sha256"] == want.as_str(), "{name}: exit {} {v}", code(&o));
        let kdf = v["luks"]["keyslots"][0]["kdf"].as_str().unwrap_or("");
        ensure!(kdf.contains("whirlpool"), "{name}: keyslot kdf {kdf:?}");
    }
    Ok(Completion::Completed)
}
