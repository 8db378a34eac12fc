//! The Gate's protocol logic (`docs/protocol.md`), free of I/O like the
//! rest of `rpc`: connection ids, instants and random bytes are arguments,
//! decisions are return values. The Gate's drivers (its listeners and
//! connections in `net`, its backend calls in `runtime`) own one
//! [`sessions::Sessions`] per Gate and the [`limits`] of each connection,
//! and carry out what they decide.
//!
//! - [`sessions`]: the session table: logins (the newest wins), detach and
//!   resume within the grace, push sequence numbers and the replay buffer,
//!   bindings to backend entities.
//! - [`limits`]: per-connection flood limit, admission of verifying
//!   connections, the heartbeat rule, fault counters.
//! - [`web`]: the web listener's HTTP: request heads, routes, responses,
//!   the JSON of `/luahost/config.json` and `/luahost/login`.

#[allow(dead_code)] // accessors for the tests and stats
pub mod limits;
#[allow(dead_code)] // accessors for the tests and stats
pub mod sessions;
pub mod web;
