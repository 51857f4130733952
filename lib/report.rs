//! The JSON documents loopkit prints (`--json`): one place that defines the wire format, built
//! from library results. Every document carries `"loopkit_json": 1`. See `docs/JSON.md`.

use crate::detect::Outcome as Detection;
use crate::image::{Content, Opened};
use crate::verify::{Outcome as VerifyOutcome, Problem};
use serde::{Deserialize, Serialize};

pub mod batch;
pub mod html;

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

/// Another parameter set that also matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alternative {
    /// Its encryption parameters.
    pub encryption: Encryption,
    /// Its file system type.
    pub filesystem_type: String,
}

/// How detection went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionReport {
    /// Parameter combinations decrypted and checked.
    pub combinations_tried: usize,
    /// Distinct keys derived.
    pub keys_tried: usize,
    /// Payload offsets considered.
    pub offsets_tried: Vec<u64>,
    /// Bytes scanned for signatures.
    pub scanned_bytes: u64,
    /// Milliseconds spent.
    pub elapsed_ms: u64,
    /// Lower-ranked matches.
    pub alternatives: Vec<Alternative>,
}

/// `loopkit inspect --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inspect {
    /// Always [`JSON_VERSION`].
    pub loopkit_json: u32,
    /// `inspect` or `verify`.
    pub command: String,
    /// The image path as given.
    pub image: String,
    /// Image size.
    pub size_bytes: u64,
    /// Bytes allocated on disk (sparse files use fewer).
    pub allocated_bytes: Option<u64>,
    /// `plain`, `legacy-encrypted`, `luks`, `needs-secret`, `unknown`.
    pub kind: String,
    /// A passphrase or key file is needed to go further.
    pub needs_secret: bool,
    /// Encryption, or null for an unencrypted image.
    pub encryption: Option<Encryption>,
    /// The file system, or null.
    pub filesystem: Option<Filesystem>,
    /// The `cryptsetup open` command that maps the same data, or null.
    pub cryptsetup: Option<String>,
    /// Caveats for that command.
    pub cryptsetup_notes: Vec<String>,
    /// Detection statistics (legacy images).
    pub detection: Option<DetectionReport>,
    /// dvdisaster error-correction data, or null (`verify` fills in the check results).
    pub ecc: Option<Ecc>,
    /// LUKS header details (LUKS images), or null.
    pub luks: Option<LuksDetails>,
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

fn ecc_of(e: &crate::formats::dvdisaster::Ecc) -> Ecc {
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

fn ecc_checked(e: &mut Ecc, r: &crate::formats::dvdisaster::verify::Report) {
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

/// A LUKS keyslot in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuksKeyslot {
    /// Slot number.
    pub id: u32,
    /// KDF summary, e.g. `argon2id (time 4, memory 1048576 KiB, 4 cpus)`.
    pub kdf: String,
    /// LUKS2 priority (null = normal).
    pub priority: Option<u32>,
}

/// What a LUKS header says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuksDetails {
    /// 1 or 2.
    pub version: u16,
    /// Header UUID.
    pub uuid: String,
    /// LUKS2 label.
    pub label: Option<String>,
    /// Payload sector size.
    pub sector_size: u32,
    /// Payload length if fixed (null: to the end of the device).
    pub payload_size_bytes: Option<u64>,
    /// Active keyslots.
    pub keyslots: Vec<LuksKeyslot>,
    /// LUKS2 token types.
    pub tokens: Vec<String>,
    /// The keyslot the passphrase opened (null when locked).
    pub opened_keyslot: Option<u32>,
    /// The detached header file used, if any.
    pub detached_header: Option<String>,
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

/// `loopkit verify --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// Everything `inspect` says.
    #[serde(flatten)]
    pub inspect: Inspect,
    /// The payload digest.
    pub payload: Option<Payload>,
    /// No error-severity problems.
    pub ok: bool,
    /// Problems found.
    pub problems: Vec<Problem>,
    /// The file-level check (null when the file system is not ext2/3/4 or ISO9660).
    pub files: Option<Files>,
}

