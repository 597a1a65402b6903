//! A room's members: their cursors in a slab, found by user id through a hash index,
//! listed in user-id order through a sorted list of slot numbers.
//!
//! The three parts each serve one access path: a cursor move needs only the index and
//! the slab (O(1), no string ordering); pages and snapshots walk the sorted list; joins
//! and leaves update all three (O(log N) plus a `memmove` within one block).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use super::blocks::Blocks;
use super::index::{UserIndex, MAX_ID};

/// Slots per slab chunk: a growing room reallocates at most one chunk (32 KiB), never
/// the whole slab, and wastes at most part of that one.
const CHUNK: usize = 1024;

/// End of the free-slot list.
const NONE: u32 = u32::MAX;

/// One member's cursors.
///
/// 32 bytes of the 64-byte budget per (member, room); the rest: 16 in the two order sets
/// of `RoomCursors`, 4 in the sorted list, 5 to 6.7 in the index, and spare capacity.
#[derive(Debug)]
pub(super) struct Entry {
    /// The user id, shared with the rest of the broker (a clone is a refcount bump).
    pub(super) user: Arc<str>,
    /// Delivered up to this seq; never below `read`.
    pub(super) delivered: u64,
    /// Read up to this seq.
    pub(super) read: u64,
}

/// A slab slot; the `Free` case costs no space (it lives in the niche of `Entry`'s
/// pointer).
#[derive(Debug)]
enum Slot {
    /// A member's entry.
    Taken(Entry),
    /// The next free slot, or [`NONE`].
    Free(u32),
}

const _: () = assert!(size_of::<Slot>() == size_of::<Entry>());

/// The members of one room.
#[derive(Debug)]
pub(super) struct Members {
    /// Slots by number; every chunk but the last holds exactly [`CHUNK`].
    chunks: Vec<Vec<Slot>>,
    /// First free slot, or [`NONE`].
    free: u32,
    /// User id → slot number.
    index: UserIndex,
    /// SipHash with random keys: no one can pick user ids that collide.
    hasher: RandomState,
    /// Slot numbers, sorted by user id.
    order: Blocks<u32>,
}

impl Members {
    /// No members; the sorted list splits blocks at `block` entries.
    pub(super) fn new(block: usize) -> Self {
        Members {
            chunks: Vec::new(),
            free: NONE,
            index: UserIndex::default(),
            hasher: RandomState::new(),
            order: Blocks::new(block),
        }
    }

    /// How many members.
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// The slot number of `user`, in O(1).
    pub(super) fn find(&self, user: &str) -> Option<u32> {
        let at = self.locate(self.hasher.hash_one(user), user)?;
        Some(self.index.id(at))
    }

    /// The member in slot `id`.
    ///
    /// # Panics
    /// On a free slot (a bug).
    pub(super) fn get(&self, id: u32) -> &Entry {
        taken(&self.chunks, id)
    }

    /// The member in slot `id`, mutably.
    ///
    /// # Panics
    /// On a free slot (a bug).
    pub(super) fn get_mut(&mut self, id: u32) -> &mut Entry {
        match &mut self.chunks[id as usize / CHUNK][id as usize % CHUNK] {
            Slot::Taken(entry) => entry,
            Slot::Free(_) => unreachable!("free member slot {id}"),
        }
    }

    /// Adds `user` with cursors (0, 0) unless present; returns whether it was added.
    ///
    /// # Panics
    /// Past 2^27 - 1 members.
    pub(super) fn insert(&mut self, user: &Arc<str>) -> bool {
        let hash = self.hasher.hash_one(&**user);
        if self.locate(hash, user).is_some() {
            return false;
        }
        let Err((b, i)) = self.position(user) else {
            unreachable!("indexed and listed members differ");
        };
        let id = self.take_slot(Entry {
            user: user.clone(),
            delivered: 0,
            read: 0,
        });
        (self.index).insert(hash, id, |id| {
            self.hasher.hash_one(&*taken(&self.chunks, id).user)
        });
        self.order.insert(b, i, id);
        true
    }

