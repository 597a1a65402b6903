//! Effects that wait for the log: a stored message becomes visible (its room's
//! `last_seq`, its fan-out) and its `send` is answered only once the log position of the
//! write is durable. Effects are released in log order, so the room order holds.
//!
//! When the log fails instead, every waiting `send` gets `internal` and nothing of it
//! becomes visible: it was never acknowledged.

use std::sync::Arc;

use bytes::Bytes;

use crate::broker::Broker;
use crate::chat::Accepted;
use crate::error::Error;
use crate::fanout::Outbox;
use crate::frames::JsonFrame;
use crate::ids::{ConnId, RoomId, Seq};
use crate::log::Lsn;
use crate::outbound::Outbound;

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
        while self.waiting.front().is_some_and(|w| w.lsn <= durable) {
            let w = self.waiting.pop_front().expect("checked above");
            self.apply(w.effect, ob);
        }
        if self.waiting.is_empty() {
            return;
        }
        let Some(reason) = durability.failed() else {
            return;
        };
        let err =
            Error::Internal(format!("not stored: the log is not taking writes ({reason})").into());
        while let Some(w) = self.waiting.pop_front() {
            if let Effect::Reply { conn, id, .. } = w.effect {
                self.settle(conn, id);
                self.reply_error(conn, id, &err, ob);
            }
        }
    }

    fn apply(&mut self, effect: Effect, ob: &mut Outbox) {
        match effect {
            Effect::Message {
                room,
                seq,
                frame,
                from,
            } => {
                let r = self.rooms.get_mut(room);
                r.last_seq = seq;
                ob.fan_out(r.live(), &frame);
                // A sender has read its own message.
                self.move_cursors(room, &from, seq, seq);
            }
            Effect::Reply { conn, id, accepted } => {
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
