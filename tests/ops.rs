//! Operations end to end: daemons as machines 127.0.0.2 and 127.0.0.3
//! (Linux routes all of 127.0.0.0/8 to lo), real node processes started by
//! them, `luahost ctl` as a user runs it, on the folder store and on a real
//! ZooKeeper.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::prom::{self, scrape};
use common::zk::ZkServer;
use common::{copy_scripts, eval, wait_until, write_cluster_with, Proc, TempDir};
use luahost::ops::store::{OpsStore, ProcRecord};
use prometheus_parse::Scrape;

const LONG: Duration = Duration::from_secs(30);

/// Kills every node process the store records (and only those: the pid
/// must carry the record's key), whatever happened to the test.
struct Reaper(String, Option<String>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(s) = OpsStore::open_with(&self.0, self.1.clone()) {
            for r in s.procs().unwrap_or_default() {
                if luahost::ops::supervise::is_ours(r.pid, &r.key) {
                    unsafe {
                        libc::kill(r.pid as i32, libc::SIGKILL);
                    }
                }
            }
        }
    }
}

/// The value of the daemon series `luahost_daemon_<metric>` whose labels include `labels`.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    prom::value(s, &format!("luahost_daemon_{metric}"), labels)
}

/// Scrapes `addr` until `luahost_daemon_<metric>{labels}` is `want`.
fn wait_value(addr: SocketAddr, metric: &str, labels: &[(&str, &str)], want: f64) {
    prom::wait_value(addr, &format!("luahost_daemon_{metric}"), labels, want, LONG);
}

struct Env {
    dir: TempDir,
    store: String,
    zk_auth: Option<String>,
    cluster: PathBuf,
    scripts: PathBuf,
}

impl Env {
    fn envs(&self) -> Vec<(&'static str, String)> {
        match &self.zk_auth {
            Some(a) => vec![("LUAHOST_ZK_AUTH", a.clone())],
            None => vec![],
        }
    }

    fn open(&self) -> OpsStore {
        OpsStore::open_with(&self.store, self.zk_auth.clone()).unwrap()
    }

    fn record(&self, name: &str, ip: &str) -> Option<ProcRecord> {
        self.open().proc(&format!("east.{ip}.{name}")).unwrap()
    }

    /// A daemon for machine `ip`; its ctl address once it listens.
    fn daemon(&self, ip: &str, world: bool) -> (Proc, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_luahost"));
        cmd.args(["daemon", "--store", &self.store, "--machine", ip, "--listen"])
            .arg(format!("{ip}:0"))
            .arg("--metrics")
            .arg(format!("{ip}:0"))
            .arg("--logs")
            .arg(self.dir.0.join(format!("logs-{ip}")));
        if world {
            cmd.arg("--world").arg(self.dir.0.join("world.json"));
        }
        for (k, v) in self.envs() {
            cmd.env(k, v);
        }
        let p = Proc::spawn_command_stdout(cmd, &self.dir.0.join(format!("daemon-{ip}.out")));
        assert!(
            p.wait_log(" listening on ", LONG),
            "daemon {ip} did not start:\n{}",
            p.log()
        );
        let log = p.log();
        let line = log.lines().find(|l| l.contains(" listening on ")).unwrap();
        let addr = line
            .split(" listening on ")
            .nth(1)
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        (p, addr)
    }

    /// The metrics address the (latest) daemon of `ip` printed.
    fn metrics(&self, ip: &str) -> SocketAddr {
        let out = std::fs::read_to_string(self.dir.0.join(format!("daemon-{ip}.out"))).unwrap();
        out.lines()
            .find_map(|l| l.strip_prefix("metrics on "))
            .unwrap_or_else(|| panic!("the daemon of {ip} printed no metrics address: {out}"))
            .parse()
            .unwrap()
    }

