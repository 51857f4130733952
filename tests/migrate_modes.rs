//! `loopkit migrate --to dmcrypt` in its three modes, checked only with independent
//! oracles: the fixture generator's plaintext SHA-256 (`testdata/gen/legacy.py`), cryptsetup
//! 2.x on the output files (luksDump without repairs, --test-passphrase 0/2, --dump-volume-key,
//! JSON metadata; the files hashed before/after), and Python `cryptography` decrypting the
//! payload with the key cryptsetup dumped (`testdata/gen/luks_oracle.py`).

use crate::ensure;
use crate::legacy;
use crate::luks_read::{CHEAP_ARGON2, CHEAP_PBKDF2, cryptsetup_view, oracle, write_pass};
use crate::util::{self, TestResult, code, json, loopkit, run, sha256_file, trial};
use libtest_mimic::{Completion, Failed, Trial};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// `loopkit migrate --json ARGS`; returns (exit code, JSON, stderr).
pub fn migrate(args: &[&str]) -> Result<(i32, serde_json::Value, String), Failed> {
    let mut c = loopkit(&["migrate", "--to", "dmcrypt", "--json", "--no-prompt"]);
    c.args(args);
    let o = run(&mut c)?;
    let v = json(&o)?;
    Ok((code(&o), v, String::from_utf8_lossy(&o.stderr).to_string()))
}

/// `loopkit migrate IMAGE --mode MODE -o OUT --new-passphrase-file NEWPASS ARGS…` (ARGS: the old
/// secret, KDF flags, …); returns (exit code, JSON, stderr).
pub fn migrate_to(
    image: &Path,
    mode: &str,
    out: &Path,
    newpass: &Path,
    args: &[&[&str]],
) -> Result<(i32, serde_json::Value, String), Failed> {
    let mut a = vec![s(image), "--mode", mode, "-o", s(out), "--new-passphrase-file", s(newpass)];
    for x in args {
        a.extend(*x);
    }
    migrate(&a)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The full oracle check of a re-encrypted container: cryptsetup reads it cleanly, the
/// passphrases behave, and Python decrypts the payload (with cryptsetup's volume key) to the
/// plaintext. Returns the LUKS2 JSON metadata (Null for LUKS1).
pub fn check_container(
    d: &Path,
    out: &Path,
    newpass: &Path,
    plaintext_sha256: &str,
    payload_offset: u64,
) -> Result<serde_json::Value, Failed> {
    let cs = cryptsetup_view(d, out, newpass)?;
    ensure!(cs.volume_key.len() == 64, "volume key of {} bytes", cs.volume_key.len());
    let vk = d.join("vk.bin");
    std::fs::write(&vk, &cs.volume_key).map_err(|e| e.to_string())?;
    let r = oracle(&["xts-sha256", "--image", s(out), "--key-file", s(&vk), "--offset", &payload_offset.to_string()])?;
    ensure!(
        r["sha256"] == plaintext_sha256,
        "Python decryption of {} gives {} (want {plaintext_sha256})",
        out.display(),
        r["sha256"]
    );
    // The same command verifies the migrated image.
    let o = run(&mut loopkit(&["verify", "--json", "--no-prompt", "--passphrase-file", s(newpass), s(out)]))?;
    let v = json(&o)?;
    ensure!(code(&o) == 0 && v["payload"]["sha256"] == plaintext_sha256, "loopkit verify of the output: {v}");
    Ok(cs.json)
}

fn plain_mode() -> TestResult {
    let env = crate::luks_env!("mig-plain");
    let (d, pass) = (&env.d, &env.pass);
    let f = env.cryptoloop("cl.img", "ext2", "rmd160", "256", &["--offset", "8192"])?;
    let before = sha256_file(&f.image)?;
    let key = d.path("legacy.key");
    let cmds = d.path("open.txt");
    let (c, v, e) = migrate(&[s(&f.image), "--passphrase-file", s(pass), "--key-out", s(&key), "-o", s(&cmds)])?;
    ensure!(c == 0, "plain mode exit {c}: {e}\n{v}");
    ensure!(v["mode"] == "plain" && v["source"]["scheme"] == "cryptoloop", "{v}");
    let kc = v["plain"]["key_file_command"].as_str().unwrap_or("");
    ensure!(
        kc.contains("--type plain")
            && kc.contains("--cipher aes-cbc-plain")
            && kc.contains("--offset 16 --skip 16")
            && kc.contains(s(&key)),
        "key-file command: {kc}"
    );
    ensure!(v["plain"]["passphrase_command"].as_str().is_some_and(|c| c.contains("--hash ripemd160")), "{v}");
    let ct = v["plain"]["crypttab"].as_str().unwrap_or("");
    ensure!(
        ct.contains("plain,cipher=aes-cbc-plain,size=256,hash=plain,offset=16,skip=16,readonly")
            && ct.contains(&*std::fs::canonicalize(&key).unwrap().to_string_lossy()),
        "crypttab: {ct}"
    );
    let text = std::fs::read_to_string(&cmds).map_err(|e| e.to_string())?;
    ensure!(text.contains(kc) && text.contains(ct), "-o file lacks the commands:\n{text}");
    let mode = std::fs::metadata(&key).map_err(|e| e.to_string())?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "key file mode {mode:o}");
    // Oracle: the raw key decrypts the image (Python CBC, IV offset 16) to the plaintext.
    let r = oracle(&[
        "cbc-sha256",
        "--image",
        s(&f.image),
        "--key-file",
        s(&key),
        "--offset",
        "8192",
        "--iv-offset",
        "16",
    ])?;
    ensure!(
        r["sha256"] == f.plaintext_sha256.as_str(),
        "raw key decrypts to {} (want {})",
        r["sha256"],
        f.plaintext_sha256
    );
    // No overwrite without --force.
    let (c, v, _) = migrate(&[s(&f.image), "--passphrase-file", s(pass), "--key-out", s(&key)])?;
    ensure!(c == 2 && v["error"]["kind"] == "unsafe", "existing key file: exit {c} {v}");
    ensure!(sha256_file(&f.image)? == before, "the image was modified");

    // loop-AES multi-key: the loopaes command and the key file itself.
    if util::have("aespipe") {
        let k = env.keyfile("65")?;
        let f = env.loopaes("v3.img", "ext2", "-e AES128", &["--keyfile", s(&k)])?;
        let kout = d.path("v3.key");
        let (c, v, e) = migrate(&[s(&f.image), "--key-file", s(&k), "--key-out", s(&kout)])?;
        ensure!(c == 0, "multi-key plain exit {c}: {e}");
        let kc = v["plain"]["key_file_command"].as_str().unwrap_or("");
        ensure!(kc.contains("--type loopaes") && kc.contains("--key-size 128"), "{kc}");
        ensure!(v["plain"]["crypttab"].is_null(), "{v}");
        ensure!(
            std::fs::read(&kout).ok() == std::fs::read(&k).ok(),
            "the written key file differs from the loop-AES key file"
        );
    }
    Ok(Completion::Completed)
}

