//! The node runtime: one Lua state on one OS thread, with a current-thread
//! tokio runtime beside it that drives the node's own sockets and timers.
//!
//! Nothing here is shared between threads except the control channel of
//! [`NodeHandle`]. A frame read from a socket is decoded and handed to the
//! Lua dispatcher on the same thread, without a thread hop; Lua's sends are
//! appended to the peer's output buffer and flushed by that peer's writer task
//! once the current burst of work is done (one write per burst, not per
//! message).
//!
//! Every entry into Lua comes from a task of this thread's `LocalSet`, never
//! from inside a Lua callback, so Lua is never re-entered.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mlua::{Function, Lua, MultiValue, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::codec::mpack::Reader;
use crate::codec::proto::{self, Envelope};
use crate::codec::wire::{self, FrameDecoder, Message};
use crate::discovery::config::{ClusterConfig, NodeSpec};
use crate::discovery::{DiscoveryHost, DiscoverySignals};
use crate::lua::LuaHost;
use crate::net::link::Link;
use crate::net::transport;
use crate::net::{NetHost, NetPeer, NetSettings, NetState};
use crate::rpc::acks::SendSeqs;
use crate::rpc::error::{CallError, RemoteFault};
use crate::rpc::membership;
use crate::rpc::pending::{CallIds, Calls};
use crate::rpc::reconnect::Reconnect;
use crate::rpc::ring::Rings;
use crate::schema::{self, Method, Schema};

/// Capacity of a node's control mailbox (messages from other threads).
pub const CONTROL_MAILBOX: usize = 256;
pub use crate::rpc::MAX_DELAY;
/// How often waiting calls are checked against their deadlines.
const DEADLINE_TICK: Duration = Duration::from_millis(10);
/// Timer ids start here so they never meet call ids (u32, the frame session).
const FIRST_TIMER_ID: u64 = 1 << 32;

/// Kinds of dispatch into Lua (first argument of the Lua dispatcher).
pub mod kind {
    /// `(CALL, conn, session, eid, mid, args...)`
    pub const CALL: i64 = 1;
    /// `(SEND, src, 0, eid, mid, args...)`
    pub const SEND: i64 = 2;
    /// `(REPLY, id, ok, results... | errtext)`
    pub const REPLY: i64 = 3;
    /// `(TIMER, id)`
    pub const TIMER: i64 = 4;
    /// `(ONLINE, sid, type, name)`
    pub const ONLINE: i64 = 5;
    /// `(OFFLINE, sid, type, name)`
    pub const OFFLINE: i64 = 6;
    /// `(EVAL, token, code)`
    pub const EVAL: i64 = 7;
    /// `(RELOAD, paths | nil)`
    pub const RELOAD: i64 = 8;
    /// `(LOST, sid, type, name, {[method] = count}, cause)`: sends to that
    /// node that will not be delivered (or may not have been handled).
    pub const LOST: i64 = 9;
    /// `(STOP, grace_secs)`: a graceful stop began
    pub const STOP: i64 = 10;
}

/// Stop requests to a node: the first starts a graceful stop, a second
/// ends the node at once.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    requests: AtomicU32,
    wake: Notify,
}

