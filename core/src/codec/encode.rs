//! Frame encoding. Server frames are never masked and never fragmented, so a frame is
//! one header and one payload; [`FrameBuilder`] writes the payload first and puts the
//! header in front of it afterwards, so a frame shared by N sockets is built with no copy.

use bytes::Bytes;

use super::mask::apply_mask;
use super::Opcode;

/// Room reserved at the front of a [`FrameBuilder`]: the longest unmasked header.
const HEADER_ROOM: usize = 10;

/// The longest close reason: a control payload is at most 125 bytes, 2 go to the code.
const MAX_CLOSE_REASON: usize = 123;

/// Writes the header of a final, unmasked frame into `out`; returns its length.
fn write_header(out: &mut [u8; HEADER_ROOM], opcode: Opcode, len: usize) -> usize {
    let h = FrameBuilder::header_len(len);
    out[0] = 0x80 | opcode as u8;
    match h {
        2 => out[1] = len as u8,
        4 => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        }
    }
    h
}

/// A complete server frame (final, unmasked) around `payload`, in one exact allocation.
///
/// Control frames (close, ping, pong) must carry at most 125 bytes; a pong echoing a
/// decoded ping always does.
pub fn encode_frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut header = [0u8; HEADER_ROOM];
    let h = write_header(&mut header, opcode, payload.len());
    let mut out = Vec::with_capacity(h + payload.len());
    out.extend_from_slice(&header[..h]);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A close frame; the reason is cut at a char boundary to fit the 125-byte payload
/// (123 bytes after the code), so the peer can still decode it as UTF-8.
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; 2 + MAX_CLOSE_REASON];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    encode_frame(Opcode::Close, &payload[..2 + end])
}

/// A final, masked client frame: for tests, benches and tools that act as clients.
pub fn encode_client_frame(opcode: Opcode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut header = [0u8; HEADER_ROOM];
    let h = write_header(&mut header, opcode, payload.len());
    header[1] |= 0x80;
    let mut out = Vec::with_capacity(h + 4 + payload.len());
    out.extend_from_slice(&header[..h]);
    out.extend_from_slice(&mask);
    out.extend_from_slice(payload);
    apply_mask(&mut out[h + 4..], mask, 0);
    out
}

/// Builds a final, unmasked frame whose payload is written in place: the header goes
/// into room reserved at the front, so the payload is never copied.
///
/// ### Invariants
/// The first 10 bytes of [`buf`](FrameBuilder::buf) are the header room; callers only
/// append after them (never truncate, clear or write into the room).
#[derive(Debug)]
pub struct FrameBuilder {
    /// The frame's opcode, written into the header by `finish`.
    opcode: Opcode,
    /// Header room, then the payload.
    buf: Vec<u8>,
}

impl FrameBuilder {
    /// A builder with room for `capacity_hint` payload bytes (more may be appended; the
    /// vector grows as usual).
    pub fn new(opcode: Opcode, capacity_hint: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER_ROOM + capacity_hint);
        buf.resize(HEADER_ROOM, 0);
        FrameBuilder { opcode, buf }
    }

    /// The buffer to append the payload to. It already holds the 10 bytes of header
    /// room: only append to it.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Payload bytes written so far.
    pub fn payload_len(&self) -> usize {
        self.buf.len() - HEADER_ROOM
    }

    /// The finished frame: the minimal header written right before the payload, and the
    /// builder's allocation shared, not copied.
    ///
    /// # Panics
    /// If the caller removed bytes from the header room (see the invariants).
    pub fn finish(mut self) -> Bytes {
        let mut header = [0u8; HEADER_ROOM];
        let h = write_header(&mut header, self.opcode, self.payload_len());
        let start = HEADER_ROOM - h;
        self.buf[start..HEADER_ROOM].copy_from_slice(&header[..h]);
        Bytes::from(self.buf).slice(start..)
    }

    /// Header length of a frame whose payload is `len` bytes (2, 4 or 10), so callers
    /// can slice the payload out of a finished frame.
    pub fn header_len(len: usize) -> usize {
        if len < 126 {
            2
        } else if len <= usize::from(u16::MAX) {
            4
        } else {
            10
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_sizes() {
        for (len, h) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let payload = vec![7u8; len];
            let f = encode_frame(Opcode::Binary, &payload);
            assert_eq!(f.len(), len + h);
            assert_eq!(FrameBuilder::header_len(len), h);
            assert_eq!(f[0], 0x82);
            assert_eq!(&f[h..], &payload[..]);
            let mut fb = FrameBuilder::new(Opcode::Binary, 0);
            fb.buf().extend_from_slice(&payload);
            assert_eq!(fb.payload_len(), len);
            assert_eq!(fb.finish(), f);
        }
    }

    #[test]
    fn rfc_examples() {
        // RFC 6455 §5.7.
        assert_eq!(&encode_frame(Opcode::Text, b"Hello")[..], b"\x81\x05Hello");
        assert_eq!(
            encode_client_frame(Opcode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d]),
            b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
        );
        assert_eq!(&encode_frame(Opcode::Pong, b"")[..], b"\x8a\x00");
        let f = encode_frame(Opcode::Binary, &[0; 256]);
        assert_eq!(&f[..4], b"\x82\x7e\x01\x00");
        let f = encode_frame(Opcode::Binary, &[0; 65536]);
        assert_eq!(&f[..10], b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00");
    }

    #[test]
    fn the_builder_shares_its_allocation() {
        let mut fb = FrameBuilder::new(Opcode::Text, 200);
        fb.buf().extend_from_slice(&[b'a'; 200]);
        let payload_at = fb.buf()[HEADER_ROOM..].as_ptr();
        let f = fb.finish();
        assert_eq!(&f[..4], b"\x81\x7e\x00\xc8");
        assert_eq!(f[4..].as_ptr(), payload_at);
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let f = encode_close(1000, &"é".repeat(100));
        assert_eq!(f.len(), 2 + 2 + 122);
        assert_eq!(&f[..4], b"\x88\x7c\x03\xe8");
        assert_eq!(std::str::from_utf8(&f[4..]).unwrap(), "é".repeat(61));
        let f = encode_close(4008, &"a".repeat(200));
        assert_eq!(f.len(), 2 + 125);
        assert_eq!(&encode_close(1001, "")[..], b"\x88\x02\x03\xe9");
    }
}
