//! The command line: one subcommand per scenario, sharing the connection options.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load generator for rushhour: many WebSocket clients against one running server.
#[derive(Debug, Parser)]
#[command(name = "rushhour-burst", version)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Scenarios.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One publisher, N subscribers of one room: deliveries per second, latencies and
    /// per-subscriber order.
    Fanout(FanoutArgs),
    /// Publishers only, many rooms, a fixed number of sends in flight: acknowledged
    /// messages per second and ack latency, against rushhour or NATS JetStream.
    Publish(PublishArgs),
}

/// Which client implementation the subscribers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientKind {
    /// The hand-rolled frame reader over a raw `TcpStream` (the cheap one).
    Raw,
    /// tokio-tungstenite, for comparison.
    Tungstenite,
}

/// How to reach the server, shared by every scenario.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The server's URL: `ws://HOST:PORT/PATH`, or `nats://HOST:PORT` for `publish
    /// --target nats`.
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws")]
    pub url: String,
    /// The HS256 secret the server checks tokens with.
    #[arg(long, default_value = "bench-secret")]
    pub secret: String,
    /// The `tenant` claim of every token.
    #[arg(long, default_value = "bench")]
    pub tenant: String,
    /// Local addresses to spread the connections over, round robin (each gives ~28k
    /// ports); by default the kernel picks.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<IpAddr>,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Seconds allowed for all connections to be set up (connect, hello, subscribe).
    #[arg(long, default_value_t = 60.0)]
    pub setup_timeout: f64,
    /// Allow a target or source outside the loopback range. Off by default, so that a
    /// mistyped address cannot aim a load test at someone else's machine.
    #[arg(long)]
    pub allow_remote: bool,
}

/// The server a `fanout` run loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FanoutTarget {
    /// rushhour over WebSocket, or any server speaking that subset of its protocol
    /// (the naive peer): `ws://HOST:PORT/PATH`.
    Rushhour,
    /// Core NATS (no JetStream): `SUB <room>`, `PUB <room>`; `nats://HOST:PORT`.
    Nats,
    /// Redis Pub/Sub: `SUBSCRIBE <room>`, `PUBLISH <room> <body>`; `redis://HOST:PORT`.
    Redis,
}

/// `fanout`: one room, one publisher keeping a window of sends in flight.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Where and how to connect (`--url nats://…` or `redis://…` with those targets).
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The server under load.
    #[arg(long, value_enum, default_value_t = FanoutTarget::Rushhour)]
    pub target: FanoutTarget,
    /// Subscriber client implementation (rushhour only).
    #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
    pub client: ClientKind,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Length of each message's encoded JSON body, in bytes (at least 32).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(32..=65_536))]
    pub body_bytes: u32,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Sends in flight (awaiting their reply) at once. NATS: a `PING` after every
    /// `window` messages, at most two windows awaiting their `PONG`; Redis: `PUBLISH`
    /// replies outstanding.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub window: u32,
    /// The room (the NATS subject, the Redis channel).
    #[arg(long, default_value = "fanout")]
    pub room: String,
    /// Seconds to wait after the measurement for outstanding replies and deliveries.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// Also report the CPU time of this process (the server) over the measurement.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The server a `publish` run loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PublishTarget {
    /// rushhour over WebSocket: `send` frames, acknowledged by their `reply`.
    Rushhour,
    /// nats-server with JetStream over its TCP protocol: `PUB` with a reply inbox,
    /// acknowledged by the stream's publish ack.
    Nats,
}

/// `publish`: `--connections` publishers keeping `--inflight` sends in flight in all,
/// spread over `--rooms` rooms; nobody subscribes.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Where and how to connect (`--url nats://HOST:PORT` with `--target nats`).
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The server under load.
    #[arg(long, value_enum, default_value_t = PublishTarget::Rushhour)]
    pub target: PublishTarget,
    /// Publisher connections.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub connections: u32,
    /// Sends in flight (awaiting their ack) in all, spread evenly over the connections.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub inflight: u32,
    /// Rooms (NATS: subjects) the sends rotate over.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rooms: u32,
    /// Rooms are `<prefix>-N` on rushhour, subjects `<prefix>.N` on NATS.
    #[arg(long, default_value = "bench")]
    pub room_prefix: String,
    /// Length of each message's body (encoded JSON), in bytes.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(32..=65_536))]
    pub body_bytes: u32,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds to wait after the measurement for outstanding acks.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// NATS: the JetStream stream to create (file storage, subjects `<prefix>.*`).
    #[arg(long, default_value = "BENCH")]
    pub stream: String,
    /// NATS: send each message's cid as `Nats-Msg-Id`, so that JetStream deduplicates
    /// as rushhour does by `cid` (off: plain `PUB`).
    #[arg(long)]
    pub msg_id: bool,
    /// Also report the CPU time of this process (the server) over the measurement.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn fanout_flags() {
        let cli = Cli::try_parse_from([
            "rushhour-burst",
            "fanout",
            "--url",
            "ws://127.0.0.1:9/ws",
            "--subscribers",
            "10",
            "--sources",
            "127.0.0.1,127.0.0.2",
            "--json",
            "out.json",
        ])
        .unwrap();
        let Command::Fanout(args) = cli.command else {
            panic!("not fanout")
        };
        assert_eq!(args.subscribers, 10);
        assert_eq!(args.connect.sources.len(), 2);
        assert_eq!(args.window, 100);
        assert_eq!(args.target, FanoutTarget::Rushhour);
        assert!(Cli::try_parse_from(["rushhour-burst", "fanout", "--body-bytes", "8"]).is_err());
        let cli = Cli::try_parse_from(["rushhour-burst", "fanout", "--target", "redis"]).unwrap();
        let Command::Fanout(args) = cli.command else {
            panic!("not fanout")
        };
        assert_eq!(args.target, FanoutTarget::Redis);
    }

    #[test]
    fn publish_flags() {
        let cli = Cli::try_parse_from(["rushhour-burst", "publish"]).unwrap();
        let Command::Publish(args) = cli.command else {
            panic!("not publish")
        };
        assert_eq!(
            (args.connections, args.inflight, args.rooms, args.body_bytes),
            (10, 100, 50, 128)
        );
        assert_eq!(args.target, PublishTarget::Rushhour);
        let cli = Cli::try_parse_from([
            "rushhour-burst",
            "publish",
            "--target",
            "nats",
            "--url",
            "nats://127.0.0.1:4222",
            "--msg-id",
        ])
        .unwrap();
        let Command::Publish(args) = cli.command else {
            panic!("not publish")
        };
        assert_eq!(args.target, PublishTarget::Nats);
        assert!(args.msg_id);
        assert!(Cli::try_parse_from(["rushhour-burst", "publish", "--connections", "0"]).is_err());
    }
}
