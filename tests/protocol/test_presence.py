"""Presence section of the protocol over real sockets: the `presence` query, and the
coalesced `presence` pushes (online, offline, several connections of one user, leave,
changes undone within an interval, rooms over the push limit)."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from durability._harness import WsClient, token
from websockets.sync.client import ClientConnection

from conftest import ServerProcess, start_server
from wsutil import frames_until, hello, metric, request, tick, wait_until, ws_connect

#: Coalescing interval of the `pushes` server: long enough that a connection opened and
#: closed right after a push is gone before the next one.
PUSH_INTERVAL_MS = 500
#: Largest room of the `pushes` server that gets pushes.
PUSH_MAX_MEMBERS = 3

Connect = Callable[[str], ClientConnection]


@pytest.fixture(scope="module")
def pushes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own: its connection count tells when a close took effect."""
    srv = start_server(
        tmp_path_factory.mktemp("presence"),
        "--receipt-interval-ms",
        str(PUSH_INTERVAL_MS),
        "--receipt-push-max-members",
        str(PUSH_MAX_MEMBERS),
    )
    yield srv
    assert srv.stop() == 0


def connections(srv: ServerProcess) -> int:
    return int(metric(srv.http, "rushhour_connections"))


def settle(srv: ServerProcess, n: int) -> None:
    """Waits until the server has exactly `n` connections: the closes before took effect."""
    wait_until(lambda: connections(srv) == n, what=f"{n} connections")


@pytest.fixture
def connect(pushes: ServerProcess, tenant: str) -> Iterator[Connect]:
    """Opens sessions on the `pushes` server (which has no other connection meanwhile)."""
    settle(pushes, 0)
    with contextlib.ExitStack() as stack:

        def open_session(user: str) -> ClientConnection:
            ws = stack.enter_context(ws_connect(pushes.url))
            assert hello(ws, pushes.token(user, tenant))["op"] == "welcome"
            return ws

        yield open_session


def presence(ws: ClientConnection, room: str) -> dict[str, Any]:
    reply = request(ws, {"op": "presence", "id": 9, "room": room})
    assert list(reply) == ["op", "id", "ok", "online", "count"] and reply["ok"] is True, reply
    return reply


def pushed(frames: list[dict[str, Any]], room: str) -> list[dict[str, Any]]:
    """The `presence` pushes of `room` among `frames`."""
    return [f for f in frames if f["op"] == "presence" and f["room"] == room]


def two_flushes(ws: ClientConnection, user: str, room: str) -> list[dict[str, Any]]:
    """Every frame up to two flushes from now: all of the next flush's pushes included."""
    return tick(ws, user, room) + tick(ws, user, room)


def next_presence(ws: ClientConnection, room: str) -> dict[str, Any]:
    return frames_until(ws, lambda f: f["op"] == "presence" and f["room"] == room)[-1]


def member(ws: ClientConnection, room: str) -> None:
    """Subscribes then unsubscribes: a member that gets no pushes of the room."""
    assert request(ws, {"op": "subscribe", "id": 1, "room": room})["ok"]
    assert request(ws, {"op": "unsubscribe", "id": 2, "room": room})["ok"]


# ----- the query -----


