//! `roundtrip`: Lua values built from the input (always valid for their
//! type) go through schema::encode, inside a call envelope
//! (proto::begin_request + wire::finish_message, between two other messages
//! and sometimes with a padding argument long enough to be fragmented), then
//! back through FrameDecoder (fed in chunks), proto::parse and
//! schema::decode. The decoded value must equal the original (floats as
//! their 32-bit rounding, integral numbers as integers), and for types
//! without maps (whose order Lua does not keep) encoding the decoded value
//! must give the same bytes.
//!
//! Not generated, because Lua cannot hold them: nil elements inside arrays
//! (a sequence with holes has no defined length), nil map values, NaN keys.
#![no_main]

use arbitrary::{Result, Unstructured};
use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use luahost::codec::mpack::{self, Reader};
use luahost::codec::proto::{self, Envelope};
use luahost::schema::{self, Ty};
use luahost::codec::wire::{self, FrameDecoder, FRAGMENT};
use luahost_fuzz::{build, Ctx};
use mlua::{Lua, Table, Value};

thread_local! {
    static CTX: Ctx = build();
}

/// Types whose every map key is a non-optional scalar (keys the comparison
/// can look up by value).
fn supported(ty: &Ty) -> bool {
    match ty {
        Ty::Optional(t) | Ty::Array(t) => supported(t),
        Ty::Map(k, v) => {
            matches!(
                **k,
                Ty::Int { .. } | Ty::Float | Ty::Double | Ty::Bool | Ty::Str | Ty::Bytes
            ) && supported(v)
        }
        Ty::Struct(d) => d.fields.iter().all(|(_, t)| supported(t)),
        _ => true,
    }
}

fn has_map(ty: &Ty) -> bool {
    match ty {
        Ty::Optional(t) | Ty::Array(t) => has_map(t),
        Ty::Map(..) => true,
        Ty::Struct(d) => d.fields.iter().any(|(_, t)| has_map(t)),
        _ => false,
    }
}

fn string(lua: &Lua, u: &mut Unstructured) -> Result<Value> {
    let b: &[u8] = u.arbitrary()?;
    Ok(Value::String(lua.create_string(b).expect("create_string")))
}

fn gen(lua: &Lua, u: &mut Unstructured, ty: &Ty, nil_ok: bool) -> Result<Value> {
    Ok(match ty {
        Ty::Optional(t) => {
            if nil_ok && u.arbitrary()? {
                Value::Nil
            } else {
                gen(lua, u, t, nil_ok)?
            }
        }
        Ty::Int { min, max, .. } => {
            let i = u.int_in_range(*min..=*max)?;
            // encode also takes integral floats.
            if i.unsigned_abs() < (1 << 53) && u.ratio(1, 4)? {
                Value::Number(i as f64)
            } else {
                Value::Integer(i)
            }
        }
        Ty::Float | Ty::Double => {
            if u.ratio(1, 8)? {
                Value::Integer(u.arbitrary()?)
            } else {
                Value::Number(u.arbitrary()?)
            }
        }
        Ty::Bool => Value::Boolean(u.arbitrary()?),
        Ty::Str | Ty::Bytes => string(lua, u)?,
        Ty::Array(et) => {
            let n = u.int_in_range(0..=6)?;
            let t = lua.create_table().unwrap();
            for i in 1..=n {
                t.raw_set(i, gen(lua, u, et, false)?).unwrap();
            }
            Value::Table(t)
        }
        Ty::Map(kt, vt) => {
            let n = u.int_in_range(0..=6)?;
            let t = lua.create_table().unwrap();
            for _ in 0..n {
                let k = gen_key(lua, u, kt)?;
                let v = gen(lua, u, vt, false)?;
                t.raw_set(k, v).unwrap();
            }
            Value::Table(t)
        }
        Ty::Struct(def) => {
            let t = lua.create_table().unwrap();
            for (name, fty) in &def.fields {
                t.raw_set(name.as_str(), gen(lua, u, fty, true)?).unwrap();
            }
            Value::Table(t)
        }
    })
}

