//! Pure rules of supervision: when a crashed process is started again
//! (exponential backoff that forgets after a stable run), and whether a
//! process record says alive, dead or stopped (by its age alone, seed 004:
//! not by any connection, so that a daemon's death changes nothing).

use std::time::Duration;
use tokio::time::Instant;

use super::store::{ProcRecord, ProcState};

/// Restart delays of one process.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
    /// A run at least this long forgets earlier crashes.
    pub stable: Duration,
    crashes: u32,
}

impl Default for Backoff {
    /// 500 ms doubling to 30 s; a run of 10 s forgets.
    fn default() -> Self {
        Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(30),
            Duration::from_secs(10),
        )
    }
}

impl Backoff {
    /// A backoff with these bounds and no crash yet.
    pub fn new(base: Duration, max: Duration, stable: Duration) -> Backoff {
        Backoff {
            base,
            max,
            stable,
            crashes: 0,
        }
    }

    /// A process started at `started` crashed at `now`: when to start it again.
    pub fn crashed(&mut self, started: Instant, now: Instant) -> Instant {
        if now.saturating_duration_since(started) >= self.stable {
            self.crashes = 0;
        }
        let d = self.base.saturating_mul(1u32 << self.crashes.min(16)).min(self.max);
        self.crashes = self.crashes.saturating_add(1);
        now + d
    }

    /// Crashes in a row (each within `stable` of its start).
    pub fn crashes(&self) -> u32 {
        self.crashes
    }

    /// Forgets the crashes (an operator started it by hand).
    pub fn reset(&mut self) {
        self.crashes = 0;
    }
}

/// A process as a record shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Refreshed within the bound.
    Alive,
    /// Meant to run, but not refreshed within the bound (dead, or stuck in a loop).
    Dead,
    /// Stopped gracefully.
    Stopped,
    /// No record: never started.
    Never,
}

impl Liveness {
    /// As shown in tables.
    pub fn name(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Dead => "dead",
            Liveness::Stopped => "stopped",
            Liveness::Never => "never started",
        }
    }
}

/// How often a node refreshes its record.
pub const REFRESH: Duration = Duration::from_secs(2);
/// A record older than this is dead (three refreshes missed).
pub const DEAD_AFTER: Duration = Duration::from_millis(3 * 2000 + 500);

/// What record `rec` says at `now_ms` (ms since the epoch).
pub fn judge(rec: Option<&ProcRecord>, now_ms: u64, bound: Duration) -> Liveness {
    match rec {
        None => Liveness::Never,
        Some(r) if r.state == ProcState::Stopped => Liveness::Stopped,
        Some(r) if now_ms.saturating_sub(r.lastupdate) <= bound.as_millis() as u64 => Liveness::Alive,
        Some(_) => Liveness::Dead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::store::ProcStats;

    #[test]
    fn backoff_doubles_caps_and_forgets() {
        let mut b = Backoff::new(
            Duration::from_millis(100),
            Duration::from_millis(500),
            Duration::from_secs(5),
        );
        let t0 = Instant::now();
        let ms = |at: Instant, now: Instant| (at - now).as_millis();
        let now = t0 + Duration::from_millis(10);
        assert_eq!(ms(b.crashed(t0, now), now), 100);
        assert_eq!(ms(b.crashed(t0, now), now), 200);
        assert_eq!(ms(b.crashed(t0, now), now), 400);
        assert_eq!(ms(b.crashed(t0, now), now), 500, "capped");
        assert_eq!(b.crashes(), 4);
        // a long run forgets
        let later = t0 + Duration::from_secs(6);
        assert_eq!(ms(b.crashed(t0, later), later), 100);
        b.reset();
        assert_eq!(b.crashes(), 0);
        for _ in 0..100 {
            b.crashed(t0, now);
        }
        assert_eq!(ms(b.crashed(t0, now), now), 500, "no overflow after many crashes");
    }

    #[test]
    fn a_record_is_judged_by_its_age() {
        let rec = |lastupdate, state| ProcRecord {
            key: "r.1.2.3.4.a".into(),
            pid: 1,
            startcount: 1,
            lastupdate,
            state,
            info: ProcStats::default(),
        };
        let b = Duration::from_secs(6);
        assert_eq!(judge(None, 10_000, b), Liveness::Never);
        assert_eq!(
            judge(Some(&rec(10_000, ProcState::Running)), 16_000, b),
            Liveness::Alive
        );
        assert_eq!(judge(Some(&rec(10_000, ProcState::Running)), 16_001, b), Liveness::Dead);
        assert_eq!(
            judge(Some(&rec(10_000, ProcState::Stopped)), 99_000, b),
            Liveness::Stopped
        );
        // a clock that went back does not make a record dead
        assert_eq!(
            judge(Some(&rec(20_000, ProcState::Running)), 10_000, b),
            Liveness::Alive
        );
    }
}
