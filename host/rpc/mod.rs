//! The protocol logic of node-to-node RPC, free of I/O: time and events are
//! arguments, decisions are return values, so each rule is unit-tested
//! without sockets or sleeps; thin tokio drivers in `net` and `runtime` sleep
//! until the instants these modules return and carry out what they decide.
//! Must not touch sockets, the clock, Lua or the node.
//!
//! - [`spec`]: what the cluster knows of one node.
//! - [`error`]: the error of a call or send, with exactly the texts scripts see.
//! - [`pending`]: call ids, calls waiting for replies, deadlines.
//! - [`reconnect`]: a peer's connect states, backoff and kicks.
//! - [`membership`]: which peers to add, keep or drop when the cluster file
//!   or a ZooKeeper listing changes.
//! - [`ring`]: consistent-hash rings behind `router.route`.
//! - [`acks`]: the receiver's record of one-way sends handled.
//! - [`liveness`]: when a silent peer is dead, when to ping.
//! - [`relay`]: through which Router a message goes (`topology = "router"`),
//!   and the cluster as the Routers announce it.
//! - [`ratelog`]: rate limits for log lines a remote party can cause.
//! - [`gate`]: the Gate's sessions and its limits on client connections.

pub(crate) mod acks;
pub mod error;
pub mod gate;
pub(crate) mod liveness;
pub mod membership;
pub mod pending;
pub(crate) mod ratelog;
pub mod reconnect;
pub mod relay;
pub mod ring;
pub mod spec;

pub use pending::MAX_DELAY;

use std::time::Duration;

/// A delay from Lua, clamped to `0..=MAX_DELAY` (NaN counts as 0).
pub(crate) fn clamp_delay(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        Duration::ZERO
    } else if secs >= MAX_DELAY.as_secs_f64() {
        MAX_DELAY
    } else {
        Duration::from_secs_f64(secs)
    }
}
