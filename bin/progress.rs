//! indicatif adapter for the library's `Progress` trait: a bar on stderr, only when stderr is a
//! terminal and `--quiet` was not given.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use loopkit::progress::{Level, NoProgress, Progress, Remarks};
use std::io::IsTerminal;

/// A progress bar on stderr.
pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Progress for Bar {
    fn start(&mut self, label: &str, total_bytes: Option<u64>) {
        let bar = match total_bytes {
            Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let style = ProgressStyle::with_template(
            "{msg:>8} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message(label.to_string());
        self.bar = Some(bar);
    }
    fn advance(&mut self, bytes: u64) {
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
    fn note(&mut self, msg: &str) {
        if let Some(b) = &self.bar {
            b.println(msg);
        }
    }
}

/// A bar when appropriate, otherwise nothing.
pub fn for_terminal(quiet: bool) -> Box<dyn Progress> {
    if !quiet && std::io::stderr().is_terminal() { Box::new(Bar { bar: None }) } else { Box::new(NoProgress) }
}

/// The library's remarks on stderr, `loopkit: error: …` / `loopkit: warning: …` / `loopkit: note: …`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StderrRemarks;

impl Remarks for StderrRemarks {
    fn remark(&self, level: Level, msg: &str) {
        let word = match level {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Note => "note",
        };
        eprintln!("loopkit: {word}: {msg}");
    }
}
