//! Legacy ciphers on the host: legacy images with ciphers besides AES and LUKS1 volumes with
//! the era's cipher specs. Oracles: Python `cryptography` (Blowfish, CAST5, 3DES in its
//! "decrepit" module) encrypts the cryptoloop fixtures (`testdata/gen/legacy.py --cipher`);
//! `cryptsetup luksFormat` makes the LUKS1 headers and keyslots (aes-cbc-essiv:sha256 …, keyslot
//! area encrypted by cryptsetup with the same spec) and Python writes the payload with the
//! generator's volume key (`testdata/gen/luks_oracle.py cbc-encrypt/xts-encrypt`). Twofish and
//! Serpent are not in `cryptography`: the kernel writes those fixtures in `vm_legacy_ciphers`.

use crate::ensure;
use crate::legacy::plains;
use crate::luks_read::{NEW_PASS, cryptsetup, oracle, write_pass};
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::path::{Path, PathBuf};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("legacy_ciphers::cryptoloop_blowfish_cast5_des3", cryptoloop_blowfish_cast5_des3),
        trial("legacy_ciphers::luks1_era_cipher_specs", luks1_era_cipher_specs),
        trial("legacy_ciphers::detection_time", detection_time).with_ignored_flag(true),
    ]
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (fixture name, plaintext fs, legacy.py args, expected cipher, key bits, derivation)
type Row = (&'static str, &'static str, &'static [&'static str], &'static str, u64, &'static str);
const ROWS: &[Row] = &[
    // Debian losetup -e blowfish (rmd160, 256-bit key as -k defaulted).
    (
        "bf-rmd160-256",
        "ext2",
        &["--cipher", "blowfish", "--derivation", "rmd160", "--key-bits", "256"],
        "blowfish-cbc-plain",
        256,
        "rmd160",
    ),
    // cast5 takes at most 16 bytes: losetup -e cast5 -k 128.
    (
        "cast5-rmd160-128",
        "ext3",
        &["--cipher", "cast5", "--derivation", "rmd160", "--key-bits", "128"],
        "cast5-cbc-plain",
        128,
        "rmd160",
    ),
    // des3_ede takes exactly 24 bytes: -k 192; with a payload offset (IV counts it).
    (
        "des3-rmd160-192-off",
        "ext2",
        &["--cipher", "des3_ede", "--derivation", "rmd160", "--key-bits", "192", "--offset", "8192"],
        "des3_ede-cbc-plain",
        192,
        "rmd160",
    ),
    // util-linux 2.12 raw passphrase (key_size 32) with blowfish.
    (
        "bf-raw-256",
        "ext2",
        &["--cipher", "blowfish", "--derivation", "util-linux-raw", "--key-bits", "256"],
        "blowfish-cbc-plain",
        256,
        "util-linux-raw",
    ),
    // blowfish in ECB (losetup -e blowfish-ecb).
    (
        "bf-ecb",
        "ext2",
        &["--cipher", "blowfish", "--derivation", "rmd160", "--key-bits", "256", "--ecb"],
        "blowfish-ecb",
        256,
        "rmd160",
    ),
];

/// Every fixture is found without hints (cipher, key size, derivation and offset all searched),
/// decrypts to the generator's plaintext, and gets a cryptsetup line naming the cipher; a pinned
/// `--cipher` finds it too; a wrong `--cipher` does not; the image is never modified.
fn cryptoloop_blowfish_cast5_des3() -> TestResult {
    let p = match plains() {
        Ok(p) => p,
        Err(e) => return util::skip(e),
    };
    let d = Scratch::new("legacy-ciphers");
    let pass = p.dir.join("pass");
    for &(name, fs, args, cipher, bits, deriv) in ROWS {
        let mut a = vec!["--scheme", "cryptoloop", "--passphrase-file", s(&pass)];
        a.extend(args);
        let f = crate::legacy::encrypt(&d.0, &format!("{name}.img"), fs, &a)?;
        let before = sha256_file(&f.image)?;
        let o = run(&mut loopkit(&["verify", "--json", "--no-prompt", "--passphrase-file", s(&pass), s(&f.image)]))?;
        let v = json(&o)?;
        ensure!(code(&o) == 0, "{name}: verify exit {}\n{v}", code(&o));
        ensure!(
            v["payload"]["sha256"] == f.plaintext_sha256.as_str(),
            "{name}: payload {} != {}",
            v["payload"]["sha256"],
            f.plaintext_sha256
        );
        let e = &v["encryption"];
        ensure!(e["cipher"] == cipher && e["key_bits"] == bits && e["key_derivation"] == deriv, "{name}: detected {e}");
        let o = run(&mut loopkit(&["inspect", "--json", "--no-prompt", "--passphrase-file", s(&pass), s(&f.image)]))?;
        let i = json(&o)?;
        let line = i["cryptsetup"].as_str().unwrap_or("");
        ensure!(
            line.contains(&format!("--cipher {cipher} ")) && line.contains(&format!("--key-size {bits} ")),
            "{name}: {line}"
        );
        // Pinned cipher: found; a wrong cipher: exit 2, not garbage.
        let o = run(&mut loopkit(&[
            "verify",
            "--json",
            "--no-prompt",
            "--cipher",
            cipher,
            "--passphrase-file",
            s(&pass),
            s(&f.image),
        ]))?;
        ensure!(
            code(&o) == 0 && json(&o)?["payload"]["sha256"] == f.plaintext_sha256.as_str(),
            "{name}: pinned --cipher {cipher}"
        );
        let o = run(&mut loopkit(&[
            "verify",
            "--json",
            "--no-prompt",
            "--cipher",
            "serpent-cbc-plain",
            "--passphrase-file",
            s(&pass),
            s(&f.image),
        ]))?;
        ensure!(code(&o) == 2, "{name}: wrong --cipher gave exit {}", code(&o));
        ensure!(sha256_file(&f.image)? == before, "{name}: the image changed");
    }
    // A typo in --cipher fails while the arguments are parsed.
    let o = run(&mut loopkit(&["inspect", "--cipher", "twofsh-cbc-plain", "/nonexistent"]))?;
    ensure!(code(&o) == 2 && String::from_utf8_lossy(&o.stderr).contains("twofsh"), "typo: {}", code(&o));
    Ok(Completion::Completed)
}

