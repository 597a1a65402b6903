//! Frame decoding: bytes in, complete messages out.

use super::{close_code, is_valid_close_code, Opcode, ProtocolError, Role};

/// A complete message or control frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A complete text message, reassembled and UTF-8 checked.
    Text(String),
    /// A complete binary message.
    Binary(Vec<u8>),
    /// A ping with its payload.
    Ping(Vec<u8>),
    /// A pong with its payload.
    Pong(Vec<u8>),
    /// A close frame: its code and reason, or None when empty.
    Close(Option<(u16, String)>),
}

fn err(code: u16, reason: &'static str) -> ProtocolError {
    ProtocolError { code, reason }
}

/// Incremental decoder of one connection's inbound bytes.
#[derive(Debug)]
pub struct Decoder {
    role: Role,
    max_message: usize,
    buf: Vec<u8>,
    pos: usize,
    /// The opcode and bytes of a fragmented message in progress.
    partial: Option<(Opcode, Vec<u8>)>,
    /// Bytes of `partial` already known to be valid UTF-8 (text only).
    checked: usize,
    dead: Option<ProtocolError>,
}

impl Decoder {
    /// A decoder for `role`, accepting frames and messages up to `max_message` bytes.
    pub fn new(role: Role, max_message: usize) -> Self {
        Decoder {
            role,
            max_message,
            buf: Vec::new(),
            pos: 0,
            partial: None,
            checked: 0,
            dead: None,
        }
    }

    /// Appends bytes read from the socket.
    pub fn feed(&mut self, data: &[u8]) {
        if self.dead.is_some() {
            return;
        }
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos > self.buf.len() / 2) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// The close code and reason for the first protocol violation; the decoder stays dead.
    pub fn poll(&mut self) -> Result<Option<Message>, ProtocolError> {
        if let Some(e) = &self.dead {
            return Err(e.clone());
        }
        loop {
            match self.next_frame() {
                Ok(None) => return Ok(None),
                Ok(Some(m)) => return Ok(Some(m)),
                Err(e) if e.code == 0 => continue,
                Err(e) => {
                    self.dead = Some(e.clone());
                    self.buf = Vec::new();
                    self.pos = 0;
                    self.partial = None;
                    return Err(e);
                }
            }
        }
    }

    /// Parses one frame. `Err` with code 0 means "a fragment was consumed, go on".
    fn next_frame(&mut self) -> Result<Option<Message>, ProtocolError> {
        let data = &self.buf[self.pos..];
        if data.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (data[0], data[1]);
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(err(close_code::PROTOCOL_ERROR, "reserved bits set"));
        }
        let opcode = match b0 & 0x0f {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return Err(err(close_code::PROTOCOL_ERROR, "reserved opcode")),
        };
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => {
                return Err(err(
                    close_code::PROTOCOL_ERROR,
                    "client frames must be masked",
                ))
            }
            (Role::Client, true) => {
                return Err(err(
                    close_code::PROTOCOL_ERROR,
                    "server frames must not be masked",
                ))
            }
            _ => {}
        }
        let control = matches!(opcode, Opcode::Close | Opcode::Ping | Opcode::Pong);
        let (len, mut at) = match b1 & 0x7f {
            126 => {
                if data.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([data[2], data[3]]) as u64, 4)
            }
            127 => {
                if data.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[2..10]);
                let n = u64::from_be_bytes(b);
                if n >> 63 != 0 {
                    return Err(err(close_code::PROTOCOL_ERROR, "invalid length"));
                }
                (n, 10)
            }
            n => (n as u64, 2),
        };
        if control {
            if len > 125 {
                return Err(err(close_code::PROTOCOL_ERROR, "control frame too long"));
            }
            if !fin {
                return Err(err(close_code::PROTOCOL_ERROR, "fragmented control frame"));
            }
        }
        match (opcode, &self.partial) {
            (Opcode::Continuation, None) => {
                return Err(err(
                    close_code::PROTOCOL_ERROR,
                    "continuation without a message",
                ))
            }
            (Opcode::Text | Opcode::Binary, Some(_)) => {
                return Err(err(
                    close_code::PROTOCOL_ERROR,
                    "new message inside a fragmented one",
                ))
            }
            _ => {}
        }
        let so_far = self.partial.as_ref().map_or(0, |(_, b)| b.len()) as u64;
        if len > self.max_message as u64 || (!control && so_far + len > self.max_message as u64) {
            return Err(err(close_code::TOO_BIG, "message too big"));
        }
        let mask = if masked {
            if data.len() < at + 4 {
                return Ok(None);
            }
            let m = [data[at], data[at + 1], data[at + 2], data[at + 3]];
            at += 4;
            Some(m)
        } else {
            None
        };
        let len = len as usize;
        if data.len() < at + len {
            return Ok(None);
        }
        let mut payload = data[at..at + len].to_vec();
        self.pos += at + len;
        if let Some(mask) = mask {
            unmask(&mut payload, mask);
        }
        match opcode {
            Opcode::Ping => Ok(Some(Message::Ping(payload))),
            Opcode::Pong => Ok(Some(Message::Pong(payload))),
            Opcode::Close => close_payload(&payload).map(|c| Some(Message::Close(c))),
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                let (kind, mut bytes) = match self.partial.take() {
                    Some((kind, mut bytes)) => {
                        bytes.extend_from_slice(&payload);
                        (kind, bytes)
                    }
                    None => {
                        self.checked = 0;
                        (opcode, payload)
                    }
                };
                if kind == Opcode::Text {
                    self.check_utf8(&bytes, fin)?;
                }
                if !fin {
                    self.partial = Some((kind, bytes));
                    return Err(err(0, "")); // a fragment: keep going
                }
                if kind == Opcode::Text {
                    // SAFETY-free: validated above, so this cannot fail.
                    let text = String::from_utf8(std::mem::take(&mut bytes))
                        .map_err(|_| err(close_code::INVALID_PAYLOAD, "invalid utf-8"))?;
                    Ok(Some(Message::Text(text)))
                } else {
                    Ok(Some(Message::Binary(bytes)))
                }
            }
        }
    }

    /// Validates the text so far; fails as soon as it cannot be a prefix of UTF-8.
    fn check_utf8(&mut self, bytes: &[u8], fin: bool) -> Result<(), ProtocolError> {
        match std::str::from_utf8(&bytes[self.checked..]) {
            Ok(_) => {
                self.checked = bytes.len();
                Ok(())
            }
            Err(e) if e.error_len().is_none() && !fin => {
                self.checked += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(err(close_code::INVALID_PAYLOAD, "invalid utf-8")),
        }
    }
}

fn close_payload(payload: &[u8]) -> Result<Option<(u16, String)>, ProtocolError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(err(close_code::PROTOCOL_ERROR, "close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_close_code(code) {
                return Err(err(close_code::PROTOCOL_ERROR, "invalid close code"));
            }
            let reason = std::str::from_utf8(&payload[2..])
                .map_err(|_| err(close_code::INVALID_PAYLOAD, "invalid utf-8 in close reason"))?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

/// XORs the payload with the mask, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8])) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    for (i, b) in rest.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}
