//! `hello.resume`: a session's subscriptions move to its new connection, and each room
//! replays from the first message the old connection did not deliver.
//!
//! A subscription stops when its connection starts closing; it remembers the last seq it
//! queued. Frames discarded unwritten (overflow, a dead socket, fencing) and frames still
//! queued count as undelivered; what the kernel accepted counts as delivered (what a
//! broken TCP connection loses after that cannot be known here: `since` is exact).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use crate::broker::Broker;
use crate::codec::close_code;
use crate::conn::{Conn, Subscription};
use crate::error::{Error, Result};
use crate::fanout::Outbox;
use crate::ids::{ConnId, RoomId, Seq};
use crate::outbound::{Lost, Outbound};
use crate::sync::lock;

/// Ended connections remembered for resuming; the oldest are forgotten first.
const MAX_PARKED: usize = 100_000;

/// What a resumed session needs of its previous connection.
#[derive(Debug)]
pub(crate) struct ParkedConn {
    tenant: Arc<str>,
    user: Arc<str>,
    /// The queue while the writer still flushes it (not kept alive: it owns the socket).
    out: Weak<Outbound>,
    lost: Lost,
    subs: Vec<(RoomId, Seq)>,
}

impl ParkedConn {
    /// Per room, the first seq the connection did not deliver.
    fn undelivered(&self) -> HashMap<Box<str>, Seq> {
        match self.out.upgrade() {
            Some(out) => out.lock().undelivered(),
            None => lock(&self.lost).clone(),
        }
    }
}

/// Ended connections by id, bounded.
#[derive(Debug, Default)]
pub(crate) struct Parked {
    conns: HashMap<ConnId, ParkedConn>,
    order: VecDeque<ConnId>,
}

impl Broker {
    /// Stops every subscription of `conn`: no more frames are queued for them.
    pub(crate) fn stop_subscriptions(&mut self, conn: ConnId) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        for (room_id, sub) in c.subs.iter_mut() {
            let room = self.rooms.get_mut(*room_id);
            room.remove_live(conn);
            let upto = match *sub {
                Subscription::Live => room.last_seq,
                Subscription::CatchingUp { next } => Seq(next.0 - 1),
                Subscription::Stopped { upto } => upto,
            };
            *sub = Subscription::Stopped { upto };
        }
    }

    /// Takes a connection's stopped subscriptions, for a resume now or later.
    fn take_subscriptions(c: &mut Conn) -> Option<ParkedConn> {
        let session = c.session.as_ref()?;
        let subs = c
            .subs
            .drain()
            .filter_map(|(room, sub)| match sub {
                Subscription::Stopped { upto } => Some((room, upto)),
                _ => None,
            })
            .collect();
        Some(ParkedConn {
            tenant: session.tenant.clone(),
            user: session.user.clone(),
            out: Arc::downgrade(&c.out),
            lost: c.out.lock().lost(),
            subs,
        })
    }

    /// Remembers a detached connection's subscriptions for a later resume.
    pub(crate) fn park(&mut self, mut c: Conn) {
        let Some(parked_conn) = Self::take_subscriptions(&mut c) else {
            return;
        };
        if parked_conn.subs.is_empty() {
            return;
        }
        let id = c.out.conn;
        let parked = &mut self.parked;
        parked.conns.insert(id, parked_conn);
        parked.order.push_back(id);
        while parked.conns.len() > MAX_PARKED {
            match parked.order.pop_front() {
                Some(old) => parked.conns.remove(&old),
                None => break,
            };
        }
    }

    /// Moves the subscriptions of `old` (attached: it is closed with 4009 first; or ended)
    /// to `conn`, each replaying from the first message `old` did not deliver. Returns
    /// the rooms restored.
    ///
    /// # Errors
    /// `not_found` when `old` is unknown or forgotten; `forbidden` when it belonged to
    /// another user.
    pub fn resume(&mut self, conn: ConnId, old: ConnId, ob: &mut Outbox) -> Result<Vec<String>> {
        let attached = if let Some(c) = self.conns.get_mut(&old) {
            // Fenced: what it has not started writing is replayed on `conn` instead.
            c.closing.get_or_insert(close_code::REPLACED);
            let out = c.out.clone();
            let reason = "session resumed on another connection";
            out.lock()
                .abandon(close_code::REPLACED, reason, ob.close_deadline());
            ob.schedule(&out);
            self.stop_subscriptions(old);
            self.conns.get_mut(&old).and_then(Self::take_subscriptions)
        } else {
            None
        };
        let parked = attached
            .or_else(|| self.parked.conns.remove(&old))
            .ok_or(Error::NotFound("nothing to resume".into()))?;
        let session = self
            .conns
            .get(&conn)
            .and_then(|c| c.session.as_ref())
            .ok_or(Error::Unauthorized("send hello first".into()))?;
        if session.tenant != parked.tenant || session.user != parked.user {
            return Err(Error::Forbidden("not your session".into()));
        }
        let user = session.user.clone();
        let undelivered = parked.undelivered();
        let mut rooms = Vec::with_capacity(parked.subs.len());
        for (room_id, upto) in parked.subs {
            let name = self.rooms.get(room_id).name.clone();
            let since = match undelivered.get(&*name) {
                Some(first) => upto.min(Seq(first.0 - 1)),
                None => upto,
            };
            self.check_subscription_limit(conn, Some(room_id))?;
            self.subscribe(conn, room_id, &user, Some(since))?;
            rooms.push(name.to_string());
        }
        self.refill(conn, ob);
        Ok(rooms)
    }
}
