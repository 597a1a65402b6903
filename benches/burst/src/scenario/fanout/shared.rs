//! The state every subscriber and the scenario driver share (one thread: `Cell`s),
//! and the per-delivery bookkeeping: the order check, the count and the latency.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Instant;

use tokio::sync::Notify;

use super::super::{micros_since, Window};
use super::{peer, publisher};
use crate::client::{scan, ConnError};
use crate::seq::SeqChecker;
use crate::stats::Histogram;

/// Errors kept verbatim for the report; the rest are only counted.
const KEPT_ERRORS: usize = 5;

/// State shared by the subscribers and the scenario driver.
pub(super) struct Shared {
    /// Origin of the body timestamps.
    pub epoch: Instant,
    /// Length of the publisher's encoded bodies: where a delivery's stamp is.
    body_bytes: usize,
    /// The measurement window, set once publishing starts.
    pub window: Cell<Option<Window>>,
    /// Messages received inside the window.
    pub deliveries: Cell<u64>,
    /// Publish→delivery latency (µs) of those.
    pub delivery_latency: RefCell<Histogram>,
    /// Per-subscriber order checks, indexed by subscriber.
    pub checks: Vec<RefCell<SeqChecker>>,
    /// Per-subscriber: whether its connection ended (the drain stops waiting for it).
    pub ended: Vec<Cell<bool>>,
    /// Subscribers past set-up.
    pub ready: Cell<usize>,
    /// Subscribers whose set-up failed.
    pub setup_failed: Cell<usize>,
    /// Wakes the driver when `ready` or `setup_failed` moves.
    pub progress: Notify,
    /// Subscriber connections lost after set-up, before the end.
    pub lost: Cell<u64>,
    /// … counted by [`crate::client::ConnError::label`].
    pub lost_by: RefCell<BTreeMap<String, u64>>,
    /// Frames other than messages seen by subscribers (receipts, presence…).
    pub other_frames: Cell<u64>,
    /// Messages without a readable seq.
    pub unparsed: Cell<u64>,
    /// The first few errors, verbatim.
    pub errors: RefCell<Vec<String>>,
    /// Set when the run is over: errors after it are the teardown's.
    pub stopping: Cell<bool>,
}

/// When the frames of one `read` arrived.
#[derive(Clone, Copy, Debug)]
pub(super) struct Arrival {
    /// Microseconds since the epoch of the body stamps.
    now_us: u64,
    /// Whether that is inside the measurement window.
    in_window: bool,
}

impl Shared {
    pub fn new(subscribers: usize, body_bytes: usize) -> Self {
        Self {
            epoch: Instant::now(),
            body_bytes,
            window: Cell::new(None),
            deliveries: Cell::new(0),
            delivery_latency: RefCell::default(),
            checks: (0..subscribers).map(|_| RefCell::default()).collect(),
            ended: (0..subscribers).map(|_| Cell::new(false)).collect(),
            ready: Cell::new(0),
            setup_failed: Cell::new(0),
            progress: Notify::new(),
            lost: Cell::new(0),
            lost_by: RefCell::default(),
            other_frames: Cell::new(0),
            unparsed: Cell::new(0),
            errors: RefCell::default(),
            stopping: Cell::new(false),
        }
    }

    /// Keeps `what` among the first errors.
    pub fn note_error(&self, what: String) {
        let mut errors = self.errors.borrow_mut();
        if errors.len() < KEPT_ERRORS {
            errors.push(what);
        }
    }

    /// Counts the end of subscriber `index`'s set-up, good or bad, and wakes the
    /// driver.
    pub fn set_up(&self, index: usize, outcome: Result<(), ConnError>) {
        if let Err(e) = outcome {
            self.setup_failed.set(self.setup_failed.get() + 1);
            self.note_error(format!("subscriber {index}: {e}"));
        } else {
            self.ready.set(self.ready.get() + 1);
        }
        self.progress.notify_one();
    }

    /// Counts subscriber `index`'s connection lost during the run (not during
    /// teardown).
    pub fn lost(&self, index: usize, e: &ConnError) {
        self.ended[index].set(true);
        if !self.stopping.get() {
            self.lost.set(self.lost.get() + 1);
            *self.lost_by.borrow_mut().entry(e.label()).or_default() += 1;
            self.note_error(format!("subscriber {index}: {e}"));
        }
    }

    /// What every frame of one `read` shares: it arrived at `now` (one clock read per
    /// `read`, not per frame).
    pub fn arrival(&self, now: Instant) -> Arrival {
        Arrival {
            now_us: micros_since(self.epoch, now),
            in_window: self.window.get().is_some_and(|w| w.contains(now)),
        }
    }

    /// One rushhour data frame received by the subscriber whose check is `check`.
    pub fn on_message(&self, check: &mut SeqChecker, payload: &[u8], at: Arrival) {
        let seq = match scan::msg_seq_fast(payload) {
            Some(seq) => seq,
            None if scan::op(payload) != Some(b"msg") => {
                self.other_frame();
                return;
            }
            None => match scan::u64_value(payload, &scan::SEQ) {
                Some(seq) => seq,
                None => {
                    self.unparsed.set(self.unparsed.get() + 1);
                    return;
                }
            },
        };
        self.record(check, seq, at, || self.stamp(payload));
    }

    /// One message from a peer (NATS, Redis): its body is the publisher's own, seq
    /// and stamp included, since those servers number nothing.
    pub fn on_peer_body(&self, check: &mut SeqChecker, body: &[u8], at: Arrival) {
        match peer::read_body(body) {
            Some((seq, stamp)) => self.record(check, seq, at, || Some(stamp)),
            None => self.unparsed.set(self.unparsed.get() + 1),
        }
    }

    /// A frame that is not a message.
    pub fn other_frame(&self) {
        self.other_frames.set(self.other_frames.get() + 1);
    }

    /// Checks `seq` and, inside the window, counts the delivery and its latency (the
    /// stamp is only looked for then).
    fn record(
        &self,
        check: &mut SeqChecker,
        seq: u64,
        at: Arrival,
        stamp: impl FnOnce() -> Option<u64>,
    ) {
        check.observe(seq);
        if at.in_window {
            self.deliveries.set(self.deliveries.get() + 1);
            if let Some(published) = stamp() {
                self.delivery_latency
                    .borrow_mut()
                    .record(at.now_us.saturating_sub(published));
            }
        }
    }

    /// The publish stamp of a `msg` frame: at a known place when the body is the
    /// publisher's own, else found by scanning.
    fn stamp(&self, payload: &[u8]) -> Option<u64> {
        let body = scan::tail_body(payload, self.body_bytes)
            .filter(|body| body.starts_with(publisher::STAMP_PREFIX))
            .or_else(|| scan::value(payload, &scan::BODY))?;
        scan::parse_u64(body.strip_prefix(publisher::STAMP_PREFIX)?)
    }
}
