"""Rooms section of the protocol, over real sockets with the `websockets` library."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess, start_server
from wsutil import hello, metric, publish, recv_op, request, ws_connect


@pytest.fixture
def alice(server: ServerProcess, tenant: str) -> Iterator[object]:
    with ws_connect(server.url) as ws:
        hello(ws, server.token("alice", tenant))
        yield ws


@pytest.fixture
def bob(server: ServerProcess, tenant: str) -> Iterator[object]:
    with ws_connect(server.url) as ws:
        hello(ws, server.token("bob", tenant))
        yield ws


def send(ws: object, room: str, cid: str, body: object, rid: int = 100) -> dict[str, object]:
    return request(ws, {"op": "send", "id": rid, "room": room, "cid": cid, "body": body})  # type: ignore[arg-type]


def test_empty_room_subscribe_reply(alice: object) -> None:
    reply = request(alice, {"op": "subscribe", "id": 1, "room": "general"})  # type: ignore[arg-type]
    assert list(reply)[:3] == ["op", "id", "ok"]
    assert reply == {
        "op": "reply",
        "id": 1,
        "ok": True,
        "room": "general",
        "last_seq": 0,
        "first_seq": 1,
        "read_seq": 0,
        "delivered_seq": 0,
    }


def test_send_push_and_reply(alice: object, bob: object) -> None:
    assert request(bob, {"op": "subscribe", "id": 1, "room": "general"})["ok"]  # type: ignore[arg-type]
    assert request(alice, {"op": "subscribe", "id": 1, "room": "general"})["ok"]  # type: ignore[arg-type]
    alice.send(
        json.dumps({"op": "send", "id": 5, "room": "general", "cid": "c-1", "body": {"text": "hi", "n": [1, 2]}})
    )  # type: ignore[attr-defined]
    # The sender gets both the reply and the push (its own connections are subscribers too).
    frames = [alice.recv(timeout=10), alice.recv(timeout=10)]  # type: ignore[attr-defined]
    reply = next(json.loads(f) for f in frames if '"op":"reply"' in f)
    assert reply["ok"] is True and reply["seq"] == 1 and reply["duplicate"] is False
    assert isinstance(reply["ts"], int)
    for raw in (next(f for f in frames if '"op":"msg"' in f), bob.recv(timeout=10)):  # type: ignore[attr-defined]
        msg = json.loads(raw)
        assert msg == {
            "op": "msg",
            "room": "general",
            "seq": 1,
            "from": "alice",
            "cid": "c-1",
            "ts": reply["ts"],
            "body": {"text": "hi", "n": [1, 2]},
        }
        # op first, body last, and the body is the sender's JSON text, not re-encoded.
        assert raw.startswith('{"op":"msg"') and raw.endswith(',"body":{"text": "hi", "n": [1, 2]}}')


def test_seqs_have_no_gaps_and_push_in_order(alice: object, bob: object) -> None:
    request(bob, {"op": "subscribe", "id": 1, "room": "seq"})  # type: ignore[arg-type]
    for i in range(50):
        alice.send(json.dumps({"op": "send", "room": "seq", "cid": f"c{i}", "body": i}))  # type: ignore[attr-defined]
    seqs = [recv_op(bob, "msg")["seq"] for _ in range(50)]  # type: ignore[arg-type]
    assert seqs == list(range(1, 51))


def test_duplicate_cid_returns_original_seq_and_delivers_nothing(alice: object, bob: object) -> None:
    request(bob, {"op": "subscribe", "id": 1, "room": "dup"})  # type: ignore[arg-type]
    first = send(alice, "dup", "same", {"v": 1})
    again = send(alice, "dup", "same", {"v": 2}, rid=101)
    assert (again["seq"], again["ts"], again["duplicate"]) == (first["seq"], first["ts"], True)
    other = send(alice, "dup", "other", {"v": 3}, rid=102)
    assert other["seq"] == first["seq"] + 1  # type: ignore[operator]
    assert [recv_op(bob, "msg")["cid"] for _ in range(2)] == ["same", "other"]  # type: ignore[arg-type]
    # The same cid from another sender is another message.
    assert send(bob, "dup", "same", {"v": 4}, rid=103)["duplicate"] is False


def test_since_replays_then_goes_live(alice: object, bob: object) -> None:
    for i in range(10):
        send(alice, "replay", f"c{i}", i, rid=200 + i)
    reply = request(bob, {"op": "subscribe", "id": 1, "room": "replay", "since": 4})  # type: ignore[arg-type]
    assert reply["last_seq"] == 10 and reply["first_seq"] == 1 and "truncated" not in reply
    send(alice, "replay", "live", "live")
    got = [recv_op(bob, "msg") for _ in range(7)]  # type: ignore[arg-type]
    assert [m["seq"] for m in got] == list(range(5, 12))
    assert got[-1]["body"] == "live"


def test_subscribe_without_since_gets_no_past(alice: object, bob: object) -> None:
    send(alice, "nopast", "old", "old")
    request(bob, {"op": "subscribe", "id": 1, "room": "nopast"})  # type: ignore[arg-type]
    send(alice, "nopast", "new", "new", rid=101)
    assert recv_op(bob, "msg")["body"] == "new"  # type: ignore[arg-type]


def test_history_pages_ascending(alice: object) -> None:
    for i in range(1, 21):
        send(alice, "hist", f"c{i}", {"i": i}, rid=i)
    page = request(alice, {"op": "history", "id": 1, "room": "hist", "limit": 5})  # type: ignore[arg-type]
    assert [m["seq"] for m in page["messages"]] == [16, 17, 18, 19, 20]
    assert page["messages"][0] == {
        "op": "msg",
        "room": "hist",
        "seq": 16,
        "from": "alice",
        "cid": "c16",
        "ts": page["messages"][0]["ts"],
        "body": {"i": 16},
    }
    older = request(alice, {"op": "history", "id": 2, "room": "hist", "before": 16, "limit": 5})  # type: ignore[arg-type]
    assert [m["seq"] for m in older["messages"]] == [11, 12, 13, 14, 15]
    default = request(alice, {"op": "history", "id": 3, "room": "hist"})  # type: ignore[arg-type]
    assert [m["seq"] for m in default["messages"]] == list(range(1, 21))
    empty = request(alice, {"op": "history", "id": 4, "room": "never-used"})  # type: ignore[arg-type]
    assert empty["messages"] == []


def test_unsubscribe_stops_pushes_and_leave_ends_membership(alice: object, bob: object) -> None:
    request(bob, {"op": "subscribe", "id": 1, "room": "u"})  # type: ignore[arg-type]
    assert request(bob, {"op": "unsubscribe", "id": 2, "room": "u"}) == {"op": "reply", "id": 2, "ok": True}  # type: ignore[arg-type]
    send(alice, "u", "c1", 1)
    request(bob, {"op": "subscribe", "id": 3, "room": "u2"})  # type: ignore[arg-type]
    send(alice, "u2", "c2", 2, rid=101)
    assert recv_op(bob, "msg")["room"] == "u2"  # type: ignore[arg-type]  # nothing from "u" came first
    assert request(bob, {"op": "leave", "id": 4, "room": "u2"}) == {"op": "reply", "id": 4, "ok": True}  # type: ignore[arg-type]
    send(alice, "u2", "c3", 3, rid=102)
    assert request(bob, {"op": "history", "id": 5, "room": "u2"})["ok"]  # type: ignore[arg-type]  # no msg pushed before


def test_leave_on_one_device_stops_pushes_on_all(
    server: ServerProcess, tenant: str, alice: object, bob: object
) -> None:
    # Bob's phone and laptop both subscribe; the laptop's other room proves the order.
    with ws_connect(server.url) as laptop:
        hello(laptop, server.token("bob", tenant))
        for ws in (bob, laptop):
            request(ws, {"op": "subscribe", "id": 1, "room": "d"})  # type: ignore[arg-type]
        request(laptop, {"op": "subscribe", "id": 2, "room": "d2"})  # type: ignore[arg-type]
        assert request(bob, {"op": "leave", "id": 3, "room": "d"}) == {"op": "reply", "id": 3, "ok": True}  # type: ignore[arg-type]
        send(alice, "d", "c1", "after the leave")
        send(alice, "d2", "c2", "marker", rid=101)
        pushed = recv_op(laptop, "msg")
        assert (pushed["room"], pushed["body"]) == ("d2", "marker")  # nothing from "d" came first
        # Joining again (a subscribe) brings the pushes back on that connection.
        request(laptop, {"op": "subscribe", "id": 4, "room": "d"})  # type: ignore[arg-type]
        send(alice, "d", "c3", "back", rid=102)
        assert recv_op(laptop, "msg")["body"] == "back"


def test_rooms_claim_is_enforced(server: ServerProcess, tenant: str) -> None:
    with ws_connect(server.url) as ws:
        hello(ws, server.token("carol", tenant, rooms=["team-*", "general"]))
        assert request(ws, {"op": "subscribe", "id": 1, "room": "team-red"})["ok"]
        for i, op in enumerate(
            [
                {"op": "subscribe", "room": "secret"},
                {"op": "send", "room": "secret", "cid": "x", "body": 1},
                {"op": "history", "room": "secret"},
            ]
        ):
            reply = request(ws, {**op, "id": 10 + i})
            assert reply["op"] == "error" and reply["code"] == "forbidden", reply


def test_tenants_are_isolated(server: ServerProcess, tenant: str) -> None:
    other = tenant + "-globex"
    with ws_connect(server.url) as acme, ws_connect(server.url) as globex:
        hello(acme, server.token("alice", tenant))
        hello(globex, server.token("alice", other))
        request(globex, {"op": "subscribe", "id": 1, "room": "general"})
        send(acme, "general", "c1", "acme only")
        reply = request(globex, {"op": "history", "id": 2, "room": "general"})
        assert reply["messages"] == []
        assert request(globex, {"op": "subscribe", "id": 3, "room": "general"})["last_seq"] == 0
        assert send(globex, "general", "c1", "globex")["seq"] == 1


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"op": "subscribe", "room": "bad room"}, "bad_request"),
        ({"op": "subscribe", "room": "x" * 129}, "bad_request"),
        ({"op": "subscribe"}, "bad_request"),
        ({"op": "subscribe", "room": "r", "since": -1}, "bad_request"),
        ({"op": "send", "room": "r", "body": 1}, "bad_request"),
        ({"op": "send", "room": "r", "cid": "c"}, "bad_request"),
        ({"op": "send", "room": "r", "cid": "", "body": 1}, "bad_request"),
        ({"op": "send", "room": "r", "cid": "c", "body": "x" * (64 << 10)}, "too_large"),
        ({"op": "history", "room": "r", "limit": "ten"}, "bad_request"),
        ({"op": "no-such-op"}, "bad_request"),
    ],
)
def test_request_errors(alice: object, frame: dict[str, object], code: str) -> None:
    reply = request(alice, {**frame, "id": 7})  # type: ignore[arg-type]
    assert list(reply)[0] == "op"
    assert reply["op"] == "error" and reply["code"] == code and reply["message"]


def test_errors_without_id_have_no_id_and_success_has_no_reply(alice: object) -> None:
    alice.send(json.dumps({"op": "subscribe", "room": "bad room"}))  # type: ignore[attr-defined]
    error = json.loads(alice.recv(timeout=10))  # type: ignore[attr-defined]
    assert error["op"] == "error" and "id" not in error
    alice.send(json.dumps({"op": "subscribe", "room": "fine"}))  # type: ignore[attr-defined]
    assert request(alice, {"op": "history", "id": 9, "room": "fine"})["ok"]  # type: ignore[arg-type]  # nothing in between


def test_malformed_requests(alice: object) -> None:
    alice.send('{"op":"subscribe","id":"one","room":"r"}')  # type: ignore[attr-defined]
    assert json.loads(alice.recv(timeout=10))["code"] == "bad_request"  # type: ignore[attr-defined]
    alice.send("[1,2,3]")  # type: ignore[attr-defined]
    assert json.loads(alice.recv(timeout=10))["code"] == "bad_request"  # type: ignore[attr-defined]


def test_send_rate_limit(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--send-rate", "1", "--send-burst", "3")
    try:
        with ws_connect(srv.url) as ws:
            hello(ws, srv.token("alice", "acme"))
            replies = [send(ws, "r", f"c{i}", i, rid=i) for i in range(5)]
        assert [r["op"] for r in replies[:3]] == ["reply"] * 3
        limited = replies[3]
        assert limited["code"] == "rate_limited" and 0 < limited["retry_after_ms"] <= 1000
    finally:
        assert srv.stop() == 0


def test_subscription_limit_and_truncated_replay(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--max-subscriptions", "2", "--room-max-messages", "5", "--memory-retention", "2")
    try:
        with ws_connect(srv.url) as ws:
            hello(ws, srv.token("alice", "acme"))
            assert request(ws, {"op": "subscribe", "id": 1, "room": "a"})["ok"]
            assert request(ws, {"op": "subscribe", "id": 2, "room": "b"})["ok"]
            assert request(ws, {"op": "subscribe", "id": 3, "room": "c"})["code"] == "bad_request"
            assert metric(srv.http, "rushhour_rooms") == 2, "a refused subscription makes no room"
            assert request(ws, {"op": "subscribe", "id": 4, "room": "a"})["ok"]  # resubscribing is fine
            for i in range(12):
                send(ws, "old", f"c{i}", i, rid=10 + i)
        with ws_connect(srv.url) as ws:
            hello(ws, srv.token("bob", "acme"))
            reply = request(ws, {"op": "subscribe", "id": 1, "room": "old", "since": 2})
            assert (reply["first_seq"], reply["last_seq"], reply["truncated"]) == (8, 12, True)
            assert [recv_op(ws, "msg")["seq"] for _ in range(5)] == [8, 9, 10, 11, 12]
    finally:
        assert srv.stop() == 0


def test_room_limits_refuse_new_rooms_only(tmp_path: Path) -> None:
    """A new room past `--max-rooms-per-tenant` or `--max-rooms` is `forbidden` (so memory
    stays bounded); existing rooms go on, and after a restart every room is restored even
    under lower limits."""
    limits = ("--max-rooms", "3", "--max-rooms-per-tenant", "2")
    srv = start_server(tmp_path, *limits)
    try:
        with ws_connect(srv.url) as ws:
            hello(ws, srv.token("alice", "acme"))
            assert request(ws, {"op": "subscribe", "id": 1, "room": "a"})["ok"]
            assert send(ws, "b", "c-1", "hello b", rid=2)["ok"]
            refused = request(ws, {"op": "subscribe", "id": 3, "room": "c"})
            assert (refused["op"], refused["id"], refused["code"]) == ("error", 3, "forbidden")
            assert "tenant has 2 rooms" in str(refused["message"])
            assert send(ws, "c", "c-2", "no", rid=4)["code"] == "forbidden"
            assert send(ws, "a", "c-3", "hello a", rid=5)["seq"] == 1
        with ws_connect(srv.url) as ws:
            hello(ws, srv.token("gina", "globex"))
            assert request(ws, {"op": "subscribe", "id": 1, "room": "a"})["ok"]
            full = request(ws, {"op": "subscribe", "id": 2, "room": "b"})
            assert full["code"] == "forbidden" and "server has 3 rooms" in str(full["message"])
        payload = {"tenant": "acme", "room": "d", "from": "bot", "cid": "p-1", "body": {}}
        status, body = publish(srv.http, srv.api_key, payload)
        assert (status, body["code"]) == (403, "forbidden")
        assert metric(srv.http, "rushhour_rooms_refused_total") == 4
        assert metric(srv.http, "rushhour_rooms") == 3
    finally:
        assert srv.stop() == 0
    srv = start_server(tmp_path, "--max-rooms", "1", "--max-rooms-per-tenant", "1")
    try:
        with ws_connect(srv.url) as ws:
            hello(ws, srv.token("bob", "acme"))
            reply = request(ws, {"op": "subscribe", "id": 1, "room": "b", "since": 0})
            assert reply["last_seq"] == 1 and recv_op(ws, "msg")["body"] == "hello b"
            assert send(ws, "a", "c-4", "again", rid=2)["seq"] == 2
            assert request(ws, {"op": "subscribe", "id": 3, "room": "e"})["code"] == "forbidden"
    finally:
        assert srv.stop() == 0
