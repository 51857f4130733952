//! LUKS1 and LUKS2 (`docs/formats/luks.md`; LUKS1 spec 1.2.3, LUKS2 spec 1.1.4, cryptsetup
//! 2.6.1 behaviour): reading headers with staged validation, unlocking keyslots with a
//! passphrase, building the payload's sector cipher, and writing new headers for `migrate`.
//!
//! ```text
//!  header.rs  binary headers (LUKS1 phdr, LUKS2 copies + checksums), staged checks
//!  json.rs    LUKS2 metadata model + semantic validation
//!  af.rs      anti-forensic splitter
//!  keyslot.rs PBKDF2 / Argon2 slot keys, keyslot material, volume-key digests
//!  write.rs   new LUKS1 / LUKS2 headers in memory
//! ```
//!
//! Supported payload ciphers: `aes-xts-plain64` (any sector size), and with 512-byte sectors
//! `aes-cbc-plain`, `aes-cbc-plain64`, `aes-cbc-null`, `aes-ecb` (what detached headers over
//! legacy images use). Others (`aes-cbc-essiv:sha256`, serpent, twofish…) are recognised and
//! described but reported as unsupported for unlocking. Headers are never repaired.

pub mod af;
pub mod findings;
pub mod header;
pub mod json;
pub mod keyslot;
pub mod segments;
pub mod write;

pub use header::{LUKS_MAGIC, LUKS2_MAGIC_2ND};

use crate::crypto::{Key, Passphrase, SectorCipher};
use crate::finding::Finding;
use crate::source::ByteSource;
use header::{Luks1, Luks2};
pub use keyslot::KdfPolicy;
use keyslot::{Argon2Variant, Kdf};

/// A keyslot as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyslotInfo {
    /// Slot number.
    pub id: u32,
    /// Whether it holds a key.
    pub active: bool,
    /// KDF summary, e.g. `argon2id (time 4, memory 1048576 KiB, 4 cpus)`.
    pub kdf: String,
    /// LUKS2 priority (None for LUKS1 / default).
    pub priority: Option<u32>,
}

/// What a LUKS header says (the summary `inspect` shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub version: u16,
    /// dm-crypt spelling, e.g. `aes-xts-plain64`.
    pub cipher: String,
    /// Volume key size in bits.
    pub key_bits: u32,
    /// Payload start in bytes (0 for a detached header).
    pub payload_offset_bytes: u64,
    /// Payload sector size (LUKS1: 512).
    pub sector_size: u32,
    /// IV sector of the payload's first sector as activation uses it (always 0: cryptsetup
    /// ignores LUKS2 `iv_tweak` outside re-encryption).
    pub iv_offset_sectors: u64,
    /// Payload length if fixed (`None` = to the end of the device).
    pub payload_size_bytes: Option<u64>,
    /// UUID string.
    pub uuid: String,
    /// LUKS2 label.
    pub label: Option<String>,
    /// Active keyslot count.
    pub keyslots: usize,
    /// Every active keyslot.
    pub keyslot_details: Vec<KeyslotInfo>,
    /// LUKS2 token types (e.g. `loopkit-migration`).
    pub token_types: Vec<String>,
    /// Damage or oddities found while reading (never repaired), and remarks on how the header
    /// is read: what `inspect` lists as notes.
    pub notes: Vec<crate::finding::Finding>,
    /// LUKS2 `config.requirements.mandatory` (e.g. `online-reencrypt-v2`).
    pub requirements: Vec<String>,
    /// What `verify` reports about the header itself (`luks.*` codes, `docs/JSON.md`).
    pub findings: Vec<crate::finding::Finding>,
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// LUKS1.
    V1(Luks1),
    /// LUKS2.
    V2(Luks2),
}

/// A LUKS container's header, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Luks {
    /// The full header.
    pub parsed: Parsed,
    /// Its summary.
    pub header: Header,
    /// The volume keys of the other segments' digests that the last successful unlock found
    /// (a LUKS2 volume mid-re-encryption has an old and a new key); [`Luks::payload`] uses them.
    pub segment_keys: SegmentKeys,
}

/// Volume keys by digest id, filled by [`Luks::unlock_with`]. Wiped on drop (the keys are
/// [`Key`]s); never printed; equal to any other (a cache, not part of the header).
#[derive(Default)]
pub struct SegmentKeys(std::sync::Mutex<Vec<(String, Key)>>);

impl SegmentKeys {
    fn get(&self) -> Vec<(String, Key)> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
    fn set(&self, keys: Vec<(String, Key)>) {
        if let Ok(mut v) = self.0.lock() {
            *v = keys;
        }
    }
}

