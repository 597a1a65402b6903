//! What the session layer queues for the core during one turn (a batch of control
//! frames, a timer tick), applied in order by the reader thread.
//!
//! A meeting join touches the core five times (its reply, the event to the others, the
//! seat's record, its signal route, reading on). Each crossing used to take the broker's
//! lock, which the reader holds most of the time under the 9 a.m. burst (every read of
//! every socket takes it): the session layer spent half its time waiting for it. Now it
//! queues its work in a [`Batch`] without any lock, submits it at the end of the turn
//! (one short mutex and a wake-up), and goes on; the reader applies submitted batches
//! between its reads, under the lock it takes anyway. Frames are encoded as they are
//! queued, outside the lock.
//!
//! Order holds: batches apply in the order submitted, actions in the order queued, and a
//! connection is not read again until its `resume` is applied, so its next control frame
//! comes after its reply. The answers of resumed connections (a control frame they had
//! buffered, their close) reach the session layer through the inbox like any other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::broker::{Broker, Inbound, Now};
use crate::fanout::Outbox;
use crate::frames;
use crate::ids::ConnId;
use crate::inbox::ConnEvent;
use crate::outbound::{Outbound, Priority};
use crate::sync::lock;

/// One thing to do, in the order queued.
#[derive(Debug)]
enum Action {
    Send(ConnId, Bytes, Priority),
    SendMany(Vec<ConnId>, Bytes, Priority),
    Route {
        meeting: String,
        participant: String,
        conn: Option<ConnId>,
        viewer: bool,
    },
    Unroute {
        meeting: String,
        participant: String,
    },
    PutState {
        space: String,
        key: String,
        value: Option<String>,
    },
    /// Reading goes on after a control frame (what [`Broker::feed`] does with no bytes).
    Resume(ConnId),
    /// See [`crate::Engine::flush_receipts`].
    FlushReceipts {
        slot: u32,
        slots: u32,
    },
    /// See [`Batch::expire_hellos`].
    ExpireHellos {
        timeout_ms: u64,
    },
    /// See [`crate::Engine::heartbeat`].
    Heartbeat {
        idle_timeout_ms: u64,
        slot: u32,
        slots: u32,
    },
}

/// Work for the core, queued without taking any lock; see [`crate::Engine::submit`].
#[derive(Debug, Default)]
pub struct Batch {
    actions: Vec<Action>,
}

impl Batch {
    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// How many actions are queued.
    pub fn len(&self) -> usize {
        self.actions.len()
    }

    /// Queues a JSON text frame for a connection (dropped if it is gone or closing).
    pub fn send_text(&mut self, conn: ConnId, json: &str, priority: Priority) {
        self.actions
            .push(Action::Send(conn, frames::text(json), priority));
    }

    /// Queues one JSON text frame, encoded once, for many connections.
    pub fn send_text_many(&mut self, conns: Vec<ConnId>, json: &str, priority: Priority) {
        if !conns.is_empty() {
            self.actions
                .push(Action::SendMany(conns, frames::text(json), priority));
        }
    }

    /// See [`crate::Engine::route_seat`].
    pub fn route_seat(
        &mut self,
        meeting: &str,
        participant: &str,
        conn: Option<ConnId>,
        viewer: bool,
    ) {
        self.actions.push(Action::Route {
            meeting: meeting.to_owned(),
            participant: participant.to_owned(),
            conn,
            viewer,
        });
    }

    /// See [`crate::Engine::unroute_seat`].
    pub fn unroute_seat(&mut self, meeting: &str, participant: &str) {
        self.actions.push(Action::Unroute {
            meeting: meeting.to_owned(),
            participant: participant.to_owned(),
        });
    }

    /// See [`crate::Engine::put_state`].
    pub fn put_state(&mut self, space: &str, key: &str, value: Option<&str>) {
        self.actions.push(Action::PutState {
            space: space.to_owned(),
            key: key.to_owned(),
            value: value.map(str::to_owned),
        });
    }

    /// Continues reading a connection after its control frame was handled.
    pub fn resume(&mut self, conn: ConnId) {
        self.actions.push(Action::Resume(conn));
    }

