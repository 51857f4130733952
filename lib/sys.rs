//! The one place with `unsafe` for system calls: the ioctls and `fcntl`s that neither `rustix`
//! nor `std` wrap (FIEMAP, `BLKGETSIZE64`, `FS_IOC_FSGETXATTR`, `XFS_IOC_FSGEOMETRY`,
//! `F_SETLEASE`/`F_GETLEASE`, `unshare`, `kcmp`, `sync_file_range`, `mlock`/`madvise` of secrets), the AVX2/GFNI
//! GF(2^8) Reed–Solomon encoder loop ([`gf_lfsr`]), the cache prefetch hint of the
//! extent map's lookup ([`prefetch`]), `fork` (daemonizing `loopkit mount`) and the io_uring
//! submission of the remap engine's freeze probe ([`FreezeProbe`]) and of ublk control commands
//! ([`ublk_ctrl_cmd`]). Aligned `O_DIRECT` buffers
//! need no `unsafe` (`output::direct::AlignedBuf`). Everything else (fstatfs, fadvise, futimens, fallocate,
//! `FS_IOC_GETFLAGS`, `BLKSSZGET`, `SEEK_DATA`) goes through `rustix`'s safe API at the call site.
//!
//! Every ioctl number is computed from the kernel's `_IOR`/`_IOWR` definition and the size of the
//! `#[repr(C)]` UAPI struct below (`rustix::ioctl::opcode`), so it is right on every target, not
//! a constant copied from one architecture.
#![allow(unsafe_code)]

use rustix::ioctl::{Getter, Ioctl, IoctlOutput, Opcode, opcode};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn os(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// `BLKGETSIZE64`: the size of a block device in bytes (`_IOR(0x12, 114, size_t)`).
///
/// # Errors
/// `ENOTTY` when `fd` is not a block device, or another OS error.
pub fn block_device_size(fd: BorrowedFd<'_>) -> io::Result<u64> {
    const BLKGETSIZE64: Opcode = opcode::read::<usize>(0x12, 114);
    // SAFETY: the kernel writes one u64 through the pointer Getter passes, which points at a
    // u64 it owns (on 32-bit targets the number encodes sizeof(size_t) = 4, but the kernel still
    // writes 8 bytes, hence the u64 buffer).
    unsafe { rustix::ioctl::ioctl(fd, Getter::<BLKGETSIZE64, u64>::new()) }.map_err(os)
}

/// `struct fsxattr` (`include/uapi/linux/fs.h`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct FsXattr {
    /// `FS_XFLAG_*` bits.
    pub xflags: u32,
    /// Extent size hint.
    pub extsize: u32,
    /// Number of extents.
    pub nextents: u32,
    /// Project id.
    pub projid: u32,
    /// CoW extent size hint.
    pub cowextsize: u32,
    pad: [u8; 8],
}

/// `FS_XFLAG_REALTIME`: the file's data lives on the XFS realtime device.
pub const FS_XFLAG_REALTIME: u32 = 0x1;
/// `FS_XFLAG_DAX`: the file uses DAX.
pub const FS_XFLAG_DAX: u32 = 0x8000;

/// `FS_IOC_FSGETXATTR` (`_IOR('X', 31, struct fsxattr)`).
///
/// # Errors
/// `ENOTTY`/`EOPNOTSUPP` on file systems without it, or another OS error.
pub fn fs_get_xattr(fd: BorrowedFd<'_>) -> io::Result<FsXattr> {
    const FS_IOC_FSGETXATTR: Opcode = opcode::read::<FsXattr>(b'X', 31);
    // SAFETY: the ioctl fills one `struct fsxattr`, whose layout FsXattr reproduces (28 bytes).
    unsafe { rustix::ioctl::ioctl(fd, Getter::<FS_IOC_FSGETXATTR, FsXattr>::new()) }.map_err(os)
}

/// `struct xfs_fsop_geom` (`fs/xfs/libxfs/xfs_fs.h`, the v5 layout: 256 bytes); only `flags`
/// is read.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct XfsFsopGeom {
    head: [u32; 8],
    counts: [u64; 4],
    uuid: [u8; 16],
    sunit: u32,
    swidth: u32,
    version: i32,
    /// `XFS_FSOP_GEOM_FLAGS_*` bits.
    pub flags: u32,
    tail: [u32; 6],
    reserved: [u64; 17],
}

/// `XFS_FSOP_GEOM_FLAGS_REFLINK`: files on this XFS can share blocks (reflink, dedupe).
pub const XFS_FSOP_GEOM_FLAGS_REFLINK: u32 = 1 << 20;

