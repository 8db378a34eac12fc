//! What the bench workloads share: the workload names, a run's spec and
//! result, where the bench scripts are, and a process's CPU time. (Kept
//! apart from `bench` so the workload modules need not import each other.)

use std::path::{Path, PathBuf};

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Calls echoed by a node in another process.
    Call,
    /// One-way sends counted by a node in another process.
    Send,
    /// Calls between two nodes of this process.
    LocalCall,
    /// Hot reload: from a file write to the new code answering.
    Reload,
    /// The Gate's memory per idle verified client (`benchgate`).
    GateIdle,
    /// Clients' calls through a Gate to a Hall (`benchgate`), interleaved
    /// with `call` at the same concurrency.
    GateRtt,
    /// The raw loopback limit: echoed frames, no Lua (`benchraw`).
    Raw,
}

impl Workload {
    /// The name used on the command line and in RESULT lines.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Call => "call",
            Workload::Send => "send",
            Workload::LocalCall => "local-call",
            Workload::Reload => "reload",
            Workload::GateIdle => "gate-idle",
            Workload::GateRtt => "gate-rtt",
            Workload::Raw => "raw",
        }
    }
}

/// Parameters of one run.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// The workload.
    pub workload: Workload,
    /// Concurrent caller coroutines.
    pub conc: u32,
    /// Payload bytes (0: a small string and an integer).
    pub payload: usize,
    /// Measured seconds (after 0.5 s of warm-up).
    pub secs: f64,
    /// Pin both nodes to this CPU (a deployment choice that avoids
    /// cross-core wake-ups; reported in the RESULT line).
    pub pin: Option<usize>,
    /// local-call: worker threads the nodes share (0: a thread per node).
    pub threads: usize,
    /// local-call: the nodes on different workers (else both on worker 0).
    pub spread: bool,
    /// Game clients (gate-idle, gate-rtt).
    pub clients: u32,
    /// Clients speak WebSocket instead of TCP (gate-idle, gate-rtt).
    pub ws: bool,
    /// call, send: the two nodes reach each other through a Router node
    /// (`topology = "router"`, a third process).
    pub router: bool,
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct BenchResult {
    /// Messages (calls or sends) per second.
    pub rate: f64,
    /// Median call latency in microseconds (0 for sends).
    pub p50_us: u64,
    /// 99th percentile call latency in microseconds (0 for sends).
    pub p99_us: u64,
    /// CPU used by both nodes, in percent of one core.
    pub cpu_pct: f64,
}

impl BenchResult {
    /// The RESULT line of the benchmark issue.
    pub fn line(&self, spec: &BenchSpec) -> String {
        format!(
            "RESULT workload={}{}{}{} conc={} payload={} rate={:.0} p50_us={} p99_us={} cpu_pct={:.0}",
            spec.workload.name(),
            if spec.router { " topology=router" } else { "" },
            spec.pin.map(|c| format!(" pin={c}")).unwrap_or_default(),
            if spec.spread && spec.threads > 1 {
                " spread=yes"
            } else {
                ""
            },
            spec.conc,
            spec.payload,
            self.rate,
            self.p50_us,
            self.p99_us,
            self.cpu_pct
        )
    }
}

pub(crate) fn bench_scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bench/scripts")
}

/// CPU seconds used so far by process `pid` (user + system).
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}
