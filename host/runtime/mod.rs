//! The node runtime: one Lua state on one OS thread with its current-thread
//! tokio runtime; its peers, calls in flight, timers, reloads and stop.
//!
//! Owns the node and everything that happens to it; reaches the network
//! through `net`, discovery through `discovery`, Lua through `lua` (each of
//! which sees the node only through the trait it defines, implemented in
//! [`hosts`](self)).
//!
//! - `handle`: starting a node on its thread; [`NodeHandle`].
//! - `node`: the node's state and its life (boot, run, stop), its peers.
//! - `calls`: calls and sends: encode, handle what arrives, fail, report.
//! - `timers`: the timer heap.
//! - `membership`: carrying out cluster-file and ZooKeeper changes.
//! - `watch`: the cluster file and script watchers, hot reload.
//! - `hosts`: the traits of the layers below, implemented by the node.

mod calls;
mod handle;
mod hosts;
mod membership;
pub mod node;
mod timers;
mod watch;

pub use crate::net::PeerState;
pub use crate::rpc::MAX_DELAY;
pub use handle::{start, start_with, Control, NodeError, NodeHandle, NodeOptions, CONTROL_MAILBOX};
