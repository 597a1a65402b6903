//! The meeting state machine, step by step, without a socket.

use super::super::plan::Shape;
use super::super::wire::TestWire;
use super::*;

/// One meeting of three (clients 0, 1, 2), times from `t0`.
struct Fixture {
    plan: Plan,
    pending: AtomicI64,
    sent: Vec<AtomicU64>,
    ids: watch::Sender<Option<Arc<str>>>,
    t0: Instant,
}

impl Fixture {
    fn new() -> Self {
        let plan = Plan::new(&Shape {
            clients: 3,
            tenants: 1,
            skew: 1.0,
            tenant_prefix: "t".into(),
            room_size: 50,
            meetings: 1,
            participants: 3,
            run_tag: "r".into(),
            seed: 1,
        })
        .unwrap();
        Self {
            sent: (0..plan.pairs()).map(|_| AtomicU64::new(0)).collect(),
            plan,
            pending: AtomicI64::new(0),
            ids: watch::Sender::new(None),
            t0: Instant::now(),
        }
    }

    fn cx(&self, client: usize, period: Option<Duration>) -> MeetCtx<'_> {
        MeetCtx {
            plan: &self.plan,
            client,
            epoch: self.t0,
            meetings_at: self.t0 + Duration::from_secs(1),
            load_end: self.t0 + Duration::from_secs(10),
            signal_period: period,
            pending: &self.pending,
            signal_sent: &self.sent,
            ids: &self.ids,
        }
    }

    fn pending(&self) -> i64 {
        self.pending.load(Ordering::Relaxed)
    }
}

fn text(frames: &[Vec<u8>]) -> Vec<serde_json::Value> {
    frames
        .iter()
        .map(|f| serde_json::from_slice(f).unwrap())
        .collect()
}

const ROSTER: &str = r#"{"op":"reply","id":2,"ok":true,"meeting":"m-1","participant":"p-0","seat":"s.0","role":"host","roster":[{"participant":"p-1","user":"u1"},{"participant":"p-0","user":"u0"},{"participant":"p-x","user":"u99"}],"epoch":3}"#;

