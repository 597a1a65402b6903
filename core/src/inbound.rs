//! Parsing of client JSON frames: one validating pass, fields read lazily.
//!
//! A frame is checked against the [`json_limits`](crate::json_limits) first, then
//! parsed into raw JSON slices (`serde_json`'s `RawValue`), so the `body` of a `send` is
//! validated once and kept as the sender's text, and fields that the op does not use
//! cost nothing. Every frame is checked, control frames included: what reaches the
//! session layer's parser keeps the limits.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::Error;
use crate::json_limits::{self, Refusal};

/// The fields of a client frame that the core reads. Unknown fields are ignored.
#[derive(Deserialize, Debug)]
pub struct ClientFrame<'a> {
    #[serde(borrow)]
    op: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    room: Option<&'a RawValue>,
    #[serde(borrow)]
    cid: Option<&'a RawValue>,
    #[serde(borrow)]
    body: Option<&'a RawValue>,
    #[serde(borrow)]
    since: Option<&'a RawValue>,
    #[serde(borrow)]
    before: Option<&'a RawValue>,
    #[serde(borrow)]
    limit: Option<&'a RawValue>,
    #[serde(borrow)]
    seq: Option<&'a RawValue>,
    #[serde(borrow)]
    after: Option<&'a RawValue>,
    #[serde(borrow)]
    meeting: Option<&'a RawValue>,
    #[serde(borrow)]
    to: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Why a text frame could not be read as a request.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON at all: counts towards `max_bad_frames`.
    NotJson,
    /// JSON, but not a request object (no `op`, a non-integer `id`, …).
    Invalid(&'static str),
    /// JSON past one of the [`json_limits`]: answered `bad_request`, with the frame's
    /// `id` when one could be read.
    Limit {
        /// The limit passed.
        refusal: Refusal,
        /// The frame's `id`, read leniently for the error reply.
        id: Option<i64>,
    },
}

impl<'a> ClientFrame<'a> {
    /// Parses a text frame.
    ///
    /// # Errors
    /// [`ParseError::NotJson`] for text that is not JSON, `Limit` for JSON past the
    /// [`json_limits`], `Invalid` for JSON that is not an object with a string `op` and
    /// an optional integer `id`.
    pub fn parse(text: &'a str) -> Result<ClientFrame<'a>, ParseError> {
        match json_limits::check(text) {
            Ok(()) => {}
            Err(Refusal::NotJson) => return Err(ParseError::NotJson),
            Err(refusal) => {
                // Only on the error path. serde_json skips `RawValue`s and unknown fields
                // without recursing, so this reads the `id` of a frame of any depth.
                let id = serde_json::from_str::<ClientFrame<'_>>(text)
                    .ok()
                    .and_then(|frame| frame.id());
                return Err(ParseError::Limit { refusal, id });
            }
        }
        match serde_json::from_str::<ClientFrame<'a>>(text) {
            Ok(frame) => {
                let op = frame.op.ok_or(ParseError::Invalid("frame has no \"op\""))?;
                if serde_json::from_str::<Cow<'_, str>>(op.get()).is_err() {
                    return Err(ParseError::Invalid("\"op\" must be a string"));
                }
                if frame.id.is_some() && frame.id().is_none() {
                    return Err(ParseError::Invalid("\"id\" must be an integer"));
                }
                Ok(frame)
            }
            // The check above accepted it: JSON, of the wrong shape.
            Err(_) => Err(ParseError::Invalid(
                "a frame must be a JSON object with \"op\"",
            )),
        }
    }

    /// The op (checked to be a string by `parse`).
    pub fn op(&self) -> Cow<'a, str> {
        self.op
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default()
    }

    /// The request id, when present and an integer.
    pub fn id(&self) -> Option<i64> {
        self.id.and_then(|raw| serde_json::from_str(raw.get()).ok())
    }

    /// A required string field.
    ///
    /// # Errors
    /// `bad_request` when missing or not a string.
    pub fn string(&self, name: &'static str) -> Result<Cow<'a, str>, Error> {
        self.opt_string(name)?.ok_or_else(|| missing(name))
    }

    /// An optional string field (`null` counts as absent).
    ///
    /// # Errors
    /// `bad_request` when present and not a string.
    pub fn opt_string(&self, name: &'static str) -> Result<Option<Cow<'a, str>>, Error> {
        let raw = match name {
            "room" => self.room,
            "cid" => self.cid,
            "after" => self.after,
            "meeting" => self.meeting,
            "to" => self.to,
            _ => None,
        };
        match raw.filter(|r| r.get() != "null") {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|_| Error::bad_request(format!("\"{name}\" must be a string"))),
        }
    }

    /// An optional non-negative integer field (`null` counts as absent).
    ///
    /// # Errors
    /// `bad_request` when present and not a non-negative integer.
    pub fn uint(&self, name: &'static str) -> Result<Option<u64>, Error> {
        let raw = match name {
            "since" => self.since,
            "before" => self.before,
            "limit" => self.limit,
            "seq" => self.seq,
            _ => None,
        };
        match raw.filter(|r| r.get() != "null") {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw.get()).map(Some).map_err(|_| {
                Error::bad_request(format!("\"{name}\" must be a non-negative integer"))
            }),
        }
    }

    /// A field kept as the sender's JSON text (`data` of a signal), if present.
    pub fn raw(&self, name: &'static str) -> Option<&'a str> {
        match name {
            "data" => self.data.map(RawValue::get),
            "body" => self.body.map(RawValue::get),
            _ => None,
        }
    }

    /// The `body`, as the sender's JSON text.
    ///
    /// # Errors
    /// `bad_request` when missing.
    pub fn body(&self) -> Result<&'a str, Error> {
        self.body.map(RawValue::get).ok_or_else(|| missing("body"))
    }
}

