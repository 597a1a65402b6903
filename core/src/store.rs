//! The message store interface, and its in-memory implementation.
//!
//! The broker assigns seqs and encodes each `msg` frame once; the store keeps those
//! frames so that `since` replay and `history` serve the very bytes live subscribers got.
//! The durable log ([`crate::log::Log`]) implements the same trait.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;
use crate::ids::{RoomId, Seq};
use crate::log::{Durability, Lsn};

/// A room found in the store at start.
#[derive(Clone, Debug)]
pub struct RecoveredRoom {
    /// Owning tenant.
    pub tenant: Arc<str>,
    /// The room id as clients name it.
    pub name: Arc<str>,
    /// Seq of its newest message.
    pub last_seq: Seq,
    /// Its members with their cursors.
    pub members: Vec<MemberState>,
}

/// A member of a room and its receipt cursors: (user, delivered up to, read up to).
pub type MemberState = (Arc<str>, u64, u64);

/// One message as stored: its identity and the encoded `msg` frame.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    /// The room it was sent to.
    pub room: RoomId,
    /// Its place in the room.
    pub seq: Seq,
    /// Server time of the send, ms since the epoch.
    pub ts: u64,
    /// Sending user.
    pub from: Arc<str>,
    /// The sender's id for the message (dedupe key with `from` and `room`).
    pub cid: Arc<str>,
    /// The WebSocket frame pushed to subscribers (header + JSON object).
    pub frame: Bytes,
}

impl StoredMessage {
    /// The `msg` JSON object alone, as `history` embeds it.
    pub fn json(&self) -> &[u8] {
        // Our frames are unmasked: the 7-bit length says whether 0, 2 or 8 length bytes follow.
        let header = match self.frame.get(1).map(|b| b & 0x7f) {
            Some(126) => 4,
            Some(127) => 10,
            _ => 2,
        };
        &self.frame[header.min(self.frame.len())..]
    }
}

/// Where messages live. Implementations bound their memory by retention.
///
/// Writes return a log position; their effects (fan-out, replies) wait until
/// [`MessageStore::durability`] reaches it. Rooms are identified by the broker's dense
/// [`RoomId`]s; writes also pass the room's names, for stores that persist them.
pub trait MessageStore: Send {
    /// The rooms found at start, to be interned in this order (the i-th is `RoomId(i)`).
    /// Taken once.
    fn recovered(&mut self) -> Vec<RecoveredRoom> {
        Vec::new()
    }

    /// Stores a message. Seqs of a room arrive in order with no gaps.
    ///
    /// # Errors
    /// `Internal` when the message cannot be stored; nothing is then acknowledged.
    fn append(
        &mut self,
        msg: StoredMessage,
        tenant: &Arc<str>,
        name: &Arc<str>,
        body: &str,
    ) -> Result<Lsn>;

    /// Records that `user` joined (`true`) or left a room.
    ///
    /// # Errors
    /// `Internal` when the store cannot write.
    fn member(
        &mut self,
        room: RoomId,
        tenant: &Arc<str>,
        name: &Arc<str>,
        user: &str,
        joined: bool,
    ) -> Result<Lsn>;

    /// Records a member's receipt cursors `(delivered, read)`.
    ///
    /// # Errors
    /// `Internal` when the store cannot write.
    fn cursor(
        &mut self,
        room: RoomId,
        tenant: &Arc<str>,
        name: &Arc<str>,
        user: &str,
        cursors: (u64, u64),
    ) -> Result<Lsn>;

    /// Sets (or, with None, deletes) a control-plane value: a meeting, a seat…
    ///
    /// # Errors
    /// `Internal` when the store cannot write.
    fn put_state(&mut self, space: &str, key: &str, value: Option<&str>) -> Result<Lsn>;

    /// Every value of a space, sorted by key.
    fn states(&self, space: &str) -> Vec<(String, String)>;

    /// Messages of `room` with `from <= seq <= to`, ascending; those no longer retained
    /// are skipped. Callers keep `to - from` small (a page or a replay batch).
    fn range(&self, room: RoomId, from: Seq, to: Seq) -> Vec<StoredMessage>;

