//! Scenarios, and what they share: the safety checks before any load, the measurement
//! window, and the set-up of many connections at a bounded pace.
//!
//! Every scenario runs on one current-thread runtime inside a `LocalSet`: its tasks
//! share counters through `Rc<Cell<…>>` without atomics or locks, and the generator
//! stays on one core of a machine it shares with the server.

pub mod burst;
pub mod fanout;
pub mod publish;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::cli::ConnectArgs;
use crate::stats::{machine_busy, own_cpu, pid_cpu};

/// File descriptors kept free beyond one per connection (stdio, the runtime's epoll
/// and wake-up pipe, the publisher, the JSON file).
const SPARE_FDS: u64 = 32;

/// Refuses a load test that would leave the machine or this process's limits.
///
/// # Errors
/// A message saying which check failed.
pub fn preflight(
    connect: &ConnectArgs,
    target: SocketAddr,
    connections: usize,
) -> Result<(), String> {
    if !connect.allow_remote {
        let outside = std::iter::once(target.ip())
            .chain(connect.sources.iter().copied())
            .find(|ip| !ip.is_loopback());
        if let Some(ip) = outside {
            return Err(format!(
                "{ip} is not a loopback address (pass --allow-remote to aim elsewhere)"
            ));
        }
    }
    let limit = fd_limit();
    let need = connections as u64 + SPARE_FDS;
    if need > limit {
        return Err(format!(
            "{connections} connections need {need} file descriptors; the limit is {limit}"
        ));
    }
    Ok(())
}

/// The soft limit on open files, raised to the hard limit if it is lower.
pub fn fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write only the struct we pass.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// The source address of connection `i`: round robin over `sources`, or the kernel's
/// choice when there are none.
pub fn source_for(sources: &[IpAddr], i: usize) -> Option<IpAddr> {
    (!sources.is_empty()).then(|| sources[i % sources.len()])
}

/// Microseconds since `epoch`: the timestamps a scenario writes into bodies and
/// compares on receipt (one process, one monotonic clock).
pub fn micros_since(epoch: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(epoch).as_micros() as u64
}

/// The measured interval: after the warm-up, for the duration.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Start of the measurement.
    pub start: Instant,
    /// End of the measurement.
    pub end: Instant,
}

impl Window {
    /// The window that opens `warmup` after `now` and lasts `duration`.
    pub fn after(now: Instant, warmup: Duration, duration: Duration) -> Self {
        let start = now + warmup;
        Self {
            start,
            end: start + duration,
        }
    }

    /// Whether `t` falls inside.
    pub fn contains(&self, t: Instant) -> bool {
        self.start <= t && t < self.end
    }
}

/// CPU counters at one instant.
pub struct CpuSample {
    /// When.
    pub at: Instant,
    /// This process.
    pub own: Duration,
    /// `--server-pid`, if given and readable.
    pub server: Option<Duration>,
    /// The whole machine's busy time.
    pub machine: Option<Duration>,
}

impl CpuSample {
    /// Samples now; `server_pid` is the server's process, when known.
    pub fn take(server_pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            own: own_cpu(),
            server: server_pid.and_then(pid_cpu),
            machine: machine_busy(),
        }
    }
}

/// Seconds from the command line as a `Duration`.
///
/// # Errors
/// When `s` is negative or not finite.
pub fn secs(name: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| format!("--{name} must be a non-negative number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_robin() {
        let s: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        assert_eq!(source_for(&s, 3), Some(s[1]));
        assert_eq!(source_for(&[], 3), None);
    }

    #[test]
    fn window_bounds() {
        let now = Instant::now();
        let w = Window::after(now, Duration::from_secs(1), Duration::from_secs(2));
        assert!(!w.contains(now));
        assert!(w.contains(now + Duration::from_millis(1500)));
        assert!(!w.contains(now + Duration::from_secs(3)));
        assert_eq!(micros_since(now, now + Duration::from_millis(2)), 2000);
        assert!(secs("duration", -1.0).is_err());
    }
}
