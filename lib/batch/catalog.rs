//! The fixity catalog: an append-only JSON-lines file, one [`CatalogRecord`] per image check plus
//! run markers. Why JSON lines rather than SQLite: it is append-only by nature (an interrupted
//! writer can at worst leave one partial last line, which readers skip and count), mergeable with
//! `cat`, readable with `jq`/`grep`, diffable, and needs no bundled C library. Concurrent writers
//! (two batches, GNU parallel jobs) are serialised with `flock(LOCK_EX)` on the file around each
//! append of a whole line, and `--import` holds the lock while it reads and appends, so a merge
//! is idempotent (records already present are not added again) and safe against a concurrent
//! run.

use super::Verdict;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One line of a fixity catalog (`--catalog FILE`, JSON lines, append-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogRecord {
    /// Always 1.
    pub loopkit_catalog: u32,
    /// Absolute path of the image (symlinks resolved).
    pub path: String,
    /// Size of the image file.
    pub size_bytes: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// `st_dev` of the file.
    pub device: u64,
    /// Inode number.
    pub inode: u64,
    /// SHA-256 of the decrypted payload (null when it was not computed).
    pub payload_sha256: Option<String>,
    /// dvdisaster ECC check: `ok`, `damaged`, or null without ECC data.
    pub ecc: Option<String>,
    /// SHA-256 over the sorted list of file paths the file-system walk found damaged or changed
    /// (`files` of the verify document), null when there was no file-level check. A change of
    /// this digest between runs means different files are affected.
    pub manifest_digest: Option<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// Error-severity problem codes.
    pub problems: Vec<String>,
    /// loopkit version and git revision that checked it.
    pub loopkit_version: String,
    /// When the check finished, seconds since the epoch (UTC).
    pub verified_at: u64,
    /// The same as RFC 3339 UTC, for people.
    pub verified_at_utc: String,
    /// The batch run this record belongs to (`--resume` continues the last unfinished one).
    pub run: String,
    /// Time spent.
    pub elapsed_ms: u64,
    /// `cryptoloop`, `loop-aes`, `luks1`, `luks2`, `plain`, or absent when unknown (and in
    /// records written before the catalog kept it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// File-system type (blkid spelling), absent when none was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<String>,
    /// Sectors (of [`SectorBins::sector_bytes`]) the check found damaged: failing their CRC,
    /// missing or unreadable; absent when the image was not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_sectors: Option<u64>,
    /// Files, directories and symlinks the damage hits (absent when no file system was read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_damaged: Option<u64>,
    /// Of those, the ones the error-correction data restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_repairable: Option<u64>,
    /// Of those, the ones with bytes nothing restores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_lost: Option<u64>,
    /// The damaged files by path, at most [`MAX_DAMAGED_FILES_BYTES`] of them (the counts
    /// above cover all); absent when not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub damaged_files: Option<Vec<DamagedFile>>,
    /// The image's sectors in at most [`MAX_BINS`] bins, each with the worst verdict of its
    /// sectors (the report's sector map); absent when the image was not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector_map: Option<SectorBins>,
}

/// One damaged file of a [`CatalogRecord`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DamagedFile {
    /// Path from the root, no leading slash, escaped like manifest paths.
    pub path: String,
    /// `repairable` or `lost`.
    pub verdict: crate::damage::Verdict,
}

/// Most bins of a [`SectorBins`] map (a DVD's 2.3 M sectors: ~560 sectors per bin).
pub const MAX_BINS: u64 = 4096;

/// Most bytes of paths kept in [`CatalogRecord::damaged_files`] (a record stays one short line).
pub const MAX_DAMAGED_FILES_BYTES: usize = 64 << 10;

