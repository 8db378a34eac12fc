//! Client-to-Gate envelopes: the MessagePack payload of each frame between a
//! game client and a Gate node (`docs/protocol.md`, "Messages"), decoded once
//! at the edge, like [`crate::codec::proto`] between nodes.
//!
//! Every payload is a MessagePack array whose first element is the kind:
//!
//! | kind | direction | form | frame session |
//! | --- | --- | --- | --- |
//! | 0 verify | client -> Gate | `[0, account, token, client_digi]` or `[0, account, token, client_digi, session_id, resume_token, last_seq]` | 0 |
//! | 1 verify-ok | Gate -> client | `[1, session_id, resume_token, heartbeat_ms, resumed, last_seq]` | 0 |
//! | 2 verify-failed | Gate -> client | `[2, code, text]` | 0 |
//! | 3 call | client -> Gate | `[3, method, args...]` | the client's call id (not 0) |
//! | 4 send | client -> Gate | `[4, method, args...]` | 0 |
//! | 5 reply | Gate -> client | `[5, 0, results...]` or `[5, 1, code, text]` | the call's id |
//! | 6 ping | client -> Gate | `[6]` | 0 |
//! | 7 pong | Gate -> client | `[7]` | 0 |
//! | 8 push | Gate -> client | `[8, seq, method, args...]` | 0 |
//! | 9 ack | client -> Gate | `[9, last_seq]` | 0 |
//! | 10 notice | Gate -> client | `[10, code, text, closing]` | 0 |
//!
//! The Gate parses what clients send with [`parse_client`] and answers with
//! the `put_*` encoders of its direction; a client library does the
//! opposite ([`parse_server`], [`put_verify`], [`put_call`], ...). Parsing is
//! strict: exactly the elements of the form, each of its type (strings as
//! MessagePack `str`, the resume token as `bin`), nothing after the last
//! one. Arguments and results are not decoded here: they stay as the raw
//! MessagePack bytes of their values, checked only to be exactly the
//! announced number of well-formed values ([`Reader::skip_value`]), so the
//! Gate forwards them to the backend as they came and the schema types them
//! there.
//!
//! The frame session is not part of the payload: the driver reads it from
//! the frame (a call's id, which the Gate must refuse when it is 0, or a
//! reply's call id).

use bytes::BytesMut;

use crate::codec::mpack::{self, ReadError, Reader};
use crate::codec::wire;

/// Kind tag of a verify request (client -> Gate).
pub const KIND_VERIFY: u8 = 0;
/// Kind tag of a verify-ok answer (Gate -> client).
pub const KIND_VERIFY_OK: u8 = 1;
/// Kind tag of a verify-failed answer (Gate -> client); the Gate closes
/// after it.
pub const KIND_VERIFY_FAILED: u8 = 2;
/// Kind tag of a call (client -> Gate); the frame session is the call id.
pub const KIND_CALL: u8 = 3;
/// Kind tag of a one-way send (client -> Gate).
pub const KIND_SEND: u8 = 4;
/// Kind tag of a reply (Gate -> client); the frame session is the call id.
pub const KIND_REPLY: u8 = 5;
/// Kind tag of a ping (client -> Gate).
pub const KIND_PING: u8 = 6;
/// Kind tag of a pong (Gate -> client).
pub const KIND_PONG: u8 = 7;
/// Kind tag of a push (Gate -> client).
pub const KIND_PUSH: u8 = 8;
/// Kind tag of an acknowledgement of pushes (client -> Gate).
pub const KIND_ACK: u8 = 9;
/// Kind tag of a notice (Gate -> client).
pub const KIND_NOTICE: u8 = 10;

/// The longest account name, in bytes.
pub const MAX_ACCOUNT: usize = 128;
/// The longest login token, in bytes.
pub const MAX_TOKEN: usize = 1024;
/// The length of a resume token, in bytes.
pub const RESUME_TOKEN_LEN: usize = 16;

/// The codes of a verify-failed answer (`docs/protocol.md`, "Codes").
pub mod verify_code {
    /// The token's signature, account or format is wrong.
    pub const BAD_TOKEN: &str = "bad_token";
    /// The token is past its expiry.
    pub const EXPIRED: &str = "expired";
    /// The client was built for another `ClientDigi`: update the client.
    pub const DIGEST: &str = "digest";
    /// Too many connections verifying, in total or from this address.
    pub const BUSY: &str = "busy";
    /// No verify came in time.
    pub const TIMEOUT: &str = "timeout";
    /// The session to resume is gone or too far behind: log in again.
    pub const RESUME_EXPIRED: &str = "resume_expired";
    /// The server's login hook said no; the text says why.
    pub const REFUSED: &str = "refused";
    /// No server could take the client.
    pub const NO_BACKEND: &str = "no_backend";
    /// The first message was not a verify.
    pub const MALFORMED: &str = "malformed";
}

/// The codes of an error reply (`docs/protocol.md`, "Codes").
pub mod reply_code {
    /// No such method for clients, or arguments of the wrong type (the text
    /// names the argument).
    pub const BAD_REQUEST: &str = "bad_request";
    /// The client sends too fast.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// The server did not answer in time.
    pub const TIMEOUT: &str = "timeout";
    /// The server holding the entity was lost.
    pub const NODE_DOWN: &str = "node_down";
    /// The handler failed; the text is what the handler chose to tell, or
    /// "internal error".
    pub const ERROR: &str = "error";
    /// The server is overloaded.
    pub const BUSY: &str = "busy";
}

/// The codes of a notice (`docs/protocol.md`, "Codes").
pub mod notice_code {
    /// A newer login of this account took over; closing.
    pub const REPLACED: &str = "replaced";
    /// The server closed the session; the text says why.
    pub const KICKED: &str = "kicked";
    /// The connection was silent for three heartbeats; closing.
    pub const IDLE: &str = "idle";
    /// Too many messages; closing.
    pub const FLOOD: &str = "flood";
    /// The client did not read; closing.
    pub const SLOW: &str = "slow";
    /// The server holding the entity was lost; the session is being bound
    /// again or closed, as the server decides.
    pub const BACKEND_LOST: &str = "backend_lost";
    /// The session is bound to a new entity: its state was moved.
    pub const REBOUND: &str = "rebound";
    /// A malformed message; closing.
    pub const BAD_FRAME: &str = "bad_frame";
    /// The Gate stops.
    pub const SHUTDOWN: &str = "shutdown";
}

/// A message from a client, as the Gate receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMsg<'a> {
    /// Log in, or resume a session.
    Verify(VerifyReq<'a>),
    /// A call expecting a reply; its call id is the frame session.
    Call {
        /// The method's client id.
        method: u32,
        /// Number of argument values in `args`.
        nargs: usize,
        /// The raw MessagePack of exactly `nargs` well-formed values.
        args: &'a [u8],
    },
    /// A one-way send.
    Send {
        /// The method's client id.
        method: u32,
        /// Number of argument values in `args`.
        nargs: usize,
        /// The raw MessagePack of exactly `nargs` well-formed values.
        args: &'a [u8],
    },
    /// A heartbeat; the Gate answers with a pong.
    Ping,
    /// The client received every push up to `seq`.
    Ack {
        /// The last push sequence number received.
        seq: u32,
    },
}