impl Clone for SegmentKeys {
    fn clone(&self) -> Self {
        SegmentKeys(std::sync::Mutex::new(self.get()))
    }
}

impl PartialEq for SegmentKeys {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for SegmentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SegmentKeys(<{} redacted>)", self.get().len())
    }
}

/// Fill `buf` from the OS random generator.
///
/// # Errors
/// `Io` when the OS generator fails.
pub fn random_fill(buf: &mut [u8]) -> crate::Result<()> {
    getrandom::fill(buf)
        .map_err(|e| crate::Error::new(crate::ErrorKind::Io, format!("the OS random generator failed: {e}")))
}

/// `N` random bytes from the OS.
///
/// # Errors
/// `Io` when the OS generator fails.
pub fn random_bytes<const N: usize>() -> crate::Result<[u8; N]> {
    let mut b = [0u8; N];
    random_fill(&mut b)?;
    Ok(b)
}

/// The sector cipher for a LUKS cipher spec (`aes-xts-plain64`, `aes-cbc-essiv:sha256`,
/// `twofish-xts-plain64`…; [`crate::crypto::spec::CipherSpec`]).
///
/// # Errors
/// `Unsupported` naming the spec for ciphers loopkit cannot run; `InvalidInput` for a key
/// length that does not fit.
pub fn sector_cipher(spec: &str, key: &[u8], sector_bytes: usize) -> crate::Result<Box<dyn SectorCipher>> {
    let parsed: crate::crypto::spec::CipherSpec = spec.parse()?;
    parsed.build(key, sector_bytes)
}

/// Look for a LUKS header at byte 0 of `src`. `Ok(None)` = not LUKS.
///
/// # Errors
/// `Io` on read failure; `Corrupt` when the magic is there but the header is inconsistent.
pub fn probe(src: &dyn ByteSource) -> crate::Result<Option<Header>> {
    Ok(read(src)?.map(|l| l.header))
}

/// Read and check the LUKS header at byte 0 of `src`. `Ok(None)` = not LUKS.
///
/// # Errors
/// `Io` on read failure; `Corrupt` when the magic is there but the header is inconsistent;
/// `Unsupported` for an unknown version.
pub fn read(src: &dyn ByteSource) -> crate::Result<Option<Luks>> {
    if src.size_bytes() < header::LUKS1_PHDR_BYTES as u64 {
        return Ok(None);
    }
    let mut h = vec![0u8; header::LUKS1_PHDR_BYTES];
    src.read_exact_at(&mut h, 0).map_err(|e| crate::Error::io("reading LUKS header", e))?;
    if h[..6] != LUKS_MAGIC {
        // A wiped or overwritten primary LUKS2 header: cryptsetup still finds the secondary copy
        // at one of the fixed offsets (and would rewrite the primary from it).
        return match header::read_secondary_only(src)? {
            Some(l) => {
                let parsed = Parsed::V2(l);
                let header = summarize(&parsed)?;
                Ok(Some(Luks { parsed, header, segment_keys: SegmentKeys::default() }))
            }
            None => Ok(None),
        };
    }
    let parsed = match crate::bytes::be16(&h, 6) {
        1 => {
            let l = Luks1::parse(&h)?;
            let end = u64::from(l.slots.iter().map(|s| s.key_material_sector).max().unwrap_or(0)) + l.slot_sectors();
            if end * 512 > src.size_bytes() {
                return Err(crate::Error::corrupt(format!(
                    "LUKS1 header: keyslot material ends at byte {} but the file has only {} bytes (truncated?)",
                    end * 512,
                    src.size_bytes()
                )));
            }
            Parsed::V1(l)
        }
        2 => Parsed::V2(header::read_luks2(src)?),
        v => return Err(crate::Error::unsupported(format!("LUKS header with unknown version {v}"))),
    };
    let header = summarize(&parsed)?;
    Ok(Some(Luks { parsed, header, segment_keys: SegmentKeys::default() }))
}

fn kdf_of_json(k: &json::KdfJson, what: &str) -> crate::Result<Kdf> {
    let need = |v: Option<u32>, f: &str| v.ok_or_else(|| crate::Error::corrupt(format!("{what}: kdf has no {f}")));
    Ok(match k.kind.as_str() {
        "pbkdf2" => Kdf::Pbkdf2 {
            hash: json::hash_alg(k.hash.as_deref().unwrap_or(""), what)?,
            iterations: need(k.iterations, "iterations")?,
        },
        "argon2i" | "argon2id" => Kdf::Argon2 {
            variant: if k.kind == "argon2i" { Argon2Variant::I } else { Argon2Variant::Id },
            time: need(k.time, "time")?,
            memory_kib: need(k.memory, "memory")?,
            cpus: need(k.cpus, "cpus")?,
        },
        other => return Err(crate::Error::unsupported(format!("{what}: kdf type {other:?}"))),
    })
}

