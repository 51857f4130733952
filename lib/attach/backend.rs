//! The seam between the ublk server and what serves the bytes: a [`Backend`] says how each
//! request splits into pieces ([`Seg`]) on the image file or the raw block device; the server
//! issues the I/O itself through io_uring on the registered file descriptors. [`FileBackend`]
//! serves everything through the image file (optionally decrypting with a legacy/LUKS sector
//! cipher); the remap engine (`--remap`) implements the same trait over the extent map.

use crate::crypto::SectorCipher;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// Which fd a segment's I/O goes to (both registered as io_uring fixed files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The image file (through the file system; `O_DIRECT` where possible).
    Image,
    /// The raw block device the image lives on (remap only).
    Device,
}

/// One piece of a request, in order; the pieces cover the request exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    /// Read or write `len` bytes at byte `offset` of `target`.
    Io {
        /// Where the I/O goes.
        target: Target,
        /// Byte offset in the target.
        offset: u64,
        /// Length in bytes (a multiple of 512).
        len: u32,
    },
    /// Reads: `len` zero bytes, no I/O (a hole or an unwritten extent). Never used for writes.
    Zero {
        /// Length in bytes.
        len: u32,
    },
}

/// A sector cipher between the device and the image: the device shows the plaintext, the image
/// holds the ciphertext. Only served on the copy path (the server transforms its own buffer).
#[derive(Clone)]
pub struct Crypt {
    /// The image's sector cipher (decrypt on read, encrypt on write).
    pub cipher: Arc<dyn SectorCipher>,
    /// IV sector (512-byte units) of device byte 0.
    pub iv_offset_sectors: u64,
}

/// Requests at least this large may be decrypted (encrypted) by several threads at once.
const SPLIT_BYTES: usize = 128 << 10;
/// The smallest part one thread takes of a split request; also the slice timed first.
const PART_BYTES: usize = 64 << 10;
/// Split the rest of a request only when this thread alone would need at least this long for it
/// (by the time the first slice took): below that, starting threads costs more than it saves
/// (AES with AES-NI decrypts 1 MiB in a fraction of a millisecond; emulated or software ciphers
/// take tens of milliseconds).
const SPLIT_WORTH: std::time::Duration = std::time::Duration::from_millis(1);

/// The CPUs the process may run on, taken once by the first caller (the main thread, before
/// the queue threads exist: libublk binds each queue thread to its queue's CPUs, and a thread
/// inherits its creator's binding), and how many there are.
pub(crate) fn process_cpus() -> &'static (Option<rustix::thread::CpuSet>, usize) {
    static CPUS: std::sync::OnceLock<(Option<rustix::thread::CpuSet>, usize)> = std::sync::OnceLock::new();
    CPUS.get_or_init(|| {
        let set = rustix::thread::sched_getaffinity(None).ok();
        let n = set.as_ref().map_or(1, rustix::thread::CpuSet::count).max(1) as usize;
        (set, n)
    })
}

impl Crypt {
    /// Take note of the CPUs this process may use (call on the main thread before the queue
    /// threads start; see [`Crypt::decrypt`]).
    pub fn note_cpus() {
        let _ = process_cpus();
    }

    /// Decrypt `data` (whole cipher sectors) for device byte `offset` in place. A request of
    /// 128 KiB or more whose first 64 KiB took long enough that the rest would take this thread
    /// at least 1 ms is finished by one thread per CPU at once, in parts of whole sectors (this
    /// queue thread takes one), so one submitter's large reads of a slow cipher use every core
    /// as dm-crypt's workers do; a fast one (AES-NI) stays on this thread, where starting
    /// threads would cost more than they save.
    pub fn decrypt(&self, offset: u64, data: &mut [u8]) {
        self.each_part(offset, data, |c, iv, part| c.decrypt_sectors(iv, part));
    }

    /// Encrypt `data` for device byte `offset` in place, split as [`Crypt::decrypt`].
    pub fn encrypt(&self, offset: u64, data: &mut [u8]) {
        self.each_part(offset, data, |c, iv, part| c.encrypt_sectors(iv, part));
    }

    fn each_part(&self, offset: u64, data: &mut [u8], f: impl Fn(&dyn SectorCipher, u64, &mut [u8]) + Sync) {
        self.each_part_if(offset, data, f, |first, rest| first * (rest / PART_BYTES) as u32 >= SPLIT_WORTH);
    }

