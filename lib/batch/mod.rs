//! Batch verification of collections (`loopkit verify PATH...`): find the images
//! ([`walk`]), check several at once — at most `jobs`, and never more than
//! `readers_per_device` (default 1) on one physical disk ([`device`]) — each exactly as the
//! single-image `verify` does, with per-image secrets ([`secrets`]), a per-image time budget that
//! turns a runaway image into a finding, and the fixity catalog ([`catalog`]): skip images
//! checked recently and unchanged, report payload digests that changed since (bit rot), resume
//! an interrupted run. The CLI only parses flags and draws; typed results ([`Finished`]) reach
//! it through [`Observer`] as each image finishes, and `report::batch` turns them into documents.

pub mod catalog;
pub mod device;
pub mod secrets;
pub mod walk;

use crate::detect::Secrets;
use crate::finding::Finding;
use crate::image::{Content, OpenOptions};
use crate::progress::{Interrupt, Progress, Run};
use catalog::{CatalogRecord, CatalogRun};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// How long a job may run on after its time budget was spent and it was told to stop, before
/// it is abandoned (its thread left to finish on its own) and the batch moves on.
const ABANDON_GRACE: Duration = Duration::from_secs(5);

/// Which images the catalog lets the batch skip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipPolicy {
    /// Skip images verified (verdict `verified`) within this many days and unchanged since.
    pub since_days: Option<u64>,
    /// Skip images unchanged (size, mtime, device, inode) since their last record, when that
    /// record says `verified`, whatever its age.
    pub changed_only: bool,
    /// Skip images already recorded by the catalog's last, unfinished run.
    pub resume: bool,
}

/// Everything a batch needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Images checked at once.
    pub jobs: usize,
    /// Images read at once from one physical disk.
    pub readers_per_device: usize,
    /// Per-image wall-time limit.
    pub time_budget: Option<Duration>,
    /// Parameters for opening every image (constraints, KDF caps).
    pub open: OpenOptions,
    /// Verification options (workers per image).
    pub verify: crate::verify::Options,
    /// Secrets for images no `secret_map` rule matches.
    pub secrets: Secrets,
    /// `--secrets FILE`.
    pub secret_map: Option<secrets::SecretMap>,
    /// `--catalog FILE`.
    pub catalog: Option<PathBuf>,
    /// What the catalog lets us skip.
    pub skip: SkipPolicy,
    /// The version (and git revision) recorded in the catalog.
    pub version: String,
}

/// What became of one image in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Verified: no error-severity problems.
    Verified,
    /// Checked, and problems were found (exit 1).
    Problems,
    /// Could not be checked: unreadable, needs a secret, no parameters match, time budget (exit 2).
    Failed,
    /// Not an image (nothing recognised by content), or skipped by `--since-days`/`--changed-only`
    /// /`--resume` (the row's `message` says which).
    Skipped,
    /// The batch was interrupted before this image finished.
    Interrupted,
}

impl Verdict {
    /// The stable spelling (`verified`, `problems`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Problems => "problems",
            Verdict::Failed => "failed",
            Verdict::Skipped => "skipped",
            Verdict::Interrupted => "interrupted",
        }
    }
}

/// Counts by verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Images verified.
    pub verified: u64,
    /// Images with problems.
    pub problems: u64,
    /// Images that could not be checked.
    pub failed: u64,
    /// Files skipped.
    pub skipped: u64,
    /// Images not finished because the batch was interrupted.
    pub interrupted: u64,
}

impl Counts {
    /// Count one more `v`.
    pub fn add(&mut self, v: Verdict) {
        match v {
            Verdict::Verified => self.verified += 1,
            Verdict::Problems => self.problems += 1,
            Verdict::Failed => self.failed += 1,
            Verdict::Skipped => self.skipped += 1,
            Verdict::Interrupted => self.interrupted += 1,
        }
    }
}

/// An image checked as single-image `verify` checks it.
pub struct Checked {
    /// The opened image.
    pub image: crate::image::Opened,
    /// The length of the passphrase that opened it (for the advice on short passphrases).
    pub pass_len: Option<usize>,
    /// What verification found (with the catalog's findings added, such as a changed payload).
    pub found: crate::verify::Outcome,
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checked").field("image", &self.image.path).field("found", &self.found).finish_non_exhaustive()
    }
}