impl StopSignal {
    fn request(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn count(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Returns once at least `n` stops were requested.
    async fn at_least(&self, n: u32) {
        while self.count() < n {
            self.wake.notified().await;
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The cluster file has no node of that name.
    #[error("no node named '{0}' in the cluster file")]
    UnknownNode(String),
    /// Its listen address could not be bound.
    #[error("node {node}: cannot listen on {addr}: {source}")]
    Bind {
        /// Node name.
        node: String,
        /// Address tried.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// Its scripts failed to load or raised while starting.
    #[error("node {node}: {message}")]
    Script {
        /// Node name.
        node: String,
        /// The Lua error with traceback.
        message: String,
    },
    /// The runtime thread could not be created.
    #[error("node {node}: {source}")]
    Thread {
        /// Node name.
        node: String,
        /// OS error.
        source: std::io::Error,
    },
}

/// Messages from other threads to a running node.
#[derive(Debug)]
pub enum Control {
    /// Re-read the cluster file now (as when it changes on disk).
    ReloadCluster,
    /// Hot-reload every loaded Lua module whose file changed.
    ReloadScripts,
    /// Run a Lua chunk in a new coroutine of the node (it may make remote
    /// calls) and send back its results as text, tab-separated, or its error.
    Eval {
        /// The chunk.
        code: String,
        /// Where the outcome goes.
        reply: std::sync::mpsc::Sender<Result<String, String>>,
    },
}

/// A node running on its own thread.
#[derive(Debug)]
pub struct NodeHandle {
    name: String,
    ctrl: mpsc::Sender<Control>,
    stop: Arc<StopSignal>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeHandle {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why the node stopped on its own (e.g. ZooKeeper refused its
    /// credentials), if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Asks the node to stop (returns at once). The first request starts a
    /// graceful stop: new calls are refused (`node down: <node>: stopping`),
    /// handlers already running get up to `stop_grace` to finish and reply,
    /// then the `base.onStop` handlers run (in a coroutine; they may make
    /// calls; up to `stop_grace` again), then the node closes its
    /// connections and its thread ends. A second request ends it at once.
    pub fn stop(&self) {
        self.stop.request();
    }

    /// Stops the node at once, without the graceful steps of [`NodeHandle::stop`].
    pub fn stop_now(&self) {
        self.stop.request();
        self.stop.request();
    }

    /// True once the node's thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Asks the node to hot-reload its changed scripts.
    pub fn reload_scripts(&self) {
        let _ = self.ctrl.try_send(Control::ReloadScripts);
    }

    /// Asks the node to re-read its cluster file.
    pub fn reload_cluster(&self) {
        let _ = self.ctrl.try_send(Control::ReloadCluster);
    }

    /// Runs `code` in the node (see [`Control::Eval`]) and waits up to
    /// `timeout` for its outcome. Meant for tests, tools and bots.
    ///
    /// # Errors
    ///
    /// The Lua error (with traceback) or a timeout message.
    pub fn eval(&self, code: &str, timeout: Duration) -> Result<String, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.ctrl
            .try_send(Control::Eval {
                code: code.to_string(),
                reply: tx,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => format!("node {}: control mailbox is full", self.name),
                mpsc::error::TrySendError::Closed(_) => format!("node {} is not running", self.name),
            })?;
        rx.recv_timeout(timeout)
            .map_err(|_| format!("eval on {} did not finish within {timeout:?}", self.name))?
    }

    /// Stops the node gracefully ([`NodeHandle::stop`]) and waits for its
    /// thread to end.
    pub fn shutdown(mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Waits until the node's thread ends (after [`NodeHandle::stop`] or a fatal error).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Dropping a handle stops its node at once (use [`NodeHandle::shutdown`]
/// for a graceful stop).
impl Drop for NodeHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_now();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts node `name` of `cluster` on a new thread and waits until its main
/// script has run and it listens.
///
/// # Errors
///
/// [`NodeError`] if the node is unknown, cannot bind, or its scripts fail.
pub fn start(cluster: Arc<ClusterConfig>, name: &str) -> Result<NodeHandle, NodeError> {
    start_with(cluster, name, NodeOptions::default())
}

/// How a node runs.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Watch the script folders and hot-reload changed modules.
    pub watch_scripts: bool,
    /// Nodes of this process that talk in memory instead of over loopback
    /// TCP (shared by the nodes a [`LocalCluster`](crate::cluster::LocalCluster) starts).
    pub local: Option<Arc<crate::net::stream::LocalNet>>,
}

/// [`start`] with options.
///
/// # Errors
///
/// As [`start`].
pub fn start_with(cluster: Arc<ClusterConfig>, name: &str, opts: NodeOptions) -> Result<NodeHandle, NodeError> {
    let spec = cluster
        .nodes
        .get(name)
        .cloned()
        .ok_or_else(|| NodeError::UnknownNode(name.to_string()))?;
    let (ctrl_tx, ctrl_rx) = mpsc::channel(CONTROL_MAILBOX);
    let stop = Arc::new(StopSignal::default());
    let stop_rx = stop.clone();
    let failure = Arc::new(std::sync::Mutex::new(None));
    let failure_in = failure.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread_name = spec.name.clone();
    let thread = std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(NodeError::Thread {
                        node: spec.name.clone(),
                        source: e,
                    }));
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                match Core::boot(cluster, spec, stop_rx.clone(), failure_in, opts.local.clone()).await {
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                    Ok(core) => {
                        let _ = ready_tx.send(Ok(()));
                        core.run(ctrl_rx, stop_rx, opts).await;
                    }
                }
            });
        })
        .map_err(|e| NodeError::Thread {
            node: thread_name.clone(),
            source: e,
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(NodeHandle {
            name: thread_name,
            ctrl: ctrl_tx,
            stop,
            failure,
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(NodeError::Script {
                node: thread_name,
                message: "node thread ended while starting".into(),
            })
        }
    }
}

pub use crate::net::PeerState;

/// Outgoing side towards one other node (or this node itself).
pub(crate) struct Peer {
    pub(crate) spec: NodeSpec,
    /// Connect state and backoff (seed 003's states).
    pub(crate) reconnect: RefCell<Reconnect>,
    /// Sequence number of the next send to this peer.
    next_seq: Cell<u32>,
    /// Incarnation of the peer at the last verified connection (0: none yet).
    incarnation: Cell<u64>,
    /// Messages to write; while not connected, the bounded wait queue.
    pub(crate) link: Link,
    /// Calls waiting for a reply over this peer, by call id.
    pending: RefCell<Calls>,
    pub(crate) kick: Notify,
    online: Cell<bool>,
    is_self: bool,
    task: RefCell<Option<tokio::task::JoinHandle<()>>>,
    /// Since when discovery no longer lists this peer while it is still connected.
    missing_since: Cell<Option<Instant>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Lua(u64),
    SelfOnline,
}

/// Everything a node thread owns. Lua callbacks hold a `Weak` to it.
pub(crate) struct Core {
    pub(crate) lua: Lua,
    pub(crate) me: NodeSpec,
    pub(crate) cluster: RefCell<Arc<ClusterConfig>>,
    started: Instant,
    pub(crate) my_type: Cell<u32>,
    type_ids: RefCell<HashMap<String, u32>>,
    schema: RefCell<Option<Rc<Schema>>>,
    dispatch: RefCell<Option<Rc<Function>>>,
    peers: RefCell<HashMap<u32, Rc<Peer>>>,
    /// Accepted connections and the in-process network.
    pub(crate) net: NetState,
    call_ids: RefCell<CallIds>,
    next_timer: Cell<u64>,
    timers: RefCell<BinaryHeap<Reverse<(Instant, u64, TimerKind)>>>,
    cancelled: RefCell<HashSet<u64>>,
    timer_wake: Notify,
    pub(crate) rings: RefCell<Rings>,
    registered: Cell<bool>,
    listener: RefCell<Option<TcpListener>>,
    evals: RefCell<HashMap<u64, std::sync::mpsc::Sender<Result<String, String>>>>,
    watcher: RefCell<Option<notify::RecommendedWatcher>>,
    script_watcher: RefCell<Option<notify::RecommendedWatcher>>,
    stop: Arc<StopSignal>,
    failure: Arc<std::sync::Mutex<Option<String>>>,
    /// Set when a graceful stop begins: incoming calls and sends are refused.
    stopping: Cell<bool>,
    /// How far Lua is in a graceful stop (`core.stop_phase`: 1 onStop
    /// handlers running, 2 done), and the wake-up when it moves on.
    pub(crate) stop_phase: Cell<u8>,
    pub(crate) stop_wake: Notify,
    /// Asks the ZooKeeper task to delete this node's znode (a graceful
    /// stop), and its answer.
    /// Wake-ups between the node and its ZooKeeper session.
    pub(crate) discovery: DiscoverySignals,
    /// In-memory connections to nodes of this process, if enabled.
    local_rx: RefCell<Option<mpsc::UnboundedReceiver<crate::net::stream::MemConn>>>,
    /// Bumped when the RPC digest changes after registration: connections
    /// verified under an older schema close and verify again.
    pub(crate) schema_gen: Cell<u64>,
    /// Lua timers scheduled and not yet fired.
    lua_timers: RefCell<HashSet<u64>>,
    /// The load this node reports (`router.setLoad`), and a wake-up for the
    /// ZooKeeper task to publish it.
    pub(crate) load: Cell<i64>,
    /// Loads other nodes report (through ZooKeeper or their links), by sid.
    pub(crate) loads: RefCell<HashMap<u32, i64>>,
    /// Random number of this process start (tells a restarted node apart).
    pub(crate) incarnation: u64,
    /// Rate limits of log lines remote parties can cause.
    log_limit: RefCell<crate::rpc::ratelog::LogLimit>,
    /// The last send handled from each sender, by name (duplicates resent
    /// after a reconnect are dropped).
    send_seqs: RefCell<HashMap<String, Rc<SendSeqs>>>,
}

/// Connection id Lua uses for calls from this node to itself.
const SELF_CONN: u64 = 0;

impl Core {
    async fn boot(
        cluster: Arc<ClusterConfig>,
        me: NodeSpec,
        stop: Arc<StopSignal>,
        failure: Arc<std::sync::Mutex<Option<String>>>,
        local: Option<Arc<crate::net::stream::LocalNet>>,
    ) -> Result<Rc<Core>, NodeError> {
        let listener = TcpListener::bind(me.addr).await.map_err(|source| NodeError::Bind {
            node: me.name.clone(),
            addr: me.addr,
            source,
        })?;
        // SAFETY: the debug library is needed for tracebacks and hot reload
        // of upvalues; scripts are the game's own trusted code, and no network
        // data is ever loaded as code.
        let lua = unsafe {
            Lua::unsafe_new_with(
                mlua::StdLib::ALL_SAFE | mlua::StdLib::DEBUG,
                mlua::LuaOptions::default(),
            )
        };
        let core = Rc::new(Core {
            lua,
            me: me.clone(),
            cluster: RefCell::new(cluster.clone()),
            started: Instant::now(),
            my_type: Cell::new(0),
            type_ids: RefCell::new(HashMap::new()),
            schema: RefCell::new(None),
            dispatch: RefCell::new(None),
            peers: RefCell::new(HashMap::new()),
            net: NetState {
                next_conn: Cell::new(1),
                local: local.clone(),
                ..NetState::default()
            },
            call_ids: RefCell::new(CallIds::new()),
            next_timer: Cell::new(FIRST_TIMER_ID),
            timers: RefCell::new(BinaryHeap::new()),
            cancelled: RefCell::new(HashSet::new()),
            timer_wake: Notify::new(),
            rings: RefCell::new(Rings::default()),
            registered: Cell::new(false),
            listener: RefCell::new(Some(listener)),
            evals: RefCell::new(HashMap::new()),
            watcher: RefCell::new(None),
            script_watcher: RefCell::new(None),
            stop,
            failure,
            stopping: Cell::new(false),
            stop_phase: Cell::new(0),
            stop_wake: Notify::new(),
            discovery: DiscoverySignals::default(),
            local_rx: RefCell::new(local.as_ref().map(|net| net.listen(me.addr))),
            schema_gen: Cell::new(0),
            lua_timers: RefCell::new(HashSet::new()),
            load: Cell::new(0),
            loads: RefCell::new(HashMap::new()),
            incarnation: crate::codec::auth::incarnation(),
            log_limit: RefCell::new(crate::rpc::ratelog::LogLimit::default()),
            send_seqs: RefCell::new(HashMap::new()),
        });
        // With ZooKeeper the peers are discovered; the file only describes this node.
        for spec in cluster.nodes.values() {
            if cluster.zookeeper.is_none() || spec.sid == me.sid {
                core.add_peer(spec.clone());
            }
        }
        let script_err = |e: mlua::Error| NodeError::Script {
            node: me.name.clone(),
            message: e.to_string(),
        };
        crate::lua::api::install(&core.lua, &core, &cluster).map_err(script_err)?;
        tokio::task::spawn_local(timer_task(core.clone()));
        tokio::task::spawn_local(deadline_task(core.clone()));
        tokio::task::spawn_local(log_summary_task(core.clone()));
        let main = std::fs::read_to_string(&me.main).map_err(|e| NodeError::Script {
            node: me.name.clone(),
            message: format!("cannot read {}: {e}", me.main.display()),
        })?;
        let chunk = core.lua.load(main).set_name(format!("@{}", me.main.display()));
        chunk.exec().map_err(script_err)?;
        info!(
            "node {} (sid {}, type {}) listening on {}",
            me.name, me.sid, me.stype, me.addr
        );
        if let Some(w) = cluster.secret_warning() {
            warn!("node {}: {w}", me.name);
        }
        Ok(core)
    }

    async fn run(self: Rc<Self>, mut ctrl: mpsc::Receiver<Control>, stop: Arc<StopSignal>, opts: NodeOptions) {
        let listener = self.listener.borrow_mut().take();
        if let Some(listener) = listener {
            let local = self.local_rx.borrow_mut().take();
            tokio::task::spawn_local(transport::accept_task(self.clone(), listener, local));
        }
        let (file_tx, file_rx) = mpsc::unbounded_channel();
        self.watch_cluster_file(file_tx);
        tokio::task::spawn_local(cluster_watch_task(self.clone(), file_rx));
        if opts.watch_scripts {
            let (tx, rx) = mpsc::unbounded_channel();
            self.watch_scripts(tx);
            tokio::task::spawn_local(script_watch_task(self.clone(), rx));
        }
        loop {
            let msg = tokio::select! {
                _ = stop.at_least(1) => break,
                m = ctrl.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            match msg {
                Control::ReloadCluster => {
                    let _ = self.reload_cluster();
                }
                Control::ReloadScripts => self.reload_scripts(None),
                Control::Eval { code, reply } => {
                    let token = self.next_timer_id();
                    self.evals.borrow_mut().insert(token, reply);
                    if self.dispatch.borrow().is_none() {
                        self.eval_done(token, Err("base.init has not run on this node".into()));
                        continue;
                    }
                    let mut mv = MultiValue::with_capacity(3);
                    mv.push_back(Value::Integer(kind::EVAL));
                    mv.push_back(Value::Integer(token as i64));
                    match self.lua.create_string(&code) {
                        Ok(s) => mv.push_back(Value::String(s)),
                        Err(e) => {
                            self.eval_done(token, Err(e.to_string()));
                            continue;
                        }
                    }
                    self.call_lua(mv);
                }
            }
        }
        self.graceful_stop(&stop).await;
        info!("node {} stopping", self.me.name);
        let failed = self.failure.lock().map(|f| f.is_some()).unwrap_or(true);
        if self.zk_mode() && self.registered.get() && stop.count() < 2 && !failed {
            self.discovery.leave.notify_one();
            tokio::select! {
                _ = self.discovery.left.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {
                    warn!("could not leave ZooKeeper within 2 s; the znode goes when the session ends")
                }
                _ = stop.at_least(2) => {}
            }
        }
        if let Some(net) = &self.net.local {
            net.unlisten(self.me.addr);
        }
        self.watcher.borrow_mut().take();
        self.script_watcher.borrow_mut().take();
        let peers: Vec<Rc<Peer>> = self.peers.borrow().values().cloned().collect();
        for p in peers {
            if let Some(t) = p.task.borrow_mut().take() {
                t.abort();
            }
            if !p.is_self {
                let lost = p.link.drain_unsent();
                if !lost.sends.is_empty() {
                    let list: Vec<String> = lost
                        .sends
                        .iter()
                        .map(|(mid, n)| format!("{n} x {}", self.method_name(*mid)))
                        .collect();
                    error!(
                        "{} sends to {} not delivered or not acknowledged when this node stopped: {}",
                        lost.total(),
                        p.spec.name,
                        list.join(", ")
                    );
                }
            }
        }
        self.log_summaries();
        // Break the Lua -> Rust cycle so the state can be freed.
        self.dispatch.borrow_mut().take();
    }

    /// The graceful part of a stop (see [`NodeHandle::stop`]): refuse new
    /// work, let Lua wait for its handlers and run the onStop handlers, each
    /// step bounded by `stop_grace`; a second stop request cuts it short.
    async fn graceful_stop(&self, stop: &StopSignal) {
        if stop.count() >= 2 || self.dispatch.borrow().is_none() {
            return;
        }
        self.stopping.set(true);
        let grace = self.cluster.borrow().stop_grace;
        info!(
            "stopping: handlers running get up to {:.1} s to finish, then onStop runs (stop again to end at once)",
            grace.as_secs_f64()
        );
        let mut mv = MultiValue::with_capacity(2);
        mv.push_back(Value::Integer(kind::STOP));
        mv.push_back(Value::Number(grace.as_secs_f64()));
        self.call_lua(mv);
        // Lua bounds the wait for handlers itself; the margin covers its
        // polling, the deadline moves when the onStop handlers start.
        let mut deadline = Instant::now() + grace + Duration::from_millis(200);
        let mut phase = 0;
        while self.stop_phase.get() < 2 {
            if self.stop_phase.get() != phase {
                phase = self.stop_phase.get();
                deadline = Instant::now() + grace;
            }
            tokio::select! {
                _ = self.stop_wake.notified() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(
                        "{} did not finish within stop_grace; stopping anyway",
                        if phase == 0 { "handlers" } else { "onStop handlers" }
                    );
                    return;
                }
                _ = stop.at_least(2) => {
                    warn!("stopped again: stopping at once");
                    return;
                }
            }
        }
    }

    fn add_peer(self: &Rc<Self>, spec: NodeSpec) -> Rc<Peer> {
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
            online: Cell::new(false),
            is_self,
            task: RefCell::new(None),
            missing_since: Cell::new(None),
        });
        self.peers.borrow_mut().insert(peer.spec.sid, peer.clone());
        peer
    }

    fn start_peer(self: &Rc<Self>, peer: &Rc<Peer>) {
        if !peer.is_self {
            let handle = tokio::task::spawn_local(transport::peer_task(self.clone(), peer.clone()));
            *peer.task.borrow_mut() = Some(handle);
        }
    }

    /// Takes a peer out of the cluster: its connection closes, its calls
    /// fail, and it goes offline.
    fn remove_peer(self: &Rc<Self>, sid: u32, why: &str) {
        let Some(peer) = self.peers.borrow_mut().remove(&sid) else {
            return;
        };
        self.loads.borrow_mut().remove(&sid);
        if let Some(t) = peer.task.borrow_mut().take() {
            t.abort();
        }
        self.set_online(&peer, false);
        self.fail_peer(&peer, why);
    }

    fn peer(&self, sid: u32) -> Option<Rc<Peer>> {
        self.peers.borrow().get(&sid).cloned()
    }

    /// Every node of the cluster, by name.
    pub(crate) fn all_specs(&self) -> Vec<NodeSpec> {
        let mut v: Vec<NodeSpec> = self.peers.borrow().values().map(|p| p.spec.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The spec of node `sid`, if the cluster has it.
    pub(crate) fn node_spec(&self, sid: u32) -> Option<NodeSpec> {
        self.peer(sid).map(|p| p.spec.clone())
    }

    pub(crate) fn type_id(&self, name: &str) -> Option<u32> {
        self.type_ids.borrow().get(name).copied()
    }

    /// Monotonic seconds since the node started.
    pub(crate) fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// `rpcdef.Digi`, or 0 before `rpcdef.init`.
    pub(crate) fn digest(&self) -> u32 {
        self.schema.borrow().as_ref().map(|s| s.digest).unwrap_or(0)
    }

    pub(crate) fn set_schema(&self, schema: Schema) {
        let old = self.digest();
        let new = schema.digest;
        *self.schema.borrow_mut() = Some(Rc::new(schema));
        if self.registered.get() && old != new {
            warn!(
                "RPC digest changed from {old:08x} to {new:08x}: every connection verifies again; peers still on the old schema are refused"
            );
            self.schema_gen.set(self.schema_gen.get() + 1);
            for p in self.peers.borrow().values() {
                if !p.is_self {
                    // nothing more goes out under the old ids
                    p.link.stale.set(true);
                }
                p.link.wake.notify_one();
            }
            for l in self.net.inbound.borrow().values() {
                l.wake.notify_one();
            }
        }
    }

    pub(crate) fn schema(&self) -> Option<Rc<Schema>> {
        self.schema.borrow().clone()
    }

    /// Delivers the outcome of an eval started by [`Control::Eval`].
    pub(crate) fn eval_done(&self, token: u64, outcome: Result<String, String>) {
        if let Some(tx) = self.evals.borrow_mut().remove(&token) {
            let _ = tx.send(outcome);
        }
    }

    pub(crate) fn set_dispatch(&self, f: Function) {
        *self.dispatch.borrow_mut() = Some(Rc::new(f));
    }

    /// Registers the node with the (static) discovery: it joins its ring, and
    /// connections to every other node of the cluster start.
    pub(crate) fn register(self: &Rc<Self>, types: HashMap<String, u32>) -> Result<(), String> {
        let my_type = *types.get(&self.me.stype).ok_or_else(|| {
            format!(
                "node {} has type '{}', which ServerType of the schema does not define",
                self.me.name, self.me.stype
            )
        })?;
        for p in self.peers.borrow().values() {
            if !types.contains_key(&p.spec.stype) {
                return Err(format!(
                    "node {} in the cluster file has type '{}', which ServerType of the schema does not define",
                    p.spec.name, p.spec.stype
                ));
            }
        }
        if self.registered.replace(true) {
            return Ok(());
        }
        self.my_type.set(my_type);
        *self.type_ids.borrow_mut() = types;
        let peers: Vec<Rc<Peer>> = self.peers.borrow().values().cloned().collect();
        for p in peers {
            self.start_peer(&p);
        }
        if let Some(me) = self.peer(self.me.sid) {
            tokio::task::spawn_local(self_task(self.clone(), me));
        }
        let zk = self.cluster.borrow().zookeeper.clone();
        match zk {
            // online once registered in ZooKeeper
            Some(cfg) => {
                tokio::task::spawn_local(crate::discovery::zk::zk_task(self.clone(), cfg));
            }
            None => self.push_timer(Instant::now(), TimerKind::SelfOnline),
        }
        Ok(())
    }

    fn next_timer_id(&self) -> u64 {
        let id = self.next_timer.get();
        self.next_timer.set(id + 1);
        id
    }

    fn push_timer(&self, at: Instant, kind: TimerKind) {
        let seq = self.next_timer_id();
        let mut heap = self.timers.borrow_mut();
        let earlier = heap.peek().is_none_or(|Reverse((t, _, _))| at < *t);
        heap.push(Reverse((at, seq, kind)));
        drop(heap);
        if earlier {
            self.timer_wake.notify_one();
        }
    }

    /// Starts a Lua timer; its id comes back through the dispatcher.
    pub(crate) fn add_timer(&self, after: Duration) -> u64 {
        let id = self.next_timer_id();
        self.lua_timers.borrow_mut().insert(id);
        self.push_timer(Instant::now() + after.min(MAX_DELAY), TimerKind::Lua(id));
        id
    }

    /// Stops a Lua timer before it fires.
    pub(crate) fn cancel_timer(&self, id: u64) {
        if self.lua_timers.borrow_mut().remove(&id) {
            self.cancelled.borrow_mut().insert(id);
        }
    }

    /// Encodes a call or send into the queue of node `sid`.
    /// Returns the call id (0 for sends).
    pub(crate) fn request(
        &self,
        sid: u32,
        eid: i64,
        mid: u32,
        timeout: Option<Duration>,
        call: bool,
        args: &[Value],
    ) -> Result<u32, CallError> {
        let schema = self.schema().ok_or(CallError::NoSchema)?;
        let method = schema.method(mid).ok_or(CallError::UnknownMethod(mid))?;
        if call != method.results.is_some() {
            return Err(CallError::WrongKind {
                method: method.name.clone(),
                called: call,
            });
        }
        let Some(peer) = self.peer(sid) else {
            return Err(CallError::NoSuchNode {
                sid,
                method: method.name.clone(),
            });
        };
        let (max_message, max_queue) = {
            let c = self.cluster.borrow();
            (c.max_message, c.max_queue)
        };
        let held = peer.link.held();
        if held > max_queue {
            return Err(CallError::Busy {
                node: peer.spec.name.clone(),
                held,
                max_queue,
                method: method.name.clone(),
            });
        }
        let (id, req) = if call {
            // (ids pending towards other peers cannot come round again
            // within any call's timeout)
            let id = self
                .call_ids
                .borrow_mut()
                .next(|id| peer.pending.borrow().contains(id))
                .ok_or_else(|| CallError::Busy {
                    node: peer.spec.name.clone(),
                    held,
                    max_queue,
                    method: method.name.clone(),
                })?;
            (id, crate::net::link::Req::Call(id))
        } else {
            let seq = peer.next_seq.get();
            (seq, crate::net::link::Req::Send { seq, mid })
        };
        peer.link.push_request(req, |out| {
            let start = proto::begin_request(out, call, eid, mid, method.args.len());
            if let Err(e) = schema::encode_list(out, method, &method.args, "argument", args.iter()) {
                wire::abort_message(out, start);
                return Err(CallError::Encoding(e));
            }
            let size = out.len() - start - wire::HEADER;
            if size > max_message {
                wire::abort_message(out, start);
                return Err(CallError::TooLarge {
                    method: method.name.clone(),
                    node: peer.spec.name.clone(),
                    size,
                    max: max_message,
                });
            }
            wire::finish_message(out, start, id);
            Ok(())
        })?;
        if !call {
            peer.next_seq.set(id.wrapping_add(1));
        }
        peer.link.wake.notify_one();
        peer.link.flush_if_large();
        let id = if call { id } else { 0 };
        if call {
            let t = timeout.unwrap_or_else(|| self.cluster.borrow().call_timeout);
            peer.pending.borrow_mut().insert(id, mid, t, Instant::now());
        }
        if peer.reconnect.borrow_mut().kick(Instant::now()).is_some() {
            peer.kick.notify_one();
        }
        Ok(id)
    }

    /// Encodes the reply to call `session` that arrived on connection `conn`.
    pub(crate) fn reply(&self, conn: u64, session: u32, mid: u32, ok: bool, vals: &[Value]) -> Result<(), String> {
        let schema = self.schema().ok_or("no schema")?;
        let method = schema.method(mid).ok_or_else(|| format!("unknown method id {mid}"))?;
        let max_message = self.cluster.borrow().max_message;
        let me_peer;
        let inbound_link;
        let link: &Link = if conn == SELF_CONN {
            // A call to ourselves: the reply goes through the self peer's queue.
            me_peer = self.peer(self.me.sid).ok_or("this node is not in its cluster file")?;
            &me_peer.link
        } else {
            let Some(l) = self.net.inbound.borrow().get(&conn).cloned() else {
                debug!("reply to call {session} dropped: its caller's connection is gone");
                return Ok(());
            };
            inbound_link = l;
            &inbound_link
        };
        encode_reply(&mut link.out.borrow_mut(), session, method, ok, vals, max_message);
        link.wake.notify_one();
        link.flush_if_large();
        Ok(())
    }

    fn call_lua(&self, args: MultiValue) {
        let f = self.dispatch.borrow().clone();
        if let Some(f) = f {
            if let Err(e) = f.call::<()>(args) {
                error!("Lua dispatcher failed: {e}");
            }
        }
    }

    /// Ends call `id` with `err`: Lua gets its text (which starts with its
    /// kind) and the kind itself.
    fn fail_call(&self, id: u32, err: CallError) {
        let mut args = MultiValue::with_capacity(5);
        args.push_back(Value::Integer(kind::REPLY));
        args.push_back(Value::Integer(id as i64));
        args.push_back(Value::Boolean(false));
        match self.lua.create_string(err.to_string()) {
            Ok(s) => args.push_back(Value::String(s)),
            Err(_) => args.push_back(Value::Nil),
        }
        match err.kind().map(|k| self.lua.create_string(k)) {
            Some(Ok(k)) => args.push_back(Value::String(k)),
            _ => args.push_back(Value::Nil),
        }
        self.call_lua(args);
    }

    /// "node down" for call `mid` to `peer`.
    fn node_down(&self, peer: &Peer, cause: &str, mid: u32) -> CallError {
        CallError::NodeDown {
            node: peer.spec.name.clone(),
            cause: cause.to_string(),
            method: self.method_name(mid),
        }
    }

    /// Handles a request (call or send) that arrived on `conn` from `from`.
    /// Returns false when it was not handled because this node is stopping
    /// (a send then stays unacknowledged, so its sender reports it).
    pub(crate) fn on_request(
        &self,
        conn: u64,
        from: &str,
        msg: &Message,
        env: Envelope<'_>,
        link: Option<&Link>,
    ) -> bool {
        let (is_call, eid, mid, nargs, mut args) = match env {
            Envelope::Call { eid, mid, nargs, args } => (true, eid, mid, nargs, args),
            Envelope::Send { eid, mid, nargs, args } => (false, eid, mid, nargs, args),
            _ => return true,
        };
        let refuse = |text: String| {
            if self.limited("requests refused (unknown method, wrong node type or bad arguments)") {
                error!("refused {} from {from}: {text}", if is_call { "call" } else { "send" });
            }
            if is_call {
                // the caller prefixes "remote error: <this node>: "
                match link {
                    Some(l) => l.push(|o| proto::put_error_reply(o, msg.session, &text)),
                    None => {
                        if let Some(me) = self.peer(self.me.sid) {
                            me.link.push(|o| proto::put_error_reply(o, msg.session, &text));
                        }
                    }
                }
            }
            // refused for good: the request counts as handled
            true
        };
        let Some(schema) = self.schema() else {
            return refuse("this node has no schema yet".into());
        };
        let Some(method) = schema.method(mid) else {
            return refuse(format!("unknown method id {mid}"));
        };
        if self.stopping.get() {
            if is_call {
                // the caller passes this on as it is (see on_reply)
                let text = CallError::stopping(&self.me.name, &method.name).to_string();
                match link {
                    Some(l) => l.push(|o| proto::put_error_reply(o, msg.session, &text)),
                    None => {
                        if let Some(me) = self.peer(self.me.sid) {
                            me.link.push(|o| proto::put_error_reply(o, msg.session, &text));
                        }
                    }
                }
            }
            return false;
        }
        if method.server_type != 0 && method.server_type != self.my_type.get() {
            return refuse(format!("{} is not served by {} nodes", method.name, self.me.stype));
        }
        if is_call != method.results.is_some() {
            return refuse(format!(
                "{} arrived as a {}",
                method.name,
                if is_call { "call" } else { "send" }
            ));
        }
        if nargs != method.args.len() {
            return refuse(format!(
                "{}: {nargs} arguments, {} declared",
                method.name,
                method.args.len()
            ));
        }
        let mut mv = MultiValue::with_capacity(5 + nargs);
        mv.push_back(Value::Integer(if is_call { kind::CALL } else { kind::SEND }));
        mv.push_back(Value::Integer(conn as i64));
        mv.push_back(Value::Integer(msg.session as i64));
        mv.push_back(Value::Integer(eid));
        mv.push_back(Value::Integer(mid as i64));
        for (i, (name, ty)) in method.args.iter().enumerate() {
            match schema::decode(&self.lua, ty, &mut args) {
                Ok(v) => mv.push_back(v),
                Err(e) => return refuse(format!("bad argument #{} '{name}' to {}: {e}", i + 1, method.name)),
            }
        }
        if let Err(e) = args.finish() {
            return refuse(format!("{}: {e}", method.name));
        }
        drop(schema);
        self.call_lua(mv);
        true
    }

    /// Handles a reply from peer `peer`.
    pub(crate) fn on_reply(&self, peer: &Peer, session: u32, ok: bool, nvals: usize, mut vals: Reader<'_>) {
        let Some(p) = peer.pending.borrow_mut().take(session) else {
            debug!(
                "late reply {session} from {} dropped (its caller timed out)",
                peer.spec.name
            );
            return;
        };
        let schema = self.schema();
        let method = schema.as_ref().and_then(|s| s.method(p.mid).cloned());
        let mname = method
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_else(|| format!("method {}", p.mid));
        if !ok {
            let err = match vals.read_bytes() {
                // a stopping node refuses calls with "node down: <itself>: ..."
                Ok(b) => CallError::from_error_reply(&peer.spec.name, String::from_utf8_lossy(b).into_owned()),
                Err(e) => CallError::Remote {
                    node: peer.spec.name.clone(),
                    fault: RemoteFault::Unreadable(e.to_string()),
                },
            };
            return self.fail_call(session, err);
        }
        let decl = method.as_ref().and_then(|m| m.results.clone()).unwrap_or_default();
        if nvals != decl.len() {
            return self.fail_call(
                session,
                CallError::Remote {
                    node: peer.spec.name.clone(),
                    fault: RemoteFault::ResultCount {
                        method: mname,
                        got: nvals,
                        declared: decl.len(),
                    },
                },
            );
        }
        let mut mv = MultiValue::with_capacity(3 + nvals);
        mv.push_back(Value::Integer(kind::REPLY));
        mv.push_back(Value::Integer(session as i64));
        mv.push_back(Value::Boolean(true));
        for (i, (name, ty)) in decl.iter().enumerate() {
            match schema::decode(&self.lua, ty, &mut vals) {
                Ok(v) => mv.push_back(v),
                Err(e) => {
                    if self.limited("bad results from peers") {
                        error!("bad result from {} for {mname}: {e}", peer.spec.name);
                    }
                    return self.fail_call(
                        session,
                        CallError::Remote {
                            node: peer.spec.name.clone(),
                            fault: RemoteFault::BadResult {
                                index: i + 1,
                                name: name.clone(),
                                method: mname,
                                error: e.to_string(),
                            },
                        },
                    );
                }
            }
        }
        self.call_lua(mv);
    }

    fn method_name(&self, mid: u32) -> String {
        self.schema()
            .and_then(|s| s.method(mid).map(|m| m.name.clone()))
            .unwrap_or_else(|| format!("method {mid}"))
    }

    /// Fails every call waiting on `peer` with "node down" and reports, by
    /// method, the sends that were queued or unacknowledged for it and will
    /// not be delivered.
    pub(crate) fn fail_peer(&self, peer: &Peer, cause: &str) {
        let lost = peer.link.drain_unsent();
        self.report_lost(peer, &lost, cause);
        self.fail_pending(peer, cause);
    }

    /// Tells the log and Lua (`Event.Server.SendsLost`) about sends to `peer`
    /// that will not be delivered, or were written and never acknowledged.
    fn report_lost(&self, peer: &Peer, lost: &crate::net::link::Lost, cause: &str) {
        if lost.sends.is_empty() {
            return;
        }
        let names: Vec<(String, usize)> = lost.sends.iter().map(|(mid, n)| (self.method_name(*mid), *n)).collect();
        let list: Vec<String> = names.iter().map(|(m, n)| format!("{n} x {m}")).collect();
        let unacked = if lost.unacknowledged > 0 {
            format!(
                "; {} of them were written but never acknowledged, so they may or may not have been handled",
                lost.unacknowledged
            )
        } else {
            String::new()
        };
        error!(
            "{} sends to {} not delivered ({cause}): {}{unacked}",
            lost.total(),
            peer.spec.name,
            list.join(", ")
        );
        let report = || -> mlua::Result<MultiValue> {
            let counts = self.lua.create_table()?;
            for (m, n) in &names {
                counts.set(m.as_str(), *n)?;
            }
            let mut mv = MultiValue::with_capacity(6);
            mv.push_back(Value::Integer(kind::LOST));
            mv.push_back(Value::Integer(peer.spec.sid as i64));
            mv.push_back(Value::String(self.lua.create_string(&peer.spec.stype)?));
            mv.push_back(Value::String(self.lua.create_string(&peer.spec.name)?));
            mv.push_back(Value::Table(counts));
            mv.push_back(Value::String(self.lua.create_string(cause)?));
            Ok(mv)
        };
        match report() {
            Ok(mv) => self.call_lua(mv),
            Err(e) => error!("cannot tell Lua about lost sends: {e}"),
        }
    }

    /// A connection to `peer` verified; the peer is at `incarnation`. Sends
    /// that were in flight on the previous connection are resent if the peer
    /// is the same process, else reported lost.
    pub(crate) fn peer_connected(&self, peer: &Rc<Peer>, incarnation: u64) {
        let before = peer.incarnation.replace(incarnation);
        let lost = peer.link.reconnected(before == incarnation);
        if before != 0 && before != incarnation {
            info!("{} restarted (new incarnation)", peer.spec.name);
        }
        self.report_lost(
            peer,
            &lost,
            &format!("{} restarted before acknowledging them", peer.spec.name),
        );
        let load = self.load.get();
        if load != 0 {
            peer.link.push(|o| proto::put_load(o, load));
        }
        self.set_online(peer, true);
    }

    /// The connection to `peer` was lost. Calls waiting on it fail (only
    /// those already written, when `reverify`); sends wait for the next
    /// connection, which resends or reports them.
    pub(crate) fn peer_lost(&self, peer: &Peer, cause: &str, reverify: bool) {
        self.set_online(peer, false);
        peer.link.connection_lost(reverify);
        if reverify {
            self.fail_written_calls(peer, cause);
        } else {
            self.fail_pending(peer, cause);
        }
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
    fn log_summaries(&self) {
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
        self.loads.borrow_mut().insert(sid, load);
    }

    /// Tells every connected peer this node's new load (static discovery;
    /// with ZooKeeper the znode carries it too).
    pub(crate) fn publish_load(&self) {
        let load = self.load.get();
        for p in self.peers.borrow().values() {
            if !p.is_self && p.reconnect.borrow().state() == PeerState::Connected {
                p.link.push(|o| proto::put_load(o, load));
            }
        }
    }

    /// Fails the calls waiting on `peer` that were already written to its
    /// (now closed) connection; calls still queued whole keep waiting for the
    /// next connection.
    pub(crate) fn fail_written_calls(&self, peer: &Peer, cause: &str) {
        let queued = peer.link.queued_calls();
        let written = peer.pending.borrow_mut().drain_written(&queued);
        for (id, p) in written {
            self.fail_call(id, self.node_down(peer, cause, p.mid));
        }
    }

    /// Fails every call waiting on `peer` with "node down".
    pub(crate) fn fail_pending(&self, peer: &Peer, cause: &str) {
        let pending = peer.pending.borrow_mut().drain();
        for (id, p) in pending {
            self.fail_call(id, self.node_down(peer, cause, p.mid));
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
            self.rings.borrow_mut().add(stype, peer.spec.sid);
            info!(
                "{} ({}, sid {}) is online",
                peer.spec.name, peer.spec.stype, peer.spec.sid
            );
        } else {
            self.rings.borrow_mut().remove(stype, peer.spec.sid);
            warn!(
                "{} ({}, sid {}) is offline",
                peer.spec.name, peer.spec.stype, peer.spec.sid
            );
        }
        let mut mv = MultiValue::with_capacity(4);
        mv.push_back(Value::Integer(if online { kind::ONLINE } else { kind::OFFLINE }));
        mv.push_back(Value::Integer(peer.spec.sid as i64));
        for s in [&peer.spec.stype, &peer.spec.name] {
            match self.lua.create_string(s) {
                Ok(s) => mv.push_back(Value::String(s)),
                Err(_) => mv.push_back(Value::Nil),
            }
        }
        self.call_lua(mv);
    }

    fn fire_timer(self: &Rc<Self>, kind: TimerKind) {
        match kind {
            TimerKind::Lua(id) => {
                self.lua_timers.borrow_mut().remove(&id);
                if self.cancelled.borrow_mut().remove(&id) {
                    return;
                }
                let mut mv = MultiValue::with_capacity(2);
                mv.push_back(Value::Integer(kind::TIMER));
                mv.push_back(Value::Integer(id as i64));
                self.call_lua(mv);
            }
            TimerKind::SelfOnline => self.set_self_online(true),
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
        let mut v: Vec<String> = self.type_ids.borrow().keys().cloned().collect();
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
            load: self.load.get(),
            incarnation: self.incarnation,
        }
    }

    /// True when peers come from ZooKeeper.
    pub(crate) fn zk_mode(&self) -> bool {
        self.cluster.borrow().zookeeper.is_some()
    }

    /// Stops the node because it cannot go on (the reason reaches
    /// [`NodeHandle::failure`]).
    pub(crate) fn fail(&self, reason: String) {
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(reason);
        }
        self.stop.request();
    }

    /// Fails the calls whose deadline has passed.
    fn expire_calls(&self, now: Instant) {
        let peers: Vec<Rc<Peer>> = self.peers.borrow().values().cloned().collect();
        for peer in peers {
            let expired = {
                let mut pending = peer.pending.borrow_mut();
                if pending.is_empty() {
                    continue;
                }
                pending.expire(now)
            };
            for (id, p) in expired {
                self.fail_call(
                    id,
                    CallError::Timeout {
                        method: self.method_name(p.mid),
                        node: peer.spec.name.clone(),
                        timeout: p.timeout,
                    },
                );
            }
        }
    }

    fn watch_cluster_file(&self, tx: mpsc::UnboundedSender<()>) {
        use notify::Watcher;
        let file = self.cluster.borrow().file.clone();
        let Some(name) = file.file_name().map(|n| n.to_os_string()) else {
            return;
        };
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if ev.kind.is_access() {
                    return;
                }
                if ev.paths.iter().any(|p| p.file_name() == Some(name.as_os_str())) {
                    let _ = tx.send(());
                }
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(mut w) => match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => *self.watcher.borrow_mut() = Some(w),
                Err(e) => warn!("cannot watch {}: {e}; cluster changes need a reload", dir.display()),
            },
            Err(e) => warn!("cannot watch the cluster file: {e}"),
        }
    }

    fn watch_scripts(&self, tx: mpsc::UnboundedSender<PathBuf>) {
        use notify::Watcher;
        let mut dirs: Vec<PathBuf> = Vec::new();
        {
            let c = self.cluster.borrow();
            dirs.extend(c.lualib.clone());
            dirs.extend(c.scripts.iter().cloned());
        }
        if let Some(d) = self.me.main.parent() {
            dirs.push(d.to_path_buf());
        }
        let mut roots: Vec<PathBuf> = dirs.iter().filter_map(|d| std::fs::canonicalize(d).ok()).collect();
        roots.sort();
        roots.dedup();
        // a folder inside another watched one is covered by it
        let roots: Vec<PathBuf> = roots
            .iter()
            .filter(|r| !roots.iter().any(|o| o != *r && r.starts_with(o)))
            .cloned()
            .collect();
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if ev.kind.is_access() || ev.kind.is_remove() {
                    return;
                }
                for p in ev.paths {
                    if p.extension().is_some_and(|e| e == "lua") {
                        let _ = tx.send(p);
                    }
                }
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(mut w) => {
                for r in &roots {
                    if let Err(e) = w.watch(r, notify::RecursiveMode::Recursive) {
                        warn!("cannot watch {} for hot reload: {e}", r.display());
                    }
                }
                debug!("hot reload watches {roots:?}");
                *self.script_watcher.borrow_mut() = Some(w);
            }
            Err(e) => warn!("cannot watch scripts for hot reload: {e}"),
        }
    }

    /// Hot-reloads the given changed files (or every changed module), between
    /// messages, on this thread.
    pub(crate) fn reload_scripts(&self, paths: Option<Vec<PathBuf>>) {
        let mut mv = MultiValue::with_capacity(2);
        mv.push_back(Value::Integer(kind::RELOAD));
        match paths {
            None => mv.push_back(Value::Nil),
            Some(paths) => {
                let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                match self.lua.create_sequence_from(list) {
                    Ok(t) => mv.push_back(Value::Table(t)),
                    Err(e) => {
                        error!("hot reload: {e}");
                        return;
                    }
                }
            }
        }
        self.call_lua(mv);
    }

    /// Re-reads the cluster file now and applies it from a task (so a Lua
    /// caller is not re-entered by the Online/Offline events it causes).
    /// A file that fails to parse leaves the cluster as it was.
    pub(crate) fn reload_cluster_later(self: &Rc<Self>) -> Result<String, String> {
        let file = self.cluster.borrow().file.clone();
        match ClusterConfig::load(&file) {
            Ok(new) => {
                let core = self.clone();
                tokio::task::spawn_local(async move {
                    core.apply_cluster(new);
                });
                Ok(format!("{} loaded; applying it", file.display()))
            }
            Err(e) => {
                let msg = format!("{e}; the previous cluster stays in force");
                error!("{msg}");
                Err(msg)
            }
        }
    }

    /// Re-reads the cluster file and applies it. A file that fails to parse
    /// leaves the cluster as it was.
    pub(crate) fn reload_cluster(self: &Rc<Self>) -> Result<String, String> {
        let file = self.cluster.borrow().file.clone();
        match ClusterConfig::load(&file) {
            Ok(new) => Ok(self.apply_cluster(new)),
            Err(e) => {
                let msg = format!("{e}; the previous cluster stays in force");
                error!("{msg}");
                Err(msg)
            }
        }
    }

    fn apply_cluster(self: &Rc<Self>, mut new: ClusterConfig) -> String {
        let zk_before = self.zk_mode();
        let settings_changed = new.settings_for(&self.me.name) != self.cluster.borrow().settings_for(&self.me.name);
        for notice in membership::file_notices(
            &self.me,
            zk_before,
            new.zookeeper.is_some(),
            new.nodes.get(&self.me.name),
            settings_changed,
        ) {
            warn!("{notice}");
        }
        // the discovery in force stays until a restart
        new.zookeeper = self.cluster.borrow().zookeeper.clone();
        let specs: Vec<NodeSpec> = new.nodes.values().cloned().collect();
        *self.cluster.borrow_mut() = Arc::new(new);
        if zk_before {
            info!("{}", membership::ZK_FILE_RELOADED);
            return membership::ZK_FILE_RELOADED.to_string();
        }
        let plan = membership::from_cluster_file(&self.me, &self.known_peers(), &specs, self.type_check().as_deref());
        self.carry_out(plan)
    }

    /// True when a connected peer is missing from discovery but still in
    /// its grace period.
    pub(crate) fn has_missing(&self) -> bool {
        self.peers.borrow().values().any(|p| p.missing_since.get().is_some())
    }

    /// The peers as `rpc::membership` sees them.
    fn known_peers(&self) -> Vec<membership::Known> {
        self.peers
            .borrow()
            .values()
            .map(|p| membership::Known {
                spec: p.spec.clone(),
                connected: p.reconnect.borrow().state() == PeerState::Connected,
                missing_since: p.missing_since.get(),
            })
            .collect()
    }

    /// Once registered, a check that the schema defines a server type.
    #[allow(clippy::type_complexity)]
    fn type_check(&self) -> Option<Box<dyn Fn(&str) -> bool + '_>> {
        if self.registered.get() {
            Some(Box::new(|t: &str| self.type_id(t).is_some()))
        } else {
            None
        }
    }

