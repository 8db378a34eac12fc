//! The connect states of one peer (seed 003: disconnected, connecting,
//! connected) and when to try again: the rule of `net::peer::peer_task`,
//! without its sockets and sleeps.
//!
//! After a failed attempt, or a lost connection, the next attempt is due
//! `backoff + jitter` later; `backoff` starts at [`BACKOFF_MIN`], doubles
//! after every wait up to [`BACKOFF_MAX`], and is back at the minimum once a
//! connection verifies. A message to a disconnected peer (a "kick") makes the
//! attempt due at once, but never sooner than [`MIN_RETRY_GAP`] after the
//! failure (so a call waits at most that long for the attempt that decides
//! it, and a chatty script cannot make a dead address be dialled in a busy
//! loop). A connection closed for a reverify (this node's schema changed) is
//! dialled again at once, without a wait.
//!
//! A thin driver owns one [`Reconnect`] per peer and does what it says:
//!
//! ```text
//! loop {
//!     match rc.poll(Instant::now()) {
//!         Step::Connect => match connect().await {
//!             Ok(conn) => {
//!                 if rc.connected() { info!("connected to {name} again") }
//!                 let cause = serve(conn).await;
//!                 rc.lost(Instant::now(), jitter(), cause == Cause::Reverify);
//!                 core.peer_lost(..);           // Lua may kick from here
//!             }
//!             Err(cause) => {
//!                 if rc.failed(Instant::now(), jitter(), &cause.to_string()).report { log }
//!                 core.fail_peer(..);           // Lua may kick from here
//!             }
//!         },
//!         Step::SleepUntil(t) => select! { _ = sleep_until(t) => {}, _ = woken => {} },
//!         Step::Busy => unreachable!(),       // this driver awaits its attempts
//!     }
//! }
//! // and wherever a message is queued for a disconnected peer:
//! rc.kick(Instant::now()); wake the driver;
//! ```
//!
//! The failure or loss is recorded before the waiting calls are failed, so
//! that a script reacting to `node down` by calling again kicks this very
//! wait (as it does today).

use std::time::Duration;

use tokio::time::Instant;

/// The first wait after a failure, and the wait after a lost connection.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// The longest wait between attempts (before jitter).
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Attempts to one peer are at least this far apart (from the failure to the
/// next attempt), however much is sent to it.
pub const MIN_RETRY_GAP: Duration = Duration::from_millis(100);
/// The driver draws the jitter of each wait below this (today
/// `mix64(connection counter ^ sid) % 50` ms), so that peers that failed
/// together do not all dial again in the same instant.
pub const JITTER_MAX: Duration = Duration::from_millis(50);

/// Connection state of a peer (seed 003; the runtime's `PeerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// No connection and no attempt under way; messages wait in the queue.
    Disconnected,
    /// Connecting or verifying; messages wait in the queue.
    Connecting,
    /// Verified; messages flow.
    Connected,
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start an attempt now (the state is [`ConnState::Connecting`] from
    /// here on).
    Connect,
    /// Nothing is due before this instant: sleep until then, or until a
    /// kick, and ask again.
    SleepUntil(Instant),
    /// An attempt is under way or the connection is up: wait for its
    /// outcome ([`Reconnect::connected`], [`Reconnect::failed`],
    /// [`Reconnect::lost`]).
    Busy,
}

/// What [`Reconnect::failed`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// When the next attempt is due (unless a kick brings it forward).
    pub retry_at: Instant,
    /// Whether to log this failure: its text differs from the last one
    /// logged since the peer was last connected (a peer that stays away is
    /// logged once per reason, not once per attempt).
    pub report: bool,
}

/// The connect state machine and backoff of one peer.
#[derive(Debug, Clone)]
pub struct Reconnect {
    /// Where the peer is.
    state: ConnState,
    /// The wait, before jitter, after the next failure or loss.
    backoff: Duration,
    /// While disconnected: when the next attempt is due.
    due: Option<Instant>,
    /// When the current wait began (the failure or loss it follows).
    failed_at: Option<Instant>,
    /// A kick came while an attempt was already due (no wait under way): it
    /// cuts the next wait short (see [`Reconnect::kick`]).
    early_kick: bool,
    /// The text of the last failure logged since the last connection ("":
    /// none).
    last_error: String,
}

impl Reconnect {
    /// A peer not connected yet, its first attempt due at `now`.
    pub fn new(now: Instant) -> Self {
        Reconnect {
            state: ConnState::Disconnected,
            backoff: BACKOFF_MIN,
            due: Some(now),
            failed_at: None,
            early_kick: false,
            last_error: String::new(),
        }
    }

