//! Carrying out membership changes: cluster-file reloads and ZooKeeper
//! listings, planned by `rpc::membership`.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

use super::control::RuntimeError;
use super::node::Core;
use crate::discovery::config::{ClusterConfig, NodeSpec};
use crate::net::PeerState;
use crate::rpc::membership;

impl Core {
    /// Re-reads the cluster file now and applies it from a task (so a Lua
    /// caller is not re-entered by the Online/Offline events it causes).
    /// A file that fails to parse leaves the cluster as it was.
    pub(crate) fn reload_cluster_later(self: &Rc<Self>) -> Result<String, RuntimeError> {
        let file = self.cluster.borrow().file.clone();
        match ClusterConfig::load(&file) {
            Ok(new) => {
                let core = self.clone();
                crate::net::spawn(async move {
                    core.apply_cluster(new);
                });
                Ok(format!("{} loaded; applying it", file.display()))
            }
            Err(e) => {
                let e = RuntimeError::ClusterFile(e.to_string());
                error!("{e}");
                Err(e)
            }
        }
    }

    /// Re-reads the cluster file and applies it. A file that fails to parse
    /// leaves the cluster as it was.
    pub(crate) fn reload_cluster(self: &Rc<Self>) -> Result<String, RuntimeError> {
        let file = self.cluster.borrow().file.clone();
        match ClusterConfig::load(&file) {
            Ok(new) => Ok(self.apply_cluster(new)),
            Err(e) => {
                let e = RuntimeError::ClusterFile(e.to_string());
                error!("{e}");
                Err(e)
            }
        }
    }

    pub(crate) fn apply_cluster(self: &Rc<Self>, mut new: ClusterConfig) -> String {
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
        self.routing
            .peers
            .borrow()
            .values()
            .any(|p| p.missing_since.get().is_some())
    }

    /// The peers as `rpc::membership` sees them.
    pub(crate) fn known_peers(&self) -> Vec<membership::Known> {
        self.routing
            .peers
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
    pub(crate) fn type_check(&self) -> Option<Box<dyn Fn(&str) -> bool + '_>> {
        if self.typing.registered.get() {
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
    pub(crate) fn carry_out(self: &Rc<Self>, plan: membership::Plan) -> String {
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
                    if self.typing.registered.get() {
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
