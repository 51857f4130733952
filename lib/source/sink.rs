//! [`ByteSink`]: the writable counterpart of [`ByteSource`] — positioned writes, flush and
//! discard over a fixed-size target (an image file, memory, the remap engine), for block-device
//! front ends. Implementations: [`FileSink`], [`MemSink`], and `remap::Engine`.

use super::ByteSource;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

/// Positioned, thread-safe writes to a fixed-size target. Writes never change the size: a write
/// that would pass the end is refused (`InvalidInput`) before any byte is written.
pub trait ByteSink: ByteSource {
    /// Write all of `buf` at `offset_bytes`.
    ///
    /// # Errors
    /// `InvalidInput` past the end; otherwise the underlying I/O error.
    fn write_at(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()>;

    /// Make everything written so far durable (a disk's cache flush).
    ///
    /// # Errors
    /// The underlying I/O error.
    fn flush(&self) -> io::Result<()>;

    /// Afterwards `range` reads as zeros (space may be released). The default writes zeros.
    ///
    /// # Errors
    /// `InvalidInput` past the end; otherwise the underlying I/O error.
    fn discard(&self, range: Range<u64>) -> io::Result<()> {
        check_range(self.size_bytes(), range.start, range.end.saturating_sub(range.start))?;
        let zeros = vec![0u8; 1 << 20];
        let mut pos = range.start;
        while pos < range.end {
            let n = (range.end - pos).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], pos)?;
            pos += n as u64;
        }
        Ok(())
    }
}

/// `InvalidInput` unless `[offset, offset+len)` lies within `size`.
///
/// # Errors
/// As described.
pub fn check_range(size: u64, offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{len} bytes at byte {offset} pass the end ({size} bytes)"),
        )),
    }
}

/// A fixed-size buffer in memory (tests, models).
#[derive(Debug, Default)]
pub struct MemSink(Mutex<Vec<u8>>);

impl MemSink {
    /// `size` zero bytes.
    pub fn new(size: usize) -> MemSink {
        MemSink(Mutex::new(vec![0u8; size]))
    }

    /// A copy of the contents.
    pub fn to_vec(&self) -> Vec<u8> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, Vec<u8>>> {
        self.0.lock().map_err(|_| io::Error::other("memory sink poisoned by a panic"))
    }
}

impl ByteSource for MemSink {
    fn size_bytes(&self) -> u64 {
        self.lock().map(|v| v.len() as u64).unwrap_or(0)
    }

    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<usize> {
        let v = self.lock()?;
        let Ok(off) = usize::try_from(offset_bytes) else { return Ok(0) };
        if off >= v.len() {
            return Ok(0);
        }
        let n = buf.len().min(v.len() - off);
        buf[..n].copy_from_slice(&v[off..off + n]);
        Ok(n)
    }
}

