//! A machine's processes as its daemon keeps them: which should run, which
//! run (children of this daemon, or adopted from an earlier daemon by pid
//! and record), starting, graceful stops, kills, restarts after a crash
//! with [`Backoff`], hot reloads (SIGHUP).
//!
//! Node processes are `luahost run --cluster C --node N` of this same
//! binary, in a process group of their own (a signal to the daemon's
//! terminal does not reach them) and told their record's key and the
//! store by environment (`LUAHOST_OPS_STORE`, `LUAHOST_OPS_KEY`): they
//! write their own records, so the daemon's death loses nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::restart::Backoff;
use super::store::{proc_key, OpsStore, ProcConfig, ProcState};
use super::wire::Target;

/// How long a graceful stop may take before the process is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// The environment variable naming the store to a node process.
pub const ENV_STORE: &str = "LUAHOST_OPS_STORE";
/// The environment variable naming a node process's record.
pub const ENV_KEY: &str = "LUAHOST_OPS_KEY";

/// One running process.
#[derive(Debug)]
struct Running {
    pid: u32,
    /// None when adopted (not our child: watched by pid).
    child: Option<Child>,
    started: Instant,
}

/// One configured process.
#[derive(Debug)]
struct Slot {
    cfg: ProcConfig,
    key: String,
    want: bool,
    run: Option<Running>,
    next_start: Option<Instant>,
    backoff: Backoff,
    /// A graceful stop was asked at this time.
    stopping: Option<Instant>,
    /// Start again once the stop is done.
    restart: bool,
}

/// What happened to the processes of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// One line per process.
    pub lines: Vec<String>,
}

