//! Superblock probes. Each returns `Ok(None)` for "not this file system" and a [`FsInfo`] with a
//! confidence (0–100) otherwise; [`STRONG_CONFIDENCE`] and above means "a wrong key or wrong
//! parameters would practically never produce this". Field offsets: ext from
//! `e2fsprogs lib/ext2fs/ext2_fs.h`, ISO9660 from ECMA-119, FAT from Microsoft's FAT spec, XFS,
//! btrfs, swap and ReiserFS from their kernel headers; type names and the ext2/ext3/ext4 split
//! follow libblkid.

use crate::bytes::{be16, be32, be64, label, le16, le32, le64};
use crate::fs::ext::Superblock;
use crate::fs::iso9660::vd;
pub use crate::fs::kind::FsKind;
use crate::fs::kind::Strictness;
use crate::source::ByteSource;
use std::io;

/// Confidence at or above which detection accepts a candidate.
pub const STRONG_CONFIDENCE: u8 = 80;

/// A recognised file system (or other signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// What it is (blkid's TYPE via [`FsKind::as_str`]).
    pub kind: FsKind,
    /// Volume label, if any.
    pub label: Option<String>,
    /// UUID (or blkid's equivalent, e.g. ISO creation time, FAT serial).
    pub uuid: Option<String>,
    /// Size the file system claims, in bytes.
    pub size_bytes: Option<u64>,
    /// Block size in bytes.
    pub block_size: Option<u32>,
    /// 0–100; see [`STRONG_CONFIDENCE`].
    pub confidence: u8,
    /// Remarks (dirty, needs journal recovery, …): `fs.note` warnings, which `verify` reports.
    pub notes: Vec<crate::finding::Finding>,
}

type Probe = fn(&dyn ByteSource) -> io::Result<Option<FsInfo>>;

const PROBES: &[Probe] = &[
    probe_ext,
    probe_iso9660,
    probe_xfs,
    probe_btrfs,
    probe_luks,
    probe_swap,
    probe_fat_ntfs,
    probe_reiserfs,
    probe_jfs,
    probe_dos,
    probe_gpt,
    probe_lvm2,
];

/// Run every probe and return the most confident result.
///
/// # Errors
/// I/O errors from the source (a short source is not an error).
pub fn identify(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let mut best: Option<FsInfo> = None;
    for p in PROBES {
        if let Some(info) = p(src)?
            && best.as_ref().is_none_or(|b| info.confidence > b.confidence)
        {
            best = Some(info);
        }
    }
    Ok(best)
}

/// Read `len` bytes at `off`, or `None` if the source is too short.
fn read(src: &dyn ByteSource, off: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
    if off.checked_add(len as u64).is_none_or(|end| src.size_bytes() < end) {
        return Ok(None);
    }
    let mut b = vec![0u8; len];
    src.read_exact_at(&mut b, off)?;
    Ok(Some(b))
}

/// 16 bytes as a canonical UUID string; `None` when all zero.
fn uuid(b: &[u8]) -> Option<String> {
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]))
}

// ---------------------------------------------------------------------------------------------
// ext2/3/4

pub use crate::fs::ext::{EXT_SUPER_MAGIC, EXT_SUPERBLOCK_OFFSET};

/// A remark about a file system (`fs.note`).
fn note(message: impl Into<String>) -> crate::finding::Finding {
    crate::finding::Finding::warning("fs.note", message)
}

