//! Timers of a node: one heap per node, fired into Lua by one task.

use std::cmp::Reverse;
use std::rc::Rc;
use std::time::Duration;

use mlua::{MultiValue, Value};
use tokio::time::Instant;

use super::node::{kind, Core};

/// Timer ids start here so they never meet call ids (u32, the frame session).
pub(crate) const FIRST_TIMER_ID: u64 = 1 << 32;

impl Core {
    pub(crate) fn next_timer_id(&self) -> u64 {
        let id = self.next_timer.get();
        self.next_timer.set(id + 1);
        id
    }

    pub(crate) fn push_timer(&self, at: Instant, kind: TimerKind) {
        let seq = self.next_timer_id();
        let mut heap = self.timers.borrow_mut();
        let earlier = heap.peek().is_none_or(|Reverse((t, _, _))| at < *t);
        heap.push(Reverse((at, seq, kind)));
        drop(heap);
        if earlier {
            self.timer_wake.notify_one();
        }
    }

    /// Starts a Lua timer; its id comes back through the dispatcher.
    pub(crate) fn add_timer(&self, after: Duration) -> u64 {
        let id = self.next_timer_id();
        self.lua_timers.borrow_mut().insert(id);
        self.push_timer(Instant::now() + after.min(crate::rpc::MAX_DELAY), TimerKind::Lua(id));
        id
    }

    /// Stops a Lua timer before it fires.
    pub(crate) fn cancel_timer(&self, id: u64) {
        if self.lua_timers.borrow_mut().remove(&id) {
            self.cancelled.borrow_mut().insert(id);
        }
    }

    pub(crate) fn fire_timer(self: &Rc<Self>, kind: TimerKind) {
        match kind {
            TimerKind::Lua(id) => {
                self.lua_timers.borrow_mut().remove(&id);
                if self.cancelled.borrow_mut().remove(&id) {
                    return;
                }
                let mut mv = MultiValue::with_capacity(2);
                mv.push_back(Value::Integer(kind::TIMER));
                mv.push_back(Value::Integer(id as i64));
                self.call_lua(mv);
            }
            TimerKind::SelfOnline => self.set_self_online(true),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimerKind {
    Lua(u64),
    SelfOnline,
}

pub(crate) async fn timer_task(core: Rc<Core>) {
    loop {
        let next = core.timers.borrow().peek().map(|Reverse((t, _, _))| *t);
        match next {
            None => core.timer_wake.notified().await,
            Some(t) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(t) => {}
                    _ = core.timer_wake.notified() => continue,
                }
            }
        }
        let now = Instant::now();
        loop {
            let due = {
                let mut heap = core.timers.borrow_mut();
                match heap.peek() {
                    Some(Reverse((t, _, _))) if *t <= now => heap.pop().map(|Reverse((_, _, k))| k),
                    _ => None,
                }
            };
            match due {
                Some(k) => core.fire_timer(k),
                None => break,
            }
        }
    }
}
