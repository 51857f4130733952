//! Superblock probes. Each returns `Ok(None)` for "not this file system" and a [`FsInfo`] with a
//! confidence (0–100) otherwise; [`STRONG_CONFIDENCE`] and above means "a wrong key or wrong
//! parameters would practically never produce this". Field offsets: ext from
//! `e2fsprogs lib/ext2fs/ext2_fs.h`, ISO9660 from ECMA-119, FAT from Microsoft's FAT spec, XFS,
//! btrfs, swap and ReiserFS from their kernel headers; type names and the ext2/ext3/ext4 split
//! follow libblkid.

use crate::source::ByteSource;
use std::io;

/// Confidence at or above which detection accepts a candidate.
pub const STRONG_CONFIDENCE: u8 = 80;

/// A recognised file system (or other signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsInfo {
    /// blkid's TYPE: `ext2`, `ext3`, `ext4`, `jbd`, `iso9660`, `vfat`, `ntfs`, `xfs`, `btrfs`,
    /// `reiserfs`, `jfs`, `swap`, `crypto_LUKS`, `dos` (partition table).
    pub kind: String,
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
    /// Remarks (dirty, needs journal recovery, …).
    pub notes: Vec<String>,
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
    if src.size_bytes() < off + len as u64 {
        return Ok(None);
    }
    let mut b = vec![0u8; len];
    src.read_exact_at(&mut b, off)?;
    Ok(Some(b))
}

pub(crate) fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
pub(crate) fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
pub(crate) fn le64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
pub(crate) fn be16(b: &[u8], o: usize) -> u16 {
    u16::from_be_bytes([b[o], b[o + 1]])
}
pub(crate) fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn be64(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_be_bytes(a)
}

/// A label from a fixed NUL/space-padded field; `None` when empty.
fn label(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    if s.is_empty() { None } else { Some(s) }
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

/// ext superblock magic (`EXT2_SUPER_MAGIC`), at superblock offset 56.
pub const EXT_SUPER_MAGIC: u16 = 0xEF53;
/// Byte offset of the primary ext superblock.
pub const EXT_SUPERBLOCK_OFFSET: u64 = 1024;
const EXT3_FEATURE_COMPAT_HAS_JOURNAL: u32 = 0x0004;
const EXT3_FEATURE_INCOMPAT_RECOVER: u32 = 0x0004;
const EXT3_FEATURE_INCOMPAT_JOURNAL_DEV: u32 = 0x0008;
const EXT4_FEATURE_INCOMPAT_64BIT: u32 = 0x0080;
/// Incompat features ext3 supports (FILETYPE | RECOVER | META_BG), per libblkid.
const EXT3_INCOMPAT_SUPP: u32 = 0x0002 | 0x0004 | 0x0010;
/// Ro-compat features ext2/ext3 support (SPARSE_SUPER | LARGE_FILE | BTREE_DIR).
const EXT3_RO_COMPAT_SUPP: u32 = 0x0001 | 0x0002 | 0x0004;

/// blkid's name for an ext file system with these feature words: `ext4` when any feature outside
/// ext3's supported sets is on, `ext3` with a journal, else `ext2`.
pub fn ext_kind(compat: u32, incompat: u32, ro_compat: u32) -> &'static str {
    if incompat & !EXT3_INCOMPAT_SUPP == 0 && ro_compat & !EXT3_RO_COMPAT_SUPP == 0 {
        if compat & EXT3_FEATURE_COMPAT_HAS_JOURNAL != 0 { "ext3" } else { "ext2" }
    } else {
        "ext4"
    }
}

