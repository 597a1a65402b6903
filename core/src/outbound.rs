//! A connection's outbound queue: frames waiting for the socket writer.
//!
//! The broker pushes shared frames (`Bytes`, reference-counted: one encoding serves every
//! subscriber) and the writer drains them. The queue is bounded in bytes, and each entry
//! is charged [`ENTRY_OVERHEAD`] on top of its length, so even a flood of tiny frames is
//! bounded by construction. Passing the bound closes the connection as a slow consumer
//! (4008): its frames are discarded (the client resumes from the store), only the close
//! frame is kept.
//!
//! Under pressure (a queue that is filling up) frames are served by [`Priority`]: meeting
//! traffic goes ahead of queued chat, and receipt and presence pushes are left out (they
//! are coalesced state: the next push or a query catches up), so a participant's media
//! setup is not stuck behind a chat backlog and the backlog is not made of hints.
//!
//! ### Invariants
//! - `bytes` is the sum of `len + ENTRY_OVERHEAD` over `frames`, and never passes `limit`
//!   except by the one close frame an overflow queues.
//! - The first `written` bytes of the front frame are already on the wire: that frame is
//!   never discarded, or the stream would be corrupt.
//! - Once closing, nothing but the close frame is ever queued.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::codec::{close_code, encode_close};
use crate::ids::{ConnId, Seq};
use crate::sync::lock;

/// Bytes charged per queued frame beyond its length: the `Bytes` handle and the deque slot.
pub const ENTRY_OVERHEAD: usize = 48;

/// Where a connection's output stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Frames are accepted.
    Open,
    /// A close frame is queued; nothing else is accepted. `abort` says whether the reading
    /// side is shut too once it is written (slow consumer: we stop listening at once).
    Closing {
        code: u16,
        abort: bool,
        deadline_ms: u64,
    },
    /// The close frame is written or the socket failed; the queue is empty for good.
    Closed,
}

/// How a frame competes for a connection's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Meeting signals and events: ahead of every queued normal frame, in order among
    /// themselves (never ahead of a frame already partly written).
    Urgent,
    /// Chat, replies: first in, first out.
    Normal,
    /// Receipt and presence pushes: left out while the queue is over a quarter full.
    Ambient,
}

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// The queue passed its limit: the connection is now closing with 4008.
    Overflowed,
    /// The connection is closing or closed: the frame was dropped.
    Dropped,
    /// An ambient frame left out because the queue is filling up.
    Shed,
}

/// The frames of one connection and their accounting. Guarded by [`Outbound::lock`].
#[derive(Debug)]
pub struct Queue {
    frames: VecDeque<Bytes>,
    /// Where the next urgent frame goes: after the urgent frames already queued (and
    /// after a partly written frame).
    urgent_end: usize,
    bytes: usize,
    written: usize,
    limit: usize,
    state: State,
    /// The socket said EAGAIN: wait for a writable event before trying again.
    pub blocked: bool,
    /// The broker has more to send this connection once the queue drains (a replay).
    pub wants_refill: bool,
    /// Per room, the lowest seq of a `msg` frame discarded unwritten (overflow, dead
    /// socket, fencing): a resumed session replays from there. Shared, so that it
    /// outlives the queue (and its socket) for a later resume.
    lost: Lost,
}

/// Per room name, the lowest seq discarded unwritten.
pub type Lost = Arc<Mutex<HashMap<Box<str>, Seq>>>;

