"""Pacing of receipt and presence pushes: the last in priority under pressure.

Every `receipt_interval_ms` each small room whose cursors moved gets one push; the rooms
are flushed in `SLOTS` slots spread over the interval, so that no flush queues a push
for every member of every room at once. When the socket writer is busy more than
`BUSY` of the time (the machine is short of CPU for sends and signals), the interval
doubles, up to `MAX_STRETCH` times the configured one, and comes back down as the load
falls: pushes are coalesced state, so fewer of them lose nothing (the protocol's
interval is a minimum).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Flushes per interval, each for its share of the rooms (by room id).
SLOTS = 8
#: Writer load above which receipt pushes slow down.
BUSY = 0.5
#: Longest interval, as a multiple of the configured one.
MAX_STRETCH = 4


@dataclass
class ReceiptPacer:
    """Which slot to flush next and how long to wait before it (sans-IO)."""

    interval_ms: int
    slots: int = field(init=False)
    stretch: int = 1
    slot: int = 0
    _busy_ns: int | None = None
    _at_s: float = 0.0

    def __post_init__(self) -> None:
        self.slots = SLOTS if self.interval_ms >= SLOTS else 1

    @property
    def current_interval_ms(self) -> int:
        return self.interval_ms * self.stretch

    def tick_s(self) -> float:
        """How long to wait before flushing the next slot."""
        return self.current_interval_ms / 1000 / self.slots

    def flushed(self, writer_busy_ns: int, now_s: float) -> None:
        """The current slot was flushed: move on; after a whole round, adapt the
        interval to the writer's load over that round."""
        self.slot = (self.slot + 1) % self.slots
        if self.slot:
            return
        if self._busy_ns is not None and now_s > self._at_s:
            load = (writer_busy_ns - self._busy_ns) / 1e9 / (now_s - self._at_s)
            if load > BUSY:
                self.stretch = min(MAX_STRETCH, self.stretch * 2)
            else:
                self.stretch = max(1, self.stretch // 2)
        self._busy_ns, self._at_s = writer_busy_ns, now_s
