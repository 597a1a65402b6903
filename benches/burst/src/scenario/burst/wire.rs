//! Where a client's frames go: requests get an id from the connection's counter and
//! are remembered until answered. Behind a small trait, so that the chat and meeting
//! logic can be tested without a socket.

use crate::client::Conn;

/// What a request was, to route its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Req {
    /// `subscribe` to the team room.
    Subscribe,
    /// A chat `send` (found by id among the client's sends).
    Send,
    /// `meeting.create`.
    Create,
    /// `meeting.join`.
    Join,
    /// A `signal` to the peer at this index.
    Signal(usize),
}

/// Requests awaiting their answer on one connection.
#[derive(Debug)]
pub struct Requests {
    /// The next id.
    next: u64,
    /// `(id, request)`: a handful at a time, so a list.
    open: Vec<(u64, Req)>,
}

impl Default for Requests {
    fn default() -> Self {
        Self {
            next: 1,
            open: Vec::new(),
        }
    }
}

impl Requests {
    /// Remembers `req` under a fresh id.
    pub fn add(&mut self, req: Req) -> u64 {
        let id = self.next;
        self.next += 1;
        self.open.push((id, req));
        id
    }

    /// Forgets request `id`, returning what it was.
    pub fn take(&mut self, id: u64) -> Option<Req> {
        let at = self.open.iter().position(|(i, _)| *i == id)?;
        Some(self.open.swap_remove(at).1)
    }
}

/// Takes text frames to send.
pub trait Sink {
    /// Queues one text frame.
    fn queue_text(&mut self, text: &[u8]);
}

impl Sink for Conn {
    fn queue_text(&mut self, text: &[u8]) {
        Conn::queue_text(self, text);
    }
}

impl Sink for Vec<Vec<u8>> {
    fn queue_text(&mut self, text: &[u8]) {
        self.push(text.to_vec());
    }
}

/// A connection's outgoing side while a batch of work is written.
pub struct Wire<'a, S: Sink> {
    /// The frames' destination.
    pub sink: &'a mut S,
    /// The connection's open requests.
    pub reqs: &'a mut Requests,
    /// Scratch space for one frame.
    pub buf: &'a mut Vec<u8>,
}

impl<S: Sink> Wire<'_, S> {
    /// Queues request `req`, written by `write` given its id; returns the id.
    pub fn request(&mut self, req: Req, write: impl FnOnce(&mut Vec<u8>, u64)) -> u64 {
        let id = self.reqs.add(req);
        self.buf.clear();
        write(self.buf, id);
        self.sink.queue_text(self.buf);
        id
    }

    /// Queues a frame that expects no answer.
    pub fn frame(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        self.buf.clear();
        write(self.buf);
        self.sink.queue_text(self.buf);
    }
}

/// A [`Wire`] into a list of frames, with its requests and scratch space: what tests
/// of the scenario's parts write through.
#[cfg(test)]
#[derive(Default)]
pub struct TestWire {
    pub sink: Vec<Vec<u8>>,
    pub reqs: Requests,
    pub buf: Vec<u8>,
}

#[cfg(test)]
impl TestWire {
    /// The wire writing into this.
    pub fn wire(&mut self) -> Wire<'_, Vec<Vec<u8>>> {
        Wire {
            sink: &mut self.sink,
            reqs: &mut self.reqs,
            buf: &mut self.buf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_get_ids_and_are_routed_once() {
        let mut reqs = Requests::default();
        let mut sink: Vec<Vec<u8>> = Vec::new();
        let mut buf = Vec::new();
        let mut wire = Wire {
            sink: &mut sink,
            reqs: &mut reqs,
            buf: &mut buf,
        };
        let a = wire.request(Req::Subscribe, |b, id| {
            b.extend_from_slice(format!("s{id}").as_bytes())
        });
        let b = wire.request(Req::Signal(3), |b, id| {
            b.extend_from_slice(format!("g{id}").as_bytes())
        });
        wire.frame(|b| b.extend_from_slice(b"ack"));
        assert_eq!(sink, [b"s1".to_vec(), b"g2".to_vec(), b"ack".to_vec()]);
        assert_eq!(reqs.take(b), Some(Req::Signal(3)));
        assert_eq!(reqs.take(b), None);
        assert_eq!(reqs.take(a), Some(Req::Subscribe));
    }
}
