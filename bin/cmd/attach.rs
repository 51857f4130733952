//! `loopkit attach IMAGE` (serve the image as a ublk block device until detached),
//! `loopkit attach --list` and `loopkit detach DEVICE|IMAGE`.

use crate::cli::{AttachArgs, DetachArgs};
use loopkit::attach::{self, Backend, Crypt, FileBackend, state};
use loopkit::formats::cryptsetup::OpenCommand;
use loopkit::image::Content;
use loopkit::progress::Interrupt;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// `attach --json` once the device is live.
#[derive(Serialize)]
struct Report<'a> {
    loopkit_json: u32,
    command: &'static str,
    ok: bool,
    #[serde(flatten)]
    entry: &'a state::Entry,
    /// The cryptsetup command for the device (--open-crypt), or null.
    cryptsetup: Option<String>,
    /// The same command as an argument vector (program first), or null.
    cryptsetup_argv: Option<Vec<String>>,
    notes: Vec<String>,
}

/// What `--open-crypt` runs once the device is live.
struct OpenCrypt {
    name: String,
    /// The `cryptsetup open` command for the image (as `inspect` gives it).
    command: OpenCommand,
    /// Typed at cryptsetup's prompt (a passphrase line), if the command reads no key file.
    stdin: Option<Zeroizing<Vec<u8>>>,
}

/// Run it; returns the exit code.
///
/// IMAGE is opened exactly once ([`attach::open_image`]); the format analysis, `--open-crypt`'s
/// preparation, the remap engine and the file path all use that descriptor (or duplicates of
/// it, the same open file description), and the path recorded for `--list` and `detach` is where
/// that inode is (`/proc/self/fd/N`). Renaming or re-pointing IMAGE after that open changes
/// nothing served; the remap engine's descriptor is checked to be the analysed inode all the same
/// (`attach.image-changed`).
pub fn run(a: &AttachArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    if a.list {
        return list(a.json);
    }
    if let Some(id) = a.supervise {
        let _ = attach::supervise(id, Duration::from_secs(a.recovery_timeout))?;
        return Ok(0);
    }
    let mut notes = Vec::new();
    let recovered;
    let a = match recovery_target(a, &mut notes)? {
        Some(r) => {
            recovered = r;
            &recovered
        }
        None => a,
    };
    let Some(image) = a.image.as_deref() else {
        return Err(loopkit::Error::invalid("give an IMAGE to attach, or --list"));
    };
    // The server holds keys for as long as the device is attached: no core dumps of it, and no
    // ptrace by anyone but root, from before the first secret is read.
    if let Err(e) = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable) {
        notes.push(format!("cannot turn core dumps off (PR_SET_DUMPABLE): {e}"));
    }
    let want_write = if a.decrypt { a.read_write } else { !a.read_only && a.open_crypt.is_none() };
    let mut img = attach::open_image(image, want_write)?;
    check_invoker(image, &img)?;
    if let Some(id) = a.recover_id {
        check_recovered_image(id, &img)?;
    }
    // Before any secret is read: a machine that cannot serve ublk devices gets one line naming
    // the fix (no driver, io_uring disabled). Without secrets, the image's own refusals (a size
    // that is not a multiple of 512…), which need no kernel, come first; `serve` checks the
    // kernel then, before it prints any note.
    if a.decrypt || a.open_crypt.is_some() || a.remap {
        attach::server::available()?;
    }
    // Secrets are read once (a passphrase on stdin cannot be read twice), whichever backend
    // serves in the end.
    let decrypt = if a.decrypt { Some(decrypt_params(image, &img, a, &mut notes)?) } else { None };
    let mut open_crypt = match &a.open_crypt {
        Some(name) if !a.decrypt => Some(prepare_open_crypt(image, &img, a, name, &mut notes)?),
        _ => None,
    };
    if a.remap {
        match remap_backend(image, &img, a, decrypt.clone(), &mut open_crypt)? {
            Ok((backend, served, mode, oc)) => return serve(backend, &served, mode, a, notes, oc, interrupt),
            Err(refused) => {
                notes.push(format!("not remapping, serving through the file instead: {refused}"));
            }
        }
    }
    let block = a.logical_block_size.unwrap_or(512).max(
        decrypt
            .as_ref()
            .and_then(|d| d.crypt.as_ref())
            .map_or(512, |c| u32::try_from(c.cipher.sector_bytes()).unwrap_or(u32::MAX)),
    );
    img.serve_through_file(block);
    let (backend, mode) = match decrypt {
        Some(d) => (FileBackend::new(img.duplicate()?, d.base, d.size, img.writable, d.crypt)?, "decrypt"),
        None => {
            let size = img.file.metadata().map_err(|e| loopkit::Error::io("cannot stat the image", e))?.len();
            (FileBackend::new(img.duplicate()?, 0, size, img.writable, None)?, "file")
        }
    };
    serve(backend, &img, mode, a, notes, open_crypt, interrupt)
}

