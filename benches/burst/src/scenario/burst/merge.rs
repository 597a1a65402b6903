//! The threads' results into the report: counts added up, then the checks that need
//! every client at once — each room's lost messages (counted once however many members
//! missed them), each signal pair's accepted count against what its receiver got, each
//! tenant's service times.

use std::sync::atomic::Ordering;

use super::global::Global;
use super::room::covered;
use super::state::ClientOutcome;
use super::tally::Counts;
use crate::report::{BurstChat, BurstMeetings, BurstSessions, BurstSignals, BurstTenant};

/// Everything merged, before the report is assembled.
pub struct Merged {
    /// All threads' counts.
    pub counts: Counts,
    /// Logins.
    pub sessions: BurstSessions,
    /// Per tenant.
    pub tenants: Vec<BurstTenant>,
    /// Chat.
    pub chat: BurstChat,
    /// Signals.
    pub signals: BurstSignals,
    /// Meetings.
    pub meetings: BurstMeetings,
}

/// Merges `counts` and `clients` (every client, any order).
pub fn merge(g: &Global, counts: Counts, mut clients: Vec<ClientOutcome>) -> Merged {
    clients.sort_by_key(|c| c.index);
    let plan = &g.plan;
    let s = &g.settings;
    let served = clients.iter().filter(|c| c.served_at_us.is_some()).count() as u64;
    let offered = s.clients as u64;
    let window_s = counts
        .first_attempt_us
        .zip(counts.last_served_us)
        .map_or(0.0, |(a, b)| b.saturating_sub(a) as f64 / 1e6);
    let sessions = BurstSessions {
        offered,
        served,
        refused: counts.refused,
        retried: counts.retried,
        failed: clients.iter().filter(|c| !c.connected).count() as u64,
        resumed: counts.resumed,
        all_served_s: (served == offered).then(|| counts.last_served_us.unwrap_or(0) as f64 / 1e6),
        setup_per_s: if window_s > 0.0 {
            served as f64 / window_s
        } else {
            0.0
        },
        dropped: counts.dropped,
        refused_by: counts
            .refused_by
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        dropped_by: counts.dropped_by.clone(),
        queue_pos_max: counts.queue_pos_max,
    };
    let tenants = plan
        .tenants
        .iter()
        .map(|t| {
            let mine = &clients[t.first..t.first + t.clients];
            let mut served_at_s: Vec<f64> = mine
                .iter()
                .filter_map(|c| c.served_at_us)
                .map(|us| us as f64 / 1e6)
                .collect();
            served_at_s.sort_by(f64::total_cmp);
            BurstTenant {
                tenant: t.name.clone(),
                clients: t.clients as u64,
                served: served_at_s.len() as u64,
                refused: mine.iter().map(|c| u64::from(c.refusals)).sum(),
                served_at_s,
            }
        })
        .collect();
    let chat_s = s.load_end.saturating_sub(s.chat_at).as_secs_f64();
    let chat = BurstChat {
        sent: counts.sent,
        acked: counts.acked,
        deliveries: counts.deliveries,
        deliveries_per_s: if chat_s > 0.0 {
            counts.deliveries as f64 / chat_s
        } else {
            0.0
        },
        lost: lost_messages(g, &clients),
        duplicated: clients.iter().map(|c| c.room.repeats).sum(),
        out_of_order: clients.iter().map(|c| c.room.gap_events).sum(),
        retried: counts.send_retries,
        duplicate_acks: counts.duplicate_acks,
        failed: counts.send_failed,
        unanswered: clients.iter().map(|c| c.unanswered as u64).sum(),
        skipped: counts.send_skipped,
        replayed: counts.replayed,
        resync_dropped: counts.resync_dropped,
        stray_errors: counts.stray_errors,
        rooms: plan.rooms.len() as u64,
    };
    let signals = signal_checks(g, &clients, &counts);
    let meetings = BurstMeetings {
        planned: plan.meetings.len() as u64,
        created: counts.created,
        joined: counts.joined,
        join_refused: counts.join_refused,
        failed: plan
            .meetings
            .iter()
            .filter(|m| {
                clients[m.host..m.host + plan.participants]
                    .iter()
                    .any(|c| !c.meeting.as_ref().is_some_and(|seat| seat.joined))
            })
            .count() as u64,
        rejoined: counts.rejoined,
        join_failed: counts.join_failed,
    };
    Merged {
        counts,
        sessions,
        tenants,
        chat,
        signals,
        meetings,
    }
}

/// Acknowledged messages that some served member of their room never got (a member
/// whose subscription never went through missed them all).
fn lost_messages(g: &Global, clients: &[ClientOutcome]) -> u64 {
    g.plan
        .rooms
        .iter()
        .enumerate()
        .map(|(r, room)| {
            let final_seq = g.room_final[r].load(Ordering::Relaxed);
            let mut missing: Vec<(u64, u64)> = clients[room.first..room.first + room.members]
                .iter()
                .filter(|c| c.served_at_us.is_some())
                .flat_map(|c| c.room.missing(final_seq))
                .filter(|&(lo, _)| lo <= final_seq)
                .map(|(lo, hi)| (lo, hi.min(final_seq)))
                .collect();
            covered(&mut missing)
        })
        .sum()
}

