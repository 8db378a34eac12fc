//! The Gate's limits on client connections, free of I/O: time is passed
//! in.
//!
//! - [`TokenBucket`]: how fast one connection may send messages (the
//!   `flood` limit).
//! - [`Admission`]: how many connections may be verifying at once, in total
//!   and per address (verify-failed `busy` beyond).
//! - [`Idle`]: the heartbeat rule: a connection silent for
//!   [`IDLE_HEARTBEATS`] heartbeats is closed (notice `idle`).
//! - [`Faults`]: a connection's bad input counted by cause, so that the
//!   driver logs each cause once per client, not once per message.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket: `rate_per_sec` tokens a second, at most `burst` saved
/// up; each message takes one.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. A rate that is negative or not a number
    /// counts as 0 (nothing comes back); a burst below 1 counts as 1 (one
    /// message always fits).
    pub fn new(rate_per_sec: f64, burst: f64, now: Instant) -> Self {
        let rate = if rate_per_sec.is_nan() || rate_per_sec < 0.0 {
            0.0
        } else {
            rate_per_sec
        };
        let burst = if burst.is_nan() { 1.0 } else { burst.max(1.0) };
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Refills for the time since the last call (time never runs back: an
    /// earlier `now` adds nothing).
    fn refill(&mut self, now: Instant) {
        if now > self.last {
            let secs = (now - self.last).as_secs_f64();
            self.tokens = (self.tokens + secs * self.rate).min(self.burst);
            self.last = now;
        }
    }

    /// Takes one token at `now`: false when the bucket is empty (the message
    /// is over the limit; nothing is taken).
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The tokens available at `now` (whole and partial).
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }
}

/// Why [`Admission::try_admit`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    /// The limit on all connections verifying at once is reached.
    #[error("too many connections verifying")]
    Total,
    /// The limit on connections verifying at once from one address is
    /// reached.
    #[error("too many connections verifying from this address")]
    PerAddress,
}

/// Counts the connections that are verifying (connected, no verify-ok
/// yet), in total and per address.
///
/// Addresses are counted by what one party can easily hold: an IPv4
/// address (also when it arrives IPv4-mapped on an IPv6 socket), or the
/// /64 prefix of an IPv6 address (a single host commonly has a whole /64).
/// An address is forgotten once none of its connections is verifying, so
/// the memory used is bounded by the connections verifying.
#[derive(Debug, Clone)]
pub struct Admission {
    max_total: usize,
    max_per_ip: usize,
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The key an address is counted under (see [`Admission`]).
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Admission {
    /// At most `max_total` connections verifying at once, and at most
    /// `max_per_ip` from one address.
    pub fn new(max_total: usize, max_per_ip: usize) -> Self {
        Admission {
            max_total,
            max_per_ip,
            total: 0,
            per_ip: HashMap::new(),
        }
    }

    /// Admits a connection from `ip` to verify; each success must be
    /// matched by one [`Admission::release`] with the same address (when
    /// the connection verified, failed or closed).
    ///
    /// # Errors
    ///
    /// [`Busy`] when a limit is reached (nothing is counted then).
    pub fn try_admit(&mut self, ip: IpAddr) -> Result<(), Busy> {
        if self.total >= self.max_total {
            return Err(Busy::Total);
        }
        let key = address_key(ip);
        let n = self.per_ip.get(&key).copied().unwrap_or(0);
        if n >= self.max_per_ip {
            return Err(Busy::PerAddress);
        }
        self.per_ip.insert(key, n + 1);
        self.total += 1;
        Ok(())
    }

    /// A connection admitted from `ip` is done verifying. A release without
    /// an admission changes nothing (counts never go below zero).
    pub fn release(&mut self, ip: IpAddr) {
        let key = address_key(ip);
        let Some(n) = self.per_ip.get_mut(&key) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.per_ip.remove(&key);
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Connections verifying now.
    pub fn verifying(&self) -> usize {
        self.total
    }

    /// Addresses (IPv4, or IPv6 /64) with connections verifying now.
    pub fn addresses(&self) -> usize {
        self.per_ip.len()
    }
}

/// Heartbeats of silence after which a connection is idle.
pub const IDLE_HEARTBEATS: u32 = 3;

/// The longest heartbeat [`Idle`] takes (longer ones count as this).
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(24 * 3600);

/// The heartbeat rule of one connection: any message counts as traffic; a
/// connection silent for [`IDLE_HEARTBEATS`] heartbeats is idle.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    heartbeat: Duration,
    last: Instant,
}

impl Idle {
    /// The rule for a `heartbeat` (at most [`MAX_HEARTBEAT`]), counting
    /// `now` as the last traffic (the connection's verify-ok).
    pub fn new(heartbeat: Duration, now: Instant) -> Self {
        Idle {
            heartbeat: heartbeat.min(MAX_HEARTBEAT),
            last: now,
        }
    }

    /// A message arrived at `now` (an earlier instant than the last one
    /// changes nothing).
    pub fn seen(&mut self, now: Instant) {
        self.last = self.last.max(now);
    }

    /// True when nothing arrived for [`IDLE_HEARTBEATS`] heartbeats at
    /// `now` (from [`Idle::deadline`] on).
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline()
    }

