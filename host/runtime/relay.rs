//! A node of a cluster with `topology = "router"`: the nodes it reaches
//! through Routers. Routers are ordinary peers (connected directly); each
//! other node (but DB nodes, reached directly as seed 000 does) is a peer
//! whose link writes through the Router `rpc::relay::NextHop` picks for it,
//! every message with the relay prefix. What the Routers announce
//! (`rpc::relay::RouterMembership`) makes such a peer online or offline,
//! like a connection verifying or breaking in the mesh; replies, acks and
//! requests from it arrive relayed on any Router's connection and are handed
//! to the same handlers as on direct connections. Lua sees no difference.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::node::{Core, Peer};
use super::relaystate::RelayIn;
use crate::codec::proto::{self, Envelope, Members};
use crate::codec::relay;
use crate::codec::wire::Message;
use crate::net::conn::{Acks, Cause};
use crate::net::link::{Link, RelaySink, Sink};
use crate::net::{NetPeer, PeerState};
use crate::rpc::relay::{Change, Topology, ROUTER_TYPE};

/// How long a message to a node no Router announces waits for the first
/// announcements after this node starts, before its calls fail.
const FIRST_ANNOUNCEMENT_WAIT: Duration = Duration::from_secs(2);

impl Core {
    /// Starts keeping the connection to `peer`: directly, or through the
    /// Routers.
    pub(crate) fn start_peer(self: &Rc<Self>, peer: &Rc<Peer>) {
        // a Router dials nobody: every node dials it
        if peer.is_self || self.relays() {
            return;
        }
        let handle = if self.is_relayed(peer) {
            crate::net::spawn(relay_peer_task(self.clone(), peer.clone()))
        } else {
            crate::net::spawn(crate::net::peer::peer_task(self.clone(), peer.clone()))
        };
        *peer.task.borrow_mut() = Some(handle);
    }

    /// True when this node is a Router that relays for the others.
    pub(crate) fn relays(&self) -> bool {
        self.relay.topology.relays(&self.me.stype)
    }

    /// True when `peer` is reached through Routers.
    pub(crate) fn is_relayed(&self, peer: &Peer) -> bool {
        !peer.is_self && !self.relay.topology.direct(&self.me.stype, &peer.spec.stype)
    }

    /// True when `peer` is a Router this node uses.
    pub(crate) fn is_router(&self, peer: &Peer) -> bool {
        self.relay.topology == Topology::Router && peer.spec.stype == ROUTER_TYPE && !self.relays()
    }

    /// The inbound side of relayed node `peer`, made on first use.
    pub(crate) fn relay_in(&self, peer: &Peer) -> Rc<RelayIn> {
        let sid = peer.spec.sid;
        if let Some(r) = self.relay.inbound.borrow().get(&sid) {
            return r.clone();
        }
        let conn = self.net.next_conn.get();
        self.net.next_conn.set(conn + 1);
        let link = Rc::new(Link::new(false));
        self.net.inbound.borrow_mut().insert(conn, link.clone());
        let r = Rc::new(RelayIn {
            conn,
            link,
            acks: Acks::default(),
            seqs: RefCell::new(self.send_seqs(&peer.spec.name, peer.incarnation.get())),
        });
        self.relay.inbound.borrow_mut().insert(sid, r.clone());
        r
    }

