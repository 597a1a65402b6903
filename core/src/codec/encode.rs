//! Frame encoding. Server frames are never masked and never fragmented.

use bytes::Bytes;

use super::Opcode;

/// Room reserved at the front of a [`FrameBuilder`]: the longest header.
const MAX_HEADER: usize = 10;

/// Writes the header of a final, unmasked frame into `out`.
fn write_header(out: &mut [u8; MAX_HEADER], opcode: Opcode, len: usize) -> usize {
    out[0] = 0x80 | opcode as u8;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= u16::MAX as usize {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A complete server frame around `payload`.
pub fn encode_frame(opcode: Opcode, payload: &[u8]) -> Bytes {
    let mut fb = FrameBuilder::new(opcode, payload.len());
    fb.buf().extend_from_slice(payload);
    fb.finish()
}

/// A close frame; the reason is cut at a char boundary to fit the 125-byte payload.
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    encode_frame(Opcode::Close, &payload)
}

/// A masked client frame (tests and client-side tools).
pub fn encode_client_frame(opcode: Opcode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut header = [0u8; MAX_HEADER];
    let h = write_header(&mut header, opcode, payload.len());
    header[1] |= 0x80;
    let mut out = Vec::with_capacity(h + 4 + payload.len());
    out.extend_from_slice(&header[..h]);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Builds a frame whose payload is written in place: the header goes into room reserved
/// at the front, so the payload is never copied.
pub struct FrameBuilder {
    opcode: Opcode,
    buf: Vec<u8>,
}

impl FrameBuilder {
    /// A builder with room for `capacity_hint` payload bytes.
    pub fn new(opcode: Opcode, capacity_hint: usize) -> Self {
        let mut buf = Vec::with_capacity(MAX_HEADER + capacity_hint);
        buf.resize(MAX_HEADER, 0);
        FrameBuilder { opcode, buf }
    }

    /// The buffer to append payload to. Only append: its first bytes are header room.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Payload bytes written so far.
    pub fn payload_len(&self) -> usize {
        self.buf.len() - MAX_HEADER
    }

    /// The finished frame, sharing the builder's allocation.
    pub fn finish(mut self) -> Bytes {
        let mut header = [0u8; MAX_HEADER];
        let h = write_header(&mut header, self.opcode, self.payload_len());
        let start = MAX_HEADER - h;
        self.buf[start..MAX_HEADER].copy_from_slice(&header[..h]);
        Bytes::from(self.buf).slice(start..)
    }

    /// Header length of a frame with a `len`-byte payload (2, 4 or 10).
    pub fn header_len(len: usize) -> usize {
        if len < 126 {
            2
        } else if len <= u16::MAX as usize {
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
            let f = encode_frame(Opcode::Binary, &vec![7u8; len]);
            assert_eq!(f.len(), len + h);
            assert_eq!(FrameBuilder::header_len(len), h);
            assert_eq!(f[0], 0x82);
        }
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let f = encode_close(1000, &"é".repeat(100));
        assert!(f.len() <= 127);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
        assert_eq!(&f[2..4], &1000u16.to_be_bytes());
    }
}
