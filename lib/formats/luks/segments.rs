//! Reading a LUKS2 volume through its data segments while a `cryptsetup reencrypt` is
//! interrupted: the active (non-`backup-*`) segments, in id order, tile the logical device
//! (`crypt` under the new key, `crypt` under the old key, or `linear` plaintext), each with its
//! own cipher, sector size, digest (key) and `iv_tweak` (the IV of its first sector).
//!
//! Read exactly or refused, never guessed:
//! - a segment flagged `in-reencryption` is a hotzone that was being rewritten when cryptsetup
//!   stopped: its blocks may be old or new, which only cryptsetup's recovery (from the
//!   `checksum`/`journal` resilience data in the reencrypt keyslot) can tell — refused;
//! - resilience `none` records nothing about a hotzone in flight, so a crash leaves no trace in
//!   the metadata — refused;
//! - segments whose data lies at different distances from their logical position (an
//!   encryption or decryption with a data shift, `--reduce-device-size`, a moved first segment)
//!   are refused: loopkit reads a payload as one range of the device;
//! - segment boundaries that are not whole sectors of every segment, a `dynamic` segment before
//!   the last, or a segment type other than `crypt`/`linear` — refused.

use super::json::{Metadata, Segment};
use crate::crypto::{Key, SectorCipher};

/// One active segment as the payload sees it.
pub struct Part {
    /// First payload byte of the segment.
    pub start: u64,
    /// End (exclusive) payload byte; `None` = to the end of the device.
    pub end: Option<u64>,
    /// The segment's cipher (`None` for `linear` plaintext).
    pub cipher: Option<Box<dyn SectorCipher>>,
    /// IV sector (512-byte units) of the segment's first sector.
    pub iv_tweak: u64,
}

/// The plan of the active segments: device offset of payload byte 0 and each segment's spec,
/// digest id, sector size. Built without keys (for `inspect`) by [`plan`].
pub struct Planned<'a> {
    /// Device byte of payload byte 0.
    pub base: u64,
    /// (segment id, segment, first payload byte).
    pub segs: Vec<(&'a str, &'a Segment, u64)>,
}

/// Whether the metadata describes more than one active segment (an interrupted re-encryption
/// that has moved data).
pub fn is_segmented(m: &Metadata) -> bool {
    m.segments.values().filter(|s| !s.is_backup()).count() > 1
}

fn flagged(s: &Segment, flag: &str) -> bool {
    s.extra.get("flags").and_then(|f| f.as_array()).is_some_and(|a| a.iter().any(|x| x.as_str() == Some(flag)))
}

/// Check that the active segments can be read exactly (see the module comment).
///
/// # Errors
/// `Unsupported` naming why not; `Corrupt` for sizes that are not numbers.
pub fn plan(m: &Metadata) -> crate::Result<Planned<'_>> {
    let refuse = |why: String| {
        crate::Error::unsupported(format!(
            "this LUKS2 volume is in the middle of a re-encryption that loopkit cannot read exactly: {why} (finish it \
             with cryptsetup reencrypt --resume-only, on a copy)"
        ))
    };
    if let Some((id, _)) = m.keyslots.iter().find(|(_, k)| k.kind == "reencrypt" && k.area.kind == "none") {
        return Err(refuse(format!(
            "its reencrypt keyslot {id} has resilience \"none\", so a hotzone interrupted mid-write leaves no trace"
        )));
    }
    let mut active: Vec<(&str, &Segment)> =
        m.segments.iter().filter(|(_, s)| !s.is_backup()).map(|(k, s)| (k.as_str(), s)).collect();
    active.sort_by_key(|(k, _)| k.parse::<u64>().unwrap_or(u64::MAX));
    let Some((_, first)) = active.first() else {
        return Err(crate::Error::corrupt("LUKS2 metadata has no data segment"));
    };
    let base = first.offset;
    let mut pos = 0u64;
    let mut segs = Vec::new();
    for (i, (id, s)) in active.iter().enumerate() {
        if flagged(s, "in-reencryption") {
            return Err(refuse(format!("segment {id} is a hotzone that was being rewritten (flag in-reencryption)")));
        }
        if s.kind != "crypt" && s.kind != "linear" {
            return Err(refuse(format!("segment {id} has type {:?}", s.kind)));
        }
        if s.offset.checked_sub(base) != Some(pos) {
            return Err(refuse(format!(
                "segment {id} lies at device byte {} for payload byte {pos} (data shifted by the re-encryption)",
                s.offset
            )));
        }
        let unit = u64::from(s.sector_size.unwrap_or(512).max(512));
        if !pos.is_multiple_of(unit) {
            return Err(refuse(format!("segment {id} starts at payload byte {pos}, not a whole {unit}-byte sector")));
        }
        segs.push((*id, *s, pos));
        match s.size_bytes()? {
            Some(n) => {
                if !n.is_multiple_of(unit) {
                    return Err(refuse(format!("segment {id} is {n} bytes, not whole {unit}-byte sectors")));
                }
                pos = pos.checked_add(n).ok_or_else(|| crate::Error::corrupt("LUKS2 segment sizes overflow"))?;
            }
            None if i + 1 == active.len() => {}
            None => return Err(refuse(format!("segment {id} is dynamic but not the last"))),
        }
    }
    Ok(Planned { base, segs })
}

