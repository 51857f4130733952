//! dvdisaster's on-disk structures — the 4096-byte `EccHeader`, the RS03 `CrcBlock`, dead-sector
//! and padding marker sectors — and the RS01/RS02/RS03 layouts computed from a header.
//!
//! Headers are checked in stages, cheapest first: cookie and method, then `selfCRC`, then the
//! field ranges, then the layout they imply (all arithmetic checked, so fuzzed fields give a
//! `Corrupt` error instead of an overflow or a huge allocation). Offsets, formulas and section
//! numbers refer to `docs/formats/research/dvdisaster.md`.

use std::fmt;

/// dvdisaster's sector size (ECC layouts count in these, not in 512-byte loop sectors).
pub const ECC_SECTOR_BYTES: u64 = 2048;
/// [`ECC_SECTOR_BYTES`] as a buffer length.
pub const SECTOR: usize = 2048;
/// Size of an `EccHeader` (two sectors).
pub const HEADER_BYTES: usize = 4096;
/// Every header and CrcBlock starts its signature with this.
pub const COOKIE: &[u8; 12] = b"*dvdisaster*";
/// The `selfCRC` field holds this ("GPL\0") while the CRC is computed.
pub const SELF_CRC_PLACEHOLDER: [u8; 4] = *b"GPL\0";
/// RS03 `methodFlags[0]` bit: `mediumSum` is valid.
pub const MFLAG_DATA_MD5: u8 = 1;
/// RS03 `methodFlags[0]` bit: this is an `.ecc` file, not an augmented image.
pub const MFLAG_ECC_FILE: u8 = 2;
/// The fingerprint sector dvdisaster ≥ 0.65 uses.
pub const FINGERPRINT_SECTOR: u64 = 16;
/// Largest image loopkit accepts a header for: 2^40 sectors (2 PiB), far beyond any disc.
pub const MAX_SECTORS: u64 = 1 << 40;
/// Fewest data layers an RS03 image has (at most 170 roots).
pub const RS03_MIN_DATA_LAYERS: u64 = 84;

/// Byte offsets of the `EccHeader` fields (§2).
pub mod hdr {
    /// `*dvdisaster*`.
    pub const COOKIE: usize = 0;
    /// `RS01`/`RS02`/`RS03`.
    pub const METHOD: usize = 12;
    /// 4 flag bytes.
    pub const METHOD_FLAGS: usize = 16;
    /// MD5 of the fingerprint sector.
    pub const MEDIUM_FP: usize = 20;
    /// MD5 of the image.
    pub const MEDIUM_SUM: usize = 36;
    /// RS01: MD5 of the `.ecc` file after the header; RS02: MD5 of the layer MD5s.
    pub const ECC_SUM: usize = 52;
    /// LE u64 image sectors.
    pub const SECTORS: usize = 68;
    /// ndata.
    pub const DATA_BYTES: usize = 76;
    /// nroots.
    pub const ECC_BYTES: usize = 80;
    /// Version that wrote it.
    pub const CREATOR_VERSION: usize = 84;
    /// Version needed to read it.
    pub const NEEDED_VERSION: usize = 88;
    /// Fingerprint sector number.
    pub const FP_SECTOR: usize = 92;
    /// CRC of the header.
    pub const SELF_CRC: usize = 96;
    /// RS02: MD5 of the CRC area.
    pub const CRC_SUM: usize = 100;
    /// Bytes used in the last image sector.
    pub const IN_LAST: usize = 116;
    /// RS03 layer size.
    pub const SECTORS_PER_LAYER: usize = 120;
    /// RS02 (≥ 0.79.5): sectors appended after the data.
    pub const SECTORS_ADDED_BY_ECC: usize = 128;
    /// First byte of the padding (RS02 keeps a CRC copy at 2048).
    pub const PADDING: usize = 136;
}

/// Byte offsets of the RS03 `CrcBlock` fields (§3).
pub mod crcblk {
    /// 256 LE CRCs.
    pub const CRC: usize = 0;
    /// `*dvdisaster*`.
    pub const COOKIE: usize = 1024;
    /// `RS03`.
    pub const METHOD: usize = 1036;
    /// Flags, as in the header.
    pub const METHOD_FLAGS: usize = 1040;
    /// Creator version.
    pub const CREATOR_VERSION: usize = 1044;
    /// Needed version.
    pub const NEEDED_VERSION: usize = 1048;
    /// Fingerprint sector.
    pub const FP_SECTOR: usize = 1052;
    /// MD5 of the fingerprint sector.
    pub const MEDIUM_FP: usize = 1056;
    /// MD5 of the image (if flagged).
    pub const MEDIUM_SUM: usize = 1072;
    /// Image sectors.
    pub const DATA_SECTORS: usize = 1088;
    /// Bytes in the last image sector.
    pub const IN_LAST: usize = 1096;
    /// ndata (including the CRC layer).
    pub const DATA_BYTES: usize = 1100;
    /// nroots.
    pub const ECC_BYTES: usize = 1104;
    /// Layer size.
    pub const SECTORS_PER_LAYER: usize = 1112;
    /// CRC over the 2048-byte block.
    pub const SELF_CRC: usize = 1120;
}

