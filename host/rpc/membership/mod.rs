//! Which peers a node should have: the difference between the peers it
//! knows and what discovery says (the static cluster file, or a ZooKeeper
//! listing), as a [`Plan`] of actions for the runtime to carry out.
//!
//! The rule (carried out by the runtime's `carry_out`):
//!
//! - peers are matched by name; this node itself is never added, removed
//!   or changed;
//! - a known peer no longer listed is removed (its calls fail with
//!   `node down: <peer>: removed from the <source>`, it goes offline); with a
//!   grace period (ZooKeeper: one session timeout) a peer whose connection is
//!   still up is kept until that long after it was first seen missing, so an
//!   outage of ZooKeeper does not drop nodes that are only re-registering; a
//!   peer not connected goes at once;
//! - a listed peer whose sid, address or type changed is removed (`its entry
//!   in the <source> changed`) and added again as listed: a reconnect. Its
//!   main script and `settings` do not count (they are the business of that
//!   node);
//! - a listed node whose sid no peer has is added (and connected once this
//!   node is registered), unless the schema does not define its type.
//!
//! Pure: time comes in as [`Grace::now`], and nothing here touches a peer.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::rpc::spec::NodeSpec;

/// Where a membership comes from (named in reasons and the summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The cluster file (static discovery).
    ClusterFile,
    /// A listing of ZooKeeper's `<root>/servers`.
    ZooKeeper,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::ClusterFile => "cluster file",
            Source::ZooKeeper => "ZooKeeper",
        })
    }
}

/// Why a peer is taken out; its `Display` is the cause of the `node down`
/// errors of the calls that were waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The source no longer lists it.
    Removed(Source),
    /// Its sid, address or type changed (it is added again as listed).
    Changed(Source),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Removed(s) => write!(f, "removed from the {s}"),
            Reason::Changed(s) => write!(f, "its entry in the {s} changed"),
        }
    }
}

/// A peer this node has now, as the plan needs to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Its spec as it was added.
    pub spec: NodeSpec,
    /// Whether its outgoing connection is verified (connecting does not
    /// count).
    pub connected: bool,
    /// Since when discovery no longer lists it while it stays connected.
    pub missing_since: Option<Instant>,
}

/// How long a missing peer that is still connected is kept, and the time
/// of this listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace {
    /// The grace period (ZooKeeper: the session timeout).
    pub period: Duration,
    /// When the listing was made.
    pub now: Instant,
}

/// One thing the runtime must do, in the order of [`Plan::actions`]
/// (every removal comes before every addition, so a sid freed by one can be
/// taken by another in the same plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Take the peer out: stop its connection task, mark it offline, fail
    /// its waiting calls with `node down: <name>: <reason>`, report its
    /// sends lost.
    Disconnect {
        /// Its server id.
        sid: u32,
        /// Its name.
        name: String,
        /// Why (the cause in the calls' errors).
        reason: Reason,
    },
    /// Keep the peer, missing but connected and within its grace; remember
    /// `since` as its `missing_since` (unchanged if it was set).
    KeepMissing {
        /// Its server id.
        sid: u32,
        /// Since when it is missing.
        since: Instant,
    },
    /// The peer, once missing, is listed again: forget its `missing_since`.
    Listed {
        /// Its server id.
        sid: u32,
    },
    /// Add this node as a peer, and connect to it once this node is
    /// registered.
    Connect(NodeSpec),
    /// Leave out this listed node: the schema does not define its type
    /// (log [`Plan::unknown_type`]).
    IgnoreUnknownType(NodeSpec),
}

/// What a membership change does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Where the membership came from.
    pub source: Source,
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// Names of the nodes added (not those changed), in listing order.
    pub added: Vec<String>,
    /// Names of the peers removed, by name.
    pub removed: Vec<String>,
    /// Names of the peers whose entry changed, by name.
    pub changed: Vec<String>,
}

impl Plan {
    /// `<source>: added [a, b], removed [], changed [c]`, the line the
    /// runtime logs and `core.reload_cluster` returns.
    pub fn summary(&self) -> String {
        format!(
            "{}: added [{}], removed [{}], changed [{}]",
            self.source,
            self.added.join(", "),
            self.removed.join(", "),
            self.changed.join(", ")
        )
    }

    /// Whether to log the summary: when something changed, and after every
    /// reload of the cluster file (a listing that changed nothing is quiet).
    pub fn log_summary(&self) -> bool {
        !(self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty())
            || self.source == Source::ClusterFile
    }

    /// True when a peer is kept in its grace period (discovery should list
    /// again soon to end it).
    #[cfg(test)]
    pub fn has_missing(&self) -> bool {
        self.actions.iter().any(|a| matches!(a, Action::KeepMissing { .. }))
    }

    /// The error logged for a listed node of a type the schema lacks.
    pub fn unknown_type(&self, spec: &NodeSpec) -> String {
        format!(
            "node {} ({}) has type '{}', which ServerType of the schema does not define; ignored",
            spec.name, self.source, spec.stype
        )
    }
}

/// True when `b` is the same peer as `a` for the connection: sid, address
/// and type (the main script and settings do not matter to peers).
fn same(a: &NodeSpec, b: &NodeSpec) -> bool {
    a.sid == b.sid && a.addr == b.addr && a.stype == b.stype
}

