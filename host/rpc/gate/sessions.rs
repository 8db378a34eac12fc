//! The Gate's session table (`docs/protocol.md`, "A session"), free of
//! I/O: connections are ids the driver chooses, time is passed in, resume
//! tokens are random bytes the driver draws.
//!
//! A session belongs to one account and outlives its connections:
//!
//! - [`Sessions::login`] opens a session on a connection. The newest login
//!   of an account always wins: an older session of the same account,
//!   attached or not, is removed and returned, so the driver sends notice
//!   `replaced` on its connection and tells the backend.
//! - [`Sessions::detach`] notes that a connection closed; the session waits
//!   [`SessionConfig::resume_grace`] for a resume. A connection that is no
//!   longer the session's (replaced by a resume or by a newer login) never
//!   detaches it.
//! - [`Sessions::resume`] moves a session onto a new connection (also one
//!   still attached elsewhere: the old connection is returned for the
//!   driver to close) and hands back every push the client missed.
//! - [`Sessions::expire`] removes sessions detached for the whole grace;
//!   [`Sessions::next_deadline`] says when the next one is due.
//!
//! Pushes carry sequence numbers 1, 2, 3, ... per session
//! ([`Sessions::push`]); the frames stay in a replay buffer, bounded by
//! [`SessionConfig::replay_max`] frames and [`SessionConfig::replay_bytes`]
//! bytes (the oldest are dropped first), until the client acknowledges
//! them ([`Sessions::ack`]). A resume that needs a dropped push fails
//! ([`ResumeError::TooFarBehind`]): the client logs in again.
//!
//! A session may be bound to a backend entity ([`Binding`]); the table keeps
//! an index by backend node so that the sessions of a lost node are found
//! without a scan ([`Sessions::bound_to`]).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// Length of a resume token, in bytes.
pub const RESUME_TOKEN_LEN: usize = crate::codec::client::RESUME_TOKEN_LEN;

/// The largest session id: ids stay below 2^53 so that JavaScript clients,
/// whose numbers are doubles, read them exactly.
pub const MAX_SESSION_ID: u64 = (1 << 53) - 1;

/// How the table keeps sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long a detached session waits for a resume (`gate.resume_grace`).
    pub resume_grace: Duration,
    /// The most pushes kept per session for a resume.
    pub replay_max: usize,
    /// The most bytes of pushes kept per session for a resume.
    pub replay_bytes: usize,
}

impl Default for SessionConfig {
    /// 30 s of grace (the protocol's default), 1,024 pushes, 1 MiB.
    fn default() -> Self {
        SessionConfig {
            resume_grace: Duration::from_secs(30),
            replay_max: 1024,
            replay_bytes: 1 << 20,
        }
    }
}

/// The backend entity a session is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding {
    /// The backend node's server id.
    pub sid: u32,
    /// The entity's id on that node.
    pub eid: i64,
}

/// One client session.
#[derive(Debug)]
pub struct Session {
    id: u64,
    account: String,
    resume_token: [u8; RESUME_TOKEN_LEN],
    /// The connection the session is attached to; `None` while detached.
    conn: Option<u64>,
    /// Since when the session is detached.
    detached_since: Option<Instant>,
    /// When a detached session expires (`None`: attached, or a grace too
    /// long to reach).
    expires_at: Option<Instant>,
    binding: Option<Binding>,
    /// The sequence number of the next push (u64: the u32 space can be
    /// used up, see [`Sessions::push`]).
    next_seq: u64,
    /// Pushes not acknowledged yet, oldest first, consecutive numbers.
    replay: VecDeque<(u32, Bytes)>,
    /// Bytes of the frames in `replay`.
    replay_bytes: usize,
    /// The highest push sequence number acknowledged.
    acked: u32,
}

impl Session {
    /// The session id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The account.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The connection the session is attached to (`None` while detached).
    pub fn conn(&self) -> Option<u64> {
        self.conn
    }

    /// Since when the session is detached (`None` while attached).
    pub fn detached_since(&self) -> Option<Instant> {
        self.detached_since
    }

    /// The backend entity the session is bound to.
    pub fn binding(&self) -> Option<Binding> {
        self.binding
    }

    /// The sequence number of the last push (0: none yet).
    pub fn last_seq(&self) -> u32 {
        (self.next_seq - 1) as u32
    }

    /// The highest push sequence number the client acknowledged.
    pub fn acked(&self) -> u32 {
        self.acked
    }

    /// Pushes kept for a resume.
    pub fn buffered(&self) -> usize {
        self.replay.len()
    }

    /// Bytes of the pushes kept for a resume.
    pub fn buffered_bytes(&self) -> usize {
        self.replay_bytes
    }

    /// The first push a resume can still replay: the oldest one kept, or
    /// the next one when none is kept.
    fn floor(&self) -> u64 {
        self.replay.front().map_or(self.next_seq, |(seq, _)| *seq as u64)
    }

    /// Drops the kept pushes up to `seq`; returns how many.
    fn trim(&mut self, seq: u32) -> usize {
        let mut n = 0;
        while let Some((s, f)) = self.replay.front() {
            if *s > seq {
                break;
            }
            self.replay_bytes -= f.len();
            self.replay.pop_front();
            n += 1;
        }
        n
    }
}

