"""While the log is recovered at start, the port already answers: 503 `starting`.

The listening sockets are opened before the recovery, so that a health check or a
client learns that the server is starting, and when to come back, instead of finding
the port closed. Every request gets 503 with `Retry-After` and closes; `/healthz`
answers `{"status":"starting"}`. Once the log is open the sockets go to the core, and
whatever waits in their accept queue is served normally.
"""

from __future__ import annotations

import json

import h11
import trio

from rushhour.server._http import RECV_BYTES, REQUEST_TIMEOUT_S, SERVER_HEADER

#: What a client refused while the server starts is told to wait.
RETRY_AFTER_MS = 1_000
#: A request head larger than this gets no answer (nothing here needs one).
MAX_HEAD_BYTES = 8 << 10


async def answer_starting(
    listeners: list[trio.SocketListener], task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answers every connection to `listeners` with 503 until cancelled; the listeners
    stay open."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept, listener, nursery)
        task_status.started()


async def _accept(listener: trio.SocketListener, nursery: trio.Nursery) -> None:
    while True:
        stream = await listener.accept()
        nursery.start_soon(_answer, stream)


def _response(target: bytes) -> bytes:
    """The body of the 503 answer to a request for `target`."""
    path = target.split(b"?", 1)[0]
    body = (
        {"status": "starting"}
        if path == b"/healthz"
        else {
            "code": "overloaded",
            "message": "the server is starting: retry shortly",
            "retry_after_ms": RETRY_AFTER_MS,
        }
    )
    return json.dumps(body, separators=(",", ":")).encode()


async def _answer(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    try:
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            event = conn.next_event()
            while event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(RECV_BYTES))
                event = conn.next_event()
            if isinstance(event, h11.Request):
                body = _response(bytes(event.target))
                headers = [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(RETRY_AFTER_MS // 1000).encode()),
                    (b"connection", b"close"),
                    (b"server", SERVER_HEADER),
                ]
                data = conn.send(h11.Response(status_code=503, headers=headers)) or b""
                data += (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
                await stream.send_all(data)
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        stream.socket.close()
