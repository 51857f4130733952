//! Preflight: may this image file be remapped (its I/O sent to the disk blocks FIEMAP reports)?
//! Checks the kernel's swapfile rules adapted to a file that must stay readable through its file
//! system: the file-system allow-list (ext2/3/4, XFS), a real backing block device (`st_dev`,
//! never translated further down the stack), no XFS realtime file, no ext4 `data=journal` or
//! per-file data journaling, no fscrypt / compressed / verity / DAX file, not an active swap
//! file, FIEMAP available; on a file system that can share blocks (XFS with reflink), an image
//! only root can write (the dedupe rule, [`sharing_refusal`]); a lease-break time the engine can
//! meet ([`lease_break_refusal`]). After the lease, [`other_holders`] looks for descriptors the
//! lease cannot see. Each refusal has a stable code and a precise message.

use crate::sys;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Why an image cannot be remapped: an error-severity [`Finding`](crate::finding::Finding) whose
/// stable code is `remap.…` (docs/JSON.md).
pub type Refusal = crate::finding::Finding;

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::error(code, message)
}

/// The file system and device an image file lives on.
#[derive(Debug, Clone, Default)]
pub struct Backing {
    /// `statfs` magic.
    pub fs_magic: u64,
    /// File-system name (from the mount table, else from the magic).
    pub fs_name: String,
    /// `st_dev` of the file: the device FIEMAP offsets refer to.
    pub dev: (u32, u32),
    /// That device's node, when found (`/dev/loop0`, `/dev/sda2`, `/dev/dm-1`).
    pub device: Option<PathBuf>,
    /// Its size in bytes.
    pub device_bytes: Option<u64>,
    /// Its logical block size (raw I/O alignment).
    pub logical_block: u32,
    /// Its physical block size.
    pub physical_block: u32,
    /// Where the file system is mounted (first mount of the device in this namespace).
    pub mount_point: Option<String>,
    /// The file system's mount options (super options).
    pub mount_options: Option<String>,
    /// File-system block size (`statfs` f_bsize).
    pub fs_block: u64,
}

/// The outcome of the checks.
#[derive(Debug, Clone, Default)]
pub struct Preflight {
    /// What backs the file.
    pub backing: Backing,
    /// Why remapping is not safe (empty: safe).
    pub refusals: Vec<Refusal>,
    /// Facts worth knowing that do not prevent remapping.
    pub notes: Vec<crate::finding::Finding>,
    /// The inode flags (`FS_IOC_GETFLAGS`), when readable.
    pub inode_flags: Option<u32>,
}

