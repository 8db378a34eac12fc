//! The two halves of a node-to-node connection: a TCP socket, or an
//! in-memory pipe between two nodes of the same process.
//!
//! Nodes started together in one process (`luahost up`, [`LocalCluster`])
//! share a [`LocalNet`]: a node dialing another one of the same process gets a
//! pair of pipes instead of a loopback socket, so a message crosses threads
//! without any syscall. Everything above this module (frames, verify,
//! liveness, connect states) is the same for both.
//!
//! [`LocalCluster`]: crate::cluster::LocalCluster

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};

use super::handoff::{Spinner, Wakeable};

/// Bytes a pipe holds before its writer must wait (like a socket buffer).
const PIPE_CAPACITY: usize = 4 * 1024 * 1024;

/// One direction of an in-memory connection.
#[derive(Debug, Default)]
struct Pipe {
    buf: Mutex<BytesMut>,
    /// Wakes the reader (data or close).
    readable: Notify,
    /// Wakes the writer (room or close).
    writable: Notify,
    closed: AtomicBool,
    /// The worker its reader runs on, once known: a writer hands the wake-up
    /// to that worker while it spins (`handoff`).
    reader: OnceLock<Arc<Spinner>>,
}

impl Wakeable for Pipe {
    fn notify(&self) -> &Notify {
        &self.readable
    }
}

/// Tells `p`'s reader there is data: through its worker's spin if it is
/// spinning, else with a plain wake-up.
fn wake_reader(p: &Arc<Pipe>) {
    if let Some(s) = p.reader.get() {
        if s.offer(p.clone()) {
            return;
        }
    }
    p.readable.notify_one();
}

impl Pipe {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.readable.notify_one();
        self.writable.notify_one();
    }
}

/// The reading half of a connection.
#[derive(Debug)]
pub(crate) enum ReadHalf {
    /// A TCP socket.
    Tcp(OwnedReadHalf),
    /// An in-memory pipe.
    Mem(MemEnd),
}

/// The writing half of a connection.
#[derive(Debug)]
pub(crate) enum WriteHalf {
    /// A TCP socket.
    Tcp(OwnedWriteHalf),
    /// An in-memory pipe.
    Mem(MemEnd),
}

/// Closes its pipe when dropped.
#[derive(Debug)]
pub(crate) struct MemEnd(Arc<Pipe>);

impl Drop for MemEnd {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl ReadHalf {
    /// Appends what is available to `buf`; 0 means closed.
    pub(crate) async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ReadHalf::Tcp(r) => r.read_buf(buf).await,
            ReadHalf::Mem(MemEnd(p)) => loop {
                {
                    let mut src = p.buf.lock().map_err(|_| io::Error::other("pipe poisoned"))?;
                    if !src.is_empty() {
                        let n = src.len();
                        if buf.is_empty() {
                            std::mem::swap(buf, &mut *src);
                        } else {
                            buf.extend_from_slice(&src);
                            src.clear();
                        }
                        drop(src);
                        p.writable.notify_one();
                        return Ok(n);
                    }
                }
                if p.closed.load(Ordering::Acquire) {
                    return Ok(0);
                }
                if p.reader.get().is_none() {
                    if let Some(s) = Spinner::current() {
                        let _ = p.reader.set(s);
                    }
                }
                p.readable.notified().await;
            },
        }
    }
}

