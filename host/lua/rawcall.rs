//! Raw C-function bindings for the hot path: `core.request` and
//! `core.reply` read their arguments straight off the Lua stack and encode
//! MessagePack from the stack slots into the frame, with no mlua `Value`
//! (and no `Variadic`/`MultiValue`) per argument. They behave as the
//! `create_function` bindings they replace: same results, same error texts
//! (a wrong argument type is a Lua error at the call site; a value that does
//! not match the schema comes back as `nil, text, kind`).
//!
//! All the unsafe code of the bindings is here. The invariants it keeps:
//!
//! - **No Lua error crosses a Rust frame that owns a value with a
//!   destructor.** While Rust values are alive, only Lua API functions that
//!   cannot raise are called: `lua_type`, `lua_isinteger`, `lua_tointegerx`,
//!   `lua_tonumberx`, `lua_toboolean`, `lua_tolstring` on values that are
//!   strings (so nothing is converted in place), `lua_rawlen`, `lua_rawgeti`,
//!   `lua_next` with keys it returned itself, `lua_copy`, `lua_pushnil`,
//!   `lua_settop`, `lua_checkstack`, `lua_touserdata`. The functions that can
//!   raise (string pushes may fail to allocate, `lua_error`) run in the outer
//!   frame ([`finish`]) after the work is done, with the texts held through
//!   raw pointers (a longjmp there leaks them, it skips no destructor).
//! - **No panic crosses into C**: the work runs under `catch_unwind`.
//! - **Stack slots read in place outlive their use**: [`StackArgs`] covers
//!   arguments of the running C function, which stay on the stack until it
//!   returns; strings are borrowed only while their slot is on the stack.

use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Weak;

use bytes::BytesMut;
use mlua::ffi::{self, lua_State};
use mlua::{Function, Lua};

use super::{LuaHost, Wait};
use crate::codec::mpack;
use crate::schema::{ArgList, Shown, Ty, TypeError};

/// Arguments `first ..= first + count - 1` of the running C function, read
/// in place.
pub(crate) struct StackArgs {
    state: *mut lua_State,
    first: c_int,
    count: usize,
}

impl ArgList for StackArgs {
    fn count(&self) -> usize {
        self.count
    }
    fn encode_at(&self, i: usize, out: &mut BytesMut, ty: &Ty) -> Result<(), TypeError> {
        if i >= self.count {
            return crate::schema::encode(out, ty, &mlua::Value::Nil);
        }
        // SAFETY: the slot is an argument of the running C function (see
        // the module's invariants); encode_slot raises no Lua error.
        unsafe { encode_slot(self.state, self.first + i as c_int, ty, out) }
    }
    fn text_at(&self, i: usize) -> String {
        if i >= self.count {
            return String::new();
        }
        let idx = self.first + i as c_int;
        // SAFETY: as in encode_at.
        unsafe {
            match ffi::lua_type(self.state, idx) {
                ffi::LUA_TNIL => "nil".to_string(),
                ffi::LUA_TBOOLEAN => (ffi::lua_toboolean(self.state, idx) != 0).to_string(),
                _ => match shown(self.state, idx) {
                    Shown::Str(b) => String::from_utf8_lossy(b).into_owned(),
                    Shown::Int(n) => n.to_string(),
                    Shown::Num(n) => n.to_string(),
                    Shown::Other(t) => t.to_string(),
                },
            }
        }
    }
}

/// The name mlua's `Value::type_name` gives the value at `idx`.
unsafe fn type_name(l: *mut lua_State, idx: c_int) -> &'static str {
    match ffi::lua_type(l, idx) {
        ffi::LUA_TNIL | ffi::LUA_TNONE => "nil",
        ffi::LUA_TBOOLEAN => "boolean",
        ffi::LUA_TLIGHTUSERDATA => "lightuserdata",
        ffi::LUA_TNUMBER if ffi::lua_isinteger(l, idx) != 0 => "integer",
        ffi::LUA_TNUMBER => "number",
        ffi::LUA_TSTRING => "string",
        ffi::LUA_TTABLE => "table",
        ffi::LUA_TFUNCTION => "function",
        ffi::LUA_TTHREAD => "thread",
        ffi::LUA_TUSERDATA => "userdata",
        _ => "other",
    }
}

