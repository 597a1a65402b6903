"""Recovery at start, through the command line: restarts keep everything, a damaged
sealed segment stops the start unless `--repair`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect as ws_connect

from conftest import API_KEY, SECRET, ServerProcess, start_server
from wsutil import hello, recv_op, request

SMALL_SEGMENTS = ("--segment-bytes", "4096")


def _send_many(srv: ServerProcess, room: str, n: int) -> None:
    with ws_connect(srv.url) as ws:
        hello(ws, srv.token("alice", "acme"))
        for i in range(n):
            reply = request(ws, {"op": "send", "id": i, "room": room, "cid": f"c{i}", "body": {"i": i}})
            assert reply["seq"] == i + 1


def _replay(srv: ServerProcess, room: str) -> list[int]:
    with ws_connect(srv.url) as ws:
        hello(ws, srv.token("bob", "acme"))
        reply = request(ws, {"op": "subscribe", "id": 1, "room": room, "since": 0})
        kept: list[int] = []
        seq = reply["first_seq"] - 1
        while seq < reply["last_seq"]:  # a repaired room may have a gap where records are gone
            msg = recv_op(ws, "msg")
            assert msg["seq"] > seq, "in order, no repeat"
            seq = msg["seq"]
            kept.append(msg["body"]["i"])
        return kept


def _segments(data: Path) -> list[Path]:
    return sorted(data.glob("*.log"))


def test_sigkill_then_restart_keeps_every_acknowledged_message(tmp_path: Path) -> None:
    srv = start_server(tmp_path, *SMALL_SEGMENTS)
    _send_many(srv, "general", 300)
    srv.stop(signal.SIGKILL)
    srv = start_server(tmp_path, *SMALL_SEGMENTS)
    try:
        assert _replay(srv, "general") == list(range(300))
        with ws_connect(srv.url) as ws:
            hello(ws, srv.token("alice", "acme"))
            again = request(ws, {"op": "send", "id": 1, "room": "general", "cid": "c7", "body": {}})
            assert (again["seq"], again["duplicate"]) == (8, True)
            new = request(ws, {"op": "send", "id": 2, "room": "general", "cid": "new", "body": {}})
            assert (new["seq"], new["duplicate"]) == (301, False)
    finally:
        assert srv.stop() == 0


def _serve_args(data: Path, *extra: str) -> list[str]:
    head = [sys.executable, "-m", "rushhour", "serve", "--port", "0", "--data-dir", str(data)]
    return [*head, "--secret", SECRET, "--api-key", API_KEY, *SMALL_SEGMENTS, *extra]


def test_a_damaged_sealed_segment_needs_repair(tmp_path: Path) -> None:
    srv = start_server(tmp_path, *SMALL_SEGMENTS)
    _send_many(srv, "general", 300)
    assert srv.stop() == 0
    segments = _segments(tmp_path)
    assert len(segments) >= 3
    sealed = segments[1]
    damaged = bytearray(sealed.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    sealed.write_bytes(bytes(damaged))

    refused = subprocess.run(_serve_args(tmp_path), capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2, refused.stderr
    assert "damaged" in refused.stderr and "--repair" in refused.stderr
    assert sealed.read_bytes() == bytes(damaged), "nothing changed without --repair"

    srv = start_server(tmp_path, *SMALL_SEGMENTS, "--repair")
    try:
        assert len(sealed.read_bytes()) < len(damaged), "cut at the damage"
        kept = _replay(srv, "general")
        assert kept[0] == 0 and kept[-1] == 299, "the records on both sides of the damage are kept"
        assert 0 < 300 - len(kept) < 150, "only the damaged records are gone"
    finally:
        assert srv.stop() == 0


def test_retention_by_age_moves_first_seq_and_seqs_go_on_after_restart(tmp_path: Path) -> None:
    args = (*SMALL_SEGMENTS, "--retention", "1s", "--heartbeat-ms", "200")
    srv = start_server(tmp_path, *args)
    try:
        _send_many(srv, "old", 200)
        with ws_connect(srv.url) as ws:
            hello(ws, srv.token("bob", "acme"))
            deadline = time.monotonic() + 20
            reply: dict[str, Any] = {}
            while time.monotonic() < deadline:
                reply = request(ws, {"op": "subscribe", "id": 1, "room": "old", "since": 0})
                if reply["first_seq"] == 201 and _segments(tmp_path)[0].name != "0000000001.log":
                    break
                time.sleep(0.2)
            assert (reply["first_seq"], reply["last_seq"], reply.get("truncated")) == (201, 200, True)
            assert _segments(tmp_path)[0].name != "0000000001.log", "the dead segment was deleted"
    finally:
        assert srv.stop() == 0
    srv = start_server(tmp_path, *args)
    try:
        with ws_connect(srv.url) as ws:
            hello(ws, srv.token("alice", "acme"))
            reply = request(ws, {"op": "send", "id": 1, "room": "old", "cid": "after", "body": {}})
            assert reply["seq"] == 201, "seqs never restart, even with nothing retained"
            assert request(ws, {"op": "send", "id": 2, "room": "old", "cid": "c3", "body": {}})["duplicate"] is False
    finally:
        assert srv.stop() == 0
