//! Fan-out over core NATS (no JetStream): subscribers `SUB <room> 1`, the publisher
//! `PUB <room>` with a `PING` after every window of messages.
//!
//! Core NATS acknowledges nothing, but a `PONG` says the server has processed every
//! line before its `PING`, which for a `PUB` means handing the message to every
//! subscriber's outbound buffer. So the publisher keeps at most
//! [`WINDOWS_IN_FLIGHT`] windows awaiting their `PONG`: one being processed while the
//! next is on its way, as NATS clients do when they flush. Counting a window's messages
//! as acknowledged by its `PONG` makes "sends acknowledged" and "send -> reply" mean
//! "processed by the server", as for the other targets.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use super::peer::{Deliveries, PeerWire};
use super::REQUEST_TIMEOUT;
use crate::client::ConnError;
use crate::nats::{encode, NatsConn};

/// The subscription id of every subscriber's one subscription.
const SID: u64 = 1;

/// Windows awaiting their `PONG` at once: two keep the server busy without a gap
/// between windows, and bound what is in flight.
pub(super) const WINDOWS_IN_FLIGHT: usize = 2;

/// Checks that `room` can be published to as a subject: not empty, no blanks (they
/// separate a line's fields), no wildcards.
///
/// # Errors
/// A message saying why not.
pub(super) fn check_subject(room: &str) -> Result<(), String> {
    let bad = |c: char| c.is_whitespace() || c == '*' || c == '>';
    if room.is_empty() || room.contains(bad) {
        return Err(format!(
            "--room {room:?} is not a NATS subject to publish on (no blanks, no wildcards)"
        ));
    }
    Ok(())
}

/// A subscriber, subscribed.
pub(super) struct NatsSubscriber(NatsConn);

impl NatsSubscriber {
    /// Connects as subscriber `index` and subscribes to `subject`; returns once the
    /// server has processed the `SUB` (its `PONG`).
    ///
    /// # Errors
    /// The connection's error.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        index: usize,
        subject: Rc<[u8]>,
    ) -> Result<Self, ConnError> {
        let name = format!("rushhour-burst sub-{index}");
        let mut conn = NatsConn::connect(addr, source, &name, REQUEST_TIMEOUT).await?;
        conn.subscribe(&subject, SID, REQUEST_TIMEOUT).await?;
        Ok(Self(conn))
    }
}

impl Deliveries for NatsSubscriber {
    async fn fill(&mut self) -> Result<(), ConnError> {
        self.0.fill().await
    }

    fn drain(&mut self, on: &mut impl FnMut(Option<&[u8]>)) -> Result<(), ConnError> {
        while let Some(msg) = self.0.next_msg()? {
            on(Some(msg.payload));
        }
        Ok(())
    }
}

/// The publisher.
pub(super) struct NatsPublisher {
    /// The connection.
    conn: NatsConn,
    /// Where every message goes.
    subject: Rc<[u8]>,
}

impl NatsPublisher {
    /// Connects the publisher.
    ///
    /// # Errors
    /// The connection's error.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        subject: Rc<[u8]>,
    ) -> Result<Self, ConnError> {
        let conn = NatsConn::connect(addr, source, "rushhour-burst pub", REQUEST_TIMEOUT).await?;
        Ok(Self { conn, subject })
    }
}

impl PeerWire for NatsPublisher {
    fn queue(&mut self, body: &[u8]) {
        encode::write_pub_no_reply(self.conn.out(), &self.subject, body);
    }

    fn end_batch(&mut self) {
        encode::write_ping(self.conn.out());
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        Ok(self.conn.flush().await?)
    }

    async fn fill(&mut self) -> Result<(), ConnError> {
        self.conn.fill().await
    }

    fn acks(&mut self, on: &mut impl FnMut(Result<(), &[u8]>)) -> Result<(), ConnError> {
        // Nothing is subscribed: reading only answers pings and counts pongs.
        while self.conn.next_msg()?.is_some() {}
        for _ in 0..self.conn.take_pongs() {
            on(Ok(()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects() {
        assert!(check_subject("fanout").is_ok());
        assert!(check_subject("a.b-c").is_ok());
        for bad in ["", "a b", "a.*", "a.>", "a\r\n"] {
            assert!(check_subject(bad).is_err(), "{bad:?}");
        }
    }
}