    /// See [`crate::Engine::flush_receipts`]: the receipt timer never waits for the lock.
    pub fn flush_receipts(&mut self, slot: u32, slots: u32) {
        self.actions.push(Action::FlushReceipts { slot, slots });
    }

    /// Closes (1008) the connections that sent no `hello` within `timeout_ms` of their
    /// handshake. Queue it about once a second.
    pub fn expire_hellos(&mut self, timeout_ms: u64) {
        self.actions.push(Action::ExpireHellos { timeout_ms });
    }

    /// See [`crate::Engine::heartbeat`].
    pub fn heartbeat(&mut self, idle_timeout_ms: u64, slot: u32, slots: u32) {
        self.actions.push(Action::Heartbeat {
            idle_timeout_ms,
            slot,
            slots,
        });
    }
}

/// Batches submitted and not applied yet, in order.
#[derive(Debug, Default)]
pub struct Submitted {
    queue: Mutex<Vec<Batch>>,
    /// A state record was refused (the log failed): said once on stderr.
    state_failed: AtomicBool,
}

impl Submitted {
    /// Adds a batch at the end.
    pub fn push(&self, batch: Batch) {
        lock(&self.queue).push(batch);
    }
}

/// What applying batches leaves to do outside the broker's lock.
#[derive(Debug, Default)]
pub struct Applied {
    /// Connections to read again: their control frame handled, nothing left buffered.
    pub resume: Vec<Arc<Outbound>>,
    /// For the session layer: a control frame a resumed connection had buffered, or
    /// its close.
    pub events: Vec<(ConnId, ConnEvent)>,
}

impl Broker {
    /// Applies every submitted batch, in order. Called under the broker's lock by
    /// whichever thread drains them (the reader, or a caller that needs an answer after
    /// them), so that two drainers never reorder batches.
    pub(crate) fn apply_submitted(
        &mut self,
        submitted: &Submitted,
        now: Now,
        ob: &mut Outbox,
    ) -> Applied {
        let batches = std::mem::take(&mut *lock(&submitted.queue));
        let mut applied = Applied::default();
        for action in batches.into_iter().flat_map(|b| b.actions) {
            self.apply_action(action, submitted, now, ob, &mut applied);
        }
        applied
    }