    /// [`Crypt::each_part`] with the decision to split injected: `worth(time of the first
    /// slice, bytes left)`.
    fn each_part_if(
        &self,
        offset: u64,
        data: &mut [u8],
        f: impl Fn(&dyn SectorCipher, u64, &mut [u8]) + Sync,
        worth: impl Fn(std::time::Duration, usize) -> bool,
    ) {
        let iv0 = self.iv_offset_sectors + offset / 512;
        let cipher = &*self.cipher;
        let (cpus, n) = process_cpus();
        let unit = cipher.sector_bytes().max(512);
        if data.len() < SPLIT_BYTES || *n < 2 || !PART_BYTES.is_multiple_of(unit) {
            f(cipher, iv0, data);
            return;
        }
        // The first slice on this thread, timed: is the rest worth threads?
        let started = std::time::Instant::now();
        let (head, rest) = data.split_at_mut(PART_BYTES);
        f(cipher, iv0, head);
        let iv0 = iv0 + (PART_BYTES / 512) as u64;
        let parts = (rest.len() / PART_BYTES).min(*n);
        if parts < 2 || !worth(started.elapsed(), rest.len()) {
            f(cipher, iv0, rest);
            return;
        }
        let per = (rest.len() / parts).div_ceil(unit) * unit;
        let failed = std::thread::scope(|s| {
            let mut failed = None;
            let mut chunks = rest.chunks_mut(per).enumerate();
            let first = chunks.next();
            for (i, part) in chunks {
                let f = &f;
                let iv = iv0 + (i * per / 512) as u64;
                let started = std::thread::Builder::new().name("loopkit-crypt".into()).spawn_scoped(s, move || {
                    if let Some(set) = cpus {
                        let _ = rustix::thread::sched_setaffinity(None, set);
                    }
                    f(cipher, iv, part);
                });
                if started.is_err() {
                    failed = Some(i);
                    break;
                }
            }
            if let Some((_, part)) = first {
                f(cipher, iv0, part);
            }
            failed
        });
        // A thread that could not start: its part and every later one on this thread.
        if let Some(i) = failed {
            let from = i * per;
            for (k, part) in rest[from..].chunks_mut(per).enumerate() {
                f(cipher, iv0 + ((from + k * per) / 512) as u64, part);
            }
        }
    }
}

impl std::fmt::Debug for Crypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crypt")
            .field("cipher", &self.cipher.dm_name())
            .field("iv_offset_sectors", &self.iv_offset_sectors)
            .finish()
    }
}

