//! The server's JSON frames, written straight into WebSocket frames.
//!
//! Every frame starts with `"op"`, and a `msg` frame ends with the sender's `body` as the
//! JSON text it arrived as (validated, never re-encoded), so clients can dispatch on the
//! first key and pass bodies through. Frames are built once into a [`FrameBuilder`] and
//! shared; nothing here allocates per recipient.

use std::io::Write;

use bytes::Bytes;

use crate::codec::{FrameBuilder, Opcode};
use crate::error::Error;
use crate::ids::Seq;

/// Appends JSON fields to a frame under construction. Keys are our own ASCII literals;
/// string values are escaped.
pub struct JsonFrame {
    fb: FrameBuilder,
}

impl JsonFrame {
    /// Starts `{"op":"<op>"`.
    pub fn new(op: &str, capacity: usize) -> Self {
        let mut fb = FrameBuilder::new(Opcode::Text, capacity + 16);
        let buf = fb.buf();
        buf.extend_from_slice(b"{\"op\":\"");
        buf.extend_from_slice(op.as_bytes());
        buf.push(b'"');
        JsonFrame { fb }
    }

    /// Starts `{"op":"reply","id":N,"ok":true`.
    pub fn reply(id: i64, capacity: usize) -> Self {
        JsonFrame::new("reply", capacity + 32)
            .int("id", id)
            .bool("ok", true)
    }

    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        let buf = self.fb.buf();
        buf.extend_from_slice(b",\"");
        buf.extend_from_slice(key.as_bytes());
        buf.extend_from_slice(b"\":");
        buf
    }

    /// Adds a string field, escaped.
    pub fn str(mut self, key: &str, value: &str) -> Self {
        write_json_str(self.key(key), value);
        self
    }

    /// Adds an unsigned integer field.
    pub fn uint(mut self, key: &str, value: u64) -> Self {
        let _ = write!(self.key(key), "{value}");
        self
    }

    /// Adds a signed integer field.
    pub fn int(mut self, key: &str, value: i64) -> Self {
        let _ = write!(self.key(key), "{value}");
        self
    }

    /// Adds a boolean field.
    pub fn bool(mut self, key: &str, value: bool) -> Self {
        let buf = self.key(key);
        buf.extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// Adds a field whose value is JSON text already (validated by the caller).
    pub fn raw(mut self, key: &str, json: &[u8]) -> Self {
        self.key(key).extend_from_slice(json);
        self
    }

    /// Adds an array field of JSON texts.
    pub fn raw_array<'a>(mut self, key: &str, items: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let buf = self.key(key);
        buf.push(b'[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            buf.extend_from_slice(item);
        }
        buf.push(b']');
        self
    }

    /// Closes the object and returns the finished WebSocket frame.
    pub fn finish(mut self) -> Bytes {
        self.fb.buf().push(b'}');
        self.fb.finish()
    }
}

/// Writes `s` as a JSON string literal.
pub fn write_json_str(buf: &mut Vec<u8>, s: &str) {
    // serde_json's escaping is exact and fast; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// The `msg` push: `{"op":"msg","room","seq","from","cid","ts","body"}` with `body` last.
pub fn msg(room: &str, seq: Seq, from: &str, cid: &str, ts: u64, body: &str) -> Bytes {
    JsonFrame::new("msg", 96 + room.len() + from.len() + cid.len() + body.len())
        .str("room", room)
        .uint("seq", seq.0)
        .str("from", from)
        .str("cid", cid)
        .uint("ts", ts)
        .raw("body", body.as_bytes())
        .finish()
}

/// The room and seq of a `msg` frame made by [`msg`] (WebSocket header included); None
/// for any other frame. Room ids need no JSON escaping, so the layout is fixed.
pub fn msg_position(frame: &[u8]) -> Option<(&str, Seq)> {
    let header = match frame.get(1)? & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let rest = frame
        .get(header..)?
        .strip_prefix(b"{\"op\":\"msg\",\"room\":\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    let room = std::str::from_utf8(&rest[..end]).ok()?;
    let digits = rest[end..].strip_prefix(b"\",\"seq\":")?;
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    let seq = std::str::from_utf8(&digits[..len]).ok()?.parse().ok()?;
    Some((room, Seq(seq)))
}

/// The `error` frame for `err`, answering request `id` when it had one.
pub fn error(id: Option<i64>, err: &Error) -> Bytes {
    let message = err.to_string();
    let mut f = JsonFrame::new("error", 64 + message.len());
    if let Some(id) = id {
        f = f.int("id", id);
    }
    f = f.str("code", err.code()).str("message", &message);
    if let Some(ms) = err.retry_after_ms() {
        f = f.uint("retry_after_ms", ms);
    }
    f.finish()
}

/// A text frame around JSON text produced elsewhere (Python's replies and events).
pub fn text(json: &str) -> Bytes {
    let mut fb = FrameBuilder::new(Opcode::Text, json.len());
    fb.buf().extend_from_slice(json.as_bytes());
    fb.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msg_position_reads_room_and_seq_back() {
        let small = msg("general", Seq(58), "alice", "c", 1, "{}");
        assert_eq!(msg_position(&small), Some(("general", Seq(58))));
        let big = msg(
            "r/2",
            Seq(7),
            "a",
            "c",
            1,
            &format!("\"{}\"", "x".repeat(70_000)),
        );
        assert_eq!(msg_position(&big), Some(("r/2", Seq(7))));
        assert_eq!(msg_position(&text("{\"op\":\"welcome\"}")), None);
    }
    use crate::store::StoredMessage;
    use std::sync::Arc;

    fn payload(frame: &Bytes) -> String {
        let m = StoredMessage {
            room: crate::ids::RoomId(0),
            seq: Seq(0),
            ts: 0,
            from: Arc::from(""),
            cid: Arc::from(""),
            frame: frame.clone(),
        };
        String::from_utf8(m.json().to_vec()).unwrap()
    }

    #[test]
    fn msg_has_op_first_and_body_last_verbatim() {
        let body = r#"{"b": 1,  "a":"\u00e9"}"#;
        let f = msg("general", Seq(58), "alice", "c-\"1", 1700, body);
        let text = payload(&f);
        assert_eq!(
            text,
            r#"{"op":"msg","room":"general","seq":58,"from":"alice","cid":"c-\"1","ts":1700,"body":{"b": 1,  "a":"\u00e9"}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["cid"], "c-\"1");
    }

    #[test]
    fn error_frames() {
        let e = Error::RateLimited {
            message: "slow down".into(),
            retry_after_ms: 12,
        };
        assert_eq!(
            payload(&error(Some(4), &e)),
            r#"{"op":"error","id":4,"code":"rate_limited","message":"slow down","retry_after_ms":12}"#
        );
        assert_eq!(
            payload(&error(None, &Error::bad_request("x"))),
            r#"{"op":"error","code":"bad_request","message":"x"}"#
        );
    }

    #[test]
    fn reply_with_array() {
        let f = JsonFrame::reply(-3, 0)
            .raw_array("messages", [&b"{}"[..], b"[1]"])
            .finish();
        assert_eq!(
            payload(&f),
            r#"{"op":"reply","id":-3,"ok":true,"messages":[{},[1]]}"#
        );
    }
}
