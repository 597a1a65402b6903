//! The WebSocket frame codec (RFC 6455), sans-IO: bytes in, messages out; frames built
//! once for many sockets.
//!
//! The server side decodes masked client frames (fragmentation, interleaved control
//! frames, UTF-8 checked as it arrives, size limits from the header alone) and encodes
//! unmasked, unfragmented frames. Every violation maps to the close code RFC 6455 asks
//! for. No sockets, threads or clocks: the caller feeds bytes and polls messages.
//!
//! Layout:
//! - [`decode`](Decoder): the per-connection decoder, streaming data-frame payloads.
//! - `header`: the frame header and every rule decidable from it alone.
//! - `message`: a data message assembled from pieces of its frames.
//! - `utf8`, `close`: text and close-payload checks.
//! - `mask`: the XOR masking shared by both directions.
//! - [`encode`](encode_frame): server frames, built in place by [`FrameBuilder`].

mod close;
mod decode;
mod encode;
mod header;
mod mask;
mod message;
#[cfg(test)]
mod props;
mod utf8;

use std::fmt;

pub use decode::{Decoder, Message};
pub use encode::{encode_client_frame, encode_close, encode_frame, FrameBuilder};

/// Which side of the connection we are: a server expects masked frames, a client unmasked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Decodes client frames (masked).
    Server,
    /// Decodes server frames (unmasked).
    Client,
}

/// Frame opcodes; the values are the 4 bits on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    /// A later fragment of a message.
    Continuation = 0,
    /// UTF-8 text.
    Text = 1,
    /// Bytes.
    Binary = 2,
    /// Connection close, with an optional code and reason.
    Close = 8,
    /// Ping; answered by a pong with the same payload.
    Ping = 9,
    /// Pong.
    Pong = 10,
}

impl Opcode {
    /// The opcode for the low 4 bits of a frame's first byte; `None` for the reserved
    /// values (3-7, 11-15), which no extension of ours defines.
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    /// Control frames are short, never fragmented, and may arrive between fragments.
    fn is_control(self) -> bool {
        self as u8 & 0x08 != 0
    }
}

/// Why the peer's input is rejected: the close code to send and a short reason.
///
/// Always the peer's fault (bad input); our own misuse panics or is a type error instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    /// Close code (1002 protocol error, 1007 invalid payload, 1009 too big).
    pub code: u16,
    /// Lowercase reason, short enough for a close frame.
    pub reason: &'static str,
}

impl ProtocolError {
    /// A violation of the framing rules (1002).
    pub(crate) const fn protocol(reason: &'static str) -> Self {
        ProtocolError {
            code: close_code::PROTOCOL_ERROR,
            reason,
        }
    }

    /// Text that is not UTF-8 (1007).
    pub(crate) const fn invalid_utf8(reason: &'static str) -> Self {
        ProtocolError {
            code: close_code::INVALID_PAYLOAD,
            reason,
        }
    }

    /// A frame or message over the limit (1009).
    pub(crate) const fn too_big(reason: &'static str) -> Self {
        ProtocolError {
            code: close_code::TOO_BIG,
            reason,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (close code {})", self.reason, self.code)
    }
}

impl std::error::Error for ProtocolError {}

/// Close codes used by rushhour (RFC 6455 and the protocol's own 4xxx).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Server shutdown: reconnect elsewhere.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A data type we do not accept.
    pub const UNSUPPORTED: u16 = 1003;
    /// A text message that is not UTF-8, or a bad close payload.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy: too many bad frames, hello timeout.
    pub const POLICY: u16 = 1008;
    /// A frame or message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// Our fault.
    pub const INTERNAL: u16 = 1011;
    /// Overload at connect: try again later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// Bad or expired token.
    pub const UNAUTHORIZED: u16 = 4001;
    /// The outbound buffer passed its limit.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The session was resumed on another connection.
    pub const REPLACED: u16 = 4009;
}

/// Whether a close code received from a peer may appear on the wire (RFC 6455 §7.4).
///
/// 1004-1006 and 1015 are reserved for local use (never sent), 1016-2999 are unassigned,
/// 1012-1014 are IANA-registered after the RFC and accepted; 3000-4999 belong to
/// libraries and applications.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4001,
            4999,
        ] {
            assert!(is_valid_close_code(ok), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert!(!is_valid_close_code(bad), "{bad}");
        }
    }

    #[test]
    fn our_own_codes_are_valid_on_the_wire() {
        use close_code::*;
        for code in [
            NORMAL,
            GOING_AWAY,
            PROTOCOL_ERROR,
            UNSUPPORTED,
            INVALID_PAYLOAD,
            POLICY,
            TOO_BIG,
            INTERNAL,
            TRY_AGAIN_LATER,
            UNAUTHORIZED,
            SLOW_CONSUMER,
            REPLACED,
        ] {
            assert!(is_valid_close_code(code), "{code}");
        }
    }

    #[test]
    fn opcodes_round_trip_through_their_bits() {
        for bits in 0u8..16 {
            match Opcode::from_bits(bits) {
                Some(op) => assert_eq!(op as u8, bits),
                None => assert!(matches!(bits, 3..=7 | 11..=15), "{bits}"),
            }
        }
        assert!(Opcode::Ping.is_control() && Opcode::Close.is_control());
        assert!(!Opcode::Text.is_control() && !Opcode::Continuation.is_control());
    }

    #[test]
    fn errors_display_their_code() {
        let e = ProtocolError::too_big("message too big");
        assert_eq!(e.code, close_code::TOO_BIG);
        assert_eq!(e.to_string(), "message too big (close code 1009)");
    }
}
