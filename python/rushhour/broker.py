"""`Broker`: the in-process broker, for application code without a socket.

Publishing and history are direct calls into the core. A subscription is a real
connection of the core over a socket pair: the core writes its frames like to any
client, so ordering, replay with `since` and the slow-consumer bound all hold.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Ping, TextMessage
from wsproto.events import Message as WsMessage

from rushhour._core import Engine, RushhourError
from rushhour.client._events import Message
from rushhour.config import Config


@dataclass(frozen=True)
class Published:
    """The outcome of a publish."""

    seq: int
    ts: int
    duplicate: bool


class Subscription:
    """Messages of one room, in seq order, as an async iterator."""

    def __init__(self, stream: trio.SocketStream, ws: Connection) -> None:
        self._stream = stream
        self._ws = ws
        self._pending: list[Message] = []
        self._text: list[str] = []

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        while not self._pending:
            data = await self._stream.receive_some(1 << 16)
            if not data:
                raise StopAsyncIteration
            self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, TextMessage):
                    self._text.append(event.data)
                    if event.message_finished:
                        frame = json.loads("".join(self._text))
                        self._text.clear()
                        if frame.get("op") == "msg":
                            self._pending.append(Message.from_frame(frame))
                        elif frame.get("op") == "error":
                            raise RushhourError(frame.get("message"))
                elif isinstance(event, Ping):
                    await self._stream.send_all(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    raise StopAsyncIteration
        return self._pending.pop(0)


class Broker:
    """An in-process rushhour broker.

    Share one with a running server (`rushhour.serve(config, engine=broker.engine)`) to
    publish into the rooms its clients use.

    Example:
        broker = rushhour.Broker()
        broker.publish("acme", "general", {"text": "hi"}, sender="bot")
        async with broker.subscribe("acme", "general", since=0) as messages:
            async for message in messages: ...
    """

    def __init__(self, config: Config | None = None, *, engine: Engine | None = None) -> None:
        from rushhour.server._app import engine_for

        self.engine = engine if engine is not None else engine_for(config or Config(data_dir=None))

    def publish(
        self, tenant: str, room: str, body: Any, *, sender: str = "server", cid: str | None = None
    ) -> Published:
        """Stores a message and delivers it to the room's subscribers; returns once the
        message is durable (blocking: from async code, call it in a thread).

        Args:
            tenant: Tenant of the room.
            room: Room id.
            body: Any JSON-serialisable value.
            sender: The `from` of the message.
            cid: Idempotency key; publishing the same (sender, room, cid) again returns the
                original seq with `duplicate=True`. A random one when omitted.

        Raises:
            rushhour.RushhourError: a subclass per protocol error code.
        """
        seq, ts, duplicate = self.engine.publish(
            tenant, room, sender, cid or uuid.uuid4().hex, json.dumps(body, separators=(",", ":"))
        )
        return Published(seq, ts, duplicate)

    def history(self, tenant: str, room: str, *, before: int | None = None, limit: int = 50) -> list[Message]:
        """The room's messages before `before` (default: the newest), ascending."""
        return [Message.from_frame(json.loads(m)) for m in self.engine.history(tenant, room, before, limit)]

    @asynccontextmanager
    async def subscribe(
        self, tenant: str, room: str, *, since: int | None = None, user: str = "server"
    ) -> AsyncIterator[Subscription]:
        """Subscribes to a room: yields an async iterator of its messages.

        Args:
            since: Replay every message after this seq first (None: only new ones).
            user: Who subscribes (becomes a member of the room).
        """
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        theirs.setblocking(False)
        conn = self.engine.attach(os.dup(theirs.fileno()))
        theirs.close()
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        ws = Connection(ConnectionType.CLIENT)
        try:
            self.engine.open_session(conn, tenant, user)
            request = {"op": "subscribe", "room": room, **({"since": since} if since is not None else {})}
            result = self.engine.feed(conn, ws.send(WsMessage(data=json.dumps(request))))
            if result is not None:
                raise RushhourError(f"subscribe failed: {result!r}")
            yield Subscription(stream, ws)
        finally:
            self.engine.detach(conn)
            await stream.aclose()