def test_presence_lists_members_with_an_open_connection(server: ServerProcess, tenant: str) -> None:
    def session(user: str) -> ClientConnection:
        ws = stack.enter_context(ws_connect(server.url))
        assert hello(ws, server.token(user, tenant))["op"] == "welcome"
        return ws

    with contextlib.ExitStack() as stack:
        alice, bob, bob2, dave, erin = (session(u) for u in ("alice", "bob", "bob", "Dave", "erin"))
        request(alice, {"op": "subscribe", "id": 1, "room": "r"})
        request(bob, {"op": "send", "id": 1, "room": "r", "cid": "b", "body": 1})  # a member by sending
        member(erin, "r")
        member(dave, "elsewhere")  # online, but no member of "r"
        req = urllib.request.Request(
            server.http + "/api/v1/publish",
            data=json.dumps({"tenant": tenant, "room": "r", "from": "carol", "cid": "c", "body": 1}).encode(),
            headers={"Authorization": f"Bearer {server.api_key}"},
        )
        with urllib.request.urlopen(req, timeout=10):  # carol: a member that never connected
            pass
        # Users, not connections: bob's two count once.
        assert presence(alice, "r") == {
            "op": "reply",
            "id": 9,
            "ok": True,
            "online": ["alice", "bob", "erin"],
            "count": 3,
        }
        erin.close()
        wait_until(lambda: presence(alice, "r")["online"] == ["alice", "bob"], what="erin offline")
        bob.close()
        dave.close()
        bob2.close()
        wait_until(lambda: presence(alice, "r")["online"] == ["alice"], what="bob offline")
        assert presence(alice, "r")["count"] == 1
        assert presence(alice, "never-used") == {"op": "reply", "id": 9, "ok": True, "online": [], "count": 0}
        reply = request(alice, {"op": "presence", "id": 10, "room": "bad room"})
        assert reply["op"] == "error" and reply["code"] == "bad_request"


async def test_presence_lists_at_most_1000_and_counts_all(server: ServerProcess, tenant: str) -> None:
    users = [f"u{i:04}" for i in range(1001)]
    clients: list[WsClient] = []
    limiter = trio.CapacityLimiter(64)

    async def join(user: str) -> None:
        async with limiter:
            ws = await WsClient.connect(server.host, server.port)
            clients.append(ws)
            await ws.hello(token(user, tenant))
            reply = await ws.request({"op": "subscribe", "room": "crowd"})
            assert reply["ok"], reply

    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for user in users:
                    nursery.start_soon(join, user)
            reply = await clients[0].request({"op": "presence", "room": "crowd"})
            assert reply["online"] == users[:1000] and reply["count"] == 1001
    finally:
        with trio.move_on_after(30) as cleanup:
            cleanup.shield = True
            async with trio.open_nursery() as nursery:
                for ws in clients:
                    nursery.start_soon(ws.aclose)


# ----- pushes -----


def test_online_and_offline_are_pushed(connect: Connect, pushes: ServerProcess) -> None:
    obs = connect("obs")
    request(obs, {"op": "subscribe", "id": 1, "room": "r"})
    frames = two_flushes(obs, "obs", "r")
    # Joining while online is coming online there.
    assert pushed(frames, "r") == [{"op": "presence", "room": "r", "online": ["obs"], "offline": []}]
    bob = connect("bob")
    request(bob, {"op": "subscribe", "id": 1, "room": "r"})
    push = next_presence(obs, "r")
    assert push == {"op": "presence", "room": "r", "online": ["bob"], "offline": []}
    assert list(push) == ["op", "room", "online", "offline"]
    assert next_presence(bob, "r") == push  # every live subscriber gets it
    bob.close()
    assert next_presence(obs, "r") == {"op": "presence", "room": "r", "online": [], "offline": ["bob"]}
    assert presence(obs, "r")["online"] == ["obs"]


def test_a_user_is_online_until_its_last_connection_closes(connect: Connect, pushes: ServerProcess) -> None:
    obs, bob = connect("obs"), connect("bob")
    request(obs, {"op": "subscribe", "id": 1, "room": "r"})
    request(bob, {"op": "subscribe", "id": 1, "room": "r"})
    frames = two_flushes(obs, "obs", "r")
    assert [p["online"] for p in pushed(frames, "r")] in (
        [["bob", "obs"]],
        [["obs"], ["bob"]],
    )
    bob2 = connect("bob")  # a second connection: bob was online already
    frames = two_flushes(obs, "obs", "r")
    assert pushed(frames, "r") == []
    bob.close()
    settle(pushes, 2)  # obs and bob2: the close took effect
    frames = two_flushes(obs, "obs", "r")
    assert pushed(frames, "r") == []
    assert presence(obs, "r")["online"] == ["bob", "obs"]
    bob2.close()
    assert next_presence(obs, "r") == {"op": "presence", "room": "r", "online": [], "offline": ["bob"]}