/// The summary of a parsed header ([`Header`]).
fn summarize(p: &Parsed) -> crate::Result<Header> {
    match p {
        Parsed::V1(l) => Ok(summarize_luks1(l)),
        Parsed::V2(l) => summarize_luks2(l),
    }
}

/// [`summarize`] for LUKS1: the active keyslots with their PBKDF2 iterations.
fn summarize_luks1(l: &Luks1) -> Header {
    let details: Vec<KeyslotInfo> = l
        .slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.active)
        .map(|(i, s)| KeyslotInfo {
            id: i as u32,
            active: true,
            kdf: format!("pbkdf2-{} ({} iterations)", l.hash_spec, s.iterations),
            priority: None,
        })
        .collect();
    Header {
        version: 1,
        cipher: format!("{}-{}", l.cipher_name, l.cipher_mode),
        key_bits: l.key_bytes * 8,
        payload_offset_bytes: u64::from(l.payload_sector) * 512,
        sector_size: 512,
        iv_offset_sectors: 0,
        payload_size_bytes: None,
        uuid: l.uuid.clone(),
        label: None,
        keyslots: details.len(),
        keyslot_details: details,
        token_types: Vec::new(),
        notes: Vec::new(),
        requirements: Vec::new(),
        findings: Vec::new(),
    }
}

/// [`summarize`] for LUKS2: the data segment (or the first, with a note when none is a crypt
/// segment), remarks on the segments, and the keyslots with their KDFs.
fn summarize_luks2(l: &Luks2) -> crate::Result<Header> {
    let m = &l.meta;
    let mut notes = l.notes.clone();
    // Metadata without a crypt segment is valid LUKS2 (cryptsetup loads it); there is just
    // nothing loopkit can decrypt, which `sector_cipher` then says.
    let (seg_id, seg) = match m.data_segment() {
        Some(x) => x,
        None => {
            let (k, s) =
                m.segments.iter().next().ok_or_else(|| crate::Error::corrupt("LUKS2 metadata has no segment"))?;
            notes.push(Finding::info(
                "luks.no-crypt-segment",
                format!("LUKS2 segment {k} is of type {:?}, not crypt: there is no encrypted payload", s.kind),
            ));
            (k, s)
        }
    };
    let key_bytes = m
        .digest_for_segment(seg_id)
        .and_then(|d| d.keyslots.iter().find_map(|k| m.keyslots.get(k)))
        .map_or(0, |k| k.key_size);
    segment_notes(m, seg, &mut notes);
    let details = keyslot_details(m);
    Ok(Header {
        version: 2,
        cipher: seg.encryption.clone().unwrap_or_else(|| format!("(segment type {})", seg.kind)),
        key_bits: key_bytes * 8,
        payload_offset_bytes: seg.offset,
        sector_size: seg.sector_size.unwrap_or(512),
        iv_offset_sectors: 0,
        payload_size_bytes: seg.size_bytes()?,
        uuid: l.bin.uuid.clone(),
        label: if l.bin.label.is_empty() { None } else { Some(l.bin.label.clone()) },
        keyslots: details.len(),
        keyslot_details: details,
        token_types: m.tokens.values().filter_map(|t| t.get("type")?.as_str().map(String::from)).collect(),
        notes,
        findings: findings::of_luks2(l),
        requirements: m.requirements(),
    })
}

/// Remarks on the LUKS2 segments: a non-zero `iv_tweak` on the data segment `seg`, and more than
/// one segment (an interrupted re-encryption).
fn segment_notes(m: &json::Metadata, seg: &json::Segment, notes: &mut Vec<Finding>) {
    if let Some(t) = seg.iv_tweak.filter(|&t| t != 0) {
        notes.push(Finding::info(
            "luks.iv-tweak",
            format!(
                "segment iv_tweak is {t}; cryptsetup ignores it outside re-encryption (IVs count from 0), and so \
                 does loopkit"
            ),
        ));
    }
    if m.segments.len() > 1 {
        notes.push(Finding::info(
            "luks.segments",
            format!(
                "{} segments, {} of them active data segments (an interrupted re-encryption?); the payload is read \
                 through the active ones",
                m.segments.len(),
                m.segments.values().filter(|s| !s.is_backup()).count()
            ),
        ));
    }
}

