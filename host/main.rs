//! The `luahost` command: thin argument parsing over the library.

mod bench;
mod benchcompare;
mod benchdb;
mod benchgate;
mod benchraw;
mod benchspec;
mod bot;
mod opscli;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use luahost::cluster::LocalCluster;
use luahost::ClusterConfig;

#[derive(Parser)]
#[command(
    name = "luahost",
    version,
    about = "Runs Lua game-server logic as a cluster of typed nodes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every node of a cluster in this one process (development).
    ///
    /// Each node gets its own Lua state; they run on a few worker threads
    /// (--threads) and talk through in-memory pipes (the same protocol as
    /// TCP), and listen on the cluster file's addresses for nodes running
    /// elsewhere. Ctrl-C or SIGTERM stops
    /// them gracefully (base.onStop handlers run); a second one at once.
    Up {
        /// A cluster file, or a folder holding cluster.lua (e.g. examples/friends).
        cluster: PathBuf,
        /// Run only these nodes (repeatable); default all.
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// Do not hot-reload scripts when they change.
        #[arg(long)]
        no_watch: bool,
        /// Worker threads the nodes share (default: the number of cores; a
        /// node's `thread = k` in the cluster file places it on worker k,
        /// else they are dealt out in name order); 0: a thread per node.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Run one node of a cluster as this process (production).
    ///
    /// Ctrl-C or SIGTERM stops it gracefully (calls in flight finish,
    /// base.onStop handlers run); a second one at once.
    Run {
        /// The cluster file (or folder holding cluster.lua).
        #[arg(long)]
        cluster: PathBuf,
        /// The node's name in the cluster file, e.g. hall_1.
        #[arg(long)]
        node: String,
        /// Hot-reload scripts when they change (SIGHUP always reloads).
        #[arg(long)]
        watch: bool,
        /// The node's server type, when the cluster file does not list it
        /// (ZooKeeper clusters need not).
        #[arg(long = "type", requires = "addr")]
        stype: Option<String>,
        /// The node's listen address, with --type.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// The node's server id, with --type (default: derived from the name).
        #[arg(long)]
        id: Option<u32>,
    },
    /// Run a machine's node processes (operations, seed 004).
    ///
    /// Serves `luahost ctl` on --listen; starts, stops, restarts and
    /// reloads the processes the store's world configures for --machine
    /// (refused if it lists none); restarts a crashed one with backoff;
    /// adopts the ones still running from an earlier daemon. Commands for
    /// another machine go to that machine's daemon. While the store has no
    /// user, the first daemon prints a one-time bootstrap token that adds
    /// the first admin. Stopping the daemon leaves its processes running.
    Daemon {
        /// A folder, or zk://host:port[,host:port]/root (ZooKeeper; digest
        /// credentials from LUAHOST_ZK_AUTH=user:password).
        #[arg(long)]
        store: String,
        /// This machine's ip as the world lists it.
        #[arg(long)]
        machine: String,
        /// Where ctl connects.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Where the processes' output goes (<name>.log).
        #[arg(long, default_value = "logs")]
        logs: PathBuf,
        /// Load this world file (JSON: {"regions": {region: {ip: [{name, cluster}]}}})
        /// into the store first.
        #[arg(long)]
        world: Option<PathBuf>,
        /// Serve Prometheus metrics (GET /metrics: luahost_daemon_*) on
        /// this address.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Operate the cluster through any daemon (operations, seed 004).
    ///
    /// Logs in as --user (password from LUAHOST_PASSWORD or a prompt; it
    /// never crosses the wire) or with --bootstrap TOKEN (only to add the
    /// first admin). Every command is checked against the user's role
    /// (viewer: list, top; operator: start, stop, restart, kill, reload;
    /// admin: user, audit) and written to the audit log.
    Ctl {
        /// A daemon's ctl address.
        #[arg(long)]
        daemon: String,
        /// The user to log in as.
        #[arg(long)]
        user: Option<String>,
        /// The bootstrap token a first daemon printed (or LUAHOST_BOOTSTRAP).
        #[arg(long)]
        bootstrap: Option<String>,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: opscli::CtlCmd,
    },
    /// Write LuaLS annotation files (---@meta) for the schema.
    ///
    /// Runs rpcdef.init on the schema file as a node would (so a schema
    /// error is reported the same way) and writes, into --out:
    /// luahost_types.lua (the structs), luahost_server.lua (stubs for node
    /// scripts: HallFriendMgrStub for fm:hall(sid), PlayerClient for
    /// player.client, ...) and luahost_client.lua (what a game client calls
    /// and implements, with client ids and the ClientDigi).
    Annotate {
        /// The schema file.
        #[arg(long, default_value = "scripts/entitydef.lua")]
        entitydef: PathBuf,
        /// The folder to write to (created if missing).
        #[arg(long, default_value = "annotations")]
        out: PathBuf,
    },
    /// Measure throughput and latency on the real protocol.
    ///
    /// Workloads:
    ///   call        calls echoed by a node in another process: ("hello", 12345),
    ///               or --payload bytes each way
    ///   send        one-way sends counted by a node in another process; a
    ///               call every 10,000 sends checks that every one arrived
    ///   local-call  calls between two nodes of this one process
    ///   reload      20 edits of a handler module; p50_us/p99_us are the median
    ///               and max time from the file write to the new code answering
    ///   gate-idle   --clients idle verified game clients (another process) on a
    ///               Gate process: its VmRSS growth per client
    ///               RESULT workload=gate-idle clients=N connected=C bytes_per_client=B ...
    ///   gate-rtt    --clients game clients (another process) each keeping one
    ///               echo call in flight through a Gate to a Hall, then `call`
    ///               with --conc = --clients, interleaved per run:
    ///               RESULT workload=gate-rtt transport=tcp|ws clients=N rate=R p50_us=P p99_us=Q ...
    ///               RESULT workload=gate-vs-call ratio=<gate rate / call rate> ...
    ///   raw         the loopback limit with no Lua and no MessagePack: an echo
    ///               server and a client process (one thread each) speaking
    ///               the node frames, --conc requests in flight on one TCP
    ///               connection, --payload bytes of data (0: 16)
    ///   compare     interleaved rounds (--rounds) of call against raw at 1 and
    ///               100 callers and, with --skynet FILE, of local-call 1/100,
    ///               send and call against skynet's figures in FILE; then per pair
    ///               RESULT workload=<w> conc=<n> ratio=<luahost/reference>
    ///                 luahost=<rate> reference=<rate> ref=raw|skynet goal=<g> met=yes|no
    ///               (docs/performance.md, examples/bench/vs-skynet.sh)
    ///
    /// Prints one line per run:
    /// RESULT workload=call conc=1 payload=0 rate=<per s> p50_us=<n> p99_us=<n> cpu_pct=<both nodes>
    /// Build with --release for meaningful figures.
    #[command(verbatim_doc_comment)]
    Bench {
        /// call, send, local-call, reload, gate-idle, gate-rtt, raw, compare or db.
        #[arg(value_parser = ["call", "send", "local-call", "reload", "gate-idle", "gate-rtt", "raw", "compare", "db"])]
        workload: String,
        /// Concurrent caller coroutines.
        #[arg(long, default_value_t = 1)]
        conc: u32,
        /// Payload bytes each way (0: a short string and an integer).
        #[arg(long, default_value_t = 0)]
        payload: usize,
        /// Measured seconds per run (after 0.5 s of warm-up).
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        /// Runs; with more than one a MEDIAN line follows.
        #[arg(long, default_value_t = 1)]
        runs: u32,
        /// Pin both nodes to this CPU (avoids cross-core wake-ups).
        #[arg(long)]
        pin: Option<usize>,
        /// local-call: run the two nodes on this many worker threads as
        /// under `up`, both on worker 0 (as `thread = 0` on both places
        /// nodes that talk a lot); default 0: a thread per node (the
        /// figures before worker threads).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// local-call with --threads 2 or more: the two nodes on workers 0
        /// and 1, as `up` spreads nodes that have no `thread =` (messages
        /// cross workers: the hand-off of net::handoff)
        #[arg(long)]
        spread: bool,
        /// Game clients (gate-idle, gate-rtt); capped by the open-file limit.
        #[arg(long, default_value_t = 1000)]
        clients: u32,
        /// Clients speak WebSocket (gate-idle, gate-rtt).
        #[arg(long)]
        ws: bool,
        /// Interleaved rounds (compare).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Skynet's figures measured in the same session (compare).
        #[arg(long)]
        skynet: Option<PathBuf>,
        /// db: measure PostgreSQL too, with these connection parameters
        /// ("host=... user=... dbname=..."; password from LUAHOST_PG_PASSWORD).
        #[arg(long)]
        postgres: Option<String>,
        /// call / send: "router" measures through one Router node and in a
        /// mesh, side by side, and prints the ratio.
        #[arg(long, value_parser = ["mesh", "router"], default_value = "mesh")]
        topology: String,
    },
    /// A peer process of `bench raw` (internal).
    #[command(hide = true)]
    BenchRawPeer {
        #[arg(long)]
        serve: bool,
        #[arg(long)]
        connect: Option<String>,
        #[arg(long, default_value_t = 1)]
        conc: u32,
        #[arg(long, default_value_t = 0)]
        payload: usize,
        #[arg(long, default_value_t = 1.0)]
        secs: f64,
    },
    /// The client process of `bench gate-idle` / `gate-rtt` (internal).
    #[command(hide = true)]
    BenchClient {
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long)]
        gate: String,
        #[arg(long)]
        ws: bool,
        #[arg(long)]
        mode: String,
        #[arg(long)]
        clients: u32,
        #[arg(long)]
        secs: f64,
    },
    /// Drive a Gate with many game clients, each run by a Lua script.
    ///
    /// A test and load tool: it signs each account's token (<prefix><i>)
    /// with the key of the cluster secret, so it needs the cluster file (a
    /// real client gets its token from a login server). The schema (method
    /// ids, ClientDigi, types) comes from entitydef.lua in the cluster's
    /// script roots. Each client has its own Lua state; the script defines
    /// function bot.run(client) (README.md, "Bots"); without --script each
    /// client calls echo("bot", i) in a loop.
    ///
    /// Prints one line at the end:
    /// RESULT workload=bot clients=N connected=C failed=F msgs=M rate=R p50_us=P p99_us=P resumes=0 kicks=K
    #[command(verbatim_doc_comment)]
    Bot {
        /// The Gate's client address (ip:port of its tcp or ws listener).
        #[arg(long)]
        gate: String,
        /// Connect over WebSocket (ws://ADDR/, wss:// with --ca).
        #[arg(long)]
        ws: bool,
        /// Concurrent clients (1..=2000).
        #[arg(long, default_value_t = 10)]
        clients: u32,
        /// How long the scripts run, in seconds.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// The Lua script defining bot.run(client); default: an echo loop.
        #[arg(long)]
        script: Option<PathBuf>,
        /// The cluster file (its secret signs the tokens; its scripts hold
        /// entitydef.lua).
        #[arg(long)]
        cluster: PathBuf,
        /// Accounts are <prefix><first + index>.
        #[arg(long, default_value = "bot")]
        account_prefix: String,
        /// The number of the first account (`--account-prefix "" --first-account 1001`
        /// gives accounts 1001, 1002, ...).
        #[arg(long, default_value_t = 0)]
        first_account: u32,
        /// Use TLS, trusting this CA certificate (PEM).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The name the Gate's certificate must carry, with --ca.
        #[arg(long, requires = "ca", default_value = "localhost")]
        server_name: String,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LUAHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Every line a node logs carries the node's name (its span), whichever
    // thread runs it; other lines the thread's name.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .event_format(NodeLines)
        .init();
}