impl WriteHalf {
    /// Writes what fits now without waiting.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when nothing fits; other errors when the peer is gone.
    pub(crate) fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            WriteHalf::Tcp(w) => w.try_write(data),
            WriteHalf::Mem(MemEnd(p)) => {
                if p.closed.load(Ordering::Acquire) {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                let mut dst = p.buf.lock().map_err(|_| io::Error::other("pipe poisoned"))?;
                let room = PIPE_CAPACITY.saturating_sub(dst.len());
                if room == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = room.min(data.len());
                dst.extend_from_slice(&data[..n]);
                drop(dst);
                wake_reader(p);
                Ok(n)
            }
        }
    }

    /// Waits until a write may succeed.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(w) => w.writable().await,
            WriteHalf::Mem(MemEnd(p)) => loop {
                if p.closed.load(Ordering::Acquire) {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                if p.buf.lock().map(|b| b.len() < PIPE_CAPACITY).unwrap_or(true) {
                    return Ok(());
                }
                p.writable.notified().await;
            },
        }
    }

    /// Writes all of `data`, waiting for room.
    pub(crate) async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            self.writable().await?;
            match self.try_write(data) {
                Ok(n) => data.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Splits a TCP stream (with Nagle off).
pub(crate) fn tcp(stream: TcpStream) -> (ReadHalf, WriteHalf) {
    let _ = stream.set_nodelay(true);
    let (r, w) = stream.into_split();
    (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
}

/// The accepting node's ends of an in-memory connection.
#[derive(Debug)]
pub(crate) struct MemConn {
    /// What the dialing node writes.
    pub(crate) rd: ReadHalf,
    /// Where the accepting node writes.
    pub(crate) wr: WriteHalf,
}

/// One in-memory pipe: what is written to the write half is read from the
/// read half (a node's calls to itself go through one).
pub(crate) fn pipe() -> (ReadHalf, WriteHalf) {
    let p = Arc::new(Pipe::default());
    (ReadHalf::Mem(MemEnd(p.clone())), WriteHalf::Mem(MemEnd(p)))
}

/// The nodes of one process that accept in-memory connections, by listen
/// address.
#[derive(Debug, Default)]
pub struct LocalNet {
    nodes: Mutex<HashMap<SocketAddr, mpsc::UnboundedSender<MemConn>>>,
}

impl LocalNet {
    /// An empty registry.
    pub fn new() -> Arc<LocalNet> {
        Arc::new(LocalNet::default())
    }

    /// Registers the node listening on `addr`; in-memory connections to it
    /// arrive on the returned receiver.
    pub(crate) fn listen(&self, addr: SocketAddr) -> mpsc::UnboundedReceiver<MemConn> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.insert(addr, tx);
        }
        rx
    }

    /// Forgets the node listening on `addr`.
    pub(crate) fn unlisten(&self, addr: SocketAddr) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.remove(&addr);
        }
    }

    /// Connects in memory to the node on `addr`, if it is in this process.
    pub(crate) fn dial(&self, addr: SocketAddr) -> Option<(ReadHalf, WriteHalf)> {
        let tx = self.nodes.lock().ok()?.get(&addr)?.clone();
        let up = Arc::new(Pipe::default());
        let down = Arc::new(Pipe::default());
        let theirs = MemConn {
            rd: ReadHalf::Mem(MemEnd(up.clone())),
            wr: WriteHalf::Mem(MemEnd(down.clone())),
        };
        tx.send(theirs).ok()?;
        Some((ReadHalf::Mem(MemEnd(down)), WriteHalf::Mem(MemEnd(up))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pipes_carry_bytes_both_ways_and_report_close() {
        let net = LocalNet::new();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut rx = net.listen(addr);
        let (mut rd, wr) = net.dial(addr).unwrap();
        let MemConn { rd: mut srd, wr: swr } = rx.recv().await.unwrap();
        wr.write_all(b"hello").await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(srd.read_buf(&mut buf).await.unwrap(), 5);
        assert_eq!(&buf[..], b"hello");
        swr.write_all(b"back").await.unwrap();
        let mut b2 = BytesMut::new();
        rd.read_buf(&mut b2).await.unwrap();
        assert_eq!(&b2[..], b"back");
        drop(wr);
        let mut b3 = BytesMut::new();
        assert_eq!(srd.read_buf(&mut b3).await.unwrap(), 0, "closed");
        drop(rd);
        assert!(swr.try_write(b"x").is_err(), "peer gone");
        assert!(net.dial("127.0.0.1:2".parse().unwrap()).is_none());
    }
}
