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
use crate::log::Lsn;
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
        for batch in batches {
            // The batch's last state record so far: the frames after it wait for it.
            let mut record = None;
            for action in batch.actions {
                self.apply_action(action, &mut record, submitted, now, ob, &mut applied);
            }
        }
        applied
    }

    fn apply_action(
        &mut self,
        action: Action,
        record: &mut Option<Lsn>,
        submitted: &Submitted,
        now: Now,
        ob: &mut Outbox,
        applied: &mut Applied,
    ) {
        match action {
            Action::Send(conn, frame, priority) => {
                self.send_frames(vec![conn], frame, priority, *record, ob);
            }
            Action::SendMany(conns, frame, priority) => {
                self.send_frames(conns, frame, priority, *record, ob);
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
                    Ok(lsn) => (self.last_lsn, *record) = (lsn, Some(lsn)),
                    Err(e) => {
                        // Never durable: the frames after it fail with the log's failure.
                        *record = Some(Lsn::MAX);
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
    use crate::codec::{close_code, encode_client_frame, Decoder, Message, Opcode, Role};
    use crate::error::Result;
    use crate::ids::{RoomId, Seq};
    use crate::log::{Durability, Lsn};
    use crate::store::{MessageStore, StoredMessage};
    use crate::{ConnKind, Limits, MemoryStore};

    const NOW: Now = Now {
        mono_ms: 1_000,
        wall_ms: 1_700_000_000_000,
    };

    fn broker() -> Broker {
        Broker::new(Limits::default(), Box::new(MemoryStore::new(16)))
    }

    /// A store in memory whose writes become durable only when the test says so, like
    /// the log between two group commits.
    struct Lagging {
        inner: MemoryStore,
        durability: Arc<Durability>,
    }

    impl MessageStore for Lagging {
        fn append(
            &mut self,
            msg: StoredMessage,
            t: &Arc<str>,
            n: &Arc<str>,
            body: &str,
        ) -> Result<Lsn> {
            self.inner.append(msg, t, n, body)
        }
        fn member(
            &mut self,
            r: RoomId,
            t: &Arc<str>,
            n: &Arc<str>,
            u: &str,
            j: bool,
        ) -> Result<Lsn> {
            self.inner.member(r, t, n, u, j)
        }
        fn cursor(
            &mut self,
            r: RoomId,
            t: &Arc<str>,
            n: &Arc<str>,
            u: &str,
            c: (u64, u64),
        ) -> Result<Lsn> {
            self.inner.cursor(r, t, n, u, c)
        }
        fn put_state(&mut self, space: &str, key: &str, value: Option<&str>) -> Result<Lsn> {
            match self.durability.failed() {
                Some(reason) => Err(crate::Error::Internal(reason.to_string().into())),
                None => self.inner.put_state(space, key, value),
            }
        }
        fn states(&self, space: &str) -> Vec<(String, String)> {
            self.inner.states(space)
        }
        fn range(&self, room: RoomId, from: Seq, to: Seq) -> Vec<StoredMessage> {
            self.inner.range(room, from, to)
        }
        fn first_seq(&self, room: RoomId, last_seq: Seq) -> Seq {
            self.inner.first_seq(room, last_seq)
        }
        fn find_cid(&self, room: RoomId, from: &str, cid: &str) -> Option<(Seq, u64)> {
            self.inner.find_cid(room, from, cid)
        }
        fn durability(&self) -> &Arc<Durability> {
            &self.durability
        }
    }

    fn lagging() -> (Broker, Arc<Durability>) {
        let durability = Arc::new(Durability::default());
        let store = Lagging {
            inner: MemoryStore::new(16),
            durability: durability.clone(),
        };
        (Broker::new(Limits::default(), Box::new(store)), durability)
    }

    /// A connection attached to `b`, before its `hello`.
    fn session(b: &mut Broker) -> Arc<Outbound> {
        b.attach(None, ConnKind::Session, NOW)
    }

    fn outbox() -> Outbox {
        Outbox::new(NOW.mono_ms, 30_000)
    }

    /// What the engine does after applying batches and after each group commit.
    fn release(b: &mut Broker) {
        b.release(&mut outbox());
    }

    fn apply(b: &mut Broker, batch: Batch) -> Applied {
        let submitted = Submitted::default();
        submitted.push(batch);
        let mut ob = outbox();
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
        let (a, c) = (session(&mut b), session(&mut b));
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
        let out = session(&mut b);
        let hello = |n: u32| {
            let text = format!(r#"{{"op":"hello","id":{n}}}"#);
            encode_client_frame(Opcode::Text, text.as_bytes(), [1, 2, 3, 4])
        };
        let mut ob = outbox();
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

    #[test]
    fn frames_after_a_state_record_wait_until_it_is_durable() {
        let (mut b, durability) = lagging();
        let out = session(&mut b);
        let mut batch = Batch::default();
        batch.send_text(out.conn, r#"{"op":"before"}"#, Priority::Normal);
        batch.put_state("meetings", "m-1", Some("{}"));
        batch.send_text(out.conn, r#"{"op":"reply","id":1}"#, Priority::Normal);
        apply(&mut b, batch);
        release(&mut b);
        assert_eq!(queued(&out), [r#"{"op":"before"}"#], "not acknowledged yet");

        // A frame with no record of its own still keeps its place behind the reply; one
        // for a connection with nothing waiting goes at once.
        let other = session(&mut b);
        let mut batch = Batch::default();
        batch.send_text(out.conn, r#"{"op":"later"}"#, Priority::Normal);
        batch.send_text(other.conn, r#"{"op":"unrelated"}"#, Priority::Normal);
        apply(&mut b, batch);
        release(&mut b);
        assert_eq!(queued(&out).len(), 1);
        assert_eq!(queued(&other), [r#"{"op":"unrelated"}"#]);

        durability.reached(b.last_lsn);
        release(&mut b);
        let sent = [
            r#"{"op":"before"}"#,
            r#"{"op":"reply","id":1}"#,
            r#"{"op":"later"}"#,
        ];
        assert_eq!(queued(&out), sent);
        let mut batch = Batch::default();
        batch.send_text(out.conn, r#"{"op":"now"}"#, Priority::Normal);
        apply(&mut b, batch);
        assert_eq!(queued(&out).len(), 4, "nothing waits: at once");
    }

    #[test]
    fn frames_after_a_record_the_log_lost_close_their_connections() {
        let (mut b, durability) = lagging();
        let (a, c) = (session(&mut b), session(&mut b));
        let mut batch = Batch::default();
        batch.put_state("meetings", "m-1", Some("{}"));
        batch.send_text(a.conn, r#"{"op":"reply","id":1}"#, Priority::Normal);
        apply(&mut b, batch);
        durability.fail("disk full".into());
        release(&mut b);
        assert!(queued(&a).is_empty(), "never acknowledged");
        assert_eq!(b.conns[&a.conn].closing, Some(close_code::INTERNAL));

        // A record refused outright: the same; a frame after no record still goes out.
        let mut batch = Batch::default();
        batch.put_state("meetings", "m-2", Some("{}"));
        batch.send_text(c.conn, r#"{"op":"reply","id":2}"#, Priority::Normal);
        apply(&mut b, batch);
        release(&mut b);
        assert_eq!(b.conns[&c.conn].closing, Some(close_code::INTERNAL));
        let d = session(&mut b);
        let mut batch = Batch::default();
        batch.send_text(d.conn, r#"{"op":"welcome"}"#, Priority::Normal);
        apply(&mut b, batch);
        assert_eq!(queued(&d), [r#"{"op":"welcome"}"#]);
    }

    #[test]
    fn messages_released_together_keep_every_connections_order() {
        let (mut b, durability) = lagging();
        let [a, c, p] = ["alice", "carol", "bot"].map(|user| {
            let out = session(&mut b);
            b.open_session(out.conn, "acme", user, None, NOW).unwrap();
            out
        });
        let feed = |b: &mut Broker, out: &Outbound, text: String| {
            let frame = encode_client_frame(Opcode::Text, text.as_bytes(), [1, 2, 3, 4]);
            b.feed(out.conn, &frame, NOW, &mut outbox());
        };
        for out in [&a, &c] {
            feed(&mut b, out, r#"{"op":"subscribe","room":"r"}"#.into());
        }
        let send =
            |id: u32| format!(r#"{{"op":"send","id":{id},"room":"r","cid":"c{id}","body":{id}}}"#);
        feed(&mut b, &p, send(1));
        feed(&mut b, &p, send(2));
        feed(&mut b, &a, send(3));
        feed(&mut b, &p, send(4));
        let kinds = |out: &Outbound| {
            queued(out)
                .iter()
                .map(|t| {
                    let v: serde_json::Value = serde_json::from_str(t).unwrap();
                    match v["op"].as_str() {
                        Some("msg") => format!("msg {}", v["seq"]),
                        _ => format!("reply {}", v["id"]),
                    }
                })
                .collect::<Vec<_>>()
        };
        let before = (kinds(&a), kinds(&c));
        durability.reached(b.last_lsn);
        release(&mut b);
        let msgs = ["msg 1", "msg 2", "msg 3", "msg 4"];
        assert_eq!(kinds(&c)[before.1.len()..], msgs);
        assert_eq!(
            kinds(&a)[before.0.len()..],
            ["msg 1", "msg 2", "msg 3", "reply 3", "msg 4"],
            "a sender's answer after its message, before the next"
        );
        assert_eq!(kinds(&p), ["reply 1", "reply 2", "reply 4"]);
    }

    #[test]
    fn a_meetings_answer_goes_ahead_of_the_writers_round_once_stored() {
        let (mut b, durability) = lagging();
        let (a, c) = (session(&mut b), session(&mut b));
        let conns = |ob: &Outbox| ob.urgent.iter().map(|o| o.conn).collect::<Vec<_>>();
        let mut batch = Batch::default();
        batch.send_text(a.conn, r#"{"op":"reply","id":1}"#, Priority::Urgent);
        batch.send_text_many(vec![a.conn, c.conn], r#"{"op":"event"}"#, Priority::Urgent);
        batch.send_text(c.conn, r#"{"op":"chat"}"#, Priority::Normal);
        let submitted = Submitted::default();
        submitted.push(batch);
        let mut ob = outbox();
        b.apply_submitted(&submitted, NOW, &mut ob);
        assert_eq!(
            conns(&ob),
            [a.conn],
            "only the urgent frame for one connection"
        );

        // A reply after a state record waits for it, then goes ahead.
        let mut batch = Batch::default();
        batch.put_state("meetings", "m-1/p-c", Some("{}"));
        batch.send_text(c.conn, r#"{"op":"reply","id":2}"#, Priority::Urgent);
        submitted.push(batch);
        let mut ob = outbox();
        b.apply_submitted(&submitted, NOW, &mut ob);
        assert!(conns(&ob).is_empty());
        durability.reached(b.last_lsn);
        let mut ob = outbox();
        b.release(&mut ob);
        assert_eq!(conns(&ob), [c.conn]);
    }

    #[test]
    fn what_the_core_sends_meanwhile_keeps_its_place_behind_waiting_frames() {
        let (mut b, durability) = lagging();
        let (a, c) = (session(&mut b), session(&mut b));
        for (out, user) in [(&a, "alice"), (&c, "bob")] {
            b.open_session(out.conn, "acme", user, None, NOW).unwrap();
        }
        let mut batch = Batch::default();
        batch.route_seat("m-1", "p-a", Some(a.conn), false);
        batch.route_seat("m-1", "p-c", Some(c.conn), false);
        batch.put_state("meetings", "m-1/p-c", Some("{}"));
        batch.send_text(c.conn, r#"{"op":"reply","id":1}"#, Priority::Urgent);
        apply(&mut b, batch);
        // A signal the core relays, and a frame sent without a batch, while that waits.
        let signal = br#"{"op":"signal","id":7,"meeting":"m-1","to":"p-c","data":{"n":1}}"#;
        let mut ob = outbox();
        let frame = encode_client_frame(Opcode::Text, signal, [1, 2, 3, 4]);
        assert!(matches!(
            b.feed(a.conn, &frame, NOW, &mut ob),
            Inbound::Idle
        ));
        assert!(b.send_text(c.conn, r#"{"op":"direct"}"#, Priority::Normal, &mut ob));
        release(&mut b);
        assert!(queued(&c).is_empty());
        assert_eq!(
            queued(&a).len(),
            1,
            "the signal's reply: nothing waits for alice"
        );

        durability.reached(b.last_lsn);
        release(&mut b);
        let got = queued(&c);
        assert_eq!(got[0], r#"{"op":"reply","id":1}"#);
        assert!(
            got[1].starts_with(r#"{"op":"signal","meeting":"m-1","from":"p-a""#),
            "{got:?}"
        );
        assert_eq!(got[2], r#"{"op":"direct"}"#);
    }
}
