"""Reconnecting loses nothing and repeats nothing, for a thousand clients at once.

1,000 clients, each subscribed to 3 of 10 shared rooms, are disconnected together while a
publisher keeps sending; then they come back, either subscribing again with `since` (the
last seq each saw in each room) or with `hello` `resume` (the server restores their
subscriptions and pushes what it had not written to the old socket). Each client must end
up with exactly its rooms' messages from where it joined to the end: in order, none
missing, none twice, as `history` has them.

The disconnect is a clean close (Close frame, then read until the server's Close): what
the server wrote before its Close is then exactly what the client read. A third case
resumes while the old connection is still open: the server closes it with 4009, and
what the old connection read plus what the new one reads is again the whole room.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from durability._harness import ConnectionLost, Server, WsClient, dumps, history_all, start, token

ROOMS = [f"r{i}" for i in range(10)]
ROOMS_EACH = 3
#: The publisher's pace: it keeps sending through the disconnect and the reconnect.
PUBLISH_INTERVAL_S = 0.002
PUBLISH_IN_FLIGHT = 8
#: Messages published before the disconnect, while the clients are away, and after they are back.
BEFORE, AWAY, AFTER = 200, 150, 150
#: Handshakes in progress at once (the listen backlog is far larger; this only smooths the burst).
CONNECTING = 200
TEST_TIMEOUT_S = 100
#: Once the publisher is done, how long the clients may take to read to the end.
ENDING_TIMEOUT_S = 15
SHOWN = 20
END = "end-"


@dataclass
class Subscriber:
    """One client: what it read on its first connection and on its second, per room."""

    user: str
    rooms: tuple[str, ...]
    ws: WsClient | None = None
    session: str = ""
    #: `last_seq` when it subscribed: it must get every message after it.
    joined: dict[str, int] = field(default_factory=dict)
    before: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    after: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    old_close: int | None = None
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.before = {room: [] for room in self.rooms}
        self.after = {room: [] for room in self.rooms}

    def take(self, frames: list[dict[str, Any]], into: dict[str, list[tuple[int, str]]]) -> None:
        for frame in frames:
            op = frame["op"]
            if op == "msg":
                got = into.get(frame["room"])
                if got is None:
                    self.problems.append(f"{self.user}: a message of a room it is not in: {frame}")
                else:
                    got.append((frame["seq"], frame["cid"]))
            elif op in ("error", "reply"):
                self.problems.append(f"{self.user}: unexpected {frame}")

    def last_seen(self, room: str) -> int:
        seen = self.before[room]
        return seen[-1][0] if seen else self.joined[room]

    def ended(self) -> bool:
        return all(got and got[-1][1].startswith(END) for got in self.after.values())


@dataclass
class Publisher:
    """Sends to every room in turn, at a steady pace, until told to stop; then one last message per room."""

    ws: WsClient
    answered: int = 0
    #: room → seq → cid, from the replies.
    log: dict[str, dict[int, str]] = field(default_factory=lambda: {room: {} for room in ROOMS})
    problems: list[str] = field(default_factory=list)
    stop: trio.Event = field(default_factory=trio.Event)
    _progress: trio.Event = field(default_factory=trio.Event)

    async def wait_answered(self, n: int) -> None:
        while self.answered < n:
            await self._progress.wait()

    async def run(self) -> None:
        in_flight: dict[int, tuple[str, str]] = {}
        slots = trio.Semaphore(PUBLISH_IN_FLIGHT)
        async with trio.open_nursery() as nursery:

            async def read() -> None:
                while True:
                    for frame in await self.ws.recv_batch():
                        room, cid = in_flight.pop(frame.get("id", -1), ("", ""))
                        if frame["op"] != "reply" or not room:
                            self.problems.append(f"publisher: {frame}")
                            continue
                        self.log[room][frame["seq"]] = cid
                        self.answered += 1
                        slots.release()
                    self._progress.set()
                    self._progress = trio.Event()

            async def publish(room: str, cid: str, body: object) -> None:
                await slots.acquire()
                request_id = self.ws.new_id()
                in_flight[request_id] = (room, cid)
                await self.ws.send({"op": "send", "id": request_id, "room": room, "cid": cid, "body": body})

            nursery.start_soon(read)
            n = 0
            while not self.stop.is_set():
                n += 1
                await publish(ROOMS[n % len(ROOMS)], f"p-{n}", {"n": n})
                await trio.sleep(PUBLISH_INTERVAL_S)
            for room in ROOMS:
                await publish(room, END + room, {"end": True})
            for _ in range(PUBLISH_IN_FLIGHT):
                await slots.acquire()  # every answer is in
            nursery.cancel_scope.cancel()


class Countdown:
    """Set once `n` tasks have said `done`."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.event = trio.Event()
        if n <= 0:
            self.event.set()

    def done(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()


async def connect(server: Server, sub: Subscriber, *, resume: str | None = None) -> WsClient:
    ws = await WsClient.connect(server.host, server.port)
    welcome = await ws.hello(token(sub.user), resume=resume)
    if resume is not None and welcome.get("resumed") is not True:
        sub.problems.append(f"{sub.user}: resume answered {welcome}")
    sub.session = welcome["session"]
    return ws


async def subscribe(ws: WsClient, sub: Subscriber, since: dict[str, int] | None) -> None:
    """Subscribes to every room of `sub`; messages pushed meanwhile go to `sub.after`."""
    ids: dict[int, str] = {}
    frames = []
    for room in sub.rooms:
        request_id = ws.new_id()
        ids[request_id] = room
        frame: dict[str, Any] = {"op": "subscribe", "id": request_id, "room": room}
        if since is not None:
            frame["since"] = since[room]
        frames.append(dumps(frame))
    await ws.send_many(frames)
    while ids:
        pushed: list[dict[str, Any]] = []
        for frame in await ws.recv_batch():
            room = ids.pop(frame.get("id", -1), "")
            if not room:
                pushed.append(frame)
            elif frame["op"] != "reply" or frame.get("truncated"):
                sub.problems.append(f"{sub.user}: subscribe {room} answered {frame}")
            elif since is None:
                sub.joined[room] = frame["last_seq"]
        sub.take(pushed, sub.after)


async def first_connection(sub: Subscriber, close_now: trio.Event | None, closed: Countdown) -> None:
    """Reads the first connection until the server's Close; sends Close once `close_now` is set."""
    ws = sub.ws
    assert ws is not None
    async with trio.open_nursery() as nursery:
        if close_now is not None:

            async def close() -> None:
                await close_now.wait()
                try:
                    await ws.send_close(1000)
                except ConnectionLost as e:
                    sub.problems.append(f"{sub.user}: cannot send Close: {e}")

            nursery.start_soon(close)
        try:
            while True:
                sub.take(await ws.recv_batch(), sub.before)
        except ConnectionLost as e:
            sub.old_close = e.code
        nursery.cancel_scope.cancel()
    await ws.aclose()
    closed.done()


async def second_connection(server: Server, sub: Subscriber, mode: str, back: Countdown, ended: Countdown) -> None:
    """Comes back (`since` or `resume`) and reads until the last message of each room."""
    if mode == "since":
        ws = await connect(server, sub)
        await subscribe(ws, sub, {room: sub.last_seen(room) for room in sub.rooms})
    else:
        ws = await connect(server, sub, resume=sub.session)
    back.done()
    try:
        while not sub.ended():
            sub.take(await ws.recv_batch(), sub.after)
    except ConnectionLost as e:
        sub.problems.append(f"{sub.user}: the second connection ended ({e.code}) before the last message")
    finally:
        await ws.aclose()
    ended.done()


def check(subs: Sequence[Subscriber], publisher: Publisher, history: dict[str, list[dict[str, Any]]]) -> list[str]:
    problems = list(publisher.problems)
    full: dict[str, list[tuple[int, str]]] = {}
    for room in ROOMS:
        full[room] = [(m["seq"], m["cid"]) for m in history[room]]
        if full[room] != sorted(publisher.log[room].items()) or [s for s, _ in full[room]] != list(
            range(1, len(full[room]) + 1)
        ):
            problems.append(f"{room}: history differs from the publisher's replies, or has gaps")
    for sub in subs:
        problems += sub.problems
        for room in sub.rooms:
            got = sub.before[room] + sub.after[room]
            want = full[room][sub.joined[room] :]
            if got != want:
                problems.append(describe(sub, room, got, want))
    return problems


def describe(sub: Subscriber, room: str, got: list[tuple[int, str]], want: list[tuple[int, str]]) -> str:
    seqs = [s for s, _ in got]
    wanted = [s for s, _ in want]
    missing = sorted(set(wanted) - set(seqs))
    twice = sorted({s for s in seqs if seqs.count(s) > 1})
    order = "in order" if seqs == sorted(seqs) else "out of order"
    before, after = sub.before[room], sub.after[room]
    return (
        f"{sub.user} {room}: got {len(got)} ({len(before)} on the first connection, up to {before[-1:]}; "
        f"{len(after)} on the second, from {after[:1]}), {order}; want {len(want)} "
        f"(seqs {wanted[:1]}..{wanted[-1:]}); missing {missing[:8]}{'…' * (len(missing) > 8)}, twice {twice[:8]}"
    )


async def run_scenario(tmp_path: Path, mode: str, clients: int) -> None:
    rng = random.Random(7)
    subs = [Subscriber(f"u{i:04d}", tuple(rng.sample(ROOMS, ROOMS_EACH))) for i in range(clients)]
    server = await start(tmp_path / "data")
    try:
        with trio.fail_after(TEST_TIMEOUT_S):
            limiter = trio.CapacityLimiter(CONNECTING)

            async def join(sub: Subscriber) -> None:
                async with limiter:
                    sub.ws = await connect(server, sub)
                    await subscribe(sub.ws, sub, None)

            async with trio.open_nursery() as nursery:
                for sub in subs:
                    nursery.start_soon(join, sub)

            publisher = Publisher(await WsClient.connect(server.host, server.port))
            await publisher.ws.hello(token("publisher"))
            close_now = None if mode == "fenced" else trio.Event()
            closed, back, ended = Countdown(clients), Countdown(clients), Countdown(clients)
            async with trio.open_nursery() as nursery:
                for sub in subs:
                    nursery.start_soon(first_connection, sub, close_now, closed)
                nursery.start_soon(publisher.run)
                await publisher.wait_answered(BEFORE)
                if close_now is not None:
                    close_now.set()  # every client at once
                    await closed.event.wait()
                    await publisher.wait_answered(publisher.answered + AWAY)
                # Fenced: the first connections are still open, and reading.
                async with trio.open_nursery() as readers:
                    for sub in subs:
                        readers.start_soon(second_connection, server, sub, mode, back, ended)
                    await back.event.wait()
                    await publisher.wait_answered(publisher.answered + AFTER)
                    publisher.stop.set()
                    # Bounded wait for the last messages; whatever is missing then is reported below.
                    with trio.move_on_after(ENDING_TIMEOUT_S):
                        await ended.event.wait()
                    readers.cancel_scope.cancel()
            await publisher.ws.aclose()

            reader = await WsClient.connect(server.host, server.port)
            await reader.hello(token("reader"))
            history = {room: await history_all(reader, room) for room in ROOMS}
            await reader.close()
    finally:
        server.kill()
    received = sum(len(got) for sub in subs for got in [*sub.before.values(), *sub.after.values()])
    print(f"{clients} clients ({mode}): {publisher.answered} messages published, {received} pushes received")
    expected_close = 4009 if mode == "fenced" else 1000
    closes = [sub.old_close for sub in subs]
    assert closes == [expected_close] * clients, f"close codes of the first connections: {set(closes)}"
    problems = check(subs, publisher, history)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:SHOWN])


