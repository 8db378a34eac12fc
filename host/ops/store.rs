//! The ops store (seed 004's globaldb): one typed interface, [`OpsStore`],
//! over two key-value backends ([`Kv`]): a local folder (the embedded
//! default, [`super::filestore`]) and ZooKeeper (production,
//! [`super::zkstore`]).
//!
//! Layout (keys are `/`-separated paths under the store's root):
//!
//! | key | holds |
//! | --- | --- |
//! | `world` | [`World`]: region -> machine ip -> configured processes |
//! | `procs/<region.ip.name>` | [`ProcRecord`], written by the process itself |
//! | `want/<ip>` | which processes of a machine its daemon should keep running |
//! | `daemons/<ip>` | [`DaemonRecord`]: where the machine's daemon listens |
//! | `users/<name>` | [`UserRecord`]: role and login verifier (argon2id) |
//! | `audit` | [`AuditEntry`] per command, appended |
//! | `secret` | 32 random bytes daemons prove to each other |
//! | `bootstrap` | the verifier of the one-time bootstrap token, while no admin exists |

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::auth::Verifier;
pub use super::kv::{Kv, OpsError};
use super::roles::Role;

/// One configured process of a machine (seed 004's `{type, name, host, port}`):
/// a node of a cluster file, started as `luahost run --cluster C --node N`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcConfig {
    /// The node's name in the cluster file (unique on its machine).
    pub name: String,
    /// The cluster file (or folder holding cluster.lua) on that machine.
    pub cluster: PathBuf,
    /// Server type, for nodes the cluster file does not list (ZooKeeper).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub stype: Option<String>,
    /// Listen address, with `type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
}

/// The machines of one region, by ip.
pub type Region = BTreeMap<String, Vec<ProcConfig>>;

/// The whole layout: regions by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct World {
    /// Regions by name.
    pub regions: BTreeMap<String, Region>,
}

impl World {
    /// The region that lists machine `ip`, and its processes.
    pub fn machine(&self, ip: &str) -> Option<(&str, &[ProcConfig])> {
        self.regions
            .iter()
            .find_map(|(r, m)| m.get(ip).map(|p| (r.as_str(), p.as_slice())))
    }

    /// Every machine: (region, ip, processes).
    pub fn machines(&self) -> impl Iterator<Item = (&str, &str, &[ProcConfig])> {
        self.regions
            .iter()
            .flat_map(|(r, m)| m.iter().map(move |(ip, p)| (r.as_str(), ip.as_str(), p.as_slice())))
    }

    /// Checks names (keys are made of them) and that a machine's process
    /// names are unique.
    ///
    /// # Errors
    /// [`OpsError::BadName`] or [`OpsError::Exists`] naming the first problem.
    pub fn check(&self) -> Result<(), OpsError> {
        for (r, ip, procs) in self.machines() {
            check_name(r)?;
            check_name(ip)?;
            let mut seen = std::collections::HashSet::new();
            for p in procs {
                check_name(&p.name)?;
                if !seen.insert(&p.name) {
                    return Err(OpsError::Exists(format!("process {} on {ip}", p.name)));
                }
            }
        }
        Ok(())
    }
}

/// The key of a process record: `region.ip.name` (seed 004).
pub fn proc_key(region: &str, ip: &str, name: &str) -> String {
    format!("{region}.{ip}.{name}")
}

/// What a node reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcStats {
    /// Messages (calls and sends) handled per second since the last report.
    pub msgs_per_s: f64,
    /// Messages waiting: queued for peers plus the control mailbox.
    pub mailbox: u64,
    /// Entities registered with `Entity.set`.
    pub entities: u64,
    /// Memory of the node's Lua state, KiB.
    pub lua_kib: u64,
    /// Connections: verified peers and accepted ones.
    pub connections: u64,
}

/// Whether a process meant to be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcState {
    /// Running (alive while `lastupdate` is fresh).
    Running,
    /// Stopped gracefully.
    Stopped,
}

/// A process record (seed 004: info, pid, lastupdate, startcount), written
/// by the node process itself so that a daemon's death loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcRecord {
    /// `region.ip.name`.
    pub key: String,
    /// The process id.
    pub pid: u32,
    /// Starts so far (each start adds one).
    pub startcount: u32,
    /// Milliseconds since the Unix epoch of the last refresh.
    pub lastupdate: u64,
    /// Running or stopped.
    pub state: ProcState,
    /// The latest statistics.
    pub info: ProcStats,
}

