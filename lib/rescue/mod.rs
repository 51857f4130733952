//! Rescue-reading a failing disc or device: read the good zones first, skip past failing ones,
//! bisect what is left unread, trim and scrape the failed areas sector by sector, retry the bad
//! sectors a bounded number of times — and stop as soon as a caller-supplied check (the
//! error-correction data can restore the rest) says enough has been read. Progress is kept in a
//! GNU ddrescue map ([`mapfile`]), so a rescue can be continued after any interruption, by
//! loopkit or by ddrescue.
//!
//! The algorithm only sees a [`RescueSource`] (reads that may fail or be slow) and an output
//! file, so the tests drive it with a fault-injecting source.
//!
//! ```text
//!  copy      forward, one cluster per read; on an error or a slow read skip ahead (the skip
//!            doubles while errors continue); the failed cluster becomes non-trimmed
//!  bisect    the largest non-tried interval, read forward from its middle until an error or
//!            its end; repeat until nothing is non-tried
//!  trim      each non-trimmed block: sector by sector from its start until a sector fails,
//!            then from its end backwards; the middle becomes non-scraped
//!  scrape    every non-scraped sector, one read each
//!  retry     the bad sectors, `retries` more times
//! ```

pub mod ecc;
pub mod job;
pub mod mapfile;

use crate::progress::Run;
use mapfile::{Phase, RescueMap, Status};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::time::{Duration, Instant};

/// Where a rescue reads from: a drive, a failing device, a file.
pub trait RescueSource {
    /// Bytes readable.
    fn size(&self) -> u64;
    /// Read up to `buf.len()` bytes at `pos` (sector-aligned, inside the size). `Ok(n)` with `n <
    /// buf.len()` means the bytes from `pos + n` on failed (or the device ended early).
    ///
    /// # Errors
    /// The read failed from its first byte.
    fn read_at(&mut self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
}

/// How to read.
#[derive(Debug, Clone)]
pub struct Options {
    /// The device's sector: the unit of trimming, scraping and of the map (2048 for optical
    /// discs).
    pub sector: u64,
    /// Bytes per read in the copy and bisect phases (a multiple of `sector`).
    pub cluster: u64,
    /// The first skip after an error in the copy phase; it doubles while errors continue.
    pub skip_min: u64,
    /// The largest skip.
    pub skip_max: u64,
    /// A read slower than this counts as a failing zone in the copy phase (its data is kept).
    pub slow_read: Option<Duration>,
    /// Extra passes over bad sectors after scraping.
    pub retries: u32,
    /// Save the map at least this often.
    pub save_every: Duration,
}

impl Options {
    /// Defaults for a device with `sector`-byte sectors and `size` bytes: 32-sector clusters,
    /// skips from 64 KiB up to 1 % of the size (at least 1 MiB), no slow-read limit, no retries.
    pub fn for_device(sector: u64, size: u64) -> Options {
        let sector = sector.max(1);
        let cluster = sector * 32;
        Options {
            sector,
            cluster,
            skip_min: (64 << 10u64).max(cluster),
            skip_max: (size / 100).max(1 << 20).next_multiple_of(sector),
            slow_read: None,
            retries: 0,
            save_every: Duration::from_secs(10),
        }
    }
}

/// Counters of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Read requests sent to the source.
    pub reads: u64,
    /// Of which failed (entirely or partly).
    pub failed_reads: u64,
    /// Of which were slower than [`Options::slow_read`].
    pub slow_reads: u64,
    /// Bytes newly finished by this run.
    pub bytes_rescued: u64,
    /// Bytes asked of the source (all reads, good or not).
    pub bytes_requested: u64,
    /// Bytes skipped ahead in the copy phase.
    pub bytes_skipped: u64,
    /// The phases this run went through, in order (`copy`, `bisect`, `trim`, `scrape`, `retry`).
    pub phases: Vec<&'static str>,
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every byte is finished.
    Complete,
    /// The caller's check said the data read so far is enough (the error-correction data can
    /// restore the rest).
    Enough,
    /// Every phase and retry ran; bad sectors remain.
    Exhausted,
    /// Interrupted (the map is saved; the rescue can be resumed).
    Interrupted,
}

impl Stop {
    /// Stable name for JSON.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Complete => "complete",
            Stop::Enough => "enough-for-ecc",
            Stop::Exhausted => "passes-exhausted",
            Stop::Interrupted => "interrupted",
        }
    }
}

