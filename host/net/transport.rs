//! Node-to-node connections: the accepting side, the connecting side (one
//! per peer, with its connect states and backoff), the mutual verify
//! handshake (seed 001's verify, proven with [`crate::codec::auth`]: the secret
//! never crosses the wire), send acknowledgements, and liveness.
//!
//! Every connection runs as one task of the node's `LocalSet` that selects
//! over its reader, its writer ([`Link::write_loop`]) and its liveness check;
//! whichever ends first ends the connection and names the cause.
//!
//! Log lines a remote party can cause (refused connections, failed
//! handshakes, protocol errors) go through the node's rate limit
//! ([`crate::rpc::ratelog`]).

use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::codec::auth::{self, Identity, Side};
use crate::codec::proto::{self, Envelope};
use crate::codec::wire::{FrameDecoder, Message};
use crate::net::link::Link;
use crate::net::stream::{self, MemConn, ReadHalf, WriteHalf};
use crate::net::{NetHost, NetPeer, NetSettings, NetState};
use crate::rpc::reconnect::{Step, JITTER_MAX};

/// Largest handshake message accepted from a connection that has not verified.
const MAX_VERIFY_MESSAGE: usize = 64 * 1024;
/// Connections that may be waiting to verify at once; more are closed.
const MAX_UNVERIFIED: usize = 256;
/// Messages handled from one read burst before the writers get a turn.
const PIPELINE_BURST: u32 = 16;
/// Sends handled before an acknowledgement goes out at once.
const ACK_EVERY: u32 = 4096;
/// Otherwise an acknowledgement goes out this long after the first send it
/// covers (delayed acknowledgements, as in TCP: one small frame per 10 ms of
/// a stream, not one per read burst, which cost 10% of the send rate).
const ACK_DELAY: Duration = Duration::from_millis(10);

/// Acknowledgements owed on an accepted connection.
#[derive(Default)]
struct Acks {
    /// The last send handled and not yet acknowledged.
    owed: Cell<Option<u32>>,
    /// How many sends that covers.
    count: Cell<u32>,
    /// Wakes the timer when the first send of a new batch is owed.
    armed: Notify,
}

impl Acks {
    /// Send `last` (and all before it) was handled.
    fn owe(&self, last: u32, link: &Link) {
        let first = self.owed.replace(Some(last)).is_none();
        let n = self.count.get() + 1;
        self.count.set(n);
        if n >= ACK_EVERY {
            self.pay(link);
        } else if first {
            self.armed.notify_one();
        }
    }

    fn pay(&self, link: &Link) {
        if let Some(seq) = self.owed.take() {
            self.count.set(0);
            link.push(|o| proto::put_ack(o, seq));
        }
    }

