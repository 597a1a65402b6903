"""Meetings under a 9 a.m. burst, over real sockets, from this one process.

(a) 200 meetings of 10 participants are created and joined at once: every join is
    answered, each meeting has exactly one host, each participant's view (its join
    reply's roster plus later `joined` events) ends with the 10 of its meeting; then each
    participant sends signals to the next one of its meeting, and every signal arrives,
    in order. Joins/s and the join latency (request written → reply read) are printed,
    never asserted: speed depends on the machine.
(b) A broadcast meeting of 5,000 viewers: while they join, each viewer (and the host)
    receives only `count` events, at most one per coalescing interval: a viewer's frames
    stay within elapsed / interval + 2, not one per viewer that joined.

The client is the small one of the durability tests (`WsClient`: a Trio socket and
hand-made frames), since 5,000 connections must fit in one process. `run_burst` is
also what `benches/meetings_burst.py` runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from durability._harness import WsClient, dumps, token

from conftest import ServerProcess, start_server
from rushhour.server._meetings._registry import COUNT_INTERVAL_MS

#: The burst of (a): meetings and participants per meeting (the host included).
MEETINGS = 200
PER_MEETING = 10
#: Signals each participant of (a) sends to the next one of its meeting.
SIGNALS_EACH = 5
#: Viewers of (b).
VIEWERS = 5_000
#: Connections opening at once: enough to keep the server busy, few enough not to
#: overflow its listen backlog.
PARALLEL_OPENS = 64
#: Tenant join limits of the server of (b): the defaults (1,000/s, bursts of 2,000) would
#: answer most of 5,000 joins of one tenant `overloaded`; the server's own limit
#: (5,000/s, bursts of 10,000) stays as it is.
BROADCAST_LIMITS = ("--meeting-join-rate", "5000", "--meeting-join-burst", "10000")


@pytest.fixture
def burst_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own, with the default join limits."""
    srv = start_server(tmp_path / "data")
    yield srv
    assert srv.stop() == 0


@pytest.fixture
def broadcast_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own, with the tenant's join limits raised (`BROADCAST_LIMITS`)."""
    srv = start_server(tmp_path / "data", *BROADCAST_LIMITS)
    yield srv
    assert srv.stop() == 0


# ----- helpers -----


async def open_sessions(host: str, port: int, tenant: str, users: Sequence[str]) -> list[WsClient]:
    """One welcomed connection per user, in the order of `users`."""
    clients: list[WsClient | None] = [None] * len(users)
    limiter = trio.CapacityLimiter(PARALLEL_OPENS)

    async def one(i: int) -> None:
        async with limiter:
            ws = await WsClient.connect(host, port)
            await ws.hello(token(users[i], tenant))
            clients[i] = ws

    async with trio.open_nursery() as nursery:
        for i in range(len(users)):
            nursery.start_soon(one, i)
    return [c for c in clients if c is not None]


async def close_all(clients: Sequence[WsClient]) -> None:
    with trio.move_on_after(30) as scope:
        scope.shield = True
        async with trio.open_nursery() as nursery:
            for ws in clients:
                nursery.start_soon(ws.aclose)


