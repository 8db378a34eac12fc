//! What a Gate node keeps (see [`super::gate`], which drives it): its
//! settings, sessions, client connections' output sides, relayed calls,
//! admission and counters. Knows nothing of the node.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::BytesMut;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::codec::client;
use crate::codec::token::TokenKey;
use crate::discovery::gate::GateConfig;
use crate::net::client::{ClientListener, Transport};
use crate::rpc::gate::limits::{Admission, Fault, Faults, TokenBucket};
use crate::rpc::gate::sessions::{SessionConfig, Sessions};

/// One client connection's output side and state.
pub(crate) struct ClientLink {
    /// Connection id (unique on this Gate).
    pub(crate) id: u64,
    /// Where it comes from.
    pub(crate) addr: SocketAddr,
    pub(crate) out: RefCell<BytesMut>,
    pub(crate) wake: Notify,
    /// Set when the connection must close once what is queued is written.
    pub(crate) closing: Cell<Option<&'static str>>,
    pub(crate) closed: Notify,
    /// Its session once verified (0 before).
    pub(crate) session: Cell<u64>,
    /// The session's resume token (told to the client at verify-ok).
    pub(crate) resume_token: Cell<[u8; 16]>,
    /// Set by Lua's accept (true) or refusal (false) of the login.
    pub(crate) decided: Cell<Option<bool>>,
    /// Pushes that arrived before verify-ok went out (a push and the bind's
    /// answer come over different connections): written right after it.
    pub(crate) early: RefCell<Vec<bytes::Bytes>>,
    pub(crate) decided_wake: Notify,
    pub(crate) last_rx: Cell<Instant>,
    pub(crate) faults: RefCell<Faults>,
    pub(crate) bucket: RefCell<TokenBucket>,
    pub(crate) refused_in_a_row: Cell<u32>,
    pub(crate) max_out: usize,
    /// True while a write to the socket is pending (the client is not
    /// taking bytes as fast as they come).
    pub(crate) writing: Cell<bool>,
}

/// A burst queued while the writer has not had its turn may reach this
/// many times `max_out` before the client counts as slow.
pub(crate) const BURST_OUT: usize = 4;

impl ClientLink {
    pub(crate) fn new(id: u64, addr: SocketAddr, cfg: &GateConfig, now: Instant) -> Self {
        ClientLink {
            id,
            addr,
            out: RefCell::new(BytesMut::new()),
            wake: Notify::new(),
            closing: Cell::new(None),
            closed: Notify::new(),
            session: Cell::new(0),
            resume_token: Cell::new([0; 16]),
            decided: Cell::new(None),
            early: RefCell::new(Vec::new()),
            decided_wake: Notify::new(),
            last_rx: Cell::new(now),
            faults: RefCell::new(Faults::default()),
            bucket: RefCell::new(TokenBucket::new(cfg.rate, cfg.burst, now)),
            refused_in_a_row: Cell::new(0),
            max_out: cfg.max_out,
            writing: Cell::new(false),
        }
    }

    /// Queues frames for the client; false (and the connection closes as
    /// `slow`) when the client has not read what was queued before: more
    /// than `max_out` bytes wait while a write to it is pending, or more
    /// than `BURST_OUT * max_out` in any case (a burst from a backend is
    /// queued before the writer gets its turn, so it alone is no sign of a
    /// slow client).
    pub(crate) fn send(&self, f: impl FnOnce(&mut BytesMut)) -> bool {
        if self.closing.get().is_some() {
            return false;
        }
        let mut out = self.out.borrow_mut();
        f(&mut out);
        let len = out.len();
        if len > self.max_out && (self.writing.get() || len > self.max_out.saturating_mul(BURST_OUT)) {
            // what is queued is dropped; the client is told why, if it
            // ever reads again
            out.clear();
            client::put_notice(&mut out, "slow", "the client did not read what was sent to it", true);
            drop(out);
            self.close("slow");
            return false;
        }
        drop(out);
        self.wake.notify_one();
        true
    }

    /// Closes after what is queued is written (a notice, a verify-failed).
    pub(crate) fn close(&self, why: &'static str) {
        if self.closing.get().is_none() {
            self.closing.set(Some(why));
            self.wake.notify_one();
            self.closed.notify_one();
        }
    }

    /// Sends a notice; `closing` closes the connection after it.
    pub(crate) fn notice(&self, code: &'static str, text: &str, closing: bool) {
        let sent = self.send(|o| client::put_notice(o, code, text, closing));
        if closing && sent {
            self.close(code);
        }
    }

    pub(crate) fn decide(&self, ok: bool) {
        self.decided.set(Some(ok));
        self.decided_wake.notify_one();
    }

    /// Records bad input; true the first time this cause is seen on this
    /// connection (it is logged once per client, not per message).
    pub(crate) fn fault(&self, f: Fault) -> bool {
        self.faults.borrow_mut().record(f)
    }
}