    /// A relayed message arrived on the connection to Router `via`.
    pub(crate) fn on_relayed(&self, via: &Peer, msg: &Message) -> Option<Cause> {
        let (dst, src, _) = match relay::parse_relayed(&msg.data) {
            Ok(r) => r,
            Err(e) => return Some(Cause::Protocol(e.to_string())),
        };
        let peer = self.peer(src);
        let Some(peer) = peer.filter(|p| dst == self.me.sid && self.is_relayed(p)) else {
            if self.limited("relayed messages for another node or from an unknown one") {
                warn!(
                    "relayed message from sid {src} to sid {dst} through {} dropped: not for this node, or from a node it does not reach through routers",
                    via.spec.name
                );
            }
            return None;
        };
        let inner = Message {
            session: msg.session,
            data: msg.data.slice(relay::PREFIX..),
        };
        let env = match proto::parse(&inner.data) {
            Ok(env) => env,
            Err(e) => {
                if self.limited("malformed relayed messages") {
                    warn!(
                        "malformed message from {} through {}: {e}",
                        peer.spec.name, via.spec.name
                    );
                }
                return None;
            }
        };
        match env {
            Envelope::Reply { ok, nvals, vals } => self.on_reply(&peer, inner.session, ok, nvals, vals),
            Envelope::Ack { seq } => peer.link.ack(seq),
            Envelope::Load { load } => self.set_peer_load(src, load),
            Envelope::Log { level, text } => self.on_log(&peer.spec.name, level, text),
            Envelope::Call { .. } | Envelope::Client { call: true, .. } => {
                let rin = self.relay_in(&peer);
                self.on_request(rin.conn, &peer.spec.name, &inner, env, Some(&rin.link));
            }
            Envelope::Send { .. } | Envelope::Client { call: false, .. } | Envelope::Push { .. } => {
                let rin = self.relay_in(&peer);
                let inc = peer.incarnation.get();
                if rin.seqs.borrow().incarnation != inc {
                    *rin.seqs.borrow_mut() = self.send_seqs(&peer.spec.name, inc);
                }
                let seqs = rin.seqs.borrow().clone();
                let seq = inner.session;
                let fresh = seqs.fresh(seq);
                if !fresh || self.on_request(rin.conn, &peer.spec.name, &inner, env, Some(&rin.link)) {
                    if fresh {
                        seqs.handled(seq);
                    }
                    if let Some(last) = seqs.last() {
                        rin.acks.owe(last, &rin.link);
                    }
                }
            }
            _ => {
                if self.limited("relayed messages of a kind that is not relayed") {
                    warn!(
                        "message of a kind that is not relayed from {} through {} dropped",
                        peer.spec.name, via.spec.name
                    );
                }
            }
        }
        None
    }

    /// Router `via` announced nodes.
    pub(crate) fn on_members(&self, via: &Peer, op: Members, nodes: &[(u32, u64)]) {
        if !self.is_router(via) {
            return;
        }
        let r = via.spec.sid;
        let mut changes = Vec::new();
        let mut unreachable = Vec::new();
        {
            let mut members = self.relay.members.borrow_mut();
            match op {
                Members::Snapshot => changes = members.snapshot(r, nodes),
                Members::Online => {
                    for &(sid, inc) in nodes {
                        changes.extend(members.online(r, sid, inc));
                    }
                }
                Members::Offline => {
                    for &(sid, inc) in nodes {
                        changes.extend(members.offline(r, sid, inc));
                        unreachable.push(sid);
                    }
                }
            }
        }
        if op == Members::Snapshot {
            info!("router {} announces {} nodes", via.spec.name, nodes.len());
        }
        for dst in unreachable {
            let lost = self.relay.hops.borrow_mut().unreachable(r, dst);
            self.take_lost(&lost, &lost.cause(&via.spec.name));
        }
        self.apply_changes(&changes, &format!("router {} announced it offline", via.spec.name));
        if op == Members::Snapshot {
            for p in self.relayed_peers() {
                // a destination with nothing in flight moves back to its
                // preferred Router (no reordering possible)
                if p.pending.borrow().is_empty() && p.link.held() == 0 {
                    let members = self.relay.members.borrow();
                    self.relay.hops.borrow_mut().settle(p.spec.sid, &members);
                }
                // those waiting for a first announcement look again
                p.reroute.notify_one();
            }
        }
    }

    /// The connection to Router `router` was lost: the nodes only it reached
    /// go offline, and the calls that went through it fail naming it; the
    /// other nodes it served move to another Router.
    pub(crate) fn router_lost(&self, router: &Peer) {
        let changes = self.relay.members.borrow_mut().router_down(router.spec.sid);
        let lost = self.relay.hops.borrow_mut().router_down(router.spec.sid);
        let cause = lost.cause(&router.spec.name);
        let offline = changes
            .iter()
            .filter(
                |c| matches!(c, Change::Offline { sid, .. } if self.peer(*sid).is_some_and(|p| self.is_relayed(&p))),
            )
            .count();
        if !lost.is_empty() || offline > 0 {
            warn!(
                "router {} lost: {} nodes went through it, {offline} only it reached (offline now)",
                router.spec.name,
                lost.dsts.len(),
            );
        }
        self.take_lost(&lost, &cause);
        // A call to a node reached through another Router may still have
        // had its reply on the way through this one (the callee picks the
        // Router for its replies): none is left to wait until its timeout.
        for p in self.relayed_peers() {
            if !p.pending.borrow().is_empty() {
                self.fail_pending(&p, &cause);
            }
        }
        self.apply_changes(&changes, &cause);
    }