    /// Makes the peer set what a ZooKeeper listing says: see
    /// `rpc::membership` (missing peers still connected are kept for `grace`).
    pub(crate) fn apply_listing(self: &Rc<Self>, specs: Vec<NodeSpec>, grace: Duration) -> String {
        let plan = membership::from_listing(
            &self.me,
            &self.known_peers(),
            &specs,
            grace,
            Instant::now(),
            self.type_check().as_deref(),
        );
        self.carry_out(plan)
    }

    /// Carries out a membership plan: removals (calls fail, Offline fires),
    /// additions (connected once registered), grace bookkeeping.
    fn carry_out(self: &Rc<Self>, plan: membership::Plan) -> String {
        for action in &plan.actions {
            match action {
                membership::Action::Disconnect { sid, reason, .. } => self.remove_peer(*sid, &reason.to_string()),
                membership::Action::KeepMissing { sid, since } => {
                    if let Some(p) = self.peer(*sid) {
                        p.missing_since.set(Some(*since));
                    }
                }
                membership::Action::Listed { sid } => {
                    if let Some(p) = self.peer(*sid) {
                        p.missing_since.set(None);
                    }
                }
                membership::Action::Connect(spec) => {
                    let peer = self.add_peer(spec.clone());
                    if self.registered.get() {
                        self.start_peer(&peer);
                    }
                }
                membership::Action::IgnoreUnknownType(spec) => error!("{}", plan.unknown_type(spec)),
            }
        }
        let summary = plan.summary();
        if plan.log_summary() {
            info!("{summary}");
        }
        summary
    }
}

