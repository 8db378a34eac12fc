//! Node-to-node envelopes: the MessagePack payload of each frame, decoded
//! once at the edge into [`Envelope`].
//!
//! Every payload is a MessagePack array whose first element is the kind:
//!
//! | kind | form | frame session |
//! | --- | --- | --- |
//! | 0 verify (hello) | `[0, name, sid, type, digest, incarnation, nonce]` | 0 |
//! | 1 verify-ok | `[1, name, sid]` | 0 |
//! | 2 verify-failed | `[2, reason]` | 0 |
//! | 3 call | `[3, eid, method id, args...]` | call id |
//! | 4 send | `[4, eid, method id, args...]` | send sequence number |
//! | 5 reply | `[5, 0, results...]` or `[5, 1, error text]` | call id |
//! | 6 ping / 7 pong | `[6]` / `[7]` | 0 |
//! | 8 challenge | `[8, name, sid, type, digest, incarnation, nonce, proof]` | 0 |
//! | 9 proof | `[9, proof]` | 0 |
//! | 10 ack | `[10, last send sequence handed to Lua]` | 0 |
//! | 11 load | `[11, load]` | 0 |
//! | 12 push | `[12, target, client method id, args...]` (backend to Gate) | send sequence number |
//! | 13 client call | `[13, client session, eid, method id, args...]` (Gate to backend) | call id |
//! | 14 client send | `[14, client session, eid, method id, args...]` (Gate to backend) | send sequence number |
//!
//! A push's `target` is a client session id (one client), an array of
//! account names (each client of those accounts on that Gate), or nil (every
//! client of that Gate). Client calls and sends carry the arguments exactly
//! as the client wrote them; the Gate copies them without decoding (the
//! backend checks them by type like any request). Pushes and client sends
//! are sequenced and acknowledged like sends.
//!
//! The handshake (hello, challenge, proof, verify-ok) is described in
//! [`crate::codec::auth`]: no secret travels, both sides prove they know it. Sends
//! carry a sequence number per sender and receiver; the receiver acknowledges
//! the last one it handed to Lua, so the sender knows exactly which sends a
//! lost connection took with it.
//!
//! Arguments and results are typed by the schema (see `schema`): the
//! envelope only frames them.

use bytes::BytesMut;

use crate::codec::mpack::{self, ReadError, Reader};
use crate::codec::wire;

/// Kind tag of a verify request.
pub const KIND_VERIFY: u8 = 0;
/// Kind tag of a verify-ok answer.
pub const KIND_VERIFY_OK: u8 = 1;
/// Kind tag of a verify-failed answer.
pub const KIND_VERIFY_FAILED: u8 = 2;
/// Kind tag of a call.
pub const KIND_CALL: u8 = 3;
/// Kind tag of a one-way send.
pub const KIND_SEND: u8 = 4;
/// Kind tag of a reply.
pub const KIND_REPLY: u8 = 5;
/// Kind tag of a ping.
pub const KIND_PING: u8 = 6;
/// Kind tag of a pong.
pub const KIND_PONG: u8 = 7;
/// Kind tag of the accepting side's challenge.
pub const KIND_CHALLENGE: u8 = 8;
/// Kind tag of the connecting side's proof.
pub const KIND_PROOF: u8 = 9;
/// Kind tag of a send acknowledgement.
pub const KIND_ACK: u8 = 10;
/// Kind tag of a load report.
pub const KIND_LOAD: u8 = 11;
/// Kind tag of a push to clients (backend to Gate).
pub const KIND_PUSH: u8 = 12;
/// Kind tag of a client's call relayed by a Gate.
pub const KIND_CLIENT_CALL: u8 = 13;
/// Kind tag of a client's send relayed by a Gate.
pub const KIND_CLIENT_SEND: u8 = 14;
/// Kind tag of a Router's announcement of the nodes verified with it
/// (`topology = "router"`, see [`Members`]).
pub const KIND_MEMBERS: u8 = 15;
/// Kind tag of a log line a node forwards to the cluster's log node
/// (RemoteLog): `[16, level, text]`, level 1 debug .. 4 error.
pub const KIND_LOG: u8 = 16;

