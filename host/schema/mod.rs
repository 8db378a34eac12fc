//! The compiled RPC schema and the typed codec between Lua values and
//! MessagePack.
//!
//! `rpcdef.init` (Lua) reads `entitydef`, numbers the methods and hands them to
//! the host once; from then on every outgoing argument is checked and encoded
//! here while it is written, and every incoming argument is checked while it is
//! decoded. A value that does not match its declared type is an error naming
//! the argument and the path inside it; nothing half-checked is sent or
//! delivered.

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use mlua::{Table, Value};

/// A declared type of an argument or result.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    /// A signed or unsigned integer with inclusive bounds (`int8..int64`,
    /// `int48`, `uint8..uint64`; `uint64` is bounded by Lua's i64).
    Int {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
        /// The schema's name for it.
        name: &'static str,
    },
    /// `float`: sent as a 32-bit float.
    Float,
    /// `double`: sent as a 64-bit float.
    Double,
    /// `bool`.
    Bool,
    /// `string`: a Lua string, sent as MessagePack str.
    Str,
    /// `bytes`: a Lua string, sent as MessagePack bin.
    Bytes,
    /// `array<T>`: a Lua sequence.
    Array(Box<Ty>),
    /// `map<K,V>`: a Lua table.
    Map(Box<Ty>, Box<Ty>),
    /// A named struct: a Lua table with the struct's fields, sent as an array.
    Struct(Rc<StructDef>),
    /// `T?`: the value may be nil.
    Optional(Box<Ty>),
}

/// A named struct of the schema.
#[derive(Debug, PartialEq)]
pub struct StructDef {
    /// Its name in `entitydef`.
    pub name: String,
    /// Fields in declaration order (the wire order).
    pub fields: Vec<(String, Ty)>,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Int { name, .. } => f.write_str(name),
            Ty::Float => f.write_str("float"),
            Ty::Double => f.write_str("double"),
            Ty::Bool => f.write_str("bool"),
            Ty::Str => f.write_str("string"),
            Ty::Bytes => f.write_str("bytes"),
            Ty::Array(t) => write!(f, "array<{t}>"),
            Ty::Map(k, v) => write!(f, "map<{k},{v}>"),
            Ty::Struct(s) => f.write_str(&s.name),
            Ty::Optional(t) => write!(f, "{t}?"),
        }
    }
}

/// An error in the schema itself (raised by `rpcdef.init`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

fn int(name: &'static str, min: i64, max: i64) -> Ty {
    Ty::Int { min, max, name }
}

/// Parses a type expression such as `int48`, `array<int48>`,
/// `map<string,array<Item>>` or `Item?`; struct names are looked up in
/// `structs`.
///
/// # Errors
///
/// [`SchemaError`] naming the unknown type or the malformed expression.
pub fn parse_type(s: &str, structs: &HashMap<String, Rc<StructDef>>) -> Result<Ty, SchemaError> {
    let s = s.trim();
    if let Some(inner) = s.strip_suffix('?') {
        return Ok(Ty::Optional(Box::new(parse_type(inner, structs)?)));
    }
    if let Some(rest) = s.strip_prefix("array<").and_then(|r| r.strip_suffix('>')) {
        return Ok(Ty::Array(Box::new(parse_type(rest, structs)?)));
    }
    if let Some(rest) = s.strip_prefix("map<").and_then(|r| r.strip_suffix('>')) {
        // Split at the comma that is not nested inside <...>.
        let mut depth = 0;
        for (i, c) in rest.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                ',' if depth == 0 => {
                    let k = parse_type(&rest[..i], structs)?;
                    let v = parse_type(&rest[i + 1..], structs)?;
                    return Ok(Ty::Map(Box::new(k), Box::new(v)));
                }
                _ => {}
            }
        }
        return Err(SchemaError(format!("map type needs two parameters: {s}")));
    }
    Ok(match s {
        "int8" => int("int8", i8::MIN as i64, i8::MAX as i64),
        "int16" => int("int16", i16::MIN as i64, i16::MAX as i64),
        "int32" => int("int32", i32::MIN as i64, i32::MAX as i64),
        "int48" => int("int48", -(1i64 << 47), (1i64 << 47) - 1),
        "int64" => int("int64", i64::MIN, i64::MAX),
        "uint8" => int("uint8", 0, u8::MAX as i64),
        "uint16" => int("uint16", 0, u16::MAX as i64),
        "uint32" => int("uint32", 0, u32::MAX as i64),
        "uint64" => int("uint64", 0, i64::MAX),
        "float" => Ty::Float,
        "double" => Ty::Double,
        "bool" => Ty::Bool,
        "string" => Ty::Str,
        "bytes" => Ty::Bytes,
        other => match structs.get(other) {
            Some(d) => Ty::Struct(d.clone()),
            None => return Err(SchemaError(format!("unknown type '{other}'"))),
        },
    })
}

