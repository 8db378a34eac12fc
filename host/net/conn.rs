//! One connection once verified, for every kind: the reader of whole
//! messages, pipelining of long bursts, acknowledgements owed, the reverify
//! of a schema change, and the liveness driver (its rule is `rpc::liveness`).

use std::cell::Cell;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::codec::proto::{self, Envelope};
use crate::codec::wire::{FrameDecoder, Message};
use crate::net::link::Link;
use crate::net::stream::ReadHalf;
use crate::net::NetHost;
use crate::rpc::liveness::{Beat, Liveness};

/// Messages handled from one read burst before the writers get a turn.
pub(crate) const PIPELINE_BURST: u32 = 16;

/// Sends handled before an acknowledgement goes out at once.
pub(crate) const ACK_EVERY: u32 = 4096;
/// Otherwise an acknowledgement goes out this long after the first send it
/// covers (delayed acknowledgements, as in TCP: one small frame per 10 ms of
/// a stream, not one per read burst, which cost 10% of the send rate).
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(10);

/// Acknowledgements owed on an accepted connection.
#[derive(Default)]
pub(crate) struct Acks {
    /// The last send handled and not yet acknowledged.
    pub(crate) owed: Cell<Option<u32>>,
    /// How many sends that covers.
    pub(crate) count: Cell<u32>,
    /// Wakes the timer when the first send of a new batch is owed.
    pub(crate) armed: Notify,
}

impl Acks {
    /// Send `last` (and all before it) was handled.
    pub(crate) fn owe(&self, last: u32, link: &Link) {
        let first = self.owed.replace(Some(last)).is_none();
        let n = self.count.get() + 1;
        self.count.set(n);
        if n >= ACK_EVERY {
            self.pay(link);
        } else if first {
            self.armed.notify_one();
        }
    }

    pub(crate) fn pay(&self, link: &Link) {
        if let Some(seq) = self.owed.take() {
            self.count.set(0);
            link.push(|o| proto::put_ack(o, seq));
        }
    }

    /// Pays what is owed `ACK_DELAY` after it began to be owed.
    pub(crate) async fn timer(&self, link: &Link) -> Cause {
        loop {
            self.armed.notified().await;
            tokio::time::sleep(ACK_DELAY).await;
            self.pay(link);
        }
    }
}

/// Why a connection ended, or why an attempt to make one failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Cause {
    /// The peer closed it.
    #[error("connection closed")]
    Closed,
    /// A socket error.
    #[error("{0}")]
    Io(String),
    /// The peer broke the protocol (bad frame, bad envelope, oversize).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No whole frame arrived for longer than the liveness bound.
    #[error("no traffic for {:.1} s (liveness bound)", .0.as_secs_f64())]
    Silent(Duration),
    /// The handshake's deadline passed without the next message.
    #[error("no answer in time")]
    NoAnswer,
    /// The address could not be reached (dial failed or timed out, or the
    /// connection broke during the handshake).
    #[error("{0}")]
    Unreachable(String),
    /// The peer did not answer our hello or proof.
    #[error("no verify answer: {0}")]
    NoVerifyAnswer(Box<Cause>),
    /// The peer refused us (its verify-failed reason).
    #[error("refused: {0}")]
    RefusedBy(String),
    /// The peer could not prove it knows the cluster secret: we refused it.
    #[error(
        "not trusted: it answered as {0} but could not prove it knows the cluster secret (wrong cluster secret on one side, or an impostor)"
    )]
    Untrusted(String),
    /// The peer proved the secret but is another node than the one dialled.
    #[error("answered as {got} (sid {got_sid}), expected {want} (sid {want_sid})")]
    WrongNode {
        /// Who answered.
        got: String,
        /// Its sid.
        got_sid: u32,
        /// Who was expected.
        want: String,
        /// Its sid.
        want_sid: u32,
    },
    /// The peer's answer in the handshake was not what the protocol allows.
    #[error("{0}")]
    BadAnswer(String),
    /// A Router closed the connection of a node that did not read what was
    /// queued for it.
    #[error("{0} bytes were queued for it (max_queue): too slow to keep up")]
    Slow(usize),
    /// This node's schema changed: the connection must verify again.
    #[error("this node's RPC schema changed; verifying again")]
    Reverify,
}

