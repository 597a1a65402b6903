//! The command line: one subcommand per scenario, sharing the connection options.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

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
    /// The 9 a.m. morning: many clients log in over a ramp (retrying refusals), join
    /// team rooms and meetings, chat and signal; checks that nothing is lost.
    Burst(BurstArgs),
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

/// Local addresses to connect from: `N` for the loopback addresses 127.0.0.2 …
/// 127.0.0.(N+1), or a comma-separated list of addresses; `0` lets the kernel pick.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceList(pub Vec<IpAddr>);

/// More loopback sources than this is a typo: each already gives ~28k ports.
const MAX_SOURCES: usize = 250;

impl FromStr for SourceList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(n) = s.trim().parse::<usize>() {
            if n > MAX_SOURCES {
                return Err(format!("at most {MAX_SOURCES} source addresses"));
            }
            let ips = (0..n)
                .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8)))
                .collect();
            return Ok(Self(ips));
        }
        s.split(',')
            .map(|ip| {
                ip.trim()
                    .parse::<IpAddr>()
                    .map_err(|e| format!("{ip}: {e}"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl std::fmt::Display for SourceList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ips: Vec<String> = self.0.iter().map(IpAddr::to_string).collect();
        f.write_str(&ips.join(","))
    }
}

/// `burst`: the 9 a.m. morning against one server — a ramp of logins (with the
/// server's refusals obeyed and retried), team rooms, meetings with signalling, chat,
/// receipts; every stream checked for loss, duplicates and order.
#[derive(Debug, Args, Serialize)]
pub struct BurstArgs {
    /// The server's URL, `ws://HOST:PORT/PATH`.
    #[arg(long, default_value = "ws://127.0.0.1:8000/ws")]
    pub url: String,
    /// The HS256 secret the server checks tokens with (never written to the JSON).
    #[arg(long, default_value = "bench-secret")]
    #[serde(skip)]
    pub secret: String,
    /// Allow a target or source outside the loopback range.
    #[arg(long)]
    pub allow_remote: bool,
    /// Local addresses, round robin: `N` (127.0.0.2 … 127.0.0.N+1) or a list; each
    /// gives its own ~28k ephemeral ports. `0`: the kernel's choice.
    #[arg(long, default_value = "4")]
    pub sources: SourceList,
    /// Clients (one connection each).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub clients: u32,
    /// Seconds over which the clients arrive, evenly spread (0: all at once).
    #[arg(long, default_value_t = 10.0)]
    pub ramp: f64,
    /// Generator threads, each a current-thread runtime over a shard of the clients.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,
    /// Tenants (the `tenant` claim), named `<tenant-prefix>0`, `<tenant-prefix>1` …
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub tenants: u32,
    /// Tenant sizes follow a Zipf law of this exponent (tenant k gets a share
    /// proportional to 1/(k+1)^s); 0 makes them equal.
    #[arg(long, default_value_t = 1.0)]
    pub tenant_skew: f64,
    /// Prefix of the tenant names.
    #[arg(long, default_value = "t")]
    pub tenant_prefix: String,
    /// Members of each team room (rooms are per tenant; the last may be smaller).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub room_size: u32,
    /// Meetings starting at `--meetings-at`.
    #[arg(long, default_value_t = 20)]
    pub meetings: u32,
    /// Participants of each meeting, the host included.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=1_000))]
    pub participants: u32,
    /// Seconds after the start when the meetings start (default: the end of the ramp).
    #[arg(long)]
    pub meetings_at: Option<f64>,
    /// Signals per second each participant sends once the opening exchange is done,
    /// to its peers in turn, until the end of the load.
    #[arg(long, default_value_t = 2.0)]
    pub signal_rate: f64,
    /// Seconds after the start when chat starts (default: the end of the ramp).
    #[arg(long)]
    pub chat_at: Option<f64>,
    /// Seconds of chat (and steady signalling).
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Chat messages per second, in all, from connected clients in turn into their
    /// team rooms (0: no chat).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Length of each message's encoded JSON body, in bytes.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(32..=65_536))]
    pub body_bytes: u32,
    /// Seconds between a client's batched `ack` + `read` of what it received.
    #[arg(long, default_value_t = 1.0)]
    pub read_interval: f64,
    /// Seconds after the load to wait for outstanding replies, deliveries, signals and
    /// sessions still retrying.
    #[arg(long, default_value_t = 15.0)]
    pub drain_timeout: f64,
    /// Seconds: the first retry ceiling of the exponential back-off (full jitter),
    /// used when the server gave no `retry_after_ms`.
    #[arg(long, default_value_t = 0.1)]
    pub backoff_base: f64,
    /// Seconds: the largest back-off ceiling.
    #[arg(long, default_value_t = 10.0)]
    pub backoff_cap: f64,
    /// Connection attempts per client at most (first try included).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_attempts: u32,
    /// Seconds a TCP connect and upgrade may take before it counts as refused.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Seed of the arrival order and the jitter (runs with the same seed arrive alike).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print a progress line on stderr once a second.
    #[arg(long)]
    pub progress: bool,
    /// The server's process: its CPU over the run, and its RSS sampled every second.
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

    #[test]
    fn burst_flags() {
        let cli = Cli::try_parse_from(["rushhour-burst", "burst"]).unwrap();
        let Command::Burst(args) = cli.command else {
            panic!("not burst")
        };
        assert_eq!((args.clients, args.room_size, args.tenants), (2000, 50, 1));
        assert_eq!(args.sources.0.len(), 4);
        assert_eq!(args.sources.0[0], "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(args.meetings_at, None);
        let cli = Cli::try_parse_from([
            "rushhour-burst",
            "burst",
            "--sources",
            "127.0.0.1,::1",
            "--ramp",
            "0",
            "--tenants",
            "10",
        ])
        .unwrap();
        let Command::Burst(args) = cli.command else {
            panic!("not burst")
        };
        assert_eq!(args.sources.0.len(), 2);
        assert_eq!(args.sources.to_string(), "127.0.0.1,::1");
        assert_eq!(args.ramp, 0.0);
        let json = serde_json::to_value(&args).unwrap();
        assert!(
            json.get("secret").is_none(),
            "the secret stays out of reports"
        );
        assert_eq!(json["sources"], serde_json::json!(["127.0.0.1", "::1"]));
        assert_eq!("0".parse::<SourceList>().unwrap(), SourceList::default());
        assert!("300".parse::<SourceList>().is_err());
        assert!("127.0.0.1,nope".parse::<SourceList>().is_err());
        assert!(Cli::try_parse_from(["rushhour-burst", "burst", "--participants", "1"]).is_err());
    }
}
