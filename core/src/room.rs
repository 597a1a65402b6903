//! Rooms: per tenant, each with its seq counter, its members and its live subscribers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::ids::{ConnId, RoomId, Seq};
use crate::limits::Limits;
use crate::outbound::Outbound;
use crate::receipts::RoomCursors;

/// One room of one tenant.
#[derive(Debug)]
pub struct Room {
    /// Owning tenant: rooms of different tenants never meet.
    pub tenant: Arc<str>,
    /// The room id as clients name it.
    pub name: Arc<str>,
    /// Seq of the newest durable message, the one clients see; 0 for an empty room.
    pub last_seq: Seq,
    /// Seq of the newest message handed to the store (durable or on its way).
    pub appended: Seq,
    /// Users who subscribed or sent and have not left, with their receipt cursors.
    pub members: RoomCursors,
    /// Members whose cursors moved since the last receipts flush (pushed and logged then).
    pub moved: HashSet<Arc<str>>,
    /// Members who came online (true) or went offline since the last presence flush.
    pub presence_changes: HashMap<Arc<str>, bool>,
    /// Queues of the connections that get new messages pushed as they happen. A vector,
    /// so fan-out is a tight loop over contiguous handles.
    live: Vec<Arc<Outbound>>,
    /// Index of each live connection in `live`, for O(1) removal.
    positions: HashMap<ConnId, usize>,
}

impl Room {
    fn new(tenant: Arc<str>, name: Arc<str>) -> Self {
        Room {
            tenant,
            name,
            last_seq: Seq(0),
            appended: Seq(0),
            members: RoomCursors::new(),
            moved: HashSet::new(),
            presence_changes: HashMap::new(),
            live: Vec::new(),
            positions: HashMap::new(),
        }
    }

    /// The live subscribers' queues.
    pub fn live(&self) -> &[Arc<Outbound>] {
        &self.live
    }

    /// Whether new messages are pushed to `conn`.
    pub fn is_live(&self, conn: ConnId) -> bool {
        self.positions.contains_key(&conn)
    }

    /// Starts pushing new messages to `out` (idempotent).
    pub fn add_live(&mut self, out: &Arc<Outbound>) {
        if !self.positions.contains_key(&out.conn) {
            self.positions.insert(out.conn, self.live.len());
            self.live.push(out.clone());
        }
    }

    /// Stops pushing to `conn`; returns whether it was live.
    pub fn remove_live(&mut self, conn: ConnId) -> bool {
        let Some(at) = self.positions.remove(&conn) else {
            return false;
        };
        self.live.swap_remove(at);
        if let Some(moved) = self.live.get(at) {
            self.positions.insert(moved.conn, at);
        }
        true
    }
}

/// Every room, interned by tenant, then name: a lookup borrows both, allocating nothing,
/// and a tenant's map says how many rooms it has.
#[derive(Debug, Default)]
pub struct Rooms {
    index: HashMap<Arc<str>, HashMap<Arc<str>, RoomId>>,
    rooms: Vec<Room>,
    refused: u64,
    /// The seq a new room counts from (its first message is the next one): above every
    /// seq the store may have lost with rooms it no longer knows (see
    /// [`crate::store::MessageStore::new_room_seq`]).
    pub new_room_seq: Seq,
}

