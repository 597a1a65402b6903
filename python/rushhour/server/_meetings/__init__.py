"""Meetings: signalling for WebRTC (create, join, seats and rejoin, signal relay, host
controls, broadcast mode). Layout:

- `_model.py` — meetings, participants (seats), held signals.
- `_seats.py` — signed seat tokens.
- `_store.py` — `MeetingStore`, where meetings and seats persist.
- `_limits.py` — join admission (token buckets).
- `_events.py` — frame builders.
- `_registry.py` — shared state changes, connection ends, timers.
- `_ops.py` — one function per op.
"""

from rushhour.server._meetings._limits import JoinLimiter
from rushhour.server._meetings._ops import OPS, handle
from rushhour.server._meetings._registry import MeetingLimits, MeetingRegistry
from rushhour.server._meetings._store import LogMeetingStore, MeetingStore, MemoryMeetingStore

__all__ = [
    "OPS",
    "JoinLimiter",
    "LogMeetingStore",
    "MeetingLimits",
    "MeetingRegistry",
    "MeetingStore",
    "MemoryMeetingStore",
    "handle",
]
