//! The limits every JSON text a peer sends must keep, checked in one pass before anything
//! parses it: client frames, publish bodies, token payloads.
//!
//! RFC 8259 §9 lets a parser limit the nesting depth and the size and range of numbers,
//! and decoders differ in where they stop: Python's `json` raises `RecursionError` near a
//! depth of 1,000 and refuses integers of more than 4,300 digits; serde_json stops at 128;
//! a browser at its stack. They also differ on a `\u` escape of a lone UTF-16 surrogate
//! (`"\ud800"`): Python keeps it in the string, strict UTF-8 decoders refuse the whole
//! text. A text that passes [`check`] is read the same way by all of them, so what the
//! server stores and relays can be decoded by every client, and nothing a peer sends
//! reaches a recursive parser in the session layer deeper than it can go.
//!
//! [`check`] is a validating scanner: it accepts exactly the RFC 8259 texts (serde_json's
//! grammar: no comments, no `NaN`, no trailing commas, nothing after the value) that keep
//! the limits. It runs on every inbound frame, so it neither allocates nor recurses: the
//! open containers are the bits of one `u64` (hence [`MAX_DEPTH`] of 64), and string
//! contents, most of a chat body, are skipped eight bytes at a time.

use std::fmt;

/// Deepest nesting of arrays and objects in one inbound text (a frame counts its own
/// object, so a message body may nest 63 deep).
///
/// Replies wrap a stored body in at most three more levels (a `history` reply: the reply
/// object, its `messages` array, the message object), and 64 + 3 stays well under the
/// 128 of serde_json's default limit, the strictest common decoder. Real bodies nest a
/// handful of levels; it is also the width of the bit stack of open containers.
pub const MAX_DEPTH: usize = 64;

/// Longest number token, in characters (sign, digits, point and exponent included).
///
/// An `f64` needs at most 24 characters and an `i64` 20; 100 leaves room for decimals
/// written with more precision than a double holds, and is far below Python's limit of
/// 4,300 digits for an integer (past which its `json` refuses the whole text).
pub const MAX_NUMBER_CHARS: usize = 100;

/// Why [`check`] refused a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not RFC 8259 JSON at all.
    NotJson,
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A number token longer than [`MAX_NUMBER_CHARS`].
    NumberTooLong,
    /// A number whose value is too large for a 64-bit float (`1e400`): decoders would
    /// read it as infinity, or refuse the text.
    NumberOutOfRange,
    /// A `\u` escape of a UTF-16 surrogate that is not half of a high-low pair.
    LoneSurrogate,
}

impl Refusal {
    /// The reason, as told to the peer (the limits are spelled out, see the tests).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotJson => "not JSON",
            Refusal::TooDeep => "JSON nested deeper than 64 levels of arrays and objects",
            Refusal::NumberTooLong => "a JSON number longer than 100 characters",
            Refusal::NumberOutOfRange => "a JSON number out of the range of a 64-bit float",
            Refusal::LoneSurrogate => {
                "a \\u escape of a lone UTF-16 surrogate (not a character; pairs only)"
            }
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Refusal {}

/// Checks that `text` is one JSON value that keeps the limits of this module.
///
/// Linear in the length of `text`; no allocation. A text with several faults is refused
/// for the first one in text order.
///
/// # Errors
/// The [`Refusal`] naming the first fault.
pub fn check(text: &str) -> Result<(), Refusal> {
    Scanner { text, at: 0 }.value()
}

/// A cursor over the text being checked.
struct Scanner<'a> {
    /// The whole text (ASCII slices of it are parsed as numbers).
    text: &'a str,
    /// The next byte to read.
    at: usize,
}

/// Bytes with every lane set to one: the SWAR constants of [`specials`].
const LANES: u64 = 0x0101_0101_0101_0101;