/// Why an image could not be checked.
#[derive(Debug)]
pub enum Failure {
    /// Opening or checking it failed.
    Error(crate::Error),
    /// Its time budget was spent (the message says how long it ran).
    TimeBudget(String),
    /// Its job could not start (no thread).
    NotStarted(String),
}

/// What became of one file.
#[derive(Debug)]
pub enum ImageResult {
    /// Checked: verified, or with problems.
    Checked(Box<Checked>),
    /// Could not be checked.
    Failed(Failure),
    /// Not an image, or skipped by the catalog (why).
    Skipped(String),
    /// Not finished because the batch was interrupted.
    Interrupted {
        /// What happened (`interrupted`, `not started: …`).
        message: String,
        /// Stopped by the batch (or never started) rather than ending on its own: its row lists
        /// `interrupted` as its problem code.
        coded: bool,
    },
}

/// One file, finished.
#[derive(Debug)]
pub struct Finished {
    /// Position in the order found.
    pub index: usize,
    /// The image path as found.
    pub image: PathBuf,
    /// Wall time spent on it.
    pub elapsed_ms: u64,
    /// What became of it.
    pub result: ImageResult,
}

impl Finished {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        match &self.result {
            ImageResult::Checked(c) if c.found.ok() => Verdict::Verified,
            ImageResult::Checked(_) => Verdict::Problems,
            ImageResult::Failed(_) => Verdict::Failed,
            ImageResult::Skipped(_) => Verdict::Skipped,
            ImageResult::Interrupted { .. } => Verdict::Interrupted,
        }
    }
}

/// How the batch went as a whole (the rows are the [`Finished`] files the observer was given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    /// The batch was interrupted (SIGINT).
    pub interrupted: bool,
    /// Counts by verdict.
    pub counts: Counts,
    /// Images checked at once (at most).
    pub jobs: usize,
    /// Wall time of the batch.
    pub elapsed_ms: u64,
}

/// Receives what the batch does (the CLI draws progress and prints JSON lines with it).
pub trait Observer {
    /// A progress sink for a job about to check `image` (moved to the job's thread).
    fn progress(&mut self, image: &Path) -> Box<dyn Progress>;
    /// An image finished (called in the order they finish).
    fn finished(&mut self, f: &Finished);
    /// A remark (catalog resumed, a job abandoned...).
    fn note(&mut self, _msg: &str) {}
}

/// What the batch found, before it ran: the files, the `.ecc` files set aside, and the files
/// left out.
pub use walk::Found;

struct Pending {
    index: usize,
    path: PathBuf,
    device: String,
    previous: Option<CatalogRecord>,
}

struct Running {
    index: usize,
    path: PathBuf,
    device: String,
    started: Instant,
    interrupt: Interrupt,
    told_to_stop: Option<Instant>,
    timed_out: bool,
}