/// The sector map of a [`CatalogRecord`]: bin `i` covers sectors `i × sectors_per_bin` up to
/// the next bin's first (the last bin may be shorter).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectorBins {
    /// The sector: 2048 with dvdisaster error-correction data, 512 otherwise.
    pub sector_bytes: u64,
    /// Sectors in the image (the last one may be partial).
    pub sectors: u64,
    /// Sectors per bin (at least 1).
    pub sectors_per_bin: u64,
    /// One character per bin, the worst of its sectors: `.` good, `r` repairable (the
    /// error-correction data restores it), `l` lost, `u` unread (the check did not read it).
    pub bins: String,
}

impl SectorBins {
    /// The map of an image of `size_bytes`: `read` false when the check read none of it (all
    /// bins `u`); the damaged image byte ranges mark their bins.
    pub fn new(size_bytes: u64, sector_bytes: u64, read: bool, damage: &[crate::damage::BadRange]) -> SectorBins {
        let sector_bytes = sector_bytes.max(1);
        let sectors = size_bytes.div_ceil(sector_bytes);
        let per = sectors.div_ceil(MAX_BINS).max(1);
        let n = sectors.div_ceil(per);
        let mut bins = vec![if read { b'.' } else { b'u' }; usize::try_from(n).unwrap_or(0)];
        for b in damage {
            if b.range.start >= b.range.end || b.range.start >= size_bytes {
                continue;
            }
            let c = match b.status {
                crate::damage::Status::Lost => b'l',
                crate::damage::Status::Repairable => b'r',
            };
            let first = b.range.start / sector_bytes / per;
            let last = (b.range.end.min(size_bytes) - 1) / sector_bytes / per;
            for i in first..=last {
                if let Some(x) = usize::try_from(i).ok().and_then(|i| bins.get_mut(i))
                    && rank(c) > rank(*x)
                {
                    *x = c;
                }
            }
        }
        SectorBins { sector_bytes, sectors, sectors_per_bin: per, bins: String::from_utf8_lossy(&bins).into_owned() }
    }
}

/// The order of badness of a bin's character: good < repairable < unread < lost.
pub fn rank(c: u8) -> u8 {
    match c {
        b'.' => 0,
        b'r' => 1,
        b'u' => 2,
        b'l' => 3,
        _ => 4,
    }
}

/// Distinct sectors of `sector_bytes` the damaged ranges touch.
pub fn damaged_sectors(damage: &[crate::damage::BadRange], sector_bytes: u64) -> u64 {
    let sb = sector_bytes.max(1);
    let mut n = 0u64;
    let mut next = 0u64; // first sector not yet counted
    for b in damage {
        if b.range.start >= b.range.end {
            continue;
        }
        let first = (b.range.start / sb).max(next);
        let end = b.range.end.div_ceil(sb);
        if end > first {
            n = n.saturating_add(end - first);
            next = end;
        }
    }
    n
}

/// A marker line in the catalog: a batch run started or finished (so `--resume` knows which
/// run was interrupted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogRun {
    /// Always 1.
    pub loopkit_catalog_run: u32,
    /// Run id (time and process id).
    pub run: String,
    /// `start` or `end`.
    pub event: String,
    /// When, seconds since the epoch.
    pub at: u64,
}

/// One line of a catalog file.
#[derive(Debug, Clone)]
pub enum Line {
    /// A check.
    Record(Box<CatalogRecord>),
    /// A run marker.
    Run(CatalogRun),
}

/// The contents of a catalog file.
#[derive(Debug, Default)]
pub struct Contents {
    /// Every readable line, in file order.
    pub lines: Vec<Line>,
    /// Lines that were not catalog lines (torn, invalid UTF-8, too long, foreign).
    pub unreadable: u64,
    /// The numbers (from 1) of the first 100 of them.
    pub unreadable_line_numbers: Vec<u64>,
}

