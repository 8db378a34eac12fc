//! Game-client connections, both sides: a Gate accepting them
//! ([`ClientListener`], [`Incoming`]) and a client dialing one ([`connect`]).
//!
//! A client speaks the frames of seed 003 ([`wire`]) over one of four
//! transports: plain TCP, TCP inside TLS, WebSocket, or WebSocket inside TLS
//! (`wss://`). TLS is done here with rustls (the ring provider), below the
//! WebSocket layer; the WebSocket layer is tokio-tungstenite without
//! compression. Above this module every transport looks the same: a
//! [`ClientReader`] yielding whole (reassembled) messages and a
//! [`ClientWriter`] taking whole frames.
//!
//! Over WebSocket, frames travel in *binary* messages. The protocol says one
//! frame per message, and that is what [`ClientWriter::write`] sends; the
//! reader accepts a binary message holding any number of whole frames back
//! to back (zero, one or more), but never a frame cut across two messages
//! ([`ClientNetError::SplitFrame`]). A text message is an error
//! ([`ClientNetError::TextMessage`]); pings are answered by the library.
//!
//! Accepting is in two steps so that a client that connects and never
//! speaks cannot hold up the accept loop: [`ClientListener::accept`] only
//! takes the TCP socket; [`Incoming::open`] does the TLS handshake and/or
//! the WebSocket upgrade, and the caller bounds it with its verify timeout.
//!
//! [`wire`]: crate::codec::wire

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;

use crate::codec::wire::{self, FrameDecoder, Message, WireError};

/// Room a WebSocket message may take beyond the largest client message:
/// frame headers and slack (a message of one frame is at most 64 KiB + 2).
const WS_SLACK: usize = 64 * 1024;
/// The most bytes one socket read takes (over plain TCP a connection keeps
/// no buffer between messages: see [`ClientReader::next`]).
const READ_RESERVE: usize = 16 * 1024;
/// The size of tungstenite's read buffer per connection, which it keeps
/// (and zero-fills) for the life of the connection: small, because a Gate
/// holds many idle clients (its default is 128 KiB). It is the most one
/// read takes; a longer WebSocket frame gets room for all of it.
const WS_READ_BUFFER: usize = 2 * 1024;
/// What [`ClientNetError::Cert`] names when the PEM came from memory.
const IN_MEMORY: &str = "(PEM bytes in memory)";

/// A failure of a client connection, of opening one, or of loading its TLS
/// files. Each one ends the connection it came from.
#[derive(Debug, thiserror::Error)]
pub enum ClientNetError {
    /// A socket error, including the peer vanishing inside a frame.
    #[error("i/o error: {0}")]
    Io(io::Error),
    /// TLS failed: the handshake (unknown certificate, wrong name, a peer
    /// that does not speak TLS, an alert from the peer) or a bad record.
    #[error("TLS: {0}")]
    Tls(String),
    /// The WebSocket upgrade failed or the peer broke the WebSocket
    /// protocol (including closing the socket without a close frame).
    #[error("WebSocket: {0}")]
    WebSocket(String),
    /// A WebSocket text message arrived; frames travel in binary messages.
    #[error("a WebSocket text message arrived (frames travel in binary messages only)")]
    TextMessage,
    /// A WebSocket binary message ended inside a frame (a frame must not be
    /// cut across messages).
    #[error("a WebSocket binary message ended inside a frame")]
    SplitFrame,
    /// The bytes broke the frame format (bad flag, short frame, fragments
    /// out of order). Oversize messages are [`ClientNetError::Oversize`].
    #[error("bad frame: {0}")]
    Frame(WireError),
    /// A message, or a WebSocket message carrying frames, is larger than
    /// allowed.
    #[error("message of {size} bytes or more exceeds the maximum of {max} bytes")]
    Oversize {
        /// Size reached (at least).
        size: usize,
        /// The limit in force.
        max: usize,
    },
    /// [`ClientWriter::write`] was handed bytes that are not whole frames
    /// back to back (a bug of the caller; nothing was sent).
    #[error("bytes to write are not whole frames (offset {0})")]
    NotFrames(usize),
    /// A certificate or key file (or PEM in memory) could not be used.
    #[error("{}: {why}", path.display())]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The target to connect to is unusable (bad URL, TLS missing for
    /// `wss://` or given for `ws://`, a name that does not resolve).
    #[error("bad target {target}: {why}")]
    Target {
        /// The target as given.
        target: String,
        /// What is wrong with it.
        why: String,
    },
}

