//! A hash index from user id to member slot: the O(1) lookup behind every cursor move.
//!
//! A sorted list answers "who is `bob`" with a binary search of ~log2(N) string
//! comparisons, each a dependent load and an unpredictable branch: a few hundred
//! nanoseconds at 10,000 members, most of a cursor move. This table answers it with one
//! hash, about two adjacent slot reads and one string comparison.
//!
//! It is open addressing with linear probing over `u32` slots: a member's slot number in
//! the low [`ID_BITS`] bits and a tag (5 more bits of its hash) in the high bits, so that
//! a probe past another member's slot rarely touches that member's string. Kept 60% to
//! 80% full (the table size need not be a power of two), it costs 5 to 6.7 bytes per
//! member; a `HashMap<Arc<str>, u32>`
//! would cost 28 to 56. Deletion shifts the following entries back (no tombstones), so
//! lookups never slow down with churn.
//!
//! The table does not hash: callers pass each key's hash, and a way to hash an indexed
//! slot again when entries move, so tests can force collisions.

/// Bits of a table slot that hold the member's slot number; the rest hold a hash tag.
const ID_BITS: u32 = 27;

/// Mask of the slot number within a table slot.
const ID_MASK: u32 = (1 << ID_BITS) - 1;

/// An empty table slot (its slot number, `ID_MASK`, is never handed out).
const EMPTY: u32 = u32::MAX;

/// The highest member slot number: 2^27 - 2, far above any room's membership.
pub(super) const MAX_ID: u32 = ID_MASK - 1;

/// Table size for `n` entries after a resize: 60% full, so that it grows again (at 80%)
/// after a third more members, and shrinks (below 20%) after most of them left.
fn capacity_for(n: usize) -> usize {
    (n * 5 / 3).max(4)
}

/// The user-id index of one room.
#[derive(Debug, Default)]
pub(super) struct UserIndex {
    /// `tag | id`, or [`EMPTY`].
    slots: Vec<u32>,
    /// Occupied slots.
    len: usize,
}

impl UserIndex {
    /// The table position of the entry hashed to `hash` for which `is(id)` holds.
    pub(super) fn find(&self, hash: u64, is: impl Fn(u32) -> bool) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let tag = tag(hash);
        let mut at = self.home(hash);
        loop {
            let slot = self.slots[at];
            if slot == EMPTY {
                return None;
            }
            if slot & !ID_MASK == tag && is(slot & ID_MASK) {
                return Some(at);
            }
            at = self.next(at);
        }
    }

    /// The member slot number at table position `at` (from [`Self::find`]).
    pub(super) fn id(&self, at: usize) -> u32 {
        self.slots[at] & ID_MASK
    }

    /// Indexes `id` under `hash`; it must not be indexed yet. `rehash(id)` gives the hash
    /// of an indexed slot number, for growing.
    ///
    /// # Panics
    /// If `id > MAX_ID`.
    pub(super) fn insert(&mut self, hash: u64, id: u32, rehash: impl Fn(u32) -> u64) {
        assert!(id <= MAX_ID, "member slot {id} out of range");
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.resize(capacity_for(self.len + 1), &rehash);
        }
        self.place(hash, id);
        self.len += 1;
    }

    /// Removes the entry at table position `at` (from [`Self::find`]). `rehash` as for
    /// [`Self::insert`].
    pub(super) fn remove(&mut self, at: usize, rehash: impl Fn(u32) -> u64) {
        // Backward shift: move up each later entry of the probe run whose home is at or
        // before the hole, so that every entry stays reachable from its home.
        let n = self.slots.len();
        let mut hole = at;
        let mut j = at;
        loop {
            j = self.next(j);
            let slot = self.slots[j];
            if slot == EMPTY {
                break;
            }
            let home = self.home(rehash(slot & ID_MASK));
            if (j + n - home) % n >= (j + n - hole) % n {
                self.slots[hole] = slot;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        if self.len * 5 < self.slots.len() && self.slots.len() > capacity_for(0) {
            self.resize(capacity_for(self.len), &rehash);
        }
    }

    /// Rebuilds the table with `capacity` slots.
    fn resize(&mut self, capacity: usize, rehash: impl Fn(u32) -> u64) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; capacity]);
        for slot in old.into_iter().filter(|&s| s != EMPTY) {
            self.place(rehash(slot & ID_MASK), slot & ID_MASK);
        }
    }

    fn place(&mut self, hash: u64, id: u32) {
        let mut at = self.home(hash);
        while self.slots[at] != EMPTY {
            at = self.next(at);
        }
        self.slots[at] = tag(hash) | id;
    }

    /// Where a probe for `hash` starts: the hash scaled to the table (no power-of-two
    /// size needed, so growth can be by a third).
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.slots.len() as u128) >> 64) as usize
    }

    fn next(&self, at: usize) -> usize {
        if at + 1 == self.slots.len() {
            0
        } else {
            at + 1
        }
    }
}

/// A hash's tag: bits the home position barely depends on (it uses the high bits).
fn tag(hash: u64) -> u32 {
    (hash as u32) & !ID_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inserts and removes ids 0..n under `hash(id)`, checking lookups all the way.
    fn churn(n: u32, hash: impl Fn(u32) -> u64 + Copy) {
        let mut index = UserIndex::default();
        let find = |index: &UserIndex, id: u32| index.find(hash(id), |x| x == id);
        for id in 0..n {
            assert_eq!(find(&index, id), None);
            index.insert(hash(id), id, hash);
            assert!((0..=id).all(|k| find(&index, k).map(|at| index.id(at)) == Some(k)));
        }
        assert!(index.len * 5 <= index.slots.len() * 4);
        // Remove in an order unrelated to insertion.
        let mut left: Vec<u32> = (0..n).collect();
        while let Some(id) = left.pop() {
            let at = find(&index, id).unwrap();
            index.remove(at, hash);
            assert_eq!(find(&index, id), None);
            assert!(left.iter().all(|&k| find(&index, k).is_some()));
            let third = left.len() / 3;
            left.rotate_left(third);
        }
        assert_eq!(index.len, 0);
        assert_eq!(index.slots.len(), capacity_for(0));
    }

    #[test]
    fn spread_hashes() {
        churn(300, |id| u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }

    #[test]
    fn colliding_homes_and_tags() {
        // Four homes only, all tags equal: long runs that wrap around the table.
        churn(60, |id| u64::from(id % 4) << 62);
        churn(60, |id| u64::MAX - u64::from(id % 3));
    }
}
