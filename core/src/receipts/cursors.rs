//! A room's read receipts: two cursors per member, counts per seq, and who read a seq.

use std::sync::Arc;

use super::members::{Entry, Members};
use super::order::{OrderSet, ORDER_BLOCK};

/// Slot numbers per block of the user-ordered member list at which a block splits:
/// 256 × 4 bytes keeps a join's `memmove` at about 512 bytes on average.
pub const MEMBER_BLOCK: usize = 256;

/// Per room, each member's delivered and read cursors, with the counts of members at or
/// past any seq in O(log N).
///
/// Members are found by user id through a hash index (a cursor move is O(1) to find the
/// member) and listed in user-id order for pages; each cursor value also lives in an
/// [`OrderSet`], so `counts` never visits members. About 60 bytes per member, measured
/// by `core/tests/receipts_memory.rs` (the user id's own allocation is shared, not
/// counted).
///
/// ### Invariants
/// - `delivered` and `read` hold exactly the members' cursor values.
/// - `read ≤ delivered` for every member; neither cursor ever decreases.
#[derive(Debug)]
pub struct RoomCursors {
    /// The members and their cursors.
    members: Members,
    /// Every member's delivered cursor.
    delivered: OrderSet,
    /// Every member's read cursor.
    read: OrderSet,
}

impl Default for RoomCursors {
    fn default() -> Self {
        Self::new()
    }
}

impl RoomCursors {
    /// A room with no members.
    pub fn new() -> Self {
        Self::with_blocks(MEMBER_BLOCK, ORDER_BLOCK)
    }

    /// A room with other block sizes (small blocks exercise splits and merges in tests).
    ///
    /// # Panics
    /// If either size is below 4.
    pub fn with_blocks(member_block: usize, order_block: usize) -> Self {
        RoomCursors {
            members: Members::new(member_block),
            delivered: OrderSet::with_block(order_block),
            read: OrderSet::with_block(order_block),
        }
    }

    /// Adds a member with cursors (0, 0) if absent (subscribe/send makes a member).
    /// Returns whether it was added. O(log N) plus a `memmove` within one block.
    ///
    /// # Panics
    /// Past 2^27 - 1 members.
    pub fn join(&mut self, user: &Arc<str>) -> bool {
        if !self.members.insert(user) {
            return false;
        }
        self.delivered.insert(0);
        self.read.insert(0);
        true
    }

    /// Removes a member (leave); its cursors are forgotten. Returns whether it was one.
    pub fn leave(&mut self, user: &str) -> bool {
        let Some(entry) = self.members.remove(user) else {
            return false;
        };
        self.delivered.remove(entry.delivered);
        self.read.remove(entry.read);
        true
    }

    /// Whether `user` is a member.
    pub fn is_member(&self, user: &str) -> bool {
        self.members.find(user).is_some()
    }

    /// How many members.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// (delivered, read) of a member.
    pub fn get(&self, user: &str) -> Option<(u64, u64)> {
        let entry = self.members.get(self.members.find(user)?);
        Some((entry.delivered, entry.read))
    }

    /// Moves a member's cursors up to at least (delivered, read) — read also lifts
    /// delivered; never backwards. Returns the cursors after the move, and whether they
    /// changed. None if not a member.
    ///
    /// O(1) to find the member, then O(log N) for each cursor that moved
    /// ([`OrderSet::replace`]).
    pub fn advance(&mut self, user: &str, delivered: u64, read: u64) -> Option<((u64, u64), bool)> {
        let id = self.members.find(user)?;
        let entry = self.members.get_mut(id);
        let old = (entry.delivered, entry.read);
        entry.read = old.1.max(read);
        entry.delivered = old.0.max(delivered).max(entry.read);
        let now = (entry.delivered, entry.read);
        if now.0 != old.0 {
            self.delivered.replace(old.0, now.0);
        }
        if now.1 != old.1 {
            self.read.replace(old.1, now.1);
        }
        Some((now, now != old))
    }

