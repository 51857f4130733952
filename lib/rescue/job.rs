//! A rescue from a path to a path: the source opened read-only (`O_DIRECT` where possible, so
//! the page cache never hides a failing sector), the output kept as `MAP.partial` until every
//! byte is read (or repaired), the map saved atomically, and the finished image renamed into
//! place.

use super::mapfile::{RescueMap, Status};
use super::{Hooks, Options, Rescue, RescueSource, Stats, Stop};
use crate::progress::Run;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd as _;
use std::os::unix::fs::{FileExt as _, FileTypeExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// A drive, block device or file, read-only.
pub struct DeviceSource {
    buffered: File,
    direct: Option<File>,
    size: u64,
    /// The device's logical block (512 for files), the `O_DIRECT` alignment.
    pub logical_block: u64,
    /// Whether it is a block device.
    pub is_block_device: bool,
}

impl DeviceSource {
    /// Open `path` read-only (also with `O_DIRECT` when the file system or driver allows).
    ///
    /// # Errors
    /// `Io` when it cannot be opened or sized; `InvalidInput` for something neither a regular
    /// file nor a block device.
    pub fn open(path: &Path) -> crate::Result<DeviceSource> {
        let io_err = |what: &str, e: io::Error| crate::Error::io(format!("{what} {}", path.display()), e);
        let buffered = File::open(path).map_err(|e| io_err("opening", e))?;
        let meta = buffered.metadata().map_err(|e| io_err("reading the metadata of", e))?;
        let is_block_device = meta.file_type().is_block_device();
        let (size, logical_block) = if is_block_device {
            let size = crate::sys::block_device_size(buffered.as_fd()).map_err(|e| io_err("reading the size of", e))?;
            let lb = rustix::fs::ioctl_blksszget(&buffered).map(u64::from).unwrap_or(512).max(512);
            (size, lb)
        } else if meta.is_file() {
            (meta.len(), 512)
        } else {
            return Err(crate::Error::invalid(format!(
                "{} is neither a block device nor a regular file",
                path.display()
            )));
        };
        let direct = OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path).ok();
        Ok(DeviceSource { buffered, direct, size, logical_block, is_block_device })
    }

    /// Whether aligned reads bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }
}

impl RescueSource for DeviceSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let lb = self.logical_block;
        let aligned = (buf.as_ptr() as usize).is_multiple_of(lb as usize)
            && (buf.len() as u64).is_multiple_of(lb)
            && pos.is_multiple_of(lb);
        if let Some(d) = &self.direct
            && aligned
        {
            match read_some(d, buf, pos) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                r => return r,
            }
        }
        // Unaligned (the last partial sector) or no O_DIRECT: drop any cached copy first, so
        // the read goes to the device.
        let _ = rustix::fs::fadvise(
            &self.buffered,
            pos,
            std::num::NonZeroU64::new(buf.len() as u64),
            rustix::fs::Advice::DontNeed,
        );
        read_some(&self.buffered, buf, pos)
    }
}

/// Read as much of `buf` as the device gives: `Ok(n < len)` after a failure past the first byte.
fn read_some(f: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// The caller's "is this enough?" check (see [`Hooks::enough`]).
pub type EnoughFn<'a> = &'a mut dyn FnMut(&RescueMap, bool) -> bool;

/// What to rescue where.
#[derive(Debug, Clone)]
pub struct Job {
    /// The drive, device or file to read.
    pub source: PathBuf,
    /// The finished image.
    pub output: PathBuf,
    /// The ddrescue map (default `OUTPUT.map`).
    pub map: PathBuf,
    /// Continue from an existing map.
    pub resume: bool,
    /// Replace an existing output.
    pub force: bool,
    /// The sector size (default: the device's logical block, 2048 for a file).
    pub sector: Option<u64>,
    /// Reads slower than this many bytes per second count as a failing zone in the copy pass.
    pub min_rate: Option<u64>,
    /// Passes over bad sectors after scraping.
    pub retries: u32,
    /// GNU ddrescue's `--test-mode`: a map whose non-finished blocks read as errors (testing
    /// the algorithm on a good source).
    pub test_mode: Option<PathBuf>,
}

/// A source whose reads fail wherever a ddrescue test-mode map is not finished.
struct Simulated<S> {
    inner: S,
    faults: RescueMap,
}

impl<S: RescueSource> RescueSource for Simulated<S> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&mut self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let len = buf.len() as u64;
        let first_bad = self
            .faults
            .blocks()
            .filter(|b| b.status != Status::Finished && b.end() > pos && b.pos < pos + len)
            .map(|b| b.pos.max(pos))
            .next();
        match first_bad {
            Some(p) if p == pos => Err(io::Error::from_raw_os_error(libc::EIO)),
            Some(p) => {
                let n = (p - pos) as usize;
                let got = self.inner.read_at(&mut buf[..n], pos)?;
                Ok(got.min(n))
            }
            None => self.inner.read_at(buf, pos),
        }
    }
}

