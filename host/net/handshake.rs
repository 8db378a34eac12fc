//! The mutual handshake of `codec::auth` on both sides: the accepting side
//! (hello in, challenge out, proof in), the connecting side (`connect`), and
//! `probe` (the first half only). Both end within `verify_timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::conn::{read_message, Cause};
use crate::codec::auth::{self, Identity, Side};
use crate::codec::proto::{self, Envelope};
use crate::codec::wire::{FrameDecoder, Message};
use crate::net::link::Link;
use crate::net::stream::{self, ReadHalf, WriteHalf};
use crate::net::{NetHost, NetPeer, NetSettings};

/// Largest handshake message accepted from a connection that has not verified.
pub(crate) const MAX_VERIFY_MESSAGE: usize = 64 * 1024;

pub(crate) async fn refuse(wr: &WriteHalf, reason: &str) {
    let mut out = BytesMut::new();
    proto::put_verify_failed(&mut out, reason);
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&out)).await;
}

/// Why the accepting side refused a connection (the text is what the peer
/// is told and what is logged).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// No verify request before the handshake's deadline.
    #[error("no verify request within {:.1} s", .0.as_secs_f64())]
    NoVerifyInTime(std::time::Duration),
    /// The connection broke before it verified.
    #[error("closed before verifying: {0}")]
    ClosedBeforeVerifying(String),
    /// The first message was something else.
    #[error("the first message must be a verify request")]
    NotAVerifyRequest,
    /// The verify request (or the proof) did not parse.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// "verify request" or "proof".
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A node this node's cluster does not have.
    #[error("unknown node {name} (sid {sid}, type {stype}) in {me}'s cluster file")]
    UnknownNode {
        /// Who it claimed to be.
        name: String,
        /// Its sid.
        sid: u32,
        /// Its type.
        stype: String,
        /// This node.
        me: String,
    },
    /// No proof came (the connection broke or the deadline passed).
    #[error("no proof of the cluster secret: {0}")]
    NoProof(String),
    /// A process starting with this node's name asked whether it is alive.
    #[error(
        "a process starting as {0} asked whether this node is alive (it is, so that process should refuse to start)"
    )]
    Probe(String),
    /// Its proof does not match: it does not know the cluster secret.
    #[error("wrong cluster secret (its proof does not match)")]
    WrongSecret,
    /// It refused this node in the middle of the handshake.
    #[error("it refused this node: {0}")]
    RejectedUs(String),
    /// It proved the secret under this node's own name.
    #[error("{me} is already running (pid {pid}, at {addr})")]
    AlreadyRunning {
        /// This node.
        me: String,
        /// This process.
        pid: u32,
        /// This node's address.
        addr: SocketAddr,
    },
    /// Its schema differs.
    #[error("RPC digest mismatch: {name} has {theirs:08x}, {me} has {mine:08x} (their entitydef differs)")]
    DigestMismatch {
        /// The peer.
        name: String,
        /// Its digest.
        theirs: u32,
        /// This node.
        me: String,
        /// This node's digest.
        mine: u32,
    },
}

impl Refused {
    /// The rate-limit cause of this kind of refusal (also the plural the
    /// summary line uses).
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            Refused::NoVerifyInTime(_) => "connections closed without a verify request in time",
            Refused::ClosedBeforeVerifying(_) | Refused::NoProof(_) => "connections closed before verifying",
            Refused::NotAVerifyRequest => "connections that did not start with a verify request",
            Refused::Malformed { .. } => "malformed verify requests",
            Refused::UnknownNode { .. } => "connections from unknown nodes",
            Refused::Probe(_) => "probes by processes starting with this node's name",
            Refused::WrongSecret => "connections refused for a wrong cluster secret",
            Refused::RejectedUs(_) => "connections that refused this node",
            Refused::AlreadyRunning { .. } => "connections from processes starting with this node's name",
            Refused::DigestMismatch { .. } => "connections refused for an RPC digest mismatch",
        }
    }
}

/// Why an accepted connection did not verify.
pub(crate) struct Refusal {
    /// Who it claimed to be.
    pub(crate) who: String,
    /// Why.
    pub(crate) reason: Refused,
    /// Whether to tell the peer (not when it already went away).
    pub(crate) tell: bool,
}

impl Refusal {
    /// A refusal the peer is told about.
    pub(crate) fn new(who: impl Into<String>, reason: Refused) -> Self {
        Refusal {
            who: who.into(),
            reason,
            tell: true,
        }
    }