/// A verify request: a login, or a resume when `resume` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReq<'a> {
    /// The account (1 to [`MAX_ACCOUNT`] bytes of UTF-8).
    pub account: &'a str,
    /// The login token (at most [`MAX_TOKEN`] bytes of UTF-8; see
    /// [`crate::codec::token`]).
    pub token: &'a str,
    /// The client's `rpcdef.ClientDigi`.
    pub client_digi: u32,
    /// The session to resume, if any.
    pub resume: Option<ResumeReq<'a>>,
}

/// The resume part of a verify request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeReq<'a> {
    /// The session to resume (from its verify-ok).
    pub session_id: u64,
    /// The session's resume token (exactly [`RESUME_TOKEN_LEN`] bytes).
    pub resume_token: &'a [u8],
    /// The last push sequence number the client received (0: none).
    pub last_seq: u32,
}

/// A message from the Gate, as a client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMsg<'a> {
    /// The verify succeeded.
    VerifyOk {
        /// The session's id (for a later resume).
        session_id: u64,
        /// The session's resume token (for a later resume).
        resume_token: [u8; RESUME_TOKEN_LEN],
        /// How often the client sends something (a ping if nothing else).
        heartbeat_ms: u32,
        /// True when an existing session was resumed.
        resumed: bool,
        /// The last push sequence number the Gate sent on this session.
        last_seq: u32,
    },
    /// The verify failed; the Gate closes.
    VerifyFailed {
        /// Why (see [`verify_code`]).
        code: &'a str,
        /// For people.
        text: &'a str,
    },
    /// A call succeeded; its call id is the frame session.
    ReplyOk {
        /// Number of result values in `vals`.
        nvals: usize,
        /// The raw MessagePack of exactly `nvals` well-formed values.
        vals: &'a [u8],
    },
    /// A call failed; its call id is the frame session.
    ReplyErr {
        /// Why (see [`reply_code`]).
        code: &'a str,
        /// For people.
        text: &'a str,
    },
    /// The answer to a ping.
    Pong,
    /// A call from the server to the client.
    Push {
        /// Its sequence number in the session (1, 2, 3, ...).
        seq: u32,
        /// The method's client id.
        method: u32,
        /// Number of argument values in `args`.
        nargs: usize,
        /// The raw MessagePack of exactly `nargs` well-formed values.
        args: &'a [u8],
    },
    /// Something happened to the session.
    Notice {
        /// What (see [`notice_code`]).
        code: &'a str,
        /// For people.
        text: &'a str,
        /// True when the Gate closes the connection after this notice.
        closing: bool,
    },
}

/// Why a payload is not a valid client envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientProtoError {
    /// Not MessagePack of the expected shape: truncated, a value of the
    /// wrong type or range, bytes left over after the last element, or
    /// argument values that are not exactly as many as announced.
    #[error("malformed message: {0}")]
    Malformed(#[from] ReadError),
    /// The payload is an empty array: it has no kind.
    #[error("empty message")]
    Empty,
    /// The kind is unknown, or belongs to the other direction.
    #[error("unknown message kind {0}")]
    UnknownKind(u64),
    /// The array has the wrong number of elements for its kind.
    #[error("message of kind {kind} has {len} elements, expected {expected}")]
    Arity {
        /// Kind tag.
        kind: u8,
        /// Elements present (the kind included).
        len: usize,
        /// Elements the kind takes.
        expected: &'static str,
    },
    /// The account is empty or longer than [`MAX_ACCOUNT`] bytes.
    #[error("account of {0} bytes (must be 1 to {MAX_ACCOUNT})")]
    AccountLength(usize),
    /// The token is longer than [`MAX_TOKEN`] bytes.
    #[error("token of {0} bytes (at most {MAX_TOKEN})")]
    TokenTooLong(usize),
    /// A resume token that is not [`RESUME_TOKEN_LEN`] bytes long.
    #[error("resume token of {0} bytes (must be {RESUME_TOKEN_LEN})")]
    ResumeTokenLength(usize),
    /// A string field that must be UTF-8 is not (the field is named).
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A reply's status is neither 0 (results) nor 1 (error).
    #[error("reply status {0} (must be 0 or 1)")]
    ReplyStatus(u64),
}

/// Reads the array header and the kind.
fn head(data: &[u8]) -> Result<(u8, usize, Reader<'_>), ClientProtoError> {
    let mut r = Reader::new(data);
    let len = r.read_array_len()?;
    if len == 0 {
        return Err(ClientProtoError::Empty);
    }
    let kind = match r.read_num()? {
        mpack::Num::Int(k) if (0..=255).contains(&k) => k as u8,
        mpack::Num::Int(k) => return Err(ClientProtoError::UnknownKind(k as u64)),
        _ => return Err(ClientProtoError::UnknownKind(u64::MAX)),
    };
    Ok((kind, len, r))
}

/// Fails unless the array of `kind` has exactly `n` elements.
fn exactly(kind: u8, len: usize, n: usize, expected: &'static str) -> Result<(), ClientProtoError> {
    if len == n {
        Ok(())
    } else {
        Err(ClientProtoError::Arity { kind, len, expected })
    }
}

/// Fails unless the array of `kind` has at least `n` elements.
fn at_least(kind: u8, len: usize, n: usize, expected: &'static str) -> Result<(), ClientProtoError> {
    if len >= n {
        Ok(())
    } else {
        Err(ClientProtoError::Arity { kind, len, expected })
    }
}

/// Reads a `str` that must be UTF-8.
fn read_text<'a>(r: &mut Reader<'a>, field: &'static str) -> Result<&'a str, ClientProtoError> {
    std::str::from_utf8(r.read_str()?).map_err(|_| ClientProtoError::NotUtf8(field))
}

/// The rest of `r`, checked to be exactly `n` well-formed values.
fn values<'a>(r: &Reader<'a>, n: usize) -> Result<&'a [u8], ReadError> {
    let raw = r.rest();
    let mut c = r.clone();
    for _ in 0..n {
        c.skip_value()?;
    }
    c.finish()?;
    Ok(raw)
}

/// True when `raw` is exactly `n` well-formed values (the encoders'
/// debug check of what they are given).
fn holds(raw: &[u8], n: usize) -> bool {
    values(&Reader::new(raw), n).is_ok()
}