/// Stable code of the refusal when `attach --recover` may not take over a device.
const RECOVER_DENIED: &str = "attach.recover-denied";

/// The user on whose behalf attach runs: `SUDO_UID` or `PKEXEC_UID` when running as root
/// through sudo or pkexec, else the real uid; and whether that is root acting for itself.
fn invoker_uid() -> (u32, bool) {
    let real = rustix::process::getuid().as_raw();
    if rustix::process::geteuid().is_root() {
        for var in ["SUDO_UID", "PKEXEC_UID"] {
            if let Some(v) = std::env::var_os(var) {
                // Unparsable: nobody (refused by any owner check).
                return (v.to_string_lossy().trim().parse().unwrap_or(u32::MAX), false);
            }
        }
    }
    (real, real == 0)
}

/// `attach --recover DEV`, or `attach IMAGE` when the state records hold an orphaned device of
/// IMAGE: the arguments to serve it again (the recorded image, mode, access, queues and depth,
/// with this command's secrets), after checking that the device waits for recovery and that
/// the invoking user is the one who attached it (or root acting for itself).
fn recovery_target(a: &AttachArgs, notes: &mut Vec<String>) -> loopkit::Result<Option<AttachArgs>> {
    let found = match (&a.recover, &a.image) {
        (Some(dev), _) => {
            let Some(found) = state::find(dev)? else {
                return Err(loopkit::Error::invalid(format!(
                    "{} is not in the state records (see `loopkit attach --list`)",
                    dev.display()
                )));
            };
            if found.status != "orphaned" {
                return Err(loopkit::Error::new(
                    loopkit::ErrorKind::Unsafe,
                    format!(
                        "{} is {}, not waiting for recovery ({RECOVER_DENIED}){}",
                        found.entry.device,
                        found.status,
                        if found.status == "stale" { "; `loopkit detach` forgets it" } else { "" }
                    ),
                ));
            }
            found
        }
        (None, Some(image)) => match state::find(image) {
            Ok(Some(found)) if found.status == "orphaned" => {
                notes.push(format!("{} of this image lost its server: recovering it", found.entry.device));
                found
            }
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let e = &found.entry;
    let (me, plain_root) = invoker_uid();
    if e.owner_uid != Some(me) && !plain_root {
        return Err(loopkit::Error::new(
            loopkit::ErrorKind::Unsafe,
            format!(
                "{} was attached by uid {}, this is uid {me}: only that user (or root itself) may recover it \
                 ({RECOVER_DENIED})",
                e.device,
                e.owner_uid.map_or_else(|| "unknown".to_string(), |u| u.to_string())
            ),
        ));
    }
    let mut r = a.clone();
    r.image = Some(e.image.clone().into());
    r.recover = None;
    r.recover_id = Some(e.dev_id);
    r.remap = e.mode.starts_with("remap");
    r.decrypt = e.mode.contains("decrypt");
    r.read_only = e.read_only && !r.decrypt;
    r.read_write = r.decrypt && !e.read_only;
    r.open_crypt = None;
    r.queues = Some(e.queues);
    r.depth = e.depth;
    r.logical_block_size = Some(e.logical_block_bytes);
    if e.recovery_timeout_secs > 0 && a.recover.is_some() {
        r.recovery_timeout = e.recovery_timeout_secs;
    }
    Ok(Some(r))
}

/// Recovery serves the very inode the dead server served (recorded `st_dev`/`st_ino`).
fn check_recovered_image(dev_id: u32, img: &attach::ImageFile) -> loopkit::Result<()> {
    let rec = state::find_id(dev_id)?
        .ok_or_else(|| loopkit::Error::invalid(format!("/dev/ublkb{dev_id} is no longer in the state records")))?;
    let st = rustix::fs::fstat(&img.file).map_err(|e| loopkit::Error::io("cannot examine the image", e.into()))?;
    if rec.entry.image_ino == 0 {
        return Err(loopkit::Error::new(
            loopkit::ErrorKind::Unsafe,
            format!("the record of /dev/ublkb{dev_id} names no image inode (older loopkit) ({RECOVER_DENIED})"),
        ));
    }
    attach::same_inode((rec.entry.image_dev, rec.entry.image_ino), (st.st_dev, st.st_ino)).map_err(|why| {
        loopkit::Error::new(
            loopkit::ErrorKind::Unsafe,
            format!("{}: {why} ({})", img.path.display(), attach::IMAGE_CHANGED),
        )
    })
}

/// Run through sudo or pkexec (root acting for another user, `SUDO_UID`/`SUDO_GID` or
/// `PKEXEC_UID`): that user must be able to read IMAGE (and write it when the device is
/// writable) through the path given, and reach the opened inode by it
/// ([`attach::check_invoker_access`], `attach.invoker-denied`). Plain root, or a user running
/// loopkit directly, is not checked (the kernel already checked the open).
fn check_invoker(image: &Path, img: &attach::ImageFile) -> loopkit::Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    let parse = |name: &str, v: String| {
        v.trim().parse::<u32>().map_err(|_| {
            loopkit::Error::new(
                loopkit::ErrorKind::Unsafe,
                format!(
                    "${name} is {v:?}, not a user id: cannot tell on whose behalf attach runs ({})",
                    attach::INVOKER_DENIED
                ),
            )
        })
    };
    let (uid, gid) = if let Some(u) = var("SUDO_UID") {
        let uid = parse("SUDO_UID", u)?;
        let gid = match var("SUDO_GID") {
            Some(g) => parse("SUDO_GID", g)?,
            None => uid_primary_gid(uid).unwrap_or(u32::MAX),
        };
        (uid, gid)
    } else if let Some(u) = var("PKEXEC_UID") {
        let uid = parse("PKEXEC_UID", u)?;
        (uid, uid_primary_gid(uid).unwrap_or(u32::MAX))
    } else {
        return Ok(());
    };
    attach::check_invoker_access(image, &img.file, uid, gid, img.writable)
}

/// The primary group of `uid` from /etc/passwd (no NSS: unknown elsewhere, then no group
/// grants anything).
fn uid_primary_gid(uid: u32) -> Option<u32> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f.get(3)?.parse::<u32>().ok()).flatten()
    })
}

