//! An order-statistic multiset of `u64`: how many values are at least `x`, in O(log N).
//!
//! Values live in blocks of sorted vectors (`blocks`). Two small per-block indexes make
//! rank queries logarithmic: `mins` (each block's first value, contiguous, searched
//! first so a query touches one block) and a Fenwick tree over block lengths (the number
//! of values before a block). An insert or removal is a `memmove` inside one block plus a
//! Fenwick update; the indexes are rebuilt, in O(N / block), only when block boundaries
//! move, that is once per about `block / 2` inserts or removals.
//!
//! Blocks split at 512 values. In the `receipts` bench, 128-value blocks make cursor
//! moves 10–20% faster at 10,000 members (shorter searches and `memmove`s), but their
//! spare capacity and per-block indexes cost memory under churn: after 300,000 random
//! moves over 100,000 members a room takes 64.6 bytes per member with 128-value blocks,
//! 62.0 with 256 and 60.7 with 512 (`core/tests/receipts_memory.rs`), against a budget
//! of 64.

use super::blocks::Blocks;

/// Values per block at which a block splits: the fastest size that keeps a room within
/// 64 bytes per member (see the module doc).
pub const ORDER_BLOCK: usize = 512;

/// A sorted multiset of `u64` with rank queries.
///
/// ### Invariants
/// - Blocks are sorted, and every value of a block is ≤ every value of the next.
/// - `mins[b]` is block `b`'s first value; `sizes` holds the block lengths.
#[derive(Debug)]
pub struct OrderSet {
    /// The values, in order.
    values: Blocks<u64>,
    /// First value of each block: the block search reads one contiguous array.
    mins: Vec<u64>,
    /// Block lengths, for the count of values before a block.
    sizes: Fenwick,
}

impl Default for OrderSet {
    fn default() -> Self {
        Self::new()
    }
}

impl OrderSet {
    /// An empty set with the default block size.
    pub fn new() -> Self {
        Self::with_block(ORDER_BLOCK)
    }

    /// An empty set whose blocks split at `block` values (small blocks exercise splits
    /// and merges in tests).
    ///
    /// # Panics
    /// If `block < 4`.
    pub fn with_block(block: usize) -> Self {
        OrderSet {
            values: Blocks::new(block),
            mins: Vec::new(),
            sizes: Fenwick::default(),
        }
    }

    /// How many values, duplicates included.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the set holds no value.
    pub fn is_empty(&self) -> bool {
        self.values.len() == 0
    }

    /// How many values are < `x`, in O(log N).
    pub fn count_lt(&self, x: u64) -> usize {
        // Blocks before `k` start below `x`; the last of them may straddle it.
        let k = self.mins.partition_point(|&m| m < x);
        if k == 0 {
            return 0;
        }
        self.sizes.prefix(k - 1) + self.values.blocks()[k - 1].partition_point(|&v| v < x)
    }

    /// How many values are ≥ `x`, in O(log N).
    pub fn count_ge(&self, x: u64) -> usize {
        self.len() - self.count_lt(x)
    }

    /// Adds one `value`.
    pub fn insert(&mut self, value: u64) {
        self.insert_into(self.target(value), value);
    }

    /// Removes one `value`; returns whether there was one.
    pub fn remove(&mut self, value: u64) -> bool {
        match self.find(value) {
            Some((b, i)) => {
                self.remove_at(b, i);
                true
            }
            None => false,
        }
    }

    /// Replaces one `old` with `new` (a cursor move); returns whether there was an `old`.
    ///
    /// When both fall in the same block (a short move) this is one `memmove` and no index
    /// update.
    pub fn replace(&mut self, old: u64, new: u64) -> bool {
        let Some((b, i)) = self.find(old) else {
            return false;
        };
        if old == new {
            return true;
        }
        let t = self.target(new);
        if t != b {
            if self.remove_at(b, i) {
                self.insert(new);
            } else {
                // Still the right block: removing `old` from another block cannot move
                // the last block that starts at or below `new`.
                self.insert_into(t, new);
            }
            return true;
        }
        let block = self.values.block_mut(b);
        if new > old {
            let j = block.partition_point(|&v| v <= new);
            block.copy_within(i + 1..j, i);
            block[j - 1] = new;
        } else {
            let j = block.partition_point(|&v| v <= new);
            block.copy_within(j..i, j + 1);
            block[j] = new;
        }
        self.mins[b] = block[0];
        true
    }

