//! The output side of one connection: a queue of whole messages with an
//! index of the requests it holds, the sends written but not yet
//! acknowledged, the bytes being written, and the writer loop.
//!
//! Lua appends whole messages to `out`; the writer takes all of `out` at once
//! as one chunk and writes it until it is empty, so `out` only ever holds
//! whole messages. The index says where each call and send sits in `out`;
//! when the writer takes a chunk, the sends in it move to `inflight` (a
//! slice of the chunk each, no copy) until the receiver acknowledges that it
//! handed them to Lua. So when a connection is lost, what happened to every
//! send is known: acknowledged (handled), in flight (resent on the next
//! connection to the same incarnation of the peer, which drops duplicates,
//! or reported lost), or still queued (sent on the next connection).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::net::stream::WriteHalf;
use crate::net::{Gate, NetPeer, PeerState};
use crate::rpc::acks::seq_le;

/// Queued bytes past which a sender writes to the socket at once instead of
/// waiting for the writer task (which only runs once Lua yields).
pub const FLUSH_THRESHOLD: usize = 64 * 1024;

/// Where a link's writer writes: a connection's socket (or in-memory
/// pipe), or, for a node reached through a Router, the connection to that
/// Router, each message rewritten with the relay prefix
/// (`codec::relay::relay_frames`).
pub(crate) enum Sink {
    /// A connection of its own.
    Wire(WriteHalf),
    /// Through a Router.
    Relay(RelaySink),
}

/// Bytes queued on a Router's link past which the links writing through it
/// wait (their messages then stay in their own queues, which `max_queue`
/// bounds, instead of piling up here).
pub(crate) const RELAY_BACKLOG: usize = 1024 * 1024;

/// The link of a node reached through a Router writes into the Router's link.
pub(crate) struct RelaySink {
    /// The Router.
    pub(crate) via: Rc<dyn NetPeer>,
    /// The node the messages are for.
    pub(crate) dst: u32,
    /// This node.
    pub(crate) src: u32,
}

impl RelaySink {
    fn up(&self) -> std::io::Result<()> {
        if self.via.reconnect().borrow().state() == PeerState::Connected {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("router {} is not connected", self.via.spec().name),
            ))
        }
    }
}

impl Sink {
    fn try_write(&self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Wire(w) => w.try_write(data),
            Sink::Relay(r) => {
                r.up()?;
                let link = r.via.link();
                if link.queued() >= RELAY_BACKLOG {
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                let n = crate::codec::relay::relay_frames(&mut link.out.borrow_mut(), data, r.dst, r.src);
                if n == 0 && !data.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "a link's queue does not start with a whole message",
                    ));
                }
                link.wake.notify_one();
                link.flush_if_large();
                Ok(n)
            }
        }
    }

    async fn writable(&self) -> std::io::Result<()> {
        match self {
            Sink::Wire(w) => w.writable().await,
            Sink::Relay(r) => {
                r.up()?;
                if r.via.link().queued() >= RELAY_BACKLOG {
                    r.via.link().drained().await;
                }
                r.up()
            }
        }
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sink::Wire(w) => w.fmt(f),
            Sink::Relay(r) => write!(f, "relay to {} through {}", r.dst, r.via.spec().name),
        }
    }
}

impl From<WriteHalf> for Sink {
    fn from(w: WriteHalf) -> Self {
        Sink::Wire(w)
    }
}

