//! `loopkit verify PATH...` in batch mode: flags → [`loopkit::batch::Config`], an indicatif
//! multi-bar (only on a terminal), JSON lines as images finish, the table at the end.

use crate::cli::VerifyArgs;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use loopkit::batch::{Finished, Observer};
use loopkit::progress::{Interrupt, NoProgress, Progress};
use loopkit::report::batch::{Doc, Row, Rows, Summary, Verdict};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Whether `a` asks for batch mode: several paths, a directory, or a batch-only flag.
pub fn wanted(a: &VerifyArgs) -> bool {
    a.batch.any() || a.common.image.is_dir()
}

/// Run the batch; returns the exit code.
pub fn run(a: &VerifyArgs, interrupt: &Interrupt) -> loopkit::Result<u8> {
    let b = &a.batch;
    if a.common.output.json {
        return Err(loopkit::Error::invalid("batch verification prints JSON with --json-lines, not --json"));
    }
    for (given, flag) in [
        (a.manifest.is_some(), "--manifest"),
        (a.against.is_some(), "--against"),
        (a.common.params.ecc.is_some(), "--ecc"),
        (a.common.params.header.is_some(), "--header"),
        (a.map.is_some(), "--map"),
    ] {
        if given {
            return Err(loopkit::Error::invalid(format!(
                "{flag} names one image's companion file; it cannot be used when verifying several images"
            )));
        }
    }
    let mut paths: Vec<PathBuf> = vec![a.common.image.clone()];
    paths.extend(b.more.iter().cloned());
    let walk = loopkit::batch::walk::WalkOptions {
        max_depth: b.max_depth,
        exclude: loopkit::batch::walk::patterns(&b.exclude)?,
    };
    for p in paths.iter().filter(|p| p.is_dir()) {
        eprintln!("loopkit: note: {} is a directory: verifying the images found in it", p.display());
    }
    let mut found = loopkit::batch::walk::walk(&paths, &walk)?;
    // The batch's own files (catalog, secrets map) are never images of the batch.
    let own: Vec<PathBuf> = [b.catalog.as_deref(), b.secrets.as_deref(), a.common.secrets.passphrase_file.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    found.files.retain(|f| std::fs::canonicalize(f).map_or(true, |c| !own.contains(&c)));
    let jobs = b.jobs.map_or_else(|| loopkit::batch::default_jobs(&found.files), usize::from);
    let mut verify = loopkit::verify::Options::default();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    verify.workers = match a.threads {
        Some(t) => t.clamp(1, 64),
        None => (cores / jobs.min(found.files.len().max(1))).saturating_sub(1).clamp(1, 8),
    };
    verify.ecc_only = a.ecc_only;
    if a.full_syndromes {
        verify.ecc_syndromes = loopkit::formats::dvdisaster::verify::SyndromeCheck::Full;
    }
    let mut secret_args = a.common.secrets.clone();
    secret_args.no_prompt = true;
    let cfg = loopkit::batch::Config {
        jobs,
        readers_per_device: usize::from(b.readers_per_device),
        time_budget: b
            .time_budget
            .as_deref()
            .map(|t| loopkit::batch::parse_duration(t, "--time-budget"))
            .transpose()?,
        open: crate::secrets::open_options(&a.common.params)?,
        verify,
        secrets: crate::secrets::collect(&secret_args)?,
        secret_map: b.secrets.as_deref().map(loopkit::batch::secrets::SecretMap::read).transpose()?,
        catalog: b.catalog.clone(),
        skip: loopkit::batch::SkipPolicy { since_days: b.since_days, changed_only: b.changed_only, resume: b.resume },
        version: crate::cli::version().to_string(),
    };
    for (p, why) in &found.left_out {
        eprintln!("loopkit: note: {}: left out ({why})", crate::render::line(&p.display().to_string()));
    }
    let show = !a.common.output.quiet && std::io::stderr().is_terminal();
    let mut ui = Ui::new(show, found.files.len() as u64, b.json_lines);
    let totals = loopkit::batch::run(&found, &cfg, &mut ui, interrupt)?;
    ui.done();
    let summary = std::mem::take(&mut ui.rows).summary(&totals);
    if b.json_lines {
        super::print_exact(&(json_line(&summary)? + "\n"))?;
    } else {
        super::print(&table(&summary))?;
    }
    Ok(loopkit::batch::exit_code(&totals))
}

fn json_line<T: serde::Serialize>(v: &T) -> loopkit::Result<String> {
    serde_json::to_string(v)
        .map_err(|e| loopkit::Error::new(loopkit::ErrorKind::InvalidInput, format!("BUG: cannot serialise: {e}")))
}

/// The multi-bar, the JSON-lines printer and the table's rows.
struct Ui {
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    json_lines: bool,
    rows: Rows,
}

impl Ui {
    fn new(show: bool, total: u64, json_lines: bool) -> Ui {
        let rows = Rows::new(total as usize);
        if !show {
            return Ui { multi: None, overall: None, json_lines, rows };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(total));
        overall.set_style(
            ProgressStyle::with_template("images {pos}/{len} [{elapsed_precise}] {wide_bar} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Ui { multi: Some(multi), overall: Some(overall), json_lines, rows }
    }
    fn done(&mut self) {
        if let Some(o) = self.overall.take() {
            o.finish_and_clear();
        }
        if let Some(m) = self.multi.take() {
            let _ = m.clear();
        }
    }
}

impl Observer for Ui {
    fn progress(&mut self, image: &Path) -> Box<dyn Progress> {
        match &self.multi {
            Some(m) => Box::new(JobBar { multi: m.clone(), bar: None, name: short_name(image) }),
            None => Box::new(NoProgress),
        }
    }
    fn finished(&mut self, f: &Finished) {
        if let Some(o) = &self.overall {
            o.inc(1);
        }
        let doc = self.rows.add(f);
        if self.json_lines
            && let Some(doc) = &doc
        {
            let line = match doc {
                Doc::Verify(v) => json_line(v),
                Doc::Error(e) => json_line(e),
            };
            if let Ok(l) = line {
                let _ = super::print_exact(&(l + "\n"));
            }
        }
    }
    fn note(&mut self, msg: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(format!("loopkit: note: {}", crate::render::line(msg)));
            }
            None => eprintln!("loopkit: note: {}", crate::render::line(msg)),
        }
    }
}

fn short_name(p: &Path) -> String {
    let s = p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned());
    if s.chars().count() > 24 {
        format!("…{}", s.chars().rev().take(23).collect::<Vec<_>>().into_iter().rev().collect::<String>())
    } else {
        s
    }
}

