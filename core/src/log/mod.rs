//! The durable log: the message store that survives crashes.
//!
//! - [`record`]: the checksummed record format; [`segment`]: segment files.
//! - [`commit`]: the group-commit thread and the durable position replies wait for.
//! - [`recovery`]: the start-up scan that cuts a torn tail and rebuilds the state.
//!
//! In memory the log keeps, per room, 24 bytes per retained message (its location, time
//! and dedupe key), the dedupe table, and a window of the newest encoded `msg` frames.
//! Older messages are read from disk one record at a time.

pub mod commit;
pub mod record;
pub mod recovery;
pub mod segment;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::frames;
use crate::ids::{RoomId, Seq};
use crate::store::{MemberState, MessageStore, RecoveredRoom, StoredMessage};
use crate::sync::lock;

pub use commit::{Durability, FsyncPolicy, Lsn};
use record::Record;
pub use recovery::{Hole, RecoveryError, Report};
use segment::Loc;

/// How far a seq lease reaches past the seq that renews it: a lease record is written
/// about once per `LEASE / 2` seqs of the busiest room.
const LEASE: u64 = 1 << 16;
/// The control-plane space of the log's own values.
const LOG_SPACE: &str = "rushhour.log";
/// Its key for [`MessageStore::new_room_seq`].
const NEW_ROOM_SEQ: &str = "new_room_seq";

/// How the log is kept.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// When to fsync.
    pub fsync: FsyncPolicy,
    /// Step over damage, keeping every intact record, instead of refusing to start.
    pub repair: bool,
    /// A segment is sealed once it reaches this size.
    pub segment_bytes: u32,
    /// Encoded messages kept in memory per room, for replay without disk reads.
    pub window: usize,
    /// Messages retained per room; older ones are dropped.
    pub max_per_room: u64,
    /// Age after which messages are dropped, ms (None: kept until `max_per_room`).
    pub retention_ms: Option<u64>,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            fsync: FsyncPolicy::Batch,
            repair: false,
            segment_bytes: 64 << 20,
            window: 10_000,
            max_per_room: 1_000_000,
            retention_ms: None,
        }
    }
}

/// One retained message: where it is, when it was sent, its dedupe key.
#[derive(Clone, Copy, Debug)]
struct Entry {
    loc: Loc,
    ts: u64,
    key: u64,
}

/// A room as the log knows it.
#[derive(Debug)]
struct RoomLog {
    tenant: Arc<str>,
    name: Arc<str>,
    /// Newest seq appended (retained or not).
    last_seq: Seq,
    /// Seq of `entries[0]`.
    first: Seq,
    /// One entry per retained seq from `first` on, except the seqs in `holes`.
    entries: VecDeque<Entry>,
    /// Runs of seqs among the entries that have no message, (first seq, count),
    /// ascending: lost to damage a repair stepped over, or never used after it. Empty
    /// but after a repair, so lookups stay an index.
    holes: VecDeque<(Seq, u64)>,
    /// The newest encoded messages, a suffix of `entries` with no hole.
    window: VecDeque<StoredMessage>,
    /// Dedupe key of (from, cid) → seq, for every retained message.
    cids: HashMap<u64, Seq>,
    /// Oldest segment holding a record that recovery needs for this room's seq counter,
    /// members or cursors; segments before it can go once no retained message is in them.
    state_segment: u32,
}

impl RoomLog {
    fn new(tenant: Arc<str>, name: Arc<str>, segment: u32) -> Self {
        RoomLog {
            tenant,
            name,
            last_seq: Seq(0),
            first: Seq(1),
            entries: VecDeque::new(),
            holes: VecDeque::new(),
            window: VecDeque::new(),
            cids: HashMap::new(),
            state_segment: segment,
        }
    }

    /// The seq after the newest entry.
    fn end(&self) -> Seq {
        let holes: u64 = self.holes.iter().map(|h| h.1).sum();
        Seq(self.first.0 + self.entries.len() as u64 + holes)
    }

