//! The remap engine on real ext4 and XFS mounts (loop devices): reads equal what the file
//! system returns, writes into holes / unwritten extents / mapped extents are visible through
//! the file system after close and after a remount, a second opener breaks the lease without
//! losing anything, and many threads leave the file equal to a model. The oracle is the kernel's
//! file system (reads through the mount, `sha256sum`, remount), never the engine itself.

use crate::ensure;
use crate::extents::pattern;
use crate::mounts::{self, Mounted};
use crate::util::{TestResult, python, python_missing, run_ok, skip, trial};
use libtest_mimic::{Completion, Failed, Trial};
use loopkit::remap::engine::{OpenHook, OpenPhase};
use loopkit::remap::{Engine, Options};
use loopkit::source::{ByteSink, ByteSource};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("remap_engine::reads_equal_file_reads", reads_equal_file_reads),
        trial("remap_engine::writes_into_holes_and_unwritten_extents_persist", writes_persist),
        trial("remap_engine::lease_break_switches_to_the_file", lease_break),
        trial("remap_engine::concurrent_readers_and_writers_match_a_model", concurrent),
        trial("remap_engine::reflink_xfs_remaps_only_root_only_images", reflink_ownership),
        trial("remap_engine::a_mode_3_descriptor_elsewhere_refuses_remap", mode3_holder),
        trial("remap_engine::a_raw_write_bumps_mtime_before_close", mtime_bump),
        trial("remap_engine::a_lost_lease_stops_raw_io_at_the_next_flush", lost_lease),
        trial("remap_engine::a_lease_break_under_a_steady_stream_of_io_is_answered_at_once", break_under_load),
        trial("remap_engine::dedupe_through_an_scm_rights_descriptor_is_caught_by_revalidation", scm_rights_dedupe),
        trial("remap_engine::a_raw_fua_write_after_a_hole_fill_syncs_the_image_first", fua_after_hole_fill),
        trial("remap_engine::discard_never_leaves_a_raw_plan_over_punched_blocks", discard_vs_plan_write),
        trial("remap_engine::a_change_between_preflight_and_the_lease_refuses_remap", changed_before_lease),
        trial("remap_engine::a_change_after_the_lease_breaks_it_or_is_caught_by_the_recheck", changed_after_lease),
        trial(
            "remap_engine::a_refused_open_leaves_no_lease_while_another_break_is_being_answered",
            refusal_while_another_break_runs,
        ),
        trial("remap_engine::a_discard_waiting_for_a_guard_never_blocks_its_holder", discard_vs_guard_holder),
    ]
}

const MIB: u64 = 1 << 20;

/// The two allowed file systems, mounted (or why not).
fn file_systems() -> Result<Vec<Mounted>, String> {
    let mut v = Vec::new();
    for (fs, size, args) in [("ext4", 96u64, vec!["-q", "-F"]), ("xfs", 320, vec!["-q", "-f"])] {
        if let Some(why) = mounts::unavailable(&format!("mkfs.{fs}")) {
            return Err(why);
        }
        v.push(Mounted::new(fs, size, &args, "").map_err(|e| format!("{e:?}"))?);
    }
    Ok(v)
}

/// A 16 MiB image: data 0..6M, hole 6..8M, unwritten 8..12M, one data block at 13M, hole after.
fn make_mixed(path: &Path) -> Result<Vec<u8>, Failed> {
    let f = std::fs::File::create(path).map_err(|e| format!("create: {e}"))?;
    f.set_len(16 * MIB).map_err(|e| format!("truncate: {e}"))?;
    f.write_all_at(&pattern(11, (6 * MIB) as usize), 0).map_err(|e| format!("write: {e}"))?;
    f.write_all_at(&pattern(12, 4096), 13 * MIB).map_err(|e| format!("write: {e}"))?;
    f.sync_all().map_err(|e| format!("sync: {e}"))?;
    drop(f);
    run_ok(Command::new("fallocate").args(["-o", "8M", "-l", "4M"]).arg(path))?;
    std::fs::read(path).map_err(|e| format!("read back: {e}").into())
}

fn open_engine(path: &Path) -> Result<Engine, Failed> {
    let (e, _) =
        Engine::open(path, &Options::default()).map_err(|e| format!("Engine::open {}: {e}", path.display()))?;
    Ok(e)
}

fn lcg(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *seed >> 17
}

fn reads_equal_file_reads() -> TestResult {
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    for m in &mounts {
        let img = m.path("mixed.img");
        let want = make_mixed(&img)?;
        let before = crate::util::sha256_file(&img)?;
        let e = open_engine(&img)?;
        let mut seed = 42u64;
        for i in 0..400 {
            let aligned = i % 3 != 0;
            let (off, len) = if aligned {
                let len = (1 + lcg(&mut seed) % 512) * 512;
                ((lcg(&mut seed) % (16 * MIB / 512)) * 512, len)
            } else {
                (lcg(&mut seed) % (16 * MIB), 1 + lcg(&mut seed) % 70_000)
            };
            let len = len.min(16 * MIB - off) as usize;
            let mut buf = vec![0u8; len];
            e.read_exact_at(&mut buf, off).map_err(|err| format!("{}: read {len} at {off}: {err}", m.fs))?;
            ensure!(buf[..] == want[off as usize..off as usize + len], "{}: read {len} at {off} differs", m.fs);
        }
        let mut all = vec![0u8; (16 * MIB) as usize];
        for (k, chunk) in all.chunks_mut(MIB as usize).enumerate() {
            e.read_exact_at(chunk, k as u64 * MIB).map_err(|err| format!("read: {err}"))?;
        }
        ensure!(all == want, "{}: sequential read differs", m.fs);
        let s = e.stats();
        let dev = s.device_read.load(std::sync::atomic::Ordering::Relaxed);
        let zero = s.zero_read.load(std::sync::atomic::Ordering::Relaxed);
        ensure!(dev >= 6 * MIB && zero >= 6 * MIB, "{}: raw path not used (device {dev}, zero {zero})", m.fs);
        ensure!(e.state().remapping && e.state().lease_held, "{}: state {:?}", m.fs, e.state());
        e.close().map_err(|err| format!("close: {err}"))?;
        drop(e);
        ensure!(crate::util::sha256_file(&img)? == before, "{}: reading changed the image", m.fs);
    }
    Ok(Completion::Completed)
}

/// Writes covering holes, unwritten extents, mapped extents and their boundaries, aligned and
/// not.
fn write_set() -> Vec<(u64, usize)> {
    vec![
        (6 * MIB + 4096, 4096),    // hole, aligned
        (6 * MIB + 512 * 33, 512), // hole, sector
        (7 * MIB + 1000, 3000),    // hole, unaligned
        (6 * MIB - 8192, 16384),   // mapped → hole
        (8 * MIB + 65536, 131072), // unwritten
        (12 * MIB - 4096, 8192),   // unwritten → hole
        (MIB, 65536),              // mapped (raw path)
        (3 * MIB + 7, 100),        // mapped, unaligned
        (13 * MIB, 4096),          // the lone data block
        (16 * MIB - 512, 512),     // last sector (hole)
    ]
}

