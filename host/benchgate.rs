//! `luahost bench gate-idle` and `luahost bench gate-rtt`: game clients
//! through a Gate.
//!
//! A Gate node and a Hall node run as two `luahost run` processes (so the
//! Gate's memory is the Gate's alone); the clients run in a third process,
//! this binary's hidden `bench-client` mode, on a multi-thread tokio runtime
//! with the Rust client library (`luahost::client`). The schema is
//! `examples/bench/scripts` (a Player entity on the Hall with an exposed
//! `echo`).
//!
//! The parent and the client process talk over the child's stdin/stdout,
//! one line each way at a time:
//! - child: `PROBED` once one probe client got through (the Gate and the
//!   Hall are up); parent: `GO` (for gate-idle, after reading the Gate's RSS);
//! - child: `READY connected=C failed=F` once every client verified;
//! - gate-rtt: child: `RTTDATA rate=R p50_us=P p99_us=Q count=N errors=E`;
//! - gate-idle: the child keeps its clients until its stdin closes.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use luahost::client::{Client, ClientError, Login, Target};
use luahost::codec::mpack;
use luahost::codec::token::{self, TokenKey};
use luahost::ClusterConfig;

/// Longest a client process lives, whatever happens (a bound on every loop).
const CHILD_MAX: Duration = Duration::from_secs(600);
/// Clients connecting at once.
const CONNECTING: usize = 256;
/// Warm-up of gate-rtt before measuring.
const WARM: f64 = 0.5;

/// Raises this process's soft limit of open files to its hard limit;
/// returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write a plain struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let want = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                r.rlim_cur = r.rlim_max;
            }
        }
        r.rlim_cur as u64
    }
}

/// The resident memory of process `pid` in bytes (VmRSS).
fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn port() -> Result<(TcpListener, u16), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let p = l.local_addr().map_err(|e| e.to_string())?.port();
    Ok((l, p))
}