    /// When the connection becomes idle unless something arrives: the
    /// driver's timer.
    pub fn deadline(&self) -> Instant {
        self.last + self.heartbeat * IDLE_HEARTBEATS
    }
}

/// A cause of bad input from a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// A message other than verify before verify-ok.
    Unverified,
    /// A call or send of a method id that no client method has.
    UnknownMethod,
    /// A call or send of a method that exists but is not for clients
    /// (server-only, or one the client implements).
    NotExposed,
    /// Arguments of the wrong number or type for the method.
    BadArgs,
    /// A message larger than the Gate accepts.
    Oversize,
    /// Messages faster than the connection's rate limit.
    Flood,
    /// The client does not read what the Gate writes.
    SlowReader,
    /// A malformed frame or message.
    BadFrame,
}

impl Fault {
    /// Every cause, in declaration order.
    pub const ALL: [Fault; 8] = [
        Fault::Unverified,
        Fault::UnknownMethod,
        Fault::NotExposed,
        Fault::BadArgs,
        Fault::Oversize,
        Fault::Flood,
        Fault::SlowReader,
        Fault::BadFrame,
    ];

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Unverified => "message before verify",
            Fault::UnknownMethod => "unknown method",
            Fault::NotExposed => "method not for clients",
            Fault::BadArgs => "bad arguments",
            Fault::Oversize => "message too large",
            Fault::Flood => "flood",
            Fault::SlowReader => "slow reader",
            Fault::BadFrame => "bad frame",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One connection's bad input, counted by cause.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    counts: [u64; Fault::ALL.len()],
}

impl Faults {
    /// Counts one `fault`; true the first time this cause is seen on the
    /// connection (the driver logs it then, and only then).
    pub fn record(&mut self, fault: Fault) -> bool {
        let c = &mut self.counts[fault as usize];
        *c = c.saturating_add(1);
        *c == 1
    }

    /// How often `fault` was seen.
    pub fn count(&self, fault: Fault) -> u64 {
        self.counts[fault as usize]
    }

