//! Persistent documents for the DB node (issue 16): one interface,
//! [`Backend`], over the databases, and [`Store`], the handle a node uses.
//!
//! The data model: collections of documents, each under a [`Key`] (an integer
//! or a string). A document's value is MessagePack bytes, opaque here (the
//! schema types them above this layer); beside it the store keeps its
//! `version` (1 when first written, +1 per write, never reused: a delete
//! leaves a tombstone that keeps counting) and its `epoch`, the epoch of the
//! node that wrote it last. A write whose epoch is lower than the stored one
//! is refused ([`StoreError::StaleEpoch`]): a node declared dead cannot
//! overwrite the state of its successor. A write states what it expects to
//! find ([`Expect`]), so a stale write fails ([`StoreError::Conflict`])
//! instead of overwriting newer data. Secondary indexes are values the
//! caller passes with each write (`index name -> value`); a write replaces
//! all of the document's index entries, so an old value is never found.
//!
//! [`Backend`]s are blocking; [`Store`] runs them on a few threads of its
//! own and hands back futures, so a node's Lua thread never waits on the
//! disk or the network: the runtime awaits the future in a task of the node
//! and hands the result to Lua like a call's reply.
//!
//! Owns the database connections and their threads. May use `codec` and
//! `schema`; knows nothing of sockets, Lua or the node.

pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

pub use postgres::Postgres;
pub use sqlite::{Sqlite, SqliteOptions, Synchronous};

/// The key of a document in its collection. `Int(1)` and `Str("1")` are two
/// different keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// An integer key (an entity id).
    Int(i64),
    /// A string key (an account name).
    Str(String),
}

/// A value of a secondary index: an integer or a string, like a key.
pub type IndexValue = Key;

impl From<i64> for Key {
    fn from(v: i64) -> Self {
        Key::Int(v)
    }
}

impl From<&str> for Key {
    fn from(v: &str) -> Self {
        Key::Str(v.to_string())
    }
}

impl From<String> for Key {
    fn from(v: String) -> Self {
        Key::Str(v)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// A stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    /// Its MessagePack bytes, as saved.
    pub value: Vec<u8>,
    /// Its version: 1 for the first write, +1 per write.
    pub version: u64,
    /// The epoch of the node that wrote it last.
    pub epoch: u64,
}

/// What a write expects to find (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Anything: the write always applies (epochs still fence it).
    Any,
    /// No document (never written, or deleted).
    Absent,
    /// The document at exactly this version (the one the writer loaded).
    Version(u64),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Any => f.write_str("any"),
            Expect::Absent => f.write_str("absent"),
            Expect::Version(v) => write!(f, "version {v}"),
        }
    }
}

/// One write: a document, what the writer expects to find, the writer's
/// epoch and the document's index values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Save {
    /// The collection.
    pub coll: String,
    /// The document's key.
    pub key: Key,
    /// The document's MessagePack bytes.
    pub value: Vec<u8>,
    /// What must be there for the write to apply.
    pub expect: Expect,
    /// The writer's epoch.
    pub epoch: u64,
    /// Index entries of the document, `(index name, value)`; one name may
    /// appear several times (a document listed under several values).
    /// They replace the document's earlier entries.
    pub indexes: Vec<(String, IndexValue)>,
}

impl Save {
    /// A write of `value` under `coll`/`key` expecting anything, at epoch 0,
    /// without index entries.
    pub fn new(coll: impl Into<String>, key: impl Into<Key>, value: impl Into<Vec<u8>>) -> Self {
        Save {
            coll: coll.into(),
            key: key.into(),
            value: value.into(),
            expect: Expect::Any,
            epoch: 0,
            indexes: Vec::new(),
        }
    }

    /// Sets what the write expects to find.
    pub fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }

    /// Sets the writer's epoch.
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// Adds an index entry.
    pub fn index(mut self, name: impl Into<String>, value: impl Into<IndexValue>) -> Self {
        self.indexes.push((name.into(), value.into()));
        self
    }
}

