//! The runtime as the layers below see it: `NetHost`, `DiscoveryHost`,
//! `LuaHost` implemented by the node.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use mlua::Function;
use tokio::sync::Notify;

use super::node::{Core, Peer};
use crate::codec::mpack::Reader;
use crate::codec::proto::Envelope;
use crate::codec::wire::Message;
use crate::discovery::config::NodeSpec;
use crate::discovery::{DiscoveryHost, DiscoverySignals};
use crate::lua::LuaHost;
use crate::net::link::Link;
use crate::net::{NetHost, NetPeer, NetSettings, NetState};
use crate::rpc::acks::SendSeqs;
use crate::rpc::error::CallError;
use crate::rpc::reconnect::Reconnect;
use crate::rpc::ring::Rings;
use crate::schema::Schema;

impl LuaHost for Core {
    fn me(&self) -> &NodeSpec {
        &self.me
    }
    fn now(&self) -> f64 {
        Core::now(self)
    }
    fn set_dispatch(&self, f: Function) {
        Core::set_dispatch(self, f)
    }
    fn set_schema(&self, schema: Schema) {
        Core::set_schema(self, schema)
    }
    fn schema(&self) -> Option<Rc<Schema>> {
        Core::schema(self)
    }
    fn register(this: &Rc<Self>, types: HashMap<String, u32>) -> Result<(), String> {
        this.register(types).map_err(|e| e.to_string())
    }
    fn join(this: &Rc<Self>) -> Result<bool, String> {
        this.join().map_err(|e| e.to_string())
    }
    fn request(
        &self,
        sid: u32,
        eid: i64,
        mid: u32,
        wait: crate::lua::Wait,
        args: &dyn crate::schema::ArgList,
    ) -> Result<u32, CallError> {
        Core::request(self, sid, eid, mid, wait, args)
    }
    fn reply(
        &self,
        conn: u64,
        session: u32,
        mid: u32,
        ok: bool,
        vals: &dyn crate::schema::ArgList,
    ) -> Result<(), String> {
        Core::reply(self, conn, session, mid, ok, vals)
    }
    fn push(
        &self,
        sid: u32,
        target: &crate::codec::proto::PushTarget<'_>,
        mid: u32,
        args: &dyn crate::schema::ArgList,
    ) -> Result<(), CallError> {
        Core::push(self, sid, target, mid, args)
    }
    fn gate_accept(&self, session: u64, sid: u32, eid: i64) -> Result<(), String> {
        Core::gate_accept(self, session, sid, eid)
    }
    fn gate_refuse(&self, session: u64, code: &str, text: &str) {
        Core::gate_refuse_session(self, session, code, text)
    }
    fn gate_bind(&self, session: u64, sid: u32, eid: i64) -> Result<(), String> {
        Core::gate_bind(self, session, sid, eid)
    }
    fn gate_kick(&self, session: u64, code: &str, text: &str) -> bool {
        Core::gate_kick(self, session, code, text)
    }
    fn gate_notice(&self, session: u64, code: &str, text: &str) -> bool {
        Core::gate_notice(self, session, code, text)
    }
    fn gate_stats(&self) -> Option<Vec<(&'static str, u64)>> {
        Core::gate_stats(self)
    }
    fn gate_token(&self, account: &str, ttl: Duration) -> Result<String, String> {
        Core::gate_token(self, account, ttl)
    }
    fn gate_web_reply(&self, id: u64, ok: bool, reason: &str, status: Option<u16>) -> bool {
        Core::gate_web_reply(self, id, ok, reason, status)
    }
    fn db(this: &Rc<Self>, op: crate::lua::DbOp) -> Result<u32, String> {
        this.db(op)
    }
    fn has_store(&self) -> bool {
        self.store.is_some()
    }
    fn eval_done(&self, token: u64, outcome: Result<String, String>) {
        Core::eval_done(self, token, outcome)
    }
    fn stop_phase(&self, phase: u8) {
        self.stop.phase.set(phase);
        self.stop.wake.notify_one();
    }
    fn add_timer(&self, after: Duration) -> u64 {
        Core::add_timer(self, after)
    }
    fn cancel_timer(&self, id: u64) {
        Core::cancel_timer(self, id)
    }
    fn reload_cluster_later(this: &Rc<Self>) -> Result<String, String> {
        this.reload_cluster_later().map_err(|e| e.to_string())
    }
    fn rings(&self) -> std::cell::Ref<'_, Rings> {
        self.routing.rings.borrow()
    }
    fn node_spec(&self, sid: u32) -> Option<NodeSpec> {
        Core::node_spec(self, sid)
    }
    fn type_id(&self, name: &str) -> Option<u32> {
        Core::type_id(self, name)
    }
    fn all_specs(&self) -> Vec<NodeSpec> {
        Core::all_specs(self)
    }
    fn load_of(&self, sid: u32) -> i64 {
        if sid == self.me.sid {
            self.loads.mine.get()
        } else {
            self.loads.peers.borrow().get(&sid).copied().unwrap_or(0)
        }
    }
    fn set_load(&self, load: i64) {
        if self.loads.mine.replace(load) != load {
            self.discovery.load_changed.notify_one();
            self.publish_load();
        }
    }
    fn limited(&self, cause: &'static str) -> bool {
        Core::limited(self, cause)
    }
    fn metrics(&self) -> &crate::metrics::NodeMetrics {
        &self.metrics
    }
    fn remote_log(&self, level: u8, text: &str) {
        self.remote_log.push(level, text)
    }
}

