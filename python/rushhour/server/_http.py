"""HTTP/1.1 with h11: the endpoints, and the WebSocket upgrades the core leaves to it (`/ws/echo`, and
requests at `/ws` it does not take as they are: to refuse with a status, or unusual). The core answers
plain `GET /ws` upgrades itself."""

from __future__ import annotations

import contextlib
import hmac
import json
from typing import TYPE_CHECKING, Any

import h11
import trio
from wsproto.utilities import generate_accept_token

from rushhour import auth, web
from rushhour._core import RushhourError, check_json
from rushhour.server._connection import Connection

if TYPE_CHECKING:
    from rushhour.server._app import App

#: Largest HTTP request body (publish, dev-token): a message body is at most 64 KiB.
MAX_HTTP_BODY = 1 << 20
#: Time allowed to send a complete request.
REQUEST_TIMEOUT_S = 10.0
SERVER_HEADER = b"rushhour"

#: Bytes read per receive while the request is parsed.
RECV_BYTES = 64 << 10

_STATUS_OF_CODE = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "too_large": 413,
    "conflict": 409,
    "rate_limited": 429,
    "overloaded": 503,
    "internal": 500,
}


class _Response:
    def __init__(self, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
        self.status, self.body, self.content_type = status, body, content_type


def _web_file(path: bytes) -> _Response | None:
    """A file of the web client, if `path` names one (`rushhour.web` keeps them in memory)."""
    found = web.asset(path)
    return None if found is None else _Response(200, found.body, found.content_type)


def _json(status: int, payload: object) -> _Response:
    return _Response(status, json.dumps(payload, separators=(",", ":")).encode())


def _error(status: int, code: str, message: str) -> _Response:
    return _json(status, {"code": code, "message": message})


def _header(request: h11.Request, name: bytes) -> bytes | None:
    for key, value in request.headers:
        if key == name:
            return bytes(value)
    return None


def _tokens(request: h11.Request, name: bytes) -> set[bytes]:
    found: set[bytes] = set()
    for key, value in request.headers:
        if key == name:
            found.update(part.strip().lower() for part in bytes(value).split(b","))
    return found


class HttpConnection:
    """Serves one TCP connection: HTTP requests until it is upgraded or closed."""

    def __init__(self, app: App, stream: trio.SocketStream, head: bytes = b"") -> None:
        self.app = app
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=64 << 10)
        if head:  # what the core read before it handed the connection over
            self.h11.receive_data(head)
        #: Once upgraded, the WebSocket connection owns the stream.
        self.upgraded = False

    async def run(self) -> None:
        """Serves requests until the peer is done, an error, or an upgrade."""
        try:
            while True:
                with trio.move_on_after(REQUEST_TIMEOUT_S) as scope:
                    event = await self._next_event()
                if scope.cancelled_caught or event is None:
                    return
                if isinstance(event, h11.ConnectionClosed):
                    return
                assert isinstance(event, h11.Request)
                if self._is_upgrade(event):
                    await self._upgrade(event)
                    return
                body = await self._read_body()
                if body is None:
                    await self._respond(_error(413, "too_large", "request body over 1 MiB"), "body")
                    return
                route, response = await self._route(event, body)
                await self._respond(response, route)
                if self.h11.our_state is h11.MUST_CLOSE or self.h11.their_state is h11.MUST_CLOSE:
                    return
                self.h11.start_next_cycle()
        except h11.RemoteProtocolError as e:
            await self._send_bad_request(e)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError):
            pass
        except Exception as e:  # our fault: this request answers 500 and its connection closes
            self.app.faults.record("http", self._what(), e)
            await self._send_internal_error()
        finally:
            if not self.upgraded:
                await self.stream.aclose()

    async def _next_event(self) -> h11.Event | None:
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                data = await self.stream.receive_some(RECV_BYTES)
                self.h11.receive_data(data)
                continue
            if event is h11.PAUSED:
                return None
            return event  # type: ignore[return-value]

    async def _read_body(self) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_HTTP_BODY:
                    return None
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                raise h11.RemoteProtocolError("unexpected end of request")

    async def _respond(self, response: _Response, route: str) -> None:
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            (b"server", SERVER_HEADER),
        ]
        data = self.h11.send(h11.Response(status_code=response.status, headers=headers))
        data = (data or b"") + (self.h11.send(h11.Data(data=response.body)) or b"")
        data += self.h11.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)
        self.app.metrics.http_requests.labels(route, str(response.status)).inc()

    def _what(self) -> str:
        """The request being served, for the log."""
        return "an upgraded connection" if self.upgraded else "a request"

    async def _send_internal_error(self) -> None:
        if not self.upgraded and self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                await self._respond(_error(500, "internal", "internal error"), "internal")

    async def _send_bad_request(self, e: h11.RemoteProtocolError) -> None:
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                await self._respond(_error(e.error_status_hint, "bad_request", str(e)), "invalid")

    # -- routing --------------------------------------------------------------------

    async def _route(self, request: h11.Request, body: bytes) -> tuple[str, _Response]:
        path = bytes(request.target).split(b"?", 1)[0]
        method = bytes(request.method)
        app = self.app
        if path == b"/healthz" and method in (b"GET", b"HEAD"):
            # Once the app published its status the core answers these itself.
            failure = app.engine.store_failure()
            if failure is not None and not app.draining:
                reason = f"the log is not taking writes: {failure}"
                return "healthz", _json(503, {"status": "degraded", "reason": reason})
            return "healthz", _json(*app.health())
        if path == b"/metrics" and method == b"GET":
            return "metrics", _Response(200, app.metrics.render(), b"text/plain; version=0.0.4; charset=utf-8")
        if path == b"/api/v1/publish" and method == b"POST":
            return "publish", await self._publish(request, body)
        if path == b"/api/v1/dev-token" and method == b"POST" and app.config.dev:
            return "dev-token", self._dev_token(body)
        if method == b"GET" and (page := _web_file(path)) is not None:
            return "web", page
        if path in (b"/ws", b"/ws/echo"):
            return "ws", _error(426, "bad_request", "WebSocket upgrade required")
        return "not_found", _error(404, "not_found", "no such endpoint")

    async def _publish(self, request: h11.Request, body: bytes) -> _Response:
        if self.app.draining:
            return _error(503, "overloaded", "the server is shutting down: publish to another")
        api_key = self.app.config.api_key
        given = _header(request, b"authorization")
        # In constant time: how long the comparison takes says nothing about the key.
        if api_key is None or given is None or not hmac.compare_digest(given, b"Bearer " + api_key.encode()):
            return _error(401, "unauthorized", "a valid Authorization: Bearer <api key> is required")
        try:
            check_json(body)  # first: `json.loads` recurses, and takes NaN and 5,000-digit integers
            payload: Any = json.loads(body)
        except ValueError as e:
            return _error(400, "bad_request", f"body refused: {e}")
        if not isinstance(payload, dict):
            return _error(400, "bad_request", "body must be a JSON object")
        fields = [payload.get(k) for k in ("tenant", "room", "from", "cid")]
        strings = [v for v in fields if isinstance(v, str)]
        if len(strings) != 4 or "body" not in payload:
            return _error(400, "bad_request", "tenant, room, from, cid (strings) and body are required")
        tenant, room, sender, cid = strings
        engine = self.app.engine
        try:
            # Blocks until the group commit holding the message is on disk: off the loop.
            seq, _ts, duplicate = await trio.to_thread.run_sync(
                engine.publish, tenant, room, sender, cid, json.dumps(payload["body"], separators=(",", ":"))
            )
        except RushhourError as e:
            status = 503 if e.code == "internal" and engine.store_failure() is not None else None
            return _error(status or _STATUS_OF_CODE.get(e.code, 400), e.code, str(e.args[0]))
        return _json(200, {"seq": seq, "duplicate": duplicate})

    def _dev_token(self, body: bytes) -> _Response:
        try:
            check_json(body)
            payload: Any = json.loads(body)
            token = auth.issue(self.app.config.signing_secret, payload["user"], payload["tenant"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "bad_request", 'body must be {"user": <id>, "tenant": <id>}')
        return _json(200, {"token": token})

    # -- WebSocket upgrade ----------------------------------------------------------

    def _is_upgrade(self, request: h11.Request) -> bool:
        return b"websocket" in _tokens(request, b"upgrade")

    async def _upgrade(self, request: h11.Request) -> None:
        path = bytes(request.target).split(b"?", 1)[0]
        echo = path == b"/ws/echo"
        refusal = self._check_handshake(request, path)
        if refusal is not None:
            self.app.metrics.handshakes.labels("refused").inc()
            await self._respond(refusal, "ws")
            return
        key = _header(request, b"sec-websocket-key") or b""
        response = h11.InformationalResponse(
            status_code=101,
            headers=[
                (b"upgrade", b"websocket"),
                (b"connection", b"Upgrade"),
                (b"sec-websocket-accept", generate_accept_token(key)),
                (b"server", SERVER_HEADER),
            ],
        )
        await self.stream.send_all(self.h11.send(response) or b"")
        self.app.metrics.handshakes.labels("ok").inc()
        trailing, _closed = self.h11.trailing_data
        self.upgraded = True
        Connection.take_over(self.app, self.stream.socket.detach(), bytes(trailing), echo=echo)

    def _check_handshake(self, request: h11.Request, path: bytes) -> _Response | None:
        if path not in (b"/ws", b"/ws/echo") or (path == b"/ws/echo" and not self.app.config.dev):
            return _error(404, "not_found", "no WebSocket endpoint here")
        if bytes(request.method) != b"GET" or b"upgrade" not in _tokens(request, b"connection"):
            return _error(400, "bad_request", "a WebSocket handshake is a GET with Connection: Upgrade")
        if _header(request, b"sec-websocket-version") != b"13":
            return _error(426, "bad_request", "Sec-WebSocket-Version must be 13")
        key = _header(request, b"sec-websocket-key")
        if key is None or len(key) != 24:
            return _error(400, "bad_request", "Sec-WebSocket-Key is missing or malformed")
        origin = _header(request, b"origin")
        allowed = self.app.config.allowed_origins
        if allowed and origin is not None and origin.decode("latin-1") not in allowed:
            return _error(403, "forbidden", "origin not allowed")
        return None