    /// Pays what is owed `ACK_DELAY` after it began to be owed.
    async fn timer(&self, link: &Link) -> Cause {
        loop {
            self.armed.notified().await;
            tokio::time::sleep(ACK_DELAY).await;
            self.pay(link);
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The peer closed it.
    Closed,
    /// A socket error.
    Io(String),
    /// The peer broke the protocol (bad frame, bad envelope, oversize).
    Protocol(String),
    /// No whole frame arrived for longer than the liveness bound.
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

/// Reads the next whole message. `link.last_recv` moves when a whole frame
/// has arrived (not on every byte: a peer trickling a frame byte by byte
/// does not count as alive).
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
        if crate::codec::wire::has_frame(buf) {
            link.last_recv.set(Instant::now());
        }
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
async fn schema_changed<H: NetHost>(core: &H, gen: u64, link: &Link, accepted: bool) -> Cause {
    loop {
        if core.schema_gen() != gen {
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
        link.clear();
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

/// What the liveness check decides when it wakes (pure: time passed in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beat {
    /// Nothing to do.
    Quiet,
    /// Send a ping.
    Ping,
    /// The peer has been silent for the bound: the connection is dead.
    Dead(Duration),
    /// This node itself did not run for a while (stopped, starved): read
    /// what is waiting and give the peer a fresh chance before judging.
    Stalled,
}

/// The liveness rule of one connection: the peer is dead once no whole
/// frame arrived for exactly `bound`; the pinging side pings after a
/// quarter of it without traffic.
#[derive(Debug, Clone, Copy)]
struct Liveness {
    bound: Duration,
    interval: Duration,
    ping: bool,
    last_ping: Option<Instant>,
    /// The last wake-up was a stall: the next late one is judged normally
    /// (a node late on every wake-up still detects dead peers).
    stalled: bool,
}

impl Liveness {
    fn new(bound: Duration, ping: bool) -> Self {
        Liveness {
            bound,
            interval: (bound / 4).max(Duration::from_millis(50)),
            ping,
            last_ping: None,
            stalled: false,
        }
    }

    /// When to wake next, given when the last frame arrived.
    fn next_wake(&self, last_recv: Instant) -> Instant {
        let dead_at = last_recv + self.bound;
        if !self.ping {
            return dead_at;
        }
        let quiet_since = self.last_ping.map_or(last_recv, |p| p.max(last_recv));
        dead_at.min(quiet_since + self.interval)
    }

    /// Lateness beyond which a wake-up means this node was not running.
    fn stall(&self) -> Duration {
        (self.interval / 2).max(Duration::from_millis(20))
    }

    /// Decides at `now`, woken for `planned`, with the last frame at `last_recv`.
    fn decide(&mut self, now: Instant, planned: Instant, last_recv: Instant) -> Beat {
        let late = now.saturating_duration_since(planned) > self.stall();
        if std::mem::replace(&mut self.stalled, late) {
            // judged below however late
        } else if late {
            return Beat::Stalled;
        }
        let idle = now.saturating_duration_since(last_recv);
        if idle >= self.bound {
            return Beat::Dead(idle);
        }
        let quiet_since = self.last_ping.map_or(last_recv, |p| p.max(last_recv));
        if self.ping && now.saturating_duration_since(quiet_since) >= self.interval {
            self.last_ping = Some(now);
            return Beat::Ping;
        }
        Beat::Quiet
    }

    /// After a stall at `now`: the peer gets half the bound to show life.
    fn after_stall(&self, now: Instant, last_recv: Instant) -> Instant {
        last_recv.max(now.checked_sub(self.bound / 2).unwrap_or(now))
    }
}

/// Ends with [`Cause::Silent`] once no whole frame has arrived for `bound`
/// (exactly, not up to a tick later); when `ping` is set, pings whenever the
/// connection has been quiet for a quarter of it. Before judging, data that
/// is already waiting is read: a node resumed after SIGSTOP, or whose thread
/// was busy, does not drop connections whose peers kept talking.
async fn liveness(link: &Link, bound: Duration, ping: bool) -> Cause {
    let mut rule = Liveness::new(bound, ping);
    loop {
        let planned = rule.next_wake(link.last_recv.get());
        tokio::time::sleep_until(planned).await;
        // Let the reader take what already arrived (the I/O driver runs
        // before this task is polled again).
        tokio::task::yield_now().await;
        let now = Instant::now();
        match rule.decide(now, planned, link.last_recv.get()) {
            Beat::Quiet => {}
            Beat::Ping => link.push(|o| proto::put_ping(o, false)),
            Beat::Dead(idle) => return Cause::Silent(idle),
            Beat::Stalled => {
                link.last_recv.set(rule.after_stall(now, link.last_recv.get()));
                if ping {
                    rule.last_ping = Some(now);
                    link.push(|o| proto::put_ping(o, false));
                }
            }
        }
    }
}

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
        tokio::task::spawn_local(inbound_task(core.clone(), conn, rd, wr, addr));
    }
}

/// Counts a connection as verifying while alive.
struct Verifying<'a>(&'a NetState);

impl<'a> Verifying<'a> {
    fn new(net: &'a NetState) -> Self {
        net.unverified.set(net.unverified.get() + 1);
        Verifying(net)
    }
}

impl Drop for Verifying<'_> {
    fn drop(&mut self) {
        self.0.unverified.set(self.0.unverified.get() - 1);
    }
}

async fn refuse(wr: &WriteHalf, reason: &str) {
    let mut out = BytesMut::new();
    proto::put_verify_failed(&mut out, reason);
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&out)).await;
}