    /// The index of `seq`'s entry, or the next seq that may have one.
    fn index(&self, seq: Seq) -> Result<usize, Seq> {
        if seq < self.first {
            return Err(self.first);
        }
        let mut skipped = 0;
        for &(start, n) in &self.holes {
            if seq < start {
                break;
            }
            if seq.0 < start.0 + n {
                return Err(Seq(start.0 + n));
            }
            skipped += n;
        }
        let i = (seq.0 - self.first.0 - skipped) as usize;
        if i < self.entries.len() {
            Ok(i)
        } else {
            Err(Seq(u64::MAX))
        }
    }

    /// Adds the entry of `seq` (above every entry); returns whether seqs were skipped,
    /// which empties the window (it never spans a hole).
    fn push_entry(&mut self, seq: Seq, entry: Entry) -> bool {
        let mut skipped = false;
        if self.entries.is_empty() {
            self.first = seq;
            self.holes.clear();
        } else {
            let end = self.end();
            if seq > end {
                self.holes.push_back((end, seq.0 - end.0));
                self.window.clear();
                skipped = true;
            }
        }
        self.entries.push_back(entry);
        skipped
    }

    /// The lowest seq such that `[from, to]` holds `limit` entries (or all of them).
    fn newest_from(&self, to: Seq, limit: u64) -> Seq {
        let mut from = Seq(to.0.saturating_sub(limit.saturating_sub(1)).max(1));
        if self.holes.is_empty() {
            return from;
        }
        loop {
            let missing: u64 = self
                .holes
                .iter()
                .map(|&(s, n)| {
                    let (lo, hi) = (s.0.max(from.0), (s.0 + n - 1).min(to.0));
                    hi.saturating_sub(lo) + u64::from(hi >= lo)
                })
                .sum();
            let want = Seq(to
                .0
                .saturating_sub((limit + missing).saturating_sub(1))
                .max(1));
            if want >= from || from <= self.first {
                return from;
            }
            from = want;
        }
    }

    fn pop_oldest(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            if self.cids.get(&e.key) == Some(&self.first) {
                self.cids.remove(&e.key);
            }
            if self.window.front().is_some_and(|m| m.seq == self.first) {
                self.window.pop_front();
            }
            self.first = self.first.next();
            if let Some(&(start, n)) = self.holes.front() {
                if start == self.first {
                    self.first = Seq(start.0 + n);
                    self.holes.pop_front();
                }
            }
        }
    }

    fn trim_to(&mut self, max: u64) {
        while self.entries.len() as u64 > max {
            self.pop_oldest();
        }
    }

    fn trim_older_than(&mut self, cutoff_ms: u64) {
        while self.entries.front().is_some_and(|e| e.ts < cutoff_ms) {
            self.pop_oldest();
        }
    }
}

/// The durable message store.
pub struct Log {
    dir: PathBuf,
    opts: LogOptions,
    rooms: Vec<RoomLog>,
    appender: commit::Appender,
    files: Mutex<HashMap<u32, Arc<File>>>,
    hasher: RandomState,
    recovered: Vec<RecoveredRoom>,
    report: Report,
    scratch: Vec<u8>,
    /// Dead segments to remove once the records carried out of them are durable.
    doomed: Option<(Vec<u32>, Lsn)>,
    /// Control-plane values (meetings, seats…) by (space, key), with the segment of the
    /// record that set them.
    states: States,
    /// No seq above this is given before a new lease record is written.
    lease: u64,
    /// The segment that holds the newest lease record.
    lease_segment: u32,
    /// See [`MessageStore::new_room_seq`].
    new_room_seq: Seq,
}

/// Control-plane values by (space, key): the segment of the record that set them, and
/// the value.
type States = HashMap<(Box<str>, Box<str>), (u32, Box<str>)>;

