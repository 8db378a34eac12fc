//! Node-to-node connections: the accepting side, the connecting side (one
//! per peer, with its connect states and backoff), the verify handshake of
//! seed 001, and liveness.
//!
//! Every connection runs as one task of the node's `LocalSet` that selects
//! over its reader, its writer ([`Link::write_loop`]) and its liveness check;
//! whichever ends first ends the connection and names the cause.

use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::link::Link;
use crate::node::{Core, Peer, PeerState};
use crate::proto::{self, Envelope};
use crate::stream::{self, MemConn, ReadHalf, WriteHalf};
use crate::wire::{FrameDecoder, Message};

/// Largest verify request accepted from a connection that has not verified.
const MAX_VERIFY_MESSAGE: usize = 64 * 1024;
/// Connections that may be waiting to verify at once; more are closed.
const MAX_UNVERIFIED: usize = 256;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Connection attempts to one peer are at least this far apart, however
/// much is sent to it.
const MIN_RETRY_GAP: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Messages handled from one read burst before the writers get a turn.
const PIPELINE_BURST: u32 = 16;

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The peer closed it.
    Closed,
    /// A socket error.
    Io(String),
    /// The peer broke the protocol (bad frame, bad envelope, oversize).
    Protocol(String),
    /// Nothing arrived for longer than the liveness bound.
    Silent(Duration),
    /// Refused or failed during connect/verify.
    Refused(String),
    /// This node's schema changed: the connection must verify again.
    Reverify,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Closed => f.write_str("connection closed"),
            Cause::Io(e) => f.write_str(e),
            Cause::Protocol(e) => write!(f, "protocol error: {e}"),
            Cause::Silent(d) => write!(f, "no traffic for {:.1} s (liveness bound)", d.as_secs_f64()),
            Cause::Refused(e) => f.write_str(e),
            Cause::Reverify => f.write_str("this node's RPC schema changed; verifying again"),
        }
    }
}

/// Reads the next whole message, noting on `link` when bytes arrived.
pub(crate) async fn read_message(
    rd: &mut ReadHalf,
    dec: &mut FrameDecoder,
    buf: &mut BytesMut,
    link: &Link,
) -> Result<Message, Cause> {
    loop {
        if let Some(m) = dec.decode(buf).map_err(|e| Cause::Protocol(e.to_string()))? {
            return Ok(m);
        }
        // Room for at least one whole frame: reads of 64 KiB, not 8 KiB.
        buf.reserve(64 * 1024);
        let n = rd.read_buf(buf).await.map_err(|e| Cause::Io(e.to_string()))?;
        if n == 0 {
            return Err(Cause::Closed);
        }
        link.last_recv.set(Instant::now());
    }
}

/// Lets this connection's writer (and other tasks) run every few messages of
/// a long burst, so that the first replies are on the wire while the rest of
/// the burst is still being handled: both ends then work at once instead of
/// in turns.
async fn pipeline(burst: &mut u32, unread: &BytesMut, link: &Link) {
    if unread.is_empty() {
        // End of the burst: write what it produced now, before going back
        // to the socket for more (saves a wake-up on the request/reply path).
        *burst = 0;
        link.flush_now();
        return;
    }
    *burst += 1;
    if *burst >= PIPELINE_BURST {
        *burst = 0;
        tokio::task::yield_now().await;
    }
}