    /// (members, delivered >= seq, read >= seq), in O(log N).
    pub fn counts(&self, seq: u64) -> (usize, usize, usize) {
        (
            self.members(),
            self.delivered.count_ge(seq),
            self.read.count_ge(seq),
        )
    }

    /// Users with read >= seq, sorted by user id, strictly after `after`, at most `limit`;
    /// plus `next`, the last user of a full page, to pass back as `after`.
    ///
    /// `next` is set only when the page is full *and* another user matches after it, so
    /// a client never fetches an empty last page: the protocol's "null on the last page",
    /// read strictly. Finding that further match scans on past the page, which costs no
    /// more than the next call would have; when the page holds every match (known from
    /// the counts) no scan is needed. `limit` 0 gives an empty page and no `next`.
    ///
    /// Cost: O(log N) to find `after`, then a walk of the members after it up to the
    /// match after the page: O(N) at worst (few matches, far apart), never more than one
    /// pass. Nothing is allocated but the page (at most `min(limit, matches)` user ids).
    pub fn read_by(
        &self,
        seq: u64,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<str>>, Option<Arc<str>>) {
        self.page(after, limit, self.read.count_ge(seq), |e| e.read >= seq)
    }

    /// Users with read < seq, paged like [`Self::read_by`].
    pub fn unread_by(
        &self,
        seq: u64,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<Arc<str>>, Option<Arc<str>>) {
        self.page(after, limit, self.read.count_lt(seq), |e| e.read < seq)
    }

