//! The node runtime: one Lua state on one OS thread, with a current-thread
//! tokio runtime beside it that drives the node's own sockets and timers.
//!
//! Nothing here is shared between threads except the control channel of
//! [`NodeHandle`](super::NodeHandle). A frame read from a socket is decoded and handed to the
//! Lua dispatcher on the same thread, without a thread hop; Lua's sends are
//! appended to the peer's output buffer and flushed by that peer's writer task
//! once the current burst of work is done (one write per burst, not per
//! message).
//!
//! Every entry into Lua comes from a task of this thread's `LocalSet`, never
//! from inside a Lua callback, so Lua is never re-entered.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, Lua, MultiValue, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{info, warn};

use super::control::StopState;
use super::timers::Timers;
use crate::codec::proto::{self};
use crate::discovery::config::{ClusterConfig, NodeSpec};
use crate::discovery::watch::Watch;
use crate::discovery::DiscoverySignals;
use crate::lua::dispatch::Dispatch;
use crate::net::link::Link;
use crate::net::{NetState, PeerState};
use crate::rpc::acks::SendSeqs;
use crate::rpc::pending::{CallIds, Calls};
use crate::rpc::reconnect::Reconnect;
use crate::rpc::ring::Rings;
use crate::schema::Schema;

/// The server type of nodes that join the cluster only when their script
/// asks (`cluster.join()`): analytics, one-off jobs (seed 000's Olap).
pub(crate) const OLAP_TYPE: &str = "Olap";

/// Outgoing side towards one other node (or this node itself).
pub(crate) struct Peer {
    pub(crate) spec: NodeSpec,
    /// Connect state and backoff (seed 003's states).
    pub(crate) reconnect: RefCell<Reconnect>,
    /// Sequence number of the next send to this peer.
    pub(crate) next_seq: Cell<u32>,
    /// Incarnation of the peer at the last verified connection (0: none yet).
    pub(crate) incarnation: Cell<u64>,
    /// Messages to write; while not connected, the bounded wait queue.
    pub(crate) link: Link,
    /// Calls waiting for a reply over this peer, by call id.
    pub(crate) pending: RefCell<Calls>,
    pub(crate) kick: Notify,
    /// Through Routers: the Router that reaches it changed (or none does).
    pub(crate) reroute: Notify,
    pub(crate) online: Cell<bool>,
    pub(crate) is_self: bool,
    pub(crate) task: RefCell<Option<tokio::task::JoinHandle<()>>>,
    /// Since when discovery no longer lists this peer while it is still connected.
    pub(crate) missing_since: Cell<Option<Instant>>,
}

/// Everything a node thread owns. Lua callbacks hold a `Weak` to it.
pub(crate) struct Core {
    /// The node itself, for tasks it spawns from `&self` (the DbCtl server).
    pub(crate) this: std::rc::Weak<Core>,
    pub(crate) lua: Lua,
    pub(crate) me: NodeSpec,
    pub(crate) cluster: RefCell<Arc<ClusterConfig>>,
    pub(crate) started: Instant,
    /// The schema, this node's type and the types' ids, registration.
    pub(crate) typing: Typing,
    /// The Lua dispatcher and the evals waiting for it.
    pub(crate) lua_side: LuaSide,
    /// Peers, rings and call ids.
    pub(crate) routing: Routing,
    /// Accepted connections and the in-process network.
    pub(crate) net: NetState,
    /// Timers (Lua's and the node's own).
    pub(crate) timers: Timers,
    pub(crate) listener: RefCell<Option<TcpListener>>,
    /// The file watchers: the cluster file, and the scripts when hot reload is on.
    pub(crate) watchers: RefCell<(Option<Watch>, Option<Watch>)>,
    /// Where the node is in stopping.
    pub(crate) stop: StopState,
    /// Wake-ups between the node and its ZooKeeper session.
    pub(crate) discovery: DiscoverySignals,
    /// In-memory connections to nodes of this process, if enabled.
    pub(crate) local_rx: RefCell<Option<mpsc::UnboundedReceiver<crate::net::stream::MemConn>>>,
    /// The load this node reports (`router.setLoad`) and those of others.
    pub(crate) loads: Loads,
    /// Number of this process start (tells a restarted node apart; a later
    /// start has a higher one: `codec::auth::incarnation`).
    pub(crate) incarnation: u64,
    /// Rate limits of log lines remote parties can cause.
    pub(crate) log_limit: RefCell<crate::rpc::ratelog::LogLimit>,
    /// The last send handled from each sender, by name (duplicates resent
    /// after a reconnect are dropped).
    pub(crate) send_seqs: RefCell<HashMap<String, Rc<SendSeqs>>>,
    /// Game clients, when this node is a Gate (its cluster entry has `gate`).
    pub(crate) gate: Option<super::gatestate::GateState>,
    /// The node's database, when its cluster entry has `store` (DBProxy).
    pub(crate) store: Option<crate::store::Store>,
    /// Its Prometheus series (and its scripts').
    pub(crate) metrics: crate::metrics::NodeMetrics,
    /// The listener of its metrics endpoint until `run` serves it, when its
    /// cluster entry has `metrics`.
    pub(crate) metrics_listener: RefCell<Option<TcpListener>>,
    /// Nodes reached through Routers (`topology = "router"`).
    pub(crate) relay: super::relaystate::RelayState,
    /// An `Olap` node: whether its script called `cluster.join()`.
    pub(crate) joined: Cell<bool>,
    /// Lua log lines waiting for the cluster's log node (RemoteLog).
    pub(crate) remote_log: super::logsink::LogSink,
}