/// dvdisaster's CRC (CRC-32/JAMCRC: the bitwise NOT of the zlib CRC-32), §1.1.
pub fn crc32(buf: &[u8]) -> u32 {
    !crc32fast::hash(buf)
}

/// The CRC of a structure whose `selfCRC` field at `at` is replaced by the placeholder (§1.2).
pub fn self_crc(buf: &[u8], at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..at]);
    h.update(&SELF_CRC_PLACEHOLDER);
    h.update(&buf[at + 4..]);
    !h.finalize()
}

use crate::bytes::{array as md5_field, le32, le64};

/// The three codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Separate `.ecc` file, parity byte-interleaved (§5).
    Rs01,
    /// Augmented image with header copies (§6).
    Rs02,
    /// Augmented image or `.ecc` file with a CRC layer (§7).
    Rs03,
}

impl Method {
    /// `RS01`, `RS02`, `RS03`.
    pub fn name(self) -> &'static str {
        match self {
            Method::Rs01 => "RS01",
            Method::Rs02 => "RS02",
            Method::Rs03 => "RS03",
        }
    }

    fn from_tag(tag: &[u8]) -> Option<Method> {
        match tag {
            b"RS01" => Some(Method::Rs01),
            b"RS02" => Some(Method::Rs02),
            b"RS03" => Some(Method::Rs03),
            _ => None,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why 4096 bytes are not a usable header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderFault {
    /// No `*dvdisaster*` cookie: not a header at all.
    NoCookie,
    /// The cookie is there but the method tag is unknown.
    UnknownMethod([u8; 4]),
    /// The stored `selfCRC` does not match the contents (a damaged copy).
    SelfCrc {
        /// Stored value.
        stored: u32,
        /// Computed value.
        computed: u32,
    },
    /// A field is out of range or the fields contradict each other.
    Invalid(String),
}

impl fmt::Display for HeaderFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderFault::NoCookie => f.write_str("no *dvdisaster* cookie"),
            HeaderFault::UnknownMethod(m) => write!(f, "unknown method {:?}", String::from_utf8_lossy(m)),
            HeaderFault::SelfCrc { stored, computed } => {
                write!(f, "header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
            HeaderFault::Invalid(m) => f.write_str(m),
        }
    }
}

/// A parsed `EccHeader` (§2).
#[derive(Clone, PartialEq, Eq)]
pub struct EccHeader {
    /// Codec.
    pub method: Method,
    /// `methodFlags`.
    pub method_flags: [u8; 4],
    /// MD5 of sector `fp_sector` (all zero: unknown).
    pub medium_fp: [u8; 16],
    /// MD5 of the original image (validity depends on the codec: [`EccHeader::medium_sum_valid`]).
    pub medium_sum: [u8; 16],
    /// RS01: MD5 of the `.ecc` file after the header; RS02: MD5 of the ECC layer MD5s.
    pub ecc_sum: [u8; 16],
    /// Sectors of the original image.
    pub sectors: u64,
    /// ndata (RS03: including the CRC layer).
    pub data_bytes: i32,
    /// nroots.
    pub ecc_bytes: i32,
    /// dvdisaster version that wrote it (`major·10000 + minor·100 + patch`).
    pub creator_version: i32,
    /// Version needed to read it.
    pub needed_version: i32,
    /// Fingerprint sector.
    pub fp_sector: i32,
    /// Stored `selfCRC` (RS01: 0).
    pub self_crc: u32,
    /// RS02: MD5 of the CRC area.
    pub crc_sum: [u8; 16],
    /// Bytes used in the last image sector, 1..=2048 (0 is read as 2048).
    pub in_last: u32,
    /// RS03 layer size.
    pub sectors_per_layer: u64,
    /// RS02 (≥ 0.79.5): sectors appended after the data (0 in older headers).
    pub sectors_added_by_ecc: u64,
    /// The raw 4096 bytes (RS02 keeps a CRC copy in the second sector).
    pub raw: Box<[u8; HEADER_BYTES]>,
}

impl fmt::Debug for EccHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EccHeader")
            .field("method", &self.method)
            .field("sectors", &self.sectors)
            .field("data_bytes", &self.data_bytes)
            .field("ecc_bytes", &self.ecc_bytes)
            .field("in_last", &self.in_last)
            .field("sectors_per_layer", &self.sectors_per_layer)
            .field("sectors_added_by_ecc", &self.sectors_added_by_ecc)
            .finish_non_exhaustive()
    }
}

/// Whether `buf` starts with the header cookie (a cheap first test).
pub fn has_header_cookie(buf: &[u8]) -> bool {
    buf.len() >= 16 && &buf[..12] == COOKIE
}

impl EccHeader {
    /// Stage 1 and 2: cookie, method and (RS02/RS03) `selfCRC`. Field ranges are checked by
    /// [`EccHeader::validate`].
    ///
    /// # Errors
    /// The first [`HeaderFault`] found.
    pub fn parse(buf: &[u8]) -> Result<EccHeader, HeaderFault> {
        let h = Self::parse_unchecked(buf)?;
        if h.method != Method::Rs01 {
            let computed = self_crc(&h.raw[..], hdr::SELF_CRC);
            if computed != h.self_crc {
                return Err(HeaderFault::SelfCrc { stored: h.self_crc, computed });
            }
        }
        Ok(h)
    }

