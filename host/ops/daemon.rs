//! `luahost daemon`: one per machine. Serves ctl connections, carries out
//! commands for its machine's processes ([`Supervisor`]), routes commands
//! for other machines to their daemons, checks every command against the
//! caller's role and audits it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::auth::{self, Kdf, Verifier};
use super::conn::{accept_loop, Client, Handler};
use super::metrics::DaemonMetrics;
use super::restart::{judge, Liveness, DEAD_AFTER, REFRESH};
use super::roles::{allowed, needs, Role};
use super::store::{now_ms, proc_key, AuditEntry, DaemonRecord, OpsError, OpsStore, ProcRecord, UserRecord};
use super::supervise::Supervisor;
use super::wire::{Command, Known, ListWhat, Output, Principal, Reply, Request};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// The store (folder or `zk://...`).
    pub store: String,
    /// This machine's ip, as the world lists it.
    pub machine: String,
    /// Where ctl connects.
    pub listen: SocketAddr,
    /// Where node processes' output goes (`<name>.log`).
    pub logs: PathBuf,
    /// A world file (JSON) to load into the store first.
    pub world: Option<PathBuf>,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub metrics: Option<SocketAddr>,
}

/// Why the daemon did not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] OpsError),
    /// The world does not list this machine.
    #[error("machine {ip} is not listed in the store's world (machines: {known}); refusing to serve it")]
    UnknownMachine {
        /// This machine.
        ip: String,
        /// The machines listed.
        known: String,
    },
    /// The world file is unreadable.
    #[error("world file {0}: {1}")]
    World(PathBuf, String),
    /// Listening, the runtime, or this binary's path.
    #[error("{0}")]
    Io(String),
    /// No randomness.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// The daemon as its connections see it.
pub struct Daemon {
    store: OpsStore,
    ip: String,
    region: String,
    secret: [u8; 32],
    decoy: [u8; 32],
    sup: Mutex<Supervisor>,
    rt: tokio::runtime::Handle,
    metrics: DaemonMetrics,
}