impl Preflight {
    /// Whether every check passed.
    pub fn is_safe(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// `statfs` magics by name (`include/uapi/linux/magic.h`); the first two are allowed.
const FS_MAGICS: &[(u64, &str)] = &[
    (0xEF53, "ext2/ext3/ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0x858_458F6, "ramfs"),
    (0x794C_7630, "overlayfs"),
    (0x6969, "nfs"),
    (0x6573_5546, "fuse"),
    (0xF2F5_2010, "f2fs"),
    (0x2FC1_2FC1, "zfs"),
    (0xCA45_1A4E, "bcachefs"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x00C3_6400, "ceph"),
    (0x0102_1997, "9p"),
    (0x7371_7368, "squashfs"),
    (0xE0F5_E1E2, "erofs"),
    (0x9660, "iso9660"),
    (0x4D44, "vfat"),
    (0x2011_BAB0, "exfat"),
    (0x7366_746E, "ntfs3"),
    (0x1501_3346, "udf"),
    (0x5265_4973, "reiserfs"),
    (0x3153_464A, "jfs"),
    (0x3434, "nilfs2"),
    (0x0116_1970, "gfs2"),
    (0x7461_636F, "ocfs2"),
    (0x6265_6572, "sysfs"),
    (0x9FA0, "proc"),
    (0x5346_4F43, "afs"),
];

const EXT_MAGIC: u64 = 0xEF53;
const XFS_MAGIC: u64 = 0x5846_5342;
/// File systems with `remap_file_range` (reflink/dedupe) besides XFS: btrfs, bcachefs, ocfs2.
const SHARING_MAGICS: &[u64] = &[0x9123_683E, 0xCA45_1A4E, 0x7461_636F];

/// The lowest `/proc/sys/fs/lease-break-time` (seconds) remapping accepts. When a lease break
/// is not answered within that time the kernel takes the lease away and lets the opener go
/// ahead, while raw writes may still be queued; the engine's answer (drain raw I/O in flight,
/// flush the device cache, drop cached pages) must fit well inside it. 10 s leaves room for a
/// device cache flush on a slow disk; the kernel's default is 45 s.
pub const LEASE_BREAK_FLOOR_SECS: u64 = 10;

/// The refusal, if any, for a `/proc/sys/fs/lease-break-time` text (`None`: unreadable, which
/// is refused too: the bound cannot be known).
pub fn lease_break_refusal(text: Option<&str>) -> Option<Refusal> {
    let value = text.and_then(|t| t.trim().parse::<u64>().ok());
    match value {
        Some(v) if v >= LEASE_BREAK_FLOOR_SECS => None,
        Some(v) => Some(refuse(
            "remap.lease-break-time",
            format!(
                "/proc/sys/fs/lease-break-time is {v} s, below the {LEASE_BREAK_FLOOR_SECS} s remapping needs: the \
                 kernel could take the lease away while raw writes are still queued"
            ),
        )),
        None => Some(refuse("remap.lease-break-time", "cannot read /proc/sys/fs/lease-break-time")),
    }
}

/// Whether files on the file system of `file` (magic `fs_magic`) can have their blocks
/// remapped by another file's reflink or dedupe: XFS when `XFS_IOC_FSGEOMETRY` reports
/// `XFS_FSOP_GEOM_FLAGS_REFLINK` (or cannot be read), btrfs, bcachefs, ocfs2. ext2/3/4 have no
/// `remap_file_range`.
pub fn can_share_blocks(file: &File, fs_magic: u64) -> bool {
    if fs_magic == XFS_MAGIC {
        return sys::xfs_geometry(file.as_fd()).map_or(true, |g| g.flags & sys::XFS_FSOP_GEOM_FLAGS_REFLINK != 0);
    }
    SHARING_MAGICS.contains(&fs_magic)
}

/// Whether a POSIX access ACL (`system.posix_acl_access`, the kernel's xattr format: a 4-byte
/// version, then 8-byte entries `{tag u16, perm u16, id u32}`) grants write to anyone but the
/// owner. An ACL that cannot be parsed counts as granting it.
pub fn acl_grants_write(acl: &[u8]) -> bool {
    const ACL_USER_OBJ: u16 = 0x01;
    const ACL_MASK: u16 = 0x10;
    const ACL_WRITE: u16 = 0x02;
    if acl.len() < 4 || !(acl.len() - 4).is_multiple_of(8) {
        return true;
    }
    acl[4..].chunks_exact(8).any(|e| {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        tag != ACL_USER_OBJ && tag != ACL_MASK && perm & ACL_WRITE != 0
    })
}

/// The dedupe rule. Through a descriptor opened with access mode 3 (which no lease sees) the
/// file's owner, or anyone allowed to write it, may `FIDEDUPERANGE` into the image
/// (`may_dedupe_file` in `fs/remap_range.c`), which moves its blocks without breaking the lease.
/// On a file system that can share blocks, remap only an image that root owns and nobody else
/// may write: mode bits (`uid`, `mode`) and the access ACL (`acl`, when present).
pub fn sharing_refusal(path: &Path, fs: &str, uid: u32, mode: u32, acl: Option<&[u8]>) -> Option<Refusal> {
    let why = if uid != 0 {
        format!("is owned by uid {uid}")
    } else if mode & 0o022 != 0 {
        format!("is writable by {} (mode {:o})", if mode & 0o020 != 0 { "its group" } else { "others" }, mode & 0o7777)
    } else if acl.is_some_and(acl_grants_write) {
        "has an access ACL that lets others write it".to_string()
    } else {
        return None;
    };
    Some(refuse(
        "remap.shareable-not-root-only",
        format!(
            "{} {why} on {fs}, a file system with reflink/dedupe: its owner or a writer could dedupe into it \
             through a descriptor the lease cannot see (opened with access mode 3) and move its blocks under \
             the raw I/O; remap only images owned by root and writable by root alone (chown root, chmod go-w, \
             no ACL granting write)",
            path.display()
        ),
    ))
}

/// Descriptors of the file behind `file` held anywhere but in `file` itself: every process's
/// `/proc/PID/fd` (a `stat` through the link: nothing is opened, so no lease breaks) and the
/// files registered in io_uring rings (`/proc/PID/fdinfo` of a ring, matched by path). Best
/// effort: a descriptor inside an `SCM_RIGHTS` message in flight, a ring's file matched only by
/// a path that was renamed, and processes whose `/proc` entries we may not read (counted in
/// `.1`) are invisible. Returns the holders found (`pid N (comm) fd M`) and the number of
/// processes that could not be examined.
pub fn other_holders(file: &File) -> (Vec<String>, usize) {
    use std::os::fd::AsRawFd;
    let mut found = Vec::new();
    let mut unreadable = 0usize;
    let Ok(me) = file.metadata() else { return (vec!["the image itself cannot be examined".into()], 0) };
    let (dev, ino) = (me.dev(), me.ino());
    let own_pid = std::process::id();
    let own_fd = file.as_raw_fd();
    let own_path = std::fs::read_link(format!("/proc/self/fd/{own_fd}")).ok();
    let Ok(procs) = std::fs::read_dir("/proc") else { return (vec!["/proc cannot be read".into()], 0) };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let comm =
            || std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim().to_string()).unwrap_or_default();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            // Gone meanwhile (ENOENT) is fine; anything else is a blind spot.
            if Path::new(&format!("/proc/{pid}")).exists() {
                unreadable += 1;
            }
            continue;
        };
        for fd in fds.flatten() {
            let Some(n) = fd.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            if pid == own_pid && n == own_fd {
                continue;
            }
            // Our own duplicates of the same open file description (the descriptor `attach`
            // opened IMAGE with and keeps for the file path): the lease counts descriptions,
            // not descriptors, so these are the engine's own. Another open in this process is
            // still a holder.
            if pid == own_pid && sys::same_open_file(file.as_fd(), n).unwrap_or(false) {
                continue;
            }
            let link = fd.path();
            if let Ok(m) = std::fs::metadata(&link)
                && m.dev() == dev
                && m.ino() == ino
            {
                found.push(format!("pid {pid} ({}) fd {n}", comm()));
                continue;
            }
            let is_ring = std::fs::read_link(&link).is_ok_and(|t| t.as_os_str() == "anon_inode:[io_uring]");
            if is_ring
                && let Some(own) = &own_path
                && let Ok(info) = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{n}"))
                && ring_user_files(&info).iter().any(|f| Path::new(f) == own)
            {
                found.push(format!("pid {pid} ({}) io_uring fd {n} (registered file)", comm()));
            }
        }
    }
    (found, unreadable)
}

