//! A member's check of its team room's stream: every seq from 1 (the room is new to
//! this run, and the first `subscribe` asks for everything with `since` 0) to the last
//! acknowledged one, once and in order.
//!
//! After a reconnect the client subscribes again with `since` = the last seq it kept;
//! until that subscription's reply, pushes of the old subscription (and of a `resume`
//! replay) may repeat or skip ahead, so they are dropped: the new subscription replays
//! everything after `since` in order. After the reply, the check is strict again.
//!
//! Sans-IO. The missing seqs are kept as ranges (rare, so cheap), so that the report
//! can count each lost message once however many members missed it.

use crate::seq::{SeqChecker, SeqEvent};

/// What one pushed seq meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// The next seq: a delivery.
    Next,
    /// Further ahead: the seqs between never came (a gap), but this one counts.
    Gap,
    /// At or below the last: a duplicate, or a late arrival out of order.
    Repeat,
    /// Dropped while resubscribing after a reconnect.
    Dropped,
}

/// One member's check of one room.
///
/// ### Invariants
/// `check.last()` only grows; every seq at or below it is either received or in
/// `gaps`.
#[derive(Clone, Debug, Default)]
pub struct RoomCheck {
    /// The order check (gaps and repeats counted there too).
    check: SeqChecker,
    /// Inclusive ranges of seqs skipped by gaps.
    gaps: Vec<(u64, u64)>,
    /// Seqs above this were live when subscribed (not replayed history).
    live_from: u64,
    /// A subscribe reply has arrived on the current connection.
    replied: bool,
    /// Dropping pushes until the reply of a resubscription.
    resync: bool,
    /// Whether the member ever subscribed (it counts for losses only then).
    pub subscribed: bool,
    /// Seqs received once, in order or after a gap.
    pub received: u64,
    /// Repeated or late seqs.
    pub repeats: u64,
    /// Gaps (seqs skipped).
    pub gap_events: u64,
    /// Pushes dropped while resubscribing.
    pub dropped: u64,
}

impl RoomCheck {
    /// The `since` of the next `subscribe`: the last seq kept (0: everything).
    pub fn since(&self) -> u64 {
        self.check.last()
    }

    /// A new connection is about to subscribe: until its reply, pushes are dropped if
    /// the member had subscribed before.
    pub fn connecting(&mut self) {
        self.replied = false;
        self.resync = self.subscribed;
    }

    /// The subscribe reply: live messages are those above `last_seq`.
    pub fn subscribed(&mut self, last_seq: u64) {
        self.subscribed = true;
        self.replied = true;
        self.resync = false;
        self.live_from = self.live_from.max(last_seq);
    }

    /// Checks one pushed seq.
    pub fn observe(&mut self, seq: u64) -> Seen {
        if self.resync {
            self.dropped += 1;
            return Seen::Dropped;
        }
        let last = self.check.last();
        // The first seq expected is 1: a first push above it is a gap, like any other.
        let event = if last == 0 && seq > 1 {
            self.check.observe(0);
            self.check.observe(seq)
        } else {
            self.check.observe(seq)
        };
        match event {
            SeqEvent::First | SeqEvent::Next => {
                self.received += 1;
                Seen::Next
            }
            SeqEvent::Gap { .. } => {
                self.received += 1;
                self.gap_events += 1;
                self.gaps.push((last + 1, seq - 1));
                Seen::Gap
            }
            SeqEvent::Repeat => {
                self.repeats += 1;
                Seen::Repeat
            }
        }
    }

    /// Whether `seq` (just received) was live rather than replayed history: its
    /// latency means something.
    pub fn is_live(&self, seq: u64) -> bool {
        self.replied && seq > self.live_from
    }

    /// The highest seq received.
    pub fn last(&self) -> u64 {
        self.check.last()
    }

    /// The seqs up to `final_seq` this member never got, as inclusive ranges.
    pub fn missing(&self, final_seq: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let tail = (self.last() < final_seq).then(|| (self.last() + 1, final_seq));
        self.gaps.iter().copied().chain(tail)
    }
}

/// How many seqs the inclusive `ranges` cover together (each once).
pub fn covered(ranges: &mut [(u64, u64)]) -> u64 {
    ranges.sort_unstable();
    let mut total = 0;
    let mut upto = 0; // seqs below `upto` are counted
    for &(lo, hi) in ranges.iter() {
        let lo = lo.max(upto);
        if hi >= lo {
            total += hi - lo + 1;
            upto = hi + 1;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_stream_from_one() {
        let mut r = RoomCheck::default();
        r.connecting();
        r.subscribed(0);
        for s in 1..=5 {
            assert_eq!(r.observe(s), Seen::Next);
            assert!(r.is_live(s));
        }
        assert_eq!(r.missing(5).count(), 0);
        assert_eq!(r.missing(7).collect::<Vec<_>>(), [(6, 7)]);
        assert_eq!((r.received, r.repeats, r.gap_events), (5, 0, 0));
    }

    #[test]
    fn gaps_repeats_and_a_late_first_seq() {
        let mut r = RoomCheck::default();
        r.connecting();
        r.subscribed(2);
        assert_eq!(r.observe(3), Seen::Gap, "1 and 2 were never replayed");
        assert!(r.is_live(3));
        assert_eq!(r.observe(4), Seen::Next);
        assert_eq!(r.observe(4), Seen::Repeat);
        assert_eq!(r.observe(7), Seen::Gap);
        assert_eq!(r.observe(5), Seen::Repeat, "late is out of order");
        assert_eq!(r.missing(8).collect::<Vec<_>>(), [(1, 2), (5, 6), (8, 8)]);
        assert_eq!((r.received, r.repeats, r.gap_events), (3, 2, 2));
    }

    #[test]
    fn replayed_history_is_not_live() {
        let mut r = RoomCheck::default();
        r.connecting();
        r.subscribed(3);
        for s in 1..=3 {
            assert_eq!(r.observe(s), Seen::Next);
            assert!(!r.is_live(s));
        }
        assert_eq!(r.observe(4), Seen::Next);
        assert!(r.is_live(4));
    }

    #[test]
    fn a_reconnect_drops_pushes_until_the_resubscription_replies() {
        let mut r = RoomCheck::default();
        r.connecting();
        r.subscribed(0);
        for s in 1..=4 {
            r.observe(s);
        }
        // Dropped with 5 and 6 in flight; the resume replays 6, then the old
        // subscription pushes 7, all before the new subscription's reply.
        r.connecting();
        assert_eq!(r.since(), 4);
        assert_eq!(r.observe(6), Seen::Dropped);
        assert_eq!(r.observe(7), Seen::Dropped);
        assert_eq!(r.observe(5), Seen::Dropped);
        r.subscribed(7);
        for s in 5..=8 {
            assert_eq!(r.observe(s), Seen::Next, "seq {s}");
        }
        assert!(!r.is_live(7) && r.is_live(8));
        assert_eq!(r.missing(8).count(), 0);
        assert_eq!((r.dropped, r.repeats), (3, 0));
        // A first connection never drops.
        let mut fresh = RoomCheck::default();
        fresh.connecting();
        assert_eq!(fresh.observe(1), Seen::Next);
    }

    #[test]
    fn covered_counts_each_seq_once() {
        assert_eq!(covered(&mut []), 0);
        assert_eq!(covered(&mut [(5, 6), (1, 2), (2, 3), (10, 10)]), 6);
        assert_eq!(covered(&mut [(1, 10), (3, 4), (10, 12)]), 12);
        assert_eq!(covered(&mut [(0, 0), (1, 1)]), 2);
    }
}
