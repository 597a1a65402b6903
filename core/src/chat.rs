//! The Rooms section of the protocol: send, subscribe (with `since` replay), unsubscribe,
//! leave, history, and server-side publish.
//!
//! Replay is paced by the connection's queue: a subscriber catching up gets batches from
//! the store while its queue has room, and joins the room's live list only when it has
//! reached the last seq. So a `since` far in the past never overflows the queue, and
//! replayed and live messages come in order with no gap and no repeat.

use std::sync::Arc;

use crate::broker::{Broker, Now};
use crate::conn::Subscription;
use crate::error::{Error, Result};
use crate::fanout::Outbox;
use crate::frames::{self, JsonFrame};
use crate::ids::{is_valid_id, ConnId, RoomId, Seq};
use crate::inbound::ClientFrame;
use crate::json_limits::{self, Refusal};
use crate::log::Lsn;
use crate::pending::{Effect, Waiting};
use crate::store::StoredMessage;

/// Messages read from the store per replay step.
const REPLAY_BATCH: u64 = 256;
/// Longest `cid` accepted.
const MAX_CID_LEN: usize = 128;
/// `retry_after_ms` for a send over the in-flight limit: about one group commit.
const INFLIGHT_RETRY_MS: u64 = 5;
/// `history` page size when `limit` is omitted (protocol example: 50).
const DEFAULT_HISTORY_LIMIT: u64 = 50;

/// Where a new subscription starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subscribed {
    pub last: Seq,
    pub first: Seq,
    pub truncated: bool,
    /// The user's (delivered, read) cursors in the room.
    pub cursors: (u64, u64),
}

/// The outcome of storing a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Its seq in the room.
    pub seq: Seq,
    /// Its server time.
    pub ts: u64,
    /// Whether it was a retry of an earlier send (nothing new was delivered).
    pub duplicate: bool,
}

pub(crate) fn room_name<'a>(frame: &ClientFrame<'a>) -> Result<std::borrow::Cow<'a, str>> {
    let room = frame.string("room")?;
    if !is_valid_id(&room) {
        return Err(Error::bad_request(
            "\"room\" must be 1-128 chars of [A-Za-z0-9_.:@/-]",
        ));
    }
    Ok(room)
}

impl Broker {
    /// The session of `conn` with the room checked against its claims.
    pub(crate) fn authorize(&self, conn: ConnId, room: &str) -> Result<(Arc<str>, Arc<str>)> {
        let session = self
            .conns
            .get(&conn)
            .and_then(|c| c.session.as_ref())
            .ok_or(Error::Unauthorized("send hello first".into()))?;
        if !session.may_use(room) {
            return Err(Error::Forbidden(
                format!("the token does not allow room {room:?}").into(),
            ));
        }
        Ok((session.tenant.clone(), session.user.clone()))
    }

    pub(crate) fn handle_send(
        &mut self,
        conn: ConnId,
        frame: &ClientFrame<'_>,
        id: Option<i64>,
        now: Now,
        ob: &mut Outbox,
    ) -> Result<()> {
        let room = room_name(frame)?;
        let cid = frame.string("cid")?;
        let body = frame.body()?;
        let (tenant, user) = self.authorize(conn, &room)?;
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or(Error::NotFound("no such connection".into()))?;
        // Only requests with an `id` await a reply; the send rate bounds the others.
        if id.is_some() && c.inflight >= self.limits.max_inflight {
            return Err(Error::RateLimited {
                message: format!("{} sends already wait for their reply", c.inflight).into(),
                retry_after_ms: INFLIGHT_RETRY_MS,
            });
        }
        if let Some(session) = c.session.as_mut() {
            session
                .sends
                .take(now.mono_ms)
                .map_err(|retry_after_ms| Error::RateLimited {
                    message: "send rate over the limit".into(),
                    retry_after_ms,
                })?;
        }
        let (accepted, lsn) = self.append(&tenant, &room, &user, &cid, body, now)?;
        if let (Some(c), Some(_)) = (self.conns.get_mut(&conn), id) {
            c.inflight += 1;
        }
        self.waiting.push_back(Waiting {
            lsn,
            effect: Effect::Reply { conn, id, accepted },
        });
        self.release(ob);
        Ok(())
    }

