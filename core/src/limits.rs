//! Configurable limits and the token bucket that enforces rates.

/// Every limit of the broker; the defaults are the protocol's.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest inbound frame or reassembled message (protocol: 1 MiB).
    pub max_frame_bytes: usize,
    /// Largest message `body` once encoded (protocol: 64 KiB).
    pub max_body_bytes: usize,
    /// Room subscriptions per connection (protocol: 256).
    pub max_subscriptions: usize,
    /// Requests with an `id` awaiting a reply, per connection (protocol: 64).
    pub max_inflight: usize,
    /// Sustained sends per second per connection (protocol: 5,000).
    pub send_rate_per_s: f64,
    /// Send burst per connection (protocol: 10,000).
    pub send_burst: f64,
    /// Non-JSON or binary frames tolerated before the connection is closed (protocol: 10).
    pub max_bad_frames: u32,
    /// Bytes queued for one connection before it is closed as a slow consumer (4 MiB).
    pub max_queue_bytes: usize,
    /// How long a slow consumer's close frame may wait for the socket (protocol: 30 s).
    pub close_timeout_ms: u64,
    /// Messages kept per room by the in-memory store; older ones are evicted.
    pub memory_retention_per_room: usize,
    /// Most messages in one `history` reply.
    pub max_history_limit: usize,
    /// Most payload bytes in one `history` reply or one replay batch, so one reply can
    /// never fill a connection's queue on its own.
    pub max_batch_bytes: usize,
    /// Largest room that gets receipt and presence pushes (protocol: 256).
    pub receipt_push_max_members: usize,
    /// Rooms in the whole server: rooms are never dropped, so this bounds their memory.
    pub max_rooms: usize,
    /// Rooms per tenant, so that one tenant cannot take every room of the server.
    pub max_rooms_per_tenant: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 1 << 20,
            max_body_bytes: 64 << 10,
            max_subscriptions: 256,
            max_inflight: 64,
            send_rate_per_s: 5_000.0,
            send_burst: 10_000.0,
            max_bad_frames: 10,
            max_queue_bytes: 4 << 20,
            close_timeout_ms: 30_000,
            memory_retention_per_room: 100_000,
            max_history_limit: 1_000,
            max_batch_bytes: 1 << 20,
            receipt_push_max_members: 256,
            max_rooms: 1_000_000,
            max_rooms_per_tenant: 100_000,
        }
    }
}

/// A token bucket on a clock passed in (milliseconds), so it is deterministic in tests.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate_per_ms: f64,
    burst: f64,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket refilling at `rate_per_s` up to `burst` tokens.
    pub fn new(rate_per_s: f64, burst: f64, now_ms: u64) -> Self {
        TokenBucket {
            rate_per_ms: rate_per_s / 1000.0,
            burst,
            tokens: burst,
            last_ms: now_ms,
        }
    }

    /// Takes one token, or says how many milliseconds until one is available.
    pub fn take(&mut self, now_ms: u64) -> Result<(), u64> {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        self.last_ms = self.last_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * self.rate_per_ms).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else if self.rate_per_ms <= 0.0 {
            Err(1000)
        } else {
            Err(((1.0 - self.tokens) / self.rate_per_ms).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let mut b = TokenBucket::new(1000.0, 3.0, 0);
        assert!(b.take(0).is_ok());
        assert!(b.take(0).is_ok());
        assert!(b.take(0).is_ok());
        assert_eq!(b.take(0), Err(1));
        assert!(b.take(1).is_ok());
    }

    #[test]
    fn bucket_retry_after_matches_rate() {
        let mut b = TokenBucket::new(10.0, 1.0, 0);
        assert!(b.take(0).is_ok());
        assert_eq!(b.take(0), Err(100));
        assert_eq!(b.take(50), Err(50));
        assert!(b.take(100).is_ok());
    }

    #[test]
    fn clock_going_backwards_is_harmless() {
        let mut b = TokenBucket::new(10.0, 1.0, 100);
        assert!(b.take(50).is_ok());
        assert!(b.take(60).is_err());
    }
}
