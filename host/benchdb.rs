//! `luahost bench db`: saves and loads per second through DBProxy (a Lua
//! node calling the DB node, which runs them on its store) against the
//! same store driven directly from Rust, with the same number of
//! operations in flight; on SQLite (a file in a temporary folder, as the
//! DB node opens it by default: WAL, synchronous FULL) and, given
//! `--postgres "host=... dbname=..."` (password from LUAHOST_PG_PASSWORD),
//! on PostgreSQL. Prints a RESULT line per path (direct; dbproxy: from
//! another node, the usual case; dbproxy-on-db-node: Lua on the DB node
//! itself, no RPC) and a RATIO line per backend (direct / dbproxy from
//! another node: 1 is no overhead).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use luahost::cluster::LocalCluster;
use luahost::discovery::store::StoreConfig;
use luahost::store::{Save, Store};
use luahost::ClusterConfig;

/// Keys the operations go to (saves overwrite them; loads find them).
const KEYS: u64 = 1000;

/// Parameters of `bench db`.
#[derive(Debug, Clone)]
pub struct DbSpec {
    /// Operations in flight.
    pub conc: u32,
    /// Measured seconds per phase (saves, then loads).
    pub secs: f64,
    /// PostgreSQL connection parameters, to measure it too.
    pub postgres: Option<String>,
}

/// Saves and loads per second.
#[derive(Debug, Clone, Copy)]
struct Rates {
    saves: f64,
    loads: f64,
}

/// The MessagePack of a BenchRec `{ n = n, s = ... }` (what DBProxy stores).
fn record(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, 2).expect("vec");
    rmp::encode::write_uint(&mut out, n).expect("vec");
    rmp::encode::write_str(&mut out, "a bench record of a few dozen bytes").expect("vec");
    out
}

fn direct(store: &Store, spec: &DbSpec) -> Result<Rates, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    let phase = |save: bool| -> Result<f64, String> {
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs_f64(spec.secs);
        rt.block_on(async {
            let tasks: Vec<_> = (0..spec.conc as u64)
                .map(|w| {
                    let (store, done, failed) = (store.clone(), done.clone(), failed.clone());
                    let conc = spec.conc as u64;
                    tokio::spawn(async move {
                        let mut i = w;
                        while Instant::now() < end {
                            i += conc;
                            let key = (i % KEYS) as i64;
                            let ok = if save {
                                store.save(Save::new("bench", key, record(i))).await.is_ok()
                            } else {
                                store.load("bench", key).await.is_ok()
                            };
                            let c = if ok { &done } else { &failed };
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
        });
        let failed = failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(format!("{failed} direct operations failed"));
        }
        Ok(done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64())
    };
    Ok(Rates {
        saves: phase(true)?,
        loads: phase(false)?,
    })
}

/// DBProxy's rates from another node (caller_1), then on the DB node
/// itself (no RPC).
fn through_dbproxy(dir: &Path, store_entry: &str, spec: &DbSpec) -> Result<(Rates, Rates), String> {
    let held: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let port = |i: usize| held[i].local_addr().map(|a| a.port()).unwrap_or(0);
    let text = format!(
        "return {{\n  secret = \"{}\",\n  call_timeout = 30,\n  scripts = {{ {:?} }},\n  nodes = {{\n    db_1 = {{ type = \"DB\", id = 1, addr = \"127.0.0.1:{}\", {store_entry} }},\n    caller_1 = {{ type = \"Caller\", id = 2, addr = \"127.0.0.1:{}\" }},\n  }},\n}}\n",
        luahost::codec::auth::nonce().iter().map(|b| format!("{b:02x}")).collect::<String>(),
        crate::benchspec::bench_scripts().display().to_string(),
        port(0),
        port(1),
    );
    drop(held);
    let path = dir.join("cluster.lua");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let mut cfg = ClusterConfig::load(&path).map_err(|e| e.to_string())?;
    // both nodes on worker 0, as `thread = 0` on both places nodes that
    // talk a lot under `up` (what bench local-call does)
    for name in cfg.nodes.keys().cloned().collect::<Vec<_>>() {
        cfg.threads.insert(name, 0);
    }
    let cfg = Arc::new(cfg);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let opts = luahost::NodeOptions {
        pool: Some(luahost::runtime::Workers::new(threads).map_err(|e| e.to_string())?),
        ..Default::default()
    };
    let c = LocalCluster::start_opts(cfg, &[], opts).map_err(|e| e.to_string())?;
    let caller = c.node("caller_1").ok_or("no caller node")?;
    let ready = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        caller
            .eval("return #router.list(ServerType.DB)", Duration::from_secs(5))
            .as_deref()
            == Ok("1")
    });
    if !ready {
        return Err("the DB node never came online".into());
    }
    let measure = |node: &luahost::NodeHandle| -> Result<Rates, String> {
        let out = node
            .eval(
                &format!("return bench.db({}, {}, {KEYS})", spec.conc, spec.secs),
                Duration::from_secs_f64(2.0 * spec.secs + 60.0),
            )
            .map_err(|e| e.to_string())?;
        let field = |k: &str| {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("bad bench output: {out}"))
        };
        Ok(Rates {
            saves: field("saves=")?,
            loads: field("loads=")?,
        })
    };
    let remote = measure(caller)?;
    let local = measure(c.node("db_1").ok_or("no DB node")?)?;
    c.shutdown();
    Ok((remote, local))
}

fn result_line(backend: &str, path: &str, spec: &DbSpec, r: Rates) -> String {
    format!(
        "RESULT workload=db backend={backend} path={path} conc={} saves={:.0} loads={:.0}",
        spec.conc, r.saves, r.loads
    )
}

/// Runs the benchmark and prints its lines.
///
/// # Errors
///
/// A text saying what failed (a store that does not open, a failed
/// operation, a node that did not start).
pub fn run(spec: &DbSpec) -> Result<(), String> {
    let mut backends = vec![("sqlite", None)];
    if let Some(p) = &spec.postgres {
        backends.push(("postgres", Some(p.clone())));
    }
    for (name, pg) in backends {
        let dir = std::env::temp_dir().join(format!("luahost-bench-db-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let (cfg, entry) = match &pg {
            None => (
                StoreConfig::Sqlite {
                    path: dir.join("direct.db"),
                },
                "store = { sqlite = \"bench.db\" }".to_string(),
            ),
            Some(p) => (
                StoreConfig::Postgres {
                    params: p.clone(),
                    pool: 4,
                },
                format!("store = {{ postgres = {p:?}, pool = 4 }}"),
            ),
        };
        let outcome = (|| {
            let store = luahost::runtime::open_store(&cfg)?;
            let d = direct(&store, spec)?;
            store.close();
            println!("{}", result_line(name, "direct", spec, d));
            let (p, on_db) = through_dbproxy(&dir, &entry, spec)?;
            println!("{}", result_line(name, "dbproxy", spec, p));
            println!("{}", result_line(name, "dbproxy-on-db-node", spec, on_db));
            println!(
                "RATIO backend={name} saves={:.2} loads={:.2} (direct / DBProxy; goal: at most 2)",
                d.saves / p.saves.max(1e-9),
                d.loads / p.loads.max(1e-9)
            );
            Ok::<(), String>(())
        })();
        let _ = std::fs::remove_dir_all(&dir);
        outcome?;
    }
    Ok(())
}