/// The bytes of the string at `idx`; the caller checked it is a string
/// (so `lua_tolstring` converts nothing), and uses them while it is on the
/// stack.
unsafe fn str_at<'a>(l: *mut lua_State, idx: c_int) -> &'a [u8] {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(l, idx, &mut len);
    std::slice::from_raw_parts(p as *const u8, len)
}

/// The value at `idx` as error texts show it.
unsafe fn shown<'a>(l: *mut lua_State, idx: c_int) -> Shown<'a> {
    match ffi::lua_type(l, idx) {
        ffi::LUA_TNUMBER if ffi::lua_isinteger(l, idx) != 0 => {
            Shown::Int(ffi::lua_tointegerx(l, idx, std::ptr::null_mut()))
        }
        ffi::LUA_TNUMBER => Shown::Num(ffi::lua_tonumberx(l, idx, std::ptr::null_mut())),
        ffi::LUA_TSTRING => Shown::Str(str_at(l, idx)),
        _ => Shown::Other(type_name(l, idx)),
    }
}

fn overflow() -> TypeError {
    TypeError::new("Lua stack overflow while encoding".to_string())
}

/// `schema::encode` for the value in stack slot `idx` (absolute): the same
/// checks, the same bytes, the same error texts.
unsafe fn encode_slot(l: *mut lua_State, idx: c_int, ty: &Ty, out: &mut BytesMut) -> Result<(), TypeError> {
    let t = ffi::lua_type(l, idx);
    let mismatch = || TypeError::new(format!("expected {ty}, got {}", shown(l, idx).describe()));
    match ty {
        Ty::Optional(inner) => {
            if t == ffi::LUA_TNIL || t == ffi::LUA_TNONE {
                mpack::put_nil(out);
                Ok(())
            } else {
                encode_slot(l, idx, inner, out)
            }
        }
        Ty::Int { min, max, name } => {
            if t != ffi::LUA_TNUMBER {
                return Err(TypeError::new(format!(
                    "expected {name}, got {}",
                    shown(l, idx).describe()
                )));
            }
            let i = if ffi::lua_isinteger(l, idx) != 0 {
                ffi::lua_tointegerx(l, idx, std::ptr::null_mut())
            } else {
                let n = ffi::lua_tonumberx(l, idx, std::ptr::null_mut());
                if n.fract() == 0.0 && (-9.2e18..=9.2e18).contains(&n) {
                    n as i64
                } else {
                    return Err(TypeError::new(format!(
                        "expected {name}, got {}",
                        shown(l, idx).describe()
                    )));
                }
            };
            if i < *min || i > *max {
                return Err(TypeError::new(format!("{i} is out of range for {name} ({min}..{max})")));
            }
            mpack::put_int(out, i);
            Ok(())
        }
        Ty::Float | Ty::Double => {
            if t != ffi::LUA_TNUMBER {
                return Err(mismatch());
            }
            let f = if ffi::lua_isinteger(l, idx) != 0 {
                ffi::lua_tointegerx(l, idx, std::ptr::null_mut()) as f64
            } else {
                ffi::lua_tonumberx(l, idx, std::ptr::null_mut())
            };
            if matches!(ty, Ty::Float) {
                mpack::put_f32(out, f as f32);
            } else {
                mpack::put_f64(out, f);
            }
            Ok(())
        }
        Ty::Bool if t == ffi::LUA_TBOOLEAN => {
            mpack::put_bool(out, ffi::lua_toboolean(l, idx) != 0);
            Ok(())
        }
        Ty::Str if t == ffi::LUA_TSTRING => {
            mpack::put_str(out, str_at(l, idx));
            Ok(())
        }
        Ty::Bytes if t == ffi::LUA_TSTRING => {
            mpack::put_bin(out, str_at(l, idx));
            Ok(())
        }
        Ty::Array(et) if t == ffi::LUA_TTABLE => {
            // keys must be 1..n and nothing else ({} is an empty array)
            let n = ffi::lua_rawlen(l, idx);
            if ffi::lua_checkstack(l, 3) == 0 {
                return Err(overflow());
            }
            let mut bad = None;
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, idx) != 0 {
                let ok = ffi::lua_isinteger(l, -2) != 0 && {
                    let k = ffi::lua_tointegerx(l, -2, std::ptr::null_mut());
                    k >= 1 && (k as u64) <= n as u64
                };
                if !ok {
                    bad = Some(shown(l, -2).describe_key());
                    ffi::lua_settop(l, -3);
                    break;
                }
                ffi::lua_settop(l, -2);
            }
            if let Some(k) = bad {
                return Err(TypeError::new(format!("expected {ty}, got a table with {k}")));
            }
            mpack::put_array_len(out, n);
            for i in 1..=n {
                ffi::lua_rawgeti(l, idx, i as ffi::lua_Integer);
                let r = encode_slot(l, ffi::lua_gettop(l), et, out);
                ffi::lua_settop(l, -2);
                r.map_err(|e| e.at(format!("[{i}]")))?;
            }
            Ok(())
        }
        Ty::Map(kt, vt) if t == ffi::LUA_TTABLE => {
            if ffi::lua_checkstack(l, 3) == 0 {
                return Err(overflow());
            }
            let mut n = 0usize;
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, idx) != 0 {
                n += 1;
                ffi::lua_settop(l, -2);
            }
            mpack::put_map_len(out, n);
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, idx) != 0 {
                let top = ffi::lua_gettop(l);
                let r = encode_slot(l, top - 1, kt, out)
                    .map_err(|e| e.at(" key".to_string()))
                    .and_then(|()| {
                        encode_slot(l, top, vt, out).map_err(|e| e.at(format!("[{}]", shown(l, top - 1).key_label())))
                    });
                if let Err(e) = r {
                    ffi::lua_settop(l, -3);
                    return Err(e);
                }
                ffi::lua_settop(l, -2);
            }
            Ok(())
        }
        Ty::Struct(def) if t == ffi::LUA_TTABLE => {
            // the fields are copied to slots base+1.. (one walk of the
            // table, which also refuses keys the struct does not have)
            let nf = def.fields.len();
            if ffi::lua_checkstack(l, nf as c_int + 3) == 0 {
                return Err(overflow());
            }
            let base = ffi::lua_gettop(l);
            for _ in 0..nf {
                ffi::lua_pushnil(l);
            }
            let mut bad = None;
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, idx) != 0 {
                let slot = if ffi::lua_type(l, -2) == ffi::LUA_TSTRING {
                    let k = str_at(l, -2);
                    def.fields.iter().position(|(f, _)| f.as_bytes() == k)
                } else {
                    None
                };
                match slot {
                    Some(i) => {
                        ffi::lua_copy(l, -1, base + 1 + i as c_int);
                        ffi::lua_settop(l, -2);
                    }
                    None => {
                        bad = Some(match shown(l, -2) {
                            Shown::Str(s) => format!("{} has no field '{}'", def.name, String::from_utf8_lossy(s)),
                            other => format!("{} has named fields only, got {}", def.name, other.describe_key()),
                        });
                        ffi::lua_settop(l, -3);
                        break;
                    }
                }
            }
            let r = match bad {
                Some(b) => Err(TypeError::new(b)),
                None => (|| {
                    mpack::put_array_len(out, nf);
                    for (i, (fname, fty)) in def.fields.iter().enumerate() {
                        let slot = base + 1 + i as c_int;
                        if ffi::lua_type(l, slot) == ffi::LUA_TNIL && !matches!(fty, Ty::Optional(_)) {
                            return Err(TypeError::new(format!("missing field '{fname}' of {}", def.name)));
                        }
                        encode_slot(l, slot, fty, out).map_err(|e| e.at(format!(".{fname}")))?;
                    }
                    Ok(())
                })(),
            };
            ffi::lua_settop(l, base);
            r
        }
        _ => Err(mismatch()),
    }
}

