//! A DB node's storage: the `store` table of its entry in the cluster file.
//!
//! ```lua
//! db_1 = { type = "DB", addr = "127.0.0.1:7110", store = { sqlite = "game.db" } },
//! ```
//!
//! `sqlite` is the database file, relative to the cluster file. For
//! production, PostgreSQL:
//!
//! ```lua
//! db_1 = { type = "DB", addr = "10.0.0.7:7110",
//!          store = { postgres = "host=10.0.0.9 user=game dbname=game" } },
//! ```
//!
//! The connection parameters are libpq's `key=value` words; the password
//! never sits in the cluster file (a `password` word there is refused): it
//! comes from the environment, `LUAHOST_PG_PASSWORD`, when the server asks
//! for one. There is no default password. `pool` (default 4) is how many
//! connections (and store threads) the node keeps.

use std::path::{Path, PathBuf};

use mlua::{Table, Value};

/// The database a node opens at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A SQLite file (`sqlite = "game.db"`).
    Sqlite {
        /// The file, resolved against the cluster file's folder.
        path: PathBuf,
    },
    /// A PostgreSQL database (`postgres = "host=... user=... dbname=..."`).
    Postgres {
        /// libpq connection parameters, without a password.
        params: String,
        /// Connections (and store threads) the node keeps.
        pool: usize,
    },
}

/// The environment variable holding the PostgreSQL password.
pub const PG_PASSWORD_ENV: &str = "LUAHOST_PG_PASSWORD";

impl StoreConfig {
    /// The connection parameters with the password from
    /// [`PG_PASSWORD_ENV`] added (quoted as libpq wants), if it is set.
    pub fn postgres_params(params: &str) -> String {
        match std::env::var(PG_PASSWORD_ENV) {
            Ok(pw) if !pw.is_empty() => {
                let quoted = pw.replace('\\', "\\\\").replace('\'', "\\'");
                format!("{params} password='{quoted}'")
            }
            _ => params.to_string(),
        }
    }
}

impl StoreConfig {
    /// Reads a node's `store` table; `dir` is the cluster file's folder.
    ///
    /// # Errors
    ///
    /// A text naming the field at fault (`store.sqlite ...`).
    pub fn parse(t: &Table, dir: &Path) -> Result<StoreConfig, String> {
        const KNOWN: [&str; 3] = ["sqlite", "postgres", "pool"];
        for pair in t.pairs::<Value, Value>() {
            let (k, _) = pair.map_err(|e| format!("store: {e}"))?;
            let name = match &k {
                Value::String(s) => s.to_string_lossy(),
                other => return Err(format!("store: keys must be names, got a {}", other.type_name())),
            };
            if !KNOWN.contains(&name.as_str()) {
                return Err(format!(
                    "store.{name} is not a store setting (known: {})",
                    KNOWN.join(", ")
                ));
            }
        }
        let pool = match t.get::<Value>("pool").map_err(|e| format!("store.pool: {e}"))? {
            Value::Nil => 4,
            Value::Integer(n) if (1..=64).contains(&n) => n as usize,
            other => return Err(format!("store.pool must be an integer 1..64, got {other:?}")),
        };
        if let Some(pg) = t.get::<Option<mlua::LuaString>>("postgres").ok().flatten() {
            let params = pg.to_str().map_err(|e| format!("store.postgres: {e}"))?.to_string();
            if t.contains_key("sqlite").unwrap_or(false) {
                return Err("store: set either sqlite or postgres, not both".into());
            }
            if params.trim().is_empty() {
                return Err("store.postgres must hold connection parameters (host=... user=... dbname=...)".into());
            }
            if params
                .split_whitespace()
                .any(|w| w.to_ascii_lowercase().starts_with("password"))
            {
                return Err(format!(
                    "store.postgres: no password in the cluster file; set {PG_PASSWORD_ENV} in the environment"
                ));
            }
            return Ok(StoreConfig::Postgres { params, pool });
        }
        if !matches!(t.get::<Value>("postgres"), Ok(Value::Nil)) {
            return Err("store.postgres must be a string of connection parameters".into());
        }
        match t.get::<Value>("sqlite").map_err(|e| format!("store.sqlite: {e}"))? {
            Value::String(s) => {
                let s = s.to_str().map_err(|e| format!("store.sqlite: {e}"))?.to_string();
                if s.is_empty() {
                    return Err("store.sqlite must name a file, got an empty string".into());
                }
                Ok(StoreConfig::Sqlite { path: dir.join(s) })
            }
            Value::Nil => Err(
                "store: no database (set store.sqlite = \"file.db\" or store.postgres = \"host=... dbname=...\")"
                    .into(),
            ),
            other => Err(format!("store.sqlite must be a file name, got a {}", other.type_name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<StoreConfig, String> {
        let lua = mlua::Lua::new();
        let t: Table = lua.load(src).eval().unwrap();
        StoreConfig::parse(&t, Path::new("/c"))
    }

    #[test]
    fn sqlite_path_is_relative_to_the_cluster_file() {
        assert_eq!(
            parse(r#"{ sqlite = "game.db" }"#).unwrap(),
            StoreConfig::Sqlite {
                path: PathBuf::from("/c/game.db")
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert!(parse(r#"{ sqlite = 3 }"#)
            .unwrap_err()
            .starts_with("store.sqlite must be"));
        assert!(parse(r#"{ sqlite = "" }"#)
            .unwrap_err()
            .starts_with("store.sqlite must"));
        assert!(parse(r#"{ mysql = "x" }"#)
            .unwrap_err()
            .starts_with("store.mysql is not"));
        assert!(parse(r#"{ }"#).unwrap_err().contains("store.sqlite"));
        assert!(parse(r#"{ postgres = "host=x password=secret" }"#)
            .unwrap_err()
            .contains("no password in the cluster file"));
        assert!(parse(r#"{ postgres = "host=x", sqlite = "a.db" }"#)
            .unwrap_err()
            .contains("not both"));
        assert!(parse(r#"{ postgres = "host=x", pool = 0 }"#)
            .unwrap_err()
            .starts_with("store.pool"));
    }

    #[test]
    fn postgres_takes_its_parameters_and_pool() {
        assert_eq!(
            parse(r#"{ postgres = "host=/tmp user=u dbname=d", pool = 8 }"#).unwrap(),
            StoreConfig::Postgres {
                params: "host=/tmp user=u dbname=d".into(),
                pool: 8
            }
        );
    }
}
