//! Typed calls for Rust clients: the client-visible part of the schema
//! (loaded from `entitydef.lua`), values checked and encoded by their
//! declared types, results and pushes decoded by them.
//!
//! ```no_run
//! # async fn demo(c: &luahost::client::Client) -> Result<(), String> {
//! use luahost::client::typed::{ClientSchema, Val};
//! let schema = ClientSchema::load(std::path::Path::new("scripts/entitydef.lua"))?;
//! let friends = c.call_typed(&schema, "hall_getFriends", &[]).await.map_err(|e| e.to_string())?;
//! let ok = c.call_typed(&schema, "hall_addFriend", &[Val::Int(1004)]).await.map_err(|e| e.to_string())?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use bytes::BytesMut;

use crate::codec::mpack::{self, Num, Reader};
use crate::schema::{parse_type, StructDef, Ty};

/// A value of a schema type, as a Rust client holds it.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// nil (an absent optional).
    Nil,
    /// `bool`.
    Bool(bool),
    /// Any integer type.
    Int(i64),
    /// `float`, `double`.
    Float(f64),
    /// `string`.
    Str(String),
    /// `bytes`.
    Bytes(Vec<u8>),
    /// `array<T>`; also a struct given by position.
    Array(Vec<Val>),
    /// `map<K,V>`.
    Map(Vec<(Val, Val)>),
    /// A struct by field name (decoded structs come back this way).
    Struct(Vec<(String, Val)>),
}

