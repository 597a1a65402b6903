"""A control-plane value set through the binding is on disk when the call returns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rushhour._core import Engine

# Sets values and leaves at once, without the engine's orderly shutdown (no final flush).
CHILD = """
import os, sys
from rushhour._core import Engine
engine = Engine(data_dir=sys.argv[1])
for n in range(50):
    engine.put_state("meetings", f"m-{n}", f'{{"n":{n}}}')
engine.put_state("meetings", "m-7", None)
os._exit(0)
"""


def test_put_state_returns_once_the_value_is_durable(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], check=True, timeout=60)
    states = dict(Engine(data_dir=str(tmp_path)).states("meetings"))
    assert len(states) == 49
    assert "m-7" not in states
    assert states["m-49"] == '{"n":49}'
