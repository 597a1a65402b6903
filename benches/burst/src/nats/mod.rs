//! A minimal NATS client over a raw tokio `TcpStream`, enough to publish to JetStream
//! and read its acks, and for core NATS fan-out (`SUB`, `PUB`, `MSG`, flow control by
//! `PING`/`PONG`): no NATS crate, for the same reason the WebSocket client is
//! hand-rolled (the generator's cost per message is part of what is measured).
//!
//! Layout:
//! - [`reader`]: the server's lines, parsed sans-IO.
//! - [`encode`]: the client's lines, written sans-IO.
//! - [`NatsConn`] (here): connect (`INFO`, `CONNECT`, `PING`/`PONG`), queue and flush
//!   lines, read operations, answer pings, and one request/reply for set-up.

pub mod encode;
pub mod reader;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::client::{tcp_connect, ConnError};
use crate::link::Link;
use reader::{Msg, Op, Reader};

/// The default client port of nats-server.
const DEFAULT_PORT: u16 = 4222;

/// Parses and resolves `nats://host[:port]` (blocking DNS: call it before the load).
///
/// # Errors
/// A message when the URL is not `nats://host[:port]` or does not resolve.
pub fn parse_url(url: &str) -> Result<SocketAddr, String> {
    resolve_url(url, "nats", DEFAULT_PORT)
}

/// Parses and resolves `<scheme>://host[:port][/…]` (what follows a slash is ignored:
/// a Redis database number); shared with [`crate::redis`].
///
/// # Errors
/// A message when the URL is not of that form or does not resolve.
pub(crate) fn resolve_url(
    url: &str,
    scheme: &str,
    default_port: u16,
) -> Result<SocketAddr, String> {
    let host = url
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"))
        .and_then(|rest| rest.split('/').next())
        .filter(|host| !host.is_empty())
        .ok_or_else(|| format!("{url}: --target {scheme} takes a {scheme}://HOST:PORT URL"))?;
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))
}

/// One client connection after `CONNECT` was accepted.
pub struct NatsConn {
    /// The socket, read into `reader`; lines queued to send.
    link: Link,
    /// Operations read but not handed out yet.
    reader: Reader,
    /// `PONG`s read by [`NatsConn::next_msg`] and not yet taken: a publisher's acks
    /// (each says the server processed everything before its `PING`).
    pongs: u64,
}

fn proto_error(e: reader::ProtoError) -> ConnError {
    ConnError::Protocol(e.to_string())
}

