//! The `daemon` and `ctl` commands and a node's ops record: argument
//! handling over `luahost::ops`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use luahost::ops::auth::{Kdf, Verifier};
use luahost::ops::ctl;
use luahost::ops::roles::Role;
use luahost::ops::wire::Command;

/// `luahost ctl` commands.
#[derive(Subcommand, Debug)]
pub enum CtlCmd {
    /// list world | machine | <ip> | <pid>
    List {
        /// world, machine, a machine's ip, or a pid.
        what: String,
    },
    /// Start a machine's processes: start <ip> all|<name>
    Start { ip: String, target: String },
    /// Stop gracefully (calls in flight finish): stop <ip> all|<name>
    Stop { ip: String, target: String },
    /// Stop gracefully and start again: restart <ip> all|<name>
    Restart { ip: String, target: String },
    /// Kill at once (SIGKILL; not restarted): kill <ip> <pid>
    Kill { ip: String, pid: u32 },
    /// Hot-reload scripts and the cluster file: reload <ip> all|<name>
    Reload { ip: String, target: String },
    /// Every process, refreshed (--count times, --every seconds apart).
    Top {
        #[arg(long, default_value_t = 10)]
        count: u32,
        #[arg(long, default_value_t = 2.0)]
        every: f64,
    },
    /// Users: add, list, del.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// The latest entries of the audit log.
    Audit {
        #[arg(long, default_value_t = 50)]
        last: usize,
    },
}

/// `luahost ctl user ...`.
#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user; the password comes from LUAHOST_NEW_PASSWORD or a prompt.
    Add {
        name: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: Role,
    },
    /// List the users.
    List,
    /// Delete a user.
    Del { name: String },
}

fn password(env: &str, prompt: &str, confirm: bool) -> Result<String, String> {
    if let Ok(p) = std::env::var(env) {
        if !p.is_empty() {
            return Ok(p);
        }
    }
    let p =
        rpassword::prompt_password(prompt).map_err(|e| format!("cannot read a password ({env} is not set): {e}"))?;
    if confirm {
        let again = rpassword::prompt_password("again: ").map_err(|e| e.to_string())?;
        if again != p {
            return Err("the passwords differ".into());
        }
    }
    Ok(p)
}

