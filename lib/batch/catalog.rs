//! The fixity catalog: an append-only JSON-lines file, one [`CatalogRecord`] per image check plus
//! run markers. Why JSON lines rather than SQLite: it is append-only by nature (an interrupted
//! writer can at worst leave one partial last line, which readers skip and count), mergeable with
//! `cat`, readable with `jq`/`grep`, diffable, and needs no bundled C library. Concurrent writers
//! (two batches, GNU parallel jobs) are serialised with `flock(LOCK_EX)` on the file around each
//! append of a whole line, and `--import` holds the lock while it reads and appends, so a merge
//! is idempotent (records already present are not added again) and safe against a concurrent
//! run.

use crate::report::batch::{CatalogOldest, CatalogRecord, CatalogRun, CatalogSummary, Counts, Verdict};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Largest catalog read (a record is ~600 bytes: this is millions of checks).
const MAX_CATALOG_BYTES: u64 = 4 << 30;

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
    /// Lines that were not catalog lines.
    pub unreadable: u64,
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

fn parse(text: &str) -> Contents {
    let mut c = Contents::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Ok(r) = serde_json::from_str::<CatalogRecord>(line) {
            c.lines.push(Line::Record(Box::new(r)));
        } else if let Ok(r) = serde_json::from_str::<CatalogRun>(line) {
            c.lines.push(Line::Run(r));
        } else {
            c.unreadable += 1;
        }
    }
    c
}

fn read_all(f: &mut File, path: &Path) -> crate::Result<String> {
    let mut buf = Vec::new();
    f.take(MAX_CATALOG_BYTES)
        .read_to_end(&mut buf)
        .map_err(|e| crate::Error::io(format!("cannot read catalog {}", path.display()), e))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Read a catalog (a missing file is an empty catalog).
///
/// # Errors
/// `Io` when it exists but cannot be read.
pub fn read(path: &Path) -> crate::Result<Contents> {
    match File::open(path) {
        Ok(mut f) => Ok(parse(&read_all(&mut f, path)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contents::default()),
        Err(e) => Err(crate::Error::io(format!("cannot open catalog {}", path.display()), e)),
    }
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

    /// Append one line under the lock (one `write` of the whole line, then `fdatasync`).
    ///
    /// # Errors
    /// `Io`.
    pub fn append<T: serde::Serialize>(&self, line: &T) -> crate::Result<()> {
        let mut s = serde_json::to_string(line)
            .map_err(|e| crate::Error::invalid(format!("BUG: cannot serialise a catalog line: {e}")))?;
        s.push('\n');
        lock(&self.file, &self.path)?;
        let r = (&self.file).write_all(s.as_bytes()).and_then(|()| self.file.sync_data());
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
        let mut f = &self.file;
        let mut text = String::new();
        {
            use std::io::Seek;
            f.seek(std::io::SeekFrom::Start(0))
                .map_err(|e| crate::Error::io(format!("cannot read catalog {}", self.path.display()), e))?;
            f.take(MAX_CATALOG_BYTES)
                .read_to_string(&mut text)
                .map_err(|e| crate::Error::io(format!("cannot read catalog {}", self.path.display()), e))?;
        }
        let mut seen: HashSet<String> = parse(&text).records().filter_map(|r| serde_json::to_string(r).ok()).collect();
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
        if !text.is_empty() && !text.ends_with('\n') && !out.is_empty() {
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

/// `loopkit catalog FILE`: counts, the oldest latest check, changed and failing images.
pub fn summarize(path: &Path, c: &Contents, imported: Option<u64>) -> CatalogSummary {
    let latest = c.latest();
    let mut counts = Counts::default();
    for r in latest.values() {
        counts.add(r.verdict);
    }
    let oldest = latest.values().min_by_key(|r| (r.verified_at, r.path.clone())).map(|r| CatalogOldest {
        path: r.path.clone(),
        verified_at: r.verified_at,
        verified_at_utc: r.verified_at_utc.clone(),
    });
    let mut digests: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    for r in c.records() {
        if let Some(d) = &r.payload_sha256 {
            digests.entry(&r.path).or_default().insert(d);
        }
    }
    let changed = digests.into_iter().filter(|(_, d)| d.len() > 1).map(|(p, _)| p.to_string()).collect();
    let failing = latest
        .values()
        .filter(|r| matches!(r.verdict, Verdict::Problems | Verdict::Failed))
        .map(|r| r.path.clone())
        .collect();
    CatalogSummary {
        loopkit_json: crate::report::JSON_VERSION,
        command: "catalog".into(),
        catalog: path.display().to_string(),
        records: c.records().count() as u64,
        images: latest.len() as u64,
        counts,
        oldest,
        changed,
        failing,
        imported,
        unreadable_lines: c.unreadable,
    }
}
