//! The ZooKeeper store (production): the keys are znodes under
//! `<root>/ops` of the cluster's ensemble; with credentials
//! (`LUAHOST_ZK_AUTH=user:password`, digest scheme) every znode it creates
//! is creator-only for that identity, so another session (without them, or
//! with others) gets `NoAuth`. The audit log is a folder of persistent
//! sequential znodes.
//!
//! zookeeper-client is asynchronous; this store runs it on a small runtime
//! of its own and waits for each operation, so that its callers (threads,
//! or tokio's blocking pool) need not be inside any runtime.

use std::sync::Mutex;
use std::time::Duration;

use zookeeper_client::{Acls, Client, CreateMode, Error as ZkError};

use super::kv::{Kv, OpsError};

/// How long a session may be unheard before ZooKeeper ends it.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest any one operation may take.
const OP_TIMEOUT: Duration = Duration::from_secs(15);

/// The ops keys in a ZooKeeper ensemble.
pub struct ZkKv {
    rt: tokio::runtime::Runtime,
    hosts: String,
    base: String,
    auth: Option<String>,
    client: Mutex<Client>,
}

impl std::fmt::Debug for ZkKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ZkKv({}{})", self.hosts, self.base)
    }
}

fn zk_err(path: &str, e: ZkError) -> OpsError {
    match e {
        ZkError::NoAuth | ZkError::AuthFailed | ZkError::InvalidAcl => OpsError::Denied(path.to_string()),
        other => OpsError::Zk(format!("{path}: {other}")),
    }
}

async fn connect(hosts: &str, auth: Option<&str>) -> Result<Client, OpsError> {
    let mut c = Client::connector().with_session_timeout(SESSION_TIMEOUT);
    if let Some(a) = auth {
        c = c.with_auth("digest", a.as_bytes());
    }
    match tokio::time::timeout(OP_TIMEOUT, c.connect(hosts)).await {
        Err(_) => Err(OpsError::Zk(format!("no answer from ZooKeeper at {hosts}"))),
        Ok(Err(ZkError::AuthFailed)) => Err(OpsError::Denied(hosts.to_string())),
        Ok(Err(e)) => Err(OpsError::Zk(format!("cannot connect to {hosts}: {e}"))),
        Ok(Ok(c)) => Ok(c),
    }
}

impl ZkKv {
    /// Connects to `hosts` and keeps its keys under `<root>/ops`.
    ///
    /// # Errors
    /// [`OpsError::Zk`] when ZooKeeper does not answer, [`OpsError::Denied`]
    /// when it refuses the credentials.
    pub fn connect(hosts: &str, root: &str, auth: Option<String>) -> Result<ZkKv, OpsError> {
        if !root.starts_with('/') || root.len() < 2 || root.ends_with('/') {
            return Err(OpsError::BadLocation(format!("zk://{hosts}{root}")));
        }
        if auth.as_deref().is_some_and(|a| !a.contains(':')) {
            return Err(OpsError::Zk("LUAHOST_ZK_AUTH must be 'user:password'".into()));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ops-zk")
            .enable_all()
            .build()
            .map_err(|e| OpsError::Zk(format!("cannot start a runtime: {e}")))?;
        let h = hosts.to_string();
        let a = auth.clone();
        let client = wait(&rt, async move { connect(&h, a.as_deref()).await })??;
        if auth.is_none() {
            tracing::warn!(
                "ops store in ZooKeeper without LUAHOST_ZK_AUTH: anyone who reaches ZooKeeper may read and write it"
            );
        }
        Ok(ZkKv {
            rt,
            hosts: hosts.to_string(),
            base: format!("{root}/ops"),
            auth,
            client: Mutex::new(client),
        })
    }

    fn acls(&self) -> Acls<'static> {
        if self.auth.is_some() {
            Acls::creator_all()
        } else {
            Acls::anyone_all()
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}/{key}", self.base)
    }

