//! The `strip-ecc` and `repair` documents (dvdisaster outputs).

use super::{Ecc, JSON_VERSION, ecc_checked, ecc_of, hex};
use crate::verify::Problem;
use serde::{Deserialize, Serialize};

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

/// `loopkit protect --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protect {
    /// Always [`JSON_VERSION`].
    pub loopkit_json: u32,
    /// `protect`.
    pub command: String,
    /// The image protected (only read).
    pub image: String,
    /// The file written: the augmented copy of the image, or the `.ecc` file.
    pub output: String,
    /// `RS01`, `RS02`, `RS03`.
    pub method: String,
    /// `augmented` or `ecc-file`.
    pub placement: String,
    /// Reed–Solomon roots (parity bytes per 255-byte codeword).
    pub roots: usize,
    /// Redundancy in percent (`roots / (255 − roots)`), as dvdisaster prints it.
    pub redundancy_percent: f64,
    /// Medium capacity in sectors the augmented image was sized for (null: `.ecc` files, and
    /// RS02 with roots given and no medium).
    pub medium_sectors: Option<u64>,
    /// Sectors per layer (RS03: the layer size; RS01/RS02: ECC blocks).
    pub sectors_per_layer: u64,
    /// Sectors of the image.
    pub data_sectors: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The error-correction data as read back from the written file (check fields null).
    pub ecc: Ecc,
    /// The written file read back from the device as written, before it was renamed into place.
    pub ok: bool,
}

/// Build the `protect` document.
pub fn protect(image: &std::path::Path, o: &crate::formats::dvdisaster::create::Outcome) -> Protect {
    // The check fields stay null: the output was checked by reading back every byte written
    // and comparing it with what was computed, not by a verification pass over the image.
    let ecc = ecc_of(&o.ecc);
    Protect {
        loopkit_json: JSON_VERSION,
        command: "protect".into(),
        image: image.display().to_string(),
        output: o.path.display().to_string(),
        method: o.method.name().into(),
        placement: if o.augmented { "augmented".into() } else { "ecc-file".into() },
        roots: o.nroots,
        redundancy_percent: (o.nroots as f64 * 1000.0 / (255 - o.nroots) as f64).round() / 10.0,
        medium_sectors: o.medium_sectors,
        sectors_per_layer: o.sectors_per_layer,
        data_sectors: o.data_sectors,
        bytes: o.bytes,
        ecc,
        // An output that does not read back as written is never returned (it is an error).
        ok: true,
    }
}