/// The paths listed under `UserFiles:` in an io_uring's fdinfo (`io_uring/fdinfo.c`: lines
/// `%5u: path`).
pub fn ring_user_files(fdinfo: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in fdinfo.lines() {
        if line.starts_with("UserFiles:") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        let t = line.trim_start();
        match t.split_once(": ") {
            Some((idx, path)) if !idx.is_empty() && idx.bytes().all(|b| b.is_ascii_digit()) => {
                if path != "<none>" {
                    out.push(path.to_string());
                }
            }
            _ => break,
        }
    }
    out
}

/// The name of a `statfs` magic.
pub fn fs_name_of_magic(magic: u64) -> String {
    FS_MAGICS
        .iter()
        .find(|(m, _)| *m == magic)
        .map_or_else(|| format!("unknown ({magic:#x})"), |(_, n)| (*n).to_string())
}

/// A mount-table line for a device (`/proc/self/mountinfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    /// Mount point.
    pub mount_point: String,
    /// File-system type.
    pub fs_type: String,
    /// Super-block options.
    pub super_options: String,
}

/// The first mount of device `dev` in a mountinfo text (`proc(5)`: fields 3 = major:minor,
/// 5 = mount point, then after ` - `: type, source, super options). Octal escapes in the mount
/// point are decoded.
pub fn find_mount(mountinfo: &str, dev: (u32, u32)) -> Option<MountLine> {
    let want = format!("{}:{}", dev.0, dev.1);
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let f: Vec<&str> = left.split(' ').collect();
        if f.get(2) != Some(&want.as_str()) {
            return None;
        }
        let r: Vec<&str> = right.split(' ').collect();
        Some(MountLine {
            mount_point: unescape_octal(f.get(4)?),
            fs_type: (*r.first()?).to_string(),
            super_options: r.get(2).copied().unwrap_or("").to_string(),
        })
    })
}