fn set_state(states: &mut States, space: &str, key: &str, value: Option<&str>, segment: u32) {
    let k = (Box::from(space), Box::from(key));
    match value {
        Some(v) => {
            states.insert(k, (segment, v.into()));
        }
        None => {
            states.remove(&k);
        }
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, recovering what is there, and starts
    /// its commit thread.
    ///
    /// # Errors
    /// As [`recovery::recover`]; I/O errors on the folder.
    pub fn open(dir: &Path, opts: LogOptions, now_wall_ms: u64) -> Result<Log, RecoveryError> {
        fs::create_dir_all(dir)?;
        let mut state = Recovering {
            opts: &opts,
            hasher: RandomState::new(),
            rooms: Vec::new(),
            unencoded: Vec::new(),
            members: Vec::new(),
            states: States::new(),
            index: HashMap::new(),
            gaps: Vec::new(),
            positions: Vec::new(),
            lease: None,
        };
        let mut report = recovery::recover(dir, opts.repair, |r, loc| state.apply(r, loc))?;
        report.cuts.append(&mut state.gaps);
        let repaired = Repaired::bound(&mut state, &report)?;
        report.cuts.extend(repaired.lines.iter().cloned());
        let Recovering {
            hasher,
            mut rooms,
            unencoded,
            members,
            states,
            lease,
            ..
        } = state;
        for (i, (room, tail)) in rooms.iter_mut().zip(unencoded).enumerate() {
            // Only a full window leaves messages unencoded: they are all retained.
            let encoded: Vec<_> = tail
                .iter()
                .map(|m| m.encode(RoomId(i as u32), &room.name))
                .collect();
            room.window.extend(encoded);
        }
        if let Some(age) = opts.retention_ms {
            for room in &mut rooms {
                room.trim_older_than(now_wall_ms.saturating_sub(age));
            }
        }
        let recovered = rooms
            .iter()
            .zip(members)
            .map(|(r, members)| RecoveredRoom {
                tenant: r.tenant.clone(),
                name: r.name.clone(),
                last_seq: r.last_seq,
                members: members.into_iter().map(|(u, (d, r))| (u, d, r)).collect(),
            })
            .collect();
        let (segment, len) = report.tail;
        let appender = commit::Appender::start(
            dir.into(),
            segment.max(1),
            len,
            opts.fsync,
            opts.segment_bytes,
        )?;
        let new_room_seq = states
            .get(&(LOG_SPACE.into(), NEW_ROOM_SEQ.into()))
            .and_then(|(_, v)| v.parse().ok())
            .map_or(Seq(0), Seq);
        let mut log = Log {
            dir: dir.into(),
            opts,
            rooms,
            lease_segment: appender.segment(),
            appender,
            files: Mutex::new(HashMap::new()),
            hasher,
            recovered,
            report,
            scratch: Vec::new(),
            doomed: None,
            states,
            lease: lease.map_or(0, |l| l.0),
            new_room_seq,
        };
        if !log.report.holes.is_empty() {
            log.record_repair(&repaired)?;
        }
        Ok(log)
    }

    /// Makes what a repair decided durable before any new seq is given: the raised
    /// room counters, the seq new rooms count from, the first segment, a new lease.
    fn record_repair(&mut self, repaired: &Repaired) -> Result<(), RecoveryError> {
        let failed = |e: Error| RecoveryError::Io(std::io::Error::other(e.to_string()));
        for &(i, last_seq) in &repaired.raised {
            let (tenant, room) = (self.rooms[i].tenant.clone(), self.rooms[i].name.clone());
            self.push(&Record::Room {
                tenant: &tenant,
                room: &room,
                last_seq,
            })
            .map_err(failed)?;
        }
        if repaired.new_room_seq > self.new_room_seq {
            self.new_room_seq = repaired.new_room_seq;
            let value = repaired.new_room_seq.0.to_string();
            self.put_state(LOG_SPACE, NEW_ROOM_SEQ, Some(&value))
                .map_err(failed)?;
        }
        if let Some(segment) = self.report.first {
            self.push(&Record::First { segment }).map_err(failed)?;
        }
        let top = self.rooms.iter().map(|r| r.last_seq.0).max().unwrap_or(0);
        self.lease = self.lease.max(top).max(self.new_room_seq.0) + LEASE;
        let up_to = self.lease;
        let (lsn, _) = self.push(&Record::Lease { up_to }).map_err(failed)?;
        self.appender
            .durability()
            .wait(lsn, std::time::Duration::from_secs(60))
            .map_err(|reason| RecoveryError::Io(std::io::Error::other(reason.to_string())))
    }

    /// What recovery found and cut.
    pub fn report(&self) -> &Report {
        &self.report
    }

    fn key(&self, from: &str, cid: &str) -> u64 {
        self.hasher.hash_one((from, cid))
    }

    fn room(&mut self, id: RoomId, tenant: &Arc<str>, name: &Arc<str>) -> &mut RoomLog {
        let at = id.0 as usize;
        let segment = self.appender.segment();
        while self.rooms.len() <= at {
            // Ids are dense; a room interned but never written yet has no names here.
            self.rooms.push(RoomLog::new("".into(), "".into(), segment));
        }
        let r = &mut self.rooms[at];
        if r.name.is_empty() {
            (r.tenant, r.name) = (tenant.clone(), name.clone());
        }
        r
    }

    /// Queues a record. The first record of each new segment is followed by the current
    /// lease, so that every segment bounds the seqs given before it.
    fn push(&mut self, record: &Record<'_>) -> Result<(Lsn, Loc)> {
        let pushed = self.push_one(record)?;
        if pushed.1.segment() != self.lease_segment {
            self.lease_segment = pushed.1.segment();
            let up_to = self.lease;
            self.push_one(&Record::Lease { up_to })?;
        }
        Ok(pushed)
    }

    fn push_one(&mut self, record: &Record<'_>) -> Result<(Lsn, Loc)> {
        self.scratch.clear();
        record.encode(&mut self.scratch);
        self.appender.push(&self.scratch).map_err(|reason| {
            Error::Internal(format!("the log is not taking writes: {reason}").into())
        })
    }

    fn file(&self, segment: u32) -> std::io::Result<Arc<File>> {
        let mut files = lock(&self.files);
        if let Some(f) = files.get(&segment) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(segment::path(&self.dir, segment))?);
        files.insert(segment, f.clone());
        Ok(f)
    }

    /// Reads one retained message from disk.
    fn read(&self, room: RoomId, seq: Seq, loc: Loc) -> Option<StoredMessage> {
        let mut buf = Vec::new();
        let read = self
            .file(loc.segment())
            .and_then(|f| segment::read_at(&f, loc.offset(), &mut buf));
        if let Err(e) = read {
            eprintln!("rushhour: reading seq {seq} at {loc:?}: {e}");
            return None;
        }
        match record::decode(&buf).ok()?.0 {
            Record::Message {
                room: name,
                seq: s,
                ts,
                from,
                cid,
                body,
                ..
            } if s == seq.0 => Some(StoredMessage {
                room,
                seq,
                ts,
                from: from.into(),
                cid: cid.into(),
                frame: frames::msg(name, seq, from, cid, ts, body),
            }),
            _ => None,
        }
    }

    /// Drops sealed segments that hold no retained message. The room counters,
    /// memberships and cursors recorded only there are appended again first (`members`
    /// gives a room's current ones), and the files go at a later call, once those copies
    /// are durable (never waiting under the broker's lock).
    fn drop_dead_segments(&mut self, members: &dyn Fn(RoomId) -> Vec<MemberState>) -> Result<()> {
        if let Some((segments, lsn)) = self.doomed.take() {
            if self.appender.durability().durable() < lsn {
                self.doomed = Some((segments, lsn));
                return Ok(());
            }
            let mut files = lock(&self.files);
            for n in segments {
                files.remove(&n);
                if let Err(e) = fs::remove_file(segment::path(&self.dir, n)) {
                    eprintln!("rushhour: removing segment {n}: {e}");
                }
            }
        }
        if !self.appender.sealed_are_durable() {
            return Ok(()); // A sealed segment may still be written to: next time.
        }
        let current = self.appender.segment();
        let live = self
            .rooms
            .iter()
            .filter_map(|r| r.entries.front().map(|e| e.loc.segment()))
            .min()
            .unwrap_or(current)
            .min(current);
        let dead: Vec<u32> = segment::list(&self.dir)
            .map_err(|e| Error::Internal(e.to_string().into()))?
            .into_iter()
            .filter(|&n| n < live)
            .collect();
        let Some(&newest_dead) = dead.last() else {
            return Ok(());
        };
        for i in 0..self.rooms.len() {
            let r = &self.rooms[i];
            if r.state_segment > newest_dead {
                continue;
            }
            let (tenant, name, last_seq) = (r.tenant.clone(), r.name.clone(), r.last_seq.0);
            self.push(&Record::Room {
                tenant: &tenant,
                room: &name,
                last_seq,
            })?;
            for (user, delivered, read) in members(RoomId(i as u32)) {
                let (tenant, room, user) = (&*tenant, &*name, &*user);
                let joined = true;
                self.push(&Record::Member {
                    tenant,
                    room,
                    user,
                    joined,
                })?;
                self.push(&Record::Cursor {
                    tenant,
                    room,
                    user,
                    delivered,
                    read,
                })?;
            }
            self.rooms[i].state_segment = self.appender.segment();
        }
        let old: Vec<_> = self
            .states
            .iter()
            .filter(|(_, (segment, _))| *segment <= newest_dead)
            .map(|((space, key), (_, value))| (space.clone(), key.clone(), value.clone()))
            .collect();
        for (space, key, value) in old {
            self.put_state(&space, &key, Some(&value))?;
        }
        // The next start then knows those segments went on purpose, and can still bound
        // seqs when the lease record was in one of them.
        self.push(&Record::First { segment: live })?;
        let up_to = self.lease;
        self.push(&Record::Lease { up_to })?;
        self.doomed = Some((dead, self.appender.last()));
        Ok(())
    }
}

