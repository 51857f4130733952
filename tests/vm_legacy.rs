//! Legacy images against the real kernel: for images built by `testdata/gen/legacy.py` (Python
//! `cryptography` for cryptoloop, `aespipe` for loop-AES), the `cryptsetup` command line that
//! `loopkit inspect --json` prints is run verbatim in the test VM (only the image path, the key
//! file and the passphrase typed at the prompt are supplied). The device it maps must hold the
//! plaintext image the fixture was built from (sha256 equal to the generator's, and to the digest
//! `loopkit verify --json` reports), and mount read-only with every file equal to the source tree.
//! All images go into one VM boot.

use crate::ensure;
use crate::legacy::{Fixture, encrypt, plains};
use crate::util::{self, Scratch, TestResult, code, json, loopkit, run, run_ok, sha256_file, trial};
use crate::vm::{self, Disk, VmJob};
use libtest_mimic::{Completion, Failed, Trial};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The first line of a passphrase file (what a user types at the prompt).
fn passphrase(file: &Path) -> Result<String, Failed> {
    let s = std::fs::read_to_string(file)?;
    Ok(s.lines().next().unwrap_or("").to_string())
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("vm_legacy::cryptsetup_line_maps_plaintext_in_kernel", cryptsetup_line_maps_plaintext_in_kernel),
        trial("vm_legacy::unreadable_sectors_of_a_failing_disk", unreadable_sectors_of_a_failing_disk),
    ]
}

/// A disc with a bad spot, emulated by device-mapper's `error` target in the guest: 4 KiB at
/// byte 1 MiB of a cryptoloop image return EIO. `loopkit verify` on the block device must finish,
/// exit 1, name exactly that range (the oracle is the dm table), and hash the rest: its digest
/// must equal an independent Python decryption of the image with those bytes zeroed.
fn unreadable_sectors_of_a_failing_disk() -> TestResult {
    let (_d, f, pass) = match crate::legacy::rmd160_fixture("vm-flaky", "c.img", "ext3")? {
        Ok(x) => x,
        Err(reason) => return util::skip(reason),
    };
    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let (bad_start, bad_len) = (1u64 << 20, 4096u64);
    // Expected digest: the image with the bad bytes zeroed, decrypted by Python.
    let zeroed = _d.path("zeroed.img");
    let mut bytes = std::fs::read(&f.image)?;
    bytes[bad_start as usize..(bad_start + bad_len) as usize].fill(0);
    std::fs::write(&zeroed, &bytes)?;
    let want = crate::legacy::python_rmd160_payload_sha256(&zeroed, &pass)?;
    let before = sha256_file(&f.image)?;
    let pass_bytes = std::fs::read(&pass)?;
    let script = format!(
        r#"
img={dev}
s=$(blockdev --getsz $img)
printf '0 {a} linear %s 0\n{a} {n} error\n{b} %s linear %s {b}\n' $img $((s - {b})) $img | dmsetup create flaky
rc=0
{bin} verify --json --quiet --passphrase-file /run/vm/pass /dev/mapper/flaky > /run/vm/out.json || rc=$?
dmsetup remove flaky
echo "rc:$rc"
"#,
        dev = vm::dev(0),
        a = bad_start / 512,
        n = bad_len / 512,
        b = (bad_start + bad_len) / 512,
        bin = vm::sh_quote(&bin_in_guest),
    );
    let job = VmJob {
        disks: &[Disk::ro(&f.image)],
        script: &script,
        files: &[("pass", &pass_bytes)],
        timeout: Duration::from_secs(300),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(o) => o,
        Err(u) => return u.skip(),
    };
    out.check()?;
    let rc: Vec<&str> = out.tagged("rc:").collect();
    ensure!(rc == ["1"], "verify on the failing disk: exit {rc:?}, want 1\n{}", out.transcript());
    let v: serde_json::Value = serde_json::from_slice(&out.file("out.json")?)?;
    ensure!(v["payload"]["unreadable_bytes"] == bad_len, "unreadable bytes: {}", v["payload"]);
    ensure!(
        v["payload"]["unreadable_ranges"] == serde_json::json!([{"offset_bytes": bad_start, "size_bytes": bad_len}]),
        "unreadable ranges {} differ from the dm error target",
        v["payload"]["unreadable_ranges"]
    );
    ensure!(
        v["problems"].as_array().is_some_and(|a| a.iter().any(|p| p["code"] == "image.unreadable")),
        "no image.unreadable problem: {}",
        v["problems"]
    );
    ensure!(v["payload"]["sha256"] == want.as_str(), "digest {} != python {want}", v["payload"]["sha256"]);
    ensure!(sha256_file(&f.image)? == before, "the image changed");
    Ok(Completion::Completed)
}