impl From<io::Error> for ClientNetError {
    /// A TLS error surfaces from tokio-rustls as an `io::Error` wrapping a
    /// `rustls::Error`: it becomes [`ClientNetError::Tls`].
    fn from(e: io::Error) -> Self {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls) => ClientNetError::Tls(tls.to_string()),
            None => ClientNetError::Io(e),
        }
    }
}

impl From<WireError> for ClientNetError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::TooLarge { size, max } => ClientNetError::Oversize { size, max },
            e => ClientNetError::Frame(e),
        }
    }
}

impl From<WsError> for ClientNetError {
    fn from(e: WsError) -> Self {
        match e {
            WsError::Io(e) => e.into(),
            WsError::Tls(e) => ClientNetError::Tls(e.to_string()),
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                ClientNetError::Oversize { size, max: max_size }
            }
            e => ClientNetError::WebSocket(e.to_string()),
        }
    }
}

/// A TLS handshake failure: names what was being done.
fn handshake_error(e: io::Error, what: &str) -> ClientNetError {
    match ClientNetError::from(e) {
        ClientNetError::Tls(t) => ClientNetError::Tls(format!("{what}: {t}")),
        ClientNetError::Io(e) => ClientNetError::Io(io::Error::new(e.kind(), format!("{what}: {e}"))),
        other => other,
    }
}

// ---------------------------------------------------------------------------
// The byte stream under everything: TCP, or TLS over TCP.

/// A TCP socket, plain or inside TLS (either side).
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The WebSocket settings of a connection whose WebSocket messages may be
/// at most `max` bytes. Compression is not offered (tungstenite has none).
fn ws_config(max: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// The largest WebSocket message accepted when whole client messages may be
/// `max_message` bytes: at least one frame of the largest size.
fn ws_limit(max_message: usize) -> usize {
    max_message.max(2 + u16::MAX as usize).saturating_add(WS_SLACK)
}

// ---------------------------------------------------------------------------
// Accepting side

/// How a Gate's clients speak on one listener (TLS or not is a separate
/// setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Frames straight on the (possibly TLS) byte stream.
    Tcp,
    /// Frames in WebSocket binary messages (`ws://`, or `wss://` with TLS).
    Ws,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        })
    }
}

/// A listening socket for game clients of one transport, optionally TLS.
pub struct ClientListener {
    listener: TcpListener,
    transport: Transport,
    tls: Option<TlsAcceptor>,
}

