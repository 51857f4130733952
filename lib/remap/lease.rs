//! Exclusive access to a remapped image: an `F_SETLEASE F_WRLCK` lease (granted only when nobody
//! else has the file open; any later `open` or `truncate` by another process is held back and
//! signalled to us with SIGIO) and one watcher thread that, on SIGIO, finds every holder whose
//! lease is being broken and lets it switch to file I/O before giving the lease up.
//!
//! What a lease cannot stop: relocation inside the kernel that does not open the file (btrfs
//! balance, f2fs garbage collection, bcachefs rebalance) — which is why preflight allows only
//! ext2/3/4 and XFS, whose data blocks move only through calls that open the file (e4defrag,
//! xfs_fsr, reflink) — and I/O through descriptors the lease does not count: the kernel refuses
//! a write lease only while the file's write or read count is raised by someone else
//! (`lease_open_conflict` in `fs/locks.c`), and a descriptor opened with access mode 3 (neither
//! read nor write) raises neither, yet can be the destination of `FIDEDUPERANGE`. Preflight's
//! dedupe rule and [`crate::remap::preflight::other_holders`] cover that (docs/formats/remap.md).
//!
//! The holder is registered before the lease is set, so a break that arrives while the lease
//! is being taken reaches it; [`acquire`] then checks `F_GETLEASE` once more and fails with
//! `remap.lease-lost` if the lease is already being broken.

use crate::sys::{self, Lease};
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::{Mutex, OnceLock, Weak};

/// Something holding a write lease that must be told when it is being broken.
pub trait LeaseHolder: Send + Sync {
    /// The descriptor the lease is on.
    fn lease_fd(&self) -> BorrowedFd<'_>;
    /// The lease is being broken: stop raw I/O, then release the lease.
    fn lease_broken(&self);
}

type Registry = Mutex<Vec<Weak<dyn LeaseHolder>>>;

static REGISTRY: OnceLock<io::Result<&'static Registry>> = OnceLock::new();

/// Start (once) the SIGIO watcher. Must run before any lease is taken: SIGIO's default action
/// terminates the process.
fn registry() -> io::Result<&'static Registry> {
    let r = REGISTRY.get_or_init(|| {
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGIO])?;
        let reg: &'static Registry = Box::leak(Box::new(Mutex::new(Vec::new())));
        std::thread::Builder::new().name("loopkit-lease".into()).spawn(move || {
            for _ in signals.forever() {
                let holders: Vec<_> = match reg.lock() {
                    Ok(mut v) => {
                        v.retain(|w| w.strong_count() > 0);
                        v.iter().filter_map(Weak::upgrade).collect()
                    }
                    Err(_) => continue,
                };
                for h in holders {
                    if !matches!(sys::get_lease(h.lease_fd()), Ok(Lease::Write)) {
                        h.lease_broken();
                    }
                }
            }
        })?;
        Ok(reg)
    });
    match r {
        Ok(reg) => Ok(reg),
        Err(e) => Err(io::Error::new(e.kind(), format!("cannot watch for lease breaks: {e}"))),
    }
}

