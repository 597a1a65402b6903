//! `publish`: `--connections` publishers keep `--inflight` sends in flight in all,
//! rotating over `--rooms` rooms, with no subscriber: what a durable store sustains,
//! measured as acks per second and the latency from a send's write to its ack's read.
//!
//! The same load runs against rushhour (`send` frames over WebSocket) or nats-server
//! with JetStream (`PUB` with a reply inbox over its TCP protocol), through one loop
//! (`worker`) and two thin wires (`rushhour`, `jetstream`), so that the numbers
//! compare. Every connection is one task on the generator's single thread; each read
//! brings a batch of acks, timed with one clock read.

mod jetstream;
mod rushhour;
mod worker;

use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinHandle};

use super::{preflight, secs, source_for, CpuSample, Window};
use crate::cli::{PublishArgs, PublishTarget};
use crate::client::{Conn, ConnError, Target};
use crate::nats::{self, NatsConn};
use crate::report::PublishReport;
use crate::stats::Histogram;
use crate::token::Signer;
use worker::{Plan, Wire, WorkerStats, KEPT_ERRORS};

/// How long a set-up request (hello, stream creation) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the scenario. Must be called inside a `LocalSet`.
///
/// # Errors
/// A message when the arguments are unusable or the connections (or the NATS stream)
/// cannot be set up.
pub async fn run(args: &PublishArgs) -> Result<PublishReport, String> {
    let warmup = secs("warmup", args.warmup)?;
    let duration = secs("duration", args.duration)?;
    let drain = secs("drain-timeout", args.drain_timeout)?;
    let setup_timeout = secs("setup-timeout", args.connect.setup_timeout)?;
    if duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    if args.inflight < args.connections {
        return Err("--inflight must be at least --connections (one send per connection)".into());
    }
    let connections = args.connections as usize;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // Tags cids and inboxes with this run, so that a server keeping data across runs
    // (or several generators) never mixes them up.
    let run_tag = format!("{:x}{:x}", started.as_millis(), std::process::id());
    let setup_started = Instant::now();
    let load = Load {
        args,
        warmup,
        duration,
        drain,
    };
    let (measured, stream) = match args.target {
        PublishTarget::Rushhour => {
            let target = Rc::new(Target::parse(&args.connect.url)?);
            preflight(&args.connect, target.addr, connections)?;
            let exp =
                started.as_secs() + 3600 + (setup_timeout + warmup + duration + drain).as_secs();
            let signer = Signer::new(&args.connect.secret, &args.connect.tenant, exp);
            let rooms: Rc<[String]> = (0..args.rooms)
                .map(|r| serde_json::Value::from(format!("{}-{r}", args.room_prefix)).to_string())
                .collect();
            let wires = open_all(args, setup_timeout, |i| {
                let target = Rc::clone(&target);
                let rooms = Rc::clone(&rooms);
                let hello = format!(
                    r#"{{"op":"hello","token":"{}"}}"#,
                    signer.token(&format!("pub-{i}"))
                );
                let cid_prefix = format!("{run_tag}-{i}-");
                let source = source_for(&args.connect.sources, i as usize);
                async move {
                    let mut conn = Conn::connect(&target, source, u64::from(i) + 1).await?;
                    conn.request(&hello, "welcome", None, REQUEST_TIMEOUT)
                        .await?;
                    Ok(rushhour::RushhourWire::new(conn, rooms, cid_prefix))
                }
            })
            .await?;
            (load.measure(wires, setup_started).await, None)
        }
        PublishTarget::Nats => {
            let addr = nats::parse_url(&args.connect.url)?;
            preflight(&args.connect, addr, connections + 1)?;
            let source = source_for(&args.connect.sources, connections);
            let mut admin =
                NatsConn::connect(addr, source, "rushhour-burst setup", REQUEST_TIMEOUT)
                    .await
                    .map_err(|e| format!("set-up connection: {e}"))?;
            let wildcard = format!("{}.*", args.room_prefix);
            let inbox = format!("_INBOX.{run_tag}.setup.");
            let created = jetstream::create_stream(
                &mut admin,
                &args.stream,
                &wildcard,
                &inbox,
                REQUEST_TIMEOUT,
            )
            .await?;
            drop(admin);
            let subjects: Rc<[Vec<u8>]> = (0..args.rooms)
                .map(|r| format!("{}.{r}", args.room_prefix).into_bytes())
                .collect();
            let wires = open_all(args, setup_timeout, |i| {
                let subjects = Rc::clone(&subjects);
                let inbox = format!("_INBOX.{run_tag}.{i}.");
                let msg_id = args.msg_id.then(|| format!("{run_tag}-{i}-"));
                let source = source_for(&args.connect.sources, i as usize);
                async move {
                    let conn =
                        NatsConn::connect(addr, source, "rushhour-burst", REQUEST_TIMEOUT).await?;
                    Ok(jetstream::NatsWire::new(conn, subjects, inbox, msg_id))
                }
            })
            .await?;
            let stream = created
                .get("config")
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            (load.measure(wires, setup_started).await, Some(stream))
        }
    };
    Ok(load.report(measured, stream))
}

