//! The `loopkit` command: parse arguments, install the Ctrl-C handler, run one subcommand, map
//! the outcome to an exit code (0 ok, 1 problems found in the data, 2 could not do the job,
//! 130 interrupted). Everything else lives in the library.

mod choices;
mod cli;
mod cmd;
mod progress;
mod render;
mod secrets;

use clap::Parser;
use loopkit::ErrorKind;
use loopkit::progress::Interrupt;
use std::process::ExitCode;

/// Exit code: could not do the job.
const EXIT_FAILED: u8 = 2;
/// Exit code: interrupted (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_FAILED } else { 0 });
        }
    };
    let interrupt = Interrupt::new();
    let _ = secrets::INTERRUPT.set(interrupt.clone());
    {
        let i = interrupt.clone();
        let _ = ctrlc::set_handler(move || {
            if i.is_set() {
                // Second Ctrl-C: give up immediately.
                std::process::exit(i32::from(EXIT_INTERRUPTED));
            }
            i.trigger();
        });
    }
    let (json, command) = match &cli.command {
        cli::Command::Inspect(a) => (a.common.output.json, "inspect"),
        cli::Command::Verify(a) => (a.common.output.json, "verify"),
        cli::Command::Manifest(a) => (a.common.output.json, "manifest"),
        cli::Command::Extract(a) => (a.common.output.json, "extract"),
        cli::Command::StripEcc(a) => (a.output_args.json, "strip-ecc"),
        cli::Command::Repair(a) => (a.output_args.json, "repair"),
        cli::Command::Protect(a) => (a.output_args.json, "protect"),
        cli::Command::Rescue(a) => (a.output_args.json, "rescue"),
        cli::Command::Migrate(a) => (a.common.output.json, "migrate"),
        cli::Command::Extents(a) => (a.output.json, "extents"),
        cli::Command::Attach(a) => (a.json, "attach"),
        cli::Command::Detach(a) => (a.json, "detach"),
        cli::Command::Mount(a) => (a.json, "mount"),
        cli::Command::Umount(a) => (a.json, "umount"),
        cli::Command::Catalog(a) => (a.json, "catalog"),
        cli::Command::Report(_) => (false, "report"),
        cli::Command::Completions(_) => (false, "completions"),
        cli::Command::Man(_) => (false, "man"),
    };
    let result = match &cli.command {
        cli::Command::Inspect(a) => cmd::inspect::run(a),
        cli::Command::Verify(a) => cmd::verify::run(a, &interrupt),
        cli::Command::Manifest(a) => cmd::manifest::run(a, &interrupt),
        cli::Command::Extract(a) => cmd::extract::run(a, &interrupt),
        cli::Command::StripEcc(a) => cmd::strip_ecc::run(a, &interrupt),
        cli::Command::Repair(a) => cmd::repair::run(a, &interrupt),
        cli::Command::Protect(a) => cmd::protect::run(a, &interrupt),
        cli::Command::Rescue(a) => cmd::rescue::run(a, &interrupt),
        cli::Command::Migrate(a) => cmd::migrate::run(a, &interrupt),
        cli::Command::Extents(a) => cmd::extents::run(a, &interrupt),
        cli::Command::Attach(a) => cmd::attach::run(a, &interrupt),
        cli::Command::Detach(a) => cmd::attach::detach(a),
        cli::Command::Mount(a) => cmd::mount::run(a),
        cli::Command::Umount(a) => cmd::mount::umount(a),
        cli::Command::Catalog(a) => cmd::catalog::run(a),
        cli::Command::Report(a) => cmd::report::run(a),
        cli::Command::Completions(a) => cmd::docs::completions(a),
        cli::Command::Man(a) => cmd::docs::man(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            report_error(&e, json, command);
            ExitCode::from(if e.kind() == ErrorKind::Interrupted || interrupt.is_set() {
                EXIT_INTERRUPTED
            } else {
                EXIT_FAILED
            })
        }
    }
}

/// Print the error and its cause chain once on stderr (and, with --json, as one JSON object
/// on stdout so scripts always get a document).
fn report_error(e: &loopkit::Error, json: bool, command: &str) {
    let msg = loopkit::report::error_chain(e);
    eprintln!("loopkit: error: {}", render::line(&msg));
    if json {
        let kind = loopkit::report::error_kind_name(e.kind());
        let doc = loopkit::report::ErrorDoc::new(command, None, kind, msg);
        if let Ok(s) = serde_json::to_string(&doc) {
            println!("{s}");
        }
    }
}