/// Why an operation of the store failed. Its text starts with its kind
/// (`conflict:`, `stale epoch:`, ...) like a call's errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The document is not what the write expected (someone else wrote it
    /// since it was loaded); nothing was written.
    #[error("conflict: {coll}/{key}: expected {expected}, found {}", found_text(*.found))]
    Conflict {
        /// The collection.
        coll: String,
        /// The document's key.
        key: Key,
        /// What the write expected.
        expected: Expect,
        /// The version there (`None`: no document).
        found: Option<u64>,
    },
    /// The write's epoch is lower than the stored document's: the writer has
    /// been superseded (declared dead and replaced); nothing was written.
    #[error("stale epoch: {coll}/{key}: written with epoch {epoch}, stored by epoch {stored}")]
    StaleEpoch {
        /// The collection.
        coll: String,
        /// The document's key.
        key: Key,
        /// The writer's epoch.
        epoch: u64,
        /// The epoch of the stored document.
        stored: u64,
    },
    /// The store's queue is full (more operations in flight than it holds);
    /// nothing was done, the caller may retry later.
    #[error("busy: the store's queue is full")]
    Busy,
    /// The store is closed (or its worker lost the operation); nothing more
    /// is done.
    #[error("closed: the store is closed")]
    Closed,
    /// The database failed; the text is the driver's.
    #[error("backend: {0}")]
    Backend(String),
    /// The database cannot be reached (its server is down or the
    /// connection broke); the next operation connects again. A write that
    /// failed so may or may not have been applied.
    #[error("unavailable: the database cannot be reached: {0}")]
    Unavailable(String),
}

fn found_text(found: Option<u64>) -> String {
    match found {
        Some(v) => format!("version {v}"),
        None => "absent".to_string(),
    }
}

/// What a backend found under a key before a write: the row, live or a
/// tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Current {
    /// The stored version (of the document or of its tombstone).
    pub version: u64,
    /// The stored epoch.
    pub epoch: u64,
    /// Whether a document is there (false: a tombstone).
    pub live: bool,
}

/// The rule every backend applies before a write of `coll`/`key` at `epoch`
/// expecting `expect`, given what is stored: the epoch first (a superseded
/// writer is told so even when its version would match), then the
/// expectation. Returns the version the write will have.
pub(crate) fn check_write(
    coll: &str,
    key: &Key,
    expect: Expect,
    epoch: u64,
    current: Option<Current>,
) -> Result<u64, StoreError> {
    if let Some(c) = current {
        if epoch < c.epoch {
            return Err(StoreError::StaleEpoch {
                coll: coll.to_string(),
                key: key.clone(),
                epoch,
                stored: c.epoch,
            });
        }
    }
    let found = current.filter(|c| c.live).map(|c| c.version);
    let ok = match expect {
        Expect::Any => true,
        Expect::Absent => found.is_none(),
        Expect::Version(v) => found == Some(v),
    };
    if !ok {
        return Err(StoreError::Conflict {
            coll: coll.to_string(),
            key: key.clone(),
            expected: expect,
            found,
        });
    }
    Ok(current.map_or(1, |c| c.version + 1))
}

