"""The Autobahn WebSocket test cases 1–7 and 10 against `/ws/echo`, run by `kosoku`.

The verdicts are pinned in `autobahn_expected.json`: a case may never get worse. The
expected file lists OK for nearly every case; the few NON-STRICT / INFORMATIONAL ones are
conformant (see the comments in docs/protocol.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import start_server

EXPECTED = Path(__file__).with_name("autobahn_expected.json")
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"]


def test_autobahn_cases_match_the_pinned_results(tmp_path: Path) -> None:
    # A server of its own, whose heartbeat never pings during a case: a ping is a frame
    # the cases' expected wire logs do not have (pings are tested in
    # tests/protocol/test_session.py).
    server = start_server(tmp_path / "data", "--heartbeat-ms", "3600000", "--idle-timeout-ms", "3600000")
    try:
        _run_cases(server.url, tmp_path)
    finally:
        assert server.stop() == 0


def _run_cases(url: str, tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-c",
        "from kosoku._cli import main; main()",
        f"{url}/echo",
        "-p",
        "4",
        "-o",
        str(tmp_path),
    ]
    for case in CASES:
        args += ["-i", case]
    run = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert (tmp_path / "index.json").exists(), run.stdout + run.stderr
    results = json.loads((tmp_path / "index.json").read_text())["rushhour"]
    got = {case: [r["behavior"], r["behaviorClose"]] for case, r in results.items()}
    expected = json.loads(EXPECTED.read_text())
    assert got == expected
    assert run.returncode == 0, run.stderr
