//! `loopkit extract IMAGE DEST [--path SUBPATH] [--force] [--allow-damaged]`: restore files from the image.

use crate::cli::ExtractArgs;
use loopkit::progress::{Interrupt, Run};
use loopkit::verify::Severity;

/// Run it; returns the exit code (0 everything restored, 1 problems found in the data).
pub fn run(a: &ExtractArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let (opened, _) = super::open_with_prompt(&a.common.image, &a.common.secrets, &a.common.params)?;
    let opts = loopkit::extract::Options {
        subpath: a.subpath.as_ref().map(|s| s.as_bytes().to_vec()),
        force: a.force,
        allow_damaged: a.allow_damaged,
    };
    let mut progress = crate::progress::for_terminal(a.common.output.quiet);
    let out = super::with_filesystem(&opened, |fs| {
        loopkit::extract::extract(fs, &a.dest, &opts, &mut Run::new(&mut *progress, interrupt))
    })?;
    let ok = !out.problems.iter().any(|p| p.severity == Severity::Error);
    if a.common.output.json {
        super::print_json(&loopkit::report::Extract {
            loopkit_json: loopkit::report::JSON_VERSION,
            command: "extract".into(),
            image: opened.path.display().to_string(),
            dest: a.dest.display().to_string(),
            counts: out.counts,
            ok,
            problems: out.problems.clone(),
        })?;
    } else {
        super::print(&format!(
            "extracted {} files ({}), {} directories, {} symlinks, {} hard links into {}; {} skipped\n",
            out.counts.files,
            crate::render::size(out.counts.bytes),
            out.counts.dirs,
            out.counts.symlinks,
            out.counts.hardlinks,
            a.dest.display(),
            out.counts.skipped
        ))?;
        super::print_problems(&out.problems);
    }
    Ok(if ok { 0 } else { 1 })
}
