//! The protocol logic of node-to-node RPC, free of I/O: time and events are
//! arguments, decisions are return values, so each rule is unit-tested
//! without sockets or sleeps; thin tokio drivers in the runtime sleep until
//! the instants these modules return and carry out what they decide.
//!
//! - [`error`]: the error of a call or send, with exactly the texts scripts see.
//! - [`pending`]: call ids, calls waiting for replies, deadlines.
//! - [`reconnect`]: a peer's connect states, backoff and kicks.
//! - [`membership`]: which peers to add, keep or drop when the cluster file
//!   or a ZooKeeper listing changes.

pub mod error;
pub mod membership;
pub mod pending;
pub mod reconnect;