impl NatsConn {
    /// Connects to `addr` from `source`, reads `INFO`, sends `CONNECT` as `name`, and
    /// waits for the `PONG` that says the server took it.
    ///
    /// # Errors
    /// The socket's error, [`ConnError::Protocol`] on `-ERR` or a bad line,
    /// [`ConnError::Timeout`] after `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        name: &str,
        timeout: Duration,
    ) -> Result<Self, ConnError> {
        let stream = tcp_connect(addr, source).await?;
        let mut conn = Self {
            link: Link::new(stream, 16 * 1024),
            reader: Reader::new(),
            pongs: 0,
        };
        let handshake = async {
            conn.wait_for(|op| matches!(op, Op::Info(_))).await?;
            encode::write_connect(conn.link.out(), name);
            encode::write_ping(conn.link.out());
            conn.wait_for(|op| matches!(op, Op::Pong)).await
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| ConnError::Timeout("the server's PONG"))??;
        Ok(conn)
    }

    /// Reads until an operation `wanted` accepts; messages are dropped, pings
    /// answered. For set-up only.
    async fn wait_for(&mut self, wanted: impl Fn(&Op<'_>) -> bool) -> Result<(), ConnError> {
        loop {
            while let Some(op) = self.reader.next_op().map_err(proto_error)? {
                if wanted(&op) {
                    return Ok(());
                }
                match op {
                    Op::Ping => encode::write_pong(self.link.out()),
                    Op::Err(e) => return Err(err_line(e)),
                    _ => {}
                }
            }
            self.fill().await?;
        }
    }

    /// Subscribes to `subject` as `sid` and waits until the server has processed it;
    /// its messages are then read by the reader's fast path. For a subscriber whose
    /// messages come from then on.
    ///
    /// # Errors
    /// As [`NatsConn::connect`].
    pub async fn subscribe(
        &mut self,
        subject: &[u8],
        sid: u64,
        timeout: Duration,
    ) -> Result<(), ConnError> {
        self.reader.expect_msg(subject, sid);
        encode::write_sub(self.link.out(), subject, sid);
        self.sync(timeout).await
    }

    /// Sends `PING` and waits for its `PONG`: every line queued before it has then
    /// been processed. Messages read meanwhile are dropped. For set-up only.
    ///
    /// # Errors
    /// As [`NatsConn::connect`].
    pub async fn sync(&mut self, timeout: Duration) -> Result<(), ConnError> {
        encode::write_ping(self.link.out());
        tokio::time::timeout(timeout, self.wait_for(|op| matches!(op, Op::Pong)))
            .await
            .map_err(|_| ConnError::Timeout("the server's PONG"))?
    }

    /// The `PONG`s [`NatsConn::next_msg`] skipped since the last call.
    pub fn take_pongs(&mut self) -> u64 {
        std::mem::take(&mut self.pongs)
    }

    /// The buffer of lines to send: the caller writes with the [`encode`] functions,
    /// [`NatsConn::flush`] sends.
    pub fn out(&mut self) -> &mut Vec<u8> {
        self.link.out()
    }

    /// See [`Link::flush`].
    ///
    /// # Errors
    /// The socket's error.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        self.link.flush().await
    }

    /// See [`Link::fill`].
    ///
    /// # Errors
    /// [`ConnError::Eof`] when the server hung up, or the socket's error.
    pub async fn fill(&mut self) -> Result<(), ConnError> {
        self.link.fill(self.reader.buf()).await
    }

    /// The next message already read, or `None` until [`NatsConn::fill`] reads more.
    /// Pings are answered (queued), `PONG`s counted ([`NatsConn::take_pongs`]), `+OK`
    /// and `INFO` updates skipped.
    ///
    /// # Errors
    /// [`ConnError::Protocol`] on `-ERR` (the server closes after most of them) or a
    /// bad line.
    pub fn next_msg(&mut self) -> Result<Option<Msg<'_>>, ConnError> {
        // Decide first, borrow after: a message handed out must not cross a loop turn.
        let head = loop {
            let Some(head) = self.reader.next_head().map_err(proto_error)? else {
                return Ok(None);
            };
            if head.is_msg() {
                break head;
            }
            match self.reader.op(&head) {
                Op::Ping => encode::write_pong(self.link.out()),
                Op::Pong => self.pongs += 1,
                Op::Err(e) => return Err(err_line(e)),
                _ => {}
            }
        };
        match self.reader.op(&head) {
            Op::Msg(m) => Ok(Some(m)),
            _ => unreachable!("checked by is_msg"),
        }
    }

    /// Subscribes `inbox_prefix*` as `sid`, publishes `payload` to `subject` with the
    /// reply `inbox_prefix0`, and returns the first answer's payload (a 503 status —
    /// no responders — as an error). For set-up requests such as creating a stream.
    ///
    /// # Errors
    /// [`ConnError::Protocol`] on no responders or `-ERR`, the connection's error, or
    /// [`ConnError::Timeout`] after `timeout`.
    pub async fn request(
        &mut self,
        subject: &str,
        payload: &[u8],
        inbox_prefix: &str,
        sid: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, ConnError> {
        let wildcard = format!("{inbox_prefix}*");
        encode::write_sub(self.link.out(), wildcard.as_bytes(), sid);
        encode::write_pub(
            self.link.out(),
            subject.as_bytes(),
            inbox_prefix.as_bytes(),
            0,
            payload,
        );
        let wait = async {
            loop {
                if let Some(msg) = self.next_msg()? {
                    if msg.sid != sid {
                        continue;
                    }
                    if msg.status() == Some(503) {
                        return Err(ConnError::Protocol(format!(
                            "no responders on {subject} (is JetStream enabled?)"
                        )));
                    }
                    return Ok(msg.payload.to_vec());
                }
                self.fill().await?;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConnError::Timeout("a request's answer"))?
    }
}

fn err_line(e: &[u8]) -> ConnError {
    ConnError::Protocol(format!("-ERR {}", String::from_utf8_lossy(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("nats://127.0.0.1:4333").unwrap(),
            "127.0.0.1:4333".parse().unwrap()
        );
        assert_eq!(parse_url("nats://127.0.0.1").unwrap().port(), 4222);
        assert!(parse_url("ws://127.0.0.1:4222/ws").is_err());
    }

    /// A one-connection server: INFO, expects CONNECT and PING, answers PONG, pings the
    /// client, answers a request, then sends -ERR.
    #[tokio::test]
    async fn connect_request_ping_and_err_over_a_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            sock.write_all(b"INFO {\"server_id\":\"t\",\"headers\":true}\r\n")
                .await
                .unwrap();
            let mut seen = Vec::new();
            while memchr::memmem::find(&seen, b"PING\r\n").is_none() {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await.unwrap();
                seen.extend_from_slice(&chunk[..n]);
            }
            assert!(seen.starts_with(b"CONNECT {"));
            sock.write_all(b"PONG\r\nPING\r\n").await.unwrap();
            // The SUB and PUB of the request, and the PONG to our PING (queued when
            // the client next reads, so after the request).
            seen.clear();
            while memchr::memmem::find(&seen, b"PONG\r\n").is_none() {
                let mut chunk = [0u8; 4096];
                let n = sock.read(&mut chunk).await.unwrap();
                seen.extend_from_slice(&chunk[..n]);
            }
            let text = String::from_utf8(seen).unwrap();
            assert_eq!(
                text,
                "SUB _INBOX.t.* 7\r\nPUB $JS.API.INFO _INBOX.t.0 2\r\n{}\r\nPONG\r\n"
            );
            sock.write_all(b"MSG other 8 1\r\nx\r\nMSG _INBOX.t.0 7 12\r\n{\"type\":\"i\"}\r\n")
                .await
                .unwrap();
            sock.write_all(b"-ERR 'Stale Connection'\r\n")
                .await
                .unwrap();
        });
        let mut conn = NatsConn::connect(addr, None, "t", Duration::from_secs(5))
            .await
            .unwrap();
        let answer = conn
            .request(
                "$JS.API.INFO",
                b"{}",
                "_INBOX.t.",
                7,
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(answer, b"{\"type\":\"i\"}");
        let end = loop {
            match conn.next_msg() {
                Ok(Some(_)) => {}
                Ok(None) => {
                    if let Err(e) = conn.fill().await {
                        break e;
                    }
                }
                Err(e) => break e,
            }
        };
        assert!(end.to_string().contains("Stale Connection"), "{end}");
        server.await.unwrap();
    }
}
