"""Bad input harms no one else: codec violations, bad frames, floods, slow consumers."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from pathlib import Path

import pytest

from conftest import ServerProcess, start_server
from wsutil import RawClient, frame, hello, recv_op, request, text, ws_connect


def raw_session(server: ServerProcess, tenant: str, user: str = "raw") -> RawClient:
    client = RawClient(server.host, server.port)
    assert client.status == 101
    client.send(text({"op": "hello", "token": server.token(user, tenant)}))
    assert client.recv_json()["op"] == "welcome"
    return client


@pytest.mark.parametrize(
    ("data", "code"),
    [
        pytest.param(frame(1, b'{"op":"x"}', mask=False), 1002, id="unmasked"),
        pytest.param(frame(1, b"\xff\xfe\xfd"), 1007, id="invalid-utf8"),
        pytest.param(frame(1, b"\xce", fin=False) + frame(0, b"\x41"), 1007, id="utf8-split-badly"),
        pytest.param(bytes([0x81, 0xFF]) + struct.pack("!Q", 2 << 20) + b"mask", 1009, id="oversized-header"),
        pytest.param(frame(3, b"x"), 1002, id="reserved-opcode"),
        pytest.param(frame(1, b"{}", rsv=4), 1002, id="rsv-bit"),
        pytest.param(frame(9, b"x" * 126), 1002, id="long-ping"),
        pytest.param(frame(9, b"x", fin=False), 1002, id="fragmented-ping"),
        pytest.param(frame(0, b"x"), 1002, id="orphan-continuation"),
        pytest.param(frame(8, b"\x03"), 1002, id="one-byte-close"),
        pytest.param(frame(8, struct.pack("!H", 1005)), 1002, id="reserved-close-code"),
    ],
)
def test_protocol_violations_close_with_the_rfc_code(
    server: ServerProcess, tenant: str, data: bytes, code: int
) -> None:
    client = raw_session(server, tenant)
    try:
        client.send(data)
        assert client.recv_close() == code
    finally:
        client.close()


def test_fragmented_message_with_interleaved_ping(server: ServerProcess, tenant: str) -> None:
    client = raw_session(server, tenant)
    try:
        payload = json.dumps({"op": "subscribe", "id": 3, "room": "frag"}).encode()
        client.send(frame(1, payload[:5], fin=False) + frame(9, b"hey") + frame(0, payload[5:]))
        assert client.recv_frame() == (10, b"hey")
        assert client.recv_json()["id"] == 3
    finally:
        client.close()


def test_binary_and_non_json_frames_get_bad_request_then_close_1008(server: ServerProcess, tenant: str) -> None:
    client = raw_session(server, tenant)
    try:
        client.send(frame(2, b"\x00\x01"))
        assert client.recv_json()["code"] == "bad_request"
        for _ in range(9):
            client.send(frame(1, b"not json"))
            assert client.recv_json()["code"] == "bad_request"
        client.send(text({"op": "subscribe", "id": 1, "room": "still-open"}))
        assert client.recv_json()["ok"] is True
        client.send(frame(1, b"the eleventh"))
        assert client.recv_close() == 1008
    finally:
        client.close()


def test_garbage_flood_harms_no_one_else(server: ServerProcess, tenant: str) -> None:
    """10,000 garbage frames from one client while others keep chatting."""
    flooder = raw_session(server, tenant, "flooder")
    with ws_connect(server.url) as sender, ws_connect(server.url) as receiver:
        hello(sender, server.token("alice", tenant))
        hello(receiver, server.token("bob", tenant))
        request(receiver, {"op": "subscribe", "id": 1, "room": "calm"})
        garbage = b"".join(frame(1, b"garbage %d" % i) for i in range(10_000))

        def flood() -> None:
            with contextlib.suppress(OSError):  # closed by the server mid-flood, as it should be
                flooder.send(garbage)

        thread = threading.Thread(target=flood)
        thread.start()
        for i in range(200):
            sender.send(json.dumps({"op": "send", "room": "calm", "cid": f"c{i}", "body": i}))
        seqs = [recv_op(receiver, "msg")["seq"] for _ in range(200)]
        thread.join(timeout=30)
        assert seqs == list(range(1, 201))
        assert flooder.recv_close() == 1008
    flooder.close()


def test_ping_is_answered_with_the_same_payload(server: ServerProcess, tenant: str) -> None:
    client = raw_session(server, tenant)
    try:
        client.send(frame(9, b"are you there"))
        assert client.recv_frame() == (10, b"are you there")
    finally:
        client.close()


def test_slow_consumer_is_closed_4008_while_fast_ones_get_everything(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--max-queue-bytes", "262144")
    tenant = "acme"
    # A tiny receive buffer, so the server's queue (not the kernel) holds the backlog.
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect((srv.host, srv.port))
    client = RawClient.__new__(RawClient)
    client.sock, client.buf = slow, b""
    slow.sendall(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    while b"\r\n\r\n" not in client.buf:
        client.buf += slow.recv(4096)
    client.buf = client.buf.split(b"\r\n\r\n", 1)[1]
    try:
        client.send(text({"op": "hello", "token": srv.token("slow", tenant)}))
        assert client.recv_json()["op"] == "welcome"
        client.send(text({"op": "subscribe", "id": 1, "room": "firehose"}))
        assert client.recv_json()["ok"] is True
        body = "x" * 16_000
        with ws_connect(srv.url) as sender, ws_connect(srv.url) as fast:
            hello(sender, srv.token("alice", tenant))
            hello(fast, srv.token("bob", tenant))
            request(fast, {"op": "subscribe", "id": 1, "room": "firehose"})
            received = []
            for i in range(100):
                sender.send(json.dumps({"op": "send", "room": "firehose", "cid": f"c{i}", "body": body}))
                received.append(recv_op(fast, "msg")["seq"])
            assert received == list(range(1, 101))
        # The slow one reads at last: a prefix of the messages, in order, then 4008.
        seqs = []
        while True:
            opcode, payload = client.recv_frame()
            if opcode == 8:
                assert struct.unpack("!H", payload[:2])[0] == 4008
                break
            frame = json.loads(payload)
            if frame["op"] == "msg":  # receipts pushes may come in between
                seqs.append(frame["seq"])
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) < 100
        with ws_connect(srv.url) as again:  # it resumes and misses nothing
            hello(again, srv.token("slow", tenant))
            request(again, {"op": "subscribe", "id": 1, "room": "firehose", "since": seqs[-1] if seqs else 0})
            rest = [recv_op(again, "msg")["seq"] for _ in range(100 - len(seqs))]
            assert rest == list(range(len(seqs) + 1, 101))
    finally:
        client.close()
        assert srv.stop() == 0
