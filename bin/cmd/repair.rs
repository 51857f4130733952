//! `loopkit repair IMAGE -o OUT`: Reed-Solomon repair of a damaged image into a new file, then a
//! check of the result against its error-correction data.

use crate::cli::RepairArgs;
use loopkit::formats::dvdisaster;
use loopkit::progress::{Interrupt, Run};
use loopkit::source::FileSource;

/// Run it; returns the exit code (0 the repaired image verifies clean, 1 damage remains).
pub fn run(a: &RepairArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let file = FileSource::open(&a.image)?;
    let scan = dvdisaster::find_for_image(&a.image, &file, a.ecc.as_deref())?;
    let ecc = scan.ecc.ok_or_else(|| {
        let mut msg = format!(
            "{} carries no dvdisaster error correction data (none appended, no --ecc file, no NAME.ecc beside it)",
            a.image.display()
        );
        if !scan.unusable.is_empty() {
            msg.push_str(&format!("; passed over: {}", loopkit::finding::Finding::messages(&scan.unusable).join("; ")));
        }
        loopkit::Error::new(loopkit::ErrorKind::NotRecognized, msg)
    })?;
    let opts = dvdisaster::repair::Options { force: a.force, truncate: a.truncate, ecc_out: a.ecc_output.clone() };
    let mut progress = crate::progress::for_terminal(a.output_args.quiet);
    let outcome =
        dvdisaster::repair::repair(&ecc, &a.image, &a.output, &opts, &mut Run::new(&mut *progress, interrupt))?;
    // Check the result with the (repaired, if written) error-correction data.
    let repaired = FileSource::open(&a.output)?;
    let ecc_after = match (&outcome.ecc_path, &ecc.placement) {
        (Some(p), _) => dvdisaster::open_ecc_file(p)?,
        (None, dvdisaster::Placement::EccFile { path, .. }) => dvdisaster::open_ecc_file(path)?,
        (None, dvdisaster::Placement::Augmented) => dvdisaster::find_in_image(&repaired)?.unwrap_or(ecc.clone()),
    };
    let after = dvdisaster::verify::verify(
        &ecc_after,
        &repaired,
        &dvdisaster::verify::Options::default(),
        &mut Run::new(&mut *progress, interrupt),
    )?;
    let report = loopkit::report::repair(&a.image, &ecc, &outcome, &after);
    if a.output_args.json {
        super::print_json(&report)?;
    } else {
        super::print(&crate::render::repair(&report))?;
    }
    Ok(if report.ok { 0 } else { 1 })
}
