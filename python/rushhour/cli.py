"""The `rushhour` command line."""

from __future__ import annotations

import argparse
import functools
import signal
import sys

import trio

from rushhour._core import Engine
from rushhour.bench import _cli as bench_cli
from rushhour.config import Config, add_arguments, from_namespace
from rushhour.server import serve
from rushhour.server._app import engine_for


async def _serve_until_signal(config: Config, engine: Engine) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(functools.partial(serve, config, engine=engine))
            print(f"rushhour listening on {info.url}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `rushhour` command."""
    parser = argparse.ArgumentParser(prog="rushhour", description="A message broker that survives the 9 a.m. burst.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the server")
    add_arguments(serve_parser)
    bench_cli.add_arguments(commands)
    args = parser.parse_args(argv)
    if args.command == "bench":
        try:
            plan = bench_cli.plan_from(args)
        except ValueError as e:
            parser.error(str(e))
        return bench_cli.run(plan)
    try:
        config = from_namespace(args)
    except ValueError as e:
        parser.error(str(e))
    if config.secret is None and not config.dev:
        print("rushhour: no --secret given: tokens are signed with a random per-start secret", file=sys.stderr)
    try:
        # Recovery runs here, before listening: a damaged log stops the start.
        engine = engine_for(config)
    except (OSError, RuntimeError) as e:
        print(f"rushhour: cannot open the log: {e}", file=sys.stderr)
        return 2
    for line in engine.recovery_report():
        print(f"rushhour: {line}", file=sys.stderr)
    trio.run(_serve_until_signal, config, engine)
    return 0
