//! Connections between nodes: the two halves of a TCP socket or an in-memory
//! pipe (`stream`), a connection's output side (`link`), the mutual
//! handshake (`handshake`), what every verified connection does (reader,
//! acknowledgements, liveness: `conn`), the accepting side (`accept`) and
//! the connecting side (`peer`). Game clients' connections, both sides,
//! are [`client`]'s (the only public module here).
//!
//! Owns sockets and the tasks that drive them. The decisions (liveness,
//! backoff, outbox accounting) come from `rpc`; what arrives is handed to
//! the node through the calls it makes into the runtime.

pub(crate) mod accept;
pub mod client;
pub(crate) mod conn;
pub mod handoff;
pub(crate) mod handshake;
pub(crate) mod link;
pub(crate) mod peer;
pub(crate) mod router;
pub(crate) mod stream;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::codec::auth::Identity;
use crate::codec::mpack::Reader;
use crate::codec::proto::Envelope;
use crate::codec::wire::Message;
use crate::rpc::acks::SendSeqs;
use crate::rpc::reconnect::Reconnect;
use crate::rpc::spec::NodeSpec;
use conn::Cause;
use link::Link;
use stream::LocalNet;

pub use crate::rpc::reconnect::ConnState as PeerState;

/// Spawns a task of the current node on this thread's `LocalSet`, inside
/// the node's tracing span (so its log lines name the node even when
/// several nodes share a worker thread).
pub(crate) fn spawn<F>(f: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    use tracing::Instrument;
    tokio::task::spawn_local(f.in_current_span())
}

/// The limits a connection obeys (from the cluster file).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetSettings {
    /// Time an accepted connection has to complete the handshake.
    pub verify_timeout: Duration,
    /// Silence after which a peer is declared down.
    pub liveness: Duration,
    /// Largest message accepted once verified.
    pub max_message: usize,
    /// Most bytes queued towards one peer (a Router closes the connection
    /// of a node that lets more pile up for it).
    pub max_queue: usize,
}

/// The one place of reverify state: the schema generation connections
/// verified under. When the node's RPC digest changes, [`Reverify::bump`]
/// moves it: links stop writing under the old ids at once (each link checks
/// its [`Gate`]), and every connection's [`Reverify::changed`] wakes
/// it to close and verify again.
#[derive(Debug, Default)]
pub(crate) struct Reverify {
    gen: Rc<Cell<u64>>,
    changed: Notify,
}

/// What a link checks before writing: whether the schema moved since its
/// connection verified.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    current: Rc<Cell<u64>>,
    at: u64,
}

impl Gate {
    /// True once the schema changed after the connection verified.
    pub(crate) fn stale(&self) -> bool {
        self.current.get() != self.at
    }
}

impl Reverify {
    /// The current generation (taken by a connection when it verifies).
    pub(crate) fn current(&self) -> u64 {
        self.gen.get()
    }

    /// Whether a connection verified at `gen` is under an old schema.
    pub(crate) fn stale(&self, gen: u64) -> bool {
        self.gen.get() != gen
    }

    /// The gate of a connection verified at `gen`.
    pub(crate) fn gate(&self, gen: u64) -> Gate {
        Gate {
            current: self.gen.clone(),
            at: gen,
        }
    }

    /// The schema changed: every connection must verify again.
    pub(crate) fn bump(&self) {
        self.gen.set(self.gen.get() + 1);
        self.changed.notify_waiters();
    }

    /// Returns once the generation is no longer `gen`.
    pub(crate) async fn changed(&self, gen: u64) {
        loop {
            let wait = self.changed.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            if self.stale(gen) {
                return;
            }
            wait.await;
        }
    }
}

/// What the network side of a node keeps: its accepted connections and
/// their counters, and the in-process network it may dial into.
#[derive(Debug, Default)]
pub(crate) struct NetState {
    /// Accepted connections that have not verified yet.
    pub unverified: Cell<usize>,
    /// Id of the next accepted connection (also seeds backoff jitter).
    pub next_conn: Cell<u64>,
    /// Verified accepted connections, by id: replies go out on them.
    pub inbound: RefCell<HashMap<u64, Rc<Link>>>,
    /// Nodes of this process reached through in-memory pipes, if enabled.
    pub local: Option<Arc<LocalNet>>,
    /// The schema generation connections verified under.
    pub reverify: Reverify,
    /// On a Router: the verified node connections, by the node's sid.
    pub routed: RefCell<HashMap<u32, router::Routed>>,
}