/// `XFS_IOC_FSGEOMETRY` (`_IOR('X', 126, struct xfs_fsop_geom)`, Linux 5.1+) on any file of
/// an XFS file system. Needs no privilege.
///
/// # Errors
/// `ENOTTY` on other file systems or older kernels, or another OS error.
pub fn xfs_geometry(fd: BorrowedFd<'_>) -> io::Result<XfsFsopGeom> {
    const XFS_IOC_FSGEOMETRY: Opcode = opcode::read::<XfsFsopGeom>(b'X', 126);
    // SAFETY: the ioctl fills one `struct xfs_fsop_geom` (256 bytes), whose layout XfsFsopGeom
    // reproduces (size checked in the tests); Getter passes a pointer to one it owns.
    unsafe { rustix::ioctl::ioctl(fd, Getter::<XFS_IOC_FSGEOMETRY, XfsFsopGeom>::new()) }.map_err(os)
}

/// `struct fiemap` header (`include/uapi/linux/fiemap.h`), followed in memory by
/// `fm_extent_count` [`RawFiemapExtent`]s.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct FiemapHeader {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

/// `struct fiemap_extent`: one extent as the kernel reports it (bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RawFiemapExtent {
    /// Logical offset in the file.
    pub fe_logical: u64,
    /// Physical offset on the file system's device.
    pub fe_physical: u64,
    /// Length.
    pub fe_length: u64,
    reserved64: [u64; 2],
    /// `FIEMAP_EXTENT_*` flags.
    pub fe_flags: u32,
    reserved: [u32; 3],
}

/// `FIEMAP_FLAG_SYNC`: write back dirty data before mapping.
pub const FIEMAP_FLAG_SYNC: u32 = 0x1;

/// One FIEMAP call in a buffer of `u64`s (8-byte aligned for both structs).
struct FiemapCall<'a> {
    buf: &'a mut [u64],
}

const HEADER_WORDS: usize = size_of::<FiemapHeader>() / 8;
const EXTENT_WORDS: usize = size_of::<RawFiemapExtent>() / 8;

// SAFETY: FS_IOC_FIEMAP reads the header at the pointer and writes the header and up to
// `fm_extent_count` extents after it; the buffer holds exactly the header plus that many extents
// (allocated in `fiemap` below) and lives as long as the call.
unsafe impl Ioctl for FiemapCall<'_> {
    type Output = ();
    const IS_MUTATING: bool = true;

    fn opcode(&self) -> Opcode {
        opcode::read_write::<FiemapHeader>(b'f', 11)
    }

    fn as_ptr(&mut self) -> *mut core::ffi::c_void {
        self.buf.as_mut_ptr().cast()
    }

    unsafe fn output_from_ptr(_: IoctlOutput, _: *mut core::ffi::c_void) -> rustix::io::Result<()> {
        Ok(())
    }
}

/// One `FS_IOC_FIEMAP` call: the extents intersecting `[start, start+length)`, at most
/// `max_extents` of them (the last one carries `FIEMAP_EXTENT_LAST` only if the file has no
/// more). Returns the extents the kernel filled in.
///
/// # Errors
/// `EOPNOTSUPP`/`ENOTTY` when the file system has no FIEMAP, `EBADR` for unknown flags, or
/// another OS error.
pub fn fiemap(
    fd: BorrowedFd<'_>,
    start: u64,
    length: u64,
    flags: u32,
    max_extents: u32,
) -> io::Result<Vec<RawFiemapExtent>> {
    let count = max_extents.clamp(1, 4096);
    let mut buf = vec![0u64; HEADER_WORDS + EXTENT_WORDS * count as usize];
    let header = FiemapHeader {
        fm_start: start,
        fm_length: length,
        fm_flags: flags,
        fm_mapped_extents: 0,
        fm_extent_count: count,
        fm_reserved: 0,
    };
    write_words(&mut buf[..HEADER_WORDS], &header);
    // SAFETY: see the `Ioctl` impl: the buffer is sized for `count` extents.
    unsafe { rustix::ioctl::ioctl(fd, FiemapCall { buf: &mut buf }) }.map_err(os)?;
    let header: FiemapHeader = read_words(&buf[..HEADER_WORDS]);
    let mapped = header.fm_mapped_extents.min(count) as usize;
    Ok((0..mapped)
        .map(|i| {
            let at = HEADER_WORDS + i * EXTENT_WORDS;
            read_words(&buf[at..at + EXTENT_WORDS])
        })
        .collect())
}

/// Plain old data: a `#[repr(C)]` struct of integers whose size is a multiple of 8, with no
/// padding, for which every bit pattern is a valid value — what [`read_words`] and
/// [`write_words`] may copy from and to raw `u64` words (the bytemuck `Pod` contract).
///
/// # Safety
/// Implement it only for types that satisfy all of the above.
unsafe trait Plain: Copy {}

// SAFETY: `#[repr(C)]`, u64/u32 fields only (2 × u64 + 4 × u32 = 32 bytes, no padding), every
// bit pattern valid.
unsafe impl Plain for FiemapHeader {}
// SAFETY: `#[repr(C)]`, u64/u32 fields only (5 × u64 + 4 × u32 = 56 bytes, no padding), every
// bit pattern valid.
unsafe impl Plain for RawFiemapExtent {}

