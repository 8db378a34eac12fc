//! The node's store (DBProxy, issue 16): a node whose cluster entry has a
//! `store` table opens it at boot (it is then a DB node: other nodes reach
//! its store through the built-in `DbCtl` interface, `dbproxy.lua`); Lua's
//! operations on it (`core.db_*`) run on the store's threads, and a task of
//! the node awaits each and hands its outcome to Lua as `Dispatch::Reply`
//! under a call id, exactly like a remote call's reply: Lua never blocks.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use mlua::{MultiValue, Value};

use super::node::Core;
use crate::discovery::store::StoreConfig;
use crate::lua::dispatch::Dispatch;
use crate::lua::DbOp;
use crate::store::{Expect, Key, Postgres, Save, Sqlite, SqliteOptions, Store, StoreError, StoreOptions};

/// The collection and key of the counter the epochs of claims come from.
const EPOCH_COUNTER: (&str, &str) = ("__luahost", "epoch");

/// Opens the store a node's cluster entry names (as a DB node does at
/// boot; `luahost bench db` drives one directly with it).
///
/// # Errors
///
/// A text naming the setting and what failed.
pub fn open(cfg: &StoreConfig) -> Result<Store, String> {
    match cfg {
        StoreConfig::Sqlite { path } => {
            let db = Sqlite::open_with(path, SqliteOptions::default())
                .map_err(|e| format!("store.sqlite {}: {e}", path.display()))?;
            Ok(Store::new(db))
        }
        StoreConfig::Postgres { params, pool } => {
            // (the synchronous client blocks on a runtime of its own, which
            // it cannot do on a node's thread: it connects on one of its own)
            let (with_pw, n, shown) = (StoreConfig::postgres_params(params), *pool, params.clone());
            let db = std::thread::Builder::new()
                .name("store-pg-connect".into())
                .spawn(move || {
                    let (db, down) = Postgres::connect_or_wait(&with_pw, n)?;
                    // the server down: the node starts all the same and
                    // its store tries to connect at each operation
                    if let Some(e) = down {
                        tracing::warn!(
                            "store.postgres ({shown}): {e}; the node starts, and DbCtl answers `unavailable` until the server can be reached"
                        );
                    }
                    Ok::<_, StoreError>(db)
                })
                .map_err(|e| format!("store.postgres: {e}"))?
                .join()
                .map_err(|_| "store.postgres: connecting panicked".to_string())?
                .map_err(|e| {
                    let hint = match std::env::var(crate::discovery::store::PG_PASSWORD_ENV) {
                        Ok(_) => String::new(),
                        Err(_) => format!(" ({} is not set)", crate::discovery::store::PG_PASSWORD_ENV),
                    };
                    format!("store.postgres ({params}): {e}{hint}")
                })?;
            Ok(Store::with_options(
                Arc::new(db),
                StoreOptions {
                    threads: *pool,
                    ..StoreOptions::default()
                },
            ))
        }
    }
}

/// What an operation gives back, turned into Lua values on the node's thread.
enum Outcome {
    Loaded(Option<(Vec<u8>, u64)>),
    Saved(u64),
    Deleted(bool),
    Found(Vec<(Key, Vec<u8>, u64)>),
    Epoch(u64),
}

type OpFuture = Pin<Box<dyn Future<Output = Result<Outcome, StoreError>>>>;

/// Starts `op` on `store`.
fn start(store: &Store, op: DbOp) -> OpFuture {
    match op {
        DbOp::Load { coll, key } => {
            let f = store.load(&coll, key);
            Box::pin(async move { Ok(Outcome::Loaded(f.await?.map(|d| (d.value, d.version)))) })
        }
        DbOp::Save(save) => {
            let f = store.save(save);
            Box::pin(async move { Ok(Outcome::Saved(f.await?)) })
        }
        DbOp::Delete {
            coll,
            key,
            expect,
            epoch,
        } => {
            let f = store.delete(&coll, key, expect, epoch);
            Box::pin(async move { Ok(Outcome::Deleted(f.await?)) })
        }
        DbOp::Query {
            coll,
            index,
            value,
            limit,
        } => {
            let f = store.query(&coll, &index, value, limit);
            Box::pin(async move {
                let docs = f.await?;
                Ok(Outcome::Found(
                    docs.into_iter().map(|(k, d)| (k, d.value, d.version)).collect(),
                ))
            })
        }
        DbOp::Epoch => {
            let f = store.next_counter(EPOCH_COUNTER.0, EPOCH_COUNTER.1);
            Box::pin(async move { Ok(Outcome::Epoch(f.await?)) })
        }
    }
}

