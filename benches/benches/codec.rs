//! WebSocket codec cost in the core: decoding masked client text frames (unmask, UTF-8
//! check, one copy into the message) fed as a socket would deliver them, and building a
//! server text frame in place with `FrameBuilder`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rushhour_core::codec::{encode_client_frame, Decoder, FrameBuilder, Message, Opcode, Role};

/// Bytes handed to the decoder per feed: a typical socket read.
const READ_SIZE: usize = 64 << 10;

/// Bytes of frames per decode iteration: enough frames to amortise the loop.
const STREAM_BYTES: usize = 1 << 20;

/// Chat-like JSON, mostly ASCII with a two-byte character every 64 bytes or so, exactly
/// `len` bytes. (Text dense in multi-byte characters decodes several times slower: the
/// standard library's UTF-8 check dominates then.)
fn text(len: usize) -> String {
    let mut s = String::with_capacity(len);
    let line = "{\"op\":\"send\",\"room\":\"lobby\",\"body\":\"see you at the café\"}\n";
    for c in line.chars().cycle() {
        if s.len() + c.len_utf8() > len {
            break;
        }
        s.push(c);
    }
    while s.len() < len {
        s.push(' ');
    }
    s
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec/decode_text");
    for size in [128usize, 16 << 10] {
        let payload = text(size);
        let frame = encode_client_frame(Opcode::Text, payload.as_bytes(), [0x37, 0xfa, 0x21, 0x3d]);
        let count = STREAM_BYTES / frame.len();
        let stream = frame.repeat(count);
        group.throughput(Throughput::Bytes(stream.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &stream, |b, stream| {
            let mut decoder = Decoder::new(Role::Server, 1 << 20);
            b.iter(|| {
                let mut n = 0;
                for read in stream.chunks(READ_SIZE) {
                    decoder.feed(read);
                    while let Some(m) = decoder.poll().expect("valid frames") {
                        if let Message::Text(t) = black_box(m) {
                            n += t.len();
                        }
                    }
                }
                assert_eq!(n, count * size);
            });
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let payload = text(128);
    let mut group = c.benchmark_group("codec/encode_text");
    group.throughput(Throughput::Bytes(128));
    group.bench_function("frame_builder/128", |b| {
        b.iter(|| {
            let mut fb = FrameBuilder::new(Opcode::Text, 128);
            fb.buf().extend_from_slice(black_box(payload.as_bytes()));
            fb.finish()
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the numbers are stable well before criterion's defaults on this codec.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = decode, encode
}
criterion_main!(benches);