impl LuaHost for Core {
    fn me(&self) -> &NodeSpec {
        &self.me
    }
    fn now(&self) -> f64 {
        Core::now(self)
    }
    fn set_dispatch(&self, f: Function) {
        Core::set_dispatch(self, f)
    }
    fn set_schema(&self, schema: Schema) {
        Core::set_schema(self, schema)
    }
    fn schema(&self) -> Option<Rc<Schema>> {
        Core::schema(self)
    }
    fn register(this: &Rc<Self>, types: HashMap<String, u32>) -> Result<(), String> {
        this.register(types)
    }
    fn request(
        &self,
        sid: u32,
        eid: i64,
        mid: u32,
        timeout: Option<Duration>,
        call: bool,
        args: &[Value],
    ) -> Result<u32, CallError> {
        Core::request(self, sid, eid, mid, timeout, call, args)
    }
    fn reply(&self, conn: u64, session: u32, mid: u32, ok: bool, vals: &[Value]) -> Result<(), String> {
        Core::reply(self, conn, session, mid, ok, vals)
    }
    fn eval_done(&self, token: u64, outcome: Result<String, String>) {
        Core::eval_done(self, token, outcome)
    }
    fn stop_phase(&self, phase: u8) {
        self.stop_phase.set(phase);
        self.stop_wake.notify_one();
    }
    fn add_timer(&self, after: Duration) -> u64 {
        Core::add_timer(self, after)
    }
    fn cancel_timer(&self, id: u64) {
        Core::cancel_timer(self, id)
    }
    fn reload_cluster_later(this: &Rc<Self>) -> Result<String, String> {
        this.reload_cluster_later()
    }
    fn rings(&self) -> std::cell::Ref<'_, Rings> {
        self.rings.borrow()
    }
    fn node_spec(&self, sid: u32) -> Option<NodeSpec> {
        Core::node_spec(self, sid)
    }
    fn type_id(&self, name: &str) -> Option<u32> {
        Core::type_id(self, name)
    }
    fn all_specs(&self) -> Vec<NodeSpec> {
        Core::all_specs(self)
    }
    fn load_of(&self, sid: u32) -> i64 {
        if sid == self.me.sid {
            self.load.get()
        } else {
            self.loads.borrow().get(&sid).copied().unwrap_or(0)
        }
    }
    fn set_load(&self, load: i64) {
        if self.load.replace(load) != load {
            self.discovery.load_changed.notify_one();
            self.publish_load();
        }
    }
}

