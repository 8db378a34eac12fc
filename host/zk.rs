//! ZooKeeper discovery (seed 000's ZkMonitor): each node registers an
//! ephemeral znode `<root>/servers/<Type>/<node>` carrying its address, pid,
//! digest and load, watches `<root>/servers`, and turns what it sees into the
//! peer set of the node (connections, rings, Online/Offline).
//!
//! Session events as in seed 000: connected -> (re)register and re-list;
//! disconnected -> nothing changes (traffic between known nodes goes on);
//! expired -> this node reports itself offline, makes a new session,
//! registers again and re-watches; NoAuth / auth failure -> the node stops
//! with a clear error. ZooKeeper unreachable -> retries with backoff.
//!
//! One session holds one persistent recursive watch and no one-shot watch
//! (ZOOKEEPER-4466); the children are re-listed after every reconnect and
//! every event (ZOOKEEPER-4698), so a lost event costs nothing.

use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};
use zookeeper_client::{Acls, AddWatchMode, Client, CreateMode, Error as ZkError, EventType, SessionState};

use crate::config::{NodeSpec, ZkSettings};
use crate::node::Core;

/// What a node's znode holds (MessagePack).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Node name.
    pub name: String,
    /// Server id.
    pub sid: u32,
    /// Server type name.
    pub stype: String,
    /// Address other nodes connect to.
    pub addr: String,
    /// Process id.
    pub pid: u32,
    /// `rpcdef.Digi`.
    pub digest: u32,
    /// luahost version.
    pub version: String,
    /// Load figure the node reports (0 when unset).
    pub load: i64,
}

/// Why a session ended.
enum End {
    /// The session expired: start a new one.
    Expired,
    /// Credentials were refused: stop the node.
    Refused(String),
    /// Anything else: retry after a pause.
    Failed(String),
    /// The node is stopping and has deleted its znode.
    Left,
}

fn servers(cfg: &ZkSettings) -> String {
    format!("{}/servers", cfg.root)
}

fn acls(cfg: &ZkSettings) -> Acls<'static> {
    if cfg.auth.is_some() {
        Acls::creator_all()
    } else {
        Acls::anyone_all()
    }
}

fn refused(e: &ZkError, what: &str) -> End {
    match e {
        ZkError::NoAuth | ZkError::AuthFailed | ZkError::InvalidAcl => End::Refused(format!(
            "ZooKeeper refused to {what}: {e} (wrong or missing zookeeper.auth credentials?)"
        )),
        ZkError::SessionExpired => End::Expired,
        other => End::Failed(format!("cannot {what}: {other}")),
    }
}

async fn connect(cfg: &ZkSettings) -> Result<Client, End> {
    let mut c = Client::connector().with_session_timeout(cfg.session_timeout);
    if let Some(a) = &cfg.auth {
        c = c.with_auth("digest", a.as_bytes());
    }
    match tokio::time::timeout(cfg.session_timeout * 2, c.connect(&cfg.hosts)).await {
        Err(_) => Err(End::Failed(format!("no answer from ZooKeeper at {}", cfg.hosts))),
        Ok(Err(ZkError::AuthFailed)) => Err(End::Refused("ZooKeeper authentication failed".into())),
        Ok(Err(e)) => Err(End::Failed(format!(
            "cannot connect to ZooKeeper at {}: {e}",
            cfg.hosts
        ))),
        Ok(Ok(c)) => Ok(c),
    }
}

/// Creates `<root>/servers/<Type>` for every server type (checkTypeNode).
async fn ensure_paths(client: &Client, cfg: &ZkSettings, types: &[String]) -> Result<(), End> {
    let opts = CreateMode::Persistent.with_acls(acls(cfg));
    for t in types {
        let path = format!("{}/{t}", servers(cfg));
        client
            .mkdir(&path, &opts)
            .await
            .map_err(|e| refused(&e, &format!("create {path}")))?;
    }
    Ok(())
}

/// Creates this node's ephemeral znode; one left by an earlier session of
/// the same node is replaced, so a node is registered exactly once.
async fn register(client: &Client, cfg: &ZkSettings, reg: &Registration) -> Result<(), End> {
    let path = format!("{}/{}/{}", servers(cfg), reg.stype, reg.name);
    let data = rmp_serde::to_vec_named(reg).map_err(|e| End::Failed(e.to_string()))?;
    let opts = CreateMode::Ephemeral.with_acls(acls(cfg));
    for _ in 0..3 {
        match client.create(&path, &data, &opts).await {
            Ok(_) => return Ok(()),
            Err(ZkError::NodeExists) => {
                warn!("{path} is still registered by an earlier session: replacing it");
                match client.delete(&path, None).await {
                    Ok(()) | Err(ZkError::NoNode) => {}
                    Err(e) => return Err(refused(&e, &format!("replace {path}"))),
                }
            }
            Err(e) => return Err(refused(&e, &format!("register {path}"))),
        }
    }
    Err(End::Failed(format!("could not register {path}")))
}