/// An integer argument as mlua's `FromLua` for integers reads it, with its
/// error text (`bad argument #2: error converting Lua nil to u32 (...)`).
unsafe fn int_arg<T: TryFrom<i64>>(l: *mut lua_State, idx: c_int, to: &str) -> Result<T, String> {
    let t = ffi::lua_type(l, idx);
    let err = |from: &str, msg: &str| format!("bad argument #{idx}: error converting Lua {from} to {to} ({msg})");
    if t == ffi::LUA_TNUMBER || t == ffi::LUA_TSTRING {
        let mut ok = 0;
        let i = ffi::lua_tointegerx(l, idx, &mut ok);
        if ok != 0 {
            let from = if t == ffi::LUA_TSTRING { "string" } else { "integer" };
            return T::try_from(i).map_err(|_| err(from, "out of range"));
        }
        let mut ok = 0;
        ffi::lua_tonumberx(l, idx, &mut ok);
        if ok != 0 {
            return Err(err(type_name(l, idx), "out of range"));
        }
    }
    Err(err(type_name(l, idx), "expected number or string coercible to number"))
}

/// What a binding gives back to Lua, pushed by [`finish`].
enum Out {
    /// `id, nil, nil`
    Id(u32),
    /// `true, nil`
    Done,
    /// `nil, text, kind` (`nil, text` when `kind_slot` is false)
    Fail {
        text: String,
        kind: Option<&'static str>,
        kind_slot: bool,
    },
}