    /// The oldest retained seq of `room`, or `last_seq + 1` when none is retained.
    fn first_seq(&self, room: RoomId, last_seq: Seq) -> Seq;

    /// The newest `limit` retained messages of `room` with seq <= `to`, ascending: a
    /// `history` page, which steps over seqs with no message (lost to damage).
    fn newest(&self, room: RoomId, to: Seq, limit: u64) -> Vec<StoredMessage> {
        let from = Seq(to.0.saturating_sub(limit.saturating_sub(1)).max(1));
        self.range(room, from, to)
    }

    /// The seq a new room counts from: 0, or, once a repair of the log stepped over
    /// damage, a bound on every seq the lost records may have held (a room whose every
    /// record was lost is unknown, and must not give its seqs again).
    fn new_room_seq(&self) -> Seq {
        Seq(0)
    }

    /// The seq and ts of the retained message `(room, from, cid)`, for idempotent sends.
    fn find_cid(&self, room: RoomId, from: &str, cid: &str) -> Option<(Seq, u64)>;

    /// The durable position writes wait for, and the store's failure if it has one.
    fn durability(&self) -> &Arc<Durability>;

    /// Periodic upkeep: retention by age, removal of dead files (`members` gives a
    /// room's current members and cursors, for what must outlive those files).
    ///
    /// # Errors
    /// `Internal` when the store cannot write.
    fn maintain(
        &mut self,
        _now_wall_ms: u64,
        _members: &dyn Fn(RoomId) -> Vec<MemberState>,
    ) -> Result<()> {
        Ok(())
    }
}

/// Keeps the newest `retention` messages of each room in memory.
#[derive(Debug)]
pub struct MemoryStore {
    retention: usize,
    rooms: HashMap<RoomId, RoomLog>,
    states: std::collections::BTreeMap<(String, String), String>,
    written: Lsn,
    durability: Arc<Durability>,
}

#[derive(Debug, Default)]
struct RoomLog {
    messages: VecDeque<StoredMessage>,
    /// (from, cid) → (seq, ts) for every retained message: the dedupe horizon follows
    /// retention, so a retry of a retained message always gets its seq back.
    cids: HashMap<(Arc<str>, Arc<str>), (Seq, u64)>,
}

impl MemoryStore {
    /// A store keeping at most `retention` messages per room.
    pub fn new(retention: usize) -> Self {
        MemoryStore {
            retention: retention.max(1),
            rooms: HashMap::new(),
            states: std::collections::BTreeMap::new(),
            written: 0,
            durability: Arc::default(),
        }
    }
}

impl MemoryStore {
    /// Every write is "durable" at once: the position moves without a commit thread.
    fn written(&mut self) -> Lsn {
        self.written += 1;
        self.durability.reached(self.written);
        self.written
    }
}

impl MessageStore for MemoryStore {
    fn append(
        &mut self,
        msg: StoredMessage,
        _tenant: &Arc<str>,
        _name: &Arc<str>,
        _body: &str,
    ) -> Result<Lsn> {
        let log = self.rooms.entry(msg.room).or_default();
        if let Some(last) = log.messages.back() {
            debug_assert_eq!(last.seq.next(), msg.seq, "seqs arrive in order");
        }
        log.cids
            .insert((msg.from.clone(), msg.cid.clone()), (msg.seq, msg.ts));
        log.messages.push_back(msg);
        while log.messages.len() > self.retention {
            if let Some(old) = log.messages.pop_front() {
                log.cids.remove(&(old.from, old.cid));
            }
        }
        Ok(self.written())
    }

    fn member(
        &mut self,
        _room: RoomId,
        _tenant: &Arc<str>,
        _name: &Arc<str>,
        _user: &str,
        _joined: bool,
    ) -> Result<Lsn> {
        Ok(self.written())
    }

    fn cursor(
        &mut self,
        _room: RoomId,
        _tenant: &Arc<str>,
        _name: &Arc<str>,
        _user: &str,
        _cursors: (u64, u64),
    ) -> Result<Lsn> {
        Ok(self.written())
    }

