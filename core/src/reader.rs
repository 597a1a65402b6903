//! The socket reader: the one thread that reads the sockets handed to the core.
//!
//! Reading here keeps Python off the per-frame path: bytes go straight into the broker,
//! hot ops (`send`…) run at once, and only control frames reach Python, through the
//! [`Inbox`]; the connection is not read meanwhile, so its frames stay in order and the
//! inbox stays bounded. A thread of its own (not the writer's), so that parsing and
//! storing inbound frames runs beside the writes of the fan-out. It also accepts new
//! connections and answers their WebSocket handshake ([`crate::accept`]).

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::accept::{
    is_listener, Accepted, Handshake, Handshakes, Listener, LISTENER_TOKENS, MAX_LISTENERS,
    PENDING_TOKENS,
};
use crate::batch::Applied;
use crate::broker::Inbound;
use crate::health::Health;
use crate::ids::ConnId;
use crate::inbox::{ConnEvent, Inbox};
use crate::outbound::Outbound;
use crate::sync::lock;

/// Bytes read per `read` call.
const READ_BYTES: usize = 64 << 10;
/// Reads per socket before the others get their turn.
const READS_PER_TURN: usize = 4;
const WAKE: Token = Token(usize::MAX);
/// The front door's epoll (listeners and handshakes) inside the main one: it wakes a
/// reader asleep in the main epoll.
const FRONT: Token = Token(PENDING_TOKENS - 1);
/// Front-door events taken per turn.
const FRONT_EVENTS: usize = 256;
/// Sockets read between two looks at the session layer's batches.
const BATCH_EVERY: usize = 64;

/// How often sockets still in their handshake are checked for their deadline.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// How long accepting pauses after it failed (out of descriptors): no busy loop.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Called with bytes read from a connection: what the broker made of them.
pub type ReadFn = Box<dyn Fn(ConnId, &[u8]) -> Inbound + Send + Sync>;
/// Applies the session layer's submitted batches (see [`crate::batch`]).
pub type BatchFn = Box<dyn Fn() -> Applied + Send + Sync>;
/// Called with an upgraded socket, its `101` answer and the WebSocket bytes read after
/// the head: attaches the connection and feeds those bytes.
pub type UpgradeFn =
    Box<dyn Fn(OwnedFd, bytes::Bytes, &[u8]) -> io::Result<(Arc<Outbound>, Inbound)> + Send + Sync>;

struct Shared {
    /// Sockets to read whether or not epoll says so (reading resumed after a pause).
    to_read: Mutex<Vec<Arc<Outbound>>>,
    /// Batches of the session layer wait to be applied.
    batches: AtomicBool,
    stop: AtomicBool,
    waker: Waker,
    /// The connections' epoll.
    registry: Registry,
    /// The front door's epoll: listening sockets and sockets in their handshake, looked
    /// at before every turn of reads. In the connections' epoll they waited behind
    /// thousands of ready connections (epoll hands out at most a turn's worth of events,
    /// oldest first): at the 9:00 burst a `/healthz` or a login waited 0.5–1 s to be
    /// accepted.
    front: Registry,
    conns: Mutex<HashMap<usize, Arc<Outbound>>>,
    /// Listening sockets by token.
    listeners: Mutex<HashMap<usize, Listener>>,
}

