//! The Gate: game clients' connections on a node whose cluster entry has a
//! `gate` table (see docs/protocol.md for what clients speak).
//!
//! A client connection is served by one task of the node's thread
//! ([`client_task`]): it opens TLS / WebSocket, waits for the verify, then
//! reads messages and relays them. The decisions are the pure parts in
//! `rpc::gate` (sessions, resume buffers, limits); the node's Lua decides
//! only where a verified client is bound (`gate.lua`). Client calls and sends
//! go to the bound entity's node with their arguments copied as the client
//! wrote them ([`proto::put_client_request`]); the reply comes back through
//! the node's pending calls ([`Core::relay_reply`]); pushes from backends are
//! sequenced per session and kept for a resume ([`Core::on_push`]).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use mlua::{MultiValue, Value};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::gatestate::{random, ClientLink};
use super::node::Core;
use crate::codec::client::{self, ClientMsg};
use crate::codec::token::{self, TokenError, TokenKey};
use crate::codec::wire::Message;
use crate::lua::dispatch::Dispatch;
use crate::net::client::{ClientListener, ClientWriter, Incoming};
use crate::rpc::gate::limits::{Fault, Idle};
use crate::rpc::gate::sessions::Binding;

/// Largest message from a client before it verified.
const MAX_VERIFY_MESSAGE: usize = 4096;
/// How long a closing connection may take to write what is queued for it.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Starts the Gate's accept loops and its session expiry.
pub(crate) fn start(core: &Rc<Core>) {
    let Some(g) = core.gate.as_ref() else { return };
    for l in g.listeners.borrow_mut().drain(..) {
        if let Ok(addr) = l.local_addr() {
            info!(
                "gate of {} accepting clients on {addr} ({})",
                core.me.name,
                l.transport()
            );
        }
        crate::net::spawn(accept_loop(core.clone(), l, "client accept failures", client_task));
    }
    crate::net::spawn(expiry_task(core.clone()));
}

