//! Property tests of the WebSocket codec: round trips through arbitrary fragmentation and
//! chunking, and arbitrary bytes never panic or grow the buffer past its bound.

use proptest::prelude::*;
use rushhour_core::codec::{
    encode_client_frame, encode_frame, Decoder, FrameBuilder, Message, Opcode, Role,
};

const MAX: usize = 64 << 10;

#[derive(Clone, Debug)]
enum Sent {
    Text(String, usize),
    Binary(Vec<u8>, usize),
    Ping(Vec<u8>),
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        (any::<String>(), 1usize..5).prop_map(|(s, n)| Sent::Text(s, n)),
        (proptest::collection::vec(any::<u8>(), 0..3000), 1usize..5)
            .prop_map(|(b, n)| Sent::Binary(b, n)),
        proptest::collection::vec(any::<u8>(), 0..125).prop_map(Sent::Ping),
    ]
}

/// Splits `payload` into `parts` fragments (cutting anywhere, even inside a code point).
fn fragments(opcode: Opcode, payload: &[u8], parts: usize, mask: [u8; 4]) -> Vec<u8> {
    let step = payload.len().div_ceil(parts).max(1);
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[][..]]
    } else {
        payload.chunks(step).collect()
    };
    let mut out = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let op = if i == 0 { opcode } else { Opcode::Continuation };
        let mut frame = encode_client_frame(op, chunk, mask);
        if i + 1 < chunks.len() {
            frame[0] &= 0x7f; // not final
        }
        out.extend(frame);
    }
    out
}

fn decode_all(decoder: &mut Decoder, bytes: &[u8], chunk: usize) -> Vec<Message> {
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        decoder.feed(piece);
        while let Some(m) = decoder.poll().expect("valid stream") {
            out.push(m);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn client_frames_round_trip(messages in proptest::collection::vec(sent(), 1..12), chunk in 1usize..700, mask in any::<[u8; 4]>()) {
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for m in &messages {
            match m {
                Sent::Text(s, parts) => {
                    bytes.extend(fragments(Opcode::Text, s.as_bytes(), *parts, mask));
                    expected.push(Message::Text(s.clone()));
                }
                Sent::Binary(b, parts) => {
                    bytes.extend(fragments(Opcode::Binary, b, *parts, mask));
                    expected.push(Message::Binary(b.clone()));
                }
                Sent::Ping(p) => {
                    bytes.extend(encode_client_frame(Opcode::Ping, p, mask));
                    expected.push(Message::Ping(p.clone()));
                }
            }
        }
        let mut decoder = Decoder::new(Role::Server, MAX);
        prop_assert_eq!(decode_all(&mut decoder, &bytes, chunk), expected);
        prop_assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn server_frames_decode_as_a_client(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..70_000), 1..4)) {
        let mut bytes = Vec::new();
        for (i, p) in payloads.iter().enumerate() {
            if i % 2 == 0 {
                bytes.extend_from_slice(&encode_frame(Opcode::Binary, p));
            } else {
                let mut fb = FrameBuilder::new(Opcode::Binary, p.len());
                fb.buf().extend_from_slice(p);
                bytes.extend_from_slice(&fb.finish());
            }
        }
        let mut decoder = Decoder::new(Role::Client, 1 << 20);
        let got = decode_all(&mut decoder, &bytes, 4096);
        let expected: Vec<Message> = payloads.into_iter().map(Message::Binary).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(data in proptest::collection::vec(any::<u8>(), 0..20_000), chunk in 1usize..2048) {
        let mut decoder = Decoder::new(Role::Server, 4096);
        for piece in data.chunks(chunk) {
            decoder.feed(piece);
            loop {
                match decoder.poll() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => {
                        prop_assert!([1002, 1007, 1009].contains(&e.code));
                        prop_assert_eq!(decoder.poll(), Err(e));
                        return Ok(());
                    }
                }
            }
            prop_assert!(decoder.buffered() <= 4096 + 14 + chunk);
        }
    }
}
