//! The Receipts section of the protocol: `ack`, `read`, `receipts`, `read_by`,
//! `unread_by`, `unread`, and the coalesced `receipts` pushes.
//!
//! Cursor moves only touch memory: the room remembers who moved, and every
//! `receipt_interval_ms` [`Broker::flush_receipts`] pushes one frame per small room and
//! writes the moved cursors to the log. So a burst of 100,000 `read` frames costs
//! 100,000 cursor moves, not 100,000 pushes or log records. A crash may lose the cursor
//! moves of the last interval (never a message); a clean shutdown flushes them.

use std::sync::Arc;

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::fanout::Outbox;
use crate::frames::{self, JsonFrame};
use crate::ids::{ConnId, RoomId, Seq};
use crate::inbound::ClientFrame;
use crate::outbound::Priority;

/// `read_by` / `unread_by` page size when `limit` is omitted.
const DEFAULT_PAGE: u64 = 100;
/// Largest `read_by` / `unread_by` page.
const MAX_PAGE: u64 = 1_000;

/// Appends `items` to `buf` as a JSON array of strings.
pub(crate) fn json_strings<'a>(buf: &mut Vec<u8>, items: impl IntoIterator<Item = &'a str>) {
    buf.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        frames::write_json_str(buf, item);
    }
    buf.push(b']');
}

impl Broker {
    /// The room of a frame's `room`, which the connection's user must be a member of.
    fn member_room(&self, conn: ConnId, frame: &ClientFrame<'_>) -> Result<(RoomId, Arc<str>)> {
        let room = crate::chat::room_name(frame)?;
        let (tenant, user) = self.authorize(conn, &room)?;
        self.rooms
            .find(&tenant, &room)
            .filter(|id| self.rooms.get(*id).members.is_member(&user))
            .map(|id| (id, user))
            .ok_or(Error::NotFound(
                format!("not a member of room {room:?} (subscribe or send first)").into(),
            ))
    }

    fn required_seq(frame: &ClientFrame<'_>) -> Result<Seq> {
        frame
            .uint("seq")?
            .map(Seq)
            .ok_or(Error::bad_request("\"seq\" is required"))
    }

    /// `ack` (`read == false`) and `read`: move the cursors, never backwards.
    pub(crate) fn handle_cursor(
        &mut self,
        conn: ConnId,
        frame: &ClientFrame<'_>,
        id: Option<i64>,
        read: bool,
        ob: &mut Outbox,
    ) -> Result<()> {
        let (room_id, user) = self.member_room(conn, frame)?;
        let seq = Self::required_seq(frame)?;
        let last = self.rooms.get(room_id).last_seq;
        if seq > last {
            return Err(Error::bad_request(format!(
                "seq {seq} is above the room's last_seq {last}"
            )));
        }
        let read_to = if read { seq } else { Seq(0) };
        let (delivered, read_seq) = self.move_cursors(room_id, &user, seq, read_to);
        self.reply(conn, id, ob, |id| {
            JsonFrame::reply(id, 48)
                .uint("delivered_seq", delivered)
                .uint("read_seq", read_seq)
                .finish()
        });
        Ok(())
    }

    /// Moves a member's cursors up to at least `(delivered, read)`; returns them after.
    pub(crate) fn move_cursors(
        &mut self,
        room: RoomId,
        user: &Arc<str>,
        delivered: Seq,
        read: Seq,
    ) -> (u64, u64) {
        let r = self.rooms.get_mut(room);
        match r.members.advance(user, delivered.0, read.0) {
            Some((cursors, changed)) => {
                if changed {
                    r.moved.insert(user.clone());
                    self.dirty_rooms.insert(room);
                }
                cursors
            }
            None => (0, 0),
        }
    }

    pub(crate) fn handle_receipts(
        &mut self,
        conn: ConnId,
        frame: &ClientFrame<'_>,
        id: Option<i64>,
        ob: &mut Outbox,
    ) -> Result<()> {
        let (room_id, _) = self.member_room(conn, frame)?;
        let seq = Self::required_seq(frame)?;
        let (members, delivered, read) = self.rooms.get(room_id).members.counts(seq.0);
        self.reply(conn, id, ob, |id| {
            JsonFrame::reply(id, 96)
                .uint("seq", seq.0)
                .uint("members", members as u64)
                .uint("delivered", delivered as u64)
                .uint("read", read as u64)
                .finish()
        });
        Ok(())
    }

    /// `read_by` (`unread == false`) and `unread_by`: a page of users, in user order.
    pub(crate) fn handle_read_by(
        &mut self,
        conn: ConnId,
        frame: &ClientFrame<'_>,
        id: Option<i64>,
        unread: bool,
        ob: &mut Outbox,
    ) -> Result<()> {
        let (room_id, _) = self.member_room(conn, frame)?;
        let seq = Self::required_seq(frame)?;
        let limit = frame
            .uint("limit")?
            .unwrap_or(DEFAULT_PAGE)
            .clamp(1, MAX_PAGE) as usize;
        let after = frame.opt_string("after")?;
        let members = &self.rooms.get(room_id).members;
        let (users, next) = if unread {
            members.unread_by(seq.0, after.as_deref(), limit)
        } else {
            members.read_by(seq.0, after.as_deref(), limit)
        };
        let mut list = Vec::with_capacity(users.len() * 16 + 2);
        json_strings(&mut list, users.iter().map(|u| &**u));
        self.reply(conn, id, ob, |id| {
            let reply = JsonFrame::reply(id, list.len() + 48).raw("users", &list);
            match next {
                Some(next) => reply.str("next", &next).finish(),
                None => reply.raw("next", b"null").finish(),
            }
        });
        Ok(())
    }

