//! The server's side of RESP2, parsed sans-IO out of one per-connection buffer.
//!
//! A value is a simple string `+OK`, an error `-ERR …`, an integer `:3`, a bulk string
//! `$5\r\nhello` (`$-1`: null) or an array `*2` of values (`*-1`: null), each line
//! ending in CRLF. A Pub/Sub delivery is the array of `message`, the channel and the
//! payload: `*3\r\n$7\r\nmessage\r\n$6\r\nfanout\r\n$128\r\n…\r\n`. A subscriber gets
//! one per message, so [`Reader`] finds the deliveries of the channel it expects with
//! one prefix compare and a length ([`Reader::expect_channel`]) and only parses the
//! rest in full. Everything is borrowed from the buffer: no allocation per delivery.

use std::fmt;

use crate::readbuf::{find_crlf, ReadBuf, Sized};

/// First size of a connection's read buffer; it grows while reads keep filling it.
const READ_BUFFER: usize = 8 * 1024;

/// Longest line accepted (a simple string or an error; servers send short ones); a
/// guard against a peer that never ends its line.
const MAX_LINE: usize = 64 * 1024;

/// Largest bulk string accepted: a guard against a corrupt length, far above the
/// bodies this generator sends.
const MAX_BULK: usize = 64 << 20;

/// Deepest nesting of arrays accepted: Pub/Sub frames are one level deep; a guard
/// for the recursion.
const MAX_DEPTH: usize = 8;

/// One value, borrowed from the reader's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// `+…`: a status such as `OK` or `PONG`.
    Simple(&'a [u8]),
    /// `-…`: the server's complaint, such as `ERR unknown command`.
    Error(&'a [u8]),
    /// `:…`: a number, such as `PUBLISH`'s count of receivers.
    Int(i64),
    /// `$…`: binary-safe bytes, or `None` for the null bulk string.
    Bulk(Option<&'a [u8]>),
    /// `*…`: values, or `None` for the null array.
    Array(Option<Array<'a>>),
}

/// The elements of an array, already checked to be complete and well formed; they
/// are parsed as they are iterated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Array<'a> {
    /// How many elements.
    len: usize,
    /// Their bytes, back to back.
    items: &'a [u8],
}

impl<'a> Array<'a> {
    /// How many elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements, in order.
    pub fn iter(&self) -> Items<'a> {
        Items {
            bytes: self.items,
            at: 0,
            left: self.len,
        }
    }
}

/// Iterates the elements of an [`Array`].
#[derive(Clone, Debug)]
pub struct Items<'a> {
    bytes: &'a [u8],
    at: usize,
    left: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        self.left = self.left.checked_sub(1)?;
        // The array was checked whole when it was read: this parse cannot fail.
        let Ok(Parsed::Done(value, end)) = parse(self.bytes, self.at, 0) else {
            self.left = 0;
            return None;
        };
        self.at = end;
        Some(value)
    }
}

/// What a [`Reader`] hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A Pub/Sub delivery (`message`, channel, payload), on any channel.
    Message {
        /// The channel it was published to.
        channel: &'a [u8],
        /// What was published.
        payload: &'a [u8],
    },
    /// Any other value: a reply, or a subscription's confirmation.
    Value(Value<'a>),
}

