"""When the log cannot write: sends fail with `internal`, reads go on, nothing answered is lost.

The data dir is on a 4 MiB tmpfs, mounted in a user and mount namespace of its own
(`unshare --user --map-root-user --mount`: no real root needed). A holder process keeps
the namespace, and so the tmpfs, alive across both servers of the test, which run inside
it through `nsenter`; the test asks the holder to grow the tmpfs between them.

1. Sends (several in flight) until one fails: each answer is a reply or an `internal`
   error, nothing else.
2. While the disk is full: `send` and HTTP publish fail (`internal`, 503), `/healthz` is
   503 `degraded`, and `history` and `subscribe` with `since` serve every answered message.
3. The tmpfs grows: the server stays read-only (it does not retry).
4. SIGKILL, restart on the same data: every answered message is there at its seq, and
   the failed sends can be made again (same `cid`), each landing once.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from conftest import API_KEY
from durability._harness import (
    ConnectionLost,
    Server,
    WsClient,
    gap_free,
    history_all,
    http,
    replay_all,
    spawn,
    start,
    token,
)

ROOMS = ("a", "b", "c")
TMPFS_SIZE, GROWN_SIZE = "4m", "64m"
#: Body padding: about 1 KiB a message, so 4 MiB fill up in a few thousand sends.
PAD = "x" * 1000
IN_FLIGHT = 32
#: Far more than 4 MiB holds: if none of these fails, the log never noticed the full disk.
MAX_SENDS = 20_000
HTTP_BEFORE = 5
TEST_TIMEOUT_S = 90

# The holder: mounts the tmpfs (in its own namespaces), then obeys lines on stdin until EOF.
HOLDER = rf"""
mount -t tmpfs -o size={TMPFS_SIZE} tmpfs "$1" || exit 97
mkdir "$1/data" || exit 98
echo mounted
while read -r command; do
  if [ "$command" = grow ]; then
    if mount -o remount,size={GROWN_SIZE} "$1"; then echo grown; else echo "grow failed"; fi
  fi
done
"""


@dataclass
class Holder:
    """The process that owns the namespaces; the servers join them with `nsenter`."""

    proc: subprocess.Popen[bytes]

    @property
    def prefix(self) -> list[str]:
        return ["nsenter", f"--target={self.proc.pid}", "--user", "--mount", "--preserve-credentials", "--"]

    async def command(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return (await trio.to_thread.run_sync(self.proc.stdout.readline)).decode().strip()


@asynccontextmanager
async def tmpfs_holder(mountpoint: Path) -> AsyncIterator[Holder]:
    try:
        proc = spawn(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", HOLDER, "holder", str(mountpoint)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
    except FileNotFoundError:
        pytest.skip("needs unshare (util-linux)")
    holder = Holder(proc)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        with trio.fail_after(10):
            first = (await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)).decode().strip()
        if first != "mounted":
            pytest.skip(f"cannot mount a tmpfs in a user namespace here (unshare exit {proc.wait(timeout=10)})")
        yield holder
    finally:
        proc.stdin.close()  # the holder's loop ends; the namespace and its tmpfs go with it
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()


@dataclass
class Outcome:
    """Answers to the sends that filled the disk."""

    #: cid → (room, seq, body) of every answered send (HTTP publishes included, as `bot`).
    answered: dict[tuple[str, str], tuple[str, int, Any]] = field(default_factory=dict)
    #: cid → (room, body) of every send answered `internal` while filling the disk.
    failed: dict[str, tuple[str, Any]] = field(default_factory=dict)
    #: Sends refused once the server was read-only: never to be stored.
    refused: set[tuple[str, str]] = field(default_factory=set)
    #: The order of the sends that filled the disk, by cid.
    order: dict[str, int] = field(default_factory=dict)
    other: list[dict[str, Any]] = field(default_factory=list)


async def fill_disk(ws: WsClient, outcome: Outcome) -> None:
    """Sends, `IN_FLIGHT` at a time, until a send fails; then waits for every answer."""
    in_flight: dict[int, tuple[str, str, Any]] = {}
    slots = trio.Semaphore(IN_FLIGHT)
    failing = trio.Event()

    async def read() -> None:
        while True:
            for frame in await ws.recv_batch():
                sent = in_flight.pop(frame.get("id", -1), None)
                if sent is None:
                    continue
                cid, room, body = sent
                if frame["op"] == "reply" and frame.get("duplicate") is False:
                    outcome.answered["alice", cid] = (room, frame["seq"], body)
                elif frame["op"] == "error" and frame.get("code") == "internal":
                    outcome.failed[cid] = (room, body)
                    failing.set()
                else:
                    outcome.other.append(frame)
                slots.release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        for n in range(MAX_SENDS):
            await slots.acquire()
            if failing.is_set():
                slots.release()
                break
            request_id, cid, room, body = ws.new_id(), f"c{n}", ROOMS[n % len(ROOMS)], {"n": n, "pad": PAD}
            in_flight[request_id] = (cid, room, body)
            outcome.order[cid] = n
            await ws.send({"op": "send", "id": request_id, "room": room, "cid": cid, "body": body})
        for _ in range(IN_FLIGHT):
            await slots.acquire()  # every answer is in
        nursery.cancel_scope.cancel()


async def read_rooms(server: Server, user: str) -> dict[str, list[dict[str, Any]]]:
    """Each room's messages, read with `subscribe` `since` 0 and checked against `history`."""
    ws = await WsClient.connect(server.host, server.port)
    await ws.hello(token(user))
    replay = await replay_all(ws, ROOMS)
    for room in ROOMS:
        history = await history_all(ws, room)
        assert [(m["seq"], m["cid"]) for m in history] == [(m["seq"], m["cid"]) for m in replay[room]], (
            f"{room}: history and subscribe-since disagree"
        )
    await ws.close()
    return replay