/// A request in the output queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Req {
    /// A call, by call id.
    Call(u32),
    /// A one-way send, by sequence number and method id.
    Send {
        /// Sequence number (the frame session).
        seq: u32,
        /// Method id.
        mid: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct Queued {
    /// Stream position of the message's first byte.
    at: u64,
    len: usize,
    req: Req,
}

/// A send written (or being written) and not yet acknowledged.
#[derive(Debug, Clone)]
struct Sent {
    seq: u32,
    mid: u32,
    bytes: Bytes,
}

/// The output side of one connection.
#[derive(Debug)]
pub(crate) struct Link {
    /// Whole messages waiting to be written.
    pub(crate) out: RefCell<BytesMut>,
    /// Stream position of `out[0]`: bytes ever taken from `out`.
    base: Cell<u64>,
    /// Requests in `out`, in order (only when `tracked`).
    index: RefCell<VecDeque<Queued>>,
    /// Sends taken by the writer and not yet acknowledged, in order.
    inflight: RefCell<VecDeque<Sent>>,
    inflight_bytes: Cell<usize>,
    /// Whether requests are indexed (links that carry calls and sends to a
    /// peer over a connection; not replies, nor calls to this node itself).
    tracked: bool,
    /// The chunk being written (what is left of it).
    head: RefCell<Bytes>,
    /// Wakes the writer task.
    pub(crate) wake: Notify,
    /// The socket while connected.
    writer: RefCell<Option<Rc<Sink>>>,
    /// When the last whole frame arrived on this connection.
    pub(crate) last_recv: Cell<Instant>,
    /// The connection's reverify gate: once the node's schema changed after
    /// it verified, nothing more is written on it (queued messages wait for
    /// the next one).
    gate: RefCell<Option<Gate>>,
    /// Woken whenever the writer has written everything queued.
    drained: Notify,
}

impl Default for Link {
    fn default() -> Self {
        Link::new(false)
    }
}

/// Sends that will not be delivered, counted by method id in order of
/// first appearance.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Lost {
    /// `(method id, count)`.
    pub sends: Vec<(u32, usize)>,
    /// How many of them had been written and not acknowledged (they may or
    /// may not have been handled).
    pub unacknowledged: usize,
}

impl Lost {
    fn add(&mut self, mid: u32) {
        match self.sends.iter_mut().find(|(m, _)| *m == mid) {
            Some((_, n)) => *n += 1,
            None => self.sends.push((mid, 1)),
        }
    }

    /// Total number of sends lost.
    pub fn total(&self) -> usize {
        self.sends.iter().map(|(_, n)| n).sum()
    }
}

impl Link {
    /// A link; `tracked` indexes requests for acknowledgement and resend.
    pub(crate) fn new(tracked: bool) -> Self {
        Link {
            out: RefCell::default(),
            base: Cell::new(0),
            index: RefCell::default(),
            inflight: RefCell::default(),
            inflight_bytes: Cell::new(0),
            tracked,
            head: RefCell::default(),
            wake: Notify::new(),
            writer: RefCell::new(None),
            last_recv: Cell::new(Instant::now()),
            gate: RefCell::new(None),
            drained: Notify::new(),
        }
    }

    /// Appends with `f` and wakes the writer.
    pub(crate) fn push(&self, f: impl FnOnce(&mut BytesMut)) {
        f(&mut self.out.borrow_mut());
        self.wake.notify_one();
    }

    /// Appends one request with `f` (which must leave `out` as it found it
    /// when it fails) and notes it in the index. Does not wake the writer.
    pub(crate) fn push_request<E>(&self, req: Req, f: impl FnOnce(&mut BytesMut) -> Result<(), E>) -> Result<(), E> {
        let mut out = self.out.borrow_mut();
        let start = out.len();
        f(&mut out)?;
        if self.tracked {
            self.index.borrow_mut().push_back(Queued {
                at: self.base.get() + start as u64,
                len: out.len() - start,
                req,
            });
        }
        Ok(())
    }

    /// Bytes queued or being written.
    pub(crate) fn queued(&self) -> usize {
        self.out.borrow().len() + self.head.borrow().len()
    }

    /// Bytes this link holds: queued, being written, or written and not yet
    /// acknowledged (what `max_queue` bounds).
    pub(crate) fn held(&self) -> usize {
        self.out.borrow().len() + self.inflight_bytes.get()
    }