/// `verify --json` → `files`: what walking the file system found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    /// Entries in the file system (an empty mkfs `lost+found` is not counted).
    pub count: u64,
    /// Content bytes of regular files (hard links counted once).
    pub bytes: u64,
    /// Structural problems found while walking (error severity).
    pub problems: u64,
    /// Paths in the reference (`--manifest`/`--against`) but not in the image.
    pub missing: Vec<String>,
    /// Paths in the image but not in the reference.
    pub extra: Vec<String>,
    /// Paths in both whose type, size, contents, target, mode, owner or mtime differ.
    pub changed: Vec<String>,
}

/// `loopkit manifest -o FILE --json`: what was written (without `-o`, the manifest itself is
/// the document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRun {
    /// Always [`JSON_VERSION`].
    pub loopkit_json: u32,
    /// `manifest`.
    pub command: String,
    /// The image path as given.
    pub image: String,
    /// Where the manifest was written.
    pub output: String,
    /// blkid type of the file system read.
    pub filesystem_type: String,
    /// Entries listed.
    pub entries: u64,
    /// Content bytes of regular files.
    pub bytes: u64,
    /// No error-severity problems.
    pub ok: bool,
    /// Problems met while reading the file system.
    pub problems: Vec<Problem>,
}

/// `loopkit extract --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extract {
    /// Always [`JSON_VERSION`].
    pub loopkit_json: u32,
    /// `extract`.
    pub command: String,
    /// The image path as given.
    pub image: String,
    /// The destination directory.
    pub dest: String,
    /// `files`, `dirs`, `symlinks`, `hardlinks`, `bytes`, `skipped`.
    #[serde(flatten)]
    pub counts: crate::extract::Counts,
    /// No error-severity problems.
    pub ok: bool,
    /// Problems met.
    pub problems: Vec<Problem>,
}

/// `loopkit strip-ecc --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripEcc {
    /// Always [`JSON_VERSION`].
    pub loopkit_json: u32,
    /// `strip-ecc`.
    pub command: String,
    /// The augmented image.
    pub image: String,
    /// The file written.
    pub output: String,
    /// The error-correction data that was removed.
    pub ecc: Ecc,
    /// Bytes written (the original image size).
    pub bytes: u64,
    /// MD5 of the bytes written, hex.
    pub md5: String,
    /// How the copy was confirmed: `md5` (matches the MD5 recorded at creation, RS02), `crcs`
    /// (every sector matches its CRC, RS03), or null (damaged data written with --allow-damaged).
    pub check: Option<String>,
    /// Data sectors that were dead-sector markers.
    pub missing_sectors: Vec<u64>,
    /// Data sectors failing their CRC.
    pub bad_sectors: Vec<u64>,
    /// Data sectors whose CRC is lost.
    pub unchecked_sectors: u64,
    /// The output is the confirmed original.
    pub ok: bool,
}

/// Build the `strip-ecc` document.
pub fn strip_ecc(
    image: &std::path::Path,
    ecc: &crate::formats::dvdisaster::Ecc,
    o: &crate::formats::dvdisaster::strip::Outcome,
) -> StripEcc {
    use crate::formats::dvdisaster::strip::Check;
    StripEcc {
        loopkit_json: JSON_VERSION,
        command: "strip-ecc".into(),
        image: image.display().to_string(),
        output: o.path.display().to_string(),
        ecc: ecc_of(ecc),
        bytes: o.bytes,
        md5: hex(&o.md5),
        check: o.check.map(|c| match c {
            Check::Md5 => "md5".to_string(),
            Check::Crcs => "crcs".to_string(),
        }),
        missing_sectors: o.missing_sectors.clone(),
        bad_sectors: o.bad_sectors.clone(),
        unchecked_sectors: o.unchecked_sectors,
        ok: o.check.is_some(),
    }
}

