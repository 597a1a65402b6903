//! The socket writer: the one thread that writes every attached socket.
//!
//! Connections whose queue gained frames are listed as ready; the writer drains each with
//! one `writev` of everything queued (up to [`MAX_IOV`] frames), so a socket gets one
//! syscall per wake-up however many messages arrived meanwhile. A socket that says EAGAIN
//! waits for its writable event (edge-triggered epoll via mio).
//!
//! Queues given a meeting frame for them alone (see [`crate::fanout::Outbox::expedite`])
//! are also listed as urgent, and the writer looks at that list between every two sockets
//! of its round: under a backlog (the 9 a.m. burst) a round over thousands of chat
//! subscribers takes hundreds of milliseconds, and a join's answer must not wait for it.
//!
//! The writer never takes the broker's lock while it holds a queue's lock, and never
//! calls into Python.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::clock::Clock;
use crate::ids::ConnId;
use crate::outbound::{Outbound, Queue, State};
use crate::sync::lock;

/// Frames per `writev`: the kernel's IOV_MAX is 1024; 256 frames already fill a socket
/// buffer many times over at chat sizes.
pub const MAX_IOV: usize = 256;
const WAKE: Token = Token(usize::MAX);
/// How often closing connections are checked against their deadline.
const DEADLINE_TICK: Duration = Duration::from_millis(200);

/// Called by the writer when a connection replaying history has drained enough for more;
/// returns the queues that gained frames.
pub type RefillFn = Box<dyn Fn(ConnId) -> Vec<Arc<Outbound>> + Send + Sync>;

struct Shared {
    ready: Mutex<Vec<Arc<Outbound>>>,
    /// Queues written ahead of the round under way.
    urgent: Mutex<Vec<Arc<Outbound>>>,
    /// Whether `urgent` may be non-empty: the writer checks it between sockets.
    has_urgent: AtomicBool,
    /// True while the writer may be blocked in epoll: only then is a wake-up needed.
    sleeping: AtomicBool,
    stop: AtomicBool,
    waker: Waker,
    registry: Registry,
    /// Every attached queue by token, for writable events and shutdown.
    conns: Mutex<HashMap<usize, Arc<Outbound>>>,
    /// Nanoseconds spent writing so far: the writer's load, for pacing what can wait.
    busy_ns: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn new(poll: &Poll) -> io::Result<Shared> {
        Ok(Shared {
            ready: Mutex::new(Vec::new()),
            urgent: Mutex::new(Vec::new()),
            has_urgent: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            waker: Waker::new(poll.registry(), WAKE)?,
            registry: poll.registry().try_clone()?,
            conns: Mutex::new(HashMap::new()),
            busy_ns: std::sync::atomic::AtomicU64::new(0),
        })
    }
}

