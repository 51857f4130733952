//! Output I/O that bypasses the page cache: aligned buffers, `O_DIRECT` writes of whole aligned
//! chunks (so a final `fdatasync` has little left to flush and 1 GiB of output does not sit in
//! memory), and read-backs that come from the device rather than from memory — `O_DIRECT`, or,
//! where the file system refuses `O_DIRECT`, buffered reads after `posix_fadvise(DONTNEED)` of
//! the synced file (its clean cached pages are dropped, so the next read goes to the device).
//!
//! A verification that re-reads a file it has just written through the page cache proves only
//! that memory holds the right bytes; these read-backs catch a write that never reached the
//! disk, or a device that returns other bytes than it was given.
//!
//! The crate's one direct-I/O module: [`AlignedBuf`] (the one aligned buffer), [`read_at_aligned`]
//! and [`write_at_aligned`] (`O_DIRECT` reads and writes at a device's own alignment, bouncing
//! unaligned buffers), [`DirectWriter`] and [`ReadBack`]. No `unsafe`: buffers are aligned by
//! taking an aligned window of a slightly larger `Vec`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Alignment of `O_DIRECT` buffers, offsets and lengths (covers 512- and 4096-byte devices).
pub const ALIGN: usize = 4096;

fn o_direct() -> i32 {
    rustix::fs::OFlags::DIRECT.bits() as i32
}

fn is_einval(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// A byte buffer whose start is aligned (to [`ALIGN`], or to the alignment given) as `O_DIRECT`
/// wants: the one aligned buffer of the crate, with no `unsafe` — an aligned window of a slightly
/// larger `Vec` (the window is found from the address, so it is always aligned, and a zero length
/// is an ordinary empty window).
#[derive(Debug)]
pub struct AlignedBuf {
    v: Vec<u8>,
    start: usize,
    len: usize,
    align: usize,
}

impl AlignedBuf {
    /// An empty [`ALIGN`]-aligned buffer with room for `capacity` bytes.
    pub fn new(capacity: usize) -> AlignedBuf {
        AlignedBuf::with_align(capacity, ALIGN)
    }

    /// `len` zero bytes aligned to `align` (a power of two, e.g. a device's `STATX_DIOALIGN`).
    ///
    /// # Errors
    /// `InvalidInput` when `align` is not a power of two.
    pub fn zeroed(len: usize, align: usize) -> io::Result<AlignedBuf> {
        if !align.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("alignment {align} is not a power of two"),
            ));
        }
        let mut b = AlignedBuf::with_align(len, align);
        b.len = len;
        Ok(b)
    }

    fn with_align(capacity: usize, align: usize) -> AlignedBuf {
        let v = vec![0u8; capacity + align];
        let start = (align - (v.as_ptr() as usize) % align) % align;
        AlignedBuf { v, start, len: 0, align }
    }

    /// Set the length (contents unspecified), growing the allocation if needed.
    pub fn set_len(&mut self, len: usize) {
        if self.start + len > self.v.len() {
            *self = AlignedBuf::with_align(len, self.align);
        }
        self.len = len;
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.v[self.start..self.start + self.len]
    }

    /// The bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.v[self.start..self.start + self.len]
    }
}

/// Whether `ptr`, `offset` and `len` are all multiples of `align` (what `O_DIRECT` needs).
pub fn is_aligned(ptr: *const u8, offset: u64, len: usize, align: usize) -> bool {
    (ptr as usize).is_multiple_of(align) && offset.is_multiple_of(align as u64) && len.is_multiple_of(align)
}

/// Fill `buf` from `f` (opened `O_DIRECT`, alignment `align`) at `offset`, through an aligned
/// bounce buffer when `buf` or the range is not aligned. Bytes past the end of `f` read as zeros.
///
/// # Errors
/// The read error.
pub fn read_at_aligned(f: &File, buf: &mut [u8], offset: u64, align: usize) -> io::Result<()> {
    if is_aligned(buf.as_ptr(), offset, buf.len(), align) {
        let n = read_full(f, buf, offset)?;
        buf[n..].fill(0);
        return Ok(());
    }
    let a = align as u64;
    let start = offset / a * a;
    let end = (offset + buf.len() as u64).div_ceil(a) * a;
    let mut tmp = AlignedBuf::zeroed((end - start) as usize, align)?;
    let span = tmp.as_mut_slice();
    let n = read_full(f, span, start)?;
    span[n..].fill(0);
    let at = (offset - start) as usize;
    buf.copy_from_slice(&span[at..at + buf.len()]);
    Ok(())
}

