//! The server's side of the NATS protocol, parsed sans-IO out of one per-connection
//! buffer.
//!
//! A server sends `INFO {json}`, `MSG <subject> <sid> [reply] <#bytes>` and
//! `HMSG <subject> <sid> [reply] <#header bytes> <#total bytes>` followed by their
//! payload, `PING`, `PONG`, `+OK` and `-ERR '<message>'`, each line ending in CRLF.
//! [`Reader`] hands them out as [`Op`]s borrowed from its buffer: no allocation per
//! ack.

use std::fmt;

use crate::readbuf::{find_crlf, ReadBuf, Sized};

/// Longest control line accepted (`INFO` is the longest a server sends, well under
/// this); a guard against a peer that never ends its line.
const MAX_LINE: usize = 64 * 1024;

/// First size of a connection's read buffer; it grows while reads keep filling it.
const READ_BUFFER: usize = 8 * 1024;

/// One operation from the server, borrowed from the reader until the next call.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// `INFO`: the server's JSON description of itself.
    Info(&'a [u8]),
    /// `MSG` or `HMSG`: a message for one of our subscriptions.
    Msg(Msg<'a>),
    /// `PING`: answer with `PONG`, or the server drops the connection.
    Ping,
    /// `PONG`: the answer to our `PING`.
    Pong,
    /// `+OK` (verbose mode only).
    Ok,
    /// `-ERR`: the server's complaint, without its quotes.
    Err(&'a [u8]),
}

/// A delivered message.
#[derive(Debug, PartialEq, Eq)]
pub struct Msg<'a> {
    /// The subject it was published to (for an ack: our reply inbox).
    pub subject: &'a [u8],
    /// The subscription it matched.
    pub sid: u64,
    /// Where to answer, if anywhere.
    pub reply: Option<&'a [u8]>,
    /// `NATS/1.0 …` header block of an `HMSG`, CRLFs included.
    pub headers: Option<&'a [u8]>,
    /// The payload.
    pub payload: &'a [u8],
}

impl Msg<'_> {
    /// The status code of an `HMSG` header block (`NATS/1.0 503` → 503): how the server
    /// says "no responders" or "timeout" without a payload.
    pub fn status(&self) -> Option<u16> {
        let rest = self.headers?.strip_prefix(b"NATS/1.0")?;
        let rest = rest.strip_prefix(b" ")?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
    }
}

