//! Attach against the real kernel: `loopkit attach` serves images as ublk block devices in the
//! QEMU guest of `tests/vm.rs`, on Debian 13's 6.12 kernel (copy path) and on the
//! trixie-backports 7.x kernel (zero copy, `UBLK_F_AUTO_BUF_REG`). One boot per kernel and mode
//! runs every check; the oracles are the kernel (mount, dm-crypt via cryptsetup), `sha256sum` of
//! the source tree and of the generator's plaintext, and `fio --verify=crc32c`:
//! (a) an ext3 image on an ext4 virtio disk, attached and mounted: every file equals the tree;
//! (b) fio writes and verifies through the device on a fully allocated, a sparse and a
//!     fallocated image; after detach and a remount of the ext4 disk fio verifies the files
//!     through the file system (every byte landed), and their sizes did not change;
//! (c) a cryptoloop image with `--decrypt` and one with `--open-crypt` (also under the names
//!     `256`, `plain`, `legacy` and one with a space and quotes, which are words of the cryptsetup
//!     line or need quoting), a loop-AES `-C` image with `--decrypt`: device (or mapper) bytes
//!     equal the plaintext, files equal the tree;
//! (d) `--remap` only: a second process opening the image while it is attached gets it only after
//!     the server stopped remapping and released its lease, and sees every byte written through
//!     the device; writes after that go through the file and land too;
//! (e) SIGKILL of the server attached without recovery (`--recovery-timeout 0`; recovery has
//!     its own test, `vm_attach_recovery`): I/O on the device fails, the device goes away, the data written
//!     before stays in the image, `detach` cleans up the record, and a new attach works.
//! The mode (file path, or `--remap`: the remap engine) is a parameter of every check.

use crate::ensure;
use crate::legacy::{encrypt, plains};
use crate::util::{self, Scratch, TestResult, run_ok, sha256_file, trial};
use crate::vm::{self, Disk, VmJob};
use libtest_mimic::{Completion, Trial};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

/// How `attach` serves the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Through the image file (io_uring, O_DIRECT).
    File,
    /// Through the remap engine (raw device I/O at the file's extents).
    Remap,
}

impl Mode {
    fn args(self) -> &'static str {
        match self {
            Mode::File => "",
            Mode::Remap => "--remap",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Mode::File => "file",
            Mode::Remap => "remap",
        }
    }
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("vm_attach::refusals_without_a_kernel", refusals_without_a_kernel),
        trial("vm_attach::file_path_on_trixie_6_12", file_on_trixie),
        trial("vm_attach::file_path_on_backports_7", file_on_backports),
        trial("vm_attach::remap_on_trixie_6_12", remap_on_trixie),
        trial("vm_attach::remap_on_backports_7", remap_on_backports),
    ]
}

/// On the host (no ublk needed): what `attach` must refuse before touching the kernel, with
/// exit 2 and the reason, and an empty `--list`/`detach` of nothing. The image is unchanged.
fn refusals_without_a_kernel() -> TestResult {
    let d = Scratch::new("attach-refusals");
    let odd = d.path("odd.img");
    std::fs::write(&odd, vec![7u8; 1000])?;
    let good = d.path("good.img");
    std::fs::write(&good, vec![0u8; 4096])?;
    let state = d.path("state");
    let lk = |args: &[&str]| -> Result<std::process::Output, libtest_mimic::Failed> {
        util::run(util::loopkit(args).env("LOOPKIT_STATE_DIR", &state))
    };
    let out = lk(&["attach", odd.to_str().unwrap()])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        util::code(&out) == 2 && err.contains("1000 bytes") && err.contains("not a multiple of 512"),
        "odd size: exit {} {err}",
        util::code(&out)
    );
    let out = lk(&["attach", "--remap", good.to_str().unwrap(), "--json"])?;
    let v = util::json(&out)?;
    // No ublk on the host: refused before any preflight, lease or I/O.
    ensure!(
        util::code(&out) == 2 && v["ok"] == false && v["error"]["kind"] == "unsupported",
        "--remap: exit {} {v}",
        util::code(&out)
    );
    let msg = v["error"]["message"].as_str().unwrap_or("");
    ensure!(msg.contains("ublk is not available"), "--remap message: {v}");
    let out = lk(&["attach", "--list", "--json"])?;
    let v = util::json(&out)?;
    ensure!(util::code(&out) == 0 && v["devices"] == serde_json::json!([]), "empty list: {v}");
    let out = lk(&["detach", "/dev/ublkb99"])?;
    ensure!(util::code(&out) == 2, "detach of nothing: exit {}", util::code(&out));
    let out = lk(&["attach", d.path("missing.img").to_str().unwrap()])?;
    ensure!(util::code(&out) == 2, "missing image: exit {}", util::code(&out));
    ensure!(std::fs::read(&odd)? == vec![7u8; 1000], "the refused image changed");
    Ok(Completion::Completed)
}

