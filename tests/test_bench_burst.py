"""`rushhour bench burst` end to end, small: real servers, the real release generator.

Correctness only (every session served, nothing lost or duplicated, the checks
passed, the files written); never timings.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from rushhour.bench import _generator
from rushhour.bench._machine import source_root
from rushhour.bench._servers import find_nats_server, find_redis_server, read_proc, start_nats, start_redis

#: Seconds for `cargo build --release -p rushhour-burst`: a no-op when up to date, a
#: few minutes from cold (LTO).
BUILD_TIMEOUT = 1500
#: Seconds one small `rushhour bench burst` may take, servers and generator included.
RUN_TIMEOUT = 240
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECRET = "bench-e2e-secret-not-for-reports"


@pytest.fixture(scope="session")
def generator() -> Path:
    """The release generator, built once per test run."""
    root = source_root()
    if root is None:
        pytest.skip("not in a source tree: the generator is built from benches/burst")
    cargo = shutil.which("cargo")
    assert cargo is not None, "cargo is needed to build rushhour-burst"
    subprocess.run([cargo, "build", "--release", "-p", "rushhour-burst"], cwd=root, check=True, timeout=BUILD_TIMEOUT)
    return root.joinpath(*_generator.RELEASE_PATH)


def bench(generator: Path, out: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    """Runs `python -m rushhour bench burst` and reads its burst.json."""
    command = [sys.executable, "-m", "rushhour", "bench", "burst", "--generator", str(generator), "--out", str(out)]
    done = subprocess.run([*command, *flags], timeout=RUN_TIMEOUT, check=False, capture_output=True, text=True)
    print(done.stdout[-20_000:])
    print(done.stderr[-5_000:], file=sys.stderr)
    doc: dict[str, Any] = json.loads((out / "burst.json").read_text())
    return done.returncode, doc


def report_of(run: dict[str, Any]) -> dict[str, Any]:
    report = run["generator"]["report"]
    assert isinstance(report, dict), run["generator"]["error"]
    return report


@pytest.mark.timeout(BUILD_TIMEOUT + RUN_TIMEOUT)
def test_morning_and_idle_legs_small(generator: Path, tmp_path: Path) -> None:
    code, doc = bench(
        generator,
        tmp_path,
        "--legs",
        "morning,idle",
        "--clients",
        "200",
        "--ramp",
        "1",
        "--meetings",
        "10",
        "--participants",
        "3",
        "--rate",
        "100",
        "--duration",
        "3",
        # 200 logins in 1 s against 50/s after a burst of 20: refusals and retries.
        "--session-rate",
        "50",
        "--session-burst",
        "20",
        "--idle-clients",
        "100",
        "--idle-hold",
        "1",
        "--secret",
        SECRET,
    )
    morning = doc["legs"]["morning"]["runs"][0]
    report = report_of(morning)
    sessions = report["sessions"]
    assert sessions["offered"] == 200
    assert sessions["served"] == 200, sessions
    assert sessions["failed"] == 0
    assert sessions["refused"] > 0 and sessions["retried"] > 0, sessions
    assert sessions["all_served_s"] is not None
    assert report["chat"]["lost"] == 0 and report["chat"]["duplicated"] == 0, report["chat"]
    assert report["signals"]["lost"] == 0 and report["signals"]["duplicated"] == 0, report["signals"]
    assert report["ok"] is True, report["errors"]
    assert morning["ok"] and morning["server"]["exit_status"] == 0
    assert morning["server_proc"]["samples"] > 0
    assert morning["healthz"]["summary"]["answered"] > 0

    idle = doc["legs"]["idle"]
    assert report_of(idle["runs"][0])["sessions"]["served"] == 100
    assert idle["rss_before_kib"] > 0 and idle["rss_with_kib"] > 0

    assert code == 0 and doc["ok"]
    assert SECRET not in (tmp_path / "burst.json").read_text()
    assert (tmp_path / "burst.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "| sessions offered | 200 | 100 |" in (tmp_path / "report.md").read_text()


@pytest.mark.timeout(BUILD_TIMEOUT + RUN_TIMEOUT)
def test_fanout_leg_small_with_every_peer(generator: Path, tmp_path: Path) -> None:
    """Every peer from other loopback sources than the server's address (as the report
    runs them): the naive one, nats-server and redis-server."""
    code, doc = bench(
        generator,
        tmp_path,
        "--legs",
        "fanout",
        "--peer",
        "naive",
        "--peer",
        "nats",
        "--peer",
        "redis",
        "--subscribers",
        "50",
        "--fanout-duration",
        "1",
        "--fanout-warmup",
        "0.5",
    )
    runs = {run["name"]: run for run in doc["legs"]["fanout"]["runs"]}
    assert set(runs) == {"rushhour", "naive", "nats", "redis"}
    for run in runs.values():
        report = report_of(run)
        assert report["ok"] is True, report.get("errors")
        assert report["order"]["clean"] == report["order"]["subscribers"] == 50
        assert report["deliveries_per_s"] > 0
        assert run["server"]["exit_status"] is not None
    assert code == 0 and doc["ok"]
    text = (tmp_path / "report.md").read_text()
    assert all(f"| {name} |" in text for name in runs)


@pytest.mark.parametrize("peer", ["nats", "redis"])
def test_peer_servers_start_listening_and_stop(peer: str, tmp_path: Path) -> None:
    try:
        binary = find_nats_server() if peer == "nats" else find_redis_server()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    server = start_nats(tmp_path, binary) if peer == "nats" else start_redis(tmp_path, binary)
    try:
        parts = urlsplit(server.url)
        assert parts.scheme == peer and parts.hostname == "127.0.0.1" and parts.port
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as conn:
            conn.settimeout(10)
            if peer == "nats":
                assert conn.recv(4096).startswith(b"INFO ")
            else:
                conn.sendall(b"PING\r\n")
                assert conn.recv(64) == b"+PONG\r\n"
        assert read_proc(server.pid) is not None
    finally:
        server.stop()
    assert server.proc.returncode is not None
