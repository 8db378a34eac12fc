//! Counters and gauges a node's scripts add (Lua's `metrics` module), with a
//! cap on the label sets of each.
//!
//! A script metric declares its label names when it is made; each update
//! gives values for them. A metric holds at most `max_series` label sets.
//! Past the cap a counter's update is folded into one series whose every
//! label is [`OVERFLOW`] (totals stay right), a gauge's is dropped (a value
//! set under another label set means nothing there); the caller is told
//! ([`Applied`]) so that it can warn, rate-limited. Pure: no Lua, no I/O.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The value every label of a counter's folded series has.
pub const OVERFLOW: &str = "_overflow";
/// Default cap on the label sets of one script metric.
pub const DEFAULT_MAX_SERIES: usize = 100;
/// Most label names a script metric may declare.
pub const MAX_LABELS: usize = 8;
/// Longest label value, in bytes.
pub const MAX_VALUE: usize = 256;
/// Most metrics the scripts of one node may make.
pub const MAX_METRICS: usize = 1000;

type Labels = Vec<(String, String)>;
type FCounter = Counter<f64, AtomicU64>;
type FGauge = Gauge<f64, AtomicU64>;

/// Why a script's metric call was refused (the Lua error's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricError {
    /// Not a valid metric name.
    #[error("metric name '{0}' must match [a-zA-Z_][a-zA-Z0-9_]* (at most 128 characters)")]
    BadName(String),
    /// A name the host keeps for its own series.
    #[error("metric name '{0}': names starting with luahost_ are the host's own")]
    Reserved(String),
    /// A counter named `..._total`.
    #[error("counter '{0}': leave out the _total suffix, it is added")]
    TotalSuffix(String),
    /// Help text with control characters or too long.
    #[error("metric '{0}': help must be at most 1024 characters, without control characters")]
    BadHelp(String),
    /// A label name that is not valid or is reserved.
    #[error("metric '{metric}': label '{label}' must match [a-zA-Z_][a-zA-Z0-9_]*, not start with __, and not be node or type (every series has those)")]
    BadLabel {
        /// The metric.
        metric: String,
        /// The label.
        label: String,
    },
    /// Too many labels, or one named twice.
    #[error("metric '{0}': at most 8 distinct label names")]
    TooManyLabels(String),
    /// The name is taken by a metric of another kind or with other labels.
    #[error("metric '{name}' already exists as a {existing}; it cannot be made again as a {asked}")]
    Conflict {
        /// The metric.
        name: String,
        /// What it is (`counter with labels [a, b]`).
        existing: String,
        /// What was asked.
        asked: String,
    },
    /// An update names a label the metric did not declare.
    #[error("metric '{metric}' has no label '{label}' (its labels: {declared})")]
    UnknownLabel {
        /// The metric.
        metric: String,
        /// The label given.
        label: String,
        /// The declared ones.
        declared: String,
    },
    /// A label value over [`MAX_VALUE`] bytes.
    #[error("metric '{metric}': value of label '{label}' is over 256 bytes")]
    LongValue {
        /// The metric.
        metric: String,
        /// The label.
        label: String,
    },
    /// A counter increased by a negative amount, or by NaN.
    #[error("counter '{0}' can only go up: inc needs a number >= 0")]
    Negative(String),
    /// `set` or `dec` on a counter, or a value that is not a number.
    #[error("'{0}' is a counter: it has inc only")]
    NotAGauge(String),
    /// More than [`MAX_METRICS`] metrics.
    #[error("a node's scripts may make at most 1000 metrics")]
    TooMany,
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied to its series.
    Done,
    /// The metric was at its cap: a counter's update went to the overflow
    /// series.
    Folded,
    /// The metric was at its cap: a gauge's update was dropped.
    Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

#[derive(Clone)]
enum Series {
    Counter(FCounter),
    Gauge(FGauge),
}

enum Fam {
    Counter(Family<Labels, FCounter>),
    Gauge(Family<Labels, FGauge>),
}