/// Sanity-check an ext superblock (1024 bytes) and describe it. Public so the scanner can run
/// the IV-independent part on partially decrypted sectors.
pub fn ext_superblock(sb: &[u8]) -> Option<FsInfo> {
    if sb.len() < 1024 || le16(sb, 56) != EXT_SUPER_MAGIC {
        return None;
    }
    let inodes = u64::from(le32(sb, 0));
    let mut blocks = u64::from(le32(sb, 4));
    let free_blocks = u64::from(le32(sb, 12));
    let free_inodes = u64::from(le32(sb, 16));
    let first_data_block = u64::from(le32(sb, 20));
    let log_bs = le32(sb, 24);
    let blocks_per_group = u64::from(le32(sb, 32));
    let inodes_per_group = u64::from(le32(sb, 40));
    let state = le16(sb, 58);
    let rev = le32(sb, 76);
    let incompat = le32(sb, 96);
    let ro_compat = le32(sb, 100);
    let compat = le32(sb, 92);
    if log_bs > 6 || rev > 1 {
        return None;
    }
    let bs = 1024u64 << log_bs;
    if incompat & EXT4_FEATURE_INCOMPAT_64BIT != 0 {
        blocks |= u64::from(le32(sb, 0x150)) << 32;
    }
    let journal_dev = incompat & EXT3_FEATURE_INCOMPAT_JOURNAL_DEV != 0;
    let sane = blocks_per_group >= 8
        && blocks_per_group <= 8 * bs
        && blocks_per_group % 8 == 0
        && inodes_per_group >= 1
        && inodes_per_group <= 8 * bs
        && blocks > first_data_block
        && free_blocks <= blocks
        && free_inodes <= inodes
        && first_data_block == u64::from(bs == 1024)
        && state <= 7;
    if !sane && !journal_dev {
        return None;
    }
    if rev == 1 {
        let isz = u32::from(le16(sb, 88));
        if !isz.is_power_of_two() || isz < 128 || u64::from(isz) > bs {
            return None;
        }
    }
    let groups = (blocks - first_data_block).div_ceil(blocks_per_group.max(1));
    let mut confidence = 95;
    let mut notes = Vec::new();
    if !journal_dev && inodes != inodes_per_group * groups {
        // The one field that depends on the first 4 bytes of the sector (the CBC IV with
        // cryptoloop): a mismatch here means right key, wrong IV offset.
        confidence = 50;
        notes.push(format!("inode count {inodes} is not inodes_per_group {inodes_per_group} × {groups} groups"));
    }
    let kind = if journal_dev { "jbd" } else { ext_kind(compat, incompat, ro_compat) };
    if incompat & EXT3_FEATURE_INCOMPAT_RECOVER != 0 {
        notes.push("the journal needs recovery (the file system was not unmounted cleanly)".into());
    } else if state & 1 == 0 {
        notes.push("the file system is marked not clean".into());
    }
    if state & 2 != 0 {
        notes.push("the file system is marked as having errors".into());
    }
    Some(FsInfo {
        kind: kind.into(),
        label: label(&sb[120..136]),
        uuid: uuid(&sb[104..120]),
        size_bytes: blocks.checked_mul(bs),
        block_size: Some(bs as u32),
        confidence,
        notes,
    })
}

fn probe_ext(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    Ok(read(src, EXT_SUPERBLOCK_OFFSET, 1024)?.and_then(|sb| ext_superblock(&sb)))
}

// ---------------------------------------------------------------------------------------------
// ISO9660

/// Byte offset of the first ISO9660 volume descriptor (sector 16 of 2048 bytes).
pub const ISO_VD_OFFSET: u64 = 32768;

/// Sanity-check an ISO9660 primary volume descriptor (2048 bytes).
pub fn iso_pvd(pvd: &[u8]) -> Option<FsInfo> {
    if pvd.len() < 2048 || pvd[0] != 1 || &pvd[1..6] != b"CD001" || pvd[6] != 1 {
        return None;
    }
    let vss_le = le32(pvd, 80);
    let vss_be = be32(pvd, 84);
    let lbs_le = le16(pvd, 128);
    let lbs_be = be16(pvd, 130);
    if vss_le != vss_be || lbs_le != lbs_be || !lbs_le.is_power_of_two() || !(512..=2048).contains(&lbs_le) {
        return None;
    }
    let created = &pvd[813..829];
    let uuid = if created.iter().all(u8::is_ascii_digit) && created != b"0000000000000000" {
        let c = String::from_utf8_lossy(created);
        Some(format!(
            "{}-{}-{}-{}-{}-{}-{}",
            &c[0..4],
            &c[4..6],
            &c[6..8],
            &c[8..10],
            &c[10..12],
            &c[12..14],
            &c[14..16]
        ))
    } else {
        None
    };
    Some(FsInfo {
        kind: "iso9660".into(),
        label: label(&pvd[40..72]),
        uuid,
        size_bytes: Some(u64::from(vss_le) * u64::from(lbs_le)),
        block_size: Some(u32::from(lbs_le)),
        confidence: 95,
        notes: Vec::new(),
    })
}

