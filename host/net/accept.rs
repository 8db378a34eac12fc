//! The accepting side: the listener (TCP and in-memory), the bound on
//! connections verifying at once, and the task serving one accepted
//! connection (requests in, replies and acknowledgements out).

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::conn::{liveness, not_relayed, read_loop, reverify, schema_changed, Acks, Cause};
use super::handshake::{accept_handshake, refuse, MAX_VERIFY_MESSAGE};
use super::router;
use crate::codec::proto::{self, Envelope};
use crate::codec::wire::FrameDecoder;
use crate::net::link::Link;
use crate::net::stream::{self, MemConn, ReadHalf, WriteHalf};
use crate::net::{NetHost, NetState};

/// Connections that may be waiting to verify at once; more are closed.
pub(crate) const MAX_UNVERIFIED: usize = 256;

pub(crate) async fn accept_task<H: NetHost>(
    core: Rc<H>,
    listener: TcpListener,
    mut local: Option<mpsc::UnboundedReceiver<MemConn>>,
) {
    loop {
        let (rd, wr, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, addr)) => {
                    let (rd, wr) = stream::tcp(stream);
                    (rd, wr, addr.to_string())
                }
                Err(e) => {
                    if core.limited("accept failures") {
                        warn!("accept failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            m = async { match local.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => match m {
                Some(MemConn { rd, wr }) => (rd, wr, "this process".to_string()),
                None => {
                    local = None;
                    continue;
                }
            },
        };
        if core.net().unverified.get() >= MAX_UNVERIFIED {
            if core.limited("connections closed because 256 were already verifying") {
                warn!("connection from {addr} closed: {MAX_UNVERIFIED} connections are already verifying");
            }
            continue;
        }
        let conn = core.net().next_conn.get();
        core.net().next_conn.set(conn + 1);
        crate::net::spawn(inbound_task(core.clone(), conn, rd, wr, addr));
    }
}

/// Counts a connection as verifying while alive.
pub(crate) struct Verifying<'a>(&'a NetState);

impl<'a> Verifying<'a> {
    pub(crate) fn new(net: &'a NetState) -> Self {
        net.unverified.set(net.unverified.get() + 1);
        Verifying(net)
    }
}

impl Drop for Verifying<'_> {
    fn drop(&mut self) {
        self.0.unverified.set(self.0.unverified.get() - 1);
    }
}

pub(crate) async fn inbound_task<H: NetHost>(core: Rc<H>, conn: u64, mut rd: ReadHalf, wr: WriteHalf, addr: String) {
    let cfg = core.settings();
    let mut dec = FrameDecoder::new(MAX_VERIFY_MESSAGE);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let link = Rc::new(Link::default());
    let verifying = Verifying::new(core.net());
    let theirs = match accept_handshake(&*core, &mut rd, &wr, &mut dec, &mut buf, &link).await {
        Ok(id) => id,
        Err(r) => {
            if core.limited(r.reason.cause()) {
                warn!("refused connection from {} at {addr}: {}", r.who, r.reason);
            }
            if r.tell {
                refuse(&wr, &r.reason.to_string()).await;
            }
            return;
        }
    };
    drop(verifying);
    let from = theirs.name.clone();
    let gen = core.net().reverify.current();
    dec.set_max_message(cfg.max_message);
    link.push(|o| proto::put_verify_ok(o, &core.me().name, core.me().sid));
    // on a Router: relayed messages pass through, the rest is served here
    let routed = core.relays().then(|| {
        dec.set_max_message(cfg.max_message + crate::codec::relay::PREFIX);
        router::join(&*core, conn, &link, &theirs)
    });
    let relayed = |msg: &crate::codec::wire::Message| match &routed {
        Some(_) => router::relay(&*core, &theirs, msg),
        None => not_relayed(msg),
    };
    core.net().inbound.borrow_mut().insert(conn, link.clone());
    let seqs = core.send_seqs(&from, theirs.incarnation);
    debug!("accepted {from} from {addr}");
    let acks = Acks::default();
    let reader = async {
        let cause = read_loop(&mut rd, &mut dec, &mut buf, &link, relayed, |msg, env| {
            if core.net().reverify.stale(gen) {
                return Some(Cause::Reverify);
            }
            match env {
                Envelope::Call { .. } | Envelope::Client { call: true, .. } => {
                    core.on_request(conn, &from, msg, env, Some(&link));
                }
                Envelope::Send { .. } | Envelope::Client { call: false, .. } | Envelope::Push { .. } => {
                    let seq = msg.session;
                    // a duplicate (resent after a reconnect) is acknowledged
                    // again; a send refused because this node is stopping is
                    // not, so its sender reports it
                    let fresh = seqs.fresh(seq);
                    if !fresh || core.on_request(conn, &from, msg, env, Some(&link)) {
                        if fresh {
                            seqs.handled(seq);
                        }
                        if let Some(last) = seqs.last() {
                            acks.owe(last, &link);
                        }
                    }
                }
                Envelope::Ping => link.push(|o| proto::put_ping(o, true)),
                Envelope::Pong => {}
                Envelope::Load { load } => core.on_load(theirs.sid, load),
                Envelope::Log { level, text } => core.on_log(&from, level, text),
                _ => {
                    return Some(Cause::Protocol(
                        "unexpected message kind on an accepted connection".into(),
                    ))
                }
            }
            None
        })
        .await;
        if cause == Cause::Reverify {
            warn!("closing the connection from {from}: this node's RPC schema changed (it must verify again); a message from it was not handled");
            return reverify(&link, true).await;
        }
        cause
    };
    let cause = tokio::select! {
        c = reader => c,
        c = acks.timer(&link) => c,
        c = link.write_loop(wr, Some(core.net().reverify.gate(gen))) => Cause::Io(c),
        c = liveness(&link, cfg.liveness, false) => c,
        c = schema_changed(&*core, gen, &link, true) => c,
        c = async { match &routed { Some(r) => router::too_slow(r).await, None => std::future::pending().await } } => c,
    };
    core.net().inbound.borrow_mut().remove(&conn);
    if let Some(r) = &routed {
        router::leave(&*core, r, &theirs, &cause);
    }
    match &cause {
        Cause::Closed => debug!("connection from {from} ({addr}) closed"),
        other => {
            if core.limited("accepted connections closed on an error") {
                warn!("connection from {from} ({addr}) closed: {other}")
            }
        }
    }
}
