//! Calls and sends of a node: encoding them towards a peer, handling what
//! arrives (requests, replies), and failing or reporting what cannot be
//! delivered.

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use mlua::{MultiValue, Value};
use tokio::time::Instant;
use tracing::{debug, error, info};

use super::node::{Core, Peer};
use crate::codec::mpack::Reader;
use crate::codec::proto::{self, Envelope, PushTarget};
use crate::codec::wire::{self, FrameDecoder, Message};
use crate::lua::dispatch::Dispatch;
use crate::net::conn::read_loop;
use crate::net::link::Link;
use crate::net::PeerState;

use crate::lua::Wait;
use crate::metrics::Count;
use crate::rpc::error::{CallError, RemoteFault};
use crate::schema::{self, Method};

/// How often waiting calls are checked against their deadlines.
const DEADLINE_TICK: Duration = Duration::from_millis(10);
/// Connection id Lua uses for calls from this node to itself.
pub(crate) const SELF_CONN: u64 = 0;

impl Core {
    /// Encodes a call or a send (as the schema says) into the queue of node
    /// `sid`. Returns the call id, or 0 for a send.
    pub(crate) fn request(
        &self,
        sid: u32,
        eid: i64,
        mid: u32,
        wait: Wait,
        args: &dyn crate::schema::ArgList,
    ) -> Result<u32, CallError> {
        let r = self.encode_request(sid, eid, mid, wait, args);
        if let Err(e) = &r {
            self.metrics.error(e);
        }
        r
    }

    #[inline]
    fn encode_request(
        &self,
        sid: u32,
        eid: i64,
        mid: u32,
        wait: Wait,
        args: &dyn crate::schema::ArgList,
    ) -> Result<u32, CallError> {
        let schema = self.schema().ok_or(CallError::NoSchema)?;
        let method = schema.method(mid).ok_or(CallError::UnknownMethod(mid))?;
        // the one call/send decision: the schema's (a method with results is
        // a call)
        let call = method.results.is_some();
        if call && wait == Wait::No {
            return Err(CallError::CannotWait {
                method: method.name.clone(),
            });
        }
        let (peer, max_message, held, max_queue) = self.peer_for(sid, method)?;
        let (id, req) = if call {
            // (ids pending towards other peers cannot come round again
            // within any call's timeout)
            let id = self
                .routing
                .call_ids
                .borrow_mut()
                .next(|id| peer.pending.borrow().contains(id) || self.routing.db_pending.borrow().contains(&id))
                .ok_or_else(|| CallError::Busy {
                    node: peer.spec.name.clone(),
                    held,
                    max_queue,
                    method: method.name.clone(),
                })?;
            (id, crate::net::link::Req::Call(id))
        } else {
            let seq = peer.next_seq.get();
            (seq, crate::net::link::Req::Send { seq, mid })
        };
        peer.link.push_request(req, |out| {
            let start = proto::begin_request(out, call, eid, mid, method.args.len());
            finish_args(out, start, method, args, &peer.spec.name, max_message, id)
        })?;
        if !call {
            peer.next_seq.set(id.wrapping_add(1));
        }
        self.metrics
            .count(mid, &method.name, if call { Count::Call } else { Count::Send });
        let id = if call { id } else { 0 };
        if call {
            let t = match wait {
                Wait::Timeout(t) => t,
                _ => self.cluster.borrow().call_timeout,
            };
            peer.pending.borrow_mut().insert(id, mid, t, Instant::now());
        }
        wake(&peer);
        Ok(id)
    }

    /// Node `sid` for a request of `method`, with the limits that apply:
    /// (peer, max_message, bytes held for it, max_queue); refused when the
    /// node is unknown or its queue is full.
    #[inline]
    fn peer_for(&self, sid: u32, method: &Method) -> Result<(Rc<Peer>, usize, usize, usize), CallError> {
        let Some(peer) = self.peer(sid) else {
            return Err(CallError::NoSuchNode {
                sid,
                method: method.name.clone(),
            });
        };
        let (max_message, max_queue) = {
            let c = self.cluster.borrow();
            (c.max_message, c.max_queue)
        };
        let held = peer.link.held();
        if held > max_queue {
            return Err(CallError::Busy {
                node: peer.spec.name.clone(),
                held,
                max_queue,
                method: method.name.clone(),
            });
        }
        Ok((peer, max_message, held, max_queue))
    }