    /// A refusal logged only (the peer is gone or hung up on purpose).
    pub(crate) fn silent(who: impl Into<String>, reason: Refused) -> Self {
        Refusal {
            tell: false,
            ..Refusal::new(who, reason)
        }
    }
}

/// Reads the next handshake message before `deadline`.
pub(crate) async fn read_until(
    deadline: Instant,
    rd: &mut ReadHalf,
    dec: &mut FrameDecoder,
    buf: &mut BytesMut,
    link: &Link,
) -> Result<Message, Cause> {
    match tokio::time::timeout_at(deadline, read_message(rd, dec, buf, link)).await {
        Err(_) => Err(Cause::NoAnswer),
        Ok(r) => r,
    }
}

/// The accepting side of the handshake: hello in, challenge out, proof in.
/// Returns the verified peer's identity.
pub(crate) async fn accept_handshake<H: NetHost>(
    core: &H,
    rd: &mut ReadHalf,
    wr: &WriteHalf,
    dec: &mut FrameDecoder,
    buf: &mut BytesMut,
    link: &Link,
) -> Result<Identity, Refusal> {
    let verify_timeout = core.settings().verify_timeout;
    let deadline = Instant::now() + verify_timeout;
    let first = read_until(deadline, rd, dec, buf, link).await.map_err(|e| match e {
        Cause::NoAnswer => Refusal::new("unknown", Refused::NoVerifyInTime(verify_timeout)),
        other => Refusal::silent("unknown", Refused::ClosedBeforeVerifying(other.to_string())),
    })?;
    let malformed = |detail: String| Refused::Malformed {
        what: "verify request",
        detail,
    };
    let theirs = match proto::parse(&first.data) {
        Ok(Envelope::Verify(hello)) => hello
            .identity()
            .ok_or_else(|| Refusal::new("unknown", malformed("bad nonce".into())))?,
        Ok(_) => return Err(Refusal::new("unknown", Refused::NotAVerifyRequest)),
        Err(e) => return Err(Refusal::new("unknown", malformed(e.to_string()))),
    };
    let who = theirs.name.clone();
    if !core.knows(&theirs) {
        return Err(Refusal::new(
            who,
            Refused::UnknownNode {
                name: theirs.name.clone(),
                sid: theirs.sid,
                stype: theirs.stype.clone(),
                me: core.me().name.clone(),
            },
        ));
    }
    let secret = core.secret();
    let mine = core.identity();
    let my_proof = auth::prove(secret.as_bytes(), Side::Accepting, &theirs, &mine);
    let mut out = BytesMut::new();
    proto::put_challenge(&mut out, &mine, &my_proof);
    if let Err(e) = wr.write_all(&out).await {
        return Err(Refusal::silent(who, Refused::ClosedBeforeVerifying(e.to_string())));
    }
    let probe = theirs.name == core.me().name && theirs.incarnation != core.incarnation();
    let second = read_until(deadline, rd, dec, buf, link).await.map_err(|e| {
        if probe {
            // `probe` from a process starting with this node's name: it has
            // its answer (this node is alive) and hangs up.
            Refusal::silent(who.clone(), Refused::Probe(core.me().name.clone()))
        } else {
            Refusal {
                tell: matches!(e, Cause::NoAnswer),
                ..Refusal::new(who.clone(), Refused::NoProof(e.to_string()))
            }
        }
    })?;
    match proto::parse(&second.data) {
        Ok(Envelope::Proof { proof }) => {
            if !auth::check(secret.as_bytes(), Side::Connecting, &theirs, &mine, proof) {
                return Err(Refusal::new(who, Refused::WrongSecret));
            }
        }
        Ok(Envelope::VerifyFailed { reason }) => {
            return Err(Refusal::silent(
                who,
                Refused::RejectedUs(String::from_utf8_lossy(reason).into_owned()),
            ))
        }
        Ok(_) => {
            return Err(Refusal::new(
                who,
                Refused::Malformed {
                    what: "proof",
                    detail: "expected a proof of the cluster secret".into(),
                },
            ))
        }
        Err(e) => {
            return Err(Refusal::new(
                who,
                Refused::Malformed {
                    what: "proof",
                    detail: e.to_string(),
                },
            ))
        }
    }
    if theirs.name == core.me().name {
        return Err(Refusal::new(
            who,
            Refused::AlreadyRunning {
                me: core.me().name.clone(),
                pid: std::process::id(),
                addr: core.me().addr,
            },
        ));
    }
    let digest = core.digest();
    if theirs.digest != digest {
        return Err(Refusal::new(
            who,
            Refused::DigestMismatch {
                name: theirs.name.clone(),
                theirs: theirs.digest,
                me: core.me().name.clone(),
                mine: digest,
            },
        ));
    }
    Ok(theirs)
}

