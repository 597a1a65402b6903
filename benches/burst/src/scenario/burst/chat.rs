//! Chat from one client: sends into its team room, each with a fresh `cid` and its body
//! stamped with the first try's time; `rate_limited`/`overloaded` answers, and sends
//! cut off by a lost connection, are tried again with the same `cid` (the server
//! stores a `cid` once); batched receipts (`ack` and `read`) of what arrived.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use super::super::micros_since;
use super::tally::Counts;
use super::wire::{Req, Sink, Wire};
use crate::client::scan::{self, push_u64, Key};

/// How every body starts: the stamp first, so that a receiver finds it with a prefix
/// compare at a known place.
const STAMP_PREFIX: &[u8] = br#"{"p":"#;
/// Bytes of a body besides the stamp's digits and the padding: `{"p":` `,"t":"` `"}`.
const BODY_OVERHEAD: usize = 13;
/// Sends a client keeps unanswered at most; more asked for meanwhile are skipped (a
/// person does not type faster than the server answers).
pub const MAX_SENDS_IN_FLIGHT: usize = 8;
/// `"duplicate"`: an acknowledgement of a `cid` already stored.
static DUPLICATE: LazyLock<Key> = LazyLock::new(|| Key::new("duplicate"));

/// What a client's chat frames need.
pub struct ChatCtx<'a> {
    /// The team room as a JSON string.
    pub room_json: &'a str,
    /// `<run>-<client>-`: makes `cid`s unique per run and sender.
    pub cid_prefix: &'a str,
    /// Padding to slice bodies from (`body_bytes` long).
    pub pad: &'a str,
    /// Origin of the stamps.
    pub epoch: Instant,
    /// Requests owed an answer, all threads together (the drain waits for 0).
    pub pending: &'a AtomicI64,
    /// The highest acknowledged seq of the team room, all threads together.
    pub room_final: &'a AtomicU64,
}

/// One send until its acknowledgement.
#[derive(Clone, Debug)]
struct PendingSend {
    /// Its `cid` number.
    n: u64,
    /// When it was first tried: latency and stamp count from there.
    first_try: Instant,
    /// The body's stamp (µs since the epoch).
    stamp: u64,
    /// The id of the try awaiting an answer, if one is.
    id: Option<u64>,
    /// When to try again, if refused for now.
    retry_at: Option<Instant>,
}

/// A client's chat state; it outlives connections.
#[derive(Clone, Debug, Default)]
pub struct Chat {
    /// The next `cid` number.
    next_n: u64,
    /// Sends not acknowledged yet.
    sends: Vec<PendingSend>,
    /// The last seq acknowledged with `ack`/`read`.
    receipt_seq: u64,
    /// When receipts are next due.
    next_receipt: Option<Instant>,
}

impl Chat {
    /// Whether another send may start.
    pub fn can_send(&self) -> bool {
        self.sends.len() < MAX_SENDS_IN_FLIGHT
    }

    /// Sends unanswered.
    pub fn unanswered(&self) -> usize {
        self.sends.len()
    }

    /// Starts a new send.
    pub fn send_new<S: Sink>(
        &mut self,
        cx: &ChatCtx,
        w: &mut Wire<S>,
        now: Instant,
        c: &mut Counts,
    ) {
        let stamp = micros_since(cx.epoch, now);
        self.sends.push(PendingSend {
            n: self.next_n,
            first_try: now,
            stamp,
            id: None,
            retry_at: None,
        });
        self.next_n += 1;
        cx.pending.fetch_add(1, Ordering::Relaxed);
        c.sent += 1;
        c.timeline.second(stamp / 1_000_000).sent += 1;
        let last = self.sends.len() - 1;
        self.write(cx, w, last);
    }

    fn write<S: Sink>(&mut self, cx: &ChatCtx, w: &mut Wire<S>, i: usize) {
        let s = &self.sends[i];
        let (n, stamp) = (s.n, s.stamp);
        let id = w.request(Req::Send, |b, id| write_send(b, id, cx, n, stamp));
        let s = &mut self.sends[i];
        s.id = Some(id);
        s.retry_at = None;
    }

    /// Tries again the sends whose wait is over.
    pub fn retry_due<S: Sink>(
        &mut self,
        cx: &ChatCtx,
        w: &mut Wire<S>,
        now: Instant,
        c: &mut Counts,
    ) {
        for i in 0..self.sends.len() {
            if self.sends[i].id.is_none() && self.sends[i].retry_at.is_some_and(|t| t <= now) {
                c.send_retries += 1;
                self.write(cx, w, i);
            }
        }
    }

