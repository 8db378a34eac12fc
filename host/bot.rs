//! `luahost bot`: many game clients driving a Gate, each run by a Lua script.
//!
//! A test and load tool. It signs each account's token itself with the key
//! derived from the cluster secret (`--cluster`), so it needs the cluster
//! file; a real client gets its token from a login server instead.
//!
//! Threads and Lua states: the connections (reader, writer and heartbeat
//! tasks of `luahost::client`) run on a multi-thread tokio runtime; each bot
//! client is one blocking task of that runtime with its own Lua state, which
//! runs the script and waits on its connection through the runtime's handle.
//! Lua states are never shared, so a script needs no locking.
//!
//! Script API (`bot.lua` defines `function bot.run(client)`; see README.md):
//! `client:call(name, ...)` returns the results, `client:send(name, ...)`,
//! `client:wait_push(secs)` returns `name, args...` of a push, or
//! `"notice", code, text, closing`, or `"closed"`, or nil on timeout;
//! `client:sleep(secs)`, `client:running()`, `client.account`,
//! `client.index`. Arguments and results are checked and converted by the
//! schema's declared types (luahost::schema::encode/decode).

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use luahost::client::typed::{ClientMethod, ClientSchema};
use luahost::client::{client_tls_trusting, Client, ClientError, ClientTls, Event, Login, Target};
use luahost::codec::mpack::Reader;
use luahost::codec::token::{self, TokenKey};
use luahost::schema::annotate::{SchemaDesc, Section};
use luahost::schema::Ty;
use luahost::ClusterConfig;
use mlua::{Lua, MultiValue, Table, Value};

/// The most clients one bot run starts (each is a blocking thread).
pub const MAX_CLIENTS: u32 = 2000;
/// The longest one call or connect waits.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// The error text that ends a script when its time is up.
const TIME_UP: &str = "bot: time up";