    /// Stage 1 only: cookie and method; fields are read as they are.
    ///
    /// # Errors
    /// `NoCookie` / `UnknownMethod`.
    pub fn parse_unchecked(buf: &[u8]) -> Result<EccHeader, HeaderFault> {
        if buf.len() < HEADER_BYTES || &buf[..12] != COOKIE {
            return Err(HeaderFault::NoCookie);
        }
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&buf[hdr::METHOD..hdr::METHOD + 4]);
        let method = Method::from_tag(&tag).ok_or(HeaderFault::UnknownMethod(tag))?;
        let mut raw = Box::new([0u8; HEADER_BYTES]);
        raw.copy_from_slice(&buf[..HEADER_BYTES]);
        let mut method_flags = [0u8; 4];
        method_flags.copy_from_slice(&buf[hdr::METHOD_FLAGS..hdr::METHOD_FLAGS + 4]);
        let in_last = le32(buf, hdr::IN_LAST);
        Ok(EccHeader {
            method,
            method_flags,
            medium_fp: md5_field(buf, hdr::MEDIUM_FP),
            medium_sum: md5_field(buf, hdr::MEDIUM_SUM),
            ecc_sum: md5_field(buf, hdr::ECC_SUM),
            sectors: le64(buf, hdr::SECTORS),
            data_bytes: le32(buf, hdr::DATA_BYTES) as i32,
            ecc_bytes: le32(buf, hdr::ECC_BYTES) as i32,
            creator_version: le32(buf, hdr::CREATOR_VERSION) as i32,
            needed_version: le32(buf, hdr::NEEDED_VERSION) as i32,
            fp_sector: le32(buf, hdr::FP_SECTOR) as i32,
            self_crc: le32(buf, hdr::SELF_CRC),
            crc_sum: md5_field(buf, hdr::CRC_SUM),
            // 0.66 pre-releases wrote 0 for "full sector".
            in_last: if in_last == 0 { SECTOR as u32 } else { in_last },
            sectors_per_layer: le64(buf, hdr::SECTORS_PER_LAYER),
            sectors_added_by_ecc: le64(buf, hdr::SECTORS_ADDED_BY_ECC),
            raw,
        })
    }

    /// Stage 3: field ranges common to all codecs.
    ///
    /// # Errors
    /// `Invalid` naming the field, its value and the expected range.
    pub fn validate(&self) -> Result<(), HeaderFault> {
        let bad = |m: String| Err(HeaderFault::Invalid(m));
        if self.sectors == 0 || self.sectors > MAX_SECTORS {
            return bad(format!("image size {} sectors is outside 1..={MAX_SECTORS}", self.sectors));
        }
        let nroots = self.ecc_bytes;
        if !(*super::rs::ROOTS_RANGE.start() as i32..=*super::rs::ROOTS_RANGE.end() as i32).contains(&nroots) {
            return bad(format!("{nroots} roots is outside the 8..=170 dvdisaster writes"));
        }
        if self.data_bytes.checked_add(nroots) != Some(super::rs::N as i32) {
            return bad(format!("data bytes {} + roots {nroots} is not 255", self.data_bytes));
        }
        if self.in_last > SECTOR as u32 {
            return bad(format!("last-sector byte count {} is outside 1..=2048", self.in_last));
        }
        if self.fp_sector < 0 {
            return bad(format!("fingerprint sector {} is negative", self.fp_sector));
        }
        Ok(())
    }

    /// nroots (after [`EccHeader::validate`], 8..=170).
    pub fn nroots(&self) -> usize {
        self.ecc_bytes.clamp(0, 254) as usize
    }

    /// Whether `medium_sum` holds the image MD5 (RS01/RS02 always; RS03 only when flagged).
    pub fn medium_sum_valid(&self) -> bool {
        match self.method {
            Method::Rs01 | Method::Rs02 => true,
            Method::Rs03 => self.method_flags[0] & MFLAG_DATA_MD5 != 0,
        }
    }

    /// Bytes of the original image: `(sectors − 1)·2048 + in_last`.
    pub fn image_bytes(&self) -> u64 {
        self.sectors.saturating_sub(1) * ECC_SECTOR_BYTES + u64::from(self.in_last)
    }

    /// `0.79 (pl5)` style version string.
    pub fn version_string(v: i32) -> String {
        let v = v.max(0);
        let (major, minor, pl) = (v / 10000, (v / 100) % 100, v % 100);
        if pl == 0 { format!("{major}.{minor:02}") } else { format!("{major}.{minor:02} (pl{pl})") }
    }
}

/// A parsed RS03 `CrcBlock` (§3): the CRCs of the next ECC block's data sectors plus a copy of
/// the layout parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrcBlock {
    /// `methodFlags`.
    pub method_flags: [u8; 4],
    /// Creator version.
    pub creator_version: i32,
    /// Needed version.
    pub needed_version: i32,
    /// Fingerprint sector.
    pub fp_sector: i32,
    /// MD5 of the fingerprint sector.
    pub medium_fp: [u8; 16],
    /// MD5 of the image (if flagged).
    pub medium_sum: [u8; 16],
    /// Image sectors.
    pub data_sectors: u64,
    /// Bytes used in the last image sector.
    pub in_last: u32,
    /// ndata (including the CRC layer).
    pub data_bytes: i32,
    /// nroots.
    pub ecc_bytes: i32,
    /// Layer size.
    pub sectors_per_layer: u64,
}