    /// Encodes a push of client method `mid` (a method of a `Client`
    /// section) for `target` on Gate `sid`, sequenced and acknowledged like
    /// a send (a lost one is reported by method).
    pub(crate) fn push(
        &self,
        sid: u32,
        target: &PushTarget<'_>,
        mid: u32,
        args: &dyn crate::schema::ArgList,
    ) -> Result<(), CallError> {
        let r = self.encode_push(sid, target, mid, args);
        if let Err(e) = &r {
            self.metrics.error(e);
        }
        r
    }

    fn encode_push(
        &self,
        sid: u32,
        target: &PushTarget<'_>,
        mid: u32,
        args: &dyn crate::schema::ArgList,
    ) -> Result<(), CallError> {
        let schema = self.schema().ok_or(CallError::NoSchema)?;
        let method = schema.method(mid).ok_or(CallError::UnknownMethod(mid))?;
        if !method.push {
            return Err(CallError::NotAPush {
                method: method.name.clone(),
            });
        }
        let (peer, max_message, _, _) = self.peer_for(sid, method)?;
        let seq = peer.next_seq.get();
        peer.link
            .push_request(crate::net::link::Req::Send { seq, mid }, |out| {
                let start = proto::begin_push(out, target, method.cid, method.args.len());
                finish_args(out, start, method, args, &peer.spec.name, max_message, seq)
            })?;
        peer.next_seq.set(seq.wrapping_add(1));
        self.metrics.count(mid, &method.name, Count::Send);
        wake(&peer);
        Ok(())
    }

    /// Encodes the reply to call `session` that arrived on connection `conn`.
    pub(crate) fn reply(
        &self,
        conn: u64,
        session: u32,
        mid: u32,
        ok: bool,
        vals: &dyn crate::schema::ArgList,
    ) -> Result<(), String> {
        let schema = self.schema().ok_or("no schema")?;
        let method = schema.method(mid).ok_or_else(|| format!("unknown method id {mid}"))?;
        let max_message = self.cluster.borrow().max_message;
        let me_peer;
        let inbound_link;
        let link: &Link = if conn == SELF_CONN {
            // A call to ourselves: the reply goes through the self peer's queue.
            me_peer = self.peer(self.me.sid).ok_or("this node is not in its cluster file")?;
            &me_peer.link
        } else {
            let Some(l) = self.net.inbound.borrow().get(&conn).cloned() else {
                debug!("reply to call {session} dropped: its caller's connection is gone");
                return Ok(());
            };
            inbound_link = l;
            &inbound_link
        };
        encode_reply(&mut link.out.borrow_mut(), session, method, ok, vals, max_message);
        link.wake.notify_one();
        link.flush_if_large();
        Ok(())
    }

    pub(crate) fn call_lua(&self, args: MultiValue) {
        let f = self.lua_side.dispatch.borrow().clone();
        if let Some(f) = f {
            if let Err(e) = f.call::<()>(args) {
                error!("Lua dispatcher failed: {e}");
            }
        }
    }

    /// Ends call `id` with `err`: Lua gets its text (which starts with its
    /// kind) and the kind itself.
    pub(crate) fn fail_call(&self, id: u32, err: CallError) {
        self.metrics.error(&err);
        if self.relay_fail(id, &err) {
            return;
        }
        let mut args = MultiValue::with_capacity(5);
        args.push_back(Value::Integer(Dispatch::Reply.id()));
        args.push_back(Value::Integer(id as i64));
        args.push_back(Value::Boolean(false));
        match self.lua.create_string(err.to_string()) {
            Ok(s) => args.push_back(Value::String(s)),
            Err(_) => args.push_back(Value::Nil),
        }
        match err.kind().map(|k| self.lua.create_string(k)) {
            Some(Ok(k)) => args.push_back(Value::String(k)),
            _ => args.push_back(Value::Nil),
        }
        self.call_lua(args);
    }

    /// "node down" for call `mid` to `peer`.
    pub(crate) fn node_down(&self, peer: &Peer, cause: &str, mid: u32) -> CallError {
        CallError::NodeDown {
            node: peer.spec.name.clone(),
            cause: cause.to_string(),
            method: self.method_name(mid),
        }
    }

