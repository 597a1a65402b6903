//! Read receipts at group scale: per room, each member's delivered and read cursors, and
//! for any seq the number of members at or past it, in O(log N) for N members.
//!
//! Sans-IO and clock-free: the broker feeds cursor moves in and asks for counts and
//! pages; persistence snapshots read [`RoomCursors::iter`].
//!
//! Costs, per room of N members: a cursor move finds the member in O(1) and moves each
//! changed cursor in O(log N); `counts` is O(log N); a page of `read_by`/`unread_by` is
//! O(log N) plus the members it walks. Memory is about 60 bytes per member (a 32-byte
//! entry, 16 in the two order sets, 4 in the user-ordered list, ~6 in the hash index,
//! the rest spare capacity), measured by `core/tests/receipts_memory.rs`; the user id's
//! own allocation is shared with the rest of the broker.
//!
//! - [`cursors`]: [`RoomCursors`], the per-room API.
//! - [`order`]: [`OrderSet`], the order-statistic multiset under the counts.
//! - `members`: the members' cursors in a slab, found through `index` (a hash table of
//!   slot numbers) and listed in user-id order.
//! - `blocks`: blocks of sorted small vectors, under the member list and the order sets.

mod blocks;
pub mod cursors;
mod index;
mod members;
pub mod order;

pub use cursors::RoomCursors;
pub use order::OrderSet;

#[cfg(test)]
mod tests;
