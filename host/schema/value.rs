//! Lua values to MessagePack and back, by declared type: checked while they
//! are written straight into the frame (no intermediate tree), decoded
//! straight into Lua values.

use std::fmt;

use bytes::BytesMut;
use mlua::{Lua, Table, Value};

use super::{Method, Ty};
use crate::codec::mpack::{self, Num, ReadError, Reader};

/// A value that does not match its declared type, with where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeError {
    /// Path inside the value, outermost first (`[3]`, `.name`).
    pub path: Vec<String>,
    /// What was wrong.
    pub message: String,
}

impl TypeError {
    pub(crate) fn new(message: String) -> Self {
        TypeError {
            path: Vec::new(),
            message,
        }
    }
    pub(crate) fn at(mut self, seg: String) -> Self {
        self.path.insert(0, seg);
        self
    }
}

impl fmt::Display for TypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "at {}: {}", self.path.concat(), self.message)
        }
    }
}

/// A Lua value as error texts show it, wherever it was read from (an mlua
/// [`Value`] or a slot of the Lua stack).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shown<'a> {
    Int(i64),
    Num(f64),
    Str(&'a [u8]),
    /// Any other type, by its name.
    Other(&'static str),
}

impl Shown<'_> {
    /// `integer 3`, `string "abc"` (cut after 20 characters), `table`.
    pub(crate) fn describe(self) -> String {
        match self {
            Shown::Int(i) => format!("integer {i}"),
            Shown::Num(n) => format!("number {n}"),
            Shown::Str(b) => {
                let s = String::from_utf8_lossy(b);
                if s.len() > 24 {
                    format!("string \"{}...\"", &s.chars().take(20).collect::<String>())
                } else {
                    format!("string \"{s}\"")
                }
            }
            Shown::Other(t) => t.to_string(),
        }
    }
    /// A table key as an error names it: `key 'x'`, `key 9`, `a boolean key`.
    pub(crate) fn describe_key(self) -> String {
        match self {
            Shown::Str(b) => format!("key '{}'", String::from_utf8_lossy(b)),
            Shown::Int(i) => format!("key {i}"),
            Shown::Num(n) => format!("key {n}"),
            Shown::Other(t) => format!("a {t} key"),
        }
    }
    /// A map key inside a path: `[x]`'s `x`.
    pub(crate) fn key_label(self) -> String {
        match self {
            Shown::Str(b) => String::from_utf8_lossy(b).into_owned(),
            Shown::Int(i) => i.to_string(),
            Shown::Num(_) => "number".to_string(),
            Shown::Other(t) => t.to_string(),
        }
    }
}

