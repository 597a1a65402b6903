"""`open_client` and `Client`: the Trio driver of the protocol.

One background task (`Client._run`) owns the connection: it connects, says `hello`,
reads every frame (replies go to the request table, pushes to the event channel),
and on a drop reconnects, takes its meeting seats back, resends what was unanswered
and subscribes again. Callers' tasks write their request frames themselves and wait for the reader to hand back
the reply.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_websocket

from rushhour.client._connection import CLOSE_TIMEOUT_S, Refused, decode, hello, open_connection, reraise
from rushhour.client._errors import ConnectionClosed, ServerError
from rushhour.client._events import ClientEvent, Event, Message, Reconnected, Rejoined
from rushhour.client._meetings import Seats
from rushhour.client._methods import SectionMethods
from rushhour.client._requests import ReplyHook, Request, Requests
from rushhour.client._state import (
    CLOSE_ABNORMAL,
    Rooms,
    backoff_delay,
    retry_after_from_reason,
    should_reconnect,
    should_resume,
)

#: Events buffered between the reader and the application. When it is full the reader
#: waits, the socket fills and the server eventually closes this slow consumer (4008);
#: the client then resumes from its cursors, so nothing is lost. 1024 frames absorb a
#: burst of a busy room without making a stalled application hold much memory.
EVENT_BUFFER = 1024
#: Error codes after which a retriable request is sent again once `retry_after_ms` passed.
RETRY_CODES = frozenset({"rate_limited", "overloaded"})
#: Wait used when such an error carries no `retry_after_ms`.
DEFAULT_RETRY_AFTER_MS = 100

#: A JWT, or an async callable returning a fresh one for every (re)connection.
TokenSource = str | Callable[[], Awaitable[str]]


@asynccontextmanager
async def open_client(
    url: str,
    token: TokenSource,
    *,
    reconnect: bool = True,
    connect_timeout: float = 10.0,
    max_backoff: float = 30.0,
) -> AsyncIterator[Client]:
    """Connects to a rushhour server and says `hello`; closes the client on exit.

    Args:
        url: The WebSocket URL, e.g. `ws://127.0.0.1:8080/ws`.
        token: The JWT, or an async callable returning a fresh one, called before
            every (re)connection (tokens expire; long-lived clients refresh them).
        reconnect: Reconnect after a drop or a retriable close, resuming the session
            and replaying what was missed. When False, any close is final.
        connect_timeout: Seconds allowed for one attempt: TCP, WebSocket handshake and
            `hello` up to `welcome`.
        max_backoff: Ceiling in seconds of the jittered exponential backoff between
            reconnection attempts (a server's `retry_after_ms` is honoured as given).

    Yields:
        The connected client, `welcome` received.

    Raises:
        ConnectionClosed: the first connection failed: the server refused the token
            (4001), or could not be reached (1006). Only an overloaded server's "retry
            after" is waited out on the first connection (when `reconnect` is True);
            anything else fails fast, so a wrong URL is not retried forever.
    """
    client = Client(url, token, reconnect=reconnect, connect_timeout=connect_timeout, max_backoff=max_backoff)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client._run)
            try:
                yield client
            finally:
                await client.aclose()
    except BaseExceptionGroup as group:
        # The background task never raises, so a group holds one exception: the
        # caller's, or the failed first connection. Raise it as is, like trio-websocket.
        if len(group.exceptions) == 1:
            reraise(group.exceptions[0])
        raise


class Client(SectionMethods):
    """A connection to a rushhour server that survives drops; made by `open_client`.

    Iterate it for pushed events (`Message`, `Event`, `Reconnected`); call its
    methods from any task. Each room's messages are delivered in seq order, never
    twice, with nothing missed across reconnects (unless the server's retention was
    passed: a subscribe reply then says `"truncated": true`).

    Read events concurrently with your requests: while the event buffer
    (`EVENT_BUFFER`) is full, the reader waits, and so do the replies behind it.

    Attributes:
        user: The user id, from `welcome`.
        tenant: The tenant id, from `welcome`.
        session: The session token of the current connection (resumed on reconnect).
    """

    def __init__(
        self, url: str, token: TokenSource, *, reconnect: bool, connect_timeout: float, max_backoff: float
    ) -> None:
        self.user = ""
        self.tenant = ""
        self.session = ""
        self._url = url
        self._token = token
        self._reconnect = reconnect
        self._connect_timeout = connect_timeout
        self._max_backoff = max_backoff
        self._rng = random.Random()
        self._rooms = Rooms()
        self._seats = Seats()
        # Events that a reply's `on_reply` hook produced, delivered by the reader right
        # after that reply, before any later frame (a rejoin's `Rejoined`).
        self._after_reply: list[ClientEvent] = []
        self._requests = Requests()
        self._events_send, self._events_recv = trio.open_memory_channel[ClientEvent](EVENT_BUFFER)
        # The connection requests are written to directly; None while (re)connecting,
        # when new requests queue in the table and the next connection writes them.
        self._ws: trio_websocket.WebSocketConnection | None = None
        # The open connection, welcomed or not: the one `aclose` closes.
        self._open_ws: trio_websocket.WebSocketConnection | None = None
        self._generation = 0
        self._closing = False
        self._error: ConnectionClosed | None = None
        self._cancel = trio.CancelScope()
        self._stopped = trio.Event()

    # ----- public API -----

    async def request(self, frame: Mapping[str, Any], *, idempotent: bool = False) -> dict[str, Any]:
        """Sends any request frame and returns its reply.

        Args:
            frame: The frame, with `op`; an `id` is assigned (any given one is replaced).
            idempotent: Whether the request may be sent again: after a drop it is
                resent on the new connection, and after `rate_limited`/`overloaded`
                once `retry_after_ms` has passed. When False, those raise.

        Returns:
            The reply's fields (without `op` and `id`).

        Raises:
            ServerError: the server answered with an error.
            ConnectionClosed: the connection closed before the reply (for a request
                that is not idempotent it may or may not have been carried out; the
                client itself reconnects if it can), or the client is closed.
        """
        return await self._call(dict(frame), retry=idempotent)

    async def subscribe(self, room: str, since: int | None = None) -> dict[str, Any]:
        """Subscribes to a room's messages; the client subscribes again after reconnects.

        Args:
            room: The room id.
            since: Replay the messages after this seq first; None: only new ones.
                Messages already delivered by this client are not replayed.

        Returns:
            The reply: `room`, `last_seq`, `first_seq`, `read_seq`, `delivered_seq`,
            and `truncated` when `since` is older than what the server retains.

        Raises:
            ServerError: e.g. `bad_request` (invalid room id), `forbidden` (outside
                the token's `rooms`).
        """
        since = self._rooms.since_for(room, since)
        frame: dict[str, Any] = {"op": "subscribe", "room": room}
        if since is not None:
            frame["since"] = since

        def on_reply(reply: dict[str, Any]) -> None:
            if reply.get("op") == "reply":
                self._rooms.subscribed(room, since, reply)

        return await self._call(frame, retry=True, on_reply=on_reply)

    async def unsubscribe(self, room: str) -> None:
        """Stops the pushes of a room (the user stays a member).

        Raises:
            ServerError: the server refused it.
        """
        await self._unsubscribe("unsubscribe", room)

    async def leave(self, room: str) -> None:
        """Ends the user's membership of a room (and the pushes).

        Raises:
            ServerError: the server refused it.
        """
        await self._unsubscribe("leave", room)

    async def send(self, room: str, body: Any, cid: str | None = None) -> dict[str, Any]:
        """Sends a message, once: retries reuse the `cid`, and the server dedupes.

        A send interrupted by a drop is resent on the next connection, and one refused
        with `rate_limited`/`overloaded` is resent after `retry_after_ms`.

        Args:
            room: The room id.
            body: Any JSON value (at most 64 KiB encoded).
            cid: The client's id for the message, unique per sender and room; None
                picks a random one.

        Returns:
            The reply: `seq`, `ts`, `duplicate` (True when this `cid` was stored
            before), plus the `cid` used.

        Raises:
            ServerError: e.g. `too_large`, `forbidden`.
            TypeError, ValueError: `body` is not JSON (NaN included), or the frame
                would be over 1 MiB, the server's frame limit.
        """
        cid = cid if cid is not None else uuid.uuid4().hex
        reply = await self._call({"op": "send", "room": room, "cid": cid, "body": body}, retry=True)
        reply["cid"] = cid
        return reply

    async def history(self, room: str, before: int | None = None, limit: int = 50) -> list[Message]:
        """The newest `limit` messages of a room with seq < `before`, ascending.

        Page backwards with `before` = the lowest seq returned. Does not affect what
        iteration delivers.

        Raises:
            ServerError: the server refused it.
        """
        frame: dict[str, Any] = {"op": "history", "room": room, "limit": limit}
        if before is not None:
            frame["before"] = before
        reply = await self._call(frame, retry=True)
        return [Message.from_frame(m) for m in reply.get("messages", [])]

    async def aclose(self) -> None:
        """Closes the connection (code 1000) and stops reconnecting; idempotent.

        Pending requests fail with `ConnectionClosed`; iteration ends after the
        events already buffered.
        """
        if not self._closing:
            self._closing = True
            try:
                ws = self._open_ws
                if ws is not None:
                    # Not shielded: a cancelled caller just drops the connection.
                    with trio.move_on_after(CLOSE_TIMEOUT_S):
                        await ws.aclose(1000)
            finally:
                self._cancel.cancel()
        with trio.CancelScope(shield=True):
            await self._stopped.wait()  # quick: nothing in the background task is shielded

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> ClientEvent:
        """The next pushed event.

        Raises:
            StopAsyncIteration: after `aclose()`, once buffered events are read.
            ConnectionClosed: the connection closed for good (e.g. 4001).
        """
        try:
            return await self._events_recv.receive()
        except trio.EndOfChannel:
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None

    # ----- requests -----

    async def _unsubscribe(self, op: str, room: str) -> None:
        self._rooms.unsubscribed(room)  # now: a reconnect meanwhile must not subscribe again

        def on_reply(reply: dict[str, Any]) -> None:
            if reply.get("op") == "reply":
                self._rooms.unsubscribed(room)  # again: a subscribe may have been answered since

        await self._call({"op": op, "room": room}, retry=True, on_reply=on_reply)

    async def _call(
        self,
        frame: dict[str, Any],
        *,
        retry: bool,
        on_reply: ReplyHook | None = None,
        retry_refused: bool | None = None,
    ) -> dict[str, Any]:
        """Runs one request. `retry`: resend it after a drop; `retry_refused` (default:
        `retry`): send it again after `rate_limited`/`overloaded`, which the server
        answers without acting."""
        if retry_refused is None:
            retry_refused = retry
        while True:
            try:
                return await self._call_once(frame, retry, on_reply)
            except ServerError as e:
                if not retry_refused or e.code not in RETRY_CODES:
                    raise
                wait_ms = e.retry_after_ms if e.retry_after_ms is not None else DEFAULT_RETRY_AFTER_MS
                await trio.sleep(wait_ms / 1000)

    async def _call_once(self, frame: dict[str, Any], retry: bool, on_reply: ReplyHook | None) -> dict[str, Any]:
        request = Request(frame, retry=retry, on_reply=on_reply)
        await self._requests.add(request)
        try:
            ws = self._ws
            if ws is not None:
                # On a close, the reader sees it too: the request is resent or failed.
                with contextlib.suppress(trio_websocket.ConnectionClosed):
                    await ws.send_message(self._requests.encode(request, self._generation))
            await request.done.wait()
        finally:
            self._requests.abandon(request)  # a no-op once done
        return request.unwrap()

    # ----- the background task -----

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connects, serves, reconnects; records a final close instead of raising it."""
        try:
            with self._cancel:
                async with self._events_send:
                    await self._connect_loop(task_status)
        finally:
            self._ws = None
            self._requests.close(self._error or ConnectionClosed(1000, "the client is closed"))
            self._stopped.set()

    async def _connect_loop(self, task_status: trio.TaskStatus[None]) -> None:
        started = False
        attempt = 0
        resume = True
        while True:
            code, reason, retry_after_ms = CLOSE_ABNORMAL, "", None
            welcomed = False
            deadline = trio.current_time() + self._connect_timeout
            try:
                async with open_connection(self._url, deadline=deadline) as ws:
                    self._open_ws = ws
                    try:
                        token = self._token if isinstance(self._token, str) else await self._token()
                        welcome = await hello(ws, token, self.session if resume else None, deadline)
                        welcomed = True
                        self.user = str(welcome.get("user", ""))
                        self.tenant = str(welcome.get("tenant", ""))
                        self.session = str(welcome.get("session", ""))
                        attempt, resume = 0, True
                        if started:
                            # Never waits: a client whose events nobody reads (a sender
                            # only) must not stall on its 1025th reconnect. A full buffer
                            # means the application is far behind; it loses this notice
                            # only, never a message.
                            with contextlib.suppress(trio.WouldBlock):
                                self._events_send.send_nowait(Reconnected(welcome.get("resumed") is True))
                        else:
                            started = True
                            task_status.started()
                        await self._serve(ws)
                    finally:
                        self._open_ws = None
                        if ws.closed is not None:
                            code, reason = ws.closed.code, ws.closed.reason or ""
            except Refused as e:
                code, reason, retry_after_ms = e.code, e.reason, e.retry_after_ms
            if self._closing:
                return
            if retry_after_ms is None and code == 1013:
                retry_after_ms = retry_after_from_reason(reason)
            may_retry = self._reconnect and should_reconnect(code)
            if not started and retry_after_ms is None:
                may_retry = False  # the first connection fails fast, unless told to wait
            if not may_retry:
                self._error = ConnectionClosed(code, reason)
                if not started:
                    raise self._error
                return
            if welcomed:
                resume = should_resume(code)
            if retry_after_ms is not None:
                delay = retry_after_ms / 1000
            else:
                delay = backoff_delay(attempt, self._max_backoff, self._rng)
                attempt += 1
            await trio.sleep(delay)

    async def _serve(self, ws: trio_websocket.WebSocketConnection) -> None:
        """Runs one welcomed connection until it closes."""
        self._generation += 1
        generation = self._generation
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, ws, nursery.cancel_scope)
                if await self._rejoin(ws, generation, nursery) and await self._resend(ws, generation):
                    self._ws = ws  # from here on, callers write to it directly
                    nursery.start_soon(self._resubscribe)
        finally:
            self._ws = None
            closed = ws.closed
            lost = ConnectionClosed(closed.code, closed.reason or "") if closed else ConnectionClosed(CLOSE_ABNORMAL)
            self._requests.connection_lost(generation, lost)

    async def _resend(self, ws: trio_websocket.WebSocketConnection, generation: int) -> bool:
        """Writes the requests waiting for a connection, oldest first, so sends keep their
        order; returns False if the connection closed meanwhile."""
        try:
            while (request := self._requests.next_unsent()) is not None:
                await ws.send_message(self._requests.encode(request, generation))
        except trio_websocket.ConnectionClosed:
            return False
        return True

    async def _rejoin(self, ws: trio_websocket.WebSocketConnection, generation: int, nursery: trio.Nursery) -> bool:
        """Writes a `meeting.join` with the seat token of every meeting the client is in,
        ahead of anything else, so that requests waiting for this connection (a signal,
        a host control) reach the server once the seat is back; returns False if the
        connection closed meanwhile."""
        try:
            for seat in self._seats.rejoins():
                frame = {"op": "meeting.join", "meeting": seat.meeting, "seat": seat.token}
                request = Request(frame, retry=False, on_reply=self._rejoin_hook(seat.meeting, nursery))
                await ws.send_message(self._requests.encode(request, generation))
        except trio_websocket.ConnectionClosed:
            return False
        return True

    def _rejoin_hook(self, meeting: str, nursery: trio.Nursery | None) -> ReplyHook:
        """What the reader does with a rejoin's answer: keep the new seat token and tell
        the application (`Rejoined`); after `overloaded`, try again later (`nursery`: the
        connection's, None when the retrying `_call` waits itself); after any other
        error, forget the seat and tell the application (an `error` event)."""

        def on_reply(reply: dict[str, Any]) -> None:
            if reply.get("op") == "reply":
                fields = {k: v for k, v in reply.items() if k not in ("op", "id")}
                self._seats.joined(fields)
                self._after_reply.append(Rejoined(meeting, fields))
                return
            error = ServerError.from_frame(reply)
            if error.code in RETRY_CODES:
                if nursery is not None:
                    wait_ms = error.retry_after_ms if error.retry_after_ms is not None else DEFAULT_RETRY_AFTER_MS
                    nursery.start_soon(self._rejoin_later, meeting, wait_ms)
                return
            seat = self._seats.get(meeting)
            self._seats.forget(meeting, seat.participant if seat else None)
            data = {"op": "error", "code": error.code, "message": error.message, "meeting": meeting}
            self._after_reply.append(Event("error", data))

        return on_reply

    async def _rejoin_later(self, meeting: str, wait_ms: int) -> None:
        """A rejoin refused as `overloaded` (every seat of a restarted server at once),
        sent again once `retry_after_ms` has passed, until it is answered otherwise."""
        await trio.sleep(wait_ms / 1000)
        seat = self._seats.get(meeting)
        if seat is None:
            return  # left meanwhile
        frame = {"op": "meeting.join", "meeting": meeting, "seat": seat.token}
        with contextlib.suppress(ServerError, ConnectionClosed):  # the hook told the application
            await self._call(frame, retry=True, on_reply=self._rejoin_hook(meeting, None))

    async def _resubscribe(self) -> None:
        """Subscribes again to every room, from the last message delivered."""
        async with trio.open_nursery() as nursery:
            for room, since in self._rooms.resubscriptions():
                nursery.start_soon(self._resubscribe_one, room, since)

    async def _resubscribe_one(self, room: str, since: int | None) -> None:
        try:
            await self.subscribe(room, since)
        except ServerError as e:
            # e.g. `forbidden` after a refreshed token changed its `rooms`: tell the app.
            self._rooms.unsubscribed(room)
            data = {"op": "error", "code": e.code, "message": e.message, "room": room}
            await self._events_send.send(Event("error", data))
        except ConnectionClosed:
            pass  # the connection dropped again; the next one subscribes again

    async def _read(self, ws: trio_websocket.WebSocketConnection, done: trio.CancelScope) -> None:
        """Reads every frame of the connection in order; ends the connection's tasks at its close."""
        try:
            while True:
                frame = decode(await ws.get_message())
                if frame is not None:
                    await self._dispatch(frame)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            done.cancel()

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        op: str = frame["op"]
        if op == "reply" or (op == "error" and "id" in frame):
            self._requests.resolve(frame)  # unknown ids: answers nobody waits for
            while self._after_reply:
                await self._events_send.send(self._after_reply.pop(0))
            return
        if op == "meeting.event":
            self._seats.event(frame)
        if op == "msg":
            try:
                message = Message.from_frame(frame)
            except KeyError:
                await self._events_send.send(Event(op, frame))
                return
            if self._rooms.accepts(message):
                await self._events_send.send(message)
                self._rooms.delivered(message)  # only once the application's buffer took it
            return
        await self._events_send.send(Event(op, frame))
