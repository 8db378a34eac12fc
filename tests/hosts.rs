//! A cluster across simulated hosts (issue 15): three network namespaces on
//! one bridge (tests/common/netns.rs), a three-server ZooKeeper ensemble
//! across them, nine `luahost run` processes (types A, B, C on each host)
//! and, on each host, an observer node of this process (its thread moved
//! into that host) whose Lua records what it sees (tests/cluster/scripts/
//! seen.lua). The scenarios run one after another on the same cluster, each
//! asserting what Lua sees and printing its figures:
//!
//! 1. one ZooKeeper server killed (the leader), then two (no quorum):
//!    nothing reported offline, calls go on, every node registered once
//!    when quorum is back;
//! 2. host 3 cut off (partition) and healed;
//! 3. latency and loss between hosts (20 ms each way, 1 % loss; no netem
//!    here: an NFQUEUE and the `statistic` match, see `Net::impair`);
//! 4. host 3 killed with everything in it.
//!
//! The nine processes are started by the operations daemons, one
//! `luahost daemon` per host on an ops store in the ensemble
//! (`zk://.../luahost-ops`), through `luahost ctl` as an operator does. In
//! the partition, host 3's daemon is killed too: `ctl list` on host 1 shows
//! host 3's nodes dead once their records are older than the bound, alive
//! again after the heal, and a new daemon on host 3 adopts them (same pids,
//! one start each: nothing started twice).
//!
//! Needs root (skipped with a message otherwise), iproute2 and ZooKeeper
//! (tests/run installs both).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::netns::{skip_unless_root, Host, Net, ZkEnsemble};
use common::{wait_until, Proc, TempDir};
use luahost::ops::restart::DEAD_AFTER;
use luahost::NodeHandle;

/// ZooKeeper session timeout of the nodes (the least ZooKeeper allows with tickTime 2000).
const SESSION: Duration = Duration::from_secs(4);
/// The cluster file's `liveness`.
const LIVENESS: Duration = Duration::from_secs(3);
/// The cluster file's `call_timeout`.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Latency added to every packet between hosts in the latency scenario.
const DELAY: Duration = Duration::from_millis(20);
/// Share of packets between hosts dropped in the latency scenario.
const LOSS_PERCENT: f64 = 1.0;
/// How long the latency scenario runs.
const IMPAIRED_FOR: Duration = Duration::from_secs(6);
/// Slack for scheduling on a loaded two-core machine, on top of a bound.
const SLACK: Duration = Duration::from_millis(1000);

const HOSTS: usize = 3;
const ROOT: &str = "/luahost/hosts";
/// Keys routed in the ring checks.
const KEYS: usize = 2000;
/// A few ticks of a daemon (200 ms each): long enough for it to start
/// what it would start.
const DAEMON_TICKS: Duration = Duration::from_millis(1000);
/// Where each host's operations daemon listens.
const DAEMON_PORT: u16 = 8889;
/// The ops store's ZooKeeper digest identity.
const OPS_ZK_AUTH: &str = "ops:hosts-ops-secret";
/// The password of the ops admin the test adds.
const OPS_PASSWORD: &str = "hosts-root-password";

/// Nodes of host `h`: (name, type, sid, port); the last is the observer.
fn nodes_of(h: usize) -> Vec<(String, &'static str, u32, u16)> {
    vec![
        (format!("a_{h}"), "A", 10 + h as u32, 7101),
        (format!("b_{h}"), "B", 20 + h as u32, 7102),
        (format!("c_{h}"), "C", 30 + h as u32, 7103),
        (format!("o_{h}"), "A", 40 + h as u32, 7104),
    ]
}

fn all_names() -> Vec<String> {
    let mut v: Vec<String> = (1..=HOSTS).flat_map(|h| nodes_of(h).into_iter().map(|n| n.0)).collect();
    v.sort();
    v
}

/// Every name but those of `hosts`, sorted, comma-separated, without `me`.
fn names_except(hosts: &[usize], me: &str) -> String {
    let mut v: Vec<String> = (1..=HOSTS)
        .filter(|h| !hosts.contains(h))
        .flat_map(|h| nodes_of(h).into_iter().map(|n| n.0))
        .filter(|n| n != me)
        .collect();
    v.sort();
    v.join(",")
}

fn host_names(h: usize) -> Vec<String> {
    nodes_of(h).into_iter().map(|n| n.0).collect()
}

