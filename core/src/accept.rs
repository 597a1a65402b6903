//! Accepting connections on the reader thread: listening sockets, and accepted sockets
//! until their first request is read.
//!
//! At 9 a.m. thousands of clients connect in the same second. Accepting, reading the
//! request head and answering `101` here costs a few microseconds each and keeps the
//! kernel's accept queue short; Python sees a WebSocket connection only when its `hello`
//! arrives. Requests that are not an upgrade to `/ws` are handed to Python's HTTP layer
//! with the bytes read so far.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::handshake::{self, Head, Origins};

/// Tokens of listening sockets count down from here; connection tokens are their ids.
pub const LISTENER_TOKENS: usize = usize::MAX - 1;
/// Listening sockets at most.
pub const MAX_LISTENERS: usize = 64;
/// Tokens of accepted sockets still in their handshake start here.
pub const PENDING_TOKENS: usize = 1 << 62;
/// Connections accepted per listener before the other sockets get their turn.
const ACCEPTS_PER_TURN: usize = 512;
/// A client has this long to send its request head.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted sockets waiting for their request head, at most (beyond, new ones wait in
/// the kernel's accept queue).
const MAX_PENDING: usize = 16_384;

/// A listening socket and the origins its WebSocket handshakes may come from.
pub struct Listener {
    fd: OwnedFd,
    origins: Origins,
}

impl Listener {
    /// Takes over a listening socket (made non-blocking here).
    pub fn new(fd: OwnedFd, origins: Origins) -> io::Result<Listener> {
        set_nonblocking(fd.as_raw_fd())?;
        Ok(Listener { fd, origins })
    }

    /// Registers it with the reader's epoll under `token`.
    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.fd.as_raw_fd()),
            token,
            Interest::READABLE,
        )
    }

    /// Stops listening.
    pub fn deregister(&self, registry: &Registry) {
        let _ = registry.deregister(&mut SourceFd(&self.fd.as_raw_fd()));
    }
}

/// Whether `token` is a listening socket's (else a connection's or a handshake's).
pub fn is_listener(token: usize) -> bool {
    (LISTENER_TOKENS + 1 - MAX_LISTENERS..=LISTENER_TOKENS).contains(&token)
}

/// What a turn of accepting left.
#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// The kernel's queue is empty: wait for the next event.
    Drained,
    /// More are queued: accept again before sleeping (edge-triggered epoll).
    More,
    /// Out of descriptors or memory: try again a little later.
    Failed,
}

/// What became of an accepted socket after a read.
pub enum Handshake {
    /// Still reading its head (or it went away).
    Waiting,
    /// An upgrade to `/ws`: the socket, the `101` to write, the WebSocket bytes after it.
    Upgrade {
        fd: OwnedFd,
        response: bytes::Bytes,
        rest: Vec<u8>,
    },
    /// Not ours: the socket and the bytes read, for the HTTP layer.
    Http { fd: OwnedFd, head: Vec<u8> },
}

struct Pending {
    fd: OwnedFd,
    head: Vec<u8>,
    since: Instant,
    origins: Origins,
}

/// Accepted sockets in their handshake, by token.
#[derive(Default)]
pub struct Handshakes {
    pending: HashMap<usize, Pending>,
    next: usize,
}