/// Hooks the caller plugs in.
pub trait Hooks {
    /// Whether the bytes finished so far suffice (e.g. every missing sector is correctable).
    /// Called after failing reads (`at_phase_end` false: an implementation may answer `false`
    /// to save time) and at the end of every phase (`at_phase_end` true: answer exactly).
    fn enough(&mut self, _map: &RescueMap, _at_phase_end: bool) -> bool {
        false
    }
    /// Persist the map (atomically).
    ///
    /// # Errors
    /// Saving failed; the rescue stops with this error.
    fn save(&mut self, map: &RescueMap) -> crate::Result<()>;
}

/// The rescue of one source into one output file.
pub struct Rescue<'a, S: RescueSource> {
    src: &'a mut S,
    out: &'a File,
    /// The map, updated as reads finish.
    pub map: RescueMap,
    opts: Options,
    /// Counters.
    pub stats: Stats,
    buf: crate::output::direct::AlignedBuf,
    last_save: Instant,
}

fn write_out(out: &File, buf: &[u8], pos: u64) -> crate::Result<()> {
    out.write_all_at(buf, pos).map_err(|e| crate::Error::io(format!("writing the rescued bytes at {pos}"), e))
}

impl<'a, S: RescueSource> Rescue<'a, S> {
    /// Start (or continue, with a loaded `map`) a rescue.
    ///
    /// # Errors
    /// `InvalidInput` for a cluster that is not a multiple of the sector, or a map of another
    /// size than the source.
    pub fn new(src: &'a mut S, out: &'a File, map: RescueMap, opts: Options) -> crate::Result<Self> {
        if opts.sector == 0 || opts.cluster == 0 || !opts.cluster.is_multiple_of(opts.sector) {
            return Err(crate::Error::invalid(format!(
                "cluster size {} must be a positive multiple of the sector size {}",
                opts.cluster, opts.sector
            )));
        }
        if map.size() != src.size() {
            return Err(crate::Error::invalid(format!(
                "the map covers {} bytes but the source has {}",
                map.size(),
                src.size()
            )));
        }
        let cap = usize::try_from(opts.cluster).map_err(|_| crate::Error::invalid("cluster size too large"))?;
        if cap > 64 << 20 {
            return Err(crate::Error::invalid("cluster size over 64 MiB"));
        }
        Ok(Rescue {
            src,
            out,
            map,
            opts,
            stats: Stats::default(),
            buf: crate::output::direct::AlignedBuf::new(cap),
            last_save: Instant::now(),
        })
    }

    /// Read `pos..pos+len` once (len ≤ cluster): the good part is written and finished, a failed
    /// rest gets `fail_as`. Returns (bytes good, whether it failed, whether it was slow).
    fn read_once(&mut self, pos: u64, len: u64, fail_as: Status) -> crate::Result<(u64, bool, bool)> {
        let len = len.min(self.map.size().saturating_sub(pos));
        let n = usize::try_from(len).map_err(|_| crate::Error::invalid("read too large"))?;
        self.buf.set_len(n);
        self.stats.reads += 1;
        self.stats.bytes_requested += len;
        let t = Instant::now();
        let got = match self.src.read_at(self.buf.as_mut_slice(), pos) {
            Ok(g) => g.min(n),
            Err(_) => 0,
        };
        let slow = self.opts.slow_read.is_some_and(|limit| t.elapsed() > limit);
        // Only whole sectors count as read (a short read inside a sector is a failed sector).
        let good = if got == n { got as u64 } else { (got as u64 / self.opts.sector) * self.opts.sector };
        if good > 0 {
            write_out(self.out, &self.buf.as_slice()[..good as usize], pos)?;
            let before = self.map.bytes_in(Status::Finished);
            self.map.set(pos, good, Status::Finished);
            self.stats.bytes_rescued += self.map.bytes_in(Status::Finished) - before;
        }
        let failed = good < len;
        if failed {
            self.stats.failed_reads += 1;
            self.map.set(pos + good, len - good, fail_as);
        }
        if slow {
            self.stats.slow_reads += 1;
        }
        self.map.current_pos = pos + good;
        Ok((good, failed, slow))
    }

    fn checkpoint(&mut self, hooks: &mut dyn Hooks, run: &Run<'_>) -> crate::Result<bool> {
        if self.last_save.elapsed() >= self.opts.save_every {
            hooks.save(&self.map)?;
            self.last_save = Instant::now();
        }
        Ok(run.interrupt.is_set())
    }

