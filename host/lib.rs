//! luahost runs Lua game-server logic as a cluster of typed nodes.
//!
//! A node is one Lua state on one OS thread with its own current-thread tokio
//! runtime; nodes talk over TCP (nodes of one process through in-memory
//! pipes) with the frame format of seed 003 and MessagePack payloads typed by
//! one schema (`scripts/entitydef.lua`).
//!
//! The layers, each depending only on the ones above it in this list:
//!
//! - [`codec`]: bytes on the wire: frames, envelopes, MessagePack, the
//!   handshake's proofs. No I/O.
//! - [`schema`]: the compiled schema; checks and converts Lua values to and
//!   from MessagePack by declared type.
//! - `rpc`: the protocol logic of node-to-node RPC (rings, outbox accounting,
//!   liveness, rate limits, ...), free of I/O: time and events are arguments.
//! - [`net`]: connections (TCP or in-memory), the handshake, the reader loop,
//!   writers, liveness drivers; game clients' connections (TCP or WebSocket,
//!   optionally TLS) in [`net::client`], the one public part.
//! - [`store`]: persistent documents for the DB node: one `Backend`
//!   interface (SQLite now), versioned and epoch-fenced writes, run on
//!   threads of its own behind the asynchronous `Store` handle.
//! - [`discovery`]: who is in the cluster: the cluster file and ZooKeeper.
//! - [`metrics`]: Prometheus metrics: the host's series of a node, the ones
//!   its scripts add, and the HTTP endpoint that serves them.
//! - [`runtime`]: the node: its thread, peers, calls, timers, reloads.
//! - `lua`: the `luahost.core` module and the built-in lualib.
//! - [`cluster`]: a whole cluster in one process (`luahost up`).
//!
//! The `luahost` binary (`host/main.rs`, with the bench tool in
//! `host/bench.rs`) is built on this library.
//!
//! Embedding: load a [`ClusterConfig`] and [`start`] the nodes you want; each
//! returns a [`NodeHandle`].
#![warn(missing_docs)]

pub mod client;
pub mod cluster;
pub mod codec;
pub mod discovery;
mod lua;
pub mod metrics;
pub mod net;
mod rpc;
pub mod runtime;
pub mod schema;
pub mod store;

pub use discovery::config::{ClusterConfig, NodeSpec};
pub use lua::describe::describe_entitydef;
pub use runtime::{start, start_with, NodeError, NodeHandle, NodeOptions};
