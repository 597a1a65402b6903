//! The flags, checked and turned into durations and the run's timetable.

use std::net::IpAddr;
use std::time::Duration;

use super::super::secs;
use crate::cli::BurstArgs;

/// The validated configuration every thread reads.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Clients.
    pub clients: usize,
    /// Generator threads.
    pub threads: usize,
    /// Local addresses, round robin.
    pub sources: Vec<IpAddr>,
    /// Arrivals spread over this (from the start).
    pub ramp: Duration,
    /// When meetings start (from the start).
    pub meetings_at: Duration,
    /// When chat starts (from the start).
    pub chat_at: Duration,
    /// When chat and steady signalling stop (from the start).
    pub load_end: Duration,
    /// How long the drain may last after `load_end`.
    pub drain: Duration,
    /// Chat messages per second, in all.
    pub rate: f64,
    /// Encoded body length of chat messages.
    pub body_bytes: usize,
    /// Steady signals per second per participant.
    pub signal_rate: f64,
    /// Between a client's receipts.
    pub read_interval: Duration,
    /// Back-off's first ceiling.
    pub backoff_base: Duration,
    /// Back-off's largest ceiling.
    pub backoff_cap: Duration,
    /// Connection attempts per client at most.
    pub max_attempts: u32,
    /// Allowed for a TCP connect plus the upgrade.
    pub connect_timeout: Duration,
    /// Seed of the arrival order and the jitter.
    pub seed: u64,
    /// Print progress lines.
    pub progress: bool,
    /// The server's process, when given.
    pub server_pid: Option<u32>,
}

impl Settings {
    /// Checks `args`.
    ///
    /// # Errors
    /// A message naming the flag that is out of range.
    pub fn from_args(args: &BurstArgs) -> Result<Self, String> {
        let ramp = secs("ramp", args.ramp)?;
        let meetings_at = args
            .meetings_at
            .map_or(Ok(ramp), |s| secs("meetings-at", s))?;
        let chat_at = args.chat_at.map_or(Ok(ramp), |s| secs("chat-at", s))?;
        let duration = secs("duration", args.duration)?;
        let read_interval = secs("read-interval", args.read_interval)?;
        if read_interval < Duration::from_millis(50) {
            return Err("--read-interval must be at least 0.05 s".into());
        }
        let backoff_base = secs("backoff-base", args.backoff_base)?;
        let backoff_cap = secs("backoff-cap", args.backoff_cap)?;
        if backoff_base.is_zero() || backoff_cap < backoff_base {
            return Err("--backoff-base must be positive and at most --backoff-cap".into());
        }
        let connect_timeout = secs("connect-timeout", args.connect_timeout)?;
        if connect_timeout.is_zero() {
            return Err("--connect-timeout must be positive".into());
        }
        for (name, value) in [("rate", args.rate), ("signal-rate", args.signal_rate)] {
            if !value.is_finite() || value < 0.0 {
                return Err(format!("--{name} must be a finite number >= 0"));
            }
        }
        let clients = args.clients as usize;
        let threads = (args.threads as usize).min(clients);
        let load_end = chat_at + duration;
        // A day is far beyond any meaningful run, and keeps timelines bounded.
        if load_end.max(meetings_at) > Duration::from_secs(86_000) {
            return Err("the run must end within a day".into());
        }
        Ok(Self {
            clients,
            threads,
            sources: args.sources.0.clone(),
            ramp,
            meetings_at,
            chat_at,
            load_end,
            drain: secs("drain-timeout", args.drain_timeout)?,
            rate: args.rate,
            body_bytes: args.body_bytes as usize,
            signal_rate: args.signal_rate,
            read_interval,
            backoff_base,
            backoff_cap,
            max_attempts: args.max_attempts,
            connect_timeout,
            seed: args.seed,
            progress: args.progress,
            server_pid: args.server_pid,
        })
    }

    /// When client `rank` (its place in the arrival order) arrives: evenly spread over
    /// the ramp.
    pub fn arrival(&self, rank: usize) -> Duration {
        self.ramp.mul_f64(rank as f64 / self.clients as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(extra: &[&str]) -> Result<Settings, String> {
        let argv = ["rushhour-burst", "burst"]
            .into_iter()
            .chain(extra.iter().copied());
        let Command::Burst(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not burst")
        };
        Settings::from_args(&args)
    }

    #[test]
    fn timetable_defaults_to_the_end_of_the_ramp() {
        let s = parse(&["--ramp", "4", "--duration", "6", "--clients", "8"]).unwrap();
        assert_eq!(
            (s.meetings_at, s.chat_at),
            (Duration::from_secs(4), Duration::from_secs(4))
        );
        assert_eq!(s.load_end, Duration::from_secs(10));
        assert_eq!(s.arrival(0), Duration::ZERO);
        assert_eq!(s.arrival(4), Duration::from_secs(2));
        let s = parse(&["--ramp", "0", "--chat-at", "1", "--meetings-at", "2"]).unwrap();
        assert_eq!(s.arrival(1999), Duration::ZERO);
        assert_eq!(
            (s.chat_at, s.meetings_at),
            (Duration::from_secs(1), Duration::from_secs(2))
        );
        let s = parse(&["--clients", "2", "--threads", "8"]).unwrap();
        assert_eq!(s.threads, 2, "never more threads than clients");
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["--ramp=-1"]).is_err());
        assert!(parse(&["--rate", "NaN"]).is_err());
        assert!(parse(&["--backoff-base", "5", "--backoff-cap", "1"]).is_err());
        assert!(parse(&["--read-interval", "0"]).is_err());
        assert!(parse(&["--duration", "1e9"]).is_err());
    }
}
