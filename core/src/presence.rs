//! The Presence section of the protocol: a member is online in a room while any of its
//! connections is open. The `presence` query, and coalesced pushes of who came online
//! or went offline in rooms of at most `receipt_push_max_members` members.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::broker::Broker;
use crate::error::Result;
use crate::fanout::Outbox;
use crate::frames::JsonFrame;
use crate::ids::ConnId;
use crate::inbound::ClientFrame;
use crate::receipt_ops::json_strings;

/// Most users listed by a `presence` reply; `count` is always exact.
const MAX_LISTED: usize = 1_000;

/// The `presence` push of a room: who came online and who went offline, sorted.
pub(crate) fn presence_push(room: &str, changes: &HashMap<Arc<str>, bool>) -> Bytes {
    let mut online: Vec<&str> = changes
        .iter()
        .filter(|(_, on)| **on)
        .map(|(u, _)| &**u)
        .collect();
    let mut offline: Vec<&str> = changes
        .iter()
        .filter(|(_, on)| !**on)
        .map(|(u, _)| &**u)
        .collect();
    online.sort_unstable();
    offline.sort_unstable();
    let (mut on, mut off) = (Vec::new(), Vec::new());
    json_strings(&mut on, online);
    json_strings(&mut off, offline);
    JsonFrame::new("presence", on.len() + off.len() + room.len() + 48)
        .str("room", room)
        .raw("online", &on)
        .raw("offline", &off)
        .finish()
}

impl Broker {
    /// Whether `user` of `tenant` has an open connection.
    pub(crate) fn is_online(&self, tenant: &Arc<str>, user: &Arc<str>) -> bool {
        self.online.contains_key(&(tenant.clone(), user.clone()))
    }

    /// A user's session opened (or ended) on `conn`: its first and its last connection
    /// change its presence in every room it is a member of.
    pub(crate) fn count_connection(
        &mut self,
        tenant: &Arc<str>,
        user: &Arc<str>,
        conn: ConnId,
        opened: bool,
    ) {
        let key = (tenant.clone(), user.clone());
        let now_online = if opened {
            let conns = self.online.entry(key.clone()).or_default();
            conns.push(conn);
            conns.len() == 1
        } else {
            let Some(conns) = self.online.get_mut(&key) else {
                return;
            };
            conns.retain(|c| *c != conn);
            if !conns.is_empty() {
                return;
            }
            self.online.remove(&key);
            false
        };
        if !opened || now_online {
            let rooms: Vec<_> = self
                .memberships
                .get(&key)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            for room in rooms {
                self.note_presence(room, user, opened);
            }
        }
    }

    /// Records a presence change of a room member, for the next flush.
    pub(crate) fn note_presence(
        &mut self,
        room: crate::ids::RoomId,
        user: &Arc<str>,
        online: bool,
    ) {
        let r = self.rooms.get_mut(room);
        // Back to where it was since the last flush: nothing to tell.
        if r.presence_changes.get(user) == Some(&!online) {
            r.presence_changes.remove(user);
        } else {
            r.presence_changes.insert(user.clone(), online);
        }
        self.dirty_rooms.insert(room);
    }

    pub(crate) fn handle_presence(
        &mut self,
        conn: ConnId,
        frame: &ClientFrame<'_>,
        id: Option<i64>,
        ob: &mut Outbox,
    ) -> Result<()> {
        let room = crate::chat::room_name(frame)?;
        let (tenant, _) = self.authorize(conn, &room)?;
        let mut online: Vec<&Arc<str>> = match self.rooms.find(&tenant, &room) {
            Some(id) => self
                .rooms
                .get(id)
                .members
                .iter()
                .map(|(user, _, _)| user)
                .filter(|user| self.is_online(&tenant, user))
                .collect(),
            None => Vec::new(),
        };
        let count = online.len();
        online.truncate(MAX_LISTED); // Members iterate in user order: the first ones.
        let mut list = Vec::with_capacity(online.len() * 16 + 2);
        json_strings(&mut list, online.iter().map(|u| &***u));
        self.reply(conn, id, ob, |id| {
            JsonFrame::reply(id, list.len() + 32)
                .raw("online", &list)
                .uint("count", count as u64)
                .finish()
        });
        Ok(())
    }
}