/// The cluster: dropped in field order, so the network goes last.
struct Cluster {
    observers: Vec<Option<NodeHandle>>,
    /// Each host's operations daemon (which started its three nodes).
    daemons: Vec<Option<Proc>>,
    zk: ZkEnsemble,
    dir: TempDir,
    net: Net,
}

/// The ip of host `h` (as the ops world lists it).
fn ip_of(net: &Net, h: usize) -> String {
    net.host(h).ip.to_string()
}

/// Starts the operations daemon of host `h` (loading the world first if
/// `world`) and waits until it listens.
fn start_daemon(net: &Net, dir: &Path, store: &str, h: usize, world: bool) -> Proc {
    let ip = ip_of(net, h);
    let mut cmd = net.host(h).command(env!("CARGO_BIN_EXE_luahost"));
    cmd.args(["daemon", "--store", store, "--machine", &ip, "--listen"])
        .arg(net.host(h).addr(DAEMON_PORT))
        .arg("--logs")
        .arg(dir.join(format!("logs-{h}")))
        .env("LUAHOST_ZK_AUTH", OPS_ZK_AUTH);
    if world {
        cmd.arg("--world").arg(dir.join("world.json"));
    }
    let p = Proc::spawn_command_stdout(cmd, &dir.join(format!("daemon-{h}.out")));
    assert!(
        p.wait_log(" listening on ", Duration::from_secs(30)),
        "the daemon of host {h} did not start:\n{}",
        p.log()
    );
    p
}