/// Ends the connection once this node's schema changed after it verified
/// (checked whenever the connection is woken, and at least every 50 ms).
async fn schema_changed(core: &Core, gen: u64, link: &Link, accepted: bool) -> Cause {
    loop {
        if core.schema_gen.get() != gen {
            return reverify(link, accepted).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Closes a connection so that it verifies again under the new schema. On
/// the accepting side the peer is told first (a verify-failed with reason
/// "reverify"), so it reconnects at once instead of reporting this node down.
async fn reverify(link: &Link, accepted: bool) -> Cause {
    if accepted {
        link.stale.set(false);
        link.out.borrow_mut().clear();
        link.push(|o| proto::put_verify_failed(o, REVERIFY));
        let t = Instant::now();
        while link.queued() > 0 && t.elapsed() < Duration::from_millis(200) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Cause::Reverify
}

/// Reason of the verify-failed that asks a connected peer to verify again.
const REVERIFY: &str = "reverify: the RPC schema changed";

/// Ends with [`Cause::Silent`] once nothing has arrived for `bound`; when
/// `ping` is set, sends a ping whenever the connection has been quiet for a
/// quarter of it.
async fn liveness(link: &Link, bound: Duration, ping: bool) -> Cause {
    let interval = (bound / 4).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(interval).await;
        let idle = link.last_recv.get().elapsed();
        if idle > bound {
            return Cause::Silent(idle);
        }
        if ping && idle >= interval {
            link.push(|o| proto::put_ping(o, false));
        }
    }
}

pub(crate) async fn accept_task(
    core: Rc<Core>,
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
                    warn!("accept failed: {e}");
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
        if core.unverified.get() >= MAX_UNVERIFIED {
            warn!("connection from {addr} closed: {MAX_UNVERIFIED} connections are already verifying");
            continue;
        }
        let conn = core.next_conn.get();
        core.next_conn.set(conn + 1);
        tokio::task::spawn_local(inbound_task(core.clone(), conn, rd, wr, addr));
    }
}

/// Counts a connection as verifying while alive.
struct Verifying<'a>(&'a Core);

impl<'a> Verifying<'a> {
    fn new(core: &'a Core) -> Self {
        core.unverified.set(core.unverified.get() + 1);
        Verifying(core)
    }
}

impl Drop for Verifying<'_> {
    fn drop(&mut self) {
        self.0.unverified.set(self.0.unverified.get() - 1);
    }
}

async fn refuse(wr: WriteHalf, reason: &str) {
    let mut out = BytesMut::new();
    proto::put_verify_failed(&mut out, reason);
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&out)).await;
}

async fn inbound_task(core: Rc<Core>, conn: u64, mut rd: ReadHalf, wr: WriteHalf, addr: String) {
    let cfg = core.cluster.borrow().clone();
    let mut dec = FrameDecoder::new(MAX_VERIFY_MESSAGE);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let link = Rc::new(Link::default());
    let verifying = Verifying::new(&core);
    let first = match tokio::time::timeout(cfg.verify_timeout, read_message(&mut rd, &mut dec, &mut buf, &link)).await {
        Err(_) => {
            warn!(
                "connection from {addr} closed: no verify request within {:.1} s",
                cfg.verify_timeout.as_secs_f64()
            );
            refuse(wr, "no verify request in time").await;
            return;
        }
        Ok(Err(e)) => {
            warn!("connection from {addr} closed before verifying: {e}");
            return;
        }
        Ok(Ok(m)) => m,
    };
    let verdict = match proto::parse(&first.data) {
        Ok(Envelope::Verify {
            name,
            sid,
            stype,
            digest,
            token,
        }) => verify(&core, name, sid, stype, digest, token),
        Ok(_) => Err((
            "the first message must be a verify request".to_string(),
            "unknown".to_string(),
        )),
        Err(e) => Err((format!("malformed verify request: {e}"), "unknown".to_string())),
    };
    let from = match verdict {
        Ok(name) => name,
        Err((reason, who)) => {
            warn!("refused connection from {who} at {addr}: {reason}");
            refuse(wr, &reason).await;
            return;
        }
    };
    drop(verifying);
    let gen = core.schema_gen.get();
    dec.set_max_message(cfg.max_message);
    link.push(|o| proto::put_verify_ok(o, &core.me.name, core.me.sid));
    core.inbound.borrow_mut().insert(conn, link.clone());
    debug!("accepted {from} from {addr}");
    let reader = async {
        let mut burst = 0u32;
        loop {
            let msg = match read_message(&mut rd, &mut dec, &mut buf, &link).await {
                Ok(m) => m,
                Err(e) => return e,
            };
            pipeline(&mut burst, &buf, &link).await;
            if core.schema_gen.get() != gen {
                warn!("closing the connection from {from}: this node's RPC schema changed (it must verify again); a message from it was not handled");
                return reverify(&link, true).await;
            }
            match proto::parse(&msg.data) {
                Ok(env @ (Envelope::Call { .. } | Envelope::Send { .. })) => {
                    core.on_request(conn, &from, &msg, env, Some(&link))
                }
                Ok(Envelope::Ping) => link.push(|o| proto::put_ping(o, true)),
                Ok(Envelope::Pong) => {}
                Ok(_) => return Cause::Protocol("unexpected message kind on an accepted connection".into()),
                Err(e) => return Cause::Protocol(e.to_string()),
            }
        }
    };
    let cause = tokio::select! {
        c = reader => c,
        c = link.write_loop(wr) => Cause::Io(c),
        c = liveness(&link, cfg.liveness, false) => c,
        c = schema_changed(&core, gen, &link, true) => c,
    };
    core.inbound.borrow_mut().remove(&conn);
    match &cause {
        Cause::Closed => debug!("connection from {from} ({addr}) closed"),
        other => warn!("connection from {from} ({addr}) closed: {other}"),
    }
}

