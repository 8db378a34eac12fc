//! A Gate's relaying (see [`super::gate`] for its connections): a verified
//! client's calls and sends forwarded to its entity's node with their
//! arguments copied unread, their replies and failures passed back as codes,
//! and backends' pushes sequenced per session and kept for a resume.

use std::rc::Rc;

use bytes::BytesMut;
use tokio::time::Instant;
use tracing::warn;

use super::gatestate::{ClientLink, Relay};
use super::node::Core;
use crate::codec::client::{self, ClientMsg};
use crate::codec::mpack::Reader;
use crate::codec::proto::{self, PushTarget};
use crate::codec::wire::Message;
use crate::net::link::Req;
use crate::rpc::error::{CallError, BAD_REQUEST, CLIENT_ERROR};
use crate::rpc::gate::limits::Fault;

/// Refused messages (rate limit) in a row after which a client is closed.
const FLOOD_CLOSE: u32 = 1000;

impl Core {
    /// A message from a verified client.
    pub(crate) fn gate_on_message(&self, link: &Rc<ClientLink>, msg: &Message) {
        let Some(g) = self.gate.as_ref() else { return };
        let parsed = match client::parse_client(&msg.data) {
            Ok(m) => m,
            Err(e) => {
                self.client_fault(link, Fault::BadFrame, &e.to_string());
                link.notice("bad_frame", "malformed message", true);
                return;
            }
        };
        let (call, method, nargs, args) = match parsed {
            ClientMsg::Ping => {
                link.send(client::put_pong);
                return;
            }
            ClientMsg::Ack { seq } => {
                if let Err(e) = g.sessions.borrow_mut().ack(link.session.get(), seq) {
                    self.client_fault(link, Fault::BadFrame, &format!("bad ack: {e}"));
                }
                return;
            }
            ClientMsg::Verify(_) => {
                self.client_fault(link, Fault::BadFrame, "a second verify");
                link.notice("bad_frame", "already verified", true);
                return;
            }
            ClientMsg::Call { .. } if msg.session == 0 => {
                self.client_fault(link, Fault::BadFrame, "a call with session 0");
                link.notice("bad_frame", "a call needs a session id other than 0", true);
                return;
            }
            ClientMsg::Call { method, nargs, args } => (true, method, nargs, args),
            ClientMsg::Send { method, nargs, args } => (false, method, nargs, args),
        };
        let err = |code: &'static str, text: &str| {
            if call {
                link.send(|o| client::put_reply_err(o, msg.session, code, text));
            }
        };
        if !link.bucket.borrow_mut().take(Instant::now()) {
            let n = link.refused_in_a_row.get() + 1;
            link.refused_in_a_row.set(n);
            self.client_fault(link, Fault::Flood, "above the message rate limit");
            if n >= FLOOD_CLOSE {
                link.notice("flood", "too many messages", true);
            } else {
                err("rate_limited", "too many messages; slow down");
            }
            return;
        }
        link.refused_in_a_row.set(0);
        let Some(schema) = self.schema() else {
            return err("busy", "the Gate is not ready");
        };
        let m = match schema.by_cid(method) {
            Some(m) if m.client && !m.push => m,
            _ => {
                self.client_fault(
                    link,
                    Fault::NotExposed,
                    &format!("method {method} is not callable by clients"),
                );
                return err("bad_request", &format!("no method {method} for clients"));
            }
        };
        if call != m.results.is_some() {
            self.client_fault(link, Fault::BadArgs, &format!("{} sent as the wrong kind", m.name));
            return err(
                "bad_request",
                &format!("{} is a {}", m.name, if call { "send" } else { "call" }),
            );
        }
        if nargs != m.args.len() {
            self.client_fault(link, Fault::BadArgs, &format!("{}: {nargs} arguments", m.name));
            return err(
                "bad_request",
                &format!("{}: {nargs} arguments, {} declared", m.name, m.args.len()),
            );
        }
        let session = link.session.get();
        let Some(b) = g.sessions.borrow().binding(session) else {
            return err("node_down", "the session is not bound to a server");
        };
        let Some(peer) = self.peer(b.sid) else {
            return err("node_down", "the server is gone");
        };
        let (max_queue, timeout) = {
            let c = self.cluster.borrow();
            (c.max_queue, c.call_timeout)
        };
        if peer.link.held() > max_queue {
            return err("busy", "the server is busy");
        }
        let mid = m.id;
        if call {
            let id = self
                .routing
                .call_ids
                .borrow_mut()
                .next(|id| peer.pending.borrow().contains(id) || self.routing.db_pending.borrow().contains(&id));
            let Some(id) = id else {
                return err("busy", "the server is busy");
            };
            let pushed = peer.link.push_request(Req::Call(id), |out| {
                proto::put_client_request(out, true, id, session, b.eid, mid, nargs, args);
                Ok::<(), CallError>(())
            });
            if pushed.is_err() {
                return err("busy", "the server is busy");
            }
            peer.pending.borrow_mut().insert(id, mid, timeout, Instant::now());
            g.relays.borrow_mut().insert(
                id,
                Relay {
                    conn: link.id,
                    call: msg.session,
                },
            );
        } else {
            let seq = peer.next_seq.get();
            let pushed = peer.link.push_request(Req::Send { seq, mid }, |out| {
                proto::put_client_request(out, false, seq, session, b.eid, mid, nargs, args);
                Ok::<(), CallError>(())
            });
            if pushed.is_err() {
                return;
            }
            peer.next_seq.set(seq.wrapping_add(1));
        }
        super::calls::wake(&peer);
    }

    fn client_fault(&self, link: &ClientLink, f: Fault, what: &str) {
        if let Some(g) = self.gate.as_ref() {
            g.stats.faults.set(g.stats.faults.get() + 1);
        }
        if link.fault(f) && self.limited("bad input from clients") {
            warn!(
                "gate: client {} (session {}): {what} (logged once per client and cause)",
                link.addr,
                link.session.get()
            );
        }
    }

    /// The reply to call `id`, if it was a client's relayed call: passed on
    /// to the client (results as the backend wrote them). True when it was.
    pub(crate) fn relay_reply(&self, id: u32, ok: bool, nvals: usize, mut vals: Reader<'_>) -> bool {
        let Some(g) = self.gate.as_ref() else { return false };
        let Some(r) = g.relays.borrow_mut().remove(&id) else {
            return false;
        };
        let Some(link) = g.conn(r.conn) else { return true };
        if ok {
            link.send(|o| client::put_reply_ok(o, r.call, nvals, vals.rest()));
        } else {
            let text = vals
                .read_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            let (code, shown) = client_error(&text);
            link.send(|o| client::put_reply_err(o, r.call, code, shown));
        }
        true
    }

    /// A relayed call failed here (timeout, node down): its client gets the
    /// kind. True when call `id` was a relayed one.
    pub(crate) fn relay_fail(&self, id: u32, err: &CallError) -> bool {
        let Some(g) = self.gate.as_ref() else { return false };
        let Some(r) = g.relays.borrow_mut().remove(&id) else {
            return false;
        };
        if let Some(link) = g.conn(r.conn) {
            let (code, text) = match err.kind() {
                Some("timeout") => ("timeout", "the server did not answer in time"),
                Some("node down") => ("node_down", "the server was lost"),
                Some("busy") => ("busy", "the server is busy"),
                _ => ("error", "internal error"),
            };
            link.send(|o| client::put_reply_err(o, r.call, code, text));
        }
        true
    }

    /// A push from a backend for clients of this Gate.
    pub(crate) fn on_push(&self, from: &str, target: PushTarget<'_>, cid: u32, nargs: usize, args: Reader<'_>) -> bool {
        let Some(g) = self.gate.as_ref() else {
            if self.limited("pushes to a node that is not a Gate") {
                warn!("push from {from} dropped: this node is not a Gate");
            }
            return true;
        };
        let raw = args.rest();
        let ids: Vec<u64> = {
            let s = g.sessions.borrow();
            match &target {
                PushTarget::Session(id) => vec![*id],
                PushTarget::Accounts(list) => list
                    .iter()
                    .filter_map(|a| std::str::from_utf8(a).ok().and_then(|a| s.by_account(a)))
                    .collect(),
                PushTarget::All => s.iter().map(|st| st.id()).collect(),
            }
        };
        for id in ids {
            let out = g.sessions.borrow_mut().push(id, |seq| {
                let mut b = BytesMut::new();
                client::put_push(&mut b, seq, cid, nargs, raw);
                b.freeze()
            });
            if out.is_none() {
                // every push sequence number of the session is used up: it
                // must log in again (and its backend forgets it)
                let gone = {
                    let s = g.sessions.borrow();
                    s.get(id).map(|st| (st.account().to_string(), s.binding(id)))
                };
                if let Some((account, binding)) = gone {
                    self.gate_kick(
                        id,
                        "kicked",
                        "this session has used up its push sequence numbers; log in again",
                    );
                    self.client_event("lost", id, &account, binding, &[]);
                }
                continue;
            }
            if let Some((_, frame, Some(conn))) = out {
                if let Some(link) = g.conn(conn) {
                    if link.decided.get() == Some(true) {
                        link.send(|o| o.extend_from_slice(&frame));
                    } else {
                        // verify-ok has not gone out yet
                        link.early.borrow_mut().push(frame);
                    }
                }
            }
        }
        true
    }
}