    /// Every (user, delivered, read), sorted by user id, for persistence snapshots.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, u64, u64)> {
        self.members.iter().map(|e| (&e.user, e.delivered, e.read))
    }

    /// One page of the `total` members that `matches`, after `after` in user order (see
    /// [`Self::read_by`]).
    fn page(
        &self,
        after: Option<&str>,
        limit: usize,
        total: usize,
        matches: impl Fn(&Entry) -> bool,
    ) -> (Vec<Arc<str>>, Option<Arc<str>>) {
        if limit == 0 || total == 0 {
            return (Vec::new(), None);
        }
        let mut rest = self.members.iter_after(after).filter(|e| matches(e));
        let mut users = Vec::with_capacity(limit.min(total));
        for entry in rest.by_ref() {
            users.push(entry.user.clone());
            if users.len() == limit {
                break;
            }
        }
        let more = users.len() == limit && users.len() < total && rest.next().is_some();
        let next = if more { users.last().cloned() } else { None };
        (users, next)
    }

    /// Panics unless the invariants hold (tests only: O(N log N)).
    #[cfg(test)]
    pub(super) fn assert_invariants(&self) {
        self.members.assert_invariants();
        self.delivered.assert_invariants();
        self.read.assert_invariants();
        assert!(self.members.iter().all(|e| e.read <= e.delivered));
        let mut delivered: Vec<u64> = self.members.iter().map(|e| e.delivered).collect();
        let mut read: Vec<u64> = self.members.iter().map(|e| e.read).collect();
        delivered.sort_unstable();
        read.sort_unstable();
        assert!(self.delivered.iter().eq(delivered));
        assert!(self.read.iter().eq(read));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(users: &[&str]) -> RoomCursors {
        let mut room = RoomCursors::with_blocks(4, 4);
        for u in users {
            assert!(room.join(&Arc::from(*u)));
        }
        room.assert_invariants();
        room
    }

    fn names(users: &[Arc<str>]) -> Vec<&str> {
        users.iter().map(|u| &**u).collect()
    }

    #[test]
    fn join_leave_membership() {
        let mut room = room(&["carol", "alice", "bob"]);
        assert!(!room.join(&Arc::from("bob")));
        assert_eq!(room.members(), 3);
        assert!(room.is_member("alice"));
        assert_eq!(room.get("bob"), Some((0, 0)));
        assert!(room.leave("bob"));
        assert!(!room.leave("bob"));
        assert!(!room.is_member("bob"));
        assert_eq!(room.get("bob"), None);
        assert_eq!(room.advance("bob", 1, 1), None);
        let all: Vec<_> = room.iter().map(|(u, d, r)| (&**u, d, r)).collect();
        assert_eq!(all, [("alice", 0, 0), ("carol", 0, 0)]);
        assert_eq!(room.counts(0), (2, 2, 2));
        room.assert_invariants();
    }

    #[test]
    fn cursors_only_move_up_and_read_lifts_delivered() {
        let mut room = room(&["alice"]);
        assert_eq!(room.advance("alice", 10, 0), Some(((10, 0), true)));
        assert_eq!(room.advance("alice", 5, 3), Some(((10, 3), true)));
        assert_eq!(room.advance("alice", 0, 12), Some(((12, 12), true)));
        assert_eq!(room.advance("alice", 11, 11), Some(((12, 12), false)));
        assert_eq!(room.counts(12), (1, 1, 1));
        assert_eq!(room.counts(13), (1, 0, 0));
    }

    #[test]
    fn a_rejoin_starts_from_zero() {
        let mut room = room(&["alice", "bob"]);
        room.advance("alice", 7, 7);
        room.leave("alice");
        room.join(&Arc::from("alice"));
        assert_eq!(room.get("alice"), Some((0, 0)));
        assert_eq!(room.counts(1), (2, 0, 0));
        room.assert_invariants();
    }

    #[test]
    fn counts_per_seq() {
        let mut room = room(&["a", "b", "c", "d"]);
        room.advance("a", 5, 5);
        room.advance("b", 5, 2);
        room.advance("c", 3, 0);
        assert_eq!(room.counts(1), (4, 3, 2));
        assert_eq!(room.counts(3), (4, 3, 1));
        assert_eq!(room.counts(4), (4, 2, 1));
        assert_eq!(room.counts(6), (4, 0, 0));
    }

    #[test]
    fn pages_in_user_order() {
        let users: Vec<String> = (0..10).map(|i| format!("u{i}")).collect();
        let refs: Vec<&str> = users.iter().map(String::as_str).collect();
        let mut room = room(&refs);
        for u in ["u1", "u2", "u4", "u7", "u8"] {
            room.advance(u, 9, 9);
        }
        let (page, next) = room.read_by(9, None, 2);
        assert_eq!(
            (names(&page), next.as_deref()),
            (vec!["u1", "u2"], Some("u2"))
        );
        let (page, next) = room.read_by(9, Some("u2"), 2);
        assert_eq!(
            (names(&page), next.as_deref()),
            (vec!["u4", "u7"], Some("u7"))
        );
        // A full page with nothing after it is the last page.
        let (page, next) = room.read_by(9, Some("u7"), 1);
        assert_eq!((names(&page), next.as_deref()), (vec!["u8"], None));
        // `after` need not be a member.
        let (page, next) = room.read_by(9, Some("u5"), 10);
        assert_eq!((names(&page), next), (vec!["u7", "u8"], None));
        let (page, next) = room.unread_by(9, Some("u0"), 3);
        assert_eq!(
            (names(&page), next.as_deref()),
            (vec!["u3", "u5", "u6"], Some("u6"))
        );
        let (page, next) = room.unread_by(9, Some("u6"), 3);
        assert_eq!((names(&page), next), (vec!["u9"], None));
        // The whole room in one page: known to be last without scanning on.
        let (page, next) = room.read_by(0, None, 10);
        assert_eq!((page.len(), next), (10, None));
        assert_eq!(room.read_by(10, None, 5), (vec![], None));
        assert_eq!(room.read_by(0, None, 0), (vec![], None));
    }

    #[test]
    fn slots_are_reused_after_leaves() {
        let users: Vec<Arc<str>> = (0..3000).map(|i| Arc::from(format!("u{i:04}"))).collect();
        let mut room = RoomCursors::new();
        for u in &users {
            room.join(u);
        }
        for u in users.iter().step_by(2) {
            room.advance(u, 5, 3);
            assert!(room.leave(u));
        }
        for u in users.iter().step_by(2) {
            room.join(u);
        }
        room.assert_invariants();
        assert_eq!(room.members(), 3000);
        assert_eq!(room.counts(1), (3000, 0, 0));
    }
}
