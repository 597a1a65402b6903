//! The broker: connection lifecycle and the dispatch of inbound frames.
//!
//! Sans-IO: it never touches a socket or reads a clock. Bytes come in through
//! [`Broker::feed`], frames go out into [`Outbox`]es, time comes in as [`Now`]. The room
//! operations themselves live in [`crate::chat`]; this file only routes.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{close_code, encode_frame, Decoder, Message, Opcode, Role};
use crate::conn::{Conn, ConnKind, Session};
use crate::error::{Error, Result};
use crate::fanout::Outbox;
use crate::frames;
use crate::ids::{ConnId, RoomId};
use crate::inbound::{ClientFrame, ParseError};
use crate::limits::{Limits, TokenBucket};
use crate::log::Lsn;
use crate::outbound::{Outbound, Priority};
use crate::pending::Waiting;
use crate::room::Rooms;
use crate::store::MessageStore;

/// The time of a call: monotonic for deadlines and rates, wall clock for `ts` fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on a monotonic clock.
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub wall_ms: u64,
}

/// What the caller must do after [`Broker::feed`].
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Everything fed was handled; read more from the socket.
    Idle,
    /// A control frame for the session layer (hello, meetings, …), as JSON text. Call
    /// `feed` with no data once it is handled: the next frames wait, so order holds.
    Control(String),
    /// The connection is closing with this code: stop reading and detach.
    Closing(u16),
}

/// Counters for the metrics endpoint.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Connections attached now.
    pub connections: u64,
    /// Messages accepted by `send` or publish (duplicates excluded).
    pub messages: u64,
    /// Frames queued to connections.
    pub deliveries: u64,
    /// Connections closed as slow consumers (4008).
    pub slow_consumers: u64,
    /// Bad frames received (not JSON, binary, protocol errors).
    pub bad_frames: u64,
    /// Rooms in existence.
    pub rooms: u64,
    /// New rooms refused at the room limits.
    pub rooms_refused: u64,
    /// Bytes waiting in all outbound queues.
    pub queued_bytes: u64,
    /// Replies and pushes waiting for the log's group commit.
    pub log_waiting: u64,
    /// Whether the log takes writes (false once a write or fsync failed).
    pub log_writable: bool,
    /// WebSocket handshakes answered by the core (the rest are answered in Python).
    pub handshakes: u64,
    /// `/healthz` requests answered by the core.
    pub healthz: u64,
    /// Connections closed because no `hello` came in time.
    pub hello_timeouts: u64,
    /// Receipt and presence pushes left out of filling queues (priority under pressure).
    pub ambient_shed: u64,
    /// Meeting signals relayed by the core (the rest go through the session layer).
    pub signals_relayed: u64,
}

/// All chat state of one node.
pub struct Broker {
    pub(crate) limits: Limits,
    pub(crate) rooms: Rooms,
    pub(crate) conns: HashMap<ConnId, Conn>,
    pub(crate) store: Box<dyn MessageStore>,
    pub(crate) stats: Stats,
    /// Effects waiting for the log, in log order.
    pub(crate) waiting: std::collections::VecDeque<Waiting>,
    /// The newest log position written.
    pub(crate) last_lsn: Lsn,
    /// Subscriptions of ended connections, for `hello.resume`.
    pub(crate) parked: crate::resume::Parked,
    /// Rooms of each (tenant, user), for `unread` and presence.
    pub(crate) memberships: HashMap<(Arc<str>, Arc<str>), std::collections::HashSet<RoomId>>,
    /// The connections with an open session of each online (tenant, user).
    pub(crate) online: HashMap<(Arc<str>, Arc<str>), Vec<ConnId>>,
    /// Rooms with receipt or presence updates waiting for the next flush.
    pub(crate) dirty_rooms: std::collections::HashSet<RoomId>,
    /// Which connection holds each meeting seat, for relaying signals.
    pub(crate) seat_routes: crate::signals::SeatRoutes,
    /// Protocol connections by attach time, until `hello` must have come (oldest first).
    greeting: std::collections::VecDeque<(u64, ConnId)>,
    next_conn: u64,
    ping: Bytes,
}

