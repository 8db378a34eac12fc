//! Prometheus metrics: what a node counts, what its scripts add, and the
//! HTTP endpoint that serves them.
//!
//! The text is encoded by `prometheus_client` (the OpenMetrics text format
//! Prometheus scrapes), never by hand. Must not touch the node or Lua: the
//! node counts through [`NodeMetrics`], Lua's `metrics` module through
//! [`ScriptMetrics`].
//!
//! - [`node`]: the host's series of one node (`luahost_*`, labels `node`
//!   and `type`), counted on the node's thread with one relaxed atomic add
//!   per message.
//! - [`script`]: counters and gauges the scripts add, with a cap on label
//!   sets.
//! - [`http`]: the request head and the response, without I/O.
//! - [`serve`]: the thin tokio driver: accepts on a listener and answers
//!   `GET /metrics` with what a [`Source`] encodes. Anything with metrics
//!   (a node, a daemon) can serve through it.

pub mod http;
pub mod node;
pub mod script;

pub use node::{Count, NodeMetrics, Sample};
pub use script::{Applied, MetricError, ScriptMetric, ScriptMetrics, Update};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::warn;

use crate::rpc::ratelog::LogLimit;

/// Something an endpoint can serve: it appends its metric families in the
/// OpenMetrics text format (without the closing `# EOF`, which the
/// endpoint adds) to `out`. Called on the endpoint's task, from any thread.
pub trait Source: Send + Sync + 'static {
    /// Appends the text of every family.
    ///
    /// # Errors
    ///
    /// What the encoder reports (a `fmt::Error`).
    fn encode(&self, out: &mut String) -> std::fmt::Result;
}

impl Source for prometheus_client::registry::Registry {
    fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, self)
    }
}

impl<S: Source> Source for Mutex<S> {
    fn encode(&self, out: &mut String) -> std::fmt::Result {
        self.lock().unwrap_or_else(|e| e.into_inner()).encode(out)
    }
}

/// How long a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing the answer may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections answered at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;

/// Serves `source` on `listener` until the returned future is dropped:
/// each connection gets one answer (`GET /metrics`: the text; anything
/// else: an error status) and is closed. A request that is malformed, too
/// large or too slow closes that connection only; such refusals are
/// logged rate-limited (a remote party causes them).
///
/// The future needs a tokio runtime (any flavour); connections are served
/// on tasks of their own, aborted when it is dropped.
pub async fn serve(listener: TcpListener, source: Arc<dyn Source>) {
    let limit = Arc::new(Mutex::new(LogLimit::default()));
    let mut conns = JoinSet::new();
    loop {
        let accepted = listener.accept().await;
        while conns.try_join_next().is_some() {}
        summaries(&limit);
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if allow(&limit, "failed accepts on the metrics endpoint") {
                    warn!("metrics endpoint: accept failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if conns.len() >= MAX_CONNECTIONS {
            if allow(&limit, "connections to the metrics endpoint over its limit") {
                warn!("metrics endpoint: {peer} closed: {MAX_CONNECTIONS} connections are being answered already");
            }
            continue;
        }
        conns.spawn(answer(stream, peer, source.clone(), limit.clone()));
    }
}

fn allow(limit: &Mutex<LogLimit>, cause: &'static str) -> bool {
    limit
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .allow(cause, Instant::now())
}

fn summaries(limit: &Mutex<LogLimit>) {
    let done = limit
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .end_windows(Instant::now());
    for s in done {
        warn!("metrics endpoint: {s}");
    }
}

/// Reads one request head from `stream` and answers it.
async fn answer(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    source: Arc<dyn Source>,
    limit: Arc<Mutex<LogLimit>>,
) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            match http::parse(&buf) {
                http::Request::Incomplete => continue,
                r => return Some(r),
            }
        }
    };
    let req = match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Some(r)) => r,
        // closed before a whole head, or too slow: nothing to answer
        Ok(None) | Err(_) => return,
    };
    let bytes = match &req {
        http::Request::Metrics => {
            let mut text = String::with_capacity(16 * 1024);
            let encoded = source
                .encode(&mut text)
                .and_then(|()| prometheus_client::encoding::text::encode_eof(&mut text));
            match encoded {
                Ok(()) => http::response(200, http::CONTENT_TYPE, &text),
                Err(_) => http::response(500, "text/plain; charset=utf-8", "could not encode the metrics\n"),
            }
        }
        other => {
            if matches!(other, http::Request::Bad(_) | http::Request::TooLarge)
                && allow(&limit, "bad requests to the metrics endpoint")
            {
                warn!("metrics endpoint: bad request from {peer}: {other:?}; closed");
            }
            http::refusal(other)
        }
    };
    let write = async {
        stream.write_all(&bytes).await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(WRITE_TIMEOUT, write).await.is_err() {
        return;
    }
    if !matches!(req, http::Request::Metrics) {
        // what the client still sends is read and dropped for a moment, so
        // that closing with unread bytes does not reset the connection
        // before it has read the answer
        let drain = async {
            let mut left = DRAIN_MAX;
            while left > 0 {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    }
}

/// After a refusal, how long and how much of what the client still sends is
/// read and dropped before the connection closes.
const DRAIN_TIME: Duration = Duration::from_secs(1);
const DRAIN_MAX: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::registry::Registry;

    async fn get(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// What a daemon does: a registry of its own, served on an address.
    #[tokio::test]
    async fn serves_any_registry() {
        let mut r = Registry::with_prefix("luahost_daemon");
        let c: Counter = Counter::default();
        r.register("starts", "Processes started", c.clone());
        c.inc_by(3);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Mutex::new(r))));
        let ok = get(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("\r\n\r\n# HELP luahost_daemon_starts Processes started.\n"),
            "{ok}"
        );
        assert!(ok.ends_with("luahost_daemon_starts_total 3\n# EOF\n"), "{ok}");
        let missing = get(addr, b"GET /other HTTP/1.1\r\n\r\n").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        server.abort();
    }
}
