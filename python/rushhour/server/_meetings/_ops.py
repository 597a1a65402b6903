"""One function per op of the Meetings section. Each returns the reply's fields or
raises `OpError`; frames the caller must get after the reply go to `call.after`."""

from __future__ import annotations

import heapq
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rushhour import auth
from rushhour._core import is_valid_id
from rushhour.server._meetings import _events as events
from rushhour.server._meetings import _seats as seats
from rushhour.server._meetings._model import (
    BROADCAST,
    HOST,
    INTERACTIVE,
    MAX_HELD_BYTES,
    MAX_HELD_SIGNALS,
    PARTICIPANT,
    VIEWER,
    Meeting,
    Participant,
)
from rushhour.server._meetings._registry import UNJOINED_TTL_MS, MeetingRegistry, OpError

#: `max_participants` when not given: interactive meetings are a mesh of browsers.
DEFAULT_MAX_INTERACTIVE = 100
#: Broadcast meetings (webinars) hold thousands of viewers.
DEFAULT_MAX_BROADCAST = 10_000
MAX_PARTICIPANTS_LIMIT = 100_000
MAX_TITLE_CHARS = 256
MAX_KEY_CHARS = 128
#: `data` of a signal, at most, as compact JSON.
MAX_SIGNAL_BYTES = 64 << 10
#: What a sender is told to wait when the receiver's held signals are full.
HELD_FULL_RETRY_MS = 1_000


@dataclass
class Call:
    """One op frame from one connection."""

    registry: MeetingRegistry
    conn: int
    claims: auth.Claims
    frame: dict[str, Any]
    after: list[str] = field(default_factory=list)


def _meeting(call: Call) -> Meeting:
    mid = call.frame.get("meeting")
    if not isinstance(mid, str):
        raise OpError("bad_request", "meeting required")
    m = call.registry.meetings.get(mid)
    if m is None or m.tenant != call.claims.tenant:
        raise OpError("not_found", "no such meeting")
    return m


def _own_seat(call: Call, m: Meeting) -> Participant | None:
    pid = call.registry.seats_of_conn.get(call.conn, {}).get(m.mid)
    return m.participants.get(pid) if pid is not None else None


def _target(call: Call, m: Meeting, key: str = "participant") -> Participant:
    pid = call.frame.get(key)
    if not isinstance(pid, str):
        raise OpError("bad_request", f"{key} required")
    p = m.participants.get(pid)
    if p is None:
        raise OpError("not_found", "no such participant")
    return p


def _moderator(call: Call, m: Meeting) -> Participant | None:
    """The caller's seat when it may moderate (host, or a tenant admin seat or not)."""
    own = _own_seat(call, m)
    if own is not None and own.role == HOST:
        return own
    if call.claims.is_admin:
        return own
    raise OpError("forbidden", "only the host or a tenant admin may do this")


def _join_reply(call: Call, m: Meeting, p: Participant) -> dict[str, Any]:
    reg = call.registry
    token = seats.sign(
        reg.secret, seats.Seat(m.mid, p.pid, p.role, p.user, int(time.time() * 1000) + seats.SEAT_TOKEN_TTL_MS)
    )
    fields: dict[str, Any] = {
        "meeting": m.mid,
        "participant": p.pid,
        "seat": token,
        "role": p.role,
        "roster": m.roster(),
        "epoch": m.epoch,
        "mode": m.mode,
    }
    if m.mode == BROADCAST:
        fields["viewers"] = m.viewers
    return fields


