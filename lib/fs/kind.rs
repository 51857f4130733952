//! What a signature says is there ([`FsKind`], blkid's names) and how strictly a parser reads
//! a structure ([`Strictness`]): the vocabulary `probe` and the readers (`ext`, `iso9660`)
//! share, below both, so the readers never import the prober.

/// What a signature says is there; [`FsKind::as_str`] is blkid's TYPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsKind {
    /// `ext2`.
    Ext2,
    /// `ext3`.
    Ext3,
    /// `ext4`.
    Ext4,
    /// `jbd`: an external ext3/ext4 journal device.
    Jbd,
    /// `iso9660`.
    Iso9660,
    /// `vfat`.
    Vfat,
    /// `ntfs`.
    Ntfs,
    /// `xfs`.
    Xfs,
    /// `btrfs`.
    Btrfs,
    /// `reiserfs`.
    Reiserfs,
    /// `jfs`.
    Jfs,
    /// `swap`.
    Swap,
    /// `crypto_LUKS`.
    CryptoLuks,
    /// `dos`: a DOS partition table.
    Dos,
    /// `gpt`: a GUID partition table.
    Gpt,
    /// `LVM2_member`: an LVM2 physical volume.
    Lvm2,
}

impl FsKind {
    /// blkid's TYPE name.
    pub fn as_str(self) -> &'static str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Jbd => "jbd",
            FsKind::Iso9660 => "iso9660",
            FsKind::Vfat => "vfat",
            FsKind::Ntfs => "ntfs",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Reiserfs => "reiserfs",
            FsKind::Jfs => "jfs",
            FsKind::Swap => "swap",
            FsKind::CryptoLuks => "crypto_LUKS",
            FsKind::Dos => "dos",
            FsKind::Gpt => "gpt",
            FsKind::Lvm2 => "LVM2_member",
        }
    }

    /// What it is in words, with blkid's TYPE (`swap space (swap)`).
    pub fn describe(self) -> String {
        let what = match self {
            FsKind::Swap => "swap space",
            FsKind::Dos => "a DOS partition table",
            FsKind::Gpt => "a GUID partition table",
            FsKind::Lvm2 => "an LVM2 physical volume",
            FsKind::Jbd => "an external ext3/ext4 journal",
            FsKind::CryptoLuks => "a LUKS container",
            _ => return format!("a {} file system", self.as_str()),
        };
        format!("{what} ({})", self.as_str())
    }

    /// Whether it holds other volumes rather than files (partition tables, LVM): a weak
    /// signature there is not an implausible file system.
    pub fn is_container(self) -> bool {
        matches!(self, FsKind::Dos | FsKind::Gpt | FsKind::Lvm2)
    }

    /// Whether loopkit reads files from it (ext2/3/4, ISO9660).
    pub fn is_readable(self) -> bool {
        matches!(self, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Iso9660)
    }
}

impl std::fmt::Display for FsKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much of an on-disk structure a parser insists on. One parser per structure serves the
/// reader (strict), identification (lenient) and detection's head scan (IV-garbled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// The reader: everything it will rely on must be usable; features it does not implement are
    /// refused.
    Strict,
    /// Identification (`probe`): plausibility only — features are not judged, redundant fields
    /// must agree, counts must be consistent; some mismatches only lower confidence.
    Lenient,
    /// A head scan over a sector whose first `n` bytes a wrong IV may have garbled: only fields
    /// past those bytes are judged (ext: the counts in bytes 0..16 read as 0).
    IvGarbled(usize),
}
