//! One publishing connection's loop, the same for every target: keep its share of
//! sends in flight until the measurement ends, time each from the write of its send to
//! the read of its ack, retry what the server asks to retry, then wait for the rest.
//!
//! What differs between rushhour and NATS — how a send is written and an answer read —
//! is behind [`Wire`], so that both are measured by the same loop.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use super::super::{micros_since, Window};
use crate::client::scan::push_u64;
use crate::client::ConnError;
use crate::stats::Histogram;

/// Errors kept verbatim per connection; the rest are only counted.
pub(super) const KEPT_ERRORS: usize = 5;

/// Back-off when a `rate_limited` answer carries no `retry_after_ms`.
const DEFAULT_RETRY: Duration = Duration::from_millis(100);

/// Bytes of a body besides the counter's digits and the padding: `{"n":` `,"t":"` `"}`.
const BODY_OVERHEAD: usize = 13;

/// The server's answer to one send.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer<'a> {
    /// Stored (and, per the server's policy, synced).
    Acked {
        /// The send's id.
        id: u64,
        /// The server already had it (a retried `cid` or `Nats-Msg-Id`).
        duplicate: bool,
    },
    /// Refused for now (`rate_limited`, `overloaded`): send again after a while.
    Retry {
        /// The send's id.
        id: u64,
        /// How long the server asked to wait, if it said.
        after: Option<Duration>,
    },
    /// Refused for good.
    Failed {
        /// The send's id, when the answer names it.
        id: Option<u64>,
        /// The answer, for the report.
        text: &'a [u8],
    },
}

/// A publishing connection to one kind of server.
pub(crate) trait Wire {
    /// Queues send `id` of `body` to room `room` (an index); [`Wire::flush`] writes it.
    /// A retry queues the same id again, so it must produce the same send.
    fn queue(&mut self, id: u64, room: u32, body: &[u8]);
    /// Writes everything queued.
    async fn flush(&mut self) -> Result<(), ConnError>;
    /// Reads once from the socket. Cancel-safe after a flush.
    async fn fill(&mut self) -> Result<(), ConnError>;
    /// Hands every answer read so far to `on`.
    fn answers(&mut self, on: &mut impl FnMut(Answer<'_>)) -> Result<(), ConnError>;
}

/// What one connection does.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    /// The connection's index: where its rotation over the rooms starts.
    pub index: u32,
    /// Sends it keeps in flight.
    pub share: usize,
    /// Rooms to rotate over.
    pub rooms: u32,
    /// Encoded body length.
    pub body_bytes: usize,
    /// Warm-up start to measurement end: sends stop at `run.end`; acks count when
    /// they are read inside `run`.
    pub run: Window,
    /// Give up on outstanding acks then.
    pub deadline: Instant,
}

/// What one connection saw.
#[derive(Clone, Debug, Default)]
pub(super) struct WorkerStats {
    /// Acks read inside the window.
    pub acked: u64,
    /// Acks in all.
    pub acked_total: u64,
    /// Sends written, retries included.
    pub sent: u64,
    /// Send→ack latency (µs) of the acks inside the window, from the first try.
    pub latency: Histogram,
    /// Answers asking to retry (each retried).
    pub rate_limited: u64,
    /// Acks flagged duplicate.
    pub duplicates: u64,
    /// Sends refused for good.
    pub errors: u64,
    /// Sends unanswered at the deadline, or when the connection was lost.
    pub abandoned: u64,
    /// How the connection was lost, if it was ([`ConnError::label`]).
    pub lost: Option<String>,
    /// The first errors, verbatim.
    pub samples: Vec<String>,
}

impl WorkerStats {
    fn note(&mut self, what: String) {
        if self.samples.len() < KEPT_ERRORS {
            self.samples.push(what);
        }
    }
}

/// Runs one connection's share of the load to the end; never fails, a lost connection
/// is in the stats.
pub(super) async fn run<W: Wire>(mut wire: W, plan: Plan) -> WorkerStats {
    let mut worker = Worker::new(&plan);
    if let Err(e) = worker.drive(&mut wire, &plan).await {
        worker.stats.abandoned = worker.inflight.len() as u64;
        worker.stats.lost = Some(e.label());
        worker.stats.note(format!("connection {}: {e}", plan.index));
    }
    worker.stats
}

/// One connection's state.
struct Worker {
    stats: WorkerStats,
    /// Id → first write time, for every send awaiting its answer.
    inflight: HashMap<u64, Instant>,
    /// Sends to retry, by due time.
    retries: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The next send's id.
    next_id: u64,
    /// The body being built, reused.
    body: Vec<u8>,
}

impl Worker {
    fn new(plan: &Plan) -> Self {
        Self {
            stats: WorkerStats::default(),
            inflight: HashMap::with_capacity(plan.share * 2),
            retries: BinaryHeap::new(),
            next_id: 1,
            body: Vec::with_capacity(plan.body_bytes + 32),
        }
    }

