//! `loopkit report`: one self-contained HTML page (no network, readable without scripts; a
//! small optional script sorts the table) from `verify --json-lines` output or a fixity
//! catalog — the batch summary, one table row per image, and for each image with dvdisaster
//! error-correction data a sector map (SVG, dvdisaster's colours: good, CRC error, unreadable).
//! Also the sector map alone for `verify --map FILE.svg`.

use super::ErrorDoc;
use super::Verify;
use super::batch::{CatalogRecord, Counts, Row, Summary, Verdict};

/// The sectors of one image for its map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectorMap {
    /// The image.
    pub image: String,
    /// Sectors covered (augmented images: data and ECC).
    pub sectors: u64,
    /// Sectors failing their CRC (`dvdisaster -t`'s CRC errors).
    pub crc_errors: Vec<u64>,
    /// Sectors missing or unreadable.
    pub unreadable: Vec<u64>,
    /// The ECC verdict as a word: whether `loopkit repair` can restore the image is decided
    /// per image, not per sector.
    pub note: String,
}

impl SectorMap {
    /// The map of a verify document, if it checked dvdisaster ECC data.
    pub fn of(doc: &Verify) -> Option<SectorMap> {
        let e = doc.inspect.ecc.as_ref()?;
        let crc_errors = e.bad_sectors.clone()?;
        let unreadable = e.missing_sectors.clone().unwrap_or_default();
        let sectors = e.expected_sectors.unwrap_or(e.data_sectors).max(1);
        let note = format!(
            "{} {}, {} roots: {} CRC error(s), {} unreadable",
            e.method,
            e.placement,
            e.roots,
            crc_errors.len(),
            unreadable.len()
        );
        Some(SectorMap { image: doc.inspect.image.clone(), sectors, crc_errors, unreadable, note })
    }
}

/// Escape text for HTML/XML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// Cells per row of a map, and the largest number of cells drawn (bigger images: a cell covers
/// several sectors and takes the colour of its worst one).
const COLUMNS: u64 = 64;
const MAX_CELLS: u64 = 64 * 64;
const CELL: u64 = 8;

