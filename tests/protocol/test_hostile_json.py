"""JSON past the limits (deep nesting, huge numbers, lone surrogates) is refused with
`bad_request` / HTTP 400 wherever a peer sends it, stops nothing and reaches no one,
while an honest sender and subscriber beside the attack keep a complete, ordered stream."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from conftest import ServerProcess, start_server
from wsutil import hello, recv_op, request, ws_connect

#: A body of each kind a client's JSON decoder chokes on or a strict one refuses.
DEEP = "[" * 3000 + "]" * 3000
HUGE_INT = "7" * 5000
LONE_SURROGATE = '"\\ud800"'
OVERFLOW = "1e400"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own: an attack that stopped it must not take the suite's server along."""
    srv = start_server(tmp_path_factory.mktemp("hostile"))
    yield srv
    assert srv.stop() == 0


@contextlib.contextmanager
def login(server: ServerProcess, user: str, tenant: str) -> Iterator[ClientConnection]:
    with ws_connect(server.url) as ws:
        assert hello(ws, server.token(user, tenant))["op"] == "welcome"
        yield ws


class Bystander:
    """An honest sender and subscriber in a room of their own."""

    def __init__(self, server: ServerProcess, listener: ClientConnection, sender: ClientConnection) -> None:
        self.server, self.listener, self.sender = server, listener, sender
        assert request(self.listener, {"op": "subscribe", "id": 1, "room": "calm"})["ok"] is True
        self.bodies: list[dict[str, Any]] = []

    def send(self) -> None:
        n = len(self.bodies) + 1
        body = {"n": n, "text": f"message {n}"}
        reply = request(self.sender, {"op": "send", "id": 1000 + n, "room": "calm", "cid": f"calm-{n}", "body": body})
        assert reply["ok"] is True and reply["seq"] == n, reply
        self.bodies.append(body)

    def check(self) -> None:
        """The server is up, and the listener got every message once, in order."""
        self.send()
        assert self.server.proc.poll() is None, "the server stopped"
        got = [recv_op(self.listener, "msg") for _ in self.bodies]
        assert [m["seq"] for m in got] == list(range(1, len(self.bodies) + 1))
        assert [m["body"] for m in got] == self.bodies


@pytest.fixture
def bystander(hostile: ServerProcess, tenant: str) -> Iterator[Bystander]:
    with login(hostile, "listener", tenant) as listener, login(hostile, "talker", tenant) as sender:
        b = Bystander(hostile, listener, sender)
        b.send()
        yield b
        b.check()


def refused(ws: ClientConnection, text: str, request_id: int, limit: str) -> None:
    """Sends `text`; the answer is `bad_request` for `request_id` naming `limit`."""
    ws.send(text)
    while True:
        reply = json.loads(ws.recv(timeout=10))
        if reply.get("id") == request_id:
            break
    assert reply["op"] == "error" and reply["code"] == "bad_request", reply
    assert limit in reply["message"], reply


@pytest.mark.parametrize("where", ["hello", "unknown-op", "meeting-op"])
def test_a_huge_integer_in_a_control_frame_is_refused(
    hostile: ServerProcess, tenant: str, bystander: Bystander, where: str
) -> None:
    with ws_connect(hostile.url) as ws:
        if where == "hello":  # before any login
            refused(ws, f'{{"op":"hello","id":5,"token":{HUGE_INT}}}', 5, "100 characters")
            assert hello(ws, hostile.token("late", tenant))["op"] == "welcome"  # still open, and usable
        else:
            assert hello(ws, hostile.token("attacker", tenant))["op"] == "welcome"
            op = "no.such.op" if where == "unknown-op" else "meeting.create"
            refused(ws, f'{{"op":"{op}","id":5,"title":"t","max_participants":{HUGE_INT}}}', 5, "100 characters")
        assert request(ws, {"op": "subscribe", "id": 6, "room": "after"})["ok"] is True
    bystander.send()


def signed(payload: str, secret: str) -> str:
    """An HS256 JWT over the payload text as given (PyJWT would re-encode it)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(payload.encode())
    return head + "." + b64(hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest())


@pytest.mark.parametrize(
    ("extra", "exp"),
    [
        pytest.param(',"x":' + "[" * 3000 + "]" * 3000, None, id="nested-3000"),  # read before admission
        pytest.param(',"x":' + "[" * 5000 + "]" * 5000, None, id="nested-5000"),
        pytest.param("", "NaN", id="exp-NaN"),
        pytest.param("", "Infinity", id="exp-Infinity"),
        pytest.param("", "1e400", id="exp-1e400"),
    ],
)
def test_a_signed_token_payload_past_the_limits_is_unauthorized(
    hostile: ServerProcess, tenant: str, bystander: Bystander, extra: str, exp: str | None
) -> None:
    exp = exp or str(int(time.time()) + 3600)
    token = signed(f'{{"sub":"mallory","tenant":"{tenant}","exp":{exp}{extra}}}', hostile.secret)
    with ws_connect(hostile.url) as ws:
        ws.send(json.dumps({"op": "hello", "token": token}))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4001
    bystander.send()


def post(server: ServerProcess, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        server.http + "/api/v1/publish",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        pytest.param(DEEP, "nested deeper than 64", id="nested-3000"),
        pytest.param(HUGE_INT, "100 characters", id="integer-5000-digits"),
        pytest.param(LONE_SURROGATE, "surrogate", id="lone-surrogate"),
        pytest.param(OVERFLOW, "range", id="1e400"),
        pytest.param("NaN", "not JSON", id="NaN"),
    ],
)
def test_a_publish_body_past_the_limits_is_400(
    hostile: ServerProcess, tenant: str, bystander: Bystander, body: str, limit: str
) -> None:
    payload = f'{{"tenant":"{tenant}","room":"calm","from":"bot","cid":"bad","body":{body}}}'
    status, answer = post(hostile, payload.encode())
    assert status == 400 and answer["code"] == "bad_request", answer
    assert limit in answer["message"], answer
    # Nothing stored: the honest stream's seqs stay 1, 2, 3 ... (checked at the end).
    assert hostile.proc.poll() is None


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        pytest.param(DEEP, "nested deeper than 64", id="nested-3000"),
        pytest.param(HUGE_INT, "100 characters", id="integer-5000-digits"),
        pytest.param(LONE_SURROGATE, "surrogate", id="lone-surrogate"),
        pytest.param(OVERFLOW, "range", id="1e400"),
    ],
)
def test_a_message_body_past_the_limits_is_refused_and_never_fanned_out(
    hostile: ServerProcess, tenant: str, bystander: Bystander, body: str, limit: str
) -> None:
    with login(hostile, "mallory", tenant) as ws:
        frame = f'{{"op":"send","id":9,"room":"calm","cid":"bad","body":{body}}}'
        refused(ws, frame, 9, limit)
        stored = request(ws, {"op": "history", "id": 10, "room": "calm"})["messages"]
        assert [(m["seq"], m["cid"]) for m in stored] == [(1, "calm-1")]
    bystander.send()


def test_a_lone_surrogate_in_a_meeting_title_is_bad_request(
    hostile: ServerProcess, tenant: str, bystander: Bystander
) -> None:
    with login(hostile, "host", tenant) as ws:
        refused(ws, '{"op":"meeting.create","id":3,"title":"\\ud800 stand-up"}', 3, "surrogate")
        created = request(ws, {"op": "meeting.create", "id": 4, "title": "\U0001f600 stand-up"})
        assert created["ok"] is True, created
    bystander.send()