    /// Runs `luahost ctl --daemon d <login> args`; (success, stdout + stderr).
    fn ctl(&self, d: &str, login: &[&str], pw: &str, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_luahost"));
        cmd.args(["ctl", "--daemon", d]).args(login).args(args);
        cmd.env("LUAHOST_PASSWORD", pw)
            .env("LUAHOST_NEW_PASSWORD", "new-user-pw");
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn as_user(&self, d: &str, user: &str, args: &[&str]) -> (bool, String) {
        self.ctl(d, &["--user", user], "new-user-pw", args)
    }

    fn ok(&self, d: &str, user: &str, args: &[&str]) -> String {
        let (ok, text) = self.as_user(d, user, args);
        assert!(ok, "ctl {args:?} as {user} failed: {text}");
        text
    }

    /// Waits until `name` on `ip` has a fresh running record with `starts` starts.
    fn wait_alive(&self, name: &str, ip: &str, starts: u32) -> ProcRecord {
        let mut last = None;
        let ok = wait_until(LONG, || {
            last = self.record(name, ip);
            last.as_ref().is_some_and(|r| {
                r.startcount == starts
                    && luahost::ops::supervise::is_ours(r.pid, &r.key)
                    && luahost::ops::restart::judge(Some(r), luahost::ops::store::now_ms(), Duration::from_secs(5))
                        == luahost::ops::restart::Liveness::Alive
            })
        });
        assert!(ok, "{name} on {ip} not alive with {starts} starts: {last:?}");
        last.unwrap()
    }
}

fn setup(store: impl FnOnce(&Path) -> String, zk_auth: Option<String>) -> Env {
    let dir = TempDir::new("ops");
    let scripts = copy_scripts(&dir.0);
    let cluster = write_cluster_with(
        &dir.0,
        &scripts,
        &[("a_1", "A", 1), ("b_1", "B", 2), ("c_1", "C", 3), ("t_1", "C", 4)],
        "",
    );
    let world = serde_json::json!({ "regions": { "east": {
        "127.0.0.2": [ { "name": "a_1", "cluster": cluster }, { "name": "b_1", "cluster": cluster } ],
        "127.0.0.3": [ { "name": "c_1", "cluster": cluster } ],
    } } });
    std::fs::write(dir.0.join("world.json"), world.to_string()).unwrap();
    let store = store(&dir.0);
    Env {
        dir,
        store,
        zk_auth,
        cluster,
        scripts,
    }
}

/// Bootstrap, users, a wrong password, an unknown machine; returns the
/// two daemons and their addresses.
fn bootstrap(env: &Env) -> ((Proc, String), (Proc, String)) {
    // a machine the world does not list is refused
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_luahost"));
    cmd.args([
        "daemon",
        "--store",
        &env.store,
        "--machine",
        "127.0.0.9",
        "--listen",
        "127.0.0.9:0",
    ])
    .arg("--world")
    .arg(env.dir.0.join("world.json"));
    for (k, v) in env.envs() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("machine 127.0.0.9 is not listed in the store's world"),
        "{err}"
    );

    let d2 = env.daemon("127.0.0.2", true);
    let out = |ip: &str| std::fs::read_to_string(env.dir.0.join(format!("daemon-{ip}.out"))).unwrap_or_default();
    assert!(wait_until(LONG, || out("127.0.0.2").contains("listening on")));
    let token = out("127.0.0.2")
        .lines()
        .find_map(|l| l.strip_prefix("bootstrap token: ").map(str::to_string))
        .expect("the first daemon prints a bootstrap token");
    assert!(!d2.0.log().contains(&token), "the token is not logged");
    let d3 = env.daemon("127.0.0.3", false);
    assert!(wait_until(LONG, || out("127.0.0.3").contains("listening on")));
    assert!(!out("127.0.0.3").contains("bootstrap token"), "only one token");
    let (a2, a3) = (d2.1.clone(), d3.1.clone());

    // the token adds the first admin, once; and nothing else
    let (ok, text) = env.ctl(&a2, &["--bootstrap", &token], "", &["list", "world"]);
    assert!(
        !ok && text.contains("the bootstrap token may only add the first admin"),
        "{text}"
    );
    let (ok, text) = env.ctl(
        &a3,
        &["--bootstrap", &token],
        "",
        &["user", "add", "root", "--role", "admin"],
    );
    assert!(ok, "{text}");
    assert!(text.contains("user root added as admin"), "{text}");
    let (ok, text) = env.ctl(
        &a2,
        &["--bootstrap", &token],
        "",
        &["user", "add", "evil", "--role", "admin"],
    );
    assert!(!ok && text.contains("wrong user or password"), "a spent token: {text}");