impl CrcBlock {
    /// Parse and check cookie, method and `selfCRC` of a 2048-byte sector.
    pub fn parse(buf: &[u8]) -> Option<CrcBlock> {
        if buf.len() < SECTOR
            || &buf[crcblk::COOKIE..crcblk::COOKIE + 12] != COOKIE
            || &buf[crcblk::METHOD..crcblk::METHOD + 4] != b"RS03"
            || self_crc(&buf[..SECTOR], crcblk::SELF_CRC) != le32(buf, crcblk::SELF_CRC)
        {
            return None;
        }
        let mut method_flags = [0u8; 4];
        method_flags.copy_from_slice(&buf[crcblk::METHOD_FLAGS..crcblk::METHOD_FLAGS + 4]);
        let in_last = le32(buf, crcblk::IN_LAST);
        Some(CrcBlock {
            method_flags,
            creator_version: le32(buf, crcblk::CREATOR_VERSION) as i32,
            needed_version: le32(buf, crcblk::NEEDED_VERSION) as i32,
            fp_sector: le32(buf, crcblk::FP_SECTOR) as i32,
            medium_fp: md5_field(buf, crcblk::MEDIUM_FP),
            medium_sum: md5_field(buf, crcblk::MEDIUM_SUM),
            data_sectors: le64(buf, crcblk::DATA_SECTORS),
            in_last: if in_last == 0 { SECTOR as u32 } else { in_last },
            data_bytes: le32(buf, crcblk::DATA_BYTES) as i32,
            ecc_bytes: le32(buf, crcblk::ECC_BYTES) as i32,
            sectors_per_layer: le64(buf, crcblk::SECTORS_PER_LAYER),
        })
    }

    /// CRC `j` of a (valid) CrcBlock sector.
    pub fn crc_at(buf: &[u8], j: usize) -> u32 {
        le32(buf, crcblk::CRC + 4 * j)
    }

    /// The header dvdisaster rebuilds from a CrcBlock (`ReconstructRS03Header`): `eccSum`,
    /// `crcSum` and `sectorsAddedByEcc` stay 0 and `selfCRC` is recomputed.
    pub fn to_header(&self) -> EccHeader {
        let mut raw = [0u8; HEADER_BYTES];
        raw[..12].copy_from_slice(COOKIE);
        raw[hdr::METHOD..hdr::METHOD + 4].copy_from_slice(b"RS03");
        raw[hdr::METHOD_FLAGS..hdr::METHOD_FLAGS + 4].copy_from_slice(&self.method_flags);
        raw[hdr::MEDIUM_FP..hdr::MEDIUM_FP + 16].copy_from_slice(&self.medium_fp);
        raw[hdr::MEDIUM_SUM..hdr::MEDIUM_SUM + 16].copy_from_slice(&self.medium_sum);
        raw[hdr::SECTORS..hdr::SECTORS + 8].copy_from_slice(&self.data_sectors.to_le_bytes());
        raw[hdr::DATA_BYTES..hdr::DATA_BYTES + 4].copy_from_slice(&self.data_bytes.to_le_bytes());
        raw[hdr::ECC_BYTES..hdr::ECC_BYTES + 4].copy_from_slice(&self.ecc_bytes.to_le_bytes());
        raw[hdr::CREATOR_VERSION..hdr::CREATOR_VERSION + 4].copy_from_slice(&self.creator_version.to_le_bytes());
        raw[hdr::NEEDED_VERSION..hdr::NEEDED_VERSION + 4].copy_from_slice(&self.needed_version.to_le_bytes());
        raw[hdr::FP_SECTOR..hdr::FP_SECTOR + 4].copy_from_slice(&self.fp_sector.to_le_bytes());
        raw[hdr::IN_LAST..hdr::IN_LAST + 4].copy_from_slice(&self.in_last.to_le_bytes());
        raw[hdr::SECTORS_PER_LAYER..hdr::SECTORS_PER_LAYER + 8].copy_from_slice(&self.sectors_per_layer.to_le_bytes());
        let crc = self_crc(&raw, hdr::SELF_CRC);
        raw[hdr::SELF_CRC..hdr::SELF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        // Cannot fail: cookie, method and selfCRC were just written.
        EccHeader::parse_unchecked(&raw).unwrap_or_else(|_| unreachable!("freshly built header"))
    }
}

/// Texts of the dead sector marker (§4.1).
const DSM_HEAD: &[u8] = b"dvdisaster dead sector marker\nThis sector could not be read from the image.\nIts contents have been substituted by the dvdisaster read routine.\n";
const DSM_END: &[u8] = b"dvdisaster dead sector end marker\n";
/// Where the end text starts.
const DSM_END_AT: usize = 2012;

/// What a dead sector marker says about itself (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadSector {
    /// The sector could not be read when the image was made.
    Missing,
    /// A marker copied from another sector position (the image was made from defective content).
    Displaced,
    /// A marker from another medium (fingerprint differs).
    WrongFingerprint,
}