/// What the guest types at cryptsetup's passphrase prompt, or which raw key file it gets.
enum Secret {
    /// A passphrase line on stdin (cryptsetup plain hashes it with --hash).
    Typed(String),
    /// Only a key file (loop-AES key file, or a raw key): the command names it.
    KeyFile,
}

struct Case {
    name: &'static str,
    /// Plaintext image (legacy.py plains): ext2 / ext3 / ext4 / iso9660.
    fs: &'static str,
    gen_args: Vec<String>,
    loopkit_args: Vec<String>,
    secret: Secret,
    /// Host file that replaces the command's KEYFILE placeholder (or appears in it verbatim).
    keyfile: Option<PathBuf>,
}

/// Host paths the case table refers to: `{P}` passphrase file, `{L}` long passphrase file,
/// `{K64}`/`{K65}` loop-AES key files.
struct Paths {
    pass: PathBuf,
    longpass: PathBuf,
    k64: PathBuf,
    k65: PathBuf,
}

/// The fixtures: (name, plaintext fs, legacy.py encrypt args, loopkit args, what is typed at the
/// prompt, key file). Arguments are separated by `|`; `{…}` are [`Paths`]; in the typed secret
/// `{pass}` is the passphrase.
type CaseRow = (&'static str, &'static str, &'static str, &'static str, Option<&'static str>, Option<&'static str>);
#[rustfmt::skip]
const CASES: &[CaseRow] = &[
    // cryptoloop (util-linux / Debian losetup -e aes), encrypted by Python `cryptography`
    ("cl-raw-256", "ext2", "--derivation|util-linux-raw|--key-bits|256|--passphrase-file|{P}", "--passphrase-file|{P}", Some("{pass}"), None),
    // a passphrase of 32 bytes or more: cryptsetup derives the key with --hash plain:31
    ("cl-raw-256-longpass", "ext2", "--derivation|util-linux-raw|--key-bits|256|--passphrase-file|{L}", "--passphrase-file|{L}", Some("{longpass}"), None),
    ("cl-rmd160-256", "ext2", "--derivation|rmd160|--key-bits|256|--passphrase-file|{P}", "--passphrase-file|{P}", Some("{pass}"), None),
    ("cl-rmd160-128", "ext3", "--derivation|rmd160|--key-bits|128|--passphrase-file|{P}", "--passphrase-file|{P}", Some("{pass}"), None),
    ("cl-rmd160-192", "ext4", "--derivation|rmd160|--key-bits|192|--passphrase-file|{P}", "--passphrase-file|{P}", Some("{pass}"), None),
    ("cl-rmd160-256-offset4096", "ext2", "--derivation|rmd160|--key-bits|256|--passphrase-file|{P}|--offset|4096", "--passphrase-file|{P}", Some("{pass}"), None),
    ("cl-rmd160-256-iso9660", "iso9660", "--derivation|rmd160|--key-bits|256|--passphrase-file|{P}", "--passphrase-file|{P}", Some("{pass}"), None),
    // loop-AES, encrypted by aespipe
    ("la-aes128-sha256", "ext2", "--scheme|loop-aes|--aespipe-args|-e AES128|--passphrase-file|{P}", "--passphrase-file|{P}", Some("{pass}"), None),
    ("la-aes256-sha512", "ext4", "--scheme|loop-aes|--aespipe-args|-e AES256|--passphrase-file|{P}", "--passphrase-file|{P}", Some("{pass}"), None),
    ("la-aes256-rmd160", "ext2", "--scheme|loop-aes|--aespipe-args|-e AES256 -H rmd160|--passphrase-file|{P}", "--passphrase-file|{P}|--scheme|loop-aes", Some("{pass}"), None),
    // inspect's note: "type the passphrase immediately followed by the loop-AES seed"
    ("la-aes128-seed", "ext2", "--scheme|loop-aes|--aespipe-args|-e AES128 -S saltsalt|--passphrase-file|{P}", "--passphrase-file|{P}|--pseed|saltsalt", Some("{pass}saltsalt"), None),
    ("la-aes128-at-offset65536", "ext2", "--scheme|loop-aes|--aespipe-args|-e AES128|--offset|65536|--iv-exclude-offset|--passphrase-file|{P}", "--passphrase-file|{P}", Some("{pass}"), None),
    ("la-v2-aes128", "ext2", "--scheme|loop-aes|--aespipe-args|-e AES128|--keyfile|{K64}", "--key-file|{K64}", None, Some("{K64}")),
    ("la-v3-aes256", "ext3", "--scheme|loop-aes|--aespipe-args|-e AES256|--keyfile|{K65}", "--key-file|{K65}", None, Some("{K65}")),
    ("la-v3-aes192-offset4096", "ext2", "--scheme|loop-aes|--aespipe-args|-e AES192|--keyfile|{K65}|--offset|4096", "--key-file|{K65}", None, Some("{K65}")),
    ("la-v2-aes128-at-offset4096", "ext2", "--scheme|loop-aes|--aespipe-args|-e AES128|--keyfile|{K64}|--offset|4096|--iv-exclude-offset", "--key-file|{K64}|--offset|@4096", None, Some("{K64}")),
];

