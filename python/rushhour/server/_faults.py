"""Containment of our own faults: an unexpected exception while handling one
connection's event, one HTTP request or one timer tick ends only that piece of work.

A peer's bad input is refused with a protocol error where it is read; what reaches here
is a bug of ours (or input nobody foresaw). The caller closes what the exception
touched (WebSocket close 1011, HTTP 500, a timer goes on with its next tick) and calls
`Faults.record`, which counts the fault by layer (the metric
`rushhour_internal_errors_total{layer=…}`) and logs one line, at most once per
`LOG_INTERVAL_S` per layer, with how many more came since the last one: a peer that
found a way to trigger one cannot flood the log.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable

logger = logging.getLogger("rushhour.server")

#: Layers faults are counted by: a connection's events, HTTP requests, timer tasks.
LAYERS = ("ws", "http", "timer")
#: At most one log line per layer in this many seconds; the others are counted in it.
LOG_INTERVAL_S = 10.0


def _where(exc: BaseException) -> str:
    """The innermost frame of the exception, as `file:line in function`."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"


class Faults:
    """Counts unexpected exceptions by layer and logs them, rate-limited (module doc)."""

    def __init__(self, interval_s: float = LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        #: Faults so far, by layer (read by the metrics at scrape time).
        self.counts: dict[str, int] = dict.fromkeys(LAYERS, 0)
        self._interval_s = interval_s
        self._clock = clock
        #: When each layer may log again, and the faults not logged since its last line.
        self._next_log: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def record(self, layer: str, what: str, exc: BaseException) -> None:
        """Counts a fault of `layer` while handling `what` (e.g. `conn 12`) and logs it
        unless that layer logged within the interval."""
        self.counts[layer] = self.counts.get(layer, 0) + 1
        now = self._clock()
        if now < self._next_log.get(layer, float("-inf")):
            self._unlogged[layer] = self._unlogged.get(layer, 0) + 1
            return
        self._next_log[layer] = now + self._interval_s
        more = self._unlogged.pop(layer, 0)
        since = f" (and {more} more in {layer} since the last report)" if more else ""
        message = str(exc)[:200]
        logger.error(
            "internal error in %s, %s: %s: %s at %s%s", layer, what, type(exc).__name__, message, _where(exc), since
        )
