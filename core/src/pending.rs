//! Effects that wait for the log: a stored message becomes visible (its room's
//! `last_seq`, its fan-out) and its `send` is answered only once the log position of the
//! write is durable. Effects are released in log order, so the room order holds.
//!
//! Frames of the session layer queued after one of its state records (a meeting's
//! reply, its events) wait the same way: a reply must not acknowledge a record that a
//! crash could still lose. While any wait, the frames the core makes for a connection
//! itself (relayed signals, direct sends) queue behind them, so that order holds.
//!
//! When the log fails instead, every waiting `send` gets `internal` and nothing of it
//! becomes visible: it was never acknowledged. The connections of waiting frames are
//! closed 1011: what they were about to be told is not stored.

use std::sync::Arc;

use bytes::Bytes;

use crate::broker::Broker;
use crate::chat::Accepted;
use crate::codec::close_code;
use crate::error::Error;
use crate::fanout::Outbox;
use crate::frames::JsonFrame;
use crate::ids::{ConnId, RoomId, Seq};
use crate::log::Lsn;
use crate::outbound::{Outbound, Priority, Push};

/// What to do once a log position is durable.
#[derive(Debug)]
pub(crate) enum Effect {
    /// A stored message: make it visible and push it to the live subscribers.
    Message {
        room: RoomId,
        seq: Seq,
        frame: Bytes,
        from: Arc<str>,
    },
    /// A `send` to answer (no reply frame when it had no `id`).
    Reply {
        conn: ConnId,
        id: Option<i64>,
        accepted: Accepted,
    },
    /// A frame of the session layer, for each of `conns`.
    Frames {
        conns: Vec<ConnId>,
        frame: Bytes,
        priority: Priority,
    },
}

/// Consecutive messages of one room being released, pushed together.
#[derive(Default)]
struct Run {
    room: Option<RoomId>,
    frames: Vec<Bytes>,
}

/// An effect and the log position it waits for.
#[derive(Debug)]
pub(crate) struct Waiting {
    pub lsn: Lsn,
    pub effect: Effect,
}

impl Broker {
    /// Runs every effect whose log position is durable; fails them all once the log
    /// stopped taking writes.
    pub fn release(&mut self, ob: &mut Outbox) {
        let durability = self.store.durability().clone();
        let durable = durability.durable();
        let mut run = Run::default();
        while self.waiting.front().is_some_and(|w| w.lsn <= durable) {
            let w = self.waiting.pop_front().expect("checked above");
            self.apply(w.effect, &mut run, ob);
        }
        self.fan_out_run(&mut run, ob);
        if self.waiting.is_empty() {
            return;
        }
        let Some(reason) = durability.failed() else {
            return;
        };
        let err =
            Error::Internal(format!("not stored: the log is not taking writes ({reason})").into());
        while let Some(w) = self.waiting.pop_front() {
            match w.effect {
                Effect::Reply { conn, id, .. } => {
                    self.settle(conn, id);
                    self.reply_error(conn, id, &err, ob);
                }
                Effect::Frames { conns, .. } => {
                    for conn in conns {
                        self.undefer(conn);
                        self.close(conn, close_code::INTERNAL, "not stored", false, ob);
                    }
                }
                Effect::Message { .. } => {}
            }
        }
    }

    /// Queues a frame of the session layer for `conns` (those gone or closing are
    /// skipped). `after` is the batch's last state record before it: while that is not
    /// durable the frame waits for it; otherwise each connection gets it now, or behind
    /// its frames that still wait.
    pub(crate) fn send_frames(
        &mut self,
        conns: Vec<ConnId>,
        frame: Bytes,
        priority: Priority,
        after: Option<Lsn>,
        ob: &mut Outbox,
    ) {
        match after.filter(|&lsn| lsn > self.store.durability().durable()) {
            Some(lsn) => self.defer(conns, frame, priority, lsn),
            None => {
                let expedite = expedites(priority, &conns);
                for conn in conns {
                    if let Some(out) = self.conns.get(&conn).map(|c| c.out.clone()) {
                        if self.push_in_order(&out, frame.clone(), priority, ob) && expedite {
                            ob.expedite(&out);
                        }
                    }
                }
            }
        }
    }