    /// Writes `ack` and `read` up to `last_seq` when due and it moved.
    pub fn receipts<S: Sink>(
        &mut self,
        cx: &ChatCtx,
        w: &mut Wire<S>,
        last_seq: u64,
        now: Instant,
        every: Duration,
    ) {
        let due = *self
            .next_receipt
            .get_or_insert_with(|| now + every.mul_f64(phase(cx.cid_prefix)));
        if now < due {
            return;
        }
        // Late wake-ups do not pile up receipts: the next is one interval after this.
        self.next_receipt = Some(now.checked_sub(every).map_or(due, |t| due.max(t)) + every);
        if last_seq > self.receipt_seq {
            self.receipt_seq = last_seq;
            for op in [&br#"{"op":"ack","room":"#[..], br#"{"op":"read","room":"#] {
                w.frame(|b| {
                    b.extend_from_slice(op);
                    b.extend_from_slice(cx.room_json.as_bytes());
                    b.extend_from_slice(br#","seq":"#);
                    push_u64(b, last_seq);
                    b.push(b'}');
                });
            }
        }
    }

    /// The next time something is due (a retry or receipts).
    pub fn next_due(&self) -> Option<Instant> {
        self.sends
            .iter()
            .filter(|s| s.id.is_none())
            .filter_map(|s| s.retry_at)
            .chain(self.next_receipt)
            .min()
    }

    /// The acknowledgement of request `id`: `false` when it is not one of ours.
    pub fn on_reply(
        &mut self,
        cx: &ChatCtx,
        id: u64,
        frame: &[u8],
        now: Instant,
        c: &mut Counts,
    ) -> bool {
        let Some(i) = self.sends.iter().position(|s| s.id == Some(id)) else {
            return false;
        };
        let s = self.sends.swap_remove(i);
        cx.pending.fetch_sub(1, Ordering::Relaxed);
        c.acked += 1;
        c.send_ack.record(micros_since(s.first_try, now));
        if let Some(seq) = scan::u64_value(frame, &scan::SEQ) {
            cx.room_final.fetch_max(seq, Ordering::Relaxed);
        }
        if scan::bool_value(frame, &DUPLICATE) == Some(true) {
            c.duplicate_acks += 1;
        }
        true
    }

    /// Request `id` was refused for now: try again after `after`.
    pub fn on_refused(&mut self, id: u64, after: Duration, now: Instant) -> bool {
        let Some(s) = self.sends.iter_mut().find(|s| s.id == Some(id)) else {
            return false;
        };
        s.id = None;
        s.retry_at = Some(now + after);
        true
    }

    /// Request `id` was refused for good.
    pub fn on_failed(&mut self, cx: &ChatCtx, id: u64, c: &mut Counts) -> bool {
        let Some(i) = self.sends.iter().position(|s| s.id == Some(id)) else {
            return false;
        };
        self.sends.swap_remove(i);
        cx.pending.fetch_sub(1, Ordering::Relaxed);
        c.send_failed += 1;
        true
    }

    /// The connection is gone: whatever awaited an answer is tried again on the next
    /// one, with the same `cid`.
    pub fn connection_lost(&mut self, now: Instant) {
        for s in &mut self.sends {
            if s.id.take().is_some() {
                s.retry_at = Some(now);
            }
        }
    }
}

/// A client's receipt phase within the interval, from its `cid` prefix: spreads the
/// clients' receipts over the interval instead of sending them all at once.
fn phase(seed: &str) -> f64 {
    let h = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h % 1000) as f64 / 1000.0
}