fn unescape_octal(s: &str) -> String {
    String::from_utf8_lossy(&unescape_mountinfo(s)).into_owned()
}

/// A `/proc/self/mountinfo` field with its `\ooo` escapes (space, tab, newline, backslash)
/// undone, as bytes (shared with `loopkit mount`'s unmount).
pub(crate) fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The device node for `dev`: `/sys/dev/block/M:m/uevent`'s `DEVNAME`, checked to be a block
/// device with that number.
pub fn device_node(dev: (u32, u32)) -> Option<PathBuf> {
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{}:{}/uevent", dev.0, dev.1)).ok()?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    if name.contains("..") {
        return None;
    }
    let path = Path::new("/dev").join(name);
    let meta = std::fs::metadata(&path).ok()?;
    (meta.file_type().is_block_device() && sys::dev_major_minor(meta.rdev()) == dev).then_some(path)
}

/// `STATX_ATTR_DAX` (`include/uapi/linux/stat.h`).
pub const STATX_ATTR_DAX: u64 = 0x0020_0000;

/// What `statx` says about DAX: `Some(true)` when the file is accessed through DAX (the inode
/// flag, or a `dax=always` mount, which sets no inode flag), `Some(false)` when the kernel reports
/// the attribute and it is off, `None` when the kernel does not report it (before 5.8).
pub fn statx_dax(attributes: u64, attributes_mask: u64) -> Option<bool> {
    (attributes_mask & STATX_ATTR_DAX != 0).then_some(attributes & STATX_ATTR_DAX != 0)
}

/// The device the engine opened for raw I/O, as `fstat` and the block ioctls on that descriptor
/// describe it, against the file's `st_dev`. Returns the device's size and logical block size,
/// or the refusal: `remap.device-mismatch` when the node is not a block device or its `st_rdev`
/// is not the file's `st_dev` (the node was replaced, or names another device), and
/// `remap.device-unknown` when `BLKGETSIZE64` or `BLKSSZGET` fails (size or alignment unknown:
/// the bounds check and the I/O alignment would be guesses).
///
/// # Errors
/// The refusal.
pub fn check_device(
    node: &Path,
    file_dev: u64,
    is_block_device: bool,
    rdev: u64,
    bytes: Result<u64, String>,
    logical_block: Result<u32, String>,
) -> Result<(u64, u32), Refusal> {
    let (want, got) = (sys::dev_major_minor(file_dev), sys::dev_major_minor(rdev));
    if !is_block_device || want != got {
        return Err(refuse(
            "remap.device-mismatch",
            format!(
                "{} is {}, not the device {}:{} the file lives on",
                node.display(),
                if is_block_device { format!("block device {}:{}", got.0, got.1) } else { "not a block device".into() },
                want.0,
                want.1
            ),
        ));
    }
    let bytes = bytes.map_err(|e| {
        refuse("remap.device-unknown", format!("cannot read the size of {} (BLKGETSIZE64): {e}", node.display()))
    })?;
    let lbs = logical_block.map_err(|e| {
        refuse(
            "remap.device-unknown",
            format!("cannot read the logical block size of {} (BLKSSZGET): {e}", node.display()),
        )
    })?;
    if bytes == 0 || !lbs.is_power_of_two() || !(512..=65536).contains(&lbs) {
        return Err(refuse(
            "remap.device-unknown",
            format!("{} reports {bytes} bytes in {lbs}-byte logical blocks", node.display()),
        ));
    }
    Ok((bytes, lbs))
}

