//! LUKS binary headers and their staged validation (the order cryptsetup uses:
//! `hdr_disk_sanity_check_pre` → read the variable area → checksum → JSON → semantic checks).
//!
//! - LUKS1 (spec 1.2.3 §2.1): one 592-byte `phdr` at byte 0, big-endian, eight 48-byte keyslot
//!   descriptors; no checksum. Every slot, enabled or not, must carry 4000 stripes and a key
//!   material offset that does not overlap the others or the payload.
//! - LUKS2 (spec 1.1.4 §2): two copies, each a 4096-byte binary header followed by the JSON
//!   area; the copy at 0 has magic `LUKS\xba\xbe`, the one at `hdr_size` `SKUL\xba\xbe`. Each is
//!   checksummed (SHA-256 of the binary header with `csum` zeroed, then the whole JSON area).
//!   The valid copy with the higher `seqid` wins; a damaged copy is reported, never repaired.
//!
//! Parsing never writes; all sizes are bounded before anything is allocated.

use super::json::Metadata;
use crate::crypto::HashAlg;
use crate::source::ByteSource;
use sha2::Digest as _;

/// `"LUKS\xba\xbe"`: magic of LUKS1 and of the first LUKS2 header.
pub const LUKS_MAGIC: [u8; 6] = crate::fs::probe::LUKS_MAGIC;
/// `"SKUL\xba\xbe"`: magic of the second LUKS2 header.
pub const LUKS2_MAGIC_2ND: [u8; 6] = *b"SKUL\xba\xbe";
/// LUKS1 `phdr` length.
pub const LUKS1_PHDR_BYTES: usize = 592;
/// LUKS1 keyslot count (`LUKS_NUMKEYS`).
pub const LUKS1_SLOTS: usize = 8;
/// LUKS1 enabled-slot marker.
pub const LUKS1_KEY_ENABLED: u32 = 0x00AC_71F3;
/// LUKS1 disabled-slot marker.
pub const LUKS1_KEY_DISABLED: u32 = 0x0000_DEAD;
/// LUKS2 binary header length.
pub const LUKS2_BIN_BYTES: usize = 4096;
/// The `hdr_size` values LUKS2 allows (binary header + JSON area), 16 KiB … 4 MiB.
pub const LUKS2_HDR_SIZES: [u64; 9] = [16384, 32768, 65536, 131072, 262144, 524288, 1 << 20, 2 << 20, 4 << 20];
/// Offset of `csum` in the LUKS2 binary header.
pub const LUKS2_CSUM_AT: usize = 448;

pub use crate::bytes::cstr;
use crate::bytes::{be16, be32, be64};

/// One LUKS1 keyslot descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot1 {
    /// `0x00AC71F3`.
    pub active: bool,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// PBKDF2 salt.
    pub salt: [u8; 32],
    /// Key material start, in 512-byte sectors from the device start.
    pub key_material_sector: u32,
    /// AF stripes (4000).
    pub stripes: u32,
}

/// A parsed LUKS1 `phdr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Luks1 {
    /// `aes`.
    pub cipher_name: String,
    /// `xts-plain64`, `cbc-essiv:sha256`…
    pub cipher_mode: String,
    /// PBKDF2 and AF hash (`sha256`, `sha1`…).
    pub hash_spec: String,
    /// Payload start in 512-byte sectors (0 = detached header).
    pub payload_sector: u32,
    /// Volume key length.
    pub key_bytes: u32,
    /// PBKDF2(VK) check value.
    pub mk_digest: [u8; 20],
    /// Its salt.
    pub mk_digest_salt: [u8; 32],
    /// Its iterations.
    pub mk_digest_iter: u32,
    /// UUID text.
    pub uuid: String,
    /// The eight keyslots.
    pub slots: Vec<Slot1>,
}

