//! The `burst` report: its JSON (schema in the README) and its table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::latency_row;
use crate::stats::LatencySummary;

/// The results of one `burst` run (the schema is in the README).
#[derive(Debug, Serialize)]
pub struct BurstReport {
    /// Always `"burst"`.
    pub scenario: &'static str,
    /// Every flag (the secret excepted), with `meetings_at` and `chat_at` resolved, the
    /// threads actually used and the run's tag (in room names, keys and `cid`s).
    pub config: serde_json::Value,
    /// Logins.
    pub sessions: BurstSessions,
    /// Per tenant, largest first.
    pub tenants: Vec<BurstTenant>,
    /// `meeting.join` request→reply, from the first try.
    pub join_latency: LatencySummary,
    /// Chat stamp→read of live messages.
    pub delivery: LatencySummary,
    /// … of those read after the ramp ended.
    pub delivery_after_ramp: LatencySummary,
    /// Chat send→acknowledgement, from the first try.
    pub send_ack: LatencySummary,
    /// Chat.
    pub chat: BurstChat,
    /// Meeting signals.
    pub signals: BurstSignals,
    /// Meetings.
    pub meetings: BurstMeetings,
    /// One entry per second from the start.
    pub timeline: Vec<crate::scenario::burst::TimelineEntry>,
    /// Seconds from the start to the stop.
    pub duration_s: f64,
    /// CPU seconds (user + system) of the generator over the run, all threads.
    pub generator_cpu_s: f64,
    /// CPU seconds of `--server-pid` over the run.
    pub server_cpu_s: Option<f64>,
    /// CPU seconds the whole machine was busy over the run (all cores).
    pub machine_cpu_s: Option<f64>,
    /// … of which neither the generator nor `--server-pid`: other load on a shared
    /// machine, which makes latencies unreliable when it is not near zero.
    pub other_cpu_s: Option<f64>,
    /// Largest RSS of `--server-pid` sampled (once a second), in KiB.
    pub server_rss_kib_max: Option<u64>,
    /// Largest RSS of the generator sampled (once a second), in KiB.
    pub generator_rss_kib_max: Option<u64>,
    /// Every session served, nothing lost, duplicated or out of order, every meeting
    /// joined, every send answered.
    pub ok: bool,
    /// The first errors, verbatim.
    pub errors: Vec<String>,
}

/// `burst`: logins.
#[derive(Debug, Default, Serialize)]
pub struct BurstSessions {
    /// Clients.
    pub offered: u64,
    /// Clients that got a welcome.
    pub served: u64,
    /// Refusals: `overloaded` hellos (error and/or close 1013), refused or reset
    /// connects, upgrade refusals, timeouts.
    pub refused: u64,
    /// Connection attempts after a client's first.
    pub retried: u64,
    /// Clients without a session when the run stopped (never served, gave up, or lost
    /// and not back).
    pub failed: u64,
    /// Welcomes that resumed an earlier session.
    pub resumed: u64,
    /// Seconds from the start to the last first welcome, when every client was served.
    pub all_served_s: Option<f64>,
    /// Clients served per second, from the first connection attempt to the last first
    /// welcome.
    pub setup_per_s: f64,
    /// Sessions lost after their welcome.
    pub dropped: u64,
    /// Refusals by kind.
    pub refused_by: BTreeMap<String, u64>,
    /// Lost sessions by close code or kind of failure.
    pub dropped_by: BTreeMap<String, u64>,
    /// Largest `queue_pos` announced with a refusal.
    pub queue_pos_max: u64,
}

/// `burst`: one tenant.
#[derive(Debug, Default, Serialize)]
pub struct BurstTenant {
    /// The `tenant` claim.
    pub tenant: String,
    /// Its clients.
    pub clients: u64,
    /// … served.
    pub served: u64,
    /// Refusals its clients met.
    pub refused: u64,
    /// Seconds from the start to each served client's first welcome, sorted.
    pub served_at_s: Vec<f64>,
}

/// `burst`: chat.
#[derive(Debug, Default, Serialize)]
pub struct BurstChat {
    /// Messages sent (first tries).
    pub sent: u64,
    /// … acknowledged.
    pub acked: u64,
    /// Messages received by members, each once per member (live and replayed).
    pub deliveries: u64,
    /// … per second of chat.
    pub deliveries_per_s: f64,
    /// Acknowledged messages (room, seq) that some served member never got.
    pub lost: u64,
    /// Messages a member got twice (or late, below one it already had).
    pub duplicated: u64,
    /// Gaps: a member got a seq past the next one.
    pub out_of_order: u64,
    /// Sends tried again with the same `cid`.
    pub retried: u64,
    /// Acknowledgements flagged `duplicate`.
    pub duplicate_acks: u64,
    /// Sends refused for good.
    pub failed: u64,
    /// Sends never answered.
    pub unanswered: u64,
    /// Sends due while no connected client could take them.
    pub skipped: u64,
    /// Deliveries that were replayed history (a late subscriber catching up).
    pub replayed: u64,
    /// Pushes dropped while resubscribing after a reconnect.
    pub resync_dropped: u64,
    /// Error frames without a request id (a refused `ack`/`read`, …).
    pub stray_errors: u64,
    /// Team rooms.
    pub rooms: u64,
}

