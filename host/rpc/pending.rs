//! Calls waiting for their replies: call ids, deadlines, and what happens to
//! the waiting calls when a reply comes, a deadline passes, or the
//! connection goes.
//!
//! One [`CallIds`] per node hands out call ids (a call id is the frame
//! session of the call and of its reply, and the key Lua's dispatcher
//! resumes the waiting coroutine by). One [`Calls`] per peer holds the
//! calls waiting on that peer. Time is an argument everywhere: the driver's
//! deadline sweep passes its `now`, so timeouts are tested without sleeping.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

/// The longest call timeout accepted; longer ones are clamped to it (the
/// same bound as timers: one year).
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Hands out call ids: `1, 2, ..., u32::MAX, 1, ...` (never 0, which no
/// call has), skipping ids still in use.
#[derive(Debug, Clone)]
pub struct CallIds {
    /// The id to try next.
    next: u32,
}

impl Default for CallIds {
    fn default() -> Self {
        CallIds::new()
    }
}

impl CallIds {
    /// An allocator whose first id is 1.
    pub fn new() -> Self {
        CallIds { next: 1 }
    }

    /// An allocator whose first id is `first` (0 counts as 1); for tests of
    /// the wrap-around and for a driver that must go on from a given id.
    #[cfg(test)]
    pub fn starting_at(first: u32) -> Self {
        CallIds { next: first.max(1) }
    }

    /// The next free id: the one after the last handed out, wrapping from
    /// `u32::MAX` to 1, and skipping every id for which `in_use` is true
    /// (calls still waiting, on any peer: ids are node-wide, as Lua's table
    /// of waiting coroutines is). Returns `None` only when every id is in
    /// use (after asking about all of them).
    pub fn next(&mut self, mut in_use: impl FnMut(u32) -> bool) -> Option<u32> {
        for _ in 0..u32::MAX {
            let id = self.next;
            self.next = if id == u32::MAX { 1 } else { id + 1 };
            if !in_use(id) {
                return Some(id);
            }
        }
        None
    }
}

/// A call waiting for its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The method id (named in the error if the call fails).
    pub mid: u32,
    /// When it times out.
    pub deadline: Instant,
    /// Its timeout after clamping (named in the timeout error).
    pub timeout: Duration,
}

/// The calls waiting on one peer, by call id.
///
/// One hash map and nothing else on the hot path (a call is one insert and
/// one remove); the deadline sweep scans it (every 10 ms, as the node's
/// deadline task ticks) and orders what expired. A second index by deadline
/// (a `BTreeSet`) made `call --conc 100` ~10% slower in the bench.
#[derive(Debug, Default, Clone)]
pub struct Calls {
    /// Every waiting call by id.
    calls: HashMap<u32, Call>,
}

/// Sorts calls by deadline, then id.
fn by_deadline(mut v: Vec<(u32, Call)>) -> Vec<(u32, Call)> {
    v.sort_unstable_by_key(|(id, c)| (c.deadline, *id));
    v
}

impl Calls {
    /// No calls waiting.
    pub fn new() -> Self {
        Calls::default()
    }

    /// Number of calls waiting.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// True when no call waits.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// True when call `id` waits here.
    pub fn contains(&self, id: u32) -> bool {
        self.calls.contains_key(&id)
    }

    /// The waiting call `id`.
    #[cfg(test)]
    pub fn get(&self, id: u32) -> Option<&Call> {
        self.calls.get(&id)
    }

    /// Records call `id` of method `mid`, made at `now`, due by `now +
    /// timeout` with the timeout clamped to [`MAX_DELAY`]. Returns the call
    /// it displaced if `id` was already waiting (ids from [`CallIds`] never
    /// are; the displaced call would otherwise never be answered, so the
    /// caller should fail it).
    pub fn insert(&mut self, id: u32, mid: u32, timeout: Duration, now: Instant) -> Option<Call> {
        let timeout = timeout.min(MAX_DELAY);
        let call = Call {
            mid,
            deadline: now + timeout,
            timeout,
        };
        self.calls.insert(id, call)
    }

    /// Takes call `id` when its reply arrives; `None` for a reply nobody
    /// waits for any more (the call timed out or failed: a late reply is
    /// dropped).
    pub fn take(&mut self, id: u32) -> Option<Call> {
        self.calls.remove(&id)
    }

    /// Takes the calls whose deadline is at or before `now` (a call is late
    /// at its deadline exactly), in deadline order (equal deadlines by id).
    pub fn expire(&mut self, now: Instant) -> Vec<(u32, Call)> {
        let ids: Vec<u32> = self
            .calls
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        by_deadline(
            ids.into_iter()
                .filter_map(|id| self.calls.remove(&id).map(|c| (id, c)))
                .collect(),
        )
    }

