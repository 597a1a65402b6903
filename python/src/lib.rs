//! `rushhour._core`: the PyO3 binding of rushhour-core. Only conversions live here.
//!
//! Calls that take the broker's lock release the GIL (the reader thread may hold that
//! lock for a while); the core's own threads never take the GIL.

mod errors;

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use rushhour_core::{
    inbox::ConnEvent, outbound::Priority, ConnId, ConnKind, FsyncPolicy, Inbound, Limits, Log,
    LogOptions, MemoryStore, MessageStore, RecoveryError,
};

use errors::CoreError;

/// The broker core: rooms, fan-out, the WebSocket codec and the socket writer.
#[pyclass(frozen, module = "rushhour._core")]
struct Engine {
    inner: rushhour_core::Engine,
    recovery: Vec<String>,
}

/// Work for the core queued during one turn of the session layer (no lock taken), then
/// handed over at once by `Engine.submit`.
#[pyclass(module = "rushhour._core")]
#[derive(Default)]
struct Batch {
    inner: rushhour_core::batch::Batch,
}

#[pymethods]
impl Batch {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// How many actions wait.
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    /// Queues a JSON text frame for a connection (dropped if it is gone or closing by
    /// then). With `urgent` it goes ahead of the chat frames queued there.
    #[pyo3(signature = (conn, json, urgent=false))]
    fn send_text(&mut self, conn: u64, json: &str, urgent: bool) {
        self.inner.send_text(ConnId(conn), json, priority(urgent));
    }

    /// Queues one JSON text frame (encoded once) for many connections.
    #[pyo3(signature = (conns, json, urgent=false))]
    fn send_text_many(&mut self, conns: Vec<u64>, json: &str, urgent: bool) {
        let conns = conns.into_iter().map(ConnId).collect();
        self.inner.send_text_many(conns, json, priority(urgent));
    }

    /// As `Engine.route_seat`.
    #[pyo3(signature = (meeting, participant, conn, viewer=false))]
    fn route_seat(&mut self, meeting: &str, participant: &str, conn: Option<u64>, viewer: bool) {
        self.inner
            .route_seat(meeting, participant, conn.map(ConnId), viewer);
    }

    /// As `Engine.unroute_seat`.
    fn unroute_seat(&mut self, meeting: &str, participant: &str) {
        self.inner.unroute_seat(meeting, participant);
    }

    /// As `Engine.put_state`.
    #[pyo3(signature = (space, key, value))]
    fn put_state(&mut self, space: &str, key: &str, value: Option<&str>) {
        self.inner.put_state(space, key, value);
    }

    /// Reading of a connection goes on after its control frame (`Engine.feed(conn, b"")`).
    fn resume(&mut self, conn: u64) {
        self.inner.resume(ConnId(conn));
    }

    /// As `Engine.flush_receipts`.
    #[pyo3(signature = (slot=0, slots=1))]
    fn flush_receipts(&mut self, slot: u32, slots: u32) {
        self.inner.flush_receipts(slot, slots);
    }

    /// Closes (1008) the connections that sent no `hello` within `timeout_ms` of their
    /// handshake. Queue it about once a second.
    fn expire_hellos(&mut self, timeout_ms: u64) {
        self.inner.expire_hellos(timeout_ms);
    }

    /// As `Engine.heartbeat`.
    #[pyo3(signature = (idle_timeout_ms, slot=0, slots=1))]
    fn heartbeat(&mut self, idle_timeout_ms: u64, slot: u32, slots: u32) {
        self.inner.heartbeat(idle_timeout_ms, slot, slots);
    }
}

/// `(conn, event)` pairs handed to the session layer.
type Events<'py> = Vec<(u64, Bound<'py, PyAny>)>;

fn priority(urgent: bool) -> Priority {
    if urgent {
        Priority::Urgent
    } else {
        Priority::Normal
    }
}

