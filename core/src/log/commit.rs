//! Group commit: the broker queues encoded records under its lock; one thread writes
//! everything queued since its last round with one `write` per segment and one `fsync`,
//! then publishes the new durable position. Replies wait for that position, so many
//! sends share one fsync instead of paying one each.
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
                move || Committer::new(dir, policy).run(&shared, &durability)
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
    open: Option<(u32, File)>,
}

impl Committer {
    fn new(dir: PathBuf, policy: FsyncPolicy) -> Self {
        Committer {
            dir,
            policy,
            open: None,
        }
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
                durability.fail(e);
            }
        }
    }

    /// Writes the chunks in order, syncing per the policy; advances the durable position.
    fn commit(&mut self, chunks: Vec<Chunk>, durability: &Durability) -> Result<(), String> {
        let mut last = None;
        for chunk in chunks {
            let file = self.file(chunk.segment)?;
            file.write_all(&chunk.bytes)
                .map_err(|e| format!("write to segment {}: {e}", chunk.segment))?;
            if self.policy == FsyncPolicy::Always {
                self.sync()?;
                durability.advance(chunk.last);
            }
            last = Some(chunk.last);
        }
        if self.policy == FsyncPolicy::Batch {
            self.sync()?;
        }
        if let (Some(last), false) = (last, self.policy == FsyncPolicy::Always) {
            durability.advance(last);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        if let Some((n, file)) = &self.open {
            file.sync_data()
                .map_err(|e| format!("fsync of segment {n}: {e}"))?;
        }
        Ok(())
    }

    /// The open file of segment `n`; moving to a new segment seals the previous one
    /// (synced) and creates the new one with its magic.
    fn file(&mut self, n: u32) -> Result<&mut File, String> {
        if self.open.as_ref().is_none_or(|(open, _)| *open != n) {
            if self.policy != FsyncPolicy::Never {
                self.sync()?;
            }
            let path = segment::path(&self.dir, n);
            let open = || -> io::Result<File> {
                let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
                let len = file.metadata()?.len();
                if len < MAGIC.len() as u64 {
                    file.set_len(0)?;
                    file.write_all(MAGIC)?;
                }
                Ok(file)
            };
            let file = open().map_err(|e| format!("open {}: {e}", path.display()))?;
            if self.policy != FsyncPolicy::Never {
                file.sync_data()
                    .and_then(|()| segment::sync_dir(&self.dir))
                    .map_err(|e| format!("sync of new segment {n}: {e}"))?;
            }
            self.open = Some((n, file));
        }
        Ok(&mut self.open.as_mut().expect("opened above").1)
    }
}