    /// The peer's connect state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// When the next attempt is due, while disconnected.
    #[cfg(test)]
    pub fn due(&self) -> Option<Instant> {
        match self.state {
            ConnState::Disconnected => self.due,
            _ => None,
        }
    }

    /// The wait (before jitter) the next failure or loss will get.
    #[cfg(test)]
    pub fn backoff(&self) -> Duration {
        self.backoff
    }

    /// What to do at `now`: start the attempt that is due (moving to
    /// connecting), sleep until it is due, or nothing while an attempt is
    /// under way or the connection is up.
    pub fn poll(&mut self, now: Instant) -> Step {
        match (self.state, self.due) {
            (ConnState::Disconnected, Some(due)) if due > now => Step::SleepUntil(due),
            (ConnState::Disconnected, _) => {
                self.state = ConnState::Connecting;
                self.due = None;
                Step::Connect
            }
            _ => Step::Busy,
        }
    }

    /// The attempt verified: the peer is connected and the backoff is back
    /// at its minimum. Returns true when failures were logged since the last
    /// connection (the driver then logs that the peer is back).
    pub fn connected(&mut self) -> bool {
        self.state = ConnState::Connected;
        self.backoff = BACKOFF_MIN;
        self.due = None;
        let again = !self.last_error.is_empty();
        self.last_error.clear();
        again
    }

    /// The attempt failed at `now` with `cause`: disconnected, the next
    /// attempt due after the backoff plus `jitter`, and the backoff doubles
    /// (up to [`BACKOFF_MAX`]). Says whether to log `cause` (an empty text
    /// never is: it reads as "nothing logged yet").
    pub fn failed(&mut self, now: Instant, jitter: Duration, cause: &str) -> Failure {
        let report = cause != self.last_error;
        if report {
            self.last_error = cause.to_string();
        }
        Failure {
            retry_at: self.wait(now, jitter),
            report,
        }
    }

    /// The connection was lost at `now`. After a reverify (this node's
    /// schema changed) the next attempt is due at once and the backoff stays;
    /// otherwise as after a failure: due after the backoff (the minimum,
    /// since the connection had verified) plus `jitter`, and the backoff
    /// doubles. Returns when the next attempt is due.
    pub fn lost(&mut self, now: Instant, jitter: Duration, reverify: bool) -> Instant {
        if reverify {
            self.state = ConnState::Disconnected;
            self.due = Some(now);
            now
        } else {
            self.wait(now, jitter)
        }
    }

    /// Begins the wait after a failure or loss at `now`.
    fn wait(&mut self, now: Instant, jitter: Duration) -> Instant {
        self.state = ConnState::Disconnected;
        self.failed_at = Some(now);
        let mut due = now + self.backoff + jitter;
        if std::mem::take(&mut self.early_kick) {
            // a kick was already waiting when this wait began
            due = due.min(now + MIN_RETRY_GAP);
        }
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.due = Some(due);
        due
    }

    /// A message is waiting for the peer at `now`. While disconnected, the
    /// next attempt becomes due at once, but not before [`MIN_RETRY_GAP`]
    /// after the failure the wait follows (never later than it already
    /// was); returns when it is due. While connecting or connected a kick
    /// changes nothing (the queue goes out once connected) and `None` comes
    /// back.
    ///
    /// A kick while an attempt is already due (before the first attempt, or
    /// right after a reverify) is remembered and cuts the wait after that
    /// attempt to [`MIN_RETRY_GAP`] without jitter: today's driver keeps it
    /// as a stored `Notify` permit.
    pub fn kick(&mut self, now: Instant) -> Option<Instant> {
        if self.state != ConnState::Disconnected {
            return None;
        }
        let due = match self.due {
            Some(due) if due <= now => {
                self.early_kick = true;
                due
            }
            Some(due) => {
                let earliest = self.failed_at.map_or(now, |f| now.max(f + MIN_RETRY_GAP));
                due.min(earliest)
            }
            None => now,
        };
        self.due = Some(due);
        Some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const J0: Duration = Duration::ZERO;

    /// A machine whose first attempt started at `t`.
    fn connecting(t: Instant) -> Reconnect {
        let mut r = Reconnect::new(t);
        assert_eq!(r.poll(t), Step::Connect);
        r
    }

    #[test]
    fn the_first_attempt_is_due_at_once() {
        let t = Instant::now();
        let mut r = Reconnect::new(t);
        assert_eq!(r.state(), ConnState::Disconnected);
        assert_eq!(r.due(), Some(t));
        assert_eq!(r.poll(t), Step::Connect);
        assert_eq!(r.state(), ConnState::Connecting);
        assert_eq!(r.due(), None);
        assert_eq!(r.poll(t + MS), Step::Busy, "one attempt at a time");
    }

    #[test]
    fn failures_back_off_100ms_doubling_to_2s() {
        let t0 = Instant::now();
        let mut r = connecting(t0);
        let mut t = t0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let f = r.failed(t, J0, "refused");
            waits.push((f.retry_at - t).as_millis());
            assert_eq!(r.poll(f.retry_at - MS), Step::SleepUntil(f.retry_at));
            assert_eq!(r.poll(f.retry_at), Step::Connect);
            t = f.retry_at;
        }
        assert_eq!(waits, vec![100, 200, 400, 800, 1600, 2000, 2000]);
    }

