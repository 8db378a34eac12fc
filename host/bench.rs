//! `luahost bench`: measured workloads on the real protocol.
//!
//! `call` and `send` start an echo node and a caller node as two `luahost run`
//! processes on 127.0.0.1; `local-call` runs both nodes in this process. The
//! load itself is ordinary luahost Lua (`examples/bench/scripts`): schema
//! stubs, `base.init`, coroutines, so the figures are what a game would see.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use luahost::cluster::LocalCluster;
use luahost::ClusterConfig;

pub(crate) use crate::benchspec::{bench_scripts, cpu_secs};
pub use crate::benchspec::{BenchResult, BenchSpec, Workload};

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn write_cluster(dir: &Path, router: bool) -> Result<PathBuf, String> {
    write_cluster_with(dir, &bench_scripts(), router)
}

fn write_cluster_from(dir: &Path, scripts: &Path) -> Result<PathBuf, String> {
    write_cluster_with(dir, scripts, false)
}

/// The bench cluster: echo_1 and caller_1, and with `router` a Router
/// node router_1 through which they talk (`topology = "router"`).
fn write_cluster_with(dir: &Path, scripts: &Path, router: bool) -> Result<PathBuf, String> {
    let scripts = scripts.to_path_buf();
    // all held until chosen, so no two nodes get the same port
    let held = [
        TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?,
        TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?,
        TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?,
    ];
    let mut ports = [0u16; 3];
    for (p, l) in ports.iter_mut().zip(&held) {
        *p = l.local_addr().map_err(|e| e.to_string())?.port();
    }
    drop(held);
    let (topology, router_node) = if router {
        (
            "  topology = \"router\",\n".to_string(),
            format!(
                "    router_1 = {{ type = \"Router\", id = 3, addr = \"127.0.0.1:{}\" }},\n",
                ports[2]
            ),
        )
    } else {
        (String::new(), String::new())
    };
    let text = format!(
        "return {{\n  secret = \"{}\",\n  call_timeout = 30,\n{topology}  scripts = {{ {:?} }},\n  nodes = {{\n    echo_1 = {{ type = \"Echo\", id = 1, addr = \"127.0.0.1:{}\" }},\n    caller_1 = {{ type = \"Caller\", id = 2, addr = \"127.0.0.1:{}\" }},\n{router_node}  }},\n}}\n",
        luahost::codec::auth::nonce().iter().map(|b| format!("{b:02x}")).collect::<String>(),
        scripts.display().to_string(),
        ports[0],
        ports[1],
    );
    let path = dir.join("cluster.lua");
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Pins this process (and the node processes it starts, which inherit it) to one CPU.
fn pin_to(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!("cannot pin to CPU {cpu}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn parse_data(line: &str) -> Option<(f64, u64, u64)> {
    let data = line.split("BENCHDATA ").nth(1)?;
    let mut rate = None;
    let (mut p50, mut p99) = (0, 0);
    for kv in data.split_whitespace() {
        match kv.split_once('=') {
            Some(("rate", v)) => rate = v.parse().ok(),
            Some(("p50_us", v)) => p50 = v.parse().unwrap_or(0),
            Some(("p99_us", v)) => p99 = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some((rate?, p50, p99))
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs one measurement.
///
/// # Errors
///
/// A message when the nodes could not start, the run did not finish in time,
/// or (for `send`) the receiver did not count every message.
pub fn run_once(spec: &BenchSpec) -> Result<BenchResult, String> {
    if spec.workload == Workload::Raw {
        return crate::benchraw::run_once(spec);
    }
    let dir = std::env::temp_dir().join(format!(
        "luahost-bench-{}-{}",
        std::process::id(),
        free_port().unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cluster = write_cluster(&dir, spec.router)?;
    let result = match spec.workload {
        Workload::Reload => run_reload(&dir),
        Workload::LocalCall => run_local(spec, &cluster),
        _ => run_processes(spec, &cluster),
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The caller node of an in-process bench cluster, once it sees the echo node.
fn caller_ready(c: &LocalCluster) -> Result<&luahost::runtime::NodeHandle, String> {
    let caller = c.node("caller_1").ok_or("no caller node")?;
    let ready = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        caller
            .eval("return #router.list(ServerType.Echo)", Duration::from_secs(5))
            .as_deref()
            == Ok("1")
    });
    if ready {
        Ok(caller)
    } else {
        Err("the echo node never came online".into())
    }
}

fn run_local(spec: &BenchSpec, cluster: &Path) -> Result<BenchResult, String> {
    let cfg = Arc::new(ClusterConfig::load(cluster).map_err(|e| e.to_string())?);
    let pool = match spec.threads {
        0 => None,
        n => Some(luahost::runtime::Workers::new(n).map_err(|e| e.to_string())?),
    };
    // both nodes on worker 0 (they talk a lot: what `thread = 0` on both
    // does under `up`), or with --spread on workers 0 and 1
    let mut cfg = (*cfg).clone();
    for (k, name) in cfg.nodes.keys().cloned().collect::<Vec<_>>().into_iter().enumerate() {
        cfg.threads.insert(name, if spec.spread { k } else { 0 });
    }
    let opts = luahost::NodeOptions {
        pool,
        ..Default::default()
    };
    let c = LocalCluster::start_opts(Arc::new(cfg), &[], opts).map_err(|e| e.to_string())?;
    let caller = caller_ready(&c)?;
    let me = std::process::id();
    let cpu0 = cpu_secs(me);
    let t0 = Instant::now();
    let out = caller
        .eval(
            &format!(
                "return bench.run('call', {}, {}, {})",
                spec.conc, spec.payload, spec.secs
            ),
            Duration::from_secs_f64(spec.secs + 60.0),
        )
        .map_err(|e| e.to_string())?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(me) - cpu0;
    c.shutdown();
    let (rate, p50_us, p99_us) =
        parse_data(&format!("BENCHDATA {out}")).ok_or_else(|| format!("bad bench output: {out}"))?;
    Ok(BenchResult {
        rate,
        p50_us,
        p99_us,
        cpu_pct: cpu / wall * 100.0,
    })
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// 20 edits of the echo handler module; for each, the time from the file
/// write until a call answers with the new code. rate = edits per second of
/// that latency (1/median), p50/p99 = median and max, in microseconds.
fn run_reload(dir: &Path) -> Result<BenchResult, String> {
    let scripts = dir.join("scripts");
    copy_dir(&bench_scripts(), &scripts).map_err(|e| e.to_string())?;
    let cluster = write_cluster_from(dir, &scripts)?;
    let cfg = Arc::new(ClusterConfig::load(&cluster).map_err(|e| e.to_string())?);
    let c = LocalCluster::start_opts(
        cfg,
        &[],
        luahost::runtime::NodeOptions {
            watch_scripts: true,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let caller = caller_ready(&c)?;
    let file = scripts.join("echo/bench_echo.lua");
    let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
    let probe =
        "local e = router.list(ServerType.Echo)[1] local _, n = base.global('Bench'):echo(e).hello('x', 0) return n";
    let mut samples = Vec::new();
    let cpu0 = cpu_secs(std::process::id());
    let t_all = Instant::now();
    for i in 1..=20 {
        let edited = text.replace("n + version", &format!("n + {i}"));
        // let the previous reload's events settle
        std::thread::sleep(Duration::from_millis(150));
        let t0 = Instant::now();
        std::fs::write(&file, edited).map_err(|e| e.to_string())?;
        loop {
            if caller.eval(probe, Duration::from_secs(5)).as_deref() == Ok(&i.to_string()) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!("edit {i} never took effect"));
            }
        }
        samples.push(t0.elapsed().as_micros() as u64);
    }
    let cpu = cpu_secs(std::process::id()) - cpu0;
    let wall = t_all.elapsed().as_secs_f64();
    c.shutdown();
    samples.sort_unstable();
    let median = samples[samples.len() / 2];
    Ok(BenchResult {
        rate: 1e6 / median.max(1) as f64,
        p50_us: median,
        p99_us: *samples.last().unwrap_or(&0),
        cpu_pct: cpu / wall * 100.0,
    })
}

fn run_processes(spec: &BenchSpec, cluster: &Path) -> Result<BenchResult, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let spawn = |node: &str, bench: Option<String>| -> Result<Child, String> {
        let mut cmd = Command::new(&exe);
        cmd.args(["run", "--cluster", &cluster.display().to_string(), "--node", node])
            .env("LUAHOST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(if bench.is_some() { Stdio::piped() } else { Stdio::null() });
        if let Some(b) = bench {
            cmd.env("LUAHOST_BENCH", b);
        }
        cmd.spawn().map_err(|e| format!("cannot start {}: {e}", exe.display()))
    };
    // killed when this function returns, whatever the outcome
    let router = match spec.router {
        true => Some(Kill(spawn("router_1", None)?)),
        false => None,
    };
    let echo = Kill(spawn("echo_1", None)?);
    let workload = if spec.workload == Workload::Send {
        "send"
    } else {
        "call"
    };
    let mut caller = Kill(spawn(
        "caller_1",
        Some(format!("{workload} {} {} {}", spec.conc, spec.payload, spec.secs)),
    )?);
    let mut pids = vec![echo.0.id(), caller.0.id()];
    pids.extend(router.as_ref().map(|r| r.0.id()));
    let stderr = caller.0.stderr.take().ok_or("no caller stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let now = Instant::now();
            if tx.send((now, line)).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs_f64(spec.secs + 60.0);
    let mut start: Option<(Instant, f64)> = None;
    let mut end: Option<(Instant, f64)> = None;
    let mut log_tail = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, line) = rx
            .recv_timeout(left)
            .map_err(|_| format!("the run did not finish; caller log:\n{}", log_tail.join("\n")))?;
        let cpu = || pids.iter().map(|p| cpu_secs(*p)).sum::<f64>();
        if line.contains("BENCH measure start") {
            start = Some((at, cpu()));
        } else if line.contains("BENCH measure end") {
            end = Some((at, cpu()));
        } else if line.contains("BENCHFAIL") || line.contains("ERROR") {
            return Err(line);
        } else if let Some((rate, p50_us, p99_us)) = parse_data(&line) {
            let (Some(s), Some(e)) = (start, end) else {
                return Err("measurement markers missing".into());
            };
            let wall = e.0.duration_since(s.0).as_secs_f64().max(1e-3);
            return Ok(BenchResult {
                rate,
                p50_us,
                p99_us,
                cpu_pct: (e.1 - s.1) / wall * 100.0,
            });
        }
        log_tail.push(line);
        if log_tail.len() > 40 {
            log_tail.remove(0);
        }
    }
}

/// Runs `runs` measurements, printing a RESULT line for each and, when there
/// are several, a MEDIAN line (median of each figure).
///
/// # Errors
///
/// The first failed run's message.
pub fn run(spec: &BenchSpec, runs: u32) -> Result<Vec<BenchResult>, String> {
    if let Some(cpu) = spec.pin {
        pin_to(cpu)?;
    }
    match spec.workload {
        Workload::GateIdle => {
            for _ in 0..runs.max(1) {
                println!("{}", crate::benchgate::run_idle(spec.clients, spec.ws)?);
            }
            return Ok(Vec::new());
        }
        Workload::GateRtt => return run_gate_rtt(spec, runs),
        _ => {}
    }
    let mut results = Vec::new();
    for _ in 0..runs.max(1) {
        let r = run_once(spec)?;
        println!("{}", r.line(spec));
        results.push(r);
    }
    if results.len() > 1 {
        let med = |f: &dyn Fn(&BenchResult) -> f64| {
            let mut v: Vec<f64> = results.iter().map(f).collect();
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let m = BenchResult {
            rate: med(&|r| r.rate),
            p50_us: med(&|r| r.p50_us as f64) as u64,
            p99_us: med(&|r| r.p99_us as f64) as u64,
            cpu_pct: med(&|r| r.cpu_pct),
        };
        println!("MEDIAN {}", m.line(spec).trim_start_matches("RESULT "));
    }
    Ok(results)
}

/// Goal of the relay: at least this share of the mesh's rate (issue 13).
const RELAY_GOAL: f64 = 0.6;

/// `call` or `send` in a mesh and through one Router, interleaved run by
/// run (RESULT lines of each), then the ratio of the median rates
/// (`RESULT workload=relay-vs-mesh`). CPU figures of the relayed runs count
/// the Router's process too.
///
/// # Errors
///
/// The first failed run's message.
pub fn run_relay_vs_mesh(spec: &BenchSpec, runs: u32) -> Result<(), String> {
    if !matches!(spec.workload, Workload::Call | Workload::Send) {
        return Err("--topology router is for the call and send workloads".into());
    }
    if let Some(cpu) = spec.pin {
        pin_to(cpu)?;
    }
    let relayed = BenchSpec {
        router: true,
        ..spec.clone()
    };
    let (mut mesh, mut relay) = (Vec::new(), Vec::new());
    for _ in 0..runs.max(1) {
        let m = run_once(spec)?;
        println!("{}", m.line(spec));
        mesh.push(m.rate);
        let r = run_once(&relayed)?;
        println!("{}", r.line(&relayed));
        relay.push(r.rate);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (m, r) = (med(&mut mesh), med(&mut relay));
    let ratio = r / m.max(1e-9);
    println!(
        "RESULT workload=relay-vs-mesh of={} conc={} ratio={ratio:.2} mesh_rate={m:.0} router_rate={r:.0} goal={RELAY_GOAL} met={}",
        spec.workload.name(),
        spec.conc,
        if ratio >= RELAY_GOAL { "yes" } else { "no" }
    );
    Ok(())
}

/// gate-rtt and `call` at the same concurrency, interleaved run by run;
/// then the ratio of the median rates.
fn run_gate_rtt(spec: &BenchSpec, runs: u32) -> Result<Vec<BenchResult>, String> {
    let call = BenchSpec {
        workload: Workload::Call,
        conc: spec.clients,
        ..spec.clone()
    };
    let (mut gate_rates, mut call_rates) = (Vec::new(), Vec::new());
    let mut results = Vec::new();
    for _ in 0..runs.max(1) {
        let g = crate::benchgate::run_rtt(spec.clients, spec.ws, spec.secs)?;
        println!("{}", g.line);
        gate_rates.push(g.rate);
        let c = run_once(&call)?;
        println!("{}", c.line(&call));
        call_rates.push(c.rate);
        results.push(c);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (g, c) = (med(&mut gate_rates), med(&mut call_rates));
    println!(
        "RESULT workload=gate-vs-call ratio={:.2} gate_rate={g:.0} call_rate={c:.0}",
        g / c.max(1e-9)
    );
    Ok(results)
}
