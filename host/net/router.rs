//! The Router's side of `topology = "router"`: every verified node
//! connection of a Router node is served here. Relayed messages (data
//! starting with the relay prefix, `codec::relay`) are checked against the
//! sid the connection verified with and appended whole, unchanged, to the
//! destination's connection; the envelope inside is never decoded. The
//! Router also tells every node who is there (seed 002's manager): a
//! snapshot when a node verifies, and each join and leave after
//! (`proto::KIND_MEMBERS`).

use std::rc::Rc;

use bytes::BytesMut;
use tracing::{debug, info, warn};

use super::conn::{liveness, pipeline, read_message, schema_changed, Cause};
use crate::codec::auth::Identity;
use crate::codec::proto::{self, Envelope, Members};
use crate::codec::relay;
use crate::codec::wire::{self, FrameDecoder};
use crate::net::link::Link;
use crate::net::stream::{ReadHalf, WriteHalf};
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
    pub(crate) too_slow: Rc<std::cell::Cell<usize>>,
    /// Wakes the connection's task to close it.
    pub(crate) slow: Rc<tokio::sync::Notify>,
}

/// Serves the verified connection `conn` of node `theirs` on a Router until
/// it ends; returns why.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve<H: NetHost>(
    core: &H,
    conn: u64,
    rd: &mut ReadHalf,
    wr: WriteHalf,
    dec: &mut FrameDecoder,
    buf: &mut BytesMut,
    link: &Rc<Link>,
    theirs: &Identity,
) -> Cause {
    let cfg = core.settings();
    dec.set_max_message(cfg.max_message + relay::PREFIX);
    let entry = (theirs.sid, theirs.incarnation);
    let too_slow = Rc::new(std::cell::Cell::new(0));
    let slow = Rc::new(tokio::sync::Notify::new());
    {
        let mut routed = core.net().routed.borrow_mut();
        routed.insert(
            theirs.sid,
            Routed {
                conn,
                link: link.clone(),
                incarnation: theirs.incarnation,
                too_slow: too_slow.clone(),
                slow: slow.clone(),
            },
        );
        let mut others: Vec<(u32, u64)> = Vec::with_capacity(routed.len());
        for (&sid, r) in routed.iter() {
            if sid != theirs.sid {
                others.push((sid, r.incarnation));
                r.link.push(|o| proto::put_members(o, Members::Online, &[entry]));
            }
        }
        others.sort_unstable();
        link.push(|o| proto::put_members(o, Members::Snapshot, &others));
    }
    info!("router: {} (sid {}) joined", theirs.name, theirs.sid);
    let gen = core.net().reverify.current();
    let reader = async {
        let mut burst = 0u32;
        // destinations written to in this burst: flushed at its end
        let mut touched: Vec<Rc<Link>> = Vec::new();
        loop {
            let msg = match read_message(rd, dec, buf, link).await {
                Ok(m) => m,
                Err(e) => return e,
            };
            if relay::is_relayed(&msg.data) {
                match relay::route(&msg.data, theirs.sid) {
                    Ok(route) => {
                        let dst = core.net().routed.borrow().get(&route.dst).cloned();
                        match dst {
                            Some(d) if d.link.queued() > cfg.max_queue => {
                                // it does not read: close its connection (its
                                // senders hear it offline and fail their calls)
                                if d.too_slow.replace(d.link.queued()) == 0 {
                                    d.slow.notify_one();
                                }
                            }
                            Some(Routed { link: l, .. }) => {
                                wire::put_message(&mut l.out.borrow_mut(), msg.session, &msg.data);
                                l.wake.notify_one();
                                l.flush_if_large();
                                if !touched.iter().any(|t| Rc::ptr_eq(t, &l)) {
                                    touched.push(l);
                                }
                            }
                            None => {
                                // its sender hears that the node is offline
                                // (the announcement), and its calls fail there
                                if core.limited("relayed messages to nodes not connected to this router") {
                                    warn!(
                                        "router: message from {} to sid {} dropped: that node is not connected to this router",
                                        theirs.name, route.dst
                                    );
                                }
                            }
                        }
                    }
                    Err(e) => {
                        if core.limited("relayed messages refused (spoofed source or malformed)") {
                            warn!("router: closing the connection of {}: {e}", theirs.name);
                        }
                        return Cause::Protocol(e.to_string());
                    }
                }
            } else {
                match proto::parse(&msg.data) {
                    Ok(Envelope::Ping) => link.push(|o| proto::put_ping(o, true)),
                    Ok(Envelope::Pong | Envelope::Load { .. }) => {}
                    Ok(_) => {
                        return Cause::Protocol("a router relays only; this message kind is not for it".into());
                    }
                    Err(e) => return Cause::Protocol(e.to_string()),
                }
            }
            if buf.is_empty() {
                for t in touched.drain(..) {
                    t.flush_now();
                }
            }
            pipeline(&mut burst, buf, link).await;
        }
    };
    let cause = tokio::select! {
        c = reader => c,
        c = link.write_loop(wr, Some(core.net().reverify.gate(gen))) => Cause::Io(c),
        c = liveness(link, cfg.liveness, false) => c,
        c = schema_changed(core, gen, link, true) => c,
        _ = slow.notified() => Cause::Slow(too_slow.get()),
    };
    let gone = {
        let mut routed = core.net().routed.borrow_mut();
        let mine = routed.get(&theirs.sid).is_some_and(|r| r.conn == conn);
        if mine {
            routed.remove(&theirs.sid);
            for r in routed.values() {
                r.link.push(|o| proto::put_members(o, Members::Offline, &[entry]));
            }
        }
        mine
    };
    if gone {
        info!("router: {} (sid {}) left: {cause}", theirs.name, theirs.sid);
    } else {
        debug!("router: an earlier connection of {} ended: {cause}", theirs.name);
    }
    cause
}
