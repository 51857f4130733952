//! `loopkit verify IMAGE`: stream, decrypt and hash the payload, check the file system.

use crate::cli::VerifyArgs;
use loopkit::progress::Interrupt;

/// Run it; returns the exit code (0 verified, 1 problems found).
pub fn run(a: &VerifyArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let (opened, pass_len) = super::open_with_prompt(&a.common.image, &a.common.secrets, &a.common.params)?;
    let mut opts = loopkit::verify::Options::default();
    if let Some(t) = a.threads {
        opts.workers = t.clamp(1, 64);
    }
    let mut progress = crate::progress::for_terminal(a.common.output.quiet);
    let outcome = loopkit::verify::verify(&opened, opts, &mut *progress, interrupt)?;
    let report = loopkit::report::verify(&opened, pass_len, &outcome);
    if a.common.output.json {
        super::print_json(&report)?;
    } else {
        super::print(&crate::render::verify(&report))?;
    }
    Ok(if report.ok { 0 } else { 1 })
}