impl Luks1 {
    /// Parse and check a `phdr` (at least [`LUKS1_PHDR_BYTES`]).
    ///
    /// # Errors
    /// `Corrupt` naming the first rule broken (cryptsetup `_check_and_convert_hdr`,
    /// `LUKS_check_keyslots`).
    pub fn parse(h: &[u8]) -> crate::Result<Luks1> {
        if h.len() < LUKS1_PHDR_BYTES || h[..6] != LUKS_MAGIC || be16(h, 6) != 1 {
            return Err(crate::Error::corrupt("not a LUKS1 header"));
        }
        let key_bytes = be32(h, 108);
        if key_bytes == 0 || key_bytes > 512 {
            return Err(crate::Error::corrupt(format!("LUKS1 header: key-bytes {key_bytes} is out of range 1..512")));
        }
        let mut mk_digest = [0u8; 20];
        mk_digest.copy_from_slice(&h[112..132]);
        let mut mk_digest_salt = [0u8; 32];
        mk_digest_salt.copy_from_slice(&h[132..164]);
        let mut slots = Vec::with_capacity(LUKS1_SLOTS);
        for i in 0..LUKS1_SLOTS {
            let s = &h[208 + 48 * i..208 + 48 * (i + 1)];
            let marker = be32(s, 0);
            if marker != LUKS1_KEY_ENABLED && marker != LUKS1_KEY_DISABLED {
                return Err(crate::Error::corrupt(format!(
                    "LUKS1 keyslot {i}: state 0x{marker:08x} is neither enabled nor disabled"
                )));
            }
            let mut salt = [0u8; 32];
            salt.copy_from_slice(&s[8..40]);
            slots.push(Slot1 {
                active: marker == LUKS1_KEY_ENABLED,
                iterations: be32(s, 4),
                salt,
                key_material_sector: be32(s, 40),
                stripes: be32(s, 44),
            });
        }
        let l = Luks1 {
            cipher_name: cstr(&h[8..40]),
            cipher_mode: cstr(&h[40..72]),
            hash_spec: cstr(&h[72..104]),
            payload_sector: be32(h, 104),
            key_bytes,
            mk_digest,
            mk_digest_salt,
            mk_digest_iter: be32(h, 164),
            uuid: cstr(&h[168..208]),
            slots,
        };
        l.check_slots()?;
        Ok(l)
    }

    /// Sectors one keyslot's material occupies.
    pub fn slot_sectors(&self) -> u64 {
        super::keyslot::material_bytes(self.key_bytes as usize, super::af::STRIPES) as u64 / 512
    }

    fn check_slots(&self) -> crate::Result<()> {
        let len = self.slot_sectors();
        for (i, s) in self.slots.iter().enumerate() {
            if s.stripes as usize != super::af::STRIPES {
                return Err(crate::Error::corrupt(format!("LUKS1 keyslot {i}: {} stripes (must be 4000)", s.stripes)));
            }
            if s.key_material_sector == 0 {
                return Err(crate::Error::corrupt(format!(
                    "LUKS1 keyslot {i}: key material at sector 0 overlaps the header"
                )));
            }
            let end = u64::from(s.key_material_sector) + len;
            if self.payload_sector != 0 && end > u64::from(self.payload_sector) {
                return Err(crate::Error::corrupt(format!(
                    "LUKS1 keyslot {i}: key material ends at sector {end}, past the payload start {}",
                    self.payload_sector
                )));
            }
            for (j, o) in self.slots.iter().enumerate().skip(i + 1) {
                let (a, b) = (u64::from(s.key_material_sector), u64::from(o.key_material_sector));
                if a < b + len && b < a + len {
                    return Err(crate::Error::corrupt(format!("LUKS1 keyslots {i} and {j} overlap")));
                }
            }
        }
        Ok(())
    }

    /// The hash as loopkit knows it (None if unsupported, e.g. blake2 or sha3).
    pub fn hash(&self) -> Option<HashAlg> {
        self.hash_spec.parse().ok().filter(|h: &HashAlg| h.is_full_digest())
    }
}