/// What a bootstrap printed (so a caller or test can use it).
#[derive(Debug, Clone)]
pub struct Started {
    /// The listener's address.
    pub addr: SocketAddr,
    /// The one-time bootstrap token, if this daemon made one.
    pub bootstrap: Option<String>,
    /// The metrics endpoint's address, if it serves one.
    pub metrics: Option<SocketAddr>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs the daemon until the process is stopped (SIGINT/SIGTERM: the
/// daemon leaves; its node processes keep running and are adopted by the
/// next daemon).
///
/// # Errors
/// [`DaemonError`] when it cannot start.
pub fn run(cfg: DaemonConfig, on_started: impl FnOnce(&Started)) -> Result<(), DaemonError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("daemon")
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Io(e.to_string()))?;
    let store = OpsStore::open(&cfg.store)?;
    if let Some(w) = &cfg.world {
        let text = std::fs::read(w).map_err(|e| DaemonError::World(w.clone(), e.to_string()))?;
        let world = serde_json::from_slice(&text).map_err(|e| DaemonError::World(w.clone(), e.to_string()))?;
        store.set_world(&world)?;
        tracing::info!("world loaded from {}", w.display());
    }
    let world = store.world()?;
    let Some((region, procs)) = world.machine(&cfg.machine) else {
        let known: Vec<&str> = world.machines().map(|(_, ip, _)| ip).collect();
        return Err(DaemonError::UnknownMachine {
            ip: cfg.machine.clone(),
            known: if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
        });
    };
    let secret = store.secret()?;
    let bootstrap = if store.users()?.is_empty() && store.bootstrap()?.is_none() {
        let token = hex(&auth::random::<16>()?);
        if store.offer_bootstrap(&Verifier::new(token.as_bytes(), Kdf::DEFAULT)?)? {
            Some(token)
        } else {
            None
        }
    } else {
        None
    };
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(cfg.listen))
        .map_err(|e| DaemonError::Io(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr = listener.local_addr().map_err(|e| DaemonError::Io(e.to_string()))?;
    let metrics_listener = match cfg.metrics {
        None => None,
        Some(m) => Some(
            rt.block_on(tokio::net::TcpListener::bind(m))
                .map_err(|e| DaemonError::Io(format!("cannot serve metrics on {m}: {e}")))?,
        ),
    };
    let metrics_addr = match &metrics_listener {
        None => None,
        Some(l) => Some(l.local_addr().map_err(|e| DaemonError::Io(e.to_string()))?),
    };
    let metrics = DaemonMetrics::new(&cfg.machine, procs.iter().map(|p| p.name.as_str()));
    let exe = std::env::current_exe().map_err(|e| DaemonError::Io(format!("cannot find this binary: {e}")))?;
    let sup = Supervisor::new(
        region,
        &cfg.machine,
        procs,
        &store,
        exe,
        cfg.logs.clone(),
        Instant::now(),
    )
    .with_metrics(metrics.clone());
    let d = Arc::new(Daemon {
        ip: cfg.machine.clone(),
        region: region.to_string(),
        secret,
        decoy: auth::random::<32>()?,
        sup: Mutex::new(sup),
        rt: rt.handle().clone(),
        store,
        metrics: metrics.clone(),
    });
    d.publish(&addr.to_string());
    tracing::info!(
        "daemon of {} (region {}) listening on {addr}; store {}",
        d.ip,
        d.region,
        d.store.location()
    );
    if bootstrap.is_some() {
        // the token itself goes to standard output only, not into logs
        tracing::info!(
            "no user yet: a one-time bootstrap token is on standard output (luahost ctl --daemon {addr} --bootstrap TOKEN user add NAME --role admin)"
        );
    }
    if let (Some(l), Some(m)) = (metrics_listener, metrics_addr) {
        tracing::info!("metrics on http://{m}/metrics");
        rt.spawn(crate::metrics::serve(l, metrics.source()));
    }
    on_started(&Started {
        addr,
        bootstrap,
        metrics: metrics_addr,
    });
    let h: Arc<dyn Handler> = d.clone();
    rt.spawn(accept_loop(listener, h));
    let d2 = d.clone();
    let addr_s = addr.to_string();
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| DaemonError::Io(e.to_string()))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| DaemonError::Io(e.to_string()))?;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut last_publish = Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let d = d2.clone();
                    let a = addr_s.clone();
                    let publish = last_publish.elapsed() >= REFRESH;
                    if publish {
                        last_publish = Instant::now();
                    }
                    let _ = tokio::task::spawn_blocking(move || {
                        d.tick();
                        if publish {
                            d.publish(&a);
                        }
                    }).await;
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("daemon stopping; its processes keep running (the next daemon adopts them)");
        Ok::<(), DaemonError>(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> Reply {
    Reply::Ok(Output::Table {
        headers: headers.iter().map(|s| s.to_string()).collect(),
        rows,
    })
}

fn refused(reason: impl Into<String>) -> Reply {
    Reply::Refused { reason: reason.into() }
}

fn failed(e: impl std::fmt::Display) -> Reply {
    Reply::Failed { reason: e.to_string() }
}

/// UTC `YYYY-MM-DD HH:MM:SS` of `ms` since the epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The columns of a process row.
pub const PROC_HEADERS: &[&str] = &[
    "machine", "name", "pid", "state", "starts", "updated", "msgs/s", "mailbox", "entities", "lua KiB", "conns",
];

fn proc_row(ip: &str, name: &str, rec: Option<&ProcRecord>, now: u64) -> Vec<String> {
    let live = judge(rec, now, DEAD_AFTER);
    match rec {
        None => vec![
            ip.into(),
            name.into(),
            "-".into(),
            live.name().into(),
            "0".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ],
        Some(r) => vec![
            ip.into(),
            name.into(),
            r.pid.to_string(),
            live.name().into(),
            r.startcount.to_string(),
            format!("{:.1}s ago", now.saturating_sub(r.lastupdate) as f64 / 1000.0),
            format!("{:.1}", r.info.msgs_per_s),
            r.info.mailbox.to_string(),
            r.info.entities.to_string(),
            r.info.lua_kib.to_string(),
            r.info.connections.to_string(),
        ],
    }
}

impl Daemon {
    fn tick(&self) {
        let now = Instant::now();
        if let Ok(mut s) = self.sup.lock() {
            s.tick(now);
        }
    }

    fn publish(&self, addr: &str) {
        let rec = DaemonRecord {
            ip: self.ip.clone(),
            addr: addr.to_string(),
            pid: std::process::id(),
            lastupdate: now_ms(),
        };
        if let Err(e) = self.store.put_daemon(&rec) {
            tracing::warn!("cannot write this daemon's record: {e}");
        }
    }

    fn save_wanted(&self, sup: &Supervisor) {
        if let Err(e) = self.store.set_wanted(&self.ip, &sup.wanted()) {
            tracing::warn!("cannot record which processes should run: {e}");
        }
    }

    /// Carries out a command for this machine or the whole cluster.
    fn execute(&self, who: &str, role: Option<Role>, cmd: Command) -> Reply {
        let now = Instant::now();
        let done = |r: Result<super::plan::Outcome, String>| match r {
            Ok(o) => Reply::Ok(Output::Done {
                message: o.lines.join("\n"),
            }),
            Err(e) => refused(e),
        };
        match cmd {
            Command::List { what } => self.list(what),
            Command::Start { target, .. } => {
                let Ok(mut s) = self.sup.lock() else {
                    return failed("supervisor poisoned");
                };
                let r = s.start(&target, now);
                self.save_wanted(&s);
                s.tick(now);
                done(r)
            }
            Command::Stop { target, .. } => {
                let Ok(mut s) = self.sup.lock() else {
                    return failed("supervisor poisoned");
                };
                let r = s.stop(&target, now);
                self.save_wanted(&s);
                done(r)
            }
            Command::Restart { target, .. } => {
                let Ok(mut s) = self.sup.lock() else {
                    return failed("supervisor poisoned");
                };
                let r = s.restart(&target, now);
                self.save_wanted(&s);
                s.tick(now);
                done(r)
            }
            Command::Kill { pid, .. } => {
                let Ok(mut s) = self.sup.lock() else {
                    return failed("supervisor poisoned");
                };
                let r = s.kill(pid);
                self.save_wanted(&s);
                done(r)
            }
            Command::Reload { target, .. } => {
                let Ok(mut s) = self.sup.lock() else {
                    return failed("supervisor poisoned");
                };
                done(s.reload(&target))
            }
            Command::UserAdd {
                name,
                role: new_role,
                verifier,
            } => {
                if role.is_none() && new_role != Role::Admin {
                    return refused("the bootstrap token may only add an admin");
                }
                let u = UserRecord {
                    name: name.clone(),
                    role: new_role,
                    verifier,
                    created: now_ms(),
                };
                if super::store::check_name(&name).is_err() {
                    return refused(format!("'{name}' is not a valid user name"));
                }
                // the token is spent before the admin is added: of two
                // logins with it, one deletes it, the other is refused
                if role.is_none() {
                    match self.store.end_bootstrap() {
                        Ok(true) => {}
                        Ok(false) => return refused("the bootstrap token was used already"),
                        Err(e) => return failed(e),
                    }
                }
                match self.store.add_user(&u) {
                    Ok(()) => Reply::Ok(Output::Done {
                        message: format!("user {name} added as {new_role}"),
                    }),
                    Err(OpsError::Exists(_)) => refused(format!("user {name} exists already")),
                    Err(OpsError::BadName(n)) => refused(format!("'{n}' is not a valid user name")),
                    Err(e) => failed(e),
                }
            }
            Command::UserList => match self.store.users() {
                Ok(us) => table(
                    &["user", "role", "created"],
                    us.into_iter()
                        .map(|u| vec![u.name, u.role.to_string(), utc(u.created)])
                        .collect(),
                ),
                Err(e) => failed(e),
            },
            Command::UserDel { name } => {
                if name == who {
                    return refused("you cannot delete yourself");
                }
                match self.store.del_user(&name) {
                    Ok(true) => Reply::Ok(Output::Done {
                        message: format!("user {name} deleted"),
                    }),
                    Ok(false) => refused(format!("no user {name}")),
                    Err(e) => failed(e),
                }
            }
            Command::Audit { last } => match self.store.audit_log(last.clamp(1, 10_000)) {
                Ok(es) => table(
                    &["when (UTC)", "user", "via", "command", "result"],
                    es.into_iter()
                        .map(|e| vec![utc(e.at), e.user, e.via, e.command, e.result])
                        .collect(),
                ),
                Err(e) => failed(e),
            },
        }
    }

    fn list(&self, what: ListWhat) -> Reply {
        let world = match self.store.world() {
            Ok(w) => w,
            Err(e) => return failed(e),
        };
        let recs: std::collections::HashMap<String, ProcRecord> = match self.store.procs() {
            Ok(v) => v.into_iter().map(|r| (r.key.clone(), r)).collect(),
            Err(e) => return failed(e),
        };
        let now = now_ms();
        let alive = |region: &str, ip: &str, name: &str| {
            judge(recs.get(&proc_key(region, ip, name)), now, DEAD_AFTER) == Liveness::Alive
        };
        match what {
            ListWhat::World => table(
                &["region", "machines", "processes", "alive"],
                world
                    .regions
                    .iter()
                    .map(|(r, ms)| {
                        let n: usize = ms.values().map(Vec::len).sum();
                        let a: usize = ms
                            .iter()
                            .map(|(ip, ps)| ps.iter().filter(|p| alive(r, ip, &p.name)).count())
                            .sum();
                        vec![r.clone(), ms.len().to_string(), n.to_string(), a.to_string()]
                    })
                    .collect(),
            ),
            ListWhat::Machine => table(
                &["region", "machine", "daemon", "listen", "processes", "alive"],
                world
                    .machines()
                    .map(|(r, ip, ps)| {
                        let d = self.store.daemon(ip).ok().flatten();
                        let dstate = match &d {
                            None => "never started",
                            Some(d) if now.saturating_sub(d.lastupdate) <= DEAD_AFTER.as_millis() as u64 => "alive",
                            Some(_) => "dead",
                        };
                        vec![
                            r.into(),
                            ip.into(),
                            dstate.into(),
                            d.map(|d| d.addr).unwrap_or_else(|| "-".into()),
                            ps.len().to_string(),
                            ps.iter().filter(|p| alive(r, ip, &p.name)).count().to_string(),
                        ]
                    })
                    .collect(),
            ),
            ListWhat::Ip(ip) => match world.machine(&ip) {
                None => refused(format!("machine {ip} is not in the world")),
                Some((r, ps)) => table(
                    PROC_HEADERS,
                    ps.iter()
                        .map(|p| proc_row(&ip, &p.name, recs.get(&proc_key(r, &ip, &p.name)), now))
                        .collect(),
                ),
            },
            ListWhat::Procs => table(
                PROC_HEADERS,
                world
                    .machines()
                    .flat_map(|(r, ip, ps)| {
                        ps.iter()
                            .map(|p| proc_row(ip, &p.name, recs.get(&proc_key(r, ip, &p.name)), now))
                            .collect::<Vec<_>>()
                    })
                    .collect(),
            ),
            ListWhat::Pid(pid) => {
                let rows: Vec<Vec<String>> = world
                    .machines()
                    .flat_map(|(r, ip, ps)| {
                        ps.iter()
                            .filter_map(|p| {
                                let rec = recs.get(&proc_key(r, ip, &p.name))?;
                                (rec.pid == pid).then(|| proc_row(ip, &p.name, Some(rec), now))
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                if rows.is_empty() {
                    refused(format!("no process with pid {pid}"))
                } else {
                    table(PROC_HEADERS, rows)
                }
            }
        }
    }

    /// Sends `cmd` to the daemon of machine `ip`, on behalf of `user`.
    fn route(&self, ip: &str, user: &str, cmd: Command) -> Reply {
        let world = match self.store.world() {
            Ok(w) => w,
            Err(e) => return failed(e),
        };
        if world.machine(ip).is_none() {
            return refused(format!("machine {ip} is not in the world"));
        }
        let rec = match self.store.daemon(ip) {
            Ok(Some(r)) => r,
            Ok(None) => return failed(format!("machine {ip} has no daemon (never started)")),
            Err(e) => return failed(e),
        };
        let req = Request {
            command: cmd,
            on_behalf: Some((user.to_string(), self.ip.clone())),
        };
        let secret = self.secret;
        let addr = rec.addr.clone();
        let r = self.rt.block_on(async move {
            let mut c = Client::connect(&addr, "@daemon", &secret).await?;
            c.call_within(&req, super::conn::REPLY_TIMEOUT * 2 / 3).await
        });
        match r {
            Ok(reply) => reply,
            Err(e) => failed(format!(
                "the daemon of {ip} at {} did not take the command: {e}",
                rec.addr
            )),
        }
    }

    fn audit(&self, user: &str, via: &str, cmd: &Command, reply: &Reply) {
        let e = AuditEntry {
            at: now_ms(),
            user: user.to_string(),
            via: via.to_string(),
            command: cmd.describe(),
            result: reply.summary(),
        };
        if let Err(err) = self.store.audit(&e) {
            tracing::error!("cannot write the audit log: {err}; the command was {}", e.command);
        }
    }
}

impl Handler for Daemon {
    fn lookup(&self, user: &str) -> Known {
        match user {
            "@daemon" => Known::Yes(Verifier::for_secret(&self.secret), Principal::Daemon),
            "@bootstrap" => match self.store.bootstrap() {
                Ok(Some(v)) => Known::Yes(v, Principal::Bootstrap),
                _ => Known::No,
            },
            name => match self.store.user(name) {
                Ok(Some(u)) => Known::Yes(
                    u.verifier,
                    Principal::User {
                        name: u.name,
                        role: u.role,
                    },
                ),
                _ => Known::No,
            },
        }
    }

    fn decoy_key(&self) -> [u8; 32] {
        self.decoy
    }

    fn login_refused(&self) {
        self.metrics.login_refused();
    }

    fn connection(&self, open: bool) {
        self.metrics.connection(open);
    }

    fn handle(&self, who: &Principal, req: Request) -> Reply {
        let cmd = req.command;
        // who is asking, with which role (None: the bootstrap token)
        let (user, role, via, routed) = match (who, req.on_behalf) {
            (Principal::User { .. } | Principal::Bootstrap, Some(_)) => {
                return refused("only daemons may route commands");
            }
            (Principal::Daemon, None) => return refused("a routed command must name its user"),
            (Principal::Daemon, Some((user, via))) => match self.store.user(&user) {
                // the role as the store says now
                Ok(Some(u)) => (u.name, Some(u.role), via, true),
                _ => return refused(format!("no user {user}")),
            },
            (Principal::User { name, .. }, None) => match self.store.user(name) {
                Ok(Some(u)) => (u.name, Some(u.role), self.ip.clone(), false),
                _ => return refused(format!("user {name} no longer exists")),
            },
            (Principal::Bootstrap, None) => ("@bootstrap".to_string(), None, self.ip.clone(), false),
        };
        let reply = match role {
            None if !matches!(cmd, Command::UserAdd { .. }) => {
                refused("the bootstrap token may only add the first admin (user add NAME --role admin)")
            }
            Some(r) if !allowed(r, cmd.verb()) => refused(format!(
                "{user} is a {r}: '{}' needs the role {} or above",
                cmd.describe(),
                needs(cmd.verb())
            )),
            _ => match cmd.machine() {
                Some(ip) if ip != self.ip => {
                    if routed {
                        refused(format!("this is the daemon of {}, not of {ip}", self.ip))
                    } else {
                        self.route(ip, &user, cmd.clone())
                    }
                }
                _ => self.execute(&user, role, cmd.clone()),
            },
        };
        // the daemon that took the command audits and counts it (a routed
        // one once)
        if !routed {
            self.metrics.command(cmd.verb(), &reply);
            self.audit(&user, &via, &cmd, &reply);
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_795_000_000_000), "2026-11-18 11:06:40");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00");
    }
}