/// Copy `value`'s bytes into `words` (exactly `size_of::<T>()` bytes; panics otherwise).
fn write_words<T: Plain>(words: &mut [u64], value: &T) {
    assert_eq!(words.len() * 8, size_of::<T>());
    // SAFETY: `words` has exactly `size_of::<T>()` writable bytes (asserted); the write is
    // unaligned-tolerant; `T: Plain` has no padding, so no uninitialised bytes reach `words`.
    unsafe { std::ptr::write_unaligned(words.as_mut_ptr().cast::<T>(), *value) }
}

/// A `T` from `words` (exactly `size_of::<T>()` bytes; panics otherwise).
fn read_words<T: Plain>(words: &[u64]) -> T {
    assert_eq!(words.len() * 8, size_of::<T>());
    // SAFETY: `words` has exactly `size_of::<T>()` initialised bytes (asserted); the read is
    // unaligned-tolerant; every bit pattern is a valid `T: Plain`.
    unsafe { std::ptr::read_unaligned(words.as_ptr().cast::<T>()) }
}

/// A lease on an open file (`F_SETLEASE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// `F_RDLCK`.
    Read,
    /// `F_WRLCK`: nobody else may have the file open.
    Write,
    /// `F_UNLCK`: none.
    None,
}

impl Lease {
    fn raw(self) -> libc::c_int {
        match self {
            Lease::Read => libc::F_RDLCK,
            Lease::Write => libc::F_WRLCK,
            Lease::None => libc::F_UNLCK,
        }
    }
}

/// `fcntl(fd, F_SETLEASE, kind)`.
///
/// # Errors
/// `EAGAIN` when another open file description conflicts (someone else has the file open),
/// `EACCES` when the caller does not own the file and lacks `CAP_LEASE`, or another OS error.
pub fn set_lease(fd: BorrowedFd<'_>, kind: Lease) -> io::Result<()> {
    // SAFETY: F_SETLEASE takes an integer argument and touches no user memory.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, kind.raw()) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `fcntl(fd, F_GETLEASE)`: the lease held now. A write lease that is being broken reads as
/// [`Lease::Read`] (downgrade pending) or [`Lease::None`].
///
/// # Errors
/// An OS error.
pub fn get_lease(fd: BorrowedFd<'_>) -> io::Result<Lease> {
    // SAFETY: F_GETLEASE takes no argument and touches no user memory.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETLEASE) };
    match r {
        r if r < 0 => Err(io::Error::last_os_error()),
        r if r == libc::F_WRLCK => Ok(Lease::Write),
        r if r == libc::F_RDLCK => Ok(Lease::Read),
        _ => Ok(Lease::None),
    }
}

/// `unshare(CLONE_NEWNS)`: the calling thread gets its own mount namespace (threads it starts
/// later inherit it). The ublk server needs it so that an unmount triggered at its exit cannot
/// wait on I/O only it could serve (libublk README).
///
/// # Errors
/// The OS error (`EPERM` without `CAP_SYS_ADMIN`).
pub fn unshare_mount_namespace() -> io::Result<()> {
    // SAFETY: only CLONE_NEWNS is unshared (it implies CLONE_FS): the thread gets its own mount
    // namespace and root/cwd copy. No memory, file table or signal state changes, so nothing the
    // rest of the process relies on is invalidated.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }.map_err(os)
}

/// A small io_uring used to ask whether a write to a file would have to wait for a file-system
/// freeze, without waiting ([`FreezeProbe::would_wait`]).
pub struct FreezeProbe {
    ring: io_uring::IoUring,
}

impl FreezeProbe {
    /// A two-entry ring.
    ///
    /// # Errors
    /// The OS error (`ENOSYS`, `EPERM` when io_uring is disabled).
    pub fn new() -> io::Result<FreezeProbe> {
        Ok(FreezeProbe { ring: io_uring::IoUring::new(2)? })
    }

    /// Submit a zero-length write with `RWF_NOWAIT` to `fd` (a regular file open for writing)
    /// and wait for its completion; returns the completion's result (0 or `-errno`). On a
    /// kernel whose io_uring takes freeze protection with a trylock for `NOWAIT` writes
    /// (`io_kiocb_start_write`, Linux 6.x), a frozen file system answers `-EAGAIN` at once; an
    /// older kernel blocks here until the thaw. A zero-length write changes nothing: ext4 and XFS
    /// return before touching the inode's times (ext4 after its shutdown check: `-EIO`).
    ///
    /// # Errors
    /// The OS error of submitting.
    pub fn would_wait(&mut self, fd: BorrowedFd<'_>) -> io::Result<i32> {
        let byte = [0u8; 1];
        let sqe = io_uring::opcode::Write::new(io_uring::types::Fd(fd.as_raw_fd()), byte.as_ptr(), 0)
            .offset(0)
            .rw_flags(libc::RWF_NOWAIT as _)
            .build();
        // Any completion left over from an interrupted earlier call.
        while self.ring.completion().next().is_some() {}
        // SAFETY: the entry refers to `byte` (a zero-length write reads none of it) and to `fd`;
        // both outlive the request, which completes before this function returns
        // (`submit_and_wait(1)` below, retried on EINTR, and the completion is consumed).
        unsafe { self.ring.submission().push(&sqe) }.map_err(|_| io::Error::other("probe ring full"))?;
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if let Some(cqe) = self.ring.completion().next() {
                return Ok(cqe.result());
            }
        }
    }
}