/// The key of every digest, as unlocking found them (digest id → volume key).
pub type DigestKeys = [(String, Key)];

/// Build the segments' ciphers with the keys of their digests.
///
/// # Errors
/// `Unsupported` when a segment's digest has no key among `keys` (no keyslot of it opened with
/// this passphrase) or its cipher is one loopkit lacks.
pub fn parts(m: &Metadata, p: &Planned<'_>, keys: &DigestKeys) -> crate::Result<Vec<Part>> {
    let mut out = Vec::new();
    for (i, (id, s, start)) in p.segs.iter().enumerate() {
        let end = p.segs.get(i + 1).map(|n| n.2);
        let cipher = if s.kind == "linear" {
            None
        } else {
            let digest = m.digests.iter().find(|(_, d)| d.segments.iter().any(|x| x == id)).map(|(k, _)| k);
            let key = digest.and_then(|d| keys.iter().find(|(k, _)| k == d)).map(|(_, k)| k).ok_or_else(|| {
                crate::Error::unsupported(format!(
                    "LUKS2 segment {id} (re-encryption) is under a key no keyslot opened with this passphrase"
                ))
            })?;
            let spec = s
                .encryption
                .as_deref()
                .ok_or_else(|| crate::Error::corrupt(format!("segment {id} has no encryption")))?;
            Some(super::sector_cipher(spec, key.bytes(), s.sector_size.unwrap_or(512) as usize)?)
        };
        out.push(Part { start: *start, end, cipher, iv_tweak: s.iv_tweak.unwrap_or(0) });
    }
    Ok(out)
}

/// The payload's cipher: each range of the payload goes through its segment's cipher with the
/// segment's IVs (`iv_tweak` + sectors into the segment), `linear` ranges are copied.
pub struct SegmentedCipher {
    parts: Vec<Part>,
    unit: usize,
    name: String,
}

impl SegmentedCipher {
    /// Compose `parts` (from [`parts`]); the unit is the largest sector size among them.
    pub fn new(parts: Vec<Part>) -> Self {
        let unit = parts.iter().filter_map(|p| p.cipher.as_ref().map(|c| c.sector_bytes())).max().unwrap_or(512);
        let name = parts
            .iter()
            .map(|p| p.cipher.as_ref().map_or_else(|| "linear".to_string(), |c| c.dm_name()))
            .collect::<Vec<_>>()
            .join(" + ");
        SegmentedCipher { parts, unit, name }
    }

    fn run(&self, iv_sector: u64, data: &mut [u8], encrypt: bool) {
        let mut pos = iv_sector.saturating_mul(512);
        let mut rest = data;
        while !rest.is_empty() {
            let Some(p) = self.parts.iter().find(|p| pos >= p.start && p.end.is_none_or(|e| pos < e)) else {
                // Past every segment (the layout never asks): zeros, never ciphertext as data.
                rest.fill(0);
                return;
            };
            let here = p.end.map_or(rest.len() as u64, |e| (e - pos).min(rest.len() as u64)) as usize;
            let (now, later) = rest.split_at_mut(here);
            if let Some(c) = &p.cipher {
                let iv = p.iv_tweak.wrapping_add((pos - p.start) / 512);
                if encrypt {
                    c.encrypt_sectors(iv, now);
                } else {
                    c.decrypt_sectors(iv, now);
                }
            }
            pos += here as u64;
            rest = later;
        }
    }
}

