//! The engine: the broker behind its lock, the writer thread, and the clock, as one
//! handle for the binding. Each call takes the lock once, collects its outbound effects
//! in an [`Outbox`], and hands the ready queues to the writer after releasing the lock.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::accept::Listener;
use crate::batch::{Applied, Batch, Submitted};
use crate::broker::{Broker, Inbound, Now, Stats};
use crate::chat::Accepted;
use crate::clock::Clock;
use crate::codec::close_code;
use crate::conn::ConnKind;
use crate::error::{Error, Result};
use crate::fanout::Outbox;
use crate::handshake::Origins;
use crate::health::Health;
use crate::ids::ConnId;
use crate::inbox::{ConnEvent, Inbox};
use crate::limits::Limits;
use crate::log::{Durability, Lsn};
use crate::outbound::{Priority, State};
use crate::reader::{BatchFn, Reader, UpgradeFn};
use crate::store::MessageStore;
use crate::sync::lock;
use crate::writer::Writer;

/// Longest an HTTP publish waits for the log before it is answered `internal`.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// A running broker with its socket writer.
pub struct Engine {
    broker: Arc<Mutex<Broker>>,
    writer: Arc<Writer>,
    reader: Reader,
    submitted: Arc<Submitted>,
    inbox: Arc<Inbox>,
    health: Arc<Health>,
    clock: Clock,
    close_timeout_ms: u64,
}

impl Engine {
    /// Starts an engine over `store`.
    ///
    /// # Errors
    /// When the writer thread cannot start.
    pub fn new(limits: Limits, store: Box<dyn MessageStore>) -> io::Result<Engine> {
        let clock = Clock::default();
        let close_timeout_ms = limits.close_timeout_ms;
        let durability = store.durability().clone();
        let broker = Arc::new(Mutex::new(Broker::new(limits, store)));
        let weak = Arc::downgrade(&broker);
        let writer = Arc::new(Writer::spawn(
            clock,
            Box::new(move |conn| {
                let Some(broker) = weak.upgrade() else {
                    return Vec::new();
                };
                let mut ob = Outbox::new(clock.mono_ms(), close_timeout_ms);
                lock(&broker).refill(conn, &mut ob);
                ob.ready
            }),
        )?);
        let inbox = Arc::new(Inbox::new()?);
        let health = Arc::new(Health::new(durability.clone()));
        let (upgrade_broker, upgrade_writer) = (Arc::downgrade(&broker), Arc::downgrade(&writer));
        let on_upgrade: UpgradeFn = Box::new(move |fd, response, rest| {
            let (Some(broker), Some(writer)) = (upgrade_broker.upgrade(), upgrade_writer.upgrade())
            else {
                return Err(io::Error::other("the engine is shutting down"));
            };
            let now = clock.now();
            let mut ob = Outbox::new(now.mono_ms, close_timeout_ms);
            let (out, inbound) = {
                let mut b = lock(&broker);
                let out = b.attach(Some(fd), ConnKind::Session, now);
                b.stats.handshakes += 1;
                ob.push(&out, response);
                // Nothing but this connection's own frames can reach its queue before
                // the writer knows it: it has no session yet.
                let inbound = if rest.is_empty() {
                    Inbound::Idle
                } else {
                    b.feed(out.conn, rest, now, &mut ob)
                };
                b.release(&mut ob);
                b.reap_overflowed(&mut ob);
                (out, inbound)
            };
            if let Err(e) = writer.attach(out.clone()) {
                lock(&broker).detach(out.conn);
                return Err(e);
            }
            hand_over(&writer, ob);
            Ok((out, inbound))
        });
        let submitted = Arc::new(Submitted::default());
        let handle = Handle {
            broker: Arc::downgrade(&broker),
            writer: Arc::downgrade(&writer),
            clock,
            close_timeout_ms,
        };
        let (batches, queue) = (handle.clone(), submitted.clone());
        let on_batches: BatchFn = Box::new(move || {
            batches
                .with(|b, now, ob| b.apply_submitted(&queue, now, ob))
                .unwrap_or_default()
        });
        let reads = handle.clone();
        let reader = Reader::spawn(
            Box::new(move |conn, data| {
                reads
                    .with(|b, now, ob| b.feed(conn, data, now, ob))
                    .unwrap_or(Inbound::Closing(close_code::GOING_AWAY))
            }),
            on_upgrade,
            on_batches,
            inbox.clone(),
            health.clone(),
        )?;
        // After each group commit: release the replies and fan-out it made durable (what
        // `Handle::with` does after any work).
        durability.on_durable(Box::new(move || {
            handle.with(|_, _, _| ());
        }));
        Ok(Engine {
            broker,
            writer,
            reader,
            submitted,
            inbox,
            health,
            clock,
            close_timeout_ms,
        })
    }

