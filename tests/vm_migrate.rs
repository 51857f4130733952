//! Migrate against the real kernel (dm-crypt in the QEMU guest of `tests/vm.rs`): for each
//! migrate mode, the result is opened with cryptsetup as a user would — for `--mode plain` the
//! printed command lines on the original image, for `--mode detached-header` `cryptsetup open
//! --header HDR IMAGE`, for `--mode reencrypt` `cryptsetup open OUT` (LUKS2 and LUKS1) — then
//! the mapped device's SHA-256 must equal the fixture generator's plaintext SHA-256, and the file
//! system mounted read-only must hold exactly the source tree (file manifest). One VM boot.
//!
//! Verification from the disk: `migrate --mode reencrypt` verifies what is on the disk, not what is
//! in the page cache. The output's file system lives on a device-mapper `flakey` target that
//! corrupts reads of the data area (`corrupt_bio_byte … r …`) while writes land intact: migrate
//! must fail and leave no renamed output. A control run on the same layout without the corruption
//! succeeds, and the guest shows that a page-cache re-read of a file written there would not
//! notice.

use crate::ensure;
use crate::legacy::{encrypt, plains};
use crate::luks_read::{CHEAP_ARGON2, CHEAP_PBKDF2, NEW_PASS, write_pass};
use crate::migrate_modes::{migrate, migrate_to};
use crate::util::{self, Scratch, TestResult, run_ok, sha256_file, trial};
use crate::vm::{self, Disk, VmJob};
use libtest_mimic::{Completion, Trial};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// One thing to open in the guest.
struct Open {
    name: String,
    /// The command with host paths replaced by guest paths.
    command: String,
    /// What to pipe into it (a typed passphrase) or nothing.
    stdin: Option<String>,
    /// Device-mapper name it creates.
    mapping: String,
    plaintext_sha256: String,
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("vm_migrate::results_open_and_mount_in_kernel", results_open_and_mount_in_kernel),
        trial("vm_migrate::reencrypt_verification_reads_the_disk", reencrypt_verification_reads_the_disk),
    ]
}