/// Identify an ext superblock (1024 bytes) leniently ([`Strictness::Lenient`]) and describe it.
pub fn ext_superblock(sb: &[u8]) -> Option<FsInfo> {
    let sbk = Superblock::parse_with(sb, Strictness::Lenient).ok()?;
    let mut confidence = 95;
    let mut notes = Vec::new();
    if !sbk.is_journal_device() && u64::from(sbk.inodes_count) != sbk.inode_capacity() {
        // The one field that depends on the first 4 bytes of the sector (the CBC IV with
        // cryptoloop): a mismatch here means right key, wrong IV offset.
        confidence = 50;
        notes.push(note(format!(
            "inode count {} is not inodes_per_group {} × {} groups",
            sbk.inodes_count, sbk.inodes_per_group, sbk.groups
        )));
    }
    if sbk.incompat & crate::fs::ext::superblock::INCOMPAT_RECOVER != 0 {
        notes.push(note("the journal needs recovery (the file system was not unmounted cleanly)"));
    } else if sbk.state & 1 == 0 {
        notes.push(note("the file system is marked not clean"));
    }
    if sbk.state & 2 != 0 {
        notes.push(note("the file system is marked as having errors"));
    }
    Some(FsInfo {
        kind: sbk.kind(),
        label: sbk.label(),
        uuid: uuid(&sbk.uuid),
        size_bytes: sbk.size_bytes(),
        block_size: Some(sbk.block_size),
        confidence,
        notes,
    })
}

fn probe_ext(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(raw) = read(src, EXT_SUPERBLOCK_OFFSET, 1024)? else { return Ok(None) };
    if let Some(info) = ext_superblock(&raw) {
        return Ok(Some(info));
    }
    // A damaged or wiped primary: the file system is still there if a backup is (`e2fsck -b`;
    // group 1's, or a later one); the reader then uses it and reports `ext.superblock-backup`.
    if !crate::fs::ext::backup::primary_looks_damaged(&raw) {
        return Ok(None);
    }
    Ok(crate::fs::ext::backup::find(src)?.and_then(|b| {
        let mut info = ext_superblock(&b.raw)?;
        info.notes.push(note(format!(
            "the primary superblock is damaged; the backup superblock at block {} (group {}) is intact",
            b.block, b.group
        )));
        Some(info)
    }))
}

// ---------------------------------------------------------------------------------------------
// ISO9660

pub use crate::fs::iso9660::ISO_VD_OFFSET;

/// Identify an ISO9660 primary volume descriptor (2048 bytes) leniently.
pub fn iso_pvd(pvd: &[u8]) -> Option<FsInfo> {
    let p = vd::primary(pvd, Strictness::Lenient)?;
    Some(FsInfo {
        kind: FsKind::Iso9660,
        label: p.label(),
        uuid: p.uuid(),
        size_bytes: Some(p.volume_bytes()),
        block_size: Some(u32::from(p.block_size)),
        confidence: 95,
        notes: Vec::new(),
    })
}

fn probe_iso9660(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(pvd) = read(src, ISO_VD_OFFSET, vd::VD_BYTES)? else {
        return Ok(None);
    };
    let Some(mut info) = iso_pvd(&pvd) else {
        return Ok(None);
    };
    // Prefer the Joliet label (UCS-2 BE), as blkid does.
    for i in 1..32u64 {
        let Some(d) = read(src, ISO_VD_OFFSET + 2048 * i, vd::VD_BYTES)? else {
            break;
        };
        if !vd::is_descriptor(&d) || d[0] == vd::VD_TERMINATOR {
            break;
        }
        if vd::is_joliet(&d) {
            if let Some(l) = vd::joliet_label(&d) {
                info.label = Some(l);
            }
            break;
        }
    }
    Ok(Some(info))
}

// ---------------------------------------------------------------------------------------------
// FAT / NTFS

