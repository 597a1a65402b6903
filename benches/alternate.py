"""Two builds of the server, alternated in one series of runs: is a change within noise?

Each round starts every server in turn (``PYTHON -m rushhour serve`` for each
``--python``: e.g. a virtualenv with the old build and one with the new), each on a fresh
data directory on loopback, and runs the same ``rushhour-burst`` loads against it:

- ``setup``: 5,000 clients at once (connect, handshake, hello, subscribe): sessions/s;
- ``fanout``: 1 publisher, 1,000 subscribers, 128-byte bodies: deliveries/s;
- ``publish``: durable publish, 100 sends in flight over 10 connections, 128-byte bodies,
  ``--fsync batch``: acked sends/s and p99.

Alternating (A, B, A, B, …) rather than running A's rounds then B's spreads the
machine's drift (other load, steal time, thermal) over both. Prints one table row per
run and the median of each figure per server; ``--json`` keeps everything.

Usage::

    cargo build --release -p rushhour-burst
    python benches/alternate.py --python /path/old-venv/bin/python --python .venv/bin/python --rounds 3
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rushhour import bench
from rushhour.bench._plan import FANOUT_DRAIN, Plan, burst_args, fanout_args
from rushhour.bench._servers import RUSHHOUR_LISTENING, Server

#: Seconds a generator run may take beyond its own measured time (set-up, drain, exit).
MARGIN_S = 90.0
#: rushhour's per-connection send limits, raised so that the store and the fan-out are
#: measured rather than the limiter.
UNLIMITED = ["--send-rate", "10000000", "--send-burst", "10000000"]


def _setup(plan: Plan, url: str, pid: int, out: Path) -> tuple[list[str], float]:
    args = burst_args(
        url, plan.secret, clients=5000, ramp=0, meetings=0, participants=0, rate=0, duration=2.0,
        sources=plan.sources, server_pid=pid, json_path=out,
    )  # fmt: skip
    return args, 2.0 + MARGIN_S


def _fanout(plan: Plan, url: str, pid: int, out: Path) -> tuple[list[str], float]:
    timeout = plan.fanout_warmup + plan.fanout_duration + FANOUT_DRAIN + MARGIN_S
    return fanout_args(plan, "rushhour", url, pid, out), timeout


def _publish(plan: Plan, url: str, pid: int, out: Path) -> tuple[list[str], float]:
    args = ["publish", "--url", url, "--secret", plan.secret, "--connections", "10", "--inflight", "100"]
    args += ["--rooms", "50", "--body-bytes", "128", "--duration", "5", "--warmup", "1"]
    return [*args, "--server-pid", str(pid), "--json", str(out)], 6.0 + MARGIN_S


Load = Callable[[Plan, str, int, Path], tuple[list[str], float]]
#: Each load: how to run it, and the figure compared (the table's medians are of it).
LOADS: dict[str, tuple[Load, Callable[[dict[str, Any]], float]]] = {
    "setup": (_setup, lambda r: r["sessions"]["setup_per_s"]),
    "fanout": (_fanout, lambda r: r["deliveries_per_s"]),
    "publish": (_publish, lambda r: r["acked_per_s"]),
}


def run_one(python: str, load: str, plan: Plan, generator: Path, work: Path) -> dict[str, Any]:
    """One server of `python`, one `load` against it; the generator's report."""
    data = work / "data"
    data.mkdir(parents=True)
    command = [python, "-m", "rushhour", "serve", "--host", "127.0.0.1", "--port", "0", "--secret", plan.secret]
    command += ["--data-dir", str(data), "--fsync", "batch", *UNLIMITED]
    server = Server(command, work / "server.log")
    try:
        server.url = server.wait_for(RUSHHOUR_LISTENING).group(1)
        make, _ = LOADS[load]
        args, timeout = make(plan, server.url, server.pid, work / "report.json")
        result = bench.run_generator([str(generator), *args], work / "report.json", timeout, echo=lambda _: None)
    finally:
        server.stop()
    if result.report is None:
        raise RuntimeError(f"{load} against {python}: {result.error}")
    return result.report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", action="append", required=True, help="a Python whose rushhour is served (repeat)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every server once per load (3)")
    p.add_argument("--loads", default="setup,fanout,publish", help="comma-separated, of: " + ", ".join(LOADS))
    p.add_argument("--generator", help="the rushhour-burst binary (default: target/release, built if missing)")
    p.add_argument("--json", type=Path, help="write every report here")
    args = p.parse_args(argv)
    loads = [x for x in args.loads.split(",") if x]
    if unknown := [x for x in loads if x not in LOADS]:
        p.error(f"unknown loads: {', '.join(unknown)}")
    generator = bench.find_generator(args.generator)
    plan = Plan(out=Path("."), secret=secrets.token_hex(16))
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rushhour-alternate-") as tmp:
        for round_ in range(args.rounds):
            for load in loads:
                for i, python in enumerate(args.python):
                    report = run_one(python, load, plan, generator, Path(tmp) / f"{round_}-{load}-{i}")
                    figure = LOADS[load][1](report)
                    runs.append({"round": round_, "load": load, "python": python, "figure": figure, "report": report})
                    print(f"round {round_ + 1} {load:<8} {python}: {figure:,.0f}", flush=True)
    print("\n| load | " + " | ".join(args.python) + " |")
    print("| --- |" + " ---: |" * len(args.python))
    for load in loads:
        cells = []
        for python in args.python:
            figures = [r["figure"] for r in runs if r["load"] == load and r["python"] == python]
            cells.append(f"{statistics.median(figures):,.0f} ({', '.join(f'{f:,.0f}' for f in figures)})")
        print(f"| {load} median (runs) | " + " | ".join(cells) + " |")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": bench.machine(), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
