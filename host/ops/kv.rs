//! The key-value interface under the ops store, and its errors.

use std::path::PathBuf;

/// Errors of the ops store.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The store location is not understood.
    #[error("bad store location '{0}': give a folder or zk://host:port[,host:port]/root")]
    BadLocation(String),
    /// A file of the folder store could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// ZooKeeper refused or failed an operation.
    #[error("ZooKeeper: {0}")]
    Zk(String),
    /// ZooKeeper refused our credentials (or has none for a creator-only path).
    #[error("ZooKeeper refused access to {0} (wrong or missing LUAHOST_ZK_AUTH credentials?)")]
    Denied(String),
    /// A record does not parse.
    #[error("record {key} is malformed: {why}")]
    Malformed {
        /// The key.
        key: String,
        /// The parse error.
        why: String,
    },
    /// A key that must be new exists already.
    #[error("{0} exists already")]
    Exists(String),
    /// A name that cannot be a key (empty, `/`, `..`, control characters).
    #[error("'{0}' is not a valid name (letters, digits, '.', '_', '-', at most 64)")]
    BadName(String),
}

/// A key-value backend: what a store needs from a folder or from ZooKeeper.
/// Keys are relative paths of at most two segments.
pub trait Kv: Send + Sync {
    /// The value at `key`, if any.
    ///
    /// # Errors
    /// The backend's failure.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, OpsError>;
    /// Sets `key` (created if missing), atomically: a reader sees the old
    /// value or the new one, never a mix.
    ///
    /// # Errors
    /// The backend's failure.
    fn put(&self, key: &str, value: &[u8]) -> Result<(), OpsError>;
    /// Creates `key` only if it does not exist; false when it did.
    ///
    /// # Errors
    /// The backend's failure.
    fn create(&self, key: &str, value: &[u8]) -> Result<bool, OpsError>;
    /// Deletes `key`; false when it was not there.
    ///
    /// # Errors
    /// The backend's failure.
    fn delete(&self, key: &str) -> Result<bool, OpsError>;
    /// The names under folder `dir` (not recursive), sorted.
    ///
    /// # Errors
    /// The backend's failure.
    fn list(&self, dir: &str) -> Result<Vec<String>, OpsError>;
    /// Appends one entry to the log `log` (safe from several processes).
    ///
    /// # Errors
    /// The backend's failure.
    fn append(&self, log: &str, entry: &[u8]) -> Result<(), OpsError>;
    /// The last `n` entries of the log `log`, oldest first.
    ///
    /// # Errors
    /// The backend's failure.
    fn tail(&self, log: &str, n: usize) -> Result<Vec<Vec<u8>>, OpsError>;
}