/// `loopkit repair --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repair {
    /// Always [`JSON_VERSION`].
    pub loopkit_json: u32,
    /// `repair`.
    pub command: String,
    /// The damaged image (not modified).
    pub image: String,
    /// The repaired image written.
    pub output: String,
    /// The repaired `.ecc` file written (RS03 `.ecc` with --ecc-output), or null.
    pub ecc_output: Option<String>,
    /// The error-correction data used, with the check results of the repaired image.
    pub ecc: Ecc,
    /// Image sectors rewritten with corrected content.
    pub repaired_sectors: Vec<u64>,
    /// `.ecc`-file sectors corrected (RS03 `.ecc`).
    pub repaired_ecc_file_sectors: Vec<u64>,
    /// Sectors in ECC blocks with more damage than the code can correct.
    pub unrepaired_sectors: Vec<u64>,
    /// `.ecc`-file sectors that could not be corrected.
    pub unrepaired_ecc_file_sectors: Vec<u64>,
    /// Dead-sector markers appended to a truncated image before repairing.
    pub expanded_sectors: u64,
    /// Bytes removed from the end of an over-long image.
    pub truncated_bytes: u64,
    /// The repaired image verifies clean against its error-correction data.
    pub ok: bool,
    /// What the check of the repaired image still finds.
    pub problems: Vec<Problem>,
}

/// Build the `repair` document from the repair and the check of its output.
pub fn repair(
    image: &std::path::Path,
    ecc: &crate::formats::dvdisaster::Ecc,
    o: &crate::formats::dvdisaster::repair::Outcome,
    after: &crate::formats::dvdisaster::verify::Report,
) -> Repair {
    let mut e = ecc_of(ecc);
    ecc_checked(&mut e, after);
    Repair {
        loopkit_json: JSON_VERSION,
        command: "repair".into(),
        image: image.display().to_string(),
        output: o.path.display().to_string(),
        ecc_output: o.ecc_path.as_ref().map(|p| p.display().to_string()),
        ecc: e,
        repaired_sectors: o.repaired.clone(),
        repaired_ecc_file_sectors: o.repaired_ecc_file.clone(),
        unrepaired_sectors: o.unrepaired.clone(),
        unrepaired_ecc_file_sectors: o.unrepaired_ecc_file.clone(),
        expanded_sectors: o.expanded_sectors,
        truncated_bytes: o.truncated_bytes,
        ok: after.ok(),
        problems: after.problems.clone(),
    }
}

/// Lower-case hex.
pub use crate::bytes::hex;