fn missing(name: &'static str) -> Error {
    Error::bad_request(format!("\"{name}\" is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_send() {
        let f = ClientFrame::parse(
            r#"{"op":"send","id":4,"room":"general","cid":"c-\"1","body":{"x": [1, 2]}}"#,
        )
        .unwrap();
        assert_eq!(f.op(), "send");
        assert_eq!(f.id(), Some(4));
        assert_eq!(f.string("room").unwrap(), "general");
        assert_eq!(f.string("cid").unwrap(), "c-\"1");
        assert_eq!(f.body().unwrap(), r#"{"x": [1, 2]}"#);
        assert_eq!(f.uint("since").unwrap(), None);
    }

    #[test]
    fn tells_not_json_from_bad_shape() {
        assert_eq!(
            ClientFrame::parse("not json").unwrap_err(),
            ParseError::NotJson
        );
        assert_eq!(
            ClientFrame::parse("{\"op\":").unwrap_err(),
            ParseError::NotJson
        );
        assert!(matches!(
            ClientFrame::parse("[1,2]"),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            ClientFrame::parse("{\"id\":1}"),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            ClientFrame::parse("{\"op\":5}"),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            ClientFrame::parse("{\"op\":\"x\",\"id\":1.5}"),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            ClientFrame::parse("{\"op\":\"x\",\"id\":\"1\"}"),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_frames_past_the_limits_with_their_id() {
        let deep = format!(
            r#"{{"op":"send","id":7,"room":"r","body":{}{}}}"#,
            "[".repeat(5_000),
            "]".repeat(5_000)
        );
        let long = format!(r#"{{"op":"hello","id":8,"token":{}}}"#, "9".repeat(4_301));
        let lone = r#"{"op":"meeting.create","title":"\ud800","id":9}"#;
        for (text, refusal, id) in [
            (deep.as_str(), Refusal::TooDeep, Some(7)),
            (long.as_str(), Refusal::NumberTooLong, Some(8)),
            (lone, Refusal::LoneSurrogate, Some(9)),
            (r#"{"op":"x","id":1e999}"#, Refusal::NumberOutOfRange, None),
        ] {
            assert_eq!(
                ClientFrame::parse(text).unwrap_err(),
                ParseError::Limit { refusal, id },
                "{text:.40}"
            );
        }
        // Depth is the frame's: its own object and 63 levels of body.
        let body = format!("{}{}", "[".repeat(63), "]".repeat(63));
        let frame = format!(r#"{{"op":"send","room":"r","cid":"c","body":{body}}}"#);
        assert_eq!(ClientFrame::parse(&frame).unwrap().body().unwrap(), body);
    }

    #[test]
    fn typed_fields() {
        let f =
            ClientFrame::parse(r#"{"op":"subscribe","room":7,"since":-1,"limit":null}"#).unwrap();
        assert_eq!(f.string("room").unwrap_err().code(), "bad_request");
        assert_eq!(f.uint("since").unwrap_err().code(), "bad_request");
        assert_eq!(f.uint("limit").unwrap(), None);
        assert_eq!(f.string("cid").unwrap_err().code(), "bad_request");
        assert_eq!(f.body().unwrap_err().code(), "bad_request");
    }
}
