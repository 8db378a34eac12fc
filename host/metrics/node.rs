//! The host's series of one node (`luahost_*`, labelled `node` and `type`).
//!
//! Counting is on the node's own thread and costs one relaxed atomic add
//! per message: the counters of a method are resolved once, on first use,
//! into a slot indexed by the method id (ids are dense: see
//! `Schema::method`), never looked up by label on the hot path. The
//! gauges (mailbox, queues, connections, Lua memory) are sampled by the
//! node about once a second ([`NodeMetrics::sample`]).

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use super::script::ScriptMetrics;
use super::Source;
use crate::rpc::error::CallError;

/// Upper bounds (seconds) of the call latency histogram's buckets: 100 us
/// to 10 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `kind` label of `luahost_errors_total`: the kinds of
/// [`CallError::kind`], and `call site` for errors without one (a bad
/// argument, a message too large, ...: nothing was sent).
pub const ERROR_KINDS: [&str; 6] = [
    "timeout",
    "node down",
    "no such node",
    "remote error",
    "busy",
    "call site",
];

/// What a node counts per method, as the index of a slot's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// A call this node made (`luahost_calls_total`).
    Call = 0,
    /// A one-way send (or a push to a Gate) this node made
    /// (`luahost_sends_total`).
    Send = 1,
    /// A request this node handled (`luahost_handled_total`, `kind`
    /// `call`).
    HandledCall = 2,
    /// A one-way send this node handled (`kind` `send`).
    HandledSend = 3,
    /// A client's call relayed by a Gate, handled here (`kind`
    /// `client_call`).
    HandledClientCall = 4,
    /// A client's one-way send relayed by a Gate (`kind` `client_send`).
    HandledClientSend = 5,
}

const COUNTS: usize = 6;

