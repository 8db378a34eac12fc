//! The SQLite backend: the embedded default, one file (plus its `-wal` and
//! `-shm`) at a path, normally in the cluster folder.
//!
//! Write-ahead log (WAL): readers never wait for the writer nor the writer
//! for them. One connection writes (behind a mutex: SQLite has one writer
//! at a time anyway), each write in its own `BEGIN IMMEDIATE` transaction;
//! loads and queries take a connection from a small pool of readers.
//!
//! Durability: [`Synchronous::Full`] (the default) syncs the log at every
//! commit, so what a save acknowledged survives a crash of the process and
//! of the machine (power loss). [`Synchronous::Normal`] syncs only at
//! checkpoints: it survives a crash of the process (kill -9: the OS still
//! holds the written log) but a power loss may undo the last commits; never
//! a torn record either way.
//!
//! Tables: `docs (coll, key, value, version, epoch)` keyed by `(coll, key)`
//! (a deleted document keeps its row with a NULL value, a tombstone, so its
//! version and epoch go on), and `idx (coll, name, val, key)`, one row per
//! index entry. `key` and `val` have no declared type (BLOB affinity), so
//! SQLite keeps integers as integers and strings as text, never converting
//! one into the other.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, ToSql, Transaction, TransactionBehavior};

use super::{check_write, lock, Backend, Current, Doc, Expect, IndexValue, Key, Save, StoreError};

/// When SQLite syncs to disk (its `synchronous` pragma, in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// At every commit: an acknowledged write survives a power loss.
    Full,
    /// At checkpoints only: an acknowledged write survives a crash of the
    /// process, not necessarily a power loss.
    Normal,
}

/// How a [`Sqlite`] store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// When to sync (default [`Synchronous::Full`]).
    pub synchronous: Synchronous,
    /// How long an operation waits for a lock held by another process
    /// before failing (default 5 s).
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// A store in one SQLite file.
pub struct Sqlite {
    path: PathBuf,
    opts: SqliteOptions,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl ToSql for Key {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Key::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(*i)),
            Key::Str(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
        })
    }
}

