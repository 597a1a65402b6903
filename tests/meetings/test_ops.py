"""Meetings ops over real sockets: create, join, leave, signal, host controls, admission."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess, start_server
from meetings._peer import Peer, meeting
from wsutil import metric


@pytest.fixture
def peers(server: ServerProcess, tenant: str) -> Iterator[dict[str, Peer]]:
    opened: dict[str, Peer] = {}

    class Opener(dict[str, Peer]):
        def __missing__(self, user: str) -> Peer:
            opened[user] = self[user] = Peer(server, user, tenant, name=user.title())
            return self[user]

    yield Opener()
    for p in opened.values():
        p.close()


def test_create_reply_and_idempotent_key(peers: dict[str, Peer]) -> None:
    alice = peers["alice"]
    first = alice.ok("meeting.create", title="Stand-up", key="standup-1", max_participants=50)
    assert first["meeting"].startswith("m-") and first["host"] == "alice" and first["created"] is True
    again = alice.ok("meeting.create", title="Stand-up", key="standup-1")
    assert again["meeting"] == first["meeting"] and again["created"] is False
    # Another user re-creating by key gets the same meeting; its host stays alice.
    assert peers["bob"].ok("meeting.create", key="standup-1")["host"] == "alice"
    other = alice.ok("meeting.create", title="Stand-up")
    assert other["meeting"] != first["meeting"]


@pytest.mark.parametrize(
    "fields",
    [
        {"title": 5},
        {"key": ""},
        {"key": "k" * 129},
        {"mode": "webinar"},
        {"max_participants": 0},
        {"max_participants": True},
        {"max_participants": 100_001},
    ],
)
def test_create_validation(peers: dict[str, Peer], fields: dict[str, object]) -> None:
    peers["alice"].err("meeting.create", "bad_request", **fields)


def test_join_roster_epoch_and_joined_event(peers: dict[str, Peer]) -> None:
    alice, bob = peers["alice"], peers["bob"]
    mid = alice.ok("meeting.create", title="x")["meeting"]
    a = alice.ok("meeting.join", meeting=mid)
    assert a["role"] == "host" and a["participant"].startswith("p-") and a["seat"]
    assert a["roster"] == [
        {"participant": a["participant"], "user": "alice", "name": "Alice", "role": "host",
         "state": "connected", "muted": False}
    ]  # fmt: skip
    b = bob.ok("meeting.join", meeting=mid)
    assert b["role"] == "participant" and b["epoch"] > a["epoch"]
    assert [r["user"] for r in b["roster"]] == ["alice", "bob"]
    joined = alice.event("joined")
    assert joined["participant"] == b["roster"][1] and joined["epoch"] == b["epoch"]
    assert joined["meeting"] == mid
    # Joining again on the same connection is idempotent and fences nobody.
    again = bob.ok("meeting.join", meeting=mid)
    assert again["participant"] == b["participant"] and again["epoch"] == b["epoch"]
    assert alice.quiet(0.2) == []


def test_join_errors_and_tenant_isolation(server: ServerProcess, peers: dict[str, Peer]) -> None:
    alice = peers["alice"]
    alice.err("meeting.join", "not_found", meeting="m-nope")
    alice.err("meeting.join", "bad_request")
    alice.err("meeting.join", "bad_request", meeting="bad id!")
    mid = alice.ok("meeting.create")["meeting"]
    stranger = Peer(server, "alice", "other-tenant-" + mid[-6:])
    try:
        stranger.err("meeting.join", "not_found", meeting=mid)
    finally:
        stranger.close()
    alice.err("meeting.nope", "bad_request")


def test_leave(peers: dict[str, Peer]) -> None:
    alice, bob = peers["alice"], peers["bob"]
    mid = meeting(alice)
    b = bob.ok("meeting.join", meeting=mid)
    bob.ok("meeting.leave", meeting=mid)
    left = alice.event("left", pid=b["participant"])
    assert left["participant"]["user"] == "bob"
    bob.err("meeting.leave", "not_found", meeting=mid)
    bob.err("meeting.join", "not_found", meeting=mid, seat=b["seat"])  # that seat is gone
    assert bob.ok("meeting.join", meeting=mid)["participant"] != b["participant"]


def test_signal_relay_in_order(server: ServerProcess, peers: dict[str, Peer]) -> None:
    """Signals with an id are answered by the session layer, those without are relayed
    by the core between connected seats: one order either way."""
    alice, bob = peers["alice"], peers["bob"]
    mid = meeting(alice)
    pa = alice.ok("meeting.join", meeting=mid)["participant"]
    pb = bob.ok("meeting.join", meeting=mid)["participant"]
    relayed = metric(server.http, "rushhour_signals_relayed_total")
    sdp = {"type": "offer", "sdp": "v=0\r\n" + "a" * 1000, "ünï": [1, 2.5, None]}
    alice.ok("signal", meeting=mid, to=pb, data=sdp)
    for i in range(200):
        alice.send({"op": "signal", "meeting": mid, "to": pb, "data": {"i": i}})
    got = bob.signal()
    assert got == {"op": "signal", "meeting": mid, "from": pa, "data": sdp}
    assert [bob.signal()["data"]["i"] for _ in range(200)] == list(range(200))
    assert metric(server.http, "rushhour_signals_relayed_total") >= relayed + 200
    bob.ok("signal", meeting=mid, to=pa, data="answer")
    assert alice.signal()["data"] == "answer"


def test_signal_errors(peers: dict[str, Peer]) -> None:
    alice, bob, carol = peers["alice"], peers["bob"], peers["carol"]
    mid = meeting(alice)
    pa = alice.ok("meeting.join", meeting=mid)["participant"]
    pb = bob.ok("meeting.join", meeting=mid)["participant"]
    alice.err("signal", "too_large", meeting=mid, to=pb, data="x" * (64 << 10))
    alice.ok("signal", meeting=mid, to=pb, data="x" * ((64 << 10) - 2))  # exactly 64 KiB as JSON
    alice.err("signal", "not_found", meeting=mid, to="p-nobody", data=1)
    alice.err("signal", "bad_request", meeting=mid, to=pb)
    alice.err("signal", "bad_request", meeting=mid, to=pa, data=1)
    carol.err("signal", "forbidden", meeting=mid, to=pb, data=1)  # not in the meeting
    # Without an id a failure is the same error without id.
    carol.send({"op": "signal", "meeting": mid, "to": pb, "data": 1})
    frame = carol.wait(lambda f: f["op"] == "error")
    assert "id" not in frame and frame["code"] == "forbidden"


def test_mute(peers: dict[str, Peer]) -> None:
    alice, bob, carol = peers["alice"], peers["bob"], peers["carol"]
    mid = meeting(alice)
    pb = bob.ok("meeting.join", meeting=mid)["participant"]
    pc = carol.ok("meeting.join", meeting=mid)["participant"]
    alice.ok("meeting.mute", meeting=mid, participant=pb)
    for peer in (alice, bob, carol):
        ev = peer.event("muted", pid=pb)
        assert ev["participant"]["muted"] is True
    carol.err("meeting.mute", "forbidden", meeting=mid, participant=pb)  # not the host
    carol.ok("meeting.mute", meeting=mid, participant=pc)  # itself: allowed
    assert bob.event("muted", pid=pc)["participant"]["muted"] is True
    bob.ok("meeting.mute", meeting=mid, participant=pb, muted=False)
    assert alice.event("muted", pid=pb)["participant"]["muted"] is False
    alice.err("meeting.mute", "bad_request", meeting=mid, participant=pb, muted="yes")
    roster = alice.ok("meeting.join", meeting=mid)["roster"]
    assert {r["participant"]: r["muted"] for r in roster}[pc] is True


def test_remove_cannot_rejoin(peers: dict[str, Peer]) -> None:
    alice, bob, carol = peers["alice"], peers["bob"], peers["carol"]
    mid = meeting(alice)
    b = bob.ok("meeting.join", meeting=mid)
    carol.ok("meeting.join", meeting=mid)
    carol.err("meeting.remove", "forbidden", meeting=mid, participant=b["participant"])
    alice.ok("meeting.remove", meeting=mid, participant=b["participant"])
    assert bob.event("removed", pid=b["participant"])["participant"]["user"] == "bob"
    assert carol.event("removed", pid=b["participant"])
    bob.err("signal", "forbidden", meeting=mid, to=b["participant"], data=1)
    bob.err("meeting.join", "forbidden", meeting=mid, seat=b["seat"])
    bob.err("meeting.join", "forbidden", meeting=mid)
    bob.reconnect()
    bob.err("meeting.join", "forbidden", meeting=mid, seat=b["seat"])
    own = alice.ok("meeting.join", meeting=mid)["participant"]
    alice.err("meeting.remove", "bad_request", meeting=mid, participant=own)


def test_transfer_host(peers: dict[str, Peer]) -> None:
    alice, bob = peers["alice"], peers["bob"]
    mid = meeting(alice, key="transfer")
    pa = alice.ok("meeting.join", meeting=mid)["participant"]
    pb = bob.ok("meeting.join", meeting=mid)["participant"]
    bob.err("meeting.transfer_host", "forbidden", meeting=mid, participant=pb)
    alice.ok("meeting.transfer_host", meeting=mid, participant=pb)
    for peer in (alice, bob):
        ev = peer.event("host_changed")
        assert ev["participant"]["participant"] == pb and ev["participant"]["role"] == "host"
        assert ev["previous"]["participant"] == pa and ev["previous"]["role"] == "participant"
    alice.err("meeting.end", "forbidden", meeting=mid)
    assert peers["carol"].ok("meeting.create", key="transfer")["host"] == "bob"
    roles = {r["user"]: r["role"] for r in bob.ok("meeting.join", meeting=mid)["roster"]}
    assert roles == {"alice": "participant", "bob": "host"}


def test_end(peers: dict[str, Peer]) -> None:
    alice, bob = peers["alice"], peers["bob"]
    mid = alice.ok("meeting.create", key="end-me")["meeting"]
    alice.ok("meeting.join", meeting=mid)
    bob.ok("meeting.join", meeting=mid)
    bob.err("meeting.end", "forbidden", meeting=mid)
    alice.ok("meeting.end", meeting=mid)
    assert bob.event("ended")["meeting"] == mid
    bob.err("meeting.join", "not_found", meeting=mid)
    # The key is free again: a new meeting.
    assert alice.ok("meeting.create", key="end-me")["meeting"] != mid


def test_tenant_admin_moderates(server: ServerProcess, tenant: str, peers: dict[str, Peer]) -> None:
    alice, bob = peers["alice"], peers["bob"]
    mid = meeting(alice)
    pb = bob.ok("meeting.join", meeting=mid)["participant"]
    admin = Peer(server, "root", tenant, role="admin")
    try:
        admin.ok("meeting.mute", meeting=mid, participant=pb)  # without a seat of its own
        assert bob.event("muted", pid=pb)
        admin.ok("meeting.transfer_host", meeting=mid, participant=pb)
        assert alice.event("host_changed")["participant"]["participant"] == pb
        admin.ok("meeting.end", meeting=mid)
        assert bob.event("ended")
    finally:
        admin.close()


def test_max_participants_conflict(peers: dict[str, Peer]) -> None:
    alice = peers["alice"]
    mid = meeting(alice, max_participants=2)
    b = peers["bob"].ok("meeting.join", meeting=mid)
    peers["carol"].err("meeting.join", "conflict", meeting=mid)
    # A held seat still counts; rejoining it does not need room.
    peers["bob"].reconnect()
    peers["carol"].err("meeting.join", "conflict", meeting=mid)
    assert peers["bob"].ok("meeting.join", meeting=mid, seat=b["seat"])["participant"] == b["participant"]


def test_join_rate_overloaded(tmp_path: Path, tenant: str) -> None:
    srv = start_server(tmp_path, "--meeting-join-rate", "2", "--meeting-join-burst", "3")
    try:
        alice = Peer(srv, "alice", tenant)
        mid = alice.ok("meeting.create")["meeting"]
        for i in range(20):
            alice.send({"op": "meeting.join", "id": 100 + i, "meeting": mid})
        answers = [alice.wait(lambda f, i=i: f.get("id") == 100 + i) for i in range(20)]
        refused = [a for a in answers if a["op"] == "error"]
        assert refused and all(a["code"] == "overloaded" and a["retry_after_ms"] > 0 for a in refused)
        assert answers[0]["op"] == "reply"
        counted = metric(srv.http, 'rushhour_meeting_joins_refused_total{reason="tenant"}')
        assert counted == len(refused)
        alice.close()
    finally:
        assert srv.stop() == 0