impl Cause {
    /// Whether an attempt failed because of who is at the other end (a
    /// refusal either way), worth a warning, rather than because nothing
    /// answered (normal while a peer is down).
    pub(crate) fn is_refusal(&self) -> bool {
        matches!(
            self,
            Cause::RefusedBy(_) | Cause::Untrusted(_) | Cause::WrongNode { .. }
        )
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

/// The one reader of every connection kind (accepted, outgoing, and a
/// node's calls to itself): reads whole messages, lets the writer run every
/// few messages of a long burst, parses each envelope once and hands it to
/// `handle`, which returns a cause to end the connection. A relayed message
/// (through a Router, `codec::relay`) goes to `relayed` unparsed.
pub(crate) async fn read_loop(
    rd: &mut ReadHalf,
    dec: &mut FrameDecoder,
    buf: &mut BytesMut,
    link: &Link,
    mut relayed: impl FnMut(&Message) -> Option<Cause>,
    mut handle: impl FnMut(&Message, Envelope<'_>) -> Option<Cause>,
) -> Cause {
    let mut burst = 0u32;
    loop {
        let msg = match read_message(rd, dec, buf, link).await {
            Ok(m) => m,
            Err(e) => return e,
        };
        pipeline(&mut burst, buf, link).await;
        if crate::codec::relay::is_relayed(&msg.data) {
            if let Some(cause) = relayed(&msg) {
                return cause;
            }
            continue;
        }
        let env = match proto::parse(&msg.data) {
            Ok(env) => env,
            Err(e) => return Cause::Protocol(e.to_string()),
        };
        if let Some(cause) = handle(&msg, env) {
            return cause;
        }
    }
}

/// The `relayed` of [`read_loop`] for connections that never carry relayed
/// messages.
pub(crate) fn not_relayed(_: &Message) -> Option<Cause> {
    Some(Cause::Protocol(
        "a relayed message on a connection that is not to a router".into(),
    ))
}

/// Lets this connection's writer (and other tasks) run every few messages of
/// a long burst, so that the first replies are on the wire while the rest of
/// the burst is still being handled: both ends then work at once instead of
/// in turns.
pub(crate) async fn pipeline(burst: &mut u32, unread: &BytesMut, link: &Link) {
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
/// (at generation `gen`).
pub(crate) async fn schema_changed<H: NetHost>(core: &H, gen: u64, link: &Link, accepted: bool) -> Cause {
    core.net().reverify.changed(gen).await;
    reverify(link, accepted).await
}

/// Closes a connection so that it verifies again under the new schema. On
/// the accepting side the peer is told first (a verify-failed with reason
/// "reverify"), so it reconnects at once instead of reporting this node down.
pub(crate) async fn reverify(link: &Link, accepted: bool) -> Cause {
    if accepted {
        link.ungate();
        link.clear();
        link.push(|o| proto::put_verify_failed(o, REVERIFY));
        let _ = tokio::time::timeout(Duration::from_millis(200), link.drained()).await;
    }
    Cause::Reverify
}

/// Reason of the verify-failed that asks a connected peer to verify again.
pub(crate) const REVERIFY: &str = "reverify: the RPC schema changed";

/// Ends with [`Cause::Silent`] once no whole frame has arrived for `bound`
/// (exactly, not up to a tick later); when `ping` is set, pings whenever the
/// connection has been quiet for a quarter of it. Before judging, data that
/// is already waiting is read: a node resumed after SIGSTOP, or whose thread
/// was busy, does not drop connections whose peers kept talking.
pub(crate) async fn liveness(link: &Link, bound: Duration, ping: bool) -> Cause {
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
