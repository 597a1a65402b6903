//! Publishing to rushhour: `send` frames over the hand-rolled WebSocket client, acked
//! by their `reply` (which the server sends only once the message is stored per its
//! fsync policy).

use std::rc::Rc;
use std::sync::LazyLock;
use std::time::Duration;

use super::worker::{Answer, Wire};
use crate::client::scan::{self, push_u64, Key};
use crate::client::{Conn, ConnError};

/// `"duplicate"`: a send reply's flag for a `cid` already stored.
static DUPLICATE: LazyLock<Key> = LazyLock::new(|| Key::new("duplicate"));

/// One publishing connection to rushhour, past `hello`.
pub(super) struct RushhourWire {
    /// The connection.
    conn: Conn,
    /// Every room's name as a JSON string, by index.
    rooms: Rc<[String]>,
    /// Makes `cid`s unique per run and connection (`<run>-<connection>-`), so that a
    /// server keeping its log across runs does not take these sends for retries.
    cid_prefix: String,
    /// The frame being built, reused.
    text: Vec<u8>,
}

impl RushhourWire {
    /// Wraps `conn`, already welcomed.
    pub fn new(conn: Conn, rooms: Rc<[String]>, cid_prefix: String) -> Self {
        Self {
            conn,
            rooms,
            cid_prefix,
            text: Vec::with_capacity(512),
        }
    }
}

impl Wire for RushhourWire {
    fn queue(&mut self, id: u64, room: u32, body: &[u8]) {
        write_send(
            &mut self.text,
            id,
            &self.rooms[room as usize],
            &self.cid_prefix,
            body,
        );
        self.conn.queue_text(&self.text);
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        Ok(self.conn.flush().await?)
    }

    async fn fill(&mut self) -> Result<(), ConnError> {
        self.conn.fill().await
    }

    fn answers(&mut self, on: &mut impl FnMut(Answer<'_>)) -> Result<(), ConnError> {
        while let Some(msg) = self.conn.next_message()? {
            if let Some(answer) = answer(msg.payload) {
                on(answer);
            }
        }
        Ok(())
    }
}

/// Writes the `send` frame of `id` into `out` (cleared first).
fn write_send(out: &mut Vec<u8>, id: u64, room_json: &str, cid_prefix: &str, body: &[u8]) {
    out.clear();
    out.extend_from_slice(br#"{"op":"send","id":"#);
    push_u64(out, id);
    out.extend_from_slice(br#","room":"#);
    out.extend_from_slice(room_json.as_bytes());
    out.extend_from_slice(br#","cid":""#);
    out.extend_from_slice(cid_prefix.as_bytes());
    push_u64(out, id);
    out.extend_from_slice(br#"","body":"#);
    out.extend_from_slice(body);
    out.push(b'}');
}

/// What a server frame says about a send; `None` for frames that are not answers
/// (pushes of any kind).
fn answer(frame: &[u8]) -> Option<Answer<'_>> {
    match scan::op(frame)? {
        b"reply" => Some(Answer::Acked {
            id: scan::u64_value(frame, &scan::ID)?,
            duplicate: scan::value(frame, &DUPLICATE).is_some_and(|v| v.starts_with(b"true")),
        }),
        b"error" => {
            let id = scan::u64_value(frame, &scan::ID);
            let retry = scan::str_value_is(frame, &scan::CODE, b"rate_limited")
                || scan::str_value_is(frame, &scan::CODE, b"overloaded");
            Some(match id {
                Some(id) if retry => Answer::Retry {
                    id,
                    after: scan::u64_value(frame, &scan::RETRY_AFTER_MS).map(Duration::from_millis),
                },
                _ => Answer::Failed { id, text: frame },
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_are_protocol_frames() {
        let mut out = Vec::new();
        write_send(&mut out, 42, r#""bench-7""#, "r1-3-", br#"{"n":42}"#);
        let frame: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"op": "send", "id": 42, "room": "bench-7", "cid": "r1-3-42", "body": {"n": 42}})
        );
    }

    #[test]
    fn answers_are_read_from_replies_and_errors() {
        assert_eq!(
            answer(br#"{"op":"reply","id":5,"ok":true,"seq":58,"ts":1,"duplicate":false}"#),
            Some(Answer::Acked {
                id: 5,
                duplicate: false
            })
        );
        assert_eq!(
            answer(br#"{"op":"reply","id":6,"ok":true,"seq":58,"duplicate":true}"#),
            Some(Answer::Acked {
                id: 6,
                duplicate: true
            })
        );
        assert_eq!(
            answer(
                br#"{"op":"error","id":7,"code":"rate_limited","message":"m","retry_after_ms":20}"#
            ),
            Some(Answer::Retry {
                id: 7,
                after: Some(Duration::from_millis(20))
            })
        );
        let refused = br#"{"op":"error","id":8,"code":"forbidden","message":"no"}"#;
        assert_eq!(
            answer(refused),
            Some(Answer::Failed {
                id: Some(8),
                text: refused
            })
        );
        assert_eq!(
            answer(br#"{"op":"msg","room":"r","seq":1,"body":{}}"#),
            None
        );
    }
}
