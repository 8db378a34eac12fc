//! Simulated hosts for integration tests: Linux network namespaces joined by
//! one bridge, a ZooKeeper ensemble across them, and ways to run processes,
//! threads (and so in-process nodes) inside a host.
//!
//! Layout of one [`Net`] (every name carries the test's own tag, so parallel
//! runs never meet):
//!
//! ```text
//!   <tag>-sw   a "switch" namespace holding bridge br0 and one port hN per host
//!   <tag>-hN   host N: lo and eth0 = 10.77.0.(10+N)/24, the other end of port hN
//! ```
//!
//! Nothing is added to the namespace the test runs in. A host's link is cut
//! by taking its port off the bridge ([`Net::cut`]): its packets are dropped
//! silently, as with a pulled cable behind a switch, and its own interface
//! stays up. [`Net::drop`] kills whatever still runs in the namespaces and
//! deletes them; [`Net::create`] first sweeps namespaces left by test
//! processes that no longer exist (a run killed before its drop guards ran).
//!
//! Needs root and iproute2 (`ip`); `tests/run` installs it.
#![allow(dead_code)]

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Every namespace this harness makes starts with this.
pub const PREFIX: &str = "lhnet-";

/// True when the test runs as root (namespaces need it).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Prints why a test that needs root is skipped; true when it must skip.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("SKIPPED {test}: network namespaces need root (tests/run runs as root; CI does)");
    true
}

/// Runs `ip args...`; panics with its output when it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip (iproute2 is needed): {e}"));
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a command inside namespace `ns` (`ip netns exec`); returns whether it succeeded and its
/// output.
pub fn ns_exec(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip netns exec: {e}"));
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

/// Moves the calling thread into network namespace `ns` (threads it then
/// starts are born there too).
pub fn enter(ns: &str) -> std::io::Result<()> {
    let f = File::open(netns_path(ns))?;
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The pids of the processes in namespace `ns`, this process excluded.
fn pids_in(ns: &str) -> Vec<i32> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output();
    let me = std::process::id() as i32;
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .filter(|p| *p != me)
            .collect()
    })
    .unwrap_or_default()
}

