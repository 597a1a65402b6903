"""The naive baseline: a broadcast server written the obvious way with trio-websocket.

Every `send` is re-encoded and written to every connected client in turn, one
`await ws.send_message(...)` after another, so the slowest socket paces the room. It
speaks just enough of the rushhour protocol (hello, subscribe, send) for
`rushhour-burst fanout` to drive it; the token is not checked. It is the number to
beat, not something to optimise.

    python benches/naive_peer.py --host 127.0.0.1 --port 0
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections import defaultdict
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

clients: set[WebSocketConnection] = set()
room_seq: defaultdict[str, int] = defaultdict(int)


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


async def handle(ws: WebSocketConnection, frame: dict[str, Any]) -> None:
    op, frame_id = frame.get("op"), frame.get("id")
    if op == "hello":
        await ws.send_message(dumps({"op": "welcome", "session": "naive", "user": "naive", "tenant": "naive"}))
    elif op == "subscribe":
        room = frame["room"]
        reply = {"op": "reply", "id": frame_id, "ok": True, "room": room, "last_seq": room_seq[room]}
        await ws.send_message(dumps(reply))
    elif op == "send":
        room = frame["room"]
        room_seq[room] += 1
        seq = room_seq[room]
        msg = {"op": "msg", "room": room, "seq": seq, "from": "naive", "cid": frame.get("cid")}
        msg.update(ts=int(time.time() * 1000), body=frame.get("body"))
        text = dumps(msg)
        for client in list(clients):
            try:
                await client.send_message(text)
            except ConnectionClosed:
                clients.discard(client)
        if frame_id is not None:
            await ws.send_message(dumps({"op": "reply", "id": frame_id, "ok": True, "seq": seq}))
    elif frame_id is not None:
        await ws.send_message(dumps({"op": "error", "id": frame_id, "code": "bad_request", "message": "unknown op"}))


async def serve_client(request: WebSocketRequest) -> None:
    ws = await request.accept()
    clients.add(ws)
    try:
        while True:
            await handle(ws, json.loads(await ws.get_message()))
    except ConnectionClosed:
        pass
    finally:
        clients.discard(ws)


async def main(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, serve_client, host, port, None)
        print(f"naive listening on ws://{host}:{server.port}/ws", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the naive broadcast baseline")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, args.host, args.port)