/// One counter or gauge of a script.
pub struct ScriptMetric {
    name: String,
    kind: Kind,
    labels: Vec<String>,
    max_series: usize,
    family: Fam,
    /// Label values (in declared order) -> series; at most `max_series`.
    series: RefCell<HashMap<Vec<String>, Series>>,
    overflow: RefCell<Option<Series>>,
}

impl std::fmt::Debug for ScriptMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptMetric")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// The metrics of one node's scripts, in a registry of their own (labelled
/// `node` and `type` like the host's).
pub struct ScriptMetrics {
    registry: Arc<Mutex<Registry>>,
    max_series: usize,
    by_name: RefCell<HashMap<String, Rc<ScriptMetric>>>,
}

impl std::fmt::Debug for ScriptMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptMetrics")
            .field("max_series", &self.max_series)
            .finish_non_exhaustive()
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()))
}

impl ScriptMetrics {
    /// The script metrics of node `node` of type `stype`; each metric holds
    /// at most `max_series` label sets unless it asks for another cap.
    pub fn new(node: &str, stype: &str, max_series: usize) -> ScriptMetrics {
        let labels = [
            (Cow::Borrowed("node"), Cow::Owned(node.to_string())),
            (Cow::Borrowed("type"), Cow::Owned(stype.to_string())),
        ];
        ScriptMetrics {
            registry: Arc::new(Mutex::new(Registry::with_labels(labels.into_iter()))),
            max_series: max_series.max(1),
            by_name: RefCell::new(HashMap::new()),
        }
    }

    /// The registry the endpoint encodes.
    pub(crate) fn registry(&self) -> Arc<Mutex<Registry>> {
        self.registry.clone()
    }

    /// The counter `name` with `labels`, made on the first call; later calls
    /// (a reloaded script) get the same one.
    ///
    /// # Errors
    ///
    /// A [`MetricError`]: a bad name, label or help, or the name taken by
    /// another kind or other labels.
    pub fn counter(
        &self,
        name: &str,
        help: &str,
        labels: Vec<String>,
        max_series: Option<usize>,
    ) -> Result<Rc<ScriptMetric>, MetricError> {
        if name.ends_with("_total") {
            return Err(MetricError::TotalSuffix(name.into()));
        }
        self.make(Kind::Counter, name, help, labels, max_series)
    }

    /// The gauge `name` with `labels`, as [`ScriptMetrics::counter`].
    ///
    /// # Errors
    ///
    /// As [`ScriptMetrics::counter`].
    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: Vec<String>,
        max_series: Option<usize>,
    ) -> Result<Rc<ScriptMetric>, MetricError> {
        self.make(Kind::Gauge, name, help, labels, max_series)
    }

    fn make(
        &self,
        kind: Kind,
        name: &str,
        help: &str,
        labels: Vec<String>,
        max_series: Option<usize>,
    ) -> Result<Rc<ScriptMetric>, MetricError> {
        if !valid_name(name) {
            return Err(MetricError::BadName(name.into()));
        }
        if name.starts_with("luahost_") {
            return Err(MetricError::Reserved(name.into()));
        }
        if help.chars().count() > 1024 || help.chars().any(char::is_control) {
            return Err(MetricError::BadHelp(name.into()));
        }
        for l in &labels {
            if !valid_name(l) || l.starts_with("__") || l == "node" || l == "type" {
                return Err(MetricError::BadLabel {
                    metric: name.into(),
                    label: l.clone(),
                });
            }
        }
        let mut distinct = labels.clone();
        distinct.sort();
        distinct.dedup();
        if labels.len() > MAX_LABELS || distinct.len() != labels.len() {
            return Err(MetricError::TooManyLabels(name.into()));
        }
        let describe = |k: Kind, l: &[String]| format!("{} with labels [{}]", k.name(), l.join(", "));
        let mut by_name = self.by_name.borrow_mut();
        if let Some(m) = by_name.get(name) {
            if m.kind != kind || m.labels != labels {
                return Err(MetricError::Conflict {
                    name: name.into(),
                    existing: describe(m.kind, &m.labels),
                    asked: describe(kind, &labels),
                });
            }
            return Ok(m.clone());
        }
        if by_name.len() >= MAX_METRICS {
            return Err(MetricError::TooMany);
        }
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let family = match kind {
            Kind::Counter => {
                let f = Family::<Labels, FCounter>::default();
                reg.register(name, help, f.clone());
                Fam::Counter(f)
            }
            Kind::Gauge => {
                let f = Family::<Labels, FGauge>::default();
                reg.register(name, help, f.clone());
                Fam::Gauge(f)
            }
        };
        let m = Rc::new(ScriptMetric {
            name: name.into(),
            kind,
            labels,
            max_series: max_series.unwrap_or(self.max_series).max(1),
            family,
            series: RefCell::new(HashMap::new()),
            overflow: RefCell::new(None),
        });
        by_name.insert(name.into(), m.clone());
        Ok(m)
    }
}