/// What a ublk server needs from the thing that serves the bytes.
///
/// The server calls `plan_read`/`plan_write` for every request, issues the returned segments
/// itself (io_uring, fixed files: [`Backend::image_fd`], [`Backend::device_fd`]), and drops the
/// guard once all of them completed. FLUSH runs `fdatasync` (io_uring `Fsync` with the
/// data-sync flag) on every target [`Backend::plan_flush`] lists, taking a
/// [`Backend::sync_ticket`] before and reporting [`Backend::synced`] after each. FUA writes
/// first sync what [`Backend::plan_fua`] lists, then carry `RWF_DSYNC` on every segment; a FUA
/// write on the slow path is written with `RWF_DSYNC` by the backend.
pub trait Backend: Send + Sync + 'static {
    /// Keeps the mapping valid until the request's I/O has completed (dropped after it).
    type Guard;

    /// The device size in bytes (a multiple of 512).
    fn size_bytes(&self) -> u64;
    /// The image file (`O_DIRECT` where possible).
    fn image_fd(&self) -> BorrowedFd<'_>;
    /// The raw block device (remap only).
    fn device_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    /// Whether the backend can write at all (otherwise the device is read-only).
    fn writable(&self) -> bool;
    /// The smallest logical block the device may show (the remap engine: the raw disk's logical
    /// block, 4096 on a 4Kn disk).
    fn logical_block(&self) -> u32 {
        512
    }
    /// The sector cipher, if the device shows a decryption of the image (forces the copy path).
    fn crypt(&self) -> Option<&Crypt> {
        None
    }
    /// `"off"` for the file path; the remap engine reports its state (e.g. `"active"`).
    fn remap_state(&self) -> String {
        "off".into()
    }
    /// The stable code of a stopped remap engine, from the engine's own record of the stop
    /// (never parsed out of [`Backend::remap_state`]'s words); `None` while off or active.
    fn remap_code(&self) -> Option<String> {
        None
    }
    /// The lease the backend holds on the image, if any (remap).
    fn lease(&self) -> Option<String> {
        None
    }
    /// Called about every 200 ms by a thread that holds no guard: the remap engine re-checks
    /// its lease and the file system's state there (and may wait for raw I/O in flight).
    fn watch(&self) {}
    /// How to read `len` bytes at device byte `offset`: segments appended to `out`.
    fn plan_read(&self, offset: u64, len: u32, out: &mut Vec<Seg>) -> io::Result<Self::Guard>;
    /// `Some(guard)` when every byte can be written with plain I/O on the segments put in
    /// `out`; `None` when this write must go through [`Backend::slow_write`] (holes, unwritten
    /// extents…).
    fn plan_write(&self, offset: u64, len: u32, out: &mut Vec<Seg>) -> io::Result<Option<Self::Guard>>;
    /// Write `buf` at device byte `offset` the slow way (blocking; through the file system);
    /// with `fua`, durable when it returns.
    fn slow_write(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()>;
    /// Which targets a FLUSH must `fdatasync` (the device's cache, the image's metadata).
    fn plan_flush(&self, out: &mut Vec<Target>);
    /// Which targets must be synced before the segments of a planned FUA write are issued (the
    /// remap engine: the image, when file-path writes allocated blocks since its last sync).
    fn plan_fua(&self, _segs: &[Seg], _out: &mut Vec<Target>) {}
    /// Taken just before a sync of `target` is issued; handed back to [`Backend::synced`].
    fn sync_ticket(&self, _target: Target) -> u64 {
        0
    }
    /// A sync of `target` issued after `ticket` was taken completed (`for_fua`: one that
    /// [`Backend::plan_fua`] asked for).
    fn synced(&self, _target: Target, _ticket: u64, _for_fua: bool) {}
    /// Blocking flush of everything (at shutdown): device flush + `fdatasync` as needed.
    fn flush(&self) -> io::Result<()>;
    /// The granularity (bytes) of DISCARD and WRITE_ZEROES when the device advertises them:
    /// only when the image's file system punches holes (`fallocate`), the data needs no
    /// transformation and the mapping follows. `None` (the default): not advertised (the block
    /// layer then writes zeros for `BLKZEROOUT`, and `fstrim` reports discard unsupported).
    fn discard_granularity(&self) -> Option<u32> {
        None
    }
    /// Where a DISCARD or WRITE_ZEROES of `len` bytes at device byte `offset` goes: the byte
    /// offset in the image file, punched (or zero-ranged with `NOUNMAP`) through the file system,
    /// after which the range reads as zeros.
    fn plan_discard(&self, _offset: u64, _len: u64) -> io::Result<u64> {
        Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
    }
    /// A backend whose DISCARD or WRITE_ZEROES must wait for I/O in flight (the remap engine
    /// waits for raw I/O planned from the old map) runs it on a thread of its own, since the
    /// queue thread must go on completing its other requests meanwhile: `Some` of a descriptor
    /// from which the result (an `i32`, 0 or `-errno`, native endian) can be read once it is
    /// done. `zero`: zero in place without unmapping (`NOUNMAP`). `None` (the default): use
    /// [`Backend::plan_discard`].
    fn discard_off_thread(&self, _offset: u64, _len: u64, _zero: bool) -> Option<io::Result<OwnedFd>> {
        None
    }
}

/// Serves the device through the image file: every request is one `Io { Image, base + offset }`.
#[derive(Debug)]
pub struct FileBackend {
    file: File,
    base: u64,
    size: u64,
    writable: bool,
    crypt: Option<Crypt>,
    /// DISCARD/WRITE_ZEROES granularity, when the file system punches holes.
    discard: Option<u32>,
}

