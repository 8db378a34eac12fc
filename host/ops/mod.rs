//! Operations (seed 004): the ops store, users and roles, the daemon that
//! runs a machine's node processes, and the `ctl` client.
//!
//! A layer beside [`crate::runtime`]: it starts nodes as processes of the
//! `luahost` binary (never in-process), so it needs nothing of the runtime;
//! what a node reports about itself comes in through a closure
//! ([`report`]).
//!
//! - [`store`]: the typed store over a [`store::Kv`] backend:
//!   [`filestore`] (a folder, the embedded default) or [`zkstore`]
//!   (ZooKeeper, production).
//! - [`roles`]: viewer < operator < admin, and which command needs which.
//! - [`auth`]: the login exchange (argon2id verifiers, no password on the
//!   wire) and the sealed session after it.
//! - [`wire`]: the daemon <-> ctl protocol (frames, messages, the state
//!   machine of each end), pure; [`conn`]: its tokio drivers.
//! - [`restart`]: when a crashed process starts again, when a record is dead.
//! - [`plan`]: what to do with a machine's processes (start, stop, kill,
//!   reload, restart after a crash with backoff), pure; [`supervise`]: its
//!   driver over real processes (spawn, signals, exits, adoption).
//! - [`daemon`]: `luahost daemon`: rights, routing, audit.
//! - [`metrics`]: the daemon's Prometheus series (`luahost_daemon_*`).
//! - [`ctl`]: what `luahost ctl` sends and how it shows replies.
//! - [`report`]: a node process's own record.

pub mod auth;
pub mod conn;
pub mod ctl;
pub mod daemon;
pub mod filestore;
pub mod kv;
pub mod metrics;
pub mod plan;
pub mod report;
pub mod restart;
pub mod roles;
pub mod store;
pub mod supervise;
pub mod wire;
pub mod zkstore;

pub use store::{OpsError, OpsStore};