/// Why an accepted connection did not verify.
struct Refusal {
    /// Rate-limit cause (a fixed text per kind of refusal).
    cause: &'static str,
    /// Who it claimed to be.
    who: String,
    /// The reason, as told to the peer and logged.
    reason: String,
    /// Whether to tell the peer (not when it already went away).
    tell: bool,
}

impl Refusal {
    fn new(cause: &'static str, who: impl Into<String>, reason: impl Into<String>) -> Self {
        Refusal {
            cause,
            who: who.into(),
            reason: reason.into(),
            tell: true,
        }
    }
}

/// Reads the next handshake message before `deadline`.
async fn read_until(
    deadline: Instant,
    rd: &mut ReadHalf,
    dec: &mut FrameDecoder,
    buf: &mut BytesMut,
    link: &Link,
) -> Result<Message, Cause> {
    match tokio::time::timeout_at(deadline, read_message(rd, dec, buf, link)).await {
        Err(_) => Err(Cause::Refused("no answer in time".into())),
        Ok(r) => r,
    }
}

/// The accepting side of the handshake: hello in, challenge out, proof in.
/// Returns the verified peer's identity.
async fn accept_handshake<H: NetHost>(
    core: &H,
    rd: &mut ReadHalf,
    wr: &WriteHalf,
    dec: &mut FrameDecoder,
    buf: &mut BytesMut,
    link: &Link,
) -> Result<Identity, Refusal> {
    let deadline = Instant::now() + core.settings().verify_timeout;
    let first = read_until(deadline, rd, dec, buf, link).await.map_err(|e| match e {
        Cause::Refused(_) => Refusal::new(
            "connections closed without a verify request in time",
            "unknown",
            format!(
                "no verify request within {:.1} s",
                core.settings().verify_timeout.as_secs_f64()
            ),
        ),
        other => Refusal {
            tell: false,
            ..Refusal::new(
                "connections closed before verifying",
                "unknown",
                format!("closed before verifying: {other}"),
            )
        },
    })?;
    let theirs = match proto::parse(&first.data) {
        Ok(Envelope::Verify(hello)) => hello.identity().ok_or_else(|| {
            Refusal::new(
                "malformed verify requests",
                "unknown",
                "malformed verify request: bad nonce",
            )
        })?,
        Ok(_) => {
            return Err(Refusal::new(
                "connections that did not start with a verify request",
                "unknown",
                "the first message must be a verify request",
            ))
        }
        Err(e) => {
            return Err(Refusal::new(
                "malformed verify requests",
                "unknown",
                format!("malformed verify request: {e}"),
            ))
        }
    };
    let who = theirs.name.clone();
    if !core.knows(&theirs) {
        return Err(Refusal::new(
            "connections from unknown nodes",
            who,
            format!(
                "unknown node {} (sid {}, type {}) in {}'s cluster file",
                theirs.name,
                theirs.sid,
                theirs.stype,
                core.me().name
            ),
        ));
    }
    let secret = core.secret();
    let mine = core.identity();
    let my_proof = auth::prove(secret.as_bytes(), Side::Accepting, &theirs, &mine);
    let mut out = BytesMut::new();
    proto::put_challenge(&mut out, &mine, &my_proof);
    if let Err(e) = wr.write_all(&out).await {
        return Err(Refusal {
            tell: false,
            ..Refusal::new(
                "connections closed before verifying",
                who,
                format!("closed before verifying: {e}"),
            )
        });
    }
    let probe = theirs.name == core.me().name && theirs.incarnation != core.incarnation();
    let second = read_until(deadline, rd, dec, buf, link).await.map_err(|e| {
        if probe {
            // `probe` from a process starting with this node's name: it has
            // its answer (this node is alive) and hangs up.
            Refusal {
                tell: false,
                ..Refusal::new(
                    "probes by processes starting with this node's name",
                    who.clone(),
                    format!(
                        "a process starting as {} asked whether this node is alive (it is, so that process should refuse to start)",
                        core.me().name
                    ),
                )
            }
        } else {
            Refusal {
                tell: matches!(e, Cause::Refused(_)),
                ..Refusal::new(
                    "connections closed before verifying",
                    who.clone(),
                    format!("no proof of the cluster secret: {e}"),
                )
            }
        }
    })?;
    match proto::parse(&second.data) {
        Ok(Envelope::Proof { proof }) => {
            if !auth::check(secret.as_bytes(), Side::Connecting, &theirs, &mine, proof) {
                return Err(Refusal::new(
                    "connections refused for a wrong cluster secret",
                    who,
                    "wrong cluster secret (its proof does not match)",
                ));
            }
        }
        Ok(Envelope::VerifyFailed { reason }) => {
            return Err(Refusal {
                tell: false,
                ..Refusal::new(
                    "connections that refused this node",
                    who,
                    format!("it refused this node: {}", String::from_utf8_lossy(reason)),
                )
            })
        }
        Ok(_) => {
            return Err(Refusal::new(
                "malformed verify requests",
                who,
                "expected a proof of the cluster secret",
            ))
        }
        Err(e) => {
            return Err(Refusal::new(
                "malformed verify requests",
                who,
                format!("malformed proof: {e}"),
            ))
        }
    }
    if theirs.name == core.me().name {
        return Err(Refusal::new(
            "connections from processes starting with this node's name",
            who,
            format!(
                "{} is already running (pid {}, at {})",
                core.me().name,
                std::process::id(),
                core.me().addr
            ),
        ));
    }
    let digest = core.digest();
    if theirs.digest != digest {
        return Err(Refusal::new(
            "connections refused for an RPC digest mismatch",
            who,
            format!(
                "RPC digest mismatch: {} has {:08x}, {} has {digest:08x} (their entitydef differs)",
                theirs.name,
                theirs.digest,
                core.me().name
            ),
        ));
    }
    Ok(theirs)
}