impl Paths {
    fn expand(&self, s: &str) -> String {
        s.replace("{P}", self.pass.to_str().unwrap())
            .replace("{L}", self.longpass.to_str().unwrap())
            .replace("{K64}", self.k64.to_str().unwrap())
            .replace("{K65}", self.k65.to_str().unwrap())
    }

    fn args(&self, s: &str) -> Vec<String> {
        s.split('|').map(|a| self.expand(a)).collect()
    }
}

fn cases(paths: &Paths, typed_pass: &str, typed_long: &str) -> Vec<Case> {
    CASES
        .iter()
        .map(|&(name, fs, gen_args, loopkit_args, typed, keyfile)| {
            let mut gen_args = paths.args(gen_args);
            if !gen_args.iter().any(|a| a == "--scheme") {
                gen_args.splice(0..0, ["--scheme".to_string(), "cryptoloop".to_string()]);
            }
            Case {
                name,
                fs,
                gen_args,
                loopkit_args: paths.args(loopkit_args),
                secret: match typed {
                    Some(t) => Secret::Typed(t.replace("{longpass}", typed_long).replace("{pass}", typed_pass)),
                    None => Secret::KeyFile,
                },
                keyfile: keyfile.map(|k| PathBuf::from(paths.expand(k))),
            }
        })
        .collect()
}

/// A fixture ready for the VM: what loopkit said about it and how the guest runs the command.
struct Prepared {
    case: Case,
    fixture: Fixture,
    /// The tree the plaintext file system was made from.
    tree: PathBuf,
    image_sha256: String,
    /// `payload.sha256` of `loopkit verify --json`.
    loopkit_payload_sha256: String,
    /// The command exactly as `loopkit inspect --json` printed it.
    command: String,
    /// The command with the image path, key file and placeholder mapped into the guest.
    guest_command: String,
    /// The dm name the command creates.
    mapping: String,
}

