//! What the fan-out against NATS and Redis shares: the body that carries the
//! publisher's own seq, the subscriber's read loop, and the publisher's loop with its
//! flow control.
//!
//! Those servers number nothing, so the publisher writes a seq into every body, after
//! the publish stamp: `{"p":<stamp>,"s":<seq>,"t":"xx…"}`, padded to `--body-bytes`
//! as rushhour's bodies are. A subscriber reads both with two prefix compares.
//!
//! Neither server acknowledges a publish the way rushhour replies to a send, so the
//! publisher keeps its window with what each offers: Redis answers every `PUBLISH`
//! (with its count of receivers), NATS answers a `PING` with a `PONG` once it has
//! processed every line before it. An ack covers a batch of [`Flow::batch`] messages
//! and at most [`Flow::batches`] are awaited at once.

use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use tokio::sync::Semaphore;

use super::super::micros_since;
use super::publisher::{Plan, PublisherStats, STAMP_PREFIX};
use super::shared::Shared;
use crate::client::scan::{parse_u64, push_u64};
use crate::client::ConnError;

/// What follows the stamp's digits: the seq's key.
const SEQ_PREFIX: &[u8] = br#","s":"#;

/// Bytes of a body besides the digits and the padding: `{"p":` `,"s":` `,"t":"` `"}`.
const BODY_OVERHEAD: usize = 18;