/// What a Router's announcement ([`KIND_MEMBERS`]) says about the nodes it
/// lists (seed 002's manager: joins and leaves reach every node).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Members {
    /// The full list of the nodes verified with the Router (sent once to a
    /// node when its connection verifies): every node not listed is not
    /// reachable through this Router.
    Snapshot = 0,
    /// These nodes verified with the Router.
    Online = 1,
    /// These nodes' connections to the Router ended.
    Offline = 2,
}

/// Whom a push is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushTarget<'a> {
    /// One client session.
    Session(u64),
    /// Every client of these accounts on the Gate.
    Accounts(Vec<&'a [u8]>),
    /// Every client of the Gate.
    All,
}

/// A decoded payload. Arguments stay undecoded in `args` until the schema
/// says what they are.
#[derive(Debug, Clone)]
pub enum Envelope<'a> {
    /// The first message on a connection: who is speaking, and its nonce.
    Verify(Hello<'a>),
    /// The accepting side's answer to a hello: who it is, its nonce, and its
    /// proof of the cluster secret.
    Challenge {
        /// The accepting node.
        hello: Hello<'a>,
        /// HMAC proof (see [`crate::codec::auth`]).
        proof: &'a [u8],
    },
    /// The connecting side's proof of the cluster secret.
    Proof {
        /// HMAC proof (see [`crate::codec::auth`]).
        proof: &'a [u8],
    },
    /// The receiver has handed every send up to `seq` to Lua.
    Ack {
        /// Sequence number of the last send handled.
        seq: u32,
    },
    /// The sender's load figure (`router.setLoad`).
    Load {
        /// The load.
        load: i64,
    },
    /// The handshake was accepted.
    VerifyOk {
        /// Name of the accepting node.
        name: &'a [u8],
        /// Its server id.
        sid: u32,
    },
    /// The handshake was refused; the connection closes.
    VerifyFailed {
        /// Why.
        reason: &'a [u8],
    },
    /// A call expecting a reply.
    Call {
        /// Target entity id (0 for static interfaces).
        eid: i64,
        /// Method id.
        mid: u32,
        /// Number of argument values that follow.
        nargs: usize,
        /// The argument values.
        args: Reader<'a>,
    },
    /// A one-way send.
    Send {
        /// Target entity id.
        eid: i64,
        /// Method id.
        mid: u32,
        /// Number of argument values.
        nargs: usize,
        /// The argument values.
        args: Reader<'a>,
    },
    /// The answer to a call.
    Reply {
        /// False when the remote handler failed.
        ok: bool,
        /// Number of values that follow (results, or one error text).
        nvals: usize,
        /// The values.
        vals: Reader<'a>,
    },
    /// Liveness probe.
    Ping,
    /// Answer to a ping.
    Pong,
    /// A message for clients of this Gate (sequenced like a send).
    Push {
        /// Whom it is for.
        target: PushTarget<'a>,
        /// The client method's id (its `cid`).
        cid: u32,
        /// Number of argument values.
        nargs: usize,
        /// The argument values.
        args: Reader<'a>,
    },
    /// A client's call (`call`) or send relayed by a Gate; a call's frame
    /// session is the Gate's call id, a send's its sequence number.
    Client {
        /// True for a call.
        call: bool,
        /// The client's session on the Gate.
        session: u64,
        /// The entity the client is bound to.
        eid: i64,
        /// Method id (node-wide).
        mid: u32,
        /// Number of argument values.
        nargs: usize,
        /// The argument values, as the client wrote them.
        args: Reader<'a>,
    },
    /// A log line of the sending node (RemoteLog).
    Log {
        /// 1 debug, 2 info, 3 warn, 4 error.
        level: u8,
        /// The line, without time, level or node name.
        text: &'a [u8],
    },
    /// A Router's announcement: `(sid, incarnation)` of each node listed.
    Members {
        /// Snapshot, online or offline.
        op: Members,
        /// The nodes.
        nodes: Vec<(u32, u64)>,
    },
}