@pytest.mark.parametrize("mode", ["since", "resume"])
async def test_thousand_clients_disconnected_together_miss_nothing(tmp_path: Path, mode: str) -> None:
    await run_scenario(tmp_path, mode, clients=1000)


async def test_resume_while_connected_fences_the_old_connection(tmp_path: Path) -> None:
    await run_scenario(tmp_path, "fenced", clients=200)


#: Stalled readers: clients that stop reading while big messages pile up for them.
STALLED_CLIENTS = 20
STALLED_MESSAGES = 200
#: 200 messages of 16 KiB: 3.2 MiB per client, below the default 4 MiB queue limit but far
#: more than the socket buffers of a connection with a small receive window hold.
BIG_BODY = "y" * (16 << 10)
#: The smallest queue limit the server takes: the "overflow" case passes it (close 4008).
SMALL_QUEUE = 256 << 10


async def publish_all(ws: WsClient, room: str, n: int, body: object) -> list[tuple[int, str]]:
    """Sends `n` messages, `PUBLISH_IN_FLIGHT` at a time; returns (seq, cid) in seq order."""
    log: list[tuple[int, str]] = []
    in_flight: dict[int, str] = {}
    slots = trio.Semaphore(PUBLISH_IN_FLIGHT)
    async with trio.open_nursery() as nursery:

        async def read() -> None:
            while True:
                for frame in await ws.recv_batch():
                    cid = in_flight.pop(frame.get("id", -1), "")
                    assert frame["op"] == "reply" and cid, frame
                    log.append((frame["seq"], cid))
                    slots.release()

        nursery.start_soon(read)
        for i in range(n):
            await slots.acquire()
            request_id = ws.new_id()
            in_flight[request_id] = f"big-{i}"
            await ws.send({"op": "send", "id": request_id, "room": room, "cid": f"big-{i}", "body": body})
        for _ in range(PUBLISH_IN_FLIGHT):
            await slots.acquire()
        nursery.cancel_scope.cancel()
    return sorted(log)