/// Writes send `id` (`cid` number `n`) with its body stamped `stamp` and padded to
/// `cx.pad.len()` bytes.
fn write_send(out: &mut Vec<u8>, id: u64, cx: &ChatCtx, n: u64, stamp: u64) {
    let digits = stamp.checked_ilog10().unwrap_or(0) as usize + 1;
    let pad = &cx.pad[..cx.pad.len().saturating_sub(BODY_OVERHEAD + digits)];
    out.extend_from_slice(br#"{"op":"send","id":"#);
    push_u64(out, id);
    out.extend_from_slice(br#","room":"#);
    out.extend_from_slice(cx.room_json.as_bytes());
    out.extend_from_slice(br#","cid":""#);
    out.extend_from_slice(cx.cid_prefix.as_bytes());
    push_u64(out, n);
    out.extend_from_slice(br#"","body":{"p":"#);
    push_u64(out, stamp);
    out.extend_from_slice(br#","t":""#);
    out.extend_from_slice(pad.as_bytes());
    out.extend_from_slice(br#""}}"#);
}

/// The stamp of a `msg` frame: at its known place when the body is one of ours
/// (`body_bytes` long, last), else found by scanning.
pub fn stamp(frame: &[u8], body_bytes: usize) -> Option<u64> {
    let body = scan::tail_body(frame, body_bytes)
        .filter(|body| body.starts_with(STAMP_PREFIX))
        .or_else(|| scan::value(frame, &scan::BODY))?;
    scan::parse_u64(body.strip_prefix(STAMP_PREFIX)?)
}

#[cfg(test)]
mod tests {
    use super::super::wire::TestWire;
    use super::*;

    struct Fixture {
        pending: AtomicI64,
        room_final: AtomicU64,
        pad: String,
        epoch: Instant,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                pending: AtomicI64::new(0),
                room_final: AtomicU64::new(0),
                pad: "x".repeat(128),
                epoch: Instant::now(),
            }
        }

        fn cx(&self) -> ChatCtx<'_> {
            ChatCtx {
                room_json: "\"team-r-0\"",
                cid_prefix: "r-7-",
                pad: &self.pad,
                epoch: self.epoch,
                pending: &self.pending,
                room_final: &self.room_final,
            }
        }
    }

    #[test]
    fn a_send_retried_keeps_its_cid_and_stamp_until_acknowledged() {
        let f = Fixture::new();
        let cx = f.cx();
        let mut tw = TestWire::default();
        let mut w = tw.wire();
        let mut chat = Chat::default();
        let mut c = Counts::default();
        let t0 = f.epoch + Duration::from_millis(1500);
        chat.send_new(&cx, &mut w, t0, &mut c);
        assert_eq!(f.pending.load(Ordering::Relaxed), 1);
        assert!(chat.on_refused(1, Duration::from_millis(200), t0));
        assert_eq!(chat.next_due(), Some(t0 + Duration::from_millis(200)));
        chat.retry_due(&cx, &mut w, t0 + Duration::from_millis(100), &mut c);
        assert_eq!(w.sink.len(), 1, "not yet");
        chat.retry_due(&cx, &mut w, t0 + Duration::from_millis(200), &mut c);
        chat.connection_lost(t0 + Duration::from_millis(250));
        chat.retry_due(&cx, &mut w, t0 + Duration::from_millis(250), &mut c);
        assert_eq!(tw.sink.len(), 3);
        let frames: Vec<serde_json::Value> = tw
            .sink
            .iter()
            .map(|f| serde_json::from_slice(f).unwrap())
            .collect();
        for (k, frame) in frames.iter().enumerate() {
            assert_eq!(frame["id"], k as u64 + 1);
            assert_eq!(frame["cid"], "r-7-0");
            assert_eq!(frame["body"]["p"], 1_500_000);
            assert_eq!(frame["body"].to_string().len(), 128);
        }
        let reply = br#"{"op":"reply","id":3,"ok":true,"seq":42,"ts":1,"duplicate":true}"#;
        assert!(!chat.on_reply(&cx, 2, reply, t0, &mut c), "an old try's id");
        assert!(chat.on_reply(&cx, 3, reply, t0 + Duration::from_millis(300), &mut c));
        assert_eq!(
            (c.sent, c.send_retries, c.acked, c.duplicate_acks),
            (1, 2, 1, 1)
        );
        assert_eq!(c.send_ack.quantile(1.0), 300_000);
        assert_eq!(f.room_final.load(Ordering::Relaxed), 42);
        assert_eq!(f.pending.load(Ordering::Relaxed), 0);
        assert_eq!(chat.unanswered(), 0);
    }

    #[test]
    fn receipts_go_out_batched_and_only_when_the_cursor_moved() {
        let f = Fixture::new();
        let cx = f.cx();
        let mut tw = TestWire::default();
        let mut w = tw.wire();
        let mut chat = Chat::default();
        let every = Duration::from_secs(1);
        let t0 = f.epoch;
        chat.receipts(&cx, &mut w, 5, t0, every);
        let first = chat.next_due().unwrap();
        assert!(first >= t0 && first < t0 + every);
        chat.receipts(&cx, &mut w, 5, first, every);
        chat.receipts(&cx, &mut w, 5, first + every, every);
        chat.receipts(&cx, &mut w, 9, first + every * 2, every);
        let frames: Vec<String> = tw
            .sink
            .iter()
            .map(|f| String::from_utf8(f.clone()).unwrap())
            .collect();
        assert_eq!(
            frames,
            [
                r#"{"op":"ack","room":"team-r-0","seq":5}"#,
                r#"{"op":"read","room":"team-r-0","seq":5}"#,
                r#"{"op":"ack","room":"team-r-0","seq":9}"#,
                r#"{"op":"read","room":"team-r-0","seq":9}"#,
            ]
        );
    }

    #[test]
    fn stamps_are_found_at_the_tail_or_by_scanning() {
        let mut buf = Vec::new();
        let f = Fixture::new();
        write_send(&mut buf, 1, &f.cx(), 0, 987_654);
        let sent: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let msg = format!(
            r#"{{"op":"msg","room":"team-r-0","seq":3,"from":"u1","cid":"r-7-0","ts":1,"body":{}}}"#,
            sent["body"]
        );
        assert_eq!(stamp(msg.as_bytes(), 128), Some(987_654));
        assert_eq!(stamp(msg.as_bytes(), 64), Some(987_654), "fallback scan");
        assert_eq!(stamp(br#"{"op":"msg","body":{"x":1}}"#, 128), None);
    }
}
