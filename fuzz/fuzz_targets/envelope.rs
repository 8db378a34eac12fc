//! `envelope`: proto::parse and schema::decode on arbitrary payloads.
//!
//! Input layout: byte 0 selects a method argument list (used when the
//! envelope's method id is not one of the schema's); the rest is the payload
//! (the data of one frame).
//!
//! For each input:
//! - proto::parse the payload; for Call/Send decode the arguments the way
//!   node.rs does (schema method by id, else the list picked by byte 0), for
//!   Reply decode results (or read the error text), then `finish()`;
//! - decode the payload directly against every type of
//!   `luahost_fuzz::TYPE_NAMES` (all int widths, float, double, bool, string,
//!   bytes, arrays, maps with scalar/table/optional keys, nested structs with
//!   optional fields, optionals).
//!
//! Checks, beyond "never panics" (a TypeError is fine): every value that
//! decodes must encode again with schema::encode against the same type, and
//! that encoding must decode again with no bytes left over.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use luahost::codec::mpack::Reader;
use luahost::codec::proto::{self, Envelope};
use luahost::schema::{self, Ty};
use luahost_fuzz::{build, Ctx};
use mlua::Value;

thread_local! {
    static CTX: Ctx = build();
}

fn check_reencode(ctx: &Ctx, ty: &Ty, v: &Value) {
    let mut out = BytesMut::new();
    if let Err(e) = schema::encode(&mut out, ty, v) {
        panic!("a decoded {ty} value does not encode again: {e}");
    }
    let mut r = Reader::new(&out);
    if let Err(e) = schema::decode(&ctx.lua, ty, &mut r) {
        panic!("a re-encoded {ty} value does not decode: {e}");
    }
    if let Err(e) = r.finish() {
        panic!("a re-encoded {ty} value decodes with bytes left: {e}");
    }
}

fn decode_list(ctx: &Ctx, tys: &[Ty], mut r: Reader<'_>) {
    for ty in tys {
        match schema::decode(&ctx.lua, ty, &mut r) {
            Ok(v) => check_reencode(ctx, ty, &v),
            Err(e) => {
                // The error must render (node.rs formats it into a reply).
                let _ = e.to_string();
                return;
            }
        }
    }
    let _ = r.finish();
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    CTX.with(|ctx| {
        let by_byte = &ctx.lists[sel as usize % ctx.lists.len()];
        match proto::parse(payload) {
            Ok(Envelope::Call { mid, args, .. } | Envelope::Send { mid, args, .. }) => {
                if let Some(m) = ctx.schema.method(mid) {
                    let tys: Vec<Ty> = m.args.iter().map(|(_, t)| t.clone()).collect();
                    decode_list(ctx, &tys, args.clone());
                }
                decode_list(ctx, by_byte, args);
            }
            Ok(Envelope::Reply { ok, vals, .. }) => {
                if ok {
                    decode_list(ctx, by_byte, vals);
                } else {
                    let mut vals = vals;
                    let _ = vals.read_bytes().map(|b| String::from_utf8_lossy(b).into_owned());
                }
            }
            Ok(other) => {
                let _ = format!("{other:?}");
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        for ty in &ctx.types {
            let mut r = Reader::new(payload);
            match schema::decode(&ctx.lua, ty, &mut r) {
                Ok(v) => check_reencode(ctx, ty, &v),
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    });
});