impl fmt::Debug for ClientListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientListener")
            .field("addr", &self.listener.local_addr().ok())
            .field("transport", &self.transport)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl ClientListener {
    /// Listens on `addr` for clients of `transport`, inside TLS when `tls`
    /// is given (see [`server_tls`]).
    ///
    /// # Errors
    ///
    /// The socket's (address in use, permission).
    pub async fn bind(
        addr: SocketAddr,
        transport: Transport,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<ClientListener> {
        Ok(ClientListener {
            listener: TcpListener::bind(addr).await?,
            transport,
            tls: tls.map(TlsAcceptor::from),
        })
    }

    /// The address it listens on (the port chosen when bound to port 0).
    ///
    /// # Errors
    ///
    /// The socket's.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Its transport.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Whether its clients speak TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Takes the next TCP connection (with Nagle off) and returns at once:
    /// no byte has been read. [`Incoming::open`] does the rest.
    ///
    /// # Errors
    ///
    /// The socket's (e.g. out of file descriptors): the listener stays
    /// usable.
    pub async fn accept(&self) -> io::Result<(Incoming, SocketAddr)> {
        let (stream, peer) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((
            Incoming {
                stream,
                peer,
                transport: self.transport,
                tls: self.tls.clone(),
            },
            peer,
        ))
    }
}

/// An accepted TCP connection whose TLS handshake and/or WebSocket upgrade
/// has not happened yet.
pub struct Incoming {
    stream: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    tls: Option<TlsAcceptor>,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("peer", &self.peer)
            .field("transport", &self.transport)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Incoming {
    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Does the TLS handshake and/or the WebSocket upgrade (nothing for
    /// plain TCP) and returns the connection, whose reader refuses messages
    /// over `max_message_before_verify` bytes until
    /// [`ClientReader::set_max_message`] raises it.
    ///
    /// It waits for the client as long as the client takes: bound it with a
    /// timeout. Dropping the future closes the socket.
    ///
    /// A WebSocket message may be at most the larger of
    /// `max_message_before_verify` and one frame (64 KiB + 2), plus 64 KiB,
    /// for the life of the connection.
    ///
    /// # Errors
    ///
    /// [`ClientNetError::Tls`] when the handshake fails (a client that does
    /// not speak TLS, or that does not trust the certificate),
    /// [`ClientNetError::WebSocket`] when the upgrade does,
    /// [`ClientNetError::Io`] when the client goes away.
    pub async fn open(self, max_message_before_verify: usize) -> Result<ClientConn, ClientNetError> {
        let Incoming {
            stream,
            peer,
            transport,
            tls,
        } = self;
        let io = match tls {
            Some(acceptor) => {
                let s = acceptor
                    .accept(stream)
                    .await
                    .map_err(|e| handshake_error(e, "server handshake"))?;
                Io::Tls(Box::new(TlsStream::Server(s)))
            }
            None => Io::Plain(stream),
        };
        let max = max_message_before_verify;
        match transport {
            Transport::Tcp => Ok(ClientConn::bytes(io, peer, max)),
            Transport::Ws => {
                let ws = tokio_tungstenite::accept_async_with_config(io, Some(ws_config(ws_limit(max))))
                    .await
                    .map_err(|e| match ClientNetError::from(e) {
                        ClientNetError::WebSocket(t) => ClientNetError::WebSocket(format!("upgrade: {t}")),
                        other => other,
                    })?;
                Ok(ClientConn::ws(ws, peer, max))
            }
        }
    }

    /// Does the TLS handshake (nothing without TLS) and returns the byte
    /// stream as it is, whatever the listener's transport: for the Gate's
    /// HTTP listener, which speaks neither frames nor WebSocket. Bound it
    /// with a timeout, as [`Incoming::open`].
    ///
    /// # Errors
    ///
    /// [`ClientNetError::Tls`] when the handshake fails.
    pub async fn open_raw(self) -> Result<RawConn, ClientNetError> {
        let io = match self.tls {
            Some(acceptor) => {
                let s = acceptor
                    .accept(self.stream)
                    .await
                    .map_err(|e| handshake_error(e, "server handshake"))?;
                Io::Tls(Box::new(TlsStream::Server(s)))
            }
            None => Io::Plain(self.stream),
        };
        Ok(RawConn(io))
    }
}

/// An accepted connection's bytes, inside TLS or not ([`Incoming::open_raw`]).
pub struct RawConn(Io);

impl fmt::Debug for RawConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawConn")
            .field("tls", &matches!(self.0, Io::Tls(_)))
            .finish()
    }
}

impl AsyncRead for RawConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RawConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------------------
// A connection, either side

enum ReadSide {
    Plain(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<Io>),
    Ws(SplitStream<WebSocketStream<Io>>),
}

enum WriteSide {
    Plain(OwnedWriteHalf),
    Tls(tokio::io::WriteHalf<Io>),
    Ws(SplitSink<WebSocketStream<Io>, WsMessage>),
}

/// An open client connection (either side): split it with
/// [`ClientConn::into_split`] to read and write from two tasks, or use it
/// whole.
pub struct ClientConn {
    reader: ClientReader,
    writer: ClientWriter,
}

impl fmt::Debug for ClientConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConn")
            .field("peer", &self.reader.peer)
            .field("ws", &matches!(self.reader.side, ReadSide::Ws(_)))
            .finish_non_exhaustive()
    }
}

