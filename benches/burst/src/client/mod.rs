//! A minimal rushhour protocol client over a raw tokio `TcpStream`.
//!
//! The handshake and the frame codec are hand-rolled ([`handshake`], [`frame`]): after
//! the upgrade a [`Conn`] reads the socket straight into its [`frame::FrameReader`] and
//! hands out messages as slices of that buffer, answering pings on the way. A
//! subscriber therefore pays one `read` and a few dozen bytes of scanning ([`scan`])
//! per delivery; `--client tungstenite` runs the same subscriber on tokio-tungstenite
//! for comparison ([`tungstenite`]).
//!
//! Layout:
//! - [`frame`]: the frame reader and the masked frame encoder, sans-IO.
//! - [`handshake`]: the upgrade request and the check of its answer, sans-IO.
//! - [`scan`]: reading `op`, `seq`, `id`… out of a frame without a JSON parse.
//! - [`tungstenite`]: the comparison subscriber.

pub mod frame;
pub mod handshake;
pub mod scan;
pub mod tungstenite;

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::link::Link;
use frame::{encode_client_frame, opcode, FrameError, FrameReader, MaskKeys};
use handshake::HandshakeError;

/// First size of a connection's read buffer: a few hundred small frames per `read`
/// when a subscriber falls behind, at 8 KiB a connection (8 MiB for a thousand).
const READ_BUFFER: usize = 8 * 1024;

/// Largest frame accepted: the protocol's default frame limit (1 MiB) with room to
/// spare; only a guard against a corrupt length.
const MAX_FRAME: usize = 4 << 20;

/// Where to connect: a `ws://host:port/path` URL, resolved once.
#[derive(Clone, Debug)]
pub struct Target {
    /// The server's address.
    pub addr: SocketAddr,
    /// The `Host` header (`host:port` as written in the URL).
    pub host: String,
    /// The request path, `/ws` for rushhour.
    pub path: String,
    /// The URL as given, for tungstenite.
    pub url: String,
}

impl Target {
    /// Parses and resolves `url` (blocking DNS: call it before the load starts).
    ///
    /// # Errors
    /// A message when the URL is not `ws://host:port/path` or does not resolve.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        Ok(Self {
            addr,
            host: host.to_owned(),
            path: path.to_owned(),
            url: url.to_owned(),
        })
    }
}

/// Why a connection ended or could not start.
#[derive(Debug)]
pub enum ConnError {
    /// The socket failed.
    Io(io::Error),
    /// The upgrade was refused.
    Handshake(HandshakeError),
    /// The server broke the framing.
    Frame(FrameError),
    /// The server closed the connection with this code (and reason).
    Closed(Option<u16>, String),
    /// The TCP connection ended without a close frame.
    Eof,
    /// The server answered with an error frame, or not what was asked for.
    Protocol(String),
    /// No answer in time.
    Timeout(&'static str),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "i/o: {e}"),
            Self::Handshake(e) => write!(f, "handshake: {e}"),
            Self::Frame(e) => write!(f, "framing: {e}"),
            Self::Closed(Some(code), reason) => write!(f, "closed by the server: {code} {reason}"),
            Self::Closed(None, _) => write!(f, "closed by the server"),
            Self::Eof => write!(f, "connection dropped"),
            Self::Protocol(text) => write!(f, "unexpected answer: {text}"),
            Self::Timeout(what) => write!(f, "timed out waiting for {what}"),
        }
    }
}

impl std::error::Error for ConnError {}

