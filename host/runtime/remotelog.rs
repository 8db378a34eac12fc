//! RemoteLog on both ends: a node forwards its Lua log lines to the
//! cluster's log node (`remote_log = "<node>"` in the cluster file) over its
//! ordinary link to that node (direct or through Routers), in order, from
//! the bounded queue of `logsink`; the log node writes each line it receives
//! into its own log with the sender's name.

use std::rc::Rc;
use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::node::Core;
use crate::codec::proto;
use crate::net::PeerState;

/// Bytes queued on the link to the log node past which lines wait in the
/// sink (and overflow there, counted) instead of piling up on the link.
const MAX_HELD: usize = 256 * 1024;
/// Lines moved to the link in one go.
const BATCH: usize = 256;
/// While the log node is away or slow, how often the sink looks again.
const RETRY: Duration = Duration::from_millis(50);

impl Core {
    /// A line from node `from` for this node's log (this node is the
    /// cluster's log node).
    pub(crate) fn on_log(&self, from: &str, level: u8, text: &[u8]) {
        let text = String::from_utf8_lossy(text);
        match level {
            0 | 1 => debug!("[{from}] {text}"),
            2 => info!("[{from}] {text}"),
            3 => warn!("[{from}] {text}"),
            _ => error!("[{from}] {text}"),
        }
    }
}

/// Moves the lines of the node's sink to the log node's link while that is
/// connected and not backed up.
pub(crate) async fn remote_log_task(core: Rc<Core>) {
    let Some(target) = core.remote_log.target else { return };
    loop {
        if !core.remote_log.pending() {
            core.remote_log.wake.notified().await;
            continue;
        }
        let ready = core
            .peer(target)
            .filter(|p| p.reconnect.borrow().state() == PeerState::Connected && p.link.held() < MAX_HELD);
        let Some(peer) = ready else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        let lines = core.remote_log.take(BATCH);
        for (level, text) in &lines {
            peer.link.push(|o| proto::put_log(o, *level, text.as_bytes()));
        }
        peer.link.flush_if_large();
        tokio::task::yield_now().await;
    }
}
