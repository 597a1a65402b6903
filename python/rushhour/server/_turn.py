"""One turn of the session layer: what it queues for the core, handed over at once.

A turn is a batch of events from the core (or a timer tick). Frames, seat routes, state
records and the resumption of reading queue up in a `Batch`, without any lock, and go to
the core in one call at the end of the turn; the core's reader thread applies them
between its reads (see `core/src/batch.rs`). Under the 9 a.m. burst the reader holds the
broker's lock most of the time: taking it once per reply, event and record, as the
session layer did, left it waiting for the lock half of the time.

Order holds: batches apply in the order submitted, actions in the order queued, and a
connection is not read again until its `resume` is applied, so its next control frame
comes after its reply.
"""

from __future__ import annotations

from rushhour._core import Batch, Engine


class Turn:
    """The batch of the current turn."""

    __slots__ = ("engine", "out")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.out = Batch()

    def flush(self) -> None:
        """Hands what was queued to the core."""
        if self.out:
            self.engine.submit(self.out)

    def send_now(self, conn: int, frame: str) -> bool:
        """Sends an urgent frame after what was queued, and says whether the connection
        took it (False: gone or closing)."""
        self.flush()
        return self.engine.send_text_after_submitted(conn, frame, urgent=True)