impl Job {
    /// Where the output is kept until it is complete: `MAP.partial`.
    pub fn partial_path(&self) -> PathBuf {
        let mut p = self.map.clone().into_os_string();
        p.push(".partial");
        PathBuf::from(p)
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Why it stopped.
    pub stop: Stop,
    /// The map at the end.
    pub map: RescueMap,
    /// Counters of this run.
    pub stats: Stats,
    /// The sector size used.
    pub sector: u64,
    /// Whether the source was read with `O_DIRECT`.
    pub direct: bool,
    /// Where the data is now: the output when complete, else `MAP.partial`.
    pub data_path: PathBuf,
    /// Whether the output was written (renamed into place).
    pub completed: bool,
}

struct FileHooks<'a, 'b> {
    job: &'a Job,
    header: Vec<String>,
    enough: Option<EnoughFn<'b>>,
}

impl Hooks for FileHooks<'_, '_> {
    fn enough(&mut self, map: &RescueMap, at_phase_end: bool) -> bool {
        self.enough.as_mut().is_some_and(|f| f(map, at_phase_end))
    }
    fn save(&mut self, map: &RescueMap) -> crate::Result<()> {
        let text = map.render(&self.header);
        crate::output::write_file_atomically(&self.job.map, text.as_bytes(), true, 0o644, &[&self.job.source])
    }
}

fn unsafe_err(msg: String) -> crate::Error {
    crate::Error::new(crate::ErrorKind::Unsafe, msg)
}

/// The map comment that says the output being continued is a ddrescue output (so finishing may
/// replace it).
const CONTINUES_DDRESCUE: &str = "Continues the ddrescue output:";

fn read_map_text(path: &Path) -> crate::Result<String> {
    let f = File::open(path).map_err(|e| crate::Error::io(format!("opening {}", path.display()), e))?;
    let mut text = String::new();
    use std::io::Read as _;
    f.take(super::mapfile::MAX_MAP_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| crate::Error::io(format!("reading {}", path.display()), e))?;
    Ok(text)
}

fn read_map(path: &Path, size: u64) -> crate::Result<RescueMap> {
    let text = read_map_text(path)?;
    RescueMap::parse(&text, size).map_err(|e| crate::Error::corrupt(format!("{}: {e}", path.display())))
}

/// Load (with `resume`) or start the map, refusing to mix up rescues.
fn load_map(job: &Job, size: u64) -> crate::Result<RescueMap> {
    let exists = std::fs::symlink_metadata(&job.map).is_ok();
    match (exists, job.resume) {
        (true, false) => Err(unsafe_err(format!(
            "{} already exists: give --resume to continue that rescue, or remove it to start again",
            job.map.display()
        ))),
        (false, true) => Err(crate::Error::invalid(format!("--resume: {} does not exist", job.map.display()))),
        (false, false) => Ok(RescueMap::new(size)),
        (true, true) => read_map(&job.map, size),
    }
}

/// Open (or create) `MAP.partial`. A resumed ddrescue run wrote straight into the output, so
/// with no partial file but an existing output, the output is copied to start the partial one.
fn open_partial(job: &Job, map: &RescueMap, size: u64) -> crate::Result<(File, PathBuf)> {
    let partial = job.partial_path();
    let io_err = |what: &str, p: &Path, e: io::Error| crate::Error::io(format!("{what} {}", p.display()), e);
    if crate::output::same_file(&partial, &job.source) {
        return Err(unsafe_err(format!("{} is the source itself", partial.display())));
    }
    let have_partial = std::fs::symlink_metadata(&partial).is_ok();
    let needs_data = map.bytes_in(Status::Finished) > 0;
    if !have_partial && needs_data {
        if job.resume && std::fs::metadata(&job.output).is_ok_and(|m| m.is_file()) {
            // ddrescue's own output: copy it (sparse-aware through copy_file_range) and go on.
            let tmp = crate::output::TempFile::beside(&partial)?;
            let mut from = File::open(&job.output).map_err(|e| io_err("opening", &job.output, e))?;
            let mut to = &tmp.file;
            io::copy(&mut from, &mut to).map_err(|e| io_err("copying", &job.output, e))?;
            tmp.persist(&partial, false)?;
        } else {
            return Err(crate::Error::invalid(format!(
                "{} records finished blocks, but their data is missing: neither {} nor {} exists",
                job.map.display(),
                partial.display(),
                job.output.display()
            )));
        }
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(!needs_data)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&partial)
        .map_err(|e| crate::output::create_error(&partial, e))?;
    let meta = f.metadata().map_err(|e| io_err("reading the metadata of", &partial, e))?;
    if !meta.is_file() {
        return Err(unsafe_err(format!("{} is not a regular file", partial.display())));
    }
    if meta.len() > size {
        return Err(crate::Error::invalid(format!(
            "{} is larger ({} bytes) than the source ({size} bytes): from another rescue?",
            partial.display(),
            meta.len()
        )));
    }
    f.set_len(size).map_err(|e| io_err("sizing", &partial, e))?;
    Ok((f, partial))
}

/// Run a rescue. `enough`, when given, is asked whether the bytes read so far suffice (the
/// error-correction data can restore the rest; see [`Hooks::enough`] for its second argument);
/// the rescue then stops early and the partial output stays for the caller to repair.
///
/// # Errors
/// `Unsafe` (an existing map without `resume`, an existing output without `force`, an output
/// that is the source), `Corrupt` (a map that does not parse), `Io`.
pub fn run(job: &Job, enough: Option<EnoughFn<'_>>, run: &mut Run<'_>) -> crate::Result<Outcome> {
    for p in [&job.output, &job.map] {
        if crate::output::same_file(p, &job.source) {
            return Err(unsafe_err(format!("{} is the source itself; refusing to write over it", p.display())));
        }
    }
    // Continuing a ddrescue run: its output is the image being completed, so finishing replaces
    // it. Known from the missing partial file (first loopkit run on that map) or from the
    // comment loopkit then writes into the map.
    let partial_exists = std::fs::symlink_metadata(job.partial_path()).is_ok();
    let resuming_ddrescue_output = job.resume
        && std::fs::metadata(&job.output).is_ok_and(|m| m.is_file())
        && (!partial_exists
            || read_map_text(&job.map)
                .is_ok_and(|t| t.lines().any(|l| l.starts_with(&format!("# {CONTINUES_DDRESCUE}")))));
    if !resuming_ddrescue_output {
        crate::output::check_output(&job.output, &[&job.source], job.force)?;
    }
    let dev = DeviceSource::open(&job.source)?;
    let size = dev.size();
    let faults = job.test_mode.as_deref().map(|p| read_map(p, size)).transpose()?;
    let sector = job.sector.unwrap_or(if dev.is_block_device { dev.logical_block } else { 2048 });
    if sector == 0 || !sector.is_multiple_of(512) || sector > 1 << 20 {
        return Err(crate::Error::invalid(format!("sector size {sector}: must be a multiple of 512, at most 1 MiB")));
    }
    if dev.is_block_device && !sector.is_multiple_of(dev.logical_block) {
        return Err(crate::Error::invalid(format!(
            "sector size {sector} is not a multiple of the device's logical block {}",
            dev.logical_block
        )));
    }
    let direct = dev.is_direct();
    let map = load_map(job, size)?;
    let (out, partial) = open_partial(job, &map, size)?;
    let mut opts = Options::for_device(sector, size);
    opts.retries = job.retries;
    if let Some(rate) = job.min_rate.filter(|r| *r > 0) {
        opts.slow_read = Some(std::time::Duration::from_secs_f64(opts.cluster as f64 / rate as f64));
    }
    let mut header = vec![
        format!("Mapfile. Created by loopkit {} (GNU ddrescue format)", env!("CARGO_PKG_VERSION")),
        format!("Source: {}", job.source.display()),
    ];
    if resuming_ddrescue_output {
        header.push(format!("{CONTINUES_DDRESCUE} {}", job.output.display()));
    }
    let mut hooks = FileHooks { job, header, enough };
    let (stop, map, stats) = match faults {
        Some(faults) => drive(&mut Simulated { inner: dev, faults }, &out, map, opts, &mut hooks, run)?,
        None => drive(&mut { dev }, &out, map, opts, &mut hooks, run)?,
    };
    out.sync_all().map_err(|e| crate::Error::io(format!("syncing {}", partial.display()), e))?;
    let mut outcome = Outcome { stop, map, stats, sector, direct, data_path: partial.clone(), completed: false };
    if stop == Stop::Complete {
        finish(job, &partial, resuming_ddrescue_output)?;
        outcome.data_path = job.output.clone();
        outcome.completed = true;
    }
    Ok(outcome)
}

fn drive<S: RescueSource>(
    src: &mut S,
    out: &File,
    map: RescueMap,
    opts: Options,
    hooks: &mut dyn Hooks,
    run: &mut Run<'_>,
) -> crate::Result<(Stop, RescueMap, Stats)> {
    let mut r = Rescue::new(src, out, map, opts)?;
    let stop = r.run(hooks, run)?;
    Ok((stop, r.map, r.stats))
}

/// Rename the complete partial output into place (over ddrescue's output when continuing it).
pub fn finish(job: &Job, partial: &Path, replace: bool) -> crate::Result<()> {
    let renamed = if replace || job.force {
        std::fs::rename(partial, &job.output)
    } else {
        crate::output::no_replace_rename(partial, &job.output)
    };
    renamed.map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            unsafe_err(format!("{} appeared during the rescue; give --force to replace it", job.output.display()))
        } else {
            crate::Error::io(format!("renaming {} to {}", partial.display(), job.output.display()), e)
        }
    })?;
    crate::output::sync_dir_of(&job.output)
}
