"""Priority under pressure, over real sockets: for a connection whose queue is backed
up with chat, meeting signals go ahead of the queued chat, and receipt pushes are left
out (and counted) rather than adding to the backlog."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import start_server
from meetings._peer import Peer
from wsutil import RawClient, metric, text, wait_until

CHAT_FRAMES = 40
BODY = "x" * 4000


def _request(client: RawClient, frame: dict[str, Any]) -> dict[str, Any]:
    client.send(text(frame))
    while True:
        answer = client.recv_json()
        if answer.get("id") == frame["id"]:
            return answer


def test_signals_overtake_a_chat_backlog_and_receipts_are_shed(tmp_path: Path, tenant: str) -> None:
    # The smallest queue: a quarter of it (64 KiB) is where ambient pushes stop.
    srv = start_server(tmp_path, "--max-queue-bytes", "262144", "--receipt-interval-ms", "20")
    bob = RawClient(srv.host, srv.port, rcvbuf=4096)
    try:
        bob.send(text({"op": "hello", "token": srv.token("bob", tenant)}))
        assert bob.recv_json()["op"] == "welcome"
        assert _request(bob, {"op": "subscribe", "id": 1, "room": "busy"})["ok"]
        alice = Peer(srv, "alice", tenant)
        mid = alice.ok("meeting.create")["meeting"]
        alice.ok("meeting.join", meeting=mid)
        bob_pid = _request(bob, {"op": "meeting.join", "id": 2, "meeting": mid})["participant"]
        # Bob stops reading; a chat backlog of 160 KB builds up for him (his kernel
        # buffers take a few frames, the server's queue the rest).
        for i in range(CHAT_FRAMES):
            alice.ok("send", room="busy", cid=f"c{i}", body=BODY)
        alice.send({"op": "signal", "meeting": mid, "to": bob_pid, "data": {"sdp": "offer"}})
        # Alice's cursor moved with every send: the receipt pushes due to Bob every 20 ms
        # are left out while his queue is over a quarter full.
        wait_until(lambda: metric(srv.http, "rushhour_ambient_shed_total") > 0, what="a receipts push shed")
        # Bob reads at last: the signal comes before most of the chat queued before it.
        order: list[str] = []
        while len([o for o in order if o.startswith("msg")]) < CHAT_FRAMES:
            frame = bob.recv_json()
            if frame["op"] == "msg":
                order.append(f"msg{frame['seq']}")
            elif frame["op"] == "signal":
                assert frame["data"] == {"sdp": "offer"}
                order.append("signal")
        assert "signal" in order, order
        assert order.index("signal") < CHAT_FRAMES // 2, order
        chat = [o for o in order if o != "signal"]
        assert chat == [f"msg{i}" for i in range(1, CHAT_FRAMES + 1)]  # chat order intact
        alice.close()
    finally:
        bob.close()
        assert srv.stop() == 0
