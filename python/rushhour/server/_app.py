"""The server: listener, accept loop, heartbeat, graceful shutdown."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from rushhour._core import Engine
from rushhour.config import Config
from rushhour.server._admission import Admission
from rushhour.server._connection import CLOSE_INTERNAL_ERROR, Connection
from rushhour.server._faults import Faults
from rushhour.server._http import HttpConnection
from rushhour.server._meetings import JoinLimiter, LogMeetingStore, MeetingLimits, MeetingRegistry
from rushhour.server._meetings._registry import TICK_S
from rushhour.server._metrics import Metrics
from rushhour.server._receipts import ReceiptPacer
from rushhour.server._sessions import SessionRegistry
from rushhour.server._turn import Turn
from rushhour.server._unverified import AddressLimiter

#: Pending connections the kernel may hold while we are busy (the 9 a.m. burst).
LISTEN_BACKLOG = 4096
#: How long shutdown waits for close frames to reach the sockets.
SHUTDOWN_FLUSH_S = 5.0
CLOSE_GOING_AWAY = 1001


def engine_for(config: Config) -> Engine:
    """The core configured from `config`."""
    return Engine(
        max_queue_bytes=config.max_queue_bytes,
        max_frame_bytes=config.max_frame_bytes,
        max_body_bytes=config.max_body_bytes,
        max_subscriptions=config.max_subscriptions,
        send_rate_per_s=config.send_rate,
        send_burst=config.send_burst,
        max_bad_frames=config.max_bad_frames,
        memory_retention_per_room=config.memory_retention,
        receipt_push_max_members=config.receipt_push_max_members,
        max_rooms=config.max_rooms,
        max_rooms_per_tenant=config.max_rooms_per_tenant,
        data_dir=config.data_dir,
        fsync=config.fsync,
        repair=config.repair,
        retention_ms=config.retention_ms,
        room_max_messages=config.room_max_messages,
        segment_bytes=config.segment_bytes,
    )


@dataclass(frozen=True)
class ServerInfo:
    """Where a started server listens, and its core for in-process use."""

    host: str
    port: int
    engine: Engine

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}/ws"


#: An event from the core: `(conn, control frame | closing code | None for the end)`, or
#: `(0, (fd, head))` for the HTTP layer.
Event = tuple[int, str | int | tuple[int, bytes] | None]
#: Each heartbeat pings one slot of the connections in turn: 15,000 pings at once
#: queued ahead of the chat for 100 ms and more.
HEARTBEAT_SLOTS = 16
#: Events handled per turn before what they queued goes to the core.
TURN_EVENTS = 64
#: How often the health status the core answers `/healthz` with is refreshed.
HEALTH_EVERY_S = 0.1


class App:
    """State shared by every connection of one server."""

    def __init__(self, config: Config, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine if engine is not None else engine_for(config)
        #: Admission of new sessions (`hello`), decided once the token is verified.
        self.admission = Admission(config.session_rate, config.session_burst, enabled=config.admission == "on")
        #: Hellos whose token fails verification, per source address (apart from admission).
        self.unverified = AddressLimiter(config.bad_token_rate, config.bad_token_burst)
        self.metrics = Metrics(self.engine, lambda: self.admission.queue_estimate(time.monotonic()))
        #: Unexpected exceptions, contained to the connection, request or tick they hit.
        self.faults = Faults()
        self.metrics.watch_faults(self.faults.counts)
        self.sessions = SessionRegistry(
            per_user=config.max_sessions_per_user, per_tenant=config.max_sessions_per_tenant
        )
        self.receipt_pacer = ReceiptPacer(config.receipt_interval_ms)
        self.metrics.watch_pacing(
            lambda: self.receipt_pacer.current_interval_ms, lambda: self.engine.writer_busy_ns() / 1e9
        )
        self.draining = False
        #: The connections the core reads, by id, for its events.
        self.connections: dict[int, Connection] = {}
        #: Closing connections by the time they are dropped if the peer has not ended.
        self._lingering: deque[tuple[float, int]] = deque()
        #: Where requests for the HTTP layer are served (set by `serve`).
        self.http_nursery: trio.Nursery | None = None
        #: Meetings and the seats connections hold; `run_meetings` is its timer task.
        joins = JoinLimiter(
            config.meeting_server_join_rate,
            config.meeting_server_join_burst,
            config.meeting_join_rate,
            config.meeting_join_burst,
        )
        #: What handling a batch of events (or a timer) queues for the core.
        self.turn = Turn(self.engine)
        self.meetings = MeetingRegistry(
            self.turn,
            config.signing_secret,
            config.seat_grace_ms,
            store=LogMeetingStore(self.turn),
            limiter=joins,
            limits=MeetingLimits(config.max_meetings, config.max_meetings_per_tenant, config.max_meetings_per_user),
            faults=self.faults,
        )
        self.metrics.watch_kept(self.meetings.refused, self.sessions.evicted)
        self.metrics.watch_meeting_joins(joins.refused)
        self.meetings.restore()

    def health(self) -> tuple[int, dict[str, object]]:
        """What `/healthz` answers, but for a failed log (the core knows that itself)."""
        if self.draining:
            return 503, {"status": "draining"}
        waiting = self.admission.queue_estimate(time.monotonic())
        if waiting:
            return 503, {"status": "overloaded", "waiting": waiting}
        return 200, {"status": "ok"}

    def publish_health(self) -> None:
        """Tells the core what `/healthz` answers now: it answers on its reader thread,
        so that a health check never waits behind a burst of control frames."""
        status, payload = self.health()
        self.engine.publish_health(status, json.dumps(payload, separators=(",", ":")))

    async def keep_health_published(self) -> None:
        """Publishes the health status every `HEALTH_EVERY_S` (an overload's queue
        estimate drains with time); changes that raise it are published at once."""
        self.publish_health()
        await self.repeat("health", lambda: HEALTH_EVERY_S, self.publish_health)

    async def repeat(self, name: str, interval_s: Callable[[], float], step: Callable[[], None]) -> None:
        """Runs a timer task: `step` every `interval_s()` seconds. A step that fails is
        counted and logged (`Faults`) and the timer goes on with its next step: a bug in
        one tick neither stops the server nor silently ends the timer."""
        while True:
            await trio.sleep(interval_s())
            try:
                step()
            except Exception as e:  # our fault: this tick fails, the next one runs
                self.faults.record("timer", name, e)
                self.turn.flush()  # what the failed step queued before it failed

    async def handle(self, stream: trio.SocketStream, head: bytes = b"") -> None:
        """Serves one HTTP connection; an unexpected exception ends that connection only
        (its requests answer 500 where a response can still be sent, see `HttpConnection`)."""
        try:
            await HttpConnection(self, stream, head).run()
        except Exception as e:  # our fault: this connection ends, the server goes on
            self.faults.record("http", "a connection", e)

    def linger(self, conn: int, seconds: float) -> None:
        """Drops a closing connection after `seconds` unless its peer ends first."""
        self._lingering.append((time.monotonic() + seconds, conn))

    def finish(self, conn: int) -> None:
        """The connection is over: its seats wait for a rejoin, the core lets it go."""
        self.connections.pop(conn, None)
        self.meetings.connection_lost(conn)
        self.engine.detach(conn)

    async def dispatch_events(self) -> None:
        """Hands the core's events to their connections, in order per connection, and
        the sockets whose request is for the HTTP layer to it. Under pressure the open
        sessions (meeting signalling) go before new logins: in each batch, the events of
        connections with a session are handled first. What handling them queues goes to
        the core every `TURN_EVENTS` events (see `Turn`)."""
        engine, turn = self.engine, self.turn
        fd = engine.events_fd()
        while True:
            await trio.lowlevel.wait_readable(fd)
            events = engine.take_events()
            events.sort(key=self._is_new)  # stable: in order within each group
            for start in range(0, len(events), TURN_EVENTS):
                for conn, event in events[start : start + TURN_EVENTS]:
                    try:
                        self._dispatch(conn, event)
                    except Exception as e:  # our fault: it ends this connection only
                        self.contain(conn, event, e)
                turn.flush()

    def contain(self, conn: int, event: str | int | tuple[int, bytes] | None, exc: Exception) -> None:
        """An unexpected exception while handling `conn`'s event: counted and logged,
        and that connection alone closes with 1011 (ended at once if its stream had
        ended); the HTTP socket of an HTTP event is closed."""
        if isinstance(event, tuple):
            self.faults.record("http", "a request handed over by the core", exc)
            with contextlib.suppress(OSError):
                os.close(event[0])
            return
        self.faults.record("ws", f"conn {conn}", exc)
        try:
            connection = self.connections.get(conn)
            if event is None or connection is None:
                self.finish(conn)
            elif not connection.closing:
                connection.close(CLOSE_INTERNAL_ERROR, "internal error")
        except Exception as e:  # the close itself failed: let the core drop the socket
            self.faults.record("ws", f"closing conn {conn}", e)
            self.connections.pop(conn, None)
            self.engine.detach(conn)

    def _is_new(self, item: Event) -> bool:
        """Whether an event is for the HTTP layer or a connection without a session."""
        conn, event = item
        connection = self.connections.get(conn)
        return isinstance(event, tuple) or connection is None or connection.claims is None

    def _dispatch(self, conn: int, event: str | int | tuple[int, bytes] | None) -> None:
        if isinstance(event, tuple):
            self._serve_http(*event)
            return
        connection = self.connections.get(conn)
        if connection is None:
            if event is None:
                self.finish(conn)
                return
            connection = self.connections[conn] = Connection(self, conn)
        connection.on_event(event)

    def _serve_http(self, fd: int, head: bytes) -> None:
        if self.http_nursery is None:
            os.close(fd)
            return
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(socket.socket(fileno=fd)))
        self.http_nursery.start_soon(self.handle, stream, head)

    async def sweep(self) -> None:
        """Once a second: closes connections that sent no hello in time (1008), drops
        closing ones whose peer never ended."""
        await self.repeat("sweep", lambda: 1.0, self._sweep_once)

    def _sweep_once(self) -> None:
        self.turn.out.expire_hellos(self.config.hello_timeout_ms)
        now = time.monotonic()
        while self._lingering and self._lingering[0][0] <= now:
            _, conn = self._lingering.popleft()
            if conn in self.connections:  # else its peer ended already
                self.finish(conn)
        self.turn.flush()

    async def flush_receipts(self) -> None:
        """Receipt and presence pushes and the moved cursors to the log, paced by
        `ReceiptPacer` (spread over the interval, slower while the writer is busy)."""
        pacer = self.receipt_pacer

        def flush_once() -> None:
            self.turn.out.flush_receipts(pacer.slot, pacer.slots)
            self.turn.flush()
            pacer.flushed(self.engine.writer_busy_ns(), time.monotonic())

        await self.repeat("receipts", pacer.tick_s, flush_once)

    async def heartbeat(self) -> None:
        """Pings every connection each heartbeat and closes the silent ones: a slot of
        them every 1/`HEARTBEAT_SLOTS` of the interval."""
        interval = min(self.config.heartbeat_ms, self.config.idle_timeout_ms) / 1000
        slot = 0

        def ping_slot() -> None:
            nonlocal slot
            current, slot = slot, (slot + 1) % HEARTBEAT_SLOTS
            self.turn.out.heartbeat(self.config.idle_timeout_ms, current, HEARTBEAT_SLOTS)
            self.turn.flush()

        await self.repeat("heartbeat", lambda: interval / HEARTBEAT_SLOTS, ping_slot)

    async def run_meetings(self) -> None:
        """The meetings' timer: seat and meeting expiry, viewer counts."""

        def tick() -> None:
            self.meetings.tick()
            self.turn.flush()

        await self.repeat("meetings", lambda: TICK_S, tick)

    async def drain(self) -> None:
        """Closes every client with 1001 and waits for the close frames to be written."""
        self.draining = True
        self.publish_health()
        await trio.to_thread.run_sync(self.engine.shutdown, CLOSE_GOING_AWAY, "server shutdown", SHUTDOWN_FLUSH_S)