    /// Stores a message, to be pushed to the room's live subscribers once durable, or
    /// finds the original seq of a retried `(from, cid)`. Returns the log position an
    /// acknowledgement must wait for. The one path for `send` and publish.
    ///
    /// # Errors
    /// `bad_request` / `too_large` for invalid input, `forbidden` for a new room past the
    /// room limits, `internal` when the store fails.
    pub fn append(
        &mut self,
        tenant: &Arc<str>,
        room: &str,
        from: &Arc<str>,
        cid: &str,
        body: &str,
        now: Now,
    ) -> Result<(Accepted, Lsn)> {
        if cid.is_empty() || cid.len() > MAX_CID_LEN {
            return Err(Error::bad_request("\"cid\" must be 1-128 bytes"));
        }
        if body.len() > self.limits.max_body_bytes {
            return Err(Error::TooLarge(
                format!("body is over {} bytes", self.limits.max_body_bytes).into(),
            ));
        }
        let room_id = self.rooms.open(tenant, room, &self.limits)?;
        if let Some((seq, ts)) = self.store.find_cid(room_id, from, cid) {
            // The original may still be on its way to the disk: wait for all written.
            let accepted = Accepted {
                seq,
                ts,
                duplicate: true,
            };
            return Ok((accepted, self.last_lsn));
        }
        let r = self.rooms.get_mut(room_id);
        let seq = r.appended.next();
        let ts = now.wall_ms;
        let frame = frames::msg(room, seq, from, cid, ts, body);
        let stored = StoredMessage {
            room: room_id,
            seq,
            ts,
            from: from.clone(),
            cid: cid.into(),
            frame: frame.clone(),
        };
        let (tenant, name) = (r.tenant.clone(), r.name.clone());
        let lsn = self.store.append(stored, &tenant, &name, body)?;
        r.appended = seq;
        self.last_lsn = lsn;
        self.waiting.push_back(Waiting {
            lsn,
            effect: Effect::Message {
                room: room_id,
                seq,
                frame,
                from: from.clone(),
            },
        });
        self.join(room_id, from);
        self.stats.messages += 1;
        let accepted = Accepted {
            seq,
            ts,
            duplicate: false,
        };
        Ok((accepted, lsn))
    }

    /// Makes `user` a member of the room, in the store too.
    fn join(&mut self, room: RoomId, user: &Arc<str>) {
        let r = self.rooms.get_mut(room);
        if r.members.join(user) {
            let tenant = r.tenant.clone();
            // A failed store is reported by the writes that need it; reads go on.
            if let Ok(lsn) = self.store.member(room, &tenant, &r.name, user, true) {
                self.last_lsn = lsn;
            }
            self.memberships
                .entry((tenant.clone(), user.clone()))
                .or_default()
                .insert(room);
            if self.is_online(&tenant, user) {
                self.note_presence(room, user, true);
            }
        }
    }

    pub(crate) fn handle_subscribe(
        &mut self,
        conn: ConnId,
        frame: &ClientFrame<'_>,
        id: Option<i64>,
        ob: &mut Outbox,
    ) -> Result<()> {
        let room = room_name(frame)?;
        let since = frame.uint("since")?.map(Seq);
        let (tenant, user) = self.authorize(conn, &room)?;
        // Past the subscription limit the error comes before any new room is made.
        let existing = self.rooms.find(&tenant, &room);
        self.check_subscription_limit(conn, existing)?;
        let room_id = match existing {
            Some(id) => id,
            None => self.rooms.open(&tenant, &room, &self.limits)?,
        };
        // The reply goes first: replay frames follow it.
        let subscribed = self.subscribe(conn, room_id, &user, since)?;
        self.reply(conn, id, ob, |id| {
            let reply = JsonFrame::reply(id, 128)
                .str("room", &room)
                .uint("last_seq", subscribed.last.0)
                .uint("first_seq", subscribed.first.0)
                .uint("read_seq", subscribed.cursors.1)
                .uint("delivered_seq", subscribed.cursors.0);
            if subscribed.truncated {
                reply.bool("truncated", true).finish()
            } else {
                reply.finish()
            }
        });
        self.refill(conn, ob);
        Ok(())
    }

    /// `bad_request` when `conn` has all its subscriptions and `room` (None: a room not
    /// made yet) is not one of them.
    pub(crate) fn check_subscription_limit(
        &self,
        conn: ConnId,
        room: Option<RoomId>,
    ) -> Result<()> {
        let c = self
            .conns
            .get(&conn)
            .ok_or(Error::NotFound("no such connection".into()))?;
        let resubscribe = room.is_some_and(|id| c.subs.contains_key(&id));
        if c.subs.len() >= self.limits.max_subscriptions && !resubscribe {
            return Err(Error::bad_request(format!(
                "at most {} subscriptions per connection",
                self.limits.max_subscriptions
            )));
        }
        Ok(())
    }