/// Write all of `buf` to `f` (opened `O_DIRECT`, alignment `align`) at `offset`, an aligned
/// range (an unaligned buffer is copied to an aligned one first); with `dsync`, `RWF_DSYNC`.
///
/// # Errors
/// `InvalidInput` for an unaligned range; the write error.
pub fn write_at_aligned(f: &File, buf: &[u8], offset: u64, align: usize, dsync: bool) -> io::Result<()> {
    if !offset.is_multiple_of(align as u64) || !buf.len().is_multiple_of(align) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "internal: unaligned direct write"));
    }
    let bounce;
    let data: &[u8] = if (buf.as_ptr() as usize).is_multiple_of(align) {
        buf
    } else {
        let mut b = AlignedBuf::zeroed(buf.len(), align)?;
        b.as_mut_slice().copy_from_slice(buf);
        bounce = b;
        bounce.as_slice()
    };
    let flags = if dsync { rustix::io::ReadWriteFlags::DSYNC } else { rustix::io::ReadWriteFlags::empty() };
    let mut done = 0usize;
    while done < data.len() {
        let iov = [io::IoSlice::new(&data[done..])];
        match rustix::io::pwritev2(f, &iov, offset + done as u64, flags) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(io::Error::from(e)),
        }
    }
    Ok(())
}

fn aligned(buf: &[u8], at: u64) -> bool {
    is_aligned(buf.as_ptr(), at, buf.len(), ALIGN)
}

/// Open `path` again with `O_DIRECT` (plus `write`), checking it is still the inode `same_as`.
/// `None` where the file system refuses `O_DIRECT`.
fn reopen_direct(path: &Path, same_as: &File, write: bool) -> io::Result<Option<File>> {
    let f = match OpenOptions::new().read(true).write(write).custom_flags(o_direct()).open(path) {
        Ok(f) => f,
        Err(e) if is_einval(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let (a, b) = (f.metadata()?, same_as.metadata()?);
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(io::Error::other(format!("{} was replaced while it was being written", path.display())));
    }
    Ok(Some(f))
}

/// Drop the cached pages of `file` (clean ones: call it after `fdatasync`), so the next buffered
/// read of it comes from the device.
///
/// # Errors
/// The `posix_fadvise` error.
pub fn drop_cached(file: &File) -> io::Result<()> {
    rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed).map_err(io::Error::from)
}

/// Positioned writes that go around the page cache when they can: whole [`ALIGN`]-aligned
/// buffers at aligned offsets through an `O_DIRECT` handle, anything else (and everything on a
/// file system without `O_DIRECT`) through the ordinary handle. Shared by worker threads.
#[derive(Debug)]
pub struct DirectWriter<'a> {
    buffered: &'a File,
    direct: Option<File>,
    direct_ok: AtomicBool,
}

impl<'a> DirectWriter<'a> {
    /// A writer for `file` (open read-write at `path`).
    ///
    /// # Errors
    /// Opening `path` again failed (other than `O_DIRECT` being refused), or it is no longer
    /// `file`.
    pub fn new(path: &Path, file: &'a File) -> io::Result<DirectWriter<'a>> {
        let direct = reopen_direct(path, file, true)?;
        Ok(DirectWriter { direct_ok: AtomicBool::new(direct.is_some()), buffered: file, direct })
    }

    /// Whether aligned writes still bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct_ok.load(Ordering::Relaxed)
    }

    /// `pwrite` all of `buf` at `at`.
    ///
    /// # Errors
    /// The write error (`EINVAL` from `O_DIRECT` is not one: the write is redone buffered and
    /// later writes stay buffered).
    pub fn write_all_at(&self, buf: &[u8], at: u64) -> io::Result<()> {
        if let Some(d) = &self.direct
            && self.is_direct()
            && aligned(buf, at)
        {
            match d.write_all_at(buf, at) {
                Err(e) if is_einval(&e) => self.direct_ok.store(false, Ordering::Relaxed),
                r => return r,
            }
        }
        self.buffered.write_all_at(buf, at)
    }
}

/// Reading back a file that was just written and made durable, from the device.
#[derive(Debug)]
pub struct ReadBack {
    buffered: File,
    direct: Option<File>,
    direct_ok: AtomicBool,
}

