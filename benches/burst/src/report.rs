//! Results: a small table for people, JSON for `benches/results/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::seq::SeqSummary;
use crate::stats::LatencySummary;

mod burst;

pub use burst::{BurstChat, BurstMeetings, BurstReport, BurstSessions, BurstSignals, BurstTenant};

/// The results of one `fanout` run.
#[derive(Debug, Serialize)]
pub struct FanoutReport {
    /// Always `"fanout"`.
    pub scenario: &'static str,
    /// `"rushhour"`, `"nats"` or `"redis"`.
    pub target: &'static str,
    /// The server's URL.
    pub url: String,
    /// The subscribers' client implementation.
    pub client: String,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Encoded body length.
    pub body_bytes: u32,
    /// Sends kept in flight.
    pub window: u32,
    /// Seconds of load before the measurement.
    pub warmup_s: f64,
    /// Seconds actually measured.
    pub duration_s: f64,
    /// Seconds to connect and subscribe everyone.
    pub setup_s: f64,
    /// `msg` frames received by all subscribers in the window.
    pub deliveries: u64,
    /// … per second.
    pub deliveries_per_s: f64,
    /// Sends acknowledged in the window.
    pub sends: u64,
    /// … per second.
    pub sends_per_s: f64,
    /// Send→reply latency.
    pub send_reply: LatencySummary,
    /// Publish→delivery latency.
    pub delivery: LatencySummary,
    /// `rate_limited`/`overloaded` answers, retried.
    pub rate_limited: u64,
    /// Replies flagged duplicate (a `cid` the server already had).
    pub duplicates: u64,
    /// Other error answers to sends.
    pub send_errors: u64,
    /// Sends unanswered at the end.
    pub abandoned: u64,
    /// The last acknowledged seq.
    pub final_seq: Option<u64>,
    /// The per-subscriber order check.
    pub order: SeqSummary,
    /// Seconds the subscribers took to catch up after the last reply.
    pub drain_s: f64,
    /// Subscriber connections lost during the run.
    pub lost_connections: u64,
    /// … by close code or kind of failure (`close 4008`: slow consumer).
    pub lost_by: BTreeMap<String, u64>,
    /// Non-`msg` frames received by subscribers.
    pub other_frames: u64,
    /// `msg` frames without a readable seq.
    pub unparsed: u64,
    /// The first errors, verbatim.
    pub errors: Vec<String>,
    /// CPU seconds (user + system) of the generator during the window.
    pub generator_cpu_s: f64,
    /// … as cores busy.
    pub generator_cores: f64,
    /// … per delivery, in microseconds.
    pub generator_cpu_us_per_delivery: f64,
    /// CPU seconds of `--server-pid` during the window.
    pub server_cpu_s: Option<f64>,
    /// … as cores busy.
    pub server_cores: Option<f64>,
    /// Cores the whole machine kept busy during the window.
    pub machine_cores: Option<f64>,
    /// … of which neither the generator nor `--server-pid`: other load on a shared
    /// machine, which makes the numbers unreliable when it is not near zero.
    pub other_cores: Option<f64>,
    /// Every subscriber clean, no connection lost, no send failed or left unanswered.
    pub ok: bool,
}

fn latency_row(name: &str, l: &LatencySummary) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "{name:<22} p50 {:>9.2} ms   p99 {:>9.2} ms   max {:>9.2} ms   (n={})\n",
        ms(l.p50_us),
        ms(l.p99_us),
        ms(l.max_us),
        l.count
    )
}

impl FanoutReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        // rushhour's runs keep their first line; the peers' name themselves.
        let scenario = match self.target {
            "rushhour" => "fanout".to_owned(),
            peer => format!("fanout ({peer})"),
        };
        let _ = writeln!(
            t,
            "{scenario}: {} subscribers ({} client), {} B bodies, window {}, {:.1} s measured after {:.1} s warm-up",
            self.subscribers, self.client, self.body_bytes, self.window, self.duration_s, self.warmup_s
        );
        let _ = writeln!(
            t,
            "{:<22} {:>12.0} /s   ({} in all)",
            "deliveries", self.deliveries_per_s, self.deliveries
        );
        let _ = writeln!(
            t,
            "{:<22} {:>12.1} /s   ({} in all)",
            "sends acknowledged", self.sends_per_s, self.sends
        );
        t.push_str(&latency_row("send -> reply", &self.send_reply));
        t.push_str(&latency_row("publish -> delivery", &self.delivery));
        let o = &self.order;
        let _ = writeln!(
            t,
            "{:<22} {} / {} subscribers clean; gaps {} (missing {}), repeats {}, behind at end {}",
            "order", o.clean, o.subscribers, o.gaps, o.missing, o.repeats, o.behind
        );
        let _ = writeln!(
            t,
            "{:<22} rate-limited {}, duplicates {}, errors {}, unanswered {}, connections lost {}",
            "trouble",
            self.rate_limited,
            self.duplicates,
            self.send_errors,
            self.abandoned,
            self.lost_connections
        );
        if !self.lost_by.is_empty() {
            let by: Vec<String> = self
                .lost_by
                .iter()
                .map(|(why, n)| format!("{why}: {n}"))
                .collect();
            let _ = writeln!(t, "{:<22} {}", "connections lost by", by.join(", "));
        }
        let _ = writeln!(
            t,
            "{:<22} {:.2} s = {:.2} cores, {:.2} us per delivery",
            "generator cpu",
            self.generator_cpu_s,
            self.generator_cores,
            self.generator_cpu_us_per_delivery
        );
        if let (Some(s), Some(c)) = (self.server_cpu_s, self.server_cores) {
            let _ = writeln!(t, "{:<22} {s:.2} s = {c:.2} cores", "server cpu");
        }
        if let (Some(m), Some(o)) = (self.machine_cores, self.other_cores) {
            let _ = writeln!(
                t,
                "{:<22} {m:.2} cores busy, {o:.2} of them other processes",
                "machine"
            );
        }
        let _ = writeln!(
            t,
            "{:<22} set-up {:.1} s, drain {:.2} s, final seq {}",
            "timing",
            self.setup_s,
            self.drain_s,
            self.final_seq.map_or("-".into(), |s| s.to_string())
        );
        for e in &self.errors {
            let _ = writeln!(t, "error: {e}");
        }
        let _ = writeln!(t, "{}", if self.ok { "OK" } else { "FAILED" });
        t
    }
}

