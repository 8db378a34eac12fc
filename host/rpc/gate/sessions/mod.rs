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
mod tests;