/// Opens the durable log in `data_dir`, or an in-memory store without one.
fn open_store(
    data_dir: Option<std::path::PathBuf>,
    opts: LogOptions,
    memory_retention: usize,
) -> PyResult<(Box<dyn MessageStore>, Vec<String>)> {
    let Some(dir) = data_dir else {
        return Ok((Box::new(MemoryStore::new(memory_retention)), Vec::new()));
    };
    let now = rushhour_core::clock::Clock::default().now().wall_ms;
    let log = Log::open(&dir, opts, now).map_err(|e| match e {
        RecoveryError::Io(io) => PyOSError::new_err(format!("{}: {io}", dir.display())),
        damaged => PyRuntimeError::new_err(damaged.to_string()),
    })?;
    let r = log.report();
    let mut lines = vec![format!(
        "recovered {} records from {} segments in {}",
        r.records,
        r.segments,
        dir.display()
    )];
    lines.extend(r.cuts.iter().cloned());
    Ok((Box::new(log), lines))
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (*, max_queue_bytes=None, max_frame_bytes=None, max_body_bytes=None,
        max_subscriptions=None, max_inflight=None, send_rate_per_s=None, send_burst=None,
        max_bad_frames=None, close_timeout_ms=None, memory_retention_per_room=None,
        receipt_push_max_members=None, max_rooms=None, max_rooms_per_tenant=None,
        data_dir=None, fsync="batch", repair=false, retention_ms=None, room_max_messages=None,
        segment_bytes=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        max_queue_bytes: Option<usize>,
        max_frame_bytes: Option<usize>,
        max_body_bytes: Option<usize>,
        max_subscriptions: Option<usize>,
        max_inflight: Option<usize>,
        send_rate_per_s: Option<f64>,
        send_burst: Option<f64>,
        max_bad_frames: Option<u32>,
        close_timeout_ms: Option<u64>,
        memory_retention_per_room: Option<usize>,
        receipt_push_max_members: Option<usize>,
        max_rooms: Option<usize>,
        max_rooms_per_tenant: Option<usize>,
        data_dir: Option<std::path::PathBuf>,
        fsync: &str,
        repair: bool,
        retention_ms: Option<u64>,
        room_max_messages: Option<u64>,
        segment_bytes: Option<u32>,
    ) -> PyResult<Self> {
        let d = Limits::default();
        let limits = Limits {
            max_queue_bytes: max_queue_bytes.unwrap_or(d.max_queue_bytes),
            max_frame_bytes: max_frame_bytes.unwrap_or(d.max_frame_bytes),
            max_body_bytes: max_body_bytes.unwrap_or(d.max_body_bytes),
            max_subscriptions: max_subscriptions.unwrap_or(d.max_subscriptions),
            max_inflight: max_inflight.unwrap_or(d.max_inflight),
            send_rate_per_s: send_rate_per_s.unwrap_or(d.send_rate_per_s),
            send_burst: send_burst.unwrap_or(d.send_burst),
            max_bad_frames: max_bad_frames.unwrap_or(d.max_bad_frames),
            close_timeout_ms: close_timeout_ms.unwrap_or(d.close_timeout_ms),
            memory_retention_per_room: memory_retention_per_room
                .unwrap_or(d.memory_retention_per_room),
            receipt_push_max_members: receipt_push_max_members
                .unwrap_or(d.receipt_push_max_members),
            // Room ids are 32-bit.
            max_rooms: max_rooms.unwrap_or(d.max_rooms).min(u32::MAX as usize),
            max_rooms_per_tenant: max_rooms_per_tenant.unwrap_or(d.max_rooms_per_tenant),
            ..d
        };
        if limits.max_queue_bytes < 256 << 10 {
            return Err(PyValueError::new_err(
                "max_queue_bytes must be at least 262144",
            ));
        }
        let d = LogOptions::default();
        let opts = LogOptions {
            fsync: fsync
                .parse::<FsyncPolicy>()
                .map_err(PyValueError::new_err)?,
            repair,
            segment_bytes: segment_bytes.unwrap_or(d.segment_bytes).max(4096),
            window: limits.memory_retention_per_room,
            max_per_room: room_max_messages.unwrap_or(d.max_per_room).max(1),
            retention_ms: retention_ms.filter(|&ms| ms > 0),
        };
        let (store, recovery) = open_store(data_dir, opts, limits.memory_retention_per_room)?;
        let inner = rushhour_core::Engine::new(limits, store)
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(Engine { inner, recovery })
    }

    /// What the log's recovery read and cut at start, one line each.
    fn recovery_report(&self) -> Vec<String> {
        self.recovery.clone()
    }

    /// Moves the subscriptions of the session's previous connection `old` (closing it with
    /// 4009 if still open) to `conn`, replaying what `old` did not deliver. Returns the
    /// rooms restored.
    fn resume(&self, py: Python<'_>, conn: u64, old: u64) -> PyResult<Vec<String>> {
        Ok(py
            .detach(|| self.inner.resume(ConnId(conn), ConnId(old)))
            .map_err(CoreError)?)
    }

    /// Pushes the coalesced receipt and presence updates of small rooms, and writes the
    /// cursors moved since the last call to the log. Call every `receipt_interval_ms`;
    /// or, to spread the pushes, once per slot every `receipt_interval_ms / slots`, the
    /// slots in turn.
    #[pyo3(signature = (slot=0, slots=1))]
    fn flush_receipts(&self, py: Python<'_>, slot: u32, slots: u32) {
        py.detach(|| self.inner.flush_receipts(slot, slots));
    }

    /// Queues the `welcome` of a session just opened: `head` is its JSON object text;
    /// the user's `unread` object is added as its last key. False if the connection is
    /// gone.
    fn welcome(&self, py: Python<'_>, conn: u64, head: &str) -> PyResult<bool> {
        Ok(py
            .detach(|| self.inner.welcome(ConnId(conn), head))
            .map_err(CoreError)?)
    }

    /// Tells the core which connection holds a meeting seat (None: reconnecting), so that
    /// signals between connected seats are relayed without Python.
    #[pyo3(signature = (meeting, participant, conn, viewer=false))]
    fn route_seat(
        &self,
        py: Python<'_>,
        meeting: &str,
        participant: &str,
        conn: Option<u64>,
        viewer: bool,
    ) {
        py.detach(|| {
            self.inner
                .route_seat(meeting, participant, conn.map(ConnId), viewer)
        });
    }

    /// Forgets a meeting seat (left, removed, expired, ended).
    fn unroute_seat(&self, py: Python<'_>, meeting: &str, participant: &str) {
        py.detach(|| self.inner.unroute_seat(meeting, participant));
    }

    /// Sets (or, with `value=None`, deletes) a durable control-plane value (a meeting, a
    /// seat…); returns once it is durable (raises `InternalError` when the log fails).
    #[pyo3(signature = (space, key, value))]
    fn put_state(
        &self,
        py: Python<'_>,
        space: &str,
        key: &str,
        value: Option<&str>,
    ) -> PyResult<()> {
        Ok(py
            .detach(|| self.inner.put_state(space, key, value))
            .map_err(CoreError)?)
    }

    /// Every durable control-plane value of `space` as (key, value), sorted by key.
    fn states(&self, space: &str) -> Vec<(String, String)> {
        self.inner.states(space)
    }

    /// Why the log stopped taking writes, or None while it takes them.
    fn store_failure(&self) -> Option<String> {
        self.inner.store_failure()
    }

    /// Takes ownership of `fd` (a duplicate of a socket whose handshake is done) and
    /// becomes its only writer. Returns the connection id. With `read`, the core also
    /// reads the socket once a `feed` has returned None, and hands control frames over
    /// through `take_events`; otherwise the caller feeds it. With `fd=None` the
    /// connection has no socket: its frames only queue up (to its bound), which measures
    /// the core alone in benchmarks.
    #[pyo3(signature = (fd, *, echo=false, read=false))]
    fn attach(&self, py: Python<'_>, fd: Option<i32>, echo: bool, read: bool) -> PyResult<u64> {
        let owned = match fd {
            Some(fd) if fd < 0 => return Err(PyValueError::new_err("invalid file descriptor")),
            // SAFETY: the caller hands over this descriptor (a dup it will not close).
            Some(fd) => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            None => None,
        };
        let kind = if echo {
            ConnKind::Echo
        } else {
            ConnKind::Session
        };
        let conn = py
            .detach(|| self.inner.attach(owned, kind, read))
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(conn.0)
    }

    /// Accepts connections on a listening socket (the core takes over `fd`): WebSocket
    /// handshakes to `/ws` are answered in the core, other requests come back through
    /// `take_events` as `(0, (fd, head))`. With `allowed_origins`, only those browser
    /// origins may open a WebSocket here (the rest go to the HTTP layer, which refuses).
    #[pyo3(signature = (fd, allowed_origins=Vec::new()))]
    fn listen(&self, fd: i32, allowed_origins: Vec<String>) -> PyResult<()> {
        if fd < 0 {
            return Err(PyValueError::new_err("invalid file descriptor"));
        }
        // SAFETY: the caller hands over this descriptor (a dup it will not close).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        self.inner
            .listen(owned, allowed_origins)
            .map_err(|e| PyOSError::new_err(e.to_string()))
    }

    /// A file descriptor that is readable while `take_events` has events.
    fn events_fd(&self) -> i32 {
        self.inner.events_fd()
    }

    /// Events of the connections the core reads, in order: `(conn, str)` a control
    /// frame (call `feed(conn, b"")` once handled: reading goes on when it returns None), `(conn, int)`
    /// closing with that code, `(conn, None)` the stream ended, `(0, (fd, bytes))` an
    /// accepted socket whose request is for the HTTP layer (the caller owns `fd`).
    fn take_events<'py>(&self, py: Python<'py>) -> PyResult<Events<'py>> {
        self.inner
            .take_events()
            .into_iter()
            .map(|(conn, event)| {
                let value = match event {
                    ConnEvent::Control(text) => text.into_pyobject(py)?.into_any(),
                    ConnEvent::Closing(code) => code.into_pyobject(py)?.into_any(),
                    ConnEvent::Ended => py.None().into_bound(py),
                    ConnEvent::Http { fd, head } => {
                        (fd, PyBytes::new(py, &head)).into_pyobject(py)?.into_any()
                    }
                };
                Ok((conn.0, value))
            })
            .collect()
    }

    /// Hands what `batch` queued to the core and empties it: the reader thread applies
    /// it, in order, between its reads; returns at once. A resumed connection's next
    /// control frame (or close) comes through `take_events`.
    fn submit(&self, batch: &Bound<'_, Batch>) {
        let taken = std::mem::take(&mut batch.borrow_mut().inner);
        self.inner.submit(taken);
    }

    /// Queues a JSON text frame after everything submitted so far (applied now); False
    /// if the connection is gone or closing.
    #[pyo3(signature = (conn, json, urgent=false))]
    fn send_text_after_submitted(
        &self,
        py: Python<'_>,
        conn: u64,
        json: &str,
        urgent: bool,
    ) -> bool {
        py.detach(|| {
            self.inner
                .send_text_after_submitted(ConnId(conn), json, priority(urgent))
        })
    }

    /// Processes bytes read from the socket. Returns None (read more), a str (a control
    /// frame's JSON for the session layer; call again with b"" after handling it), or an
    /// int (the connection is closing with that code).
    fn feed<'py>(&self, py: Python<'py>, conn: u64, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        let inbound = py.detach(|| self.inner.feed(ConnId(conn), data));
        inbound_object(py, inbound)
    }

    /// Opens the session of a connection after its token was verified.
    #[pyo3(signature = (conn, tenant, user, rooms=None))]
    fn open_session(
        &self,
        py: Python<'_>,
        conn: u64,
        tenant: &str,
        user: &str,
        rooms: Option<Vec<String>>,
    ) -> PyResult<()> {
        Ok(py
            .detach(|| {
                self.inner
                    .open_session(ConnId(conn), tenant, user, rooms.as_deref())
            })
            .map_err(CoreError)?)
    }

    /// Queues a JSON text frame for a connection; False if it is gone or closing. With
    /// `urgent` (meeting traffic) it goes ahead of the chat frames queued there.
    #[pyo3(signature = (conn, json, urgent=false))]
    fn send_text(&self, py: Python<'_>, conn: u64, json: &str, urgent: bool) -> bool {
        py.detach(|| self.inner.send_text(ConnId(conn), json, priority(urgent)))
    }

    /// Queues one JSON text frame (encoded once) for many connections.
    #[pyo3(signature = (conns, json, urgent=false))]
    fn send_text_many(&self, py: Python<'_>, conns: Vec<u64>, json: &str, urgent: bool) {
        let conns: Vec<ConnId> = conns.into_iter().map(ConnId).collect();
        py.detach(|| self.inner.send_text_many(&conns, json, priority(urgent)));
    }

    /// Starts closing a connection with a close frame.
    #[pyo3(signature = (conn, code, reason=""))]
    fn close(&self, py: Python<'_>, conn: u64, code: u16, reason: &str) {
        py.detach(|| self.inner.close(ConnId(conn), code, reason));
    }

    /// Ends a connection: the socket is closed once its queue is flushed.
    fn detach(&self, py: Python<'_>, conn: u64) {
        py.detach(|| self.inner.detach(ConnId(conn)));
    }

    /// The IP address of a connection's peer, as text (None: gone, or not an IP
    /// socket), for limits per source address.
    fn peer_ip(&self, py: Python<'_>, conn: u64) -> Option<String> {
        py.detach(|| self.inner.peer_ip(ConnId(conn)))
            .map(|ip| ip.to_string())
    }

    /// Publishes a message server-side. Returns (seq, ts, duplicate).
    fn publish(
        &self,
        py: Python<'_>,
        tenant: &str,
        room: &str,
        sender: &str,
        cid: &str,
        body: &str,
    ) -> PyResult<(u64, u64, bool)> {
        let a = py
            .detach(|| self.inner.publish(tenant, room, sender, cid, body))
            .map_err(CoreError)?;
        Ok((a.seq.0, a.ts, a.duplicate))
    }

    /// Up to `limit` messages before `before`, as `msg` JSON texts, ascending.
    #[pyo3(signature = (tenant, room, before=None, limit=50))]
    fn history(
        &self,
        py: Python<'_>,
        tenant: &str,
        room: &str,
        before: Option<u64>,
        limit: u64,
    ) -> PyResult<Vec<String>> {
        Ok(py
            .detach(|| self.inner.history(tenant, room, before, limit))
            .map_err(CoreError)?)
    }

    /// Pings the connections of slot `slot` of `slots` (all by default) and closes those
    /// idle past `idle_timeout_ms`; returns how many were closed.
    #[pyo3(signature = (idle_timeout_ms, slot=0, slots=1))]
    fn heartbeat(&self, py: Python<'_>, idle_timeout_ms: u64, slot: u32, slots: u32) -> usize {
        py.detach(|| self.inner.heartbeat(idle_timeout_ms, slot, slots))
    }

    /// Closes every connection with `code` and waits up to `timeout` seconds for the
    /// close frames to be written. Returns whether all were.
    fn shutdown(&self, py: Python<'_>, code: u16, reason: &str, timeout: f64) -> bool {
        let timeout = Duration::from_secs_f64(timeout.max(0.0));
        py.detach(|| self.inner.shutdown(code, reason, timeout))
    }

    /// Sets the status code and JSON body the core answers `GET /healthz` with on the
    /// reader thread from now on (until the first call, the HTTP layer answers it).
    fn publish_health(&self, status: u16, body: &str) {
        self.inner.publish_health(status, body);
    }

    /// Nanoseconds the socket writer has spent writing since the start: its load over a
    /// period is the growth of this over the period's length.
    fn writer_busy_ns(&self) -> u64 {
        self.inner.writer_busy_ns()
    }

    /// Counters for the metrics endpoint.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("connections", s.connections)?;
        d.set_item("messages", s.messages)?;
        d.set_item("deliveries", s.deliveries)?;
        d.set_item("slow_consumers", s.slow_consumers)?;
        d.set_item("bad_frames", s.bad_frames)?;
        d.set_item("rooms", s.rooms)?;
        d.set_item("rooms_refused", s.rooms_refused)?;
        d.set_item("queued_bytes", s.queued_bytes)?;
        d.set_item("log_waiting", s.log_waiting)?;
        d.set_item("log_writable", u64::from(s.log_writable))?;
        d.set_item("handshakes", s.handshakes)?;
        d.set_item("healthz", s.healthz)?;
        d.set_item("hello_timeouts", s.hello_timeouts)?;
        d.set_item("ambient_shed", s.ambient_shed)?;
        d.set_item("signals_relayed", s.signals_relayed)?;
        Ok(d)
    }
}