/// Whether `buf` (a full 2048-byte sector) is a dvdisaster dead sector marker, and which kind.
/// `sector` is the sector's real position; `fp` the expected medium fingerprint, if known.
pub fn dead_sector(buf: &[u8], sector: u64, fp: Option<&[u8; 16]>) -> Option<DeadSector> {
    if buf.len() < SECTOR
        || &buf[..DSM_HEAD.len()] != DSM_HEAD
        || &buf[DSM_END_AT..DSM_END_AT + DSM_END.len()] != DSM_END
    {
        return None;
    }
    if !field_is(buf, 0x100, b"Dead sector marker version") {
        return Some(DeadSector::Missing);
    }
    if field_is(buf, 0x140, b"Dead sector number") {
        let n = cstr_at(buf, 0x160);
        if let Ok(v) = std::str::from_utf8(n).unwrap_or("").parse::<u64>()
            && v != sector
        {
            return Some(DeadSector::Displaced);
        }
    }
    if let Some(fp) = fp
        && field_is(buf, 0x1C0, b"Medium fingerprint sector")
        && cstr_at(buf, 0x1E0) == b"16"
        && !field_is(buf, 0x1B0, b"none")
        && buf[0x1A0..0x1B0] != fp[..]
    {
        return Some(DeadSector::WrongFingerprint);
    }
    Some(DeadSector::Missing)
}

fn cstr_at(buf: &[u8], at: usize) -> &[u8] {
    crate::bytes::until_nul(buf.get(at..(at + 32).min(buf.len())).unwrap_or(&[]))
}

fn field_is(buf: &[u8], at: usize, text: &[u8]) -> bool {
    cstr_at(buf, at) == text
}

/// A dead sector marker for sector `n` as dvdisaster writes it (`CreateMissingSector`,
/// marker version 1.00): `fp` None writes "none" instead of a fingerprint, `label` None writes
/// "none" as the volume label. Byte-exact (§4.1).
pub fn dead_sector_marker(n: u64, fp: Option<&[u8; 16]>, fp_sector: u64, label: Option<&str>, out: &mut [u8]) {
    out[..SECTOR].fill(0);
    out[..DSM_HEAD.len()].copy_from_slice(DSM_HEAD);
    out[DSM_END_AT..DSM_END_AT + DSM_END.len()].copy_from_slice(DSM_END);
    let put = |out: &mut [u8], at: usize, s: &[u8]| {
        let s = &s[..s.len().min(31)];
        out[at..at + s.len()].copy_from_slice(s);
    };
    put(out, 0x100, b"Dead sector marker version");
    put(out, 0x120, b"1.00");
    put(out, 0x140, b"Dead sector number");
    put(out, 0x160, n.to_string().as_bytes());
    put(out, 0x180, b"Medium fingerprint");
    match fp {
        Some(fp) => out[0x1A0..0x1B0].copy_from_slice(fp),
        None => out[0x1B0..0x1B4].copy_from_slice(b"none"),
    }
    put(out, 0x1C0, b"Medium fingerprint sector");
    put(out, 0x1E0, fp_sector.to_string().as_bytes());
    put(out, 0x200, b"Volume label (if any)");
    put(out, 0x220, label.unwrap_or("none").as_bytes());
}

/// The RS03 padding sector number `n` (§4.2), byte-exact.
pub fn padding_sector(n: u64, fp: &[u8; 16], out: &mut [u8]) {
    const HEAD: &[u8] = b"dvdisaster padding sector       This is a padding sector needed for augmenting the image with error correction data.";
    const END: &[u8] = b"dvdisaster padding sector end marker";
    out[..SECTOR].fill(0);
    out[..HEAD.len()].copy_from_slice(HEAD);
    let put = |out: &mut [u8], at: usize, s: &[u8]| out[at..at + s.len()].copy_from_slice(s);
    put(out, 0x100, b"Padding sector marker version");
    put(out, 0x120, b"1.00");
    put(out, 0x140, b"Padding sector number");
    put(out, 0x160, n.to_string().as_bytes());
    put(out, 0x180, b"Medium fingerprint");
    put(out, 0x1A0, fp);
    put(out, 0x1C0, b"Medium fingerprint sector");
    put(out, 0x1E0, b"16");
    put(out, 2011, END);
}

fn corrupt(msg: String) -> HeaderFault {
    HeaderFault::Invalid(msg)
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// RS01 layout (§5): a separate `.ecc` file with one CRC per image sector, then parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rs01Layout {
    /// Image sectors.
    pub sectors: u64,
    /// Parity symbols per codeword.
    pub nroots: usize,
    /// Data symbols (layers) per codeword.
    pub ndata: usize,
    /// Sectors per layer.
    pub spl: u64,
}