fn probe_iso9660(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(pvd) = read(src, ISO_VD_OFFSET, 2048)? else {
        return Ok(None);
    };
    let Some(mut info) = iso_pvd(&pvd) else {
        return Ok(None);
    };
    // Prefer the Joliet label (UCS-2 BE), as blkid does.
    for i in 1..32u64 {
        let Some(vd) = read(src, ISO_VD_OFFSET + 2048 * i, 2048)? else {
            break;
        };
        if &vd[1..6] != b"CD001" || vd[0] == 255 {
            break;
        }
        if vd[0] == 2 && vd[88] == 0x25 && vd[89] == 0x2F && matches!(vd[90], 0x40 | 0x43 | 0x45) {
            let units: Vec<u16> = vd[40..72].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            let s = String::from_utf16_lossy(&units).trim_end_matches(['\0', ' ']).to_string();
            if !s.is_empty() {
                info.label = Some(s);
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
            kind: "ntfs".into(),
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
        kind: "vfat".into(),
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
        kind: "xfs".into(),
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
        kind: "btrfs".into(),
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
        kind: "reiserfs".into(),
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
        kind: "jfs".into(),
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
        kind: "swap".into(),
        label: if v1 { label(&b[1052..1068]) } else { None },
        uuid: if v1 { uuid(&b[1036..1052]) } else { None },
        size_bytes: if v1 { Some((last_page + 1) * 4096) } else { None },
        block_size: Some(4096),
        confidence: 90,
        notes: Vec::new(),
    }))
}

fn probe_luks(src: &dyn ByteSource) -> io::Result<Option<FsInfo>> {
    let Some(b) = read(src, 0, 208)? else {
        return Ok(None);
    };
    if b[..6] != crate::formats::luks::LUKS_MAGIC || !matches!(be16(&b, 6), 1 | 2) {
        return Ok(None);
    }
    let u = label(&b[168..208]);
    Ok(Some(FsInfo {
        kind: "crypto_LUKS".into(),
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
            used += 1;
        }
    }
    if used == 0 {
        return Ok(None);
    }
    Ok(Some(FsInfo {
        kind: "dos".into(),
        label: None,
        uuid: Some(format!("{:08x}", le32(&b, 440))),
        size_bytes: None,
        block_size: None,
        confidence: 60,
        notes: vec!["a DOS partition table (the file systems are inside the partitions)".into()],
    }))
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

    /// Random mutations of structured headers never panic or hang.
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
        base[0..6].copy_from_slice(&crate::formats::luks::LUKS_MAGIC);
        base[6..8].copy_from_slice(&2u16.to_be_bytes());
        base[510] = 0x55;
        base[511] = 0xAA;
        base[65536 + 64..65536 + 72].copy_from_slice(b"_BHRfS_M");
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
            let src = MemSource::new(img);
            let _ = identify(&src);
            let _ = crate::formats::luks::probe(&src);
        }
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
        assert_eq!((info.kind.as_str(), info.confidence, info.size_bytes), ("ext2", 95, Some(8 << 20)));
        sb[0..4].copy_from_slice(&255u32.to_le_bytes());
        assert!(ext_superblock(&sb).unwrap().confidence < STRONG_CONFIDENCE);
        sb[24..28].copy_from_slice(&9u32.to_le_bytes());
        assert!(ext_superblock(&sb).is_none());
    }
}
