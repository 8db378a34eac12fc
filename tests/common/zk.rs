//! A real, throw-away ZooKeeper server for integration tests.
//!
//! `ZkServer::start()` runs Debian's ZooKeeper (`/usr/share/java/zookeeper.jar`, installed with
//! apt-get on first use when we are root) in the foreground with a config in a temp dir, on a free
//! loopback port, and returns once it answers `imok` to `ruok`. The process is killed and the temp
//! dir removed on drop. `stop`/`restart` keep the port and the data (sessions survive a restart
//! if the client reconnects within the session timeout); `freeze`/`thaw` use SIGSTOP/SIGCONT to
//! simulate a hung server (sessions expire once it is thawed after the session timeout).
//!
//! Needs: `java` on PATH, `flock`/apt-get only when the jar is missing.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The server jar of Debian's `zookeeper` package (its manifest pulls in the other jars).
pub const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";
/// Optional logging backend: with it on the class path the server logs (to `ZkServer::log_path`).
pub const SLF4J_SIMPLE_JAR: &str = "/usr/share/java/slf4j-simple.jar";
/// Serialises apt-get between parallel tests (and `tests/run`, which uses the same file).
pub const INSTALL_LOCK: &str = "/tmp/luahost-zk-install.lock";
/// How long `start`/`restart` wait for `imok`.
pub const READY_LIMIT: Duration = Duration::from_secs(20);
/// Bound for one apt-get invocation.
const APT_LIMIT_SECS: &str = "900";

