//! `fanout`: N subscribers of one room, one publisher keeping `--window` sends in
//! flight. Measures deliveries per second, send→reply and publish→delivery latency, and
//! checks every subscriber's seqs.
//!
//! The subscriber side is the hot path — one delivery per subscriber per send — so it
//! reads with [`Conn`] (no allocation per frame), scans three fields instead of parsing
//! the JSON, reads the clock once per `read`, and records into histograms and counters
//! shared by all subscribers on this one thread.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use super::{micros_since, preflight, secs, source_for, CpuSample, Window};
use crate::cli::{ClientKind, FanoutArgs};
use crate::client::{scan, Conn, Target};
use crate::report::FanoutReport;
use crate::seq::{SeqChecker, SeqSummary};
use crate::stats::Histogram;
use crate::token::Signer;

mod publisher;
mod subscriber;

use subscriber::Subscriber;

/// How long a set-up request (hello, subscribe) may take.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors kept verbatim for the report; the rest are only counted.
const KEPT_ERRORS: usize = 5;

/// How often the drain checks whether every subscriber has caught up.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// State shared by the subscribers and the scenario driver (one thread: `Cell`s).
struct Shared {
    /// Origin of the body timestamps.
    pub epoch: Instant,
    /// Length of the publisher's encoded bodies: where a delivery's stamp is.
    body_bytes: usize,
    /// The measurement window, set once publishing starts.
    pub window: Cell<Option<Window>>,
    /// `msg` frames received inside the window.
    deliveries: Cell<u64>,
    /// Publish→delivery latency (µs) of those.
    delivery_latency: RefCell<Histogram>,
    /// Per-subscriber order checks, indexed by subscriber.
    checks: Vec<RefCell<SeqChecker>>,
    /// Per-subscriber: whether its connection ended (the drain stops waiting for it).
    ended: Vec<Cell<bool>>,
    /// Subscribers past set-up.
    ready: Cell<usize>,
    /// Subscribers whose set-up failed.
    setup_failed: Cell<usize>,
    /// Wakes the driver when `ready` or `setup_failed` moves.
    progress: Notify,
    /// Subscriber connections lost after set-up, before the end.
    lost: Cell<u64>,
    /// … counted by [`crate::client::ConnError::label`].
    lost_by: RefCell<BTreeMap<String, u64>>,
    /// Frames other than `msg` seen by subscribers (receipts, presence…).
    other_frames: Cell<u64>,
    /// `msg` frames without a readable seq.
    unparsed: Cell<u64>,
    /// The first few errors, verbatim.
    errors: RefCell<Vec<String>>,
    /// Set when the run is over: errors after it are the teardown's.
    stopping: Cell<bool>,
}

