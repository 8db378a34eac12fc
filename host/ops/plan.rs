//! What a daemon should do with its machine's processes, free of I/O:
//! which should run, which run, when a crashed one starts again
//! ([`Backoff`]), when a stop that overran is killed. Commands and events
//! (a process started, exited) come in with the time; [`Action`]s (start
//! this one, signal that pid) come out for the driver
//! ([`super::supervise::Supervisor`]) to carry out.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::restart::Backoff;
use super::store::ProcConfig;
use super::wire::Target;

/// How long a graceful stop may take before the process is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A signal to a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// SIGTERM: stop gracefully.
    Term,
    /// SIGKILL: stop at once.
    Kill,
    /// SIGHUP: hot-reload.
    Hup,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the process of this name (then report [`Plan::started`] or
    /// [`Plan::start_failed`]).
    Spawn(String),
    /// Send a signal.
    Signal(u32, Sig),
}

#[derive(Debug)]
struct Run {
    pid: u32,
    started: Instant,
}

#[derive(Debug)]
struct Slot {
    want: bool,
    run: Option<Run>,
    next_start: Option<Instant>,
    backoff: Backoff,
    /// A stop (graceful or kill) was asked at this time.
    stopping: Option<Instant>,
    /// Start again once the stop is done.
    restart: bool,
}

/// What a command did: one line per process, and the actions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// One line per process.
    pub lines: Vec<String>,
    /// For the driver.
    pub actions: Vec<Action>,
}

/// The plan for one machine's processes.
#[derive(Debug)]
pub struct Plan {
    ip: String,
    slots: BTreeMap<String, Slot>,
}

impl Plan {
    /// The processes `procs` of machine `ip`; `wanted` says which should
    /// run, `adopted` which run already (pids, by name).
    pub fn new(
        ip: &str,
        procs: &[ProcConfig],
        wanted: &BTreeMap<String, bool>,
        adopted: &BTreeMap<String, u32>,
        now: Instant,
    ) -> Plan {
        let slots = procs
            .iter()
            .map(|p| {
                let want = wanted.get(&p.name).copied().unwrap_or(false);
                let run = adopted.get(&p.name).map(|&pid| Run { pid, started: now });
                let slot = Slot {
                    want,
                    next_start: (want && run.is_none()).then_some(now),
                    run,
                    backoff: Backoff::default(),
                    stopping: None,
                    restart: false,
                };
                (p.name.clone(), slot)
            })
            .collect();
        Plan {
            ip: ip.to_string(),
            slots,
        }
    }

    /// Which processes should run, by name.
    pub fn wanted(&self) -> BTreeMap<String, bool> {
        self.slots.iter().map(|(n, s)| (n.clone(), s.want)).collect()
    }

    /// The pid of each running process, by name.
    pub fn pids(&self) -> BTreeMap<String, u32> {
        self.slots
            .iter()
            .filter_map(|(n, s)| s.run.as_ref().map(|r| (n.clone(), r.pid)))
            .collect()
    }

