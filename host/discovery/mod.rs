//! Who is in the cluster: the cluster file ([`config`], static discovery,
//! watched) and ZooKeeper ([`zk`]: registration, watches, expiry, auth).
//!
//! Owns the sources of membership and turns them into node sets; it does not
//! open node connections.

pub mod config;
pub mod zk;