/// `<time> <LEVEL> <node> <message>`.
struct NodeLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for NodeLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime;
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut w)?;
        write!(w, " {:>5} ", event.metadata().level())?;
        let mut who = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if span.name() == "node" {
                    let ext = span.extensions();
                    if let Some(f) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                        who = Some(f.fields.trim_start_matches("name=").to_string());
                    }
                }
            }
        }
        let who = who.unwrap_or_else(|| std::thread::current().name().unwrap_or("-").to_string());
        write!(w, "{who} ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// A channel of events and what to do with each.
type Events<'a> = Option<(
    tokio::sync::mpsc::UnboundedReceiver<PathBuf>,
    &'a mut dyn FnMut(PathBuf),
)>;

/// Serves signals until the nodes have stopped. Calls `on_hup` for every
/// SIGHUP and `on_event` for every message of `events`; the first Ctrl-C or
/// SIGTERM, or `failed()` becoming true (checked every 200 ms), calls
/// `stop()` (a graceful stop); another Ctrl-C or SIGTERM calls it again (at
/// once). Returns when `stopped()` is true.
/// The process's signal handlers, installed before any node starts: a
/// Ctrl-C, SIGTERM or SIGHUP that arrives while nodes are starting is
/// queued for [`serve_signals`] instead of killing the process.
struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        let (term, hup, int) = rt.block_on(async {
            (
                signal(SignalKind::terminate()).expect("SIGTERM handler"),
                signal(SignalKind::hangup()).expect("SIGHUP handler"),
                signal(SignalKind::interrupt()).expect("SIGINT handler"),
            )
        });
        Signals { rt, term, hup, int }
    }
}