    /// What each configured process is: running, dead (should run but
    /// does not) or stopped.
    pub fn states(&self) -> impl Iterator<Item = super::metrics::ProcState> + '_ {
        use super::metrics::ProcState;
        self.slots.values().map(|s| match (&s.run, s.want) {
            (Some(_), _) => ProcState::Running,
            (None, true) => ProcState::Dead,
            (None, false) => ProcState::Stopped,
        })
    }

    /// Whether a stop (or kill) of `name` was asked: its exit is not a crash.
    pub fn stopping(&self, name: &str) -> bool {
        self.slots.get(name).is_some_and(|s| s.stopping.is_some())
    }

    fn select(&mut self, target: &Target) -> Result<Vec<(&String, &mut Slot)>, String> {
        match target {
            Target::All => Ok(self.slots.iter_mut().collect()),
            Target::Name(n) => match self.slots.get_mut_key(n) {
                Some(x) => Ok(vec![x]),
                None => Err(format!("no process named '{n}' is configured on {}", self.ip)),
            },
        }
    }

    /// `start`: the target's processes that are not running start now.
    ///
    /// # Errors
    /// An unknown name.
    pub fn start(&mut self, target: &Target, now: Instant) -> Result<Outcome, String> {
        let mut o = Outcome::default();
        for (name, s) in self.select(target)? {
            s.want = true;
            s.backoff.reset();
            match &s.run {
                Some(r) if s.stopping.is_none() => o.lines.push(format!("{name}: already running (pid {})", r.pid)),
                Some(_) => {
                    s.restart = true;
                    o.lines.push(format!("{name}: starting once its stop ends"));
                }
                None => {
                    s.next_start = Some(now);
                    o.lines.push(format!("{name}: starting"));
                }
            }
        }
        o.actions = self.due(now);
        Ok(o)
    }

    fn term(name: &str, s: &mut Slot, now: Instant, o: &mut Outcome) -> Option<u32> {
        let r = s.run.as_ref()?;
        if s.stopping.is_none() {
            o.actions.push(Action::Signal(r.pid, Sig::Term));
            s.stopping = Some(now);
        }
        o.lines.push(format!("{name}: stopping (pid {}, gracefully)", r.pid));
        Some(r.pid)
    }

    /// `stop`: SIGTERM to the target's running processes (SIGKILL after
    /// [`STOP_TIMEOUT`]); they stay stopped.
    ///
    /// # Errors
    /// An unknown name.
    pub fn stop(&mut self, target: &Target, now: Instant) -> Result<Outcome, String> {
        let mut o = Outcome::default();
        for (name, s) in self.select(target)? {
            s.want = false;
            s.restart = false;
            s.next_start = None;
            if Self::term(name, s, now, &mut o).is_none() {
                o.lines.push(format!("{name}: not running"));
            }
        }
        Ok(o)
    }

    /// `restart`: stop gracefully, then start at once.
    ///
    /// # Errors
    /// An unknown name.
    pub fn restart(&mut self, target: &Target, now: Instant) -> Result<Outcome, String> {
        let mut o = Outcome::default();
        for (name, s) in self.select(target)? {
            s.want = true;
            s.backoff.reset();
            if s.run.is_some() {
                s.restart = true;
                Self::term(name, s, now, &mut o);
                if let Some(l) = o.lines.last_mut() {
                    l.push_str(", then starting again");
                }
            } else {
                s.next_start = Some(now);
                o.lines.push(format!("{name}: starting"));
            }
        }
        o.actions.extend(self.due(now));
        Ok(o)
    }

    /// `kill`: SIGKILL to process `pid`; it stays stopped.
    ///
    /// # Errors
    /// A pid that is none of this machine's processes.
    pub fn kill(&mut self, pid: u32, now: Instant) -> Result<Outcome, String> {
        let (name, s) = self
            .slots
            .iter_mut()
            .find(|(_, s)| s.run.as_ref().is_some_and(|r| r.pid == pid))
            .ok_or_else(|| format!("pid {pid} is not a process of {}", self.ip))?;
        s.want = false;
        s.restart = false;
        s.next_start = None;
        s.stopping.get_or_insert(now);
        Ok(Outcome {
            lines: vec![format!("{name}: killed (pid {pid})")],
            actions: vec![Action::Signal(pid, Sig::Kill)],
        })
    }

    /// `reload`: SIGHUP to the target's running processes.
    ///
    /// # Errors
    /// An unknown name.
    pub fn reload(&mut self, target: &Target) -> Result<Outcome, String> {
        let mut o = Outcome::default();
        for (name, s) in self.select(target)? {
            match &s.run {
                Some(r) => {
                    o.actions.push(Action::Signal(r.pid, Sig::Hup));
                    o.lines.push(format!("{name}: reloading (pid {})", r.pid));
                }
                None => o.lines.push(format!("{name}: not running")),
            }
        }
        Ok(o)
    }

    /// The driver started process `name` as `pid`.
    pub fn started(&mut self, name: &str, pid: u32, now: Instant) {
        if let Some(s) = self.slots.get_mut(name) {
            s.run = Some(Run { pid, started: now });
        }
    }

    /// The driver could not start `name`: try again after the backoff.
    pub fn start_failed(&mut self, name: &str, now: Instant) {
        if let Some(s) = self.slots.get_mut(name) {
            s.next_start = Some(s.backoff.crashed(now, now));
        }
    }

    /// Process `name` exited. Returns when it starts again, if it does:
    /// at once after a restart's stop, after the backoff after a crash of a
    /// process that should run, never after a stop or a kill.
    pub fn exited(&mut self, name: &str, now: Instant) -> Option<Instant> {
        let s = self.slots.get_mut(name)?;
        let run = s.run.take()?;
        if s.stopping.take().is_some() {
            if std::mem::take(&mut s.restart) {
                s.next_start = Some(now);
            }
        } else if s.want {
            s.next_start = Some(s.backoff.crashed(run.started, now));
        }
        s.next_start
    }

    /// What is due at `now`: starts, and kills of stops that overran.
    pub fn due(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for (name, s) in &mut self.slots {
            match &s.run {
                Some(r) => {
                    if s.stopping
                        .is_some_and(|t| now.saturating_duration_since(t) >= STOP_TIMEOUT)
                    {
                        out.push(Action::Signal(r.pid, Sig::Kill));
                        // once per timeout
                        s.stopping = Some(now);
                    }
                }
                None => {
                    if s.want && s.next_start.is_some_and(|t| t <= now) {
                        s.next_start = None;
                        out.push(Action::Spawn(name.clone()));
                    }
                }
            }
        }
        out
    }
}