/// One job's bar (bytes, rate, ETA, the image's name).
struct JobBar {
    multi: MultiProgress,
    bar: Option<ProgressBar>,
    name: String,
}

impl Progress for JobBar {
    fn start(&mut self, label: &str, total_bytes: Option<u64>) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let bar = self.multi.add(ProgressBar::new(total_bytes.unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template("{msg:>34} {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(format!("{} {label}", self.name));
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
            self.multi.remove(&b);
        }
    }
}

fn fmt_ms(ms: u64) -> String {
    if ms < 10_000 { format!("{:.2}s", ms as f64 / 1000.0) } else { format!("{}s", ms / 1000) }
}

/// The human table: image, verdict, scheme, file system, bad sectors, files changed, time;
/// then the reasons for failed and skipped files, then the counts.
pub fn table(s: &Summary) -> String {
    let head = ["image", "verdict", "scheme", "filesystem", "bad sectors", "files changed", "time"];
    let cells: Vec<[String; 7]> = s
        .rows
        .iter()
        .map(|r: &Row| {
            [
                crate::render::line(&r.image).into_owned(),
                r.verdict.as_str().to_string(),
                r.scheme.clone().unwrap_or_else(|| "-".into()),
                r.filesystem.clone().unwrap_or_else(|| "-".into()),
                r.bad_sectors.map_or_else(|| "-".into(), |n| n.to_string()),
                r.files_changed.map_or_else(|| "-".into(), |n| n.to_string()),
                fmt_ms(r.elapsed_ms),
            ]
        })
        .collect();
    let mut w = head.map(|h| h.chars().count());
    for c in &cells {
        for (i, x) in c.iter().enumerate() {
            w[i] = w[i].max(x.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut l = String::new();
        for (i, x) in c.iter().enumerate() {
            let pad = w[i].saturating_sub(x.chars().count());
            if i >= 4 {
                l.push_str(&" ".repeat(pad));
                l.push_str(x);
            } else {
                l.push_str(x);
                if i + 1 < c.len() {
                    l.push_str(&" ".repeat(pad));
                }
            }
            if i + 1 < c.len() {
                l.push_str("  ");
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(&head.map(str::to_string));
    for c in &cells {
        out.push_str(&line(c));
    }
    let mut notes = String::new();
    for r in &s.rows {
        match r.verdict {
            Verdict::Problems => {
                notes.push_str(&format!("  {}: problems: {}\n", r.image, r.problems.join(", ")));
            }
            Verdict::Failed | Verdict::Skipped | Verdict::Interrupted => {
                if let Some(m) = &r.message {
                    notes.push_str(&format!("  {}: {}: {m}\n", r.image, r.verdict.as_str()));
                }
            }
            Verdict::Verified => {}
        }
    }
    if !notes.is_empty() {
        out.push('\n');
        out.push_str(&notes);
    }
    let c = &s.counts;
    out.push_str(&format!(
        "\n{} file(s): {} verified, {} with problems, {} could not be checked, {} skipped{} in {}\n",
        s.total,
        c.verified,
        c.problems,
        c.failed,
        c.skipped,
        if c.interrupted > 0 { format!(", {} interrupted", c.interrupted) } else { String::new() },
        fmt_ms(s.elapsed_ms)
    ));
    out
}