/// The SVG sector map (standalone document when `standalone`, else inline in HTML). Every
/// damaged cell is one `<rect class="crc|unreadable" data-first="N" data-last="M">`
/// (`data-sector="N"` when the cell is one sector); good cells are the background.
pub fn svg(m: &SectorMap, standalone: bool) -> String {
    let per_cell = m.sectors.div_ceil(MAX_CELLS).max(1);
    let cells = m.sectors.div_ceil(per_cell);
    let rows = cells.div_ceil(COLUMNS).max(1);
    let (w, h) = (COLUMNS * CELL, rows * CELL);
    let mut worst: std::collections::BTreeMap<u64, &str> = std::collections::BTreeMap::new();
    // Sectors past the image (a hostile or broken results file) have no cell: left out, counted.
    let mut outside = 0u64;
    for &s in &m.crc_errors {
        if s < m.sectors {
            worst.entry(s / per_cell).or_insert("crc");
        } else {
            outside = outside.saturating_add(1);
        }
    }
    for &s in &m.unreadable {
        if s < m.sectors {
            worst.insert(s / per_cell, "unreadable");
        } else {
            outside = outside.saturating_add(1);
        }
    }
    let mut o = String::new();
    if standalone {
        o.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    }
    o.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"sector-map\" width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" \
         data-sectors=\"{}\" data-sectors-per-cell=\"{per_cell}\" role=\"img\">\n",
        h + 16,
        h + 16,
        m.sectors
    ));
    o.push_str(&format!("<title>{}: {}</title>\n", esc(&m.image), esc(&m.note)));
    o.push_str("<style>.good{fill:#3a3}.crc{fill:#fb0}.unreadable{fill:#d22}.pad{fill:#ddd}text{font:10px sans-serif}</style>\n");
    // Good background over the used cells, grey padding after the last one.
    let full_rows = cells / COLUMNS;
    if full_rows > 0 {
        o.push_str(&format!("<rect class=\"good\" x=\"0\" y=\"0\" width=\"{w}\" height=\"{}\"/>\n", full_rows * CELL));
    }
    let rest = cells % COLUMNS;
    if rest > 0 {
        o.push_str(&format!(
            "<rect class=\"good\" x=\"0\" y=\"{}\" width=\"{}\" height=\"{CELL}\"/>\n<rect class=\"pad\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{CELL}\"/>\n",
            full_rows * CELL,
            rest * CELL,
            rest * CELL,
            full_rows * CELL,
            (COLUMNS - rest) * CELL
        ));
    }
    for (cell, class) in &worst {
        let first = cell * per_cell;
        let last = first.saturating_add(per_cell - 1).min(m.sectors.saturating_sub(1));
        let (x, y) = ((cell % COLUMNS) * CELL, (cell / COLUMNS) * CELL);
        let attr = if per_cell == 1 {
            format!("data-sector=\"{first}\"")
        } else {
            format!("data-first=\"{first}\" data-last=\"{last}\"")
        };
        o.push_str(&format!(
            "<rect class=\"{class}\" x=\"{x}\" y=\"{y}\" width=\"{CELL}\" height=\"{CELL}\" {attr}><title>sector {first}{}: {}</title></rect>\n",
            if last > first { format!("-{last}") } else { String::new() },
            if *class == "crc" { "CRC error" } else { "unreadable" }
        ));
    }
    o.push_str(&format!(
        "<text x=\"0\" y=\"{}\">{} sectors of 2048 bytes, {} per cell: green good, yellow CRC error, red unreadable</text>\n",
        h + 12,
        m.sectors,
        per_cell
    ));
    if outside > 0 {
        o.push_str(&format!(
            "<text x=\"0\" y=\"{}\">{outside} damaged sector number(s) beyond the image's {} sectors left out</text>\n",
            h.saturating_add(24),
            m.sectors
        ));
    }
    o.push_str("</svg>\n");
    o
}

/// What a report is made of.
#[derive(Debug, Default)]
pub struct Input {
    /// One row per image.
    pub rows: Vec<Row>,
    /// Sector maps.
    pub maps: Vec<SectorMap>,
    /// Lines that were not understood.
    pub unreadable_lines: u64,
    /// `results` or `catalog`.
    pub source: String,
    /// Damaged files (damaged, repairable, lost) by image, where known.
    pub damaged: std::collections::HashMap<String, (u64, u64, u64)>,
    /// A catalog's records by image (oldest check first), for the per-image sections.
    pub history: std::collections::BTreeMap<String, Vec<CatalogRecord>>,
}