fn file_on_trixie() -> TestResult {
    attach_checks(vm::TRIXIE, Mode::File, "copy")
}

fn file_on_backports() -> TestResult {
    attach_checks(vm::BACKPORTS, Mode::File, "zero-copy")
}

fn remap_on_trixie() -> TestResult {
    attach_checks(vm::TRIXIE, Mode::Remap, "copy")
}

fn remap_on_backports() -> TestResult {
    attach_checks(vm::BACKPORTS, Mode::Remap, "zero-copy")
}

/// Guest shell helpers: `start NAME ARGS…` runs `loopkit attach ARGS…` in the background with
/// its stdout/stderr in /tmp/NAME.{out,err}, waits until it printed the device (or died) and
/// prints the first line; `stop NAME DEV` detaches and prints the server's exit status.
pub(crate) const HELPERS: &str = r#"
start() {
    local n=$1; shift
    rm -f /tmp/$n.rc /tmp/$n.pid
    # (The server is not a child of the calling shell: start runs in $(...).)
    ( "$LK" attach "$@" >/tmp/$n.out 2>/tmp/$n.err & echo $! >/tmp/$n.pid; rc=0; wait $! || rc=$?; echo $rc >/tmp/$n.rc ) >/dev/null 2>&1 &
    for _ in $(seq 100); do [ -s /tmp/$n.pid ] && break; sleep 0.05; done
    for _ in $(seq 600); do
        [ -s /tmp/$n.out ] && break
        kill -0 "$(cat /tmp/$n.pid)" 2>/dev/null || break
        sleep 0.1
    done
    if [ ! -s /tmp/$n.out ]; then echo "attach $n failed:" >&2; cat /tmp/$n.err >&2; return 1; fi
    head -n 1 /tmp/$n.out
}
stop() {
    local n=$1 dev=$2
    "$LK" detach "$dev" || echo "$n-detach-failed" >&2
    for _ in $(seq 600); do [ -s /tmp/$n.rc ] && break; sleep 0.1; done
    echo "$n-server-rc:$(cat /tmp/$n.rc 2>/dev/null || echo none)"
    sed "s/^/$n-err: /" /tmp/$n.err >&2
}
"#;

/// The fio job for (b): random 4 KiB writes over the whole image, each block stamped with a
/// crc32c header; `fio … --verify_only` re-reads the same blocks later.
fn fio(file: &str, extra: &str) -> String {
    format!(
        "fio --name=v --filename={file} --ioengine=libaio --direct=1 --rw=randwrite --bs=4k --iodepth=16 \
         --size=16M --io_size=4M --verify=crc32c --verify_fatal=1 --randrepeat=1 --output-format=terse {extra} >/dev/null"
    )
}

