//! `extract --salvage`: find the damage (the dvdisaster check), repair what the ECC data can in
//! a temporary copy of the image beside the destination (the original is only read), point the
//! opened image at that copy, and say which bytes of which files are still lost.

use super::{BadRange, Damage, MEDIUM_SECTOR_BYTES, Status};
use crate::formats::dvdisaster::{repair, verify as ecc_verify};
use crate::image::Opened;
use crate::progress::Run;
use crate::source::{ByteSource, FileSource, Window};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What [`prepare`] found and did.
pub struct Prepared {
    /// What the damage still hits after the repair (None: nothing is damaged).
    pub damage: Option<Damage>,
    /// Whether the image was repaired first.
    pub repaired_first: bool,
    /// The repaired copy (removed when this is dropped).
    repaired: Option<PathBuf>,
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(p) = &self.repaired {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Check `opened`'s ECC data; when some damaged sectors are repairable, repair a copy into a
/// temporary file beside `dest` and read from it from then on (`opened.file` / `opened.data`
/// are replaced). Without ECC data nothing is known in advance (read errors are found while
/// extracting).
///
/// # Errors
/// `Io`, `Interrupted`, and what [`repair::repair`] refuses.
pub fn prepare(opened: &mut Opened, dest: &Path, run: &mut Run<'_>) -> crate::Result<Prepared> {
    let Some(ecc) = opened.ecc.clone() else {
        return Ok(Prepared { damage: None, repaired_first: false, repaired: None });
    };
    let report = ecc_verify::verify(&ecc, &*opened.file, &ecc_verify::Options::default(), run)?;
    let bad = super::from_ecc(&ecc, &report);
    if !bad.iter().any(|b| b.status == Status::Repairable) {
        let damage = super::assess(opened, &bad, run.interrupt)?;
        return Ok(Prepared { damage, repaired_first: false, repaired: None });
    }
    let name = dest.file_name().map_or_else(|| "dest".into(), |n| n.to_string_lossy().into_owned());
    let out = crate::output::parent_dir(dest).join(format!(".{name}.loopkit-repaired-{}.img", std::process::id()));
    let mut prepared = Prepared { damage: None, repaired_first: true, repaired: None };
    let done = repair::repair(&ecc, &opened.path, &out, &repair::Options::default(), run)?;
    prepared.repaired = Some(out.clone());
    let file: Arc<dyn ByteSource> = Arc::new(FileSource::open(&out)?);
    let data_len = opened.data.size_bytes();
    opened.data =
        if ecc.is_augmented() { Arc::new(Window::new(file.clone(), 0, Some(data_len))) } else { file.clone() };
    opened.file = file;
    let lost: Vec<BadRange> = done
        .unrepaired
        .iter()
        .map(|&s| BadRange { range: s * MEDIUM_SECTOR_BYTES..(s + 1) * MEDIUM_SECTOR_BYTES, status: Status::Lost })
        .collect();
    prepared.damage = super::assess(opened, &lost, run.interrupt)?;
    Ok(prepared)
}