def log_problems(rooms: dict[str, list[dict[str, Any]]], outcome: Outcome) -> list[str]:
    """Answered messages missing or moved, gaps, repeats, and messages never sent."""
    problems = []
    found: dict[tuple[str, str], tuple[str, int]] = {}
    bodies: dict[tuple[str, str], Any] = {}
    for room, messages in rooms.items():
        if not gap_free([m["seq"] for m in messages]):
            problems.append(f"{room}: seqs {[m['seq'] for m in messages][:5]}… are not 1..n")
        for m in messages:
            key = (m["from"], m["cid"])
            if key in found:
                problems.append(f"{key} stored twice: {found[key]} and {(room, m['seq'])}")
            found[key] = (room, m["seq"])
            bodies[key] = m["body"]
            if key in outcome.refused:
                problems.append(f"{room}/{m['seq']}: {key} was refused while read-only, yet it is stored")
            elif key not in outcome.answered and not (m["from"] == "alice" and m["cid"] in outcome.failed):
                problems.append(f"{room}/{m['seq']}: a message never sent: {key}")
    for key, (room, seq, body) in outcome.answered.items():
        if found.get(key) != (room, seq):
            problems.append(f"answered {key} at {room}/{seq}: found at {found.get(key)}")
        elif bodies[key] != body:
            problems.append(f"answered {key} at {room}/{seq}: stored with another body")
    return problems


async def expect_internal(ws: WsClient, outcome: Outcome, cid: str) -> None:
    outcome.refused.add(("alice", cid))
    reply = await ws.request({"op": "send", "room": ROOMS[0], "cid": cid, "body": {"pad": PAD}})
    assert (reply["op"], reply.get("code")) == ("error", "internal"), reply