/// Why the server's bytes are not valid protocol; the connection is over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// A control line this client does not know or cannot parse (kept, cut short).
    BadLine(String),
    /// A control line without its CRLF past `MAX_LINE` bytes.
    LineTooLong,
    /// A payload not followed by CRLF.
    BadPayloadEnd,
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLine(line) => write!(f, "bad protocol line {line:?}"),
            Self::LineTooLong => write!(f, "control line over {MAX_LINE} bytes"),
            Self::BadPayloadEnd => write!(f, "payload not followed by CRLF"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// Parses server operations out of one growable buffer that the caller reads into.
#[derive(Debug)]
pub struct Reader {
    /// The bytes read, parsed in place.
    buf: ReadBuf,
    /// `MSG <subject> <sid> `: how every message of the expected subscription starts,
    /// up to its size; and the subject's length and the sid.
    msg_prefix: Option<(Vec<u8>, usize, u64)>,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    /// An empty reader.
    pub fn new() -> Self {
        Self {
            buf: ReadBuf::new(READ_BUFFER),
            msg_prefix: None,
        }
    }

    /// Messages on `subject` for subscription `sid`, without a reply subject, will come
    /// (a subscriber's deliveries): find them with a prefix compare (others are still
    /// read, by the general parser).
    pub fn expect_msg(&mut self, subject: &[u8], sid: u64) {
        let mut prefix = b"MSG ".to_vec();
        prefix.extend_from_slice(subject);
        prefix.push(b' ');
        crate::client::scan::push_u64(&mut prefix, sid);
        prefix.push(b' ');
        self.msg_prefix = Some((prefix, subject.len(), sid));
    }

    /// The buffer the socket is read into (see [`crate::link::Link::fill`]).
    pub fn buf(&mut self) -> &mut ReadBuf {
        &mut self.buf
    }

    /// Copies `bytes` in as if read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.push(bytes);
    }

    /// The next complete operation, or `None` until more bytes are read.
    ///
    /// # Errors
    /// A [`ProtoError`] when the bytes are not the protocol; the connection is over.
    pub fn next_op(&mut self) -> Result<Option<Op<'_>>, ProtoError> {
        Ok(self.next_head()?.map(|head| self.op(&head)))
    }

    /// Like [`Reader::next_op`], but the operation is returned as offsets that borrow
    /// nothing (see [`Reader::op`]), for callers that must touch other state before
    /// deciding whether to hand it out.
    ///
    /// # Errors
    /// As [`Reader::next_op`].
    pub fn next_head(&mut self) -> Result<Option<OpHead>, ProtoError> {
        let found = match self.fast_msg() {
            Some(found) => found,
            None => find_op(self.buf.bytes(), self.buf.start())?,
        };
        match found {
            Found::Op(kind, next) => {
                self.buf.consume_to(next);
                Ok(Some(OpHead(kind)))
            }
            Found::Need(total) => {
                self.buf.need(total);
                Ok(None)
            }
            Found::Partial => Ok(None),
        }
    }

    /// The expected message at the start of the unparsed bytes, if that is what is
    /// there (see [`Reader::expect_msg`]).
    fn fast_msg(&self) -> Option<Found> {
        let (prefix, subject_len, sid) = self.msg_prefix.as_ref()?;
        Some(match self.buf.sized_after(prefix)? {
            Sized::Whole { payload, next } => {
                let subject = self.buf.start() + b"MSG ".len();
                let layout = MsgLayout {
                    subject: (subject, subject + subject_len),
                    sid: *sid,
                    reply: None,
                    headers: None,
                    payload,
                };
                Found::Op(Kind::Msg(layout), next)
            }
            Sized::Need(end) => Found::Need(end - self.buf.start()),
        })
    }

    /// The operation `head` locates; valid until the next [`Reader::spare`].
    pub fn op(&self, head: &OpHead) -> Op<'_> {
        let bytes = self.buf.bytes();
        let span = |(a, b): (usize, usize)| &bytes[a..b];
        match &head.0 {
            Kind::Ping => Op::Ping,
            Kind::Pong => Op::Pong,
            Kind::Ok => Op::Ok,
            Kind::Err(at) => Op::Err(unquote(span(*at))),
            Kind::Info(at) => Op::Info(span(*at)),
            Kind::Msg(m) => Op::Msg(Msg {
                subject: span(m.subject),
                sid: m.sid,
                reply: m.reply.map(span),
                headers: m.headers.map(span),
                payload: span(m.payload),
            }),
        }
    }
}

/// An operation parsed, located in the reader's buffer (see [`Reader::next_head`]).
#[derive(Debug)]
pub struct OpHead(Kind);

impl OpHead {
    /// Whether it is a `MSG` or `HMSG`.
    pub fn is_msg(&self) -> bool {
        matches!(self.0, Kind::Msg(_))
    }
}

/// What [`find_op`] found at the start of the unparsed bytes.
enum Found {
    /// An operation, and where the next one starts.
    Op(Kind, usize),
    /// A message line whose payload is not all read: the operation's total size.
    Need(usize),
    /// Not even a whole line yet.
    Partial,
}

/// The operation starting at `start` of `buf` (which ends at the last byte read), as
/// offsets into `buf`.
fn find_op(buf: &[u8], start: usize) -> Result<Found, ProtoError> {
    let pending = &buf[start..];
    let Some(eol) = find_crlf(pending) else {
        if pending.len() > MAX_LINE {
            return Err(ProtoError::LineTooLong);
        }
        return Ok(Found::Partial);
    };
    let line = &pending[..eol];
    let verb_end = memchr::memchr2(b' ', b'\t', line).unwrap_or(line.len());
    let verb = &line[..verb_end];
    let args = trim_span(buf, start + verb_end, start + eol);
    let next = start + eol + 2;
    let kind = if verb.eq_ignore_ascii_case(b"MSG") {
        return msg_layout(buf, start, eol, args, false);
    } else if verb.eq_ignore_ascii_case(b"HMSG") {
        return msg_layout(buf, start, eol, args, true);
    } else if verb.eq_ignore_ascii_case(b"PING") {
        Kind::Ping
    } else if verb.eq_ignore_ascii_case(b"PONG") {
        Kind::Pong
    } else if verb.eq_ignore_ascii_case(b"+OK") {
        Kind::Ok
    } else if verb.eq_ignore_ascii_case(b"-ERR") {
        Kind::Err(args)
    } else if verb.eq_ignore_ascii_case(b"INFO") {
        Kind::Info(args)
    } else {
        return Err(bad_line(line));
    };
    Ok(Found::Op(kind, next))
}