impl ConnError {
    /// A short label to count errors by: the close code, or the kind of failure.
    pub fn label(&self) -> String {
        match self {
            Self::Io(e) => format!("io {:?}", e.kind()),
            Self::Handshake(_) => "handshake".into(),
            Self::Frame(_) => "framing".into(),
            Self::Closed(Some(code), _) => format!("close {code}"),
            Self::Closed(None, _) => "close".into(),
            Self::Eof => "eof".into(),
            Self::Protocol(_) => "protocol".into(),
            Self::Timeout(_) => "timeout".into(),
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<FrameError> for ConnError {
    fn from(e: FrameError) -> Self {
        Self::Frame(e)
    }
}

/// A data message, borrowed from the connection until the next read.
pub struct Message<'a> {
    /// `opcode::TEXT` or `opcode::BINARY`.
    pub opcode: u8,
    /// The whole message (fragments joined).
    pub payload: &'a [u8],
}

/// One client connection after the upgrade.
pub struct Conn {
    /// The socket, read into `frames`; frames queued to send (requests, pongs).
    link: Link,
    /// Frames read but not handed out yet.
    frames: FrameReader,
    /// Masking keys for `out`.
    masks: MaskKeys,
    /// A fragmented message being joined, reused across messages; `None` when the last
    /// message was whole. Servers rarely fragment, so this stays empty.
    partial: Option<(u8, Vec<u8>)>,
    /// The joined message handed out last, kept to reuse its allocation.
    joined: Vec<u8>,
}

/// Binds to `source` (if any) and connects to `addr`, with Nagle off.
///
/// # Errors
/// The socket's error.
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        if ip.is_ipv4() {
            bind_address_no_port(&socket);
        }
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Lets the kernel pick the local port at `connect` rather than at `bind`, so a source
/// address shares its ports across servers instead of reserving one per socket
/// (best effort: the connect still works without it).
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Conn {
    /// Connects to `target` from `source` and upgrades to WebSocket; `seed` varies the
    /// handshake key and the masks between connections.
    ///
    /// # Errors
    /// [`ConnError`] when the connection or the upgrade fails.
    pub async fn connect(
        target: &Target,
        source: Option<IpAddr>,
        seed: u64,
    ) -> Result<Self, ConnError> {
        Self::connect_with(
            target,
            source,
            seed,
            FrameReader::new(READ_BUFFER, MAX_FRAME),
        )
        .await
    }

    /// Like [`Conn::connect`], with a first read size of `read_size` bytes (see
    /// [`FrameReader::with_read_size`]): for many mostly idle clients.
    ///
    /// # Errors
    /// [`ConnError`] when the connection or the upgrade fails.
    pub async fn connect_small(
        target: &Target,
        source: Option<IpAddr>,
        seed: u64,
        read_size: usize,
    ) -> Result<Self, ConnError> {
        let frames = FrameReader::with_read_size(0, read_size, MAX_FRAME);
        Self::connect_with(target, source, seed, frames).await
    }

    async fn connect_with(
        target: &Target,
        source: Option<IpAddr>,
        seed: u64,
        mut frames: FrameReader,
    ) -> Result<Self, ConnError> {
        let mut stream = tcp_connect(target.addr, source).await?;
        let mut masks = MaskKeys::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut nonce = [0u8; 16];
        for chunk in nonce.chunks_mut(4) {
            chunk.copy_from_slice(&masks.next_key());
        }
        let key = handshake::key(nonce);
        stream
            .write_all(handshake::request(&target.host, &target.path, &key).as_bytes())
            .await?;
        let mut head = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        let head_len = loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(ConnError::Eof);
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(len) =
                handshake::parse_response(&head, &key).map_err(ConnError::Handshake)?
            {
                break len;
            }
        };
        frames.push(&head[head_len..]);
        Ok(Self {
            link: Link::new(stream, 0),
            frames,
            masks,
            partial: None,
            joined: Vec::new(),
        })
    }

    /// Queues a text frame; [`Conn::flush`] sends it.
    pub fn queue_text(&mut self, text: &[u8]) {
        encode_client_frame(self.link.out(), opcode::TEXT, text, self.masks.next_key());
    }

    /// Queues a close frame with `code` (no reason); [`Conn::flush`] sends it.
    pub fn queue_close(&mut self, code: u16) {
        encode_client_frame(
            self.link.out(),
            opcode::CLOSE,
            &code.to_be_bytes(),
            self.masks.next_key(),
        );
    }

    /// Whether frames are queued.
    pub fn has_queued(&self) -> bool {
        self.link.has_queued()
    }

    /// See [`Link::flush`].
    ///
    /// # Errors
    /// The socket's error.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.link.flush().await
    }

