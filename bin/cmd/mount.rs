//! `loopkit mount IMAGE DIR [--raw] [--allow-damaged] [--foreground] [-o allow_other]` and
//! `loopkit umount DIR`: browse an image through a read-only FUSE mount, without root.
//!
//! By default the command returns (exit 0) once the mount is up and a background copy of itself
//! serves it (forked after the image was opened, so a prompted passphrase is asked only once);
//! `--foreground` serves in this process. SIGINT and SIGTERM unmount and end the server.
//! `--json`: one line per document, `mounted` once the mount is up and, in the foreground,
//! `unmounted` when it ends (docs/JSON.md).

use crate::cli::{MountArgs, UmountArgs};
use loopkit::mount::{Content, Options, Server};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// `mount --json` once the mount is up.
#[derive(serde::Serialize)]
struct Mounted {
    loopkit_json: u32,
    command: &'static str,
    ok: bool,
    event: &'static str,
    mount_point: String,
    image: String,
    content: &'static str,
    payload: Option<String>,
    kind: String,
    scheme: String,
    encryption: Option<loopkit::report::Encryption>,
    filesystem: Option<loopkit::report::Filesystem>,
    read_only: bool,
    pid: u32,
    foreground: bool,
    allow_damaged: bool,
    allow_other: bool,
    device: Option<String>,
    fstype: Option<String>,
}

/// `mount --json --foreground` when the mount has ended.
#[derive(serde::Serialize)]
struct Unmounted<'a> {
    loopkit_json: u32,
    command: &'static str,
    ok: bool,
    event: &'static str,
    mount_point: &'a str,
    image: &'a str,
    pid: u32,
    ended_by: &'static str,
}

/// Print one document on one line.
fn print_line<T: serde::Serialize>(v: &T) -> loopkit::Result<()> {
    let s = serde_json::to_string(v).map_err(|e| loopkit::Error::invalid(format!("BUG: cannot serialise: {e}")))?;
    super::print_exact(&(s + "\n"))
}

impl Mounted {
    /// Fill in what the mount table says now that the mount is up, and the server's pid.
    fn ready(mut self, dir: &Path, pid: u32) -> Mounted {
        self.pid = pid;
        if let Ok(Some(m)) = loopkit::mount::mount_entry(dir) {
            self.device = Some(m.device);
            self.fstype = Some(m.fstype);
        }
        self
    }
}

/// Parse `-o` values: only `allow_other` (and the implied `ro`) are accepted.
fn allow_other(options: &[String]) -> loopkit::Result<bool> {
    let mut other = false;
    for o in options.iter().flat_map(|s| s.split(',')).filter(|s| !s.is_empty()) {
        match o {
            "allow_other" => other = true,
            "ro" => {}
            _ => return Err(loopkit::Error::invalid(format!("-o {o}: unknown mount option (allow_other is known)"))),
        }
    }
    Ok(other)
}

/// Where remarks about damage go.
fn logger(a: &MountArgs) -> loopkit::Result<loopkit::mount::Log> {
    if let Some(p) = &a.log {
        let f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(p)
            .map_err(|e| loopkit::Error::io(format!("opening the log {}", p.display()), e))?;
        let f = Mutex::new(f);
        return Ok(Box::new(move |line: &str| {
            if let Ok(mut f) = f.lock() {
                let _ = writeln!(f, "loopkit mount: {}", crate::render::line(line));
            }
        }));
    }
    if a.foreground {
        return Ok(Box::new(|line: &str| eprintln!("loopkit: warning: {}", crate::render::line(line))));
    }
    Ok(Box::new(|_: &str| {}))
}

/// Run it: 0 once mounted (daemon) or after a clean unmount (--foreground).
pub fn run(a: &MountArgs) -> loopkit::Result<u8> {
    let image = std::path::absolute(&a.image).unwrap_or_else(|_| a.image.clone()).display().to_string();
    let opts =
        Options { allow_damaged: a.allow_damaged, allow_other: allow_other(&a.options)?, fs_name: image.clone() };
    let dir = std::path::absolute(&a.dir).map_err(|e| loopkit::Error::io(format!("{}", a.dir.display()), e))?;
    // Before asking for a passphrase: the mount point must be usable.
    loopkit::mount::check_mount_point(&dir)?;
    let (opened, _) = super::open_with_prompt(&a.image, &a.secrets, &a.params)?;
    let Some(vol) = opened.volume()? else {
        return Err(opened.locked_error());
    };
    let doc = a.json.then(|| mounted_doc(a, &opened, &dir, &image, &opts));
    // The server runs until the process ends: the payload and the file system live as long.
    let vol: &'static dyn loopkit::source::ByteSource = Box::leak(vol);
    let content = content(a, vol, &opened)?;
    drop(opened);
    let server = Server::new(content, opts, logger(a)?);
    if a.foreground {
        let ended_by = serve(server, &dir, None, doc)?;
        if a.json {
            print_line(&Unmounted {
                loopkit_json: loopkit::report::JSON_VERSION,
                command: "mount",
                ok: true,
                event: "unmounted",
                mount_point: &dir.display().to_string(),
                image: &image,
                pid: std::process::id(),
                ended_by,
            })?;
        }
        return Ok(0);
    }
    daemon(a, server, &dir, doc)
}