    /// How many faults of any cause were seen.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0, t);
        for i in 0..5 {
            assert!(b.take(t), "burst message {i}");
        }
        assert!(!b.take(t), "the burst is spent");
        assert!(!b.take(t + 99 * MS), "0.99 of a token");
        assert!(b.take(t + 100 * MS), "one token every 100 ms");
        assert!(!b.take(t + 100 * MS));
        // a long pause refills up to the burst, not beyond
        let later = t + Duration::from_secs(60);
        assert!((b.available(later) - 5.0).abs() < 1e-9);
        for _ in 0..5 {
            assert!(b.take(later));
        }
        assert!(!b.take(later));
    }

    #[test]
    fn a_bucket_keeps_partial_tokens() {
        let t = Instant::now();
        let mut b = TokenBucket::new(4.0, 1.0, t);
        assert!(b.take(t));
        // 4 calls 60 ms apart: 0.24 tokens each; the 5th crosses 1
        for i in 1..=4 {
            assert!(!b.take(t + 60 * i * MS), "{i}");
        }
        assert!(b.take(t + 300 * MS));
    }

    #[test]
    fn a_steady_sender_at_the_rate_is_never_refused() {
        let t = Instant::now();
        let mut b = TokenBucket::new(50.0, 10.0, t);
        for i in 0..10_000u32 {
            assert!(b.take(t + 20 * i * MS), "{i}");
        }
        // at twice the rate about half is refused once the burst is gone
        let t2 = t + Duration::from_secs(1000);
        let ok = (0..1000u32).filter(|i| b.take(t2 + 10 * i * MS)).count();
        assert!((500..=512).contains(&ok), "{ok}");
    }

    #[test]
    fn a_bucket_ignores_time_running_back_and_odd_settings() {
        let t = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::new(1.0, 1.0, t);
        assert!(b.take(t));
        assert!(!b.take(t - Duration::from_secs(5)));
        assert!(!b.take(t + 999 * MS), "the earlier instant reset nothing");
        assert!(b.take(t + Duration::from_secs(1)));
        let mut z = TokenBucket::new(f64::NAN, 0.0, t);
        assert!(z.take(t), "a burst below 1 counts as 1");
        assert!(!z.take(t + Duration::from_secs(3600)), "a NaN rate is 0");
        let mut n = TokenBucket::new(-5.0, f64::NAN, t);
        assert!(n.take(t));
        assert!(!n.take(t + Duration::from_secs(3600)));
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::from([a, b, c, d])
    }

    #[test]
    fn admission_limits_per_address_and_in_total() {
        let mut a = Admission::new(5, 2);
        let (x, y, z) = (v4(10, 0, 0, 1), v4(10, 0, 0, 2), v4(10, 0, 0, 3));
        assert_eq!(a.try_admit(x), Ok(()));
        assert_eq!(a.try_admit(x), Ok(()));
        assert_eq!(a.try_admit(x), Err(Busy::PerAddress));
        assert_eq!(a.try_admit(y), Ok(()));
        assert_eq!(a.try_admit(y), Ok(()));
        assert_eq!(a.try_admit(z), Ok(()));
        assert_eq!(a.verifying(), 5);
        assert_eq!(a.try_admit(v4(10, 0, 0, 4)), Err(Busy::Total));
        assert_eq!(a.try_admit(z), Err(Busy::Total), "the total is checked first");
        a.release(x);
        assert_eq!(a.try_admit(z), Ok(()));
        assert_eq!(a.try_admit(x), Err(Busy::Total));
        a.release(z);
        assert_eq!(a.try_admit(x), Ok(()));
        assert_eq!(a.verifying(), 5);
        assert_eq!(a.addresses(), 3);
    }

    #[test]
    fn admission_forgets_addresses_and_never_underflows() {
        let mut a = Admission::new(100, 3);
        for i in 0..50u8 {
            a.try_admit(v4(192, 168, 0, i)).unwrap();
        }
        assert_eq!(a.addresses(), 50);
        for i in 0..50u8 {
            a.release(v4(192, 168, 0, i));
        }
        assert_eq!((a.verifying(), a.addresses()), (0, 0), "nothing kept at zero");
        // releases without admissions, and one too many
        a.release(v4(1, 2, 3, 4));
        a.try_admit(v4(1, 2, 3, 4)).unwrap();
        a.release(v4(1, 2, 3, 4));
        a.release(v4(1, 2, 3, 4));
        assert_eq!((a.verifying(), a.addresses()), (0, 0));
        // an unmatched release of another address does not free a slot of this one
        a.try_admit(v4(5, 5, 5, 5)).unwrap();
        a.release(v4(6, 6, 6, 6));
        assert_eq!(a.verifying(), 1);
    }

    #[test]
    fn ipv6_counts_by_64_prefix_and_mapped_ipv4_as_ipv4() {
        let mut a = Admission::new(100, 2);
        let h = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0xaaaa, 0, 0, last));
        a.try_admit(h(1)).unwrap();
        a.try_admit(h(2)).unwrap();
        assert_eq!(a.try_admit(h(3)), Err(Busy::PerAddress), "the same /64");
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        a.try_admit(other).unwrap();
        a.release(h(7));
        a.try_admit(h(9)).unwrap();
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 1, 1, 1).to_ipv6_mapped());
        a.try_admit(v4(10, 1, 1, 1)).unwrap();
        a.try_admit(mapped).unwrap();
        assert_eq!(a.try_admit(v4(10, 1, 1, 1)), Err(Busy::PerAddress));
        a.release(mapped);
        a.release(v4(10, 1, 1, 1));
        a.release(h(1));
        a.release(h(1));
        a.release(other);
        assert_eq!((a.verifying(), a.addresses()), (0, 0));
    }

    #[test]
    fn zero_limits_admit_nobody() {
        let mut a = Admission::new(0, 5);
        assert_eq!(a.try_admit(v4(1, 1, 1, 1)), Err(Busy::Total));
        let mut a = Admission::new(5, 0);
        assert_eq!(a.try_admit(v4(1, 1, 1, 1)), Err(Busy::PerAddress));
        assert_eq!(a.verifying(), 0);
    }

    #[test]
    fn idle_after_three_silent_heartbeats() {
        let t = Instant::now();
        let hb = Duration::from_secs(10);
        let mut i = Idle::new(hb, t);
        assert_eq!(i.deadline(), t + 3 * hb);
        assert!(!i.expired(t + 3 * hb - MS));
        assert!(i.expired(t + 3 * hb));
        i.seen(t + 25 * hb / 10);
        assert!(!i.expired(t + 3 * hb), "traffic moved the deadline");
        assert_eq!(i.deadline(), t + 55 * hb / 10);
        i.seen(t);
        assert_eq!(i.deadline(), t + 55 * hb / 10, "an earlier instant changes nothing");
        assert!(i.expired(t + 55 * hb / 10));
    }

    #[test]
    fn idle_clamps_huge_heartbeats() {
        let t = Instant::now();
        let i = Idle::new(Duration::MAX, t);
        assert_eq!(i.deadline(), t + 3 * MAX_HEARTBEAT);
        assert!(!i.expired(t + MAX_HEARTBEAT));
    }

    #[test]
    fn faults_report_each_cause_once() {
        let mut f = Faults::default();
        assert_eq!(f.total(), 0);
        for (n, fault) in Fault::ALL.iter().enumerate() {
            assert_eq!(f.count(*fault), 0);
            assert!(f.record(*fault), "{fault}: first");
            for _ in 0..n {
                assert!(!f.record(*fault), "{fault}: again");
            }
            assert_eq!(f.count(*fault), n as u64 + 1);
        }
        assert_eq!(f.total(), (1..=8).sum::<u64>());
        // another connection starts afresh
        let mut g = Faults::default();
        assert!(g.record(Fault::Flood));
        assert_eq!(g.count(Fault::BadFrame), 0);
    }

    #[test]
    fn fault_names_are_distinct() {
        let mut names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Fault::ALL.len());
        assert_eq!(Fault::SlowReader.to_string(), "slow reader");
        for (i, f) in Fault::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i, "ALL is in declaration order");
        }
    }
}
