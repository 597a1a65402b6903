//! The fan-out publisher: keeps `window` sends in flight on one connection until the
//! measurement ends, then waits for the outstanding replies.
//!
//! Each body carries its publish time (`"p"`, µs since the scenario's epoch) so that
//! subscribers can measure publish→delivery latency on the same clock, padded so the
//! encoded body is exactly `body_bytes` long. `rate_limited` and `overloaded` answers
//! are retried after `retry_after_ms` with the same `cid`, as the protocol asks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use super::super::{micros_since, Window};
use super::Shared;
use crate::client::scan::{self, Key};
use crate::client::{Conn, ConnError};
use crate::stats::Histogram;

/// How every body starts: its publish stamp comes first, so that subscribers find it
/// with a prefix compare.
pub(super) const STAMP_PREFIX: &[u8] = br#"{"p":"#;
/// `"duplicate"`: a send reply's flag for a `cid` already stored.
static DUPLICATE: LazyLock<Key> = LazyLock::new(|| Key::new("duplicate"));

/// Bytes of a body besides the stamp's digits and the padding: `{"p":` `,"t":"` `"}`.
const BODY_OVERHEAD: usize = 13;

/// Back-off when a `rate_limited` error carries no `retry_after_ms`.
const DEFAULT_RETRY: Duration = Duration::from_millis(100);

/// What the publisher does.
pub(super) struct Plan {
    /// The room.
    pub room: String,
    /// Encoded body length.
    pub body_bytes: usize,
    /// Sends in flight at once.
    pub window: usize,
    /// Warm-up start to measurement end: sends start at once and stop at `run.end`;
    /// replies count when they arrive inside `run`.
    pub run: Window,
    /// Give up on outstanding replies then.
    pub deadline: Instant,
    /// Makes `cid`s unique per run, so a server that keeps its log across runs does
    /// not take this run's sends for retries of the last one's.
    pub cid_prefix: String,
}

/// What the publisher saw.
#[derive(Clone, Debug, Default)]
pub struct PublisherStats {
    /// Successful replies received inside the window.
    pub acked: u64,
    /// Successful replies in all.
    pub acked_total: u64,
    /// Send frames written, retries included.
    pub sent_total: u64,
    /// Send→reply latency (µs) of the replies inside the window, from the first try.
    pub latency: Histogram,
    /// `rate_limited` or `overloaded` answers (each retried).
    pub rate_limited: u64,
    /// Replies flagged `"duplicate":true`.
    pub duplicates: u64,
    /// Other error answers (not retried).
    pub errors: u64,
    /// Sends still unanswered at the deadline.
    pub abandoned: u64,
    /// The highest seq acknowledged: where every subscriber should end.
    pub final_seq: Option<u64>,
}

/// Runs the publisher; on a connection error, returns it with the stats so far.
///
/// # Errors
/// The connection's error, with the stats so far.
pub(super) async fn run(
    mut conn: Conn,
    plan: Plan,
    shared: Rc<Shared>,
) -> Result<PublisherStats, (ConnError, PublisherStats)> {
    let mut publisher = Publisher::new(&plan, shared);
    match publisher.drive(&mut conn, &plan).await {
        Ok(()) => Ok(publisher.stats),
        Err(e) => Err((e, publisher.stats)),
    }
}

/// The publisher's state.
struct Publisher {
    shared: Rc<Shared>,
    stats: PublisherStats,
    /// Id → first send time, for every send awaiting its reply.
    inflight: HashMap<u64, Instant>,
    /// Sends to retry, by due time.
    retries: BinaryHeap<Reverse<(Instant, u64)>>,
    next_id: u64,
    /// The frame being built, reused.
    text: String,
    /// `body_bytes` of padding to slice from.
    pad: String,
    /// The room as a JSON string.
    room_json: String,
}

impl Publisher {
    fn new(plan: &Plan, shared: Rc<Shared>) -> Self {
        Self {
            shared,
            stats: PublisherStats::default(),
            inflight: HashMap::with_capacity(plan.window * 2),
            retries: BinaryHeap::new(),
            next_id: 1,
            text: String::with_capacity(plan.body_bytes + 128),
            pad: "x".repeat(plan.body_bytes),
            room_json: serde_json::Value::from(plan.room.as_str()).to_string(),
        }
    }