/// Decodes what a client sent (the data of one whole message).
///
/// # Errors
///
/// [`ClientProtoError`] when the payload is not a client-to-Gate message of
/// the exact form of its kind.
pub fn parse_client(data: &[u8]) -> Result<ClientMsg<'_>, ClientProtoError> {
    let (kind, len, mut r) = head(data)?;
    let msg = match kind {
        KIND_VERIFY => {
            if len != 4 && len != 7 {
                return Err(ClientProtoError::Arity {
                    kind,
                    len,
                    expected: "4 or 7",
                });
            }
            let account = r.read_str()?;
            if account.is_empty() || account.len() > MAX_ACCOUNT {
                return Err(ClientProtoError::AccountLength(account.len()));
            }
            let account = std::str::from_utf8(account).map_err(|_| ClientProtoError::NotUtf8("account"))?;
            let token = r.read_str()?;
            if token.len() > MAX_TOKEN {
                return Err(ClientProtoError::TokenTooLong(token.len()));
            }
            let token = std::str::from_utf8(token).map_err(|_| ClientProtoError::NotUtf8("token"))?;
            let client_digi = r.read_u32()?;
            let resume = if len == 7 {
                let session_id = r.read_u64()?;
                let resume_token = r.read_bin()?;
                if resume_token.len() != RESUME_TOKEN_LEN {
                    return Err(ClientProtoError::ResumeTokenLength(resume_token.len()));
                }
                let last_seq = r.read_u32()?;
                Some(ResumeReq {
                    session_id,
                    resume_token,
                    last_seq,
                })
            } else {
                None
            };
            r.finish()?;
            ClientMsg::Verify(VerifyReq {
                account,
                token,
                client_digi,
                resume,
            })
        }
        KIND_CALL | KIND_SEND => {
            at_least(kind, len, 2, "at least 2")?;
            let method = r.read_u32()?;
            let nargs = len - 2;
            let args = values(&r, nargs)?;
            if kind == KIND_CALL {
                ClientMsg::Call { method, nargs, args }
            } else {
                ClientMsg::Send { method, nargs, args }
            }
        }
        KIND_PING => {
            exactly(kind, len, 1, "1")?;
            r.finish()?;
            ClientMsg::Ping
        }
        KIND_ACK => {
            exactly(kind, len, 2, "2")?;
            let seq = r.read_u32()?;
            r.finish()?;
            ClientMsg::Ack { seq }
        }
        k => return Err(ClientProtoError::UnknownKind(k as u64)),
    };
    Ok(msg)
}

/// Decodes what the Gate sent (the data of one whole message); for clients.
///
/// # Errors
///
/// [`ClientProtoError`] when the payload is not a Gate-to-client message of
/// the exact form of its kind.
pub fn parse_server(data: &[u8]) -> Result<ServerMsg<'_>, ClientProtoError> {
    let (kind, len, mut r) = head(data)?;
    let msg = match kind {
        KIND_VERIFY_OK => {
            exactly(kind, len, 6, "6")?;
            let session_id = r.read_u64()?;
            let token = r.read_bin()?;
            let resume_token: [u8; RESUME_TOKEN_LEN] = token
                .try_into()
                .map_err(|_| ClientProtoError::ResumeTokenLength(token.len()))?;
            let heartbeat_ms = r.read_u32()?;
            let resumed = r.read_bool()?;
            let last_seq = r.read_u32()?;
            r.finish()?;
            ServerMsg::VerifyOk {
                session_id,
                resume_token,
                heartbeat_ms,
                resumed,
                last_seq,
            }
        }
        KIND_VERIFY_FAILED => {
            exactly(kind, len, 3, "3")?;
            let code = read_text(&mut r, "code")?;
            let text = read_text(&mut r, "text")?;
            r.finish()?;
            ServerMsg::VerifyFailed { code, text }
        }
        KIND_REPLY => {
            at_least(kind, len, 2, "at least 2")?;
            match r.read_u64()? {
                0 => {
                    let nvals = len - 2;
                    ServerMsg::ReplyOk {
                        nvals,
                        vals: values(&r, nvals)?,
                    }
                }
                1 => {
                    exactly(kind, len, 4, "4 for an error reply")?;
                    let code = read_text(&mut r, "code")?;
                    let text = read_text(&mut r, "text")?;
                    r.finish()?;
                    ServerMsg::ReplyErr { code, text }
                }
                s => return Err(ClientProtoError::ReplyStatus(s)),
            }
        }
        KIND_PONG => {
            exactly(kind, len, 1, "1")?;
            r.finish()?;
            ServerMsg::Pong
        }
        KIND_PUSH => {
            at_least(kind, len, 3, "at least 3")?;
            let seq = r.read_u32()?;
            let method = r.read_u32()?;
            let nargs = len - 3;
            ServerMsg::Push {
                seq,
                method,
                nargs,
                args: values(&r, nargs)?,
            }
        }
        KIND_NOTICE => {
            exactly(kind, len, 4, "4")?;
            let code = read_text(&mut r, "code")?;
            let text = read_text(&mut r, "text")?;
            let closing = r.read_bool()?;
            r.finish()?;
            ServerMsg::Notice { code, text, closing }
        }
        k => return Err(ClientProtoError::UnknownKind(k as u64)),
    };
    Ok(msg)
}

// ---- Gate -> client ----

/// Appends a verify-ok answer.
pub fn put_verify_ok(
    out: &mut BytesMut,
    session_id: u64,
    resume_token: &[u8; RESUME_TOKEN_LEN],
    heartbeat_ms: u32,
    resumed: bool,
    last_seq: u32,
) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 6);
    mpack::put_uint(out, KIND_VERIFY_OK as u64);
    mpack::put_uint(out, session_id);
    mpack::put_bin(out, resume_token);
    mpack::put_uint(out, heartbeat_ms as u64);
    mpack::put_bool(out, resumed);
    mpack::put_uint(out, last_seq as u64);
    wire::finish_message(out, start, 0);
}

/// Appends a verify-failed answer (`code`: one of [`verify_code`]).
pub fn put_verify_failed(out: &mut BytesMut, code: &str, text: &str) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 3);
    mpack::put_uint(out, KIND_VERIFY_FAILED as u64);
    mpack::put_str(out, code.as_bytes());
    mpack::put_str(out, text.as_bytes());
    wire::finish_message(out, start, 0);
}

/// Starts a successful reply carrying `nvals` results: the caller appends
/// exactly `nvals` values and then calls [`wire::finish_message`] with the
/// call id.
pub fn begin_reply_ok(out: &mut BytesMut, nvals: usize) -> usize {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 2 + nvals);
    mpack::put_uint(out, KIND_REPLY as u64);
    mpack::put_uint(out, 0);
    start
}

/// Appends a successful reply to call `call_id`; `raw_vals` is the
/// MessagePack of exactly `nvals` values, copied as it is.
pub fn put_reply_ok(out: &mut BytesMut, call_id: u32, nvals: usize, raw_vals: &[u8]) {
    debug_assert!(holds(raw_vals, nvals), "reply values are not {nvals} values");
    let start = begin_reply_ok(out, nvals);
    out.extend_from_slice(raw_vals);
    wire::finish_message(out, start, call_id);
}

/// Appends a failed reply to call `call_id` (`code`: one of
/// [`reply_code`]).
pub fn put_reply_err(out: &mut BytesMut, call_id: u32, code: &str, text: &str) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 4);
    mpack::put_uint(out, KIND_REPLY as u64);
    mpack::put_uint(out, 1);
    mpack::put_str(out, code.as_bytes());
    mpack::put_str(out, text.as_bytes());
    wire::finish_message(out, start, call_id);
}

/// Appends a pong.
pub fn put_pong(out: &mut BytesMut) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 1);
    mpack::put_uint(out, KIND_PONG as u64);
    wire::finish_message(out, start, 0);
}