async def timed_request(ws: WsClient, frame: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Sends `frame` with a fresh id; returns its reply or error and the seconds from the
    request written to the reply read. Frames read meanwhile stay queued, in order."""
    frame = {**frame, "id": ws.new_id()}
    await ws.send(frame)
    written = time.perf_counter()
    skipped: list[dict[str, Any]] = []
    try:
        while True:
            got = await ws.recv()
            if got.get("id") == frame["id"] and got["op"] in ("reply", "error"):
                return got, time.perf_counter() - written
            skipped.append(got)
    finally:
        ws.frames.extendleft(reversed(skipped))


async def run_all(jobs: Sequence[Callable[[], Awaitable[None]]]) -> None:
    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(job)


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0-100) by the nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# ----- (a) the burst of interactive meetings -----


@dataclass
class Seat:
    """One participant of the burst: its connection and what its join answered."""

    ws: WsClient
    user: str
    reply: dict[str, Any] = field(default_factory=dict)
    latency_s: float = 0.0


@dataclass
class BurstResult:
    """What `run_burst` measured."""

    meetings: int
    joins: int
    #: Seconds from the first `meeting.create` written to the last join reply read.
    elapsed_s: float
    latencies_s: list[float]
    #: Seconds to open and welcome every connection (before the timed phase).
    connect_s: float
    #: Seconds of the signal phase.
    signals_s: float

    @property
    def joins_per_s(self) -> float:
        return self.joins / self.elapsed_s

    def summary(self) -> str:
        ms = [x * 1000 for x in self.latencies_s]
        return (
            f"meetings burst: {self.meetings} meetings x {self.joins // self.meetings} participants: "
            f"{self.joins} joins in {self.elapsed_s:.2f} s (create included) = {self.joins_per_s:.0f} joins/s; "
            f"join latency p50 {percentile(ms, 50):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
            f"max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms; "
            f"connections opened in {self.connect_s:.2f} s; signals checked in {self.signals_s:.2f} s"
        )


async def run_burst(
    host: str, port: int, tenant: str, meetings: int = MEETINGS, per_meeting: int = PER_MEETING
) -> BurstResult:
    """Opens `meetings` x `per_meeting` connections, then creates every meeting and joins
    all at once, then relays `SIGNALS_EACH` signals from each participant to the next;
    asserts everything the burst must keep (see the module doc).

    Raises:
        AssertionError: a join failed, or a roster or signal is wrong.
    """
    users = [f"u{m}-{i}" for m in range(meetings) for i in range(per_meeting)]
    t0 = time.perf_counter()
    clients = await open_sessions(host, port, tenant, users)
    connect_s = time.perf_counter() - t0
    try:
        groups = [
            [Seat(clients[m * per_meeting + i], users[m * per_meeting + i]) for i in range(per_meeting)]
            for m in range(meetings)
        ]
        mids: list[str] = [""] * meetings

        async def meeting(m: int) -> None:
            seats = groups[m]
            created = await seats[0].ws.request({"op": "meeting.create", "title": f"stand-up {m}"})
            assert created["op"] == "reply" and created["created"] is True, created
            mids[m] = created["meeting"]

            async def join(seat: Seat) -> None:
                seat.reply, seat.latency_s = await timed_request(seat.ws, {"op": "meeting.join", "meeting": mids[m]})

            await run_all([partial(join, s) for s in seats])

        start = time.perf_counter()
        await run_all([partial(meeting, m) for m in range(meetings)])
        elapsed = time.perf_counter() - start

        for m, seats in enumerate(groups):
            for s in seats:
                assert s.reply["op"] == "reply" and s.reply["meeting"] == mids[m], s.reply
            roles = [s.reply["role"] for s in seats]
            assert roles[0] == "host" and roles.count("host") == 1, roles  # the creator's join
            assert len({s.reply["participant"] for s in seats}) == per_meeting

        t1 = time.perf_counter()
        await run_all([partial(check_signals, mids[m], groups[m]) for m in range(meetings)])
        signals_s = time.perf_counter() - t1
        return BurstResult(
            meetings,
            meetings * per_meeting,
            elapsed,
            [s.latency_s for seats in groups for s in seats],
            connect_s,
            signals_s,
        )
    finally:
        await close_all(clients)


async def check_signals(mid: str, seats: list[Seat]) -> None:
    """Each participant sends `SIGNALS_EACH` signals to the next one (in one write) and
    reads until it has its replies and its predecessor's signals: all ok, all there, in
    order; its view of the roster ends with the whole meeting."""
    pids = [s.reply["participant"] for s in seats]
    everyone = set(pids)

    async def one(i: int) -> None:
        seat, to, sender = seats[i], pids[(i + 1) % len(seats)], pids[i - 1]
        ids = [seat.ws.new_id() for _ in range(SIGNALS_EACH)]
        frames = [
            dumps({"op": "signal", "id": rid, "meeting": mid, "to": to, "data": {"n": n, "sdp": "v=0 " * 16}})
            for n, rid in enumerate(ids)
        ]
        await seat.ws.send_many(frames)
        view = {p["participant"] for p in seat.reply["roster"]}
        epoch = seat.reply["epoch"]
        replies: list[dict[str, Any]] = []
        got: list[int] = []
        while len(replies) < SIGNALS_EACH or len(got) < SIGNALS_EACH:
            f = await seat.ws.recv()
            if f["op"] in ("reply", "error"):
                assert f == {"op": "reply", "id": f["id"], "ok": True} and f["id"] in ids, f
                replies.append(f)
            elif f["op"] == "signal":
                assert f["meeting"] == mid and f["from"] == sender, f
                got.append(f["data"]["n"])
            else:
                assert f["op"] == "meeting.event" and f["event"] == "joined", f
                if f["epoch"] > epoch:
                    view.add(f["participant"]["participant"])
        assert got == list(range(SIGNALS_EACH)), got
        assert [r["id"] for r in replies] == ids
        # Every `joined` was queued before the first signal, so the view is complete.
        assert view == everyone, (sorted(view), sorted(everyone))

    await run_all([partial(one, i) for i in range(len(seats))])


async def test_burst_of_200_meetings_of_10(burst_server: ServerProcess, tenant: str) -> None:
    with trio.fail_after(90):
        result = await run_burst(burst_server.host, burst_server.port, tenant)
    assert result.joins == MEETINGS * PER_MEETING and len(result.latencies_s) == result.joins
    print("\n" + result.summary())


# ----- (b) one broadcast meeting of 5,000 viewers -----


async def test_broadcast_of_5000_viewers_gets_coalesced_counts(broadcast_server: ServerProcess, tenant: str) -> None:
    srv = broadcast_server
    interval_s = COUNT_INTERVAL_MS / 1000
    with trio.fail_after(100):
        t0 = time.perf_counter()
        viewers = await open_sessions(srv.host, srv.port, tenant, [f"v{i}" for i in range(VIEWERS)])
        host = (await open_sessions(srv.host, srv.port, tenant, ["host"]))[0]
        connect_s = time.perf_counter() - t0
        try:
            created = await host.request({"op": "meeting.create", "title": "all hands", "mode": "broadcast"})
            mid = created["meeting"]
            assert (await host.request({"op": "meeting.join", "meeting": mid}))["role"] == "host"
            # Frames each connection receives after its join reply, up to the final count.
            received: dict[int, list[dict[str, Any]]] = {}
            latencies: list[float] = []

            async def watch(key: int, ws: WsClient, join: bool) -> None:
                frames = received.setdefault(key, [])
                if join:
                    reply, latency = await timed_request(ws, {"op": "meeting.join", "meeting": mid})
                    assert reply["op"] == "reply" and reply["role"] == "viewer", reply
                    assert [p["role"] for p in reply["roster"]] == ["host"], reply
                    latencies.append(latency)
                while not frames or frames[-1].get("viewers") != VIEWERS:
                    frames.append(await ws.recv())

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, -1, host, False)
                for i, ws in enumerate(viewers):
                    nursery.start_soon(watch, i, ws, True)
            elapsed = time.perf_counter() - start
        finally:
            await close_all([*viewers, host])

    bound = elapsed / interval_s + 2
    counts = [len(frames) for frames in received.values()]
    for key, frames in received.items():
        assert all(f["op"] == "meeting.event" and f["event"] == "count" and f["meeting"] == mid for f in frames), (
            key,
            frames[:5],
        )
        seen = [f["viewers"] for f in frames]
        assert seen == sorted(seen), (key, seen)  # joins only: the count only grows
        assert len(frames) <= bound, (key, len(frames), bound)
    ms = [x * 1000 for x in latencies]
    print(
        f"\nbroadcast: {VIEWERS} viewers opened in {connect_s:.1f} s, joined and counted in {elapsed:.2f} s "
        f"({VIEWERS / elapsed:.0f} joins/s); join latency p50 {percentile(ms, 50):.1f} ms, "
        f"p99 {percentile(ms, 99):.1f} ms; count frames per connection: max {max(counts)}, "
        f"mean {statistics.fmean(counts):.1f}, bound {bound:.1f} "
        f"(one frame per viewer would be {VIEWERS})"
    )