/// Handle to the writer thread.
pub struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread.
    ///
    /// # Errors
    /// When epoll or the thread cannot be created.
    pub fn spawn(clock: Clock, refill: RefillFn) -> io::Result<Writer> {
        let poll = Poll::new()?;
        let shared = Arc::new(Shared::new(&poll)?);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("rushhour-writer".into())
            .spawn(move || Loop::new(thread_shared, poll, clock, refill).run())?;
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }

    /// Nanoseconds the writer has spent writing since it started (its load: the share of
    /// wall time it grows by).
    pub fn busy_ns(&self) -> u64 {
        self.shared.busy_ns.load(Ordering::Relaxed)
    }

    /// Takes over writing `out`'s socket.
    ///
    /// # Errors
    /// When the socket cannot be registered with epoll.
    pub fn attach(&self, out: Arc<Outbound>) -> io::Result<()> {
        if let Some(fd) = out.raw_fd() {
            self.shared.registry.register(
                &mut SourceFd(&fd),
                Token(out.conn.0 as usize),
                Interest::WRITABLE,
            )?;
        }
        lock(&self.shared.conns).insert(out.conn.0 as usize, out);
        Ok(())
    }

    /// Lists queues that gained frames; wakes the thread once if it sleeps.
    pub fn schedule(&self, ready: Vec<Arc<Outbound>>) {
        if ready.is_empty() {
            return;
        }
        lock(&self.shared.ready).extend(ready);
        self.wake_if_sleeping();
    }

    /// Lists queues to write ahead of the round under way. Each must also be in the
    /// ready list (or be scheduled there after).
    pub fn schedule_urgent(&self, urgent: Vec<Arc<Outbound>>) {
        if urgent.is_empty() {
            return;
        }
        lock(&self.shared.urgent).extend(urgent);
        self.shared.has_urgent.store(true, Ordering::SeqCst);
        self.wake_if_sleeping();
    }

    /// Wakes the thread if it may be blocked in epoll (a wake-up is a syscall).
    fn wake_if_sleeping(&self) {
        if self.shared.sleeping.load(Ordering::SeqCst) {
            let _ = self.shared.waker.wake();
        }
    }

    /// The session is over: close the socket once its queue is flushed or its close
    /// deadline passes.
    pub fn detach(&self, out: &Arc<Outbound>) {
        out.detached.store(true, Ordering::Release);
        out.scheduled.store(true, Ordering::Release);
        self.schedule(vec![out.clone()]);
    }

    /// Waits until every queue is empty or closed, for at most `timeout`. Returns whether
    /// everything was flushed.
    pub fn wait_flushed(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let pending = lock(&self.shared.conns).values().any(|o| {
                let q = o.lock();
                !q.is_empty() && q.state() != State::Closed
            });
            if !pending {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.shared.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer thread's own state.
struct Loop {
    shared: Arc<Shared>,
    poll: Poll,
    clock: Clock,
    refill: RefillFn,
    /// Queues with a close under way or a detached session: checked against deadlines.
    closing: HashMap<ConnId, Arc<Outbound>>,
    iov: Vec<libc::iovec>,
}

impl Loop {
    fn new(shared: Arc<Shared>, poll: Poll, clock: Clock, refill: RefillFn) -> Self {
        Loop {
            shared,
            poll,
            clock,
            refill,
            closing: HashMap::new(),
            iov: Vec::with_capacity(MAX_IOV),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut batch: Vec<Arc<Outbound>> = Vec::new();
        while !self.shared.stop.load(Ordering::SeqCst) {
            std::mem::swap(&mut batch, &mut *lock(&self.shared.ready));
            if batch.is_empty() {
                self.shared.sleeping.store(true, Ordering::SeqCst);
                if lock(&self.shared.ready).is_empty()
                    && !self.shared.has_urgent.load(Ordering::SeqCst)
                {
                    let timeout = (!self.closing.is_empty()).then_some(DEADLINE_TICK);
                    if let Err(e) = self.poll.poll(&mut events, timeout) {
                        if e.kind() != io::ErrorKind::Interrupted {
                            eprintln!("rushhour writer: epoll failed: {e}");
                        }
                    }
                }
                self.shared.sleeping.store(false, Ordering::SeqCst);
                let conns = lock(&self.shared.conns);
                for event in events.iter().filter(|e| e.token() != WAKE) {
                    if let Some(out) = conns.get(&event.token().0) {
                        out.lock().blocked = false;
                        batch.push(out.clone());
                    }
                }
                drop(conns);
                self.check_deadlines();
            }
            let started = std::time::Instant::now();
            self.flush_urgent();
            for out in batch.drain(..) {
                self.flush_urgent();
                out.scheduled.store(false, Ordering::Release);
                self.flush(&out);
            }
            let spent = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.shared.busy_ns.fetch_add(spent, Ordering::Relaxed);
        }
    }

    /// Writes the queues listed as urgent since the last look, if any.
    fn flush_urgent(&mut self) {
        // A plain load first: this runs between every two sockets.
        if !self.shared.has_urgent.load(Ordering::Acquire)
            || !self.shared.has_urgent.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let urgent = std::mem::take(&mut *lock(&self.shared.urgent));
        for out in urgent {
            out.urgent.store(false, Ordering::Release);
            self.flush(&out);
        }
    }

    /// Writes what `out` has queued, as far as the socket takes it.
    fn flush(&mut self, out: &Arc<Outbound>) {
        let Some(fd) = out.raw_fd() else { return };
        let mut q = out.lock();
        let shut = if q.blocked {
            None
        } else {
            self.write_queue(fd, &mut q)
        };
        let state = q.state();
        let refill = q.wants_refill && q.below_low_water();
        let finished = q.is_empty() || state == State::Closed;
        drop(q);
        if let Some(how) = shut {
            // SAFETY: fd is open (owned by `out`, alive here); shutdown has no memory effects.
            unsafe { libc::shutdown(fd, how) };
        }
        if matches!(state, State::Closing { .. }) || out.detached.load(Ordering::Acquire) {
            self.closing.insert(out.conn, out.clone());
        }
        if refill {
            let ready = (self.refill)(out.conn);
            lock(&self.shared.ready).extend(ready);
        }
        if finished && out.detached.load(Ordering::Acquire) {
            self.release(out);
        }
    }

    /// The writev loop. Returns the `shutdown` mode to apply once the close frame (or a
    /// failure) ended the stream.
    fn write_queue(&mut self, fd: RawFd, q: &mut Queue) -> Option<libc::c_int> {
        loop {
            if q.is_empty() {
                return None;
            }
            let mut slices = Vec::new();
            q.unwritten(MAX_IOV, &mut slices);
            self.iov.clear();
            self.iov.extend(slices.iter().map(|s| libc::iovec {
                iov_base: s.as_ptr() as *mut _,
                iov_len: s.len(),
            }));
            drop(slices);
            // SAFETY: the iovecs point into frames owned by `q`, which is locked and not
            // modified until writev returns.
            let n = unsafe { libc::writev(fd, self.iov.as_ptr(), self.iov.len() as libc::c_int) };
            if n >= 0 {
                let abort = matches!(q.state(), State::Closing { abort: true, .. });
                if q.advance(n as usize) {
                    return Some(if abort {
                        libc::SHUT_RDWR
                    } else {
                        libc::SHUT_WR
                    });
                }
                continue;
            }
            match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock => {
                    q.blocked = true;
                    return None;
                }
                io::ErrorKind::Interrupted => continue,
                // The peer is gone (EPIPE, ECONNRESET…): drop its frames; the reader
                // sees the end of the stream and detaches.
                _ => {
                    q.fail();
                    return Some(libc::SHUT_RDWR);
                }
            }
        }
    }

    /// Forces closes whose deadline passed; forgets those that are done.
    fn check_deadlines(&mut self) {
        let now = self.clock.mono_ms();
        let mut done = Vec::new();
        for (id, out) in &self.closing {
            let mut q = out.lock();
            let expired = match q.state() {
                State::Closing { deadline_ms, .. } => now >= deadline_ms,
                State::Open => false,
                State::Closed => {
                    done.push(*id);
                    false
                }
            };
            if expired {
                q.fail();
                done.push(*id);
                if let Some(fd) = out.raw_fd() {
                    // SAFETY: as in `flush`.
                    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                }
            }
        }
        for id in done {
            if let Some(out) = self.closing.remove(&id) {
                if out.detached.load(Ordering::Acquire) {
                    self.release(&out);
                }
            }
        }
    }

    /// Stops watching a detached socket; its fd closes when the last handle drops.
    fn release(&mut self, out: &Arc<Outbound>) {
        if lock(&self.shared.conns)
            .remove(&(out.conn.0 as usize))
            .is_some()
        {
            if let Some(fd) = out.raw_fd() {
                let _ = self.shared.registry.deregister(&mut SourceFd(&fd));
            }
        }
        self.closing.remove(&out.conn);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    use bytes::Bytes;

    use super::*;
    use crate::outbound::Priority;

    /// A queue writing into one end of a socket pair, with `text` queued.
    fn queue(conn: u64, text: &'static [u8]) -> (Arc<Outbound>, UnixStream) {
        let (ours, peer) = UnixStream::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let out = Arc::new(Outbound::new(
            ConnId(conn),
            Some(OwnedFd::from(ours)),
            1 << 20,
        ));
        out.lock()
            .push_with(Bytes::from_static(text), Priority::Normal, 0, 30_000);
        (out, peer)
    }

    fn received(peer: &mut UnixStream) -> Vec<u8> {
        let mut buf = vec![0; 64];
        match std::io::Read::read(peer, &mut buf) {
            Ok(n) => buf[..n].to_vec(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Vec::new(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn urgent_queues_are_written_ahead_of_the_ready_list() {
        let poll = Poll::new().unwrap();
        let shared = Arc::new(Shared::new(&poll).unwrap());
        let writer = Writer {
            shared: shared.clone(),
            thread: None,
        };
        let mut turn = Loop::new(
            shared.clone(),
            poll,
            Clock::default(),
            Box::new(|_| Vec::new()),
        );
        let ((a, mut pa), (c, mut pc)) = (queue(1, b"chat"), queue(2, b"join"));
        writer.schedule(vec![a.clone(), c.clone()]);
        assert!(c.claim_urgent());
        writer.schedule_urgent(vec![c.clone()]);

        turn.flush_urgent();
        assert_eq!(received(&mut pc), b"join");
        assert!(
            received(&mut pa).is_empty(),
            "the ready list waits its turn"
        );
        assert!(
            !c.urgent.load(Ordering::Acquire),
            "listed again on its next urgent frame"
        );
        assert_eq!(lock(&shared.ready).len(), 2);

        turn.flush_urgent();
        turn.flush(&a);
        assert_eq!(received(&mut pa), b"chat");
        assert!(received(&mut pc).is_empty());
    }
}