    /// Takes everything queued as one chunk for the writer; the sends in it
    /// become in flight.
    fn take_out(&self) -> Bytes {
        let chunk = self.out.borrow_mut().split().freeze();
        let base = self.base.get();
        let end = base + chunk.len() as u64;
        self.base.set(end);
        if self.tracked {
            let mut index = self.index.borrow_mut();
            let mut inflight = self.inflight.borrow_mut();
            while index.front().is_some_and(|q| q.at < end) {
                let Some(q) = index.pop_front() else { break };
                if let Req::Send { seq, mid } = q.req {
                    let off = (q.at - base) as usize;
                    inflight.push_back(Sent {
                        seq,
                        mid,
                        bytes: chunk.slice(off..off + q.len),
                    });
                    self.inflight_bytes.set(self.inflight_bytes.get() + q.len);
                }
            }
        }
        chunk
    }

    /// The receiver handed every send up to `seq` to Lua.
    pub(crate) fn ack(&self, seq: u32) {
        let mut inflight = self.inflight.borrow_mut();
        while let Some(s) = inflight.front() {
            if !seq_le(s.seq, seq) {
                break;
            }
            self.inflight_bytes.set(self.inflight_bytes.get() - s.bytes.len());
            inflight.pop_front();
        }
    }

    /// Sends written and not yet acknowledged.
    #[cfg(test)]
    pub(crate) fn unacknowledged(&self) -> usize {
        self.inflight.borrow().len()
    }

    /// Ids of the calls whose messages are still queued whole (never written).
    pub(crate) fn queued_calls(&self) -> std::collections::HashSet<u32> {
        self.index
            .borrow()
            .iter()
            .filter_map(|q| match q.req {
                Req::Call(id) => Some(id),
                Req::Send { .. } => None,
            })
            .collect()
    }

    /// Rebuilds `out` as `prefix` followed by the queued requests `keep`
    /// accepts (other messages, such as pings, are dropped).
    fn rebuild(&self, prefix: Vec<Sent>, keep: impl Fn(&Req) -> bool) {
        let old = self.out.borrow_mut().split();
        let old_base = self.base.get();
        let base = old_base + old.len() as u64;
        self.base.set(base);
        let mut out = BytesMut::new();
        let mut index = VecDeque::new();
        for s in prefix {
            index.push_back(Queued {
                at: base + out.len() as u64,
                len: s.bytes.len(),
                req: Req::Send { seq: s.seq, mid: s.mid },
            });
            out.extend_from_slice(&s.bytes);
        }
        for q in self.index.borrow().iter().filter(|q| keep(&q.req)) {
            let off = (q.at - old_base) as usize;
            index.push_back(Queued {
                at: base + out.len() as u64,
                len: q.len,
                req: q.req,
            });
            out.extend_from_slice(&old[off..off + q.len]);
        }
        *self.out.borrow_mut() = out;
        *self.index.borrow_mut() = index;
    }

    /// The connection is gone: bytes half written are dropped (the sends
    /// among them are still in flight), queued calls are dropped unless
    /// `keep_calls`, and queued sends stay for the next connection.
    pub(crate) fn connection_lost(&self, keep_calls: bool) {
        *self.head.borrow_mut() = Bytes::new();
        if self.tracked {
            self.rebuild(Vec::new(), |r| keep_calls || matches!(r, Req::Send { .. }));
        }
    }

    /// A new connection verified. To the same incarnation of the peer, the
    /// sends in flight go first again (the receiver drops those it already
    /// handled) and nothing is lost; to another incarnation (the peer
    /// restarted) they are lost and returned.
    pub(crate) fn reconnected(&self, same_incarnation: bool) -> Lost {
        let inflight: Vec<Sent> = self.inflight.borrow_mut().drain(..).collect();
        self.inflight_bytes.set(0);
        let mut lost = Lost::default();
        if same_incarnation {
            if !inflight.is_empty() {
                self.rebuild(inflight, |_| true);
            }
        } else {
            for s in &inflight {
                lost.add(s.mid);
            }
            lost.unacknowledged = inflight.len();
        }
        lost
    }

