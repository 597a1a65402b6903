"""Polling `/healthz` during a run: does the server keep answering under the burst?

Any HTTP answer counts as answering (503 `overloaded` is the truthful answer while
hellos are refused); a poll without an answer within POLL_TIMEOUT does not.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from typing import Any
from urllib.parse import urlsplit

#: Seconds between polls: often enough to see a stall of a few hundred ms.
POLL_INTERVAL = 0.15
#: Seconds a poll may wait for its answer before it counts as unanswered.
POLL_TIMEOUT = 1.0


def healthz_address(ws_url: str) -> tuple[str, int]:
    """(host, port) of the server behind a `ws://HOST:PORT/ws` URL."""
    parts = urlsplit(ws_url)
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"no host and port in {ws_url!r}")
    return parts.hostname, parts.port


class HealthzPoller:
    """Polls `GET /healthz` every POLL_INTERVAL in a thread, on a fresh connection each
    time (what a load balancer does); records time, status and latency."""

    def __init__(self, ws_url: str, origin: float, interval: float = POLL_INTERVAL) -> None:
        self.host, self.port = healthz_address(ws_url)
        self.origin = origin
        self.interval = interval
        self.polls: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz", daemon=True)

    def __enter__(self) -> HealthzPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=POLL_TIMEOUT + self.interval + 1.0)

    def poll_once(self) -> dict[str, Any]:
        start = time.monotonic()
        status: int | None = None
        error: str | None = None
        conn = http.client.HTTPConnection(self.host, self.port, timeout=POLL_TIMEOUT)
        try:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as e:
            error = type(e).__name__
        finally:
            conn.close()
        done = time.monotonic()
        return {
            "t": round(start - self.origin, 3),
            "status": status,
            "ms": round((done - start) * 1000, 2),
            "error": error,
        }

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self.polls.append(self.poll_once())
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))


def summarize(polls: list[dict[str, Any]]) -> dict[str, Any]:
    """Polls answered, by status; answer latency p50/p99/max; the longest time between
    two answers (about POLL_INTERVAL when the server never stalls)."""
    answered = [p for p in polls if p["status"] is not None]
    statuses: dict[str, int] = {}
    for p in polls:
        key = str(p["status"]) if p["status"] is not None else "none"
        statuses[key] = statuses.get(key, 0) + 1
    latencies = sorted(p["ms"] for p in answered)
    # When each answer arrived; a run ending in silence counts up to its last poll's end.
    arrivals = [p["t"] + p["ms"] / 1000 for p in answered]
    if polls and polls[-1]["status"] is None:
        arrivals.append(polls[-1]["t"] + polls[-1]["ms"] / 1000)
    if polls:
        arrivals.insert(0, polls[0]["t"])
    longest = max((b - a for a, b in itertools.pairwise(arrivals)), default=0.0)
    return {
        "polls": len(polls),
        "answered": len(answered),
        "kept_answering": bool(polls) and len(answered) == len(polls),
        "statuses": statuses,
        "p50_ms": _quantile(latencies, 0.5),
        "p99_ms": _quantile(latencies, 0.99),
        "max_ms": latencies[-1] if latencies else None,
        "longest_gap_s": round(longest, 3),
    }


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