impl Shared {
    fn new(subscribers: usize, body_bytes: usize) -> Self {
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

    /// What every frame of one `read` shares: it arrived at `now` (one clock read per
    /// `read`, not per frame).
    fn arrival(&self, now: Instant) -> Arrival {
        Arrival {
            now_us: micros_since(self.epoch, now),
            in_window: self.window.get().is_some_and(|w| w.contains(now)),
        }
    }

    /// One data message received by the subscriber whose check is `check`.
    fn on_message(&self, check: &mut SeqChecker, payload: &[u8], at: Arrival) {
        let seq = match scan::msg_seq_fast(payload) {
            Some(seq) => seq,
            None if scan::op(payload) != Some(b"msg") => {
                self.other_frames.set(self.other_frames.get() + 1);
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
        check.observe(seq);
        if at.in_window {
            self.deliveries.set(self.deliveries.get() + 1);
            if let Some(published) = self.stamp(payload) {
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

/// When the frames of one `read` arrived.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    /// Microseconds since the epoch of the body stamps.
    now_us: u64,
    /// Whether that is inside the measurement window.
    in_window: bool,
}

/// Runs the scenario. Must be called inside a `LocalSet`.
///
/// # Errors
/// A message when the arguments are unusable or the connections cannot be set up.
pub async fn run(args: &FanoutArgs) -> Result<FanoutReport, String> {
    let warmup = secs("warmup", args.warmup)?;
    let duration = secs("duration", args.duration)?;
    let drain = secs("drain-timeout", args.drain_timeout)?;
    let setup_timeout = secs("setup-timeout", args.connect.setup_timeout)?;
    if duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    let target = Rc::new(Target::parse(&args.connect.url)?);
    preflight(&args.connect, target.addr, args.subscribers + 1)?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Tokens outlive the run by an hour: set-up of many clients can be slow.
    let exp = started.as_secs() + 3600 + (setup_timeout + warmup + duration + drain).as_secs();
    let signer = Signer::new(&args.connect.secret, &args.connect.tenant, exp);
    let shared = Rc::new(Shared::new(args.subscribers, args.body_bytes as usize));

    // Subscribers: connect, hello, subscribe, then read until aborted.
    let setup_started = Instant::now();
    let gate = Rc::new(Semaphore::new(args.connect.connect_concurrency.max(1)));
    let subscribe = format!(
        r#"{{"op":"subscribe","id":1,"room":{}}}"#,
        serde_json::Value::from(args.room.as_str())
    );
    let subscribe: Rc<str> = subscribe.into();
    let tasks: Vec<JoinHandle<()>> = (0..args.subscribers)
        .map(|i| {
            let hello = format!(
                r#"{{"op":"hello","token":"{}"}}"#,
                signer.token(&format!("sub-{i}"))
            );
            let sub = Subscriber {
                index: i,
                shared: Rc::clone(&shared),
                target: Rc::clone(&target),
                source: source_for(&args.connect.sources, i),
                gate: Rc::clone(&gate),
                hello,
                subscribe: Rc::clone(&subscribe),
            };
            match args.client {
                ClientKind::Raw => tokio::task::spawn_local(sub.run_raw()),
                ClientKind::Tungstenite => tokio::task::spawn_local(sub.run_tungstenite()),
            }
        })
        .collect();
    let abort_all = || tasks.iter().for_each(JoinHandle::abort);
    let all_set = async {
        while shared.ready.get() + shared.setup_failed.get() < args.subscribers {
            shared.progress.notified().await;
        }
    };
    if tokio::time::timeout(setup_timeout, all_set).await.is_err() || shared.setup_failed.get() > 0
    {
        abort_all();
        return Err(format!(
            "{} of {} subscribers set up ({} failed); first errors: {:?}",
            shared.ready.get(),
            args.subscribers,
            shared.setup_failed.get(),
            shared.errors.borrow()
        ));
    }

    // The publisher, then the clock starts.
    let hello = format!(r#"{{"op":"hello","token":"{}"}}"#, signer.token("pub"));
    let mut conn = Conn::connect(
        &target,
        source_for(&args.connect.sources, args.subscribers),
        u64::MAX,
    )
    .await
    .map_err(|e| format!("publisher: {e}"))?;
    conn.request(&hello, "welcome", None, REQUEST_TIMEOUT)
        .await
        .map_err(|e| format!("publisher hello: {e}"))?;
    let setup = setup_started.elapsed();
    let window = Window::after(Instant::now(), warmup, duration);
    shared.window.set(Some(window));
    let deadline = window.end + drain;
    let plan = publisher::Plan {
        room: args.room.clone(),
        body_bytes: args.body_bytes as usize,
        window: args.window as usize,
        run: window,
        deadline,
        cid_prefix: format!("c{:x}.{:x}", started.as_millis(), std::process::id()),
    };
    // The publisher runs inside this task, not as one more spawned task: the LocalSet
    // polls this task between every few dozen subscriber tasks, so a reply is read
    // promptly instead of after every subscriber's backlog (which would inflate
    // send->reply latency and, with a fixed window, throttle the load).
    let publishing = publisher::run(conn, plan, Rc::clone(&shared));
    // CPU over the window only: sampled at its edges.
    let sampling = async {
        tokio::time::sleep_until(window.start.into()).await;
        let first = CpuSample::take(args.server_pid);
        tokio::time::sleep_until(window.end.into()).await;
        (first, CpuSample::take(args.server_pid))
    };
    let (published, (first, last)) = tokio::join!(publishing, sampling);
    let pub_stats = published.unwrap_or_else(|(e, stats)| {
        shared.note_error(format!("publisher: {e}"));
        stats
    });

    // Drain: every subscriber still connected should reach the last acknowledged seq.
    let drain_started = Instant::now();
    if let Some(last) = pub_stats.final_seq {
        let behind = |(check, ended): (&RefCell<SeqChecker>, &Cell<bool>)| {
            !ended.get() && check.borrow().last() < last
        };
        while Instant::now() < deadline && shared.checks.iter().zip(&shared.ended).any(behind) {
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
    shared.stopping.set(true);
    abort_all();

    let mut order = SeqSummary::default();
    for check in &shared.checks {
        order.add(&check.borrow(), pub_stats.final_seq);
    }
    let measured = (last.at - first.at).as_secs_f64();
    let deliveries = shared.deliveries.get();
    let generator_cpu = last.own.saturating_sub(first.own).as_secs_f64();
    let server_cpu = first
        .server
        .zip(last.server)
        .map(|(a, b)| b.saturating_sub(a).as_secs_f64());
    let machine_cpu = first
        .machine
        .zip(last.machine)
        .map(|(a, b)| b.saturating_sub(a).as_secs_f64());
    let delivery = shared.delivery_latency.borrow().summary();
    let errors = shared.errors.borrow().clone();
    let ok =
        order.ok() && shared.lost.get() == 0 && pub_stats.errors == 0 && pub_stats.abandoned == 0;
    Ok(FanoutReport {
        scenario: "fanout",
        url: args.connect.url.clone(),
        client: format!("{:?}", args.client).to_lowercase(),
        subscribers: args.subscribers,
        body_bytes: args.body_bytes,
        window: args.window,
        warmup_s: warmup.as_secs_f64(),
        duration_s: measured,
        setup_s: setup.as_secs_f64(),
        deliveries,
        deliveries_per_s: deliveries as f64 / measured,
        sends: pub_stats.acked,
        sends_per_s: pub_stats.acked as f64 / measured,
        send_reply: pub_stats.latency.summary(),
        delivery,
        rate_limited: pub_stats.rate_limited,
        duplicates: pub_stats.duplicates,
        send_errors: pub_stats.errors,
        abandoned: pub_stats.abandoned,
        final_seq: pub_stats.final_seq,
        order,
        drain_s: drain_started.elapsed().as_secs_f64(),
        lost_connections: shared.lost.get(),
        lost_by: shared.lost_by.take(),
        other_frames: shared.other_frames.get(),
        unparsed: shared.unparsed.get(),
        errors,
        generator_cpu_s: generator_cpu,
        generator_cores: generator_cpu / measured,
        generator_cpu_us_per_delivery: if deliveries == 0 {
            0.0
        } else {
            generator_cpu * 1e6 / deliveries as f64
        },
        server_cpu_s: server_cpu,
        server_cores: server_cpu.map(|s| s / measured),
        machine_cores: machine_cpu.map(|s| s / measured),
        other_cores: machine_cpu
            .map(|m| (m - generator_cpu - server_cpu.unwrap_or(0.0)).max(0.0) / measured),
        ok,
    })
}
