//! The per-subscriber order check: a room's seqs arrive 1, 2, 3 … with no gap and no
//! repeat, from whichever seq the subscriber sees first.

use serde::Serialize;

/// What one observed seq meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqEvent {
    /// The first seq this subscriber saw.
    First,
    /// Exactly one more than the last.
    Next,
    /// Further ahead than one: `missing` seqs never came (so far).
    Gap {
        /// How many seqs were skipped.
        missing: u64,
    },
    /// Not above the last: a duplicate or a reordering.
    Repeat,
}

/// The order check of one subscriber of one room.
///
/// ### Invariants
/// `last` only grows: after a gap the check goes on from the new seq; a repeat leaves
/// it where it was.
#[derive(Clone, Debug, Default)]
pub struct SeqChecker {
    /// The first seq seen.
    first: Option<u64>,
    /// The highest seq seen.
    last: u64,
    /// Seqs accepted as first or next.
    in_order: u64,
    /// Gaps seen, and the seqs they skipped.
    gaps: u64,
    missing: u64,
    /// Seqs at or below `last`.
    repeats: u64,
}

impl SeqChecker {
    /// Records `seq` and says what it was.
    pub fn observe(&mut self, seq: u64) -> SeqEvent {
        if self.first.is_none() {
            self.first = Some(seq);
            self.last = seq;
            self.in_order += 1;
            return SeqEvent::First;
        }
        if seq == self.last + 1 {
            self.last = seq;
            self.in_order += 1;
            SeqEvent::Next
        } else if seq <= self.last {
            self.repeats += 1;
            SeqEvent::Repeat
        } else {
            let missing = seq - self.last - 1;
            self.gaps += 1;
            self.missing += missing;
            self.last = seq;
            SeqEvent::Gap { missing }
        }
    }

    /// The highest seq seen (0 before any).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Whether every seq so far came in order.
    pub fn is_clean(&self) -> bool {
        self.gaps == 0 && self.repeats == 0
    }
}

/// The order check summed over many subscribers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SeqSummary {
    /// Subscribers checked.
    pub subscribers: u64,
    /// Subscribers that saw every seq in order and reached the final seq.
    pub clean: u64,
    /// Gaps, over all subscribers.
    pub gaps: u64,
    /// Seqs skipped by those gaps.
    pub missing: u64,
    /// Duplicates or reorderings.
    pub repeats: u64,
    /// Subscribers whose last seq is below the final seq when the run ended (messages
    /// still missing after the drain).
    pub behind: u64,
}

impl SeqSummary {
    /// Adds one subscriber's check; `final_seq` is the last seq the publisher was
    /// acknowledged (None when it never was).
    pub fn add(&mut self, check: &SeqChecker, final_seq: Option<u64>) {
        let behind = final_seq.is_some_and(|f| check.last < f);
        self.subscribers += 1;
        self.gaps += check.gaps;
        self.missing += check.missing;
        self.repeats += check.repeats;
        self.behind += u64::from(behind);
        self.clean += u64::from(check.is_clean() && !behind);
    }

    /// Whether every subscriber was clean.
    pub fn ok(&self) -> bool {
        self.clean == self.subscribers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_from_any_start() {
        let mut c = SeqChecker::default();
        assert_eq!(c.observe(41), SeqEvent::First);
        for s in 42..100 {
            assert_eq!(c.observe(s), SeqEvent::Next);
        }
        assert!(c.is_clean());
        assert_eq!(c.last(), 99);
    }

    #[test]
    fn gaps_and_repeats_are_counted_and_the_check_goes_on() {
        let mut c = SeqChecker::default();
        c.observe(1);
        assert_eq!(c.observe(2), SeqEvent::Next);
        assert_eq!(c.observe(5), SeqEvent::Gap { missing: 2 });
        assert_eq!(c.observe(6), SeqEvent::Next);
        assert_eq!(c.observe(6), SeqEvent::Repeat);
        assert_eq!(c.observe(3), SeqEvent::Repeat);
        assert_eq!(c.observe(7), SeqEvent::Next);
        assert!(!c.is_clean());
        assert_eq!((c.gaps, c.missing, c.repeats, c.last()), (1, 2, 2, 7));
    }

    #[test]
    fn summary_counts_clean_and_behind() {
        let checker = |seqs: &[u64]| {
            let mut c = SeqChecker::default();
            for &s in seqs {
                c.observe(s);
            }
            c
        };
        let ok = checker(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        let short = checker(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let gappy = checker(&[1, 2, 4, 5, 6, 7, 8, 9, 10]);
        let mut sum = SeqSummary::default();
        for c in [&ok, &short, &gappy, &SeqChecker::default()] {
            sum.add(c, Some(10));
        }
        assert_eq!(
            sum,
            SeqSummary {
                subscribers: 4,
                clean: 1,
                gaps: 1,
                missing: 1,
                repeats: 0,
                behind: 2
            }
        );
        assert!(!sum.ok());
    }
}
