//! The socket reader: the one thread that reads the sockets handed to the core.
//!
//! Reading here keeps Python off the per-frame path: bytes go straight into the broker,
//! hot ops (`send`…) run at once, and only control frames reach Python, through the
//! [`Inbox`]; the connection is not read meanwhile, so its frames stay in order and the
//! inbox stays bounded. A thread of its own (not the writer's), so that parsing and
//! storing inbound frames runs beside the writes of the fan-out.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use crate::broker::Inbound;
use crate::ids::ConnId;
use crate::inbox::{ConnEvent, Inbox};
use crate::outbound::Outbound;
use crate::sync::lock;

/// Bytes read per `read` call.
const READ_BYTES: usize = 64 << 10;
/// Reads per socket before the others get their turn.
const READS_PER_TURN: usize = 4;
const WAKE: Token = Token(usize::MAX);

/// Called with bytes read from a connection: what the broker made of them.
pub type ReadFn = Box<dyn Fn(ConnId, &[u8]) -> Inbound + Send + Sync>;

struct Shared {
    /// Sockets to read whether or not epoll says so (reading resumed after a pause).
    to_read: Mutex<Vec<Arc<Outbound>>>,
    stop: AtomicBool,
    waker: Waker,
    registry: Registry,
    conns: Mutex<HashMap<usize, Arc<Outbound>>>,
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
    pub fn spawn(on_read: ReadFn, inbox: Arc<Inbox>) -> io::Result<Reader> {
        let poll = Poll::new()?;
        let shared = Arc::new(Shared {
            to_read: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            waker: Waker::new(poll.registry(), WAKE)?,
            registry: poll.registry().try_clone()?,
            conns: Mutex::new(HashMap::new()),
        });
        let thread = std::thread::Builder::new()
            .name("rushhour-reader".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    Loop {
                        shared,
                        poll,
                        on_read,
                        inbox,
                        draining: HashSet::new(),
                        buf: vec![0; READ_BYTES],
                    }
                    .run()
                }
            })?;
        Ok(Reader {
            shared,
            thread: Some(thread),
        })
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
    on_read: ReadFn,
    inbox: Arc<Inbox>,
    /// Closing connections are still read (the bytes dropped) until the peer's end, so
    /// that unread bytes never turn the close into a reset.
    draining: HashSet<ConnId>,
    buf: Vec<u8>,
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut reads: Vec<Arc<Outbound>> = Vec::new();
        while !self.shared.stop.load(Ordering::SeqCst) {
            reads.append(&mut lock(&self.shared.to_read));
            // With sockets left to read, only look for new events; else sleep in epoll.
            let timeout = (!reads.is_empty()).then_some(std::time::Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("rushhour reader: epoll failed: {e}");
                }
            }
            let conns = lock(&self.shared.conns);
            reads.extend(
                events
                    .iter()
                    .filter(|e| e.token() != WAKE)
                    .filter_map(|e| conns.get(&e.token().0).cloned()),
            );
            drop(conns);
            for out in std::mem::take(&mut reads) {
                self.read(&out);
            }
        }
    }

    /// Reads what `out`'s socket has into the broker: a few reads at most, then the
    /// other sockets' turn.
    fn read(&mut self, out: &Arc<Outbound>) {
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
            if self.draining.contains(&conn) {
                continue;
            }
            match (self.on_read)(conn, &self.buf[..n as usize]) {
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
}
