//! The connecting side: one task per peer that connects, serves the
//! connection (replies and acknowledgements in) and, when it is lost, waits
//! as `rpc::reconnect` decides.

use std::rc::Rc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::conn::{liveness, read_loop, schema_changed, Cause};
use super::handshake::{connect, Verified};
use crate::codec::proto::{self, Envelope};
use crate::net::{NetHost, NetPeer};
use crate::rpc::reconnect::{Step, JITTER_MAX};

/// Keeps the connection to one peer: connect, verify, serve until lost,
/// back off, again. Aborted when the peer leaves the cluster.
pub(crate) async fn peer_task<H: NetHost>(core: Rc<H>, peer: Rc<H::Peer>) {
    let name = &peer.spec().name;
    // jitter of each wait, so that peers that failed together do not all
    // dial again in the same instant
    let jitter = || {
        let n = core.net().next_conn.get();
        core.net().next_conn.set(n + 1);
        Duration::from_nanos(crate::rpc::ring::mix64(n ^ peer.spec().sid as u64) % JITTER_MAX.as_nanos() as u64)
    };
    loop {
        let step = peer.reconnect().borrow_mut().poll(Instant::now());
        match step {
            Step::Connect => {}
            Step::SleepUntil(due) => {
                // a kick (a message waiting) may bring the attempt forward
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = peer.kick().notified() => {}
                }
                continue;
            }
            Step::Busy => {
                peer.kick().notified().await;
                continue;
            }
        }
        let (mut rd, wr, mut dec, mut buf, incarnation) = match connect(&*core, &*peer).await {
            Ok(Verified {
                rd,
                wr,
                dec,
                buf,
                incarnation,
            }) => (rd, wr, dec, buf, incarnation),
            Err(cause) => {
                let text = cause.to_string();
                let failure = peer.reconnect().borrow_mut().failed(Instant::now(), jitter(), &text);
                if failure.report {
                    if cause.is_refusal() {
                        warn!("{name} at {} {text}", peer.spec().addr);
                    } else {
                        debug!("cannot connect to {name} at {}: {text}", peer.spec().addr);
                    }
                }
                core.connect_failed(&peer, &text);
                continue;
            }
        };
        if peer.reconnect().borrow_mut().connected() {
            info!("connected to {name} again");
        }
        peer.link().last_recv.set(Instant::now());
        let gen = core.net().reverify.current();
        core.peer_connected(&peer, incarnation);
        peer.link().wake.notify_one();
        let liveness_bound = core.settings().liveness;
        let relayed = |msg: &crate::codec::wire::Message| core.on_relayed(&peer, msg);
        let reader = read_loop(&mut rd, &mut dec, &mut buf, peer.link(), relayed, |msg, env| {
            match env {
                Envelope::Members { op, ref nodes } => core.on_members(&peer, op, nodes),
                Envelope::Reply { ok, nvals, vals } => core.on_reply(&peer, msg.session, ok, nvals, vals),
                Envelope::Ack { seq } => peer.link().ack(seq),
                Envelope::Ping => peer.link().push(|o| proto::put_ping(o, true)),
                Envelope::Pong => {}
                Envelope::VerifyFailed { reason } if reason.starts_with(b"reverify") => return Some(Cause::Reverify),
                _ => {
                    return Some(Cause::Protocol(
                        "unexpected message kind on an outgoing connection".into(),
                    ))
                }
            }
            None
        });
        let cause = tokio::select! {
            c = reader => c,
            c = peer.link().write_loop(wr, Some(core.net().reverify.gate(gen))) => Cause::Io(c),
            c = liveness(peer.link(), liveness_bound, true) => c,
            c = schema_changed(&*core, gen, peer.link(), false) => c,
        };
        let reverify = cause == Cause::Reverify;
        if reverify {
            // not down: calls made meanwhile wait in the queue for the new connection
            info!("reconnecting to {name}: {cause}");
        } else {
            warn!("lost connection to {name}: {cause}");
        }
        // recorded before the waiting calls fail, so that a script calling
        // again from its error handler kicks this very wait
        peer.reconnect().borrow_mut().lost(Instant::now(), jitter(), reverify);
        core.peer_lost(&peer, &cause.to_string(), reverify);
    }
}