/// Where the parts of the `MSG`/`HMSG` at `start` lie (its line is `eol` bytes long,
/// its arguments at `args`), once all its payload is read.
fn msg_layout(
    buf: &[u8],
    start: usize,
    eol: usize,
    args: (usize, usize),
    with_headers: bool,
) -> Result<Found, ProtoError> {
    let line = &buf[start..start + eol];
    let mut parts = [(0, 0); 5];
    let mut count = 0;
    let mut at = args.0;
    for piece in buf[args.0..args.1].split(|b| *b == b' ' || *b == b'\t') {
        if !piece.is_empty() {
            if count == parts.len() {
                return Err(bad_line(line));
            }
            parts[count] = (at, at + piece.len());
            count += 1;
        }
        at += piece.len() + 1;
    }
    let sizes = usize::from(with_headers) + 1;
    if !(2 + sizes..=3 + sizes).contains(&count) {
        return Err(bad_line(line));
    }
    let number = |(a, b): (usize, usize)| -> Result<usize, ProtoError> {
        std::str::from_utf8(&buf[a..b])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad_line(line))
    };
    let total = number(parts[count - 1])?;
    let header_len = if with_headers {
        let h = number(parts[count - 2])?;
        if h > total {
            return Err(bad_line(line));
        }
        Some(h)
    } else {
        None
    };
    let sid = number(parts[1])? as u64;
    let body = start + eol + 2;
    let next = body + total + 2;
    if buf.len() < next {
        return Ok(Found::Need(next - start));
    }
    if &buf[next - 2..next] != b"\r\n" {
        return Err(ProtoError::BadPayloadEnd);
    }
    let h = header_len.unwrap_or(0);
    let layout = MsgLayout {
        subject: parts[0],
        sid,
        reply: (count == 3 + sizes).then_some(parts[2]),
        headers: header_len.map(|h| (body, body + h)),
        payload: (body + h, body + total),
    };
    Ok(Found::Op(Kind::Msg(layout), next))
}

/// An operation found, as offsets into the buffer (so that nothing is borrowed while
/// the reader moves past it).
#[derive(Debug)]
enum Kind {
    Ping,
    Pong,
    Ok,
    Err((usize, usize)),
    Info((usize, usize)),
    Msg(MsgLayout),
}

/// The parts of a message, as `(start, end)` offsets into the buffer.
#[derive(Debug)]
struct MsgLayout {
    subject: (usize, usize),
    sid: u64,
    reply: Option<(usize, usize)>,
    headers: Option<(usize, usize)>,
    payload: (usize, usize),
}

fn bad_line(line: &[u8]) -> ProtoError {
    let cut = &line[..line.len().min(80)];
    ProtoError::BadLine(String::from_utf8_lossy(cut).into_owned())
}

