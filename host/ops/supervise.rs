//! A machine's processes as its daemon keeps them: the driver of
//! [`super::plan::Plan`] (which decides) over real processes: children of
//! this daemon, or adopted from an earlier daemon by pid, record and
//! environment; spawns, signals (SIGTERM, SIGKILL, SIGHUP), exits.
//!
//! Node processes are `luahost run --cluster C --node N` of this same
//! binary, in a process group of their own (a signal to the daemon's
//! terminal does not reach them) and told their record's key and the
//! store by environment (`LUAHOST_OPS_STORE`, `LUAHOST_OPS_KEY`): they
//! write their own records, so the daemon's death loses nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tokio::time::Instant;

use super::metrics::DaemonMetrics;
use super::plan::{Action, Outcome, Plan, Sig};
use super::store::{proc_key, OpsStore, ProcConfig, ProcState};
use super::wire::Target;

/// The environment variable naming the store to a node process.
pub const ENV_STORE: &str = "LUAHOST_OPS_STORE";
/// The environment variable naming a node process's record.
pub const ENV_KEY: &str = "LUAHOST_OPS_KEY";

/// Whether `pid` is a live process (not a zombie) started for record `key`.
pub fn is_ours(pid: u32, key: &str) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // the state follows the command name in parentheses
    let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
    if matches!(state, None | Some('Z') | Some('X')) {
        return false;
    }
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let want = format!("{ENV_KEY}={key}");
    env.split(|&b| b == 0).any(|v| v == want.as_bytes())
}

fn signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory effects; pid is a process we started or adopted.
    unsafe { libc::kill(pid as i32, sig) == 0 }
}

/// The processes of one machine: the [`Plan`] carried out with real
/// processes (children, or adopted ones watched through `/proc`).
#[derive(Debug)]
pub struct Supervisor {
    plan: Plan,
    exe: PathBuf,
    store_location: String,
    logs: PathBuf,
    procs: BTreeMap<String, (ProcConfig, String)>,
    children: BTreeMap<String, Child>,
    metrics: Option<DaemonMetrics>,
}

impl Supervisor {
    /// The processes `procs` of machine `ip` in `region`; adopts those whose
    /// records name a live process started for them, and plans to start
    /// the ones `store` wants running that are not.
    pub fn new(
        region: &str,
        ip: &str,
        procs: &[ProcConfig],
        store: &OpsStore,
        exe: PathBuf,
        logs: PathBuf,
        now: Instant,
    ) -> Supervisor {
        let wanted = store.wanted(ip).unwrap_or_default();
        let mut adopted = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for cfg in procs {
            let key = proc_key(region, ip, &cfg.name);
            if let Some(r) = store.proc(&key).ok().flatten() {
                if r.state == ProcState::Running && is_ours(r.pid, &key) {
                    tracing::info!("adopted {} (pid {}), still running", cfg.name, r.pid);
                    adopted.insert(cfg.name.clone(), r.pid);
                }
            }
            by_name.insert(cfg.name.clone(), (cfg.clone(), key));
        }
        Supervisor {
            plan: Plan::new(ip, procs, &wanted, &adopted, now),
            exe,
            store_location: store.location().to_string(),
            logs,
            procs: by_name,
            children: BTreeMap::new(),
            metrics: None,
        }
    }

    /// Counts starts, crash restarts and the processes by state into `m`.
    pub fn with_metrics(mut self, m: DaemonMetrics) -> Supervisor {
        m.set_states(self.plan.states());
        self.metrics = Some(m);
        self
    }

    /// The configured names and whether each should run.
    pub fn wanted(&self) -> BTreeMap<String, bool> {
        self.plan.wanted()
    }

    /// The pid of each running process, by name.
    pub fn pids(&self) -> BTreeMap<String, u32> {
        self.plan.pids()
    }

