//! An ordered parallel chunk pipeline: `workers` threads process chunks `w, w+W, w+2W, …` into
//! recycled buffers, and the calling thread consumes the results strictly in chunk order
//! (hashing is a single stream; writes may be made durable in order). Memory is bounded:
//! three buffers per worker, bounded channels.
//!
//! ```text
//!  worker 0: chunk 0, 2, 4… ─┐ sync_channel(2)           ┌─ buffers returned for reuse
//!  worker 1: chunk 1, 3, 5… ─┴─► consume(0), consume(1), … ┘
//! ```
//! A worker error or an interrupt stops everything at the next chunk boundary; the first error
//! in chunk order is returned.
//!
//! And the one unordered job pool ([`Pool`]: `run_all`, `run_each`): workers pull the next job from a
//! shared counter, the calling thread reports progress; used by dvdisaster's verification,
//! manifest hashing and the extent check.

use crate::progress::{Interrupt, Progress};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

/// Run `work(chunk, &mut buffer)` for chunks `0..nchunks` on `workers` threads and
/// `consume(chunk, &buffer)` on this thread, in order. `new_buffer` makes each worker's three
/// buffers.
///
/// # Errors
/// The first error of `work` or `consume` in chunk order; `Interrupted` when `interrupt` fires.
pub fn run_ordered<B, N, W, C>(
    nchunks: u64,
    workers: usize,
    new_buffer: N,
    work: W,
    mut consume: C,
    interrupt: &Interrupt,
) -> crate::Result<()>
where
    B: Send,
    N: Fn() -> B,
    W: Fn(u64, &mut B) -> crate::Result<()> + Sync,
    C: FnMut(u64, &B) -> crate::Result<()>,
{
    let workers = workers.max(1).min(nchunks.max(1) as usize);
    std::thread::scope(|scope| -> crate::Result<()> {
        let mut outs: Vec<mpsc::Receiver<crate::Result<B>>> = Vec::with_capacity(workers);
        let mut returns: Vec<mpsc::SyncSender<B>> = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = mpsc::sync_channel::<crate::Result<B>>(2);
            let (ret_tx, ret_rx) = mpsc::sync_channel::<B>(4);
            for _ in 0..3 {
                let _ = ret_tx.send(new_buffer());
            }
            outs.push(rx);
            returns.push(ret_tx);
            let interrupt = interrupt.clone();
            let work = &work;
            scope.spawn(move || {
                let mut c = w as u64;
                while c < nchunks {
                    let Ok(mut buf) = ret_rx.recv() else { return };
                    if interrupt.is_set() {
                        let _ = tx.send(Err(crate::Error::interrupted()));
                        return;
                    }
                    let msg = work(c, &mut buf).map(|()| buf);
                    let failed = msg.is_err();
                    if tx.send(msg).is_err() || failed {
                        return;
                    }
                    c += workers as u64;
                }
            });
        }
        // Returning (Ok or Err) drops `outs` and `returns`, which unblocks and ends every worker
        // before the scope joins them.
        for c in 0..nchunks {
            let w = (c % workers as u64) as usize;
            let buf = outs[w]
                .recv()
                .map_err(|_| crate::Error::new(crate::ErrorKind::Io, "BUG: a pipeline worker stopped early"))??;
            consume(c, &buf)?;
            let _ = returns[w].send(buf);
            interrupt.check()?;
        }
        Ok(())
    })
}

/// Progress and cancellation as a job of a [`Pool`] sees them.
#[derive(Debug)]
pub struct Tick<'a> {
    done: &'a AtomicU64,
    stop: &'a AtomicBool,
    interrupt: &'a Interrupt,
}

impl Tick<'_> {
    /// Count `bytes` as processed; `Err(Interrupted)` once the run should stop.
    ///
    /// # Errors
    /// `Interrupted` after an interrupt or (with [`Pool::run_all`]) another job's error.
    pub fn tick(&self, bytes: u64) -> crate::Result<()> {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.check()
    }
    /// `Err(Interrupted)` once the run should stop.
    ///
    /// # Errors
    /// As [`Tick::tick`].
    pub fn check(&self) -> crate::Result<()> {
        if self.interrupt.is_set() || self.stop.load(Ordering::Relaxed) {
            return Err(crate::Error::interrupted());
        }
        Ok(())
    }
}

/// How a job pool reacts to a job's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnError {
    Stop,
    Continue,
}