/// Starts a push: the caller appends exactly `nargs` values and then calls
/// [`wire::finish_message`] with session 0.
pub fn begin_push(out: &mut BytesMut, seq: u32, method: u32, nargs: usize) -> usize {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 3 + nargs);
    mpack::put_uint(out, KIND_PUSH as u64);
    mpack::put_uint(out, seq as u64);
    mpack::put_uint(out, method as u64);
    start
}

/// Appends a push; `raw_args` is the MessagePack of exactly `nargs` values,
/// copied as it is.
pub fn put_push(out: &mut BytesMut, seq: u32, method: u32, nargs: usize, raw_args: &[u8]) {
    debug_assert!(holds(raw_args, nargs), "push arguments are not {nargs} values");
    let start = begin_push(out, seq, method, nargs);
    out.extend_from_slice(raw_args);
    wire::finish_message(out, start, 0);
}

/// Appends a notice (`code`: one of [`notice_code`]); `closing` tells the
/// client that the Gate closes the connection after it.
pub fn put_notice(out: &mut BytesMut, code: &str, text: &str, closing: bool) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 4);
    mpack::put_uint(out, KIND_NOTICE as u64);
    mpack::put_str(out, code.as_bytes());
    mpack::put_str(out, text.as_bytes());
    mpack::put_bool(out, closing);
    wire::finish_message(out, start, 0);
}

// ---- client -> Gate ----

/// Appends a verify request: a login, or with `resume = Some((session_id,
/// resume_token, last_seq))` a resume.
pub fn put_verify(
    out: &mut BytesMut,
    account: &str,
    token: &str,
    client_digi: u32,
    resume: Option<(u64, &[u8; RESUME_TOKEN_LEN], u32)>,
) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, if resume.is_some() { 7 } else { 4 });
    mpack::put_uint(out, KIND_VERIFY as u64);
    mpack::put_str(out, account.as_bytes());
    mpack::put_str(out, token.as_bytes());
    mpack::put_uint(out, client_digi as u64);
    if let Some((session_id, resume_token, last_seq)) = resume {
        mpack::put_uint(out, session_id);
        mpack::put_bin(out, resume_token);
        mpack::put_uint(out, last_seq as u64);
    }
    wire::finish_message(out, start, 0);
}

/// Starts a call or a send: the caller appends exactly `nargs` values and
/// then calls [`wire::finish_message`] with the call id (not 0), or 0 for a
/// send.
pub fn begin_request(out: &mut BytesMut, call: bool, method: u32, nargs: usize) -> usize {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 2 + nargs);
    mpack::put_uint(out, if call { KIND_CALL } else { KIND_SEND } as u64);
    mpack::put_uint(out, method as u64);
    start
}

/// Appends a call with id `call_id` (not 0); `raw_args` is the MessagePack
/// of exactly `nargs` values, copied as it is.
pub fn put_call(out: &mut BytesMut, call_id: u32, method: u32, nargs: usize, raw_args: &[u8]) {
    debug_assert!(call_id != 0, "call id 0 is reserved");
    debug_assert!(holds(raw_args, nargs), "call arguments are not {nargs} values");
    let start = begin_request(out, true, method, nargs);
    out.extend_from_slice(raw_args);
    wire::finish_message(out, start, call_id);
}

/// Appends a one-way send; `raw_args` is the MessagePack of exactly `nargs`
/// values, copied as it is.
pub fn put_send(out: &mut BytesMut, method: u32, nargs: usize, raw_args: &[u8]) {
    debug_assert!(holds(raw_args, nargs), "send arguments are not {nargs} values");
    let start = begin_request(out, false, method, nargs);
    out.extend_from_slice(raw_args);
    wire::finish_message(out, start, 0);
}

/// Appends a ping.
pub fn put_ping(out: &mut BytesMut) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 1);
    mpack::put_uint(out, KIND_PING as u64);
    wire::finish_message(out, start, 0);
}

