//! Meeting signals relayed in the core: the hot path of a meeting.
//!
//! At 9:00 every participant of every meeting trades offers, answers and ICE candidates
//! with every other; each signal is one frame in and one frame out, like a chat message
//! to a room of one. The session layer (Python) owns the meetings and tells the core, per
//! seat, which connection holds it ([`SeatRoutes`]); a `signal` between two connected
//! seats is relayed here. Everything else — a receiver that is reconnecting (its signals
//! are held for the rejoin), an unknown meeting or participant, an error to report —
//! goes to the session layer as before, which answers it.

use std::collections::HashMap;

use crate::broker::Broker;
use crate::fanout::Outbox;
use crate::frames::JsonFrame;
use crate::ids::ConnId;
use crate::inbound::ClientFrame;
use crate::outbound::Priority;

/// Largest `data` relayed (the protocol's limit); larger ones get their error in Python.
pub const MAX_SIGNAL_BYTES: usize = 64 << 10;

#[derive(Clone, Copy, Debug)]
struct Route {
    /// The connection holding the seat, None while it is reconnecting.
    conn: Option<ConnId>,
    /// Viewers of a broadcast may signal presenters only.
    viewer: bool,
}

/// Which connection holds each seat, and the seats each connection holds.
#[derive(Debug, Default)]
pub struct SeatRoutes {
    seats: HashMap<Box<str>, HashMap<Box<str>, Route>>,
    of_conn: HashMap<ConnId, HashMap<Box<str>, Box<str>>>,
}

impl SeatRoutes {
    /// Sets who holds seat `pid` of `meeting` (None: nobody, it is reconnecting).
    pub fn set(&mut self, meeting: &str, pid: &str, conn: Option<ConnId>, viewer: bool) {
        let seats = self.seats.entry(meeting.into()).or_default();
        let old = seats.insert(pid.into(), Route { conn, viewer });
        if let Some(old) = old.and_then(|r| r.conn).filter(|&c| Some(c) != conn) {
            self.forget_holder(old, meeting, pid);
        }
        if let Some(conn) = conn {
            self.of_conn
                .entry(conn)
                .or_default()
                .insert(meeting.into(), pid.into());
        }
    }

    /// Forgets a seat (left, removed, expired, meeting ended).
    pub fn remove(&mut self, meeting: &str, pid: &str) {
        let Some(seats) = self.seats.get_mut(meeting) else {
            return;
        };
        let holder = seats.remove(pid).and_then(|r| r.conn);
        if seats.is_empty() {
            self.seats.remove(meeting);
        }
        if let Some(conn) = holder {
            self.forget_holder(conn, meeting, pid);
        }
    }

    /// A connection is gone: its seats have no holder until Python says otherwise.
    pub fn connection_gone(&mut self, conn: ConnId) {
        for (meeting, pid) in self.of_conn.remove(&conn).unwrap_or_default() {
            if let Some(route) = self
                .seats
                .get_mut(&meeting)
                .and_then(|s| s.get_mut(&pid))
                .filter(|r| r.conn == Some(conn))
            {
                route.conn = None;
            }
        }
    }

    fn forget_holder(&mut self, conn: ConnId, meeting: &str, pid: &str) {
        if let Some(held) = self.of_conn.get_mut(&conn) {
            if held.get(meeting).is_some_and(|p| &**p == pid) {
                held.remove(meeting);
            }
            if held.is_empty() {
                self.of_conn.remove(&conn);
            }
        }
    }

    /// Where a signal from `from` goes: (sender's participant id, receiving connection),
    /// when both seats are connected and the signal is allowed.
    fn route(&self, from: ConnId, meeting: &str, to: &str) -> Option<(&str, ConnId)> {
        let own = self.of_conn.get(&from)?.get(meeting)?;
        let seats = self.seats.get(meeting)?;
        let (sender, target) = (seats.get(own)?, seats.get(to)?);
        if &**own == to || (sender.viewer && target.viewer) {
            return None;
        }
        Some((own, target.conn?))
    }
}

