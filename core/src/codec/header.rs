//! The frame header (RFC 6455 §5.2): 2 to 14 bytes, and every rule that can be decided
//! from it alone.
//!
//! Rules are checked in the order their bytes arrive, so a bad frame is rejected from its
//! first two bytes where possible, and an oversized one from its length field, before any
//! of its payload is buffered.

use super::{Opcode, ProtocolError, Role};

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    /// Whether this frame ends its message (always true for control frames).
    pub fin: bool,
    /// The frame's opcode.
    pub opcode: Opcode,
    /// Payload length, already checked against the size limit.
    pub len: usize,
    /// The mask key, present exactly when the role expects masked frames.
    pub mask: Option<[u8; 4]>,
    /// Header bytes to consume before the payload.
    pub size: usize,
}

/// What the header rules need to know about the decoder.
#[derive(Clone, Copy, Debug)]
pub(super) struct Context {
    /// Which side we are: servers require masked frames, clients unmasked ones.
    pub role: Role,
    /// Bytes of the fragmented data message in progress, if any.
    pub message_len: Option<usize>,
    /// The largest frame payload and the largest message.
    pub max_message: usize,
}

/// Parses the header at the start of `data`; `Ok(None)` when it is not complete yet.
///
/// # Errors
/// 1002 for reserved bits or opcodes, wrong masking, a long or fragmented control frame,
/// a continuation without a message or a new message inside one, a 64-bit length with
/// its top bit set; 1009 for a payload that would pass `max_message`.
pub(super) fn parse(data: &[u8], cx: Context) -> Result<Option<Header>, ProtocolError> {
    let &[b0, b1, ..] = data else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::protocol("reserved bits set"));
    }
    let opcode = Opcode::from_bits(b0 & 0x0f).ok_or(ProtocolError::protocol("reserved opcode"))?;
    let fin = b0 & 0x80 != 0;
    match (opcode, cx.message_len) {
        (Opcode::Continuation, None) => {
            return Err(ProtocolError::protocol("continuation without a message"))
        }
        (Opcode::Text | Opcode::Binary, Some(_)) => {
            return Err(ProtocolError::protocol(
                "new message inside a fragmented one",
            ))
        }
        _ => {}
    }
    let masked = b1 & 0x80 != 0;
    match (cx.role, masked) {
        (Role::Server, false) => {
            return Err(ProtocolError::protocol("client frames must be masked"))
        }
        (Role::Client, true) => {
            return Err(ProtocolError::protocol("server frames must not be masked"))
        }
        _ => {}
    }
    let len7 = b1 & 0x7f;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::protocol("fragmented control frame"));
        }
        if len7 > 125 {
            return Err(ProtocolError::protocol("control frame too long"));
        }
    }
    let (len, mut size) = match len7 {
        126 => match data.get(2..4) {
            Some(&[hi, lo]) => (u64::from(u16::from_be_bytes([hi, lo])), 4),
            _ => return Ok(None),
        },
        127 => match data.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                let n = u64::from_be_bytes(be);
                if n >> 63 != 0 {
                    return Err(ProtocolError::protocol("invalid length"));
                }
                (n, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    // Control frames do not join the message in progress; data frames add to it.
    let room = if opcode.is_control() {
        cx.max_message
    } else {
        cx.max_message - cx.message_len.unwrap_or(0)
    };
    if len > room as u64 {
        return Err(ProtocolError::too_big("message too big"));
    }
    let mask = if masked {
        let Some(&[k0, k1, k2, k3]) = data.get(size..size + 4) else {
            return Ok(None);
        };
        size += 4;
        Some([k0, k1, k2, k3])
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        opcode,
        // At most `room`, which is a usize.
        len: len as usize,
        mask,
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Context = Context {
        role: Role::Server,
        message_len: None,
        max_message: 1 << 20,
    };

    fn code(data: &[u8], cx: Context) -> u16 {
        parse(data, cx).unwrap_err().code
    }

    #[test]
    fn short_medium_and_long_lengths() {
        let key = [1, 2, 3, 4];
        let mut short = vec![0x81, 0x80 | 125];
        short.extend_from_slice(&key);
        let mut medium = vec![0x82, 0x80 | 126, 0x01, 0x00];
        medium.extend_from_slice(&key);
        let mut long = vec![0x02, 0x80 | 127, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00];
        long.extend_from_slice(&key);
        for (bytes, fin, len) in [
            (short, true, 125),
            (medium, true, 256),
            (long, false, 65536),
        ] {
            let h = parse(&bytes, SERVER).unwrap().unwrap();
            assert_eq!(
                (h.fin, h.len, h.mask, h.size),
                (fin, len, Some(key), bytes.len())
            );
            // Any prefix is "not yet".
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut], SERVER), Ok(None), "cut {cut}");
            }
        }
    }

    #[test]
    fn clients_read_unmasked_frames() {
        let cx = Context {
            role: Role::Client,
            ..SERVER
        };
        let h = parse(&[0x8a, 0x00], cx).unwrap().unwrap();
        assert_eq!(
            (h.opcode, h.len, h.mask, h.size),
            (Opcode::Pong, 0, None, 2)
        );
    }

    #[test]
    fn masking_must_match_the_role() {
        assert_eq!(code(&[0x81, 0x05], SERVER), 1002);
        let client = Context {
            role: Role::Client,
            ..SERVER
        };
        assert_eq!(code(&[0x81, 0x85], client), 1002);
    }

    #[test]
    fn reserved_bits_and_opcodes() {
        for b0 in [0xc1, 0xa1, 0x91] {
            assert_eq!(code(&[b0, 0x80], SERVER), 1002, "{b0:#x}");
        }
        for op in (3..=7).chain(11..=15) {
            assert_eq!(code(&[0x80 | op, 0x80], SERVER), 1002, "{op}");
        }
    }

    #[test]
    fn control_frames_are_short_and_final() {
        assert_eq!(code(&[0x89, 0x80 | 126], SERVER), 1002);
        assert_eq!(code(&[0x89, 0x80 | 127], SERVER), 1002);
        assert_eq!(code(&[0x09, 0x80], SERVER), 1002);
        assert_eq!(code(&[0x08, 0x80], SERVER), 1002);
        assert!(parse(&[0x89, 0x80 | 125, 0, 0, 0, 0], SERVER)
            .unwrap()
            .is_some());
    }

    #[test]
    fn fragments_must_belong_to_a_message() {
        assert_eq!(code(&[0x80, 0x80], SERVER), 1002);
        let inside = Context {
            message_len: Some(3),
            ..SERVER
        };
        assert_eq!(code(&[0x81, 0x80], inside), 1002);
        assert_eq!(code(&[0x02, 0x80], inside), 1002);
        // Continuations and control frames are fine inside a message.
        assert!(parse(&[0x80, 0x80, 0, 0, 0, 0], inside).unwrap().is_some());
        assert!(parse(&[0x89, 0x80, 0, 0, 0, 0], inside).unwrap().is_some());
    }

    #[test]
    fn a_64_bit_length_with_the_top_bit_set_is_a_protocol_error() {
        let bytes = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(code(&bytes, SERVER), 1002);
    }

    #[test]
    fn too_big_is_decided_before_the_mask_key_arrives() {
        let small = Context {
            max_message: 1000,
            ..SERVER
        };
        assert_eq!(code(&[0x82, 0x80 | 126, 0x03, 0xe9], small), 1009);
        assert!(parse(&[0x82, 0x80 | 126, 0x03, 0xe8], small)
            .unwrap()
            .is_none());
        let huge = [0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(code(&huge, small), 1009);
        // A continuation counts what the message already holds...
        let growing = Context {
            message_len: Some(990),
            ..small
        };
        assert_eq!(code(&[0x80, 0x80 | 11], growing), 1009);
        assert!(parse(&[0x80, 0x80 | 10], growing).unwrap().is_none());
        // ...a control frame in between does not.
        assert!(parse(&[0x89, 0x80 | 100], growing).unwrap().is_none());
    }

    #[test]
    fn control_frames_obey_a_tiny_limit_too() {
        let tiny = Context {
            max_message: 10,
            ..SERVER
        };
        assert_eq!(code(&[0x89, 0x80 | 11], tiny), 1009);
    }
}