fn verify(
    core: &Core,
    name: &[u8],
    sid: u32,
    stype: &[u8],
    digest: u32,
    token: &[u8],
) -> Result<String, (String, String)> {
    let name = String::from_utf8_lossy(name).into_owned();
    let stype = String::from_utf8_lossy(stype).into_owned();
    let secret = core.cluster.borrow().secret.clone();
    if token != secret.as_bytes() {
        return Err(("wrong cluster secret".into(), name));
    }
    match core.node_spec(sid) {
        Some(p) if p.name == name && p.stype == stype => {}
        // With ZooKeeper a node may connect before its znode is seen here;
        // the secret and the digest prove it belongs.
        None if core.zk_mode() => {}
        _ => {
            return Err((
                format!(
                    "unknown node {name} (sid {sid}, type {stype}) in {}'s cluster file",
                    core.me.name
                ),
                name,
            ))
        }
    }
    let mine = core.digest();
    if digest != mine {
        return Err((
            format!(
                "RPC digest mismatch: {name} has {digest:08x}, {} has {mine:08x} (their entitydef differs)",
                core.me.name
            ),
            name,
        ));
    }
    Ok(name)
}

async fn connect(core: &Core, peer: &Peer) -> Result<(ReadHalf, WriteHalf, FrameDecoder, BytesMut), Cause> {
    let cfg = core.cluster.borrow().clone();
    let local = core.local.as_ref().and_then(|net| net.dial(peer.spec.addr));
    let (mut rd, wr) = match local {
        Some(halves) => halves,
        None => {
            let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(peer.spec.addr))
                .await
                .map_err(|_| Cause::Refused("connect timed out".into()))?
                .map_err(|e| Cause::Refused(e.to_string()))?;
            stream::tcp(stream)
        }
    };
    let mut hello = BytesMut::new();
    proto::put_verify(
        &mut hello,
        &core.me.name,
        core.me.sid,
        &core.me.stype,
        core.digest(),
        &cfg.secret,
    );
    wr.write_all(&hello).await.map_err(|e| Cause::Refused(e.to_string()))?;
    let mut dec = FrameDecoder::new(MAX_VERIFY_MESSAGE);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let answer = tokio::time::timeout(
        cfg.verify_timeout,
        read_message(&mut rd, &mut dec, &mut buf, &peer.link),
    )
    .await
    .map_err(|_| Cause::Refused("no verify answer in time".into()))?
    .map_err(|e| Cause::Refused(e.to_string()))?;
    dec.set_max_message(cfg.max_message);
    match proto::parse(&answer.data) {
        Ok(Envelope::VerifyOk { sid, .. }) if sid == peer.spec.sid => Ok((rd, wr, dec, buf)),
        Ok(Envelope::VerifyOk { sid, .. }) => Err(Cause::Refused(format!(
            "answered as sid {sid}, expected {}",
            peer.spec.sid
        ))),
        Ok(Envelope::VerifyFailed { reason }) => {
            Err(Cause::Refused(format!("refused: {}", String::from_utf8_lossy(reason))))
        }
        Ok(_) => Err(Cause::Refused("unexpected verify answer".into())),
        Err(e) => Err(Cause::Refused(e.to_string())),
    }
}

