//! The PostgreSQL backend, for production: the synchronous `postgres`
//! client (the store runs it on threads of its own) with a small pool of
//! connections; a connection found broken is dropped and the next
//! operation connects again, and loads and queries are retried once on a
//! fresh connection (writes are not: their outcome is unknown to us).
//!
//! Tables `luahost_docs` and `luahost_idx`, as in the SQLite backend; a key
//! (and an index value) is three columns, kind (0 integer, 1 string), the
//! integer and the string, so both kinds live in one primary key and sort
//! as in SQLite (integers first). A write locks the row (`SELECT ... FOR
//! UPDATE`) before checking it; a first write inserts with `ON CONFLICT DO
//! NOTHING` and, when someone inserted first, checks again against theirs.

use std::sync::Mutex;

use postgres::{Client, NoTls, Transaction};

use super::{check_write, lock, Backend, Current, Doc, Expect, IndexValue, Key, Save, StoreError};

/// A store in a PostgreSQL database.
pub struct Postgres {
    params: String,
    idle: Mutex<Vec<Client>>,
    max_idle: usize,
    /// Whether the tables are known to exist (made by the first connection
    /// that reached the server).
    schema: Mutex<bool>,
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        match e.as_db_error() {
            // class 08 (connection exception) and 57 (operator
            // intervention: the server shutting down) are the server gone
            Some(db) if matches!(&db.code().code()[..2], "08" | "57") => {
                StoreError::Unavailable(format!("{}: {}", db.severity(), db.message()))
            }
            Some(db) => StoreError::Backend(format!("{}: {}", db.severity(), db.message())),
            // no answer of the server: it could not be reached, or the
            // connection broke
            None => StoreError::Unavailable(match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            }),
        }
    }
}

impl Drop for Postgres {
    /// The synchronous client closes its connection by blocking on a
    /// runtime of its own, which panics inside another runtime (the last
    /// handle on a store may well be dropped in a node's task): the idle
    /// connections are closed on a thread of their own then.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *lock(&self.idle));
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("store-pg-close".into())
                .spawn(move || drop(idle));
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS luahost_docs (
    coll TEXT NOT NULL,
    kkind SMALLINT NOT NULL, kint BIGINT NOT NULL, kstr TEXT NOT NULL,
    value BYTEA,
    version BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    PRIMARY KEY (coll, kkind, kint, kstr)
);
CREATE TABLE IF NOT EXISTS luahost_idx (
    coll TEXT NOT NULL,
    name TEXT NOT NULL,
    vkind SMALLINT NOT NULL, vint BIGINT NOT NULL, vstr TEXT NOT NULL,
    kkind SMALLINT NOT NULL, kint BIGINT NOT NULL, kstr TEXT NOT NULL,
    PRIMARY KEY (coll, name, vkind, vint, vstr, kkind, kint, kstr)
);
CREATE INDEX IF NOT EXISTS luahost_idx_by_key ON luahost_idx (coll, kkind, kint, kstr);
";

fn split(k: &Key) -> (i16, i64, &str) {
    match k {
        Key::Int(i) => (0, *i, ""),
        Key::Str(s) => (1, 0, s.as_str()),
    }
}

fn join(kind: i16, i: i64, s: String) -> Key {
    if kind == 0 {
        Key::Int(i)
    } else {
        Key::Str(s)
    }
}

impl Postgres {
    /// Connects with `params` (libpq style: `host=/run/postgresql
    /// user=luahost dbname=game`), creates the tables if needed, and keeps
    /// at most `max_idle` idle connections.
    pub fn connect(params: &str, max_idle: usize) -> Result<Self, StoreError> {
        let pg = Self::lazy(params, max_idle);
        let first = pg.client()?;
        pg.put_back(first);
        Ok(pg)
    }

