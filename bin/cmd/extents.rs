//! `loopkit extents IMAGE [--check]`: where an image file lives on its disk and whether it can
//! be remapped.

use crate::cli::ExtentsArgs;
use loopkit::progress::Interrupt;

/// Run it; returns the exit code (0 remap-safe and verified, 1 not safe or extents differ).
pub fn run(a: &ExtentsArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let mut progress = crate::progress::for_terminal(a.output.quiet);
    let survey = loopkit::remap::survey::survey(&a.image, a.check, &mut *progress, interrupt)?;
    let report = loopkit::report::extents(&survey);
    if a.output.json {
        super::print_json(&report)?;
    } else {
        super::print(&crate::render::extents(&report, a.max_rows))?;
    }
    let check_ok = report.check.as_ref().is_none_or(|c| c.ok);
    Ok(if report.remap_safe && check_ok { 0 } else { 1 })
}
