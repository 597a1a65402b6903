//! The whole `publish` scenario on loopback, against two tiny servers: a rushhour-like
//! WebSocket server (tokio-tungstenite's server side) that asks for some retries, and a
//! JetStream-like NATS server that speaks just enough of the protocol (INFO, CONNECT,
//! PING, SUB, PUB, HPUB, stream creation, publish acks).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use rushhour_burst::cli::{Cli, Command};
use rushhour_burst::report::PublishReport;
use rushhour_burst::scenario::publish;

/// What a fake server saw.
#[derive(Default)]
struct Seen {
    /// `cid`s (rushhour) or `Nats-Msg-Id`s (NATS), to check they are unique.
    ids: HashSet<String>,
    /// Rooms or subjects published to.
    rooms: HashSet<String>,
    /// Body lengths seen.
    body_lengths: HashSet<usize>,
    /// Publishes stored (first tries of rate-limited sends excluded).
    stored: u64,
    /// Sends refused with `rate_limited`.
    limited: u64,
    /// Stream creation requests (NATS).
    streams: Vec<serde_json::Value>,
    /// `hello`s (rushhour) or `CONNECT`s (NATS).
    sessions: u64,
}

type Shared = Arc<Mutex<Seen>>;

/// Runs `publish` with `extra` flags for a short while; `Err` when it could not start.
async fn run_publish(extra: &[&str]) -> Result<PublishReport, String> {
    let mut argv = vec![
        "rushhour-burst",
        "publish",
        "--connections",
        "3",
        "--inflight",
        "8",
        "--rooms",
        "5",
        "--body-bytes",
        "64",
        "--duration",
        "0.4",
        "--warmup",
        "0.1",
        "--drain-timeout",
        "2",
    ];
    argv.extend_from_slice(extra);
    let Command::Publish(args) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not publish")
    };
    let local = tokio::task::LocalSet::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        local.run_until(publish::run(&args)),
    )
    .await
    .expect("the scenario ends on its own")
}

/// Serves one rushhour connection: `hello`, then `send`s, every 10th first refused
/// with `rate_limited`.
async fn serve_rushhour(stream: TcpStream, seen: Shared) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(Message::Text(text))) = ws.next().await {
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
        let answer = match frame["op"].as_str() {
            Some("hello") => {
                seen.lock().unwrap().sessions += 1;
                r#"{"op":"welcome","session":"s","user":"u","tenant":"t"}"#.to_owned()
            }
            Some("send") => {
                let id = frame["id"].as_u64().unwrap();
                let cid = frame["cid"].as_str().unwrap().to_owned();
                let mut seen = seen.lock().unwrap();
                if id % 10 == 0 && !seen.ids.contains(&format!("limited {cid}")) {
                    seen.ids.insert(format!("limited {cid}"));
                    seen.limited += 1;
                    format!(
                        r#"{{"op":"error","id":{id},"code":"rate_limited","message":"slow down","retry_after_ms":5}}"#
                    )
                } else {
                    assert!(seen.ids.insert(cid), "cids are unique");
                    seen.rooms
                        .insert(frame["room"].as_str().unwrap().to_owned());
                    seen.body_lengths.insert(frame["body"].to_string().len());
                    seen.stored += 1;
                    format!(
                        r#"{{"op":"reply","id":{id},"ok":true,"seq":{},"ts":1,"duplicate":false}}"#,
                        seen.stored
                    )
                }
            }
            _ => return,
        };
        if ws.send(Message::text(answer)).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn publish_against_a_rushhour_like_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let seen = Shared::default();
    let server_seen = Arc::clone(&seen);
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve_rushhour(stream, Arc::clone(&server_seen)));
        }
    });
    let report = run_publish(&["--url", &url]).await.unwrap();
    server.abort();
    let seen = seen.lock().unwrap();
    assert!(report.ok, "{}", report.table());
    assert_eq!(report.target, "rushhour");
    assert_eq!(seen.sessions, 3);
    assert!(report.acked > 0 && report.ack_latency.count == report.acked);
    assert_eq!(
        report.acked_total, seen.stored,
        "every stored send acked once"
    );
    assert_eq!(report.rate_limited, seen.limited);
    assert!(seen.limited > 0, "some retries were asked for");
    assert_eq!(report.sent_total, seen.stored + seen.limited);
    assert_eq!(seen.rooms.len(), 5, "{:?}", seen.rooms);
    assert_eq!(seen.body_lengths, HashSet::from([64]));
    assert!(report.generator_cpu_s >= 0.0 && report.generator_cpu_us_per_ack >= 0.0);
}

/// How the fake NATS server answers a stream creation.
#[derive(Clone, Copy)]
enum Streams {
    Create,
    Refuse,
}

