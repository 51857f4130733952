//! `loopkit inspect IMAGE`: what the image is and how to map it with cryptsetup.

use crate::cli::InspectArgs;

/// Run it; returns the exit code.
pub fn run(a: &InspectArgs) -> loopkit::Result<u8> {
    let (opened, pass_len) = super::open_with_prompt(&a.common.image, &a.common.secrets, &a.common.params)?;
    let report = loopkit::report::inspect(&opened, pass_len);
    if a.common.output.json {
        super::print_json(&report)?;
    } else {
        super::print(&crate::render::inspect(&report))?;
    }
    Ok(0)
}