/// `burst`: signals.
#[derive(Debug, Default, Serialize)]
pub struct BurstSignals {
    /// Signals the server accepted.
    pub sent: u64,
    /// Signals received, each once.
    pub received: u64,
    /// Accepted signals their receiver never got.
    pub lost: u64,
    /// Signals received again (or late).
    pub duplicated: u64,
    /// Numbers a receiver never saw before a later one.
    pub skipped: u64,
    /// Signals whose answer a lost connection took (their numbers skipped).
    pub abandoned: u64,
    /// Signals refused for now, sent again.
    pub retried: u64,
    /// Signals refused for good.
    pub failed: u64,
}

/// `burst`: meetings.
#[derive(Debug, Default, Serialize)]
pub struct BurstMeetings {
    /// Meetings in the plan.
    pub planned: u64,
    /// Creates answered `"created":true`.
    pub created: u64,
    /// First joins answered.
    pub joined: u64,
    /// `overloaded` answers to joins (each retried).
    pub join_refused: u64,
    /// Meetings some participant never joined.
    pub failed: u64,
    /// Joins with a seat token after a reconnect.
    pub rejoined: u64,
    /// Creates or joins refused for good.
    pub join_failed: u64,
}

impl BurstReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let c = &self.config;
        let _ = writeln!(
            t,
            "burst: {} clients over a {} s ramp, {} tenant(s), {} rooms, {} meetings x {}, chat {}/s for {} s, {} thread(s)",
            c["clients"], c["ramp"], c["tenants"], self.chat.rooms, c["meetings"], c["participants"], c["rate"], c["duration"], c["threads"]
        );
        let s = &self.sessions;
        let by: Vec<String> = s
            .refused_by
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ =
            writeln!(
            t,
            "{:<14} served {}/{}, refused {} ({}), retried {}, failed {}, resumed {}, dropped {}",
            "sessions",
            s.served,
            s.offered,
            s.refused,
            if by.is_empty() { "-".into() } else { by.join(", ") },
            s.retried,
            s.failed,
            s.resumed,
            s.dropped
        );
        let _ = writeln!(
            t,
            "{:<14} all served at {}, {:.0} sessions/s, queue_pos max {}",
            "",
            s.all_served_s.map_or("-".into(), |x| format!("{x:.2} s")),
            s.setup_per_s,
            s.queue_pos_max
        );
        for tenant in self.tenants.iter().take(10) {
            let last = tenant
                .served_at_s
                .last()
                .map_or("-".into(), |x| format!("{x:.2} s"));
            let _ = writeln!(
                t,
                "{:<14} {} served {}/{}, refused {}, last at {last}",
                "tenant", tenant.tenant, tenant.served, tenant.clients, tenant.refused
            );
        }
        let m = &self.meetings;
        let _ = writeln!(
            t,
            "{:<14} {} planned, {} created, {} joins, {} join refusals, {} failed",
            "meetings", m.planned, m.created, m.joined, m.join_refused, m.failed
        );
        t.push_str(&latency_row("join", &self.join_latency));
        let ch = &self.chat;
        let _ = writeln!(
            t,
            "{:<14} sent {}, acked {}, deliveries {} ({:.0}/s), lost {}, duplicated {}, out of order {}, unanswered {}",
            "chat", ch.sent, ch.acked, ch.deliveries, ch.deliveries_per_s, ch.lost, ch.duplicated, ch.out_of_order, ch.unanswered
        );
        t.push_str(&latency_row("delivery", &self.delivery));
        t.push_str(&latency_row("after ramp", &self.delivery_after_ramp));
        t.push_str(&latency_row("send -> ack", &self.send_ack));
        let sg = &self.signals;
        let _ = writeln!(
            t,
            "{:<14} sent {}, received {}, lost {}, duplicated {}, skipped {} (abandoned {})",
            "signals", sg.sent, sg.received, sg.lost, sg.duplicated, sg.skipped, sg.abandoned
        );
        let _ = writeln!(
            t,
            "{:<14} generator {:.2} s over {:.1} s, server {}, other processes {}",
            "cpu",
            self.generator_cpu_s,
            self.duration_s,
            self.server_cpu_s
                .map_or("-".into(), |x| format!("{x:.2} s")),
            self.other_cpu_s.map_or("-".into(), |x| format!("{x:.2} s")),
        );
        let mib =
            |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0));
        let _ = writeln!(
            t,
            "{:<14} generator {}, server {}",
            "rss max",
            mib(self.generator_rss_kib_max),
            mib(self.server_rss_kib_max)
        );
        for e in &self.errors {
            let _ = writeln!(t, "error: {e}");
        }
        let _ = writeln!(t, "{}", if self.ok { "OK" } else { "FAILED" });
        t
    }
}
