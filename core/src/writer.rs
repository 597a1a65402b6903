//! The socket thread: the one thread that writes every attached socket, and reads those
//! handed to it.
//!
//! Connections whose queue gained frames are listed as ready; the writer drains each with
//! one `writev` of everything queued (up to [`MAX_IOV`] frames), so a socket gets one
//! syscall per wake-up however many messages arrived meanwhile. A socket that says EAGAIN
//! waits for its writable event (edge-triggered epoll via mio).
//!
//! Reading a socket here keeps Python off the per-frame path: bytes go straight into the
//! broker, hot ops (`send`…) run at once, and only control frames reach Python, through
//! the [`Inbox`]; the connection is not read meanwhile, so order holds and the inbox
//! stays bounded. The thread never takes the broker's lock while it holds a queue's
//! lock, and never calls into Python.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::broker::Inbound;
use crate::clock::Clock;
use crate::ids::ConnId;
use crate::inbox::{ConnEvent, Inbox};
use crate::outbound::{Outbound, Queue, State};

/// Frames per `writev`: the kernel's IOV_MAX is 1024; 256 frames already fill a socket
/// buffer many times over at chat sizes.
pub const MAX_IOV: usize = 256;
const WAKE: Token = Token(usize::MAX);
/// How often closing connections are checked against their deadline.
const DEADLINE_TICK: Duration = Duration::from_millis(200);

/// Bytes read per `read` call.
const READ_BYTES: usize = 64 << 10;
/// Reads per socket before the others get their turn.
const READS_PER_TURN: usize = 4;

/// Called by the writer when a connection replaying history has drained enough for more;
/// returns the queues that gained frames.
pub type RefillFn = Box<dyn Fn(ConnId) -> Vec<Arc<Outbound>> + Send + Sync>;

/// Called with bytes read from a connection; returns the queues that gained frames and
/// what the broker made of the bytes.
pub type ReadFn = Box<dyn Fn(ConnId, &[u8]) -> (Vec<Arc<Outbound>>, Inbound) + Send + Sync>;