impl Core {
    /// Starts `op` on the store; its outcome comes back to Lua under the
    /// returned call id.
    pub(crate) fn db(self: &Rc<Self>, op: DbOp) -> Result<u32, String> {
        let Some(store) = &self.store else {
            return Err(format!(
                "no store: node {} has no store (set store = {{ sqlite = \"file.db\" }} in its cluster entry)",
                self.me.name
            ));
        };
        let id = {
            let peers = self.routing.peers.borrow();
            let db = self.routing.db_pending.borrow();
            self.routing
                .call_ids
                .borrow_mut()
                .next(|id| db.contains(&id) || peers.values().any(|p| p.pending.borrow().contains(id)))
                .ok_or_else(|| StoreError::Busy.to_string())?
        };
        let fut = start(store, op);
        self.routing.db_pending.borrow_mut().insert(id);
        let core = self.clone();
        crate::net::spawn(async move {
            let r = fut.await;
            core.routing.db_pending.borrow_mut().remove(&id);
            core.db_done(id, r);
        });
        Ok(id)
    }

    /// Hands the outcome of store operation `id` to Lua:
    /// `(REPLY, id, true, ...)` or `(REPLY, id, false, text, kind)`.
    fn db_done(&self, id: u32, r: Result<Outcome, StoreError>) {
        let mut args = MultiValue::with_capacity(5);
        args.push_back(Value::Integer(Dispatch::Reply.id()));
        args.push_back(Value::Integer(id as i64));
        let lua = &self.lua;
        let str_val = |b: &[u8]| lua.create_string(b).map(Value::String).unwrap_or(Value::Nil);
        let key_val = |k: &Key| match k {
            Key::Int(i) => Value::Integer(*i),
            Key::Str(s) => str_val(s.as_bytes()),
        };
        match r {
            Ok(o) => {
                args.push_back(Value::Boolean(true));
                match o {
                    Outcome::Loaded(Some((v, version))) => {
                        args.push_back(str_val(&v));
                        args.push_back(Value::Integer(version as i64));
                    }
                    Outcome::Loaded(None) => {
                        args.push_back(Value::Nil);
                        args.push_back(Value::Nil);
                    }
                    Outcome::Saved(version) => args.push_back(Value::Integer(version as i64)),
                    Outcome::Deleted(existed) => args.push_back(Value::Boolean(existed)),
                    Outcome::Epoch(e) => args.push_back(Value::Integer(e as i64)),
                    Outcome::Found(docs) => {
                        // { {key, value, version}, ... } in key order
                        let list = lua.create_table_with_capacity(docs.len(), 0).and_then(|t| {
                            for (i, (k, v, version)) in docs.iter().enumerate() {
                                let d = lua.create_table_with_capacity(3, 0)?;
                                d.raw_set(1, key_val(k))?;
                                d.raw_set(2, str_val(v))?;
                                d.raw_set(3, *version as i64)?;
                                t.raw_set(i + 1, d)?;
                            }
                            Ok(t)
                        });
                        args.push_back(list.map(Value::Table).unwrap_or(Value::Nil));
                    }
                }
            }
            Err(e) => {
                let text = e.to_string();
                let kind = text.split_once(':').map(|(k, _)| k.to_string()).unwrap_or_default();
                args.push_back(Value::Boolean(false));
                args.push_back(str_val(text.as_bytes()));
                args.push_back(str_val(kind.as_bytes()));
            }
        }
        self.call_lua(args);
    }
}

/// A key (or index value) of DbCtl: an optional integer and an optional
/// string, one of them set.
fn ctl_key(i: &Value, s: &Value) -> Option<Key> {
    match (i, s) {
        (Value::Integer(i), _) => Some(Key::Int(*i)),
        (_, Value::String(s)) => Some(Key::Str(s.to_str().ok()?.to_string())),
        _ => None,
    }
}

fn ctl_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_str().ok()?.to_string()),
        _ => None,
    }
}

/// DbCtl's expect: -1 anything, 0 absent, v > 0 that version.
fn ctl_expect(v: &Value) -> Option<Expect> {
    match v {
        Value::Integer(-1) => Some(Expect::Any),
        Value::Integer(0) => Some(Expect::Absent),
        Value::Integer(v) if *v > 0 => Some(Expect::Version(*v as u64)),
        _ => None,
    }
}

