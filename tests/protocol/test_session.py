"""Session section of the protocol, over real sockets with the `websockets` library."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import ServerProcess
from wsutil import hello, request, ws_connect


def closed_with(ws: object, code: int) -> None:
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(10):
            ws.recv(timeout=10)  # type: ignore[attr-defined]
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == code


def test_welcome_fields(server: ServerProcess, tenant: str) -> None:
    with ws_connect(server.url) as ws:
        before = int(time.time() * 1000)
        welcome = hello(ws, server.token("alice", tenant))
    assert list(welcome)[0] == "op"
    assert welcome["op"] == "welcome"
    assert welcome["user"] == "alice"
    assert welcome["tenant"] == tenant
    assert welcome["heartbeat_ms"] == 25000
    assert welcome["resumed"] is False
    assert isinstance(welcome["session"], str) and welcome["session"]
    assert abs(welcome["server_time"] - before) < 60_000


def test_hello_must_come_first(server: ServerProcess, tenant: str) -> None:
    with ws_connect(server.url) as ws:
        reply = request(ws, {"op": "subscribe", "id": 1, "room": "general"})
        assert reply["op"] == "error" and reply["code"] == "unauthorized"
        assert hello(ws, server.token("alice", tenant))["op"] == "welcome"


def test_second_hello_is_a_conflict(server: ServerProcess, tenant: str) -> None:
    with ws_connect(server.url) as ws:
        hello(ws, server.token("alice", tenant))
        reply = request(ws, {"op": "hello", "id": 2, "token": server.token("alice", tenant)})
        assert reply["code"] == "conflict"


def _token(server: ServerProcess, tenant_id: str, **overrides: object) -> str:
    claims: dict[str, object] = {"sub": "mallory", "tenant": tenant_id, "exp": int(time.time()) + 600}
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, server.secret, algorithm="HS256")


def _unsigned(payload: dict[str, object]) -> str:
    def b64(obj: dict[str, object]) -> str:
        import base64

        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda s, t: _unsigned({"sub": "m", "tenant": t, "exp": int(time.time()) + 600}), id="alg-none"),
        pytest.param(
            lambda s, t: jwt.encode(
                {"sub": "m", "tenant": t, "exp": int(time.time()) + 600}, s.secret, algorithm="HS512"
            ),
            id="other-algorithm",
        ),
        pytest.param(
            lambda s, t: jwt.encode(
                {"sub": "m", "tenant": t, "exp": int(time.time()) + 600}, "x" * 40, algorithm="HS256"
            ),
            id="wrong-key",
        ),
        pytest.param(lambda s, t: _token(s, t, exp=int(time.time()) - 10), id="expired"),
        pytest.param(lambda s, t: _token(s, t, exp=None), id="missing-exp"),
        pytest.param(lambda s, t: _token(s, t, sub=None), id="missing-sub"),
        pytest.param(lambda s, t: _token(s, t, tenant=None), id="missing-tenant"),
        pytest.param(lambda s, t: _token(s, t, sub="bad id"), id="invalid-sub"),
        pytest.param(lambda s, t: "not-a-jwt", id="garbage"),
    ],
)
def test_bad_tokens_close_4001(server: ServerProcess, tenant: str, make_token: object) -> None:
    with ws_connect(server.url) as ws:
        ws.send(json.dumps({"op": "hello", "token": make_token(server, tenant)}))  # type: ignore[operator]
        closed_with(ws, 4001)


def test_missing_token_closes_4001(server: ServerProcess) -> None:
    with ws_connect(server.url) as ws:
        ws.send(json.dumps({"op": "hello"}))
        closed_with(ws, 4001)


def test_resume_fences_the_old_connection_with_4009(server: ServerProcess, tenant: str) -> None:
    token = server.token("alice", tenant)
    with ws_connect(server.url) as first, ws_connect(server.url) as second:
        session = hello(first, token)["session"]
        welcome = hello(second, token, resume=session)
        assert welcome["resumed"] is True
        assert welcome["session"] == session
        closed_with(first, 4009)


def test_resume_of_another_users_session_starts_fresh(server: ServerProcess, tenant: str) -> None:
    with ws_connect(server.url) as alice, ws_connect(server.url) as bob:
        session = hello(alice, server.token("alice", tenant))["session"]
        welcome = hello(bob, server.token("bob", tenant), resume=session)
        assert welcome["resumed"] is False and welcome["session"] != session
        assert request(alice, {"op": "subscribe", "id": 1, "room": "r"})["ok"] is True


def test_client_close_is_echoed_with_1000(server: ServerProcess, tenant: str) -> None:
    with ws_connect(server.url) as ws:
        hello(ws, server.token("alice", tenant))
        ws.close(1000)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000


def test_origin_outside_allowed_origins_is_refused(tmp_path: object) -> None:
    from conftest import start_server

    srv = start_server(tmp_path, "--allowed-origins", "https://chat.example,https://ok.example")  # type: ignore[arg-type]
    try:
        with pytest.raises(InvalidStatus) as info:
            ws_connect(srv.url, origin="https://evil.example")  # type: ignore[arg-type]
        assert info.value.response.status_code == 403
        with ws_connect(srv.url, origin="https://ok.example") as ws:  # type: ignore[arg-type]
            assert hello(ws, srv.token("alice", "acme"))["op"] == "welcome"
        with ws_connect(srv.url) as ws:  # no Origin: not a browser, allowed
            assert hello(ws, srv.token("alice", "acme"))["op"] == "welcome"
    finally:
        assert srv.stop() == 0


def test_hello_timeout_closes_1008(tmp_path: object) -> None:
    from conftest import start_server

    srv = start_server(tmp_path, "--hello-timeout-ms", "300")  # type: ignore[arg-type]
    try:
        with ws_connect(srv.url) as ws:
            closed_with(ws, 1008)
    finally:
        assert srv.stop() == 0
