//! One connection attempt: TCP connect, WebSocket upgrade, `hello` (with `resume` when
//! the client had a session), and the server's verdict, sorted into what the client
//! does next — go on, wait and retry (a refusal), or give up.

use std::io::ErrorKind;
use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use super::backoff::{queue_pos, retry_after_in_close, retry_after_in_frame};
use crate::client::handshake::HandshakeError;
use crate::client::scan::{self, Key};
use crate::client::{Conn, ConnError, Target};

/// First read size of a client's buffer: a welcome and a few deliveries. Buffers grow
/// only for clients whose reads keep filling them.
const FIRST_READ: usize = 1024;
/// After an `overloaded` refusal, how long to wait for the close that follows.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// `"session"`: the session token in a welcome.
static SESSION: LazyLock<Key> = LazyLock::new(|| Key::new("session"));
/// `"resumed"`: whether the welcome continues an earlier session.
static RESUMED: LazyLock<Key> = LazyLock::new(|| Key::new("resumed"));

/// How an attempt ended.
pub enum Attempt {
    /// Welcomed: the connection, its session token, whether it resumed.
    Welcome {
        /// The connection, past its welcome.
        conn: Box<Conn>,
        /// The session token (for a later `resume`).
        session: String,
        /// Whether the server resumed the previous session.
        resumed: bool,
    },
    /// Refused for now: wait and try again.
    Refused {
        /// The kind of refusal, for the counts.
        why: &'static str,
        /// The wait the server asked for, if it said.
        retry_after: Option<Duration>,
        /// The server's `queue_pos`, if it said.
        queue_pos: Option<u64>,
    },
    /// Refused in a way retrying cannot fix (a bad token, a wrong URL).
    Fatal(String),
}

fn refused(why: &'static str) -> Attempt {
    Attempt::Refused {
        why,
        retry_after: None,
        queue_pos: None,
    }
}

/// Connects from `source` and says `hello` (a complete frame, with `resume` if any).
pub async fn open(
    target: &Target,
    source: Option<IpAddr>,
    seed: u64,
    hello: &str,
    timeout: Duration,
) -> Attempt {
    let connecting = Conn::connect_small(target, source, seed, FIRST_READ);
    let mut conn = match tokio::time::timeout(timeout, connecting).await {
        Err(_) => return refused("connect_timeout"),
        Ok(Err(e)) => return connect_failed(&e),
        Ok(Ok(conn)) => conn,
    };
    conn.queue_text(hello.as_bytes());
    match tokio::time::timeout(timeout, greeting(&mut conn)).await {
        Err(_) => refused("hello_timeout"),
        Ok(Err(e)) => {
            // A close frame is echoed before the socket goes.
            let _ = conn.flush().await;
            closed(&e)
        }
        Ok(Ok(Greeting::Welcome { session, resumed })) => Attempt::Welcome {
            conn: Box::new(conn),
            session,
            resumed,
        },
        Ok(Ok(Greeting::Refused {
            retry_after,
            queue_pos,
        })) => {
            // The close 1013 follows; echo it so the server's socket ends cleanly.
            let linger = async {
                loop {
                    while conn.next_message()?.is_some() {}
                    conn.fill().await?;
                }
            };
            if let Ok(Err::<(), ConnError>(_)) = tokio::time::timeout(CLOSE_LINGER, linger).await {
                let _ = conn.flush().await;
            }
            Attempt::Refused {
                why: "overloaded",
                retry_after,
                queue_pos,
            }
        }
        Ok(Ok(Greeting::Error(text))) => Attempt::Fatal(format!("hello answered with {text}")),
    }
}

/// The server's answer to `hello`.
enum Greeting {
    Welcome {
        session: String,
        resumed: bool,
    },
    Refused {
        retry_after: Option<Duration>,
        queue_pos: Option<u64>,
    },
    Error(String),
}

/// Reads until the welcome or an error frame; a close or hang-up is `Err`.
async fn greeting(conn: &mut Conn) -> Result<Greeting, ConnError> {
    loop {
        while let Some(msg) = conn.next_message()? {
            match scan::op(msg.payload) {
                Some(b"welcome") => {
                    let session = scan::str_value(msg.payload, &SESSION)
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .unwrap_or_default();
                    let resumed = scan::bool_value(msg.payload, &RESUMED) == Some(true);
                    return Ok(Greeting::Welcome { session, resumed });
                }
                Some(b"error") => {
                    let p = msg.payload;
                    if scan::str_value_is(p, &scan::CODE, b"overloaded")
                        || scan::str_value_is(p, &scan::CODE, b"rate_limited")
                    {
                        return Ok(Greeting::Refused {
                            retry_after: retry_after_in_frame(p),
                            queue_pos: queue_pos(p),
                        });
                    }
                    return Ok(Greeting::Error(String::from_utf8_lossy(p).into_owned()));
                }
                _ => {}
            }
        }
        conn.fill().await?;
    }
}