/// Makes sure `ZK_JAR` exists: installs Debian's `zookeeper` package if it is missing and we are
/// root (once, under a file lock), panics with a clear message otherwise. Never skips.
pub fn ensure_installed() {
    if Path::new(ZK_JAR).exists() {
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "ZooKeeper is not installed ({ZK_JAR} is missing) and we are not root: \
             install it with `sudo apt-get install -y zookeeper` (Debian package), or run tests/run as root"
        );
    }
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(INSTALL_LOCK)
        .unwrap_or_else(|e| panic!("cannot open {INSTALL_LOCK}: {e}"));
    // Blocks while another test (or tests/run) installs; released when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        panic!("flock {INSTALL_LOCK}: {}", std::io::Error::last_os_error());
    }
    if Path::new(ZK_JAR).exists() {
        return; // somebody else installed it while we waited
    }
    let mut log = String::new();
    let known = Command::new("apt-cache")
        .args(["show", "zookeeper"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !known {
        apt(&["update"], &mut log);
    }
    let install = [
        "-o",
        "DPkg::Lock::Timeout=300",
        "install",
        "-y",
        "--no-install-recommends",
        "zookeeper",
    ];
    if !apt(&install, &mut log) {
        // Stale package lists give 404s: refresh once and retry.
        apt(&["update"], &mut log);
        apt(&install, &mut log);
    }
    if !Path::new(ZK_JAR).exists() {
        let tail: String = log
            .chars()
            .rev()
            .take(4000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        panic!("could not install Debian's zookeeper package ({ZK_JAR} still missing); apt-get said:\n{tail}");
    }
    drop(lock);
}

/// Runs `apt-get <args>` (bounded, non-interactive), appends its output to `log`.
fn apt(args: &[&str], log: &mut String) -> bool {
    let out = Command::new("timeout")
        .arg(APT_LIMIT_SECS)
        .arg("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) => {
            log.push_str(&format!("$ apt-get {}\n", args.join(" ")));
            log.push_str(&String::from_utf8_lossy(&o.stdout));
            log.push_str(&String::from_utf8_lossy(&o.stderr));
            o.status.success()
        }
        Err(e) => {
            log.push_str(&format!("cannot run apt-get {}: {e}\n", args.join(" ")));
            false
        }
    }
}

/// Sends a four-letter command (`ruok`, `srvr`, `stat`, `mntr`) and returns the answer; `None`
/// if the server does not answer within `limit`.
pub fn four_letter(addr: &str, cmd: &str, limit: Duration) -> Option<String> {
    let sa: SocketAddr = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&sa, limit).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    s.write_all(cmd.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A ZooKeeper server process on 127.0.0.1; killed (and its temp dir removed) on drop.
pub struct ZkServer {
    dir: PathBuf,
    cfg: PathBuf,
    port: u16,
    child: Option<Child>,
    frozen: bool,
}

impl ZkServer {
    /// Installs ZooKeeper if needed, starts a fresh server and waits until it answers `imok`.
    /// Panics (with the server's log) if it does not come up within `READY_LIMIT`.
    pub fn start() -> ZkServer {
        ensure_installed();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "luahost-zk-{}-{}-{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let mut last_err = String::new();
        // The free port may be taken between probing and binding: retry with another one.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let cfg = dir.join("zoo.cfg");
            std::fs::write(
                &cfg,
                format!(
                    "tickTime=2000\n\
                     dataDir={}\n\
                     clientPort={port}\n\
                     clientPortAddress=127.0.0.1\n\
                     admin.enableServer=false\n\
                     4lw.commands.whitelist=ruok,srvr,stat,mntr\n\
                     maxSessionTimeout=60000\n",
                    dir.join("data").display()
                ),
            )
            .unwrap();
            let mut zk = ZkServer {
                dir: dir.clone(),
                cfg,
                port,
                child: None,
                frozen: false,
            };
            match zk.spawn_and_wait() {
                Ok(()) => return zk,
                Err(e) => {
                    last_err = e;
                    zk.kill();
                    zk.dir = PathBuf::new(); // keep the dir for the next attempt
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("ZooKeeper did not start: {last_err}");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let mut cp = ZK_JAR.to_string();
        if Path::new(SLF4J_SIMPLE_JAR).exists() {
            cp.push(':');
            cp.push_str(SLF4J_SIMPLE_JAR);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new("java")
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-cp", &cp])
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&self.cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run java: {e}"))?;
        self.child = Some(child);
        self.frozen = false;
        let start = Instant::now();
        while start.elapsed() < READY_LIMIT {
            if let Ok(Some(st)) = self.child.as_mut().unwrap().try_wait() {
                self.child = None;
                return Err(format!("java exited with {st}; log:\n{}", self.log_tail()));
            }
            if self.ruok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "no `imok` after {READY_LIMIT:?} on {}; log:\n{}",
            self.addr(),
            self.log_tail()
        ))
    }

    /// "127.0.0.1:port", the connect string for clients.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The java process id (0 when stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The temp dir (config, `data/`, `zk.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's stdout+stderr (with slf4j-simple on the class path, its log).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("zk.log")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// True if the server answers `imok` within 1 s.
    pub fn ruok(&self) -> bool {
        four_letter(&self.addr(), "ruok", Duration::from_secs(1)).as_deref() == Some("imok")
    }

    /// `mntr` as key/value pairs (e.g. `zk_ephemerals_count`, `zk_num_alive_connections`).
    pub fn mntr(&self) -> Vec<(String, String)> {
        four_letter(&self.addr(), "mntr", Duration::from_secs(5))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('\t').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    }

    /// One `mntr` value parsed as a number.
    pub fn mntr_value(&self, key: &str) -> Option<i64> {
        self.mntr()
            .into_iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.trim().parse().ok())
    }

    fn signal(&self, sig: i32) {
        let pid = self.pid();
        if pid != 0 {
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// SIGTERM, then waits (SIGKILL after 15 s). Port and data dir are kept for `restart`.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        unsafe {
            if self.frozen {
                libc::kill(child.id() as i32, libc::SIGCONT);
            }
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        self.frozen = false;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops (if running) and starts again on the same port with the same data dir.
    pub fn restart(&mut self) {
        self.stop();
        // The old socket may linger briefly; the port is fixed, so retry a few times.
        let mut last_err = String::new();
        for _ in 0..5 {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) => {
                    last_err = e;
                    self.kill();
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        panic!("ZooKeeper did not restart on {}: {last_err}", self.addr());
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing (a hung server).
    pub fn freeze(&mut self) {
        self.signal(libc::SIGSTOP);
        self.frozen = true;
    }

    /// SIGCONT after `freeze`.
    pub fn thaw(&mut self) {
        self.signal(libc::SIGCONT);
        self.frozen = false;
    }

    /// SIGKILL and reap (no clean shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.frozen = false;
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.kill();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A plain ZooKeeper client (digest `auth` if given) and the runtime to drive it.
pub fn zk_client(zk: &ZkServer, auth: Option<&str>) -> (tokio::runtime::Runtime, zookeeper_client::Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = rt.block_on(async {
        let mut c = zookeeper_client::Client::connector().with_session_timeout(Duration::from_secs(4));
        if let Some(a) = auth {
            c = c.with_auth("digest", a.as_bytes());
        }
        c.connect(&zk.addr()).await.unwrap()
    });
    (rt, c)
}

/// The registration at `path` and its stat, if there is one.
pub fn znode(
    zk: &ZkServer,
    path: &str,
    auth: Option<&str>,
) -> Option<(luahost::discovery::zk::Registration, zookeeper_client::Stat)> {
    let (rt, c) = zk_client(zk, auth);
    let (data, stat) = rt.block_on(c.get_data(path)).ok()?;
    Some((rmp_serde::from_slice(&data).unwrap(), stat))
}

/// The registration at `path` (which must exist).
pub fn registration(zk: &ZkServer, path: &str) -> luahost::discovery::zk::Registration {
    znode(zk, path, None).expect("a registration").0
}

/// The children of `path`, sorted (none when it does not exist).
pub fn registered_at(zk: &ZkServer, path: &str, auth: Option<&str>) -> Vec<String> {
    let (rt, c) = zk_client(zk, auth);
    let mut v = rt.block_on(c.list_children(path)).unwrap_or_default();
    v.sort();
    v
}