    fn range(&self, room: RoomId, from: Seq, to: Seq) -> Vec<StoredMessage> {
        let Some(log) = self.rooms.get(&room) else {
            return Vec::new();
        };
        let Some(first) = log.messages.front().map(|m| m.seq) else {
            return Vec::new();
        };
        let start = from.0.max(first.0) - first.0;
        let end = (to.0 + 1).saturating_sub(first.0);
        log.messages
            .range(start.min(end) as usize..(end as usize).min(log.messages.len()))
            .cloned()
            .collect()
    }

    fn first_seq(&self, room: RoomId, last_seq: Seq) -> Seq {
        self.rooms
            .get(&room)
            .and_then(|log| log.messages.front())
            .map_or(last_seq.next(), |m| m.seq)
    }

    fn find_cid(&self, room: RoomId, from: &str, cid: &str) -> Option<(Seq, u64)> {
        let log = self.rooms.get(&room)?;
        log.cids.get(&(Arc::from(from), Arc::from(cid))).copied()
    }

    fn put_state(&mut self, space: &str, key: &str, value: Option<&str>) -> Result<Lsn> {
        let k = (space.to_owned(), key.to_owned());
        match value {
            Some(v) => self.states.insert(k, v.to_owned()),
            None => self.states.remove(&k),
        };
        Ok(self.written())
    }

    fn states(&self, space: &str) -> Vec<(String, String)> {
        self.states
            .iter()
            .filter(|((s, _), _)| s == space)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }

    fn durability(&self) -> &Arc<Durability> {
        &self.durability
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{FrameBuilder, Opcode};

    fn msg(room: u32, seq: u64, cid: &str) -> StoredMessage {
        let mut fb = FrameBuilder::new(Opcode::Text, 16);
        fb.buf()
            .extend_from_slice(format!("{{\"seq\":{seq}}}").as_bytes());
        StoredMessage {
            room: RoomId(room),
            seq: Seq(seq),
            ts: seq * 10,
            from: "alice".into(),
            cid: cid.into(),
            frame: fb.finish(),
        }
    }

    fn append(s: &mut MemoryStore, m: StoredMessage) {
        let name: Arc<str> = "general".into();
        s.append(m, &name, &name, "{}").unwrap();
    }

    #[test]
    fn range_and_retention() {
        let mut s = MemoryStore::new(3);
        for i in 1..=5 {
            append(&mut s, msg(1, i, &format!("c{i}")));
        }
        assert_eq!(s.first_seq(RoomId(1), Seq(5)), Seq(3));
        assert_eq!(s.first_seq(RoomId(2), Seq(0)), Seq(1));
        let seqs: Vec<u64> = s
            .range(RoomId(1), Seq(1), Seq(4))
            .iter()
            .map(|m| m.seq.0)
            .collect();
        assert_eq!(seqs, vec![3, 4]);
        assert!(s.range(RoomId(1), Seq(6), Seq(9)).is_empty());
        assert!(s.range(RoomId(1), Seq(5), Seq(4)).is_empty());
    }

    #[test]
    fn dedupe_follows_retention() {
        let mut s = MemoryStore::new(2);
        append(&mut s, msg(1, 1, "a"));
        assert_eq!(s.find_cid(RoomId(1), "alice", "a"), Some((Seq(1), 10)));
        append(&mut s, msg(1, 2, "b"));
        append(&mut s, msg(1, 3, "c"));
        assert_eq!(s.find_cid(RoomId(1), "alice", "a"), None);
        assert_eq!(s.find_cid(RoomId(1), "bob", "b"), None);
    }

    #[test]
    fn json_slices_off_the_header() {
        let m = msg(1, 7, "x");
        assert_eq!(m.json(), b"{\"seq\":7}");
        let mut fb = FrameBuilder::new(Opcode::Text, 300);
        fb.buf().extend(std::iter::repeat_n(b'a', 300));
        let big = StoredMessage {
            frame: fb.finish(),
            ..m
        };
        assert_eq!(big.json().len(), 300);
    }
}