/// The processes of one machine.
#[derive(Debug)]
pub struct Supervisor {
    ip: String,
    exe: PathBuf,
    store_location: String,
    logs: PathBuf,
    slots: BTreeMap<String, Slot>,
}

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
        let mut slots = BTreeMap::new();
        for cfg in procs {
            let key = proc_key(region, ip, &cfg.name);
            let want = wanted.get(&cfg.name).copied().unwrap_or(false);
            let rec = store.proc(&key).ok().flatten();
            let run = rec
                .filter(|r| r.state == ProcState::Running && is_ours(r.pid, &key))
                .map(|r| {
                    tracing::info!("adopted {} (pid {}), still running", cfg.name, r.pid);
                    Running {
                        pid: r.pid,
                        child: None,
                        started: now,
                    }
                });
            let next_start = (want && run.is_none()).then_some(now);
            slots.insert(
                cfg.name.clone(),
                Slot {
                    cfg: cfg.clone(),
                    key,
                    want,
                    run,
                    next_start,
                    backoff: Backoff::default(),
                    stopping: None,
                    restart: false,
                },
            );
        }
        Supervisor {
            ip: ip.to_string(),
            exe,
            store_location: store.location().to_string(),
            logs,
            slots,
        }
    }

    /// The configured names and whether each should run.
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

    fn select(&mut self, target: &Target) -> Result<Vec<&mut Slot>, String> {
        match target {
            Target::All => Ok(self.slots.values_mut().collect()),
            Target::Name(n) => match self.slots.get_mut(n) {
                Some(s) => Ok(vec![s]),
                None => Err(format!("no process named '{n}' is configured on {}", self.ip)),
            },
        }
    }

    /// Starts the target's processes that are not running.
    ///
    /// # Errors
    /// An unknown name.
    pub fn start(&mut self, target: &Target, now: Instant) -> Result<Outcome, String> {
        let mut lines = Vec::new();
        for s in self.select(target)? {
            s.want = true;
            s.restart = false;
            s.backoff.reset();
            match &s.run {
                Some(r) if s.stopping.is_none() => {
                    lines.push(format!("{}: already running (pid {})", s.cfg.name, r.pid))
                }
                Some(_) => {
                    s.restart = true;
                    lines.push(format!("{}: starting once its stop ends", s.cfg.name));
                }
                None => {
                    s.next_start = Some(now);
                    lines.push(format!("{}: starting", s.cfg.name));
                }
            }
        }
        Ok(Outcome { lines })
    }

    /// Stops the target's processes gracefully (SIGTERM; SIGKILL after
    /// [`STOP_TIMEOUT`]); they stay stopped.
    ///
    /// # Errors
    /// An unknown name.
    pub fn stop(&mut self, target: &Target, now: Instant) -> Result<Outcome, String> {
        let mut lines = Vec::new();
        for s in self.select(target)? {
            s.want = false;
            s.restart = false;
            s.next_start = None;
            lines.push(Self::term(s, now));
        }
        Ok(Outcome { lines })
    }

    fn term(s: &mut Slot, now: Instant) -> String {
        match &s.run {
            None => format!("{}: not running", s.cfg.name),
            Some(r) => {
                if s.stopping.is_none() {
                    signal(r.pid, libc::SIGTERM);
                    s.stopping = Some(now);
                }
                format!("{}: stopping (pid {}, gracefully)", s.cfg.name, r.pid)
            }
        }
    }

    /// Stops the target's processes gracefully and starts them again.
    ///
    /// # Errors
    /// An unknown name.
    pub fn restart(&mut self, target: &Target, now: Instant) -> Result<Outcome, String> {
        let mut lines = Vec::new();
        for s in self.select(target)? {
            s.want = true;
            s.backoff.reset();
            if s.run.is_some() {
                s.restart = true;
                lines.push(Self::term(s, now) + ", then starting again");
            } else {
                s.next_start = Some(now);
                lines.push(format!("{}: starting", s.cfg.name));
            }
        }
        Ok(Outcome { lines })
    }

    /// Kills process `pid` at once (SIGKILL); it stays stopped.
    ///
    /// # Errors
    /// A pid that is none of this machine's processes.
    pub fn kill(&mut self, pid: u32) -> Result<Outcome, String> {
        let s = self
            .slots
            .values_mut()
            .find(|s| s.run.as_ref().is_some_and(|r| r.pid == pid))
            .ok_or_else(|| format!("pid {pid} is not a process of {}", self.ip))?;
        s.want = false;
        s.restart = false;
        s.next_start = None;
        signal(pid, libc::SIGKILL);
        s.stopping.get_or_insert(Instant::now());
        Ok(Outcome {
            lines: vec![format!("{}: killed (pid {pid})", s.cfg.name)],
        })
    }

    /// Asks the target's running processes to hot-reload (SIGHUP: changed
    /// scripts and the cluster file, the reload of development's watcher).
    ///
    /// # Errors
    /// An unknown name.
    pub fn reload(&mut self, target: &Target) -> Result<Outcome, String> {
        let mut lines = Vec::new();
        for s in self.select(target)? {
            match &s.run {
                Some(r) => {
                    signal(r.pid, libc::SIGHUP);
                    lines.push(format!("{}: reloading (pid {})", s.cfg.name, r.pid));
                }
                None => lines.push(format!("{}: not running", s.cfg.name)),
            }
        }
        Ok(Outcome { lines })
    }

    /// Notices exits, kills stops that overran, starts what is due.
    pub fn tick(&mut self, now: Instant) {
        for s in self.slots.values_mut() {
            if let Some(r) = &mut s.run {
                let exited = match &mut r.child {
                    Some(c) => match c.try_wait() {
                        Ok(Some(st)) => Some(st.to_string()),
                        Ok(None) => None,
                        Err(e) => Some(e.to_string()),
                    },
                    None => (!is_ours(r.pid, &s.key)).then(|| "gone".to_string()),
                };
                match exited {
                    Some(how) => {
                        let started = r.started;
                        let pid = r.pid;
                        s.run = None;
                        if s.stopping.take().is_some() {
                            tracing::info!("{} (pid {pid}) stopped: {how}", s.cfg.name);
                            if s.restart {
                                s.restart = false;
                                s.next_start = Some(now);
                            }
                        } else if s.want {
                            let at = s.backoff.crashed(started, now);
                            tracing::warn!(
                                "{} (pid {pid}) exited ({how}); starting it again in {:.1} s",
                                s.cfg.name,
                                at.saturating_duration_since(now).as_secs_f64()
                            );
                            s.next_start = Some(at);
                        }
                    }
                    None => {
                        if s.stopping
                            .is_some_and(|t| now.saturating_duration_since(t) >= STOP_TIMEOUT)
                        {
                            tracing::warn!("{} did not stop within {STOP_TIMEOUT:?}: killed", s.cfg.name);
                            signal(r.pid, libc::SIGKILL);
                        }
                    }
                }
            }
            if s.run.is_none() && s.want && s.next_start.is_some_and(|t| t <= now) {
                s.next_start = None;
                match spawn(&self.exe, &s.cfg, &s.key, &self.store_location, &self.logs) {
                    Ok(child) => {
                        tracing::info!("started {} (pid {})", s.cfg.name, child.id());
                        s.run = Some(Running {
                            pid: child.id(),
                            child: Some(child),
                            started: now,
                        });
                    }
                    Err(e) => {
                        let at = s.backoff.crashed(now, now);
                        tracing::error!("cannot start {}: {e}", s.cfg.name);
                        s.next_start = Some(at);
                    }
                }
            }
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

    #[test]
    fn start_crash_restart_with_backoff_stop() {
        let f = fixture();
        let t0 = Instant::now();
        let mut s = f.sup(t0);
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
