//! Helpers shared by the integration tests: throw-away cluster files on free
//! loopback ports, node processes that are killed when dropped, polling.
#![allow(dead_code)]

pub mod netns;
pub mod pg;
pub mod prom;
pub mod zk;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const EVAL: Duration = Duration::from_secs(20);

/// The `luahost` binary the tests start: `LUAHOST_TEST_BIN` when set (a
/// copy taken right after the build, where several checkouts share one
/// target directory and overwrite each other's binary), else the one cargo
/// built for this test.
pub fn luahost_bin() -> PathBuf {
    match std::env::var_os("LUAHOST_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_luahost")),
    }
}

/// The test cluster's scripts.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/scripts")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768-60999 here): a port the
    // kernel hands out for port 0 is also what it picks for the outgoing
    // connections of every other test running meanwhile, so one taken now
    // and bound a moment later by a node was sometimes gone by then.
    // Candidates walk 20000-32767 from a start that differs per process;
    // each is checked free (both a listen and a connect would fail on it
    // if someone held it) before it is handed out.
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_768;
    let seed = std::process::id().wrapping_mul(2_654_435_761) % SPAN;
    for _ in 0..SPAN {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (seed + k.wrapping_mul(7)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "luahost-test-{tag}-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ (free_port() as u128)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a cluster file with nodes (name, type, id) on fresh ports; returns its path.
pub fn write_cluster(dir: &Path, nodes: &[(&str, &str, u32)], extra: &str) -> PathBuf {
    write_cluster_with(dir, &scripts_dir(), nodes, extra)
}

/// Copies the test cluster's scripts into `dir/scripts` (for tests that edit them).
pub fn copy_scripts(dir: &Path) -> PathBuf {
    let dst = dir.join("scripts");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(scripts_dir()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    dst
}

/// As [`write_cluster`] with the scripts taken from `scripts`.
pub fn write_cluster_with(dir: &Path, scripts: &Path, nodes: &[(&str, &str, u32)], extra: &str) -> PathBuf {
    let scripts = scripts.to_path_buf();
    let mut text = format!(
        "return {{\n  secret = \"test-secret\",\n  scripts = {{ {:?} }},\n{extra}\n  nodes = {{\n",
        scripts.display().to_string()
    );
    // hold every port until all are chosen, so no two nodes get the same one
    let held: Vec<TcpListener> = nodes
        .iter()
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    for ((name, ty, id), l) in nodes.iter().zip(&held) {
        text.push_str(&format!(
            "    {name} = {{ type = {ty:?}, id = {id}, addr = \"127.0.0.1:{}\", main = {:?} }},\n",
            l.local_addr().unwrap().port(),
            scripts.join("main.lua").display().to_string()
        ));
    }
    drop(held);
    text.push_str("  },\n}\n");
    let path = dir.join("cluster.lua");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts node `name` of the cluster file in this process.
pub fn start(cluster: &Path, name: &str) -> luahost::NodeHandle {
    let cfg = std::sync::Arc::new(luahost::ClusterConfig::load(cluster).unwrap());
    luahost::start(cfg, name).unwrap_or_else(|e| panic!("start {name}: {e}"))
}

/// Runs Lua in a node; panics with the code and the error if it fails.
pub fn eval(n: &luahost::NodeHandle, code: &str) -> String {
    n.eval(code, EVAL)
        .unwrap_or_else(|e| panic!("eval on {} failed: {e}\ncode: {code}", n.name()))
}

/// True when node `n` sees the node called `name` online.
pub fn live(n: &luahost::NodeHandle, name: &str) -> bool {
    n.eval(&format!("return router.isLive(sidOf('{name}'))"), EVAL)
        .as_deref()
        == Ok("true")
}

/// Waits (up to 20 s) until node `n` sees each of `names` online.
pub fn wait_live(n: &luahost::NodeHandle, names: &[&str]) {
    for name in names {
        assert!(
            wait_until(Duration::from_secs(20), || live(n, name)),
            "{} never saw {name} online",
            n.name()
        );
    }
}

/// Makes node `n` record, in order, the names of the nodes it hears go
/// offline; [`offline_seen`] reads them.
pub fn record_offline(n: &luahost::NodeHandle) {
    eval(
        n,
        "offline = {} EventMng:subscribe(Event.Server.Offline, function(sid, t, name) offline[#offline+1] = name end) return true",
    );
}

/// The names recorded since [`record_offline`], comma-separated.
pub fn offline_seen(n: &luahost::NodeHandle) -> String {
    eval(n, "return table.concat(offline, ',')")
}

/// Polls `f` until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A `luahost` child process whose stderr is collected; killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_env(args, &[])
    }

    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(luahost_bin());
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Proc::spawn_command(cmd)
    }

    /// Starts `cmd` with stdout discarded, collecting its stderr.
    pub fn spawn_command(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Proc { child, log }
    }

    /// As [`Proc::spawn_command`], with standard output into `file`.
    pub fn spawn_command_stdout(mut cmd: Command, file: &Path) -> Proc {
        cmd.stdout(std::fs::File::create(file).unwrap_or_else(|e| panic!("{}: {e}", file.display())))
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let err = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Proc { child, log }
    }

    pub fn run_node(cluster: &Path, node: &str) -> Proc {
        Proc::spawn(&["run", "--cluster", cluster.to_str().unwrap(), "--node", node])
    }

    pub fn run_node_env(cluster: &Path, node: &str, env: &[(&str, &str)]) -> Proc {
        Proc::spawn_env(&["run", "--cluster", cluster.to_str().unwrap(), "--node", node], env)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.log().contains(needle))
    }

    /// Sends a signal (libc numbers).
    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Speaks the connecting side of the node handshake on `s` as node
/// (`name`, `sid`, `stype`) with `digest`, proving `secret`. Returns the
/// accepting side's answer to the proof (verify-ok or verify-failed) and
/// the challenge it sent, or the first answer when it was not a challenge.
#[allow(dead_code)]
pub fn node_handshake(
    s: &mut std::net::TcpStream,
    name: &str,
    sid: u32,
    stype: &str,
    digest: u32,
    secret: &str,
) -> Result<(luahost::codec::wire::Message, luahost::codec::wire::Message), luahost::codec::wire::Message> {
    use luahost::codec::auth::{self, Identity, Side};
    use luahost::codec::proto::{self, Envelope};
    use std::io::Write;
    let me = Identity {
        name: name.into(),
        sid,
        stype: stype.into(),
        digest,
        incarnation: 42,
        nonce: auth::nonce(),
    };
    let mut out = bytes::BytesMut::new();
    proto::put_verify(&mut out, &me);
    s.write_all(&out).unwrap();
    let mut dec = luahost::codec::wire::FrameDecoder::default();
    let mut inbuf = bytes::BytesMut::new();
    let challenge = read_frame(s, &mut dec, &mut inbuf).expect("an answer to the hello");
    let theirs = match proto::parse(&challenge.data) {
        Ok(Envelope::Challenge { hello, .. }) => hello.identity().unwrap(),
        _ => return Err(challenge),
    };
    let mut out = bytes::BytesMut::new();
    proto::put_proof(
        &mut out,
        &auth::prove(secret.as_bytes(), Side::Connecting, &me, &theirs),
    );
    s.write_all(&out).unwrap();
    let answer = read_frame(s, &mut dec, &mut inbuf).expect("an answer to the proof");
    Ok((challenge, answer))
}

/// Reads one whole message from a blocking socket (None when it closes).
#[allow(dead_code)]
pub fn read_frame(
    s: &mut std::net::TcpStream,
    dec: &mut luahost::codec::wire::FrameDecoder,
    inbuf: &mut bytes::BytesMut,
) -> Option<luahost::codec::wire::Message> {
    use std::io::Read;
    loop {
        if let Ok(Some(m)) = dec.decode(inbuf) {
            return Some(m);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => inbuf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The address of node `name` in a cluster file.
#[allow(dead_code)]
pub fn addr_of(cluster: &Path, name: &str) -> std::net::SocketAddr {
    luahost::ClusterConfig::load(cluster).unwrap().nodes[name].addr
}

/// A handshake identity with a fresh nonce (for tests that speak the
/// protocol themselves).
#[allow(dead_code)]
pub fn identity(name: &str, sid: u32, stype: &str, digest: u32, incarnation: u64) -> luahost::codec::auth::Identity {
    luahost::codec::auth::Identity {
        name: name.into(),
        sid,
        stype: stype.into(),
        digest,
        incarnation,
        nonce: luahost::codec::auth::nonce(),
    }
}

/// Runs the friends demo's 20 players (accounts 1001..1020, the demo's
/// bot.lua) against the Gate at `gate` for `secs` seconds, as the README
/// shows; returns the bot's (success, stdout, stderr).
pub fn demo_bots(gate: &str, cluster: &Path, secs: u32) -> (bool, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/friends/bot.lua");
    let out = Command::new(luahost_bin())
        .args(["bot", "--gate", gate, "--cluster"])
        .arg(cluster)
        .args([
            "--account-prefix",
            "",
            "--first-account",
            "1001",
            "--clients",
            "20",
            "--secs",
        ])
        .arg(secs.to_string())
        .arg("--script")
        .arg(script)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// How the nodes of a test cluster reach each other: the same tests run on
/// both (`write_cluster_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topo {
    /// Every node connects to every other (the default).
    Mesh,
    /// Through two Router nodes, `r_1` and `r_2` (`topology = "router"`).
    Router,
}

/// Both topologies.
pub const TOPOLOGIES: [Topo; 2] = [Topo::Mesh, Topo::Router];

/// The Router nodes [`write_cluster_on`] adds under [`Topo::Router`].
pub const ROUTERS: [(&str, &str, u32); 2] = [("r_1", "Router", 901), ("r_2", "Router", 902)];

/// As [`write_cluster`] on `topo`: under [`Topo::Router`] the file also
/// has the two Routers of [`ROUTERS`] and `topology = "router"`.
pub fn write_cluster_on(dir: &Path, nodes: &[(&str, &str, u32)], extra: &str, topo: Topo) -> PathBuf {
    match topo {
        Topo::Mesh => write_cluster(dir, nodes, extra),
        Topo::Router => {
            let mut all = nodes.to_vec();
            all.extend(ROUTERS);
            write_cluster(dir, &all, &format!("  topology = \"router\",\n{extra}"))
        }
    }
}

/// Starts the Routers of `topo` in this process (none for a mesh).
pub fn start_routers(cluster: &Path, topo: Topo) -> Vec<luahost::NodeHandle> {
    match topo {
        Topo::Mesh => Vec::new(),
        Topo::Router => ROUTERS.iter().map(|(n, _, _)| start(cluster, n)).collect(),
    }
}

/// A Lua function `dump(v)` that writes a value with its keys sorted and
/// each leaf's type (`{a=number:1,b=string:x}`): what two values compared
/// field by field look like. Prepend it to an eval's code.
pub const LUA_DUMP: &str = r#"
    local function dump(v)
        if type(v) ~= "table" then return type(v) .. ":" .. tostring(v) end
        local keys = {}
        for k in pairs(v) do keys[#keys + 1] = tostring(k) end
        table.sort(keys)
        local out = {}
        for _, k in ipairs(keys) do
            local x = v[k]
            if x == nil then x = v[tonumber(k)] end
            out[#out + 1] = k .. "=" .. dump(x)
        end
        return "{" .. table.concat(out, ",") .. "}"
    end
"#;
