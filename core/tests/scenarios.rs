//! Broker scenarios on a simulated clock: frames in through `feed`, frames out read from
//! the queues as the writer would, no sockets.

use std::sync::Arc;

use rushhour_core::broker::{Broker, Inbound, Now};
use rushhour_core::codec::{encode_client_frame, Decoder, Message, Opcode, Role};
use rushhour_core::fanout::Outbox;
use rushhour_core::outbound::{Outbound, State};
use rushhour_core::{ConnId, ConnKind, Limits, MemoryStore};
use serde_json::{json, Value};

struct Sim {
    broker: Broker,
    now: Now,
}

struct Client {
    id: ConnId,
    out: Arc<Outbound>,
    decoder: Decoder,
}

impl Sim {
    fn new(limits: Limits) -> Sim {
        let store = Box::new(MemoryStore::new(limits.memory_retention_per_room));
        Sim {
            broker: Broker::new(limits, store),
            now: Now {
                mono_ms: 1_000,
                wall_ms: 1_700_000_000_000,
            },
        }
    }

    fn outbox(&self) -> Outbox {
        Outbox::new(self.now.mono_ms, 30_000)
    }

    fn connect(&mut self, user: &str, rooms: Option<&[String]>) -> Client {
        let out = self.broker.attach(None, ConnKind::Session, self.now);
        self.broker
            .open_session(out.conn, "acme", user, rooms, self.now)
            .unwrap();
        Client {
            id: out.conn,
            out,
            decoder: Decoder::new(Role::Client, 16 << 20),
        }
    }

    fn feed(&mut self, c: &Client, bytes: &[u8]) -> Inbound {
        let mut ob = self.outbox();
        self.broker.feed(c.id, bytes, self.now, &mut ob)
    }

    fn send_json(&mut self, c: &Client, v: Value) -> Inbound {
        self.feed(
            c,
            &encode_client_frame(Opcode::Text, v.to_string().as_bytes(), [1, 2, 3, 4]),
        )
    }
}

impl Client {
    /// Everything queued, as the writer would write it, decoded.
    fn drain(&mut self) -> Vec<Message> {
        let mut q = self.out.lock();
        let mut slices = Vec::new();
        q.unwritten(usize::MAX, &mut slices);
        let bytes: Vec<u8> = slices.concat();
        drop(slices);
        q.advance(bytes.len());
        drop(q);
        self.decoder.feed(&bytes);
        let mut out = Vec::new();
        while let Some(m) = self.decoder.poll().unwrap() {
            out.push(m);
        }
        out
    }

    fn json(&mut self) -> Vec<Value> {
        self.drain()
            .into_iter()
            .filter_map(|m| match m {
                Message::Text(t) => Some(serde_json::from_str(&t).unwrap()),
                _ => None,
            })
            .collect()
    }
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|f| f["op"] == "msg")
        .map(|f| f["seq"].as_u64().unwrap())
        .collect()
}

#[test]
fn send_reaches_every_subscriber_once_in_order() {
    let mut sim = Sim::new(Limits::default());
    let alice = sim.connect("alice", None);
    let mut bob = sim.connect("bob", None);
    let mut carol = sim.connect("carol", None);
    for c in [&bob, &carol] {
        sim.send_json(c, json!({"op": "subscribe", "id": 1, "room": "general"}));
    }
    for i in 0..100 {
        assert_eq!(
            sim.send_json(
                &alice,
                json!({"op": "send", "room": "general", "cid": i.to_string(), "body": i})
            ),
            Inbound::Idle
        );
    }
    let expected: Vec<u64> = (1..=100).collect();
    assert_eq!(seqs(&bob.json()), expected);
    assert_eq!(seqs(&carol.json()), expected);
}

