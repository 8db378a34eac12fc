//! ZooKeeper discovery (seed 000's ZkMonitor): each node registers an
//! ephemeral znode `<root>/servers/<Type>/<node>` carrying its address, pid,
//! digest and load, watches `<root>/servers`, and turns what it sees into the
//! peer set of the node (connections, rings, Online/Offline).
//!
//! Session events as in seed 000: connected -> (re)register and re-list;
//! disconnected -> nothing changes (traffic between known nodes goes on);
//! expired -> this node makes a new session, registers again and
//! re-watches, staying in its own rings meanwhile (the client declares a
//! session expired on its own when no server answered for a session timeout,
//! which with an ensemble that lost quorum is not true: the leader elected
//! next restarts every session's clock; and peers connected to this node
//! keep routing to it either way); NoAuth / auth failure -> the node stops
//! with a clear error. ZooKeeper unreachable -> retries with backoff.
//!
//! One session holds one persistent recursive watch and no one-shot watch
//! (ZOOKEEPER-4466); the children are re-listed after every reconnect and
//! every event (ZOOKEEPER-4698), so a lost event costs nothing.
//!
//! One identity, one live process: a znode already at this node's path is
//! replaced only when it is a leftover (an earlier session of this process,
//! or a process that no longer answers the handshake as that node with that
//! incarnation); a live holder makes this process refuse to start. Each
//! listing also checks this node's own znode: deleted, it is created again;
//! taken by another process, this node stops rather than fight over it.
//! With `auth`, every path used is creator-only (checked, see
//! `ensure_paths`); without it the node warns once.

use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};
use zookeeper_client::{
    Acl, Acls, AddWatchMode, Client, CreateMode, Error as ZkError, EventType, Permission, PersistentWatcher,
    SessionState, Stat,
};

use crate::discovery::config::{NodeSpec, ZkSettings};
use crate::discovery::DiscoveryHost;
use crate::net::handshake::{probe, Probe};

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
    /// Random number drawn when the process started (0 in data written by
    /// older versions): tells this process's registrations from those of
    /// another process of the same node name.
    #[serde(default)]
    pub incarnation: u64,
}

