"""Receipt cursors against a plain model: a Hypothesis state machine drives one real
server over real sockets (a few users, one connection each, two rooms) with `send`,
`subscribe`, `ack`, `read` (seqs below, at and above `last_seq`), `leave`, `receipts`,
`read_by` / `unread_by` pages and `unread`, and checks every reply against the model.

The model: per room its `last_seq` and its members, each with (delivered, read).
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from typing import Any, ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from websockets.sync.client import ClientConnection

from conftest import ServerProcess
from wsutil import all_pages, expected_pages, hello, request, ws_connect

USERS = ["ann", "Bob", "cy", "dee"]
ROOMS = ["r1", "r2"]

#: Bounded for CI: one server, fresh tenant per example, a few seconds in all.
SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    report_multiple_bugs=False,
)

users = st.sampled_from(USERS)
rooms = st.sampled_from(ROOMS)


class CursorMachine(RuleBasedStateMachine):
    """One tenant of a real server, and what its rooms should say."""

    #: The server to drive (set by the test on a subclass).
    srv: ClassVar[ServerProcess]

    def __init__(self) -> None:
        super().__init__()
        srv = self.srv
        self.tenant = f"m-{uuid.uuid4().hex[:12]}"
        self.stack = contextlib.ExitStack()
        self.ws: dict[str, ClientConnection] = {}
        for user in USERS:
            ws = self.stack.enter_context(ws_connect(srv.url))
            assert hello(ws, srv.token(user, self.tenant))["unread"] == {}
            self.ws[user] = ws
        self.last = dict.fromkeys(ROOMS, 0)
        self.members: dict[str, dict[str, tuple[int, int]]] = {room: {} for room in ROOMS}
        self.ids = itertools.count(1)
        self.cids = itertools.count(1)

    def teardown(self) -> None:
        self.stack.close()

    def call(self, user: str, frame: dict[str, Any]) -> dict[str, Any]:
        return request(self.ws[user], {**frame, "id": next(self.ids)})

    def is_error(self, reply: dict[str, Any], code: str) -> bool:
        return bool(reply["op"] == "error" and reply["code"] == code)

    def join(self, user: str, room: str) -> None:
        self.members[room].setdefault(user, (0, 0))

    @rule(user=users, room=rooms)
    def send(self, user: str, room: str) -> None:
        reply = self.call(user, {"op": "send", "room": room, "cid": f"c{next(self.cids)}", "body": {}})
        self.last[room] += 1
        assert (reply["ok"], reply["seq"], reply["duplicate"]) == (True, self.last[room], False), reply
        self.join(user, room)
        self.members[room][user] = (self.last[room], self.last[room])

    @rule(user=users, room=rooms)
    def subscribe(self, user: str, room: str) -> None:
        reply = self.call(user, {"op": "subscribe", "room": room})
        self.join(user, room)
        delivered, read = self.members[room][user]
        assert reply["ok"], reply
        assert (reply["last_seq"], reply["first_seq"]) == (self.last[room], 1)
        assert (reply["delivered_seq"], reply["read_seq"]) == (delivered, read)

    @rule(user=users, room=rooms, op=st.sampled_from(["ack", "read"]), data=st.data())
    def move(self, user: str, room: str, op: str, data: st.DataObject) -> None:
        seq = data.draw(st.integers(0, self.last[room] + 2), label="seq")
        reply = self.call(user, {"op": op, "room": room, "seq": seq})
        if user not in self.members[room]:
            assert self.is_error(reply, "not_found"), reply
            return
        if seq > self.last[room]:
            assert self.is_error(reply, "bad_request"), reply
            return
        delivered, read = self.members[room][user]
        if op == "read":
            read = max(read, seq)
        delivered = max(delivered, seq, read)
        self.members[room][user] = (delivered, read)
        assert reply == {"op": "reply", "id": reply["id"], "ok": True, "delivered_seq": delivered, "read_seq": read}

    @rule(user=users, room=rooms)
    def leave(self, user: str, room: str) -> None:
        assert self.call(user, {"op": "leave", "room": room})["ok"]
        self.members[room].pop(user, None)

    @rule(user=users, room=rooms, data=st.data())
    def receipts(self, user: str, room: str, data: st.DataObject) -> None:
        seq = data.draw(st.integers(0, self.last[room] + 2), label="seq")
        reply = self.call(user, {"op": "receipts", "room": room, "seq": seq})
        if user not in self.members[room]:
            assert self.is_error(reply, "not_found"), reply
            return
        cursors = self.members[room].values()
        assert (reply["seq"], reply["members"], reply["delivered"], reply["read"]) == (
            seq,
            len(cursors),
            sum(d >= seq for d, _ in cursors),
            sum(r >= seq for _, r in cursors),
        )

    @rule(
        user=users,
        room=rooms,
        op=st.sampled_from(["read_by", "unread_by"]),
        limit=st.integers(1, 4),
        data=st.data(),
    )
    def pages(self, user: str, room: str, op: str, limit: int, data: st.DataObject) -> None:
        seq = data.draw(st.integers(0, self.last[room] + 2), label="seq")
        if user not in self.members[room]:
            assert self.is_error(self.call(user, {"op": op, "room": room, "seq": seq}), "not_found")
            return
        read = {u: r >= seq for u, (_, r) in self.members[room].items()}
        matching = [u for u, yes in read.items() if yes == (op == "read_by")]
        assert all_pages(self.ws[user], op, room, seq, limit) == expected_pages(matching, limit)

    @rule(user=users)
    def unread(self, user: str) -> None:
        reply = self.call(user, {"op": "unread"})
        expected = {
            room: {"last_seq": self.last[room], "read_seq": m[user][1], "unread": self.last[room] - m[user][1]}
            for room, m in self.members.items()
            if user in m
        }
        assert reply["rooms"] == expected


def test_receipt_cursors_follow_the_model(server: ServerProcess) -> None:
    class OnServer(CursorMachine):
        srv = server

    run_state_machine_as_test(OnServer, settings=SETTINGS)
