//! What happened in each second of the run, for the report's `timeline`: counts per
//! second, gauges as per-second changes (so that threads' timelines add up), and
//! per-second latency histograms allocated only for seconds that have values.

use serde::Serialize;

use crate::stats::Histogram;

/// Seconds tracked at most; later events land in the last second (runs are bounded
/// by their flags long before this).
const MAX_SECONDS: usize = 24 * 3600;

/// One second's events.
#[derive(Clone, Debug, Default)]
pub struct Second {
    /// Clients served for the first time.
    pub served: u64,
    /// Refusals (an `overloaded` hello, a refused or reset connect…).
    pub refused: u64,
    /// Connection attempts after a client's first.
    pub retries: u64,
    /// Sessions opened minus sessions ended.
    pub connected_delta: i64,
    /// Chat messages sent (first tries).
    pub sent: u64,
    /// Messages received by members (live and replayed, each once).
    pub deliveries: u64,
    /// Stamp→read latency of the live deliveries (µs).
    pub delivery: Option<Box<Histogram>>,
    /// `meeting.join` latency (µs), from the first try.
    pub join: Option<Box<Histogram>>,
}

impl Second {
    /// Records a delivery latency.
    pub fn record_delivery(&mut self, us: u64) {
        self.delivery.get_or_insert_with(Box::default).record(us);
    }

    /// Records a join latency.
    pub fn record_join(&mut self, us: u64) {
        self.join.get_or_insert_with(Box::default).record(us);
    }

    fn merge(&mut self, other: &Second) {
        self.served += other.served;
        self.refused += other.refused;
        self.retries += other.retries;
        self.connected_delta += other.connected_delta;
        self.sent += other.sent;
        self.deliveries += other.deliveries;
        merge_hist(&mut self.delivery, other.delivery.as_deref());
        merge_hist(&mut self.join, other.join.as_deref());
    }
}

fn merge_hist(into: &mut Option<Box<Histogram>>, from: Option<&Histogram>) {
    if let Some(from) = from {
        into.get_or_insert_with(Box::default).merge(from);
    }
}

/// Seconds since the run's start, each with its events.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    seconds: Vec<Second>,
}

/// One entry of the report's `timeline`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// Seconds from the start (this entry covers `[t, t+1)`).
    pub t: u64,
    /// Clients served so far.
    pub served: u64,
    /// Refusals in this second.
    pub refused: u64,
    /// Retries in this second.
    pub retries: u64,
    /// Sessions open at the end of this second.
    pub connected: i64,
    /// Chat messages sent in this second.
    pub sent: u64,
    /// Deliveries in this second.
    pub deliveries: u64,
    /// 99th percentile of this second's live delivery latency (µs), if any.
    pub delivery_p99_us: Option<u64>,
    /// 99th percentile of the join latency of joins answered in this second.
    pub join_p99_us: Option<u64>,
    /// CPU seconds the generator used in this second (sampled by the monitor).
    pub generator_cpu_s: Option<f64>,
    /// CPU seconds `--server-pid` used in this second.
    pub server_cpu_s: Option<f64>,
    /// `--server-pid`'s RSS at the end of this second, in KiB.
    pub server_rss_kib: Option<u64>,
    /// CPU seconds the whole machine was busy in this second (all cores, every
    /// process): beyond the generator and the server, other load skews a run.
    pub machine_cpu_s: Option<f64>,
}

/// What the monitor sampled at the end of one second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// The second.
    pub t: u64,
    /// CPU seconds of the generator in it.
    pub generator_cpu_s: f64,
    /// CPU seconds of the server in it, when known.
    pub server_cpu_s: Option<f64>,
    /// The server's RSS at its end, in KiB.
    pub server_rss_kib: Option<u64>,
    /// CPU seconds the machine was busy in it.
    pub machine_cpu_s: Option<f64>,
}

impl Timeline {
    /// The events of second `t` (clamped to the last tracked second).
    pub fn second(&mut self, t: u64) -> &mut Second {
        let t = (t as usize).min(MAX_SECONDS - 1);
        if self.seconds.len() <= t {
            self.seconds.resize_with(t + 1, Second::default);
        }
        &mut self.seconds[t]
    }

    /// Adds another thread's timeline.
    pub fn merge(&mut self, other: &Timeline) {
        if let Some(last) = other.seconds.len().checked_sub(1) {
            self.second(last as u64);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.merge(theirs);
        }
    }