/// One peer as the connecting side sees it.
pub(crate) trait NetPeer: 'static {
    /// Who it is and where it listens.
    fn spec(&self) -> &NodeSpec;
    /// Its output side (the queue while not connected).
    fn link(&self) -> &Link;
    /// Its connect state and backoff.
    fn reconnect(&self) -> &RefCell<Reconnect>;
    /// Woken when a message waits for a connection.
    fn kick(&self) -> &Notify;
}

/// What the network side needs from the node it serves: who the node is,
/// its settings, and where to hand what arrives. Implemented by the runtime;
/// `net` never sees the node itself.
pub(crate) trait NetHost: 'static {
    /// The node's peers.
    type Peer: NetPeer;
    /// Connection bookkeeping.
    fn net(&self) -> &NetState;
    /// Limits from the cluster file.
    fn settings(&self) -> NetSettings;
    /// This node.
    fn me(&self) -> &NodeSpec;
    /// This process's incarnation.
    fn incarnation(&self) -> u64;
    /// This node's identity for a handshake, with a fresh nonce.
    fn identity(&self) -> Identity;
    /// The cluster secret.
    fn secret(&self) -> String;
    /// The node's RPC digest.
    fn digest(&self) -> u32;
    /// Whether a node that says it is `who` may connect at all (before its
    /// proof is checked): known to the cluster file, or any with ZooKeeper.
    fn knows(&self, who: &Identity) -> bool;
    /// Whether a log line of `cause` a remote party triggered may be written.
    fn limited(&self, cause: &'static str) -> bool;
    /// A log line from node `from` (this node is the cluster's log node).
    fn on_log(&self, from: &str, level: u8, text: &[u8]);
    /// Whether this node is a Router that relays for the others
    /// (`topology = "router"`).
    fn relays(&self) -> bool;
    /// A relayed message arrived from Router `via` (its data starts with the
    /// relay prefix); returns a cause to close that connection.
    fn on_relayed(&self, via: &Self::Peer, msg: &Message) -> Option<Cause>;
    /// Router `via` announced nodes.
    fn on_members(&self, via: &Self::Peer, op: crate::codec::proto::Members, nodes: &[(u32, u64)]);
    /// The record of sends handled from `sender` at `incarnation`.
    fn send_seqs(&self, sender: &str, incarnation: u64) -> Rc<SendSeqs>;
    /// A call or send arrived; false when it was not handled (stopping).
    fn on_request(&self, conn: u64, from: &str, msg: &Message, env: Envelope<'_>, link: Option<&Link>) -> bool;
    /// A reply arrived from `peer`.
    fn on_reply(&self, peer: &Self::Peer, session: u32, ok: bool, nvals: usize, vals: Reader<'_>);
    /// Node `sid` reported its load.
    fn on_load(&self, sid: u32, load: i64);
    /// A connection to `peer` verified; the peer runs as `incarnation`.
    fn peer_connected(&self, peer: &Rc<Self::Peer>, incarnation: u64);
    /// The connection to `peer` was lost (`reverify`: the schema changed).
    fn peer_lost(&self, peer: &Self::Peer, cause: &str, reverify: bool);
    /// An attempt to connect to `peer` failed.
    fn connect_failed(&self, peer: &Self::Peer, cause: &str);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn a_schema_change_makes_every_earlier_gate_stale() {
        let r = Reverify::default();
        let gen = r.current();
        let gate = r.gate(gen);
        assert!(!gate.stale() && !r.stale(gen));
        r.bump();
        assert!(gate.stale() && r.stale(gen));
        let newer = r.gate(r.current());
        assert!(!newer.stale(), "a connection verified after the change writes");
    }

    #[tokio::test]
    async fn connections_wake_when_the_schema_changes_not_before() {
        let r = Reverify::default();
        let gen = r.current();
        let waiting = r.changed(gen);
        tokio::pin!(waiting);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        r.bump();
        assert!(waiting.as_mut().poll(&mut cx).is_ready());
        // already stale: returns at once
        r.changed(gen).await;
    }
}
