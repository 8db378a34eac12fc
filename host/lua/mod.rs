//! The Lua side of the host: the `luahost.core` module lualib builds on
//! ([`api`]), the kinds of event Lua's dispatcher receives ([`dispatch`]),
//! the lualib built into the binary ([`lualib`]), Lua's `metrics` module
//! ([`metrics`]), and reading a schema file outside a node ([`describe`]).

pub(crate) mod api;
pub(crate) mod describe;
pub(crate) mod dispatch;
pub(crate) mod lualib;
pub(crate) mod metrics;
pub(crate) mod rawcall;

use std::cell::Ref;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use mlua::Function;

use crate::rpc::error::CallError;
use crate::rpc::ring::Rings;
use crate::rpc::spec::NodeSpec;
use crate::schema::Schema;

/// Whether, and how long, the Lua side can wait for a call's reply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Wait {
    /// The cluster's `call_timeout`.
    Default,
    /// This long (`rpcco.timeout`).
    Timeout(Duration),
    /// Not at all (outside a coroutine, or router's one-way sends): a call
    /// is refused.
    No,
}

/// An operation on the node's store that Lua started (`dbproxy.lua`); its
/// outcome comes back through the dispatcher as a call's reply.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DbOp {
    /// `(REPLY, id, true, value | nil, version | nil)`.
    Load {
        /// The collection.
        coll: String,
        /// The document's key.
        key: crate::store::Key,
    },
    /// `(REPLY, id, true, version)`.
    Save(crate::store::Save),
    /// `(REPLY, id, true, existed)`.
    Delete {
        /// The collection.
        coll: String,
        /// The document's key.
        key: crate::store::Key,
        /// What must be there for the delete to apply.
        expect: crate::store::Expect,
        /// The writer's epoch.
        epoch: u64,
    },
    /// `(REPLY, id, true, { {key, value, version}, ... })`.
    Query {
        /// The collection.
        coll: String,
        /// The index.
        index: String,
        /// The index value looked for.
        value: crate::store::IndexValue,
        /// At most this many documents.
        limit: usize,
    },
    /// `(REPLY, id, true, epoch)`: a new epoch for an owner claiming
    /// documents, greater than every one handed out before.
    Epoch,
}

