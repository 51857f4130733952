//! Old LUKS ciphers against the real kernel, in one VM boot:
//! 1. **cryptsetup's LUKS1 compatibility images** (`luks_compat::IMAGES`: whirlpool PBKDF2,
//!    `aes-xts-essiv:wp256`, `aes-lrw-plain64`, twofish/serpent XTS): the guest's cryptsetup opens
//!    each with `keyfile1` and hashes the mapped device; loopkit on the host must hash the payload
//!    to the same SHA-256 (the host's cryptsetup cannot open most of them: no kernel crypto).
//! 2. **The kernel writes LRW volumes**: `cryptsetup luksFormat` with `aes-lrw-plain64` (LUKS1,
//!    AES-128 + tweak key), `aes-lrw-benbi` (LUKS1, AES-256 + tweak key) and `aes-lrw-plain64`
//!    with 4096-byte sectors (LUKS2), then `dd` of a plaintext ext2 image into the mapping;
//!    loopkit must hash each payload to the plaintext's SHA-256.
//! 3. **Volumes stopped part-way through `cryptsetup reencrypt`** (`luks_reencrypt`: a re-encrypt
//!    with old and new key segments, an `--encrypt` with a detached header and crypt + linear
//!    segments, both made on the host and already checked against their plaintext): the guest's
//!    cryptsetup activates each read-only through its segments (dm-crypt + dm-linear) and the
//!    mapping must hash to the plaintext, as loopkit's payload does.

