//! WebSocket frames as a client sees them (RFC 6455 §5), sans-IO.
//!
//! [`FrameReader`] parses the unmasked frames a server sends straight out of one
//! per-connection buffer: a frame is a borrowed slice, never a copy, so a subscriber
//! costs one `read` and a header parse per delivery and no allocation once its buffer
//! has grown to the largest frame. [`encode_client_frame`] writes the masked frames a
//! client must send.

use std::fmt;

use crate::readbuf::ReadBuf;
pub use crate::readbuf::MIN_SMALL_READ;

/// Frame opcodes (RFC 6455 §5.2).
pub mod opcode {
    /// A later fragment of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// UTF-8 text.
    pub const TEXT: u8 = 0x1;
    /// Bytes.
    pub const BINARY: u8 = 0x2;
    /// Close, with an optional code and reason.
    pub const CLOSE: u8 = 0x8;
    /// Ping: the client answers with a pong carrying the same payload.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Control frames carry at most 125 bytes (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// One frame, borrowed from the reader's buffer until the next call.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Whether this is the last fragment of its message.
    pub fin: bool,
    /// One of [`opcode`].
    pub opcode: u8,
    /// The payload (server frames are never masked).
    pub payload: &'a [u8],
}

/// Why the server's bytes are not a valid stream of frames; the connection is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A server frame had the mask bit set (RFC 6455 §5.1).
    Masked,
    /// RSV bits set with no extension negotiated.
    Reserved,
    /// An opcode RFC 6455 does not define.
    BadOpcode(u8),
    /// A control frame that is fragmented or longer than 125 bytes.
    BadControl,
    /// A frame longer than the reader's limit.
    TooLarge(u64),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Masked => write!(f, "masked server frame"),
            Self::Reserved => write!(f, "reserved bits set"),
            Self::BadOpcode(op) => write!(f, "unknown opcode {op:#x}"),
            Self::BadControl => write!(f, "fragmented or oversized control frame"),
            Self::TooLarge(n) => write!(f, "frame of {n} bytes over the limit"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Parses frames out of one growable buffer ([`ReadBuf`]) that the caller reads the
/// socket into.
#[derive(Debug)]
pub struct FrameReader {
    buf: ReadBuf,
    /// Largest frame accepted; a guard against a runaway length, not a protocol limit.
    max_frame: usize,
}

impl FrameReader {
    /// A reader with `capacity` bytes to start with, refusing frames over `max_frame`.
    pub fn new(capacity: usize, max_frame: usize) -> Self {
        Self {
            buf: ReadBuf::new(capacity),
            max_frame,
        }
    }

    /// Like [`FrameReader::new`], but offering reads of `read_size` bytes at first
    /// (see [`ReadBuf::with_read_size`]).
    pub fn with_read_size(capacity: usize, read_size: usize, max_frame: usize) -> Self {
        Self {
            buf: ReadBuf::with_read_size(capacity, read_size),
            max_frame,
        }
    }

    /// The buffer the socket is read into (see [`crate::link::Link::fill`]).
    pub fn buf(&mut self) -> &mut ReadBuf {
        &mut self.buf
    }

    /// Bytes read but not parsed yet.
    pub fn buffered(&self) -> usize {
        self.buf.buffered()
    }

    /// Copies `bytes` in as if read from the socket (the bytes that followed a
    /// handshake response in the same read).
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.push(bytes);
    }

    /// The next complete frame, or `None` until more bytes are read.
    ///
    /// # Errors
    /// A [`FrameError`] when the bytes are not a valid server frame; the connection
    /// cannot go on.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, FrameError> {
        Ok(self.next_head()?.map(|head| self.frame(&head)))
    }

    /// Like [`FrameReader::next_frame`], but the frame is returned as offsets that
    /// borrow nothing (see [`FrameReader::frame`]), for callers that must touch other
    /// state before deciding whether to hand the frame out.
    ///
    /// # Errors
    /// As [`FrameReader::next_frame`].
    pub fn next_head(&mut self) -> Result<Option<FrameHead>, FrameError> {
        let Some((fin, op, header, len)) = parse_header(self.buf.pending())? else {
            return Ok(None);
        };
        if len > self.max_frame as u64 {
            return Err(FrameError::TooLarge(len));
        }
        let total = header + len as usize;
        if self.buf.buffered() < total {
            self.buf.need(total);
            return Ok(None);
        }
        let start = self.buf.start();
        self.buf.consume_to(start + total);
        Ok(Some(FrameHead {
            fin,
            opcode: op,
            start: start + header,
            end: start + total,
        }))
    }

    /// The frame `head` locates; valid until the next [`FrameReader::spare`], which
    /// may move the bytes.
    pub fn frame(&self, head: &FrameHead) -> Frame<'_> {
        Frame {
            fin: head.fin,
            opcode: head.opcode,
            payload: &self.buf.bytes()[head.start..head.end],
        }
    }
}