/// The results of one `publish` run.
#[derive(Debug, Serialize)]
pub struct PublishReport {
    /// Always `"publish"`.
    pub scenario: &'static str,
    /// `"rushhour"` or `"nats"`.
    pub target: &'static str,
    /// The server's URL.
    pub url: String,
    /// Publisher connections.
    pub connections: u32,
    /// Sends kept in flight, in all.
    pub inflight: u32,
    /// Rooms (subjects) the sends rotate over.
    pub rooms: u32,
    /// Encoded body length.
    pub body_bytes: u32,
    /// NATS: whether each publish carried a `Nats-Msg-Id` (JetStream de-duplication).
    pub msg_id: bool,
    /// NATS: the stream's configuration as the server reported it on creation.
    pub stream: Option<serde_json::Value>,
    /// Seconds of load before the measurement.
    pub warmup_s: f64,
    /// Seconds actually measured.
    pub duration_s: f64,
    /// Seconds to connect everyone (and create the stream).
    pub setup_s: f64,
    /// Seconds from the end of the measurement until the last ack or the drain limit.
    pub drain_s: f64,
    /// Acks read inside the window.
    pub acked: u64,
    /// … per second.
    pub acked_per_s: f64,
    /// Acks in all, warm-up and drain included.
    pub acked_total: u64,
    /// Sends written in all, retries included.
    pub sent_total: u64,
    /// Latency from writing a send to reading its ack (first try to final ack).
    pub ack_latency: LatencySummary,
    /// `rate_limited`/`overloaded` answers, retried.
    pub rate_limited: u64,
    /// Acks flagged duplicate.
    pub duplicates: u64,
    /// Sends refused for good.
    pub send_errors: u64,
    /// Sends unanswered at the end.
    pub abandoned: u64,
    /// Connections lost during the run.
    pub lost_connections: u64,
    /// … by close code or kind of failure.
    pub lost_by: BTreeMap<String, u64>,
    /// The first errors, verbatim.
    pub errors: Vec<String>,
    /// CPU seconds (user + system) of the generator during the window.
    pub generator_cpu_s: f64,
    /// … as cores busy.
    pub generator_cores: f64,
    /// … per ack, in microseconds.
    pub generator_cpu_us_per_ack: f64,
    /// CPU seconds of `--server-pid` during the window.
    pub server_cpu_s: Option<f64>,
    /// … as cores busy.
    pub server_cores: Option<f64>,
    /// … per ack, in microseconds.
    pub server_cpu_us_per_ack: Option<f64>,
    /// Cores the whole machine kept busy during the window.
    pub machine_cores: Option<f64>,
    /// … of which neither the generator nor `--server-pid`.
    pub other_cores: Option<f64>,
    /// Some acks, and no connection lost, no send refused or left unanswered.
    pub ok: bool,
}

impl PublishReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let ms = |us: u64| us as f64 / 1000.0;
        let _ = writeln!(
            t,
            "publish ({}): {} connections, {} in flight, {} rooms, {} B bodies{}, {:.1} s measured after {:.1} s warm-up",
            self.target,
            self.connections,
            self.inflight,
            self.rooms,
            self.body_bytes,
            if self.msg_id { ", Nats-Msg-Id" } else { "" },
            self.duration_s,
            self.warmup_s
        );
        let _ = writeln!(
            t,
            "{:<22} {:>12.0} /s   ({} in all)",
            "acked", self.acked_per_s, self.acked
        );
        let l = &self.ack_latency;
        let _ = writeln!(
            t,
            "{:<22} p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms   (n={})",
            "send -> ack",
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.max_us),
            l.count
        );
        let _ = writeln!(
            t,
            "{:<22} rate-limited {}, duplicates {}, errors {}, unanswered {}, connections lost {}",
            "trouble",
            self.rate_limited,
            self.duplicates,
            self.send_errors,
            self.abandoned,
            self.lost_connections
        );
        let _ = writeln!(
            t,
            "{:<22} {:.2} s = {:.2} cores, {:.2} us per ack",
            "generator cpu",
            self.generator_cpu_s,
            self.generator_cores,
            self.generator_cpu_us_per_ack
        );
        if let (Some(s), Some(c), Some(a)) = (
            self.server_cpu_s,
            self.server_cores,
            self.server_cpu_us_per_ack,
        ) {
            let _ = writeln!(
                t,
                "{:<22} {s:.2} s = {c:.2} cores, {a:.2} us per ack",
                "server cpu"
            );
        }
        if let (Some(m), Some(o)) = (self.machine_cores, self.other_cores) {
            let _ = writeln!(
                t,
                "{:<22} {m:.2} cores busy, {o:.2} of them other processes",
                "machine"
            );
        }
        let _ = writeln!(
            t,
            "{:<22} set-up {:.2} s, drain {:.2} s",
            "timing", self.setup_s, self.drain_s
        );
        for e in &self.errors {
            let _ = writeln!(t, "error: {e}");
        }
        let _ = writeln!(t, "{}", if self.ok { "OK" } else { "FAILED" });
        t
    }
}