impl MessageStore for Log {
    fn recovered(&mut self) -> Vec<RecoveredRoom> {
        std::mem::take(&mut self.recovered)
    }

    fn append(
        &mut self,
        msg: StoredMessage,
        tenant: &Arc<str>,
        name: &Arc<str>,
        body: &str,
    ) -> Result<Lsn> {
        if msg.seq.0 + LEASE / 2 > self.lease {
            // Durable before the message (records are durable in order): a seq beyond
            // every lease is never acknowledged.
            self.lease = msg.seq.0 + LEASE;
            let up_to = self.lease;
            self.push(&Record::Lease { up_to })?;
        }
        let (lsn, loc) = self.push(&Record::Message {
            tenant,
            room: name,
            seq: msg.seq.0,
            ts: msg.ts,
            from: &msg.from,
            cid: &msg.cid,
            body,
        })?;
        let key = self.key(&msg.from, &msg.cid);
        let (max, window) = (self.opts.max_per_room, self.opts.window);
        let room = self.room(msg.room, tenant, name);
        room.last_seq = msg.seq;
        let entry = Entry {
            loc,
            ts: msg.ts,
            key,
        };
        room.push_entry(msg.seq, entry);
        room.cids.insert(key, msg.seq);
        room.window.push_back(msg);
        while room.window.len() > window {
            room.window.pop_front();
        }
        room.trim_to(max);
        Ok(lsn)
    }

