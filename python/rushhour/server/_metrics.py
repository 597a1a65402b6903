"""Prometheus metrics: the core's counters read at scrape time, plus the session layer's."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rushhour._core import Engine

# (stat key, metric name, help, is counter)
_CORE_METRICS = (
    ("connections", "rushhour_connections", "WebSocket connections attached to the core", False),
    ("rooms", "rushhour_rooms", "Rooms in existence", False),
    ("rooms_refused", "rushhour_rooms_refused", "New rooms refused at --max-rooms or --max-rooms-per-tenant", True),
    ("queued_bytes", "rushhour_outbound_queued_bytes", "Bytes waiting in outbound queues", False),
    ("messages", "rushhour_messages", "Messages accepted (duplicates excluded)", True),
    ("deliveries", "rushhour_deliveries", "Frames queued to connections", True),
    ("slow_consumers", "rushhour_slow_consumer_closes", "Connections closed with 4008", True),
    ("bad_frames", "rushhour_bad_frames", "Bad frames received", True),
    ("log_waiting", "rushhour_log_waiting", "Replies and pushes waiting for the log's group commit", False),
    ("log_writable", "rushhour_log_writable", "1 while the log takes writes, 0 once a write or fsync failed", False),
    ("handshakes", "rushhour_ws_core_handshakes", "WebSocket handshakes to /ws answered by the core", True),
    ("healthz", "rushhour_healthz_core", "GET /healthz answered by the core (the rest: http_requests)", True),
    (
        "ambient_shed",
        "rushhour_ambient_shed",
        "Receipt and presence pushes left out of filling queues (meeting traffic and chat go first)",
        True,
    ),
    (
        "signals_relayed",
        "rushhour_signals_relayed",
        "Meeting signals relayed by the core between connected seats",
        True,
    ),
    ("hello_timeouts", "rushhour_hello_timeouts", "Connections closed 1008 because no hello came in time", True),
)


class _CoreCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        stats = self._engine.stats()
        for key, name, help_text, counter in _CORE_METRICS:
            family: Metric
            if counter:
                family = CounterMetricFamily(name, help_text, value=stats[key])
            else:
                family = GaugeMetricFamily(name, help_text, value=stats[key])
            yield family


class _CountsCollector(Collector):
    """A counter family read at scrape time from a dict that the session layer keeps."""

    def __init__(self, name: str, help_text: str, label: str, counts: Mapping[str, int]) -> None:
        self._name, self._help, self._label, self._counts = name, help_text, label, counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._help, labels=[self._label])
        for value, count in self._counts.items():
            family.add_metric([value], count)
        yield family


class Metrics:
    """A registry per server, so several servers can run in one process."""

    def __init__(self, engine: Engine, admission_queue: Callable[[], float] = lambda: 0.0) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_CoreCollector(engine))
        self.http_requests = Counter(
            "rushhour_http_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.handshakes = Counter(
            "rushhour_ws_handshakes",
            "WebSocket handshakes answered by the HTTP layer, by outcome (the core answers the plain ones)",
            ["outcome"],
            registry=self.registry,
        )
        hellos = Counter("rushhour_hellos", "hello frames by outcome", ["outcome"], registry=self.registry)
        admitted = Counter(
            "rushhour_admission_admitted", "hellos admitted by kind (fresh, resume)", ["kind"], registry=self.registry
        )
        # Children made once: `labels()` on every login costs more than the count itself.
        self.hello_outcomes = {
            o: hellos.labels(o) for o in ("ok", "resumed", "overloaded", "unauthorized", "address_limited")
        }
        self.admitted_by_kind = {k: admitted.labels(k) for k in ("fresh", "resume")}
        self.refused = Counter(
            "rushhour_admission_refused",
            "hellos refused as overloaded, by the bucket that refused (server, tenant)",
            ["reason"],
            registry=self.registry,
        )
        queue = Gauge(
            "rushhour_admission_queue", "Refused clients estimated to be waiting to retry", registry=self.registry
        )
        queue.set_function(admission_queue)

    def watch_meeting_joins(self, refused: Mapping[str, int]) -> None:
        """Exports the meeting joins refused as overloaded, by the bucket that refused."""
        self.registry.register(
            _CountsCollector(
                "rushhour_meeting_joins_refused",
                "meeting.join answered overloaded, by the bucket that refused (server, tenant)",
                "reason",
                refused,
            )
        )

    def watch_kept(self, meetings_refused: Mapping[str, int], sessions_evicted: Mapping[str, int]) -> None:
        """Exports the limits on what users keep: meetings refused, sessions forgotten."""
        self.registry.register(
            _CountsCollector(
                "rushhour_meetings_refused",
                "meeting.create refused forbidden at a limit, by the limit (user, tenant, server)",
                "limit",
                meetings_refused,
            )
        )
        self.registry.register(
            _CountsCollector(
                "rushhour_sessions_evicted",
                "Resumable sessions forgotten at a bound, by the bound (user, tenant, server)",
                "limit",
                sessions_evicted,
            )
        )

    def watch_faults(self, counts: Mapping[str, int]) -> None:
        """Exports the unexpected exceptions contained so far, by layer (see `_faults`)."""
        self.registry.register(
            _CountsCollector(
                "rushhour_internal_errors",
                "Unexpected exceptions contained to one connection, request or timer tick, by layer (ws, http, timer)",
                "layer",
                counts,
            )
        )

    def watch_pacing(self, receipt_interval_ms: Callable[[], float], writer_busy_s: Callable[[], float]) -> None:
        """Exports the receipt push interval in force and the socket writer's busy time."""
        interval = Gauge(
            "rushhour_receipt_interval_ms",
            "Receipt and presence push interval in force (stretched while the writer is busy)",
            registry=self.registry,
        )
        interval.set_function(receipt_interval_ms)
        busy = Gauge(
            "rushhour_writer_busy_seconds",
            "Seconds the socket writer has spent writing since the start (its load is the rate)",
            registry=self.registry,
        )
        busy.set_function(writer_busy_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
