//! ISO 9660 volume descriptors (ECMA-119 §8): the one parser of the primary volume descriptor
//! (used by the reader, by `fs::probe`, by detection's head scan and by dvdisaster's image-size
//! lookup) and the Joliet test for supplementary descriptors.

use crate::bytes::{self, both16, both32, le16, le32};
use crate::fs::kind::Strictness;

/// Byte offset of the first volume descriptor (sector 16 of 2048 bytes).
pub const ISO_VD_OFFSET: u64 = 32768;
/// Volume descriptor types.
pub const VD_PRIMARY: u8 = 1;
/// Supplementary (Joliet) volume descriptor.
pub const VD_SUPPLEMENTARY: u8 = 2;
/// Set terminator.
pub const VD_TERMINATOR: u8 = 255;
/// Length of a volume descriptor.
pub const VD_BYTES: usize = 2048;

/// The fields of a primary volume descriptor loopkit uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Primary {
    /// Logical block size (512, 1024 or 2048).
    pub block_size: u16,
    /// Volume space size in logical blocks.
    pub volume_blocks: u32,
    /// Volume identifier (a-characters, space-padded).
    pub volume_id: [u8; 32],
    /// Volume creation date and time (`YYYYMMDDhhmmsscc` + zone).
    pub created: [u8; 17],
}

/// Whether `vd` starts with a volume-descriptor header (`CD001`, any type).
pub fn is_descriptor(vd: &[u8]) -> bool {
    bytes::slice(vd, 1, 5) == b"CD001"
}

/// Parse a primary volume descriptor. With [`Strictness::Strict`] (the reader) the
/// little-endian halves of both-byte-order fields are used as they are; the lenient levels
/// (identification, head scans) also require both halves to agree and a non-empty volume; with
/// [`Strictness::IvGarbled`]`(n)` the header bytes below `n` are not judged.
pub fn primary(vd: &[u8], strictness: Strictness) -> Option<Primary> {
    // A head scan sees one 512-byte sector: the fields past it (dates) then read as zero.
    let min_len = if matches!(strictness, Strictness::IvGarbled(_)) { 512 } else { VD_BYTES };
    if vd.len() < min_len {
        return None;
    }
    let head_ok = match strictness {
        // The reader does not insist on the descriptor version (always 1 in practice).
        Strictness::Strict => vd[0] == VD_PRIMARY && &vd[1..6] == b"CD001",
        Strictness::Lenient | Strictness::IvGarbled(0) => vd[0] == VD_PRIMARY && &vd[1..7] == b"CD001\x01",
        Strictness::IvGarbled(1..=4) => &vd[4..7] == b"01\x01",
        Strictness::IvGarbled(_) => true,
    };
    if !head_ok {
        return None;
    }
    let (volume_blocks, block_size) = if strictness == Strictness::Strict {
        (le32(vd, 80), le16(vd, 128))
    } else {
        (both32(vd, 80).filter(|&n| n != 0)?, both16(vd, 128)?)
    };
    if !block_size.is_power_of_two() || !(512..=2048).contains(&block_size) {
        return None;
    }
    Some(Primary { block_size, volume_blocks, volume_id: bytes::array(vd, 40), created: bytes::array(vd, 813) })
}

impl Primary {
    /// The volume size in bytes.
    pub fn volume_bytes(&self) -> u64 {
        u64::from(self.volume_blocks) * u64::from(self.block_size)
    }

    /// The volume label, `None` when empty.
    pub fn label(&self) -> Option<String> {
        bytes::label(&self.volume_id)
    }

    /// blkid's ISO "UUID": the creation time as `YYYY-MM-DD-hh-mm-ss-cc`, `None` when unset.
    pub fn uuid(&self) -> Option<String> {
        let c = &self.created[..16];
        if !c.iter().all(u8::is_ascii_digit) || c == b"0000000000000000" {
            return None;
        }
        let s = String::from_utf8_lossy(c);
        Some(format!(
            "{}-{}-{}-{}-{}-{}-{}",
            &s[0..4],
            &s[4..6],
            &s[6..8],
            &s[8..10],
            &s[10..12],
            &s[12..14],
            &s[14..16]
        ))
    }
}

/// Whether `vd` is a Joliet supplementary volume descriptor (UCS-2 escape sequence `%/@`,
/// `%/C` or `%/E`).
pub fn is_joliet(vd: &[u8]) -> bool {
    vd.first() == Some(&VD_SUPPLEMENTARY)
        && is_descriptor(vd)
        && bytes::slice(vd, 88, 2) == b"\x25\x2F"
        && matches!(vd.get(90), Some(0x40 | 0x43 | 0x45))
}

/// A Joliet descriptor's volume label (UCS-2 big-endian), `None` when empty.
pub fn joliet_label(vd: &[u8]) -> Option<String> {
    let units: Vec<u16> = bytes::slice(vd, 40, 32).chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
    let s = String::from_utf16_lossy(&units).trim_end_matches(['\0', ' ']).to_string();
    if s.is_empty() { None } else { Some(s) }
}
