//! Frame decoding: bytes in, complete messages out.
//!
//! A data frame's payload is consumed as it arrives: unmasked straight into the message
//! being assembled and UTF-8 checked there, so the input buffer holds at most one frame
//! header, one control frame (≤ 125 bytes) and whatever was fed but not yet polled. A
//! message is copied once, from the input buffer into the `Vec` it is returned in.

use super::close::parse_close;
use super::header::{self, Context, Header};
use super::mask::apply_mask;
use super::message::Partial;
use super::{Opcode, ProtocolError, Role};

/// A complete message or control frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A complete text message, reassembled and UTF-8 checked.
    Text(String),
    /// A complete binary message.
    Binary(Vec<u8>),
    /// A ping with its payload (≤ 125 bytes), to be echoed in a pong.
    Ping(Vec<u8>),
    /// A pong with its payload.
    Pong(Vec<u8>),
    /// A close frame: its code and reason, or `None` when its payload was empty.
    Close(Option<(u16, String)>),
}

/// The frame whose payload is being read.
#[derive(Clone, Copy, Debug)]
struct Frame {
    /// The header, with the length already checked against the limit.
    header: Header,
    /// Payload bytes consumed so far (data frames are consumed piece by piece).
    done: usize,
}

/// Incremental decoder of one connection's inbound bytes.
///
/// ### Invariants
/// `buf[pos..]` is input not yet consumed; it starts at a frame header unless `frame` is
/// set, in which case it starts inside that frame's payload.
#[derive(Debug)]
pub struct Decoder {
    /// Which side we are: decides whether frames must be masked.
    role: Role,
    /// The largest frame payload and the largest reassembled message, in bytes.
    max_message: usize,
    /// Fed bytes; those before `pos` are consumed and dropped at the next compaction.
    buf: Vec<u8>,
    /// Read offset into `buf`, so consuming a frame never moves the bytes after it.
    pos: usize,
    /// The frame whose header was consumed but whose payload was not (all of it).
    frame: Option<Frame>,
    /// The data message being assembled.
    message: Option<Partial>,
    /// The first error; once set, the decoder only repeats it.
    dead: Option<ProtocolError>,
}

/// One parsing step's outcome.
enum Step {
    /// Everything fed so far is consumed or waits for more bytes.
    NeedMore,
    /// Input was consumed (a fragment) without completing a message; go on.
    Progress,
    /// A complete message.
    Done(Message),
}

impl Decoder {
    /// A decoder for `role`, accepting frames and messages up to `max_message` bytes
    /// (the server uses 1 MiB).
    pub fn new(role: Role, max_message: usize) -> Self {
        Decoder {
            role,
            max_message,
            buf: Vec::new(),
            pos: 0,
            frame: None,
            message: None,
            dead: None,
        }
    }

