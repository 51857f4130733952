//! The LUKS2 JSON metadata model (LUKS2 spec 1.1.4 §3; rules as cryptsetup 2.6.1 enforces them,
//! `docs/formats/research/luks.md` §2.2): serde types for reading and writing, and the semantic checks
//! that run after the checksum (`validate`).
//!
//! 64-bit numbers (offsets, sizes, `iv_tweak`, `json_size`, `keyslots_size`) are JSON strings;
//! `key_size`, `sector_size`, `stripes`, `iterations`, `time`, `memory`, `cpus` are integers.
//! Binary values are standard base64 with padding. Fields loopkit does not use are kept in
//! `extra` so a header read and written back loses nothing.

use crate::crypto::HashAlg;
use base64ct::Encoding;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `u64` carried as a decimal JSON string.
mod u64_str {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(serde::de::Error::custom(format!("{s:?} is not a decimal string")));
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Optional `u64` carried as a decimal JSON string (absent when `None`).
mod u64_str_opt {
    use serde::{Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::u64_str::serialize(v, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::u64_str::deserialize(d).map(Some)
    }
}

/// The whole JSON area.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// `keyslots` by number.
    pub keyslots: BTreeMap<String, Keyslot>,
    /// `tokens` by number (free-form beyond `type` and `keyslots`).
    pub tokens: BTreeMap<String, serde_json::Value>,
    /// `segments` by number.
    pub segments: BTreeMap<String, Segment>,
    /// `digests` by number.
    pub digests: BTreeMap<String, Digest>,
    /// `config`.
    pub config: Config,
    /// Unknown top-level keys (cryptsetup ignores them).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `keyslots.N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyslot {
    /// `luks2` (or `reencrypt`, which loopkit does not open).
    #[serde(rename = "type")]
    pub kind: String,
    /// Volume key length in bytes.
    pub key_size: u32,
    /// Anti-forensic splitter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub af: Option<Af>,
    /// Where the encrypted key material lies.
    pub area: Area,
    /// Passphrase → slot key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfJson>,
    /// 0 ignore, 1 normal, 2 high.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `keyslots.N.af`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Af {
    /// `luks1`.
    #[serde(rename = "type")]
    pub kind: String,
    /// 4000.
    pub stripes: u32,
    /// Diffusion hash.
    pub hash: String,
}

/// `keyslots.N.area`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Area {
    /// `raw`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Byte offset in the device.
    #[serde(with = "u64_str")]
    pub offset: u64,
    /// Length in bytes.
    #[serde(with = "u64_str")]
    pub size: u64,
    /// Area cipher, e.g. `aes-xts-plain64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// Area key length in bytes (the KDF output length).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_size: Option<u32>,
    /// Other fields.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `keyslots.N.kdf`: pbkdf2 has hash/iterations, argon2i/argon2id have time/memory/cpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KdfJson {
    /// `pbkdf2`, `argon2i`, `argon2id`.
    #[serde(rename = "type")]
    pub kind: String,
    /// pbkdf2 hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// pbkdf2 iterations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// argon2 passes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<u32>,
    /// argon2 memory (KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<u32>,
    /// argon2 lanes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// base64, 32 bytes.
    pub salt: String,
}

/// `segments.N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// `crypt` (or `linear`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Byte offset of the data in the data device.
    #[serde(with = "u64_str")]
    pub offset: u64,
    /// `dynamic` or a byte count.
    pub size: String,
    /// IV of the first sector (used by cryptsetup only while re-encrypting). Required for
    /// `crypt` segments; `linear` and unknown segment types have none.
    #[serde(default, with = "u64_str_opt", skip_serializing_if = "Option::is_none")]
    pub iv_tweak: Option<u64>,
    /// Cipher, e.g. `aes-xts-plain64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// Encryption sector size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sector_size: Option<u32>,
    /// Other fields (`integrity`, `flags`…).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Segment {
    /// Whether it is a backup segment (a `backup-*` flag: kept while re-encrypting, not data).
    pub fn is_backup(&self) -> bool {
        self.extra
            .get("flags")
            .and_then(|f| f.as_array())
            .is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(|s| s.starts_with("backup-"))))
    }

    /// The fixed size in bytes, `None` for `dynamic`.
    ///
    /// # Errors
    /// `Corrupt` when `size` is neither.
    pub fn size_bytes(&self) -> crate::Result<Option<u64>> {
        if self.size == "dynamic" {
            return Ok(None);
        }
        if self.size.is_empty() || !self.size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(crate::Error::corrupt(format!("LUKS2 segment size {:?} is not a number", self.size)));
        }
        self.size.parse().map(Some).map_err(|_| crate::Error::corrupt(format!("LUKS2 segment size {:?}", self.size)))
    }
}