/// Runs a binding's work under `catch_unwind`, then pushes its results or
/// raises its error. Only here can a Lua error be raised: everything with a
/// destructor is gone or held through a raw pointer by then.
unsafe fn finish(l: *mut lua_State, what: &str, work: impl FnOnce() -> Result<Out, String>) -> c_int {
    let r = catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| Err(format!("{what}: internal error (panic)")));
    match r {
        Ok(Out::Id(id)) => {
            ffi::lua_pushinteger(l, id as ffi::lua_Integer);
            ffi::lua_pushnil(l);
            ffi::lua_pushnil(l);
            3
        }
        Ok(Out::Done) => {
            ffi::lua_pushboolean(l, 1);
            ffi::lua_pushnil(l);
            2
        }
        Ok(Out::Fail { text, kind, kind_slot }) => {
            ffi::lua_pushnil(l);
            push_owned(l, text);
            if kind_slot {
                match kind {
                    // a &'static str: nothing to free
                    Some(k) => {
                        ffi::lua_pushlstring(l, k.as_ptr() as *const _, k.len());
                    }
                    None => ffi::lua_pushnil(l),
                }
                3
            } else {
                2
            }
        }
        Err(text) => {
            // with a traceback from this function on, as mlua gives its
            // callbacks' errors
            push_owned(l, text);
            let msg = ffi::lua_tolstring(l, -1, std::ptr::null_mut());
            ffi::luaL_traceback(l, l, msg, 0);
            ffi::lua_error(l)
        }
    }
}

/// Pushes `s` as a Lua string. `s` is held through a raw pointer while the
/// (allocating, so possibly raising) push runs: a memory error leaks it
/// instead of skipping its destructor.
unsafe fn push_owned(l: *mut lua_State, s: String) {
    let len = s.len();
    let raw = Box::into_raw(s.into_bytes().into_boxed_slice()) as *mut u8;
    ffi::lua_pushlstring(l, raw as *const _, len);
    drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(raw, len)));
}

/// The host behind a binding: the `Weak<H>` in the full userdata that is
/// the closure's first upvalue.
unsafe fn host<H: LuaHost>(l: *mut lua_State) -> Result<std::rc::Rc<H>, String> {
    let p = ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const Weak<H>;
    // (null only if the upvalue were replaced through the debug library)
    if p.is_null() {
        return Err("the node is shutting down".to_string());
    }
    (*p).upgrade().ok_or_else(|| "the node is shutting down".to_string())
}

/// `core.request(sid, eid, mid, wait, ...)`: see `api.rs`.
unsafe extern "C-unwind" fn request<H: LuaHost>(l: *mut lua_State) -> c_int {
    finish(l, "core.request", || {
        let c = host::<H>(l)?;
        let sid: u32 = int_arg(l, 1, "u32")?;
        let eid: i64 = int_arg(l, 2, "i64")?;
        let mid: u32 = int_arg(l, 3, "u32")?;
        let wait = match ffi::lua_type(l, 4) {
            ffi::LUA_TNIL | ffi::LUA_TNONE => Wait::Default,
            ffi::LUA_TBOOLEAN if ffi::lua_toboolean(l, 4) == 0 => Wait::No,
            ffi::LUA_TNUMBER => Wait::Timeout(crate::rpc::clamp_delay(ffi::lua_tonumberx(l, 4, std::ptr::null_mut()))),
            _ => {
                return Err(format!(
                    "core.request: wait must be nil, false or seconds, got {}",
                    type_name(l, 4)
                ))
            }
        };
        let args = StackArgs {
            state: l,
            first: 5,
            count: (ffi::lua_gettop(l) - 4).max(0) as usize,
        };
        Ok(match c.request(sid, eid, mid, wait, &args) {
            Ok(id) => Out::Id(id),
            Err(e) => Out::Fail {
                text: e.to_string(),
                kind: e.kind(),
                kind_slot: true,
            },
        })
    })
}