impl DiscoveryHost for Core {
    fn registration(&self) -> crate::discovery::zk::Registration {
        Core::registration(self)
    }
    fn type_names(&self) -> Vec<String> {
        Core::type_names(self)
    }
    fn apply_listing(this: &Rc<Self>, listed: Vec<NodeSpec>, loads: HashMap<u32, i64>, grace: Duration) {
        *this.loads.borrow_mut() = loads;
        this.apply_listing(listed, grace);
    }
    fn has_missing(&self) -> bool {
        Core::has_missing(self)
    }
    fn set_self_online(&self, online: bool) {
        Core::set_self_online(self, online)
    }
    fn fail(&self, reason: String) {
        Core::fail(self, reason)
    }
    fn signals(&self) -> &DiscoverySignals {
        &self.discovery
    }
}

impl NetPeer for Peer {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }
    fn link(&self) -> &Link {
        &self.link
    }
    fn reconnect(&self) -> &RefCell<Reconnect> {
        &self.reconnect
    }
    fn kick(&self) -> &Notify {
        &self.kick
    }
}

impl NetHost for Core {
    type Peer = Peer;

    fn net(&self) -> &NetState {
        &self.net
    }
    fn settings(&self) -> NetSettings {
        let c = self.cluster.borrow();
        NetSettings {
            verify_timeout: c.verify_timeout,
            liveness: c.liveness,
            max_message: c.max_message,
        }
    }
    fn me(&self) -> &NodeSpec {
        &self.me
    }
    fn incarnation(&self) -> u64 {
        self.incarnation
    }
    fn identity(&self) -> crate::codec::auth::Identity {
        Core::identity(self)
    }
    fn secret(&self) -> String {
        Core::secret(self)
    }
    fn digest(&self) -> u32 {
        Core::digest(self)
    }
    fn schema_gen(&self) -> u64 {
        self.schema_gen.get()
    }
    fn knows(&self, who: &crate::codec::auth::Identity) -> bool {
        match self.node_spec(who.sid) {
            Some(p) => p.name == who.name && p.stype == who.stype,
            // With ZooKeeper a node may connect before its znode is seen
            // here; its proof of the secret and the digest show it belongs.
            None => self.zk_mode(),
        }
    }
    fn limited(&self, cause: &'static str) -> bool {
        Core::limited(self, cause)
    }
    fn send_seqs(&self, sender: &str, incarnation: u64) -> Rc<SendSeqs> {
        Core::send_seqs(self, sender, incarnation)
    }
    fn on_request(&self, conn: u64, from: &str, msg: &Message, env: Envelope<'_>, link: Option<&Link>) -> bool {
        Core::on_request(self, conn, from, msg, env, link)
    }
    fn on_reply(&self, peer: &Peer, session: u32, ok: bool, nvals: usize, vals: Reader<'_>) {
        Core::on_reply(self, peer, session, ok, nvals, vals)
    }
    fn on_load(&self, sid: u32, load: i64) {
        self.set_peer_load(sid, load)
    }
    fn peer_connected(&self, peer: &Rc<Peer>, incarnation: u64) {
        Core::peer_connected(self, peer, incarnation)
    }
    fn peer_lost(&self, peer: &Peer, cause: &str, reverify: bool) {
        Core::peer_lost(self, peer, cause, reverify)
    }
    fn connect_failed(&self, peer: &Peer, cause: &str) {
        self.fail_peer(peer, cause)
    }
}