    fn apply_action(
        &mut self,
        action: Action,
        submitted: &Submitted,
        now: Now,
        ob: &mut Outbox,
        applied: &mut Applied,
    ) {
        match action {
            Action::Send(conn, frame, priority) => {
                if let Some(c) = self.conns.get(&conn) {
                    let out = c.out.clone();
                    ob.push_with(&out, frame, priority);
                }
            }
            Action::SendMany(conns, frame, priority) => {
                for conn in conns {
                    if let Some(c) = self.conns.get(&conn) {
                        let out = c.out.clone();
                        ob.push_with(&out, frame.clone(), priority);
                    }
                }
            }
            Action::Route {
                meeting,
                participant,
                conn,
                viewer,
            } => self.seat_routes.set(&meeting, &participant, conn, viewer),
            Action::Unroute {
                meeting,
                participant,
            } => self.seat_routes.remove(&meeting, &participant),
            Action::PutState { space, key, value } => {
                match self.store.put_state(&space, &key, value.as_deref()) {
                    Ok(lsn) => self.last_lsn = lsn,
                    Err(e) => {
                        if !submitted.state_failed.swap(true, Ordering::Relaxed) {
                            eprintln!("rushhour: meeting state not saved: {e}");
                        }
                    }
                }
            }
            Action::Resume(conn) => match self.feed(conn, &[], now, ob) {
                Inbound::Idle => applied
                    .resume
                    .extend(self.conns.get(&conn).map(|c| c.out.clone())),
                Inbound::Control(text) => applied.events.push((conn, ConnEvent::Control(text))),
                Inbound::Closing(code) => applied.events.push((conn, ConnEvent::Closing(code))),
            },
            Action::FlushReceipts { slot, slots } => self.flush_receipts_slot(slot, slots, ob),
            Action::ExpireHellos { timeout_ms } => {
                self.expire_hellos(now, timeout_ms, ob);
            }
            Action::Heartbeat {
                idle_timeout_ms,
                slot,
                slots,
            } => {
                self.heartbeat(now, idle_timeout_ms, (slot, slots), ob);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_client_frame, Decoder, Message, Opcode, Role};
    use crate::{ConnKind, Limits, MemoryStore};

    const NOW: Now = Now {
        mono_ms: 1_000,
        wall_ms: 1_700_000_000_000,
    };

    fn broker() -> Broker {
        Broker::new(Limits::default(), Box::new(MemoryStore::new(16)))
    }

    fn apply(b: &mut Broker, batch: Batch) -> Applied {
        let submitted = Submitted::default();
        submitted.push(batch);
        let mut ob = Outbox::new(NOW.mono_ms, 30_000);
        let applied = b.apply_submitted(&submitted, NOW, &mut ob);
        assert!(lock(&submitted.queue).is_empty());
        applied
    }

    /// The text frames queued for `out`, as the writer would write them.
    fn queued(out: &Outbound) -> Vec<String> {
        let q = out.lock();
        let mut slices = Vec::new();
        q.unwritten(usize::MAX, &mut slices);
        let mut decoder = Decoder::new(Role::Client, 1 << 20);
        decoder.feed(&slices.concat());
        let mut texts = Vec::new();
        while let Some(m) = decoder.poll().unwrap() {
            if let Message::Text(t) = m {
                texts.push(t.to_string());
            }
        }
        texts
    }

    #[test]
    fn actions_apply_in_the_order_queued() {
        let mut b = broker();
        let (a, c) = (
            b.attach(None, ConnKind::Session, NOW),
            b.attach(None, ConnKind::Session, NOW),
        );
        let mut batch = Batch::default();
        batch.send_text(a.conn, r#"{"op":"one"}"#, Priority::Urgent);
        let fan_out = vec![a.conn, ConnId(999), c.conn];
        batch.send_text_many(fan_out, r#"{"op":"two"}"#, Priority::Urgent);
        batch.send_text_many(Vec::new(), r#"{"op":"none"}"#, Priority::Urgent);
        batch.put_state("meetings", "m-1", Some("{}"));
        batch.put_state("meetings", "m-2", Some("{}"));
        batch.put_state("meetings", "m-1", None);
        batch.send_text(ConnId(999), r#"{"op":"lost"}"#, Priority::Normal);
        assert_eq!(batch.len(), 6, "an empty fan-out is not queued");

        let applied = apply(&mut b, batch);
        assert!(applied.events.is_empty() && applied.resume.is_empty());
        assert_eq!(queued(&a), [r#"{"op":"one"}"#, r#"{"op":"two"}"#]);
        assert_eq!(queued(&c), [r#"{"op":"two"}"#]);
        assert_eq!(
            b.store.states("meetings"),
            [("m-2".to_owned(), "{}".to_owned())]
        );
    }

    #[test]
    fn a_resumed_connection_hands_back_what_it_had_buffered() {
        let mut b = broker();
        let out = b.attach(None, ConnKind::Session, NOW);
        let hello = |n: u32| {
            let text = format!(r#"{{"op":"hello","id":{n}}}"#);
            encode_client_frame(Opcode::Text, text.as_bytes(), [1, 2, 3, 4])
        };
        let mut ob = Outbox::new(NOW.mono_ms, 30_000);
        // The first control frame comes out of the read; the second waits in the decoder.
        let first = b.feed(out.conn, &[hello(1), hello(2)].concat(), NOW, &mut ob);
        assert!(matches!(first, Inbound::Control(t) if t.contains(r#""id":1"#)));

        let mut batch = Batch::default();
        batch.send_text(out.conn, r#"{"op":"reply","id":1}"#, Priority::Normal);
        batch.resume(out.conn);
        let applied = apply(&mut b, batch);
        assert!(
            applied.resume.is_empty(),
            "not read while its next frame waits"
        );
        assert!(matches!(
            applied.events.as_slice(),
            [(c, ConnEvent::Control(t))] if *c == out.conn && t.contains(r#""id":2"#)
        ));
        assert_eq!(queued(&out), [r#"{"op":"reply","id":1}"#]);

        let mut batch = Batch::default();
        batch.resume(out.conn);
        let applied = apply(&mut b, batch);
        assert!(applied.events.is_empty());
        assert_eq!(applied.resume.len(), 1, "nothing left: it is read again");
    }
}