/// Every (sender, receiver) pair of every meeting: accepted against received.
fn signal_checks(g: &Global, clients: &[ClientOutcome], counts: &Counts) -> BurstSignals {
    let plan = &g.plan;
    let mut out = BurstSignals {
        retried: counts.signals_retried,
        failed: counts.signals_failed,
        ..BurstSignals::default()
    };
    for (m, meeting) in plan.meetings.iter().enumerate() {
        for a in 0..plan.participants {
            for b in (0..plan.participants).filter(|&b| b != a) {
                let sent = g.signal_sent[plan.pair(m, a, b)].load(Ordering::Relaxed);
                let (from, to) = (meeting.host + a, meeting.host + b);
                let check = clients[to]
                    .meeting
                    .as_ref()
                    .and_then(|seat| seat.inbox.from.iter().find(|(s, _)| *s == from))
                    .map(|(_, c)| *c)
                    .unwrap_or_default();
                out.sent += sent;
                out.received += check.received;
                out.lost += sent.saturating_sub(check.received);
                out.duplicated += check.duplicates;
                out.skipped += check.skipped;
            }
            let abandoned: u64 = clients[meeting.host + a]
                .meeting
                .as_ref()
                .map_or(0, |seat| seat.abandoned.iter().map(|(_, n)| n).sum());
            out.abandoned += abandoned;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::plan::{Plan, Shape};
    use super::super::room::RoomCheck;
    use super::super::settings::Settings;
    use super::super::signals::Inbox;
    use super::super::state::SeatOutcome;
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::client::Target;
    use clap::Parser;
    use std::time::Instant;

    /// Six clients of two tenants (4 + 2), rooms of 2, one meeting of 2 in tenant 0.
    fn global() -> Global {
        let argv = [
            "rushhour-burst",
            "burst",
            "--clients",
            "6",
            "--tenants",
            "2",
            "--tenant-skew",
            "1",
        ];
        let Command::Burst(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not burst")
        };
        let plan = Plan::new(&Shape {
            clients: 6,
            tenants: 2,
            skew: 1.0,
            tenant_prefix: "t".into(),
            room_size: 2,
            meetings: 1,
            participants: 2,
            run_tag: "r".into(),
            seed: 1,
        })
        .unwrap();
        let target = Target::parse("ws://127.0.0.1:9/ws").unwrap();
        Global::new(
            Settings::from_args(&args).unwrap(),
            plan,
            target,
            Vec::new(),
            "r".into(),
            Instant::now(),
        )
    }

    fn member(index: usize, seqs: &[u64]) -> ClientOutcome {
        let mut room = RoomCheck::default();
        room.connecting();
        room.subscribed(0);
        for &s in seqs {
            room.observe(s);
        }
        ClientOutcome {
            index,
            served_at_us: Some(1_000_000 * (6 - index as u64)),
            connected: true,
            refusals: 1,
            room,
            unanswered: 0,
            meeting: None,
        }
    }

    #[test]
    fn each_lost_message_counts_once_and_signals_pair_up() {
        let g = global();
        assert_eq!(g.plan.tenants[0].clients, 4);
        assert_eq!(g.plan.rooms.len(), 3);
        let host = g.plan.meetings[0].host;
        // Room 0: 5 acked; both members miss 3, one also misses 5. Room 1: clean.
        // Room 2: 2 acked; one member repeats a seq, the other was never served.
        g.room_final[0].store(5, Ordering::Relaxed);
        g.room_final[1].store(1, Ordering::Relaxed);
        g.room_final[2].store(2, Ordering::Relaxed);
        let mut clients = vec![
            member(0, &[1, 2, 4, 5]),
            member(1, &[1, 2, 4]),
            member(2, &[1]),
            member(3, &[1]),
            member(4, &[1, 2, 2]),
            ClientOutcome {
                served_at_us: None,
                connected: false,
                room: RoomCheck::default(),
                ..member(5, &[])
            },
        ];
        // The host's 3 accepted signals all arrived; the other's 2, only one did.
        g.signal_sent[g.plan.pair(0, 0, 1)].store(3, Ordering::Relaxed);
        g.signal_sent[g.plan.pair(0, 1, 0)].store(2, Ordering::Relaxed);
        let mut to_guest = Inbox::default();
        (0..3).for_each(|n| to_guest.observe(host, n));
        let mut to_host = Inbox::default();
        to_host.observe(host + 1, 0);
        to_host.observe(host + 1, 0);
        clients[host].meeting = Some(SeatOutcome {
            index: 0,
            joined: true,
            inbox: to_host,
            abandoned: vec![],
        });
        clients[host + 1].meeting = Some(SeatOutcome {
            index: 0,
            joined: true,
            inbox: to_guest,
            abandoned: vec![],
        });
        clients.reverse();
        let m = merge(&g, Counts::default(), clients);
        assert_eq!(
            (m.chat.lost, m.chat.duplicated, m.chat.out_of_order),
            (2, 1, 2)
        );
        assert_eq!(
            (
                m.signals.sent,
                m.signals.received,
                m.signals.lost,
                m.signals.duplicated
            ),
            (5, 4, 1, 1)
        );
        assert_eq!(
            (
                m.sessions.served,
                m.sessions.failed,
                m.sessions.all_served_s
            ),
            (5, 1, None)
        );
        assert_eq!(m.tenants[0].served_at_s, [3.0, 4.0, 5.0, 6.0], "sorted");
        assert_eq!((m.tenants[1].served, m.tenants[1].refused), (1, 2));
        assert_eq!(m.meetings.failed, 0);
    }
}
