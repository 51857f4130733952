//! `loopkit extract IMAGE DEST [--path SUBPATH] [--force] [--allow-damaged | --salvage]`: restore files from the image.

use crate::cli::ExtractArgs;
use loopkit::progress::{Interrupt, Run};
use loopkit::verify::Severity;

/// Run it; returns the exit code (0 everything restored, 1 problems found in the data).
pub fn run(a: &ExtractArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let (mut opened, _) = super::open_with_prompt(&a.common.image, &a.common.secrets, &a.common.params)?;
    let mut progress = crate::progress::for_terminal(a.common.output.quiet);
    // --salvage: the damage first (repairing a copy when the ECC data can), then what is lost.
    let prepared = if a.salvage {
        Some(loopkit::damage::salvage::prepare(&mut opened, &a.dest, &mut Run::new(&mut *progress, interrupt))?)
    } else {
        None
    };
    let opts = loopkit::extract::Options {
        subpath: a.subpath.as_ref().map(|s| s.as_bytes().to_vec()),
        force: a.force,
        allow_damaged: a.allow_damaged,
        salvage: prepared.as_ref().map(|p| p.damage.as_ref().map(|d| d.lost_by_node()).unwrap_or_default()),
    };
    let out = super::with_filesystem(&opened, |fs| {
        loopkit::extract::extract(fs, &a.dest, &opts, &mut Run::new(&mut *progress, interrupt))
    })?;
    if let Some(p) = &prepared {
        let sidecar = loopkit::report::Salvage {
            loopkit_json: loopkit::report::JSON_VERSION,
            command: "extract-salvage".into(),
            image: a.common.image.display().to_string(),
            dest: a.dest.display().to_string(),
            repaired_first: p.repaired_first,
            files: out
                .salvaged
                .iter()
                .map(|(path, size, lost)| loopkit::report::salvaged_file(path, *size, lost))
                .collect(),
        };
        // Beside DEST, never inside it (`DEST/` names the same directory).
        let dest: std::path::PathBuf = a.dest.components().collect();
        let mut name = dest.into_os_string();
        name.push(".damage.json");
        let bytes = serde_json::to_vec_pretty(&sidecar)
            .map_err(|e| loopkit::Error::invalid(format!("BUG: the damage sidecar does not serialise: {e}")))?;
        loopkit::output::write_file_atomically(
            std::path::Path::new(&name),
            &bytes,
            a.force,
            0o644,
            &a.common.input_paths(),
        )?;
    }
    drop(prepared);
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
        if a.salvage {
            super::print(&format!(
                "salvaged {} damaged file(s) with lost bytes as zeros; list in {}.damage.json\n",
                out.salvaged.len(),
                a.dest.display()
            ))?;
        }
        super::print_problems(&out.problems);
    }
    Ok(if ok { 0 } else { 1 })
}
