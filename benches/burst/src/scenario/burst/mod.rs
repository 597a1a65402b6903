//! `burst`: the 9 a.m. morning against one server. Clients arrive over a ramp (in a
//! shuffled order, tenants mixed), log in — obeying the server's refusals and retrying,
//! resuming their session if they lose it — subscribe to their team room, join their
//! meetings and signal, chat at a fixed total rate with batched receipts; then the run
//! drains and checks every stream: no message or signal lost, duplicated or out of
//! order, every session eventually served.
//!
//! The generator runs `--threads` current-thread runtimes over shards of the clients
//! (client `i` on thread `i % threads`); what must cross threads — rooms' last
//! acknowledged seqs, signal counts, meeting ids, requests owed — is a few atomics in
//! [`global::Global`]. Everything else is per thread, merged at the end.
//!
//! Layout:
//! - [`settings`], [`plan`]: the flags checked; who is where (sans-IO).
//! - [`client`], [`session`], [`active`]: a client's life, one attempt, one session.
//! - [`chat`], [`meeting`], [`signals`], [`room`]: what a session does and checks.
//! - [`backoff`], [`rng`]: retry waits.
//! - [`shard`], [`global`], [`monitor`]: threads, what they share, the progress line.
//! - [`tally`], [`timeline`], [`merge`], [`state`], [`wire`]: counting and reporting.

pub mod active;
pub mod backoff;
pub mod chat;
pub mod client;
pub mod global;
pub mod meeting;
pub mod merge;
pub mod monitor;
pub mod plan;
pub mod rng;
pub mod room;
pub mod session;
pub mod settings;
pub mod shard;
pub mod signals;
pub mod state;
pub mod tally;
pub mod timeline;
pub mod wire;

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{fd_limit, preflight};
use crate::cli::{BurstArgs, ConnectArgs};
use crate::client::Target;
use crate::report::BurstReport;
use crate::stats::{machine_busy, own_cpu, pid_cpu};
use crate::token::Signer;
use global::Global;
use plan::{Plan, Shape};
use session::Attempt;
use settings::Settings;
use shard::ShardOutcome;

pub use timeline::TimelineEntry;

/// File descriptors per thread besides its clients: its epoll and wake-up descriptors.
const FDS_PER_THREAD: usize = 4;
/// Descriptors besides the clients and threads: stdio, the JSON file, the monitor.
const SPARE_FDS: usize = 16;
/// Time from the set-up to the start, so that every thread starts on the same clock.
const START_DELAY: Duration = Duration::from_millis(100);
/// How long the threads may take past the drain before the run is declared stuck.
const STUCK_AFTER: Duration = Duration::from_secs(30);
/// The ephemeral port range when `/proc` does not say.
const DEFAULT_PORTS: usize = 28_232;

/// Runs the scenario on its own threads.
///
/// # Errors
/// A message when the flags are unusable, the configuration cannot fit this process or
/// machine, or the server cannot be reached.
pub fn run(args: &BurstArgs) -> Result<BurstReport, String> {
    let settings = Settings::from_args(args)?;
    let target = Target::parse(&args.url)?;
    check_capacity(args, &settings, &target)?;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let run_tag = format!("{:x}{:x}", started.as_millis(), std::process::id());
    let plan = Plan::new(&Shape {
        clients: settings.clients,
        tenants: args.tenants as usize,
        skew: args.tenant_skew,
        tenant_prefix: args.tenant_prefix.clone(),
        room_size: args.room_size as usize,
        meetings: args.meetings as usize,
        participants: args.participants as usize,
        run_tag: run_tag.clone(),
        seed: settings.seed,
    })?;
    // Tokens outlive the run by an hour.
    let exp = started.as_secs() + 3600 + (settings.load_end + settings.drain).as_secs();
    let signers: Vec<Signer> = plan
        .tenants
        .iter()
        .map(|t| Signer::new(&args.secret, &t.name, exp))
        .collect();
    probe(&target, &signers[0], &settings)?;

    let epoch = Instant::now() + START_DELAY;
    let g = Arc::new(Global::new(settings, plan, target, signers, run_tag, epoch));
    let s = &g.settings;
    let (cpu0, server0, machine0) = (own_cpu(), s.server_pid.and_then(pid_cpu), machine_busy());
    let (tx, rx) = mpsc::channel();
    for k in 0..s.threads {
        let (g, tx) = (Arc::clone(&g), tx.clone());
        std::thread::Builder::new()
            .name(format!("burst-{k}"))
            .spawn(move || {
                let outcome = shard::run(g, k);
                let _ = tx.send((k, outcome));
            })
            .map_err(|e| format!("cannot start thread {k}: {e}"))?;
    }
    drop(tx);
    let deadline = g.at(s.load_end.max(s.meetings_at) + s.drain) + STUCK_AFTER;
    let watched = monitor::watch(&g, &rx, deadline);
    let duration_s = g.epoch.elapsed().as_secs_f64();
    let generator_cpu_s = own_cpu().saturating_sub(cpu0).as_secs_f64();
    let spent = |a: Option<Duration>, b: Option<Duration>| {
        a.zip(b).map(|(a, b)| b.saturating_sub(a).as_secs_f64())
    };
    let server_cpu_s = spent(server0, s.server_pid.and_then(pid_cpu));
    let machine_cpu_s = spent(machine0, machine_busy());

    let mut counts = tally::Counts::default();
    let mut clients = Vec::with_capacity(s.clients);
    let mut errors = Vec::new();
    for (k, outcome) in watched.outcomes.into_iter().enumerate() {
        let ShardOutcome {
            counts: c,
            clients: cs,
            error,
        } = outcome.unwrap_or_else(|| ShardOutcome {
            error: Some(format!("thread {k} did not finish")),
            ..ShardOutcome::default()
        });
        counts.merge(&c);
        clients.extend(cs);
        errors.extend(error);
    }
    if clients.len() < s.clients {
        // A thread that never reported: its clients count as never served.
        let mut seen = vec![false; s.clients];
        clients.iter().for_each(|c| seen[c.index] = true);
        clients.extend(
            (0..s.clients)
                .filter(|&i| !seen[i])
                .map(|i| state::ClientState::default().outcome(i)),
        );
    }
    let m = merge::merge(&g, counts, clients);
    errors.extend(m.counts.errors.iter().cloned());
    errors.truncate(tally::KEPT_ERRORS);
    let ok = errors_free(&m, &g) && !errors.iter().any(|e| e.starts_with("thread "));
    Ok(BurstReport {
        scenario: "burst",
        config: config_json(args, &g),
        join_latency: m.counts.join.summary(),
        delivery: m.counts.delivery.summary(),
        delivery_after_ramp: m.counts.delivery_after_ramp.summary(),
        send_ack: m.counts.send_ack.summary(),
        timeline: m.counts.timeline.entries_with(&watched.samples),
        sessions: m.sessions,
        tenants: m.tenants,
        chat: m.chat,
        signals: m.signals,
        meetings: m.meetings,
        duration_s,
        generator_cpu_s,
        server_cpu_s,
        machine_cpu_s,
        other_cpu_s: machine_cpu_s
            .map(|m| (m - generator_cpu_s - server_cpu_s.unwrap_or(0.0)).max(0.0)),
        server_rss_kib_max: watched.server_rss_kib_max,
        generator_rss_kib_max: watched.generator_rss_kib_max,
        ok,
        errors,
    })
}