/// One method of the schema.
#[derive(Debug)]
pub struct Method {
    /// The id `rpcdef` derived for it.
    pub id: u32,
    /// `Class.method` (or `Iface.method` for static interfaces).
    pub name: String,
    /// The server type id that serves it; 0 when every type does (static
    /// server interfaces such as System).
    pub server_type: u32,
    /// Named, typed arguments.
    pub args: Vec<(String, Ty)>,
    /// Typed results; `None` for a one-way send.
    pub results: Option<Vec<(String, Ty)>>,
    /// Exposed: a server method clients may call (`client = true`).
    pub client: bool,
    /// A push: a method of an entity class's `Client` section, which clients
    /// implement (always one-way). Its `server_type` is 0.
    pub push: bool,
    /// The client id (`rpcdef`'s `m.cid`) of an exposed method or a push: its
    /// position, from 1, among the sorted keys of the client-visible methods
    /// only; 0 for every other method.
    pub cid: u32,
}

/// Every method of the schema by id, with the digest it was derived under.
#[derive(Debug, Default)]
pub struct Schema {
    /// `rpcdef.Digi`.
    pub digest: u32,
    /// `rpcdef.ClientDigi`: the digest a client's verify must carry.
    pub client_digest: u32,
    methods: Vec<Option<Rc<Method>>>,
    /// Client-visible methods by client id (index 0 unused).
    clients: Vec<Option<Rc<Method>>>,
    /// Named structs, for type expressions checked from Lua (`rpctype.check`).
    pub structs: HashMap<String, Rc<StructDef>>,
}

impl Schema {
    /// An empty schema with the given digest.
    pub fn new(digest: u32) -> Self {
        Schema {
            digest,
            client_digest: 0,
            methods: Vec::new(),
            clients: Vec::new(),
            structs: HashMap::new(),
        }
    }

    /// Adds a method.
    ///
    /// # Errors
    ///
    /// When its id is 0 or already taken; when it is both exposed and a
    /// push, a push with results, a client-visible method without a client
    /// id, another method with a client id, or its client id is taken.
    pub fn add(&mut self, m: Method) -> Result<(), SchemaError> {
        let id = m.id as usize;
        if id == 0 || id > 1_000_000 {
            return Err(SchemaError(format!("method {} has invalid id {}", m.name, m.id)));
        }
        if self.methods.len() <= id {
            self.methods.resize(id + 1, None);
        }
        if let Some(old) = &self.methods[id] {
            return Err(SchemaError(format!(
                "methods {} and {} share id {id}",
                old.name, m.name
            )));
        }
        if m.client && m.push {
            return Err(SchemaError(format!(
                "method {} is both exposed to clients and a push",
                m.name
            )));
        }
        if m.push && m.results.is_some() {
            return Err(SchemaError(format!("push {} has results: pushes are one-way", m.name)));
        }
        let visible = m.client || m.push;
        let cid = m.cid as usize;
        if visible && cid == 0 {
            return Err(SchemaError(format!(
                "client-visible method {} has no client id",
                m.name
            )));
        }
        if !visible && cid != 0 {
            return Err(SchemaError(format!(
                "method {} has client id {cid} but is not client-visible",
                m.name
            )));
        }
        if cid > 1_000_000 {
            return Err(SchemaError(format!("method {} has invalid client id {cid}", m.name)));
        }
        let m = Rc::new(m);
        if visible {
            if self.clients.len() <= cid {
                self.clients.resize(cid + 1, None);
            }
            if let Some(old) = &self.clients[cid] {
                return Err(SchemaError(format!(
                    "methods {} and {} share client id {cid}",
                    old.name, m.name
                )));
            }
            self.clients[cid] = Some(m.clone());
        }
        self.methods[id] = Some(m);
        Ok(())
    }

