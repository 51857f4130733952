//! Progress reporting and cancellation for long operations; the library never draws anything,
//! the CLI plugs an indicatif bar in through [`Progress`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Receives progress from long-running library calls.
pub trait Progress: Send {
    /// A new phase starts; `total_bytes` when known.
    fn start(&mut self, label: &str, total_bytes: Option<u64>);
    /// `bytes` more were processed in the current phase.
    fn advance(&mut self, bytes: u64);
    /// The current phase is over.
    fn finish(&mut self) {}
    /// A remark worth showing the user (never a secret).
    fn note(&mut self, _msg: &str) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _label: &str, _total_bytes: Option<u64>) {}
    fn advance(&mut self, _bytes: u64) {}
}

/// A shared cancellation flag, set by the CLI's signal handler and polled between chunks.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// A fresh, unset flag.
    pub fn new() -> Self {
        Self::default()
    }
    /// Request cancellation.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Whether cancellation was requested.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// `Err(Interrupted)` once cancellation was requested.
    pub fn check(&self) -> crate::Result<()> {
        if self.is_set() { Err(crate::Error::interrupted()) } else { Ok(()) }
    }
}
