//! System Use Sharing Protocol (SUSP 1.12) entries and the Rock Ridge (RRIP 1.10/1.12) ones
//! loopkit uses: `SP` (presence, skip length), `CE` (continuation areas), `PX` (mode, links,
//! owner, inode), `PN` (device), `SL` (symlink target), `NM` (long name), `TF` (times),
//! `CL`/`PL`/`RE` (relocated deep directories), `ST` (end). Parsing is pure (no I/O); the
//! caller fetches `CE` areas and feeds them back.

use crate::bytes::le32;
use crate::fs::tree::Issue;

/// What the Rock Ridge entries of one directory record say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RockRidge {
    /// `PX`: mode (type + permissions).
    pub mode: Option<u32>,
    /// `PX`: link count.
    pub nlink: Option<u32>,
    /// `PX`: owner.
    pub uid: Option<u32>,
    /// `PX`: group.
    pub gid: Option<u32>,
    /// `PX` (RRIP 1.12): file serial number.
    pub ino: Option<u32>,
    /// `PN`: device (high, low).
    pub dev: Option<(u32, u32)>,
    /// `NM`: the alternate (POSIX) name.
    pub name: Option<Vec<u8>>,
    /// `NM` marked the entry as `.` or `..`.
    pub name_is_dot: bool,
    /// `SL`: symlink target.
    pub symlink: Option<Vec<u8>>,
    /// `TF`: modification time, seconds since the epoch (UTC).
    pub mtime: Option<i64>,
    /// `CL`: this entry is a relocated directory whose real extent starts at this block.
    pub child_link: Option<u32>,
    /// `RE`: this is the relocated directory's placeholder in `rr_moved`: hide it.
    pub relocated: bool,
    /// Any Rock Ridge entry was seen.
    pub present: bool,
}

/// A continuation area to fetch: (block, offset in block, length).
pub type Continuation = (u32, u32, u32);

/// Incremental parser state (NM and SL entries may continue across entries and areas).
#[derive(Debug, Default)]
pub struct Parser {
    /// The result so far.
    pub rr: RockRidge,
    sl_need_slash: bool,
    sl_in_component: bool,
}

impl Parser {
    /// Parse one system-use area; returns a `CE` continuation if the area names one.
    pub fn feed(&mut self, area: &[u8], issues: &mut Vec<Issue>) -> Option<Continuation> {
        let mut pos = 0usize;
        let mut next = None;
        while pos + 4 <= area.len() {
            let sig = [area[pos], area[pos + 1]];
            let len = usize::from(area[pos + 2]);
            if sig == [0, 0] {
                break; // padding
            }
            if len < 4 || pos + len > area.len() {
                issues.push(Issue::error(
                    "iso9660.susp",
                    format!(
                        "system use entry {:?} has length {len} at byte {pos} of {}",
                        String::from_utf8_lossy(&sig),
                        area.len()
                    ),
                ));
                break;
            }
            let e = &area[pos..pos + len];
            match &sig {
                b"ST" => break,
                b"CE" if len >= 28 => next = Some((le32(e, 4), le32(e, 12), le32(e, 20))),
                b"PX" if len >= 36 => {
                    let rr = &mut self.rr;
                    rr.present = true;
                    rr.mode = Some(le32(e, 4));
                    rr.nlink = Some(le32(e, 12));
                    rr.uid = Some(le32(e, 20));
                    rr.gid = Some(le32(e, 28));
                    if len >= 44 {
                        rr.ino = Some(le32(e, 36));
                    }
                }
                b"PN" if len >= 20 => {
                    self.rr.present = true;
                    self.rr.dev = Some((le32(e, 4), le32(e, 12)));
                }
                b"NM" if len >= 5 => {
                    self.rr.present = true;
                    let flags = e[4];
                    if flags & 0x06 != 0 {
                        self.rr.name_is_dot = true;
                    } else {
                        self.rr.name.get_or_insert_with(Vec::new).extend_from_slice(&e[5..]);
                    }
                }
                b"SL" if len >= 5 => {
                    self.rr.present = true;
                    self.symlink_components(&e[5..], issues);
                }
                b"TF" if len >= 5 => {
                    self.rr.present = true;
                    self.rr.mtime = self.rr.mtime.or_else(|| tf_modify(e));
                }
                b"CL" if len >= 12 => {
                    self.rr.present = true;
                    self.rr.child_link = Some(le32(e, 4));
                }
                b"RE" => {
                    self.rr.present = true;
                    self.rr.relocated = true;
                }
                _ => {}
            }
            pos += len;
        }
        next
    }