@pytest.mark.parametrize(
    ("how", "close_code"),
    [
        pytest.param("resume", 4009, id="resumed-while-open"),  # the resume fences the old connection
        pytest.param("close", 1000, id="closed-then-resumed"),  # a clean close first
        pytest.param("overflow", 4008, id="overflowed-then-resumed"),  # slow consumer: the queue was dropped
    ],
)
async def test_resume_of_a_stalled_reader_pushes_what_the_old_socket_never_got(
    tmp_path: Path, how: str, close_code: int
) -> None:
    """Clients stop reading while 3.2 MiB are published to their room, then resume.

    What the server had queued but not written to the old socket (discarded when it
    closed it) must come on the new connection: old + new = the whole room, once.
    """
    extra = ("--max-queue-bytes", str(SMALL_QUEUE)) if how == "overflow" else ()
    server = await start(tmp_path / "data", *extra)
    results: list[tuple[list[tuple[int, str]], list[tuple[int, str]], int | None]] = []
    try:
        with trio.fail_after(TEST_TIMEOUT_S):
            stalled = []
            for i in range(STALLED_CLIENTS):
                ws = await WsClient.connect(server.host, server.port, rcvbuf=4096)
                welcome = await ws.hello(token(f"s{i:02d}"))
                reply = await ws.request({"op": "subscribe", "room": "big"})
                assert reply["op"] == "reply" and reply["last_seq"] == 0, reply
                stalled.append((ws, welcome["session"], f"s{i:02d}"))
            publisher = await WsClient.connect(server.host, server.port)
            await publisher.hello(token("publisher"))
            full = await publish_all(publisher, "big", STALLED_MESSAGES, {"pad": BIG_BODY})
            await publisher.close()

            async def come_back(old: WsClient, session: str, user: str) -> None:
                before: list[dict[str, Any]] = []
                code: int | None = None
                if how == "close":
                    before, code = await old.close()
                elif how == "overflow":
                    before, code = await old.drain()  # the server has closed it already
                new = await WsClient.connect(server.host, server.port)
                welcome = await new.hello(token(user), resume=session)
                assert welcome["resumed"] is True, welcome
                if how == "resume":
                    # The server closes the old connection (4009) before it serves the new one.
                    before, code = await old.drain()
                old_msgs = [m for m in before if m["op"] == "msg"]
                after: list[dict[str, Any]] = []
                # Bounded: whatever has not come by then is reported as missing.
                with trio.move_on_after(ENDING_TIMEOUT_S):
                    while (after or old_msgs or [{"seq": 0}])[-1]["seq"] < full[-1][0]:
                        after.extend(f for f in await new.recv_batch() if f["op"] == "msg")
                await new.close()
                results.append(([(m["seq"], m["cid"]) for m in old_msgs], [(m["seq"], m["cid"]) for m in after], code))

            async with trio.open_nursery() as nursery:
                for old, session, user in stalled:
                    nursery.start_soon(come_back, old, session, user)
    finally:
        server.kill()
    assert [s for s, _ in full] == list(range(1, STALLED_MESSAGES + 1))
    print("messages read before the close / after the resume:", [(len(b), len(a)) for b, a, _ in results])
    for before, after, code in results:
        assert code == close_code
        assert before + after == full, describe_split(before, after)


def describe_split(before: list[tuple[int, str]], after: list[tuple[int, str]]) -> str:
    seqs = [s for s, _ in before + after]
    missing = sorted(set(range(1, STALLED_MESSAGES + 1)) - set(seqs))
    twice = sorted({s for s in seqs if seqs.count(s) > 1})
    return (
        f"{len(before)} read before the close (last {before[-1:]}), then {len(after)} from {after[:1]}: "
        f"missing {missing[:8]}, twice {twice[:8]}"
    )
