//! The close frame's payload (RFC 6455 §5.5.1): empty, or a 2-byte code and a UTF-8
//! reason.

use super::{is_valid_close_code, ProtocolError};

/// The code and reason of a received close frame; `None` for an empty payload.
///
/// # Errors
/// 1002 for a 1-byte payload or a code not allowed on the wire, 1007 for a reason that
/// is not UTF-8.
pub(super) fn parse_close(payload: &[u8]) -> Result<Option<(u16, String)>, ProtocolError> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(ProtocolError::protocol("close payload of one byte")),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    if !is_valid_close_code(code) {
        return Err(ProtocolError::protocol("invalid close code"));
    }
    let reason = std::str::from_utf8(reason)
        .map_err(|_| ProtocolError::invalid_utf8("invalid utf-8 in close reason"))?;
    Ok(Some((code, reason.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason);
        p
    }

    #[test]
    fn empty_payload_has_no_code() {
        assert_eq!(parse_close(b""), Ok(None));
    }

    #[test]
    fn code_and_reason() {
        assert_eq!(
            parse_close(&payload(1000, b"")),
            Ok(Some((1000, String::new())))
        );
        assert_eq!(
            parse_close(&payload(4009, "remplacé".as_bytes())),
            Ok(Some((4009, "remplacé".to_owned())))
        );
    }

    #[test]
    fn one_byte_is_a_protocol_error() {
        assert_eq!(parse_close(&[0x03]).unwrap_err().code, 1002);
    }

    #[test]
    fn codes_not_allowed_on_the_wire_are_protocol_errors() {
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert_eq!(
                parse_close(&payload(code, b"")).unwrap_err().code,
                1002,
                "{code}"
            );
        }
    }

    #[test]
    fn a_reason_that_is_not_utf8_is_invalid_payload() {
        let err = parse_close(&payload(1000, b"\xce\xba\xff")).unwrap_err();
        assert_eq!(err.code, 1007);
        // A cut-short code point at the end is just as invalid: the reason is complete.
        assert_eq!(
            parse_close(&payload(1000, b"ok\xe2\x82")).unwrap_err().code,
            1007
        );
    }
}