/// `core.reply(conn, session, mid, ok, ...)`: see `api.rs`.
unsafe extern "C-unwind" fn reply<H: LuaHost>(l: *mut lua_State) -> c_int {
    finish(l, "core.reply", || {
        let c = host::<H>(l)?;
        let conn: u64 = int_arg(l, 1, "u64")?;
        let session: u32 = int_arg(l, 2, "u32")?;
        let mid: u32 = int_arg(l, 3, "u32")?;
        let ok = ffi::lua_toboolean(l, 4) != 0;
        let vals = StackArgs {
            state: l,
            first: 5,
            count: (ffi::lua_gettop(l) - 4).max(0) as usize,
        };
        Ok(match c.reply(conn, session, mid, ok, &vals) {
            Ok(()) => Out::Done,
            Err(text) => Out::Fail {
                text,
                kind: None,
                kind_slot: false,
            },
        })
    })
}

/// `__gc` of the userdata holding a binding's `Weak<H>`.
unsafe extern "C-unwind" fn drop_weak<H: LuaHost>(l: *mut lua_State) -> c_int {
    let p = ffi::lua_touserdata(l, 1) as *mut Weak<H>;
    if !p.is_null() {
        // SAFETY: written once by `binding`; __gc runs once per userdata.
        // A Weak's drop does not panic.
        std::ptr::drop_in_place(p);
    }
    0
}

/// A C closure of `f` with the node's `Weak<H>` as its upvalue (a full
/// userdata that drops it when collected).
fn binding<H: LuaHost>(lua: &Lua, core: &Weak<H>, f: ffi::lua_CFunction) -> mlua::Result<Function> {
    let weak = core.clone();
    // SAFETY: exec_raw runs the closure in protected mode, so a memory
    // error there is an mlua error. The userdata is written before anything
    // else can raise; from then on Lua owns it and `drop_weak` drops it.
    unsafe {
        lua.exec_raw::<Function>((), move |l| {
            let ud = ffi::lua_newuserdatauv(l, std::mem::size_of::<Weak<H>>(), 0) as *mut Weak<H>;
            std::ptr::write(ud, weak);
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_pushcfunction(l, drop_weak::<H>);
            ffi::lua_setfield(l, -2, c"__gc".as_ptr());
            ffi::lua_setmetatable(l, -2);
            ffi::lua_pushcclosure(l, f, 1);
        })
    }
}

