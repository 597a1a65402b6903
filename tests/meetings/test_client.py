"""`rushhour.client` in meetings, against a real server over real sockets: the meeting
methods, events through iteration, and seats taken back by the client itself after
drops (made by the cutting proxy of `tests/test_client.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
from test_client import open_proxy

from conftest import ServerProcess
from rushhour.client import Client, ClientEvent, Event, Reconnected, Rejoined, ServerError, open_client
from rushhour.client._meetings import Seats

DROPS = 5


async def next_of(events: AsyncIterator[ClientEvent], match: Callable[[ClientEvent], bool]) -> ClientEvent:
    """The next event that `match`es; fails on a meeting frame that does not (others,
    such as presence pushes, are skipped)."""
    while True:
        event = await anext(events)
        if match(event):
            return event
        assert not (isinstance(event, Event) and event.op in ("meeting.event", "signal", "error")), event


def meeting_event(name: str, pid: str | None = None) -> Callable[[ClientEvent], bool]:
    def match(e: ClientEvent) -> bool:
        return (
            isinstance(e, Event)
            and e.op == "meeting.event"
            and e.data["event"] == name
            and (pid is None or e.data.get("participant", {}).get("participant") == pid)
        )

    return match


def is_signal(e: ClientEvent) -> bool:
    return isinstance(e, Event) and e.op == "signal"


async def host_meeting(client: Client, **fields: Any) -> tuple[str, str]:
    """Creates a meeting and joins it as its host: (meeting id, participant id)."""
    created = await client.create_meeting("stand-up", **fields)
    joined = await client.join_meeting(created["meeting"])
    assert joined["role"] == "host"
    return created["meeting"], joined["participant"]


async def test_meeting_methods_and_events(server: ServerProcess, tenant: str) -> None:
    with trio.fail_after(20):
        async with (
            open_client(server.url, server.token("alice", tenant)) as alice,
            open_client(server.url, server.token("bob", tenant)) as bob,
            open_client(server.url, server.token("carol", tenant)) as carol,
        ):
            key = f"standup-{tenant}"
            mid, pa = await host_meeting(alice, key=key, max_participants=5)
            again = await bob.create_meeting("other title", key=key)
            assert again == {"ok": True, "meeting": mid, "host": "alice", "created": False}
            jb = await bob.join_meeting(mid)
            pb = jb["participant"]
            assert jb["role"] == "participant" and [p["participant"] for p in jb["roster"]] == [pa, pb]
            assert bob.meetings == {mid: pb} and alice.meetings == {mid: pa}
            joined = await next_of(alice, meeting_event("joined", pb))
            assert isinstance(joined, Event) and joined.data["participant"]["user"] == "bob"

            await alice.signal(mid, pb, {"type": "offer", "sdp": "v=0"})
            got = await next_of(bob, is_signal)
            assert isinstance(got, Event)
            assert got.data == {"op": "signal", "meeting": mid, "from": pa, "data": {"type": "offer", "sdp": "v=0"}}
            with pytest.raises(ServerError) as info:
                await bob.signal(mid, pb, "to myself")
            assert info.value.code == "bad_request"

            await alice.mute(mid, pb)
            muted = await next_of(bob, meeting_event("muted", pb))
            assert isinstance(muted, Event) and muted.data["participant"]["muted"] is True
            with pytest.raises(ServerError) as info:
                await bob.mute(mid, pa)
            assert info.value.code == "forbidden"

            await alice.transfer_host(mid, pb)
            changed = await next_of(bob, meeting_event("host_changed", pb))
            assert isinstance(changed, Event) and changed.data["previous"]["participant"] == pa

            pc = (await carol.join_meeting(mid))["participant"]
            await bob.remove(mid, pc)
            await next_of(carol, meeting_event("removed", pc))
            assert carol.meetings == {}  # a removed seat is not rejoined
            with pytest.raises(ServerError) as info:
                await carol.join_meeting(mid)
            assert info.value.code == "forbidden"

            await alice.leave_meeting(mid)
            assert alice.meetings == {}
            await next_of(bob, meeting_event("joined", pc))
            await next_of(bob, meeting_event("removed", pc))
            await next_of(bob, meeting_event("left", pa))
            await bob.end_meeting(mid)
            await next_of(bob, meeting_event("ended"))
            assert bob.meetings == {}
            with pytest.raises(ServerError) as info:
                await alice.join_meeting(mid)
            assert info.value.code == "not_found"


async def test_client_rejoins_its_seat_after_every_drop(server: ServerProcess, tenant: str) -> None:
    """Each drop: `Reconnected`, then `Rejoined` with the same participant, then the
    signals sent meanwhile, in order; the host sees `reconnecting` and `rejoined`."""
    with trio.fail_after(40):
        async with (
            open_client(server.url, server.token("alice", tenant)) as alice,
            open_proxy(server) as proxy,
            open_client(proxy.url, server.token("bob", tenant)) as bob,
        ):
            mid, pa = await host_meeting(alice)
            pb = (await bob.join_meeting(mid))["participant"]
            await next_of(alice, meeting_event("joined", pb))
            sent = 0
            for drop in range(DROPS):
                proxy.cut()
                await next_of(alice, meeting_event("reconnecting", pb))
                first = sent
                for _ in range(3):  # held while bob is away, or relayed if bob is back
                    await alice.signal(mid, pb, {"n": sent})
                    sent += 1
                assert isinstance(await next_of(bob, lambda e: isinstance(e, Reconnected)), Reconnected)
                rejoined = await next_of(bob, lambda e: isinstance(e, Rejoined))
                assert isinstance(rejoined, Rejoined) and rejoined.meeting == mid
                assert rejoined.reply["participant"] == pb and rejoined.reply["role"] == "participant"
                assert {p["participant"]: p["state"] for p in rejoined.reply["roster"]} == {
                    pa: "connected",
                    pb: "connected",
                }
                got = [await next_of(bob, is_signal) for _ in range(sent - first)]
                assert [e.data["data"]["n"] for e in got if isinstance(e, Event)] == list(range(first, sent)), drop
                await next_of(alice, meeting_event("rejoined", pb))
                assert bob.meetings == {mid: pb}
            # Bob's own requests still work with the seat taken back.
            await bob.signal(mid, pa, "answer")
            got_a = await next_of(alice, is_signal)
            assert isinstance(got_a, Event) and got_a.data["from"] == pb
            assert proxy.connections == DROPS + 1


async def test_fenced_out_seat_is_not_taken_back(server: ServerProcess, tenant: str) -> None:
    """Another connection with the seat token wins (`replaced`); after a drop the
    fenced-out client does not take the seat back from it."""
    with trio.fail_after(20):
        async with (
            open_client(server.url, server.token("alice", tenant)) as alice,
            open_proxy(server) as proxy,
            open_client(proxy.url, server.token("bob", tenant)) as bob,
            open_client(server.url, server.token("bob", tenant)) as bob2,
        ):
            mid, _ = await host_meeting(alice)
            jb = await bob.join_meeting(mid)
            pb = jb["participant"]
            assert (await bob2.join_meeting(mid, seat=jb["seat"]))["participant"] == pb
            await next_of(bob, meeting_event("replaced", pb))
            assert bob.meetings == {} and bob2.meetings == {mid: pb}
            proxy.cut()
            assert isinstance(await next_of(bob, lambda e: isinstance(e, Reconnected)), Reconnected)
            # bob2 still holds the seat: a signal to it arrives there.
            await alice.signal(mid, pb, "still yours")
            got = await next_of(bob2, is_signal)
            assert isinstance(got, Event) and got.data["data"] == "still yours"


async def test_ended_meeting_is_not_rejoined_and_refused_rejoin_is_an_error_event(
    server: ServerProcess, tenant: str
) -> None:
    with trio.fail_after(20):
        async with (
            open_client(server.url, server.token("alice", tenant)) as alice,
            open_proxy(server) as proxy,
            open_client(proxy.url, server.token("bob", tenant)) as bob,
        ):
            mid, _ = await host_meeting(alice)
            mid2, _ = await host_meeting(alice)
            pb = (await bob.join_meeting(mid))["participant"]
            await bob.join_meeting(mid2)
            await next_of(alice, meeting_event("joined", pb))
            # The meeting ends while bob is away: the rejoin is refused and bob is told.
            proxy.swallow_replies = True  # bob hears nothing more on this connection
            await alice.end_meeting(mid)
            proxy.cut()
            assert isinstance(await next_of(bob, lambda e: isinstance(e, Reconnected)), Reconnected)
            error = await next_of(bob, lambda e: isinstance(e, Event) and e.op == "error")
            assert isinstance(error, Event)
            assert error.data["meeting"] == mid and error.data["code"] == "not_found", error
            rejoined = await next_of(bob, lambda e: isinstance(e, Rejoined))
            assert isinstance(rejoined, Rejoined) and rejoined.meeting == mid2
            assert list(bob.meetings) == [mid2]


def test_seats_end_with_the_events_that_end_them() -> None:
    """The sans-IO bookkeeping: the newest token is kept; `ended`, and `removed` or
    `replaced` of our own participant, end a seat; others' events do not."""
    seats = Seats()
    assert seats.joined({"meeting": "m-1", "participant": "p-1", "seat": "t1"}) is not None
    seats.joined({"meeting": "m-1", "participant": "p-1", "seat": "t2"})
    seats.joined({"meeting": "m-2", "participant": "p-2", "seat": "t3"})
    seats.joined({"meeting": "m-3", "participant": "p-3", "seat": "t4"})
    assert seats.joined({"meeting": "m-4"}) is None
    assert [(s.meeting, s.token) for s in seats.rejoins()] == [("m-1", "t2"), ("m-2", "t3"), ("m-3", "t4")]

    def event(meeting: str, name: str, pid: str | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"op": "meeting.event", "meeting": meeting, "event": name, "epoch": 1}
        if pid is not None:
            frame["participant"] = {"participant": pid}
        return frame

    seats.event(event("m-1", "removed", "p-9"))  # someone else
    seats.event(event("m-1", "left", "p-1"))  # not an event that ends a seat of ours
    assert seats.snapshot() == {"m-1": "p-1", "m-2": "p-2", "m-3": "p-3"}
    seats.event(event("m-1", "replaced", "p-1"))
    seats.event(event("m-2", "removed", "p-2"))
    seats.event(event("m-3", "ended"))
    assert seats.snapshot() == {}
