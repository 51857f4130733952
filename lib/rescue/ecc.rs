//! When a rescue can stop: every Reed–Solomon codeword of the dvdisaster error-correction data
//! (RS01, RS02, RS03) has no more missing sectors than it has roots, so the repair can restore
//! them all as erasures. Missing sectors are marked in the partial image with dvdisaster's
//! dead-sector markers, which is how both dvdisaster and loopkit's repair find erasures.

use super::mapfile::{RescueMap, Status};
use crate::formats::dvdisaster::layout::{ECC_SECTOR_BYTES, dead_sector_marker};
use crate::formats::dvdisaster::{Ecc, Layout};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;

/// The 2048-byte sectors of the map that are not wholly finished, in order.
pub fn missing_sectors(map: &RescueMap) -> Vec<u64> {
    let mut out = Vec::new();
    for b in map.blocks().filter(|b| b.status != Status::Finished) {
        let first = b.pos / ECC_SECTOR_BYTES;
        let last = b.end().div_ceil(ECC_SECTOR_BYTES);
        for s in first..last {
            if out.last() != Some(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// The codeword (ECC block) image sector `s` belongs to, or `None` for sectors outside every
/// codeword (RS02 header copies, sectors past the layout).
pub fn codeword_of(layout: &Layout, s: u64) -> Option<u64> {
    layout.codeword_of(s)
}

/// The most missing bytes the code could possibly restore (roots × codewords sectors): a
/// cheap necessary condition before [`correctable`].
pub fn capacity_bytes(ecc: &Ecc) -> u64 {
    let spl = match &ecc.layout {
        Layout::Rs01(l) => l.spl,
        Layout::Rs02(l) => l.spl,
        Layout::Rs03(l) => l.spl,
    };
    (ecc.nroots() as u64).saturating_mul(spl).saturating_mul(ECC_SECTOR_BYTES)
}

/// Whether every codeword has at most `nroots` missing sectors. Sectors of the image outside
/// every codeword (RS02 header copies) do not count; for `.ecc` files only image sectors can
/// be missing (the `.ecc` file itself is assumed readable; the repair checks it).
pub fn correctable(ecc: &Ecc, missing: &[u64]) -> bool {
    let nroots = ecc.nroots() as u32;
    let mut per: HashMap<u64, u32> = HashMap::new();
    for &s in missing {
        if let Some(c) = codeword_of(&ecc.layout, s) {
            let n = per.entry(c).or_insert(0);
            *n += 1;
            if *n > nroots {
                return false;
            }
        }
    }
    true
}

/// Write a dead-sector marker into every missing 2048-byte sector of `out` (sector sizes that
/// are multiples of 2048 only, so no finished byte is overwritten).
///
/// # Errors
/// `Io`.
pub fn mark_missing(out: &File, map: &RescueMap) -> crate::Result<u64> {
    let mut buf = vec![0u8; ECC_SECTOR_BYTES as usize];
    let mut n = 0;
    for b in map.blocks().filter(|b| b.status != Status::Finished) {
        if !b.pos.is_multiple_of(ECC_SECTOR_BYTES)
            || !(b.size.is_multiple_of(ECC_SECTOR_BYTES) || b.end() == map.size())
        {
            continue;
        }
        for s in b.pos / ECC_SECTOR_BYTES..b.end().div_ceil(ECC_SECTOR_BYTES) {
            dead_sector_marker(s, None, 0, Some("loopkit rescue: not read"), &mut buf);
            let at = s * ECC_SECTOR_BYTES;
            let len = (map.size() - at).min(ECC_SECTOR_BYTES) as usize;
            out.write_all_at(&buf[..len], at).map_err(|e| crate::Error::io(format!("marking sector {s} unread"), e))?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::dvdisaster::layout::Rs02Layout;
    use crate::formats::dvdisaster::rs02_codeword;

    #[test]
    fn rs02_codeword_inverts_ecc_sector() {
        for (ds, nroots) in [(9978u64, 170usize), (5000, 32), (100, 64), (300_000, 20)] {
            let m = Rs02Layout::base_modulo(ds, nroots).expect("modulo");
            let l = Rs02Layout::compute(ds, nroots, m).expect("layout");
            let mut seen = std::collections::HashSet::new();
            for k in 0..nroots {
                for i in 0..l.spl {
                    let s = l.ecc_sector(k, i);
                    assert!(s < l.total, "ECC sector inside the image");
                    assert_eq!(rs02_codeword(&l, s), Some(i), "ds {ds} roots {nroots} k {k} i {i} sector {s}");
                    assert!(seen.insert(s), "each ECC sector once");
                }
            }
            for h in l.header_copies().skip(1) {
                assert_eq!(rs02_codeword(&l, h), None, "header copy {h}");
                assert!(!seen.contains(&h));
            }
            // Every image sector is data/CRC, ECC or a header copy.
            for s in l.protected..l.total {
                assert!(seen.contains(&s) || rs02_codeword(&l, s).is_none(), "sector {s}");
            }
        }
    }

    #[test]
    fn missing_sectors_round_outward() {
        let mut m = RescueMap::new(10 * ECC_SECTOR_BYTES);
        m.set(0, 10 * ECC_SECTOR_BYTES, Status::Finished);
        m.set(2 * ECC_SECTOR_BYTES + 512, 512, Status::Bad);
        m.set(5 * ECC_SECTOR_BYTES, 2 * ECC_SECTOR_BYTES, Status::NonTried);
        assert_eq!(missing_sectors(&m), [2, 5, 6]);
    }
}