impl Val {
    /// The field `name` of a struct value.
    pub fn field(&self, name: &str) -> Option<&Val> {
        match self {
            Val::Struct(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// One client-visible method.
#[derive(Debug, Clone)]
pub struct ClientMethod {
    /// `Class.method`.
    pub name: String,
    /// `method`, without its class.
    pub method: String,
    /// Its client id.
    pub cid: u32,
    /// Arguments by declared type.
    pub args: Vec<(String, Ty)>,
    /// Results; `None` for a one-way method or a push.
    pub results: Option<Vec<(String, Ty)>>,
    /// A push (the client implements it).
    pub push: bool,
}

/// The part of a schema a client sees.
#[derive(Debug, Clone)]
pub struct ClientSchema {
    /// `rpcdef.ClientDigi`: what the client sends at verify.
    pub client_digi: u32,
    by_name: HashMap<String, Rc<ClientMethod>>,
    by_cid: HashMap<u32, Rc<ClientMethod>>,
}

impl ClientSchema {
    /// Loads the schema as a node would (`rpcdef.init` on the file).
    ///
    /// # Errors
    ///
    /// The schema's error, or a type it cannot parse.
    pub fn load(entitydef: &Path) -> Result<ClientSchema, String> {
        ClientSchema::from_desc(&crate::describe_entitydef(entitydef)?)
    }

    /// The client view of a schema already described
    /// ([`crate::describe_entitydef`]).
    ///
    /// # Errors
    ///
    /// A type it cannot parse.
    pub fn from_desc(desc: &crate::schema::annotate::SchemaDesc) -> Result<ClientSchema, String> {
        let mut structs: HashMap<String, Rc<StructDef>> = HashMap::new();
        // structs may refer to each other: resolve until nothing changes
        let mut left = desc.structs.clone();
        while !left.is_empty() {
            let before = left.len();
            left.retain(|(name, fields)| {
                let parsed: Result<Vec<_>, _> = fields
                    .iter()
                    .map(|(n, t)| parse_type(t, &structs).map(|ty| (n.clone(), ty)))
                    .collect();
                match parsed {
                    Ok(fields) => {
                        structs.insert(
                            name.clone(),
                            Rc::new(StructDef {
                                name: name.clone(),
                                fields,
                            }),
                        );
                        false
                    }
                    Err(_) => true,
                }
            });
            if left.len() == before {
                return Err(format!(
                    "structs that cannot be resolved: {:?}",
                    left.iter().map(|s| &s.0).collect::<Vec<_>>()
                ));
            }
        }
        let list = |l: &[(String, String)]| -> Result<Vec<(String, Ty)>, String> {
            l.iter()
                .map(|(n, t)| {
                    parse_type(t, &structs)
                        .map(|ty| (n.clone(), ty))
                        .map_err(|e| e.to_string())
                })
                .collect()
        };
        let mut s = ClientSchema {
            client_digi: desc.client_digest,
            by_name: HashMap::new(),
            by_cid: HashMap::new(),
        };
        for m in &desc.methods {
            if m.cid == 0 {
                continue;
            }
            let push = !m.client;
            let cm = Rc::new(ClientMethod {
                name: format!("{}.{}", m.class, m.name),
                method: m.name.clone(),
                cid: m.cid,
                args: list(&m.args)?,
                results: m.results.as_deref().map(list).transpose()?,
                push,
            });
            // by bare name unless two classes share it; always by Class.name
            s.by_name.insert(cm.name.clone(), cm.clone());
            if s.by_name.contains_key(&m.name) {
                s.by_name.remove(&m.name);
            } else {
                s.by_name.insert(m.name.clone(), cm.clone());
            }
            s.by_cid.insert(m.cid, cm);
        }
        Ok(s)
    }

    /// A method by name (`hall_addFriend` or `Player.hall_addFriend`).
    pub fn method(&self, name: &str) -> Option<&ClientMethod> {
        self.by_name.get(name).map(|m| &**m)
    }

    /// A method by client id.
    pub fn by_cid(&self, cid: u32) -> Option<&ClientMethod> {
        self.by_cid.get(&cid).map(|m| &**m)
    }

    /// [`ClientSchema::method`], shared.
    pub fn get(&self, name: &str) -> Option<Rc<ClientMethod>> {
        self.by_name.get(name).cloned()
    }

    /// [`ClientSchema::by_cid`], shared.
    pub fn get_cid(&self, cid: u32) -> Option<Rc<ClientMethod>> {
        self.by_cid.get(&cid).cloned()
    }

    /// Encodes a call or send of `name`: its client id, argument count and
    /// bytes.
    ///
    /// # Errors
    ///
    /// No such method for clients, a push, or an argument of the wrong
    /// type (named).
    pub fn encode(&self, name: &str, args: &[Val]) -> Result<(u32, usize, BytesMut), String> {
        let m = self.method(name).ok_or_else(|| format!("no client method {name}"))?;
        if m.push {
            return Err(format!("{} is a push: the server calls it", m.name));
        }
        if args.len() != m.args.len() {
            return Err(format!(
                "{}: {} arguments given, {} declared",
                m.name,
                args.len(),
                m.args.len()
            ));
        }
        let mut out = BytesMut::new();
        for (i, ((an, ty), v)) in m.args.iter().zip(args).enumerate() {
            encode(&mut out, ty, v).map_err(|e| format!("bad argument #{} '{an}' to {}: {e}", i + 1, m.name))?;
        }
        Ok((m.cid, args.len(), out))
    }

    /// Decodes `n` values of types `tys` from `bytes`.
    ///
    /// # Errors
    ///
    /// A count or a value that does not match.
    pub fn decode(tys: &[(String, Ty)], n: usize, bytes: &[u8]) -> Result<Vec<Val>, String> {
        if n != tys.len() {
            return Err(format!("{n} values, {} declared", tys.len()));
        }
        let mut r = Reader::new(bytes);
        let vals = tys
            .iter()
            .map(|(name, ty)| decode(&mut r, ty).map_err(|e| format!("'{name}': {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        r.finish().map_err(|e| e.to_string())?;
        Ok(vals)
    }

    /// A push's method name and arguments.
    ///
    /// # Errors
    ///
    /// An unknown client id or arguments that do not match.
    pub fn decode_push(&self, cid: u32, nargs: usize, args: &[u8]) -> Result<(String, Vec<Val>), String> {
        let m = self
            .by_cid(cid)
            .ok_or_else(|| format!("no push with client id {cid}"))?;
        Ok((m.name.clone(), ClientSchema::decode(&m.args, nargs, args)?))
    }
}

fn encode(out: &mut BytesMut, ty: &Ty, v: &Val) -> Result<(), String> {
    match (ty, v) {
        (Ty::Optional(_), Val::Nil) => mpack::put_nil(out),
        (Ty::Optional(t), v) => encode(out, t, v)?,
        (Ty::Int { min, max, name }, Val::Int(i)) => {
            if i < min || i > max {
                return Err(format!("{i} is out of range for {name}"));
            }
            mpack::put_int(out, *i);
        }
        (Ty::Float, Val::Float(f)) => mpack::put_f32(out, *f as f32),
        (Ty::Double, Val::Float(f)) => mpack::put_f64(out, *f),
        (Ty::Float, Val::Int(i)) => mpack::put_f32(out, *i as f32),
        (Ty::Double, Val::Int(i)) => mpack::put_f64(out, *i as f64),
        (Ty::Bool, Val::Bool(b)) => mpack::put_bool(out, *b),
        (Ty::Str, Val::Str(s)) => mpack::put_str(out, s.as_bytes()),
        (Ty::Bytes, Val::Bytes(b)) => mpack::put_bin(out, b),
        (Ty::Array(t), Val::Array(items)) => {
            mpack::put_array_len(out, items.len());
            for (i, item) in items.iter().enumerate() {
                encode(out, t, item).map_err(|e| format!("[{}]: {e}", i + 1))?;
            }
        }
        (Ty::Map(k, vt), Val::Map(entries)) => {
            mpack::put_map_len(out, entries.len());
            for (key, val) in entries {
                encode(out, k, key)?;
                encode(out, vt, val)?;
            }
        }
        (Ty::Struct(s), Val::Struct(fields)) => {
            mpack::put_array_len(out, s.fields.len());
            for (name, t) in &s.fields {
                let fv = fields
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v)
                    .unwrap_or(&Val::Nil);
                encode(out, t, fv).map_err(|e| format!("{}.{name}: {e}", s.name))?;
            }
        }
        (Ty::Struct(s), Val::Array(items)) if items.len() == s.fields.len() => {
            mpack::put_array_len(out, items.len());
            for ((name, t), fv) in s.fields.iter().zip(items) {
                encode(out, t, fv).map_err(|e| format!("{}.{name}: {e}", s.name))?;
            }
        }
        (ty, v) => return Err(format!("expected {ty}, got {}", kind(v))),
    }
    Ok(())
}

fn kind(v: &Val) -> &'static str {
    match v {
        Val::Nil => "nil",
        Val::Bool(_) => "bool",
        Val::Int(_) => "integer",
        Val::Float(_) => "float",
        Val::Str(_) => "string",
        Val::Bytes(_) => "bytes",
        Val::Array(_) => "array",
        Val::Map(_) => "map",
        Val::Struct(_) => "struct",
    }
}

fn decode(r: &mut Reader<'_>, ty: &Ty) -> Result<Val, String> {
    let e = |e: mpack::ReadError| e.to_string();
    Ok(match ty {
        Ty::Optional(t) => {
            if r.peek_nil() {
                r.read_nil().map_err(e)?;
                Val::Nil
            } else {
                decode(r, t)?
            }
        }
        Ty::Int { .. } => match r.read_num().map_err(e)? {
            Num::Int(i) => Val::Int(i),
            Num::BigUint(u) => return Err(format!("{u} does not fit in an i64")),
            Num::Float(f) => return Err(format!("expected an integer, got {f}")),
        },
        Ty::Float | Ty::Double => match r.read_num().map_err(e)? {
            Num::Int(i) => Val::Float(i as f64),
            Num::BigUint(u) => Val::Float(u as f64),
            Num::Float(f) => Val::Float(f),
        },
        Ty::Bool => Val::Bool(r.read_bool().map_err(e)?),
        Ty::Str => Val::Str(String::from_utf8_lossy(r.read_bytes().map_err(e)?).into_owned()),
        Ty::Bytes => Val::Bytes(r.read_bytes().map_err(e)?.to_vec()),
        Ty::Array(t) => {
            let n = r.read_array_len().map_err(e)?;
            let mut v = Vec::with_capacity(n.min(r.remaining()));
            for _ in 0..n {
                v.push(decode(r, t)?);
            }
            Val::Array(v)
        }
        Ty::Map(k, vt) => {
            let n = r.read_map_len().map_err(e)?;
            let mut v = Vec::with_capacity(n.min(r.remaining()));
            for _ in 0..n {
                let key = decode(r, k)?;
                v.push((key, decode(r, vt)?));
            }
            Val::Map(v)
        }
        Ty::Struct(s) => {
            let n = r.read_array_len().map_err(e)?;
            if n != s.fields.len() {
                return Err(format!("{} has {} fields, got {n}", s.name, s.fields.len()));
            }
            let mut fields = Vec::with_capacity(n);
            for (name, t) in &s.fields {
                fields.push((name.clone(), decode(r, t)?));
            }
            Val::Struct(fields)
        }
    })
}

impl super::Client {
    /// Calls client method `name` with typed arguments; returns the typed
    /// results. (Not `Send`: the schema is shared by reference.)
    ///
    /// # Errors
    ///
    /// A [`super::ClientError::Protocol`] for a local encoding error (nothing
    /// sent), or what [`super::Client::call_raw`] returns.
    pub async fn call_typed(
        &self,
        schema: &ClientSchema,
        name: &str,
        args: &[Val],
    ) -> Result<Vec<Val>, super::ClientError> {
        let (cid, nargs, bytes) = schema.encode(name, args).map_err(super::ClientError::Protocol)?;
        let results = schema
            .method(name)
            .and_then(|m| m.results.clone())
            .ok_or_else(|| super::ClientError::Protocol(format!("{name} is one-way: use send_typed")))?;
        let (n, vals) = self.call_raw(cid, nargs, &bytes).await?;
        ClientSchema::decode(&results, n, &vals)
            .map_err(|e| super::ClientError::Protocol(format!("results of {name}: {e}")))
    }

    /// Sends one-way client method `name` with typed arguments.
    ///
    /// # Errors
    ///
    /// As [`super::Client::call_typed`].
    pub fn send_typed(&self, schema: &ClientSchema, name: &str, args: &[Val]) -> Result<(), super::ClientError> {
        let (cid, nargs, bytes) = schema.encode(name, args).map_err(super::ClientError::Protocol)?;
        self.send_raw(cid, nargs, &bytes)
    }
}