    /// Checks that the client ids are dense: 1..n with none missing.
    ///
    /// # Errors
    ///
    /// The first client id no method has.
    pub fn check_client_ids(&self) -> Result<(), SchemaError> {
        match self.clients.iter().enumerate().skip(1).find(|(_, m)| m.is_none()) {
            Some((cid, _)) => Err(SchemaError(format!(
                "no method has client id {cid} (client ids must be 1..{})",
                self.clients.len() - 1
            ))),
            None => Ok(()),
        }
    }

    /// The method with this id.
    pub fn method(&self, id: u32) -> Option<&Rc<Method>> {
        self.methods.get(id as usize).and_then(|m| m.as_ref())
    }

    /// The client-visible method (exposed or push) with this client id.
    pub fn by_cid(&self, cid: u32) -> Option<&Rc<Method>> {
        self.clients.get(cid as usize).and_then(|m| m.as_ref())
    }

    /// How many methods are client-visible (their client ids are 1..=n).
    pub fn client_count(&self) -> usize {
        self.clients.len().saturating_sub(1)
    }

    /// Builds a schema from the description `rpcdef.init` hands over: a list
    /// of `{id=, name=, stype=, args={{name,type}...}, results=...|nil,
    /// client=bool|nil, push=bool|nil, cid=n|nil}` and a map of struct name
    /// to its field list. Its `client_digest` is 0: the caller sets it.
    ///
    /// # Errors
    ///
    /// [`SchemaError`] naming the method or struct at fault.
    pub fn from_lua(digest: u32, methods: &Table, structs: Option<&Table>) -> Result<Schema, SchemaError> {
        let lerr = |e: mlua::Error| SchemaError(e.to_string());
        // Structs first; they may refer to each other (resolved in dependency order).
        let mut raw: HashMap<String, Vec<(String, String)>> = HashMap::new();
        if let Some(st) = structs {
            for pair in st.pairs::<String, Table>() {
                let (name, fields) = pair.map_err(lerr)?;
                raw.insert(
                    name.clone(),
                    field_list(&fields).map_err(|e| SchemaError(format!("struct {name}: {e}")))?,
                );
            }
        }
        let mut done: HashMap<String, Rc<StructDef>> = HashMap::new();
        let mut names: Vec<&String> = raw.keys().collect();
        names.sort();
        for name in names {
            resolve_struct(name, &raw, &mut done, &mut Vec::new())?;
        }
        let mut schema = Schema::new(digest);
        schema.structs = done.clone();
        for m in methods.sequence_values::<Table>() {
            let m = m.map_err(lerr)?;
            let id: u32 = m.get("id").map_err(lerr)?;
            let name: String = m.get("name").map_err(lerr)?;
            let server_type: u32 = m.get("stype").map_err(lerr)?;
            let parse_list = |key: &str| -> Result<Option<Vec<(String, Ty)>>, SchemaError> {
                let Some(t) = m.get::<Option<Table>>(key).map_err(lerr)? else {
                    return Ok(None);
                };
                let list = field_list(&t).map_err(|e| SchemaError(format!("{name} {key}: {e}")))?;
                list.into_iter()
                    .map(|(n, ty)| {
                        parse_type(&ty, &done)
                            .map(|t| (n.clone(), t))
                            .map_err(|e| SchemaError(format!("{name} {key} '{n}': {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            };
            let args = parse_list("args")?.unwrap_or_default();
            let results = parse_list("results")?;
            let client = m.get::<Option<bool>>("client").map_err(lerr)?.unwrap_or(false);
            let push = m.get::<Option<bool>>("push").map_err(lerr)?.unwrap_or(false);
            let cid = m.get::<Option<u32>>("cid").map_err(lerr)?.unwrap_or(0);
            schema.add(Method {
                id,
                name,
                server_type,
                args,
                results,
                client,
                push,
                cid,
            })?;
        }
        schema.check_client_ids()?;
        Ok(schema)
    }
}

/// Reads `{{"name","type"}, ...}` (or `{"type", ...}`, names then `#i`).
pub(crate) fn field_list(t: &Table) -> mlua::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, v) in t.sequence_values::<Value>().enumerate() {
        match v? {
            Value::Table(pair) => out.push((pair.get(1)?, pair.get(2)?)),
            Value::String(s) => out.push((format!("#{}", i + 1), s.to_str()?.to_string())),
            other => {
                return Err(mlua::Error::runtime(format!(
                    "field {} must be {{name, type}}, got {}",
                    i + 1,
                    other.type_name()
                )))
            }
        }
    }
    Ok(out)
}

fn resolve_struct(
    name: &str,
    raw: &HashMap<String, Vec<(String, String)>>,
    done: &mut HashMap<String, Rc<StructDef>>,
    stack: &mut Vec<String>,
) -> Result<(), SchemaError> {
    if done.contains_key(name) {
        return Ok(());
    }
    if stack.iter().any(|s| s == name) {
        return Err(SchemaError(format!(
            "struct {name} contains itself ({})",
            stack.join(" -> ")
        )));
    }
    stack.push(name.to_string());
    let fields = &raw[name];
    for (_, ty) in fields {
        // Any struct name mentioned inside the type expression must be resolved first.
        for word in ty.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if raw.contains_key(word) {
                resolve_struct(word, raw, done, stack)?;
            }
        }
    }
    let mut parsed = Vec::new();
    for (fname, ty) in fields {
        let t = parse_type(ty, done).map_err(|e| SchemaError(format!("struct {name} field '{fname}': {e}")))?;
        parsed.push((fname.clone(), t));
    }
    stack.pop();
    done.insert(
        name.to_string(),
        Rc::new(StructDef {
            name: name.to_string(),
            fields: parsed,
        }),
    );
    Ok(())
}

pub mod annotate;
mod value;

pub(crate) use value::Shown;
pub use value::{decode, decode_any, encode, encode_any, encode_list, ArgList, TypeError};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::mpack::Reader;
    use bytes::BytesMut;
    use mlua::Lua;

    fn no_structs() -> HashMap<String, Rc<StructDef>> {
        HashMap::new()
    }

    #[test]
    fn parses_nested_types() {
        let t = parse_type("map<string,array<int48>>", &no_structs()).unwrap();
        assert_eq!(t.to_string(), "map<string,array<int48>>");
        assert!(parse_type("int47", &no_structs()).is_err());
        assert!(parse_type("map<int32>", &no_structs()).is_err());
        assert_eq!(parse_type("string?", &no_structs()).unwrap().to_string(), "string?");
    }

    #[test]
    fn int48_bounds() {
        let lua = Lua::new();
        let ty = parse_type("int48", &no_structs()).unwrap();
        let mut out = BytesMut::new();
        assert!(encode(&mut out, &ty, &Value::Integer((1 << 47) - 1)).is_ok());
        assert!(encode(&mut out, &ty, &Value::Integer(-(1 << 47))).is_ok());
        let e = encode(&mut out, &ty, &Value::Integer(1 << 47)).unwrap_err();
        assert!(e.message.contains("out of range for int48"), "{e}");
        assert!(encode(&mut out, &ty, &Value::Integer(-(1 << 47) - 1)).is_err());
        assert!(encode(&mut out, &ty, &Value::Number(1.5)).is_err());
        assert!(encode(&mut out, &ty, &Value::Number(3.0)).is_ok());
        let s = lua.create_string("7").unwrap();
        assert!(encode(&mut out, &ty, &Value::String(s)).is_err());
    }

    #[test]
    fn struct_round_trip_and_decode_checks() {
        let lua = Lua::new();
        let mut structs = HashMap::new();
        structs.insert(
            "P".to_string(),
            Rc::new(StructDef {
                name: "P".into(),
                fields: vec![
                    ("id".into(), parse_type("uint8", &no_structs()).unwrap()),
                    ("name".into(), Ty::Str),
                ],
            }),
        );
        let ty = parse_type("array<P>", &structs).unwrap();
        let v: Value = lua.load("{{id=1,name='a'},{id=200,name='b'}}").eval().unwrap();
        let mut out = BytesMut::new();
        encode(&mut out, &ty, &v).unwrap();
        let back = decode(&lua, &ty, &mut Reader::new(&out)).unwrap();
        let t = back.as_table().unwrap();
        let second: Table = t.get(2).unwrap();
        assert_eq!(second.get::<i64>("id").unwrap(), 200);
        // The same bytes read as int8 ids must be refused (200 > 127).
        let mut structs8 = HashMap::new();
        structs8.insert(
            "P".to_string(),
            Rc::new(StructDef {
                name: "P".into(),
                fields: vec![
                    ("id".into(), parse_type("int8", &no_structs()).unwrap()),
                    ("name".into(), Ty::Str),
                ],
            }),
        );
        let ty8 = parse_type("array<P>", &structs8).unwrap();
        let e = decode(&lua, &ty8, &mut Reader::new(&out)).unwrap_err();
        assert_eq!(e.to_string(), "at [2].id: 200 is out of range for int8");
        let bad: Value = lua.load("{{id=1}}").eval().unwrap();
        let e = encode(&mut BytesMut::new(), &ty, &bad).unwrap_err();
        assert_eq!(e.to_string(), "at [1]: missing field 'name' of P");
        let bad: Value = lua.load("{{id=1, name='a', nmae='b'}}").eval().unwrap();
        let e = encode(&mut BytesMut::new(), &ty, &bad).unwrap_err();
        assert_eq!(e.to_string(), "at [1]: P has no field 'nmae'");
        let bad: Value = lua.load("{{id=1, name='a', [1]=2}}").eval().unwrap();
        let e = encode(&mut BytesMut::new(), &ty, &bad).unwrap_err();
        assert_eq!(e.to_string(), "at [1]: P has named fields only, got key 1");
    }

    #[test]
    fn arrays_are_tables_with_keys_1_to_n_only() {
        let lua = Lua::new();
        let ty = parse_type("array<int32?>", &no_structs()).unwrap();
        let enc = |src: &str| {
            let v: Value = lua.load(src).eval().unwrap();
            let mut out = BytesMut::new();
            encode(&mut out, &ty, &v).map(|()| out.len()).map_err(|e| e.to_string())
        };
        assert_eq!(enc("{}"), Ok(1));
        assert_eq!(enc("{1, nil, 3}"), Ok(4));
        let v: Value = lua
            .load("local t = {} for i = 5, 1, -1 do t[i] = i end return t")
            .eval()
            .unwrap();
        assert!(encode(&mut BytesMut::new(), &ty, &v).is_ok(), "keys 1..n in any order");
        assert_eq!(
            enc("{x = 1}"),
            Err("expected array<int32?>, got a table with key 'x'".into())
        );
        let e = enc("{1, 2, y = 3}").unwrap_err();
        assert!(e.ends_with("key 'y'"), "{e}");
        let e = enc("{1, 2, [2.5] = 3}").unwrap_err();
        assert!(e.ends_with("key 2.5"), "{e}");
        let e = enc("{[true] = 1}").unwrap_err();
        assert!(e.ends_with("a boolean key"), "{e}");
    }

    fn method(id: u32, name: &str, client: bool, push: bool, cid: u32, results: Option<Vec<(String, Ty)>>) -> Method {
        Method {
            id,
            name: name.into(),
            server_type: if push { 0 } else { 4 },
            args: vec![("rid".into(), Ty::Bool)],
            results,
            client,
            push,
            cid,
        }
    }

    #[test]
    fn client_methods_are_found_by_client_id() {
        let mut s = Schema::new(7);
        s.add(method(1, "Player.hall_addFriend", true, false, 1, Some(vec![])))
            .unwrap();
        s.add(method(2, "Player.hall_kick", false, false, 0, None)).unwrap();
        s.add(method(3, "Player.onNotice", false, true, 2, None)).unwrap();
        s.check_client_ids().unwrap();
        assert_eq!(s.client_count(), 2);
        assert_eq!(s.by_cid(1).unwrap().name, "Player.hall_addFriend");
        let push = s.by_cid(2).unwrap();
        assert!(push.push && !push.client && push.id == 3);
        // the same method by id and by client id
        assert!(Rc::ptr_eq(push, s.method(3).unwrap()));
        assert!(s.by_cid(0).is_none());
        assert!(s.by_cid(3).is_none());
        assert!(s.method(2).unwrap().cid == 0);
        // no client-visible method at all
        let mut none = Schema::new(1);
        none.add(method(1, "A.x", false, false, 0, None)).unwrap();
        none.check_client_ids().unwrap();
        assert_eq!(none.client_count(), 0);
        assert!(none.by_cid(1).is_none());
    }

    #[test]
    fn client_ids_are_checked() {
        let err = |ms: Vec<Method>| {
            let mut s = Schema::new(1);
            for m in ms {
                s.add(m)?;
            }
            s.check_client_ids()
        };
        let e = err(vec![
            method(1, "P.a", true, false, 1, None),
            method(2, "P.b", true, false, 1, None),
        ])
        .unwrap_err();
        assert_eq!(e.to_string(), "methods P.a and P.b share client id 1");
        let e = err(vec![
            method(1, "P.a", true, false, 1, None),
            method(2, "P.b", false, true, 3, None),
        ])
        .unwrap_err();
        assert_eq!(e.to_string(), "no method has client id 2 (client ids must be 1..3)");
        let e = err(vec![method(1, "P.onX", false, true, 1, Some(vec![]))]).unwrap_err();
        assert_eq!(e.to_string(), "push P.onX has results: pushes are one-way");
        let e = err(vec![method(1, "P.a", true, false, 0, None)]).unwrap_err();
        assert_eq!(e.to_string(), "client-visible method P.a has no client id");
        let e = err(vec![method(1, "P.a", false, false, 1, None)]).unwrap_err();
        assert_eq!(e.to_string(), "method P.a has client id 1 but is not client-visible");
        let e = err(vec![method(1, "P.a", true, true, 1, None)]).unwrap_err();
        assert_eq!(e.to_string(), "method P.a is both exposed to clients and a push");
    }

    #[test]
    fn from_lua_reads_client_fields_and_checks_them() {
        let lua = Lua::new();
        let build = |src: &str| {
            let methods: Table = lua.load(src).eval().unwrap();
            Schema::from_lua(9, &methods, None)
        };
        let s = build(
            "return {
                {id = 1, name = 'P.hall_get', stype = 4, args = {}, results = {{'n', 'int32'}}, client = true, push = false, cid = 1},
                {id = 2, name = 'P.hall_kick', stype = 4, args = {{'why', 'string'}}, client = false, push = false, cid = 0},
                {id = 3, name = 'P.onNotice', stype = 0, args = {{'text', 'string'}}, client = false, push = true, cid = 2},
                {id = 4, name = 'System.ping', stype = 0, args = {{'t', 'int64'}}, results = {{'t', 'int64'}}},
            }",
        )
        .unwrap();
        assert_eq!(s.client_digest, 0);
        assert_eq!(s.client_count(), 2);
        assert_eq!(s.by_cid(1).unwrap().id, 1);
        assert!(s.by_cid(1).unwrap().client);
        assert_eq!(s.by_cid(2).unwrap().name, "P.onNotice");
        let ping = s.method(4).unwrap();
        assert!(!ping.client && !ping.push && ping.cid == 0);
        // a gap in the client ids
        let e = build(
            "return {
                {id = 1, name = 'P.a', stype = 4, args = {}, client = true, cid = 2},
            }",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "no method has client id 1 (client ids must be 1..2)");
        let e = build(
            "return {
                {id = 1, name = 'P.onX', stype = 0, args = {}, results = {}, push = true, cid = 1},
            }",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "push P.onX has results: pushes are one-way");
    }
}
