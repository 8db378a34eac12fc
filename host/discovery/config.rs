//! The cluster file: which nodes exist, where they listen, and the settings
//! they share (the form of seed 003's `clustername.lua`).
//!
//! ```lua
//! return {
//!   secret = "...",                -- required (or LUAHOST_SECRET): a long random string
//!   call_timeout = 5,              -- seconds, default for every remote call
//!   liveness = 10,                 -- seconds of silence before a peer is declared down
//!   verify_timeout = 5,            -- seconds an accepted connection has to verify
//!   max_message = 16777216,        -- bytes; larger messages are refused
//!   max_queue = 67108864,          -- bytes that may wait for one peer
//!   stop_grace = 5,                -- seconds handlers, then onStop, get in a graceful stop
//!   scripts = { "../../scripts" }, -- game script roots, relative to this file
//!   settings = { DemoTick = 0.3 },  -- fields of `conf` on every node
//!   nodes = {
//!     db_1   = { type = "DB",   addr = "127.0.0.1:7101", id = 1 },
//!     hall_1 = { type = "Hall", addr = "127.0.0.1:7103", id = 11,
//!                settings = { DemoTick = 1 },     -- this node's, over the cluster's
//!                metrics = "127.0.0.1:9103" },    -- Prometheus text on GET /metrics
//!   },
//! }
//! ```
//!
//! A node's `id` is its server id (`sid`) in Lua; when omitted it is derived
//! from a hash of the name. A node's script is `main` if given, else
//! `<type in lower case>/main.lua` under the first script root that has it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mlua::{Lua, Table, Value};

/// Why a cluster file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read cluster file {path}: {source}")]
    Io {
        /// The path tried.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid Lua or raised an error; the message names file and line.
    #[error("cluster file {0}")]
    Lua(String),
    /// The file ran but describes an invalid cluster.
    #[error("cluster file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

pub use crate::rpc::spec::NodeSpec;

/// Where and how to reach ZooKeeper (the `zookeeper` table of the cluster file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkSettings {
    /// Ensemble, `host:port,host:port`.
    pub hosts: String,
    /// Root path of this cluster, e.g. `/luahost/friends`.
    pub root: String,
    /// Session timeout.
    pub session_timeout: Duration,
    /// Digest credentials `user:password`, if any (never logged).
    pub auth: Option<String>,
}

/// A value of a `settings` table of the cluster file; Lua reads it as a
/// field of `conf`.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Num(f64),
    /// A string.
    Str(String),
    /// A nested table, entries in key order.
    Table(Vec<(SettingKey, Setting)>),
}

/// A key of a nested settings table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SettingKey {
    /// An integer key (`{ "x", "y" }` has keys 1 and 2).
    Int(i64),
    /// A string key.
    Str(String),
}

/// Fields of `conf` the host sets itself; `settings` may not use them.
pub const RESERVED_CONF: &[&str] = &[
    "NodeName",
    "ServerID",
    "NodeType",
    "CallTimeout",
    "ClusterFile",
    "MainScript",
    "Cluster",
    "ZKAddr",
    "ZKRoot",
    "ServerTypeName",
    "ServerType",
];

/// Settings by name (the top level of a `settings` table).
pub type Settings = BTreeMap<String, Setting>;

/// Reads a `settings` table (`what` names it in errors): string names at
/// the top, then booleans, numbers, strings and nested tables.
fn read_settings(v: Value, what: &str) -> Result<Settings, String> {
    let t = match v {
        Value::Nil => return Ok(Settings::new()),
        Value::Table(t) => t,
        other => return Err(format!("{what} must be a table, got {}", other.type_name())),
    };
    let mut out = Settings::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| format!("{what}: {e}"))?;
        let name = match &k {
            Value::String(s) => s
                .to_str()
                .map_err(|_| format!("{what}: a name is not UTF-8"))?
                .to_string(),
            other => {
                return Err(format!(
                    "{what}: keys must be names (they become fields of conf), got {}",
                    other.to_string().unwrap_or_else(|_| other.type_name().to_string())
                ))
            }
        };
        if RESERVED_CONF.contains(&name.as_str()) {
            return Err(format!("{what}.{name}: reserved, the host sets conf.{name} itself"));
        }
        let value = read_setting(v, &format!("{what}.{name}"), 0)?;
        out.insert(name, value);
    }
    Ok(out)
}

