"""A meeting client for tests: one `websockets` connection with a session, request ids,
and a buffer so that frames skipped while waiting for one are not lost."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.sync.client import ClientConnection

from conftest import ServerProcess
from wsutil import hello, ws_connect

Frame = dict[str, Any]


class Peer:
    """One participant's connection."""

    def __init__(self, server: ServerProcess, user: str, tenant: str, **claims: object) -> None:
        self.server, self.user, self.tenant, self.claims = server, user, tenant, claims
        self.ids = itertools.count(1)
        self.buffer: list[Frame] = []
        self.ws: ClientConnection = self._open()

    def _open(self) -> ClientConnection:
        ws = ws_connect(self.server.url).__enter__()  # closed by `close`
        welcome = hello(ws, self.server.token(self.user, self.tenant, **self.claims))
        assert welcome["op"] == "welcome", welcome
        return ws

    def reconnect(self) -> None:
        """Closes this connection normally and opens a new one (a new session)."""
        self.ws.close()
        self.buffer.clear()
        self.ws = self._open()

    def send(self, frame: Frame) -> None:
        self.ws.send(json.dumps(frame))

    def wait(self, match: Callable[[Frame], bool], timeout: float = 10) -> Frame:
        """The first frame (buffered or new) that `match`es; others stay buffered."""
        for i, f in enumerate(self.buffer):
            if match(f):
                return self.buffer.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame within {timeout} s; buffered {self.buffer}")
            f = json.loads(self.ws.recv(timeout=remaining))
            if match(f):
                return f
            self.buffer.append(f)

    def req(self, op: str, **fields: Any) -> Frame:
        """Sends `op` with a fresh id; returns its reply or error."""
        rid = next(self.ids)
        self.send({"op": op, "id": rid, **fields})
        return self.wait(lambda f: f.get("id") == rid and f["op"] in ("reply", "error"))

    def ok(self, op: str, **fields: Any) -> Frame:
        reply = self.req(op, **fields)
        assert reply["op"] == "reply" and reply["ok"] is True, reply
        return reply

    def err(self, op: str, code: str, **fields: Any) -> Frame:
        reply = self.req(op, **fields)
        assert reply["op"] == "error" and reply["code"] == code, reply
        return reply

    def event(self, name: str, timeout: float = 10, **match: Any) -> Frame:
        """The next `meeting.event` named `name` (whose participant id, if given, matches)."""
        pid = match.get("pid")
        return self.wait(
            lambda f: (
                f["op"] == "meeting.event"
                and f["event"] == name
                and (pid is None or f.get("participant", {}).get("participant") == pid)
            ),
            timeout,
        )

    def signal(self, timeout: float = 10) -> Frame:
        return self.wait(lambda f: f["op"] == "signal", timeout)

    def quiet(self, seconds: float) -> list[Frame]:
        """Every frame arriving within `seconds` (and what was buffered)."""
        frames, self.buffer = self.buffer, []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                frames.append(json.loads(self.ws.recv(timeout=remaining)))
            except TimeoutError:
                break
        return frames

    def close(self) -> None:
        self.ws.close()


def meeting(host: Peer, **fields: Any) -> str:
    """Creates a meeting as `host` and joins it; returns the meeting id."""
    mid: str = host.ok("meeting.create", title="t", **fields)["meeting"]
    host.ok("meeting.join", meeting=mid)
    return mid
