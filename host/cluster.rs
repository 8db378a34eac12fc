//! Running several nodes of a cluster in one process (`luahost up`, tests).

use std::path::Path;
use std::sync::Arc;

use crate::discovery::config::{ClusterConfig, ConfigError};
use crate::runtime::{self as node, NodeError, NodeHandle, NodeOptions};

/// Why a local cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cluster file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A node failed to start (the others were stopped).
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// The options node `name` (the `i`-th started) runs with: on a pool, the
/// worker its `thread = k` asks for, else the next one in turn.
fn placed(config: &ClusterConfig, opts: &NodeOptions, name: &str, i: usize) -> NodeOptions {
    let mut o = opts.clone();
    if let Some(pool) = &opts.pool {
        o.worker = config.threads.get(name).copied().unwrap_or(i) % pool.len();
    }
    o
}

/// Every node of a cluster file in this process: each on its own thread, or
/// on the worker threads of a pool ([`NodeOptions::pool`]).
#[derive(Debug)]
pub struct LocalCluster {
    /// The configuration the nodes run with.
    pub config: Arc<ClusterConfig>,
    nodes: Vec<NodeHandle>,
    opts: NodeOptions,
    all: bool,
    /// Stop requests so far (0, 1: graceful, 2: at once).
    stops: std::cell::Cell<u8>,
    /// Whether the nodes with a store were asked to stop (after the others).
    stores_asked: std::cell::Cell<bool>,
}

impl LocalCluster {
    /// Loads `path` (a cluster file or a folder with `cluster.lua`) and starts
    /// its nodes, or only those named in `only` when it is not empty.
    ///
    /// # Errors
    ///
    /// [`ClusterError`]; on a node failure the nodes already started are stopped.
    pub fn start(path: &Path, only: &[String]) -> Result<LocalCluster, ClusterError> {
        let config = Arc::new(ClusterConfig::load(path)?);
        Self::start_opts(config, only, NodeOptions::default())
    }

    /// Starts the nodes of an already loaded configuration.
    ///
    /// # Errors
    ///
    /// As [`LocalCluster::start`].
    pub fn start_with(config: Arc<ClusterConfig>, only: &[String]) -> Result<LocalCluster, ClusterError> {
        Self::start_opts(config, only, NodeOptions::default())
    }

    /// Starts the nodes with the given options (e.g. watching scripts).
    ///
    /// # Errors
    ///
    /// As [`LocalCluster::start`].
    pub fn start_opts(
        config: Arc<ClusterConfig>,
        only: &[String],
        opts: NodeOptions,
    ) -> Result<LocalCluster, ClusterError> {
        let mut opts = opts;
        // nodes started together talk in memory, not over loopback TCP
        opts.local.get_or_insert_with(crate::net::stream::LocalNet::new);
        let names: Vec<String> = if only.is_empty() {
            config.nodes.keys().cloned().collect()
        } else {
            only.to_vec()
        };
        let mut nodes = Vec::new();
        for (i, name) in names.into_iter().enumerate() {
            let opts = placed(&config, &opts, &name, i);
            match node::start_with(config.clone(), &name, opts) {
                Ok(h) => nodes.push(h),
                Err(e) => {
                    for h in nodes {
                        h.shutdown();
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(LocalCluster {
            config,
            nodes,
            opts,
            all: only.is_empty(),
            stops: std::cell::Cell::new(0),
            stores_asked: std::cell::Cell::new(false),
        })
    }

    /// The first node that stopped on its own, and why.
    pub fn failure(&self) -> Option<(String, String)> {
        self.nodes
            .iter()
            .find_map(|n| n.failure().map(|f| (n.name().to_string(), f)))
    }

    /// Names of the running nodes.
    pub fn names(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name()).collect()
    }

    /// The running node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeHandle> {
        self.nodes.iter().find(|n| n.name() == name)
    }

    /// Follows a changed cluster file: starts the nodes it added and stops
    /// the ones it removed (when this cluster runs all nodes of the file).
    /// The running nodes re-read the file themselves. A file that does not
    /// load changes nothing.
    pub fn follow(&mut self) {
        if !self.all {
            return;
        }
        let config = match ClusterConfig::load(&self.config.file) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                tracing::error!("{e}; the previous cluster stays in force");
                return;
            }
        };
        let old = self.config.clone();
        let (keep, gone): (Vec<NodeHandle>, Vec<NodeHandle>) =
            std::mem::take(&mut self.nodes).into_iter().partition(|n| {
                let name = n.name();
                config.nodes.contains_key(name)
                    && config.nodes.get(name) == old.nodes.get(name)
                    && config.settings_for(name) == old.settings_for(name)
                    && config.metrics.get(name) == old.metrics.get(name)
            });
        self.nodes = keep;
        for n in gone {
            if config.nodes.contains_key(n.name()) {
                tracing::info!("{}'s entry changed in the cluster file: restarting it", n.name());
            } else {
                tracing::info!("{} left the cluster file: stopping it", n.name());
            }
            n.shutdown();
        }
        let running: Vec<String> = self.nodes.iter().map(|n| n.name().to_string()).collect();
        for (i, name) in config.nodes.keys().enumerate() {
            if running.contains(name) {
                continue;
            }
            match node::start_with(config.clone(), name, placed(&config, &self.opts, name, i)) {
                Ok(h) => {
                    tracing::info!("{name} joined the cluster file: started");
                    self.nodes.push(h);
                }
                Err(e) => tracing::error!("cannot start {name}: {e}"),
            }
        }
        self.config = config;
    }

    /// Whether node `n` owns a store (a DB node).
    fn has_store(&self, n: &NodeHandle) -> bool {
        self.config.stores.contains_key(n.name())
    }

    /// Asks every node to stop (see [`NodeHandle::stop`]: the first request
    /// is graceful, a second one ends the nodes at once); returns at once.
    /// On a graceful stop the DB nodes (those with a store) stop last,
    /// once the others have ended ([`LocalCluster::stopped`] asks them), so
    /// that what the others write while stopping (persistent entities, onStop
    /// handlers) reaches the store.
    pub fn stop(&self) {
        let stops = self.stops.get().saturating_add(1);
        self.stops.set(stops);
        for n in &self.nodes {
            if !self.has_store(n) {
                n.stop();
            } else if stops > 1 {
                if !self.stores_asked.replace(true) {
                    n.stop();
                }
                n.stop();
            }
        }
        self.stopped();
    }

    /// True once every node's thread has ended. During a graceful stop, asks
    /// the DB nodes to stop once the others have ended.
    pub fn stopped(&self) -> bool {
        if self.stops.get() > 0
            && !self.stores_asked.get()
            && self
                .nodes
                .iter()
                .filter(|n| !self.has_store(n))
                .all(|n| n.is_finished())
        {
            self.stores_asked.set(true);
            for n in self.nodes.iter().filter(|n| self.has_store(n)) {
                n.stop();
            }
        }
        self.nodes.iter().all(|n| n.is_finished())
    }

    /// Stops every node gracefully and waits for them (the DB nodes last).
    pub fn shutdown(self) {
        let (stores, others): (Vec<NodeHandle>, Vec<NodeHandle>) = {
            let config = self.config.clone();
            self.nodes
                .into_iter()
                .partition(|n| config.stores.contains_key(n.name()))
        };
        for n in &others {
            n.stop();
        }
        for n in others {
            n.join();
        }
        for n in &stores {
            n.stop();
        }
        for n in stores {
            n.join();
        }
    }
}