/// The one job pool: `workers` threads pull the next job (each with its own state from `init`,
/// e.g. buffers), the calling thread reports progress (`label`, `total_bytes`) from what the
/// jobs [`Tick::tick`].
///
/// ```ignore
/// let results = Pool::new(workers, progress, interrupt)
///     .phase("checking", Some(total_bytes))
///     .run_all(&jobs, || Ok(buffer()), |job, buffer, tick| work(job, buffer, tick))?;
/// ```
pub struct Pool<'a> {
    workers: usize,
    label: &'a str,
    total_bytes: Option<u64>,
    progress: &'a mut dyn Progress,
    interrupt: &'a Interrupt,
}

impl<'a> Pool<'a> {
    /// A pool of `workers` threads reporting to `progress`, stopped by `interrupt`.
    pub fn new(workers: usize, progress: &'a mut dyn Progress, interrupt: &'a Interrupt) -> Self {
        Pool { workers, label: "", total_bytes: None, progress, interrupt }
    }

    /// The progress phase the jobs report to.
    #[must_use]
    pub fn phase(mut self, label: &'a str, total_bytes: Option<u64>) -> Self {
        self.label = label;
        self.total_bytes = total_bytes;
        self
    }

    /// Run every job, stopping on the first error: the results in job order, or that error (the
    /// root cause, not the `Interrupted` of the jobs it stopped).
    ///
    /// # Errors
    /// The first error of `init` or a job; `Interrupted` when the interrupt fires.
    pub fn run_all<J, S, R>(
        self,
        jobs: &[J],
        init: impl Fn() -> crate::Result<S> + Sync,
        work: impl Fn(&J, &mut S, &Tick<'_>) -> crate::Result<R> + Sync,
    ) -> crate::Result<Vec<R>>
    where
        J: Sync,
        R: Send,
    {
        let interrupt = self.interrupt;
        let (results, first_err) = self.run(jobs, OnError::Stop, &init, &work);
        if let Some(e) = first_err {
            return Err(e);
        }
        interrupt.check()?;
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(bug_no_result()))).collect()
    }

    /// Run every job whatever the others return: one result per job, in job order (jobs an
    /// interrupt kept from running are `Interrupted`).
    ///
    /// # Errors
    /// The outer `Err` only when a worker's `init` failed.
    pub fn run_each<J, S, R>(
        self,
        jobs: &[J],
        init: impl Fn() -> crate::Result<S> + Sync,
        work: impl Fn(&J, &mut S, &Tick<'_>) -> crate::Result<R> + Sync,
    ) -> crate::Result<Vec<crate::Result<R>>>
    where
        J: Sync,
        R: Send,
    {
        let (results, init_err) = self.run(jobs, OnError::Continue, &init, &work);
        if let Some(e) = init_err {
            return Err(e);
        }
        Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(crate::Error::interrupted()))).collect())
    }
}

fn bug_no_result() -> crate::Error {
    crate::Error::new(crate::ErrorKind::Io, "BUG: a job produced no result")
}

type JobResults<R> = (Vec<Option<crate::Result<R>>>, Option<crate::Error>);

