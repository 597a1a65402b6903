"""HTTP endpoints: health, metrics, publish, dev tokens, the web client."""

from __future__ import annotations

import functools
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import trio

import rushhour
import wsutil
from conftest import ServerProcess, start_server
from rushhour.server import _http
from wsutil import hello, http, metric, recv_op, request, ws_connect


def publish(server: ServerProcess, payload: dict[str, Any], key: str | None = None) -> tuple[int, dict[str, Any]]:
    return wsutil.publish(server.http, key or server.api_key, payload)


def test_healthz(server: ServerProcess) -> None:
    before = metric(server.http, "rushhour_healthz_core_total")
    assert http("GET", server.http + "/healthz") == (200, b'{"status":"ok"}')
    assert http("GET", server.http + "/healthz?from=probe") == (200, b'{"status":"ok"}')
    assert http("HEAD", server.http + "/healthz") == (200, b"")
    # Answered by the core on its reader thread, not by the HTTP layer.
    assert metric(server.http, "rushhour_healthz_core_total") == before + 3


def test_metrics_are_prometheus_text(server: ServerProcess, tenant: str) -> None:
    with ws_connect(server.url) as ws:
        hello(ws, server.token("alice", tenant))
        status, body = http("GET", server.http + "/metrics")
    assert status == 200
    text = body.decode()
    for name in ("rushhour_connections", "rushhour_deliveries_total", "rushhour_hellos_total"):
        assert name in text


def test_publish_reaches_subscribers_with_the_same_guarantees(server: ServerProcess, tenant: str) -> None:
    with ws_connect(server.url) as ws:
        hello(ws, server.token("alice", tenant))
        request(ws, {"op": "subscribe", "id": 1, "room": "news"})
        payload = {"tenant": tenant, "room": "news", "from": "bot", "cid": "p-1", "body": {"text": "deploy done"}}
        assert publish(server, payload) == (200, {"seq": 1, "duplicate": False})
        assert publish(server, payload) == (200, {"seq": 1, "duplicate": True})
        msg = recv_op(ws, "msg")
        assert (msg["from"], msg["seq"], msg["body"]) == ("bot", 1, {"text": "deploy done"})


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({"tenant": "t", "room": "r", "from": "bot", "cid": "c"}, 400, "bad_request"),
        ({"tenant": "t", "room": "bad room", "from": "bot", "cid": "c", "body": 1}, 400, "bad_request"),
        ({"tenant": "t", "room": "r", "from": "bot", "cid": "c", "body": "x" * 70_000}, 413, "too_large"),
    ],
)
def test_publish_errors(server: ServerProcess, payload: dict[str, Any], status: int, code: str) -> None:
    got_status, body = publish(server, payload)
    assert (got_status, body["code"]) == (status, code)


def test_publish_needs_the_api_key(server: ServerProcess) -> None:
    status, body = publish(server, {"tenant": "t", "room": "r", "from": "b", "cid": "c", "body": 1}, key="wrong")
    assert (status, body["code"]) == (401, "unauthorized")


def test_dev_token_opens_a_session(server: ServerProcess, tenant: str) -> None:
    status, body = http("POST", server.http + "/api/v1/dev-token", {"user": "dana", "tenant": tenant})
    assert status == 200
    with ws_connect(server.url) as ws:
        assert hello(ws, json.loads(body)["token"])["user"] == "dana"
    assert http("POST", server.http + "/api/v1/dev-token", {"user": "bad id"})[0] == 400


def test_web_client_and_unknown_paths(server: ServerProcess) -> None:
    status, body = http("GET", server.http + "/")
    assert status == 200 and b"<html" in body
    assert http("GET", server.http + "/nope")[0] == 404
    assert http("GET", server.http + "/ws")[0] == 426


def test_dev_only_endpoints_are_off_without_dev(tmp_path: Path) -> None:
    srv = start_server(tmp_path, dev=False)
    try:
        assert http("POST", srv.http + "/api/v1/dev-token", {"user": "a", "tenant": "b"})[0] == 404
        from websockets.exceptions import InvalidStatus

        with pytest.raises(InvalidStatus) as info:
            ws_connect(srv.url + "/echo")
        assert info.value.response.status_code == 404
    finally:
        assert srv.stop() == 0


async def test_api_key_compared_in_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is compared with `hmac.compare_digest` (its time says nothing of how much
    of the key a guess got right), on the whole `Authorization` value, as bytes."""
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(_http.hmac, "compare_digest", compare_digest)
    config = rushhour.Config(port=0, data_dir=tmp_path, secret="s" * 32, api_key="the-key")
    payload = {"tenant": "acme", "room": "r", "from": "bot", "cid": "c1", "body": "hi"}

    def scenario(base: str) -> None:
        assert wsutil.publish(base, "the-kez", payload)[0] == 401
        assert wsutil.publish(base, "the-key", payload)[0] == 200

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            info = await nursery.start(functools.partial(rushhour.serve, config))
            await trio.to_thread.run_sync(scenario, f"http://{info.host}:{info.port}")
            nursery.cancel_scope.cancel()
    assert compared == [(b"Bearer the-kez", b"Bearer the-key"), (b"Bearer the-key", b"Bearer the-key")]
