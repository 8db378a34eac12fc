//! Rate limits for log lines a remote party can trigger (refused
//! connections, failed handshakes, protocol errors, refused requests).
//!
//! Per cause, the first few occurrences of each window are logged in full;
//! the rest are only counted, and once the window is over one summary line
//! says how many were not logged ("refused 12,345 unverified connections in
//! the last 10 s"). No I/O here: time is passed in.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

/// Length of a counting window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Occurrences of one cause logged in full per window.
pub const FULL_PER_WINDOW: u32 = 5;

#[derive(Debug)]
struct Count {
    since: Instant,
    logged: u32,
    suppressed: u64,
}

/// Counts log lines by cause.
#[derive(Debug, Default)]
pub struct LogLimit {
    causes: HashMap<&'static str, Count>,
}

/// A summary of the lines of one cause that were not logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The cause, as given to [`LogLimit::allow`].
    pub cause: &'static str,
    /// How many occurrences were not logged.
    pub suppressed: u64,
    /// Over how long.
    pub window: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} more in the last {} s (not logged one by one)",
            self.cause,
            group_digits(self.suppressed),
            self.window.as_secs()
        )
    }
}

fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl LogLimit {
    /// Whether an occurrence of `cause` at `now` is logged in full (else it
    /// is counted for the summary).
    pub fn allow(&mut self, cause: &'static str, now: Instant) -> bool {
        let c = self.causes.entry(cause).or_insert(Count {
            since: now,
            logged: 0,
            suppressed: 0,
        });
        if c.logged < FULL_PER_WINDOW {
            c.logged += 1;
            true
        } else {
            c.suppressed += 1;
            false
        }
    }

    /// Ends the windows that are over at `now`: returns a summary for each
    /// cause that had lines not logged, and forgets quiet causes.
    pub fn end_windows(&mut self, now: Instant) -> Vec<Summary> {
        let mut out = Vec::new();
        self.causes.retain(|cause, c| {
            let elapsed = now.saturating_duration_since(c.since);
            if elapsed < WINDOW {
                return true;
            }
            if c.suppressed > 0 {
                out.push(Summary {
                    cause,
                    suppressed: c.suppressed,
                    window: WINDOW,
                });
            }
            false
        });
        out.sort_by_key(|s| s.cause);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_a_few_lines_then_one_summary_per_window() {
        let t0 = Instant::now();
        let mut l = LogLimit::default();
        let logged = (0..12_345)
            .filter(|_| l.allow("unverified connections closed", t0))
            .count();
        assert_eq!(logged, FULL_PER_WINDOW as usize);
        assert!(l.end_windows(t0 + Duration::from_secs(9)).is_empty(), "window not over");
        let s = l.end_windows(t0 + WINDOW);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].suppressed, 12_345 - FULL_PER_WINDOW as u64);
        assert_eq!(
            s[0].to_string(),
            "unverified connections closed: 12,340 more in the last 10 s (not logged one by one)"
        );
        // a new window logs again
        assert!(l.allow("unverified connections closed", t0 + WINDOW));
    }

    #[test]
    fn causes_are_counted_apart_and_quiet_ones_give_no_summary() {
        let t0 = Instant::now();
        let mut l = LogLimit::default();
        for _ in 0..FULL_PER_WINDOW + 2 {
            l.allow("a", t0);
        }
        l.allow("b", t0);
        let s = l.end_windows(t0 + WINDOW);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].cause, s[0].suppressed), ("a", 2));
        assert!(l.end_windows(t0 + WINDOW * 3).is_empty());
    }

    #[test]
    fn digits_are_grouped() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(1234567), "1,234,567");
    }
}
