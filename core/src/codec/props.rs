//! Property tests of the codec as a whole: round trips through random fragmentation,
//! masks and read sizes, in both roles, and arbitrary input that must never panic or
//! grow the buffer.

use proptest::collection::vec;
use proptest::prelude::*;

use super::{
    encode_client_frame, encode_close, encode_frame, Decoder, FrameBuilder, Message, Opcode,
    ProtocolError, Role,
};

/// The longest frame header: 2 bytes, a 64-bit length and a mask key.
const MAX_HEADER: usize = 14;

/// What a client sends: a data message cut into fragments, or a control frame.
#[derive(Clone, Debug)]
enum Sent {
    /// A text or binary message, its first mask, and one entry per cut: where (as a
    /// fraction of the length), the next fragment's mask, and a ping sent before it.
    Data(
        Opcode,
        Vec<u8>,
        [u8; 4],
        Vec<(u16, [u8; 4], Option<Vec<u8>>)>,
    ),
    /// A ping or pong.
    Control(Opcode, Vec<u8>, [u8; 4]),
}

fn unicode(max_chars: usize) -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..max_chars).prop_map(String::from_iter)
}

fn control_payload() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=125)
}

fn cuts() -> impl Strategy<Value = Vec<(u16, [u8; 4], Option<Vec<u8>>)>> {
    vec(
        (
            any::<u16>(),
            any::<[u8; 4]>(),
            proptest::option::of(control_payload()),
        ),
        0..5,
    )
}

fn sent() -> impl Strategy<Value = Sent> {
    prop_oneof![
        (unicode(400), any::<[u8; 4]>(), cuts()).prop_map(|(s, m, c)| Sent::Data(
            Opcode::Text,
            s.into_bytes(),
            m,
            c
        )),
        (vec(any::<u8>(), 0..2000), any::<[u8; 4]>(), cuts()).prop_map(|(b, m, c)| Sent::Data(
            Opcode::Binary,
            b,
            m,
            c
        )),
        (control_payload(), any::<[u8; 4]>()).prop_map(|(p, m)| Sent::Control(Opcode::Ping, p, m)),
        (control_payload(), any::<[u8; 4]>()).prop_map(|(p, m)| Sent::Control(Opcode::Pong, p, m)),
    ]
}

/// A masked client frame with FIN as given.
fn client_frame(opcode: Opcode, payload: &[u8], mask: [u8; 4], fin: bool) -> Vec<u8> {
    let mut f = encode_client_frame(opcode, payload, mask);
    if !fin {
        f[0] &= 0x7f;
    }
    f
}

/// The wire bytes for `sent`, and the messages a server must decode from them.
fn encode(sent: &[Sent]) -> (Vec<u8>, Vec<Message>) {
    let (mut wire, mut expected) = (Vec::new(), Vec::new());
    for s in sent {
        match s {
            Sent::Control(op, payload, mask) => {
                wire.extend(client_frame(*op, payload, *mask, true));
                expected.push(match op {
                    Opcode::Ping => Message::Ping(payload.clone()),
                    _ => Message::Pong(payload.clone()),
                });
            }
            Sent::Data(op, payload, first_mask, cuts) => {
                let mut at: Vec<usize> = cuts
                    .iter()
                    .map(|c| usize::from(c.0) * payload.len() / usize::from(u16::MAX))
                    .collect();
                at.sort_unstable(); // duplicates make empty fragments, which are legal
                let (mut start, mut opcode, mut mask) = (0, *op, *first_mask);
                for (end, (_, next_mask, ping)) in at.iter().zip(cuts) {
                    wire.extend(client_frame(opcode, &payload[start..*end], mask, false));
                    if let Some(p) = ping {
                        wire.extend(client_frame(Opcode::Ping, p, mask, true));
                        expected.push(Message::Ping(p.clone()));
                    }
                    (start, opcode, mask) = (*end, Opcode::Continuation, *next_mask);
                }
                wire.extend(client_frame(opcode, &payload[start..], mask, true));
                expected.push(match op {
                    Opcode::Text => Message::Text(String::from_utf8(payload.clone()).unwrap()),
                    _ => Message::Binary(payload.clone()),
                });
            }
        }
    }
    (wire, expected)
}

/// Feeds `wire` in pieces of the given sizes (cycled), polling after each until it needs
/// more, and checks that payloads never pile up in the input buffer.
fn decode(d: &mut Decoder, wire: &[u8], sizes: &[usize]) -> Result<Vec<Message>, ProtocolError> {
    let mut out = Vec::new();
    let (mut at, mut sizes) = (0, sizes.iter().cycle());
    while at < wire.len() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, wire.len() - at);
        d.feed(&wire[at..at + n]);
        at += n;
        while let Some(m) = d.poll()? {
            out.push(m);
        }
        assert!(d.buffered() < MAX_HEADER + 125, "{} buffered", d.buffered());
    }
    Ok(out)
}

