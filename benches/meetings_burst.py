"""The meetings burst, outside pytest: joins/s and join latency p50/p99.

Starts ``python -m rushhour serve`` on loopback (port 0, a temporary data dir, default
join limits), runs the burst of ``tests/meetings/test_burst.py`` from this one process
(200 meetings of 10 participants created and joined at once, then signals checked),
prints its summary line, and stops the server it started (by PID).

Usage::

    python benches/meetings_burst.py [--meetings 200] [--per-meeting 10] [--runs 1]

The same assertions as the test apply: the script fails if a join or a signal goes wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

import trio

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from meetings.test_burst import MEETINGS, PER_MEETING, run_burst  # noqa: E402

from conftest import start_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meetings", type=int, default=MEETINGS)
    parser.add_argument("--per-meeting", type=int, default=PER_MEETING)
    parser.add_argument("--runs", type=int, default=1, help="bursts in a row, each on a fresh tenant")
    args = parser.parse_args()
    if args.meetings * args.per_meeting * 1.2 > 20_000:
        parser.error("the connections of one burst must fit the per-process file limit")
    with tempfile.TemporaryDirectory(prefix="rushhour-meetings-burst-") as data:
        server = start_server(Path(data) / "data")
        try:
            print(f"server pid {server.proc.pid} on {server.url}; load {os.getloadavg()[0]:.2f} (1 min)", flush=True)
            for _ in range(max(1, args.runs)):
                tenant = f"bench-{uuid.uuid4().hex[:8]}"
                result = trio.run(run_burst, server.host, server.port, tenant, args.meetings, args.per_meeting)
                print(result.summary(), flush=True)
        finally:
            code = server.stop()
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