impl DiscoveryHost for Core {
    fn registration(&self) -> crate::discovery::zk::Registration {
        Core::registration(self)
    }
    fn type_names(&self) -> Vec<String> {
        Core::type_names(self)
    }
    fn apply_listing(this: &Rc<Self>, listed: Vec<NodeSpec>, loads: HashMap<u32, i64>, grace: Duration) {
        *this.loads.peers.borrow_mut() = loads;
        this.apply_listing(listed, grace);
    }
    fn has_missing(&self) -> bool {
        Core::has_missing(self)
    }
    fn set_self_online(&self, online: bool) {
        Core::set_self_online(self, online)
    }
    fn fail(&self, reason: String) {
        Core::fail(self, reason)
    }
    fn signals(&self) -> &DiscoverySignals {
        &self.discovery
    }
}

impl NetPeer for Peer {
    fn spec(&self) -> &NodeSpec {
        &self.spec
    }
    fn link(&self) -> &Link {
        &self.link
    }
    fn reconnect(&self) -> &RefCell<Reconnect> {
        &self.reconnect
    }
    fn kick(&self) -> &Notify {
        &self.kick
    }
}

impl NetHost for Core {
    type Peer = Peer;

    fn net(&self) -> &NetState {
        &self.net
    }
    fn settings(&self) -> NetSettings {
        let c = self.cluster.borrow();
        NetSettings {
            verify_timeout: c.verify_timeout,
            liveness: c.liveness,
            max_message: c.max_message,
            max_queue: c.max_queue,
        }
    }
    fn me(&self) -> &NodeSpec {
        &self.me
    }
    fn incarnation(&self) -> u64 {
        self.incarnation
    }
    fn identity(&self) -> crate::codec::auth::Identity {
        Core::identity(self)
    }
    fn secret(&self) -> String {
        Core::secret(self)
    }
    fn digest(&self) -> u32 {
        Core::digest(self)
    }
    fn knows(&self, who: &crate::codec::auth::Identity) -> bool {
        match self.node_spec(who.sid) {
            Some(p) => p.name == who.name && p.stype == who.stype,
            // With ZooKeeper a node may connect before its znode is seen
            // here; its proof of the secret and the digest show it belongs.
            None => self.zk_mode(),
        }
    }
    fn limited(&self, cause: &'static str) -> bool {
        Core::limited(self, cause)
    }
    fn send_seqs(&self, sender: &str, incarnation: u64) -> Rc<SendSeqs> {
        Core::send_seqs(self, sender, incarnation)
    }
    fn on_request(&self, conn: u64, from: &str, msg: &Message, env: Envelope<'_>, link: Option<&Link>) -> bool {
        Core::on_request(self, conn, from, msg, env, link)
    }
    fn on_reply(&self, peer: &Peer, session: u32, ok: bool, nvals: usize, vals: Reader<'_>) {
        Core::on_reply(self, peer, session, ok, nvals, vals)
    }
    fn on_load(&self, sid: u32, load: i64) {
        self.set_peer_load(sid, load)
    }
    fn peer_connected(&self, peer: &Rc<Peer>, incarnation: u64) {
        Core::peer_connected(self, peer, incarnation)
    }
    fn peer_lost(&self, peer: &Peer, cause: &str, reverify: bool) {
        Core::peer_lost(self, peer, cause, reverify);
        if self.is_router(peer) {
            self.router_lost(peer);
        }
    }
    fn on_log(&self, from: &str, level: u8, text: &[u8]) {
        Core::on_log(self, from, level, text)
    }
    fn relays(&self) -> bool {
        Core::relays(self)
    }
    fn on_relayed(&self, via: &Peer, msg: &Message) -> Option<crate::net::conn::Cause> {
        Core::on_relayed(self, via, msg)
    }
    fn on_members(&self, via: &Peer, op: crate::codec::proto::Members, nodes: &[(u32, u64)]) {
        Core::on_members(self, via, op, nodes)
    }
    fn connect_failed(&self, peer: &Peer, cause: &str) {
        self.fail_peer(peer, cause)
    }
}