    /// Every value, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.values.iter().copied()
    }

    /// The block a new `value` goes into: the last one starting at or below it, so that
    /// it stays ≤ everything in the next block.
    fn target(&self, value: u64) -> usize {
        self.mins.partition_point(|&m| m <= value).saturating_sub(1)
    }

    /// The position of one `value`, if present: the last of its copies in the last block
    /// that can hold it, so that removing it moves the fewest values.
    fn find(&self, value: u64) -> Option<(usize, usize)> {
        // Later blocks start above `value`; earlier ones hold values ≤ this block's first,
        // so if one holds `value`, this block starts with it.
        let b = self.target(value);
        let block = self.values.blocks().get(b)?;
        let i = block.partition_point(|&v| v <= value).checked_sub(1)?;
        (block[i] == value).then_some((b, i))
    }

    /// Adds `value` to block `b`, which must be [`Self::target`]`(value)`.
    fn insert_into(&mut self, b: usize, value: u64) {
        let i = self.values.blocks().get(b).map_or(0, |block| {
            // After any equal values: the shortest `memmove`. A cursor moving to the
            // newest seq usually lands past the block's end, found without a search.
            match block.last() {
                Some(&last) if last <= value => block.len(),
                _ => block.partition_point(|&v| v <= value),
            }
        });
        if self.values.insert(b, i, value) {
            self.reindex();
        } else {
            self.sizes.add(b, 1);
            if i == 0 {
                self.mins[b] = value;
            }
        }
    }

    /// Removes the value at `(b, i)`; returns whether block boundaries moved.
    fn remove_at(&mut self, b: usize, i: usize) -> bool {
        if self.values.remove(b, i).1 {
            self.reindex();
            return true;
        }
        self.sizes.sub(b, 1);
        if i == 0 {
            self.mins[b] = self.values.blocks()[b][0];
        }
        false
    }

    /// Panics unless the invariants hold (tests only: O(N)).
    #[cfg(test)]
    pub(super) fn assert_invariants(&self) {
        self.values.assert_invariants();
        let blocks = self.values.blocks();
        assert!(self.iter().zip(self.iter().skip(1)).all(|(a, b)| a <= b));
        assert_eq!(self.mins, blocks.iter().map(|b| b[0]).collect::<Vec<_>>());
        for k in 0..=blocks.len() {
            let before: usize = blocks[..k].iter().map(Vec::len).sum();
            assert_eq!(self.sizes.prefix(k), before);
        }
    }

    /// Rebuilds both per-block indexes after block boundaries moved.
    fn reindex(&mut self) {
        let blocks = self.values.blocks();
        self.mins.clear();
        // Exact sizes: a small room has one block, and `extend` would reserve four.
        self.mins.reserve_exact(blocks.len());
        self.mins.extend(blocks.iter().map(|block| block[0]));
        self.sizes.rebuild(blocks.iter().map(Vec::len));
    }
}

/// A Fenwick (binary indexed) tree over block lengths: prefix sums and point updates in
/// O(log blocks).
#[derive(Debug, Default)]
struct Fenwick {
    /// `tree[i - 1]` sums the lengths of blocks `i - lowbit(i) .. i`. `u32`: a block is
    /// far smaller than 2^32, and a cache line holds 16 entries.
    tree: Vec<u32>,
}

impl Fenwick {
    /// Replaces the contents with `lengths`, in O(blocks).
    fn rebuild(&mut self, lengths: impl ExactSizeIterator<Item = usize>) {
        self.tree.clear();
        self.tree.reserve_exact(lengths.len());
        self.tree.extend(lengths.map(|len| len as u32));
        let n = self.tree.len();
        for i in 1..=n {
            let parent = i + (i & i.wrapping_neg());
            if parent <= n {
                self.tree[parent - 1] += self.tree[i - 1];
            }
        }
    }

    /// Adds `delta` to block `b`'s length.
    fn add(&mut self, b: usize, delta: u32) {
        let mut i = b + 1;
        while i <= self.tree.len() {
            self.tree[i - 1] += delta;
            i += i & i.wrapping_neg();
        }
    }

    /// Subtracts `delta` from block `b`'s length.
    fn sub(&mut self, b: usize, delta: u32) {
        let mut i = b + 1;
        while i <= self.tree.len() {
            self.tree[i - 1] -= delta;
            i += i & i.wrapping_neg();
        }
    }

    /// Total length of blocks `0..k`.
    fn prefix(&self, k: usize) -> usize {
        let mut sum = 0;
        let mut i = k;
        while i > 0 {
            sum += self.tree[i - 1] as usize;
            i &= i - 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn check(set: &OrderSet, model: &[u64]) {
        set.assert_invariants();
        let mut sorted = model.to_vec();
        sorted.sort_unstable();
        assert!(set.iter().eq(sorted.iter().copied()));
        assert_eq!(set.len(), model.len());
        for x in [0, 1, 5, 17, 33, 50, 64, 65, u64::MAX] {
            assert_eq!(
                set.count_ge(x),
                sorted.iter().filter(|&&v| v >= x).count(),
                "x={x}"
            );
        }
    }

    #[test]
    fn counts_with_duplicates() {
        let mut set = OrderSet::with_block(4);
        assert_eq!(set.count_ge(0), 0);
        let values = [5, 5, 5, 5, 5, 5, 1, 9, 5, 0, 64];
        for v in values {
            set.insert(v);
        }
        check(&set, &values);
        assert_eq!(set.count_ge(5), 9);
        assert_eq!(set.count_ge(6), 2);
        assert!(set.remove(5));
        assert!(!set.remove(6));
        check(&set, &[5, 5, 5, 5, 5, 1, 9, 5, 0, 64]);
    }

    #[test]
    fn fenwick_prefix() {
        let mut f = Fenwick::default();
        f.rebuild([3, 1, 4, 1, 5, 9, 2].into_iter());
        assert_eq!(f.prefix(0), 0);
        assert_eq!(f.prefix(3), 8);
        assert_eq!(f.prefix(7), 25);
        f.add(2, 10);
        f.sub(0, 3);
        assert_eq!(f.prefix(1), 0);
        assert_eq!(f.prefix(3), 15);
        assert_eq!(f.prefix(7), 32);
    }

    #[test]
    fn random_moves_match_a_sorted_vec() {
        for block in [4, 8, 512] {
            let mut next = rng(block as u64);
            let mut set = OrderSet::with_block(block);
            let mut model = Vec::new();
            for _ in 0..3_000 {
                match next() % 8 {
                    0..=2 => {
                        let v = next() % 70;
                        set.insert(v);
                        model.push(v);
                    }
                    3 if !model.is_empty() => {
                        let v = model.swap_remove(next() as usize % model.len());
                        assert!(set.remove(v));
                    }
                    _ if !model.is_empty() => {
                        let at = next() as usize % model.len();
                        let new = next() % 70;
                        assert!(set.replace(model[at], new));
                        model[at] = new;
                    }
                    _ => {}
                }
                if next() % 64 == 0 {
                    check(&set, &model);
                }
            }
            check(&set, &model);
        }
    }
}
