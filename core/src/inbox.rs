//! What the reader thread tells the control plane: control frames it read (hello,
//! meetings…), connections closing, connections whose peer went away. One queue for all
//! connections and one eventfd, so Python waits on a single file descriptor however many
//! sockets the core reads.
//!
//! Bounded by construction: a connection stops being read while its control frame waits
//! (at most one each), and reports its close and its end once.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use crate::ids::ConnId;
use crate::sync::lock;

/// One thing the control plane must handle for a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnEvent {
    /// A control frame (JSON text); reading resumes once it is handled.
    Control(String),
    /// The connection is closing with this code.
    Closing(u16),
    /// The peer closed the stream or the socket failed: detach it.
    Ended,
    /// A socket accepted by the core whose first request is not a WebSocket upgrade to
    /// `/ws` (queued under connection 0): the taker owns `fd` from now on and serves the
    /// request whose first bytes are `head`.
    Http {
        /// The socket, owned by whoever takes the event.
        fd: std::os::fd::RawFd,
        /// The bytes read from it so far.
        head: Vec<u8>,
    },
}

/// The queue of events and the eventfd that signals it.
#[derive(Debug)]
pub struct Inbox {
    events: Mutex<Vec<(ConnId, ConnEvent)>>,
    signal: OwnedFd,
}

impl Inbox {
    /// An empty inbox with its eventfd.
    ///
    /// # Errors
    /// When the eventfd cannot be created.
    pub fn new() -> io::Result<Inbox> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Inbox {
            events: Mutex::new(Vec::new()),
            // SAFETY: `fd` is a new descriptor that nothing else owns.
            signal: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The descriptor that becomes readable when events wait.
    pub fn fd(&self) -> RawFd {
        self.signal.as_raw_fd()
    }

    /// Queues an event; signals the eventfd when the queue was empty.
    pub fn push(&self, conn: ConnId, event: ConnEvent) {
        let mut events = lock(&self.events);
        events.push((conn, event));
        if events.len() == 1 {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to our eventfd. A full counter
            // (impossible in practice) only means the fd is readable already.
            unsafe { libc::write(self.fd(), one.as_ptr().cast(), one.len()) };
        }
    }

    /// Takes every queued event, clearing the signal first (an event pushed meanwhile
    /// signals again).
    pub fn take(&self) -> Vec<(ConnId, ConnEvent)> {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN (no signal) is fine.
        unsafe { libc::read(self.fd(), count.as_mut_ptr().cast(), count.len()) };
        std::mem::take(&mut *lock(&self.events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signalled(inbox: &Inbox) -> bool {
        let mut pfd = libc::pollfd {
            fd: inbox.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no timeout.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn events_signal_once_and_come_out_in_order() {
        let inbox = Inbox::new().unwrap();
        assert!(!signalled(&inbox));
        inbox.push(ConnId(1), ConnEvent::Control("{}".into()));
        inbox.push(ConnId(2), ConnEvent::Ended);
        assert!(signalled(&inbox));
        assert_eq!(
            inbox.take(),
            vec![
                (ConnId(1), ConnEvent::Control("{}".into())),
                (ConnId(2), ConnEvent::Ended)
            ]
        );
        assert!(!signalled(&inbox));
        assert!(inbox.take().is_empty());
    }
}