    /// Appends bytes read from the socket. Never parses: the caller polls when it wants
    /// messages, so feeding stays cheap. Ignored once the decoder has failed.
    pub fn feed(&mut self, data: &[u8]) {
        if self.dead.is_some() || data.is_empty() {
            return;
        }
        let unread = self.buf.len() - self.pos;
        if unread == 0 {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= unread || self.buf.capacity() - self.buf.len() < data.len() {
            // Moves at most as many bytes as were consumed (amortised O(1) per byte), or
            // fewer than a reallocation would copy anyway.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes fed but not yet consumed, for bounding memory and for tests. Data-frame
    /// payloads are consumed as they are polled, so after polling to `Ok(None)` this is
    /// under 14 + 125 bytes: an incomplete header or control frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Parses the next complete message from what was fed; `Ok(None)` when more bytes
    /// are needed. Control frames are returned as soon as they arrive, even between the
    /// fragments of a data message.
    ///
    /// # Errors
    /// The close code and reason for the first protocol violation: 1002 (framing), 1007
    /// (text or close reason not UTF-8, reported at the first impossible byte), 1009
    /// (over `max_message`, decided from the header). After an error the decoder is dead
    /// and every later call returns the same error.
    pub fn poll(&mut self) -> Result<Option<Message>, ProtocolError> {
        if let Some(e) = &self.dead {
            return Err(e.clone());
        }
        loop {
            match self.step() {
                Ok(Step::NeedMore) => return Ok(None),
                Ok(Step::Progress) => continue,
                Ok(Step::Done(m)) => return Ok(Some(m)),
                Err(e) => {
                    self.dead = Some(e.clone());
                    // The connection is closing: free the memory now.
                    self.buf = Vec::new();
                    self.pos = 0;
                    self.frame = None;
                    self.message = None;
                    return Err(e);
                }
            }
        }
    }

    /// Reads a header if none is pending, then as much of its payload as is available.
    fn step(&mut self) -> Result<Step, ProtocolError> {
        let frame = match self.frame.take() {
            Some(frame) => frame,
            None => {
                let cx = Context {
                    role: self.role,
                    message_len: self.message.as_ref().map(Partial::len),
                    max_message: self.max_message,
                };
                let Some(header) = header::parse(&self.buf[self.pos..], cx)? else {
                    return Ok(Step::NeedMore);
                };
                self.pos += header.size;
                Frame { header, done: 0 }
            }
        };
        if frame.header.opcode.is_control() {
            self.control(frame)
        } else {
            self.data(frame)
        }
    }

    /// A control frame, once its whole (short) payload has arrived.
    fn control(&mut self, frame: Frame) -> Result<Step, ProtocolError> {
        let Header {
            opcode, len, mask, ..
        } = frame.header;
        let Some(bytes) = self.buf.get(self.pos..self.pos + len) else {
            self.frame = Some(frame);
            return Ok(Step::NeedMore);
        };
        let mut payload = bytes.to_vec();
        self.pos += len;
        if let Some(mask) = mask {
            apply_mask(&mut payload, mask, 0);
        }
        Ok(Step::Done(match opcode {
            Opcode::Ping => Message::Ping(payload),
            Opcode::Pong => Message::Pong(payload),
            _ => Message::Close(parse_close(&payload)?),
        }))
    }

    /// Moves the available part of a data frame's payload into the message.
    fn data(&mut self, mut frame: Frame) -> Result<Step, ProtocolError> {
        let Header {
            opcode,
            fin,
            len,
            mask,
            ..
        } = frame.header;
        let available = &self.buf[self.pos..];
        let take = (len - frame.done).min(available.len());
        let last = fin && frame.done + take == len;
        let mut message = self
            .message
            .take()
            .unwrap_or_else(|| Partial::new(opcode == Opcode::Text, take));
        message.append(&available[..take], mask, frame.done, last)?;
        self.pos += take;
        frame.done += take;
        if last {
            return message.finish().map(Step::Done);
        }
        self.message = Some(message);
        if frame.done == len {
            return Ok(Step::Progress);
        }
        self.frame = Some(frame);
        Ok(Step::NeedMore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_client_frame, encode_close, encode_frame};

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame, with FIN cleared when `fin` is false.
    fn frame(opcode: Opcode, payload: &[u8], fin: bool) -> Vec<u8> {
        let mut f = encode_client_frame(opcode, payload, KEY);
        if !fin {
            f[0] &= 0x7f;
        }
        f
    }

    fn server(max: usize) -> Decoder {
        Decoder::new(Role::Server, max)
    }

    /// Feeds `bytes` at once and polls until it needs more.
    fn decode(d: &mut Decoder, bytes: &[u8]) -> Result<Vec<Message>, ProtocolError> {
        d.feed(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.poll()? {
            out.push(m);
        }
        Ok(out)
    }

    fn error(bytes: &[u8]) -> u16 {
        decode(&mut server(1 << 20), bytes).unwrap_err().code
    }

    #[test]
    fn every_length_encoding_and_empty_payloads() {
        for len in [0, 1, 125, 126, 127, 65535, 65536, 70_000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut d = server(1 << 20);
            let got = decode(&mut d, &frame(Opcode::Binary, &payload, true)).unwrap();
            assert_eq!(got, vec![Message::Binary(payload)], "len {len}");
            assert_eq!(d.buffered(), 0);
        }
        let empties = [
            frame(Opcode::Text, b"", true),
            frame(Opcode::Ping, b"", true),
            frame(Opcode::Pong, b"", true),
            frame(Opcode::Close, b"", true),
        ]
        .concat();
        let got = decode(&mut server(16), &empties).unwrap();
        assert_eq!(
            got,
            vec![
                Message::Text(String::new()),
                Message::Ping(vec![]),
                Message::Pong(vec![]),
                Message::Close(None),
            ]
        );
    }

    #[test]
    fn fragments_with_an_interleaved_ping() {
        let bytes = [
            frame(Opcode::Text, "héllo, ".as_bytes(), false),
            frame(Opcode::Ping, b"are you there", true),
            frame(Opcode::Continuation, b"", false),
            frame(Opcode::Continuation, "wörld".as_bytes(), true),
            frame(Opcode::Binary, b"\x00\x01", false),
            frame(Opcode::Continuation, b"\x02", true),
        ]
        .concat();
        let got = decode(&mut server(1 << 20), &bytes).unwrap();
        assert_eq!(
            got,
            vec![
                Message::Ping(b"are you there".to_vec()),
                Message::Text("héllo, wörld".to_owned()),
                Message::Binary(vec![0, 1, 2]),
            ]
        );
    }

    #[test]
    fn a_stream_fed_byte_by_byte() {
        let big = "z".repeat(300);
        let bytes = [
            frame(Opcode::Text, "€uro".as_bytes(), true),
            frame(Opcode::Binary, &[9; 126], false),
            frame(Opcode::Pong, b"p", true),
            frame(Opcode::Continuation, &[8; 3], true),
            frame(Opcode::Text, big.as_bytes(), true),
            encode_client_frame(Opcode::Close, &encode_close(1000, "bye")[2..], KEY),
        ]
        .concat();
        let mut d = server(1 << 20);
        let mut got = Vec::new();
        for b in &bytes {
            got.extend(decode(&mut d, std::slice::from_ref(b)).unwrap());
            // Payloads stream through: nothing but a header or a pong waits.
            assert!(d.buffered() < 14 + 125);
        }
        let mut binary = vec![9; 126];
        binary.extend([8; 3]);
        assert_eq!(
            got,
            vec![
                Message::Text("€uro".to_owned()),
                Message::Pong(b"p".to_vec()),
                Message::Binary(binary),
                Message::Text(big),
                Message::Close(Some((1000, "bye".to_owned()))),
            ]
        );
    }

    #[test]
    fn every_violation_maps_to_its_close_code() {
        let mut rsv1 = frame(Opcode::Text, b"x", true);
        rsv1[0] |= 0x40;
        let mut top_bit = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
        top_bit.extend_from_slice(&KEY);
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("unmasked", encode_frame(Opcode::Text, b"x").to_vec(), 1002),
            ("rsv", rsv1, 1002),
            ("opcode 3", vec![0x83, 0x80], 1002),
            ("opcode 11", vec![0x8b, 0x80], 1002),
            ("long ping", frame(Opcode::Ping, &[0; 126], true), 1002),
            ("fragmented ping", frame(Opcode::Ping, b"", false), 1002),
            (
                "lone continuation",
                frame(Opcode::Continuation, b"x", true),
                1002,
            ),
            (
                "text inside text",
                [
                    frame(Opcode::Text, b"a", false),
                    frame(Opcode::Text, b"b", true),
                ]
                .concat(),
                1002,
            ),
            ("64-bit top bit", top_bit, 1002),
            (
                "close of one byte",
                frame(Opcode::Close, b"\x03", true),
                1002,
            ),
            (
                "close code 1005",
                frame(Opcode::Close, b"\x03\xed", true),
                1002,
            ),
            (
                "close code 5000",
                frame(Opcode::Close, b"\x13\x88", true),
                1002,
            ),
            (
                "close reason",
                frame(Opcode::Close, b"\x03\xe8\xff", true),
                1007,
            ),
            ("invalid text", frame(Opcode::Text, b"a\xffb", true), 1007),
            (
                "cut code point",
                frame(Opcode::Text, b"a\xe2\x82", true),
                1007,
            ),
            (
                "cut across fragments",
                [
                    frame(Opcode::Text, b"\xe2", false),
                    frame(Opcode::Continuation, b"\x82", true),
                ]
                .concat(),
                1007,
            ),
        ];
        for (name, bytes, code) in cases {
            assert_eq!(error(&bytes), code, "{name}");
        }
    }

    #[test]
    fn too_big_is_decided_from_the_header_alone() {
        let mut d = server(1000);
        let whole = frame(Opcode::Binary, &[0; 1001], true);
        // Only the 8-byte header is fed; the payload never needs to be.
        assert_eq!(decode(&mut d, &whole[..8]).unwrap_err().code, 1009);

        let mut d = server(1000);
        let bytes = [
            frame(Opcode::Text, &[b'a'; 600], false),
            frame(Opcode::Ping, &[0; 100], true),
            frame(Opcode::Continuation, &[b'b'; 400], false),
        ]
        .concat();
        assert_eq!(decode(&mut d, &bytes).unwrap().len(), 1);
        let next = frame(Opcode::Continuation, &[b'c'; 1], true);
        assert_eq!(decode(&mut d, &next[..2]).unwrap_err().code, 1009);

        // Exactly the limit is fine.
        let exact = frame(Opcode::Binary, &[7; 1000], true);
        assert_eq!(decode(&mut server(1000), &exact).unwrap().len(), 1);
    }

    #[test]
    fn invalid_text_fails_before_the_frame_completes() {
        // Autobahn 6.4.3: the frame arrives in three pieces; the second ends at the bad byte.
        let payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited";
        let bytes = frame(Opcode::Text, payload, true);
        let mut d = server(1 << 20);
        assert_eq!(decode(&mut d, &bytes[..6 + 11]).unwrap(), vec![]);
        assert_eq!(
            decode(&mut d, &bytes[6 + 11..6 + 13]).unwrap_err().code,
            1007
        );
    }

    #[test]
    fn payloads_are_not_buffered_while_they_stream() {
        let payload = vec![b'x'; 100_000];
        let bytes = frame(Opcode::Text, &payload, true);
        let mut d = server(1 << 20);
        for piece in bytes.chunks(4096) {
            let got = decode(&mut d, piece).unwrap();
            assert!(d.buffered() == 0);
            if !got.is_empty() {
                assert_eq!(got, vec![Message::Text("x".repeat(100_000))]);
            }
        }
    }

    #[test]
    fn the_buffer_is_compacted_without_copying_per_frame() {
        let one = frame(Opcode::Ping, b"0123456789", true);
        let many = one.repeat(1000);
        let mut d = server(1 << 20);
        d.feed(&many);
        for _ in 0..999 {
            assert!(matches!(d.poll(), Ok(Some(Message::Ping(_)))));
        }
        // Only the last frame is left, and it sits at the end of the buffer.
        assert_eq!(d.buffered(), one.len());
        assert_eq!(d.pos, many.len() - one.len());
        d.feed(&one[..1]);
        assert_eq!((d.pos, d.buffered()), (0, one.len() + 1));
    }

    #[test]
    fn a_dead_decoder_repeats_its_error_and_drops_input() {
        let mut d = server(1 << 20);
        let bytes = [frame(Opcode::Text, b"ok", true), vec![0x83, 0x80]].concat();
        d.feed(&bytes);
        assert_eq!(d.poll(), Ok(Some(Message::Text("ok".to_owned()))));
        let err = d.poll().unwrap_err();
        assert_eq!((err.code, err.reason), (1002, "reserved opcode"));
        d.feed(&frame(Opcode::Text, b"more", true));
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.poll(), Err(err.clone()));
        assert_eq!(d.poll(), Err(err));
    }
}