/// What [`Sessions::login`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The new session's id.
    pub id: u64,
    /// The account's previous session, removed: the driver sends notice
    /// `replaced` on its connection (if any, and if it is not the new one)
    /// and tells the backend of its binding.
    pub replaced: Option<Replaced>,
}

/// A session removed because a newer login of its account took over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    /// Its id.
    pub id: u64,
    /// Its connection (`None`: it was detached).
    pub conn: Option<u64>,
    /// Its binding.
    pub binding: Option<Binding>,
}

/// What a successful [`Sessions::resume`] hands back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The session's account.
    pub account: String,
    /// The pushes after the client's `last_seq`, in order: the driver writes
    /// them right after verify-ok.
    pub replay: Vec<Bytes>,
    /// The connection the session was attached to, when it was still
    /// attached to another one: the driver closes it.
    pub previous_conn: Option<u64>,
    /// The sequence number of the last push sent on the session (for
    /// verify-ok).
    pub last_seq: u32,
}

/// Why a resume was refused (all of them are verify-failed
/// `resume_expired` for the client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// No such session (never existed, expired, replaced or removed).
    #[error("no such session")]
    Unknown,
    /// The resume token does not match.
    #[error("wrong resume token")]
    BadToken,
    /// A push the client did not receive is no longer kept, or the client
    /// claims pushes that were never sent.
    #[error("too far behind to resume")]
    TooFarBehind,
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// No such session.
    #[error("no such session")]
    Unknown,
    /// The client acknowledged a push that was never sent: a protocol
    /// error (nothing was dropped).
    #[error("acknowledged push {seq}, but the last one sent is {last_sent}")]
    Ahead {
        /// What the client acknowledged.
        seq: u32,
        /// The last push sent.
        last_sent: u32,
    },
}

/// A session removed by [`Sessions::expire`]: the driver tells the backend
/// the client was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Its id.
    pub id: u64,
    /// Its account.
    pub account: String,
    /// Its binding.
    pub binding: Option<Binding>,
}

