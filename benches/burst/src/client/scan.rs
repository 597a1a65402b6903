//! Reading the few fields a load generator needs out of a JSON frame without parsing it.
//!
//! The protocol promises `"op"` first and `body` last in every server frame, so the
//! first `"op"`, `"seq"` or `"id"` key of a frame is the top-level one: a substring
//! search finds it in the first few dozen bytes, with no allocation and no full parse
//! per delivery. Whitespace around the colon is tolerated, so a server that pretty-prints
//! still scans.

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// A JSON key to look for, as its quoted form (`"seq"`), searched with a prebuilt finder.
pub struct Key(Finder<'static>);

impl Key {
    /// The key `name` (without quotes).
    pub fn new(name: &str) -> Self {
        Self(Finder::new(format!("\"{name}\"").as_bytes()).into_owned())
    }
}

/// `"seq"`: a message's sequence number, or a send reply's.
pub static SEQ: LazyLock<Key> = LazyLock::new(|| Key::new("seq"));
/// `"id"`: the request a reply or error answers.
pub static ID: LazyLock<Key> = LazyLock::new(|| Key::new("id"));
/// `"body"`: a message's body, the last key of a `msg` frame.
pub static BODY: LazyLock<Key> = LazyLock::new(|| Key::new("body"));
/// `"code"`: an error's code.
pub static CODE: LazyLock<Key> = LazyLock::new(|| Key::new("code"));
/// `"retry_after_ms"`: how long to back off after `rate_limited` or `overloaded`.
pub static RETRY_AFTER_MS: LazyLock<Key> = LazyLock::new(|| Key::new("retry_after_ms"));

/// The value of the first `"op"` key when it opens the object (`{"op":"msg",...}`),
/// without its quotes.
pub fn op(frame: &[u8]) -> Option<&[u8]> {
    let rest = skip_ws(frame).strip_prefix(b"{")?;
    let rest = skip_ws(rest).strip_prefix(b"\"op\"")?;
    let rest = skip_ws(skip_ws(rest).strip_prefix(b":")?).strip_prefix(b"\"")?;
    let end = memchr::memchr(b'"', rest)?;
    Some(&rest[..end])
}

/// The seq of a `msg` frame laid out exactly as rushhour writes it,
/// `{"op":"msg","room":"<id>","seq":N,…`: a prefix compare and a short scan, for the
/// subscriber's hot path. `None` for any other layout (the caller falls back to
/// [`op`] and [`u64_value`]). Room ids hold no quote or escape, so the first quote ends
/// the room.
pub fn msg_seq_fast(frame: &[u8]) -> Option<u64> {
    let rest = frame.strip_prefix(br#"{"op":"msg","room":""#)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    parse_u64(rest[end..].strip_prefix(br#"","seq":"#)?)
}

/// The last `body_len` bytes before the frame's closing brace: where the body of a
/// `msg` frame is, since the server writes `body` last and verbatim. The caller checks
/// the bytes look like its own body before trusting them.
pub fn tail_body(frame: &[u8], body_len: usize) -> Option<&[u8]> {
    let inner = frame.strip_suffix(b"}")?;
    inner.get(inner.len().checked_sub(body_len)?..)
}

/// The raw JSON value after the first occurrence of `key` used as a key (followed by a
/// colon), running to the end of `frame`.
pub fn value<'a>(frame: &'a [u8], key: &Key) -> Option<&'a [u8]> {
    key.0.find_iter(frame).find_map(|at| {
        let after = skip_ws(&frame[at + key.0.needle().len()..]);
        after.strip_prefix(b":").map(skip_ws)
    })
}

/// The non-negative integer value of `key`, if it is one.
pub fn u64_value(frame: &[u8], key: &Key) -> Option<u64> {
    parse_u64(value(frame, key)?)
}

/// Whether the string value of `key` is exactly `expected`.
pub fn str_value_is(frame: &[u8], key: &Key, expected: &[u8]) -> bool {
    value(frame, key)
        .and_then(|v| v.strip_prefix(b"\""))
        .is_some_and(|v| {
            v.strip_prefix(expected)
                .is_some_and(|rest| rest.first() == Some(&b'"'))
        })
}

/// The string value of `key` without its quotes, when it holds no escape (ids, tokens
/// and codes never do): `None` when absent, not a string, or escaped.
pub fn str_value<'a>(frame: &'a [u8], key: &Key) -> Option<&'a [u8]> {
    let v = value(frame, key)?.strip_prefix(b"\"")?;
    let end = memchr::memchr2(b'"', b'\\', v)?;
    (v[end] == b'"').then(|| &v[..end])
}

