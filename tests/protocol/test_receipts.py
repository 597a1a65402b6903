"""Receipts section of the protocol over real sockets: cursors (`ack`, `read`, and the
sender's own), `receipts`, `read_by` / `unread_by` pages, `unread` and `welcome.unread`,
the cursors of the `subscribe` reply, the coalesced `receipts` pushes, and cursors kept
across a restart."""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from durability._harness import WsClient, token
from websockets.sync.client import ClientConnection

from conftest import ServerProcess, start_server
from rushhour.server._receipts import SLOTS as RECEIPT_SLOTS
from wsutil import all_pages, expected_pages, frames_until, hello, request, tick, ws_connect

#: Coalescing interval of the `pushes` server: long enough that a few frames sent right
#: after a push all land in the same interval.
PUSH_INTERVAL_MS = 500
#: Largest room of the `pushes` server that gets pushes.
PUSH_MAX_MEMBERS = 3

Connect = Callable[[str], ClientConnection]
Cursors = dict[str, tuple[int, int]]


@pytest.fixture(scope="module")
def pushes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a long interval and a small push limit, for the push tests."""
    srv = start_server(
        tmp_path_factory.mktemp("pushes"),
        "--receipt-interval-ms",
        str(PUSH_INTERVAL_MS),
        "--receipt-push-max-members",
        str(PUSH_MAX_MEMBERS),
    )
    yield srv
    assert srv.stop() == 0


def connector(srv: ServerProcess, tenant: str, stack: contextlib.ExitStack) -> Connect:
    """A function that opens a session of a user of `tenant`, closed with `stack`."""

    def connect(user: str) -> ClientConnection:
        ws = stack.enter_context(ws_connect(srv.url))
        welcome = hello(ws, srv.token(user, tenant))
        assert welcome["op"] == "welcome", welcome
        return ws

    return connect


@pytest.fixture
def connect(server: ServerProcess, tenant: str) -> Iterator[Connect]:
    with contextlib.ExitStack() as stack:
        yield connector(server, tenant, stack)


@pytest.fixture
def connect_pushes(pushes: ServerProcess, tenant: str) -> Iterator[Connect]:
    with contextlib.ExitStack() as stack:
        yield connector(pushes, tenant, stack)


def fill(ws: ClientConnection, room: str, n: int, prefix: str = "m") -> int:
    """Sends `n` messages; returns the last seq."""
    seq = 0
    for i in range(n):
        reply = request(ws, {"op": "send", "id": 1, "room": room, "cid": f"{prefix}{i}", "body": i})
        assert reply["ok"], reply
        seq = reply["seq"]
    return seq


def cursor(ws: ClientConnection, op: str, room: str, seq: int) -> tuple[int, int]:
    """`ack` or `read` with an id; returns (delivered_seq, read_seq) of the reply."""
    reply = request(ws, {"op": op, "id": 2, "room": room, "seq": seq})
    assert reply == {
        "op": "reply",
        "id": 2,
        "ok": True,
        "delivered_seq": reply["delivered_seq"],
        "read_seq": reply["read_seq"],
    }
    return reply["delivered_seq"], reply["read_seq"]


def join(ws: ClientConnection, room: str) -> dict[str, Any]:
    """Subscribes then unsubscribes: a member that gets no pushes of the room."""
    reply = request(ws, {"op": "subscribe", "id": 3, "room": room})
    assert reply["ok"], reply
    assert request(ws, {"op": "unsubscribe", "id": 4, "room": room})["ok"]
    return reply


def counts(cursors: Cursors, seq: int) -> tuple[int, int, int]:
    """(members, delivered ≥ seq, read ≥ seq), by brute force."""
    return (
        len(cursors),
        sum(d >= seq for d, _ in cursors.values()),
        sum(r >= seq for _, r in cursors.values()),
    )


def unread(ws: ClientConnection) -> dict[str, Any]:
    reply = request(ws, {"op": "unread", "id": 6})
    assert list(reply) == ["op", "id", "ok", "rooms"] and reply["ok"] is True, reply
    rooms: dict[str, Any] = reply["rooms"]
    return rooms


def publish(srv: ServerProcess, tenant: str, room: str, sender: str, cid: str) -> int:
    """`POST /api/v1/publish`; returns the seq."""
    body = json.dumps({"tenant": tenant, "room": room, "from": sender, "cid": cid, "body": {"via": "http"}})
    req = urllib.request.Request(
        srv.http + "/api/v1/publish",
        data=body.encode(),
        method="POST",
        headers={"Authorization": f"Bearer {srv.api_key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        seq: int = json.loads(resp.read())["seq"]
    return seq


# ----- ack and read -----


def test_cursors_move_up_only_and_read_implies_delivered(connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    assert fill(alice, "r", 6) == 6
    reply = request(bob, {"op": "subscribe", "id": 1, "room": "r"})
    assert (reply["delivered_seq"], reply["read_seq"]) == (0, 0)
    steps = [
        ("ack", 3, (3, 0)),
        ("ack", 2, (3, 0)),  # lower: accepted, changes nothing
        ("read", 2, (3, 2)),  # read below delivered leaves delivered
        ("read", 1, (3, 2)),
        ("ack", 0, (3, 2)),
        ("read", 0, (3, 2)),
        ("read", 5, (5, 5)),  # read lifts delivered
        ("ack", 4, (5, 5)),
        ("read", 5, (5, 5)),
        ("ack", 6, (6, 5)),
        ("read", 6, (6, 6)),
    ]
    for op, seq, after in steps:
        assert cursor(bob, op, "r", seq) == after, (op, seq)
    reply = request(bob, {"op": "read", "id": 9, "room": "r", "seq": 6})
    assert list(reply) == ["op", "id", "ok", "delivered_seq", "read_seq"]


@pytest.mark.parametrize("op", ["ack", "read"])
def test_seq_above_last_seq_or_missing_is_bad_request(connect: Connect, op: str) -> None:
    alice, bob = connect("alice"), connect("bob")
    fill(alice, "r", 3)
    join(bob, "r")
    assert cursor(bob, "ack", "r", 3) == (3, 0)
    assert cursor(bob, "read", "r", 2) == (3, 2)
    bads: list[dict[str, Any]] = [
        {"seq": 4},
        {"seq": 10**12},
        {},
        {"seq": None},
        {"seq": "3"},
        {"seq": -1},
        {"seq": 2.5},
    ]
    for bad in bads:
        reply = request(bob, {"op": op, "id": 7, "room": "r", **bad})
        assert reply["op"] == "error" and reply["id"] == 7 and reply["code"] == "bad_request", (bad, reply)
        assert reply["message"]
    # Nothing moved.
    assert cursor(bob, "ack", "r", 0) == (3, 2)
    reply = request(bob, {"op": "receipts", "id": 8, "room": "r", "seq": 3})
    assert (reply["delivered"], reply["read"]) == (2, 1)  # alice (the sender) and bob; alice only
    # Once the room has seq 4, the same frame is accepted.
    fill(alice, "r", 1, prefix="later")
    assert cursor(bob, op, "r", 4) == ((4, 2) if op == "ack" else (4, 4))


@pytest.mark.parametrize(
    "frame",
    [
        {"op": "ack", "seq": 0},
        {"op": "read", "seq": 0},
        {"op": "receipts", "seq": 0},
        {"op": "read_by", "seq": 0},
        {"op": "unread_by", "seq": 0},
    ],
)
def test_a_non_member_gets_not_found(connect: Connect, frame: dict[str, Any]) -> None:
    alice, carol = connect("alice"), connect("carol")
    fill(alice, "r", 2)
    for room in ["r", "never-used"]:
        reply = request(carol, {**frame, "id": 3, "room": room})
        assert reply["op"] == "error" and reply["code"] == "not_found", (room, reply)
    # A member that left is no member any more.
    join(carol, "r")
    assert request(carol, {**frame, "id": 4, "room": "r"})["ok"]
    assert request(carol, {"op": "leave", "id": 5, "room": "r"})["ok"]
    reply = request(carol, {**frame, "id": 6, "room": "r"})
    assert reply["op"] == "error" and reply["code"] == "not_found", reply


def test_frames_without_id_move_cursors_without_a_reply(connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    fill(alice, "r", 4)
    join(bob, "r")  # a member with no subscription: nothing is pushed to bob
    bob.send(json.dumps({"op": "ack", "room": "r", "seq": 3}))
    bob.send(json.dumps({"op": "read", "room": "r", "seq": 2}))
    bob.send(json.dumps({"op": "read_by", "id": 40, "room": "r", "seq": 2}))
    # The next frame bob gets is that reply: the two cursor frames were answered by nothing.
    assert json.loads(bob.recv(timeout=10)) == {
        "op": "reply",
        "id": 40,
        "ok": True,
        "users": ["alice", "bob"],
        "next": None,
    }
    assert cursor(bob, "ack", "r", 0) == (3, 2)


def test_a_send_moves_the_senders_cursors(server: ServerProcess, tenant: str, connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    assert fill(alice, "r", 2) == 2
    assert cursor(alice, "ack", "r", 0) == (2, 2)
    join(bob, "r")
    assert cursor(bob, "read", "r", 1) == (1, 1)
    reply = request(bob, {"op": "send", "id": 8, "room": "r", "cid": "b1", "body": "hi"})
    assert reply["seq"] == 3
    assert cursor(bob, "ack", "r", 0) == (3, 3)
    assert cursor(alice, "ack", "r", 0) == (2, 2)
    assert request(alice, {"op": "receipts", "id": 9, "room": "r", "seq": 3}) == {
        "op": "reply",
        "id": 9,
        "ok": True,
        "seq": 3,
        "members": 2,
        "delivered": 1,
        "read": 1,
    }
    # A retried send (same cid) is no new message and moves nothing.
    again = request(bob, {"op": "send", "id": 10, "room": "r", "cid": "b1", "body": "hi"})
    assert (again["seq"], again["duplicate"]) == (3, True)
    assert cursor(bob, "ack", "r", 0) == (3, 3)
    # A server-side publish is a send of its `from`; a first send makes a member at the seq.
    assert publish(server, tenant, "r", "alice", "http-1") == 4
    assert publish(server, tenant, "r", "dave", "http-2") == 5
    assert cursor(alice, "ack", "r", 0) == (4, 4)
    with ws_connect(server.url) as dave:
        hello(dave, server.token("dave", tenant))
        reply = request(dave, {"op": "subscribe", "id": 1, "room": "r"})
        assert (reply["last_seq"], reply["delivered_seq"], reply["read_seq"]) == (5, 5, 5)
    page = request(alice, {"op": "read_by", "id": 11, "room": "r", "seq": 4})
    assert page["users"] == ["alice", "dave"]


# ----- receipts, read_by, unread_by -----


def spread(connect: Connect, room: str, users: list[str], last: int) -> tuple[Cursors, ClientConnection]:
    """Makes `users` members of `room` (with `last` messages) with cursors spread over
    0..last; returns the expected cursors of every member and the first user's
    connection."""
    first = connect(users[0])
    assert fill(first, room, last) == last
    expected: Cursors = {users[0]: (last, last)}
    for i, user in enumerate(users[1:]):
        ws = connect(user)
        join(ws, room)
        delivered = (i * 7) % (last + 1)
        read = min(delivered, (i * 3) % (last + 1))
        if delivered:
            cursor(ws, "ack", room, delivered)
        if read:
            cursor(ws, "read", room, read)
        assert cursor(ws, "ack", room, 0) == (delivered, read)
        expected[user] = (delivered, read)
        ws.close()
    return expected, first


#: User ids whose byte order differs from a case-insensitive or natural order.
NAMES = [
    "obs",
    "Zed",
    "_under",
    "a-b",
    "a.b",
    "a/b",
    "a:b",
    "a@b",
    "a0",
    "aa",
    "A",
    "B",
    "b",
    "0",
    "9",
    "10",
    "u-2",
    "u-10",
    "u-1",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "heidi",
]


def test_receipts_counts_members_at_or_past_a_seq(connect: Connect) -> None:
    cursors, obs = spread(connect, "r", NAMES, 9)
    assert len({d for d, _ in cursors.values()}) > 5 and len({r for _, r in cursors.values()}) > 5
    for seq in range(12):
        reply = request(obs, {"op": "receipts", "id": seq, "room": "r", "seq": seq})
        members, delivered, read = counts(cursors, seq)
        assert reply == {
            "op": "reply",
            "id": seq,
            "ok": True,
            "seq": seq,
            "members": members,
            "delivered": delivered,
            "read": read,
        }


def test_read_by_and_unread_by_pages_match_brute_force(connect: Connect) -> None:
    cursors, obs = spread(connect, "r", NAMES, 9)
    for seq in [0, 1, 3, 6, 9, 10]:
        read = [u for u, (_, r) in cursors.items() if r >= seq]
        unread_ = [u for u, (_, r) in cursors.items() if r < seq]
        for op, matching in [("read_by", read), ("unread_by", unread_)]:
            for limit in [1, 2, 3, 7, len(NAMES), None]:
                pages = all_pages(obs, op, "r", seq, limit)
                assert pages == expected_pages(matching, limit or 100), (op, seq, limit)
                assert [u for page in pages for u in page] == sorted(matching)
    # A full page with nothing after it is the last page: `next` is null.
    exact = sorted(u for u, (_, r) in cursors.items() if r >= 1)
    reply = request(obs, {"op": "read_by", "id": 1, "room": "r", "seq": 1, "limit": len(exact)})
    assert (reply["users"], reply["next"]) == (exact, None)
    reply = request(obs, {"op": "read_by", "id": 1, "room": "r", "seq": 1, "limit": len(exact) - 1})
    assert (reply["users"], reply["next"]) == (exact[:-1], exact[-2])
    # `after` is exclusive and need not be a member.
    reply = request(obs, {"op": "unread_by", "id": 2, "room": "r", "seq": 10, "after": "a5", "limit": 1000})
    assert (reply["users"], reply["next"]) == ([u for u in sorted(cursors) if u > "a5"], None)
    reply = request(obs, {"op": "read_by", "id": 3, "room": "r", "seq": 0, "after": "zzz"})
    assert (reply["users"], reply["next"]) == ([], None)
    # `limit` 0 is taken as 1.
    reply = request(obs, {"op": "read_by", "id": 4, "room": "r", "seq": 0, "limit": 0})
    assert (reply["users"], reply["next"]) == (sorted(cursors)[:1], sorted(cursors)[0])
    bads: list[dict[str, Any]] = [{"limit": "ten"}, {"limit": -1}, {"after": 5}, {}]
    for bad in bads:
        frame = {"op": "read_by", "id": 5, "room": "r", "seq": 0, **bad}
        if not bad:
            del frame["seq"]
        reply = request(obs, frame)
        assert reply["op"] == "error" and reply["code"] == "bad_request", (bad, reply)


def test_a_member_that_leaves_is_no_longer_counted(connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    fill(alice, "r", 3)
    join(bob, "r")
    assert cursor(bob, "read", "r", 3) == (3, 3)
    assert request(bob, {"op": "leave", "id": 1, "room": "r"})["ok"]
    reply = request(alice, {"op": "receipts", "id": 2, "room": "r", "seq": 3})
    assert (reply["members"], reply["delivered"], reply["read"]) == (1, 1, 1)
    assert all_pages(alice, "read_by", "r", 0, None) == [["alice"]]
    assert "r" not in unread(bob)
    # Joining again starts from nothing: the cursors went with the membership.
    reply = join(bob, "r")
    assert (reply["delivered_seq"], reply["read_seq"]) == (0, 0)
    assert all_pages(alice, "unread_by", "r", 1, None) == [["bob"]]


# ----- unread, welcome, subscribe -----


def test_unread_lists_every_room_of_the_user_and_welcome_has_the_same(
    server: ServerProcess, tenant: str, connect: Connect
) -> None:
    alice, bob = connect("alice"), connect("bob")
    fill(alice, "a", 5)
    fill(alice, "b", 2)
    join(bob, "a")
    join(bob, "b")
    join(bob, "c")  # a room with no message
    join(bob, "gone")
    cursor(bob, "ack", "a", 5)
    cursor(bob, "read", "a", 3)
    fill(bob, "d", 1)  # a room bob only sent to
    assert request(bob, {"op": "leave", "id": 1, "room": "gone"})["ok"]
    expected = {
        "a": {"last_seq": 5, "read_seq": 3, "unread": 2},
        "b": {"last_seq": 2, "read_seq": 0, "unread": 2},
        "c": {"last_seq": 0, "read_seq": 0, "unread": 0},
        "d": {"last_seq": 1, "read_seq": 1, "unread": 0},
    }
    assert unread(bob) == expected
    assert unread(alice) == {
        "a": {"last_seq": 5, "read_seq": 5, "unread": 0},
        "b": {"last_seq": 2, "read_seq": 2, "unread": 0},
    }
    assert unread(connect("nobody")) == {}
    with ws_connect(server.url) as again:
        welcome = hello(again, server.token("bob", tenant))
        assert welcome["op"] == "welcome" and welcome["unread"] == expected
        # Messages since then count on the next call.
        fill(alice, "b", 3, prefix="more")
        assert unread(again)["b"] == {"last_seq": 5, "read_seq": 0, "unread": 5}


def test_subscribe_reply_carries_the_users_cursors(connect: Connect) -> None:
    alice, bob = connect("alice"), connect("bob")
    fill(alice, "r", 6)
    join(bob, "r")
    cursor(bob, "ack", "r", 4)
    cursor(bob, "read", "r", 2)
    reply = request(bob, {"op": "subscribe", "id": 7, "room": "r"})
    assert reply == {
        "op": "reply",
        "id": 7,
        "ok": True,
        "room": "r",
        "last_seq": 6,
        "first_seq": 1,
        "read_seq": 2,
        "delivered_seq": 4,
    }
    other = connect("bob")  # cursors are the user's, not the connection's
    reply = request(other, {"op": "subscribe", "id": 8, "room": "r", "since": 5})
    assert (reply["read_seq"], reply["delivered_seq"]) == (2, 4)
    reply = request(alice, {"op": "subscribe", "id": 9, "room": "r"})
    assert (reply["read_seq"], reply["delivered_seq"]) == (6, 6)


# ----- pushes -----


def receipts_of(frames: list[dict[str, Any]], room: str) -> list[list[dict[str, Any]]]:
    """The `updates` of the `receipts` pushes of `room` among `frames`."""
    return [f["updates"] for f in frames if f["op"] == "receipts" and f["room"] == room]


def test_receipts_push_coalesces_the_moves_of_an_interval(connect_pushes: Connect) -> None:
    obs, bob, carol = connect_pushes("obs"), connect_pushes("bob"), connect_pushes("carol")
    for ws in (obs, bob, carol):
        request(ws, {"op": "subscribe", "id": 1, "room": "r"})
    fill(obs, "r", 5)
    tick(obs, "obs", "r")  # a push just went: the next one is an interval away
    cursor(bob, "ack", "r", 2)
    cursor(bob, "read", "r", 1)
    cursor(bob, "ack", "r", 3)
    cursor(carol, "read", "r", 4)
    cursor(carol, "ack", "r", 1)  # moves nothing
    want = [{"user": "bob", "delivered": 3, "read": 1}, {"user": "carol", "delivered": 4, "read": 4}]
    for ws in (obs, bob, carol):  # every live subscriber gets it, the movers included
        frames = frames_until(ws, lambda f: f["op"] == "receipts")
        assert frames[-1] == {"op": "receipts", "room": "r", "updates": want}
        assert list(frames[-1]) == ["op", "room", "updates"]
    # Moves that change nothing are not pushed: the next push has only the ticker.
    cursor(bob, "read", "r", 1)
    cursor(carol, "ack", "r", 4)
    frames = tick(obs, "obs", "r")
    assert receipts_of(frames, "r") == [[{"user": "obs", "delivered": 7, "read": 7}]]


def test_receipts_push_goes_to_live_subscribers_only(connect_pushes: Connect) -> None:
    obs, bob, carol = connect_pushes("obs"), connect_pushes("bob"), connect_pushes("carol")
    for ws in (obs, bob, carol):
        request(ws, {"op": "subscribe", "id": 1, "room": "r"})
    request(carol, {"op": "subscribe", "id": 2, "room": "elsewhere"})
    request(carol, {"op": "unsubscribe", "id": 3, "room": "r"})
    fill(obs, "r", 3)
    cursor(bob, "read", "r", 2)
    frames = frames_until(obs, lambda f: f["op"] == "receipts" and f["room"] == "r")
    assert {"user": "bob", "delivered": 2, "read": 2} in frames[-1]["updates"]
    # Two flushes later carol has seen no push of "r" (frames of a flush arrive together).
    frames = tick(carol, "carol", "elsewhere") + tick(carol, "carol", "elsewhere")
    assert not [f for f in frames if f.get("room") == "r"], frames


def test_no_receipts_push_in_a_room_over_the_limit(connect_pushes: Connect) -> None:
    """`receipt_push_max_members` is 3 here: a room of 3 gets pushes, a room of 4 none."""
    obs = connect_pushes("obs")
    others = [connect_pushes(u) for u in ("m1", "m2", "m3")]
    request(obs, {"op": "subscribe", "id": 1, "room": "three"})
    request(obs, {"op": "subscribe", "id": 2, "room": "four"})
    fill(obs, "three", 2)
    fill(obs, "four", 2)
    for ws in others[:2]:
        join(ws, "three")
    for ws in others:
        join(ws, "four")
    tick(obs, "obs", "three")
    tick(obs, "obs", "three")
    for ws in others:
        cursor(ws, "read", "three" if ws is not others[2] else "four", 2)
        cursor(ws, "ack", "four", 2)
    frames = tick(obs, "obs", "three") + tick(obs, "obs", "three")
    assert not receipts_of(frames, "four"), frames
    three = [u for updates in receipts_of(frames, "three") for u in updates]
    assert {"user": "m1", "delivered": 2, "read": 2} in three and {"user": "m2", "delivered": 2, "read": 2} in three
    # Counts on request only.
    reply = request(obs, {"op": "receipts", "id": 3, "room": "four", "seq": 2})
    assert (reply["members"], reply["delivered"], reply["read"]) == (4, 4, 2)


# ----- restart -----


def snapshot(srv: ServerProcess, tenant: str, users: list[str], rooms: dict[str, int]) -> dict[str, Any]:
    """Everything the receipts ops tell about `rooms` (name → last seq), through fresh
    connections of `users`: `unread` and `welcome.unread` of each user, the cursors of a
    `subscribe` reply in each of its rooms, and `receipts`, `read_by` and `unread_by`
    pages at every seq."""
    out: dict[str, Any] = {}
    for user in users:
        with ws_connect(srv.url) as ws:
            welcome = hello(ws, srv.token(user, tenant))
            mine = unread(ws)
            assert welcome["unread"] == mine
            out[f"unread/{user}"] = mine
            for room in mine:
                reply = request(ws, {"op": "subscribe", "id": 1, "room": room})
                out[f"subscribe/{user}/{room}"] = reply
                for seq in range(rooms[room] + 2):
                    reply = request(ws, {"op": "receipts", "id": 2, "room": room, "seq": seq})
                    out[f"receipts/{room}/{seq}"] = reply
                    for op in ("read_by", "unread_by"):
                        out[f"{op}/{room}/{seq}"] = all_pages(ws, op, room, seq, 2)
    return out


def build_rooms(srv: ServerProcess, tenant: str) -> dict[str, Cursors]:
    """Members and cursors in two rooms, moved by ack, read, send, publish and leave."""
    with contextlib.ExitStack() as stack:
        connect = connector(srv, tenant, stack)
        alice, bob, carol, dave = (connect(u) for u in ("alice", "bob", "carol", "dave"))
        fill(alice, "r", 8)
        fill(bob, "s", 3)
        for ws in (bob, carol, dave):
            join(ws, "r")
        join(alice, "s")
        cursor(bob, "ack", "r", 7)
        cursor(bob, "read", "r", 4)
        cursor(carol, "read", "r", 8)
        cursor(dave, "ack", "r", 2)
        cursor(alice, "ack", "s", 2)
        assert publish(srv, tenant, "s", "erin", "p1") == 4
        assert request(dave, {"op": "leave", "id": 1, "room": "r"})["ok"]
        assert request(carol, {"op": "send", "id": 2, "room": "r", "cid": "c", "body": 1})["seq"] == 9
        cursor(bob, "ack", "r", 8)
        join(dave, "s")
        cursor(dave, "read", "s", 1)
    return {
        "r": {"alice": (8, 8), "bob": (8, 4), "carol": (9, 9)},
        "s": {"alice": (2, 0), "bob": (3, 3), "erin": (4, 4), "dave": (1, 1)},
    }


USERS = ["alice", "bob", "carol", "dave", "erin"]
LAST = {"r": 9, "s": 4}


def check_snapshot(snap: dict[str, Any], expected: dict[str, Cursors]) -> None:
    """The snapshot says what the rooms were built to be (so equality is not vacuous)."""
    for room, cursors in expected.items():
        for seq in range(LAST[room] + 2):
            receipts = snap[f"receipts/{room}/{seq}"]
            assert (receipts["members"], receipts["delivered"], receipts["read"]) == counts(cursors, seq)
            assert snap[f"read_by/{room}/{seq}"] == expected_pages([u for u, c in cursors.items() if c[1] >= seq], 2)
        for user, (delivered, read) in cursors.items():
            sub = snap[f"subscribe/{user}/{room}"]
            assert (sub["delivered_seq"], sub["read_seq"], sub["last_seq"]) == (delivered, read, LAST[room])
            assert snap[f"unread/{user}"][room] == {
                "last_seq": LAST[room],
                "read_seq": read,
                "unread": LAST[room] - read,
            }
    for user in USERS:
        assert set(snap[f"unread/{user}"]) == {room for room, cursors in expected.items() if user in cursors}


def test_cursors_and_counts_identical_after_a_restart(tmp_path: Path, tenant: str) -> None:
    # No flush before the shutdown: what is kept, the shutdown wrote.
    args = ("--receipt-interval-ms", "600000")
    srv = start_server(tmp_path, *args)
    try:
        expected = build_rooms(srv, tenant)
        before = snapshot(srv, tenant, USERS, LAST)
        check_snapshot(before, expected)
    finally:
        assert srv.stop(signal.SIGTERM) == 0
    srv = start_server(tmp_path, *args)
    try:
        after = snapshot(srv, tenant, USERS, LAST)
        assert after == before
    finally:
        assert srv.stop(signal.SIGTERM) == 0
    srv = start_server(tmp_path, *args)  # and once more: recovery wrote nothing that changes it
    try:
        assert snapshot(srv, tenant, USERS, LAST) == before
    finally:
        assert srv.stop(signal.SIGTERM) == 0


def test_flushed_cursors_survive_a_kill(tmp_path: Path, tenant: str) -> None:
    """Cursor moves reach the log at their room's next flush: once a flush of every room
    after them was seen and a later message acknowledged (the log is written in order),
    SIGKILL loses none."""
    args = ("--receipt-interval-ms", "100")
    srv = start_server(tmp_path, *args)
    try:
        expected = build_rooms(srv, tenant)
        with ws_connect(srv.url) as clock:
            hello(clock, srv.token("clock", tenant))
            # Rooms are flushed in slots by room id: one clock room per slot (ids follow
            # creation order), each ticked, shows a flush of every slot after the moves.
            for slot in range(RECEIPT_SLOTS):
                request(clock, {"op": "subscribe", "id": 1, "room": f"clock-{slot}"})
                tick(clock, "clock", f"clock-{slot}")
            assert request(clock, {"op": "send", "id": 2, "room": "clock-0", "cid": "x", "body": 0})["ok"]
        before = snapshot(srv, tenant, USERS, LAST)
        check_snapshot(before, expected)
    finally:
        srv.stop(signal.SIGKILL)
    srv = start_server(tmp_path, *args)
    try:
        assert snapshot(srv, tenant, USERS, LAST) == before
    finally:
        assert srv.stop(signal.SIGTERM) == 0


async def test_a_publish_acknowledged_during_shutdown_keeps_its_senders_cursor(tmp_path: Path, tenant: str) -> None:
    """A clean shutdown writes the cursors; a message acknowledged while the server drains
    (a reader that never reads keeps the drain open) is a send like any other: after the
    restart its sender has read it."""
    args = ("--receipt-interval-ms", "600000")
    srv = start_server(tmp_path, *args)
    acked: list[int] = []
    saw_draining = False
    clients: list[WsClient] = []
    try:
        with trio.fail_after(60):
            slow = await WsClient.connect(srv.host, srv.port, rcvbuf=4096)
            flooder = await WsClient.connect(srv.host, srv.port)
            clients += [slow, flooder]
            await slow.hello(token("slow", tenant))
            assert (await slow.request({"op": "subscribe", "room": "flood"}))["ok"]
            await flooder.hello(token("flooder", tenant))
            for i in range(50):  # about 3 MB queued to `slow`, under its 4 MiB limit
                assert (await flooder.request({"op": "send", "room": "flood", "cid": f"f{i}", "body": "x" * 60_000}))[
                    "ok"
                ]
            acked.append(await trio.to_thread.run_sync(publish, srv, tenant, "r", "bot", "b0"))
            srv.proc.send_signal(signal.SIGTERM)
            while srv.proc.poll() is None:
                saw_draining = saw_draining or await trio.to_thread.run_sync(draining, srv)
                try:
                    acked.append(await trio.to_thread.run_sync(publish, srv, tenant, "r", "bot", f"b{len(acked)}"))
                except urllib.error.HTTPError as e:  # 503 while draining: publish elsewhere
                    e.close()
                    assert e.code == 503
                    # `/healthz` is answered by the core: it may have said 200 just before
                    # the server began draining; it says so now.
                    saw_draining = saw_draining or await trio.to_thread.run_sync(draining, srv)
                    break
                except OSError:  # refused: the server is going
                    break
                await trio.sleep(0.05)
        # The shutdown ends by itself (a second SIGTERM would cut it short).
        await trio.to_thread.run_sync(functools.partial(srv.proc.wait, timeout=30))
    finally:
        for ws in clients:
            await ws.aclose()
        assert await trio.to_thread.run_sync(srv.stop) == 0
    assert saw_draining, "the drain was over before a publish could land in it"
    srv = start_server(tmp_path, *args)
    try:
        with ws_connect(srv.url) as bot:
            welcome = hello(bot, srv.token("bot", tenant))
            assert welcome["unread"]["r"]["last_seq"] >= max(acked)
            assert welcome["unread"]["r"]["read_seq"] >= max(acked), (acked, welcome["unread"])
    finally:
        assert srv.stop() == 0


def draining(srv: ServerProcess) -> bool:
    """Whether `/healthz` says the server is draining."""
    try:
        with urllib.request.urlopen(srv.http + "/healthz", timeout=5):
            return False
    except urllib.error.HTTPError as e:
        e.close()
        return e.code == 503
    except OSError:
        return False
