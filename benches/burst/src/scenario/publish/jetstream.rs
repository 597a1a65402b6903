//! Publishing to NATS JetStream: `PUB <subject> <inbox>.<id>` over the hand-rolled
//! NATS client, acked on the inbox by the stream (`{"stream":…,"seq":N}`, once stored
//! per the server's `sync_interval`), or refused (`{"error":{…}}`, or a 503 status when
//! no stream listens on the subject).

use std::rc::Rc;
use std::sync::LazyLock;
use std::time::Duration;

use super::worker::{Answer, Wire};
use crate::client::scan::{self, Key};
use crate::client::ConnError;
use crate::nats::encode;
use crate::nats::reader::Msg;
use crate::nats::NatsConn;

/// `"duplicate"`: a publish ack's flag for a `Nats-Msg-Id` already stored.
static DUPLICATE: LazyLock<Key> = LazyLock::new(|| Key::new("duplicate"));
/// `"error"`: a JetStream API error.
static ERROR: LazyLock<Key> = LazyLock::new(|| Key::new("error"));

/// The subscription id of every connection's reply inbox.
pub(super) const INBOX_SID: u64 = 1;

/// One publishing connection to nats-server.
pub(super) struct NatsWire {
    /// The connection, subscribed to `inbox*`.
    conn: NatsConn,
    /// Every room's subject, by index.
    subjects: Rc<[Vec<u8>]>,
    /// This connection's reply prefix, `_INBOX.<run>.<connection>.`: a send's reply
    /// subject is the prefix and its id.
    inbox: Vec<u8>,
    /// With `--msg-id`: the `Nats-Msg-Id` prefix (`<run>-<connection>-`), the same
    /// `cid`s rushhour gets.
    msg_id_prefix: Option<Vec<u8>>,
    /// The message id being built, reused.
    msg_id: Vec<u8>,
}

impl NatsWire {
    /// Wraps `conn` and subscribes it to its inbox (the subscription is in place
    /// before any publish: the server handles a connection's lines in order).
    pub fn new(
        mut conn: NatsConn,
        subjects: Rc<[Vec<u8>]>,
        inbox: String,
        msg_id_prefix: Option<String>,
    ) -> Self {
        let wildcard = format!("{inbox}*");
        encode::write_sub(conn.out(), wildcard.as_bytes(), INBOX_SID);
        Self {
            conn,
            subjects,
            inbox: inbox.into_bytes(),
            msg_id_prefix: msg_id_prefix.map(String::into_bytes),
            msg_id: Vec::with_capacity(64),
        }
    }
}

impl Wire for NatsWire {
    fn queue(&mut self, id: u64, room: u32, body: &[u8]) {
        let subject = &self.subjects[room as usize];
        match &self.msg_id_prefix {
            None => encode::write_pub(self.conn.out(), subject, &self.inbox, id, body),
            Some(prefix) => {
                self.msg_id.clear();
                self.msg_id.extend_from_slice(prefix);
                scan::push_u64(&mut self.msg_id, id);
                encode::write_hpub_msg_id(
                    self.conn.out(),
                    subject,
                    &self.inbox,
                    id,
                    &self.msg_id,
                    body,
                );
            }
        }
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        Ok(self.conn.flush().await?)
    }

    async fn fill(&mut self) -> Result<(), ConnError> {
        self.conn.fill().await
    }

    fn answers(&mut self, on: &mut impl FnMut(Answer<'_>)) -> Result<(), ConnError> {
        while let Some(msg) = self.conn.next_msg()? {
            if let Some(answer) = answer(&msg, &self.inbox) {
                on(answer);
            }
        }
        Ok(())
    }
}

/// What a message on the inbox says about a send; `None` for anything else.
fn answer<'a>(msg: &Msg<'a>, inbox: &[u8]) -> Option<Answer<'a>> {
    if msg.sid != INBOX_SID {
        return None;
    }
    let id = scan::parse_u64(msg.subject.strip_prefix(inbox)?)?;
    if let Some(status) = msg.status() {
        let text: &'static [u8] = match status {
            503 => b"503 no responders: no stream listens on the subject",
            408 => b"408 request timeout",
            _ => b"status without payload",
        };
        return Some(Answer::Failed { id: Some(id), text });
    }
    if scan::value(msg.payload, &ERROR).is_some() {
        return Some(Answer::Failed {
            id: Some(id),
            text: msg.payload,
        });
    }
    Some(Answer::Acked {
        id,
        duplicate: scan::value(msg.payload, &DUPLICATE).is_some_and(|v| v.starts_with(b"true")),
    })
}

/// The `$JS.API.STREAM.CREATE` request for a file-backed stream `name` on `subjects`.
pub(super) fn stream_config(name: &str, subjects: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "subjects": [subjects],
        "storage": "file",
        "retention": "limits",
        "discard": "old",
        "num_replicas": 1,
    })
}

/// Creates stream `name` (or finds it, when one with the same configuration exists)
/// over `conn`, a set-up connection; returns the server's answer.
///
/// # Errors
/// A message with JetStream's error, or the connection's.
pub(super) async fn create_stream(
    conn: &mut NatsConn,
    name: &str,
    subjects: &str,
    inbox: &str,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let config = stream_config(name, subjects).to_string();
    let answer = conn
        .request(
            &format!("$JS.API.STREAM.CREATE.{name}"),
            config.as_bytes(),
            inbox,
            INBOX_SID,
            timeout,
        )
        .await
        .map_err(|e| format!("creating stream {name}: {e}"))?;
    let answer: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| {
        format!(
            "creating stream {name}: answer not JSON ({e}): {}",
            String::from_utf8_lossy(&answer)
        )
    })?;
    if let Some(error) = answer.get("error") {
        return Err(format!("creating stream {name}: {error}"));
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg<'a>(subject: &'a [u8], headers: Option<&'a [u8]>, payload: &'a [u8]) -> Msg<'a> {
        Msg {
            subject,
            sid: INBOX_SID,
            reply: None,
            headers,
            payload,
        }
    }

    #[test]
    fn answers_are_read_from_acks_errors_and_statuses() {
        let inbox = b"_INBOX.r.3.";
        assert_eq!(
            answer(
                &msg(b"_INBOX.r.3.17", None, br#"{"stream":"BENCH","seq":9}"#),
                inbox
            ),
            Some(Answer::Acked {
                id: 17,
                duplicate: false
            })
        );
        assert_eq!(
            answer(
                &msg(
                    b"_INBOX.r.3.18",
                    None,
                    br#"{"stream":"BENCH","seq":9,"duplicate":true}"#
                ),
                inbox
            ),
            Some(Answer::Acked {
                id: 18,
                duplicate: true
            })
        );
        let refused = br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"},"stream":"BENCH"}"#;
        assert_eq!(
            answer(&msg(b"_INBOX.r.3.19", None, refused), inbox),
            Some(Answer::Failed {
                id: Some(19),
                text: refused
            })
        );
        assert!(matches!(
            answer(
                &msg(b"_INBOX.r.3.20", Some(b"NATS/1.0 503\r\n\r\n"), b""),
                inbox
            ),
            Some(Answer::Failed { id: Some(20), .. })
        ));
        assert_eq!(answer(&msg(b"_INBOX.r.4.20", None, b"{}"), inbox), None);
        assert_eq!(answer(&msg(b"bench.1", None, b"{}"), inbox), None);
    }

    #[test]
    fn the_stream_is_file_backed() {
        let config = stream_config("BENCH", "bench.*");
        assert_eq!(config["storage"], "file");
        assert_eq!(config["subjects"][0], "bench.*");
    }
}