/// Why a session ended.
enum End {
    /// The session expired: start a new one.
    Expired,
    /// Credentials or paths were refused, or another process holds this
    /// node's registration: stop the node.
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

/// The ACL id ZooKeeper's digest scheme gives credentials `user:password`:
/// `user:base64(sha1("user:password"))`.
pub(crate) fn digest_id(auth: &str) -> String {
    use base64::Engine;
    use sha1::Digest;
    let user = auth.split_once(':').map_or(auth, |(u, _)| u);
    let hash = sha1::Sha1::digest(auth.as_bytes());
    format!("{user}:{}", base64::engine::general_purpose::STANDARD.encode(hash))
}

/// Makes sure only the identity `me` (this cluster's `auth`) has access to
/// `path`. A path we own (our identity may administer it) that also grants
/// others is made creator-only again; one we do not own (created by someone
/// else, or by a node running without `auth`) refuses the start.
async fn check_acl(client: &Client, path: &str, me: &str) -> Result<(), End> {
    let (acl, stat) = client
        .get_acl(path)
        .await
        .map_err(|e| refused(&e, &format!("read the ACL of {path}")))?;
    let ours = |a: &Acl| a.scheme() == "digest" && a.id() == me;
    let others: Vec<String> = acl
        .iter()
        .filter(|a| !ours(a))
        .map(|a| format!("{}:{} {}", a.scheme(), a.id(), a.permission()))
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    let others = others.join(", ");
    if !acl.iter().any(|a| ours(a) && a.permission().has(Permission::ADMIN)) {
        return Err(End::Refused(format!(
            "{path} is not protected by zookeeper.auth: its ACL grants {others} (created by someone else, \
             or by a node without auth); anyone it grants could register fake nodes there. \
             Delete it or make it creator-only for these credentials"
        )));
    }
    warn!("{path} also grants {others}: making it creator-only again");
    match client.set_acl(path, &Acls::creator_all(), Some(stat.aversion)).await {
        Ok(_) => Ok(()),
        Err(ZkError::BadVersion) => Err(End::Failed(format!("the ACL of {path} changed while it was fixed"))),
        Err(e) => Err(refused(&e, &format!("make {path} creator-only"))),
    }
}

/// Creates the root, `<root>/servers` and `<root>/servers/<Type>` for every
/// server type (checkTypeNode), top down; with `auth`, checks each one's ACL
/// before anything is created under it.
async fn ensure_paths(client: &Client, cfg: &ZkSettings, types: &[String]) -> Result<(), End> {
    let opts = CreateMode::Persistent.with_acls(acls(cfg));
    let me = cfg.auth.as_deref().map(digest_id);
    let mut paths = vec![cfg.root.clone(), servers(cfg)];
    paths.extend(types.iter().map(|t| format!("{}/{t}", servers(cfg))));
    for path in paths {
        client
            .mkdir(&path, &opts)
            .await
            .map_err(|e| refused(&e, &format!("create {path}")))?;
        if let Some(me) = &me {
            check_acl(client, &path, me).await?;
        }
    }
    Ok(())
}

/// This node's own znode, as this session last created or wrote it.
struct Mine {
    /// `<root>/servers/<Type>/<node>`.
    path: String,
    /// Its data version: writes expect it, so they never overwrite a znode
    /// someone else put there.
    version: i32,
}

/// What a listing found at this node's own path.
enum Own {
    /// Nothing: the znode was deleted.
    Gone,
    /// A znode: its registration (`None` when the data is not one) and stat.
    Found(Option<Registration>, Stat),
}

/// What [`list`] read.
struct Listing {
    /// Every registered node (this one included) with its load.
    nodes: Vec<(NodeSpec, i64)>,
    /// This node's own path.
    own: Own,
}

/// This node's current registration, encoded.
fn encode<H: DiscoveryHost>(core: &H) -> Result<Vec<u8>, End> {
    rmp_serde::to_vec_named(&core.registration()).map_err(|e| End::Failed(e.to_string()))
}

/// Creates this node's ephemeral znode with its current registration.
async fn create_own<H: DiscoveryHost>(
    client: &Client,
    cfg: &ZkSettings,
    core: &H,
    path: &str,
) -> Result<Result<Stat, ZkError>, End> {
    let data = encode(core)?;
    let opts = CreateMode::Ephemeral.with_acls(acls(cfg));
    Ok(client.create(path, &data, &opts).await.map(|(stat, _)| stat))
}

/// Creates this node's ephemeral znode. One already there is looked at
/// first: left by an earlier session of this process, or by a process that
/// is gone (nothing at its address proves to be that node with that
/// incarnation), it is replaced, so a node is registered exactly once and a
/// restart after a crash is quick; held by a live process, this node refuses
/// to start (one identity, one live process).
async fn register<H: DiscoveryHost>(client: &Client, cfg: &ZkSettings, core: &H, path: &str) -> Result<Stat, End> {
    for _ in 0..3 {
        match create_own(client, cfg, core, path).await? {
            Ok(stat) => return Ok(stat),
            Err(ZkError::NodeExists) => {}
            Err(e) => return Err(refused(&e, &format!("register {path}"))),
        }
        let (data, stat) = match client.get_data(path).await {
            Ok(d) => d,
            Err(ZkError::NoNode) => continue,
            Err(e) => return Err(refused(&e, &format!("read {path}"))),
        };
        if stat.ephemeral_owner == client.session_id().0 {
            return Ok(stat); // ours: an earlier create whose answer was lost
        }
        match rmp_serde::from_slice::<Registration>(&data) {
            Ok(reg) if reg.incarnation == core.incarnation() => {
                warn!("{path} is still registered by an earlier session of this process: replacing it")
            }
            Ok(reg) => {
                let found = match reg.addr.parse() {
                    Err(_) => format!("its address {} is not one", reg.addr),
                    Ok(addr) => match probe(core, addr, &core.me().name, core.me().sid).await {
                        Probe::Alive { incarnation } if incarnation == reg.incarnation => {
                            return Err(End::Refused(format!(
                                "node {} already runs: {path} is registered by a live process at {} (pid {}); \
                                 not starting a second one",
                                core.me().name,
                                reg.addr,
                                reg.pid
                            )))
                        }
                        Probe::Alive { incarnation } if incarnation == core.incarnation() => {
                            "this process listens there now".to_string()
                        }
                        Probe::Alive { .. } => format!("another process of {} answers there", core.me().name),
                        Probe::NotThatNode(why) => format!("not that node answers there: {why}"),
                        Probe::Unreachable(why) => format!("nothing answers there: {why}"),
                    },
                };
                warn!(
                    "{path} is still registered by a process that is gone (addr {}, pid {}; {found}): replacing it",
                    reg.addr, reg.pid
                );
            }
            Err(e) => warn!("{path} holds no luahost registration ({e}): replacing it"),
        }
        // exactly the znode looked at: if it changed meanwhile, look again
        match client.delete(path, Some(stat.version)).await {
            Ok(()) | Err(ZkError::NoNode) | Err(ZkError::BadVersion) => {}
            Err(e) => return Err(refused(&e, &format!("replace {path}"))),
        }
    }
    Err(End::Failed(format!("could not register {path}")))
}

/// Reads every registered node, and what is at `own_path`.
async fn list(client: &Client, cfg: &ZkSettings, types: &[String], own_path: &str) -> Result<Listing, End> {
    let mut nodes = Vec::new();
    let mut own = Own::Gone;
    for t in types {
        let dir = format!("{}/{t}", servers(cfg));
        let children = match client.list_children(&dir).await {
            Ok(c) => c,
            Err(ZkError::NoNode) => continue,
            Err(e) => return Err(refused(&e, &format!("list {dir}"))),
        };
        for child in children {
            let path = format!("{dir}/{child}");
            let (data, stat) = match client.get_data(&path).await {
                Ok(d) => d,
                Err(ZkError::NoNode) => continue,
                Err(e) => return Err(refused(&e, &format!("read {path}"))),
            };
            let parsed = rmp_serde::from_slice::<Registration>(&data);
            if path == own_path {
                own = Own::Found(parsed.as_ref().ok().cloned(), stat);
            }
            let reg = match parsed {
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
            nodes.push((
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
    Ok(Listing { nodes, own })
}

fn apply<H: DiscoveryHost>(core: &Rc<H>, listed: Vec<(NodeSpec, i64)>, cfg: &ZkSettings) {
    let loads = listed.iter().map(|(s, l)| (s.sid, *l)).collect();
    let specs = listed.into_iter().map(|(s, _)| s).collect();
    H::apply_listing(core, specs, loads, cfg.session_timeout);
}

/// Lists the servers and applies what it finds, and keeps this node's own
/// registration: deleted, it is created again; left by an earlier session of
/// this process (or not a registration), it is replaced; held by another
/// process, this node does not fight over it and stops.
async fn relist<H: DiscoveryHost>(
    core: &Rc<H>,
    client: &Client,
    cfg: &ZkSettings,
    types: &[String],
    mine: &mut Mine,
) -> Result<(), End> {
    for _ in 0..3 {
        let listing = list(client, cfg, types, &mine.path).await?;
        apply(core, listing.nodes, cfg);
        match listing.own {
            Own::Found(_, stat) if stat.ephemeral_owner == client.session_id().0 => {
                mine.version = stat.version;
                return Ok(());
            }
            Own::Found(Some(reg), _) if reg.incarnation != core.incarnation() => {
                return Err(End::Refused(format!(
                    "{} was taken over by another process of this node (addr {}, pid {}); \
                     not fighting over it",
                    mine.path, reg.addr, reg.pid
                )));
            }
            Own::Found(_, stat) => {
                warn!(
                    "{} is held by an earlier session of this process or is not a registration: replacing it",
                    mine.path
                );
                match client.delete(&mine.path, Some(stat.version)).await {
                    // BadVersion: it changed meanwhile; the create below fails and the next round looks again
                    Ok(()) | Err(ZkError::NoNode) | Err(ZkError::BadVersion) => {}
                    Err(e) => return Err(refused(&e, &format!("replace {}", mine.path))),
                }
            }
            Own::Gone => warn!("{} was deleted while this node runs: registering it again", mine.path),
        }
        match create_own(client, cfg, &**core, &mine.path).await? {
            Ok(stat) => {
                mine.version = stat.version;
                info!("restored {} (session {:x})", mine.path, client.session_id().0);
                return Ok(());
            }
            Err(ZkError::NodeExists) => {}
            Err(e) => return Err(refused(&e, &format!("register {}", mine.path))),
        }
    }
    Err(End::Failed(format!("could not keep {} registered", mine.path)))
}

async fn session<H: DiscoveryHost>(core: &Rc<H>, client: &Client, cfg: &ZkSettings) -> End {
    let types = core.type_names();
    if let Err(e) = ensure_paths(client, cfg, &types).await {
        return e;
    }
    let path = format!("{}/{}/{}", servers(cfg), core.me().stype, core.me().name);
    let mut mine = match register(client, cfg, &**core, &path).await {
        Ok(stat) => Mine {
            path,
            version: stat.version,
        },
        Err(e) => return e,
    };
    info!(
        "registered in ZooKeeper as {} (session {:x})",
        mine.path,
        client.session_id().0
    );
    core.set_self_online(true);
    let mut states = client.state_watcher();
    let mut watcher = match client.watch(&servers(cfg), AddWatchMode::PersistentRecursive).await {
        Ok(w) => w,
        Err(e) => return refused(&e, "watch the servers"),
    };
    if let Err(e) = relist(core, client, cfg, &types, &mut mine).await {
        return e;
    }
    let mut recheck = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = core.signals().leave.notified() => {
                // a graceful stop: leave discovery before the connections close
                // (only our own znode: the version says nobody replaced it)
                match client.delete(&mine.path, Some(mine.version)).await {
                    Ok(()) | Err(ZkError::NoNode) => info!("left ZooKeeper: {} deleted", mine.path),
                    Err(e) => warn!("cannot delete {}: {e}; it goes when the session ends", mine.path),
                }
                core.signals().left.notify_one();
                return End::Left;
            }
            _ = core.signals().load_changed.notified() => {
                // at most one update per 100 ms, with the latest load
                tokio::time::sleep(Duration::from_millis(100)).await;
                let data = match encode(&**core) {
                    Ok(d) => d,
                    Err(e) => return e,
                };
                match client.set_data(&mine.path, &data, Some(mine.version)).await {
                    Ok(stat) => mine.version = stat.version,
                    // deleted or replaced meanwhile: see what is there
                    Err(ZkError::NoNode | ZkError::BadVersion) => {
                        if let Err(e) = relist(core, client, cfg, &types, &mut mine).await {
                            return e;
                        }
                    }
                    Err(e) => return refused(&e, &format!("update {}", mine.path)),
                }
            }
            _ = recheck.tick() => {
                // peers in their grace period: look again
                if core.has_missing() {
                    if let Err(e) = relist(core, client, cfg, &types, &mut mine).await {
                        return e;
                    }
                }
            }
            s = states.changed() => match s {
                SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                    info!("ZooKeeper connection back: re-listing servers");
                    if let Err(e) = relist(core, client, cfg, &types, &mut mine).await {
                        return e;
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
                        return session_end(ev.session_state);
                    }
                    continue;
                }
                debug!("ZooKeeper: {:?} {}", ev.event_type, ev.path);
                // let a burst of changes settle, then list once for all of
                // them (this node's own deletion is among the events seen
                // here): every node lists every registration, so k changes
                // listed one by one would cost k times n(n+T) reads
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Some(end) = take_waiting(&mut watcher) {
                    return end;
                }
                if let Err(e) = relist(core, client, cfg, &types, &mut mine).await {
                    return e;
                }
            }
        }
    }
}

/// How a session that ZooKeeper reports terminated ends.
fn session_end(state: SessionState) -> End {
    match state {
        SessionState::Expired => End::Expired,
        SessionState::AuthFailed => End::Refused("ZooKeeper authentication failed".into()),
        _ => End::Failed("ZooKeeper session closed".into()),
    }
}

/// Takes the events already waiting on `watcher`, so that the listing that
/// follows answers them all; returns how the session ends if one of them
/// says it ended. (Taking an event is all or nothing: the watcher is a
/// channel.)
fn take_waiting(watcher: &mut PersistentWatcher) -> Option<End> {
    use futures_util::FutureExt;
    while let Some(ev) = watcher.changed().now_or_never() {
        if ev.event_type == EventType::Session && ev.session_state.is_terminated() {
            return Some(session_end(ev.session_state));
        }
    }
    None
}

/// Runs discovery for the node until it stops.
pub(crate) async fn zk_task<H: DiscoveryHost>(core: Rc<H>, cfg: ZkSettings) {
    if cfg.auth.is_none() {
        warn!(
            "ZooKeeper without auth: anyone who can reach {} may register fake nodes or delete real ones under {}; \
             set zookeeper.auth = \"user:password\" (or LUAHOST_ZK_AUTH)",
            cfg.hosts, cfg.root
        );
    }
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
                // No Offline for this node: it still serves, and its peers
                // keep routing to it while connected (see the module doc).
                warn!("ZooKeeper session expired: registering again with a new session (this node stays online)");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminated_session_ends_as_expired_refused_or_failed() {
        assert!(matches!(session_end(SessionState::Expired), End::Expired));
        assert!(matches!(session_end(SessionState::AuthFailed), End::Refused(m) if m.contains("authentication")));
        assert!(matches!(session_end(SessionState::Closed), End::Failed(_)));
    }

    #[test]
    fn digest_id_is_zookeepers() {
        // as ZooKeeper's DigestAuthenticationProvider.generateDigest("luahost:secret")
        assert_eq!(digest_id("luahost:secret"), "luahost:FioIHdRl8LtlPsq4u/cCZbwLrdc=");
    }
}