/// `luahost ctl`.
pub fn ctl(daemon: String, user: Option<String>, bootstrap: Option<String>, json: bool, cmd: CtlCmd) -> ExitCode {
    let fail = |e: String| {
        eprintln!("luahost ctl: {e}");
        ExitCode::FAILURE
    };
    let bootstrap = bootstrap.or_else(|| std::env::var("LUAHOST_BOOTSTRAP").ok().filter(|t| !t.is_empty()));
    let (login, secret) = match (&user, bootstrap) {
        (Some(_), Some(_)) => return fail("give --user or --bootstrap, not both".into()),
        (None, Some(t)) => ("@bootstrap".to_string(), t),
        (Some(u), None) => match password("LUAHOST_PASSWORD", &format!("password of {u}: "), false) {
            Ok(p) => (u.clone(), p),
            Err(e) => return fail(e),
        },
        (None, None) => return fail("--user NAME is needed (or --bootstrap TOKEN for the first admin)".into()),
    };
    let command = match cmd {
        CtlCmd::List { what } => match ctl::parse_list(&what) {
            Ok(what) => Command::List { what },
            Err(e) => return fail(e),
        },
        CtlCmd::Start { ip, target } => Command::Start {
            ip,
            target: ctl::parse_target(&target),
        },
        CtlCmd::Stop { ip, target } => Command::Stop {
            ip,
            target: ctl::parse_target(&target),
        },
        CtlCmd::Restart { ip, target } => Command::Restart {
            ip,
            target: ctl::parse_target(&target),
        },
        CtlCmd::Reload { ip, target } => Command::Reload {
            ip,
            target: ctl::parse_target(&target),
        },
        CtlCmd::Kill { ip, pid } => Command::Kill { ip, pid },
        CtlCmd::Audit { last } => Command::Audit { last },
        CtlCmd::User { cmd: UserCmd::List } => Command::UserList,
        CtlCmd::User {
            cmd: UserCmd::Del { name },
        } => Command::UserDel { name },
        CtlCmd::User {
            cmd: UserCmd::Add { name, role },
        } => {
            let pw = match password("LUAHOST_NEW_PASSWORD", &format!("new password of {name}: "), true) {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            if pw.len() < 8 {
                return fail("a password needs at least 8 characters".into());
            }
            // the verifier is made here: the new password never leaves this process
            match Verifier::new(pw.as_bytes(), Kdf::DEFAULT) {
                Ok(verifier) => Command::UserAdd { name, role, verifier },
                Err(e) => return fail(e.to_string()),
            }
        }
        CtlCmd::Top { count, every } => {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return fail(e.to_string()),
            };
            let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
            let mut ok = true;
            let r = rt.block_on(ctl::top(
                &daemon,
                &login,
                secret.as_bytes(),
                count.min(100_000),
                Duration::from_secs_f64(every.clamp(0.2, 3600.0)),
                |reply, _| {
                    let (text, good) = ctl::outcome(reply, json);
                    ok &= good;
                    if tty && !json {
                        print!("\x1b[2J\x1b[H");
                    }
                    println!("{text}");
                },
            ));
            return match r {
                Ok(()) if ok => ExitCode::SUCCESS,
                Ok(()) => ExitCode::FAILURE,
                Err(e) => fail(e.to_string()),
            };
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(e.to_string()),
    };
    match rt.block_on(ctl::once(&daemon, &login, secret.as_bytes(), command)) {
        Ok(reply) => {
            let (text, ok) = ctl::outcome(&reply, json);
            if ok {
                println!("{text}");
                ExitCode::SUCCESS
            } else {
                fail(text)
            }
        }
        Err(e) => fail(e.to_string()),
    }
}

/// `luahost daemon`.
pub fn daemon(
    store: String,
    machine: String,
    listen: std::net::SocketAddr,
    logs: PathBuf,
    world: Option<PathBuf>,
    metrics: Option<std::net::SocketAddr>,
) -> ExitCode {
    let store = match std::path::Path::new(&store).canonicalize() {
        // node processes get the same folder whatever their working directory
        Ok(p) if !store.contains("://") => p.to_string_lossy().into_owned(),
        _ => store,
    };
    let cfg = luahost::ops::daemon::DaemonConfig {
        store,
        machine,
        listen,
        logs,
        world,
        metrics,
    };
    match luahost::ops::daemon::run(cfg, |s| {
        use std::io::Write;
        if let Some(t) = &s.bootstrap {
            println!("bootstrap token: {t}");
        }
        println!("listening on {}", s.addr);
        if let Some(m) = s.metrics {
            println!("metrics on {m}");
        }
        let _ = std::io::stdout().flush();
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The ops record of a node started by a daemon, while it runs.
pub struct Record {
    stop: Arc<AtomicBool>,
    graceful: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Record {
    /// Starts refreshing the record named by the daemon's environment, if any.
    pub fn start(probe: luahost::runtime::NodeProbe) -> Option<Record> {
        let store = std::env::var(luahost::ops::supervise::ENV_STORE).ok()?;
        let key = std::env::var(luahost::ops::supervise::ENV_KEY).ok()?;
        let r = match luahost::ops::report::Reporter::start(&store, &key) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot write this process's record {key}: {e}");
                return None;
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let graceful = Arc::new(AtomicBool::new(false));
        let sample = move || {
            probe
                .stats(Duration::from_millis(500))
                .map(|s| luahost::ops::report::Sample {
                    handled: s.handled,
                    mailbox: s.mailbox,
                    entities: s.entities,
                    lua_bytes: s.lua_bytes,
                    connections: s.connections,
                })
        };
        let thread = luahost::ops::report::spawn(r, sample, stop.clone(), graceful.clone());
        Some(Record {
            stop,
            graceful,
            thread: Some(thread),
        })
    }

    /// Ends the refreshes; a graceful end is recorded as stopped.
    pub fn end(mut self, graceful: bool) {
        self.graceful.store(graceful, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