impl Count {
    fn handled_kind(self) -> &'static str {
        match self {
            Count::Call | Count::HandledCall => "call",
            Count::Send | Count::HandledSend => "send",
            Count::HandledClientCall => "client_call",
            Count::HandledClientSend => "client_send",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    method: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// [`LATENCY_BUCKETS`] in nanoseconds.
const LATENCY_BOUNDS_NS: [u64; LATENCY_BUCKETS.len()] = {
    let mut ns = [0u64; LATENCY_BUCKETS.len()];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

/// A latency histogram written by one thread (the node's) and read by the
/// endpoint: an observation is a few integer compares and two relaxed
/// atomic adds, without the lock of `prometheus_client`'s `Histogram`
/// (which any number of threads may write). Encoded by `prometheus_client`
/// as a classic histogram.
#[derive(Debug, Clone, Default)]
pub struct Latency(Arc<LatencyCounts>);

#[derive(Debug, Default)]
struct LatencyCounts {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum of the observations, in nanoseconds.
    sum_ns: AtomicU64,
}

impl Latency {
    /// Counts one observation.
    #[inline]
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_NS
            .iter()
            .position(|b| ns <= *b)
            .unwrap_or(LATENCY_BOUNDS_NS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // per bucket, as observed: the encoder makes them cumulative
        let mut count = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, n) in self.0.buckets.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            count += n;
            buckets.push((LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The counters of one method, each created on its first use (so a method
/// shows only the series it has).
#[derive(Default)]
struct Slot {
    name: String,
    counts: [Option<Counter>; COUNTS],
    latency: Option<Latency>,
}

/// The gauges a node samples (see [`NodeMetrics::sample`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Messages waiting in the node's control mailbox.
    pub mailbox: u64,
    /// Bytes queued towards peers or written and not yet acknowledged.
    pub queued_bytes: u64,
    /// Calls of this node waiting for their reply.
    pub calls_waiting: u64,
    /// Peers the node knows (itself excluded).
    pub peers: u64,
    /// Peers whose outgoing connection is verified.
    pub peers_connected: u64,
    /// Verified connections other nodes opened to this one.
    pub inbound: u64,
    /// On a Gate: client connections open.
    pub clients: Option<u64>,
    /// On a Gate: client sessions (connected or waiting for a resume).
    pub sessions: Option<u64>,
    /// Bytes the node's Lua state uses.
    pub lua_memory: u64,
}

/// Gauges of a [`Sample`].
#[derive(Default)]
struct Gauges {
    mailbox: Gauge,
    queued: Gauge,
    waiting: Gauge,
    peers: Gauge,
    connected: Gauge,
    inbound: Gauge,
    clients: Gauge,
    sessions: Gauge,
    lua_memory: Gauge,
}

/// Every series of one node: the host's (`luahost_*`) and the ones its
/// scripts add ([`ScriptMetrics`]); the node holds it on its thread, the
/// endpoint reads it through [`NodeMetrics::source`] from anywhere.
pub struct NodeMetrics {
    registry: Arc<Registry>,
    script: ScriptMetrics,
    calls: Family<MethodLabel, Counter>,
    sends: Family<MethodLabel, Counter>,
    handled: Family<HandledLabels, Counter>,
    latency: Family<MethodLabel, Latency>,
    errors: [Counter; ERROR_KINDS.len()],
    lost: Counter,
    reloads: [Counter; 2],
    gauges: Gauges,
    is_gate: bool,
    /// By method id.
    slots: RefCell<Vec<Slot>>,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

impl NodeMetrics {
    /// The series of node `node` of server type `stype` (every one labelled
    /// with both); `is_gate` adds the client gauges; `max_series` bounds the
    /// label sets of each script metric ([`ScriptMetrics`]).
    pub fn new(node: &str, stype: &str, is_gate: bool, max_series: usize) -> NodeMetrics {
        let labels = || {
            [
                (Cow::Borrowed("node"), Cow::Owned(node.to_string())),
                (Cow::Borrowed("type"), Cow::Owned(stype.to_string())),
            ]
            .into_iter()
        };
        let mut r = Registry::with_prefix_and_labels("luahost", labels());
        let calls = Family::<MethodLabel, Counter>::default();
        r.register("calls", "Calls this node made, by method", calls.clone());
        let sends = Family::<MethodLabel, Counter>::default();
        r.register(
            "sends",
            "One-way sends (and pushes to clients) this node made, by method",
            sends.clone(),
        );
        let handled = Family::<HandledLabels, Counter>::default();
        r.register(
            "handled",
            "Requests this node handled, by method and kind (call, send, client_call, client_send)",
            handled.clone(),
        );
        let latency = Family::<MethodLabel, Latency>::default();
        r.register_with_unit(
            "call_duration",
            "Time from a call to the arrival of its reply (ok or error reply), by method, measured by the caller",
            Unit::Seconds,
            latency.clone(),
        );
        let errors_f = Family::<KindLabel, Counter>::default();
        r.register(
            "errors",
            "Calls and sends that failed, by kind (timeout, node down, no such node, remote error, busy, call site)",
            errors_f.clone(),
        );
        let errors = ERROR_KINDS.map(|kind| errors_f.get_or_create(&KindLabel { kind }).clone());
        let lost = Counter::default();
        r.register(
            "sends_lost",
            "One-way sends reported lost (not delivered, or written and never acknowledged)",
            lost.clone(),
        );
        let reloads_f = Family::<OutcomeLabel, Counter>::default();
        r.register(
            "reloads",
            "Hot reloads of scripts, by outcome (ok, failed)",
            reloads_f.clone(),
        );
        let reloads = ["ok", "failed"].map(|outcome| reloads_f.get_or_create(&OutcomeLabel { outcome }).clone());
        let g = Gauges::default();
        r.register(
            "mailbox_depth",
            "Messages waiting in the node's control mailbox",
            g.mailbox.clone(),
        );
        r.register_with_unit(
            "queued",
            "Bytes queued towards peers or written and not yet acknowledged",
            Unit::Bytes,
            g.queued.clone(),
        );
        r.register(
            "calls_waiting",
            "Calls of this node waiting for their reply",
            g.waiting.clone(),
        );
        r.register("peers", "Other nodes this node knows", g.peers.clone());
        r.register(
            "peers_connected",
            "Other nodes this node has a verified connection to",
            g.connected.clone(),
        );
        r.register(
            "connections_inbound",
            "Verified connections other nodes opened to this node",
            g.inbound.clone(),
        );
        if is_gate {
            r.register(
                "clients",
                "Game client connections open on this Gate",
                g.clients.clone(),
            );
            r.register(
                "client_sessions",
                "Client sessions this Gate holds (connected or waiting for a resume)",
                g.sessions.clone(),
            );
        }
        r.register_with_unit(
            "lua_memory",
            "Memory used by the node's Lua state",
            Unit::Bytes,
            g.lua_memory.clone(),
        );
        NodeMetrics {
            registry: Arc::new(r),
            script: ScriptMetrics::new(node, stype, max_series),
            calls,
            sends,
            handled,
            latency,
            errors,
            lost,
            reloads,
            gauges: g,
            is_gate,
            slots: RefCell::new(Vec::new()),
        }
    }

    /// What an endpoint serves for this node: the host's series, then the
    /// scripts'.
    pub fn source(&self) -> Arc<dyn Source> {
        Arc::new(NodeSource {
            host: self.registry.clone(),
            script: self.script.registry(),
        })
    }

    /// The metrics the node's scripts add.
    pub fn script(&self) -> &ScriptMetrics {
        &self.script
    }

    /// The schema changed: method ids may name other methods now, so slots
    /// are resolved again (the series keep their values).
    pub fn schema_changed(&self) {
        self.slots.borrow_mut().clear();
    }

    /// Counts one `what` of method `mid` (named `name`, used only the first
    /// time the slot is resolved).
    #[inline]
    pub fn count(&self, mid: u32, name: &str, what: Count) {
        let mut slots = self.slots.borrow_mut();
        let slot = slot(&mut slots, mid, name);
        match &slot.counts[what as usize] {
            Some(c) => {
                c.inc();
            }
            None => {
                let method = slot.name.clone();
                let c = match what {
                    Count::Call => self.calls.get_or_create(&MethodLabel { method }).clone(),
                    Count::Send => self.sends.get_or_create(&MethodLabel { method }).clone(),
                    _ => self
                        .handled
                        .get_or_create(&HandledLabels {
                            method,
                            kind: what.handled_kind(),
                        })
                        .clone(),
                };
                c.inc();
                slot.counts[what as usize] = Some(c);
            }
        }
    }

    /// A reply to a call of method `mid` arrived `took` after the call.
    #[inline]
    pub fn call_took(&self, mid: u32, name: &str, took: Duration) {
        let mut slots = self.slots.borrow_mut();
        let slot = slot(&mut slots, mid, name);
        let h = slot.latency.get_or_insert_with(|| {
            self.latency
                .get_or_create(&MethodLabel {
                    method: slot.name.clone(),
                })
                .clone()
        });
        h.observe(took);
    }

    /// A call or send failed with `err`.
    pub fn error(&self, err: &CallError) {
        let kind = err.kind().unwrap_or("call site");
        let i = ERROR_KINDS
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(ERROR_KINDS.len() - 1);
        self.errors[i].inc();
    }

    /// `n` one-way sends were reported lost.
    pub fn sends_lost(&self, n: u64) {
        self.lost.inc_by(n);
    }

    /// A hot reload of scripts ended, applied (`ok`) or refused.
    pub fn reloaded(&self, ok: bool) {
        self.reloads[usize::from(!ok)].inc();
    }

    /// Sets the sampled gauges.
    pub fn sample(&self, s: &Sample) {
        let g = &self.gauges;
        let set = |gauge: &Gauge, v: u64| {
            gauge.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        set(&g.mailbox, s.mailbox);
        set(&g.queued, s.queued_bytes);
        set(&g.waiting, s.calls_waiting);
        set(&g.peers, s.peers);
        set(&g.connected, s.peers_connected);
        set(&g.inbound, s.inbound);
        if self.is_gate {
            set(&g.clients, s.clients.unwrap_or(0));
            set(&g.sessions, s.sessions.unwrap_or(0));
        }
        set(&g.lua_memory, s.lua_memory);
    }
}

/// The slot of method `mid`, made on first use.
#[inline]
fn slot<'a>(slots: &'a mut Vec<Slot>, mid: u32, name: &str) -> &'a mut Slot {
    let i = mid as usize;
    if i >= slots.len() {
        slots.resize_with(i + 1, Slot::default);
    }
    let s = &mut slots[i];
    if s.name.is_empty() {
        s.name = name.to_string();
    }
    s
}

/// A node's registries as an endpoint reads them.
struct NodeSource {
    host: Arc<Registry>,
    script: Arc<Mutex<Registry>>,
}

impl Source for NodeSource {
    fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.host)?;
        {
            let script = self.script.lock().unwrap_or_else(|e| e.into_inner());
            prometheus_client::encoding::text::encode_registry(out, &script)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &NodeMetrics) -> String {
        let mut s = String::new();
        m.source().encode(&mut s).unwrap();
        s
    }

    #[test]
    fn counts_by_method_with_node_and_type_labels() {
        let m = NodeMetrics::new("hall_1", "Hall", false, 10);
        m.count(7, "Echo.echo", Count::Call);
        m.count(7, "Echo.echo", Count::Call);
        m.count(3, "Echo.note", Count::Send);
        m.count(7, "Echo.echo", Count::HandledCall);
        m.call_took(7, "Echo.echo", Duration::from_millis(3));
        m.error(&CallError::NoSchema);
        m.reloaded(false);
        let t = text(&m);
        for line in [
            r#"luahost_calls_total{node="hall_1",type="Hall",method="Echo.echo"} 2"#,
            r#"luahost_sends_total{node="hall_1",type="Hall",method="Echo.note"} 1"#,
            r#"luahost_handled_total{node="hall_1",type="Hall",method="Echo.echo",kind="call"} 1"#,
            r#"luahost_call_duration_seconds_count{node="hall_1",type="Hall",method="Echo.echo"} 1"#,
            r#"luahost_call_duration_seconds_bucket{node="hall_1",type="Hall",le="0.0025",method="Echo.echo"} 0"#,
            r#"luahost_call_duration_seconds_bucket{node="hall_1",type="Hall",le="0.005",method="Echo.echo"} 1"#,
            r#"luahost_call_duration_seconds_bucket{node="hall_1",type="Hall",le="0.01",method="Echo.echo"} 1"#,
            r#"luahost_call_duration_seconds_bucket{node="hall_1",type="Hall",le="+Inf",method="Echo.echo"} 1"#,
            r#"luahost_call_duration_seconds_sum{node="hall_1",type="Hall",method="Echo.echo"} 0.003"#,
            r#"luahost_errors_total{node="hall_1",type="Hall",kind="call site"} 1"#,
            r#"luahost_reloads_total{node="hall_1",type="Hall",outcome="failed"} 1"#,
        ] {
            assert!(t.contains(line), "{line} missing from\n{t}");
        }
        assert!(!t.contains("luahost_clients"), "not a Gate: no client gauges");
        // a new schema may give id 7 to another method
        m.schema_changed();
        m.count(7, "Echo.other", Count::Call);
        assert!(text(&m).contains(r#"method="Echo.other"} 1"#));
    }
}
