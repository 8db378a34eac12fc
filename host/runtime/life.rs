//! The life of a node on its thread: boot (Lua state, listener, main
//! script), the run loop (control mailbox, watchers, stop), the graceful
//! stop, and the node's own tasks (timers, log summaries).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Lua, MultiValue, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::discovery::config::{ClusterConfig, NodeSpec};
use crate::discovery::DiscoverySignals;
use crate::net::NetState;

use super::calls::{deadline_task, self_task};
use super::control::{Control, NodeError, NodeOptions, RuntimeError, StopSignal, StopState};
use super::node::{Core, Loads, LuaSide, Peer, Routing, Typing, OLAP_TYPE};
use super::timers::{TimerKind, Timers};
use super::watch::{cluster_watch_task, script_watch_task};
use crate::lua::dispatch::Dispatch;

impl Core {
    pub(crate) async fn boot(
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
        let metrics_listener = match cluster.metrics.get(&me.name) {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| NodeError::MetricsBind {
                node: me.name.clone(),
                addr: *addr,
                source,
            })?),
            None => None,
        };
        let gate = match cluster.gates.get(&me.name) {
            Some(cfg) => Some(
                super::gatestate::GateState::bind(cfg.clone(), &cluster.secret)
                    .await
                    .map_err(|message| NodeError::Script {
                        node: me.name.clone(),
                        message,
                    })?,
            ),
            None => None,
        };
        let store = match cluster.stores.get(&me.name) {
            Some(cfg) => Some(super::db::open(cfg).map_err(|message| NodeError::Script {
                node: me.name.clone(),
                message,
            })?),
            None => None,
        };
        // SAFETY: the debug library is needed for tracebacks and hot reload
        // of upvalues; scripts are the game's own trusted code, and no network
        // data is ever loaded as code.
        let lua = unsafe {
            Lua::unsafe_new_with(
                mlua::StdLib::ALL_SAFE | mlua::StdLib::DEBUG,
                mlua::LuaOptions::default(),
            )
        };
        let metrics = crate::metrics::NodeMetrics::new(
            &me.name,
            &me.stype,
            gate.is_some(),
            crate::metrics::script::DEFAULT_MAX_SERIES,
        );
        let core = Rc::new_cyclic(|this| Core {
            this: this.clone(),
            lua,
            me: me.clone(),
            cluster: RefCell::new(cluster.clone()),
            started: Instant::now(),
            typing: Typing::default(),
            lua_side: LuaSide::default(),
            routing: Routing::default(),
            net: NetState {
                next_conn: Cell::new(1),
                local: local.clone(),
                ..NetState::default()
            },
            timers: Timers::default(),
            // an Olap node checks its address is free, then listens only
            // once it joins
            listener: RefCell::new((me.stype != OLAP_TYPE).then_some(listener)),
            watchers: RefCell::new((None, None)),
            stop: StopState::new(stop, failure),
            discovery: DiscoverySignals::default(),
            local_rx: RefCell::new(
                local
                    .as_ref()
                    .filter(|_| me.stype != OLAP_TYPE)
                    .map(|net| net.listen(me.addr)),
            ),
            loads: Loads::default(),
            incarnation: crate::codec::auth::incarnation(),
            log_limit: RefCell::new(crate::rpc::ratelog::LogLimit::default()),
            send_seqs: RefCell::new(HashMap::new()),
            gate,
            store,
            metrics,
            metrics_listener: RefCell::new(metrics_listener),
            relay: super::relaystate::RelayState::new(cluster.topology),
            joined: Cell::new(false),
            remote_log: super::logsink::LogSink::new(
                cluster
                    .remote_log
                    .as_ref()
                    .and_then(|n| cluster.nodes.get(n))
                    .map(|n| n.sid)
                    .filter(|&sid| sid != me.sid),
            ),
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
        crate::net::spawn(timer_task(core.clone()));
        crate::net::spawn(deadline_task(core.clone()));
        crate::net::spawn(log_summary_task(core.clone()));
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

    pub(crate) async fn run(
        self: Rc<Self>,
        mut ctrl: mpsc::Receiver<Control>,
        stop: Arc<StopSignal>,
        opts: NodeOptions,
    ) {
        if !self.waits_to_join() {
            self.start_accepting();
        }
        super::gate::start(&self);
        super::gateweb::start(&self);
        let metrics_listener = self.metrics_listener.borrow_mut().take();
        if let Some(l) = metrics_listener {
            if let Ok(a) = l.local_addr() {
                info!("metrics of {} at http://{a}/metrics", self.me.name);
            }
            crate::net::spawn(crate::metrics::serve(l, self.metrics.source()));
        }
        // the gauges (mailbox, queues, connections, Lua memory) are sampled
        // here, between messages, about once a second
        let mut sample = tokio::time::interval(Duration::from_secs(1));
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (file_tx, file_rx) = mpsc::unbounded_channel();
        self.watch_cluster_file(file_tx);
        crate::net::spawn(cluster_watch_task(self.clone(), file_rx));
        if opts.watch_scripts {
            let (tx, rx) = mpsc::unbounded_channel();
            self.watch_scripts(tx);
            crate::net::spawn(script_watch_task(self.clone(), rx));
        }
        loop {
            let msg = tokio::select! {
                _ = stop.at_least(1) => break,
                _ = sample.tick() => {
                    self.sample_metrics(ctrl.len());
                    continue;
                }
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
                Control::Stats { reply } => {
                    let _ = reply.send(self.stats(ctrl.len()));
                }
                Control::Eval { code, reply } => {
                    let token = self.timers.next_id();
                    self.lua_side.evals.borrow_mut().insert(token, reply);
                    if self.lua_side.dispatch.borrow().is_none() {
                        self.eval_done(token, Err("base.init has not run on this node".into()));
                        continue;
                    }
                    let mut mv = MultiValue::with_capacity(3);
                    mv.push_back(Value::Integer(Dispatch::Eval.id()));
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
        if self.gate.is_some() {
            // clients hear why they are closed
            self.gate_shutdown();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        info!("node {} stopping", self.me.name);
        if let Some(store) = self.store.clone() {
            // the DbCtl calls being served are answered (bounded by
            // stop_grace; a second stop cuts it short)
            if stop.count() < 2 {
                let grace = self.cluster.borrow().stop_grace;
                tokio::select! {
                    left = self.finish_db_serving(grace) => if left > 0 {
                        warn!("{left} DbCtl calls not answered within stop_grace; their callers see node down");
                    },
                    _ = stop.at_least(2) => {}
                }
            }
            // what was queued is written before the node is gone (a restart
            // on the same file then sees it)
            let _ = tokio::task::spawn_blocking(move || store.close()).await;
        }
        let failed = self.stop.failure.lock().map(|f| f.is_some()).unwrap_or(true);
        if self.zk_mode() && self.typing.registered.get() && stop.count() < 2 && !failed {
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
        *self.watchers.borrow_mut() = (None, None);
        let peers: Vec<Rc<Peer>> = self.routing.peers.borrow().values().cloned().collect();
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
        self.lua_side.dispatch.borrow_mut().take();
    }

    /// What the node measures of itself; `waiting`: its control mailbox.
    fn stats(&self, waiting: usize) -> super::control::NodeStats {
        let peers = self.routing.peers.borrow();
        let queued: usize = peers.values().map(|p| p.link.queued()).sum();
        let online = peers.values().filter(|p| !p.is_self && p.online.get()).count();
        let entities = self
            .lua
            .load("local e = package.loaded.entity; return e and e.count and e.count() or 0")
            .eval::<i64>()
            .unwrap_or(0);
        super::control::NodeStats {
            handled: self.loads.handled.get(),
            mailbox: (queued + waiting) as u64,
            entities: entities.max(0) as u64,
            lua_bytes: self.lua.used_memory() as u64,
            connections: (online + self.net.inbound.borrow().len()) as u64,
        }
    }

    /// The graceful part of a stop (see [`NodeHandle::stop`]): refuse new
    /// work, let Lua wait for its handlers and run the onStop handlers, each
    /// step bounded by `stop_grace`; a second stop request cuts it short.
    pub(crate) async fn graceful_stop(&self, stop: &StopSignal) {
        if stop.count() >= 2 || self.lua_side.dispatch.borrow().is_none() {
            return;
        }
        self.stop.stopping.set(true);
        let grace = self.cluster.borrow().stop_grace;
        info!(
            "stopping: handlers running get up to {:.1} s to finish, then onStop runs (stop again to end at once)",
            grace.as_secs_f64()
        );
        let mut mv = MultiValue::with_capacity(2);
        mv.push_back(Value::Integer(Dispatch::Stop.id()));
        mv.push_back(Value::Number(grace.as_secs_f64()));
        self.call_lua(mv);
        // Lua bounds the wait for handlers itself; the margin covers its
        // polling, the deadline moves when the onStop handlers start.
        let mut deadline = Instant::now() + grace + Duration::from_millis(200);
        let mut phase = 0;
        while self.stop.phase.get() < 2 {
            if self.stop.phase.get() != phase {
                phase = self.stop.phase.get();
                deadline = Instant::now() + grace;
            }
            tokio::select! {
                _ = self.stop.wake.notified() => {}
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

    /// Starts accepting connections from other nodes (once).
    pub(crate) fn start_accepting(self: &Rc<Self>) {
        let listener = self.listener.borrow_mut().take();
        if let Some(listener) = listener {
            let local = self.local_rx.borrow_mut().take();
            crate::net::spawn(crate::net::accept::accept_task(self.clone(), listener, local));
        }
    }

    /// True for a node of type `Olap` that has not joined yet: it neither
    /// accepts nor makes connections to other nodes until its script calls
    /// `cluster.join()` (seed 000: the Olap server does not connect at start).
    pub(crate) fn waits_to_join(&self) -> bool {
        self.me.stype == OLAP_TYPE && !self.joined.get()
    }

    /// `cluster.join()`: an `Olap` node joins the cluster now (listens,
    /// connects to its peers and goes online for them). Returns false when it
    /// had joined already (every other node joins at start).
    pub(crate) fn join(self: &Rc<Self>) -> Result<bool, RuntimeError> {
        if !self.waits_to_join() {
            return Ok(false);
        }
        if !self.typing.registered.get() {
            return Err(RuntimeError::NotRegistered);
        }
        let std_listener = std::net::TcpListener::bind(self.me.addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std)
            .map_err(|e| RuntimeError::JoinBind(format!("{}: {e}", self.me.addr)))?;
        *self.listener.borrow_mut() = Some(std_listener);
        *self.local_rx.borrow_mut() = self.net.local.as_ref().map(|net| net.listen(self.me.addr));
        self.joined.set(true);
        info!("{} joins the cluster", self.me.name);
        self.start_accepting();
        let peers: Vec<Rc<Peer>> = self.routing.peers.borrow().values().cloned().collect();
        for p in peers {
            self.start_peer(&p);
        }
        Ok(true)
    }

    /// Registers the node with the (static) discovery: it joins its ring, and
    /// connections to every other node of the cluster start.
    pub(crate) fn register(self: &Rc<Self>, types: HashMap<String, u32>) -> Result<(), RuntimeError> {
        let my_type = *types.get(&self.me.stype).ok_or_else(|| RuntimeError::UnknownType {
            node: self.me.name.clone(),
            stype: self.me.stype.clone(),
            where_: "",
        })?;
        for p in self.routing.peers.borrow().values() {
            if !types.contains_key(&p.spec.stype) {
                return Err(RuntimeError::UnknownType {
                    node: p.spec.name.clone(),
                    stype: p.spec.stype.clone(),
                    where_: " in the cluster file",
                });
            }
        }
        if self.typing.registered.replace(true) {
            return Ok(());
        }
        self.typing.my_type.set(my_type);
        *self.typing.type_ids.borrow_mut() = types;
        if !self.waits_to_join() {
            let peers: Vec<Rc<Peer>> = self.routing.peers.borrow().values().cloned().collect();
            for p in peers {
                self.start_peer(&p);
            }
        }
        if let Some(me) = self.peer(self.me.sid) {
            crate::net::spawn(self_task(self.clone(), me));
        }
        crate::net::spawn(super::remotelog::remote_log_task(self.clone()));
        let zk = self.cluster.borrow().zookeeper.clone();
        match zk {
            // online once registered in ZooKeeper
            Some(cfg) => {
                crate::net::spawn(crate::discovery::zk::zk_task(self.clone(), cfg));
            }
            None => self.timers.push(Instant::now(), TimerKind::SelfOnline),
        }
        Ok(())
    }

    /// Fires a timer that is due.
    pub(crate) fn fire_timer(self: &Rc<Self>, kind: TimerKind) {
        match kind {
            TimerKind::Lua(id) => {
                let mut mv = MultiValue::with_capacity(2);
                mv.push_back(Value::Integer(Dispatch::Timer.id()));
                mv.push_back(Value::Integer(id as i64));
                self.call_lua(mv);
            }
            TimerKind::SelfOnline => self.set_self_online(true),
        }
    }
}

/// Sleeps until the next timer is due (or an earlier one arrives) and fires
/// what is due.
pub(crate) async fn timer_task(core: Rc<Core>) {
    loop {
        match core.timers.next_at() {
            None => core.timers.wake.notified().await,
            Some(t) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(t) => {}
                    _ = core.timers.wake.notified() => continue,
                }
            }
        }
        let now = Instant::now();
        while let Some(k) = core.timers.pop_due(now) {
            core.fire_timer(k);
        }
    }
}

/// Logs, once per window, how many rate-limited lines were not written.
pub(crate) async fn log_summary_task(core: Rc<Core>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        core.log_summaries();
    }
}
