//! Hand-off between worker threads without waking a sleeping thread.
//!
//! When a node writes to an in-memory pipe whose reader runs on another
//! worker, the plain way to tell the reader is tokio's cross-thread wake:
//! a syscall on the writer's side, and, when the reader's worker is asleep
//! in `epoll_wait`, a wake-up of that thread, which on these VMs costs
//! more than the whole Lua dispatch (docs/performance.md). A ping-pong
//! between two nodes on two workers then runs at the speed of thread
//! wake-ups.
//!
//! A worker with nothing left to run first *spins* for a short while
//! ([`Spinner::spin`], called from its runtime's `on_thread_park` hook)
//! before it really parks. A pipe writer that finds the reader's worker
//! spinning leaves the pipe in that worker's ready list instead of waking
//! it ([`Spinner::offer`]); the spinner sees it at once and wakes the
//! reader task from its own thread (no syscall, no sleeping thread). A
//! worker that is busy or parked is woken the usual way.
//!
//! A worker spins only while hand-offs happen: when its last spin took one,
//! or when a writer found it not spinning since (it would have taken one).
//! A worker woken only by its timers or sockets parks at once, so an idle
//! process costs what it did without spinning.
//!
//! The decision is a small lock-protected state (spinning or not, and the
//! ready list): a writer either hands its pipe to a spinning worker, which
//! is then bound to wake it when it stops spinning, or wakes it itself.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Something a spinning worker wakes on behalf of a writer.
pub(crate) trait Wakeable: Send + Sync {
    /// The waiter to notify.
    fn notify(&self) -> &Notify;
}

/// The spin state of one worker thread.
#[derive(Default)]
pub struct Spinner {
    inner: Mutex<Inner>,
    /// Set when `inner.ready` became non-empty: what the spin loop watches.
    hint: AtomicBool,
    /// Hand-offs taken while spinning (for the bench and tests).
    taken: AtomicU64,
    /// A writer found this worker not spinning since its last spin.
    missed: AtomicBool,
    /// The last spin took a hand-off.
    hit: AtomicBool,
}

#[derive(Default)]
struct Inner {
    spinning: bool,
    ready: Vec<Arc<dyn Wakeable>>,
}

impl std::fmt::Debug for Spinner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spinner").field("taken", &self.taken()).finish()
    }
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Arc<Spinner>>> = const { std::cell::RefCell::new(None) };
}

impl Spinner {
    /// A spinner for a new worker.
    pub fn new() -> Arc<Spinner> {
        Arc::new(Spinner::default())
    }

    /// Makes `self` this thread's spinner (a worker thread calls it once).
    pub fn install(self: &Arc<Self>) {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
    }