fn serve_signals(
    signals: Signals,
    on_hup: &dyn Fn(),
    events: Events<'_>,
    failed: &dyn Fn() -> bool,
    stop: &dyn Fn(),
    stopped: &dyn Fn() -> bool,
) {
    let Signals {
        rt,
        mut term,
        mut hup,
        mut int,
    } = signals;
    rt.block_on(async {
        let (mut rx, on_event) = match events {
            Some((rx, f)) => (Some(rx), Some(f)),
            None => (None, None),
        };
        let mut on_event = on_event;
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = tick.tick() => if failed() { break },
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = hup.recv() => on_hup(),
                ev = async { match rx.as_mut() { Some(r) => luahost::discovery::watch::next_burst(r).await, None => std::future::pending().await } } => {
                    match ev.and_then(|burst| burst.into_iter().next()) {
                        Some(ev) => {
                            if let Some(f) = on_event.as_mut() {
                                f(ev);
                            }
                        }
                        None => rx = None,
                    }
                }
            }
        }
        tracing::info!("stopping (Ctrl-C or SIGTERM again stops at once)");
        stop();
        let mut poll = tokio::time::interval(std::time::Duration::from_millis(20));
        let mut again = false;
        while !stopped() {
            tokio::select! {
                _ = poll.tick() => {}
                _ = int.recv(), if !again => again = true,
                _ = term.recv(), if !again => again = true,
            }
            if again {
                tracing::warn!("stopping at once");
                stop();
                again = false;
            }
        }
    });
}

