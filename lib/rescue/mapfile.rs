//! GNU ddrescue's map file ("mapfile", formerly "logfile"): which byte ranges of a rescue are
//! finished, bad, or still to try — read and written in ddrescue's own text format, so a rescue
//! can be continued by either tool.
//!
//! ```text
//! # Mapfile. Created by GNU ddrescue version 1.27      <- comments: any line starting with '#'
//! # current_pos  current_status  current_pass
//! 0x00120000     ?               1                      <- status line (pass is optional)
//! #      pos        size  status
//! 0x00000000  0x00100000  +                             <- blocks: sorted, contiguous
//! 0x00100000  0x00020000  -
//! ```
//!
//! Block states: `?` non-tried, `*` non-trimmed, `/` non-scraped, `-` bad sector(s), `+`
//! finished. The status line's state is the phase the rescue was in: `?` copying, `*`
//! trimming, `/` scraping, `-` retrying, `F` filling, `G` generating, `+` finished.
//!
//! Parsing is bounded (at most [`MAX_MAP_BYTES`] of text, numbers checked for overflow) and
//! strict about what ddrescue itself would reject: overlapping or unsorted blocks, a zero
//! size, a first block not at 0, unknown states.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The largest map file accepted (a map of a 4.7 GB DVD with every other 2048-byte sector bad
/// is ~80 MB).
pub const MAX_MAP_BYTES: u64 = 256 << 20;

/// The state of one block of the rescue domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// `?`: not read yet.
    NonTried,
    /// `*`: a read of a larger area failed here; the edges are not trimmed yet.
    NonTrimmed,
    /// `/`: trimmed; the sectors inside are to be read one by one.
    NonScraped,
    /// `-`: read sector by sector and failed.
    Bad,
    /// `+`: read and written to the output.
    Finished,
}

impl Status {
    /// ddrescue's character for it.
    pub fn symbol(self) -> char {
        match self {
            Status::NonTried => '?',
            Status::NonTrimmed => '*',
            Status::NonScraped => '/',
            Status::Bad => '-',
            Status::Finished => '+',
        }
    }

    /// The state for ddrescue's character.
    pub fn from_symbol(c: char) -> Option<Status> {
        Some(match c {
            '?' => Status::NonTried,
            '*' => Status::NonTrimmed,
            '/' => Status::NonScraped,
            '-' => Status::Bad,
            '+' => Status::Finished,
            _ => return None,
        })
    }

    /// The stable name used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Status::NonTried => "non_tried",
            Status::NonTrimmed => "non_trimmed",
            Status::NonScraped => "non_scraped",
            Status::Bad => "bad",
            Status::Finished => "finished",
        }
    }

    /// All states, in ddrescue's order.
    pub const ALL: [Status; 5] =
        [Status::NonTried, Status::NonTrimmed, Status::NonScraped, Status::Bad, Status::Finished];
}

/// The phase recorded in the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `?`: copying non-tried blocks.
    Copying,
    /// `*`: trimming non-trimmed blocks.
    Trimming,
    /// `/`: scraping non-scraped blocks.
    Scraping,
    /// `-`: retrying bad sectors.
    Retrying,
    /// `F`: filling (ddrescue `--fill-mode`).
    Filling,
    /// `G`: generating a map (ddrescue `--generate-mode`).
    Generating,
    /// `+`: finished.
    Finished,
}

impl Phase {
    /// ddrescue's character for it.
    pub fn symbol(self) -> char {
        match self {
            Phase::Copying => '?',
            Phase::Trimming => '*',
            Phase::Scraping => '/',
            Phase::Retrying => '-',
            Phase::Filling => 'F',
            Phase::Generating => 'G',
            Phase::Finished => '+',
        }
    }

    fn from_symbol(c: char) -> Option<Phase> {
        Some(match c {
            '?' => Phase::Copying,
            '*' => Phase::Trimming,
            '/' => Phase::Scraping,
            '-' => Phase::Retrying,
            'F' => Phase::Filling,
            'G' => Phase::Generating,
            '+' => Phase::Finished,
            _ => return None,
        })
    }
}

