//! `fanout`: N subscribers of one room, one publisher keeping `--window` sends in
//! flight. Measures deliveries per second, send→reply and publish→delivery latency, and
//! checks every subscriber's seqs; against rushhour (or a server speaking its
//! protocol), core NATS or Redis Pub/Sub, with the same driver and the same report.
//!
//! The subscriber side is the hot path — one delivery per subscriber per send — so it
//! reads with a hand-rolled client (no allocation per frame), finds the seq and the
//! stamp by prefix compares instead of parsing the JSON, reads the clock once per
//! `read`, and records into histograms and counters shared by all subscribers on this
//! one thread.
//!
//! Layout:
//! - here: the driver (set-up, window, drain, report);
//! - `shared`: the subscribers' shared state and per-delivery bookkeeping;
//! - `target`: per `--target`, how clients connect and which publisher runs;
//! - `subscriber`, `publisher`: rushhour's;
//! - `peer`: what NATS and Redis share (numbered bodies, the subscriber loop, the
//!   publisher loop and its flow control); `nats`, `redis`: their wires.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::{preflight, secs, source_for, CpuSample, Window};
use crate::cli::{FanoutArgs, FanoutTarget};
use crate::report::FanoutReport;
use crate::seq::{SeqChecker, SeqSummary};
use crate::token::Signer;

mod nats;
mod peer;
mod publisher;
mod redis;
mod shared;
mod subscriber;
mod target;

use shared::Shared;
use target::Server;

/// How long a set-up request (hello, subscribe) may take.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the drain checks whether every subscriber has caught up.
const DRAIN_POLL: Duration = Duration::from_millis(20);

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
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Tokens outlive the run by an hour: set-up of many clients can be slow.
    let exp = started.as_secs() + 3600 + (setup_timeout + warmup + duration + drain).as_secs();
    let signer = Signer::new(&args.connect.secret, &args.connect.tenant, exp);
    let server = Server::new(args, signer)?;
    preflight(&args.connect, server.addr(), args.subscribers + 1)?;
    let shared = Rc::new(Shared::new(args.subscribers, args.body_bytes as usize));

    // Subscribers: connect, subscribe, then read until aborted.
    let setup_started = Instant::now();
    let gate = Rc::new(Semaphore::new(args.connect.connect_concurrency.max(1)));
    let tasks: Vec<JoinHandle<()>> = (0..args.subscribers)
        .map(|i| {
            let source = source_for(&args.connect.sources, i);
            server.spawn_subscriber(i, &shared, source, &gate, args.client)
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
    let publisher = server
        .publisher(source_for(&args.connect.sources, args.subscribers))
        .await?;
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
    let publishing = publisher.run(plan, Rc::clone(&shared));
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
        target: match args.target {
            FanoutTarget::Rushhour => "rushhour",
            FanoutTarget::Nats => "nats",
            FanoutTarget::Redis => "redis",
        },
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
