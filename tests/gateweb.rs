//! The Gate's web listener (`gate.http`, `gate.web`): its files, its
//! refusals, `/luahost/config.json`, `/luahost/login` and a token from it
//! logging in over WebSocket. Real nodes, real sockets.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use luahost::client::{Client, Login, Target};
use luahost::codec::mpack;
use serde_json::Value;

use common::*;

fn gate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gate")
}

struct Cluster {
    dir: TempDir,
    gate: luahost::NodeHandle,
    _hall: luahost::NodeHandle,
    http: SocketAddr,
    ws: u16,
}

/// A Gate (with a web listener serving a copy of tests/gate/web in the
/// cluster file's folder, `web = "web"`) and a Hall, in this process.
fn cluster(tag: &str) -> Cluster {
    let dir = TempDir::new(tag);
    let web = dir.0.join("web");
    std::fs::create_dir_all(&web).unwrap();
    for f in std::fs::read_dir(gate_dir().join("web")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), web.join(f.file_name())).unwrap();
    }
    std::fs::create_dir_all(web.join("sub")).unwrap();
    let scripts = gate_dir().join("scripts");
    let main = scripts.join("main.lua").display().to_string();
    let (tcp, ws, http) = (free_port(), free_port(), free_port());
    let text = format!(
        "return {{\n  secret = \"gate-web-secret-0123\",\n  call_timeout = 3,\n  liveness = 2,\n  scripts = {{ {scripts:?} }},\n  nodes = {{\n    gate_1 = {{ type = \"Gate\", id = 1, addr = \"127.0.0.1:{}\", main = {main:?},\n      gate = {{ tcp = \"127.0.0.1:{tcp}\", ws = \"127.0.0.1:{ws}\", http = \"127.0.0.1:{http}\", web = \"web\", verify_timeout = 0.5 }} }},\n    hall_1 = {{ type = \"Hall\", id = 11, addr = \"127.0.0.1:{}\", main = {main:?} }},\n  }},\n}}\n",
        free_port(),
        free_port(),
        scripts = scripts.display().to_string(),
    );
    let file = dir.0.join("cluster.lua");
    std::fs::write(&file, text).unwrap();
    let gate = start(&file, "gate_1");
    let hall = start(&file, "hall_1");
    wait_live(&gate, &["hall_1"]);
    Cluster {
        dir,
        gate,
        _hall: hall,
        http: format!("127.0.0.1:{http}").parse().unwrap(),
        ws,
    }
}