/// One ublk control command on `/dev/ublk-control` (an io_uring `URING_CMD` in a 128-byte
/// entry, on a two-entry ring of its own), waited for until its completion arrives: `cmd_op` for
/// device `dev_id` with `data` (the command's `data[0]`) and, when `buf_len` is not 0, a buffer of
/// that many bytes the driver reads (`input`, copied in) or fills. Returns the completion's
/// result (`>= 0` or `-errno`) and the buffer.
///
/// libublk 0.4.8's synchronous control path (`UblkCtrl::new_simple` and the commands on it)
/// ignores the result of `io_uring_enter` and takes whatever completion is first, so an
/// interrupted wait leaves the command in flight while the buffer it writes to (the
/// `GET_DEV_INFO2` copy with the device path) is freed and the command is sent again: this one
/// waits for the very completion, retrying on `EINTR`, and never lets go of the buffer while the
/// request may still use it.
///
/// # Errors
/// The OS error of opening the control device, setting up the ring or submitting.
pub fn ublk_ctrl_cmd(cmd_op: u32, dev_id: u32, data: u64, buf_len: u16, input: &[u8]) -> io::Result<(i32, Vec<u8>)> {
    use io_uring::{cqueue, squeue};
    let ctrl = std::fs::OpenOptions::new().read(true).write(true).open("/dev/ublk-control")?;
    let mut ring = io_uring::IoUring::<squeue::Entry128, cqueue::Entry>::builder().build(2)?;
    let mut buf = vec![0u8; usize::from(buf_len)];
    let n = input.len().min(buf.len());
    buf[..n].copy_from_slice(&input[..n]);
    // struct ublksrv_ctrl_cmd (32 bytes): dev_id, queue_id (-1: none), len, addr, data[1],
    // dev_path_len, pad, reserved.
    let mut cmd = [0u8; 80];
    cmd[0..4].copy_from_slice(&dev_id.to_ne_bytes());
    cmd[4..6].copy_from_slice(&u16::MAX.to_ne_bytes());
    cmd[6..8].copy_from_slice(&buf_len.to_ne_bytes());
    let addr = if buf.is_empty() { 0 } else { buf.as_mut_ptr() as u64 };
    cmd[8..16].copy_from_slice(&addr.to_ne_bytes());
    cmd[16..24].copy_from_slice(&data.to_ne_bytes());
    const TOKEN: u64 = 0x75626c6b;
    let sqe = io_uring::opcode::UringCmd80::new(io_uring::types::Fd(ctrl.as_raw_fd()), cmd_op)
        .cmd(cmd)
        .build()
        .user_data(TOKEN);
    // SAFETY: the entry refers to `ctrl` and to `buf`'s heap allocation (`addr`, `buf_len`
    // bytes), which stay alive and unmoved until its completion is taken below; if waiting fails
    // before that, both are leaked (never freed under the driver), as is the ring.
    unsafe { ring.submission().push(&sqe) }.map_err(|_| io::Error::other("ublk control ring full"))?;
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                std::mem::forget(buf);
                std::mem::forget(ctrl);
                std::mem::forget(ring);
                return Err(e);
            }
        }
        if let Some(cqe) = ring.completion().find(|c| c.user_data() == TOKEN) {
            return Ok((cqe.result(), buf));
        }
    }
}

/// Which side of a [`fork`] this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The original process; the child's pid.
    Parent(i32),
    /// The new process.
    Child,
}

/// `fork()`: a copy of this process (`loopkit mount` daemonizing once the image is open).
///
/// Call it only while no other thread of the process holds a lock the child will need (the
/// child has only the calling thread): `mount` forks before it starts any thread of its own.
///
/// # Errors
/// The OS error (`EAGAIN`, `ENOMEM`).
pub fn fork() -> io::Result<Forked> {
    // SAFETY: fork has no memory-safety preconditions of its own; the hazard is a lock held by
    // another thread at the moment of the fork, which would stay locked forever in the child. The
    // caller forks before starting threads; the only other thread is the Ctrl-C handler's, which
    // waits in read(2) holding no lock, and glibc's malloc resets its own locks in the child.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Whether two descriptors of this process refer to the same open file description
/// (`kcmp(KCMP_FILE)`): a `dup` of a descriptor is the same description, a second `open` of the
/// same file is not. `b` is a descriptor number of this process (it may have been closed
/// meanwhile: then `EBADF`).
///
/// # Errors
/// The OS error (`ENOSYS` on a kernel without `kcmp`, `EBADF`).
pub fn same_open_file(a: BorrowedFd<'_>, b: std::os::fd::RawFd) -> io::Result<bool> {
    const KCMP_FILE: libc::c_long = 0;
    let pid = libc::c_long::from(rustix::process::getpid().as_raw_nonzero().get());
    // SAFETY: kcmp with KCMP_FILE takes two pids and two descriptor numbers as integers and
    // touches no user memory; a closed or reused number `b` only changes the answer.
    let r = unsafe {
        libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, libc::c_long::from(a.as_raw_fd()), libc::c_long::from(b))
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r == 0) }
}