    /// `unread`: for every room the user is a member of, its last seq, the user's read
    /// cursor and the difference.
    pub fn unread_json(&self, conn: ConnId) -> Result<Vec<u8>> {
        let session = self
            .conns
            .get(&conn)
            .and_then(|c| c.session.as_ref())
            .ok_or(Error::Unauthorized("send hello first".into()))?;
        let mut rooms: Vec<RoomId> = self
            .memberships
            .get(&(session.tenant.clone(), session.user.clone()))
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        rooms.sort_by(|a, b| self.rooms.get(*a).name.cmp(&self.rooms.get(*b).name));
        let mut buf = Vec::with_capacity(rooms.len() * 64 + 2);
        buf.push(b'{');
        for (i, room_id) in rooms.into_iter().enumerate() {
            let r = self.rooms.get(room_id);
            let read = r.members.get(&session.user).map_or(0, |(_, read)| read);
            let last = r.last_seq.0;
            if i > 0 {
                buf.push(b',');
            }
            frames::write_json_str(&mut buf, &r.name);
            buf.extend_from_slice(
                format!(
                    ":{{\"last_seq\":{last},\"read_seq\":{read},\"unread\":{}}}",
                    last.saturating_sub(read)
                )
                .as_bytes(),
            );
        }
        buf.push(b'}');
        Ok(buf)
    }

    pub(crate) fn handle_unread(
        &mut self,
        conn: ConnId,
        id: Option<i64>,
        ob: &mut Outbox,
    ) -> Result<()> {
        let rooms = self.unread_json(conn)?;
        self.reply(conn, id, ob, |id| {
            JsonFrame::reply(id, rooms.len() + 16)
                .raw("rooms", &rooms)
                .finish()
        });
        Ok(())
    }

    /// Pushes the coalesced receipt and presence updates of every room that has some
    /// (rooms of at most `receipt_push_max_members` members), and writes the moved
    /// cursors to the log. Called every `receipt_interval_ms`, and at shutdown.
    pub fn flush_receipts(&mut self, ob: &mut Outbox) {
        self.flush_receipts_slot(0, 1, ob);
    }

    /// [`Broker::flush_receipts`] for the rooms of one slot of `slots` (by room id).
    /// Called for each slot in turn, `slots` times per interval, it spreads the pushes
    /// over the interval instead of queueing one for every member of every room at
    /// once (which made the chat frames queued behind them wait for thousands of
    /// writes); each room is still flushed once per interval.
    pub fn flush_receipts_slot(&mut self, slot: u32, slots: u32, ob: &mut Outbox) {
        let max = self.limits.receipt_push_max_members;
        let slots = slots.max(1);
        let due: Vec<RoomId> = self
            .dirty_rooms
            .iter()
            .filter(|r| r.0 % slots == slot % slots)
            .copied()
            .collect();
        for room_id in due {
            self.dirty_rooms.remove(&room_id);
            let r = self.rooms.get_mut(room_id);
            let moved = std::mem::take(&mut r.moved);
            let changes = std::mem::take(&mut r.presence_changes);
            let small = r.members.members() <= max;
            let mut updates = Vec::new();
            for user in &moved {
                let Some((delivered, read)) = r.members.get(user) else {
                    continue;
                };
                // Reads go on when the log fails; its failure is reported by sends.
                let cursors = (delivered, read);
                if let Ok(lsn) = self
                    .store
                    .cursor(room_id, &r.tenant, &r.name, user, cursors)
                {
                    self.last_lsn = lsn;
                }
                if small {
                    updates.push((user.clone(), delivered, read));
                }
            }
            if !updates.is_empty() {
                updates.sort();
                let mut list = Vec::with_capacity(updates.len() * 48 + 2);
                list.push(b'[');
                for (i, (user, delivered, read)) in updates.iter().enumerate() {
                    if i > 0 {
                        list.push(b',');
                    }
                    list.extend_from_slice(b"{\"user\":");
                    frames::write_json_str(&mut list, user);
                    list.extend_from_slice(
                        format!(",\"delivered\":{delivered},\"read\":{read}}}").as_bytes(),
                    );
                }
                list.push(b']');
                let frame = JsonFrame::new("receipts", list.len() + 64)
                    .str("room", &r.name)
                    .raw("updates", &list)
                    .finish();
                ob.fan_out_with(r.live(), &frame, Priority::Ambient);
            }
            if small && !changes.is_empty() {
                let frame = crate::presence::presence_push(&r.name, &changes);
                ob.fan_out_with(r.live(), &frame, Priority::Ambient);
            }
        }
        self.reap_overflowed(ob);
    }
}