    /// Run every phase (skipping those with nothing to do) until complete, enough, exhausted
    /// or interrupted. The map is saved at the end in every case.
    ///
    /// # Errors
    /// Writing the output or saving the map failed.
    pub fn run(&mut self, hooks: &mut dyn Hooks, run: &mut Run<'_>) -> crate::Result<Stop> {
        run.progress.start("rescue", Some(self.map.size()));
        run.progress.advance(self.map.bytes_in(Status::Finished));
        let stop = self.run_phases(hooks, run);
        run.progress.finish();
        if matches!(stop, Ok(Stop::Complete)) {
            self.map.phase = Phase::Finished;
        }
        hooks.save(&self.map)?;
        stop
    }

    fn run_phases(&mut self, hooks: &mut dyn Hooks, run: &mut Run<'_>) -> crate::Result<Stop> {
        type PhaseFn<'a, S> = fn(&mut Rescue<'a, S>, &mut dyn Hooks, &mut Run<'_>) -> crate::Result<Option<Stop>>;
        let phases: [(&'static str, Status, PhaseFn<'a, S>); 4] = [
            ("copy", Status::NonTried, Self::copy),
            ("bisect", Status::NonTried, Self::bisect),
            ("trim", Status::NonTrimmed, Self::trim),
            ("scrape", Status::NonScraped, Self::scrape),
        ];
        if let Some(s) = self.verdict(hooks, run) {
            return Ok(s);
        }
        for (name, needs, f) in phases {
            if self.map.bytes_in(needs) == 0 {
                continue;
            }
            // The copy pass runs once: a map saved after it (or one from ddrescue beyond its
            // first pass) goes straight to bisecting what is left.
            if name == "copy" && !(self.map.phase == Phase::Copying && self.map.pass == 1) {
                continue;
            }
            self.stats.phases.push(name);
            run.progress.note(&format!("rescue: {name}"));
            if let Some(s) = f(self, hooks, run)? {
                return Ok(s);
            }
            if let Some(s) = self.verdict(hooks, run) {
                return Ok(s);
            }
        }
        for pass in 1..=self.opts.retries {
            if self.map.bytes_in(Status::Bad) == 0 {
                break;
            }
            self.map.phase = Phase::Retrying;
            self.map.pass = pass;
            self.stats.phases.push("retry");
            run.progress.note(&format!("rescue: retry {pass} of {}", self.opts.retries));
            for b in self.map.blocks_in(Status::Bad) {
                if let Some(s) = self.sectors(b.pos, b.size, Status::Bad, hooks, run)? {
                    return Ok(s);
                }
            }
        }
        Ok(self.verdict(hooks, run).unwrap_or(Stop::Exhausted))
    }

    fn verdict(&self, hooks: &mut dyn Hooks, run: &Run<'_>) -> Option<Stop> {
        if self.map.is_complete() {
            Some(Stop::Complete)
        } else if run.interrupt.is_set() {
            Some(Stop::Interrupted)
        } else if hooks.enough(&self.map, true) {
            Some(Stop::Enough)
        } else {
            None
        }
    }

    fn copy(&mut self, hooks: &mut dyn Hooks, run: &mut Run<'_>) -> crate::Result<Option<Stop>> {
        self.map.phase = Phase::Copying;
        self.map.pass = 1;
        let mut pos = self.map.current_pos.min(self.map.size()) / self.opts.sector * self.opts.sector;
        let mut skip = self.opts.skip_min;
        // Start at the first non-tried byte at or after the saved position.
        while pos < self.map.size() {
            if self.checkpoint(hooks, run)? {
                return Ok(Some(Stop::Interrupted));
            }
            let Some(b) = self.map.block_at(pos) else { break };
            if b.status != Status::NonTried {
                pos = b.end();
                continue;
            }
            let len = self.opts.cluster.min(b.end() - pos);
            let (good, failed, slow) = self.read_once(pos, len, Status::NonTrimmed)?;
            run.progress.advance(good);
            pos += len;
            if failed || slow {
                // Leave the next `skip` bytes for later: a failing zone is read last.
                let jump = skip.min(self.map.size() - pos);
                self.stats.bytes_skipped += jump;
                pos += jump;
                skip = (skip * 2).min(self.opts.skip_max.max(self.opts.skip_min));
                if failed && hooks.enough(&self.map, false) {
                    return Ok(Some(Stop::Enough));
                }
            } else {
                skip = self.opts.skip_min;
            }
        }
        // The copy pass is over even if it skipped: record that (as ddrescue's pass 2 of
        // copying), so a resume bisects.
        self.map.pass = 2;
        self.map.current_pos = 0;
        Ok(None)
    }