fn read_setting(v: Value, path: &str, depth: usize) -> Result<Setting, String> {
    Ok(match v {
        Value::Boolean(b) => Setting::Bool(b),
        Value::Integer(i) => Setting::Int(i),
        Value::Number(n) => Setting::Num(n),
        Value::String(s) => Setting::Str(
            s.to_str()
                .map_err(|_| format!("{path}: strings must be UTF-8"))?
                .to_string(),
        ),
        Value::Table(t) => {
            if depth >= 16 {
                return Err(format!(
                    "{path}: nested more than 16 deep (a table that contains itself?)"
                ));
            }
            let mut entries = Vec::new();
            for pair in t.pairs::<Value, Value>() {
                let (k, v) = pair.map_err(|e| format!("{path}: {e}"))?;
                let (key, label) = match k {
                    Value::Integer(i) => (SettingKey::Int(i), format!("{path}[{i}]")),
                    Value::String(s) => {
                        let s = s
                            .to_str()
                            .map_err(|_| format!("{path}: keys must be UTF-8"))?
                            .to_string();
                        let label = format!("{path}.{s}");
                        (SettingKey::Str(s), label)
                    }
                    other => {
                        return Err(format!(
                            "{path}: keys must be strings or integers, got {}",
                            other.type_name()
                        ))
                    }
                };
                entries.push((key, read_setting(v, &label, depth + 1)?));
            }
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Setting::Table(entries)
        }
        other => {
            return Err(format!(
                "{path}: a {} cannot be a setting (booleans, numbers, strings and tables can)",
                other.type_name()
            ))
        }
    })
}

/// A parsed cluster file.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// Shared secret that nodes prove membership with.
    pub secret: String,
    /// Default timeout of a remote call.
    pub call_timeout: Duration,
    /// A peer silent for longer than this is declared down (`liveness`, default 10 s).
    pub liveness: Duration,
    /// How long an accepted connection may take to verify (`verify_timeout`, default 5 s).
    pub verify_timeout: Duration,
    /// Largest message, in bytes (`max_message`, default 16 MiB).
    pub max_message: usize,
    /// Most bytes queued towards one peer (`max_queue`, default 64 MiB).
    pub max_queue: usize,
    /// In a graceful stop, how long handlers running may take to finish,
    /// and then the onStop handlers (`stop_grace`, default 5 s).
    pub stop_grace: Duration,
    /// Roots searched by `require` (after lualib).
    pub scripts: Vec<PathBuf>,
    /// The folder of the Lua library every node loads, when the cluster file
    /// (`lualib`, relative to it) or `LUAHOST_LUALIB` names one; `None`:
    /// the copy built into the binary.
    pub lualib: Option<PathBuf>,
    /// Every node by name. With ZooKeeper this only tells each node its own
    /// settings; peers are discovered.
    pub nodes: BTreeMap<String, NodeSpec>,
    /// ZooKeeper discovery, when the file names an ensemble.
    pub zookeeper: Option<ZkSettings>,
    /// The top-level `settings` table: fields of `conf` on every node.
    pub settings: Settings,
    /// Each node's own `settings` table, by node name.
    pub node_settings: BTreeMap<String, Settings>,
    /// The client listeners and limits of each Gate node (its `gate`
    /// table), by node name.
    pub gates: BTreeMap<String, crate::discovery::gate::GateConfig>,
    /// The database each node with a `store` table opens at boot (DBProxy),
    /// by node name.
    pub stores: BTreeMap<String, crate::discovery::store::StoreConfig>,
    /// The worker thread each node asks for under `luahost up --threads`
    /// (its `thread = k`), by node name.
    pub threads: BTreeMap<String, usize>,
    /// Where each node with a `metrics` address serves its Prometheus
    /// metrics (`crate::metrics`), by node name; no two nodes share one.
    pub metrics: BTreeMap<String, SocketAddr>,
    /// How nodes reach each other (`topology = "mesh"` (default) or
    /// `"router"`).
    pub topology: crate::rpc::relay::Topology,
    /// The node every other node also sends its Lua log lines to
    /// (`remote_log = "<node>"`, seed 000's RemoteLog), if any.
    pub remote_log: Option<String>,
}

