//! A data message assembled from the pieces of its frames as they arrive: unmasked in
//! place, and UTF-8 checked as it grows when it is text.

use super::decode::Message;
use super::mask::apply_mask;
use super::utf8::Utf8Check;
use super::ProtocolError;

/// A text or binary message whose final byte has not arrived yet.
#[derive(Debug)]
pub(super) struct Partial {
    /// Text is UTF-8 checked as it arrives; binary is not.
    text: bool,
    /// The unmasked payload so far, across fragments.
    bytes: Vec<u8>,
    /// How much of `bytes` is known to be valid UTF-8.
    utf8: Utf8Check,
}

impl Partial {
    /// An empty message. `capacity` is what has arrived, not what the header promises:
    /// 14 bytes of header must not make us allocate a megabyte.
    pub(super) fn new(text: bool, capacity: usize) -> Self {
        Partial {
            text,
            bytes: Vec::with_capacity(capacity),
            utf8: Utf8Check::default(),
        }
    }

    /// Payload bytes so far, for the size limit.
    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends `piece`, which starts `offset` bytes into its frame's payload; `last` when
    /// it completes the message.
    ///
    /// # Errors
    /// 1007 as soon as text cannot be the start of valid UTF-8.
    pub(super) fn append(
        &mut self,
        piece: &[u8],
        mask: Option<[u8; 4]>,
        offset: usize,
        last: bool,
    ) -> Result<(), ProtocolError> {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(piece);
        if let Some(mask) = mask {
            apply_mask(&mut self.bytes[start..], mask, offset);
        }
        // The last piece is checked by `finish`, so a one-piece message is checked once.
        if self.text && !last {
            self.utf8.advance(&self.bytes)?;
        }
        Ok(())
    }

    /// The complete message.
    ///
    /// # Errors
    /// 1007 for text that is not UTF-8, including text ending inside a code point.
    pub(super) fn finish(self) -> Result<Message, ProtocolError> {
        if !self.text {
            return Ok(Message::Binary(self.bytes));
        }
        String::from_utf8(self.bytes)
            .map(Message::Text)
            .map_err(|_| ProtocolError::invalid_utf8("invalid utf-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Assembles `pieces` (unmasked) into a text message.
    fn text(pieces: &[&[u8]]) -> Result<Message, ProtocolError> {
        let mut m = Partial::new(true, 0);
        for (i, p) in pieces.iter().enumerate() {
            m.append(p, None, 0, i + 1 == pieces.len())?;
        }
        m.finish()
    }

    #[test]
    fn text_with_code_points_split_across_pieces() {
        let pieces: &[&[u8]] = &[b"caf\xc3", b"\xa9 \xe2\x82", b"", b"\xac"];
        assert_eq!(text(pieces), Ok(Message::Text("café €".to_owned())));
    }

    #[test]
    fn invalid_text_fails_in_the_piece_that_breaks_it() {
        let mut m = Partial::new(true, 0);
        m.append(b"ok \xf4", None, 0, false).unwrap();
        assert_eq!(m.append(b"\x90", None, 4, false).unwrap_err().code, 1007);
    }

    #[test]
    fn text_ending_inside_a_code_point_is_invalid() {
        assert_eq!(text(&[b"ok", b"\xe2\x82"]).unwrap_err().code, 1007);
        assert_eq!(text(&[b"\xff"]).unwrap_err().code, 1007);
    }

    #[test]
    fn pieces_are_unmasked_at_their_offset() {
        let mask = [1, 2, 3, 4];
        let mut wire = b"binary payload".to_vec();
        apply_mask(&mut wire, mask, 0);
        let mut m = Partial::new(false, 0);
        m.append(&wire[..3], Some(mask), 0, false).unwrap();
        m.append(&wire[3..], Some(mask), 3, true).unwrap();
        assert_eq!(m.len(), 14);
        assert_eq!(m.finish(), Ok(Message::Binary(b"binary payload".to_vec())));
    }
}