/// A database behind the store. Methods block; [`Store`] calls them from
/// its own threads, several at once.
pub trait Backend: Send + Sync + 'static {
    /// The document under `coll`/`key`, if there is one.
    fn load(&self, coll: &str, key: &Key) -> Result<Option<Doc>, StoreError>;

    /// Writes one document (see [`Save`]); returns its new version.
    fn save(&self, save: &Save) -> Result<u64, StoreError>;

    /// Deletes the document under `coll`/`key` if what is there matches
    /// `expect` and `epoch` is not stale; returns whether there was one.
    /// The version keeps counting (a later save gets the next one).
    fn delete(&self, coll: &str, key: &Key, expect: Expect, epoch: u64) -> Result<bool, StoreError>;

    /// The documents of `coll` whose index `index` has `value`, by key, at
    /// most `limit`.
    fn query(&self, coll: &str, index: &str, value: &IndexValue, limit: usize) -> Result<Vec<(Key, Doc)>, StoreError>;

    /// Writes all of `saves` in one transaction, in order, or none of them:
    /// the first that fails fails the batch with its error. Returns the new
    /// versions in order.
    fn batch(&self, saves: &[Save]) -> Result<Vec<u64>, StoreError>;

    /// Whether [`Store`] should hand this backend its saves and loads in
    /// groups ([`Backend::save_group`], [`Backend::load_group`]) rather than
    /// one by one on several threads: true where writes are serialised
    /// anyway (SQLite has one writer) and a commit costs a sync to disk, so
    /// one commit for many saves is the whole gain, and where each read
    /// transaction costs file locks (one for many loads). False by default.
    fn groups(&self) -> bool {
        false
    }

    /// The documents under `keys` (collection, key), in order, read in one
    /// read transaction where the backend has them. The default loads them
    /// one by one.
    fn load_group(&self, keys: &[(String, Key)]) -> Vec<Result<Option<Doc>, StoreError>> {
        keys.iter().map(|(c, k)| self.load(c, k)).collect()
    }

    /// Writes each of `saves` independently (one failing does not fail the
    /// others; each gets its own result, in order), all made durable by one
    /// commit: a result is `Ok` only once that commit is done. The default
    /// saves them one by one.
    fn save_group(&self, saves: &[Save]) -> Vec<Result<u64, StoreError>> {
        saves.iter().map(|s| self.save(s)).collect()
    }
}

/// How many threads a [`Store`] runs and how many operations it queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Worker threads calling the backend (at least 1).
    pub threads: usize,
    /// Operations waiting for a worker (and, on a backend with
    /// [`Backend::groups`], saves and loads waiting for their group) before
    /// the store answers [`StoreError::Busy`].
    pub queue: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            threads: 4,
            queue: 65_536,
        }
    }
}

type Job = Box<dyn FnOnce(&dyn Backend) + Send>;

/// The asynchronous handle on a [`Backend`]: each operation is queued for
/// one of the store's worker threads at once (when the method is called)
/// and its result comes back through the returned future, which is `Send +
/// 'static` and needs no particular runtime. Clones share the workers.
///
/// Operations in flight at the same time run in no particular order (two
/// workers may take them); await one before starting the next where order
/// matters, or use [`Expect::Version`]. On a backend with
/// [`Backend::groups`] (SQLite) saves are committed in groups and loads read
/// in groups, one worker at a time each (see [`Backend::save_group`]).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    jobs: Mutex<Option<SyncSender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Saves waiting for the next group commit, loads for the next group
    /// read (backends with [`Backend::groups`]).
    saves: Arc<Mutex<Group<Save, u64>>>,
    loads: Arc<Mutex<Group<CollKey, Option<Doc>>>>,
    /// The most operations a group holds waiting ([`StoreOptions::queue`]).
    queue: usize,
}

/// Operations waiting for a group, and whether a worker is running groups
/// of them now (it takes these when it is done with its group, so at most
/// one worker runs such groups and each operation waits for at most one
/// group before its own).
struct Group<T, R> {
    ops: Vec<T>,
    replies: Vec<oneshot::Sender<Result<R, StoreError>>>,
    running: bool,
}

impl<T, R> Default for Group<T, R> {
    fn default() -> Self {
        Group {
            ops: Vec::new(),
            replies: Vec::new(),
            running: false,
        }
    }
}

/// A document's collection and key (what a load in a group names).
type CollKey = (String, Key);

/// How a group of operations is run on a backend.
type GroupRun<T, R> = fn(&dyn Backend, &[T]) -> Vec<Result<R, StoreError>>;