impl Rooms {
    /// The room's id, creating the room on first use unless that would pass
    /// `max_rooms` or the tenant's `max_rooms_per_tenant`.
    ///
    /// # Errors
    /// `forbidden` for a new room past either limit (existing rooms stay open).
    pub fn open(&mut self, tenant: &Arc<str>, name: &str, limits: &Limits) -> Result<RoomId> {
        if let Some(id) = self.find(tenant, name) {
            return Ok(id);
        }
        let held = self.index.get(tenant).map_or(0, HashMap::len);
        let refusal = if held >= limits.max_rooms_per_tenant {
            Some(format!(
                "no new room: the tenant has {held} rooms, its limit"
            ))
        } else if self.rooms.len() >= limits.max_rooms {
            Some(format!(
                "no new room: the server has {} rooms, its limit",
                self.rooms.len()
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            self.refused += 1;
            return Err(Error::Forbidden(why.into()));
        }
        Ok(self.intern(tenant, name))
    }

    /// The room's id, creating the room on first use whatever the limits: for rooms
    /// recovered from the log, which exist already.
    pub fn intern(&mut self, tenant: &Arc<str>, name: &str) -> RoomId {
        let names = self.index.entry(tenant.clone()).or_default();
        if let Some(id) = names.get(name) {
            return *id;
        }
        let id = RoomId(self.rooms.len() as u32);
        let name: Arc<str> = name.into();
        let mut room = Room::new(tenant.clone(), name.clone());
        (room.last_seq, room.appended) = (self.new_room_seq, self.new_room_seq);
        self.rooms.push(room);
        names.insert(name, id);
        id
    }

    /// New rooms refused by [`Rooms::open`] so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The room's id if it exists.
    pub fn find(&self, tenant: &str, name: &str) -> Option<RoomId> {
        self.index.get(tenant)?.get(name).copied()
    }

    /// The room of a valid id.
    ///
    /// # Panics
    /// On an id not made by this `Rooms` (a bug).
    pub fn get(&self, id: RoomId) -> &Room {
        &self.rooms[id.0 as usize]
    }

    /// The room of a valid id, mutably.
    ///
    /// # Panics
    /// On an id not made by this `Rooms` (a bug).
    pub fn get_mut(&mut self, id: RoomId) -> &mut Room {
        &mut self.rooms[id.0 as usize]
    }

    /// How many rooms exist.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Whether no room exists.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_isolated() {
        let mut rooms = Rooms::default();
        let acme: Arc<str> = "acme".into();
        let globex: Arc<str> = "globex".into();
        let a = rooms.intern(&acme, "general");
        let g = rooms.intern(&globex, "general");
        assert_ne!(a, g);
        assert_eq!(rooms.intern(&acme, "general"), a);
        assert_eq!(rooms.find(&globex, "general"), Some(g));
        assert_eq!(rooms.find(&globex, "random"), None);
    }

    #[test]
    fn new_rooms_stop_at_the_tenant_and_server_limits() {
        let limits = Limits {
            max_rooms: 3,
            max_rooms_per_tenant: 2,
            ..Limits::default()
        };
        let mut rooms = Rooms::default();
        let (acme, globex): (Arc<str>, Arc<str>) = ("acme".into(), "globex".into());
        let a = rooms.open(&acme, "a", &limits).unwrap();
        rooms.open(&acme, "b", &limits).unwrap();
        let refused = rooms.open(&acme, "c", &limits).unwrap_err();
        assert_eq!(refused.code(), "forbidden");
        assert!(
            refused.to_string().contains("tenant has 2 rooms"),
            "{refused}"
        );
        assert_eq!(
            rooms.open(&acme, "a", &limits).unwrap(),
            a,
            "existing rooms stay open"
        );
        rooms.open(&globex, "a", &limits).unwrap();
        let full = rooms.open(&globex, "b", &limits).unwrap_err();
        assert!(full.to_string().contains("server has 3 rooms"), "{full}");
        assert_eq!(rooms.refused(), 2);
        assert_eq!(
            rooms.find(&acme, "c"),
            None,
            "a refused room is not created"
        );
        // Recovered rooms exist already: interned past the limits, then counted.
        rooms.intern(&acme, "from-the-log");
        assert_eq!(rooms.len(), 4);
        assert!(rooms.open(&acme, "d", &limits).is_err());
    }

    #[test]
    fn live_set_add_remove() {
        let mut room = Room::new("t".into(), "r".into());
        let outs: Vec<_> = (0..4)
            .map(|i| Arc::new(Outbound::new(ConnId(i), None, 1000)))
            .collect();
        for o in &outs {
            room.add_live(o);
        }
        room.add_live(&outs[0]);
        assert_eq!(room.live().len(), 4);
        assert!(room.remove_live(ConnId(1)));
        assert!(!room.remove_live(ConnId(1)));
        assert!(room.remove_live(ConnId(3)));
        let mut left: Vec<u64> = room.live().iter().map(|o| o.conn.0).collect();
        left.sort();
        assert_eq!(left, vec![0, 2]);
        assert!(room.remove_live(ConnId(0)));
        assert_eq!(room.live()[0].conn, ConnId(2));
    }
}
