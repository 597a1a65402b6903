//! The drivers' clock: the only place the core reads time. Sans-IO code gets `Now`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::broker::Now;

/// Monotonic milliseconds since the clock was made, plus the wall clock.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            epoch: Instant::now(),
        }
    }
}

impl Clock {
    /// Milliseconds on the monotonic clock.
    pub fn mono_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The time of a call.
    pub fn now(&self) -> Now {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Now {
            mono_ms: self.mono_ms(),
            wall_ms,
        }
    }
}
