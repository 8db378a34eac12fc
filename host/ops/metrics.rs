//! The daemon's Prometheus series (`luahost_daemon_*`, labelled `node`
//! `daemon@<ip>` and `type` `daemon`), served by
//! [`crate::metrics::serve`] when the daemon is given `--metrics ADDR`.
//!
//! The counters are `prometheus_client` metrics (atomics behind `Arc`s):
//! the supervisor, the command handler and the connection drivers count
//! through clones of one [`DaemonMetrics`]; the endpoint encodes its
//! registry.

use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::roles::Verb;
use super::wire::Reply;
use crate::metrics::Source;

/// What a configured process is, as the daemon sees it (the `state` label
/// of `luahost_daemon_processes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    /// It runs (started or adopted by this daemon).
    Running,
    /// It should run but does not (crashed, waiting for its restart, or
    /// failing to start).
    Dead,
    /// It should not run and does not.
    Stopped,
}

impl ProcState {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            ProcState::Running => "running",
            ProcState::Dead => "dead",
            ProcState::Stopped => "stopped",
        }
    }
}

const STATES: [ProcState; 3] = [ProcState::Running, ProcState::Dead, ProcState::Stopped];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabel {
    process: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
    result: &'static str,
}

/// The daemon's counters and gauges; clones count into the same series.
#[derive(Debug, Clone)]
pub struct DaemonMetrics {
    registry: Arc<Mutex<Registry>>,
    processes: Family<StateLabel, Gauge>,
    starts: Family<ProcessLabel, Counter>,
    crash_restarts: Family<ProcessLabel, Counter>,
    commands: Family<CommandLabels, Counter>,
    logins_refused: Counter,
    connections: Gauge,
}

impl DaemonMetrics {
    /// The series of the daemon of machine `ip`, whose configured
    /// processes are `names` (their series start at 0).
    pub fn new<'a>(ip: &str, names: impl IntoIterator<Item = &'a str>) -> DaemonMetrics {
        let labels = [
            (Cow::Borrowed("node"), Cow::Owned(format!("daemon@{ip}"))),
            (Cow::Borrowed("type"), Cow::Borrowed("daemon")),
        ];
        let mut r = Registry::with_prefix_and_labels("luahost_daemon", labels.into_iter());
        let m = DaemonMetrics {
            registry: Arc::new(Mutex::new(Registry::default())),
            processes: Family::default(),
            starts: Family::default(),
            crash_restarts: Family::default(),
            commands: Family::default(),
            logins_refused: Counter::default(),
            connections: Gauge::default(),
        };
        r.register(
            "processes",
            "Configured processes of this machine by state (running, dead: should run but does not, stopped)",
            m.processes.clone(),
        );
        r.register(
            "starts",
            "Processes this daemon started, by process name",
            m.starts.clone(),
        );
        r.register(
            "crash_restarts",
            "Restarts this daemon planned after a process exited on its own, by process name",
            m.crash_restarts.clone(),
        );
        r.register(
            "commands",
            "ctl commands taken by this daemon (a routed one counts where ctl sent it), by command and result (ok, refused, failed)",
            m.commands.clone(),
        );
        r.register(
            "logins_refused",
            "ctl logins refused (wrong user or password, a spent bootstrap token)",
            m.logins_refused.clone(),
        );
        r.register(
            "ctl_connections",
            "Open ctl connections (logged in or logging in)",
            m.connections.clone(),
        );
        for s in STATES {
            let _ = m.processes.get_or_create(&StateLabel { state: s.name() });
        }
        for n in names {
            let l = ProcessLabel { process: n.to_string() };
            let _ = m.starts.get_or_create(&l);
            let _ = m.crash_restarts.get_or_create(&l);
        }
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = r;
        m
    }

    /// What the endpoint serves.
    pub fn source(&self) -> Arc<dyn Source> {
        self.registry.clone()
    }

    /// Sets the process counts by state from each process's state.
    pub fn set_states(&self, states: impl IntoIterator<Item = ProcState>) {
        let mut n = [0i64; STATES.len()];
        for s in states {
            n[s as usize] += 1;
        }
        for s in STATES {
            self.processes
                .get_or_create(&StateLabel { state: s.name() })
                .set(n[s as usize]);
        }
    }

    /// Process `name` was started.
    pub fn started(&self, name: &str) {
        self.starts
            .get_or_create(&ProcessLabel {
                process: name.to_string(),
            })
            .inc();
    }

    /// Process `name` exited on its own and will be started again.
    pub fn crash_restart(&self, name: &str) {
        self.crash_restarts
            .get_or_create(&ProcessLabel {
                process: name.to_string(),
            })
            .inc();
    }

    /// A command was handled, with this reply.
    pub fn command(&self, verb: Verb, reply: &Reply) {
        let result = match reply {
            Reply::Ok(_) => "ok",
            Reply::Refused { .. } => "refused",
            Reply::Failed { .. } => "failed",
        };
        self.commands
            .get_or_create(&CommandLabels {
                command: verb.name(),
                result,
            })
            .inc();
    }

    /// A login was refused.
    pub fn login_refused(&self) {
        self.logins_refused.inc();
    }

    /// A ctl connection opened (`true`) or closed.
    pub fn connection(&self, open: bool) {
        if open {
            self.connections.inc();
        } else {
            self.connections.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::wire::Output;

    #[test]
    fn series_are_labelled_and_count() {
        let m = DaemonMetrics::new("10.0.0.1", ["a_1", "b_1"]);
        m.set_states([ProcState::Running, ProcState::Running, ProcState::Dead]);
        m.started("a_1");
        m.crash_restart("a_1");
        m.command(Verb::Stop, &Reply::Refused { reason: "no".into() });
        m.command(Verb::List, &Reply::Ok(Output::Done { message: String::new() }));
        m.login_refused();
        m.connection(true);
        let mut text = String::new();
        m.source().encode(&mut text).unwrap();
        let l = r#"node="daemon@10.0.0.1",type="daemon""#;
        for line in [
            format!(r#"luahost_daemon_processes{{{l},state="running"}} 2"#),
            format!(r#"luahost_daemon_processes{{{l},state="dead"}} 1"#),
            format!(r#"luahost_daemon_processes{{{l},state="stopped"}} 0"#),
            format!(r#"luahost_daemon_starts_total{{{l},process="a_1"}} 1"#),
            format!(r#"luahost_daemon_starts_total{{{l},process="b_1"}} 0"#),
            format!(r#"luahost_daemon_crash_restarts_total{{{l},process="a_1"}} 1"#),
            format!(r#"luahost_daemon_commands_total{{{l},command="stop",result="refused"}} 1"#),
            format!(r#"luahost_daemon_commands_total{{{l},command="list",result="ok"}} 1"#),
            format!(r#"luahost_daemon_logins_refused_total{{{l}}} 1"#),
            format!(r#"luahost_daemon_ctl_connections{{{l}}} 1"#),
        ] {
            assert!(text.lines().any(|x| x == line), "no {line} in\n{text}");
        }
    }
}
