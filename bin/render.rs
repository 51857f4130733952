//! Human-readable rendering of the library's report documents (JSON goes through serde).

use loopkit::report::{Ecc, Inspect, Repair, StripEcc, Verify};
use loopkit::verify::Severity;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is: C0 controls (ESC starts terminal escape
/// sequences), DEL, C1 controls, and the bidirectional overrides and isolates that reorder how
/// a line reads.
fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_into(o: &mut String, c: char) {
    let _ = match c {
        '\n' => write!(o, "\\n"),
        '\t' => write!(o, "\\t"),
        '\r' => write!(o, "\\r"),
        c if (c as u32) < 0x80 => write!(o, "\\x{:02x}", c as u32),
        c => write!(o, "\\u{{{:x}}}", c as u32),
    };
}

fn escaped(s: &str, keep: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe_char(c) && !keep(c)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if is_unsafe_char(c) && !keep(c) {
            escape_into(&mut o, c);
        } else {
            o.push(c);
        }
    }
    std::borrow::Cow::Owned(o)
}

/// One line or field of human output (a message naming files from an image, a path): every
/// control character, newlines and tabs included, is shown escaped (`\x1b`, `\n`, `\u{202e}`),
/// so a hostile name can neither send terminal escape sequences nor fake a line of output.
pub fn line(s: &str) -> std::borrow::Cow<'_, str> {
    escaped(s, |_| false)
}

/// A whole block of human output: as [`line`], but newlines and tabs are kept (the last line of
/// defence; fields that may hold names go through [`line`] first). Never for JSON, which stays
/// exact.
pub fn terminal(s: &str) -> std::borrow::Cow<'_, str> {
    escaped(s, |c| c == '\n' || c == '\t')
}

/// `1.5 MiB`-style sizes.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

fn derivation_help(d: &str) -> &'static str {
    match d {
        "util-linux-raw" => "util-linux 2.12-2.22: first 31 passphrase bytes, zero-padded",
        "rmd160" => "RIPEMD-160 of the passphrase (Debian util-linux, loop-AES -H rmd160)",
        "unhashed" => "raw passphrase truncated to key length - 1 (Debian losetup -N)",
        "sha256" | "sha384" | "sha512" => "hash of passphrase (loop-AES losetup/aespipe)",
        "sha1" => "SHA-1 of the passphrase (cryptsetup plain --hash sha1)",
        "unhashed1" => "loop-AES -H unhashed1 (historic 6-bit packing)",
        "unhashed2" => "loop-AES -H unhashed2 (raw passphrase, 31 bytes)",
        "plain" => "raw passphrase (cryptsetup --hash plain)",
        "keyfile-raw" => "raw bytes of the key file",
        _ => "",
    }
}