fn key_at(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Key> {
    match row.get_ref(i)? {
        ValueRef::Integer(v) => Ok(Key::Int(v)),
        ValueRef::Text(t) => Ok(Key::Str(String::from_utf8_lossy(t).into_owned())),
        other => Err(rusqlite::Error::InvalidColumnType(
            i,
            "key".to_string(),
            other.data_type(),
        )),
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS docs (
    coll TEXT NOT NULL,
    key NOT NULL,
    value BLOB,
    version INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (coll, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idx (
    coll TEXT NOT NULL,
    name TEXT NOT NULL,
    val NOT NULL,
    key NOT NULL,
    PRIMARY KEY (coll, name, val, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_by_key ON idx (coll, key);
";

impl Sqlite {
    /// Opens (creating if needed) the store at `path` with the default
    /// options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (creating if needed) the store at `path`.
    pub fn open_with(path: impl AsRef<Path>, opts: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let writer = Connection::open(&path)?;
        writer.busy_timeout(opts.busy_timeout)?;
        let mode: String = writer.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "{}: could not switch to WAL (journal mode {mode})",
                path.display()
            )));
        }
        Self::set_sync(&writer, opts.synchronous)?;
        writer.execute_batch(SCHEMA)?;
        Ok(Sqlite {
            path,
            opts,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn set_sync(c: &Connection, s: Synchronous) -> Result<(), StoreError> {
        let v = match s {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        c.pragma_update(None, "synchronous", v)?;
        Ok(())
    }

    /// The file it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a reader connection from the pool (opening one if none
    /// is free) and puts it back.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = lock(&self.readers).pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(self.opts.busy_timeout)?;
                c
            }
        };
        let out = f(&conn);
        lock(&self.readers).push(conn);
        out
    }

    /// Runs `f` in one write transaction, committed if it succeeds.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

fn current(tx: &Connection, coll: &str, key: &Key) -> Result<Option<Current>, StoreError> {
    let mut st =
        tx.prepare_cached("SELECT version, epoch, value IS NOT NULL FROM docs WHERE coll = ?1 AND key = ?2")?;
    Ok(st
        .query_row(params![coll, key], |r| {
            Ok(Current {
                version: r.get::<_, i64>(0)? as u64,
                epoch: r.get::<_, i64>(1)? as u64,
                live: r.get(2)?,
            })
        })
        .optional()?)
}

fn save_in(tx: &Connection, s: &Save) -> Result<u64, StoreError> {
    let version = check_write(&s.coll, &s.key, s.expect, s.epoch, current(tx, &s.coll, &s.key)?)?;
    tx.prepare_cached(
        "INSERT INTO docs (coll, key, value, version, epoch) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (coll, key) DO UPDATE
         SET value = excluded.value, version = excluded.version, epoch = excluded.epoch",
    )?
    .execute(params![s.coll, s.key, s.value, version as i64, s.epoch as i64])?;
    tx.prepare_cached("DELETE FROM idx WHERE coll = ?1 AND key = ?2")?
        .execute(params![s.coll, s.key])?;
    let mut ins = tx.prepare_cached("INSERT OR IGNORE INTO idx (coll, name, val, key) VALUES (?1, ?2, ?3, ?4)")?;
    for (name, val) in &s.indexes {
        ins.execute(params![s.coll, name, val, s.key])?;
    }
    Ok(version)
}

fn load_in(c: &Connection, coll: &str, key: &Key) -> Result<Option<Doc>, StoreError> {
    let mut st =
        c.prepare_cached("SELECT value, version, epoch FROM docs WHERE coll = ?1 AND key = ?2 AND value IS NOT NULL")?;
    Ok(st
        .query_row(params![coll, key], |r| {
            Ok(Doc {
                value: r.get(0)?,
                version: r.get::<_, i64>(1)? as u64,
                epoch: r.get::<_, i64>(2)? as u64,
            })
        })
        .optional()?)
}

impl Backend for Sqlite {
    fn load(&self, coll: &str, key: &Key) -> Result<Option<Doc>, StoreError> {
        self.read(|c| load_in(c, coll, key))
    }

    fn save(&self, save: &Save) -> Result<u64, StoreError> {
        self.write(|tx| save_in(tx, save))
    }

    fn delete(&self, coll: &str, key: &Key, expect: Expect, epoch: u64) -> Result<bool, StoreError> {
        self.write(|tx| {
            let cur = current(tx, coll, key)?;
            let version = check_write(coll, key, expect, epoch, cur)?;
            if !cur.is_some_and(|c| c.live) {
                return Ok(false);
            }
            tx.prepare_cached("UPDATE docs SET value = NULL, version = ?3, epoch = ?4 WHERE coll = ?1 AND key = ?2")?
                .execute(params![coll, key, version as i64, epoch as i64])?;
            tx.prepare_cached("DELETE FROM idx WHERE coll = ?1 AND key = ?2")?
                .execute(params![coll, key])?;
            Ok(true)
        })
    }

    fn query(&self, coll: &str, index: &str, value: &IndexValue, limit: usize) -> Result<Vec<(Key, Doc)>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT d.key, d.value, d.version, d.epoch FROM idx i
                 JOIN docs d ON d.coll = i.coll AND d.key = i.key
                 WHERE i.coll = ?1 AND i.name = ?2 AND i.val = ?3 AND d.value IS NOT NULL
                 ORDER BY i.key LIMIT ?4",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = st.query_map(params![coll, index, value, limit], |r| {
                Ok((
                    key_at(r, 0)?,
                    Doc {
                        value: r.get(1)?,
                        version: r.get::<_, i64>(2)? as u64,
                        epoch: r.get::<_, i64>(3)? as u64,
                    },
                ))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn batch(&self, saves: &[Save]) -> Result<Vec<u64>, StoreError> {
        // an error returns before the commit: the transaction's drop rolls
        // everything back
        self.write(|tx| saves.iter().map(|s| save_in(tx, s)).collect())
    }

    fn groups(&self) -> bool {
        true
    }

    fn load_group(&self, keys: &[(String, Key)]) -> Vec<Result<Option<Doc>, StoreError>> {
        // one read transaction: the WAL's read lock taken once for all
        self.read(|c| {
            c.execute_batch("BEGIN")?;
            let out = keys.iter().map(|(coll, key)| load_in(c, coll, key)).collect();
            if let Err(e) = c.execute_batch("COMMIT") {
                let _ = c.execute_batch("ROLLBACK");
                return Err(e.into());
            }
            Ok(out)
        })
        .unwrap_or_else(|e| vec![Err(e); keys.len()])
    }

    fn save_group(&self, saves: &[Save]) -> Vec<Result<u64, StoreError>> {
        // one transaction, each save in a savepoint of its own (a failed
        // save undoes only itself), one commit (one sync) for all
        let mut conn = lock(&self.writer);
        let all = |e: StoreError| vec![Err(e); saves.len()];
        let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => return all(e.into()),
        };
        let mut out = Vec::with_capacity(saves.len());
        for s in saves {
            let r = tx.savepoint().map_err(StoreError::from).and_then(|sp| {
                let v = save_in(&sp, s)?;
                sp.commit()?;
                Ok(v)
            });
            out.push(r);
        }
        match tx.commit() {
            Ok(()) => out,
            Err(e) => all(e.into()),
        }
    }
}