fn probe_fat_ntfs(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(b) = read(src, 0, 512)? else {
        return Ok(None);
    };
    if b[510] != 0x55 || b[511] != 0xAA {
        return Ok(None);
    }
    let jump = (b[0] == 0xEB && b[2] == 0x90) || b[0] == 0xE9;
    let bps = le16(&b, 11);
    if !jump || !bps.is_power_of_two() || !(512..=4096).contains(&bps) {
        return Ok(None);
    }
    if &b[3..11] == b"NTFS    " {
        let total = le64(&b, 40);
        return Ok(Some(FsInfo {
            kind: FsKind::Ntfs,
            label: None,
            uuid: Some(format!("{:016X}", le64(&b, 72))),
            size_bytes: total.checked_mul(u64::from(bps)),
            block_size: Some(u32::from(bps)),
            confidence: 90,
            notes: Vec::new(),
        }));
    }
    let spc = b[13];
    let reserved = le16(&b, 14);
    let fats = b[16];
    if !spc.is_power_of_two() || reserved == 0 || !(1..=2).contains(&fats) {
        return Ok(None);
    }
    let total = if le16(&b, 19) != 0 { u64::from(le16(&b, 19)) } else { u64::from(le32(&b, 32)) };
    let (lab, serial, fstype) = if le16(&b, 22) == 0 && &b[82..87] == b"FAT32" {
        (&b[71..82], le32(&b, 67), true)
    } else {
        (&b[43..54], le32(&b, 39), &b[54..57] == b"FAT")
    };
    let lab = label(lab).filter(|l| l != "NO NAME");
    Ok(Some(FsInfo {
        kind: FsKind::Vfat,
        label: lab,
        uuid: Some(format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff)),
        size_bytes: total.checked_mul(u64::from(bps)),
        block_size: Some(u32::from(bps) * u32::from(spc)),
        confidence: if fstype { 85 } else { 70 },
        notes: Vec::new(),
    }))
}

// ---------------------------------------------------------------------------------------------
// XFS, btrfs, ReiserFS, JFS

fn probe_xfs(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(b) = read(src, 0, 512)? else {
        return Ok(None);
    };
    if &b[0..4] != b"XFSB" {
        return Ok(None);
    }
    let bs = be32(&b, 4);
    let sect = be16(&b, 102);
    if !bs.is_power_of_two() || !(512..=65536).contains(&bs) || !sect.is_power_of_two() || sect < 512 {
        return Ok(None);
    }
    Ok(Some(FsInfo {
        kind: FsKind::Xfs,
        label: label(&b[108..120]),
        uuid: uuid(&b[32..48]),
        size_bytes: be64(&b, 8).checked_mul(u64::from(bs)),
        block_size: Some(bs),
        confidence: 90,
        notes: Vec::new(),
    }))
}

fn probe_btrfs(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(b) = read(src, 65536, 4096)? else {
        return Ok(None);
    };
    if &b[64..72] != b"_BHRfS_M" {
        return Ok(None);
    }
    Ok(Some(FsInfo {
        kind: FsKind::Btrfs,
        label: label(&b[0x12b..0x12b + 256]),
        uuid: uuid(&b[32..48]),
        size_bytes: Some(le64(&b, 0x70)),
        block_size: Some(le32(&b, 0x90)),
        confidence: 90,
        notes: Vec::new(),
    }))
}

fn probe_reiserfs(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(b) = read(src, 65536, 1024)? else {
        return Ok(None);
    };
    let m = &b[52..62];
    if !(m.starts_with(b"ReIsErFs") || m.starts_with(b"ReIsEr2Fs") || m.starts_with(b"ReIsEr3Fs")) {
        return Ok(None);
    }
    let bs = u32::from(le16(&b, 44));
    Ok(Some(FsInfo {
        kind: FsKind::Reiserfs,
        label: label(&b[100..116]),
        uuid: uuid(&b[84..100]),
        size_bytes: u64::from(le32(&b, 0)).checked_mul(u64::from(bs)),
        block_size: Some(bs),
        confidence: 85,
        notes: Vec::new(),
    }))
}

fn probe_jfs(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(b) = read(src, 32768, 512)? else {
        return Ok(None);
    };
    if &b[0..4] != b"JFS1" {
        return Ok(None);
    }
    let bs = le32(&b, 24);
    if !bs.is_power_of_two() || !(512..=4096).contains(&bs) {
        return Ok(None);
    }
    Ok(Some(FsInfo {
        kind: FsKind::Jfs,
        label: label(&b[101..117]),
        uuid: uuid(&b[136..152]),
        size_bytes: le64(&b, 8).checked_mul(512),
        block_size: Some(bs),
        confidence: 80,
        notes: Vec::new(),
    }))
}

// ---------------------------------------------------------------------------------------------
// swap, LUKS, DOS partition table

