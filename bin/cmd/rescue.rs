//! `loopkit rescue SOURCE -o IMAGE`: rescue-read a failing disc into an image, stopping early
//! and repairing when dvdisaster error-correction data can restore the rest.

use crate::cli::RescueArgs;
use loopkit::formats::dvdisaster::{self, Ecc};
use loopkit::progress::{Interrupt, Run};
use loopkit::rescue::job::{Job, Outcome};
use loopkit::rescue::{Stop, ecc as recc};
use loopkit::source::FileSource;
use std::path::PathBuf;
use std::time::Instant;

/// Where the error-correction data comes from.
enum EccSource {
    /// Not used (`--no-ecc`).
    Off,
    /// A `.ecc` file, known from the start.
    File(Box<Ecc>),
    /// Appended to the source: looked for in the partial image at the end of each phase.
    Appended { found: Option<Box<Ecc>> },
}

/// Run it; returns the exit code (0 complete or repaired and verified, 1 data missing).
pub fn run(a: &RescueArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let map = a.map.clone().unwrap_or_else(|| {
        let mut p = a.output.clone().into_os_string();
        p.push(".map");
        PathBuf::from(p)
    });
    let job = Job {
        source: a.source.clone(),
        output: a.output.clone(),
        map,
        resume: a.resume,
        force: a.force,
        sector: a.sector_size,
        min_rate: a.min_progress,
        retries: a.passes,
        test_mode: a.test_mode.clone(),
    };
    let mut ecc = match (&a.ecc, a.no_ecc) {
        (_, true) => EccSource::Off,
        (Some(p), false) => EccSource::File(Box::new(dvdisaster::open_ecc_file(p)?)),
        (None, false) => EccSource::Appended { found: None },
    };
    let partial = job.partial_path();
    // Asked after failing reads, after each bisected interval and at the end of each phase.
    // The full check walks every missing sector, so between phase ends it runs only when the
    // missing bytes fit the code's total capacity, and no more than 5 % of the time (not again
    // before 20 times the last check's duration has passed); at phase ends it always runs.
    let mut last_check: Option<(Instant, std::time::Duration)> = None;
    let mut enough = |m: &loopkit::rescue::mapfile::RescueMap, at_phase_end: bool| -> bool {
        if !at_phase_end && last_check.is_some_and(|(t, took)| t.elapsed() < took * 20) {
            return false;
        }
        if let EccSource::Appended { found: found @ None } = &mut ecc {
            // Look for the header in what has been read so far, once per phase.
            if !at_phase_end {
                return false;
            }
            let Ok(src) = FileSource::open(&partial) else { return false };
            match dvdisaster::find_in_image(&src) {
                Ok(Some(e)) if e.is_augmented() => *found = Some(Box::new(e)),
                _ => return false,
            }
        }
        match &ecc {
            EccSource::File(e) | EccSource::Appended { found: Some(e), .. } => {
                if m.missing_bytes() > recc::capacity_bytes(e) {
                    return false;
                }
                let t = Instant::now();
                let ok = recc::correctable(e, &recc::missing_sectors(m));
                last_check = Some((t, t.elapsed()));
                ok
            }
            _ => false,
        }
    };
    let started = Instant::now();
    let mut progress = crate::progress::for_terminal(a.output_args.quiet);
    let mut run = Run::new(&mut *progress, interrupt);
    let outcome = loopkit::rescue::job::run(&job, Some(&mut enough), &mut run)?;
    let mut ecc_found = match ecc {
        EccSource::File(e) | EccSource::Appended { found: Some(e), .. } => Some(*e),
        _ => None,
    };
    if ecc_found.is_none() && !a.no_ecc && a.ecc.is_none() && outcome.stop != Stop::Complete {
        // The header may have been read after the last look.
        ecc_found = FileSource::open(&outcome.data_path)
            .ok()
            .and_then(|src| dvdisaster::find_in_image(&src).ok().flatten())
            .filter(Ecc::is_augmented);
    }
    let repairable = outcome.stop != Stop::Interrupted
        && ecc_found.as_ref().is_some_and(|e| recc::correctable(e, &recc::missing_sectors(&outcome.map)));
    let ecc_for_damage = ecc_found.clone();
    let (repair, ok) = match (outcome.stop, ecc_found) {
        (Stop::Complete, _) => (None, true),
        (_, Some(e)) if repairable => repair_partial(&job, &outcome, &e, &mut run)?,
        _ => {
            mark(&outcome)?;
            (None, false)
        }
    };
    let mut report = loopkit::report::rescue(&job, &outcome, started.elapsed().as_secs_f64(), repair, ok);
    if !ok && outcome.stop != Stop::Interrupted {
        report.damage = damage(&outcome, ecc_for_damage.as_ref(), interrupt).map(|d| loopkit::report::damage(&d));
    }
    if a.output_args.json {
        super::print_json(&report)?;
    } else {
        super::print(&crate::render::rescue(&report))?;
    }
    if outcome.stop == Stop::Interrupted {
        return Err(loopkit::Error::interrupted());
    }
    Ok(if ok { 0 } else { 1 })
}