impl Broker {
    /// A broker with no connections over `store`, with the rooms the store recovered.
    pub fn new(limits: Limits, mut store: Box<dyn MessageStore>) -> Self {
        let mut rooms = Rooms::default();
        rooms.new_room_seq = store.new_room_seq();
        let mut memberships: HashMap<_, std::collections::HashSet<RoomId>> = HashMap::new();
        for recovered in store.recovered() {
            let id = rooms.intern(&recovered.tenant, &recovered.name);
            let room = rooms.get_mut(id);
            room.last_seq = recovered.last_seq;
            room.appended = recovered.last_seq;
            for (user, delivered, read) in recovered.members {
                room.members.join(&user);
                room.members.advance(&user, delivered, read);
                memberships
                    .entry((recovered.tenant.clone(), user))
                    .or_default()
                    .insert(id);
            }
        }
        Broker {
            limits,
            rooms,
            conns: HashMap::new(),
            store,
            stats: Stats::default(),
            waiting: std::collections::VecDeque::new(),
            last_lsn: 0,
            parked: crate::resume::Parked::default(),
            memberships,
            online: HashMap::new(),
            dirty_rooms: std::collections::HashSet::new(),
            seat_routes: crate::signals::SeatRoutes::default(),
            greeting: std::collections::VecDeque::new(),
            next_conn: 1,
            ping: encode_frame(Opcode::Ping, b""),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Registers a connection whose handshake is done; `fd` is the core's own duplicate
    /// of its socket. Returns its queue, for the writer.
    pub fn attach(&mut self, fd: Option<OwnedFd>, kind: ConnKind, now: Now) -> Arc<Outbound> {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let out = Arc::new(Outbound::new(id, fd, self.limits.max_queue_bytes));
        let conn = Conn {
            out: out.clone(),
            decoder: Decoder::new(Role::Server, self.limits.max_frame_bytes),
            kind,
            session: None,
            subs: HashMap::new(),
            bad_frames: 0,
            inflight: 0,
            last_recv_ms: now.mono_ms,
            closing: None,
            frames_waiting: 0,
        };
        self.conns.insert(id, conn);
        if kind == ConnKind::Session {
            self.greeting.push_back((now.mono_ms, id));
        }
        out
    }

    /// Closes (1008) the protocol connections that got no session within `timeout_ms`
    /// of their handshake. Returns how many.
    pub fn expire_hellos(&mut self, now: Now, timeout_ms: u64, ob: &mut Outbox) -> usize {
        let mut closed = 0;
        while let Some(&(since, conn)) = self.greeting.front() {
            if now.mono_ms.saturating_sub(since) < timeout_ms {
                break;
            }
            self.greeting.pop_front();
            let waiting = self
                .conns
                .get(&conn)
                .is_some_and(|c| c.session.is_none() && c.closing.is_none());
            if waiting {
                self.close(conn, close_code::POLICY, "hello timeout", false, ob);
                closed += 1;
            }
        }
        self.stats.hello_timeouts += closed as u64;
        closed
    }

    /// Forgets a connection: it leaves every live list. Its queue stays with the writer
    /// until flushed (a close frame may still be on its way).
    pub fn detach(&mut self, conn: ConnId) -> Option<Arc<Outbound>> {
        self.stop_subscriptions(conn);
        self.seat_routes.connection_gone(conn);
        let c = self.conns.remove(&conn)?;
        if let Some(s) = &c.session {
            let (tenant, user) = (s.tenant.clone(), s.user.clone());
            self.count_connection(&tenant, &user, conn, false);
        }
        let out = c.out.clone();
        self.park(c);
        Some(out)
    }

    /// Opens the session of a connection once the control plane verified its token.
    ///
    /// # Errors
    /// `not_found` for an unknown connection, `conflict` when a session is open already,
    /// `bad_request` for invalid ids or room patterns.
    pub fn open_session(
        &mut self,
        conn: ConnId,
        tenant: &str,
        user: &str,
        rooms: Option<&[String]>,
        now: Now,
    ) -> Result<()> {
        let sends = TokenBucket::new(
            self.limits.send_rate_per_s,
            self.limits.send_burst,
            now.mono_ms,
        );
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or(Error::NotFound("no such connection".into()))?;
        if c.session.is_some() {
            return Err(Error::Conflict("session already open".into()));
        }
        if !crate::ids::is_valid_id(tenant) || !crate::ids::is_valid_id(user) {
            return Err(Error::bad_request("invalid tenant or user id"));
        }
        let session = Session::new(tenant, user, rooms, sends)?;
        let (tenant, user) = (session.tenant.clone(), session.user.clone());
        c.session = Some(session);
        self.count_connection(&tenant, &user, conn, true);
        Ok(())
    }

    /// Processes bytes read from a connection's socket (empty to continue after a
    /// [`Inbound::Control`]). Hot ops run here; control ops are handed back one at a time.
    pub fn feed(&mut self, conn: ConnId, data: &[u8], now: Now, ob: &mut Outbox) -> Inbound {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Inbound::Closing(close_code::GOING_AWAY);
        };
        if let Some(code) = c.closing {
            return Inbound::Closing(code);
        }
        if !data.is_empty() {
            c.last_recv_ms = now.mono_ms;
            c.decoder.feed(data);
        }
        let result = loop {
            let c = self.conns.get_mut(&conn).expect("checked above");
            let message = match c.decoder.poll() {
                Ok(Some(m)) => m,
                Ok(None) => break Inbound::Idle,
                Err(e) => {
                    self.stats.bad_frames += 1;
                    break self.close(conn, e.code, e.reason, false, ob);
                }
            };
            let out = c.out.clone();
            match (message, c.kind) {
                (Message::Ping(payload), _) => {
                    ob.push(&out, encode_frame(Opcode::Pong, &payload));
                }
                (Message::Pong(_), _) => {}
                (Message::Close(code), _) => {
                    // Echo the peer's code, as RFC 6455 asks; no code means a normal close.
                    let code = code.map_or(close_code::NORMAL, |(code, _)| code);
                    break self.close(conn, code, "", false, ob);
                }
                (Message::Text(text), ConnKind::Echo) => {
                    ob.push(&out, encode_frame(Opcode::Text, text.as_bytes()));
                }
                (Message::Binary(data), ConnKind::Echo) => {
                    ob.push(&out, encode_frame(Opcode::Binary, &data));
                }
                (Message::Binary(_), ConnKind::Session) => {
                    let err =
                        Error::bad_request("binary frames are reserved; send JSON text frames");
                    if let Some(closing) = self.bad_frame(conn, &err, ob) {
                        break closing;
                    }
                }
                (Message::Text(text), ConnKind::Session) => {
                    if let Some(result) = self.handle_text(conn, text, now, ob) {
                        break result;
                    }
                }
            }
        };
        self.reap_overflowed(ob);
        result
    }

    /// Runs one text frame; `Some` when the caller must act (a control op, a close).
    fn handle_text(
        &mut self,
        conn: ConnId,
        text: String,
        now: Now,
        ob: &mut Outbox,
    ) -> Option<Inbound> {
        let frame = match ClientFrame::parse(&text) {
            Ok(frame) => frame,
            Err(ParseError::NotJson) => {
                return self.bad_frame(conn, &Error::bad_request("frame is not JSON"), ob);
            }
            Err(ParseError::Invalid(why)) => {
                self.reply_error(conn, None, &Error::bad_request(why), ob);
                return None;
            }
            Err(ParseError::Limit { refusal, id }) => {
                self.reply_error(conn, id, &Error::bad_request(refusal.message()), ob);
                return None;
            }
        };
        let id = frame.id();
        if self.conns.get(&conn)?.session.is_none() {
            return Some(Inbound::Control(text));
        }
        let result = match &*frame.op() {
            "send" => self.handle_send(conn, &frame, id, now, ob),
            "subscribe" => self.handle_subscribe(conn, &frame, id, ob),
            "unsubscribe" => self.handle_unsubscribe(conn, &frame, id, ob),
            "leave" => self.handle_leave(conn, &frame, id, ob),
            "history" => self.handle_history(conn, &frame, id, ob),
            "ack" => self.handle_cursor(conn, &frame, id, false, ob),
            "read" => self.handle_cursor(conn, &frame, id, true, ob),
            "receipts" => self.handle_receipts(conn, &frame, id, ob),
            "read_by" => self.handle_read_by(conn, &frame, id, false, ob),
            "unread_by" => self.handle_read_by(conn, &frame, id, true, ob),
            "unread" => self.handle_unread(conn, id, ob),
            "presence" => self.handle_presence(conn, &frame, id, ob),
            "signal" if self.relay_signal(conn, &frame, id, ob) => Ok(()),
            _ => return Some(Inbound::Control(text)),
        };
        if let Err(err) = result {
            self.reply_error(conn, id, &err, ob);
        }
        None
    }

    /// Counts a bad frame and answers it; closes the connection past the limit.
    fn bad_frame(&mut self, conn: ConnId, err: &Error, ob: &mut Outbox) -> Option<Inbound> {
        self.stats.bad_frames += 1;
        let c = self.conns.get_mut(&conn)?;
        c.bad_frames += 1;
        if c.bad_frames > self.limits.max_bad_frames {
            return Some(self.close(conn, close_code::POLICY, "too many bad frames", false, ob));
        }
        self.reply_error(conn, None, err, ob);
        None
    }

    /// Queues the reply to a request of `conn`: only when it had an `id` and the
    /// connection is still attached; `build` makes the frame from the id.
    pub(crate) fn reply(
        &self,
        conn: ConnId,
        id: Option<i64>,
        ob: &mut Outbox,
        build: impl FnOnce(i64) -> Bytes,
    ) {
        if let (Some(id), Some(c)) = (id, self.conns.get(&conn)) {
            ob.push(&c.out, build(id));
        }
    }

    /// Queues an error frame for a connection.
    pub fn reply_error(&mut self, conn: ConnId, id: Option<i64>, err: &Error, ob: &mut Outbox) {
        if let Some(c) = self.conns.get(&conn) {
            let out = c.out.clone();
            ob.push(&out, frames::error(id, err));
        }
    }

    /// Queues JSON text from the control plane (replies, welcome, events), by priority
    /// (meeting traffic is urgent).
    pub fn send_text(
        &mut self,
        conn: ConnId,
        json: &str,
        priority: Priority,
        ob: &mut Outbox,
    ) -> bool {
        let Some(c) = self.conns.get(&conn) else {
            return false;
        };
        let out = c.out.clone();
        let queued = self.push_in_order(&out, frames::text(json), priority, ob);
        self.reap_overflowed(ob);
        queued
    }

    /// Starts closing a connection with `code`; `abort` stops reading it at once.
    pub fn close(
        &mut self,
        conn: ConnId,
        code: u16,
        reason: &str,
        abort: bool,
        ob: &mut Outbox,
    ) -> Inbound {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Inbound::Closing(code);
        };
        let code = *c.closing.get_or_insert(code);
        let out = c.out.clone();
        out.lock().close(code, reason, abort, ob.close_deadline());
        ob.schedule(&out);
        self.stop_subscriptions(conn);
        Inbound::Closing(code)
    }

