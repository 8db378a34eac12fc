//! Writes the seed corpus (fuzz/corpus/{frame,envelope,roundtrip}) with the
//! crate's own encoders. Run from the repository root:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example gen_corpus
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use bytes::{BufMut, BytesMut};
use luahost::codec::mpack;
use luahost::codec::proto;
use luahost::schema;
use luahost::codec::wire::{self, FrameDecoder};
use luahost_fuzz::{build, TYPE_NAMES};
use mlua::{MultiValue, Value};

/// Arguments for each method of luahost_fuzz's schema (ids 1..=9), as Lua.
const ARGS: &[&str] = &[
    "return -5, 300, -70000, 2^40 // 1, math.mininteger",
    "return 255, 65535, 4294967295, math.maxinteger",
    "return 1.5, 2.25, true, 'hi', '\\0\\1\\255'",
    "return {1, 2, 3}, {a = 1, b = -2}, {[7] = {id = 1, name = 'x', tags = {'t'}}}",
    "return {pid = 42, pos = {x = 1, y = 2, z = 3}, items = {{id = -1, name = 'sword', count = 2, tags = {'a', 'b'}}},
             attrs = {hp = 10.5}, guild = 'g', best = {id = 9, name = 'b', tags = {}}}, nil",
    "return {{1, 2}, {-3}}, {[1] = {'ab', 'c'}}, 12345",
    "return {[true] = 1.5}, {[2.5] = 'x'}, {[0.5] = true}, {}, {k = 1}",
    "return {x = 1, y = 2, z = 3}, nil, {1, 2, 3}",
    "return",
];

/// One value per entry of TYPE_NAMES, in order.
#[rustfmt::skip]
const VALUES: &[&str] = &[
    "return -128", "return -32768", "return 2147483647", "return -(2^47 // 1)", "return math.maxinteger",
    "return 255", "return 65535", "return 4294967295", "return math.maxinteger",
    "return 0.1", "return -1e300", "return false", "return 'hello'", "return '\\0bin'",
    "return {1, -1, 2^31 // 1 - 1}", "return {'a', 'bb'}", "return {{id = 1, name = 'n', tags = {}}}",
    "return {{1}, {}, {-128, 127}}", "return {1, 2, 3}",
    "return {a = 1}", "return {[-1] = {id = 2, name = 'm', count = 0, tags = {'x'}}}",
    "return {[3] = {'q'}}", "return {[false] = 0.5}",
    "return {[1.25] = 's'}", "return {[2] = true}", "return {[5] = 'v'}",
    "return {}", "return {k = 3}",
    "return {x = 0.5, y = -0.5, z = 1e10}", "return {id = 5, name = 'i', tags = {'t1', 't2'}}",
    "return {pid = 1, pos = {x = 0, y = 0, z = 0}, items = {}, attrs = {}}", "return nil", "return nil",
    "return 7", "return {a = {{x = 1, y = 2, z = 3}}}",
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap();
}

/// Splits a stream of whole frames back into (session, data) payloads.
fn payloads(mut out: BytesMut) -> Vec<Vec<u8>> {
    let mut dec = FrameDecoder::default();
    let mut v = Vec::new();
    while let Some(m) = dec.decode(&mut out).unwrap() {
        v.push(m.data.to_vec());
    }
    v
}

/// A raw frame (header written by hand; used for small fragments only, since
/// the encoder only fragments above 32 KiB).
fn frame(out: &mut BytesMut, flag: u8, session: u32, data: &[u8]) {
    out.put_u16((data.len() + 5) as u16);
    out.put_u8(flag);
    out.put_u32(session);
    out.put_slice(data);
}