/// How an update changes a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Update {
    /// Adds (a counter: only >= 0).
    Add(f64),
    /// Sets (a gauge only).
    Set(f64),
}

impl ScriptMetric {
    /// The metric's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True for a counter, false for a gauge.
    pub fn is_counter(&self) -> bool {
        self.kind == Kind::Counter
    }

    /// Its cap on label sets.
    pub fn max_series(&self) -> usize {
        self.max_series
    }

    /// Applies `update` to the series of label `values` (label name ->
    /// value; a declared label not given is `""`).
    ///
    /// # Errors
    ///
    /// An undeclared label, a value too long, a negative or NaN increment
    /// of a counter, `Set` on a counter.
    pub fn update(&self, update: Update, values: &[(String, String)]) -> Result<Applied, MetricError> {
        match (self.kind, update) {
            (Kind::Counter, Update::Set(_)) => return Err(MetricError::NotAGauge(self.name.clone())),
            (Kind::Counter, Update::Add(n)) if n.is_nan() || n < 0.0 => {
                return Err(MetricError::Negative(self.name.clone()))
            }
            _ => {}
        }
        let mut key = vec![String::new(); self.labels.len()];
        for (k, v) in values {
            let Some(i) = self.labels.iter().position(|l| l == k) else {
                return Err(MetricError::UnknownLabel {
                    metric: self.name.clone(),
                    label: k.clone(),
                    declared: if self.labels.is_empty() {
                        "none".into()
                    } else {
                        self.labels.join(", ")
                    },
                });
            };
            if v.len() > MAX_VALUE {
                return Err(MetricError::LongValue {
                    metric: self.name.clone(),
                    label: k.clone(),
                });
            }
            key[i] = v.clone();
        }
        let mut series = self.series.borrow_mut();
        let (s, applied) = match series.get(&key) {
            Some(s) => (s.clone(), Applied::Done),
            None if series.len() < self.max_series => {
                let s = self.new_series(&key);
                series.insert(key, s.clone());
                (s, Applied::Done)
            }
            None => match self.kind {
                Kind::Gauge => return Ok(Applied::Dropped),
                Kind::Counter => {
                    let s = self
                        .overflow
                        .borrow_mut()
                        .get_or_insert_with(|| self.new_series(&vec![OVERFLOW.to_string(); self.labels.len()]))
                        .clone();
                    (s, Applied::Folded)
                }
            },
        };
        match (s, update) {
            (Series::Counter(c), Update::Add(n)) => {
                c.inc_by(n);
            }
            (Series::Gauge(g), Update::Add(n)) => {
                g.inc_by(n);
            }
            (Series::Gauge(g), Update::Set(v)) => {
                g.set(v);
            }
            (Series::Counter(_), Update::Set(_)) => return Err(MetricError::NotAGauge(self.name.clone())),
        }
        Ok(applied)
    }

