//! The Gate's web listener, the protocol part (no sockets, no files):
//! parsing an HTTP/1.1 request head (httparse), routing its path, the bytes
//! of a response, and the JSON of `/luahost/config.json` and
//! `/luahost/login`. The driver is `runtime::gateweb`.
//!
//! Strict and small: a head of at most [`MAX_HEAD`] bytes, a body only with
//! `Content-Length` and of at most [`MAX_BODY`] bytes (no chunked bodies),
//! one request per connection (`Connection: close`).

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_json::{json, Map, Value};

use crate::schema::{Method as SchemaMethod, Schema, Ty};

/// Largest request head (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest request body (a login).
pub const MAX_BODY: usize = 4 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 64;
/// Path prefix reserved for the Gate's own API.
const API: &str = "/luahost/";

/// A request's method, as far as the Gate cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: a GET without the body.
    Head,
    /// `POST`.
    Post,
    /// Anything else (refused with 405).
    Other,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The method.
    pub method: Method,
    /// The request target as sent (`/path?query`).
    pub target: String,
    /// `Content-Length` (0 without one).
    pub content_length: usize,
    /// The media type of `Content-Type`, lower case, without parameters.
    pub content_type: Option<String>,
    /// `Host`, as sent.
    pub host: Option<String>,
    /// Bytes the head took (the body follows).
    pub len: usize,
}

/// A request refused before routing: the status and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// A short reason (sent as the body).
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// Parses the request head at the start of `buf`: `Ok(None)` when more
/// bytes are needed.
///
/// # Errors
///
/// 431 for a head over [`MAX_HEAD`] or too many headers, 400 for a
/// malformed one or a bad `Content-Length`, 411 for a `Transfer-Encoding`
/// (chunked bodies are not taken), 413 for a body over [`MAX_BODY`].
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Complete(_)) => return Err(refuse(431, "request head too large")),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(refuse(431, "request head too large")),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(refuse(431, "too many headers")),
        Err(_) => return Err(refuse(400, "malformed request")),
    };
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("").to_string();
    let mut head = Head {
        method,
        target,
        content_length: 0,
        content_type: None,
        host: None,
        len,
    };
    let mut seen_length: Option<usize> = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map_err(|_| refuse(400, "malformed header"))?;
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = value.trim();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 12 {
                return Err(refuse(400, "bad Content-Length"));
            }
            let n: usize = v.parse().map_err(|_| refuse(400, "bad Content-Length"))?;
            if seen_length.is_some_and(|s| s != n) {
                return Err(refuse(400, "conflicting Content-Length"));
            }
            seen_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(refuse(411, "send the body with Content-Length (no Transfer-Encoding)"));
        } else if h.name.eq_ignore_ascii_case("content-type") {
            let media = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            head.content_type = Some(media);
        } else if h.name.eq_ignore_ascii_case("host") {
            head.host = Some(value.trim().to_string());
        }
    }
    head.content_length = seen_length.unwrap_or(0);
    if head.content_length > MAX_BODY {
        return Err(refuse(413, "request body too large"));
    }
    Ok(Some(head))
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A file of the web folder: its path below the folder, one segment
    /// each (none is empty, `.` or `..`, or starts with a dot).
    File(Vec<String>),
    /// `GET /luahost/config.json`.
    Config,
    /// `POST /luahost/login`.
    Login,
    /// 404.
    NotFound,
    /// 405 (the path exists, not for this method).
    BadMethod,
}

/// Decodes `%XX` escapes (and `+` as a space when `plus`); None for a
/// malformed escape or text that is not UTF-8.
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Routes a request. File paths are decoded and then checked: a segment
/// `..`, a hidden name (starting with a dot), a backslash or a NUL is not
/// found; `/` and paths ending in `/` mean `index.html` there.
pub fn route(method: Method, target: &str) -> Route {
    let path = target.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Route::NotFound;
    }
    let get = matches!(method, Method::Get | Method::Head);
    if let Some(api) = path.strip_prefix(API) {
        return match api {
            "config.json" if get => Route::Config,
            "login" if method == Method::Post => Route::Login,
            "config.json" | "login" => Route::BadMethod,
            _ => Route::NotFound,
        };
    }
    if !get {
        return Route::BadMethod;
    }
    let Some(decoded) = percent_decode(path, false) else {
        return Route::NotFound;
    };
    let mut segs = Vec::new();
    for s in decoded.split('/') {
        if s.is_empty() {
            continue;
        }
        if s.starts_with('.') || s.contains(['\\', '\0']) {
            return Route::NotFound;
        }
        segs.push(s.to_string());
    }
    if decoded.ends_with('/') {
        segs.push("index.html".into());
    }
    Route::File(segs)
}

/// The Content-Type of a file, by its extension.
pub fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A response, before it becomes bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Its Content-Type.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