fn detached_header() -> TestResult {
    let env = crate::luks_env!("mig-det");
    let (d, pass, np) = (&env.d, &env.pass, &env.np);
    let mut cases = vec![(
        "cl.img",
        "ext2",
        vec!["--scheme", "cryptoloop", "--derivation", "rmd160", "--key-bits", "256"],
        "aes-cbc-plain",
        "plain",
        CHEAP_PBKDF2,
        "pbkdf2",
    )];
    if util::have("aespipe") {
        cases.push((
            "la.img",
            "ext4",
            vec!["--scheme", "loop-aes", "--aespipe-args", "-e AES128"],
            "aes-cbc-plain64",
            "plain64",
            CHEAP_ARGON2,
            "argon2id",
        ));
    }
    for (name, fs, genargs, cipher, iv, kdf, kdf_type) in cases {
        let mut g = genargs.clone();
        g.extend(["--passphrase-file", s(pass)]);
        let f = legacy::encrypt(&d.0, name, fs, &g)?;
        let before = sha256_file(&f.image)?;
        let hdr = d.path(&format!("{name}.luks"));
        let (c, v, e) = migrate_to(&f.image, "detached-header", &hdr, np, &[&["--passphrase-file", s(pass)], kdf])?;
        ensure!(c == 0, "{name}: exit {c}: {e}\n{v}");
        ensure!(v["source_sha256"] == f.plaintext_sha256.as_str() && v["sha256_match"] == true, "{name}: {v}");
        ensure!(sha256_file(&f.image)? == before, "{name}: the image was modified");
        // cryptsetup reads the header (with the image as data device) and agrees.
        let cs = cryptsetup_view(&d.0, &hdr, np)?;
        let seg = &cs.json["segments"]["0"];
        ensure!(
            seg["encryption"] == cipher && seg["sector_size"] == 512 && seg["offset"] == "0" && seg["iv_tweak"] == "0",
            "{name}: segment {seg}"
        );
        ensure!(cs.json["keyslots"]["0"]["kdf"]["type"] == kdf_type, "{name}: {}", cs.json["keyslots"]);
        let tok = cs.json["tokens"]
            .as_object()
            .and_then(|m| m.values().find(|t| t["type"] == "loopkit-migration"))
            .cloned()
            .unwrap_or_default();
        ensure!(
            tok["payload_sha256"] == f.plaintext_sha256.as_str() && tok["source"]["cipher"] == cipher,
            "{name}: token {tok}"
        );
        let o = Command::new("cryptsetup")
            .args([
                "--disable-locks",
                "open",
                "--test-passphrase",
                "--key-file",
                s(np),
                "--header",
                s(&hdr),
                s(&f.image),
            ])
            .output()
            .map_err(|e| e.to_string())?;
        ensure!(
            o.status.success(),
            "{name}: cryptsetup --header test-passphrase: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // The volume key cryptsetup recovers decrypts the unchanged image (Python CBC).
        let vk = d.path("det.vk");
        std::fs::write(&vk, &cs.volume_key).map_err(|e| e.to_string())?;
        let r = oracle(&["cbc-sha256", "--image", s(&f.image), "--key-file", s(&vk), "--offset", "0", "--iv", iv])?;
        ensure!(r["sha256"] == f.plaintext_sha256.as_str(), "{name}: header key decrypts to {}", r["sha256"]);
        // loopkit verify with the header and the new passphrase.
        let o = run(&mut loopkit(&[
            "verify",
            "--json",
            "--no-prompt",
            "--header",
            s(&hdr),
            "--passphrase-file",
            s(np),
            s(&f.image),
        ]))?;
        let vv = json(&o)?;
        ensure!(
            code(&o) == 0 && vv["payload"]["sha256"] == f.plaintext_sha256.as_str(),
            "{name}: verify --header: {vv}"
        );
    }

    // Refusals, with the way out named; no header file left behind.
    let f = env.cryptoloop("off.img", "ext2", "rmd160", "256", &["--offset", "4096"])?;
    let hdr = d.path("off.luks");
    let (c, v, _) = migrate_to(&f.image, "detached-header", &hdr, np, &[&["--passphrase-file", s(pass)]])?;
    let msg = v["error"]["message"].as_str().unwrap_or("");
    ensure!(
        c == 2 && v["error"]["kind"] == "unsupported" && msg.contains("IV") && msg.contains("--mode reencrypt"),
        "IV offset: exit {c} {v}"
    );
    ensure!(!hdr.exists(), "a header was written for a refused source");
    if util::have("aespipe") {
        let k = env.keyfile("64")?;
        let f = env.loopaes("v2.img", "ext2", "-e AES128", &["--keyfile", s(&k)])?;
        let (c, v, _) = migrate_to(&f.image, "detached-header", &hdr, np, &[&["--key-file", s(&k)]])?;
        let msg = v["error"]["message"].as_str().unwrap_or("");
        ensure!(c == 2 && msg.contains("multi-key") && msg.contains("--mode reencrypt"), "multi-key: exit {c} {v}");
        ensure!(!hdr.exists(), "a header was written for multi-key");
    }
    Ok(Completion::Completed)
}

fn reencrypt_luks2() -> TestResult {
    let env = crate::luks_env!("mig-re2");
    let (d, pass, np) = (&env.d, &env.pass, &env.np);
    let f = env.cryptoloop("cl.img", "ext2", "util-linux-raw", "256", &[])?;
    let before = sha256_file(&f.image)?;
    let out = d.path("new.img");
    let (c, v, e) = migrate_to(
        &f.image,
        "reencrypt",
        &out,
        np,
        &[&["--passphrase-file", s(pass), "--label", "archive"], CHEAP_ARGON2],
    )?;
    ensure!(c == 0, "exit {c}: {e}\n{v}");
    ensure!(
        v["source_sha256"] == f.plaintext_sha256.as_str()
            && v["migrated_sha256"] == f.plaintext_sha256.as_str()
            && v["sha256_match"] == true,
        "report hashes: {v}"
    );
    ensure!(sha256_file(&f.image)? == before, "the source was modified");
    let plen = std::fs::metadata(&f.image).map_err(|e| e.to_string())?.len();
    let olen = std::fs::metadata(&out).map_err(|e| e.to_string())?.len();
    ensure!(olen == (16 << 20) + plen, "output is {olen} bytes, want 16 MiB + {plen}");
    ensure!(
        !d.path("new.img.partial").exists() && !d.path("new.img.partial.checkpoint").exists(),
        "temporary files left"
    );
    let js = check_container(&d.0, &out, np, &f.plaintext_sha256, 16 << 20)?;
    let seg = &js["segments"]["0"];
    ensure!(
        seg["encryption"] == "aes-xts-plain64"
            && seg["sector_size"] == 512
            && seg["offset"] == "16777216"
            && seg["size"] == "dynamic",
        "segment {seg}"
    );
    let ks = &js["keyslots"]["0"];
    ensure!(
        ks["key_size"] == 64
            && ks["kdf"]["type"] == "argon2id"
            && ks["kdf"]["memory"] == 32768
            && ks["kdf"]["cpus"] == 2,
        "keyslot {ks}"
    );
    ensure!(
        js["config"]["json_size"] == "12288" && js["config"]["keyslots_size"] == "16744448",
        "config {}",
        js["config"]
    );
    let tok = js["tokens"]
        .as_object()
        .and_then(|m| m.values().find(|t| t["type"] == "loopkit-migration"))
        .cloned()
        .unwrap_or_default();
    ensure!(
        tok["payload_sha256"] == f.plaintext_sha256.as_str()
            && tok["source"]["scheme"] == "cryptoloop"
            && tok["source"]["key_derivation"] == "util-linux-raw"
            && tok["date"].is_string(),
        "token {tok}"
    );
    // The same verify command works on the output; the label is there.
    let o = run(&mut loopkit(&["inspect", "--json", "--no-prompt", "--passphrase-file", s(np), s(&out)]))?;
    let i = json(&o)?;
    ensure!(i["luks"]["label"] == "archive" && i["luks"]["tokens"][0] == "loopkit-migration", "{i}");
    Ok(Completion::Completed)
}

fn reencrypt_luks1_pbkdf2_and_sources() -> TestResult {
    let env = crate::luks_env!("mig-re1");
    let (d, pass, np) = (&env.d, &env.pass, &env.np);
    let f = env.cryptoloop("cl.img", "ext3", "rmd160", "128", &["--offset", "4096"])?;
    // LUKS1.
    let out = d.path("l1.img");
    let (c, v, e) = migrate_to(
        &f.image,
        "reencrypt",
        &out,
        np,
        &[&["--luks1", "--passphrase-file", s(pass)], &["--pbkdf-force-iterations", "1000"]],
    )?;
    ensure!(c == 0 && v["format"] == "luks1" && v["sha256_match"] == true, "luks1: exit {c}: {e}\n{v}");
    check_container(&d.0, &out, np, &f.plaintext_sha256, 2 << 20)?;
    let dump = String::from_utf8_lossy(
        &Command::new("cryptsetup")
            .args(["--disable-locks", "luksDump", s(&out)])
            .output()
            .map_err(|e| e.to_string())?
            .stdout,
    )
    .to_string();
    let field =
        |k: &str| dump.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_default();
    ensure!(
        field("Version:") == "1"
            && field("Cipher mode:") == "xts-plain64"
            && field("Payload offset:") == "4096"
            && field("MK bits:") == "512",
        "luksDump:\n{dump}"
    );
    // Re-keying a LUKS source: the LUKS1 output into LUKS2 with another passphrase.
    let np2 = d.path("newpass2");
    write_pass(&np2, "third passphrase")?;
    let out1b = d.path("l1-to-l2.img");
    let (c, v, e) = migrate_to(&out, "reencrypt", &out1b, &np2, &[&["--passphrase-file", s(np)], CHEAP_PBKDF2])?;
    ensure!(
        c == 0 && v["source"]["scheme"] == "luks1" && v["sha256_match"] == true,
        "luks1 -> luks2: exit {c}: {e}\n{v}"
    );
    check_container(&d.0, &out1b, &np2, &f.plaintext_sha256, 16 << 20)?;
    // LUKS2 with pbkdf2.
    let out2 = d.path("pb.img");
    let (c, v, e) = migrate_to(&f.image, "reencrypt", &out2, np, &[&["--passphrase-file", s(pass)], CHEAP_PBKDF2])?;
    ensure!(c == 0 && v["sha256_match"] == true, "pbkdf2: exit {c}: {e}\n{v}");
    let js = check_container(&d.0, &out2, np, &f.plaintext_sha256, 16 << 20)?;
    ensure!(
        js["keyslots"]["0"]["kdf"]["type"] == "pbkdf2" && js["keyslots"]["0"]["kdf"]["iterations"] == 1000,
        "{}",
        js["keyslots"]
    );
    ensure!(js["digests"]["0"]["iterations"] == 1000, "{}", js["digests"]);
    // An unencrypted image.
    let plain = env.plains.dir.join("ext4.img");
    let plain_sha = sha256_file(&plain)?;
    let out3 = d.path("fromplain.img");
    let (c, v, e) = migrate_to(&plain, "reencrypt", &out3, np, &[CHEAP_PBKDF2])?;
    ensure!(
        c == 0 && v["source"]["scheme"] == "plain" && v["source_sha256"] == plain_sha.as_str(),
        "plain source: exit {c}: {e}\n{v}"
    );
    check_container(&d.0, &out3, np, &plain_sha, 16 << 20)?;
    ensure!(sha256_file(&plain)? == plain_sha, "the plain source was modified");
    // loop-AES multi-key v3 (aespipe).
    if util::have("aespipe") {
        let k = env.keyfile("65")?;
        let f = env.loopaes("v3.img", "ext2", "-e AES256", &["--keyfile", s(&k)])?;
        let out4 = d.path("v3-luks.img");
        let (c, v, e) = migrate_to(&f.image, "reencrypt", &out4, np, &[&["--key-file", s(&k)], CHEAP_PBKDF2])?;
        ensure!(c == 0 && v["source"]["multi_key"] == "v3", "multi-key: exit {c}: {e}\n{v}");
        check_container(&d.0, &out4, np, &f.plaintext_sha256, 16 << 20)?;
    }
    Ok(Completion::Completed)
}

fn outputs_are_guarded() -> TestResult {
    let env = crate::luks_env!("mig-guard");
    let (d, pass, np) = (&env.d, &env.pass, &env.np);
    let f = env.cryptoloop("cl.img", "ext2", "rmd160", "256", &[])?;
    let src_sha = sha256_file(&f.image)?;
    let base = |out: &Path| {
        let mut a = vec![s(&f.image).to_string(), "--mode".into(), "reencrypt".into(), "-o".into(), s(out).to_string()];
        a.extend(["--passphrase-file", s(pass), "--new-passphrase-file", s(np)].map(String::from));
        a.extend(CHEAP_PBKDF2.iter().map(|x| x.to_string()));
        a
    };
    let call = |a: &[String]| migrate(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // OUT equal to the source (also via another spelling and a hard link).
    for same in [f.image.clone(), d.0.join(".").join("cl.img")] {
        let (c, v, _) = call(&base(&same))?;
        ensure!(
            c == 2
                && v["error"]["kind"] == "unsafe"
                && v["error"]["message"].as_str().is_some_and(|m| m.contains("refusing")),
            "OUT = source: exit {c} {v}"
        );
    }
    let link = d.path("link.img");
    std::fs::hard_link(&f.image, &link).map_err(|e| e.to_string())?;
    let (c, _, _) = call(&base(&link))?;
    ensure!(c == 2, "OUT = hard link to the source: exit {c}");
    ensure!(sha256_file(&f.image)? == src_sha, "the source changed");
    // An existing OUT is not overwritten without --force.
    let out = d.path("exists.img");
    std::fs::write(&out, b"precious").map_err(|e| e.to_string())?;
    let (c, v, _) = call(&base(&out))?;
    ensure!(c == 2 && v["error"]["kind"] == "unsafe", "existing OUT: exit {c} {v}");
    ensure!(std::fs::read(&out).ok().as_deref() == Some(&b"precious"[..]), "OUT was overwritten");
    let mut forced = base(&out);
    forced.push("--force".into());
    let (c, v, e) = call(&forced)?;
    ensure!(c == 0 && v["sha256_match"] == true, "--force: exit {c}: {e}");
    // Wrong old passphrase: exit 2, nothing created.
    let bad = d.path("bad");
    write_pass(&bad, "wrong")?;
    let out2 = d.path("never.img");
    let mut a = base(&out2);
    let i = a.iter().position(|x| x == s(pass)).unwrap_or(0);
    a[i] = s(&bad).to_string();
    let (c, _, _) = call(&a)?;
    ensure!(c == 2, "wrong old passphrase: exit {c}");
    ensure!(!out2.exists() && !d.path("never.img.partial").exists(), "outputs created for a wrong passphrase");
    // No new passphrase (not a terminal): exit 2 with the way to give one.
    let (c, v, _) = migrate(&[s(&f.image), "--mode", "reencrypt", "-o", s(&out2), "--passphrase-file", s(pass)])?;
    ensure!(
        c == 2 && v["error"]["message"].as_str().is_some_and(|m| m.contains("--new-passphrase-file")),
        "no new passphrase: {v}"
    );
    ensure!(sha256_file(&f.image)? == src_sha, "the source changed");
    Ok(Completion::Completed)
}

/// The new passphrase asked twice on a terminal (util-linux `script` gives a pty), without echo;
/// two different answers are refused.
fn new_passphrase_prompt() -> TestResult {
    let env = crate::luks_env!("mig-prompt");
    if !util::have("script") {
        return util::skip("util-linux `script` is not installed");
    }
    let f = env.cryptoloop("cl.img", "ext2", "rmd160", "256", &[])?;
    let typed = "typed new passphrase";
    let run_prompted = |out: &Path, answers: [&str; 2]| -> Result<(i32, String), Failed> {
        let cmd = format!(
            "{} migrate {} --to dmcrypt --mode reencrypt -o {} --passphrase-file {} --pbkdf pbkdf2 --pbkdf-force-iterations 1000",
            util::loopkit_bin().display(),
            f.image.display(),
            out.display(),
            env.pass.display()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        {
            use std::io::Write;
            let mut i = child.stdin.take().ok_or("no stdin")?;
            for a in answers {
                std::thread::sleep(std::time::Duration::from_millis(700));
                let _ = writeln!(i, "{a}");
            }
        }
        let o = child.wait_with_output().map_err(|e| e.to_string())?;
        Ok((code(&o), String::from_utf8_lossy(&o.stdout).to_string()))
    };
    let out = env.d.path("prompted.img");
    let (c, text) = run_prompted(&out, [typed, typed])?;
    ensure!(c == 0 && out.exists(), "prompted run: exit {c}\n{text}");
    ensure!(text.contains("New passphrase") && text.contains("Repeat"), "prompts not shown: {text}");
    ensure!(!text.contains(typed), "the new passphrase was echoed: {text}");
    let np = env.d.path("typed");
    write_pass(&np, typed)?;
    let o = std::process::Command::new("cryptsetup")
        .args(["--disable-locks", "open", "--test-passphrase", "--key-file", s(&np), s(&out)])
        .output()
        .map_err(|e| e.to_string())?;
    ensure!(o.status.success(), "cryptsetup does not accept the typed passphrase");
    let out2 = env.d.path("mismatch.img");
    let (c, text) = run_prompted(&out2, [typed, "something else"])?;
    ensure!(c == 2 && text.contains("differ") && !out2.exists(), "mismatched answers: exit {c}\n{text}");
    Ok(Completion::Completed)
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("migrate_modes::new_passphrase_prompt", new_passphrase_prompt),
        trial("migrate_modes::plain_mode", plain_mode),
        trial("migrate_modes::detached_header", detached_header),
        trial("migrate_modes::reencrypt_luks2", reencrypt_luks2),
        trial("migrate_modes::reencrypt_luks1_pbkdf2_and_sources", reencrypt_luks1_pbkdf2_and_sources),
        trial("migrate_modes::outputs_are_guarded", outputs_are_guarded),
    ]
}