    /// Tears down the subscriptions of connections that overflowed: they are closing
    /// with 4008 and will resume from the store.
    pub(crate) fn reap_overflowed(&mut self, ob: &mut Outbox) {
        while let Some(conn) = ob.overflowed.pop() {
            self.stats.slow_consumers += 1;
            if let Some(c) = self.conns.get_mut(&conn) {
                c.closing = Some(close_code::SLOW_CONSUMER);
                self.stop_subscriptions(conn);
            }
        }
        self.stats.deliveries += std::mem::take(&mut ob.delivered);
        self.stats.ambient_shed += std::mem::take(&mut ob.shed);
    }

    /// Pings the connections of slot `slot` of `slots` (by id) and closes those silent
    /// for longer than `idle_timeout_ms`; slot 0 also does the log's upkeep. Called once
    /// per slot each heartbeat, the slots in turn, the pings spread over the interval
    /// instead of 15,000 at once. Returns the connections closed.
    pub fn heartbeat(
        &mut self,
        now: Now,
        idle_timeout_ms: u64,
        (slot, slots): (u32, u32),
        ob: &mut Outbox,
    ) -> Vec<ConnId> {
        let slots = u64::from(slots.max(1));
        let slot = u64::from(slot) % slots;
        let mut idle = Vec::new();
        for (id, c) in &self.conns {
            if c.closing.is_some() || id.0 % slots != slot {
                continue;
            }
            if now.mono_ms.saturating_sub(c.last_recv_ms) > idle_timeout_ms {
                idle.push(*id);
            } else {
                ob.push(&c.out, self.ping.clone());
            }
        }
        for id in &idle {
            self.close(*id, close_code::NORMAL, "idle timeout", true, ob);
        }
        if slot == 0 {
            self.maintain(now);
        }
        self.reap_overflowed(ob);
        idle
    }

    /// The log's upkeep: retention, dead files.
    fn maintain(&mut self, now: Now) {
        let rooms = &self.rooms;
        let members = |room: crate::ids::RoomId| -> Vec<crate::store::MemberState> {
            let r = rooms.get(room);
            r.members
                .iter()
                .map(|(u, d, r)| (u.clone(), d, r))
                .collect()
        };
        if let Err(e) = self.store.maintain(now.wall_ms, &members) {
            eprintln!("rushhour: log upkeep: {e}");
        }
    }

    /// Starts closing every connection (server shutdown: 1001, reconnect elsewhere).
    pub fn close_all(&mut self, code: u16, reason: &str, ob: &mut Outbox) {
        self.flush_receipts(ob); // The cursors moved since the last flush reach the log.
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id, code, reason, false, ob);
        }
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.connections = self.conns.len() as u64;
        s.rooms = self.rooms.len() as u64;
        s.rooms_refused = self.rooms.refused();
        s.queued_bytes = self
            .conns
            .values()
            .map(|c| c.out.lock().bytes() as u64)
            .sum();
        s.log_waiting = self.waiting.len() as u64;
        s.log_writable = self.store.durability().failed().is_none();
        s
    }
}