impl FileBackend {
    /// Serve `size` bytes of `file` starting at byte `base` (the payload window), writable if
    /// `writable` (the file must then be open for writing), decrypting with `crypt` if given.
    ///
    /// # Errors
    /// `InvalidInput` when `size` is zero or not a multiple of 512 (or of the cipher's sector),
    /// or `base` is not a multiple of 512.
    pub fn new(file: File, base: u64, size: u64, writable: bool, crypt: Option<Crypt>) -> crate::Result<FileBackend> {
        let unit = crypt.as_ref().map_or(512, |c| c.cipher.sector_bytes() as u64).max(512);
        if size == 0 {
            return Err(crate::Error::invalid("the image is empty: nothing to attach"));
        }
        if !size.is_multiple_of(unit) {
            return Err(crate::Error::invalid(format!(
                "the image's size ({size} bytes) is not a multiple of {unit}: a block device cannot show it exactly \
                 (pad it with truncate, or copy the whole sectors out)"
            )));
        }
        if !base.is_multiple_of(512) {
            return Err(crate::Error::unsupported(format!(
                "the payload starts at byte {base}, not a multiple of 512: it cannot be served as a block device"
            )));
        }
        let discard = if writable && crypt.is_none() { punch_granularity(&file) } else { None };
        Ok(FileBackend { file, base, size, writable, crypt, discard })
    }
}

/// The file system's block size when it punches holes in `file`: probed by punching (with
/// `KEEP_SIZE`) one block just past its end, which changes nothing where it works and fails
/// with `EOPNOTSUPP` where it does not.
pub(super) fn punch_granularity(file: impl AsFd) -> Option<u32> {
    let file = file.as_fd();
    use rustix::fs::FallocateFlags as F;
    let st = rustix::fs::fstat(file).ok()?;
    let block = u32::try_from(st.st_blksize).ok().filter(|b| b.is_power_of_two() && (512..=65536).contains(b))?;
    let end = u64::try_from(st.st_size).ok()?;
    rustix::fs::fallocate(file, F::PUNCH_HOLE | F::KEEP_SIZE, end, u64::from(block)).ok()?;
    Some(block)
}

impl Backend for FileBackend {
    type Guard = ();

