//! File systems inside a (decrypted) payload. [`probe`] recognises superblocks (ext2/3/4,
//! ISO9660, FAT, NTFS, XFS, btrfs, ReiserFS, JFS, swap, LUKS, DOS partition tables) with sanity
//! checks strong enough to tell a right key from a wrong one; names follow blkid.

pub mod probe;

pub use probe::{FsInfo, STRONG_CONFIDENCE, identify};
