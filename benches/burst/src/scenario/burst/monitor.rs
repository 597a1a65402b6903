//! The main thread while the generator threads run: collects their results as they
//! finish, samples CPU once a second and memory four times a second (the server's and
//! its own), and prints the progress line.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::global::Global;
use super::shard::ShardOutcome;
use super::timeline::Sample;
use crate::stats::{machine_busy, own_cpu, pid_cpu, pid_rss_kib, Histogram};

/// What the monitor saw.
pub struct Watched {
    /// Each thread's result, `None` for one that did not finish in time.
    pub outcomes: Vec<Option<ShardOutcome>>,
    /// The largest RSS sampled from `--server-pid`, in KiB.
    pub server_rss_kib_max: Option<u64>,
    /// The largest RSS of this process sampled, in KiB.
    pub generator_rss_kib_max: Option<u64>,
    /// CPU and memory, second by second.
    pub samples: Vec<Sample>,
}

/// How long after a whole second the snapshots are read: threads publish on it.
const READ_LAG: Duration = Duration::from_millis(150);

/// Totals across threads at one tick.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    served: u64,
    refused: u64,
    retrying: u64,
    connected: u64,
    sent: u64,
    deliveries: u64,
    joined: u64,
}

/// Waits for every thread (until `deadline`), ticking once a second.
pub fn watch(g: &Global, results: &Receiver<(usize, ShardOutcome)>, deadline: Instant) -> Watched {
    let threads = g.settings.threads;
    let mut outcomes: Vec<Option<ShardOutcome>> = (0..threads).map(|_| None).collect();
    let mut done = 0;
    let mut mem = Memory::new(g.settings.server_pid);
    let mut cpu = CpuClock::new(g);
    let mut last = Totals::default();
    // Threads publish on each whole second from the start; read a little after.
    let mut tick = g.epoch + Duration::from_secs(1) + READ_LAG;
    let mut next_look = Instant::now();
    while done < threads {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if now >= next_look {
            mem.look();
            next_look = now + MEMORY_EVERY;
        }
        match results.recv_timeout(tick.min(next_look).min(deadline) - now) {
            Ok((k, outcome)) => {
                outcomes[k] = Some(outcome);
                done += 1;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= tick {
            cpu.sample(mem.look());
            let (totals, recent) = gather(g);
            if g.settings.progress {
                eprintln!("{}", progress_line(g, tick, &totals, &last, &recent));
            }
            last = totals;
            tick += Duration::from_secs(1);
        }
    }
    // The last, partial second.
    cpu.sample(mem.look());
    Watched {
        outcomes,
        server_rss_kib_max: mem.server_max,
        generator_rss_kib_max: mem.own_max,
        samples: cpu.samples,
    }
}

/// How often memory is looked at: often enough to catch a short run's peak.
const MEMORY_EVERY: Duration = Duration::from_millis(250);

/// The largest RSS of the server and of this process seen so far.
struct Memory {
    server_pid: Option<u32>,
    server_max: Option<u64>,
    own_max: Option<u64>,
}

impl Memory {
    fn new(server_pid: Option<u32>) -> Self {
        Self {
            server_pid,
            server_max: None,
            own_max: None,
        }
    }

    /// Samples both; returns the server's RSS now.
    fn look(&mut self) -> Option<u64> {
        let max = |m: &mut Option<u64>, v: Option<u64>| {
            if let Some(v) = v {
                *m = Some(m.map_or(v, |m| m.max(v)));
            }
        };
        let server = self.server_pid.and_then(pid_rss_kib);
        max(&mut self.server_max, server);
        max(&mut self.own_max, pid_rss_kib(std::process::id()));
        server
    }
}

/// CPU counters at the last sample, and the per-second samples so far.
struct CpuClock {
    server_pid: Option<u32>,
    epoch: Instant,
    /// When the last sample was taken, and its counters.
    at: Instant,
    last: (Duration, Option<Duration>, Option<Duration>),
    samples: Vec<Sample>,
}

impl CpuClock {
    fn new(g: &Global) -> Self {
        let server_pid = g.settings.server_pid;
        Self {
            server_pid,
            epoch: g.epoch,
            at: Instant::now(),
            last: (own_cpu(), server_pid.and_then(pid_cpu), machine_busy()),
            samples: Vec::new(),
        }
    }

    /// Records what was spent since the last sample, as the second in which that one
    /// was taken (samples are taken just after each whole second).
    fn sample(&mut self, server_rss_kib: Option<u64>) {
        let t = self.at.saturating_duration_since(self.epoch).as_secs();
        self.at = Instant::now();
        let now = (own_cpu(), self.server_pid.and_then(pid_cpu), machine_busy());
        let spent = |b: Option<Duration>, a: Option<Duration>| {
            b.zip(a).map(|(b, a)| b.saturating_sub(a).as_secs_f64())
        };
        self.samples.push(Sample {
            t,
            generator_cpu_s: now.0.saturating_sub(self.last.0).as_secs_f64(),
            server_cpu_s: spent(now.1, self.last.1),
            server_rss_kib,
            machine_cpu_s: spent(now.2, self.last.2),
        });
        self.last = now;
    }
}

/// Adds up the threads' snapshots, taking their recent latencies.
fn gather(g: &Global) -> (Totals, Histogram) {
    let mut t = Totals::default();
    let mut recent = Histogram::default();
    for k in 0..g.settings.threads {
        let mut p = g.progress(k);
        t.served += p.served;
        t.refused += p.refused;
        t.retrying += p.retrying;
        t.connected += p.connected;
        t.sent += p.sent;
        t.deliveries += p.deliveries;
        t.joined += p.joined;
        recent.merge(&std::mem::take(&mut p.recent));
    }
    (t, recent)
}

/// `t=3s served 1200/2000 refused 340 retrying 12 connected 1188 msgs 2000/s
/// deliveries 98000/s p99 12.3ms joins 40/100`.
fn progress_line(
    g: &Global,
    at: Instant,
    now: &Totals,
    last: &Totals,
    recent: &Histogram,
) -> String {
    let p99 = if recent.count() == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}ms", recent.quantile(0.99) as f64 / 1000.0)
    };
    format!(
        "t={}s served {}/{} refused {} retrying {} connected {} msgs {}/s deliveries {}/s p99 {} joins {}/{}",
        at.saturating_duration_since(g.epoch).as_secs(),
        now.served,
        g.settings.clients,
        now.refused,
        now.retrying,
        now.connected,
        now.sent.saturating_sub(last.sent),
        now.deliveries.saturating_sub(last.deliveries),
        p99,
        now.joined,
        g.plan.meetings.len() * g.plan.participants,
    )
}