/// Map loopkit's command into the guest: the image path becomes the virtio disk, the key file
/// (the placeholder `KEYFILE` or the host path loopkit was given) becomes the copy in the share.
/// Everything else is kept verbatim.
fn guest_command(
    cmd: &str,
    image: &Path,
    dev: &str,
    keyfile: Option<(&Path, &str)>,
) -> Result<(String, String), Failed> {
    let image = image.to_str().unwrap();
    let mut toks: Vec<String> = cmd.split(' ').map(str::to_string).collect();
    ensure!(toks.len() > 4 && toks[0] == "cryptsetup" && toks[1] == "open", "not a cryptsetup open line: {cmd}");
    ensure!(
        toks.iter().filter(|t| *t == image).count() == 1,
        "the command does not name the image {image} once: {cmd}"
    );
    ensure!(toks.iter().any(|t| t == "--readonly"), "the command does not map read-only: {cmd}");
    for t in toks.iter_mut() {
        if t == image {
            *t = dev.to_string();
        } else if let Some((host, guest)) = keyfile
            && (t == "KEYFILE" || t == host.to_str().unwrap())
        {
            *t = guest.to_string();
        }
    }
    if keyfile.is_some() {
        ensure!(toks.iter().any(|t| t == "--key-file"), "expected a --key-file option: {cmd}");
    } else {
        ensure!(!toks.iter().any(|t| t.contains("KEYFILE")), "the command needs a key file: {cmd}");
    }
    let mapping = toks.last().cloned().unwrap_or_default();
    ensure!(
        !mapping.is_empty() && mapping.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "odd mapping name in {cmd}"
    );
    Ok((toks.join(" "), mapping))
}

/// Ask loopkit (on the host) for `fixture`'s cryptsetup line and payload digest, and map the
/// line into the guest, where the image is disk number `disk`.
fn prepare(case: Case, fixture: Fixture, tree: &Path, disk: usize) -> Result<Prepared, Failed> {
    let image = fixture.image.to_str().unwrap();
    let lk: Vec<&str> = case.loopkit_args.iter().map(String::as_str).collect();
    let out = run(loopkit(&["inspect", "--json"]).args(&lk).arg(image))?;
    ensure!(code(&out) == 0, "{}: inspect exit {}: {}", case.name, code(&out), String::from_utf8_lossy(&out.stderr));
    let inspect = json(&out)?;
    let command = match inspect["cryptsetup"].as_str() {
        Some(c) => c.to_string(),
        None => return Err(format!("{}: inspect printed no cryptsetup line\n{inspect}", case.name).into()),
    };
    let out = run(loopkit(&["verify", "--json"]).args(&lk).arg(image))?;
    let verify = json(&out)?;
    ensure!(code(&out) == 0, "{}: verify exit {}\n{verify}", case.name, code(&out));
    let loopkit_payload_sha256 = verify["payload"]["sha256"].as_str().unwrap_or("").to_string();
    let guest_key = case.keyfile.as_ref().map(|k| format!("/run/vm/{}", k.file_name().unwrap().to_str().unwrap()));
    let keyfile = case.keyfile.as_deref().zip(guest_key.as_deref());
    let (guest_command, mapping) = guest_command(&command, &fixture.image, &vm::dev(disk), keyfile)
        .map_err(|e| format!("{}: {}", case.name, e.message().unwrap_or("")))?;
    let image_sha256 = sha256_file(&fixture.image)?;
    Ok(Prepared {
        case,
        fixture,
        tree: tree.to_path_buf(),
        image_sha256,
        loopkit_payload_sha256,
        command,
        guest_command,
        mapping,
    })
}

