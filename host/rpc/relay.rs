//! Relay through Routers (`topology = "router"`), free of I/O: which nodes
//! are online as the Routers announce them ([`RouterMembership`]), and
//! through which Router a message to a node goes ([`NextHop`]). Router and
//! node ids are sids; events are arguments, decisions are return values.
//!
//! **Membership.** Each live Router announces the nodes verified with it:
//! online (with the node's incarnation) and offline. The merged view:
//!
//! - a node is online while at least one live Router says so;
//! - it goes offline when every Router that knew it said offline or went
//!   down (a node seen by only a dead Router goes offline with it);
//! - the incarnation is the newest any Router announced: a newer one means
//!   the node restarted, which is an offline followed by an online (its
//!   waiting calls fail as for any lost peer), and the older incarnation is
//!   forgotten in every Router's view; an announcement of an older one is
//!   stale and ignored, and an offline only takes out the incarnation it
//!   names, so announcements of two Routers may arrive in any order.
//!
//! Flapping at one Router while another keeps the node changes nothing the
//! runtime sees: [`Change`]s are only reported when the merged view moves.
//!
//! **Next hop.** A destination is sent through one Router at a time, chosen
//! among the live Routers that announce it online:
//!
//! - its **preferred** Router is the one of highest rendezvous hash
//!   (`mix64(router << 32 | dst)`, ties to the lower sid): every node picks
//!   the same Router for a destination without talking, the load spreads
//!   over Routers, and removing a Router moves only its own destinations;
//! - an assignment is **sticky**: it stays while its Router is live and
//!   reaches the destination, even when another Router comes up that the
//!   destination prefers. Moving a destination while messages are in
//!   flight through the old Router could reorder them (two paths); so it
//!   moves back to its preferred Router only in [`NextHop::settle`], which
//!   the runtime calls when it has nothing unacknowledged to that
//!   destination and the table has no call waiting on it;
//! - when a Router goes down ([`NextHop::router_down`]) or stops reaching a
//!   destination ([`NextHop::unreachable`]), the table returns the calls
//!   that were waiting through it and the destinations it served ([`Lost`]);
//!   the runtime fails those calls with `node down: <dst>: <cause>` where
//!   [`Lost::cause`] names the Router, reports the unacknowledged sends to
//!   those destinations lost, and the next [`NextHop::route`] picks another
//!   Router. Nothing is silently retried through another Router: a call
//!   either completes or fails.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::rpc::ring::mix64;

/// How the nodes of a cluster reach each other (`topology` in the cluster
/// file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Topology {
    /// Every node connects to every other (the default).
    #[default]
    Mesh,
    /// Nodes connect only to the Router nodes (and to DB nodes); everything
    /// else goes through a Router, which relays it by destination.
    Router,
}

/// The server type of the nodes that relay (`topology = "router"`).
pub const ROUTER_TYPE: &str = "Router";
/// The server type nodes also connect to directly (seed 000: every node
/// connects to the Router and to the DB).
pub const DB_TYPE: &str = "DB";

impl Topology {
    /// Whether `me` (of type `my_type`) keeps a direct connection to a peer
    /// of type `peer_type`; otherwise the peer is reached through a Router.
    /// A Router dials nobody (nodes dial it); every other node dials the
    /// Routers and the DB nodes, and a DB node every node (so that both
    /// sides of a pair agree on how they reach each other).
    pub fn direct(self, my_type: &str, peer_type: &str) -> bool {
        match self {
            Topology::Mesh => true,
            Topology::Router => {
                my_type != ROUTER_TYPE && (peer_type == ROUTER_TYPE || peer_type == DB_TYPE || my_type == DB_TYPE)
            }
        }
    }

    /// Whether a node of `my_type` relays for others.
    pub fn relays(self, my_type: &str) -> bool {
        self == Topology::Router && my_type == ROUTER_TYPE
    }
}

/// A change of the merged view, for the runtime to carry out like a peer
/// going online or offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The node is reachable (through at least one Router).
    Online {
        /// The node.
        sid: u32,
        /// Its incarnation.
        incarnation: u64,
    },
    /// The node is gone (no live Router announces it, or it restarted).
    Offline {
        /// The node.
        sid: u32,
        /// The incarnation that went.
        incarnation: u64,
    },
}

/// The nodes online as the live Routers announce them.
#[derive(Debug, Clone, Default)]
pub struct RouterMembership {
    /// Per live Router: the nodes it announces, with their incarnations.
    views: BTreeMap<u32, BTreeMap<u32, u64>>,
    /// The merged view reported to the runtime.
    online: BTreeMap<u32, u64>,
}

// (some accessors serve only the unit tests and diagnostics)
#[allow(dead_code)]
impl RouterMembership {
    /// An empty membership (no Router live).
    pub fn new() -> Self {
        Self::default()
    }

    /// The connection to `router` is verified: it is live, announcing
    /// nothing yet. No change (a Router already live keeps its view).
    pub fn router_up(&mut self, router: u32) {
        self.views.entry(router).or_default();
    }

    /// True when `router` is live.
    pub fn is_live(&self, router: u32) -> bool {
        self.views.contains_key(&router)
    }