async fn inbound_task<H: NetHost>(core: Rc<H>, conn: u64, mut rd: ReadHalf, wr: WriteHalf, addr: String) {
    let cfg = core.settings();
    let mut dec = FrameDecoder::new(MAX_VERIFY_MESSAGE);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let link = Rc::new(Link::default());
    let verifying = Verifying::new(core.net());
    let theirs = match accept_handshake(&*core, &mut rd, &wr, &mut dec, &mut buf, &link).await {
        Ok(id) => id,
        Err(r) => {
            if core.limited(r.cause) {
                warn!("refused connection from {} at {addr}: {}", r.who, r.reason);
            }
            if r.tell {
                refuse(&wr, &r.reason).await;
            }
            return;
        }
    };
    drop(verifying);
    let from = theirs.name.clone();
    let gen = core.schema_gen();
    dec.set_max_message(cfg.max_message);
    link.push(|o| proto::put_verify_ok(o, &core.me().name, core.me().sid));
    core.net().inbound.borrow_mut().insert(conn, link.clone());
    let seqs = core.send_seqs(&from, theirs.incarnation);
    debug!("accepted {from} from {addr}");
    let acks = Acks::default();
    let reader = async {
        let mut burst = 0u32;
        loop {
            let msg = match read_message(&mut rd, &mut dec, &mut buf, &link).await {
                Ok(m) => m,
                Err(e) => return e,
            };
            pipeline(&mut burst, &buf, &link).await;
            if core.schema_gen() != gen {
                warn!("closing the connection from {from}: this node's RPC schema changed (it must verify again); a message from it was not handled");
                return reverify(&link, true).await;
            }
            match proto::parse(&msg.data) {
                Ok(env @ Envelope::Call { .. }) => {
                    core.on_request(conn, &from, &msg, env, Some(&link));
                }
                Ok(env @ Envelope::Send { .. }) => {
                    let seq = msg.session;
                    // a duplicate (resent after a reconnect) is acknowledged
                    // again; a send refused because this node is stopping is
                    // not, so its sender reports it
                    let fresh = seqs.fresh(seq);
                    if !fresh || core.on_request(conn, &from, &msg, env, Some(&link)) {
                        if fresh {
                            seqs.handled(seq);
                        }
                        if let Some(last) = seqs.last() {
                            acks.owe(last, &link);
                        }
                    }
                }
                Ok(Envelope::Ping) => link.push(|o| proto::put_ping(o, true)),
                Ok(Envelope::Pong) => {}
                Ok(Envelope::Load { load }) => core.on_load(theirs.sid, load),
                Ok(_) => return Cause::Protocol("unexpected message kind on an accepted connection".into()),
                Err(e) => return Cause::Protocol(e.to_string()),
            }
        }
    };
    let cause = tokio::select! {
        c = reader => c,
        c = acks.timer(&link) => c,
        c = link.write_loop(wr) => Cause::Io(c),
        c = liveness(&link, cfg.liveness, false) => c,
        c = schema_changed(&*core, gen, &link, true) => c,
    };
    core.net().inbound.borrow_mut().remove(&conn);
    match &cause {
        Cause::Closed => debug!("connection from {from} ({addr}) closed"),
        other => {
            if core.limited("accepted connections closed on an error") {
                warn!("connection from {from} ({addr}) closed: {other}")
            }
        }
    }
}

