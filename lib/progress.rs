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

/// The context of one long operation, passed by reference through its phases: where progress
/// goes and the cancellation flag it polls. (Each operation's options stay in its own typed
/// struct beside it.)
pub struct Run<'a> {
    /// Receives the phases and byte counts.
    pub progress: &'a mut dyn Progress,
    /// Polled between chunks; [`Run::check`].
    pub interrupt: &'a Interrupt,
}

impl<'a> Run<'a> {
    /// A context reporting to `progress`, stopped by `interrupt`.
    pub fn new(progress: &'a mut dyn Progress, interrupt: &'a Interrupt) -> Self {
        Run { progress, interrupt }
    }
    /// `Err(Interrupted)` once cancellation was requested.
    pub fn check(&self) -> crate::Result<()> {
        self.interrupt.check()
    }
}

impl std::fmt::Debug for Run<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("interrupt", self.interrupt).finish_non_exhaustive()
    }
}

/// How serious a [`Remarks`] message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something failed (a request, a queue) but the operation goes on.
    Error,
    /// Worth the user's attention.
    Warning,
    /// For information.
    Note,
}

/// Receives what long-running library code has to say while it runs and has no caller to return
/// it to (a server's worker threads): the library never prints; the CLI implements this (on
/// stderr, `loopkit: error: …`). Shared by threads, so `&self`.
pub trait Remarks: Send + Sync {
    /// One message (never a secret).
    fn remark(&self, level: Level, msg: &str);
}

/// [`Remarks`] that drops everything (tests, library callers that do not care).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRemarks;

impl Remarks for NoRemarks {
    fn remark(&self, _level: Level, _msg: &str) {}
}