impl Response {
    /// A plain-text response.
    pub fn text(status: u16, text: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{text}\n").into_bytes(),
        }
    }

    /// A JSON response.
    pub fn json(status: u16, v: &Value) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
        }
    }

    /// `{"ok": false, "reason": ...}` with `status`.
    pub fn refused(status: u16, reason: &str) -> Response {
        Response::json(status, &json!({ "ok": false, "reason": reason }))
    }

    /// The bytes on the wire; `head_only` leaves out the body (HEAD).
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET, HEAD, POST\r\n");
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// The WebSocket address browsers are told: `ws://` (`wss://` with TLS)
/// and the Gate's `ws` listener; when that listens on every address
/// (0.0.0.0 or ::), the host name the browser used (`Host`) with the ws
/// port. None without a ws listener.
pub fn ws_url(ws: Option<SocketAddr>, tls: bool, host: Option<&str>) -> Option<String> {
    let ws = ws?;
    let scheme = if tls { "wss" } else { "ws" };
    let named = host.filter(|_| ws.ip().is_unspecified()).map(|h| {
        // strip a port: "[::1]:80" -> "[::1]", "example.org:80" -> "example.org"
        match h.rfind(':') {
            Some(i) if !h[i..].contains(']') && (!h.starts_with('[') || h[..i].ends_with(']')) => &h[..i],
            _ => h,
        }
    });
    Some(match named {
        Some(h) if !h.is_empty() => format!("{scheme}://{h}:{}/", ws.port()),
        _ => format!("{scheme}://{ws}/"),
    })
}

fn fields(list: &[(String, Ty)]) -> Value {
    Value::Array(list.iter().map(|(n, t)| json!([n, t.to_string()])).collect())
}

/// The names the methods get in the JSON: bare (`hall_getFriends`) unless
/// two of them share it, then `Class.method` (and `Class.method#cid` if
/// even that is shared).
fn names<'a>(ms: &[&'a SchemaMethod]) -> Vec<(String, &'a SchemaMethod)> {
    let bare = |m: &SchemaMethod| m.name.rsplit('.').next().unwrap_or(&m.name).to_string();
    let mut count: HashMap<String, usize> = HashMap::new();
    let mut full: HashMap<&str, usize> = HashMap::new();
    for m in ms {
        *count.entry(bare(m)).or_default() += 1;
        *full.entry(m.name.as_str()).or_default() += 1;
    }
    ms.iter()
        .map(|m| {
            let b = bare(m);
            let name = if count[&b] == 1 {
                b
            } else if full[m.name.as_str()] == 1 {
                m.name.clone()
            } else {
                format!("{}#{}", m.name, m.cid)
            };
            (name, *m)
        })
        .collect()
}

/// `/luahost/config.json`: what a browser client needs to speak to this
/// Gate: the WebSocket address, `client_digi`, the heartbeat, and the
/// client-visible methods and structs of the schema with their types as the
/// schema writes them.
pub fn config_json(schema: &Schema, ws: Option<&str>, heartbeat_ms: u64) -> Value {
    let all: Vec<&SchemaMethod> = (1..=schema.client_count() as u32)
        .filter_map(|cid| schema.by_cid(cid).map(|m| m.as_ref()))
        .collect();
    let calls: Vec<&SchemaMethod> = all.iter().copied().filter(|m| m.client && !m.push).collect();
    let pushes: Vec<&SchemaMethod> = all.iter().copied().filter(|m| m.push).collect();
    let mut methods = Map::new();
    for (name, m) in names(&calls) {
        methods.insert(
            name,
            json!({
                "cid": m.cid,
                "call": m.results.is_some(),
                "args": fields(&m.args),
                "results": m.results.as_deref().map(fields),
            }),
        );
    }
    let mut push_map = Map::new();
    for (name, m) in names(&pushes) {
        push_map.insert(name, json!({ "cid": m.cid, "args": fields(&m.args) }));
    }
    let mut structs = Map::new();
    for (name, s) in &schema.structs {
        structs.insert(name.clone(), fields(&s.fields));
    }
    json!({
        "ws": ws,
        "client_digi": schema.client_digest,
        "heartbeat_ms": heartbeat_ms,
        "methods": methods,
        "pushes": push_map,
        "structs": structs,
    })
}