    fn carry_out(&mut self, actions: Vec<Action>, now: Instant) {
        for a in actions {
            match a {
                Action::Signal(pid, sig) => {
                    let n = match sig {
                        Sig::Term => libc::SIGTERM,
                        Sig::Kill => libc::SIGKILL,
                        Sig::Hup => libc::SIGHUP,
                    };
                    signal(pid, n);
                }
                Action::Spawn(name) => {
                    let Some((cfg, key)) = self.procs.get(&name) else {
                        continue;
                    };
                    match spawn(&self.exe, cfg, key, &self.store_location, &self.logs) {
                        Ok(child) => {
                            tracing::info!("started {name} (pid {})", child.id());
                            self.plan.started(&name, child.id(), now);
                            if let Some(m) = &self.metrics {
                                m.started(&name);
                            }
                            self.children.insert(name, child);
                        }
                        Err(e) => {
                            tracing::error!("cannot start {name}: {e}");
                            self.plan.start_failed(&name, now);
                        }
                    }
                }
            }
        }
    }

    fn command(&mut self, r: Result<Outcome, String>, now: Instant) -> Result<Outcome, String> {
        let mut o = r?;
        self.carry_out(std::mem::take(&mut o.actions), now);
        Ok(o)
    }

    /// Starts the target's processes that are not running.
    ///
    /// # Errors
    /// An unknown name.
    pub fn start(&mut self, target: &Target, now: Instant) -> Result<Outcome, String> {
        let r = self.plan.start(target, now);
        self.command(r, now)
    }

    /// Stops the target's processes gracefully (SIGTERM; SIGKILL after
    /// [`super::plan::STOP_TIMEOUT`]); they stay stopped.
    ///
    /// # Errors
    /// An unknown name.
    pub fn stop(&mut self, target: &Target, now: Instant) -> Result<Outcome, String> {
        let r = self.plan.stop(target, now);
        self.command(r, now)
    }

    /// Stops the target's processes gracefully and starts them again.
    ///
    /// # Errors
    /// An unknown name.
    pub fn restart(&mut self, target: &Target, now: Instant) -> Result<Outcome, String> {
        let r = self.plan.restart(target, now);
        self.command(r, now)
    }

    /// Kills process `pid` at once (SIGKILL); it stays stopped.
    ///
    /// # Errors
    /// A pid that is none of this machine's processes.
    pub fn kill(&mut self, pid: u32) -> Result<Outcome, String> {
        let now = Instant::now();
        let r = self.plan.kill(pid, now);
        self.command(r, now)
    }

    /// Asks the target's running processes to hot-reload (SIGHUP: changed
    /// scripts and the cluster file, the reload of development's watcher).
    ///
    /// # Errors
    /// An unknown name.
    pub fn reload(&mut self, target: &Target) -> Result<Outcome, String> {
        let r = self.plan.reload(target);
        self.command(r, Instant::now())
    }

    /// Notices exits (children by `try_wait`, adopted processes through
    /// `/proc`), then carries out what the plan says is due.
    pub fn tick(&mut self, now: Instant) {
        for (name, pid) in self.plan.pids() {
            let how = match self.children.get_mut(&name) {
                Some(c) if c.id() == pid => match c.try_wait() {
                    Ok(Some(st)) => Some(st.to_string()),
                    Ok(None) => None,
                    Err(e) => Some(e.to_string()),
                },
                _ => {
                    let key = self.procs.get(&name).map(|(_, k)| k.as_str()).unwrap_or("");
                    (!is_ours(pid, key)).then(|| "gone".to_string())
                }
            };
            if let Some(how) = how {
                self.children.remove(&name);
                let crashed = !self.plan.stopping(&name);
                let again = self.plan.exited(&name, now);
                if let (Some(m), true, Some(_)) = (&self.metrics, crashed, again) {
                    m.crash_restart(&name);
                }
                match again {
                    Some(at) if at > now => tracing::warn!(
                        "{name} (pid {pid}) exited ({how}); starting it again in {:.1} s",
                        at.saturating_duration_since(now).as_secs_f64()
                    ),
                    Some(_) => tracing::info!("{name} (pid {pid}) stopped ({how}); starting it again"),
                    None => tracing::info!("{name} (pid {pid}) stopped ({how})"),
                }
            }
        }
        let due = self.plan.due(now);
        self.carry_out(due, now);
        if let Some(m) = &self.metrics {
            m.set_states(self.plan.states());
        }
    }
}