/// Keep `len` bytes of key material at `ptr` out of swap and core dumps (best effort; a note
/// says when `RLIMIT_MEMLOCK` or the kernel refuses).
fn lock_secret(ptr: *const u8, len: usize, what: &str, notes: &mut Vec<String>) {
    if let Err(e) = loopkit::sys::lock_secret_memory(ptr, len) {
        notes.push(format!(
            "cannot lock the {what} in memory ({e}; raise RLIMIT_MEMLOCK, `ulimit -l`): it could reach swap"
        ));
    }
}

/// `--decrypt`: which bytes of the image hold the payload and how to decrypt them.
#[derive(Clone)]
struct Decrypt {
    base: u64,
    size: u64,
    crypt: Option<Crypt>,
}

/// Analyse the opened image with its secrets (as inspect does, through a duplicate of `img`'s
/// descriptor) and keep only the payload window and the sector cipher; the analysis and its
/// descriptor are dropped on return (the remap engine's descriptor scan must find no other
/// open file). The cipher's memory is locked and kept out of core dumps.
fn decrypt_params(
    image: &Path,
    img: &attach::ImageFile,
    a: &AttachArgs,
    notes: &mut Vec<String>,
) -> loopkit::Result<Decrypt> {
    let (opened, _, _) = super::open_keeping_secrets_from(image, Some(&img.file), &a.secrets, &a.params)?;
    let Some((layout, cipher)) = opened.payload()? else {
        return Err(opened.locked_error());
    };
    if a.read_write && opened.ecc.is_some() {
        return Err(loopkit::Error::new(
            loopkit::ErrorKind::Unsafe,
            "the image carries dvdisaster error-correction data: writing through the device would make it stale \
             (attach without --read-write, or strip the ECC first)",
        ));
    }
    let crypt = match opened.content {
        Content::Plain { .. } | Content::UnknownPlain { .. } => None,
        _ => {
            let c = Crypt { cipher, iv_offset_sectors: layout.iv_offset_sectors };
            lock_secret(
                Arc::as_ptr(&c.cipher).cast::<u8>(),
                std::mem::size_of_val(&*c.cipher),
                "sector cipher's keys",
                notes,
            );
            Some(c)
        }
    };
    Ok(Decrypt { base: layout.offset_bytes, size: layout.size_bytes, crypt })
}