/// `luksFormat` a LUKS1 container with `flags`, the volume key from the generator, and write
/// `plain` into its payload with Python; returns (image, payload offset).
fn luks1(
    d: &Path,
    name: &str,
    plain: &Path,
    pass: &Path,
    spec: &str,
    key_bits: usize,
) -> Result<(PathBuf, u64), Failed> {
    let img = d.join(name);
    let vk = d.join(format!("{name}.vk"));
    let key: Vec<u8> = (0..key_bits / 8).map(|i| (i as u8).wrapping_mul(31).wrapping_add(7)).collect();
    std::fs::write(&vk, &key)?;
    let f = std::fs::File::create(&img)?;
    f.set_len((2 << 20) + std::fs::metadata(plain)?.len())?;
    drop(f);
    let ks = key_bits.to_string();
    let o = cryptsetup(&[
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks1",
        "--cipher",
        spec,
        "--key-size",
        &ks,
        "--volume-key-file",
        s(&vk),
        "--key-file",
        s(pass),
        "--pbkdf-force-iterations",
        "1000",
        s(&img),
    ])?;
    ensure!(o.status.success(), "luksFormat {spec}: {}", String::from_utf8_lossy(&o.stderr));
    let dump = String::from_utf8_lossy(&cryptsetup(&["luksDump", s(&img)])?.stdout).to_string();
    let sectors: u64 = dump
        .lines()
        .find_map(|l| l.strip_prefix("Payload offset:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no payload offset in\n{dump}"))?;
    let mode = spec.strip_prefix("aes-").ok_or("not an AES spec")?;
    let off = (sectors * 512).to_string();
    let r = match mode.strip_prefix("xts-") {
        Some(iv) => oracle(&[
            "xts-encrypt",
            "--plain",
            s(plain),
            "--key-file",
            s(&vk),
            "--image",
            s(&img),
            "--offset",
            &off,
            "--iv",
            iv,
        ])?,
        None => oracle(&[
            "cbc-encrypt",
            "--plain",
            s(plain),
            "--key-file",
            s(&vk),
            "--image",
            s(&img),
            "--offset",
            &off,
            "--iv",
            mode.trim_start_matches("cbc-"),
        ])?,
    };
    ensure!(r["plaintext_sha256"].is_string(), "oracle: {r}");
    Ok((img, sectors * 512))
}