/// Runs `luahost ctl` on host `from` against its daemon; (success, output).
fn ctl_on(net: &Net, from: usize, login: &[&str], args: &[&str]) -> (bool, String) {
    let mut cmd = net.host(from).command(env!("CARGO_BIN_EXE_luahost"));
    cmd.args(["ctl", "--daemon", &net.host(from).addr(DAEMON_PORT)])
        .args(login)
        .args(args)
        .env("LUAHOST_PASSWORD", OPS_PASSWORD)
        .env("LUAHOST_NEW_PASSWORD", OPS_PASSWORD);
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A process row of `ctl --json list <ip>`: (name, pid, state, starts).
type Row = (String, String, String, String);

fn write_cluster(dir: &Path, net: &Net, zk: &ZkEnsemble) -> std::path::PathBuf {
    let scripts = common::scripts_dir();
    let main = scripts.join("main.lua");
    let mut text = format!(
        "return {{\n  secret = \"test-secret-for-hosts\",\n  scripts = {{ {:?} }},\n  \
         liveness = {},\n  call_timeout = {},\n  \
         zookeeper = {{ hosts = {:?}, root = {ROOT:?}, session_timeout = {}, auth = {OPS_ZK_AUTH:?} }},\n  nodes = {{\n",
        scripts.display().to_string(),
        LIVENESS.as_secs(),
        CALL_TIMEOUT.as_secs(),
        zk.connect_string(),
        SESSION.as_secs(),
    );
    for h in 1..=HOSTS {
        for (name, ty, sid, port) in nodes_of(h) {
            text.push_str(&format!(
                "    {name} = {{ type = {ty:?}, id = {sid}, addr = {:?}, main = {:?} }},\n",
                net.host(h).addr(port),
                main.display().to_string()
            ));
        }
    }
    text.push_str("  },\n}\n");
    let path = dir.join("cluster.lua");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts node `name` of `cluster` in this process, inside `host`.
fn start_in(host: &Host, cluster: &Path, name: &str) -> NodeHandle {
    let (cluster, name) = (cluster.to_path_buf(), name.to_string());
    host.run(move || common::start(&cluster, &name))
}

impl Cluster {
    fn up() -> Cluster {
        let t = Instant::now();
        let net = Net::create(HOSTS);
        let hosts: Vec<&Host> = net.hosts().iter().collect();
        let mut zk = ZkEnsemble::start(&hosts);
        // one digest identity for discovery and the ops store (a node a
        // daemon starts inherits it through LUAHOST_ZK_AUTH)
        zk.auth = Some(OPS_ZK_AUTH.to_string());
        println!(
            "hosts: {HOSTS} namespaces ({}), ensemble serving after {:?}",
            net.tag(),
            t.elapsed()
        );
        let dir = TempDir::new("hosts");
        let cluster = write_cluster(&dir.0, &net, &zk);
        // the operations daemons, one per host, on an ops store in the ensemble
        let mut machines = serde_json::Map::new();
        for h in 1..=HOSTS {
            let procs: Vec<serde_json::Value> = nodes_of(h)
                .into_iter()
                .take(3)
                .map(|(name, ..)| serde_json::json!({ "name": name, "cluster": cluster }))
                .collect();
            machines.insert(ip_of(&net, h), serde_json::Value::Array(procs));
        }
        let world = serde_json::json!({ "regions": { "sim": machines } });
        std::fs::write(dir.0.join("world.json"), world.to_string()).unwrap();
        let store = format!("zk://{}/luahost-ops", zk.connect_string());
        let daemons: Vec<Option<Proc>> = (1..=HOSTS)
            .map(|h| Some(start_daemon(&net, &dir.0, &store, h, h == 1)))
            .collect();
        let out = std::fs::read_to_string(dir.0.join("daemon-1.out")).unwrap();
        let token = out
            .lines()
            .find_map(|l| l.strip_prefix("bootstrap token: "))
            .expect("the first daemon prints a bootstrap token");
        let (ok, text) = ctl_on(
            &net,
            1,
            &["--bootstrap", token],
            &["user", "add", "root", "--role", "admin"],
        );
        assert!(ok, "{text}");
        // every host's nodes started through host 1's daemon (routed)
        for h in 1..=HOSTS {
            let (ok, text) = ctl_on(&net, 1, &["--user", "root"], &["start", &ip_of(&net, h), "all"]);
            assert!(ok && text.matches(": starting").count() == 3, "{text}");
        }
        println!(
            "hosts: {HOSTS} operations daemons serving, every host's processes started through ctl, after {:?}",
            t.elapsed()
        );
        let mut observers = Vec::new();
        for h in 1..=HOSTS {
            let o = start_in(net.host(h), &cluster, &format!("o_{h}"));
            common::eval(&o, "seen = require 'seen' return true");
            observers.push(Some(o));
        }
        let c = Cluster {
            observers,
            daemons,
            zk,
            dir,
            net,
        };
        for h in 1..=HOSTS {
            let want = names_except(&[], &format!("o_{h}"));
            c.wait_live(h, &want, Duration::from_secs(60));
        }
        println!(
            "hosts: {} nodes up ({} processes, {} observers), each sees the other {} online, after {:?}",
            all_names().len(),
            HOSTS * 3,
            HOSTS,
            all_names().len() - 1,
            t.elapsed()
        );
        c
    }

    fn obs(&self, h: usize) -> &NodeHandle {
        let o = self.observers[h - 1].as_ref().expect("observer running");
        if let Some(f) = o.failure() {
            panic!("o_{h} failed: {f}\n{}", self.logs());
        }
        o
    }

    fn eval(&self, h: usize, code: &str) -> String {
        common::eval(self.obs(h), code)
    }

    fn live(&self, h: usize) -> String {
        self.eval(h, "return seen.live()")
    }

    /// Waits until observer `h` sees exactly `want` live; panics after
    /// `limit` with what it sees and the nodes' logs.
    fn wait_live(&self, h: usize, want: &str, limit: Duration) -> Duration {
        let t = Instant::now();
        if wait_until(limit, || self.live(h) == want) {
            return t.elapsed();
        }
        panic!(
            "o_{h} sees {} live after {limit:?}, not {want}\nevents: {}\n{}",
            self.live(h),
            self.eval(h, "return seen.events()"),
            self.logs()
        );
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for h in 1..=HOSTS {
            let mut logs: Vec<(String, String)> = nodes_of(h)
                .into_iter()
                .take(3)
                .map(|(name, ..)| {
                    let f = self.dir.0.join(format!("logs-{h}/{name}.log"));
                    (name, std::fs::read_to_string(f).unwrap_or_default())
                })
                .collect();
            if let Some(d) = &self.daemons[h - 1] {
                logs.push((format!("daemon {h}"), d.log()));
            }
            for (name, log) in logs {
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                s.push_str(&format!("--- {name} (host {h}):\n"));
                for l in tail.into_iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    }

    /// `luahost ctl --user root args` on host `from`; panics if it fails.
    fn ctl(&self, from: usize, args: &[&str]) -> String {
        let (ok, text) = ctl_on(&self.net, from, &["--user", "root"], args);
        assert!(ok, "ctl {args:?} on host {from}: {text}");
        text
    }

    /// Host `h`'s processes as `ctl list` on host `from` shows them.
    fn rows(&self, from: usize, h: usize) -> Vec<Row> {
        let text = self.ctl(from, &["--json", "list", &ip_of(&self.net, h)]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let field = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or_default().to_string();
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| (field(r, "name"), field(r, "pid"), field(r, "state"), field(r, "starts")))
            .collect()
    }

    /// Waits until `ctl list` on host 1 shows every process of host `h`
    /// in `state`; returns the rows.
    fn wait_rows(&self, h: usize, state: &str, limit: Duration) -> Vec<Row> {
        let mut rows = Vec::new();
        let ok = wait_until(limit, || {
            rows = self.rows(1, h);
            rows.len() == 3 && rows.iter().all(|r| r.2 == state)
        });
        assert!(
            ok,
            "host {h}'s processes are not all {state}: {rows:?}\n{}",
            self.logs()
        );
        rows
    }

    /// Children of `<root>/servers/<ty>` through a serving server.
    fn registered(&self, ty: &str, servers: &[usize]) -> Option<Vec<String>> {
        servers
            .iter()
            .find_map(|&k| self.zk.children(k, &format!("{ROOT}/servers/{ty}")))
    }

    /// What ZooKeeper should list for each type with hosts `hosts` up.
    fn expected_registrations(hosts: &[usize], ty: &str) -> Vec<String> {
        let mut v: Vec<String> = hosts
            .iter()
            .flat_map(|&h| nodes_of(h))
            .filter(|n| n.1 == ty)
            .map(|n| n.0)
            .collect();
        v.sort();
        v
    }

    /// Waits until ZooKeeper lists exactly the nodes of `hosts`, each once.
    fn wait_registered(&self, hosts: &[usize], servers: &[usize], limit: Duration) -> Duration {
        let t = Instant::now();
        for ty in ["A", "B", "C"] {
            let want = Cluster::expected_registrations(hosts, ty);
            let ok = wait_until(limit, || self.registered(ty, servers).as_ref() == Some(&want));
            assert!(
                ok,
                "ZooKeeper lists {:?} under {ty}, not {want:?}\n{}",
                self.registered(ty, servers),
                self.logs()
            );
        }
        t.elapsed()
    }

    fn events(&self, h: usize) -> String {
        self.eval(h, "return seen.events()")
    }

    fn mark_all(&self) {
        for (i, o) in self.observers.iter().enumerate() {
            if o.is_some() {
                self.eval(i + 1, "return seen.mark()");
            }
        }
    }

    fn routes(&self, h: usize) -> Vec<u32> {
        self.eval(h, &format!("return seen.routes({KEYS})"))
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect()
    }

    /// Starts steady calls from every running observer to every other node.
    fn traffic_all(&self, except_hosts: &[usize]) {
        for h in 1..=HOSTS {
            if self.observers[h - 1].is_some() && !except_hosts.contains(&h) {
                let names = names_except(except_hosts, &format!("o_{h}"));
                self.eval(h, &format!("return seen.traffic({names:?}, 0.1, 2)"));
            }
        }
    }

    fn stop_traffic(&self, h: usize) -> String {
        self.eval(h, "return seen.stop_traffic()")
    }
}

/// Asserts `events` (seen.events()) holds no event about a node.
fn assert_quiet(what: &str, h: usize, events: &str) {
    assert!(events.is_empty(), "{what}: o_{h} saw {events}");
}

/// The names an event list mentions with `kind` ("on"/"off"), sorted, with
/// their largest time in ms.
fn event_names(events: &str, kind: &str) -> (Vec<String>, u64) {
    let mut names = Vec::new();
    let mut max = 0;
    for e in events.split(',').filter(|e| !e.is_empty()) {
        let (k, rest) = e.split_once(':').unwrap();
        let (name, ms) = rest.split_once('@').unwrap();
        if k == kind {
            names.push(name.to_string());
            max = max.max(ms.parse().unwrap());
        }
    }
    names.sort();
    (names, max)
}

/// "kind@ms" as (kind, ms).
fn outcome(s: &str) -> (String, u64) {
    let (k, ms) = s.split_once('@').unwrap_or_else(|| panic!("not kind@ms: {s}"));
    (k.to_string(), ms.parse().unwrap())
}

/// The max_ms of a traffic summary.
fn max_ms(stats: &str) -> u64 {
    stats
        .split(' ')
        .find_map(|f| f.strip_prefix("max_ms="))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

fn traffic_ok(what: &str, h: usize, stats: &str) -> u64 {
    assert!(stats.ends_with("errs="), "{what}: calls from o_{h} failed: {stats}");
    stats
        .strip_prefix("ok=")
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap()
}

/// Resident memory (KiB) and open sockets of process `pid`.
fn rss_and_sockets(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let sockets = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0);
    (rss, sockets)
}

/// Prints what one node costs here (memory, sockets) and what ZooKeeper
/// carries (connections, watches, requests when idle and for one change):
/// the figures of docs/scaling.md. Only printed: they describe, they are not
/// bounds.
fn figures(c: &Cluster) {
    let per_proc: Vec<(u64, usize)> = (1..=HOSTS)
        .flat_map(|h| c.rows(1, h))
        .map(|r| rss_and_sockets(r.1.parse().unwrap()))
        .collect();
    let rss_min = per_proc.iter().map(|p| p.0).min().unwrap_or(0);
    let rss_max = per_proc.iter().map(|p| p.0).max().unwrap_or(0);
    let sock_min = per_proc.iter().map(|p| p.1).min().unwrap_or(0);
    let sock_max = per_proc.iter().map(|p| p.1).max().unwrap_or(0);
    // (mntr's count only grows; a session's own count in `stat` restarts
    // when it moves to another server)
    let packets = || c.zk.mntr_sum("zk_packets_received");
    let window = Duration::from_secs(3);
    std::thread::sleep(Duration::from_secs(2)); // the joins' re-listings are over
    let p0 = packets();
    std::thread::sleep(window);
    let idle = packets() - p0;
    // ten load updates of o_1, 300 ms apart (each one change of its znode)
    let p1 = packets();
    let t = Instant::now();
    for i in 0..10 {
        c.eval(1, &format!("router.setLoad({}) return true", 7 + i));
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(window.saturating_sub(t.elapsed()));
    let change = (packets() - p1 - idle) / 10;
    // a burst: the three observers' load updates at once
    let p2 = packets();
    for h in 1..=HOSTS {
        c.eval(h, "router.setLoad(99) return true");
    }
    std::thread::sleep(window);
    let burst = packets() - p2 - idle;
    println!(
        "figures: {} nodes; a luahost run process {}-{} KiB resident, {sock_min}-{sock_max} open sockets \
         ({} peers: 2 TCP connections each, plus listener, ZooKeeper and the ops store); ZooKeeper: {} sessions \
         (the nodes' discovery and ops-record sessions, the {HOSTS} daemons'), {} watches (mntr), {} ephemerals, \
         {:.1} requests/s from the nodes when idle (session pings), one load update of one node costs ~{change} requests, \
         {HOSTS} at once ~{burst}",
        all_names().len(),
        rss_min,
        rss_max,
        all_names().len() - 1,
        // (less the one asking each server)
        c.zk.mntr_sum("zk_num_alive_connections") - HOSTS as i64,
        c.zk.mntr_sum("zk_watch_count"),
        c.zk.mntr_value(c.zk.leader().unwrap_or(0), "zk_ephemerals_count").unwrap_or(-1),
        idle as f64 / window.as_secs_f64(),
    );
}

#[test]
fn cluster_across_three_hosts_survives_zookeeper_loss_partitions_and_host_loss() {
    if skip_unless_root("cluster_across_three_hosts") {
        return;
    }
    let test_start = Instant::now();
    let mut c = Cluster::up();
    let ring0 = c.routes(1);
    assert_eq!(ring0, c.routes(2), "o_1 and o_2 route B keys alike");
    assert!(ring0.contains(&21) && ring0.contains(&22) && ring0.contains(&23));
    c.wait_registered(&[1, 2, 3], &[0, 1, 2], Duration::from_secs(10));
    figures(&c);

    // --- one ZooKeeper server killed (the leader): nobody notices --------
    c.mark_all();
    c.traffic_all(&[]);
    let leader = c.zk.leader().expect("the ensemble has a leader");
    c.zk.kill(leader);
    let t = Instant::now();
    let others: Vec<usize> = (0..HOSTS).filter(|&k| k != leader).collect();
    c.zk.wait_serving(&others, Duration::from_secs(30));
    let elected = t.elapsed();
    std::thread::sleep((SESSION * 3 / 2).saturating_sub(t.elapsed()));
    let mut calls = 0;
    for h in 1..=HOSTS {
        assert_quiet("one ZooKeeper server killed", h, &c.events(h));
        calls += traffic_ok("one ZooKeeper server killed", h, &c.stop_traffic(h));
        assert_eq!(c.live(h), names_except(&[], &format!("o_{h}")));
    }
    c.wait_registered(&[1, 2, 3], &others, Duration::from_secs(5));
    println!(
        "zk: leader zk{} killed; new leader after {elected:?}; over {:?} {calls} calls all answered, no Offline, every node registered once",
        leader + 1,
        t.elapsed()
    );
    c.zk.restart(leader);
    c.zk.wait_serving(&[0, 1, 2], Duration::from_secs(30));

    // --- two killed (no quorum): traffic goes on, nobody reported offline -
    c.mark_all();
    c.traffic_all(&[]);
    let dead = [0usize, 1];
    for &k in &dead {
        c.zk.kill(k);
    }
    let t = Instant::now();
    std::thread::sleep(SESSION * 2);
    for h in 1..=HOSTS {
        assert_quiet("no quorum", h, &c.events(h));
        assert_eq!(c.live(h), names_except(&[], &format!("o_{h}")), "no quorum: o_{h}");
    }
    let outage = t.elapsed();
    for &k in &dead {
        c.zk.restart(k);
    }
    c.zk.wait_serving(&[0, 1, 2], Duration::from_secs(60));
    let quorum_back = t.elapsed();
    let reg = c.wait_registered(&[1, 2, 3], &[0, 1, 2], Duration::from_secs(30));
    // a little longer: a late re-registration would show as Offline/Online
    std::thread::sleep(SESSION);
    let mut calls = 0;
    for h in 1..=HOSTS {
        assert_quiet("no quorum, then quorum back", h, &c.events(h));
        calls += traffic_ok("no quorum", h, &c.stop_traffic(h));
        assert_eq!(c.eval(h, "return seen.known()"), names_except(&[], ""));
    }
    println!(
        "zk: two of three servers killed for {outage:?} (2 x session timeout); quorum back after {quorum_back:?}, \
         all registered once {reg:?} later; {calls} calls all answered, no Offline"
    );

    // --- host 3 cut off: a partition ---------------------------------------
    c.mark_all();
    let h3 = host_names(3).join(",");
    let h1 = names_except(&[2, 3], "");
    let ops_before = c.wait_rows(3, "alive", Duration::from_secs(10));
    c.net.cut(3);
    let cut_at = Instant::now();
    // host 3's daemon dies while cut off; its nodes run on
    drop(c.daemons[2].take());
    c.eval(1, &format!("return seen.probe({h3:?}, 20)"));
    c.eval(3, &format!("return seen.probe({h1:?}, 20)"));
    for h in [1, 2] {
        c.wait_live(h, &names_except(&[3], &format!("o_{h}")), SESSION * 3);
    }
    c.wait_live(3, &names_except(&[1, 2], "o_3"), SESSION * 3);
    let mut majority_saw = Vec::new();
    for h in [1, 2] {
        let (off, max) = event_names(&c.events(h), "off");
        majority_saw.push(max);
        assert_eq!(off, host_names(3), "o_{h} reports offline");
        assert!(
            Duration::from_millis(max) <= SESSION + SLACK,
            "o_{h}: host 3's nodes offline after {max} ms (session timeout {SESSION:?})"
        );
    }
    let (off3, max3) = event_names(&c.events(3), "off");
    let mut want_off3: Vec<String> = all_names().into_iter().filter(|n| !n.ends_with("_3")).collect();
    want_off3.sort();
    assert_eq!(off3, want_off3, "o_3 reports offline");
    for (h, want) in [(1, &h3), (3, &h1)] {
        let r = {
            let mut r = None;
            assert!(
                wait_until(LIVENESS + SLACK * 5, || {
                    r = Some(c.eval(h, "return seen.probe_result()"));
                    r.as_deref().is_some_and(|r| !r.is_empty())
                }),
                "o_{h}: probe calls still waiting"
            );
            r.unwrap()
        };
        let mut worst = 0;
        for (p, name) in r.split(',').zip(want.split(',')) {
            let (n, outcome) = p.split_once('=').unwrap();
            let (kind, ms) = outcome.split_once('@').unwrap();
            assert_eq!((n, kind), (name, "node down"), "o_{h}'s call to {name}: {r}");
            worst = worst.max(ms.parse::<u64>().unwrap());
        }
        assert!(
            Duration::from_millis(worst) <= LIVENESS + SLACK,
            "o_{h}: calls ended {worst} ms after the cut: {r}"
        );
        println!("partition: o_{h}'s calls in flight across the cut: {r}");
    }
    // the isolated side routes B keys only to b_3
    assert!(
        c.routes(3).iter().all(|&s| s == 23),
        "o_3 routes to nodes it cannot reach"
    );
    assert!(c.routes(1).iter().all(|&s| s != 23), "o_1 routes to b_3");
    // the majority's ZooKeeper expires host 3's sessions
    let expired = c.wait_registered(&[1, 2], &[0, 1], SESSION * 4);
    println!(
        "partition: host 3 cut; o_1/o_2 saw its 4 nodes offline {} ms/{} ms after the cut (session timeout {SESSION:?}, \
         liveness {LIVENESS:?}), o_3 saw the 8 others offline {max3} ms after it; \
         ZooKeeper dropped host 3's registrations {expired:?} later",
        majority_saw[0], majority_saw[1]
    );

    // the majority's ctl shows host 3's nodes dead once their records
    // (refreshed every 2 s) are older than the bound
    c.wait_rows(3, "dead", DEAD_AFTER + SLACK * 4);
    println!(
        "ops: host 3's daemon killed in the partition; ctl list on host 1 shows its nodes dead {:?} after the cut (bound {DEAD_AFTER:?})",
        cut_at.elapsed()
    );

    // --- heal: everyone back, registered once, the same ring ------------------
    std::thread::sleep(Duration::from_secs(1));
    c.mark_all();
    c.net.heal(3);
    let t = Instant::now();
    for h in 1..=HOSTS {
        c.wait_live(h, &names_except(&[], &format!("o_{h}")), Duration::from_secs(40));
    }
    let mut back = Vec::new();
    let reg = c.wait_registered(&[1, 2, 3], &[0, 1, 2], Duration::from_secs(30));
    std::thread::sleep(SESSION);
    for h in 1..=HOSTS {
        let ev = c.events(h);
        let (on, max_on) = event_names(&ev, "on");
        back.push(max_on);
        let (off, _) = event_names(&ev, "off");
        let mut want: Vec<String> = if h == 3 { want_off3.clone() } else { host_names(3) };
        want.sort();
        let on_others: Vec<String> = on.iter().filter(|n| **n != format!("o_{h}")).cloned().collect();
        assert_eq!(on_others, want, "after the heal o_{h} saw Online: {ev}");
        let off_others: Vec<String> = off.iter().filter(|n| **n != format!("o_{h}")).cloned().collect();
        assert!(off_others.is_empty(), "after the heal o_{h} saw Offline: {ev}");
        assert_eq!(c.eval(h, "return seen.known()"), names_except(&[], ""));
    }
    // the nodes' records are fresh again: alive, the same processes, one start each
    let ops_healed = c.wait_rows(3, "alive", DEAD_AFTER + SLACK * 4);
    assert_eq!(ops_healed, ops_before, "host 3's processes after the heal");
    assert!(ops_healed.iter().all(|r| r.3 == "1"), "{ops_healed:?}");
    // a new daemon on host 3 adopts them: nothing started twice
    let store = format!("zk://{}/luahost-ops", c.zk.connect_string());
    let d3 = start_daemon(&c.net, &c.dir.0, &store, 3, false);
    for (name, pid, ..) in &ops_before {
        let line = format!("adopted {name} (pid {pid})");
        assert!(
            wait_until(Duration::from_secs(5), || d3.log().contains(&line)),
            "{line}: {}",
            d3.log()
        );
    }
    c.daemons[2] = Some(d3);
    std::thread::sleep(DAEMON_TICKS);
    assert_eq!(c.rows(2, 3), ops_before, "no process of host 3 started again");
    let log = c.daemons[2].as_ref().unwrap().log();
    for (name, ..) in &ops_before {
        assert!(
            !log.contains(&format!("started {name} (pid")),
            "{name} started again:\n{log}"
        );
    }
    println!(
        "ops: after the heal ctl list shows host 3's nodes alive again, the same pids, one start each; \
         a new daemon on host 3 adopted all three"
    );
    assert_eq!(c.routes(1), ring0, "o_1's ring after the heal");
    assert_eq!(c.routes(3), ring0, "o_3's ring after the heal");
    println!(
        "heal: all back on o_1/o_2/o_3 {} ms/{} ms/{} ms after the heal, ZooKeeper lists each node once ({reg:?}); each node Online once; \
         the ring of {KEYS} keys is the one before the partition ({:?} in all)",
        back[0],
        back[1],
        back[2],
        t.elapsed()
    );

    // --- latency and loss between hosts --------------------------------------
    c.mark_all();
    let impaired = c.net.impair(DELAY, LOSS_PERCENT);
    let t = Instant::now();
    // in force: a round trip between two hosts takes two delays at least
    let (kind, rtt) = outcome(&c.eval(1, "return seen.timed('a_2', 2, 0)"));
    assert_eq!(kind, "ok");
    assert!(rtt >= 2 * DELAY.as_millis() as u64, "a call across hosts took {rtt} ms");
    c.traffic_all(&[]);
    // timeouts as configured: 0.3 s allowed for a handler taking 0.6 s
    // times out at 0.3 s; 2 s allowed for one taking 0.1 s answers
    let (kind, short) = outcome(&c.eval(1, "return seen.timed('b_2', 0.3, 0.6)"));
    assert_eq!(kind, "timeout", "a call allowed 0.3 s for 0.6 s of work");
    assert!(
        (300..300 + SLACK.as_millis() as u64).contains(&short),
        "a call allowed 0.3 s ended after {short} ms"
    );
    let (kind, long) = outcome(&c.eval(3, "return seen.timed('b_1', 2, 0.1)"));
    assert_eq!(kind, "ok", "a call allowed 2 s for 0.1 s of work");
    assert!(long >= 100 + 2 * DELAY.as_millis() as u64, "{long} ms");
    std::thread::sleep(IMPAIRED_FOR.saturating_sub(t.elapsed()));
    let mut calls = 0;
    let mut worst = 0;
    for h in 1..=HOSTS {
        let stats = c.stop_traffic(h);
        calls += traffic_ok("latency and loss", h, &stats);
        worst = worst.max(max_ms(&stats));
    }
    // (the traffic's last calls end before the events are read)
    std::thread::sleep(Duration::from_millis(500));
    for h in 1..=HOSTS {
        assert_quiet("latency and loss", h, &c.events(h));
    }
    let delayed = impaired.end();
    assert!(delayed > 0, "no packet was delayed");
    println!(
        "latency: {DELAY:?} each way and {LOSS_PERCENT}% loss between hosts for {:?} ({delayed} packets delayed): \
         a call across hosts {rtt} ms; {calls} calls all answered (slowest {worst} ms), no Offline; \
         a call allowed 0.3 s for 0.6 s of work: timeout after {short} ms; allowed 2 s for 0.1 s: answered after {long} ms",
        t.elapsed()
    );

    // --- a whole host killed ------------------------------------------------
    c.mark_all();
    let before = c.routes(1);
    c.net.cut(3); // the machine is gone: no reset, no FIN reaches anyone
    let killed = c.net.kill_processes(3);
    c.zk.lost(2);
    if let Some(o) = c.observers[2].take() {
        o.stop_now();
    }
    let mut seen_after = Vec::new();
    for h in [1, 2] {
        c.wait_live(h, &names_except(&[3], &format!("o_{h}")), SESSION * 3);
        let (off, max) = event_names(&c.events(h), "off");
        seen_after.push(max);
        assert_eq!(off, host_names(3), "o_{h} reports offline");
        assert!(
            Duration::from_millis(max) <= SESSION + SLACK,
            "o_{h}: host 3's nodes offline after {max} ms"
        );
    }
    let after = c.routes(1);
    let mut moved = 0;
    for (k, (x, y)) in before.iter().zip(&after).enumerate() {
        if *x == 23 {
            assert!(*y == 21 || *y == 22, "key {k} of b_3 went to {y}");
            moved += 1;
        } else {
            assert_eq!(x, y, "key {k} of {x} moved to {y}");
        }
    }
    assert_eq!(after, c.routes(2));
    let gone = c.wait_registered(&[1, 2], &[0, 1], SESSION * 4);
    println!(
        "host loss: host 3 killed ({killed} processes); o_1/o_2 saw its nodes offline {} ms/{} ms after; \
         {moved} of {KEYS} keys moved (all b_3's, to b_1/b_2), none other; ZooKeeper dropped them {gone:?} later",
        seen_after[0], seen_after[1]
    );
    println!("hosts: whole test {:?}", test_start.elapsed());
}
