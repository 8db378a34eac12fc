//! A game client of a Gate, speaking the protocol of docs/protocol.md: for
//! Rust clients, the tests and `luahost bot`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), luahost::client::ClientError> {
//! use luahost::client::{Client, Login, Target};
//! let login = Login { account: "ann".into(), token: "v1....".into(), client_digi: 0x1234_5678 };
//! let mut c = Client::connect(&Target::Tcp("127.0.0.1:7300".parse().unwrap()), None, &login, None).await?;
//! let (n, results) = c.call_raw(2, 0, &[]).await?; // results: n MessagePack values
//! while let Some(ev) = c.next_event().await { /* pushes and notices */ }
//! # Ok(()) }
//! ```
//!
//! One reader task and one writer task per connection (on the caller's
//! tokio runtime); calls may be made from many tasks at once and are
//! pipelined. Pushes are acknowledged every 64 and with each heartbeat, and
//! their last sequence number is what [`Client::resume`] asks for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use crate::codec::client::{self as proto, ServerMsg};
pub use crate::net::client::{client_tls_trusting, ClientNetError, ClientTls, Target};

pub mod typed;

/// Who logs in.
#[derive(Debug, Clone)]
pub struct Login {
    /// The account.
    pub account: String,
    /// Its token (`gate.token(account, ttl)` on a server).
    pub token: String,
    /// The client's `rpcdef.ClientDigi`.
    pub client_digi: u32,
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its id on the Gate.
    pub id: u64,
    /// The token a resume needs.
    pub resume_token: [u8; 16],
    /// How often the client must show it is alive.
    pub heartbeat: Duration,
    /// True when this connection resumed an earlier one.
    pub resumed: bool,
}

/// What the server sends besides replies.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A push (a client method the server called).
    Push {
        /// Its sequence number in the session.
        seq: u32,
        /// The client method's id.
        method: u32,
        /// Number of argument values.
        nargs: usize,
        /// The argument values (MessagePack).
        args: Bytes,
    },
    /// A notice; `closing`: the Gate closes the connection after it.
    Notice {
        /// Its code (docs/protocol.md).
        code: String,
        /// Text for people.
        text: String,
        /// Whether the connection closes.
        closing: bool,
    },
    /// The connection closed.
    Closed,
}

/// Why a client operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Connecting failed (TCP, TLS, WebSocket).
    #[error("connect: {0}")]
    Connect(String),
    /// The Gate refused the verify.
    #[error("refused: {code}: {text}")]
    Refused {
        /// The code (docs/protocol.md: `bad_token`, `digest`, ...).
        code: String,
        /// Text for people.
        text: String,
    },
    /// A call's error reply.
    #[error("{code}: {text}")]
    Reply {
        /// The code (`bad_request`, `timeout`, `node_down`, ...).
        code: String,
        /// Text for people.
        text: String,
    },
    /// The server broke the protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The connection closed before the answer.
    #[error("connection closed")]
    Closed,
}

impl ClientError {
    /// The code of a refusal or error reply.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } | ClientError::Reply { code, .. } => Some(code),
            _ => None,
        }
    }
}

type Waiting = Arc<Mutex<HashMap<u32, oneshot::Sender<Result<(usize, Bytes), ClientError>>>>>;

