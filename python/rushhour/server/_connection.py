"""One WebSocket connection after its handshake: Trio reads, the core writes.

The socket's descriptor is duplicated and handed to the core, which becomes its only
writer; this task keeps reading and feeds the bytes to the core. Hot ops (send, subscribe,
history…) run inside the core; control frames (hello, and ops of later sections) come
back here one at a time, in order.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

import trio

from rushhour import auth
from rushhour._core import RushhourError

if TYPE_CHECKING:
    from rushhour.server._app import App

#: Bytes read per receive: the kernel usually has less; big reads mean fewer crossings.
RECV_BYTES = 256 << 10
#: After a close starts, how long to wait for the peer's close and end of stream.
CLOSE_LINGER_S = 5.0

CLOSE_POLICY = 1008
CLOSE_UNAUTHORIZED = 4001


def _error(code: str, message: str, request_id: object = None) -> str:
    frame: dict[str, Any] = {"op": "error"}
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        frame["id"] = request_id
    frame.update(code=code, message=message)
    return json.dumps(frame, separators=(",", ":"))


class Connection:
    """The session layer of one connection."""

    def __init__(self, app: App, stream: trio.SocketStream, *, echo: bool) -> None:
        self.app = app
        self.stream = stream
        self.echo = echo
        self.conn = app.engine.attach(os.dup(stream.socket.fileno()), echo=echo)
        self.session: str | None = None
        self.claims: auth.Claims | None = None
        self.closing = False

    def send(self, frame: str) -> None:
        self.app.engine.send_text(self.conn, frame)

    def close(self, code: int, reason: str) -> None:
        self.app.engine.close(self.conn, code, reason)
        self.closing = True

    async def run(self, first_bytes: bytes) -> None:
        """Reads until the connection ends; always detaches from the core."""
        engine = self.app.engine
        try:
            hello_deadline = trio.current_time() + self.app.config.hello_timeout_ms / 1000
            data = first_bytes
            while not self.closing:
                if data:
                    self._feed(data)
                    if self.closing:
                        break
                deadline = hello_deadline if (self.claims is None and not self.echo) else float("inf")
                with trio.move_on_at(deadline):
                    data = await self.stream.receive_some(RECV_BYTES)
                    if not data:
                        return
                    continue
                self.close(CLOSE_POLICY, "hello timeout")
            await self._linger()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            engine.detach(self.conn)
            await self.stream.aclose()

    async def _linger(self) -> None:
        """Reads and discards until the peer ends the stream, so it sees a clean close."""
        with trio.move_on_after(CLOSE_LINGER_S):
            while await self.stream.receive_some(RECV_BYTES):
                pass

    def _feed(self, data: bytes) -> None:
        engine = self.app.engine
        result = engine.feed(self.conn, data)
        while isinstance(result, str):
            self._control(result)
            if self.closing:
                return
            result = engine.feed(self.conn, b"")
        if isinstance(result, int):
            self.closing = True

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
        self.send(_error("bad_request", f"unknown op {op!r}", request_id))

    def _hello(self, frame: dict[str, Any]) -> None:
        metrics = self.app.metrics
        try:
            claims = auth.verify(frame.get("token"), self.app.config.signing_secret)
            self.app.engine.open_session(
                self.conn, claims.tenant, claims.user, list(claims.rooms) if claims.rooms is not None else None
            )
        except (auth.InvalidToken, RushhourError) as e:
            metrics.hellos.labels("unauthorized").inc()
            self.close(CLOSE_UNAUTHORIZED, f"unauthorized: {e.args[0]}"[:120])
            return
        self.claims = claims
        token, resumed, previous = self.app.sessions.open(claims.tenant, claims.user, self.conn, frame.get("resume"))
        self.session = token
        metrics.hellos.labels("resumed" if resumed else "ok").inc()
        self.send(
            json.dumps(
                {
                    "op": "welcome",
                    "session": token,
                    "user": claims.user,
                    "tenant": claims.tenant,
                    "heartbeat_ms": self.app.config.heartbeat_ms,
                    "server_time": int(time.time() * 1000),
                    "resumed": resumed,
                },
                separators=(",", ":"),
            )
        )
        if previous is not None:
            # After the welcome: the replay of what the previous connection missed follows it.
            with contextlib.suppress(RushhourError):  # nothing left to restore
                self.app.engine.resume(self.conn, previous)
