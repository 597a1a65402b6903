//! The whole `fanout` scenario against a tiny broadcast server on loopback, built on
//! tokio-tungstenite's server side: connections, tokens, the publisher's window, the
//! order check and the report, end to end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use rushhour_burst::cli::{Cli, Command};
use rushhour_burst::scenario::fanout;

/// The room's state: the last seq, and the channel every subscriber listens on. The
/// mutex makes "take a seq, broadcast" one step, so that seqs go out in order.
struct Room {
    seq: Mutex<u64>,
    out: broadcast::Sender<(u64, String)>,
    hellos: AtomicU64,
    /// A seq never delivered, to see the order check catch the gap.
    lose: Option<u64>,
}

impl Room {
    fn new(lose: Option<u64>) -> Arc<Self> {
        Arc::new(Self {
            seq: Mutex::new(0),
            out: broadcast::channel(1 << 16).0,
            hellos: AtomicU64::new(0),
            lose,
        })
    }
}

/// Serves one connection: hello, subscribe, send, as the protocol has them.
async fn serve(stream: tokio::net::TcpStream, room: Arc<Room>) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let mut rx = room.out.subscribe();
    let mut subscribed = false;
    loop {
        tokio::select! {
            incoming = ws.next() => {
                let Some(Ok(Message::Text(text))) = incoming else { return };
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                let answer = match frame["op"].as_str() {
                    Some("hello") => {
                        assert!(frame["token"].as_str().unwrap().split('.').count() == 3);
                        room.hellos.fetch_add(1, Ordering::Relaxed);
                        r#"{"op":"welcome","session":"s","user":"u","tenant":"t"}"#.to_owned()
                    }
                    Some("subscribe") => {
                        subscribed = true;
                        format!(r#"{{"op":"reply","id":{},"ok":true,"last_seq":0}}"#, frame["id"])
                    }
                    Some("send") => {
                        let seq = {
                            let mut seq = room.seq.lock().unwrap();
                            *seq += 1;
                            let msg = format!(
                                r#"{{"op":"msg","room":"fanout","seq":{},"from":"pub","cid":{},"ts":1,"body":{}}}"#,
                                *seq, frame["cid"], frame["body"]
                            );
                            let _ = room.out.send((*seq, msg));
                            *seq
                        };
                        format!(r#"{{"op":"reply","id":{},"ok":true,"seq":{seq}}}"#, frame["id"])
                    }
                    _ => return,
                };
                if ws.send(Message::text(answer)).await.is_err() {
                    return;
                }
            }
            pushed = rx.recv() => {
                let Ok((seq, msg)) = pushed else { return };
                if subscribed && room.lose != Some(seq) && ws.send(Message::text(msg)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Runs `fanout` with 8 subscribers for half a second against a server of `room`.
async fn run_against(room: &Arc<Room>) -> rushhour_burst::report::FanoutReport {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let server_room = Arc::clone(room);
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(stream, Arc::clone(&server_room)));
        }
    });
    let cli = Cli::try_parse_from([
        "rushhour-burst",
        "fanout",
        "--url",
        &url,
        "--subscribers",
        "8",
        "--body-bytes",
        "64",
        "--duration",
        "0.5",
        "--warmup",
        "0.2",
        "--window",
        "4",
        "--drain-timeout",
        "2",
        "--sources",
        "127.0.0.1,127.0.0.2",
    ])
    .unwrap();
    let Command::Fanout(args) = cli.command else {
        panic!("not fanout")
    };
    let local = tokio::task::LocalSet::new();
    let report = tokio::time::timeout(Duration::from_secs(30), local.run_until(fanout::run(&args)))
        .await
        .expect("the scenario ends on its own")
        .expect("the scenario runs");
    server.abort();
    report
}

#[tokio::test]
async fn fanout_against_a_broadcast_server() {
    let room = Room::new(None);
    let report = run_against(&room).await;
    assert!(report.ok, "{}", report.table());
    assert_eq!(
        room.hellos.load(Ordering::Relaxed),
        9,
        "8 subscribers and the publisher"
    );
    assert!(
        report.sends > 0 && report.deliveries > 0,
        "{}",
        report.table()
    );
    assert_eq!(report.order.subscribers, 8);
    assert_eq!(report.order.clean, 8);
    assert_eq!(report.final_seq, Some(*room.seq.lock().unwrap()));
    assert_eq!(
        report.delivery.count, report.deliveries,
        "every delivery had its stamp"
    );
    assert_eq!(report.send_reply.count, report.sends);
    assert!(report.generator_cpu_s > 0.0);
}

#[tokio::test]
async fn a_lost_message_is_a_gap_in_every_subscriber() {
    let room = Room::new(Some(3));
    let report = run_against(&room).await;
    assert!(!report.ok);
    assert_eq!(
        (report.order.clean, report.order.gaps, report.order.missing),
        (0, 8, 8),
        "{}",
        report.table()
    );
    assert_eq!(report.order.repeats, 0);
}
