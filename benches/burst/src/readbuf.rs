//! The growable read buffer the sans-IO readers of [`crate::client`] (WebSocket frames),
//! [`crate::nats`] and [`crate::redis`] parse out of: the socket is read straight into it and operations are handed out as
//! slices of it, so that a delivery costs no allocation and no copy.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// The smallest free space offered to a `read`: below it the buffer is compacted or
/// grown first, so that a read never returns a few bytes at a time.
const MIN_READ: usize = 4096;

/// The smallest first read size [`ReadBuf::with_read_size`] accepts: a welcome or a
/// few deliveries per read.
pub const MIN_SMALL_READ: usize = 512;

/// The most a read is offered once reads keep filling what they are given: 64 KiB
/// takes a backlog of a few hundred small messages per syscall, while idle connections
/// (a thousand subscribers) stay at their first size.
const MAX_READ: usize = 64 * 1024;

/// The CRLF that ends every line of both protocols, as a finder built once: building
/// one per search (`memmem::find`) costs more than the search itself.
static CRLF: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\n"));

/// Where the first CRLF of `bytes` starts.
pub fn find_crlf(bytes: &[u8]) -> Option<usize> {
    CRLF.find(bytes)
}

/// Bytes read from a socket, the parsed ones dropped lazily.
///
/// ### Invariants
/// `start <= end <= buf.len()`; `buf[start..end]` holds bytes not parsed yet, always
/// beginning at an operation's first byte.
#[derive(Debug)]
pub struct ReadBuf {
    /// The bytes; grows only when an operation does not fit, and never shrinks.
    buf: Vec<u8>,
    /// Start of the unparsed bytes.
    start: usize,
    /// End of the bytes read so far.
    end: usize,
    /// Total size of the incomplete operation at `start`, once its header says, so
    /// that [`ReadBuf::spare`] makes room for all of it at once.
    need: usize,
    /// Free space [`ReadBuf::spare`] guarantees; doubles (up to [`MAX_READ`]) whenever
    /// a read fills all it was offered.
    read_size: usize,
    /// The length of the last spare slice handed out.
    offered: usize,
}

impl ReadBuf {
    /// A buffer of `capacity` bytes to start with.
    pub fn new(capacity: usize) -> Self {
        Self::with_read_size(capacity, MIN_READ)
    }

    /// Like [`ReadBuf::new`], but offering reads of `read_size` bytes at first (at
    /// least [`MIN_SMALL_READ`]) instead of [`MIN_READ`]: for tens of thousands of mostly
    /// idle connections, whose buffers then grow only if their traffic asks.
    pub fn with_read_size(capacity: usize, read_size: usize) -> Self {
        let read_size = read_size.clamp(MIN_SMALL_READ, MAX_READ);
        Self {
            buf: vec![0; capacity.max(read_size)],
            start: 0,
            end: 0,
            need: 0,
            read_size,
            offered: 0,
        }
    }

    /// Free space to read into (at least the current read size, and room for the whole
    /// pending operation); call [`ReadBuf::filled`] with the count read.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let pending = self.end - self.start;
        let wanted = self.need.max(pending + self.read_size);
        if self.buf.len() - self.end < self.read_size || self.buf.len() - self.start < wanted {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.start = 0;
                self.end = pending;
            }
            if self.buf.len() < wanted {
                self.buf.resize(wanted.next_power_of_two(), 0);
            }
        }
        self.offered = self.buf.len() - self.end;
        &mut self.buf[self.end..]
    }

    /// Marks `n` more bytes of [`ReadBuf::spare`] as read.
    ///
    /// # Panics
    /// If `n` is more than the spare space.
    pub fn filled(&mut self, n: usize) {
        assert!(
            self.end + n <= self.buf.len(),
            "filled past the spare space"
        );
        if n == self.offered && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        self.end += n;
    }

    /// Copies `bytes` in as if read from the socket.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let spare = self.spare();
            let n = spare.len().min(bytes.len());
            spare[..n].copy_from_slice(&bytes[..n]);
            self.filled(n);
            bytes = &bytes[n..];
        }
    }

    /// Everything read so far; the unparsed bytes start at [`ReadBuf::start`]. Parsers
    /// work in offsets into this slice, so that nothing stays borrowed while they move
    /// on.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.end]
    }

    /// Where the unparsed bytes start.
    pub fn start(&self) -> usize {
        self.start
    }

    /// How many bytes are read but not parsed yet.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The bytes not parsed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks everything before offset `next` as parsed.
    pub fn consume_to(&mut self, next: usize) {
        debug_assert!(self.start <= next && next <= self.end);
        self.start = next;
        self.need = 0;
    }

    /// Says that the operation at [`ReadBuf::start`] is `total` bytes long.
    pub fn need(&mut self, total: usize) {
        self.need = total;
    }

    /// Where the payload is when the pending bytes are `prefix`, a length,
    /// `\r\n<payload>\r\n`: how NATS (`MSG <subject> <sid> `) and RESP
    /// (`*3\r\n$7\r\nmessage\r\n…$`) both frame a delivery, so that a subscriber finds
    /// one with a prefix compare. `None` for anything else, which the protocol's general
    /// parser then reads (and reports, when it is malformed).
    pub fn sized_after(&self, prefix: &[u8]) -> Option<Sized> {
        let rest = self.pending().strip_prefix(prefix)?;
        // Up to nine digits: no overflow, and far above any body a generator sends.
        let digits = rest
            .iter()
            .take(10)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if !(1..=9).contains(&digits) || rest.get(digits..digits + 2)? != b"\r\n" {
            return None;
        }
        let len = rest[..digits]
            .iter()
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        let payload = self.start + prefix.len() + digits + 2;
        let next = payload + len + 2;
        if self.end < next {
            return Some(Sized::Need(next));
        }
        if &self.buf[next - 2..next] != b"\r\n" {
            return None;
        }
        Some(Sized::Whole {
            payload: (payload, payload + len),
            next,
        })
    }
}