    /// See [`Link::fill`] (any queued pong goes out first).
    ///
    /// # Errors
    /// [`ConnError::Eof`] when the server hung up, or the socket's error.
    pub async fn fill(&mut self) -> Result<(), ConnError> {
        self.link.fill(self.frames.buf()).await
    }

    /// The next data message already read, or `None` until [`Conn::fill`] reads more.
    /// Pings are answered (queued, sent by the next `fill` or `flush`), pongs dropped.
    ///
    /// # Errors
    /// [`ConnError::Closed`] on a close frame (the close is echoed), or
    /// [`ConnError::Frame`] on bad framing.
    pub fn next_message(&mut self) -> Result<Option<Message<'_>>, ConnError> {
        // The loop only decides; the message is borrowed after it, so that no borrow
        // handed out crosses an iteration.
        enum Ready {
            Whole(frame::FrameHead),
            Joined(u8),
        }
        let ready = loop {
            let Some(head) = self.frames.next_head()? else {
                return Ok(None);
            };
            let frame = self.frames.frame(&head);
            match (frame.opcode, frame.fin, &mut self.partial) {
                (opcode::PING, ..) => {
                    encode_client_frame(
                        self.link.out(),
                        opcode::PONG,
                        frame.payload,
                        self.masks.next_key(),
                    );
                }
                (opcode::PONG, ..) => {}
                (opcode::CLOSE, ..) => {
                    let code = frame
                        .payload
                        .get(..2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]));
                    let reason =
                        String::from_utf8_lossy(frame.payload.get(2..).unwrap_or_default())
                            .into_owned();
                    let echo = frame.payload.get(..2).unwrap_or_default();
                    encode_client_frame(
                        self.link.out(),
                        opcode::CLOSE,
                        echo,
                        self.masks.next_key(),
                    );
                    return Err(ConnError::Closed(code, reason));
                }
                (opcode::TEXT | opcode::BINARY, true, None) => break Ready::Whole(head),
                (opcode::TEXT | opcode::BINARY, false, partial @ None) => {
                    let mut buf = std::mem::take(&mut self.joined);
                    buf.clear();
                    buf.extend_from_slice(frame.payload);
                    *partial = Some((frame.opcode, buf));
                }
                (opcode::CONTINUATION, fin, Some((op, buf))) => {
                    buf.extend_from_slice(frame.payload);
                    if fin {
                        let op = *op;
                        self.joined = self.partial.take().expect("matched Some").1;
                        break Ready::Joined(op);
                    }
                }
                _ => return Err(ConnError::Protocol("fragments out of order".into())),
            }
        };
        Ok(Some(match ready {
            Ready::Whole(head) => Message {
                opcode: head.opcode,
                payload: self.frames.frame(&head).payload,
            },
            Ready::Joined(op) => Message {
                opcode: op,
                payload: &self.joined,
            },
        }))
    }

    /// Sends `text` and reads until the answer: a frame whose op is `op` (and whose
    /// `id` is `id`, when given). Other frames are skipped; an `error` frame for the
    /// request fails. For set-up requests, not the hot path.
    ///
    /// # Errors
    /// [`ConnError::Protocol`] with the error frame, or the connection's error, or
    /// [`ConnError::Timeout`] after `timeout`.
    pub async fn request(
        &mut self,
        text: &str,
        op: &str,
        id: Option<u64>,
        timeout: Duration,
    ) -> Result<(), ConnError> {
        self.queue_text(text.as_bytes());
        let wait = async {
            loop {
                while let Some(msg) = self.next_message()? {
                    let got = scan::op(msg.payload).unwrap_or_default();
                    let same_id = id.is_none() || scan::u64_value(msg.payload, &scan::ID) == id;
                    if got == op.as_bytes() && same_id {
                        return Ok(());
                    }
                    if got == b"error" && same_id {
                        return Err(ConnError::Protocol(
                            String::from_utf8_lossy(msg.payload).into_owned(),
                        ));
                    }
                }
                self.fill().await?;
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConnError::Timeout("an answer"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("ws://127.0.0.1:9001/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(
            (t.host.as_str(), t.path.as_str()),
            ("127.0.0.1:9001", "/ws")
        );
        assert_eq!(Target::parse("ws://127.0.0.1").unwrap().path, "/");
        assert!(Target::parse("wss://127.0.0.1/ws").is_err());
    }

    /// An unmasked server frame.
    fn server_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![u8::from(fin) << 7 | op, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    /// A one-connection server on loopback: upgrades, sends a message, a ping and a
    /// fragmented message in the same write as its 101, expects the pong, then closes.
    #[tokio::test]
    async fn handshake_messages_ping_pong_and_close_over_a_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            while memchr::memmem::find(&req, b"\r\n\r\n").is_none() {
                let mut chunk = [0u8; 512];
                let n = sock.read(&mut chunk).await.unwrap();
                req.extend_from_slice(&chunk[..n]);
            }
            let req = String::from_utf8(req).unwrap();
            assert!(req.starts_with("GET /ws HTTP/1.1\r\n"));
            let key = req
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                handshake::accept_for(key)
            )
            .into_bytes();
            out.extend(server_frame(true, opcode::TEXT, br#"{"op":"msg","seq":1}"#));
            out.extend(server_frame(true, opcode::PING, b"hi"));
            out.extend(server_frame(false, opcode::TEXT, b"ab"));
            out.extend(server_frame(true, opcode::PING, b"2"));
            out.extend(server_frame(true, opcode::CONTINUATION, b"cd"));
            sock.write_all(&out).await.unwrap();
            // Two pongs, masked, with the pings' payloads.
            let mut pongs = Vec::new();
            for _ in 0..2 {
                let mut head = [0u8; 6];
                sock.read_exact(&mut head).await.unwrap();
                assert_eq!(head[0], 0x8A);
                assert_eq!(head[1] & 0x80, 0x80, "client frames are masked");
                let mut payload = vec![0u8; usize::from(head[1] & 0x7F)];
                sock.read_exact(&mut payload).await.unwrap();
                pongs.push(
                    payload
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ head[2 + (i & 3)])
                        .collect::<Vec<u8>>(),
                );
            }
            assert_eq!(pongs, [b"hi".to_vec(), b"2".to_vec()]);
            sock.write_all(&server_frame(true, opcode::CLOSE, &4008u16.to_be_bytes()))
                .await
                .unwrap();
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest).await;
            rest
        });
        let target = Target::parse(&url).unwrap();
        let mut conn = Conn::connect(&target, Some("127.0.0.1".parse().unwrap()), 1)
            .await
            .unwrap();
        let mut got = Vec::new();
        let end = loop {
            match conn.next_message() {
                Ok(Some(m)) => got.push(m.payload.to_vec()),
                Ok(None) => {
                    if let Err(e) = conn.fill().await {
                        break e;
                    }
                }
                Err(e) => break e,
            }
        };
        assert_eq!(got, [br#"{"op":"msg","seq":1}"#.to_vec(), b"abcd".to_vec()]);
        assert!(matches!(end, ConnError::Closed(Some(4008), _)), "{end}");
        conn.flush().await.unwrap();
        drop(conn);
        let echoed = server.await.unwrap();
        assert_eq!(echoed[0], 0x88, "the close is echoed");
    }
}