fn encryption_of(p: &crate::formats::legacy::Params, equivalents: &[crate::crypto::kdf::Derivation]) -> Encryption {
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

fn filesystem_of(fs: &crate::fs::FsInfo) -> Filesystem {
    Filesystem {
        kind: fs.kind.to_string(),
        label: fs.label.clone(),
        uuid: fs.uuid.clone(),
        size_bytes: fs.size_bytes,
        block_size: fs.block_size,
        notes: fs.notes.clone(),
    }
}

fn detection_of(o: &Detection) -> DetectionReport {
    DetectionReport {
        combinations_tried: o.combinations_tried,
        keys_tried: o.keys_tried,
        offsets_tried: o.offsets_tried.clone(),
        scanned_bytes: o.scanned_bytes,
        elapsed_ms: o.elapsed.as_millis() as u64,
        alternatives: o
            .alternatives
            .iter()
            .map(|a| Alternative { encryption: encryption_of(&a.params, &[]), filesystem_type: a.fs.kind.to_string() })
            .collect(),
    }
}

/// Build the `inspect` document. `pass_len` (the passphrase length, never its bytes) decides
/// whether cryptsetup's own hashing can reproduce a raw key.
pub fn inspect(opened: &Opened, pass_len: Option<usize>) -> Inspect {
    let image = opened.path.display().to_string();
    let mut r = Inspect {
        loopkit_json: JSON_VERSION,
        command: "inspect".into(),
        image: image.clone(),
        size_bytes: crate::source::ByteSource::size_bytes(&*opened.file),
        allocated_bytes: opened.allocated_bytes,
        kind: String::new(),
        needs_secret: false,
        encryption: None,
        filesystem: opened.filesystem().map(filesystem_of),
        cryptsetup: None,
        cryptsetup_notes: Vec::new(),
        detection: None,
        ecc: opened.ecc.as_ref().map(ecc_of),
        luks: None,
        notes: opened.notes.clone(),
    };
    match &opened.content {
        Content::Plain { offset_bytes, .. } => {
            r.kind = "plain".into();
            if *offset_bytes != 0 {
                r.notes
                    .push(format!("the file system starts at byte {offset_bytes} (losetup --offset {offset_bytes})"));
            }
        }
        Content::UnknownPlain { .. } => {
            r.kind = "unknown".into();
            r.notes.push("no known file system or header was recognised".into());
        }
        Content::Legacy(o) => {
            r.kind = "legacy-encrypted".into();
            if let Some(f) = &o.found {
                r.encryption = Some(encryption_of(&f.params, &f.equivalent_derivations));
                let kf = f.key_file.as_ref().map(|(p, gpg)| (p.to_str().unwrap_or("KEYFILE"), *gpg));
                let cs = f.params.cryptsetup_with_key_file(&image, pass_len, kf);
                r.cryptsetup = cs.command;
                r.cryptsetup_notes = cs.notes;
                if f.fs.is_none() {
                    r.notes.push("the parameters were given explicitly and no file system confirms them".into());
                }
                if f.params.mode != crate::formats::legacy::Mode::Lmk
                    && f.params.mode != crate::formats::legacy::Mode::Ecb
                {
                    r.notes.push(
                        "cryptoloop (aes-cbc-plain) and loop-AES single-key (aes-cbc-plain64) give identical bytes \
                         below 2 TiB; the scheme shown is the one whose tools used this key derivation"
                            .into(),
                    );
                }
                if !o.alternatives.is_empty() {
                    r.notes.push(format!(
                        "{} other parameter set(s) also produced a file system; the most likely one is shown",
                        o.alternatives.len()
                    ));
                }
            }
            r.detection = Some(detection_of(o));
        }
        Content::Luks(h) => {
            luks_report(&mut r, h, &image, None, None);
            r.needs_secret = true;
        }
        Content::LuksUnlocked(u) => {
            let hdr = u.detached_header.as_ref().map(|p| p.display().to_string());
            luks_report(&mut r, &u.luks.header, &image, Some(u.keyslot), hdr);
        }
        Content::NeedsSecret { looks_random } => {
            r.kind = "needs-secret".into();
            r.needs_secret = true;
            r.notes.push(match looks_random {
                Some(true) => "no file system or header found and the data looks random: probably encrypted \
                               (cryptoloop or loop-AES); give the passphrase to find the parameters"
                    .into(),
                Some(false) => "no file system or header found, and the data does not look encrypted".into(),
                None => "no file system or header found (the image is mostly empty)".into(),
            });
        }
    }
    r
}

fn luks_report(
    r: &mut Inspect,
    h: &crate::formats::luks::Header,
    image: &str,
    opened: Option<u32>,
    detached_header: Option<String>,
) {
    use crate::formats::legacy::shell_quote;
    r.kind = "luks".into();
    r.encryption = Some(Encryption {
        scheme: format!("luks{}", h.version),
        cipher: h.cipher.clone(),
        key_bits: h.key_bits,
        key_derivation: None,
        multi_key: None,
        offset_bytes: h.payload_offset_bytes,
        iv_offset_sectors: h.iv_offset_sectors,
        equivalent_derivations: Vec::new(),
        pseed: false,
        itercountk: None,
        size_limit_bytes: h.payload_size_bytes,
    });
    let header = detached_header.as_deref().map(|p| format!(" --header {}", shell_quote(p))).unwrap_or_default();
    r.cryptsetup = Some(format!("cryptsetup open --readonly{header} {} luks", shell_quote(image)));
    r.notes.push(format!("LUKS{} UUID {}, {} keyslot(s)", h.version, h.uuid, h.keyslots));
    if let Some(k) = opened {
        r.notes.push(format!("keyslot {k} opened with the passphrase"));
    }
    r.luks = Some(LuksDetails {
        version: h.version,
        uuid: h.uuid.clone(),
        label: h.label.clone(),
        sector_size: h.sector_size,
        payload_size_bytes: h.payload_size_bytes,
        keyslots: h
            .keyslot_details
            .iter()
            .map(|k| LuksKeyslot { id: k.id, kdf: k.kdf.clone(), priority: k.priority })
            .collect(),
        tokens: h.token_types.clone(),
        opened_keyslot: opened,
        detached_header,
    });
}

/// Build the `verify` document.
pub fn verify(opened: &Opened, pass_len: Option<usize>, outcome: &VerifyOutcome) -> Verify {
    let mut inspect = inspect(opened, pass_len);
    inspect.command = "verify".into();
    if let (Some(e), Some(r)) = (inspect.ecc.as_mut(), outcome.ecc.as_ref()) {
        ecc_checked(e, r);
    }
    Verify {
        inspect,
        payload: outcome.digest.as_ref().map(|d| Payload {
            offset_bytes: d.offset_bytes,
            size_bytes: d.size_bytes,
            sha256: hex(&d.sha256),
            hole_bytes: d.hole_bytes,
            unreadable_bytes: d.unreadable_bytes,
            unreadable_ranges: d
                .unreadable
                .iter()
                .map(|r| ByteRange { offset_bytes: r.start, size_bytes: r.end - r.start })
                .collect(),
        }),
        ok: outcome.ok(),
        problems: outcome.problems.clone(),
        files: outcome.files.as_ref().map(|f| {
            let d = f.diff.clone().unwrap_or_default();
            Files {
                count: f.count,
                bytes: f.bytes,
                problems: f.problems,
                missing: d.missing,
                extra: d.extra,
                changed: d.changed.into_iter().map(|c| c.path).collect(),
            }
        }),
    }
}

/// The `--mode plain` part of a migrate document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainMapping {
    /// `cryptsetup open` reading the passphrase at the prompt (null when cryptsetup's hashing
    /// cannot reproduce the key).
    pub passphrase_command: Option<String>,
    /// `cryptsetup open` reading the key file.
    pub key_file_command: Option<String>,
    /// An `/etc/crypttab` line (null where no crypttab type fits).
    pub crypttab: Option<String>,
    /// `raw-key`, `loop-aes-key-file` or null.
    pub key_file_kind: Option<String>,
    /// The key file written by `--key-out`, if any.
    pub key_file: Option<String>,
}