    /// Empties everything after the peer is declared down and says which
    /// sends will not be delivered.
    pub(crate) fn drain_unsent(&self) -> Lost {
        *self.head.borrow_mut() = Bytes::new();
        let mut lost = Lost::default();
        let inflight: Vec<Sent> = self.inflight.borrow_mut().drain(..).collect();
        self.inflight_bytes.set(0);
        for s in &inflight {
            lost.add(s.mid);
        }
        lost.unacknowledged = inflight.len();
        let out = self.out.borrow_mut().split();
        self.base.set(self.base.get() + out.len() as u64);
        for q in self.index.borrow_mut().drain(..) {
            if let Req::Send { mid, .. } = q.req {
                lost.add(mid);
            }
        }
        lost
    }

    /// Empties the queue of an untracked link (nothing in it is reported).
    pub(crate) fn clear(&self) {
        let out = self.out.borrow_mut().split();
        self.base.set(self.base.get() + out.len() as u64);
        self.index.borrow_mut().clear();
    }

    /// Writes as much as the socket takes now, without waiting.
    /// Returns true when everything queued was written.
    fn try_flush(&self, wr: &Sink) -> std::io::Result<bool> {
        if self.gate.borrow().as_ref().is_some_and(Gate::stale) {
            return Ok(true);
        }
        let mut head = self.head.borrow_mut();
        loop {
            if head.is_empty() {
                if self.out.borrow().is_empty() {
                    return Ok(true);
                }
                *head = self.take_out();
            }
            match wr.try_write(&head) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => head.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// When Lua has queued a lot in one go, writes what the socket takes now
    /// so the peer can start on it.
    pub(crate) fn flush_if_large(&self) {
        if self.out.borrow().len() < FLUSH_THRESHOLD {
            return;
        }
        let wr = self.writer.borrow().clone();
        if let Some(wr) = wr {
            // Errors surface in the writer loop.
            let _ = self.try_flush(&wr);
        }
    }

    /// Writes what the socket takes now, if connected (errors surface in the
    /// writer loop).
    pub(crate) fn flush_now(&self) {
        if self.out.borrow().is_empty() && self.head.borrow().is_empty() {
            return;
        }
        let wr = self.writer.borrow().clone();
        if let Some(wr) = wr {
            let _ = self.try_flush(&wr);
        }
    }

    /// Lets this connection write again whatever the schema (to tell the
    /// peer to verify again).
    pub(crate) fn ungate(&self) {
        self.gate.borrow_mut().take();
    }

    /// Whether a connection is there to write on (the writer loop runs).
    pub(crate) fn connected(&self) -> bool {
        self.writer.borrow().is_some()
    }

    /// Returns once everything queued has been written.
    pub(crate) async fn drained(&self) {
        loop {
            let wait = self.drained.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            if self.queued() == 0 {
                return;
            }
            wait.await;
        }
    }

    /// Writes queued data until the connection fails; returns the cause.
    /// `gate` stops the writing once the schema changed (none for a link
    /// that never verifies, such as a node's link to itself).
    pub(crate) async fn write_loop(&self, wr: impl Into<Sink>, gate: Option<Gate>) -> String {
        let wr: Sink = wr.into();
        *self.gate.borrow_mut() = gate;
        // A new connection starts at a frame boundary: bytes left half
        // written on the previous one cannot go out here (sends among them
        // are in flight and were resent or reported).
        *self.head.borrow_mut() = Bytes::new();
        let wr = Rc::new(wr);
        *self.writer.borrow_mut() = Some(wr.clone());
        let _detach = Detach(self);
        loop {
            match self.try_flush(&wr) {
                Ok(true) => {
                    self.drained.notify_waiters();
                    self.wake.notified().await
                }
                Ok(false) => {
                    if let Err(e) = wr.writable().await {
                        return e.to_string();
                    }
                }
                Err(e) => return e.to_string(),
            }
        }
    }
}

/// Forgets the socket when the writer loop ends, however it ends (the reader
/// may end the connection first and drop the loop).
struct Detach<'a>(&'a Link);

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        self.0.writer.borrow_mut().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::proto::{self, Envelope};
    use crate::codec::wire::FrameDecoder;