/// Plans the change from the peers `known` (this node `me` among them or
/// not) to the nodes `listed` by `source`.
///
/// `grace`: keep missing peers that are still connected (see [`Grace`]);
/// `None` removes them at once. `known_type`: `None` before this node has
/// registered (no schema types yet: nodes are added but not connected, and
/// not checked); after, nodes whose type it rejects are ignored.
///
/// Where a listing holds several nodes of one name, the last one is the one
/// known peers are compared with; several of one sid, the first is added.
pub fn plan(
    me: &NodeSpec,
    known: &[Known],
    listed: &[NodeSpec],
    source: Source,
    grace: Option<Grace>,
    known_type: Option<&dyn Fn(&str) -> bool>,
) -> Plan {
    let wanted: HashMap<&str, &NodeSpec> = listed.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut old: Vec<&Known> = known.iter().collect();
    old.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    let mut sids: HashSet<u32> = known.iter().map(|k| k.spec.sid).collect();
    let mut plan = Plan {
        source,
        actions: Vec::new(),
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
    };
    for o in old {
        let (sid, name) = (o.spec.sid, &o.spec.name);
        if sid == me.sid {
            continue;
        }
        match wanted.get(name.as_str()) {
            None => {
                if let (Some(g), true) = (grace, o.connected) {
                    let since = o.missing_since.unwrap_or(g.now);
                    if g.now.saturating_duration_since(since) < g.period {
                        plan.actions.push(Action::KeepMissing { sid, since });
                        continue;
                    }
                }
                plan.removed.push(name.clone());
                sids.remove(&sid);
                plan.actions.push(Action::Disconnect {
                    sid,
                    name: name.clone(),
                    reason: Reason::Removed(source),
                });
            }
            Some(n) if !same(n, &o.spec) => {
                plan.changed.push(name.clone());
                sids.remove(&sid);
                plan.actions.push(Action::Disconnect {
                    sid,
                    name: name.clone(),
                    reason: Reason::Changed(source),
                });
            }
            Some(_) => {
                if o.missing_since.is_some() {
                    plan.actions.push(Action::Listed { sid });
                }
            }
        }
    }
    for n in listed {
        if n.name == me.name || n.sid == me.sid || sids.contains(&n.sid) {
            continue;
        }
        if known_type.is_some_and(|ok| !ok(&n.stype)) {
            plan.actions.push(Action::IgnoreUnknownType(n.clone()));
            continue;
        }
        if !plan.changed.contains(&n.name) {
            plan.added.push(n.name.clone());
        }
        sids.insert(n.sid);
        plan.actions.push(Action::Connect(n.clone()));
    }
    plan
}

/// [`plan`] for a reload of the cluster file: no grace.
pub fn from_cluster_file(
    me: &NodeSpec,
    known: &[Known],
    nodes: &[NodeSpec],
    known_type: Option<&dyn Fn(&str) -> bool>,
) -> Plan {
    plan(me, known, nodes, Source::ClusterFile, None, known_type)
}

/// [`plan`] for a ZooKeeper listing made at `now`: missing peers still
/// connected are kept for one `session_timeout`.
pub fn from_listing(
    me: &NodeSpec,
    known: &[Known],
    listed: &[NodeSpec],
    session_timeout: Duration,
    now: Instant,
    known_type: Option<&dyn Fn(&str) -> bool>,
) -> Plan {
    let grace = Grace {
        period: session_timeout,
        now,
    };
    plan(me, known, listed, Source::ZooKeeper, Some(grace), known_type)
}

/// What a reloaded cluster file says about this node itself, which takes
/// effect only on restart; its `Display` is the warning logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileNotice {
    /// The file switches between static and ZooKeeper discovery (the old
    /// discovery stays).
    DiscoverySwitch,
    /// Static discovery, and the file no longer has this node.
    SelfRemoved,
    /// This node's own entry changed (any field, its main script included).
    SelfChanged,
    /// The settings this node sees in `conf` changed.
    SelfSettingsChanged,
}

impl fmt::Display for FileNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileNotice::DiscoverySwitch => {
                "the cluster file switches discovery (static / ZooKeeper): that takes effect on restart"
            }
            FileNotice::SelfRemoved => "this node is no longer in the cluster file; it keeps running until stopped",
            FileNotice::SelfChanged => {
                "this node's own entry changed in the cluster file; that takes effect on restart"
            }
            FileNotice::SelfSettingsChanged => {
                "this node's settings changed in the cluster file; conf shows them after a restart"
            }
        })
    }
}

/// The summary of a cluster-file reload under ZooKeeper discovery (peers
/// do not come from the file, so no plan is made).
pub const ZK_FILE_RELOADED: &str = "cluster file reloaded (peers come from ZooKeeper)";

/// The warnings of a cluster-file reload about this node `me`: `zk_before`
/// / `zk_after` whether the old / new file names ZooKeeper, `new_self` this
/// node's entry in the new file, `settings_changed` whether the settings it
/// sees changed. The discovery in force stays the old one.
pub fn file_notices(
    me: &NodeSpec,
    zk_before: bool,
    zk_after: bool,
    new_self: Option<&NodeSpec>,
    settings_changed: bool,
) -> Vec<FileNotice> {
    let mut v = Vec::new();
    if zk_before != zk_after {
        v.push(FileNotice::DiscoverySwitch);
    }
    match new_self {
        None if !zk_before => v.push(FileNotice::SelfRemoved),
        Some(s) if s != me => v.push(FileNotice::SelfChanged),
        _ => {}
    }
    if settings_changed {
        v.push(FileNotice::SelfSettingsChanged);
    }
    v
}

#[cfg(test)]
mod tests;
