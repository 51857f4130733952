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

use crate::progress::Interrupt;
use std::sync::mpsc;

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
}