    /// Handles a request (call or send) that arrived on `conn` from `from`.
    /// Returns false when it was not handled because this node is stopping
    /// (a send then stays unacknowledged, so its sender reports it).
    pub(crate) fn on_request(
        &self,
        conn: u64,
        from: &str,
        msg: &Message,
        env: Envelope<'_>,
        link: Option<&Link>,
    ) -> bool {
        self.loads.handled.set(self.loads.handled.get() + 1);
        // `client`: the client session of a request a Gate relayed
        let (is_call, eid, mid, nargs, mut args, client) = match env {
            Envelope::Call { eid, mid, nargs, args } => (true, eid, mid, nargs, args, None),
            Envelope::Send { eid, mid, nargs, args } => (false, eid, mid, nargs, args, None),
            Envelope::Client {
                call,
                session,
                eid,
                mid,
                nargs,
                args,
            } => (call, eid, mid, nargs, args, Some(session)),
            Envelope::Push {
                target,
                cid,
                nargs,
                args,
            } => return self.on_push(from, target, cid, nargs, args),
            _ => return true,
        };
        let refuse = |text: String| {
            // a Gate tells its client only the kind of a refusal
            let text = if client.is_some() {
                format!("{}{text}", crate::rpc::error::BAD_REQUEST)
            } else {
                text
            };
            if self.limited("requests refused (unknown method, wrong node type or bad arguments)") {
                error!("refused {} from {from}: {text}", if is_call { "call" } else { "send" });
            }
            if is_call {
                // the caller prefixes "remote error: <this node>: "
                match link {
                    Some(l) => l.push(|o| proto::put_error_reply(o, msg.session, &text)),
                    None => {
                        if let Some(me) = self.peer(self.me.sid) {
                            me.link.push(|o| proto::put_error_reply(o, msg.session, &text));
                        }
                    }
                }
            }
            // refused for good: the request counts as handled
            true
        };
        let Some(schema) = self.schema() else {
            return refuse("this node has no schema yet".into());
        };
        let Some(method) = schema.method(mid) else {
            return refuse(format!("unknown method id {mid}"));
        };
        if self.stop.stopping.get() {
            if is_call {
                // the caller passes this on as it is (see on_reply)
                let text = CallError::stopping(&self.me.name, &method.name).to_string();
                match link {
                    Some(l) => l.push(|o| proto::put_error_reply(o, msg.session, &text)),
                    None => {
                        if let Some(me) = self.peer(self.me.sid) {
                            me.link.push(|o| proto::put_error_reply(o, msg.session, &text));
                        }
                    }
                }
            }
            return false;
        }
        if method.server_type != 0 && method.server_type != self.typing.my_type.get() {
            return refuse(format!("{} is not served by {} nodes", method.name, self.me.stype));
        }
        if client.is_some() && !method.client {
            return refuse(format!("{} is not exposed to clients", method.name));
        }
        if is_call != method.results.is_some() {
            return refuse(format!(
                "{} arrived as a {}",
                method.name,
                if is_call { "call" } else { "send" }
            ));
        }
        if nargs != method.args.len() {
            return refuse(format!(
                "{}: {nargs} arguments, {} declared",
                method.name,
                method.args.len()
            ));
        }
        let mut mv = MultiValue::with_capacity(6 + nargs);
        let (kind, count) = match (is_call, client.is_some()) {
            (true, false) => (Dispatch::Call, Count::HandledCall),
            (false, false) => (Dispatch::Send, Count::HandledSend),
            (true, true) => (Dispatch::ClientCall, Count::HandledClientCall),
            (false, true) => (Dispatch::ClientSend, Count::HandledClientSend),
        };
        mv.push_back(Value::Integer(kind.id()));
        if kind != Dispatch::ClientSend {
            mv.push_back(Value::Integer(conn as i64));
            mv.push_back(Value::Integer(msg.session as i64));
        }
        if let Some(session) = client {
            // (session ids stay below 2^63: see rpc::gate)
            mv.push_back(Value::Integer(session as i64));
        }
        mv.push_back(Value::Integer(eid));
        mv.push_back(Value::Integer(mid as i64));
        for (i, (name, ty)) in method.args.iter().enumerate() {
            match schema::decode(&self.lua, ty, &mut args) {
                Ok(v) => mv.push_back(v),
                Err(e) => return refuse(format!("bad argument #{} '{name}' to {}: {e}", i + 1, method.name)),
            }
        }
        if let Err(e) = args.finish() {
            return refuse(format!("{}: {e}", method.name));
        }
        self.metrics.count(mid, &method.name, count);
        // DBProxy's calls to the DB node are served here, without Lua
        if kind == Dispatch::Call && self.store.is_some() {
            if let Some(op) = method.name.strip_prefix("DbCtl.") {
                let vals: Vec<Value> = mv.into_iter().skip(5).collect();
                if let Some(op) = super::db::ctl_op(op, &vals) {
                    drop(schema);
                    self.serve_db(conn, msg.session, mid, op);
                    return true;
                }
                return refuse(format!("{}: arguments the DB node cannot serve", method.name));
            }
        }
        drop(schema);
        self.call_lua(mv);
        true
    }