    /// The earliest deadline of the calls waiting, if any.
    #[cfg(test)]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.calls.values().map(|c| c.deadline).min()
    }

    /// Takes every waiting call (the peer is down: they all fail), in
    /// deadline order.
    pub fn drain(&mut self) -> Vec<(u32, Call)> {
        by_deadline(self.calls.drain().collect())
    }

    /// Takes the calls that are not in `queued` (the ids still queued whole
    /// in the link, never written), in deadline order: after a reverify the
    /// calls written on the closed connection fail, while those still
    /// queued go out on the next connection and keep waiting.
    pub fn drain_written(&mut self, queued: &HashSet<u32>) -> Vec<(u32, Call)> {
        let ids: Vec<u32> = self.calls.keys().filter(|id| !queued.contains(id)).copied().collect();
        by_deadline(
            ids.into_iter()
                .filter_map(|id| self.calls.remove(&id).map(|c| (id, c)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ids(v: &[(u32, Call)]) -> Vec<u32> {
        v.iter().map(|(id, _)| *id).collect()
    }

    #[test]
    fn ids_start_at_1_and_count_up() {
        let mut a = CallIds::new();
        let got: Vec<u32> = (0..3).map(|_| a.next(|_| false).unwrap()).collect();
        assert_eq!(got, vec![1, 2, 3]);
    }

    #[test]
    fn ids_wrap_from_max_to_1_never_0() {
        let mut a = CallIds::starting_at(u32::MAX - 1);
        let got: Vec<u32> = (0..3).map(|_| a.next(|_| false).unwrap()).collect();
        assert_eq!(got, vec![u32::MAX - 1, u32::MAX, 1]);
        assert_eq!(CallIds::starting_at(0).next(|_| false), Some(1));
    }

    #[test]
    fn ids_still_waiting_are_skipped() {
        let mut a = CallIds::new();
        let busy: HashSet<u32> = [1, 2, 4].into_iter().collect();
        assert_eq!(a.next(|id| busy.contains(&id)), Some(3));
        assert_eq!(a.next(|id| busy.contains(&id)), Some(5));
    }

    #[test]
    fn skipping_wraps_around_too() {
        let mut a = CallIds::starting_at(u32::MAX);
        let busy: HashSet<u32> = [u32::MAX, 1].into_iter().collect();
        assert_eq!(a.next(|id| busy.contains(&id)), Some(2));
    }

    #[test]
    fn skipping_asks_about_the_ids_of_every_peer() {
        let mut a = CallIds::new();
        let mut p1 = Calls::new();
        let mut p2 = Calls::new();
        let t = Instant::now();
        p1.insert(1, 9, MS, t);
        p2.insert(2, 9, MS, t);
        let peers = [&p1, &p2];
        assert_eq!(a.next(|id| peers.iter().any(|p| p.contains(id))), Some(3));
    }

    #[test]
    fn the_deadline_is_now_plus_the_timeout() {
        let t = Instant::now();
        let mut c = Calls::new();
        c.insert(1, 9, 500 * MS, t);
        let call = c.get(1).unwrap();
        assert_eq!(call.deadline, t + 500 * MS);
        assert_eq!(call.timeout, 500 * MS);
        assert_eq!(call.mid, 9);
    }

    #[test]
    fn a_timeout_beyond_a_year_is_clamped() {
        let t = Instant::now();
        let mut c = Calls::new();
        c.insert(1, 9, MAX_DELAY * 3, t);
        let call = c.get(1).unwrap();
        assert_eq!(call.timeout, MAX_DELAY);
        assert_eq!(call.deadline, t + MAX_DELAY);
        assert_eq!(MAX_DELAY, Duration::from_secs(31_536_000));
    }

    #[test]
    fn a_reply_takes_its_call_once() {
        let t = Instant::now();
        let mut c = Calls::new();
        c.insert(7, 9, 100 * MS, t);
        assert_eq!(c.take(7).map(|x| x.mid), Some(9));
        assert_eq!(c.take(7), None, "a second reply is late");
        assert!(c.is_empty());
        assert_eq!(c.next_deadline(), None, "its deadline went with it");
        assert!(c.expire(t + 200 * MS).is_empty());
    }

    #[test]
    fn a_reply_for_an_unknown_id_takes_nothing() {
        let t = Instant::now();
        let mut c = Calls::new();
        c.insert(1, 9, 100 * MS, t);
        assert_eq!(c.take(2), None);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_call_expires_at_its_deadline_exactly() {
        let t = Instant::now();
        let mut c = Calls::new();
        c.insert(1, 9, 100 * MS, t);
        assert!(c.expire(t + 99 * MS).is_empty());
        assert_eq!(c.len(), 1);
        let e = c.expire(t + 100 * MS);
        assert_eq!(ids(&e), vec![1]);
        assert_eq!(e[0].1.timeout, 100 * MS);
        assert!(c.is_empty());
    }

    #[test]
    fn the_sweep_returns_expired_calls_in_deadline_order() {
        let t = Instant::now();
        let mut c = Calls::new();
        c.insert(1, 9, 300 * MS, t);
        c.insert(2, 9, 100 * MS, t);
        c.insert(3, 9, 200 * MS, t);
        c.insert(4, 9, 900 * MS, t);
        assert_eq!(ids(&c.expire(t + 500 * MS)), vec![2, 3, 1]);
        assert_eq!(ids(&c.drain()), vec![4]);
    }

    #[test]
    fn equal_deadlines_expire_by_id() {
        let t = Instant::now();
        let mut c = Calls::new();
        for id in [5, 3, 4] {
            c.insert(id, 9, 100 * MS, t);
        }
        assert_eq!(ids(&c.expire(t + 100 * MS)), vec![3, 4, 5]);
    }

    #[test]
    fn an_expired_call_is_gone_and_its_late_reply_dropped() {
        let t = Instant::now();
        let mut c = Calls::new();
        c.insert(1, 9, 100 * MS, t);
        c.expire(t + 100 * MS);
        assert_eq!(c.take(1), None);
        assert!(c.expire(t + 1000 * MS).is_empty(), "it does not expire twice");
    }

    #[test]
    fn next_deadline_is_the_earliest_waiting() {
        let t = Instant::now();
        let mut c = Calls::new();
        assert_eq!(c.next_deadline(), None);
        c.insert(1, 9, 300 * MS, t);
        c.insert(2, 9, 100 * MS, t);
        assert_eq!(c.next_deadline(), Some(t + 100 * MS));
        c.take(2);
        assert_eq!(c.next_deadline(), Some(t + 300 * MS));
    }

    #[test]
    fn a_zero_timeout_expires_at_once() {
        let t = Instant::now();
        let mut c = Calls::new();
        c.insert(1, 9, Duration::ZERO, t);
        assert_eq!(ids(&c.expire(t)), vec![1]);
    }

    #[test]
    fn inserting_a_waiting_id_returns_the_displaced_call_and_its_deadline_goes() {
        let t = Instant::now();
        let mut c = Calls::new();
        c.insert(1, 9, 100 * MS, t);
        let old = c.insert(1, 8, 500 * MS, t).expect("displaced");
        assert_eq!(old.mid, 9);
        assert_eq!(c.len(), 1);
        assert_eq!(c.next_deadline(), Some(t + 500 * MS));
        assert!(c.expire(t + 100 * MS).is_empty(), "the old deadline no longer fires");
    }

    #[test]
    fn a_lost_peer_drains_every_call_in_deadline_order() {
        let t = Instant::now();
        let mut c = Calls::new();
        c.insert(1, 9, 300 * MS, t);
        c.insert(2, 8, 100 * MS, t);
        let d = c.drain();
        assert_eq!(ids(&d), vec![2, 1]);
        assert_eq!(d[0].1.mid, 8);
        assert!(c.is_empty());
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn reverify_fails_written_calls_and_keeps_queued_ones() {
        let t = Instant::now();
        let mut c = Calls::new();
        for id in 1..=4 {
            c.insert(id, 9, (100 * id) * MS, t);
        }
        let queued: HashSet<u32> = [2, 4, 99].into_iter().collect();
        assert_eq!(ids(&c.drain_written(&queued)), vec![1, 3]);
        assert!(c.contains(2) && c.contains(4));
        assert!(!c.contains(1) && !c.contains(3));
        assert_eq!(c.next_deadline(), Some(t + 200 * MS));
        // the kept ones still time out as before
        assert_eq!(ids(&c.expire(t + 400 * MS)), vec![2, 4]);
    }

    #[test]
    fn reverify_with_nothing_queued_fails_everything() {
        let t = Instant::now();
        let mut c = Calls::new();
        c.insert(1, 9, MS, t);
        c.insert(2, 9, MS, t);
        assert_eq!(ids(&c.drain_written(&HashSet::new())), vec![1, 2]);
        assert!(c.is_empty());
    }
}