    #[test]
    fn jitter_lengthens_the_wait_but_not_the_backoff() {
        let t = Instant::now();
        let mut r = connecting(t);
        let f = r.failed(t, 37 * MS, "x");
        assert_eq!(f.retry_at, t + 137 * MS);
        assert_eq!(r.backoff(), 200 * MS);
    }

    #[test]
    fn a_connection_resets_the_backoff() {
        let t = Instant::now();
        let mut r = connecting(t);
        for _ in 0..4 {
            r.failed(t, J0, "x");
            r.poll(t + Duration::from_secs(3));
        }
        assert_eq!(r.backoff(), 1600 * MS);
        r.connected();
        assert_eq!(r.state(), ConnState::Connected);
        assert_eq!(r.backoff(), BACKOFF_MIN);
    }

    #[test]
    fn a_lost_connection_waits_the_minimum_then_backs_off() {
        let t = Instant::now();
        let mut r = connecting(t);
        r.connected();
        let at = r.lost(t, 10 * MS, false);
        assert_eq!(at, t + 110 * MS);
        assert_eq!(r.state(), ConnState::Disconnected);
        assert_eq!(r.poll(at), Step::Connect);
        let f = r.failed(at, J0, "refused");
        assert_eq!(f.retry_at, at + 200 * MS, "the loss counted as the first wait");
    }

    #[test]
    fn a_reverify_reconnects_at_once_and_keeps_the_backoff() {
        let t = Instant::now();
        let mut r = connecting(t);
        r.connected();
        assert_eq!(r.lost(t, 40 * MS, true), t);
        assert_eq!(r.poll(t), Step::Connect);
        assert_eq!(r.backoff(), BACKOFF_MIN, "no wait was spent");
        let f = r.failed(t, J0, "refused");
        assert_eq!(f.retry_at, t + 100 * MS);
    }

    #[test]
    fn a_kick_after_the_gap_makes_the_attempt_due_at_once() {
        let t = Instant::now();
        let mut r = connecting(t);
        for _ in 0..3 {
            let f = r.failed(t, J0, "x");
            r.poll(f.retry_at);
        }
        let f = r.failed(t, J0, "x"); // an 800 ms wait
        assert_eq!(f.retry_at, t + 800 * MS);
        let k = t + 250 * MS;
        assert_eq!(r.kick(k), Some(k));
        assert_eq!(r.poll(k), Step::Connect);
    }

    #[test]
    fn a_kick_within_the_gap_waits_for_the_gap() {
        let t = Instant::now();
        let mut r = connecting(t);
        r.failed(t, J0, "x");
        let f = r.failed(t, 30 * MS, "x"); // 230 ms
        assert_eq!(f.retry_at, t + 230 * MS);
        assert_eq!(r.kick(t + 20 * MS), Some(t + MIN_RETRY_GAP));
        assert_eq!(r.poll(t + 99 * MS), Step::SleepUntil(t + MIN_RETRY_GAP));
        assert_eq!(r.poll(t + MIN_RETRY_GAP), Step::Connect);
    }

    #[test]
    fn a_kick_never_postpones_the_attempt() {
        let t = Instant::now();
        let mut r = connecting(t);
        let f = r.failed(t, J0, "x"); // due at +100 ms
        assert_eq!(r.kick(t + 50 * MS), Some(f.retry_at));
        assert_eq!(r.kick(t + 99 * MS), Some(f.retry_at));
    }

