//! `loopkit report RESULTS.jsonl|CATALOG [-o report.html]`: the HTML page.

use crate::cli::ReportArgs;

/// Run it.
pub fn run(a: &ReportArgs) -> loopkit::Result<u8> {
    let bytes =
        std::fs::read(&a.input).map_err(|e| loopkit::Error::io(format!("cannot read {}", a.input.display()), e))?;
    let input = loopkit::report::html::parse(&String::from_utf8_lossy(&bytes));
    if input.rows.is_empty() {
        return Err(loopkit::Error::invalid(format!(
            "{}: no verify results or catalog records found",
            a.input.display()
        )));
    }
    let title = format!("loopkit report: {}", a.input.display());
    let page = loopkit::report::html::html(&title, &input);
    match &a.output {
        None => super::print_exact(&page)?,
        Some(out) => {
            loopkit::output::write_file_atomically(out, page.as_bytes(), a.force, 0o644, &[a.input.as_path()])?
        }
    }
    Ok(0)
}