/// `digests.N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// `pbkdf2`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Keyslots whose key this digest checks.
    pub keyslots: Vec<String>,
    /// Segments encrypted with that key.
    pub segments: Vec<String>,
    /// PBKDF2 hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// PBKDF2 iterations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// base64, 32 bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// base64 digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// `config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// JSON area size (`hdr_size − 4096`).
    #[serde(with = "u64_str")]
    pub json_size: u64,
    /// Bytes reserved for keyslot areas after the two header copies.
    #[serde(with = "u64_str")]
    pub keyslots_size: u64,
    /// Other fields (`flags`, `requirements`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Decode standard padded base64.
///
/// # Errors
/// `Corrupt` naming `what`.
pub fn b64_decode(s: &str, what: &str) -> crate::Result<Vec<u8>> {
    base64ct::Base64::decode_vec(s).map_err(|_| crate::Error::corrupt(format!("LUKS2 {what} is not valid base64")))
}

/// Encode standard padded base64.
pub fn b64_encode(b: &[u8]) -> String {
    base64ct::Base64::encode_string(b)
}

/// Parse a hash name as LUKS writes it.
///
/// # Errors
/// `Unsupported` for hashes loopkit lacks (blake2, sha3, stribog…) and for the kernel's
/// truncated Whirlpool names (`wp256`, `wp384`), which no LUKS key derivation uses.
pub fn hash_alg(name: &str, what: &str) -> crate::Result<HashAlg> {
    name.parse::<HashAlg>()
        .ok()
        .filter(|h| h.is_full_digest())
        .ok_or_else(|| crate::Error::unsupported(format!("{what} uses hash {name:?}, which loopkit does not support")))
}

fn numbered(map_name: &str, key: &str) -> crate::Result<()> {
    if key.is_empty() || key.len() > 9 || !key.bytes().all(|b| b.is_ascii_digit()) {
        return Err(crate::Error::corrupt(format!("LUKS2 {map_name} key {key:?} is not a decimal number")));
    }
    Ok(())
}

impl Metadata {
    /// Parse the JSON text (the part of the area before the first NUL).
    ///
    /// # Errors
    /// `Corrupt` when it is not LUKS2 metadata.
    pub fn parse(text: &[u8]) -> crate::Result<Metadata> {
        if text.first() != Some(&b'{') {
            return Err(crate::Error::corrupt("LUKS2 JSON area does not start with '{'"));
        }
        serde_json::from_slice(text).map_err(|e| crate::Error::corrupt(format!("LUKS2 JSON metadata: {e}")))
    }