/// Who is speaking in a handshake message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Node name.
    pub name: &'a [u8],
    /// Server id.
    pub sid: u32,
    /// Server type name.
    pub stype: &'a [u8],
    /// `rpcdef.Digi` of the speaker.
    pub digest: u32,
    /// The speaker's incarnation (a number per process start, later starts higher: `auth::incarnation`).
    pub incarnation: u64,
    /// Fresh random bytes.
    pub nonce: &'a [u8],
}

impl Hello<'_> {
    /// The identity for [`crate::codec::auth`], or `None` when the nonce has the
    /// wrong length.
    pub fn identity(&self) -> Option<crate::codec::auth::Identity> {
        Some(crate::codec::auth::Identity {
            name: String::from_utf8_lossy(self.name).into_owned(),
            sid: self.sid,
            stype: String::from_utf8_lossy(self.stype).into_owned(),
            digest: self.digest,
            incarnation: self.incarnation,
            nonce: self.nonce.try_into().ok()?,
        })
    }
}

fn read_hello<'a>(r: &mut Reader<'a>) -> Result<Hello<'a>, ReadError> {
    Ok(Hello {
        name: r.read_bytes()?,
        sid: r.read_u32()?,
        stype: r.read_bytes()?,
        digest: r.read_u32()?,
        incarnation: r.read_u64()?,
        nonce: r.read_bytes()?,
    })
}

fn put_hello(out: &mut BytesMut, id: &crate::codec::auth::Identity) {
    mpack::put_str(out, id.name.as_bytes());
    mpack::put_uint(out, id.sid as u64);
    mpack::put_str(out, id.stype.as_bytes());
    mpack::put_uint(out, id.digest as u64);
    mpack::put_uint(out, id.incarnation);
    mpack::put_bin(out, &id.nonce);
}

/// Why a payload is not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Not valid MessagePack of the expected shape.
    #[error("malformed envelope: {0}")]
    Malformed(#[from] ReadError),
    /// An unknown kind tag.
    #[error("unknown message kind {0}")]
    UnknownKind(u64),
    /// The array is too short for its kind.
    #[error("envelope of kind {kind} has {len} elements, needs at least {need}")]
    Short {
        /// Kind tag.
        kind: u8,
        /// Elements present.
        len: usize,
        /// Elements needed.
        need: usize,
    },
}

