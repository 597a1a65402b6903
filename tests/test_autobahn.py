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

from conftest import ServerProcess

EXPECTED = Path(__file__).with_name("autobahn_expected.json")
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"]


def test_autobahn_cases_match_the_pinned_results(server: ServerProcess, tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-c",
        "from kosoku._cli import main; main()",
        f"{server.url}/echo",
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