fn writes_persist() -> TestResult {
    let mut mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    for m in &mut mounts {
        let img = m.path("writes.img");
        let mut model = make_mixed(&img)?;
        let e = open_engine(&img)?;
        for (i, (off, len)) in write_set().into_iter().enumerate() {
            let data = pattern(100 + i as u64, len);
            e.write_at(&data, off).map_err(|err| format!("{}: write {len} at {off}: {err}", m.fs))?;
            model[off as usize..off as usize + len].copy_from_slice(&data);
        }
        let mut view = vec![0u8; model.len()];
        e.read_exact_at(&mut view, 0).map_err(|err| format!("read: {err}"))?;
        ensure!(view == model, "{}: the engine's own view differs from the model", m.fs);
        let s = e.stats();
        let remaps = s.remaps.load(std::sync::atomic::Ordering::Relaxed);
        let raw = s.device_written.load(std::sync::atomic::Ordering::Relaxed);
        ensure!(remaps >= 5 && raw >= 65536, "{}: remaps {remaps}, raw bytes written {raw}", m.fs);
        e.flush().map_err(|err| format!("flush: {err}"))?;
        e.close().map_err(|err| format!("close: {err}"))?;
        drop(e);
        let through_fs = std::fs::read(&img).map_err(|err| format!("read: {err}"))?;
        ensure!(through_fs == model, "{}: the file read through the file system differs from the model", m.fs);
        m.umount()?;
        m.mount("")?;
        let after = std::fs::read(&img).map_err(|err| format!("read: {err}"))?;
        ensure!(after == model, "{}: after a remount the file differs from the model", m.fs);
        // No written range is still unwritten for the file system.
        for f in mounts::filefrag(&img)? {
            for (off, len) in write_set() {
                let overlaps = f.logical < off + len as u64 && off < f.logical + f.length;
                ensure!(
                    !(overlaps && f.flags.iter().any(|x| x == "unwritten")),
                    "{}: written range {off}+{len} still unwritten: {f:?}",
                    m.fs
                );
            }
        }
    }
    Ok(Completion::Completed)
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn lease_break() -> TestResult {
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    for m in &mounts {
        let img = m.path("lease.img");
        let mut model = make_mixed(&img)?;
        let e = open_engine(&img)?;
        for (i, (off, len)) in write_set().into_iter().enumerate() {
            let data = pattern(300 + i as u64, len);
            e.write_at(&data, off).map_err(|err| format!("write: {err}"))?;
            model[off as usize..off as usize + len].copy_from_slice(&data);
        }
        ensure!(e.state().remapping, "not remapping before the break");
        // Another process opens the image: its open waits until the engine has switched to the
        // file and released the lease; what it reads must be everything written so far.
        let out = run_ok(Command::new("timeout").arg("60").arg("sha256sum").arg(&img))?;
        let theirs = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string();
        ensure!(theirs == sha256(&model), "{}: a second opener saw different bytes after the lease break", m.fs);
        let st = e.state();
        ensure!(!st.remapping && !st.lease_held, "{}: after the break: {st:?}", m.fs);
        ensure!(st.stopped_because.as_deref().is_some_and(|w| w.contains("lease")), "{}: reason {st:?}", m.fs);
        // Writes go on through the file while others read.
        let reader = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for i in 1 2 3 4 5 6 7 8; do cat '{}' >/dev/null; done", img.display()))
            .spawn()
            .map_err(|err| format!("spawn: {err}"))?;
        for i in 0..40u64 {
            let off = (i * 397 * 4096) % (16 * MIB - 8192);
            let data = pattern(500 + i, 8192);
            e.write_at(&data, off).map_err(|err| format!("write after break: {err}"))?;
            model[off as usize..off as usize + 8192].copy_from_slice(&data);
        }
        let _ = reader.wait_with_output();
        e.close().map_err(|err| format!("close: {err}"))?;
        drop(e);
        let out = run_ok(Command::new("sha256sum").arg(&img))?;
        let fin = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string();
        ensure!(fin == sha256(&model), "{}: final contents differ from the model", m.fs);
    }
    Ok(Completion::Completed)
}

/// A thread's stripes: (offset, contents).
type Stripes = Vec<(u64, Vec<u8>)>;

fn concurrent() -> TestResult {
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    const THREADS: u64 = 8;
    const STRIPE: u64 = 64 << 10;
    for m in &mounts {
        let img = m.path("threads.img");
        let initial = make_mixed(&img)?;
        let e = open_engine(&img)?;
        let stripes = 16 * MIB / STRIPE;
        let results: Vec<Result<Stripes, String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let e = &e;
                    let initial = &initial;
                    s.spawn(move || -> Result<Stripes, String> {
                        // This thread's stripes and their current contents.
                        let mut mine: Stripes = (0..stripes)
                            .filter(|k| k % THREADS == t)
                            .map(|k| (k * STRIPE, initial[(k * STRIPE) as usize..((k + 1) * STRIPE) as usize].to_vec()))
                            .collect();
                        let mut seed = 7 + t;
                        for op in 0..250u64 {
                            let si = (lcg(&mut seed) % mine.len() as u64) as usize;
                            let base = mine[si].0;
                            let (off, len) = if op % 4 == 0 {
                                (lcg(&mut seed) % STRIPE, 1 + lcg(&mut seed) % 9000)
                            } else {
                                ((lcg(&mut seed) % (STRIPE / 512)) * 512, (1 + lcg(&mut seed) % 16) * 512)
                            };
                            let len = len.min(STRIPE - off) as usize;
                            if lcg(&mut seed).is_multiple_of(3) {
                                let mut buf = vec![0u8; len];
                                e.read_exact_at(&mut buf, base + off).map_err(|err| format!("read: {err}"))?;
                                if buf[..] != mine[si].1[off as usize..off as usize + len] {
                                    return Err(format!("thread {t}: read {len} at {} differs", base + off));
                                }
                            } else {
                                let data = pattern(t * 100_000 + op, len);
                                e.write_at(&data, base + off).map_err(|err| format!("write: {err}"))?;
                                mine[si].1[off as usize..off as usize + len].copy_from_slice(&data);
                            }
                        }
                        Ok(mine)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into()))).collect()
        });
        let mut model = initial.clone();
        for r in results {
            for (base, bytes) in r.map_err(|err| format!("{}: {err}", m.fs))? {
                model[base as usize..base as usize + bytes.len()].copy_from_slice(&bytes);
            }
        }
        e.flush().map_err(|err| format!("flush: {err}"))?;
        e.close().map_err(|err| format!("close: {err}"))?;
        drop(e);
        let through_fs = std::fs::read(&img).map_err(|err| format!("read: {err}"))?;
        ensure!(through_fs == model, "{}: the file differs from the model after concurrent I/O", m.fs);
    }
    Ok(Completion::Completed)
}