struct Shared {
    ready: Mutex<Vec<Arc<Outbound>>>,
    /// Sockets to read whether or not epoll says so (reading resumed after a pause).
    to_read: Mutex<Vec<Arc<Outbound>>>,
    /// True while the writer may be blocked in epoll: only then is a wake-up needed.
    sleeping: AtomicBool,
    stop: AtomicBool,
    waker: Waker,
    registry: Registry,
    /// Every attached queue by token, for writable events and shutdown.
    conns: Mutex<HashMap<usize, Arc<Outbound>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
    pub fn spawn(
        clock: Clock,
        refill: RefillFn,
        on_read: ReadFn,
        inbox: Arc<Inbox>,
    ) -> io::Result<Writer> {
        let poll = Poll::new()?;
        let shared = Arc::new(Shared {
            ready: Mutex::new(Vec::new()),
            to_read: Mutex::new(Vec::new()),
            sleeping: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            waker: Waker::new(poll.registry(), WAKE)?,
            registry: poll.registry().try_clone()?,
            conns: Mutex::new(HashMap::new()),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("rushhour-writer".into())
            .spawn(move || {
                Loop {
                    shared: thread_shared,
                    poll,
                    clock,
                    refill,
                    on_read,
                    inbox,
                    closing: HashMap::new(),
                    draining: HashSet::new(),
                    iov: Vec::with_capacity(MAX_IOV),
                    rbuf: vec![0; READ_BYTES],
                }
                .run()
            })?;
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }

    /// Takes over writing `out`'s socket, and reading it when `read` (reading starts
    /// with [`Writer::start_reading`]).
    ///
    /// # Errors
    /// When the socket cannot be registered with epoll.
    pub fn attach(&self, out: Arc<Outbound>, read: bool) -> io::Result<()> {
        if let Some(fd) = out.raw_fd() {
            let interest = if read {
                Interest::WRITABLE | Interest::READABLE
            } else {
                Interest::WRITABLE
            };
            out.reads.store(read, Ordering::Release);
            out.paused.store(true, Ordering::Release);
            self.shared.registry.register(
                &mut SourceFd(&fd),
                Token(out.conn.0 as usize),
                interest,
            )?;
        }
        lock(&self.shared.conns).insert(out.conn.0 as usize, out);
        Ok(())
    }

    /// (Re)starts reading a socket handed over with `read`: after the handshake, and
    /// after each control frame once it is handled.
    pub fn start_reading(&self, out: &Arc<Outbound>) {
        if out.reads.load(Ordering::Acquire) && out.paused.swap(false, Ordering::AcqRel) {
            lock(&self.shared.to_read).push(out.clone());
            let _ = self.shared.waker.wake();
        }
    }

    /// Lists queues that gained frames; wakes the thread once if it sleeps.
    pub fn schedule(&self, ready: Vec<Arc<Outbound>>) {
        if ready.is_empty() {
            return;
        }
        lock(&self.shared.ready).extend(ready);
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

/// The socket thread's own state.
struct Loop {
    shared: Arc<Shared>,
    poll: Poll,
    clock: Clock,
    refill: RefillFn,
    on_read: ReadFn,
    inbox: Arc<Inbox>,
    /// Queues with a close under way or a detached session: checked against deadlines.
    closing: HashMap<ConnId, Arc<Outbound>>,
    /// Closing connections still read (and the bytes dropped) until the peer's end, so
    /// that unread bytes never turn the close into a reset.
    draining: HashSet<ConnId>,
    iov: Vec<libc::iovec>,
    rbuf: Vec<u8>,
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut batch: Vec<Arc<Outbound>> = Vec::new();
        let mut reads: Vec<Arc<Outbound>> = Vec::new();
        while !self.shared.stop.load(Ordering::SeqCst) {
            std::mem::swap(&mut batch, &mut *lock(&self.shared.ready));
            reads.append(&mut lock(&self.shared.to_read));
            // With work at hand, only look for new events; otherwise sleep in epoll.
            let busy = !batch.is_empty() || !reads.is_empty();
            self.shared.sleeping.store(!busy, Ordering::SeqCst);
            let idle = !busy
                && lock(&self.shared.ready).is_empty()
                && lock(&self.shared.to_read).is_empty();
            let timeout = if idle {
                (!self.closing.is_empty()).then_some(DEADLINE_TICK)
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("rushhour writer: epoll failed: {e}");
                }
            }
            self.shared.sleeping.store(false, Ordering::SeqCst);
            let conns = lock(&self.shared.conns);
            for event in events.iter().filter(|e| e.token() != WAKE) {
                let Some(out) = conns.get(&event.token().0) else {
                    continue;
                };
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    out.lock().blocked = false;
                    batch.push(out.clone());
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    reads.push(out.clone());
                }
            }
            drop(conns);
            if idle {
                self.check_deadlines();
            }
            for out in reads.drain(..) {
                self.read(&out, &mut batch);
            }
            for out in batch.drain(..) {
                out.scheduled.store(false, Ordering::Release);
                self.flush(&out);
            }
        }
    }

    /// Reads what `out`'s socket has (a few reads at most, then the others' turn) into
    /// the broker; queues that gained frames join `batch`.
    fn read(&mut self, out: &Arc<Outbound>, batch: &mut Vec<Arc<Outbound>>) {
        let Some(fd) = out.raw_fd() else { return };
        let conn = out.conn;
        for _ in 0..READS_PER_TURN {
            if out.paused.load(Ordering::Acquire) || out.detached.load(Ordering::Acquire) {
                return;
            }
            // SAFETY: reads into our own buffer of `rbuf.len()` bytes from an open fd.
            let n = unsafe { libc::read(fd, self.rbuf.as_mut_ptr().cast(), self.rbuf.len()) };
            if n == 0 {
                return self.ended(out);
            }
            if n < 0 {
                match io::Error::last_os_error().kind() {
                    io::ErrorKind::WouldBlock => return,
                    io::ErrorKind::Interrupted => continue,
                    _ => return self.ended(out),
                }
            }
            if self.draining.contains(&conn) {
                continue;
            }
            let (ready, inbound) = (self.on_read)(conn, &self.rbuf[..n as usize]);
            batch.extend(ready);
            match inbound {
                Inbound::Idle => {}
                Inbound::Control(text) => {
                    out.paused.store(true, Ordering::Release);
                    self.inbox.push(conn, ConnEvent::Control(text));
                    return;
                }
                Inbound::Closing(code) => {
                    self.draining.insert(conn);
                    self.inbox.push(conn, ConnEvent::Closing(code));
                }
            }
        }
        lock(&self.shared.to_read).push(out.clone());
    }

    /// The peer ended the stream (or the socket failed): stop reading, tell Python.
    fn ended(&mut self, out: &Arc<Outbound>) {
        out.paused.store(true, Ordering::Release);
        self.draining.remove(&out.conn);
        self.inbox.push(out.conn, ConnEvent::Ended);
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
        self.draining.remove(&out.conn);
    }
}