/// Render an inspect report.
pub fn inspect(r: &Inspect) -> String {
    let mut o = String::new();
    let alloc = match r.allocated_bytes {
        Some(a) if a < r.size_bytes => format!(", {} allocated", size(a)),
        _ => String::new(),
    };
    let _ = writeln!(o, "image        {}  ({}{alloc})", r.image, size(r.size_bytes));
    let content = match r.kind.as_str() {
        "plain" => "not encrypted",
        "legacy-encrypted" => "legacy encrypted loop image",
        "luks" => "LUKS container",
        "needs-secret" => "unknown - probably encrypted, passphrase needed",
        _ => "unknown",
    };
    let _ = writeln!(o, "content      {content}");
    if let Some(e) = &r.encryption {
        let mk = e.multi_key.as_deref().map(|m| format!(", multi-key {m}")).unwrap_or_default();
        let _ = writeln!(o, "encryption   {}, {}, {}-bit key{mk}", e.scheme, e.cipher, e.key_bits);
        if let Some(d) = &e.key_derivation {
            let mut extra = String::new();
            if e.pseed {
                extra.push_str(", with seed");
            }
            if let Some(n) = e.itercountk {
                let _ = write!(extra, ", {n}k iterations");
            }
            let _ = writeln!(o, "             key derivation {d}{extra} ({})", derivation_help(d));
            if !e.equivalent_derivations.is_empty() {
                let _ = writeln!(o, "             (same key as: {})", e.equivalent_derivations.join(", "));
            }
        }
        let _ =
            writeln!(o, "             payload at byte {}, IV offset {} sectors", e.offset_bytes, e.iv_offset_sectors);
    }
    if let Some(l) = &r.luks {
        let label = l.label.as_deref().map(|x| format!(", label {x:?}")).unwrap_or_default();
        let _ = writeln!(o, "luks         LUKS{} UUID {}{label}, {}-byte sectors", l.version, l.uuid, l.sector_size);
        for k in &l.keyslots {
            let opened = if l.opened_keyslot == Some(k.id) { "  (opened)" } else { "" };
            let _ = writeln!(o, "             keyslot {}: {}{opened}", k.id, k.kdf);
        }
        if !l.tokens.is_empty() {
            let _ = writeln!(o, "             tokens: {}", l.tokens.join(", "));
        }
    }
    if let Some(f) = &r.filesystem {
        let mut line = format!("filesystem   {}", f.kind);
        if let Some(l) = &f.label {
            let _ = write!(line, ", label {l:?}");
        }
        if let Some(u) = &f.uuid {
            let _ = write!(line, ", UUID {u}");
        }
        if let Some(s) = f.size_bytes {
            let _ = write!(line, ", {}", size(s));
        }
        if let Some(b) = f.block_size {
            let _ = write!(line, ", {}-byte blocks", b);
        }
        let _ = writeln!(o, "{line}");
        for n in &f.notes {
            let _ = writeln!(o, "             note: {n}");
        }
    }
    if let Some(c) = &r.cryptsetup {
        let _ = writeln!(o, "cryptsetup   {c}");
    }
    for n in &r.cryptsetup_notes {
        let _ = writeln!(o, "             note: {n}");
    }
    if let Some(d) = &r.detection {
        let _ = writeln!(
            o,
            "detection    {} match(es) among {} combinations ({} keys, {} offset(s)) in {} ms",
            1 + d.alternatives.len(),
            d.combinations_tried,
            d.keys_tried,
            d.offsets_tried.len(),
            d.elapsed_ms
        );
    }
    for n in &r.notes {
        let _ = writeln!(o, "note         {n}");
    }
    o
}

/// Render a verify report.
pub fn verify(r: &Verify) -> String {
    let mut o = inspect(&r.inspect);
    if let Some(p) = &r.payload {
        let _ = writeln!(o, "payload      sha256 {}", p.sha256);
        let mut holes = if p.hole_bytes > 0 { format!(" ({} were holes)", size(p.hole_bytes)) } else { String::new() };
        if p.unreadable_bytes > 0 {
            holes.push_str(&format!(
                ", {} UNREADABLE in {} range(s)",
                size(p.unreadable_bytes),
                p.unreadable_ranges.len()
            ));
        }
        let _ = writeln!(o, "             {} from byte {}{holes}", size(p.size_bytes), p.offset_bytes);
        if r.inspect.filesystem.is_none() {
            let _ = writeln!(o, "content      data (no file system or other known structure recognised)");
        }
    }
    if let Some(f) = &r.files {
        let _ = writeln!(
            o,
            "files        {} entries, {} in files, {} structural problem(s)",
            f.count,
            size(f.bytes),
            f.problems
        );
    }
    if let Some(e) = &r.inspect.ecc {
        ecc_check(&mut o, e);
    }
    if let Some(d) = &r.damage {
        damage(&mut o, d);
    }
    let errors = r.problems.iter().filter(|p| p.severity == Severity::Error).count();
    if r.ok {
        let _ = writeln!(o, "result       OK");
    } else {
        let _ = writeln!(o, "result       {errors} PROBLEM(S)");
    }
    for p in &r.problems {
        let sev = match p.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let _ = writeln!(o, "  {sev:<8} {}: {}", line(&p.code), line(&p.message));
    }
    o
}