impl SectorCipher for SegmentedCipher {
    fn decrypt_sectors(&self, iv_sector: u64, data: &mut [u8]) {
        self.run(iv_sector, data, false);
    }
    fn encrypt_sectors(&self, iv_sector: u64, data: &mut [u8]) {
        self.run(iv_sector, data, true);
    }
    fn dm_name(&self) -> String {
        self.name.clone()
    }
    fn sector_bytes(&self) -> usize {
        self.unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metadata with the given segments (JSON object text) and reencrypt keyslot area type.
    fn meta(segments: &str, resilience: &str) -> Metadata {
        let salt = super::super::json::b64_encode(&[1u8; 32]);
        let text = format!(
            r#"{{"keyslots":{{"0":{{"type":"luks2","key_size":64,"af":{{"type":"luks1","stripes":4000,"hash":"sha256"}},"area":{{"type":"raw","offset":"32768","size":"258048","encryption":"aes-xts-plain64","key_size":64}},"kdf":{{"type":"pbkdf2","hash":"sha256","iterations":1000,"salt":"{salt}"}}}},"1":{{"type":"reencrypt","key_size":1,"mode":"reencrypt","area":{{"type":"{resilience}","offset":"290816","size":"4096"}}}}}},"tokens":{{}},"segments":{segments},"digests":{{"0":{{"type":"pbkdf2","keyslots":["0"],"segments":["0","1"],"hash":"sha256","iterations":1000,"salt":"{salt}","digest":"{salt}"}}}},"config":{{"json_size":"12288","keyslots_size":"16744448"}}}}"#
        );
        Metadata::parse(text.as_bytes()).unwrap()
    }

    const NEW: &str = r#""0":{"type":"crypt","offset":"16777216","size":"1048576","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":512}"#;

    #[test]
    fn plan_accepts_safe_points_and_refuses_the_rest() {
        let ok = meta(
            &format!(
                r#"{{{NEW},"1":{{"type":"crypt","offset":"17825792","size":"dynamic","iv_tweak":"2048","encryption":"aes-xts-plain64","sector_size":512}},"2":{{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":512,"flags":["backup-previous"]}}}}"#
            ),
            "checksum",
        );
        assert!(is_segmented(&ok));
        let p = plan(&ok).unwrap();
        assert_eq!((p.base, p.segs.len(), p.segs[1].2), (16 << 20, 2, 1 << 20));
        let key = Key::new(vec![5u8; 64]);
        let parts = parts(&ok, &p, &[("0".to_string(), key)]).unwrap();
        let c = SegmentedCipher::new(parts);
        assert_eq!(c.dm_name(), "aes-xts-plain64 + aes-xts-plain64");
        // A hotzone in flight, resilience none, a data shift, a dynamic segment before the last.
        let hot = r#""1":{"type":"crypt","offset":"17825792","size":"dynamic","iv_tweak":"2048","encryption":"aes-xts-plain64","sector_size":512,"flags":["in-reencryption"]}"#;
        let shifted = r#""1":{"type":"linear","offset":"0","size":"dynamic"}"#;
        let dyn_first = r#""0":{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":512},"1":{"type":"linear","offset":"17825792","size":"dynamic"}"#;
        for (segs, res, why) in [
            (format!("{{{NEW},{hot}}}"), "checksum", "in-reencryption"),
            (format!("{{{NEW},{shifted}}}"), "checksum", "shifted"),
            (format!("{{{dyn_first}}}"), "checksum", "dynamic"),
            (format!("{{{NEW}}}"), "none", "none"),
        ] {
            let e = plan(&meta(&segs, res)).err().unwrap_or_else(|| panic!("{why} accepted"));
            assert_eq!(e.kind(), crate::ErrorKind::Unsupported, "{why}");
            assert!(e.message().contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn segmented_cipher_uses_each_segments_ivs() {
        let k1 = Key::new(vec![1u8; 64]);
        let new = super::super::sector_cipher("aes-xts-plain64", k1.bytes(), 512).unwrap();
        let parts = vec![
            Part { start: 0, end: Some(1024), cipher: Some(new), iv_tweak: 0 },
            Part { start: 1024, end: None, cipher: None, iv_tweak: 0 },
        ];
        let c = SegmentedCipher::new(parts);
        let plain: Vec<u8> = (0..2048u32).map(|i| i as u8).collect();
        let mut data = plain.clone();
        super::super::sector_cipher("aes-xts-plain64", k1.bytes(), 512).unwrap().encrypt_sectors(0, &mut data[..1024]);
        c.decrypt_sectors(0, &mut data);
        assert_eq!(data, plain);
        // Starting inside the second (linear) segment: copied unchanged.
        let mut tail = plain[1536..].to_vec();
        c.decrypt_sectors(3, &mut tail);
        assert_eq!(tail, plain[1536..]);
    }
}
