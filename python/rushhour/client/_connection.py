"""One WebSocket connection and its `hello`, for the client's reconnect loop.

Like `trio_websocket.open_websocket_url`, except that the client owns the TCP stream
and closes it however the connection ends: trio-websocket 0.12 leaves the socket open
after an abnormal closure (its `aclose` returns early once a close reason is set).
Every way an attempt can fail before `welcome` is translated once into `Refused`.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NoReturn

import trio
import trio_websocket

from rushhour.client._errors import ServerError
from rushhour.client._state import CLOSE_ABNORMAL, CLOSE_UNAUTHORIZED

_log = logging.getLogger("rushhour.client")

#: Largest frame accepted from the server: a `history` page holds up to 1 MiB of
#: messages plus its envelope, so the 1 MiB limit of client frames would be too tight.
MAX_FRAME_CHARS = 4 << 20
#: Bytes per socket read: bigger than trio-websocket's 4 KiB, for replays and bursts.
RECEIVE_BYTES = 64 << 10
#: How long closing waits for the server to answer the close handshake.
CLOSE_TIMEOUT_S = 2.0
#: Close code standing for an error frame answered to `hello` instead of a close.
_HELLO_ERROR_CLOSE = {
    "unauthorized": CLOSE_UNAUTHORIZED,
    "forbidden": CLOSE_UNAUTHORIZED,
    "overloaded": 1013,
    "rate_limited": 1013,
    "internal": 1011,
}


class Refused(Exception):
    """A connection attempt ended before `welcome`.

    Attributes:
        code: The close code (1006 when no WebSocket connection was made).
        reason: The close reason or a description of the failure.
        retry_after_ms: The server's "retry after", when it gave one.
    """

    def __init__(self, code: int, reason: str, retry_after_ms: int | None = None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason
        self.retry_after_ms = retry_after_ms


def decode(text: str | bytes) -> dict[str, Any] | None:
    """A server frame as a dict with a string `op`, or None for anything else.

    A frame that Python's `json` cannot read (nested past its recursion limit, an
    integer of more than 4,300 digits: beyond the limits a server checks its input
    against, but a server without them relays such bodies) ends nothing: it is logged
    and skipped, and if it answers a request, it becomes an `error` frame for that
    request, which fails clearly instead of waiting for a reply already read.
    """
    if isinstance(text, bytes):
        return None  # reserved for a later encoding; a v1 server never sends one
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError) as e:
        return _undecodable(text, e)
    return frame if isinstance(frame, dict) and isinstance(frame.get("op"), str) else None


#: The head of a `reply` or `error` frame to a request: the server writes `op`, then `id`.
_ANSWER_HEAD = re.compile(r'\{"op":"(?:reply|error)","id":(-?\d{1,19})[,}]')


def _undecodable(text: str, error: Exception) -> dict[str, Any] | None:
    _log.warning("skipped a server frame that cannot be decoded (%s): %.100s", error, text)
    head = _ANSWER_HEAD.match(text)
    if head is None:
        return None
    message = f"the client cannot decode the server's answer: {error}"
    return {"op": "error", "id": int(head.group(1)), "code": "internal", "message": message}


def _parse_url(url: str) -> tuple[str, int, str, str, ssl.SSLContext | None]:
    """(host, port, resource, Host header, TLS context) of a ws:// or wss:// URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    tls = ssl.create_default_context() if parts.scheme == "wss" else None
    port = parts.port or (443 if tls else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.hostname if port in (80, 443) else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # IPv6 literal
        host_header = f"[{parts.hostname}]" + ("" if port in (80, 443) else f":{port}")
    return parts.hostname, port, resource, host_header, tls


@asynccontextmanager
async def open_connection(url: str, *, deadline: float) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Opens a WebSocket connection; on exit, closes it and its socket.

    Raises:
        Refused: the TCP connection or the WebSocket handshake failed, or did not
            complete by `deadline` (on Trio's clock).
        ValueError: `url` is not a WebSocket URL.
    """
    host, port, resource, host_header, tls = _parse_url(url)
    try:
        async with trio.open_nursery() as nursery:  # trio-websocket's reader task
            stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
            try:
                try:
                    with trio.fail_at(deadline):
                        if tls is None:
                            stream = await trio.open_tcp_stream(host, port)
                        else:
                            stream = await trio.open_ssl_over_tcp_stream(
                                host, port, ssl_context=tls, https_compatible=True
                            )
                        ws = await trio_websocket.wrap_client_stream(
                            nursery,
                            stream,
                            host_header,
                            resource,
                            max_message_size=MAX_FRAME_CHARS,
                            receive_buffer_size=RECEIVE_BYTES,
                        )
                except trio.TooSlowError:
                    raise Refused(CLOSE_ABNORMAL, "cannot connect: timed out") from None
                except OSError as e:
                    raise Refused(CLOSE_ABNORMAL, f"cannot connect: {e}") from None
                try:
                    yield ws
                finally:
                    # Not shielded: when cancelled, trio-websocket drops the TCP connection
                    # at once (its reader task is being cancelled too, so no close
                    # handshake could complete anyway).
                    with trio.move_on_after(CLOSE_TIMEOUT_S):
                        await ws.aclose()
            finally:
                if stream is not None:
                    await trio.aclose_forcefully(stream)
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            error = group.exceptions[0]
            if isinstance(error, trio_websocket.ConnectionRejected):
                raise Refused(CLOSE_ABNORMAL, f"handshake refused: HTTP {error.status_code}") from None
            reraise(error)
        raise


async def hello(
    ws: trio_websocket.WebSocketConnection, token: str, resume: str | None, deadline: float
) -> dict[str, Any]:
    """Sends `hello` and returns `welcome`.

    Raises:
        Refused: the server closed or answered an error instead, or no `welcome`
            came by `deadline`.
    """
    frame: dict[str, Any] = {"op": "hello", "token": token}
    if resume:
        frame["resume"] = resume
    with trio.move_on_at(deadline):
        try:
            await ws.send_message(json.dumps(frame, separators=(",", ":")))
            while True:
                reply = decode(await ws.get_message())
                if reply is None:
                    continue
                if reply["op"] == "welcome":
                    return reply
                if reply["op"] == "error":
                    # An overloaded server answers this, then closes 1013: no need to wait.
                    error = ServerError.from_frame(reply)
                    raise Refused(_HELLO_ERROR_CLOSE.get(error.code, 1002), str(error), error.retry_after_ms)
        except trio_websocket.ConnectionClosed:
            closed = ws.closed
            if closed is None:
                raise Refused(CLOSE_ABNORMAL, "closed during hello") from None
            raise Refused(closed.code, closed.reason or "") from None
    raise Refused(CLOSE_ABNORMAL, "no welcome within connect_timeout")


def reraise(exc: BaseException) -> NoReturn:
    """Raises `exc` out of an exception group, keeping its own context."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context
