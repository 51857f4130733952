//! Legacy ciphers against the real kernel, in one VM boot:
//! 1. **The kernel writes the fixtures** Python cannot (Twofish, Serpent): `cryptsetup open --type
//!    plain` with the cipher, key size and hash each legacy tool used (cryptoloop `-e twofish`,
//!    SUSE 9.3+ `twofish256`, loop-AES `loop_twofish`/`loop_serpent`/`loop_blowfish` as
//!    cryptsetup's loopaes mode models them, SUSE `loop_fish2` per the cryptsetup FAQ:
//!    `twofish-cbc-null -s 192 -h ripemd160:20`), then `dd` of a plaintext ext2 image into the
//!    mapping; and `cryptsetup luksFormat` + `dd` for LUKS1/LUKS2 with twofish/serpent specs.
//!    Back on the host, `loopkit verify` must find the parameters without hints and hash the
//!    payload to the plaintext's SHA-256.
//! 2. **Every new cryptsetup line runs in the kernel**: in the guest, `loopkit inspect --json` on
//!    each image (kernel-made and Python-made blowfish/cast5/des3_ede) prints a `cryptsetup`
//!    line; the guest runs it verbatim (passphrase typed on stdin) and the mapped device must
//!    hash to the plaintext.

use crate::legacy::{encrypt, plains};
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, sha256_file, trial};
use crate::vm::{self, Disk, VmJob};
use libtest_mimic::{Completion, Trial};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![trial("vm_legacy_ciphers::kernel_made_and_cryptsetup_lines", kernel_made_and_cryptsetup_lines)]
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Kernel-made headerless images: (name, `cryptsetup open --type plain` options, expected
/// `encryption` fields (cipher, key bits, derivation, scheme)).
type KRow = (&'static str, &'static str, (&'static str, u64, &'static str, &'static str));
#[rustfmt::skip]
const KERNEL_PLAIN: &[KRow] = &[
    // Debian losetup -e twofish (rmd160, 256 bits) = SUSE 9.3+ twofish256 via cryptoloop.
    ("tf-cl-rmd160-256", "--cipher twofish-cbc-plain --key-size 256 --hash ripemd160", ("twofish-cbc-plain", 256, "rmd160", "cryptoloop")),
    // util-linux 2.12 raw passphrase (key_size 32) with twofish.
    ("tf-cl-raw-256", "--cipher twofish-cbc-plain --key-size 256 --hash plain", ("twofish-cbc-plain", 256, "util-linux-raw", "cryptoloop")),
    ("sp-cl-rmd160-256", "--cipher serpent-cbc-plain --key-size 256 --hash ripemd160", ("serpent-cbc-plain", 256, "rmd160", "cryptoloop")),
    // loop-AES -e twofish / serpent / blowfish: 128-bit key, SHA-256, plain64 IV (cryptsetup loopaes model).
    ("tf-la-sha256-128", "--cipher twofish-cbc-plain64 --key-size 128 --hash sha256", ("twofish-cbc-plain64", 128, "sha256", "loop-aes")),
    ("sp-la-sha256-128", "--cipher serpent-cbc-plain64 --key-size 128 --hash sha256", ("serpent-cbc-plain64", 128, "sha256", "loop-aes")),
    ("bf-la-sha256-128", "--cipher blowfish-cbc-plain64 --key-size 128 --hash sha256", ("blowfish-cbc-plain64", 128, "sha256", "loop-aes")),
    // loop-AES -e twofish256: SHA-512 for a 32-byte key.
    ("tf-la-sha512-256", "--cipher twofish-cbc-plain64 --key-size 256 --hash sha512", ("twofish-cbc-plain64", 256, "sha512", "loop-aes")),
    // SUSE loop_fish2 (twofish160), cryptsetup FAQ 7.4.
    ("tf-fish2-160", "--cipher twofish-cbc-null --key-size 192 --hash ripemd160:20", ("twofish-cbc-null", 192, "rmd160:20", "loop-fish2")),
];

/// Kernel-made LUKS volumes: (name, luksFormat options, key bits, cipher spec, header bytes
/// before the payload — the disk is that plus the plaintext, so the payload is the plaintext).
#[rustfmt::skip]
const KERNEL_LUKS: &[(&str, &str, usize, &str, u64)] = &[
    ("l1-twofish-essiv", "--type luks1 --cipher twofish-cbc-essiv:sha256 --align-payload 4096", 256, "twofish-cbc-essiv:sha256", 2 << 20),
    ("l1-serpent-xts", "--type luks1 --cipher serpent-xts-plain64 --align-payload 4096", 512, "serpent-xts-plain64", 2 << 20),
    ("l2-twofish-xts", "--type luks2 --cipher twofish-xts-plain64 --pbkdf pbkdf2 --sector-size 512 --offset 32768", 512, "twofish-xts-plain64", 16 << 20),
    ("l2-serpent-essiv", "--type luks2 --cipher serpent-cbc-essiv:sha256 --pbkdf pbkdf2 --sector-size 512 --offset 32768", 256, "serpent-cbc-essiv:sha256", 16 << 20),
];

/// Python-made images whose cryptsetup line the kernel must accept (legacy.py args).
#[rustfmt::skip]
const PYTHON: &[(&str, &str)] = &[
    ("py-bf-rmd160-256", "--cipher|blowfish|--derivation|rmd160|--key-bits|256"),
    ("py-cast5-rmd160-128", "--cipher|cast5|--derivation|rmd160|--key-bits|128"),
    ("py-des3-rmd160-192-off", "--cipher|des3_ede|--derivation|rmd160|--key-bits|192|--offset|8192"),
];

fn kernel_made_and_cryptsetup_lines() -> TestResult {
    let p = match plains() {
        Ok(p) => p,
        Err(e) => return util::skip(e),
    };
    if let Some(r) = crate::luks_read::missing() {
        return util::skip(r);
    }
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let d = Scratch::new("vm-legacy-ciphers");
    let plain = p.dir.join("ext2.img");
    let want = sha256_file(&plain)?;
    let plen = std::fs::metadata(&plain)?.len();
    let pass_file = p.dir.join("pass");
    let pass_bytes = std::fs::read(&pass_file)?;
    let typed = String::from_utf8_lossy(&pass_bytes).lines().next().unwrap_or("").to_string();
    let np = d.path("np");
    crate::luks_read::write_pass(&np, crate::luks_read::NEW_PASS)?;

    // Disk 0: the plaintext. Then the kernel-made images (writable, sparse), then Python's.
    let mut disks: Vec<(String, PathBuf, bool)> = vec![("plain".into(), plain.clone(), true)];
    for (name, ..) in KERNEL_PLAIN {
        let f = d.path(&format!("{name}.img"));
        std::fs::File::create(&f)?.set_len(plen)?;
        disks.push((name.to_string(), f, false));
    }
    for (name, .., header) in KERNEL_LUKS {
        let f = d.path(&format!("{name}.img"));
        std::fs::File::create(&f)?.set_len(header + plen)?;
        disks.push((name.to_string(), f, false));
    }
    let mut python_want = BTreeMap::new();
    for (name, args) in PYTHON {
        let mut a = vec!["--scheme", "cryptoloop", "--passphrase-file", s(&pass_file)];
        a.extend(args.split('|'));
        let f = encrypt(&d.0, &format!("{name}.img"), "ext2", &a)?;
        python_want.insert(name.to_string(), (f.plaintext_sha256.clone(), sha256_file(&f.image)?));
        disks.push((name.to_string(), f.image, true));
    }
    let dev_of = |name: &str| -> String { vm::dev(disks.iter().position(|(n, ..)| n == name).unwrap()) };

    let q = vm::sh_quote;
    // The cipher modules are outside the harness's boot set: load them from the module tree
    // (and AF_ALG, which cryptsetup needs to write LUKS2 keyslots).
    let mut script = String::from(
        "set +e\nfor m in twofish serpent blowfish cast5 des3_ede; do modprobe -d \"$VM_MODROOT\" crypto-$m 2>/dev/null || \
modprobe -d \"$VM_MODROOT\" ${m}_generic 2>/dev/null || modprobe -d \"$VM_MODROOT\" $m || echo \"modprobe:$m=failed\"; done\n\
modprobe -d \"$VM_MODROOT\" -a algif_skcipher algif_hash || echo \"modprobe:af_alg=failed\"\n\
grep -E '^name +: (twofish|serpent|blowfish|cast5|des3_ede)$' /proc/crypto | sort -u >&2\n",
    );
    // 1. The kernel writes the fixtures.
    for (name, opts, _) in KERNEL_PLAIN {
        script.push_str(&format!(
            "printf '%s\\n' {pw} | cryptsetup open --type plain {opts} {dev} mk && dd if={src} of=/dev/mapper/mk bs=64k conv=fsync status=none && echo \"made:{name}=ok\"\ncryptsetup close mk\n",
            pw = q(&typed),
            dev = dev_of(name),
            src = vm::dev(0),
        ));
    }
    for (name, opts, bits, ..) in KERNEL_LUKS {
        script.push_str(&format!(
            "if cryptsetup luksFormat --batch-mode {opts} --key-size {bits} --key-file /run/vm/np --pbkdf-force-iterations 1000 {dev} 2>/tmp/err && \
cryptsetup open --key-file /run/vm/np {dev} mk 2>>/tmp/err && dd if={src} of=/dev/mapper/mk bs=64k conv=fsync status=none; then echo \"made:{name}=ok\"; \
else echo \"made:{name}=failed $(tr '\\n' ' ' </tmp/err)\"; fi\ncryptsetup close mk\n",
            dev = dev_of(name),
            src = vm::dev(0),
        ));
    }
    // 2. loopkit (in the guest) prints each headerless image's cryptsetup line; run it verbatim.
    let headerless: Vec<&str> = KERNEL_PLAIN.iter().map(|r| r.0).chain(PYTHON.iter().map(|r| r.0)).collect();
    for name in &headerless {
        let dev = dev_of(name);
        script.push_str(&format!(
            r#"{bin} inspect --json --no-prompt --passphrase-file /run/vm/pass {dev} > /run/vm/{name}.json
line=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("cryptsetup") or "")' /run/vm/{name}.json)
echo "line:{name}=$line"
if [ -n "$line" ] && printf '%s\n' {pw} | eval "$line" 2>/tmp/err; then
    echo "sha:{name}=$(sha256sum </dev/mapper/legacy | cut -d' ' -f1)"
    cryptsetup close legacy
else
    echo "open:{name}=failed $(tr '\n' ' ' </tmp/err)"
fi
"#,
            bin = q(&bin_in_guest),
            pw = q(&typed),
        ));
    }
    script.push_str("dmesg | grep -iE 'device-mapper|crypt' | tail -n 20 >&2\n");

    let disk_refs: Vec<Disk> = disks.iter().map(|(_, p, ro)| if *ro { Disk::ro(p) } else { Disk::rw(p) }).collect();
    let np_bytes = std::fs::read(&np)?;
    let files: Vec<(&str, &[u8])> = vec![("pass", &pass_bytes), ("np", &np_bytes)];
    let job = VmJob {
        disks: &disk_refs,
        script: &script,
        files: &files,
        timeout: Duration::from_secs(600),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(o) => o,
        Err(u) => return u.skip(),
    };
    out.check()?;
    let tagged = |tag: &str| -> BTreeMap<String, String> {
        out.tagged(tag).filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let (made, lines, shas, opens) = (tagged("made:"), tagged("line:"), tagged("sha:"), tagged("open:"));
    let mut errors = Vec::new();
    if sha256_file(&plain)? != want {
        errors.push("the plaintext image changed".to_string());
    }
    // Kernel-made: the kernel made them; loopkit on the host finds them without hints.
    for (name, _, (cipher, bits, deriv, scheme)) in KERNEL_PLAIN {
        if made.get(*name).map(String::as_str) != Some("ok") {
            errors.push(format!("{name}: the kernel did not write the fixture"));
            continue;
        }
        let img = d.path(&format!("{name}.img"));
        let o = run(&mut loopkit(&["verify", "--json", "--no-prompt", "--passphrase-file", s(&pass_file), s(&img)]))?;
        let v = json(&o)?;
        let e = &v["encryption"];
        if code(&o) != 0 || v["payload"]["sha256"] != want.as_str() {
            errors.push(format!(
                "{name}: loopkit verify exit {} payload {} (want {want})\n{v}",
                code(&o),
                v["payload"]["sha256"]
            ));
        } else if e["cipher"] != *cipher
            || e["key_bits"] != *bits
            || e["key_derivation"] != *deriv
            || e["scheme"] != *scheme
        {
            errors.push(format!("{name}: detected {e}, want {cipher} {bits} {deriv} {scheme}"));
        }
    }
    for (name, _, _, spec, _) in KERNEL_LUKS {
        if made.get(*name).map(String::as_str) != Some("ok") {
            errors.push(format!("{name}: the kernel did not write the LUKS fixture: {:?}", made.get(*name)));
            continue;
        }
        let img = d.path(&format!("{name}.img"));
        let o = run(&mut loopkit(&["verify", "--json", "--no-prompt", "--passphrase-file", s(&np), s(&img)]))?;
        let v = json(&o)?;
        if code(&o) != 0 || v["payload"]["sha256"] != want.as_str() || v["encryption"]["cipher"] != *spec {
            errors.push(format!(
                "{name}: loopkit verify exit {} payload {} cipher {} (want {want}, {spec})",
                code(&o),
                v["payload"]["sha256"],
                v["encryption"]["cipher"]
            ));
        }
    }
    // migrate --mode reencrypt of a kernel-made twofish LUKS1 volume into LUKS2 aes-xts-plain64.
    if made.get("l1-twofish-essiv").map(String::as_str) == Some("ok") {
        let src = d.path("l1-twofish-essiv.img");
        let outimg = d.path("l1-twofish-to-l2.img");
        let np2 = d.path("np2");
        crate::luks_read::write_pass(&np2, "yet another passphrase")?;
        let (c, v, e) = crate::migrate_modes::migrate_to(
            &src,
            "reencrypt",
            &outimg,
            &np2,
            &[&["--passphrase-file", s(&np)], crate::luks_read::CHEAP_PBKDF2],
        )?;
        if c != 0 || v["sha256_match"] != true {
            errors.push(format!("reencrypt of l1-twofish-essiv: exit {c}: {e}\n{v}"));
        } else if let Err(f) = crate::migrate_modes::check_container(&d.0, &outimg, &np2, &want, 16 << 20) {
            errors.push(format!("reencrypt of l1-twofish-essiv: {}", f.message().unwrap_or("check failed")));
        }
    }
    // Every headerless image's cryptsetup line mapped the plaintext in the kernel.
    for name in &headerless {
        let line = lines.get(*name).map(String::as_str).unwrap_or("");
        let expect = python_want.get(*name).map_or(want.as_str(), |(w, _)| w.as_str());
        match shas.get(*name) {
            Some(sha) if sha == expect => {}
            other => {
                errors.push(format!("{name}: `{line}` mapped {other:?} (want {expect}); open: {:?}", opens.get(*name)))
            }
        }
        if !line.contains("--readonly") {
            errors.push(format!("{name}: the line does not map read-only: {line}"));
        }
    }
    for (name, (_, img_sha)) in &python_want {
        if sha256_file(&d.path(&format!("{name}.img")))? != *img_sha {
            errors.push(format!("{name}: the image changed"));
        }
    }
    if !errors.is_empty() {
        return util::fail(format!("{}\n{}", errors.join("\n"), out.transcript()));
    }
    eprintln!(
        "vm_legacy_ciphers: {} kernel-made images, {} cryptsetup lines checked in one VM run of {:.1?}",
        KERNEL_PLAIN.len() + KERNEL_LUKS.len(),
        headerless.len(),
        out.elapsed
    );
    Ok(Completion::Completed)
}