/// Writes the body of message `seq` into `out` (cleared first), stamped with `stamp`
/// and padded to exactly `len` bytes (or the shortest possible).
pub(super) fn write_body(out: &mut Vec<u8>, stamp: u64, seq: u64, len: usize) {
    let digits = |n: u64| n.checked_ilog10().unwrap_or(0) as usize + 1;
    let pad = len.saturating_sub(BODY_OVERHEAD + digits(stamp) + digits(seq));
    out.clear();
    out.extend_from_slice(STAMP_PREFIX);
    push_u64(out, stamp);
    out.extend_from_slice(SEQ_PREFIX);
    push_u64(out, seq);
    out.extend_from_slice(br#","t":""#);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(br#""}"#);
}

/// The seq and the stamp of a body written by [`write_body`].
pub(super) fn read_body(body: &[u8]) -> Option<(u64, u64)> {
    let rest = body.strip_prefix(STAMP_PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let stamp = parse_u64(rest)?;
    let seq = parse_u64(rest[digits..].strip_prefix(SEQ_PREFIX)?)?;
    Some((seq, stamp))
}

/// A subscriber's connection to a peer, once subscribed.
pub(super) trait Deliveries {
    /// Reads once from the socket.
    async fn fill(&mut self) -> Result<(), ConnError>;
    /// Hands the payload of every message read so far to `on`, in order (`None` for
    /// anything else the server sent).
    fn drain(&mut self, on: &mut impl FnMut(Option<&[u8]>)) -> Result<(), ConnError>;
}

/// Runs subscriber `index`: `setup` (at most as many at once as `gate` allows), then
/// reads until the scenario aborts the task.
pub(super) async fn subscribe<D: Deliveries>(
    shared: Rc<Shared>,
    index: usize,
    gate: Rc<Semaphore>,
    setup: impl Future<Output = Result<D, ConnError>>,
) {
    let setup = async {
        let _permit = gate.acquire().await.expect("the gate is never closed");
        setup.await
    };
    let mut conn = match setup.await {
        Ok(conn) => conn,
        Err(e) => {
            shared.set_up(index, Err(e));
            return;
        }
    };
    shared.set_up(index, Ok(()));
    let check = &shared.checks[index];
    let outcome: Result<(), ConnError> = async {
        loop {
            conn.fill().await?;
            let at = shared.arrival(Instant::now());
            let mut check = check.borrow_mut();
            conn.drain(&mut |payload| match payload {
                Some(body) => shared.on_peer_body(&mut check, body, at),
                None => shared.other_frame(),
            })?;
        }
    }
    .await;
    if let Err(e) = outcome {
        shared.lost(index, &e);
    }
}

/// How the publisher bounds what is in flight without per-message replies.
#[derive(Clone, Copy, Debug)]
pub(super) struct Flow {
    /// Messages one ack covers.
    pub batch: usize,
    /// Acks awaited at once, at most.
    pub batches: usize,
}

/// The publisher's connection to a peer.
pub(super) trait PeerWire {
    /// Queues one message; [`PeerWire::flush`] writes it.
    fn queue(&mut self, body: &[u8]);
    /// Ends a batch of [`Flow::batch`] messages (NATS: its `PING`).
    fn end_batch(&mut self);
    /// Writes everything queued.
    async fn flush(&mut self) -> Result<(), ConnError>;
    /// Reads once from the socket. Cancel-safe after a flush.
    async fn fill(&mut self) -> Result<(), ConnError>;
    /// Hands every ack read so far to `on`, oldest first: `Ok` when the batch was
    /// taken, `Err` with the server's words when it was refused.
    fn acks(&mut self, on: &mut impl FnMut(Result<(), &[u8]>)) -> Result<(), ConnError>;
}

/// A batch awaiting its ack.
struct Batch {
    /// When it was queued (just before its write).
    sent: Instant,
    /// Its messages.
    count: u64,
    /// The seq of its last message.
    last_seq: u64,
}

/// Runs the publisher: batches of numbered messages, `flow.batches` awaited at once,
/// until the measurement ends; then waits for the outstanding acks until the deadline.
///
/// # Errors
/// The connection's error, with the stats so far (what was in flight counted as
/// unanswered).
pub(super) async fn publish<W: PeerWire>(
    mut wire: W,
    flow: Flow,
    plan: &Plan,
    shared: &Shared,
) -> Result<PublisherStats, (ConnError, PublisherStats)> {
    let mut stats = PublisherStats::default();
    let mut outstanding: VecDeque<Batch> = VecDeque::with_capacity(flow.batches);
    let mut next_seq = 1;
    let mut body = Vec::with_capacity(plan.body_bytes + 32);
    // One timer, moved only when the wake-up time changes: not one per read.
    let timer = tokio::time::sleep_until(plan.run.end.into());
    tokio::pin!(timer);
    let outcome: Result<(), ConnError> = async {
        loop {
            let now = Instant::now();
            while now < plan.run.end && outstanding.len() < flow.batches {
                for _ in 0..flow.batch {
                    let stamp = micros_since(shared.epoch, Instant::now());
                    write_body(&mut body, stamp, next_seq, plan.body_bytes);
                    wire.queue(&body);
                    next_seq += 1;
                }
                wire.end_batch();
                let count = flow.batch as u64;
                stats.sent_total += count;
                outstanding.push_back(Batch {
                    sent: now,
                    count,
                    last_seq: next_seq - 1,
                });
            }
            wire.flush().await?;
            if now >= plan.run.end && outstanding.is_empty() {
                return Ok(());
            }
            if now >= plan.deadline {
                return Ok(());
            }
            let wake = if now < plan.run.end {
                plan.run.end
            } else {
                plan.deadline
            };
            if timer.deadline() != wake.into() {
                timer.as_mut().reset(wake.into());
            }
            tokio::select! {
                read = wire.fill() => read?,
                () = &mut timer => {}
            }
            let now = Instant::now();
            let in_window = plan.run.contains(now);
            wire.acks(&mut |ack| {
                let Some(batch) = outstanding.pop_front() else {
                    stats.errors += 1;
                    shared.note_error("publisher: an ack for nothing sent".into());
                    return;
                };
                match ack {
                    Ok(()) => {
                        stats.acked_total += batch.count;
                        stats.final_seq = Some(batch.last_seq);
                        if in_window {
                            stats.acked += batch.count;
                            let latency = micros_since(batch.sent, now);
                            for _ in 0..batch.count {
                                stats.latency.record(latency);
                            }
                        }
                    }
                    Err(text) => {
                        stats.errors += batch.count;
                        let text = String::from_utf8_lossy(&text[..text.len().min(300)]);
                        shared.note_error(format!("publisher: {text}"));
                    }
                }
            })?;
        }
    }
    .await;
    stats.abandoned = outstanding.iter().map(|b| b.count).sum();
    match outcome {
        Ok(()) => Ok(stats),
        Err(e) => Err((e, stats)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_stamp_and_seq_at_the_exact_length() {
        let mut out = Vec::new();
        for (stamp, seq) in [(0, 1), (9, 10), (123_456, 99_999), (u64::MAX, u64::MAX)] {
            for len in [32, 128, 1000] {
                write_body(&mut out, stamp, seq, len);
                let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
                assert_eq!(
                    (json["p"].as_u64(), json["s"].as_u64()),
                    (Some(stamp), Some(seq))
                );
                assert_eq!(read_body(&out), Some((seq, stamp)));
                let shortest = BODY_OVERHEAD + stamp.to_string().len() + seq.to_string().len();
                assert_eq!(out.len(), len.max(shortest), "stamp {stamp}, seq {seq}");
            }
        }
        assert_eq!(read_body(br#"{"p":12,"t":"x"}"#), None);
        assert_eq!(read_body(br#"{"s":1,"p":12}"#), None);
    }
}
