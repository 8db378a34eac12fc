//! The Router's side of `topology = "router"`: on a Router node, every
//! verified node connection is an ordinary accepted connection (the Router
//! serves calls and sends to itself like any node) whose relayed messages
//! (data starting with the relay prefix, `codec::relay`) are checked against
//! the sid the connection verified with and appended whole, unchanged, to
//! the destination's connection; the envelope inside is never decoded. The
//! Router also tells every node who is there (seed 002's manager): a
//! snapshot when a node verifies, and each join and leave after
//! (`proto::KIND_MEMBERS`). A node that lets more than `max_queue` bytes
//! pile up for it is cut off.

use std::cell::Cell;
use std::rc::Rc;

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::conn::Cause;
use crate::codec::auth::Identity;
use crate::codec::proto::{self, Members};
use crate::codec::relay;
use crate::codec::wire::{self, Message};
use crate::net::link::Link;
use crate::net::NetHost;

/// A node connection of a Router, by the node's sid (`NetState::routed`).
#[derive(Debug, Clone)]
pub(crate) struct Routed {
    /// The accepted connection's id.
    pub(crate) conn: u64,
    /// Its output side.
    pub(crate) link: Rc<Link>,
    /// The node's incarnation.
    pub(crate) incarnation: u64,
    /// Set (and `slow` woken) when more than `max_queue` bytes are queued
    /// for it: its connection closes.
    pub(crate) too_slow: Rc<Cell<usize>>,
    /// Wakes the connection's task to close it.
    pub(crate) slow: Rc<Notify>,
}

/// Node `theirs` verified on connection `conn`: it is routed to, it gets the
/// snapshot of the others, and they hear it joined. Returns its entry.
pub(crate) fn join<H: NetHost>(core: &H, conn: u64, link: &Rc<Link>, theirs: &Identity) -> Routed {
    let me = Routed {
        conn,
        link: link.clone(),
        incarnation: theirs.incarnation,
        too_slow: Rc::new(Cell::new(0)),
        slow: Rc::new(Notify::new()),
    };
    let entry = (theirs.sid, theirs.incarnation);
    let mut routed = core.net().routed.borrow_mut();
    routed.insert(theirs.sid, me.clone());
    let mut others: Vec<(u32, u64)> = Vec::with_capacity(routed.len());
    for (&sid, r) in routed.iter() {
        if sid != theirs.sid {
            others.push((sid, r.incarnation));
            r.link.push(|o| proto::put_members(o, Members::Online, &[entry]));
        }
    }
    others.sort_unstable();
    link.push(|o| proto::put_members(o, Members::Snapshot, &others));
    info!("router: {} (sid {}) joined", theirs.name, theirs.sid);
    me
}

/// Relays `msg` from node `theirs`; returns a cause to close its connection
/// (a spoofed source, a message to itself, a malformed prefix).
pub(crate) fn relay<H: NetHost>(core: &H, theirs: &Identity, msg: &Message) -> Option<Cause> {
    let route = match relay::route(&msg.data, theirs.sid) {
        Ok(r) => r,
        Err(e) => {
            if core.limited("relayed messages refused (spoofed source or malformed)") {
                warn!("router: closing the connection of {}: {e}", theirs.name);
            }
            return Some(Cause::Protocol(e.to_string()));
        }
    };
    let dst = core.net().routed.borrow().get(&route.dst).cloned();
    match dst {
        Some(d) if d.link.queued() > core.settings().max_queue => {
            // it does not read: close its connection (its senders hear it
            // offline and fail their calls)
            if d.too_slow.replace(d.link.queued()) == 0 {
                d.slow.notify_one();
            }
        }
        Some(d) => {
            wire::put_message(&mut d.link.out.borrow_mut(), msg.session, &msg.data);
            d.link.wake.notify_one();
            d.link.flush_if_large();
        }
        None => {
            // its sender hears that the node is offline (the announcement),
            // and its calls fail there
            if core.limited("relayed messages to nodes not connected to this router") {
                warn!(
                    "router: message from {} to sid {} dropped: that node is not connected to this router",
                    theirs.name, route.dst
                );
            }
        }
    }
    None
}

/// Ends once `me` was found too slow.
pub(crate) async fn too_slow(me: &Routed) -> Cause {
    me.slow.notified().await;
    Cause::Slow(me.too_slow.get())
}

/// The connection of `theirs` ended: unless a newer one replaced it, it is
/// no longer routed to and the others hear it left.
pub(crate) fn leave<H: NetHost>(core: &H, me: &Routed, theirs: &Identity, cause: &Cause) {
    let entry = (theirs.sid, theirs.incarnation);
    let mut routed = core.net().routed.borrow_mut();
    if routed.get(&theirs.sid).is_none_or(|r| r.conn != me.conn) {
        debug!("router: an earlier connection of {} ended: {cause}", theirs.name);
        return;
    }
    routed.remove(&theirs.sid);
    for r in routed.values() {
        r.link.push(|o| proto::put_members(o, Members::Offline, &[entry]));
    }
    info!("router: {} (sid {}) left: {cause}", theirs.name, theirs.sid);
}
