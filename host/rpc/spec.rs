//! What the cluster knows of one node.

use std::net::SocketAddr;
use std::path::PathBuf;

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Its name (`hall_1`), unique in the cluster.
    pub name: String,
    /// Its server type name (`Hall`), a key of `ServerType` in the schema.
    pub stype: String,
    /// Its server id as seen from Lua.
    pub sid: u32,
    /// Where it listens for other nodes.
    pub addr: SocketAddr,
    /// Its main script.
    pub main: PathBuf,
}