    fn bisect(&mut self, hooks: &mut dyn Hooks, run: &mut Run<'_>) -> crate::Result<Option<Stop>> {
        self.map.phase = Phase::Copying;
        self.map.pass = self.map.pass.max(2);
        loop {
            if self.checkpoint(hooks, run)? {
                return Ok(Some(Stop::Interrupted));
            }
            let Some(b) =
                self.map.blocks_in(Status::NonTried).into_iter().max_by_key(|b| (b.size, std::cmp::Reverse(b.pos)))
            else {
                return Ok(None);
            };
            let mut pos = if b.size <= self.opts.cluster {
                b.pos
            } else {
                (b.pos + b.size / 2) / self.opts.sector * self.opts.sector
            };
            while pos < b.end() {
                let len = self.opts.cluster.min(b.end() - pos);
                let (good, failed, _) = self.read_once(pos, len, Status::NonTrimmed)?;
                run.progress.advance(good);
                pos += len;
                if failed {
                    break;
                }
                if self.checkpoint(hooks, run)? {
                    return Ok(Some(Stop::Interrupted));
                }
            }
            // Every interval read may be the one that makes the rest correctable.
            if hooks.enough(&self.map, false) {
                return Ok(Some(Stop::Enough));
            }
        }
    }

    fn trim(&mut self, hooks: &mut dyn Hooks, run: &mut Run<'_>) -> crate::Result<Option<Stop>> {
        self.map.phase = Phase::Trimming;
        self.map.pass = 1;
        let s = self.opts.sector;
        for b in self.map.blocks_in(Status::NonTrimmed) {
            // Forward from the start until a sector fails.
            let mut lo = b.pos;
            while lo < b.end() {
                if self.checkpoint(hooks, run)? {
                    return Ok(Some(Stop::Interrupted));
                }
                let (good, failed, _) = self.read_once(lo, s.min(b.end() - lo), Status::Bad)?;
                run.progress.advance(good);
                lo += s.min(b.end() - lo);
                if failed {
                    break;
                }
            }
            // Backward from the end until a sector fails.
            let mut hi = b.end();
            while hi > lo {
                if self.checkpoint(hooks, run)? {
                    return Ok(Some(Stop::Interrupted));
                }
                let start = if hi.is_multiple_of(s) { hi - s } else { hi / s * s }.max(lo);
                let (good, failed, _) = self.read_once(start, hi - start, Status::Bad)?;
                run.progress.advance(good);
                hi = start;
                if failed {
                    break;
                }
            }
            if hi > lo {
                self.map.set(lo, hi - lo, Status::NonScraped);
            }
            if hooks.enough(&self.map, false) {
                return Ok(Some(Stop::Enough));
            }
        }
        Ok(None)
    }

    fn scrape(&mut self, hooks: &mut dyn Hooks, run: &mut Run<'_>) -> crate::Result<Option<Stop>> {
        self.map.phase = Phase::Scraping;
        self.map.pass = 1;
        for b in self.map.blocks_in(Status::NonScraped) {
            if let Some(stop) = self.sectors(b.pos, b.size, Status::Bad, hooks, run)? {
                return Ok(Some(stop));
            }
        }
        Ok(None)
    }

    /// Read `pos..pos+len` one sector at a time; failures become `fail_as`.
    fn sectors(
        &mut self,
        pos: u64,
        len: u64,
        fail_as: Status,
        hooks: &mut dyn Hooks,
        run: &mut Run<'_>,
    ) -> crate::Result<Option<Stop>> {
        let s = self.opts.sector;
        let end = pos + len;
        let mut at = pos;
        while at < end {
            if self.checkpoint(hooks, run)? {
                return Ok(Some(Stop::Interrupted));
            }
            let n = s.min(end - at);
            let (good, failed, _) = self.read_once(at, n, fail_as)?;
            run.progress.advance(good);
            at += n;
            if failed && hooks.enough(&self.map, false) {
                return Ok(Some(Stop::Enough));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