/// Decodes a payload.
///
/// # Errors
///
/// [`ProtoError`] when the payload is not an envelope.
pub fn parse(data: &[u8]) -> Result<Envelope<'_>, ProtoError> {
    let mut r = Reader::new(data);
    let len = r.read_array_len()?;
    if len == 0 {
        return Err(ProtoError::Short { kind: 0, len, need: 1 });
    }
    let kind = match r.read_num()? {
        mpack::Num::Int(k) if (0..=255).contains(&k) => k as u8,
        mpack::Num::Int(k) => return Err(ProtoError::UnknownKind(k as u64)),
        _ => return Err(ProtoError::UnknownKind(u64::MAX)),
    };
    let need = |n: usize| -> Result<(), ProtoError> {
        if len < n {
            Err(ProtoError::Short { kind, len, need: n })
        } else {
            Ok(())
        }
    };
    let env = match kind {
        KIND_VERIFY => {
            need(7)?;
            Envelope::Verify(read_hello(&mut r)?)
        }
        KIND_CHALLENGE => {
            need(8)?;
            let hello = read_hello(&mut r)?;
            Envelope::Challenge {
                hello,
                proof: r.read_bytes()?,
            }
        }
        KIND_PROOF => {
            need(2)?;
            Envelope::Proof { proof: r.read_bytes()? }
        }
        KIND_ACK => {
            need(2)?;
            Envelope::Ack { seq: r.read_u32()? }
        }
        KIND_LOAD => {
            need(2)?;
            Envelope::Load { load: r.read_i64()? }
        }
        KIND_VERIFY_OK => {
            need(3)?;
            let name = r.read_bytes()?;
            let sid = r.read_u32()?;
            Envelope::VerifyOk { name, sid }
        }
        KIND_VERIFY_FAILED => {
            need(2)?;
            Envelope::VerifyFailed {
                reason: r.read_bytes()?,
            }
        }
        KIND_CALL | KIND_SEND => {
            need(3)?;
            let eid = r.read_i64()?;
            let mid = r.read_u32()?;
            let nargs = len - 3;
            if kind == KIND_CALL {
                Envelope::Call {
                    eid,
                    mid,
                    nargs,
                    args: r,
                }
            } else {
                Envelope::Send {
                    eid,
                    mid,
                    nargs,
                    args: r,
                }
            }
        }
        KIND_REPLY => {
            need(2)?;
            let status = r.read_u32()?;
            Envelope::Reply {
                ok: status == 0,
                nvals: len - 2,
                vals: r,
            }
        }
        KIND_PING => Envelope::Ping,
        KIND_PONG => Envelope::Pong,
        KIND_PUSH => {
            need(3)?;
            let target = if r.peek_nil() {
                r.read_nil()?;
                PushTarget::All
            } else if r.peek_kind()? == "array" {
                let n = r.read_array_len()?;
                // each account takes at least one byte: a count beyond the
                // bytes left is malformed, not an allocation
                if n > r.remaining() {
                    return Err(ProtoError::Malformed(ReadError::Truncated));
                }
                let mut accounts = Vec::with_capacity(n);
                for _ in 0..n {
                    accounts.push(r.read_bytes()?);
                }
                PushTarget::Accounts(accounts)
            } else {
                PushTarget::Session(r.read_u64()?)
            };
            let cid = r.read_u32()?;
            Envelope::Push {
                target,
                cid,
                nargs: len - 3,
                args: r,
            }
        }
        KIND_CLIENT_CALL | KIND_CLIENT_SEND => {
            need(4)?;
            let session = r.read_u64()?;
            let eid = r.read_i64()?;
            let mid = r.read_u32()?;
            Envelope::Client {
                call: kind == KIND_CLIENT_CALL,
                session,
                eid,
                mid,
                nargs: len - 4,
                args: r,
            }
        }
        KIND_LOG => {
            need(3)?;
            let level = r.read_u32()?.min(255) as u8;
            Envelope::Log {
                level,
                text: r.read_bytes()?,
            }
        }
        KIND_MEMBERS => {
            need(2)?;
            let op = match r.read_u32()? {
                0 => Members::Snapshot,
                1 => Members::Online,
                2 => Members::Offline,
                other => return Err(ProtoError::UnknownKind(((KIND_MEMBERS as u64) << 32) | other as u64)),
            };
            if (len - 2) % 2 != 0 {
                return Err(ProtoError::Short {
                    kind,
                    len,
                    need: len + 1,
                });
            }
            // each pair takes at least two bytes: a count beyond the bytes
            // left is malformed, not an allocation
            let pairs = (len - 2) / 2;
            if pairs > r.remaining() {
                return Err(ProtoError::Malformed(ReadError::Truncated));
            }
            let mut nodes = Vec::with_capacity(pairs);
            for _ in 0..pairs {
                nodes.push((r.read_u32()?, r.read_u64()?));
            }
            Envelope::Members { op, nodes }
        }
        k => return Err(ProtoError::UnknownKind(k as u64)),
    };
    Ok(env)
}

/// Appends a hello (the verify request of the connecting side).
pub fn put_verify(out: &mut BytesMut, me: &crate::codec::auth::Identity) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 7);
    mpack::put_uint(out, KIND_VERIFY as u64);
    put_hello(out, me);
    wire::finish_message(out, start, 0);
}