    /// The spinner of the current thread, if it is a worker.
    pub(crate) fn current() -> Option<Arc<Spinner>> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// Hands `w` to this worker if it is spinning (true: it will be
    /// notified from the worker's own thread); false: the caller must
    /// notify it.
    pub(crate) fn offer(&self, w: Arc<dyn Wakeable>) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        if !inner.spinning {
            self.missed.store(true, Ordering::Relaxed);
            return false;
        }
        inner.ready.push(w);
        self.hint.store(true, Ordering::Release);
        true
    }

    /// Spins for up to `budget`, or until something is handed over; then
    /// wakes what was. Returns how many were. Does not spin unless hand-offs
    /// are under way (see the module's text).
    pub fn spin(&self, budget: Duration) -> usize {
        let missed = self.missed.swap(false, Ordering::Relaxed);
        if budget.is_zero() || !(missed || self.hit.load(Ordering::Relaxed)) {
            return 0;
        }
        match self.inner.lock() {
            Ok(mut inner) => inner.spinning = true,
            Err(_) => return 0,
        }
        let start = Instant::now();
        let mut n: u32 = 0;
        while !self.hint.load(Ordering::Acquire) {
            n = n.wrapping_add(1);
            if n.is_multiple_of(16) {
                // (reading the clock costs more than a spin: every 16th
                // turn; and on a machine with more runnable threads than
                // cores, a spinner gives way to the thread that is about to
                // hand it work)
                if start.elapsed() >= budget {
                    break;
                }
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        self.stop()
    }

    /// Ends a spin: from now on writers wake this worker themselves; wakes
    /// what was handed over meanwhile.
    fn stop(&self) -> usize {
        let ready = match self.inner.lock() {
            Ok(mut inner) => {
                inner.spinning = false;
                self.hint.store(false, Ordering::Relaxed);
                std::mem::take(&mut inner.ready)
            }
            Err(_) => return 0,
        };
        for w in &ready {
            w.notify().notify_one();
        }
        self.taken.fetch_add(ready.len() as u64, Ordering::Relaxed);
        self.hit.store(!ready.is_empty(), Ordering::Relaxed);
        ready.len()
    }

    /// Hand-offs taken while spinning since the start.
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct W(Notify);
    impl Wakeable for W {
        fn notify(&self) -> &Notify {
            &self.0
        }
    }

    #[test]
    fn a_worker_that_is_not_spinning_refuses_a_hand_off() {
        let s = Spinner::new();
        let w = Arc::new(W(Notify::new()));
        assert!(!s.offer(w.clone()));
        assert_eq!(s.taken(), 0);
    }

    #[test]
    fn a_spinning_worker_takes_a_hand_off_and_wakes_it_when_it_stops() {
        let s = Spinner::new();
        s.inner.lock().unwrap().spinning = true;
        let w = Arc::new(W(Notify::new()));
        assert!(s.offer(w.clone()));
        assert!(s.hint.load(Ordering::Acquire), "the spin loop sees it");
        assert_eq!(s.stop(), 1);
        assert_eq!(s.taken(), 1);
        // the permit is stored: the waiter's next wait returns at once
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), w.0.notified())
                .await
                .expect("notified");
        });
        // and after the spin, writers wake it themselves again
        assert!(!s.offer(w));
    }

    #[test]
    fn a_spin_ends_at_its_budget_or_at_once_with_no_budget() {
        let s = Spinner::new();
        assert_eq!(s.spin(Duration::ZERO), 0);
        s.missed.store(true, Ordering::Relaxed);
        let t = Instant::now();
        assert_eq!(s.spin(Duration::from_micros(200)), 0);
        assert!(t.elapsed() >= Duration::from_micros(200));
        assert!(!s.inner.lock().unwrap().spinning);
    }

    #[test]
    fn a_worker_spins_only_while_hand_offs_happen() {
        let s = Spinner::new();
        let w = Arc::new(W(Notify::new()));
        // nothing was offered: parks at once (no spin, so it is not
        // spinning for a writer either)
        assert_eq!(s.spin(Duration::from_secs(3600)), 0);
        // a writer found it busy: the next park spins (and times out)
        assert!(!s.offer(w.clone()));
        assert!(s.missed.load(Ordering::Relaxed));
        assert_eq!(s.spin(Duration::from_micros(50)), 0);
        assert!(!s.hit.load(Ordering::Relaxed));
        // that spin took nothing and nobody missed it since: no more spins
        assert_eq!(s.spin(Duration::from_secs(3600)), 0);
        // a spin that took a hand-off makes the next park spin too
        s.inner.lock().unwrap().spinning = true;
        assert!(s.offer(w));
        assert_eq!(s.stop(), 1);
        assert!(s.hit.load(Ordering::Relaxed));
    }

    #[test]
    fn a_hand_off_from_another_thread_ends_the_spin() {
        let s = Spinner::new();
        let s2 = s.clone();
        let w = Arc::new(W(Notify::new()));
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            // offer until the spinner is spinning (bounded)
            for _ in 0..1_000_000 {
                if s2.offer(w2.clone()) {
                    return true;
                }
                std::thread::yield_now();
            }
            false
        });
        // (the first parks do not spin: until the writer's first offer
        // misses, nothing says hand-offs are under way)
        let mut got = 0;
        let t0 = Instant::now();
        while got == 0 && t0.elapsed() < Duration::from_secs(10) {
            got += s.spin(Duration::from_millis(10));
            std::thread::yield_now();
        }
        assert!(t.join().unwrap());
        assert_eq!(got, 1);
    }
}