/// The LUKS2 keyslots with their KDFs described (the KDF type alone when its parameters do not
/// parse).
fn keyslot_details(m: &json::Metadata) -> Vec<KeyslotInfo> {
    m.keyslots
        .iter()
        .map(|(k, ks)| KeyslotInfo {
            id: k.parse().unwrap_or(u32::MAX),
            active: true,
            kdf: match ks.kdf.as_ref().map(|j| kdf_of_json(j, "keyslot")) {
                Some(Ok(kdf)) => kdf.describe(),
                Some(Err(_)) | None => ks.kdf.as_ref().map_or_else(|| ks.kind.clone(), |j| j.kind.clone()),
            },
            priority: ks.priority,
        })
        .collect()
}

/// The result of unlocking.
#[derive(Debug)]
pub struct Unlocked {
    /// The volume key.
    pub volume_key: Key,
    /// The keyslot that opened.
    pub keyslot: u32,
}

impl Luks {
    /// Try `pass` on every active keyslot (LUKS2: priority 2 first, priority 0 slots skipped
    /// as cryptsetup does) and return the volume key of the first that opens.
    ///
    /// # Errors
    /// `WrongKey` when no keyslot opens; `Unsupported` when no keyslot uses a KDF/cipher loopkit
    /// has; `Corrupt` for inconsistent keyslots; `Io`.
    pub fn unlock(&self, src: &dyn ByteSource, pass: &Passphrase) -> crate::Result<Unlocked> {
        self.unlock_with(src, pass, &KdfPolicy::unlimited())
    }

