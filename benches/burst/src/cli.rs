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
    /// The server's WebSocket URL.
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
    /// Subscriber client implementation.
    #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
    pub client: ClientKind,
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

/// `fanout`: one room, one publisher keeping a window of sends in flight.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Where and how to connect.
    #[command(flatten)]
    pub connect: ConnectArgs,
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
    /// Sends in flight (awaiting their reply) at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub window: u32,
    /// The room.
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
        let Command::Fanout(args) = cli.command;
        assert_eq!(args.subscribers, 10);
        assert_eq!(args.connect.sources.len(), 2);
        assert_eq!(args.window, 100);
        assert!(Cli::try_parse_from(["rushhour-burst", "fanout", "--body-bytes", "8"]).is_err());
    }
}