/// Whether the file (by device and inode) is an active swap file (`/proc/swaps`).
fn is_active_swap(dev: u64, ino: u64) -> bool {
    let Ok(swaps) = std::fs::read_to_string("/proc/swaps") else { return false };
    swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .any(|name| std::fs::metadata(unescape_octal(name)).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
}

/// Run every check on an open image file. Never fails: what cannot be determined is a refusal.
pub fn check(file: &File, path: &Path) -> Preflight {
    let mut p = Preflight::default();
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => {
            p.refusals.push(refuse("remap.unreadable", format!("cannot examine {}: {e}", path.display())));
            return p;
        }
    };
    if !meta.is_file() {
        p.refusals.push(refuse(
            "remap.not-a-file",
            format!("{} is not a regular file (a block device needs no remapping)", path.display()),
        ));
        return p;
    }
    let dev = sys::dev_major_minor(meta.dev());
    p.backing.dev = dev;
    let (mount, allowed) = check_file_system(&mut p, file, path, dev);
    let fs = p.backing.fs_name.clone();
    find_device(&mut p, path, dev, allowed);
    check_inode_flags(&mut p, file, path, allowed);
    check_fs_specific(&mut p, file, path, dev, mount.as_ref());
    if allowed && can_share_blocks(file, p.backing.fs_magic) {
        let mut acl = vec![0u8; 4 + 8 * 64];
        let acl = match rustix::fs::fgetxattr(file, "system.posix_acl_access", &mut acl[..]) {
            Ok(n) => Some(acl[..n.min(acl.len())].to_vec()),
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::OPNOTSUPP) => None,
            // Too large to read here, or unreadable: treat as granting write.
            Err(_) => Some(Vec::new()),
        };
        if let Some(r) = sharing_refusal(path, &fs, meta.uid(), meta.mode(), acl.as_deref()) {
            p.refusals.push(r);
        }
    }
    check_statx_dax(&mut p, file, path, allowed);
    if allowed
        && let Some(r) = lease_break_refusal(std::fs::read_to_string("/proc/sys/fs/lease-break-time").ok().as_deref())
    {
        p.refusals.push(r);
    }
    if is_active_swap(meta.dev(), meta.ino()) {
        p.refusals.push(refuse("remap.swap-file", format!("{} is an active swap file", path.display())));
    }
    if allowed && let Err(e) = sys::fiemap(file.as_fd(), 0, 1, 0, 1) {
        p.refusals.push(refuse("remap.no-fiemap", format!("FIEMAP failed: {e}")));
    }
    p
}

/// A phase of [`check`]: the file system the file is on (`statfs` magic and block size, its
/// mount from `/proc/self/mountinfo`, its name), refused unless it is ext2/3/4 or XFS
/// (`remap.fs-not-allowed`, with why). Returns the mount line and whether the file system is
/// allowed.
fn check_file_system(p: &mut Preflight, file: &File, path: &Path, dev: (u32, u32)) -> (Option<MountLine>, bool) {
    match rustix::fs::fstatfs(file) {
        Ok(st) => {
            p.backing.fs_magic = st.f_type as u64;
            p.backing.fs_block = st.f_bsize as u64;
        }
        Err(e) => p.refusals.push(refuse("remap.statfs", format!("statfs failed: {e}"))),
    }
    let mount = std::fs::read_to_string("/proc/self/mountinfo").ok().and_then(|m| find_mount(&m, dev));
    p.backing.fs_name = match &mount {
        Some(m) if p.backing.fs_magic == EXT_MAGIC || p.backing.fs_magic == XFS_MAGIC => m.fs_type.clone(),
        _ => fs_name_of_magic(p.backing.fs_magic),
    };
    if let Some(m) = &mount {
        p.backing.mount_point = Some(m.mount_point.clone());
        p.backing.mount_options = Some(m.super_options.clone());
    }
    let fs = p.backing.fs_name.clone();
    let allowed = matches!(p.backing.fs_magic, EXT_MAGIC | XFS_MAGIC);
    if !allowed {
        let why = match fs.as_str() {
            "btrfs" => {
                "FIEMAP reports btrfs logical addresses, not device offsets, and balance/COW move data at any time"
            }
            "tmpfs" | "ramfs" => "the file lives in memory; there is no disk to remap to",
            "overlayfs" => "the file belongs to an overlay (anonymous device; a copy-up replaces it)",
            "nfs" | "cifs" | "smb2" | "ceph" | "9p" | "afs" | "fuse" => "the file system has no local block device",
            "f2fs" | "bcachefs" | "zfs" | "nilfs2" => {
                "the file system moves data in the background (garbage collection, copy-on-write)"
            }
            _ => "only ext2/ext3/ext4 and XFS are known to keep a file's blocks in place",
        };
        p.refusals.push(refuse("remap.fs-not-allowed", format!("{} is on {fs}: {why}", path.display())));
    }
    (mount, allowed)
}

