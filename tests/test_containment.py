"""No input stops the server: an unexpected exception ends only the connection, request
or timer tick it hit (close 1011, HTTP 500, the next tick), with one log line per
interval and `rushhour_internal_errors_total{layer}`; an honest client beside it is
served throughout."""

from __future__ import annotations

import base64
import functools
import hmac
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed

import rushhour
from conftest import ServerProcess, start_server
from rushhour.server._connection import Connection
from rushhour.server._faults import Faults
from rushhour.server._http import HttpConnection
from rushhour.server._meetings import MeetingRegistry
from wsutil import Honest, hello, http, send_json, ws_connect


def _signed(payload: bytes, secret: str) -> str:
    """An HS256 token over exactly these payload bytes (`NaN` is not JSON to PyJWT)."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(payload).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.digest(secret.encode(), header + b"." + body, "sha256")).rstrip(b"=")
    return b".".join((header, body, mac)).decode()


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of this module's own: an attack that stops it fails only these tests."""
    srv = start_server(tmp_path_factory.mktemp("data"))
    yield srv
    assert srv.stop() == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("exp", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_signed_token_with_insane_exp_is_refused_4001(own_server: ServerProcess, tenant: str, exp: str) -> None:
    srv = own_server
    honest = Honest(srv.url, srv.token("reader", tenant), srv.token("writer", tenant))
    try:
        honest.exchange()
        token = _signed(f'{{"sub":"mallory","tenant":"{tenant}","exp":{exp}}}'.encode(), srv.secret)
        with ws_connect(srv.url) as ws:
            send_json(ws, {"op": "hello", "token": token})
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=10)
            assert info.value.rcvd is not None and info.value.rcvd.code == 4001
            # Refused where the payload is read (NaN, Infinity and 1e400 are no JSON the
            # server takes) or, failing that, by the claim checks.
            assert "invalid token" in info.value.rcvd.reason
        honest.exchange()
        assert srv.proc.poll() is None
    finally:
        honest.close()


# -- injected faults, in process -------------------------------------------------------
#
# A fault is injected into the session layer (never the core) of a server run in this
# process, for a frame no handler knows, so that containment is tested whatever bug
# will reach it: every input that raised one before was fixed where it is read.

FAULT_OP = "test.fault"


def _faulty_control(original: Callable[[Connection, str], None]) -> Callable[[Connection, str], None]:
    def control(self: Connection, text: str) -> None:
        if FAULT_OP in text:
            raise RuntimeError("injected fault")
        original(self, text)

    return control


async def _serve_and_run(tmp_path: Path, scenario: Callable[[rushhour.ServerInfo, rushhour.Config], None]) -> None:
    """Runs the server in this process and `scenario` (blocking clients) in a thread."""
    config = rushhour.Config(port=0, data_dir=tmp_path, secret="s" * 32, api_key="k")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            info = await nursery.start(functools.partial(rushhour.serve, config))
            await trio.to_thread.run_sync(scenario, info, config)
            nursery.cancel_scope.cancel()


def _metric_line(http_base: str, name: str) -> float:
    status, body = http("GET", http_base + "/metrics")
    assert status == 200
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def test_fault_in_a_connection_closes_it_1011_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(Connection, "_control", _faulty_control(Connection._control))
    caplog.set_level(logging.ERROR, logger="rushhour.server")

    def scenario(info: rushhour.ServerInfo, config: rushhour.Config) -> None:
        secret, base = config.signing_secret, f"http://{info.host}:{info.port}"
        honest = Honest(
            info.url, rushhour.auth.issue(secret, "reader", "acme"), rushhour.auth.issue(secret, "w", "acme")
        )
        try:
            honest.exchange()
            for logged_in in (True, False, True):
                with ws_connect(info.url) as ws:
                    if logged_in:
                        assert hello(ws, rushhour.auth.issue(secret, "mallory", "acme"))["op"] == "welcome"
                    send_json(ws, {"op": FAULT_OP, "id": 1})
                    with pytest.raises(ConnectionClosed) as closed:
                        ws.recv(timeout=10)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
                honest.exchange()
            assert _metric_line(base, 'rushhour_internal_errors_total{layer="ws"}') == 3.0
        finally:
            honest.close()

    await _serve_and_run(tmp_path, scenario)
    lines = [r for r in caplog.records if r.name == "rushhour.server"]
    # Three faults within the interval: one line (the next one would count the others).
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "RuntimeError: injected fault" in lines[0].getMessage()


async def test_fault_in_an_http_request_answers_500(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = HttpConnection._route

    async def route(self: HttpConnection, request: Any, body: bytes) -> Any:
        if bytes(request.target) == b"/fault":
            raise RuntimeError("injected fault")
        return await original(self, request, body)

    monkeypatch.setattr(HttpConnection, "_route", route)

    def scenario(info: rushhour.ServerInfo, config: rushhour.Config) -> None:
        secret, base = config.signing_secret, f"http://{info.host}:{info.port}"
        honest = Honest(
            info.url, rushhour.auth.issue(secret, "reader", "acme"), rushhour.auth.issue(secret, "w", "acme")
        )
        try:
            for _ in range(3):
                with socket.create_connection((info.host, info.port), timeout=10) as sock:
                    sock.sendall(b"GET /fault HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    answer = b""
                    while chunk := sock.recv(65536):  # the server closes after the 500
                        answer += chunk
                assert answer.startswith(b"HTTP/1.1 500 "), answer[:100]
                assert answer.count(b"HTTP/1.1 ") == 1, "the connection closes after a 500"
                honest.exchange()
            assert _metric_line(base, 'rushhour_internal_errors_total{layer="http"}') == 3.0
        finally:
            honest.close()

    await _serve_and_run(tmp_path, scenario)


async def test_fault_in_a_timer_tick_counts_and_the_timer_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = MeetingRegistry.tick
    calls = {"n": 0}

    def tick(self: MeetingRegistry) -> None:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise RuntimeError("injected fault")
        original(self)

    monkeypatch.setattr(MeetingRegistry, "tick", tick)

    def scenario(info: rushhour.ServerInfo, config: rushhour.Config) -> None:
        secret, base = config.signing_secret, f"http://{info.host}:{info.port}"
        honest = Honest(
            info.url, rushhour.auth.issue(secret, "reader", "acme"), rushhour.auth.issue(secret, "w", "acme")
        )
        try:
            deadline = time.monotonic() + 10
            while calls["n"] < 10 and time.monotonic() < deadline:
                honest.exchange(1)
            assert calls["n"] >= 10, "the meetings' timer stopped after its failed ticks"
            assert _metric_line(base, 'rushhour_internal_errors_total{layer="timer"}') == 3.0
        finally:
            honest.close()

    await _serve_and_run(tmp_path, scenario)


def test_faults_log_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    faults = Faults(interval_s=10.0, clock=lambda: now[0])
    caplog.set_level(logging.ERROR, logger="rushhour.server")
    for step in range(25):  # one fault a second for 25 s
        now[0] = float(step)
        faults.record("ws", f"conn {step}", ValueError("bad"))
    faults.record("timer", "sweep", KeyError("k"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines  # ws at 0, 10 and 20 s; timer once
    assert "and 9 more in ws since the last report" in lines[1]
    assert faults.counts == {"ws": 25, "http": 0, "timer": 1}