/// The reading half of a client connection: whole messages.
pub struct ClientReader {
    side: ReadSide,
    buf: BytesMut,
    decoder: FrameDecoder,
    peer: SocketAddr,
}

impl fmt::Debug for ClientReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientReader")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// The writing half of a client connection: whole frames.
pub struct ClientWriter {
    side: WriteSide,
    peer: SocketAddr,
}

impl fmt::Debug for ClientWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientWriter")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl ClientConn {
    fn bytes(io: Io, peer: SocketAddr, max_message: usize) -> ClientConn {
        let (rd, wr) = match io {
            Io::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadSide::Plain(r), WriteSide::Plain(w))
            }
            tls @ Io::Tls(_) => {
                let (r, w) = tokio::io::split(tls);
                (ReadSide::Tls(r), WriteSide::Tls(w))
            }
        };
        ClientConn::from_sides(rd, wr, peer, max_message)
    }

    fn ws(ws: WebSocketStream<Io>, peer: SocketAddr, max_message: usize) -> ClientConn {
        let (sink, stream) = ws.split();
        ClientConn::from_sides(ReadSide::Ws(stream), WriteSide::Ws(sink), peer, max_message)
    }

    fn from_sides(rd: ReadSide, wr: WriteSide, peer: SocketAddr, max_message: usize) -> ClientConn {
        ClientConn {
            reader: ClientReader {
                side: rd,
                buf: BytesMut::new(),
                decoder: FrameDecoder::new(max_message),
                peer,
            },
            writer: ClientWriter { side: wr, peer },
        }
    }

    /// The two halves, for a reading task and a writing task.
    pub fn into_split(self) -> (ClientReader, ClientWriter) {
        (self.reader, self.writer)
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> SocketAddr {
        self.reader.peer
    }

    /// See [`ClientReader::next`].
    ///
    /// # Errors
    ///
    /// As [`ClientReader::next`].
    pub async fn next(&mut self) -> Result<Option<Message>, ClientNetError> {
        self.reader.next().await
    }

    /// See [`ClientReader::set_max_message`].
    pub fn set_max_message(&mut self, max_message: usize) {
        self.reader.set_max_message(max_message);
    }

    /// See [`ClientWriter::write`].
    ///
    /// # Errors
    ///
    /// As [`ClientWriter::write`].
    pub async fn write(&mut self, frames: &[u8]) -> Result<(), ClientNetError> {
        self.writer.write(frames).await
    }

    /// See [`ClientWriter::send`].
    ///
    /// # Errors
    ///
    /// As [`ClientWriter::write`].
    pub async fn send(&mut self, session: u32, data: &[u8]) -> Result<(), ClientNetError> {
        self.writer.send(session, data).await
    }

    /// See [`ClientWriter::close`].
    ///
    /// # Errors
    ///
    /// As [`ClientWriter::close`].
    pub async fn close(&mut self) -> Result<(), ClientNetError> {
        self.writer.close().await
    }
}

