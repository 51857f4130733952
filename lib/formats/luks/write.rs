//! Producing LUKS headers in memory (nothing here touches a file): the bytes from device offset 0
//! up to the data segment, with one keyslot for a new passphrase and a volume key the caller
//! chooses (a fresh random one for re-encryption, the legacy key for a detached header).
//!
//! Layouts copy cryptsetup 2.6's defaults (`docs/formats/research/luks.md` §0.3, §1.2, §2.4):
//! - LUKS2: `hdr_size` 16384 (JSON area 12288, the only size cryptsetup 2.0.0–2.0.5 read), two
//!   copies with their own salts, keyslot 0's area at 32768, `keyslots_size` 16744448 (the rest
//!   of the keyslots area filled with random bytes, as cryptsetup does), data at 16 MiB, a
//!   pbkdf2-sha256 digest, compact JSON.
//! - LUKS1: keyslots at sectors 8, 8 + ⌈material⌉ rounded to 8 …, payload at 4096 sectors.

use super::header::{self, LUKS_MAGIC, LUKS2_MAGIC_2ND, Luks1, Slot1};
use super::json::{self, Af, Area, Config, Digest, KdfJson, Keyslot, Metadata, Segment};
use super::keyslot::{self, Kdf};
use super::{af, random_bytes, random_fill, sector_cipher};
use crate::crypto::{HashAlg, Key, Passphrase};
use std::collections::BTreeMap;

/// LUKS2 header copy size loopkit writes.
pub const LUKS2_HDR_SIZE: u64 = 16384;
/// LUKS2 keyslots area size cryptsetup uses by default.
pub const LUKS2_KEYSLOTS_SIZE: u64 = 16_744_448;
/// LUKS2 data offset cryptsetup uses by default (16 MiB).
pub const LUKS2_DATA_OFFSET: u64 = 2 * LUKS2_HDR_SIZE + LUKS2_KEYSLOTS_SIZE;
/// LUKS1 payload offset for 16/32/64-byte keys with 1 MiB alignment (sectors).
pub const LUKS1_PAYLOAD_SECTOR: u32 = 4096;
/// Keyslot area cipher for LUKS2 keyslots (independent of the data cipher).
pub const KEYSLOT_CIPHER: &str = "aes-xts-plain64";
/// Keyslot area key length for [`KEYSLOT_CIPHER`].
pub const KEYSLOT_KEY_BYTES: usize = 64;

/// What to put into a new LUKS2 header.
#[derive(Debug, Clone)]
pub struct Luks2Spec {
    /// Data segment cipher (dm-crypt spelling).
    pub cipher: String,
    /// Data segment sector size.
    pub sector_bytes: u32,
    /// Data segment offset in the data device.
    pub data_offset_bytes: u64,
    /// Fixed data length, `None` for `dynamic`.
    pub data_size_bytes: Option<u64>,
    /// Keyslot 0's KDF.
    pub kdf: Kdf,
    /// Volume-key digest iterations (pbkdf2-sha256).
    pub digest_iterations: u32,
    /// Header label.
    pub label: String,
    /// Extra tokens (each an object with `type` and `keyslots`).
    pub tokens: Vec<serde_json::Value>,
}

/// A header produced in memory.
pub struct Written {
    /// Bytes for device offsets `0..bytes.len()`.
    pub bytes: Vec<u8>,
    /// The new UUID.
    pub uuid: String,
}

impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Written({} bytes, {})", self.bytes.len(), self.uuid)
    }
}

