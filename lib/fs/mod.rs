//! File systems inside a (decrypted) payload. [`probe`] recognises superblocks (ext2/3/4,
//! ISO9660, FAT, NTFS, XFS, btrfs, ReiserFS, JFS, swap, LUKS, DOS partition tables) with sanity
//! checks strong enough to tell a right key from a wrong one; names follow blkid.
//! [`ext`] and [`iso9660`] are read-only readers implementing the common model in [`tree`],
//! which `manifest`, `verify` and `extract` walk; [`open`] picks the right one.

pub mod ext;
pub mod iso9660;
pub mod kind;
pub mod probe;
pub mod tree;

pub use kind::{FsKind, Strictness};
pub use probe::{FsInfo, STRONG_CONFIDENCE, identify};
pub use tree::{FileReader, FileSystem, FileType, NodeId, Stat};

use crate::source::ByteSource;

/// Open the file system at the start of `src` with the reader for its type.
///
/// # Errors
/// `NotRecognized` when it is neither ext2/3/4 nor ISO9660; `Unsupported` for other file
/// systems blkid knows; `Corrupt`/`Io` from the reader.
pub fn open(src: &dyn ByteSource) -> crate::Result<Box<dyn FileSystem + '_>> {
    let info = identify(src).map_err(|e| crate::Error::io("reading the file-system superblock", e))?;
    match info.as_ref().map(|i| i.kind) {
        Some(FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4) => Ok(Box::new(ext::Ext::open(src)?)),
        Some(FsKind::Iso9660) => Ok(Box::new(iso9660::Iso::open(src)?)),
        Some(other) => Err(crate::Error::unsupported(format!(
            "reading files from a {other} file system is not supported (ext2/3/4 and ISO9660 are)"
        ))),
        None => {
            // A damaged superblock may fail identification's checks; let the ext reader say why.
            match ext::Ext::open(src) {
                Ok(e) => Ok(Box::new(e)),
                Err(e) if e.kind() == crate::ErrorKind::NotRecognized => Err(crate::Error::new(
                    crate::ErrorKind::NotRecognized,
                    "no ext2/3/4 or ISO9660 file system was recognised in the payload",
                )),
                Err(e) => Err(e),
            }
        }
    }
}