/// The Gate + Hall cluster file; returns it and the Gate's tcp and ws
/// client addresses.
fn write_cluster(dir: &Path, scripts: &Path) -> Result<(PathBuf, String, String), String> {
    // all held until chosen, so no two get the same port
    let held: Vec<(TcpListener, u16)> = (0..4).map(|_| port()).collect::<Result<_, _>>()?;
    let p: Vec<u16> = held.iter().map(|h| h.1).collect();
    drop(held);
    let (tcp, ws) = (format!("127.0.0.1:{}", p[2]), format!("127.0.0.1:{}", p[3]));
    let text = format!(
        "return {{\n  secret = \"{}\",\n  call_timeout = 30,\n  scripts = {{ {:?} }},\n  nodes = {{\n    gate_1 = {{ type = \"Gate\", id = 1, addr = \"127.0.0.1:{}\",\n      gate = {{ tcp = \"{tcp}\", ws = \"{ws}\", max_verifying = 100000, max_verifying_per_ip = 100000, rate = 1000000, burst = 1000000, heartbeat = 30 }} }},\n    hall_1 = {{ type = \"Hall\", id = 2, addr = \"127.0.0.1:{}\" }},\n  }},\n}}\n",
        luahost::codec::auth::nonce().iter().map(|b| format!("{b:02x}")).collect::<String>(),
        scripts.display().to_string(),
        p[0],
        p[1],
    );
    let path = dir.join("cluster.lua");
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((path, tcp, ws))
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Gate and Hall processes and the client process of one run.
struct Rig {
    dir: PathBuf,
    gate: Kill,
    hall: Kill,
    client: Kill,
    to_client: Option<ChildStdin>,
    from_client: Receiver<String>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.to_client = None;
        // the client process goes first, then the nodes (fields drop after)
        let _ = self.client.0.kill();
        let _ = self.client.0.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    fn start(mode: &str, clients: u32, ws: bool, secs: f64) -> Result<Rig, String> {
        let dir = std::env::temp_dir().join(format!("luahost-benchgate-{}-{}", std::process::id(), port()?.1));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (cluster, tcp, wsaddr) = write_cluster(&dir, &super::benchspec::bench_scripts())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let node = |name: &str| -> Result<Kill, String> {
            let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
            Command::new(&exe)
                .args(["run", "--cluster", &cluster.display().to_string(), "--node", name])
                .env("LUAHOST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map(Kill)
                .map_err(|e| format!("cannot start {}: {e}", exe.display()))
        };
        let hall = node("hall_1")?;
        let gate = node("gate_1")?;
        let mut child = Command::new(&exe)
            .args([
                "bench-client",
                "--cluster",
                &cluster.display().to_string(),
                "--gate",
                if ws { &wsaddr } else { &tcp },
                "--mode",
                mode,
                "--clients",
                &clients.to_string(),
                "--secs",
                &secs.to_string(),
            ])
            .args(if ws { &["--ws"][..] } else { &[][..] })
            .env("LUAHOST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the client process: {e}"))?;
        let out = child.stdout.take().ok_or("no client stdout")?;
        let to_client = child.stdin.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Rig {
            dir,
            gate,
            hall,
            client: Kill(child),
            to_client,
            from_client: rx,
        })
    }

    /// The next line of the client process that starts with `prefix`.
    fn expect(&self, prefix: &str, within: Duration) -> Result<String, String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_client.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(l) if l.starts_with("FAIL") => return Err(format!("{l}{}", self.logs())),
                Ok(_) => {}
                Err(_) => return Err(format!("the client process never said {prefix}{}", self.logs())),
            }
        }
    }

    fn say(&mut self, line: &str) -> Result<(), String> {
        let w = self.to_client.as_mut().ok_or("client stdin closed")?;
        writeln!(w, "{line}").and_then(|_| w.flush()).map_err(|e| e.to_string())
    }

    /// The tails of the nodes' logs, for an error message.
    fn logs(&self) -> String {
        let mut s = String::new();
        for n in ["gate_1", "hall_1"] {
            let text = std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            if !tail.is_empty() {
                s.push_str(&format!("\n{n} log:\n"));
                for l in tail.into_iter().rev() {
                    s.push_str(l);
                    s.push('\n');
                }
            }
        }
        s
    }
}

fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
}

/// `bench gate-idle`: the Gate's memory per idle verified client.
pub fn run_idle(clients: u32, ws: bool) -> Result<String, String> {
    let limit = raise_fd_limit();
    // each process holds one fd per client, plus its own (listeners, node
    // links, files)
    let allowed = limit.saturating_sub(200).min(u32::MAX as u64) as u32;
    let n = clients.min(allowed).max(1);
    if n < clients {
        println!("NOTE the open-file limit ({limit}) allows {n} clients, not {clients}");
    }
    let mut rig = Rig::start("idle", n, ws, 0.0)?;
    rig.expect("PROBED", Duration::from_secs(60))?;
    // the Gate at rest (a moment to settle after the probe)
    std::thread::sleep(Duration::from_millis(500));
    let gate_pid = rig.gate.0.id();
    let before = rss_bytes(gate_pid).ok_or("cannot read the Gate's VmRSS")?;
    rig.say("GO")?;
    let ready = rig.expect("READY", Duration::from_secs(120 + n as u64 / 50))?;
    let connected: u64 = field(&ready, "connected").unwrap_or(0);
    // idle: no message but the heartbeats (every 30 s here)
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_bytes(gate_pid).ok_or("cannot read the Gate's VmRSS")?;
    let per = after.saturating_sub(before) / connected.max(1);
    Ok(format!(
        "RESULT workload=gate-idle transport={} clients={n} connected={connected} bytes_per_client={per} gate_rss_before_kib={} gate_rss_after_kib={}",
        if ws { "ws" } else { "tcp" },
        before / 1024,
        after / 1024
    ))
}

/// The figures of one gate-rtt run.
pub struct Rtt {
    pub line: String,
    pub rate: f64,
}