/// Dials `addr` (in memory when the node is in this process).
async fn dial<H: NetHost>(core: &H, addr: SocketAddr) -> Result<(ReadHalf, WriteHalf), Cause> {
    if let Some(halves) = core.net().local.as_ref().and_then(|net| net.dial(addr)) {
        return Ok(halves);
    }
    let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
        .await
        .map_err(|_| Cause::Refused("connect timed out".into()))?
        .map_err(|e| Cause::Refused(e.to_string()))?;
    Ok(stream::tcp(stream))
}

/// The reading side of a connection with its decoder and unread bytes.
struct Incoming {
    rd: ReadHalf,
    dec: FrameDecoder,
    buf: BytesMut,
}

impl Incoming {
    fn new(rd: ReadHalf) -> Self {
        Incoming {
            rd,
            dec: FrameDecoder::new(MAX_VERIFY_MESSAGE),
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }
}

/// A connection that verified, from the connecting side.
struct Verified {
    rd: ReadHalf,
    wr: WriteHalf,
    dec: FrameDecoder,
    buf: BytesMut,
    /// The peer's incarnation.
    incarnation: u64,
}

/// Sends our hello and reads the challenge; checks that the accepting side
/// is node `name`/`sid` and proves the cluster secret.
async fn hello<H: NetHost>(
    core: &H,
    inc: &mut Incoming,
    wr: &WriteHalf,
    link: &Link,
    deadline: Instant,
    expect: (&str, u32),
) -> Result<(Identity, Identity), Cause> {
    let mine = core.identity();
    let mut out = BytesMut::new();
    proto::put_verify(&mut out, &mine);
    wr.write_all(&out).await.map_err(|e| Cause::Refused(e.to_string()))?;
    let answer = read_until(deadline, &mut inc.rd, &mut inc.dec, &mut inc.buf, link)
        .await
        .map_err(|e| Cause::Refused(format!("no verify answer: {e}")))?;
    let (hello, proof) = match proto::parse(&answer.data) {
        Ok(Envelope::Challenge { hello, proof }) => (hello, proof),
        Ok(Envelope::VerifyFailed { reason }) => {
            return Err(Cause::Refused(format!("refused: {}", String::from_utf8_lossy(reason))))
        }
        Ok(_) => return Err(Cause::Refused("unexpected verify answer".into())),
        Err(e) => return Err(Cause::Refused(format!("malformed verify answer: {e}"))),
    };
    let theirs = hello
        .identity()
        .ok_or_else(|| Cause::Refused("malformed verify answer: bad nonce".into()))?;
    let secret = core.secret();
    if !auth::check(secret.as_bytes(), Side::Accepting, &mine, &theirs, proof) {
        let mut out = BytesMut::new();
        proto::put_verify_failed(&mut out, "wrong cluster secret (your proof does not match)");
        let _ = wr.write_all(&out).await;
        return Err(Cause::Refused(format!(
            "not trusted: it answered as {} but could not prove it knows the cluster secret (wrong cluster secret on one side, or an impostor)",
            theirs.name
        )));
    }
    if (theirs.name.as_str(), theirs.sid) != expect {
        return Err(Cause::Refused(format!(
            "answered as {} (sid {}), expected {} (sid {})",
            theirs.name, theirs.sid, expect.0, expect.1
        )));
    }
    Ok((mine, theirs))
}

async fn connect<H: NetHost>(core: &H, peer: &H::Peer) -> Result<Verified, Cause> {
    let NetSettings {
        max_message,
        verify_timeout,
        ..
    } = core.settings();
    let (rd, wr) = dial(core, peer.spec().addr).await?;
    let deadline = Instant::now() + verify_timeout;
    let mut inc = Incoming::new(rd);
    let expect = (peer.spec().name.as_str(), peer.spec().sid);
    let (mine, theirs) = hello(core, &mut inc, &wr, peer.link(), deadline, expect).await?;
    let Incoming {
        mut rd,
        mut dec,
        mut buf,
    } = inc;
    let proof = auth::prove(core.secret().as_bytes(), Side::Connecting, &mine, &theirs);
    let mut out = BytesMut::new();
    proto::put_proof(&mut out, &proof);
    wr.write_all(&out).await.map_err(|e| Cause::Refused(e.to_string()))?;
    let answer = read_until(deadline, &mut rd, &mut dec, &mut buf, peer.link())
        .await
        .map_err(|e| Cause::Refused(format!("no verify answer: {e}")))?;
    dec.set_max_message(max_message);
    match proto::parse(&answer.data) {
        Ok(Envelope::VerifyOk { .. }) => Ok(Verified {
            rd,
            wr,
            dec,
            buf,
            incarnation: theirs.incarnation,
        }),
        Ok(Envelope::VerifyFailed { reason }) => {
            Err(Cause::Refused(format!("refused: {}", String::from_utf8_lossy(reason))))
        }
        Ok(_) => Err(Cause::Refused("unexpected verify answer".into())),
        Err(e) => Err(Cause::Refused(e.to_string())),
    }
}

/// What answered at an address when asked whether a node runs there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// That node answered and proved the cluster secret.
    Alive {
        /// Its incarnation.
        incarnation: u64,
    },
    /// Something answered, but not that node proving the secret.
    NotThatNode(String),
    /// Nothing answered in time.
    Unreachable(String),
}