    /// Handles a reply from peer `peer`.
    pub(crate) fn on_reply(&self, peer: &Peer, session: u32, ok: bool, nvals: usize, mut vals: Reader<'_>) {
        let Some(p) = peer.pending.borrow_mut().take(session) else {
            debug!(
                "late reply {session} from {} dropped (its caller timed out)",
                peer.spec.name
            );
            return;
        };
        if self.relay_reply(session, ok, nvals, vals.clone()) {
            return;
        }
        let schema = self.schema();
        let method = schema.as_ref().and_then(|s| s.method(p.mid).cloned());
        let mname = method
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_else(|| format!("method {}", p.mid));
        // from the call (its timeout started then) to the socket read that
        // brought the reply: that read already took the time, so the hot
        // path reads no clock here
        let took = peer
            .link
            .last_recv
            .get()
            .saturating_duration_since(p.deadline - p.timeout);
        self.metrics.call_took(p.mid, &mname, took);
        if !ok {
            let err = match vals.read_bytes() {
                // a stopping node refuses calls with "node down: <itself>: ..."
                Ok(b) => CallError::from_error_reply(&peer.spec.name, String::from_utf8_lossy(b).into_owned()),
                Err(e) => CallError::Remote {
                    node: peer.spec.name.clone(),
                    fault: RemoteFault::Unreadable(e.to_string()),
                },
            };
            return self.fail_call(session, err);
        }
        let decl = method.as_ref().and_then(|m| m.results.clone()).unwrap_or_default();
        if nvals != decl.len() {
            return self.fail_call(
                session,
                CallError::Remote {
                    node: peer.spec.name.clone(),
                    fault: RemoteFault::ResultCount {
                        method: mname,
                        got: nvals,
                        declared: decl.len(),
                    },
                },
            );
        }
        let mut mv = MultiValue::with_capacity(3 + nvals);
        mv.push_back(Value::Integer(Dispatch::Reply.id()));
        mv.push_back(Value::Integer(session as i64));
        mv.push_back(Value::Boolean(true));
        for (i, (name, ty)) in decl.iter().enumerate() {
            match schema::decode(&self.lua, ty, &mut vals) {
                Ok(v) => mv.push_back(v),
                Err(e) => {
                    if self.limited("bad results from peers") {
                        error!("bad result from {} for {mname}: {e}", peer.spec.name);
                    }
                    return self.fail_call(
                        session,
                        CallError::Remote {
                            node: peer.spec.name.clone(),
                            fault: RemoteFault::BadResult {
                                index: i + 1,
                                name: name.clone(),
                                method: mname,
                                error: e.to_string(),
                            },
                        },
                    );
                }
            }
        }
        self.call_lua(mv);
    }

    pub(crate) fn method_name(&self, mid: u32) -> String {
        self.schema()
            .and_then(|s| s.method(mid).map(|m| m.name.clone()))
            .unwrap_or_else(|| format!("method {mid}"))
    }

    /// Fails every call waiting on `peer` with "node down" and reports, by
    /// method, the sends that were queued or unacknowledged for it and will
    /// not be delivered.
    pub(crate) fn fail_peer(&self, peer: &Peer, cause: &str) {
        let lost = peer.link.drain_unsent();
        self.report_lost(peer, &lost, cause);
        self.fail_pending(peer, cause);
    }