/// `bench gate-rtt`: `clients` clients each keeping one echo call in flight
/// through the Gate to the Hall, for `secs`.
pub fn run_rtt(clients: u32, ws: bool, secs: f64) -> Result<Rtt, String> {
    let limit = raise_fd_limit();
    let n = clients.min(limit.saturating_sub(200) as u32).max(1);
    let mut rig = Rig::start("rtt", n, ws, secs)?;
    rig.expect("PROBED", Duration::from_secs(60))?;
    eprintln!("bench: gate pid {}", rig.gate.0.id());
    rig.say("GO")?;
    let ready = rig.expect("READY", Duration::from_secs(120 + n as u64 / 50))?;
    let connected: u64 = field(&ready, "connected").unwrap_or(0);
    // CPU of the Gate, the Hall and the client process over the run
    let pids = [rig.gate.0.id(), rig.hall.0.id(), rig.client.0.id()];
    let cpu = || pids.map(super::benchspec::cpu_secs);
    let (t0, cpu0) = (Instant::now(), cpu());
    let data = rig.expect("RTTDATA", Duration::from_secs_f64(secs + 60.0))?;
    let (wall, cpu1) = (t0.elapsed().as_secs_f64().max(1e-3), cpu());
    let pct = |i: usize| (cpu1[i] - cpu0[i]) / wall * 100.0;
    let rate: f64 = field(&data, "rate").ok_or_else(|| format!("bad client output: {data}"))?;
    let p50: u64 = field(&data, "p50_us").unwrap_or(0);
    let p99: u64 = field(&data, "p99_us").unwrap_or(0);
    let errors: u64 = field(&data, "errors").unwrap_or(0);
    Ok(Rtt {
        line: format!(
            "RESULT workload=gate-rtt transport={} clients={n} connected={connected} rate={rate:.0} p50_us={p50} p99_us={p99} errors={errors} cpu_pct_gate={:.0} cpu_pct_hall={:.0} cpu_pct_clients={:.0}",
            if ws { "ws" } else { "tcp" },
            pct(0),
            pct(1),
            pct(2),
        ),
        rate,
    })
}

// ---------------------------------------------------------------------------
// The client process (`luahost bench-client`, hidden)