impl ReadBack {
    /// Drop `written`'s cached pages (it must be synced) and open `path` (the same file) for
    /// reading from the device.
    ///
    /// # Errors
    /// Opening failed, or `path` is no longer `written`.
    pub fn open(path: &Path, written: &File) -> io::Result<ReadBack> {
        // Best effort: with O_DIRECT the cache does not matter for the payload, and without it
        // this is what makes the buffered reads go to the device.
        let _ = drop_cached(written);
        let direct = reopen_direct(path, written, false)?;
        let buffered = File::open(path)?;
        let (a, b) = (buffered.metadata()?, written.metadata()?);
        if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
            return Err(io::Error::other(format!("{} was replaced while it was being written", path.display())));
        }
        Ok(ReadBack { direct_ok: AtomicBool::new(direct.is_some()), buffered, direct })
    }

    /// Whether reads go through `O_DIRECT` (otherwise: after dropping the cached pages).
    pub fn is_direct(&self) -> bool {
        self.direct_ok.load(Ordering::Relaxed)
    }

    /// The plain handle (its reads go through the page cache, which [`ReadBack::open`] emptied
    /// for this file: the first read of each page comes from the device).
    pub fn file(&self) -> &File {
        &self.buffered
    }

    /// Read `len` bytes at `at` (an [`ALIGN`]-aligned offset for the `O_DIRECT` path) into
    /// `buf`; returns them.
    ///
    /// # Errors
    /// The read error; `UnexpectedEof` if the file is shorter.
    pub fn read_exact_at<'b>(&self, buf: &'b mut AlignedBuf, at: u64, len: usize) -> io::Result<&'b mut [u8]> {
        let padded = len.next_multiple_of(ALIGN);
        buf.set_len(padded);
        if let Some(d) = &self.direct
            && self.is_direct()
            && aligned(buf.as_slice(), at)
        {
            match read_full(d, buf.as_mut_slice(), at) {
                Ok(n) if n >= len => return Ok(&mut buf.as_mut_slice()[..len]),
                Ok(_) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Err(e) if is_einval(&e) => self.direct_ok.store(false, Ordering::Relaxed),
                Err(e) => return Err(e),
            }
        }
        buf.set_len(len);
        self.buffered.read_exact_at(buf.as_mut_slice(), at)?;
        Ok(buf.as_mut_slice())
    }
}

/// `pread` until `buf` is full or the end of the file; returns the bytes read.
fn read_full(f: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Aligned and unaligned writes and reads round-trip, on whatever the temp directory's file
    /// system supports (O_DIRECT or the fallback); a tail shorter than a block reads back exactly.
    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("loopkit-direct-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        let w = DirectWriter::new(&p, &f).unwrap();
        let mut a = AlignedBuf::new(3 * ALIGN);
        a.set_len(2 * ALIGN);
        assert_eq!(a.as_slice().as_ptr() as usize % ALIGN, 0);
        a.as_mut_slice().iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        w.write_all_at(a.as_slice(), ALIGN as u64).unwrap();
        w.write_all_at(b"tail", 3 * ALIGN as u64).unwrap();
        w.write_all_at(b"head", 1).unwrap();
        f.sync_data().unwrap();
        let r = ReadBack::open(&p, &f).unwrap();
        let mut b = AlignedBuf::new(16);
        let got = r.read_exact_at(&mut b, ALIGN as u64, 2 * ALIGN).unwrap();
        assert_eq!(&got[..], a.as_slice());
        assert_eq!(&r.read_exact_at(&mut b, 3 * ALIGN as u64, 4).unwrap()[..], b"tail");
        assert_eq!(r.read_exact_at(&mut b, 3 * ALIGN as u64, 5).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(&r.read_exact_at(&mut b, 1, 4).unwrap()[..], b"head");
        eprintln!("direct writes: {}, direct reads: {}", w.is_direct(), r.is_direct());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Zero-length and odd-sized buffers are aligned and zeroed; a bad alignment is an error.
    #[test]
    fn zeroed_buffers() {
        for align in [1, 512, 4096, 65536] {
            for len in [0, 1, 511, 4096, 10_000] {
                let mut b = AlignedBuf::zeroed(len, align).unwrap();
                assert_eq!(b.as_slice().len(), len);
                assert_eq!(b.as_slice().as_ptr() as usize % align, 0);
                assert!(b.as_slice().iter().all(|&x| x == 0));
                b.as_mut_slice().fill(7);
                b.set_len(len + 3 * align);
                assert_eq!(b.as_slice().as_ptr() as usize % align, 0);
            }
        }
        assert_eq!(AlignedBuf::zeroed(8, 0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(AlignedBuf::zeroed(8, 768).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    /// `write_at_aligned` / `read_at_aligned` with unaligned buffers and ranges, on a plain
    /// (buffered) handle, where every alignment works: the bytes round-trip and the tail past
    /// the end reads as zeros.
    #[test]
    fn aligned_helpers_round_trip() {
        let dir = std::env::temp_dir().join(format!("loopkit-direct-helpers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        let f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        let data: Vec<u8> = (0..1024 + 1).map(|i| i as u8).collect();
        write_at_aligned(&f, &data[1..], 512, 512, false).unwrap();
        assert_eq!(
            write_at_aligned(&f, &data[..100], 512, 512, false).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let mut got = vec![1u8; 700];
        read_at_aligned(&f, &mut got, 1000, 512).unwrap();
        assert_eq!(&got[..536], &data[489..]);
        assert!(got[536..].iter().all(|&x| x == 0));
        read_at_aligned(&f, &mut got[..512], 512, 512).unwrap();
        assert_eq!(&got[..512], &data[1..513]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