fn encode_reply(out: &mut BytesMut, session: u32, method: &Method, ok: bool, vals: &[Value], max_message: usize) {
    if ok {
        let decl = method.results.as_deref().unwrap_or(&[]);
        let start = proto::begin_reply(out, decl.len());
        let res = schema::encode_list(out, method, decl, "result", vals.iter()).and_then(|()| {
            let size = out.len() - start - wire::HEADER;
            if size > max_message {
                Err(format!(
                    "reply of {} is {size} bytes, max_message is {max_message}",
                    method.name
                ))
            } else {
                Ok(())
            }
        });
        match res {
            Ok(()) => wire::finish_message(out, start, session),
            Err(e) => {
                wire::abort_message(out, start);
                error!("{e}");
                proto::put_error_reply(out, session, &e);
            }
        }
    } else {
        let text = vals.first().map(lua_text).unwrap_or_default();
        proto::put_error_reply(out, session, &text);
    }
}

fn lua_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string_lossy(),
        other => other.to_string().unwrap_or_else(|_| format!("{other:?}")),
    }
}

async fn timer_task(core: Rc<Core>) {
    loop {
        let next = core.timers.borrow().peek().map(|Reverse((t, _, _))| *t);
        match next {
            None => core.timer_wake.notified().await,
            Some(t) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(t) => {}
                    _ = core.timer_wake.notified() => continue,
                }
            }
        }
        let now = Instant::now();
        loop {
            let due = {
                let mut heap = core.timers.borrow_mut();
                match heap.peek() {
                    Some(Reverse((t, _, _))) if *t <= now => heap.pop().map(|Reverse((_, _, k))| k),
                    _ => None,
                }
            };
            match due {
                Some(k) => core.fire_timer(k),
                None => break,
            }
        }
    }
}

