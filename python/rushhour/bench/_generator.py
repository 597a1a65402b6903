"""The load generator `rushhour-burst`: found or built, asked what it can do, run with
its progress shown and every wait bounded."""

from __future__ import annotations

import collections
import functools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rushhour.bench._machine import source_root

#: Seconds allowed for a release build of the generator when it is missing (LTO).
BUILD_TIMEOUT = 1800.0
#: Seconds a `--help` call may take.
HELP_TIMEOUT = 30.0
#: Seconds the generator gets to exit after SIGTERM (on a timeout) before SIGKILL.
STOP_TIMEOUT = 10.0
#: Seconds of silence from the generator after which a status line is shown instead.
HEARTBEAT_S = 2.0
#: Lines of the generator's output kept for the error message of a failed run.
KEPT_LINES = 40
#: Path of the release build inside the source tree.
RELEASE_PATH = ("target", "release", "rushhour-burst")
BUILD_COMMAND = ("cargo", "build", "--release", "-p", "rushhour-burst")


class GeneratorError(Exception):
    """The generator cannot be found, built or asked; the message says what to do."""


def find_generator(explicit: str | Path | None = None, *, build: bool = True) -> Path:
    """The `rushhour-burst` binary: `explicit`, else the release build in the source tree,
    built first with cargo when it is missing.

    Raises:
        GeneratorError: Not found and cannot be built.
    """
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise GeneratorError(f"--generator {path}: no such file")
        return path
    root = source_root()
    if root is None:
        raise GeneratorError("rushhour-burst: no source tree next to this package; pass --generator PATH")
    path = root.joinpath(*RELEASE_PATH)
    if path.is_file():
        return path
    cargo = shutil.which("cargo")
    if not build or cargo is None:
        raise GeneratorError(
            f"rushhour-burst is not built ({path} is missing) and cargo is not available: "
            f"run `{' '.join(BUILD_COMMAND)}` in {root}, or pass --generator PATH"
        )
    print(f"building rushhour-burst: {' '.join(BUILD_COMMAND)} ...", flush=True)
    try:
        subprocess.run([cargo, *BUILD_COMMAND[1:]], cwd=root, check=True, timeout=BUILD_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as e:
        raise GeneratorError(f"building rushhour-burst failed: {e}") from e
    if not path.is_file():
        raise GeneratorError(f"built rushhour-burst, yet {path} is missing")
    return path


def _help(generator: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            [str(generator), *args, "--help"], capture_output=True, text=True, timeout=HELP_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise GeneratorError(f"{generator} --help: {e}") from e
    return done.stdout if done.returncode == 0 else ""


@functools.lru_cache(maxsize=16)
def subcommands(generator: Path) -> frozenset[str]:
    """The scenarios the binary knows (`fanout`, `publish`, `burst`, …), from its help."""
    text = _help(generator)
    names: set[str] = set()
    listing = False
    for line in text.splitlines():
        if line.strip() == "Commands:":
            listing = True
        elif listing:
            if not line.startswith("  "):
                break
            names.add(line.split()[0])
    names.discard("help")
    return frozenset(names)


@functools.lru_cache(maxsize=32)
def flags(generator: Path, subcommand: str) -> frozenset[str]:
    """The long flags of one scenario, from its help (`--target`, `--tenants`, …)."""
    return frozenset(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z0-9-]+)", _help(generator, subcommand)))


@dataclass
class GeneratorRun:
    """One run of the generator.

    Attributes:
        command: Its command line.
        returncode: 0 ok, 1 a check failed, 2 could not start; None when killed on timeout.
        report: Its JSON report, when it wrote one.
        error: Why there is no report (or why it was cut short).
        output: The last lines it printed.
        wall_s: Seconds from launch to exit.
    """

    command: list[str]
    returncode: int | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    output: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "returncode": self.returncode,
            "error": self.error,
            "wall_s": round(self.wall_s, 3),
            "report": self.report,
        }


def run(
    command: Sequence[str],
    json_path: Path,
    timeout: float,
    *,
    echo: Callable[[str], None] | None = None,
    status: Callable[[float], str] | None = None,
    origin: float | None = None,
) -> GeneratorRun:
    """Runs the generator, showing each line it prints through `echo`, and `status(t)`
    after HEARTBEAT_S of silence; SIGTERM (then SIGKILL) to it past `timeout`.

    `origin` (monotonic) is when the caller's timelines start; the launch happens right
    after it.
    """
    show = echo if echo is not None else _print_line
    result = GeneratorRun(command=list(command))
    kept: collections.deque[str] = collections.deque(maxlen=KEPT_LINES)
    start = origin if origin is not None else time.monotonic()
    json_path.unlink(missing_ok=True)
    try:
        proc = subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
        )
    except OSError as e:
        result.error = f"cannot start {command[0]}: {e}"
        return result
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(proc, lines), name="generator-output", daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    last_output = time.monotonic()
    timed_out = False
    try:
        while True:
            try:
                line = lines.get(timeout=0.25)
            except queue.Empty:
                now = time.monotonic()
                if now > deadline and not timed_out:
                    timed_out = True
                    _stop(proc)
                elif status is not None and now - last_output >= HEARTBEAT_S:
                    show(status(now - start))
                    last_output = now
                continue
            if line is None:
                break
            kept.append(line)
            show(line)
            last_output = time.monotonic()
    except BaseException:
        # Interrupted (Ctrl-C): the generator goes too, never left running.
        _stop(proc)
        raise
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _stop(proc)
    reader.join(timeout=STOP_TIMEOUT)
    result.wall_s = time.monotonic() - start
    result.returncode = None if timed_out else proc.returncode
    result.output = list(kept)
    if timed_out:
        result.error = f"the generator ran past its {timeout:.0f} s bound and was stopped"
    if json_path.is_file():
        try:
            result.report = json.loads(json_path.read_text())
        except ValueError as e:
            result.error = f"unreadable JSON report {json_path}: {e}"
    elif result.error is None:
        last = "\n".join(kept) or "(no output)"
        result.error = f"rushhour-burst exited with {proc.returncode} and wrote no report:\n{last}"
    return result


def _read_lines(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    # Universal newlines: a progress line redrawn with '\r' arrives as its own line.
    for line in proc.stdout:
        lines.put(line.rstrip("\n"))
    proc.stdout.close()
    lines.put(None)


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM to the generator's PID, SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)


def _print_line(line: str) -> None:
    print(f"   | {line}", flush=True)