    /// See [`locked`].
    fn with<R>(&self, f: impl FnOnce(&mut Broker, Now, &mut Outbox) -> R) -> R {
        locked(
            &self.broker,
            &self.writer,
            self.clock,
            self.close_timeout_ms,
            f,
        )
    }

    /// Takes over a socket after its handshake; `fd` is the core's own duplicate (None:
    /// a connection whose frames only queue up, for measuring the core). With `read`,
    /// the core also reads it once a [`Engine::feed`] (of the bytes read after the
    /// handshake, maybe none) has left nothing for the caller; control frames then
    /// arrive through [`Engine::take_events`].
    ///
    /// # Errors
    /// When the socket cannot be registered.
    pub fn attach(&self, fd: Option<OwnedFd>, kind: ConnKind, read: bool) -> io::Result<ConnId> {
        let out = self.with(|b, now, _| b.attach(fd, kind, now));
        let conn = out.conn;
        let attached = self.writer.attach(out.clone()).and_then(|()| {
            if read {
                self.reader.attach(&out)
            } else {
                Ok(())
            }
        });
        if let Err(e) = attached {
            self.detach(conn);
            return Err(e);
        }
        Ok(conn)
    }

    /// Accepts connections on a listening socket: the core answers WebSocket handshakes
    /// to `/ws` (from `origins`, when listed) and hands every other request to the
    /// control plane as a [`ConnEvent::Http`].
    ///
    /// # Errors
    /// When the socket cannot be made non-blocking or registered.
    pub fn listen(&self, fd: OwnedFd, origins: Vec<String>) -> io::Result<()> {
        self.reader.listen(Listener::new(fd, Origins(origins))?)
    }

    /// The eventfd that is readable while events wait in [`Engine::take_events`].
    pub fn events_fd(&self) -> std::os::fd::RawFd {
        self.inbox.fd()
    }

    /// Control frames, closes and ends of the connections the core reads.
    pub fn take_events(&self) -> Vec<(ConnId, ConnEvent)> {
        self.inbox.take()
    }

    /// See [`Broker::feed`]. When everything fed was handled, a connection the core
    /// reads is read again (no second call after a control frame).
    pub fn feed(&self, conn: ConnId, data: &[u8]) -> Inbound {
        let (inbound, out) = self.with(|b, now, ob| {
            let inbound = b.feed(conn, data, now, ob);
            let out = (inbound == Inbound::Idle)
                .then(|| b.conns.get(&conn).map(|c| c.out.clone()))
                .flatten();
            (inbound, out)
        });
        if let Some(out) = out {
            self.reader.start_reading(&out);
        }
        inbound
    }

    /// Hands a batch of the session layer's work to the reader thread, which applies it
    /// between its reads (see [`crate::batch`]); returns at once.
    pub fn submit(&self, batch: Batch) {
        if !batch.is_empty() {
            self.submitted.push(batch);
            self.reader.batches_waiting();
        }
    }

    /// Queues JSON text for a connection after everything submitted so far; false if
    /// it is gone or closing.
    pub fn send_text_after_submitted(&self, conn: ConnId, json: &str, priority: Priority) -> bool {
        let (applied, sent) = self.with(|b, now, ob| {
            let applied = b.apply_submitted(&self.submitted, now, ob);
            (applied, b.send_text(conn, json, priority, ob))
        });
        self.applied(applied);
        sent
    }