impl ClientReader {
    /// The next whole message (fragments reassembled), or `Ok(None)` when
    /// the peer closed cleanly: end of stream between frames over TCP (with
    /// a TLS close_notify over TLS), a close frame over WebSocket.
    ///
    /// Cancel-safe: dropping the future loses nothing already read.
    ///
    /// # Errors
    ///
    /// [`ClientNetError::Oversize`] for a message over the limit,
    /// [`ClientNetError::Frame`] for a broken frame,
    /// [`ClientNetError::TextMessage`] and [`ClientNetError::SplitFrame`]
    /// over WebSocket, [`ClientNetError::Io`] (end of stream inside a frame
    /// is `UnexpectedEof`), [`ClientNetError::Tls`],
    /// [`ClientNetError::WebSocket`]. The connection is then unusable.
    pub async fn next(&mut self) -> Result<Option<Message>, ClientNetError> {
        loop {
            if let Some(m) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(m));
            }
            match &mut self.side {
                ReadSide::Plain(r) if self.buf.is_empty() => {
                    // Between messages a connection holds no read buffer (a
                    // Gate holds many idle clients): read into the stack
                    // and keep only what came.
                    self.buf = BytesMut::new();
                    let buf = &mut self.buf;
                    let n = std::future::poll_fn(|cx| read_into(r, cx, buf)).await?;
                    if n == 0 {
                        return self.end_of_stream();
                    }
                }
                ReadSide::Plain(r) => {
                    // inside a message: read the rest in place
                    self.buf.reserve(READ_RESERVE);
                    if r.read_buf(&mut self.buf).await? == 0 {
                        return self.end_of_stream();
                    }
                }
                ReadSide::Tls(r) => {
                    self.buf.reserve(READ_RESERVE);
                    if r.read_buf(&mut self.buf).await? == 0 {
                        return self.end_of_stream();
                    }
                }
                ReadSide::Ws(s) => {
                    if !self.buf.is_empty() {
                        return Err(ClientNetError::SplitFrame);
                    }
                    match s.next().await {
                        None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return Ok(None),
                        Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                            return Err(ClientNetError::WebSocket(
                                "the connection closed without a WebSocket close frame".into(),
                            ))
                        }
                        Some(Err(e)) => return Err(e.into()),
                        Some(Ok(WsMessage::Binary(b))) => self.buf = BytesMut::from(b),
                        Some(Ok(WsMessage::Text(_))) => return Err(ClientNetError::TextMessage),
                        Some(Ok(WsMessage::Close(_))) => return Ok(None),
                        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
                    }
                }
            }
        }
    }

    fn end_of_stream(&self) -> Result<Option<Message>, ClientNetError> {
        if self.buf.is_empty() {
            Ok(None)
        } else {
            Err(ClientNetError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed inside a frame ({} bytes pending)", self.buf.len()),
            )))
        }
    }

    /// Changes the largest message accepted from now on (raised once the
    /// client has verified).
    pub fn set_max_message(&mut self, max_message: usize) {
        self.decoder.set_max_message(max_message);
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

/// Polls one read of at most [`READ_RESERVE`] bytes into `buf` (the count;
/// 0 at end of stream). The bytes land on the stack first (uninitialised:
/// nothing to clear), so `buf` grows by what came, not by a whole
/// reservation, and nothing is held while the socket is not readable.
fn read_into(r: &mut OwnedReadHalf, cx: &mut Context<'_>, buf: &mut BytesMut) -> Poll<io::Result<usize>> {
    let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_RESERVE];
    let mut rb = ReadBuf::uninit(&mut chunk);
    match Pin::new(r).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            buf.extend_from_slice(rb.filled());
            Poll::Ready(Ok(rb.filled().len()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Checks that `frames` is whole frames back to back; returns their count.
fn count_frames(frames: &[u8]) -> Result<usize, ClientNetError> {
    let mut at = 0;
    let mut n = 0;
    while at < frames.len() {
        if !wire::has_frame(&frames[at..]) {
            return Err(ClientNetError::NotFrames(at));
        }
        at += 2 + u16::from_be_bytes([frames[at], frames[at + 1]]) as usize;
        n += 1;
    }
    Ok(n)
}

impl ClientWriter {
    /// Writes `frames`, one or more whole frames back to back (as built by
    /// [`wire::put_message`]), and flushes them. Over TCP they go as they
    /// are; over WebSocket each frame is its own binary message.
    ///
    /// Waits while the peer does not read (backpressure). Not cancel-safe:
    /// dropping the future may leave part of the frames written.
    ///
    /// # Errors
    ///
    /// [`ClientNetError::NotFrames`] (nothing sent) when `frames` does not
    /// end on a frame boundary; otherwise the transport's error, after which
    /// the connection is unusable.
    pub async fn write(&mut self, frames: &[u8]) -> Result<(), ClientNetError> {
        count_frames(frames)?;
        match &mut self.side {
            WriteSide::Plain(w) => {
                w.write_all(frames).await?;
            }
            WriteSide::Tls(w) => {
                w.write_all(frames).await?;
                w.flush().await?;
            }
            WriteSide::Ws(sink) => {
                let mut rest = frames;
                while !rest.is_empty() {
                    let len = 2 + u16::from_be_bytes([rest[0], rest[1]]) as usize;
                    sink.feed(WsMessage::Binary(Bytes::copy_from_slice(&rest[..len])))
                        .await?;
                    rest = &rest[len..];
                }
                sink.flush().await?;
            }
        }
        Ok(())
    }

    /// Writes one whole message: frames it (fragmenting a long one) and
    /// [`ClientWriter::write`]s it.
    ///
    /// # Errors
    ///
    /// As [`ClientWriter::write`].
    pub async fn send(&mut self, session: u32, data: &[u8]) -> Result<(), ClientNetError> {
        let mut out = BytesMut::with_capacity(data.len() + wire::HEADER * (1 + data.len() / wire::FRAGMENT));
        wire::put_message(&mut out, session, data);
        self.write(&out).await
    }

    /// Closes the connection from this side: a WebSocket close frame, or
    /// the end of the stream (after a TLS close_notify). The reader then
    /// sees the peer's answer (the peer's close frame, or its end of stream)
    /// as `Ok(None)`.
    ///
    /// # Errors
    ///
    /// The transport's (the peer may already be gone).
    pub async fn close(&mut self) -> Result<(), ClientNetError> {
        match &mut self.side {
            WriteSide::Plain(w) => w.shutdown().await?,
            WriteSide::Tls(w) => w.shutdown().await?,
            WriteSide::Ws(sink) => sink.close().await?,
        }
        Ok(())
    }

    /// The address of the other end.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

mod dial;
mod tls;

pub use dial::{connect, Target};
pub use tls::{client_tls_trusting, client_tls_trusting_pem, server_tls, ClientTls, TlsFiles};

#[cfg(test)]
mod tests {
    use super::dial::parse_ws_url;
    use super::*;

    #[test]
    fn websocket_urls() {
        assert_eq!(
            parse_ws_url("ws://127.0.0.1:8080/x").unwrap(),
            ("127.0.0.1".into(), 8080, false)
        );
        assert_eq!(
            parse_ws_url("wss://localhost").unwrap(),
            ("localhost".into(), 443, true)
        );
        assert_eq!(parse_ws_url("ws://[::1]:9/").unwrap(), ("::1".into(), 9, false));
        assert!(parse_ws_url("http://127.0.0.1:1/").is_err());
        assert!(parse_ws_url("127.0.0.1:1").is_err());
    }

    #[test]
    fn frames_are_counted_or_refused() {
        let mut out = BytesMut::new();
        wire::put_message(&mut out, 1, b"a");
        wire::put_message(&mut out, 2, &vec![0u8; wire::FRAGMENT + 1]);
        assert_eq!(count_frames(&out).unwrap(), 3);
        assert_eq!(count_frames(&[]).unwrap(), 0);
        assert!(matches!(
            count_frames(&out[..out.len() - 1]),
            Err(ClientNetError::NotFrames(_))
        ));
    }

    #[test]
    fn tls_errors_inside_io_errors_are_tls() {
        let e = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert!(matches!(ClientNetError::from(e), ClientNetError::Tls(_)));
        let e = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(matches!(ClientNetError::from(e), ClientNetError::Io(_)));
    }
}
