"""Load benchmarks: `rushhour bench burst` and the pieces other bench scripts share.

Layout:

- `_plan.py`: what a run does (legs, sizes) and the generator's command lines;
- `_servers.py`: servers started by PID on loopback (rushhour, the naive peer,
  nats-server, redis-server), bounded waits, RSS/CPU sampling from /proc;
- `_generator.py`: finding or building `rushhour-burst`, running it with its progress shown;
- `_legs.py`: the legs (morning, fanout, idle, overload, setup);
- `_healthz.py`: polling `/healthz` during a run;
- `_fairness.py`: Jain's index and per-tenant shares;
- `_report.py`, `_plot.py`: the tables, the JSON, the PNGs;
- `_run.py`, `_cli.py`: the command.
"""

from rushhour.bench._fairness import fairness_at, jain_index, max_min_shares
from rushhour.bench._generator import GeneratorError, GeneratorRun, find_generator
from rushhour.bench._generator import run as run_generator
from rushhour.bench._machine import git_state, machine, rushhour_version, source_root, version_of
from rushhour.bench._plan import Overload, Plan
from rushhour.bench._servers import (
    NATS_LISTENING,
    NATS_READY,
    Sampler,
    Server,
    find_nats_server,
    find_redis_server,
    start_rushhour,
    tail,
)

__all__ = [
    "NATS_LISTENING",
    "NATS_READY",
    "GeneratorError",
    "GeneratorRun",
    "Overload",
    "Plan",
    "Sampler",
    "Server",
    "fairness_at",
    "find_generator",
    "find_nats_server",
    "find_redis_server",
    "git_state",
    "jain_index",
    "machine",
    "max_min_shares",
    "run_generator",
    "rushhour_version",
    "source_root",
    "start_rushhour",
    "tail",
    "version_of",
]