/// Read `verify --json-lines` output (verify documents, error documents, summaries; several
/// files concatenated are fine) or a catalog (its latest record per image).
pub fn parse(text: &str) -> Input {
    let mut input = Input { source: "results".into(), ..Input::default() };
    let mut summary_rows: Vec<Row> = Vec::new();
    let mut doc_rows: Vec<Row> = Vec::new();
    let mut records: std::collections::BTreeMap<String, CatalogRecord> = Default::default();
    let mut history: std::collections::BTreeMap<String, Vec<CatalogRecord>> = Default::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            input.unreadable_lines += 1;
            continue;
        };
        if v.get("loopkit_catalog").is_some() {
            match serde_json::from_value::<CatalogRecord>(v) {
                Ok(r) => {
                    history.entry(r.path.clone()).or_default().push(r.clone());
                    if records.get(&r.path).is_none_or(|o| o.verified_at <= r.verified_at) {
                        records.insert(r.path.clone(), r);
                    }
                }
                Err(_) => input.unreadable_lines += 1,
            }
            continue;
        }
        if v.get("loopkit_catalog_run").is_some() {
            continue;
        }
        match v.get("command").and_then(|c| c.as_str()) {
            Some("verify-batch") => match serde_json::from_value::<Summary>(v) {
                Ok(s) => summary_rows.extend(s.rows),
                Err(_) => input.unreadable_lines += 1,
            },
            Some("verify") if v.get("error").is_some() => match serde_json::from_value::<ErrorDoc>(v) {
                Ok(e) => doc_rows.push(Row {
                    image: e.image.unwrap_or_default(),
                    verdict: Verdict::Failed,
                    scheme: None,
                    filesystem: None,
                    bad_sectors: None,
                    unreadable_bytes: 0,
                    files_changed: None,
                    problems: vec![e.error.kind],
                    message: Some(e.error.message),
                    payload_sha256: None,
                    elapsed_ms: 0,
                }),
                Err(_) => input.unreadable_lines += 1,
            },
            Some("verify") => match serde_json::from_value::<Verify>(v) {
                Ok(d) => {
                    if let Some(x) = &d.damage {
                        input
                            .damaged
                            .insert(d.inspect.image.clone(), (x.files_damaged, x.files_repairable, x.files_lost));
                    }
                    doc_rows.push(super::batch::row_of(&d.inspect.image, &d, 0));
                    input.maps.extend(SectorMap::of(&d));
                }
                Err(_) => input.unreadable_lines += 1,
            },
            _ => input.unreadable_lines += 1,
        }
    }
    if !records.is_empty() {
        input.source = "catalog".into();
        for r in records.values() {
            if let (Some(n), Some(rep), Some(l)) = (r.files_damaged, r.files_repairable, r.files_lost) {
                input.damaged.insert(r.path.clone(), (n, rep, l));
            }
        }
        for v in history.values_mut() {
            v.sort_by_key(|r| r.verified_at);
        }
        input.history = history;
        input.rows.extend(records.into_values().map(|r| Row {
            image: r.path,
            verdict: r.verdict,
            scheme: r.scheme,
            filesystem: r.filesystem,
            bad_sectors: r.bad_sectors,
            unreadable_bytes: 0,
            files_changed: None,
            problems: r.problems,
            message: Some(format!("checked {}", r.verified_at_utc)),
            payload_sha256: r.payload_sha256,
            elapsed_ms: r.elapsed_ms,
        }));
    }
    // Summary rows carry times and skipped files; documents fill in images no summary lists.
    let listed: std::collections::HashSet<String> = summary_rows.iter().map(|r| r.image.clone()).collect();
    input.rows.extend(summary_rows);
    input.rows.extend(doc_rows.into_iter().filter(|r| !listed.contains(&r.image)));
    input
}

const SORT_SCRIPT: &str = "document.querySelectorAll('th').forEach(function(th,i){th.style.cursor='pointer';\
th.addEventListener('click',function(){var tb=th.closest('table').tBodies[0];var rs=Array.from(tb.rows);\
var asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';rs.sort(function(a,b){var x=a.cells[i].dataset.v||a.cells[i].textContent,\
y=b.cells[i].dataset.v||b.cells[i].textContent,nx=parseFloat(x),ny=parseFloat(y);var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);\
return asc?c:-c;});rs.forEach(function(r){tb.appendChild(r);});});});";