#[test]
fn pipelined_frames_before_hello_wait_for_the_control_plane() {
    let mut sim = Sim::new(Limits::default());
    let out = sim.broker.attach(None, ConnKind::Session, sim.now);
    let mut c = Client {
        id: out.conn,
        out,
        decoder: Decoder::new(Role::Client, 1 << 20),
    };
    let mut bytes =
        encode_client_frame(Opcode::Text, br#"{"op":"hello","token":"t"}"#, [9, 9, 9, 9]);
    bytes.extend(encode_client_frame(
        Opcode::Text,
        br#"{"op":"subscribe","id":2,"room":"r"}"#,
        [1, 1, 1, 1],
    ));
    let first = sim.feed(&c, &bytes);
    assert!(matches!(first, Inbound::Control(ref t) if t.contains("hello")));
    sim.broker
        .open_session(c.id, "acme", "alice", None, sim.now)
        .unwrap();
    assert_eq!(sim.feed(&c, b""), Inbound::Idle);
    let replies = c.json();
    assert_eq!(replies[0]["id"], 2);
    assert_eq!(replies[0]["ok"], true);
}

#[test]
fn replay_is_paced_by_the_queue_and_never_overflows_it() {
    let limits = Limits {
        max_queue_bytes: 256 << 10,
        ..Limits::default()
    };
    let mut sim = Sim::new(limits);
    let alice = sim.connect("alice", None);
    let body = "x".repeat(10_000);
    for i in 0..300 {
        sim.send_json(
            &alice,
            json!({"op": "send", "room": "r", "cid": i.to_string(), "body": body}),
        );
    }
    let mut bob = sim.connect("bob", None);
    sim.send_json(
        &bob,
        json!({"op": "subscribe", "id": 1, "room": "r", "since": 0}),
    );
    let mut got = Vec::new();
    for round in 0..100 {
        assert!(bob.out.lock().bytes() <= 256 << 10, "queue bounded");
        let frames = bob.json();
        got.extend(seqs(&frames));
        if round == 3 {
            // Live messages during the replay come after it, in order.
            sim.send_json(
                &alice,
                json!({"op": "send", "room": "r", "cid": "live", "body": "live"}),
            );
        }
        let mut ob = sim.outbox();
        sim.broker.refill(bob.id, &mut ob);
        if got.len() == 301 {
            break;
        }
    }
    assert_eq!(got, (1..=301).collect::<Vec<u64>>());
    assert_eq!(bob.out.lock().state(), State::Open);
}

#[test]
fn slow_consumer_is_closed_4008_and_others_get_everything() {
    let limits = Limits {
        max_queue_bytes: 256 << 10,
        ..Limits::default()
    };
    let mut sim = Sim::new(limits);
    let alice = sim.connect("alice", None);
    let mut slow = sim.connect("slow", None);
    let mut fast = sim.connect("fast", None);
    for c in [&slow, &fast] {
        sim.send_json(c, json!({"op": "subscribe", "room": "r"}));
    }
    let body = "y".repeat(8_000);
    let mut fast_seqs = Vec::new();
    for i in 0..100 {
        sim.send_json(
            &alice,
            json!({"op": "send", "room": "r", "cid": i.to_string(), "body": body}),
        );
        fast_seqs.extend(seqs(&fast.json()));
    }
    assert_eq!(fast_seqs, (1..=100).collect::<Vec<u64>>());
    let frames = slow.drain();
    assert!(matches!(
        frames.last(),
        Some(Message::Close(Some((4008, _))))
    ));
    assert_eq!(sim.broker.stats().slow_consumers, 1);
    assert_eq!(sim.feed(&slow, b""), Inbound::Closing(4008));
}

#[test]
fn bad_frames_are_answered_then_close_1008_past_the_limit() {
    let mut sim = Sim::new(Limits {
        max_bad_frames: 3,
        ..Limits::default()
    });
    let mut c = sim.connect("alice", None);
    for _ in 0..3 {
        assert_eq!(
            sim.feed(&c, &encode_client_frame(Opcode::Text, b"nope", [0; 4])),
            Inbound::Idle
        );
    }
    assert_eq!(
        sim.feed(&c, &encode_client_frame(Opcode::Binary, b"\x00", [0; 4])),
        Inbound::Closing(1008)
    );
    let frames = c.drain();
    assert_eq!(frames.len(), 4);
    assert!(matches!(frames[3], Message::Close(Some((1008, _)))));
}

#[test]
fn send_rate_limit_follows_the_clock() {
    let mut sim = Sim::new(Limits {
        send_rate_per_s: 10.0,
        send_burst: 2.0,
        ..Limits::default()
    });
    let mut c = sim.connect("alice", None);
    for i in 0..3 {
        sim.send_json(
            &c,
            json!({"op": "send", "id": i, "room": "r", "cid": i.to_string(), "body": 1}),
        );
    }
    let replies = c.json();
    assert_eq!(replies.iter().filter(|r| r["op"] == "reply").count(), 2);
    let limited = replies.iter().find(|r| r["op"] == "error").unwrap();
    assert_eq!(
        (limited["code"].as_str(), limited["retry_after_ms"].as_u64()),
        (Some("rate_limited"), Some(100))
    );
    sim.now.mono_ms += 100;
    sim.send_json(
        &c,
        json!({"op": "send", "id": 9, "room": "r", "cid": "later", "body": 1}),
    );
    assert_eq!(c.json().iter().find(|r| r["id"] == 9).unwrap()["seq"], 3);
}

#[test]
fn idle_connections_are_closed_by_the_heartbeat() {
    let mut sim = Sim::new(Limits::default());
    let mut quiet = sim.connect("quiet", None);
    let talker = sim.connect("talker", None);
    sim.now.mono_ms += 50_000;
    sim.feed(&talker, &encode_client_frame(Opcode::Pong, b"", [0; 4]));
    sim.now.mono_ms += 20_000;
    let mut ob = sim.outbox();
    let slot_of = |c: &Client| (c.id.0 % 2) as u32;
    assert_eq!(
        sim.broker
            .heartbeat(sim.now, 60_000, (1 - slot_of(&quiet), 2), &mut ob),
        vec![],
        "the other slot"
    );
    assert_eq!(
        sim.broker
            .heartbeat(sim.now, 60_000, (slot_of(&quiet), 2), &mut ob),
        vec![quiet.id]
    );
    assert!(matches!(
        quiet.drain().last(),
        Some(Message::Close(Some((1000, _))))
    ));
    assert_eq!(talker.out.lock().state(), State::Open);
}

#[test]
fn rooms_claim_and_tenants() {
    let mut sim = Sim::new(Limits::default());
    let mut c = sim.connect("carol", Some(&["team-*".to_string()]));
    sim.send_json(&c, json!({"op": "subscribe", "id": 1, "room": "team-a"}));
    sim.send_json(&c, json!({"op": "subscribe", "id": 2, "room": "general"}));
    let replies = c.json();
    assert_eq!(replies[0]["ok"], true);
    assert_eq!(replies[1]["code"], "forbidden");
}

/// Sends `n` messages to `room` from a fresh connection of `bot`.
fn publish_n(sim: &mut Sim, room: &str, from: u64, n: u64) {
    let bot = sim.connect("bot", None);
    for i in from..from + n {
        sim.send_json(
            &bot,
            json!({"op": "send", "room": room, "cid": format!("c{i}"), "body": i}),
        );
    }
}

#[test]
fn resume_moves_subscriptions_and_replays_what_was_not_written() {
    let mut sim = Sim::new(Limits::default());
    let mut old = sim.connect("alice", None);
    sim.send_json(&old, json!({"op": "subscribe", "id": 1, "room": "a"}));
    sim.send_json(&old, json!({"op": "subscribe", "id": 2, "room": "b"}));
    publish_n(&mut sim, "a", 0, 5);
    assert_eq!(
        seqs(&old.json()),
        vec![1, 2, 3, 4, 5],
        "written to the socket"
    );
    publish_n(&mut sim, "a", 5, 3);
    publish_n(&mut sim, "b", 0, 2);
    // 6..8 of a and 1..2 of b are queued on `old` but not written: it is fenced now.
    let mut new = sim.connect("alice", None);
    let mut ob = sim.outbox();
    let mut rooms = sim.broker.resume(new.id, old.id, &mut ob).unwrap();
    rooms.sort();
    assert_eq!(rooms, vec!["a", "b"]);
    let old_frames = old.drain();
    assert!(
        matches!(old_frames.as_slice(), [Message::Close(Some((4009, _)))]),
        "{old_frames:?}"
    );
    let frames = new.json();
    let of = |room: &str| -> Vec<u64> {
        frames
            .iter()
            .filter(|f| f["room"] == room)
            .map(|f| f["seq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!((of("a"), of("b")), (vec![6, 7, 8], vec![1, 2]));
    publish_n(&mut sim, "a", 8, 1);
    assert_eq!(seqs(&new.json()), vec![9], "live after the replay");
    // The fenced reader detaching afterwards leaves nothing to resume twice.
    sim.broker.detach(old.id);
    let mut ob = sim.outbox();
    let again = sim.broker.resume(new.id, old.id, &mut ob).unwrap_err();
    assert_eq!(again.code(), "not_found");
}

#[test]
fn resume_after_a_slow_consumer_close_replays_what_was_discarded() {
    let limits = Limits {
        max_queue_bytes: 64 << 10,
        ..Limits::default()
    };
    let mut sim = Sim::new(limits);
    let mut slow = sim.connect("alice", None);
    sim.send_json(&slow, json!({"op": "subscribe", "id": 1, "room": "a"}));
    publish_n(&mut sim, "a", 0, 2);
    assert_eq!(seqs(&slow.json()), vec![1, 2]);
    publish_n(&mut sim, "a", 2, 2_000); // Overflows the queue: closed 4008, frames discarded.
    let state = slow.out.lock().state();
    assert!(
        matches!(state, State::Closing { code: 4008, .. }),
        "{state:?}"
    );
    sim.broker.detach(slow.id);
    let mut new = sim.connect("alice", None);
    let mut ob = sim.outbox();
    sim.broker.resume(new.id, slow.id, &mut ob).unwrap();
    let mut got = Vec::new();
    for _ in 0..100 {
        got.extend(seqs(&new.json()));
        let mut ob = sim.outbox();
        sim.broker.refill(new.id, &mut ob);
    }
    assert_eq!(got, (3..=2_002).collect::<Vec<_>>());
}
