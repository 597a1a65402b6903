//! Start-up: recovering a log of 1,000,000 messages of 128-byte bodies in 10 rooms (the
//! scan, the per-room index, the window of encoded frames, the dedupe table).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rushhour_core::frames;
use rushhour_core::ids::{RoomId, Seq};
use rushhour_core::log::{FsyncPolicy, Log, LogOptions};
use rushhour_core::store::{MessageStore, StoredMessage};

const ROOMS: u32 = 10;
const PER_ROOM: u64 = 100_000;

fn options() -> LogOptions {
    LogOptions {
        fsync: FsyncPolicy::Never,
        ..LogOptions::default()
    }
}

/// Writes the log once, outside the measurement.
fn fill(dir: &std::path::Path) {
    let mut log = Log::open(dir, options(), 0).expect("log opens");
    let (tenant, body) = (
        Arc::<str>::from("acme"),
        format!("{{\"t\":\"{}\"}}", "x".repeat(118)),
    );
    let names: Vec<Arc<str>> = (0..ROOMS).map(|r| format!("room-{r}").into()).collect();
    let mut lsn = 0;
    for seq in 1..=PER_ROOM {
        for (r, name) in names.iter().enumerate() {
            let cid = format!("c{seq}");
            let msg = StoredMessage {
                room: RoomId(r as u32),
                seq: Seq(seq),
                ts: seq,
                from: "alice".into(),
                cid: cid.as_str().into(),
                frame: frames::msg(name, Seq(seq), "alice", &cid, seq, &body),
            };
            lsn = log.append(msg, &tenant, name, &body).expect("append");
        }
    }
    log.durability()
        .wait(lsn, Duration::from_secs(60))
        .expect("durable");
}

fn recovery(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    fill(dir.path());
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.throughput(Throughput::Elements(u64::from(ROOMS) * PER_ROOM));
    group.bench_function("open_1m_messages", |b| {
        b.iter(|| Log::open(dir.path(), options(), 0).expect("log opens"));
    });
    group.finish();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