/// The high bit of every byte of `word` that ends a plain run of string content (`"`,
/// `\` or a control character, which JSON requires escaped). Only the lowest set bit is
/// exact (a borrow may set bits above it), which is all [`Scanner::string`] uses.
fn specials(word: u64) -> u64 {
    let control = word.wrapping_sub(LANES * 0x20) & !word;
    let q = word ^ (LANES * u64::from(b'"'));
    let quote = q.wrapping_sub(LANES) & !q;
    let b = word ^ (LANES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(LANES) & !b;
    (control | quote | backslash) & (LANES << 7)
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let hit = self.peek() == Some(byte);
        self.at += usize::from(hit);
        hit
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// The whole text: one value, whitespace around it. Containers are walked without
    /// recursion; bit `d - 1` of `objects` tells whether the container at depth `d` is
    /// an object.
    fn value(&mut self) -> Result<(), Refusal> {
        let mut objects: u64 = 0;
        let mut depth: usize = 0;
        'value: loop {
            self.skip_whitespace();
            let Some(byte) = self.peek() else {
                return Err(Refusal::NotJson);
            };
            match byte {
                b'{' | b'[' => {
                    if depth == MAX_DEPTH {
                        return Err(Refusal::TooDeep);
                    }
                    self.at += 1;
                    depth += 1;
                    let bit = 1u64 << (depth - 1);
                    self.skip_whitespace();
                    if byte == b'{' {
                        objects |= bit;
                        if !self.eat(b'}') {
                            self.key()?;
                            continue 'value;
                        }
                    } else {
                        objects &= !bit;
                        if !self.eat(b']') {
                            continue 'value;
                        }
                    }
                    depth -= 1; // `{}` or `[]`: a complete value
                }
                b'"' => {
                    self.at += 1;
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal("true")?,
                b'f' => self.literal("false")?,
                b'n' => self.literal("null")?,
                _ => return Err(Refusal::NotJson),
            }
            // After a complete value: close containers until one expects another value.
            loop {
                self.skip_whitespace();
                if depth == 0 {
                    return if self.at == self.text.len() {
                        Ok(())
                    } else {
                        Err(Refusal::NotJson)
                    };
                }
                let in_object = objects >> (depth - 1) & 1 == 1;
                match self.peek() {
                    Some(b',') => {
                        self.at += 1;
                        if in_object {
                            self.skip_whitespace();
                            self.key()?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if in_object => self.at += 1,
                    Some(b']') if !in_object => self.at += 1,
                    _ => return Err(Refusal::NotJson),
                }
                depth -= 1;
            }
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Result<(), Refusal> {
        if !self.eat(b'"') {
            return Err(Refusal::NotJson);
        }
        self.string()?;
        self.skip_whitespace();
        if self.eat(b':') {
            Ok(())
        } else {
            Err(Refusal::NotJson)
        }
    }

    /// The rest of a string, after its opening quote.
    fn string(&mut self) -> Result<(), Refusal> {
        let bytes = self.text.as_bytes();
        loop {
            // Plain content eight bytes at a time (the text is UTF-8 already: bytes of
            // multi-byte characters are plain content).
            while let Some(chunk) = bytes.get(self.at..self.at + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let found = specials(u64::from_le_bytes(word));
                if found != 0 {
                    self.at += (found.trailing_zeros() / 8) as usize;
                    break;
                }
                self.at += 8;
            }
            let Some(&byte) = bytes.get(self.at) else {
                return Err(Refusal::NotJson);
            };
            self.at += 1;
            match byte {
                b'"' => return Ok(()),
                b'\\' => self.escape()?,
                0..=0x1f => return Err(Refusal::NotJson),
                _ => {}
            }
        }
    }

    /// An escape, after its backslash.
    fn escape(&mut self) -> Result<(), Refusal> {
        let Some(byte) = self.peek() else {
            return Err(Refusal::NotJson);
        };
        self.at += 1;
        match byte {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => {
                let unit = self.hex4(self.at).ok_or(Refusal::NotJson)?;
                self.at += 4;
                match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed at once by `\u` and a low one.
                        let bytes = self.text.as_bytes();
                        let pair = bytes.get(self.at..self.at + 2) == Some(b"\\u")
                            && self
                                .hex4(self.at + 2)
                                .is_some_and(|low| (0xDC00..=0xDFFF).contains(&low));
                        if !pair {
                            return Err(Refusal::LoneSurrogate);
                        }
                        self.at += 6;
                        Ok(())
                    }
                    0xDC00..=0xDFFF => Err(Refusal::LoneSurrogate),
                    _ => Ok(()),
                }
            }
            _ => Err(Refusal::NotJson),
        }
    }

    /// The four hex digits at `at`, as a UTF-16 code unit.
    fn hex4(&self, at: usize) -> Option<u16> {
        let digits = self.text.as_bytes().get(at..at + 4)?;
        digits.iter().try_fold(0u16, |unit, &d| {
            let v = (d as char).to_digit(16)?;
            Some(unit << 4 | v as u16)
        })
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    /// A number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Result<(), Refusal> {
        let start = self.at;
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Refusal::NotJson),
        }
        if self.eat(b'.') && self.digits() == 0 {
            return Err(Refusal::NotJson);
        }
        let exponent = matches!(self.peek(), Some(b'e' | b'E'));
        if exponent {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(Refusal::NotJson);
            }
        }
        if self.at - start > MAX_NUMBER_CHARS {
            return Err(Refusal::NumberTooLong);
        }
        // Without an exponent, 100 characters are at most 1e100: always finite. With
        // one, a correctly rounded parse (as Python's and browsers' are) decides.
        if exponent
            && !self.text[start..self.at]
                .parse::<f64>()
                .is_ok_and(f64::is_finite)
        {
            return Err(Refusal::NumberOutOfRange);
        }
        Ok(())
    }

    fn literal(&mut self, word: &str) -> Result<(), Refusal> {
        if self.text.as_bytes()[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(())
        } else {
            Err(Refusal::NotJson)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize, open: char, close: char) -> String {
        let mut s: String = std::iter::repeat_n(open, depth).collect();
        s.extend(std::iter::repeat_n(close, depth));
        s
    }

    #[test]
    fn accepts_json() {
        for text in [
            "0",
            "-0",
            " 1.5e-3 ",
            "-12.0E+2",
            "1E4",
            "1e-400",
            "1.7976931348623157e308",
            "true",
            "false",
            "null",
            "\"\"",
            "\"a\\\"b\\\\c\\/\\b\\f\\n\\r\\t\\u00e9\\u0000\"",
            "\"\\ud83d\\ude00 caf\u{e9} \u{1F600}\"",
            "[]",
            "{}",
            "[1,[2,[3]],{\"a\":{\"b\":[]}}]",
            "\r\n\t{ \"k\" : [ 1 , 2 ] , \"l\" : { } }\n",
            "\"0123456789abcdef0123456789abcdef\\u1234 long enough for the word loop\"",
        ] {
            assert_eq!(check(text), Ok(()), "{text:?}");
            assert!(
                serde_json::from_str::<serde_json::Value>(text).is_ok(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_json() {
        for text in [
            "",
            " ",
            "\u{feff}1",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "-",
            "NaN",
            "Infinity",
            "-Infinity",
            "tru",
            "nul",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\"}",
            "[1 2]",
            "[1}",
            "{\"a\":1]",
            "[[]",
            "[]]",
            "1 2",
            "\"abc",
            "\"a\u{1}b\"",
            "\"tab\there\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "'a'",
            "[1,2] // comment",
        ] {
            assert_eq!(check(text), Err(Refusal::NotJson), "{text:?}");
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(text).is_err(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn depth_limit() {
        assert_eq!(check(&nested(MAX_DEPTH, '[', ']')), Ok(()));
        assert_eq!(
            check(&nested(MAX_DEPTH + 1, '[', ']')),
            Err(Refusal::TooDeep)
        );
        let objects = "{\"a\":".repeat(MAX_DEPTH) + "1" + &"}".repeat(MAX_DEPTH);
        assert_eq!(check(&objects), Ok(()));
        let deeper = "{\"a\":".repeat(MAX_DEPTH) + "[]" + &"}".repeat(MAX_DEPTH);
        assert_eq!(check(&deeper), Err(Refusal::TooDeep));
        // Refused when the limit is passed, before the (broken) rest is read.
        assert_eq!(check(&"[".repeat(100_000)), Err(Refusal::TooDeep));
        // Mixed containers at every depth keep their kinds apart.
        let mixed = "[{\"a\":".repeat(MAX_DEPTH / 2) + "0" + &"}]".repeat(MAX_DEPTH / 2);
        assert_eq!(check(&mixed), Ok(()));
        let wrong = "[{\"a\":".repeat(MAX_DEPTH / 2) + "0" + &"]}".repeat(MAX_DEPTH / 2);
        assert_eq!(check(&wrong), Err(Refusal::NotJson));
    }

    #[test]
    fn number_limits() {
        let longest = "9".repeat(MAX_NUMBER_CHARS);
        assert_eq!(check(&longest), Ok(()));
        assert_eq!(check(&format!("-{}", &longest[1..])), Ok(()));
        assert_eq!(check(&format!("{longest}1")), Err(Refusal::NumberTooLong));
        assert_eq!(
            check(&format!("[\"x\",{}]", "1".repeat(5_000))),
            Err(Refusal::NumberTooLong)
        );
        assert_eq!(
            check(&format!("0.{}", "1".repeat(MAX_NUMBER_CHARS))),
            Err(Refusal::NumberTooLong)
        );
        for out in ["1e400", "-1e309", "1.8e308", "[0, 10E+308]"] {
            assert_eq!(check(out), Err(Refusal::NumberOutOfRange), "{out}");
        }
        for fine in ["1e308", "1e-99999", "0e99999", "-1.7976931348623157E+308"] {
            assert_eq!(check(fine), Ok(()), "{fine}");
        }
    }

    #[test]
    fn surrogates_only_in_pairs() {
        assert_eq!(check("\"\\ud800\\udc00\""), Ok(()));
        assert_eq!(check("\"\\uDBFF\\uDFFF\""), Ok(()));
        for lone in [
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800x\"",
            "\"\\ud800\\u0041\"",
            "\"\\ud800\\ud800\\udc00\"",
            "\"\\udc00\\ud800\"",
            "{\"\\ud800\":1}",
            "\"\\ud800\\",
        ] {
            assert_eq!(check(lone), Err(Refusal::LoneSurrogate), "{lone}");
        }
    }

    #[test]
    fn first_fault_in_text_order() {
        assert_eq!(
            check(&format!("[\"\\ud800\",{}]", "1".repeat(200))),
            Err(Refusal::LoneSurrogate)
        );
        assert_eq!(
            check(&format!("[{},\"\\ud800\"]", "1".repeat(200))),
            Err(Refusal::NumberTooLong)
        );
        assert_eq!(check("[1e999, x]"), Err(Refusal::NumberOutOfRange));
    }

    #[test]
    fn messages_name_the_limits() {
        assert!(Refusal::TooDeep.message().contains(&MAX_DEPTH.to_string()));
        assert!(Refusal::NumberTooLong
            .message()
            .contains(&MAX_NUMBER_CHARS.to_string()));
    }

    #[test]
    fn word_loop_finds_the_first_special_byte() {
        // Every position of a quote, a backslash and a control byte within a word, after
        // plain bytes of every kind (ASCII, multi-byte UTF-8).
        for filler in ["a", "\u{e9}", "\u{1F600}", "~"] {
            for n in 0..20 {
                let body = filler.repeat(n);
                assert_eq!(check(&format!("\"{body}\"")), Ok(()));
                assert_eq!(check(&format!("\"{body}\\n{body}\"")), Ok(()));
                assert_eq!(
                    check(&format!("\"{body}\u{1f}{body}\"")),
                    Err(Refusal::NotJson)
                );
                assert_eq!(check(&format!("\"{body}")), Err(Refusal::NotJson));
            }
        }
    }

    #[test]
    fn specials_is_exact_at_its_lowest_bit() {
        for special in [b'"', b'\\', 0, 0x1f] {
            for plain in [b' ', b'a', 0x7f, 0x80, 0xff, b'!', b'#', b'[', b']'] {
                for at in 0..8 {
                    let mut word = [plain; 8];
                    word[at] = special;
                    let found = specials(u64::from_le_bytes(word));
                    assert_eq!(found.trailing_zeros() / 8, at as u32);
                }
                assert_eq!(specials(u64::from_le_bytes([plain; 8])), 0, "{plain}");
            }
        }
    }
}
