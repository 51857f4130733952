//! The JSON documents loopkit prints (`--json`): one place that defines the wire format, built
//! from library results, one file per document (`inspect`, `verify`, `manifest`, `extract`,
//! `strip-ecc`/`repair`, `migrate`, `extents`, `rescue`, and the generic error document); this root
//! holds the parts several documents
//! share; `batch` (batch verification and the fixity catalog) and `html` (the HTML report) are
//! public submodules. Every document carries `"loopkit_json": 1`. See `docs/JSON.md`.

pub mod batch;
mod damage;
mod ecc;
mod error;
mod extents;
mod extract;
pub mod html;
mod inspect;
mod manifest;
mod migrate;
mod rescue;
mod verify;

pub use damage::{Damage, DamagedArea, DamagedFile, Salvage, SalvagedFile, StatusRange, damage, salvaged_file};
pub use ecc::{Protect, Repair, StripEcc, protect, repair, strip_ecc};
pub use error::{ErrorBody, ErrorDoc, error_chain, error_kind_name};
pub use extents::{Backing, ExtentCheck, ExtentMismatch, ExtentRow, ExtentSummary, Extents, Finding, extents};
pub use extract::Extract;
pub use inspect::{Alternative, DetectionReport, Inspect, LuksDetails, LuksKeyslot, inspect};
pub use manifest::ManifestRun;
pub use migrate::{Migrate, PlainMapping, migrate};
pub use rescue::{Rescue, RescueBytes, rescue};
pub use verify::{Files, Verify, verify};

use serde::{Deserialize, Serialize};

/// Version of the JSON format.
pub const JSON_VERSION: u32 = 1;

/// How the image is encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// `cryptoloop`, `loop-aes`, `luks1`, `luks2`.
    pub scheme: String,
    /// dm-crypt spelling: `aes-cbc-plain`, `aes-cbc-plain64`, `aes-ecb`, `aes-cbc-lmk`, `aes-xts-plain64`…
    pub cipher: String,
    /// Key size in bits.
    pub key_bits: u32,
    /// How the key came from the passphrase (null for LUKS).
    pub key_derivation: Option<String>,
    /// loop-AES multi-key version: null, `v2`, `v3`.
    pub multi_key: Option<String>,
    /// Payload start in the image.
    pub offset_bytes: u64,
    /// IV sector of the payload's first sector (cryptsetup `--skip`).
    pub iv_offset_sectors: u64,
    /// Other derivations giving the same key.
    pub equivalent_derivations: Vec<String>,
    /// A loop-AES seed was appended to the passphrase.
    pub pseed: bool,
    /// loop-AES iteration count (thousands).
    pub itercountk: Option<u32>,
    /// losetup `--sizelimit`.
    pub size_limit_bytes: Option<u64>,
}

/// The file system found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    /// blkid TYPE.
    #[serde(rename = "type")]
    pub kind: String,
    /// Label.
    pub label: Option<String>,
    /// UUID.
    pub uuid: Option<String>,
    /// Size the file system claims.
    pub size_bytes: Option<u64>,
    /// Block size.
    pub block_size: Option<u32>,
    /// Remarks.
    pub notes: Vec<String>,
}

/// dvdisaster error-correction data: what was found (`inspect`) and, for `verify`, what the
/// check found. The check fields are null in `inspect`. Sector numbers count 2048-byte sectors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ecc {
    /// `RS01`, `RS02`, `RS03`.
    pub method: String,
    /// `augmented` (appended to the image) or `ecc-file`.
    pub placement: String,
    /// The `.ecc` file, if separate.
    pub ecc_file: Option<String>,
    /// Reed–Solomon parity bytes per 255-byte codeword.
    pub roots: usize,
    /// dvdisaster version that wrote it, e.g. `0.79 (pl5)`.
    pub created_by: String,
    /// Bytes of the original image (where the encrypted data ends and the ECC begins).
    pub data_bytes: u64,
    /// Sectors of the original image.
    pub data_sectors: u64,
    /// Sector (of the image or `.ecc` file) the header in use was read from.
    pub header_sector: u64,
    /// The header was damaged and rebuilt from an RS03 CRC block.
    pub header_rebuilt: bool,
    /// Sectors the image should have (augmented: data + ECC).
    pub expected_sectors: Option<u64>,
    /// Header copies expected (RS02: first + interleaved copies).
    pub header_copies_total: Option<u64>,
    /// Header copies present with a valid checksum.
    pub header_copies_ok: Option<u64>,
    /// Sectors failing their CRC, as `dvdisaster -t` lists them.
    pub bad_sectors: Option<Vec<u64>>,
    /// Sectors missing: dead-sector markers, or past the end of a truncated image.
    pub missing_sectors: Option<Vec<u64>>,
    /// Sectors of the `.ecc` file missing (RS03 `.ecc` files).
    pub missing_ecc_file_sectors: Option<Vec<u64>>,
    /// Data sectors whose CRC is lost, so they could not be checked.
    pub unchecked_sectors: Option<u64>,
    /// MD5 of the original image bytes as read, hex.
    pub md5: Option<String>,
    /// The MD5 matches the one recorded at creation (null: none recorded, as in RS03).
    pub md5_ok: Option<bool>,
    /// `.ecc` files: the image's fingerprint sector matches (null: not checkable).
    pub fingerprint_ok: Option<bool>,
    /// The CRC section is intact.
    pub crc_section_ok: Option<bool>,
    /// The error-correction section is intact.
    pub ecc_section_ok: Option<bool>,
    /// RS03 Reed–Solomon block test: ECC blocks tested.
    pub ecc_blocks: Option<u64>,
    /// RS03 block test: blocks with a failing codeword.
    pub ecc_blocks_bad: Option<u64>,
    /// RS03 block test: failing codewords.
    pub codewords_bad: Option<u64>,
    /// Nothing damaged in the image or its error-correction data.
    pub ok: Option<bool>,
}