/// A key that survives its type exactly (floats already 32-bit, no NaN).
fn gen_key(lua: &Lua, u: &mut Unstructured, ty: &Ty) -> Result<Value> {
    Ok(match ty {
        Ty::Int { min, max, .. } => Value::Integer(u.int_in_range(*min..=*max)?),
        Ty::Float => {
            let f: f32 = u.arbitrary()?;
            Value::Number(if f.is_nan() { 0.5 } else { f as f64 })
        }
        Ty::Double => {
            let f: f64 = u.arbitrary()?;
            Value::Number(if f.is_nan() { 0.25 } else { f })
        }
        Ty::Bool => Value::Boolean(u.arbitrary()?),
        Ty::Str | Ty::Bytes => string(lua, u)?,
        other => unreachable!("unsupported key type {other}"),
    })
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Number(n) => Some(*n),
        _ => None,
    }
}

fn same_float(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Checks that `got` (decoded) equals `orig` (generated) under `ty`.
fn compare(ty: &Ty, orig: &Value, got: &Value, path: &str) -> std::result::Result<(), String> {
    let bad = |what: &str| Err(format!("at {path} ({ty}): {what}: sent {orig:?}, got {got:?}"));
    match ty {
        Ty::Optional(t) => match (orig, got) {
            (Value::Nil, Value::Nil) => Ok(()),
            (Value::Nil, _) | (_, Value::Nil) => bad("nil mismatch"),
            _ => compare(t, orig, got, path),
        },
        Ty::Int { .. } => {
            let want = match orig {
                Value::Integer(i) => *i,
                Value::Number(n) => *n as i64,
                _ => return bad("generator"),
            };
            match got {
                Value::Integer(g) if *g == want => Ok(()),
                _ => bad("integer differs"),
            }
        }
        Ty::Float | Ty::Double => {
            let x = num(orig).expect("generated number");
            let want = if matches!(ty, Ty::Float) { x as f32 as f64 } else { x };
            match got {
                Value::Number(g) if same_float(*g, want) => Ok(()),
                _ => bad("number differs"),
            }
        }
        Ty::Bool => {
            if orig == got {
                Ok(())
            } else {
                bad("bool differs")
            }
        }
        Ty::Str | Ty::Bytes => match (orig, got) {
            (Value::String(a), Value::String(b)) if a.as_bytes()[..] == b.as_bytes()[..] => Ok(()),
            _ => bad("string differs"),
        },
        Ty::Array(et) => {
            let (a, b) = tables(orig, got).ok_or_else(|| format!("at {path}: not tables"))?;
            if a.raw_len() != b.raw_len() {
                return bad("array length differs");
            }
            for i in 1..=a.raw_len() {
                let x: Value = a.raw_get(i).unwrap();
                let y: Value = b.raw_get(i).unwrap();
                compare(et, &x, &y, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        Ty::Map(_, vt) => {
            let (a, b) = tables(orig, got).ok_or_else(|| format!("at {path}: not tables"))?;
            let count = |t: &Table| t.pairs::<Value, Value>().count();
            if count(a) != count(b) {
                return bad("map size differs");
            }
            for p in a.pairs::<Value, Value>() {
                let (k, x) = p.unwrap();
                let y: Value = b.raw_get(k.clone()).unwrap();
                compare(vt, &x, &y, &format!("{path}[{k:?}]"))?;
            }
            Ok(())
        }
        Ty::Struct(def) => {
            let (a, b) = tables(orig, got).ok_or_else(|| format!("at {path}: not tables"))?;
            for (name, fty) in &def.fields {
                let x: Value = a.raw_get(name.as_str()).unwrap();
                let y: Value = b.raw_get(name.as_str()).unwrap();
                compare(fty, &x, &y, &format!("{path}.{name}"))?;
            }
            Ok(())
        }
    }
}

fn tables<'v>(a: &'v Value, b: &'v Value) -> Option<(&'v Table, &'v Table)> {
    Some((a.as_table()?, b.as_table()?))
}

fn one(ctx: &Ctx, u: &mut Unstructured) -> Result<()> {
    let candidates: Vec<&Ty> = ctx.types.iter().filter(|t| supported(t)).collect();
    let ty = candidates[u.choose_index(candidates.len())?];
    let v = gen(&ctx.lua, u, ty, true)?;
    let session: u32 = u.arbitrary()?;
    let eid: i64 = u.arbitrary()?;
    let mid: u32 = u.arbitrary()?;
    let call: bool = u.arbitrary()?;
    let pad = if u.ratio(1, 8)? {
        Some(u.int_in_range(0..=3 * FRAGMENT + 64)?)
    } else {
        None
    };
    let chunk = u.int_in_range(1..=70_000usize)?;

    // A message before and after: fragmenting in place must not touch them.
    let mut out = BytesMut::new();
    proto::put_ping(&mut out, false);
    let start = proto::begin_request(&mut out, call, eid, mid, 1 + pad.is_some() as usize);
    let arg_at = out.len();
    if let Err(e) = schema::encode(&mut out, ty, &v) {
        panic!("a generated {ty} value was refused: {e} ({v:?})");
    }
    let encoded = out[arg_at..].to_vec();
    if let Some(n) = pad {
        mpack::put_bin(&mut out, &vec![0xa5; n]);
    }
    wire::finish_message(&mut out, start, session);
    proto::put_verify_ok(&mut out, "after", 7);

    // Back, in chunks.
    let mut dec = FrameDecoder::new(wire::DEFAULT_MAX_MESSAGE);
    let mut buf = BytesMut::new();
    let mut msgs = Vec::new();
    for piece in out.chunks(chunk) {
        buf.put_slice(piece);
        while let Some(m) = dec.decode(&mut buf).expect("own frames decode") {
            msgs.push(m);
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    assert_eq!(msgs.len(), 3, "three messages were sent");
    assert!(matches!(proto::parse(&msgs[0].data), Ok(Envelope::Ping)));
    match proto::parse(&msgs[2].data) {
        Ok(Envelope::VerifyOk { name, sid }) => assert_eq!((name, sid), (&b"after"[..], 7)),
        other => panic!("third message: {other:?}"),
    }
    assert_eq!(msgs[1].session, session);
    let (g_eid, g_mid, g_nargs, mut args, g_call) = match proto::parse(&msgs[1].data) {
        Ok(Envelope::Call { eid, mid, nargs, args }) => (eid, mid, nargs, args, true),
        Ok(Envelope::Send { eid, mid, nargs, args }) => (eid, mid, nargs, args, false),
        other => panic!("request: {other:?}"),
    };
    assert_eq!(
        (g_eid, g_mid, g_nargs, g_call),
        (eid, mid, 1 + pad.is_some() as usize, call)
    );
    let got = schema::decode(&ctx.lua, ty, &mut args).unwrap_or_else(|e| panic!("own {ty} value refused: {e}"));
    if let Some(n) = pad {
        let p = args.read_bytes().expect("padding");
        assert!(p.len() == n && p.iter().all(|&b| b == 0xa5), "padding differs");
    }
    args.finish().expect("nothing after the arguments");

    if let Err(e) = compare(ty, &v, &got, "") {
        panic!("round trip changed a {ty} value: {e}");
    }
    if !has_map(ty) {
        let mut again = BytesMut::new();
        schema::encode(&mut again, ty, &got).expect("decoded value encodes");
        assert_eq!(&again[..], &encoded[..], "{ty}: encoding of the decoded value differs");
    }
    // Also straight from the bytes, without the envelope.
    let mut r = Reader::new(&encoded);
    let got2 = schema::decode(&ctx.lua, ty, &mut r).expect("bare value decodes");
    r.finish().expect("bare value has no trailing bytes");
    if let Err(e) = compare(ty, &v, &got2, "") {
        panic!("bare round trip changed a {ty} value: {e}");
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    CTX.with(|ctx| {
        let mut u = Unstructured::new(data);
        let _ = one(ctx, &mut u);
    });
});
