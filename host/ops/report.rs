//! A node process's own record (seed 004: each process refreshes its
//! entry at a fixed rate; liveness is judged by its age). Started by
//! `luahost run` when its daemon named the store and key
//! (`LUAHOST_OPS_STORE`, `LUAHOST_OPS_KEY`); the figures come from a
//! closure, so this layer needs nothing of the runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::restart::REFRESH;
use super::store::{now_ms, OpsError, OpsStore, ProcRecord, ProcState, ProcStats};

/// What a node measures of itself at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Calls and sends handled since the node started.
    pub handled: u64,
    /// Messages waiting (queued for peers, in the control mailbox).
    pub mailbox: u64,
    /// Entities registered.
    pub entities: u64,
    /// Bytes of the node's Lua state.
    pub lua_bytes: u64,
    /// Connections (peers, accepted).
    pub connections: u64,
}

/// Turns samples into a record's figures: the rate is the handled count's
/// growth over the time between two samples.
#[derive(Debug, Default)]
pub struct Rates {
    last: Option<(u64, Instant)>,
}

impl Rates {
    /// The figures of `s` taken at `now`.
    pub fn stats(&mut self, s: Sample, now: Instant) -> ProcStats {
        let rate = match self.last {
            Some((n, t)) if now > t => s.handled.saturating_sub(n) as f64 / (now - t).as_secs_f64(),
            _ => 0.0,
        };
        self.last = Some((s.handled, now));
        ProcStats {
            msgs_per_s: (rate * 10.0).round() / 10.0,
            mailbox: s.mailbox,
            entities: s.entities,
            lua_kib: s.lua_bytes / 1024,
            connections: s.connections,
        }
    }
}

/// A running process's record.
#[derive(Debug)]
pub struct Reporter {
    store: OpsStore,
    rec: ProcRecord,
    rates: Rates,
}

impl Reporter {
    /// Opens `store` and records a start of `key` (startcount + 1, this pid).
    ///
    /// # Errors
    /// The store's failure.
    pub fn start(store: &str, key: &str) -> Result<Reporter, OpsError> {
        let store = OpsStore::open(store)?;
        let old = store.proc(key)?;
        let rec = ProcRecord {
            key: key.to_string(),
            pid: std::process::id(),
            startcount: old.map_or(0, |r| r.startcount) + 1,
            lastupdate: now_ms(),
            state: ProcState::Running,
            info: ProcStats::default(),
        };
        store.put_proc(&rec)?;
        Ok(Reporter {
            store,
            rec,
            rates: Rates::default(),
        })
    }

    /// Writes a fresh record.
    ///
    /// # Errors
    /// The store's failure.
    pub fn refresh(&mut self, s: Option<Sample>) -> Result<(), OpsError> {
        if let Some(s) = s {
            self.rec.info = self.rates.stats(s, Instant::now());
        }
        self.rec.lastupdate = now_ms();
        self.store.put_proc(&self.rec)
    }

    /// Records a graceful stop.
    ///
    /// # Errors
    /// The store's failure.
    pub fn stopped(&mut self) -> Result<(), OpsError> {
        self.rec.state = ProcState::Stopped;
        self.rec.lastupdate = now_ms();
        self.store.put_proc(&self.rec)
    }
}

/// Refreshes the record every [`REFRESH`] on a thread of its own until
/// `stop` is set; then, if `graceful` is set, records the stop.
pub fn spawn(
    mut r: Reporter,
    mut sample: impl FnMut() -> Option<Sample> + Send + 'static,
    stop: Arc<AtomicBool>,
    graceful: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("ops-report".into())
        .spawn(move || {
            let mut next = std::time::Instant::now() + REFRESH;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                if std::time::Instant::now() >= next {
                    next += REFRESH;
                    if let Err(e) = r.refresh(sample()) {
                        tracing::warn!("cannot refresh this process's record: {e}");
                    }
                }
            }
            if graceful.load(Ordering::SeqCst) {
                if let Err(e) = r.stopped() {
                    tracing::warn!("cannot record this process's stop: {e}");
                }
            }
        })
        .expect("a thread for the ops record")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_samples() {
        let mut r = Rates::default();
        let t = Instant::now();
        let s = |handled| Sample {
            handled,
            lua_bytes: 4096,
            ..Sample::default()
        };
        assert_eq!(r.stats(s(100), t).msgs_per_s, 0.0, "no rate from one sample");
        let st = r.stats(s(300), t + Duration::from_secs(2));
        assert_eq!(st.msgs_per_s, 100.0);
        assert_eq!(st.lua_kib, 4);
        assert_eq!(
            r.stats(s(300), t + Duration::from_secs(2)).msgs_per_s,
            0.0,
            "no time passed"
        );
    }

    #[test]
    fn starts_count_up_and_a_stop_is_recorded() {
        let d = tempfile::tempdir().unwrap();
        let loc = d.path().to_str().unwrap();
        let mut r = Reporter::start(loc, "r.127.0.0.2.a").unwrap();
        r.refresh(Some(Sample::default())).unwrap();
        let r2 = Reporter::start(loc, "r.127.0.0.2.a").unwrap();
        assert_eq!(r2.rec.startcount, 2);
        r.stopped().unwrap();
        let s = OpsStore::open(loc).unwrap();
        assert_eq!(s.proc("r.127.0.0.2.a").unwrap().unwrap().state, ProcState::Stopped);
    }
}