/// `--remap`: the remap engine as the backend (with `--decrypt`: over the payload window,
/// decrypting; with `--open-crypt`: read-only, cryptsetup on top, taking `open_crypt`), on a
/// duplicate of `img`'s descriptor. `Ok(Err(why))` when preflight or exclusivity refuses: the
/// caller falls back to the file path and says why.
#[allow(clippy::type_complexity)]
fn remap_backend(
    image: &Path,
    img: &attach::ImageFile,
    a: &AttachArgs,
    decrypt: Option<Decrypt>,
    open_crypt: &mut Option<OpenCrypt>,
) -> loopkit::Result<Result<(attach::RemapBackend, attach::ImageFile, &'static str, Option<OpenCrypt>), String>> {
    // No lease or preflight on a machine that cannot serve the device anyway.
    attach::server::available()?;
    let (read_only, window, crypt, mode) = match decrypt {
        Some(d) => (!a.read_write, Some((d.base, d.size)), d.crypt, "remap+decrypt"),
        None => (a.read_only || a.open_crypt.is_some(), None, None, "remap"),
    };
    let read_only = read_only || !img.writable;
    let (backend, pf) = match attach::RemapBackend::open_file(img.duplicate()?, image, read_only, window, crypt) {
        Ok(b) => b,
        Err(e) if matches!(e.kind(), loopkit::ErrorKind::Unsafe | loopkit::ErrorKind::Unsupported) => {
            return Ok(Err(e.to_string()));
        }
        Err(e) => return Err(e),
    };
    img.check_same_inode(backend.image_fd())?;
    let file =
        backend.image_fd().try_clone_to_owned().map_err(|e| loopkit::Error::io("cannot duplicate the image fd", e))?;
    let file = std::fs::File::from(file);
    let path = attach::served_path(&file).unwrap_or_else(|| img.path.clone());
    let pbs = pf.backing.physical_block.clamp(512, 65536);
    let served = attach::ImageFile {
        file,
        path,
        writable: !read_only,
        direct_io: true,
        physical_bs_shift: if pbs.is_power_of_two() { pbs.trailing_zeros() as u8 } else { 9 },
        notes: img.notes.iter().chain(&pf.notes).cloned().collect(),
        raw_device: pf
            .backing
            .device
            .as_ref()
            .map(|d| format!("{} ({}:{})", d.display(), pf.backing.dev.0, pf.backing.dev.1)),
    };
    Ok(Ok((backend, served, mode, open_crypt.take())))
}

