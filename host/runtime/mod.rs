//! The node runtime: one Lua state on one OS thread with its current-thread
//! tokio runtime; its peers, calls in flight, timers, reloads and stop.
//!
//! Owns the node and everything that happens to it; reaches the network
//! through `net`, discovery through `discovery`, Lua through `lua`.

pub mod node;