async def test_full_disk_fails_sends_keeps_reads_and_loses_nothing(tmp_path: Path) -> None:
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    data = mountpoint / "data"
    servers: list[Server] = []
    outcome = Outcome()
    async with tmpfs_holder(mountpoint) as holder:
        try:
            with trio.fail_after(TEST_TIMEOUT_S):
                servers.append(server := await start(data, prefix=holder.prefix))
                for i in range(HTTP_BEFORE):
                    body = {"i": i}
                    status, answer = await publish(server, f"h{i}", body)
                    assert status == 200 and answer["duplicate"] is False, (status, answer)
                    outcome.answered["bot", f"h{i}"] = (ROOMS[0], answer["seq"], body)

                ws = await WsClient.connect(server.host, server.port)
                await ws.hello(token("alice"))
                try:
                    await fill_disk(ws, outcome)
                except* ConnectionLost as group:
                    pytest.fail(f"the server dropped the connection as the disk filled ({group.exceptions[0]})")
                print(f"{len(outcome.answered)} sends answered, {len(outcome.failed)} failed with internal")
                assert not outcome.other, f"answers other than a reply or internal: {outcome.other[:5]}"
                assert outcome.failed, f"{MAX_SENDS} sends of 1 KiB on a {TMPFS_SIZE} tmpfs, and none failed"
                last_ok = max(outcome.order[cid] for user, cid in outcome.answered if user == "alice")
                first_failed = min(outcome.order[cid] for cid in outcome.failed)
                assert last_ok < first_failed, f"c{last_ok} was answered after c{first_failed} failed"

                # Degraded: writes fail, reads work.
                await expect_internal(ws, outcome, "after-failure")
                status, health = await http("GET", server.http + "/healthz")
                assert status == 503 and health["status"] == "degraded", (status, health)
                assert isinstance(health.get("reason"), str) and health["reason"], health
                outcome.refused.add(("bot", "h-degraded"))
                status, answer = await publish(server, "h-degraded", {"late": True})
                assert status == 503 and isinstance(answer, dict) and "code" in answer, (status, answer)
                while_degraded = await read_rooms(server, "reader")
                problems = log_problems(while_degraded, outcome)
                assert not problems, "while degraded:\n" + "\n".join(problems[:20])
                # A meeting cannot be stored either: never acknowledged, its connection closes 1011.
                host = await WsClient.connect(server.host, server.port)
                await host.hello(token("alice"))
                with pytest.raises(ConnectionLost) as lost:
                    await host.request({"op": "meeting.create", "title": "while degraded"})
                assert lost.value.code == 1011, lost.value
                await host.aclose()

                # Space again, but the server stays read-only until restarted.
                assert await holder.command("grow") == "grown"
                await expect_internal(ws, outcome, "after-growing")
                status, health = await http("GET", server.http + "/healthz")
                assert (status, health["status"]) == (503, "degraded"), health
                await ws.aclose()

                server.kill()
                servers.append(server := await start(data, prefix=holder.prefix))
                status, health = await http("GET", server.http + "/healthz")
                assert (status, health) == (200, {"status": "ok"})
                after_restart = await read_rooms(server, "reader2")
                problems = log_problems(after_restart, outcome)
                assert not problems, "after the restart:\n" + "\n".join(problems[:20])
                vanished = seen_then_lost(while_degraded, after_restart)
                if vanished:
                    print(f"messages served while degraded and gone after the restart: {vanished[:10]}")

                await retry_failed(server, outcome, after_restart)
                final = await read_rooms(server, "reader3")
                problems = log_problems(final, outcome)
                stored = sum(len(messages) for messages in final.values())
                assert not problems and stored == len(outcome.answered), "after retrying:\n" + "\n".join(
                    problems[:20] or [f"{stored} stored, {len(outcome.answered)} answered"]
                )
        finally:
            for server in servers:
                server.kill()


async def publish(server: Server, cid: str, body: object) -> tuple[int, Any]:
    message = {"tenant": "acme", "room": ROOMS[0], "from": "bot", "cid": cid, "body": body}
    return await http("POST", server.http + "/api/v1/publish", message, bearer=API_KEY)


def seen_then_lost(before: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]]) -> list[str]:
    kept = {(room, m["seq"], m["cid"]) for room, messages in after.items() for m in messages}
    return [
        f"{room}/{m['seq']} {m['cid']}"
        for room, messages in before.items()
        for m in messages
        if (room, m["seq"], m["cid"]) not in kept
    ]


async def retry_failed(server: Server, outcome: Outcome, stored: dict[str, list[dict[str, Any]]]) -> None:
    """Sends every failed message again, same `cid`: each lands once (a duplicate if it was written)."""
    where = {m["cid"]: (room, m["seq"]) for room, messages in stored.items() for m in messages if m["from"] == "alice"}
    ws = await WsClient.connect(server.host, server.port)
    await ws.hello(token("alice"))
    for cid, (room, body) in sorted(outcome.failed.items()):
        reply = await ws.request({"op": "send", "room": room, "cid": cid, "body": body})
        assert reply["op"] == "reply", reply
        if cid in where:
            assert (reply["seq"], reply["duplicate"]) == (where[cid][1], True), (cid, where[cid], reply)
        else:
            assert reply["duplicate"] is False, (cid, reply)
        outcome.answered["alice", cid] = (room, reply["seq"], body)
    await ws.close()
