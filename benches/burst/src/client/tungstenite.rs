//! The same subscriber on tokio-tungstenite (`--client tungstenite`), kept to measure
//! what the hand-rolled [`super::Conn`] saves: tungstenite allocates a message per
//! frame and checks UTF-8, which matters when the generator shares two cores with the
//! server it loads.

use std::net::IpAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::{scan, tcp_connect, ConnError, Target};

/// A tokio-tungstenite connection.
pub struct TungConn {
    /// The stream; tungstenite answers pings itself.
    ws: WebSocketStream<TcpStream>,
}

fn ws_error(e: WsError) -> ConnError {
    match e {
        WsError::Io(e) => ConnError::Io(e),
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            ConnError::Closed(None, String::new())
        }
        other => ConnError::Protocol(other.to_string()),
    }
}

fn closed(frame: Option<CloseFrame>) -> ConnError {
    match frame {
        Some(f) => ConnError::Closed(Some(f.code.into()), f.reason.to_string()),
        None => ConnError::Closed(None, String::new()),
    }
}

impl TungConn {
    /// Connects from `source` and upgrades with tungstenite's handshake.
    ///
    /// # Errors
    /// [`ConnError`] when the connection or the upgrade fails.
    pub async fn connect(target: &Target, source: Option<IpAddr>) -> Result<Self, ConnError> {
        let stream = tcp_connect(target.addr, source).await?;
        let (ws, _response) = tokio_tungstenite::client_async(target.url.as_str(), stream)
            .await
            .map_err(ws_error)?;
        Ok(Self { ws })
    }

    /// The next text or binary message's bytes.
    ///
    /// # Errors
    /// [`ConnError::Closed`] on a close frame or the end of the stream.
    pub async fn next_data(&mut self) -> Result<Message, ConnError> {
        loop {
            match self.ws.next().await {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
                Some(Ok(Message::Close(frame))) => return Err(closed(frame)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(ws_error(e)),
                None => return Err(ConnError::Eof),
            }
        }
    }

    /// Sends `text` and waits for the frame with op `op` (and id `id`), as
    /// [`super::Conn::request`].
    ///
    /// # Errors
    /// As [`super::Conn::request`].
    pub async fn request(
        &mut self,
        text: &str,
        op: &str,
        id: Option<u64>,
        timeout: Duration,
    ) -> Result<(), ConnError> {
        self.ws.send(Message::text(text)).await.map_err(ws_error)?;
        let wait = async {
            loop {
                let msg = self.next_data().await?;
                let payload = msg.into_data();
                let got = scan::op(&payload).unwrap_or_default();
                let same_id = id.is_none() || scan::u64_value(&payload, &scan::ID) == id;
                if got == op.as_bytes() && same_id {
                    return Ok(());
                }
                if got == b"error" && same_id {
                    return Err(ConnError::Protocol(
                        String::from_utf8_lossy(&payload).into_owned(),
                    ));
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ConnError::Timeout("an answer"))?
    }
}