/// A phase of [`check`]: the block device behind the file system (refused when anonymous, or
/// when an allowed file system's device node is not found), with its size and logical and
/// physical block sizes when it can be opened (512 and the logical size when unknown).
fn find_device(p: &mut Preflight, path: &Path, dev: (u32, u32), allowed: bool) {
    if dev.0 == 0 {
        p.refusals.push(refuse(
            "remap.anonymous-device",
            format!("{} is on an anonymous device {}:{} (no block device behind it)", path.display(), dev.0, dev.1),
        ));
    } else {
        match device_node(dev) {
            Some(node) => {
                if let Ok(f) = File::open(&node) {
                    p.backing.device_bytes = sys::block_device_size(f.as_fd()).ok();
                    p.backing.logical_block = rustix::fs::ioctl_blksszget(&f).unwrap_or(512);
                    p.backing.physical_block = rustix::fs::ioctl_blkpbszget(&f).unwrap_or(p.backing.logical_block);
                }
                p.backing.device = Some(node);
            }
            None if allowed => p.refusals.push(refuse(
                "remap.no-device-node",
                format!("no device node found for {}:{} (looked up /sys/dev/block)", dev.0, dev.1),
            )),
            None => {}
        }
    }
    if p.backing.logical_block == 0 {
        p.backing.logical_block = 512;
    }
    if p.backing.physical_block == 0 {
        p.backing.physical_block = p.backing.logical_block;
    }
}

/// A phase of [`check`]: the inode flags (`FS_IOC_GETFLAGS`): encrypted, compressed, verity,
/// data-journaled and DAX files are refused; an immutable file is noted, as are unreadable
/// flags on an allowed file system.
fn check_inode_flags(p: &mut Preflight, file: &File, path: &Path, allowed: bool) {
    match rustix::fs::ioctl_getflags(file) {
        Ok(flags) => {
            let bits = flags.bits();
            p.inode_flags = Some(bits);
            use linux_raw_sys::general as g;
            let bad: [(u32, &str, &str); 5] = [
                (g::FS_ENCRYPT_FL, "remap.encrypted-file", "is encrypted by the file system (fscrypt)"),
                (g::FS_COMPR_FL, "remap.compressed-file", "is compressed by the file system"),
                (g::FS_VERITY_FL, "remap.verity-file", "has fs-verity enabled"),
                (
                    g::FS_JOURNAL_DATA_FL,
                    "remap.data-journaled-file",
                    "has per-file data journaling (chattr +j): the journal may later overwrite raw writes",
                ),
                (g::FS_DAX_FL, "remap.dax-file", "uses DAX"),
            ];
            for (bit, code, why) in bad {
                if bits & bit != 0 {
                    p.refusals.push(refuse(code, format!("{} {why}", path.display())));
                }
            }
            if bits & g::FS_IMMUTABLE_FL != 0 {
                p.notes.push(crate::finding::Finding::info(
                    "remap.immutable",
                    "the file is immutable (chattr +i): writes into holes or unwritten extents will fail",
                ));
            }
        }
        Err(e) if allowed => p
            .notes
            .push(crate::finding::Finding::info("remap.flags-unreadable", format!("inode flags unreadable: {e}"))),
        Err(_) => {}
    }
}

