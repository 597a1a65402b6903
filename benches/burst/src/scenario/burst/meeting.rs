//! A participant's meeting. The host creates it (with a `key`, so that a retried
//! create finds the same meeting) and hands its id to the others inside the generator;
//! everyone joins, timed from the first try, `overloaded` answers retried after their
//! `retry_after_ms`. Then each pair of participants opens a peer connection — the one
//! who joined later sends an offer, the other an answer, both a couple of ICE
//! candidates — and steady signals follow until the load ends.
//!
//! After a reconnect the participant joins again with its seat token (same participant
//! id); a signal whose answer the lost connection took is abandoned and its number
//! skipped, so a receiver may see that number missing (reported, and excused by the
//! sender's abandoned count).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use super::super::micros_since;
use super::plan::Plan;
use super::signals::{self, Inbox};
use super::tally::Counts;
use super::wire::{Req, Sink, Wire};
use crate::client::scan::{self, push_u64, Key};

/// Signals that open a peer connection: the offer or answer and two ICE candidates.
const OPENING: u32 = 3;
/// `"meeting"`: the id in a create reply.
static MEETING: LazyLock<Key> = LazyLock::new(|| Key::new("meeting"));
/// `"created"`: whether the create made a new meeting.
static CREATED: LazyLock<Key> = LazyLock::new(|| Key::new("created"));

/// What a participant's meeting work needs from its thread.
pub struct MeetCtx<'a> {
    /// The layout.
    pub plan: &'a Plan,
    /// This client.
    pub client: usize,
    /// Origin of the timeline.
    pub epoch: Instant,
    /// When meetings start.
    pub meetings_at: Instant,
    /// When steady signalling stops.
    pub load_end: Instant,
    /// Between steady signals (none: no steady signals).
    pub signal_period: Option<Duration>,
    /// Requests owed an answer, all threads together.
    pub pending: &'a AtomicI64,
    /// Signals accepted per (meeting, sender seat, receiver seat), all threads.
    pub signal_sent: &'a [AtomicU64],
    /// Where the host publishes the meeting's id.
    pub ids: &'a watch::Sender<Option<Arc<str>>>,
}

/// Where a participant is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Before the meeting time, waiting for the id, or waiting to retry.
    Waiting,
    /// `meeting.create` sent.
    Creating,
    /// `meeting.join` sent.
    Joining,
    /// In the meeting.
    Joined,
    /// Refused for good.
    Failed,
}

/// Another participant, as a signalling peer.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its client.
    pub client: usize,
    /// Its seat in the meeting.
    slot: usize,
    /// Its participant id.
    pid: String,
    /// Whether this side sends the offer (it joined after the peer).
    offering: bool,
    /// The number of the next signal to it.
    next_n: u64,
    /// Signals to send to it.
    queued: u32,
    /// The request id of the signal in flight.
    inflight: Option<u64>,
    /// When to retry the refused signal.
    retry_at: Option<Instant>,
    /// Signals whose answer a lost connection took (their numbers skipped).
    pub abandoned: u64,
}

/// A participant's meeting state; it outlives connections.
#[derive(Clone, Debug)]
pub struct Meeting {
    /// The meeting in the plan.
    pub index: usize,
    /// This participant's seat in the plan (0: the host).
    pub slot: usize,
    /// The meeting's id once known.
    id: Option<Arc<str>>,
    /// Where it is.
    pub stage: Stage,
    /// Whether a create/join is counted in `pending`.
    owed: bool,
    /// The first join try: join latency counts from there.
    first_try: Option<Instant>,
    /// When to try again after a refusal.
    retry_at: Option<Instant>,
    /// The seat token, for a rejoin.
    seat: Option<String>,
    /// This participant's id.
    pid: Option<String>,
    /// Whether it joined at least once.
    pub joined: bool,
    /// The others, as they became known.
    pub peers: Vec<Peer>,
    /// The check of what they sent.
    pub inbox: Inbox,
    /// The next steady signal.
    next_steady: Option<Instant>,
    /// Round robin over the peers for steady signals.
    cursor: usize,
}