fn probe_swap(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(b) = read(src, 0, 4096)? else {
        return Ok(None);
    };
    let sig = &b[4086..4096];
    if sig != b"SWAPSPACE2" && sig != b"SWAP-SPACE" {
        return Ok(None);
    }
    let version = le32(&b, 1024);
    let last_page = u64::from(le32(&b, 1028));
    let v1 = sig == b"SWAPSPACE2";
    if v1 && version != 1 {
        return Ok(None);
    }
    Ok(Some(FsInfo {
        kind: FsKind::Swap,
        label: if v1 { label(&b[1052..1068]) } else { None },
        uuid: if v1 { uuid(&b[1036..1052]) } else { None },
        size_bytes: if v1 { Some((last_page + 1) * 4096) } else { None },
        block_size: Some(4096),
        confidence: 90,
        notes: Vec::new(),
    }))
}

/// `"LUKS\xba\xbe"`: the LUKS magic (blkid's `crypto_LUKS`; `formats::luks` uses this one).
pub const LUKS_MAGIC: [u8; 6] = *b"LUKS\xba\xbe";

fn probe_luks(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(b) = read(src, 0, 208)? else {
        return Ok(None);
    };
    if b[..6] != LUKS_MAGIC || !matches!(be16(&b, 6), 1 | 2) {
        return Ok(None);
    }
    let u = label(&b[168..208]);
    Ok(Some(FsInfo {
        kind: FsKind::CryptoLuks,
        label: None,
        uuid: u,
        size_bytes: None,
        block_size: None,
        confidence: 95,
        notes: Vec::new(),
    }))
}

fn probe_dos(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(b) = read(src, 0, 512)? else {
        return Ok(None);
    };
    if b[510] != 0x55 || b[511] != 0xAA {
        return Ok(None);
    }
    let sectors = src.size_bytes() / 512;
    let mut used = 0;
    let mut inside = true;
    for i in 0..4 {
        let e = &b[446 + 16 * i..462 + 16 * i];
        if e[0] != 0 && e[0] != 0x80 {
            return Ok(None);
        }
        if e[4] != 0 {
            let start = u64::from(le32(e, 8));
            let len = u64::from(le32(e, 12));
            if start == 0 || len == 0 || start + len > sectors.max(1) * 2 {
                return Ok(None);
            }
            inside &= start + len <= sectors;
            used += 1;
        }
    }
    if used == 0 {
        return Ok(None);
    }
    Ok(Some(FsInfo {
        kind: FsKind::Dos,
        label: None,
        uuid: Some(format!("{:08x}", le32(&b, 440))),
        size_bytes: None,
        block_size: None,
        // Signature, four boot flags of 0 or 0x80 and partitions that all lie inside the image:
        // random data (a wrong key) practically never looks like that.
        confidence: if inside { 85 } else { 60 },
        notes: vec![note("a DOS partition table (the file systems are inside the partitions)")],
    }))
}

/// GPT (UEFI spec §5.3): the header at LBA 1 (512-byte sectors), signature `EFI PART`, revision
/// 1.0, header size 92..=512, CRC32 of the header (with its CRC field zeroed) as the spec says.
fn probe_gpt(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(b) = read(src, 512, 512)? else {
        return Ok(None);
    };
    if &b[..8] != b"EFI PART" || le32(&b, 8) != 0x0001_0000 {
        return Ok(None);
    }
    let hs = le32(&b, 12) as usize;
    if !(92..=512).contains(&hs) {
        return Ok(None);
    }
    let mut h = b[..hs].to_vec();
    h[16..20].fill(0);
    if crc32fast::hash(&h) != le32(&b, 16) {
        return Ok(None);
    }
    let g = &b[56..72];
    // The disk GUID, mixed-endian as blkid prints it.
    let guid = format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        le32(g, 0),
        le16(g, 4),
        le16(g, 6),
        g[8],
        g[9],
        g[10..].iter().map(|x| format!("{x:02x}")).collect::<String>()
    );
    Ok(Some(FsInfo {
        kind: FsKind::Gpt,
        label: None,
        uuid: Some(guid),
        size_bytes: None,
        block_size: None,
        confidence: 95,
        notes: vec![note("a GUID partition table (the file systems are inside the partitions)")],
    }))
}

