//! Connections between nodes: the two halves of a TCP socket or an in-memory
//! pipe ([`stream`]), a connection's output side ([`link`]), and the
//! accepting and connecting sides with the handshake, the reader loop and
//! liveness ([`transport`]).
//!
//! Owns sockets and the tasks that drive them. The decisions (liveness,
//! backoff, outbox accounting) come from `rpc`; what arrives is handed to
//! the node through the calls it makes into the runtime.

pub(crate) mod link;
pub(crate) mod stream;
pub(crate) mod transport;
