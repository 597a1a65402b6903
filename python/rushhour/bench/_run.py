"""One `rushhour bench burst` run: the legs in order, then the table, JSON and plots."""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rushhour.bench import _generator, _report
from rushhour.bench._legs import NEEDS_BURST, RUNNERS, Context
from rushhour.bench._machine import git_state, machine, rushhour_version, source_root, version_of
from rushhour.bench._plan import Plan


def say(line: str) -> None:
    print(line, flush=True)


def config_json(plan: Plan) -> dict[str, Any]:
    """The plan as JSON, with the overload leg's derived sizes."""
    config = dataclasses.asdict(plan)
    config["out"] = str(plan.out)
    config["secret"] = "<redacted>"
    config["overload"].update(clients=plan.overload.clients, duration=plan.overload.duration)
    return config


def run(plan: Plan) -> int:
    """Runs the legs of `plan`; 0 when every run passed its checks, 1 when one did not,
    2 when nothing could run."""
    started = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    try:
        generator = _generator.find_generator(plan.generator)
        scenarios = _generator.subcommands(generator)
    except _generator.GeneratorError as e:
        print(f"rushhour bench: {e}", file=sys.stderr)
        return 2
    doc: dict[str, Any] = {
        "benchmark": "burst",
        "started": started.isoformat(timespec="seconds"),
        "config": config_json(plan),
        "machine": machine(),
        "git": git_state(source_root()),
        "versions": {"rushhour": rushhour_version(), "generator": version_of([str(generator), "--version"])},
        "legs": {},
        "notes": [],
    }
    say(f"rushhour bench burst: legs {', '.join(plan.legs)}; output in {plan.out}")
    with tempfile.TemporaryDirectory(prefix="rushhour-bench-") as work:
        ctx = Context(plan=plan, generator=generator, work=Path(work), logs=plan.out / "logs", say=say)
        for leg in plan.legs:
            began = time.monotonic()
            say(f"== {leg}")
            if leg in NEEDS_BURST and "burst" not in scenarios:
                why = f"{generator} has no `burst` scenario yet (rebuild: cargo build --release -p rushhour-burst)"
                say(f"   skipped: {why}")
                doc["legs"][leg] = {"skipped": why}
                continue
            try:
                doc["legs"][leg] = RUNNERS[leg](ctx)
            except (OSError, RuntimeError, ValueError, _generator.GeneratorError) as e:
                say(f"   failed: {e}")
                doc["legs"][leg] = {"runs": [], "error": str(e)}
            doc["legs"][leg]["wall_s"] = round(time.monotonic() - began, 2)
            # Write back what the last server's log left dirty, so that it does not slow the next.
            os.sync()
    doc["wall_s"] = round(time.monotonic() - t0, 2)
    ran = [leg for leg in doc["legs"].values() if not leg.get("skipped")]
    runs = [r for leg in ran for r in leg.get("runs", [])]
    doc["ok"] = bool(runs) and all(r.get("ok") for r in runs) and not any(leg.get("error") for leg in ran)
    finish(doc, plan.out)
    if not runs:
        return 2
    return 0 if doc["ok"] else 1


def finish(doc: dict[str, Any], out: Path) -> None:
    """Writes the plots, the JSON and the markdown, and prints the tables."""
    try:
        from rushhour.bench import _plot
    except ImportError as e:
        doc["notes"].append(f"no plots: {e} (pip install matplotlib, or the `bench` extra)")
        plots: list[Path] = []
    else:
        plots = _plot.plot(doc, out)
    json_path, md_path = _report.write(doc, out)
    print()
    print(_report.table(doc))
    for path in (json_path, md_path, *plots):
        print(f"wrote {path}")
