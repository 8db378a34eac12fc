//! The liveness rule of one connection: a peer is dead once no whole frame
//! arrived from it for exactly the bound; the pinging side pings after a
//! quarter of it without traffic; a wake-up that comes late means this node
//! itself was not running (SIGSTOP, a busy thread), so the peer gets half the
//! bound before it is judged (once in a row). Pure: time is passed in; the
//! driver is `net::conn::liveness`.

use std::time::Duration;

use tokio::time::Instant;

/// What the liveness check decides when it wakes (pure: time passed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing to do.
    Quiet,
    /// Send a ping.
    Ping,
    /// The peer has been silent for the bound: the connection is dead.
    Dead(Duration),
    /// This node itself did not run for a while (stopped, starved): read
    /// what is waiting and give the peer a fresh chance before judging.
    Stalled,
}

/// The liveness rule of one connection: the peer is dead once no whole
/// frame arrived for exactly `bound`; the pinging side pings after a
/// quarter of it without traffic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Liveness {
    bound: Duration,
    interval: Duration,
    pub(crate) ping: bool,
    pub(crate) last_ping: Option<Instant>,
    /// The last wake-up was a stall: the next late one is judged normally
    /// (a node late on every wake-up still detects dead peers).
    stalled: bool,
}

impl Liveness {
    pub(crate) fn new(bound: Duration, ping: bool) -> Self {
        Liveness {
            bound,
            interval: (bound / 4).max(Duration::from_millis(50)),
            ping,
            last_ping: None,
            stalled: false,
        }
    }

    /// When to wake next, given when the last frame arrived.
    pub(crate) fn next_wake(&self, last_recv: Instant) -> Instant {
        let dead_at = last_recv + self.bound;
        if !self.ping {
            return dead_at;
        }
        let quiet_since = self.last_ping.map_or(last_recv, |p| p.max(last_recv));
        dead_at.min(quiet_since + self.interval)
    }

    /// Lateness beyond which a wake-up means this node was not running.
    pub(crate) fn stall(&self) -> Duration {
        (self.interval / 2).max(Duration::from_millis(20))
    }

    /// Decides at `now`, woken for `planned`, with the last frame at `last_recv`.
    pub(crate) fn decide(&mut self, now: Instant, planned: Instant, last_recv: Instant) -> Beat {
        let late = now.saturating_duration_since(planned) > self.stall();
        if std::mem::replace(&mut self.stalled, late) {
            // judged below however late
        } else if late {
            return Beat::Stalled;
        }
        let idle = now.saturating_duration_since(last_recv);
        if idle >= self.bound {
            return Beat::Dead(idle);
        }
        let quiet_since = self.last_ping.map_or(last_recv, |p| p.max(last_recv));
        if self.ping && now.saturating_duration_since(quiet_since) >= self.interval {
            self.last_ping = Some(now);
            return Beat::Ping;
        }
        Beat::Quiet
    }

    /// After a stall at `now`: the peer gets half the bound to show life.
    pub(crate) fn after_stall(&self, now: Instant, last_recv: Instant) -> Instant {
        last_recv.max(now.checked_sub(self.bound / 2).unwrap_or(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_silent_peer_is_dead_at_exactly_the_bound() {
        let t0 = Instant::now();
        let mut l = Liveness::new(4 * S, false);
        let wake = l.next_wake(t0);
        assert_eq!(wake, t0 + 4 * S);
        assert_eq!(l.decide(wake, wake, t0), Beat::Dead(4 * S));
    }

    #[test]
    fn traffic_moves_the_deadline() {
        let t0 = Instant::now();
        let mut l = Liveness::new(4 * S, false);
        let wake = l.next_wake(t0);
        // a frame arrived 1 s before the wake-up
        assert_eq!(l.decide(wake, wake, t0 + 3 * S), Beat::Quiet);
        assert_eq!(l.next_wake(t0 + 3 * S), t0 + 7 * S);
    }

    #[test]
    fn the_pinging_side_pings_after_a_quarter_of_quiet_then_judges_at_the_bound() {
        let t0 = Instant::now();
        let mut l = Liveness::new(4 * S, true);
        let w1 = l.next_wake(t0);
        assert_eq!(w1, t0 + S);
        assert_eq!(l.decide(w1, w1, t0), Beat::Ping);
        let w2 = l.next_wake(t0);
        assert_eq!(w2, t0 + 2 * S);
        assert_eq!(l.decide(w2, w2, t0), Beat::Ping);
        l.decide(t0 + 3 * S, t0 + 3 * S, t0);
        let w4 = l.next_wake(t0);
        assert_eq!(w4, t0 + 4 * S);
        assert_eq!(l.decide(w4, w4, t0), Beat::Dead(4 * S));
    }

    #[test]
    fn a_late_wake_up_is_a_stall_of_this_node_not_a_dead_peer() {
        let t0 = Instant::now();
        let mut l = Liveness::new(4 * S, false);
        let wake = l.next_wake(t0);
        // the process was stopped for 11 s
        let now = t0 + 15 * S;
        assert_eq!(l.decide(now, wake, t0), Beat::Stalled);
        let fresh = l.after_stall(now, t0);
        assert_eq!(fresh, now - 2 * S);
        // the peer gets half the bound to show life
        assert_eq!(l.next_wake(fresh), now + 2 * S);
        assert_eq!(l.decide(now + 2 * S, now + 2 * S, fresh), Beat::Dead(4 * S));
        // ... and a frame in that time keeps the connection
        assert_eq!(l.decide(now + 2 * S, now + 2 * S, now + S), Beat::Quiet);
    }

    #[test]
    fn a_node_late_on_every_wake_up_still_judges_every_other_time() {
        let t0 = Instant::now();
        let mut l = Liveness::new(4 * S, false);
        let wake = l.next_wake(t0);
        assert_eq!(l.decide(wake + 3 * S, wake, t0), Beat::Stalled);
        let fresh = l.after_stall(wake + 3 * S, t0);
        let wake = l.next_wake(fresh);
        assert_eq!(l.decide(wake + 3 * S, wake, fresh), Beat::Dead(7 * S));
    }

    #[test]
    fn small_lateness_is_not_a_stall() {
        let t0 = Instant::now();
        let mut l = Liveness::new(4 * S, false);
        let wake = l.next_wake(t0);
        assert_eq!(
            l.decide(wake + Duration::from_millis(10), wake, t0),
            Beat::Dead(4 * S + Duration::from_millis(10))
        );
    }
}
