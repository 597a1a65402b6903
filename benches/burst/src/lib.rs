//! rushhour-burst: the load generator, many WebSocket clients against a running server.
//!
//! It runs on one current-thread tokio runtime (`burst`: one per `--threads`), so that
//! on a two-core machine it takes about one core and leaves the other to the server;
//! the per-delivery cost is kept to a `read` and a scan of a few bytes, and reported
//! with the results.
//!
//! Layout:
//! - [`cli`]: the command line, one subcommand per scenario.
//! - [`client`]: the protocol client — handshake, frames, field scanning.
//! - [`nats`]: a minimal NATS client, to load JetStream and core NATS the same way.
//! - [`redis`]: a minimal Redis (RESP2) client, for Pub/Sub fan-out.
//! - [`readbuf`]: the read buffer those two parse out of.
//! - [`token`]: HS256 tokens for `hello`.
//! - [`seq`]: the per-subscriber order check.
//! - [`stats`]: latency histograms and CPU accounting.
//! - [`scenario`]: the scenarios (`fanout`, `publish`, `burst`).
//! - [`report`]: tables and JSON.

pub mod cli;
pub mod client;
pub mod link;
pub mod nats;
pub mod readbuf;
pub mod redis;
pub mod report;
pub mod scenario;
pub mod seq;
pub mod stats;
pub mod token;
