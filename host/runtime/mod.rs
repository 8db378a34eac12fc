//! The node runtime: one Lua state on one OS thread with its current-thread
//! tokio runtime; its peers, calls in flight, timers, reloads and stop.
//!
//! Owns the node and everything that happens to it; reaches the network
//! through `net`, discovery through `discovery`, Lua through `lua` (each of
//! which sees the node only through the trait it defines, implemented in
//! [`hosts`](self)).
//!
//! - `control`: the types shared with controlling threads (mailbox
//!   messages, stop signal, start errors and options).
//! - `handle`: starting a node on its thread; [`NodeHandle`].
//! - `node`: the node's state, its peers, small queries.
//! - `life`: boot, the run loop, the graceful stop, the node's own tasks.
//! - `calls`: calls and sends: encode, handle what arrives, fail, report.
//! - `gate`: game clients on a Gate node: their connections, verify,
//!   sessions and resume; `gaterelay`: relaying both ways; `gatestate`: what a Gate
//!   keeps (sessions, connections' output sides, relays, counters);
//!   `gateweb`: the Gate's web listener (files, config.json, login).
//! - `db`: the node's store (DBProxy): operations from Lua, outcomes
//!   back as replies.
//! - `timers`: the timers (pure: time passed in).
//! - `membership`: carrying out cluster-file and ZooKeeper changes.
//! - `watch`: the cluster file and script watchers, hot reload.
//! - `hosts`: the traits of the layers below, implemented by the node.
//! - `workers`: the pool of worker threads several nodes share (`up`).

mod calls;
mod control;
mod db;
mod gate;
mod gaterelay;
mod gatestate;
mod gateweb;
mod handle;
mod hosts;
mod life;
mod logsink;
mod membership;
pub mod node;
mod relay;
mod relaystate;
mod remotelog;
mod timers;
mod watch;
mod workers;

pub use crate::net::PeerState;
pub use crate::rpc::MAX_DELAY;
pub use control::{Control, EvalError, NodeError, NodeOptions, NodeStats, RuntimeError, CONTROL_MAILBOX};
pub use db::open as open_store;
pub use handle::{start, start_with, NodeHandle, NodeProbe};
pub use workers::Workers;
