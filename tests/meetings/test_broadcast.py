"""Broadcast mode: viewers see the presenters' roster and coalesced viewer counts."""

from __future__ import annotations

import json

from conftest import ServerProcess
from meetings._peer import Peer, meeting

VIEWERS = 60


def test_broadcast_roster_counts_and_signals(server: ServerProcess, tenant: str) -> None:
    host = Peer(server, "host", tenant)
    mid = meeting(host, mode="broadcast")
    ph = host.ok("meeting.join", meeting=mid)["participant"]
    viewers = [Peer(server, f"v{i}", tenant) for i in range(VIEWERS)]
    for v in viewers:
        v.send({"op": "meeting.join", "id": 1, "meeting": mid})
    replies = [v.wait(lambda f: f.get("id") == 1) for v in viewers]
    for r in replies:
        assert r["role"] == "viewer" and r["mode"] == "broadcast"
        assert [p["participant"] for p in r["roster"]] == [ph]  # presenters only
    assert replies[-1]["viewers"] == VIEWERS
    # The host hears counts, never one event per viewer.
    counts: list[int] = []
    while not counts or counts[-1] != VIEWERS:
        f = host.wait(lambda f: f["op"] == "meeting.event")
        assert f["event"] == "count", f
        counts.append(f["viewers"])
    assert counts == sorted(counts) and len(counts) < VIEWERS
    assert viewers[0].event("count")["viewers"] in (*counts, VIEWERS)
    # Viewers signal presenters (and back), not each other.
    pv = [r["participant"] for r in replies]
    viewers[0].ok("signal", meeting=mid, to=ph, data="offer")
    assert host.signal() == {"op": "signal", "meeting": mid, "from": pv[0], "data": "offer"}
    host.ok("signal", meeting=mid, to=pv[0], data="answer")
    assert viewers[0].signal()["data"] == "answer"
    viewers[0].err("signal", "forbidden", meeting=mid, to=pv[1], data="x")
    # A viewer leaving is a count, not an event.
    viewers[1].ok("meeting.leave", meeting=mid)
    assert host.wait(lambda f: f.get("event") == "count" and f["viewers"] == VIEWERS - 1)
    assert [f for f in viewers[2].quiet(0.1) if f.get("event") not in ("count", None)] == []
    # Handing the host role to a viewer makes it a presenter everyone sees.
    host.ok("meeting.transfer_host", meeting=mid, participant=pv[2])
    ev = viewers[3].event("host_changed")
    assert ev["participant"]["participant"] == pv[2] and ev["previous"]["participant"] == ph
    assert viewers[3].wait(lambda f: f.get("event") == "count" and f["viewers"] == VIEWERS - 2)
    roster = viewers[4].ok("meeting.join", meeting=mid)["roster"]
    assert {r["participant"]: r["role"] for r in roster} == {ph: "participant", pv[2]: "host"}
    for p in (host, *viewers):
        p.close()


def test_broadcast_frames_per_viewer_stay_constant(server: ServerProcess, tenant: str) -> None:
    """Each viewer gets count events, not one frame per other viewer joining."""
    host = Peer(server, "host", tenant)
    mid = meeting(host, mode="broadcast")
    viewers = [Peer(server, f"w{i}", tenant) for i in range(VIEWERS)]
    for v in viewers:
        v.send({"op": "meeting.join", "id": 1, "meeting": mid})
    for v in viewers:
        v.wait(lambda f: f.get("id") == 1)
    host.wait(lambda f: f.get("event") == "count" and f["viewers"] == VIEWERS)
    first = viewers[0]
    frames = first.quiet(0.0)
    while not any(f.get("viewers") == VIEWERS for f in frames):
        frames.append(json.loads(first.ws.recv(timeout=10)))
    assert all(f["op"] == "meeting.event" and f["event"] == "count" for f in frames), frames
    assert len(frames) < VIEWERS
    for p in (host, *viewers):
        p.close()