    /// Tells the log and Lua (`Event.Server.SendsLost`) about sends to `peer`
    /// that will not be delivered, or were written and never acknowledged.
    pub(crate) fn report_lost(&self, peer: &Peer, lost: &crate::net::link::Lost, cause: &str) {
        if lost.sends.is_empty() {
            return;
        }
        let names: Vec<(String, usize)> = lost.sends.iter().map(|(mid, n)| (self.method_name(*mid), *n)).collect();
        let list: Vec<String> = names.iter().map(|(m, n)| format!("{n} x {m}")).collect();
        let unacked = if lost.unacknowledged > 0 {
            format!(
                "; {} of them were written but never acknowledged, so they may or may not have been handled",
                lost.unacknowledged
            )
        } else {
            String::new()
        };
        self.metrics.sends_lost(lost.total() as u64);
        error!(
            "{} sends to {} not delivered ({cause}): {}{unacked}",
            lost.total(),
            peer.spec.name,
            list.join(", ")
        );
        let report = || -> mlua::Result<MultiValue> {
            let counts = self.lua.create_table()?;
            for (m, n) in &names {
                counts.set(m.as_str(), *n)?;
            }
            let mut mv = MultiValue::with_capacity(6);
            mv.push_back(Value::Integer(Dispatch::Lost.id()));
            mv.push_back(Value::Integer(peer.spec.sid as i64));
            mv.push_back(Value::String(self.lua.create_string(&peer.spec.stype)?));
            mv.push_back(Value::String(self.lua.create_string(&peer.spec.name)?));
            mv.push_back(Value::Table(counts));
            mv.push_back(Value::String(self.lua.create_string(cause)?));
            Ok(mv)
        };
        match report() {
            Ok(mv) => self.call_lua(mv),
            Err(e) => error!("cannot tell Lua about lost sends: {e}"),
        }
    }

    /// A connection to `peer` verified; the peer is at `incarnation`. Sends
    /// that were in flight on the previous connection are resent if the peer
    /// is the same process, else reported lost.
    pub(crate) fn peer_connected(&self, peer: &Rc<Peer>, incarnation: u64) {
        let before = peer.incarnation.replace(incarnation);
        let lost = peer.link.reconnected(before == incarnation);
        if before != 0 && before != incarnation {
            info!("{} restarted (new incarnation)", peer.spec.name);
        }
        self.report_lost(
            peer,
            &lost,
            &format!("{} restarted before acknowledging them", peer.spec.name),
        );
        let load = self.loads.mine.get();
        if load != 0 {
            peer.link.push(|o| proto::put_load(o, load));
        }
        self.set_online(peer, true);
    }

    /// The connection to `peer` was lost. Calls waiting on it fail (only
    /// those already written, when `reverify`); sends wait for the next
    /// connection, which resends or reports them.
    pub(crate) fn peer_lost(&self, peer: &Peer, cause: &str, reverify: bool) {
        self.set_online(peer, false);
        peer.link.connection_lost(reverify);
        if reverify {
            self.fail_written_calls(peer, cause);
        } else {
            self.fail_pending(peer, cause);
        }
    }

    /// Fails the calls waiting on `peer` that were already written to its
    /// (now closed) connection; calls still queued whole keep waiting for the
    /// next connection.
    pub(crate) fn fail_written_calls(&self, peer: &Peer, cause: &str) {
        let queued = peer.link.queued_calls();
        let written = peer.pending.borrow_mut().drain_written(&queued);
        for (id, p) in written {
            self.fail_call(id, self.node_down(peer, cause, p.mid));
        }
    }

    /// Fails every call waiting on `peer` with "node down".
    pub(crate) fn fail_pending(&self, peer: &Peer, cause: &str) {
        let pending = peer.pending.borrow_mut().drain();
        for (id, p) in pending {
            self.fail_call(id, self.node_down(peer, cause, p.mid));
        }
    }

    /// Fails the calls whose deadline has passed.
    pub(crate) fn expire_calls(&self, now: Instant) {
        let peers: Vec<Rc<Peer>> = self.routing.peers.borrow().values().cloned().collect();
        for peer in peers {
            let expired = {
                let mut pending = peer.pending.borrow_mut();
                if pending.is_empty() {
                    continue;
                }
                pending.expire(now)
            };
            for (id, p) in expired {
                self.fail_call(
                    id,
                    CallError::Timeout {
                        method: self.method_name(p.mid),
                        node: peer.spec.name.clone(),
                        timeout: p.timeout,
                    },
                );
            }
        }
    }
}

