//! Node-to-node envelopes: the MessagePack payload of each frame, decoded
//! once at the edge into [`Envelope`].
//!
//! Every payload is a MessagePack array whose first element is the kind:
//!
//! | kind | form | frame session |
//! | --- | --- | --- |
//! | 0 verify | `[0, name, sid, type, digest, token]` | 0 |
//! | 1 verify-ok | `[1, name, sid]` | 0 |
//! | 2 verify-failed | `[2, reason]` | 0 |
//! | 3 call | `[3, eid, method id, args...]` | call id |
//! | 4 send | `[4, eid, method id, args...]` | 0 |
//! | 5 reply | `[5, 0, results...]` or `[5, 1, error text]` | call id |
//! | 6 ping / 7 pong | `[6]` / `[7]` | 0 |
//!
//! Arguments and results are typed by the schema (see `schema`): the
//! envelope only frames them.

use bytes::BytesMut;

use crate::mpack::{self, ReadError, Reader};
use crate::wire;

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

/// A decoded payload. Arguments stay undecoded in `args` until the schema
/// says what they are.
#[derive(Debug, Clone)]
pub enum Envelope<'a> {
    /// The first message on a connection: who is speaking.
    Verify {
        /// Node name.
        name: &'a [u8],
        /// Server id.
        sid: u32,
        /// Server type name.
        stype: &'a [u8],
        /// `rpcdef.Digi` of the sender.
        digest: u32,
        /// Proof of membership (the cluster secret).
        token: &'a [u8],
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
            need(6)?;
            let name = r.read_bytes()?;
            let sid = r.read_u32()?;
            let stype = r.read_bytes()?;
            let digest = r.read_u32()?;
            let token = r.read_bytes()?;
            Envelope::Verify {
                name,
                sid,
                stype,
                digest,
                token,
            }
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
        k => return Err(ProtoError::UnknownKind(k as u64)),
    };
    Ok(env)
}

/// Appends a verify request.
pub fn put_verify(out: &mut BytesMut, name: &str, sid: u32, stype: &str, digest: u32, token: &str) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 6);
    mpack::put_uint(out, KIND_VERIFY as u64);
    mpack::put_str(out, name.as_bytes());
    mpack::put_uint(out, sid as u64);
    mpack::put_str(out, stype.as_bytes());
    mpack::put_uint(out, digest as u64);
    mpack::put_str(out, token.as_bytes());
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
/// exactly `nargs` values and then calls [`wire::finish_message`].
pub fn begin_request(out: &mut BytesMut, call: bool, eid: i64, mid: u32, nargs: usize) -> usize {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 3 + nargs);
    mpack::put_uint(out, if call { KIND_CALL } else { KIND_SEND } as u64);
    mpack::put_int(out, eid);
    mpack::put_uint(out, mid as u64);
    start
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
    use crate::wire::FrameDecoder;

    #[test]
    fn envelopes_round_trip() {
        let mut out = BytesMut::new();
        put_verify(&mut out, "hall_1", 11, "Hall", 0xdead_beef, "tok");
        let start = begin_request(&mut out, true, 5, 42, 1);
        mpack::put_int(&mut out, -7);
        wire::finish_message(&mut out, start, 99);
        put_error_reply(&mut out, 99, "boom");
        let mut dec = FrameDecoder::default();
        let m = dec.decode(&mut out).unwrap().unwrap();
        match parse(&m.data).unwrap() {
            Envelope::Verify {
                name,
                sid,
                stype,
                digest,
                token,
            } => {
                assert_eq!(
                    (name, sid, stype, digest, token),
                    (&b"hall_1"[..], 11, &b"Hall"[..], 0xdead_beef, &b"tok"[..])
                );
            }
            other => panic!("{other:?}"),
        }
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
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x91, 0x09]).is_err());
        assert!(parse(&[0x92, 0x03, 0x01]).is_err());
        assert!(parse(&[0xc1]).is_err());
        assert!(parse(&[0x91, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