fn main() {
    assert_eq!(ARGS.len(), luahost_fuzz::METHODS as usize);
    assert_eq!(VALUES.len(), TYPE_NAMES.len());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let (fdir, edir, rdir) = (root.join("frame"), root.join("envelope"), root.join("roundtrip"));
    for d in [&fdir, &edir, &rdir] {
        fs::create_dir_all(d).unwrap();
    }
    let ctx = build();

    // Every envelope kind, as frames.
    let mut all = BytesMut::new();
    let hello = luahost::codec::auth::Identity {
        name: "hall_1".into(),
        sid: 11,
        stype: "Hall".into(),
        digest: 0xdead_beef,
        incarnation: 7,
        nonce: [3; luahost::codec::auth::NONCE_LEN],
    };
    proto::put_verify(&mut all, &hello);
    proto::put_challenge(&mut all, &hello, &[5; luahost::codec::auth::PROOF_LEN]);
    proto::put_proof(&mut all, &[6; luahost::codec::auth::PROOF_LEN]);
    proto::put_ack(&mut all, 42);
    proto::put_load(&mut all, 9);
    proto::put_verify_ok(&mut all, "db_1", 3);
    proto::put_verify_failed(&mut all, "bad token");
    proto::put_ping(&mut all, false);
    proto::put_ping(&mut all, true);
    proto::put_error_reply(&mut all, 77, "boom");
    for (i, src) in ARGS.iter().enumerate() {
        let id = i as u32 + 1;
        let method = ctx.schema.method(id).unwrap().clone();
        let vals: MultiValue = ctx.lua.load(*src).eval().unwrap();
        let vals: Vec<Value> = vals.into_iter().collect();
        for call in [true, false] {
            let start = proto::begin_request(&mut all, call, 1000 + i as i64, id, method.args.len());
            schema::encode_list(&mut all, &method, &method.args, "argument", vals.iter()).unwrap();
            wire::finish_message(&mut all, start, if call { 100 + id } else { 0 });
        }
        if let Some(res) = &method.results {
            // Replies carry the method's results; reuse the first arguments
            // where the types agree, else nils for optional results.
            let start = proto::begin_reply(&mut all, res.len());
            let rv: Vec<Value> = match id {
                1 => vec![Value::Integer(-1)],
                3 => vec![Value::Boolean(true), Value::Nil],
                5 => vec![vals[0].clone()],
                _ => vec![],
            };
            schema::encode_list(&mut all, &method, res, "result", rv.iter()).unwrap();
            wire::finish_message(&mut all, start, 100 + id);
        }
    }
    let frames = all.clone();
    let msgs = payloads(all);

    // envelope: [selector][payload]; the selector picks the matching list.
    for (n, data) in msgs.iter().enumerate() {
        let sel = match proto::parse(data).unwrap() {
            proto::Envelope::Call { mid, .. } | proto::Envelope::Send { mid, .. } => (mid - 1) as u8,
            _ => (n % ARGS.len()) as u8,
        };
        let mut f = vec![sel];
        f.extend_from_slice(data);
        write(&edir, &format!("msg_{n:02}"), &f);
    }
    // envelope: one bare value of each type (the direct-decode path).
    for (i, (name, src)) in TYPE_NAMES.iter().zip(VALUES).enumerate() {
        let ty = schema::parse_type(name, &ctx.schema.structs).unwrap();
        let v: Value = ctx.lua.load(*src).eval().unwrap();
        let mut out = BytesMut::new();
        schema::encode(&mut out, &ty, &v).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut f = vec![i as u8];
        f.extend_from_slice(&out);
        write(&edir, &format!("value_{i:02}"), &f);
    }

    // frame: [n][n chunk sizes][stream].
    write(&fdir, "all_whole", &[&[0u8][..], &frames[..]].concat());
    write(&fdir, "all_bytewise", &[&[1u8, 0][..], &frames[..]].concat());
    write(&fdir, "all_mixed", &[&[3u8, 0, 6, 2][..], &frames[..]].concat());
    // Small limits (bits 4-7 of byte 0): 64 then 5, 1024 then 64, 5 then 1 MiB.
    write(&fdir, "limits_64_5", &[&[0xe0u8][..], &frames[..]].concat());
    write(&fdir, "limits_1024_64", &[&[0x91u8, 9][..], &frames[..]].concat());
    write(&fdir, "limits_5_1m", &[&[0x30u8][..], &frames[..]].concat());
    // Each message alone.
    let mut one = BytesMut::new();
    for (n, data) in msgs.iter().enumerate() {
        one.clear();
        wire::put_message(&mut one, n as u32, data);
        write(&fdir, &format!("msg_{n:02}"), &[&[2u8, 1, 4][..], &one[..]].concat());
    }
    // Small fragments (first, middle, last) around a whole frame.
    let call = msgs
        .iter()
        .find(|d| matches!(proto::parse(d), Ok(proto::Envelope::Call { mid: 5, .. })))
        .unwrap(); // a call of method 5 (Player)
    let mut fr = BytesMut::new();
    proto::put_ping(&mut fr, false);
    let third = call.len() / 3;
    frame(&mut fr, wire::FLAG_FIRST, 9, &call[..third]);
    frame(&mut fr, wire::FLAG_MIDDLE, 9, &call[third..2 * third]);
    frame(&mut fr, wire::FLAG_LAST, 9, &call[2 * third..]);
    proto::put_ping(&mut fr, true);
    write(&fdir, "fragments", &[&[2u8, 3, 0][..], &fr[..]].concat());
    let mut fr2 = BytesMut::new();
    frame(&mut fr2, wire::FLAG_FIRST, 1, &msgs[0][..4]);
    frame(&mut fr2, wire::FLAG_LAST, 1, &msgs[0][4..]);
    write(&fdir, "fragments_two", &[&[0u8][..], &fr2[..]].concat());

    // roundtrip: unstructured bytes; a few patterns per type index.
    for i in 0..TYPE_NAMES.len() as u8 {
        let mut f = vec![0x5a; 64];
        f.extend((0..64u8).map(|b| b.wrapping_mul(37) ^ i));
        f.push(i);
        write(&rdir, &format!("seed_{i:02}"), &f);
    }
    // A mpack-encoded blob, to seed string contents.
    let mut m = BytesMut::new();
    mpack::put_str(&mut m, b"roundtrip");
    write(&rdir, "seed_str", &m);
    println!(
        "wrote {} frame, {} envelope, {} roundtrip seeds",
        fs::read_dir(&fdir).unwrap().count(),
        fs::read_dir(&edir).unwrap().count(),
        fs::read_dir(&rdir).unwrap().count()
    );
}
