//! `loopkit protect IMAGE …`: create dvdisaster error correction data for an image.

use crate::cli::ProtectArgs;
use loopkit::formats::dvdisaster::create::{self, Request, SizeSpec, Target};
use loopkit::formats::dvdisaster::layout::Method;
use loopkit::progress::{Interrupt, Run};

/// Run it; returns the exit code (0: written and verified).
pub fn run(a: &ProtectArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let method = match a.method.to_ascii_lowercase().as_str() {
        "rs01" => Method::Rs01,
        "rs02" => Method::Rs02,
        "rs03" => Method::Rs03,
        m => return Err(loopkit::Error::invalid(format!("method {m:?}: expected rs01, rs02 or rs03"))),
    };
    let target =
        if a.ecc_file.is_some() || (method == Method::Rs01 && !a.augment) { Target::EccFile } else { Target::Augment };
    let out = match (target, &a.ecc_file, &a.output) {
        (Target::EccFile, Some(_), Some(_)) => {
            return Err(loopkit::Error::invalid("give the .ecc file either with --ecc-file or with -o, not both"));
        }
        (Target::EccFile, Some(f), None) | (Target::EccFile, None, Some(f)) => f.clone(),
        (Target::EccFile, None, None) => {
            return Err(loopkit::Error::invalid("RS01 writes a separate .ecc file: give --ecc-file FILE"));
        }
        (Target::Augment, _, Some(o)) => o.clone(),
        (Target::Augment, _, None) => {
            return Err(loopkit::Error::invalid(
                "give -o OUT for the augmented image (the image itself is never modified)",
            ));
        }
    };
    let mut medium = a.medium.as_deref().map(create::parse_medium).transpose()?;
    let mut redundancy = None;
    if let Some(r) = &a.redundancy {
        match create::parse_size_spec(r, target == Target::Augment)? {
            SizeSpec::Medium(m) => {
                if medium.is_some_and(|x| x != m) {
                    return Err(loopkit::Error::invalid(format!(
                        "--redundancy {r} names a medium, and --medium names another"
                    )));
                }
                medium = Some(m);
            }
            SizeSpec::Redundancy(x) => redundancy = Some(x),
        }
    }
    let req = Request { method, target, medium, redundancy };
    let mut opts = create::Options { force: a.force, ..Default::default() };
    if let Some(t) = a.threads {
        opts.workers = t.clamp(1, 256);
    }
    let mut progress = crate::progress::for_terminal(a.output_args.quiet);
    let outcome = create::protect(&a.image, &req, &out, &opts, &mut Run::new(&mut *progress, interrupt))?;
    let report = loopkit::report::protect(&a.image, &outcome);
    if a.output_args.json {
        super::print_json(&report)?;
    } else {
        let what = if report.placement == "augmented" { "augmented image" } else { "error correction file" };
        let mut s = format!(
            "{} {what} {}: {} roots ({:.1}% redundancy), {} data sectors, {} bytes",
            report.method, report.output, report.roots, report.redundancy_percent, report.data_sectors, report.bytes
        );
        if let Some(m) = report.medium_sectors {
            s.push_str(&format!(", sized for a {m}-sector medium"));
        }
        s.push_str(if report.ok { "; verified\n" } else { "; DOES NOT VERIFY\n" });
        super::print(&s)?;
    }
    Ok(if report.ok { 0 } else { 1 })
}