/// What the damage hits: the summary line and the damaged files (at most 20 shown).
fn damage(o: &mut String, d: &loopkit::report::Damage) {
    let _ = writeln!(o, "damage       {}", line(&d.summary));
    for f in d.files.iter().take(20) {
        let lost: u64 = f.lost_ranges.iter().map(|r| r.size_bytes).sum();
        let what = match f.verdict {
            loopkit::damage::Verdict::Lost => format!("LOST ({lost} bytes)"),
            loopkit::damage::Verdict::Repairable => "repairable".to_string(),
            loopkit::damage::Verdict::Intact => "intact".to_string(),
        };
        let _ = writeln!(o, "  {:<10} /{}", what, line(&f.path));
    }
    if d.files.len() > 20 {
        let _ = writeln!(o, "  … and {} more (--json lists all)", d.files.len() - 20);
    }
}

/// The dvdisaster check results of a verify report.
fn ecc_check(o: &mut String, e: &Ecc) {
    let yn = |v: Option<bool>| match v {
        Some(true) => "good",
        Some(false) => "BAD",
        None => "-",
    };
    let count = |v: &Option<Vec<u64>>| v.as_ref().map_or(0, |v| v.len());
    let _ = writeln!(
        o,
        "ecc          {} {}, {} roots: data {} ({} sectors)",
        e.method,
        e.placement,
        e.roots,
        size(e.data_bytes),
        e.data_sectors
    );
    if let (Some(ok), Some(total)) = (e.header_copies_ok, e.header_copies_total) {
        let _ = writeln!(
            o,
            "             header copies {ok}/{total} ok; sectors: {} missing, {} CRC errors; md5 {}; crc section {}; ecc section {}",
            count(&e.missing_sectors) + count(&e.missing_ecc_file_sectors),
            count(&e.bad_sectors),
            yn(e.md5_ok),
            yn(e.crc_section_ok),
            yn(e.ecc_section_ok)
        );
    }
    if let (Some(n), Some(bad)) = (e.ecc_blocks, e.ecc_blocks_bad) {
        let _ = writeln!(o, "             Reed-Solomon block test: {} of {n} blocks good", n - bad);
    }
}

/// Render a strip-ecc report.
pub fn strip_ecc(r: &StripEcc) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "image        {} ({} {}, {} roots)", r.image, r.ecc.method, r.ecc.placement, r.ecc.roots);
    let _ = writeln!(o, "wrote        {}  ({} bytes, md5 {})", r.output, r.bytes, r.md5);
    let _ = writeln!(
        o,
        "check        {}",
        match r.check.as_deref() {
            Some("md5") => "identical to the original: MD5 matches the one dvdisaster recorded",
            Some(_) => "every sector matches the CRC dvdisaster recorded (RS03 records no MD5)",
            None => "DAMAGED data written (--allow-damaged): this is not the original image",
        }
    );
    if !r.missing_sectors.is_empty() || !r.bad_sectors.is_empty() {
        let _ = writeln!(o, "damage       {} missing, {} CRC errors", r.missing_sectors.len(), r.bad_sectors.len());
    }
    o
}

/// Render a repair report.
pub fn repair(r: &Repair) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "image        {} ({} {}, {} roots)", r.image, r.ecc.method, r.ecc.placement, r.ecc.roots);
    let _ = writeln!(o, "wrote        {}", r.output);
    if let Some(e) = &r.ecc_output {
        let _ = writeln!(o, "             {e} (repaired .ecc file)");
    }
    let _ = writeln!(
        o,
        "repaired     {} image sectors, {} .ecc-file sectors; {} could not be repaired",
        r.repaired_sectors.len(),
        r.repaired_ecc_file_sectors.len(),
        r.unrepaired_sectors.len() + r.unrepaired_ecc_file_sectors.len()
    );
    if r.expanded_sectors > 0 {
        let _ = writeln!(o, "             the truncated image was extended by {} sectors", r.expanded_sectors);
    }
    ecc_check(&mut o, &r.ecc);
    let _ =
        writeln!(o, "result       {}", if r.ok { "OK: the repaired image verifies clean" } else { "DAMAGE REMAINS" });
    for p in &r.problems {
        let sev = match p.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let _ = writeln!(o, "  {sev:<8} {}: {}", line(&p.code), line(&p.message));
    }
    o
}