    /// Fails the calls to the destinations of `lost` (they were written
    /// through a Router that is gone or no longer reaches them); sends
    /// written and not acknowledged are sent again through the next Router
    /// (the receiver drops those it handled already).
    fn take_lost(&self, lost: &crate::rpc::relay::Lost, cause: &str) {
        for &dst in &lost.dsts {
            let Some(peer) = self.peer(dst) else { continue };
            self.fail_pending(&peer, cause);
            peer.link.connection_lost(false);
            let again = peer.link.reconnected(true);
            debug_assert!(again.sends.is_empty());
            peer.reroute.notify_one();
        }
    }

    /// Carries out changes of the merged view: peers online or offline.
    fn apply_changes(&self, changes: &[Change], cause: &str) {
        for change in changes {
            match *change {
                Change::Online { sid, incarnation } => {
                    let Some(peer) = self.peer(sid).filter(|p| self.is_relayed(p)) else {
                        continue;
                    };
                    peer.reconnect.borrow_mut().connected();
                    self.peer_connected(&peer, incarnation);
                    peer.reroute.notify_one();
                }
                Change::Offline { sid, .. } => {
                    let Some(peer) = self.peer(sid).filter(|p| self.is_relayed(p)) else {
                        continue;
                    };
                    peer.reconnect.borrow_mut().lost(Instant::now(), Duration::ZERO, false);
                    self.peer_lost(&peer, cause, false);
                    peer.reroute.notify_one();
                }
            }
        }
    }

    fn relayed_peers(&self) -> Vec<Rc<Peer>> {
        self.routing
            .peers
            .borrow()
            .values()
            .filter(|p| self.is_relayed(p))
            .cloned()
            .collect()
    }

    /// The Router to write to `peer` through now, if any reaches it.
    fn route_to(&self, peer: &Peer) -> Option<Rc<Peer>> {
        if !self.relay.members.borrow().is_online(peer.spec.sid) {
            return None;
        }
        let r = {
            let members = self.relay.members.borrow();
            self.relay.hops.borrow_mut().route(peer.spec.sid, &members)?
        };
        self.peer(r)
            .filter(|p| p.reconnect.borrow().state() == PeerState::Connected)
    }
}

/// Drives one relayed peer: while a Router reaches it, its link (calls and
/// sends to it) and its inbound link (replies and acknowledgements to it)
/// write through that Router; when none does, a message waiting for it
/// fails as a failed connection attempt would.
pub(crate) async fn relay_peer_task(core: Rc<Core>, peer: Rc<Peer>) {
    let name = peer.spec.name.clone();
    loop {
        let Some(router) = core.route_to(&peer) else {
            tokio::select! {
                _ = peer.reroute.notified() => {}
                _ = peer.kick.notified() => {
                    if core.relay.members.borrow().routers().is_empty() {
                        // no Router has answered yet: give them a moment
                        let _ = tokio::time::timeout(FIRST_ANNOUNCEMENT_WAIT, peer.reroute.notified()).await;
                    }
                    if core.route_to(&peer).is_none() {
                        core.fail_peer(&peer, "no router reaches it");
                    }
                }
            }
            continue;
        };
        debug!("{name} goes through router {}", router.spec.name);
        let rin = core.relay_in(&peer);
        let sink = || {
            Sink::Relay(RelaySink {
                via: router.clone() as Rc<dyn NetPeer>,
                dst: peer.spec.sid,
                src: core.me.sid,
            })
        };
        let ended = tokio::select! {
            e = peer.link.write_loop(sink(), None) => Some(e),
            e = rin.link.write_loop(sink(), None) => Some(e),
            _ = rin.acks.timer(&rin.link) => None,
            _ = peer.reroute.notified() => None,
        };
        if let Some(e) = ended {
            // the Router's connection broke: its loss moves this peer on
            debug!("writing to {name} through {} stopped: {e}", router.spec.name);
            peer.reroute.notified().await;
        }
    }
}