/// Keeps the connection to one peer: connect, verify, serve until lost,
/// back off, again. Aborted when the peer leaves the cluster.
pub(crate) async fn peer_task(core: Rc<Core>, peer: Rc<Peer>) {
    let mut backoff = BACKOFF_MIN;
    let mut last_error = String::new();
    loop {
        peer.state.set(PeerState::Connecting);
        match connect(&core, &peer).await {
            Ok((mut rd, wr, mut dec, mut buf)) => {
                peer.state.set(PeerState::Connected);
                backoff = BACKOFF_MIN;
                if !last_error.is_empty() {
                    info!("connected to {} again", peer.spec.name);
                    last_error.clear();
                }
                peer.link.last_recv.set(Instant::now());
                peer.link.wake.notify_one();
                let gen = core.schema_gen.get();
                core.set_online(&peer, true);
                let liveness_bound = core.cluster.borrow().liveness;
                let reader = async {
                    let mut burst = 0u32;
                    loop {
                        let msg = match read_message(&mut rd, &mut dec, &mut buf, &peer.link).await {
                            Ok(m) => m,
                            Err(e) => return e,
                        };
                        pipeline(&mut burst, &buf, &peer.link).await;
                        match proto::parse(&msg.data) {
                            Ok(Envelope::Reply { ok, nvals, vals }) => {
                                core.on_reply(&peer, msg.session, ok, nvals, vals)
                            }
                            Ok(Envelope::Ping) => peer.link.push(|o| proto::put_ping(o, true)),
                            Ok(Envelope::Pong) => {}
                            Ok(Envelope::VerifyFailed { reason }) if reason.starts_with(b"reverify") => {
                                return Cause::Reverify
                            }
                            Ok(_) => {
                                return Cause::Protocol("unexpected message kind on an outgoing connection".into())
                            }
                            Err(e) => return Cause::Protocol(e.to_string()),
                        }
                    }
                };
                let cause = tokio::select! {
                    c = reader => c,
                    c = peer.link.write_loop(wr) => Cause::Io(c),
                    c = liveness(&peer.link, liveness_bound, true) => c,
                    c = schema_changed(&core, gen, &peer.link, false) => c,
                };
                peer.state.set(PeerState::Disconnected);
                if cause == Cause::Reverify {
                    // not down: calls made meanwhile wait in the queue for the new connection
                    info!("reconnecting to {}: {cause}", peer.spec.name);
                    core.set_online(&peer, false);
                    core.fail_written_calls(&peer, &cause.to_string());
                    continue;
                }
                warn!("lost connection to {}: {cause}", peer.spec.name);
                core.set_online(&peer, false);
                core.fail_peer(&peer, &cause.to_string());
            }
            Err(cause) => {
                peer.state.set(PeerState::Disconnected);
                let text = cause.to_string();
                if text != last_error {
                    if text.starts_with("refused:") {
                        warn!("{} at {} {text}", peer.spec.name, peer.spec.addr);
                    } else {
                        debug!("cannot connect to {} at {}: {text}", peer.spec.name, peer.spec.addr);
                    }
                    last_error = text.clone();
                }
                core.fail_peer(&peer, &text);
            }
        }
        let jitter = Duration::from_millis(crate::ring::mix64(core.next_conn.get() ^ peer.spec.sid as u64) % 50);
        core.next_conn.set(core.next_conn.get() + 1);
        let failed_at = Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = peer.kick.notified() => {
                // a message is waiting: try now, but never more often than MIN_RETRY_GAP
                let since = failed_at.elapsed();
                if since < MIN_RETRY_GAP {
                    tokio::time::sleep(MIN_RETRY_GAP - since).await;
                }
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
