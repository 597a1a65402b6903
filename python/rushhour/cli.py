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
from rushhour.server._app import engine_for, open_listeners
from rushhour.server._starting import answer_starting


async def _recover(config: Config, listeners: list[trio.SocketListener]) -> Engine | Exception:
    """Opens the log (its recovery) in a worker thread while the port answers 503
    `starting`; the log's error when it cannot be opened."""
    async with trio.open_nursery() as nursery:
        await nursery.start(answer_starting, listeners)
        try:
            result: Engine | Exception = await trio.to_thread.run_sync(engine_for, config)
        except (OSError, RuntimeError) as e:  # a damaged log stops the start
            result = e
        nursery.cancel_scope.cancel()
    return result


async def _serve_until_signal(config: Config) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        listeners = await open_listeners(config)
        engine = await _recover(config, listeners)
        if isinstance(engine, Exception):
            for listener in listeners:
                await listener.aclose()
            print(f"rushhour: cannot open the log: {engine}", file=sys.stderr)
            return 2
        for line in engine.recovery_report():
            print(f"rushhour: {line}", file=sys.stderr)
        async with trio.open_nursery() as nursery:
            info = await nursery.start(functools.partial(serve, config, engine=engine, listeners=listeners))
            print(f"rushhour listening on {info.url}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    return 0


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
    return trio.run(_serve_until_signal, config)
