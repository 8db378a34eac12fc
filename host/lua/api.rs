//! The host module every node's Lua sees as `require "luahost.core"`.
//!
//! It is the narrow waist between lualib and the runtime: lualib builds the
//! programming model of seed 000 (base, rpcdef, rpcstub, router, rpcco, ...)
//! on top of these functions. Errors a script can cause (a wrong argument
//! type, an unknown node) come back as `nil, message` so that lualib can raise
//! them at the caller's line with `error(msg, 2)`.

use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, Lua, Table, Value, Variadic};
use tracing::{debug, error, info, warn};

use crate::discovery::config::{ClusterConfig, Setting, SettingKey};
use crate::lua::{DbOp, LuaHost};
use crate::rpc::ring::{self, Key};
use crate::schema::Schema;

fn dead() -> mlua::Error {
    mlua::Error::runtime("the node is shutting down")
}

fn key_of(v: &Value) -> mlua::Result<Key<'static>> {
    // Strings are hashed here and passed on as their hash so the key has no borrow.
    match v {
        Value::Integer(i) => Ok(Key::Int(*i)),
        Value::Number(n) if n.fract() == 0.0 => Ok(Key::Int(*n as i64)),
        Value::String(s) => Ok(Key::Int(ring::fnv1a64(&s.as_bytes()) as i64)),
        other => Err(mlua::Error::runtime(format!(
            "routing key must be an integer or a string, got {}",
            other.type_name()
        ))),
    }
}

/// A document key from Lua: an integer or a string.
fn db_key(v: &Value) -> mlua::Result<crate::store::Key> {
    match v {
        Value::Integer(i) => Ok(crate::store::Key::Int(*i)),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Ok(crate::store::Key::Int(*n as i64)),
        Value::String(s) => Ok(crate::store::Key::Str(s.to_str()?.to_string())),
        other => Err(mlua::Error::runtime(format!(
            "dbproxy: a key must be an integer or a string, got {}",
            other.type_name()
        ))),
    }
}

/// What a write expects from Lua: nil (anything), false (absent), or the
/// version loaded.
fn db_expect(v: &Value) -> mlua::Result<crate::store::Expect> {
    match v {
        Value::Nil => Ok(crate::store::Expect::Any),
        Value::Boolean(false) => Ok(crate::store::Expect::Absent),
        Value::Integer(i) if *i > 0 => Ok(crate::store::Expect::Version(*i as u64)),
        other => Err(mlua::Error::runtime(format!(
            "dbproxy: expected version must be nil, false or a positive integer, got {}",
            other.type_name()
        ))),
    }
}

/// The types `core.pack` / `unpack` were asked for, parsed once per schema
/// (a reload of the schema empties it).
#[derive(Default)]
struct TypeCache {
    /// The schema the types were parsed against, and the types by name.
    inner: std::cell::RefCell<(Option<Rc<Schema>>, ParsedTypes)>,
}

type ParsedTypes = HashMap<Vec<u8>, Rc<crate::schema::Ty>>;

impl TypeCache {
    /// The parsed type `name` (`None`: "msgpack", any plain document).
    fn get<H: LuaHost>(&self, host: &H, name: &[u8]) -> Result<Option<Rc<crate::schema::Ty>>, String> {
        if name == b"msgpack" {
            return Ok(None);
        }
        let schema = host.schema();
        let mut inner = self.inner.borrow_mut();
        let same = match (&inner.0, &schema) {
            (Some(a), Some(b)) => Rc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            *inner = (schema.clone(), HashMap::new());
        }
        if let Some(t) = inner.1.get(name) {
            return Ok(Some(t.clone()));
        }
        let text = std::str::from_utf8(name).map_err(|_| "a type name must be UTF-8".to_string())?;
        let structs = schema.map(|s| s.structs.clone()).unwrap_or_default();
        let t = Rc::new(crate::schema::parse_type(text, &structs).map_err(|e| e.to_string())?);
        inner.1.insert(name.to_vec(), t.clone());
        Ok(Some(t))
    }
}