    /// The report's entries, one per second from 0 to the last with an event.
    pub fn entries(&self) -> Vec<TimelineEntry> {
        let mut served = 0;
        let mut connected = 0;
        let p99 = |h: &Option<Box<Histogram>>| h.as_ref().map(|h| h.quantile(0.99));
        self.seconds
            .iter()
            .enumerate()
            .map(|(t, s)| {
                served += s.served;
                connected += s.connected_delta;
                TimelineEntry {
                    t: t as u64,
                    served,
                    refused: s.refused,
                    retries: s.retries,
                    connected,
                    sent: s.sent,
                    deliveries: s.deliveries,
                    delivery_p99_us: p99(&s.delivery),
                    join_p99_us: p99(&s.join),
                    generator_cpu_s: None,
                    server_cpu_s: None,
                    server_rss_kib: None,
                    machine_cpu_s: None,
                }
            })
            .collect()
    }

    /// The entries, with the monitor's samples filled in (seconds past the last event
    /// are added when sampled).
    pub fn entries_with(&self, samples: &[Sample]) -> Vec<TimelineEntry> {
        let mut entries = self.entries();
        for sample in samples {
            let t = sample.t as usize;
            while entries.len() <= t {
                let last = entries.last().cloned();
                entries.push(TimelineEntry {
                    t: entries.len() as u64,
                    served: last.as_ref().map_or(0, |e| e.served),
                    refused: 0,
                    retries: 0,
                    connected: last.as_ref().map_or(0, |e| e.connected),
                    sent: 0,
                    deliveries: 0,
                    delivery_p99_us: None,
                    join_p99_us: None,
                    generator_cpu_s: None,
                    server_cpu_s: None,
                    server_rss_kib: None,
                    machine_cpu_s: None,
                });
            }
            let e = &mut entries[t];
            e.generator_cpu_s = Some(sample.generator_cpu_s);
            e.server_cpu_s = sample.server_cpu_s;
            e.server_rss_kib = sample.server_rss_kib;
            e.machine_cpu_s = sample.machine_cpu_s;
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_accumulate_and_gauges_integrate() {
        let mut a = Timeline::default();
        a.second(0).served += 2;
        a.second(0).connected_delta += 2;
        a.second(2).refused += 3;
        a.second(2).connected_delta -= 1;
        a.second(2).record_delivery(100);
        let e = a.entries();
        assert_eq!(e.len(), 3);
        assert_eq!((e[0].served, e[0].connected), (2, 2));
        assert_eq!((e[1].served, e[1].connected, e[1].refused), (2, 2, 0));
        assert_eq!((e[2].connected, e[2].refused), (1, 3));
        assert_eq!(e[1].delivery_p99_us, None);
        assert_eq!(e[2].delivery_p99_us, Some(100));
        assert_eq!(e[2].join_p99_us, None);
    }

    #[test]
    fn merging_threads_adds_second_by_second() {
        let mut a = Timeline::default();
        a.second(1).served = 1;
        a.second(1).record_join(100);
        let mut b = Timeline::default();
        b.second(0).served = 5;
        b.second(3).deliveries = 7;
        b.second(3).record_delivery(10);
        b.second(1).record_join(1000);
        a.merge(&b);
        let e = a.entries();
        assert_eq!(e.len(), 4);
        assert_eq!(e.iter().map(|e| e.served).collect::<Vec<_>>(), [5, 6, 6, 6]);
        assert_eq!(e[3].deliveries, 7);
        assert_eq!(e[1].join_p99_us, Some(1000));
        // Merging an empty timeline changes nothing.
        let before = a.entries();
        a.merge(&Timeline::default());
        assert_eq!(a.entries(), before);
        let sampled = a.entries_with(&[
            Sample {
                t: 1,
                generator_cpu_s: 0.25,
                server_cpu_s: Some(0.5),
                server_rss_kib: Some(9),
                machine_cpu_s: Some(1.5),
            },
            Sample {
                t: 5,
                generator_cpu_s: 0.1,
                ..Sample::default()
            },
        ]);
        assert_eq!(sampled.len(), 6);
        assert_eq!(
            (sampled[1].generator_cpu_s, sampled[1].server_rss_kib),
            (Some(0.25), Some(9))
        );
        assert_eq!(
            (sampled[5].served, sampled[5].deliveries),
            (6, 0),
            "carried over"
        );
        assert_eq!(sampled[2].generator_cpu_s, None);
        // Far-off seconds are clamped, not allocated.
        a.second(u64::MAX).served += 1;
        assert_eq!(a.entries().len(), MAX_SECONDS);
    }
}
