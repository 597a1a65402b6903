"""Where a run happened: the machine, the commit, the versions of what ran."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Seconds a `--version` or `git` call may take.
QUERY_TIMEOUT = 30.0


def source_root() -> Path | None:
    """The source tree this package runs from (the folder with the workspace's
    `Cargo.toml` and `benches/`), or None for an installed wheel."""
    root = Path(__file__).resolve().parents[3]
    if (root / "Cargo.toml").is_file() and (root / "benches").is_dir():
        return root
    return None


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, kernel and platform."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
                break
    except (OSError, ValueError):
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "memory_kib": memory_kib,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def git_state(root: Path | None) -> dict[str, Any]:
    """The commit checked out at `root` and whether the tree has changes; nulls outside
    a repository."""
    if root is None:
        return {"commit": None, "dirty": None}

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=QUERY_TIMEOUT, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    return {"commit": commit or None, "dirty": bool(git("status", "--porcelain")) if commit else None}


def version_of(command: Sequence[str]) -> str:
    """The first line a `--version` command prints."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=QUERY_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({e})"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


def rushhour_version() -> str:
    try:
        return "rushhour " + importlib.metadata.version("rushhour")
    except importlib.metadata.PackageNotFoundError:
        return "rushhour (not installed)"