/// A parsed frame header with the payload's place in the reader's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    /// Whether this is the last fragment of its message.
    pub fin: bool,
    /// One of [`opcode`].
    pub opcode: u8,
    /// Start of the payload in the buffer.
    start: usize,
    /// End of the payload in the buffer.
    end: usize,
}

/// Parses a frame header: `(fin, opcode, header length, payload length)`, or `None`
/// while the header itself is incomplete.
fn parse_header(bytes: &[u8]) -> Result<Option<(bool, u8, usize, u64)>, FrameError> {
    let [b0, b1, rest @ ..] = bytes else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let op = b0 & 0x0F;
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    match op {
        opcode::CONTINUATION | opcode::TEXT | opcode::BINARY => {}
        opcode::CLOSE | opcode::PING | opcode::PONG => {
            if !fin || usize::from(b1 & 0x7F) > MAX_CONTROL_PAYLOAD {
                return Err(FrameError::BadControl);
            }
        }
        other => return Err(FrameError::BadOpcode(other)),
    }
    Ok(match b1 & 0x7F {
        126 => rest
            .get(..2)
            .map(|l| (fin, op, 4, u64::from(u16::from_be_bytes([l[0], l[1]])))),
        127 => rest.get(..8).map(|l| {
            let mut be = [0; 8];
            be.copy_from_slice(l);
            (fin, op, 10, u64::from_be_bytes(be))
        }),
        short => Some((fin, op, 2, u64::from(short))),
    })
}

/// Appends one final, masked client frame to `out` (RFC 6455 §5.3).
pub fn encode_client_frame(out: &mut Vec<u8>, op: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | op);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    let at = out.len();
    out.extend_from_slice(payload);
    for (i, b) in out[at..].iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// A cheap source of masking keys. RFC 6455 asks for unpredictable keys to protect
/// intermediaries' caches from a hostile page; a load generator on loopback only needs
/// them to vary.
#[derive(Debug, Clone)]
pub struct MaskKeys(u64);