/// A client's call relayed to a backend, by the Gate's call id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Relay {
    pub(crate) conn: u64,
    pub(crate) call: u32,
}

/// Counters a Gate keeps (`core.gate_stats`).
#[derive(Debug, Default)]
pub(crate) struct GateStats {
    pub(crate) accepted: Cell<u64>,
    pub(crate) verified: Cell<u64>,
    pub(crate) refused: Cell<u64>,
    pub(crate) resumed: Cell<u64>,
    pub(crate) replaced: Cell<u64>,
    pub(crate) faults: Cell<u64>,
    pub(crate) busy: Cell<u64>,
}

/// Lua's answer to a web login (`core.gate_web_reply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WebAnswer {
    pub(crate) ok: bool,
    pub(crate) reason: String,
    /// The HTTP status of a refusal, when not 403 (404: no login hook,
    /// 500: the hook failed).
    pub(crate) status: Option<u16>,
}

/// What a Gate node keeps.
pub(crate) struct GateState {
    pub(crate) cfg: GateConfig,
    pub(crate) key: TokenKey,
    pub(crate) sessions: RefCell<Sessions>,
    pub(crate) conns: RefCell<HashMap<u64, Rc<ClientLink>>>,
    pub(crate) relays: RefCell<HashMap<u32, Relay>>,
    pub(crate) admission: RefCell<Admission>,
    pub(crate) next_conn: Cell<u64>,
    pub(crate) expiry: Notify,
    pub(crate) stats: GateStats,
    pub(crate) listeners: RefCell<Vec<ClientListener>>,
    /// The web listener (`gate.http`), until its accept loop takes it.
    pub(crate) http: RefCell<Option<ClientListener>>,
    /// Web logins waiting for Lua's answer, by request id.
    pub(crate) web_logins: RefCell<HashMap<u64, oneshot::Sender<WebAnswer>>>,
    pub(crate) next_web: Cell<u64>,
}

pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the system's random source failed");
    b
}

impl GateState {
    /// Binds the Gate's listeners (TLS loaded from its files).
    pub(crate) async fn bind(cfg: GateConfig, secret: &str) -> Result<GateState, String> {
        let tls = match &cfg.tls {
            Some(t) => Some(
                crate::net::client::server_tls(&crate::net::client::TlsFiles {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                })
                .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let mut listeners = Vec::new();
        for (addr, transport) in [(cfg.tcp, Transport::Tcp), (cfg.ws, Transport::Ws)] {
            if let Some(addr) = addr {
                let l = ClientListener::bind(addr, transport, tls.clone())
                    .await
                    .map_err(|e| format!("gate: cannot listen on {addr}: {e}"))?;
                listeners.push(l);
            }
        }
        let http = match cfg.http {
            Some(addr) => Some(
                // (Transport::Tcp: the web driver reads the bytes itself)
                ClientListener::bind(addr, Transport::Tcp, tls.clone())
                    .await
                    .map_err(|e| format!("gate: cannot listen on {addr} (http): {e}"))?,
            ),
            None => None,
        };
        let seed = u64::from_le_bytes(random::<8>()) >> 2;
        Ok(GateState {
            key: TokenKey::from_secret(secret),
            sessions: RefCell::new(Sessions::new(
                SessionConfig {
                    resume_grace: cfg.resume_grace,
                    replay_max: cfg.replay_max,
                    replay_bytes: cfg.replay_bytes,
                },
                seed,
            )),
            conns: RefCell::new(HashMap::new()),
            relays: RefCell::new(HashMap::new()),
            admission: RefCell::new(Admission::new(cfg.max_verifying, cfg.max_verifying_per_ip)),
            next_conn: Cell::new(1),
            expiry: Notify::new(),
            stats: GateStats::default(),
            listeners: RefCell::new(listeners),
            http: RefCell::new(http),
            web_logins: RefCell::new(HashMap::new()),
            next_web: Cell::new(1),
            cfg,
        })
    }

    pub(crate) fn conn(&self, id: u64) -> Option<Rc<ClientLink>> {
        self.conns.borrow().get(&id).cloned()
    }

    pub(crate) fn session_conn(&self, session: u64) -> Option<Rc<ClientLink>> {
        let conn = self.sessions.borrow().get(session).and_then(|s| s.conn())?;
        self.conn(conn)
    }
}

/// Holds a place among the connections verifying at once (client verifies
/// and web requests alike); released when dropped.
pub(crate) struct Admitted<'a>(&'a GateState, std::net::IpAddr);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.admission.borrow_mut().release(self.1);
    }
}

impl GateState {
    /// A place among the connections verifying at once for `ip`, or `None`
    /// (counted as busy) when there is none.
    pub(crate) fn admit(&self, ip: std::net::IpAddr) -> Option<Admitted<'_>> {
        if self.admission.borrow_mut().try_admit(ip).is_err() {
            self.stats.busy.set(self.stats.busy.get() + 1);
            return None;
        }
        Some(Admitted(self, ip))
    }
}