/// Serve any backend (the file path or the remap engine) until detached, printing the device
/// once live.
fn serve<B: attach::Backend>(
    backend: B,
    img: &attach::ImageFile,
    mode: &str,
    a: &AttachArgs,
    mut notes: Vec<String>,
    open_crypt: Option<OpenCrypt>,
    interrupt: &Interrupt,
) -> loopkit::Result<u8> {
    // A machine that cannot serve ublk devices: one line naming the fix, before any note.
    attach::server::available()?;
    notes.extend(img.notes.iter().map(|f| f.message.clone()));
    for n in &notes {
        eprintln!("loopkit: note: {n}");
    }
    let opts = options(a, img, mode);
    let json = a.json;
    let timeout = a.recovery_timeout;
    let close_name = open_crypt.as_ref().map(|o| o.name.clone());
    let opened_mapper = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opened_flag = opened_mapper.clone();
    let announce = move |e: &state::Entry| -> loopkit::Result<Option<String>> {
        let mut mapper = None;
        let mut cryptsetup = None;
        let mut cryptsetup_argv = None;
        let mut notes = notes;
        if let Some(oc) = open_crypt {
            let cmd = oc.command.with_device(&e.device).with_name(&oc.name);
            let line = cmd.shell_line();
            match run_cryptsetup(&oc, &cmd) {
                Ok(()) => {
                    mapper = Some(format!("/dev/mapper/{}", oc.name));
                    opened_flag.store(true, std::sync::atomic::Ordering::Release);
                }
                Err(why) => {
                    eprintln!("loopkit: note: {why}; run it yourself:\n{line}");
                    notes.push(format!("{why}; run the cryptsetup line yourself"));
                }
            }
            cryptsetup = Some(line);
            cryptsetup_argv = Some(cmd.argv());
        }
        if e.recovery
            && timeout > 0
            && let Err(why) = start_supervisor(e.dev_id, timeout)
        {
            notes.push(format!(
                "cannot start the recovery supervisor ({why}): if this server dies, the device's I/O waits until \
                 `loopkit attach --recover` or `loopkit detach`"
            ));
        }
        let mut e2 = e.clone();
        e2.mapper = mapper.clone();
        if json {
            super::print_json(&Report {
                loopkit_json: loopkit::report::JSON_VERSION,
                command: "attach",
                ok: true,
                entry: &e2,
                cryptsetup,
                cryptsetup_argv,
                notes,
            })?;
        } else {
            print_human(e, mapper.as_deref())?;
        }
        notify_systemd(&format!("READY=1\nSTATUS=serving {} as {}\nMAINPID={}", e.image, e.device, std::process::id()));
        Ok(mapper)
    };
    let on_stop = move || {
        if let Some(name) = close_name
            && opened_mapper.load(std::sync::atomic::Ordering::Acquire)
        {
            let st = Command::new("cryptsetup").args(["close", &name]).stdin(Stdio::null()).status();
            if !st.is_ok_and(|s| s.success()) {
                eprintln!("loopkit: warning: `cryptsetup close {name}` failed; the mapping loses its device now");
            }
        }
    };
    let remarks = Arc::new(crate::progress::StderrRemarks);
    let fin = attach::run(Arc::new(backend), &opts, interrupt, announce, on_stop, remarks)?;
    eprintln!("loopkit: detached {}{}", img.path.display(), if fin.wrote { " (written)" } else { "" });
    Ok(0)
}

/// What `attach::run` needs from the command line and the opened image.
fn options(a: &AttachArgs, img: &attach::ImageFile, mode: &str) -> attach::Options {
    attach::Options {
        queues: a.queues.unwrap_or_else(attach::default_queues),
        depth: a.depth,
        read_only: a.read_only || !img.writable,
        allow_zero_copy: !a.no_zero_copy,
        mode: mode.to_string(),
        image: img.path.clone(),
        direct_io: img.direct_io,
        physical_bs_shift: img.physical_bs_shift,
        raw_device: img.raw_device.clone(),
        recovery_timeout_secs: a.recovery_timeout,
        recover: a.recover_id,
        owner_uid: Some(invoker_uid().0),
        logical_block_bytes: a.logical_block_size,
    }
}

