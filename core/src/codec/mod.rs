//! The WebSocket frame codec (RFC 6455), sans-IO: bytes in, messages out; frames built
//! once for many sockets.
//!
//! The server side decodes masked client frames (fragmentation, interleaved control
//! frames, UTF-8 checked as it arrives, size limits from the header alone) and encodes
//! unmasked, unfragmented frames. Every violation maps to the close code RFC 6455 asks for.

mod decode;
mod encode;

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

/// Frame opcodes.
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

/// Why the peer's input is rejected: the close code to send and a short reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    /// Close code (1002 protocol error, 1007 invalid payload, 1009 too big).
    pub code: u16,
    /// Lowercase reason, sent in the close frame.
    pub reason: &'static str,
}

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
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
        ] {
            assert!(is_valid_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!is_valid_close_code(bad), "{bad}");
        }
    }
}
