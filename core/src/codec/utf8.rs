//! Incremental UTF-8 checking of a text message that arrives in pieces.
//!
//! A peer sending invalid text is told so at the first byte that cannot start or continue
//! a code point (Autobahn's "fail fast" cases 6.4.x), not when the message ends. The
//! standard library's validator already distinguishes "invalid" from "cut short" (an
//! error with no `error_len`), and it rejects a cut-short sequence as soon as its second
//! byte is impossible (overlongs, surrogates, above U+10FFFF), so it is enough to run it
//! on the unchecked tail.

use super::ProtocolError;

/// How much of a growing message is known to be valid.
///
/// ### Invariants
/// `bytes[..valid]` is valid UTF-8 and `bytes[valid..]` is at most 3 bytes of a code
/// point that may still complete.
#[derive(Debug, Default)]
pub(super) struct Utf8Check {
    /// Length of the checked prefix that ends on a code-point boundary.
    valid: usize,
}

impl Utf8Check {
    /// Checks the bytes appended since the last call. `bytes` is the whole message so far.
    ///
    /// # Errors
    /// 1007 as soon as `bytes` cannot be the start of valid UTF-8.
    pub(super) fn advance(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        match std::str::from_utf8(&bytes[self.valid..]) {
            Ok(_) => self.valid = bytes.len(),
            Err(e) if e.error_len().is_none() => self.valid += e.valid_up_to(),
            Err(_) => return Err(ProtocolError::invalid_utf8("invalid utf-8")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` one at a time; returns how many were accepted before the failure.
    fn accepted(bytes: &[u8]) -> usize {
        let mut check = Utf8Check::default();
        for n in 1..=bytes.len() {
            if check.advance(&bytes[..n]).is_err() {
                return n - 1;
            }
        }
        bytes.len()
    }

    #[test]
    fn valid_text_split_anywhere_is_accepted() {
        let text = "κόσμε · 日本語 · 🎉 · ascii".as_bytes();
        assert_eq!(accepted(text), text.len());
        for cut in 0..text.len() {
            let mut check = Utf8Check::default();
            check.advance(&text[..cut]).unwrap();
            check.advance(text).unwrap();
            assert_eq!(check.valid, text.len());
        }
    }

    #[test]
    fn an_incomplete_code_point_is_kept_pending() {
        let mut check = Utf8Check::default();
        check.advance(b"ab\xe2\x82").unwrap();
        assert_eq!(check.valid, 2);
        check.advance(b"ab\xe2\x82\xac").unwrap();
        assert_eq!(check.valid, 5);
    }

    #[test]
    fn fails_at_the_first_impossible_byte() {
        // (bytes, how many are a valid prefix)
        let cases: &[(&[u8], usize)] = &[
            (b"ok\x80", 2),                   // lone continuation byte
            (b"\xc0\xaf", 0),                 // C0/C1 never start a code point
            (b"\xf5\x80", 0),                 // F5-FF never start one
            (b"\xe0\x80\xaf", 1),             // overlong 3-byte form
            (b"\xed\xa0\x80", 1),             // UTF-16 surrogate
            (b"\xf4\x90\x80\x80", 1),         // above U+10FFFF
            (b"\xce\xba\xe1\xbd\xb9\xff", 5), // Autobahn 6.4.1's payload, invalid at the end
            (b"\xe2\x82a", 2),                // a code point cut short by ASCII
        ];
        for (bytes, prefix) in cases {
            assert_eq!(accepted(bytes), *prefix, "{bytes:x?}");
        }
    }
}