use crate::luks_compat::{IMAGES, luks1_images};
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, sha256_file, trial};
use crate::vm::{self, Disk, VmJob};
use libtest_mimic::{Completion, Trial};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn trials() -> Vec<Trial> {
    vec![trial("vm_luks_compat::kernel_opens_what_loopkit_reads", kernel_opens_what_loopkit_reads)]
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Kernel-made LRW volumes: (name, luksFormat options, key bits, cipher spec, header bytes).
#[rustfmt::skip]
const KERNEL_LRW: &[(&str, &str, usize, &str, u64)] = &[
    ("l1-lrw-plain64", "--type luks1 --cipher aes-lrw-plain64 --hash sha256 --align-payload 4096", 256, "aes-lrw-plain64", 2 << 20),
    ("l1-lrw-benbi", "--type luks1 --cipher aes-lrw-benbi --hash whirlpool --align-payload 4096", 384, "aes-lrw-benbi", 2 << 20),
    // The keyslot area in XTS: the 7.x kernel's AF_ALG refuses lrw(aes) for cryptsetup's keyslot
    // encryption ("Cannot use aes-lrw-plain64 cipher for keyslot encryption"); 6.12 takes both.
    ("l2-lrw-4k", "--type luks2 --cipher aes-lrw-plain64 --keyslot-cipher aes-xts-plain64 --keyslot-key-size 512 --pbkdf pbkdf2 --sector-size 4096 --offset 32768", 256, "aes-lrw-plain64", 16 << 20),
];

fn kernel_opens_what_loopkit_reads() -> TestResult {
    let p = match crate::legacy::plains() {
        Ok(p) => p,
        Err(e) => return util::skip(e),
    };
    if let Some(r) = crate::luks_read::missing() {
        return util::skip(r);
    }
    let d = Scratch::new("vm-luks-compat");
    let dir = match luks1_images(&d.0)? {
        Ok(p) => p,
        Err(r) => return util::skip(r),
    };
    let key = dir.join("keyfile1");
    let key_bytes = std::fs::read(&key)?;
    let plain = p.dir.join("ext2.img");
    let want = sha256_file(&plain)?;
    let plen = std::fs::metadata(&plain)?.len();
    let np = d.path("np");
    crate::luks_read::write_pass(&np, crate::luks_read::NEW_PASS)?;
    let np_bytes = std::fs::read(&np)?;

    // Disk 0: the plaintext; then cryptsetup's images (read-only); then the LRW targets.
    let mut disks: Vec<(String, PathBuf, bool)> = vec![("plain".into(), plain.clone(), true)];
    let mut before = BTreeMap::new();
    for (name, ..) in IMAGES {
        let img = dir.join(name);
        before.insert(name.to_string(), sha256_file(&img)?);
        disks.push((name.to_string(), img, true));
    }
    for (name, .., header) in KERNEL_LRW {
        let f = d.path(&format!("{name}.img"));
        std::fs::File::create(&f)?.set_len(header + plen)?;
        disks.push((name.to_string(), f, false));
    }
    // Part-way re-encryptions (host-made; loopkit already read them to their plaintext).
    let re = crate::luks_reencrypt::reencrypt_fixture(&d.0)?;
    let enc = crate::luks_reencrypt::encrypt_fixture(&d.0)?;
    disks.push(("re".into(), re.img.clone(), true));
    disks.push(("enc".into(), enc.img.clone(), true));
    disks.push(("enc-hdr".into(), enc.hdr.clone(), true));
    let (re_pass, enc_pass) = (std::fs::read(&re.pass)?, std::fs::read(&enc.pass)?);
    let dev_of = |name: &str| -> String { vm::dev(disks.iter().position(|(n, ..)| n == name).unwrap_or(0)) };

    let mut script = String::from(
        "set +e\nfor m in twofish serpent lrw wp512; do modprobe -d \"$VM_MODROOT\" crypto-$m 2>/dev/null || \
modprobe -d \"$VM_MODROOT\" ${m}_generic 2>/dev/null || modprobe -d \"$VM_MODROOT\" $m || echo \"modprobe:$m=failed\"; done\n\
modprobe -d \"$VM_MODROOT\" -a algif_skcipher algif_hash || echo \"modprobe:af_alg=failed\"\n\
grep -E '^name +: (twofish|serpent|lrw\\(aes\\)|wp512|wp256)$' /proc/crypto | sort -u >&2\n",
    );
    // 1. cryptsetup's images, opened by the kernel.
    for (name, ..) in IMAGES {
        script.push_str(&format!(
            "if cryptsetup open --readonly --key-file /run/vm/keyfile1 {dev} cs 2>/tmp/err; then \
echo \"sha:{name}=$(sha256sum </dev/mapper/cs | cut -d' ' -f1)\"; cryptsetup close cs; \
else echo \"open:{name}=failed $(tr '\\n' ' ' </tmp/err)\"; fi\n",
            dev = dev_of(name),
        ));
    }
    // 2. The kernel writes LRW volumes.
    for (name, opts, bits, ..) in KERNEL_LRW {
        script.push_str(&format!(
            "if cryptsetup luksFormat --batch-mode {opts} --key-size {bits} --key-file /run/vm/np --pbkdf-force-iterations 1000 {dev} 2>/tmp/err && \
cryptsetup open --key-file /run/vm/np {dev} mk 2>>/tmp/err && dd if={src} of=/dev/mapper/mk bs=64k conv=fsync status=none; then echo \"made:{name}=ok\"; \
else echo \"made:{name}=failed $(tr '\\n' ' ' </tmp/err)\"; fi\ncryptsetup close mk 2>/dev/null\n",
            dev = dev_of(name),
            src = vm::dev(0),
        ));
    }
    // 3. The kernel maps the part-way re-encryptions through their segments.
    for (name, keyf, hdr) in
        [("re", "re-pass", String::new()), ("enc", "enc-pass", format!("--header {}", dev_of("enc-hdr")))]
    {
        script.push_str(&format!(
            "if cryptsetup open --readonly {hdr} --key-file /run/vm/{keyf} {dev} rx 2>/tmp/err; then \
echo \"reenc:{name}=$(sha256sum </dev/mapper/rx | cut -d' ' -f1)\"; dmsetup table rx | cut -d' ' -f3 | sort | uniq -c | tr '\\n' ' ' >&2; cryptsetup close rx; \
else echo \"reenc:{name}=failed $(tr '\\n' ' ' </tmp/err)\"; fi\n",
            dev = dev_of(name),
        ));
    }
    script.push_str("dmesg | grep -iE 'device-mapper|crypt' | tail -n 20 >&2\n");

    let disk_refs: Vec<Disk> = disks.iter().map(|(_, p, ro)| if *ro { Disk::ro(p) } else { Disk::rw(p) }).collect();
    let files: Vec<(&str, &[u8])> =
        vec![("keyfile1", &key_bytes), ("np", &np_bytes), ("re-pass", &re_pass), ("enc-pass", &enc_pass)];
    let job = VmJob {
        disks: &disk_refs,
        script: &script,
        files: &files,
        timeout: Duration::from_secs(900),
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
    let (shas, opens, made, reenc) = (tagged("sha:"), tagged("open:"), tagged("made:"), tagged("reenc:"));
    let mut errors = Vec::new();
    for (name, spec, _) in IMAGES {
        let img = dir.join(name);
        let Some(kernel) = shas.get(*name) else {
            errors.push(format!("{name}: the guest's cryptsetup did not open it: {:?}", opens.get(*name)));
            continue;
        };
        let o = run(&mut loopkit(&["verify", "--json", "--no-prompt", "--key-file", s(&key), s(&img)]))?;
        let v = json(&o)?;
        if code(&o) != 0 || v["payload"]["sha256"] != kernel.as_str() || v["encryption"]["cipher"] != *spec {
            errors.push(format!(
                "{name}: loopkit exit {} payload {} cipher {} (the kernel maps {kernel})",
                code(&o),
                v["payload"]["sha256"],
                v["encryption"]["cipher"]
            ));
        }
        if sha256_file(&img)? != before[*name] {
            errors.push(format!("{name}: the image changed"));
        }
    }
    for (name, _, _, spec, _) in KERNEL_LRW {
        if made.get(*name).map(String::as_str) != Some("ok") {
            errors.push(format!("{name}: the kernel did not write it: {:?}", made.get(*name)));
            continue;
        }
        let img = d.path(&format!("{name}.img"));
        let o = run(&mut loopkit(&["verify", "--json", "--no-prompt", "--passphrase-file", s(&np), s(&img)]))?;
        let v = json(&o)?;
        if code(&o) != 0 || v["payload"]["sha256"] != want.as_str() || v["encryption"]["cipher"] != *spec {
            errors.push(format!(
                "{name}: loopkit exit {} payload {} cipher {} (want {want}, {spec})",
                code(&o),
                v["payload"]["sha256"],
                v["encryption"]["cipher"]
            ));
        }
    }
    for (name, f) in [("re", &re), ("enc", &enc)] {
        if reenc.get(name) != Some(&f.want) {
            errors.push(format!(
                "{name} ({} segments): the kernel maps {:?}, the plaintext (and loopkit's payload) is {}",
                f.segments,
                reenc.get(name),
                f.want
            ));
        }
    }
    if !errors.is_empty() {
        return util::fail(format!("{}\n{}", errors.join("\n"), out.transcript()));
    }
    eprintln!(
        "vm_luks_compat: {} cryptsetup images, {} kernel-made LRW volumes and 2 part-way re-encryptions ({} and {} \
         segments) agree with the kernel ({:.1?})",
        IMAGES.len(),
        KERNEL_LRW.len(),
        re.segments,
        enc.segments,
        out.elapsed
    );
    Ok(Completion::Completed)
}
