//! A DB node's storage: the `store` table of its entry in the cluster file.
//!
//! ```lua
//! db_1 = { type = "DB", addr = "127.0.0.1:7110", store = { sqlite = "game.db" } },
//! ```
//!
//! `sqlite` is the database file, relative to the cluster file. (PostgreSQL,
//! `store::Postgres`, is not reachable from the cluster file yet.)

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
}

impl StoreConfig {
    /// Reads a node's `store` table; `dir` is the cluster file's folder.
    ///
    /// # Errors
    ///
    /// A text naming the field at fault (`store.sqlite ...`).
    pub fn parse(t: &Table, dir: &Path) -> Result<StoreConfig, String> {
        const KNOWN: [&str; 1] = ["sqlite"];
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
        match t.get::<Value>("sqlite").map_err(|e| format!("store.sqlite: {e}"))? {
            Value::String(s) => {
                let s = s.to_str().map_err(|e| format!("store.sqlite: {e}"))?.to_string();
                if s.is_empty() {
                    return Err("store.sqlite must name a file, got an empty string".into());
                }
                Ok(StoreConfig::Sqlite { path: dir.join(s) })
            }
            Value::Nil => Err("store: no database (set store.sqlite = \"file.db\")".into()),
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
        assert!(parse(r#"{ postgres = "x" }"#)
            .unwrap_err()
            .starts_with("store.postgres is not"));
        assert!(parse(r#"{ }"#).unwrap_err().contains("store.sqlite"));
    }
}