impl Broker {
    /// Relays a `signal` between two connected seats; false leaves it to the session
    /// layer (which holds it for a reconnecting receiver, or answers the error).
    pub(crate) fn relay_signal(
        &mut self,
        conn: ConnId,
        frame: &ClientFrame<'_>,
        id: Option<i64>,
        ob: &mut Outbox,
    ) -> bool {
        let (Ok(Some(meeting)), Ok(Some(to)), Some(data)) = (
            frame.opt_string("meeting"),
            frame.opt_string("to"),
            frame.raw("data"),
        ) else {
            return false;
        };
        if data.len() > MAX_SIGNAL_BYTES {
            return false;
        }
        let Some((from, target)) = self.seat_routes.route(conn, &meeting, &to) else {
            return false;
        };
        let Some(out) = self
            .conns
            .get(&target)
            .filter(|c| c.closing.is_none())
            .map(|c| c.out.clone())
        else {
            return false;
        };
        let signal = JsonFrame::new("signal", meeting.len() + from.len() + data.len() + 48)
            .str("meeting", &meeting)
            .str("from", from)
            .raw("data", data.as_bytes())
            .finish();
        self.push_in_order(&out, signal, Priority::Urgent, ob);
        self.stats.signals_relayed += 1;
        if let (Some(id), Some(sender)) = (id, self.conns.get(&conn).map(|c| c.out.clone())) {
            // Meeting traffic, like the replies the session layer sends.
            let reply = JsonFrame::reply(id, 0).finish();
            self.push_in_order(&sender, reply, Priority::Urgent, ob);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_seats() {
        let mut r = SeatRoutes::default();
        r.set("m", "p1", Some(ConnId(1)), false);
        r.set("m", "p2", Some(ConnId(2)), false);
        assert_eq!(r.route(ConnId(1), "m", "p2"), Some(("p1", ConnId(2))));
        assert_eq!(r.route(ConnId(2), "m", "p1"), Some(("p2", ConnId(1))));
        assert_eq!(r.route(ConnId(1), "m", "p1"), None, "not to oneself");
        assert_eq!(r.route(ConnId(3), "m", "p1"), None, "not from outside");
        assert_eq!(r.route(ConnId(1), "other", "p2"), None);
        // p2 reconnecting: its signals go to the session layer, to be held.
        r.set("m", "p2", None, false);
        assert_eq!(r.route(ConnId(1), "m", "p2"), None);
        assert_eq!(
            r.route(ConnId(2), "m", "p1"),
            None,
            "the old holder lost it"
        );
        // p2 back on another connection.
        r.set("m", "p2", Some(ConnId(5)), false);
        assert_eq!(r.route(ConnId(1), "m", "p2"), Some(("p1", ConnId(5))));
        // A new holder fences the old one.
        r.set("m", "p1", Some(ConnId(6)), false);
        assert_eq!(r.route(ConnId(1), "m", "p2"), None);
        assert_eq!(r.route(ConnId(6), "m", "p2"), Some(("p1", ConnId(5))));
        r.connection_gone(ConnId(5));
        assert_eq!(r.route(ConnId(6), "m", "p2"), None);
        r.remove("m", "p1");
        r.remove("m", "p2");
        assert!(r.seats.is_empty() && r.of_conn.is_empty());
    }

    #[test]
    fn viewers_signal_presenters_only() {
        let mut r = SeatRoutes::default();
        r.set("m", "host", Some(ConnId(1)), false);
        r.set("m", "v1", Some(ConnId(2)), true);
        r.set("m", "v2", Some(ConnId(3)), true);
        assert!(r.route(ConnId(2), "m", "host").is_some());
        assert!(r.route(ConnId(1), "m", "v1").is_some());
        assert_eq!(r.route(ConnId(2), "m", "v2"), None);
    }
}
