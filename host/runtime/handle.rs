//! A node as other threads see it: starting it on its own thread, its
//! control mailbox, stopping it ([`NodeHandle`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::control::{Control, EvalError, NodeError, NodeOptions, StopSignal, CONTROL_MAILBOX};
use super::node::Core;
use crate::discovery::config::ClusterConfig;

/// A node running on its own thread.
#[derive(Debug)]
pub struct NodeHandle {
    pub(crate) name: String,
    pub(crate) ctrl: mpsc::Sender<Control>,
    pub(crate) stop: Arc<StopSignal>,
    pub(crate) failure: Arc<std::sync::Mutex<Option<String>>>,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
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