/// The longest prefix of `s` that fits in a close frame, cut at a char boundary.
fn close_reason(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > 123 {
            break;
        }
        out.push(c);
    }
    out
}

/// A frame with a random first byte and a masked header, so arbitrary input reaches the
/// rules past the first two bytes far more often than uniform noise does.
fn rough_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        any::<bool>(),
        vec(any::<u8>(), 0..300),
        any::<[u8; 4]>(),
    )
        .prop_map(|(b0, fin, payload, mask)| {
            let plausible = [0x01, 0x02, 0x00, 0x08, 0x09, 0x0a][usize::from(b0 % 6)];
            let bits = match b0 >> 5 {
                0 => b0 & 0x7f, // any opcode, any reserved bits
                1 => b0 & 0x0f, // any opcode
                _ => plausible,
            };
            let mut f = client_frame(Opcode::Binary, &payload, mask, fin);
            f[0] = (f[0] & 0x80) | bits;
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn client_messages_round_trip(
        sent in vec(sent(), 1..10),
        sizes in vec(1usize..600, 1..8),
    ) {
        let (wire, expected) = encode(&sent);
        let mut d = Decoder::new(Role::Server, 1 << 20);
        prop_assert_eq!(decode(&mut d, &wire, &sizes).unwrap(), expected);
        prop_assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn server_frames_decode_as_a_client(
        frames in vec((0u8..5, unicode(100), prop_oneof![
            3 => vec(any::<u8>(), 0..300),
            1 => vec(any::<u8>(), 65_530..65_540),
        ], any::<bool>(), 1usize..50), 1..6),
        sizes in vec(1usize..5000, 1..4),
    ) {
        let (mut wire, mut expected) = (Vec::new(), Vec::new());
        for (kind, text, bytes, builder, piece) in frames {
            let (opcode, payload, message) = match kind {
                0 => (Opcode::Text, text.clone().into_bytes(), Message::Text(text)),
                1 => (Opcode::Binary, bytes.clone(), Message::Binary(bytes)),
                2 => (Opcode::Ping, bytes[..bytes.len().min(125)].to_vec(),
                      Message::Ping(bytes[..bytes.len().min(125)].to_vec())),
                3 => (Opcode::Pong, vec![], Message::Pong(vec![])),
                _ => {
                    let code = [1000, 1001, 1011, 4001, 4009][bytes.len() % 5];
                    wire.extend_from_slice(&encode_close(code, &text));
                    expected.push(Message::Close(Some((code, close_reason(&text)))));
                    continue;
                }
            };
            if builder {
                let mut fb = FrameBuilder::new(opcode, piece);
                for p in payload.chunks(piece) {
                    fb.buf().extend_from_slice(p);
                }
                prop_assert_eq!(fb.payload_len(), payload.len());
                let f = fb.finish();
                prop_assert_eq!(&f[FrameBuilder::header_len(payload.len())..], &payload[..]);
                wire.extend_from_slice(&f);
            } else {
                wire.extend_from_slice(&encode_frame(opcode, &payload));
            }
            expected.push(message);
        }
        let mut d = Decoder::new(Role::Client, 1 << 20);
        prop_assert_eq!(decode(&mut d, &wire, &sizes).unwrap(), expected);
    }

    #[test]
    fn arbitrary_input_never_panics_and_stays_bounded(
        noise in prop_oneof![
            vec(any::<u8>(), 0..4000),
            vec(rough_frame(), 0..20).prop_map(|fs| fs.concat()),
        ],
        sizes in vec(1usize..700, 1..6),
        max in prop_oneof![Just(1usize << 20), 0usize..400],
    ) {
        let mut d = Decoder::new(Role::Server, max);
        let (mut at, mut sizes) = (0, sizes.iter().cycle());
        while at < noise.len() {
            let n = (*sizes.next().unwrap()).min(noise.len() - at);
            d.feed(&noise[at..at + n]);
            at += n;
            prop_assert!(d.buffered() <= max + MAX_HEADER + n);
            loop {
                match d.poll() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        prop_assert!([1002, 1007, 1009].contains(&e.code), "{:?}", e);
                        d.feed(&noise[at..]);
                        prop_assert_eq!(d.poll(), Err(e));
                        prop_assert_eq!(d.buffered(), 0);
                        return Ok(());
                    }
                }
            }
            prop_assert!(d.buffered() < MAX_HEADER + 125usize.min(max));
        }
    }
}
