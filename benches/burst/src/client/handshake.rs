//! The client side of the opening handshake (RFC 6455 §4.1), sans-IO: the request
//! bytes, and the check of the server's `101 Switching Protocols` answer.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID every server appends to the key (RFC 6455 §1.3).
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A response head larger than this is not a WebSocket server answering.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why the upgrade failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The status line was not `101`; carries the line.
    Status(String),
    /// `Sec-WebSocket-Accept` missing or not derived from our key.
    BadAccept,
    /// The head did not end within [`MAX_RESPONSE_HEAD`] bytes.
    TooLarge,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(line) => write!(f, "upgrade refused: {line}"),
            Self::BadAccept => write!(f, "bad Sec-WebSocket-Accept"),
            Self::TooLarge => write!(f, "response head too large"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// A `Sec-WebSocket-Key` from 16 bytes of the caller's entropy.
pub fn key(nonce: [u8; 16]) -> String {
    STANDARD.encode(nonce)
}

/// The `Sec-WebSocket-Accept` value a server must answer `key` with.
pub fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// The upgrade request for `path` on `host` (the `Host` header value, with port).
pub fn request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Checks the response read so far: `Ok(None)` until the head is complete, then
/// `Ok(Some(n))` with `n` the length of the head (bytes past it are frames).
///
/// # Errors
/// [`HandshakeError`] when the server refused the upgrade or answered wrongly.
pub fn parse_response(bytes: &[u8], key: &str) -> Result<Option<usize>, HandshakeError> {
    let Some(end) = memchr::memmem::find(bytes, b"\r\n\r\n") else {
        return if bytes.len() > MAX_RESPONSE_HEAD {
            Err(HandshakeError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("101") {
        return Err(HandshakeError::Status(status.to_owned()));
    }
    let want = accept_for(key);
    let accepted = lines
        .filter_map(|l| l.split_once(':'))
        .any(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == want
        });
    if !accepted {
        return Err(HandshakeError::BadAccept);
    }
    Ok(Some(end + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn response_head_and_trailing_frame_bytes() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let head =
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                    sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        let mut bytes = head.as_bytes().to_vec();
        assert_eq!(parse_response(&bytes[..20], key), Ok(None));
        bytes.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(parse_response(&bytes, key), Ok(Some(head.len())));
    }

    #[test]
    fn refusals_are_errors() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let forbidden = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n";
        assert!(matches!(
            parse_response(forbidden, key),
            Err(HandshakeError::Status(_))
        ));
        let wrong = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n";
        assert_eq!(parse_response(wrong, key), Err(HandshakeError::BadAccept));
        assert_eq!(
            parse_response(&[b'a'; MAX_RESPONSE_HEAD + 1], key),
            Err(HandshakeError::TooLarge)
        );
    }

    #[test]
    fn request_names_host_path_and_key() {
        let r = request("127.0.0.1:9000", "/ws", "abc");
        assert!(r.starts_with("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n"));
        assert!(r.contains("Sec-WebSocket-Key: abc\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
    }
}