fn spawn(exe: &Path, cfg: &ProcConfig, key: &str, store: &str, logs: &Path) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(logs)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(logs.join(format!("{}.log", cfg.name)))?;
    let mut cmd = Command::new(exe);
    cmd.arg("run")
        .arg("--cluster")
        .arg(&cfg.cluster)
        .arg("--node")
        .arg(&cfg.name);
    if let (Some(t), Some(a)) = (&cfg.stype, &cfg.addr) {
        cmd.arg("--type").arg(t).arg("--addr").arg(a);
    }
    cmd.env(ENV_STORE, store)
        .env(ENV_KEY, key)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    //! The supervisor over real processes: a shell script stands in for
    //! `luahost run` (it ignores its arguments and sleeps); time is passed
    //! in, so restarts after a backoff need no waiting.
    use super::*;
    use crate::ops::store::{now_ms, ProcRecord, ProcStats, World};
    use std::time::Duration;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: OpsStore,
        exe: PathBuf,
        logs: PathBuf,
        procs: Vec<ProcConfig>,
    }

    fn fixture() -> Fixture {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("node.sh");
        std::fs::write(&exe, "#!/bin/sh\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = OpsStore::open(dir.path().join("store").to_str().unwrap()).unwrap();
        let procs = vec![
            ProcConfig {
                name: "a".into(),
                cluster: "c.lua".into(),
                stype: None,
                addr: None,
            },
            ProcConfig {
                name: "b".into(),
                cluster: "c.lua".into(),
                stype: None,
                addr: None,
            },
        ];
        let mut w = World::default();
        w.regions
            .entry("r".into())
            .or_default()
            .insert("127.0.0.5".into(), procs.clone());
        store.set_world(&w).unwrap();
        Fixture {
            logs: dir.path().join("logs"),
            _dir: dir,
            store,
            exe,
            procs,
        }
    }

    impl Fixture {
        fn sup(&self, now: Instant) -> Supervisor {
            Supervisor::new(
                "r",
                "127.0.0.5",
                &self.procs,
                &self.store,
                self.exe.clone(),
                self.logs.clone(),
                now,
            )
        }
    }

    /// Ticks until `f` holds (processes take a moment to exit).
    fn tick_until(s: &mut Supervisor, now: Instant, f: impl Fn(&Supervisor) -> bool) -> bool {
        for _ in 0..200 {
            s.tick(now);
            if f(s) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn kill_all(s: &Supervisor) {
        for pid in s.pids().values() {
            signal(*pid, libc::SIGKILL);
        }
    }

    /// The value of the daemon series line that starts with `series`.
    fn series(m: &DaemonMetrics, series: &str) -> Option<String> {
        let mut text = String::new();
        m.source().encode(&mut text).unwrap();
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    }

    #[test]
    fn start_crash_restart_with_backoff_stop() {
        let f = fixture();
        let t0 = Instant::now();
        let m = DaemonMetrics::new("127.0.0.5", ["a", "b"]);
        let mut s = f.sup(t0).with_metrics(m.clone());
        let stopped = r#"luahost_daemon_processes{node="daemon@127.0.0.5",type="daemon",state="stopped"}"#;
        let starts = r#"luahost_daemon_starts_total{node="daemon@127.0.0.5",type="daemon",process="a"}"#;
        let crashes = r#"luahost_daemon_crash_restarts_total{node="daemon@127.0.0.5",type="daemon",process="a"}"#;
        assert_eq!(series(&m, stopped).as_deref(), Some("2"));
        assert!(s.pids().is_empty(), "nothing wanted yet");
        let out = s.start(&Target::Name("a".into()), t0).unwrap();
        assert_eq!(out.lines, vec!["a: starting"]);
        s.tick(t0);
        let pid = s.pids()["a"];
        // (between fork and exec /proc shows the parent's environment)
        assert!(
            (0..200).any(|_| {
                std::thread::sleep(Duration::from_millis(5));
                is_ours(pid, "r.127.0.0.5.a")
            }),
            "the child carries its key"
        );
        assert!(!s.pids().contains_key("b"));
        // a crash: started again after the backoff, not before
        signal(pid, libc::SIGKILL);
        assert!(tick_until(&mut s, t0, |s| s.pids().is_empty()));
        s.tick(t0 + Duration::from_millis(400));
        assert!(s.pids().is_empty(), "still backing off");
        s.tick(t0 + Duration::from_millis(600));
        let pid2 = s.pids()["a"];
        assert_ne!(pid2, pid);
        assert_eq!(series(&m, starts).as_deref(), Some("2"));
        assert_eq!(series(&m, crashes).as_deref(), Some("1"));
        assert_eq!(series(&m, stopped).as_deref(), Some("1"), "b");
        // a graceful stop is not restarted
        let out = s.stop(&Target::All, t0).unwrap();
        assert!(
            out.lines.contains(&format!("a: stopping (pid {pid2}, gracefully)")),
            "{out:?}"
        );
        assert!(out.lines.contains(&"b: not running".to_string()));
        assert!(tick_until(&mut s, t0 + Duration::from_secs(5), |s| s.pids().is_empty()));
        s.tick(t0 + Duration::from_secs(60));
        assert!(s.pids().is_empty());
        assert!(!s.wanted()["a"]);
        assert_eq!(series(&m, crashes).as_deref(), Some("1"), "a stop is no crash");
        assert_eq!(series(&m, stopped).as_deref(), Some("2"));
        assert!(s
            .start(&Target::Name("zz".into()), t0)
            .unwrap_err()
            .contains("no process named 'zz'"));
    }

    #[test]
    fn kill_is_final_reload_signals_restart_starts_again() {
        let f = fixture();
        let t0 = Instant::now();
        let mut s = f.sup(t0);
        s.start(&Target::All, t0).unwrap();
        s.tick(t0);
        let (a, b) = (s.pids()["a"], s.pids()["b"]);
        assert!(s.kill(999_999_999).unwrap_err().contains("not a process of 127.0.0.5"));
        s.kill(a).unwrap();
        assert!(tick_until(&mut s, t0, |s| !s.pids().contains_key("a")));
        s.tick(t0 + Duration::from_secs(60));
        assert!(!s.pids().contains_key("a"), "a kill is not restarted");
        // SIGHUP ends sleep: the reload reached the process
        let out = s.reload(&Target::Name("b".into())).unwrap();
        assert_eq!(out.lines, vec![format!("b: reloading (pid {b})")]);
        assert!(
            tick_until(&mut s, t0, |s| s.pids().get("b") != Some(&b)),
            "SIGHUP delivered"
        );
        kill_all(&s);
        // restart: stop, then start at once
        let mut s = f.sup(t0);
        s.start(&Target::Name("a".into()), t0).unwrap();
        s.tick(t0);
        let a = s.pids()["a"];
        s.restart(&Target::Name("a".into()), t0).unwrap();
        assert!(tick_until(&mut s, t0, |s| s.pids().get("a").is_some_and(|p| *p != a)));
        kill_all(&s);
    }

    #[test]
    fn a_new_supervisor_adopts_what_still_runs() {
        let f = fixture();
        let t0 = Instant::now();
        let mut s = f.sup(t0);
        s.start(&Target::Name("a".into()), t0).unwrap();
        s.tick(t0);
        f.store.set_wanted("127.0.0.5", &s.wanted()).unwrap();
        let pid = s.pids()["a"];
        // (the real node writes its record after its exec, as here)
        assert!((0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(5));
            is_ours(pid, "r.127.0.0.5.a")
        }));
        // the node's own record (a real node writes it)
        let rec = |pid| ProcRecord {
            key: "r.127.0.0.5.a".into(),
            pid,
            startcount: 1,
            lastupdate: now_ms(),
            state: ProcState::Running,
            info: ProcStats::default(),
        };
        f.store.put_proc(&rec(pid)).unwrap();
        drop(s); // the daemon dies; its child lives on
        let mut s2 = f.sup(t0);
        s2.tick(t0);
        assert_eq!(s2.pids()["a"], pid, "adopted, not started twice");
        // an adopted process that dies is noticed and started again
        signal(pid, libc::SIGKILL);
        assert!(tick_until(&mut s2, t0, |s| s.pids().get("a") != Some(&pid)));
        s2.tick(t0 + Duration::from_secs(1));
        let pid2 = s2.pids()["a"];
        assert_ne!(pid2, pid);
        // a record naming a pid that is not ours is not adopted
        f.store.put_proc(&rec(1)).unwrap();
        kill_all(&s2);
        let mut s3 = f.sup(t0);
        s3.tick(t0);
        assert_ne!(s3.pids().get("a"), Some(&1), "pid 1 is not ours");
        kill_all(&s3);
    }
}
