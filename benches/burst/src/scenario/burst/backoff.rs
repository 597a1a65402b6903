//! How long a refused client waits: the server's `retry_after_ms` when it gave one (it
//! is already jittered to spread the refused clients), else exponential back-off with
//! full jitter — a uniform wait between 0 and `min(cap, base · 2^failures)` — so that
//! clients refused together do not come back together.

use std::sync::LazyLock;
use std::time::Duration;

use super::rng::Rng;
use crate::client::scan::{self, Key};

/// `"queue_pos"`: how many refused clients the server counts ahead of this one.
static QUEUE_POS: LazyLock<Key> = LazyLock::new(|| Key::new("queue_pos"));

/// Longest wait obeyed: the server never asks for more than a minute; a larger value is
/// a bug on one side or the other, not a reason to sleep through the run.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Exponential back-off with full jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// The first ceiling.
    base: Duration,
    /// The largest ceiling.
    cap: Duration,
    /// Failures since the last success: the ceiling's exponent.
    failures: u32,
}

impl Backoff {
    /// Back-off starting at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            failures: 0,
        }
    }

    /// The ceiling of the next wait.
    pub fn ceiling(&self) -> Duration {
        let factor = 2f64.powi(self.failures.min(40) as i32);
        self.base.mul_f64(factor).min(self.cap)
    }

    /// Counts a failure and draws the wait before the next try: uniform in
    /// `[0, ceiling]`.
    pub fn next(&mut self, rng: &mut Rng) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(rng.unit())
    }

    /// The wait before the next try: what the server asked (`hint`) when it said,
    /// else [`Backoff::next`]. Either way the failure counts, so that a later refusal
    /// without a hint backs off further.
    pub fn wait(&mut self, hint: Option<Duration>, rng: &mut Rng) -> Duration {
        let drawn = self.next(rng);
        hint.map_or(drawn, |h| h.min(MAX_RETRY_AFTER))
    }

    /// After a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// `retry_after_ms` of an `error` frame (`overloaded`, `rate_limited`).
pub fn retry_after_in_frame(frame: &[u8]) -> Option<Duration> {
    scan::u64_value(frame, &scan::RETRY_AFTER_MS).map(Duration::from_millis)
}

/// `retry_after_ms` of a close 1013's reason, the JSON `{"retry_after_ms":M}`.
pub fn retry_after_in_close(reason: &str) -> Option<Duration> {
    retry_after_in_frame(reason.as_bytes())
}

/// `queue_pos` of an `overloaded` error frame.
pub fn queue_pos(frame: &[u8]) -> Option<u64> {
    scan::u64_value(frame, &QUEUE_POS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_within_the_doubling_ceiling() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        let mut b = Backoff::new(base, cap);
        let mut rng = Rng::new(3);
        for failures in 0..12u32 {
            let ceiling = (base * 2u32.pow(failures)).min(cap);
            assert_eq!(b.ceiling(), ceiling);
            let waits: Vec<Duration> = (0..200).map(|_| b.clone().next(&mut rng)).collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "failures {failures}");
            // Full jitter: the waits spread over the whole range, not near the ceiling.
            assert!(
                waits.iter().any(|w| *w < ceiling / 4),
                "failures {failures}"
            );
            assert!(
                waits.iter().any(|w| *w > ceiling * 3 / 4),
                "failures {failures}"
            );
            b.next(&mut rng);
        }
        assert_eq!(b.ceiling(), cap);
        b.reset();
        assert_eq!(b.ceiling(), base);
        for _ in 0..100 {
            b.next(&mut rng);
        }
        assert_eq!(b.ceiling(), cap, "no overflow after many failures");
    }

    #[test]
    fn a_hint_wins_but_still_counts_as_a_failure() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut rng = Rng::new(1);
        let hint = Some(Duration::from_millis(1234));
        assert_eq!(b.wait(hint, &mut rng), Duration::from_millis(1234));
        assert_eq!(b.ceiling(), Duration::from_millis(200));
        assert!(b.wait(None, &mut rng) <= Duration::from_millis(200));
        assert_eq!(
            b.wait(Some(Duration::from_secs(3600)), &mut rng),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn retry_after_from_an_error_frame_and_a_close_reason() {
        let refusal = br#"{"op":"error","code":"overloaded","message":"the server is busy: retry later","retry_after_ms":734,"queue_pos":12}"#;
        assert_eq!(
            retry_after_in_frame(refusal),
            Some(Duration::from_millis(734))
        );
        assert_eq!(queue_pos(refusal), Some(12));
        assert_eq!(
            retry_after_in_close(r#"{"retry_after_ms":88}"#),
            Some(Duration::from_millis(88))
        );
        assert_eq!(
            retry_after_in_close(r#"{ "retry_after_ms" : 5 }"#),
            Some(Duration::from_millis(5))
        );
        assert_eq!(retry_after_in_close("going away"), None);
        assert_eq!(
            retry_after_in_frame(br#"{"op":"error","code":"conflict"}"#),
            None
        );
        assert_eq!(queue_pos(br#"{"op":"error"}"#), None);
    }
}
