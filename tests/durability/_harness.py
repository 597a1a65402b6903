"""Helpers of the durability tests: server processes that can be killed and restarted on
the same data dir, a small async WebSocket client, and readers of a room's whole log.

The client is written here rather than taken from `rushhour.client` on purpose: that
client dedupes and reorders nothing only if the server is right, and hides reconnects;
these tests must see every frame exactly as the server wrote it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import trio

from conftest import LISTENING, SECRET, serve_command

#: How long a server may take to print its listening line (recovery of a big log included).
START_TIMEOUT_S = 30.0
#: Bytes asked of the kernel per read: several frames per wake-up.
RECV_BYTES = 64 << 10
#: `history` page size: the most the server returns per page.
HISTORY_PAGE = 1000

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


def token(user: str, tenant: str = "acme", ttl: float = 3600) -> str:
    """An HS256 token the test servers accept."""
    return jwt.encode({"sub": user, "tenant": tenant, "exp": int(time.time() + ttl)}, SECRET, algorithm="HS256")


@dataclass
class Server:
    """One `rushhour serve` child process; the test ends it by its PID only."""

    proc: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    def kill(self) -> int:
        """SIGKILL, then reap: the crash the log must survive."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(timeout=15)

    def terminate(self) -> int:
        """SIGTERM (graceful shutdown), SIGKILL if it takes longer than 15 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()


def spawn(args: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """Starts a child process (quick: it does not wait for the child)."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(args, **kwargs)


def _wait_listening(proc: subprocess.Popen[bytes]) -> tuple[str, int] | None:
    """Reads stdout up to the listening line; then keeps draining it so the server never blocks."""
    assert proc.stdout is not None
    out = proc.stdout
    for raw in out:
        match = LISTENING.search(raw.decode(errors="replace"))
        if match:
            threading.Thread(target=_drain, args=(out,), daemon=True).start()
            return match.group(1), int(match.group(2))
    out.close()
    return None


def _drain(out: Any) -> None:
    with out:
        for _ in out:
            pass


async def start(data_dir: Path, *extra: str, prefix: Sequence[str] = ()) -> Server:
    """Starts `rushhour serve` (behind `prefix`, e.g. `nsenter …`) and waits until it listens.

    Raises:
        RuntimeError: The server exited or did not listen within `START_TIMEOUT_S`.
    """
    args = [*prefix, *serve_command(data_dir, *extra)]
    proc = spawn(args, stdout=subprocess.PIPE)
    found = None
    with trio.move_on_after(START_TIMEOUT_S):
        found = await trio.to_thread.run_sync(_wait_listening, proc, abandon_on_cancel=True)
    if found is None:
        if proc.poll() is None:
            proc.kill()
        rc = proc.wait(timeout=15)
        raise RuntimeError(f"server did not start (exit {rc}): {' '.join(args)}")
    return Server(proc, found[0], found[1])


# ----- WebSocket client -----