    fn queue<W: Wire>(&mut self, wire: &mut W, plan: &Plan, id: u64) {
        write_body(&mut self.body, id, plan.body_bytes);
        let room = ((u64::from(plan.index) + id) % u64::from(plan.rooms)) as u32;
        wire.queue(id, room, &self.body);
        self.stats.sent += 1;
    }

    async fn drive<W: Wire>(&mut self, wire: &mut W, plan: &Plan) -> Result<(), ConnError> {
        // One timer, moved only when the wake-up time changes: not one per read.
        let timer = tokio::time::sleep_until(plan.run.end.into());
        tokio::pin!(timer);
        loop {
            // Every send of this batch is stamped with the instant just before its
            // write: the latency includes the write.
            let now = Instant::now();
            while let Some(&Reverse((due, id))) = self.retries.peek() {
                if due > now {
                    break;
                }
                self.retries.pop();
                self.queue(wire, plan, id);
            }
            if now < plan.run.end {
                while self.inflight.len() < plan.share {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.inflight.insert(id, now);
                    self.queue(wire, plan, id);
                }
            }
            wire.flush().await?;
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
            if timer.deadline() != wake.into() {
                timer.as_mut().reset(wake.into());
            }
            tokio::select! {
                read = wire.fill() => read?,
                () = &mut timer => {}
            }
            let now = Instant::now();
            let in_window = plan.run.contains(now);
            wire.answers(&mut |answer| self.on_answer(answer, now, in_window, plan))?;
        }
    }

    fn on_answer(&mut self, answer: Answer<'_>, now: Instant, in_window: bool, plan: &Plan) {
        match answer {
            Answer::Acked { id, duplicate } => {
                let Some(sent) = self.inflight.remove(&id) else {
                    return;
                };
                self.stats.acked_total += 1;
                if in_window {
                    self.stats.acked += 1;
                    self.stats.latency.record(micros_since(sent, now));
                }
                if duplicate {
                    self.stats.duplicates += 1;
                }
            }
            Answer::Retry { id, after } if self.inflight.contains_key(&id) => {
                self.stats.rate_limited += 1;
                let after = after.unwrap_or(DEFAULT_RETRY);
                self.retries.push(Reverse((now + after, id)));
            }
            Answer::Retry { id, .. } => self.fail(Some(id), b"retry of an unknown send", plan),
            Answer::Failed { id, text } => self.fail(id, text, plan),
        }
    }

    fn fail(&mut self, id: Option<u64>, text: &[u8], plan: &Plan) {
        self.stats.errors += 1;
        if let Some(id) = id {
            self.inflight.remove(&id);
        }
        let text = String::from_utf8_lossy(&text[..text.len().min(300)]).into_owned();
        self.stats
            .note(format!("connection {}: send {id:?}: {text}", plan.index));
    }
}

/// Writes the body of send `n` into `out` (cleared first): `{"n":N,"t":"xx…"}`,
/// padded so that it is exactly `len` bytes long (or the shortest possible).
pub(super) fn write_body(out: &mut Vec<u8>, n: u64, len: usize) {
    let digits = n.checked_ilog10().unwrap_or(0) as usize + 1;
    let pad = len.saturating_sub(BODY_OVERHEAD + digits);
    out.clear();
    out.extend_from_slice(br#"{"n":"#);
    push_u64(out, n);
    out.extend_from_slice(br#","t":""#);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(br#""}"#);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_of_the_exact_length() {
        let mut out = Vec::new();
        for n in [0, 7, 10, 123_456, 999_999_999_999_999_999] {
            for len in [32, 128, 1000] {
                write_body(&mut out, n, len);
                assert_eq!(out.len(), len, "n {n}, len {len}");
                let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(json["n"], n);
            }
        }
    }
}