/// What `luahost bot` was asked to do.
pub struct BotSpec {
    pub gate: String,
    pub ws: bool,
    pub clients: u32,
    pub secs: f64,
    pub script: Option<PathBuf>,
    pub cluster: PathBuf,
    pub prefix: String,
    pub first: u32,
    pub ca: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// The counters of a run.
#[derive(Default)]
struct Stats {
    connected: AtomicU64,
    failed: AtomicU64,
    msgs: AtomicU64,
    errors: AtomicU64,
    kicks: AtomicU64,
    /// The first few errors, for stderr.
    first_errors: Mutex<Vec<String>>,
}

impl Stats {
    fn error(&self, text: String) {
        let mut v = self.first_errors.lock().unwrap();
        if v.len() < 5 {
            v.push(text);
        }
    }
}

/// What every client shares.
struct Shared {
    target: Target,
    tls: Option<ClientTls>,
    key: TokenKey,
    schema: SchemaDesc,
    script: String,
    script_name: String,
    prefix: String,
    first: u32,
    deadline: Instant,
    stats: Stats,
}

/// Runs the bots; prints the RESULT line. Ok(true) when every client logged
/// in.
pub fn run(spec: &BotSpec) -> Result<bool, String> {
    let cfg = ClusterConfig::load(&spec.cluster).map_err(|e| e.to_string())?;
    let entitydef = cfg
        .scripts
        .iter()
        .map(|d| d.join("entitydef.lua"))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no entitydef.lua in the script roots of {}", spec.cluster.display()))?;
    let schema = luahost::describe_entitydef(&entitydef)?;
    let (script, script_name) = match &spec.script {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
            format!("@{}", p.display()),
        ),
        None => (default_script(&schema)?, "=default workload".to_string()),
    };
    if spec.clients == 0 || spec.clients > MAX_CLIENTS {
        return Err(format!("--clients must be 1..={MAX_CLIENTS}"));
    }
    if !(spec.secs > 0.0 && spec.secs <= 3600.0) {
        return Err("--secs must be in (0, 3600]".into());
    }
    let tls = match &spec.ca {
        Some(ca) => Some(
            client_tls_trusting(ca, spec.server_name.as_deref().unwrap_or("localhost")).map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let target = if spec.ws {
        Target::Ws(format!("{}://{}/", if tls.is_some() { "wss" } else { "ws" }, spec.gate))
    } else {
        Target::Tcp(
            spec.gate
                .parse()
                .map_err(|e| format!("--gate {}: {e} (an ip:port)", spec.gate))?,
        )
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(spec.clients as usize + 8)
        .build()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        target,
        tls,
        key: TokenKey::from_secret(&cfg.secret),
        schema,
        script,
        script_name,
        prefix: spec.prefix.clone(),
        first: spec.first,
        deadline: start + Duration::from_secs_f64(spec.secs),
        stats: Stats::default(),
    });
    let handles: Vec<_> = (0..spec.clients)
        .map(|i| {
            let shared = shared.clone();
            let h = rt.handle().clone();
            rt.spawn_blocking(move || client_main(&h, i, &shared))
        })
        .collect();
    // progress until every client is done (each is bounded by the deadline
    // plus one operation's timeout)
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_style(indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").unwrap());
    let st = &shared.stats;
    let progress = || {
        format!(
            "clients {}/{} connected, {} failed | msgs {} | errors {} | kicks {}",
            st.connected.load(Ordering::Relaxed),
            spec.clients,
            st.failed.load(Ordering::Relaxed),
            st.msgs.load(Ordering::Relaxed),
            st.errors.load(Ordering::Relaxed),
            st.kicks.load(Ordering::Relaxed)
        )
    };
    while !handles.iter().all(|h| h.is_finished()) {
        pb.set_message(progress());
        pb.tick();
        std::thread::sleep(Duration::from_millis(100));
    }
    pb.finish_and_clear();
    let mut lat: Vec<u32> = Vec::new();
    for h in handles {
        if let Ok(v) = rt.block_on(h) {
            lat.extend(v);
        }
    }
    let elapsed = start.elapsed().as_secs_f64().min(spec.secs).max(1e-3);
    drop(rt);
    lat.sort_unstable();
    let pct = |p: f64| -> u32 {
        if lat.is_empty() {
            0
        } else {
            lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]
        }
    };
    let connected = st.connected.load(Ordering::Relaxed);
    let failed = st.failed.load(Ordering::Relaxed);
    let msgs = st.msgs.load(Ordering::Relaxed);
    let errors = st.first_errors.lock().unwrap();
    if failed > 0 {
        eprintln!("bot: {failed} of {} clients failed to log in", spec.clients);
    }
    let call_errors = st.errors.load(Ordering::Relaxed);
    if call_errors > 0 {
        eprintln!("bot: {call_errors} call or script errors");
    }
    for e in errors.iter() {
        eprintln!("bot: {e}");
    }
    if errors.iter().any(|e| e.contains("bad_token")) {
        eprintln!(
            "bot: the Gate refused the tokens: they are signed with the secret of {}; is it the Gate's cluster file?",
            spec.cluster.display()
        );
    }
    println!(
        "RESULT workload=bot clients={} connected={connected} failed={failed} msgs={msgs} rate={:.0} p50_us={} p99_us={} resumes=0 kicks={}",
        spec.clients,
        msgs as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        st.kicks.load(Ordering::Relaxed)
    );
    Ok(failed == 0)
}

/// The workload without `--script`: `echo("bot", i)` in a loop when the
/// schema has an exposed `echo`, else the first exposed call method without
/// arguments.
fn default_script(schema: &SchemaDesc) -> Result<String, String> {
    let calls = || {
        schema
            .methods
            .iter()
            .filter(|m| m.client && m.section != Section::Client && m.results.is_some())
    };
    let call = if calls().any(|m| m.name == "echo") {
        "client:call(\"echo\", \"bot\", i)".to_string()
    } else if let Some(m) = calls().filter(|m| m.args.is_empty()).min_by_key(|m| m.cid) {
        format!("client:call({:?})", m.name)
    } else {
        return Err("no --script, and the schema has no exposed echo or call method without arguments".into());
    };
    Ok(format!(
        "function bot.run(client)\n  local i = 0\n  while client:running() do\n    i = i + 1\n    local ok, err = pcall(function() return {call} end)\n    if not ok and tostring(err):find(\"connection closed\", 1, true) then return end\n  end\nend\n"
    ))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One bot client: log in, run the script; returns its call latencies (us).
fn client_main(h: &tokio::runtime::Handle, i: u32, sh: &Arc<Shared>) -> Vec<u32> {
    let st = &sh.stats;
    let account = format!("{}{}", sh.prefix, sh.first as u64 + i as u64);
    let mut nonce = [0u8; token::NONCE_LEN];
    if getrandom::fill(&mut nonce).is_err() {
        nonce[..4].copy_from_slice(&i.to_le_bytes());
    }
    let login = Login {
        token: token::make(&sh.key, &account, now_unix() + 3600, nonce),
        account: account.clone(),
        client_digi: sh.schema.client_digest,
    };
    let conn = h.block_on(async {
        tokio::time::timeout(OP_TIMEOUT, Client::connect(&sh.target, sh.tls.clone(), &login, None)).await
    });
    let client = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            st.failed.fetch_add(1, Ordering::Relaxed);
            st.error(format!("{account}: {e}"));
            return Vec::new();
        }
        Err(_) => {
            st.failed.fetch_add(1, Ordering::Relaxed);
            st.error(format!("{account}: connect timed out"));
            return Vec::new();
        }
    };
    st.connected.fetch_add(1, Ordering::Relaxed);
    let state = Rc::new(std::cell::RefCell::new(State {
        client,
        lat: Vec::new(),
    }));
    if let Err(e) = run_script(h, i, &account, sh, &state) {
        let text = e.to_string();
        if !text.contains(TIME_UP) {
            st.errors.fetch_add(1, Ordering::Relaxed);
            st.error(format!("{account}: script: {text}"));
        }
    }
    // count the notices the script did not read
    let mut s = state.borrow_mut();
    while let Ok(Some(ev)) = h.block_on(async { tokio::time::timeout(Duration::ZERO, s.client.next_event()).await }) {
        note_kick(st, &ev);
    }
    std::mem::take(&mut s.lat)
}

