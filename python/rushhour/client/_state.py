"""The client's bookkeeping, sans-IO: room cursors (what was delivered, what to replay
after a reconnect) and the reconnect policy (which closes are final, how long to wait).

Nothing here touches a socket or a clock, so the rules are tested without a server.
"""

from __future__ import annotations

import json
import random
from typing import Any

from rushhour.client._events import Message

#: Close codes after which a new connection may succeed. 1000 is here because a server
#: only starts a normal close on its own for an idle timeout (a client close is handled
#: before this check); 4009 means another connection resumed this session. Everything
#: else (4001 unauthorized, 1002/1007/1008/1009 protocol faults ...) would fail again.
RECONNECT_CODES = frozenset({1000, 1001, 1005, 1006, 1011, 1012, 1013, 1014, 4008, 4009})
#: Close code of a token the server refused: never retried.
CLOSE_UNAUTHORIZED = 4001
#: Close code of a session taken over by another connection.
CLOSE_REPLACED = 4009
#: Close code for "connection dropped" (no close frame, or no connection at all).
CLOSE_ABNORMAL = 1006
#: First backoff ceiling in seconds: small, since most drops are one-off.
BACKOFF_BASE_S = 0.2


def should_reconnect(code: int) -> bool:
    """Whether a connection closed by the server (or dropped) with `code` is worth retrying."""
    return code in RECONNECT_CODES


def should_resume(code: int) -> bool:
    """Whether the next `hello` carries the session token.

    Not after 4009: the session was resumed by another connection, and resuming it back
    would fence that one out, which would resume again, and so on. A fresh session loses
    nothing, since the client replays from its own cursors.
    """
    return code != CLOSE_REPLACED


def backoff_delay(attempt: int, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)].

    Full jitter spreads thousands of clients dropped at once (a server restart) evenly
    over the window instead of bunching them at its edges.
    """
    return rng.uniform(0.0, min(cap, BACKOFF_BASE_S * 2.0 ** min(attempt, 32)))


def retry_after_from_reason(reason: str | None) -> int | None:
    """The `retry_after_ms` of a 1013 close reason (JSON `{"retry_after_ms": M}`), if any."""
    if not reason:
        return None
    try:
        data = json.loads(reason)
    except ValueError:
        return None
    value = data.get("retry_after_ms") if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class Rooms:
    """Per room: the last seq delivered to the application, and whether to subscribe again.

    ### Invariants
    - A cursor never moves backwards, so no message is delivered twice: a message with
      seq <= cursor is dropped, whether it comes from a replay, a resubscription racing a
      restored subscription, or a stray push.
    - Within a room, delivered seqs increase strictly (messages arrive in seq order on
      one connection, and the cursor carries over to the next).
    """

    def __init__(self) -> None:
        self._cursors: dict[str, int] = {}
        # Rooms to subscribe again on a new connection (a dict keeps subscription order).
        self._subscribed: dict[str, None] = {}

    def cursor(self, room: str) -> int | None:
        """The last seq delivered in `room`, or None if nothing is known of it."""
        return self._cursors.get(room)

    def since_for(self, room: str, since: int | None) -> int | None:
        """The `since` to send for a subscription asked with `since`.

        An explicit `since` below the cursor is raised to it: what lies between was
        delivered already and would be dropped anyway, so the server need not replay it.
        """
        cursor = self._cursors.get(room)
        if since is None or cursor is None:
            return since
        return max(since, cursor)

    def subscribed(self, room: str, since: int | None, reply: dict[str, Any]) -> None:
        """A subscribe reply arrived: pushes of `room` follow, from `since` or from now.

        Called by the reader when the reply is read, before any push that follows it.
        """
        start = since if since is not None else reply.get("last_seq", 0)
        if not isinstance(start, int):
            start = 0
        self._cursors[room] = max(self._cursors.get(room, start), start)
        self._subscribed[room] = None

    def unsubscribed(self, room: str) -> None:
        """`room` is not to be subscribed again (unsubscribe or leave, asked or done)."""
        self._subscribed.pop(room, None)

    def accepts(self, message: Message) -> bool:
        """Whether `message` is new to the application."""
        cursor = self._cursors.get(message.room)
        return cursor is None or message.seq > cursor

    def delivered(self, message: Message) -> None:
        """`message` was handed to the application."""
        cursor = self._cursors.get(message.room)
        if cursor is None or message.seq > cursor:
            self._cursors[message.room] = message.seq

    def resubscriptions(self) -> list[tuple[str, int | None]]:
        """(room, since) for every subscribed room, for a new connection."""
        return [(room, self._cursors.get(room)) for room in self._subscribed]

    def is_subscribed(self, room: str) -> bool:
        """Whether `room` is subscribed again after a reconnect."""
        return room in self._subscribed
