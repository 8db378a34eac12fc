//! luahost runs Lua game-server logic as a cluster of typed nodes.
//!
//! A node is one Lua state on one OS thread with its own current-thread tokio
//! runtime; nodes talk over TCP (nodes of one process through in-memory
//! pipes) with the frame format of seed 003 and MessagePack payloads typed by
//! one schema (`scripts/entitydef.lua`).
//!
//! The parts, in the order a message meets them:
//!
//! - [`auth`]: mutual proof of the cluster secret over fresh nonces; no I/O.
//! - [`wire`]: frames (length, flag, session, data) and fragmentation; no I/O.
//! - [`proto`]: the envelopes inside frames (verify, call, send, reply, ping).
//! - [`mpack`]: the MessagePack reader/writer used on the hot path.
//! - [`schema`]: the compiled schema; checks and converts Lua values to and
//!   from MessagePack by declared type.
//! - [`ring`]: consistent-hash rings behind `router.route`.
//! - [`config`]: the cluster file.
//! - [`node`]: the runtime: threads, peers, timers, cluster reload, dispatch into Lua.
//! - `transport`: connections: verify handshake, connect states, liveness.
//! - `link`: a connection's output queue and writer.
//! - [`stream`]: connection halves: TCP, or in-memory pipes between nodes of one process.
//! - `ratelog`: rate limits for log lines remote parties can cause.
//! - [`zk`]: ZooKeeper discovery (register, watch, expiry, auth).
//! - `lua_api`: the `luahost.core` module that lualib builds on.
//! - `lualib`: the Lua library, built in (an explicit lualib folder wins).
//! - [`cluster`]: starting a whole cluster in one process (`luahost up`).
//! - [`bench`]: the `luahost bench` workloads.
//!
//! Embedding: load a [`ClusterConfig`] and [`start`](node::start) the nodes
//! you want; each returns a [`NodeHandle`].
#![warn(missing_docs)]

pub mod auth;
pub mod bench;
pub mod cluster;
pub mod config;
mod link;
mod lua_api;
mod lualib;
pub mod mpack;
pub mod node;
pub mod proto;
mod ratelog;
pub mod ring;
mod rpc;
pub mod schema;
pub mod stream;
mod transport;
pub mod wire;
pub mod zk;

pub use config::{ClusterConfig, NodeSpec};
pub use node::{start, start_with, NodeError, NodeHandle, NodeOptions};