    fn symlink_components(&mut self, mut c: &[u8], issues: &mut Vec<Issue>) {
        let target = self.rr.symlink.get_or_insert_with(Vec::new);
        while c.len() >= 2 {
            let flags = c[0];
            let len = usize::from(c[1]);
            if 2 + len > c.len() {
                issues.push(Issue::error("iso9660.rock-ridge", "symlink component runs past its SL entry"));
                return;
            }
            let content = &c[2..2 + len];
            if flags & 0x08 != 0 {
                target.push(b'/');
                self.sl_need_slash = false;
            } else {
                if self.sl_need_slash && !self.sl_in_component {
                    target.push(b'/');
                }
                if flags & 0x02 != 0 {
                    target.push(b'.');
                } else if flags & 0x04 != 0 {
                    target.extend_from_slice(b"..");
                } else {
                    target.extend_from_slice(content);
                }
                self.sl_need_slash = true;
            }
            // CONTINUE: the next component continues this name.
            self.sl_in_component = flags & 0x01 != 0;
            c = &c[2 + len..];
        }
    }
}

/// The modification time of a `TF` entry, if recorded.
fn tf_modify(e: &[u8]) -> Option<i64> {
    let flags = e[4];
    if flags & 0x02 == 0 {
        return None;
    }
    let long = flags & 0x80 != 0;
    let size = if long { 17 } else { 7 };
    // Creation (bit 0) comes before modification.
    let at = 5 + if flags & 0x01 != 0 { size } else { 0 };
    let stamp = e.get(at..at + size)?;
    if long { long_date(stamp) } else { short_date(stamp) }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn to_epoch(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64, tz_quarters: i8) -> Option<i64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - i64::from(tz_quarters) * 900)
}

/// ECMA-119 9.1.5 "recording date and time": 7 bytes, years since 1900, GMT offset in 15 min.
pub fn short_date(b: &[u8]) -> Option<i64> {
    if b.len() < 7 || b[..6].iter().all(|&x| x == 0) {
        return None;
    }
    to_epoch(1900 + i64::from(b[0]), b[1].into(), b[2].into(), b[3].into(), b[4].into(), b[5].into(), b[6] as i8)
}

/// ECMA-119 8.4.26.1 17-byte ASCII date (`YYYYMMDDHHMMSScc` + GMT offset).
pub fn long_date(b: &[u8]) -> Option<i64> {
    if b.len() < 17 || !b[..16].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = |a: usize, l: usize| b[a..a + l].iter().fold(0i64, |acc, &c| acc * 10 + i64::from(c - b'0'));
    if n(0, 4) == 0 {
        return None;
    }
    to_epoch(n(0, 4), n(4, 2), n(6, 2), n(8, 2), n(10, 2), n(12, 2), b[16] as i8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sig: &[u8; 2], body: &[u8]) -> Vec<u8> {
        let mut e = vec![sig[0], sig[1], (4 + body.len()) as u8, 1];
        e.extend_from_slice(body);
        e
    }

    #[test]
    fn dates() {
        // 2001-09-09 01:46:40 UTC = 1_000_000_000.
        assert_eq!(short_date(&[101, 9, 9, 1, 46, 40, 0]), Some(1_000_000_000));
        // Same instant written in UTC+2 (8 quarters).
        assert_eq!(short_date(&[101, 9, 9, 3, 46, 40, 8]), Some(1_000_000_000));
        assert_eq!(long_date(b"2001090901464000\0"), Some(1_000_000_000));
        assert_eq!(short_date(&[0; 7]), None);
        assert_eq!(short_date(&[101, 13, 9, 1, 46, 40, 0]), None);
    }

    #[test]
    fn symlink_and_name() {
        let mut area = Vec::new();
        // SL: "/usr/" root, "lo" (continue) + "cal", "..", "bin"
        let mut sl = vec![0u8];
        for (f, c) in [(8u8, &b""[..]), (0, b"usr"), (1, b"lo"), (0, b"cal"), (4, b""), (0, b"bin")] {
            sl.push(f);
            sl.push(c.len() as u8);
            sl.extend_from_slice(c);
        }
        area.extend(entry(b"SL", &sl));
        area.extend(entry(b"NM", b"\x01long "));
        area.extend(entry(b"NM", b"\x00name"));
        let mut px = vec![];
        for v in [0o120777u32, 1, 1000, 100] {
            px.extend(v.to_le_bytes());
            px.extend(v.to_be_bytes());
        }
        area.extend(entry(b"PX", &px));
        let mut p = Parser::default();
        let mut issues = Vec::new();
        assert_eq!(p.feed(&area, &mut issues), None);
        assert!(issues.is_empty());
        assert_eq!(p.rr.symlink.as_deref(), Some(&b"/usr/local/../bin"[..]));
        assert_eq!(p.rr.name.as_deref(), Some(&b"long name"[..]));
        assert_eq!((p.rr.mode, p.rr.uid, p.rr.gid, p.rr.ino), (Some(0o120777), Some(1000), Some(100), None));
        // A truncated entry is an issue, not a panic.
        let mut bad = entry(b"NM", b"\x00x");
        bad[2] = 200;
        Parser::default().feed(&bad, &mut issues);
        assert_eq!(issues.len(), 1);
    }
}