/// A response: status, headers (names lower case), body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `raw` and reads the response to the end (the Gate closes).
fn exchange(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8(out[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let body = out[end + 4..].to_vec();
    Resp { status, headers, body }
}

fn get(c: &Cluster, path: &str) -> Resp {
    exchange(
        c.http,
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes(),
    )
}

fn post(c: &Cluster, path: &str, ctype: &str, body: &str) -> Resp {
    exchange(
        c.http,
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn files_refusals_and_config() {
    let c = cluster("gateweb-files");
    let r = get(&c, "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert!(String::from_utf8_lossy(&r.body).contains("luahost-gate-web-fixture"));
    let page = r.body;
    let r = get(&c, "/index.html?v=1");
    assert_eq!((r.status, r.body), (200, page));
    let r = get(&c, "/app.css");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    // HEAD: the head only
    let r = exchange(c.http, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert!(r.header("content-length").unwrap().parse::<usize>().unwrap() > 0);
    // missing files, the cluster file beside the folder, a folder
    assert!(c.dir.0.join("cluster.lua").exists());
    for path in [
        "/missing.html",
        "/../cluster.lua",
        "/%2e%2e/cluster.lua",
        "/%2E%2E%2Fcluster.lua",
        "/a/../../cluster.lua",
        "/..%5ccluster.lua",
        "/.%2e/cluster.lua",
        "/sub",
        "/sub/",
    ] {
        let r = get(&c, path);
        assert_eq!(r.status, 404, "{path}");
        assert!(!String::from_utf8_lossy(&r.body).contains("secret"), "{path}");
    }
    // other methods, bad requests
    assert_eq!(exchange(c.http, b"DELETE / HTTP/1.1\r\n\r\n").status, 405);
    assert_eq!(get(&c, "/luahost/login").status, 405);
    assert_eq!(exchange(c.http, b"NOT HTTP\r\n\r\n").status, 400);
    let r = exchange(
        c.http,
        b"POST /luahost/login HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 411);
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(exchange(c.http, big.as_bytes()).status, 431);

    // config.json
    let r = get(&c, "/luahost/config.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    let digi: u64 = eval(&c.gate, "return rpcdef.ClientDigi").parse().unwrap();
    assert_eq!(v["client_digi"].as_u64(), Some(digi));
    assert_eq!(v["ws"], format!("ws://127.0.0.1:{}/", c.ws));
    assert_eq!(v["heartbeat_ms"], 10_000);
    let cid: u64 = eval(&c.gate, "return rpcdef.iface('Hall', 'Player').echo.cid")
        .parse()
        .unwrap();
    let echo = &v["methods"]["echo"];
    assert_eq!(echo["cid"].as_u64(), Some(cid));
    assert_eq!(echo["call"], true);
    assert_eq!(echo["args"].as_array().unwrap().len(), 2);
    assert!(echo["results"].is_array());
    assert!(v["pushes"]["onEvent"]["cid"].is_u64());
    assert!(
        v["methods"].get("secret").is_none(),
        "a server-only method is not listed"
    );
}

/// echo(s, n) through the Gate.
fn echo(rt: &tokio::runtime::Runtime, client: &Client, cid: u32, s: &str, n: i64) -> (String, i64) {
    let mut a = BytesMut::new();
    mpack::put_str(&mut a, s.as_bytes());
    mpack::put_int(&mut a, n);
    let (nvals, vals) = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), client.call_raw(cid, 2, &a)).await })
        .expect("call hung")
        .unwrap();
    assert_eq!(nvals, 2);
    let mut r = mpack::Reader::new(&vals);
    let s = String::from_utf8(r.read_bytes().unwrap().to_vec()).unwrap();
    (s, r.read_i64().unwrap())
}

#[test]
fn login_then_websocket() {
    let c = cluster("gateweb-login");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = get(&c, "/luahost/config.json").json();
    let cid = config["methods"]["echo"]["cid"].as_u64().unwrap() as u32;
    let digi = config["client_digi"].as_u64().unwrap() as u32;

    let r = post(
        &c,
        "/luahost/login",
        "application/json",
        r#"{"account": "webann", "password": "pw"}"#,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["account"], "webann");
    let ws = v["ws"].as_str().unwrap().to_string();
    assert_eq!(ws, format!("ws://127.0.0.1:{}/", c.ws));
    let login = Login {
        account: "webann".into(),
        token: v["token"].as_str().unwrap().into(),
        client_digi: digi,
    };
    let client = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(10),
                Client::connect(&Target::Ws(ws.clone()), None, &login, None),
            )
            .await
        })
        .expect("connect hung")
        .expect("the token from /luahost/login logs in");
    assert_eq!(echo(&rt, &client, cid, "from the web", 42), ("from the web".into(), 42));

    // a form works too
    let r = post(
        &c,
        "/luahost/login",
        "application/x-www-form-urlencoded",
        "account=web+bob&password=pw",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["account"], "web bob");

    // refusals
    let r = post(
        &c,
        "/luahost/login",
        "application/json",
        r#"{"account": "webann", "password": "nope"}"#,
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["ok"], false);
    assert_eq!(r.json()["reason"], "wrong password");
    let r = post(&c, "/luahost/login", "application/json", r#"{"account": "x"}"#);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["ok"], false);
    let big = format!(r#"{{"account": "a", "password": "{}"}}"#, "p".repeat(5000));
    let r = post(&c, "/luahost/login", "application/json", &big);
    assert_eq!(r.status, 413);
    let r = exchange(
        c.http,
        b"POST /luahost/login HTTP/1.1\r\nContent-Length: 999999\r\n\r\n",
    );
    assert_eq!(r.status, 413);

    // a hook that fails is 500, one that takes longer than call_timeout 503
    eval(&c.gate, "gate_mod.onWebLogin(function() error('boom') end)");
    let body = r#"{"account": "a", "password": "pw"}"#;
    let r = post(&c, "/luahost/login", "application/json", body);
    assert_eq!((r.status, r.json()["reason"].as_str()), (500, Some("internal error")));
    eval(
        &c.gate,
        "gate_mod.onWebLogin(function() rpcco.sleep(10) return true end)",
    );
    let t0 = Instant::now();
    let r = post(&c, "/luahost/login", "application/json", body);
    assert_eq!(r.status, 503);
    assert!(t0.elapsed() >= Duration::from_millis(2500), "{:?}", t0.elapsed());
}

#[test]
fn silent_client_is_closed_after_verify_timeout() {
    let c = cluster("gateweb-silent");
    let mut s = TcpStream::connect(c.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).expect("closed, not timed out");
    assert_eq!(n, 0, "nothing is written to a client that sent nothing");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // a request cut short gets 408 at the same deadline
    let r = exchange(c.http, b"GET / HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(r.status, 408);
    // the Gate still serves
    assert_eq!(get(&c, "/").status, 200);
}
