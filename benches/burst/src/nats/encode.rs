//! The client's side of the NATS protocol, written sans-IO into an output buffer:
//! `CONNECT`, `SUB`, `PUB` (with or without a reply subject), `HPUB`, `PING` and
//! `PONG`. Numbers are written without the `fmt` machinery, since `PUB` is on the
//! per-message path.

use crate::client::scan::push_u64;

/// `CONNECT` with headers on (so that "no responders" comes back at once as a 503
/// status instead of an ack that never arrives) and verbose off (no `+OK` per `PUB`).
pub fn write_connect(out: &mut Vec<u8>, name: &str) {
    let options = serde_json::json!({
        "verbose": false,
        "pedantic": false,
        "tls_required": false,
        "name": name,
        "lang": "rust",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": 1,
        "headers": true,
        "no_responders": true,
    });
    out.extend_from_slice(b"CONNECT ");
    out.extend_from_slice(options.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `SUB <subject> <sid>`.
pub fn write_sub(out: &mut Vec<u8>, subject: &[u8], sid: u64) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    push_u64(out, sid);
    out.extend_from_slice(b"\r\n");
}

/// `PUB <subject> <reply><reply_id> <#bytes>` and the payload: the reply subject is
/// written as a prefix and a number, so that callers need not format it first.
pub fn write_pub(out: &mut Vec<u8>, subject: &[u8], reply: &[u8], reply_id: u64, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    out.extend_from_slice(reply);
    push_u64(out, reply_id);
    out.push(b' ');
    push_u64(out, payload.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// `PUB <subject> <#bytes>` and the payload: a publish nobody answers (core NATS).
pub fn write_pub_no_reply(out: &mut Vec<u8>, subject: &[u8], payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    push_u64(out, payload.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// `HPUB` with one header, `Nats-Msg-Id: <msg_id>` (JetStream's de-duplication key),
/// otherwise as [`write_pub`].
pub fn write_hpub_msg_id(
    out: &mut Vec<u8>,
    subject: &[u8],
    reply: &[u8],
    reply_id: u64,
    msg_id: &[u8],
    payload: &[u8],
) {
    const HEAD: &[u8] = b"NATS/1.0\r\nNats-Msg-Id: ";
    const TAIL: &[u8] = b"\r\n\r\n";
    let header_len = HEAD.len() + msg_id.len() + TAIL.len();
    out.extend_from_slice(b"HPUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    out.extend_from_slice(reply);
    push_u64(out, reply_id);
    out.push(b' ');
    push_u64(out, header_len as u64);
    out.push(b' ');
    push_u64(out, (header_len + payload.len()) as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(HEAD);
    out.extend_from_slice(msg_id);
    out.extend_from_slice(TAIL);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// `PONG`, the answer to a server's `PING`.
pub fn write_pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

/// `PING`: its `PONG` tells that every line before it was processed.
pub fn write_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::reader::{Op, Reader};

    /// Every operation of `bytes`, fed `chunk` bytes at a time: subject, reply, headers
    /// and payload of each message.
    fn messages(
        bytes: &[u8],
        chunk: usize,
    ) -> Vec<(String, Option<String>, Option<String>, String)> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut reader = Reader::new();
        let mut got = Vec::new();
        for piece in bytes.chunks(chunk) {
            reader.push(piece);
            while let Some(op) = reader.next_op().unwrap() {
                let Op::Msg(m) = op else { panic!("{op:?}") };
                got.push((
                    text(m.subject),
                    m.reply.map(text),
                    m.headers.map(text),
                    text(m.payload),
                ));
            }
        }
        got
    }

    #[test]
    fn writes_client_lines() {
        let mut out = Vec::new();
        write_pub(&mut out, b"bench.7", b"_INBOX.ab.", 42, b"{\"n\":1}");
        assert_eq!(out, b"PUB bench.7 _INBOX.ab.42 7\r\n{\"n\":1}\r\n");
        out.clear();
        write_pub_no_reply(&mut out, b"fanout", b"a b");
        assert_eq!(out, b"PUB fanout 3\r\na b\r\n");
        out.clear();
        write_hpub_msg_id(&mut out, b"bench.7", b"_INBOX.ab.", 0, b"c-1", b"hi");
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            text,
            "HPUB bench.7 _INBOX.ab.0 30 32\r\nNATS/1.0\r\nNats-Msg-Id: c-1\r\n\r\nhi\r\n"
        );
        // What we write, a server would send back the same way: parse it as an HMSG.
        let echoed = text.replacen("HPUB bench.7 _INBOX.ab.0", "HMSG bench.7 9 _INBOX.ab.0", 1);
        assert_eq!(
            messages(echoed.as_bytes(), 3),
            [(
                "bench.7".to_owned(),
                Some("_INBOX.ab.0".to_owned()),
                Some("NATS/1.0\r\nNats-Msg-Id: c-1\r\n\r\n".to_owned()),
                "hi".to_owned()
            )]
        );
        out.clear();
        write_sub(&mut out, b"_INBOX.ab.*", 1);
        write_ping(&mut out);
        write_pong(&mut out);
        assert_eq!(out, b"SUB _INBOX.ab.* 1\r\nPING\r\nPONG\r\n");
        out.clear();
        write_connect(&mut out, "t");
        let line = std::str::from_utf8(&out).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(line.strip_prefix("CONNECT ").unwrap().trim_end()).unwrap();
        assert_eq!(json["verbose"], false);
        assert_eq!(json["headers"], true);
    }
}