class ConnectionLost(Exception):
    """The connection ended: the server's Close (`code`), end of stream or a socket error."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def _mask(payload: bytes) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if not n:
        return key
    stream = (key * (n // 4 + 1))[:n]
    return key + (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked client frame."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + _mask(payload)


def dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


@dataclass
class WsClient:
    """A WebSocket client over a Trio socket: JSON text frames in and out, nothing hidden.

    Pings are answered, whenever they come: sends go one at a time (`_sending`), since
    a reading task may answer a ping while another task sends. A Close from the server ends the connection with
    `ConnectionLost(code)`; `close()` runs the client-side close handshake and returns
    what arrived before the server's Close.
    """

    stream: trio.SocketStream
    buf: bytearray = field(default_factory=bytearray)
    frames: deque[dict[str, Any]] = field(default_factory=deque)
    fragments: bytearray | None = None
    close_code: int | None = None
    _next_id: int = 0
    _sending: trio.Lock = field(default_factory=trio.Lock)

    @classmethod
    async def connect(cls, host: str, port: int, path: str = "/ws", *, rcvbuf: int | None = None) -> WsClient:
        """Opens a connection and completes the opening handshake.

        Args:
            rcvbuf: A small receive buffer (set before connecting, so the window stays
                small): a client that stops reading then backs up the server quickly.

        Raises:
            ConnectionLost: The server refused or dropped the connection.
        """
        try:
            if rcvbuf is None:
                stream = await trio.open_tcp_stream(host, port)
            else:
                sock = trio.socket.socket()
                try:
                    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, rcvbuf)
                    await sock.connect((host, port))
                except BaseException:
                    sock.close()
                    raise
                stream = trio.SocketStream(sock)
        except OSError as e:
            raise ConnectionLost(None, f"connect: {e}") from e
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        client = cls(stream)
        try:
            await client._send_bytes(request.encode())
            while b"\r\n\r\n" not in client.buf:
                await client._receive()
        except BaseException:
            await stream.aclose()
            raise
        end = client.buf.index(b"\r\n\r\n") + 4
        head = bytes(client.buf[:end])
        del client.buf[:end]
        if not head.startswith(b"HTTP/1.1 101"):
            await stream.aclose()
            raise ConnectionLost(None, f"handshake: {head.splitlines()[0]!r}")
        return client

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _send_bytes(self, data: bytes) -> None:
        try:
            async with self._sending:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            raise ConnectionLost(None, f"send: {e!r}") from e

    async def _receive(self) -> None:
        try:
            data = await self.stream.receive_some(RECV_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            raise ConnectionLost(None, f"receive: {e!r}") from e
        if not data:
            raise ConnectionLost(None, "end of stream")
        self.buf += data

    async def send(self, obj: object) -> None:
        """Sends one JSON text frame."""
        await self._send_bytes(client_frame(OP_TEXT, dumps(obj).encode()))

    async def send_text(self, text: str) -> None:
        """Sends one text frame as given (e.g. JSON whose `body` must stay byte for byte)."""
        await self._send_bytes(client_frame(OP_TEXT, text.encode()))

    async def send_many(self, texts: Sequence[str]) -> None:
        """Sends several JSON texts in one write."""
        await self._send_bytes(b"".join(client_frame(OP_TEXT, t.encode()) for t in texts))

    def _parse(self) -> list[tuple[int, bytes]]:
        """Every complete frame in the buffer."""
        out: list[tuple[int, bytes]] = []
        buf, pos, size = self.buf, 0, len(self.buf)
        while size - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            assert b1 & 0x80 == 0, "server frames are never masked"
            n, start = b1 & 0x7F, pos + 2
            if n == 126:
                if size - pos < 4:
                    break
                (n,) = struct.unpack_from("!H", buf, pos + 2)
                start = pos + 4
            elif n == 127:
                if size - pos < 10:
                    break
                (n,) = struct.unpack_from("!Q", buf, pos + 2)
                start = pos + 10
            if size - start < n:
                break
            out.append((b0, bytes(buf[start : start + n])))
            pos = start + n
        del buf[:pos]
        return out

    async def _fill(self) -> None:
        """Reads until at least one JSON frame is queued (answering pings on the way)."""
        while not self.frames:
            if self.close_code is not None:
                raise ConnectionLost(self.close_code, "closed")
            await self._receive()
            for b0, payload in self._parse():
                opcode = b0 & 0x0F
                if opcode in (OP_TEXT, 0x0) and not (b0 & 0x80):  # a fragment: keep it
                    self.fragments = (self.fragments or bytearray()) + payload
                elif opcode == 0x0:
                    assert self.fragments is not None, "continuation without a first fragment"
                    self.frames.append(json.loads(bytes(self.fragments + payload)))
                    self.fragments = None
                elif opcode == OP_TEXT:
                    self.frames.append(json.loads(payload))
                elif opcode == OP_PING:
                    await self._send_bytes(client_frame(OP_PONG, payload))
                elif opcode == OP_CLOSE:
                    self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    break
                elif opcode != OP_PONG:
                    raise AssertionError(f"unexpected opcode {opcode:#x}")

    async def recv(self) -> dict[str, Any]:
        """The next JSON frame.

        Raises:
            ConnectionLost: The connection ended before one arrived.
        """
        await self._fill()
        return self.frames.popleft()

    async def recv_batch(self) -> list[dict[str, Any]]:
        """Every JSON frame that has arrived (at least one), in order."""
        await self._fill()
        out = list(self.frames)
        self.frames.clear()
        return out

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Sends a frame with a fresh `id` and returns its reply or error.

        Frames that arrive meanwhile stay queued for `recv`, in order.
        """
        frame = {**frame, "id": self.new_id()}
        await self.send(frame)
        skipped: list[dict[str, Any]] = []
        try:
            while True:
                got = await self.recv()
                if got.get("id") == frame["id"] and got["op"] in ("reply", "error"):
                    return got
                skipped.append(got)
        finally:
            self.frames.extendleft(reversed(skipped))

    async def hello(self, user_token: str, resume: str | None = None) -> dict[str, Any]:
        """`hello` (with `resume` if given); returns the `welcome`."""
        frame: dict[str, Any] = {"op": "hello", "token": user_token}
        if resume is not None:
            frame["resume"] = resume
        await self.send(frame)
        welcome = await self.recv()
        assert welcome["op"] == "welcome", welcome
        return welcome

    async def send_close(self, code: int = 1000) -> None:
        await self._send_bytes(client_frame(OP_CLOSE, struct.pack("!H", code)))

    async def close(self, code: int = 1000) -> tuple[list[dict[str, Any]], int | None]:
        """The client-side close handshake: sends Close, then `drain`."""
        with contextlib.suppress(ConnectionLost):
            await self.send_close(code)
        return await self.drain()

    async def drain(self) -> tuple[list[dict[str, Any]], int | None]:
        """Reads until the server's Close, then closes the socket.

        Returns:
            The frames that arrived before the server's Close, and its code (None if the
            stream ended without one).
        """
        before: list[dict[str, Any]] = []
        try:
            while True:
                before.extend(await self.recv_batch())
        except ConnectionLost as e:
            code_seen = e.code
        await self.aclose()
        return before, code_seen

    async def aclose(self) -> None:
        await self.stream.aclose()