/// A random RFC 4122 version-4 UUID, lower case.
///
/// # Errors
/// `Io` if the OS random generator fails.
pub fn new_uuid() -> crate::Result<String> {
    let mut b = random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

fn kdf_json(kdf: &Kdf, salt: &[u8]) -> KdfJson {
    let mut k = KdfJson {
        kind: kdf.type_name().into(),
        hash: None,
        iterations: None,
        time: None,
        memory: None,
        cpus: None,
        salt: json::b64_encode(salt),
    };
    match *kdf {
        Kdf::Pbkdf2 { hash, iterations } => {
            k.hash = Some(hash.cryptsetup_name().into());
            k.iterations = Some(iterations);
        }
        Kdf::Argon2 { time, memory_kib, cpus, .. } => {
            k.time = Some(time);
            k.memory = Some(memory_kib);
            k.cpus = Some(cpus);
        }
    }
    k
}

/// Build a LUKS2 header whose volume key is `vk` and whose keyslot 0 opens with `pass`.
///
/// # Errors
/// `InvalidInput` for a layout cryptsetup would reject (data offset inside the header area,
/// metadata too large for the 12 KiB JSON area, bad KDF parameters); `Io` if the OS random
/// generator fails.
pub fn luks2(vk: &Key, pass: &Passphrase, spec: &Luks2Spec) -> crate::Result<Written> {
    // Validate the data cipher with the key now, so a header is never written for a cipher
    // nobody can use.
    sector_cipher(&spec.cipher, vk.bytes(), spec.sector_bytes as usize)?;
    let area_size = (vk.len() * af::STRIPES).div_ceil(4096) as u64 * 4096;
    let keyslots_size = luks2_keyslots_size(spec, area_size)?;
    let slot_salt = random_bytes::<32>()?;
    let digest_salt = random_bytes::<32>()?;
    let slot_key = spec.kdf.derive(pass.bytes(), &slot_salt, KEYSLOT_KEY_BYTES).map_err(|e| match e.kind() {
        crate::ErrorKind::Corrupt => crate::Error::invalid(format!("keyslot KDF parameters: {}", e.message())),
        _ => e,
    })?;
    let area_cipher = sector_cipher(KEYSLOT_CIPHER, slot_key.bytes(), 512)?;
    let material = keyslot::seal_material(vk, &*area_cipher, HashAlg::Sha256)?;
    let mut digest = [0u8; 32];
    keyslot::pbkdf2(HashAlg::Sha256, vk.bytes(), &digest_salt, spec.digest_iterations, &mut digest)?;
    let slot = luks2_keyslot(vk, spec, area_size, &slot_salt);
    let digest = Digest {
        kind: "pbkdf2".into(),
        keyslots: vec!["0".into()],
        segments: vec!["0".into()],
        hash: Some("sha256".into()),
        iterations: Some(spec.digest_iterations),
        salt: Some(json::b64_encode(&digest_salt)),
        digest: Some(json::b64_encode(&digest)),
    };
    let meta = luks2_metadata(spec, slot, digest, keyslots_size);
    meta.validate(LUKS2_HDR_SIZE)?;
    let area = luks2_json_area(&meta)?;
    luks2_bytes(spec, &area, keyslots_size, &material)
}

/// The keyslots area size for `spec`'s data offset (the default, or what fits before the data),
/// refused when one `area_size`-byte keyslot area does not fit or the offset is not aligned.
fn luks2_keyslots_size(spec: &Luks2Spec, area_size: u64) -> crate::Result<u64> {
    let area_offset = 2 * LUKS2_HDR_SIZE;
    let keyslots_size = if spec.data_offset_bytes == 0 {
        LUKS2_KEYSLOTS_SIZE
    } else {
        let room = spec.data_offset_bytes.saturating_sub(2 * LUKS2_HDR_SIZE) / 4096 * 4096;
        room.min(LUKS2_KEYSLOTS_SIZE)
    };
    if keyslots_size < area_size {
        return Err(crate::Error::invalid(format!(
            "a LUKS2 header cannot describe data at byte {}: LUKS2 needs the data to start at 0 (detached header) \
             or at or after byte {} (two 16 KiB header copies plus one {area_size}-byte keyslot area)",
            spec.data_offset_bytes,
            area_offset + area_size
        )));
    }
    if !spec.data_offset_bytes.is_multiple_of(512) {
        return Err(crate::Error::invalid(format!(
            "LUKS2 data offset {} is not a multiple of 512",
            spec.data_offset_bytes
        )));
    }
    Ok(keyslots_size)
}

/// Keyslot 0: a `luks2` keyslot with its area right after the two header copies.
fn luks2_keyslot(vk: &Key, spec: &Luks2Spec, area_size: u64, slot_salt: &[u8]) -> Keyslot {
    Keyslot {
        kind: "luks2".into(),
        key_size: vk.len() as u32,
        af: Some(Af { kind: "luks1".into(), stripes: af::STRIPES as u32, hash: "sha256".into() }),
        area: Area {
            kind: "raw".into(),
            offset: 2 * LUKS2_HDR_SIZE,
            size: area_size,
            encryption: Some(KEYSLOT_CIPHER.into()),
            key_size: Some(KEYSLOT_KEY_BYTES as u32),
            extra: Default::default(),
        },
        kdf: Some(kdf_json(&spec.kdf, slot_salt)),
        priority: None,
        extra: Default::default(),
    }
}

/// The metadata: keyslot 0, `spec`'s tokens, one crypt segment, and the digest tying them.
fn luks2_metadata(spec: &Luks2Spec, slot: Keyslot, digest: Digest, keyslots_size: u64) -> Metadata {
    let mut tokens = BTreeMap::new();
    for (i, t) in spec.tokens.iter().enumerate() {
        tokens.insert(i.to_string(), t.clone());
    }
    Metadata {
        keyslots: BTreeMap::from([("0".to_string(), slot)]),
        tokens,
        segments: BTreeMap::from([(
            "0".to_string(),
            Segment {
                kind: "crypt".into(),
                offset: spec.data_offset_bytes,
                size: spec.data_size_bytes.map_or_else(|| "dynamic".to_string(), |s| s.to_string()),
                iv_tweak: Some(0),
                encryption: Some(spec.cipher.clone()),
                sector_size: Some(spec.sector_bytes),
                extra: Default::default(),
            },
        )]),
        digests: BTreeMap::from([("0".to_string(), digest)]),
        config: Config { json_size: LUKS2_HDR_SIZE - 4096, keyslots_size, extra: Default::default() },
        extra: Default::default(),
    }
}

/// The JSON area: the metadata as text, zero-padded; refused when it does not fit.
fn luks2_json_area(meta: &Metadata) -> crate::Result<Vec<u8>> {
    let text = meta.to_json();
    let json_size = (LUKS2_HDR_SIZE - 4096) as usize;
    if text.len() >= json_size {
        return Err(crate::Error::invalid(format!(
            "LUKS2 metadata is {} bytes, more than the {} bytes the JSON area holds (shorten the label or provenance)",
            text.len(),
            json_size - 1
        )));
    }
    let mut area = vec![0u8; json_size];
    area[..text.len()].copy_from_slice(text.as_bytes());
    Ok(area)
}

/// The header bytes: both binary headers with the JSON area, then the keyslots area (random,
/// with keyslot 0's sealed `material` at its start), under a new UUID.
fn luks2_bytes(spec: &Luks2Spec, area: &[u8], keyslots_size: u64, material: &[u8]) -> crate::Result<Written> {
    let area_offset = 2 * LUKS2_HDR_SIZE;
    let uuid = new_uuid()?;
    let total = (2 * LUKS2_HDR_SIZE + keyslots_size) as usize;
    let mut bytes = vec![0u8; total];
    random_fill(&mut bytes[area_offset as usize..])?;
    for (at, magic) in [(0u64, LUKS_MAGIC), (LUKS2_HDR_SIZE, LUKS2_MAGIC_2ND)] {
        let salt = random_bytes::<64>()?;
        let bin = header::luks2_bin(magic, LUKS2_HDR_SIZE, 1, &spec.label, &uuid, at, &salt, area);
        let at = at as usize;
        bytes[at..at + 4096].copy_from_slice(&bin);
        bytes[at + 4096..at + LUKS2_HDR_SIZE as usize].copy_from_slice(area);
    }
    let a = area_offset as usize;
    bytes[a..a + material.len()].copy_from_slice(material);
    Ok(Written { bytes, uuid })
}

/// What to put into a new LUKS1 header.
#[derive(Debug, Clone)]
pub struct Luks1Spec {
    /// `aes`.
    pub cipher_name: String,
    /// `xts-plain64`.
    pub cipher_mode: String,
    /// Keyslot 0's PBKDF2 iterations (sha256).
    pub iterations: u32,
    /// mk-digest iterations.
    pub digest_iterations: u32,
}

/// Build a LUKS1 header (the first [`LUKS1_PAYLOAD_SECTOR`] sectors) whose keyslot 0 opens
/// with `pass`.
///
/// # Errors
/// `InvalidInput` for an unusable cipher or iteration count; `Io` if the OS random generator
/// fails.
pub fn luks1(vk: &Key, pass: &Passphrase, spec: &Luks1Spec) -> crate::Result<Written> {
    let spec_name = format!("{}-{}", spec.cipher_name, spec.cipher_mode);
    sector_cipher(&spec_name, vk.bytes(), 512)?;
    if spec.iterations < keyslot::PBKDF2_MIN_ITERATIONS || spec.digest_iterations < keyslot::PBKDF2_MIN_ITERATIONS {
        return Err(crate::Error::invalid(format!(
            "LUKS1 needs at least {} PBKDF2 iterations",
            keyslot::PBKDF2_MIN_ITERATIONS
        )));
    }
    let slot_sectors = keyslot::material_bytes(vk.len(), af::STRIPES) as u32 / 512;
    let mut slots = Vec::new();
    let mut off = 8u32;
    for _ in 0..header::LUKS1_SLOTS {
        slots.push(Slot1 {
            active: false,
            iterations: 0,
            salt: [0; 32],
            key_material_sector: off,
            stripes: af::STRIPES as u32,
        });
        off = (off + slot_sectors).div_ceil(8) * 8;
    }
    if off > LUKS1_PAYLOAD_SECTOR {
        return Err(crate::Error::invalid(format!("a {}-byte key does not fit LUKS1's 2 MiB header", vk.len())));
    }
    let salt = random_bytes::<32>()?;
    let slot_key =
        Kdf::Pbkdf2 { hash: HashAlg::Sha256, iterations: spec.iterations }.derive(pass.bytes(), &salt, vk.len())?;
    let area_cipher = sector_cipher(&spec_name, slot_key.bytes(), 512)?;
    let material = keyslot::seal_material(vk, &*area_cipher, HashAlg::Sha256)?;
    slots[0].active = true;
    slots[0].iterations = spec.iterations;
    slots[0].salt = salt;
    let mk_salt = random_bytes::<32>()?;
    let mut mk_digest = [0u8; 20];
    keyslot::pbkdf2(HashAlg::Sha256, vk.bytes(), &mk_salt, spec.digest_iterations, &mut mk_digest)?;
    let uuid = new_uuid()?;
    let l = Luks1 {
        cipher_name: spec.cipher_name.clone(),
        cipher_mode: spec.cipher_mode.clone(),
        hash_spec: "sha256".into(),
        payload_sector: LUKS1_PAYLOAD_SECTOR,
        key_bytes: vk.len() as u32,
        mk_digest,
        mk_digest_salt: mk_salt,
        mk_digest_iter: spec.digest_iterations,
        uuid: uuid.clone(),
        slots,
    };
    let mut bytes = vec![0u8; LUKS1_PAYLOAD_SECTOR as usize * 512];
    bytes[..header::LUKS1_PHDR_BYTES].copy_from_slice(&header::luks1_phdr(&l));
    let a = 8 * 512;
    bytes[a..a + material.len()].copy_from_slice(&material);
    Ok(Written { bytes, uuid })
}

/// Re-encode both copies of an existing LUKS2 header with new metadata `meta` and `seqid`
/// (fresh salts, new checksums; label and UUID kept). Returns the bytes for device offsets
/// `0..2 × hdr_size`; the keyslot areas after them are untouched. Used to add the provenance
/// token once the payload hash is known.
///
/// # Errors
/// `InvalidInput` if the metadata fails validation or does not fit the JSON area; `Io` if
/// the OS random generator fails.
pub fn luks2_rewrite(old: &header::Luks2, meta: &Metadata, seqid: u64) -> crate::Result<Vec<u8>> {
    let hdr_size = old.bin.hdr_size;
    meta.validate(hdr_size).map_err(|e| crate::Error::invalid(format!("new LUKS2 metadata: {}", e.message())))?;
    let text = meta.to_json();
    let json_size = (hdr_size - 4096) as usize;
    if text.len() >= json_size {
        return Err(crate::Error::invalid(format!(
            "LUKS2 metadata is {} bytes, more than the {} bytes the JSON area holds",
            text.len(),
            json_size - 1
        )));
    }
    let mut area = vec![0u8; json_size];
    area[..text.len()].copy_from_slice(text.as_bytes());
    let mut bytes = vec![0u8; 2 * hdr_size as usize];
    for (at, magic) in [(0u64, LUKS_MAGIC), (hdr_size, LUKS2_MAGIC_2ND)] {
        let salt = random_bytes::<64>()?;
        let bin = header::luks2_bin(magic, hdr_size, seqid, &old.bin.label, &old.bin.uuid, at, &salt, &area);
        let at = at as usize;
        bytes[at..at + 4096].copy_from_slice(&bin);
        bytes[at + 4096..at + hdr_size as usize].copy_from_slice(&area);
    }
    Ok(bytes)
}
