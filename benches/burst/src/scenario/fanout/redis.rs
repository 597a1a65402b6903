//! Fan-out over Redis Pub/Sub: subscribers `SUBSCRIBE <room>`, the publisher pipelines
//! `PUBLISH <room> <body>` with `--window` replies outstanding.
//!
//! Redis copies a message into every subscriber's output buffer before it replies to
//! the `PUBLISH` with the count of receivers, so each reply is the ack of one message
//! (replies come in order: the oldest outstanding).

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use super::peer::{Deliveries, PeerWire};
use super::REQUEST_TIMEOUT;
use crate::client::ConnError;
use crate::redis::reader::{Frame, Value};
use crate::redis::{encode, err_value, RedisConn};

/// A subscriber, subscribed.
pub(super) struct RedisSubscriber(RedisConn);

impl RedisSubscriber {
    /// Connects and subscribes to `channel`; returns once the server confirmed.
    ///
    /// # Errors
    /// The connection's error.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        channel: Rc<[u8]>,
    ) -> Result<Self, ConnError> {
        let mut conn = RedisConn::connect(addr, source, REQUEST_TIMEOUT).await?;
        conn.subscribe(&channel, REQUEST_TIMEOUT).await?;
        Ok(Self(conn))
    }
}

impl Deliveries for RedisSubscriber {
    async fn fill(&mut self) -> Result<(), ConnError> {
        self.0.fill().await
    }

    fn drain(&mut self, on: &mut impl FnMut(Option<&[u8]>)) -> Result<(), ConnError> {
        while let Some(frame) = self.0.next_frame()? {
            match frame {
                Frame::Message { payload, .. } => on(Some(payload)),
                Frame::Value(Value::Error(e)) => return Err(err_value(e)),
                Frame::Value(_) => on(None),
            }
        }
        Ok(())
    }
}

/// The publisher.
pub(super) struct RedisPublisher {
    /// The connection.
    conn: RedisConn,
    /// Where every message goes.
    channel: Rc<[u8]>,
}

impl RedisPublisher {
    /// Connects the publisher.
    ///
    /// # Errors
    /// The connection's error.
    pub async fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
        channel: Rc<[u8]>,
    ) -> Result<Self, ConnError> {
        let conn = RedisConn::connect(addr, source, REQUEST_TIMEOUT).await?;
        Ok(Self { conn, channel })
    }
}

impl PeerWire for RedisPublisher {
    fn queue(&mut self, body: &[u8]) {
        encode::write_command(self.conn.out(), &[b"PUBLISH", &self.channel, body]);
    }

    fn end_batch(&mut self) {}

    async fn flush(&mut self) -> Result<(), ConnError> {
        Ok(self.conn.flush().await?)
    }

    async fn fill(&mut self) -> Result<(), ConnError> {
        self.conn.fill().await
    }

    fn acks(&mut self, on: &mut impl FnMut(Result<(), &[u8]>)) -> Result<(), ConnError> {
        while let Some(frame) = self.conn.next_frame()? {
            match frame {
                Frame::Value(Value::Int(_)) => on(Ok(())),
                Frame::Value(Value::Error(e)) => on(Err(e)),
                other => {
                    return Err(ConnError::Protocol(format!(
                        "not an answer to PUBLISH: {other:?}"
                    )))
                }
            }
        }
        Ok(())
    }
}