/// The most operations one group takes (the rest go in the next).
const GROUP_MAX: usize = 512;

/// Runs the waiting operations of `group` with `run`, a group at a time,
/// until none are left.
fn run_groups<T, R>(group: &Mutex<Group<T, R>>, run: impl Fn(&[T]) -> Vec<Result<R, StoreError>>) {
    loop {
        let (ops, replies) = {
            let mut g = lock(group);
            if g.ops.is_empty() {
                g.running = false;
                return;
            }
            let n = g.ops.len().min(GROUP_MAX);
            let ops: Vec<T> = g.ops.drain(..n).collect();
            let replies: Vec<_> = g.replies.drain(..n).collect();
            (ops, replies)
        };
        // a panicking backend fails this group only
        let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&ops))).unwrap_or_default();
        let mut results = results.into_iter();
        for reply in replies {
            let _ = reply.send(results.next().unwrap_or(Err(StoreError::Closed)));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// Starts the workers of `backend` with the default options.
    pub fn new(backend: impl Backend) -> Self {
        Self::with_options(Arc::new(backend), StoreOptions::default())
    }

    /// Starts `opts.threads` workers calling `backend`.
    pub fn with_options(backend: Arc<dyn Backend>, opts: StoreOptions) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Job>(opts.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..opts.threads.max(1))
            .map(|i| {
                let rx = rx.clone();
                let backend = backend.clone();
                std::thread::Builder::new()
                    .name(format!("store-{i}"))
                    .spawn(move || worker(&rx, &*backend))
                    .expect("spawning a store worker")
            })
            .collect();
        Store {
            inner: Arc::new(Inner {
                backend,
                jobs: Mutex::new(Some(tx)),
                threads: Mutex::new(threads),
                saves: Arc::default(),
                loads: Arc::default(),
                queue: opts.queue.max(1),
            }),
        }
    }

    /// The backend itself, to be called directly (blocking).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Queues `f` for a worker; the future gives its result.
    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Backend) -> Result<T, StoreError> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |b| {
            let _ = tx.send(f(b));
        });
        let queued = match &*lock(&self.inner.jobs) {
            None => Err(StoreError::Closed),
            Some(jobs) => match jobs.try_send(job) {
                Ok(()) => Ok(rx),
                Err(TrySendError::Full(_)) => Err(StoreError::Busy),
                Err(TrySendError::Disconnected(_)) => Err(StoreError::Closed),
            },
        };
        async move {
            match queued {
                Ok(rx) => rx.await.unwrap_or(Err(StoreError::Closed)),
                Err(e) => Err(e),
            }
        }
    }

    /// [`Backend::load`].
    /// On a backend with [`Backend::groups`] the load joins the loads
    /// waiting for the next group read.
    pub fn load(
        &self,
        coll: &str,
        key: impl Into<Key>,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Doc>, StoreError>> + Send + 'static>> {
        let (coll, key) = (coll.to_string(), key.into());
        if !self.inner.backend.groups() {
            return Box::pin(self.submit(move |b| b.load(&coll, &key)));
        }
        self.join(&self.inner.loads, (coll, key), |b, ops| b.load_group(ops))
    }

    /// [`Backend::save`]. On a backend with [`Backend::groups`] the save
    /// joins the saves waiting for the next commit (one worker commits them
    /// all at once: one sync to disk for the group).
    pub fn save(&self, save: Save) -> Pin<Box<dyn Future<Output = Result<u64, StoreError>> + Send + 'static>> {
        if !self.inner.backend.groups() {
            return Box::pin(self.submit(move |b| b.save(&save)));
        }
        self.join(&self.inner.saves, save, |b, ops| b.save_group(ops))
    }

    /// Adds `op` to `group`, with a worker to run the group unless one is
    /// running groups of these (it takes this one when done with its own).
    fn join<T: Send + 'static, R: Send + 'static>(
        &self,
        group: &Arc<Mutex<Group<T, R>>>,
        op: T,
        run: GroupRun<T, R>,
    ) -> Pin<Box<dyn Future<Output = Result<R, StoreError>> + Send + 'static>> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let jobs = lock(&self.inner.jobs);
            let Some(jobs) = &*jobs else {
                return Box::pin(std::future::ready(Err(StoreError::Closed)));
            };
            let mut g = lock(group);
            if g.ops.len() >= self.inner.queue {
                return Box::pin(std::future::ready(Err(StoreError::Busy)));
            }
            g.ops.push(op);
            g.replies.push(tx);
            let start = !g.running;
            g.running = true;
            drop(g);
            start.then(|| {
                let group = group.clone();
                let job: Job = Box::new(move |b| run_groups(&group, |ops| run(b, ops)));
                jobs.try_send(job)
            })
        };
        if let Some(Err(e)) = start {
            // no worker took the group: fail what waits for it
            let mut g = lock(group);
            g.running = false;
            g.ops.clear();
            let err = match e {
                TrySendError::Full(_) => StoreError::Busy,
                TrySendError::Disconnected(_) => StoreError::Closed,
            };
            for r in g.replies.drain(..) {
                let _ = r.send(Err(err.clone()));
            }
        }
        Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
    }

    /// [`Backend::delete`].
    pub fn delete(
        &self,
        coll: &str,
        key: impl Into<Key>,
        expect: Expect,
        epoch: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let (coll, key) = (coll.to_string(), key.into());
        self.submit(move |b| b.delete(&coll, &key, expect, epoch))
    }

    /// [`Backend::query`].
    pub fn query(
        &self,
        coll: &str,
        index: &str,
        value: impl Into<IndexValue>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(Key, Doc)>, StoreError>> + Send + 'static {
        let (coll, index, value) = (coll.to_string(), index.to_string(), value.into());
        self.submit(move |b| b.query(&coll, &index, &value, limit))
    }

    /// [`Backend::batch`].
    pub fn batch(&self, saves: Vec<Save>) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send + 'static {
        self.submit(move |b| b.batch(&saves))
    }

    /// The next value of the counter stored under `coll`/`key` (1 the
    /// first time): every call, from any node and across restarts, gets a
    /// value greater than all given before. The DB node hands these out as
    /// the epochs of owners claiming a document, so a later claim always
    /// fences an earlier one.
    pub fn next_counter(
        &self,
        coll: &str,
        key: impl Into<Key>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        let (coll, key) = (coll.to_string(), key.into());
        self.submit(move |b| next_counter(b, &coll, &key))
    }

    /// Stops taking operations (later ones fail with
    /// [`StoreError::Closed`]) and waits, blocking, until the queued ones
    /// are done and the workers have ended. Dropping the last handle stops
    /// the workers the same way without waiting.
    pub fn close(&self) {
        lock(&self.inner.jobs).take();
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Increments the counter under `coll`/`key` (8 bytes, big-endian) with a
/// version check, again while another writer gets in between.
fn next_counter(b: &dyn Backend, coll: &str, key: &Key) -> Result<u64, StoreError> {
    loop {
        let (current, expect) = match b.load(coll, key)? {
            Some(doc) => {
                let bytes: [u8; 8] = doc
                    .value
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Backend(format!("counter {coll}/{key} is not 8 bytes")))?;
                (u64::from_be_bytes(bytes), Expect::Version(doc.version))
            }
            None => (0, Expect::Absent),
        };
        let next = current + 1;
        match b.save(&Save::new(coll, key.clone(), next.to_be_bytes().to_vec()).expect(expect)) {
            Ok(_) => return Ok(next),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, backend: &dyn Backend) {
    loop {
        let job = lock(rx).recv();
        match job {
            // a panicking backend loses only this operation: its future
            // sees the sender dropped (Closed)
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(backend)));
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests;
