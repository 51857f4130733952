//! [`FileSource`]: a file or block device opened **read-only**, read with `pread`, with hole
//! discovery through `lseek(SEEK_DATA/SEEK_HOLE)` so sparse images are not read byte by byte.

use super::ByteSource;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

/// A read-only image file (or block device).
#[derive(Debug)]
pub struct FileSource {
    file: File,
    path: PathBuf,
    size_bytes: u64,
    /// Whether `SEEK_DATA` works here (false on file systems without hole support).
    seek_data: bool,
}

impl FileSource {
    /// Open `path` read-only. Directories are refused.
    ///
    /// # Errors
    /// `Io` when the path cannot be opened or is not a regular file or block device.
    pub fn open(path: &Path) -> crate::Result<Self> {
        let what = || format!("cannot open {}", path.display());
        let file = File::open(path).map_err(|e| crate::Error::io(what(), e))?;
        FileSource::from_file(file, path)
    }

    /// Read an already open file (or block device); `path` names it in messages and is not
    /// opened. Directories are refused.
    ///
    /// # Errors
    /// `Io` when it is not a regular file or block device or cannot be examined.
    pub fn from_file(file: File, path: &Path) -> crate::Result<Self> {
        let what = || format!("cannot open {}", path.display());
        let meta = file.metadata().map_err(|e| crate::Error::io(what(), e))?;
        let ft = meta.file_type();
        let size_bytes = if ft.is_file() {
            meta.len()
        } else if ft.is_block_device() {
            block_device_size(&file).map_err(|e| crate::Error::io(what(), e))?
        } else if ft.is_dir() {
            return Err(crate::Error::invalid(format!("{} is a directory, not an image", path.display())));
        } else {
            return Err(crate::Error::invalid(format!("{} is not a regular file or block device", path.display())));
        };
        let seek_data = ft.is_file();
        Ok(FileSource { file, path: path.to_path_buf(), size_bytes, seek_data })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file (read-only), for callers that hand it to the kernel (`copy_file_range`).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// `fstat` of the open file: what was read, even if the path now names another file.
    ///
    /// # Errors
    /// From `fstat`.
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        self.file.metadata()
    }

    /// Bytes actually allocated on disk (for sparse files), if known.
    pub fn allocated_bytes(&self) -> Option<u64> {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().ok().map(|m| m.blocks() * 512)
    }

    fn lseek(&self, offset: u64, whence: fn(u64) -> rustix::fs::SeekFrom) -> io::Result<Option<u64>> {
        if i64::try_from(offset).is_err() {
            return Ok(None);
        }
        // The shared file position this moves is never used (all reads are positioned).
        match rustix::fs::seek(&self.file, whence(offset)) {
            Ok(pos) => Ok(Some(pos)),
            Err(rustix::io::Errno::NXIO) => Ok(None),
            Err(e) => Err(io::Error::from_raw_os_error(e.raw_os_error())),
        }
    }
}

fn block_device_size(file: &File) -> io::Result<u64> {
    crate::sys::block_device_size(std::os::fd::AsFd::as_fd(file))
}

impl ByteSource for FileSource {
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<usize> {
        if offset_bytes >= self.size_bytes {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.size_bytes - offset_bytes) as usize;
        self.file.read_at(&mut buf[..n], offset_bytes)
    }

    fn data_regions(&self, range: Range<u64>) -> io::Result<Vec<Range<u64>>> {
        let end = range.end.min(self.size_bytes);
        if range.start >= end {
            return Ok(Vec::new());
        }
        if !self.seek_data {
            return Ok(std::iter::once(range.start..end).collect());
        }
        let mut out = Vec::new();
        let mut pos = range.start;
        while pos < end {
            let data = match self.lseek(pos, rustix::fs::SeekFrom::Data) {
                Ok(Some(d)) => d,
                Ok(None) => break,
                // EINVAL etc.: the file system cannot tell; treat the rest as data.
                Err(_) => {
                    out.push(pos..end);
                    break;
                }
            };
            if data >= end {
                break;
            }
            let hole = match self.lseek(data, rustix::fs::SeekFrom::Hole) {
                Ok(Some(h)) => h.min(end),
                _ => end,
            };
            if hole <= data {
                out.push(data..end);
                break;
            }
            out.push(data..hole);
            pos = hole;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn conformance_and_holes() {
        let dir = std::env::temp_dir().join(format!("loopkit-fs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("sparse.img");
        let mut expected = vec![0u8; 4 << 20];
        {
            let mut f = File::create(&p).unwrap();
            f.set_len(4 << 20).unwrap();
            f.seek(SeekFrom::Start(1 << 20)).unwrap();
            let chunk: Vec<u8> = (0..8192u32).map(|i| (i % 255 + 1) as u8).collect();
            f.write_all(&chunk).unwrap();
            expected[1 << 20..(1 << 20) + 8192].copy_from_slice(&chunk);
        }
        let s = FileSource::open(&p).unwrap();
        crate::source::conformance::check(&s, &expected);
        let regions = s.data_regions(0..4 << 20).unwrap();
        let total: u64 = regions.iter().map(|r| r.end - r.start).sum();
        assert!(total < 4 << 20, "holes not detected: {regions:?}");
        assert!(FileSource::open(&dir).is_err());
        assert!(FileSource::open(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