/// Take a write lease on `fd` and watch it for `holder`.
///
/// # Errors
/// `Unsafe` when another process has the file open (`EAGAIN`); `Io` otherwise (leases disabled,
/// no `CAP_LEASE` for a file we do not own…).
pub fn acquire(fd: BorrowedFd<'_>, holder: Weak<dyn LeaseHolder>, what: &str) -> crate::Result<()> {
    let reg = registry().map_err(|e| crate::Error::io("lease watcher", e))?;
    // Registered first: a SIGIO that arrives between F_SETLEASE and the end of this function
    // must find the holder (a dropped holder is pruned by the watcher).
    reg.lock().map_err(|_| crate::Error::invalid("lease registry poisoned"))?.push(holder);
    // EAGAIN can be transient: a process that forked while it had the file open (even our own
    // caller's, from another thread) keeps that open file until it execs, and a `cp` or
    // `sha256sum` that just finished may still be closing it. A few short retries (0.75 s in
    // all) tell those apart from a real holder, which is refused as before.
    let mut result = sys::set_lease(fd, Lease::Write);
    for pause_ms in [10, 40, 100, 200, 400] {
        if !matches!(&result, Err(e) if e.raw_os_error() == Some(libc::EAGAIN)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(pause_ms));
        result = sys::set_lease(fd, Lease::Write);
    }
    match result {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            return Err(crate::Error::new(
                crate::ErrorKind::Unsafe,
                format!("{what} is open in another process; remapping needs exclusive access (close it first)"),
            ));
        }
        Err(e) => return Err(crate::Error::io(format!("cannot take a write lease on {what}"), e)),
    }
    #[cfg(test)]
    test_pause();
    // A break that arrived while the lease was being taken: the watcher may or may not have
    // seen it; either way the lease is not ours to rely on.
    match sys::get_lease(fd) {
        Ok(Lease::Write) => Ok(()),
        Ok(_) => Err(crate::Error::new(
            crate::ErrorKind::Unsafe,
            format!("{what} was opened by another process while the lease was being taken (remap.lease-lost)"),
        )),
        Err(e) => Err(crate::Error::io(format!("cannot read the lease on {what}"), e)),
    }
}

/// Whether the lease on `fd` is still an unbroken write lease (`F_GETLEASE`).
pub fn still_held(fd: BorrowedFd<'_>) -> bool {
    matches!(sys::get_lease(fd), Ok(Lease::Write))
}

#[cfg(test)]
static TEST_PAUSE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Tests widen the window between `F_SETLEASE` and the final check.
#[cfg(test)]
fn test_pause() {
    let ms = TEST_PAUSE_MS.load(std::sync::atomic::Ordering::SeqCst);
    if ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Give the lease up.
///
/// # Errors
/// The OS error.
pub fn release(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::set_lease(fd, Lease::None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Probe {
        file: std::fs::File,
        broken: AtomicUsize,
    }

    impl LeaseHolder for Probe {
        fn lease_fd(&self) -> BorrowedFd<'_> {
            self.file.as_fd()
        }
        fn lease_broken(&self) {
            self.broken.fetch_add(1, Ordering::SeqCst);
            let _ = release(self.file.as_fd());
        }
    }

    /// M1: an open that arrives between F_SETLEASE and the end of `acquire` (widened by the test
    /// pause) must make `acquire` fail and must reach the holder, whose release lets the opener
    /// through well before lease-break-time.
    #[test]
    fn a_break_during_acquisition_is_not_lost() {
        let dir = std::env::temp_dir().join(format!("loopkit-lease-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("img");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let file = std::fs::File::open(&p).unwrap();
        if sys::set_lease(file.as_fd(), Lease::Write).is_err() {
            // Leases disabled here (fs.leases-enable = 0, or a file system without them).
            std::fs::remove_dir_all(&dir).unwrap();
            return;
        }
        sys::set_lease(file.as_fd(), Lease::None).unwrap();
        let probe = Arc::new(Probe { file, broken: AtomicUsize::new(0) });
        TEST_PAUSE_MS.store(600, Ordering::SeqCst);
        let opener_path = p.clone();
        let opener = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(150));
            let t = std::time::Instant::now();
            let f = std::fs::OpenOptions::new().write(true).open(&opener_path);
            (f.is_ok(), t.elapsed())
        });
        let weak: std::sync::Weak<dyn LeaseHolder> = Arc::downgrade(&probe) as _;
        let r = acquire(probe.file.as_fd(), weak, "img");
        TEST_PAUSE_MS.store(0, Ordering::SeqCst);
        let (opened, waited) = opener.join().unwrap();
        assert!(opened);
        let err = r.expect_err("acquire must notice the break");
        assert!(err.to_string().contains("remap.lease-lost"), "{err}");
        assert!(probe.broken.load(Ordering::SeqCst) >= 1, "the watcher never told the holder");
        assert!(waited < std::time::Duration::from_secs(5), "the opener waited {waited:?}");
        assert!(!still_held(probe.file.as_fd()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
