"""Receipts under load, over real sockets.

(a) 100,000 `ack` / `read` frames from 1,000 connections (1,000 users, one room) are all
    applied, and an observer subscribed to the room gets at most one `receipts` push per
    interval: the frames it counts over the burst stay within elapsed / interval + 1.
(b) A room of 10,000 members (made by server-side publishes from 10,000 users) gets no
    `receipts` or `presence` push while a small room does; its counts and pages are
    right on request.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import h11
import trio
from durability._harness import WsClient, dumps, token

from conftest import API_KEY, start_server
from wsutil import read_response

#: The coalescing interval of (a): long enough that the bound on pushes is meaningful.
INTERVAL_MS = 200
BURST_USERS = 1_000
FRAMES_EACH = 100
#: Messages in the burst room: the cursors move over 0..BURST_LAST.
BURST_LAST = 101
BIG_MEMBERS = 10_000
#: Connections opening or publishing at once (only to smooth the load).
PARALLEL = 64
TEST_TIMEOUT_S = 100


async def open_session(host: str, port: int, user: str, tenant: str) -> WsClient:
    ws = await WsClient.connect(host, port)
    await ws.hello(token(user, tenant))
    return ws


async def open_many(host: str, port: int, users: list[str], tenant: str, rooms: list[str]) -> dict[str, WsClient]:
    """A session per user, each a member of `rooms` (subscribed, then unsubscribed: no
    pushes come to it)."""
    clients: dict[str, WsClient] = {}
    limiter = trio.CapacityLimiter(PARALLEL)

    async def one(user: str) -> None:
        async with limiter:
            ws = await open_session(host, port, user, tenant)
            clients[user] = ws
            for room in rooms:
                assert (await ws.request({"op": "subscribe", "room": room}))["ok"]
                assert (await ws.request({"op": "unsubscribe", "room": room}))["ok"]

    async with trio.open_nursery() as nursery:
        for user in users:
            nursery.start_soon(one, user)
    return clients


async def close_all(clients: list[WsClient]) -> None:
    with trio.move_on_after(30) as scope:
        scope.shield = True
        async with trio.open_nursery() as nursery:
            for ws in clients:
                nursery.start_soon(ws.aclose)


async def read_all(ws: WsClient, op: str, room: str, seq: int) -> list[str]:
    """Every user of `read_by` / `unread_by` at `seq`, in pages of 1,000."""
    users: list[str] = []
    after: str | None = None
    while True:
        frame: dict[str, Any] = {"op": op, "room": room, "seq": seq, "limit": 1000}
        if after is not None:
            frame["after"] = after
        reply = await ws.request(frame)
        assert reply["ok"], reply
        users += reply["users"]
        after = reply["next"]
        if after is None:
            return users


async def wait_for_mark(ws: WsClient, user: str, room: str, seq: int) -> None:
    """Reads up to the `receipts` push with `user` at (seq, seq)."""
    while True:
        f = await ws.recv()
        if (
            f["op"] == "receipts"
            and f["room"] == room
            and {"user": user, "delivered": seq, "read": seq} in f["updates"]
        ):
            return


def burst_frames(i: int) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    """User i's frames (fixed by i) and the cursors they should leave."""
    rng = random.Random(i)
    top = 1 + i % BURST_LAST  # every user moves (to 1 at least), some to the last seq
    frames: list[dict[str, Any]] = []
    delivered = read = 0
    for _ in range(FRAMES_EACH):
        op, seq = rng.choice(["ack", "read"]), rng.randint(0, top)
        frames.append({"op": op, "room": "burst", "seq": seq})
        if op == "read":
            read = max(read, seq)
        delivered = max(delivered, seq, read)
    return frames, (delivered, read)