/// `loopkit migrate --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migrate {
    /// Always [`JSON_VERSION`].
    pub loopkit_json: u32,
    /// `migrate`.
    pub command: String,
    /// `plain`, `detached-header`, `reencrypt`.
    pub mode: String,
    /// The source image as given.
    pub image: String,
    /// The file written (image, header or key file), or null.
    pub output: Option<String>,
    /// `luks2`, `luks1` or null.
    pub format: Option<String>,
    /// The new header's UUID.
    pub uuid: Option<String>,
    /// What the source is.
    pub source: crate::migrate::plan::SourceInfo,
    /// SHA-256 of the source plaintext (null in plain mode).
    pub source_sha256: Option<String>,
    /// SHA-256 of the plaintext read back through the new header.
    pub migrated_sha256: Option<String>,
    /// Whether the two are equal (null when not computed).
    pub sha256_match: Option<bool>,
    /// The new keyslot's KDF.
    pub kdf: Option<String>,
    /// Payload bytes an earlier, interrupted run had already written.
    pub resumed_from_bytes: Option<u64>,
    /// The command that opens the result.
    pub cryptsetup: Option<String>,
    /// Plain-mode mapping (null for the other modes).
    pub plain: Option<PlainMapping>,
    /// Remarks.
    pub notes: Vec<String>,
}

