//! Memory per (member, room) of `RoomCursors`, counted by a global allocator that tracks
//! live heap bytes. Its own test binary, so no other test allocates meanwhile.
//!
//! Run with `--nocapture` to see the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rushhour_core::receipts::RoomCursors;

/// The per-(member, room) budget: user key, both cursors, both order-set entries and
/// every index and spare capacity around them.
const BUDGET: usize = 64;

/// Members in the measured room.
const MEMBERS: usize = 100_000;

/// Random cursor moves after the joins: three per member, enough to reshuffle the order
/// sets' blocks.
const MOVES: usize = 300_000;

/// Live heap bytes, as requested from the allocator (its own headers, about 8 bytes per
/// allocation, are left out: blocks are kilobytes, so they add under 1%).
static LIVE: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A deterministic stream of pseudo-random numbers (splitmix64).
fn rng(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Bytes per member of a room built by joining `users` in order, then after `moves`
/// random cursor moves.
fn bytes_per_member(users: &[Arc<str>], moves: usize) -> (f64, f64) {
    let mut next = rng(7);
    let before = LIVE.load(Ordering::Relaxed);
    let mut room = RoomCursors::new();
    for user in users {
        room.join(user);
    }
    let joined = LIVE.load(Ordering::Relaxed) - before;
    let mut last = 0;
    for _ in 0..moves {
        // Messages keep arriving; each move takes a member to somewhere in what it missed.
        last += 1;
        let user = &users[next() as usize % users.len()];
        let (delivered, read) = room.get(user).unwrap();
        let delivered = delivered + next() % (last - delivered + 1);
        let read = read + next() % (last - read + 1);
        room.advance(user, delivered, read);
    }
    let moved = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(room.members(), users.len());
    drop(room);
    let n = users.len() as f64;
    (joined as f64 / n, moved as f64 / n)
}

#[test]
fn at_most_64_bytes_per_member() {
    let mut next = rng(1);
    let mut users: Vec<Arc<str>> = (0..MEMBERS)
        .map(|i| Arc::from(format!("user-{i:06}")))
        .collect();
    // The user ids' own allocations are shared with the sessions and the user's other
    // rooms, so they are made before counting starts; each is 16 + len bytes (+ allocator
    // rounding) once per user, however many rooms it is in.
    let sorted = bytes_per_member(&users, 0);
    for i in (1..users.len()).rev() {
        users.swap(i, next() as usize % (i + 1));
    }
    let (random, moved) = bytes_per_member(&users, MOVES);
    println!(
        "RoomCursors at {MEMBERS} members, bytes per member: joined in id order {:.1}, \
         in random order {random:.1}, after {MOVES} random moves {moved:.1}",
        sorted.0
    );
    for figure in [sorted.0, random, moved] {
        assert!(figure <= BUDGET as f64, "{figure:.1} bytes per member");
    }
    // Small rooms, for the record: each block and table starts small, but a room's
    // fixed parts weigh more per member (the `RoomCursors` value itself lives in the room
    // and is not counted here).
    for size in [2, 10, 100] {
        let before = LIVE.load(Ordering::Relaxed);
        let rooms: Vec<RoomCursors> = (0..1_000)
            .map(|r| {
                let mut room = RoomCursors::new();
                for user in &users[r..r + size] {
                    room.join(user);
                }
                room
            })
            .collect();
        let heap =
            LIVE.load(Ordering::Relaxed) - before - rooms.capacity() * size_of::<RoomCursors>();
        println!(
            "RoomCursors of {size} members: {:.1} heap bytes per member, plus {} inline",
            heap as f64 / (1_000 * size) as f64,
            size_of::<RoomCursors>()
        );
    }
}