def create(call: Call) -> dict[str, Any]:
    reg, f, tenant = call.registry, call.frame, call.claims.tenant
    title = f.get("title", "")
    key = f.get("key")
    mode = f.get("mode", INTERACTIVE)
    if not isinstance(title, str) or len(title) > MAX_TITLE_CHARS:
        raise OpError("bad_request", f"title must be a string of at most {MAX_TITLE_CHARS} chars")
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS):
        raise OpError("bad_request", f"key must be a string of 1-{MAX_KEY_CHARS} chars")
    if mode not in (INTERACTIVE, BROADCAST):
        raise OpError("bad_request", "mode must be interactive or broadcast")
    default = DEFAULT_MAX_INTERACTIVE if mode == INTERACTIVE else DEFAULT_MAX_BROADCAST
    limit = f.get("max_participants", default)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PARTICIPANTS_LIMIT:
        raise OpError("bad_request", f"max_participants must be 1-{MAX_PARTICIPANTS_LIMIT}")
    if key is not None:
        existing = reg.meetings.get(reg.by_key.get((tenant, key), ""))
        if existing is not None:
            return {"meeting": existing.mid, "host": existing.host_user(), "created": False}
    reg.check_room_for(tenant, call.claims.user)
    mid = "m-" + secrets.token_urlsafe(12)
    m = Meeting(mid, tenant, title, key, mode, limit, call.claims.user, int(time.time() * 1000))
    m.empty_deadline_ms = reg.now_ms() + max(UNJOINED_TTL_MS, reg.grace_ms)
    heapq.heappush(reg.deadlines, (m.empty_deadline_ms, mid, ""))
    reg.add_meeting(m)
    reg.save_meeting(m)
    return {"meeting": mid, "host": m.host_user(), "created": True}


def join(call: Call) -> dict[str, Any]:
    reg, claims = call.registry, call.claims
    m = _meeting(call)
    wait = reg.limiter.admit(claims.tenant, reg.now_ms() / 1000)
    if wait is not None:
        raise OpError("overloaded", "too many joins, retry later", wait)
    own = _own_seat(call, m)
    token = call.frame.get("seat")
    if token is None:
        if own is not None:
            return _join_reply(call, m, own)  # idempotent on the same connection
        return _join_new(call, m)
    try:
        seat = seats.verify(reg.secret, token, int(time.time() * 1000))
    except seats.InvalidSeat as e:
        raise OpError("forbidden", str(e)) from None
    if seat.meeting != m.mid or seat.user != claims.user:
        raise OpError("forbidden", "seat token of another meeting or user")
    if seat.participant in m.removed_pids:
        raise OpError("forbidden", "removed from the meeting")
    p = m.participants.get(seat.participant)
    if p is None:
        raise OpError("not_found", "seat expired or left; join without a seat")
    if own is not None:
        if own is p:
            return _join_reply(call, m, p)
        raise OpError("conflict", "this connection holds another seat of the meeting")
    old = p.conn
    if old is not None:
        # The newest holder wins: the older connection is fenced out.
        m.epoch += 1
        reg.send(old, events.event(m.mid, "replaced", m.epoch, p.roster()))
        reg.release(m, p)
    reg.attach(m, p, call.conn)
    reg.announce(m, p, "rejoined", others=True, lifecycle=True)
    call.after.extend(p.held)
    p.held.clear()
    p.held_bytes = 0
    return _join_reply(call, m, p)


def _join_new(call: Call, m: Meeting) -> dict[str, Any]:
    reg, claims = call.registry, call.claims
    if claims.user in m.removed_users:
        raise OpError("forbidden", "removed from the meeting")
    if len(m.participants) >= m.max_participants:
        raise OpError("conflict", "meeting is full")
    role = VIEWER if m.mode == BROADCAST else PARTICIPANT
    if m.host is None and claims.user == m.creator:
        role = HOST
    p = Participant("p-" + secrets.token_urlsafe(9), claims.user, claims.name or claims.user, role, m.next_order)
    m.next_order += 1
    reg.add_participant(m, p)
    if role == HOST:
        m.host = p.pid
    reg.attach(m, p, call.conn)
    reg.save_seat(m, p)
    if role == HOST:  # else the meeting's record is unchanged but for what seats recover
        reg.save_meeting(m)
    reg.announce(m, p, "joined", others=True, lifecycle=True)
    return _join_reply(call, m, p)


def leave(call: Call) -> dict[str, Any]:
    m = _meeting(call)
    own = _own_seat(call, m)
    if own is None:
        raise OpError("not_found", "not in this meeting")
    call.registry.drop_participant(m, own, "left")
    return {}


