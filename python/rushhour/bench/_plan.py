"""What one `rushhour bench burst` run does: the legs, their sizes, and the generator's
command line for each.

The defaults are sized so that the default legs (morning, fan-out, idle, setup) finish
in under two minutes on a 2-core machine shared by the server and the generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

LEGS = ("morning", "fanout", "idle", "overload", "setup")
#: The overload leg runs the server twice for about 25 s each: only when asked.
DEFAULT_LEGS = ("morning", "fanout", "idle", "setup")
PEERS = ("naive", "nats", "redis")
#: Extra loopback source addresses of the generator's connections (each gives ~28k
#: ports): the server listens on 127.0.0.1 and the whole 127/8 reaches it.
DEFAULT_SOURCES = ("127.0.0.2", "127.0.0.3")
#: Sends in flight on the fan-out publisher: rushhour allows 64 requests in flight per
#: connection, and every server gets the same window.
FANOUT_WINDOW = 64
#: rushhour's per-connection send limits for the fan-out leg, raised so that the
#: publisher's rate limiter is not what is measured.
UNLIMITED_SENDS = ("--send-rate", "10000000", "--send-burst", "10000000")
#: Seconds a generator run may take beyond its planned length (set-up, its drain of
#: up to 15 s by default, exit).
GENERATOR_MARGIN = 60.0
#: Seconds a fan-out run waits after its window for the replies and deliveries still due.
FANOUT_DRAIN = 10.0


@dataclass(frozen=True)
class Overload:
    """The overload leg: logins offered at `factor` × the admission limit.

    Attributes:
        session_rate: The admission limit (fresh sessions/s) of both runs' servers.
        session_burst: Sessions admitted at once before the rate applies: small, so that
            the burst does not swallow the overload.
        factor: Offered logins per second, as a multiple of `session_rate`.
        ramp: Seconds over which the logins are offered.
        tenants: Tenants the clients belong to.
        tenant_skew: How unequal the tenants are (the generator's `--tenant-skew`: a
            Zipf exponent, tenant k weighing 1/(k+1)^skew).
    """

    session_rate: float = 100.0
    session_burst: float = 20.0
    factor: float = 5.0
    ramp: float = 4.0
    tenants: int = 10
    tenant_skew: float = 1.2

    @property
    def clients(self) -> int:
        """Logins offered in all: `factor × session_rate` per second over the ramp."""
        return max(self.tenants, math.ceil(self.factor * self.session_rate * self.ramp))

    @property
    def duration(self) -> float:
        """Seconds the generator keeps going after the ramp: long enough for the admitted
        rate to serve the logins still waiting when the ramp ends, with a quarter again
        as margin (the generator's drain then waits for stragglers)."""
        waiting = max(0.0, self.clients - self.session_burst - self.session_rate * self.ramp)
        return float(math.ceil(1.25 * waiting / self.session_rate) + 2)


@dataclass(frozen=True)
class Plan:
    """Everything a run needs; written into the JSON as `config`.

    Attributes:
        clients, ramp, meetings, participants, rate, duration: The morning leg
            (`rushhour-burst burst`): clients logging in over `ramp` seconds, meetings of
            `participants`, chat at `rate` messages/s, for `duration` seconds.
        tenants, tenant_skew: The tenants the morning's clients belong to, as for the
            overload leg (whose own copy the same flags set).
        url: Target this server instead of starting one (`secret` must match it).
        secret: The HS256 secret of the tokens.
        server_pid: PID of the `url` server, to sample its RSS and CPU.
        admission, session_rate, session_burst: Passed to `rushhour serve` (None: its
            defaults).
        legs: Legs to run, in order.
        peers: Servers compared with rushhour in the fan-out leg; None: all available.
        sources: Local addresses of the generator's connections.
        subscribers, body_bytes, fanout_duration, fanout_warmup, window: The fan-out leg.
        idle_clients, idle_hold: The idle leg: sessions that only hello and subscribe,
            held open `idle_hold` seconds.
        setup_clients: The setup leg: clients all at once.
        overload: The overload leg.
        generator, nats_server, redis_server: Binaries (None: found).
        out: Output folder.
    """

    out: Path
    secret: str
    clients: int = 2000
    ramp: float = 5.0
    meetings: int = 100
    participants: int = 5
    rate: float = 500.0
    duration: float = 10.0
    tenants: int = Overload.tenants
    tenant_skew: float = Overload.tenant_skew
    url: str | None = None
    server_pid: int | None = None
    admission: str | None = None
    session_rate: float | None = None
    session_burst: float | None = None
    legs: tuple[str, ...] = DEFAULT_LEGS
    peers: tuple[str, ...] | None = None
    sources: tuple[str, ...] = DEFAULT_SOURCES
    subscribers: int = 1000
    body_bytes: int = 128
    fanout_duration: float = 5.0
    fanout_warmup: float = 1.0
    window: int = FANOUT_WINDOW
    idle_clients: int = 2000
    idle_hold: float = 4.0
    setup_clients: int = 5000
    overload: Overload = field(default_factory=Overload)
    generator: str | None = None
    nats_server: str | None = None
    redis_server: str | None = None

    def serve_args(self) -> list[str]:
        """`rushhour serve` flags passed through to the morning, idle and setup servers."""
        args: list[str] = []
        if self.admission is not None:
            args += ["--admission", self.admission]
        if self.session_rate is not None:
            args += ["--session-rate", _g(self.session_rate)]
        if self.session_burst is not None:
            args += ["--session-burst", _g(self.session_burst)]
        return args


def redacted(command: list[str]) -> list[str]:
    """A command line fit for the report: the value of `--secret` hidden (it may be the
    secret of a server that outlives the run)."""
    out = list(command)
    for i, arg in enumerate(out[:-1]):
        if arg == "--secret":
            out[i + 1] = "<redacted>"
    return out


def _g(x: float) -> str:
    return f"{x:g}"


def burst_args(
    url: str,
    secret: str,
    *,
    clients: int,
    ramp: float,
    meetings: int,
    participants: int,
    rate: float,
    duration: float,
    sources: tuple[str, ...],
    server_pid: int | None,
    json_path: Path,
    tenants: int | None = None,
    tenant_skew: float | None = None,
    progress: bool = False,
) -> list[str]:
    """`rushhour-burst burst …` arguments (after the binary); `progress` asks for its
    once-a-second progress line."""
    args = ["burst", "--url", url, "--secret", secret, "--clients", str(clients), "--ramp", _g(ramp)]
    args += ["--meetings", str(meetings), "--participants", str(participants), "--rate", _g(rate)]
    args += ["--duration", _g(duration)]
    if sources:
        args += ["--sources", ",".join(sources)]
    if tenants is not None:
        args += ["--tenants", str(tenants)]
    if tenant_skew is not None:
        args += ["--tenant-skew", _g(tenant_skew)]
    if server_pid is not None:
        args += ["--server-pid", str(server_pid)]
    if progress:
        args.append("--progress")
    return [*args, "--json", str(json_path)]


def fanout_args(plan: Plan, target: str | None, url: str, server_pid: int | None, json_path: Path) -> list[str]:
    """`rushhour-burst fanout …` arguments; `target` None leaves `--target` out (a
    generator that only speaks to rushhour-like servers)."""
    args = ["fanout"]
    if target is not None:
        args += ["--target", target]
    args += ["--url", url, "--secret", plan.secret, "--subscribers", str(plan.subscribers)]
    args += ["--body-bytes", str(plan.body_bytes), "--duration", _g(plan.fanout_duration)]
    args += ["--warmup", _g(plan.fanout_warmup), "--window", str(plan.window), "--drain-timeout", _g(FANOUT_DRAIN)]
    if plan.sources:
        args += ["--sources", ",".join(plan.sources)]
    if server_pid is not None:
        args += ["--server-pid", str(server_pid)]
    return [*args, "--json", str(json_path)]


def burst_timeout(ramp: float, duration: float) -> float:
    """Bound on one `burst` run."""
    return ramp + duration + GENERATOR_MARGIN


def fanout_timeout(plan: Plan) -> float:
    """Bound on one `fanout` run (set-up is bounded by the generator's own 60 s)."""
    return plan.fanout_warmup + plan.fanout_duration + FANOUT_DRAIN + GENERATOR_MARGIN + 60.0
