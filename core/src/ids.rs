//! Newtype ids, so a connection, a room and a sequence number can never be mixed up.

use std::fmt;

/// One WebSocket connection, unique for the lifetime of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// One room of one tenant, interned: `(tenant, room name)` maps to a dense index, so the
/// hot path compares integers instead of strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u32);

/// A message's position in its room: 1, 2, 3 … with no gaps. 0 means "before the first".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Seq(pub u64);

impl Seq {
    /// The sequence number after this one.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Longest id the protocol accepts (user, tenant, room and meeting ids).
pub const MAX_ID_LEN: usize = 128;

/// Whether `s` is a valid protocol id: 1–128 chars of `[A-Za-z0-9_.:@/-]`.
///
/// The charset keeps ids safe to embed in JSON, paths and metric labels without escaping.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'/' | b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        assert!(is_valid_id("general"));
        assert!(is_valid_id("dm:alice@acme/bob_1.x-2"));
        assert!(is_valid_id(&"a".repeat(128)));
    }

    #[test]
    fn invalid_ids() {
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(&"a".repeat(129)));
        assert!(!is_valid_id("with space"));
        assert!(!is_valid_id("quote\""));
        assert!(!is_valid_id("é"));
    }
}