impl ByteSink for MemSink {
    fn write_at(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()> {
        let mut v = self.lock()?;
        check_range(v.len() as u64, offset_bytes, buf.len() as u64)?;
        let off = offset_bytes as usize;
        v[off..off + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// An image file opened read-write (never used on an original: callers open copies or
/// devices they were asked to serve), with `pwrite`, `fdatasync` and hole punching.
#[derive(Debug)]
pub struct FileSink {
    file: File,
    size: u64,
}

impl FileSink {
    /// Open an existing regular file read-write; its current size is the sink's size.
    ///
    /// # Errors
    /// `Io` when it cannot be opened; `InvalidInput` when it is not a regular file.
    pub fn open(path: &Path) -> crate::Result<FileSink> {
        let what = || format!("cannot open {} for writing", path.display());
        let file =
            std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| crate::Error::io(what(), e))?;
        FileSink::from_file(file).map_err(|e| e.context(path.display()))
    }

    /// Wrap an open regular file (read-write).
    ///
    /// # Errors
    /// `InvalidInput` when it is not a regular file; `Io` when it cannot be examined.
    pub fn from_file(file: File) -> crate::Result<FileSink> {
        let meta = file.metadata().map_err(|e| crate::Error::io("cannot examine the file", e))?;
        if !meta.is_file() {
            return Err(crate::Error::invalid("not a regular file"));
        }
        Ok(FileSink { size: meta.len(), file })
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl ByteSource for FileSink {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset_bytes: u64) -> io::Result<usize> {
        if offset_bytes >= self.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.size - offset_bytes) as usize;
        self.file.read_at(&mut buf[..n], offset_bytes)
    }
}

impl ByteSink for FileSink {
    fn write_at(&self, buf: &[u8], offset_bytes: u64) -> io::Result<()> {
        check_range(self.size, offset_bytes, buf.len() as u64)?;
        self.file.write_all_at(buf, offset_bytes)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn discard(&self, range: Range<u64>) -> io::Result<()> {
        check_range(self.size, range.start, range.end.saturating_sub(range.start))?;
        if range.is_empty() {
            return Ok(());
        }
        use rustix::fs::FallocateFlags as F;
        match rustix::fs::fallocate(&self.file, F::PUNCH_HOLE | F::KEEP_SIZE, range.start, range.end - range.start) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP) => {
                // No hole punching here: write the zeros.
                let zeros = vec![0u8; 1 << 20];
                let mut pos = range.start;
                while pos < range.end {
                    let n = (range.end - pos).min(zeros.len() as u64) as usize;
                    self.file.write_all_at(&zeros[..n], pos)?;
                    pos += n as u64;
                }
                Ok(())
            }
            Err(e) => Err(io::Error::from_raw_os_error(e.raw_os_error())),
        }
    }
}

#[cfg(test)]
pub(crate) mod conformance {
    //! Checks every ByteSink implementation must pass, against an in-memory model. The sink must
    //! start out holding `initial`.
    use super::*;

    /// Deterministic pseudo-random bytes.
    fn pattern(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    pub fn check(sink: &(dyn ByteSink + Sync), initial: &[u8]) {
        let size = initial.len();
        assert_eq!(sink.size_bytes(), size as u64);
        let mut model = initial.to_vec();
        // Writes of odd sizes at odd offsets, including the very end.
        let cases = [(0usize, 1usize), (1, 511), (511, 2), (size / 2, 700), (size - 3, 3), (4096, 8192)];
        for (i, &(off, len)) in cases.iter().enumerate() {
            let len = len.min(size - off);
            let data = pattern(i as u64 + 1, len);
            sink.write_at(&data, off as u64).expect("write");
            model[off..off + len].copy_from_slice(&data);
        }
        let mut all = vec![0u8; size];
        sink.read_exact_at(&mut all, 0).expect("read back");
        assert!(all == model, "contents differ from the model after writes");
        // Past the end: refused, nothing written.
        assert!(sink.write_at(&[1, 2, 3, 4], size as u64 - 2).is_err());
        assert!(sink.write_at(&[1], u64::MAX).is_err());
        sink.read_exact_at(&mut all, 0).expect("read back");
        assert!(all == model, "a refused write changed the contents");
        // Discard reads back as zeros; the rest is untouched.
        let (a, b) = (size / 4, size / 4 + 5000.min(size / 2));
        sink.discard(a as u64..b as u64).expect("discard");
        model[a..b].fill(0);
        assert!(sink.discard(0..size as u64 + 1).is_err());
        // Concurrent writers at disjoint offsets.
        std::thread::scope(|s| {
            for t in 0..4usize {
                let chunk = size / 4;
                let data = pattern(100 + t as u64, chunk);
                model[t * chunk..(t + 1) * chunk].copy_from_slice(&data);
                s.spawn(move || {
                    for piece in (0..chunk).step_by(1000) {
                        let end = (piece + 1000).min(chunk);
                        sink.write_at(&data[piece..end], (t * chunk + piece) as u64).expect("threaded write");
                    }
                });
            }
        });
        sink.flush().expect("flush");
        sink.read_exact_at(&mut all, 0).expect("read back");
        assert!(all == model, "contents differ from the model after discard and threaded writes");
        crate::source::conformance::check(sink, &model);
    }

    #[test]
    fn mem_sink() {
        let s = MemSink::new(20_000);
        check(&s, &vec![0u8; 20_000]);
    }

    #[test]
    fn file_sink() {
        let dir = std::env::temp_dir().join(format!("loopkit-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = dir.join("img");
        let initial = pattern(7, 40_000);
        std::fs::write(&p, &initial).expect("write");
        let s = FileSink::open(&p).expect("open");
        check(&s, &initial);
        drop(s);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