/// Why the server's bytes are not RESP; the connection is over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProtoError {
    /// A line that does not start a value, or a malformed number (kept, cut short).
    BadLine(String),
    /// A line without its CRLF past `MAX_LINE` bytes.
    LineTooLong,
    /// A bulk string not followed by CRLF.
    BadBulkEnd,
    /// A bulk string longer than `MAX_BULK`.
    TooLarge(usize),
    /// Arrays nested deeper than `MAX_DEPTH`.
    TooDeep,
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLine(line) => write!(f, "bad RESP line {line:?}"),
            Self::LineTooLong => write!(f, "line over {MAX_LINE} bytes"),
            Self::BadBulkEnd => write!(f, "bulk string not followed by CRLF"),
            Self::TooLarge(n) => write!(f, "bulk string of {n} bytes over the limit"),
            Self::TooDeep => write!(f, "arrays nested over {MAX_DEPTH} deep"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// Parses values out of one growable buffer that the caller reads the socket into.
#[derive(Debug)]
pub struct Reader {
    /// The bytes read, parsed in place.
    buf: ReadBuf,
    /// `*3\r\n$7\r\nmessage\r\n$<n>\r\n<channel>\r\n$`: how every delivery on the
    /// expected channel starts, up to its payload's length; and the channel's length.
    message_prefix: Option<(Vec<u8>, usize)>,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

/// A value read, located in the reader's buffer (see [`Reader::next_head`]).
#[derive(Clone, Copy, Debug)]
pub struct Head(Located);

#[derive(Clone, Copy, Debug)]
enum Located {
    /// A delivery found by the fast path: the channel's and the payload's spans.
    Message((usize, usize), (usize, usize)),
    /// Any value, to be parsed again from its span.
    Value(usize, usize),
}

/// One step of [`Reader::next_head`], in offsets that borrow nothing.
enum Step {
    Found(Located, usize),
    Need(usize),
    Partial,
}

impl Reader {
    /// An empty reader.
    pub fn new() -> Self {
        Self {
            buf: ReadBuf::new(READ_BUFFER),
            message_prefix: None,
        }
    }

    /// Deliveries on `channel` will come: find them with a prefix compare (others are
    /// still read, by the general parser).
    pub fn expect_channel(&mut self, channel: &[u8]) {
        let mut prefix = b"*3\r\n$7\r\nmessage\r\n$".to_vec();
        prefix.extend_from_slice(channel.len().to_string().as_bytes());
        prefix.extend_from_slice(b"\r\n");
        prefix.extend_from_slice(channel);
        prefix.extend_from_slice(b"\r\n$");
        self.message_prefix = Some((prefix, channel.len()));
    }

    /// The buffer the socket is read into (see [`crate::link::Link::fill`]).
    pub fn buf(&mut self) -> &mut ReadBuf {
        &mut self.buf
    }

    /// Copies `bytes` in as if read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.push(bytes);
    }

    /// The next complete value, or `None` until more bytes are read.
    ///
    /// # Errors
    /// A [`ProtoError`] when the bytes are not RESP; the connection is over.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, ProtoError> {
        Ok(self.next_head()?.map(|head| self.frame(&head)))
    }

    /// Like [`Reader::next_frame`], but the value is returned as offsets that borrow
    /// nothing (see [`Reader::frame`]).
    ///
    /// # Errors
    /// As [`Reader::next_frame`].
    pub fn next_head(&mut self) -> Result<Option<Head>, ProtoError> {
        match self.step()? {
            Step::Found(located, next) => {
                self.buf.consume_to(next);
                Ok(Some(Head(located)))
            }
            Step::Need(end) => {
                let total = end - self.buf.start();
                self.buf.need(total);
                Ok(None)
            }
            Step::Partial => Ok(None),
        }
    }

    fn step(&self) -> Result<Step, ProtoError> {
        let (bytes, start) = (self.buf.bytes(), self.buf.start());
        if let Some((prefix, channel_len)) = &self.message_prefix {
            match self.buf.sized_after(prefix) {
                Some(Sized::Whole { payload, next }) => {
                    // The channel ends where the prefix's closing `\r\n$` starts.
                    let channel_end = start + prefix.len() - 3;
                    let channel = (channel_end - channel_len, channel_end);
                    return Ok(Step::Found(Located::Message(channel, payload), next));
                }
                Some(Sized::Need(end)) => return Ok(Step::Need(end)),
                None => {}
            }
        }
        Ok(match parse(bytes, start, 0)? {
            Parsed::Done(_, end) => Step::Found(Located::Value(start, end), end),
            Parsed::Need(end) => Step::Need(end),
            Parsed::Partial => Step::Partial,
        })
    }

    /// The value `head` locates; valid until the next [`Reader::spare`], which may
    /// move the bytes.
    ///
    /// # Panics
    /// If the buffer moved since `head` was read (a misuse).
    pub fn frame(&self, head: &Head) -> Frame<'_> {
        let bytes = self.buf.bytes();
        match head.0 {
            Located::Message((c0, c1), (p0, p1)) => Frame::Message {
                channel: &bytes[c0..c1],
                payload: &bytes[p0..p1],
            },
            Located::Value(start, end) => {
                let Ok(Parsed::Done(value, _)) = parse(&bytes[..end], start, 0) else {
                    panic!("a head is used before the buffer moves");
                };
                match message_of(&value) {
                    Some((channel, payload)) => Frame::Message { channel, payload },
                    None => Frame::Value(value),
                }
            }
        }
    }
}

/// The channel and payload of a `message` array.
fn message_of<'a>(value: &Value<'a>) -> Option<(&'a [u8], &'a [u8])> {
    let Value::Array(Some(array)) = value else {
        return None;
    };
    if array.len() != 3 {
        return None;
    }
    let mut items = array.iter();
    let (
        Some(Value::Bulk(Some(b"message"))),
        Some(Value::Bulk(Some(channel))),
        Some(Value::Bulk(Some(payload))),
    ) = (items.next(), items.next(), items.next())
    else {
        return None;
    };
    Some((channel, payload))
}

/// What [`parse`] found at an offset.
enum Parsed<'a> {
    /// A whole value, and where the next one starts.
    Done(Value<'a>, usize),
    /// A bulk string whose bytes are not all read: where it will end.
    Need(usize),
    /// Not even a whole line yet.
    Partial,
}