async def test_a_burst_of_cursor_moves_is_applied_with_one_push_per_interval(tmp_path: Path, tenant: str) -> None:
    srv = start_server(
        tmp_path, "--receipt-interval-ms", str(INTERVAL_MS), "--receipt-push-max-members", str(BURST_USERS + 1)
    )
    clients: list[WsClient] = []
    try:
        with trio.fail_after(TEST_TIMEOUT_S):
            obs = await open_session(srv.host, srv.port, "obs", tenant)
            clients.append(obs)
            assert (await obs.request({"op": "subscribe", "room": "burst"}))["ok"]
            await obs.send_many(
                [dumps({"op": "send", "room": "burst", "cid": f"c{i}", "body": i}) for i in range(1, BURST_LAST)]
            )
            reply = await obs.request({"op": "send", "room": "burst", "cid": "last", "body": 0})
            assert reply["seq"] == BURST_LAST, reply
            users = [f"user-{i:04}" for i in range(BURST_USERS)]
            by_user = await open_many(srv.host, srv.port, users, tenant, ["burst"])
            clients += by_user.values()
            plans = {user: burst_frames(i) for i, user in enumerate(users)}
            texts = {user: [dumps(f) for f in frames[:-1]] for user, (frames, _) in plans.items()}

            # A push of obs's own cursor: the pushes after it come from flushes after it.
            await wait_for_mark(obs, "obs", "burst", BURST_LAST)
            expected = {user: cursors for user, (_, cursors) in plans.items()}
            assert all(delivered > 0 for delivered, _ in expected.values())  # each is in some push
            pushes: list[dict[str, Any]] = []
            latest: dict[str, tuple[int, int]] = {}
            settled = trio.Event()
            t0 = time.monotonic()
            t1 = 0.0

            async def observe() -> None:
                nonlocal t1
                while True:
                    for f in await obs.recv_batch():
                        if f["op"] != "receipts":
                            continue
                        pushes.append(f)
                        for u in f["updates"]:
                            latest[u["user"]] = (u["delivered"], u["read"])
                        if all(latest.get(user) == cursors for user, cursors in expected.items()):
                            t1 = time.monotonic()
                            settled.set()

            async def burst(user: str) -> None:
                ws = by_user[user]
                frames, cursors = plans[user]
                await ws.send_many(texts[user])
                reply = await ws.request(frames[-1])  # answered after the 99 before it
                assert (reply["delivered_seq"], reply["read_seq"]) == cursors, (user, reply)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(observe)
                async with trio.open_nursery() as senders:
                    for user in users:
                        senders.start_soon(burst, user)
                await settled.wait()
                nursery.cancel_scope.cancel()

            elapsed = t1 - t0
            assert pushes and all(f["room"] == "burst" for f in pushes)
            # At most one push per interval (flushes are at least an interval apart).
            assert len(pushes) <= elapsed / (INTERVAL_MS / 1000) + 1, (len(pushes), elapsed)
            for f in pushes:
                names = [u["user"] for u in f["updates"]]
                assert names == sorted(set(names)), "one update per user, sorted by user"
            assert set(latest) == set(users)

            # Everything sent was applied: counts and pages as the plans say.
            checker = by_user[users[0]]
            everyone = {**expected, "obs": (BURST_LAST, BURST_LAST)}
            for seq in (0, 1, 2, 37, 50, 100, BURST_LAST):
                reply = await checker.request({"op": "receipts", "room": "burst", "seq": seq})
                assert (reply["members"], reply["delivered"], reply["read"]) == (
                    BURST_USERS + 1,
                    sum(d >= seq for d, _ in everyone.values()),
                    sum(r >= seq for _, r in everyone.values()),
                ), seq
            for seq in (1, 64):
                read_by = await read_all(checker, "read_by", "burst", seq)
                assert read_by == sorted(u for u, (_, r) in everyone.items() if r >= seq)
                unread_by = await read_all(checker, "unread_by", "burst", seq)
                assert unread_by == sorted(u for u, (_, r) in everyone.items() if r < seq)
    finally:
        await close_all(clients)
        assert srv.stop() == 0


# ----- (b) a room of 10,000 members -----


async def publish_many(host: str, port: int, tenant: str, room: str, senders: list[str]) -> dict[str, int]:
    """`POST /api/v1/publish` once per sender over keep-alive connections; returns each
    sender's seq."""
    seqs: dict[str, int] = {}
    queue = list(reversed(senders))

    async def worker() -> None:
        stream = await trio.open_tcp_stream(host, port)
        conn = h11.Connection(h11.CLIENT)
        try:
            while queue:
                sender = queue.pop()
                body = json.dumps({"tenant": tenant, "room": room, "from": sender, "cid": "hello", "body": {}}).encode()
                request = h11.Request(
                    method="POST",
                    target="/api/v1/publish",
                    headers=[
                        ("Host", f"{host}:{port}"),
                        ("Authorization", f"Bearer {API_KEY}"),
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                    ],
                )
                await stream.send_all(
                    conn.send(request) + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
                )
                status, _, data = await read_response(conn, stream)
                assert status == 200, (status, data)
                seqs[sender] = json.loads(data)["seq"]
                conn.start_next_cycle()
        finally:
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(16):
            nursery.start_soon(worker)
    return seqs


