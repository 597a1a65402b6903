//! Group commit: the broker queues encoded records under its lock; one thread writes
//! everything queued since its last round with one `write` per segment and one `fsync`,
//! then publishes the new durable position. Replies wait for that position, so many
//! sends share one fsync instead of paying one each.
//!
//! A record's position is published as soon as it is durable, also part-way through a
//! round (at a segment rollover the previous segment is synced first), and after a
//! failure the open segment is truncated back to what was published: a reply "not
//! stored" means not stored.
//!
//! A write or fsync error is final: the log stops taking writes (the page cache may have
//! dropped what the failed fsync covered, so retrying could acknowledge lost data), says
//! why, and the broker keeps serving reads.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::record::Record;
use super::segment::{self, MAGIC};
use crate::sync::lock;

/// When the commit thread calls `fsync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every record, one at a time: the slowest, each record durable on its own.
    Always,
    /// After every group of records written together (the default).
    Batch,
    /// Never: records reach the OS before the reply, so they survive a crash of the
    /// process but not of the machine.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "batch" => Ok(FsyncPolicy::Batch),
            "never" => Ok(FsyncPolicy::Never),
            _ => Err(format!("fsync must be always, batch or never, not {s:?}")),
        }
    }
}

/// A position in the log: the number of records appended before and including one.
pub type Lsn = u64;

/// Records queued for one segment.
struct Chunk {
    segment: u32,
    bytes: Vec<u8>,
    last: Lsn,
}

#[derive(Default)]
struct Queue {
    chunks: Vec<Chunk>,
    stop: bool,
    /// The commit thread waits for records: only then does a push wake it (a wake-up
    /// is a syscall, and records come by the ten thousand a second under load).
    idle: bool,
}

#[derive(Default)]
struct Progress {
    durable: Lsn,
    failed: Option<Arc<str>>,
}

/// The durable position and the failure, shared by the log, its commit thread and the
/// engine; the commit thread calls `on_durable` after every round.
#[derive(Default)]
pub struct Durability {
    progress: Mutex<Progress>,
    moved: Condvar,
    on_durable: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = lock(&self.progress);
        f.debug_struct("Durability")
            .field("durable", &p.durable)
            .field("failed", &p.failed)
            .finish_non_exhaustive()
    }
}

impl Durability {
    /// Every record up to this one is durable.
    pub fn durable(&self) -> Lsn {
        lock(&self.progress).durable
    }

    /// Why the log stopped taking writes, if it did.
    pub fn failed(&self) -> Option<Arc<str>> {
        lock(&self.progress).failed.clone()
    }

    /// Sets what runs after each commit round (once; later calls are ignored).
    pub fn on_durable(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_durable.set(f);
    }