/// The error text of a refused `Engine::open` (None: it opened).
fn refusal(path: &Path) -> Option<String> {
    match Engine::open(path, &Options::default()) {
        Ok((e, _)) => {
            let _ = e.close();
            None
        }
        Err(err) => Some(err.to_string()),
    }
}

/// `xfs_info`'s `reflink=` value for a mount (the independent oracle for what the engine reads
/// with XFS_IOC_FSGEOMETRY).
fn xfs_reflink(mnt: &Path) -> Result<bool, Failed> {
    let out = run_ok(Command::new("xfs_info").arg(mnt))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match (text.contains("reflink=1"), text.contains("reflink=0")) {
        (true, false) => Ok(true),
        (false, true) => Ok(false),
        _ => Err(format!("xfs_info says neither reflink=0 nor reflink=1: {text}").into()),
    }
}

/// H1's guard: on XFS with reflink, only an image owned by root and writable by root alone is
/// remapped (anyone else who may write it may dedupe into it through a descriptor the lease
/// cannot see). Without reflink, ownership does not matter.
fn reflink_ownership() -> TestResult {
    if let Some(why) = mounts::unavailable("mkfs.xfs") {
        return skip(why);
    }
    if !crate::util::have("xfs_info") {
        return skip("missing tool: xfs_info");
    }
    for reflink in [true, false] {
        let opt = format!("reflink={}", u8::from(reflink));
        let m = Mounted::new("xfs", 320, &["-q", "-f", "-m", &opt], "")?;
        ensure!(xfs_reflink(&m.mnt)? == reflink, "mkfs -m {opt} made something else");
        let img = m.path("owned.img");
        make_mixed(&img)?;
        // (A POSIX ACL that lets a named user write needs a mask with write, which the kernel
        // mirrors in the group bits: the group-writable case covers it; the ACL parser has a unit
        // test.)
        let cases: [(&str, &[&str], bool); 4] = [
            ("root 0644", &["chown 0:0 IMG", "chmod 0644 IMG"], true),
            ("uid 1000", &["chown 1000:0 IMG", "chmod 0600 IMG"], false),
            ("group-writable", &["chown 0:0 IMG", "chmod 0664 IMG"], false),
            ("others-writable", &["chmod 0646 IMG"], false),
        ];
        for (what, cmds, allowed_on_reflink) in cases {
            for c in cmds {
                let line = c.replace("IMG", &format!("'{}'", img.display()));
                run_ok(Command::new("sh").arg("-c").arg(&line))?;
            }
            let got = refusal(&img);
            let want_ok = allowed_on_reflink || !reflink;
            match (&got, want_ok) {
                (None, true) => {}
                (Some(why), false) if why.contains("remap.shareable-not-root-only") => {}
                _ => {
                    return Err(format!(
                        "xfs {opt}, image {what}: expected remap {}, got {got:?}",
                        if want_ok { "allowed" } else { "refused" }
                    )
                    .into());
                }
            }
        }
    }
    Ok(Completion::Completed)
}

/// H1's second guard: a descriptor opened with access mode 3 before the lease is invisible to
/// the lease; the engine must find it in /proc and refuse, and remap again once it is closed.
fn mode3_holder() -> TestResult {
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    if let Some(why) = python_missing() {
        return skip(why);
    }
    for m in &mounts {
        let img = m.path("held.img");
        make_mixed(&img)?;
        let mut child = Command::new(python())
            .arg("-c")
            .arg("import os,sys\nfd=os.open(sys.argv[1],3)\nprint('ready',flush=True)\nsys.stdin.read()")
            .arg(&img)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn python: {e}"))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.as_mut() {
            use std::io::BufRead;
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let pid = child.id();
        // The kernel's view: the child holds a descriptor of the image (readlink of its fd).
        let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map_err(|e| format!("/proc/{pid}/fd: {e}"))?
            .flatten()
            .any(|d| std::fs::read_link(d.path()).is_ok_and(|t| t == img));
        let got = refusal(&img);
        drop(child.stdin.take());
        let _ = child.wait();
        ensure!(line.trim() == "ready" && held, "{}: the holder did not start ({line:?}, holds: {held})", m.fs);
        ensure!(
            got.as_deref().is_some_and(|w| w.contains("remap.open-elsewhere") && w.contains(&format!("pid {pid}"))),
            "{}: with a mode-3 descriptor held by pid {pid}: {got:?}",
            m.fs
        );
        let after = refusal(&img);
        ensure!(after.is_none(), "{}: still refused once the holder exited: {after:?}", m.fs);
    }
    Ok(Completion::Completed)
}

/// M2: a raw write moves mtime and ctime forward before the engine is closed (as after a
/// SIGKILL), so mtime-keyed backups and inotify see it. Oracle: `stat` (which does not open the
/// file, so the lease stays).
fn mtime_bump() -> TestResult {
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    let stat = |p: &Path| -> Result<(i64, i64), Failed> {
        let out = run_ok(Command::new("stat").args(["-c", "%Y %Z"]).arg(p))?;
        let t = String::from_utf8_lossy(&out.stdout);
        let v: Vec<i64> = t.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        match v[..] {
            [m, c] => Ok((m, c)),
            _ => Err(format!("stat said {t:?}").into()),
        }
    };
    for m in &mounts {
        let img = m.path("mtime.img");
        make_mixed(&img)?;
        run_ok(Command::new("touch").args(["-m", "-d", "2001-01-01 00:00:00"]).arg(&img))?;
        let (m0, _) = stat(&img)?;
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (_, c0) = stat(&img)?;
        let e = open_engine(&img)?;
        e.write_at(&pattern(77, 65536), MIB).map_err(|err| format!("{}: write: {err}", m.fs))?;
        let raw = e.stats().device_written.load(std::sync::atomic::Ordering::Relaxed);
        ensure!(raw >= 65536, "{}: the write did not take the raw path ({raw} bytes)", m.fs);
        let (m1, c1) = stat(&img)?;
        ensure!(e.state().lease_held, "{}: stat broke the lease", m.fs);
        ensure!(m1 > m0 && c1 > c0, "{}: before close, mtime {m0} -> {m1}, ctime {c0} -> {c1}", m.fs);
        e.close().map_err(|err| format!("close: {err}"))?;
    }
    Ok(Completion::Completed)
}