/// Watches `file` (through its folder, so saves by rename are seen).
fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    // a Gate holds one socket per client: as many as the hard limit allows
    benchgate::raise_fd_limit();
    match cli.cmd {
        Cmd::Up {
            cluster,
            nodes,
            no_watch,
            threads,
        } => {
            let cfg = match ClusterConfig::load(&cluster) {
                Ok(c) => Arc::new(c),
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
            let pool = if threads == 0 {
                None
            } else {
                match luahost::runtime::Workers::new(threads) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::error!("cannot start {threads} worker threads: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            };
            let opts = luahost::NodeOptions {
                watch_scripts: !no_watch,
                pool,
                ..Default::default()
            };
            // before any node starts (see Signals)
            let signals = Signals::install();
            let c = match LocalCluster::start_opts(cfg, &nodes, opts) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(
                "cluster {} up: {} (Ctrl-C stops)",
                c.config.file.display(),
                c.names().join(", ")
            );
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let _watcher = luahost::discovery::watch::watch_file(&c.config.file, tx)
                .map_err(|e| tracing::warn!("{e}; edits of the cluster file are not followed"))
                .ok();
            let c = std::cell::RefCell::new(c);
            serve_signals(
                signals,
                &|| {},
                Some((rx, &mut |_: PathBuf| c.borrow_mut().follow())),
                &|| c.borrow().failure().is_some(),
                &|| c.borrow().stop(),
                &|| c.borrow().stopped(),
            );
            let c = c.into_inner();
            let failure = c.failure();
            c.shutdown();
            match failure {
                Some((node, why)) => {
                    tracing::error!("node {node} stopped: {why}");
                    ExitCode::FAILURE
                }
                None => ExitCode::SUCCESS,
            }
        }
        Cmd::Daemon {
            store,
            machine,
            listen,
            logs,
            world,
            metrics,
        } => opscli::daemon(store, machine, listen, logs, world, metrics),
        Cmd::Ctl {
            daemon,
            user,
            bootstrap,
            json,
            cmd,
        } => opscli::ctl(daemon, user, bootstrap, json, cmd),
        Cmd::Annotate { entitydef, out } => {
            let desc = match luahost::describe_entitydef(&entitydef) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match luahost::schema::annotate::write_files(&desc, &out) {
                Ok(paths) => {
                    for p in paths {
                        println!("{}", p.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!("{}: {e}", out.display());
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Bench {
            workload,
            conc,
            payload,
            secs,
            runs,
            pin,
            threads,
            spread,
            clients,
            ws,
            rounds,
            skynet,
            postgres,
            topology,
        } => {
            use bench::{BenchSpec, Workload};
            if workload == "db" {
                // (100 in flight unless --conc says otherwise: the figure)
                let conc = if conc <= 1 { 100 } else { conc };
                let spec = benchdb::DbSpec { conc, secs, postgres };
                return match benchdb::run(&spec) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("bench db failed: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            if workload == "compare" {
                let spec = benchcompare::CompareSpec { secs, rounds, skynet };
                return match benchcompare::run(&spec) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("bench compare failed: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            let workload = match workload.as_str() {
                "raw" => Workload::Raw,
                "call" => Workload::Call,
                "send" => Workload::Send,
                "reload" => Workload::Reload,
                "gate-idle" => Workload::GateIdle,
                "gate-rtt" => Workload::GateRtt,
                _ => Workload::LocalCall,
            };
            let spec = BenchSpec {
                workload,
                conc: conc.max(1),
                payload,
                secs,
                pin,
                threads,
                spread,
                clients: clients.max(1),
                ws,
                router: false,
            };
            if topology == "router" {
                return match bench::run_relay_vs_mesh(&spec, runs) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!("bench failed: {e}");
                        ExitCode::FAILURE
                    }
                };
            }
            match bench::run(&spec, runs) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("bench failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::BenchRawPeer {
            serve,
            connect,
            conc,
            payload,
            secs,
        } => {
            let spec = benchraw::PeerSpec {
                serve,
                connect,
                conc,
                payload,
                secs,
            };
            match benchraw::peer_process(&spec) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bench-raw-peer: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::BenchClient {
            cluster,
            gate,
            ws,
            mode,
            clients,
            secs,
        } => {
            let spec = benchgate::ClientSpec {
                cluster,
                gate,
                ws,
                mode,
                clients,
                secs,
            };
            match benchgate::client_process(&spec) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("bench-client: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Bot {
            gate,
            ws,
            clients,
            secs,
            script,
            cluster,
            account_prefix,
            first_account,
            ca,
            server_name,
        } => {
            let spec = bot::BotSpec {
                gate,
                ws,
                clients,
                secs,
                script,
                cluster,
                prefix: account_prefix,
                first: first_account,
                ca,
                server_name: Some(server_name),
            };
            match bot::run(&spec) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("bot: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Run {
            cluster,
            node,
            watch,
            stype,
            addr,
            id,
        } => {
            let mut cfg = match ClusterConfig::load(&cluster) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            if let (Some(stype), Some(addr)) = (stype, addr) {
                if let Err(e) = cfg.add_node(&node, &stype, addr, id) {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            }
            let cfg = Arc::new(cfg);
            let opts = luahost::NodeOptions {
                watch_scripts: watch,
                ..Default::default()
            };
            // before the node starts (see Signals)
            let signals = Signals::install();
            let h = match luahost::start_with(cfg, &node, opts) {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            // started by a daemon: the process keeps its own record
            let record = opscli::Record::start(h.probe());
            serve_signals(
                signals,
                &|| {
                    tracing::info!("SIGHUP: reloading scripts and cluster file");
                    h.reload_scripts();
                    h.reload_cluster();
                },
                None,
                &|| h.failure().is_some(),
                &|| h.stop(),
                &|| h.is_finished(),
            );
            let failure = h.failure();
            h.join();
            if let Some(r) = record {
                r.end(failure.is_none());
            }
            if let Some(why) = failure {
                tracing::error!("node {node} stopped: {why}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
    }
}