fn with_shown<R>(v: &Value, f: impl FnOnce(Shown<'_>) -> R) -> R {
    match v {
        Value::Integer(i) => f(Shown::Int(*i)),
        Value::Number(n) => f(Shown::Num(*n)),
        Value::String(s) => f(Shown::Str(&s.as_bytes())),
        other => f(Shown::Other(other.type_name())),
    }
}

fn describe(v: &Value) -> String {
    with_shown(v, |s| s.describe())
}

/// Checks `v` against `ty` and appends its MessagePack form to `out`.
///
/// # Errors
///
/// [`TypeError`] when the value does not match; `out` may then hold a
/// partial value and must be rolled back by the caller.
pub fn encode(out: &mut BytesMut, ty: &Ty, v: &Value) -> Result<(), TypeError> {
    match (ty, v) {
        (Ty::Optional(_), Value::Nil) => {
            mpack::put_nil(out);
            Ok(())
        }
        (Ty::Optional(t), v) => encode(out, t, v),
        (Ty::Int { min, max, name }, v) => {
            let i = match v {
                Value::Integer(i) => *i,
                Value::Number(n) if n.fract() == 0.0 && *n >= -9.2e18 && *n <= 9.2e18 => *n as i64,
                other => return Err(TypeError::new(format!("expected {name}, got {}", describe(other)))),
            };
            if i < *min || i > *max {
                return Err(TypeError::new(format!("{i} is out of range for {name} ({min}..{max})")));
            }
            mpack::put_int(out, i);
            Ok(())
        }
        (Ty::Float | Ty::Double, v) => {
            let f = match v {
                Value::Integer(i) => *i as f64,
                Value::Number(n) => *n,
                other => return Err(TypeError::new(format!("expected {ty}, got {}", describe(other)))),
            };
            if matches!(ty, Ty::Float) {
                mpack::put_f32(out, f as f32);
            } else {
                mpack::put_f64(out, f);
            }
            Ok(())
        }
        (Ty::Bool, Value::Boolean(b)) => {
            mpack::put_bool(out, *b);
            Ok(())
        }
        (Ty::Str, Value::String(s)) => {
            mpack::put_str(out, &s.as_bytes());
            Ok(())
        }
        (Ty::Bytes, Value::String(s)) => {
            mpack::put_bin(out, &s.as_bytes());
            Ok(())
        }
        (Ty::Array(et), Value::Table(t)) => {
            // One walk of the table both collects the elements and checks
            // that it holds nothing but keys 1..n (a table with other keys
            // is not an array; {} is an empty one).
            let n = t.raw_len();
            let mut items = vec![Value::Nil; n];
            let mut bad = None;
            walk(t, |k, v| match k {
                Value::Integer(i) if i >= 1 && i as usize <= n => {
                    items[i as usize - 1] = v;
                    true
                }
                other => {
                    bad = Some(other);
                    false
                }
            })?;
            if let Some(k) = bad {
                return Err(TypeError::new(format!(
                    "expected {ty}, got a table with {}",
                    describe_key(&k)
                )));
            }
            mpack::put_array_len(out, n);
            for (i, e) in items.iter().enumerate() {
                encode(out, et, e).map_err(|e| e.at(format!("[{}]", i + 1)))?;
            }
            Ok(())
        }
        (Ty::Map(kt, vt), Value::Table(t)) => {
            let mut pairs = Vec::new();
            for p in t.pairs::<Value, Value>() {
                pairs.push(p.map_err(|e| TypeError::new(e.to_string()))?);
            }
            mpack::put_map_len(out, pairs.len());
            for (k, v) in &pairs {
                encode(out, kt, k).map_err(|e| e.at(" key".to_string()))?;
                encode(out, vt, v).map_err(|e| e.at(format!("[{}]", key_label(k))))?;
            }
            Ok(())
        }
        (Ty::Struct(def), Value::Table(t)) => {
            // One walk collects the fields and refuses keys the struct does
            // not have (a misspelt field would otherwise arrive as nil).
            let mut fields = vec![Value::Nil; def.fields.len()];
            let mut bad = None;
            walk(t, |k, v| {
                let slot = match &k {
                    Value::String(s) => {
                        let b = s.as_bytes();
                        def.fields.iter().position(|(f, _)| f.as_bytes() == &b[..])
                    }
                    _ => None,
                };
                match slot {
                    Some(i) => {
                        fields[i] = v;
                        true
                    }
                    None => {
                        bad = Some(k);
                        false
                    }
                }
            })?;
            if let Some(k) = bad {
                return Err(TypeError::new(match &k {
                    Value::String(s) => format!("{} has no field '{}'", def.name, s.to_string_lossy()),
                    other => format!("{} has named fields only, got {}", def.name, describe_key(other)),
                }));
            }
            mpack::put_array_len(out, def.fields.len());
            for ((fname, fty), e) in def.fields.iter().zip(&fields) {
                if e.is_nil() && !matches!(fty, Ty::Optional(_)) {
                    return Err(TypeError::new(format!("missing field '{fname}' of {}", def.name)));
                }
                encode(out, fty, e).map_err(|e| e.at(format!(".{fname}")))?;
            }
            Ok(())
        }
        (ty, v) => Err(TypeError::new(format!("expected {ty}, got {}", describe(v)))),
    }
}

/// Calls `f(key, value)` for every entry of `t` (raw, no metamethods) until
/// it returns false.
fn walk(t: &Table, mut f: impl FnMut(Value, Value) -> bool) -> Result<(), TypeError> {
    let mut stopped = false;
    let res = t.for_each(|k: Value, v: Value| {
        if f(k, v) {
            Ok(())
        } else {
            stopped = true;
            // ends the walk; not an error of the caller
            Err(mlua::Error::runtime("stop"))
        }
    });
    match res {
        Err(_) if stopped => Ok(()),
        Err(e) => Err(TypeError::new(e.to_string())),
        Ok(()) => Ok(()),
    }
}

fn describe_key(k: &Value) -> String {
    with_shown(k, |s| s.describe_key())
}

fn key_label(k: &Value) -> String {
    with_shown(k, |s| s.key_label())
}

fn rerr(e: ReadError) -> TypeError {
    TypeError::new(e.to_string())
}

fn lerr(e: mlua::Error) -> TypeError {
    TypeError::new(e.to_string())
}

/// Reads one value of type `ty` from `r` into a Lua value, checking it.
///
/// # Errors
///
/// [`TypeError`] when the data is malformed or does not match `ty`.
pub fn decode(lua: &Lua, ty: &Ty, r: &mut Reader<'_>) -> Result<Value, TypeError> {
    Ok(match ty {
        Ty::Optional(t) => {
            if r.peek_nil() {
                r.read_nil().map_err(rerr)?;
                Value::Nil
            } else {
                decode(lua, t, r)?
            }
        }
        Ty::Int { min, max, name } => match r.read_num().map_err(rerr)? {
            Num::Int(i) if i >= *min && i <= *max => Value::Integer(i),
            Num::Int(i) => return Err(TypeError::new(format!("{i} is out of range for {name}"))),
            other => return Err(TypeError::new(format!("expected {name}, got {other:?}"))),
        },
        Ty::Float | Ty::Double => match r.read_num().map_err(rerr)? {
            Num::Int(i) => Value::Number(i as f64),
            Num::BigUint(u) => Value::Number(u as f64),
            Num::Float(f) => Value::Number(f),
        },
        Ty::Bool => Value::Boolean(r.read_bool().map_err(rerr)?),
        Ty::Str | Ty::Bytes => Value::String(lua.create_string(r.read_bytes().map_err(rerr)?).map_err(lerr)?),
        Ty::Array(et) => {
            let n = r.read_array_len().map_err(rerr)?;
            let t = lua.create_table_with_capacity(n, 0).map_err(lerr)?;
            for i in 1..=n {
                let v = decode(lua, et, r).map_err(|e| e.at(format!("[{i}]")))?;
                t.raw_set(i, v).map_err(lerr)?;
            }
            Value::Table(t)
        }
        Ty::Map(kt, vt) => {
            let n = r.read_map_len().map_err(rerr)?;
            let t = lua.create_table_with_capacity(0, n).map_err(lerr)?;
            for _ in 0..n {
                let k = decode(lua, kt, r).map_err(|e| e.at(" key".to_string()))?;
                if k.is_nil() {
                    return Err(TypeError::new("nil map key".into()));
                }
                let label = key_label(&k);
                let v = decode(lua, vt, r).map_err(|e| e.at(format!("[{label}]")))?;
                t.raw_set(k, v).map_err(lerr)?;
            }
            Value::Table(t)
        }
        Ty::Struct(def) => {
            let n = r.read_array_len().map_err(rerr)?;
            if n != def.fields.len() {
                return Err(TypeError::new(format!(
                    "{} has {} fields, message has {n}",
                    def.name,
                    def.fields.len()
                )));
            }
            let t = lua.create_table_with_capacity(0, n).map_err(lerr)?;
            for (fname, fty) in &def.fields {
                let v = decode(lua, fty, r).map_err(|e| e.at(format!(".{fname}")))?;
                t.raw_set(fname.as_str(), v).map_err(lerr)?;
            }
            Value::Table(t)
        }
    })
}

/// The values of a call's arguments or results, wherever they live: a slice
/// of mlua [`Value`]s, or (on the hot path) the Lua stack of a raw binding,
/// read in place (`crate::lua::rawcall`).
pub trait ArgList {
    /// How many values were given.
    fn count(&self) -> usize;
    /// Checks value `i` (0-based; past [`ArgList::count`] it is nil) against
    /// `ty` and appends its MessagePack form to `out`, as [`encode`] does.
    ///
    /// # Errors
    ///
    /// [`TypeError`], with the same text [`encode`] gives for that value.
    fn encode_at(&self, i: usize, out: &mut BytesMut, ty: &Ty) -> Result<(), TypeError>;
    /// Value `i` as the text of an error reply (a string as it is).
    fn text_at(&self, i: usize) -> String;
}

impl ArgList for Vec<Value> {
    fn count(&self) -> usize {
        self.len()
    }
    fn encode_at(&self, i: usize, out: &mut BytesMut, ty: &Ty) -> Result<(), TypeError> {
        encode(out, ty, self.get(i).unwrap_or(&Value::Nil))
    }
    fn text_at(&self, i: usize) -> String {
        match self.get(i) {
            Some(Value::String(s)) => s.to_string_lossy(),
            Some(other) => other.to_string().unwrap_or_else(|_| format!("{other:?}")),
            None => String::new(),
        }
    }
}

/// Encodes a list of values against a list of declared types, as consecutive
/// MessagePack values. `what` names them in errors ("argument", "result").
///
/// # Errors
///
/// A message naming the method, the position and the name of the first bad
/// value, and what was wrong with it.
pub fn encode_list(
    out: &mut BytesMut,
    method: &Method,
    decl: &[(String, Ty)],
    what: &str,
    values: &dyn ArgList,
) -> Result<(), String> {
    let n = values.count();
    if n > decl.len() {
        return Err(format!("{}: {n} {what}s given, {} declared", method.name, decl.len()));
    }
    for (i, (name, ty)) in decl.iter().enumerate() {
        values
            .encode_at(i, out, ty)
            .map_err(|e| format!("bad {what} #{} '{name}' to {}: {e}", i + 1, method.name))?;
    }
    Ok(())
}

/// How deep [`encode_any`] follows tables inside tables (a table that
/// contains itself would never end).
const ANY_DEPTH: usize = 32;

/// Appends the MessagePack form of any plain Lua value (a document whose
/// shape no schema type fixes): nil, booleans, integers, floats, strings
/// (as MessagePack str), and tables: a sequence `1..n` becomes an array
/// (`{}` too), any other table a map with integer or string keys.
///
/// # Errors
///
/// [`TypeError`] naming where a function, userdata, a key of another kind,
/// or nesting deeper than 32 tables was found.
pub fn encode_any(out: &mut BytesMut, v: &Value) -> Result<(), TypeError> {
    encode_any_at(out, v, 0)
}

fn encode_any_at(out: &mut BytesMut, v: &Value, depth: usize) -> Result<(), TypeError> {
    match v {
        Value::Nil => mpack::put_nil(out),
        Value::Boolean(b) => mpack::put_bool(out, *b),
        Value::Integer(i) => mpack::put_int(out, *i),
        Value::Number(n) => mpack::put_f64(out, *n),
        Value::String(s) => mpack::put_str(out, &s.as_bytes()),
        Value::Table(t) => {
            if depth >= ANY_DEPTH {
                return Err(TypeError::new(format!("tables nested deeper than {ANY_DEPTH} levels")));
            }
            let mut entries = Vec::new();
            walk(t, |k, v| {
                entries.push((k, v));
                true
            })?;
            let n = t.raw_len();
            let is_array = entries.len() == n
                && entries
                    .iter()
                    .all(|(k, _)| matches!(k, Value::Integer(i) if *i >= 1 && *i as usize <= n));
            if is_array {
                entries.sort_by_key(|(k, _)| k.as_integer().unwrap_or(0));
                mpack::put_array_len(out, n);
                for (i, (_, v)) in entries.iter().enumerate() {
                    encode_any_at(out, v, depth + 1).map_err(|e| e.at(format!("[{}]", i + 1)))?;
                }
            } else {
                mpack::put_map_len(out, entries.len());
                for (k, v) in &entries {
                    match k {
                        Value::Integer(i) => mpack::put_int(out, *i),
                        Value::String(s) => mpack::put_str(out, &s.as_bytes()),
                        other => {
                            return Err(TypeError::new(format!(
                                "{} (a document's keys are integers or strings)",
                                describe_key(other)
                            )))
                        }
                    }
                    encode_any_at(out, v, depth + 1).map_err(|e| e.at(format!("[{}]", key_label(k))))?;
                }
            }
        }
        other => {
            return Err(TypeError::new(format!(
                "a {} cannot be stored in a document",
                other.type_name()
            )))
        }
    }
    Ok(())
}

/// Reads one value written by [`encode_any`] (or any MessagePack without
/// extensions) into a Lua value: str and bin both become Lua strings,
/// arrays sequences, maps tables.
///
/// # Errors
///
/// [`TypeError`] when the data is malformed, nests too deep, or holds an
/// extension or a map key that is not a string or an integer.
pub fn decode_any(lua: &Lua, r: &mut Reader<'_>) -> Result<Value, TypeError> {
    decode_any_at(lua, r, 0)
}

fn decode_any_at(lua: &Lua, r: &mut Reader<'_>, depth: usize) -> Result<Value, TypeError> {
    if depth > mpack::MAX_DEPTH {
        return Err(rerr(ReadError::TooDeep));
    }
    Ok(match r.peek_kind().map_err(rerr)? {
        "nil" => {
            r.read_nil().map_err(rerr)?;
            Value::Nil
        }
        "boolean" => Value::Boolean(r.read_bool().map_err(rerr)?),
        "integer" | "float" => match r.read_num().map_err(rerr)? {
            Num::Int(i) => Value::Integer(i),
            Num::BigUint(u) => Value::Number(u as f64),
            Num::Float(f) => Value::Number(f),
        },
        "string" | "binary" => Value::String(lua.create_string(r.read_bytes().map_err(rerr)?).map_err(lerr)?),
        "array" => {
            let n = r.read_array_len().map_err(rerr)?;
            let t = lua.create_table_with_capacity(n.min(1024), 0).map_err(lerr)?;
            for i in 1..=n {
                let v = decode_any_at(lua, r, depth + 1).map_err(|e| e.at(format!("[{i}]")))?;
                t.raw_set(i, v).map_err(lerr)?;
            }
            Value::Table(t)
        }
        "map" => {
            let n = r.read_map_len().map_err(rerr)?;
            let t = lua.create_table_with_capacity(0, n.min(1024)).map_err(lerr)?;
            for _ in 0..n {
                let k = match r.peek_kind().map_err(rerr)? {
                    "integer" | "string" | "binary" => decode_any_at(lua, r, depth + 1)?,
                    other => return Err(TypeError::new(format!("a map key of kind {other}"))),
                };
                let label = key_label(&k);
                let v = decode_any_at(lua, r, depth + 1).map_err(|e| e.at(format!("[{label}]")))?;
                t.raw_set(k, v).map_err(lerr)?;
            }
            Value::Table(t)
        }
        other => return Err(TypeError::new(format!("a value of kind {other}"))),
    })
}
