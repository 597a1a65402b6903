//! rushhour-core: the broker core of rushhour.
//!
//! One message sent to a room of N members is one frame in and N frames out. The core
//! parses the frame once, stores it, encodes the outbound `msg` frame once and shares
//! those bytes across the N connection queues; its writer thread drains every queue into
//! its socket with one `writev` per wake-up. Python never touches the deliveries.
//!
//! Layout:
//! - [`codec`]: WebSocket frames (RFC 6455), sans-IO.
//! - [`inbound`] / [`frames`]: client JSON in, server JSON frames out.
//! - [`json_limits`]: the depth, number and Unicode limits of every inbound JSON text.
//! - [`broker`]: connection lifecycle and dispatch; [`chat`]: the room operations;
//!   [`receipt_ops`], [`presence`]: the receipts, unread and presence operations.
//! - [`room`], [`conn`]: rooms with their live subscribers; connections with sessions.
//! - [`fanout`], [`outbound`]: shared frames into bounded per-connection queues.
//! - [`receipts`]: per-room delivered/read cursors; counts per seq in O(log members).
//! - [`signals`]: meeting signals between connected seats, relayed without Python.
//! - [`store`]: the message store interface and its in-memory implementation;
//!   [`log`]: the durable implementation (segments, group commit, recovery).
//! - [`limits`]: configurable limits and token buckets.
//! - [`writer`], [`reader`], [`clock`]: the socket threads (the only writer; the reader,
//!   reporting control frames through the [`inbox`]) and the only clock; [`accept`],
//!   [`handshake`]: the reader accepts connections and answers their WebSocket
//!   handshake; [`token`]: the HS256 signature check of session tokens.
//! - [`engine`]: broker + writer + clock behind one handle, for the binding.

pub mod accept;
pub mod batch;
pub mod broker;
pub mod chat;
pub mod clock;
pub mod codec;
pub mod conn;
pub mod engine;
pub mod error;
pub mod fanout;
pub mod frames;
pub mod handshake;
pub mod health;
pub mod ids;
pub mod inbound;
pub mod inbox;
pub mod json_limits;
pub mod limits;
pub mod log;
pub mod outbound;
pub mod pending;
pub mod presence;
pub mod reader;
pub mod receipt_ops;
pub mod receipts;
pub mod resume;
pub mod room;
pub mod signals;
pub mod store;
mod sync;
pub mod token;
pub mod writer;

pub use broker::{Broker, Inbound, Now, Stats};
pub use chat::Accepted;
pub use conn::ConnKind;
pub use engine::Engine;
pub use error::{Error, Result};
pub use ids::{ConnId, RoomId, Seq};
pub use limits::Limits;
pub use log::{FsyncPolicy, Log, LogOptions, RecoveryError};
pub use store::{MemberState, MemoryStore, MessageStore, RecoveredRoom, StoredMessage};

/// The crate's version, for `rushhour.__version__`.
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
