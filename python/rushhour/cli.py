"""The `rushhour` command line."""

from __future__ import annotations

import argparse
import signal
import sys

import trio

from rushhour.config import Config, add_arguments, from_namespace
from rushhour.server import serve


async def _serve_until_signal(config: Config) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(serve, config)
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
    args = parser.parse_args(argv)
    try:
        config = from_namespace(args)
    except ValueError as e:
        parser.error(str(e))
    if config.secret is None and not config.dev:
        print("rushhour: no --secret given: tokens are signed with a random per-start secret", file=sys.stderr)
    trio.run(_serve_until_signal, config)
    return 0
