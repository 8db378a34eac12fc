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

use tokio::sync::mpsc;

/// Work handed to a worker: it runs on the worker's thread and spawns the
/// node's tasks there.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

/// A pool of worker threads.
#[derive(Debug)]
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Job>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Starts `n` worker threads (at least one), named `worker-0`, ...
    ///
    /// # Errors
    ///
    /// The OS refused a thread or a runtime.
    pub fn new(n: usize) -> std::io::Result<Arc<Workers>> {
        let n = n.max(1);
        let mut senders = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for k in 0..n {
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let t = std::thread::Builder::new().name(format!("worker-{k}")).spawn(move || {
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
            threads.push(t);
        }
        Ok(Arc::new(Workers {
            senders,
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