/// Fails calls past their deadline. Deadlines live in the pending tables
/// (one entry per call in flight), so answered calls cost nothing here.
async fn deadline_task(core: Rc<Core>) {
    let mut tick = tokio::time::interval(DEADLINE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        core.expire_calls(Instant::now());
    }
}

/// Logs, once per window, how many rate-limited lines were not written.
async fn log_summary_task(core: Rc<Core>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        core.log_summaries();
    }
}

/// Re-reads the cluster file when it changes on disk (after the burst of
/// events an editor's save makes has settled).
async fn cluster_watch_task(core: Rc<Core>, mut rx: mpsc::UnboundedReceiver<()>) {
    while rx.recv().await.is_some() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        while rx.try_recv().is_ok() {}
        let _ = core.reload_cluster();
    }
}

/// Collects changed script files until the burst of events of a save has
/// settled, then reloads them together.
async fn script_watch_task(core: Rc<Core>, mut rx: mpsc::UnboundedReceiver<PathBuf>) {
    while let Some(first) = rx.recv().await {
        let mut paths = vec![first];
        tokio::time::sleep(Duration::from_millis(30)).await;
        while let Ok(p) = rx.try_recv() {
            paths.push(p);
        }
        paths.sort();
        paths.dedup();
        core.reload_scripts(Some(paths));
    }
}