    fn applied(&self, applied: Applied) {
        for out in &applied.resume {
            self.reader.start_reading(out);
        }
        for (conn, event) in applied.events {
            self.inbox.push(conn, event);
        }
    }

    /// See [`Broker::open_session`].
    ///
    /// # Errors
    /// As [`Broker::open_session`].
    pub fn open_session(
        &self,
        conn: ConnId,
        tenant: &str,
        user: &str,
        rooms: Option<&[String]>,
    ) -> Result<()> {
        self.with(|b, now, _| b.open_session(conn, tenant, user, rooms, now))
    }

    /// See [`Broker::resume`].
    ///
    /// # Errors
    /// As [`Broker::resume`].
    pub fn resume(&self, conn: ConnId, old: ConnId) -> Result<Vec<String>> {
        self.with(|b, _, ob| b.resume(conn, old, ob))
    }

    /// Queues JSON text for a connection; false if it is gone or closing.
    pub fn send_text(&self, conn: ConnId, json: &str, priority: Priority) -> bool {
        self.with(|b, _, ob| b.send_text(conn, json, priority, ob))
    }

    /// Queues JSON texts for many connections in one crossing (events to a meeting).
    pub fn send_text_many(&self, conns: &[ConnId], json: &str, priority: Priority) {
        let frame = crate::frames::text(json);
        self.with(|b, _, ob| {
            for conn in conns {
                if let Some(c) = b.conns.get(conn) {
                    let out = c.out.clone();
                    ob.push_with(&out, frame.clone(), priority);
                }
            }
        });
    }

    /// Starts closing a connection.
    pub fn close(&self, conn: ConnId, code: u16, reason: &str) {
        self.with(|b, _, ob| b.close(conn, code, reason, false, ob));
    }

    /// Ends a connection's session: the writer closes the socket once its queue is
    /// flushed, or at the close deadline.
    pub fn detach(&self, conn: ConnId) {
        let out = self.with(|b, _, ob| {
            let out = b.detach(conn)?;
            let mut q = out.lock();
            if q.state() == State::Open && !q.is_empty() {
                q.close(
                    crate::codec::close_code::GOING_AWAY,
                    "",
                    true,
                    ob.close_deadline(),
                );
            }
            drop(q);
            Some(out)
        });
        if let Some(out) = out {
            self.reader.detach(&out);
            self.writer.detach(&out);
        }
    }

    /// The IP address of `conn`'s peer, read from its socket (None: no such connection,
    /// no socket, or not an IP socket), IPv4-mapped IPv6 as IPv4. For limits per source
    /// address. Read under the broker's lock: the socket stays open meanwhile.
    pub fn peer_ip(&self, conn: ConnId) -> Option<std::net::IpAddr> {
        use std::os::fd::FromRawFd;
        self.with(|b, _, _| {
            let fd = b.conns.get(&conn)?.out.raw_fd()?;
            // SAFETY: the connection owns `fd`, open while it is in `conns` (under the
            // lock held here); `ManuallyDrop` keeps this borrowed view from closing it.
            let stream =
                std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
            stream.peer_addr().ok().map(|a| a.ip().to_canonical())
        })
    }

    /// Server-side publish; see [`Broker::publish`]. Returns once the message is durable.
    ///
    /// # Errors
    /// As [`Broker::publish`]; `internal` when the log fails before the message is durable.
    pub fn publish(
        &self,
        tenant: &str,
        room: &str,
        from: &str,
        cid: &str,
        body: &str,
    ) -> Result<Accepted> {
        let (accepted, lsn, durability) = self.with(|b, now, _| {
            let (accepted, lsn) = b.publish(tenant, room, from, cid, body, now)?;
            Ok::<_, Error>((accepted, lsn, b.store.durability().clone()))
        })?;
        wait_durable(&durability, lsn)?;
        // Visible (last_seq, fan-out, the sender's cursors) before the caller hears back.
        self.with(|_, _, _| ());
        Ok(accepted)
    }