/// What the client process was asked to do.
pub struct ClientSpec {
    pub cluster: PathBuf,
    pub gate: String,
    pub ws: bool,
    pub mode: String,
    pub clients: u32,
    pub secs: f64,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The client process: see the module's comment for what it says.
pub fn client_process(spec: &ClientSpec) -> Result<(), String> {
    raise_fd_limit();
    let t_start = Instant::now();
    let cfg = ClusterConfig::load(&spec.cluster).map_err(|e| e.to_string())?;
    let entitydef = cfg
        .scripts
        .iter()
        .map(|d| d.join("entitydef.lua"))
        .find(|p| p.is_file())
        .ok_or("no entitydef.lua in the cluster's script roots")?;
    let schema = luahost::describe_entitydef(&entitydef)?;
    let echo = schema
        .methods
        .iter()
        .find(|m| m.name == "echo" && m.client)
        .ok_or("no exposed echo in the schema")?
        .cid;
    let target = if spec.ws {
        Target::Ws(format!("ws://{}/", spec.gate))
    } else {
        Target::Tcp(spec.gate.parse().map_err(|e| format!("--gate {}: {e}", spec.gate))?)
    };
    let key = Arc::new(TokenKey::from_secret(&cfg.secret));
    let digi = schema.client_digest;
    let login = move |account: String| {
        let mut nonce = [0u8; token::NONCE_LEN];
        let _ = getrandom::fill(&mut nonce);
        Login {
            token: token::make(&key, &account, now_unix() + 3600, nonce),
            account,
            client_digi: digi,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    // stdin lines, on a thread (EOF: the parent is done)
    let (in_tx, mut in_rx) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if in_tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = in_tx.send(None);
    });
    let say = |s: &str| {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    };
    let deadline = t_start + CHILD_MAX;
    rt.block_on(async {
        // the probe: the Gate listens and a Hall takes clients
        let probe_until = Instant::now() + Duration::from_secs(50);
        loop {
            let l = login("probe".into());
            match tokio::time::timeout(Duration::from_secs(5), Client::connect(&target, None, &l, None)).await {
                Ok(Ok(_c)) => break,
                Ok(Err(e)) if Instant::now() > probe_until => return Err(format!("probe: {e}")),
                Err(_) if Instant::now() > probe_until => return Err("probe: timed out".into()),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        say("PROBED");
        match tokio::time::timeout_at(deadline.into(), in_rx.recv()).await {
            Ok(Some(Some(l))) if l == "GO" => {}
            _ => return Err("no GO from the parent".into()),
        }
        // connect every client, CONNECTING at a time
        let sem = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
        let first_error = Arc::new(Mutex::new(None::<String>));
        let tasks: Vec<_> = (0..spec.clients)
            .map(|i| {
                let (sem, target, first_error) = (sem.clone(), target.clone(), first_error.clone());
                let l = login(format!("c{i}"));
                tokio::spawn(async move {
                    let _p = sem.acquire().await.ok()?;
                    match tokio::time::timeout(Duration::from_secs(30), Client::connect(&target, None, &l, None)).await
                    {
                        Ok(Ok(c)) => Some(c),
                        Ok(Err(e)) => {
                            first_error.lock().unwrap().get_or_insert(e.to_string());
                            None
                        }
                        Err(_) => {
                            first_error.lock().unwrap().get_or_insert("connect timed out".into());
                            None
                        }
                    }
                })
            })
            .collect();
        let mut conns = Vec::with_capacity(tasks.len());
        for t in tasks {
            if let Ok(Some(c)) = t.await {
                conns.push(c);
            }
        }
        let failed = spec.clients as usize - conns.len();
        if let Some(e) = first_error.lock().unwrap().as_ref() {
            eprintln!("bench-client: {failed} clients failed; first error: {e}");
        }
        say(&format!("READY connected={} failed={failed}", conns.len()));
        if spec.mode == "idle" {
            // hold them until the parent is done (stdin closes)
            while let Ok(Some(Some(_))) = tokio::time::timeout_at(deadline.into(), in_rx.recv()).await {}
            return Ok(());
        }
        // rtt: each client keeps one echo call in flight
        let t0 = Instant::now();
        let (t_measure, t_end) = (
            t0 + Duration::from_secs_f64(WARM),
            t0 + Duration::from_secs_f64(WARM + spec.secs),
        );
        let errors = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let errors = errors.clone();
                tokio::spawn(async move {
                    let mut args = BytesMut::new();
                    mpack::put_str(&mut args, b"hello");
                    mpack::put_int(&mut args, i as i64);
                    let mut lat: Vec<u32> = Vec::new();
                    loop {
                        let t = Instant::now();
                        if t >= t_end {
                            break;
                        }
                        let r = tokio::time::timeout(Duration::from_secs(10), c.call_raw(echo, 2, &args)).await;
                        let done = Instant::now();
                        match r {
                            Ok(Ok((2, _))) => {
                                if t >= t_measure && done <= t_end {
                                    lat.push(done.duration_since(t).as_micros().min(u32::MAX as u128) as u32);
                                }
                            }
                            Ok(Err(ClientError::Closed)) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                        }
                    }
                    drop(c);
                    lat
                })
            })
            .collect();
        let mut lat = Vec::new();
        for t in tasks {
            if let Ok(v) = t.await {
                lat.extend(v);
            }
        }
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        say(&format!(
            "RTTDATA rate={:.0} p50_us={} p99_us={} count={} errors={}",
            lat.len() as f64 / spec.secs.max(1e-3),
            pct(0.5),
            pct(0.99),
            lat.len(),
            errors.load(Ordering::Relaxed)
        ));
        Ok(())
    })
    .inspect_err(|e| say(&format!("FAIL {e}")))
}