/// Render a migrate report (also the text `--mode plain -o FILE` writes).
pub fn migrate(r: &loopkit::report::Migrate) -> String {
    let mut o = String::new();
    let s = &r.source;
    let cipher = match (&s.cipher, s.key_bits) {
        (Some(c), Some(b)) => format!(" {c} {b}-bit"),
        _ => String::new(),
    };
    if let Some(p) = &r.plain {
        let _ =
            writeln!(o, "# loopkit migrate --mode plain: {} ({}{cipher}); the image is not changed", r.image, s.scheme);
        if let Some(c) = &p.passphrase_command {
            let _ = writeln!(o, "# open, typing the old passphrase at the prompt:\n{c}");
        }
        if let Some(c) = &p.key_file_command {
            let what = match p.key_file_kind.as_deref() {
                Some("loop-aes-key-file") => "the cleartext loop-AES key file",
                _ => "the raw key (--key-out writes it)",
            };
            let _ = writeln!(o, "# open with {what}:\n{c}");
        }
        if let Some(c) = &p.crypttab {
            let _ = writeln!(o, "# /etc/crypttab:\n{c}");
        }
        for n in &r.notes {
            let _ = writeln!(o, "# note: {n}");
        }
        return o;
    }
    let fmt = r.format.as_deref().unwrap_or("-");
    let _ = writeln!(o, "migrate      {} -> {fmt} {}", r.mode, r.output.as_deref().unwrap_or("-"));
    if let Some(u) = &r.uuid {
        let _ = writeln!(o, "             UUID {u}");
    }
    let _ = writeln!(
        o,
        "source       {} ({}{cipher}), {} at byte {}",
        r.image,
        s.scheme,
        size(s.payload_bytes),
        s.offset_bytes
    );
    if let Some(k) = &r.kdf {
        let _ = writeln!(o, "keyslot      {k}");
    }
    if let (Some(a), Some(b)) = (&r.source_sha256, &r.migrated_sha256) {
        let verdict = if r.sha256_match == Some(true) { "identical" } else { "DIFFERENT" };
        let _ = writeln!(o, "plaintext    source   sha256 {a}");
        let _ = writeln!(o, "             migrated sha256 {b}  ({verdict})");
    }
    if let Some(n) = r.resumed_from_bytes {
        let _ = writeln!(o, "resumed      after {}", size(n));
    }
    if let Some(c) = &r.cryptsetup {
        let _ = writeln!(o, "open with    {c}");
    }
    for n in &r.notes {
        let _ = writeln!(o, "note         {n}");
    }
    o
}

/// Render a `loopkit extents` report; at most `max_rows` extents are listed (0 = all).
pub fn extents(r: &loopkit::report::Extents, max_rows: usize) -> String {
    let mut o = String::new();
    let b = &r.backing;
    let _ = writeln!(o, "image        {}  ({}, {} allocated)", r.image, size(r.size_bytes), size(r.allocated_bytes));
    let dev = b.device.as_deref().unwrap_or("(no device node)");
    let _ = writeln!(
        o,
        "backing      {} on {dev} ({}), {}-byte logical / {}-byte physical blocks",
        b.filesystem, b.device_number, b.logical_block_size, b.physical_block_size
    );
    if let Some(m) = &b.mount_point {
        let _ = writeln!(o, "mounted at   {m} ({})", b.mount_options.as_deref().unwrap_or(""));
    }
    let s = &r.summary;
    let _ = writeln!(
        o,
        "extents      {} ({} fragment boundaries, largest {}); mapped {}, unwritten {}, via file {}; {} hole(s), {}",
        s.extents,
        s.fragments,
        size(s.largest_extent_bytes),
        size(s.mapped_bytes),
        size(s.unwritten_bytes),
        size(s.via_file_bytes),
        s.holes,
        size(s.hole_bytes)
    );
    if !r.extents.is_empty() {
        let _ = writeln!(o, "\n  {:>14} {:>16} {:>14}  {:<9} flags", "logical", "physical", "length", "class");
        let shown = if max_rows == 0 { r.extents.len() } else { max_rows.min(r.extents.len()) };
        for e in &r.extents[..shown] {
            let _ = writeln!(
                o,
                "  {:>14} {:>16} {:>14}  {:<9} {}{}",
                e.logical,
                e.physical,
                e.length,
                e.class,
                e.flags.join(","),
                e.reason.as_deref().map(|w| format!("  ({w})")).unwrap_or_default()
            );
        }
        if shown < r.extents.len() {
            let _ = writeln!(o, "  … {} more (--max-rows 0 or --json lists all)", r.extents.len() - shown);
        }
        o.push('\n');
    }
    for n in &r.notes {
        let _ = writeln!(o, "note         {n}");
    }
    if let Some(c) = &r.check {
        if c.ok {
            let _ = writeln!(
                o,
                "check        OK: {} mapped extent(s), {} read identically through the device and the file system",
                c.extents_checked,
                size(c.bytes_checked)
            );
        } else {
            let _ =
                writeln!(o, "check        {} of {} mapped extent(s) DIFFER:", c.mismatches.len(), c.extents_checked);
            for m in &c.mismatches {
                let _ = writeln!(
                    o,
                    "             logical {} physical {} length {}: first difference at file byte {} (file {}…, device {}…)",
                    m.logical,
                    m.physical,
                    m.length,
                    m.first_difference,
                    &m.file_sha256[..16],
                    &m.device_sha256[..16]
                );
            }
        }
    }
    if r.remap_safe {
        let _ = writeln!(o, "verdict      remap-safe");
    } else {
        let _ = writeln!(o, "verdict      not remap-safe:");
        for f in &r.refusals {
            let _ = writeln!(o, "             {} ({})", f.message, f.code);
        }
    }
    o
}