fn results_open_and_mount_in_kernel() -> TestResult {
    let p = match plains() {
        Ok(p) => p,
        Err(e) => return util::skip(e),
    };
    for t in ["cryptsetup", "aespipe"] {
        if !util::have(t) {
            return util::skip(format!("{t} not installed"));
        }
    }
    let d = Scratch::new("vm-migrate");
    let pass = p.dir.join("pass");
    let typed = std::fs::read_to_string(&pass)?.lines().next().unwrap_or("").to_string();
    let np = d.path("newpass");
    write_pass(&np, NEW_PASS)?;
    let tree = p.dir.join("tree");
    let k65 = d.path("k65");
    run_ok(Command::new(util::python()).arg(util::repo_root().join("testdata/gen/legacy.py")).args([
        "keyfile",
        "--lines",
        "65",
        "--out",
        s(&k65),
    ]))?;

    let cl = encrypt(
        &d.0,
        "cl.img",
        "ext2",
        &["--scheme", "cryptoloop", "--derivation", "rmd160", "--key-bits", "256", "--passphrase-file", s(&pass)],
    )?;
    let clo = encrypt(
        &d.0,
        "cl-off.img",
        "ext4",
        &[
            "--scheme",
            "cryptoloop",
            "--derivation",
            "rmd160",
            "--key-bits",
            "128",
            "--passphrase-file",
            s(&pass),
            "--offset",
            "4096",
        ],
    )?;
    let la = encrypt(
        &d.0,
        "la-v3.img",
        "ext3",
        &["--scheme", "loop-aes", "--aespipe-args", "-e AES256", "--keyfile", s(&k65)],
    )?;
    let sources = [&cl, &clo, &la];
    let src_sums: Vec<String> = sources.iter().map(|f| sha256_file(&f.image)).collect::<Result<_, _>>()?;

    // Host side: run every mode.
    let mut disks: Vec<PathBuf> = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = vec![("newpass".into(), NEW_PASS.as_bytes().to_vec())];
    let mut opens: Vec<Open> = Vec::new();
    let disk_of = |disks: &mut Vec<PathBuf>, p: &Path| -> String {
        disks.push(p.to_path_buf());
        vm::dev(disks.len() - 1)
    };

    // (a) plain: both printed command lines on the original images.
    for (name, f, secret) in [
        ("plain-cl", &cl, vec!["--passphrase-file", s(&pass)]),
        ("plain-cl-off", &clo, vec!["--passphrase-file", s(&pass)]),
        ("plain-la-v3", &la, vec!["--key-file", s(&k65)]),
    ] {
        let key = d.path(&format!("{name}.key"));
        let mut args = vec![s(&f.image), "--key-out", s(&key), "--name", "legacy"];
        args.extend(secret);
        let (c, v, e) = migrate(&args)?;
        ensure!(c == 0, "{name}: exit {c}: {e}");
        let dev = disk_of(&mut disks, &f.image);
        let guest_key = format!("/run/vm/{name}.key");
        files.push((format!("{name}.key"), std::fs::read(&key)?));
        let kc = v["plain"]["key_file_command"].as_str().ok_or("no key-file command")?;
        opens.push(Open {
            name: format!("{name}-keyfile"),
            command: kc.replace(s(&f.image), &dev).replace(s(&key), &guest_key),
            stdin: None,
            mapping: "legacy".into(),
            plaintext_sha256: f.plaintext_sha256.clone(),
        });
        if let Some(pc) = v["plain"]["passphrase_command"].as_str() {
            opens.push(Open {
                name: format!("{name}-typed"),
                command: pc.replace(s(&f.image), &dev),
                stdin: Some(typed.clone()),
                mapping: "legacy".into(),
                plaintext_sha256: f.plaintext_sha256.clone(),
            });
        }
    }
    // (b) detached header over the unchanged image.
    let hdr = d.path("cl.luks");
    let (c, _, e) =
        migrate_to(&cl.image, "detached-header", &hdr, &np, &[&["--passphrase-file", s(&pass)], CHEAP_ARGON2])?;
    ensure!(c == 0, "detached-header: exit {c}: {e}");
    // The header goes in as its own disk (like a header kept on a USB stick): cryptsetup reads
    // headers with O_DIRECT, which the 9p share does not support.
    let hdr_dev = disk_of(&mut disks, &hdr);
    let dev = disk_of(&mut disks, &cl.image);
    opens.push(Open {
        name: "detached-cl".into(),
        command: format!("cryptsetup open --readonly --header {hdr_dev} --key-file /run/vm/newpass {dev} migrated"),
        stdin: None,
        mapping: "migrated".into(),
        plaintext_sha256: cl.plaintext_sha256.clone(),
    });
    // (c) re-encryption: LUKS2 (argon2id) from cryptoloop and from loop-AES multi-key, LUKS1.
    for (name, f, extra) in [
        ("re-cl-luks2", &cl, [&["--passphrase-file", s(&pass)][..], CHEAP_ARGON2].concat()),
        ("re-la-luks2", &la, [&["--key-file", s(&k65)][..], CHEAP_PBKDF2].concat()),
        ("re-clo-luks1", &clo, vec!["--passphrase-file", s(&pass), "--luks1", "--pbkdf-force-iterations", "1000"]),
    ] {
        let out = d.path(&format!("{name}.img"));
        let (c, v, e) = migrate_to(&f.image, "reencrypt", &out, &np, &[&extra])?;
        ensure!(c == 0 && v["sha256_match"] == true, "{name}: exit {c}: {e}\n{v}");
        let dev = disk_of(&mut disks, &out);
        opens.push(Open {
            name: name.into(),
            command: format!("cryptsetup open --readonly --key-file /run/vm/newpass {dev} migrated"),
            stdin: None,
            mapping: "migrated".into(),
            plaintext_sha256: f.plaintext_sha256.clone(),
        });
    }

    // Guest side.
    let mut script = String::from("set +e\nmkdir -p /tmp/m\n");
    for o in &opens {
        let n = &o.name;
        let stdin = match &o.stdin {
            Some(t) => format!("printf '%s\\n' {}", vm::sh_quote(t)),
            None => "true".into(),
        };
        script.push_str(&format!(
            r#"
echo "== {n}: {cmd}"
if {stdin} | {cmd} 2>/tmp/err; then
    echo "open:{n}=ok"
    echo "status:{n}=$(cryptsetup status {m} | tr -s ' \n' ' ')"
    echo "sha:{n}=$(sha256sum </dev/mapper/{m} | cut -d' ' -f1)"
    if mount -o ro /dev/mapper/{m} /tmp/m 2>/tmp/err; then
        echo "mount:{n}=ok"
{sums}        umount /tmp/m
    else
        echo "mount:{n}=failed $(tr '\n' ' ' </tmp/err)"
    fi
    cryptsetup close {m} || echo "close:{n}=failed"
else
    echo "open:{n}=failed $(tr '\n' ' ' </tmp/err)"
fi
"#,
            cmd = o.command,
            m = o.mapping,
            sums = vm::guest_tree_sums("/tmp/m", &format!("file:{n}:")),
        ));
    }
    let disk_refs: Vec<Disk> = disks.iter().map(|p| Disk::ro(p)).collect();
    let file_refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let job = VmJob {
        disks: &disk_refs,
        script: &script,
        files: &file_refs,
        timeout: Duration::from_secs(400),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(out) => out,
        Err(unavailable) => return unavailable.skip(),
    };
    out.check()?;
    let tagged = |tag: &str| -> BTreeMap<String, String> {
        out.tagged(tag).filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let (opened, shas, mounts, status) = (tagged("open:"), tagged("sha:"), tagged("mount:"), tagged("status:"));
    let want_files = vm::host_tree_sums(&tree)?;
    let mut errors = Vec::new();
    for o in &opens {
        let n = &o.name;
        if opened.get(n).map(String::as_str) != Some("ok") {
            errors.push(format!("{n}: `{}` did not open: {:?}", o.command, opened.get(n)));
            continue;
        }
        if shas.get(n) != Some(&o.plaintext_sha256) {
            errors.push(format!("{n}: mapped sha256 {:?} != plaintext {}", shas.get(n), o.plaintext_sha256));
        }
        if n.starts_with("re-") {
            let st = status.get(n).cloned().unwrap_or_default();
            if !(st.contains("aes-xts-plain64") && st.contains("keysize: 512 bits") && st.contains("sector size: 512"))
            {
                errors.push(format!("{n}: cryptsetup status: {st}"));
            }
        }
        match mounts.get(n) {
            Some(m) if m.starts_with("ok") => {
                let got = out.tree_sums(&format!("file:{n}:"));
                if got != want_files {
                    errors.push(format!(
                        "{n}: files differ from the source tree ({} vs {} files)",
                        got.len(),
                        want_files.len()
                    ));
                }
            }
            other => errors.push(format!("{n}: mount -o ro failed: {other:?}")),
        }
    }
    for (f, before) in sources.iter().zip(&src_sums) {
        if sha256_file(&f.image)? != *before {
            errors.push(format!("{} changed", f.image.display()));
        }
    }
    if !errors.is_empty() {
        return util::fail(format!("{}\n{}", errors.join("\n"), out.transcript()));
    }
    eprintln!("vm_migrate: {} mappings opened and mounted in one VM run of {:.1?}", opens.len(), out.elapsed);
    Ok(Completion::Completed)
}

/// The guest script of [`reencrypt_verification_reads_the_disk`]. `/dev/vda` is the source
/// (read-only), `/dev/vdb` a blank scratch disk. For each run the scratch disk gets a fresh ext4
/// whose metadata is packed at its start (`packed_meta_blocks`, no journal) and a device-mapper
/// table: `linear` over the metadata blocks (up to the first free block), `flakey` over the rest
/// (where every file's data goes). `clean`: flakey always up, no features — a pass-through.
/// `corrupt`: always down with `corrupt_bio_byte 1 r 90 0` — every read bio of the data area
/// gets its first byte replaced by 90, writes are passed through unchanged.
const FLAKEY_SCRIPT: &str = r#"
set +e
modprobe -d "$VM_MODROOT" dm-flakey || { echo "setup:no dm-flakey module"; exit 3; }
src=/dev/vda; disk=/dev/vdb
sz=$(blockdev --getsz $disk)
mkdir -p /tmp/out
table() {
    case $1 in
        clean) feat="3600 0" ;;
        corrupt) feat="0 3600 5 corrupt_bio_byte 1 r 90 0" ;;
    esac
    printf '0 %s linear %s 0\n%s %s flakey %s %s %s\n' $meta $disk $meta $((sz - meta)) $disk $meta "$feat"
}
fresh() {
    mkfs.ext4 -q -F -b 4096 -O ^has_journal -E packed_meta_blocks=1,lazy_itable_init=0,nodiscard $disk || exit 4
    first=$(dumpe2fs $disk 2>/dev/null | awk '/^  Free blocks: [0-9]/{split($3, a, "-"); print a[1]; exit}')
    [ -n "$first" ] || exit 5
    meta=$(( ${2:-$first} * 8 ))
    table $1 | dmsetup create out || exit 6
    echo "table:$1=$(dmsetup table out | tr '\n' ';')"
    mount /dev/mapper/out /tmp/out || exit 7
}
finish() { umount /tmp/out; dmsetup remove out; }
# With the corruption switched off: does the kept partial output open with cryptsetup and the
# new passphrase (its header's writes landed intact), and what are its first 1 MiB of plaintext
# (the first chunk, written before its read-back failed)?
kept() {
    umount /tmp/out
    table clean | dmsetup reload out && dmsetup resume out
    mount /dev/mapper/out /tmp/out
    if cryptsetup open --readonly --key-file /run/vm/newpass /tmp/out/out.img.partial kept 2>/tmp/err; then
        echo "kept:$1=$(head -c 1048576 /dev/mapper/kept | sha256sum | cut -d' ' -f1)"
        cryptsetup close kept
    else
        echo "kept:$1=open failed $(tr '\n' ' ' < /tmp/err)"
    fi
}
migrate() {
    $BIN migrate $src --to dmcrypt --mode reencrypt -o /tmp/out/out.img --json --quiet --no-prompt \
        --passphrase-file /run/vm/pass --new-passphrase-file /run/vm/newpass \
        --pbkdf pbkdf2 --pbkdf-force-iterations 1000 > /run/vm/$1.json 2> /run/vm/$1.err
    echo "exit:$1=$?"
    echo "final:$1=$([ -e /tmp/out/out.img ] && echo yes || echo no)"
    echo "partial:$1=$([ -e /tmp/out/out.img.partial ] && echo yes || echo no)"
}

