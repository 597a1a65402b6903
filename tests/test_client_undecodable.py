"""`rushhour.client` against a server that relays what Python's `json` cannot decode (a
server without the inbound JSON limits, or bodies it stored before it had them): the
client skips such a frame with a log line, fails the request it answered, and goes on."""

from __future__ import annotations

import contextlib
import json
import logging

import pytest
import trio
import trio_websocket

from rushhour.client import Message, ServerError, open_client

DEEP = "[" * 3000 + "]" * 3000
HUGE_INT = "7" * 5000


def msg(seq: int, body: str) -> str:
    return f'{{"op":"msg","room":"r","seq":{seq},"from":"x","cid":"c{seq}","ts":1,"body":{body}}}'


async def relaying_server(request: trio_websocket.WebSocketRequest) -> None:
    """Welcomes, answers the subscribe, pushes two bad messages and a good one, and
    answers `history` with a page holding a bad body."""
    ws = await request.accept()
    json.loads(await ws.get_message())  # hello
    welcome = {"op": "welcome", "session": "s", "user": "u", "tenant": "t", "heartbeat_ms": 25000}
    await ws.send_message(json.dumps({**welcome, "server_time": 1, "resumed": False}))
    subscribe = json.loads(await ws.get_message())
    reply = {"op": "reply", "id": subscribe["id"], "ok": True, "room": "r", "last_seq": 0, "first_seq": 1}
    await ws.send_message(json.dumps({**reply, "read_seq": 0, "delivered_seq": 0}))
    for seq, body in [(1, DEEP), (2, HUGE_INT), (3, '"fine"')]:
        await ws.send_message(msg(seq, body))
    history = json.loads(await ws.get_message())
    await ws.send_message(f'{{"op":"reply","id":{history["id"]},"ok":true,"messages":[{msg(1, DEEP)}]}}')
    await ws.send_message(msg(4, '"still fine"'))
    with trio.move_on_after(10), contextlib.suppress(trio_websocket.ConnectionClosed):
        await ws.get_message()  # until the client closes


async def test_frames_the_client_cannot_decode_are_skipped_and_fail_their_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="rushhour.client")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_websocket.serve_websocket, relaying_server, "127.0.0.1", 0, None)
            url = f"ws://127.0.0.1:{server.port}/ws"
            async with open_client(url, "token", reconnect=False) as client:
                await client.subscribe("r")
                first = await client.__anext__()
                assert isinstance(first, Message) and (first.seq, first.body) == (3, "fine")
                with pytest.raises(ServerError, match="cannot decode") as refused:
                    await client.history("r")
                assert refused.value.code == "internal"
                after = await client.__anext__()
                assert isinstance(after, Message) and (after.seq, after.body) == (4, "still fine")
            nursery.cancel_scope.cancel()
    skipped = [r for r in caplog.records if "cannot be decoded" in r.getMessage()]
    assert len(skipped) == 3, [r.getMessage()[:120] for r in caplog.records]
