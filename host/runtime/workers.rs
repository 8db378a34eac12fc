//! Worker threads that run several nodes each (`luahost up --threads W`).
//!
//! A worker is one OS thread with a current-thread tokio runtime and a
//! `LocalSet`; every node placed on it runs its tasks there, its Lua state
//! included. A node is never entered by two threads (it lives on one
//! worker for its whole life), and a message between two nodes of one
//! worker is handed over without waking another thread. While one node's
//! Lua runs, the other nodes of its worker wait: a handler busy for a
//! second delays them by that second (their connections survive it: the
//! liveness rule gives a stalled node's peers half the bound again).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::net::handoff::Spinner;

/// How long an idle worker spins before it parks, unless
/// `LUAHOST_SPIN_US` says otherwise (0: never spin). Long enough to catch
/// the reply of a node on another worker (a few microseconds of Lua), short
/// enough that an idle process costs nothing measurable.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// The spin budget from `LUAHOST_SPIN_US`, else [`DEFAULT_SPIN`].
pub fn spin_budget() -> Duration {
    std::env::var("LUAHOST_SPIN_US")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_micros)
        .unwrap_or(DEFAULT_SPIN)
}

/// Work handed to a worker: it runs on the worker's thread and spawns the
/// node's tasks there.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// A pool of worker threads.
#[derive(Debug)]
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Job>>,
    spinners: Vec<Arc<Spinner>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Starts `n` worker threads (at least one), named `worker-0`, ...,
    /// that spin for [`spin_budget`] before they park.
    ///
    /// # Errors
    ///
    /// The OS refused a thread or a runtime.
    pub fn new(n: usize) -> std::io::Result<Arc<Workers>> {
        Workers::with_spin(n, spin_budget())
    }

    /// Starts `n` worker threads that spin for `spin` when they run out of
    /// work before they park (`net::handoff`: a message from another
    /// worker then arrives without a thread wake-up).
    ///
    /// # Errors
    ///
    /// The OS refused a thread or a runtime.
    pub fn with_spin(n: usize, spin: Duration) -> std::io::Result<Arc<Workers>> {
        let n = n.max(1);
        let mut senders = Vec::with_capacity(n);
        let mut spinners = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for k in 0..n {
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let spinner = Spinner::new();
            let on_park = spinner.clone();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(move || {
                    on_park.spin(spin);
                })
                .build()?;
            let mine = spinner.clone();
            let t = std::thread::Builder::new().name(format!("worker-{k}")).spawn(move || {
                if !spin.is_zero() {
                    mine.install();
                }
                let local = tokio::task::LocalSet::new();
                local.block_on(&rt, async move {
                    while let Some(job) = rx.recv().await {
                        job();
                    }
                });
                // the pool is gone: finish what its nodes are still doing
                rt.block_on(local);
            })?;
            senders.push(tx);
            spinners.push(spinner);
            threads.push(t);
        }
        Ok(Arc::new(Workers {
            senders,
            spinners,
            threads: Mutex::new(threads),
        }))
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// Always false (a pool has at least one worker).
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Messages handed from one worker to another while the receiver spun
    /// (each saved a thread wake-up).
    pub fn handoffs(&self) -> u64 {
        self.spinners.iter().map(|s| s.taken()).sum()
    }

    /// Runs `job` on worker `k % len` (it should spawn local tasks). False
    /// when the worker has ended.
    pub(crate) fn submit(&self, k: usize, job: Job) -> bool {
        self.senders[k % self.senders.len()].send(job).is_ok()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // closing the job channels lets each worker end once its nodes have
        self.senders.clear();
        if let Ok(mut threads) = self.threads.lock() {
            for t in threads.drain(..) {
                if t.thread().id() != std::thread::current().id() {
                    let _ = t.join();
                }
            }
        }
    }
}

/// Set once a node has ended (its run returned, or it failed to start);
/// whoever holds its handle may wait for it.
#[derive(Debug, Default)]
pub(crate) struct Done {
    ended: Mutex<bool>,
    cv: Condvar,
}

impl Done {
    /// The node has ended.
    pub(crate) fn set(&self) {
        if let Ok(mut e) = self.ended.lock() {
            *e = true;
            self.cv.notify_all();
        }
    }

    /// Whether it has.
    pub(crate) fn is_set(&self) -> bool {
        self.ended.lock().map(|e| *e).unwrap_or(true)
    }

    /// Waits until it has.
    pub(crate) fn wait(&self) {
        let Ok(mut e) = self.ended.lock() else { return };
        while !*e {
            e = match self.cv.wait(e) {
                Ok(e) => e,
                Err(_) => return,
            };
        }
    }
}

/// Sets a [`Done`] when dropped (a node's task ending in any way).
pub(crate) struct SetOnDrop(pub(crate) Arc<Done>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_their_worker_and_the_pool_ends_when_dropped() {
        let pool = Workers::new(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for k in 0..4 {
            let tx = tx.clone();
            assert!(pool.submit(
                k,
                Box::new(move || {
                    tokio::task::spawn_local(async move {
                        tokio::task::yield_now().await;
                        let name = std::thread::current().name().map(str::to_string);
                        let _ = tx.send((k, name));
                    });
                })
            ));
        }
        let mut got: Vec<(usize, Option<String>)> = (0..4).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                (0, Some("worker-0".into())),
                (1, Some("worker-1".into())),
                (2, Some("worker-0".into())),
                (3, Some("worker-1".into()))
            ]
        );
        drop(pool);
    }

    #[test]
    fn done_wakes_waiters() {
        let d = Arc::new(Done::default());
        assert!(!d.is_set());
        let d2 = d.clone();
        let t = std::thread::spawn(move || d2.wait());
        drop(SetOnDrop(d.clone()));
        t.join().unwrap();
        assert!(d.is_set());
    }
}