/// The boolean value of `key`, if it is one.
pub fn bool_value(frame: &[u8], key: &Key) -> Option<bool> {
    let v = value(frame, key)?;
    if v.starts_with(b"true") {
        Some(true)
    } else if v.starts_with(b"false") {
        Some(false)
    } else {
        None
    }
}

/// The leading decimal digits of `bytes` as a number (`None` without a digit or on
/// overflow).
pub fn parse_u64(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    let value = |d: &[u8]| d.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    match digits {
        0 => None,
        // Up to 19 digits cannot overflow: no checked multiply on the hot path.
        1..=19 => Some(value(&bytes[..digits])),
        20 => value(&bytes[..19])
            .checked_mul(10)?
            .checked_add(u64::from(bytes[19] - b'0')),
        _ => None,
    }
}

/// Writes `n` in decimal, the inverse of [`parse_u64`] (no `fmt` machinery on the
/// per-message path).
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn skip_ws(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    &bytes[n..]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        br#"{"op":"msg","room":"seq","seq":58,"from":"alice","cid":"c-1","ts":17,"body":{"p":123,"seq":9}}"#;

    #[test]
    fn finds_the_top_level_fields_of_a_msg() {
        assert_eq!(op(MSG), Some(&b"msg"[..]));
        // `"seq"` as the room's value is skipped: it is not followed by a colon.
        assert_eq!(u64_value(MSG, &SEQ), Some(58));
        let body = value(MSG, &BODY).unwrap();
        assert!(body.starts_with(b"{\"p\":123"));
        assert_eq!(u64_value(body, &Key::new("p")), Some(123));
    }

    #[test]
    fn fast_path_agrees_with_the_general_scan() {
        let frame = br#"{"op":"msg","room":"fanout","seq":1234,"from":"pub","cid":"c-1","ts":1,"body":{"p":77,"t":"xx"}}"#;
        assert_eq!(msg_seq_fast(frame), Some(1234));
        assert_eq!(msg_seq_fast(frame), u64_value(frame, &SEQ));
        assert_eq!(tail_body(frame, 17), Some(&br#"{"p":77,"t":"xx"}"#[..]));
        assert_eq!(tail_body(frame, 1000), None);
        // Another key order, or spaces: not the fast path's business.
        assert_eq!(msg_seq_fast(br#"{"op":"msg","seq":5,"room":"r"}"#), None);
        assert_eq!(msg_seq_fast(br#"{"op": "msg","room":"r","seq":5}"#), None);
        assert_eq!(msg_seq_fast(br#"{"op":"reply","room":"r","seq":5}"#), None);
    }

    #[test]
    fn tolerates_whitespace() {
        let pretty = b" {\n  \"op\" : \"reply\",\n  \"id\" :\t7 }";
        assert_eq!(op(pretty), Some(&b"reply"[..]));
        assert_eq!(u64_value(pretty, &ID), Some(7));
    }

    #[test]
    fn error_fields() {
        let err = br#"{"op":"error","id":4,"code":"rate_limited","message":"slow down","retry_after_ms":250}"#;
        assert!(str_value_is(err, &CODE, b"rate_limited"));
        assert!(!str_value_is(err, &CODE, b"rate"));
        assert_eq!(u64_value(err, &RETRY_AFTER_MS), Some(250));
    }

    #[test]
    fn strings_and_booleans() {
        let welcome =
            br#"{"op":"welcome","session":"s-Ab_9","user":"u1","resumed":true,"x":"a\"b"}"#;
        assert_eq!(
            str_value(welcome, &Key::new("session")),
            Some(&b"s-Ab_9"[..])
        );
        assert_eq!(str_value(welcome, &Key::new("x")), None, "escaped");
        assert_eq!(str_value(welcome, &Key::new("resumed")), None);
        assert_eq!(bool_value(welcome, &Key::new("resumed")), Some(true));
        assert_eq!(
            bool_value(br#"{"resumed": false}"#, &Key::new("resumed")),
            Some(false)
        );
        assert_eq!(bool_value(welcome, &Key::new("user")), None);
    }

    #[test]
    fn missing_or_malformed() {
        assert_eq!(op(b"[1,2]"), None);
        assert_eq!(op(br#"{"id":1,"op":"x"}"#), None);
        assert_eq!(u64_value(br#"{"op":"x"}"#, &SEQ), None);
        assert_eq!(u64_value(br#"{"seq":-1}"#, &SEQ), None);
        assert_eq!(parse_u64(b"99999999999999999999"), None);
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(
            parse_u64(b"1844674407370955161,"),
            Some(1_844_674_407_370_955_161)
        );
        for n in [0, 9, 10, 1234, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            assert_eq!(parse_u64(&out), Some(n));
        }
    }
}