fn cryptsetup_line_maps_plaintext_in_kernel() -> TestResult {
    let p = match plains() {
        Ok(p) => p,
        Err(e) => return util::skip(e),
    };
    if !util::have("aespipe") {
        return util::skip("aespipe not installed");
    }
    let d = Scratch::new("vm-legacy");
    let paths =
        Paths { pass: p.dir.join("pass"), longpass: p.dir.join("longpass"), k64: d.path("k64"), k65: d.path("k65") };
    let generator = util::repo_root().join("testdata/gen/legacy.py");
    for (n, k) in [("64", &paths.k64), ("65", &paths.k65)] {
        run_ok(Command::new(util::python()).arg(&generator).args([
            "keyfile",
            "--lines",
            n,
            "--out",
            k.to_str().unwrap(),
        ]))?;
    }
    let typed_pass = passphrase(&paths.pass)?;
    let typed_long = passphrase(&paths.longpass)?;

    // Host side: build every fixture, ask loopkit for its command and its payload digest.
    let mut prepared = Vec::new();
    let tree = p.dir.join("tree");
    for (i, case) in cases(&paths, &typed_pass, &typed_long).into_iter().enumerate() {
        let gen_args: Vec<&str> = case.gen_args.iter().map(String::as_str).collect();
        let fixture = encrypt(&d.0, &format!("{}.img", case.name), case.fs, &gen_args)?;
        prepared.push(prepare(case, fixture, &tree, i)?);
    }
    // The README's shipped sample (sparse cryptoloop; holes decrypt to noise through the kernel
    // too): its digest was recorded by the generator, its tree is `legacy.py tree --small`.
    let sample = util::repo_root().join("testdata/sample");
    let small_tree = d.path("small-tree");
    run_ok(Command::new(util::python()).arg(&generator).args(["tree", "--small", small_tree.to_str().unwrap()]))?;
    let recorded = std::fs::read_to_string(sample.join("plaintext.sha256"))?;
    let case = Case {
        name: "readme-sample",
        fs: "ext2",
        gen_args: Vec::new(),
        loopkit_args: vec!["--passphrase-file".into(), sample.join("passphrase.txt").to_str().unwrap().into()],
        secret: Secret::Typed(passphrase(&sample.join("passphrase.txt"))?),
        keyfile: None,
    };
    let fixture = Fixture {
        image: sample.join("archive-2008.img"),
        plaintext_sha256: recorded.split_whitespace().next().unwrap_or("").to_string(),
    };
    prepared.push(prepare(case, fixture, &small_tree, prepared.len())?);

    // Guest side: one boot, every image. Per image print open:/sha:/mount:/file: lines.
    let mut script = String::from("set +e\nmkdir -p /tmp/m\n");
    for (i, pr) in prepared.iter().enumerate() {
        let n = pr.case.name;
        let stdin = match &pr.case.secret {
            Secret::Typed(s) => format!("printf '%s\\n' {}", vm::sh_quote(s)),
            Secret::KeyFile => "true".to_string(),
        };
        let dm = format!("/dev/mapper/{}", pr.mapping);
        script.push_str(&format!(
            r#"
echo "== {n} ({dev}): {cmd}"
if {stdin} | {cmd} 2>/tmp/err; then
    echo "open:{n}=ok"
    echo "sha:{n}=$(sha256sum <{dm} | cut -d' ' -f1)"
    if mount -o ro {dm} /tmp/m 2>/tmp/err; then
        echo "mount:{n}=ok"
{sums}        umount /tmp/m
    else
        echo "mount:{n}=failed $(tr '\n' ' ' </tmp/err)"
    fi
    cryptsetup close {mapping} || echo "close:{n}=failed"
else
    echo "open:{n}=failed $(tr '\n' ' ' </tmp/err)"
fi
"#,
            dev = vm::dev(i),
            cmd = pr.guest_command,
            mapping = pr.mapping,
            sums = vm::guest_tree_sums("/tmp/m", &format!("file:{n}:")),
        ));
    }
    // Negative control: the same line with the wrong hash must map different bytes, so the
    // sha256 comparison above can fail.
    let control = prepared.iter().find(|pr| pr.case.name == "cl-rmd160-256").ok_or("no cl-rmd160-256 case")?;
    ensure!(
        control.guest_command.contains(" --hash ripemd160 "),
        "unexpected line for cl-rmd160-256: {}",
        control.command
    );
    script.push_str(&format!(
        "printf '%s\\n' {pass} | {cmd}\necho \"control=$(sha256sum </dev/mapper/{m} | cut -d' ' -f1)\"\ncryptsetup close {m}\n",
        pass = vm::sh_quote(&typed_pass),
        cmd = control.guest_command.replace(" --hash ripemd160 ", " --hash sha1 "),
        m = control.mapping,
    ));
    script.push_str("dmesg | grep -iE 'device-mapper|crypt|EXT4-fs|ISOFS' | tail -n 40 >&2\n");

    let disks: Vec<Disk> = prepared.iter().map(|pr| Disk::ro(&pr.fixture.image)).collect();
    let keyfiles: Vec<(String, Vec<u8>)> = [&paths.k64, &paths.k65]
        .iter()
        .map(|k| Ok((k.file_name().unwrap().to_str().unwrap().to_string(), std::fs::read(k)?)))
        .collect::<Result<_, std::io::Error>>()?;
    let files: Vec<(&str, &[u8])> = keyfiles.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let job = VmJob {
        disks: &disks,
        script: &script,
        files: &files,
        timeout: Duration::from_secs(400),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(out) => out,
        Err(unavailable) => return unavailable.skip(),
    };
    out.check()?;

    // Judge every image; report all failures at once.
    let tagged = |tag: &str| -> BTreeMap<String, String> {
        out.tagged(tag).filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let (opened, shas, mounts) = (tagged("open:"), tagged("sha:"), tagged("mount:"));
    let mut errors = Vec::new();
    for pr in &prepared {
        let n = pr.case.name;
        let fx = &pr.fixture;
        if sha256_file(&fx.image)? != pr.image_sha256 {
            errors.push(format!("{n}: the image changed"));
        }
        if pr.loopkit_payload_sha256 != fx.plaintext_sha256 {
            errors.push(format!(
                "{n}: loopkit verify payload {} != plaintext {}",
                pr.loopkit_payload_sha256, fx.plaintext_sha256
            ));
        }
        match opened.get(n).map(String::as_str) {
            Some("ok") => {}
            other => {
                errors.push(format!("{n}: `{}` did not open in the kernel: {other:?}", pr.command));
                continue;
            }
        }
        let kernel = shas.get(n).map(String::as_str).unwrap_or("");
        if kernel != fx.plaintext_sha256 || kernel != pr.loopkit_payload_sha256 {
            errors.push(format!(
                "{n}: `{}` maps data with sha256 {kernel}; plaintext {}, loopkit {}",
                pr.command, fx.plaintext_sha256, pr.loopkit_payload_sha256
            ));
        }
        match mounts.get(n) {
            Some(m) if m.starts_with("ok") => {
                let got = out.tree_sums(&format!("file:{n}:"));
                let want_files = vm::host_tree_sums(&pr.tree)?;
                if got != want_files {
                    errors.push(format!("{n}: files differ from the source tree\nwant {want_files:?}\ngot  {got:?}"));
                }
            }
            other => errors.push(format!("{n}: mount -o ro failed: {other:?}")),
        }
    }
    let control_sha: Vec<&str> = out.tagged("control=").collect();
    if control_sha.len() != 1 || control_sha[0].len() != 64 || control_sha[0] == control.fixture.plaintext_sha256 {
        errors.push(format!("negative control (wrong --hash) did not map different bytes: {control_sha:?}"));
    }
    if !errors.is_empty() {
        return util::fail(format!("{}\n{}", errors.join("\n"), out.transcript()));
    }
    eprintln!(
        "vm_legacy: {} images mapped by loopkit's cryptsetup lines in one VM run of {:.1?}",
        prepared.len(),
        out.elapsed
    );
    Ok(Completion::Completed)
}