    /// [`Luks::unlock`] for a header that is not loopkit's own: keyslot KDFs and digests above
    /// `policy`'s caps are skipped (reported as `Unsupported` when no keyslot opens), and the
    /// KDFs stop when its interrupt fires.
    ///
    /// # Errors
    /// As [`Luks::unlock`]; `Interrupted`.
    pub fn unlock_with(&self, src: &dyn ByteSource, pass: &Passphrase, policy: &KdfPolicy) -> crate::Result<Unlocked> {
        let mut tried = 0usize;
        let mut unbound: Vec<&str> = Vec::new();
        let mut unsupported: Option<crate::Error> = None;
        let mut attempt = |r: crate::Result<Option<Unlocked>>| -> crate::Result<Option<Unlocked>> {
            match r {
                Ok(Some(u)) => Ok(Some(u)),
                Ok(None) => {
                    tried += 1;
                    Ok(None)
                }
                Err(e) if e.kind() == crate::ErrorKind::Unsupported => {
                    unsupported.get_or_insert(e);
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        };
        match &self.parsed {
            Parsed::V1(l) => {
                for (i, s) in l.slots.iter().enumerate().filter(|(_, s)| s.active) {
                    if let Some(u) = attempt(self.try_luks1(src, l, i, s, pass, policy))? {
                        return Ok(u);
                    }
                }
            }
            Parsed::V2(l) => {
                // Only keyslots bound to the data segment's digest hold the volume key; an unbound
                // keyslot (`luksAddKey --unbound`) never unlocks the data (cryptsetup: "No usable
                // keyslot is available").
                let bound: Vec<&String> = l
                    .meta
                    .data_segment()
                    .and_then(|(seg, _)| l.meta.digest_for_segment(seg))
                    .map(|d| d.keyslots.iter().collect())
                    .unwrap_or_default();
                let mut order: Vec<(&String, &json::Keyslot)> = Vec::new();
                for (id, k) in l.meta.keyslots.iter().filter(|(_, k)| k.kind == "luks2" && k.priority != Some(0)) {
                    if bound.contains(&id) {
                        order.push((id, k));
                    } else {
                        unbound.push(id);
                    }
                }
                order.sort_by_key(|(id, k)| {
                    (std::cmp::Reverse(k.priority.unwrap_or(1)), id.parse::<u32>().unwrap_or(u32::MAX))
                });
                for (id, ks) in order {
                    if let Some(u) = attempt(self.try_luks2(src, l, id, ks, pass, policy, None))? {
                        self.unlock_other_segments(src, l, &u, pass, policy)?;
                        return Ok(u);
                    }
                }
            }
        }
        let unbound_note = if unbound.is_empty() {
            String::new()
        } else {
            format!(
                "; keyslot(s) {} are unbound (not bound to the data segment: they hold no key to the data) and were \
                 not tried",
                unbound.join(", ")
            )
        };
        if tried == 0 {
            if let Some(e) = unsupported {
                return Err(e);
            }
            return Err(crate::Error::new(
                crate::ErrorKind::WrongKey,
                format!("the LUKS header has no usable keyslot{unbound_note}"),
            ));
        }
        Err(crate::Error::new(
            crate::ErrorKind::WrongKey,
            format!("no LUKS keyslot opens with this passphrase ({tried} keyslot(s) tried{unbound_note})"),
        ))
    }

    fn try_luks1(
        &self,
        src: &dyn ByteSource,
        l: &Luks1,
        i: usize,
        s: &header::Slot1,
        pass: &Passphrase,
        policy: &KdfPolicy,
    ) -> crate::Result<Option<Unlocked>> {
        let what = format!("LUKS1 keyslot {i}");
        let hash = l.hash().ok_or_else(|| crate::Error::unsupported(format!("{what}: hash {:?}", l.hash_spec)))?;
        let key_len = l.key_bytes as usize;
        // An unsupported cipher is found before the (expensive) KDF runs.
        sector_cipher(&self.header.cipher, &vec![0u8; key_len], 512)?;
        policy.check_pbkdf2(l.mk_digest_iter, &format!("{what} (volume-key digest)"))?;
        policy.check_pbkdf2(s.iterations, &what)?;
        let slot_key =
            Kdf::Pbkdf2 { hash, iterations: s.iterations }.derive_with(pass.bytes(), &s.salt, key_len, policy)?;
        let cipher = sector_cipher(&self.header.cipher, slot_key.bytes(), 512)?;
        let material = read_material(
            src,
            u64::from(s.key_material_sector) * 512,
            keyslot::material_bytes(key_len, af::STRIPES),
            &what,
        )?;
        let vk = keyslot::open_material(material, &*cipher, key_len, af::STRIPES, hash)?;
        Ok(keyslot::digest_matches_with(&vk, hash, &l.mk_digest_salt, l.mk_digest_iter, &l.mk_digest, policy)?
            .then_some(Unlocked { volume_key: vk, keyslot: i as u32 }))
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the keyslot, its header, the secret, the policy and the digest it is tried for"
    )]
    fn try_luks2(
        &self,
        src: &dyn ByteSource,
        l: &Luks2,
        id: &str,
        ks: &json::Keyslot,
        pass: &Passphrase,
        policy: &KdfPolicy,
        digest_id: Option<&str>,
    ) -> crate::Result<Option<Unlocked>> {
        let what = format!("LUKS2 keyslot {id}");
        let kdf_json = ks.kdf.as_ref().ok_or_else(|| crate::Error::corrupt(format!("{what} has no kdf")))?;
        let kdf = kdf_of_json(kdf_json, &what)?;
        let salt = json::b64_decode(&kdf_json.salt, "keyslot salt")?;
        let af = ks.af.as_ref().ok_or_else(|| crate::Error::corrupt(format!("{what} has no af")))?;
        if af.kind != "luks1" || af.stripes as usize != af::STRIPES {
            return Err(crate::Error::unsupported(format!(
                "{what}: af type {:?} with {} stripes",
                af.kind, af.stripes
            )));
        }
        let af_hash = json::hash_alg(&af.hash, &what)?;
        let area_enc = ks
            .area
            .encryption
            .as_deref()
            .ok_or_else(|| crate::Error::corrupt(format!("{what} area has no encryption")))?;
        let area_key_len =
            ks.area.key_size.ok_or_else(|| crate::Error::corrupt(format!("{what} area has no key_size")))? as usize;
        let key_len = ks.key_size as usize;
        if key_len == 0 || key_len > 512 || area_key_len == 0 || area_key_len > 512 {
            return Err(crate::Error::corrupt(format!("{what}: key sizes {key_len}/{area_key_len} out of range")));
        }
        let need = keyslot::material_bytes(key_len, af::STRIPES);
        if (need as u64) > ks.area.size {
            return Err(crate::Error::corrupt(format!(
                "{what}: area of {} bytes cannot hold {need} bytes of material",
                ks.area.size
            )));
        }
        // Check what can be checked before the (expensive) KDF runs.
        sector_cipher(area_enc, &vec![0u8; area_key_len], 512)?;
        // Only a keyslot bound to the data segment's digest holds the volume key (an unbound
        // keyslot, `luksAddKey --unbound`, holds some other key).
        let digest = match digest_id {
            Some(d) => l.meta.digests.get(d),
            None => l.meta.data_segment().and_then(|(seg, _)| l.meta.digest_for_segment(seg)),
        };
        let digest = digest
            .filter(|d| d.keyslots.iter().any(|k| k == id))
            .ok_or_else(|| crate::Error::unsupported(format!("{what} is not bound to the data segment")))?;
        if digest.kind != "pbkdf2" {
            return Err(crate::Error::unsupported(format!("{what}: digest type {:?}", digest.kind)));
        }
        let d_hash = json::hash_alg(digest.hash.as_deref().unwrap_or(""), "digest")?;
        let d_salt = json::b64_decode(digest.salt.as_deref().unwrap_or(""), "digest salt")?;
        let d_value = json::b64_decode(digest.digest.as_deref().unwrap_or(""), "digest value")?;
        let d_iter = digest.iterations.ok_or_else(|| crate::Error::corrupt("LUKS2 digest has no iterations"))?;

        policy.check_pbkdf2(d_iter, &format!("{what} (volume-key digest)"))?;
        let slot_key = kdf.derive_with(pass.bytes(), &salt, area_key_len, policy).map_err(|e| e.context(&what))?;
        let cipher = sector_cipher(area_enc, slot_key.bytes(), 512)?;
        let material = read_material(src, ks.area.offset, need, &what)?;
        let vk = keyslot::open_material(material, &*cipher, key_len, af::STRIPES, af_hash)?;
        Ok(keyslot::digest_matches_with(&vk, d_hash, &d_salt, d_iter, &d_value, policy)?
            .then_some(Unlocked { volume_key: vk, keyslot: id.parse().unwrap_or(u32::MAX) }))
    }

    /// After the data segment's key opened: for a LUKS2 volume mid-re-encryption, the keys of
    /// the other active segments' digests (the old or new key), tried with the same passphrase
    /// on the keyslots bound to them, kept in [`Luks::segment_keys`] for [`Luks::payload`]. A
    /// digest no keyslot opens is left out (the payload then says which segment it is).
    fn unlock_other_segments(
        &self,
        src: &dyn ByteSource,
        l: &Luks2,
        u: &Unlocked,
        pass: &Passphrase,
        policy: &KdfPolicy,
    ) -> crate::Result<()> {
        let mut keys: Vec<(String, Key)> = Vec::new();
        let data_digest = l
            .meta
            .data_segment()
            .and_then(|(seg, _)| l.meta.digests.iter().find(|(_, d)| d.segments.iter().any(|x| x == seg)));
        if let Some((id, _)) = data_digest {
            keys.push((id.clone(), u.volume_key.clone()));
        }
        if segments::is_segmented(&l.meta) {
            let active: Vec<&String> = l.meta.segments.iter().filter(|(_, s)| !s.is_backup()).map(|(k, _)| k).collect();
            for (did, d) in &l.meta.digests {
                if keys.iter().any(|(k, _)| k == did) || !d.segments.iter().any(|s| active.contains(&s)) {
                    continue;
                }
                for kid in &d.keyslots {
                    let Some(ks) = l.meta.keyslots.get(kid).filter(|k| k.kind == "luks2") else { continue };
                    match self.try_luks2(src, l, kid, ks, pass, policy, Some(did)) {
                        Ok(Some(o)) => {
                            keys.push((did.clone(), o.volume_key));
                            break;
                        }
                        Ok(None) => {}
                        Err(e) if e.kind() == crate::ErrorKind::Interrupted => return Err(e),
                        Err(_) => {}
                    }
                }
            }
        }
        self.segment_keys.set(keys);
        Ok(())
    }

    /// Whether `vk` is this container's volume key (digest check, constant-time).
    pub fn check_volume_key(&self, vk: &Key) -> bool {
        match &self.parsed {
            Parsed::V1(l) => l.hash().is_some_and(|h| {
                vk.len() == l.key_bytes as usize
                    && keyslot::digest_matches(vk, h, &l.mk_digest_salt, l.mk_digest_iter, &l.mk_digest)
            }),
            Parsed::V2(l) => {
                let Some((seg, _)) = l.meta.data_segment() else { return false };
                let Some(d) = l.meta.digest_for_segment(seg) else { return false };
                let (Some(h), Some(salt), Some(val), Some(it)) = (
                    d.hash.as_deref().and_then(|h| h.parse().ok()),
                    d.salt.as_deref().and_then(|s| json::b64_decode(s, "digest salt").ok()),
                    d.digest.as_deref().and_then(|s| json::b64_decode(s, "digest").ok()),
                    d.iterations,
                ) else {
                    return false;
                };
                keyslot::digest_matches(vk, h, &salt, it, &val)
            }
        }
    }

    /// The payload of a data device of `device_bytes` and its cipher under `vk`.
    ///
    /// # Errors
    /// `Unsupported` for a cipher loopkit lacks; `Corrupt` when the payload lies past the end.
    pub fn payload(
        &self,
        device_bytes: u64,
        vk: &Key,
    ) -> crate::Result<(crate::volume::Layout, Box<dyn SectorCipher>)> {
        let h = &self.header;
        if let Parsed::V2(l) = &self.parsed
            && (segments::is_segmented(&l.meta) || l.meta.keyslots.values().any(|k| k.kind == "reencrypt"))
        {
            return self.segmented_payload(l, device_bytes, vk);
        }
        let cipher = sector_cipher(&h.cipher, vk.bytes(), h.sector_size as usize)?;
        if h.payload_offset_bytes > device_bytes {
            return Err(crate::Error::corrupt(format!(
                "the LUKS payload starts at byte {} but the device has only {device_bytes} bytes",
                h.payload_offset_bytes
            )));
        }
        let mut avail = device_bytes - h.payload_offset_bytes;
        if let Some(s) = h.payload_size_bytes {
            avail = avail.min(s);
        }
        let ss = u64::from(h.sector_size);
        Ok((
            crate::volume::Layout {
                offset_bytes: h.payload_offset_bytes,
                size_bytes: avail - avail % ss,
                iv_offset_sectors: 0,
            },
            cipher,
        ))
    }
}

impl Luks {
    /// [`Luks::payload`] of a LUKS2 volume mid-re-encryption: its active segments, each under
    /// its own key, IVs and sector size (see [`segments`]); refused when that cannot be exact.
    fn segmented_payload(
        &self,
        l: &Luks2,
        device_bytes: u64,
        vk: &Key,
    ) -> crate::Result<(crate::volume::Layout, Box<dyn SectorCipher>)> {
        let plan = segments::plan(&l.meta)?;
        let mut keys = self.segment_keys.get();
        if let Some((id, _)) = l
            .meta
            .data_segment()
            .and_then(|(seg, _)| l.meta.digests.iter().find(|(_, d)| d.segments.iter().any(|x| x == seg)))
            && !keys.iter().any(|(k, _)| k == id)
        {
            keys.push((id.clone(), vk.clone()));
        }
        let parts = segments::parts(&l.meta, &plan, &keys)?;
        let fixed_end = match parts.last() {
            Some(p) if p.end.is_none() => plan
                .segs
                .last()
                .map(|(_, s, start)| s.size_bytes().map(|n| n.map(|n| start + n)))
                .transpose()?
                .flatten(),
            _ => None,
        };
        if plan.base > device_bytes {
            return Err(crate::Error::corrupt(format!(
                "the LUKS payload starts at byte {} but the device has only {device_bytes} bytes",
                plan.base
            )));
        }
        let mut avail = device_bytes - plan.base;
        if let Some(e) = fixed_end {
            avail = avail.min(e);
        }
        let cipher = segments::SegmentedCipher::new(parts);
        let unit = cipher.sector_bytes() as u64;
        Ok((
            crate::volume::Layout { offset_bytes: plan.base, size_bytes: avail - avail % unit, iv_offset_sectors: 0 },
            Box::new(cipher),
        ))
    }
}

fn read_material(src: &dyn ByteSource, at: u64, len: usize, what: &str) -> crate::Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut m = zeroize::Zeroizing::new(vec![0u8; len]);
    src.read_exact_at(&mut m, at).map_err(|e| crate::Error::io(format!("reading {what} material at byte {at}"), e))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemSource;

