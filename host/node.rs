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
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use mlua::{Function, Lua, MultiValue, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::config::{ClusterConfig, NodeSpec};
use crate::mpack::Reader;
use crate::proto::{self, Envelope};
use crate::ring::Rings;
use crate::schema::{self, Method, Schema};
use crate::wire::{self, FrameDecoder, Message};

/// Capacity of a node's control mailbox (messages from other threads).
pub const CONTROL_MAILBOX: usize = 256;
/// How long an accepted connection may take to send its verify request.
pub const VERIFY_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes that may wait for a peer that is not connected.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

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
    stop: Arc<Notify>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NodeHandle {
    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks the node to stop (returns at once).
    pub fn stop(&self) {
        self.stop.notify_one();
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
            .blocking_send(Control::Eval {
                code: code.to_string(),
                reply: tx,
            })
            .map_err(|_| format!("node {} is not running", self.name))?;
        rx.recv_timeout(timeout)
            .map_err(|_| format!("eval on {} did not finish within {timeout:?}", self.name))?
    }

    /// Stops the node and waits for its thread to end.
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

impl Drop for NodeHandle {
    fn drop(&mut self) {
        self.stop.notify_one();
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
    let spec = cluster
        .nodes
        .get(name)
        .cloned()
        .ok_or_else(|| NodeError::UnknownNode(name.to_string()))?;
    let (ctrl_tx, ctrl_rx) = mpsc::channel(CONTROL_MAILBOX);
    let stop = Arc::new(Notify::new());
    let stop_rx = stop.clone();
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
                match Core::boot(cluster, spec).await {
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                    Ok(core) => {
                        let _ = ready_tx.send(Ok(()));
                        core.run(ctrl_rx, stop_rx).await;
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

/// Connection state of a peer (seed 003).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// No connection and no attempt under way.
    Disconnected,
    /// Connecting or verifying; messages wait in the queue.
    Connecting,
    /// Verified; messages flow.
    Connected,
}

/// The output side of one connection.
#[derive(Debug, Default)]
pub(crate) struct Link {
    out: RefCell<BytesMut>,
    wake: Notify,
    /// The socket while connected, for writes made without waiting for the
    /// writer task (see [`Link::flush_if_large`]).
    writer: RefCell<Option<Rc<OwnedWriteHalf>>>,
}

/// Queued bytes past which a sender writes to the socket at once instead
/// of waiting for its writer task (which only runs once Lua yields).
const FLUSH_THRESHOLD: usize = 64 * 1024;

impl Link {
    fn push(&self, f: impl FnOnce(&mut BytesMut)) {
        f(&mut self.out.borrow_mut());
        self.wake.notify_one();
    }

    /// When a long run of Lua code has queued a lot, writes what the socket
    /// takes now, without blocking, so that the peer can start on it.
    fn flush_if_large(&self) {
        let mut out = self.out.borrow_mut();
        if out.len() < FLUSH_THRESHOLD {
            return;
        }
        if let Some(wr) = self.writer.borrow().as_ref() {
            if let Ok(n) = wr.try_write(&out) {
                out.advance(n);
            }
        }
    }
}

/// Outgoing side towards one other node.
pub(crate) struct Peer {
    spec: NodeSpec,
    state: Cell<PeerState>,
    /// Messages to write; while not connected, the bounded wait queue.
    link: Link,
    /// Calls waiting for a reply over this peer: id -> method id.
    pending: RefCell<HashMap<u32, u32>>,
    /// Sends queued while not connected (for the loss report).
    queued_sends: Cell<usize>,
    kick: Notify,
    online: Cell<bool>,
    is_self: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    Lua(u32),
    CallDeadline { sid: u32, id: u32, ms: u64 },
    SelfOnline,
}

/// Everything a node thread owns. Lua callbacks hold a `Weak` to it.
pub(crate) struct Core {
    pub(crate) lua: Lua,
    pub(crate) me: NodeSpec,
    cluster: RefCell<Arc<ClusterConfig>>,
    started: Instant,
    pub(crate) my_type: Cell<u32>,
    type_ids: RefCell<HashMap<String, u32>>,
    schema: RefCell<Option<Rc<Schema>>>,
    dispatch: RefCell<Option<Rc<Function>>>,
    peers: RefCell<HashMap<u32, Rc<Peer>>>,
    inbound: RefCell<HashMap<u64, Rc<Link>>>,
    next_conn: Cell<u64>,
    next_id: Cell<u32>,
    timers: RefCell<BinaryHeap<Reverse<(Instant, u64, TimerKind)>>>,
    timer_seq: Cell<u64>,
    timer_wake: Notify,
    pub(crate) rings: RefCell<Rings>,
    registered: Cell<bool>,
    listener: RefCell<Option<TcpListener>>,
    evals: RefCell<HashMap<u32, std::sync::mpsc::Sender<Result<String, String>>>>,
}

/// Connection id Lua uses for calls from this node to itself.
const SELF_CONN: u64 = 0;

impl Core {
    async fn boot(cluster: Arc<ClusterConfig>, me: NodeSpec) -> Result<Rc<Core>, NodeError> {
        let listener = TcpListener::bind(me.addr).await.map_err(|source| NodeError::Bind {
            node: me.name.clone(),
            addr: me.addr,
            source,
        })?;
        // SAFETY: the debug library is needed for tracebacks and (later) hot
        // reload of upvalues; scripts are the game's own trusted code, and no
        // network data is ever loaded as code.
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
            inbound: RefCell::new(HashMap::new()),
            next_conn: Cell::new(1),
            next_id: Cell::new(1),
            timers: RefCell::new(BinaryHeap::new()),
            timer_seq: Cell::new(0),
            timer_wake: Notify::new(),
            rings: RefCell::new(Rings::default()),
            registered: Cell::new(false),
            listener: RefCell::new(Some(listener)),
            evals: RefCell::new(HashMap::new()),
        });
        for spec in cluster.nodes.values() {
            core.add_peer(spec.clone());
        }
        let script_err = |e: mlua::Error| NodeError::Script {
            node: me.name.clone(),
            message: e.to_string(),
        };
        crate::lua_api::install(&core, &cluster).map_err(script_err)?;
        tokio::task::spawn_local(timer_task(core.clone()));
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
        Ok(core)
    }

    async fn run(self: Rc<Self>, mut ctrl: mpsc::Receiver<Control>, stop: Arc<Notify>) {
        let listener = self.listener.borrow_mut().take();
        if let Some(listener) = listener {
            tokio::task::spawn_local(accept_task(self.clone(), listener));
        }
        loop {
            let msg = tokio::select! {
                _ = stop.notified() => break,
                m = ctrl.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            match msg {
                Control::Eval { code, reply } => {
                    let token = self.next_id();
                    self.evals.borrow_mut().insert(token, reply);
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
                    if self.dispatch.borrow().is_none() {
                        self.eval_done(token, Err("base.init has not run on this node".into()));
                        continue;
                    }
                    self.call_lua(mv);
                }
            }
        }
        info!("node {} stopping", self.me.name);
        // Break the Lua -> Rust cycle so the state can be freed.
        self.dispatch.borrow_mut().take();
    }

    fn add_peer(self: &Rc<Self>, spec: NodeSpec) {
        let is_self = spec.sid == self.me.sid;
        let peer = Rc::new(Peer {
            state: Cell::new(if is_self {
                PeerState::Connected
            } else {
                PeerState::Disconnected
            }),
            spec,
            link: Link::default(),
            pending: RefCell::new(HashMap::new()),
            queued_sends: Cell::new(0),
            kick: Notify::new(),
            online: Cell::new(false),
            is_self,
        });
        self.peers.borrow_mut().insert(peer.spec.sid, peer);
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

    pub(crate) fn default_timeout(&self) -> Duration {
        self.cluster.borrow().call_timeout
    }

    pub(crate) fn set_schema(&self, schema: Schema) {
        *self.schema.borrow_mut() = Some(Rc::new(schema));
    }

    pub(crate) fn schema(&self) -> Option<Rc<Schema>> {
        self.schema.borrow().clone()
    }

    /// Delivers the outcome of an eval started by [`Control::Eval`].
    pub(crate) fn eval_done(&self, token: u32, outcome: Result<String, String>) {
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
            if !p.is_self {
                tokio::task::spawn_local(peer_task(self.clone(), p));
            }
        }
        self.push_timer(Instant::now(), TimerKind::SelfOnline);
        Ok(())
    }

    fn next_id(&self) -> u32 {
        let id = self.next_id.get();
        self.next_id.set(if id == u32::MAX { 1 } else { id + 1 });
        id
    }

    fn push_timer(&self, at: Instant, kind: TimerKind) {
        let seq = self.timer_seq.get();
        self.timer_seq.set(seq + 1);
        let mut heap = self.timers.borrow_mut();
        let earlier = heap.peek().is_none_or(|Reverse((t, _, _))| at < *t);
        heap.push(Reverse((at, seq, kind)));
        drop(heap);
        if earlier {
            self.timer_wake.notify_one();
        }
    }

    /// Starts a Lua timer; its id comes back through the dispatcher.
    pub(crate) fn add_timer(&self, after: Duration) -> u32 {
        let id = self.next_id();
        self.push_timer(Instant::now() + after, TimerKind::Lua(id));
        id
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
    ) -> Result<u32, String> {
        let schema = self.schema().ok_or("rpcdef.init has not run: no schema")?;
        let method = schema.method(mid).ok_or_else(|| format!("unknown method id {mid}"))?;
        if call != method.results.is_some() {
            return Err(format!(
                "{} is a {}, not a {}",
                method.name,
                if call { "send" } else { "call" },
                if call { "call" } else { "send" }
            ));
        }
        let Some(peer) = self.peer(sid) else {
            return Err(format!("no such node: {sid} ({})", method.name));
        };
        if peer.state.get() != PeerState::Connected && peer.link.out.borrow().len() > MAX_QUEUED_BYTES {
            return Err(format!(
                "node down: {}: queue of {} bytes is full ({})",
                peer.spec.name, MAX_QUEUED_BYTES, method.name
            ));
        }
        let id = if call { self.next_id() } else { 0 };
        {
            let mut out = peer.link.out.borrow_mut();
            let start = proto::begin_request(&mut out, call, eid, mid, method.args.len());
            if let Err(e) = schema::encode_list(&mut out, method, &method.args, "argument", args.iter()) {
                wire::abort_message(&mut out, start);
                return Err(e);
            }
            wire::finish_message(&mut out, start, id);
        }
        peer.link.wake.notify_one();
        peer.link.flush_if_large();
        if call {
            peer.pending.borrow_mut().insert(id, mid);
            let t = timeout.unwrap_or_else(|| self.default_timeout());
            self.push_timer(
                Instant::now() + t,
                TimerKind::CallDeadline {
                    sid,
                    id,
                    ms: t.as_millis() as u64,
                },
            );
        } else if peer.state.get() != PeerState::Connected {
            peer.queued_sends.set(peer.queued_sends.get() + 1);
        }
        if peer.state.get() == PeerState::Disconnected {
            peer.kick.notify_one();
        }
        Ok(id)
    }

    /// Encodes the reply to call `session` that arrived on connection `conn`.
    pub(crate) fn reply(&self, conn: u64, session: u32, mid: u32, ok: bool, vals: &[Value]) -> Result<(), String> {
        let schema = self.schema().ok_or("no schema")?;
        let method = schema.method(mid).ok_or_else(|| format!("unknown method id {mid}"))?;
        let link = if conn == SELF_CONN {
            // A call to ourselves: the reply goes through the self peer's queue.
            self.peer(self.me.sid).map(|p| p as Rc<dyn HasLink>)
        } else {
            self.inbound.borrow().get(&conn).cloned().map(|l| l as Rc<dyn HasLink>)
        };
        let Some(link) = link else {
            debug!("reply to call {session} dropped: its caller's connection is gone");
            return Ok(());
        };
        let link = link.link();
        {
            let mut out = link.out.borrow_mut();
            encode_reply(&mut out, session, method, ok, vals);
        }
        link.wake.notify_one();
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

    fn fail_call(&self, id: u32, text: String) {
        let mut args = MultiValue::with_capacity(4);
        args.push_back(Value::Integer(kind::REPLY));
        args.push_back(Value::Integer(id as i64));
        args.push_back(Value::Boolean(false));
        match self.lua.create_string(&text) {
            Ok(s) => args.push_back(Value::String(s)),
            Err(_) => args.push_back(Value::Nil),
        }
        self.call_lua(args);
    }

    /// Handles a request (call or send) that arrived on `conn` from `from`.
    fn on_request(&self, conn: u64, from: &str, msg: &Message, env: Envelope<'_>, link: Option<&Link>) {
        let (is_call, eid, mid, nargs, mut args) = match env {
            Envelope::Call { eid, mid, nargs, args } => (true, eid, mid, nargs, args),
            Envelope::Send { eid, mid, nargs, args } => (false, eid, mid, nargs, args),
            _ => unreachable!(),
        };
        let refuse = |text: String| {
            error!("refused {} from {from}: {text}", if is_call { "call" } else { "send" });
            if is_call {
                let text = format!("{}: {text}", self.me.name);
                match link {
                    Some(l) => l.push(|o| proto::put_error_reply(o, msg.session, &text)),
                    None => {
                        if let Some(me) = self.peer(self.me.sid) {
                            me.link.push(|o| proto::put_error_reply(o, msg.session, &text));
                        }
                    }
                }
            }
        };
        let Some(schema) = self.schema() else {
            return refuse("this node has no schema yet".into());
        };
        let Some(method) = schema.method(mid) else {
            return refuse(format!("unknown method id {mid}"));
        };
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
    }

    /// Handles a reply from peer `peer`.
    fn on_reply(&self, peer: &Peer, session: u32, ok: bool, nvals: usize, mut vals: Reader<'_>) {
        let Some(mid) = peer.pending.borrow_mut().remove(&session) else {
            debug!(
                "late reply {session} from {} dropped (its caller timed out)",
                peer.spec.name
            );
            return;
        };
        let schema = self.schema();
        let method = schema.as_ref().and_then(|s| s.method(mid).cloned());
        let mname = method
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_else(|| format!("method {mid}"));
        if !ok {
            let text = vals
                .read_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_else(|e| format!("unreadable error text: {e}"));
            return self.fail_call(session, format!("remote error: {}: {text}", peer.spec.name));
        }
        let decl = method.as_ref().and_then(|m| m.results.clone()).unwrap_or_default();
        if nvals != decl.len() {
            return self.fail_call(
                session,
                format!(
                    "remote error: {}: {mname} replied {nvals} results, {} declared",
                    peer.spec.name,
                    decl.len()
                ),
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
                    error!("bad result from {} for {mname}: {e}", peer.spec.name);
                    return self.fail_call(
                        session,
                        format!(
                            "remote error: {}: bad result #{} '{name}' of {mname}: {e}",
                            peer.spec.name,
                            i + 1
                        ),
                    );
                }
            }
        }
        self.call_lua(mv);
    }

    /// Fails every call waiting on `peer` with "node down" and reports the
    /// sends that were queued for it and are lost.
    fn fail_peer(&self, peer: &Peer, cause: &str) {
        let pending: Vec<(u32, u32)> = peer.pending.borrow_mut().drain().collect();
        let queued = peer.queued_sends.replace(0);
        if peer.state.get() != PeerState::Connected {
            peer.link.out.borrow_mut().clear();
            if queued > 0 {
                error!(
                    "{queued} sends to {} were not delivered: node down: {cause}",
                    peer.spec.name
                );
            }
        }
        let schema = self.schema();
        for (id, mid) in pending {
            let mname = schema
                .as_ref()
                .and_then(|s| s.method(mid).map(|m| m.name.clone()))
                .unwrap_or_default();
            self.fail_call(id, format!("node down: {}: {cause} ({mname})", peer.spec.name));
        }
    }

    fn set_online(&self, peer: &Peer, online: bool) {
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
                let mut mv = MultiValue::with_capacity(2);
                mv.push_back(Value::Integer(kind::TIMER));
                mv.push_back(Value::Integer(id as i64));
                self.call_lua(mv);
            }
            TimerKind::CallDeadline { sid, id, ms } => {
                let Some(peer) = self.peer(sid) else { return };
                let Some(mid) = peer.pending.borrow_mut().remove(&id) else {
                    return;
                };
                let mname = self
                    .schema()
                    .and_then(|s| s.method(mid).map(|m| m.name.clone()))
                    .unwrap_or_default();
                self.fail_call(
                    id,
                    format!("timeout: {mname} to {}: no reply within {ms} ms", peer.spec.name),
                );
            }
            TimerKind::SelfOnline => {
                if let Some(me) = self.peer(self.me.sid) {
                    tokio::task::spawn_local(self_task(self.clone(), me.clone()));
                    self.set_online(&me, true);
                }
            }
        }
    }
}

trait HasLink {
    fn link(&self) -> &Link;
}

impl HasLink for Link {
    fn link(&self) -> &Link {
        self
    }
}

impl HasLink for Peer {
    fn link(&self) -> &Link {
        &self.link
    }
}

fn encode_reply(out: &mut BytesMut, session: u32, method: &Method, ok: bool, vals: &[Value]) {
    if ok {
        let decl = method.results.as_deref().unwrap_or(&[]);
        let start = proto::begin_reply(out, decl.len());
        match schema::encode_list(out, method, decl, "result", vals.iter()) {
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

/// Delivers messages a node sends to itself, through the same decode path
/// as the network.
async fn self_task(core: Rc<Core>, me: Rc<Peer>) {
    let mut dec = FrameDecoder::default();
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
        while let Ok(Some(msg)) = dec.decode(buf) {
            match proto::parse(&msg.data) {
                Ok(env @ (Envelope::Call { .. } | Envelope::Send { .. })) => {
                    core.on_request(SELF_CONN, &core.me.name, &msg, env, None)
                }
                Ok(Envelope::Reply { ok, nvals, vals }) => core.on_reply(&me, msg.session, ok, nvals, vals),
                Ok(other) => error!("unexpected message to self: {other:?}"),
                Err(e) => error!("bad message to self: {e}"),
            }
        }
        tokio::task::yield_now().await;
    }
}

async fn accept_task(core: Rc<Core>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let conn = core.next_conn.get();
                core.next_conn.set(conn + 1);
                tokio::task::spawn_local(inbound_task(core.clone(), conn, stream, addr));
            }
            Err(e) => {
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn read_message(rd: &mut OwnedReadHalf, dec: &mut FrameDecoder, buf: &mut BytesMut) -> Result<Message, String> {
    loop {
        if let Some(m) = dec.decode(buf).map_err(|e| e.to_string())? {
            return Ok(m);
        }
        // Room for at least one whole frame: reads of 64 KiB, not 8 KiB.
        buf.reserve(64 * 1024);
        let n = rd.read_buf(buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
    }
}

/// Messages handled from one read burst before the writers get a turn.
const PIPELINE_BURST: u32 = 16;

/// Lets this connection's writer (and other tasks) run every few messages
/// of a long burst, so that the first replies are on the wire while the rest
/// of the burst is still being handled: both ends then work at once instead
/// of in turns.
async fn pipeline(burst: &mut u32, unread: &BytesMut) {
    if unread.is_empty() {
        *burst = 0;
        return;
    }
    *burst += 1;
    if *burst >= PIPELINE_BURST {
        *burst = 0;
        tokio::task::yield_now().await;
    }
}

async fn write_loop(link: &Link, wr: Rc<OwnedWriteHalf>) -> String {
    *link.writer.borrow_mut() = Some(wr.clone());
    let cause = loop {
        if link.out.borrow().is_empty() {
            link.wake.notified().await;
            continue;
        }
        if let Err(e) = wr.writable().await {
            break e.to_string();
        }
        let mut out = link.out.borrow_mut();
        match wr.try_write(&out) {
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => break e.to_string(),
        }
    };
    link.writer.borrow_mut().take();
    cause
}

async fn inbound_task(core: Rc<Core>, conn: u64, stream: TcpStream, addr: SocketAddr) {
    let (mut rd, mut wr) = stream.into_split();
    let mut dec = FrameDecoder::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let first = match tokio::time::timeout(VERIFY_TIMEOUT, read_message(&mut rd, &mut dec, &mut buf)).await {
        Err(_) => {
            warn!("connection from {addr} closed: no verify request within {VERIFY_TIMEOUT:?}");
            return;
        }
        Ok(Err(e)) => {
            debug!("connection from {addr} closed before verifying: {e}");
            return;
        }
        Ok(Ok(m)) => m,
    };
    let verdict = match proto::parse(&first.data) {
        Ok(Envelope::Verify {
            name,
            sid,
            stype,
            digest,
            token,
        }) => verify(&core, name, sid, stype, digest, token),
        Ok(other) => Err((
            format!("first message must be verify, got {other:?}"),
            "unknown".to_string(),
        )),
        Err(e) => Err((format!("malformed verify request: {e}"), "unknown".to_string())),
    };
    let from = match verdict {
        Ok(name) => name,
        Err((reason, who)) => {
            warn!("refused connection from {who} at {addr}: {reason}");
            let mut out = BytesMut::new();
            proto::put_verify_failed(&mut out, &reason);
            let _ = wr.write_all(&out).await;
            let _ = wr.shutdown().await;
            return;
        }
    };
    let link = Rc::new(Link::default());
    link.push(|o| proto::put_verify_ok(o, &core.me.name, core.me.sid));
    core.inbound.borrow_mut().insert(conn, link.clone());
    debug!("accepted {from} from {addr}");
    let reader = async {
        let mut burst = 0u32;
        loop {
            let msg = match read_message(&mut rd, &mut dec, &mut buf).await {
                Ok(m) => m,
                Err(e) => return e,
            };
            pipeline(&mut burst, &buf).await;
            match proto::parse(&msg.data) {
                Ok(env @ (Envelope::Call { .. } | Envelope::Send { .. })) => {
                    core.on_request(conn, &from, &msg, env, Some(&link))
                }
                Ok(Envelope::Ping) => link.push(|o| proto::put_ping(o, true)),
                Ok(Envelope::Pong) => {}
                Ok(other) => return format!("unexpected message {other:?}"),
                Err(e) => return e.to_string(),
            }
        }
    };
    let cause = tokio::select! {
        c = reader => c,
        c = write_loop(&link, Rc::new(wr)) => c,
    };
    core.inbound.borrow_mut().remove(&conn);
    debug!("connection from {from} ({addr}) ended: {cause}");
}

fn verify(
    core: &Core,
    name: &[u8],
    sid: u32,
    stype: &[u8],
    digest: u32,
    token: &[u8],
) -> Result<String, (String, String)> {
    let name = String::from_utf8_lossy(name).into_owned();
    let stype = String::from_utf8_lossy(stype).into_owned();
    let secret = core.cluster.borrow().secret.clone();
    if token != secret.as_bytes() {
        return Err(("wrong cluster secret".into(), name));
    }
    match core.peer(sid) {
        Some(p) if p.spec.name == name && p.spec.stype == stype => {}
        _ => return Err((format!("unknown node {name} (sid {sid}, type {stype})"), name)),
    }
    let mine = core.schema().map(|s| s.digest).unwrap_or(0);
    if digest != mine {
        return Err((
            format!(
                "RPC digest mismatch: {name} has {digest:#010x}, {} has {mine:#010x}",
                core.me.name
            ),
            name,
        ));
    }
    Ok(name)
}

async fn connect(core: &Core, peer: &Peer) -> Result<(OwnedReadHalf, OwnedWriteHalf, FrameDecoder, BytesMut), String> {
    let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(peer.spec.addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut hello = BytesMut::new();
    let digest = core.schema().map(|s| s.digest).unwrap_or(0);
    let secret = core.cluster.borrow().secret.clone();
    proto::put_verify(&mut hello, &core.me.name, core.me.sid, &core.me.stype, digest, &secret);
    wr.write_all(&hello).await.map_err(|e| e.to_string())?;
    let mut dec = FrameDecoder::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let answer = tokio::time::timeout(VERIFY_TIMEOUT, read_message(&mut rd, &mut dec, &mut buf))
        .await
        .map_err(|_| "no verify answer".to_string())??;
    match proto::parse(&answer.data) {
        Ok(Envelope::VerifyOk { sid, .. }) if sid == peer.spec.sid => Ok((rd, wr, dec, buf)),
        Ok(Envelope::VerifyOk { sid, .. }) => Err(format!("answered as sid {sid}, expected {}", peer.spec.sid)),
        Ok(Envelope::VerifyFailed { reason }) => Err(format!("refused: {}", String::from_utf8_lossy(reason))),
        Ok(other) => Err(format!("unexpected verify answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

async fn peer_task(core: Rc<Core>, peer: Rc<Peer>) {
    let mut backoff = BACKOFF_MIN;
    let mut last_error = String::new();
    loop {
        peer.state.set(PeerState::Connecting);
        match connect(&core, &peer).await {
            Ok((mut rd, wr, mut dec, mut buf)) => {
                peer.state.set(PeerState::Connected);
                peer.queued_sends.set(0);
                backoff = BACKOFF_MIN;
                last_error.clear();
                peer.link.wake.notify_one();
                core.set_online(&peer, true);
                let reader = async {
                    let mut burst = 0u32;
                    loop {
                        let msg = match read_message(&mut rd, &mut dec, &mut buf).await {
                            Ok(m) => m,
                            Err(e) => return e,
                        };
                        pipeline(&mut burst, &buf).await;
                        match proto::parse(&msg.data) {
                            Ok(Envelope::Reply { ok, nvals, vals }) => {
                                core.on_reply(&peer, msg.session, ok, nvals, vals)
                            }
                            Ok(Envelope::Ping) => peer.link.push(|o| proto::put_ping(o, true)),
                            Ok(Envelope::Pong) => {}
                            Ok(other) => return format!("unexpected message {other:?}"),
                            Err(e) => return e.to_string(),
                        }
                    }
                };
                let cause = tokio::select! {
                    c = reader => c,
                    c = write_loop(&peer.link, Rc::new(wr)) => c,
                };
                peer.state.set(PeerState::Disconnected);
                peer.link.out.borrow_mut().clear();
                warn!("lost connection to {}: {cause}", peer.spec.name);
                core.set_online(&peer, false);
                core.fail_peer(&peer, &cause);
            }
            Err(e) => {
                peer.state.set(PeerState::Disconnected);
                if e != last_error {
                    debug!("cannot connect to {} at {}: {e}", peer.spec.name, peer.spec.addr);
                    last_error = e.clone();
                }
                core.fail_peer(&peer, &e);
            }
        }
        let jitter = Duration::from_millis(crate::ring::mix64(core.next_conn.get() ^ peer.spec.sid as u64) % 50);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = peer.kick.notified() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