impl Meeting {
    /// Seat `slot` of meeting `index`.
    pub fn new(index: usize, slot: usize) -> Self {
        Self {
            index,
            slot,
            id: None,
            stage: Stage::Waiting,
            owed: false,
            first_try: None,
            retry_at: None,
            seat: None,
            pid: None,
            joined: false,
            peers: Vec::new(),
            inbox: Inbox::default(),
            next_steady: None,
            cursor: 0,
        }
    }

    /// Whether the meeting's id is still to be learnt from the host.
    pub fn needs_id(&self) -> bool {
        self.id.is_none() && self.slot != 0
    }

    /// The id, learnt from the host.
    pub fn learn_id(&mut self, id: Arc<str>) {
        self.id.get_or_insert(id);
    }

    fn owe(&mut self, cx: &MeetCtx) {
        if !self.owed {
            self.owed = true;
            cx.pending.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn settle(&mut self, cx: &MeetCtx) {
        if self.owed {
            self.owed = false;
            cx.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Writes what is due at `now`: the create, the join, signals.
    pub fn work<S: Sink>(&mut self, cx: &MeetCtx, w: &mut Wire<S>, now: Instant) {
        if now < cx.meetings_at {
            return;
        }
        match self.stage {
            Stage::Waiting if self.retry_at.is_none_or(|t| t <= now) => {
                self.retry_at = None;
                if let Some(id) = self.id.clone() {
                    self.owe(cx);
                    self.first_try.get_or_insert(now);
                    self.stage = Stage::Joining;
                    let seat = self.seat.as_deref();
                    w.request(Req::Join, |b, rid| write_join(b, rid, &id, seat));
                } else if self.slot == 0 {
                    self.owe(cx);
                    self.stage = Stage::Creating;
                    let key = &cx.plan.meetings[self.index].key;
                    w.request(Req::Create, |b, rid| write_create(b, rid, key));
                }
            }
            Stage::Joined => self.signal(cx, w, now),
            _ => {}
        }
    }

    fn signal<S: Sink>(&mut self, cx: &MeetCtx, w: &mut Wire<S>, now: Instant) {
        if let (Some(due), Some(period)) = (self.next_steady, cx.signal_period) {
            if now >= due && now < cx.load_end {
                // Alone in the meeting so far: the turn passes.
                if !self.peers.is_empty() {
                    let k = self.cursor % self.peers.len();
                    self.cursor += 1;
                    self.peers[k].queued += 1;
                    cx.pending.fetch_add(1, Ordering::Relaxed);
                }
                self.next_steady = Some((due + period).max(now));
            }
        }
        let Some(id) = self.id.as_deref() else { return };
        for (k, p) in self.peers.iter_mut().enumerate() {
            if p.inflight.is_none() && p.queued > 0 && p.retry_at.is_none_or(|t| t <= now) {
                p.retry_at = None;
                let kind = signals::kind(p.next_n, p.offering);
                let (to, n) = (p.pid.as_str(), p.next_n);
                p.inflight = Some(w.request(Req::Signal(k), |b, rid| {
                    signals::write(b, rid, id, to, cx.client, n, kind);
                }));
            }
        }
    }

    /// The next time something is due, if anything is.
    pub fn next_due(&self, cx: &MeetCtx) -> Option<Instant> {
        match self.stage {
            Stage::Waiting if self.id.is_some() || self.slot == 0 => {
                Some(self.retry_at.unwrap_or(cx.meetings_at))
            }
            Stage::Joined => {
                let steady = self
                    .next_steady
                    .filter(|t| *t < cx.load_end && cx.signal_period.is_some());
                self.peers
                    .iter()
                    .filter(|p| p.inflight.is_none() && p.queued > 0)
                    .filter_map(|p| p.retry_at)
                    .chain(steady)
                    .min()
            }
            _ => None,
        }
    }

    /// Adds a peer when `pid` is new and `user` is a participant of this meeting.
    fn add_peer(&mut self, cx: &MeetCtx, pid: &str, user: &str, offering: bool) {
        if Some(pid) == self.pid.as_deref() || self.peers.iter().any(|p| p.pid == pid) {
            return;
        }
        let Some(client) = user.strip_prefix('u').and_then(|n| n.parse::<usize>().ok()) else {
            return;
        };
        let Some((m, slot)) = (client < cx.plan.clients())
            .then(|| cx.plan.meeting_of(client))
            .flatten()
        else {
            return;
        };
        if m != self.index || client == cx.client {
            return;
        }
        self.peers.push(Peer {
            client,
            slot,
            pid: pid.to_owned(),
            offering,
            next_n: 0,
            queued: OPENING,
            inflight: None,
            retry_at: None,
            abandoned: 0,
        });
        cx.pending.fetch_add(i64::from(OPENING), Ordering::Relaxed);
    }

    /// The answer to `meeting.create`.
    pub fn on_created(&mut self, cx: &MeetCtx, frame: &[u8], c: &mut Counts) {
        let Some(id) = scan::str_value(frame, &MEETING) else {
            return self.on_failed(cx, frame, c);
        };
        let id: Arc<str> = String::from_utf8_lossy(id).into();
        if scan::bool_value(frame, &CREATED) == Some(true) {
            c.created += 1;
        }
        cx.ids.send_replace(Some(Arc::clone(&id)));
        self.id = Some(id);
        self.stage = Stage::Waiting;
    }

    /// The answer to `meeting.join`.
    pub fn on_joined(&mut self, cx: &MeetCtx, frame: &[u8], now: Instant, c: &mut Counts) {
        let Ok(reply) = serde_json::from_slice::<Value>(frame) else {
            return self.on_failed(cx, frame, c);
        };
        let text = |v: &Value| v.as_str().map(str::to_owned);
        self.pid = text(&reply["participant"]);
        self.seat = text(&reply["seat"]).or(self.seat.take());
        if self.joined {
            c.rejoined += 1;
        } else {
            c.joined += 1;
            let us = micros_since(self.first_try.unwrap_or(now), now);
            c.join.record(us);
            c.timeline
                .second(micros_since(cx.epoch, now) / 1_000_000)
                .record_join(us);
        }
        self.joined = true;
        self.stage = Stage::Joined;
        for entry in reply["roster"].as_array().into_iter().flatten() {
            if let (Some(pid), Some(user)) = (entry["participant"].as_str(), entry["user"].as_str())
            {
                self.add_peer(cx, pid, user, true);
            }
        }
        // After the peers' signals are owed: `pending` never dips to 0 in between, where
        // another thread's drain could see it.
        self.settle(cx);
        if let Some(period) = cx.signal_period {
            self.next_steady.get_or_insert(now + period);
        }
    }

    /// A `meeting.event`: a participant joining after this one becomes a peer.
    pub fn on_event(&mut self, cx: &MeetCtx, frame: &[u8]) {
        let Ok(event) = serde_json::from_slice::<Value>(frame) else {
            return;
        };
        if event["event"] != "joined" {
            return;
        }
        let p = &event["participant"];
        if let (Some(pid), Some(user)) = (p["participant"].as_str(), p["user"].as_str()) {
            self.add_peer(cx, pid, user, false);
        }
    }

    /// A create or join refused for now: try again after `after`.
    pub fn on_refused(&mut self, req: Req, after: Duration, now: Instant, c: &mut Counts) {
        if req == Req::Join {
            c.join_refused += 1;
        }
        self.stage = Stage::Waiting;
        self.retry_at = Some(now + after);
    }

    /// A create or join refused for good.
    pub fn on_failed(&mut self, cx: &MeetCtx, frame: &[u8], c: &mut Counts) {
        c.join_failed += 1;
        c.note(format!(
            "client {} meeting {}: {}",
            cx.client,
            self.index,
            String::from_utf8_lossy(frame)
        ));
        self.stage = Stage::Failed;
        self.settle(cx);
    }

    /// The answer to the signal in flight to peer `k`: accepted (`Ok`), refused for
    /// now (`Err(Some(wait))`) or for good (`Err(None)`).
    pub fn on_signal_answer(
        &mut self,
        cx: &MeetCtx,
        k: usize,
        answer: Result<(), Option<Duration>>,
        now: Instant,
        c: &mut Counts,
    ) {
        let Some(p) = self.peers.get_mut(k) else {
            return;
        };
        p.inflight = None;
        match answer {
            Ok(()) => {
                p.next_n += 1;
                p.queued -= 1;
                cx.pending.fetch_sub(1, Ordering::Relaxed);
                cx.signal_sent[cx.plan.pair(self.index, self.slot, p.slot)]
                    .fetch_add(1, Ordering::Relaxed);
                c.signals_sent += 1;
            }
            Err(Some(wait)) => {
                p.retry_at = Some(now + wait);
                c.signals_retried += 1;
            }
            Err(None) => {
                p.queued -= 1;
                cx.pending.fetch_sub(1, Ordering::Relaxed);
                c.signals_failed += 1;
            }
        }
    }

    /// A relayed signal arrived.
    pub fn on_signal(&mut self, frame: &[u8]) {
        if let Some((from, n)) = signals::parse(frame) {
            self.inbox.observe(from, n);
        }
    }

    /// The connection is gone: join again (with the seat, if any) on the next one;
    /// signals in flight are abandoned.
    pub fn connection_lost(&mut self, cx: &MeetCtx) {
        if matches!(self.stage, Stage::Creating | Stage::Joining | Stage::Joined) {
            self.stage = Stage::Waiting;
        }
        for p in &mut self.peers {
            if p.inflight.take().is_some() {
                p.abandoned += 1;
                p.next_n += 1;
                p.queued -= 1;
                cx.pending.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether this participant has nothing more to do or receive: it knows every
    /// other participant (so none of its opening signals is still to come), sent what
    /// it owed them, and got every signal they had accepted for it.
    pub fn settled(&self, cx: &MeetCtx) -> bool {
        match self.stage {
            Stage::Failed => true,
            Stage::Joined => {
                self.peers.len() + 1 == cx.plan.participants
                    && self.peers.iter().all(|p| p.queued == 0)
                    && self.caught_up(cx)
            }
            _ => false,
        }
    }

    /// Whether every signal the others had accepted for this participant arrived.
    pub fn caught_up(&self, cx: &MeetCtx) -> bool {
        let host = cx.plan.meetings[self.index].host;
        (0..cx.plan.participants)
            .filter(|&s| s != self.slot)
            .all(|s| {
                let sent =
                    cx.signal_sent[cx.plan.pair(self.index, s, self.slot)].load(Ordering::Relaxed);
                self.inbox.received_from(host + s) >= sent
            })
    }
}

fn write_create(out: &mut Vec<u8>, id: u64, key: &str) {
    out.extend_from_slice(br#"{"op":"meeting.create","id":"#);
    push_u64(out, id);
    out.extend_from_slice(br#","title":"Stand-up","key":""#);
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(br#""}"#);
}

fn write_join(out: &mut Vec<u8>, id: u64, meeting: &str, seat: Option<&str>) {
    out.extend_from_slice(br#"{"op":"meeting.join","id":"#);
    push_u64(out, id);
    out.extend_from_slice(br#","meeting":""#);
    out.extend_from_slice(meeting.as_bytes());
    if let Some(seat) = seat {
        out.extend_from_slice(br#"","seat":""#);
        out.extend_from_slice(seat.as_bytes());
    }
    out.extend_from_slice(br#""}"#);
}

#[cfg(test)]
mod tests;