/// A phase of [`check`]: what only XFS (realtime and DAX files, from the XFS inode flags) or
/// ext (a `data=journal` mount, or a mount not found) can refuse.
fn check_fs_specific(p: &mut Preflight, file: &File, path: &Path, dev: (u32, u32), mount: Option<&MountLine>) {
    if p.backing.fs_magic == XFS_MAGIC {
        match sys::fs_get_xattr(file.as_fd()) {
            Ok(x) if x.xflags & sys::FS_XFLAG_REALTIME != 0 => p.refusals.push(refuse(
                "remap.xfs-realtime",
                format!(
                    "{} is an XFS realtime file: its blocks are on the realtime device, not {}:{}",
                    path.display(),
                    dev.0,
                    dev.1
                ),
            )),
            Ok(x) if x.xflags & sys::FS_XFLAG_DAX != 0 => {
                p.refusals.push(refuse("remap.dax-file", format!("{} uses DAX", path.display())))
            }
            Ok(_) => {}
            Err(e) => p.refusals.push(refuse("remap.xfs-flags", format!("cannot read the XFS inode flags: {e}"))),
        }
    }
    if p.backing.fs_magic == EXT_MAGIC {
        match mount {
            Some(m) if m.super_options.split(',').any(|o| o == "data=journal") => p.refusals.push(refuse(
                "remap.data-journal",
                format!("{} is mounted with data=journal: the journal may later overwrite raw writes", m.mount_point),
            )),
            Some(_) => {}
            None => p.refusals.push(refuse(
                "remap.mount-unknown",
                format!(
                    "the mount of {}:{} is not in /proc/self/mountinfo (cannot rule out data=journal)",
                    dev.0, dev.1
                ),
            )),
        }
    }
}