    fn cheap() -> Kdf {
        Kdf::Pbkdf2 { hash: crate::crypto::HashAlg::Sha256, iterations: 1000 }
    }

    fn luks2_image(vk: &Key, pass: &Passphrase, payload: &[u8]) -> Vec<u8> {
        let spec = write::Luks2Spec {
            cipher: "aes-xts-plain64".into(),
            sector_bytes: 512,
            data_offset_bytes: write::LUKS2_DATA_OFFSET,
            data_size_bytes: None,
            kdf: cheap(),
            digest_iterations: 1000,
            label: "t".into(),
            tokens: vec![serde_json::json!({"type": "loopkit-migration", "keyslots": []})],
        };
        let w = write::luks2(vk, pass, &spec).unwrap();
        let mut img = w.bytes;
        let mut ct = payload.to_vec();
        sector_cipher("aes-xts-plain64", vk.bytes(), 512).unwrap().encrypt_sectors(0, &mut ct);
        img.extend_from_slice(&ct);
        img
    }

    #[test]
    fn luks2_write_read_unlock() {
        let vk = Key::new((0..64u8).collect());
        let pass = Passphrase::new(b"new pass".to_vec());
        let payload: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
        let img = luks2_image(&vk, &pass, &payload);
        let src = MemSource::new(img.clone());
        let l = read(&src).unwrap().unwrap();
        assert_eq!(l.header.version, 2);
        assert_eq!(l.header.cipher, "aes-xts-plain64");
        assert_eq!(l.header.key_bits, 512);
        assert_eq!(l.header.payload_offset_bytes, 16 << 20);
        assert_eq!(l.header.token_types, vec!["loopkit-migration".to_string()]);
        assert!(l.header.notes.is_empty(), "{:?}", l.header.notes);
        let u = l.unlock(&src, &pass).unwrap();
        assert_eq!(u.volume_key, vk);
        assert!(l.check_volume_key(&vk));
        let e = l.unlock(&src, &Passphrase::new(b"wrong".to_vec())).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::WrongKey);
        let (layout, c) = l.payload(img.len() as u64, &vk).unwrap();
        let mut back = img[layout.offset_bytes as usize..].to_vec();
        c.decrypt_sectors(0, &mut back);
        assert_eq!(back, payload);

