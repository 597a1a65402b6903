"""`send` replies are durable: SIGKILL at random moments loses nothing acknowledged.

Writers keep sends in flight over 50 rooms while the server is killed with SIGKILL again
and again and restarted on the same `--data-dir`. After each restart every writer first
sends its unanswered sends again, with the same `cid`, and re-sends a few answered ones
(its newest, which a torn tail would lose first, and some older): those must come back
`duplicate:true` with their original seq. Once everything is answered the server is
killed once more, and the log, read twice (`subscribe` with `since` 0, and `history`),
must hold exactly the messages sent: each room gap-free, each message once, at the seq
its reply gave.

Set `RUSHHOUR_CRASH_SEED` to replay a run's choices (the kill moments still depend on
timing); the seed is printed.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from durability._harness import (
    ConnectionLost,
    Server,
    WsClient,
    dumps,
    gap_free,
    history_all,
    replay_all,
    start,
    token,
)

ROOMS = [f"room-{i:02d}" for i in range(50)]
#: Connections sending at once, one user each (a `cid` is unique per sender and room).
WRITERS = 4
#: Sends awaiting a reply per connection (the server allows 64).
IN_FLIGHT = 16
#: Messages sent in all, at least.
MIN_MESSAGES = 20_000
#: SIGKILLs while sends are in flight; one more follows once everything is answered.
KILLS = 22
#: Answers between a restart and the next kill: random in this range...
KILL_AFTER_ACKS = (50, 1600)
#: ...except for this share of kills, which come at once (during recovery, or as writers reconnect).
EARLY_KILL_SHARE = 0.1
#: Answered sends that each writer re-sends after a restart: its newest, then random older ones.
PROBES_NEWEST, PROBES_OLDER = 4, 4
#: A hard bound on messages, whatever happens.
MAX_MESSAGES = 60_000
TEST_TIMEOUT_S = 110
#: Problems listed in a failure, at most.
SHOWN = 25


@dataclass
class Send:
    """One message; it may be sent several times, always with the same `cid` and body."""

    cid: str
    room: str
    #: The JSON text of `body`, sent verbatim.
    body: str
    #: The seq of its reply, once it has one.
    seq: int | None = None
    #: Times sent.
    attempts: int = 0
    #: On a re-send of an answered message: the seq the `duplicate:true` reply must carry.
    probe_of: int | None = None


@dataclass
class Ledger:
    """What all writers sent and what the server answered, across every restart."""

    rng: random.Random
    created: int = 0
    kills: int = 0
    #: Answers since the last restart, and the count at which the killer fires.
    acks_this_run: int = 0
    kill_at: float = math.inf
    kill_due: trio.Event = field(default_factory=trio.Event)
    retries: int = 0
    retries_found_duplicate: int = 0
    probes: int = 0
    violations: list[str] = field(default_factory=list)

    def may_create(self) -> bool:
        return self.created < MAX_MESSAGES and (self.created < MIN_MESSAGES or self.kills < KILLS)

    def new_run(self, kill_at: float) -> None:
        self.acks_this_run, self.kill_at, self.kill_due = 0, kill_at, trio.Event()
        if kill_at <= 0:
            self.kill_due.set()

    def answered(self) -> None:
        self.acks_this_run += 1
        if self.acks_this_run >= self.kill_at:
            self.kill_due.set()


@dataclass
class Writer:
    """One sending user; its state outlives its connections."""

    user: str
    ledger: Ledger
    rng: random.Random
    #: What to send on the next connection before anything new: retries and probes.
    queue: deque[Send] = field(default_factory=deque)
    #: Answered sends, in answer order.
    answered: list[Send] = field(default_factory=list)
    sends: dict[str, Send] = field(default_factory=dict)

    def _new(self) -> Send | None:
        if not self.ledger.may_create():
            return None
        self.ledger.created += 1
        n = len(self.sends) + 1
        body = json.dumps({"w": self.user, "n": n, "pad": "x" * self.rng.randrange(200)}, separators=(",", ":"))
        send = Send(f"{self.user}-{n}", self.rng.choice(ROOMS), body)
        self.sends[send.cid] = send
        return send

    def plan_probes(self) -> None:
        """Queues re-sends of answered messages; each must be answered as a duplicate."""
        newest, older = self.answered[-PROBES_NEWEST:], self.answered[:-PROBES_NEWEST]
        picks = newest + self.rng.sample(older, min(PROBES_OLDER, len(older)))
        self.queue.extend(Send(s.cid, s.room, s.body, probe_of=s.seq) for s in picks)

    def on_answer(self, send: Send, frame: dict[str, Any]) -> bool:
        """Records an answer; returns False when the send must be made again."""
        ledger = self.ledger
        if frame["op"] == "error":
            if frame.get("code") in ("rate_limited", "overloaded"):
                return False
            ledger.violations.append(f"{send.cid} (attempt {send.attempts}) answered {frame}")
            return True
        seq, duplicate = frame.get("seq"), frame.get("duplicate")
        if send.probe_of is not None:
            ledger.probes += 1
            if (seq, duplicate) != (send.probe_of, True):
                ledger.violations.append(
                    f"answered {send.cid} (seq {send.probe_of}) sent again after a restart: "
                    f"seq {seq}, duplicate {duplicate}"
                )
            return True
        if send.attempts > 1:
            ledger.retries += 1
            ledger.retries_found_duplicate += duplicate is True
        elif duplicate is not False:
            ledger.violations.append(f"first send of {send.cid} answered duplicate={duplicate}")
        send.seq = seq
        self.answered.append(send)
        ledger.answered()
        return True

    async def run(self, server: Server) -> None:
        """Sends over one connection until it breaks, or until everything is answered."""
        in_flight: dict[int, Send] = {}
        try:
            ws = await WsClient.connect(server.host, server.port)
        except ConnectionLost:
            return
        try:
            await ws.hello(token(self.user))
            await self._pump(ws, in_flight)
        except* ConnectionLost:
            pass
        finally:
            # Unanswered sends go first on the next connection, in the order they were sent.
            self.queue.extendleft(reversed([in_flight[i] for i in sorted(in_flight)]))
            await ws.aclose()

    async def _pump(self, ws: WsClient, in_flight: dict[int, Send]) -> None:
        slots = trio.Semaphore(IN_FLIGHT)
        progress = trio.Event()  # replaced after each answer

        async def read() -> None:
            nonlocal progress
            while True:
                for frame in await ws.recv_batch():
                    send = in_flight.pop(frame.get("id", -1), None)
                    if send is None:
                        if frame["op"] in ("reply", "error"):
                            self.ledger.violations.append(f"{self.user}: an answer to nothing: {frame}")
                        continue
                    if not self.on_answer(send, frame):
                        self.queue.append(send)
                    slots.release()
                progress.set()
                progress = trio.Event()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            while True:
                await slots.acquire()
                send = self.queue.popleft() if self.queue else self._new()
                if send is None:
                    slots.release()
                    if not in_flight:
                        break
                    await progress.wait()  # an answer may still ask for a resend
                    continue
                request_id = ws.new_id()
                in_flight[request_id] = send
                send.attempts += 1
                await ws.send_text(
                    f'{{"op":"send","id":{request_id},"room":"{send.room}","cid":"{send.cid}","body":{send.body}}}'
                )
            nursery.cancel_scope.cancel()


@dataclass
class Watcher:
    """A subscriber to every room, across every restart: it comes back with `since` its last seq.

    Whatever it was pushed must be in the log at that seq after every later crash: a
    message pushed and then lost would let its seq be given to another message.
    """

    cursor: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROOMS, 0))
    #: (room, seq) → (from, cid) of every push.
    seen: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    async def run(self, server: Server) -> None:
        try:
            ws = await WsClient.connect(server.host, server.port)
        except ConnectionLost:
            return
        try:
            await ws.hello(token("watcher"))
            await ws.send_many(
                [dumps({"op": "subscribe", "id": i, "room": r, "since": self.cursor[r]}) for i, r in enumerate(ROOMS)]
            )
            while True:
                for frame in await ws.recv_batch():
                    if frame["op"] == "msg":
                        self._pushed(frame)
                    elif frame["op"] == "error":
                        self.problems.append(f"watcher: {frame}")
        except ConnectionLost:
            pass
        finally:
            await ws.aclose()

    def _pushed(self, frame: dict[str, Any]) -> None:
        room, seq, identity = frame["room"], frame["seq"], (frame["from"], frame["cid"])
        if seq != self.cursor[room] + 1:
            self.problems.append(f"watcher: {room} pushed seq {seq} after seq {self.cursor[room]}")
        earlier = self.seen.setdefault((room, seq), identity)
        if earlier != identity:
            self.problems.append(f"watcher: {room}/{seq} was {earlier}, then {identity}")
        self.cursor[room] = max(self.cursor[room], seq)


async def run_until_killed(server: Server, writers: Sequence[Writer], watcher: Watcher, ledger: Ledger) -> None:
    """Writers send until the kill is due (or they are done), then SIGKILL."""
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            async with trio.open_nursery() as inner:
                for writer in writers:
                    inner.start_soon(writer.run, server)
            ledger.kill_due.set()  # nothing left in flight to kill under

        nursery.start_soon(watcher.run, server)
        nursery.start_soon(write)
        await ledger.kill_due.wait()
        await trio.sleep(ledger.rng.uniform(0, 0.002))  # somewhere between two answers
        await trio.to_thread.run_sync(server.kill)
        ledger.kills += 1


def seq_problems(room: str, seqs: Sequence[int]) -> str | None:
    if gap_free(seqs):
        return None
    expected = set(range(1, max(seqs, default=0) + 1))
    missing = sorted(expected - set(seqs))
    repeated = sorted({s for s in seqs if seqs.count(s) > 1})
    return f"{room}: {len(seqs)} messages, not 1..n in order; missing {missing[:10]}, repeated {repeated[:10]}"


def check_log(
    writers: Sequence[Writer], replay: dict[str, list[dict[str, Any]]], history: dict[str, list[dict[str, Any]]]
) -> list[str]:
    """Everything wrong with the log as read back, against what the writers sent."""
    problems: list[str] = []
    sends = {(w.user, cid): send for w in writers for cid, send in w.sends.items()}
    found: dict[tuple[str, str], tuple[str, int]] = {}
    for room in ROOMS:
        messages = replay[room]
        if problem := seq_problems(room, [m["seq"] for m in messages]):
            problems.append(problem)
        if [(m["seq"], m["from"], m["cid"], m["body"]) for m in history[room]] != [
            (m["seq"], m["from"], m["cid"], m["body"]) for m in messages
        ]:
            problems.append(f"{room}: history ({len(history[room])} messages) differs from replay ({len(messages)})")
        for m in messages:
            key = (m["from"], m["cid"])
            if key in found:
                problems.append(f"{key} stored twice: at {found[key]} and at {(room, m['seq'])}")
            found[key] = (room, m["seq"])
            send = sends.get(key)
            if send is None:
                problems.append(f"{room}/{m['seq']}: a message nobody sent: {key}")
            elif send.room != room or json.loads(send.body) != m["body"]:
                problems.append(f"{room}/{m['seq']}: {key} is not the message sent")
    for (user, cid), send in sends.items():
        if send.seq is None:
            problems.append(f"{cid} was never answered")
        elif found.get((user, cid)) != (send.room, send.seq):
            problems.append(f"acknowledged {cid} at {send.room}/{send.seq}: found at {found.get((user, cid))}")
    return problems


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param((), id="defaults"),
        # Every fsync its own, and segments sealed every 64 KiB: kills land at segment boundaries too.
        pytest.param(("--fsync", "always", "--segment-bytes", str(64 << 10)), id="always-small-segments"),
    ],
)
async def test_acknowledged_sends_survive_repeated_sigkill(tmp_path: Path, flags: tuple[str, ...]) -> None:
    seed = int(os.environ.get("RUSHHOUR_CRASH_SEED") or random.randrange(1 << 32))
    print(f"RUSHHOUR_CRASH_SEED={seed}")
    rng = random.Random(seed)
    ledger = Ledger(rng)
    writers = [Writer(f"w{i}", ledger, random.Random(rng.getrandbits(64))) for i in range(WRITERS)]
    watcher = Watcher()
    data = tmp_path / "data"
    began = time.monotonic()
    server: Server | None = None
    try:
        with trio.fail_after(TEST_TIMEOUT_S):
            for run in range(KILLS + 1):
                server = await start(data, *flags)
                if ledger.kills < KILLS:
                    early = rng.random() < EARLY_KILL_SHARE
                    ledger.new_run(rng.randint(0, 5) if early else rng.randint(*KILL_AFTER_ACKS))
                else:
                    ledger.new_run(math.inf)  # the last run: everything gets answered, then a kill
                if run:
                    for writer in writers:
                        writer.plan_probes()
                await run_until_killed(server, writers, watcher, ledger)
            unfinished = {w.user: len(w.queue) for w in writers if w.queue}
            server = await start(data, *flags)
            ws = await WsClient.connect(server.host, server.port)
            await ws.hello(token("reader"))
            replay = await replay_all(ws, ROOMS)
            history = {room: await history_all(ws, room) for room in ROOMS}
            await ws.close()
    finally:
        if server is not None:
            server.kill()
    elapsed = time.monotonic() - began
    print(
        f"{ledger.created} messages, {ledger.kills} SIGKILLs, {ledger.retries} retries "
        f"({ledger.retries_found_duplicate} already stored), {ledger.probes} answered sends re-sent, "
        f"{len(watcher.seen)} pushes watched, {elapsed:.1f} s"
    )
    assert ledger.kills == KILLS + 1 and ledger.created >= MIN_MESSAGES
    assert not unfinished, f"sends left unanswered after the last run: {unfinished}"
    problems = ledger.violations + check_log(writers, replay, history) + watcher.problems
    stored = {(room, m["seq"]): (m["from"], m["cid"]) for room in ROOMS for m in replay[room]}
    problems += [
        f"pushed {room}/{seq} = {identity}, stored {stored.get((room, seq))}"
        for (room, seq), identity in watcher.seen.items()
        if stored.get((room, seq)) != identity
    ]
    assert not problems, f"{len(problems)} problems (seed {seed}):\n" + "\n".join(problems[:SHOWN])