/// Appends an acknowledgement of every push up to `seq`.
pub fn put_ack(out: &mut BytesMut, seq: u32) {
    let start = wire::begin_message(out);
    mpack::put_array_len(out, 2);
    mpack::put_uint(out, KIND_ACK as u64);
    mpack::put_uint(out, seq as u64);
    wire::finish_message(out, start, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::wire::{FrameDecoder, Message};

    /// Every whole message in `out`.
    fn frames(out: &mut BytesMut) -> Vec<Message> {
        let mut dec = FrameDecoder::default();
        let v: Vec<Message> = std::iter::from_fn(|| dec.decode(out).unwrap()).collect();
        assert!(out.is_empty(), "a partial frame was left");
        v
    }

    /// The payload of the one message `f` appends.
    fn one(f: impl FnOnce(&mut BytesMut)) -> Message {
        let mut out = BytesMut::new();
        f(&mut out);
        let mut v = frames(&mut out);
        assert_eq!(v.len(), 1);
        v.pop().unwrap()
    }

    /// A payload built by hand: an array of the values `f` appends.
    fn payload(n: usize, f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
        let mut b = BytesMut::new();
        mpack::put_array_len(&mut b, n);
        f(&mut b);
        b.to_vec()
    }

    /// Some argument values of every kind: an int, a string, a nested array,
    /// a map, nil, a float, bin, a bool.
    fn sample_args() -> (usize, Vec<u8>) {
        let mut b = BytesMut::new();
        mpack::put_int(&mut b, -70_000);
        mpack::put_str(&mut b, "héllo".as_bytes());
        mpack::put_array_len(&mut b, 2);
        mpack::put_array_len(&mut b, 1);
        mpack::put_uint(&mut b, u64::MAX);
        mpack::put_str(&mut b, b"");
        mpack::put_map_len(&mut b, 1);
        mpack::put_str(&mut b, b"k");
        mpack::put_f64(&mut b, 0.25);
        mpack::put_nil(&mut b);
        mpack::put_f32(&mut b, 1.5);
        mpack::put_bin(&mut b, &[0, 1, 2]);
        mpack::put_bool(&mut b, false);
        (8, b.to_vec())
    }

    const RT: [u8; 16] = [0xa5; 16];

    #[test]
    fn client_messages_round_trip() {
        let (n, args) = sample_args();
        let m = one(|o| put_verify(o, "alice", "v1.x.y", 0xdead_beef, None));
        assert_eq!(m.session, 0);
        assert_eq!(
            parse_client(&m.data).unwrap(),
            ClientMsg::Verify(VerifyReq {
                account: "alice",
                token: "v1.x.y",
                client_digi: 0xdead_beef,
                resume: None
            })
        );
        let m = one(|o| put_verify(o, "bøb", "", u32::MAX, Some((u64::MAX, &RT, u32::MAX))));
        assert_eq!(
            parse_client(&m.data).unwrap(),
            ClientMsg::Verify(VerifyReq {
                account: "bøb",
                token: "",
                client_digi: u32::MAX,
                resume: Some(ResumeReq {
                    session_id: u64::MAX,
                    resume_token: &RT,
                    last_seq: u32::MAX
                })
            })
        );
        let m = one(|o| put_call(o, 77, 12, n, &args));
        assert_eq!(m.session, 77);
        assert_eq!(
            parse_client(&m.data).unwrap(),
            ClientMsg::Call {
                method: 12,
                nargs: n,
                args: &args
            }
        );
        let m = one(|o| put_call(o, u32::MAX, u32::MAX, 0, &[]));
        assert_eq!(m.session, u32::MAX);
        assert_eq!(
            parse_client(&m.data).unwrap(),
            ClientMsg::Call {
                method: u32::MAX,
                nargs: 0,
                args: &[]
            }
        );
        let m = one(|o| put_send(o, 3, n, &args));
        assert_eq!(m.session, 0);
        assert_eq!(
            parse_client(&m.data).unwrap(),
            ClientMsg::Send {
                method: 3,
                nargs: n,
                args: &args
            }
        );
        let m = one(put_ping);
        assert_eq!(parse_client(&m.data).unwrap(), ClientMsg::Ping);
        let m = one(|o| put_ack(o, 123_456));
        assert_eq!(parse_client(&m.data).unwrap(), ClientMsg::Ack { seq: 123_456 });
        let m = one(|o| put_ack(o, 0));
        assert_eq!(parse_client(&m.data).unwrap(), ClientMsg::Ack { seq: 0 });
    }

    #[test]
    fn server_messages_round_trip() {
        let (n, args) = sample_args();
        let m = one(|o| put_verify_ok(o, 1 << 60, &RT, 10_000, true, 42));
        assert_eq!(m.session, 0);
        assert_eq!(
            parse_server(&m.data).unwrap(),
            ServerMsg::VerifyOk {
                session_id: 1 << 60,
                resume_token: RT,
                heartbeat_ms: 10_000,
                resumed: true,
                last_seq: 42
            }
        );
        let m = one(|o| put_verify_ok(o, 1, &[0; 16], 0, false, 0));
        assert!(matches!(
            parse_server(&m.data).unwrap(),
            ServerMsg::VerifyOk {
                session_id: 1,
                resumed: false,
                last_seq: 0,
                ..
            }
        ));
        let m = one(|o| put_verify_failed(o, verify_code::BAD_TOKEN, "the token's signature is wrong"));
        assert_eq!(
            parse_server(&m.data).unwrap(),
            ServerMsg::VerifyFailed {
                code: "bad_token",
                text: "the token's signature is wrong"
            }
        );
        let m = one(|o| put_reply_ok(o, 9, n, &args));
        assert_eq!(m.session, 9);
        assert_eq!(
            parse_server(&m.data).unwrap(),
            ServerMsg::ReplyOk { nvals: n, vals: &args }
        );
        let m = one(|o| put_reply_ok(o, 10, 0, &[]));
        assert_eq!(
            parse_server(&m.data).unwrap(),
            ServerMsg::ReplyOk { nvals: 0, vals: &[] }
        );
        let m = one(|o| put_reply_err(o, 11, reply_code::BAD_REQUEST, "argument 2 (rid): expected integer"));
        assert_eq!(m.session, 11);
        assert_eq!(
            parse_server(&m.data).unwrap(),
            ServerMsg::ReplyErr {
                code: "bad_request",
                text: "argument 2 (rid): expected integer"
            }
        );
        let m = one(put_pong);
        assert_eq!(parse_server(&m.data).unwrap(), ServerMsg::Pong);
        let m = one(|o| put_push(o, 5, 6, n, &args));
        assert_eq!(m.session, 0);
        assert_eq!(
            parse_server(&m.data).unwrap(),
            ServerMsg::Push {
                seq: 5,
                method: 6,
                nargs: n,
                args: &args
            }
        );
        let m = one(|o| put_notice(o, notice_code::REPLACED, "a newer login took over", true));
        assert_eq!(
            parse_server(&m.data).unwrap(),
            ServerMsg::Notice {
                code: "replaced",
                text: "a newer login took over",
                closing: true
            }
        );
        let m = one(|o| put_notice(o, notice_code::REBOUND, "", false));
        assert!(matches!(
            parse_server(&m.data).unwrap(),
            ServerMsg::Notice { closing: false, .. }
        ));
    }

    #[test]
    fn long_messages_are_fragmented_and_come_back_whole() {
        let big = vec![b'z'; 100_000];
        let mut args = BytesMut::new();
        mpack::put_str(&mut args, &big);
        mpack::put_int(&mut args, 1);
        let mut out = BytesMut::new();
        put_call(&mut out, 1, 2, 2, &args);
        put_push(&mut out, 3, 4, 2, &args);
        put_ping(&mut out);
        let v = frames(&mut out);
        assert_eq!(v.len(), 3);
        assert_eq!(
            parse_client(&v[0].data).unwrap(),
            ClientMsg::Call {
                method: 2,
                nargs: 2,
                args: &args
            }
        );
        assert!(matches!(parse_server(&v[1].data).unwrap(), ServerMsg::Push { seq: 3, args: a, .. } if a == &args[..]));
        assert_eq!(parse_client(&v[2].data).unwrap(), ClientMsg::Ping);
    }

    #[test]
    fn builders_write_the_same_bytes_as_the_put_functions() {
        let (n, args) = sample_args();
        let mut a = BytesMut::new();
        put_push(&mut a, 7, 8, n, &args);
        let mut b = BytesMut::new();
        let start = begin_push(&mut b, 7, 8, n);
        b.extend_from_slice(&args);
        wire::finish_message(&mut b, start, 0);
        assert_eq!(a, b);
        let mut a = BytesMut::new();
        put_reply_ok(&mut a, 3, n, &args);
        let mut b = BytesMut::new();
        let start = begin_reply_ok(&mut b, n);
        b.extend_from_slice(&args);
        wire::finish_message(&mut b, start, 3);
        assert_eq!(a, b);
    }

    /// Every payload the encoders of both directions write.
    fn valid_payloads() -> Vec<(bool, Vec<u8>)> {
        let (n, args) = sample_args();
        let mut out = BytesMut::new();
        put_verify(&mut out, "alice", "tok", 1, None);
        put_verify(&mut out, "alice", "tok", 1, Some((9, &RT, 3)));
        put_call(&mut out, 1, 2, n, &args);
        put_send(&mut out, 2, n, &args);
        put_send(&mut out, 2, 0, &[]);
        put_ping(&mut out);
        put_ack(&mut out, 300);
        let client = frames(&mut out);
        put_verify_ok(&mut out, 9, &RT, 1000, true, 4);
        put_verify_failed(&mut out, "expired", "token expired");
        put_reply_ok(&mut out, 1, n, &args);
        put_reply_ok(&mut out, 1, 0, &[]);
        put_reply_err(&mut out, 1, "error", "internal error");
        put_pong(&mut out);
        put_push(&mut out, 1, 2, n, &args);
        put_notice(&mut out, "idle", "", true);
        let server = frames(&mut out);
        let mut v: Vec<(bool, Vec<u8>)> = client.into_iter().map(|m| (true, m.data.to_vec())).collect();
        v.extend(server.into_iter().map(|m| (false, m.data.to_vec())));
        v
    }

    fn parse(client: bool, data: &[u8]) -> Result<(), ClientProtoError> {
        if client {
            parse_client(data).map(|_| ())
        } else {
            parse_server(data).map(|_| ())
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        for (client, p) in valid_payloads() {
            parse(client, &p).unwrap();
            for cut in 0..p.len() {
                let e = parse(client, &p[..cut]).unwrap_err();
                assert_eq!(
                    e,
                    ClientProtoError::Malformed(ReadError::Truncated),
                    "{p:02x?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        for (client, p) in valid_payloads() {
            let mut q = p.clone();
            q.push(0xc0);
            assert_eq!(
                parse(client, &q),
                Err(ClientProtoError::Malformed(ReadError::Trailing(1))),
                "{p:02x?}"
            );
        }
    }

    #[test]
    fn each_direction_refuses_the_other_directions_kinds() {
        for (client, p) in valid_payloads() {
            assert!(
                matches!(parse(!client, &p), Err(ClientProtoError::UnknownKind(_))),
                "{p:02x?}"
            );
        }
        assert_eq!(
            parse_client(&payload(1, |b| mpack::put_uint(b, 11))),
            Err(ClientProtoError::UnknownKind(11))
        );
        assert_eq!(
            parse_server(&payload(1, |b| mpack::put_uint(b, 300))),
            Err(ClientProtoError::UnknownKind(300))
        );
        assert!(matches!(
            parse_client(&payload(1, |b| mpack::put_int(b, -1))),
            Err(ClientProtoError::UnknownKind(_))
        ));
        assert!(matches!(
            parse_client(&payload(1, |b| mpack::put_f64(b, 6.0))),
            Err(ClientProtoError::UnknownKind(_))
        ));
        assert!(matches!(
            parse_client(&payload(1, |b| mpack::put_str(b, b"6"))),
            Err(ClientProtoError::Malformed(ReadError::Unexpected { .. }))
        ));
    }

    #[test]
    fn not_an_array_or_empty_is_refused() {
        assert_eq!(
            parse_client(&[]),
            Err(ClientProtoError::Malformed(ReadError::Truncated))
        );
        assert_eq!(parse_client(&[0x90]), Err(ClientProtoError::Empty));
        assert_eq!(parse_server(&[0x90]), Err(ClientProtoError::Empty));
        assert!(matches!(
            parse_client(&[0x06]),
            Err(ClientProtoError::Malformed(ReadError::Unexpected {
                expected: "array",
                ..
            }))
        ));
        assert!(matches!(
            parse_server(&[0x81, 0x07, 0x07]),
            Err(ClientProtoError::Malformed(ReadError::Unexpected { .. }))
        ));
        // a forged array length larger than the data
        assert_eq!(
            parse_client(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0x03, 0x01]),
            Err(ClientProtoError::Malformed(ReadError::Truncated))
        );
    }

    fn verify(n: usize, f: impl FnOnce(&mut BytesMut)) -> Result<(), ClientProtoError> {
        parse_client(&payload(n, |b| {
            mpack::put_uint(b, 0);
            f(b)
        }))
        .map(|_| ())
    }

    #[test]
    fn verify_arity_and_types_are_checked() {
        let ok = |b: &mut BytesMut| {
            mpack::put_str(b, b"alice");
            mpack::put_str(b, b"tok");
            mpack::put_uint(b, 1);
        };
        verify(4, ok).unwrap();
        for n in [1, 2, 3, 5, 6, 8] {
            let e = verify(n, |b| {
                for _ in 1..n {
                    mpack::put_uint(b, 1)
                }
            });
            assert!(
                matches!(e, Err(ClientProtoError::Arity { kind: 0, len, .. }) if len == n),
                "{n}: {e:?}"
            );
        }
        let wrong_type = |e: Result<(), ClientProtoError>| {
            assert!(
                matches!(e, Err(ClientProtoError::Malformed(ReadError::Unexpected { .. }))),
                "{e:?}"
            )
        };
        // account as bin, as an integer
        wrong_type(verify(4, |b| {
            mpack::put_bin(b, b"alice");
            mpack::put_str(b, b"tok");
            mpack::put_uint(b, 1);
        }));
        wrong_type(verify(4, |b| {
            mpack::put_uint(b, 5);
            mpack::put_str(b, b"tok");
            mpack::put_uint(b, 1);
        }));
        // token as nil
        wrong_type(verify(4, |b| {
            mpack::put_str(b, b"alice");
            mpack::put_nil(b);
            mpack::put_uint(b, 1);
        }));
        // client_digi negative, above u32, a float, a string
        for bad in [
            |b: &mut BytesMut| mpack::put_int(b, -1),
            |b: &mut BytesMut| mpack::put_uint(b, 1 << 32),
            |b: &mut BytesMut| mpack::put_f64(b, 1.0),
            |b: &mut BytesMut| mpack::put_str(b, b"1"),
        ] {
            wrong_type(verify(4, |b| {
                mpack::put_str(b, b"alice");
                mpack::put_str(b, b"tok");
                bad(b);
            }));
        }
    }

    #[test]
    fn account_and_token_lengths_are_checked() {
        let with = |account: &[u8], token: &[u8]| {
            verify(4, |b| {
                mpack::put_str(b, account);
                mpack::put_str(b, token);
                mpack::put_uint(b, 1);
            })
        };
        assert_eq!(with(b"", b"t"), Err(ClientProtoError::AccountLength(0)));
        with(&[b'a'; MAX_ACCOUNT], b"t").unwrap();
        assert_eq!(
            with(&[b'a'; MAX_ACCOUNT + 1], b"t"),
            Err(ClientProtoError::AccountLength(MAX_ACCOUNT + 1))
        );
        assert_eq!(
            with(&[b'a'; 100_000], b"t"),
            Err(ClientProtoError::AccountLength(100_000))
        );
        assert_eq!(with(b"a\xffb", b"t"), Err(ClientProtoError::NotUtf8("account")));
        with(b"a", &[b't'; MAX_TOKEN]).unwrap();
        assert_eq!(
            with(b"a", &[b't'; MAX_TOKEN + 1]),
            Err(ClientProtoError::TokenTooLong(MAX_TOKEN + 1))
        );
        assert_eq!(with(b"a", b"\xc3"), Err(ClientProtoError::NotUtf8("token")));
        with(b"a", b"").unwrap();
    }

    #[test]
    fn resume_fields_are_checked() {
        let with = |sid: &dyn Fn(&mut BytesMut), rt: &dyn Fn(&mut BytesMut), seq: &dyn Fn(&mut BytesMut)| {
            verify(7, |b| {
                mpack::put_str(b, b"alice");
                mpack::put_str(b, b"tok");
                mpack::put_uint(b, 1);
                sid(b);
                rt(b);
                seq(b);
            })
        };
        let sid_ok = |b: &mut BytesMut| mpack::put_uint(b, 5);
        let rt_ok = |b: &mut BytesMut| mpack::put_bin(b, &RT);
        let seq_ok = |b: &mut BytesMut| mpack::put_uint(b, 0);
        with(&sid_ok, &rt_ok, &seq_ok).unwrap();
        for len in [0, 15, 17, 32] {
            assert_eq!(
                with(&sid_ok, &|b| mpack::put_bin(b, &vec![1; len]), &seq_ok),
                Err(ClientProtoError::ResumeTokenLength(len))
            );
        }
        assert!(matches!(
            with(&sid_ok, &|b| mpack::put_str(b, &RT), &seq_ok),
            Err(ClientProtoError::Malformed(ReadError::Unexpected {
                expected: "binary",
                ..
            }))
        ));
        assert!(matches!(
            with(&|b| mpack::put_int(b, -5), &rt_ok, &seq_ok),
            Err(ClientProtoError::Malformed(_))
        ));
        assert!(matches!(
            with(&sid_ok, &rt_ok, &|b| mpack::put_uint(b, 1 << 32)),
            Err(ClientProtoError::Malformed(_))
        ));
    }

    #[test]
    fn calls_and_sends_must_carry_exactly_their_arguments() {
        for kind in [KIND_CALL, KIND_SEND] {
            // [kind] alone has no method
            assert!(matches!(
                parse_client(&payload(1, |b| mpack::put_uint(b, kind as u64))),
                Err(ClientProtoError::Arity { len: 1, .. })
            ));
            // method of the wrong type
            assert!(matches!(
                parse_client(&payload(2, |b| {
                    mpack::put_uint(b, kind as u64);
                    mpack::put_str(b, b"m");
                })),
                Err(ClientProtoError::Malformed(ReadError::Unexpected { .. }))
            ));
            assert!(matches!(
                parse_client(&payload(2, |b| {
                    mpack::put_uint(b, kind as u64);
                    mpack::put_int(b, -1);
                })),
                Err(ClientProtoError::Malformed(ReadError::Unexpected { .. }))
            ));
            // announces 3 arguments, carries 2
            assert_eq!(
                parse_client(&payload(5, |b| {
                    mpack::put_uint(b, kind as u64);
                    mpack::put_uint(b, 1);
                    mpack::put_uint(b, 1);
                    mpack::put_uint(b, 2);
                })),
                Err(ClientProtoError::Malformed(ReadError::Truncated))
            );
            // announces 1 argument, carries 2
            assert_eq!(
                parse_client(&payload(3, |b| {
                    mpack::put_uint(b, kind as u64);
                    mpack::put_uint(b, 1);
                    mpack::put_uint(b, 1);
                    mpack::put_uint(b, 2);
                })),
                Err(ClientProtoError::Malformed(ReadError::Trailing(1)))
            );
            // an argument that is not well-formed: a string longer than the data
            assert_eq!(
                parse_client(&payload(3, |b| {
                    mpack::put_uint(b, kind as u64);
                    mpack::put_uint(b, 1);
                    b.extend_from_slice(&[0xa5, b'a']);
                })),
                Err(ClientProtoError::Malformed(ReadError::Truncated))
            );
            // the reserved byte
            assert!(matches!(
                parse_client(&payload(3, |b| {
                    mpack::put_uint(b, kind as u64);
                    mpack::put_uint(b, 1);
                    b.extend_from_slice(&[0xc1]);
                })),
                Err(ClientProtoError::Malformed(ReadError::Unexpected { .. }))
            ));
            // nested too deep
            assert_eq!(
                parse_client(&payload(3, |b| {
                    mpack::put_uint(b, kind as u64);
                    mpack::put_uint(b, 1);
                    b.extend_from_slice(&[0x91; 100]);
                    mpack::put_nil(b);
                })),
                Err(ClientProtoError::Malformed(ReadError::TooDeep))
            );
        }
    }

    #[test]
    fn ping_and_ack_forms_are_exact() {
        assert!(matches!(
            parse_client(&payload(2, |b| {
                mpack::put_uint(b, KIND_PING as u64);
                mpack::put_nil(b);
            })),
            Err(ClientProtoError::Arity {
                kind: KIND_PING,
                len: 2,
                ..
            })
        ));
        assert!(matches!(
            parse_client(&payload(1, |b| mpack::put_uint(b, KIND_ACK as u64))),
            Err(ClientProtoError::Arity {
                kind: KIND_ACK,
                len: 1,
                ..
            })
        ));
        assert!(matches!(
            parse_client(&payload(3, |b| {
                mpack::put_uint(b, KIND_ACK as u64);
                mpack::put_uint(b, 1);
                mpack::put_uint(b, 2);
            })),
            Err(ClientProtoError::Arity {
                kind: KIND_ACK,
                len: 3,
                ..
            })
        ));
        for bad in [
            |b: &mut BytesMut| mpack::put_int(b, -1),
            |b: &mut BytesMut| mpack::put_uint(b, u32::MAX as u64 + 1),
            |b: &mut BytesMut| mpack::put_f32(b, 1.0),
            |b: &mut BytesMut| mpack::put_nil(b),
        ] {
            assert!(matches!(
                parse_client(&payload(2, |b| {
                    mpack::put_uint(b, KIND_ACK as u64);
                    bad(b);
                })),
                Err(ClientProtoError::Malformed(ReadError::Unexpected { .. }))
            ));
        }
    }

    #[test]
    fn server_forms_are_checked() {
        let p = |n: usize, kind: u8, f: &dyn Fn(&mut BytesMut)| {
            payload(n, |b| {
                mpack::put_uint(b, kind as u64);
                f(b);
            })
        };
        // reply: status 2, a status that is no integer, an error reply of the
        // wrong length, an error code that is not a string
        assert_eq!(
            parse_server(&p(2, KIND_REPLY, &|b| mpack::put_uint(b, 2))),
            Err(ClientProtoError::ReplyStatus(2))
        );
        assert!(matches!(
            parse_server(&p(2, KIND_REPLY, &|b| mpack::put_bool(b, true))),
            Err(ClientProtoError::Malformed(_))
        ));
        assert!(matches!(
            parse_server(&p(1, KIND_REPLY, &|_| {})),
            Err(ClientProtoError::Arity { len: 1, .. })
        ));
        assert!(matches!(
            parse_server(&p(3, KIND_REPLY, &|b| {
                mpack::put_uint(b, 1);
                mpack::put_str(b, b"error");
            })),
            Err(ClientProtoError::Arity { len: 3, .. })
        ));
        assert!(matches!(
            parse_server(&p(4, KIND_REPLY, &|b| {
                mpack::put_uint(b, 1);
                mpack::put_uint(b, 1);
                mpack::put_str(b, b"x");
            })),
            Err(ClientProtoError::Malformed(_))
        ));
        assert_eq!(
            parse_server(&p(4, KIND_REPLY, &|b| {
                mpack::put_uint(b, 1);
                mpack::put_str(b, b"error");
                mpack::put_str(b, b"\xff");
            })),
            Err(ClientProtoError::NotUtf8("text"))
        );
        // reply results announced but missing
        assert_eq!(
            parse_server(&p(4, KIND_REPLY, &|b| {
                mpack::put_uint(b, 0);
                mpack::put_uint(b, 1);
            })),
            Err(ClientProtoError::Malformed(ReadError::Truncated))
        );
        // verify-ok: a short resume token, resumed not a bool, wrong length
        assert_eq!(
            parse_server(&p(6, KIND_VERIFY_OK, &|b| {
                mpack::put_uint(b, 1);
                mpack::put_bin(b, &[1; 8]);
                mpack::put_uint(b, 1);
                mpack::put_bool(b, false);
                mpack::put_uint(b, 1);
            })),
            Err(ClientProtoError::ResumeTokenLength(8))
        );
        assert!(matches!(
            parse_server(&p(6, KIND_VERIFY_OK, &|b| {
                mpack::put_uint(b, 1);
                mpack::put_bin(b, &RT);
                mpack::put_uint(b, 1);
                mpack::put_uint(b, 0);
                mpack::put_uint(b, 1);
            })),
            Err(ClientProtoError::Malformed(ReadError::Unexpected { .. }))
        ));
        assert!(matches!(
            parse_server(&p(5, KIND_VERIFY_OK, &|b| {
                mpack::put_uint(b, 1);
                mpack::put_bin(b, &RT);
                mpack::put_uint(b, 1);
                mpack::put_bool(b, false);
            })),
            Err(ClientProtoError::Arity { len: 5, .. })
        ));
        // push: no method, args short
        assert!(matches!(
            parse_server(&p(2, KIND_PUSH, &|b| mpack::put_uint(b, 1))),
            Err(ClientProtoError::Arity { len: 2, .. })
        ));
        assert_eq!(
            parse_server(&p(4, KIND_PUSH, &|b| {
                mpack::put_uint(b, 1);
                mpack::put_uint(b, 1);
            })),
            Err(ClientProtoError::Malformed(ReadError::Truncated))
        );
        // notice: closing not a bool, pong with an element
        assert!(matches!(
            parse_server(&p(4, KIND_NOTICE, &|b| {
                mpack::put_str(b, b"idle");
                mpack::put_str(b, b"");
                mpack::put_nil(b);
            })),
            Err(ClientProtoError::Malformed(ReadError::Unexpected { .. }))
        ));
        assert!(matches!(
            parse_server(&p(2, KIND_PONG, &|b| mpack::put_nil(b))),
            Err(ClientProtoError::Arity { len: 2, .. })
        ));
        assert_eq!(
            parse_server(&p(3, KIND_VERIFY_FAILED, &|b| {
                mpack::put_str(b, b"\xfe");
                mpack::put_str(b, b"");
            })),
            Err(ClientProtoError::NotUtf8("code"))
        );
    }

    #[test]
    fn errors_render() {
        for e in [
            ClientProtoError::Malformed(ReadError::TooDeep),
            ClientProtoError::Empty,
            ClientProtoError::UnknownKind(12),
            ClientProtoError::Arity {
                kind: 0,
                len: 5,
                expected: "4 or 7",
            },
            ClientProtoError::AccountLength(129),
            ClientProtoError::TokenTooLong(2000),
            ClientProtoError::ResumeTokenLength(3),
            ClientProtoError::NotUtf8("account"),
            ClientProtoError::ReplyStatus(7),
        ] {
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(
            ClientProtoError::AccountLength(129).to_string(),
            "account of 129 bytes (must be 1 to 128)"
        );
    }

    /// splitmix64: a small deterministic generator for the fuzz tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// A byte, often one that matters to MessagePack or to the kinds.
        fn byte(&mut self) -> u8 {
            const INTERESTING: &[u8] = &[
                0x00, 0x01, 0x03, 0x04, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x10, 0x7f, 0x80, 0x81, 0x90, 0x91, 0x93, 0x94,
                0x96, 0x97, 0x9f, 0xa0, 0xa5, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xca, 0xcb, 0xcc,
                0xcd, 0xce, 0xcf, 0xd0, 0xd3, 0xd4, 0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff,
            ];
            if self.next() & 1 == 0 {
                INTERESTING[self.below(INTERESTING.len())]
            } else {
                self.next() as u8
            }
        }
    }

    /// Re-encodes a parsed client message and checks it parses to the same.
    fn reencode_client(m: &ClientMsg<'_>) {
        let mut out = BytesMut::new();
        match m {
            ClientMsg::Verify(v) => put_verify(
                &mut out,
                v.account,
                v.token,
                v.client_digi,
                v.resume
                    .as_ref()
                    .map(|r| (r.session_id, r.resume_token.try_into().unwrap(), r.last_seq)),
            ),
            ClientMsg::Call { method, nargs, args } => put_call(&mut out, 1, *method, *nargs, args),
            ClientMsg::Send { method, nargs, args } => put_send(&mut out, *method, *nargs, args),
            ClientMsg::Ping => put_ping(&mut out),
            ClientMsg::Ack { seq } => put_ack(&mut out, *seq),
        }
        let f = frames(&mut out);
        assert_eq!(&parse_client(&f[0].data).unwrap(), m);
    }

    /// Re-encodes a parsed server message and checks it parses to the same.
    fn reencode_server(m: &ServerMsg<'_>) {
        let mut out = BytesMut::new();
        match m {
            ServerMsg::VerifyOk {
                session_id,
                resume_token,
                heartbeat_ms,
                resumed,
                last_seq,
            } => put_verify_ok(&mut out, *session_id, resume_token, *heartbeat_ms, *resumed, *last_seq),
            ServerMsg::VerifyFailed { code, text } => put_verify_failed(&mut out, code, text),
            ServerMsg::ReplyOk { nvals, vals } => put_reply_ok(&mut out, 1, *nvals, vals),
            ServerMsg::ReplyErr { code, text } => put_reply_err(&mut out, 1, code, text),
            ServerMsg::Pong => put_pong(&mut out),
            ServerMsg::Push {
                seq,
                method,
                nargs,
                args,
            } => put_push(&mut out, *seq, *method, *nargs, args),
            ServerMsg::Notice { code, text, closing } => put_notice(&mut out, code, text, *closing),
        }
        let f = frames(&mut out);
        assert_eq!(&parse_server(&f[0].data).unwrap(), m);
    }

    fn check_any(data: &[u8]) -> (bool, bool) {
        let c = match parse_client(data) {
            Ok(m) => {
                reencode_client(&m);
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        };
        let s = match parse_server(data) {
            Ok(m) => {
                reencode_server(&m);
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        };
        (c, s)
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x5eed);
        let mut buf = Vec::new();
        let mut parsed = 0;
        for _ in 0..300_000 {
            buf.clear();
            // mostly arrays of a kind, so the parsers get past the head
            if !rng.next().is_multiple_of(4) {
                buf.push(0x90 | rng.below(9) as u8);
                buf.push(rng.below(12) as u8);
            }
            let n = rng.below(40);
            for _ in 0..n {
                buf.push(rng.byte());
            }
            let (c, s) = check_any(&buf);
            parsed += c as usize + s as usize;
        }
        assert!(parsed > 0, "the fuzz never produced a valid message");
    }

    #[test]
    fn mutated_messages_never_panic() {
        let valid = valid_payloads();
        let mut rng = Rng(42);
        for _ in 0..100_000 {
            let mut p = valid[rng.below(valid.len())].1.clone();
            for _ in 0..1 + rng.below(3) {
                match rng.below(4) {
                    0 if !p.is_empty() => {
                        let i = rng.below(p.len());
                        p[i] = rng.byte();
                    }
                    1 => {
                        let i = rng.below(p.len() + 1);
                        p.insert(i, rng.byte());
                    }
                    2 if !p.is_empty() => {
                        let i = rng.below(p.len());
                        p.remove(i);
                    }
                    _ => {
                        let i = rng.below(p.len() + 1);
                        p.truncate(i);
                    }
                }
            }
            check_any(&p);
        }
    }
}
