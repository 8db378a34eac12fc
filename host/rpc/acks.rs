//! The receiving side's record of one-way sends handled, by sender
//! incarnation: duplicates resent after a reconnect are recognised by their
//! sequence number (serial number arithmetic: sequence numbers wrap).

use std::cell::Cell;

/// True when sequence number `a` comes at or before `b` (serial number
/// arithmetic: sequence numbers wrap around).
pub(crate) fn seq_le(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

/// The sends handled from one incarnation of a sender.
#[derive(Debug)]
pub(crate) struct SendSeqs {
    /// The sender's incarnation.
    pub(crate) incarnation: u64,
    last: Cell<Option<u32>>,
}

impl SendSeqs {
    /// True when send `seq` was not handled yet.
    pub(crate) fn fresh(&self, seq: u32) -> bool {
        self.last.get().is_none_or(|last| !seq_le(seq, last))
    }

    /// Notes that send `seq` was handed to Lua.
    pub(crate) fn handled(&self, seq: u32) {
        self.last.set(Some(seq));
    }

    /// The last send handled.
    pub(crate) fn last(&self) -> Option<u32> {
        self.last.get()
    }
}

impl SendSeqs {
    /// Nothing handled yet from `incarnation`.
    pub(crate) fn new(incarnation: u64) -> Self {
        SendSeqs {
            incarnation,
            last: Cell::new(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_across_wrap_around() {
        assert!(seq_le(1, 1));
        assert!(seq_le(1, 2));
        assert!(!seq_le(2, 1));
        assert!(seq_le(u32::MAX, 0));
        assert!(seq_le(u32::MAX - 5, 3));
        assert!(!seq_le(3, u32::MAX - 5));
    }

    #[test]
    fn duplicates_are_recognised_and_the_first_send_is_fresh() {
        let s = SendSeqs::new(7);
        assert!(s.fresh(41), "nothing handled yet: any number is new");
        s.handled(41);
        assert!(!s.fresh(41));
        assert!(!s.fresh(40), "resent after a reconnect");
        assert!(s.fresh(42));
        s.handled(u32::MAX);
        assert!(s.fresh(0), "after the wrap");
        assert_eq!(s.last(), Some(u32::MAX));
    }
}
