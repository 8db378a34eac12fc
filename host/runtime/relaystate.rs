//! What a node keeps of the nodes it reaches through Routers
//! (`topology = "router"`); `runtime::relay` works on it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::net::conn::Acks;
use crate::net::link::Link;
use crate::rpc::acks::SendSeqs;
use crate::rpc::relay::{NextHop, RouterMembership, Topology};

/// The relay state of a node (unused in a mesh).
#[derive(Default)]
pub(crate) struct RelayState {
    /// The topology, fixed at start.
    pub(crate) topology: Topology,
    /// Who is online as the Routers announce it.
    pub(crate) members: RefCell<RouterMembership>,
    /// Through which Router each node goes.
    pub(crate) hops: RefCell<NextHop>,
    /// What arrives from each relayed node, by sid.
    pub(crate) inbound: RefCell<HashMap<u32, Rc<RelayIn>>>,
}

impl RelayState {
    /// The state of a node in `topology`.
    pub(crate) fn new(topology: Topology) -> Self {
        RelayState {
            topology,
            ..RelayState::default()
        }
    }
}

/// The requests of one relayed node arrive as on an accepted connection of
/// their own: its replies and acknowledgements go out on `link`.
pub(crate) struct RelayIn {
    /// The connection id Lua replies to.
    pub(crate) conn: u64,
    /// Replies and acknowledgements, relayed back.
    pub(crate) link: Rc<Link>,
    /// Acknowledgements owed.
    pub(crate) acks: Acks,
    /// The sends handled from it (per incarnation).
    pub(crate) seqs: RefCell<Rc<SendSeqs>>,
}