impl Contents {
    /// The records only.
    pub fn records(&self) -> impl Iterator<Item = &CatalogRecord> {
        self.lines.iter().filter_map(|l| match l {
            Line::Record(r) => Some(&**r),
            Line::Run(_) => None,
        })
    }
    /// The latest record of each path.
    pub fn latest(&self) -> BTreeMap<String, CatalogRecord> {
        let mut m: BTreeMap<String, CatalogRecord> = BTreeMap::new();
        for r in self.records() {
            match m.get(&r.path) {
                Some(old) if old.verified_at > r.verified_at => {}
                _ => {
                    m.insert(r.path.clone(), r.clone());
                }
            }
        }
        m
    }
    /// The last run that started and never ended, if the catalog's last run is one.
    pub fn unfinished_run(&self) -> Option<String> {
        let mut last: Option<(&str, bool)> = None;
        let mut ended = HashSet::new();
        for l in &self.lines {
            if let Line::Run(r) = l {
                if r.event == "end" {
                    ended.insert(r.run.as_str());
                } else {
                    last = Some((r.run.as_str(), false));
                }
            }
        }
        last.map(|(r, _)| r).filter(|r| !ended.contains(r)).map(str::to_string)
    }
}

/// Longest catalog line read (a record is ~600 bytes, plus its path); a longer line is skipped
/// and counted as unreadable without being held in memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Line numbers of unreadable lines kept for the report (the count covers all of them).
const MAX_UNREADABLE_NUMBERS: usize = 100;

/// One line from [`for_each_line`]: its number (from 1) and its bytes without the `\n`, or
/// `None` when it was longer than [`MAX_LINE_BYTES`].
struct RawLine<'a> {
    number: u64,
    bytes: Option<&'a [u8]>,
}

/// Read `r` line by line, at most [`MAX_LINE_BYTES`] held at a time.
fn for_each_line(r: &mut dyn std::io::BufRead, mut f: impl FnMut(RawLine<'_>)) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut number = 0u64;
    loop {
        buf.clear();
        let n = (&mut *r).take(MAX_LINE_BYTES as u64 + 1).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(());
        }
        number += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            f(RawLine { number, bytes: Some(&buf) });
        } else if buf.len() <= MAX_LINE_BYTES {
            // The last line, without its newline.
            f(RawLine { number, bytes: Some(&buf) });
            return Ok(());
        } else {
            // Too long: skip to the end of the line without keeping it.
            loop {
                buf.clear();
                let k = (&mut *r).take(MAX_LINE_BYTES as u64).read_until(b'\n', &mut buf)?;
                if k == 0 || buf.last() == Some(&b'\n') {
                    break;
                }
            }
            f(RawLine { number, bytes: None });
        }
    }
}

impl Contents {
    fn add_unreadable(&mut self, number: u64) {
        self.unreadable += 1;
        if self.unreadable_line_numbers.len() < MAX_UNREADABLE_NUMBERS {
            self.unreadable_line_numbers.push(number);
        }
    }
}

/// Parse a catalog stream. Lines that are not catalog lines (torn by an interrupted writer,
/// invalid UTF-8, too long, foreign) are skipped and counted, never an error.
fn parse(r: &mut dyn std::io::BufRead) -> std::io::Result<Contents> {
    let mut c = Contents::default();
    for_each_line(r, |l| {
        let Some(bytes) = l.bytes else {
            c.add_unreadable(l.number);
            return;
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let Ok(line) = std::str::from_utf8(bytes) else {
            c.add_unreadable(l.number);
            return;
        };
        if let Ok(r) = serde_json::from_str::<CatalogRecord>(line) {
            c.lines.push(Line::Record(Box::new(r)));
        } else if let Ok(r) = serde_json::from_str::<CatalogRun>(line) {
            c.lines.push(Line::Run(r));
        } else {
            c.add_unreadable(l.number);
        }
    })?;
    Ok(c)
}

/// Read a catalog (a missing file is an empty catalog).
///
/// # Errors
/// `Io` when it exists but cannot be read.
pub fn read(path: &Path) -> crate::Result<Contents> {
    match File::open(path) {
        Ok(f) => parse(&mut std::io::BufReader::new(f))
            .map_err(|e| crate::Error::io(format!("cannot read catalog {}", path.display()), e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contents::default()),
        Err(e) => Err(crate::Error::io(format!("cannot open catalog {}", path.display()), e)),
    }
}

/// Whether `file` is non-empty and does not end in `\n` (an interrupted writer's torn line):
/// the next line written must then start with one.
fn needs_newline(file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8; 1];
    let n = file.read_at(&mut last, len - 1)?;
    Ok(n == 1 && last[0] != b'\n')
}

/// An open catalog for appending.
#[derive(Debug)]
pub struct Writer {
    path: PathBuf,
    file: File,
}

fn lock(file: &File, path: &Path) -> crate::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| crate::Error::io(format!("cannot lock catalog {}", path.display()), std::io::Error::from(e)))
}