# Physical blocks of OUT's file: the last one of the header (logical blocks < 4096, the 16 MiB
# LUKS2 header) and the first one of the payload.
blocks() {
    filefrag -v "$1" | awk '$1 ~ /^[0-9]+:$/ {
        gsub(/\.\./, " "); gsub(/:/, " "); split($0, f, " ");
        l0 = f[2]; l1 = f[3]; p0 = f[4]; p1 = f[5];
        if (l0 < 4096) { e = (l1 < 4095) ? p1 : p0 + 4095 - l0; if (e > h) h = e }
        if (l1 >= 4096) { b = (l0 >= 4096) ? p0 : p0 + 4096 - l0; if (m == "" || b < m) m = b }
    } END { print h + 0, m + 0 }'
}

# Control: the same layout, flakey passing everything through: migrate succeeds.
fresh clean
migrate clean
b=$(blocks /tmp/out/out.img)
pay_start=${b#* }
echo "blocks:clean=$b"
finish

# Only the payload's blocks corrupted on read (the boundary where the control run's payload
# began; the allocation is expected to repeat on a fresh identical file system, and the guest
# reports where it really went): the payload comparison must catch it.
fresh corrupt $pay_start
migrate payload
echo "blocks:payload=$(blocks /tmp/out/out.img.partial) $pay_start"
kept payload
finish

# The data area's reads are corrupted: migrate must fail, OUT must not appear.
fresh corrupt
migrate corrupt
# What a page-cache re-read would see: a file written on this device reads back intact from
# the cache, and corrupted from the device (O_DIRECT).
head -c 1048576 /dev/urandom > /tmp/r
cp /tmp/r /tmp/out/r && sync
cmp -s /tmp/r /tmp/out/r && echo "cached:same" || echo "cached:differs"
dd if=/tmp/out/r iflag=direct bs=1M 2>/dev/null | cmp -s - /tmp/r && echo "direct:same" || echo "direct:differs"
kept corrupt
finish
"#;

fn reencrypt_verification_reads_the_disk() -> TestResult {
    let (d, f, pass) = match crate::legacy::rmd160_fixture("vm-mig-flakey", "c.img", "ext2")? {
        Ok(x) => x,
        Err(reason) => return util::skip(reason),
    };
    if !util::have("cryptsetup") {
        return util::skip("cryptsetup not installed");
    }
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let before = sha256_file(&f.image)?;
    let scratch = d.path("scratch.img");
    std::fs::File::create(&scratch)?.set_len(96 << 20)?;
    let script = format!("BIN={}\n{FLAKEY_SCRIPT}", vm::sh_quote(&bin_in_guest));
    let pass_bytes = std::fs::read(&pass)?;
    let job = VmJob {
        disks: &[Disk::ro(&f.image), Disk::rw(&scratch)],
        script: &script,
        files: &[("pass", &pass_bytes), ("newpass", NEW_PASS.as_bytes())],
        timeout: Duration::from_secs(300),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(o) => o,
        Err(u) => return u.skip(),
    };
    out.check()?;
    let tags: BTreeMap<String, String> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('=').or_else(|| l.split_once(':').filter(|(k, _)| !k.contains(' '))))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let tag = |k: &str| tags.get(k).map(String::as_str).unwrap_or("");
    let report = |name: &str| -> Result<serde_json::Value, libtest_mimic::Failed> {
        serde_json::from_slice(&out.file(&format!("{name}.json"))?)
            .map_err(|e| format!("{name}.json: {e}\n{}", out.transcript()).into())
    };
    let ctx = out.transcript();
    ensure!(
        tag("table:corrupt").contains("corrupt_bio_byte 1 r 90"),
        "the flakey table: {}\n{ctx}",
        tag("table:corrupt")
    );
    // The control run: everything the same but the corruption, and migrate succeeds.
    let v = report("clean")?;
    ensure!(
        tag("exit:clean") == "0"
            && v["sha256_match"] == true
            && v["migrated_sha256"] == f.plaintext_sha256.as_str()
            && tag("final:clean") == "yes"
            && tag("partial:clean") == "no",
        "control run without corruption: exit {} {v}\n{ctx}",
        tag("exit:clean")
    );
    // With reads of the data area corrupted: exit 2, a verification error, no OUT.
    let v = report("corrupt")?;
    let msg = v["error"]["message"].as_str().unwrap_or("");
    ensure!(
        tag("exit:corrupt") == "2"
            && v["error"]["kind"] == "corrupt"
            && msg.contains("verification failed")
            && msg.contains("was not created"),
        "migrate onto a device that corrupts reads: exit {} {v}\n{ctx}",
        tag("exit:corrupt")
    );
    ensure!(
        tag("final:corrupt") == "no" && tag("partial:corrupt") == "yes",
        "after the failed verification: OUT exists {}, OUT.partial exists {}\n{ctx}",
        tag("final:corrupt"),
        tag("partial:corrupt")
    );
    // A page-cache re-read would not have noticed; the device read does.
    ensure!(
        tag("cached") == "same" && tag("direct") == "differs",
        "page cache vs device on the corrupting target: cached {}, direct {}\n{ctx}",
        tag("cached"),
        tag("direct")
    );
    // The failure came from reading, not writing: the header was written intact (the kept
    // OUT.partial opens with the new passphrase once the corruption is switched off). Every
    // chunk is read back right after it is written, so the run stopped at the first one.
    ensure!(
        tag("kept:corrupt").len() == 64,
        "the kept OUT.partial does not open with the new passphrase: {}\n{ctx}",
        tag("kept:corrupt")
    );
    // Payload-only corruption: a verification failure as well; when the header really stayed in
    // the clean part (the guest reports the blocks), it is the byte comparison that caught it.
    let v = report("payload")?;
    let pmsg = v["error"]["message"].as_str().unwrap_or("");
    ensure!(
        tag("exit:payload") == "2"
            && pmsg.contains("verification failed")
            && tag("final:payload") == "no"
            && tag("partial:payload") == "yes",
        "payload-only corruption: exit {} {v}\n{ctx}",
        tag("exit:payload")
    );
    // ...and that first chunk (1 MiB) was written intact before its read-back failed.
    let plain = std::fs::read(plains()?.dir.join("ext2.img"))?;
    std::fs::write(d.path("first-mib"), &plain[..plain.len().min(1 << 20)])?;
    let first_mib = sha256_file(&d.path("first-mib"))?;
    ensure!(
        tag("kept:payload") == first_mib,
        "the kept OUT.partial's first MiB maps {} not the plaintext's {first_mib}\n{ctx}",
        tag("kept:payload")
    );
    let b: Vec<u64> = tag("blocks:payload").split(' ').filter_map(|x| x.parse().ok()).collect();
    let header_clean = matches!(b[..], [hdr_end, pay_start, boundary] if hdr_end < boundary && boundary <= pay_start);
    if header_clean {
        ensure!(
            pmsg.contains("read back from the disk, differs from the source's plaintext"),
            "payload-only corruption was not caught by the payload comparison: {pmsg}\n{ctx}"
        );
    } else {
        eprintln!("vm_migrate: the payload-only run allocated differently ({b:?}); only the failure was checked");
    }
    ensure!(sha256_file(&f.image)? == before, "the source changed");
    eprintln!("vm_migrate: payload-only corruption: {pmsg}");
    eprintln!("vm_migrate: corrupting-read verification checked in one VM run of {:.1?}: {msg}", out.elapsed);
    Ok(Completion::Completed)
}