    /// Subscribes `conn` to a room as `user` (who becomes a member), replaying after
    /// `since`; the caller queues the reply, then [`Broker::refill`] queues the replay.
    ///
    /// The caller has checked the subscription limit ([`Broker::check_subscription_limit`]).
    ///
    /// # Errors
    /// `not_found` for a connection that is gone.
    pub(crate) fn subscribe(
        &mut self,
        conn: ConnId,
        room_id: RoomId,
        user: &Arc<str>,
        since: Option<Seq>,
    ) -> Result<Subscribed> {
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or(Error::NotFound("no such connection".into()))?;
        let out = c.out.clone();
        self.join(room_id, user);
        let r = self.rooms.get_mut(room_id);
        r.remove_live(conn);
        let last = r.last_seq;
        let first = self.store.first_seq(room_id, last);
        let start = since.map_or(last.next(), |s| s.next().max(first));
        let state = if start > last {
            r.add_live(&out);
            Subscription::Live
        } else {
            Subscription::CatchingUp { next: start }
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.subs.insert(room_id, state);
        }
        let cursors = self.rooms.get(room_id).members.get(user).unwrap_or((0, 0));
        Ok(Subscribed {
            last,
            first,
            truncated: since.is_some_and(|s| s.next() < first),
            cursors,
        })
    }