/// Appends the accepting side's challenge.
pub fn put_challenge(out: &mut BytesMut, me: &crate::codec::auth::Identity, proof: &[u8]) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 8);
    mpack::put_uint(out, KIND_CHALLENGE as u64);
    put_hello(out, me);
    mpack::put_bin(out, proof);
    wire::finish_message(out, start, 0);
}

/// Appends the connecting side's proof.
pub fn put_proof(out: &mut BytesMut, proof: &[u8]) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 2);
    mpack::put_uint(out, KIND_PROOF as u64);
    mpack::put_bin(out, proof);
    wire::finish_message(out, start, 0);
}

/// Appends an acknowledgement of every send up to `seq`.
pub fn put_ack(out: &mut BytesMut, seq: u32) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 2);
    mpack::put_uint(out, KIND_ACK as u64);
    mpack::put_uint(out, seq as u64);
    wire::finish_message(out, start, 0);
}

/// Appends a load report.
pub fn put_load(out: &mut BytesMut, load: i64) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 2);
    mpack::put_uint(out, KIND_LOAD as u64);
    mpack::put_int(out, load);
    wire::finish_message(out, start, 0);
}

/// Appends a log line (RemoteLog).
pub fn put_log(out: &mut BytesMut, level: u8, text: &[u8]) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 3);
    mpack::put_uint(out, KIND_LOG as u64);
    mpack::put_uint(out, level as u64);
    mpack::put_str(out, text);
    wire::finish_message(out, start, 0);
}

/// Appends a Router's announcement of `nodes` (`(sid, incarnation)`).
pub fn put_members(out: &mut BytesMut, op: Members, nodes: &[(u32, u64)]) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 2 + 2 * nodes.len());
    mpack::put_uint(out, KIND_MEMBERS as u64);
    mpack::put_uint(out, op as u64);
    for &(sid, inc) in nodes {
        mpack::put_uint(out, sid as u64);
        mpack::put_uint(out, inc);
    }
    wire::finish_message(out, start, 0);
}

/// Appends a verify-ok answer.
pub fn put_verify_ok(out: &mut BytesMut, name: &str, sid: u32) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 3);
    mpack::put_uint(out, KIND_VERIFY_OK as u64);
    mpack::put_str(out, name.as_bytes());
    mpack::put_uint(out, sid as u64);
    wire::finish_message(out, start, 0);
}

/// Appends a verify-failed answer.
pub fn put_verify_failed(out: &mut BytesMut, reason: &str) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 2);
    mpack::put_uint(out, KIND_VERIFY_FAILED as u64);
    mpack::put_str(out, reason.as_bytes());
    wire::finish_message(out, start, 0);
}

/// Appends a ping or pong.
pub fn put_ping(out: &mut BytesMut, pong: bool) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 1);
    mpack::put_uint(out, if pong { KIND_PONG } else { KIND_PING } as u64);
    wire::finish_message(out, start, 0);
}

/// Starts a call or send: frame header and envelope head. The caller appends
/// exactly `nargs` values and then calls [`wire::finish_message`] with the
/// call id or the send's sequence number.
pub fn begin_request(out: &mut BytesMut, call: bool, eid: i64, mid: u32, nargs: usize) -> usize {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 3 + nargs);
    mpack::put_uint(out, if call { KIND_CALL } else { KIND_SEND } as u64);
    mpack::put_int(out, eid);
    mpack::put_uint(out, mid as u64);
    start
}

/// Starts a push to clients: frame header and envelope head. The caller
/// appends exactly `nargs` values and finishes the message with the send's
/// sequence number.
pub fn begin_push(out: &mut BytesMut, target: &PushTarget<'_>, cid: u32, nargs: usize) -> usize {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 3 + nargs);
    mpack::put_uint(out, KIND_PUSH as u64);
    match target {
        PushTarget::Session(s) => mpack::put_uint(out, *s),
        PushTarget::Accounts(list) => {
            mpack::put_array_len(out, list.len());
            for a in list {
                mpack::put_str(out, a);
            }
        }
        PushTarget::All => mpack::put_nil(out),
    }
    mpack::put_uint(out, cid as u64);
    start
}

