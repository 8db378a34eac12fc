//! The Gate's web listener (`gate.http`, HTTPS with `gate.tls`): the files
//! of `gate.web`, `/luahost/config.json` and `/luahost/login` for browser
//! clients. One task per connection, one request per connection; the HTTP
//! itself is `rpc::gate::web`'s. A login asks the Gate's Lua
//! (`Dispatch::Client` event `web_login`, answered by
//! `core.gate_web_reply`) and, when it says yes, the answer carries a login
//! token made here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use mlua::{MultiValue, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info, warn};

use super::gatestate::{GateState, WebAnswer};
use super::node::Core;
use crate::lua::dispatch::Dispatch;
use crate::net::client::{Incoming, RawConn};
use crate::rpc::gate::web::{self, Head, Method, Response, Route, MAX_BODY, MAX_HEAD};

/// How long a login token handed out by `/luahost/login` is valid.
const TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Largest file served from the web folder.
const MAX_FILE: u64 = 16 * 1024 * 1024;
/// How long writing a response may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long, and how many bytes, a closing connection reads and drops.
const DRAIN_TIME: Duration = Duration::from_secs(1);
const DRAIN_BYTES: usize = 64 * 1024;

/// Starts the web listener's accept loop, if the Gate has one.
pub(crate) fn start(core: &Rc<Core>) {
    let Some(g) = core.gate.as_ref() else { return };
    let Some(l) = g.http.borrow_mut().take() else { return };
    if let Ok(addr) = l.local_addr() {
        let scheme = if l.is_tls() { "https" } else { "http" };
        info!("gate of {} serving the web on {scheme}://{addr}/", core.me.name);
    }
    crate::net::spawn(super::gate::accept_loop(
        core.clone(),
        l,
        "web accept failures",
        http_task,
    ));
}

/// Reads one request (head and body) before `deadline`. Err holds the
/// response to send (or None: close without one).
async fn read_request(conn: &mut RawConn, deadline: Instant) -> Result<(Head, Vec<u8>), Option<Response>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head = loop {
        match web::parse_head(&buf) {
            Ok(Some(h)) => break h,
            Ok(None) => {}
            Err(r) => return Err(Some(Response::text(r.status, r.reason))),
        }
        let n = match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(None),
            Ok(Ok(n)) => n,
            Err(_) if buf.is_empty() => return Err(None),
            Err(_) => return Err(Some(Response::text(408, "request not complete in time"))),
        };
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_HEAD + MAX_BODY {
            return Err(Some(Response::text(431, "request head too large")));
        }
    };
    if head.method == Method::Post && head.content_length == 0 {
        return Err(Some(Response::text(411, "a POST needs Content-Length")));
    }
    let want = head.len + head.content_length;
    while buf.len() < want {
        let n = match tokio::time::timeout_at(deadline, conn.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err(None),
            Ok(Ok(n)) => n,
            Err(_) => return Err(Some(Response::text(408, "request not complete in time"))),
        };
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.get(head.len..want).unwrap_or_default().to_vec();
    Ok((head, body))
}

/// Serves one web connection: one request, one response, close.
async fn http_task(core: Rc<Core>, incoming: Incoming, addr: SocketAddr) {
    let Some(g) = core.gate.as_ref() else { return };
    let Some(admitted) = g.admit(addr.ip()) else {
        if core.limited("web clients refused: too many verifying") {
            warn!("gate: web client {addr} closed: too many clients verifying (max_verifying / max_verifying_per_ip)");
        }
        return;
    };
    let deadline = Instant::now() + g.cfg.verify_timeout;
    let mut conn = match tokio::time::timeout_at(deadline, incoming.open_raw()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            if core.limited("web TLS handshakes failed") {
                info!("gate: web client {addr}: {e}");
            }
            return;
        }
        Err(_) => return,
    };
    let (head, body) = match read_request(&mut conn, deadline).await {
        Ok(r) => r,
        Err(resp) => {
            drop(admitted);
            if let Some(resp) = resp {
                if core.limited("bad web requests") {
                    info!("gate: web client {addr}: refused with {}", resp.status);
                }
                write_response(&mut conn, &resp, false).await;
            }
            return;
        }
    };
    // waiting for Lua (a login) does not hold a verifying place
    drop(admitted);
    let resp = match web::route(head.method, &head.target) {
        Route::NotFound => Response::text(404, "not found"),
        Route::BadMethod => Response::text(405, "method not allowed"),
        Route::File(segs) => match g.cfg.web.clone() {
            None => Response::text(404, "not found"),
            Some(root) => serve_file(root, segs).await,
        },
        Route::Config => match core.schema() {
            None => Response::refused(503, "the Gate is not ready"),
            Some(schema) => {
                let ws = ws_url(g, &head);
                let hb = g.cfg.heartbeat.as_millis() as u64;
                Response::json(200, &web::config_json(&schema, ws.as_deref(), hb))
            }
        },
        Route::Login => match web::parse_login(head.content_type.as_deref(), &body) {
            Err(why) => Response::refused(400, why),
            Ok((account, password)) => {
                let ws = ws_url(g, &head);
                core.web_login(&account, &password, addr, ws.as_deref()).await
            }
        },
    };
    write_response(&mut conn, &resp, head.method == Method::Head).await;
}