/// What the sectors still missing hit in the image produced (plain images; an encrypted one is
/// opened without a secret, so the damage inside it is reported as unknown). Best effort: an
/// image that cannot be opened gives no section.
fn damage(outcome: &Outcome, ecc: Option<&Ecc>, interrupt: &Interrupt) -> Option<loopkit::damage::Damage> {
    let sectors = recc::missing_sectors(&outcome.map);
    if sectors.is_empty() {
        return None;
    }
    let bad = loopkit::damage::from_sectors(ecc, &sectors, 0);
    let secrets = loopkit::detect::Secrets { passphrase: None, key_file: None };
    let opened = loopkit::image::open(&outcome.data_path, &secrets, &Default::default()).ok()?;
    loopkit::damage::assess(&opened, &bad, interrupt).ok().flatten()
}

/// Mark the unread sectors of the partial image with dead-sector markers (so `verify`,
/// `repair` and dvdisaster see them as unreadable, not as zeros).
fn mark(outcome: &Outcome) -> loopkit::Result<u64> {
    if !outcome.sector.is_multiple_of(2048) || outcome.completed {
        return Ok(0);
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&outcome.data_path)
        .map_err(|e| loopkit::Error::io(format!("opening {}", outcome.data_path.display()), e))?;
    let n = recc::mark_missing(&f, &outcome.map)?;
    f.sync_all().map_err(|e| loopkit::Error::io(format!("syncing {}", outcome.data_path.display()), e))?;
    Ok(n)
}

/// The rescue stopped because the error-correction data suffices: mark the missing sectors,
/// repair the partial image into the output, verify it.
fn repair_partial(
    job: &Job,
    outcome: &Outcome,
    ecc: &Ecc,
    run: &mut Run<'_>,
) -> loopkit::Result<(Option<loopkit::report::Repair>, bool)> {
    mark(outcome)?;
    let opts = dvdisaster::repair::Options { force: job.force, truncate: false, ecc_out: None };
    let repaired = dvdisaster::repair::repair(ecc, &outcome.data_path, &job.output, &opts, run)?;
    let out = FileSource::open(&job.output)?;
    let ecc_after = match &ecc.placement {
        dvdisaster::Placement::EccFile { path, .. } => dvdisaster::open_ecc_file(path)?,
        dvdisaster::Placement::Augmented => dvdisaster::find_in_image(&out)?.unwrap_or(ecc.clone()),
    };
    let after = dvdisaster::verify::verify(&ecc_after, &out, &dvdisaster::verify::Options::default(), run)?;
    let report = loopkit::report::repair(&outcome.data_path, ecc, &repaired, &after);
    let ok = report.ok;
    Ok((Some(report), ok))
}