def is_of(room: str, f: dict[str, Any]) -> bool:
    return f["op"] in ("receipts", "presence") and f.get("room") == room


async def test_no_push_in_a_room_of_10000_members(tmp_path: Path, tenant: str) -> None:
    srv = start_server(tmp_path, "--receipt-interval-ms", str(INTERVAL_MS), "--fsync", "never")
    clients: list[WsClient] = []
    try:
        with trio.fail_after(TEST_TIMEOUT_S):
            senders = [f"p{i:05}" for i in range(BIG_MEMBERS)]
            seqs = await publish_many(srv.host, srv.port, tenant, "big", senders)
            assert sorted(seqs.values()) == list(range(1, BIG_MEMBERS + 1))
            # Each sender has read its own message.
            cursors = {user: (seq, seq) for user, seq in seqs.items()}

            obs = await open_session(srv.host, srv.port, "obs", tenant)
            clients.append(obs)
            for room in ("big", "small"):
                assert (await obs.request({"op": "subscribe", "room": room}))["ok"]
            cursors["obs"] = (0, 0)
            frames: list[dict[str, Any]] = []

            async def two_flushes() -> None:
                """Reads every frame up to two flushes from now (obs ticks in "small")."""
                for _ in range(2):
                    reply = await obs.request({"op": "send", "room": "small", "cid": f"t{obs.new_id()}", "body": 0})
                    while True:
                        f = await obs.recv()
                        frames.append(f)
                        mark = {"user": "obs", "delivered": reply["seq"], "read": reply["seq"]}
                        if f["op"] == "receipts" and f["room"] == "small" and mark in f["updates"]:
                            break

            await two_flushes()
            frames.clear()

            # Members of "big" come online, move their cursors there and in "small".
            movers = ["p00000", "p00007", "p01234", "p05000", "p09998", "p09999"]
            by_user = await open_many(srv.host, srv.port, movers, tenant, ["small"])
            clients += by_user.values()
            for i, user in enumerate(movers):
                ws = by_user[user]
                ack = await ws.request({"op": "ack", "room": "big", "seq": 9_000 + i})
                read = await ws.request({"op": "read", "room": "big", "seq": 2_000 * i})
                read_to = max(cursors[user][1], 2_000 * i)
                cursors[user] = (max(cursors[user][0], 9_000 + i, read_to), read_to)
                assert (read["delivered_seq"], read["read_seq"]) == cursors[user], (ack, read)
                assert (await ws.request({"op": "read", "room": "small", "seq": 1}))["ok"]
            read = await obs.request({"op": "read", "room": "big", "seq": 5_000})
            assert (read["delivered_seq"], read["read_seq"]) == (5_000, 5_000)
            cursors["obs"] = (5_000, 5_000)
            for _ in range(2):  # four flushes in all
                await two_flushes()

            assert not [f for f in frames if is_of("big", f)], [f for f in frames if is_of("big", f)][:3]
            small = [u["user"] for f in frames if f["op"] == "receipts" and f["room"] == "small" for u in f["updates"]]
            online = [u for f in frames if f["op"] == "presence" and f["room"] == "small" for u in f["online"]]
            assert set(movers) <= set(small) and sorted(online) == movers

            # Counts and pages on request.
            for seq in (1, 2_000, 5_000, 9_000, 9_003, BIG_MEMBERS):
                reply = await obs.request({"op": "receipts", "room": "big", "seq": seq})
                assert (reply["members"], reply["delivered"], reply["read"]) == (
                    BIG_MEMBERS + 1,
                    sum(d >= seq for d, _ in cursors.values()),
                    sum(r >= seq for _, r in cursors.values()),
                ), seq
            read_by = sorted(u for u, (_, r) in cursors.items() if r >= 2_000)
            reply = await obs.request({"op": "read_by", "room": "big", "seq": 2_000, "limit": 5_000})
            assert (reply["users"], reply["next"]) == (read_by[:1000], read_by[999])  # at most 1,000 a page
            assert await read_all(obs, "read_by", "big", 2_000) == read_by
            reply = await obs.request({"op": "unread_by", "room": "big", "seq": 2_000})
            unread_by = sorted(u for u, (_, r) in cursors.items() if r < 2_000)
            assert (reply["users"], reply["next"]) == (unread_by[:100], unread_by[99])  # 100 by default
            reply = await obs.request({"op": "presence", "room": "big"})
            assert (reply["online"], reply["count"]) == (sorted([*movers, "obs"]), len(movers) + 1)
    finally:
        await close_all(clients)
        assert srv.stop() == 0