/// SIGKILLs every process in `ns` and deletes it.
fn remove_ns(ns: &str) {
    for pid in pids_in(ns) {
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// Deletes the namespaces of this harness whose test process is gone.
pub fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: i32 = rest.split('-').next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if pid > 0 && Path::new(&format!("/proc/{pid}")).exists() {
            continue; // a live run's
        }
        eprintln!("netns: removing stale namespace {name}");
        remove_ns(name);
    }
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// One simulated host: a network namespace with one address.
#[derive(Debug, Clone)]
pub struct Host {
    /// 1-based index.
    pub index: usize,
    /// The namespace's name.
    pub ns: String,
    /// Its address on the bridge.
    pub ip: Ipv4Addr,
}

impl Host {
    /// A command that runs `program` inside this host.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let f = File::open(netns_path(&self.ns)).unwrap_or_else(|e| panic!("open netns {}: {e}", self.ns));
        let mut cmd = Command::new(program);
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs `f` on a new thread inside this host and returns its result.
    /// Threads `f` starts (a node's own thread, its runtime) stay there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = self.ns.clone();
        std::thread::spawn(move || {
            enter(&ns).unwrap_or_else(|e| panic!("setns {ns}: {e}"));
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// `addr:port` of this host.
    pub fn addr(&self, port: u16) -> String {
        format!("{}:{port}", self.ip)
    }
}

/// Hosts on one bridge; everything in them is killed and the namespaces
/// removed on drop.
pub struct Net {
    tag: String,
    switch: String,
    hosts: Vec<Host>,
}

impl Net {
    /// Makes `n` hosts 10.77.0.11, .12, ... on one bridge.
    pub fn create(n: usize) -> Net {
        sweep_stale();
        let tag = format!("{PREFIX}{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let switch = format!("{tag}-sw");
        let mut net = Net {
            tag: tag.clone(),
            switch: switch.clone(),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "set", "lo", "up"]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for i in 1..=n {
            let ns = format!("{tag}-h{i}");
            ip(&["netns", "add", &ns]);
            net.hosts.push(Host {
                index: i,
                ns: ns.clone(),
                ip: Ipv4Addr::new(10, 77, 0, 10 + i as u8),
            });
            let port = format!("h{i}");
            let cidr = format!("10.77.0.{}/24", 10 + i);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &switch, "link", "set", &port, "up"]);
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        net
    }

    /// Host `i` (1-based).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    /// All hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Cuts host `i` off: its bridge port leaves the bridge, so whatever it
    /// sends or is sent is dropped without a word (no reset, no
    /// unreachable).
    pub fn cut(&self, i: usize) {
        ip(&["-n", &self.switch, "link", "set", &format!("h{i}"), "nomaster"]);
    }

    /// Undoes [`Net::cut`].
    pub fn heal(&self, i: usize) {
        ip(&["-n", &self.switch, "link", "set", &format!("h{i}"), "master", "br0"]);
    }

    /// SIGKILLs every process of host `i`.
    pub fn kill_processes(&self, i: usize) -> usize {
        let pids = pids_in(&self.host(i).ns);
        for pid in &pids {
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        pids.len()
    }

    /// The namespaces' common prefix (for messages).
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            remove_ns(&h.ns);
        }
        remove_ns(&self.switch);
    }
}

/// One server of a [`ZkEnsemble`].
struct Member {
    host: Host,
    dir: PathBuf,
    child: Option<Child>,
}

/// A ZooKeeper ensemble, one server per given host (client port 2181,
/// quorum 2888, election 3888 on the host's address: each host has its own
/// ports). Servers are killed and their folders removed on drop.
pub struct ZkEnsemble {
    members: Vec<Member>,
    root: PathBuf,
    /// Digest credentials (`user:password`) [`ZkEnsemble::children`] reads with.
    pub auth: Option<String>,
}

/// Client port of every server.
pub const ZK_PORT: u16 = 2181;

impl ZkEnsemble {
    /// Starts one server on each of `hosts` and waits until the ensemble has
    /// a leader and every server serves.
    pub fn start(hosts: &[&Host]) -> ZkEnsemble {
        super::zk::ensure_installed();
        let root = std::env::temp_dir().join(format!(
            "luahost-ensemble-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let servers: String = hosts
            .iter()
            .enumerate()
            .map(|(k, h)| format!("server.{}={}:2888:3888\n", k + 1, h.ip))
            .collect();
        let mut members = Vec::new();
        for (k, h) in hosts.iter().enumerate() {
            let dir = root.join(format!("zk{}", k + 1));
            std::fs::create_dir_all(dir.join("data")).unwrap();
            std::fs::write(dir.join("data/myid"), format!("{}\n", k + 1)).unwrap();
            std::fs::write(
                dir.join("zoo.cfg"),
                format!(
                    "tickTime=2000\n\
                     initLimit=5\n\
                     syncLimit=2\n\
                     dataDir={}\n\
                     clientPort={ZK_PORT}\n\
                     clientPortAddress={}\n\
                     admin.enableServer=false\n\
                     4lw.commands.whitelist=ruok,srvr,stat,mntr\n\
                     maxSessionTimeout=60000\n\
                     {servers}",
                    dir.join("data").display(),
                    h.ip
                ),
            )
            .unwrap();
            members.push(Member {
                host: (*h).clone(),
                dir,
                child: None,
            });
        }
        let mut e = ZkEnsemble {
            members,
            root,
            auth: None,
        };
        for k in 0..e.members.len() {
            e.spawn(k);
        }
        e.wait_serving(&(0..e.members.len()).collect::<Vec<_>>(), Duration::from_secs(60));
        e
    }

    fn spawn(&mut self, k: usize) {
        let m = &mut self.members[k];
        let mut cp = super::zk::ZK_JAR.to_string();
        if Path::new(super::zk::SLF4J_SIMPLE_JAR).exists() {
            cp.push(':');
            cp.push_str(super::zk::SLF4J_SIMPLE_JAR);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.join("zk.log"))
            .unwrap();
        let child = m
            .host
            .command("java")
            .args(["-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", &cp])
            .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
            .arg(m.dir.join("zoo.cfg"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run java: {e}"));
        m.child = Some(child);
    }

    /// The `hosts` string for clients: every server.
    pub fn connect_string(&self) -> String {
        self.members
            .iter()
            .map(|m| m.host.addr(ZK_PORT))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The answer of server `k` (0-based) to a four-letter command, asked
    /// from inside its host.
    pub fn four_letter(&self, k: usize, cmd: &'static str) -> Option<String> {
        let addr = self.members[k].host.addr(ZK_PORT);
        self.members[k]
            .host
            .run(move || super::zk::four_letter(&addr, cmd, Duration::from_secs(1)))
    }

    /// `leader`, `follower`, or None when server `k` does not serve.
    pub fn mode(&self, k: usize) -> Option<String> {
        let srvr = self.four_letter(k, "srvr")?;
        srvr.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_string())
    }

    /// Index of the current leader, if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&k| self.members[k].child.is_some() && self.mode(k).as_deref() == Some("leader"))
    }

    /// Waits until each of `servers` is leader or follower; panics with the
    /// logs after `limit`.
    pub fn wait_serving(&self, servers: &[usize], limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if servers
                .iter()
                .all(|&k| matches!(self.mode(k).as_deref(), Some("leader" | "follower")))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let logs: String = servers
            .iter()
            .map(|&k| format!("--- zk{}:\n{}\n", k + 1, self.log_tail(k)))
            .collect();
        panic!("ZooKeeper ensemble not serving after {limit:?}:\n{logs}");
    }

    /// SIGKILLs server `k`.
    pub fn kill(&mut self, k: usize) {
        if let Some(mut c) = self.members[k].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts server `k` again (same data); does not wait.
    pub fn restart(&mut self, k: usize) {
        self.kill(k);
        self.spawn(k);
    }

    /// Forgets server `k`'s process without killing it (its host was
    /// killed with everything in it).
    pub fn lost(&mut self, k: usize) {
        self.kill(k); // (reaps it; a no-op kill when it is gone already)
    }

    /// The last lines of server `k`'s log.
    pub fn log_tail(&self, k: usize) -> String {
        let text = std::fs::read_to_string(self.members[k].dir.join("zk.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// One `mntr` figure of server `k` (None when it does not answer).
    pub fn mntr_value(&self, k: usize, key: &str) -> Option<i64> {
        let out = self.four_letter(k, "mntr")?;
        out.lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(name, _)| *name == key)
            .and_then(|(_, v)| v.trim().parse().ok())
    }

    /// The sum of one `mntr` figure over the servers that answer.
    pub fn mntr_sum(&self, key: &str) -> i64 {
        (0..self.members.len()).filter_map(|k| self.mntr_value(k, key)).sum()
    }

    /// The children of `path`, sorted, listed through server `k` from inside
    /// its host (None when it cannot be asked).
    pub fn children(&self, k: usize, path: &str) -> Option<Vec<String>> {
        let addr = self.members[k].host.addr(ZK_PORT);
        let path = path.to_string();
        let auth = self.auth.clone();
        self.members[k].host.run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut connector = zookeeper_client::Client::connector();
                connector = connector.with_session_timeout(Duration::from_secs(4));
                if let Some(a) = &auth {
                    connector = connector.with_auth("digest", a.as_bytes());
                }
                let c = tokio::time::timeout(Duration::from_secs(5), connector.connect(&addr))
                    .await
                    .ok()?
                    .ok()?;
                let mut v = tokio::time::timeout(Duration::from_secs(5), c.list_children(&path))
                    .await
                    .ok()?
                    .ok()?;
                v.sort();
                Some(v)
            })
        })
    }
}

impl Drop for ZkEnsemble {
    fn drop(&mut self) {
        for k in 0..self.members.len() {
            self.kill(k);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Latency and loss on every host's link while it lives (see
/// [`Net::impair`]); undone on drop.
pub struct Impairment {
    hosts: Vec<Host>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<std::io::Result<u64>>>,
}

/// Runs `iptables args...` inside `ns`; panics with its output when it fails.
fn iptables(ns: &str, args: &[&str]) {
    let mut all = vec!["iptables", "-w"];
    all.extend_from_slice(args);
    let (ok, out) = ns_exec(ns, &all);
    assert!(ok, "iptables {} in {ns} failed: {out}", args.join(" "));
}

/// Holds each packet the kernel queues to NFQUEUE 0 of the calling
/// thread's namespace for `delay`, then lets it go, in order, until `stop`;
/// returns how many packets it delayed.
fn delay_queue(delay: Duration, stop: &std::sync::atomic::AtomicBool) -> std::io::Result<u64> {
    let mut q = nfq::Queue::open()?;
    q.bind(0)?;
    q.set_copy_range(0, 0)?; // the verdict needs only the packet id
    q.set_queue_max_len(0, 65536)?;
    q.set_nonblocking(true);
    let mut held: std::collections::VecDeque<(Instant, nfq::Message)> = Default::default();
    let mut count = 0;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        loop {
            match q.recv() {
                Ok(mut m) => {
                    m.set_verdict(nfq::Verdict::Accept);
                    held.push_back((Instant::now() + delay, m));
                    count += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| stopping || *due <= now) {
            let (_, m) = held.pop_front().unwrap();
            q.verdict(m)?;
        }
        if stopping && held.is_empty() {
            return Ok(count);
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

impl Net {
    /// Delays every packet a host sends to another host by `delay` and
    /// drops `loss_percent` of them at random, on every host (so a round
    /// trip between two hosts takes at least twice `delay`), until the
    /// returned guard is dropped. Traffic inside a host is untouched.
    ///
    /// The kernel here has no `sch_netem` (so no `tc qdisc ... netem`); this
    /// uses two netfilter rules in each host's OUTPUT chain on eth0: the
    /// `statistic` match (random mode) drops, and an NFQUEUE rule hands
    /// every other packet to a thread of this process in that host, which
    /// gives it back after `delay` (`--queue-bypass`: without the thread,
    /// packets pass). Needs `iptables` (tests/run installs it).
    pub fn impair(&self, delay: Duration, loss_percent: f64) -> Impairment {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut imp = Impairment {
            hosts: self.hosts.clone(),
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for h in &self.hosts {
            let (ns, stop) = (h.ns.clone(), stop.clone());
            imp.threads.push(std::thread::spawn(move || {
                enter(&ns)?;
                delay_queue(delay, &stop)
            }));
        }
        for h in &self.hosts {
            if loss_percent > 0.0 {
                let p = format!("{}", loss_percent / 100.0);
                iptables(
                    &h.ns,
                    &[
                        "-A",
                        "OUTPUT",
                        "-o",
                        "eth0",
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &p,
                        "-j",
                        "DROP",
                    ],
                );
            }
            iptables(
                &h.ns,
                &[
                    "-A",
                    "OUTPUT",
                    "-o",
                    "eth0",
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    "0",
                    "--queue-bypass",
                ],
            );
        }
        imp
    }
}

impl Impairment {
    /// Removes the rules, lets the held packets go; returns how many
    /// packets were delayed in all.
    pub fn end(mut self) -> u64 {
        self.undo()
    }

    fn undo(&mut self) -> u64 {
        for h in &self.hosts {
            let _ = ns_exec(&h.ns, &["iptables", "-w", "-F", "OUTPUT"]);
        }
        self.stop.store(true, Ordering::Relaxed);
        let mut n = 0;
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(c)) => n += c,
                Ok(Err(e)) => panic!("the delaying queue failed: {e}"),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        n
    }
}

impl Drop for Impairment {
    fn drop(&mut self) {
        if !self.threads.is_empty() && !std::thread::panicking() {
            self.undo();
        } else {
            for h in &self.hosts {
                let _ = ns_exec(&h.ns, &["iptables", "-w", "-F", "OUTPUT"]);
            }
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}