/// Lock the pages holding `len` bytes at `ptr` in memory (`mlock`: never swapped) and keep them
/// out of core dumps (`madvise(MADV_DONTDUMP)`). The whole pages around the range are affected
/// and stay so for the life of the process. Best effort: returns the first error (an
/// `RLIMIT_MEMLOCK` too small gives `ENOMEM`/`EPERM` from `mlock`), after trying both.
///
/// # Errors
/// The OS error of `mlock` or `madvise`.
pub fn lock_secret_memory(ptr: *const u8, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let page = rustix::param::page_size();
    let start = (ptr as usize) & !(page - 1);
    let end = (ptr as usize).saturating_add(len).div_ceil(page) * page;
    let span = end - start;
    // SAFETY: mlock and madvise(MADV_DONTDUMP) change only how the kernel treats the pages
    // (residency, inclusion in core dumps); they never change their contents or mapping, so the
    // memory `ptr` points into stays valid for whoever owns it. The range is page-aligned as
    // both calls require and lies inside mappings that hold `ptr..ptr+len`.
    let locked = unsafe { rustix::mm::mlock(start as *mut libc::c_void, span) };
    // SAFETY: as above.
    let advised = unsafe { rustix::mm::madvise(start as *mut libc::c_void, span, rustix::mm::Advice::LinuxDontDump) };
    locked.and(advised).map_err(os)
}

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)`: start writing back the dirty cached pages of `fd`
/// in `offset..offset+len` (`len` 0: to the end of the file) without waiting for them, so a
/// later `fsync` finds less to do. Neither a durability promise nor a barrier: the caller still
/// syncs. (It may block while the device's queue is full.)
///
/// # Errors
/// The OS error (`EIO` for an earlier failed writeback, `ESPIPE` on a pipe, …).
pub fn start_writeback(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(n)) = (libc::off64_t::try_from(offset), libc::off64_t::try_from(len)) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: sync_file_range takes a descriptor, two integers and flags and touches no user
    // memory; a bad descriptor or range is reported as an error.
    let r = unsafe { libc::sync_file_range(fd.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// `st_dev`/`st_rdev` split into (major, minor).
pub fn dev_major_minor(dev: u64) -> (u32, u32) {
    (rustix::fs::major(dev), rustix::fs::minor(dev))
}

/// Multiplication by one constant `c` of GF(2^8), in the forms the encoder bodies of
/// [`gf_lfsr`] use: the products with the 16 low nibbles (`lo[x] = c·x`) and the 16 high
/// nibbles (`hi[x] = c·(x << 4)`), and the 8×8 bit matrix of `x ↦ c·x` as `GF2P8AFFINEQB`
/// takes it (byte `7 − i` holds the input bits that make output bit `i`).
#[derive(Debug, Clone, Copy)]
pub struct GfMul {
    /// `c·x` for `x` < 16.
    pub lo: [u8; 16],
    /// `c·(x << 4)` for `x` < 16.
    pub hi: [u8; 16],
    /// The bit matrix.
    pub affine: u64,
}

impl GfMul {
    /// The tables of `x ↦ mul(c, x)` for a field multiplication `mul` (any polynomial).
    pub fn new(c: u8, mul: impl Fn(u8, u8) -> u8) -> GfMul {
        let (mut lo, mut hi) = ([0u8; 16], [0u8; 16]);
        for x in 0..16u8 {
            lo[x as usize] = mul(c, x);
            hi[x as usize] = mul(c, x << 4);
        }
        let mut affine = 0u64;
        for j in 0..8 {
            let col = mul(c, 1 << j);
            for i in 0..8 {
                if col >> i & 1 == 1 {
                    affine |= 1u64 << (8 * (7 - i) + j);
                }
            }
        }
        GfMul { lo, hi, affine }
    }

    fn apply(&self, x: u8) -> u8 {
        self.lo[(x & 15) as usize] ^ self.hi[(x >> 4) as usize]
    }
}

/// The SIMD body [`gf_lfsr`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GfKernel {
    /// `GF2P8AFFINEQB` on 512-bit vectors (AVX-512): one instruction per 64 products.
    Gfni512,
    /// `GF2P8AFFINEQB` on 256-bit vectors: one instruction per 32 products.
    Gfni,
    /// AVX2 byte shuffles of the nibble tables: two per 32 products.
    Avx2,
    /// Table lookups, one byte at a time.
    Scalar,
}

impl GfKernel {
    /// The fastest body this CPU runs (checked at run time).
    pub fn best() -> GfKernel {
        #[cfg(target_arch = "x86_64")]
        {
            if GfKernel::Gfni512.available() {
                return GfKernel::Gfni512;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("gfni") {
                return GfKernel::Gfni;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return GfKernel::Avx2;
            }
        }
        GfKernel::Scalar
    }

    /// Whether this CPU runs it.
    pub fn available(self) -> bool {
        match self {
            GfKernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            GfKernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            GfKernel::Gfni512 => {
                std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("gfni")
            }
            #[cfg(target_arch = "x86_64")]
            GfKernel::Gfni => {
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("gfni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

/// Bytes of codeword columns one SIMD pass keeps in flight (4 vectors per parity row).
const GF_STRIP: usize = 128;

/// The Reed–Solomon encoder's inner loop (`formats::dvdisaster::create`): the systematic LFSR
/// encoding of many codewords at once, one codeword per byte column. Column `c` < `len` of the
/// data rows (`rows[j][c]`, `j` = 0 … ndata−1) gets its `nroots` = `coef.len()` parity bytes in
/// `parity[k][c]`; `coef[k]` multiplies by generator coefficient `g[k+1]`. Per data row:
/// `fb = d ⊕ r[0]`, the register shifts by one, `r[k] ⊕= g[k+1]·fb`. `len` is cut to the
/// shortest row. `kernel` must be [`GfKernel::available`] (else the scalar body runs).
pub fn gf_lfsr(kernel: GfKernel, rows: &[Vec<u8>], parity: &mut [Vec<u8>], len: usize, coef: &[GfMul]) {
    let nr = coef.len().min(parity.len());
    if nr == 0 {
        return;
    }
    let len = rows.iter().map(Vec::len).chain(parity.iter().map(Vec::len)).fold(len, usize::min);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if kernel != GfKernel::Scalar && kernel.available() {
        // SAFETY: the CPU supports the features the chosen body needs (checked just above);
        // the bodies touch only `rows[j][..len]` and `parity[k][..len]` (`len` is at most every
        // row's length) and `coef[..nr]`.
        done = unsafe {
            match kernel {
                GfKernel::Gfni512 => gf_lfsr_gfni512(rows, &mut parity[..nr], len, &coef[..nr]),
                GfKernel::Gfni => gf_lfsr_gfni(rows, &mut parity[..nr], len, &coef[..nr]),
                _ => gf_lfsr_avx2(rows, &mut parity[..nr], len, &coef[..nr]),
            }
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = kernel;
    // The columns the SIMD bodies left (all of them without one), one at a time.
    let mut reg = vec![0u8; nr];
    for c in done..len {
        reg.fill(0);
        for row in rows {
            let fb = row[c] ^ reg[0];
            reg.copy_within(1.., 0);
            reg[nr - 1] = 0;
            for (r, m) in reg.iter_mut().zip(coef) {
                *r ^= m.apply(fb);
            }
        }
        for (p, &r) in parity.iter_mut().zip(&reg) {
            p[c] = r;
        }
    }
}

/// The `GF2P8AFFINEQB` bodies of [`gf_lfsr`], one per vector width: whole [`GF_STRIP`]-byte
/// strips of columns, `GF_STRIP / $bytes` vectors per parity row; each returns how many columns
/// it did. One source for both widths, so they cannot drift apart.
macro_rules! gf_lfsr_affine_body {
    ($(#[$doc:meta])* $name:ident, $features:literal, $vec:ident, $bytes:literal,
     $load:ident, $store:ident, $xor:ident, $affine:ident, $set1:ident, $zero:ident) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(rows: &[Vec<u8>], parity: &mut [Vec<u8>], len: usize, coef: &[GfMul]) -> usize {
            use std::arch::x86_64::{$vec, _MM_HINT_T0, _mm_prefetch, $affine, $load, $set1, $zero, $store, $xor};
            const V: usize = GF_STRIP / $bytes;
            let nr = coef.len();
            let mats: Vec<$vec> = coef.iter().map(|m| $set1(m.affine as i64)).collect();
            let mut ring: Vec<[$vec; V]> = vec![[$zero(); V]; nr];
            let mut c = 0;
            // SAFETY: every load is `rows[j][c..c + GF_STRIP]` and every store `parity[k][c..c +
            // GF_STRIP]` with `c + GF_STRIP <= len`, inside every row (the caller's contract);
            // `ring` and `mats` are indexed below `nr`. The prefetch hints may name addresses past
            // a row (`wrapping_add`, never dereferenced): a prefetch never faults.
            unsafe {
                while c + GF_STRIP <= len {
                    for r in ring.iter_mut() {
                        *r = [$zero(); V];
                    }
                    let mut head = 0usize;
                    for row in rows {
                        let p = row.as_ptr().add(c);
                        // The next strip of this row: loaded while the other rows of this one are
                        // done (the rows are far apart; the hardware prefetcher does not follow them).
                        for l in 0..GF_STRIP / 64 {
                            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(GF_STRIP + 64 * l).cast::<i8>());
                        }
                        let mut fb = [$zero(); V];
                        for (v, f) in fb.iter_mut().enumerate() {
                            *f = $xor($load(p.add($bytes * v).cast()), ring[head][v]);
                        }
                        ring[head] = [$zero(); V];
                        head = if head + 1 == nr { 0 } else { head + 1 };
                        let (tail, front) = ring.split_at_mut(head);
                        for (r, m) in front.iter_mut().chain(tail.iter_mut()).zip(&mats) {
                            for v in 0..V {
                                r[v] = $xor(r[v], $affine::<0>(fb[v], *m));
                            }
                        }
                    }
                    let (tail, front) = ring.split_at(head);
                    for (out, r) in parity.iter_mut().zip(front.iter().chain(tail)) {
                        let q = out.as_mut_ptr().add(c);
                        for (v, x) in r.iter().enumerate() {
                            $store(q.add($bytes * v).cast(), *x);
                        }
                    }
                    c += GF_STRIP;
                }
            }
            c
        }
    };
}

