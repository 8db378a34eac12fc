//! A node as other threads see it: starting it on its own thread or on a
//! worker of a pool, its control mailbox, stopping it ([`NodeHandle`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::control::{Control, EvalError, NodeError, NodeOptions, NodeStats, StopSignal, CONTROL_MAILBOX};
use super::node::Core;
use super::workers::{Done, SetOnDrop};
use crate::discovery::config::ClusterConfig;

/// A node running on its own thread or on a worker of a pool.
#[derive(Debug)]
pub struct NodeHandle {
    pub(crate) name: String,
    pub(crate) ctrl: mpsc::Sender<Control>,
    pub(crate) stop: Arc<StopSignal>,
    pub(crate) failure: Arc<std::sync::Mutex<Option<String>>>,
    /// Its own thread, when it has one.
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
    /// Set when the node has ended.
    pub(crate) done: Arc<Done>,
    /// The worker of the pool it runs on, if any.
    pub(crate) worker: Option<usize>,
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

    /// True once the node has ended.
    pub fn is_finished(&self) -> bool {
        self.done.is_set()
    }

    /// The worker thread of the pool it runs on (`worker-<k>`), or `None`
    /// when it has a thread of its own.
    pub fn worker(&self) -> Option<usize> {
        self.worker
    }

    /// Waits for the node to end, and for its own thread if it has one.
    fn wait_ended(&mut self) {
        self.done.wait();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// A handle that only measures the node, for another thread.
    pub fn probe(&self) -> NodeProbe {
        NodeProbe {
            ctrl: self.ctrl.clone(),
        }
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
    /// [`EvalError`]: the Lua error (with traceback), a timeout, or a node
    /// that is not running or not keeping up.
    pub fn eval(&self, code: &str, timeout: Duration) -> Result<String, EvalError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.ctrl
            .try_send(Control::Eval {
                code: code.to_string(),
                reply: tx,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EvalError::MailboxFull(self.name.clone()),
                mpsc::error::TrySendError::Closed(_) => EvalError::NotRunning(self.name.clone()),
            })?;
        rx.recv_timeout(timeout)
            .map_err(|_| EvalError::Timeout {
                node: self.name.clone(),
                after: timeout,
            })?
            .map_err(EvalError::Lua)
    }

    /// Stops the node gracefully ([`NodeHandle::stop`]) and waits for its
    /// thread to end.
    pub fn shutdown(mut self) {
        self.stop();
        self.wait_ended();
    }

    /// Waits until the node ends (after [`NodeHandle::stop`] or a fatal error).
    pub fn join(mut self) {
        self.wait_ended();
    }
}

/// Measures a node from another thread ([`NodeHandle::probe`]).
#[derive(Debug, Clone)]
pub struct NodeProbe {
    ctrl: mpsc::Sender<Control>,
}

impl NodeProbe {
    /// The node's figures, or None if it does not answer within `timeout`
    /// (stopped, or busy).
    pub fn stats(&self, timeout: Duration) -> Option<NodeStats> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.ctrl.try_send(Control::Stats { reply: tx }).ok()?;
        rx.recv_timeout(timeout).ok()
    }
}

/// Dropping a handle stops its node at once (use [`NodeHandle::shutdown`]
/// for a graceful stop).
impl Drop for NodeHandle {
    fn drop(&mut self) {
        if !self.done.is_set() {
            self.stop_now();
        }
        self.wait_ended();
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
    let done = Arc::new(Done::default());
    let done_in = done.clone();
    let pool = opts.pool.clone();
    let worker = opts.worker;
    // the node: boot, then run until stopped. Its log lines carry its name:
    // on a thread of its own the thread's name; on a worker it shares, a
    // span around all its tasks (entered on every poll, so only there)
    let shared = pool.is_some();
    let node = move || {
        use tracing::Instrument;
        let span = if shared {
            tracing::info_span!("node", name = %spec.name)
        } else {
            tracing::Span::none()
        };
        async move {
            let _done = SetOnDrop(done_in);
            match Core::boot(cluster, spec, stop_rx.clone(), failure_in, opts.local.clone()).await {
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
                Ok(core) => {
                    let _ = ready_tx.send(Ok(()));
                    core.run(ctrl_rx, stop_rx, opts).await;
                }
            }
        }
        .instrument(span)
    };
    let thread = match &pool {
        Some(pool) => {
            let submitted = pool.submit(
                worker,
                Box::new(move || {
                    // the node's tasks live in a LocalSet of their own,
                    // dropped (so cancelled: listeners closed, peers gone)
                    // when the node ends, as its own thread would be
                    tokio::task::spawn_local(async move {
                        let local = tokio::task::LocalSet::new();
                        local.run_until(node()).await;
                    });
                }),
            );
            if !submitted {
                return Err(NodeError::Script {
                    node: thread_name,
                    message: "its worker thread has ended".into(),
                });
            }
            None
        }
        None => Some(
            std::thread::Builder::new()
                .name(thread_name.clone())
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            // (the node never started: its ready channel closes)
                            tracing::error!("cannot start a runtime: {e}");
                            return;
                        }
                    };
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, node());
                })
                .map_err(|e| NodeError::Thread {
                    node: thread_name.clone(),
                    source: e,
                })?,
        ),
    };
    let worker = pool.as_ref().map(|p| worker % p.len());
    let handle = |thread| NodeHandle {
        name: thread_name.clone(),
        ctrl: ctrl_tx.clone(),
        stop: stop.clone(),
        failure: failure.clone(),
        thread,
        done: done.clone(),
        worker,
    };
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle(thread)),
        Ok(Err(e)) => {
            handle(thread).wait_ended();
            Err(e)
        }
        Err(_) => {
            handle(thread).wait_ended();
            Err(NodeError::Script {
                node: thread_name,
                message: "node thread ended while starting".into(),
            })
        }
    }
}