/// `get_mut` returning the key too.
trait GetMutKey<V> {
    fn get_mut_key(&mut self, k: &str) -> Option<(&String, &mut V)>;
}

impl<V> GetMutKey<V> for BTreeMap<String, V> {
    fn get_mut_key(&mut self, k: &str) -> Option<(&String, &mut V)> {
        self.iter_mut().find(|(n, _)| n.as_str() == k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn procs() -> Vec<ProcConfig> {
        ["a", "b"]
            .iter()
            .map(|n| ProcConfig {
                name: n.to_string(),
                cluster: "c.lua".into(),
                stype: None,
                addr: None,
            })
            .collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn spawn(n: &str) -> Action {
        Action::Spawn(n.into())
    }

    #[test]
    fn start_crash_backoff_and_a_stable_run_forgets() {
        let t = Instant::now();
        let mut p = Plan::new("10.0.0.1", &procs(), &BTreeMap::new(), &BTreeMap::new(), t);
        assert!(p.due(t).is_empty(), "nothing wanted");
        let o = p.start(&Target::Name("a".into()), t).unwrap();
        assert_eq!(o.lines, vec!["a: starting"]);
        assert_eq!(o.actions, vec![spawn("a")]);
        p.started("a", 100, t);
        assert!(p.due(t).is_empty(), "started once");
        // crashes: 0.5 s, then 1 s
        assert_eq!(p.exited("a", t + ms(100)), Some(t + ms(600)));
        assert!(p.due(t + ms(599)).is_empty());
        assert_eq!(p.due(t + ms(600)), vec![spawn("a")]);
        p.started("a", 101, t + ms(600));
        assert_eq!(p.exited("a", t + ms(700)), Some(t + ms(1700)));
        assert_eq!(p.due(t + ms(1700)), vec![spawn("a")]);
        // after a run of 10 s, a crash starts from 0.5 s again
        p.started("a", 102, t + ms(1700));
        assert_eq!(p.exited("a", t + ms(11_700)), Some(t + ms(12_200)));
        // a start that fails is tried again after the backoff
        assert_eq!(p.due(t + ms(12_200)), vec![spawn("a")]);
        p.start_failed("a", t + ms(12_200));
        assert!(p.due(t + ms(12_300)).is_empty());
        assert!(p.wanted()["a"]);
        assert!(!p.wanted()["b"]);
        // a is wanted and not running: dead; b is not wanted: stopped
        use crate::ops::metrics::ProcState;
        assert_eq!(p.states().collect::<Vec<_>>(), [ProcState::Dead, ProcState::Stopped]);
        assert!(!p.stopping("a"), "a crash is no stop");
    }

    #[test]
    fn stop_is_graceful_then_killed_and_not_restarted() {
        let t = Instant::now();
        let mut p = Plan::new("10.0.0.1", &procs(), &BTreeMap::new(), &BTreeMap::new(), t);
        p.start(&Target::All, t).unwrap();
        p.started("a", 100, t);
        p.started("b", 200, t);
        use crate::ops::metrics::ProcState;
        assert_eq!(p.states().collect::<Vec<_>>(), [ProcState::Running, ProcState::Running]);
        let o = p.stop(&Target::Name("a".into()), t + ms(10)).unwrap();
        assert!(p.stopping("a") && !p.stopping("b"));
        assert_eq!(o.actions, vec![Action::Signal(100, Sig::Term)]);
        assert_eq!(o.lines, vec!["a: stopping (pid 100, gracefully)"]);
        // a second stop sends nothing new
        assert!(p
            .stop(&Target::Name("a".into()), t + ms(20))
            .unwrap()
            .actions
            .is_empty());
        assert!(p.due(t + ms(10) + STOP_TIMEOUT - ms(1)).is_empty());
        assert_eq!(p.due(t + ms(10) + STOP_TIMEOUT), vec![Action::Signal(100, Sig::Kill)]);
        assert_eq!(p.exited("a", t + STOP_TIMEOUT + ms(50)), None, "not restarted");
        assert_eq!(p.states().collect::<Vec<_>>(), [ProcState::Stopped, ProcState::Running]);
        assert!(p.due(t + Duration::from_secs(3600)).is_empty());
        assert_eq!(p.pids(), BTreeMap::from([("b".to_string(), 200)]));
        // unknown names are refused
        assert!(p
            .stop(&Target::Name("zz".into()), t)
            .unwrap_err()
            .contains("no process named 'zz' is configured on 10.0.0.1"));
        // stop all: the running one, and the others say so
        let o = p.stop(&Target::All, t).unwrap();
        assert_eq!(o.lines, vec!["a: not running", "b: stopping (pid 200, gracefully)"]);
    }

    #[test]
    fn kill_restart_reload() {
        let t = Instant::now();
        let mut p = Plan::new("10.0.0.1", &procs(), &BTreeMap::new(), &BTreeMap::new(), t);
        p.start(&Target::All, t).unwrap();
        p.started("a", 100, t);
        p.started("b", 200, t);
        assert!(p
            .kill(999, t)
            .unwrap_err()
            .contains("pid 999 is not a process of 10.0.0.1"));
        let o = p.kill(100, t).unwrap();
        assert_eq!(o.actions, vec![Action::Signal(100, Sig::Kill)]);
        assert_eq!(p.exited("a", t), None, "a kill is final");
        let o = p.reload(&Target::All).unwrap();
        assert_eq!(o.actions, vec![Action::Signal(200, Sig::Hup)]);
        assert_eq!(o.lines, vec!["a: not running", "b: reloading (pid 200)"]);
        let o = p.restart(&Target::Name("b".into()), t).unwrap();
        assert_eq!(o.actions, vec![Action::Signal(200, Sig::Term)]);
        assert_eq!(o.lines, vec!["b: stopping (pid 200, gracefully), then starting again"]);
        assert_eq!(p.exited("b", t + ms(300)), Some(t + ms(300)), "at once after the stop");
        assert_eq!(p.due(t + ms(300)), vec![spawn("b")]);
        // restart of a stopped process starts it
        let o = p.restart(&Target::Name("a".into()), t).unwrap();
        assert_eq!(o.actions, vec![spawn("a")]);
    }

    #[test]
    fn adopted_processes_are_not_started_again() {
        let t = Instant::now();
        let wanted = BTreeMap::from([("a".to_string(), true), ("b".to_string(), true)]);
        let adopted = BTreeMap::from([("a".to_string(), 4242)]);
        let mut p = Plan::new("10.0.0.1", &procs(), &wanted, &adopted, t);
        assert_eq!(p.due(t), vec![spawn("b")], "only the one not running");
        assert_eq!(p.pids()["a"], 4242);
        // an adopted process that dies is a crash like any other
        assert_eq!(p.exited("a", t + ms(50)), Some(t + ms(550)));
        let o = p.start(&Target::Name("a".into()), t + ms(60)).unwrap();
        assert_eq!(o.actions, vec![spawn("a")], "a start by hand forgets the backoff");
    }
}