/// Accepts connections on one of the Gate's listeners (clients or web) and
/// serves each with `serve` in a task of its own; `what` names them in the
/// (rate-limited) log of accept failures.
pub(crate) async fn accept_loop<F, Fut>(core: Rc<Core>, listener: ClientListener, what: &'static str, serve: F)
where
    F: Fn(Rc<Core>, Incoming, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    loop {
        match listener.accept().await {
            Ok((incoming, addr)) => {
                crate::net::spawn(serve(core.clone(), incoming, addr));
            }
            Err(e) => {
                if core.limited(what) {
                    warn!("gate: {what}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one client connection from accept to close.
async fn client_task(core: Rc<Core>, incoming: Incoming, addr: SocketAddr) {
    let Some(g) = core.gate.as_ref() else { return };
    g.stats.accepted.set(g.stats.accepted.get() + 1);
    let Some(admitted) = g.admit(addr.ip()) else {
        if core.limited("clients refused: too many verifying") {
            warn!("gate: client {addr} closed: too many clients verifying (max_verifying / max_verifying_per_ip)");
        }
        return;
    };
    let deadline = Instant::now() + g.cfg.verify_timeout;
    let conn = match tokio::time::timeout_at(deadline, incoming.open(MAX_VERIFY_MESSAGE)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            if core.limited("client handshakes failed (TLS or WebSocket)") {
                warn!("gate: client {addr}: {e}");
            }
            return;
        }
        Err(_) => {
            if core.limited("clients that did not verify in time") {
                info!("gate: client {addr} closed: no TLS/WebSocket handshake within verify_timeout");
            }
            return;
        }
    };
    let (mut rd, wr) = conn.into_split();
    let id = g.next_conn.get();
    g.next_conn.set(id + 1);
    let link = Rc::new(ClientLink::new(id, addr, &g.cfg, Instant::now()));
    g.conns.borrow_mut().insert(id, link.clone());
    let verified = async {
        let first = match tokio::time::timeout_at(deadline, rd.next()).await {
            Err(_) => {
                link.send(|o| client::put_verify_failed(o, "timeout", "no verify within verify_timeout"));
                link.close("timeout");
                if core.limited("clients that did not verify in time") {
                    info!("gate: client {addr} closed: no verify within verify_timeout");
                }
                return false;
            }
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => return false,
            Ok(Err(e)) => {
                if core.limited("client connections failed before verify") {
                    info!("gate: client {addr} before verify: {e}");
                }
                return false;
            }
        };
        if !core.gate_verify(&link, &first) {
            return false;
        }
        // Lua decides where the client goes (gate.lua); the bind is a call,
        // bounded by call_timeout
        let limit = core.cluster.borrow().call_timeout + g.cfg.verify_timeout;
        let wait = async {
            loop {
                if let Some(ok) = link.decided.get() {
                    return ok;
                }
                link.decided_wake.notified().await;
            }
        };
        match tokio::time::timeout(limit, wait).await {
            Ok(ok) => ok,
            Err(_) => {
                core.gate_refuse_session(
                    link.session.get(),
                    "no_backend",
                    "the server did not take the client in time",
                );
                false
            }
        }
    };
    // The writer is a task of its own: a write is never cancelled half way
    // (a frame cut in two), whatever ends the connection.
    let writer = crate::net::spawn({
        let link = link.clone();
        let mut wr = wr;
        async move {
            write_loop(&link, &mut wr).await;
            let _ = wr.close().await;
            // (a failed write ends the connection too)
            link.close("closed");
        }
    });
    let ok = tokio::select! {
        ok = verified => ok,
        _ = link.closed.notified() => false,
    };
    drop(admitted);
    if ok && link.closing.get().is_none() {
        rd.set_max_message(g.cfg.max_message);
        link.last_rx.set(Instant::now());
        let heartbeat = g.cfg.heartbeat;
        let reader = async {
            loop {
                match rd.next().await {
                    Ok(Some(m)) => {
                        link.last_rx.set(Instant::now());
                        core.gate_on_message(&link, &m);
                        if link.closing.get().is_some() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        if link.fault(Fault::BadFrame) && core.limited("client protocol errors") {
                            info!("gate: client {addr} (session {}): {e}", link.session.get());
                        }
                        link.notice("bad_frame", "malformed message", true);
                        return;
                    }
                }
            }
        };
        let idle = async {
            let mut rule = Idle::new(heartbeat, Instant::now());
            loop {
                rule.seen(link.last_rx.get());
                tokio::time::sleep_until(rule.deadline()).await;
                rule.seen(link.last_rx.get());
                if rule.expired(Instant::now()) {
                    link.notice("idle", "no message for three heartbeats", true);
                    return;
                }
            }
        };
        tokio::select! {
            _ = reader => {}
            _ = idle => {}
            _ = link.closed.notified() => {}
        }
    }
    // what was queued (a notice) goes out, within a bound
    link.close("closed");
    let abort = writer.abort_handle();
    if tokio::time::timeout(CLOSE_GRACE, writer).await.is_err() {
        abort.abort();
    }
    core.gate_conn_closed(&link);
}

/// Writes what is queued for the client; returns when the connection must
/// close (and everything queued was written) or the write fails.
async fn write_loop(link: &ClientLink, wr: &mut ClientWriter) {
    loop {
        let chunk = link.out.borrow_mut().split();
        if !chunk.is_empty() {
            link.writing.set(true);
            let r = wr.write(&chunk).await;
            link.writing.set(false);
            if r.is_err() {
                return;
            }
            continue;
        }
        if link.closing.get().is_some() {
            return;
        }
        {
            // an idle client keeps no output buffer (the allocation just
            // written from stays shared with the empty queue until replaced)
            let mut out = link.out.borrow_mut();
            if out.is_empty() {
                *out = BytesMut::new();
            }
        }
        link.wake.notified().await;
    }
}

/// Tells Lua that sessions detached for longer than the resume grace are
/// lost.
async fn expiry_task(core: Rc<Core>) {
    let Some(g) = core.gate.as_ref() else { return };
    loop {
        let next = g.sessions.borrow().next_deadline();
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = g.expiry.notified() => continue,
                }
            }
            None => {
                g.expiry.notified().await;
                continue;
            }
        }
        let expired = g.sessions.borrow_mut().expire(Instant::now());
        for e in expired {
            debug!("gate: session {} of {} lost (no resume in time)", e.id, e.account);
            core.client_event("lost", e.id, &e.account, e.binding, &[]);
        }
    }
}

fn token_code(e: &TokenError) -> &'static str {
    match e {
        TokenError::Expired => "expired",
        _ => "bad_token",
    }
}

impl Core {
    /// Handles the first message of a client: a verify. Returns true when
    /// the client is verified and waits for Lua to bind it (a fresh login)
    /// or was resumed (then it is decided already).
    fn gate_verify(&self, link: &Rc<ClientLink>, msg: &Message) -> bool {
        let Some(g) = self.gate.as_ref() else { return false };
        let fail = |code: &'static str, text: &str| {
            g.stats.refused.set(g.stats.refused.get() + 1);
            link.send(|o| client::put_verify_failed(o, code, text));
            link.close(code);
            if self.limited("clients refused at verify") {
                info!("gate: client {} refused: {code}: {text}", link.addr);
            }
            false
        };
        let req = match client::parse_client(&msg.data) {
            Ok(ClientMsg::Verify(v)) => v,
            Ok(_) => return fail("malformed", "the first message must be a verify"),
            Err(e) => return fail("malformed", &e.to_string()),
        };
        let Some(schema) = self.schema() else {
            return fail("no_backend", "the Gate is not ready");
        };
        if req.client_digi != schema.client_digest {
            return fail(
                "digest",
                &format!(
                    "client digest {:08x} does not match the server's {:08x}: update the client",
                    req.client_digi, schema.client_digest
                ),
            );
        }
        let now = Instant::now();
        if let Some(r) = &req.resume {
            let res = g
                .sessions
                .borrow_mut()
                .resume(r.session_id, r.resume_token, r.last_seq, link.id, now);
            return match res {
                Ok(resumed) => {
                    if let Some(old) = resumed.previous_conn.and_then(|c| g.conn(c)) {
                        old.notice("replaced", "this session resumed on another connection", true);
                    }
                    link.session.set(r.session_id);
                    let mut token = [0u8; 16];
                    token.copy_from_slice(r.resume_token);
                    link.resume_token.set(token);
                    let hb = g.cfg.heartbeat.as_millis() as u32;
                    link.send(|o| {
                        client::put_verify_ok(o, r.session_id, &token, hb, true, resumed.last_seq);
                        for f in &resumed.replay {
                            o.extend_from_slice(f);
                        }
                    });
                    g.stats.resumed.set(g.stats.resumed.get() + 1);
                    debug!(
                        "gate: session {} of {} resumed from {} ({} pushes replayed)",
                        r.session_id,
                        resumed.account,
                        link.addr,
                        resumed.replay.len()
                    );
                    link.decide(true);
                    true
                }
                Err(e) => fail("resume_expired", &e.to_string()),
            };
        }
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if !g.cfg.lua_verify {
            if let Err(e) = token::check(&g.key, req.token, req.account, unix) {
                return fail(token_code(&e), &e.to_string());
            }
        }
        let resume_token = random::<16>();
        let login = g.sessions.borrow_mut().login(req.account, link.id, resume_token, now);
        link.session.set(login.id);
        link.resume_token.set(resume_token);
        if let Some(old) = login.replaced {
            g.stats.replaced.set(g.stats.replaced.get() + 1);
            if let Some(c) = old.conn.and_then(|c| g.conn(c)) {
                c.notice("replaced", "a newer login of this account took over", true);
            }
            self.client_event("replaced", old.id, req.account, old.binding, &[]);
        }
        let addr = link.addr.to_string();
        // (with verify = "lua" the Gate's Lua checks the token itself)
        if g.cfg.lua_verify {
            self.client_event("login", login.id, req.account, None, &[&addr, req.token, "lua"]);
        } else {
            self.client_event("login", login.id, req.account, None, &[&addr]);
        }
        true
    }

    /// Lua accepted the login of `session`: it is bound to entity `eid` on
    /// node `sid`, and its client hears verify-ok.
    pub(crate) fn gate_accept(&self, session: u64, sid: u32, eid: i64) -> Result<(), String> {
        let g = self.gate.as_ref().ok_or("this node is not a Gate")?;
        let last_seq = {
            let mut s = g.sessions.borrow_mut();
            let last = s
                .get(session)
                .ok_or_else(|| format!("no session {session}"))?
                .last_seq();
            s.bind(session, Binding { sid, eid });
            last
        };
        let Some(link) = g.session_conn(session) else {
            return Err(format!("session {session} has no connection"));
        };
        let token = link.resume_token.get();
        let hb = g.cfg.heartbeat.as_millis() as u32;
        let early = std::mem::take(&mut *link.early.borrow_mut());
        // (pushes that came before: verify-ok says no push was sent yet)
        let first = early.len() as u32;
        link.send(|o| {
            client::put_verify_ok(o, session, &token, hb, false, last_seq.wrapping_sub(first));
            for f in &early {
                o.extend_from_slice(f);
            }
        });
        g.stats.verified.set(g.stats.verified.get() + 1);
        link.decide(true);
        Ok(())
    }

    /// Lua refused the login of `session`: verify-failed, close, forget it.
    pub(crate) fn gate_refuse_session(&self, session: u64, code: &str, text: &str) {
        let Some(g) = self.gate.as_ref() else { return };
        let link = g.session_conn(session);
        g.sessions.borrow_mut().remove(session);
        if let Some(link) = link {
            g.stats.refused.set(g.stats.refused.get() + 1);
            link.send(|o| client::put_verify_failed(o, code, text));
            link.close("refused");
            link.decide(false);
        }
    }

    /// Moves `session` to entity `eid` on node `sid` (the entity handed its
    /// client on, or Lua rebound it after its node was lost).
    pub(crate) fn gate_bind(&self, session: u64, sid: u32, eid: i64) -> Result<(), String> {
        let g = self.gate.as_ref().ok_or("this node is not a Gate")?;
        if g.sessions.borrow_mut().bind(session, Binding { sid, eid }) {
            Ok(())
        } else {
            Err(format!("no session {session}"))
        }
    }

    /// Ends `session`: its client gets a closing notice; no `lost` event
    /// follows (whoever kicked knows). False when there was no such session.
    pub(crate) fn gate_kick(&self, session: u64, code: &str, text: &str) -> bool {
        let Some(g) = self.gate.as_ref() else { return false };
        let link = g.session_conn(session);
        let existed = g.sessions.borrow_mut().remove(session).is_some();
        if let Some(link) = link {
            link.send(|o| client::put_notice(o, code, text, true));
            link.close("kicked");
            link.decide(false);
        }
        existed
    }

    /// A notice to the client of `session` (not closing). False when it is
    /// not connected.
    pub(crate) fn gate_notice(&self, session: u64, code: &str, text: &str) -> bool {
        let Some(g) = self.gate.as_ref() else { return false };
        match g.session_conn(session) {
            Some(link) => link.send(|o| client::put_notice(o, code, text, false)),
            None => false,
        }
    }

    /// A login token for `account`, valid `ttl` (on any node: the key comes
    /// from the cluster secret).
    /// The Gate's counters and what it holds now (`core.gate_stats`).
    pub(crate) fn gate_stats(&self) -> Option<Vec<(&'static str, u64)>> {
        let g = self.gate.as_ref()?;
        let s = &g.stats;
        let conns = g.conns.borrow();
        let queued: usize = conns.values().map(|l| l.out.borrow().len()).sum();
        Some(vec![
            ("accepted", s.accepted.get()),
            ("verified", s.verified.get()),
            ("refused", s.refused.get()),
            ("resumed", s.resumed.get()),
            ("replaced", s.replaced.get()),
            ("faults", s.faults.get()),
            ("busy", s.busy.get()),
            ("sessions", g.sessions.borrow().len() as u64),
            ("conns", conns.len() as u64),
            ("queued", queued as u64),
        ])
    }

    pub(crate) fn gate_token(&self, account: &str, ttl: Duration) -> Result<String, String> {
        if account.is_empty() || account.len() > 128 {
            return Err("gate.token: the account must be 1 to 128 bytes".into());
        }
        let key = TokenKey::from_secret(&self.cluster.borrow().secret);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(token::make(&key, account, unix + ttl.as_secs().max(1), random::<8>()))
    }

    /// A client connection ended: its session waits for a resume.
    fn gate_conn_closed(&self, link: &ClientLink) {
        let Some(g) = self.gate.as_ref() else { return };
        g.conns.borrow_mut().remove(&link.id);
        let session = link.session.get();
        if session != 0 && g.sessions.borrow_mut().detach(session, link.id, Instant::now()) {
            g.expiry.notify_one();
        }
    }

    /// Node `sid` went offline: the Gate's Lua hears of each session bound
    /// to it (`backend_lost`), and decides.
    pub(crate) fn gate_backend_lost(&self, sid: u32) {
        let Some(g) = self.gate.as_ref() else { return };
        let ids = g.sessions.borrow().bound_to(sid);
        for id in ids {
            let (account, binding) = {
                let s = g.sessions.borrow();
                match s.get(id) {
                    Some(st) => (st.account().to_string(), s.binding(id)),
                    None => continue,
                }
            };
            self.client_event("backend_lost", id, &account, binding, &[]);
        }
    }

    /// `(CLIENT, event, session, account, sid, eid, extra...)` to the Gate's
    /// Lua.
    pub(crate) fn client_event(
        &self,
        event: &str,
        session: u64,
        account: &str,
        binding: Option<Binding>,
        extra: &[&str],
    ) {
        let build = || -> mlua::Result<MultiValue> {
            let mut mv = MultiValue::with_capacity(7);
            mv.push_back(Value::Integer(Dispatch::Client.id()));
            mv.push_back(Value::String(self.lua.create_string(event)?));
            mv.push_back(Value::Integer(session as i64));
            mv.push_back(Value::String(self.lua.create_string(account)?));
            match binding {
                Some(b) => {
                    mv.push_back(Value::Integer(b.sid as i64));
                    mv.push_back(Value::Integer(b.eid));
                }
                None => {
                    mv.push_back(Value::Nil);
                    mv.push_back(Value::Nil);
                }
            }
            for x in extra {
                mv.push_back(Value::String(self.lua.create_string(x)?));
            }
            Ok(mv)
        };
        match build() {
            Ok(mv) => self.call_lua(mv),
            Err(e) => warn!("gate: cannot tell Lua about {event} of session {session}: {e}"),
        }
    }

    /// Closes every client (the node stops).
    pub(crate) fn gate_shutdown(&self) {
        let Some(g) = self.gate.as_ref() else { return };
        let conns: Vec<Rc<ClientLink>> = g.conns.borrow().values().cloned().collect();
        for c in conns {
            c.notice("shutdown", "the server is stopping", true);
        }
    }
}