def signal(call: Call) -> dict[str, Any]:
    reg, f = call.registry, call.frame
    m = _meeting(call)
    own = _own_seat(call, m)
    if own is None:
        raise OpError("forbidden", "not in this meeting")
    target = _target(call, m, "to")
    if target is own:
        raise OpError("bad_request", "cannot signal yourself")
    if own.role == VIEWER and target.role == VIEWER:
        raise OpError("forbidden", "viewers signal presenters only")
    if "data" not in f:
        raise OpError("bad_request", "data required")
    data = json.dumps(f["data"], separators=(",", ":"), ensure_ascii=False)
    if len(data.encode()) > MAX_SIGNAL_BYTES:
        raise OpError("too_large", f"data is over {MAX_SIGNAL_BYTES} bytes")
    frame = events.signal(m.mid, own.pid, data)
    if target.conn is not None:
        # Through here only when the core could not relay it (a seat routed this turn):
        # sent now, so that a closing receiver's signal is held rather than lost.
        if reg.turn.send_now(target.conn, frame):
            return {}
        reg.connection_lost(target.conn)  # closing: hold it for the rejoin
    size = len(frame)
    if len(target.held) >= MAX_HELD_SIGNALS or target.held_bytes + size > MAX_HELD_BYTES:
        raise OpError("overloaded", "the receiver is reconnecting and its held signals are full", HELD_FULL_RETRY_MS)
    target.held.append(frame)
    target.held_bytes += size
    return {}


def mute(call: Call) -> dict[str, Any]:
    m = _meeting(call)
    p = _target(call, m)
    if _own_seat(call, m) is not p:
        _moderator(call, m)
    muted = call.frame.get("muted", True)
    if not isinstance(muted, bool):
        raise OpError("bad_request", "muted must be a boolean")
    if p.muted != muted:
        p.muted = muted
        call.registry.save_seat(m, p)
        call.registry.announce(m, p, "muted", others=False, lifecycle=False)
    return {}


def remove(call: Call) -> dict[str, Any]:
    m = _meeting(call)
    own = _moderator(call, m)
    p = _target(call, m)
    if p is own:
        raise OpError("bad_request", "use meeting.leave to leave")
    m.removed_pids.add(p.pid)
    m.removed_users.add(p.user)
    call.registry.drop_participant(m, p, "removed")
    return {}


def transfer_host(call: Call) -> dict[str, Any]:
    reg = call.registry
    m = _meeting(call)
    _moderator(call, m)
    p = _target(call, m)
    if p.role == HOST:
        return {}
    previous = m.participants.get(m.host) if m.host else None
    extra: dict[str, Any] = {}
    if previous is not None:
        reg.set_role(m, previous, PARTICIPANT)
        extra["previous"] = previous.roster()
    reg.set_role(m, p, HOST)
    reg.save_meeting(m)
    m.epoch += 1
    reg.emit(m.live_conns(), events.event(m.mid, "host_changed", m.epoch, p.roster(), **extra))
    return {}


def end(call: Call) -> dict[str, Any]:
    m = _meeting(call)
    _moderator(call, m)
    call.registry.end(m)
    return {}


OPS: dict[str, Callable[[Call], dict[str, Any]]] = {
    "meeting.create": create,
    "meeting.join": join,
    "meeting.leave": leave,
    "meeting.mute": mute,
    "meeting.remove": remove,
    "meeting.transfer_host": transfer_host,
    "meeting.end": end,
    "signal": signal,
}


def handle(registry: MeetingRegistry, conn: int, claims: auth.Claims, frame: dict[str, Any]) -> None:
    """Runs one op frame and answers it (reply, or error; then any frames that follow)."""
    op, request_id = frame.get("op"), frame.get("id")
    fn = OPS.get(op) if isinstance(op, str) else None
    call = Call(registry, conn, claims, frame)
    try:
        if fn is None:
            raise OpError("bad_request", f"unknown op {op!r}")
        if "meeting" in frame and isinstance(frame["meeting"], str) and not is_valid_id(frame["meeting"]):
            raise OpError("bad_request", "invalid meeting id")
        fields = fn(call)
    except OpError as e:
        registry.send(conn, events.error(e.code, e.message, request_id, e.retry_after_ms))
    except Exception as e:  # our fault: this frame fails, the server and the meeting go on
        registry.faults.record("ws", f"op {op!r:.64} of conn {conn}", e)
        registry.send(conn, events.error("internal", "internal error", request_id))
    else:
        answer = events.reply(request_id, **fields)
        if answer is not None:
            registry.send(conn, answer)
        for frame_text in call.after:
            registry.send(conn, frame_text)
    # Seats the op attached go to the core's signal relay only now that its frames
    # (held signals first) are queued.
    registry.route_seats()
