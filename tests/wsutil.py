"""Test helpers: a raw WebSocket client over a plain socket, for frames no library sends
(unmasked, malformed, oversized, garbage), and small JSON helpers for `websockets`."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import h11
import trio
from websockets.sync.client import ClientConnection, connect


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    """A client frame; `mask=False` makes the unmasked frame a client must never send."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def text(obj: Any) -> bytes:
    """A masked text frame carrying `obj` as JSON."""
    return frame(1, json.dumps(obj).encode())


class RawClient:
    """A WebSocket client that writes whatever bytes it is told to."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/ws",
        headers: dict[str, str] | None = None,
        *,
        rcvbuf: int | None = None,
    ) -> None:
        """Connects and sends the handshake; `rcvbuf` shrinks the receive buffer first (a
        slow reader whose backlog stays in the server's queue)."""
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ", 2)[1])

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes]:
        """The next server frame as (opcode, payload)."""
        b0, b1 = self._read(2)
        assert b1 & 0x80 == 0, "server frames are never masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read(8))
        return b0 & 0x0F, self._read(n)

    def recv_json(self) -> dict[str, Any]:
        """The next text frame as JSON, answering pings on the way."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 1:
                return json.loads(payload)  # type: ignore[no-any-return]
            if opcode == 8:
                raise AssertionError(f"closed: {close_code(payload)}")

    def recv_close(self) -> int:
        """Skips frames until the close frame; returns its code."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 8:
                return close_code(payload)

    def close(self) -> None:
        self.sock.close()


def close_code(payload: bytes) -> int:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005


def ws_connect(url: str, **kwargs: Any) -> ClientConnection:
    """A `websockets` client with test-friendly timeouts."""
    kwargs.setdefault("open_timeout", 10)
    kwargs.setdefault("close_timeout", 5)
    ws: ClientConnection = connect(url, **kwargs)
    return ws