/// The value starting at `at` of `buf` (which ends at the last byte read).
fn parse(buf: &[u8], at: usize, depth: usize) -> Result<Parsed<'_>, ProtoError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(Parsed::Partial);
    };
    let Some(eol) = find_crlf(&buf[at..]) else {
        if buf.len() - at > MAX_LINE {
            return Err(ProtoError::LineTooLong);
        }
        return Ok(Parsed::Partial);
    };
    let line = &buf[at + 1..at + eol];
    let next = at + eol + 2;
    let value = match kind {
        b'+' => Value::Simple(line),
        b'-' => Value::Error(line),
        b':' => Value::Int(parse_int(line).ok_or_else(|| bad_line(&buf[at..at + eol]))?),
        b'$' => match parse_len(line).ok_or_else(|| bad_line(&buf[at..at + eol]))? {
            None => Value::Bulk(None),
            Some(len) if len > MAX_BULK => return Err(ProtoError::TooLarge(len)),
            Some(len) => {
                let end = next + len + 2;
                if buf.len() < end {
                    return Ok(Parsed::Need(end));
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(ProtoError::BadBulkEnd);
                }
                return Ok(Parsed::Done(Value::Bulk(Some(&buf[next..end - 2])), end));
            }
        },
        b'*' => match parse_len(line).ok_or_else(|| bad_line(&buf[at..at + eol]))? {
            None => Value::Array(None),
            Some(_) if depth >= MAX_DEPTH => return Err(ProtoError::TooDeep),
            Some(len) => {
                let mut end = next;
                for _ in 0..len {
                    match parse(buf, end, depth + 1)? {
                        Parsed::Done(_, after) => end = after,
                        unfinished => return Ok(unfinished),
                    }
                }
                let items = &buf[next..end];
                return Ok(Parsed::Done(Value::Array(Some(Array { len, items })), end));
            }
        },
        _ => return Err(bad_line(&buf[at..at + eol])),
    };
    Ok(Parsed::Done(value, next))
}

/// A length: `-1` (null) or a non-negative number.
fn parse_len(line: &[u8]) -> Option<Option<usize>> {
    if line == b"-1" {
        return Some(None);
    }
    if line.is_empty() || line.len() > 18 || !line.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(std::str::from_utf8(line).ok()?.parse().ok())
}

fn parse_int(line: &[u8]) -> Option<i64> {
    std::str::from_utf8(line).ok()?.parse().ok()
}

