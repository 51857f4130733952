//! `loopkit protect IMAGE …`: create dvdisaster error correction data for an image.

use crate::cli::ProtectArgs;
use loopkit::formats::dvdisaster::create::{self, Request, SizeSpec, Target};
use loopkit::formats::dvdisaster::layout::Method;
use loopkit::progress::{Interrupt, Run};

/// `rs01`, `rs02` or `rs03` (any case).
pub fn method(m: &str) -> loopkit::Result<Method> {
    match m.to_ascii_lowercase().as_str() {
        "rs01" => Ok(Method::Rs01),
        "rs02" => Ok(Method::Rs02),
        "rs03" => Ok(Method::Rs03),
        m => Err(loopkit::Error::invalid(format!("method {m:?}: expected rs01, rs02 or rs03"))),
    }
}

/// The request from `--medium` and `--redundancy` in their dvdisaster spellings (a medium given
/// as `--redundancy DVD` counts as `--medium`).
pub fn request(
    method: Method,
    target: Target,
    medium_arg: Option<&str>,
    redundancy_arg: Option<&str>,
) -> loopkit::Result<Request> {
    let mut medium = medium_arg.map(create::parse_medium).transpose()?;
    let mut redundancy = None;
    if let Some(r) = redundancy_arg {
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
    Ok(Request { method, target, medium, redundancy })
}

/// Run it; returns the exit code (0: written and verified).
pub fn run(a: &ProtectArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let method = method(&a.method)?;
    if a.in_place {
        if method == Method::Rs01 {
            return Err(loopkit::Error::invalid("RS01 writes a separate .ecc file; --in-place is for rs02/rs03"));
        }
        let req = request(method, Target::Augment, a.medium.as_deref(), a.redundancy.as_deref())?;
        let opts = options(a);
        let mut progress = crate::progress::for_terminal(a.output_args.quiet);
        let outcome = create::protect_in_place(&a.image, &req, &opts, &mut Run::new(&mut *progress, interrupt))?;
        return report(a, &outcome);
    }
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
                "give -o OUT for the augmented copy (or --in-place to augment the image itself)",
            ));
        }
    };
    let req = request(method, target, a.medium.as_deref(), a.redundancy.as_deref())?;
    let opts = options(a);
    let mut progress = crate::progress::for_terminal(a.output_args.quiet);
    let outcome = create::protect(&a.image, &req, &out, &opts, &mut Run::new(&mut *progress, interrupt))?;
    report(a, &outcome)
}

fn options(a: &ProtectArgs) -> create::Options {
    let mut opts = create::Options { force: a.force, ..Default::default() };
    if let Some(t) = a.threads {
        opts.workers = t.clamp(1, 256);
    }
    opts
}

fn report(a: &ProtectArgs, outcome: &create::Outcome) -> loopkit::Result<u8> {
    let report = loopkit::report::protect(&a.image, outcome);
    if a.output_args.json {
        super::print_json(&report)?;
    } else {
        super::print(&text(&report))?;
    }
    Ok(if report.ok { 0 } else { 1 })
}

/// The one-line human summary of a protect report.
pub fn text(report: &loopkit::report::Protect) -> String {
    let what = if report.placement == "augmented" { "augmented image" } else { "error correction file" };
    let mut s = format!(
        "{} {what} {}: {} roots ({:.1}% redundancy), {} data sectors, {} bytes",
        report.method, report.output, report.roots, report.redundancy_percent, report.data_sectors, report.bytes
    );
    if let Some(m) = report.medium_sectors {
        s.push_str(&format!(", sized for a {m}-sector medium"));
    }
    s.push_str(if report.ok { "; verified\n" } else { "; DOES NOT VERIFY\n" });
    s
}
