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
