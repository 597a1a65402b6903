//! Fan-out cost in the core: one `send` to a room of N live subscribers — parse, store,
//! encode once, N queue pushes. Queues are drained outside the timed section.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rushhour_core::broker::{Broker, Now};
use rushhour_core::codec::{encode_client_frame, Opcode};
use rushhour_core::fanout::Outbox;
use rushhour_core::outbound::Outbound;
use rushhour_core::{ConnKind, Limits, MemoryStore};

/// Publishes between two drains of the queues.
const DRAIN_EVERY: u64 = 64;

fn setup(subscribers: usize) -> (Broker, rushhour_core::ConnId, Vec<Arc<Outbound>>) {
    let limits = Limits {
        send_rate_per_s: 1e12,
        send_burst: 1e12,
        memory_retention_per_room: 1024,
        ..Limits::default()
    };
    let mut broker = Broker::new(limits, Box::new(MemoryStore::new(1024)));
    let now = Now::default();
    let mut outs = Vec::new();
    for i in 0..subscribers {
        let out = broker.attach(None, ConnKind::Session, now);
        broker
            .open_session(out.conn, "acme", &format!("u{i}"), None, now)
            .unwrap();
        let sub = encode_client_frame(
            Opcode::Text,
            br#"{"op":"subscribe","room":"r"}"#,
            [1, 2, 3, 4],
        );
        broker.feed(out.conn, &sub, now, &mut Outbox::new(0, 30_000));
        outs.push(out);
    }
    let publisher = broker.attach(None, ConnKind::Session, now);
    broker
        .open_session(publisher.conn, "acme", "pub", None, now)
        .unwrap();
    outs.push(publisher.clone());
    (broker, publisher.conn, outs)
}

fn drain(outs: &[Arc<Outbound>]) {
    for out in outs {
        let mut q = out.lock();
        let n = q.bytes();
        q.advance(n);
    }
}

fn fanout(c: &mut Criterion) {
    let body = format!(r#"{{"t":"{}"}}"#, "x".repeat(120));
    let mut group = c.benchmark_group("send_fanout");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    for n in [1usize, 100, 1_000, 10_000] {
        let (mut broker, publisher, outs) = setup(n);
        let mut i = 0u64;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let batch = DRAIN_EVERY.min(iters - done);
                    let frames: Vec<Vec<u8>> = (0..batch)
                        .map(|k| {
                            let send = format!(
                                r#"{{"op":"send","room":"r","cid":"c{}","body":{body}}}"#,
                                i + k
                            );
                            encode_client_frame(Opcode::Text, send.as_bytes(), [5, 6, 7, 8])
                        })
                        .collect();
                    let start = Instant::now();
                    for f in &frames {
                        let mut ob = Outbox::new(0, 30_000);
                        broker.feed(publisher, f, Now::default(), &mut ob);
                    }
                    total += start.elapsed();
                    drain(&outs);
                    i += batch;
                    done += batch;
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