/// Opens `--connections` wires with `open`, `--connect-concurrency` at a time, all
/// within `timeout`.
async fn open_all<W, F, Fut>(
    args: &PublishArgs,
    timeout: Duration,
    open: F,
) -> Result<Vec<W>, String>
where
    W: 'static,
    F: Fn(u32) -> Fut,
    Fut: Future<Output = Result<W, ConnError>> + 'static,
{
    let gate = Rc::new(Semaphore::new(args.connect.connect_concurrency.max(1)));
    let handles: Vec<JoinHandle<Result<W, ConnError>>> = (0..args.connections)
        .map(|i| {
            let gate = Rc::clone(&gate);
            let opening = open(i);
            tokio::task::spawn_local(async move {
                let _permit = gate.acquire().await.expect("the gate is never closed");
                opening.await
            })
        })
        .collect();
    let aborts: Vec<AbortHandle> = handles.iter().map(JoinHandle::abort_handle).collect();
    let all = async {
        let mut wires = Vec::with_capacity(handles.len());
        for (i, handle) in handles.into_iter().enumerate() {
            match handle.await {
                Ok(Ok(wire)) => wires.push(wire),
                Ok(Err(e)) => return Err(format!("connection {i}: {e}")),
                Err(e) => return Err(format!("connection {i}: {e}")),
            }
        }
        Ok(wires)
    };
    let opened = tokio::time::timeout(timeout, all)
        .await
        .unwrap_or_else(|_| Err(format!("connections not set up within {timeout:?}")));
    if opened.is_err() {
        aborts.iter().for_each(AbortHandle::abort);
    }
    opened
}

/// The load's shape, shared by both targets.
struct Load<'a> {
    args: &'a PublishArgs,
    warmup: Duration,
    duration: Duration,
    drain: Duration,
}

/// What a run measured.
struct Measured {
    /// Seconds to open every connection (and create the stream).
    setup: Duration,
    /// Seconds from the end of the measurement to the last connection's end.
    drain: Duration,
    /// Every connection's stats.
    workers: Vec<WorkerStats>,
    /// CPU counters at the start of the measurement.
    first: CpuSample,
    /// … at its end.
    last: CpuSample,
}