fn ctl_epoch(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(e) if *e >= 0 => Some(*e as u64),
        _ => None,
    }
}

/// The store operation of a call to DbCtl method `name` with (decoded,
/// schema-checked) arguments `a`; `None` if they make no operation (a key
/// with neither part, a negative epoch).
pub(crate) fn ctl_op(name: &str, a: &[Value]) -> Option<DbOp> {
    let at = |i: usize| a.get(i).unwrap_or(&Value::Nil);
    Some(match name {
        "load" => DbOp::Load {
            coll: ctl_str(at(0))?,
            key: ctl_key(at(1), at(2))?,
        },
        "save" => {
            let Value::String(value) = at(3) else { return None };
            let mut save = Save::new(ctl_str(at(0))?, ctl_key(at(1), at(2))?, value.as_bytes().to_vec())
                .expect(ctl_expect(at(4))?)
                .epoch(ctl_epoch(at(5))?);
            if let Value::Table(list) = at(6) {
                for entry in list.sequence_values::<mlua::Table>() {
                    let entry = entry.ok()?;
                    let name: String = entry.raw_get("name").ok()?;
                    let v = ctl_key(&entry.raw_get("ival").ok()?, &entry.raw_get("sval").ok()?)?;
                    save.indexes.push((name, v));
                }
            }
            DbOp::Save(save)
        }
        "delete" => DbOp::Delete {
            coll: ctl_str(at(0))?,
            key: ctl_key(at(1), at(2))?,
            expect: ctl_expect(at(3))?,
            epoch: ctl_epoch(at(4))?,
        },
        "query" => DbOp::Query {
            coll: ctl_str(at(0))?,
            index: ctl_str(at(1))?,
            value: ctl_key(at(2), at(3))?,
            limit: match at(4) {
                Value::Integer(n) if *n >= 1 => (*n as usize).min(100_000),
                _ => return None,
            },
        },
        "epoch" => DbOp::Epoch,
        _ => return None,
    })
}

impl Core {
    /// Serves a call to DbCtl (`DBProxy` on another node) on this node's
    /// store, without Lua: the operation starts now and its outcome is the
    /// call's reply, `(err, ...)` as `dbproxy.lua` reads it (`err` empty, or
    /// the store's error text with its kind first).
    pub(crate) fn serve_db(&self, conn: u64, session: u32, mid: u32, op: DbOp) {
        let Some(store) = &self.store else { return };
        // what the results are when the operation fails
        let defaults: fn(&mlua::Lua) -> Vec<Value> = match &op {
            DbOp::Load { .. } => |_| vec![Value::Nil, Value::Integer(0)],
            DbOp::Delete { .. } => |_| vec![Value::Boolean(false)],
            DbOp::Query { .. } => |l| vec![l.create_table().map(Value::Table).unwrap_or(Value::Nil)],
            DbOp::Save(_) | DbOp::Epoch => |_| vec![Value::Integer(0)],
        };
        let fut = start(store, op);
        let this = self.this.clone();
        let serving = &self.routing.db_serving;
        serving.set(serving.get() + 1);
        crate::net::spawn(async move {
            let r = fut.await;
            if let Some(core) = this.upgrade() {
                core.reply_db(conn, session, mid, r, defaults);
                let serving = &core.routing.db_serving;
                serving.set(serving.get() - 1);
                if serving.get() == 0 {
                    core.routing.db_served.notify_waiters();
                }
            }
        });
    }

