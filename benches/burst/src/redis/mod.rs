//! A minimal Redis client over a raw tokio `TcpStream`, enough for Pub/Sub fan-out:
//! `PING`, `SUBSCRIBE`, pipelined `PUBLISH`. No Redis crate, for the same reason the
//! WebSocket and NATS clients are hand-rolled (the generator's cost per delivery is
//! part of what is measured). It speaks RESP2, the protocol a connection starts in.
//!
//! Layout:
//! - [`reader`]: the server's values, parsed sans-IO, deliveries by a prefix compare.
//! - [`encode`]: the client's commands, written sans-IO.
//! - [`RedisConn`] (here): connect, queue and flush commands, read values, subscribe.

pub mod encode;
pub mod reader;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::client::{tcp_connect, ConnError};
use crate::link::Link;
use reader::{Frame, Reader, Value};

/// The default port of redis-server.
const DEFAULT_PORT: u16 = 6379;

/// Parses and resolves `redis://host[:port][/db]` (blocking DNS: call it before the
/// load).
///
/// # Errors
/// A message when the URL is not of that form or does not resolve.
pub fn parse_url(url: &str) -> Result<SocketAddr, String> {
    crate::nats::resolve_url(url, "redis", DEFAULT_PORT)
}

/// One client connection.
pub struct RedisConn {
    /// The socket, read into `reader`; commands queued to send.
    link: Link,
    /// Values read but not handed out yet.
    reader: Reader,
}

fn proto_error(e: reader::ProtoError) -> ConnError {
    ConnError::Protocol(e.to_string())
}

impl RedisConn {
    /// Connects to `addr` from `source` and checks that a Redis server answers
    /// (`PING` → `+PONG`) within `timeout`.
    ///
    /// # Errors
    /// The socket's error, [`ConnError::Protocol`] on another answer or bytes that are
    /// not RESP, [`ConnError::Timeout`] after `timeout`.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Self, ConnError> {
        let stream = tcp_connect(addr, source).await?;
        let mut conn = Self {
            link: Link::new(stream, 16 * 1024),
            reader: Reader::new(),
        };
        encode::write_command(conn.link.out(), &[b"PING"]);
        conn.wait_for("PONG", timeout, |frame| {
            matches!(frame, Frame::Value(Value::Simple(b"PONG")))
        })
        .await?;
        Ok(conn)
    }

    /// Subscribes to `channel` and waits for the confirmation; deliveries on it are
    /// then read by the reader's fast path.
    ///
    /// # Errors
    /// As [`RedisConn::connect`].
    pub async fn subscribe(&mut self, channel: &[u8], timeout: Duration) -> Result<(), ConnError> {
        self.reader.expect_channel(channel);
        encode::write_command(self.link.out(), &[b"SUBSCRIBE", channel]);
        self.wait_for("the subscription", timeout, |frame| {
            let Frame::Value(Value::Array(Some(a))) = frame else {
                return false;
            };
            let mut items = a.iter();
            items.next() == Some(Value::Bulk(Some(b"subscribe")))
                && items.next() == Some(Value::Bulk(Some(channel)))
        })
        .await
    }

    /// Reads until a value `wanted` accepts; an error value fails, others are dropped.
    /// For set-up only.
    async fn wait_for(
        &mut self,
        what: &'static str,
        timeout: Duration,
        wanted: impl Fn(&Frame<'_>) -> bool,
    ) -> Result<(), ConnError> {
        let wait = async {
            loop {
                while let Some(frame) = self.reader.next_frame().map_err(proto_error)? {
                    if wanted(&frame) {
                        return Ok(());
                    }
                    if let Frame::Value(Value::Error(e)) = frame {
                        return Err(err_value(e));
                    }
                }
                self.fill().await?;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConnError::Timeout(what))?
    }

    /// The buffer of commands to send: the caller writes with [`encode`],
    /// [`RedisConn::flush`] sends.
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

    /// The next value already read, or `None` until [`RedisConn::fill`] reads more.
    ///
    /// # Errors
    /// [`ConnError::Protocol`] when the bytes are not RESP.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, ConnError> {
        self.reader.next_frame().map_err(proto_error)
    }
}

/// An error value as a connection error (cut short: some run to a page).
pub fn err_value(e: &[u8]) -> ConnError {
    let cut = &e[..e.len().min(200)];
    ConnError::Protocol(format!("-{}", String::from_utf8_lossy(cut)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("redis://127.0.0.1:6390").unwrap(),
            "127.0.0.1:6390".parse().unwrap()
        );
        assert_eq!(parse_url("redis://127.0.0.1/0").unwrap().port(), 6379);
        assert!(parse_url("nats://127.0.0.1:6379").is_err());
        assert!(parse_url("redis://").is_err());
    }

    /// Reads from `sock` until `want` has come, and returns all that came.
    async fn read_until(sock: &mut tokio::net::TcpStream, want: &[u8]) -> Vec<u8> {
        let mut seen = Vec::new();
        while memchr::memmem::find(&seen, want).is_none() {
            let mut chunk = [0u8; 1024];
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client hung up");
            seen.extend_from_slice(&chunk[..n]);
        }
        seen
    }

    /// A one-connection server: answers PING, confirms the subscription after a
    /// stray value, delivers two messages split across writes, then an error.
    #[tokio::test]
    async fn connect_subscribe_and_deliveries_over_a_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            assert_eq!(
                read_until(&mut sock, b"PING\r\n").await,
                b"*1\r\n$4\r\nPING\r\n"
            );
            sock.write_all(b"+PONG\r\n").await.unwrap();
            assert_eq!(
                read_until(&mut sock, b"fanout\r\n").await,
                b"*2\r\n$9\r\nSUBSCRIBE\r\n$6\r\nfanout\r\n"
            );
            sock.write_all(
                b":7\r\n*3\r\n$9\r\nsubscribe\r\n$6\r\nfanout\r\n:1\r\n*3\r\n$7\r\nmess",
            )
            .await
            .unwrap();
            sock.write_all(b"age\r\n$6\r\nfanout\r\n$2\r\nhi\r\n*3\r\n$7\r\nmessage\r\n$6\r\nfanout\r\n$3\r\nyou\r\n-ERR bye\r\n")
                .await
                .unwrap();
        });
        let timeout = Duration::from_secs(5);
        let mut conn = RedisConn::connect(addr, None, timeout).await.unwrap();
        conn.subscribe(b"fanout", timeout).await.unwrap();
        let mut got = Vec::new();
        let end = loop {
            match conn.next_frame() {
                Ok(Some(Frame::Message { payload, .. })) => got.push(payload.to_vec()),
                Ok(Some(Frame::Value(Value::Error(e)))) => break err_value(e),
                Ok(Some(other)) => panic!("{other:?}"),
                Ok(None) => conn.fill().await.unwrap(),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(got, [b"hi".to_vec(), b"you".to_vec()]);
        assert_eq!(end.to_string(), "unexpected answer: -ERR bye");
        server.await.unwrap();
    }
}
