//! RemoteLog's queue on the sending node (seed 000's `RemoteLog(true)`): the
//! Lua log lines waiting to go to the cluster's log node. Bounded: when the
//! log node is slow or away, new lines are dropped and counted, and the
//! count reaches the log node as a line of its own where the gap is (after
//! the lines kept before it, before the next ones).
//! Writing a line never blocks the node.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use tokio::sync::Notify;

/// Lines a node keeps for its log node at most.
pub(crate) const MAX_LINES: usize = 1024;

/// One line: level (1 debug .. 4 error) and text.
pub(crate) type Line = (u8, String);

/// The lines waiting for the log node.
#[derive(Debug, Default)]
pub(crate) struct LogSink {
    /// The log node's sid, when this node forwards its lines.
    pub(crate) target: Option<u32>,
    lines: RefCell<VecDeque<Line>>,
    /// Lines dropped since the last that went out.
    dropped: Cell<u64>,
    /// Lines dropped in all.
    pub(crate) dropped_total: Cell<u64>,
    /// Wakes the task that forwards them.
    pub(crate) wake: Notify,
}

impl LogSink {
    /// A sink forwarding to `target` (none: lines are only logged here).
    pub(crate) fn new(target: Option<u32>) -> Self {
        LogSink {
            target,
            ..LogSink::default()
        }
    }

    /// Queues a line, or counts it dropped when the queue is full.
    pub(crate) fn push(&self, level: u8, text: &str) {
        if self.target.is_none() {
            return;
        }
        let mut lines = self.lines.borrow_mut();
        if lines.len() >= MAX_LINES {
            self.dropped.set(self.dropped.get() + 1);
            self.dropped_total.set(self.dropped_total.get() + 1);
            return;
        }
        let first = lines.is_empty();
        if let Some(note) = self.gap_note() {
            lines.push_back(note);
        }
        lines.push_back((level, text.to_string()));
        if first {
            self.wake.notify_one();
        }
    }

    /// The line that says how many were dropped since the last kept one.
    fn gap_note(&self) -> Option<Line> {
        match self.dropped.replace(0) {
            0 => None,
            n => Some((
                3,
                format!("remote log: {n} lines dropped here (the log node was slow or away)"),
            )),
        }
    }

    /// True when lines (or a count of dropped ones) wait.
    pub(crate) fn pending(&self) -> bool {
        !self.lines.borrow().is_empty() || self.dropped.get() > 0
    }

    /// Takes up to `n` lines in order (when all are taken, a count of
    /// lines dropped after them follows, as a warning line of its own).
    pub(crate) fn take(&self, n: usize) -> Vec<Line> {
        let mut lines = self.lines.borrow_mut();
        let mut out: Vec<Line> = Vec::with_capacity(n.min(lines.len()) + 1);
        while out.len() < n {
            match lines.pop_front() {
                Some(l) => out.push(l),
                None => break,
            }
        }
        if lines.is_empty() {
            out.extend(self.gap_note());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_order_and_a_gap_is_noted_where_it_is() {
        let sink = LogSink::new(Some(7));
        for i in 0..MAX_LINES + 10 {
            sink.push(2, &format!("line {i}"));
        }
        let first = sink.take(2);
        assert_eq!((first[0].1.as_str(), first[1].1.as_str()), ("line 0", "line 1"));
        // room again: the gap is noted before the next line
        sink.push(2, "after");
        let rest = sink.take(usize::MAX);
        assert_eq!(rest.len(), MAX_LINES - 2 + 2);
        assert_eq!(rest[MAX_LINES - 3].1, format!("line {}", MAX_LINES - 1));
        let note = "remote log: 10 lines dropped here (the log node was slow or away)";
        assert_eq!(rest[MAX_LINES - 2], (3, note.to_string()));
        assert_eq!(rest[MAX_LINES - 1].1, "after");
        assert!(!sink.pending());
        // dropped at the end, all taken: the note comes last
        for i in 0..MAX_LINES + 3 {
            sink.push(2, &format!("again {i}"));
        }
        let all = sink.take(usize::MAX);
        assert_eq!(all.last().unwrap().1, note.replace("10", "3"));
        assert_eq!(sink.dropped_total.get(), 13);
    }

    #[test]
    fn without_a_log_node_nothing_is_kept() {
        let sink = LogSink::new(None);
        sink.push(2, "x");
        assert!(!sink.pending());
    }
}