/// The device (and mapper) on stdout, what is served and how to stop it on stderr.
fn print_human(e: &state::Entry, mapper: Option<&str>) -> loopkit::Result<()> {
    let mut s = format!("{}\n", e.device);
    if let Some(m) = mapper {
        s.push_str(&format!("{m}\n"));
    }
    super::print(&s)?;
    eprintln!(
        "loopkit: serving {} as {} ({}, {} path{}); stop with `loopkit detach {}` or Ctrl-C",
        e.image,
        e.device,
        if e.read_only { "read-only" } else { "read-write" },
        e.data_path,
        if e.direct_io { ", O_DIRECT" } else { "" },
        e.device
    );
    Ok(())
}

/// Start `loopkit attach --supervise N` (this executable) in a process group of its own, with
/// no standard streams, so it outlives this server (`kill -9`, a crash) and a Ctrl-C on the
/// terminal, and fails the device's I/O if the server dies and nobody recovers it in time.
fn start_supervisor(dev_id: u32, timeout: u64) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    Command::new("/proc/self/exe")
        .args(["attach", "--supervise", &dev_id.to_string(), "--recovery-timeout", &timeout.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
}

/// Work out the `cryptsetup open` line for `--open-crypt` (as `inspect` prints it) and what to
/// type at its prompt.
fn prepare_open_crypt(
    image: &Path,
    img: &attach::ImageFile,
    a: &AttachArgs,
    name: &str,
    notes: &mut Vec<String>,
) -> loopkit::Result<OpenCrypt> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) || name.len() > 127 {
        return Err(loopkit::Error::invalid(format!("--open-crypt {name:?}: use letters, digits, '-', '_' or '.'")));
    }
    let (opened, pass_len, secrets) = super::open_keeping_secrets_from(image, Some(&img.file), &a.secrets, &a.params)?;
    let report = loopkit::report::inspect(&opened, pass_len);
    let seed = match &opened.content {
        Content::Legacy(o) if o.found.as_ref().is_some_and(|f| f.params.pseed) => a.params.pseed.as_deref(),
        _ => None,
    };
    drop(opened);
    let Some(command) = report.cryptsetup_command else {
        let mut why = String::from("inspect found no cryptsetup line for this image");
        for n in report.cryptsetup_notes.iter().chain(&report.notes) {
            why.push_str("; ");
            why.push_str(n);
        }
        return Err(loopkit::Error::unsupported(why));
    };
    if command.needs_key_file() {
        return Err(loopkit::Error::unsupported(format!(
            "the cryptsetup line needs a raw key file loopkit does not write here ({}); use --decrypt, or \
             `loopkit migrate --to dmcrypt --mode plain --key-out FILE`",
            command.shell_line()
        )));
    }
    let stdin = if command.reads_passphrase() {
        let Some(p) = secrets.passphrase.as_ref() else {
            return Err(loopkit::Error::invalid(
                "--open-crypt needs the passphrase (--passphrase-file or --passphrase-fd)",
            ));
        };
        let v = passphrase_line(p.bytes(), p.c_str(), seed.map(str::as_bytes))?;
        lock_secret(v.as_ptr(), v.capacity(), "passphrase for cryptsetup", notes);
        Some(v)
    } else {
        None
    };
    Ok(OpenCrypt { name: name.to_string(), command, stdin })
}

/// What to type at cryptsetup's passphrase prompt: the passphrase and a newline; for a loop-AES
/// image with a seed (`--pseed`, losetup `-S`) the passphrase immediately followed by the seed,
/// as inspect's note tells users to type it and as loop-AES derives the key (both up to their
/// first NUL byte, `lib/crypto/kdf.rs` `loopaes_single`). cryptsetup reads the line up to its
/// newline, so a seed or passphrase holding one cannot be typed: refused.
///
/// # Errors
/// `InvalidInput` for a newline inside the line.
fn passphrase_line(pass: &[u8], pass_c: &[u8], seed: Option<&[u8]>) -> loopkit::Result<Zeroizing<Vec<u8>>> {
    let (first, second) = match seed {
        Some(s) => (pass_c, &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())]),
        None => (pass, &[][..]),
    };
    if first.contains(&b'\n') || second.contains(&b'\n') {
        return Err(loopkit::Error::invalid(
            "the passphrase (or seed) holds a newline: cryptsetup's prompt cannot take it; use --decrypt",
        ));
    }
    // Sized once: growing it would free a copy of the passphrase without zeroizing it.
    let mut v = Zeroizing::new(Vec::with_capacity(first.len() + second.len() + 1));
    v.extend_from_slice(first);
    v.extend_from_slice(second);
    v.push(b'\n');
    Ok(v)
}