async def open_listeners(config: Config) -> list[trio.SocketListener]:
    """The listening sockets of `config`'s host and port."""
    return await trio.open_tcp_listeners(config.port, host=config.host, backlog=LISTEN_BACKLOG)


async def serve(
    config: Config,
    *,
    engine: Engine | None = None,
    listeners: list[trio.SocketListener] | None = None,
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Runs a rushhour server until cancelled, then shuts down gracefully.

    Start it with `nursery.start(rushhour.serve, config)`: that returns a `ServerInfo`
    once the server accepts connections. Cancelling it closes every client with 1001
    (reconnect elsewhere) after flushing what was queued.

    Args:
        config: What to run with.
        engine: An existing core to serve (e.g. one a `rushhour.Broker` also uses).
        listeners: Sockets already listening (see `open_listeners`); else opened here.
        task_status: Set by `nursery.start`.
    """
    app = App(config, engine)
    if listeners is None:
        listeners = await open_listeners(config)
    host, port = listeners[0].socket.getsockname()[:2]
    # The core accepts and answers WebSocket handshakes and `/healthz` itself; other
    # requests come back.
    app.publish_health()
    for listener in listeners:
        app.engine.listen(os.dup(listener.socket.fileno()), list(config.allowed_origins))
        await listener.aclose()
    # Connections live in a shielded scope: on cancellation they are told 1001 first,
    # and only then torn down.
    connections = trio.CancelScope(shield=True)

    async def run_connections(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with connections:
            async with trio.open_nursery() as nursery:
                app.http_nursery = nursery
                nursery.start_soon(app.keep_health_published)
                nursery.start_soon(app.heartbeat)
                nursery.start_soon(app.sweep)
                nursery.start_soon(app.dispatch_events)
                nursery.start_soon(app.flush_receipts)
                nursery.start_soon(app.run_meetings)
                task_status.started()

    async with trio.open_nursery() as nursery:
        await nursery.start(run_connections)
        task_status.started(ServerInfo(str(host), int(port), app.engine))
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await app.drain()
            connections.cancel()
