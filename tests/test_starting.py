"""While the log is recovered at start the port answers 503 `starting`, over real
sockets; once recovered, the same listening sockets serve."""

from __future__ import annotations

import json

import h11
import trio

from rushhour.server._starting import RETRY_AFTER_MS, answer_starting
from wsutil import read_response


async def _get(
    port: int, target: str, headers: list[tuple[str, str]] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: status, headers, body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(method="GET", target=target, headers=[("host", "localhost"), *(headers or [])])
    await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
    answer = await read_response(conn, stream)
    await stream.aclose()
    return answer


async def test_every_request_gets_503_until_the_log_is_open() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(answer_starting, listeners)
        status, headers, body = await _get(port, "/healthz")
        assert (status, json.loads(body)) == (503, {"status": "starting"})
        assert headers["retry-after"] == "1" and headers["connection"] == "close"

        upgrade = [("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-version", "13")]
        status, _, body = await _get(port, "/ws", [*upgrade, ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")])
        assert status == 503
        assert json.loads(body) == {
            "code": "overloaded",
            "message": "the server is starting: retry shortly",
            "retry_after_ms": RETRY_AFTER_MS,
        }

        # Garbage gets no answer and harms no one.
        bad = await trio.open_tcp_stream("127.0.0.1", port)
        await bad.send_all(b"\x16\x03\x01 not http\r\n\r\n")
        assert await bad.receive_some(4096) == b""
        await bad.aclose()
        assert (await _get(port, "/healthz"))[0] == 503
        nursery.cancel_scope.cancel()

    # The listeners stay open for the server that follows.
    client = await trio.open_tcp_stream("127.0.0.1", port)
    accepted = await listeners[0].accept()
    await client.send_all(b"ping")
    assert await accepted.receive_some(4) == b"ping"
    for resource in (client, accepted, *listeners):
        await resource.aclose()