/// Run `cmd` (its argument vector, no shell), typing the passphrase if one is needed, or piping
/// in the output of the program that produces the key (`gpg --decrypt FILE`).
fn run_cryptsetup(oc: &OpenCrypt, cmd: &OpenCommand) -> Result<(), String> {
    if !Path::new("/dev/mapper/control").exists() {
        return Err("device-mapper is not available (/dev/mapper/control missing)".into());
    }
    let argv = cmd.argv();
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let mut producer = match cmd.stdin_from() {
        Some(src) => {
            let (p, a) = src.split_first().ok_or("empty key command")?;
            Some(
                Command::new(p)
                    .args(a)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .map_err(|e| format!("cannot run {p}: {e}"))?,
            )
        }
        None => None,
    };
    let stdin = match (producer.as_mut().and_then(|c| c.stdout.take()), &oc.stdin) {
        (Some(out), _) => Stdio::from(out),
        (None, Some(_)) => Stdio::piped(),
        (None, None) => Stdio::null(),
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if let (Some(mut w), Some(data)) = (child.stdin.take(), &oc.stdin) {
        let _ = w.write_all(data);
    }
    let out = child.wait_with_output().map_err(|e| format!("{prog} failed: {e}"))?;
    if let Some(p) = producer {
        let po = p.wait_with_output().map_err(|e| format!("the key command failed: {e}"))?;
        if !po.status.success() {
            return Err(format!(
                "the key command failed ({}): {}",
                po.status,
                String::from_utf8_lossy(&po.stderr).trim()
            ));
        }
    }
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{prog} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Tell the service manager of a `Type=notify` unit (`dist/systemd/loopkit-attach@.service`)
/// that the device is live: `state` as one datagram to the `AF_UNIX` socket `$NOTIFY_SOCKET`
/// names (a path, or `@name` in the abstract namespace), as `sd_notify(3)` does. Without the
/// variable nothing happens; a failure is a note (the device serves all the same).
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let bytes = target.as_bytes();
    let sent = UnixDatagram::unbound().and_then(|sock| match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name).and_then(|a| sock.send_to_addr(state.as_bytes(), &a)),
        None => sock.send_to(state.as_bytes(), Path::new(&target)),
    });
    if let Err(e) = sent {
        eprintln!("loopkit: note: cannot notify the service manager at $NOTIFY_SOCKET ({e})");
    }
}

/// `attach --list`.
fn list(json: bool) -> loopkit::Result<u8> {
    let all = state::list();
    if json {
        #[derive(Serialize)]
        struct Doc<'a> {
            loopkit_json: u32,
            command: &'static str,
            ok: bool,
            devices: &'a [state::Listed],
        }
        super::print_json(&Doc {
            loopkit_json: loopkit::report::JSON_VERSION,
            command: "attach-list",
            ok: true,
            devices: &all,
        })?;
        return Ok(0);
    }
    let mut s = String::new();
    if all.is_empty() {
        s.push_str("nothing attached\n");
    } else {
        s.push_str("DEVICE        MODE     ACCESS  REMAP  LEASE  DATA-PATH  STATE     IMAGE\n");
        for l in &all {
            let e = &l.entry;
            s.push_str(&format!(
                "{:<13} {:<8} {:<7} {:<6} {:<6} {:<10} {:<9} {}{}\n",
                e.device,
                e.mode,
                if e.read_only { "ro" } else { "rw" },
                e.remap,
                e.lease.as_deref().unwrap_or("-"),
                e.data_path,
                l.status,
                e.image,
                e.mapper.as_deref().map(|m| format!(" -> {m}")).unwrap_or_default()
            ));
        }
    }
    super::print(&s)?;
    Ok(0)
}