/// The `mount --json` document for `opened` mounted on `dir` (its pid filled in once known).
fn mounted_doc(a: &MountArgs, opened: &loopkit::image::Opened, dir: &Path, image: &str, opts: &Options) -> Mounted {
    let described = loopkit::report::inspect(opened, None);
    Mounted {
        loopkit_json: loopkit::report::JSON_VERSION,
        command: "mount",
        ok: true,
        event: "mounted",
        mount_point: dir.display().to_string(),
        image: image.to_string(),
        content: if a.raw { "raw" } else { "tree" },
        payload: a.raw.then(|| dir.join(loopkit::mount::RAW_NAME).display().to_string()),
        kind: described.kind.clone(),
        scheme: described.encryption.as_ref().map_or_else(|| "plain".to_string(), |e| e.scheme.clone()),
        encryption: described.encryption.clone(),
        filesystem: described.filesystem.clone(),
        read_only: true,
        pid: 0,
        foreground: a.foreground,
        allow_damaged: opts.allow_damaged,
        allow_other: opts.allow_other,
        device: None,
        fstype: None,
    }
}

/// What to serve: the payload itself (`--raw`) or its file system, with the size figures
/// identification found as the `statfs` fallback.
fn content(
    a: &MountArgs,
    vol: &'static dyn loopkit::source::ByteSource,
    opened: &loopkit::image::Opened,
) -> loopkit::Result<Content> {
    if a.raw {
        return Ok(Content::Raw(vol));
    }
    let fs: &'static dyn loopkit::fs::FileSystem = Box::leak(loopkit::fs::open(vol)?);
    let fallback = opened.filesystem().and_then(|i| {
        let bs = i.block_size.filter(|&b| b > 0)?;
        Some(loopkit::fs::tree::Figures { block_size: bs, blocks: i.size_bytes? / u64::from(bs), ..Default::default() })
    });
    Ok(Content::Tree { fs, fallback })
}

/// Serve in a child process: the parent waits for the child's word that the mount is up (or why
/// not), reports it, and returns; the child serves until unmounted.
fn daemon(a: &MountArgs, server: Server, dir: &Path, doc: Option<Mounted>) -> loopkit::Result<u8> {
    let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| loopkit::Error::io("creating a pipe", e.into()))?;
    match loopkit::sys::fork().map_err(|e| loopkit::Error::io("starting the mount server", e))? {
        loopkit::sys::Forked::Parent(pid) => {
            drop(wr);
            let mut msg = String::new();
            let _ = std::fs::File::from(rd).read_to_string(&mut msg);
            match msg.strip_prefix("ok") {
                Some(_) => {
                    if let Some(doc) = doc {
                        print_line(&doc.ready(dir, pid.cast_unsigned()))?;
                    }
                    eprintln!(
                        "loopkit: {} mounted on {} (server pid {pid}); unmount with `loopkit umount {}`",
                        crate::render::line(&a.image.display().to_string()),
                        crate::render::line(&dir.display().to_string()),
                        crate::render::line(&dir.display().to_string())
                    );
                    Ok(0)
                }
                None if msg.is_empty() => Err(loopkit::Error::io(
                    "the mount server",
                    std::io::Error::other("it ended before the mount was up"),
                )),
                None => Err(loopkit::Error::io(
                    "mounting",
                    std::io::Error::other(msg.strip_prefix("error: ").unwrap_or(&msg).to_string()),
                )),
            }
        }
        loopkit::sys::Forked::Child => {
            drop(rd);
            let _ = rustix::process::setsid();
            match serve(server, dir, Some(wr), None) {
                Ok(_) => Ok(0),
                // The parent has reported a failure to mount; nobody hears this one.
                Err(_) => Ok(2),
            }
        }
    }
}

/// Mount, report readiness on `ready` (daemon: then detach from the terminal) or print `doc`
/// (foreground), serve until unmounted or SIGINT/SIGTERM; what ended it (`signal`, `unmount`).
fn serve(server: Server, dir: &Path, ready: Option<OwnedFd>, doc: Option<Mounted>) -> loopkit::Result<&'static str> {
    let mut mounted = match loopkit::mount::mount(server, dir) {
        Ok(m) => m,
        Err(e) => {
            if let Some(fd) = ready {
                let _ = std::fs::File::from(fd).write_all(format!("error: {e}").as_bytes());
            }
            return Err(e);
        }
    };
    let mut unmounter = mounted.unmounter();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| loopkit::Error::io("installing signal handlers", e))?;
    static SIGNALLED: AtomicBool = AtomicBool::new(false);
    std::thread::Builder::new()
        .name("mount-signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                SIGNALLED.store(true, Ordering::Relaxed);
                // Busy (files open): stay mounted; another signal tries again.
                if unmounter.unmount().is_ok() {
                    break;
                }
            }
        })
        .map_err(|e| loopkit::Error::io("starting the signal thread", e))?;
    match ready {
        Some(fd) => {
            // Detach from the terminal and from whoever waits for our output.
            let _ = rustix::process::chdir("/");
            if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
                let _ = rustix::stdio::dup2_stdin(&null);
                let _ = rustix::stdio::dup2_stdout(&null);
                let _ = rustix::stdio::dup2_stderr(&null);
            }
            let _ = std::fs::File::from(fd).write_all(b"ok");
        }
        None => {
            eprintln!("loopkit: mounted on {}; Ctrl-C or `loopkit umount` ends it", dir.display());
            if let Some(doc) = doc {
                print_line(&doc.ready(dir, std::process::id()))?;
            }
        }
    }
    mounted.run()?;
    Ok(if SIGNALLED.load(Ordering::Relaxed) { "signal" } else { "unmount" })
}

/// `loopkit umount DIR`.
pub fn umount(a: &UmountArgs) -> loopkit::Result<u8> {
    loopkit::mount::unmount(&a.dir)?;
    if a.json {
        super::print_json(&serde_json::json!({
            "loopkit_json": loopkit::report::JSON_VERSION,
            "command": "umount",
            "ok": true,
            "mount_point": std::path::absolute(&a.dir).unwrap_or_else(|_| a.dir.clone()),
        }))?;
    }
    Ok(0)
}