impl Core {
    /// Starts a Lua timer; its id comes back through the dispatcher.
    pub(crate) fn add_timer(&self, after: Duration) -> u64 {
        self.timers.add(after, Instant::now())
    }

    /// Stops a Lua timer before it fires.
    pub(crate) fn cancel_timer(&self, id: u64) {
        self.timers.cancel(id)
    }

    pub(crate) fn add_peer(self: &Rc<Self>, spec: NodeSpec) -> Rc<Peer> {
        let is_self = spec.sid == self.me.sid;
        let peer = Rc::new(Peer {
            reconnect: RefCell::new({
                let mut r = Reconnect::new(Instant::now());
                if is_self {
                    r.connected();
                }
                r
            }),
            spec,
            next_seq: Cell::new(1),
            incarnation: Cell::new(0),
            link: Link::new(!is_self),
            pending: RefCell::new(Calls::new()),
            kick: Notify::new(),
            reroute: Notify::new(),
            online: Cell::new(false),
            is_self,
            task: RefCell::new(None),
            missing_since: Cell::new(None),
        });
        self.routing.peers.borrow_mut().insert(peer.spec.sid, peer.clone());
        peer
    }

    /// Takes a peer out of the cluster: its connection closes, its calls
    /// fail, and it goes offline.
    pub(crate) fn remove_peer(self: &Rc<Self>, sid: u32, why: &str) {
        let Some(peer) = self.routing.peers.borrow_mut().remove(&sid) else {
            return;
        };
        self.loads.peers.borrow_mut().remove(&sid);
        if let Some(t) = peer.task.borrow_mut().take() {
            t.abort();
        }
        // reached through Routers: what it was owed goes with it
        if let Some(rin) = self.relay.inbound.borrow_mut().remove(&sid) {
            self.net.inbound.borrow_mut().remove(&rin.conn);
        }
        self.set_online(&peer, false);
        self.fail_peer(&peer, why);
    }

    pub(crate) fn peer(&self, sid: u32) -> Option<Rc<Peer>> {
        self.routing.peers.borrow().get(&sid).cloned()
    }