impl Queue {
    /// An empty queue bounded at `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Queue {
            frames: VecDeque::new(),
            urgent_end: 0,
            bytes: 0,
            written: 0,
            limit,
            state: State::Open,
            blocked: false,
            wants_refill: false,
            lost: Lost::default(),
        }
    }

    /// Queues a frame, or overflows into a 4008 close when it does not fit.
    pub fn push(&mut self, frame: Bytes, now_ms: u64, close_timeout_ms: u64) -> Push {
        self.push_with(frame, Priority::Normal, now_ms, close_timeout_ms)
    }

    /// Queues a frame by its priority, or overflows into a 4008 close when it does not fit.
    pub fn push_with(
        &mut self,
        frame: Bytes,
        priority: Priority,
        now_ms: u64,
        close_timeout_ms: u64,
    ) -> Push {
        if self.state != State::Open {
            return Push::Dropped;
        }
        let cost = frame.len() + ENTRY_OVERHEAD;
        if priority == Priority::Ambient && self.bytes + cost > self.limit / 4 {
            return Push::Shed;
        }
        if self.bytes + cost > self.limit {
            self.overflow(now_ms, close_timeout_ms);
            return Push::Overflowed;
        }
        self.bytes += cost;
        if priority == Priority::Urgent {
            let at = self.urgent_end.max(usize::from(self.written > 0));
            self.frames.insert(at, frame);
            self.urgent_end = at + 1;
        } else {
            self.frames.push_back(frame);
        }
        Push::Queued
    }

    /// Whether the queue is under half full: time to queue the next replay batch.
    pub fn below_low_water(&self) -> bool {
        self.bytes < self.limit / 2
    }

    /// Whether a replayed frame of `len` bytes fits in the half of the queue that replay
    /// may use (always, into an empty queue), so replay alone never overflows it.
    pub fn has_replay_room(&self, len: usize) -> bool {
        self.bytes == 0 || self.bytes + len + ENTRY_OVERHEAD <= self.limit / 2
    }

    /// Bytes currently charged to this queue.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether any frame waits for the socket.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Discards every frame not yet started and queues close 4008.
    fn overflow(&mut self, now_ms: u64, close_timeout_ms: u64) {
        self.retain_started_frame();
        self.queue_close(
            close_code::SLOW_CONSUMER,
            "slow consumer",
            true,
            now_ms + close_timeout_ms,
        );
    }

    /// Queues a close frame (once); `abort` also stops reading once it is written.
    pub fn close(&mut self, code: u16, reason: &str, abort: bool, deadline_ms: u64) {
        if self.state == State::Open {
            self.queue_close(code, reason, abort, deadline_ms);
        }
    }

    fn queue_close(&mut self, code: u16, reason: &str, abort: bool, deadline_ms: u64) {
        let frame = encode_close(code, reason);
        self.bytes += frame.len() + ENTRY_OVERHEAD;
        self.frames.push_back(frame);
        self.wants_refill = false;
        self.state = State::Closing {
            code,
            abort,
            deadline_ms,
        };
    }

    fn retain_started_frame(&mut self) {
        let started = (self.written > 0)
            .then(|| self.frames.pop_front())
            .flatten();
        self.note_lost();
        self.frames.clear();
        self.urgent_end = 0;
        self.bytes = 0;
        if let Some(frame) = started {
            self.bytes = frame.len() + ENTRY_OVERHEAD;
            self.frames.push_back(frame);
        }
    }

    /// Marks the socket dead: nothing more will be written.
    pub fn fail(&mut self) {
        if self.written > 0 {
            self.frames.pop_front(); // Cut short: the peer cannot have read it.
        }
        self.note_lost();
        self.frames.clear();
        self.urgent_end = 0;
        self.bytes = 0;
        self.written = 0;
        self.wants_refill = false;
        self.state = State::Closed;
    }

    /// Discards every frame not yet started and closes with `code` (a session resumed
    /// elsewhere: what is left here will be replayed there).
    pub fn abandon(&mut self, code: u16, reason: &str, deadline_ms: u64) {
        if self.state == State::Open {
            self.retain_started_frame();
            self.queue_close(code, reason, true, deadline_ms);
        }
    }

    /// The record of frames discarded unwritten.
    pub fn lost(&self) -> Lost {
        self.lost.clone()
    }

    /// Per room, the lowest seq not delivered: discarded, or still queued and not started.
    pub fn undelivered(&self) -> HashMap<Box<str>, Seq> {
        let mut first = lock(&self.lost).clone();
        let unstarted = self.frames.iter().skip(usize::from(self.written > 0));
        note(&mut first, unstarted);
        first
    }

    fn note_lost(&mut self) {
        note(&mut lock(&self.lost), self.frames.iter());
    }

    /// Fills `iov` with the unwritten bytes of up to `max` frames from the front.
    pub fn unwritten<'a>(&'a self, max: usize, iov: &mut Vec<&'a [u8]>) {
        iov.clear();
        for (i, frame) in self.frames.iter().take(max).enumerate() {
            iov.push(if i == 0 {
                &frame[self.written..]
            } else {
                &frame[..]
            });
        }
    }

    /// Records that `n` more bytes reached the socket. Returns true when the close frame
    /// of a closing queue has now been written entirely (the state becomes `Closed`).
    pub fn advance(&mut self, mut n: usize) -> bool {
        while n > 0 {
            let Some(front) = self.frames.front() else {
                break;
            };
            let left = front.len() - self.written;
            if n < left {
                self.written += n;
                return false;
            }
            n -= left;
            self.bytes -= front.len() + ENTRY_OVERHEAD;
            self.written = 0;
            self.frames.pop_front();
            self.urgent_end = self.urgent_end.saturating_sub(1);
        }
        if self.frames.is_empty() && matches!(self.state, State::Closing { .. }) {
            self.state = State::Closed;
            return true;
        }
        false
    }
}