/// The fields of one LUKS2 binary header copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Luks2Bin {
    /// Binary header + JSON area length.
    pub hdr_size: u64,
    /// Update counter.
    pub seqid: u64,
    /// Label.
    pub label: String,
    /// `sha256`.
    pub checksum_alg: String,
    /// UUID text.
    pub uuid: String,
    /// Subsystem label.
    pub subsystem: String,
    /// Where this copy sits.
    pub hdr_offset: u64,
}

/// A LUKS2 header: the winning copy's binary fields and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Luks2 {
    /// Binary header of the copy used.
    pub bin: Luks2Bin,
    /// The JSON metadata.
    pub meta: Metadata,
    /// Damage or disagreement between the copies (never repaired): `luks.header-copy` warnings.
    pub notes: Vec<crate::finding::Finding>,
}

/// SHA-256 of a binary header (with `csum` zeroed) and its JSON area.
pub fn luks2_checksum(bin: &[u8], json_area: &[u8]) -> [u8; 32] {
    let mut b = [0u8; LUKS2_BIN_BYTES];
    b.copy_from_slice(&bin[..LUKS2_BIN_BYTES]);
    b[LUKS2_CSUM_AT..LUKS2_CSUM_AT + 64].fill(0);
    let mut h = sha2::Sha256::new();
    h.update(b);
    h.update(json_area);
    h.finalize().into()
}

/// Read and check the copy at `at` (stage 1: magic, version, size, offset; stage 2: checksum;
/// stage 3: JSON parse and semantic validation).
fn read_copy(src: &dyn ByteSource, at: u64, magic: [u8; 6]) -> crate::Result<Luks2> {
    let size = src.size_bytes();
    if at.saturating_add(LUKS2_BIN_BYTES as u64) > size {
        return Err(crate::Error::corrupt(format!(
            "LUKS2 header copy at {at} lies past the end of the file ({size} bytes)"
        )));
    }
    let mut bin = vec![0u8; LUKS2_BIN_BYTES];
    src.read_exact_at(&mut bin, at).map_err(|e| crate::Error::io(format!("reading LUKS2 header at byte {at}"), e))?;
    if bin[..6] != magic {
        return Err(crate::Error::corrupt(format!("no LUKS2 header magic at byte {at}")));
    }
    if be16(&bin, 6) != 2 {
        return Err(crate::Error::corrupt(format!("LUKS2 header at {at}: version {} (expected 2)", be16(&bin, 6))));
    }
    let hdr_size = be64(&bin, 8);
    if !LUKS2_HDR_SIZES.contains(&hdr_size) {
        return Err(crate::Error::corrupt(format!(
            "LUKS2 header at {at}: hdr_size {hdr_size} is not one of 16 KiB … 4 MiB"
        )));
    }
    let hdr_offset = be64(&bin, 256);
    if hdr_offset != at {
        return Err(crate::Error::corrupt(format!("LUKS2 header at {at} says it lives at {hdr_offset}")));
    }
    let checksum_alg = cstr(&bin[72..104]);
    if checksum_alg != "sha256" {
        return Err(crate::Error::unsupported(format!(
            "LUKS2 header at {at}: checksum algorithm {checksum_alg:?} (loopkit checks sha256)"
        )));
    }
    if at + hdr_size > size {
        return Err(crate::Error::corrupt(format!(
            "LUKS2 header at {at} ({hdr_size} bytes) is cut off by the end of the file"
        )));
    }
    let mut area = vec![0u8; (hdr_size - LUKS2_BIN_BYTES as u64) as usize];
    src.read_exact_at(&mut area, at + LUKS2_BIN_BYTES as u64)
        .map_err(|e| crate::Error::io(format!("reading LUKS2 JSON area at byte {}", at + 4096), e))?;
    let want = luks2_checksum(&bin, &area);
    if want[..] != bin[LUKS2_CSUM_AT..LUKS2_CSUM_AT + 32] {
        return Err(crate::Error::corrupt(format!("LUKS2 header at {at}: checksum mismatch")));
    }
    let end = area.iter().position(|&b| b == 0).unwrap_or(area.len());
    if end == area.len() {
        return Err(crate::Error::corrupt(format!("LUKS2 header at {at}: JSON area has no terminating NUL")));
    }
    if area[end..].iter().any(|&b| b != 0) {
        return Err(crate::Error::corrupt(format!("LUKS2 header at {at}: bytes after the JSON text are not all zero")));
    }
    let meta = Metadata::parse(&area[..end]).map_err(|e| e.context(format!("LUKS2 header at {at}")))?;
    meta.validate(hdr_size).map_err(|e| e.context(format!("LUKS2 header at {at}")))?;
    Ok(Luks2 {
        bin: Luks2Bin {
            hdr_size,
            seqid: be64(&bin, 16),
            label: cstr(&bin[24..72]),
            checksum_alg,
            uuid: cstr(&bin[168..208]),
            subsystem: cstr(&bin[208..256]),
            hdr_offset,
        },
        meta,
        notes: Vec::new(),
    })
}

