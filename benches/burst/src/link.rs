//! A TCP connection and its queue of bytes to send: what the WebSocket, NATS and Redis
//! clients share. Each parses its own protocol out of a [`ReadBuf`] that [`Link::fill`]
//! reads the socket into.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::ConnError;
use crate::readbuf::ReadBuf;

/// The socket, read only through [`Link::fill`] and written only from [`Link::out`].
pub struct Link {
    stream: TcpStream,
    out: Vec<u8>,
}

impl Link {
    /// A link over `stream`, its send queue starting at `capacity` bytes.
    pub fn new(stream: TcpStream, capacity: usize) -> Self {
        Self {
            stream,
            out: Vec::with_capacity(capacity),
        }
    }

    /// The bytes queued to send; [`Link::flush`] sends them.
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Whether bytes are queued.
    pub fn has_queued(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads once from the socket into `buf` (after sending anything queued).
    /// Cancel-safe once the queue is flushed: a cancelled read loses no bytes.
    ///
    /// # Errors
    /// [`ConnError::Eof`] when the peer hung up, or the socket's error.
    pub async fn fill(&mut self, buf: &mut ReadBuf) -> Result<(), ConnError> {
        self.flush().await?;
        let n = self.stream.read(buf.spare()).await?;
        if n == 0 {
            return Err(ConnError::Eof);
        }
        buf.filled(n);
        Ok(())
    }
}
