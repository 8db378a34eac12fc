//! The types shared by a node and the threads that control it: its
//! mailbox messages, its stop signal, its start errors and options.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// Capacity of a node's control mailbox (messages from other threads).
pub const CONTROL_MAILBOX: usize = 256;

/// Stop requests to a node: the first starts a graceful stop, a second
/// ends the node at once.
#[derive(Debug, Default)]
pub(crate) struct StopSignal {
    pub(crate) requests: AtomicU32,
    pub(crate) wake: Notify,
}

impl StopSignal {
    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_one();
    }

    pub(crate) fn count(&self) -> u32 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Returns once at least `n` stops were requested.
    pub(crate) async fn at_least(&self, n: u32) {
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
    /// Its metrics address (`metrics` in the cluster file) could not be bound.
    #[error("node {node}: cannot serve metrics on {addr}: {source}")]
    MetricsBind {
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
    /// Measure the node ([`NodeStats`]) and send the figures back.
    Stats {
        /// Where the figures go.
        reply: std::sync::mpsc::Sender<NodeStats>,
    },
    /// Run a Lua chunk in a new coroutine of the node (it may make remote
    /// calls) and send back its results as text, tab-separated, or its error.
    Eval {
        /// The chunk.
        code: String,
        /// Where the outcome goes.
        reply: std::sync::mpsc::Sender<Result<String, String>>,
    },
}

/// What a node measures of itself (for its ops record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Calls and sends handled since it started.
    pub handled: u64,
    /// Messages waiting: queued for peers and in the control mailbox.
    pub mailbox: u64,
    /// Entities registered with `Entity.set`.
    pub entities: u64,
    /// Bytes used by its Lua state.
    pub lua_bytes: u64,
    /// Verified peer connections and accepted connections.
    pub connections: u64,
}

/// How a node runs.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// Watch the script folders and hot-reload changed modules.
    pub watch_scripts: bool,
    /// Nodes of this process that talk in memory instead of over loopback
    /// TCP (shared by the nodes a [`LocalCluster`](crate::cluster::LocalCluster) starts).
    pub local: Option<Arc<crate::net::stream::LocalNet>>,
    /// Run the node on this pool of worker threads (with other nodes)
    /// instead of a thread of its own.
    pub pool: Option<Arc<super::workers::Workers>>,
    /// Which worker of the pool (taken modulo its size).
    pub worker: usize,
}

/// Why [`NodeHandle::eval`](super::NodeHandle::eval) gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The node's control mailbox is full (it is not keeping up).
    #[error("node {0}: control mailbox is full")]
    MailboxFull(String),
    /// The node has stopped.
    #[error("node {0} is not running")]
    NotRunning(String),
    /// No outcome within the time given.
    #[error("eval on {node} did not finish within {after:?}")]
    Timeout {
        /// The node.
        node: String,
        /// The time given.
        after: Duration,
    },
    /// The chunk raised (or did not compile): the Lua error with traceback.
    #[error("{0}")]
    Lua(String),
}

/// Errors of the runtime in normal operation (a script or a file asked for
/// something the cluster cannot do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// A node's server type is not in the schema's `ServerType`.
    #[error("node {node}{where_} has type '{stype}', which ServerType of the schema does not define")]
    UnknownType {
        /// The node.
        node: String,
        /// Its type.
        stype: String,
        /// Where it is described (empty for this node).
        where_: &'static str,
    },
    /// The cluster file does not load; the previous cluster stays.
    #[error("{0}; the previous cluster stays in force")]
    ClusterFile(String),
    /// `cluster.join()` before `base.init` registered the node.
    #[error("cluster.join(): call base.init first (the node is not registered)")]
    NotRegistered,
    /// `cluster.join()` could not listen on the node's address.
    #[error("cluster.join(): cannot listen on {0}")]
    JoinBind(String),
}

/// Where a node is in stopping: the requests from other threads, why it
/// stopped on its own, whether a graceful stop began, and how far Lua got.
#[derive(Debug)]
pub(crate) struct StopState {
    /// Stop requests (shared with the node's handle).
    pub(crate) signal: Arc<StopSignal>,
    /// Why the node stopped on its own (shared with the handle).
    pub(crate) failure: Arc<std::sync::Mutex<Option<String>>>,
    /// Set when a graceful stop begins: incoming calls and sends are refused.
    pub(crate) stopping: std::cell::Cell<bool>,
    /// How far Lua is in a graceful stop (`core.stop_phase`: 1 onStop
    /// handlers running, 2 done).
    pub(crate) phase: std::cell::Cell<u8>,
    /// Wakes the stop sequence when Lua moves on.
    pub(crate) wake: Notify,
}

impl StopState {
    /// Not stopping.
    pub(crate) fn new(signal: Arc<StopSignal>, failure: Arc<std::sync::Mutex<Option<String>>>) -> Self {
        StopState {
            signal,
            failure,
            stopping: std::cell::Cell::new(false),
            phase: std::cell::Cell::new(0),
            wake: Notify::new(),
        }
    }
}