/// `core.request` and `core.reply` as raw C closures.
pub(crate) fn install<H: LuaHost>(lua: &Lua, core_table: &mlua::Table, core: &Weak<H>) -> mlua::Result<()> {
    core_table.set("request", binding::<H>(lua, core, request::<H>)?)?;
    core_table.set("reply", binding::<H>(lua, core, reply::<H>)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;

    use super::*;
    use crate::schema::{parse_type, StructDef};

    /// The bytes, or the error text, of one encoding.
    type Outcome = Option<Result<Vec<u8>, String>>;

    thread_local! {
        /// The type the test C function encodes its argument as, and what it got.
        static CASE: RefCell<(Option<Ty>, Outcome)> = const { RefCell::new((None, None)) };
    }

    /// Encodes its first argument from the stack as CASE's type.
    unsafe extern "C-unwind" fn encode_arg(l: *mut lua_State) -> c_int {
        CASE.with(|c| {
            let mut c = c.borrow_mut();
            let ty = c.0.clone().unwrap();
            let args = StackArgs {
                state: l,
                first: 1,
                count: ffi::lua_gettop(l) as usize,
            };
            let mut out = BytesMut::new();
            let r = args.encode_at(0, &mut out, &ty).map(|()| out.to_vec());
            c.1 = Some(r.map_err(|e| e.to_string()));
        });
        0
    }

    #[test]
    fn stack_encoding_matches_value_encoding() {
        let lua = Lua::new();
        let f = unsafe { lua.create_c_function(encode_arg) }.unwrap();
        let mut structs = HashMap::new();
        let int32 = parse_type("int32", &structs).unwrap();
        let pair = Rc::new(StructDef {
            name: "Pair".into(),
            fields: vec![("k".into(), Ty::Str), ("v".into(), Ty::Optional(Box::new(int32)))],
        });
        structs.insert("Pair".to_string(), pair);
        let types = [
            "int32",
            "uint8",
            "int64",
            "double",
            "float",
            "bool",
            "string",
            "bytes",
            "int32?",
            "array<int32>",
            "array<string?>",
            "map<string,int32>",
            "map<int32,array<bool>>",
            "Pair",
            "array<Pair>",
            "Pair?",
        ];
        let values = [
            "nil",
            "0",
            "-1",
            "300",
            "2^31",
            "3.0",
            "3.5",
            "0/0",
            "true",
            "false",
            "'x'",
            "string.rep('é', 30)",
            "{}",
            "{1, 2, 3}",
            "{1, nil, 3}",
            "{1, 'a'}",
            "{[1] = 1, x = 2}",
            "{[2.5] = 1}",
            "{[true] = 1}",
            "{a = 1}",
            "{a = 'x'}",
            "{k = 'a', v = 3}",
            "{k = 'a'}",
            "{v = 3}",
            "{k = 'a', w = 1}",
            "{[1] = {k = 'a'}, [2] = {k = 'b', v = 9}}",
            "{{k = 1}}",
            "{[1] = {true, false}}",
            "print",
            "{1, {}}",
            "{x = {k = 'a', vv = 1}}",
        ];
        let mut checked = 0;
        for t in types {
            let ty = parse_type(t, &structs).unwrap();
            for v in values {
                let value: mlua::Value = lua.load(format!("return {v}")).eval().unwrap();
                let mut out = BytesMut::new();
                let want = crate::schema::encode(&mut out, &ty, &value)
                    .map(|()| out.to_vec())
                    .map_err(|e| e.to_string());
                CASE.with(|c| *c.borrow_mut() = (Some(ty.clone()), None));
                f.call::<()>(value).unwrap();
                let got = CASE.with(|c| c.borrow_mut().1.take()).unwrap();
                assert_eq!(got, want, "type {t}, value {v}");
                checked += 1;
            }
        }
        assert_eq!(checked, types.len() * values.len());
    }

    #[test]
    fn bad_fixed_arguments_have_mluas_texts() {
        let lua = Lua::new();
        let reference = lua.create_function(|_, (_a, _b): (u32, i64)| Ok(())).unwrap();
        unsafe extern "C-unwind" fn raw(l: *mut lua_State) -> c_int {
            finish(l, "test", || {
                let _: u32 = int_arg(l, 1, "u32")?;
                let _: i64 = int_arg(l, 2, "i64")?;
                Ok(Out::Done)
            })
        }
        let raw = unsafe { lua.create_c_function(raw) }.unwrap();
        lua.globals().set("reference", reference).unwrap();
        lua.globals().set("raw", raw).unwrap();
        for args in [
            "1, 2", "nil, 2", "'7', 2", "-1, 2", "1.5, 2", "2^40, 1", "1, {}", "1, '1.5'", "1", "'x', 1",
        ] {
            let texts: (bool, String, bool, String) = lua
                .load(format!(
                    "local a, ea = pcall(reference, {args}); local b, eb = pcall(raw, {args}); \
                     return a, tostring(ea), b, tostring(eb)"
                ))
                .eval()
                .unwrap();
            assert_eq!(texts.0, texts.2, "{args}: {texts:?}");
            if !texts.0 {
                // the same message, then each its own traceback
                let first = |s: &str| s.lines().next().unwrap_or("").to_string();
                assert_eq!(first(&texts.1), first(&texts.3), "{args}");
                assert!(
                    texts.3.contains("stack traceback:\n\t[C]: in function 'raw'"),
                    "{}",
                    texts.3
                );
            }
        }
    }
}