/// Serves one NATS connection.
async fn serve_nats(stream: TcpStream, seen: Shared, streams: Streams) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    write
        .write_all(b"INFO {\"server_id\":\"fake\",\"headers\":true,\"jetstream\":true}\r\n")
        .await
        .unwrap();
    let mut sid = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        let mut out = Vec::new();
        match parts.first().copied() {
            Some("CONNECT") => seen.lock().unwrap().sessions += 1,
            Some("PING") => out.extend_from_slice(b"PONG\r\n"),
            Some("SUB") => sid = parts[2].to_owned(),
            Some(verb @ ("PUB" | "HPUB")) => {
                let total: usize = parts.last().unwrap().parse().unwrap();
                let headers: usize = if verb == "HPUB" {
                    parts[parts.len() - 2].parse().unwrap()
                } else {
                    0
                };
                let mut payload = vec![0u8; total + 2];
                read.read_exact(&mut payload).await.unwrap();
                assert_eq!(&payload[total..], b"\r\n");
                let (head, body) = payload[..total].split_at(headers);
                let (subject, reply) = (parts[1], parts[2]);
                let answer = if let Some(name) = subject.strip_prefix("$JS.API.STREAM.CREATE.") {
                    let config: serde_json::Value = serde_json::from_slice(body).unwrap();
                    assert_eq!(config["name"], name);
                    seen.lock().unwrap().streams.push(config.clone());
                    match streams {
                        Streams::Create => serde_json::json!({"type": "io.nats.jetstream.api.v1.stream_create_response", "config": config}),
                        Streams::Refuse => serde_json::json!({"error": {"code": 400, "err_code": 10058, "description": "stream name already in use"}}),
                    }
                    .to_string()
                } else {
                    let mut seen = seen.lock().unwrap();
                    assert!(subject.starts_with("bench."), "{subject}");
                    if verb == "HPUB" {
                        let head = String::from_utf8(head.to_vec()).unwrap();
                        let id = head
                            .lines()
                            .find_map(|l| l.strip_prefix("Nats-Msg-Id: "))
                            .expect("a message id")
                            .to_owned();
                        assert!(seen.ids.insert(id), "message ids are unique");
                    }
                    seen.rooms.insert(subject.to_owned());
                    seen.body_lengths.insert(body.len());
                    seen.stored += 1;
                    format!(r#"{{"stream":"BENCH","seq":{}}}"#, seen.stored)
                };
                out.extend_from_slice(
                    format!("MSG {reply} {sid} {}\r\n{answer}\r\n", answer.len()).as_bytes(),
                );
            }
            _ => panic!("unexpected line {line:?}"),
        }
        if !out.is_empty() && write.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// Starts a fake NATS server; returns its URL and what it sees.
async fn fake_nats(streams: Streams) -> (String, Shared, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("nats://{}", listener.local_addr().unwrap());
    let seen = Shared::default();
    let server_seen = Arc::clone(&seen);
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve_nats(stream, Arc::clone(&server_seen), streams));
        }
    });
    (url, seen, server)
}

#[tokio::test]
async fn publish_against_a_jetstream_like_server() {
    let (url, seen, server) = fake_nats(Streams::Create).await;
    let report = run_publish(&["--target", "nats", "--url", &url, "--msg-id"])
        .await
        .unwrap();
    server.abort();
    let seen = seen.lock().unwrap();
    assert!(report.ok, "{}", report.table());
    assert_eq!(report.target, "nats");
    assert!(report.msg_id);
    assert_eq!(
        seen.sessions, 4,
        "the set-up connection and three publishers"
    );
    assert_eq!(seen.streams.len(), 1);
    assert_eq!(seen.streams[0]["subjects"], serde_json::json!(["bench.*"]));
    assert_eq!(seen.streams[0]["storage"], "file");
    assert_eq!(report.stream.as_ref().unwrap()["name"], "BENCH");
    assert!(report.acked > 0 && report.ack_latency.count == report.acked);
    assert_eq!(report.acked_total, seen.stored);
    assert_eq!(report.sent_total, seen.stored);
    assert_eq!(seen.rooms.len(), 5, "{:?}", seen.rooms);
    assert_eq!(seen.body_lengths, HashSet::from([64]));
}

#[tokio::test]
async fn a_refused_stream_stops_the_run() {
    let (url, _seen, server) = fake_nats(Streams::Refuse).await;
    let err = run_publish(&["--target", "nats", "--url", &url])
        .await
        .unwrap_err();
    server.abort();
    assert!(err.contains("stream name already in use"), "{err}");
    let err = run_publish(&["--target", "nats", "--url", "ws://127.0.0.1:9/ws"])
        .await
        .unwrap_err();
    assert!(err.contains("nats://"), "{err}");
}
