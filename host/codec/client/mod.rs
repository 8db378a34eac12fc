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
mod tests;