    /// The live Routers, in sid order.
    pub fn routers(&self) -> Vec<u32> {
        self.views.keys().copied().collect()
    }

    /// The connection to `router` is lost: everything it announced is
    /// forgotten; the nodes no other Router announces go offline (in sid
    /// order).
    pub fn router_down(&mut self, router: u32) -> Vec<Change> {
        let Some(view) = self.views.remove(&router) else {
            return Vec::new();
        };
        view.keys().filter_map(|&sid| self.recheck(sid)).collect()
    }

    /// `router` announces `sid` online with `incarnation`. Ignored when the
    /// Router is not live or the incarnation is older than the one known.
    pub fn online(&mut self, router: u32, sid: u32, incarnation: u64) -> Vec<Change> {
        if !self.views.contains_key(&router) {
            return Vec::new();
        }
        let mut changes = Vec::new();
        match self.online.get(&sid).copied() {
            Some(known) if incarnation < known => return changes,
            Some(known) if incarnation > known => {
                // restarted: the old incarnation is gone everywhere
                for view in self.views.values_mut() {
                    view.remove(&sid);
                }
                changes.push(Change::Offline {
                    sid,
                    incarnation: known,
                });
                changes.push(Change::Online { sid, incarnation });
            }
            Some(_) => {}
            None => changes.push(Change::Online { sid, incarnation }),
        }
        if let Some(view) = self.views.get_mut(&router) {
            view.insert(sid, incarnation);
        }
        self.online.insert(sid, incarnation);
        changes
    }

    /// `router` announces `sid` of `incarnation` offline (or no longer
    /// reachable by it). Only that incarnation is taken out of the Router's
    /// view; the node goes offline when no live Router has it.
    pub fn offline(&mut self, router: u32, sid: u32, incarnation: u64) -> Vec<Change> {
        let Some(view) = self.views.get_mut(&router) else {
            return Vec::new();
        };
        if view.get(&sid).is_some_and(|&inc| inc <= incarnation) {
            view.remove(&sid);
        }
        self.recheck(sid).into_iter().collect()
    }

    /// `router`'s full list of the nodes verified with it (sent when its
    /// connection is verified again): its view becomes exactly `nodes`.
    /// Marks the Router live.
    pub fn snapshot(&mut self, router: u32, nodes: &[(u32, u64)]) -> Vec<Change> {
        let old = self.views.get(&router).cloned().unwrap_or_default();
        self.router_up(router);
        let mut changes = Vec::new();
        for (sid, inc) in old {
            if !nodes.iter().any(|&(s, _)| s == sid) {
                changes.extend(self.offline(router, sid, inc));
            }
        }
        for &(sid, inc) in nodes {
            changes.extend(self.online(router, sid, inc));
        }
        changes
    }

    /// True when some live Router announces `sid`.
    pub fn is_online(&self, sid: u32) -> bool {
        self.online.contains_key(&sid)
    }

    /// The incarnation of `sid` while it is online.
    pub fn incarnation(&self, sid: u32) -> Option<u64> {
        self.online.get(&sid).copied()
    }

    /// Every online node, in sid order.
    pub fn online_nodes(&self) -> Vec<u32> {
        self.online.keys().copied().collect()
    }

    /// The live Routers that reach `sid` (announce its current
    /// incarnation), in sid order.
    pub fn routers_for(&self, sid: u32) -> Vec<u32> {
        let Some(&inc) = self.online.get(&sid) else {
            return Vec::new();
        };
        self.views
            .iter()
            .filter(|(_, v)| v.get(&sid) == Some(&inc))
            .map(|(&r, _)| r)
            .collect()
    }

    /// After a view lost `sid`: offline if no live Router announces it.
    fn recheck(&mut self, sid: u32) -> Option<Change> {
        let inc = *self.online.get(&sid)?;
        if self.views.values().any(|v| v.contains_key(&sid)) {
            return None;
        }
        self.online.remove(&sid);
        Some(Change::Offline { sid, incarnation: inc })
    }
}

/// The preferred Router for `dst` among `routers`: highest rendezvous hash,
/// ties to the lower sid; `None` when there is none.
pub fn preferred(dst: u32, routers: &[u32]) -> Option<u32> {
    routers
        .iter()
        .copied()
        .max_by_key(|&r| (mix64((u64::from(r) << 32) | u64::from(dst)), std::cmp::Reverse(r)))
}

/// Why calls through a Router were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostWhy {
    /// The connection to the Router was lost.
    RouterDown,
    /// The Router announced the destination offline (its link to it broke,
    /// or the node went).
    Unreachable,
}

/// What a Router took with it: the runtime fails `calls` with
/// `node down: <dst>: <cause>`, and reports the unacknowledged sends to
/// `dsts` lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// The Router.
    pub router: u32,
    /// Why.
    pub why: LostWhy,
    /// The calls that were waiting through it: `(call id, dst)`, by call id.
    pub calls: Vec<(u32, u32)>,
    /// The destinations that were sent through it, in sid order.
    pub dsts: Vec<u32>,
}

