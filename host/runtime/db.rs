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
use crate::store::{Key, Postgres, Sqlite, SqliteOptions, Store, StoreError, StoreOptions};

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
            let (with_pw, n) = (StoreConfig::postgres_params(params), *pool);
            let db = std::thread::Builder::new()
                .name("store-pg-connect".into())
                .spawn(move || Postgres::connect(&with_pw, n))
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
