//! `RoomCursors` against a brute-force model: random operation sequences (proptest), and
//! one room at scale.

use std::collections::HashMap;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;

use super::cursors::MEMBER_BLOCK;
use super::order::ORDER_BLOCK;
use super::RoomCursors;

/// The obvious implementation: every query is a scan.
#[derive(Default)]
struct Model(HashMap<Arc<str>, (u64, u64)>);

impl Model {
    fn advance(&mut self, user: &str, delivered: u64, read: u64) -> Option<((u64, u64), bool)> {
        let cursors = self.0.get_mut(user)?;
        let old = *cursors;
        let read = old.1.max(read);
        *cursors = (old.0.max(delivered).max(read), read);
        Some((*cursors, *cursors != old))
    }

    fn counts(&self, seq: u64) -> (usize, usize, usize) {
        let delivered = self.0.values().filter(|c| c.0 >= seq).count();
        let read = self.0.values().filter(|c| c.1 >= seq).count();
        (self.0.len(), delivered, read)
    }

    /// Every matching user, sorted.
    fn matching(&self, read_by: bool, seq: u64) -> Vec<Arc<str>> {
        let mut users: Vec<_> = (self.0.iter())
            .filter(|(_, c)| (c.1 >= seq) == read_by)
            .map(|(u, _)| u.clone())
            .collect();
        users.sort();
        users
    }

    /// One page, with `next` as `RoomCursors` defines it: set only if a match follows.
    fn page(&self, read_by: bool, seq: u64, after: Option<&str>, limit: usize) -> Page {
        let rest: Vec<_> = (self.matching(read_by, seq).into_iter())
            .filter(|u| after.is_none_or(|a| &**u > a))
            .collect();
        let users = rest[..limit.min(rest.len())].to_vec();
        let next = (rest.len() > limit && limit > 0).then(|| users[limit - 1].clone());
        (users, next)
    }
}

type Page = (Vec<Arc<str>>, Option<Arc<str>>);

fn page(room: &RoomCursors, read_by: bool, seq: u64, after: Option<&str>, limit: usize) -> Page {
    if read_by {
        room.read_by(seq, after, limit)
    } else {
        room.unread_by(seq, after, limit)
    }
}

/// Every page from the start, following `next`.
fn all_pages(room: &RoomCursors, read_by: bool, seq: u64, limit: usize) -> Vec<Arc<str>> {
    let mut users = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = page(room, read_by, seq, after.as_deref(), limit);
        assert!(page.len() <= limit);
        users.extend(page);
        match next {
            Some(next) => after = Some(next),
            None => return users,
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Join(usize),
    Leave(usize),
    Advance(usize, u64, u64),
    Counts(u64),
    Page {
        read_by: bool,
        seq: u64,
        after: Option<usize>,
        limit: usize,
    },
}

/// Users drawn from a small pool, so joins, leaves and moves hit the same members.
const POOL: usize = 48;

/// Seqs from a small range, so cursors collide and `counts` sees many duplicates.
const SEQS: u64 = 40;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..POOL).prop_map(Op::Join),
        1 => (0..POOL).prop_map(Op::Leave),
        6 => (0..POOL, 0..SEQS, 0..SEQS).prop_map(|(u, d, r)| Op::Advance(u, d, r)),
        2 => (0..SEQS + 2).prop_map(Op::Counts),
        2 => (any::<bool>(), 0..SEQS + 2, proptest::option::of(0..POOL), 0usize..6)
            .prop_map(|(read_by, seq, after, limit)| Op::Page { read_by, seq, after, limit }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_model(ops in vec(op(), 1..400), blocks in 4usize..9) {
        let names: Vec<Arc<str>> = (0..POOL).map(|i| Arc::from(format!("user{i:02}"))).collect();
        let mut room = RoomCursors::with_blocks(blocks, blocks);
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Join(u) => {
                    let added = !model.0.contains_key(&names[u]);
                    model.0.entry(names[u].clone()).or_insert((0, 0));
                    prop_assert_eq!(room.join(&names[u]), added);
                }
                Op::Leave(u) => {
                    prop_assert_eq!(room.leave(&names[u]), model.0.remove(&names[u]).is_some());
                }
                Op::Advance(u, d, r) => {
                    prop_assert_eq!(room.advance(&names[u], d, r), model.advance(&names[u], d, r));
                    prop_assert_eq!(room.get(&names[u]), model.0.get(&names[u]).copied());
                }
                Op::Counts(seq) => prop_assert_eq!(room.counts(seq), model.counts(seq)),
                Op::Page { read_by, seq, after, limit } => {
                    let after = after.map(|u| &*names[u]);
                    prop_assert_eq!(
                        page(&room, read_by, seq, after, limit),
                        model.page(read_by, seq, after, limit)
                    );
                }
            }
            prop_assert_eq!(room.members(), model.0.len());
        }
        room.assert_invariants();
        let mut all: Vec<_> = model.0.iter().map(|(u, c)| (u.clone(), c.0, c.1)).collect();
        all.sort();
        prop_assert!(room.iter().map(|(u, d, r)| (u.clone(), d, r)).eq(all));
        for seq in 0..SEQS + 1 {
            prop_assert_eq!(all_pages(&room, true, seq, 3), model.matching(true, seq));
            prop_assert_eq!(all_pages(&room, false, seq, 3), model.matching(false, seq));
        }
    }
}

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

/// 10,000 members, 10,000 random cursor moves, then counts and pages against brute
/// force, with the production block sizes and with tiny ones.
#[test]
fn correct_at_scale() {
    const MEMBERS: u64 = 10_000;
    const LAST_SEQ: u64 = 5_000;
    for (member_block, order_block) in [(MEMBER_BLOCK, ORDER_BLOCK), (8, 8)] {
        let mut next = rng(member_block as u64);
        let mut room = RoomCursors::with_blocks(member_block, order_block);
        let mut model = Model::default();
        // Joined in a random order, so inserts land all over the member list.
        for _ in 0..MEMBERS {
            let user: Arc<str> = format!("user{:08}", next() % 1_000_000).into();
            room.join(&user);
            model.0.insert(user, (0, 0));
        }
        let users: Vec<Arc<str>> = model.0.keys().cloned().collect();
        for _ in 0..10_000 {
            let user = &users[next() as usize % users.len()];
            let (delivered, read) = (next() % LAST_SEQ, next() % LAST_SEQ);
            assert_eq!(
                room.advance(user, delivered, read),
                model.advance(user, delivered, read)
            );
        }
        room.assert_invariants();
        for _ in 0..100 {
            let seq = next() % (LAST_SEQ + 1);
            assert_eq!(room.counts(seq), model.counts(seq));
        }
        for seq in [0, 1, LAST_SEQ / 2, LAST_SEQ - 10, LAST_SEQ] {
            assert_eq!(all_pages(&room, true, seq, 100), model.matching(true, seq));
            assert_eq!(
                all_pages(&room, false, seq, 1000),
                model.matching(false, seq)
            );
        }
    }
}