    fn member(
        &mut self,
        room: RoomId,
        tenant: &Arc<str>,
        name: &Arc<str>,
        user: &str,
        joined: bool,
    ) -> Result<Lsn> {
        self.room(room, tenant, name);
        let (lsn, _) = self.push(&Record::Member {
            tenant,
            room: name,
            user,
            joined,
        })?;
        Ok(lsn)
    }

    fn cursor(
        &mut self,
        room: RoomId,
        tenant: &Arc<str>,
        name: &Arc<str>,
        user: &str,
        (delivered, read): (u64, u64),
    ) -> Result<Lsn> {
        self.room(room, tenant, name);
        let (tenant, room) = (&**tenant, &**name);
        let (lsn, _) = self.push(&Record::Cursor {
            tenant,
            room,
            user,
            delivered,
            read,
        })?;
        Ok(lsn)
    }

    fn put_state(&mut self, space: &str, key: &str, value: Option<&str>) -> Result<Lsn> {
        let (lsn, loc) = self.push(&Record::State { space, key, value })?;
        set_state(&mut self.states, space, key, value, loc.segment());
        Ok(lsn)
    }

    fn states(&self, space: &str) -> Vec<(String, String)> {
        let mut items: Vec<(String, String)> = self
            .states
            .iter()
            .filter(|((s, _), _)| &**s == space)
            .map(|((_, key), (_, value))| (key.to_string(), value.to_string()))
            .collect();
        items.sort();
        items
    }