/// What [`ReadBuf::sized_after`] found, as offsets into [`ReadBuf::bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sized {
    /// The payload's span, and where the next operation starts.
    Whole {
        /// Start and end of the payload.
        payload: (usize, usize),
        /// The offset after the payload's CRLF.
        next: usize,
    },
    /// The operation is not all read: the offset where it will end.
    Need(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_grows_and_adapts_its_read_size() {
        let mut rb = ReadBuf::new(16);
        assert_eq!(rb.spare().len(), MIN_READ);
        rb.push(b"abcdef");
        rb.consume_to(4);
        assert_eq!(rb.pending(), b"ef");
        // A pending operation of 10,000 bytes: the next spare holds all of it.
        rb.need(10_000);
        assert!(rb.spare().len() >= 10_000 - 2);
        assert_eq!((rb.start(), rb.pending()), (0, &b"ef"[..]));
        rb.consume_to(2);
        // Reads that fill what they are offered double the read size, up to the cap.
        for _ in 0..10 {
            let n = rb.spare().len();
            rb.filled(n);
            let end = rb.bytes().len();
            rb.consume_to(end);
        }
        assert_eq!(rb.read_size, MAX_READ);
        assert!(rb.spare().len() >= MAX_READ);
    }

    /// Marks every byte read so far as parsed.
    fn consume_all(rb: &mut ReadBuf) {
        let end = rb.bytes().len();
        rb.consume_to(end);
    }

    #[test]
    fn reads_that_fill_the_spare_space_grow_it() {
        let mut rb = ReadBuf::new(0);
        let mut offered = Vec::new();
        for _ in 0..6 {
            let n = rb.spare().len();
            offered.push(n);
            rb.filled(n);
            consume_all(&mut rb);
        }
        assert_eq!(offered, [4096, 8192, 16384, 32768, 65536, 65536]);
        let mut rb = ReadBuf::new(0);
        for _ in 0..10 {
            let n = rb.spare().len() / 2;
            rb.filled(n);
            consume_all(&mut rb);
        }
        assert_eq!(rb.read_size, MIN_READ, "half-full reads do not grow it");
    }

    #[test]
    fn small_buffers_start_small_and_grow_when_filled() {
        let mut rb = ReadBuf::with_read_size(0, 1024);
        assert_eq!(rb.spare().len(), 1024);
        let n = rb.spare().len();
        rb.filled(n);
        consume_all(&mut rb);
        assert_eq!(rb.spare().len(), 2048);
        assert_eq!(ReadBuf::with_read_size(0, 1).spare().len(), MIN_SMALL_READ);
    }

    #[test]
    fn sized_payloads_after_a_prefix() {
        let mut rb = ReadBuf::new(0);
        rb.push(b"xxMSG s 1 5\r\nhel");
        rb.consume_to(2);
        assert_eq!(rb.sized_after(b"MSG s 1 "), Some(Sized::Need(20)));
        assert_eq!(rb.sized_after(b"MSG t 1 "), None);
        let mut rb = ReadBuf::new(0);
        rb.push(b"xxMSG s 1 5\r\nhello\r\nMSG s 1 0\r\n\r\nMSG s 1 2\r\nabXY");
        rb.consume_to(2);
        let whole = |payload, next| Some(Sized::Whole { payload, next });
        assert_eq!(rb.sized_after(b"MSG s 1 "), whole((13, 18), 20));
        rb.consume_to(20);
        assert_eq!(rb.sized_after(b"MSG s 1 "), whole((31, 31), 33));
        rb.consume_to(33);
        assert_eq!(
            rb.sized_after(b"MSG s 1 "),
            None,
            "no CRLF after the payload"
        );
        for odd in [
            &b"MSG s 1 x\r\n"[..],
            b"MSG s 1 \r\n",
            b"MSG s 1 1234567890\r\n",
            b"MSG s 1 3",
        ] {
            let mut rb = ReadBuf::new(0);
            rb.push(odd);
            assert_eq!(rb.sized_after(b"MSG s 1 "), None, "{odd:?}");
        }
    }
}