fn bad_line(line: &[u8]) -> ProtoError {
    let cut = &line[..line.len().min(80)];
    ProtoError::BadLine(String::from_utf8_lossy(cut).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    fn describe(value: &Value<'_>) -> String {
        match value {
            Value::Simple(s) => format!("+{}", text(s)),
            Value::Error(e) => format!("-{}", text(e)),
            Value::Int(n) => format!(":{n}"),
            Value::Bulk(None) => "$nil".into(),
            Value::Bulk(Some(b)) => format!("${:?}", text(b)),
            Value::Array(None) => "*nil".into(),
            Value::Array(Some(a)) => {
                let items: Vec<String> = a.iter().map(|v| describe(&v)).collect();
                format!("[{}]", items.join(" "))
            }
        }
    }

    /// Every frame of `bytes`, fed in the pieces `cuts` makes, as strings.
    fn parse_all(bytes: &[u8], cuts: &[usize], channel: Option<&[u8]>) -> Vec<String> {
        let mut reader = Reader::new();
        if let Some(channel) = channel {
            reader.expect_channel(channel);
        }
        let mut frames = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&bytes.len())) {
            reader.push(&bytes[from..to]);
            from = to;
            while let Some(frame) = reader.next_frame().unwrap() {
                frames.push(match frame {
                    Frame::Message { channel, payload } => {
                        format!("message {} {:?}", text(channel), text(payload))
                    }
                    Frame::Value(v) => describe(&v),
                });
            }
        }
        frames
    }

    const STREAM: &[u8] = b"+OK\r\n-ERR unknown command 'X'\r\n:42\r\n:-7\r\n\
        $5\r\nhello\r\n$-1\r\n$0\r\n\r\n*-1\r\n*0\r\n*2\r\n*1\r\n:1\r\n$1\r\na\r\n\
        *3\r\n$9\r\nsubscribe\r\n$6\r\nfanout\r\n:1\r\n\
        *3\r\n$7\r\nmessage\r\n$6\r\nfanout\r\n$10\r\n{\"p\":1}\r\nx\r\n\
        *3\r\n$7\r\nmessage\r\n$5\r\nother\r\n$3\r\nabc\r\n\
        *4\r\n$8\r\npmessage\r\n$2\r\nf*\r\n$6\r\nfanout\r\n$1\r\nz\r\n\
        *3\r\n$7\r\nmessage\r\n$6\r\nfanout\r\n$0\r\n\r\n";

    fn expected() -> Vec<String> {
        [
            "+OK",
            "-ERR unknown command 'X'",
            ":42",
            ":-7",
            "$\"hello\"",
            "$nil",
            "$\"\"",
            "*nil",
            "[]",
            "[[:1] $\"a\"]",
            "[$\"subscribe\" $\"fanout\" :1]",
            "message fanout \"{\\\"p\\\":1}\\r\\nx\"",
            "message other \"abc\"",
            "[$\"pmessage\" $\"f*\" $\"fanout\" $\"z\"]",
            "message fanout \"\"",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn parses_every_value_split_at_every_byte() {
        for channel in [None, Some(&b"fanout"[..]), Some(&b"other"[..])] {
            assert_eq!(parse_all(STREAM, &[], channel), expected());
            for cut in 0..=STREAM.len() {
                assert_eq!(
                    parse_all(STREAM, &[cut], channel),
                    expected(),
                    "cut at {cut}"
                );
            }
            let every: Vec<usize> = (1..STREAM.len()).collect();
            assert_eq!(parse_all(STREAM, &every, channel), expected());
        }
    }

    #[test]
    fn the_fast_path_finds_what_the_general_parser_finds() {
        let mut message = b"*3\r\n$7\r\nmessage\r\n$6\r\nfanout\r\n$128\r\n".to_vec();
        message.extend_from_slice(&[b'x'; 128]);
        message.extend_from_slice(b"\r\n");
        let mut reader = Reader::new();
        reader.expect_channel(b"fanout");
        reader.push(&message);
        let head = reader.next_head().unwrap().unwrap();
        assert!(matches!(head.0, Located::Message(..)), "fast path taken");
        assert_eq!(
            reader.frame(&head),
            Frame::Message {
                channel: b"fanout",
                payload: &[b'x'; 128]
            }
        );
        // A length the fast path does not take (ten digits) goes the general way.
        let mut reader = Reader::new();
        reader.expect_channel(b"fanout");
        reader.push(b"*3\r\n$7\r\nmessage\r\n$6\r\nfanout\r\n$0000000003\r\nabc\r\n");
        assert_eq!(
            reader.next_frame().unwrap(),
            Some(Frame::Message {
                channel: b"fanout",
                payload: b"abc"
            })
        );
    }

    #[test]
    fn large_payloads_grow_the_buffer() {
        let body = vec![b'y'; 100_000];
        let mut bytes =
            format!("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n${}\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(b"\r\n:1\r\n");
        let mut reader = Reader::new();
        reader.expect_channel(b"c");
        let mut got = Vec::new();
        for piece in bytes.chunks(5000) {
            reader.push(piece);
            while let Some(frame) = reader.next_frame().unwrap() {
                got.push(match frame {
                    Frame::Message { payload, .. } => payload.len() as i64,
                    Frame::Value(Value::Int(n)) => -n,
                    other => panic!("{other:?}"),
                });
            }
        }
        assert_eq!(got, [100_000, -1]);
    }

    #[test]
    fn refuses_what_is_not_resp() {
        let bad = |bytes: &[u8]| {
            let mut reader = Reader::new();
            reader.push(bytes);
            reader.next_frame().map(|f| f.is_some())
        };
        assert!(matches!(bad(b"HELLO\r\n"), Err(ProtoError::BadLine(_))));
        assert!(matches!(bad(b":x1\r\n"), Err(ProtoError::BadLine(_))));
        assert!(matches!(bad(b"$-2\r\n"), Err(ProtoError::BadLine(_))));
        assert!(matches!(bad(b"*1\r\n$x\r\n"), Err(ProtoError::BadLine(_))));
        assert!(matches!(bad(b"$3\r\nabcXY"), Err(ProtoError::BadBulkEnd)));
        assert!(matches!(
            bad(b"$999999999999\r\n"),
            Err(ProtoError::TooLarge(_))
        ));
        assert!(matches!(
            bad(&b"*1\r\n".repeat(MAX_DEPTH + 1)),
            Err(ProtoError::TooDeep)
        ));
        assert!(matches!(
            bad(&[b'+'; MAX_LINE + 2]),
            Err(ProtoError::LineTooLong)
        ));
        assert_eq!(bad(b"$3\r\nab"), Ok(false), "waits for the bytes");
        assert_eq!(bad(b"*2\r\n:1\r\n"), Ok(false), "waits for the elements");
        assert_eq!(bad(b":1"), Ok(false), "waits for the line's end");
    }
}
