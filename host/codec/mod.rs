//! Bytes on the wire, free of I/O: seed 003's frames ([`wire`]), the
//! envelopes inside them between nodes ([`proto`]) and between game clients
//! and a Gate ([`client`]), the MessagePack used for all of them
//! ([`mpack`]), the relay prefix of messages through a Router
//! ([`relay`]), the proofs of the mutual handshake ([`auth`]), and the
//! clients' login tokens ([`token`]).
//!
//! Owns the wire format (documented in each module); knows nothing of
//! sockets, nodes, Lua or time. Everything else decodes bytes only through
//! here.

pub mod auth;
pub mod client;
pub mod mpack;
pub mod proto;
pub mod relay;
pub mod token;
pub mod wire;
