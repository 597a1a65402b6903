//! What the session layer queues for the core during one turn (a batch of control
//! frames, a timer tick), applied in order under one lock.
//!
//! A meeting join touches the core five times (its reply, the event to the others, the
//! seat's record, its signal route, reading on); each crossing takes the broker's lock,
//! which the reader holds while it relays signals and stores messages, and wakes the
//! writer. Gathered into a [`Batch`] and applied once per turn, a burst of joins costs
//! one lock and one wake-up per turn instead of five per join. Frames are encoded as they
//! are queued, outside the lock.

use bytes::Bytes;

use crate::broker::Inbound;
use crate::engine::Engine;
use crate::error::Error;
use crate::frames;
use crate::ids::ConnId;
use crate::outbound::Priority;

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
    /// Reading goes on after a control frame (what [`Engine::feed`] does with no bytes).
    Resume(ConnId),
}

/// Work for the core, queued without taking any lock; see [`Engine::apply`].
#[derive(Debug, Default)]
pub struct Batch {
    actions: Vec<Action>,
}

/// What applying a batch left for the session layer.
#[derive(Debug, Default)]
pub struct Applied {
    /// Connections resumed with something still for the session layer (a control frame
    /// they had buffered, or their close); each stays unread until resumed again.
    pub events: Vec<(ConnId, Inbound)>,
    /// The first state record the log refused, if any (the log has failed).
    pub state_error: Option<Error>,
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

    /// See [`Engine::route_seat`].
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

    /// See [`Engine::unroute_seat`].
    pub fn unroute_seat(&mut self, meeting: &str, participant: &str) {
        self.actions.push(Action::Unroute {
            meeting: meeting.to_owned(),
            participant: participant.to_owned(),
        });
    }

    /// See [`Engine::put_state`].
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
}

impl Engine {
    /// Applies everything `batch` queued, in order, under one lock, and empties it.
    pub fn apply(&self, batch: &mut Batch) -> Applied {
        let actions = std::mem::take(&mut batch.actions);
        let mut applied = Applied::default();
        let mut reading = Vec::new();
        self.with(|b, now, ob| {
            for action in actions {
                match action {
                    Action::Send(conn, frame, priority) => {
                        if let Some(c) = b.conns.get(&conn) {
                            let out = c.out.clone();
                            ob.push_with(&out, frame, priority);
                        }
                    }
                    Action::SendMany(conns, frame, priority) => {
                        for conn in conns {
                            if let Some(c) = b.conns.get(&conn) {
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
                    } => b.seat_routes.set(&meeting, &participant, conn, viewer),
                    Action::Unroute {
                        meeting,
                        participant,
                    } => b.seat_routes.remove(&meeting, &participant),
                    Action::PutState { space, key, value } => {
                        match b.store.put_state(&space, &key, value.as_deref()) {
                            Ok(lsn) => b.last_lsn = lsn,
                            Err(e) => {
                                applied.state_error.get_or_insert(e);
                            }
                        }
                    }
                    Action::Resume(conn) => match b.feed(conn, &[], now, ob) {
                        Inbound::Idle => reading.extend(b.conns.get(&conn).map(|c| c.out.clone())),
                        inbound => applied.events.push((conn, inbound)),
                    },
                }
            }
        });
        for out in &reading {
            self.reader.start_reading(out);
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_client_frame, Decoder, Message, Opcode, Role};
    use crate::{ConnKind, Limits, MemoryStore};

    fn engine() -> Engine {
        Engine::new(Limits::default(), Box::new(MemoryStore::new(16))).unwrap()
    }

    /// The text frames queued for `conn`, as the writer would write them.
    fn queued(engine: &Engine, conn: ConnId) -> Vec<String> {
        let out = engine.with(|b, _, _| b.conns[&conn].out.clone());
        let q = out.lock();
        let mut slices = Vec::new();
        q.unwritten(usize::MAX, &mut slices);
        let bytes = slices.concat();
        let mut decoder = Decoder::new(Role::Client, 1 << 20);
        decoder.feed(&bytes);
        let mut texts = Vec::new();
        while let Some(m) = decoder.poll().unwrap() {
            if let Message::Text(t) = m {
                texts.push(t.to_string());
            }
        }
        texts
    }

    #[test]
    fn actions_apply_in_the_order_queued_and_the_batch_empties() {
        let engine = engine();
        let a = engine.attach(None, ConnKind::Session, false).unwrap();
        let b = engine.attach(None, ConnKind::Session, false).unwrap();
        let mut batch = Batch::default();
        batch.send_text(a, r#"{"op":"one"}"#, Priority::Urgent);
        batch.send_text_many(vec![a, ConnId(999), b], r#"{"op":"two"}"#, Priority::Urgent);
        batch.send_text_many(Vec::new(), r#"{"op":"none"}"#, Priority::Urgent);
        batch.put_state("meetings", "m-1", Some("{}"));
        batch.put_state("meetings", "m-2", Some("{}"));
        batch.put_state("meetings", "m-1", None);
        batch.send_text(ConnId(999), r#"{"op":"lost"}"#, Priority::Normal);
        assert_eq!(batch.len(), 6, "an empty fan-out is not queued");

        let applied = engine.apply(&mut batch);
        assert!(batch.is_empty());
        assert!(applied.events.is_empty() && applied.state_error.is_none());
        assert_eq!(queued(&engine, a), [r#"{"op":"one"}"#, r#"{"op":"two"}"#]);
        assert_eq!(queued(&engine, b), [r#"{"op":"two"}"#]);
        assert_eq!(
            engine.states("meetings"),
            [("m-2".to_owned(), "{}".to_owned())]
        );
    }

    #[test]
    fn a_resumed_connection_hands_back_what_it_had_buffered() {
        let engine = engine();
        let conn = engine.attach(None, ConnKind::Session, false).unwrap();
        let hello = |n: u32| {
            let text = format!(r#"{{"op":"hello","id":{n}}}"#);
            encode_client_frame(Opcode::Text, text.as_bytes(), [1, 2, 3, 4])
        };
        let bytes = [hello(1), hello(2)].concat();
        // The first control frame comes out of the read; the second waits in the decoder.
        assert!(matches!(engine.feed(conn, &bytes), Inbound::Control(t) if t.contains("\"id\":1")));
        let mut batch = Batch::default();
        batch.send_text(conn, r#"{"op":"reply","id":1}"#, Priority::Normal);
        batch.resume(conn);
        let applied = engine.apply(&mut batch);
        assert!(matches!(
            applied.events.as_slice(),
            [(c, Inbound::Control(t))] if *c == conn && t.contains("\"id\":2")
        ));
        assert_eq!(queued(&engine, conn), [r#"{"op":"reply","id":1}"#]);
        batch.resume(conn);
        assert!(
            engine.apply(&mut batch).events.is_empty(),
            "nothing left: reading goes on"
        );
    }
}