    env.ok(&a2, "root", &["user", "add", "ops", "--role", "operator"]);
    env.ok(&a2, "root", &["user", "add", "eve", "--role", "viewer"]);
    let users = env.ok(&a3, "root", &["user", "list"]);
    for u in ["root", "ops", "eve"] {
        assert!(users.contains(u), "{users}");
    }
    // a wrong password, an unknown user: the same refusal
    let (ok, text) = env.ctl(&a2, &["--user", "root"], "not-the-password", &["list", "world"]);
    assert!(!ok && text.contains("refused: wrong user or password"), "{text}");
    let (ok, text) = env.ctl(&a2, &["--user", "nobody"], "new-user-pw", &["list", "world"]);
    assert!(!ok && text.contains("refused: wrong user or password"), "{text}");
    (d2, d3)
}

#[test]
fn daemons_run_a_cluster_on_the_folder_store() {
    let env = setup(|d| d.join("store").to_string_lossy().into_owned(), None);
    let _reaper = Reaper(env.store.clone(), None);
    let ((mut d2, a2), (_d3, a3)) = bootstrap(&env);
    let (m2, m3) = (env.metrics("127.0.0.2"), env.metrics("127.0.0.3"));
    // the daemon of 127.0.0.2 saw three refused logins (a spent token, a
    // wrong password, an unknown user) and the token's refused list
    let s = scrape(m2);
    let me = [("node", "daemon@127.0.0.2"), ("type", "daemon")];
    assert_eq!(value(&s, "logins_refused_total", &me), Some(3.0));
    assert_eq!(
        value(&s, "commands_total", &[("command", "list"), ("result", "refused")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "commands_total", &[("command", "user_add"), ("result", "ok")]),
        Some(2.0)
    );
    assert_eq!(value(&s, "processes", &[("state", "stopped")]), Some(2.0));
    assert_eq!(value(&s, "starts_total", &[("process", "a_1")]), Some(0.0));

    // start everything, 127.0.0.3 through the daemon of 127.0.0.2 (routed)
    let out = env.ok(&a2, "ops", &["start", "127.0.0.2", "all"]);
    assert!(out.contains("a_1: starting") && out.contains("b_1: starting"), "{out}");
    let out = env.ok(&a2, "ops", &["start", "127.0.0.3", "all"]);
    assert!(out.contains("c_1: starting"), "{out}");
    let a = env.wait_alive("a_1", "127.0.0.2", 1);
    let b = env.wait_alive("b_1", "127.0.0.2", 1);
    let c = env.wait_alive("c_1", "127.0.0.3", 1);
    assert!(
        _d3.log().contains(&format!("started c_1 (pid {})", c.pid)),
        "c_1 started by its own machine's daemon"
    );
    wait_value(m2, "processes", &[("state", "running")], 2.0);
    let s = scrape(m2);
    assert_eq!(value(&s, "starts_total", &[("process", "a_1")]), Some(1.0));
    assert_eq!(value(&s, "starts_total", &[("process", "b_1")]), Some(1.0));
    assert_eq!(
        value(&s, "starts_total", &[("process", "c_1")]),
        None,
        "not a process of 127.0.0.2"
    );
    let s3 = scrape(m3);
    assert_eq!(
        value(&s3, "starts_total", &[("process", "c_1"), ("node", "daemon@127.0.0.3")]),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "commands_total", &[("command", "start"), ("result", "ok")]),
        Some(2.0),
        "both starts were sent to 127.0.0.2"
    );
    assert_eq!(
        value(&s3, "commands_total", &[("command", "start"), ("result", "ok")]),
        None,
        "a routed command counts once, where ctl sent it"
    );
    // an open ctl connection (not logged in yet) shows, and goes when closed
    let idle = TcpStream::connect(&a2).unwrap();
    wait_value(m2, "ctl_connections", &[], 1.0);
    drop(idle);
    wait_value(m2, "ctl_connections", &[], 0.0);

    // list as a viewer sees it
    let world = env.ok(&a3, "eve", &["list", "world"]);
    assert!(
        world
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["east", "2", "3", "3"]),
        "{world}"
    );
    let machines = env.ok(&a3, "eve", &["list", "machine"]);
    assert!(
        machines.contains("127.0.0.2") && machines.contains("127.0.0.3"),
        "{machines}"
    );
    let procs = env.ok(&a2, "eve", &["--json", "list", "127.0.0.2"]);
    let v: serde_json::Value = serde_json::from_str(&procs).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{procs}");
    assert_eq!(v[0]["name"], "a_1");
    assert_eq!(v[0]["state"], "alive");
    assert_eq!(v[0]["pid"], a.pid.to_string());
    let by_pid = env.ok(&a2, "eve", &["list", &b.pid.to_string()]);
    assert!(by_pid.contains("b_1") && !by_pid.contains("a_1"), "{by_pid}");
    let top = env.ok(&a2, "eve", &["top", "--count", "2", "--every", "0.2"]);
    assert_eq!(top.matches("c_1").count(), 2, "two refreshes: {top}");

    // a test node in this process to call the cluster's nodes
    let t = common::start(&env.cluster, "t_1");
    common::wait_live(&t, &["a_1", "b_1", "c_1"]);

    // the records carry the nodes' own figures: calls to b_1 show as msgs/s
    let mut last = None;
    assert!(
        wait_until(LONG, || {
            let n = eval(
                &t,
                "local n = 0 for i = 1, 50 do to(sidOf('b_1')).echo('x', i) n = n + 1 end return n",
            );
            assert_eq!(n, "50");
            last = env.record("b_1", "127.0.0.2");
            last.as_ref().is_some_and(|r| {
                r.info.msgs_per_s > 0.0 && r.info.lua_kib > 0 && r.info.connections >= 1 && r.info.entities >= 1
            })
        }),
        "b_1's figures: {last:?}"
    );
    let top = env.ok(&a2, "eve", &["--json", "list", "127.0.0.2"]);
    let v: serde_json::Value = serde_json::from_str(&top).unwrap();
    assert!(v[1]["msgs/s"].as_str().unwrap().parse::<f64>().unwrap() >= 0.0, "{top}");

    // a viewer may not stop
    let (ok, text) = env.as_user(&a2, "eve", &["stop", "127.0.0.2", "a_1"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("refused: eve is a viewer: 'stop 127.0.0.2 a_1' needs the role operator or above"),
        "{text}"
    );
    assert_eq!(
        value(
            &scrape(m2),
            "commands_total",
            &[("command", "stop"), ("result", "refused")]
        ),
        Some(1.0)
    );

    // stop a_1 gracefully while a call to it is in flight: the call completes
    eval(
        &t,
        "slow_result = 'pending'; rpcco.fork(function() local ok, r = pcall(to(sidOf('a_1')).slow, 1.5); slow_result = ok and tostring(r) or tostring(r) end) return 1",
    );
    std::thread::sleep(Duration::from_millis(300));
    let out = env.ok(&a3, "ops", &["stop", "127.0.0.2", "a_1"]);
    assert!(out.contains("a_1: stopping"), "{out}");
    assert!(
        wait_until(LONG, || eval(&t, "return slow_result") != "pending"),
        "the call in flight ended"
    );
    assert_eq!(eval(&t, "return slow_result"), "true", "the call in flight completed");
    assert!(wait_until(LONG, || env.record("a_1", "127.0.0.2").unwrap().state
        == luahost::ops::store::ProcState::Stopped));
    // (the node writes "stopped" as it ends; its process exits just after)
    assert!(
        wait_until(LONG, || !luahost::ops::supervise::is_ours(a.pid, &a.key)),
        "a_1 exited"
    );
    let list = env.ok(&a2, "eve", &["list", "127.0.0.2"]);
    assert!(
        list.lines().any(|l| l.contains("a_1") && l.contains("stopped")),
        "{list}"
    );

    // kill -9 a node: its daemon starts it again, startcount + 1
    unsafe {
        libc::kill(b.pid as i32, libc::SIGKILL);
    }
    let b2 = env.wait_alive("b_1", "127.0.0.2", 2);
    assert_ne!(b2.pid, b.pid);
    let s = scrape(m2);
    assert_eq!(value(&s, "starts_total", &[("process", "b_1")]), Some(2.0));
    assert_eq!(value(&s, "crash_restarts_total", &[("process", "b_1")]), Some(1.0));
    assert_eq!(
        value(&s, "crash_restarts_total", &[("process", "a_1")]),
        Some(0.0),
        "a stop is no crash"
    );
    assert_eq!(value(&s, "processes", &[("state", "stopped")]), Some(1.0), "a_1");
    assert_eq!(value(&s, "processes", &[("state", "running")]), Some(1.0), "b_1");
    assert_eq!(
        value(&s, "commands_total", &[("command", "stop"), ("result", "ok")]),
        None,
        "the stop was sent to the daemon of 127.0.0.3, which routed it"
    );

    // reload changes a handler of a running node
    common::wait_live(&t, &["b_1"]);
    let h = env.scripts.join("handlers.lua");
    let src = std::fs::read_to_string(&h).unwrap();
    std::fs::write(
        &h,
        src.replace(
            "function Echo:echo(s, n) return s, n end",
            "function Echo:echo(s, n) return s .. '!', n end",
        ),
    )
    .unwrap();
    let out = env.ok(&a3, "ops", &["reload", "127.0.0.2", "b_1"]);
    assert!(out.contains("b_1: reloading"), "{out}");
    assert!(
        wait_until(LONG, || eval(&t, "local s = to(sidOf('b_1')).echo('x', 1) return s")
            == "x!"),
        "b_1 answers with the new handler"
    );
    assert_eq!(
        env.record("b_1", "127.0.0.2").unwrap().pid,
        b2.pid,
        "reloaded, not restarted"
    );

    // kill -9 the daemon of 127.0.0.2: b_1 keeps serving and shows alive
    d2.signal(libc::SIGKILL);
    d2.wait_exit(LONG);
    let before = env.record("b_1", "127.0.0.2").unwrap().lastupdate;
    assert!(wait_until(LONG, || env.record("b_1", "127.0.0.2").unwrap().lastupdate > before));
    assert_eq!(eval(&t, "local s = to(sidOf('b_1')).echo('y', 1) return s"), "y!");
    let list = env.ok(&a3, "eve", &["list", "127.0.0.2"]);
    assert!(list.lines().any(|l| l.contains("b_1") && l.contains("alive")), "{list}");
    // a new daemon adopts it: no second b_1, a_1 stays stopped
    let (_d2b, a2b) = env.daemon("127.0.0.2", false);
    assert!(
        _d2b.log().contains(&format!("adopted b_1 (pid {})", b2.pid)),
        "{}",
        _d2b.log()
    );
    std::thread::sleep(Duration::from_millis(800));
    let b3 = env.record("b_1", "127.0.0.2").unwrap();
    assert_eq!((b3.pid, b3.startcount), (b2.pid, 2), "adopted, not started again");
    assert_eq!(
        env.record("a_1", "127.0.0.2").unwrap().state,
        luahost::ops::store::ProcState::Stopped
    );
    // the adopted process is still under its daemon: kill by pid, through the other machine's daemon
    let out = env.ok(&a3, "ops", &["kill", "127.0.0.2", &b2.pid.to_string()]);
    assert!(out.contains("b_1: killed"), "{out}");
    assert!(wait_until(LONG, || !luahost::ops::supervise::is_ours(b2.pid, &b2.key)));
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !luahost::ops::supervise::is_ours(env.record("b_1", "127.0.0.2").unwrap().pid, &b2.key),
        "a kill is not restarted"
    );

    // an unknown machine or name is refused with a clear message
    let (ok, text) = env.as_user(&a2b, "ops", &["start", "127.0.0.7", "all"]);
    assert!(!ok && text.contains("machine 127.0.0.7 is not in the world"), "{text}");
    let (ok, text) = env.as_user(&a2b, "ops", &["start", "127.0.0.3", "zz_9"]);
    assert!(
        !ok && text.contains("no process named 'zz_9' is configured on 127.0.0.3"),
        "{text}"
    );
    // an operator may not read the audit log; the admin may, and it holds every command
    let (ok, text) = env.as_user(&a2b, "ops", &["audit"]);
    assert!(!ok && text.contains("needs the role admin"), "{text}");
    let audit = env.ok(&a2b, "root", &["--json", "audit", "--last", "100"]);
    let v: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let seen: Vec<(String, String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["user"].as_str().unwrap().to_string(),
                e["command"].as_str().unwrap().to_string(),
                e["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let has = |user: &str, cmd: &str, result: &str| {
        seen.iter()
            .any(|(u, c, r)| u == user && c == cmd && r.starts_with(result))
    };
    for (u, c, r) in [
        ("@bootstrap", "list world", "refused"),
        ("@bootstrap", "user add root --role admin", "ok"),
        ("root", "user add ops --role operator", "ok"),
        ("root", "user list", "ok"),
        ("ops", "start 127.0.0.2 all", "ok"),
        ("ops", "start 127.0.0.3 all", "ok"),
        ("eve", "list world", "ok"),
        ("eve", "top", "ok"),
        ("eve", "stop 127.0.0.2 a_1", "refused: eve is a viewer"),
        ("ops", "stop 127.0.0.2 a_1", "ok"),
        ("ops", "reload 127.0.0.2 b_1", "ok"),
        ("ops", &format!("kill 127.0.0.2 {}", b2.pid), "ok"),
        ("ops", "start 127.0.0.7 all", "refused"),
        ("ops", "audit --last 50", "refused"),
    ] {
        assert!(has(u, c, r), "audit lacks {u} / {c} / {r}:\n{audit}");
    }
    // the routed command was audited once, by the daemon that took it
    assert_eq!(seen.iter().filter(|(_, c, _)| c == "start 127.0.0.3 all").count(), 1);
    drop(t);
}