/// LUKS1 with cryptsetup's pre-2013 default `aes-cbc-essiv:sha256` (256 and 128 bits), LUKS1
/// `aes-xts-plain` (32-bit IV) and `aes-cbc-plain64`: unlocked (keyslot areas use the same spec),
/// payload equal to the plaintext; `migrate --mode reencrypt` of the essiv volume gives a LUKS2
/// aes-xts-plain64 container that cryptsetup and Python accept; a spec loopkit cannot run
/// (header edited to `camellia`) fails with exit 2 naming the exact spec.
fn luks1_era_cipher_specs() -> TestResult {
    if let Some(r) = crate::luks_read::missing() {
        return util::skip(r);
    }
    let p = plains().map_err(Failed::from)?;
    let d = Scratch::new("luks1-specs");
    let pass = d.path("pass");
    write_pass(&pass, NEW_PASS)?;
    let ext2 = p.dir.join("ext2.img");
    let want = sha256_file(&ext2)?;
    for (name, spec, bits) in [
        ("essiv256.img", "aes-cbc-essiv:sha256", 256),
        ("essiv128.img", "aes-cbc-essiv:sha256", 128),
        ("xts-plain.img", "aes-xts-plain", 512),
        ("cbc-plain64.img", "aes-cbc-plain64", 256),
    ] {
        let (img, _) = luks1(&d.0, name, &ext2, &pass, spec, bits)?;
        let before = sha256_file(&img)?;
        let o = run(&mut loopkit(&["verify", "--json", "--no-prompt", "--passphrase-file", s(&pass), s(&img)]))?;
        let v = json(&o)?;
        ensure!(code(&o) == 0, "{name}: verify exit {}: {}\n{v}", code(&o), String::from_utf8_lossy(&o.stderr));
        ensure!(v["payload"]["sha256"] == want.as_str(), "{name}: payload {} != {want}", v["payload"]["sha256"]);
        ensure!(v["encryption"]["cipher"] == spec, "{name}: {}", v["encryption"]);
        ensure!(sha256_file(&img)? == before, "{name}: the image changed");
    }
    // migrate --mode reencrypt: essiv LUKS1 → LUKS2 aes-xts-plain64, checked by cryptsetup + Python.
    let src = d.path("essiv256.img");
    let out = d.path("l2.img");
    let np = d.path("np2");
    write_pass(&np, "another archival passphrase")?;
    let (c, v, e) = crate::migrate_modes::migrate_to(
        &src,
        "reencrypt",
        &out,
        &np,
        &[&["--passphrase-file", s(&pass)], crate::luks_read::CHEAP_PBKDF2],
    )?;
    ensure!(c == 0 && v["sha256_match"] == true, "reencrypt: exit {c}: {e}\n{v}");
    let js = crate::migrate_modes::check_container(&d.0, &out, &np, &want, 16 << 20)?;
    ensure!(js["segments"]["0"]["encryption"] == "aes-xts-plain64", "segment {}", js["segments"]["0"]);
    // Unsupported spec: exit 2, the message names it.
    let mut bytes = std::fs::read(&src)?;
    bytes[8..16].copy_from_slice(b"camellia");
    let bad = d.path("camellia.img");
    std::fs::write(&bad, &bytes)?;
    let o = run(&mut loopkit(&["verify", "--json", "--no-prompt", "--passphrase-file", s(&pass), s(&bad)]))?;
    let err = String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
    ensure!(code(&o) == 2 && err.contains("camellia-cbc-essiv:sha256"), "camellia: exit {} {err}", code(&o));
    Ok(Completion::Completed)
}

/// Detection time with the full cipher search (ignored: a measurement, not a pass/fail check;
/// `testdata/bench/detect.sh` runs it): prints the wall time of `inspect` for an image of each
/// cipher at offset 0, one with a 64 KiB offset, and a wrong passphrase (the whole search).
fn detection_time() -> TestResult {
    let p = match plains() {
        Ok(p) => p,
        Err(e) => return util::skip(e),
    };
    let d = Scratch::new("detect-time");
    let pass = p.dir.join("pass");
    let wrong = d.path("wrong");
    write_pass(&wrong, "not the passphrase")?;
    let mut rows = Vec::new();
    for (name, args) in [
        ("aes", &["--cipher", "aes", "--key-bits", "256"][..]),
        ("blowfish", &["--cipher", "blowfish", "--key-bits", "256"][..]),
        ("cast5", &["--cipher", "cast5", "--key-bits", "128"][..]),
        ("des3_ede", &["--cipher", "des3_ede", "--key-bits", "192"][..]),
        ("aes-offset64k", &["--cipher", "aes", "--key-bits", "256", "--offset", "65536"][..]),
        ("blowfish-offset64k", &["--cipher", "blowfish", "--key-bits", "256", "--offset", "65536"][..]),
    ] {
        let mut a = vec!["--scheme", "cryptoloop", "--derivation", "rmd160", "--passphrase-file", s(&pass)];
        a.extend(args);
        let f = crate::legacy::encrypt(&d.0, &format!("{name}.img"), "ext2", &a)?;
        for (label, pf) in [("right", &pass), ("wrong", &wrong)] {
            let t = std::time::Instant::now();
            let o = run(&mut loopkit(&["inspect", "--json", "--no-prompt", "--passphrase-file", s(pf), s(&f.image)]))?;
            let el = t.elapsed();
            ensure!(code(&o) == if label == "right" { 0 } else { 2 }, "{name} {label}: exit {}", code(&o));
            rows.push(format!("{name:20} {label:5} {:7.3} s", el.as_secs_f64()));
        }
    }
    println!("detection time (inspect wall time, 3 MiB ext2):\n{}", rows.join("\n"));
    Ok(Completion::Completed)
}