/// One block: `size` bytes from `pos` in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// First byte.
    pub pos: u64,
    /// Length in bytes (never 0).
    pub size: u64,
    /// Its state.
    pub status: Status,
}

impl Block {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.pos + self.size
    }
}

/// A whole map: the domain `0..size`, every byte in exactly one block, neighbours of the same
/// state merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescueMap {
    size: u64,
    /// Block start → (length, state).
    blocks: BTreeMap<u64, (u64, Status)>,
    /// Where the rescue was (status line).
    pub current_pos: u64,
    /// The phase it was in (status line).
    pub phase: Phase,
    /// The pass within the phase (status line; 1 when absent).
    pub pass: u32,
    /// Bytes finished (kept up to date by [`RescueMap::set`], so progress checks are O(1)).
    finished: u64,
}

/// Why a map file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 { write!(f, "{}", self.what) } else { write!(f, "line {}: {}", self.line, self.what) }
    }
}

fn parse_number(word: &str) -> Option<u64> {
    // ddrescue writes hex with 0x; it also accepts decimal (and octal with a leading 0, which
    // nobody writes: a leading 0 followed by digits is read as octal like ddrescue does).
    if let Some(hex) = word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        if hex.is_empty() {
            return None;
        }
        u64::from_str_radix(hex, 16).ok()
    } else if word.len() > 1 && word.starts_with('0') {
        u64::from_str_radix(&word[1..], 8).ok()
    } else {
        word.parse().ok()
    }
}

impl RescueMap {
    /// A fresh map: all of `0..size` non-tried.
    pub fn new(size: u64) -> RescueMap {
        let mut blocks = BTreeMap::new();
        if size > 0 {
            blocks.insert(0, (size, Status::NonTried));
        }
        RescueMap { size, blocks, current_pos: 0, phase: Phase::Copying, pass: 1, finished: 0 }
    }

