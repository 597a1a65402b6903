//! A connection as the broker sees it: its decoder, its session, its subscriptions.

use std::collections::HashMap;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::codec::Decoder;
use crate::error::{Error, Result};
use crate::ids::{RoomId, Seq};
use crate::limits::TokenBucket;
use crate::outbound::Outbound;

/// What a connection is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKind {
    /// A protocol connection at `/ws`.
    Session,
    /// A dev-mode echo connection at `/ws/echo`: every message comes back unchanged
    /// through the same codec and writer (for conformance suites).
    Echo,
}

/// Who is on a connection, from the verified token.
#[derive(Debug)]
pub struct Session {
    /// Tenant of every room this session touches.
    pub tenant: Arc<str>,
    /// The user id (`sub`).
    pub user: Arc<str>,
    /// Allowed rooms (`rooms` claim); `None` = every room of the tenant.
    rooms: Option<GlobSet>,
    /// Per-connection send rate.
    pub sends: TokenBucket,
}

impl Session {
    /// A session for a verified token.
    ///
    /// # Errors
    /// `bad_request` when a `rooms` pattern is not a valid glob.
    pub fn new(
        tenant: &str,
        user: &str,
        rooms: Option<&[String]>,
        sends: TokenBucket,
    ) -> Result<Self> {
        let rooms = match rooms {
            None => None,
            Some(patterns) => {
                let mut set = GlobSetBuilder::new();
                for p in patterns {
                    let glob = Glob::new(p)
                        .map_err(|e| Error::bad_request(format!("bad rooms pattern: {e}")))?;
                    set.add(glob);
                }
                Some(
                    set.build()
                        .map_err(|e| Error::bad_request(format!("bad rooms patterns: {e}")))?,
                )
            }
        };
        Ok(Session {
            tenant: tenant.into(),
            user: user.into(),
            rooms,
            sends,
        })
    }

    /// Whether the token's `rooms` claim allows `room`.
    pub fn may_use(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|set| set.is_match(room))
    }
}

/// Where one subscription of a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscription {
    /// New messages are pushed as they happen.
    Live,
    /// Replaying from the store; `next` is the first seq not yet queued. Live pushes
    /// start once the replay reaches the room's last seq, so order holds with no gap.
    CatchingUp { next: Seq },
    /// The connection is closing: nothing more is queued; `upto` is the last seq queued.
    Stopped { upto: Seq },
}

/// One attached connection.
#[derive(Debug)]
pub struct Conn {
    /// Its outbound queue (shared with the writer and with rooms' live lists).
    pub out: Arc<Outbound>,
    /// Inbound frame parser.
    pub decoder: Decoder,
    /// Protocol or echo.
    pub kind: ConnKind,
    /// Set by `hello`; until then every text frame goes to the control plane.
    pub session: Option<Session>,
    /// Rooms subscribed on this connection.
    pub subs: HashMap<RoomId, Subscription>,
    /// Non-JSON or binary frames received so far.
    pub bad_frames: u32,
    /// Sends waiting for the log before their reply.
    pub inflight: usize,
    /// When a byte last arrived (monotonic ms), for the idle timeout.
    pub last_recv_ms: u64,
    /// The close code once closing; no more input is processed.
    pub closing: Option<u16>,
    /// Frames for it waiting for the log ([`crate::pending`]): later ones queue behind.
    pub frames_waiting: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(rooms: Option<&[String]>) -> Session {
        Session::new("acme", "alice", rooms, TokenBucket::new(1.0, 1.0, 0)).unwrap()
    }

    #[test]
    fn rooms_claim_globs() {
        assert!(session(None).may_use("anything"));
        let s = session(Some(&[
            "team-*".into(),
            "general".into(),
            "dm:{alice,bob}".into(),
        ]));
        assert!(s.may_use("team-red"));
        assert!(s.may_use("general"));
        assert!(s.may_use("dm:bob"));
        assert!(!s.may_use("random"));
        assert!(!s.may_use("generalx"));
        let none = session(Some(&[]));
        assert!(!none.may_use("general"));
    }

    #[test]
    fn bad_glob_is_rejected() {
        let err =
            Session::new("a", "b", Some(&["[".into()]), TokenBucket::new(1.0, 1.0, 0)).unwrap_err();
        assert_eq!(err.code(), "bad_request");
    }
}