#[test]
fn daemons_on_zookeeper() {
    let zk = ZkServer::start();
    let auth = Some("ops:zk-secret".to_string());
    let addr = zk.addr();
    let env = setup(|_| format!("zk://{addr}/luahost-ops"), auth.clone());
    let _reaper = Reaper(env.store.clone(), auth);
    let ((_d2, a2), (mut d3, a3)) = bootstrap(&env);
    env.ok(&a3, "ops", &["start", "127.0.0.2", "b_1"]);
    env.ok(&a2, "ops", &["start", "127.0.0.3", "all"]);
    let b = env.wait_alive("b_1", "127.0.0.2", 1);
    let c = env.wait_alive("c_1", "127.0.0.3", 1);
    let list = env.ok(&a2, "eve", &["list", "127.0.0.2"]);
    assert!(
        list.lines().any(|l| l.contains("a_1") && l.contains("never started")),
        "{list}"
    );
    assert!(list.lines().any(|l| l.contains("b_1") && l.contains("alive")), "{list}");
    unsafe {
        libc::kill(b.pid as i32, libc::SIGKILL);
    }
    env.wait_alive("b_1", "127.0.0.2", 2);
    let (ok, text) = env.as_user(&a2, "eve", &["restart", "127.0.0.3", "c_1"]);
    assert!(!ok && text.contains("needs the role operator"), "{text}");
    env.ok(&a3, "ops", &["stop", "127.0.0.2", "all"]);
    assert!(wait_until(LONG, || env.record("b_1", "127.0.0.2").unwrap().state
        == luahost::ops::store::ProcState::Stopped));
    // liveness is the record's age: with its daemon and itself killed,
    // c_1 shows dead once its record is older than the bound
    d3.signal(libc::SIGKILL);
    d3.wait_exit(LONG);
    unsafe {
        libc::kill(c.pid as i32, libc::SIGKILL);
    }
    let mut list = String::new();
    assert!(
        wait_until(LONG, || {
            list = env.ok(&a2, "eve", &["list", "127.0.0.3"]);
            list.lines().any(|l| l.contains("c_1") && l.contains("dead"))
        }),
        "{list}"
    );
    let mut machines = String::new();
    assert!(
        wait_until(LONG, || {
            machines = env.ok(&a2, "eve", &["list", "machine"]);
            machines.lines().any(|l| l.contains("127.0.0.3") && l.contains("dead"))
        }),
        "{machines}"
    );
    // a command for a machine whose daemon is gone fails, saying so
    let (ok, text) = env.as_user(&a2, "ops", &["start", "127.0.0.3", "all"]);
    assert!(!ok && text.contains("the daemon of 127.0.0.3"), "{text}");
    let audit = env.ok(&a2, "root", &["audit", "--last", "1000"]);
    assert!(
        audit.contains("stop 127.0.0.2 all") && audit.contains("restart 127.0.0.3 c_1"),
        "{audit}"
    );
}
