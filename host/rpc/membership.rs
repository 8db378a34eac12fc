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
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn spec(name: &str, sid: u32, port: u16) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            stype: "Hall".to_string(),
            sid,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            main: "scripts/hall/main.lua".into(),
        }
    }

    fn known(s: &NodeSpec) -> Known {
        Known {
            spec: s.clone(),
            connected: true,
            missing_since: None,
        }
    }

    fn me() -> NodeSpec {
        spec("me", 1, 7001)
    }

    fn file(known: &[Known], nodes: &[NodeSpec]) -> Plan {
        from_cluster_file(&me(), known, nodes, None)
    }

    fn disconnect(sid: u32, name: &str, reason: Reason) -> Action {
        Action::Disconnect {
            sid,
            name: name.to_string(),
            reason,
        }
    }

    #[test]
    fn new_nodes_are_connected_in_listing_order() {
        let (a, b) = (spec("b_node", 3, 7003), spec("a_node", 2, 7002));
        let p = file(&[known(&me())], &[me(), a.clone(), b.clone()]);
        assert_eq!(p.actions, vec![Action::Connect(a), Action::Connect(b)]);
        assert_eq!(p.added, vec!["b_node", "a_node"]);
        assert_eq!(
            p.summary(),
            "cluster file: added [b_node, a_node], removed [], changed []"
        );
    }

    #[test]
    fn a_node_gone_from_the_file_is_disconnected_at_once() {
        let a = spec("a", 2, 7002);
        let p = file(&[known(&me()), known(&a)], &[me()]);
        assert_eq!(
            p.actions,
            vec![disconnect(2, "a", Reason::Removed(Source::ClusterFile))]
        );
        assert_eq!(p.removed, vec!["a"]);
        assert_eq!(p.summary(), "cluster file: added [], removed [a], changed []");
    }

    #[test]
    fn reasons_read_as_the_node_down_causes_of_today() {
        assert_eq!(
            Reason::Removed(Source::ClusterFile).to_string(),
            "removed from the cluster file"
        );
        assert_eq!(
            Reason::Removed(Source::ZooKeeper).to_string(),
            "removed from the ZooKeeper"
        );
        assert_eq!(
            Reason::Changed(Source::ClusterFile).to_string(),
            "its entry in the cluster file changed"
        );
        assert_eq!(
            Reason::Changed(Source::ZooKeeper).to_string(),
            "its entry in the ZooKeeper changed"
        );
    }

    #[test]
    fn a_new_address_is_a_reconnect() {
        let old = spec("a", 2, 7002);
        let new = spec("a", 2, 7102);
        let p = file(&[known(&old)], std::slice::from_ref(&new));
        assert_eq!(
            p.actions,
            vec![
                disconnect(2, "a", Reason::Changed(Source::ClusterFile)),
                Action::Connect(new)
            ]
        );
        assert_eq!(p.changed, vec!["a"]);
        assert!(p.added.is_empty(), "a changed node is not also listed as added");
    }

    #[test]
    fn a_new_type_or_sid_is_a_reconnect_too() {
        let old = spec("a", 2, 7002);
        let mut typed = old.clone();
        typed.stype = "Gate".into();
        let p = file(&[known(&old)], &[typed.clone()]);
        assert_eq!(p.changed, vec!["a"]);
        assert_eq!(p.actions.last(), Some(&Action::Connect(typed)));
        let mut moved = old.clone();
        moved.sid = 9;
        let p = file(&[known(&old)], &[moved.clone()]);
        assert_eq!(
            p.actions,
            vec![
                disconnect(2, "a", Reason::Changed(Source::ClusterFile)),
                Action::Connect(moved)
            ]
        );
    }

    #[test]
    fn a_new_main_script_changes_nothing_for_peers() {
        let old = spec("a", 2, 7002);
        let mut new = old.clone();
        new.main = "elsewhere/main.lua".into();
        let p = file(&[known(&old)], &[new]);
        assert!(p.actions.is_empty());
        assert!(p.log_summary(), "a file reload is always logged");
        assert_eq!(p.summary(), "cluster file: added [], removed [], changed []");
    }

    #[test]
    fn this_node_is_never_removed_changed_or_added() {
        let mut moved_me = me();
        moved_me.addr = "127.0.0.1:9999".parse().unwrap();
        // missing from the file
        assert!(file(&[known(&me())], &[]).actions.is_empty());
        // changed in the file
        assert!(file(&[known(&me())], &[moved_me]).actions.is_empty());
        // not known yet, listed (ZooKeeper lists this node too)
        assert!(from_listing(&me(), &[], &[me()], S, Instant::now(), None)
            .actions
            .is_empty());
        // another name claiming this node's sid, or this name with another sid
        let p = file(&[], &[spec("impostor", 1, 7009), spec("me", 5, 7001)]);
        assert!(p.actions.is_empty());
    }

    #[test]
    fn a_missing_peer_still_connected_is_kept_for_the_grace() {
        let t = Instant::now();
        let a = spec("a", 2, 7002);
        let p = from_listing(&me(), &[known(&a)], &[me()], 10 * S, t, None);
        assert_eq!(p.actions, vec![Action::KeepMissing { sid: 2, since: t }]);
        assert!(p.removed.is_empty());
        assert!(p.has_missing());
        assert!(!p.log_summary(), "a quiet listing is not logged");
        // later listings keep the first instant it went missing
        let mut k = known(&a);
        k.missing_since = Some(t);
        let p = from_listing(&me(), &[k.clone()], &[], 10 * S, t + 9 * S, None);
        assert_eq!(p.actions, vec![Action::KeepMissing { sid: 2, since: t }]);
        // ... until the grace has passed (at exactly the grace: gone)
        let p = from_listing(&me(), &[k], &[], 10 * S, t + 10 * S, None);
        assert_eq!(p.actions, vec![disconnect(2, "a", Reason::Removed(Source::ZooKeeper))]);
        assert_eq!(p.removed, vec!["a"]);
        assert!(!p.has_missing());
        assert_eq!(p.summary(), "ZooKeeper: added [], removed [a], changed []");
    }

    #[test]
    fn a_missing_peer_not_connected_goes_at_once() {
        let t = Instant::now();
        let a = spec("a", 2, 7002);
        let mut k = known(&a);
        k.connected = false;
        let p = from_listing(&me(), &[k.clone()], &[], 10 * S, t, None);
        assert_eq!(p.actions, vec![disconnect(2, "a", Reason::Removed(Source::ZooKeeper))]);
        // even one that was in its grace and has just lost its connection
        k.missing_since = Some(t);
        let p = from_listing(&me(), &[k], &[], 10 * S, t + S, None);
        assert_eq!(p.removed, vec!["a"]);
    }

    #[test]
    fn without_grace_a_connected_peer_goes_at_once() {
        let a = spec("a", 2, 7002);
        let p = file(&[known(&a)], &[]);
        assert_eq!(p.removed, vec!["a"]);
    }

    #[test]
    fn a_missing_peer_listed_again_is_no_longer_missing() {
        let t = Instant::now();
        let a = spec("a", 2, 7002);
        let mut k = known(&a);
        k.missing_since = Some(t);
        let p = from_listing(&me(), &[k], std::slice::from_ref(&a), 10 * S, t + S, None);
        assert_eq!(p.actions, vec![Action::Listed { sid: 2 }]);
        assert!(!p.has_missing());
        // a peer that was never missing needs nothing
        let p = from_listing(&me(), &[known(&a)], &[a], 10 * S, t, None);
        assert!(p.actions.is_empty());
    }

    #[test]
    fn a_missing_peer_listed_again_with_a_new_address_is_reconnected() {
        let t = Instant::now();
        let a = spec("a", 2, 7002);
        let moved = spec("a", 2, 7102);
        let mut k = known(&a);
        k.missing_since = Some(t);
        let p = from_listing(&me(), &[k], std::slice::from_ref(&moved), 10 * S, t, None);
        assert_eq!(
            p.actions,
            vec![
                disconnect(2, "a", Reason::Changed(Source::ZooKeeper)),
                Action::Connect(moved)
            ]
        );
    }

    #[test]
    fn unknown_types_are_ignored_once_registered() {
        let mut g = spec("g", 4, 7004);
        g.stype = "Nope".into();
        let h = spec("h", 5, 7005);
        let types = |t: &str| t == "Hall";
        let p = from_cluster_file(&me(), &[], &[g.clone(), h.clone()], Some(&types));
        assert_eq!(
            p.actions,
            vec![Action::IgnoreUnknownType(g.clone()), Action::Connect(h.clone())]
        );
        assert_eq!(p.added, vec!["h"]);
        assert_eq!(
            p.unknown_type(&g),
            "node g (cluster file) has type 'Nope', which ServerType of the schema does not define; ignored"
        );
        // before registration nothing is checked
        let p = from_cluster_file(&me(), &[], &[g.clone()], None);
        assert_eq!(p.actions, vec![Action::Connect(g)]);
    }

    #[test]
    fn a_sid_freed_by_a_removal_is_taken_in_the_same_plan() {
        let a = spec("a", 2, 7002);
        let b = spec("b", 2, 7003);
        let p = file(&[known(&a)], std::slice::from_ref(&b));
        assert_eq!(
            p.actions,
            vec![
                disconnect(2, "a", Reason::Removed(Source::ClusterFile)),
                Action::Connect(b)
            ]
        );
    }

    #[test]
    fn a_new_node_on_the_sid_of_a_peer_in_its_grace_waits() {
        let t = Instant::now();
        let a = spec("a", 2, 7002);
        let b = spec("b", 2, 7003);
        let p = from_listing(&me(), &[known(&a)], &[b], 10 * S, t, None);
        assert_eq!(p.actions, vec![Action::KeepMissing { sid: 2, since: t }]);
        assert!(p.added.is_empty());
    }

    #[test]
    fn a_changed_node_whose_new_sid_is_taken_is_only_disconnected() {
        // today's behaviour: it shows as changed, and is not added back
        let a = spec("a", 2, 7002);
        let c = spec("c", 3, 7003);
        let mut moved = a.clone();
        moved.sid = 3;
        let p = file(&[known(&a), known(&c)], &[moved, c]);
        assert_eq!(
            p.actions,
            vec![disconnect(2, "a", Reason::Changed(Source::ClusterFile))]
        );
        assert_eq!(p.changed, vec!["a"]);
    }

    #[test]
    fn of_two_listed_nodes_with_one_sid_the_first_is_added() {
        let a = spec("a", 2, 7002);
        let b = spec("b", 2, 7003);
        let p = file(&[], &[a.clone(), b]);
        assert_eq!(p.actions, vec![Action::Connect(a)]);
        assert_eq!(p.added, vec!["a"]);
    }

    #[test]
    fn two_listed_nodes_with_one_name_flap() {
        // today's behaviour: the last one of the name is compared with, so a
        // peer added from the first is taken out and added again each time
        let first = spec("x", 2, 7002);
        let second = spec("x", 3, 7003);
        let listed = [first.clone(), second.clone()];
        let p = from_listing(&me(), &[], &listed, S, Instant::now(), None);
        assert_eq!(
            p.actions,
            vec![Action::Connect(first.clone()), Action::Connect(second.clone())]
        );
        let now_known = [known(&first), known(&second)];
        let p = from_listing(&me(), &now_known, &listed, S, Instant::now(), None);
        assert_eq!(
            p.actions,
            vec![
                disconnect(2, "x", Reason::Changed(Source::ZooKeeper)),
                Action::Connect(first)
            ]
        );
    }

    #[test]
    fn removed_and_changed_are_listed_by_name() {
        let peers = [spec("c", 4, 7004), spec("a", 2, 7002), spec("b", 3, 7003)];
        let ks: Vec<Known> = peers.iter().map(known).collect();
        let p = file(&ks, &[spec("b", 3, 7103)]);
        assert_eq!(p.removed, vec!["a", "c"]);
        assert_eq!(p.changed, vec!["b"]);
        assert_eq!(
            p.actions
                .iter()
                .filter(|a| matches!(a, Action::Disconnect { .. }))
                .count(),
            3
        );
        assert!(matches!(p.actions.last(), Some(Action::Connect(s)) if s.name == "b"));
    }

    #[test]
    fn a_quiet_listing_is_not_logged_a_changed_one_is() {
        let a = spec("a", 2, 7002);
        let t = Instant::now();
        assert!(!from_listing(&me(), &[known(&a)], std::slice::from_ref(&a), S, t, None).log_summary());
        assert!(from_listing(&me(), &[], &[a], S, t, None).log_summary());
    }

    #[test]
    fn file_notices_about_this_node() {
        let m = me();
        assert!(file_notices(&m, false, false, Some(&m), false).is_empty());
        assert_eq!(
            file_notices(&m, false, true, Some(&m), false),
            vec![FileNotice::DiscoverySwitch]
        );
        assert_eq!(
            file_notices(&m, false, false, None, false),
            vec![FileNotice::SelfRemoved]
        );
        assert!(
            file_notices(&m, true, true, None, false).is_empty(),
            "with ZooKeeper the file need not list this node"
        );
        let mut moved = m.clone();
        moved.main = "other.lua".into();
        assert_eq!(
            file_notices(&m, false, false, Some(&moved), true),
            vec![FileNotice::SelfChanged, FileNotice::SelfSettingsChanged]
        );
    }

    #[test]
    fn file_notice_texts_are_apply_clusters() {
        assert_eq!(
            FileNotice::DiscoverySwitch.to_string(),
            "the cluster file switches discovery (static / ZooKeeper): that takes effect on restart"
        );
        assert_eq!(
            FileNotice::SelfRemoved.to_string(),
            "this node is no longer in the cluster file; it keeps running until stopped"
        );
        assert_eq!(
            FileNotice::SelfChanged.to_string(),
            "this node's own entry changed in the cluster file; that takes effect on restart"
        );
        assert_eq!(
            FileNotice::SelfSettingsChanged.to_string(),
            "this node's settings changed in the cluster file; conf shows them after a restart"
        );
        assert_eq!(ZK_FILE_RELOADED, "cluster file reloaded (peers come from ZooKeeper)");
    }
}