/// Asks whoever listens at `addr` whether it is node `name` (sid `sid`):
/// the handshake's first half, without ever proving anything ourselves.
/// Used before registering a node in ZooKeeper, to tell a live process with
/// the same name from the leftover of a crashed one.
#[allow(dead_code)] // used by the ZooKeeper registration
pub(crate) async fn probe<H: NetHost>(core: &H, addr: SocketAddr, name: &str, sid: u32) -> Probe {
    let (rd, wr) = match dial(core, addr).await {
        Ok(h) => h,
        Err(e) => return Probe::Unreachable(e.to_string()),
    };
    let deadline = Instant::now() + core.settings().verify_timeout;
    let mut inc = Incoming::new(rd);
    let link = Link::default();
    match hello(core, &mut inc, &wr, &link, deadline, (name, sid)).await {
        Ok((_, theirs)) => Probe::Alive {
            incarnation: theirs.incarnation,
        },
        Err(Cause::Refused(e)) if e.starts_with("no verify answer") => Probe::Unreachable(e),
        Err(e) => Probe::NotThatNode(e.to_string()),
    }
}

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
                    if text.starts_with("refused:") || text.starts_with("not trusted") {
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
        let gen = core.schema_gen();
        core.peer_connected(&peer, incarnation);
        peer.link().wake.notify_one();
        let liveness_bound = core.settings().liveness;
        let reader = async {
            let mut burst = 0u32;
            loop {
                let msg = match read_message(&mut rd, &mut dec, &mut buf, peer.link()).await {
                    Ok(m) => m,
                    Err(e) => return e,
                };
                pipeline(&mut burst, &buf, peer.link()).await;
                match proto::parse(&msg.data) {
                    Ok(Envelope::Reply { ok, nvals, vals }) => core.on_reply(&peer, msg.session, ok, nvals, vals),
                    Ok(Envelope::Ack { seq }) => peer.link().ack(seq),
                    Ok(Envelope::Ping) => peer.link().push(|o| proto::put_ping(o, true)),
                    Ok(Envelope::Pong) => {}
                    Ok(Envelope::VerifyFailed { reason }) if reason.starts_with(b"reverify") => return Cause::Reverify,
                    Ok(_) => return Cause::Protocol("unexpected message kind on an outgoing connection".into()),
                    Err(e) => return Cause::Protocol(e.to_string()),
                }
            }
        };
        let cause = tokio::select! {
            c = reader => c,
            c = peer.link().write_loop(wr) => Cause::Io(c),
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

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_silent_peer_is_dead_at_exactly_the_bound() {
        let t0 = Instant::now();
        let mut l = Liveness::new(4 * S, false);
        let wake = l.next_wake(t0);
        assert_eq!(wake, t0 + 4 * S);
        assert_eq!(l.decide(wake, wake, t0), Beat::Dead(4 * S));
    }

    #[test]
    fn traffic_moves_the_deadline() {
        let t0 = Instant::now();
        let mut l = Liveness::new(4 * S, false);
        let wake = l.next_wake(t0);
        // a frame arrived 1 s before the wake-up
        assert_eq!(l.decide(wake, wake, t0 + 3 * S), Beat::Quiet);
        assert_eq!(l.next_wake(t0 + 3 * S), t0 + 7 * S);
    }

    #[test]
    fn the_pinging_side_pings_after_a_quarter_of_quiet_then_judges_at_the_bound() {
        let t0 = Instant::now();
        let mut l = Liveness::new(4 * S, true);
        let w1 = l.next_wake(t0);
        assert_eq!(w1, t0 + S);
        assert_eq!(l.decide(w1, w1, t0), Beat::Ping);
        let w2 = l.next_wake(t0);
        assert_eq!(w2, t0 + 2 * S);
        assert_eq!(l.decide(w2, w2, t0), Beat::Ping);
        l.decide(t0 + 3 * S, t0 + 3 * S, t0);
        let w4 = l.next_wake(t0);
        assert_eq!(w4, t0 + 4 * S);
        assert_eq!(l.decide(w4, w4, t0), Beat::Dead(4 * S));
    }

    #[test]
    fn a_late_wake_up_is_a_stall_of_this_node_not_a_dead_peer() {
        let t0 = Instant::now();
        let mut l = Liveness::new(4 * S, false);
        let wake = l.next_wake(t0);
        // the process was stopped for 11 s
        let now = t0 + 15 * S;
        assert_eq!(l.decide(now, wake, t0), Beat::Stalled);
        let fresh = l.after_stall(now, t0);
        assert_eq!(fresh, now - 2 * S);
        // the peer gets half the bound to show life
        assert_eq!(l.next_wake(fresh), now + 2 * S);
        assert_eq!(l.decide(now + 2 * S, now + 2 * S, fresh), Beat::Dead(4 * S));
        // ... and a frame in that time keeps the connection
        assert_eq!(l.decide(now + 2 * S, now + 2 * S, now + S), Beat::Quiet);
    }

    #[test]
    fn a_node_late_on_every_wake_up_still_judges_every_other_time() {
        let t0 = Instant::now();
        let mut l = Liveness::new(4 * S, false);
        let wake = l.next_wake(t0);
        assert_eq!(l.decide(wake + 3 * S, wake, t0), Beat::Stalled);
        let fresh = l.after_stall(wake + 3 * S, t0);
        let wake = l.next_wake(fresh);
        assert_eq!(l.decide(wake + 3 * S, wake, fresh), Beat::Dead(7 * S));
    }

    #[test]
    fn small_lateness_is_not_a_stall() {
        let t0 = Instant::now();
        let mut l = Liveness::new(4 * S, false);
        let wake = l.next_wake(t0);
        assert_eq!(
            l.decide(wake + Duration::from_millis(10), wake, t0),
            Beat::Dead(4 * S + Duration::from_millis(10))
        );
    }
}