/// Compares a token with the expected one in time independent of where
/// they differ.
fn same_token(expected: &[u8; RESUME_TOKEN_LEN], given: &[u8]) -> bool {
    if given.len() != RESUME_TOKEN_LEN {
        return false;
    }
    let diff = expected.iter().zip(given).fold(0u8, |d, (a, b)| d | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// The Gate's session table.
#[derive(Debug)]
pub struct Sessions {
    config: SessionConfig,
    /// The next id to hand out (1..=[`MAX_SESSION_ID`]).
    next_id: u64,
    sessions: HashMap<u64, Session>,
    by_account: HashMap<String, u64>,
    /// Sessions by the backend node they are bound to.
    by_sid: HashMap<u32, HashSet<u64>>,
    /// Detached sessions by when they expire.
    expiring: BTreeSet<(Instant, u64)>,
}

impl Sessions {
    /// An empty table. Ids start at a point derived from `seed` (the driver
    /// passes random bytes, so a restarted Gate does not hand out the ids
    /// of the one before) and count up from there; they are never 0, stay
    /// at most [`MAX_SESSION_ID`], and are never handed out twice by one
    /// table (short of 2^53 logins).
    pub fn new(config: SessionConfig, seed: u64) -> Self {
        // the start leaves at least 2^52 ids before the top
        let start = (crate::rpc::ring::mix64(seed) & ((1 << 52) - 1)) + 1;
        Sessions {
            config,
            next_id: start,
            sessions: HashMap::new(),
            by_account: HashMap::new(),
            by_sid: HashMap::new(),
            expiring: BTreeSet::new(),
        }
    }

    /// The table's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    fn take_id(&mut self) -> u64 {
        loop {
            let id = self.next_id;
            self.next_id = if id >= MAX_SESSION_ID { 1 } else { id + 1 };
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Opens a session for `account` on connection `conn`, with the resume
    /// token `resume_token` (random bytes from the driver). The newest login
    /// always wins: the account's previous session, attached or detached,
    /// is removed and returned in [`Login::replaced`].
    pub fn login(&mut self, account: &str, conn: u64, resume_token: [u8; RESUME_TOKEN_LEN], _now: Instant) -> Login {
        let replaced = self.by_account.get(account).copied().and_then(|old| {
            self.remove(old).map(|s| Replaced {
                id: s.id,
                conn: s.conn,
                binding: s.binding,
            })
        });
        let id = self.take_id();
        self.sessions.insert(
            id,
            Session {
                id,
                account: account.to_string(),
                resume_token,
                conn: Some(conn),
                detached_since: None,
                expires_at: None,
                binding: None,
                next_seq: 1,
                replay: VecDeque::new(),
                replay_bytes: 0,
                acked: 0,
            },
        );
        self.by_account.insert(account.to_string(), id);
        Login { id, replaced }
    }

    /// Moves session `id` onto connection `conn`: the client proved it holds
    /// the resume `token` and received every push up to `last_seq`. The
    /// pushes up to `last_seq` count as acknowledged; the ones after it are
    /// returned for the driver to write again (they stay kept until
    /// acknowledged). A session still attached to another connection moves
    /// too ([`Resume::previous_conn`]: the driver closes that one). A
    /// refused resume changes nothing.
    ///
    /// # Errors
    ///
    /// [`ResumeError`]: no such session, a wrong token (compared in constant
    /// time), or a push after `last_seq` no longer kept (or `last_seq`
    /// beyond the last push sent).
    pub fn resume(
        &mut self,
        id: u64,
        token: &[u8],
        last_seq: u32,
        conn: u64,
        _now: Instant,
    ) -> Result<Resume, ResumeError> {
        let s = self.sessions.get_mut(&id).ok_or(ResumeError::Unknown)?;
        if !same_token(&s.resume_token, token) {
            return Err(ResumeError::BadToken);
        }
        let last_sent = s.next_seq - 1;
        if last_seq as u64 > last_sent || (last_seq as u64) + 1 < s.floor() {
            return Err(ResumeError::TooFarBehind);
        }
        let previous_conn = s.conn.filter(|&c| c != conn);
        s.conn = Some(conn);
        s.detached_since = None;
        if let Some(at) = s.expires_at.take() {
            self.expiring.remove(&(at, id));
        }
        s.trim(last_seq);
        s.acked = s.acked.max(last_seq);
        Ok(Resume {
            account: s.account.clone(),
            replay: s.replay.iter().map(|(_, f)| f.clone()).collect(),
            previous_conn,
            last_seq: last_sent as u32,
        })
    }

    /// Connection `conn` of session `id` closed at `now`: the session waits
    /// [`SessionConfig::resume_grace`] for a resume. Only the session's
    /// current connection detaches it: an older connection closing late
    /// (after a resume moved the session, or after a newer login replaced
    /// it) changes nothing. Returns whether the session was detached.
    pub fn detach(&mut self, id: u64, conn: u64, now: Instant) -> bool {
        let Some(s) = self.sessions.get_mut(&id) else {
            return false;
        };
        if s.conn != Some(conn) {
            return false;
        }
        s.conn = None;
        s.detached_since = Some(now);
        s.expires_at = now.checked_add(self.config.resume_grace);
        if let Some(at) = s.expires_at {
            self.expiring.insert((at, id));
        }
        true
    }

    /// Removes and returns the sessions detached for the whole grace at
    /// `now` (expired at exactly `detached_since + resume_grace`, the
    /// instant [`Sessions::next_deadline`] gave), soonest first.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.expiring.first() {
            if at > now {
                break;
            }
            self.expiring.pop_first();
            if let Some(s) = self.remove(id) {
                out.push(Expired {
                    id,
                    account: s.account,
                    binding: s.binding,
                });
            }
        }
        out
    }

    /// When the next detached session expires: the driver calls
    /// [`Sessions::expire`] then.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.expiring.first().map(|&(at, _)| at)
    }

    /// Sends a push on session `id`: `frame_for` builds the whole frame for
    /// the sequence number given, which is kept for a resume. Returns the
    /// sequence number, the frame, and the connection to write it to
    /// (`None` while detached: only kept). `None` when there is no such
    /// session, or when its sequence numbers are used up (after
    /// 4,294,967,295 pushes; the driver then closes it: log in again).
    pub fn push(&mut self, id: u64, frame_for: impl FnOnce(u32) -> Bytes) -> Option<(u32, Bytes, Option<u64>)> {
        let s = self.sessions.get_mut(&id)?;
        let seq = u32::try_from(s.next_seq).ok()?;
        s.next_seq += 1;
        let frame = frame_for(seq);
        s.replay_bytes += frame.len();
        s.replay.push_back((seq, frame.clone()));
        while s.replay.len() > self.config.replay_max || s.replay_bytes > self.config.replay_bytes {
            let Some((_, old)) = s.replay.pop_front() else { break };
            s.replay_bytes -= old.len();
        }
        Some((seq, frame, s.conn))
    }

    /// The client of session `id` received every push up to `seq`: those
    /// are no longer kept. Returns how many were dropped. An
    /// acknowledgement below an earlier one drops nothing.
    ///
    /// # Errors
    ///
    /// [`AckError::Ahead`] when `seq` is beyond the last push sent (a
    /// protocol error: the driver counts it; nothing changes), or
    /// [`AckError::Unknown`].
    pub fn ack(&mut self, id: u64, seq: u32) -> Result<usize, AckError> {
        let s = self.sessions.get_mut(&id).ok_or(AckError::Unknown)?;
        let last_sent = s.last_seq();
        if seq as u64 > s.next_seq - 1 {
            return Err(AckError::Ahead { seq, last_sent });
        }
        s.acked = s.acked.max(seq);
        Ok(s.trim(seq))
    }

    /// Binds session `id` to a backend entity (replacing any earlier
    /// binding). Returns false when there is no such session.
    pub fn bind(&mut self, id: u64, binding: Binding) -> bool {
        let Some(s) = self.sessions.get_mut(&id) else {
            return false;
        };
        if let Some(old) = s.binding.replace(binding) {
            unindex(&mut self.by_sid, old.sid, id);
        }
        self.by_sid.entry(binding.sid).or_default().insert(id);
        true
    }

    /// Unbinds session `id`; returns the binding it had.
    pub fn unbind(&mut self, id: u64) -> Option<Binding> {
        let old = self.sessions.get_mut(&id)?.binding.take()?;
        unindex(&mut self.by_sid, old.sid, id);
        Some(old)
    }

    /// The binding of session `id`.
    pub fn binding(&self, id: u64) -> Option<Binding> {
        self.sessions.get(&id)?.binding
    }

    /// The session of `account`.
    pub fn by_account(&self, account: &str) -> Option<u64> {
        self.by_account.get(account).copied()
    }

    /// Session `id`.
    pub fn get(&self, id: u64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    /// Every session, in no particular order (e.g. to send notice
    /// `shutdown` to all).
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// The sessions bound to backend node `sid`, in increasing id order
    /// (from an index: no scan of the table).
    pub fn bound_to(&self, sid: u32) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .by_sid
            .get(&sid)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Removes session `id` (kicked, or the client logged out) and returns
    /// it.
    pub fn remove(&mut self, id: u64) -> Option<Session> {
        let s = self.sessions.remove(&id)?;
        if self.by_account.get(&s.account) == Some(&id) {
            self.by_account.remove(&s.account);
        }
        if let Some(b) = s.binding {
            unindex(&mut self.by_sid, b.sid, id);
        }
        if let Some(at) = s.expires_at {
            self.expiring.remove(&(at, id));
        }
        Some(s)
    }

    /// How many sessions there are, attached or detached.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when there is no session.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// Takes session `id` out of the index of backend node `sid`, forgetting the
/// node when none is left.
fn unindex(by_sid: &mut HashMap<u32, HashSet<u64>>, sid: u32, id: u64) {
    if let Some(set) = by_sid.get_mut(&sid) {
        set.remove(&id);
        if set.is_empty() {
            by_sid.remove(&sid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const GRACE: Duration = Duration::from_secs(30);

    fn config() -> SessionConfig {
        SessionConfig {
            resume_grace: GRACE,
            replay_max: 100,
            replay_bytes: 1 << 20,
        }
    }

    fn tok(n: u8) -> [u8; RESUME_TOKEN_LEN] {
        [n; RESUME_TOKEN_LEN]
    }

    /// The frame of push `seq` in these tests: its number as text.
    fn frame(seq: u32) -> Bytes {
        Bytes::from(format!("push {seq}"))
    }

    /// Pushes `n` frames on `id`; returns their sequence numbers.
    fn push_n(s: &mut Sessions, id: u64, n: usize) -> Vec<u32> {
        (0..n).map(|_| s.push(id, frame).unwrap().0).collect()
    }

    fn frames(seqs: impl IntoIterator<Item = u32>) -> Vec<Bytes> {
        seqs.into_iter().map(frame).collect()
    }

    #[test]
    fn a_login_opens_an_attached_session() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 1);
        assert!(s.is_empty());
        let l = s.login("alice", 7, tok(1), t);
        assert_eq!(l.replaced, None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.by_account("alice"), Some(l.id));
        assert_eq!(s.by_account("bob"), None);
        let x = s.get(l.id).unwrap();
        assert_eq!(
            (x.id(), x.account(), x.conn(), x.detached_since(), x.binding()),
            (l.id, "alice", Some(7), None, None)
        );
        assert_eq!(
            (x.last_seq(), x.acked(), x.buffered(), x.buffered_bytes()),
            (0, 0, 0, 0)
        );
        let b = s.login("bob", 8, tok(2), t);
        assert_ne!(b.id, l.id);
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().count(), 2);
        assert_eq!(s.next_deadline(), None, "attached sessions do not expire");
    }

    #[test]
    fn ids_are_nonzero_fit_javascript_depend_on_the_seed_and_are_not_reused() {
        let t = Instant::now();
        let mut seen = HashSet::new();
        for seed in 0..50u64 {
            let mut s = Sessions::new(config(), seed);
            let id = s.login("a", 1, tok(0), t).id;
            assert!((1..=MAX_SESSION_ID).contains(&id));
            assert!(seen.insert(id), "seed {seed} repeats an id");
        }
        let mut s = Sessions::new(config(), 99);
        let mut ids = HashSet::new();
        for i in 0..1000u64 {
            let l = s.login(&format!("p{}", i % 10), i, tok(0), t);
            assert!(ids.insert(l.id), "id {} handed out twice", l.id);
        }
        // at the top, ids wrap to 1 and skip those in use
        let mut s = Sessions::new(config(), 5);
        s.next_id = MAX_SESSION_ID;
        let top = s.login("x", 1, tok(0), t).id;
        assert_eq!(top, MAX_SESSION_ID);
        s.next_id = MAX_SESSION_ID;
        assert_eq!(s.login("y", 2, tok(0), t).id, 1, "MAX_SESSION_ID is in use");
    }

    #[test]
    fn the_newest_login_always_wins_over_1000_alternating_connections() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 3);
        let other = s.login("bob", 1, tok(9), t).id;
        let mut prev: Option<(u64, u64)> = None; // (session, conn)
        for i in 0..1000u64 {
            // two devices take turns; every connection is new
            let conn = 10 + i;
            let now = t + (i as u32) * MS;
            // sometimes the previous connection dropped before the new login
            let detached = i % 3 == 1;
            if detached {
                let (pid, pconn) = prev.unwrap();
                assert!(s.detach(pid, pconn, now));
                assert!(s.next_deadline().is_some());
            }
            if i % 5 == 2 {
                s.bind(prev.unwrap().0, Binding { sid: 4, eid: i as i64 });
            }
            let l = s.login("alice", conn, tok(i as u8), now);
            match prev {
                None => assert_eq!(l.replaced, None),
                Some((pid, pconn)) => {
                    let r = l.replaced.clone().expect("the previous session is replaced");
                    assert_eq!(r.id, pid);
                    assert_eq!(r.conn, if detached { None } else { Some(pconn) });
                    assert_eq!(r.binding, (i % 5 == 2).then_some(Binding { sid: 4, eid: i as i64 }));
                    // the old connection closes late: nothing happens to the new session
                    assert!(!s.detach(pid, pconn, now), "the replaced session is gone");
                    assert!(!s.detach(l.id, pconn, now), "not the new session's connection");
                    assert_eq!(
                        s.resume(pid, &tok((i - 1) as u8), 0, pconn, now),
                        Err(ResumeError::Unknown)
                    );
                }
            }
            assert_eq!(s.by_account("alice"), Some(l.id));
            assert_eq!(s.get(l.id).unwrap().conn(), Some(conn));
            assert_eq!(s.len(), 2, "alice's one session and bob's");
            assert_eq!(
                s.next_deadline(),
                None,
                "a replaced detached session does not expire later"
            );
            assert!(s.bound_to(4).is_empty(), "the replaced session left the index");
            prev = Some((l.id, conn));
        }
        assert_eq!(s.by_account("bob"), Some(other));
        let (id, conn) = prev.unwrap();
        assert!(
            s.detach(id, conn, t),
            "the newest connection still detaches its session"
        );
    }

    #[test]
    fn a_login_on_the_same_connection_replaces_with_that_connection() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 3);
        let a = s.login("alice", 5, tok(1), t).id;
        let l = s.login("alice", 5, tok(2), t);
        assert_eq!(
            l.replaced.unwrap().conn,
            Some(5),
            "the driver must not close its own connection"
        );
        assert!(s.get(a).is_none());
    }

    #[test]
    fn resume_replays_exactly_the_pushes_after_last_seq() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 3);
        let id = s.login("alice", 1, tok(7), t).id;
        assert_eq!(push_n(&mut s, id, 10), (1..=10).collect::<Vec<_>>());
        assert!(s.detach(id, 1, t));
        // pushes while detached are only kept
        let (seq, f, conn) = s.push(id, frame).unwrap();
        assert_eq!((seq, f, conn), (11, frame(11), None));
        let r = s.resume(id, &tok(7), 6, 2, t + 5 * MS).unwrap();
        assert_eq!(r.account, "alice");
        assert_eq!(r.replay, frames(7..=11));
        assert_eq!(r.previous_conn, None);
        assert_eq!(r.last_seq, 11);
        let x = s.get(id).unwrap();
        assert_eq!(
            (x.conn(), x.detached_since(), x.acked(), x.buffered()),
            (Some(2), None, 6, 5)
        );
        assert_eq!(s.next_deadline(), None);
        // after the resume pushes go to the new connection, numbered on
        assert_eq!(s.push(id, frame).unwrap(), (12, frame(12), Some(2)));
        // the replayed pushes stay kept: a second drop replays them again
        assert!(s.detach(id, 2, t));
        let r = s.resume(id, &tok(7), 8, 3, t).unwrap();
        assert_eq!(r.replay, frames(9..=12));
        // a client that has everything gets nothing to replay
        assert!(s.detach(id, 3, t));
        let r = s.resume(id, &tok(7), 12, 4, t).unwrap();
        assert!(r.replay.is_empty());
        assert_eq!(r.last_seq, 12);
    }

    #[test]
    fn resume_of_a_session_without_pushes() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 3);
        let id = s.login("alice", 1, tok(7), t).id;
        assert!(s.detach(id, 1, t));
        let r = s.resume(id, &tok(7), 0, 2, t).unwrap();
        assert_eq!((r.replay.len(), r.last_seq), (0, 0));
        assert!(s.detach(id, 2, t));
        assert_eq!(s.resume(id, &tok(7), 1, 3, t), Err(ResumeError::TooFarBehind));
    }

    #[test]
    fn resume_after_acks_trimmed_the_buffer() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 3);
        let id = s.login("alice", 1, tok(7), t).id;
        push_n(&mut s, id, 20);
        assert_eq!(s.ack(id, 15), Ok(15));
        assert_eq!(s.get(id).unwrap().buffered(), 5);
        assert_eq!(s.get(id).unwrap().acked(), 15);
        assert!(s.detach(id, 1, t));
        // the client got 17 before the drop, acked only 15
        let r = s.resume(id, &tok(7), 17, 2, t).unwrap();
        assert_eq!(r.replay, frames(18..=20));
        assert_eq!(s.get(id).unwrap().buffered(), 3);
        // a client claiming fewer than it acknowledged cannot be served
        assert!(s.detach(id, 2, t));
        assert_eq!(s.resume(id, &tok(7), 14, 3, t), Err(ResumeError::TooFarBehind));
        // exactly at the oldest kept push still works
        let r = s.resume(id, &tok(7), 17, 3, t).unwrap();
        assert_eq!(r.replay, frames(18..=20));
    }

    #[test]
    fn too_far_behind_is_refused_and_changes_nothing() {
        let t = Instant::now();
        let mut s = Sessions::new(
            SessionConfig {
                replay_max: 4,
                ..config()
            },
            3,
        );
        let id = s.login("alice", 1, tok(7), t).id;
        push_n(&mut s, id, 10); // 7..=10 kept
        assert!(s.detach(id, 1, t));
        let deadline = s.next_deadline();
        assert_eq!(
            s.resume(id, &tok(7), 5, 2, t),
            Err(ResumeError::TooFarBehind),
            "6 was dropped"
        );
        assert_eq!(s.resume(id, &tok(7), 0, 2, t), Err(ResumeError::TooFarBehind));
        assert_eq!(
            s.resume(id, &tok(7), 11, 2, t),
            Err(ResumeError::TooFarBehind),
            "beyond the last push sent"
        );
        assert_eq!(s.resume(id, &tok(7), u32::MAX, 2, t), Err(ResumeError::TooFarBehind));
        let x = s.get(id).unwrap();
        assert_eq!((x.conn(), x.buffered()), (None, 4));
        assert_eq!(s.next_deadline(), deadline, "still expiring as before");
        let r = s.resume(id, &tok(7), 6, 2, t).unwrap();
        assert_eq!(r.replay, frames(7..=10));
    }

    #[test]
    fn a_bad_token_or_an_unknown_id_is_refused() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 3);
        let id = s.login("alice", 1, tok(7), t).id;
        push_n(&mut s, id, 3);
        assert!(s.detach(id, 1, t));
        let mut wrong = tok(7);
        for i in 0..RESUME_TOKEN_LEN {
            wrong[i] ^= 1;
            assert_eq!(s.resume(id, &wrong, 3, 2, t), Err(ResumeError::BadToken), "byte {i}");
            wrong[i] ^= 1;
        }
        assert_eq!(s.resume(id, &tok(7)[..15], 3, 2, t), Err(ResumeError::BadToken));
        assert_eq!(s.resume(id, &[7; 17], 3, 2, t), Err(ResumeError::BadToken));
        assert_eq!(s.resume(id, &[], 3, 2, t), Err(ResumeError::BadToken));
        assert_eq!(s.resume(id + 1, &tok(7), 3, 2, t), Err(ResumeError::Unknown));
        assert_eq!(s.resume(0, &tok(7), 3, 2, t), Err(ResumeError::Unknown));
        assert_eq!(s.get(id).unwrap().conn(), None, "still detached");
        assert!(s.resume(id, &tok(7), 3, 2, t).is_ok());
        // a session that was removed cannot be resumed
        s.remove(id);
        assert_eq!(s.resume(id, &tok(7), 3, 3, t), Err(ResumeError::Unknown));
    }

    #[test]
    fn a_resume_while_attached_moves_the_connection() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 3);
        let id = s.login("alice", 1, tok(7), t).id;
        push_n(&mut s, id, 2);
        // the client saw its connection die; the Gate did not notice yet
        let r = s.resume(id, &tok(7), 1, 2, t).unwrap();
        assert_eq!(r.previous_conn, Some(1));
        assert_eq!(r.replay, frames([2]));
        assert_eq!(s.get(id).unwrap().conn(), Some(2));
        assert!(!s.detach(id, 1, t), "the old connection closing later changes nothing");
        assert_eq!(s.get(id).unwrap().conn(), Some(2));
        assert_eq!(s.next_deadline(), None);
        assert_eq!(s.push(id, frame).unwrap().2, Some(2));
        // resuming again on the same connection names no previous one
        let r = s.resume(id, &tok(7), 3, 2, t).unwrap();
        assert_eq!(r.previous_conn, None);
        assert!(s.detach(id, 2, t));
        assert!(!s.detach(id, 2, t), "already detached");
    }

    #[test]
    fn detached_sessions_expire_after_the_grace_and_not_before() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 3);
        let a = s.login("alice", 1, tok(1), t).id;
        let b = s.login("bob", 2, tok(2), t).id;
        let c = s.login("carol", 3, tok(3), t).id;
        s.bind(a, Binding { sid: 9, eid: 100 });
        assert!(s.detach(a, 1, t));
        assert!(s.detach(b, 2, t + 10 * MS));
        assert!(s.detach(c, 3, t + 20 * MS));
        assert_eq!(s.get(a).unwrap().detached_since(), Some(t));
        assert_eq!(s.next_deadline(), Some(t + GRACE));
        assert!(s.expire(t + GRACE - MS).is_empty(), "not before the grace");
        assert_eq!(s.len(), 3);
        // carol comes back in time
        s.resume(c, &tok(3), 0, 4, t + GRACE).unwrap();
        let gone = s.expire(t + GRACE);
        assert_eq!(
            gone,
            vec![Expired {
                id: a,
                account: "alice".into(),
                binding: Some(Binding { sid: 9, eid: 100 })
            }]
        );
        assert_eq!(s.by_account("alice"), None);
        assert!(s.bound_to(9).is_empty());
        assert_eq!(s.next_deadline(), Some(t + GRACE + 10 * MS));
        let gone = s.expire(t + Duration::from_secs(3600));
        assert_eq!(gone.iter().map(|e| e.id).collect::<Vec<_>>(), vec![b]);
        assert_eq!(s.next_deadline(), None);
        assert_eq!(s.len(), 1);
        assert!(s.expire(t + Duration::from_secs(7200)).is_empty(), "carol is attached");
        // a resumed then dropped again session gets a fresh grace
        assert!(s.detach(c, 4, t + Duration::from_secs(7200)));
        assert_eq!(s.next_deadline(), Some(t + Duration::from_secs(7200) + GRACE));
    }

    #[test]
    fn expiry_is_sorted_by_deadline_and_a_removed_session_leaves_its_slot() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 3);
        let ids: Vec<u64> = (0..20u64).map(|i| s.login(&format!("p{i}"), i, tok(0), t).id).collect();
        for (i, id) in ids.iter().enumerate().rev() {
            assert!(s.detach(*id, i as u64, t + (i as u32) * MS));
        }
        s.remove(ids[0]);
        s.remove(ids[5]);
        assert_eq!(s.next_deadline(), Some(t + GRACE + MS));
        let gone: Vec<u64> = s.expire(t + GRACE + 10 * MS).into_iter().map(|e| e.id).collect();
        let want: Vec<u64> = ids[1..=10].iter().copied().filter(|&i| i != ids[5]).collect();
        assert_eq!(gone, want);
        assert_eq!(s.len(), 9);
    }

    #[test]
    fn an_unreachable_grace_never_expires() {
        let t = Instant::now();
        let mut s = Sessions::new(
            SessionConfig {
                resume_grace: Duration::MAX,
                ..config()
            },
            3,
        );
        let id = s.login("alice", 1, tok(0), t).id;
        assert!(s.detach(id, 1, t));
        assert_eq!(s.next_deadline(), None);
        assert!(s.expire(t + Duration::from_secs(1 << 40)).is_empty());
        assert!(s.resume(id, &tok(0), 0, 2, t).is_ok());
    }

    #[test]
    fn the_replay_buffer_is_bounded_by_count() {
        let t = Instant::now();
        let mut s = Sessions::new(
            SessionConfig {
                replay_max: 5,
                ..config()
            },
            3,
        );
        let id = s.login("alice", 1, tok(0), t).id;
        push_n(&mut s, id, 12);
        let x = s.get(id).unwrap();
        assert_eq!(x.buffered(), 5);
        assert_eq!(
            x.buffered_bytes(),
            frames(8..=12).iter().map(|f| f.len()).sum::<usize>()
        );
        assert_eq!(x.last_seq(), 12);
        let r = s.resume(id, &tok(0), 7, 2, t).unwrap();
        assert_eq!(r.replay, frames(8..=12));
        // nothing kept at all
        let mut s = Sessions::new(
            SessionConfig {
                replay_max: 0,
                ..config()
            },
            3,
        );
        let id = s.login("alice", 1, tok(0), t).id;
        assert_eq!(s.push(id, frame).unwrap().0, 1, "still sent");
        assert_eq!(s.get(id).unwrap().buffered(), 0);
        assert_eq!(s.resume(id, &tok(0), 0, 2, t), Err(ResumeError::TooFarBehind));
        assert!(s.resume(id, &tok(0), 1, 2, t).is_ok());
    }

    #[test]
    fn the_replay_buffer_is_bounded_by_bytes() {
        let t = Instant::now();
        let mut s = Sessions::new(
            SessionConfig {
                replay_bytes: 100,
                ..config()
            },
            3,
        );
        let id = s.login("alice", 1, tok(0), t).id;
        let sized = |n: usize| move |_seq: u32| Bytes::from(vec![0u8; n]);
        s.push(id, sized(40)).unwrap(); // 1
        s.push(id, sized(40)).unwrap(); // 2
        s.push(id, sized(20)).unwrap(); // 3: exactly 100
        assert_eq!(
            (s.get(id).unwrap().buffered(), s.get(id).unwrap().buffered_bytes()),
            (3, 100)
        );
        s.push(id, sized(1)).unwrap(); // 4: 101, drops 1
        assert_eq!(
            (s.get(id).unwrap().buffered(), s.get(id).unwrap().buffered_bytes()),
            (3, 61)
        );
        s.push(id, sized(90)).unwrap(); // 5: drops 2 and 3 (4 and 5 make 91)
        assert_eq!(
            (s.get(id).unwrap().buffered(), s.get(id).unwrap().buffered_bytes()),
            (2, 91)
        );
        // a frame larger than the whole budget is sent but not kept
        let (seq, f, conn) = s.push(id, sized(101)).unwrap();
        assert_eq!((seq, f.len(), conn), (6, 101, Some(1)));
        assert_eq!(
            (s.get(id).unwrap().buffered(), s.get(id).unwrap().buffered_bytes()),
            (0, 0)
        );
        assert_eq!(s.resume(id, &tok(0), 5, 2, t), Err(ResumeError::TooFarBehind));
        assert!(s.resume(id, &tok(0), 6, 2, t).is_ok());
    }

    #[test]
    fn acks_drop_what_the_client_has_and_refuse_what_was_never_sent() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 3);
        let id = s.login("alice", 1, tok(0), t).id;
        assert_eq!(s.ack(id, 0), Ok(0), "nothing sent, nothing acknowledged");
        assert_eq!(s.ack(id, 1), Err(AckError::Ahead { seq: 1, last_sent: 0 }));
        push_n(&mut s, id, 10);
        let bytes = s.get(id).unwrap().buffered_bytes();
        assert_eq!(s.ack(id, 4), Ok(4));
        assert_eq!(
            s.get(id).unwrap().buffered_bytes(),
            bytes - (1..=4).map(|i| frame(i).len()).sum::<usize>()
        );
        assert_eq!(s.ack(id, 4), Ok(0), "again");
        assert_eq!(s.ack(id, 2), Ok(0), "backwards");
        assert_eq!(s.get(id).unwrap().acked(), 4);
        assert_eq!(s.ack(id, 11), Err(AckError::Ahead { seq: 11, last_sent: 10 }));
        assert_eq!(
            s.ack(id, u32::MAX),
            Err(AckError::Ahead {
                seq: u32::MAX,
                last_sent: 10
            })
        );
        assert_eq!(s.get(id).unwrap().buffered(), 6, "a refused ack drops nothing");
        assert_eq!(s.ack(id, 10), Ok(6));
        assert_eq!(s.get(id).unwrap().buffered_bytes(), 0);
        assert_eq!(s.ack(id + 1, 1), Err(AckError::Unknown));
    }

    #[test]
    fn pushes_to_unknown_or_exhausted_sessions_are_refused() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 3);
        assert!(s
            .push(42, |_| unreachable!("no frame for an unknown session"))
            .is_none());
        let id = s.login("alice", 1, tok(0), t).id;
        s.sessions.get_mut(&id).unwrap().next_seq = u32::MAX as u64;
        assert_eq!(s.push(id, frame).unwrap().0, u32::MAX, "the last number is usable");
        assert_eq!(s.get(id).unwrap().last_seq(), u32::MAX);
        assert!(s.push(id, |_| unreachable!()).is_none(), "then none is left");
        assert_eq!(s.ack(id, u32::MAX), Ok(1));
    }

    #[test]
    fn the_backend_index_follows_bind_rebind_unbind_remove_replace_and_expire() {
        let t = Instant::now();
        let mut s = Sessions::new(config(), 3);
        let a = s.login("a", 1, tok(0), t).id;
        let b = s.login("b", 2, tok(0), t).id;
        let c = s.login("c", 3, tok(0), t).id;
        assert!(s.bind(a, Binding { sid: 1, eid: 10 }));
        assert!(s.bind(b, Binding { sid: 1, eid: 11 }));
        assert!(s.bind(c, Binding { sid: 2, eid: 12 }));
        assert!(!s.bind(999, Binding { sid: 1, eid: 0 }), "no such session");
        let mut ab = vec![a, b];
        ab.sort_unstable();
        assert_eq!(s.bound_to(1), ab);
        assert_eq!(s.bound_to(2), vec![c]);
        assert!(s.bound_to(3).is_empty());
        // rebind to another node and to another entity on the same node
        assert!(s.bind(a, Binding { sid: 2, eid: 20 }));
        assert_eq!(s.bound_to(1), vec![b]);
        let mut ac = vec![a, c];
        ac.sort_unstable();
        assert_eq!(s.bound_to(2), ac);
        assert!(s.bind(a, Binding { sid: 2, eid: 21 }));
        assert_eq!(s.bound_to(2), ac);
        assert_eq!(s.binding(a), Some(Binding { sid: 2, eid: 21 }));
        // unbind
        assert_eq!(s.unbind(b), Some(Binding { sid: 1, eid: 11 }));
        assert_eq!(s.unbind(b), None);
        assert_eq!(s.binding(b), None);
        assert!(s.bound_to(1).is_empty());
        assert!(!s.by_sid.contains_key(&1), "an empty node is forgotten");
        // remove
        let gone = s.remove(c).unwrap();
        assert_eq!(gone.binding(), Some(Binding { sid: 2, eid: 12 }));
        assert_eq!(s.bound_to(2), vec![a]);
        assert!(s.remove(c).is_none());
        assert_eq!(s.by_account("c"), None);
        // replaced by a newer login
        let a2 = s.login("a", 5, tok(0), t);
        assert_eq!(a2.replaced.unwrap().binding, Some(Binding { sid: 2, eid: 21 }));
        assert!(s.bound_to(2).is_empty());
        assert_eq!(s.binding(a2.id), None, "a new session starts unbound");
        // expired
        assert!(s.bind(a2.id, Binding { sid: 3, eid: 1 }));
        assert!(s.bind(b, Binding { sid: 3, eid: 2 }));
        assert!(s.detach(a2.id, 5, t));
        s.expire(t + GRACE);
        assert_eq!(s.bound_to(3), vec![b]);
        assert_eq!(s.binding(a2.id), None);
        // the index agrees with the sessions
        let total: usize = s.by_sid.values().map(|v| v.len()).sum();
        assert_eq!(total, s.iter().filter(|x| x.binding().is_some()).count());
        // a detached session keeps its binding
        assert!(s.detach(b, 2, t));
        assert_eq!(s.bound_to(3), vec![b]);
    }
}
