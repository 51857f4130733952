//! `loopkit strip-ecc IMAGE -o OUT`: the original image out of a dvdisaster-augmented one.

use crate::cli::StripEccArgs;
use loopkit::formats::dvdisaster;
use loopkit::progress::{Interrupt, Run};
use loopkit::source::FileSource;

/// Run it; returns the exit code (0 written and confirmed, 1 written with --allow-damaged but
/// the data is damaged).
pub fn run(a: &StripEccArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let file = FileSource::open(&a.image)?;
    let ecc = dvdisaster::find_in_image(&file)?.ok_or_else(|| {
        loopkit::Error::new(
            loopkit::ErrorKind::NotRecognized,
            format!(
                "{} carries no dvdisaster RS02/RS03 error correction data; there is nothing to strip",
                a.image.display()
            ),
        )
    })?;
    let opts = dvdisaster::strip::Options { force: a.force, allow_damaged: a.allow_damaged };
    let mut progress = crate::progress::for_terminal(a.output_args.quiet);
    let outcome =
        dvdisaster::strip::strip(&ecc, &file, &a.image, &a.output, &opts, &mut Run::new(&mut *progress, interrupt))?;
    let report = loopkit::report::strip_ecc(&a.image, &ecc, &outcome);
    if a.output_args.json {
        super::print_json(&report)?;
    } else {
        super::print(&crate::render::strip_ecc(&report))?;
    }
    Ok(if report.ok { 0 } else { 1 })
}