def request(ws: ClientConnection, frame: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
    """Sends a frame with an `id` and returns the reply or error with that id, skipping pushes."""
    ws.send(json.dumps(frame))
    while True:
        reply = json.loads(ws.recv(timeout=timeout))
        if reply.get("id") == frame["id"]:
            return reply  # type: ignore[no-any-return]


def recv_op(ws: ClientConnection, op: str, timeout: float = 10) -> dict[str, Any]:
    """The next frame with the given op, skipping others."""
    while True:
        msg = json.loads(ws.recv(timeout=timeout))
        if msg["op"] == op:
            return msg  # type: ignore[no-any-return]


def hello(ws: ClientConnection, token: str, **extra: Any) -> dict[str, Any]:
    ws.send(json.dumps({"op": "hello", "token": token, **extra}))
    return json.loads(ws.recv(timeout=10))  # type: ignore[no-any-return]


def frames_until(
    ws: ClientConnection, match: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> list[dict[str, Any]]:
    """Every frame received up to and including the first one that `match`es.

    Raises:
        TimeoutError: None matched within `timeout` seconds in all.
    """
    deadline = time.monotonic() + timeout
    frames: list[dict[str, Any]] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no matching frame within {timeout} s; got {frames}")
        frames.append(json.loads(ws.recv(timeout=remaining)))
        if match(frames[-1]):
            return frames


#: Ids (and cids) of `tick` messages: unique within the test process.
_TICK_IDS = itertools.count(10**9)


def tick(ws: ClientConnection, user: str, room: str, timeout: float = 10) -> list[dict[str, Any]]:
    """Sends a message to `room` and returns every frame up to the `receipts` push that
    carries the sender's own cursor at the new seq (the room must get receipt pushes).

    That push comes from a flush later than anything the caller did before: once two
    ticks have returned, every push of the flush that followed those actions was read.
    """
    rid = next(_TICK_IDS)
    ws.send(json.dumps({"op": "send", "id": rid, "room": room, "cid": f"tick-{rid}", "body": "tick"}))
    frames = frames_until(ws, lambda f: f.get("id") == rid, timeout)
    assert frames[-1]["op"] == "reply", frames[-1]
    seq = frames[-1]["seq"]

    def is_mark(f: dict[str, Any]) -> bool:
        return (
            f["op"] == "receipts"
            and f["room"] == room
            and {"user": user, "delivered": seq, "read": seq} in f["updates"]
        )

    return frames + frames_until(ws, is_mark, timeout)


async def read_response(conn: h11.Connection, stream: trio.abc.Stream) -> tuple[int, dict[str, str], bytes]:
    """Reads one HTTP response off `stream` with `conn`: status, headers, body."""
    status, headers, body = 0, {}, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, headers, body


def http(method: str, url: str, body: object = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One HTTP request: status and body (an error status is returned, not raised)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def publish(http_base: str, api_key: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """`POST /api/v1/publish` with `api_key`: status and JSON body."""
    status, body = http(
        "POST",
        http_base + "/api/v1/publish",
        payload,
        {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    return status, json.loads(body)


def metric(http_base: str, name: str) -> float:
    """The value of an unlabelled metric of `GET /metrics`."""
    with urllib.request.urlopen(http_base + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise KeyError(name)


def wait_until(check: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    """Polls `check` until it holds, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold within {timeout} s")
        time.sleep(0.01)


def all_pages(ws: ClientConnection, op: str, room: str, seq: int, limit: int | None) -> list[list[str]]:
    """Every page of `read_by` / `unread_by` (`limit` None: the default, 100), following
    `next`, checking each page's shape on the way."""
    pages: list[list[str]] = []
    after: str | None = None
    while True:
        frame: dict[str, Any] = {"op": op, "id": 5, "room": room, "seq": seq}
        if limit is not None:
            frame["limit"] = limit
        if after is not None:
            frame["after"] = after
        reply = request(ws, frame)
        assert reply == {"op": "reply", "id": 5, "ok": True, "users": reply["users"], "next": reply["next"]}, reply
        users = reply["users"]
        assert users == sorted(users) and len(set(users)) == len(users)
        assert after is None or all(u > after for u in users)
        assert len(users) <= (100 if limit is None else limit)
        pages.append(users)
        if reply["next"] is None:
            return pages
        # `next` is the last user of a full page.
        assert users and reply["next"] == users[-1] and len(users) == (100 if limit is None else limit), reply
        after = reply["next"]
        assert len(pages) < 1000, "pages never end"


def expected_pages(matching: list[str], limit: int) -> list[list[str]]:
    """Pages of `limit` of the sorted `matching`; `next` is null on the page that ends
    them, so an exact multiple of `limit` ends without an empty page."""
    matching = sorted(matching)
    if not matching:
        return [[]]
    return [matching[i : i + limit] for i in range(0, len(matching), limit)]


# -- an honest client beside an attack --------------------------------------------------

_HONEST_IDS = itertools.count(1)


class Honest:
    """Two honest sessions of `tenant` in one room (the server signs with `token`)."""

    def __init__(self, url: str, token: str, other_token: str, room: str = "honest") -> None:
        self.room = room
        self._clients = contextlib.ExitStack()
        self.reader: ClientConnection = self._clients.enter_context(ws_connect(url))
        self.writer: ClientConnection = self._clients.enter_context(ws_connect(url))
        assert hello(self.reader, token)["op"] == "welcome"
        assert hello(self.writer, other_token)["op"] == "welcome"
        assert request(self.reader, {"op": "subscribe", "id": 1, "room": room})["ok"] is True
        #: Every seq the reader received, in order of arrival.
        self.seqs: list[int] = []

    def exchange(self, n: int = 5) -> None:
        """Sends `n` messages and checks the reader got each, after everything before."""
        sent = []
        for _ in range(n):
            rid = next(_HONEST_IDS)
            reply = request(self.writer, {"op": "send", "id": rid, "room": self.room, "cid": f"h{rid}", "body": rid})
            assert reply["op"] == "reply", reply
            sent.append(reply["seq"])
        got = [recv_op(self.reader, "msg")["seq"] for _ in range(n)]
        assert got == sent, (got, sent)
        self.seqs += got
        assert self.seqs == list(range(1, len(self.seqs) + 1)), "the stream has a gap or a repeat"

    def close(self) -> None:
        self._clients.close()


def send_json(ws: ClientConnection, frame: object) -> None:
    ws.send(json.dumps(frame))


def scrape_text(http_base: str) -> str:
    """`GET /metrics` as text."""
    with urllib.request.urlopen(http_base + "/metrics", timeout=10) as resp:
        return resp.read().decode()  # type: ignore[no-any-return]
