//! `loopkit report CATALOG`: the per-image sections an archivist reads — the sector map coloured
//! by verdict, the damaged files, and the history of checks — parsed by html5lib (an independent
//! HTML5 parser) and compared with independent oracles: which sectors were damaged and whether
//! dvdisaster restores them (`ecc.py erase`/`fix`, as tests/damage.rs), which files they hit
//! (`debugfs icheck`/`ncheck`, tests/damage.rs's oracle), and the catalog's own lines read by
//! Python's json module (count, dates, payload digest changes). The image's name is hostile
//! (`<`, `&`, quotes) and the catalog holds a record written before the catalog kept the map.

use crate::damage::{SECTOR, Want};
use crate::ensure;
use crate::util::{self, Scratch, TestResult, code, loopkit, run, run_ok, trial};
use libtest_mimic::{Completion, Failed, Trial};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

pub fn trials() -> Vec<Trial> {
    vec![trial("report::catalog_map_files_history", catalog_map_files_history)]
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// The report's parts, as html5lib sees them.
const PARSER: &str = r#"
import json, sys, html5lib
doc = html5lib.parse(open(sys.argv[1], 'rb'), namespaceHTMLElements=False)
text = lambda e: ''.join(e.itertext()).strip()
out = {'rows': [[text(td) for td in tr.findall('td')] for tr in doc.findall('.//table[@id="images"]/tbody/tr')],
       'images': {}, 'external': []}
for e in doc.iter():
    if not isinstance(e.tag, str):
        continue
    for a in ('src', 'href'):
        if e.get(a) is not None:
            out['external'].append(e.get(a))
    if e.tag == 'link':
        out['external'].append('link')
for sec in doc.iter('section'):
    if sec.get('class') != 'image':
        continue
    im = {'h3': text(sec.find('h3')), 'no_map': sec.find('.//p[@class="no-map"]') is not None,
          'svg': None, 'rects': [], 'files': None, 'history': []}
    for e in sec.iter():
        if isinstance(e.tag, str) and e.tag.endswith('svg'):
            im['svg'] = {k: e.get(k) for k in ('data-sectors', 'data-sectors-per-bin', 'data-sector-bytes')}
        if isinstance(e.tag, str) and e.tag.endswith('rect') and e.get('data-first') is not None:
            im['rects'].append([e.get('class'), int(e.get('data-first')), int(e.get('data-last'))])
    t = sec.find('.//table[@class="damaged-files"]')
    if t is not None:
        im['files'] = [[text(td) for td in tr.findall('td')] for tr in t.findall('tbody/tr')]
    elif sec.find('.//p[@class="damaged-files-none"]') is not None:
        im['files'] = []
    h = sec.find('.//table[@class="history"]')
    if h is not None:
        im['history'] = [[text(td) for td in tr.findall('td')] for tr in h.findall('tbody/tr')]
    out['images'][sec.get('data-image')] = im
print(json.dumps(out))
"#;

/// The catalog's records per path in file order, sorted by check time (stable), each with the
/// payload word the history must show: first / unchanged / changed / - (Python's json module).
const CATALOG: &str = r#"
import json, sys
recs = {}
for line in open(sys.argv[1], encoding='utf-8', errors='replace'):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if isinstance(v, dict) and 'loopkit_catalog' in v:
        recs.setdefault(v['path'], []).append(v)
out = {}
for path, rs in recs.items():
    rs.sort(key=lambda r: r['verified_at'])
    prev, rows = None, []
    for r in rs:
        d = r.get('payload_sha256')
        word = '-' if d is None else 'first' if prev is None else 'unchanged' if d == prev else 'changed'
        if d is not None:
            prev = d
        rows.append([r['verified_at_utc'], r['verdict'], word])
    out[path] = rows
print(json.dumps(out))
"#;

fn python_json(script: &str, arg: &Path) -> Result<Value, Failed> {
    let out = run_ok(Command::new(util::python()).args(["-c", script, s(arg)]))?;
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string().into())
}