    fn range(&self, room: RoomId, from: Seq, to: Seq) -> Vec<StoredMessage> {
        let Some(r) = self.rooms.get(room.0 as usize) else {
            return Vec::new();
        };
        let from = from.max(r.first);
        let to = to.min(r.last_seq);
        let window_first = r.window.front().map_or(r.last_seq.next(), |m| m.seq);
        let mut out = Vec::new();
        let mut seq = from;
        while seq <= to && seq < window_first {
            let entry = match r.index(seq) {
                Ok(i) => r.entries[i],
                Err(next) => {
                    seq = next; // A hole: no message there.
                    continue;
                }
            };
            match self.read(room, seq, entry.loc) {
                Some(m) => out.push(m),
                None => break, // Reported; the replay resumes from what can be read.
            }
            seq = seq.next();
        }
        if seq <= to {
            let start = (seq.0 - window_first.0) as usize;
            let end = ((to.0 - window_first.0) as usize + 1).min(r.window.len());
            out.extend(r.window.range(start..end).cloned());
        }
        out
    }

    fn newest(&self, room: RoomId, to: Seq, limit: u64) -> Vec<StoredMessage> {
        let Some(r) = self.rooms.get(room.0 as usize) else {
            return Vec::new();
        };
        self.range(room, r.newest_from(to.min(r.last_seq), limit), to)
    }

    fn new_room_seq(&self) -> Seq {
        self.new_room_seq
    }

    fn first_seq(&self, room: RoomId, last_seq: Seq) -> Seq {
        self.rooms
            .get(room.0 as usize)
            .filter(|r| !r.entries.is_empty())
            .map_or(last_seq.next(), |r| r.first)
    }

    fn find_cid(&self, room: RoomId, from: &str, cid: &str) -> Option<(Seq, u64)> {
        let r = self.rooms.get(room.0 as usize)?;
        let seq = *r.cids.get(&self.key(from, cid))?;
        let entry = r.entries[r.index(seq).ok()?];
        let same = |m: &StoredMessage| &*m.from == from && &*m.cid == cid;
        let window_first = r.window.front().map_or(r.last_seq.next(), |m| m.seq);
        let matches = if seq >= window_first {
            same(&r.window[(seq.0 - window_first.0) as usize])
        } else {
            // A 64-bit key collision is possible only in theory; check the record.
            self.read(room, seq, entry.loc).is_none_or(|m| same(&m))
        };
        matches.then_some((seq, entry.ts))
    }

    fn durability(&self) -> &Arc<Durability> {
        self.appender.durability()
    }

    fn maintain(
        &mut self,
        now_wall_ms: u64,
        members: &dyn Fn(RoomId) -> Vec<MemberState>,
    ) -> Result<()> {
        if let Some(age) = self.opts.retention_ms {
            for r in &mut self.rooms {
                r.trim_older_than(now_wall_ms.saturating_sub(age));
            }
        }
        self.drop_dead_segments(members)
    }
}

/// A message read during recovery once its room's window was full: kept as its fields
/// until the scan ends, and encoded only if it is still among the newest then (in a long
/// room most are pushed out again, and encoding was a third of the recovery's time).
struct Unencoded {
    seq: Seq,
    ts: u64,
    /// `from`, `cid` and `body`, one after the other.
    text: Box<str>,
    from_len: usize,
    cid_len: usize,
}

impl Unencoded {
    fn new(seq: Seq, ts: u64, from: &str, cid: &str, body: &str) -> Self {
        Unencoded {
            seq,
            ts,
            text: [from, cid, body].concat().into(),
            from_len: from.len(),
            cid_len: cid.len(),
        }
    }