/// A phase of [`check`]: DAX as `statx` tells it (`STATX_ATTR_DAX`: a `dax=always` mount or the
/// inode flag), refused unless already refused as DAX; a failed `statx` is noted on an allowed
/// file system.
fn check_statx_dax(p: &mut Preflight, file: &File, path: &Path, allowed: bool) {
    match rustix::fs::statx(file.as_fd(), "", rustix::fs::AtFlags::EMPTY_PATH, rustix::fs::StatxFlags::BASIC_STATS) {
        Ok(st) => {
            let dax = statx_dax(st.stx_attributes.bits(), st.stx_attributes_mask.bits());
            if dax == Some(true) && !p.refusals.iter().any(|r| r.code == "remap.dax-file") {
                p.refusals.push(refuse(
                    "remap.dax-file",
                    format!(
                        "{} is accessed through DAX (statx STATX_ATTR_DAX: a dax=always mount or the inode flag): \
                         the file system maps its pages straight to the device",
                        path.display()
                    ),
                ));
            }
        }
        Err(e) if allowed => p.notes.push(crate::finding::Finding::info(
            "remap.statx-failed",
            format!("statx failed, DAX known only from the inode flags: {e}"),
        )),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro\n\
                    98 22 7:0 / /mnt/with\\040space rw,relatime shared:40 - ext3 /dev/loop0 rw,data=journal\n\
                    99 22 0:40 / /mnt/b rw - btrfs /dev/loop1 rw,space_cache=v2\n";
        let m = find_mount(text, (7, 0)).unwrap();
        assert_eq!(m.mount_point, "/mnt/with space");
        assert_eq!(m.fs_type, "ext3");
        assert!(m.super_options.contains("data=journal"));
        assert_eq!(find_mount(text, (0, 40)).unwrap().fs_type, "btrfs");
        assert!(find_mount(text, (7, 1)).is_none());
        assert!(find_mount("garbage\n\n - \n1 2 3", (7, 0)).is_none());
    }

    #[test]
    fn lease_break_floor() {
        assert_eq!(lease_break_refusal(Some("45\n")), None);
        assert_eq!(lease_break_refusal(Some(&LEASE_BREAK_FLOOR_SECS.to_string())), None);
        for bad in [Some("1\n"), Some("0"), Some("9"), Some("x"), None] {
            assert_eq!(lease_break_refusal(bad).map(|r| r.code), Some("remap.lease-break-time".into()), "{bad:?}");
        }
    }

    #[test]
    fn sharing_rule() {
        let p = Path::new("/x/img");
        assert_eq!(sharing_refusal(p, "xfs", 0, 0o100644, None), None);
        assert_eq!(sharing_refusal(p, "xfs", 0, 0o100600, None), None);
        for (uid, mode) in [(1000, 0o100600), (0, 0o100664), (0, 0o100646), (0, 0o100666)] {
            let r = sharing_refusal(p, "xfs", uid, mode, None).map(|r| r.code);
            assert_eq!(r, Some("remap.shareable-not-root-only".into()), "uid {uid} mode {mode:o}");
        }
        // An ACL: version 2, user::rw-, user:1000:rw-, group::r--, mask::rw-, other::r--.
        let entry = |tag: u16, perm: u16, id: u32| {
            let mut v = tag.to_le_bytes().to_vec();
            v.extend(perm.to_le_bytes());
            v.extend(id.to_le_bytes());
            v
        };
        let mut acl = 2u32.to_le_bytes().to_vec();
        for e in [entry(1, 6, u32::MAX), entry(2, 6, 1000), entry(4, 4, u32::MAX), entry(0x10, 6, u32::MAX)] {
            acl.extend(e);
        }
        acl.extend(entry(0x20, 4, u32::MAX));
        assert!(acl_grants_write(&acl));
        assert!(sharing_refusal(p, "xfs", 0, 0o100644, Some(&acl)).is_some());
        let mut ro = 2u32.to_le_bytes().to_vec();
        for e in [entry(1, 6, u32::MAX), entry(2, 4, 1000), entry(4, 4, u32::MAX), entry(0x10, 4, u32::MAX)] {
            ro.extend(e);
        }
        ro.extend(entry(0x20, 4, u32::MAX));
        assert!(!acl_grants_write(&ro));
        assert!(acl_grants_write(&[2, 0, 0]), "unparsable counts as writable");
    }

    #[test]
    fn io_uring_fdinfo_user_files() {
        let info = "SqMask:\t0x7\nUserFiles:\t3\n    0: /srv/u/vm.img\n    1: <none>\n   12: /a b\nUserBufs:\t0\n";
        assert_eq!(ring_user_files(info), vec!["/srv/u/vm.img".to_string(), "/a b".to_string()]);
        assert!(ring_user_files("UserFiles:\t0\nUserBufs:\t0\n").is_empty());
        assert!(ring_user_files("nothing").is_empty());
    }

    #[test]
    fn dax_from_statx() {
        assert_eq!(statx_dax(STATX_ATTR_DAX, STATX_ATTR_DAX), Some(true));
        assert_eq!(statx_dax(0, STATX_ATTR_DAX), Some(false));
        assert_eq!(statx_dax(0, 0), None, "a kernel that does not report the attribute");
        // Other attribute bits (compressed 0x4, immutable 0x10, verity 0x100000) are not DAX.
        assert_eq!(statx_dax(0x0010_0014, 0x0030_0014), Some(false));
        assert_eq!(statx_dax(0x0030_0014, 0x0030_0014), Some(true));
    }

    #[test]
    fn device_identity() {
        let node = Path::new("/dev/vda");
        let dev = libc::makedev(254, 0);
        assert_eq!(check_device(node, dev, true, dev, Ok(1 << 30), Ok(512)), Ok((1 << 30, 512)));
        assert_eq!(check_device(node, dev, true, dev, Ok(1 << 30), Ok(4096)), Ok((1 << 30, 4096)));
        let code = |r: Result<(u64, u32), Refusal>| r.err().map(|r| r.code);
        // Another device under the same name (a replaced node, a bind mount of another disk).
        assert_eq!(
            code(check_device(node, dev, true, libc::makedev(254, 16), Ok(1), Ok(512))),
            Some("remap.device-mismatch".into())
        );
        assert_eq!(
            code(check_device(node, dev, true, libc::makedev(8, 0), Ok(1), Ok(512))),
            Some("remap.device-mismatch".into())
        );
        // Not a block device at all (a regular file or character device planted at the path).
        assert_eq!(code(check_device(node, dev, false, dev, Ok(1), Ok(512))), Some("remap.device-mismatch".into()));
        // Size or alignment unknown: no guessing 512 bytes or "no end".
        assert_eq!(
            code(check_device(node, dev, true, dev, Err("ENOTTY".into()), Ok(512))),
            Some("remap.device-unknown".into())
        );
        assert_eq!(
            code(check_device(node, dev, true, dev, Ok(1 << 30), Err("EIO".into()))),
            Some("remap.device-unknown".into())
        );
        assert_eq!(code(check_device(node, dev, true, dev, Ok(0), Ok(512))), Some("remap.device-unknown".into()));
        assert_eq!(code(check_device(node, dev, true, dev, Ok(1 << 30), Ok(520))), Some("remap.device-unknown".into()));
    }

    #[test]
    fn magic_names() {
        assert_eq!(fs_name_of_magic(0x9123_683E), "btrfs");
        assert_eq!(fs_name_of_magic(1), "unknown (0x1)");
    }
}