/// LVM2 physical volume (lvm2 `lib/label/label.h`, `lib/format_text/layout.h`): a label sector
/// among the first four with `LABELONE`, its own sector number, and type `LVM2 001`; the PV
/// header it points to holds the 32-character PV UUID and the device size.
fn probe_lvm2(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(b) = read(src, 0, 2048)? else {
        return Ok(None);
    };
    for sector in 0..4usize {
        let l = &b[sector * 512..(sector + 1) * 512];
        if &l[..8] != b"LABELONE" || le64(l, 8) != sector as u64 || &l[24..32] != b"LVM2 001" {
            continue;
        }
        let at = le32(l, 20) as usize;
        if !(32..=512 - 40).contains(&at) {
            continue;
        }
        let id = &l[at..at + 32];
        if !id.iter().all(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        // blkid's spelling: 6-4-4-4-4-4-6.
        let mut uuid = String::new();
        for (i, c) in id.iter().enumerate() {
            if matches!(i, 6 | 10 | 14 | 18 | 22 | 26) {
                uuid.push('-');
            }
            uuid.push(*c as char);
        }
        let size = le64(l, at + 32);
        return Ok(Some(FsInfo {
            kind: FsKind::Lvm2,
            label: None,
            uuid: Some(uuid),
            size_bytes: (size != 0).then_some(size),
            block_size: None,
            confidence: 90,
            notes: vec![note("an LVM2 physical volume (the file systems are inside its logical volumes)")],
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemSource;

    #[test]
    fn zeros_and_random_are_nothing() {
        assert!(identify(&MemSource::new(vec![0u8; 1 << 20])).unwrap().is_none());
        let mut x = 0x1234_5678u32;
        let rnd: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(identify(&MemSource::new(rnd)).unwrap().is_none_or(|i| i.confidence < STRONG_CONFIDENCE));
        assert!(identify(&MemSource::new(vec![])).unwrap().is_none());
    }

    /// Random mutations of structured headers never panic or hang, never fail on an in-memory
    /// source, and never change the verdict when they only touch bytes no probe reads.
    #[test]
    fn mutations_never_panic() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut base = vec![0u8; 96 << 10];
        base[1024 + 56..1024 + 58].copy_from_slice(&EXT_SUPER_MAGIC.to_le_bytes());
        base[32768..32774].copy_from_slice(b"\x01CD001");
        base[0..6].copy_from_slice(&LUKS_MAGIC);
        base[6..8].copy_from_slice(&2u16.to_be_bytes());
        base[510] = 0x55;
        base[511] = 0xAA;
        base[65536 + 64..65536 + 72].copy_from_slice(b"_BHRfS_M");
        // Bytes no probe reads (ISO descriptors and btrfs/ReiserFS cover 32768 onwards).
        let dead = 4096usize..32768;
        let mut found = 0;
        for i in 0..3000 {
            let mut img = base.clone();
            for _ in 0..(1 + i % 40) {
                let at = (rnd() as usize) % img.len();
                img[at] = rnd() as u8;
            }
            // Concentrate some mutations on header fields.
            for _ in 0..8 {
                let at = [1024usize, 32768, 0, 65536][(rnd() % 4) as usize] + (rnd() % 512) as usize;
                img[at] = rnd() as u8;
            }
            let len = if i % 7 == 0 { (rnd() as usize) % img.len() } else { img.len() };
            img.truncate(len);
            let src = MemSource::new(img.clone());
            let verdict = identify(&src).expect("an in-memory source never fails");
            if let Some(info) = &verdict {
                assert!(info.confidence <= 100, "{info:?}");
                found += 1;
            }
            let _ = crate::formats::luks::probe(&src);
            // Differential check: scribbling over unread bytes changes nothing.
            let mut other = img;
            for at in dead.clone().step_by(97) {
                if let Some(b) = other.get_mut(at) {
                    *b = rnd() as u8;
                }
            }
            assert_eq!(identify(&MemSource::new(other)).unwrap(), verdict, "iteration {i}");
        }
        assert!(found > 0, "no mutated header was recognised at all");
    }

    fn ext_sb(inodes: u32, blocks: u32, first: u32, log_bs: u32, bpg: u32, ipg: u32) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[56..58].copy_from_slice(&EXT_SUPER_MAGIC.to_le_bytes());
        sb[0..4].copy_from_slice(&inodes.to_le_bytes());
        sb[4..8].copy_from_slice(&blocks.to_le_bytes());
        sb[20..24].copy_from_slice(&first.to_le_bytes());
        sb[24..28].copy_from_slice(&log_bs.to_le_bytes());
        sb[32..36].copy_from_slice(&bpg.to_le_bytes());
        sb[40..44].copy_from_slice(&ipg.to_le_bytes());
        sb[58..60].copy_from_slice(&1u16.to_le_bytes());
        sb
    }

    /// Hostile counts that used to overflow (journal device: `blocks - first_data_block`; 64-bit:
    /// `inodes_per_group * groups`) are handled, not wrapped (these run with overflow checks).
    #[test]
    fn ext_hostile_counts_do_not_overflow() {
        // A journal device with 0 blocks and first data block 5.
        let mut sb = ext_sb(0, 0, 5, 0, 0, 0);
        sb[96..100].copy_from_slice(&0x0008u32.to_le_bytes()); // INCOMPAT_JOURNAL_DEV
        let info = ext_superblock(&sb).expect("a journal device is recognised");
        assert_eq!((info.kind, info.size_bytes), (FsKind::Jbd, Some(0)));
        // 64-bit: 2^64 − 1 blocks of 64 KiB in groups of 8 blocks with 2^19 inodes each.
        let mut sb = ext_sb(u32::MAX, u32::MAX, 0, 6, 8, 1 << 19);
        sb[96..100].copy_from_slice(&0x0080u32.to_le_bytes()); // INCOMPAT_64BIT
        sb[0x150..0x154].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ext_superblock(&sb).is_none(), "a file system larger than any device");
        // The same geometry within bounds, inode count wrong: recognised weakly.
        let mut sb = ext_sb(7, 1 << 20, 0, 2, 8, 1 << 15);
        sb[96..100].copy_from_slice(&0x0080u32.to_le_bytes());
        sb[0xFE..0x100].copy_from_slice(&64u16.to_le_bytes());
        let info = ext_superblock(&sb).unwrap();
        assert!(info.confidence < STRONG_CONFIDENCE);
        assert_eq!(info.size_bytes, Some(4 << 30));
    }

    #[test]
    fn ext_rejects_inconsistent_geometry() {
        let mut sb = vec![0u8; 1024];
        sb[56..58].copy_from_slice(&EXT_SUPER_MAGIC.to_le_bytes());
        sb[0..4].copy_from_slice(&256u32.to_le_bytes()); // inodes
        sb[4..8].copy_from_slice(&8192u32.to_le_bytes()); // blocks
        sb[20..24].copy_from_slice(&1u32.to_le_bytes()); // first data block (1 KiB blocks)
        sb[32..36].copy_from_slice(&8192u32.to_le_bytes());
        sb[40..44].copy_from_slice(&256u32.to_le_bytes());
        sb[58..60].copy_from_slice(&1u16.to_le_bytes());
        let info = ext_superblock(&sb).unwrap();
        assert_eq!((info.kind, info.confidence, info.size_bytes), (FsKind::Ext2, 95, Some(8 << 20)));
        sb[0..4].copy_from_slice(&255u32.to_le_bytes());
        assert!(ext_superblock(&sb).unwrap().confidence < STRONG_CONFIDENCE);
        sb[24..28].copy_from_slice(&9u32.to_le_bytes());
        assert!(ext_superblock(&sb).is_none());
    }
}