    /// Blocks until `lsn` is durable, the log failed, or `timeout` passed.
    ///
    /// # Errors
    /// The failure's reason, or a timeout message.
    pub fn wait(&self, lsn: Lsn, timeout: Duration) -> Result<(), Arc<str>> {
        let deadline = Instant::now() + timeout;
        let mut p = lock(&self.progress);
        loop {
            if p.durable >= lsn {
                return Ok(());
            }
            if let Some(reason) = &p.failed {
                return Err(reason.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("timed out waiting for the log".into());
            }
            p = self
                .moved
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn advance(&self, lsn: Lsn) {
        self.reached(lsn);
        self.notify();
    }

    /// Moves the durable position without calling `on_durable`: for a store whose
    /// writes are durable as soon as they are made (the caller releases their effects).
    pub fn reached(&self, lsn: Lsn) {
        lock(&self.progress).durable = lsn;
        self.moved.notify_all();
    }

    pub(crate) fn fail(&self, reason: String) {
        let mut p = lock(&self.progress);
        if p.failed.is_none() {
            eprintln!("rushhour: log stopped taking writes: {reason}");
            p.failed = Some(reason.into());
        }
        drop(p);
        self.moved.notify_all();
        self.notify();
    }

    fn notify(&self) {
        if let Some(f) = self.on_durable.get() {
            f();
        }
    }
}

/// The broker's side: queues records, and knows where each lands.
pub struct Appender {
    shared: Arc<(Mutex<Queue>, Condvar)>,
    durability: Arc<Durability>,
    policy: FsyncPolicy,
    segment_bytes: u32,
    /// The segment records go to, and its length once everything queued is written.
    segment: u32,
    segment_len: u32,
    last: Lsn,
    /// The last record of the previous segments.
    sealed_last: Lsn,
    thread: Option<JoinHandle<()>>,
}

impl Appender {
    /// Starts the commit thread appending to segment `segment`, which is `len` bytes
    /// long (0: not created yet).
    ///
    /// # Errors
    /// When the thread cannot start.
    pub fn start(
        dir: PathBuf,
        segment: u32,
        len: u32,
        policy: FsyncPolicy,
        segment_bytes: u32,
    ) -> io::Result<Appender> {
        let shared = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        let durability = Arc::new(Durability::default());
        let thread = std::thread::Builder::new()
            .name("rushhour-log".into())
            .spawn({
                let shared = shared.clone();
                let durability = durability.clone();
                move || {
                    Committer::new(dir, policy)
                        .reopen(segment)
                        .run(&shared, &durability)
                }
            })?;
        Ok(Appender {
            shared,
            durability,
            policy,
            segment_bytes,
            segment,
            segment_len: len.max(MAGIC.len() as u32),
            last: 0,
            sealed_last: 0,
            thread: Some(thread),
        })
    }

    /// The shared durable position.
    pub fn durability(&self) -> &Arc<Durability> {
        &self.durability
    }

    /// The last record queued.
    pub fn last(&self) -> Lsn {
        self.last
    }

    /// The segment being appended to.
    pub fn segment(&self) -> u32 {
        self.segment
    }

    /// Whether every record of the segments before the current one is on disk (so none
    /// of them is still to be written).
    pub fn sealed_are_durable(&self) -> bool {
        self.durability.durable() >= self.sealed_last
    }

    /// Queues one encoded record; returns its position and where it will be.
    ///
    /// # Errors
    /// The failure's reason once the log stopped taking writes.
    pub fn push(&mut self, record: &[u8]) -> Result<(Lsn, segment::Loc), Arc<str>> {
        if let Some(reason) = self.durability.failed() {
            return Err(reason);
        }
        let len = record.len() as u32;
        if self.segment_len > MAGIC.len() as u32
            && self.segment_len.saturating_add(len) > self.segment_bytes
        {
            self.segment += 1;
            self.segment_len = MAGIC.len() as u32;
            self.sealed_last = self.last;
        }
        let loc = segment::Loc::new(self.segment, self.segment_len);
        self.segment_len += len;
        self.last += 1;
        let (queue, wake) = &*self.shared;
        let mut q = lock(queue);
        match q.chunks.last_mut() {
            Some(c) if c.segment == self.segment && self.policy != FsyncPolicy::Always => {
                c.bytes.extend_from_slice(record);
                c.last = self.last;
            }
            _ => q.chunks.push(Chunk {
                segment: self.segment,
                bytes: record.to_vec(),
                last: self.last,
            }),
        }
        let idle = std::mem::take(&mut q.idle);
        drop(q);
        if idle {
            wake.notify_one();
        }
        Ok((self.last, loc))
    }
}

impl Drop for Appender {
    /// Writes what is queued, then stops the thread.
    fn drop(&mut self) {
        lock(&self.shared.0).stop = true;
        self.shared.1.notify_one();
        if let Some(t) = self.thread.take() {
            // The last owner may be the commit thread itself (its callback held the
            // engine): it then ends on its own after this round.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// The commit thread's state.
struct Committer {
    dir: PathBuf,
    policy: FsyncPolicy,
    open: Option<Open>,
}

/// The segment being written.
struct Open {
    n: u32,
    file: File,
    /// Its length once everything written is on disk.
    len: u64,
    /// Its length covering only records whose position was published: a failure
    /// truncates the file back to it, so that a record answered "not stored" is not.
    published_len: u64,
    /// The last record written and not yet published.
    pending: Option<Lsn>,
}

impl Committer {
    fn new(dir: PathBuf, policy: FsyncPolicy) -> Self {
        Committer {
            dir,
            policy,
            open: None,
        }
    }

    /// Takes up the segment recovery ended in, when it exists: a rollover out of it at
    /// the first write must seal it like any other (a restart that left it unsealed
    /// would read as a cut segment at the next start).
    fn reopen(mut self, n: u32) -> Self {
        let path = segment::path(&self.dir, n);
        if let Ok(file) = OpenOptions::new().append(true).open(&path) {
            match file.metadata() {
                Ok(meta) if meta.len() >= MAGIC.len() as u64 => {
                    let len = meta.len();
                    self.open = Some(Open {
                        n,
                        file,
                        len,
                        published_len: len,
                        pending: None,
                    });
                }
                _ => {} // Shorter than its magic: written anew on first use.
            }
        }
        self
    }

    fn run(mut self, shared: &(Mutex<Queue>, Condvar), durability: &Durability) {
        let (queue, wake) = shared;
        loop {
            let chunks = {
                let mut q = lock(queue);
                while q.chunks.is_empty() && !q.stop {
                    q.idle = true;
                    q = wake.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                q.idle = false;
                if q.chunks.is_empty() {
                    return;
                }
                std::mem::take(&mut q.chunks)
            };
            if durability.failed().is_some() {
                continue; // Nothing more reaches the disk; waiters were told.
            }
            if let Err(e) = self.commit(chunks, durability) {
                let undone = self.undo();
                durability.fail(format!("{e}{undone}"));
            }
        }
    }

    /// Writes the chunks in order, syncing per the policy; publishes the durable
    /// position as soon as records are durable (a failure later in the round leaves them
    /// acknowledged, and only the rest fail).
    fn commit(&mut self, chunks: Vec<Chunk>, durability: &Durability) -> Result<(), String> {
        for chunk in chunks {
            let open = self.file(chunk.segment, durability)?;
            open.file
                .write_all(&chunk.bytes)
                .map_err(|e| format!("write to segment {}: {e}", chunk.segment))?;
            open.len += chunk.bytes.len() as u64;
            open.pending = Some(chunk.last);
            if self.policy == FsyncPolicy::Always {
                self.publish(durability)?;
            }
        }
        self.publish(durability)
    }

    /// Syncs the open segment (unless the policy is `never`) and publishes what it holds.
    fn publish(&mut self, durability: &Durability) -> Result<(), String> {
        let Some(open) = &mut self.open else {
            return Ok(());
        };
        let Some(last) = open.pending else {
            return Ok(());
        };
        if self.policy != FsyncPolicy::Never {
            open.file
                .sync_data()
                .map_err(|e| format!("fsync of segment {}: {e}", open.n))?;
        }
        open.published_len = open.len;
        open.pending = None;
        durability.advance(last);
        Ok(())
    }

    /// After a failure: truncates the open segment to what was published, so that the
    /// records about to be answered "not stored" are not found at the next start. Says
    /// how that went, for the failure's reason.
    fn undo(&mut self) -> String {
        let Some(open) = &mut self.open else {
            return String::new();
        };
        // Always: a failed write may have left part of its bytes even if none was counted.
        let cut = open
            .file
            .set_len(open.published_len)
            .and_then(|()| open.file.sync_data());
        open.len = open.published_len;
        open.pending = None;
        match cut {
            Ok(()) => String::new(),
            Err(e) => format!(
                " (and the unacknowledged records after byte {} of segment {} could not \
                 be removed: {e}; they may be found at the next start)",
                open.published_len, open.n
            ),
        }
    }

    /// The open segment `n`. Moving to a new segment publishes the previous one, creates
    /// the new one with its magic (synced, with its folder), and only then writes and
    /// syncs the seal record that ends the previous one: a seal on disk means the next
    /// segment exists, so recovery can tell a missing segment from a crash.
    fn file(&mut self, n: u32, durability: &Durability) -> Result<&mut Open, String> {
        if self.open.as_ref().is_none_or(|open| open.n != n) {
            self.publish(durability)?;
            let path = segment::path(&self.dir, n);
            let create = || -> io::Result<File> {
                let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
                let len = file.metadata()?.len();
                if len < MAGIC.len() as u64 {
                    file.set_len(0)?;
                    file.write_all(MAGIC)?;
                }
                Ok(file)
            };
            let file = create().map_err(|e| format!("open {}: {e}", path.display()))?;
            if self.policy != FsyncPolicy::Never {
                file.sync_data()
                    .and_then(|()| segment::sync_dir(&self.dir))
                    .map_err(|e| format!("sync of new segment {n}: {e}"))?;
            }
            let len = file
                .metadata()
                .map_err(|e| format!("open {}: {e}", path.display()))?
                .len();
            if let Some(old) = &mut self.open {
                let mut seal = Vec::new();
                Record::Seal { next: n }.encode(&mut seal);
                old.file
                    .write_all(&seal)
                    .map_err(|e| format!("seal of segment {}: {e}", old.n))?;
                old.len += seal.len() as u64;
                if self.policy != FsyncPolicy::Never {
                    old.file
                        .sync_data()
                        .map_err(|e| format!("seal of segment {}: {e}", old.n))?;
                }
                old.published_len = old.len;
            }
            self.open = Some(Open {
                n,
                file,
                len,
                published_len: len,
                pending: None,
            });
        }
        Ok(self.open.as_mut().expect("opened above"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::record::{self, Record};
    use crate::log::recovery;
    use std::fs;

    fn records(from: u64, to: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        for up_to in from..=to {
            Record::Lease { up_to }.encode(&mut bytes);
        }
        bytes
    }

    fn chunk(segment: u32, from: Lsn, to: Lsn) -> Chunk {
        Chunk {
            segment,
            bytes: records(from, to),
            last: to,
        }
    }

    fn recovered(dir: &std::path::Path) -> Vec<u64> {
        let mut got = Vec::new();
        recovery::recover(dir, false, |r, _| {
            if let Record::Lease { up_to } = r {
                got.push(up_to);
            }
        })
        .unwrap();
        got
    }

    /// A round that rolls over to a segment that cannot be created: the records of the
    /// previous segment were synced first and are acknowledged; only the rest fail, and
    /// none of those is found at the next start.
    #[test]
    fn a_failed_rollover_acknowledges_what_is_durable_and_only_that() {
        for policy in [FsyncPolicy::Batch, FsyncPolicy::Always, FsyncPolicy::Never] {
            let dir = tempfile::tempdir().unwrap();
            let durability = Durability::default();
            let mut c = Committer::new(dir.path().into(), policy);
            c.commit(vec![chunk(1, 1, 2)], &durability).unwrap();
            assert_eq!(durability.durable(), 2);
            // The next segment's path is taken by a folder: it cannot be created.
            let blocked = segment::path(dir.path(), 2);
            fs::create_dir(&blocked).unwrap();
            let err = c
                .commit(vec![chunk(1, 3, 5), chunk(2, 6, 9)], &durability)
                .unwrap_err();
            assert!(err.contains("open"), "{err}");
            assert_eq!(
                durability.durable(),
                5,
                "{policy:?}: records 3..=5 are durable"
            );
            assert_eq!(c.undo(), "");
            drop(c);
            fs::remove_dir(&blocked).unwrap();
            assert_eq!(recovered(dir.path()), (1..=5).collect::<Vec<_>>());
        }
    }

    /// A write that fails part-way (here: the record bytes go to a file that refuses
    /// them) is undone: the file is cut back to what was acknowledged.
    #[test]
    fn a_failed_write_is_cut_back_to_what_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let durability = Durability::default();
        let mut c = Committer::new(dir.path().into(), FsyncPolicy::Batch);
        c.commit(vec![chunk(1, 1, 3)], &durability).unwrap();
        // Bytes past the acknowledged length, as a write cut short by a full disk leaves.
        let open = c.open.as_mut().unwrap();
        open.file.write_all(&records(4, 6)[..20]).unwrap();
        open.len += 20;
        open.pending = Some(6);
        assert_eq!(c.undo(), "");
        drop(c);
        let len = fs::metadata(segment::path(dir.path(), 1)).unwrap().len();
        assert_eq!(len, (MAGIC.len() + records(1, 3).len()) as u64);
        assert_eq!(recovered(dir.path()), vec![1, 2, 3]);
        assert_eq!(durability.durable(), 3);
        let _ = record::HEADER;
    }

    /// The seal is written only once the next segment exists: a sealed segment is
    /// followed by its next one, which recovery can then miss.
    #[test]
    fn a_rollover_seals_the_previous_segment_after_creating_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let durability = Durability::default();
        let mut c = Committer::new(dir.path().into(), FsyncPolicy::Batch);
        c.commit(vec![chunk(1, 1, 2), chunk(2, 3, 4)], &durability)
            .unwrap();
        drop(c);
        let mut seals = Vec::new();
        recovery::recover(dir.path(), false, |r, loc| {
            if let Record::Seal { next } = r {
                seals.push((loc.segment(), next));
            }
        })
        .unwrap();
        assert_eq!(seals, vec![(1, 2)]);
        fs::remove_file(segment::path(dir.path(), 2)).unwrap();
        let err = recovery::recover(dir.path(), false, |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("segment 2 is missing"), "{err}");
    }

    /// After a restart in the tail segment, the first rollover out of it seals it: the
    /// next start reads every segment without a cut.
    #[test]
    fn a_rollover_after_a_restart_seals_the_segment_taken_up() {
        let dir = tempfile::tempdir().unwrap();
        let durability = Durability::default();
        let mut c = Committer::new(dir.path().into(), FsyncPolicy::Batch);
        c.commit(vec![chunk(1, 1, 2)], &durability).unwrap();
        drop(c);
        let mut c = Committer::new(dir.path().into(), FsyncPolicy::Batch).reopen(1);
        c.commit(vec![chunk(2, 3, 4)], &durability).unwrap();
        drop(c);
        assert_eq!(recovered(dir.path()), vec![1, 2, 3, 4]);
    }
}