    /// Like [`Postgres::connect`], but when the server cannot be reached at
    /// all (no answer: refused, no socket) it gives a [`Postgres::lazy`]
    /// store and why it could not connect, instead of failing; any other
    /// failure (a refused password, bad parameters) is an error still.
    pub fn connect_or_wait(params: &str, max_idle: usize) -> Result<(Self, Option<StoreError>), StoreError> {
        let pg = Self::lazy(params, max_idle);
        match Client::connect(params, NoTls) {
            Ok(mut c) => {
                c.batch_execute(SCHEMA)?;
                *lock(&pg.schema) = true;
                pg.put_back(c);
                Ok((pg, None))
            }
            Err(e) if std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) => {
                Ok((pg, Some(e.into())))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A store on `params` that connects (and creates the tables) at its
    /// first operation, not now: a DB node starts while its server is down,
    /// and each operation fails with [`StoreError::Unavailable`] until the
    /// server can be reached.
    pub fn lazy(params: &str, max_idle: usize) -> Self {
        Postgres {
            params: params.to_string(),
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
            schema: Mutex::new(false),
        }
    }

    fn client(&self) -> Result<Client, StoreError> {
        loop {
            match lock(&self.idle).pop() {
                Some(c) if c.is_closed() => continue,
                Some(c) => return Ok(c),
                None => break,
            }
        }
        let mut c = Client::connect(&self.params, NoTls)?;
        let mut made = lock(&self.schema);
        if !*made {
            c.batch_execute(SCHEMA)?;
            *made = true;
        }
        Ok(c)
    }

    fn put_back(&self, c: Client) {
        let mut idle = lock(&self.idle);
        if !c.is_closed() && idle.len() < self.max_idle {
            idle.push(c);
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut c = self.client()?;
        let out = f(&mut c);
        self.put_back(c);
        out
    }

    /// A read, retried once on a new connection when its connection broke.
    fn read<T>(&self, f: impl Fn(&mut Client) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut c = self.client()?;
        match f(&mut c) {
            Err(StoreError::Backend(_) | StoreError::Unavailable(_)) if c.is_closed() => {
                drop(c);
                self.with(f)
            }
            out => {
                self.put_back(c);
                out
            }
        }
    }

    fn write<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

fn current(tx: &mut Transaction<'_>, coll: &str, key: &Key) -> Result<Option<Current>, StoreError> {
    let (kk, ki, ks) = split(key);
    let row = tx.query_opt(
        "SELECT version, epoch, value IS NOT NULL FROM luahost_docs
         WHERE coll = $1 AND kkind = $2 AND kint = $3 AND kstr = $4 FOR UPDATE",
        &[&coll, &kk, &ki, &ks],
    )?;
    Ok(row.map(|r| Current {
        version: r.get::<_, i64>(0) as u64,
        epoch: r.get::<_, i64>(1) as u64,
        live: r.get(2),
    }))
}

fn drop_index(tx: &mut Transaction<'_>, coll: &str, key: &Key) -> Result<(), StoreError> {
    let (kk, ki, ks) = split(key);
    tx.execute(
        "DELETE FROM luahost_idx WHERE coll = $1 AND kkind = $2 AND kint = $3 AND kstr = $4",
        &[&coll, &kk, &ki, &ks],
    )?;
    Ok(())
}

fn save_in(tx: &mut Transaction<'_>, s: &Save) -> Result<u64, StoreError> {
    let (kk, ki, ks) = split(&s.key);
    let (coll, value, epoch) = (s.coll.as_str(), s.value.as_slice(), s.epoch as i64);
    let version = loop {
        let cur = current(tx, coll, &s.key)?;
        let version = check_write(coll, &s.key, s.expect, s.epoch, cur)?;
        if cur.is_some() {
            tx.execute(
                "UPDATE luahost_docs SET value = $5, version = $6, epoch = $7
                 WHERE coll = $1 AND kkind = $2 AND kint = $3 AND kstr = $4",
                &[&coll, &kk, &ki, &ks, &value, &(version as i64), &epoch],
            )?;
            break version;
        }
        let n = tx.execute(
            "INSERT INTO luahost_docs (coll, kkind, kint, kstr, value, version, epoch)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            &[&coll, &kk, &ki, &ks, &value, &(version as i64), &epoch],
        )?;
        if n == 1 {
            break version;
        }
        // someone else's first write got there first: check against it
    };
    drop_index(tx, coll, &s.key)?;
    for (name, val) in &s.indexes {
        let (vk, vi, vs) = split(val);
        tx.execute(
            "INSERT INTO luahost_idx (coll, name, vkind, vint, vstr, kkind, kint, kstr)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[&coll, name, &vk, &vi, &vs, &kk, &ki, &ks],
        )?;
    }
    Ok(version)
}

impl Backend for Postgres {
    fn load(&self, coll: &str, key: &Key) -> Result<Option<Doc>, StoreError> {
        let (kk, ki, ks) = split(key);
        self.read(|c| {
            let row = c.query_opt(
                "SELECT value, version, epoch FROM luahost_docs
                 WHERE coll = $1 AND kkind = $2 AND kint = $3 AND kstr = $4 AND value IS NOT NULL",
                &[&coll, &kk, &ki, &ks],
            )?;
            Ok(row.map(|r| Doc {
                value: r.get(0),
                version: r.get::<_, i64>(1) as u64,
                epoch: r.get::<_, i64>(2) as u64,
            }))
        })
    }

    fn save(&self, save: &Save) -> Result<u64, StoreError> {
        self.write(|tx| save_in(tx, save))
    }

    fn delete(&self, coll: &str, key: &Key, expect: Expect, epoch: u64) -> Result<bool, StoreError> {
        let (kk, ki, ks) = split(key);
        self.write(|tx| {
            let cur = current(tx, coll, key)?;
            let version = check_write(coll, key, expect, epoch, cur)?;
            if !cur.is_some_and(|c| c.live) {
                return Ok(false);
            }
            tx.execute(
                "UPDATE luahost_docs SET value = NULL, version = $5, epoch = $6
                 WHERE coll = $1 AND kkind = $2 AND kint = $3 AND kstr = $4",
                &[&coll, &kk, &ki, &ks, &(version as i64), &(epoch as i64)],
            )?;
            drop_index(tx, coll, key)?;
            Ok(true)
        })
    }

    fn query(&self, coll: &str, index: &str, value: &IndexValue, limit: usize) -> Result<Vec<(Key, Doc)>, StoreError> {
        let (vk, vi, vs) = split(value);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(|c| {
            let rows = c.query(
                "SELECT d.kkind, d.kint, d.kstr, d.value, d.version, d.epoch FROM luahost_idx i
                 JOIN luahost_docs d ON d.coll = i.coll AND d.kkind = i.kkind AND d.kint = i.kint AND d.kstr = i.kstr
                 WHERE i.coll = $1 AND i.name = $2 AND i.vkind = $3 AND i.vint = $4 AND i.vstr = $5
                   AND d.value IS NOT NULL
                 ORDER BY i.kkind, i.kint, i.kstr LIMIT $6",
                &[&coll, &index, &vk, &vi, &vs, &limit],
            )?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    (
                        join(r.get(0), r.get(1), r.get(2)),
                        Doc {
                            value: r.get(3),
                            version: r.get::<_, i64>(4) as u64,
                            epoch: r.get::<_, i64>(5) as u64,
                        },
                    )
                })
                .collect())
        })
    }

    fn batch(&self, saves: &[Save]) -> Result<Vec<u64>, StoreError> {
        // an error returns before the commit: dropping the transaction
        // rolls everything back
        self.write(|tx| saves.iter().map(|s| save_in(tx, s)).collect())
    }
}
