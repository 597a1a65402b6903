//! The WebSocket opening handshake of `GET /ws`, sans-IO: the fast path of the morning
//! burst. The reader thread accepts sockets and reads their first request here; a valid
//! upgrade to `/ws` is answered `101` without crossing into Python. Anything else (other
//! paths, plain HTTP, a handshake to refuse with a status and a message) goes to the
//! Python HTTP layer untouched, which answers it with h11.

use base64::Engine as _;
use bytes::Bytes;
use sha1::{Digest, Sha1};

/// A request head larger than this is not a handshake we take: Python answers it.
pub const MAX_HEAD_BYTES: usize = 8 << 10;
/// The path of the WebSocket endpoint.
pub const WS_PATH: &[u8] = b"/ws";
const MAX_HEADERS: usize = 32;
/// RFC 6455's GUID, appended to the key before hashing.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    /// Not a whole request head yet: read more.
    Partial,
    /// A valid upgrade to `/ws`: write `response`; the bytes from `consumed` on are
    /// already WebSocket frames.
    Upgrade { response: Bytes, consumed: usize },
    /// Anything else: hand the connection and these bytes to the HTTP layer.
    Other,
}

/// Which origins may open a WebSocket (empty: every origin). A request without
/// `Origin` (not a browser) is always allowed.
#[derive(Clone, Debug, Default)]
pub struct Origins(pub Vec<String>);

impl Origins {
    fn allow(&self, origin: Option<&[u8]>) -> bool {
        match origin {
            Some(o) if !self.0.is_empty() => self.0.iter().any(|a| a.as_bytes() == o),
            _ => true,
        }
    }
}

/// Reads the head in `buf` (everything read so far).
pub fn parse(buf: &[u8], origins: &Origins) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => return Head::Partial,
        _ => return Head::Other,
    };
    let path = request.path.unwrap_or("").as_bytes();
    let path = path.split(|&b| b == b'?').next().unwrap_or(path);
    if request.method != Some("GET") || path != WS_PATH || request.version != Some(1) {
        return Head::Other;
    }
    let find = |name: &str| -> Option<&[u8]> {
        let mut found = request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name));
        let first = found.next()?;
        // A repeated header is unusual enough to leave to the thorough path.
        found.next().is_none().then_some(first.value)
    };
    let has_token = |name: &str, token: &str| {
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    let key = match find("sec-websocket-key") {
        Some(k) if k.len() == 24 => k,
        _ => return Head::Other,
    };
    let origin = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("origin"))
        .map(|h| h.value);
    if !has_token("upgrade", "websocket")
        || !has_token("connection", "upgrade")
        || find("sec-websocket-version") != Some(b"13")
        || !origins.allow(origin)
    {
        return Head::Other;
    }
    Head::Upgrade {
        response: switching_protocols(key),
        consumed,
    }
}

/// The `101` answer to a handshake with this `Sec-WebSocket-Key`.
fn switching_protocols(key: &[u8]) -> Bytes {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WS_GUID);
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    Bytes::from(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nServer: rushhour\r\n\r\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    #[test]
    fn an_upgrade_is_answered_with_the_rfc_accept_token() {
        let req = request("/ws?x=1", "");
        let with_frame = format!("{req}\u{81}");
        let Head::Upgrade { response, consumed } =
            parse(with_frame.as_bytes(), &Origins::default())
        else {
            panic!("not an upgrade")
        };
        assert_eq!(consumed, req.len());
        let text = std::str::from_utf8(&response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 "));
        // The example of RFC 6455 section 1.3.
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_head_arriving_in_pieces_is_partial_until_whole() {
        let req = request("/ws", "");
        for cut in 0..req.len() {
            assert_eq!(
                parse(&req.as_bytes()[..cut], &Origins::default()),
                Head::Partial,
                "{cut}"
            );
        }
        assert!(matches!(
            parse(req.as_bytes(), &Origins::default()),
            Head::Upgrade { .. }
        ));
    }

    #[test]
    fn everything_else_goes_to_the_http_layer() {
        let none = Origins::default();
        for other in [
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            request("/ws/echo", ""),
            request("/", ""),
            request("/ws", "").replace("GET", "POST"),
            request("/ws", "").replace("13", "8"),
            request("/ws", "").replace(KEY, "short"),
            request("/ws", "").replace("Upgrade: websocket\r\n", ""),
            request("/ws", "").replace("keep-alive, Upgrade", "keep-alive"),
            request("/ws", &format!("Sec-WebSocket-Key: {KEY}\r\n")),
            "not http at all\r\n\r\n".to_string(),
            format!("GET /ws HTTP/1.1\r\nX: {}\r\n", "y".repeat(MAX_HEAD_BYTES)),
        ] {
            assert_eq!(parse(other.as_bytes(), &none), Head::Other, "{other:?}");
        }
    }

    #[test]
    fn origins_are_checked_only_when_listed_and_present() {
        let listed = Origins(vec!["https://chat.example".into()]);
        let from = |o: &str| request("/ws", &format!("Origin: {o}\r\n"));
        assert!(matches!(
            parse(from("https://chat.example").as_bytes(), &listed),
            Head::Upgrade { .. }
        ));
        assert_eq!(
            parse(from("https://evil.example").as_bytes(), &listed),
            Head::Other
        );
        assert!(matches!(
            parse(request("/ws", "").as_bytes(), &listed),
            Head::Upgrade { .. }
        ));
        assert!(matches!(
            parse(from("https://evil.example").as_bytes(), &Origins::default()),
            Head::Upgrade { .. }
        ));
    }
}