/// Delivers messages a node sends to itself, through the same decode path
/// as the network.
async fn self_task(core: Rc<Core>, me: Rc<Peer>) {
    let mut dec = FrameDecoder::new(usize::MAX);
    loop {
        let mut buf = {
            let mut out = me.link.out.borrow_mut();
            if out.is_empty() {
                None
            } else {
                Some(out.split())
            }
        };
        let Some(buf) = buf.as_mut() else {
            me.link.wake.notified().await;
            continue;
        };
        loop {
            match dec.decode(buf) {
                Ok(Some(msg)) => match proto::parse(&msg.data) {
                    Ok(env @ (Envelope::Call { .. } | Envelope::Send { .. })) => {
                        if !core.on_request(SELF_CONN, &core.me.name, &msg, env, None) {
                            debug!("a send to itself was not handled: this node is stopping");
                        }
                    }
                    Ok(Envelope::Reply { ok, nvals, vals }) => core.on_reply(&me, msg.session, ok, nvals, vals),
                    Ok(_) => error!("unexpected message kind sent to self"),
                    Err(e) => error!("bad message sent to self: {e}"),
                },
                Ok(None) => break,
                Err(e) => {
                    error!("bad frame sent to self: {e}");
                    break;
                }
            }
        }
        tokio::task::yield_now().await;
    }
}