/// The account and password of a login body: JSON
/// `{"account": "...", "password": "..."}`, or
/// `application/x-www-form-urlencoded` when the Content-Type says so.
///
/// # Errors
///
/// A text for the client: the body is malformed, a field is missing, or
/// the account is not 1 to 128 bytes.
pub fn parse_login(content_type: Option<&str>, body: &[u8]) -> Result<(String, String), &'static str> {
    let (account, password) = if content_type == Some("application/x-www-form-urlencoded") {
        let text = std::str::from_utf8(body).map_err(|_| "the form is not UTF-8")?;
        let (mut account, mut password) = (None, None);
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k, true).ok_or("malformed form")?;
            let v = percent_decode(v, true).ok_or("malformed form")?;
            match k.as_str() {
                "account" => account = Some(v),
                "password" => password = Some(v),
                _ => {}
            }
        }
        (account, password)
    } else {
        let v: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON")?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        (field("account"), field("password"))
    };
    let account = account.ok_or("account (a string) is missing")?;
    let password = password.ok_or("password (a string) is missing")?;
    if account.is_empty() || account.len() > 128 {
        return Err("the account must be 1 to 128 bytes");
    }
    Ok((account, password))
}

/// The answer to an accepted login.
pub fn login_ok(account: &str, token: &str, ws: Option<&str>) -> Response {
    Response::json(
        200,
        &json!({ "ok": true, "account": account, "token": token, "ws": ws }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Method as M, StructDef};
    use std::rc::Rc;

    fn head(s: &str) -> Result<Option<Head>, Refusal> {
        parse_head(s.as_bytes())
    }

    #[test]
    fn heads_parse_strictly() {
        let h = head("GET /a.js?x=1 HTTP/1.1\r\nHost: example.org:8080\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.target, "/a.js?x=1");
        assert_eq!(h.host.as_deref(), Some("example.org:8080"));
        assert_eq!(h.len, 50);
        assert_eq!(head("GET / HTTP/1.1\r\nHost: x\r\n").unwrap(), None);
        let h = head("POST /luahost/login HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 12\r\n\r\n{")
            .unwrap()
            .unwrap();
        assert_eq!((h.method, h.content_length), (Method::Post, 12));
        assert_eq!(h.content_type.as_deref(), Some("application/json"));
        assert_eq!(head("PUT / HTTP/1.1\r\n\r\n").unwrap().unwrap().method, Method::Other);
        let status = |s: &str| head(s).unwrap_err().status;
        assert_eq!(status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 411);
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"), 413);
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(status("GARBAGE\r\n\r\n"), 400);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(&big), 431);
        let many: String = (0..100).map(|i| format!("X{i}: y\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
    }

    #[test]
    fn routes_and_traversal() {
        let file = |v: &[&str]| Route::File(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(route(Method::Get, "/"), file(&["index.html"]));
        assert_eq!(route(Method::Head, "/js/app.js?v=2"), file(&["js", "app.js"]));
        assert_eq!(route(Method::Get, "/a%20b.txt"), file(&["a b.txt"]));
        assert_eq!(route(Method::Get, "/sub/"), file(&["sub", "index.html"]));
        assert_eq!(route(Method::Get, "//x"), file(&["x"]));
        for bad in [
            "/../cluster.lua",
            "/a/../../x",
            "/%2e%2e/cluster.lua",
            "/%2E%2E%2fcluster.lua",
            "/..%5ccluster.lua",
            "/.git/config",
            "/a%00b",
            "/%zz",
            "*",
            "http://example.org/",
        ] {
            assert_eq!(route(Method::Get, bad), Route::NotFound, "{bad}");
        }
        assert_eq!(route(Method::Get, "/luahost/config.json"), Route::Config);
        assert_eq!(route(Method::Post, "/luahost/login"), Route::Login);
        assert_eq!(route(Method::Get, "/luahost/login"), Route::BadMethod);
        assert_eq!(route(Method::Post, "/luahost/config.json"), Route::BadMethod);
        assert_eq!(route(Method::Get, "/luahost/other"), Route::NotFound);
        assert_eq!(route(Method::Post, "/index.html"), Route::BadMethod);
        assert_eq!(route(Method::Other, "/"), Route::BadMethod);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a.MJS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x.svg"), "image/svg+xml");
        assert_eq!(content_type("README"), "application/octet-stream");
        assert_eq!(content_type("a.wasm"), "application/octet-stream");
    }

    #[test]
    fn responses() {
        let r = Response::text(404, "not found");
        let b = String::from_utf8(r.to_bytes(false)).unwrap();
        assert!(b.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(b.contains("Content-Length: 10\r\n"));
        assert!(b.contains("Cache-Control: no-cache\r\n"));
        assert!(b.ends_with("\r\n\r\nnot found\n"));
        let h = String::from_utf8(r.to_bytes(true)).unwrap();
        assert!(h.ends_with("\r\n\r\n") && h.contains("Content-Length: 10\r\n"));
        let b = String::from_utf8(Response::text(405, "no").to_bytes(false)).unwrap();
        assert!(b.contains("Allow: GET, HEAD, POST\r\n"));
    }

    #[test]
    fn ws_urls() {
        let a = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert_eq!(ws_url(None, false, None), None);
        assert_eq!(
            ws_url(a("127.0.0.1:7301"), false, Some("x:1")).unwrap(),
            "ws://127.0.0.1:7301/"
        );
        assert_eq!(
            ws_url(a("127.0.0.1:7301"), true, None).unwrap(),
            "wss://127.0.0.1:7301/"
        );
        assert_eq!(
            ws_url(a("0.0.0.0:7301"), false, Some("game.example:80")).unwrap(),
            "ws://game.example:7301/"
        );
        assert_eq!(
            ws_url(a("[::]:7301"), false, Some("[::1]:80")).unwrap(),
            "ws://[::1]:7301/"
        );
        assert_eq!(
            ws_url(a("[::]:7301"), false, Some("[::1]")).unwrap(),
            "ws://[::1]:7301/"
        );
        assert_eq!(ws_url(a("0.0.0.0:7301"), false, None).unwrap(), "ws://0.0.0.0:7301/");
    }

    fn method(id: u32, name: &str, cid: u32, push: bool, results: bool) -> M {
        let int = crate::schema::parse_type("int48", &HashMap::new()).unwrap();
        M {
            id,
            name: name.into(),
            server_type: if push { 0 } else { 2 },
            args: vec![("rid".into(), int.clone())],
            results: results.then(|| vec![("n".into(), int)]),
            client: !push,
            push,
            cid,
        }
    }

    #[test]
    fn config_names_and_types() {
        let mut s = Schema::new(7);
        s.client_digest = 0xdead_beef;
        s.add(method(1, "Player.echo", 1, false, true)).unwrap();
        s.add(method(2, "Player.poke", 2, false, false)).unwrap();
        s.add(method(3, "Guild.poke", 3, false, false)).unwrap();
        s.add(method(4, "Player.onEvent", 4, true, false)).unwrap();
        s.add(method(5, "Player.secret", 0, false, true).with_client(false))
            .unwrap();
        let place = StructDef {
            name: "FriendPlace".into(),
            fields: vec![
                (
                    "rid".into(),
                    crate::schema::parse_type("int48", &HashMap::new()).unwrap(),
                ),
                (
                    "hall".into(),
                    crate::schema::parse_type("uint32", &HashMap::new()).unwrap(),
                ),
            ],
        };
        s.structs.insert("FriendPlace".into(), Rc::new(place));
        let v = config_json(&s, Some("ws://127.0.0.1:1/"), 10_000);
        assert_eq!(v["ws"], "ws://127.0.0.1:1/");
        assert_eq!(v["client_digi"], 0xdead_beefu32);
        assert_eq!(v["heartbeat_ms"], 10_000);
        assert_eq!(
            v["methods"]["echo"],
            json!({"cid": 1, "call": true, "args": [["rid", "int48"]], "results": [["n", "int48"]]})
        );
        assert_eq!(v["methods"]["Player.poke"]["results"], Value::Null);
        assert_eq!(v["methods"]["Guild.poke"]["cid"], 3);
        assert!(v["methods"].get("poke").is_none());
        assert!(v["methods"].get("secret").is_none());
        assert_eq!(v["pushes"]["onEvent"], json!({"cid": 4, "args": [["rid", "int48"]]}));
        assert_eq!(
            v["structs"]["FriendPlace"],
            json!([["rid", "int48"], ["hall", "uint32"]])
        );
        assert_eq!(config_json(&s, None, 1)["ws"], Value::Null);
    }

    trait WithClient {
        fn with_client(self, c: bool) -> Self;
    }
    impl WithClient for M {
        fn with_client(mut self, c: bool) -> Self {
            self.client = c;
            self
        }
    }

    #[test]
    fn login_bodies() {
        let j = Some("application/json");
        assert_eq!(
            parse_login(j, br#"{"account":"ann","password":"pw"}"#).unwrap(),
            ("ann".into(), "pw".into())
        );
        assert_eq!(
            parse_login(None, br#"{"account":"ann","password":"pw"}"#).unwrap(),
            ("ann".into(), "pw".into())
        );
        let f = Some("application/x-www-form-urlencoded");
        assert_eq!(
            parse_login(f, b"account=a%20b&password=p+w%26&x=1").unwrap(),
            ("a b".into(), "p w&".into())
        );
        assert!(parse_login(j, b"{").is_err());
        assert!(parse_login(j, br#"{"account":"ann"}"#)
            .unwrap_err()
            .contains("password"));
        assert!(parse_login(j, br#"{"account":5,"password":"x"}"#)
            .unwrap_err()
            .contains("account"));
        assert!(parse_login(j, br#"{"account":"","password":"x"}"#).is_err());
        assert!(parse_login(f, b"account=%zz&password=x").is_err());
    }
}