gf_lfsr_affine_body!(
    /// The GFNI body of [`gf_lfsr`] on 256-bit vectors.
    ///
    /// # Safety
    /// The CPU must support AVX2 and GFNI; `len` at most the length of every row of `rows` and
    /// `parity`; `parity.len() == coef.len() > 0`.
    gf_lfsr_gfni, "avx2,gfni", __m256i, 32,
    _mm256_loadu_si256, _mm256_storeu_si256, _mm256_xor_si256, _mm256_gf2p8affine_epi64_epi8,
    _mm256_set1_epi64x, _mm256_setzero_si256
);

gf_lfsr_affine_body!(
    /// The AVX-512 GFNI body of [`gf_lfsr`]: 512-bit vectors (half the instructions per strip).
    ///
    /// # Safety
    /// The CPU must support AVX-512F and GFNI; the rest as [`gf_lfsr_gfni`].
    gf_lfsr_gfni512, "avx512f,gfni", __m512i, 64,
    _mm512_loadu_si512, _mm512_storeu_si512, _mm512_xor_si512, _mm512_gf2p8affine_epi64_epi8,
    _mm512_set1_epi64, _mm512_setzero_si512
);

/// The AVX2 body of [`gf_lfsr`] (nibble-table shuffles): as [`gf_lfsr_gfni`].
///
/// # Safety
/// The CPU must support AVX2; the rest as [`gf_lfsr_gfni`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gf_lfsr_avx2(rows: &[Vec<u8>], parity: &mut [Vec<u8>], len: usize, coef: &[GfMul]) -> usize {
    use std::arch::x86_64::{
        __m128i, __m256i, _MM_HINT_T0, _mm_loadu_si128, _mm_prefetch, _mm256_and_si256, _mm256_broadcastsi128_si256,
        _mm256_loadu_si256, _mm256_set1_epi8, _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_srli_epi16,
        _mm256_storeu_si256, _mm256_xor_si256,
    };
    const V: usize = GF_STRIP / 32;
    let nr = coef.len();
    let mut c = 0;
    // SAFETY: as in gf_lfsr_gfni; the table loads read the 16-byte arrays of `coef`.
    unsafe {
        let tabs: Vec<(__m256i, __m256i)> = coef
            .iter()
            .map(|m| {
                (
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(m.lo.as_ptr().cast::<__m128i>())),
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(m.hi.as_ptr().cast::<__m128i>())),
                )
            })
            .collect();
        let mask = _mm256_set1_epi8(0x0f);
        let mut ring: Vec<[__m256i; V]> = vec![[_mm256_setzero_si256(); V]; nr];
        while c + GF_STRIP <= len {
            for r in ring.iter_mut() {
                *r = [_mm256_setzero_si256(); V];
            }
            let mut head = 0usize;
            for row in rows {
                let p = row.as_ptr().add(c);
                // The next strip of this row: loaded while the other rows of this one are done
                // (the rows are far apart; the hardware prefetcher does not follow them).
                for l in 0..GF_STRIP / 64 {
                    _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(GF_STRIP + 64 * l).cast::<i8>());
                }
                let (mut fl, mut fh) = ([_mm256_setzero_si256(); V], [_mm256_setzero_si256(); V]);
                for v in 0..V {
                    let f = _mm256_xor_si256(_mm256_loadu_si256(p.add(32 * v).cast::<__m256i>()), ring[head][v]);
                    fl[v] = _mm256_and_si256(f, mask);
                    fh[v] = _mm256_and_si256(_mm256_srli_epi16::<4>(f), mask);
                }
                ring[head] = [_mm256_setzero_si256(); V];
                head = if head + 1 == nr { 0 } else { head + 1 };
                let (tail, front) = ring.split_at_mut(head);
                for (r, (lo, hi)) in front.iter_mut().chain(tail.iter_mut()).zip(&tabs) {
                    for v in 0..V {
                        let prod = _mm256_xor_si256(_mm256_shuffle_epi8(*lo, fl[v]), _mm256_shuffle_epi8(*hi, fh[v]));
                        r[v] = _mm256_xor_si256(r[v], prod);
                    }
                }
            }
            let (tail, front) = ring.split_at(head);
            for (out, r) in parity.iter_mut().zip(front.iter().chain(tail)) {
                let q = out.as_mut_ptr().add(c);
                for (v, x) in r.iter().enumerate() {
                    _mm256_storeu_si256(q.add(32 * v).cast::<__m256i>(), *x);
                }
            }
            c += GF_STRIP;
        }
    }
    c
}

