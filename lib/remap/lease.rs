//! Exclusive access to a remapped image: an `F_SETLEASE F_WRLCK` lease (granted only when nobody
//! else has the file open; any later `open` or `truncate` by another process is held back and
//! signalled to us with SIGIO) and one watcher thread that, on SIGIO, finds every holder whose
//! lease is being broken and lets it switch to file I/O before giving the lease up.
//!
//! What a lease cannot stop: relocation inside the kernel that does not open the file (btrfs
//! balance, f2fs garbage collection, bcachefs rebalance) — which is why preflight allows only
//! ext2/3/4 and XFS, whose data blocks move only through calls that open the file (e4defrag,
//! xfs_fsr, reflink) — and I/O through descriptors that existed before the lease (there can be
//! none: the lease is refused while any exist).

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
    reg.lock().map_err(|_| crate::Error::invalid("lease registry poisoned"))?.push(holder);
    Ok(())
}

/// Give the lease up.
///
/// # Errors
/// The OS error.
pub fn release(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::set_lease(fd, Lease::None)
}
