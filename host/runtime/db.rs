//! The node's store (DBProxy, issue 16): a node whose cluster entry has a
//! `store` table opens it at boot; Lua's operations on it (`dbproxy.lua`
//! through `core.db_*`) run on the store's threads, and a task of the node
//! awaits each and hands its outcome to Lua as `Dispatch::Reply` under a
//! call id, exactly like a remote call's reply: Lua never blocks.

use std::rc::Rc;

use mlua::{MultiValue, Value};

use super::node::Core;
use crate::discovery::store::StoreConfig;
use crate::lua::dispatch::Dispatch;
use crate::lua::DbOp;
use crate::store::{Save, Sqlite, SqliteOptions, Store, StoreError};

/// Opens the store a node's cluster entry names.
pub(crate) fn open(cfg: &StoreConfig) -> Result<Store, String> {
    match cfg {
        StoreConfig::Sqlite { path } => {
            let db = Sqlite::open_with(path, SqliteOptions::default())
                .map_err(|e| format!("store.sqlite {}: {e}", path.display()))?;
            Ok(Store::new(db))
        }
    }
}

/// What an operation gives back, turned into Lua values on the node's thread.
enum Outcome {
    Loaded(Option<(Vec<u8>, u64)>),
    Saved(u64),
    Deleted(bool),
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
        let epoch = 0;
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Outcome, StoreError>>>> = match op {
            DbOp::Load { coll, key } => {
                let f = store.load(&coll, key);
                Box::pin(async move { Ok(Outcome::Loaded(f.await?.map(|d| (d.value, d.version)))) })
            }
            DbOp::Save {
                coll,
                key,
                value,
                expect,
            } => {
                let f = store.save(Save::new(coll, key, value).expect(expect).epoch(epoch));
                Box::pin(async move { Ok(Outcome::Saved(f.await?)) })
            }
            DbOp::Delete { coll, key, expect } => {
                let f = store.delete(&coll, key, expect, epoch);
                Box::pin(async move { Ok(Outcome::Deleted(f.await?)) })
            }
        };
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