/// A writer's epoch from Lua: nil (0) or a non-negative integer.
fn db_epoch(v: Option<i64>) -> mlua::Result<u64> {
    match v {
        None => Ok(0),
        Some(e) if e >= 0 => Ok(e as u64),
        Some(e) => Err(mlua::Error::runtime(format!(
            "dbproxy: an epoch must not be negative, got {e}"
        ))),
    }
}

/// `id`, or `nil, text, kind` (the kind is the text's prefix).
fn db_started(r: Result<u32, String>) -> mlua::Result<(Option<u32>, Option<String>, Option<String>)> {
    match r {
        Ok(id) => Ok((Some(id), None, None)),
        Err(e) => {
            let kind = e.split_once(':').map(|(k, _)| k.to_string());
            Ok((None, Some(e), kind))
        }
    }
}

fn seconds(v: Option<f64>) -> Option<Duration> {
    v.map(crate::rpc::clamp_delay)
}

/// Puts a searcher for the lualib built into the binary right after
/// `package.preload`, so lualib modules come before script roots (as the
/// lualib folder comes first in `package.path` when there is one). Chunks
/// are named `lualib/<name>.lua` in errors and tracebacks.
fn install_builtin_lualib(lua: &Lua, package: &Table) -> mlua::Result<()> {
    let searcher = lua.create_function(|lua, name: String| {
        let Some(src) = crate::lua::lualib::source(&name) else {
            let msg = format!("\n\tno module '{name}' in the lualib built into luahost");
            return Ok((Value::String(lua.create_string(msg)?), Value::Nil));
        };
        let file = format!("lualib/{name}.lua");
        let f = lua.load(src).set_name(format!("={file}")).into_function()?;
        Ok((Value::Function(f), Value::String(lua.create_string(file)?)))
    })?;
    let searchers: Table = package.get("searchers")?;
    let n = searchers.raw_len();
    for i in (2..=n).rev() {
        searchers.raw_set(i + 1, searchers.raw_get::<Value>(i)?)?;
    }
    searchers.raw_set(2, searcher)
}

/// A setting of the cluster file as a Lua value.
fn setting_value(lua: &Lua, s: &Setting) -> mlua::Result<Value> {
    Ok(match s {
        Setting::Bool(b) => Value::Boolean(*b),
        Setting::Int(i) => Value::Integer(*i),
        Setting::Num(n) => Value::Number(*n),
        Setting::Str(s) => Value::String(lua.create_string(s)?),
        Setting::Table(entries) => {
            let t = lua.create_table_with_capacity(0, entries.len())?;
            for (k, v) in entries {
                let v = setting_value(lua, v)?;
                match k {
                    SettingKey::Int(i) => t.raw_set(*i, v)?,
                    SettingKey::Str(s) => t.raw_set(s.as_str(), v)?,
                }
            }
            Value::Table(t)
        }
    })
}