    /// Compact JSON text as cryptsetup writes it.
    pub fn to_json(&self) -> String {
        // Serialising plain data structures cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The semantic checks cryptsetup runs after the checksum (the subset that matters for
    /// reading): numbered keys, references between digests/keyslots/segments, keyslot areas
    /// inside the keyslots area and not overlapping, config sizes.
    ///
    /// # Errors
    /// `Corrupt` naming the first violated rule.
    pub fn validate(&self, hdr_size: u64) -> crate::Result<()> {
        self.validate_config(hdr_size)?;
        for k in self.keyslots.keys() {
            numbered("keyslot", k)?;
        }
        self.validate_tokens()?;
        for k in self.digests.keys() {
            numbered("digest", k)?;
        }
        self.validate_segments()?;
        self.validate_segment_order(hdr_size)?;
        self.validate_digests()?;
        self.validate_keyslot_areas(hdr_size)
    }

    /// `config`: the JSON area and the keyslots area sizes.
    fn validate_config(&self, hdr_size: u64) -> crate::Result<()> {
        let c = &self.config;
        if c.json_size != hdr_size - 4096 {
            return Err(crate::Error::corrupt(format!(
                "LUKS2 config json_size {} does not match hdr_size {hdr_size} − 4096",
                c.json_size
            )));
        }
        if !c.keyslots_size.is_multiple_of(4096) || c.keyslots_size > 128 << 20 {
            return Err(crate::Error::corrupt(format!(
                "LUKS2 keyslots_size {} is not 4096-aligned or exceeds 128 MiB",
                c.keyslots_size
            )));
        }
        Ok(())
    }

    /// Tokens: numbered, typed, naming existing keyslots.
    fn validate_tokens(&self) -> crate::Result<()> {
        for (k, t) in &self.tokens {
            numbered("token", k)?;
            // cryptsetup `hdr_validate_tokens`: an object with a string `type` and a `keyslots`
            // array naming existing keyslots.
            let ok_type = t.get("type").is_some_and(|v| v.is_string());
            let Some(slots) = t.get("keyslots").and_then(|v| v.as_array()).filter(|_| ok_type) else {
                return Err(crate::Error::corrupt(format!("LUKS2 token {k} lacks a string type or a keyslots array")));
            };
            for ks in slots {
                match ks.as_str() {
                    Some(id) if self.keyslots.contains_key(id) => {}
                    _ => return Err(crate::Error::corrupt(format!("LUKS2 token {k} names missing keyslot {ks}"))),
                }
            }
        }
        Ok(())
    }

    /// Segments, each on its own: at least one, numbered, aligned, with valid flags and, for a
    /// `crypt` segment, sector size, size, encryption and IV tweak.
    fn validate_segments(&self) -> crate::Result<()> {
        if self.segments.is_empty() {
            return Err(crate::Error::corrupt("LUKS2 metadata has no segment"));
        }
        for (k, s) in &self.segments {
            numbered("segment", k)?;
            if !s.offset.is_multiple_of(512) {
                return Err(crate::Error::corrupt(format!("LUKS2 segment {k} offset {} is not 512-aligned", s.offset)));
            }
            let size = s.size_bytes()?;
            if let Some(f) = s.extra.get("flags")
                && !f.as_array().is_some_and(|a| a.iter().all(|x| x.is_string()))
            {
                return Err(crate::Error::corrupt(format!("LUKS2 segment {k} flags are not an array of strings")));
            }
            if s.kind == "crypt" {
                let ss = s.sector_size.unwrap_or(0);
                if !matches!(ss, 512 | 1024 | 2048 | 4096) {
                    return Err(crate::Error::corrupt(format!("LUKS2 segment {k} sector_size {ss} is invalid")));
                }
                if size.is_some_and(|z| z == 0 || !z.is_multiple_of(u64::from(ss))) {
                    return Err(crate::Error::corrupt(format!(
                        "LUKS2 segment {k} size {} is not a non-zero multiple of its sector size {ss}",
                        s.size
                    )));
                }
                if s.encryption.as_deref().is_none_or(str::is_empty) {
                    return Err(crate::Error::corrupt(format!("LUKS2 segment {k} has no encryption")));
                }
                if s.iv_tweak.is_none() {
                    return Err(crate::Error::corrupt(format!("LUKS2 crypt segment {k} has no iv_tweak")));
                }
            }
        }
        Ok(())
    }

    /// Segments together: numbered without a gap, backups last, and the data after the keyslots
    /// area.
    fn validate_segment_order(&self, hdr_size: u64) -> crate::Result<()> {
        let c = &self.config;
        // cryptsetup `hdr_validate_segments`: keys 0..n-1 without a gap, backup segments (a
        // `backup-*` flag, kept while re-encrypting) numbered after every segment in use.
        let mut first_backup = self.segments.len();
        for i in 0..self.segments.len() {
            let Some(s) = self.segments.get(&i.to_string()) else {
                return Err(crate::Error::corrupt(format!("LUKS2 segments: gap at key {i}")));
            };
            if s.is_backup() {
                first_backup = first_backup.min(i);
            } else if i > first_backup {
                return Err(crate::Error::corrupt(format!("LUKS2 segment {i} follows a backup segment")));
            }
        }
        let min_offset = self.segments.values().filter(|s| !s.is_backup()).map(|s| s.offset).min().unwrap_or(0);
        if min_offset != 0 && (min_offset < c.keyslots_size || min_offset - c.keyslots_size < 2 * hdr_size) {
            return Err(crate::Error::corrupt(format!(
                "LUKS2 keyslots_size {} does not fit between the two headers and the data at {min_offset}",
                c.keyslots_size
            )));
        }
        Ok(())
    }

    /// Digests name existing keyslots and segments.
    fn validate_digests(&self) -> crate::Result<()> {
        for (k, d) in &self.digests {
            for ks in &d.keyslots {
                if !self.keyslots.contains_key(ks) {
                    return Err(crate::Error::corrupt(format!("LUKS2 digest {k} names missing keyslot {ks}")));
                }
            }
            for sg in &d.segments {
                if !self.segments.contains_key(sg) {
                    return Err(crate::Error::corrupt(format!("LUKS2 digest {k} names missing segment {sg}")));
                }
            }
        }
        Ok(())
    }

    /// Keyslot areas lie inside the keyslots area without overlapping, and each LUKS2 keyslot
    /// belongs to exactly one digest.
    fn validate_keyslot_areas(&self, hdr_size: u64) -> crate::Result<()> {
        let lo = 2 * hdr_size;
        let hi = lo + self.config.keyslots_size;
        let mut areas: Vec<(u64, u64, &str)> = Vec::new();
        for (k, ks) in &self.keyslots {
            let a = &ks.area;
            let end =
                a.offset.checked_add(a.size).ok_or_else(|| crate::Error::corrupt("LUKS2 keyslot area overflows"))?;
            if a.size == 0 || a.offset < lo || end > hi {
                return Err(crate::Error::corrupt(format!(
                    "LUKS2 keyslot {k} area {}..{end} lies outside the keyslots area {lo}..{hi}",
                    a.offset
                )));
            }
            if let Some((_, _, other)) = areas.iter().find(|(o, e, _)| a.offset < *e && *o < end) {
                return Err(crate::Error::corrupt(format!("LUKS2 keyslot {k} area overlaps keyslot {other}")));
            }
            areas.push((a.offset, end, k));
            let in_digests = self.digests.values().filter(|d| d.keyslots.iter().any(|x| x == k)).count();
            if ks.kind == "luks2" && in_digests != 1 {
                return Err(crate::Error::corrupt(format!(
                    "LUKS2 keyslot {k} belongs to {in_digests} digests (must be exactly one)"
                )));
            }
        }
        Ok(())
    }

    /// The mandatory requirements in `config.requirements.mandatory` (e.g.
    /// `online-reencrypt-v2`): cryptsetup refuses to open a device whose requirements it does not
    /// know, and a re-encryption requirement means the data is split between two keys.
    pub fn requirements(&self) -> Vec<String> {
        self.config
            .extra
            .get("requirements")
            .and_then(|r| r.get("mandatory"))
            .and_then(|m| m.as_array())
            .map(|a| a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), String::from)).collect())
            .unwrap_or_default()
    }

    /// The segment that holds the data (`segments."0"`, or the lowest-numbered crypt segment).
    pub fn data_segment(&self) -> Option<(&String, &Segment)> {
        self.segments
            .iter()
            .filter(|(_, s)| s.kind == "crypt")
            .min_by_key(|(k, _)| k.parse::<u64>().unwrap_or(u64::MAX))
    }

    /// The digest that covers segment `seg`.
    pub fn digest_for_segment(&self, seg: &str) -> Option<&Digest> {
        self.digests.values().find(|d| d.segments.iter().any(|s| s == seg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> String {
        let salt = b64_encode(&[1u8; 32]);
        format!(
            r#"{{"keyslots":{{"0":{{"type":"luks2","key_size":64,"af":{{"type":"luks1","stripes":4000,"hash":"sha256"}},"area":{{"type":"raw","offset":"32768","size":"258048","encryption":"aes-xts-plain64","key_size":64}},"kdf":{{"type":"pbkdf2","hash":"sha256","iterations":1000,"salt":"{salt}"}}}}}},"tokens":{{}},"segments":{{"0":{{"type":"crypt","offset":"16777216","size":"dynamic","iv_tweak":"0","encryption":"aes-xts-plain64","sector_size":512}}}},"digests":{{"0":{{"type":"pbkdf2","keyslots":["0"],"segments":["0"],"hash":"sha256","iterations":1000,"salt":"{salt}","digest":"{salt}"}}}},"config":{{"json_size":"12288","keyslots_size":"16744448"}}}}"#
        )
    }

    #[test]
    fn roundtrip_is_byte_identical() {
        let s = sample();
        let m = Metadata::parse(s.as_bytes()).unwrap();
        m.validate(16384).unwrap();
        assert_eq!(m.to_json(), s);
    }

    #[test]
    fn rejections() {
        let s = sample();
        let bad = |from: &str, to: &str| {
            let t = s.replacen(from, to, 1);
            assert_ne!(t, s, "mutation {from} did not apply");
            Metadata::parse(t.as_bytes()).and_then(|m| m.validate(16384)).unwrap_err()
        };
        bad(r#""tokens":{},"#, "");
        bad(r#""offset":"16777216""#, r#""offset":16777216"#);
        bad(r#""iv_tweak":"0","#, "");
        bad(r#""json_size":"12288""#, r#""json_size":"12287""#);
        bad(r#""offset":"32768""#, r#""offset":"16384""#);
        bad(r#""keyslots":["0"]"#, r#""keyslots":["1"]"#);
        bad(r#""sector_size":512"#, r#""sector_size":768"#);
        bad(r#""segments":{"0""#, r#""segments":{"x""#);
        assert!(Metadata::parse(format!(" {s}").as_bytes()).is_err());
    }

    /// A `linear` segment (cryptsetup writes one while decrypting: `reencrypt --decrypt`) and an
    /// unknown segment type carry no `iv_tweak`, `encryption` or `sector_size`: they parse, are
    /// kept verbatim, and are never taken for the data segment.
    #[test]
    fn non_crypt_segments_parse() {
        let s = sample();
        for extra in [
            r#""1":{"type":"linear","offset":"0","size":"dynamic","flags":["backup-final"]}"#,
            r#""1":{"type":"future-kind","offset":"0","size":"4096","whatever":[1,2]}"#,
        ] {
            let t = s.replacen(r#""segments":{"#, &format!(r#""segments":{{{extra},"#), 1);
            let m = Metadata::parse(t.as_bytes()).unwrap();
            m.validate(16384).unwrap();
            assert_eq!(m.segments["1"].iv_tweak, None);
            assert_eq!(m.data_segment().map(|(k, _)| k.as_str()), Some("0"));
            // Written back without inventing an iv_tweak (key order aside, nothing changes).
            let again = Metadata::parse(m.to_json().as_bytes()).unwrap();
            assert_eq!(again, m);
            assert!(!serde_json::to_string(&m.segments["1"]).unwrap().contains("iv_tweak"));
        }
        // A crypt segment still needs its iv_tweak (cryptsetup: json_segment_crypt).
        let no_tweak = s.replacen(r#""iv_tweak":"0","#, "", 1);
        let e = Metadata::parse(no_tweak.as_bytes()).unwrap().validate(16384).unwrap_err();
        assert!(e.to_string().contains("iv_tweak"), "{e}");
    }

    #[test]
    fn mandatory_requirements_are_read() {
        let s = sample();
        assert!(Metadata::parse(s.as_bytes()).unwrap().requirements().is_empty());
        let t = s.replacen(
            r#""keyslots_size":"16744448""#,
            r#""keyslots_size":"16744448","requirements":{"mandatory":["online-reencrypt-v2"]}"#,
            1,
        );
        let m = Metadata::parse(t.as_bytes()).unwrap();
        assert_eq!(m.requirements(), vec!["online-reencrypt-v2".to_string()]);
        assert_eq!(m.to_json(), t, "requirements survive a round trip");
    }
}