    async fn drive(&mut self, conn: &mut Conn, plan: &Plan) -> Result<(), ConnError> {
        loop {
            let now = Instant::now();
            while let Some(&Reverse((due, id))) = self.retries.peek() {
                if due > now {
                    break;
                }
                self.retries.pop();
                self.queue_send(conn, plan, id);
            }
            if now < plan.run.end {
                while self.inflight.len() < plan.window {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.inflight.insert(id, now);
                    self.queue_send(conn, plan, id);
                }
            }
            conn.flush().await?;
            if now >= plan.run.end && self.inflight.is_empty() {
                return Ok(());
            }
            if now >= plan.deadline {
                self.stats.abandoned = self.inflight.len() as u64;
                return Ok(());
            }
            let mut wake = plan.deadline;
            if now < plan.run.end {
                wake = wake.min(plan.run.end);
            }
            if let Some(Reverse((due, _))) = self.retries.peek() {
                wake = wake.min(*due);
            }
            tokio::select! {
                read = conn.fill() => read?,
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            let now = Instant::now();
            while let Some(msg) = conn.next_message()? {
                self.on_frame(msg.payload, now, plan);
            }
        }
    }

    /// Queues send `id` with a fresh publish stamp.
    fn queue_send(&mut self, conn: &mut Conn, plan: &Plan, id: u64) {
        let stamp = micros_since(self.shared.epoch, Instant::now());
        self.text.clear();
        write_send(
            &mut self.text,
            id,
            &self.room_json,
            &plan.cid_prefix,
            stamp,
            &self.pad,
        );
        conn.queue_text(self.text.as_bytes());
        self.stats.sent_total += 1;
    }

    fn on_frame(&mut self, payload: &[u8], now: Instant, plan: &Plan) {
        match scan::op(payload) {
            Some(b"reply") => {
                let Some(sent) =
                    scan::u64_value(payload, &scan::ID).and_then(|id| self.inflight.remove(&id))
                else {
                    return;
                };
                self.stats.acked_total += 1;
                if plan.run.contains(now) {
                    self.stats.acked += 1;
                    self.stats.latency.record(micros_since(sent, now));
                }
                if let Some(seq) = scan::u64_value(payload, &scan::SEQ) {
                    self.stats.final_seq = Some(self.stats.final_seq.map_or(seq, |s| s.max(seq)));
                }
                if scan::value(payload, &DUPLICATE).is_some_and(|v| v.starts_with(b"true")) {
                    self.stats.duplicates += 1;
                }
            }
            Some(b"error") => {
                let id = scan::u64_value(payload, &scan::ID);
                let retry = scan::str_value_is(payload, &scan::CODE, b"rate_limited")
                    || scan::str_value_is(payload, &scan::CODE, b"overloaded");
                match id.filter(|id| self.inflight.contains_key(id)) {
                    Some(id) if retry => {
                        self.stats.rate_limited += 1;
                        let after = scan::u64_value(payload, &scan::RETRY_AFTER_MS)
                            .map_or(DEFAULT_RETRY, Duration::from_millis);
                        self.retries.push(Reverse((now + after, id)));
                    }
                    _ => {
                        self.stats.errors += 1;
                        if let Some(id) = id {
                            self.inflight.remove(&id);
                        }
                        self.shared
                            .note_error(format!("publisher: {}", String::from_utf8_lossy(payload)));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Writes the `send` frame of `id` into `out`, its body stamped with `stamp` and padded
/// from `pad` so that the encoded body is `pad.len()` bytes long (or the shortest
/// possible, when that is too short).
fn write_send(out: &mut String, id: u64, room_json: &str, cid_prefix: &str, stamp: u64, pad: &str) {
    let digits = stamp.checked_ilog10().unwrap_or(0) as usize + 1;
    let pad = &pad[..pad.len().saturating_sub(BODY_OVERHEAD + digits)];
    let _ = write!(
        out,
        r#"{{"op":"send","id":{id},"room":{room_json},"cid":"{cid_prefix}-{id}","body":{{"p":{stamp},"t":"{pad}"}}}}"#,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_padded_to_the_exact_length() {
        let pad = "x".repeat(128);
        for stamp in [0, 9, 10, 123_456, 99_999_999, u64::MAX] {
            let mut out = String::new();
            write_send(&mut out, 42, r#""fanout""#, "cab", stamp, &pad);
            let frame: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(frame["op"], "send");
            assert_eq!(frame["id"], 42);
            assert_eq!(frame["cid"], "cab-42");
            assert_eq!(frame["body"]["p"], stamp);
            assert_eq!(frame["body"].to_string().len(), 128, "stamp {stamp}");
            let body = scan::tail_body(out.as_bytes(), 128).unwrap();
            assert_eq!(
                scan::parse_u64(body.strip_prefix(STAMP_PREFIX).unwrap()),
                Some(stamp)
            );
        }
    }
}