/// Build the `migrate` document.
pub fn migrate(
    image: &str,
    o: &crate::migrate::Outcome,
    plain: Option<&crate::migrate::plan::PlainMapping>,
) -> Migrate {
    use crate::migrate::plan::KeyFileKind;
    let mut notes = o.notes.clone();
    if let Some(p) = plain {
        notes.extend(p.notes.iter().cloned());
    }
    Migrate {
        loopkit_json: JSON_VERSION,
        command: "migrate".into(),
        mode: o.mode.into(),
        image: image.into(),
        output: o.output.as_ref().map(|p| p.display().to_string()),
        format: o.format.map(|f| f.name().to_string()),
        uuid: o.uuid.clone(),
        source: o.source.clone(),
        source_sha256: o.source_sha256.map(|h| hex(&h)),
        migrated_sha256: o.migrated_sha256.map(|h| hex(&h)),
        sha256_match: match (o.source_sha256, o.migrated_sha256) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        },
        kdf: o.kdf.clone(),
        resumed_from_bytes: o.resumed_from_bytes,
        cryptsetup: o.cryptsetup.clone(),
        plain: plain.map(|p| PlainMapping {
            passphrase_command: p.passphrase_command.clone(),
            key_file_command: p.key_file_command.clone(),
            crypttab: p.crypttab.clone(),
            key_file_kind: match p.key_file_kind {
                KeyFileKind::RawKey => Some("raw-key".into()),
                KeyFileKind::LoopAesKeyFile => Some("loop-aes-key-file".into()),
                KeyFileKind::None => None,
            },
            key_file: if o.mode == "plain" { o.output.as_ref().map(|p| p.display().to_string()) } else { None },
        }),
        notes,
    }
}

/// What an image file lives on (`loopkit extents`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backing {
    /// File-system type (`ext4`, `xfs`, `btrfs`…).
    pub filesystem: String,
    /// `statfs` magic, hex.
    pub fs_magic: String,
    /// File-system block size.
    pub fs_block_size: u64,
    /// `major:minor` of the device FIEMAP offsets refer to.
    pub device_number: String,
    /// Its node (`/dev/loop0`), when found.
    pub device: Option<String>,
    /// Its size.
    pub device_bytes: Option<u64>,
    /// Logical block size (raw I/O alignment).
    pub logical_block_size: u32,
    /// Physical block size.
    pub physical_block_size: u32,
    /// Mount point.
    pub mount_point: Option<String>,
    /// Super-block mount options.
    pub mount_options: Option<String>,
}

/// One extent in `loopkit extents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtentRow {
    /// Byte offset in the file.
    pub logical: u64,
    /// Byte offset on the device.
    pub physical: u64,
    /// Length in bytes.
    pub length: u64,
    /// FIEMAP flag names (filefrag's spelling).
    pub flags: Vec<String>,
    /// The raw FIEMAP flag bits.
    pub flags_raw: u32,
    /// `mapped`, `zero` or `via-file`.
    pub class: String,
    /// Why it is not mapped.
    pub reason: Option<String>,
}

/// A refusal or finding with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// Stable code.
    pub code: String,
    /// For people.
    pub message: String,
}

/// Totals of `loopkit extents`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtentSummary {
    /// Extents.
    pub extents: u64,
    /// Bytes in mapped extents.
    pub mapped_bytes: u64,
    /// Bytes in unwritten extents.
    pub unwritten_bytes: u64,
    /// Bytes in via-file extents.
    pub via_file_bytes: u64,
    /// Holes.
    pub holes: u64,
    /// Bytes in holes.
    pub hole_bytes: u64,
    /// Physical discontinuities between consecutive extents.
    pub fragments: u64,
    /// Largest extent.
    pub largest_extent_bytes: u64,
}

/// An extent whose raw-device and file-system readings differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtentMismatch {
    /// Byte offset in the file.
    pub logical: u64,
    /// Byte offset on the device.
    pub physical: u64,
    /// Length compared.
    pub length: u64,
    /// SHA-256 through the file system.
    pub file_sha256: String,
    /// SHA-256 of the device bytes.
    pub device_sha256: String,
    /// First differing byte (file offset).
    pub first_difference: u64,
}