/// Records, per room, the lowest seq among the `msg` frames of `frames`.
fn note<'a>(first: &mut HashMap<Box<str>, Seq>, frames: impl Iterator<Item = &'a Bytes>) {
    for (room, seq) in frames.filter_map(|f| crate::frames::msg_position(f)) {
        first
            .entry(room.into())
            .and_modify(|s| *s = (*s).min(seq))
            .or_insert(seq);
    }
}

/// A connection's queue together with the socket it drains into.
#[derive(Debug)]
pub struct Outbound {
    /// The connection this queue belongs to.
    pub conn: ConnId,
    /// The core's own duplicate of the socket (None in sans-IO tests); closed on drop,
    /// after the writer has deregistered it.
    fd: Option<OwnedFd>,
    queue: Mutex<Queue>,
    /// Set while the queue sits in the writer's ready list, so it is listed once.
    pub scheduled: AtomicBool,
    /// Set while the queue sits in the writer's urgent list, so it is listed once.
    pub urgent: AtomicBool,
    /// The session is gone: the writer closes the socket once the queue is flushed.
    pub detached: AtomicBool,
    /// The reader thread reads this socket (else the control plane feeds it).
    pub reads: AtomicBool,
    /// Reading waits: a control frame is with the control plane, or the stream ended.
    pub paused: AtomicBool,
}

impl Outbound {
    /// A queue for `conn`, writing to `fd` when given.
    pub fn new(conn: ConnId, fd: Option<OwnedFd>, limit: usize) -> Self {
        Outbound {
            conn,
            fd,
            queue: Mutex::new(Queue::new(limit)),
            scheduled: AtomicBool::new(false),
            urgent: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            reads: AtomicBool::new(false),
            paused: AtomicBool::new(false),
        }
    }

