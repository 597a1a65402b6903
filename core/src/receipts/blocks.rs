//! Blocks of sorted small vectors: the storage under both the member list and the
//! order-statistic sets.
//!
//! A flat sorted `Vec` makes an insert cost O(N) moves; a tree costs a node allocation
//! and two or three pointers per element. Blocks of at most `max` elements keep inserts
//! and removals to one short `memmove`, keep scans contiguous, and, because each block's
//! capacity is held to within [`SLACK_BYTES`] of its length, cost almost nothing beyond
//! the elements themselves: memory per member is the budget that decides this design.
//!
//! ### Invariants
//! - No block is empty.
//! - A block holds fewer than `max` elements; below `max / 4` it is merged with a
//!   neighbour (unless it is the only block).
//! - Each block's spare capacity stays under `2 * SLACK_BYTES`.
//!
//! Ordering is the owner's business: it chooses where to insert, and this type only
//! reports when block boundaries moved (a split, a merge, a block created or dropped), so
//! that the owner can rebuild any per-block index it keeps.

/// Spare bytes a block grows by when full, and keeps after shrinking: large enough that
/// a realloc happens once per several inserts, small enough to be noise per element.
const SLACK_BYTES: usize = 128;

/// A sequence stored as consecutive blocks; positions are `(block, index)`.
#[derive(Debug)]
pub(super) struct Blocks<T> {
    /// The blocks, in sequence order.
    blocks: Vec<Vec<T>>,
    /// A block reaching this many elements is split in two halves.
    max: usize,
    /// Elements in all blocks.
    len: usize,
}

impl<T> Blocks<T> {
    /// Elements a full block grows by, and the spare kept after a shrink.
    const GROW: usize = {
        let size = size_of::<T>();
        if size == 0 || size >= SLACK_BYTES {
            1
        } else {
            SLACK_BYTES / size
        }
    };

    /// An empty sequence whose blocks split at `max` elements.
    ///
    /// # Panics
    /// If `max < 4` (blocks could not be both split in halves and merged).
    pub(super) fn new(max: usize) -> Self {
        assert!(max >= 4, "blocks must hold at least 4 elements");
        Blocks {
            blocks: Vec::new(),
            max,
            len: 0,
        }
    }

    /// Elements in all blocks.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The blocks, for the owner's searches.
    pub(super) fn blocks(&self) -> &[Vec<T>] {
        &self.blocks
    }

    /// Block `b`'s elements, mutable in place (not in length).
    pub(super) fn block_mut(&mut self, b: usize) -> &mut [T] {
        &mut self.blocks[b]
    }

    /// Every element, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.blocks.iter().flatten()
    }

    /// The elements from position `(b, i)` on; `i` may be the block's length.
    pub(super) fn iter_from(&self, b: usize, i: usize) -> impl Iterator<Item = &T> {
        let (head, tail): (&[T], &[Vec<T>]) = match self.blocks.get(b) {
            Some(block) => (&block[i.min(block.len())..], &self.blocks[b + 1..]),
            None => (&[], &[]),
        };
        head.iter().chain(tail.iter().flatten())
    }

    /// Inserts `value` at index `i` of block `b` (`(0, 0)` when empty). Returns whether
    /// block boundaries moved.
    pub(super) fn insert(&mut self, b: usize, i: usize, value: T) -> bool {
        self.len += 1;
        if self.blocks.is_empty() {
            // Exactly one of each: most rooms are small, and `push` would reserve four.
            self.blocks.reserve_exact(1);
            self.blocks.push(vec![value]);
            return true;
        }
        let block = &mut self.blocks[b];
        if block.len() == block.capacity() {
            // Doubling up to `GROW`: a small room (most rooms) wastes no more than it holds.
            block.reserve_exact(block.len().min(Self::GROW));
        }
        block.insert(i, value);
        if block.len() >= self.max {
            self.split(b);
            return true;
        }
        false
    }

    /// Removes the element at index `i` of block `b`. Returns it, and whether block
    /// boundaries moved.
    pub(super) fn remove(&mut self, b: usize, i: usize) -> (T, bool) {
        self.len -= 1;
        let single = self.blocks.len() == 1;
        let block = &mut self.blocks[b];
        let value = block.remove(i);
        if block.is_empty() {
            self.blocks.remove(b);
            return (value, true);
        }
        if block.len() < self.max / 4 && !single {
            self.merge(b);
            return (value, true);
        }
        Self::trim(block);
        (value, false)
    }

    /// Panics unless the invariants hold (tests only).
    #[cfg(test)]
    pub(super) fn assert_invariants(&self) {
        let single = self.blocks.len() == 1;
        for block in &self.blocks {
            assert!(!block.is_empty());
            assert!(block.len() < self.max);
            assert!(single || block.len() >= self.max / 4);
            assert!(block.capacity() - block.len() < 2 * Self::GROW);
        }
        assert_eq!(self.iter().count(), self.len);
    }

    /// Splits block `b` into two halves.
    fn split(&mut self, b: usize) {
        let block = &mut self.blocks[b];
        // Both halves exact: after appends in order (ids joining in order, cursors moving
        // to the newest seq) the left half never grows again.
        let right = block.split_off(block.len() / 2);
        block.shrink_to_fit();
        self.blocks.insert(b + 1, right);
    }

    /// Merges the small block `b` into its smaller neighbour, splitting the result again
    /// if it is full.
    fn merge(&mut self, b: usize) {
        let n = self.blocks.len();
        let left = if b == 0 {
            0
        } else if b + 1 == n || self.blocks[b - 1].len() <= self.blocks[b + 1].len() {
            b - 1
        } else {
            b
        };
        let mut right = self.blocks.remove(left + 1);
        let block = &mut self.blocks[left];
        block.reserve_exact(right.len());
        block.append(&mut right);
        if block.len() >= self.max {
            self.split(left);
        } else {
            Self::trim(block);
        }
    }

    /// Gives back spare capacity past the slack.
    fn trim(block: &mut Vec<T>) {
        if block.capacity() - block.len() >= 2 * Self::GROW {
            block.shrink_to(block.len() + Self::GROW);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_split_and_removals_merge() {
        let mut blocks = Blocks::new(8);
        for v in 0..100u32 {
            let b = blocks.blocks().len().saturating_sub(1);
            let i = blocks.blocks().get(b).map_or(0, Vec::len);
            blocks.insert(b, i, v);
            blocks.assert_invariants();
        }
        assert!(blocks.blocks().len() > 10);
        assert!(blocks.iter().copied().eq(0..100));
        // Remove from the front of blocks in turn, so blocks drain unevenly and merge.
        while blocks.len() > 0 {
            let b = blocks.len() % blocks.blocks().len();
            blocks.remove(b, 0);
            blocks.assert_invariants();
        }
        assert!(blocks.blocks().is_empty());
    }

    #[test]
    fn iter_from_any_position() {
        let mut blocks = Blocks::new(4);
        for v in 0..10u32 {
            let b = blocks.blocks().len().saturating_sub(1);
            let i = blocks.blocks().get(b).map_or(0, Vec::len);
            blocks.insert(b, i, v);
        }
        let mut at = 0;
        for (b, block) in blocks.blocks().iter().enumerate() {
            for i in 0..=block.len() {
                assert!(blocks.iter_from(b, i).copied().eq(at + i as u32..10));
            }
            at += block.len() as u32;
        }
        assert_eq!(blocks.iter_from(99, 0).count(), 0);
    }
}