/// Sorts a failed connect or upgrade.
fn connect_failed(e: &ConnError) -> Attempt {
    match e {
        ConnError::Io(io) => refused(match io.kind() {
            ErrorKind::ConnectionRefused => "connect_refused",
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                "connect_reset"
            }
            ErrorKind::AddrNotAvailable | ErrorKind::AddrInUse => "no_local_port",
            ErrorKind::TimedOut => "connect_timeout",
            _ => "connect_error",
        }),
        ConnError::Eof => refused("connect_reset"),
        ConnError::Handshake(HandshakeError::Status(line)) => match line.split(' ').nth(1) {
            Some("503") => refused("http_503"),
            Some("429") => refused("http_429"),
            _ => Attempt::Fatal(format!("upgrade refused: {line}")),
        },
        other => Attempt::Fatal(format!("upgrade failed: {other}")),
    }
}

/// Sorts a connection that ended before its welcome.
fn closed(e: &ConnError) -> Attempt {
    match e {
        ConnError::Closed(Some(1013), reason) => Attempt::Refused {
            why: "overloaded",
            retry_after: retry_after_in_close(reason),
            queue_pos: None,
        },
        ConnError::Closed(Some(4001), reason) => Attempt::Fatal(format!(
            "token refused (close 4001 {reason}): check --secret"
        )),
        ConnError::Closed(Some(1001), _) => refused("going_away"),
        ConnError::Closed(..) => refused("closed"),
        ConnError::Io(_) | ConnError::Eof => refused("reset"),
        other => Attempt::Fatal(format!("before the welcome: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::handshake;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// An unmasked server frame.
    fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | op];
        match payload.len() {
            n @ 0..=125 => out.push(n as u8),
            n => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// Accepts one connection, upgrades it, reads the hello, and answers with `reply`.
    async fn serve_one(listener: &TcpListener, reply: Vec<u8>) -> TcpStream {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        while memchr::memmem::find(&req, b"\r\n\r\n").is_none() {
            let mut chunk = [0u8; 1024];
            let n = sock.read(&mut chunk).await.unwrap();
            req.extend_from_slice(&chunk[..n]);
        }
        let req = String::from_utf8(req).unwrap();
        let key = req
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            handshake::accept_for(key)
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let mut hello_head = [0u8; 2];
        sock.read_exact(&mut hello_head).await.unwrap();
        let len = match hello_head[1] & 0x7F {
            126 => {
                let mut l = [0u8; 2];
                sock.read_exact(&mut l).await.unwrap();
                usize::from(u16::from_be_bytes(l))
            }
            n => usize::from(n),
        };
        let mut rest = vec![0u8; 4 + len];
        sock.read_exact(&mut rest).await.unwrap();
        sock.write_all(&reply).await.unwrap();
        sock
    }

    fn close(code: u16, reason: &str) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason.as_bytes());
        frame(0x8, &payload)
    }

    #[tokio::test]
    async fn refusals_welcomes_and_bad_tokens_over_a_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = Target::parse(&format!("ws://{}/ws", listener.local_addr().unwrap())).unwrap();
        let hello = r#"{"op":"hello","token":"x"}"#;
        let t = Duration::from_secs(5);

        // An `overloaded` error then close 1013: the error frame's wait wins.
        let mut reply = frame(0x1, br#"{"op":"error","code":"overloaded","message":"busy","retry_after_ms":250,"queue_pos":3}"#);
        reply.extend(close(1013, r#"{"retry_after_ms":250}"#));
        let (attempt, mut sock) = tokio::join!(
            open(&target, None, 1, hello, t),
            serve_one(&listener, reply)
        );
        let Attempt::Refused {
            why,
            retry_after,
            queue_pos,
        } = attempt
        else {
            panic!("not refused")
        };
        assert_eq!(
            (why, retry_after, queue_pos),
            ("overloaded", Some(Duration::from_millis(250)), Some(3))
        );
        let mut echo = [0u8; 2];
        sock.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo[0], 0x88, "the close is echoed");

        // A bare close 1013: the wait comes from its reason.
        let (attempt, _sock) = tokio::join!(
            open(&target, None, 2, hello, t),
            serve_one(&listener, close(1013, r#"{"retry_after_ms":40}"#))
        );
        assert!(
            matches!(attempt, Attempt::Refused { why: "overloaded", retry_after: Some(d), .. } if d == Duration::from_millis(40))
        );

        // A welcome.
        let welcome = frame(0x1, br#"{"op":"welcome","session":"s-1","user":"u1","tenant":"t0","heartbeat_ms":25000,"server_time":1,"resumed":true,"unread":{}}"#);
        let (attempt, _sock) = tokio::join!(
            open(&target, None, 3, hello, t),
            serve_one(&listener, welcome)
        );
        let Attempt::Welcome {
            session, resumed, ..
        } = attempt
        else {
            panic!("not welcomed")
        };
        assert_eq!((session.as_str(), resumed), ("s-1", true));

        // A bad token is not worth retrying.
        let (attempt, _sock) = tokio::join!(
            open(&target, None, 4, hello, t),
            serve_one(&listener, close(4001, "unauthorized"))
        );
        assert!(matches!(attempt, Attempt::Fatal(ref e) if e.contains("--secret")));

        // Nobody listening: refused, retried later.
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let gone = Target::parse(&format!("ws://127.0.0.1:{port}/ws")).unwrap();
        let attempt = open(&gone, None, 5, hello, t).await;
        assert!(matches!(
            attempt,
            Attempt::Refused {
                why: "connect_refused",
                ..
            }
        ));
    }
}