/// Whether /proc/locks lists a lease on `img`'s inode (the kernel's view, not the engine's), matched by device and inode.
fn lease_listed(img: &Path) -> Result<bool, Failed> {
    use std::os::unix::fs::MetadataExt;
    let st = std::fs::metadata(img).map_err(|e| format!("stat {}: {e}", img.display()))?;
    // /proc/locks prints the device as hex MAJOR:MINOR (fs/locks.c `lock_get_status`); the other
    // tests' small file systems have images with the same inode numbers, and their leases are
    // listed too while they run in parallel.
    let (major, minor) = (rustix::fs::major(st.dev()), rustix::fs::minor(st.dev()));
    let want = format!("{major:02x}:{minor:02x}:{}", st.ino());
    let locks = std::fs::read_to_string("/proc/locks").map_err(|e| format!("/proc/locks: {e}"))?;
    // "1: LEASE  ACTIVE    WRITE 1234 07:00:12 0 EOF": field 6 is MAJOR:MINOR:INODE.
    Ok(locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"LEASE") && f.get(5) == Some(&want.as_str())
    }))
}

/// M1: a lease the engine lost without a break reaching it (simulated by dropping it behind the
/// engine's back) stops raw I/O at the next flush (`remap.lease-lost`); later writes go through
/// the file and land.
fn lost_lease() -> TestResult {
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    use std::sync::atomic::Ordering::Relaxed;
    for m in &mounts {
        let img = m.path("lost.img");
        let mut model = make_mixed(&img)?;
        let e = open_engine(&img)?;
        ensure!(lease_listed(&img)?, "{}: /proc/locks shows no lease after open", m.fs);
        let data = pattern(901, 65536);
        e.write_at(&data, MIB).map_err(|err| format!("write: {err}"))?;
        model[MIB as usize..MIB as usize + 65536].copy_from_slice(&data);
        loopkit::sys::set_lease(e.file_fd(), loopkit::sys::Lease::None).map_err(|err| format!("unlease: {err}"))?;
        ensure!(!lease_listed(&img)?, "{}: the lease is still listed", m.fs);
        e.flush().map_err(|err| format!("flush: {err}"))?;
        let st = e.state();
        ensure!(
            !st.remapping
                && st.stopped_because.as_deref().is_some_and(|w| w.contains("remap.lease-lost"))
                && st.stopped_code == Some("remap.lease-lost"),
            "{}: after a flush without the lease: {st:?}",
            m.fs
        );
        let raw_before = e.stats().device_written.load(Relaxed);
        let data = pattern(902, 65536);
        e.write_at(&data, 2 * MIB).map_err(|err| format!("write: {err}"))?;
        model[2 * MIB as usize..2 * MIB as usize + 65536].copy_from_slice(&data);
        ensure!(e.stats().device_written.load(Relaxed) == raw_before, "{}: a raw write after the lease was lost", m.fs);
        ensure!(!e.check_lease(true), "{}: check_lease says remapping", m.fs);
        e.close().map_err(|err| format!("close: {err}"))?;
        drop(e);
        let through_fs = std::fs::read(&img).map_err(|err| format!("read: {err}"))?;
        ensure!(through_fs == model, "{}: the file differs from the model", m.fs);
    }
    Ok(Completion::Completed)
}