struct JobResult {
    finished: Finished,
    record: Option<CatalogRecord>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Run the batch over `found.files`: every file reaches `observer` as [`Finished`] (skipped,
/// checked, failed or interrupted); returns the totals.
///
/// # Errors
/// Only when the catalog cannot be read or written; every per-image failure is a result.
pub fn run(found: &Found, cfg: &Config, observer: &mut dyn Observer, interrupt: &Interrupt) -> crate::Result<Totals> {
    let t0 = Instant::now();
    let (tx, rx) = mpsc::channel::<JobResult>();
    let mut b = Batch {
        cfg,
        observer,
        interrupt,
        writer: None,
        counts: Counts::default(),
        queue: Default::default(),
        running: Vec::new(),
        busy: HashMap::new(),
        run_id: String::new(),
        tx,
    };
    b.open_catalog(found)?;
    loop {
        b.start_jobs()?;
        if b.running.is_empty() && (b.queue.is_empty() || interrupt.is_set()) {
            break;
        }
        // Wait for a result, watching budgets and Ctrl-C.
        if let Ok(r) = rx.recv_timeout(Duration::from_millis(50)) {
            b.collect(r)?;
        }
        b.watch()?;
    }
    b.summary(t0)
}

/// One batch run: the scheduler's state.
struct Batch<'a> {
    cfg: &'a Config,
    observer: &'a mut dyn Observer,
    interrupt: &'a Interrupt,
    writer: Option<catalog::Writer>,
    counts: Counts,
    queue: std::collections::VecDeque<Pending>,
    running: Vec<Running>,
    /// Jobs running per physical disk.
    busy: HashMap<String, usize>,
    run_id: String,
    tx: mpsc::Sender<JobResult>,
}

impl Batch<'_> {
    /// Read the catalog (if any), start or resume its run, and queue every file it does not
    /// let us skip (the skipped ones are reported at once).
    fn open_catalog(&mut self, found: &Found) -> crate::Result<()> {
        let cfg = self.cfg;
        let contents = match &cfg.catalog {
            Some(p) => {
                self.writer = Some(catalog::Writer::open(p)?);
                catalog::read(p)?
            }
            None => catalog::Contents::default(),
        };
        if contents.unreadable > 0
            && let Some(p) = &cfg.catalog
        {
            let at: Vec<String> = contents.unreadable_line_numbers.iter().map(u64::to_string).collect();
            self.observer.note(&format!(
                "catalog {}: {} line(s) are not catalog records (torn by an interrupted writer, invalid UTF-8 or \
                 foreign; line {}); skipped",
                p.display(),
                contents.unreadable,
                at.join(", ")
            ));
        }
        let latest = contents.latest();
        let resume_run = if cfg.skip.resume { contents.unfinished_run() } else { None };
        let resumed: std::collections::HashSet<String> = match &resume_run {
            Some(r) => contents.records().filter(|x| &x.run == r).map(|x| x.path.clone()).collect(),
            None => Default::default(),
        };
        if cfg.skip.resume {
            match &resume_run {
                Some(r) => self.observer.note(&format!("resuming run {r}: {} image(s) already checked", resumed.len())),
                None => self.observer.note("--resume: the catalog has no unfinished run; checking everything"),
            }
        }
        self.run_id = resume_run.clone().unwrap_or_else(|| format!("{}-{}", now_secs(), std::process::id()));
        if let Some(w) = &self.writer
            && resume_run.is_none()
        {
            let start =
                CatalogRun { loopkit_catalog_run: 1, run: self.run_id.clone(), event: "start".into(), at: now_secs() };
            w.append(&start)?;
        }
        // Decide what to check; the catalog may skip some.
        for (index, path) in found.files.iter().enumerate() {
            let ident = catalog::Identity::of(path).ok();
            let previous = ident.as_ref().and_then(|i| latest.get(&i.path)).cloned();
            let skip_reason = match (&ident, &previous) {
                (Some(i), Some(prev)) => skip_reason(cfg.skip, i, prev, &resumed),
                _ => None,
            };
            if let Some(why) = skip_reason {
                let finished =
                    Finished { index, image: path.clone(), elapsed_ms: 0, result: ImageResult::Skipped(why) };
                self.finish(JobResult { finished, record: None })?;
                continue;
            }
            self.queue.push_back(Pending { index, path: path.clone(), device: device::key_for(path), previous });
        }
        Ok(())
    }

    /// Report `r` and record it in the catalog.
    fn finish(&mut self, r: JobResult) -> crate::Result<()> {
        if let (Some(w), Some(rec)) = (&self.writer, &r.record) {
            w.append(rec)?;
        }
        self.counts.add(r.finished.verdict());
        self.observer.finished(&r.finished);
        Ok(())
    }

    fn release(&mut self, device: &str) {
        if let Some(b) = self.busy.get_mut(device) {
            *b = b.saturating_sub(1);
        }
    }