impl Handshakes {
    /// Whether any socket waits for its head (the reader then wakes to expire them).
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Accepts what `listener` has queued, a turn's worth; their tokens go to `fresh`.
    pub fn accept(
        &mut self,
        listener: &Listener,
        registry: &Registry,
        fresh: &mut Vec<usize>,
    ) -> Accepted {
        for _ in 0..ACCEPTS_PER_TURN {
            if self.pending.len() >= MAX_PENDING {
                return Accepted::Failed;
            }
            // SAFETY: accept4 on our listening socket; no address is asked for.
            let fd = unsafe {
                libc::accept4(
                    listener.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Accepted::Drained,
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => continue,
                    _ => {
                        // Out of descriptors (EMFILE) or memory: the rest wait in the
                        // kernel's queue.
                        eprintln!("rushhour: accept failed: {e}");
                        return Accepted::Failed;
                    }
                }
            }
            // SAFETY: a new descriptor that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            set_socket_options(fd.as_raw_fd());
            let token = PENDING_TOKENS + self.next % PENDING_TOKENS;
            self.next += 1;
            let registered = registry.register(
                &mut SourceFd(&fd.as_raw_fd()),
                Token(token),
                Interest::READABLE,
            );
            if registered.is_ok() {
                let origins = listener.origins.clone();
                let since = Instant::now();
                let head = Vec::new();
                self.pending.insert(
                    token,
                    Pending {
                        fd,
                        head,
                        since,
                        origins,
                    },
                );
                fresh.push(token);
            }
        }
        Accepted::More
    }

    /// Reads the socket of `token` into its head; `buf` is the reader's scratch buffer.
    pub fn read(&mut self, token: usize, buf: &mut [u8], registry: &Registry) -> Handshake {
        let Some(p) = self.pending.get_mut(&token) else {
            return Handshake::Waiting;
        };
        let head = loop {
            // SAFETY: reads into a live buffer of `buf.len()` bytes from an open socket.
            let n = unsafe { libc::read(p.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                p.head.extend_from_slice(&buf[..n as usize]);
                match handshake::parse(&p.head, &p.origins) {
                    Head::Partial => continue,
                    head => break head,
                }
            }
            if n < 0 {
                match io::Error::last_os_error().kind() {
                    io::ErrorKind::WouldBlock => return Handshake::Waiting,
                    io::ErrorKind::Interrupted => continue,
                    _ => {}
                }
            }
            // The peer left (or the socket failed) before a whole head: drop it.
            self.remove(token, registry);
            return Handshake::Waiting;
        };
        let p = self.remove(token, registry).expect("present above");
        match head {
            Head::Upgrade { response, consumed } => Handshake::Upgrade {
                fd: p.fd,
                response,
                rest: p.head[consumed..].to_vec(),
            },
            _ => Handshake::Http {
                fd: p.fd,
                head: p.head,
            },
        }
    }

    /// Closes the sockets that did not send their head in time.
    pub fn expire(&mut self, now: Instant, registry: &Registry) {
        let late: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) > HANDSHAKE_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            self.remove(token, registry);
        }
    }

    /// Closes every socket in its handshake (shutdown).
    pub fn clear(&mut self, registry: &Registry) {
        let tokens: Vec<usize> = self.pending.keys().copied().collect();
        for token in tokens {
            self.remove(token, registry);
        }
    }

    fn remove(&mut self, token: usize, registry: &Registry) -> Option<Pending> {
        let p = self.pending.remove(&token)?;
        let _ = registry.deregister(&mut SourceFd(&p.fd.as_raw_fd()));
        Some(p)
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an open descriptor, no memory passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Socket options of an accepted connection, as Trio sets them on its streams.
fn set_socket_options(fd: RawFd) {
    // Frames go out as soon as the writer has them (it batches on its own).
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
    // The kernel takes at most this much not yet sent: a slow reader's backlog stays in
    // the core's bounded queue, where it is counted, instead of megabytes of socket
    // buffer, and the slow-consumer limit means what it says.
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT, 16 << 10);
}

fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: setsockopt with a live int of the right size; failure is harmless (a
    // socket that is not TCP).
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ranges_do_not_overlap() {
        assert!(is_listener(LISTENER_TOKENS) && is_listener(LISTENER_TOKENS + 1 - MAX_LISTENERS));
        assert!(!is_listener(LISTENER_TOKENS - MAX_LISTENERS));
        assert!(!is_listener(usize::MAX), "the reader's waker");
        let last_pending = PENDING_TOKENS + (PENDING_TOKENS - 1);
        assert!(!is_listener(last_pending) && !is_listener(1));
    }
}
