"""Requests awaiting their reply: ids, the in-flight bound, and what a dropped
connection does to each (resend it on the next connection, or fail it).

No socket here: the client encodes a request with `encode`, writes the text itself,
and the reader hands every `reply`/`error` frame to `resolve`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import trio

from rushhour.client._errors import ConnectionClosed, ServerError

#: Requests awaiting a reply at once: the server's per-connection limit (past it, it
#: answers `rate_limited`), so callers wait on a semaphore instead of being refused.
MAX_IN_FLIGHT = 64

#: Largest request frame sent: the server's default frame limit. A bigger frame would
#: make the server close the connection (1009), and a resent one would do it again.
MAX_REQUEST_BYTES = 1 << 20

ReplyHook = Callable[[dict[str, Any]], None]


class Request:
    """One request frame and its fate.

    Attributes:
        retry: Resend it on a new connection if the old one drops before the reply
            (for idempotent requests, and sends, which the server dedupes by `cid`).
        on_reply: Called by the reader with the reply or error frame, before any later
            frame is read, so bookkeeping (a room's cursor) is in place for the pushes
            that follow the reply.
        waited: Whether a caller still waits for the result; a request abandoned by a
            cancelled caller keeps its slot until its reply comes, since the server
            still counts it, but is not resent.
        id: Its id on the connection it was last written to.
        generation: That connection's number; None while it waits to be written.
    """

    def __init__(self, frame: dict[str, Any], *, retry: bool, on_reply: ReplyHook | None = None) -> None:
        """Encodes the frame.

        Raises:
            TypeError, ValueError: the frame is not JSON, or is over `MAX_REQUEST_BYTES`.
        """
        op = frame["op"]
        rest = {k: v for k, v in frame.items() if k not in ("op", "id")}
        # Encoded once, here in the caller's task, so a body that is not JSON fails the
        # call instead of the connection; `allow_nan=False`: NaN is not JSON.
        text = json.dumps(rest, separators=(",", ":"), allow_nan=False)  # ASCII: len() counts bytes
        if len(text) > MAX_REQUEST_BYTES:
            raise ValueError(f"a {op!r} frame of {len(text)} bytes is over the {MAX_REQUEST_BYTES}-byte frame limit")
        self._head = '{"op":' + json.dumps(op) + ',"id":'
        self._tail = "}" if text == "{}" else "," + text[1:]
        self.op: str = op
        self.retry = retry
        self.on_reply = on_reply
        self.waited = True
        self.id: int | None = None
        self.generation: int | None = None
        self.done = trio.Event()
        self._result: dict[str, Any] | BaseException | None = None

    def text(self, request_id: int) -> str:
        """The frame as JSON text with `id`, right after `op` (as the server writes)."""
        return self._head + str(request_id) + self._tail

    def unwrap(self) -> dict[str, Any]:
        """The reply without `op` and `id`.

        Raises:
            ServerError: the server answered with an error frame.
            ConnectionClosed: the connection closed before the reply.
        """
        result = self._result
        if isinstance(result, BaseException):
            raise result
        assert result is not None, "unwrap before done"
        if result.get("op") == "error":
            raise ServerError.from_frame(result)
        return {k: v for k, v in result.items() if k not in ("op", "id")}

    def finish(self, result: dict[str, Any] | BaseException) -> None:
        self._result = result
        self.done.set()


class Requests:
    """The table of requests between their call and their reply, across connections."""

    def __init__(self, limit: int = MAX_IN_FLIGHT) -> None:
        self._slots = trio.Semaphore(limit)
        self._ids = itertools.count(1)  # never reused, even across connections
        self._order: dict[Request, None] = {}  # insertion order = call order, kept on resend
        self._by_id: dict[int, Request] = {}
        self._error: ConnectionClosed | None = None

    async def add(self, request: Request) -> None:
        """Waits for a slot, then tracks `request`.

        Raises:
            ConnectionClosed: the client is closed.
        """
        if self._error is not None:
            raise self._error
        await self._slots.acquire()
        if self._error is not None:
            self._slots.release()
            raise self._error
        self._order[request] = None

    def encode(self, request: Request, generation: int) -> str:
        """Gives `request` a fresh id on connection `generation`; returns the text to write.

        A request never `add`ed (the client's own meeting rejoins, written ahead of
        everything else on a new connection) takes no slot and is never resent: its
        reply still goes to its `on_reply`, and it is forgotten with its connection.
        """
        request.id = next(self._ids)
        request.generation = generation
        self._by_id[request.id] = request
        return request.text(request.id)

    def next_unsent(self) -> Request | None:
        """The oldest request not yet written to the current connection."""
        return next((r for r in self._order if r.generation is None), None)

    def resolve(self, frame: dict[str, Any]) -> bool:
        """Completes the request that `frame` (a reply or error with an id) answers.

        Returns:
            False if no request has that id (a frame not meant for a request).
        """
        request_id = frame.get("id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            return False
        request = self._by_id.pop(request_id, None)
        if request is None:
            return False
        if request.on_reply is not None:
            request.on_reply(frame)
        self._finish(request, frame)
        return True

    def abandon(self, request: Request) -> None:
        """The caller stopped waiting (cancelled): forget it, or let it finish silently."""
        if request.done.is_set():
            return
        if request.generation is None:
            self._finish(request, ConnectionClosed(1000, "abandoned"))
        else:
            request.waited = False

    def connection_lost(self, generation: int, error: ConnectionClosed) -> None:
        """Connection `generation` is gone: its retriable requests wait for the next one
        (keeping their slot and their place), the others fail with `error`."""
        for request in list(self._order):
            if request.generation != generation:
                continue
            if request.id is not None:
                self._by_id.pop(request.id, None)
            if request.retry and request.waited:
                request.id = request.generation = None
            else:
                self._finish(request, error)
        for request_id, request in list(self._by_id.items()):
            if request.generation == generation:  # requests outside the table
                del self._by_id[request_id]
                request.finish(error)

    def close(self, error: ConnectionClosed) -> None:
        """Fails every request with `error`, now and from now on."""
        self._error = error
        for request in list(self._order):
            self._finish(request, error)

    def _finish(self, request: Request, result: dict[str, Any] | BaseException) -> None:
        if request in self._order:
            del self._order[request]
            self._slots.release()
        if request.id is not None:
            self._by_id.pop(request.id, None)
        request.finish(result)