fn script(bin: &str, mode: Mode) -> String {
    let m = mode.args();
    let mut s = format!("LK={}\nM='{m}'\n{HELPERS}", vm::sh_quote(bin));
    let body_start = s.len();
    s.push_str(
        r#"
mkdir -p /tmp/h /tmp/m
mount -t ext4 /dev/vda /tmp/h
echo "kernel:$(uname -r)"

# (a) ext3 image on the ext4 disk, read-only, mounted, files listed
start a $M --read-only --json /tmp/h/ext3.img >/dev/null
dev=$(sed -n 's/^ *"device": "\(.*\)",$/\1/p' /tmp/a.out)
cp /tmp/a.out /run/vm/a.json
mount -t ext3 -o ro "$dev" /tmp/m
"#,
    );
    s.push_str(&vm::guest_tree_sums("/tmp/m", "a:"));
    s.push_str(
        r#"umount /tmp/m
"$LK" attach --list --json >/run/vm/list.json
stop a "$dev"
echo "a-gone:$(test -e "$dev" && echo no || echo yes)"

# (b) fio through the device: fully allocated, sparse, fallocated (unwritten extents)
dd if=/dev/zero of=/tmp/h/full.img bs=1M count=16 conv=fsync status=none
truncate -s 16M /tmp/h/sparse.img
fallocate -l 16M /tmp/h/falloc.img
sync
for n in full sparse falloc; do
    q=""
    [ $n = sparse ] && q="--queues 2 --depth 32"  # one of them multi-queue (the guest has 2 CPUs)
    dev=$(start b-$n $M $q /tmp/h/$n.img)
    rc=0
"#,
    );
    s.push_str(&format!("    {} || rc=$?\n", fio("\"$dev\"", "")));
    s.push_str(
        r#"    echo "b-dev:$n=$rc"
    stop b-$n /tmp/h/$n.img  # detach by image path
done
umount /tmp/h
mount -t ext4 /dev/vda /tmp/h
for n in full sparse falloc; do
    rc=0
"#,
    );
    s.push_str(&format!("    {} || rc=$?\n", fio("/tmp/h/$n.img", "--verify_only")));
    s.push_str(
        r#"    echo "b-file:$n=$rc"
    echo "b-size:$n=$(stat -c %s /tmp/h/$n.img)"
done

# (c) encrypted images: --decrypt (cryptoloop, loop-AES -C) and --open-crypt (cryptoloop)
dev=$(start c-cl $M --decrypt --passphrase-file /run/vm/pass /tmp/h/cl.img)
echo "c-sha:cl=$(sha256sum <"$dev" | cut -d' ' -f1)"
mount -o ro "$dev" /tmp/m
"#,
    );
    s.push_str(&vm::guest_tree_sums("/tmp/m", "c-cl:"));
    s.push_str(
        r#"umount /tmp/m
stop c-cl "$dev"
# --decrypt --read-write: plaintext written through the device is encrypted into the image
# (checked on the host by decrypting the image with Python)
dev=$(start c-rw $M --decrypt --read-write --passphrase-file /run/vm/pass /tmp/h/cl.img)
dd if=/run/vm/rwdata of="$dev" bs=512 seek=RWSECTOR oflag=direct conv=fsync status=none
stop c-rw "$dev"
dev=$(start c-la $M --decrypt --passphrase-file /run/vm/pass --scheme loop-aes --key-bits 256 --key-derivation sha512 --itercountk 3 /tmp/h/la.img)
echo "c-sha:la=$(sha256sum <"$dev" | cut -d' ' -f1)"
mount -o ro "$dev" /tmp/m
"#,
    );
    s.push_str(&vm::guest_tree_sums("/tmp/m", "c-la:"));
    s.push_str(
        r#"umount /tmp/m
stop c-la "$dev"
dev=$(start c-oc $M --open-crypt lkoc --passphrase-file /run/vm/pass /tmp/h/oc.img)
mapper=$(sed -n 2p /tmp/c-oc.out)
echo "c-mapper:$mapper"
echo "c-sha:oc=$(sha256sum <"$mapper" | cut -d' ' -f1)"
mount -o ro "$mapper" /tmp/m
"#,
    );
    s.push_str(&vm::guest_tree_sums("/tmp/m", "c-oc:"));
    s.push_str(
        r#"umount /tmp/m
stop c-oc "$dev"
echo "c-mapper-closed:$(test -e /dev/mapper/lkoc && echo no || echo yes)"
# --open-crypt on images whose names are also words of the cryptsetup line (a key size, a
# --type value, the default mapping name) or need quoting: the device replaces the image, never
# an option (file mode only: the command is the same whatever serves the device).
if [ -z "$M" ]; then
i=0
for name in 256 plain legacy "a b'c\"d.img"; do
    i=$((i + 1))
    cp /tmp/h/oc.img "/tmp/h/$name"
    dev=$(start c-nm$i --open-crypt lknm$i --passphrase-file /run/vm/pass "/tmp/h/$name")
    echo "c-names:$i=$(sha256sum </dev/mapper/lknm$i | cut -d' ' -f1)"
    stop c-nm$i "$dev"
    rm -f "/tmp/h/$name"
done
fi

# (d) lease breaking (--remap only)
if [ "$M" = "--remap" ]; then
dd if=/dev/zero of=/tmp/h/lease.img bs=1M count=8 conv=fsync status=none
head -c 1048576 /dev/urandom >/tmp/d1
head -c 1048576 /dev/urandom >/tmp/d2
dev=$(start d $M /tmp/h/lease.img)
"$LK" attach --list --json >/run/vm/list-d.json
dd if=/tmp/d1 of="$dev" bs=1M seek=2 oflag=direct conv=fsync status=none
# A second opener: its open waits until the server stopped remapping and gave the lease up.
echo "d-seen:$(timeout 60 dd if=/tmp/h/lease.img bs=1M skip=2 count=1 status=none | cmp -s - /tmp/d1 && echo ok || echo differs)"
sleep 1
"$LK" attach --list --json >/run/vm/list-d2.json
dd if=/tmp/d2 of="$dev" bs=1M seek=4 oflag=direct conv=fsync status=none
echo "d-dev:$(dd if="$dev" bs=1M skip=2 count=1 iflag=direct status=none | cmp -s - /tmp/d1 && echo ok || echo differs)"
stop d "$dev"
echo "d-after:$(dd if=/tmp/h/lease.img bs=1M skip=4 count=1 status=none | cmp -s - /tmp/d2 && echo ok || echo differs)"
fi

# (e) SIGKILL of the server
dd if=/dev/zero of=/tmp/h/kill.img bs=1M count=8 conv=fsync status=none
head -c 1048576 /dev/urandom >/tmp/data
dev=$(start e $M --recovery-timeout 0 /tmp/h/kill.img)
dd if=/tmp/data of="$dev" bs=1M seek=2 oflag=direct conv=fsync status=none
kill -9 "$(cat /tmp/e.pid)"
for _ in $(seq 100); do [ -s /tmp/e.rc ] && break; sleep 0.1; done
if dd if="$dev" of=/dev/null bs=4k count=1 iflag=direct status=none 2>/dev/null; then echo "e-io:served"; else echo "e-io:error"; fi
gone=no
for _ in $(seq 100); do if [ ! -e "$dev" ]; then gone=yes; break; fi; sleep 0.1; done
echo "e-gone:$gone"
"$LK" attach --list >/tmp/e.list
echo "e-listed:$(grep -c stale /tmp/e.list || true)"
"$LK" detach "$dev" && echo "e-cleanup:ok"
echo "e-listed-after:$("$LK" attach --list | grep -c "$dev" || true)"
echo "e-data:$(dd if=/tmp/h/kill.img bs=1M skip=2 count=1 status=none | cmp -s - /tmp/data && echo ok || echo differs)"
dev=$(start e2 $M /tmp/h/kill.img)
echo "e-reattach:$(dd if="$dev" bs=1M skip=2 count=1 iflag=direct status=none | cmp -s - /tmp/data && echo ok || echo differs)"
stop e2 "$dev"
umount /tmp/h
"#,
    );
    let body = s.split_off(body_start).replace("RWSECTOR", &RW_SECTOR.to_string());
    s + &body
}

