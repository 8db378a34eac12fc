//! Who is in the cluster: the cluster file ([`config`], static discovery,
//! watched by [`watch`], the one file watcher, also used for hot reload)
//! and ZooKeeper ([`zk`]: registration, watches, expiry, auth).
//!
//! Owns the sources of membership and turns them into node sets; it does not
//! open node connections.

pub mod config;
pub mod gate;
pub mod store;
pub mod watch;
pub mod zk;

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::net::NetHost;
use crate::rpc::spec::NodeSpec;

/// Wake-ups between the node and its ZooKeeper session.
#[derive(Debug, Default)]
pub(crate) struct DiscoverySignals {
    /// The node stops gracefully: leave discovery now.
    pub leave: Notify,
    /// Discovery was left (the node may go on stopping).
    pub left: Notify,
    /// `router.setLoad` changed the load: publish it.
    pub load_changed: Notify,
}

/// What discovery needs from the node it registers: what to publish about
/// it, and where membership changes go. Implemented by the runtime.
pub(crate) trait DiscoveryHost: NetHost {
    /// What the node's znode holds.
    fn registration(&self) -> zk::Registration;
    /// The server type names of the schema.
    fn type_names(&self) -> Vec<String>;
    /// The nodes discovery lists now (with their loads); those missing
    /// while still connected are kept for `grace`.
    fn apply_listing(this: &Rc<Self>, listed: Vec<NodeSpec>, loads: HashMap<u32, i64>, grace: Duration);
    /// Whether a peer is kept during its grace although no longer listed.
    fn has_missing(&self) -> bool;
    /// The node joins or leaves its own ring.
    fn set_self_online(&self, online: bool);
    /// The node cannot go on (e.g. refused credentials): stop it.
    fn fail(&self, reason: String);
    /// Wake-ups between the node and discovery.
    fn signals(&self) -> &DiscoverySignals;
}