    /// The socket, if any.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Locks the queue. A poisoned lock means a panic elsewhere; the queue is still
    /// consistent (every method leaves it so), so keep serving.
    pub fn lock(&self) -> MutexGuard<'_, Queue> {
        lock(&self.queue)
    }

    /// Claims the right to list this queue as ready; false if it is listed already.
    pub fn claim_schedule(&self) -> bool {
        !self.scheduled.swap(true, Ordering::AcqRel)
    }

    /// Claims the right to list this queue as urgent; false if it is listed already.
    pub fn claim_urgent(&self) -> bool {
        !self.urgent.swap(true, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    fn drain(q: &mut Queue) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut iov = Vec::new();
        q.unwritten(usize::MAX, &mut iov);
        out.extend(iov.iter().map(|b| Bytes::copy_from_slice(b)));
        let n = iov.iter().map(|b| b.len()).sum();
        q.advance(n);
        out
    }

    #[test]
    fn urgent_frames_go_ahead_of_chat_in_their_own_order() {
        let mut q = Queue::new(1 << 20);
        let f = |s: &'static str| Bytes::from_static(s.as_bytes());
        q.push(f("chat1"), 0, 0);
        q.push(f("chat2"), 0, 0);
        q.push_with(f("sig1"), Priority::Urgent, 0, 0);
        q.push_with(f("sig2"), Priority::Urgent, 0, 0);
        q.push(f("chat3"), 0, 0);
        assert_eq!(drain(&mut q), ["sig1", "sig2", "chat1", "chat2", "chat3"]);
        // Never ahead of a frame already partly on the wire.
        q.push(f("chat4"), 0, 0);
        q.push(f("chat5"), 0, 0);
        assert!(!q.advance(2));
        q.push_with(f("sig3"), Priority::Urgent, 0, 0);
        let mut iov = Vec::new();
        q.unwritten(usize::MAX, &mut iov);
        assert_eq!(iov, [&b"at4"[..], b"sig3", b"chat5"]);
        let n = iov.iter().map(|b| b.len()).sum();
        q.advance(n);
        // After the urgent ones were written, a new one goes to the front again.
        q.push(f("chat6"), 0, 0);
        q.push_with(f("sig4"), Priority::Urgent, 0, 0);
        assert_eq!(drain(&mut q), ["sig4", "chat6"]);
    }

    #[test]
    fn ambient_frames_are_shed_once_a_quarter_full() {
        let mut q = Queue::new(4000);
        assert_eq!(
            q.push_with(frame(100), Priority::Ambient, 0, 0),
            Push::Queued
        );
        while q.bytes() + 100 + ENTRY_OVERHEAD <= 1000 {
            q.push(frame(100), 0, 0);
        }
        assert_eq!(q.push_with(frame(100), Priority::Ambient, 0, 0), Push::Shed);
        assert_eq!(q.push(frame(100), 0, 0), Push::Queued);
        assert_eq!(q.state(), State::Open);
    }

    #[test]
    fn bounded_by_bytes_including_overhead() {
        let mut q = Queue::new(1000);
        let mut queued = 0;
        while q.push(frame(10), 0, 30_000) == Push::Queued {
            queued += 1;
        }
        assert_eq!(queued, 1000 / (10 + ENTRY_OVERHEAD));
        assert!(matches!(
            q.state(),
            State::Closing {
                code: 4008,
                abort: true,
                ..
            }
        ));
        assert_eq!(q.frames.len(), 1, "only the close frame is left");
        assert_eq!(q.push(frame(1), 0, 30_000), Push::Dropped);
    }

    #[test]
    fn overflow_keeps_a_started_frame() {
        let mut q = Queue::new(200);
        q.push(frame(100), 0, 30_000);
        assert!(!q.advance(40));
        assert_eq!(q.push(frame(100), 0, 30_000), Push::Overflowed);
        let mut iov = Vec::new();
        q.unwritten(16, &mut iov);
        assert_eq!(iov.len(), 2);
        assert_eq!(iov[0].len(), 60, "the rest of the started frame goes first");
        assert_eq!(&iov[1][..2], &[0x88, 15], "then the 4008 close frame");
    }

    #[test]
    fn advance_across_frames_and_close() {
        let mut q = Queue::new(10_000);
        q.push(frame(10), 0, 0);
        q.push(frame(20), 0, 0);
        q.close(1001, "bye", false, 5);
        let close_len = q.frames[2].len();
        assert!(!q.advance(15));
        let mut iov = Vec::new();
        q.unwritten(16, &mut iov);
        assert_eq!(iov[0].len(), 15);
        assert!(q.advance(15 + close_len));
        assert_eq!(q.state(), State::Closed);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn close_is_queued_once() {
        let mut q = Queue::new(10_000);
        q.close(1000, "", false, 0);
        q.close(1001, "", false, 0);
        assert_eq!(q.frames.len(), 1);
        assert!(matches!(q.state(), State::Closing { code: 1000, .. }));
    }
}
