//! The output side of one connection: a queue of whole messages, the bytes
//! being written, and the writer loop.
//!
//! Lua appends whole messages to `out`; the writer moves them to `head` and
//! writes `head` until it is empty, so `out` only ever holds whole messages.
//! When a connection is lost, what is still in `out` is known exactly (and
//! reported by method); `head` holds at most one write's worth of bytes whose
//! fate is unknown.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::{Buf, BytesMut};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::proto::{self, Envelope};
use crate::stream::WriteHalf;
use crate::wire::FrameDecoder;

/// Queued bytes past which a sender writes to the socket at once instead of
/// waiting for the writer task (which only runs once Lua yields).
pub const FLUSH_THRESHOLD: usize = 64 * 1024;

/// The output side of one connection.
#[derive(Debug)]
pub(crate) struct Link {
    /// Whole messages waiting to be written.
    pub(crate) out: RefCell<BytesMut>,
    /// Bytes taken from `out` and partly written.
    head: RefCell<BytesMut>,
    /// Wakes the writer task.
    pub(crate) wake: Notify,
    /// The socket while connected.
    writer: RefCell<Option<Rc<WriteHalf>>>,
    /// When bytes last arrived on this connection.
    pub(crate) last_recv: Cell<Instant>,
    /// Set when the node's schema changed after this connection verified:
    /// nothing more is written on it (queued messages wait for the next one).
    pub(crate) stale: Cell<bool>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            out: RefCell::default(),
            head: RefCell::default(),
            wake: Notify::new(),
            writer: RefCell::new(None),
            last_recv: Cell::new(Instant::now()),
            stale: Cell::new(false),
        }
    }
}

/// What was lost when a connection closed with data queued.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Unsent {
    /// Whole sends never written, by method id.
    pub sends: Vec<(u32, usize)>,
    /// Bytes that were being written when the connection failed.
    pub partial_bytes: usize,
}

impl Link {
    /// Appends with `f` and wakes the writer.
    pub(crate) fn push(&self, f: impl FnOnce(&mut BytesMut)) {
        f(&mut self.out.borrow_mut());
        self.wake.notify_one();
    }

    /// Bytes queued or being written.
    pub(crate) fn queued(&self) -> usize {
        self.out.borrow().len() + self.head.borrow().len()
    }

    /// Writes as much as the socket takes now, without waiting.
    /// Returns true when everything queued was written.
    fn try_flush(&self, wr: &WriteHalf) -> std::io::Result<bool> {
        if self.stale.get() {
            return Ok(true);
        }
        let mut head = self.head.borrow_mut();
        loop {
            if head.is_empty() {
                let mut out = self.out.borrow_mut();
                if out.is_empty() {
                    return Ok(true);
                }
                *head = out.split();
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

    /// Writes queued data until the connection fails; returns the cause.
    pub(crate) async fn write_loop(&self, wr: WriteHalf) -> String {
        self.stale.set(false);
        // A new connection starts at a frame boundary: bytes left half
        // written on the previous one cannot go out here.
        let leftover = std::mem::take(&mut *self.head.borrow_mut()).len();
        if leftover > 0 {
            tracing::warn!("{leftover} bytes half written on the previous connection were dropped");
        }
        let wr = Rc::new(wr);
        *self.writer.borrow_mut() = Some(wr.clone());
        let _detach = Detach(self);
        loop {
            match self.try_flush(&wr) {
                Ok(true) => self.wake.notified().await,
                Ok(false) => {
                    if let Err(e) = wr.writable().await {
                        return e.to_string();
                    }
                }
                Err(e) => return e.to_string(),
            }
        }
    }

    /// Ids of the calls whose messages are still queued whole (never written).
    pub(crate) fn queued_calls(&self) -> std::collections::HashSet<u32> {
        let mut out = self.out.borrow().clone();
        let mut ids = std::collections::HashSet::new();
        let mut dec = FrameDecoder::new(usize::MAX);
        while let Ok(Some(msg)) = dec.decode(&mut out) {
            if let Ok(Envelope::Call { .. }) = proto::parse(&msg.data) {
                ids.insert(msg.session);
            }
        }
        ids
    }

    /// Empties the queue after the connection is gone and says what was lost.
    pub(crate) fn drain_unsent(&self) -> Unsent {
        let partial_bytes = std::mem::take(&mut *self.head.borrow_mut()).len();
        let mut out = std::mem::take(&mut *self.out.borrow_mut());
        let mut counts: Vec<(u32, usize)> = Vec::new();
        let mut dec = FrameDecoder::new(usize::MAX);
        while let Ok(Some(msg)) = dec.decode(&mut out) {
            if let Ok(Envelope::Send { mid, .. }) = proto::parse(&msg.data) {
                match counts.iter_mut().find(|(m, _)| *m == mid) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((mid, 1)),
                }
            }
        }
        Unsent {
            sends: counts,
            partial_bytes,
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

    #[test]
    fn unsent_sends_are_counted_by_method() {
        let link = Link::default();
        link.push(|o| {
            for mid in [5, 5, 7] {
                let start = proto::begin_request(o, false, 1, mid, 0);
                crate::wire::finish_message(o, start, 0);
            }
            let start = proto::begin_request(o, true, 1, 9, 0);
            crate::wire::finish_message(o, start, 3);
        });
        let lost = link.drain_unsent();
        assert_eq!(lost.sends, vec![(5, 2), (7, 1)]);
        assert_eq!(lost.partial_bytes, 0);
        assert_eq!(link.queued(), 0);
    }
}
