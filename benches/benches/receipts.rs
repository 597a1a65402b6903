//! Read receipts in the core: `counts` for a seq as the room grows (O(log N)), cursor
//! moves per second, and the block sizes behind both. Memory per member is measured by
//! `core/tests/receipts_memory.rs`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rushhour_core::receipts::cursors::MEMBER_BLOCK;
use rushhour_core::receipts::order::ORDER_BLOCK;
use rushhour_core::receipts::RoomCursors;

/// Moves generated (untimed) between two timed runs, so the move list stays in cache.
const CHUNK: usize = 1 << 14;

/// A deterministic stream of pseudo-random numbers (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A room of `members` users, and a stream of random cursor moves over it: one new
/// message per move, and each move takes a random member's cursors to random points of
/// what it has not yet acknowledged or read.
struct Traffic {
    room: RoomCursors,
    users: Vec<Arc<str>>,
    /// The room's cursors, mirrored, so that moves are made without asking the room.
    cursors: Vec<(u64, u64)>,
    last_seq: u64,
    rng: Rng,
}

impl Traffic {
    fn new(members: usize, order_block: usize) -> Self {
        let mut rng = Rng(members as u64);
        let mut users: Vec<Arc<str>> = (0..members)
            .map(|i| Arc::from(format!("user-{i:07}")))
            .collect();
        for i in (1..users.len()).rev() {
            users.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut room = RoomCursors::with_blocks(MEMBER_BLOCK, order_block);
        for user in &users {
            room.join(user);
        }
        let mut traffic = Traffic {
            room,
            cursors: vec![(0, 0); members],
            users,
            last_seq: 0,
            rng,
        };
        // Spread the cursors before measuring anything.
        let moves = traffic.moves(2 * members);
        traffic.apply(&moves);
        traffic
    }

    fn moves(&mut self, n: usize) -> Vec<(u32, u64, u64)> {
        (0..n)
            .map(|_| {
                self.last_seq += 1;
                let at = self.rng.below(self.users.len() as u64) as usize;
                let (d, r) = self.cursors[at];
                let r = r + self.rng.below(self.last_seq - r + 1);
                let d = d.max(r) + self.rng.below(self.last_seq - d.max(r) + 1);
                self.cursors[at] = (d, r);
                (at as u32, d, r)
            })
            .collect()
    }

    fn apply(&mut self, moves: &[(u32, u64, u64)]) {
        for &(at, d, r) in moves {
            let moved = self.room.advance(&self.users[at as usize], d, r);
            debug_assert!(moved.is_some());
            black_box(moved);
        }
    }

    /// Times `iters` moves, generated outside the timed sections.
    fn time_moves(&mut self, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters as usize;
        while left > 0 {
            let moves = self.moves(left.min(CHUNK));
            let start = Instant::now();
            self.apply(&moves);
            total += start.elapsed();
            left -= moves.len();
        }
        total
    }
}

fn counts(c: &mut Criterion) {
    let mut group = c.benchmark_group("receipts/counts");
    for n in [1_000usize, 10_000, 100_000] {
        let mut traffic = Traffic::new(n, ORDER_BLOCK);
        let seqs: Vec<u64> = (0..4096)
            .map(|_| traffic.rng.below(traffic.last_seq + 1))
            .collect();
        let mut i = 0;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) % seqs.len();
                traffic.room.counts(black_box(seqs[i]))
            });
        });
    }
    group.finish();
}

fn advance(c: &mut Criterion) {
    let mut group = c.benchmark_group("receipts/advance");
    group.throughput(Throughput::Elements(1));
    for n in [1_000usize, 10_000, 100_000] {
        let mut traffic = Traffic::new(n, ORDER_BLOCK);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| traffic.time_moves(iters));
        });
    }
    group.finish();
}

/// The order-set block size: smaller blocks mean shorter in-block searches and
/// `memmove`s, but more blocks, so more index rebuilds and more spare capacity (memory:
/// see `core/src/receipts/order.rs` for the trade-off).
fn block_size(c: &mut Criterion) {
    let mut group = c.benchmark_group("receipts/advance_10000_by_order_block");
    group.throughput(Throughput::Elements(1));
    for block in [64usize, 128, 256, 512, 1024] {
        let mut traffic = Traffic::new(10_000, block);
        group.bench_with_input(BenchmarkId::from_parameter(block), &block, |b, _| {
            b.iter_custom(|iters| traffic.time_moves(iters));
        });
    }
    group.finish();
}

/// One page of 100 readers from the start of a 10,000-member room, about half of whom
/// have read the seq.
fn read_by(c: &mut Criterion) {
    let traffic = Traffic::new(10_000, ORDER_BLOCK);
    let (members, _, _) = traffic.room.counts(0);
    let seq = (0..traffic.last_seq)
        .find(|&s| traffic.room.counts(s).2 <= members / 2)
        .unwrap_or(0);
    c.bench_function("receipts/read_by_page_100_of_10000", |b| {
        b.iter(|| traffic.room.read_by(black_box(seq), None, 100))
    });
}

criterion_group!(benches, counts, advance, block_size, read_by);
criterion_main!(benches);
