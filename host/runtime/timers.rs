//! The timers of one node: a heap of deadlines, the ids of Lua timers not
//! yet fired, and cancellations. Time is passed in; the node's timer task
//! sleeps until [`Timers::next_at`] and fires what [`Timers::pop_due`]
//! returns.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Ids start here so they never meet call ids (u32, the frame session).
pub(crate) const FIRST_ID: u64 = 1 << 32;

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    /// A Lua timer (`timer.after`, `rpcco.sleep`): its id goes to Lua.
    Lua(u64),
    /// The node joins its own ring (static discovery, once registered).
    SelfOnline,
}

/// The timers of one node.
#[derive(Debug)]
pub(crate) struct Timers {
    heap: RefCell<BinaryHeap<Reverse<(Instant, u64, TimerKind)>>>,
    /// Lua timers scheduled and not yet fired or cancelled.
    lua: RefCell<HashSet<u64>>,
    /// Lua timers cancelled while still in the heap.
    cancelled: RefCell<HashSet<u64>>,
    next: Cell<u64>,
    /// Wakes the timer task when an earlier deadline arrives.
    pub(crate) wake: Notify,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            heap: RefCell::default(),
            lua: RefCell::default(),
            cancelled: RefCell::default(),
            next: Cell::new(FIRST_ID),
            wake: Notify::new(),
        }
    }
}

impl Timers {
    /// A fresh id (timers and evals), never a call id.
    pub(crate) fn next_id(&self) -> u64 {
        let id = self.next.get();
        self.next.set(id + 1);
        id
    }

    /// Schedules `kind` at `at`; wakes the task when it is the earliest.
    pub(crate) fn push(&self, at: Instant, kind: TimerKind) {
        let seq = self.next_id();
        let mut heap = self.heap.borrow_mut();
        let earlier = heap.peek().is_none_or(|Reverse((t, _, _))| at < *t);
        heap.push(Reverse((at, seq, kind)));
        drop(heap);
        if earlier {
            self.wake.notify_one();
        }
    }

    /// Starts a Lua timer firing `after` from `now` (clamped to
    /// `MAX_DELAY`); returns its id.
    pub(crate) fn add(&self, after: Duration, now: Instant) -> u64 {
        let id = self.next_id();
        self.lua.borrow_mut().insert(id);
        self.push(now + after.min(crate::rpc::MAX_DELAY), TimerKind::Lua(id));
        id
    }

    /// Cancels a Lua timer that has not fired (other ids are ignored).
    pub(crate) fn cancel(&self, id: u64) {
        if self.lua.borrow_mut().remove(&id) {
            self.cancelled.borrow_mut().insert(id);
        }
    }

    /// When the earliest timer is due.
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.heap.borrow().peek().map(|Reverse((t, _, _))| *t)
    }

    /// The next timer due at `now`, skipping cancelled ones.
    pub(crate) fn pop_due(&self, now: Instant) -> Option<TimerKind> {
        loop {
            let kind = {
                let mut heap = self.heap.borrow_mut();
                match heap.peek() {
                    Some(Reverse((t, _, _))) if *t <= now => heap.pop().map(|Reverse((_, _, k))| k)?,
                    _ => return None,
                }
            };
            if let TimerKind::Lua(id) = kind {
                self.lua.borrow_mut().remove(&id);
                if self.cancelled.borrow_mut().remove(&id) {
                    continue;
                }
            }
            return Some(kind);
        }
    }

    /// Lua timers scheduled and not yet fired or cancelled.
    #[cfg(test)]
    fn pending_lua(&self) -> usize {
        self.lua.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn timers_fire_in_deadline_order_once_due() {
        let t0 = Instant::now();
        let t = Timers::default();
        let b = t.add(2 * S, t0);
        let a = t.add(S, t0);
        t.push(t0 + 3 * S, TimerKind::SelfOnline);
        assert_eq!(t.next_at(), Some(t0 + S));
        assert_eq!(t.pop_due(t0), None, "nothing due yet");
        assert_eq!(t.pop_due(t0 + 2 * S), Some(TimerKind::Lua(a)));
        assert_eq!(t.pop_due(t0 + 2 * S), Some(TimerKind::Lua(b)));
        assert_eq!(t.pop_due(t0 + 2 * S), None);
        assert_eq!(t.pop_due(t0 + 3 * S), Some(TimerKind::SelfOnline));
        assert_eq!(t.pending_lua(), 0);
    }

    #[test]
    fn a_cancelled_timer_never_fires_and_leaves_nothing_behind() {
        let t0 = Instant::now();
        let t = Timers::default();
        let a = t.add(S, t0);
        let b = t.add(S, t0);
        t.cancel(a);
        t.cancel(a); // twice: no effect
        t.cancel(12345); // unknown: no effect
        assert_eq!(t.pop_due(t0 + S), Some(TimerKind::Lua(b)));
        assert_eq!(t.pop_due(t0 + S), None);
        assert_eq!(t.pending_lua(), 0);
        assert!(t.cancelled.borrow().is_empty());
    }

    #[test]
    fn cancelling_a_fired_timer_does_not_grow_the_cancelled_set() {
        let t0 = Instant::now();
        let t = Timers::default();
        let a = t.add(Duration::ZERO, t0);
        assert_eq!(t.pop_due(t0), Some(TimerKind::Lua(a)));
        t.cancel(a);
        assert!(t.cancelled.borrow().is_empty());
    }

    #[test]
    fn huge_delays_are_clamped_and_ids_never_meet_call_ids() {
        let t0 = Instant::now();
        let t = Timers::default();
        let id = t.add(Duration::MAX, t0);
        assert!(id >= FIRST_ID);
        assert_eq!(t.next_at(), Some(t0 + crate::rpc::MAX_DELAY));
    }

    #[test]
    fn an_earlier_deadline_wakes_the_task_a_later_one_does_not() {
        let t0 = Instant::now();
        let t = Timers::default();
        t.push(t0 + 2 * S, TimerKind::SelfOnline);
        // consume the wake-up of the first push
        let first = t.wake.notified();
        tokio::pin!(first);
        assert!(futures_ready(first.as_mut()));
        t.push(t0 + 3 * S, TimerKind::SelfOnline);
        let later = t.wake.notified();
        tokio::pin!(later);
        assert!(!futures_ready(later.as_mut()), "a later deadline needs no wake-up");
        t.push(t0 + S, TimerKind::SelfOnline);
        assert!(futures_ready(later.as_mut()), "an earlier one does");
    }

    /// Polls a future once.
    fn futures_ready<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        f.poll(&mut cx).is_ready()
    }
}