    /// Why the log stopped taking writes, if it did (reads go on).
    pub fn store_failure(&self) -> Option<String> {
        lock(&self.broker).store_failure()
    }

    /// Up to `limit` messages of a room before `before`, as `msg` JSON texts, ascending.
    ///
    /// # Errors
    /// `bad_request` for invalid ids.
    pub fn history(
        &self,
        tenant: &str,
        room: &str,
        before: Option<u64>,
        limit: u64,
    ) -> Result<Vec<String>> {
        if !crate::ids::is_valid_id(tenant) || !crate::ids::is_valid_id(room) {
            return Err(Error::bad_request("invalid tenant or room id"));
        }
        let b = lock(&self.broker);
        let Some(room_id) = b.rooms.find(tenant, room) else {
            return Ok(Vec::new());
        };
        let limit = limit.min(b.limits().max_history_limit as u64);
        Ok(b.history(room_id, before.map(crate::ids::Seq), limit)
            .iter()
            .map(|m| String::from_utf8_lossy(m.json()).into_owned())
            .collect())
    }

    /// Pushes the coalesced receipt and presence updates and logs the moved cursors of
    /// the rooms of one slot; see [`Broker::flush_receipts_slot`].
    pub fn flush_receipts(&self, slot: u32, slots: u32) {
        self.with(|b, _, ob| b.flush_receipts_slot(slot, slots, ob));
    }

    /// Queues the `welcome` of a session just opened: `head` is its JSON object, to which
    /// the user's `unread` object is added as the last key. One crossing and one lock for
    /// what a login needs after its session is open. False if the connection is gone.
    ///
    /// # Errors
    /// `unauthorized` before the session is open; `bad_request` if `head` is not a JSON
    /// object's text.
    pub fn welcome(&self, conn: ConnId, head: &str) -> Result<bool> {
        let Some(open) = head.trim_end().strip_suffix('}') else {
            return Err(Error::bad_request("welcome must be a JSON object"));
        };
        self.with(|b, _, ob| {
            let unread = b.unread_json(conn)?;
            let mut text = String::with_capacity(open.len() + unread.len() + 12);
            text.push_str(open);
            text.push_str(",\"unread\":");
            text.push_str(std::str::from_utf8(&unread).unwrap_or("{}"));
            text.push('}');
            Ok(b.send_text(conn, &text, Priority::Normal, ob))
        })
    }

    /// Tells the core who holds a meeting seat (None: it is reconnecting), so that signals
    /// to it are relayed without the session layer; see [`crate::signals`].
    pub fn route_seat(&self, meeting: &str, pid: &str, conn: Option<ConnId>, viewer: bool) {
        lock(&self.broker)
            .seat_routes
            .set(meeting, pid, conn, viewer);
    }

    /// Forgets a meeting seat (left, removed, expired, ended).
    pub fn unroute_seat(&self, meeting: &str, pid: &str) {
        lock(&self.broker).seat_routes.remove(meeting, pid);
    }

    /// Sets (or, with None, deletes) a durable control-plane value (a meeting, a seat…);
    /// returns once it is durable. (The session layer queues its records in a [`Batch`]
    /// instead, and its answers wait for them there.)
    ///
    /// # Errors
    /// `internal` when the log is not taking writes or fails before the value is durable.
    pub fn put_state(&self, space: &str, key: &str, value: Option<&str>) -> Result<()> {
        let (lsn, durability) = self.with(|b, _, _| {
            let lsn = b.store.put_state(space, key, value)?;
            b.last_lsn = lsn;
            Ok::<_, Error>((lsn, b.store.durability().clone()))
        })?;
        wait_durable(&durability, lsn)
    }

    /// Every durable control-plane value of a space, sorted by key.
    pub fn states(&self, space: &str) -> Vec<(String, String)> {
        lock(&self.broker).store.states(space)
    }