impl Rs01Layout {
    /// From a validated header.
    pub fn new(h: &EccHeader) -> Self {
        let ndata = super::rs::N - h.nroots();
        Rs01Layout { sectors: h.sectors, nroots: h.nroots(), ndata, spl: ceil_div(h.sectors, ndata as u64) }
    }
    /// Byte offset of the CRC section in the `.ecc` file.
    pub fn crc_offset(&self) -> u64 {
        HEADER_BYTES as u64
    }
    /// Byte offset of the parity section.
    pub fn parity_offset(&self) -> u64 {
        HEADER_BYTES as u64 + 4 * self.sectors
    }
    /// Expected `.ecc` file size.
    pub fn file_bytes(&self) -> u64 {
        self.parity_offset() + self.nroots as u64 * self.spl * ECC_SECTOR_BYTES
    }
}

/// RS02 layout (§6.1): data, header, CRC area, then ECC sectors interleaved with header copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rs02Layout {
    /// Data sectors.
    pub ds: u64,
    /// Parity symbols per codeword.
    pub nroots: usize,
    /// Data symbols (layers) per codeword.
    pub ndata: usize,
    /// CRC area sectors.
    pub crc_sectors: u64,
    /// Sectors covered by the code: data + header + CRC area.
    pub protected: u64,
    /// Sectors per layer (= ECC blocks).
    pub spl: u64,
    /// ECC sectors (`nroots · spl`).
    pub rs_sectors: u64,
    /// The ECC block whose CRCs the header copies carry (`firstCrcLayerIndex`).
    pub first_crc_layer: u64,
    /// Header repeat modulo.
    pub modulo: u64,
    /// First interleaved header copy.
    pub first_repeat: u64,
    /// Number of header copies after the first.
    pub headers: u64,
    /// Sectors appended after the data.
    pub ecc_sectors: u64,
    /// Augmented image size in sectors.
    pub total: u64,
}

impl Rs02Layout {
    /// The layout for `ds` data sectors, `nroots` roots and header modulo `modulo`.
    ///
    /// # Errors
    /// `Invalid` when the numbers do not form a layout (checked arithmetic throughout).
    pub fn compute(ds: u64, nroots: usize, modulo: u64) -> Result<Self, HeaderFault> {
        let ndata = super::rs::N - nroots;
        let ovf = || corrupt(format!("RS02 layout for {ds} sectors overflows"));
        let crc_sectors = ceil_div(ds.checked_mul(4).ok_or_else(ovf)?, ECC_SECTOR_BYTES);
        let protected = ds.checked_add(2 + crc_sectors).ok_or_else(ovf)?;
        let spl = ceil_div(protected, ndata as u64);
        let rs_sectors = spl.checked_mul(nroots as u64).ok_or_else(ovf)?;
        if modulo < 32 || !modulo.is_power_of_two() {
            return Err(corrupt(format!("RS02 header modulo {modulo} is not a power of two ≥ 32")));
        }
        let first_repeat = ceil_div(protected, modulo).checked_mul(modulo).ok_or_else(ovf)?;
        let end = rs_sectors.checked_add(protected).ok_or_else(ovf)?;
        if end < first_repeat {
            // dvdisaster's creation bug (§12): this layout would have ~1e17 header copies.
            return Err(corrupt(format!(
                "RS02 layout ({ds} sectors, {nroots} roots, modulo {modulo}) has no room for header copies"
            )));
        }
        let headers = (end - first_repeat) / (modulo - 2) + 1;
        let ecc_sectors = (2 + crc_sectors)
            .checked_add(rs_sectors)
            .and_then(|x| x.checked_add(headers.checked_mul(2)?))
            .ok_or_else(ovf)?;
        let total = ds.checked_add(ecc_sectors).ok_or_else(ovf)?;
        Ok(Rs02Layout {
            ds,
            nroots,
            ndata,
            crc_sectors,
            protected,
            spl,
            rs_sectors,
            first_crc_layer: (ds + 2) % spl,
            modulo,
            first_repeat,
            headers,
            ecc_sectors,
            total,
        })
    }

    /// The modulo dvdisaster computes first: 32, doubled while `rs_sectors / M > 40`.
    ///
    /// # Errors
    /// `Invalid` when the sizes overflow.
    pub fn base_modulo(ds: u64, nroots: usize) -> Result<u64, HeaderFault> {
        let ovf = || corrupt(format!("RS02 layout for {ds} sectors overflows"));
        let crc_sectors = ceil_div(ds.checked_mul(4).ok_or_else(ovf)?, ECC_SECTOR_BYTES);
        let protected = ds.checked_add(2 + crc_sectors).ok_or_else(ovf)?;
        let rs_sectors =
            ceil_div(protected, (super::rs::N - nroots) as u64).checked_mul(nroots as u64).ok_or_else(ovf)?;
        let mut m: u64 = 32;
        while rs_sectors / m > 40 {
            m *= 2;
        }
        Ok(m)
    }

    /// The candidate layouts for a header: the base modulo and its "glitch" variants 2M and 4M
    /// (§6.1), in that order; only those that compute.
    ///
    /// # Errors
    /// `Invalid` when none computes.
    pub fn candidates(h: &EccHeader) -> Result<Vec<Self>, HeaderFault> {
        let m = Self::base_modulo(h.sectors, h.nroots())?;
        let v: Vec<Self> =
            [m, 2 * m, 4 * m].iter().filter_map(|&mm| Self::compute(h.sectors, h.nroots(), mm).ok()).collect();
        if v.is_empty() {
            return Err(corrupt(format!(
                "RS02 header ({} sectors, {} roots) does not give a valid layout",
                h.sectors,
                h.nroots()
            )));
        }
        Ok(v)
    }