/// None (read more), a control frame's text, or a closing code.
fn inbound_object(py: Python<'_>, inbound: Inbound) -> PyResult<Bound<'_, PyAny>> {
    Ok(match inbound {
        Inbound::Idle => py.None().into_bound(py),
        Inbound::Control(text) => text.into_pyobject(py)?.into_any(),
        Inbound::Closing(code) => code.into_pyobject(py)?.into_any(),
    })
}

/// Checks a session token's HS256 signature (the header's `alg` must be HS256) and
/// returns its payload, the claims' JSON, unchecked. Raises ValueError with the reason.
#[pyfunction]
fn verify_hs256<'py>(py: Python<'py>, token: &str, secret: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    rushhour_core::token::verify_hs256(token, secret)
        .map(|payload| PyBytes::new(py, &payload))
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Whether `s` is a valid protocol id (1–128 chars of `[A-Za-z0-9_.:@/-]`).
#[pyfunction]
fn is_valid_id(s: &str) -> bool {
    rushhour_core::ids::is_valid_id(s)
}

/// Checks that `text` (a `str`, or UTF-8 `bytes`) is one JSON value within the core's
/// limits (nesting depth, number size and range, `\u` surrogates only in pairs: the
/// core's `json_limits`), so that `json.loads` reads it safely and every client alike.
#[pyfunction]
fn check_json(text: &Bound<'_, PyAny>) -> PyResult<()> {
    let checked = if let Ok(bytes) = text.cast::<PyBytes>() {
        match std::str::from_utf8(bytes.as_bytes()) {
            Ok(s) => rushhour_core::json_limits::check(s),
            Err(_) => return Err(PyValueError::new_err("not UTF-8")),
        }
    } else if let Ok(s) = text.cast::<PyString>() {
        match s.to_str() {
            Ok(s) => rushhour_core::json_limits::check(s),
            // A `str` holding a lone surrogate code point has no UTF-8 form.
            Err(_) => {
                return Err(PyValueError::new_err(
                    rushhour_core::json_limits::Refusal::LoneSurrogate.message(),
                ))
            }
        }
    } else {
        return Err(PyTypeError::new_err("check_json takes str or bytes"));
    };
    checked.map_err(|refusal| PyValueError::new_err(refusal.message()))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", rushhour_core::version())?;
    m.add_class::<Engine>()?;
    m.add_class::<Batch>()?;
    m.add_function(wrap_pyfunction!(is_valid_id, m)?)?;
    m.add_function(wrap_pyfunction!(verify_hs256, m)?)?;
    m.add_function(wrap_pyfunction!(check_json, m)?)?;
    errors::register(m)?;
    Ok(())
}