    /// Runs `op` with the session's client; an expired session is replaced
    /// once and the operation tried again.
    fn run<T, F, Fut>(&self, path: &str, op: F) -> Result<T, OpsError>
    where
        T: Send + 'static,
        F: Fn(Client, String, Acls<'static>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ZkError>> + Send + 'static,
    {
        for attempt in 0..2 {
            let client = self.client.lock().map_err(|_| OpsError::Zk("poisoned".into()))?.clone();
            let fut = op(client, path.to_string(), self.acls());
            match wait(&self.rt, async move { tokio::time::timeout(OP_TIMEOUT, fut).await })? {
                Err(_) => return Err(OpsError::Zk(format!("{path}: no answer within {OP_TIMEOUT:?}"))),
                Ok(Err(ZkError::SessionExpired | ZkError::ConnectionLoss)) if attempt == 0 => {
                    let h = self.hosts.clone();
                    let a = self.auth.clone();
                    let fresh = wait(&self.rt, async move { connect(&h, a.as_deref()).await })??;
                    *self.client.lock().map_err(|_| OpsError::Zk("poisoned".into()))? = fresh;
                }
                Ok(r) => return r.map_err(|e| zk_err(path, e)),
            }
        }
        Err(OpsError::Zk(format!("{path}: the session keeps expiring")))
    }

    /// Creates the folders above `path` that are missing.
    fn ensure_parents(&self, path: &str) -> Result<(), OpsError> {
        let mut at = String::new();
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for s in &segs[..segs.len() - 1] {
            at.push('/');
            at.push_str(s);
            self.run(&at, |c, p, acls| async move {
                match c.create(&p, b"", &CreateMode::Persistent.with_acls(acls)).await {
                    Ok(_) | Err(ZkError::NodeExists) => Ok(()),
                    Err(e) => Err(e),
                }
            })?;
        }
        Ok(())
    }
}

/// Runs `fut` on `rt` and waits for it from any thread.
fn wait<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, OpsError> {
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .map_err(|_| OpsError::Zk("the store's runtime has stopped".into()))
}

impl Kv for ZkKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, OpsError> {
        self.run(&self.path(key), |c, p, _| async move {
            match c.get_data(&p).await {
                Ok((d, _)) => Ok(Some(d)),
                Err(ZkError::NoNode) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), OpsError> {
        let path = self.path(key);
        let v = value.to_vec();
        let set = |v: Vec<u8>| {
            self.run(&path, move |c, p, acls| {
                let v = v.clone();
                async move {
                    match c.set_data(&p, &v, None).await {
                        Ok(_) => Ok(true),
                        Err(ZkError::NoNode) => match c.create(&p, &v, &CreateMode::Persistent.with_acls(acls)).await {
                            Ok(_) => Ok(true),
                            Err(ZkError::NoNode) => Ok(false),
                            Err(ZkError::NodeExists) => c.set_data(&p, &v, None).await.map(|_| true),
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    }
                }
            })
        };
        if !set(v.clone())? {
            self.ensure_parents(&path)?;
            set(v)?;
        }
        Ok(())
    }

    fn create(&self, key: &str, value: &[u8]) -> Result<bool, OpsError> {
        let path = self.path(key);
        let mk = |v: Vec<u8>| {
            self.run(&path, move |c, p, acls| {
                let v = v.clone();
                async move {
                    match c.create(&p, &v, &CreateMode::Persistent.with_acls(acls)).await {
                        Ok(_) => Ok(Some(true)),
                        Err(ZkError::NodeExists) => Ok(Some(false)),
                        Err(ZkError::NoNode) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
        };
        match mk(value.to_vec())? {
            Some(b) => Ok(b),
            None => {
                self.ensure_parents(&path)?;
                Ok(mk(value.to_vec())?.unwrap_or(false))
            }
        }
    }

    fn delete(&self, key: &str) -> Result<bool, OpsError> {
        self.run(&self.path(key), |c, p, _| async move {
            match c.delete(&p, None).await {
                Ok(()) => Ok(true),
                Err(ZkError::NoNode) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    fn list(&self, dir: &str) -> Result<Vec<String>, OpsError> {
        let mut v = self.run(&self.path(dir), |c, p, _| async move {
            match c.list_children(&p).await {
                Ok(v) => Ok(v),
                Err(ZkError::NoNode) => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        })?;
        v.sort();
        Ok(v)
    }

    fn append(&self, log: &str, entry: &[u8]) -> Result<(), OpsError> {
        let path = format!("{}/e-", self.path(log));
        let mk = |v: Vec<u8>| {
            self.run(&path, move |c, p, acls| {
                let v = v.clone();
                async move {
                    match c
                        .create(&p, &v, &CreateMode::PersistentSequential.with_acls(acls))
                        .await
                    {
                        Ok(_) => Ok(true),
                        Err(ZkError::NoNode) => Ok(false),
                        Err(e) => Err(e),
                    }
                }
            })
        };
        if !mk(entry.to_vec())? {
            self.ensure_parents(&path)?;
            mk(entry.to_vec())?;
        }
        Ok(())
    }

    fn tail(&self, log: &str, n: usize) -> Result<Vec<Vec<u8>>, OpsError> {
        let names = self.list(log)?;
        let mut out = Vec::new();
        for name in &names[names.len().saturating_sub(n)..] {
            if let Some(v) = self.get(&format!("{log}/{name}"))? {
                out.push(v);
            }
        }
        Ok(out)
    }
}