/// What `luahost.core` needs from the node it runs in: the narrow waist
/// between Lua and the runtime. Implemented by the runtime; `lua` never sees
/// the node itself.
pub(crate) trait LuaHost: 'static {
    /// This node.
    fn me(&self) -> &NodeSpec;
    /// Monotonic seconds since the node started.
    fn now(&self) -> f64;
    /// Installs the Lua dispatcher every event goes through.
    fn set_dispatch(&self, f: Function);
    /// Installs a compiled schema (`rpcdef.init`).
    fn set_schema(&self, schema: Schema);
    /// The schema, once set.
    fn schema(&self) -> Option<Rc<Schema>>;
    /// Registers the node with discovery under the schema's server types.
    ///
    /// # Errors
    ///
    /// A type of the cluster missing from the schema.
    fn register(this: &Rc<Self>, types: HashMap<String, u32>) -> Result<(), String>;
    /// `cluster.join()`: a node that waits to join (type `Olap`) joins now;
    /// false when it had joined already.
    fn join(this: &Rc<Self>) -> Result<bool, String>;
    /// Encodes a call or a send to node `sid`, as the schema says; returns the
    /// call id, or 0 for a send.
    ///
    /// # Errors
    ///
    /// A [`CallError`]: its text is what a script sees.
    fn request(
        &self,
        sid: u32,
        eid: i64,
        mid: u32,
        wait: Wait,
        args: &dyn crate::schema::ArgList,
    ) -> Result<u32, CallError>;
    /// Encodes a push of client method `mid` to `target` on Gate `sid`.
    ///
    /// # Errors
    ///
    /// A [`CallError`]: its text is what a script sees.
    fn push(
        &self,
        sid: u32,
        target: &crate::codec::proto::PushTarget<'_>,
        mid: u32,
        args: &dyn crate::schema::ArgList,
    ) -> Result<(), CallError>;
    /// Gate: the login of client `session` is accepted, bound to entity
    /// `eid` on node `sid`.
    ///
    /// # Errors
    ///
    /// Not a Gate, or no such session.
    fn gate_accept(&self, session: u64, sid: u32, eid: i64) -> Result<(), String>;
    /// Gate: the login of client `session` is refused with `code`.
    fn gate_refuse(&self, session: u64, code: &str, text: &str);
    /// Gate: client `session` is bound to entity `eid` on node `sid` now.
    ///
    /// # Errors
    ///
    /// Not a Gate, or no such session.
    fn gate_bind(&self, session: u64, sid: u32, eid: i64) -> Result<(), String>;
    /// Gate: ends client `session` with a closing notice; false if unknown.
    fn gate_kick(&self, session: u64, code: &str, text: &str) -> bool;
    /// Gate: a notice to client `session`; false if it is not connected.
    fn gate_notice(&self, session: u64, code: &str, text: &str) -> bool;
    /// Gate: its counters (`accepted`, `verified`, `refused`, `resumed`,
    /// `replaced`, `faults`, `busy`), `sessions` and `conns` now, and
    /// `queued`: bytes queued for clients and not yet written. None when
    /// this node is not a Gate.
    fn gate_stats(&self) -> Option<Vec<(&'static str, u64)>>;
    /// A login token for `account`, valid for `ttl`.
    ///
    /// # Errors
    ///
    /// An account that is empty or too long.
    fn gate_token(&self, account: &str, ttl: Duration) -> Result<String, String>;
    /// Gate: Lua's answer to web login `id` (`ok`, or refused for `reason`
    /// with HTTP `status`, 403 when None); false when no such login waits.
    fn gate_web_reply(&self, id: u64, ok: bool, reason: &str, status: Option<u16>) -> bool;
    /// Encodes the reply to call `session` that came on connection `conn`.
    ///
    /// # Errors
    ///
    /// No schema, or an unknown method.
    fn reply(
        &self,
        conn: u64,
        session: u32,
        mid: u32,
        ok: bool,
        vals: &dyn crate::schema::ArgList,
    ) -> Result<(), String>;
    /// Starts `op` on this node's store; returns the call id its outcome
    /// comes back under (`Dispatch::Reply`).
    ///
    /// # Errors
    ///
    /// No store on this node, or no free call id; the text starts with its
    /// kind.
    fn db(this: &Rc<Self>, op: DbOp) -> Result<u32, String>;
    /// Whether this node owns a store (it is a DB node).
    fn has_store(&self) -> bool;
    /// The outcome of an eval started by the node's handle.
    fn eval_done(&self, token: u64, outcome: Result<String, String>);
    /// Lua's progress through a graceful stop (1: onStop runs, 2: done).
    fn stop_phase(&self, phase: u8);
    /// Starts a timer; its id comes back through the dispatcher.
    fn add_timer(&self, after: Duration) -> u64;
    /// Cancels a timer before it fires.
    fn cancel_timer(&self, id: u64);
    /// Re-reads the cluster file from a task (not from inside Lua).
    ///
    /// # Errors
    ///
    /// The file does not load.
    fn reload_cluster_later(this: &Rc<Self>) -> Result<String, String>;
    /// The routing rings of live servers.
    fn rings(&self) -> Ref<'_, Rings>;
    /// What the cluster knows of node `sid`.
    fn node_spec(&self, sid: u32) -> Option<NodeSpec>;
    /// The schema's id of a server type name.
    fn type_id(&self, name: &str) -> Option<u32>;
    /// Every node of the cluster, by name.
    fn all_specs(&self) -> Vec<NodeSpec>;
    /// The load node `sid` reports (this node's own for its sid).
    fn load_of(&self, sid: u32) -> i64;
    /// Sets and publishes this node's load.
    fn set_load(&self, load: i64);
    /// Whether a log line of `cause` (one a remote party can cause) may be
    /// written now (the node's rate limit).
    fn limited(&self, cause: &'static str) -> bool;
    /// The node's metrics (Lua's `metrics` module adds to its scripts' part).
    fn metrics(&self) -> &crate::metrics::NodeMetrics;
    /// A log line Lua wrote (level 1 debug .. 4 error): also for the
    /// cluster's log node, if it has one (RemoteLog). Never blocks.
    fn remote_log(&self, level: u8, text: &str);
}