    /// Waits (at most `limit`) until the DbCtl calls this node is serving
    /// are answered and the answers written to their connections: a DB
    /// node stopping gracefully completes them (their callers get the
    /// result, not `node down`). Returns how many were left unanswered.
    pub(crate) async fn finish_db_serving(&self, limit: std::time::Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        while self.routing.db_serving.get() > 0 {
            let served = self.routing.db_served.notified();
            if self.routing.db_serving.get() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, served).await.is_err() {
                return self.routing.db_serving.get();
            }
        }
        let peers: Vec<_> = self.routing.peers.borrow().values().cloned().collect();
        // (a peer without a connection is not waited for: nothing of its
        // queue would be written before the deadline)
        for p in peers.iter().filter(|p| !p.is_self && p.link.connected()) {
            p.link.flush_now();
            if tokio::time::timeout_at(deadline, p.link.drained()).await.is_err() {
                break;
            }
        }
        0
    }

    fn reply_db(
        &self,
        conn: u64,
        session: u32,
        mid: u32,
        r: Result<Outcome, StoreError>,
        defaults: fn(&mlua::Lua) -> Vec<Value>,
    ) {
        let lua = &self.lua;
        let text = |s: &str| lua.create_string(s).map(Value::String).unwrap_or(Value::Nil);
        let bytes = |b: &[u8]| lua.create_string(b).map(Value::String).unwrap_or(Value::Nil);
        let vals: Vec<Value> = match r {
            Err(e) => std::iter::once(text(&e.to_string())).chain(defaults(lua)).collect(),
            Ok(Outcome::Loaded(Some((v, version)))) => vec![text(""), bytes(&v), Value::Integer(version as i64)],
            Ok(Outcome::Loaded(None)) => vec![text(""), Value::Nil, Value::Integer(0)],
            Ok(Outcome::Saved(version)) => vec![text(""), Value::Integer(version as i64)],
            Ok(Outcome::Deleted(existed)) => vec![text(""), Value::Boolean(existed)],
            Ok(Outcome::Epoch(e)) => vec![text(""), Value::Integer(e as i64)],
            Ok(Outcome::Found(docs)) => {
                let list = lua.create_table_with_capacity(docs.len(), 0).and_then(|t| {
                    for (i, (k, v, version)) in docs.iter().enumerate() {
                        let d = lua.create_table_with_capacity(0, 3)?;
                        match k {
                            Key::Int(n) => d.raw_set("ikey", *n)?,
                            Key::Str(s) => d.raw_set("skey", s.as_str())?,
                        }
                        d.raw_set("value", lua.create_string(v)?)?;
                        d.raw_set("version", *version as i64)?;
                        t.raw_set(i + 1, d)?;
                    }
                    Ok(t)
                });
                match list {
                    Ok(t) => vec![text(""), Value::Table(t)],
                    Err(e) => std::iter::once(text(&format!("backend: {e}")))
                        .chain(defaults(lua))
                        .collect(),
                }
            }
        };
        if let Err(e) = self.reply(conn, session, mid, true, &vals) {
            tracing::debug!("DbCtl reply {session} not sent: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctl_op_takes_well_formed_calls_only() {
        let lua = mlua::Lua::new();
        let s = |t: &str| Value::String(lua.create_string(t).unwrap());
        let coll = s("players");
        assert_eq!(
            ctl_op("load", &[coll.clone(), Value::Integer(7), Value::Nil]),
            Some(DbOp::Load {
                coll: "players".into(),
                key: Key::Int(7)
            })
        );
        assert_eq!(
            ctl_op("load", &[coll.clone(), Value::Nil, s("ann")]),
            Some(DbOp::Load {
                coll: "players".into(),
                key: Key::Str("ann".into())
            })
        );
        // a key with neither part, a bad expect, a negative epoch, a zero limit
        assert_eq!(ctl_op("load", &[coll.clone(), Value::Nil, Value::Nil]), None);
        let save = |expect: i64, epoch: i64| {
            ctl_op(
                "save",
                &[
                    coll.clone(),
                    Value::Integer(1),
                    Value::Nil,
                    s("v"),
                    Value::Integer(expect),
                    Value::Integer(epoch),
                ],
            )
        };
        assert!(matches!(save(-1, 3), Some(DbOp::Save(ref sv)) if sv.expect == Expect::Any && sv.epoch == 3));
        assert!(matches!(save(0, 0), Some(DbOp::Save(ref sv)) if sv.expect == Expect::Absent));
        assert!(matches!(save(4, 0), Some(DbOp::Save(ref sv)) if sv.expect == Expect::Version(4)));
        assert_eq!(save(-2, 0), None);
        assert_eq!(save(1, -1), None);
        let query = |limit: i64| {
            ctl_op(
                "query",
                &[coll.clone(), s("byName"), Value::Nil, s("ann"), Value::Integer(limit)],
            )
        };
        assert!(query(10).is_some());
        assert_eq!(query(0), None);
        assert_eq!(ctl_op("drop", std::slice::from_ref(&coll)), None);
        assert_eq!(ctl_op("epoch", &[]), Some(DbOp::Epoch));
    }
}
