"""The command line: flags and environment, the listening line, graceful shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from conftest import LISTENING, start_server
from wsutil import hello, request, ws_connect


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_clients_with_1001_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    srv = start_server(tmp_path)
    with ws_connect(srv.url) as ws:
        hello(ws, srv.token("alice", "acme"))
        request(ws, {"op": "subscribe", "id": 1, "room": "r"})
        srv.proc.send_signal(sig)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                ws.recv(timeout=15)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    srv.proc.wait(timeout=15)
    assert srv.stop() == 0


def test_environment_configures_flags(tmp_path: Path) -> None:
    env = {"RUSHHOUR_MAX_SUBSCRIPTIONS": "1", "RUSHHOUR_DEV": "true"}
    srv = start_server(tmp_path, env=env, dev=False)
    try:
        with ws_connect(srv.url) as ws:
            hello(ws, srv.token("alice", "acme"))
            assert request(ws, {"op": "subscribe", "id": 1, "room": "a"})["ok"]
            assert request(ws, {"op": "subscribe", "id": 2, "room": "b"})["code"] == "bad_request"
    finally:
        assert srv.stop() == 0


def test_listening_line_and_bad_flags(tmp_path: Path) -> None:
    srv = start_server(tmp_path)
    assert LISTENING.match(f"rushhour listening on {srv.url}")
    assert srv.stop() == 0
    bad = subprocess.run(
        [sys.executable, "-m", "rushhour", "serve", "--fsync", "sometimes"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and "fsync" in bad.stderr