    fn encode(&self, room: RoomId, name: &str) -> StoredMessage {
        let (from, rest) = self.text.split_at(self.from_len);
        let (cid, body) = rest.split_at(self.cid_len);
        StoredMessage {
            room,
            seq: self.seq,
            ts: self.ts,
            from: from.into(),
            cid: cid.into(),
            frame: frames::msg(name, self.seq, from, cid, self.ts, body),
        }
    }
}

/// The state rebuilt record by record during recovery.
struct Recovering<'a> {
    opts: &'a LogOptions,
    hasher: RandomState,
    rooms: Vec<RoomLog>,
    /// Per room (same index), the newest messages not encoded yet: they follow `window`.
    unencoded: Vec<VecDeque<Unencoded>>,
    /// Per room (same index), members and their (delivered, read) cursors.
    members: Vec<HashMap<Arc<str>, (u64, u64)>>,
    states: States,
    index: HashMap<(Arc<str>, Arc<str>), usize>,
    gaps: Vec<String>,
    /// Per room (same index), the place of its newest message or counter record: its
    /// seq counter there is exact.
    positions: Vec<Option<Loc>>,
    /// The highest lease read, and the place of the newest lease record.
    lease: Option<(u64, Loc)>,
}

impl Recovering<'_> {
    fn room(&mut self, tenant: &str, name: &str, segment: u32) -> usize {
        let key: (Arc<str>, Arc<str>) = (tenant.into(), name.into());
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        self.rooms
            .push(RoomLog::new(key.0.clone(), key.1.clone(), segment));
        self.unencoded.push(VecDeque::new());
        self.members.push(HashMap::new());
        self.positions.push(None);
        self.index.insert(key, self.rooms.len() - 1);
        self.rooms.len() - 1
    }

    fn apply(&mut self, record: Record<'_>, loc: Loc) {
        match record {
            Record::State { space, key, value } => {
                set_state(&mut self.states, space, key, value, loc.segment());
                return;
            }
            Record::Lease { up_to } => {
                let top = self.lease.map_or(up_to, |(l, _)| l.max(up_to));
                self.lease = Some((top, loc));
                return;
            }
            Record::Seal { .. } | Record::First { .. } => return, // Read by recovery.
            _ => {}
        }
        let Some((tenant, name)) = record.room() else {
            return;
        };
        let i = self.room(tenant, name, loc.segment());
        let window = self.opts.window;
        let key = match record {
            Record::Message { from, cid, .. } => self.hasher.hash_one((from, cid)),
            _ => 0,
        };
        let room = &mut self.rooms[i];
        let unencoded = &mut self.unencoded[i];
        match record {
            Record::Message {
                room: name,
                seq,
                ts,
                from,
                cid,
                body,
                ..
            } => {
                let seq = Seq(seq);
                if seq <= room.last_seq {
                    self.gaps.push(format!(
                        "skipped seq {seq} of room {tenant}/{name} at {loc:?}: seq {} came before",
                        room.last_seq
                    ));
                    return;
                }
                // Seqs skipped here were lost to damage a repair stepped over (this start
                // or an earlier one): the messages on both sides are kept, and the window
                // starts again after the hole.
                if room.push_entry(seq, Entry { loc, ts, key }) {
                    unencoded.clear();
                }
                room.last_seq = seq;
                self.positions[i] = Some(loc);
                room.cids.insert(key, seq);
                if room.window.len() < window && unencoded.is_empty() {
                    room.window.push_back(StoredMessage {
                        room: RoomId(i as u32),
                        seq,
                        ts,
                        from: from.into(),
                        cid: cid.into(),
                        frame: frames::msg(name, seq, from, cid, ts, body),
                    });
                } else {
                    unencoded.push_back(Unencoded::new(seq, ts, from, cid, body));
                    if room.window.pop_front().is_none() {
                        unencoded.pop_front();
                    }
                }
                room.trim_to(self.opts.max_per_room);
            }
            Record::Member { user, joined, .. } => {
                if joined {
                    self.members[i].entry(user.into()).or_insert((0, 0));
                } else {
                    self.members[i].remove(user);
                }
            }
            Record::Cursor {
                user,
                delivered,
                read,
                ..
            } => {
                if let Some(c) = self.members[i].get_mut(user) {
                    *c = (c.0.max(delivered), c.1.max(read));
                }
            }
            Record::State { .. }
            | Record::Lease { .. }
            | Record::Seal { .. }
            | Record::First { .. } => unreachable!("handled above"),
            Record::Room { last_seq, .. } => {
                // The counter carried forward (by retention, or raised by a repair): the
                // messages read before it stay, and the next one may leave a hole.
                room.last_seq = room.last_seq.max(Seq(last_seq));
                self.positions[i] = Some(loc);
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// What a repair decided about seqs: no seq that may have been acknowledged in the
/// records it stepped over is given again.
///
/// Why bounds and not a scan of the damaged bytes: a damaged record's seq cannot be
/// trusted, and a hole may have lost whole records. So each room's next seq comes from
/// what is certain: the seqs of a room grow with its records' places in the log, so a
/// room with an intact message (or counter) after every hole lost nothing above it;
/// for the others, a hole of `b` bytes held at most `b / MIN_MESSAGE` messages, and the
/// newest lease record (written before any seq passes it, and again in every segment)
/// bounds every room at its place, plus what the holes after it can hold. A room known
/// only by its members, or not at all (every record lost), takes the lease bound; when
/// there is none (a hole of unknown size after the newest lease: the newest segment
/// missing), the repair refuses rather than guess.
#[derive(Default)]
struct Repaired {
    /// Rooms (by index) whose counter is raised, and to what.
    raised: Vec<(usize, u64)>,
    /// The seq new rooms count from.
    new_room_seq: Seq,
    /// Report lines.
    lines: Vec<String>,
}

impl Repaired {
    fn bound(state: &mut Recovering<'_>, report: &Report) -> Result<Repaired, RecoveryError> {
        let holes = &report.holes;
        let mut out = Repaired::default();
        if holes.is_empty() {
            return Ok(out);
        }
        // Messages the holes after `at` may have held; None when one has no known size.
        let lost = |at: Loc| -> Option<u64> {
            holes
                .iter()
                .filter(|h| h.at > at)
                .map(|h| h.bytes.map(|b| b / record::MIN_MESSAGE))
                .sum()
        };
        let unbounded = |what: &str| {
            let hole = holes
                .iter()
                .find(|h| h.bytes.is_none())
                .map_or("", |h| &h.what);
            RecoveryError::Unrepairable(format!(
                "{what} may have lost messages where {hole}, and no later record bounds \
                 their seqs, so new messages could be given seqs already acknowledged. \
                 Restore the missing data, or move the log aside"
            ))
        };
        let global = state.lease.and_then(|(up_to, at)| Some(up_to + lost(at)?));
        for (i, room) in state.rooms.iter_mut().enumerate() {
            let own = match state.positions[i] {
                Some(at) if !holes.iter().any(|h| h.at > at) => continue, // Exact.
                Some(at) => lost(at).map(|n| room.last_seq.0 + n),
                None => None,
            };
            let bound = match (own, global) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => {
                    return Err(unbounded(&format!("room {}/{}", room.tenant, room.name)))
                }
            };
            if bound > room.last_seq.0 {
                out.lines.push(format!(
                    "--repair: room {}/{} may have used seqs up to {bound} where records \
                     were lost (its newest readable one is {}); its next message is {}",
                    room.tenant,
                    room.name,
                    room.last_seq,
                    bound + 1
                ));
                room.last_seq = Seq(bound);
                out.raised.push((i, bound));
            }
        }
        let floor = global.ok_or_else(|| unbounded("a room whose every record was lost"))?;
        out.new_room_seq = Seq(floor);
        out.lines.push(format!(
            "--repair: a room whose every record was lost may have used seqs up to \
             {floor}: new rooms count from there"
        ));
        Ok(out)
    }
}