/// Read a LUKS2 header from `src` (whose first 6 bytes are [`LUKS_MAGIC`] and version 2):
/// check both copies, choose the valid one with the higher `seqid`, note any damage.
///
/// # Errors
/// `Corrupt` when no copy is valid (with the primary's reason); `Io`.
pub fn read_luks2(src: &dyn ByteSource) -> crate::Result<Luks2> {
    let primary = read_copy(src, 0, LUKS_MAGIC);
    let second_at: Vec<u64> = match &primary {
        Ok(p) => vec![p.bin.hdr_size],
        Err(_) => LUKS2_HDR_SIZES.to_vec(),
    };
    let mut secondary = Err(crate::Error::corrupt("no secondary LUKS2 header found"));
    for at in second_at {
        secondary = read_copy(src, at, LUKS2_MAGIC_2ND);
        if secondary.is_ok() {
            break;
        }
    }
    match (primary, secondary) {
        (Ok(mut p), Ok(s)) => {
            if s.bin.seqid > p.bin.seqid {
                let mut s = s;
                s.notes.push(crate::finding::Finding::warning("luks.header-copy", format!(
                    "the secondary LUKS2 header (seqid {}) is newer than the primary ({}); cryptsetup would use it and \
                     rewrite the primary",
                    s.bin.seqid, p.bin.seqid
                )));
                return Ok(s);
            }
            if s.meta != p.meta {
                p.notes.push(crate::finding::Finding::warning(
                    "luks.header-copy",
                    "the two LUKS2 header copies carry different metadata with the same seqid",
                ));
            }
            Ok(p)
        }
        (Ok(mut p), Err(e)) => {
            p.notes.push(crate::finding::Finding::warning(
                "luks.header-copy",
                format!("the secondary LUKS2 header is damaged ({e}); cryptsetup would rewrite it from the primary"),
            ));
            Ok(p)
        }
        (Err(e), Ok(mut s)) => {
            s.notes.push(crate::finding::Finding::warning(
                "luks.header-copy",
                format!("the primary LUKS2 header is damaged ({e}); the secondary copy was used"),
            ));
            Ok(s)
        }
        (Err(e), Err(_)) => Err(e),
    }
}