struct State {
    client: Client,
    lat: Vec<u32>,
}

fn note_kick(st: &Stats, ev: &Event) {
    if let Event::Notice { code, .. } = ev {
        if code == "replaced" || code == "kicked" {
            st.kicks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn encode_args(m: &ClientMethod, args: &MultiValue) -> mlua::Result<BytesMut> {
    if args.len() > m.args.len() {
        return Err(mlua::Error::runtime(format!(
            "{}: {} arguments given, {} declared",
            m.name,
            args.len(),
            m.args.len()
        )));
    }
    let mut buf = BytesMut::new();
    for (k, (_, ty)) in m.args.iter().enumerate() {
        let v = args.get(k).unwrap_or(&Value::Nil);
        luahost::schema::encode(&mut buf, ty, v)
            .map_err(|e| mlua::Error::runtime(format!("bad argument #{} to {}: {e}", k + 1, m.name)))?;
    }
    Ok(buf)
}

fn decode_list(lua: &Lua, tys: &[(String, Ty)], n: usize, bytes: &[u8], what: &str) -> mlua::Result<MultiValue> {
    if n != tys.len() {
        return Err(mlua::Error::runtime(format!(
            "{what}: {n} values, {} declared",
            tys.len()
        )));
    }
    let mut r = Reader::new(bytes);
    let mut out = MultiValue::new();
    for (_, ty) in tys {
        out.push_back(
            luahost::schema::decode(lua, ty, &mut r).map_err(|e| mlua::Error::runtime(format!("{what}: {e}")))?,
        );
    }
    Ok(out)
}

fn run_script(
    h: &tokio::runtime::Handle,
    index: u32,
    account: &str,
    sh: &Arc<Shared>,
    state: &Rc<std::cell::RefCell<State>>,
) -> mlua::Result<()> {
    let types = Rc::new(ClientSchema::from_desc(&sh.schema).map_err(mlua::Error::runtime)?);
    let lua = Lua::new();
    let bot = lua.create_table()?;
    lua.globals().set("bot", &bot)?;
    lua.load(sh.script.as_str()).set_name(sh.script_name.as_str()).exec()?;
    let run: mlua::Function = bot
        .get("run")
        .map_err(|_| mlua::Error::runtime("the script must define function bot.run(client)"))?;
    let c = lua.create_table()?;
    c.set("account", account)?;
    c.set("index", index)?;
    let deadline = sh.deadline;
    let left = move || deadline.saturating_duration_since(Instant::now());
    let find = {
        let types = types.clone();
        move |name: &str| -> mlua::Result<Rc<ClientMethod>> {
            types
                .get(name)
                .filter(|m| !m.push)
                .ok_or_else(|| mlua::Error::runtime(format!("no client method '{name}' in the schema")))
        }
    };
    {
        let (h, sh, state, find) = (h.clone(), sh.clone(), state.clone(), find.clone());
        c.set(
            "call",
            lua.create_function(move |lua, (_, name, args): (Table, String, MultiValue)| {
                if left().is_zero() {
                    return Err(mlua::Error::runtime(TIME_UP));
                }
                let m = find(&name)?;
                let Some(results) = &m.results else {
                    return Err(mlua::Error::runtime(format!("{name} is one-way: use client:send")));
                };
                let buf = encode_args(&m, &args)?;
                let s = state.borrow();
                let t0 = Instant::now();
                let r = h.block_on(async {
                    tokio::time::timeout(OP_TIMEOUT, s.client.call_raw(m.cid, m.args.len(), &buf)).await
                });
                let us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
                drop(s);
                let st = &sh.stats;
                match r {
                    Ok(Ok((n, vals))) => {
                        st.msgs.fetch_add(1, Ordering::Relaxed);
                        state.borrow_mut().lat.push(us);
                        decode_list(lua, results, n, &vals, &name)
                    }
                    Ok(Err(e)) => {
                        st.errors.fetch_add(1, Ordering::Relaxed);
                        if matches!(e, ClientError::Reply { .. }) {
                            st.msgs.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(mlua::Error::runtime(format!("{name}: {e}")))
                    }
                    Err(_) => {
                        st.errors.fetch_add(1, Ordering::Relaxed);
                        Err(mlua::Error::runtime(format!("{name}: timed out")))
                    }
                }
            })?,
        )?;
    }
    {
        let (sh, state) = (sh.clone(), state.clone());
        c.set(
            "send",
            lua.create_function(move |_, (_, name, args): (Table, String, MultiValue)| {
                if left().is_zero() {
                    return Err(mlua::Error::runtime(TIME_UP));
                }
                let m = find(&name)?;
                let buf = encode_args(&m, &args)?;
                state
                    .borrow()
                    .client
                    .send_raw(m.cid, m.args.len(), &buf)
                    .map_err(|e| mlua::Error::runtime(format!("{name}: {e}")))?;
                sh.stats.msgs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })?,
        )?;
    }
    {
        let (h, sh, state, types) = (h.clone(), sh.clone(), state.clone(), types.clone());
        c.set(
            "wait_push",
            lua.create_function(move |lua, (_, secs): (Table, Option<f64>)| {
                let wait = Duration::from_secs_f64(secs.unwrap_or(1.0).clamp(0.0, 3600.0)).min(left());
                let mut s = state.borrow_mut();
                let ev = h.block_on(async { tokio::time::timeout(wait, s.client.next_event()).await });
                drop(s);
                let mut out = MultiValue::new();
                match ev {
                    Err(_) => {}
                    Ok(None) | Ok(Some(Event::Closed)) => out.push_back(Value::String(lua.create_string("closed")?)),
                    Ok(Some(Event::Push {
                        method, nargs, args, ..
                    })) => match types.get_cid(method).filter(|m| m.push) {
                        Some(m) => {
                            out.push_back(Value::String(lua.create_string(&m.method)?));
                            out.extend(decode_list(lua, &m.args, nargs, &args, &m.name)?);
                        }
                        None => out.push_back(Value::Integer(method as i64)),
                    },
                    Ok(Some(ev @ Event::Notice { .. })) => {
                        note_kick(&sh.stats, &ev);
                        if let Event::Notice { code, text, closing } = ev {
                            out.push_back(Value::String(lua.create_string("notice")?));
                            out.push_back(Value::String(lua.create_string(&code)?));
                            out.push_back(Value::String(lua.create_string(&text)?));
                            out.push_back(Value::Boolean(closing));
                        }
                    }
                }
                Ok(out)
            })?,
        )?;
    }
    {
        let h = h.clone();
        c.set(
            "sleep",
            lua.create_function(move |_, (_, secs): (Table, f64)| {
                let d = Duration::from_secs_f64(secs.clamp(0.0, 3600.0)).min(left());
                h.block_on(tokio::time::sleep(d));
                Ok(())
            })?,
        )?;
    }
    c.set(
        "running",
        lua.create_function(move |_, _: Table| Ok(!left().is_zero()))?,
    )?;
    run.call::<()>(c)
}
