//! What one thread counted: plain numbers behind one `RefCell` per thread (its tasks
//! share one core, so no atomics), merged across threads at the end.

use std::collections::BTreeMap;

use super::timeline::Timeline;
use crate::stats::Histogram;

/// Errors kept verbatim per thread (and in the report); the rest are only counted.
pub const KEPT_ERRORS: usize = 10;

/// One thread's counts.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Clients served (a first welcome).
    pub served: u64,
    /// Refusals of every kind.
    pub refused: u64,
    /// … by kind (`overloaded`, `connect_refused`, `connect_reset`, …).
    pub refused_by: BTreeMap<&'static str, u64>,
    /// Connection attempts after a client's first.
    pub retried: u64,
    /// Welcomes with `"resumed":true`.
    pub resumed: u64,
    /// Sessions lost after their welcome.
    pub dropped: u64,
    /// … by close code or kind of failure.
    pub dropped_by: BTreeMap<String, u64>,
    /// Largest `queue_pos` a refusal announced.
    pub queue_pos_max: u64,
    /// µs from the start to the first connection attempt, and to the last first welcome.
    pub first_attempt_us: Option<u64>,
    /// See `first_attempt_us`.
    pub last_served_us: Option<u64>,

    /// Chat messages sent (first tries).
    pub sent: u64,
    /// Sends tried again (refused with `rate_limited`/`overloaded`, or after a
    /// reconnect).
    pub send_retries: u64,
    /// Sends acknowledged.
    pub acked: u64,
    /// Acknowledgements flagged `duplicate` (a retry of a send already stored).
    pub duplicate_acks: u64,
    /// Sends refused for good.
    pub send_failed: u64,
    /// Sends due when their client was busy or offline, not made.
    pub send_skipped: u64,
    /// Messages received by members, each once (live and replayed).
    pub deliveries: u64,
    /// … of which replayed history (a `since` subscription after a late login).
    pub replayed: u64,
    /// Pushes dropped while resubscribing after a reconnect.
    pub resync_dropped: u64,
    /// Error frames without a request id (a failed `ack`/`read`, …).
    pub stray_errors: u64,

    /// Signals accepted by the server.
    pub signals_sent: u64,
    /// Signals refused for now and sent again.
    pub signals_retried: u64,
    /// Signals refused for good.
    pub signals_failed: u64,

    /// `meeting.create` replies with `"created":true`.
    pub created: u64,
    /// Successful first joins.
    pub joined: u64,
    /// Successful joins with a seat token after a reconnect.
    pub rejoined: u64,
    /// `overloaded` answers to `meeting.join` (each retried).
    pub join_refused: u64,
    /// Creates or joins refused for good.
    pub join_failed: u64,

    /// Stamp→read latency of live deliveries (µs).
    pub delivery: Histogram,
    /// … of those read after the ramp ended.
    pub delivery_after_ramp: Histogram,
    /// `meeting.join` latency from its first try to its reply (µs).
    pub join: Histogram,
    /// Chat send→acknowledgement latency from the first try (µs).
    pub send_ack: Histogram,
    /// Per second.
    pub timeline: Timeline,
    /// The first errors, verbatim.
    pub errors: Vec<String>,
}

impl Counts {
    /// Keeps `what` among the first errors.
    pub fn note(&mut self, what: String) {
        if self.errors.len() < KEPT_ERRORS {
            self.errors.push(what);
        }
    }

    /// Counts a refusal of kind `why`.
    pub fn refusal(&mut self, why: &'static str) {
        self.refused += 1;
        *self.refused_by.entry(why).or_default() += 1;
    }

    /// Adds another thread's counts.
    pub fn merge(&mut self, o: &Counts) {
        let add = |a: &mut u64, b: u64| *a += b;
        add(&mut self.served, o.served);
        add(&mut self.refused, o.refused);
        for (k, v) in &o.refused_by {
            *self.refused_by.entry(k).or_default() += v;
        }
        add(&mut self.retried, o.retried);
        add(&mut self.resumed, o.resumed);
        add(&mut self.dropped, o.dropped);
        for (k, v) in &o.dropped_by {
            *self.dropped_by.entry(k.clone()).or_default() += v;
        }
        self.queue_pos_max = self.queue_pos_max.max(o.queue_pos_max);
        self.first_attempt_us = min_opt(self.first_attempt_us, o.first_attempt_us);
        self.last_served_us = self.last_served_us.max(o.last_served_us);
        add(&mut self.sent, o.sent);
        add(&mut self.send_retries, o.send_retries);
        add(&mut self.acked, o.acked);
        add(&mut self.duplicate_acks, o.duplicate_acks);
        add(&mut self.send_failed, o.send_failed);
        add(&mut self.send_skipped, o.send_skipped);
        add(&mut self.deliveries, o.deliveries);
        add(&mut self.replayed, o.replayed);
        add(&mut self.resync_dropped, o.resync_dropped);
        add(&mut self.stray_errors, o.stray_errors);
        add(&mut self.signals_sent, o.signals_sent);
        add(&mut self.signals_retried, o.signals_retried);
        add(&mut self.signals_failed, o.signals_failed);
        add(&mut self.created, o.created);
        add(&mut self.joined, o.joined);
        add(&mut self.rejoined, o.rejoined);
        add(&mut self.join_refused, o.join_refused);
        add(&mut self.join_failed, o.join_failed);
        self.delivery.merge(&o.delivery);
        self.delivery_after_ramp.merge(&o.delivery_after_ramp);
        self.join.merge(&o.join);
        self.send_ack.merge(&o.send_ack);
        self.timeline.merge(&o.timeline);
        for e in &o.errors {
            self.note(e.clone());
        }
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_counts_and_keeps_extremes() {
        let mut a = Counts::default();
        a.refusal("overloaded");
        a.first_attempt_us = Some(50);
        a.last_served_us = Some(900);
        a.delivery.record(10);
        a.note("a".into());
        let mut b = Counts::default();
        b.refusal("overloaded");
        b.refusal("connect_refused");
        b.first_attempt_us = Some(20);
        b.timeline.second(2).served = 1;
        b.note("b".into());
        a.merge(&b);
        assert_eq!(a.refused, 3);
        assert_eq!(a.refused_by["overloaded"], 2);
        assert_eq!(
            (a.first_attempt_us, a.last_served_us),
            (Some(20), Some(900))
        );
        assert_eq!(a.timeline.entries().len(), 3);
        assert_eq!(a.errors, ["a", "b"]);
        assert_eq!(min_opt(None, Some(3)), Some(3));
    }
}