    #[test]
    fn a_kicked_wait_still_doubles_the_backoff() {
        let t = Instant::now();
        let mut r = connecting(t);
        r.failed(t, J0, "x");
        r.failed(t, J0, "x"); // backoff now 400 ms
        let due = r.kick(t + 150 * MS).unwrap();
        r.poll(due);
        let f = r.failed(due, J0, "x");
        assert_eq!(f.retry_at, due + 400 * MS);
    }

    #[test]
    fn kicks_while_connecting_or_connected_change_nothing() {
        let t = Instant::now();
        let mut r = connecting(t);
        assert_eq!(r.kick(t), None);
        r.connected();
        assert_eq!(r.kick(t), None);
        assert_eq!(r.poll(t), Step::Busy);
        // and no kick was remembered: the loss gets the normal wait
        assert_eq!(r.lost(t, 20 * MS, false), t + 120 * MS);
    }

    #[test]
    fn a_kick_from_the_failed_calls_reaction_counts_for_this_wait() {
        // the driver records the failure, then fails the waiting calls; a
        // script calling again at once kicks the wait that just began
        let t = Instant::now();
        let mut r = connecting(t);
        r.failed(t, J0, "x");
        r.poll(t + 100 * MS);
        let t1 = t + 100 * MS;
        r.failed(t1, 40 * MS, "x"); // 240 ms
        assert_eq!(r.kick(t1), Some(t1 + MIN_RETRY_GAP));
    }

    #[test]
    fn a_kick_before_the_first_attempt_cuts_its_wait_to_the_gap() {
        // today: a Notify permit stored while no wait was under way
        let t = Instant::now();
        let mut r = Reconnect::new(t);
        assert_eq!(r.kick(t), Some(t));
        assert_eq!(r.poll(t), Step::Connect);
        let f = r.failed(t + 5 * MS, 45 * MS, "x");
        assert_eq!(f.retry_at, t + 105 * MS, "the gap, without jitter");
        r.poll(f.retry_at);
        let f = r.failed(f.retry_at, 45 * MS, "x");
        assert_eq!(
            f.retry_at,
            t + 105 * MS + 245 * MS,
            "used once; the backoff doubled anyway"
        );
    }

    #[test]
    fn a_kick_during_a_reverify_cuts_the_wait_after_the_next_attempt() {
        let t = Instant::now();
        let mut r = connecting(t);
        r.connected();
        r.lost(t, J0, true);
        assert_eq!(r.kick(t), Some(t), "already due");
        r.poll(t);
        let f = r.failed(t, 30 * MS, "x");
        assert_eq!(f.retry_at, t + MIN_RETRY_GAP);
    }

    #[test]
    fn a_peer_that_stays_away_is_logged_once_per_reason() {
        let t = Instant::now();
        let mut r = connecting(t);
        assert!(r.failed(t, J0, "connection refused").report);
        assert!(!r.failed(t, J0, "connection refused").report);
        assert!(r.failed(t, J0, "connect timed out").report);
        assert!(r.failed(t, J0, "connection refused").report);
        assert!(!r.failed(t, J0, "connection refused").report);
    }

    #[test]
    fn connected_says_whether_failures_were_logged() {
        let t = Instant::now();
        let mut r = connecting(t);
        assert!(!r.connected(), "a first connection is not 'again'");
        r.lost(t, J0, false);
        r.poll(t + Duration::from_secs(1));
        assert!(!r.connected(), "a loss alone is logged by the driver, not here");
        r.lost(t, J0, false);
        r.poll(t + Duration::from_secs(1));
        assert!(r.failed(t, J0, "refused").report);
        r.poll(t + Duration::from_secs(1));
        assert!(r.connected());
        r.lost(t, J0, false);
        r.poll(t + Duration::from_secs(1));
        assert!(
            r.failed(t, J0, "refused").report,
            "the same reason is logged again after a connection"
        );
    }

    #[test]
    fn an_empty_cause_is_never_reported() {
        let t = Instant::now();
        let mut r = connecting(t);
        assert!(!r.failed(t, J0, "").report);
        assert!(!r.connected());
    }

    #[test]
    fn sleeping_until_the_due_instant_then_connecting() {
        let t = Instant::now();
        let mut r = connecting(t);
        let f = r.failed(t, 7 * MS, "x");
        assert_eq!(r.due(), Some(f.retry_at));
        assert_eq!(r.poll(t), Step::SleepUntil(t + 107 * MS));
        assert_eq!(r.state(), ConnState::Disconnected);
        assert_eq!(r.poll(t + 200 * MS), Step::Connect, "late is still due");
    }
}
