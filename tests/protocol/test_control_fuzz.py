"""Hypothesis on the session layer's control-frame handlers over a real socket: arbitrary
JSON objects with arbitrary `op` (hello before and after login, meeting.* and signal with
fields of any value and type, unknown ops). The server stays up, every frame with an
integer id gets exactly one reply or error with a protocol code (unless a `hello` closed
the connection first, 4001 or 1013: never 1011), and an honest client beside it keeps
its complete stream."""

from __future__ import annotations

import base64
import contextlib
import hmac
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from conftest import ServerProcess, start_server
from wsutil import Honest, hello, ws_connect

PROTOCOL_CODES = {
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "too_large",
    "conflict",
    "rate_limited",
    "overloaded",
    "internal",
}
OPS = [
    "hello",
    "meeting.create",
    "meeting.join",
    "meeting.leave",
    "meeting.mute",
    "meeting.remove",
    "meeting.transfer_host",
    "meeting.end",
    "signal",
    "subscribe",
    "send",
    "unread",
    "nope",
]
TENANT = "fuzz-tenant"
#: The sentinel's id: once its answer is in, every frame before it was answered.
SENTINEL = 10**9

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["m-x", "p-x", "", "interactive", "broadcast", "a" * 300]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_fields = st.dictionaries(
    st.sampled_from(
        ["meeting", "title", "key", "mode", "max_participants", "participant", "to", "data", "seat", "muted", "room"]
    )
    | st.sampled_from(["body", "cid", "since", "token", "resume"])
    | st.text(max_size=4),
    _values,
    max_size=5,
)
_ids = st.one_of(st.none(), st.just("int"), _values)


def _signed(payload: str, secret: str) -> str:
    """An HS256 token over exactly this payload (`NaN` is not JSON to PyJWT)."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.digest(secret.encode(), header + b"." + body, "sha256")).rstrip(b"=")
    return b".".join((header, body, mac)).decode()


#: `exp` of a correctly signed token: sane, or what Python's json reads but no sane
#: claim holds.
_exps = st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "true", '"soon"', "4102444800", "4102444800.5"])


@st.composite
def _frames(draw: st.DrawFn) -> list[dict[str, Any]]:
    frames = []
    for _ in range(draw(st.integers(1, 5))):
        frame: dict[str, Any] = draw(_fields)
        frame["op"] = draw(st.sampled_from(OPS) | _values)
        rid = draw(_ids)
        if rid == "int":
            frame["id"] = len(frames) + 1
        elif rid is not None and not (isinstance(rid, int) and not isinstance(rid, bool)):
            frame["id"] = rid
        else:
            frame.pop("id", None)
        frames.append(frame)
    return frames


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("data"))
    yield srv
    assert srv.stop() == 0


_USERS = itertools.count()


def _is_int_id(frame: dict[str, Any]) -> bool:
    """Whether the frame must get an answer carrying its id. (A hello is answered by
    `welcome` or a close; a frame without a string `op` is refused by the core's frame
    check with an error that carries no id.)"""
    rid, op = frame.get("id"), frame["op"]
    return isinstance(rid, int) and not isinstance(rid, bool) and isinstance(op, str) and op != "hello"


@pytest.mark.timeout(600)
def test_arbitrary_control_frames(fuzz_server: ServerProcess) -> None:
    srv = fuzz_server
    honest = Honest(srv.url, srv.token("reader", TENANT), srv.token("writer", TENANT))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(logged_in=st.booleans(), token=st.sampled_from(["drawn", "valid", "signed"]), exp=_exps, frames=_frames())
    def run(logged_in: bool, token: str, exp: str, frames: list[dict[str, Any]]) -> None:
        user = f"fuzz{next(_USERS) % 7}"
        for frame in frames:  # a hello's token: whatever was drawn, valid, or signed with any exp
            if frame["op"] == "hello" and token == "valid":
                frame["token"] = srv.token(user, TENANT)
            elif frame["op"] == "hello" and token == "signed":
                frame["token"] = _signed(f'{{"sub":"{user}","tenant":"{TENANT}","exp":{exp}}}', srv.secret)
        with ws_connect(srv.url) as ws:
            if logged_in:
                assert hello(ws, srv.token(user, TENANT))["op"] == "welcome"
            answers: dict[int, list[dict[str, Any]]] = {}
            closed = None
            # A send may find the connection closed by a hello: what came before is read.
            with contextlib.suppress(ConnectionClosed):
                for frame in frames:
                    ws.send(json.dumps(frame))
                ws.send(json.dumps({"op": "nope", "id": SENTINEL}))
            try:
                while SENTINEL not in answers:
                    got = json.loads(ws.recv(timeout=10))
                    if got["op"] in ("reply", "error") and isinstance(got.get("id"), int):
                        answers.setdefault(got["id"], []).append(got)
                        if got["op"] == "error":
                            assert got["code"] in PROTOCOL_CODES, got
                            assert got["code"] != "internal", got
            except ConnectionClosed as e:
                closed = e.rcvd
        assert all(len(a) == 1 for a in answers.values()), answers
        if closed is not None:
            # Only a hello closes a connection here: refused (4001) or overloaded (1013).
            assert closed.code in (4001, 1013), closed
            before_hello = list(itertools.takewhile(lambda f: f["op"] != "hello", frames))
            expected = {f["id"] for f in before_hello if _is_int_id(f)}
        else:
            expected = {f["id"] for f in frames if _is_int_id(f)} | {SENTINEL}
        assert expected <= set(answers), (expected, answers, closed)
        honest.exchange(1)
        assert srv.proc.poll() is None

    try:
        run()
    finally:
        honest.close()