/// A connected, verified client.
pub struct Client {
    out: mpsc::UnboundedSender<Bytes>,
    waiting: Waiting,
    events: mpsc::UnboundedReceiver<Event>,
    next_id: AtomicU32,
    session: Session,
    last_seq: Arc<AtomicU32>,
    closed: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Client {
    /// Connects and logs in (or, with `resume = Some((session, last_seq))`,
    /// resumes that session, asking for the pushes after `last_seq`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`], [`ClientError::Refused`] with the Gate's
    /// code, or a protocol error.
    pub async fn connect(
        target: &Target,
        tls: Option<ClientTls>,
        login: &Login,
        resume: Option<(&Session, u32)>,
    ) -> Result<Client, ClientError> {
        let conn = crate::net::client::connect(target, tls)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (mut rd, mut wr) = conn.into_split();
        let mut first = BytesMut::new();
        proto::put_verify(
            &mut first,
            &login.account,
            &login.token,
            login.client_digi,
            resume.map(|(s, last)| (s.id, &s.resume_token, last)),
        );
        wr.write(&first)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let answer = match rd.next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(ClientError::Closed),
            Err(e) => return Err(ClientError::Connect(e.to_string())),
        };
        let session = match proto::parse_server(&answer.data).map_err(|e| ClientError::Protocol(e.to_string()))? {
            ServerMsg::VerifyOk {
                session_id,
                resume_token,
                heartbeat_ms,
                resumed,
                ..
            } => Session {
                id: session_id,
                resume_token,
                heartbeat: Duration::from_millis(heartbeat_ms.max(100) as u64),
                resumed,
            },
            ServerMsg::VerifyFailed { code, text } => {
                return Err(ClientError::Refused {
                    code: code.to_string(),
                    text: text.to_string(),
                })
            }
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected a verify answer, got {other:?}"
                )))
            }
        };
        let last_seq = Arc::new(AtomicU32::new(resume.map(|(_, l)| l).unwrap_or(0)));
        let waiting: Waiting = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Bytes>();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let writer = tokio::spawn(async move {
            while let Some(first) = out_rx.recv().await {
                let mut buf = BytesMut::from(&first[..]);
                while let Ok(more) = out_rx.try_recv() {
                    buf.extend_from_slice(&more);
                }
                if wr.write(&buf).await.is_err() {
                    return;
                }
            }
            let _ = wr.close().await;
        });
        let reader = {
            let waiting = waiting.clone();
            let closed = closed.clone();
            let last_seq = last_seq.clone();
            let out = out_tx.clone();
            tokio::spawn(async move {
                let mut unacked = 0u32;
                loop {
                    let msg = match rd.next().await {
                        Ok(Some(m)) => m,
                        _ => break,
                    };
                    let parsed = match proto::parse_server(&msg.data) {
                        Ok(p) => p,
                        Err(_) => break,
                    };
                    match parsed {
                        ServerMsg::ReplyOk { nvals, vals } => {
                            let w = waiting.lock().unwrap().remove(&msg.session);
                            if let Some(w) = w {
                                let _ = w.send(Ok((nvals, Bytes::copy_from_slice(vals))));
                            }
                        }
                        ServerMsg::ReplyErr { code, text } => {
                            let w = waiting.lock().unwrap().remove(&msg.session);
                            if let Some(w) = w {
                                let _ = w.send(Err(ClientError::Reply {
                                    code: code.into(),
                                    text: text.into(),
                                }));
                            }
                        }
                        ServerMsg::Push {
                            seq,
                            method,
                            nargs,
                            args,
                        } => {
                            last_seq.store(seq, Ordering::Relaxed);
                            unacked += 1;
                            if unacked >= 64 {
                                unacked = 0;
                                let mut b = BytesMut::new();
                                proto::put_ack(&mut b, seq);
                                let _ = out.send(b.freeze());
                            }
                            let _ = ev_tx.send(Event::Push {
                                seq,
                                method,
                                nargs,
                                args: Bytes::copy_from_slice(args),
                            });
                        }
                        ServerMsg::Notice { code, text, closing } => {
                            let _ = ev_tx.send(Event::Notice {
                                code: code.into(),
                                text: text.into(),
                                closing,
                            });
                        }
                        ServerMsg::Pong => {}
                        ServerMsg::VerifyOk { .. } | ServerMsg::VerifyFailed { .. } => break,
                    }
                }
                // (set before the drain: a call that sees it open is drained)
                closed.store(true, Ordering::SeqCst);
                for (_, w) in waiting.lock().unwrap().drain() {
                    let _ = w.send(Err(ClientError::Closed));
                }
                let _ = ev_tx.send(Event::Closed);
            })
        };
        let heartbeat = {
            let out = out_tx.clone();
            let last_seq = last_seq.clone();
            let period = session.heartbeat;
            tokio::spawn(async move {
                let mut acked = 0;
                loop {
                    tokio::time::sleep(period).await;
                    let mut b = BytesMut::new();
                    let seq = last_seq.load(Ordering::Relaxed);
                    if seq != acked {
                        acked = seq;
                        proto::put_ack(&mut b, seq);
                    } else {
                        proto::put_ping(&mut b);
                    }
                    if out.send(b.freeze()).is_err() {
                        return;
                    }
                }
            })
        };
        Ok(Client {
            out: out_tx,
            waiting,
            events: ev_rx,
            next_id: AtomicU32::new(1),
            session,
            last_seq,
            closed,
            tasks: vec![writer, reader, heartbeat],
        })
    }

    /// Resumes `session` on a new connection, with the pushes after
    /// `last_seq` replayed.
    ///
    /// # Errors
    ///
    /// As [`Client::connect`]; `resume_expired` when the Gate no longer
    /// has the session or the pushes.
    pub async fn resume(
        target: &Target,
        tls: Option<ClientTls>,
        login: &Login,
        session: &Session,
        last_seq: u32,
    ) -> Result<Client, ClientError> {
        Client::connect(target, tls, login, Some((session, last_seq))).await
    }

    /// The verified session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The sequence number of the last push received.
    pub fn last_seq(&self) -> u32 {
        self.last_seq.load(Ordering::Relaxed)
    }

    /// Calls client method `method` with `nargs` argument values already
    /// encoded (MessagePack) in `args`; returns the number of results and
    /// their bytes.
    ///
    /// # Errors
    ///
    /// [`ClientError::Reply`] with the server's code, or
    /// [`ClientError::Closed`].
    pub async fn call_raw(&self, method: u32, nargs: usize, args: &[u8]) -> Result<(usize, Bytes), ClientError> {
        let mut id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if id == 0 {
            id = self.next_id.fetch_add(1, Ordering::Relaxed);
        }
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id, tx);
        if self.closed.load(Ordering::SeqCst) {
            self.waiting.lock().unwrap().remove(&id);
            return Err(ClientError::Closed);
        }
        let mut b = BytesMut::new();
        proto::put_call(&mut b, id, method, nargs, args);
        if self.out.send(b.freeze()).is_err() {
            self.waiting.lock().unwrap().remove(&id);
            return Err(ClientError::Closed);
        }
        rx.await.unwrap_or(Err(ClientError::Closed))
    }

    /// Sends client method `method` one-way.
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`].
    pub fn send_raw(&self, method: u32, nargs: usize, args: &[u8]) -> Result<(), ClientError> {
        let mut b = BytesMut::new();
        proto::put_send(&mut b, method, nargs, args);
        self.out.send(b.freeze()).map_err(|_| ClientError::Closed)
    }

    /// Writes bytes as they are (tests of bad input).
    ///
    /// # Errors
    ///
    /// [`ClientError::Closed`].
    pub fn send_bytes(&self, frames: Bytes) -> Result<(), ClientError> {
        self.out.send(frames).map_err(|_| ClientError::Closed)
    }

    /// The next push or notice; `None` once closed and drained.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}