/// A lease break while I/O never pauses (8 threads, each always with a request in flight, as
/// fio at queue depth 16 through `attach`): the engine must switch to the file and release the
/// lease at once (`remap.lease-broken`), waiting only for the raw I/O planned before the switch.
/// Waiting until no request at all is in flight never ends while the stream goes on: the opener
/// then waits the whole `lease-break-time` and the kernel takes the lease away
/// (`remap.lease-lost`) — what hung the randomized stress test. Oracles: how long the other
/// process's `open` waits, the kernel's `/proc/locks`, and the file read through the mount.
fn break_under_load() -> TestResult {
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    let break_secs: u64 =
        std::fs::read_to_string("/proc/sys/fs/lease-break-time").ok().and_then(|t| t.trim().parse().ok()).unwrap_or(45);
    for m in &mounts {
        let img = m.path("stream.img");
        let model = make_mixed(&img)?;
        let e = open_engine(&img)?;
        ensure!(e.state().remapping, "{}: not remapping", m.fs);
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let workers: Vec<_> = (0..8u64)
            .map(|t| {
                let (e, stop, reads) = (e.clone(), Arc::clone(&stop), Arc::clone(&reads));
                std::thread::spawn(move || -> Result<(), String> {
                    let mut seed = t + 1;
                    let mut buf = vec![0u8; 64 << 10];
                    // Deadline: the test never hangs, whatever the engine does.
                    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
                    while !stop.load(SeqCst) && std::time::Instant::now() < until {
                        // The 6 MiB of data at the start: mapped, so raw reads until the break.
                        let off = lcg(&mut seed) % 96 * (64 << 10);
                        e.read_at(&mut buf, off).map_err(|err| format!("read: {err}"))?;
                        reads.fetch_add(1, SeqCst);
                    }
                    Ok(())
                })
            })
            .collect();
        // The stream is running (raw reads), then another process opens the image.
        let t0 = std::time::Instant::now();
        while reads.load(SeqCst) < 200 && t0.elapsed() < std::time::Duration::from_secs(30) {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let raw_before = e.stats().device_read.load(SeqCst);
        let t1 = std::time::Instant::now();
        let opened = Command::new("timeout").arg("100").arg("head").arg("-c").arg("4096").arg(&img).output();
        let waited = t1.elapsed();
        let reads_during = reads.load(SeqCst);
        let listed = lease_listed(&img)?;
        stop.store(true, SeqCst);
        for w in workers {
            w.join().map_err(|_| "a reader thread panicked".to_string())??;
        }
        let st = e.state();
        e.close().map_err(|err| format!("close: {err}"))?;
        drop(e);
        let opened = opened.map_err(|err| format!("head: {err}"))?;
        ensure!(opened.status.success(), "{}: the other process's open failed: {opened:?}", m.fs);
        ensure!(opened.stdout == model[..4096], "{}: the other process read different bytes", m.fs);
        ensure!(raw_before > 0, "{}: no raw reads before the break (nothing was tested)", m.fs);
        ensure!(reads_during > 200, "{}: the stream did not run", m.fs);
        ensure!(
            waited < std::time::Duration::from_secs(10),
            "{}: the other process's open waited {waited:.1?} (lease-break-time {break_secs} s): the engine did \
             not release the lease while I/O kept coming; state {st:?}",
            m.fs
        );
        ensure!(
            st.stopped_because.as_deref().is_some_and(|w| w.contains("remap.lease-broken"))
                && st.stopped_code == Some("remap.lease-broken"),
            "{}: stopped for another reason than the break: {st:?}",
            m.fs
        );
        ensure!(!st.remapping && !st.lease_held && !listed, "{}: after the break: {st:?}, lease listed {listed}", m.fs);
        let through_fs = std::fs::read(&img).map_err(|err| format!("read: {err}"))?;
        ensure!(through_fs == model, "{}: the file differs from what it held", m.fs);
    }
    Ok(Completion::Completed)
}

/// The blind spot the descriptor scan documents, and what bounds it: root parks a mode-3
/// descriptor of a root-only image in an `SCM_RIGHTS` message (no process's fd table holds it),
/// so the engine opens and remaps; then takes it out and dedupes a zero-filled twin over 1 MiB
/// of the image. `revalidate_map` must stop remapping (`remap.map-changed`), and a write there
/// afterwards must land in the image (read through XFS).
fn scm_rights_dedupe() -> TestResult {
    if let Some(why) = mounts::unavailable("mkfs.xfs") {
        return skip(why);
    }
    if let Some(why) = python_missing() {
        return skip(why);
    }
    let m = Mounted::new("xfs", 320, &["-q", "-f", "-m", "reflink=1"], "")?;
    let img = m.path("img");
    let twin = m.path("twin");
    for p in [&img, &twin] {
        std::fs::write(p, vec![0u8; (16 * MIB) as usize]).map_err(|e| format!("write: {e}"))?;
        run_ok(Command::new("sync").arg(p))?;
    }
    const HOLDER: &str = r#"
import fcntl, os, socket, struct, sys
a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
fd3 = os.open(sys.argv[1], 3)
socket.send_fds(a, [b"x"], [fd3])
os.close(fd3)
print("parked", flush=True)
sys.stdin.readline()
_, fds, _, _ = socket.recv_fds(b, 1, 1)
src = os.open(sys.argv[2], os.O_RDONLY)
arg = bytearray(struct.pack("QQHHI", 0, 1 << 20, 1, 0, 0) + struct.pack("qQQiI", fds[0], 4 << 20, 0, 0, 0))
fcntl.ioctl(src, 0xC0189436, arg)
_, _, done, status, _ = struct.unpack_from("qQQiI", arg, 24)
print("dedupe %d/%d" % (status, done), flush=True)
sys.stdin.readline()
"#;
    let mut child = Command::new(python())
        .arg("-c")
        .arg(HOLDER)
        .arg(&img)
        .arg(&twin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn python: {e}"))?;
    let (Some(mut to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("no pipes to the holder".into());
    };
    use std::io::{BufRead, Write};
    let mut from = std::io::BufReader::new(from);
    let mut line = String::new();
    let result = (|| -> TestResult {
        from.read_line(&mut line).map_err(|e| format!("holder: {e}"))?;
        ensure!(line.trim() == "parked", "holder said {line:?}");
        let e = open_engine(&img)?;
        let mut buf = vec![0u8; MIB as usize];
        e.read_exact_at(&mut buf, 4 * MIB).map_err(|err| format!("read: {err}"))?;
        ensure!(e.revalidate_map() && e.state().remapping, "revalidation before the dedupe: {:?}", e.state());
        to.write_all(b"go\n").map_err(|err| format!("to holder: {err}"))?;
        line.clear();
        from.read_line(&mut line).map_err(|err| format!("holder: {err}"))?;
        ensure!(line.trim() == "dedupe 0/1048576", "the kernel's dedupe answer: {line:?}");
        // The kernel's view: twin's first MiB is now shared (filefrag of twin: opening img would
        // break the lease and hide what this test is about).
        let shared = mounts::filefrag(&twin)?.iter().any(|f| f.logical == 0 && f.flags.iter().any(|x| x == "shared"));
        ensure!(shared, "filefrag does not show twin's first MiB shared after the dedupe");
        ensure!(!e.revalidate_map(), "revalidation did not notice the dedupe");
        let st = e.state();
        ensure!(
            !st.remapping
                && st.stopped_because.as_deref().is_some_and(|w| w.contains("remap.map-changed"))
                && st.stopped_code == Some("remap.map-changed"),
            "after the dedupe: {st:?}"
        );
        let data = pattern(4242, MIB as usize);
        e.write_at(&data, 4 * MIB).map_err(|err| format!("write: {err}"))?;
        e.close().map_err(|err| format!("close: {err}"))?;
        drop(e);
        let got = std::fs::read(&img).map_err(|err| format!("read: {err}"))?;
        ensure!(got[(4 * MIB) as usize..(5 * MIB) as usize] == data[..], "the write after the dedupe is not in img");
        Ok(Completion::Completed)
    })();
    drop(to);
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// M3: a raw FUA write over blocks a file-path write just allocated `fdatasync`s the image first
/// (counted in `fua_image_syncs`), a second one with nothing new written through the file does
/// not, and a FUA write into a hole goes through the file with `RWF_DSYNC`. The data is what the
/// file system returns afterwards.
fn fua_after_hole_fill() -> TestResult {
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    use std::sync::atomic::Ordering::Relaxed;
    for m in &mounts {
        let img = m.path("fua.img");
        let mut model = make_mixed(&img)?;
        let e = open_engine(&img)?;
        let mut put = |data: Vec<u8>, at: u64, fua: bool| -> Result<(), Failed> {
            let r = if fua { e.write_at_fua(&data, at) } else { e.write_at(&data, at) };
            r.map_err(|err| format!("{}: write at {at}: {err}", m.fs))?;
            model[at as usize..at as usize + data.len()].copy_from_slice(&data);
            Ok(())
        };
        // A hole (6..8 MiB) filled through the file, then FUA over the same blocks: raw.
        put(pattern(31, 65536), 6 * MIB, false)?;
        let raw0 = e.stats().device_written.load(Relaxed);
        put(pattern(32, 65536), 6 * MIB, true)?;
        let s = e.stats();
        ensure!(s.device_written.load(Relaxed) > raw0, "{}: the FUA write did not go raw", m.fs);
        ensure!(s.fua_image_syncs.load(Relaxed) == 1, "{}: image syncs for FUA: {:?}", m.fs, s);
        // Nothing written through the file since: no second image sync.
        put(pattern(33, 65536), 6 * MIB, true)?;
        ensure!(e.stats().fua_image_syncs.load(Relaxed) == 1, "{}: a needless image sync: {:?}", m.fs, e.stats());
        // FUA into a hole: through the file, RWF_DSYNC.
        put(pattern(34, 65536), 7 * MIB, true)?;
        ensure!(e.stats().fua_file_writes.load(Relaxed) == 1, "{}: FUA through the file: {:?}", m.fs, e.stats());
        e.close().map_err(|err| format!("close: {err}"))?;
        drop(e);
        let through_fs = std::fs::read(&img).map_err(|err| format!("read: {err}"))?;
        ensure!(through_fs == model, "{}: the file differs from the model", m.fs);
    }
    Ok(Completion::Completed)
}

/// L5: one thread fills a range through the file and discards it, over and over; another plans
/// raw writes over the same range and, while it holds the plan's guard, asks the kernel (FIEMAP)
/// where the range is. Every device piece must still be the file's block at that offset: a
/// discard may not free blocks a plan in flight points at, nor leave the map saying "mapped"
/// for punched blocks.
fn discard_vs_plan_write() -> TestResult {
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    use loopkit::extent::ExtentFlags;
    use loopkit::remap::Piece;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    for m in &mounts {
        let img = m.path("discard.img");
        make_mixed(&img)?;
        let e = open_engine(&img)?;
        let (at, len) = (6 * MIB, 256 * 1024u64);
        let done = AtomicBool::new(false);
        let (checked, bad) = (AtomicU64::new(0), std::sync::Mutex::new(Vec::<String>::new()));
        std::thread::scope(|sc| -> Result<(), Failed> {
            let filler = sc.spawn(|| -> Result<(), String> {
                let data = pattern(41, len as usize);
                // At least 150 rounds, and on until the planner has checked a raw plan (a loaded
                // machine may not run it inside the first windows), for at most 60 s.
                let t0 = std::time::Instant::now();
                let mut i = 0u64;
                while i < 150 || (checked.load(SeqCst) == 0 && t0.elapsed() < std::time::Duration::from_secs(60)) {
                    e.write_at(&data, at).map_err(|err| format!("fill {i}: {err}"))?;
                    // A window in which the range is mapped.
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    e.discard(at..at + len).map_err(|err| format!("discard {i}: {err}"))?;
                    i += 1;
                }
                Ok(())
            });
            let planner = sc.spawn(|| {
                let mut pieces = Vec::new();
                while !done.load(SeqCst) {
                    pieces.clear();
                    let g = match e.plan_write(at, len, &mut pieces) {
                        Ok(Some(g)) => g,
                        Ok(None) => continue,
                        Err(err) => {
                            bad.lock().unwrap().push(format!("plan_write: {err}"));
                            return;
                        }
                    };
                    let ext = match loopkit::extent::fiemap::query(e.file_fd(), at..at + len, false) {
                        Ok(x) => x,
                        Err(err) => {
                            bad.lock().unwrap().push(format!("FIEMAP: {err}"));
                            return;
                        }
                    };
                    let mut pos = at;
                    for p in &pieces {
                        if let Piece::Device { offset, len: n } = *p {
                            let ok = ext.iter().any(|x| {
                                x.logical <= pos
                                    && pos + n <= x.logical + x.length
                                    && x.physical + (pos - x.logical) == offset
                                    && !x.flags.contains(ExtentFlags::UNWRITTEN)
                            });
                            if !ok {
                                bad.lock().unwrap().push(format!("device piece {offset}+{n} at {pos}: FIEMAP {ext:?}"));
                            }
                            checked.fetch_add(1, SeqCst);
                        }
                        pos += p.len();
                    }
                    drop(g);
                }
            });
            let r = filler.join().map_err(|_| "the filler panicked".to_string())?;
            done.store(true, SeqCst);
            planner.join().map_err(|_| "the planner panicked".to_string())?;
            r.map_err(|err| format!("{}: {err}", m.fs).into())
        })?;
        let bad = bad.into_inner().unwrap_or_default();
        ensure!(bad.is_empty(), "{}: {} bad plans, first: {}", m.fs, bad.len(), bad[0]);
        ensure!(checked.load(SeqCst) > 0, "{}: no raw plan was ever checked", m.fs);
        e.close().map_err(|err| format!("close: {err}"))?;
    }
    Ok(Completion::Completed)
}

/// `Engine::open` of `img` with `change` (a shell command line, run by `sh -c` as another
/// process) run at `phase` of the open; returns the refusal's text (`None`: it opened, and was
/// closed again), what the command printed (with its exit status) and how long it took.
fn open_changing(img: &Path, phase: OpenPhase, change: &str) -> (Option<String>, String, std::time::Duration) {
    let said = Arc::new(Mutex::new((String::new(), std::time::Duration::ZERO)));
    let (cmd, out) = (change.to_string(), said.clone());
    let hook = OpenHook(Arc::new(move |at| {
        if at != phase {
            return;
        }
        let t = std::time::Instant::now();
        let r = Command::new("timeout").args(["60", "sh", "-c", &cmd]).output();
        let text = match r {
            Ok(o) => {
                format!("{} {}{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
            }
            Err(e) => format!("cannot run: {e}"),
        };
        if let Ok(mut g) = out.lock() {
            *g = (text.trim().to_string(), t.elapsed());
        }
    }));
    let opts = Options { open_hook: Some(hook), ..Options::default() };
    let refused = match Engine::open(img, &opts) {
        Ok((e, _)) => {
            let _ = e.close();
            None
        }
        Err(err) => Some(err.to_string()),
    };
    let (text, took) = said.lock().map(|g| g.clone()).unwrap_or_default();
    (refused, text, took)
}

/// Clear inode flags a case set (quietly: the image may not exist yet).
fn unflag(img: &Path, flags: &str) {
    let _ = Command::new("chattr").arg(flags).arg(img).stderr(std::process::Stdio::null()).status();
}

fn flags_of(img: &Path) -> Result<String, Failed> {
    let out = run_ok(Command::new("lsattr").arg(img))?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string())
}

/// The contract row "size or inode flags changed between preflight and the lease": another
/// process grows or shrinks the image (path `truncate`) or sets an inode flag (`chattr`:
/// append-only, which preflight does not refuse but raw writes would bypass, and the DAX flag,
/// which it refuses) exactly between the first preflight and `F_SETLEASE` (the engine's open
/// seam). The engine must refuse with `remap.changed-before-lease` (and for DAX also with
/// `remap.dax-file`) and hold no lease afterwards (`/proc/locks`); the file system (`stat`,
/// `lsattr`) confirms the change really happened. Unchanged, the same open succeeds.
fn changed_before_lease() -> TestResult {
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    if let Some(t) = ["chattr", "lsattr", "truncate"].into_iter().find(|t| !crate::util::have(t)) {
        return skip(format!("missing tool: {t}"));
    }
    for m in &mounts {
        let img = m.path("changing.img");
        let q = crate::vm::sh_quote(&img.to_string_lossy());
        let cases: [(&str, String, &[&str], &str); 5] = [
            ("nothing", "true".into(), &[], ""),
            ("grow", format!("truncate -s 17M {q}"), &["remap.changed-before-lease"], ""),
            ("shrink", format!("truncate -s 15M {q}"), &["remap.changed-before-lease"], ""),
            ("append-only", format!("chattr +a {q}"), &["remap.changed-before-lease"], "a"),
            ("dax flag", format!("chattr +x {q}"), &["remap.changed-before-lease", "remap.dax-file"], "x"),
        ];
        for (what, cmd, codes, flag) in cases {
            unflag(&img, "-ax");
            let _ = std::fs::remove_file(&img);
            make_mixed(&img)?;
            let (refused, said, _) = open_changing(&img, OpenPhase::BeforeLease, &cmd);
            ensure!(said.starts_with("exit status: 0"), "{} {what}: the change failed: {said}", m.fs);
            let len = std::fs::metadata(&img).map_err(|e| format!("stat: {e}"))?.len();
            let flags = flags_of(&img)?;
            unflag(&img, "-ax");
            match what {
                "grow" => ensure!(len == 17 * MIB, "{} {what}: size {len}", m.fs),
                "shrink" => ensure!(len == 15 * MIB, "{} {what}: size {len}", m.fs),
                _ => ensure!(flag.is_empty() || flags.contains(flag), "{} {what}: lsattr says {flags}", m.fs),
            }
            if codes.is_empty() {
                ensure!(refused.is_none(), "{} unchanged: refused: {refused:?}", m.fs);
                continue;
            }
            let Some(text) = refused else {
                return crate::util::fail(format!(
                    "{} {what} between preflight and the lease: the engine opened",
                    m.fs
                ));
            };
            for code in codes {
                ensure!(text.contains(code), "{} {what}: refused without {code}: {text}", m.fs);
            }
            ensure!(!lease_listed(&img)?, "{} {what}: a lease is still held after the refusal", m.fs);
        }
        let _ = std::fs::remove_file(&img);
    }
    Ok(Completion::Completed)
}

/// A refused open must leave no lease behind when it returns, even while the lease watcher is
/// answering another engine's break (the watcher holds a reference to every engine it watches,
/// the one being refused included, for as long as it answers). Engine A has raw I/O in flight
/// (a read plan's guard, held by the test); a thread of ours opens A's image, so the watcher
/// stops A and waits for that guard. Meanwhile engine B opens a second image whose size another
/// process changes between preflight and the lease: B must refuse
/// (`remap.changed-before-lease`) and `/proc/locks` must list no lease on B's image at once.
/// Then the guard is dropped: A's break completes (`remap.lease-broken`) and the opener gets
/// through with A's bytes.
fn refusal_while_another_break_runs() -> TestResult {
    use loopkit::remap::Piece;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    type Opener = std::thread::JoinHandle<std::io::Result<Vec<u8>>>;
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    if !crate::util::have("truncate") {
        return skip("missing tool: truncate");
    }
    for m in &mounts {
        let (busy, img) = (m.path("busy.img"), m.path("refused.img"));
        let want = make_mixed(&busy)?;
        make_mixed(&img)?;
        let a = open_engine(&busy)?;
        let mut pieces = Vec::new();
        let guard = a.plan_read(0, MIB, &mut pieces).map_err(|e| format!("plan_read: {e}"))?;
        ensure!(pieces.iter().any(|p| matches!(p, Piece::Device { .. })), "{}: no raw piece planned", m.fs);
        let opener: Arc<Mutex<Option<Opener>>> = Arc::new(Mutex::new(None));
        let a_stopped = Arc::new(AtomicBool::new(false));
        let (truncate, q) = (Arc::new(Mutex::new(String::new())), crate::vm::sh_quote(&img.to_string_lossy()));
        let hook = {
            let (a, opener, a_stopped, truncate, busy) =
                (a.clone(), opener.clone(), a_stopped.clone(), truncate.clone(), busy.clone());
            OpenHook(Arc::new(move |at| match at {
                OpenPhase::BeforeLease => {
                    let r = Command::new("sh").arg("-c").arg(format!("truncate -s 17M {q}")).status();
                    if let Ok(mut g) = truncate.lock() {
                        *g = r.map_or_else(|e| format!("cannot run: {e}"), |s| s.to_string());
                    }
                }
                OpenPhase::AfterLease => {
                    // B is registered with the watcher now; start A's break and wait until the
                    // watcher is inside it (A stopped remapping, waiting for the held guard).
                    let path = busy.clone();
                    if let Ok(mut g) = opener.lock() {
                        *g = Some(std::thread::spawn(move || std::fs::read(&path)));
                    }
                    let t = std::time::Instant::now();
                    while a.state().remapping && t.elapsed() < std::time::Duration::from_secs(10) {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    a_stopped.store(!a.state().remapping, SeqCst);
                }
            }))
        };
        let opts = Options { open_hook: Some(hook), ..Options::default() };
        let refused = Engine::open(&img, &opts).err().map(|e| e.to_string());
        let listed = lease_listed(&img)?;
        drop(guard);
        let handle = opener.lock().map_err(|_| "opener lock poisoned".to_string())?.take();
        let theirs = handle.map(|h| h.join());
        let st = a.state();
        a.close().map_err(|e| format!("close: {e}"))?;
        drop(a);
        let truncated = truncate.lock().map(|g| g.clone()).unwrap_or_default();
        ensure!(truncated.contains("exit status: 0"), "{}: the size change failed: {truncated}", m.fs);
        ensure!(a_stopped.load(SeqCst), "{}: the watcher never started A's break (nothing was tested): {st:?}", m.fs);
        let Some(text) = refused else {
            return crate::util::fail(format!("{}: B opened although its size changed before the lease", m.fs));
        };
        ensure!(text.contains("remap.changed-before-lease"), "{}: B refused for another reason: {text}", m.fs);
        ensure!(!listed, "{}: B's lease is still held after its refusal returned (the watcher kept it alive)", m.fs);
        let theirs = match theirs {
            Some(Ok(Ok(bytes))) => bytes,
            other => return crate::util::fail(format!("{}: the opener of A: {other:?}", m.fs)),
        };
        ensure!(theirs == want, "{}: the opener read different bytes from A", m.fs);
        ensure!(st.stopped_code == Some("remap.lease-broken") && !st.lease_held, "{}: A after the break: {st:?}", m.fs);
    }
    Ok(Completion::Completed)
}

/// The same changes once the lease is held: the other process's truncate (by path) or `chattr`
/// (which opens the file) breaks the lease; the engine answers the break at once (the other
/// process is not held for `lease-break-time`) and then refuses (`remap.changed-before-lease`
/// from the re-check, or `remap.lease-lost`). After `open` returned, the same `chattr` stops
/// remapping (`remap.lease-broken`/`remap.lease-lost`), and the engine's later writes go
/// through the file, not to the device (its counters).
fn changed_after_lease() -> TestResult {
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    if let Some(t) = ["chattr", "python3"].into_iter().find(|t| !crate::util::have(t)) {
        return skip(format!("missing tool: {t}"));
    }
    let quick = std::time::Duration::from_secs(5);
    for m in &mounts {
        let img = m.path("changing.img");
        let q = crate::vm::sh_quote(&img.to_string_lossy());
        // Blocking calls, as most programs make them (coreutils `truncate` and `chattr` open with
        // `O_NONBLOCK` and give up with `EAGAIN` on a leased file, after starting the break):
        // truncate(2) by path, and an open that waits before `chattr` sets the flag.
        let truncate = format!("python3 -c 'import os, sys; os.truncate(sys.argv[1], 17 << 20)' {q}");
        let opener = format!("python3 -c 'import os, sys; os.close(os.open(sys.argv[1], os.O_RDONLY))' {q}");
        let chattr = format!("{opener} && chattr +a {q}");
        for (what, cmd) in [("grow", truncate), ("append-only", chattr.clone())] {
            unflag(&img, "-a");
            let _ = std::fs::remove_file(&img);
            make_mixed(&img)?;
            let (refused, said, took) = open_changing(&img, OpenPhase::AfterLease, &cmd);
            unflag(&img, "-a");
            ensure!(said.starts_with("exit status: 0"), "{} {what}: the change failed: {said}", m.fs);
            ensure!(took < quick, "{} {what}: the other process waited {took:?} for the lease", m.fs);
            let Some(text) = refused else {
                return crate::util::fail(format!("{} {what} after the lease: the engine opened", m.fs));
            };
            ensure!(
                text.contains("remap.changed-before-lease") || text.contains("remap.lease-lost"),
                "{} {what}: refused for another reason: {text}",
                m.fs
            );
            ensure!(!lease_listed(&img)?, "{} {what}: a lease is still held after the refusal", m.fs);
        }
        // Once open: the change breaks the lease; nothing goes raw afterwards.
        let _ = std::fs::remove_file(&img);
        make_mixed(&img)?;
        let e = open_engine(&img)?;
        ensure!(e.state().remapping, "{}: not remapping after open", m.fs);
        let t = std::time::Instant::now();
        run_ok(Command::new("timeout").args(["60", "sh", "-c", &chattr]))?;
        let took = t.elapsed();
        let st = e.state();
        let raw_before = e.stats().device_written.load(std::sync::atomic::Ordering::SeqCst);
        // Whatever the kernel makes of it through the file (an old descriptor may still write).
        let _ = e.write_at(&pattern(77, 4096), MIB);
        let raw_after = e.stats().device_written.load(std::sync::atomic::Ordering::SeqCst);
        unflag(&img, "-a");
        ensure!(took < quick, "{}: chattr waited {took:?} for the lease", m.fs);
        ensure!(
            !st.remapping && matches!(st.stopped_code, Some("remap.lease-broken") | Some("remap.lease-lost")),
            "{}: after chattr +a on the open image: {st:?}",
            m.fs
        );
        ensure!(raw_after == raw_before, "{}: a write after the break went to the device", m.fs);
        let _ = e.close();
        let _ = std::fs::remove_file(&img);
    }
    Ok(Completion::Completed)
}

/// The protocol `attach --remap` serves DISCARD with: one thread (a ublk queue thread) holds the
/// guard of a raw plan over the range; a discard of that range on another thread must wait for
/// it — and meanwhile the holder must be able to go on: `try_plan_read`/`try_plan_write`/
/// `try_write_at` over the discarded range return `WouldBlock` at once (holding nothing), plans
/// elsewhere succeed. Once the guard drops, the discard completes and the range reads as zeros
/// through the file system (the oracle: a read of the image through the mount, `FIEMAP` says
/// hole).
fn discard_vs_guard_holder() -> TestResult {
    let mounts = match file_systems() {
        Ok(m) => m,
        Err(why) => return skip(why),
    };
    use loopkit::remap::Piece;
    use std::io::ErrorKind::WouldBlock;
    use std::time::{Duration, Instant};
    for m in &mounts {
        let img = m.path("guarded.img");
        make_mixed(&img)?;
        let e = open_engine(&img)?;
        let (at, len) = (MIB, 256 * 1024u64);
        let mut pieces = Vec::new();
        let guard = e.plan_read(at, len, &mut pieces).map_err(|err| format!("plan_read: {err}"))?;
        ensure!(
            pieces.iter().all(|p| matches!(p, Piece::Device { .. })),
            "{}: the data range is not planned raw: {pieces:?}",
            m.fs
        );
        std::thread::scope(|sc| -> Result<(), Failed> {
            let discard = sc.spawn(|| e.discard(at..at + len));
            // The discard takes the range, then waits for our guard.
            let t0 = Instant::now();
            loop {
                pieces.clear();
                match e.try_plan_read(at, len, &mut pieces) {
                    Err(err) if err.kind() == WouldBlock => break,
                    Ok(g) => drop(g),
                    Err(err) => return Err(format!("{}: try_plan_read: {err}", m.fs).into()),
                }
                ensure!(!discard.is_finished(), "{}: the discard finished while a guard over its range was held", m.fs);
                ensure!(t0.elapsed() < Duration::from_secs(20), "{}: the discard never took its range", m.fs);
                std::thread::sleep(Duration::from_millis(1));
            }
            let t1 = Instant::now();
            let w = e.try_plan_write(at, len, &mut pieces);
            ensure!(
                matches!(&w, Err(err) if err.kind() == WouldBlock),
                "{}: try_plan_write: {:?}",
                m.fs,
                w.map(|g| g.is_some())
            );
            let w = e.try_write_at(&pattern(7, 4096), at + 4096, false);
            ensure!(matches!(&w, Err(err) if err.kind() == WouldBlock), "{}: try_write_at: {w:?}", m.fs);
            pieces.clear();
            let elsewhere =
                e.try_plan_read(4 * MIB, len, &mut pieces).map_err(|err| format!("{}: plan elsewhere: {err}", m.fs))?;
            drop(elsewhere);
            ensure!(t1.elapsed() < Duration::from_secs(2), "{}: the non-waiting calls took {:?}", m.fs, t1.elapsed());
            std::thread::sleep(Duration::from_millis(50));
            ensure!(!discard.is_finished(), "{}: the discard did not wait for the guard", m.fs);
            drop(guard);
            discard
                .join()
                .map_err(|_| "the discard panicked".to_string())?
                .map_err(|err| format!("{}: discard: {err}", m.fs))?;
            Ok(())
        })?;
        pieces.clear();
        let g = e.try_plan_read(at, len, &mut pieces).map_err(|err| format!("{}: plan after: {err}", m.fs))?;
        drop(g);
        ensure!(
            pieces.iter().all(|p| matches!(p, Piece::Zero { .. })),
            "{}: after the discard the range plans as {pieces:?}",
            m.fs
        );
        e.close().map_err(|err| format!("close: {err}"))?;
        let f = std::fs::File::open(&img).map_err(|err| format!("open: {err}"))?;
        let mut back = vec![1u8; len as usize];
        f.read_exact_at(&mut back, at).map_err(|err| format!("read back: {err}"))?;
        ensure!(back.iter().all(|&b| b == 0), "{}: the discarded range does not read as zeros through the mount", m.fs);
        let ext = loopkit::extent::fiemap::query(std::os::fd::AsFd::as_fd(&f), at..at + len, false)
            .map_err(|err| format!("FIEMAP: {err}"))?;
        ensure!(ext.is_empty(), "{}: FIEMAP still maps the discarded range: {ext:?}", m.fs);
    }
    Ok(Completion::Completed)
}