impl MaskKeys {
    /// Keys seeded from `seed` (any value; zero is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next key (xorshift64).
    pub fn next_key(&mut self) -> [u8; 4] {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 as u32).to_ne_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked server frame.
    fn server_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | op];
        match payload.len() {
            n @ 0..=125 => out.push(n as u8),
            n @ 126..=0xFFFF => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    fn frames(reader: &mut FrameReader) -> Vec<(bool, u8, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(f) = reader.next_frame().unwrap() {
            out.push((f.fin, f.opcode, f.payload.to_vec()));
        }
        out
    }

    #[test]
    fn parses_all_three_length_forms() {
        let big = vec![b'x'; 70_000];
        let mid = vec![b'y'; 300];
        let mut wire = server_frame(true, opcode::TEXT, b"{\"op\":\"msg\"}");
        wire.extend(server_frame(true, opcode::TEXT, &mid));
        wire.extend(server_frame(true, opcode::BINARY, &big));
        let mut r = FrameReader::new(16, 1 << 20);
        r.push(&wire);
        let got = frames(&mut r);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (true, opcode::TEXT, b"{\"op\":\"msg\"}".to_vec()));
        assert_eq!(got[1].2, mid);
        assert_eq!(got[2].2, big);
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn every_split_point_yields_the_same_frames() {
        let mut wire = server_frame(true, opcode::TEXT, b"hello");
        wire.extend(server_frame(true, opcode::PING, b"p"));
        wire.extend(server_frame(false, opcode::TEXT, &[b'a'; 200]));
        wire.extend(server_frame(true, opcode::CONTINUATION, b"end"));
        for cut in 0..=wire.len() {
            let mut r = FrameReader::new(0, 1 << 20);
            r.push(&wire[..cut]);
            let mut got = frames(&mut r);
            r.push(&wire[cut..]);
            got.extend(frames(&mut r));
            let ops: Vec<_> = got
                .iter()
                .map(|(fin, op, p)| (*fin, *op, p.len()))
                .collect();
            assert_eq!(
                ops,
                [
                    (true, opcode::TEXT, 5),
                    (true, opcode::PING, 1),
                    (false, opcode::TEXT, 200),
                    (true, 0, 3)
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn byte_at_a_time_through_spare_and_filled() {
        let payload = vec![b'z'; 5000];
        let wire = server_frame(true, opcode::TEXT, &payload);
        let mut r = FrameReader::new(0, 1 << 20);
        let mut seen = 0;
        for b in &wire {
            let spare = r.buf().spare();
            spare[0] = *b;
            r.buf().filled(1);
            while let Some(f) = r.next_frame().unwrap() {
                assert_eq!(f.payload, &payload[..]);
                seen += 1;
            }
        }
        assert_eq!(seen, 1);
    }

    #[test]
    fn spare_makes_room_for_a_known_large_frame() {
        let payload = vec![b'q'; 100_000];
        let wire = server_frame(true, opcode::TEXT, &payload);
        let mut r = FrameReader::new(0, 1 << 20);
        r.push(&wire[..10]);
        assert!(r.next_frame().unwrap().is_none());
        assert!(r.buf().spare().len() >= wire.len() - 10);
    }

    #[test]
    fn small_readers_still_take_a_frame_larger_than_their_buffer() {
        // A frame larger than the buffer still fits once its header is known.
        let payload = vec![b'w'; 3000];
        let wire = server_frame(true, opcode::TEXT, &payload);
        let mut r = FrameReader::with_read_size(0, 512, 1 << 20);
        r.push(&wire);
        assert_eq!(r.next_frame().unwrap().unwrap().payload, &payload[..]);
    }

    #[test]
    fn rejects_what_a_server_must_not_send() {
        let cases: [(&[u8], FrameError); 5] = [
            (&[0x81, 0x85, 0, 0, 0, 0], FrameError::Masked),
            (&[0xC1, 0x00], FrameError::Reserved),
            (&[0x83, 0x00], FrameError::BadOpcode(3)),
            (&[0x09, 0x00], FrameError::BadControl),
            (&[0x89, 126, 0, 200], FrameError::BadControl),
        ];
        for (wire, want) in cases {
            let mut r = FrameReader::new(0, 1 << 20);
            r.push(wire);
            assert_eq!(r.next_frame().unwrap_err(), want);
        }
        let mut r = FrameReader::new(0, 1000);
        r.push(&[0x81, 126, 0x10, 0x00]);
        assert_eq!(r.next_frame().unwrap_err(), FrameError::TooLarge(4096));
    }

    #[test]
    fn client_frames_are_masked_and_round_trip() {
        for len in [0, 5, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            let mask = MaskKeys::new(7).next_key();
            encode_client_frame(&mut out, opcode::TEXT, &payload, mask);
            assert_eq!(out[0], 0x81);
            assert_ne!(out[1] & 0x80, 0, "mask bit");
            // Unmask and reparse as if a server had sent it.
            let header = out.len() - len - 4;
            let key: [u8; 4] = out[header..header + 4].try_into().unwrap();
            let mut plain = out[..header].to_vec();
            plain[1] &= 0x7F;
            plain.extend(
                out[header + 4..]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ key[i & 3]),
            );
            let mut r = FrameReader::new(0, 1 << 20);
            r.push(&plain);
            assert_eq!(r.next_frame().unwrap().unwrap().payload, &payload[..]);
        }
    }

    #[test]
    fn mask_keys_vary() {
        let mut keys = MaskKeys::new(0);
        let a = keys.next_key();
        let b = keys.next_key();
        assert_ne!(a, b);
    }
}