        // Damage the primary copy: the secondary is used and the damage noted.
        let mut bad = img.clone();
        bad[5000] ^= 1;
        let l2 = read(&MemSource::new(bad)).unwrap().unwrap();
        assert!(
            l2.header.notes.iter().any(|n| n.message.contains("primary") && n.code == "luks.header-copy"),
            "{:?}",
            l2.header.notes
        );
        // Damage both: a Corrupt error, not a panic.
        let mut worse = img.clone();
        worse[5000] ^= 1;
        worse[16384 + 5000] ^= 1;
        assert_eq!(read(&MemSource::new(worse)).unwrap_err().kind(), crate::ErrorKind::Corrupt);
        // Truncated: an error, not a panic.
        for cut in [600usize, 4096, 20000, 40000] {
            let r = read(&MemSource::new(img[..cut].to_vec()));
            assert!(
                r.is_err()
                    || r.unwrap().is_some_and(|l| l.unlock(&MemSource::new(img[..cut].to_vec()), &pass).is_err())
            );
        }
    }

    #[test]
    fn luks1_write_read_unlock() {
        let vk = Key::new((100..132u8).collect());
        let pass = Passphrase::new(b"pw".to_vec());
        let spec = write::Luks1Spec {
            cipher_name: "aes".into(),
            cipher_mode: "xts-plain64".into(),
            iterations: 1000,
            digest_iterations: 1000,
        };
        let w = write::luks1(&vk, &pass, &spec).unwrap();
        assert_eq!(w.bytes.len(), 2 << 20);
        let src = MemSource::new(w.bytes.clone());
        let l = read(&src).unwrap().unwrap();
        assert_eq!((l.header.version, l.header.key_bits, l.header.payload_offset_bytes), (1, 256, 2 << 20));
        assert_eq!(l.unlock(&src, &pass).unwrap().volume_key, vk);
        assert_eq!(l.unlock(&src, &Passphrase::new(b"x".to_vec())).unwrap_err().kind(), crate::ErrorKind::WrongKey);
        // Overlapping keyslots are refused.
        let mut bad = w.bytes.clone();
        bad[208 + 48 + 40..208 + 48 + 44].copy_from_slice(&8u32.to_be_bytes());
        assert_eq!(read(&MemSource::new(bad)).unwrap_err().kind(), crate::ErrorKind::Corrupt);
    }

    #[test]
    fn detached_layout_rules() {
        let vk = Key::new(vec![1u8; 32]);
        let pass = Passphrase::new(b"pw".to_vec());
        let mut spec = write::Luks2Spec {
            cipher: "aes-cbc-plain".into(),
            sector_bytes: 512,
            data_offset_bytes: 0,
            data_size_bytes: None,
            kdf: cheap(),
            digest_iterations: 1000,
            label: String::new(),
            tokens: vec![],
        };
        assert!(write::luks2(&vk, &pass, &spec).is_ok());
        spec.data_offset_bytes = 4096;
        assert_eq!(write::luks2(&vk, &pass, &spec).unwrap_err().kind(), crate::ErrorKind::InvalidInput);
        spec.data_offset_bytes = 1 << 20;
        let w = write::luks2(&vk, &pass, &spec).unwrap();
        let l = read(&MemSource::new(w.bytes.clone())).unwrap().unwrap();
        assert_eq!(l.header.payload_offset_bytes, 1 << 20);
        spec.cipher = "twofish-cbc-plain".into();
        assert!(write::luks2(&vk, &pass, &spec).is_ok(), "twofish is a supported LUKS2 cipher");
        spec.cipher = "camellia-cbc-plain".into();
        assert_eq!(write::luks2(&vk, &pass, &spec).unwrap_err().kind(), crate::ErrorKind::Unsupported);
    }
}
