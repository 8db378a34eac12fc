//! The protocol logic of node-to-node RPC, free of I/O: time and events are
//! arguments, decisions are return values, so every rule is unit-tested
//! without sockets or sleeps.
//!
//! Owns: consistent-hash rings ([`ring`]), rate limits of remotely caused log
//! lines ([`ratelog`]). Must not touch sockets, the clock, Lua or the node.

pub(crate) mod ratelog;
pub mod ring;