/// Reads every registered node.
async fn list(client: &Client, cfg: &ZkSettings, types: &[String]) -> Result<Vec<(NodeSpec, i64)>, End> {
    let mut specs = Vec::new();
    for t in types {
        let dir = format!("{}/{t}", servers(cfg));
        let children = match client.list_children(&dir).await {
            Ok(c) => c,
            Err(ZkError::NoNode) => continue,
            Err(e) => return Err(refused(&e, &format!("list {dir}"))),
        };
        for child in children {
            let path = format!("{dir}/{child}");
            let data = match client.get_data(&path).await {
                Ok((d, _)) => d,
                Err(ZkError::NoNode) => continue,
                Err(e) => return Err(refused(&e, &format!("read {path}"))),
            };
            let reg: Registration = match rmp_serde::from_slice(&data) {
                Ok(r) => r,
                Err(e) => {
                    warn!("ignoring {path}: not a luahost registration ({e})");
                    continue;
                }
            };
            let Ok(addr) = reg.addr.parse() else {
                warn!("ignoring {path}: bad address {}", reg.addr);
                continue;
            };
            specs.push((
                NodeSpec {
                    name: reg.name,
                    stype: reg.stype,
                    sid: reg.sid,
                    addr,
                    main: Default::default(),
                },
                reg.load,
            ));
        }
    }
    Ok(specs)
}

fn apply(core: &Rc<Core>, listed: Vec<(NodeSpec, i64)>, cfg: &ZkSettings) {
    *core.loads.borrow_mut() = listed.iter().map(|(s, l)| (s.sid, *l)).collect();
    let specs = listed.into_iter().map(|(s, _)| s).collect();
    core.apply_membership(specs, "ZooKeeper", Some(cfg.session_timeout));
}

async fn session(core: &Rc<Core>, client: &Client, cfg: &ZkSettings) -> End {
    let types = core.type_names();
    if let Err(e) = ensure_paths(client, cfg, &types).await {
        return e;
    }
    let reg = core.registration();
    if let Err(e) = register(client, cfg, &reg).await {
        return e;
    }
    info!(
        "registered in ZooKeeper as {}/{}/{} (session {:x})",
        servers(cfg),
        reg.stype,
        reg.name,
        client.session_id().0
    );
    core.set_self_online(true);
    let mut states = client.state_watcher();
    let mut watcher = match client.watch(&servers(cfg), AddWatchMode::PersistentRecursive).await {
        Ok(w) => w,
        Err(e) => return refused(&e, "watch the servers"),
    };
    match list(client, cfg, &types).await {
        Ok(specs) => {
            apply(core, specs, cfg);
        }
        Err(e) => return e,
    }
    let mut recheck = tokio::time::interval(Duration::from_secs(1));
    let my_path = format!("{}/{}/{}", servers(cfg), reg.stype, reg.name);
    loop {
        tokio::select! {
            _ = core.leave.notified() => {
                // a graceful stop: leave discovery before the connections close
                match client.delete(&my_path, None).await {
                    Ok(()) | Err(ZkError::NoNode) => info!("left ZooKeeper: {my_path} deleted"),
                    Err(e) => warn!("cannot delete {my_path}: {e}; it goes when the session ends"),
                }
                core.left.notify_one();
                return End::Left;
            }
            _ = core.load_changed.notified() => {
                // at most one update per 100 ms, with the latest load
                tokio::time::sleep(Duration::from_millis(100)).await;
                let data = match rmp_serde::to_vec_named(&core.registration()) {
                    Ok(d) => d,
                    Err(e) => return End::Failed(e.to_string()),
                };
                if let Err(e) = client.set_data(&my_path, &data, None).await {
                    return refused(&e, &format!("update {my_path}"));
                }
            }
            _ = recheck.tick() => {
                // peers in their grace period: look again
                if core.has_missing() {
                    match list(client, cfg, &types).await {
                        Ok(specs) => {
                            apply(core, specs, cfg);
                        }
                        Err(e) => return e,
                    }
                }
            }
            s = states.changed() => match s {
                SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                    info!("ZooKeeper connection back: re-listing servers");
                    match list(client, cfg, &types).await {
                        Ok(specs) => {
                        apply(core, specs, cfg);
                    }
                        Err(e) => return e,
                    }
                }
                SessionState::Disconnected => {
                    warn!("ZooKeeper connection lost; known nodes keep talking while it reconnects");
                }
                SessionState::Expired => return End::Expired,
                SessionState::AuthFailed => return End::Refused("ZooKeeper authentication failed".into()),
                SessionState::Closed => return End::Failed("ZooKeeper session closed".into()),
            },
            ev = watcher.changed() => {
                if ev.event_type == EventType::Session {
                    if ev.session_state.is_terminated() {
                        return match ev.session_state {
                            SessionState::Expired => End::Expired,
                            SessionState::AuthFailed => End::Refused("ZooKeeper authentication failed".into()),
                            _ => End::Failed("ZooKeeper session closed".into()),
                        };
                    }
                    continue;
                }
                debug!("ZooKeeper: {:?} {}", ev.event_type, ev.path);
                // let a burst of changes settle, then list once
                tokio::time::sleep(Duration::from_millis(20)).await;
                match list(client, cfg, &types).await {
                    Ok(specs) => {
                        apply(core, specs, cfg);
                    }
                    Err(e) => return e,
                }
            }
        }
    }
}

/// Runs discovery for the node until it stops.
pub(crate) async fn zk_task(core: Rc<Core>, cfg: ZkSettings) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let end = match connect(&cfg).await {
            Ok(client) => {
                backoff = Duration::from_millis(200);
                session(&core, &client, &cfg).await
            }
            Err(e) => e,
        };
        match end {
            End::Expired => {
                warn!("ZooKeeper session expired: this node reports itself offline and registers again");
                core.set_self_online(false);
            }
            End::Left => return,
            End::Refused(msg) => {
                error!("{msg}; stopping this node");
                core.fail(msg);
                return;
            }
            End::Failed(msg) => {
                warn!("{msg}; retrying in {:.1} s", backoff.as_secs_f64());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