pub(crate) fn ecc_of(e: &crate::formats::dvdisaster::Ecc) -> Ecc {
    use crate::formats::dvdisaster::Placement;
    Ecc {
        method: e.method().name().into(),
        placement: if e.is_augmented() { "augmented".into() } else { "ecc-file".into() },
        ecc_file: match &e.placement {
            Placement::EccFile { path, .. } => Some(path.display().to_string()),
            Placement::Augmented => None,
        },
        roots: e.nroots(),
        created_by: crate::formats::dvdisaster::layout::EccHeader::version_string(e.header.creator_version),
        data_bytes: e.data_bytes(),
        data_sectors: e.data_sectors(),
        header_sector: e.header_sector,
        header_rebuilt: e.rebuilt_from.is_some(),
        expected_sectors: None,
        header_copies_total: None,
        header_copies_ok: None,
        bad_sectors: None,
        missing_sectors: None,
        missing_ecc_file_sectors: None,
        unchecked_sectors: None,
        md5: None,
        md5_ok: None,
        fingerprint_ok: None,
        crc_section_ok: None,
        ecc_section_ok: None,
        ecc_blocks: None,
        ecc_blocks_bad: None,
        codewords_bad: None,
        ok: None,
    }
}

pub(crate) fn ecc_checked(e: &mut Ecc, r: &crate::formats::dvdisaster::verify::Report) {
    e.expected_sectors = Some(r.expected_sectors);
    e.header_copies_total = Some(r.header_copies_total);
    e.header_copies_ok = Some(r.header_copies_ok);
    e.bad_sectors = Some(r.bad_sectors.clone());
    e.missing_sectors = Some(r.missing_sectors.clone());
    e.missing_ecc_file_sectors = Some(r.missing_ecc_file_sectors.clone());
    e.unchecked_sectors = Some(r.unchecked_sectors);
    e.md5 = Some(hex(&r.md5));
    e.md5_ok = r.md5_ok;
    e.fingerprint_ok = r.fingerprint_ok;
    e.crc_section_ok = Some(r.crc_section_ok);
    e.ecc_section_ok = Some(r.ecc_section_ok);
    e.ecc_blocks = r.ecc_blocks;
    e.ecc_blocks_bad = r.ecc_blocks_bad;
    e.codewords_bad = r.codewords_bad;
    e.ok = Some(r.ok());
}

/// The decrypted payload's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Payload start in the image.
    pub offset_bytes: u64,
    /// Payload length (whole sectors).
    pub size_bytes: u64,
    /// SHA-256 of the decrypted payload, lower-case hex.
    pub sha256: String,
    /// Bytes that were holes in the image.
    pub hole_bytes: u64,
    /// Bytes of the image that could not be read (read errors; taken as zero ciphertext).
    pub unreadable_bytes: u64,
    /// Where: file byte ranges `{offset_bytes, size_bytes}`, merged (at most 10 000 listed).
    pub unreadable_ranges: Vec<ByteRange>,
}

/// A range of bytes in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteRange {
    /// Start.
    pub offset_bytes: u64,
    /// Length.
    pub size_bytes: u64,
}

/// Lower-case hex.
pub use crate::bytes::hex;

pub(crate) fn encryption_of(
    p: &crate::formats::legacy::Params,
    equivalents: &[crate::crypto::kdf::Derivation],
) -> Encryption {
    Encryption {
        scheme: p.scheme.name().into(),
        cipher: p.cipher_name(),
        key_bits: p.key_bits,
        key_derivation: Some(p.derivation.to_string()),
        multi_key: p.multi_key.map(|m| m.to_string()),
        offset_bytes: p.offset_bytes,
        iv_offset_sectors: p.iv_offset_sectors,
        equivalent_derivations: equivalents.iter().map(|d| d.to_string()).collect(),
        pseed: p.pseed,
        itercountk: p.itercountk,
        size_limit_bytes: p.size_limit_bytes,
    }
}

pub(crate) fn filesystem_of(fs: &crate::fs::FsInfo) -> Filesystem {
    Filesystem {
        kind: fs.kind.to_string(),
        label: fs.label.clone(),
        uuid: fs.uuid.clone(),
        size_bytes: fs.size_bytes,
        block_size: fs.block_size,
        notes: crate::finding::Finding::messages(&fs.notes),
    }
}