fn unlock(file: &File) {
    let _ = rustix::fs::flock(file, rustix::fs::FlockOperation::Unlock);
}

impl Writer {
    /// Open (create) `path` for appending.
    ///
    /// # Errors
    /// `Io`.
    pub fn open(path: &Path) -> crate::Result<Writer> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(|e| crate::Error::io(format!("cannot open catalog {} for appending", path.display()), e))?;
        Ok(Writer { path: path.into(), file })
    }

    /// Append one line under the lock (one `write` of the whole line, then `fdatasync`). When
    /// the file ends in a torn line (no `\n`), a `\n` goes first, so the new line stays whole.
    ///
    /// # Errors
    /// `Io`.
    pub fn append<T: serde::Serialize>(&self, line: &T) -> crate::Result<()> {
        let s = serde_json::to_string(line)
            .map_err(|e| crate::Error::invalid(format!("BUG: cannot serialise a catalog line: {e}")))?;
        let mut out = String::with_capacity(s.len() + 2);
        lock(&self.file, &self.path)?;
        let r = needs_newline(&self.file).and_then(|torn| {
            if torn {
                out.push('\n');
            }
            out.push_str(&s);
            out.push('\n');
            (&self.file).write_all(out.as_bytes()).and_then(|()| self.file.sync_data())
        });
        unlock(&self.file);
        r.map_err(|e| crate::Error::io(format!("cannot append to catalog {}", self.path.display()), e))
    }

    /// Merge the records of `sources` (catalog files, e.g. one per GNU parallel or Slurm task)
    /// into this catalog: every record not already present (the same JSON) is appended, all
    /// under the lock. Returns the number added and the source lines that were not records.
    ///
    /// # Errors
    /// `Io`.
    pub fn import(&self, sources: &[PathBuf]) -> crate::Result<(u64, u64)> {
        let mut incoming = Vec::new();
        let mut unreadable = 0;
        for s in sources {
            let c = read(s)?;
            unreadable += c.unreadable;
            incoming.extend(c.records().cloned());
        }
        lock(&self.file, &self.path)?;
        let r = self.import_locked(&incoming);
        unlock(&self.file);
        r.map(|n| (n, unreadable))
    }

    fn import_locked(&self, incoming: &[CatalogRecord]) -> crate::Result<u64> {
        let rd = |e| crate::Error::io(format!("cannot read catalog {}", self.path.display()), e);
        let mut f = &self.file;
        {
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(0)).map_err(rd)?;
        }
        let present = parse(&mut std::io::BufReader::new(f)).map_err(rd)?;
        let mut seen: HashSet<String> = present.records().filter_map(|r| serde_json::to_string(r).ok()).collect();
        drop(present);
        let mut out = String::new();
        let mut added = 0;
        for r in incoming {
            let Ok(s) = serde_json::to_string(r) else { continue };
            if seen.insert(s.clone()) {
                out.push_str(&s);
                out.push('\n');
                added += 1;
            }
        }
        if !out.is_empty() && needs_newline(&self.file).map_err(rd)? {
            // A partial last line from an interrupted writer: keep ours on lines of their own.
            out.insert(0, '\n');
        }
        f.write_all(out.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| crate::Error::io(format!("cannot append to catalog {}", self.path.display()), e))?;
        Ok(added)
    }
}