/// Ask the CPU to start loading the cache line holding `*r` (a hint: no effect on what any
/// load returns). The extent map's lookup issues it for the bodies and starts it is about to
/// read, so their memory latencies overlap.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 of an address taken from a live reference; a prefetch never faults and
    // changes no memory (SSE, part of the x86_64 baseline).
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(std::ptr::from_ref(r).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn uapi_struct_sizes_match_the_kernel() {
        // include/uapi/linux/fiemap.h and fs.h
        assert_eq!(size_of::<FiemapHeader>(), 32);
        assert_eq!(size_of::<RawFiemapExtent>(), 56);
        // The `Plain` types: no padding (the sum of the fields' sizes).
        assert_eq!(size_of::<FiemapHeader>(), 2 * 8 + 4 * 4);
        assert_eq!(size_of::<RawFiemapExtent>(), 3 * 8 + 2 * 8 + 4 + 3 * 4);
        assert_eq!(size_of::<FsXattr>(), 28);
        assert_eq!(size_of::<XfsFsopGeom>(), 256);
        assert_eq!(std::mem::offset_of!(XfsFsopGeom, flags), 92);
    }

    #[test]
    fn opcodes_match_linux_raw_sys_on_this_target() {
        use linux_raw_sys::ioctl as k;
        assert_eq!(opcode::read::<usize>(0x12, 114) as u64, u64::from(k::BLKGETSIZE64));
        assert_eq!(opcode::read_write::<FiemapHeader>(b'f', 11) as u64, u64::from(k::FS_IOC_FIEMAP));
        assert_eq!(opcode::read::<FsXattr>(b'X', 31) as u64, u64::from(k::FS_IOC_FSGETXATTR));
    }

    #[test]
    fn duplicates_share_the_open_file_but_a_second_open_does_not() {
        use std::os::fd::AsRawFd;
        let p = std::env::temp_dir().join(format!("loopkit-sys-kcmp-{}", std::process::id()));
        std::fs::write(&p, b"x").unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let dup = f.try_clone().unwrap();
        let other = std::fs::File::open(&p).unwrap();
        match same_open_file(f.as_fd(), dup.as_raw_fd()) {
            Ok(same) => {
                assert!(same);
                assert!(!same_open_file(f.as_fd(), other.as_raw_fd()).unwrap());
            }
            // A kernel without kcmp (or a sandbox denying it): callers then treat it as another file.
            Err(e) => assert!(matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)), "{e}"),
        }
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn secret_memory_is_locked_or_says_why() {
        let key = [7u8; 100];
        match lock_secret_memory(key.as_ptr(), key.len()) {
            Ok(()) => {}
            Err(e) => assert!(matches!(e.raw_os_error(), Some(libc::ENOMEM | libc::EPERM | libc::EAGAIN)), "{e}"),
        }
        assert!(lock_secret_memory(key.as_ptr(), 0).is_ok());
        assert_eq!(key[99], 7, "the contents are untouched");
    }

    #[test]
    fn leases_and_fiemap_on_a_temp_file() {
        let dir = std::env::temp_dir().join(format!("loopkit-sys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        std::fs::write(&p, vec![1u8; 65536]).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        // FIEMAP may be unsupported on the temp dir's file system (tmpfs): both answers are fine,
        // but a supported one must describe the data.
        if let Ok(ext) = fiemap(f.as_fd(), 0, u64::MAX, FIEMAP_FLAG_SYNC, 64) {
            let total: u64 = ext.iter().map(|e| e.fe_length).sum();
            assert!(total >= 65536, "{ext:?}");
        }
        if set_lease(f.as_fd(), Lease::Write).is_ok() {
            assert_eq!(get_lease(f.as_fd()).unwrap(), Lease::Write);
            set_lease(f.as_fd(), Lease::None).unwrap();
            assert_eq!(get_lease(f.as_fd()).unwrap(), Lease::None);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