/// What a client sees of a backend's error reply to its call: the code and
/// the text (only what the handler chose to tell).
fn client_error(text: &str) -> (&'static str, &str) {
    if let Some(rest) = text.strip_prefix(BAD_REQUEST) {
        ("bad_request", rest)
    } else if let Some(rest) = text.find(CLIENT_ERROR).map(|i| &text[i + CLIENT_ERROR.len()..]) {
        // (the backend's lualib puts the method's name before it)
        ("error", rest.lines().next().unwrap_or(""))
    } else if text.starts_with("node down:") {
        ("node_down", "the server is stopping")
    } else {
        ("error", "internal error")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_see_only_what_handlers_chose_to_tell() {
        assert_eq!(
            client_error("bad_request: bad argument #1 'rid'"),
            ("bad_request", "bad argument #1 'rid'")
        );
        assert_eq!(
            client_error("Player.hall_addFriend: client: no such player\nstack traceback:\n..."),
            ("error", "no such player")
        );
        assert_eq!(
            client_error("Player.hall_addFriend: scripts/hall.lua:10: attempt to index nil\nstack traceback:"),
            ("error", "internal error")
        );
        assert_eq!(
            client_error("node down: hall_1: stopping (x)"),
            ("node_down", "the server is stopping")
        );
    }
}