# ----- reading logs -----


async def history_all(ws: WsClient, room: str) -> list[dict[str, Any]]:
    """Every retained message of `room`, ascending, read backwards page by page with `history`."""
    pages: list[list[dict[str, Any]]] = []
    before: int | None = None
    for _ in range(100_000):  # bounded: far more pages than any test writes
        frame: dict[str, Any] = {"op": "history", "room": room, "limit": HISTORY_PAGE}
        if before is not None:
            frame["before"] = before
        reply = await ws.request(frame)
        assert reply["op"] == "reply", reply
        page: list[dict[str, Any]] = reply["messages"]
        if not page:
            break
        pages.append(page)
        lowest = page[0]["seq"]
        if lowest <= 1 or (before is not None and lowest >= before):
            break
        before = lowest
    return [m for page in reversed(pages) for m in page]


async def replay_all(ws: WsClient, rooms: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Every message of each room, as `subscribe` with `since` 0 pushes them.

    Reads until the replies are in and each room has pushed its reply's `last_seq`.
    """
    ids: dict[int, str] = {}
    for room in rooms:
        ids[ws.new_id()] = room
    await ws.send_many([dumps({"op": "subscribe", "id": i, "room": r, "since": 0}) for i, r in ids.items()])
    last: dict[str, int] = {}
    got: dict[str, list[dict[str, Any]]] = {room: [] for room in rooms}
    highest: dict[str, int] = dict.fromkeys(rooms, 0)
    while len(last) < len(rooms) or any(highest[r] < last[r] for r in rooms):
        for frame in await ws.recv_batch():
            if frame["op"] == "msg" and frame["room"] in got:
                got[frame["room"]].append(frame)
                highest[frame["room"]] = max(highest[frame["room"]], frame["seq"])
            elif frame.get("id") in ids:
                assert frame["op"] == "reply", frame
                last[ids[frame["id"]]] = frame["last_seq"]
    return got


def gap_free(seqs: Sequence[int]) -> bool:
    """Seqs 1, 2, 3 … with nothing missing or repeated."""
    return list(seqs) == list(range(1, len(seqs) + 1))


# ----- HTTP -----


def http_json(method: str, url: str, body: object = None, bearer: str | None = None) -> tuple[int, Any]:
    """One HTTP request with a JSON body; returns the status and the decoded JSON answer."""
    data = None if body is None else dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if bearer is not None:
        request.add_header("Authorization", f"Bearer {bearer}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        with e:
            status, raw = e.code, e.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


async def http(method: str, url: str, body: object = None, bearer: str | None = None) -> tuple[int, Any]:
    """`http_json` off the event loop."""
    return await trio.to_thread.run_sync(http_json, method, url, body, bearer)