/// `--check` results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtentCheck {
    /// Whether every mapped extent read the same both ways.
    pub ok: bool,
    /// Mapped extents compared.
    pub extents_checked: u64,
    /// Bytes compared.
    pub bytes_checked: u64,
    /// The extents that differ.
    pub mismatches: Vec<ExtentMismatch>,
}

/// The `loopkit extents` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extents {
    /// Format version.
    pub loopkit_json: u32,
    /// `extents`.
    pub command: String,
    /// The image path.
    pub image: String,
    /// Its size.
    pub size_bytes: u64,
    /// Bytes allocated on disk.
    pub allocated_bytes: u64,
    /// What it lives on.
    pub backing: Backing,
    /// `remap-safe` or `not-remap-safe`.
    pub verdict: String,
    /// Whether remapping is safe.
    pub remap_safe: bool,
    /// Why not.
    pub refusals: Vec<Finding>,
    /// Other facts.
    pub notes: Vec<String>,
    /// Totals.
    pub summary: ExtentSummary,
    /// Every extent.
    pub extents: Vec<ExtentRow>,
    /// The extent verification (`--check`), or null.
    pub check: Option<ExtentCheck>,
}

/// Build the `loopkit extents` document.
pub fn extents(s: &crate::remap::survey::Survey) -> Extents {
    let b = &s.preflight.backing;
    let safe = s.remap_safe();
    Extents {
        loopkit_json: JSON_VERSION,
        command: "extents".into(),
        image: s.path.display().to_string(),
        size_bytes: s.size,
        allocated_bytes: s.allocated_bytes,
        backing: Backing {
            filesystem: b.fs_name.clone(),
            fs_magic: format!("{:#x}", b.fs_magic),
            fs_block_size: b.fs_block,
            device_number: format!("{}:{}", b.dev.0, b.dev.1),
            device: b.device.as_ref().map(|p| p.display().to_string()),
            device_bytes: b.device_bytes,
            logical_block_size: b.logical_block,
            physical_block_size: b.physical_block,
            mount_point: b.mount_point.clone(),
            mount_options: b.mount_options.clone(),
        },
        verdict: if safe { "remap-safe" } else { "not-remap-safe" }.into(),
        remap_safe: safe,
        refusals: s
            .preflight
            .refusals
            .iter()
            .map(|r| Finding { code: r.code.into(), message: r.message.clone() })
            .collect(),
        notes: s.preflight.notes.clone(),
        summary: ExtentSummary {
            extents: s.summary.extents,
            mapped_bytes: s.summary.mapped_bytes,
            unwritten_bytes: s.summary.unwritten_bytes,
            via_file_bytes: s.summary.via_file_bytes,
            holes: s.summary.holes,
            hole_bytes: s.summary.hole_bytes,
            fragments: s.summary.fragments,
            largest_extent_bytes: s.summary.largest_extent_bytes,
        },
        extents: s
            .rows
            .iter()
            .map(|r| ExtentRow {
                logical: r.extent.logical,
                physical: r.extent.physical,
                length: r.extent.length,
                flags: r.extent.flags.names(),
                flags_raw: r.extent.flags.bits(),
                class: r.class.name().into(),
                reason: (!r.reason.is_empty()).then(|| r.reason.to_string()),
            })
            .collect(),
        check: s.check.as_ref().map(|c| ExtentCheck {
            ok: c.mismatches.is_empty(),
            extents_checked: c.extents_checked,
            bytes_checked: c.bytes_checked,
            mismatches: c
                .mismatches
                .iter()
                .map(|m| ExtentMismatch {
                    logical: m.extent.logical,
                    physical: m.extent.physical,
                    length: m.extent.length,
                    file_sha256: hex(&m.file_sha256),
                    device_sha256: hex(&m.device_sha256),
                    first_difference: m.first_difference,
                })
                .collect(),
        }),
    }
}