#[test]
fn the_host_creates_shares_joins_and_opens_a_connection_to_each_peer() {
    let f = Fixture::new();
    let cx = f.cx(0, None);
    let mut tw = TestWire::default();
    let mut w = tw.wire();
    let mut m = Meeting::new(0, 0);
    let mut c = Counts::default();
    m.work(&cx, &mut w, f.t0);
    assert!(w.sink.is_empty(), "not before the meeting time");
    assert_eq!(m.next_due(&cx), Some(f.t0 + Duration::from_secs(1)));
    let at = f.t0 + Duration::from_secs(1);
    m.work(&cx, &mut w, at);
    m.on_created(
        &cx,
        br#"{"op":"reply","id":1,"ok":true,"meeting":"m-1","host":"u0","created":true}"#,
        &mut c,
    );
    assert_eq!(
        f.ids.borrow().as_deref(),
        Some("m-1"),
        "shared with the others"
    );
    m.work(&cx, &mut w, at);
    assert_eq!(f.pending(), 1, "the create and join are owed");
    m.on_joined(
        &cx,
        ROSTER.as_bytes(),
        at + Duration::from_millis(5),
        &mut c,
    );
    assert_eq!((c.created, c.joined, c.join.count()), (1, 1, 1));
    assert_eq!(
        m.peers.len(),
        1,
        "only participants of this meeting, not itself"
    );
    assert_eq!(f.pending(), 3, "three opening signals owed to p-1");
    assert!(!m.settled(&cx), "client 2 is not known yet");
    for k in 0..3 {
        m.work(&cx, &mut w, at);
        m.on_signal_answer(&cx, 0, Ok(()), at, &mut c);
        assert_eq!(f.sent[f.plan.pair(0, 0, 1)].load(Ordering::Relaxed), k + 1);
    }
    m.on_event(&cx, br#"{"op":"meeting.event","meeting":"m-1","event":"joined","participant":{"participant":"p-2","user":"u2","role":"participant"},"epoch":4}"#);
    assert_eq!(m.peers.len(), 2);
    m.work(&cx, &mut w, at);
    m.on_signal_answer(&cx, 1, Err(Some(Duration::from_millis(50))), at, &mut c);
    assert_eq!(m.next_due(&cx), Some(at + Duration::from_millis(50)));
    m.work(&cx, &mut w, at + Duration::from_millis(50));
    let frames = text(&tw.sink);
    assert_eq!(frames[0]["op"], "meeting.create");
    assert_eq!(frames[0]["key"], f.plan.meetings[0].key);
    assert_eq!(
        frames[1],
        serde_json::json!({"op": "meeting.join", "id": 2, "meeting": "m-1"})
    );
    let kinds: Vec<_> = frames[2..]
        .iter()
        .map(|s| (s["to"].clone(), s["data"].clone()))
        .collect();
    assert_eq!(
        kinds[0],
        (
            "p-1".into(),
            serde_json::json!({"f": 0, "n": 0, "k": "offer"})
        )
    );
    assert_eq!(kinds[2].1["k"], "candidate");
    // To the later joiner: an answer, sent again after its refusal with the same number.
    assert_eq!(
        kinds[3],
        (
            "p-2".into(),
            serde_json::json!({"f": 0, "n": 0, "k": "answer"})
        )
    );
    assert_eq!(kinds[4], kinds[3]);
    assert_eq!(c.signals_retried, 1);
}

#[test]
fn participants_wait_for_the_id_retry_refused_joins_and_rejoin_with_their_seat() {
    let f = Fixture::new();
    let cx = f.cx(1, Some(Duration::from_millis(500)));
    let mut tw = TestWire::default();
    let mut w = tw.wire();
    let mut m = Meeting::new(0, 1);
    let mut c = Counts::default();
    let at = f.t0 + Duration::from_secs(2);
    assert!(m.needs_id());
    m.work(&cx, &mut w, at);
    assert_eq!(m.next_due(&cx), None, "woken by the host's id, not a timer");
    m.learn_id("m-1".into());
    m.work(&cx, &mut w, at);
    m.on_refused(
        Req::Join,
        Duration::from_millis(300),
        at + Duration::from_millis(1),
        &mut c,
    );
    m.work(&cx, &mut w, at + Duration::from_millis(100));
    assert_eq!(w.sink.len(), 1, "waits out retry_after_ms");
    m.work(&cx, &mut w, at + Duration::from_millis(301));
    let reply = ROSTER.replace(
        r#""participant":"p-0","seat":"s.0""#,
        r#""participant":"p-1","seat":"s.1""#,
    );
    m.on_joined(
        &cx,
        reply.as_bytes(),
        at + Duration::from_millis(305),
        &mut c,
    );
    assert_eq!((c.join_refused, c.joined), (1, 1));
    assert_eq!(c.join.quantile(1.0), 305_000, "from the first try");
    assert_eq!(m.peers.len(), 1, "p-0, the host");
    m.work(&cx, &mut w, at + Duration::from_millis(305));
    m.connection_lost(&cx);
    assert_eq!(m.peers[0].abandoned, 1);
    assert_eq!(f.pending(), 2, "the two signals still queued");
    m.work(&cx, &mut w, at + Duration::from_millis(400));
    let frames = text(w.sink);
    assert_eq!(frames.len(), 4);
    assert_eq!(frames[2]["data"]["n"], 0);
    assert_eq!(frames[3]["seat"], "s.1", "the rejoin keeps the seat");
    // Back in: the next signal skips the abandoned number.
    m.on_joined(
        &cx,
        reply.as_bytes(),
        at + Duration::from_millis(410),
        &mut c,
    );
    assert_eq!(c.rejoined, 1);
    m.work(&cx, &mut w, at + Duration::from_millis(410));
    assert_eq!(text(w.sink)[4]["data"]["n"], 1);
    // Received signals are checked per sender.
    m.on_signal(
        br#"{"op":"signal","meeting":"m-1","from":"p-0","data":{"f":0,"n":0,"k":"offer"}}"#,
    );
    assert_eq!(m.inbox.received_from(0), 1);
}

#[test]
fn a_participant_alone_does_not_spin_on_steady_signals() {
    let f = Fixture::new();
    let cx = f.cx(0, Some(Duration::from_millis(100)));
    let mut tw = TestWire::default();
    let mut w = tw.wire();
    let mut m = Meeting::new(0, 0);
    let mut c = Counts::default();
    let at = f.t0 + Duration::from_secs(1);
    m.learn_id("m-1".into());
    m.work(&cx, &mut w, at);
    m.on_joined(
        &cx,
        br#"{"op":"reply","id":1,"ok":true,"participant":"p-0","seat":"s","roster":[]}"#,
        at,
        &mut c,
    );
    let later = at + Duration::from_millis(150);
    m.work(&cx, &mut w, later);
    assert!(m.next_due(&cx).unwrap() > later);
    assert_eq!(f.pending(), 0);
}
