"""Where meetings and seats are kept so that they survive a restart.

Records are small JSON texts under a key: a meeting under its id (`m-…`), each of its
seats under `m-…/p-…`. One seat per record keeps a join O(1) to save even in a meeting
of thousands of viewers.
"""

from __future__ import annotations

from typing import Protocol

from rushhour.server._turn import Turn

#: The key space of meeting and seat records in the durable log.
SPACE = "meetings"


class MeetingStore(Protocol):
    """Persistence of meeting and seat records."""

    def save(self, key: str, snapshot: str) -> None:
        """Stores (or replaces) the record under `key`."""

    def delete(self, key: str) -> None:
        """Forgets the record under `key` (no error when absent)."""

    def load_all(self) -> dict[str, str]:
        """Every stored record, by key (read once at start)."""


class MemoryMeetingStore:
    """A `MeetingStore` in memory: meetings live as long as the process."""

    def __init__(self) -> None:
        self._records: dict[str, str] = {}

    def save(self, key: str, snapshot: str) -> None:
        self._records[key] = snapshot

    def delete(self, key: str) -> None:
        self._records.pop(key, None)

    def load_all(self) -> dict[str, str]:
        return dict(self._records)


class LogMeetingStore:
    """A `MeetingStore` in the server's durable log: each `save` / `delete` is a record,
    queued with the turn's other work for the core, that the next group commit makes
    durable (within milliseconds, without blocking the caller), and a clean shutdown
    waits for. The frames queued after it (the op's reply) wait in the core until it is
    durable. Survives restarts; read back at start.
    """

    def __init__(self, turn: Turn) -> None:
        self._turn = turn

    def save(self, key: str, snapshot: str) -> None:
        self._turn.out.put_state(SPACE, key, snapshot)

    def delete(self, key: str) -> None:
        self._turn.out.put_state(SPACE, key, None)

    def load_all(self) -> dict[str, str]:
        return dict(self._turn.engine.states(SPACE))
