"""One WebSocket connection after its handshake: the core reads and writes it.

The core owns the socket: it accepts it, answers the handshake of `/ws` (or takes over
one that Python's HTTP layer upgraded) and becomes its only writer and its reader. Hot
ops (send, subscribe, history…) run inside the core without crossing into Python.
Control frames (hello, and ops of later sections), closes and the end of the stream come
back through the core's event queue, one control frame at a time per connection and in
order: the core does not read a connection while its control frame is handled here. No
task waits per connection: an idle connection costs Python one small object.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from rushhour import auth
from rushhour._core import RushhourError
from rushhour.server import _meetings

if TYPE_CHECKING:
    from rushhour.server._app import App

#: After a close starts, how long to wait for the peer's close and end of stream.
CLOSE_LINGER_S = 5.0

CLOSE_POLICY = 1008
#: An unexpected exception of ours while handling this connection's frame.
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_UNAUTHORIZED = 4001


def _error(code: str, message: str, request_id: object = None) -> str:
    frame: dict[str, Any] = {"op": "error"}
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        frame["id"] = request_id
    frame.update(code=code, message=message)
    return json.dumps(frame, separators=(",", ":"))


class Connection:
    """The session layer of one connection, driven by the core's events."""

    __slots__ = ("app", "claims", "closing", "conn", "session")

    def __init__(self, app: App, conn: int) -> None:
        self.app = app
        self.conn = conn
        self.session: str | None = None
        self.claims: auth.Claims | None = None
        self.closing = False

    @classmethod
    def take_over(cls, app: App, fd: int, first_bytes: bytes, *, echo: bool) -> None:
        """Hands a socket that Python's HTTP layer upgraded to the core (which owns `fd`
        from now on) and feeds it the bytes read after the handshake."""
        conn = app.engine.attach(fd, echo=echo, read=True)
        connection = cls(app, conn)
        app.connections[conn] = connection
        try:
            connection._feed(first_bytes)
        except Exception as e:  # our fault: it ends this connection only (see `App.contain`)
            app.contain(conn, "", e)
        app.turn.flush()

    def send(self, frame: str) -> None:
        self.app.engine.send_text(self.conn, frame)

    def close(self, code: int, reason: str) -> None:
        self.app.engine.close(self.conn, code, reason)
        self._closing()

    def _closing(self) -> None:
        if self.closing:
            return
        self.closing = True
        # Meeting seats wait for a rejoin from now: nothing more reaches this socket.
        self.app.meetings.connection_lost(self.conn)
        # The peer's close and end of stream are awaited, so that it sees a clean close,
        # but not forever.
        self.app.linger(self.conn, CLOSE_LINGER_S)

    def on_event(self, event: str | int | None) -> None:
        """An event the core read for this connection (see `Engine.take_events`)."""
        if isinstance(event, str):
            self._control(event)
            if not self.closing:
                self.app.turn.out.resume(self.conn)
        elif isinstance(event, int):
            self._closing()
        else:
            self.app.finish(self.conn)

    def _feed(self, data: bytes) -> None:
        """Feeds the bytes read after an upgrade done by the HTTP layer; the core reads
        on by itself once nothing is left for us, or after the turn's `resume`."""
        result = self.app.engine.feed(self.conn, data)
        if result is not None:
            self.on_event(result)

    def _control(self, text: str) -> None:
        """Handles one control frame (the core has checked it is a JSON object with op)."""
        frame = json.loads(text)
        op, request_id = frame.get("op"), frame.get("id")
        if self.claims is None:
            if op != "hello":
                self.send(_error("unauthorized", "the first frame must be hello", request_id))
                return
            self._hello(frame)
            return
        if op == "hello":
            self.send(_error("conflict", "session already open", request_id))
            return
        if op == "signal" or (isinstance(op, str) and op.startswith("meeting.")):
            _meetings.handle(self.app.meetings, self.conn, self.claims, frame)
            return
        self.send(_error("bad_request", f"unknown op {op!r}", request_id))

    def _admit(self, frame: dict[str, Any], claims: auth.Claims) -> bool:
        """Admission of a verified token: its tenant decides fairness, a known session of
        the same tenant and user goes ahead; a refusal closes 1013."""
        app = self.app
        if not app.admission.enabled:
            return True
        owner = app.sessions.owner(frame.get("resume"))
        resume = owner is not None and owner == (claims.tenant, claims.user)
        refusal = app.admission.admit(claims.tenant, time.monotonic(), resume=resume, user=claims.user)
        if refusal is None:
            app.metrics.admitted_by_kind["resume" if resume else "fresh"].inc()
            return True
        app.metrics.refused.labels(refusal.reason).inc()
        app.metrics.hello_outcomes["overloaded"].inc()
        app.publish_health()  # overloaded from now on, not from the next refresh
        reply: dict[str, Any] = json.loads(_error("overloaded", "the server is busy: retry later", frame.get("id")))
        reply.update(retry_after_ms=refusal.retry_after_ms, queue_pos=refusal.queue_pos)
        self.send(json.dumps(reply, separators=(",", ":")))
        self._close_retry_later(refusal.retry_after_ms)
        return False

    def _close_retry_later(self, retry_after_ms: int) -> None:
        self.close(CLOSE_TRY_AGAIN_LATER, json.dumps({"retry_after_ms": retry_after_ms}, separators=(",", ":")))

    def _verify(self, frame: dict[str, Any]) -> auth.Claims | None:
        """The token's claims, verified before it counts against anyone's share; None
        when the hello was refused: closed 4001 and charged to its source address, or
        closed 1013 before any work while that address is over its bucket."""
        app = self.app
        limiter, now = app.unverified, time.monotonic()
        address = None
        if limiter.any_blocked(now):
            address = app.engine.peer_ip(self.conn) or ""
            wait = limiter.wait_ms(address, now)
            if wait is not None:
                app.metrics.hello_outcomes["address_limited"].inc()
                self._close_retry_later(wait)
                return None
        try:
            return auth.verify(frame.get("token"), app.config.signing_secret)
        except auth.InvalidToken as e:
            limiter.failed(address if address is not None else app.engine.peer_ip(self.conn) or "", now)
            self._unauthorized(str(e))
            return None

    def _unauthorized(self, reason: str) -> None:
        self.app.metrics.hello_outcomes["unauthorized"].inc()
        self.close(CLOSE_UNAUTHORIZED, f"unauthorized: {reason}"[:120])

    def _hello(self, frame: dict[str, Any]) -> None:
        metrics = self.app.metrics
        claims = self._verify(frame)
        if claims is None or not self._admit(frame, claims):
            return
        try:
            self.app.engine.open_session(
                self.conn, claims.tenant, claims.user, list(claims.rooms) if claims.rooms is not None else None
            )
        except RushhourError as e:
            self._unauthorized(str(e.args[0]))
            return
        self.claims = claims
        token, resumed, previous = self.app.sessions.open(claims.tenant, claims.user, self.conn, frame.get("resume"))
        self.session = token
        metrics.hello_outcomes["resumed" if resumed else "ok"].inc()
        welcome = {
            "op": "welcome",
            "session": token,
            "user": claims.user,
            "tenant": claims.tenant,
            "heartbeat_ms": self.app.config.heartbeat_ms,
            "server_time": int(time.time() * 1000),
            "resumed": resumed,
        }
        # The core adds `unread` (its own JSON text) and queues it, in one crossing.
        self.app.engine.welcome(self.conn, json.dumps(welcome, separators=(",", ":")))
        if previous is not None:
            # After the welcome: the replay of what the previous connection missed follows it.
            with contextlib.suppress(RushhourError):  # nothing left to restore
                self.app.engine.resume(self.conn, previous)