    /// The domain's length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Parse ddrescue's text. The blocks must start at 0, be sorted and contiguous; they may
    /// end before `source_size` (the rest becomes non-tried, as ddrescue does) but not after it.
    ///
    /// # Errors
    /// A [`ParseError`] naming the line.
    pub fn parse(text: &str, source_size: u64) -> Result<RescueMap, ParseError> {
        if text.len() as u64 > MAX_MAP_BYTES {
            return Err(ParseError { line: 0, what: format!("map file larger than {MAX_MAP_BYTES} bytes") });
        }
        let mut status_line: Option<(u64, Phase, u32)> = None;
        let mut blocks = BTreeMap::new();
        let mut next = 0u64;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let err = |what: String| ParseError { line: line_no, what };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if status_line.is_none() {
                if !(2..=3).contains(&words.len()) {
                    return Err(err(format!("expected 'current_pos current_status [current_pass]', found {line:?}")));
                }
                let pos = parse_number(words[0]).ok_or_else(|| err(format!("bad position {:?}", words[0])))?;
                let mut chars = words[1].chars();
                let phase = match (chars.next(), chars.next()) {
                    (Some(c), None) => Phase::from_symbol(c),
                    _ => None,
                }
                .ok_or_else(|| err(format!("unknown current_status {:?}", words[1])))?;
                let pass = match words.get(2) {
                    Some(w) => w
                        .parse::<u32>()
                        .ok()
                        .filter(|p| *p >= 1)
                        .ok_or_else(|| err(format!("bad current_pass {w:?}")))?,
                    None => 1,
                };
                status_line = Some((pos, phase, pass));
                continue;
            }
            if words.len() != 3 {
                return Err(err(format!("expected 'pos size status', found {line:?}")));
            }
            let pos = parse_number(words[0]).ok_or_else(|| err(format!("bad position {:?}", words[0])))?;
            let size = parse_number(words[1]).ok_or_else(|| err(format!("bad size {:?}", words[1])))?;
            let mut chars = words[2].chars();
            let status = match (chars.next(), chars.next()) {
                (Some(c), None) => Status::from_symbol(c),
                _ => None,
            }
            .ok_or_else(|| err(format!("unknown block status {:?}", words[2])))?;
            if size == 0 {
                return Err(err("block of size 0".into()));
            }
            if pos != next {
                return Err(err(if blocks.is_empty() {
                    format!("the first block starts at {pos:#x}, not 0 (a map restricted to a domain is not supported)")
                } else {
                    format!("block at {pos:#x} does not follow the previous one, which ended at {next:#x}")
                }));
            }
            let end = pos.checked_add(size).ok_or_else(|| err("block end overflows".into()))?;
            if end > source_size {
                return Err(err(format!(
                    "block {pos:#x}+{size:#x} reaches past the end of the source ({source_size:#x} bytes): a map of another source?"
                )));
            }
            blocks.insert(pos, (size, status));
            next = end;
        }
        let (current_pos, phase, pass) =
            status_line.ok_or(ParseError { line: 0, what: "no status line (not a ddrescue map file)".into() })?;
        let mut map = RescueMap { size: source_size, blocks, current_pos, phase, pass, finished: 0 };
        if next < source_size {
            map.blocks.insert(next, (source_size - next, Status::NonTried));
        }
        map.merge_all();
        Ok(map)
    }

    fn merge_all(&mut self) {
        let old = std::mem::take(&mut self.blocks);
        let mut last: Option<(u64, u64, Status)> = None;
        for (pos, (size, status)) in old {
            match last {
                Some((lp, ls, lst)) if lst == status && lp + ls == pos => last = Some((lp, ls + size, lst)),
                _ => {
                    if let Some((lp, ls, lst)) = last {
                        self.blocks.insert(lp, (ls, lst));
                    }
                    last = Some((pos, size, status));
                }
            }
        }
        if let Some((lp, ls, lst)) = last {
            self.blocks.insert(lp, (ls, lst));
        }
        self.finished = self.blocks.values().filter(|(_, st)| *st == Status::Finished).map(|(sz, _)| sz).sum();
    }

    /// Render in ddrescue's format, with `header` lines as comments first.
    pub fn render(&self, header: &[String]) -> String {
        let mut out = String::with_capacity(64 + self.blocks.len() * 36);
        for h in header {
            // A header line must stay one comment line whatever it contains.
            let clean: String = h.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            let _ = writeln!(out, "# {clean}");
        }
        let _ = writeln!(out, "# current_pos  current_status  current_pass");
        let _ = writeln!(out, "{:#010X}     {}               {}", self.current_pos, self.phase.symbol(), self.pass);
        let _ = writeln!(out, "#      pos        size  status");
        for (pos, (size, status)) in &self.blocks {
            let _ = writeln!(out, "{:#010X}  {:#010X}  {}", pos, size, status.symbol());
        }
        // Like ddrescue: "0x" and upper-case digits (Rust's `#X` keeps the prefix lower-case).
        out
    }

    /// Every block, in order.
    pub fn blocks(&self) -> impl Iterator<Item = Block> + '_ {
        self.blocks.iter().map(|(&pos, &(size, status))| Block { pos, size, status })
    }

    /// Blocks in `state`, in order.
    pub fn blocks_in(&self, state: Status) -> Vec<Block> {
        self.blocks().filter(|b| b.status == state).collect()
    }

    /// Total bytes in `state` (O(1) for [`Status::Finished`], else a walk over the blocks).
    pub fn bytes_in(&self, state: Status) -> u64 {
        if state == Status::Finished {
            return self.finished;
        }
        self.blocks().filter(|b| b.status == state).map(|b| b.size).sum()
    }

    /// Bytes not finished.
    pub fn missing_bytes(&self) -> u64 {
        self.size - self.finished
    }

    /// Whether every byte is finished.
    pub fn is_complete(&self) -> bool {
        self.size == 0 || (self.blocks.len() == 1 && self.blocks.values().all(|&(_, s)| s == Status::Finished))
    }

    /// The state of the byte at `pos` (`None` past the end).
    pub fn status_at(&self, pos: u64) -> Option<Status> {
        self.block_at(pos).map(|b| b.status)
    }

    /// The block containing byte `pos`.
    pub fn block_at(&self, pos: u64) -> Option<Block> {
        let (&p, &(s, st)) = self.blocks.range(..=pos).next_back()?;
        (pos < p + s).then_some(Block { pos: p, size: s, status: st })
    }

    /// Set `pos..pos+len` (clipped to the domain) to `status`, splitting and merging blocks.
    pub fn set(&mut self, pos: u64, len: u64, status: Status) {
        let end = pos.saturating_add(len).min(self.size);
        if pos >= end {
            return;
        }
        // Split at pos and at end.
        self.split_at(pos);
        self.split_at(end);
        let inside: Vec<u64> = self.blocks.range(pos..end).map(|(&p, _)| p).collect();
        for p in inside {
            if let Some((sz, Status::Finished)) = self.blocks.remove(&p) {
                self.finished -= sz;
            }
        }
        self.blocks.insert(pos, (end - pos, status));
        if status == Status::Finished {
            self.finished += end - pos;
        }
        // Merge with neighbours of the same state.
        self.merge_around(pos);
    }

    fn split_at(&mut self, at: u64) {
        if let Some(b) = self.block_at(at)
            && b.pos < at
        {
            self.blocks.insert(b.pos, (at - b.pos, b.status));
            self.blocks.insert(at, (b.end() - at, b.status));
        }
    }

    fn merge_around(&mut self, pos: u64) {
        let Some(&(size, status)) = self.blocks.get(&pos) else { return };
        let mut start = pos;
        let mut len = size;
        if let Some((&pp, &(ps, pst))) = self.blocks.range(..pos).next_back()
            && pst == status
            && pp + ps == pos
        {
            self.blocks.remove(&pos);
            start = pp;
            len += ps;
        }
        let end = start + len;
        if let Some(&(ns, nst)) = self.blocks.get(&end)
            && nst == status
        {
            self.blocks.remove(&end);
            len += ns;
        }
        self.blocks.insert(start, (len, status));
    }

    /// Parts of `pos..pos+len` in `state`.
    pub fn parts_in(&self, pos: u64, len: u64, state: Status) -> Vec<(u64, u64)> {
        let end = pos.saturating_add(len).min(self.size);
        let mut out = Vec::new();
        let first = self.block_at(pos).map(|b| b.pos).unwrap_or(pos);
        for (&p, &(s, st)) in self.blocks.range(first..end) {
            if st != state {
                continue;
            }
            let a = p.max(pos);
            let b = (p + s).min(end);
            if a < b {
                out.push((a, b - a));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_invariants(m: &RescueMap) {
        let mut next = 0;
        let mut last: Option<Status> = None;
        for b in m.blocks() {
            assert_eq!(b.pos, next, "contiguous");
            assert!(b.size > 0);
            assert_ne!(Some(b.status), last, "merged");
            last = Some(b.status);
            next = b.end();
        }
        assert_eq!(next, m.size());
    }

    #[test]
    fn set_splits_and_merges() {
        let mut m = RescueMap::new(100);
        m.set(10, 10, Status::Finished);
        m.set(30, 10, Status::Finished);
        check_invariants(&m);
        assert_eq!(m.blocks().count(), 5);
        m.set(20, 10, Status::Finished);
        check_invariants(&m);
        assert_eq!(m.blocks().count(), 3);
        assert_eq!(m.bytes_in(Status::Finished), 30);
        m.set(0, 1000, Status::Bad);
        check_invariants(&m);
        assert_eq!(m.bytes_in(Status::Bad), 100);
        m.set(0, 100, Status::Finished);
        assert!(m.is_complete());
    }

    #[test]
    fn random_sets_keep_invariants_and_match_a_byte_model() {
        let mut m = RescueMap::new(4096);
        let mut model = vec![Status::NonTried; 4096];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pos = x % 4200;
            let len = (x >> 20) % 300;
            let st = Status::ALL[((x >> 40) % 5) as usize];
            m.set(pos, len, st);
            for b in pos.min(4096)..(pos + len).min(4096) {
                model[b as usize] = st;
            }
            check_invariants(&m);
        }
        for (i, st) in model.iter().enumerate() {
            assert_eq!(m.status_at(i as u64), Some(*st), "byte {i}");
        }
        let walked: u64 = m.blocks().filter(|b| b.status == Status::Finished).map(|b| b.size).sum();
        assert_eq!(m.bytes_in(Status::Finished), walked);
        let text = m.render(&["test".into()]);
        let back = RescueMap::parse(&text, 4096).expect("own output parses");
        assert_eq!(back, m);
    }

    #[test]
    fn parses_ddrescue_output_with_and_without_pass() {
        let text = "# Mapfile. Created by GNU ddrescue version 1.27\n# Command line: ddrescue a b c\n\
                    # current_pos  current_status  current_pass\n0x00010000     *               2\n\
                    #      pos        size  status\n0x00000000  0x00008000  +\n0x00008000  0x00000800  -\n\
                    0x00008800  0x00007800  ?\n";
        let m = RescueMap::parse(text, 0x20000).expect("parses");
        assert_eq!(m.phase, Phase::Trimming);
        assert_eq!(m.pass, 2);
        assert_eq!(m.current_pos, 0x10000);
        assert_eq!(m.bytes_in(Status::Finished), 0x8000);
        assert_eq!(m.bytes_in(Status::Bad), 0x800);
        // The domain past the map's end is non-tried.
        assert_eq!(m.bytes_in(Status::NonTried), 0x20000 - 0x8800);
        let old = "# Rescue Logfile.\n0x0 +\n0x0 0x100 +\n";
        let m = RescueMap::parse(old, 0x100).expect("parses pre-1.21 logfile without a pass");
        assert!(m.is_complete());
        assert_eq!(m.pass, 1);
    }

    #[test]
    fn rejects_bad_maps() {
        let cases = [
            ("", "no status line"),
            ("0x0 ?\n0x10 0x10 +\n", "first block"),
            ("0x0 ?\n0x0 0x10 +\n0x20 0x10 +\n", "does not follow"),
            ("0x0 ?\n0x0 0x10 +\n0x8 0x10 +\n", "does not follow"),
            ("0x0 ?\n0x0 0x0 +\n", "size 0"),
            ("0x0 ?\n0x0 0x10 x\n", "unknown block status"),
            ("0x0 Q\n", "unknown current_status"),
            ("0x0 ? 0\n", "current_pass"),
            ("0x0 ?\n0x0 0x1000 +\n", "past the end"),
            ("0x0 ?\n0x0 0xFFFFFFFFFFFFFFFF +\n0xFFFFFFFFFFFFFFFF 0x10 +\n", "past the end"),
            ("0xZZ ?\n", "bad position"),
            ("0x0 ?\n0x0 0x10\n", "pos size status"),
        ];
        for (text, want) in cases {
            let err = RescueMap::parse(text, 0x100).expect_err(text);
            assert!(err.to_string().contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn parts_in_clips() {
        let mut m = RescueMap::new(100);
        m.set(10, 20, Status::Bad);
        m.set(50, 10, Status::Bad);
        assert_eq!(m.parts_in(0, 100, Status::Bad), vec![(10, 20), (50, 10)]);
        assert_eq!(m.parts_in(15, 40, Status::Bad), vec![(15, 15), (50, 5)]);
        assert_eq!(m.parts_in(0, 100, Status::NonTried), vec![(0, 10), (30, 20), (60, 40)]);
    }
}