/// `verify IMG --catalog CAT`.
fn check(img: &Path, cat: &Path) -> Result<(), Failed> {
    let o = run(&mut loopkit(&["verify", s(img), "--catalog", s(cat), "--quiet"]))?;
    ensure!(code(&o) <= 1, "verify --catalog: exit {}: {}", code(&o), String::from_utf8_lossy(&o.stderr));
    Ok(())
}

fn catalog_map_files_history() -> TestResult {
    if let Some(m) = crate::damage::missing() {
        return util::skip(m);
    }
    if let Some(why) = util::python_module_missing("html5lib") {
        return util::skip(why);
    }
    let d = Scratch::new("report-catalog");
    let (_, plain) = crate::damage::ext4_fixture(&d)?;
    let name = "disc <1> & \"rock\" 'n' roll.img";
    let (img, orig) = crate::damage::augmented(&d, &plain, name)?;
    let cat = d.path("catalog.jsonl");
    // 1: the undamaged image.
    check(&img, &cat)?;
    // 2: a few sectors dvdisaster restores (a block of /sub/f1, the slow symlink, a free block).
    let num = |cmd: &str| crate::damage::number(&plain, cmd);
    let first = vec![num("bmap /sub/f1 3")? * 2 + 1, num("bmap /slowlink 0")? * 2, num("ffb 1 1500")? * 2];
    let judged = crate::damage::damage_and_judge(&d, &img, &orig, &first)?;
    ensure!(judged.values().all(|l| !l), "dvdisaster should restore these few sectors: {judged:?}");
    check(&img, &cat)?;
    // 3: more than the error-correction data restores (1300 sectors of /sub/big, a block of
    // /sub/f1); all of it judged again by dvdisaster.
    let big = num("bmap /sub/big 20")?;
    let mut all: Vec<u64> = (big * 2 + 1..big * 2 + 1301).collect();
    all.push(num("bmap /sub/f1 2")? * 2);
    all.extend(&first);
    let judged = crate::damage::damage_and_judge(&d, &img, &orig, &all)?;
    ensure!(judged.values().any(|l| *l), "dvdisaster restored everything: the damage is not beyond the ECC");
    check(&img, &cat)?;
    // 4: unchanged.
    check(&img, &cat)?;
    // A record from before the catalog kept scheme, file system, damage and map: the first one,
    // without those fields, for another path.
    let text = std::fs::read_to_string(&cat).map_err(|e| e.to_string())?;
    let mut old: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("loopkit_catalog").is_some())
        .ok_or("no record in the catalog")?;
    let o = old.as_object_mut().ok_or("record is not an object")?;
    for k in [
        "scheme",
        "filesystem",
        "bad_sectors",
        "files_damaged",
        "files_repairable",
        "files_lost",
        "damaged_files",
        "sector_map",
    ] {
        ensure!(o.remove(k).is_some() || k == "damaged_files", "the new record lacks {k}: {old}");
    }
    let old_path = "/archive/old <record>.img";
    o.insert("path".into(), old_path.into());
    std::fs::write(&cat, format!("{text}{old}\n")).map_err(|e| e.to_string())?;
    let html = d.path("report.html");
    run_ok(&mut loopkit(&["report", s(&cat), "-o", s(&html)]))?;
    let got = python_json(PARSER, &html)?;
    let records = python_json(CATALOG, &cat)?;
    ensure!(got["external"].as_array().is_some_and(Vec::is_empty), "the report loads {}", got["external"]);
    let path = std::fs::canonicalize(&img).map_err(|e| e.to_string())?.display().to_string();
    let im = &got["images"][&path];
    ensure!(
        im.is_object(),
        "no section for {path} (names escaped?): {:?}",
        got["images"].as_object().map(|m| m.keys().collect::<Vec<_>>())
    );
    ensure!(im["h3"] == path.as_str(), "heading {} for {path}", im["h3"]);
    // History: one row per record, in order, with its date, verdict and digest change.
    let want_hist = records[&path].as_array().ok_or("no records for the image")?;
    let hist = im["history"].as_array().ok_or("no history")?;
    ensure!(
        hist.len() == 4 && want_hist.len() == 4,
        "history rows {}, catalog records {}",
        hist.len(),
        want_hist.len()
    );
    for (h, w) in hist.iter().zip(want_hist) {
        ensure!(h[0] == w[0] && h[1] == w[1] && h[2] == w[2], "history row {h}, catalog {w}");
    }
    let words: Vec<&str> = want_hist.iter().filter_map(|w| w[2].as_str()).collect();
    ensure!(words == ["first", "changed", "changed", "unchanged"], "payload digests: {words:?}");
    // Sector map: bins of at most 4096, each marked with the worst verdict of its sectors.
    let size = std::fs::metadata(&img).map_err(|e| e.to_string())?.len();
    let sectors = size.div_ceil(SECTOR);
    let svg = &im["svg"];
    let per: u64 = svg["data-sectors-per-bin"].as_str().and_then(|x| x.parse().ok()).ok_or("no bin size")?;
    ensure!(
        svg["data-sectors"] == sectors.to_string().as_str() && per == sectors.div_ceil(4096).max(1),
        "map of {sectors} sectors: {svg}"
    );
    ensure!(per > 1, "the fixture should need bins of several sectors ({sectors} sectors)");
    let mut want_bins: BTreeMap<u64, &str> = BTreeMap::new();
    for (&x, &lost) in &judged {
        let e = want_bins.entry(x / per).or_insert("repairable");
        if lost {
            *e = "lost";
        }
    }
    let mut got_bins: BTreeMap<u64, String> = BTreeMap::new();
    for r in im["rects"].as_array().into_iter().flatten() {
        let (class, a, b) = (r[0].as_str().unwrap_or(""), r[1].as_u64().unwrap_or(0), r[2].as_u64().unwrap_or(0));
        for bin in a / per..=b / per {
            ensure!(got_bins.insert(bin, class.to_string()).is_none(), "bin {bin} drawn twice");
        }
    }
    let want_bins: BTreeMap<u64, String> = want_bins.into_iter().map(|(k, v)| (k, v.to_string())).collect();
    ensure!(got_bins == want_bins, "map bins {got_bins:?}\noracle {want_bins:?}");
    // Damaged files: exactly the ones debugfs names for the damaged sectors, with their verdicts.
    let psize = std::fs::metadata(&plain).map_err(|e| e.to_string())?.len();
    let (want, _) = crate::damage::ext_oracle(&plain, &crate::damage::plain_hits(&judged, psize))?;
    let want_files: BTreeMap<String, &str> = want
        .iter()
        .map(|(p, w): (&String, &Want)| (format!("/{p}"), if w.any_lost { "lost" } else { "repairable" }))
        .collect();
    let got_files: BTreeMap<String, String> = im["files"]
        .as_array()
        .ok_or("no damaged-file list")?
        .iter()
        .filter_map(|r| Some((r[0].as_str()?.to_string(), r[1].as_str()?.to_string())))
        .collect();
    let want_files: BTreeMap<String, String> = want_files.into_iter().map(|(k, v)| (k, v.to_string())).collect();
    ensure!(got_files == want_files, "damaged files {got_files:?}\noracle (debugfs) {want_files:?}");
    // The table: scheme, file system, bad sectors, files damaged.
    let rows = got["rows"].as_array().ok_or("no table")?;
    let row = rows.iter().find(|r| r[0] == path.as_str()).ok_or("no table row for the image")?;
    let (n, l) = (want_files.len(), want_files.values().filter(|v| *v == "lost").count());
    let files_cell = format!("{n} ({} repairable, {l} lost)", n - l);
    ensure!(
        row[2] == "plain"
            && row[3] == "ext4"
            && row[4] == judged.len().to_string().as_str()
            && row[5] == files_cell.as_str(),
        "table row {row}, want plain, ext4, {} bad sectors, {files_cell}",
        judged.len()
    );
    // The old record: shown, "-" where it knows nothing.
    let row = rows.iter().find(|r| r[0] == old_path).ok_or("no table row for the old record")?;
    ensure!(row[2] == "-" && row[3] == "-" && row[4] == "-" && row[5] == "-", "old record's row {row}");
    let im = &got["images"][old_path];
    ensure!(
        im["no_map"] == true && im["files"].is_null() && im["history"].as_array().map_or(0, Vec::len) == 1,
        "old record: {im}"
    );
    Ok(Completion::Completed)
}