/// The whole page.
pub fn html(title: &str, input: &Input) -> String {
    let mut counts = Counts::default();
    for r in &input.rows {
        counts.add(r.verdict);
    }
    let mut o = String::new();
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    o.push_str(&format!("<title>{}</title>\n", esc(title)));
    o.push_str(
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}th,td{border:1px solid #bbb;\
padding:.2em .5em;text-align:left}td.n{text-align:right}tr.verified td.v{background:#cfc}tr.problems td.v{background:#fdb}\
tr.failed td.v{background:#f99}tr.skipped td.v,tr.interrupted td.v{background:#eee}figure{display:inline-block;margin:.5em}\
.sector-map .good{fill:#3a3}.sector-map .crc{fill:#fb0}.sector-map .unreadable{fill:#d22}\
.sector-map .repairable{fill:#fb0}.sector-map .lost{fill:#d22}.sector-map .unread{fill:#999}.sector-map .pad{fill:#ddd}\
tr.digest-changed td.d{background:#fdb}section.image{margin-top:1.5em;border-top:1px solid #bbb}</style>\n</head>\n<body>\n",
    );
    o.push_str(&format!("<h1>{}</h1>\n", esc(title)));
    o.push_str(&format!(
        "<section id=\"summary\"><p>{} image(s) from {}: <b>{}</b> verified, <b>{}</b> with problems, <b>{}</b> could not be \
         checked, {} skipped, {} interrupted.</p></section>\n",
        input.rows.len(),
        esc(&input.source),
        counts.verified,
        counts.problems,
        counts.failed,
        counts.skipped,
        counts.interrupted
    ));
    o.push_str(
        "<table id=\"images\">\n<thead><tr><th>image</th><th>verdict</th><th>scheme</th><th>file system</th>\
<th>bad sectors</th><th>files damaged</th><th>files changed</th><th>time (s)</th><th>problems</th></tr></thead>\n<tbody>\n",
    );
    let dash = || "-".to_string();
    for r in &input.rows {
        let problems = match &r.message {
            Some(m) if r.problems.is_empty() => m.clone(),
            Some(m) => format!("{}: {m}", r.problems.join(", ")),
            None => r.problems.join(", "),
        };
        o.push_str(&format!(
            "<tr class=\"{v}\"><td>{}</td><td class=\"v\">{v}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td>{}</td></tr>\n",
            esc(&r.image),
            esc(r.scheme.as_deref().unwrap_or("-")),
            esc(r.filesystem.as_deref().unwrap_or("-")),
            r.bad_sectors.map_or_else(dash, |n| n.to_string()),
            input.damaged.get(&r.image).map_or_else(dash, |&(n, rep, l)| files_damaged(n, rep, l)),
            r.files_changed.map_or_else(dash, |n| n.to_string()),
            r.elapsed_ms as f64 / 1000.0,
            esc(&problems),
            v = r.verdict.as_str(),
        ));
    }
    o.push_str("</tbody>\n</table>\n");
    if !input.maps.is_empty() {
        o.push_str("<section id=\"maps\">\n<h2>Sector maps (dvdisaster error correction data)</h2>\n");
        for m in &input.maps {
            o.push_str(&format!(
                "<figure data-image=\"{}\">\n<figcaption>{}<br>{}</figcaption>\n",
                esc(&m.image),
                esc(&m.image),
                esc(&m.note)
            ));
            o.push_str(&svg(m, false));
            o.push_str("</figure>\n");
        }
        o.push_str("</section>\n");
    }
    if !input.history.is_empty() {
        o.push_str("<section id=\"history\">\n<h2>Images: sector map, damaged files, history</h2>\n");
        for (image, records) in &input.history {
            image_section(&mut o, image, records);
        }
        o.push_str("</section>\n");
    }
    if input.unreadable_lines > 0 {
        o.push_str(&format!("<p>{} input line(s) were not understood and left out.</p>\n", input.unreadable_lines));
    }
    o.push_str(&format!("<script>{SORT_SCRIPT}</script>\n</body>\n</html>\n"));
    o
}

/// `3 (2 repairable, 1 lost)`.
fn files_damaged(n: u64, rep: u64, lost: u64) -> String {
    if n == 0 { "0".into() } else { format!("{n} ({rep} repairable, {lost} lost)") }
}

/// One image of a catalog: its latest sector map and damaged files, and every check.
fn image_section(o: &mut String, image: &str, records: &[CatalogRecord]) {
    let dash = || "-".to_string();
    let Some(latest) = records.last() else { return };
    o.push_str(&format!(
        "<section class=\"image\" data-image=\"{}\">\n<h3>{}</h3>\n<p>Latest check {}: <b>{}</b>.</p>\n",
        esc(image),
        esc(image),
        esc(&latest.verified_at_utc),
        latest.verdict.as_str()
    ));
    match &latest.sector_map {
        Some(m) => {
            o.push_str(&format!("<figure class=\"bins\" data-image=\"{}\">\n", esc(image)));
            o.push_str(&bins_svg(image, m));
            o.push_str("</figure>\n");
        }
        None => o.push_str("<p class=\"no-map\">Sector map: - (not recorded by the loopkit that checked it)</p>\n"),
    }
    match &latest.damaged_files {
        None => o.push_str("<p class=\"damaged-files-unknown\">Damaged files: - (not known)</p>\n"),
        Some(list) if list.is_empty() => o.push_str("<p class=\"damaged-files-none\">Damaged files: none.</p>\n"),
        Some(list) => {
            o.push_str(&format!(
                "<p>Damaged files: {}.</p>\n<table class=\"damaged-files\">\n<thead><tr><th>file</th><th>verdict</th></tr></thead>\n<tbody>\n",
                files_damaged(
                    latest.files_damaged.unwrap_or(list.len() as u64),
                    latest.files_repairable.unwrap_or(0),
                    latest.files_lost.unwrap_or(0)
                )
            ));
            for f in list {
                let v = match f.verdict {
                    crate::damage::Verdict::Intact => "intact",
                    crate::damage::Verdict::Repairable => "repairable",
                    crate::damage::Verdict::Lost => "lost",
                };
                o.push_str(&format!("<tr class=\"{v}\"><td>/{}</td><td>{v}</td></tr>\n", esc(&f.path)));
            }
            o.push_str("</tbody>\n</table>\n");
            let more = latest.files_damaged.unwrap_or(0).saturating_sub(list.len() as u64);
            if more > 0 {
                o.push_str(&format!("<p>{more} more damaged file(s) not recorded in the catalog.</p>\n"));
            }
        }
    }
    o.push_str(
        "<table class=\"history\">\n<thead><tr><th>checked (UTC)</th><th>verdict</th><th>payload</th>\
<th>payload SHA-256</th><th>bad sectors</th><th>files damaged</th><th>problems</th><th>loopkit</th></tr></thead>\n<tbody>\n",
    );
    let mut before: Option<&str> = None;
    for r in records {
        let now = r.payload_sha256.as_deref();
        let (class, word) = match (before, now) {
            (_, None) => ("", "-"),
            (None, Some(_)) => ("", "first"),
            (Some(b), Some(n)) if b == n => ("", "unchanged"),
            (Some(_), Some(_)) => (" digest-changed", "changed"),
        };
        if now.is_some() {
            before = now;
        }
        o.push_str(&format!(
            "<tr class=\"{v}{class}\" data-verified-at=\"{}\"><td>{}</td><td class=\"v\">{v}</td><td class=\"d\">{word}</td>\
<td><code>{}</code></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>\n",
            r.verified_at,
            esc(&r.verified_at_utc),
            esc(now.unwrap_or("-")),
            r.bad_sectors.map_or_else(dash, |n| n.to_string()),
            match (r.files_damaged, r.files_repairable, r.files_lost) {
                (Some(n), Some(rep), Some(l)) => files_damaged(n, rep, l),
                _ => dash(),
            },
            esc(&r.problems.join(", ")),
            esc(&r.loopkit_version),
            v = r.verdict.as_str(),
        ));
    }
    o.push_str("</tbody>\n</table>\n</section>\n");
}

/// The SVG of a catalog record's sector map: one `<rect class="repairable|lost|unread"
/// data-first="N" data-last="M">` per run of bins of one verdict on a row (first and last
/// sector of the run); good bins are the background. A map that does not add up (a hand-edited
/// or foreign catalog) is drawn as a note instead.
pub fn bins_svg(image: &str, m: &crate::batch::catalog::SectorBins) -> String {
    let n = m.bins.len() as u64;
    let valid = m.sectors_per_bin > 0
        && n <= crate::batch::catalog::MAX_BINS
        && n == m.sectors.div_ceil(m.sectors_per_bin)
        && m.bins.bytes().all(|c| matches!(c, b'.' | b'r' | b'l' | b'u'));
    if !valid {
        return "<p class=\"no-map\">Sector map: - (the catalog's map does not add up)</p>\n".into();
    }
    let rows = n.div_ceil(COLUMNS).max(1);
    let (w, h) = (COLUMNS * CELL, rows * CELL);
    let per = m.sectors_per_bin;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"sector-map\" width=\"{w}\" height=\"{}\" viewBox=\"0 0 {w} {}\" \
         data-sectors=\"{}\" data-sector-bytes=\"{}\" data-sectors-per-bin=\"{per}\" role=\"img\">\n",
        h + 16,
        h + 16,
        m.sectors,
        m.sector_bytes
    );
    let count = |c: char| m.bins.chars().filter(|&x| x == c).count();
    o.push_str(&format!(
        "<title>{}: {} bin(s) lost, {} repairable, {} unread</title>\n",
        esc(image),
        count('l'),
        count('r'),
        count('u')
    ));
    o.push_str(&format!("<rect class=\"pad\" x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\"/>\n"));
    let full = n / COLUMNS;
    if full > 0 {
        o.push_str(&format!("<rect class=\"good\" x=\"0\" y=\"0\" width=\"{w}\" height=\"{}\"/>\n", full * CELL));
    }
    if !n.is_multiple_of(COLUMNS) {
        o.push_str(&format!(
            "<rect class=\"good\" x=\"0\" y=\"{}\" width=\"{}\" height=\"{CELL}\"/>\n",
            full * CELL,
            (n % COLUMNS) * CELL
        ));
    }
    let bins = m.bins.as_bytes();
    let mut i = 0u64;
    while i < n {
        let c = bins[i as usize];
        let mut j = i + 1;
        while j < n && bins[j as usize] == c && !j.is_multiple_of(COLUMNS) {
            j += 1;
        }
        if c != b'.' {
            let class = match c {
                b'r' => "repairable",
                b'l' => "lost",
                _ => "unread",
            };
            let first = i.saturating_mul(per);
            let last = j.saturating_mul(per).min(m.sectors).saturating_sub(1);
            o.push_str(&format!(
                "<rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{CELL}\" data-first=\"{first}\" \
                 data-last=\"{last}\"><title>sectors {first}-{last}: {class}</title></rect>\n",
                (i % COLUMNS) * CELL,
                (i / COLUMNS) * CELL,
                (j - i) * CELL
            ));
        }
        i = j;
    }
    o.push_str(&format!(
        "<text x=\"0\" y=\"{}\">{} sectors of {} bytes, {per} per cell (worst verdict): green good, yellow repairable, \
         red lost, grey unread</text>\n</svg>\n",
        h + 12,
        m.sectors,
        m.sector_bytes
    ));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_marks_each_damaged_sector_once() {
        let m = SectorMap {
            image: "a<b".into(),
            sectors: 100,
            crc_errors: vec![3, 50],
            unreadable: vec![50, 99],
            note: String::new(),
        };
        let s = svg(&m, true);
        assert!(s.contains("data-sector=\"3\"") && s.contains("data-sector=\"99\""));
        assert_eq!(s.matches("data-sector=\"50\"").count(), 1);
        assert!(s.contains("a&lt;b"));
    }

    /// L8: absurd sector numbers and counts from a hostile results file: no overflow (a panic
    /// with overflow-checks), out-of-range sectors left out and counted.
    #[test]
    fn svg_survives_absurd_numbers() {
        for sectors in [8193, u64::MAX, 1] {
            let m = SectorMap {
                image: "x".into(),
                sectors,
                crc_errors: vec![u64::MAX, u64::MAX - 1, 0],
                unreadable: vec![u64::MAX, sectors.saturating_sub(1)],
                note: String::new(),
            };
            let s = svg(&m, true);
            assert!(s.contains("beyond the image"), "{s}");
            assert!(!s.contains(&format!("data-first=\"{}\"", u64::MAX)));
        }
    }
}