impl Load<'_> {
    /// Runs every wire for warm-up + duration, then until its sends are answered or
    /// the drain time is up; samples CPU at the edges of the measurement.
    async fn measure<W: Wire + 'static>(&self, wires: Vec<W>, setup_started: Instant) -> Measured {
        let setup = setup_started.elapsed();
        let run = Window::after(Instant::now(), self.warmup, self.duration);
        let connections = wires.len();
        let inflight = self.args.inflight as usize;
        let handles: Vec<JoinHandle<WorkerStats>> = wires
            .into_iter()
            .enumerate()
            .map(|(i, wire)| {
                let plan = Plan {
                    index: i as u32,
                    // The in-flight total spread evenly, the first connections taking
                    // the remainder.
                    share: inflight / connections + usize::from(i < inflight % connections),
                    rooms: self.args.rooms,
                    body_bytes: self.args.body_bytes as usize,
                    run,
                    deadline: run.end + self.drain,
                };
                tokio::task::spawn_local(worker::run(wire, plan))
            })
            .collect();
        let sampling = async {
            tokio::time::sleep_until(run.start.into()).await;
            let first = CpuSample::take(self.args.server_pid);
            tokio::time::sleep_until(run.end.into()).await;
            (first, CpuSample::take(self.args.server_pid))
        };
        let joined = async {
            let mut all = Vec::with_capacity(handles.len());
            for handle in handles {
                all.push(handle.await.unwrap_or_else(|e| WorkerStats {
                    lost: Some("panic".into()),
                    samples: vec![format!("connection task: {e}")],
                    ..WorkerStats::default()
                }));
            }
            all
        };
        let (workers, (first, last)) = tokio::join!(joined, sampling);
        Measured {
            setup,
            drain: Instant::now().saturating_duration_since(run.end),
            workers,
            first,
            last,
        }
    }

    /// Adds up the connections' stats into the report.
    fn report(&self, m: Measured, stream: Option<serde_json::Value>) -> PublishReport {
        let args = self.args;
        let mut latency = Histogram::default();
        let mut total = WorkerStats::default();
        let mut lost_by = std::collections::BTreeMap::<String, u64>::new();
        for w in &m.workers {
            latency.merge(&w.latency);
            total.acked += w.acked;
            total.acked_total += w.acked_total;
            total.sent += w.sent;
            total.rate_limited += w.rate_limited;
            total.duplicates += w.duplicates;
            total.errors += w.errors;
            total.abandoned += w.abandoned;
            if let Some(label) = &w.lost {
                *lost_by.entry(label.clone()).or_default() += 1;
            }
            for sample in &w.samples {
                if total.samples.len() < KEPT_ERRORS {
                    total.samples.push(sample.clone());
                }
            }
        }
        let measured = (m.last.at - m.first.at).as_secs_f64();
        let cpu = |a: Option<Duration>, b: Option<Duration>| {
            a.zip(b).map(|(a, b)| b.saturating_sub(a).as_secs_f64())
        };
        let generator_cpu = m.last.own.saturating_sub(m.first.own).as_secs_f64();
        let server_cpu = cpu(m.first.server, m.last.server);
        let machine_cpu = cpu(m.first.machine, m.last.machine);
        let per_ack = |cpu_s: f64| {
            if total.acked == 0 {
                0.0
            } else {
                cpu_s * 1e6 / total.acked as f64
            }
        };
        let lost: u64 = lost_by.values().sum();
        PublishReport {
            scenario: "publish",
            target: match args.target {
                PublishTarget::Rushhour => "rushhour",
                PublishTarget::Nats => "nats",
            },
            url: args.connect.url.clone(),
            connections: args.connections,
            inflight: args.inflight,
            rooms: args.rooms,
            body_bytes: args.body_bytes,
            msg_id: args.msg_id && args.target == PublishTarget::Nats,
            stream,
            warmup_s: self.warmup.as_secs_f64(),
            duration_s: measured,
            setup_s: m.setup.as_secs_f64(),
            drain_s: m.drain.as_secs_f64(),
            acked: total.acked,
            acked_per_s: total.acked as f64 / measured,
            acked_total: total.acked_total,
            sent_total: total.sent,
            ack_latency: latency.summary(),
            rate_limited: total.rate_limited,
            duplicates: total.duplicates,
            send_errors: total.errors,
            abandoned: total.abandoned,
            lost_connections: lost,
            lost_by,
            errors: total.samples,
            generator_cpu_s: generator_cpu,
            generator_cores: generator_cpu / measured,
            generator_cpu_us_per_ack: per_ack(generator_cpu),
            server_cpu_s: server_cpu,
            server_cores: server_cpu.map(|s| s / measured),
            server_cpu_us_per_ack: server_cpu.map(per_ack),
            machine_cores: machine_cpu.map(|s| s / measured),
            other_cores: machine_cpu
                .map(|m| (m - generator_cpu - server_cpu.unwrap_or(0.0)).max(0.0) / measured),
            ok: total.acked > 0 && lost == 0 && total.errors == 0 && total.abandoned == 0,
        }
    }
}