/// When byte 0 holds no LUKS magic at all (the primary header wiped or overwritten), look for a
/// valid secondary LUKS2 copy at each offset `hdr_size` may have. `Ok(None)` when there is none
/// (then this is not LUKS).
///
/// A candidate that cannot be read (a bad sector of a failing disk) is skipped: the image is
/// then simply not taken for LUKS, and whatever reads it next reports the damage.
///
/// # Errors
/// `Corrupt` when a secondary magic is there but no copy is valid (cryptsetup: a LUKS device
/// whose metadata is damaged beyond repair).
pub fn read_secondary_only(src: &dyn ByteSource) -> crate::Result<Option<Luks2>> {
    let mut damaged: Option<crate::Error> = None;
    for at in LUKS2_HDR_SIZES {
        if at.saturating_add(LUKS2_BIN_BYTES as u64) > src.size_bytes() {
            break;
        }
        let mut magic = [0u8; 6];
        if src.read_exact_at(&mut magic, at).is_err() || magic != LUKS2_MAGIC_2ND {
            continue;
        }
        match read_copy(src, at, LUKS2_MAGIC_2ND) {
            Ok(mut s) => {
                s.notes.push(crate::finding::Finding::warning(
                    "luks.header-copy",
                    format!(
                        "the primary LUKS2 header is missing (no LUKS magic at byte 0: wiped or overwritten); the \
                     secondary copy at byte {at} was used (cryptsetup would rewrite the primary from it)"
                    ),
                ));
                return Ok(Some(s));
            }
            Err(e) if e.kind() == crate::ErrorKind::Io => continue,
            Err(e) => {
                damaged.get_or_insert(e);
            }
        }
    }
    match damaged {
        Some(e) => Err(crate::Error::corrupt(format!(
            "no LUKS magic at byte 0 (the primary LUKS2 header is missing) and the secondary copy is damaged: {e}"
        ))),
        None => Ok(None),
    }
}

/// Encode a LUKS2 binary header copy (csum filled in over `json_area`).
#[allow(clippy::too_many_arguments)]
pub fn luks2_bin(
    magic: [u8; 6],
    hdr_size: u64,
    seqid: u64,
    label: &str,
    uuid: &str,
    hdr_offset: u64,
    salt: &[u8; 64],
    json_area: &[u8],
) -> Vec<u8> {
    let mut b = vec![0u8; LUKS2_BIN_BYTES];
    b[..6].copy_from_slice(&magic);
    b[6..8].copy_from_slice(&2u16.to_be_bytes());
    b[8..16].copy_from_slice(&hdr_size.to_be_bytes());
    b[16..24].copy_from_slice(&seqid.to_be_bytes());
    put_str(&mut b[24..72], label);
    put_str(&mut b[72..104], "sha256");
    b[104..168].copy_from_slice(salt);
    put_str(&mut b[168..208], uuid);
    b[256..264].copy_from_slice(&hdr_offset.to_be_bytes());
    let c = luks2_checksum(&b, json_area);
    b[LUKS2_CSUM_AT..LUKS2_CSUM_AT + 32].copy_from_slice(&c);
    b
}

/// Copy `s` into a fixed NUL-padded field (truncated to leave a NUL).
pub fn put_str(field: &mut [u8], s: &str) {
    let n = s.len().min(field.len() - 1);
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Encode a LUKS1 `phdr` (592 bytes).
pub fn luks1_phdr(l: &Luks1) -> Vec<u8> {
    let mut h = vec![0u8; LUKS1_PHDR_BYTES];
    h[..6].copy_from_slice(&LUKS_MAGIC);
    h[6..8].copy_from_slice(&1u16.to_be_bytes());
    put_str(&mut h[8..40], &l.cipher_name);
    put_str(&mut h[40..72], &l.cipher_mode);
    put_str(&mut h[72..104], &l.hash_spec);
    h[104..108].copy_from_slice(&l.payload_sector.to_be_bytes());
    h[108..112].copy_from_slice(&l.key_bytes.to_be_bytes());
    h[112..132].copy_from_slice(&l.mk_digest);
    h[132..164].copy_from_slice(&l.mk_digest_salt);
    h[164..168].copy_from_slice(&l.mk_digest_iter.to_be_bytes());
    put_str(&mut h[168..208], &l.uuid);
    for (i, s) in l.slots.iter().enumerate() {
        let d = &mut h[208 + 48 * i..208 + 48 * (i + 1)];
        d[..4].copy_from_slice(&(if s.active { LUKS1_KEY_ENABLED } else { LUKS1_KEY_DISABLED }).to_be_bytes());
        d[4..8].copy_from_slice(&s.iterations.to_be_bytes());
        d[8..40].copy_from_slice(&s.salt);
        d[40..44].copy_from_slice(&s.key_material_sector.to_be_bytes());
        d[44..48].copy_from_slice(&s.stripes.to_be_bytes());
    }
    h
}
