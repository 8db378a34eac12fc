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
            0x00, 0x01, 0x03, 0x04, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x10, 0x7f, 0x80, 0x81, 0x90, 0x91, 0x93, 0x94, 0x96,
            0x97, 0x9f, 0xa0, 0xa5, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7, 0xca, 0xcb, 0xcc, 0xcd, 0xce,
            0xcf, 0xd0, 0xd3, 0xd4, 0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff,
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