def test_coming_online_is_pushed_in_every_room_of_the_user(connect: Connect, pushes: ServerProcess) -> None:
    obs, bob = connect("obs"), connect("bob")
    for room in ("r1", "r2"):
        request(obs, {"op": "subscribe", "id": 1, "room": room})
        member(bob, room)
    bob.close()
    settle(pushes, 1)
    two_flushes(obs, "obs", "r1")
    connect("bob")  # a session, and nothing else
    frames = two_flushes(obs, "obs", "r1")
    for room in ("r1", "r2"):
        assert pushed(frames, room) == [{"op": "presence", "room": room, "online": ["bob"], "offline": []}]


def test_leave_is_going_offline_there(connect: Connect, pushes: ServerProcess) -> None:
    obs, bob = connect("obs"), connect("bob")
    request(obs, {"op": "subscribe", "id": 1, "room": "r"})
    request(bob, {"op": "subscribe", "id": 1, "room": "r"})
    request(bob, {"op": "subscribe", "id": 2, "room": "other"})
    two_flushes(obs, "obs", "r")
    assert request(bob, {"op": "leave", "id": 3, "room": "r"})["ok"]
    assert next_presence(obs, "r") == {"op": "presence", "room": "r", "online": [], "offline": ["bob"]}
    assert presence(obs, "r")["online"] == ["obs"]  # bob is connected, but no member
    request(bob, {"op": "subscribe", "id": 4, "room": "r"})
    assert next_presence(obs, "r") == {"op": "presence", "room": "r", "online": ["bob"], "offline": []}


def test_a_change_undone_within_the_interval_is_not_pushed(connect: Connect, pushes: ServerProcess) -> None:
    obs, bob = connect("obs"), connect("bob")
    request(obs, {"op": "subscribe", "id": 1, "room": "r"})
    member(bob, "r")
    bob.close()
    settle(pushes, 1)
    two_flushes(obs, "obs", "r")
    # Right after a push, bob comes online and goes offline again.
    tick(obs, "obs", "r")
    connect("bob").close()
    settle(pushes, 1)
    frames = two_flushes(obs, "obs", "r")
    assert pushed(frames, "r") == []
    # And an online member leaving and joining again.
    bob = connect("bob")
    request(bob, {"op": "subscribe", "id": 1, "room": "r"})
    assert next_presence(obs, "r")["online"] == ["bob"]
    tick(obs, "obs", "r")
    assert request(bob, {"op": "leave", "id": 2, "room": "r"})["ok"]
    assert request(bob, {"op": "subscribe", "id": 3, "room": "r"})["ok"]
    frames = two_flushes(obs, "obs", "r")
    assert pushed(frames, "r") == []


def test_no_presence_push_in_a_room_over_the_limit(connect: Connect, pushes: ServerProcess) -> None:
    """`receipt_push_max_members` is 3 here: a room of 3 gets presence pushes, one of 4 none."""
    obs, bob, m1, m2 = (connect(u) for u in ("obs", "bob", "m1", "m2"))
    for room in ("three", "four"):
        request(obs, {"op": "subscribe", "id": 1, "room": room})
        member(bob, room)
        member(m1, room)
    member(m2, "four")
    bob.close()
    settle(pushes, 3)
    two_flushes(obs, "obs", "three")
    bob = connect("bob")
    frames = two_flushes(obs, "obs", "three")
    assert pushed(frames, "three") == [{"op": "presence", "room": "three", "online": ["bob"], "offline": []}]
    assert pushed(frames, "four") == []
    assert presence(obs, "four") == {
        "op": "reply",
        "id": 9,
        "ok": True,
        "online": ["bob", "m1", "m2", "obs"],
        "count": 4,
    }
    m2.close()
    bob.close()
    settle(pushes, 2)
    frames = two_flushes(obs, "obs", "three")
    assert pushed(frames, "three") == [{"op": "presence", "room": "three", "online": [], "offline": ["bob"]}]
    assert pushed(frames, "four") == []
    assert presence(obs, "four")["online"] == ["m1", "obs"]