    /// Start what may start: at most `jobs` at once, `readers_per_device` per disk.
    fn start_jobs(&mut self) -> crate::Result<()> {
        let (jobs, per_device) = (self.cfg.jobs.max(1), self.cfg.readers_per_device.max(1));
        while !self.interrupt.is_set() && self.running.len() < jobs {
            let busy = &self.busy;
            let Some(pos) = self.queue.iter().position(|p| busy.get(&p.device).copied().unwrap_or(0) < per_device)
            else {
                break;
            };
            let Some(p) = self.queue.remove(pos) else { break };
            *self.busy.entry(p.device.clone()).or_default() += 1;
            let job_interrupt = Interrupt::new();
            let progress = self.observer.progress(&p.path);
            let job = Job {
                index: p.index,
                path: p.path.clone(),
                previous: p.previous,
                cfg: self.cfg.clone(),
                interrupt: job_interrupt.clone(),
                run: self.run_id.clone(),
            };
            let tx = self.tx.clone();
            let spawned = std::thread::Builder::new().name(format!("verify-{}", p.index)).spawn(move || {
                let r = job.run(progress);
                let _ = tx.send(r);
            });
            if let Err(e) = spawned {
                let result = ImageResult::Failed(Failure::NotStarted(format!("cannot start a thread: {e}")));
                let finished = Finished { index: p.index, image: p.path.clone(), elapsed_ms: 0, result };
                self.finish(JobResult { finished, record: None })?;
                self.release(&p.device);
                continue;
            }
            self.running.push(Running {
                index: p.index,
                path: p.path,
                device: p.device,
                started: Instant::now(),
                interrupt: job_interrupt,
                told_to_stop: None,
                timed_out: false,
            });
        }
        Ok(())
    }

    /// A job's result (one of an abandoned job was already reported: ignored).
    fn collect(&mut self, mut r: JobResult) -> crate::Result<()> {
        let Some(pos) = self.running.iter().position(|j| j.index == r.finished.index) else { return Ok(()) };
        let j = self.running.swap_remove(pos);
        self.release(&j.device);
        if j.timed_out {
            r = over_budget(&j, self.cfg.time_budget);
        } else if r.finished.verdict() == Verdict::Interrupted {
            r.record = None;
        }
        self.finish(r)
    }

    /// Pass Ctrl-C on to the jobs, stop those over their time budget, and abandon those that
    /// did not stop within [`ABANDON_GRACE`] of being asked.
    fn watch(&mut self) -> crate::Result<()> {
        let now = Instant::now();
        let mut abandoned = Vec::new();
        for (k, j) in self.running.iter_mut().enumerate() {
            if self.interrupt.is_set() && j.told_to_stop.is_none() {
                j.interrupt.trigger();
                j.told_to_stop = Some(now);
            }
            if let Some(b) = self.cfg.time_budget
                && !j.timed_out
                && now.duration_since(j.started) > b
            {
                j.timed_out = true;
                j.interrupt.trigger();
                j.told_to_stop = Some(now);
            }
            if j.told_to_stop.is_some_and(|t| now.duration_since(t) > ABANDON_GRACE) {
                abandoned.push(k);
            }
        }
        for k in abandoned.into_iter().rev() {
            let j = self.running.swap_remove(k);
            self.release(&j.device);
            self.observer.note(&format!(
                "{}: did not stop within {} s of being asked; abandoned (its thread finishes on its own)",
                j.path.display(),
                ABANDON_GRACE.as_secs()
            ));
            let r = if j.timed_out {
                over_budget(&j, self.cfg.time_budget)
            } else {
                let result = ImageResult::Interrupted { message: "interrupted".into(), coded: true };
                let finished =
                    Finished { index: j.index, image: j.path.clone(), elapsed_ms: ms(j.started.elapsed()), result };
                JobResult { finished, record: None }
            };
            self.finish(r)?;
        }
        Ok(())
    }

    /// Files never started (interrupted) as such, the catalog run closed, the totals.
    fn summary(mut self, t0: Instant) -> crate::Result<Totals> {
        for p in std::mem::take(&mut self.queue) {
            let result =
                ImageResult::Interrupted { message: "not started: the batch was interrupted".into(), coded: true };
            self.finish(JobResult {
                finished: Finished { index: p.index, image: p.path, elapsed_ms: 0, result },
                record: None,
            })?;
        }
        let interrupted = self.interrupt.is_set();
        if let Some(w) = &self.writer
            && !interrupted
        {
            w.append(&CatalogRun { loopkit_catalog_run: 1, run: self.run_id, event: "end".into(), at: now_secs() })?;
        }
        Ok(Totals { interrupted, counts: self.counts, jobs: self.cfg.jobs.max(1), elapsed_ms: ms(t0.elapsed()) })
    }
}

