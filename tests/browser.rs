//! The friends demo in a real browser: `luahost up examples/friends` serves
//! examples/friends/web (luahost.js, index.html, app.js) on its Gate's HTTP
//! port; Debian's Chromium, headless, opens the page as player 1001 and, in a
//! second tab, as one of its friends. The test drives Chromium over the
//! Chrome DevTools Protocol (a WebSocket; `Target.*` and `Runtime.evaluate`)
//! and reads what the page shows: the state, the friends, their online dots.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The demo Gate's HTTP listener (`gate.http` in examples/friends/cluster.lua).
const HTTP: &str = "127.0.0.1:7380";

/// A headless Chromium in its own process group (killed whole on drop) with
/// a fresh profile.
struct Chromium {
    child: Child,
    dir: TempDir,
}

impl Chromium {
    fn launch() -> Chromium {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: this test needs Debian's chromium package. \
             tests/run installs it (or, as root: apt-get install chromium)"
        );
        use std::os::unix::process::CommandExt;
        let dir = TempDir::new("chromium");
        let log = std::fs::File::create(dir.0.join("chromium.log")).unwrap();
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", dir.0.join("profile").display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
        Chromium { child, dir }
    }

    /// The browser's DevTools WebSocket address, from the DevToolsActivePort
    /// file Chromium writes into its profile (port, then path).
    fn devtools_url(&mut self) -> String {
        let file = self.dir.0.join("profile/DevToolsActivePort");
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    return format!("ws://127.0.0.1:{port}{path}");
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("chromium exited ({st}) before DevTools was up:\n{}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no DevToolsActivePort after 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("chromium.log")).unwrap_or_default()
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // the browser and its renderer, GPU and zygote processes: asked to
        // stop (so that the browser reaps its children), then killed
        let group = -(self.child.id() as i32);
        unsafe {
            libc::kill(group, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A Chrome DevTools Protocol connection to the browser target; pages are
/// attached with flat sessions, so one WebSocket serves every tab.
struct Cdp {
    rt: tokio::runtime::Runtime,
    ws: Ws,
    next: u64,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ws = rt.block_on(async {
            let hostport = url.trim_start_matches("ws://").split('/').next().unwrap().to_string();
            let tcp = tokio::net::TcpStream::connect(hostport).await.unwrap();
            let (ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
            ws
        });
        Cdp { rt, ws, next: 1 }
    }

    /// Sends a command (to a page when `session` is given) and returns its
    /// result; events in between are skipped. Bounded by 15 s.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let ws = &mut self.ws;
        let answer = self.rt.block_on(async {
            ws.send(Message::text(msg.to_string())).await.unwrap();
            tokio::time::timeout(Duration::from_secs(15), async {
                while let Some(m) = ws.next().await {
                    let Ok(Message::Text(t)) = m else { continue };
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["id"] == json!(id) {
                        return v;
                    }
                }
                panic!("the DevTools connection closed");
            })
            .await
            .unwrap_or_else(|_| panic!("no answer to {method} in 15 s"))
        });
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Opens a tab at `url`; returns (target id, session id).
    fn open(&mut self, url: &str) -> (String, String) {
        let target = self.call(None, "Target.createTarget", json!({ "url": url }))["targetId"]
            .as_str()
            .unwrap()
            .to_string();
        let session = self.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        )["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        (target, session)
    }

    fn close(&mut self, target: &str) {
        self.call(None, "Target.closeTarget", json!({ "targetId": target }));
    }

    /// Evaluates `expr` in the page and returns its value.
    fn eval(&mut self, session: &str, expr: &str) -> Value {
        let r = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// What the page shows: #state, the friends in #friends, #log, and the
    /// page's timestamps (window.luahostPage.times, Date.now() milliseconds).
    fn page(&mut self, session: &str) -> PageView {
        let v = self.eval(
            session,
            r#"JSON.stringify({
                state: document.querySelector('#state')?.textContent ?? '',
                friends: [...document.querySelectorAll('#friends li')].map(li => ({
                    rid: Number(li.dataset.rid),
                    online: li.dataset.online,
                    at: Number(li.dataset.changedAt || 0),
                })),
                log: document.querySelector('#log')?.innerText ?? '',
                times: window.luahostPage?.times ?? {},
            })"#,
        );
        serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap()
    }
}

#[derive(Debug, serde::Deserialize)]
struct PageView {
    state: String,
    friends: Vec<Friend>,
    log: String,
    times: std::collections::HashMap<String, f64>,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct Friend {
    rid: u64,
    online: String,
    at: f64,
}

impl PageView {
    fn friend(&self, rid: u64) -> Option<&Friend> {
        self.friends.iter().find(|f| f.rid == rid)
    }
}

/// Polls the page until `ok` holds or `limit` passes; returns the last view.
fn wait_page(cdp: &mut Cdp, session: &str, limit: Duration, ok: impl Fn(&PageView) -> bool) -> (bool, PageView) {
    let start = Instant::now();
    loop {
        let v = cdp.page(session);
        if ok(&v) {
            return (true, v);
        }
        if start.elapsed() > limit {
            return (false, v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// GET over plain HTTP/1.0; the status line and body, or None.
fn http_get(path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(HTTP).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The Gate's resume grace in the demo's cluster file (30 s when not set).
fn resume_grace(cluster: &Path) -> Duration {
    let text = std::fs::read_to_string(cluster).unwrap();
    let secs = text
        .split("resume_grace")
        .nth(1)
        .and_then(|rest| rest.trim_start().strip_prefix('='))
        .and_then(|rest| {
            let n: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            n.parse::<f64>().ok()
        })
        .unwrap_or(30.0);
    Duration::from_secs_f64(secs)
}

/// One MessagePack array written by the host's encoder (luahost::codec::mpack),
/// each value in its shortest form, and the JS type luahost.js must decode
/// each element to.
fn mpack_sample() -> (Vec<u8>, Vec<&'static str>) {
    use luahost::codec::mpack::*;
    let mut out = bytes::BytesMut::new();
    let mut kinds = Vec::new();
    let uints: [u64; 14] = [
        0,
        127,
        128,
        255,
        256,
        65535,
        65536,
        u32::MAX as u64,
        1 << 32,
        (1 << 53) - 1,
        1 << 53,
        1 << 63,
        u64::MAX,
        1_000_001,
    ];
    let ints: [i64; 11] = [
        -1,
        -32,
        -33,
        -128,
        -129,
        -32768,
        -32769,
        i32::MIN as i64,
        i32::MIN as i64 - 1,
        -(1 << 53) + 1,
        i64::MIN,
    ];
    let strs = ["".to_string(), "héllo".to_string(), "x".repeat(40), "y".repeat(300)];
    let bins = [vec![0u8, 1, 255], vec![7u8; 300]];
    put_array_len(&mut out, 3 + uints.len() + ints.len() + 2 + strs.len() + bins.len() + 2);
    put_nil(&mut out);
    put_bool(&mut out, true);
    put_bool(&mut out, false);
    kinds.extend(["nil", "boolean", "boolean"]);
    for u in uints {
        put_uint(&mut out, u);
        // beyond 2^53 - 1 a Number would not be exact
        kinds.push(if u < (1 << 53) { "number" } else { "bigint" });
    }
    for i in ints {
        put_int(&mut out, i);
        kinds.push(if i > -(1 << 53) { "number" } else { "bigint" });
    }
    put_f64(&mut out, 1.5);
    put_f64(&mut out, -1e300);
    kinds.extend(["number", "number"]);
    for s in &strs {
        put_str(&mut out, s.as_bytes());
        kinds.push("string");
    }
    for b in &bins {
        put_bin(&mut out, b);
        kinds.push("bin");
    }
    put_array_len(&mut out, 20);
    for i in 0..20 {
        put_uint(&mut out, i);
    }
    put_map_len(&mut out, 2);
    put_str(&mut out, b"rid");
    put_uint(&mut out, 1002);
    put_str(&mut out, b"hall");
    put_uint(&mut out, 11);
    kinds.extend(["array", "object"]);
    (out.to_vec(), kinds)
}

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/friends")
}

#[test]
fn friends_page_in_headless_chromium_shows_friends_going_online_and_offline() {
    // fail (not skip) without a browser, before starting anything
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: this test needs Debian's chromium package. \
         tests/run installs it (or, as root: apt-get install chromium)"
    );
    // the demo keeps its players in examples/friends/friends.db (the DB
    // node's SQLite file): start from the seeded players, as a fresh clone
    // does, so that what this test adds is new to them
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(demo_dir().join(format!("friends.db{ext}")));
    }
    let demo = Proc::spawn(&["up", demo_dir().to_str().unwrap()]);
    let up = wait_until(Duration::from_secs(60), || {
        http_get("/luahost/config.json").is_some_and(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"))
    });
    assert!(
        up,
        "the demo's Gate never served /luahost/config.json; log:\n{}",
        demo.log()
    );
    let index = http_get("/luahost.js").unwrap_or_default();
    assert!(
        index.contains("export async function connect"),
        "GET /luahost.js: {index:.300}"
    );

    let mut browser = Chromium::launch();
    let url = browser.devtools_url();
    let mut cdp = Cdp::connect(&url);
    let version = cdp.call(None, "Browser.getVersion", json!({}));
    eprintln!("browser: {}", version["product"]);

    // player 1001 logs in: the page goes online and lists its friends
    let opened = Instant::now();
    let (_t1, p1) = cdp.open(&format!("http://{HTTP}/?player=1001"));
    let (ok, v) = wait_page(&mut cdp, &p1, Duration::from_secs(30), |v| v.state == "online");
    assert!(ok, "page 1001 never went online: {v:?}\ndemo log:\n{}", demo.log());
    let to_online = opened.elapsed();
    let (ok, v) = wait_page(&mut cdp, &p1, Duration::from_secs(10), |v| {
        !v.friends.is_empty() && v.times.contains_key("friends")
    });
    assert!(ok, "page 1001 shows no friends: {v:?}");
    eprintln!(
        "page 1001: online {:?} after opening the tab; friends {:?}",
        to_online,
        v.friends.iter().map(|f| (f.rid, f.online.clone())).collect::<Vec<_>>()
    );
    for f in &v.friends {
        assert!(f.online == "true" || f.online == "false", "{f:?}");
    }

    // luahost.js's MessagePack agrees with the host's: values the host
    // encodes decode in the page to the JS types the module promises and
    // encode back to the same bytes
    let (bytes, kinds) = mpack_sample();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let answer = cdp.eval(
        &p1,
        &format!(
            r#"import('/luahost.js').then(m => {{
                const hex = '{hex}';
                const b = new Uint8Array(hex.length / 2).map((_, i) => parseInt(hex.substr(2 * i, 2), 16));
                const v = m.decode(b);
                const kind = x => x === null ? 'nil' : x instanceof Uint8Array ? 'bin' : Array.isArray(x) ? 'array' : typeof x;
                return JSON.stringify({{
                    hex: Array.from(m.encode(v), x => x.toString(16).padStart(2, '0')).join(''),
                    kinds: v.map(kind),
                }});
            }})"#
        ),
    );
    let answer: Value = serde_json::from_str(answer.as_str().unwrap()).unwrap();
    assert_eq!(answer["kinds"], json!(kinds), "types decoded by luahost.js");
    assert_eq!(
        answer["hex"].as_str().unwrap(),
        hex,
        "luahost.js re-encoded other bytes"
    );

    // the page's WebSocket drops: luahost.js reconnects and resumes the
    // session (the server sees no logout), and the page is online again
    let dropped = Instant::now();
    cdp.eval(&p1, "window.luahostPage.client.sock.close(); true");
    let (ok, v) = wait_page(&mut cdp, &p1, Duration::from_secs(10), |v| {
        v.state == "online" && v.log.contains("online again (session resumed)")
    });
    assert!(ok, "page 1001 did not resume after its socket closed: {v:?}");
    eprintln!(
        "page 1001: socket closed -> resumed and online after {:?}\n{}",
        dropped.elapsed(),
        v.log
    );

    // a friend that is offline logs in in a second tab: its dot on the first
    // page turns online (the onFriendOnline push arrived)
    let friend = v
        .friends
        .iter()
        .find(|f| f.online == "false")
        .unwrap_or_else(|| panic!("every friend of 1001 is online already: {v:?}"))
        .rid;
    let (t2, p2) = cdp.open(&format!("http://{HTTP}/?player={friend}"));
    let (ok, v2) = wait_page(&mut cdp, &p2, Duration::from_secs(30), |v| v.state == "online");
    assert!(ok, "page {friend} never went online: {v2:?}");
    let (ok, v) = wait_page(&mut cdp, &p1, Duration::from_secs(5), |v| {
        v.friend(friend).is_some_and(|f| f.online == "true")
    });
    assert!(
        ok,
        "page 1001 never showed {friend} online: {v:?}\ndemo log:\n{}",
        demo.log()
    );
    let push_ms = v.friend(friend).unwrap().at - v2.times["online"];
    eprintln!("friend {friend} online -> shown on page 1001 after {push_ms} ms (from its tab's verify-ok)");

    // the friend's tab closes: after the resume grace the Gate loses the
    // session, the Hall logs the player out and page 1001 shows it offline
    let closed = Instant::now();
    cdp.close(&t2);
    let grace = resume_grace(&demo_dir().join("cluster.lua"));
    let (ok, v) = wait_page(&mut cdp, &p1, grace + Duration::from_secs(15), |v| {
        v.friend(friend).is_some_and(|f| f.online == "false")
    });
    assert!(
        ok,
        "page 1001 never showed {friend} offline (resume grace {grace:?}): {v:?}\ndemo log:\n{}",
        demo.log()
    );
    eprintln!(
        "friend {friend}'s tab closed -> shown offline after {:?} (resume grace {grace:?})",
        closed.elapsed()
    );
    assert_eq!(v.state, "online", "page 1001 stayed online throughout: {v:?}");

    // a wrong password: the login endpoint refuses, the page says so and stays offline
    let (t3, p3) = cdp.open(&format!("http://{HTTP}/?player=1003&password=nope"));
    let (ok, v3) = wait_page(&mut cdp, &p3, Duration::from_secs(10), |v| {
        v.log.contains("login failed: refused")
    });
    assert!(ok, "a wrong password was not refused: {v3:?}");
    assert_eq!(v3.state, "offline", "{v3:?}");
    cdp.close(&t3);

    // typed calls through the page's client: an int48 argument, a struct
    // array result as objects, arguments refused before they are sent
    let calls = cdp.eval(
        &p1,
        r#"(async () => {
            const c = window.luahostPage.client;
            const err = p => p.then(() => 'resolved', e => e.code);
            return JSON.stringify({
                added: await c.call('hall_addFriend', 1010),
                again: await c.call('hall_addFriend', 1010),
                friends: (await c.call('hall_getFriends'))[0],
                float: await err(c.call('hall_addFriend', 1.5)),
                unknown: await err(c.call('hall_nope')),
            });
        })()"#,
    );
    let calls: Value = serde_json::from_str(calls.as_str().unwrap()).unwrap();
    assert_eq!(calls["added"], json!([true]), "{calls}");
    assert_eq!(calls["again"], json!([false]), "{calls}");
    let friends = calls["friends"].as_array().unwrap();
    assert!(friends.contains(&json!({ "rid": 1010, "hall": 0 })), "{calls}");
    assert!(friends.contains(&json!({ "rid": 1002, "hall": 0 })), "{calls}");
    assert_eq!(calls["float"], "bad_request", "{calls}");
    assert_eq!(calls["unknown"], "bad_request", "{calls}");
    assert!(!v.log.contains("hall_getFriends failed"), "page 1001's log: {}", v.log);
    drop(cdp);
    drop(browser);
    let log = demo.log();
    assert!(!log.contains(" ERROR "), "errors in the demo log:\n{log}");
}