fn ws_url(g: &GateState, head: &Head) -> Option<String> {
    web::ws_url(g.cfg.ws, g.cfg.tls.is_some(), head.host.as_deref())
}

/// Writes the response and closes: the write side first, then, after what
/// the client still sends is read (a body not taken: closing with unread
/// bytes would reset the connection and could lose the response), the rest.
async fn write_response(conn: &mut RawConn, resp: &Response, head_only: bool) {
    let bytes = resp.to_bytes(head_only);
    let written = tokio::time::timeout(WRITE_TIMEOUT, async {
        conn.write_all(&bytes).await?;
        conn.flush().await?;
        conn.shutdown().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            let mut sink = [0u8; 4096];
            let mut left = DRAIN_BYTES;
            while left > 0 {
                match conn.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}

/// Reads `segs` below `root` (off the node's thread): 404 for anything
/// that is not a regular file inside the folder (after symbolic links).
async fn serve_file(root: PathBuf, segs: Vec<String>) -> Response {
    let name = segs.last().cloned().unwrap_or_default();
    let read = tokio::task::spawn_blocking(move || -> Option<Vec<u8>> {
        let root = root.canonicalize().ok()?;
        let path: PathBuf = segs.iter().fold(root.clone(), |p, s| p.join(s));
        let path = path.canonicalize().ok()?;
        if !path.starts_with(&root) {
            return None;
        }
        let meta = std::fs::metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > MAX_FILE {
            return None;
        }
        read_bounded(&path)
    })
    .await;
    match read {
        Ok(Some(body)) => Response {
            status: 200,
            content_type: web::content_type(&name),
            body,
        },
        Ok(None) => Response::text(404, "not found"),
        Err(_) => Response::text(500, "internal error"),
    }
}

fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_FILE)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

impl Core {
    /// Asks the Gate's Lua whether `account` may log in with `password`;
    /// the response to the browser.
    async fn web_login(&self, account: &str, password: &str, addr: SocketAddr, ws: Option<&str>) -> Response {
        let Some(g) = self.gate.as_ref() else {
            return Response::refused(404, "not a Gate");
        };
        let id = g.next_web.get();
        g.next_web.set(id + 1);
        let (tx, rx) = oneshot::channel();
        g.web_logins.borrow_mut().insert(id, tx);
        let build = || -> mlua::Result<MultiValue> {
            let mut mv = MultiValue::with_capacity(6);
            mv.push_back(Value::Integer(Dispatch::Client.id()));
            mv.push_back(Value::String(self.lua.create_string("web_login")?));
            mv.push_back(Value::Integer(id as i64));
            mv.push_back(Value::String(self.lua.create_string(account)?));
            mv.push_back(Value::String(self.lua.create_string(password)?));
            mv.push_back(Value::String(self.lua.create_string(addr.to_string())?));
            Ok(mv)
        };
        match build() {
            Ok(mv) => self.call_lua(mv),
            Err(e) => {
                g.web_logins.borrow_mut().remove(&id);
                warn!("gate: cannot tell Lua about a web login: {e}");
                return Response::refused(500, "internal error");
            }
        }
        let limit = self.cluster.borrow().call_timeout;
        let answer = match tokio::time::timeout(limit, rx).await {
            Ok(Ok(a)) => a,
            Ok(Err(_)) | Err(_) => {
                g.web_logins.borrow_mut().remove(&id);
                if self.limited("web logins not answered in time") {
                    warn!("gate: the web login of {addr} had no answer from Lua within call_timeout");
                }
                return Response::refused(503, "the server did not answer in time");
            }
        };
        if !answer.ok {
            return Response::refused(answer.status.unwrap_or(403), &answer.reason);
        }
        match self.gate_token(account, TOKEN_TTL) {
            Ok(token) => web::login_ok(account, &token, ws),
            Err(e) => Response::refused(400, &e),
        }
    }

    /// Lua's answer to web login `id` (`core.gate_web_reply`); false when
    /// no such login waits (answered already, or timed out).
    pub(crate) fn gate_web_reply(&self, id: u64, ok: bool, reason: &str, status: Option<u16>) -> bool {
        let Some(g) = self.gate.as_ref() else { return false };
        let Some(tx) = g.web_logins.borrow_mut().remove(&id) else {
            return false;
        };
        let status = status.filter(|s| (400..600).contains(s));
        tx.send(WebAnswer {
            ok,
            reason: reason.to_string(),
            status,
        })
        .is_ok()
    }
}