/// The run's verdict: every session served and still open, every message and signal
/// where it belongs once, every meeting joined, every send answered.
fn errors_free(m: &merge::Merged, g: &Global) -> bool {
    let (s, c, sg) = (&m.sessions, &m.chat, &m.signals);
    s.served == s.offered
        && s.failed == 0
        && c.lost == 0
        && c.duplicated == 0
        && c.out_of_order == 0
        && c.unanswered == 0
        && c.failed == 0
        && (g.settings.rate == 0.0 || c.acked > 0)
        && sg.lost == 0
        && sg.duplicated == 0
        && sg.skipped <= sg.abandoned
        && sg.failed == 0
        && m.meetings.failed == 0
}

/// Every flag but the secret, the resolved timetable, and the run's tag.
fn config_json(args: &BurstArgs, g: &Global) -> serde_json::Value {
    let mut config = serde_json::to_value(args).unwrap_or_default();
    let s = &g.settings;
    config["meetings_at"] = s.meetings_at.as_secs_f64().into();
    config["chat_at"] = s.chat_at.as_secs_f64().into();
    config["threads"] = s.threads.into();
    config["run_tag"] = g.run_tag.clone().into();
    config
}

/// Refuses a configuration this process or machine cannot hold.
fn check_capacity(args: &BurstArgs, s: &Settings, target: &Target) -> Result<(), String> {
    let connect = ConnectArgs {
        url: args.url.clone(),
        secret: String::new(),
        tenant: String::new(),
        sources: s.sources.clone(),
        connect_concurrency: 1,
        setup_timeout: 0.0,
        allow_remote: args.allow_remote,
    };
    preflight(&connect, target.addr, 0)?;
    // Every client holds one descriptor (a refused one closes its socket before it
    // retries), plus the probe, each thread's runtime and stdio.
    let spare = 1 + FDS_PER_THREAD * s.threads + SPARE_FDS;
    let limit = fd_limit() as usize;
    if s.clients + spare > limit {
        return Err(format!(
            "--clients {} needs {} file descriptors (one per client, {spare} besides) and this \
             process may hold {limit}: lower --clients to {} at most",
            s.clients,
            s.clients + spare,
            limit.saturating_sub(spare)
        ));
    }
    if s.sources
        .iter()
        .any(|ip| ip.is_ipv4() != target.addr.is_ipv4())
    {
        return Err("--sources must be of the same address family as --url".into());
    }
    let ports = ephemeral_ports();
    let per_source = s.clients.div_ceil(s.sources.len().max(1));
    if per_source > ports {
        return Err(format!(
            "{per_source} connections per source address exceed the {ports} ephemeral ports: add --sources"
        ));
    }
    Ok(())
}

/// The size of the ephemeral port range (`/proc/sys/net/ipv4/ip_local_port_range`).
fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut it = text.split_whitespace().map(|p| p.parse::<usize>().ok());
            let (lo, hi) = (it.next()??, it.next()??);
            hi.checked_sub(lo).map(|n| n + 1)
        })
        .unwrap_or(DEFAULT_PORTS)
}

/// One login before the load, so that an unreachable server or a wrong secret stops
/// the run at once (exit status 2) rather than as thousands of failed clients. A
/// refusal (`overloaded`) is fine: the server is there.
fn probe(target: &Target, signer: &Signer, s: &Settings) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    let hello = format!(r#"{{"op":"hello","token":"{}"}}"#, signer.token("probe"));
    let source = s.sources.first().copied();
    runtime.block_on(async {
        match session::open(target, source, u64::MAX, &hello, s.connect_timeout).await {
            Attempt::Welcome { mut conn, .. } => {
                conn.queue_close(1000);
                let _ = conn.flush().await;
                Ok(())
            }
            Attempt::Refused {
                why: "overloaded" | "http_503" | "http_429",
                ..
            } => Ok(()),
            Attempt::Refused { why, .. } => {
                Err(format!("cannot reach the server at {}: {why}", target.url))
            }
            Attempt::Fatal(e) => Err(format!(
                "the server at {} refused the probe login: {e}",
                target.url
            )),
        }
    })
}