/// `loopkit detach DEVICE|IMAGE`: SIGTERM to the server and wait for it to finish (flush,
/// device removed, record gone). The record is not taken on trust: the pid is signalled (through
/// a pidfd) only if it runs this loopkit executable and started when the record says, so a
/// reused pid is never hit. A stale record (server gone) is cleaned up; the leftover ublk device
/// is deleted only if the driver names the recorded, dead pid as its server.
pub fn detach(a: &DetachArgs) -> loopkit::Result<u8> {
    let Some(found) = state::find(&a.target)? else {
        return Err(loopkit::Error::invalid(format!(
            "{} is not attached (see `loopkit attach --list`)",
            a.target.display()
        )));
    };
    let e = &found.entry;
    let mut how = "stopped";
    let pid = i32::try_from(e.pid).ok().and_then(rustix::process::Pid::from_raw);
    if found.live {
        let Some(pid) = pid else {
            return Err(loopkit::Error::invalid(format!("the record of {} has no valid pid", e.device)));
        };
        let refuse = |why: String| {
            loopkit::Error::new(
                loopkit::ErrorKind::Unsafe,
                format!(
                    "pid {} is not the loopkit server of {}: {why}; refusing to signal it (if {} is gone, remove \
                     its record from {})",
                    e.pid,
                    e.device,
                    e.device,
                    state::dir().display()
                ),
            )
        };
        // The pidfd pins the process: checked, then signalled, with no pid reuse in between.
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            .map_err(|err| refuse(format!("cannot open it ({err})")))?;
        state::verify_server(e.pid, found.server_start_ticks).map_err(refuse)?;
        rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::TERM)
            .map_err(|err| loopkit::Error::io(format!("cannot signal the server (pid {})", e.pid), err.into()))?;
        let t0 = Instant::now();
        while state::process_alive(e.pid) && state::process_start_ticks(e.pid) == found.server_start_ticks {
            if t0.elapsed() > Duration::from_secs(a.timeout) {
                return Err(loopkit::Error::new(
                    loopkit::ErrorKind::Io,
                    format!(
                        "the server (pid {}) did not finish within {} s; it is still flushing or stuck",
                        e.pid, a.timeout
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    } else {
        // The server died without cleaning up: remove what is left of the device, if the driver
        // says it is the one the recorded (dead) server made.
        let server = attach::server::device_state(e.dev_id);
        let recorded_gone =
            !state::process_alive(e.pid) || state::verify_server(e.pid, found.server_start_ticks).is_ok();
        match server {
            Some(d) if d.no_server_but(e.pid) && recorded_gone => {
                how = if found.status == "orphaned" {
                    "removed (orphaned: its server was gone; the I/O waiting on it fails)"
                } else {
                    "cleaned up (its server was gone)"
                };
                attach::server::delete_device(e.dev_id);
            }
            Some(_) => {
                how = "forgotten (stale record; the ublk device with that number now belongs to another server, left alone)";
            }
            None => how = "forgotten (stale record; its device is gone)",
        }
    }
    state::forget(e.dev_id);
    if a.json {
        super::print_json(&serde_json::json!({
            "loopkit_json": loopkit::report::JSON_VERSION,
            "command": "detach",
            "ok": true,
            "device": e.device,
            "image": e.image,
            "was_live": found.live,
        }))?;
    } else {
        eprintln!("loopkit: {} {how}", e.device);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::passphrase_line;

    #[test]
    fn the_seed_follows_the_passphrase() {
        assert_eq!(&passphrase_line(b"secret", b"secret", None).unwrap()[..], b"secret\n");
        assert_eq!(&passphrase_line(b"secret", b"secret", Some(b"XYZ")).unwrap()[..], b"secretXYZ\n");
        // Both parts up to their first NUL, as loop-AES hashes them.
        assert_eq!(&passphrase_line(b"se\0x", b"se", Some(b"ab\0c")).unwrap()[..], b"seab\n");
        assert!(passphrase_line(b"secret", b"secret", Some(b"a\nb")).is_err());
    }
}
