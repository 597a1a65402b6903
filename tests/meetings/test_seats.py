"""Seats over real sockets: reconnecting, rejoin with the seat token, held signals,
fencing (`replaced`), grace expiry, host migration, and the incident scenarios."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ServerProcess, start_server
from meetings._peer import Peer, meeting

#: Grace time of the `fast` server: short, so that expiry is seen within a test.
FAST_GRACE_MS = 300


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(tmp_path_factory.mktemp("fast"), "--seat-grace-ms", str(FAST_GRACE_MS))
    yield srv
    assert srv.stop() == 0


def test_reconnecting_rejoined_same_seat(server: ServerProcess, tenant: str) -> None:
    alice, bob = Peer(server, "alice", tenant), Peer(server, "bob", tenant)
    mid = meeting(alice)
    b = bob.ok("meeting.join", meeting=mid)
    bob.reconnect()  # a normal close counts as a drop too
    ev = alice.event("reconnecting", pid=b["participant"])
    assert ev["participant"]["state"] == "reconnecting"
    again = bob.ok("meeting.join", meeting=mid, seat=b["seat"])
    assert (again["participant"], again["role"]) == (b["participant"], "participant")
    assert again["epoch"] > ev["epoch"]
    assert {r["participant"]: r["state"] for r in again["roster"]}[b["participant"]] == "connected"
    assert alice.event("rejoined", pid=b["participant"])["participant"]["state"] == "connected"
    # The host seat too keeps its role.
    a = alice.ok("meeting.join", meeting=mid)
    alice.reconnect()
    assert alice.ok("meeting.join", meeting=mid, seat=a["seat"])["role"] == "host"
    alice.close()
    bob.close()


def test_seat_token_checks(server: ServerProcess, tenant: str) -> None:
    alice, bob = Peer(server, "alice", tenant), Peer(server, "bob", tenant)
    mid, other = meeting(alice), meeting(alice)
    b = bob.ok("meeting.join", meeting=mid)
    bob.err("meeting.join", "forbidden", meeting=other, seat=b["seat"])  # another meeting
    alice.err("meeting.join", "forbidden", meeting=mid, seat=b["seat"])  # another user
    body, mac = b["seat"].split(".")
    bob.err("meeting.join", "forbidden", meeting=mid, seat=body + "." + mac[::-1])
    bob.err("meeting.join", "forbidden", meeting=mid, seat="garbage")
    alice.close()
    bob.close()


def test_replaced_newest_wins(server: ServerProcess, tenant: str) -> None:
    alice, bob = Peer(server, "alice", tenant), Peer(server, "bob", tenant)
    mid = meeting(alice)
    pa = alice.ok("meeting.join", meeting=mid)["participant"]
    b = bob.ok("meeting.join", meeting=mid)
    bob2 = Peer(server, "bob", tenant)
    assert bob2.ok("meeting.join", meeting=mid, seat=b["seat"])["participant"] == b["participant"]
    assert bob.event("replaced", pid=b["participant"])
    assert alice.event("rejoined", pid=b["participant"])
    alice.ok("signal", meeting=mid, to=b["participant"], data="to-new")
    assert bob2.signal()["data"] == "to-new"
    bob.err("signal", "forbidden", meeting=mid, to=pa, data=1)  # fenced out
    assert [f for f in bob.quiet(0.2) if f["op"] == "signal"] == []
    # The fenced connection closing does not disturb the seat.
    bob.close()
    alice.ok("signal", meeting=mid, to=b["participant"], data="still")
    assert bob2.signal()["data"] == "still"
    roster = alice.ok("meeting.join", meeting=mid)["roster"]
    assert [r["state"] for r in roster] == ["connected", "connected"]
    alice.close()
    bob2.close()


def test_held_signals_bounded(server: ServerProcess, tenant: str) -> None:
    alice, bob = Peer(server, "alice", tenant), Peer(server, "bob", tenant)
    mid = meeting(alice)
    b = bob.ok("meeting.join", meeting=mid)
    bob.close()
    alice.event("reconnecting", pid=b["participant"])
    for i in range(256):
        alice.send({"op": "signal", "meeting": mid, "to": b["participant"], "data": i})
    full = alice.err("signal", "overloaded", meeting=mid, to=b["participant"], data="one too many")
    assert full["retry_after_ms"] > 0
    bob = Peer(server, "bob", tenant)
    bob.ok("meeting.join", meeting=mid, seat=b["seat"])
    assert [bob.signal()["data"] for _ in range(256)] == list(range(256))
    alice.close()
    bob.close()


def test_grace_expiry_left_and_host_migration(fast: ServerProcess, tenant: str) -> None:
    """Scenario (c): the host's connection dies; after the grace time the host role
    moves to the participant present longest and the meeting goes on."""
    alice, bob, carol = (Peer(fast, u, tenant) for u in ("alice", "bob", "carol"))
    mid = meeting(alice, key="daily")
    a = alice.ok("meeting.join", meeting=mid)
    pb = bob.ok("meeting.join", meeting=mid)["participant"]
    pc = carol.ok("meeting.join", meeting=mid)["participant"]
    alice.close()
    assert bob.event("reconnecting", pid=a["participant"])
    assert bob.event("left", pid=a["participant"])
    changed = bob.event("host_changed")
    assert changed["participant"]["participant"] == pb and changed["participant"]["role"] == "host"
    assert carol.event("host_changed")["participant"]["participant"] == pb
    # The meeting continues: signals flow, the new host moderates, the old seat is gone.
    carol.ok("signal", meeting=mid, to=pb, data="hi")
    assert bob.signal()["data"] == "hi"
    bob.ok("meeting.mute", meeting=mid, participant=pc)
    alice = Peer(fast, "alice", tenant)
    alice.err("meeting.join", "not_found", meeting=mid, seat=a["seat"])
    assert alice.ok("meeting.create", key="daily")["meeting"] == mid
    assert alice.ok("meeting.join", meeting=mid)["role"] == "participant"
    for p in (alice, bob, carol):
        p.close()


def test_empty_meeting_ends_after_grace(fast: ServerProcess, tenant: str) -> None:
    alice = Peer(fast, "alice", tenant)
    mid = meeting(alice, key="short")
    alice.ok("meeting.leave", meeting=mid)
    # Bounded poll (re-creating by key changes nothing while the meeting exists).
    for _ in range(200):
        again = alice.ok("meeting.create", key="short")
        if again["meeting"] != mid:
            break
        alice.quiet(0.05)
    else:
        pytest.fail("an empty meeting did not end")
    assert again["created"] is True
    alice.err("meeting.join", "not_found", meeting=mid)
    alice.close()


def test_scenario_a_twenty_drops(server: ServerProcess, tenant: str) -> None:
    """(a) a participant whose connection drops 20 times in a row rejoins every time
    with the same participant id and receives its held signals in order."""
    alice, bob = Peer(server, "alice", tenant), Peer(server, "bob", tenant)
    mid = meeting(alice)
    b = bob.ok("meeting.join", meeting=mid)
    n = 0
    for _ in range(20):
        bob.close()
        alice.event("reconnecting", pid=b["participant"])
        sent = list(range(n, n + 5))
        n += 5
        for i in sent:
            alice.send({"op": "signal", "meeting": mid, "to": b["participant"], "data": {"i": i}})
        bob = Peer(server, "bob", tenant)
        again = bob.ok("meeting.join", meeting=mid, seat=b["seat"])
        assert again["participant"] == b["participant"] and again["role"] == "participant"
        assert [bob.signal()["data"]["i"] for _ in sent] == sent
        alice.event("rejoined", pid=b["participant"])
        b = again  # the newest token works as well as the first
    alice.close()
    bob.close()


def test_scenario_b_recreate_while_ten_in_it(server: ServerProcess, tenant: str) -> None:
    """(b) the host re-creates the meeting with the same key while 10 are in it."""
    host = Peer(server, "host", tenant)
    mid = meeting(host, key="all-hands")
    peers = [Peer(server, f"u{i}", tenant) for i in range(10)]
    pids = [p.ok("meeting.join", meeting=mid)["participant"] for p in peers]
    for _ in range(3):
        again = host.ok("meeting.create", title="again", key="all-hands")
        assert again == {**again, "meeting": mid, "host": "host", "created": False}
    roster = host.ok("meeting.join", meeting=mid)["roster"]
    assert len(roster) == 11 and all(r["state"] == "connected" for r in roster)
    for p in peers:
        frames = p.quiet(0.0)
        assert not [f for f in frames if f.get("event") in ("left", "ended", "replaced")]
    host.ok("signal", meeting=mid, to=pids[9], data="still here")
    assert peers[9].signal()["data"] == "still here"
    for p in (host, *peers):
        p.close()


def test_scenario_d_restart(tmp_path: Path, tenant: str) -> None:
    """(d) the server restarts mid-meeting: every participant rejoins with its seat."""
    srv = start_server(tmp_path)
    alice, bob = Peer(srv, "alice", tenant), Peer(srv, "bob", tenant)
    mid = meeting(alice)
    a = alice.ok("meeting.join", meeting=mid)
    b = bob.ok("meeting.join", meeting=mid)
    srv.stop()
    srv = start_server(tmp_path)
    try:
        alice, bob = Peer(srv, "alice", tenant), Peer(srv, "bob", tenant)
        assert alice.ok("meeting.join", meeting=mid, seat=a["seat"])["role"] == "host"
        assert bob.ok("meeting.join", meeting=mid, seat=b["seat"])["participant"] == b["participant"]
    finally:
        srv.stop()


def test_scenario_e_race_same_seat(server: ServerProcess, tenant: str) -> None:
    """(e) two connections race with the same seat token: exactly one holds the seat."""
    alice, bob = Peer(server, "alice", tenant), Peer(server, "bob", tenant)
    mid = meeting(alice)
    b = bob.ok("meeting.join", meeting=mid)
    bob.close()
    alice.event("reconnecting", pid=b["participant"])
    racers = [Peer(server, "bob", tenant) for _ in range(2)]
    start = threading.Barrier(2)

    def race(p: Peer) -> None:
        start.wait(5)
        p.send({"op": "meeting.join", "id": 1, "meeting": mid, "seat": b["seat"]})

    threads = [threading.Thread(target=race, args=(p,)) for p in racers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for p in racers:
        assert p.wait(lambda f: f.get("id") == 1)["participant"] == b["participant"]
    # The older holder is fenced: exactly one got `replaced`, the other holds the seat.
    alice.ok("signal", meeting=mid, to=b["participant"], data="who?")
    frames = [p.quiet(0.3) for p in racers]
    got = [i for i, fs in enumerate(frames) if any(f["op"] == "signal" for f in fs)]
    replaced = [i for i, fs in enumerate(frames) if any(f.get("event") == "replaced" for f in fs)]
    assert len(got) == 1 and replaced == [1 - got[0]]
    pa = alice.ok("meeting.join", meeting=mid)["participant"]
    answers = [p.req("signal", meeting=mid, to=pa, data=0)["op"] for p in racers]
    assert answers[got[0]] == "reply" and answers[1 - got[0]] == "error"
    roster = alice.ok("meeting.join", meeting=mid)["roster"]
    assert sum(r["user"] == "bob" for r in roster) == 1
    for p in (alice, *racers):
        p.close()
