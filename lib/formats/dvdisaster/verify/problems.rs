//! Turning what a verification found into `ecc.*` problems.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Turn the findings into `ecc.*` problems.
pub(super) fn problems(ecc: &Ecc, r: &mut Report) {
    let mut p = Vec::new();
    size_problems(ecc, r, &mut p);
    sector_problems(r, &mut p);
    checksum_problems(ecc, r, &mut p);
    header_copy_problems(ecc, r, &mut p);
    section_problems(r, &mut p);
    r.problems = p;
}

/// The header rebuilt from a CRC block, and image or `.ecc` file sizes that differ from what the
/// header implies.
fn size_problems(ecc: &Ecc, r: &Report, p: &mut Vec<Problem>) {
    let h = &ecc.header;
    if let Some(at) = ecc.rebuilt_from {
        p.push(Problem::error(
            "ecc.header-damaged",
            format!(
                "the {} header is damaged; its parameters were rebuilt from the CRC block at sector {at}",
                h.method
            ),
        ));
    }
    if r.image_sectors < r.expected_sectors {
        p.push(Problem::error(
            "ecc.truncated",
            format!(
                "the image has {} sectors, the error correction data expects {} ({} missing at the end)",
                r.image_sectors,
                r.expected_sectors,
                r.expected_sectors - r.image_sectors
            ),
        ));
    } else if r.image_sectors > r.expected_sectors {
        p.push(Problem::warning(
            "ecc.excess-sectors",
            format!(
                "the image has {} sectors, {} more than the error correction data expects{}",
                r.image_sectors,
                r.image_sectors - r.expected_sectors,
                if r.image_sectors - r.expected_sectors <= 2 {
                    " (typical of a TAO/DAO mismatch when reading a disc)"
                } else {
                    ""
                }
            ),
        ));
    }
    if let Some((want, have)) = r.ecc_file_sectors
        && want != have
    {
        p.push(Problem::error(
            "ecc.ecc-file-size",
            format!("the .ecc file has {have} sectors, its header implies {want}"),
        ));
    }
}

/// Sectors missing or failing their CRC (image and `.ecc` file), and data sectors no intact CRC
/// covers.
fn sector_problems(r: &Report, p: &mut Vec<Problem>) {
    let lists: [(&str, &[u64], &str, &str); 3] = [
        ("ecc.missing-sector", &r.missing_sectors, "sector missing", "sectors missing"),
        (
            "ecc.missing-ecc-file-sector",
            &r.missing_ecc_file_sectors,
            "sector of the .ecc file missing",
            "sectors of the .ecc file missing",
        ),
        ("ecc.bad-sector", &r.bad_sectors, "sector fails its CRC", "sectors fail their CRC"),
    ];
    for (code, list, one, many) in lists {
        if !list.is_empty() {
            let why =
                if code == "ecc.missing-sector" { " (dead-sector markers or past the end of the image)" } else { "" };
            p.push(Problem::error(
                code,
                format!("{}{why}: {}", plural(list.len() as u64, one, many), format_ranges(list)),
            ));
        }
    }
    if r.unchecked_sectors > 0 {
        p.push(Problem::warning(
            "ecc.unchecked-sectors",
            format!(
                "{} could not be checked: the CRCs that cover them are damaged or missing",
                plural(r.unchecked_sectors, "data sector", "data sectors")
            ),
        ));
    }
}

/// The whole-image MD5 and the `.ecc` file's fingerprint sector.
fn checksum_problems(ecc: &Ecc, r: &Report, p: &mut Vec<Problem>) {
    let h = &ecc.header;
    if r.md5_ok == Some(false) {
        p.push(Problem::error(
            "ecc.md5-mismatch",
            format!(
                "the image MD5 {} differs from the one recorded at creation ({})",
                crate::bytes::hex(&r.md5),
                crate::bytes::hex(&h.medium_sum)
            ),
        ));
    }
    if r.fingerprint_ok == Some(false) {
        p.push(Problem::error(
            "ecc.fingerprint-mismatch",
            format!(
                "sector {} of the image does not match the fingerprint in the .ecc file: image and .ecc file do not \
                 belong together (or that sector is damaged)",
                h.fp_sector
            ),
        ));
    }
}

/// Header copies (RS02, RS03) damaged, missing, or different from the header in use.
fn header_copy_problems(ecc: &Ecc, r: &Report, p: &mut Vec<Problem>) {
    let bad_copies = r.header_copies_damaged.len() + r.header_copies_missing.len();
    if bad_copies > 0 && ecc.rebuilt_from.is_none() {
        let mut all: Vec<u64> = r.header_copies_damaged.iter().chain(&r.header_copies_missing).copied().collect();
        all.sort_unstable();
        p.push(Problem::error(
            "ecc.header-copy",
            format!(
                "{} of {} header copies damaged or missing (at {}); {} intact",
                bad_copies,
                r.header_copies_total,
                format_ranges(&all),
                r.header_copies_ok
            ),
        ));
    }
    if !r.header_copies_differ.is_empty() {
        p.push(Problem::warning(
            "ecc.header-copy-differs",
            format!(
                "header copies at {} are valid but differ from the header in use",
                format_ranges(&r.header_copies_differ)
            ),
        ));
    }
}

/// The CRC and error-correction sections, and the Reed-Solomon syndrome test.
fn section_problems(r: &Report, p: &mut Vec<Problem>) {
    if !r.crc_section_ok {
        let why = match r.method {
            Method::Rs01 => {
                "its checksum (shared with the parity section) does not match or the file is truncated".to_string()
            }
            Method::Rs02 => match r.crc_sum_ok {
                Some(false) => "its MD5 does not match crcSum".into(),
                _ => "sectors of it are missing".into(),
            },
            Method::Rs03 => {
                if r.crc_blocks_bad.is_empty() {
                    "sectors of it are missing".into()
                } else {
                    format!("CRC blocks fail their signature check at {}", format_ranges(&r.crc_blocks_bad))
                }
            }
        };
        p.push(Problem::error("ecc.crc-section", format!("the CRC section is damaged: {why}")));
    }
    if !r.ecc_section_ok {
        let why = match r.method {
            Method::Rs03 => {
                "sectors of it are missing, or ECC blocks fail the syndrome test where no data damage explains it"
                    .to_string()
            }
            _ => match r.ecc_sum_ok {
                Some(false) => "its MD5 does not match eccSum".into(),
                Some(true) => "the file size does not match its header".into(),
                None => "sectors of it are missing".into(),
            },
        };
        p.push(Problem::error("ecc.ecc-section", format!("the error correction section is damaged: {why}")));
    }
    if let (Some(bad), Some(blocks), Some(cw)) = (r.ecc_blocks_bad, r.ecc_blocks, r.codewords_bad)
        && bad > 0
    {
        p.push(Problem::error(
            "ecc.syndrome",
            format!("Reed-Solomon block test: {bad} of {blocks} ECC blocks fail ({cw} codewords)"),
        ));
    }
}