/// `buf[start..end]` without the blanks around it, as offsets.
fn trim_span(buf: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && buf[start].is_ascii_whitespace() {
        start += 1;
    }
    while end > start && buf[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    (start, end)
}

fn unquote(bytes: &[u8]) -> &[u8] {
    bytes
        .strip_prefix(b"'")
        .and_then(|b| b.strip_suffix(b"'"))
        .unwrap_or(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation of `bytes`, fed `chunk` bytes at a time, as owned debug strings.
    fn parse_all(bytes: &[u8], chunk: usize) -> Vec<String> {
        let mut reader = Reader::new();
        let mut ops = Vec::new();
        for piece in bytes.chunks(chunk) {
            reader.push(piece);
            while let Some(op) = reader.next_op().unwrap() {
                ops.push(match op {
                    Op::Msg(m) => format!(
                        "MSG {} {} {:?} {:?} {} status={:?}",
                        String::from_utf8_lossy(m.subject),
                        m.sid,
                        m.reply.map(|r| String::from_utf8_lossy(r).into_owned()),
                        m.headers.map(|h| String::from_utf8_lossy(h).into_owned()),
                        String::from_utf8_lossy(m.payload),
                        m.status(),
                    ),
                    Op::Info(i) => format!("INFO {}", String::from_utf8_lossy(i)),
                    Op::Err(e) => format!("ERR {}", String::from_utf8_lossy(e)),
                    other => format!("{other:?}"),
                });
            }
        }
        ops
    }

    const STREAM: &[u8] =
        b"INFO {\"server_id\":\"x\",\"headers\":true,\"max_payload\":1048576}\r\n\
        +OK\r\nPING\r\n\
        MSG _INBOX.ab.7 1 33\r\n{\"stream\":\"BENCH\",\"seq\":12345678}\r\n\
        msg _INBOX.ab.8  1  reply.to  0\r\n\r\n\
        HMSG _INBOX.ab.9 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n\
        HMSG a.b 2 r 20 23\r\nNATS/1.0\r\nX-Y: z\r\n\r\nabc\r\n\
        PONG\r\n-ERR 'Authorization Violation'\r\n";

    fn expected() -> Vec<String> {
        vec![
            r#"INFO {"server_id":"x","headers":true,"max_payload":1048576}"#.into(),
            "Ok".into(),
            "Ping".into(),
            r#"MSG _INBOX.ab.7 1 None None {"stream":"BENCH","seq":12345678} status=None"#.into(),
            r#"MSG _INBOX.ab.8 1 Some("reply.to") None  status=None"#.into(),
            "MSG _INBOX.ab.9 1 None Some(\"NATS/1.0 503\\r\\n\\r\\n\")  status=Some(503)".into(),
            "MSG a.b 2 Some(\"r\") Some(\"NATS/1.0\\r\\nX-Y: z\\r\\n\\r\\n\") abc status=None"
                .into(),
            "Pong".into(),
            "ERR Authorization Violation".into(),
        ]
    }

    #[test]
    fn parses_every_server_line_whole_or_byte_by_byte() {
        assert_eq!(parse_all(STREAM, STREAM.len()), expected());
        assert_eq!(parse_all(STREAM, 1), expected());
        assert_eq!(parse_all(STREAM, 7), expected());
    }

    #[test]
    fn the_expected_messages_are_read_alike_by_the_fast_path() {
        let stream: &[u8] = b"MSG fanout 1 5\r\nhello\r\nPING\r\nMSG fanout 1 0\r\n\r\n\
            MSG other 1 2\r\nhi\r\nMSG fanout 1 r 2\r\nab\r\nMSG fanout 2 1\r\nz\r\n\
            MSG fanout 1 3\r\na\r\n\r\n";
        let parse = |cut: usize, fast: bool| {
            let mut reader = Reader::new();
            if fast {
                reader.expect_msg(b"fanout", 1);
            }
            let mut ops = Vec::new();
            for piece in [&stream[..cut], &stream[cut..]] {
                reader.push(piece);
                while let Some(op) = reader.next_op().unwrap() {
                    ops.push(format!("{op:?}"));
                }
            }
            ops
        };
        let general = parse(0, false);
        assert_eq!(general.len(), 7, "{general:?}");
        for cut in 0..=stream.len() {
            assert_eq!(parse(cut, true), general, "cut at {cut}");
        }
        let mut reader = Reader::new();
        reader.expect_msg(b"fanout", 1);
        reader.push(b"MSG fanout 1 3\r\nabcXY");
        assert_eq!(reader.next_op(), Err(ProtoError::BadPayloadEnd));
    }

    #[test]
    fn large_payloads_grow_the_buffer() {
        let body = vec![b'x'; 100_000];
        let mut bytes = format!("MSG s 1 {}\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(b"\r\nPING\r\n");
        let mut reader = Reader::new();
        let mut got = 0;
        for piece in bytes.chunks(5000) {
            reader.push(piece);
            while let Some(op) = reader.next_op().unwrap() {
                match op {
                    Op::Msg(m) => assert_eq!(m.payload.len(), body.len()),
                    Op::Ping => {}
                    other => panic!("{other:?}"),
                }
                got += 1;
            }
        }
        assert_eq!(got, 2);
    }

    #[test]
    fn refuses_what_is_not_the_protocol() {
        let bad = |bytes: &[u8]| {
            let mut reader = Reader::new();
            reader.push(bytes);
            reader.next_op().map(|op| op.is_some())
        };
        assert!(matches!(
            bad(b"HELLO there\r\n"),
            Err(ProtoError::BadLine(_))
        ));
        assert!(matches!(bad(b"MSG s 1\r\n"), Err(ProtoError::BadLine(_))));
        assert!(matches!(bad(b"MSG s x 3\r\n"), Err(ProtoError::BadLine(_))));
        assert!(matches!(
            bad(b"HMSG s 1 9 3\r\n"),
            Err(ProtoError::BadLine(_))
        ));
        assert!(matches!(
            bad(b"MSG s 1 3\r\nabcXY"),
            Err(ProtoError::BadPayloadEnd)
        ));
        assert_eq!(bad(b"MSG s 1 3\r\nab"), Ok(false), "waits for the payload");
        assert_eq!(bad(b"PIN"), Ok(false), "waits for the line's end");
        assert!(matches!(
            bad(&[b'x'; MAX_LINE + 1]),
            Err(ProtoError::LineTooLong)
        ));
    }
}