    /// Image sector of ECC layer `k`, sector `i` (`RS02SectorIndex`).
    pub fn ecc_sector(&self, k: usize, i: u64) -> u64 {
        let idx = k as u64 * self.spl + i;
        let base = self.first_repeat - self.protected;
        if idx < base {
            self.protected + idx
        } else {
            let q = idx - base;
            self.first_repeat + 2 + q + 2 * (q / (self.modulo - 2))
        }
    }

    /// Sectors holding header copies: `ds`, then `first_repeat + n·modulo` below `total`.
    pub fn header_copies(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.ds).chain((0..self.headers).map(move |n| self.first_repeat + n * self.modulo))
    }

    /// The data sector whose CRC is word `n` of the CRC area, in storage order (§6.4);
    /// `None` past the last data sector (GPL padding words).
    pub fn crc_order(&self) -> impl Iterator<Item = u64> + '_ {
        let spl = self.spl;
        (0..spl).flat_map(move |t| {
            let li = (t + self.first_crc_layer + 1) % spl;
            (0..self.ndata as u64).map(move |j| j * spl + li).filter(move |&s| s < self.ds)
        })
    }
}

/// Where an RS03 layer sector lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rs03Place {
    /// Sector of the image file.
    Image(u64),
    /// Sector of the `.ecc` file.
    EccFile(u64),
    /// A virtual padding sector with this number (`.ecc` files: data layers past the image).
    Padding(u64),
}

/// RS03 layout (§7): 255 layers of `spl` sectors; data layers, one CRC layer, ECC layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rs03Layout {
    /// Image sectors.
    pub ds: u64,
    /// Parity symbols per codeword.
    pub nroots: usize,
    /// Data symbols per codeword, including the CRC layer.
    pub ndata: usize,
    /// Sectors per layer.
    pub spl: u64,
    /// Separate `.ecc` file (else augmented image).
    pub ecc_file: bool,
}

impl Rs03Layout {
    /// From a validated header; `ecc_file` from `MFLAG_ECC_FILE`. Recomputes ndata the way
    /// dvdisaster does and insists the header agrees.
    ///
    /// # Errors
    /// `Invalid` when `sectorsPerLayer` or the layer counts do not fit the image size.
    pub fn new(h: &EccHeader) -> Result<Self, HeaderFault> {
        let ds = h.sectors;
        let ecc_file = h.method_flags[0] & MFLAG_ECC_FILE != 0;
        let spl = h.sectors_per_layer;
        if spl == 0 || spl > MAX_SECTORS / 255 {
            return Err(corrupt(format!("RS03 layer size {spl} sectors is out of range")));
        }
        let (ndata, nroots) = if ecc_file {
            let nroots = h.nroots();
            let ndata = super::rs::N - nroots;
            let want = ceil_div(ds, ndata as u64 - 1);
            if want != spl {
                return Err(corrupt(format!(
                    "RS03 .ecc header: {ds} sectors with {nroots} roots need {want} sectors per layer, header says {spl}"
                )));
            }
            (ndata, nroots)
        } else {
            let nd0 = RS03_MIN_DATA_LAYERS.max(ceil_div(ds + 2, spl));
            if nd0 + 1 + 8 > super::rs::N as u64 {
                return Err(corrupt(format!(
                    "RS03 image: {ds} sectors do not fit {spl}-sector layers with at least 8 roots"
                )));
            }
            let ndata = nd0 as usize + 1;
            if ndata as i32 != h.data_bytes {
                return Err(corrupt(format!(
                    "RS03 header says {} data layers, but {ds} sectors in {spl}-sector layers give {ndata}",
                    h.data_bytes
                )));
            }
            (ndata, super::rs::N - ndata)
        };
        Ok(Rs03Layout { ds, nroots, ndata, spl, ecc_file })
    }

    /// Data layers proper (without the CRC layer).
    pub fn data_layers(&self) -> usize {
        self.ndata - 1
    }

    /// Where layer `j` (0..255), sector `i` lives.
    pub fn place(&self, j: usize, i: u64) -> Rs03Place {
        let s = j as u64 * self.spl + i;
        if !self.ecc_file {
            return Rs03Place::Image(s);
        }
        if j < self.data_layers() {
            if s < self.ds { Rs03Place::Image(s) } else { Rs03Place::Padding(s) }
        } else {
            // CRC layer, then the ECC layers, after the two header sectors.
            Rs03Place::EccFile(2 + (j - self.data_layers()) as u64 * self.spl + i)
        }
    }

