"""One turn of the session layer: what it queues for the core, applied at once.

A turn is a batch of events from the core (or a timer tick). Frames, seat routes, state
records and the resumption of reading queue up in a `Batch` and reach the core in one
call at the end of the turn, under one lock. Under the 9 a.m. burst this is the
difference between one crossing per turn and about five per meeting join, each waiting
for the lock the reader holds while it relays signals and stores messages.

Order holds: actions apply in the order queued, and a connection is not read again until
its `resume` is applied, so its next control frame comes after its reply.
"""

from __future__ import annotations

import logging

from rushhour._core import Batch, Engine

logger = logging.getLogger(__name__)


class Turn:
    """The batch of the current turn and what applying it left to handle."""

    __slots__ = ("_failure", "engine", "out", "resumed")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.out = Batch()
        #: `(conn, control frame | closing code)` of connections resumed with something
        #: still buffered: handled in the same turn, after the events before them.
        self.resumed: list[tuple[int, str | int]] = []
        self._failure: str | None = None

    def flush(self) -> None:
        """Applies what was queued."""
        if not self.out:
            return
        events, failure = self.engine.apply(self.out)
        self.resumed.extend(events)
        if failure is not None and failure != self._failure:
            logger.error("meeting state not saved: %s", failure)
        self._failure = failure

    def send_now(self, conn: int, frame: str) -> bool:
        """Sends an urgent frame at once, after what was queued; False if the connection
        is gone or closing."""
        self.flush()
        return self.engine.send_text(conn, frame, urgent=True)
