//! Bytes on the wire, free of I/O: seed 003's frames ([`wire`]), the
//! envelopes inside them ([`proto`]), the MessagePack used for both
//! ([`mpack`]), and the proofs of the mutual handshake ([`auth`]).
//!
//! Owns the wire format (documented in each module); knows nothing of
//! sockets, nodes, Lua or time. Everything else decodes bytes only through
//! here.

pub mod auth;
pub mod mpack;
pub mod proto;
pub mod wire;