/// Dials `addr` (in memory when the node is in this process).
pub(crate) async fn dial<H: NetHost>(core: &H, addr: SocketAddr) -> Result<(ReadHalf, WriteHalf), Cause> {
    if let Some(halves) = core.net().local.as_ref().and_then(|net| net.dial(addr)) {
        return Ok(halves);
    }
    let stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr))
        .await
        .map_err(|_| Cause::Unreachable("connect timed out".into()))?
        .map_err(|e| Cause::Unreachable(e.to_string()))?;
    Ok(stream::tcp(stream))
}

/// The reading side of a connection with its decoder and unread bytes.
pub(crate) struct Incoming {
    pub(crate) rd: ReadHalf,
    pub(crate) dec: FrameDecoder,
    pub(crate) buf: BytesMut,
}

impl Incoming {
    pub(crate) fn new(rd: ReadHalf) -> Self {
        Incoming {
            rd,
            dec: FrameDecoder::new(MAX_VERIFY_MESSAGE),
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }
}

/// A connection that verified, from the connecting side.
pub(crate) struct Verified {
    pub(crate) rd: ReadHalf,
    pub(crate) wr: WriteHalf,
    pub(crate) dec: FrameDecoder,
    pub(crate) buf: BytesMut,
    /// The peer's incarnation.
    pub(crate) incarnation: u64,
}

/// Sends our hello and reads the challenge; checks that the accepting side
/// is node `name`/`sid` and proves the cluster secret.
pub(crate) async fn hello<H: NetHost>(
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
    wr.write_all(&out)
        .await
        .map_err(|e| Cause::Unreachable(e.to_string()))?;
    let answer = read_until(deadline, &mut inc.rd, &mut inc.dec, &mut inc.buf, link)
        .await
        .map_err(|e| Cause::NoVerifyAnswer(Box::new(e)))?;
    let (hello, proof) = match proto::parse(&answer.data) {
        Ok(Envelope::Challenge { hello, proof }) => (hello, proof),
        Ok(Envelope::VerifyFailed { reason }) => {
            return Err(Cause::RefusedBy(String::from_utf8_lossy(reason).into_owned()))
        }
        Ok(_) => return Err(Cause::BadAnswer("unexpected verify answer".into())),
        Err(e) => return Err(Cause::BadAnswer(format!("malformed verify answer: {e}"))),
    };
    let theirs = hello
        .identity()
        .ok_or_else(|| Cause::BadAnswer("malformed verify answer: bad nonce".into()))?;
    let secret = core.secret();
    if !auth::check(secret.as_bytes(), Side::Accepting, &mine, &theirs, proof) {
        let mut out = BytesMut::new();
        proto::put_verify_failed(&mut out, "wrong cluster secret (your proof does not match)");
        let _ = wr.write_all(&out).await;
        return Err(Cause::Untrusted(theirs.name));
    }
    if (theirs.name.as_str(), theirs.sid) != expect {
        return Err(Cause::WrongNode {
            got: theirs.name,
            got_sid: theirs.sid,
            want: expect.0.to_string(),
            want_sid: expect.1,
        });
    }
    Ok((mine, theirs))
}

pub(crate) async fn connect<H: NetHost>(core: &H, peer: &H::Peer) -> Result<Verified, Cause> {
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
    wr.write_all(&out)
        .await
        .map_err(|e| Cause::Unreachable(e.to_string()))?;
    let answer = read_until(deadline, &mut rd, &mut dec, &mut buf, peer.link())
        .await
        .map_err(|e| Cause::NoVerifyAnswer(Box::new(e)))?;
    // (relayed messages through a Router carry the relay prefix too)
    dec.set_max_message(max_message + crate::codec::relay::PREFIX);
    match proto::parse(&answer.data) {
        Ok(Envelope::VerifyOk { .. }) => Ok(Verified {
            rd,
            wr,
            dec,
            buf,
            incarnation: theirs.incarnation,
        }),
        Ok(Envelope::VerifyFailed { reason }) => Err(Cause::RefusedBy(String::from_utf8_lossy(reason).into_owned())),
        Ok(_) => Err(Cause::BadAnswer("unexpected verify answer".into())),
        Err(e) => Err(Cause::BadAnswer(e.to_string())),
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
        Err(e @ Cause::NoVerifyAnswer(_)) => Probe::Unreachable(e.to_string()),
        Err(e) => Probe::NotThatNode(e.to_string()),
    }
}