impl Lost {
    /// The cause in the `node down` errors, naming the Router.
    pub fn cause(&self, router_name: &str) -> String {
        match self.why {
            LostWhy::RouterDown => format!("relayed through router {router_name}, which went down"),
            LostWhy::Unreachable => format!("router {router_name} lost its connection to it"),
        }
    }

    /// True when nothing was lost.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty() && self.dsts.is_empty()
    }
}

/// The next-hop table of one node: through which Router each destination
/// goes, and the calls waiting through each Router.
#[derive(Debug, Clone, Default)]
pub struct NextHop {
    /// Destination -> the Router it goes through.
    assigned: HashMap<u32, u32>,
    /// Call id -> (destination, Router).
    calls: HashMap<u32, (u32, u32)>,
    /// Destination -> calls waiting on it.
    waiting: HashMap<u32, usize>,
}

// (the per-call bookkeeping, begin_call / end_call, serves the unit tests:
// the runtime fails every call waiting on a destination whose Router went,
// since an assignment only moves when nothing waits)
#[allow(dead_code)]
impl NextHop {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Router to send a message to `dst` through: its current one while
    /// that reaches `dst`, else its preferred one among those that do
    /// (remembered). `None` when no live Router reaches `dst`.
    pub fn route(&mut self, dst: u32, members: &RouterMembership) -> Option<u32> {
        let reach = members.routers_for(dst);
        if let Some(&r) = self.assigned.get(&dst) {
            if reach.contains(&r) {
                return Some(r);
            }
        }
        let r = preferred(dst, &reach)?;
        self.assigned.insert(dst, r);
        Some(r)
    }

    /// The Router `dst` goes through now, if assigned (no change).
    pub fn current(&self, dst: u32) -> Option<u32> {
        self.assigned.get(&dst).copied()
    }

    /// Sends call `id` to `dst`: [`NextHop::route`], and the call is
    /// remembered as waiting through that Router until [`NextHop::end_call`].
    pub fn begin_call(&mut self, id: u32, dst: u32, members: &RouterMembership) -> Option<u32> {
        let r = self.route(dst, members)?;
        if let Some((old_dst, _)) = self.calls.insert(id, (dst, r)) {
            self.unwait(old_dst);
        }
        *self.waiting.entry(dst).or_default() += 1;
        Some(r)
    }

    /// Call `id` is over (its reply came, or it timed out); false if it was
    /// not waiting.
    pub fn end_call(&mut self, id: u32) -> bool {
        match self.calls.remove(&id) {
            Some((dst, _)) => {
                self.unwait(dst);
                true
            }
            None => false,
        }
    }

    /// Calls waiting on `dst`.
    pub fn waiting(&self, dst: u32) -> usize {
        self.waiting.get(&dst).copied().unwrap_or(0)
    }

    /// The runtime has nothing unacknowledged to `dst`: if no call waits on
    /// it either and its preferred Router is another live one that reaches
    /// it, it moves there. Returns the new Router when it moved.
    pub fn settle(&mut self, dst: u32, members: &RouterMembership) -> Option<u32> {
        if self.waiting(dst) > 0 {
            return None;
        }
        let cur = self.assigned.get(&dst).copied()?;
        let best = preferred(dst, &members.routers_for(dst))?;
        if best == cur {
            return None;
        }
        self.assigned.insert(dst, best);
        Some(best)
    }

    /// The connection to `router` is lost: every destination and call
    /// through it is returned and forgotten.
    pub fn router_down(&mut self, router: u32) -> Lost {
        self.take(router, None, LostWhy::RouterDown)
    }

    /// `router` announced `dst` offline: the calls to `dst` through it are
    /// returned and forgotten, and `dst` picks another Router next time.
    pub fn unreachable(&mut self, router: u32, dst: u32) -> Lost {
        self.take(router, Some(dst), LostWhy::Unreachable)
    }

    fn take(&mut self, router: u32, only: Option<u32>, why: LostWhy) -> Lost {
        let hit = |d: u32, r: u32| r == router && only.is_none_or(|o| o == d);
        let mut dsts: Vec<u32> = self
            .assigned
            .iter()
            .filter(|(&d, &r)| hit(d, r))
            .map(|(&d, _)| d)
            .collect();
        dsts.sort_unstable();
        for d in &dsts {
            self.assigned.remove(d);
        }
        let mut calls: Vec<(u32, u32)> = self
            .calls
            .iter()
            .filter(|(_, &(d, r))| hit(d, r))
            .map(|(&id, &(d, _))| (id, d))
            .collect();
        calls.sort_unstable();
        for &(id, d) in &calls {
            self.calls.remove(&id);
            self.unwait(d);
        }
        let extra: BTreeSet<u32> = calls.iter().map(|&(_, d)| d).filter(|d| !dsts.contains(d)).collect();
        dsts.extend(extra);
        dsts.sort_unstable();
        Lost {
            router,
            why,
            calls,
            dsts,
        }
    }

    fn unwait(&mut self, dst: u32) {
        if let Some(n) = self.waiting.get_mut(&dst) {
            *n -= 1;
            if *n == 0 {
                self.waiting.remove(&dst);
            }
        }
    }
}

#[cfg(test)]
mod tests;