/// Builds the `luahost.core` table, sets `package.path` and the `conf`
/// global, and runs the lualib prelude.
pub(crate) fn install<H: LuaHost>(lua: &Lua, core: &Rc<H>, cluster: &Arc<ClusterConfig>) -> mlua::Result<()> {
    let m = lua.create_table()?;
    let w = Rc::downgrade(core);

    macro_rules! func {
        ($name:literal, |$c:ident, $lua:ident, $args:tt : $ty:ty| $body:expr) => {{
            let w: Weak<H> = w.clone();
            m.set(
                $name,
                lua.create_function(move |$lua: &Lua, $args: $ty| {
                    let $c = w.upgrade().ok_or_else(dead)?;
                    #[allow(unused_variables)]
                    let $lua = $lua;
                    $body
                })?,
            )?;
        }};
    }

    m.set("error_kinds", crate::rpc::error::KINDS)?;
    let kinds = lua.create_table()?;
    for k in crate::lua::dispatch::Dispatch::ALL {
        kinds.set(k.name(), k.id())?;
    }
    m.set("kinds", kinds)?;
    func!("name", |c, _l, (): ()| Ok(c.me().name.clone()));
    func!("sid", |c, _l, (): ()| Ok(c.me().sid));
    func!("type_name", |c, _l, (): ()| Ok(c.me().stype.clone()));
    func!("now", |c, _l, (): ()| Ok(c.now()));
    func!("time", |_c, _l, (): ()| Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)));
    func!("hash32", |_c, _l, s: mlua::LuaString| Ok(ring::fnv1a32(&s.as_bytes())));
    func!("log", |c, _l, (level, msg): (i64, mlua::LuaString)| {
        let msg = msg.to_string_lossy();
        match level {
            i64::MIN..=1 => debug!("{msg}"),
            2 => info!("{msg}"),
            3 => warn!("{msg}"),
            _ => error!("{msg}"),
        }
        c.remote_log(level.clamp(1, 4) as u8, &msg);
        Ok(())
    });
    // An error line a remote party caused (a handler failing on its call or
    // send, a request for an entity without a handler): rate-limited per
    // kind like the host's own (a few per 10 s, then a summary).
    func!(
        "error_limited",
        |c, _l, (what, msg): (mlua::LuaString, mlua::LuaString)| {
            let cause: &'static str = match &*what.as_bytes() {
                b"handler" => "errors in handlers of remote calls and sends",
                b"nohandler" => "remote calls and sends to entities without a handler",
                _ => "other errors caused by remote requests",
            };
            if c.limited(cause) {
                let msg = msg.to_string_lossy();
                error!("{msg}");
                c.remote_log(4, &msg);
            }
            Ok(())
        }
    );
    func!("set_dispatch", |c, _l, f: Function| {
        c.set_dispatch(f);
        Ok(())
    });
    // (digest, methods, structs, client_digest): see rpcdef.init
    func!("set_schema", |c,
                         _l,
                         (digest, methods, structs, client_digest): (
        u32,
        Table,
        Option<Table>,
        Option<u32>
    )| {
        match Schema::from_lua(digest, &methods, structs.as_ref()) {
            Ok(mut s) => {
                s.client_digest = client_digest.unwrap_or(0);
                c.set_schema(s);
                Ok((Some(true), None))
            }
            Err(e) => Ok((None, Some(e.to_string()))),
        }
    });
    func!("join", |c, _l, (): ()| match H::join(&c) {
        Ok(b) => Ok((Some(b), None)),
        Err(e) => Ok((None, Some(e))),
    });
    func!("register", |c, _l, types: Table| {
        let mut map = HashMap::new();
        for pair in types.pairs::<String, u32>() {
            let (k, v) = pair?;
            map.insert(k, v);
        }
        match H::register(&c, map) {
            Ok(()) => Ok((Some(true), None)),
            Err(e) => Ok((None, Some(e))),
        }
    });
    // The one entry for calls and sends: the host decides which from the
    // schema. `wait`: nil (the cluster's call_timeout), seconds, or false
    // (nothing can wait for a reply: a call is refused). Returns the call id,
    // or 0 for a send; or nil, the error text and its kind. It and
    // `core.reply(conn, session, mid, ok, ...)` (true, or nil and the error
    // text) are raw C functions on the hot path (rawcall.rs), installed
    // below.
    // A push to clients of Gate `sid`: `target` is a client session id, a
    // list of account names, or nil (every client of that Gate). Returns
    // true, or nil, the error text and its kind.
    func!("push", |c,
                   _l,
                   (sid, target, mid, args): (
        u32,
        Value,
        u32,
        Variadic<Value>
    )| {
        let names: Vec<mlua::LuaString>;
        let held: Vec<mlua::BorrowedBytes>;
        let target = match &target {
            Value::Nil => crate::codec::proto::PushTarget::All,
            Value::Integer(i) if *i > 0 => crate::codec::proto::PushTarget::Session(*i as u64),
            Value::Table(t) => {
                names = t.sequence_values::<mlua::LuaString>().collect::<mlua::Result<_>>()?;
                held = names.iter().map(|s| s.as_bytes()).collect();
                crate::codec::proto::PushTarget::Accounts(held.iter().map(|b| &b[..]).collect())
            }
            other => {
                return Err(mlua::Error::runtime(format!(
                    "core.push: target must be a session id, a list of accounts or nil, got {}",
                    other.type_name()
                )))
            }
        };
        match c.push(sid, &target, mid, &*args) {
            Ok(()) => Ok((Some(true), None, None)),
            Err(e) => Ok((None, Some(e.to_string()), e.kind())),
        }
    });
    // The Gate's side of client sessions (gate.lua); errors as nil, text.
    func!("gate_accept", |c, _l, (session, sid, eid): (u64, u32, i64)| {
        match c.gate_accept(session, sid, eid) {
            Ok(()) => Ok((Some(true), None)),
            Err(e) => Ok((None, Some(e))),
        }
    });
    func!("gate_refuse", |c, _l, (session, code, text): (u64, String, String)| {
        c.gate_refuse(session, &code, &text);
        Ok(())
    });
    func!("gate_bind", |c, _l, (session, sid, eid): (u64, u32, i64)| {
        match c.gate_bind(session, sid, eid) {
            Ok(()) => Ok((Some(true), None)),
            Err(e) => Ok((None, Some(e))),
        }
    });
    func!("gate_kick", |c, _l, (session, code, text): (u64, String, String)| Ok(
        c.gate_kick(session, &code, &text)
    ));
    func!("gate_notice", |c, _l, (session, code, text): (u64, String, String)| Ok(
        c.gate_notice(session, &code, &text)
    ));
    // The Gate's counters (nil on a node that is not a Gate).
    func!("gate_stats", |c, l, (): ()| {
        let Some(stats) = c.gate_stats() else {
            return Ok(Value::Nil);
        };
        let t = l.create_table()?;
        for (k, v) in stats {
            t.set(k, v)?;
        }
        Ok(Value::Table(t))
    });
    func!("gate_token", |c, _l, (account, ttl): (String, f64)| {
        if ttl.is_nan() || ttl <= 0.0 {
            return Ok((
                None,
                Some("gate.token: ttl must be a positive number of seconds".to_string()),
            ));
        }
        match c.gate_token(&account, crate::rpc::clamp_delay(ttl)) {
            Ok(t) => Ok((Some(t), None)),
            Err(e) => Ok((None, Some(e))),
        }
    });
    // The answer to a web login (Dispatch::Client "web_login"): ok, or a
    // refusal with its reason and, optionally, its HTTP status.
    func!("gate_web_reply", |c,
                             _l,
                             (id, ok, reason, status): (
        u64,
        bool,
        Option<String>,
        Option<u16>
    )| {
        Ok(c.gate_web_reply(id, ok, reason.as_deref().unwrap_or(""), status))
    });
    // a hot reload ended (rpcco): applied, or refused
    func!("reloaded", |c, _l, ok: bool| {
        c.metrics().reloaded(ok);
        Ok(())
    });
    func!("check", |c, _l, (ty, v): (String, Value)| {
        let structs = c.schema().map(|s| s.structs.clone()).unwrap_or_default();
        let ty = match crate::schema::parse_type(&ty, &structs) {
            Ok(t) => t,
            Err(e) => return Ok((None, Some(e.to_string()))),
        };
        let mut scratch = bytes::BytesMut::new();
        match crate::schema::encode(&mut scratch, &ty, &v) {
            Ok(()) => Ok((Some(true), None)),
            Err(e) => Ok((None, Some(format!("expected {ty}: {e}")))),
        }
    });
    // The node's store (dbproxy.lua): each starts an operation and returns
    // the call id its outcome comes back under, or nil, the error text and
    // its kind. `expect`: nil (anything), false (absent) or a version.
    func!("db_load", |c, _l, (coll, key): (String, Value)| {
        let key = db_key(&key)?;
        db_started(H::db(&c, DbOp::Load { coll, key }))
    });
    // (coll, key, value, expect, epoch, indexes): indexes is nil or a
    // list of {name, value}
    func!("db_save", |c,
                      _l,
                      (coll, key, value, expect, epoch, indexes): (
        String,
        Value,
        mlua::LuaString,
        Value,
        Option<i64>,
        Option<Table>
    )| {
        let key = db_key(&key)?;
        let expect = db_expect(&expect)?;
        let mut save = crate::store::Save::new(coll, key, value.as_bytes().to_vec())
            .expect(expect)
            .epoch(db_epoch(epoch)?);
        if let Some(list) = indexes {
            for entry in list.sequence_values::<Table>() {
                let entry = entry?;
                let name: String = entry.raw_get(1)?;
                let v = db_key(&entry.raw_get::<Value>(2)?)?;
                save.indexes.push((name, v));
            }
        }
        db_started(H::db(&c, DbOp::Save(save)))
    });
    func!("db_delete", |c,
                        _l,
                        (coll, key, expect, epoch): (
        String,
        Value,
        Value,
        Option<i64>
    )| {
        let key = db_key(&key)?;
        let expect = db_expect(&expect)?;
        let epoch = db_epoch(epoch)?;
        db_started(H::db(
            &c,
            DbOp::Delete {
                coll,
                key,
                expect,
                epoch,
            },
        ))
    });
    func!("db_query", |c,
                       _l,
                       (coll, index, value, limit): (
        String,
        String,
        Value,
        Option<i64>
    )| {
        let value = db_key(&value)?;
        let limit = limit.unwrap_or(1000).clamp(1, 100_000) as usize;
        db_started(H::db(
            &c,
            DbOp::Query {
                coll,
                index,
                value,
                limit,
            },
        ))
    });
    func!("db_epoch", |c, _l, (): ()| db_started(H::db(&c, DbOp::Epoch)));
    func!("has_store", |c, _l, (): ()| Ok(c.has_store()));
    // (type, value) -> bytes | nil, error: a value checked against a schema
    // type (or "msgpack": any plain document) as MessagePack
    let types = Rc::new(TypeCache::default());
    {
        let types = types.clone();
        func!("pack", |c, l, (ty, v): (mlua::LuaString, Value)| {
            let mut out = bytes::BytesMut::new();
            let r = match types.get(&*c, &ty.as_bytes()) {
                Ok(None) => crate::schema::encode_any(&mut out, &v).map_err(|e| e.to_string()),
                Ok(Some(t)) => crate::schema::encode(&mut out, &t, &v).map_err(|e| format!("expected {t}: {e}")),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => Ok((Some(l.create_string(&out)?), None)),
                Err(e) => Ok((None, Some(e))),
            }
        });
    }
    // (type, bytes) -> value, or nil, error
    func!("unpack", |c, l, (ty, b): (mlua::LuaString, mlua::LuaString)| {
        let bytes = b.as_bytes();
        let mut r = crate::codec::mpack::Reader::new(&bytes);
        let v = match types.get(&*c, &ty.as_bytes()) {
            Ok(None) => crate::schema::decode_any(l, &mut r).map_err(|e| e.to_string()),
            Ok(Some(t)) => crate::schema::decode(l, &t, &mut r).map_err(|e| format!("stored value is no {t}: {e}")),
            Err(e) => Err(e),
        };
        match v.and_then(|v| r.finish().map(|_| v).map_err(|e| e.to_string())) {
            Ok(v) => Ok((v, None)),
            Err(e) => Ok((Value::Nil, Some(e))),
        }
    });
    // (type) -> true, or nil, error: whether a type expression is known
    func!("type_ok", |c, _l, ty: String| {
        if ty == "msgpack" {
            return Ok((Some(true), None));
        }
        let structs = c.schema().map(|s| s.structs.clone()).unwrap_or_default();
        match crate::schema::parse_type(&ty, &structs) {
            Ok(_) => Ok((Some(true), None)),
            Err(e) => Ok((None, Some(e.to_string()))),
        }
    });
    func!("eval_done", |c, _l, (token, ok, text): (u64, bool, mlua::LuaString)| {
        let text = text.to_string_lossy();
        c.eval_done(token, if ok { Ok(text) } else { Err(text) });
        Ok(())
    });
    func!("mtime", |_c, _l, path: String| {
        let t = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        Ok(t)
    });
    func!("realpath", |_c, _l, path: String| {
        Ok(std::fs::canonicalize(&path).ok().map(|p| p.display().to_string()))
    });
    let builtin = cluster.lualib.is_none();
    func!("builtin_lualib", |_c, _l, name: String| Ok(
        builtin && crate::lua::lualib::source(&name).is_some()
    ));
    func!("stop_phase", |c, _l, phase: u8| {
        c.stop_phase(phase);
        Ok(())
    });
    func!("cancel_timer", |c, _l, id: u64| {
        c.cancel_timer(id);
        Ok(())
    });
    func!("reload_cluster", |c, _l, (): ()| match H::reload_cluster_later(&c) {
        Ok(summary) => Ok((Some(summary), None)),
        Err(e) => Ok((None, Some(e))),
    });
    func!("timer", |c, _l, secs: f64| Ok(
        c.add_timer(seconds(Some(secs)).unwrap_or_default())
    ));
    func!("route", |c, _l, (stype, key): (u32, Value)| {
        let k = key_of(&key)?;
        let r = c.rings().route(stype, k);
        Ok(r)
    });
    func!("list", |c, _l, stype: u32| {
        let l = c.rings().list(stype);
        Ok(l)
    });
    func!("all", |c, _l, (): ()| {
        let l = c.rings().all();
        Ok(l)
    });
    func!("live", |c, _l, sid: u32| {
        let Some(spec) = c.node_spec(sid) else {
            return Ok(false);
        };
        let Some(t) = c.type_id(&spec.stype) else {
            return Ok(false);
        };
        let live = c.rings().is_live(t, sid);
        Ok(live)
    });
    func!("random", |c, _l, stype: u32| {
        let list = c.rings().list(stype);
        if list.is_empty() {
            return Ok(None);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Ok(Some(list[(ring::mix64(nanos) % list.len() as u64) as usize]))
    });
    func!("node", |c, l, sid: u32| {
        let Some(spec) = c.node_spec(sid) else {
            return Ok(Value::Nil);
        };
        let t = l.create_table()?;
        t.set("name", spec.name)?;
        t.set("type", spec.stype)?;
        t.set("id", spec.sid)?;
        t.set("addr", spec.addr.to_string())?;
        let load = c.load_of(sid);
        t.set("load", load)?;
        Ok(Value::Table(t))
    });
    func!("set_load", |c, _l, load: i64| {
        c.set_load(load);
        Ok(())
    });
    func!("nodes", |c, l, (): ()| {
        let out = l.create_table()?;
        for spec in c.all_specs() {
            let t = l.create_table()?;
            t.set("name", spec.name)?;
            t.set("type", spec.stype)?;
            t.set("id", spec.sid)?;
            t.set("addr", spec.addr.to_string())?;
            let load = c.load_of(spec.sid);
            t.set("load", load)?;
            out.push(t)?;
        }
        Ok(out)
    });

    crate::lua::rawcall::install(lua, &m, &w)?;

    // package.path: lualib (when it is a folder), then every script root and
    // its per-type folder, then the folder of the node's own main script.
    let stype_dir = core.me().stype.to_lowercase();
    let mut path: Vec<std::path::PathBuf> = cluster.lualib.iter().map(|l| l.join("?.lua")).collect();
    for root in &cluster.scripts {
        path.push(root.join("?.lua"));
        path.push(root.join(&stype_dir).join("?.lua"));
    }
    if let Some(dir) = core.me().main.parent() {
        path.push(dir.join("?.lua"));
    }
    let path: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
    let package: Table = lua.globals().get("package")?;
    package.set("path", path.join(";"))?;
    if cluster.lualib.is_none() {
        install_builtin_lualib(lua, &package)?;
    }
    let loaded: Table = package.get("loaded")?;
    loaded.set("luahost.core", m)?;
    loaded.set("metrics", crate::lua::metrics::module(lua, core)?)?;

    let conf = lua.create_table()?;
    conf.set("NodeName", core.me().name.clone())?;
    conf.set("ServerID", core.me().sid)?;
    conf.set("NodeType", core.me().stype.clone())?;
    conf.set("CallTimeout", cluster.call_timeout.as_secs_f64())?;
    conf.set("ClusterFile", cluster.file.display().to_string())?;
    conf.set("MainScript", core.me().main.display().to_string())?;
    conf.set("Cluster", cluster.zookeeper.is_some())?;
    if let Some(zk) = &cluster.zookeeper {
        conf.set("ZKAddr", zk.hosts.clone())?;
        conf.set("ZKRoot", zk.root.clone())?;
    }
    for (name, value) in cluster.settings_for(&core.me().name) {
        conf.set(name, setting_value(lua, &value)?)?;
    }
    lua.globals().set("conf", conf)?;
    lua.load("require 'luahost'").set_name("=luahost boot").exec()
}