/// Appends `method`'s arguments to the message begun at `start` and
/// finishes it as `session`; on a bad argument or an oversize message the
/// message is dropped (nothing is sent) and the error returned.
#[inline]
fn finish_args(
    out: &mut BytesMut,
    start: usize,
    method: &Method,
    args: &dyn crate::schema::ArgList,
    node: &str,
    max_message: usize,
    session: u32,
) -> Result<(), CallError> {
    if let Err(e) = schema::encode_list(out, method, &method.args, "argument", args) {
        wire::abort_message(out, start);
        return Err(CallError::Encoding(e));
    }
    let size = out.len() - start - wire::HEADER;
    if size > max_message {
        wire::abort_message(out, start);
        return Err(CallError::TooLarge {
            method: method.name.clone(),
            node: node.to_string(),
            size,
            max: max_message,
        });
    }
    wire::finish_message(out, start, session);
    Ok(())
}

/// After a message was queued for `peer`: its writer is woken, and a
/// connection attempt started if it is down.
#[inline]
pub(crate) fn wake(peer: &Peer) {
    peer.link.wake.notify_one();
    peer.link.flush_if_large();
    // (the state is read first: no clock read on the hot path)
    let disconnected = peer.reconnect.borrow().state() == PeerState::Disconnected;
    if disconnected && peer.reconnect.borrow_mut().kick(Instant::now()).is_some() {
        peer.kick.notify_one();
    }
}

pub(crate) fn encode_reply(
    out: &mut BytesMut,
    session: u32,
    method: &Method,
    ok: bool,
    vals: &dyn crate::schema::ArgList,
    max_message: usize,
) {
    if ok {
        let decl = method.results.as_deref().unwrap_or(&[]);
        let start = proto::begin_reply(out, decl.len());
        let res = schema::encode_list(out, method, decl, "result", vals).and_then(|()| {
            let size = out.len() - start - wire::HEADER;
            if size > max_message {
                Err(format!(
                    "reply of {} is {size} bytes, max_message is {max_message}",
                    method.name
                ))
            } else {
                Ok(())
            }
        });
        match res {
            Ok(()) => wire::finish_message(out, start, session),
            Err(e) => {
                wire::abort_message(out, start);
                error!("{e}");
                proto::put_error_reply(out, session, &e);
            }
        }
    } else {
        let text = if vals.count() == 0 {
            String::new()
        } else {
            vals.text_at(0)
        };
        proto::put_error_reply(out, session, &text);
    }
}

/// Fails calls past their deadline. Deadlines live in the pending tables
/// (one entry per call in flight), so answered calls cost nothing here.
pub(crate) async fn deadline_task(core: Rc<Core>) {
    let mut tick = tokio::time::interval(DEADLINE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        core.expire_calls(Instant::now());
    }
}

/// Delivers messages a node sends to itself, through the same decode path
/// as the network.
pub(crate) async fn self_task(core: Rc<Core>, me: Rc<Peer>) {
    // the self link's writer writes into a pipe that the one reader of every
    // connection kind reads
    let (mut rd, wr) = crate::net::stream::pipe();
    let mut dec = FrameDecoder::new(usize::MAX);
    let mut buf = BytesMut::new();
    let reader = read_loop(
        &mut rd,
        &mut dec,
        &mut buf,
        &me.link,
        crate::net::conn::not_relayed,
        |msg, env| {
            match env {
                Envelope::Call { .. } | Envelope::Send { .. } | Envelope::Client { .. } | Envelope::Push { .. } => {
                    if !core.on_request(SELF_CONN, &core.me.name, msg, env, None) {
                        debug!("a send to itself was not handled: this node is stopping");
                    }
                }
                Envelope::Reply { ok, nvals, vals } => core.on_reply(&me, msg.session, ok, nvals, vals),
                _ => error!("unexpected message kind sent to self"),
            }
            None
        },
    );
    let cause = tokio::select! {
        c = reader => c,
        c = me.link.write_loop(wr, None) => crate::net::conn::Cause::Io(c),
    };
    error!("the node's link to itself ended: {cause}");
}