    /// Every node of the cluster, by name.
    pub(crate) fn all_specs(&self) -> Vec<NodeSpec> {
        let mut v: Vec<NodeSpec> = self.routing.peers.borrow().values().map(|p| p.spec.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The spec of node `sid`, if the cluster has it.
    pub(crate) fn node_spec(&self, sid: u32) -> Option<NodeSpec> {
        self.peer(sid).map(|p| p.spec.clone())
    }

    pub(crate) fn type_id(&self, name: &str) -> Option<u32> {
        self.typing.type_ids.borrow().get(name).copied()
    }

    /// Monotonic seconds since the node started.
    pub(crate) fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// `rpcdef.Digi`, or 0 before `rpcdef.init`.
    pub(crate) fn digest(&self) -> u32 {
        self.typing.schema.borrow().as_ref().map(|s| s.digest).unwrap_or(0)
    }

    pub(crate) fn set_schema(&self, schema: Schema) {
        let old = self.digest();
        let new = schema.digest;
        *self.typing.schema.borrow_mut() = Some(Rc::new(schema));
        self.metrics.schema_changed();
        if self.typing.registered.get() && old != new {
            warn!(
                "RPC digest changed from {old:08x} to {new:08x}: every connection verifies again; peers still on the old schema are refused"
            );
            // links stop writing under the old ids, connections close and
            // verify again (net::Reverify)
            self.net.reverify.bump();
        }
    }

    pub(crate) fn schema(&self) -> Option<Rc<Schema>> {
        self.typing.schema.borrow().clone()
    }

    /// Delivers the outcome of an eval started by [`Control::Eval`].
    pub(crate) fn eval_done(&self, token: u64, outcome: Result<String, String>) {
        if let Some(tx) = self.lua_side.evals.borrow_mut().remove(&token) {
            let _ = tx.send(outcome);
        }
    }

    pub(crate) fn set_dispatch(&self, f: Function) {
        *self.lua_side.dispatch.borrow_mut() = Some(Rc::new(f));
    }

    /// The verified identity this node shows in a handshake, with a fresh nonce.
    pub(crate) fn identity(&self) -> crate::codec::auth::Identity {
        crate::codec::auth::Identity {
            name: self.me.name.clone(),
            sid: self.me.sid,
            stype: self.me.stype.clone(),
            digest: self.digest(),
            incarnation: self.incarnation,
            nonce: crate::codec::auth::nonce(),
        }
    }

    /// The cluster secret.
    pub(crate) fn secret(&self) -> String {
        self.cluster.borrow().secret.clone()
    }

    /// Whether a log line of `cause` (one a remote party can trigger) may be
    /// written now; see [`crate::rpc::ratelog`].
    pub(crate) fn limited(&self, cause: &'static str) -> bool {
        self.log_limit.borrow_mut().allow(cause, Instant::now())
    }

    /// Logs the summaries of rate-limited log lines whose window is over.
    pub(crate) fn log_summaries(&self) {
        let summaries = self.log_limit.borrow_mut().end_windows(Instant::now());
        for s in summaries {
            warn!("{s}");
        }
    }

    /// The record of sends handled from `sender` at `incarnation` (a new one
    /// when the sender restarted).
    pub(crate) fn send_seqs(&self, sender: &str, incarnation: u64) -> Rc<SendSeqs> {
        let mut map = self.send_seqs.borrow_mut();
        match map.get(sender) {
            Some(s) if s.incarnation == incarnation => s.clone(),
            _ => {
                let s = Rc::new(SendSeqs::new(incarnation));
                map.insert(sender.to_string(), s.clone());
                s
            }
        }
    }

    /// Node `sid` reported its load over its link.
    pub(crate) fn set_peer_load(&self, sid: u32, load: i64) {
        self.loads.peers.borrow_mut().insert(sid, load);
    }

    /// Tells every connected peer this node's new load (static discovery;
    /// with ZooKeeper the znode carries it too).
    pub(crate) fn publish_load(&self) {
        let load = self.loads.mine.get();
        for p in self.routing.peers.borrow().values() {
            if !p.is_self && p.reconnect.borrow().state() == PeerState::Connected {
                p.link.push(|o| proto::put_load(o, load));
            }
        }
    }

    /// Marks `peer` live or not: rings, log, and `Event.Server.Online/Offline`.
    pub(crate) fn set_online(&self, peer: &Peer, online: bool) {
        if peer.online.replace(online) == online {
            return;
        }
        let Some(stype) = self.type_id(&peer.spec.stype) else {
            return;
        };
        if online {
            self.routing.rings.borrow_mut().add(stype, peer.spec.sid);
            info!(
                "{} ({}, sid {}) is online",
                peer.spec.name, peer.spec.stype, peer.spec.sid
            );
        } else {
            self.routing.rings.borrow_mut().remove(stype, peer.spec.sid);
            warn!(
                "{} ({}, sid {}) is offline",
                peer.spec.name, peer.spec.stype, peer.spec.sid
            );
        }
        let mut mv = MultiValue::with_capacity(4);
        mv.push_back(Value::Integer(if online {
            Dispatch::Online.id()
        } else {
            Dispatch::Offline.id()
        }));
        mv.push_back(Value::Integer(peer.spec.sid as i64));
        for s in [&peer.spec.stype, &peer.spec.name] {
            match self.lua.create_string(s) {
                Ok(s) => mv.push_back(Value::String(s)),
                Err(_) => mv.push_back(Value::Nil),
            }
        }
        self.call_lua(mv);
        if !online {
            self.gate_backend_lost(peer.spec.sid);
        }
    }

    /// This node joins or leaves its own ring (and Lua hears of it).
    pub(crate) fn set_self_online(&self, online: bool) {
        if let Some(me) = self.peer(self.me.sid) {
            self.set_online(&me, online);
        }
    }

    /// The server type names of the schema.
    pub(crate) fn type_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.typing.type_ids.borrow().keys().cloned().collect();
        v.sort();
        v
    }

    /// What this node publishes about itself in ZooKeeper.
    pub(crate) fn registration(&self) -> crate::discovery::zk::Registration {
        crate::discovery::zk::Registration {
            name: self.me.name.clone(),
            sid: self.me.sid,
            stype: self.me.stype.clone(),
            addr: self.me.addr.to_string(),
            pid: std::process::id(),
            digest: self.digest(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            load: self.loads.mine.get(),
            incarnation: self.incarnation,
        }
    }

    /// True when peers come from ZooKeeper.
    pub(crate) fn zk_mode(&self) -> bool {
        self.cluster.borrow().zookeeper.is_some()
    }

    /// Sets the sampled gauges of the node's metrics (`mailbox`: messages
    /// waiting in its control mailbox).
    pub(crate) fn sample_metrics(&self, mailbox: usize) {
        let mut s = crate::metrics::Sample {
            mailbox: mailbox as u64,
            inbound: self.net.inbound.borrow().len() as u64,
            lua_memory: self.lua.used_memory() as u64,
            ..Default::default()
        };
        for p in self.routing.peers.borrow().values() {
            s.calls_waiting += p.pending.borrow().len() as u64;
            s.queued_bytes += p.link.held() as u64;
            if !p.is_self {
                s.peers += 1;
                if p.reconnect.borrow().state() == PeerState::Connected {
                    s.peers_connected += 1;
                }
            }
        }
        if let Some(g) = &self.gate {
            s.clients = Some(g.conns.borrow().len() as u64);
            s.sessions = Some(g.sessions.borrow().len() as u64);
        }
        self.metrics.sample(&s);
    }

    /// Stops the node because it cannot go on (the reason reaches
    /// [`NodeHandle::failure`]).
    pub(crate) fn fail(&self, reason: String) {
        if let Ok(mut f) = self.stop.failure.lock() {
            *f = Some(reason);
        }
        self.stop.signal.request();
    }
}

/// The load this node reports (`router.setLoad`), and the loads other nodes
/// report (through ZooKeeper or their links), by sid.
#[derive(Debug, Default)]
pub(crate) struct Loads {
    /// This node's.
    pub(crate) mine: Cell<i64>,
    /// Other nodes', by sid.
    pub(crate) peers: RefCell<HashMap<u32, i64>>,
    /// Calls and sends this node has handled (for its ops record).
    pub(crate) handled: Cell<u64>,
}

/// What the node knows of the schema: the compiled schema, this node's
/// server type id, every type's id, and whether it registered.
#[derive(Debug, Default)]
pub(crate) struct Typing {
    /// The compiled schema, once `rpcdef.init` ran.
    pub(crate) schema: RefCell<Option<Rc<Schema>>>,
    /// This node's server type id.
    pub(crate) my_type: Cell<u32>,
    /// Server type ids by name.
    pub(crate) type_ids: RefCell<HashMap<String, u32>>,
    /// Whether `base.init` registered the node.
    pub(crate) registered: Cell<bool>,
}

/// The Lua dispatcher, and the evals of controlling threads waiting for
/// their outcome.
#[derive(Debug, Default)]
pub(crate) struct LuaSide {
    /// `rpcco.dispatch`.
    pub(crate) dispatch: RefCell<Option<Rc<Function>>>,
    /// Evals waiting, by token.
    pub(crate) evals: RefCell<HashMap<u64, std::sync::mpsc::Sender<Result<String, String>>>>,
}

/// The peers of the node, the routing rings of live ones, and the ids of
/// calls to them.
#[derive(Default)]
pub(crate) struct Routing {
    /// Every peer (this node included), by sid.
    pub(crate) peers: RefCell<HashMap<u32, Rc<Peer>>>,
    /// Rings of live servers by type.
    pub(crate) rings: RefCell<Rings>,
    /// Call ids.
    pub(crate) call_ids: RefCell<CallIds>,
    /// Ids of store operations in flight (they share the call ids: their
    /// outcomes reach Lua as replies).
    pub(crate) db_pending: RefCell<std::collections::HashSet<u32>>,
    /// DbCtl calls this DB node is serving (started on the store, not yet
    /// answered): a graceful stop waits for them.
    pub(crate) db_serving: Cell<usize>,
    /// Woken when `db_serving` falls to 0.
    pub(crate) db_served: tokio::sync::Notify,
}
