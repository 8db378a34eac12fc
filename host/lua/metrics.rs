//! Lua's `metrics` module: counters and gauges a script adds to its node's
//! metrics endpoint (README, "Metrics").
//!
//! ```lua
//! local metrics = require "metrics"
//! local logins = metrics.counter("game_logins", "Logins accepted", { "platform" })
//! logins:inc(1, { platform = "ios" })
//! local online = metrics.gauge("game_players_online", "Players online")
//! online:set(42)
//! ```
//!
//! The series themselves live in `crate::metrics::script`; this module only
//! converts Lua values and warns (rate-limited) when an update passes a
//! metric's cap on label sets.

use std::rc::{Rc, Weak};

use mlua::{Lua, Table, UserData, UserDataMethods, Value};
use tracing::warn;

use crate::lua::LuaHost;
use crate::metrics::{Applied, MetricError, ScriptMetric, Update};

/// A counter or gauge as Lua holds it.
struct LuaMetric<H: LuaHost> {
    metric: Rc<ScriptMetric>,
    host: Weak<H>,
}

fn lua_err(e: MetricError) -> mlua::Error {
    mlua::Error::runtime(format!("metrics: {e}"))
}

/// A label value: strings, numbers and booleans become text.
fn label_value(v: Value) -> mlua::Result<String> {
    match v {
        Value::String(s) => Ok(s.to_str()?.to_string()),
        Value::Integer(i) => Ok(i.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Boolean(b) => Ok(b.to_string()),
        other => Err(mlua::Error::runtime(format!(
            "metrics: a label value must be a string, number or boolean, got {}",
            other.type_name()
        ))),
    }
}

fn labels_of(t: Option<Table>) -> mlua::Result<Vec<(String, String)>> {
    let Some(t) = t else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let Value::String(k) = k else {
            return Err(mlua::Error::runtime("metrics: label names must be strings"));
        };
        out.push((k.to_str()?.to_string(), label_value(v)?));
    }
    Ok(out)
}

/// `(n, labels)` from `(n?, labels?)` or `(labels)`.
fn amount_and_labels(a: Value, b: Option<Table>, default: f64) -> mlua::Result<(f64, Option<Table>)> {
    match a {
        Value::Nil => Ok((default, b)),
        Value::Integer(i) => Ok((i as f64, b)),
        Value::Number(n) => Ok((n, b)),
        Value::Table(t) if b.is_none() => Ok((default, Some(t))),
        other => Err(mlua::Error::runtime(format!(
            "metrics: expected a number (and a table of labels), got {}",
            other.type_name()
        ))),
    }
}

impl<H: LuaHost> LuaMetric<H> {
    fn apply(&self, update: Update, labels: Option<Table>) -> mlua::Result<()> {
        let labels = labels_of(labels)?;
        let applied = self.metric.update(update, &labels).map_err(lua_err)?;
        if applied != Applied::Done {
            let limited = self
                .host
                .upgrade()
                .is_some_and(|h| h.limited("script metrics over their cap on label sets"));
            if limited {
                let what = if applied == Applied::Folded {
                    "counted in the series whose labels are all \"_overflow\""
                } else {
                    "dropped"
                };
                warn!(
                    "metric {} already has {} label sets (its max_series): the update for {labels:?} is {what}",
                    self.metric.name(),
                    self.metric.max_series()
                );
            }
        }
        Ok(())
    }
}

impl<H: LuaHost> UserData for LuaMetric<H> {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // counter and gauge: inc(n = 1, labels?) or inc(labels)
        methods.add_method("inc", |_, this, (a, b): (Value, Option<Table>)| {
            let (n, labels) = amount_and_labels(a, b, 1.0)?;
            this.apply(Update::Add(n), labels)
        });
        // gauge: dec(n = 1, labels?) or dec(labels)
        methods.add_method("dec", |_, this, (a, b): (Value, Option<Table>)| {
            let (n, labels) = amount_and_labels(a, b, 1.0)?;
            if this.metric.is_counter() {
                return Err(lua_err(MetricError::NotAGauge(this.metric.name().into())));
            }
            this.apply(Update::Add(-n), labels)
        });
        // gauge: set(v, labels?)
        methods.add_method("set", |_, this, (v, labels): (f64, Option<Table>)| {
            this.apply(Update::Set(v), labels)
        });
        methods.add_meta_method("__tostring", |_, this, ()| {
            Ok(format!(
                "metrics.{}({})",
                if this.metric.is_counter() { "counter" } else { "gauge" },
                this.metric.name()
            ))
        });
    }
}

/// `{ "a", "b" }` or `{ labels = { "a", "b" }, max_series = n }`.
fn options(t: Option<Table>) -> mlua::Result<(Vec<String>, Option<usize>)> {
    let Some(t) = t else { return Ok((Vec::new(), None)) };
    if t.raw_len() > 0 {
        return Ok((t.sequence_values::<String>().collect::<mlua::Result<_>>()?, None));
    }
    let labels = match t.get::<Option<Table>>("labels")? {
        Some(l) => l.sequence_values::<String>().collect::<mlua::Result<_>>()?,
        None => Vec::new(),
    };
    let max = match t.get::<Option<i64>>("max_series")? {
        None => None,
        Some(n) if (1..=100_000).contains(&n) => Some(n as usize),
        Some(n) => {
            return Err(mlua::Error::runtime(format!(
                "metrics: max_series {n} must be 1..100000"
            )))
        }
    };
    Ok((labels, max))
}

/// Builds the `metrics` module of node `core`.
pub(crate) fn module<H: LuaHost>(lua: &Lua, core: &Rc<H>) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    for gauge in [false, true] {
        let w = Rc::downgrade(core);
        let f = lua.create_function(move |_, (name, help, opts): (String, Option<String>, Option<Table>)| {
            let host = w
                .upgrade()
                .ok_or_else(|| mlua::Error::runtime("the node is shutting down"))?;
            let (labels, max) = options(opts)?;
            let help = help.unwrap_or_default();
            let script = host.metrics().script();
            let metric = if gauge {
                script.gauge(&name, &help, labels, max)
            } else {
                script.counter(&name, &help, labels, max)
            }
            .map_err(lua_err)?;
            Ok(LuaMetric {
                metric,
                host: w.clone(),
            })
        })?;
        m.set(if gauge { "gauge" } else { "counter" }, f)?;
    }
    Ok(m)
}