    fn send(link: &Link, seq: u32, mid: u32) {
        link.push_request(Req::Send { seq, mid }, |o| {
            let start = proto::begin_request(o, false, 1, mid, 0);
            crate::codec::wire::finish_message(o, start, seq);
            Ok::<(), ()>(())
        })
        .unwrap();
    }

    fn call(link: &Link, id: u32) {
        link.push_request(Req::Call(id), |o| {
            let start = proto::begin_request(o, true, 1, 9, 0);
            crate::codec::wire::finish_message(o, start, id);
            Ok::<(), ()>(())
        })
        .unwrap();
    }

    /// (kind, session) of every message queued in `out`.
    fn queued(link: &Link) -> Vec<(char, u32)> {
        let mut out = link.out.borrow().clone();
        let mut dec = FrameDecoder::new(usize::MAX);
        let mut v = Vec::new();
        while let Ok(Some(m)) = dec.decode(&mut out) {
            v.push(match proto::parse(&m.data).unwrap() {
                Envelope::Call { .. } => ('c', m.session),
                Envelope::Send { .. } => ('s', m.session),
                _ => ('o', m.session),
            });
        }
        v
    }

    #[test]
    fn unsent_sends_are_counted_by_method() {
        let link = Link::new(true);
        send(&link, 1, 5);
        send(&link, 2, 5);
        send(&link, 3, 7);
        call(&link, 3);
        let lost = link.drain_unsent();
        assert_eq!(lost.sends, vec![(5, 2), (7, 1)]);
        assert_eq!(lost.unacknowledged, 0);
        assert_eq!(link.queued(), 0);
        assert_eq!(link.held(), 0);
    }

    #[test]
    fn written_sends_wait_for_their_ack() {
        let link = Link::new(true);
        for seq in 1..=4 {
            send(&link, seq, 5);
        }
        let chunk = link.take_out();
        assert_eq!(link.unacknowledged(), 4);
        assert_eq!(link.held(), chunk.len());
        link.ack(2);
        assert_eq!(link.unacknowledged(), 2);
        link.ack(1); // old ack: nothing changes
        assert_eq!(link.unacknowledged(), 2);
        link.ack(4);
        assert_eq!(link.unacknowledged(), 0);
        assert_eq!(link.held(), 0);
    }

    #[test]
    fn lost_connection_resends_to_the_same_incarnation_first() {
        let link = Link::new(true);
        send(&link, 1, 5);
        call(&link, 10);
        send(&link, 2, 5);
        link.take_out(); // written: send 1, call 10, send 2
        link.ack(1);
        link.push(|o| proto::put_ping(o, false));
        send(&link, 3, 6);
        call(&link, 11);
        link.connection_lost(false);
        // queued call 11 and the ping are dropped; send 3 waits
        assert_eq!(queued(&link), vec![('s', 3)]);
        let lost = link.reconnected(true);
        assert_eq!(lost, Lost::default());
        assert_eq!(queued(&link), vec![('s', 2), ('s', 3)]);
        // the rebuilt queue is indexed: taking it puts both in flight again
        link.take_out();
        assert_eq!(link.unacknowledged(), 2);
    }

    #[test]
    fn a_restarted_peer_gets_queued_sends_and_in_flight_ones_are_reported() {
        let link = Link::new(true);
        send(&link, 1, 5);
        send(&link, 2, 6);
        link.take_out();
        send(&link, 3, 6);
        link.connection_lost(false);
        let lost = link.reconnected(false);
        assert_eq!(lost.sends, vec![(5, 1), (6, 1)]);
        assert_eq!(lost.unacknowledged, 2);
        assert_eq!(queued(&link), vec![('s', 3)]);
    }

    #[test]
    fn reverify_keeps_queued_calls() {
        let link = Link::new(true);
        call(&link, 1);
        link.take_out();
        call(&link, 2);
        send(&link, 4, 5);
        link.connection_lost(true);
        assert_eq!(queued(&link), vec![('c', 2), ('s', 4)]);
        assert_eq!(link.queued_calls(), [2].into_iter().collect());
    }
}