    /// Queues the next replay batches of a connection's catching-up subscriptions while
    /// its queue has room; switches each to live once it reaches the last seq.
    pub fn refill(&mut self, conn: ConnId, ob: &mut Outbox) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.closing.is_some() {
            return;
        }
        let mut starved = false;
        for (room_id, sub) in c.subs.iter_mut() {
            let Subscription::CatchingUp { mut next } = *sub else {
                continue;
            };
            let room = self.rooms.get_mut(*room_id);
            'replay: while next <= room.last_seq {
                let to = Seq((next.0 + REPLAY_BATCH - 1).min(room.last_seq.0));
                let batch = self.store.range(*room_id, next, to);
                // Messages evicted meanwhile are skipped: replay resumes at what is retained.
                if batch.is_empty() {
                    next = to.next();
                }
                for m in batch {
                    if !c.out.lock().has_replay_room(m.frame.len()) {
                        starved = true;
                        break 'replay;
                    }
                    next = m.seq.next();
                    ob.push(&c.out, m.frame);
                }
            }
            if next > room.last_seq {
                *sub = Subscription::Live;
                room.add_live(&c.out);
            } else {
                *sub = Subscription::CatchingUp { next };
            }
        }
        c.out.lock().wants_refill = starved;
        self.reap_overflowed(ob);
    }

    fn unsubscribe_room(
        &mut self,
        conn: ConnId,
        frame: &ClientFrame<'_>,
    ) -> Result<(RoomId, Arc<str>)> {
        let room = room_name(frame)?;
        let (tenant, user) = self.authorize(conn, &room)?;
        let room_id = self
            .rooms
            .find(&tenant, &room)
            .ok_or(Error::NotFound("no such room".into()))?;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.subs.remove(&room_id);
        }
        self.rooms.get_mut(room_id).remove_live(conn);
        Ok((room_id, user))
    }

    pub(crate) fn handle_unsubscribe(
        &mut self,
        conn: ConnId,
        frame: &ClientFrame<'_>,
        id: Option<i64>,
        ob: &mut Outbox,
    ) -> Result<()> {
        // Unsubscribing from a room never used is harmless: the answer is the same.
        match self.unsubscribe_room(conn, frame) {
            Err(e) if e.code() != "not_found" => return Err(e),
            _ => {}
        }
        self.reply_ok(conn, id, ob);
        Ok(())
    }

    /// Ends the subscriptions of every connection of `user` to a room it left: pushes
    /// belong to members (**Reading**: `leave` on one device leaves on all).
    fn unsubscribe_user(&mut self, room: RoomId, tenant: &Arc<str>, user: &Arc<str>) {
        let conns = self
            .online
            .get(&(tenant.clone(), user.clone()))
            .cloned()
            .unwrap_or_default();
        for conn in conns {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.subs.remove(&room);
            }
            self.rooms.get_mut(room).remove_live(conn);
        }
    }

    pub(crate) fn handle_leave(
        &mut self,
        conn: ConnId,
        frame: &ClientFrame<'_>,
        id: Option<i64>,
        ob: &mut Outbox,
    ) -> Result<()> {
        match self.unsubscribe_room(conn, frame) {
            Ok((room_id, user)) => {
                let r = self.rooms.get_mut(room_id);
                if r.members.leave(&user) {
                    r.moved.remove(&user);
                    let tenant = r.tenant.clone();
                    if let Ok(lsn) = self.store.member(room_id, &tenant, &r.name, &user, false) {
                        self.last_lsn = lsn;
                    }
                    let key = (tenant.clone(), user.clone());
                    if let Some(rooms) = self.memberships.get_mut(&key) {
                        rooms.remove(&room_id);
                    }
                    if self.is_online(&tenant, &user) {
                        self.note_presence(room_id, &user, false);
                    }
                    self.unsubscribe_user(room_id, &tenant, &user);
                }
            }
            Err(e) if e.code() == "not_found" => {}
            Err(e) => return Err(e),
        }
        self.reply_ok(conn, id, ob);
        Ok(())
    }

    fn reply_ok(&mut self, conn: ConnId, id: Option<i64>, ob: &mut Outbox) {
        self.reply(conn, id, ob, |id| JsonFrame::reply(id, 0).finish());
    }

    pub(crate) fn handle_history(
        &mut self,
        conn: ConnId,
        frame: &ClientFrame<'_>,
        id: Option<i64>,
        ob: &mut Outbox,
    ) -> Result<()> {
        let room = room_name(frame)?;
        let before = frame.uint("before")?.map(Seq);
        let limit = frame
            .uint("limit")?
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
            .min(self.limits.max_history_limit as u64);
        let (tenant, _) = self.authorize(conn, &room)?;
        let messages = match self.rooms.find(&tenant, &room) {
            Some(room_id) => self.history(room_id, before, limit),
            None => Vec::new(),
        };
        self.reply(conn, id, ob, |id| {
            let size: usize = messages.iter().map(|m| m.frame.len()).sum();
            JsonFrame::reply(id, size + messages.len())
                .raw_array("messages", messages.iter().map(|m| m.json()))
                .finish()
        });
        Ok(())
    }

    /// Up to `limit` messages before `before` (default: all), newest kept when the page
    /// would pass `max_batch_bytes`; ascending.
    pub fn history(&self, room_id: RoomId, before: Option<Seq>, limit: u64) -> Vec<StoredMessage> {
        let last = self.rooms.get(room_id).last_seq;
        let to = before.map_or(last, |b| Seq(b.0.saturating_sub(1)).min(last));
        if limit == 0 || to.0 == 0 {
            return Vec::new();
        }
        let mut messages = self.store.newest(room_id, to, limit);
        let mut bytes = 0;
        let keep = messages
            .iter()
            .rev()
            .take_while(|m| {
                bytes += m.frame.len();
                bytes <= self.limits.max_batch_bytes
            })
            .count()
            .max(1)
            .min(messages.len());
        messages.drain(..messages.len() - keep);
        messages
    }

    /// Server-side publish (HTTP API, embedding): the same guarantees as `send` once the
    /// returned log position is durable.
    ///
    /// # Errors
    /// `bad_request` for invalid ids or a body that is not JSON or is past the
    /// [`json_limits`], `too_large` for a big body, `internal` on storage failure.
    pub fn publish(
        &mut self,
        tenant: &str,
        room: &str,
        from: &str,
        cid: &str,
        body: &str,
        now: Now,
    ) -> Result<(Accepted, Lsn)> {
        if !is_valid_id(tenant) || !is_valid_id(room) || !is_valid_id(from) {
            return Err(Error::bad_request(
                "tenant, room and from must be 1-128 chars of [A-Za-z0-9_.:@/-]",
            ));
        }
        match json_limits::check(body) {
            Ok(()) => {}
            Err(Refusal::NotJson) => return Err(Error::bad_request("body must be JSON")),
            Err(refusal) => {
                return Err(Error::bad_request(format!("body refused: {refusal}")));
            }
        }
        self.append(&Arc::from(tenant), room, &Arc::from(from), cid, body, now)
    }
}
