//! `loopkit catalog FILE [--import FILE...]`: summarise (and merge into) a fixity catalog.

use crate::cli::CatalogArgs;
use loopkit::batch::catalog;

/// Run it; exit 0, or 1 when the catalog lists failing or changed images.
pub fn run(a: &CatalogArgs) -> loopkit::Result<u8> {
    let imported = if a.import.is_empty() {
        None
    } else {
        let w = catalog::Writer::open(&a.catalog)?;
        let (n, bad) = w.import(&a.import)?;
        if bad > 0 {
            eprintln!("loopkit: warning: {bad} line(s) of the imported files are not catalog records (left out)");
        }
        Some(n)
    };
    if !a.catalog.exists() {
        return Err(loopkit::Error::invalid(format!("{}: no such catalog", a.catalog.display())));
    }
    let c = catalog::read(&a.catalog)?;
    let s = loopkit::report::batch::catalog_summary(&a.catalog, &c, imported);
    if a.json {
        super::print_json(&s)?;
    } else {
        let k = &s.counts;
        let mut out = format!(
            "catalog      {}\nrecords      {} ({} image(s))\nlatest       {} verified, {} with problems, {} could not be checked\n",
            s.catalog, s.records, s.images, k.verified, k.problems, k.failed
        );
        if let Some(n) = s.imported {
            out.push_str(&format!("imported     {n} new record(s)\n"));
        }
        if let Some(o) = &s.oldest {
            out.push_str(&format!("oldest       {} (checked {})\n", o.path, o.verified_at_utc));
        }
        for p in &s.changed {
            out.push_str(&format!("changed      {p} (payload SHA-256 differs between checks)\n"));
        }
        for p in &s.failing {
            out.push_str(&format!("failing      {p}\n"));
        }
        if s.unreadable_lines > 0 {
            let at: Vec<String> = s.unreadable_line_numbers.iter().map(u64::to_string).collect();
            let more = if (at.len() as u64) < s.unreadable_lines { ", …" } else { "" };
            out.push_str(&format!(
                "unreadable   {} line(s) are not catalog records (torn, invalid UTF-8 or foreign; line {}{more}); skipped\n",
                s.unreadable_lines,
                at.join(", ")
            ));
        }
        super::print(&out)?;
    }
    Ok(if s.failing.is_empty() && s.changed.is_empty() { 0 } else { 1 })
}