/// Where a machine's daemon listens (for commands routed to it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonRecord {
    /// The machine.
    pub ip: String,
    /// Its ctl listener.
    pub addr: String,
    /// Its process id.
    pub pid: u32,
    /// Milliseconds since the Unix epoch of its last refresh.
    pub lastupdate: u64,
}

/// A user of `luahost ctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Login name.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// What the daemon checks a login against (no password is stored).
    pub verifier: Verifier,
    /// Milliseconds since the Unix epoch of its creation.
    pub created: u64,
}

/// One audited command: who, what, when, result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// The user (or `@bootstrap`).
    pub user: String,
    /// The machine of the daemon that took the command.
    pub via: String,
    /// The command as typed.
    pub command: String,
    /// `ok`, `refused: ...` or `error: ...`.
    pub result: String,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A name usable as one key segment.
///
/// # Errors
/// [`OpsError::BadName`].
pub fn check_name(name: &str) -> Result<(), OpsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(OpsError::BadName(name.to_string()))
    }
}

/// The typed store over a backend.
pub struct OpsStore {
    kv: Box<dyn Kv>,
    location: String,
}

impl std::fmt::Debug for OpsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OpsStore({})", self.location)
    }
}

fn parse<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, OpsError> {
    serde_json::from_slice(bytes).map_err(|e| OpsError::Malformed {
        key: key.to_string(),
        why: e.to_string(),
    })
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

impl OpsStore {
    /// Opens the store at `location`: `zk://host:port[,host:port]/root`
    /// (ZooKeeper, credentials from `LUAHOST_ZK_AUTH=user:password`), or a
    /// folder (created if missing).
    ///
    /// # Errors
    /// A bad location, or the backend cannot be reached.
    pub fn open(location: &str) -> Result<OpsStore, OpsError> {
        let auth = std::env::var("LUAHOST_ZK_AUTH").ok().filter(|a| !a.is_empty());
        OpsStore::open_with(location, auth)
    }

    /// [`OpsStore::open`] with ZooKeeper credentials given (`user:password`).
    ///
    /// # Errors
    /// As [`OpsStore::open`].
    pub fn open_with(location: &str, auth: Option<String>) -> Result<OpsStore, OpsError> {
        let kv: Box<dyn Kv> = if let Some(rest) = location.strip_prefix("zk://") {
            let (hosts, root) = rest
                .split_once('/')
                .ok_or_else(|| OpsError::BadLocation(location.to_string()))?;
            Box::new(super::zkstore::ZkKv::connect(hosts, &format!("/{root}"), auth)?)
        } else if location.is_empty() || location.contains("://") {
            return Err(OpsError::BadLocation(location.to_string()));
        } else {
            Box::new(super::filestore::FileKv::open(location)?)
        };
        Ok(OpsStore {
            kv,
            location: location.to_string(),
        })
    }

    /// A store over a given backend.
    pub fn with_kv(kv: Box<dyn Kv>, location: &str) -> OpsStore {
        OpsStore {
            kv,
            location: location.to_string(),
        }
    }

    /// Where it is (as given to [`OpsStore::open`]).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, OpsError> {
        self.kv.get(key)?.map(|b| parse(key, &b)).transpose()
    }

    /// The layout (empty when none was loaded).
    ///
    /// # Errors
    /// The backend's failure or a malformed record.
    pub fn world(&self) -> Result<World, OpsError> {
        Ok(self.get("world")?.unwrap_or_default())
    }

    /// Replaces the layout.
    ///
    /// # Errors
    /// A bad name in it, or the backend's failure.
    pub fn set_world(&self, w: &World) -> Result<(), OpsError> {
        w.check()?;
        self.kv.put("world", &json(w))
    }

    /// The record of process `key`.
    ///
    /// # Errors
    /// The backend's failure or a malformed record.
    pub fn proc(&self, key: &str) -> Result<Option<ProcRecord>, OpsError> {
        self.get(&format!("procs/{key}"))
    }

    /// Writes a process record.
    ///
    /// # Errors
    /// The backend's failure.
    pub fn put_proc(&self, rec: &ProcRecord) -> Result<(), OpsError> {
        self.kv.put(&format!("procs/{}", rec.key), &json(rec))
    }

    /// Every process record (malformed ones are skipped).
    ///
    /// # Errors
    /// The backend's failure.
    pub fn procs(&self) -> Result<Vec<ProcRecord>, OpsError> {
        let mut out = Vec::new();
        for k in self.kv.list("procs")? {
            if let Ok(Some(r)) = self.proc(&k) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Which processes of machine `ip` its daemon keeps running (by name).
    ///
    /// # Errors
    /// The backend's failure or a malformed record.
    pub fn wanted(&self, ip: &str) -> Result<BTreeMap<String, bool>, OpsError> {
        Ok(self.get(&format!("want/{ip}"))?.unwrap_or_default())
    }

    /// Records which processes of `ip` should run.
    ///
    /// # Errors
    /// The backend's failure.
    pub fn set_wanted(&self, ip: &str, want: &BTreeMap<String, bool>) -> Result<(), OpsError> {
        self.kv.put(&format!("want/{ip}"), &json(want))
    }

    /// The daemon record of machine `ip`.
    ///
    /// # Errors
    /// The backend's failure or a malformed record.
    pub fn daemon(&self, ip: &str) -> Result<Option<DaemonRecord>, OpsError> {
        self.get(&format!("daemons/{ip}"))
    }

    /// Writes a daemon record.
    ///
    /// # Errors
    /// The backend's failure.
    pub fn put_daemon(&self, rec: &DaemonRecord) -> Result<(), OpsError> {
        self.kv.put(&format!("daemons/{}", rec.ip), &json(rec))
    }

    /// A user.
    ///
    /// # Errors
    /// The backend's failure or a malformed record.
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, OpsError> {
        check_name(name)?;
        self.get(&format!("users/{name}"))
    }

    /// Adds a user; [`OpsError::Exists`] if the name is taken.
    ///
    /// # Errors
    /// As said, a bad name, or the backend's failure.
    pub fn add_user(&self, u: &UserRecord) -> Result<(), OpsError> {
        check_name(&u.name)?;
        if self.kv.create(&format!("users/{}", u.name), &json(u))? {
            Ok(())
        } else {
            Err(OpsError::Exists(format!("user {}", u.name)))
        }
    }

    /// Every user, by name.
    ///
    /// # Errors
    /// The backend's failure.
    pub fn users(&self) -> Result<Vec<UserRecord>, OpsError> {
        let mut out = Vec::new();
        for k in self.kv.list("users")? {
            if let Ok(Some(u)) = self.user(&k) {
                out.push(u);
            }
        }
        Ok(out)
    }

    /// Deletes a user; false when there was none.
    ///
    /// # Errors
    /// A bad name or the backend's failure.
    pub fn del_user(&self, name: &str) -> Result<bool, OpsError> {
        check_name(name)?;
        self.kv.delete(&format!("users/{name}"))
    }

    /// Appends to the audit log.
    ///
    /// # Errors
    /// The backend's failure.
    pub fn audit(&self, e: &AuditEntry) -> Result<(), OpsError> {
        self.kv.append("audit", &serde_json::to_vec(e).unwrap_or_default())
    }

    /// The last `n` audit entries, oldest first.
    ///
    /// # Errors
    /// The backend's failure.
    pub fn audit_log(&self, n: usize) -> Result<Vec<AuditEntry>, OpsError> {
        Ok(self
            .kv
            .tail("audit", n)?
            .iter()
            .filter_map(|b| serde_json::from_slice(b).ok())
            .collect())
    }

    /// The daemons' shared secret, made on first use (the first daemon's
    /// write wins; every daemon then reads the same).
    ///
    /// # Errors
    /// The backend's failure or a malformed record.
    pub fn secret(&self) -> Result<[u8; 32], OpsError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        if self.kv.get("secret")?.is_none() {
            let mut s = [0u8; 32];
            getrandom::fill(&mut s).map_err(|e| OpsError::Zk(format!("no randomness: {e}")))?;
            self.kv.create("secret", b64.encode(s).as_bytes())?;
        }
        let raw = self.kv.get("secret")?.unwrap_or_default();
        let bad = |why: String| OpsError::Malformed {
            key: "secret".into(),
            why,
        };
        let v = b64
            .decode(String::from_utf8_lossy(&raw).trim())
            .map_err(|e| bad(e.to_string()))?;
        v.try_into().map_err(|_| bad("not 32 bytes".into()))
    }

    /// The bootstrap token's verifier, while one is pending.
    ///
    /// # Errors
    /// The backend's failure or a malformed record.
    pub fn bootstrap(&self) -> Result<Option<Verifier>, OpsError> {
        self.get("bootstrap")
    }

    /// Records a bootstrap verifier if none is pending; false if one was.
    ///
    /// # Errors
    /// The backend's failure.
    pub fn offer_bootstrap(&self, v: &Verifier) -> Result<bool, OpsError> {
        self.kv.create("bootstrap", &json(v))
    }

    /// Ends the bootstrap (the token is spent); false if none was pending.
    ///
    /// # Errors
    /// The backend's failure.
    pub fn end_bootstrap(&self) -> Result<bool, OpsError> {
        self.kv.delete("bootstrap")
    }
}