impl Pool<'_> {
    fn run<J, S, R>(
        self,
        jobs: &[J],
        on_error: OnError,
        init: &(dyn Fn() -> crate::Result<S> + Sync),
        work: &(dyn Fn(&J, &mut S, &Tick<'_>) -> crate::Result<R> + Sync),
    ) -> JobResults<R>
    where
        J: Sync,
        R: Send,
    {
        let Pool { workers, label, total_bytes, progress, interrupt } = self;
        let next = AtomicUsize::new(0);
        let done = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        progress.start(label, total_bytes);
        let mut results: Vec<Option<crate::Result<R>>> = (0..jobs.len()).map(|_| None).collect();
        // With OnError::Stop: the first job error (root causes win over "interrupted"). With
        // OnError::Continue: the first `init` error.
        let mut first_err: Option<crate::Error> = None;
        std::thread::scope(|scope| {
            // Ok(index, result) for a job, Err(e) for a worker whose init failed.
            let (tx, rx) = mpsc::channel::<Result<(usize, crate::Result<R>), crate::Error>>();
            for _ in 0..workers.max(1).min(jobs.len().max(1)) {
                let tx = tx.clone();
                let (next, done, stop) = (&next, &done, &stop);
                scope.spawn(move || {
                    let mut state = match init() {
                        Ok(s) => s,
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let tick = Tick { done, stop, interrupt };
                    loop {
                        if stop.load(Ordering::Relaxed) || (on_error == OnError::Continue && interrupt.is_set()) {
                            return;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= jobs.len() {
                            return;
                        }
                        let r = work(&jobs[i], &mut state, &tick);
                        if r.is_err() && on_error == OnError::Stop {
                            stop.store(true, Ordering::Relaxed);
                        }
                        if tx.send(Ok((i, r))).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            let mut reported = 0u64;
            loop {
                let msg = rx.recv_timeout(Duration::from_millis(100));
                let d = done.load(Ordering::Relaxed);
                if d > reported {
                    progress.advance(d - reported);
                    reported = d;
                }
                match msg {
                    Ok(Ok((i, r))) => {
                        if on_error == OnError::Stop
                            && let Err(e) = r
                        {
                            if first_err.as_ref().is_none_or(|f| f.kind() == crate::ErrorKind::Interrupted) {
                                first_err = Some(e);
                            }
                            continue;
                        }
                        if let Some(slot) = results.get_mut(i) {
                            *slot = Some(r);
                        }
                    }
                    Ok(Err(e)) => {
                        if first_err.as_ref().is_none_or(|f| f.kind() == crate::ErrorKind::Interrupted) {
                            first_err = Some(e);
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if interrupt.is_set() && on_error == OnError::Stop {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        progress.finish();
        (results, first_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_errors_and_interrupts() {
        for workers in [1, 2, 3, 8] {
            let mut seen = Vec::new();
            run_ordered(
                20,
                workers,
                || 0u64,
                |c, b| {
                    *b = c * 10;
                    Ok(())
                },
                |c, b| {
                    assert_eq!(*b, c * 10);
                    seen.push(c);
                    Ok(())
                },
                &Interrupt::new(),
            )
            .unwrap();
            assert_eq!(seen, (0..20).collect::<Vec<_>>());
            let mut consumed = 0;
            let e = run_ordered(
                20,
                workers,
                || (),
                |c, _| if c == 7 { Err(crate::Error::corrupt("chunk 7")) } else { Ok(()) },
                |_, _| {
                    consumed += 1;
                    Ok(())
                },
                &Interrupt::new(),
            )
            .unwrap_err();
            assert_eq!((e.kind(), consumed), (crate::ErrorKind::Corrupt, 7));
            let i = Interrupt::new();
            i.trigger();
            let e = run_ordered(5, workers, || (), |_, _| Ok(()), |_, _| Ok(()), &i).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Interrupted);
        }
        run_ordered(0, 2, || (), |_, _| Ok(()), |_, _| panic!("no chunks"), &Interrupt::new()).unwrap();
    }

    #[test]
    fn job_pool_order_errors_and_interrupts() {
        use crate::progress::NoProgress;
        let jobs: Vec<u64> = (0..50).collect();
        for workers in [1, 2, 7] {
            let i = Interrupt::new();
            let pool = |i| Pool::new(workers, Box::leak(Box::new(NoProgress)), i);
            let r = pool(&i).phase("t", Some(50)).run_all(
                &jobs,
                || Ok(0u64),
                |j, n, t| {
                    *n += 1;
                    t.tick(1)?;
                    Ok(j * 3)
                },
            );
            assert_eq!(r.unwrap(), jobs.iter().map(|j| j * 3).collect::<Vec<_>>());
            // The root cause wins over the "interrupted" of the jobs it stopped.
            let e = pool(&i).run_all(
                &jobs,
                || Ok(()),
                |j, _, t| {
                    if *j == 17 {
                        return Err(crate::Error::corrupt("job 17"));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    t.check()?;
                    Ok(*j)
                },
            );
            assert_eq!(e.unwrap_err().kind(), crate::ErrorKind::Corrupt);
            // run_each keeps going past errors.
            let r = pool(&i).run_each(
                &jobs,
                || Ok(()),
                |j, _, _| {
                    if j % 5 == 0 { Err(crate::Error::corrupt("bad")) } else { Ok(*j) }
                },
            );
            let r = r.unwrap();
            assert_eq!(r.len(), 50);
            assert_eq!(r.iter().filter(|x| x.is_err()).count(), 10);
            assert_eq!(r[7].as_ref().ok(), Some(&7));
            // A failing init is the error.
            let no_buffers = || -> crate::Result<()> { Err(crate::Error::invalid("no buffers")) };
            let e = pool(&i).run_each(&jobs, no_buffers, |j, _, _| Ok(*j));
            assert_eq!(e.unwrap_err().kind(), crate::ErrorKind::InvalidInput);
            // An interrupt ends both.
            i.trigger();
            let e = pool(&i).run_all(&jobs, || Ok(()), |j, _, t| t.check().map(|()| *j));
            assert_eq!(e.unwrap_err().kind(), crate::ErrorKind::Interrupted);
            let r = pool(&i).run_each(&jobs, || Ok(()), |j, _, _| Ok(*j)).unwrap();
            assert!(r.iter().all(|x| x.as_ref().is_err_and(|e| e.kind() == crate::ErrorKind::Interrupted)));
        }
    }
}
