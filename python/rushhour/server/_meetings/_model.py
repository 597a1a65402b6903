"""Meeting state: meetings, their participants (seats) and held signals.

Plain data; the rules live in `_ops.py` and `_registry.py`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

INTERACTIVE = "interactive"
BROADCAST = "broadcast"
HOST = "host"
PARTICIPANT = "participant"
#: A broadcast-mode attendee: not in the roster, counted in `count` events.
VIEWER = "viewer"
CONNECTED = "connected"
RECONNECTING = "reconnecting"

#: Signals held for one reconnecting participant, at most (frames and bytes): about a
#: full WebRTC negotiation with its ICE candidates, many times over.
MAX_HELD_SIGNALS = 256
MAX_HELD_BYTES = 1 << 20


@dataclass
class Participant:
    """One seat of a meeting."""

    #: `p-…`, stable across rejoins.
    pid: str
    user: str
    name: str
    role: str
    #: Join order in the meeting: the longest present has the lowest.
    order: int
    muted: bool = False
    state: str = CONNECTED
    #: The connection holding the seat (None while reconnecting).
    conn: int | None = None
    #: When a reconnecting seat expires (monotonic ms).
    deadline_ms: float | None = None
    #: Signals waiting for the rejoin, in arrival order, and their size.
    held: deque[str] = field(default_factory=deque)
    held_bytes: int = 0

    def roster(self) -> dict[str, Any]:
        return {
            "participant": self.pid,
            "user": self.user,
            "name": self.name,
            "role": self.role,
            "state": self.state,
            "muted": self.muted,
        }

    def snapshot(self) -> str:
        return orjson.dumps(
            {"p": self.pid, "u": self.user, "n": self.name, "r": self.role, "o": self.order, "muted": self.muted}
        ).decode()


@dataclass
class Meeting:
    """One meeting: signalling state only, no media."""

    mid: str
    tenant: str
    title: str
    key: str | None
    mode: str
    max_participants: int
    #: The user who created it: its first join takes the host seat.
    creator: str
    created_ms: int
    #: The host's participant id once the host seat is taken.
    host: str | None = None
    #: Bumped by every change to the roster; events carry it.
    epoch: int = 0
    participants: dict[str, Participant] = field(default_factory=dict)
    #: Removed seats and users: they cannot come back.
    removed_pids: set[str] = field(default_factory=set)
    removed_users: set[str] = field(default_factory=set)
    next_order: int = 0
    #: When an empty meeting ends (monotonic ms), None while anyone holds a seat.
    empty_deadline_ms: float | None = None
    #: Viewer count last pushed (broadcast mode), to push only changes.
    pushed_viewers: int = 0
    viewers: int = 0

    def in_roster(self, p: Participant) -> bool:
        """Whether `p` is listed in rosters and announced in events."""
        return p.role != VIEWER

    def live_conns(self) -> list[int]:
        return [p.conn for p in self.participants.values() if p.conn is not None]

    def presenter_conns(self) -> list[int]:
        return [p.conn for p in self.participants.values() if p.conn is not None and p.role != VIEWER]

    def roster(self) -> list[dict[str, Any]]:
        return [p.roster() for p in sorted(self.participants.values(), key=lambda p: p.order) if self.in_roster(p)]

    def host_user(self) -> str:
        host = self.participants.get(self.host) if self.host else None
        return host.user if host is not None else self.creator

    def snapshot(self) -> str:
        return orjson.dumps(
            {
                "m": self.mid,
                "t": self.tenant,
                "title": self.title,
                "key": self.key,
                "mode": self.mode,
                "max": self.max_participants,
                "creator": self.creator,
                "created": self.created_ms,
                "host": self.host,
                "epoch": self.epoch,
                "next": self.next_order,
                "removed_p": sorted(self.removed_pids),
                "removed_u": sorted(self.removed_users),
            }
        ).decode()
