//! `loopkit verify IMAGE`: stream, decrypt and hash the payload, check the file system.

use crate::cli::VerifyArgs;
use loopkit::progress::{Interrupt, Run};

/// Run it; returns the exit code (0 verified, 1 problems found).
pub fn run(a: &VerifyArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    if super::batch::wanted(a) {
        return super::batch::run(a, interrupt);
    }
    let mut secrets = a.common.secrets.clone();
    // --ecc-only needs no passphrase: never ask for one.
    secrets.no_prompt |= a.ecc_only;
    let (opened, pass_len) = super::open_with_prompt(&a.common.image, &secrets, &a.common.params)?;
    let mut opts = loopkit::verify::Options::default();
    if let Some(t) = a.threads {
        opts.workers = t.clamp(1, 64);
    }
    opts.ecc_only = a.ecc_only;
    if a.full_syndromes {
        opts.ecc_syndromes = loopkit::formats::dvdisaster::verify::SyndromeCheck::Full;
    }
    let mut progress = crate::progress::for_terminal(a.common.output.quiet);
    let reference = match (&a.manifest, &a.against) {
        (Some(m), _) => {
            let bytes = std::fs::read(m).map_err(|e| loopkit::Error::io(format!("cannot read {}", m.display()), e))?;
            Some(loopkit::manifest::Reference::Manifest(
                loopkit::manifest::Manifest::from_json(&bytes).map_err(|e| e.context(m.display()))?,
            ))
        }
        (None, Some(d)) => Some(loopkit::manifest::Reference::Dir(d.clone())),
        (None, None) => None,
    };
    let outcome =
        loopkit::verify::verify_files(&opened, opts, reference.as_ref(), &mut Run::new(&mut *progress, interrupt))?;
    let report = loopkit::report::verify(&opened, pass_len, &outcome);
    if let Some(out) = &a.map {
        let Some(m) = loopkit::report::html::SectorMap::of(&report) else {
            return Err(loopkit::Error::invalid(format!(
                "--map: {} has no dvdisaster error correction data to draw",
                a.common.image.display()
            )));
        };
        let svg = loopkit::report::html::svg(&m, true);
        loopkit::output::write_file_atomically(out, svg.as_bytes(), true, 0o644, &a.common.input_paths())?;
    }
    if a.common.output.json {
        super::print_json(&report)?;
    } else {
        super::print(&crate::render::verify(&report))?;
    }
    Ok(if report.ok { 0 } else { 1 })
}
