//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, the same in both directions.
//!
//! Every byte a client sends passes through here, so it works a `u64` (two key
//! repetitions) at a time rather than byte by byte.

/// XORs `data` with `mask`, where `data` starts `offset` bytes into the frame's payload
/// (a payload that arrives in pieces is unmasked piece by piece).
pub(super) fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = mask;
    key.rotate_left(offset % 4);
    // Byte order does not matter: the key goes in and out in the same (native) order.
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Whole chunks are a multiple of 4 long, so the tail starts at key[0] again.
    for (b, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &mut [u8], mask: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= mask[(offset + i) % 4];
        }
    }

    #[test]
    fn matches_the_byte_by_byte_definition() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let original: Vec<u8> = (0..=255).collect();
        for len in 0..40 {
            for offset in 0..8 {
                let mut fast = original[..len].to_vec();
                let mut slow = fast.clone();
                apply_mask(&mut fast, mask, offset);
                naive(&mut slow, mask, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn masking_in_pieces_equals_masking_at_once() {
        let mask = [1, 2, 3, 4];
        let mut whole = b"Hello, WebSocket frames!".to_vec();
        let mut pieces = whole.clone();
        apply_mask(&mut whole, mask, 0);
        let (a, rest) = pieces.split_at_mut(5);
        let (b, c) = rest.split_at_mut(9);
        apply_mask(a, mask, 0);
        apply_mask(b, mask, 5);
        apply_mask(c, mask, 14);
        assert_eq!(whole, pieces);
    }

    #[test]
    fn rfc_example() {
        // RFC 6455 §5.7: a masked "Hello".
        let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&payload, b"Hello");
    }
}