    fn new_series(&self, values: &[String]) -> Series {
        let labels: Labels = self.labels.iter().cloned().zip(values.iter().cloned()).collect();
        match &self.family {
            Fam::Counter(f) => Series::Counter(f.get_or_create(&labels).clone()),
            Fam::Gauge(f) => Series::Gauge(f.get_or_create(&labels).clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &ScriptMetrics) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode_registry(&mut s, &m.registry.lock().unwrap()).unwrap();
        s
    }

    fn kv(k: &str, v: &str) -> Vec<(String, String)> {
        vec![(k.into(), v.into())]
    }

    #[test]
    fn counters_fold_and_gauges_drop_past_the_cap() {
        let m = ScriptMetrics::new("hall_1", "Hall", 2);
        let c = m.counter("logins", "Logins", vec!["platform".into()], None).unwrap();
        assert_eq!(
            c.update(Update::Add(1.0), &kv("platform", "ios")).unwrap(),
            Applied::Done
        );
        assert_eq!(
            c.update(Update::Add(2.0), &kv("platform", "web")).unwrap(),
            Applied::Done
        );
        assert_eq!(
            c.update(Update::Add(4.0), &kv("platform", "x")).unwrap(),
            Applied::Folded
        );
        assert_eq!(
            c.update(Update::Add(8.0), &kv("platform", "y")).unwrap(),
            Applied::Folded
        );
        assert_eq!(
            c.update(Update::Add(1.0), &kv("platform", "ios")).unwrap(),
            Applied::Done
        );
        let g = m.gauge("online", "Online", vec!["zone".into()], None).unwrap();
        g.update(Update::Set(5.0), &kv("zone", "a")).unwrap();
        g.update(Update::Add(-1.0), &kv("zone", "a")).unwrap();
        g.update(Update::Set(1.0), &kv("zone", "b")).unwrap();
        assert_eq!(g.update(Update::Set(9.0), &kv("zone", "c")).unwrap(), Applied::Dropped);
        let t = text(&m);
        for line in [
            r#"logins_total{node="hall_1",type="Hall",platform="ios"} 2.0"#,
            r#"logins_total{node="hall_1",type="Hall",platform="_overflow"} 12.0"#,
            r#"online{node="hall_1",type="Hall",zone="a"} 4.0"#,
        ] {
            assert!(t.contains(line), "{line} missing from\n{t}");
        }
        assert!(!t.contains("zone=\"c\""), "{t}");
    }

    #[test]
    fn refuses_what_would_make_bad_series() {
        let m = ScriptMetrics::new("n", "T", 10);
        let e = |r: Result<Rc<ScriptMetric>, MetricError>| r.unwrap_err().to_string();
        assert!(e(m.counter("9x", "", vec![], None)).contains("must match"));
        assert!(e(m.counter("luahost_x", "", vec![], None)).contains("host's own"));
        assert!(e(m.counter("x_total", "", vec![], None)).contains("_total"));
        assert!(e(m.counter("x", "", vec!["node".into()], None)).contains("label 'node'"));
        assert!(e(m.counter("x", "a\nb", vec![], None)).contains("help"));
        let c = m.counter("x", "X", vec!["a".into()], None).unwrap();
        assert!(Rc::ptr_eq(
            &c,
            &m.counter("x", "X again", vec!["a".into()], None).unwrap()
        ));
        assert!(e(m.gauge("x", "X", vec!["a".into()], None)).contains("already exists as a counter"));
        let err = c.update(Update::Add(1.0), &kv("b", "1")).unwrap_err().to_string();
        assert!(err.contains("no label 'b' (its labels: a)"), "{err}");
        assert!(c.update(Update::Add(-1.0), &[]).is_err());
        assert!(c.update(Update::Set(1.0), &[]).is_err());
        assert!(c.update(Update::Add(1.0), &kv("a", &"v".repeat(300))).is_err());
    }
}
