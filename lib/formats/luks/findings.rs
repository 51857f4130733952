//! What a LUKS2 header says about itself as findings (`docs/JSON.md`): a damaged or missing
//! header copy (`luks.header-copy`), a re-encryption left in progress (`luks.reencryption`: a
//! warning when its segments can be read exactly, an error naming why not otherwise), and
//! mandatory requirements loopkit does not know (`luks.requirements`).

use super::header::Luks2;
use crate::finding::Finding;

/// Requirement names (without a `-vN` suffix) that mark an unfinished re-encryption.
const REENCRYPT: &str = "online-reencrypt";

/// The findings of a LUKS2 header read by [`super::header::read_luks2`].
pub fn of_luks2(l: &Luks2) -> Vec<Finding> {
    let mut out: Vec<Finding> = l.notes.clone();
    for r in l.meta.requirements() {
        if r == REENCRYPT || r.strip_prefix(REENCRYPT).is_some_and(|v| v.starts_with("-v")) {
            let segs = l.meta.segments.values().filter(|s| !s.is_backup()).count();
            out.push(match super::segments::plan(&l.meta) {
                Ok(_) => Finding::warning(
                    "luks.reencryption",
                    format!(
                        "a LUKS2 re-encryption is in progress (mandatory requirement {r:?}): the payload is read \
                         through its {segs} data segment(s), each with its own key and IVs, as cryptsetup maps it \
                         (finish it with cryptsetup reencrypt --resume-only)"
                    ),
                ),
                Err(e) => Finding::error(
                    "luks.reencryption",
                    format!("a LUKS2 re-encryption is in progress (mandatory requirement {r:?}): {}", e.message()),
                ),
            });
        } else {
            out.push(Finding::error(
                "luks.requirements",
                format!(
                    "the LUKS2 header has the mandatory requirement {r:?}, which loopkit does not know; cryptsetup \
                     refuses to open such a device unless it knows the requirement, so what loopkit reads may not \
                     be the data"
                ),
            ));
        }
    }
    out
}
