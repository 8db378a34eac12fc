//! The Lua side of the host: the `luahost.core` module lualib builds on
//! ([`api`]) and the lualib built into the binary ([`lualib`]).

pub(crate) mod api;
pub(crate) mod lualib;