/// What identifies an image file on disk between runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Absolute path, symlinks resolved.
    pub path: String,
    /// Size.
    pub size_bytes: u64,
    /// Modification time (ns since the epoch).
    pub mtime_ns: i128,
    /// `st_dev`.
    pub device: u64,
    /// Inode.
    pub inode: u64,
}

impl Identity {
    /// Of the file at `p`.
    ///
    /// # Errors
    /// `Io`.
    pub fn of(p: &Path) -> crate::Result<Identity> {
        let abs =
            std::fs::canonicalize(p).map_err(|e| crate::Error::io(format!("cannot resolve {}", p.display()), e))?;
        let m = std::fs::metadata(&abs).map_err(|e| crate::Error::io(format!("cannot examine {}", p.display()), e))?;
        Ok(Identity {
            path: abs.to_string_lossy().into_owned(),
            size_bytes: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            device: m.dev(),
            inode: m.ino(),
        })
    }
    /// Whether `r` was taken of this very file, unchanged (size, mtime, device, inode).
    pub fn unchanged_since(&self, r: &CatalogRecord) -> bool {
        r.size_bytes == self.size_bytes
            && r.mtime_ns == self.mtime_ns
            && r.device == self.device
            && r.inode == self.inode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_line(run: &str) -> CatalogRun {
        CatalogRun { loopkit_catalog_run: 1, run: run.into(), event: "start".into(), at: 1 }
    }

    /// L7: an append after a torn last line (cut mid-record, mid-UTF-8 character) starts a
    /// line of its own; the torn line is skipped and counted, never an error.
    #[test]
    fn append_after_torn_line_keeps_the_record() {
        let dir = std::env::temp_dir().join(format!("loopkit-catalog-torn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for torn in [&b"{\"loopkit_catalog\":1,\"pa"[..], b"{\"loopkit_catalog\":1,\"path\":\"/caf\xc3"] {
            let p = dir.join("c.jsonl");
            std::fs::write(&p, torn).unwrap();
            let w = Writer::open(&p).unwrap();
            w.append(&run_line("r1")).unwrap();
            w.append(&run_line("r2")).unwrap();
            let c = read(&p).unwrap();
            let runs: Vec<&str> = c
                .lines
                .iter()
                .filter_map(|l| match l {
                    Line::Run(r) => Some(r.run.as_str()),
                    Line::Record(_) => None,
                })
                .collect();
            assert_eq!(runs, ["r1", "r2"]);
            assert_eq!((c.unreadable, c.unreadable_line_numbers.clone()), (1, vec![1]));
            let text = std::fs::read(&p).unwrap();
            assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), 3, "torn line ended, two whole lines");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Overlong lines are skipped without being held whole; the lines after them are read.
    #[test]
    fn overlong_lines_are_skipped() {
        let mut text = vec![b'x'; MAX_LINE_BYTES * 2 + 5];
        text.push(b'\n');
        text.extend_from_slice(serde_json::to_string(&run_line("after")).unwrap().as_bytes());
        text.extend_from_slice(b"\n\xff\xfe\n\n");
        let mut long_at_end = text.clone();
        long_at_end.extend(std::iter::repeat_n(b'y', MAX_LINE_BYTES + 1));
        for t in [text, long_at_end] {
            let c = parse(&mut std::io::Cursor::new(t)).unwrap();
            assert_eq!(c.lines.len(), 1);
            assert!(c.unreadable >= 2, "{}", c.unreadable);
            assert_eq!(&c.unreadable_line_numbers[..2], [1, 3]);
        }
    }
}