/// The exit code of a batch: 130 interrupted, 2 any image could not be checked, 1 any
/// problem, 0 all verified.
pub fn exit_code(s: &Totals) -> u8 {
    if s.interrupted {
        130
    } else if s.counts.failed > 0 {
        2
    } else if s.counts.problems > 0 {
        1
    } else {
        0
    }
}

fn skip_reason(
    p: SkipPolicy,
    i: &catalog::Identity,
    prev: &CatalogRecord,
    resumed: &std::collections::HashSet<String>,
) -> Option<String> {
    if p.resume && resumed.contains(&i.path) {
        return Some(format!("already checked by the interrupted run {} ({})", prev.run, prev.verdict.as_str()));
    }
    let unchanged_ok = i.unchanged_since(prev) && prev.verdict == Verdict::Verified;
    if let Some(days) = p.since_days {
        let age = now_secs().saturating_sub(prev.verified_at);
        if unchanged_ok && age < days.saturating_mul(86_400) {
            return Some(format!("verified {} and unchanged since (--since-days {days})", prev.verified_at_utc));
        }
    } else if p.changed_only && unchanged_ok {
        return Some(format!("unchanged since it was verified {} (--changed-only)", prev.verified_at_utc));
    }
    None
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn over_budget(j: &Running, budget: Option<Duration>) -> JobResult {
    let secs = budget.map_or(0.0, |b| b.as_secs_f64());
    let msg = format!(
        "time budget of {secs} s spent: stopped after {:.1} s (a runaway image; check it alone, without \
         --time-budget)",
        j.started.elapsed().as_secs_f64()
    );
    let result = ImageResult::Failed(Failure::TimeBudget(msg));
    JobResult {
        finished: Finished { index: j.index, image: j.path.clone(), elapsed_ms: ms(j.started.elapsed()), result },
        record: None,
    }
}

/// One image, on its own thread.
struct Job {
    index: usize,
    path: PathBuf,
    previous: Option<CatalogRecord>,
    cfg: Config,
    interrupt: Interrupt,
    run: String,
}

impl Job {
    fn run(self, mut progress: Box<dyn Progress>) -> JobResult {
        let t0 = Instant::now();
        let r = self.check(&mut *progress, t0);
        progress.finish();
        r
    }

    fn check(&self, progress: &mut dyn Progress, t0: Instant) -> JobResult {
        let done = |result: ImageResult| Finished {
            index: self.index,
            image: self.path.clone(),
            elapsed_ms: ms(t0.elapsed()),
            result,
        };
        let checked = match self.open_and_verify(progress) {
            Ok(Some(c)) => c,
            Ok(None) => {
                let why = "not an image: no file system, LUKS header, dvdisaster data or ciphertext recognised";
                let finished = Finished { elapsed_ms: 0, ..done(ImageResult::Skipped(why.into())) };
                return JobResult { finished, record: None };
            }
            Err(e) if e.kind() == crate::ErrorKind::Interrupted || self.interrupt.is_set() => {
                let result = ImageResult::Interrupted { message: "interrupted".into(), coded: false };
                return JobResult { finished: done(result), record: None };
            }
            Err(e) => {
                let finished = done(ImageResult::Failed(Failure::Error(e)));
                let record = self.record(&finished);
                return JobResult { finished, record };
            }
        };
        let finished = done(ImageResult::Checked(Box::new(checked)));
        let record = self.record(&finished);
        JobResult { finished, record }
    }

    /// Open the image (with the secrets the map gives it, when it needs any) and verify it as
    /// single-image `verify` does; `None` when it is not an image.
    fn open_and_verify(&self, progress: &mut dyn Progress) -> crate::Result<Option<Checked>> {
        let path = &self.path;
        let mut opts = self.cfg.open.clone();
        opts.kdf.interrupt = self.interrupt.clone();
        // Recognise by content first, without secrets (a plain image needs none).
        let first = crate::image::open(path, &Secrets::default(), &opts)?;
        let needs_secret = match &first.content {
            Content::NeedsSecret { looks_random } => {
                if *looks_random != Some(true) && first.ecc.is_none() {
                    return Ok(None);
                }
                true
            }
            Content::Luks { .. } => true,
            _ => false,
        };
        let mut secrets = Secrets::default();
        let opened = if needs_secret {
            secrets = match self.cfg.secret_map.as_ref().map(|m| m.secrets_for(path)).transpose()? {
                Some(Some(s)) => s,
                _ => self.cfg.secrets.clone(),
            };
            if secrets.is_empty() { first } else { crate::image::open(path, &secrets, &opts)? }
        } else {
            first
        };
        let mut found =
            crate::verify::verify_files(&opened, self.cfg.verify, None, &mut Run::new(progress, &self.interrupt))?;
        if let Some(f) = self.payload_changed(found.digest.as_ref()) {
            found.problems.push(f);
        }
        Ok(Some(Checked { image: opened, pass_len: secrets::advice_len(&secrets), found }))
    }

    /// The finding when the payload digest differs from the one the catalog recorded.
    fn payload_changed(&self, digest: Option<&crate::verify::PayloadDigest>) -> Option<Finding> {
        let prev = self.previous.as_ref()?;
        let before = prev.payload_sha256.as_ref()?;
        let now = crate::bytes::hex(&digest?.sha256);
        if *before == now {
            return None;
        }
        let modified = catalog::Identity::of(&self.path).is_ok_and(|i| !i.unchanged_since(prev));
        Some(Finding::error(
            "catalog.payload-changed",
            format!(
                "the payload SHA-256 changed since it was checked {} ({} then, {} now){}",
                prev.verified_at_utc,
                before,
                now,
                if modified {
                    "; the file was modified since (size, mtime or inode differ)"
                } else {
                    "; the file's size and mtime did not change: bit rot or an unrecorded write"
                }
            ),
        ))
    }

    /// The catalog record for a checked image, or one that failed (None without a catalog).
    fn record(&self, f: &Finished) -> Option<CatalogRecord> {
        self.cfg.catalog.as_ref()?;
        let id = catalog::Identity::of(&self.path).ok()?;
        let at = now_secs();
        let (checked, problems) = match &f.result {
            ImageResult::Checked(c) => {
                (Some(&c.found), c.found.problems.iter().filter(|p| p.is_error()).map(|p| p.code.to_string()).collect())
            }
            ImageResult::Failed(Failure::Error(e)) => (None, vec![e.kind().name().to_string()]),
            _ => return None,
        };
        let extra = damage_fields(
            match &f.result {
                ImageResult::Checked(c) => Some(&**c),
                _ => None,
            },
            id.size_bytes,
        );
        Some(CatalogRecord {
            loopkit_catalog: 1,
            path: id.path,
            size_bytes: id.size_bytes,
            mtime_ns: id.mtime_ns,
            device: id.device,
            inode: id.inode,
            payload_sha256: checked.and_then(|c| c.digest.as_ref()).map(|d| crate::bytes::hex(&d.sha256)),
            ecc: checked
                .and_then(|c| c.ecc.as_ref())
                .map(|e| if e.ok() { "ok".to_string() } else { "damaged".to_string() }),
            manifest_digest: checked.and_then(|c| c.files.as_ref()).map(manifest_digest),
            verdict: f.verdict(),
            problems,
            loopkit_version: self.cfg.version.clone(),
            verified_at: at,
            verified_at_utc: crate::bytes::rfc3339(at),
            run: self.run.clone(),
            elapsed_ms: f.elapsed_ms,
            scheme: extra.scheme,
            filesystem: extra.filesystem,
            bad_sectors: extra.bad_sectors,
            files_damaged: extra.files_damaged,
            files_repairable: extra.files_repairable,
            files_lost: extra.files_lost,
            damaged_files: extra.damaged_files,
            sector_map: extra.sector_map,
        })
    }
}

/// The record fields the report's table, sector map and damaged-file list show.
#[derive(Debug, Default)]
struct Extra {
    scheme: Option<String>,
    filesystem: Option<String>,
    bad_sectors: Option<u64>,
    files_damaged: Option<u64>,
    files_repairable: Option<u64>,
    files_lost: Option<u64>,
    damaged_files: Option<Vec<catalog::DamagedFile>>,
    sector_map: Option<catalog::SectorBins>,
}

/// [`Extra`] of a checked image (all absent for one that could not be checked).
fn damage_fields(c: Option<&Checked>, size_bytes: u64) -> Extra {
    use crate::image::Content;
    let mut r = Extra::default();
    let Some(c) = c else { return r };
    r.scheme = match &c.image.content {
        Content::Plain { .. } => Some("plain".into()),
        Content::Legacy(o) => o.found.as_ref().map(|f| f.params.scheme.name().to_string()),
        Content::Luks { header, .. } => Some(format!("luks{}", header.version)),
        Content::LuksUnlocked(u) => Some(format!("luks{}", u.luks.header.version)),
        Content::UnknownPlain { .. } | Content::NeedsSecret { .. } => None,
    };
    r.filesystem = c.image.filesystem().map(|f| f.kind.to_string());
    let read = c.found.digest.is_some() || c.found.ecc.is_some();
    let d = c.found.damage.as_ref();
    let sector_bytes = d.map_or(if c.image.ecc.is_some() { 2048 } else { 512 }, |d| d.medium_sector_bytes);
    let ranges = d.map_or(&[][..], |d| &d.ranges[..]);
    r.sector_map = Some(catalog::SectorBins::new(size_bytes, sector_bytes, read, ranges));
    if !read {
        return r;
    }
    r.bad_sectors = Some(catalog::damaged_sectors(ranges, sector_bytes));
    let fs_read = match d {
        Some(d) => d.block_bytes.is_some(),
        None => r.filesystem.is_some(),
    };
    if fs_read {
        let (n, rep, lost) = d.map_or((0, 0, 0), crate::damage::Damage::counts);
        r.files_damaged = Some(n as u64);
        r.files_repairable = Some(rep as u64);
        r.files_lost = Some(lost as u64);
        let mut list = Vec::new();
        let mut bytes = 0usize;
        for f in d.map_or(&[][..], |d| &d.files[..]) {
            if f.verdict == crate::damage::Verdict::Intact {
                continue;
            }
            let path = crate::manifest::escape(&f.path);
            bytes = bytes.saturating_add(path.len() + 32);
            if bytes > catalog::MAX_DAMAGED_FILES_BYTES {
                break;
            }
            list.push(catalog::DamagedFile { path, verdict: f.verdict });
        }
        r.damaged_files = Some(list);
    }
    r
}

/// SHA-256 over the file-level check's counts and the sorted paths it found missing, extra or
/// changed (the catalog's `manifest_digest`).
fn manifest_digest(f: &crate::manifest::FilesCheck) -> String {
    use sha2::Digest;
    let d = f.diff.clone().unwrap_or_default();
    let changed: Vec<String> = d.changed.into_iter().map(|c| c.path).collect();
    let mut paths: Vec<&String> = d.missing.iter().chain(&d.extra).chain(&changed).collect();
    paths.sort();
    let mut h = sha2::Sha256::new();
    h.update(format!("{} {} {}\n", f.count, f.bytes, f.problems).as_bytes());
    for p in paths {
        h.update(p.as_bytes());
        h.update(b"\n");
    }
    crate::bytes::hex(&h.finalize())
}

/// The default number of jobs: one per physical disk holding the files, at most the cores.
pub fn default_jobs(files: &[PathBuf]) -> usize {
    let disks: std::collections::HashSet<String> = files.iter().map(|p| device::key_for(p)).collect();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    disks.len().clamp(1, cores)
}

/// Parse a duration: `90`, `90s`, `10m`, `1h`, `1.5h`.
///
/// # Errors
/// `InvalidInput` naming `what`.
pub fn parse_duration(s: &str, what: &str) -> crate::Result<Duration> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1.0),
        Some((i, 'm')) => (&t[..i], 60.0),
        Some((i, 'h')) => (&t[..i], 3600.0),
        _ => (t, 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| crate::Error::invalid(format!("{what}: {s:?} is not a duration (e.g. 90s, 10m, 1h)")))?;
    let secs = v * mult;
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        return Err(crate::Error::invalid(format!("{what}: {s:?} is out of range")));
    }
    Ok(Duration::from_secs_f64(secs))
}