/// `loopkit rescue`.
pub fn rescue(r: &loopkit::report::Rescue) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "source       {} ({}, {}-byte sectors{})",
        line(&r.source),
        size(r.size),
        r.sector_size,
        if r.direct_io { ", O_DIRECT" } else { "" }
    );
    let _ = writeln!(o, "map          {}", line(&r.map));
    let b = &r.bytes;
    let _ = writeln!(
        o,
        "read         {} of {} ({} reads this run, {} failed, {} slow; phases: {})",
        size(b.finished),
        size(r.size),
        r.reads,
        r.failed_reads,
        r.slow_reads,
        if r.phases.is_empty() { "none".to_string() } else { r.phases.join(", ") }
    );
    if b.finished < r.size {
        let _ = writeln!(
            o,
            "missing      {} bad, {} not tried, {} not trimmed, {} not scraped ({} ranges)",
            size(b.bad),
            size(b.non_tried),
            size(b.non_trimmed),
            size(b.non_scraped),
            r.missing.len()
        );
    }
    if let Some(rep) = &r.repair {
        let _ = writeln!(
            o,
            "repair       {} {} roots: {} sectors restored, {} could not be",
            rep.ecc.method,
            rep.ecc.roots,
            rep.repaired_sectors.len(),
            rep.unrepaired_sectors.len() + rep.unrepaired_ecc_file_sectors.len()
        );
    }
    let verdict = match (r.ok, r.stopped.as_str()) {
        (true, "complete") => format!("OK: every byte read, written to {}", line(&r.output)),
        (true, _) => format!(
            "OK: the unread sectors were restored from the error-correction data; {} verifies clean",
            line(&r.output)
        ),
        (false, "interrupted") => {
            format!("INTERRUPTED: the map is saved; continue with --resume (data so far in {})", line(&r.data_path))
        }
        (false, _) => format!(
            "INCOMPLETE: data so far in {} (unread sectors carry dvdisaster dead-sector markers); retry with --resume --passes N, or another drive",
            line(&r.data_path)
        ),
    };
    let _ = writeln!(o, "result       {verdict}");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(line("a\u{1b}[31mred\nline\t\u{202e}x\u{85}"), "a\\x1b[31mred\\nline\\t\\u{202e}x\\u{85}");
        assert_eq!(terminal("ok\n\u{1b}]0;t\u{7}\tend\n"), "ok\n\\x1b]0;t\\x07\tend\n");
        assert!(matches!(line("plain café"), std::borrow::Cow::Borrowed(_)));
    }
}