    /// Queues a frame for `out` now or, while frames of the session layer for it wait
    /// for the log, behind them: a connection's frames keep their order (a signal
    /// relayed by the core never overtakes a rejoin reply and the held signals before
    /// it). Returns false when the connection is closing or its queue refused the frame.
    pub(crate) fn push_in_order(
        &mut self,
        out: &Arc<Outbound>,
        frame: Bytes,
        priority: Priority,
        ob: &mut Outbox,
    ) -> bool {
        match self.conns.get(&out.conn) {
            Some(c) if c.frames_waiting > 0 => {
                let open = c.closing.is_none();
                if open {
                    // Behind what waits already: no position of its own to wait for.
                    self.defer(vec![out.conn], frame, priority, 0);
                }
                open
            }
            _ => ob.push_with(out, frame, priority) == Push::Queued,
        }
    }

    fn defer(&mut self, conns: Vec<ConnId>, frame: Bytes, priority: Priority, lsn: Lsn) {
        for conn in &conns {
            if let Some(c) = self.conns.get_mut(conn) {
                c.frames_waiting += 1;
            }
        }
        self.waiting.push_back(Waiting {
            lsn,
            effect: Effect::Frames {
                conns,
                frame,
                priority,
            },
        });
    }

    /// One frame fewer waiting for `conn`; its queue if it is still attached.
    fn undefer(&mut self, conn: ConnId) -> Option<Arc<Outbound>> {
        let c = self.conns.get_mut(&conn)?;
        c.frames_waiting = c.frames_waiting.saturating_sub(1);
        Some(c.out.clone())
    }

    /// Runs one durable effect. Messages gather in `run`; an effect for a connection the
    /// run's messages go to pushes them first, so every connection keeps its order.
    fn apply(&mut self, effect: Effect, run: &mut Run, ob: &mut Outbox) {
        match effect {
            Effect::Message {
                room,
                seq,
                frame,
                from,
            } => self.join_run(run, room, seq, frame, &from, ob),
            Effect::Reply { conn, id, accepted } => {
                if run
                    .room
                    .is_some_and(|room| self.rooms.get(room).is_live(conn))
                {
                    self.fan_out_run(run, ob);
                }
                let Some(out) = self.settle(conn, id) else {
                    return;
                };
                if let Some(id) = id {
                    let reply = JsonFrame::reply(id, 48)
                        .uint("seq", accepted.seq.0)
                        .uint("ts", accepted.ts)
                        .bool("duplicate", accepted.duplicate)
                        .finish();
                    ob.push(&out, reply);
                }
            }
            Effect::Frames {
                conns,
                frame,
                priority,
            } => {
                self.fan_out_run(run, ob);
                let expedite = expedites(priority, &conns);
                for conn in conns {
                    if let Some(out) = self.undefer(conn) {
                        if ob.push_with(&out, frame.clone(), priority) == Push::Queued && expedite {
                            ob.expedite(&out);
                        }
                    }
                }
            }
        }
    }

    /// Makes a stored message visible and adds it to the run (which it starts when the
    /// run is of another room).
    fn join_run(
        &mut self,
        run: &mut Run,
        room: RoomId,
        seq: Seq,
        frame: Bytes,
        from: &Arc<str>,
        ob: &mut Outbox,
    ) {
        if run.room != Some(room) {
            self.fan_out_run(run, ob);
            run.room = Some(room);
        }
        self.rooms.get_mut(room).last_seq = seq;
        run.frames.push(frame);
        // A sender has read its own message.
        self.move_cursors(room, from, seq, seq);
    }

    /// Pushes the run's messages to their room's live subscribers, each queue locked once
    /// for all of them: under the fan-out of a busy room the log thread and the writer
    /// otherwise take turns on every queue's lock once per message.
    fn fan_out_run(&mut self, run: &mut Run, ob: &mut Outbox) {
        if let Some(room) = run.room.take() {
            ob.fan_out_all(self.rooms.get(room).live(), &run.frames, Priority::Normal);
            run.frames.clear();
        }
    }

    /// A `send` of `conn` is answered: one fewer in flight if it had an `id`. Returns the
    /// connection's queue if it is still attached.
    fn settle(&mut self, conn: ConnId, id: Option<i64>) -> Option<Arc<Outbound>> {
        let c = self.conns.get_mut(&conn)?;
        if id.is_some() {
            c.inflight = c.inflight.saturating_sub(1);
        }
        Some(c.out.clone())
    }

    /// Why the store stopped taking writes, if it did.
    pub fn store_failure(&self) -> Option<String> {
        self.store.durability().failed().map(|r| r.to_string())
    }
}

/// Whether a frame of the session layer goes ahead of the writer's round: an urgent one
/// for a single connection, such as a join's answer. Events fanned out to a meeting are
/// four per join at 9:00 and wait their turn, so that the writer keeps batching.
fn expedites(priority: Priority, conns: &[ConnId]) -> bool {
    priority == Priority::Urgent && conns.len() == 1
}
