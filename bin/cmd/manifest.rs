//! `loopkit manifest IMAGE [-o FILE]`: every entry of the file system inside the image as JSON.

use crate::cli::ManifestArgs;
use loopkit::progress::{Interrupt, Run};
use loopkit::verify::Severity;

/// Run it; returns the exit code (0 all read, 1 problems found in the file system).
pub fn run(a: &ManifestArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let inputs = a.common.input_paths();
    if let Some(out) = &a.output {
        loopkit::output::check_output(out, &inputs, a.force)?;
    }
    let (opened, _) = super::open_with_prompt(&a.common.image, &a.common.secrets, &a.common.params)?;
    let workers = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).clamp(1, 64);
    let mut progress = crate::progress::for_terminal(a.common.output.quiet);
    let (kind, built) = super::with_filesystem(&opened, |fs| {
        Ok((fs.kind(), loopkit::manifest::from_fs(fs, workers, &mut Run::new(&mut *progress, interrupt))?))
    })?;
    let ok = !built.problems.iter().any(|p| p.severity == Severity::Error);
    let json = built.manifest.to_json();
    match &a.output {
        None => super::print_exact(&json)?,
        Some(out) => {
            loopkit::output::write_file_atomically(out, json.as_bytes(), a.force, 0o644, &inputs)?;
            if a.common.output.json {
                super::print_json(&loopkit::report::ManifestRun {
                    loopkit_json: loopkit::report::JSON_VERSION,
                    command: "manifest".into(),
                    image: opened.path.display().to_string(),
                    output: out.display().to_string(),
                    filesystem_type: kind.into(),
                    entries: built.manifest.entries.len() as u64,
                    bytes: built.manifest.file_bytes(),
                    ok,
                    problems: built.problems.clone(),
                })?;
            } else {
                super::print(&format!(
                    "{} entries ({}) of the {kind} file system written to {}\n",
                    built.manifest.entries.len(),
                    crate::render::size(built.manifest.file_bytes()),
                    out.display()
                ))?;
            }
        }
    }
    if !(a.common.output.json && a.output.is_some()) {
        super::print_problems(&built.problems);
    }
    Ok(if ok { 0 } else { 1 })
}