/// Appends a client's call or send relayed to the backend, with the
/// arguments (`nargs` values in `raw_args`) copied as the client wrote them.
/// `id` is the Gate's call id or the send's sequence number.
#[allow(clippy::too_many_arguments)]
pub fn put_client_request(
    out: &mut BytesMut,
    call: bool,
    id: u32,
    session: u64,
    eid: i64,
    mid: u32,
    nargs: usize,
    raw_args: &[u8],
) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 4 + nargs);
    mpack::put_uint(out, if call { KIND_CLIENT_CALL } else { KIND_CLIENT_SEND } as u64);
    mpack::put_uint(out, session);
    mpack::put_int(out, eid);
    mpack::put_uint(out, mid as u64);
    out.extend_from_slice(raw_args);
    wire::finish_message(out, start, id);
}

/// Starts a successful reply carrying `nres` results.
pub fn begin_reply(out: &mut BytesMut, nres: usize) -> usize {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 2 + nres);
    mpack::put_uint(out, KIND_REPLY as u64);
    mpack::put_uint(out, 0);
    start
}

/// Appends a failed reply with an error text.
pub fn put_error_reply(out: &mut BytesMut, session: u32, text: &str) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 3);
    mpack::put_uint(out, KIND_REPLY as u64);
    mpack::put_uint(out, 1);
    mpack::put_str(out, text.as_bytes());
    wire::finish_message(out, start, session);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::wire::FrameDecoder;

    #[test]
    fn router_announcements_round_trip_and_bad_ones_are_refused() {
        for (op, nodes) in [
            (Members::Snapshot, vec![]),
            (Members::Online, vec![(7, u64::MAX)]),
            (Members::Offline, vec![(1, 2), (3, 4)]),
        ] {
            let mut out = BytesMut::new();
            put_members(&mut out, op, &nodes);
            let m = FrameDecoder::default().decode(&mut out).unwrap().unwrap();
            match parse(&m.data).unwrap() {
                Envelope::Members { op: o, nodes: n } => assert_eq!((o, n), (op, nodes)),
                other => panic!("{other:?}"),
            }
        }
        let mut out = BytesMut::new();
        put_log(&mut out, 3, b"line");
        let m = FrameDecoder::default().decode(&mut out).unwrap().unwrap();
        assert!(matches!(
            parse(&m.data),
            Ok(Envelope::Log {
                level: 3,
                text: b"line"
            })
        ));
        // an odd count, an unknown op, a count beyond the bytes
        assert!(parse(&[0x93, 15, 1, 7]).is_err());
        assert!(parse(&[0x92, 15, 9]).is_err());
        assert!(parse(&[0xdd, 0, 0, 0xff, 0xff, 15, 0]).is_err());
    }

    #[test]
    fn envelopes_round_trip() {
        let mut out = BytesMut::new();
        let me = crate::codec::auth::Identity {
            name: "hall_1".into(),
            sid: 11,
            stype: "Hall".into(),
            digest: 0xdead_beef,
            incarnation: u64::MAX - 3,
            nonce: [7; 32],
        };
        put_verify(&mut out, &me);
        put_challenge(&mut out, &me, &[9; 32]);
        put_proof(&mut out, &[8; 32]);
        put_ack(&mut out, u32::MAX);
        put_load(&mut out, -5);
        let start = begin_request(&mut out, true, 5, 42, 1);
        mpack::put_int(&mut out, -7);
        wire::finish_message(&mut out, start, 99);
        put_error_reply(&mut out, 99, "boom");
        let mut dec = FrameDecoder::default();
        let m = dec.decode(&mut out).unwrap().unwrap();
        match parse(&m.data).unwrap() {
            Envelope::Verify(hello) => assert_eq!(hello.identity().unwrap(), me),
            other => panic!("{other:?}"),
        }
        let m = dec.decode(&mut out).unwrap().unwrap();
        match parse(&m.data).unwrap() {
            Envelope::Challenge { hello, proof } => {
                assert_eq!(hello.identity().unwrap(), me);
                assert_eq!(proof, &[9; 32]);
            }
            other => panic!("{other:?}"),
        }
        let m = dec.decode(&mut out).unwrap().unwrap();
        assert!(matches!(parse(&m.data).unwrap(), Envelope::Proof { proof } if proof == [8; 32]));
        let m = dec.decode(&mut out).unwrap().unwrap();
        assert!(matches!(parse(&m.data).unwrap(), Envelope::Ack { seq: u32::MAX }));
        let m = dec.decode(&mut out).unwrap().unwrap();
        assert!(matches!(parse(&m.data).unwrap(), Envelope::Load { load: -5 }));
        let m = dec.decode(&mut out).unwrap().unwrap();
        assert_eq!(m.session, 99);
        match parse(&m.data).unwrap() {
            Envelope::Call {
                eid,
                mid,
                nargs,
                mut args,
            } => {
                assert_eq!((eid, mid, nargs), (5, 42, 1));
                assert_eq!(args.read_i64().unwrap(), -7);
            }
            other => panic!("{other:?}"),
        }
        let m = dec.decode(&mut out).unwrap().unwrap();
        match parse(&m.data).unwrap() {
            Envelope::Reply { ok, nvals, mut vals } => {
                assert!(!ok);
                assert_eq!(nvals, 1);
                assert_eq!(vals.read_bytes().unwrap(), b"boom");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gate_envelopes_round_trip() {
        let mut out = BytesMut::new();
        for target in [
            PushTarget::Session(1 << 40),
            PushTarget::Accounts(vec![b"ann", b"bob"]),
            PushTarget::All,
        ] {
            let start = begin_push(&mut out, &target, 3, 2);
            mpack::put_int(&mut out, 7);
            mpack::put_bool(&mut out, true);
            wire::finish_message(&mut out, start, 5);
            let mut dec = FrameDecoder::default();
            let m = dec.decode(&mut out).unwrap().unwrap();
            assert_eq!(m.session, 5);
            match parse(&m.data).unwrap() {
                Envelope::Push {
                    target: t,
                    cid,
                    nargs,
                    mut args,
                } => {
                    assert_eq!((t, cid, nargs), (target, 3, 2));
                    assert_eq!(args.read_i64().unwrap(), 7);
                    assert!(args.read_bool().unwrap());
                    args.finish().unwrap();
                }
                other => panic!("{other:?}"),
            }
        }
        let mut raw = BytesMut::new();
        mpack::put_str(&mut raw, b"hi");
        mpack::put_int(&mut raw, -1);
        for call in [true, false] {
            put_client_request(&mut out, call, 77, u64::MAX, -3, 12, 2, &raw);
            let mut dec = FrameDecoder::default();
            let m = dec.decode(&mut out).unwrap().unwrap();
            assert_eq!(m.session, 77);
            match parse(&m.data).unwrap() {
                Envelope::Client {
                    call: c,
                    session,
                    eid,
                    mid,
                    nargs,
                    args,
                } => {
                    assert_eq!((c, session, eid, mid, nargs), (call, u64::MAX, -3, 12, 2));
                    assert_eq!(args.rest(), &raw[..]);
                }
                other => panic!("{other:?}"),
            }
        }
        // an account count beyond the bytes left is refused, not allocated
        assert!(parse(&[0x93, 0x0c, 0xdd, 0x7f, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x91, 0x09]).is_err());
        assert!(parse(&[0x92, 0x03, 0x01]).is_err());
        assert!(parse(&[0xc1]).is_err());
        assert!(parse(&[0x91, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