/// Handle to the reader thread.
pub struct Reader {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Starts the reader thread; bytes go to `on_read`, events to `inbox`.
    ///
    /// # Errors
    /// When epoll or the thread cannot be created.
    pub fn spawn(
        on_read: ReadFn,
        on_upgrade: UpgradeFn,
        on_batches: BatchFn,
        inbox: Arc<Inbox>,
        health: Arc<Health>,
    ) -> io::Result<Reader> {
        let poll = Poll::new()?;
        let front = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&front.as_raw_fd()), FRONT, Interest::READABLE)?;
        let shared = Arc::new(Shared {
            to_read: Mutex::new(Vec::new()),
            batches: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            waker: Waker::new(poll.registry(), WAKE)?,
            registry: poll.registry().try_clone()?,
            front: front.registry().try_clone()?,
            conns: Mutex::new(HashMap::new()),
            listeners: Mutex::new(HashMap::new()),
        });
        let thread = std::thread::Builder::new()
            .name("rushhour-reader".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    Loop {
                        shared,
                        poll,
                        front,
                        front_events: Events::with_capacity(FRONT_EVENTS),
                        on_read,
                        on_upgrade,
                        on_batches,
                        inbox,
                        health,
                        draining: HashSet::new(),
                        buf: vec![0; READ_BYTES],
                        handshakes: Handshakes::default(),
                        accept_again: Vec::new(),
                        accept_later: Vec::new(),
                        expired_at: Instant::now(),
                    }
                    .run()
                }
            })?;
        Ok(Reader {
            shared,
            thread: Some(thread),
        })
    }

    /// Accepts connections on a listening socket from now on.
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered.
    pub fn listen(&self, listener: Listener) -> io::Result<()> {
        let mut listeners = lock(&self.shared.listeners);
        if listeners.len() >= MAX_LISTENERS {
            return Err(io::Error::other("too many listening sockets"));
        }
        let token = Token(LISTENER_TOKENS - listeners.len());
        listener.register(&self.shared.front, token)?;
        listeners.insert(token.0, listener);
        Ok(())
    }

    /// Takes over reading `out`'s socket, paused until [`Reader::start_reading`].
    ///
    /// # Errors
    /// When the socket cannot be registered with epoll.
    pub fn attach(&self, out: &Arc<Outbound>) -> io::Result<()> {
        let Some(fd) = out.raw_fd() else {
            return Ok(());
        };
        out.reads.store(true, Ordering::Release);
        out.paused.store(true, Ordering::Release);
        self.shared.registry.register(
            &mut SourceFd(&fd),
            Token(out.conn.0 as usize),
            Interest::READABLE,
        )?;
        lock(&self.shared.conns).insert(out.conn.0 as usize, out.clone());
        Ok(())
    }

    /// (Re)starts reading: after the handshake, and after each control frame is handled.
    pub fn start_reading(&self, out: &Arc<Outbound>) {
        if out.reads.load(Ordering::Acquire) && out.paused.swap(false, Ordering::AcqRel) {
            lock(&self.shared.to_read).push(out.clone());
            let _ = self.shared.waker.wake();
        }
    }

    /// Batches were submitted: apply them soon.
    pub fn batches_waiting(&self) {
        if !self.shared.batches.swap(true, Ordering::AcqRel) {
            let _ = self.shared.waker.wake();
        }
    }

    /// Stops reading a connection for good (its session is over).
    pub fn detach(&self, out: &Arc<Outbound>) {
        out.paused.store(true, Ordering::Release);
        if lock(&self.shared.conns)
            .remove(&(out.conn.0 as usize))
            .is_some()
        {
            if let Some(fd) = out.raw_fd() {
                let _ = self.shared.registry.deregister(&mut SourceFd(&fd));
            }
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = self.shared.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reader thread's own state.
struct Loop {
    shared: Arc<Shared>,
    poll: Poll,
    /// See [`Shared::front`].
    front: Poll,
    front_events: Events,
    on_read: ReadFn,
    on_upgrade: UpgradeFn,
    on_batches: BatchFn,
    inbox: Arc<Inbox>,
    /// `/healthz`, answered here once the session layer published a status.
    health: Arc<Health>,
    /// Accepted sockets until their request head is read.
    handshakes: Handshakes,
    /// Listeners to accept from again before sleeping (a turn did not empty them).
    accept_again: Vec<usize>,
    /// Listeners whose accepting failed, and when to try them again.
    accept_later: Vec<(Instant, usize)>,
    /// When handshake deadlines were last checked.
    expired_at: Instant,
    /// Closing connections are still read (the bytes dropped) until the peer's end, so
    /// that unread bytes never turn the close into a reset.
    draining: HashSet<ConnId>,
    buf: Vec<u8>,
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        // A full turn of front-door events may have left more: look again at once.
        let mut front_full = false;
        // Sockets to read, and whether to read until `EAGAIN` (see `read`).
        let mut reads: Vec<(Arc<Outbound>, bool)> = Vec::new();
        let mut tokens: Vec<usize> = Vec::new();
        while !self.shared.stop.load(Ordering::SeqCst) {
            self.apply_batches();
            reads.extend(lock(&self.shared.to_read).drain(..).map(|out| (out, true)));
            // With work left over, only look for new events; else sleep in epoll (waking
            // to expire handshakes while any are pending).
            let timeout = if !reads.is_empty()
                || front_full
                || !self.accept_again.is_empty()
                || self.shared.batches.load(Ordering::Acquire)
            {
                Some(Duration::ZERO)
            } else if !self.accept_later.is_empty() {
                Some(ACCEPT_RETRY)
            } else {
                (!self.handshakes.is_empty()).then_some(EXPIRE_EVERY)
            };
            poll(&mut self.poll, &mut events, timeout);
            front_full = self.front_door();
            tokens.clear();
            tokens.append(&mut self.accept_again);
            let now = Instant::now();
            self.accept_later.retain(|&(at, token)| {
                let due = at <= now;
                if due {
                    tokens.push(token);
                }
                !due
            });
            let conns = lock(&self.shared.conns);
            reads.extend(events.iter().filter_map(|e| {
                let out = conns.get(&e.token().0)?.clone();
                Some((out, e.is_read_closed() || e.is_error()))
            }));
            drop(conns);
            // Listeners a turn did not empty, or whose accepting failed a while ago.
            for &token in &tokens {
                self.accept(token);
            }
            for (n, (out, until_eagain)) in std::mem::take(&mut reads).into_iter().enumerate() {
                self.read(&out, until_eagain);
                if n % BATCH_EVERY == BATCH_EVERY - 1 {
                    self.apply_batches();
                    front_full |= self.front_door();
                }
            }
            if self.expired_at.elapsed() >= EXPIRE_EVERY {
                self.expired_at = Instant::now();
                self.handshakes.expire(self.expired_at, &self.shared.front);
            }
        }
        self.handshakes.clear(&self.shared.front);
    }

    /// Accepts new connections and reads their request heads, whatever waits in the
    /// connections' epoll: looked at before every turn of reads and every
    /// `BATCH_EVERY` sockets within it. Returns whether it took a full turn of events.
    fn front_door(&mut self) -> bool {
        poll(
            &mut self.front,
            &mut self.front_events,
            Some(Duration::ZERO),
        );
        if self.front_events.is_empty() {
            return false; // the usual case, every 64 sockets: nothing to allocate
        }
        let tokens: Vec<usize> = self.front_events.iter().map(|e| e.token().0).collect();
        for &token in &tokens {
            if is_listener(token) {
                self.accept(token);
            } else {
                self.handshake(token);
            }
        }
        tokens.len() == FRONT_EVENTS
    }

    /// Applies the session layer's submitted batches: connections it resumed are read
    /// again, what they had buffered goes back to it.
    fn apply_batches(&mut self) {
        if !self.shared.batches.swap(false, Ordering::AcqRel) {
            return;
        }
        let applied = (self.on_batches)();
        for (conn, event) in applied.events {
            self.inbox.push(conn, event);
        }
        for out in applied.resume {
            if out.reads.load(Ordering::Acquire) && out.paused.swap(false, Ordering::AcqRel) {
                lock(&self.shared.to_read).push(out);
            }
        }
    }

    /// Accepts a turn's worth of connections from the listener of `token`.
    fn accept(&mut self, token: usize) {
        let mut fresh = Vec::new();
        {
            let listeners = lock(&self.shared.listeners);
            let Some(listener) = listeners.get(&token) else {
                return;
            };
            match self
                .handshakes
                .accept(listener, &self.shared.front, &mut fresh)
            {
                Accepted::Drained => {}
                Accepted::More => self.accept_again.push(token),
                Accepted::Failed => self
                    .accept_later
                    .push((Instant::now() + ACCEPT_RETRY, token)),
            }
        }
        // Clients send their request right after connecting: it is usually there by
        // now, and reading it at once saves waiting a turn for its event.
        for pending in fresh {
            self.handshake(pending);
        }
    }

    /// Reads an accepted socket's request head: upgrades it, or hands it to Python.
    fn handshake(&mut self, token: usize) {
        match self
            .handshakes
            .read(token, &mut self.buf, &self.shared.front)
        {
            Handshake::Waiting => {}
            Handshake::Http { fd, head } => {
                if let Some(response) = self.health.answer(&head) {
                    // A fresh socket's send buffer takes these few hundred bytes; the
                    // descriptor closes as `fd` drops.
                    // SAFETY: writes from a live buffer to an open socket.
                    let _ = unsafe {
                        libc::write(fd.as_raw_fd(), response.as_ptr().cast(), response.len())
                    };
                    return;
                }
                let fd = fd.into_raw_fd();
                self.inbox.push(ConnId(0), ConnEvent::Http { fd, head });
            }
            Handshake::Upgrade { fd, response, rest } => {
                let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
                let Ok((out, inbound)) = (self.on_upgrade)(fd, response, &rest) else {
                    return; // The engine is gone or the socket could not be registered.
                };
                out.reads.store(true, Ordering::Release);
                let token = Token(out.conn.0 as usize);
                if self
                    .shared
                    .registry
                    .register(&mut SourceFd(&raw), token, Interest::READABLE)
                    .is_err()
                {
                    self.inbox.push(out.conn, ConnEvent::Ended);
                    return;
                }
                lock(&self.shared.conns).insert(token.0, out.clone());
                if self.handle(&out, inbound) {
                    self.read(&out, true);
                }
            }
        }
    }

    /// Reads what `out`'s socket has into the broker: a few reads at most, then the
    /// other sockets' turn.
    ///
    /// A read that does not fill the buffer has emptied the socket: the next bytes (or
    /// the peer's end) come as a new epoll edge, so the `EAGAIN` read that would confirm
    /// it is skipped — one syscall less per frame at low rates per socket. Unless
    /// `until_eagain`: a socket resumed after a pause, or whose event already told of
    /// the peer's end (which brings no new edge), is read until `EAGAIN`.
    fn read(&mut self, out: &Arc<Outbound>, until_eagain: bool) {
        let Some(fd) = out.raw_fd() else { return };
        let conn = out.conn;
        for _ in 0..READS_PER_TURN {
            if out.paused.load(Ordering::Acquire) {
                return;
            }
            // SAFETY: reads into our own buffer of `buf.len()` bytes from an open fd (the
            // Outbound owning it is alive here).
            let n = unsafe { libc::read(fd, self.buf.as_mut_ptr().cast(), self.buf.len()) };
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
            let emptied = (n as usize) < self.buf.len() && !until_eagain;
            if !self.draining.contains(&conn) {
                let inbound = (self.on_read)(conn, &self.buf[..n as usize]);
                if !self.handle(out, inbound) {
                    return;
                }
            }
            if emptied {
                return;
            }
        }
        lock(&self.shared.to_read).push(out.clone());
    }

    /// Acts on what the broker made of a connection's bytes; false when reading it must
    /// wait for the control plane.
    fn handle(&mut self, out: &Arc<Outbound>, inbound: Inbound) -> bool {
        match inbound {
            Inbound::Idle => true,
            Inbound::Control(text) => {
                out.paused.store(true, Ordering::Release);
                self.inbox.push(out.conn, ConnEvent::Control(text));
                false
            }
            Inbound::Closing(code) => {
                self.draining.insert(out.conn);
                self.inbox.push(out.conn, ConnEvent::Closing(code));
                true
            }
        }
    }

    /// The peer ended the stream (or the socket failed): stop reading, tell Python.
    fn ended(&mut self, out: &Arc<Outbound>) {
        out.paused.store(true, Ordering::Release);
        self.draining.remove(&out.conn);
        self.inbox.push(out.conn, ConnEvent::Ended);
    }
}

/// Waits on `poll`; a failure other than an interrupt is reported, and the turn goes on
/// with whatever events it got.
fn poll(poll: &mut Poll, events: &mut Events, timeout: Option<Duration>) {
    if let Err(e) = poll.poll(events, timeout) {
        if e.kind() != io::ErrorKind::Interrupted {
            eprintln!("rushhour reader: epoll failed: {e}");
        }
    }
}