    /// Removes `user`; returns its entry if it was a member.
    pub(super) fn remove(&mut self, user: &str) -> Option<Entry> {
        let at = self.locate(self.hasher.hash_one(user), user)?;
        let id = self.index.id(at);
        (self.index).remove(at, |id| {
            self.hasher.hash_one(&*taken(&self.chunks, id).user)
        });
        let Ok((b, i)) = self.position(user) else {
            unreachable!("indexed and listed members differ");
        };
        self.order.remove(b, i);
        let slot = &mut self.chunks[id as usize / CHUNK][id as usize % CHUNK];
        let Slot::Taken(entry) = std::mem::replace(slot, Slot::Free(self.free)) else {
            unreachable!("free member slot {id}");
        };
        self.free = id;
        Some(entry)
    }

    /// Every member, in user-id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.order.iter().map(|&id| self.get(id))
    }

    /// The members with a user id above `after` (all with `None`), in user-id order.
    pub(super) fn iter_after(&self, after: Option<&str>) -> impl Iterator<Item = &Entry> {
        let (b, i) = match after.map(|after| self.position(after)) {
            None => (0, 0),
            Some(Ok((b, i))) => (b, i + 1),
            Some(Err(at)) => at,
        };
        self.order.iter_from(b, i).map(|&id| self.get(id))
    }

    /// The index position of `user`, whose hash is `hash`.
    fn locate(&self, hash: u64, user: &str) -> Option<usize> {
        (self.index).find(hash, |id| &*taken(&self.chunks, id).user == user)
    }

    /// Where `user` is in the sorted list, or would be inserted: O(log N) comparisons.
    fn position(&self, user: &str) -> Result<(usize, usize), (usize, usize)> {
        let blocks = self.order.blocks();
        let b = blocks.partition_point(|block| &*self.get(block[0]).user <= user);
        if b == 0 {
            return Err((0, 0));
        }
        match blocks[b - 1].binary_search_by(|&id| (*self.get(id).user).cmp(user)) {
            Ok(i) => Ok((b - 1, i)),
            Err(i) => Err((b - 1, i)),
        }
    }

    /// Stores `entry` in a free slot, or a new one; returns its number.
    fn take_slot(&mut self, entry: Entry) -> u32 {
        if self.free != NONE {
            let id = self.free;
            let slot = &mut self.chunks[id as usize / CHUNK][id as usize % CHUNK];
            let Slot::Free(next) = std::mem::replace(slot, Slot::Taken(entry)) else {
                unreachable!("taken member slot {id} on the free list");
            };
            self.free = next;
            return id;
        }
        if self.chunks.last().is_none_or(|chunk| chunk.len() == CHUNK) {
            self.chunks.reserve_exact(1);
            self.chunks.push(Vec::new());
        }
        let id =
            ((self.chunks.len() - 1) * CHUNK + self.chunks[self.chunks.len() - 1].len()) as u32;
        assert!(id <= MAX_ID, "too many members in one room");
        let chunk = self.chunks.last_mut().expect("a chunk was just ensured");
        if chunk.len() == chunk.capacity() {
            // Grow by a quarter: the spare stays under a quarter of one chunk (or two slots).
            chunk.reserve_exact((chunk.len() / 4).max(2).min(CHUNK - chunk.len()));
        }
        chunk.push(Slot::Taken(entry));
        id
    }

    /// Panics unless the invariants hold (tests only).
    #[cfg(test)]
    pub(super) fn assert_invariants(&self) {
        self.order.assert_invariants();
        let users: Vec<&str> = self.iter().map(|e| &*e.user).collect();
        assert!(users.windows(2).all(|w| w[0] < w[1]));
        assert!(users
            .iter()
            .all(|u| self.get(self.find(u).unwrap()).user.as_ref() == *u));
        let taken = self.chunks.iter().flatten();
        assert_eq!(
            taken.filter(|s| matches!(s, Slot::Taken(_))).count(),
            self.len()
        );
        let (last, full) = self
            .chunks
            .split_last()
            .map_or((None, &[][..]), |(l, f)| (Some(l), f));
        assert!(full
            .iter()
            .all(|c| c.len() == CHUNK && c.capacity() == CHUNK));
        assert!(last.is_none_or(|c| c.capacity() <= CHUNK));
    }
}

/// The entry in taken slot `id`; a free function, so that closures passed to the index
/// can read the slab while the index is borrowed mutably.
///
/// # Panics
/// On a free slot (a bug).
fn taken(chunks: &[Vec<Slot>], id: u32) -> &Entry {
    match &chunks[id as usize / CHUNK][id as usize % CHUNK] {
        Slot::Taken(entry) => entry,
        Slot::Free(_) => unreachable!("free member slot {id}"),
    }
}
