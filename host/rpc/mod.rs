//! The protocol logic of node-to-node RPC, free of I/O: time and events are
//! arguments, decisions are return values, so every rule is unit-tested
//! without sockets or sleeps.
//!
//! Owns: the description of a node ([`spec`]), consistent-hash rings
//! ([`ring`]), rate limits of remotely caused log lines ([`ratelog`]), the
//! receiver's record of sends handled ([`acks`]). Must not touch sockets,
//! the clock, Lua or the node.

pub(crate) mod acks;
pub(crate) mod ratelog;
pub mod ring;
pub mod spec;

use std::time::Duration;

/// The longest timer or call timeout accepted (longer ones are clamped).
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

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