    fn size_bytes(&self) -> u64 {
        self.size
    }
    fn image_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
    fn writable(&self) -> bool {
        self.writable
    }
    fn crypt(&self) -> Option<&Crypt> {
        self.crypt.as_ref()
    }
    fn plan_read(&self, offset: u64, len: u32, out: &mut Vec<Seg>) -> io::Result<()> {
        check_range(offset, len, self.size)?;
        out.push(Seg::Io { target: Target::Image, offset: self.base + offset, len });
        Ok(())
    }
    fn plan_write(&self, offset: u64, len: u32, out: &mut Vec<Seg>) -> io::Result<Option<()>> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(libc::EROFS));
        }
        check_range(offset, len, self.size)?;
        out.push(Seg::Io { target: Target::Image, offset: self.base + offset, len });
        Ok(Some(()))
    }
    fn slow_write(&self, buf: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        check_range(
            offset,
            u32::try_from(buf.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
            self.size,
        )?;
        self.file.write_all_at(buf, self.base + offset)?;
        if fua { self.file.sync_data() } else { Ok(()) }
    }
    fn plan_flush(&self, out: &mut Vec<Target>) {
        if self.writable {
            out.push(Target::Image);
        }
    }
    fn flush(&self) -> io::Result<()> {
        if self.writable { self.file.sync_data() } else { Ok(()) }
    }
    fn discard_granularity(&self) -> Option<u32> {
        self.discard
    }
    fn plan_discard(&self, offset: u64, len: u64) -> io::Result<u64> {
        if self.discard.is_none() {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(self.base + offset),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
}

/// EINVAL unless `offset..offset+len` lies inside `0..size`.
fn check_range(offset: u64, len: u32, size: u64) -> io::Result<()> {
    match offset.checked_add(u64::from(len)) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpfile(len: u64) -> File {
        let f = tempfile_in_target();
        f.set_len(len).unwrap();
        f
    }

    fn tempfile_in_target() -> File {
        let dir = std::env::temp_dir();
        let p = dir.join(format!("loopkit-backend-{}-{:?}", std::process::id(), std::thread::current().id()));
        let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        f
    }

    #[test]
    fn file_backend_maps_one_segment_at_the_window() {
        let b = FileBackend::new(tmpfile(8192), 1024, 4096, true, None).unwrap();
        let mut segs = Vec::new();
        b.plan_read(512, 1024, &mut segs).unwrap();
        assert_eq!(segs, [Seg::Io { target: Target::Image, offset: 1536, len: 1024 }]);
        segs.clear();
        assert!(b.plan_write(0, 4096, &mut segs).unwrap().is_some());
        assert_eq!(segs, [Seg::Io { target: Target::Image, offset: 1024, len: 4096 }]);
        assert!(b.plan_read(4096, 512, &mut Vec::new()).is_err(), "past the end");
        assert!(b.plan_read(u64::MAX - 10, 512, &mut Vec::new()).is_err(), "overflow");
        let mut t = Vec::new();
        b.plan_flush(&mut t);
        assert_eq!(t, [Target::Image]);
    }

    #[test]
    fn sizes_that_are_not_whole_sectors_are_refused() {
        let e = FileBackend::new(tmpfile(1000), 0, 1000, false, None).unwrap_err();
        assert!(e.to_string().contains("not a multiple of 512"), "{e}");
        assert!(FileBackend::new(tmpfile(0), 0, 0, false, None).is_err());
        assert!(FileBackend::new(tmpfile(2048), 100, 1024, false, None).is_err());
    }

    #[test]
    fn split_crypt_equals_the_whole_request_on_one_thread() {
        // 4096-byte XTS sectors (LUKS2), 1 MiB + 3 sectors at device byte 8192 with an IV
        // offset: every part must use the IV sector of its own position, whole sectors only.
        // The oracle is the cipher over the whole buffer on this thread.
        for sector in [512usize, 4096] {
            let key: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(7).wrapping_add(3)).collect();
            let cipher = Arc::new(crate::crypto::xts::XtsSectors::new(&key, sector).unwrap());
            let c = Crypt { cipher: cipher.clone(), iv_offset_sectors: 77 };
            let len = (1 << 20) + 3 * sector;
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut whole = plain.clone();
            cipher.encrypt_sectors(77 + 8192 / 512, &mut whole);
            let always = |_: std::time::Duration, _: usize| true;
            let mut split = plain.clone();
            c.each_part_if(8192, &mut split, |c, iv, d| c.encrypt_sectors(iv, d), always);
            assert!(whole == split, "encrypt, {sector}-byte sectors");
            c.each_part_if(8192, &mut split, |c, iv, d| c.decrypt_sectors(iv, d), always);
            assert!(split == plain, "decrypt, {sector}-byte sectors");
            // As the server calls it (split or not, by the time the first slice took).
            c.encrypt(8192, &mut split);
            assert!(whole == split, "encrypt, {sector}-byte sectors, timed");
        }
    }

    /// Benchmark, not a test: `cargo test --release --lib attach::backend::tests::crypt_throughput
    /// -- --ignored --nocapture`. Decrypts 256 MiB in 1 MiB requests with aes-cbc-plain (the
    /// `--decrypt` benchmark's cipher), on this thread only and split as the server does, and
    /// prints MB/s of each.
    #[test]
    #[ignore]
    fn crypt_throughput() {
        let key = [0x5au8; 32];
        let cipher = Arc::new(crate::crypto::cbc::CbcSectors::new(&key, crate::crypto::cbc::IvScheme::Plain).unwrap());
        let c = Crypt { cipher: cipher.clone(), iv_offset_sectors: 0 };
        let rate = |f: &mut dyn FnMut(u64, &mut [u8])| {
            let mut buf = vec![0x33u8; 1 << 20];
            let t = std::time::Instant::now();
            for i in 0..256u64 {
                f(i << 20, &mut buf);
            }
            256.0 * 1.048576 / t.elapsed().as_secs_f64()
        };
        let one = rate(&mut |off, b| cipher.decrypt_sectors(off / 512, b));
        let split = rate(&mut |off, b| c.each_part_if(off, b, |c, iv, d| c.decrypt_sectors(iv, d), |_, _| true));
        let timed = rate(&mut |off, b| c.decrypt(off, b));
        println!(
            "aes-cbc-plain 256, 1 MiB requests: {one:.0} MB/s on one thread, {split:.0} MB/s always split over {} CPUs, \
             {timed:.0} MB/s split when the first 64 KiB says it pays",
            process_cpus().1
        );
    }

    #[test]
    fn read_only_backend_refuses_writes() {
        let b = FileBackend::new(tmpfile(4096), 0, 4096, false, None).unwrap();
        let e = b.plan_write(0, 512, &mut Vec::new()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS));
        let mut t = Vec::new();
        b.plan_flush(&mut t);
        assert!(t.is_empty());
    }
}