/// Secrets shorter than this get a warning at start.
pub const MIN_SECRET: usize = 16;

/// Where lualib is when neither the cluster file nor `LUAHOST_LUALIB` says.
pub fn default_lualib() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/lualib"))
}

impl ClusterConfig {
    /// Loads a cluster file, or `cluster.lua` inside a folder.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file, and for Lua errors the line.
    pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
        let file = if path.is_dir() {
            path.join("cluster.lua")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Io {
            path: file.clone(),
            source,
        })?;
        Self::parse(&file, &text)
    }

    /// Parses the text of a cluster file that lives at `file`.
    ///
    /// # Errors
    ///
    /// As [`ClusterConfig::load`].
    pub fn parse(file: &Path, text: &str) -> Result<ClusterConfig, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: file.to_path_buf(),
            message,
        };
        let lua = Lua::new();
        let chunk_name = format!("@{}", file.display());
        let root: Table = lua
            .load(text)
            .set_name(chunk_name)
            .eval()
            .map_err(|e| ConfigError::Lua(first_line(&e.to_string())))?;
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };

        let secret = match std::env::var("LUAHOST_SECRET") {
            Ok(s) if !s.is_empty() => s,
            _ => root
                .get::<Option<String>>("secret")
                .map_err(|e| invalid(e.to_string()))?
                .unwrap_or_default(),
        };
        // No default password: a cluster must choose its own secret.
        if secret.is_empty() {
            return Err(invalid(
                "no secret: set `secret` in the cluster file or LUAHOST_SECRET (nodes prove membership of the cluster with it; use a long random string)".into(),
            ));
        }
        if secret == "change-me" {
            return Err(invalid(
                "secret is \"change-me\", the placeholder from the documentation: choose a long random string of your own".into(),
            ));
        }
        let secs = |key: &str, default: f64| -> Result<Duration, ConfigError> {
            match root.get::<Value>(key).map_err(|e| invalid(e.to_string()))? {
                Value::Nil => Ok(Duration::from_secs_f64(default)),
                Value::Integer(i) if i > 0 && i < 31_536_000 => Ok(Duration::from_secs(i as u64)),
                Value::Number(n) if n > 0.0 && n < 31_536_000.0 => Ok(Duration::from_secs_f64(n)),
                other => Err(invalid(format!(
                    "{key} must be a positive number of seconds (under a year), got {}",
                    other.to_string().unwrap_or_else(|_| other.type_name().to_string())
                ))),
            }
        };
        let bytes = |key: &str, default: usize| -> Result<usize, ConfigError> {
            match root.get::<Value>(key).map_err(|e| invalid(e.to_string()))? {
                Value::Nil => Ok(default),
                Value::Integer(i) if i >= 1024 => Ok(i as usize),
                other => Err(invalid(format!(
                    "{key} must be an integer number of bytes >= 1024, got {}",
                    other.to_string().unwrap_or_else(|_| other.type_name().to_string())
                ))),
            }
        };
        let call_timeout = secs("call_timeout", 5.0)?;
        let liveness = secs("liveness", 10.0)?;
        let verify_timeout = secs("verify_timeout", 5.0)?;
        let stop_grace = secs("stop_grace", 5.0)?;
        let max_message = bytes("max_message", crate::codec::wire::DEFAULT_MAX_MESSAGE)?;
        let max_queue = bytes("max_queue", 64 * 1024 * 1024)?;
        let mut scripts = Vec::new();
        if let Some(list) = root
            .get::<Option<Table>>("scripts")
            .map_err(|e| invalid(e.to_string()))?
        {
            for s in list.sequence_values::<String>() {
                scripts.push(dir.join(s.map_err(|e| invalid(format!("scripts: {e}")))?));
            }
        } else {
            scripts.push(dir.join("scripts"));
        }
        let lualib = match std::env::var("LUAHOST_LUALIB") {
            Ok(s) if !s.is_empty() => Some(PathBuf::from(s)),
            _ => root
                .get::<Option<String>>("lualib")
                .map_err(|e| invalid(e.to_string()))?
                .map(|s| dir.join(s)),
        };
        if let Some(l) = &lualib {
            if !l.join("luahost.lua").is_file() {
                return Err(invalid(format!(
                    "lualib folder {} has no luahost.lua (leave lualib out to use the one built into luahost)",
                    l.display()
                )));
            }
        }

        let zookeeper = match root
            .get::<Option<Table>>("zookeeper")
            .map_err(|e| invalid(e.to_string()))?
        {
            None => None,
            Some(z) => {
                let get = |k: &str| -> Result<Option<String>, ConfigError> {
                    z.get::<Option<String>>(k)
                        .map_err(|e| invalid(format!("zookeeper.{k}: {e}")))
                };
                let hosts = match std::env::var("LUAHOST_ZK") {
                    Ok(h) if !h.is_empty() => h,
                    _ => get("hosts")?.ok_or_else(|| invalid("zookeeper.hosts is missing".into()))?,
                };
                let root_path = get("root")?.unwrap_or_else(|| "/luahost".into());
                if !root_path.starts_with('/') || root_path.len() < 2 || root_path.ends_with('/') {
                    return Err(invalid(format!(
                        "zookeeper.root '{root_path}' must be an absolute path like /luahost"
                    )));
                }
                let session_timeout = match z
                    .get::<Option<f64>>("session_timeout")
                    .map_err(|e| invalid(e.to_string()))?
                {
                    None => Duration::from_secs(10),
                    Some(s) if (4.0..=60.0).contains(&s) => Duration::from_secs_f64(s),
                    Some(s) => return Err(invalid(format!("zookeeper.session_timeout {s} must be 4..60 seconds"))),
                };
                let auth = match std::env::var("LUAHOST_ZK_AUTH") {
                    Ok(a) if !a.is_empty() => Some(a),
                    _ => get("auth")?,
                };
                if let Some(a) = &auth {
                    if !a.contains(':') {
                        return Err(invalid("zookeeper.auth must be 'user:password'".into()));
                    }
                }
                Some(ZkSettings {
                    hosts,
                    root: root_path,
                    session_timeout,
                    auth,
                })
            }
        };
        let settings = read_settings(
            root.get::<Value>("settings").map_err(|e| invalid(e.to_string()))?,
            "settings",
        )
        .map_err(invalid)?;
        let topology = match root
            .get::<Option<String>>("topology")
            .map_err(|e| invalid(format!("topology: {e}")))?
            .as_deref()
        {
            None | Some("mesh") => crate::rpc::relay::Topology::Mesh,
            Some("router") => crate::rpc::relay::Topology::Router,
            Some(other) => {
                return Err(invalid(format!(
                    "topology '{other}' must be \"mesh\" (every node connects to every other) or \"router\" (through Router nodes)"
                )))
            }
        };
        let remote_log = root
            .get::<Option<String>>("remote_log")
            .map_err(|e| invalid(format!("remote_log: {e}")))?;
        let mut node_settings = BTreeMap::new();
        let mut gates = BTreeMap::new();
        let mut stores = BTreeMap::new();
        let mut threads = BTreeMap::new();
        let mut metrics = BTreeMap::new();
        let nodes_t: Table = root
            .get::<Option<Table>>("nodes")
            .map_err(|e| invalid(e.to_string()))?
            .ok_or_else(|| invalid("no 'nodes' table".into()))?;
        let mut nodes = BTreeMap::new();
        for pair in nodes_t.pairs::<String, Table>() {
            let (name, t) = pair.map_err(|e| invalid(format!("nodes: {e}")))?;
            let field = |k: &str| -> Result<Option<String>, ConfigError> {
                t.get::<Option<String>>(k)
                    .map_err(|e| invalid(format!("node {name}: field '{k}': {e}")))
            };
            let stype = field("type")?.ok_or_else(|| invalid(format!("node {name} has no 'type'")))?;
            let addr_s = field("addr")?.ok_or_else(|| invalid(format!("node {name} has no 'addr'")))?;
            let addr: SocketAddr = addr_s
                .parse()
                .map_err(|e| invalid(format!("node {name}: addr '{addr_s}': {e}")))?;
            let sid = match t
                .get::<Option<i64>>("id")
                .map_err(|e| invalid(format!("node {name}: id: {e}")))?
            {
                Some(i) if i > 0 && i <= u32::MAX as i64 => i as u32,
                Some(i) => return Err(invalid(format!("node {name}: id {i} must be in 1..4294967295"))),
                None => crate::rpc::ring::fnv1a32(name.as_bytes()) & 0x7fff_ffff,
            };
            let own = read_settings(
                t.get::<Value>("settings")
                    .map_err(|e| invalid(format!("node {name}: {e}")))?,
                &format!("node {name}: settings"),
            )
            .map_err(invalid)?;
            if !own.is_empty() {
                node_settings.insert(name.clone(), own);
            }
            if let Some(k) = t
                .get::<Option<i64>>("thread")
                .map_err(|e| invalid(format!("node {name}: thread: {e}")))?
            {
                if !(0..=1024).contains(&k) {
                    return Err(invalid(format!("node {name}: thread {k} must be 0..1024")));
                }
                threads.insert(name.clone(), k as usize);
            }
            if let Some(m) = field("metrics")? {
                let a: SocketAddr = m.parse().map_err(|e| {
                    invalid(format!(
                        "node {name}: metrics '{m}': {e} (an address such as \"127.0.0.1:9100\")"
                    ))
                })?;
                metrics.insert(name.clone(), a);
            }
            if let Some(g) = t
                .get::<Option<Table>>("gate")
                .map_err(|e| invalid(format!("node {name}: gate: {e}")))?
            {
                let g = crate::discovery::gate::GateConfig::parse(&g, &dir)
                    .map_err(|e| invalid(format!("node {name}: {e}")))?;
                gates.insert(name.clone(), g);
            }
            if let Some(st) = t
                .get::<Option<Table>>("store")
                .map_err(|e| invalid(format!("node {name}: store: {e}")))?
            {
                let st = crate::discovery::store::StoreConfig::parse(&st, &dir)
                    .map_err(|e| invalid(format!("node {name}: {e}")))?;
                stores.insert(name.clone(), st);
            }
            let main = match field("main")? {
                Some(m) => dir.join(m),
                None => {
                    let rel = format!("{}/main.lua", stype.to_lowercase());
                    scripts
                        .iter()
                        .map(|s| s.join(&rel))
                        .find(|p| p.exists())
                        .ok_or_else(|| invalid(format!("node {name}: no {rel} under the script roots {scripts:?}")))?
                }
            };
            nodes.insert(
                name.clone(),
                NodeSpec {
                    name,
                    stype,
                    sid,
                    addr,
                    main,
                },
            );
        }
        if nodes.is_empty() {
            return Err(invalid("the 'nodes' table is empty".into()));
        }
        if let Some(r) = &remote_log {
            if !nodes.contains_key(r) && zookeeper.is_none() {
                return Err(invalid(format!(
                    "remote_log names {r}, which is not a node of the cluster"
                )));
            }
        }
        if topology == crate::rpc::relay::Topology::Router {
            if !nodes.values().any(|n| n.stype == crate::rpc::relay::ROUTER_TYPE) {
                return Err(invalid(
                    "topology = \"router\" needs at least one node of type Router".into(),
                ));
            }
            if zookeeper.is_some() {
                return Err(invalid(
                    "topology = \"router\" works with the static cluster file only (not with zookeeper) for now".into(),
                ));
            }
        }
        let mut seen_sid = BTreeMap::new();
        let mut seen_addr = BTreeMap::new();
        for n in nodes.values() {
            if let Some(other) = seen_sid.insert(n.sid, &n.name) {
                return Err(invalid(format!(
                    "nodes {other} and {} share id {}; give one an explicit 'id'",
                    n.name, n.sid
                )));
            }
            if let Some(other) = seen_addr.insert(n.addr, &n.name) {
                return Err(invalid(format!("nodes {other} and {} share addr {}", n.name, n.addr)));
            }
        }
        let mut seen_metrics = BTreeMap::new();
        for (name, a) in &metrics {
            if let Some(other) = seen_metrics.insert(*a, name) {
                return Err(invalid(format!(
                    "nodes {other} and {name} share metrics address {a}; give each node its own"
                )));
            }
            if let Some(n) = seen_addr.get(a) {
                return Err(invalid(format!(
                    "node {name}: metrics address {a} is the addr of node {n}"
                )));
            }
        }
        Ok(ClusterConfig {
            file: file.to_path_buf(),
            secret,
            call_timeout,
            liveness,
            verify_timeout,
            max_message,
            max_queue,
            stop_grace,
            scripts,
            lualib,
            nodes,
            zookeeper,
            settings,
            node_settings,
            gates,
            stores,
            threads,
            metrics,
            topology,
            remote_log,
        })
    }

    /// The settings node `name` sees in `conf`: the cluster's, with the
    /// node's own replacing those of the same name.
    pub fn settings_for(&self, name: &str) -> Settings {
        let mut s = self.settings.clone();
        if let Some(own) = self.node_settings.get(name) {
            s.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        s
    }

    /// Adds (or replaces) a node given on the command line (`luahost run
    /// --type --addr --id`), as ZooKeeper clusters need not list their nodes.
    ///
    /// # Errors
    ///
    /// When its main script cannot be found.
    pub fn add_node(&mut self, name: &str, stype: &str, addr: SocketAddr, sid: Option<u32>) -> Result<(), ConfigError> {
        let rel = format!("{}/main.lua", stype.to_lowercase());
        let main = self
            .scripts
            .iter()
            .map(|s| s.join(&rel))
            .find(|p| p.exists())
            .ok_or_else(|| ConfigError::Invalid {
                path: self.file.clone(),
                message: format!("node {name}: no {rel} under the script roots {:?}", self.scripts),
            })?;
        self.nodes.insert(
            name.to_string(),
            NodeSpec {
                name: name.to_string(),
                stype: stype.to_string(),
                sid: sid.unwrap_or_else(|| crate::rpc::ring::fnv1a32(name.as_bytes()) & 0x7fff_ffff),
                addr,
                main,
            },
        );
        Ok(())
    }

    /// A warning when the secret is short: a party that records one
    /// handshake can try to guess a short secret offline.
    pub fn secret_warning(&self) -> Option<String> {
        (self.secret.len() < MIN_SECRET).then(|| {
            format!(
                "the cluster secret has only {} characters: anyone who records a handshake can try to guess a short one offline; use {MIN_SECRET} or more random characters",
                self.secret.len()
            )
        })
    }

    /// The node with this server id.
    pub fn by_sid(&self, sid: u32) -> Option<&NodeSpec> {
        self.nodes.values().find(|n| n.sid == sid)
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or(s)
        .trim_start_matches("runtime error: ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_and_remote_log_are_checked() {
        let dir = std::env::temp_dir().join(format!("luahost-cfg-topo-{}", std::process::id()));
        for t in ["hall", "router"] {
            std::fs::create_dir_all(dir.join(format!("scripts/{t}"))).unwrap();
            std::fs::write(dir.join(format!("scripts/{t}/main.lua")), "").unwrap();
        }
        let file = dir.join("cluster.lua");
        let hall = r#"hall_1 = { type = "Hall", addr = "127.0.0.1:7001" }"#;
        let router = r#"r_1 = { type = "Router", addr = "127.0.0.1:7002" }"#;
        let parse = |extra: &str, nodes: &str| {
            ClusterConfig::parse(
                &file,
                &format!(r#"return {{ secret = "s", {extra} nodes = {{ {nodes} }} }}"#),
            )
        };
        let mesh = parse("", hall).unwrap();
        assert_eq!(mesh.topology, crate::rpc::relay::Topology::Mesh);
        assert_eq!(mesh.remote_log, None);
        let routed = parse(
            r#"topology = "router", remote_log = "hall_1","#,
            &format!("{hall}, {router}"),
        )
        .unwrap();
        assert_eq!(routed.topology, crate::rpc::relay::Topology::Router);
        assert_eq!(routed.remote_log.as_deref(), Some("hall_1"));
        for (extra, nodes, says) in [
            (r#"topology = "star","#, hall, "must be \"mesh\""),
            (r#"topology = "router","#, hall, "at least one node of type Router"),
            (r#"remote_log = "nobody","#, hall, "remote_log names nobody"),
        ] {
            let e = parse(extra, nodes).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn parses_nodes_and_defaults() {
        let dir = std::env::temp_dir().join(format!("luahost-cfg-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("scripts/hall")).unwrap();
        std::fs::write(dir.join("scripts/hall/main.lua"), "").unwrap();
        let file = dir.join("cluster.lua");
        let cfg = ClusterConfig::parse(
            &file,
            r#"return { secret = "s", nodes = {
                hall_1 = { type = "Hall", addr = "127.0.0.1:7001", id = 11 },
                hall_2 = { type = "Hall", addr = "127.0.0.1:7002" } } }"#,
        )
        .unwrap();
        assert_eq!(cfg.nodes["hall_1"].sid, 11);
        assert_eq!(cfg.nodes["hall_2"].main, dir.join("scripts/hall/main.lua"));
        assert_eq!(cfg.call_timeout, Duration::from_secs(5));
        let again = ClusterConfig::parse(
            &file,
            r#"return { secret = "s", nodes = { hall_2 = { type = "Hall", addr = "127.0.0.1:7002" } } }"#,
        )
        .unwrap();
        assert_eq!(
            again.nodes["hall_2"].sid, cfg.nodes["hall_2"].sid,
            "derived ids are stable"
        );

        let e = ClusterConfig::parse(&file, "return { nodes = { x = 1 ")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.lua:1:"), "{e}");
        for (text, says) in [
            (r#"return { nodes = {} }"#, "no secret"),
            (r#"return { secret = "change-me", nodes = {} }"#, "placeholder"),
        ] {
            let e = ClusterConfig::parse(&file, text).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        assert!(cfg.secret_warning().is_some_and(|w| w.contains("only 1 characters")));
        let e = ClusterConfig::parse(
            &file,
            r#"return { secret = "s", nodes = { a = { type = "Hall", addr = "nope" } } }"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("addr 'nope'"), "{e}");
        let e = ClusterConfig::parse(
            &file,
            r#"return { secret = "s", nodes = { a = { type = "Hall", addr = "127.0.0.1:1", id = 3 }, b = { type = "Hall", addr = "127.0.0.1:2", id = 3 } } }"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("share id 3"), "{e}");
        assert_eq!(cfg.lualib, None, "no lualib key: the built-in one");
        let e = ClusterConfig::parse(
            &file,
            r#"return { secret = "s", lualib = "nowhere", nodes = { hall_2 = { type = "Hall", addr = "127.0.0.1:7002" } } }"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("has no luahost.lua"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn metrics_addresses() {
        let dir = std::env::temp_dir().join(format!("luahost-cfg-metrics-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("scripts/hall")).unwrap();
        std::fs::write(dir.join("scripts/hall/main.lua"), "").unwrap();
        let file = dir.join("cluster.lua");
        let parse = |a: &str, b: &str| {
            ClusterConfig::parse(
                &file,
                &format!(
                    r#"return {{ secret = "s", nodes = {{
                    a = {{ type = "Hall", addr = "127.0.0.1:7001", metrics = "{a}" }},
                    b = {{ type = "Hall", addr = "127.0.0.1:7002", metrics = "{b}" }} }} }}"#
                ),
            )
        };
        let cfg = parse("127.0.0.1:9101", "127.0.0.1:9102").unwrap();
        assert_eq!(cfg.metrics["a"], "127.0.0.1:9101".parse().unwrap());
        for (a, b, says) in [
            ("127.0.0.1:9101", "127.0.0.1:9101", "share metrics address"),
            ("127.0.0.1:9101", "127.0.0.1:7001", "is the addr of node a"),
            ("nope", "127.0.0.1:9102", "metrics 'nope'"),
        ] {
            let e = parse(a, b).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_demo_cluster_uses_this_checkouts_lualib() {
        if std::env::var_os("LUAHOST_LUALIB").is_some() {
            return;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cfg = ClusterConfig::load(&root.join("examples/friends")).unwrap();
        let l = cfg.lualib.expect("examples/friends names its lualib");
        assert_eq!(
            std::fs::canonicalize(l).unwrap(),
            std::fs::canonicalize(root.join("lualib")).unwrap()
        );
    }
}