    /// Pings the connections of slot `slot` of `slots` (see [`Broker::heartbeat`]);
    /// closes the idle ones. Returns how many were closed.
    pub fn heartbeat(&self, idle_timeout_ms: u64, slot: u32, slots: u32) -> usize {
        self.with(|b, now, ob| b.heartbeat(now, idle_timeout_ms, (slot, slots), ob).len())
    }

    /// Closes every connection with `code` and waits up to `timeout` for the frames to
    /// reach the sockets and the log's last records to be durable. Returns whether
    /// everything was flushed.
    pub fn shutdown(&self, code: u16, reason: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        // What the session layer submitted last (a seat's record…) goes in first, and the
        // frames waiting for it (a join's reply) go out before the close frames.
        let (durability, last) = self.with(|b, now, ob| {
            b.apply_submitted(&self.submitted, now, ob);
            (b.store.durability().clone(), b.last_lsn)
        });
        let mut logged = durability.wait(last, left()).is_ok();
        let last = self.with(|b, _, ob| {
            b.release(ob);
            b.close_all(code, reason, ob);
            b.last_lsn
        });
        // Sends still in the group commit move their senders' cursors once durable:
        // wait for them, release them, then log the cursors once more and wait again.
        logged &= durability.wait(last, left()).is_ok();
        let last = self.with(|b, _, ob| {
            b.release(ob);
            b.flush_receipts(ob);
            b.last_lsn
        });
        logged &= durability.wait(last, left()).is_ok();
        self.writer.wait_flushed(left()) && logged
    }

    /// Nanoseconds the socket writer has spent writing (see [`Writer::busy_ns`]).
    pub fn writer_busy_ns(&self) -> u64 {
        self.writer.busy_ns()
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        let mut stats = lock(&self.broker).stats();
        stats.healthz = self.health.answered();
        stats
    }

    /// The status code and JSON body the core answers `/healthz` with from now on (see
    /// [`crate::health`]).
    pub fn publish_health(&self, status: u16, body: &str) {
        self.health.publish(status, body);
    }
}

/// Waits until the record at `lsn` is durable; `internal` when the log fails first.
fn wait_durable(durability: &Durability, lsn: Lsn) -> Result<()> {
    durability.wait(lsn, PUBLISH_TIMEOUT).map_err(|reason| {
        Error::Internal(format!("not stored: the log is not taking writes ({reason})").into())
    })
}

/// Runs `f` on the broker under its lock, releases what the log made durable, closes
/// overflowed queues, then wakes the writer for what was queued.
fn locked<R>(
    broker: &Mutex<Broker>,
    writer: &Writer,
    clock: Clock,
    close_timeout_ms: u64,
    f: impl FnOnce(&mut Broker, Now, &mut Outbox) -> R,
) -> R {
    let now = clock.now();
    let mut ob = Outbox::new(now.mono_ms, close_timeout_ms);
    let result = {
        let mut b = lock(broker);
        let result = f(&mut b, now, &mut ob);
        b.release(&mut ob);
        b.reap_overflowed(&mut ob);
        result
    };
    hand_over(writer, ob);
    result
}

/// Gives the writer the queues an outbox made ready, the urgent ones first.
fn hand_over(writer: &Writer, ob: Outbox) {
    writer.schedule_urgent(ob.urgent);
    writer.schedule(ob.ready);
}

/// How the engine's threads and callbacks reach the broker: weakly, so that dropping
/// the engine ends them.
#[derive(Clone)]
struct Handle {
    broker: Weak<Mutex<Broker>>,
    writer: Weak<Writer>,
    clock: Clock,
    close_timeout_ms: u64,
}

impl Handle {
    /// [`locked`], or None once the engine is gone.
    fn with<R>(&self, f: impl FnOnce(&mut Broker, Now, &mut Outbox) -> R) -> Option<R> {
        let (broker, writer) = (self.broker.upgrade()?, self.writer.upgrade()?);
        Some(locked(
            &broker,
            &writer,
            self.clock,
            self.close_timeout_ms,
            f,
        ))
    }
}