    /// Augmented image size, or `.ecc` file size, in sectors.
    pub fn total_sectors(&self) -> u64 {
        if self.ecc_file { 2 + (self.nroots as u64 + 1) * self.spl } else { 255 * self.spl }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_vectors() {
        assert_eq!(crc32(b"123456789"), 0x340B_C6D9);
        assert_eq!(crc32(&[0u8; 2048]), 0x0E17_4561);
        assert_eq!(crc32(b""), 0xFFFF_FFFF);
    }

    #[test]
    fn rs02_worked_example() {
        // §6.7: ds=9978, 170 roots.
        let m = Rs02Layout::base_modulo(9978, 170).unwrap();
        let l = Rs02Layout::compute(9978, 170, m).unwrap();
        assert_eq!(
            (
                l.crc_sectors,
                l.protected,
                l.spl,
                l.rs_sectors,
                l.modulo,
                l.first_repeat,
                l.headers,
                l.ecc_sectors,
                l.total,
                l.first_crc_layer
            ),
            (20, 10000, 118, 20060, 512, 10240, 39, 20160, 30138, 68)
        );
        // Every sector after the CRC area is an ECC sector or a header copy, exactly once.
        let mut seen = vec![false; l.total as usize];
        for k in 0..l.nroots {
            for i in 0..l.spl {
                let p = l.ecc_sector(k, i) as usize;
                assert!(!seen[p]);
                seen[p] = true;
            }
        }
        for h in l.header_copies().skip(1) {
            for p in [h, h + 1] {
                assert!(!seen[p as usize]);
                seen[p as usize] = true;
            }
        }
        assert!(seen[l.protected as usize..].iter().all(|&x| x));
        assert_eq!(l.crc_order().count() as u64, l.ds);
    }

    #[test]
    fn absurd_layouts_are_errors_not_panics() {
        assert!(Rs02Layout::compute(u64::MAX / 3, 8, 32).is_err());
        assert!(Rs02Layout::compute(31, 8, 64).is_err());
        assert!(Rs02Layout::compute(100, 32, 33).is_err());
        assert!(Rs02Layout::base_modulo(u64::MAX, 170).is_err());
    }

    #[test]
    fn markers() {
        let mut p = [0u8; 2048];
        padding_sector(502, &[0xAB; 16], &mut p);
        assert_eq!(&p[..25], b"dvdisaster padding sector");
        assert_eq!(&p[0x160..0x164], b"502\0");
        assert_eq!(&p[2011..2047], b"dvdisaster padding sector end marker");
        assert_eq!(p[2047], 0);
        assert_eq!(dead_sector(&p, 502, None), None);
        let mut d = [0u8; 2048];
        d[..DSM_HEAD.len()].copy_from_slice(DSM_HEAD);
        d[DSM_END_AT..DSM_END_AT + DSM_END.len()].copy_from_slice(DSM_END);
        assert_eq!(dead_sector(&d, 7, None), Some(DeadSector::Missing));
        d[0x100..0x100 + 26].copy_from_slice(b"Dead sector marker version");
        d[0x140..0x140 + 18].copy_from_slice(b"Dead sector number");
        d[0x160..0x163].copy_from_slice(b"100");
        assert_eq!(dead_sector(&d, 100, None), Some(DeadSector::Missing));
        assert_eq!(dead_sector(&d, 101, None), Some(DeadSector::Displaced));
        // Markers loopkit writes (repair) are recognised, with their number and fingerprint.
        let mut m = [0u8; 2048];
        dead_sector_marker(4711, Some(&[7; 16]), 16, Some("RS02 fix placeholder"), &mut m);
        assert_eq!(dead_sector(&m, 4711, Some(&[7; 16])), Some(DeadSector::Missing));
        assert_eq!(dead_sector(&m, 4712, None), Some(DeadSector::Displaced));
        assert_eq!(dead_sector(&m, 4711, Some(&[8; 16])), Some(DeadSector::WrongFingerprint));
        assert_eq!(&m[0x220..0x234], b"RS02 fix placeholder");
        dead_sector_marker(1, None, 0, None, &mut m);
        assert_eq!((&m[0x1B0..0x1B4], &m[0x220..0x225]), (&b"none"[..], &b"none\0"[..]));
    }

    #[test]
    fn header_stages() {
        let mut raw = [0u8; HEADER_BYTES];
        assert_eq!(EccHeader::parse(&raw), Err(HeaderFault::NoCookie));
        raw[..12].copy_from_slice(COOKIE);
        raw[12..16].copy_from_slice(b"RS09");
        assert!(matches!(EccHeader::parse(&raw), Err(HeaderFault::UnknownMethod(_))));
        let cb = CrcBlock {
            method_flags: [0; 4],
            creator_version: 7905,
            needed_version: 7900,
            fp_sector: 16,
            medium_fp: [1; 16],
            medium_sum: [0; 16],
            data_sectors: 500,
            in_last: 1048,
            data_bytes: 85,
            ecc_bytes: 170,
            sectors_per_layer: 10,
        };
        let h = cb.to_header();
        let back = EccHeader::parse(&h.raw[..]).unwrap();
        assert_eq!(back.sectors, 500);
        back.validate().unwrap();
        let l = Rs03Layout::new(&back).unwrap();
        assert_eq!((l.ndata, l.nroots, l.total_sectors()), (85, 170, 2550));
        let mut bad = *h.raw;
        bad[hdr::SECTORS] ^= 1;
        assert!(matches!(EccHeader::parse(&bad), Err(HeaderFault::SelfCrc { .. })));
        let mut h2 = back.clone();
        h2.ecc_bytes = 300;
        assert!(h2.validate().is_err());
        h2.ecc_bytes = 170;
        h2.sectors = 0;
        assert!(h2.validate().is_err());
    }
}