/// Where (512-byte sector) and how much (bytes) the `--decrypt --read-write` check writes.
const RW_SECTOR: u64 = 2051;
const RW_BYTES: usize = 65536;

fn attach_checks(suite: &'static str, mode: Mode, want_path: &str) -> TestResult {
    let p = match plains() {
        Ok(p) => p,
        Err(e) => return util::skip(e),
    };
    for t in ["aespipe", "mkfs.ext4", "fio"] {
        if !util::have(t) {
            return util::skip(format!("{t} not installed"));
        }
    }
    let d = Scratch::new("vm-attach");
    let pass = p.dir.join("pass");
    let ps = pass.to_str().unwrap();
    let tree = p.dir.join("tree");
    // The ext4 disk: the images under test are files on it.
    let stage = d.path("stage");
    std::fs::create_dir_all(&stage)?;
    std::fs::copy(p.dir.join("ext3.img"), stage.join("ext3.img"))?;
    let cl_args = ["--scheme", "cryptoloop", "--derivation", "rmd160", "--key-bits", "256", "--passphrase-file", ps];
    let cl = encrypt(&stage, "cl.img", "ext3", &cl_args)?;
    let oc = encrypt(&stage, "oc.img", "ext2", &cl_args)?;
    let la = encrypt(
        &stage,
        "la.img",
        "ext2",
        &["--scheme", "loop-aes", "--aespipe-args", "-e AES256 -C 3", "--passphrase-file", ps],
    )?;
    let outer = d.path("outer.img");
    run_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&stage).arg(&outer).arg("160M"))?;
    let ext3_sum = sha256_file(&stage.join("ext3.img"))?;

    let bin = util::loopkit_bin();
    let Some(bin_in_guest) = vm::guest_path(&bin) else {
        return Err(format!("{} is not visible in the guest", bin.display()).into());
    };
    let script = script(&bin_in_guest, mode);
    let pass_bytes = std::fs::read(&pass)?;
    let mut rwdata = vec![0u8; RW_BYTES];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut rwdata)?;
    let job = VmJob {
        disks: &[Disk::rw(&outer)],
        script: &script,
        files: &[("pass", &pass_bytes), ("rwdata", &rwdata)],
        timeout: Duration::from_secs(600),
        cpus: 2,
        suite: Some(suite),
        ..Default::default()
    };
    let out = match vm::run(&job) {
        Ok(o) => o,
        Err(u) => return u.skip(),
    };
    out.check()?;
    let t = out.transcript();
    let tagged = |tag: &str| -> BTreeMap<String, String> {
        out.tagged(tag).filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let one = |tag: &str| -> Vec<String> { out.tagged(tag).map(str::to_string).collect() };
    let want_files = vm::host_tree_sums(&tree)?;
    let mut errors = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            errors.push(what);
        }
    };

    // (a)
    let a: serde_json::Value = serde_json::from_slice(&out.file("a.json")?).map_err(|e| format!("a.json: {e}"))?;
    check(a["data_path"] == want_path, format!("(a) data path {} on {suite}, want {want_path}", a["data_path"]));
    check(a["read_only"] == true && a["mode"] == mode.name(), format!("(a) attach --json: {a}"));
    let fell_back = a["notes"]
        .as_array()
        .is_some_and(|n| n.iter().any(|x| x.as_str().is_some_and(|s| s.contains("not remapping"))));
    check(!fell_back, format!("(a) --remap fell back to the file path: {a}"));
    check(a["size_bytes"] == std::fs::metadata(p.dir.join("ext3.img"))?.len(), format!("(a) size: {a}"));
    check(
        out.tree_sums("a:") == want_files,
        format!("(a) files on the attached ext3 image differ from the tree: {:?}", out.tree_sums("a:")),
    );
    let list: serde_json::Value =
        serde_json::from_slice(&out.file("list.json")?).map_err(|e| format!("list.json: {e}"))?;
    let listed = &list["devices"][0];
    check(
        list["devices"].as_array().map(Vec::len) == Some(1)
            && listed["device"] == a["device"]
            && listed["live"] == true
            && listed["remap"] == if mode == Mode::Remap { "active" } else { "off" }
            && listed["data_path"] == want_path,
        format!("(a) attach --list --json: {list}"),
    );
    check(one("a-server-rc:") == ["0"], format!("(a) server exit {:?}", one("a-server-rc:")));
    check(one("a-gone:") == ["yes"], "(a) the device is still there after detach".into());

    // (b)
    let (dev_rc, file_rc, sizes) = (tagged("b-dev:"), tagged("b-file:"), tagged("b-size:"));
    for n in ["full", "sparse", "falloc"] {
        check(
            dev_rc.get(n).map(String::as_str) == Some("0"),
            format!("(b) {n}: fio write+verify through the device failed: {:?}", dev_rc.get(n)),
        );
        check(
            file_rc.get(n).map(String::as_str) == Some("0"),
            format!("(b) {n}: fio --verify_only through ext4 after detach failed: {:?}", file_rc.get(n)),
        );
        check(
            sizes.get(n).map(String::as_str) == Some("16777216"),
            format!("(b) {n}: size changed: {:?}", sizes.get(n)),
        );
        check(
            one(&format!("b-{n}-server-rc:")) == ["0"],
            format!("(b) {n}: server exit {:?}", one(&format!("b-{n}-server-rc:"))),
        );
    }

    // (c)
    let shas = tagged("c-sha:");
    for (n, f) in [("cl", &cl), ("la", &la), ("oc", &oc)] {
        check(
            shas.get(n) == Some(&f.plaintext_sha256),
            format!("(c) {n}: device sha256 {:?}, plaintext {}", shas.get(n), f.plaintext_sha256),
        );
        check(out.tree_sums(&format!("c-{n}:")) == want_files, format!("(c) {n}: files differ from the tree"));
    }
    // --read-write: the image, taken out of the ext4 disk by debugfs and decrypted by Python,
    // is the plaintext with the written range replaced.
    let rw_img = d.path("cl-after.img");
    run_ok(Command::new("debugfs").arg("-R").arg(format!("dump /cl.img {}", rw_img.display())).arg(&outer))?;
    let mut want_plain = std::fs::read(p.dir.join("ext3.img"))?;
    let at = (RW_SECTOR * 512) as usize;
    want_plain[at..at + RW_BYTES].copy_from_slice(&rwdata);
    let want_file = d.path("cl-want.img");
    std::fs::write(&want_file, &want_plain)?;
    let want_sha = sha256_file(&want_file)?;
    let got_sha = crate::legacy::python_rmd160_payload_sha256(&rw_img, &pass)?;
    check(got_sha == want_sha, format!("(c) --decrypt --read-write: decrypted image {got_sha}, want {want_sha}"));
    check(one("c-rw-server-rc:") == ["0"], "(c) --read-write server failed".into());
    check(one("c-mapper:") == ["/dev/mapper/lkoc"], format!("(c) --open-crypt printed {:?}", one("c-mapper:")));
    check(one("c-mapper-closed:") == ["yes"], "(c) /dev/mapper/lkoc still there after detach".into());
    if mode == Mode::File {
        let names = tagged("c-names:");
        for i in ["1", "2", "3", "4"] {
            check(
                names.get(i) == Some(&oc.plaintext_sha256),
                format!("(c) --open-crypt on image name #{i} (256, plain, legacy, a b'c\"d.img): {:?}", names.get(i)),
            );
        }
    }

    // (d)
    if mode == Mode::Remap {
        let ld: serde_json::Value =
            serde_json::from_slice(&out.file("list-d.json")?).map_err(|e| format!("list-d.json: {e}"))?;
        let entry = &ld["devices"][0];
        check(
            entry["remap"] == "active" && entry["lease"] == "write lease held",
            format!("(d) before the break: {ld}"),
        );
        check(one("d-seen:") == ["ok"], format!("(d) the second opener saw {:?}", one("d-seen:")));
        let ld2: serde_json::Value =
            serde_json::from_slice(&out.file("list-d2.json")?).map_err(|e| format!("list-d2.json: {e}"))?;
        let after = &ld2["devices"][0];
        check(
            after["remap"].as_str().is_some_and(|r| r.starts_with("stopped") && r.contains("lease"))
                && after["lease"] == "released",
            format!("(d) after the break --list shows: {ld2}"),
        );
        check(one("d-dev:") == ["ok"], format!("(d) the device after the break: {:?}", one("d-dev:")));
        check(one("d-after:") == ["ok"], format!("(d) writes after the break: {:?}", one("d-after:")));
        check(one("d-server-rc:") == ["0"], format!("(d) server exit {:?}", one("d-server-rc:")));
    }

    // (e)
    check(one("e-io:") == ["error"], format!("(e) I/O after SIGKILL: {:?}", one("e-io:")));
    check(one("e-gone:") == ["yes"], "(e) the device did not go away after SIGKILL".into());
    check(one("e-listed:") == ["1"], format!("(e) --list did not show the stale record: {:?}", one("e-listed:")));
    check(one("e-cleanup:") == ["ok"], "(e) detach of the stale record failed".into());
    check(one("e-listed-after:") == ["0"], "(e) the stale record survived detach".into());
    check(one("e-data:") == ["ok"], "(e) data written and flushed before SIGKILL is not in the image".into());
    check(one("e-reattach:") == ["ok"], format!("(e) attach after SIGKILL: {:?}", one("e-reattach:")));
    check(one("e2-server-rc:") == ["0"], "(e) the second server failed".into());

    // The originals built on the host are untouched (the guest wrote only its own disk copy).
    ensure!(sha256_file(&p.dir.join("ext3.img"))? == ext3_sum, "the plain ext3 fixture changed");
    if !errors.is_empty() {
        return util::fail(format!("{} ({suite}, {}):\n{}\n{t}", errors.len(), mode.name(), errors.join("\n")));
    }
    eprintln!(
        "vm_attach: {} mode on {} ({}) passed in {:.1?}",
        mode.name(),
        one("kernel:").first().map_or("?", String::as_str),
        want_path,
        out.elapsed
    );
    Ok(Completion::Completed)
}
