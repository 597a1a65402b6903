"""The meetings of one server: state changes shared by the ops, seats and timers.

Everything here runs on the Trio thread (control frames, connection ends and the
timer task), so no lock is needed. Deadlines are monotonic milliseconds, passed in
(`now_ms`), so the rules can be driven by a test clock.
"""

from __future__ import annotations

import heapq
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rushhour.server._faults import Faults
from rushhour.server._meetings import _events as events
from rushhour.server._meetings._limits import JoinLimiter
from rushhour.server._meetings._model import (
    CONNECTED,
    HOST,
    RECONNECTING,
    VIEWER,
    Meeting,
    Participant,
)
from rushhour.server._meetings._store import MeetingStore, MemoryMeetingStore
from rushhour.server._turn import Turn

#: Resolution of seat and meeting expiry (and of count pushes' timing).
TICK_S = 0.05
#: Broadcast viewer counts are pushed at most this often per meeting.
COUNT_INTERVAL_MS = 500
#: A meeting nobody has joined yet is kept this long (created ahead of its start).
UNJOINED_TTL_MS = 24 * 3600 * 1000
#: Meetings kept at most, in the server, per tenant and per user (their creator); past
#: one `meeting.create` is `forbidden` (a count that goes down only as meetings end: a
#: retry time would be a guess). The flags `--max-meetings*` set them.
MAX_MEETINGS = 100_000
MAX_MEETINGS_PER_TENANT = 10_000
MAX_MEETINGS_PER_USER = 100


@dataclass(frozen=True)
class MeetingLimits:
    """Meetings kept at most: in the server, per tenant, per user of a tenant."""

    server: int = MAX_MEETINGS
    tenant: int = MAX_MEETINGS_PER_TENANT
    user: int = MAX_MEETINGS_PER_USER


class OpError(Exception):
    """A refused op: its protocol error code, message and optional wait."""

    def __init__(self, code: str, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.retry_after_ms = code, message, retry_after_ms


class MeetingRegistry:
    """Every meeting of the server, the seats each connection holds, and their timers."""

    def __init__(
        self,
        turn: Turn,
        secret: str,
        seat_grace_ms: int,
        store: MeetingStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        limiter: JoinLimiter,
        limits: MeetingLimits | None = None,
        faults: Faults | None = None,
    ) -> None:
        #: Frames, seat routes and records go to the core with the turn (see `Turn`);
        #: the core relays signals between the seats routed there by itself.
        self.turn = turn
        self.out = turn.out
        self.secret = secret
        self.grace_ms = seat_grace_ms
        self.store: MeetingStore = store if store is not None else MemoryMeetingStore()
        self.clock = clock
        self.meetings: dict[str, Meeting] = {}
        #: (tenant, key) → meeting id, for idempotent creation.
        self.by_key: dict[tuple[str, str], str] = {}
        #: connection → {meeting id: participant id}: the seats it holds.
        self.seats_of_conn: dict[int, dict[str, str]] = {}
        #: (deadline ms, meeting, participant or "" for the meeting's empty deadline);
        #: stale entries are skipped when popped. At most one entry per drop within the
        #: grace time, so bounded by the seats and their reconnects.
        self.deadlines: list[tuple[float, str, str]] = []
        #: Broadcast meetings whose viewer count changed since the last push.
        self.count_dirty: set[str] = set()
        self.limiter = limiter
        self.limits = limits if limits is not None else MeetingLimits()
        #: Where an op's unexpected exception is counted and logged (rate-limited).
        self.faults = faults if faults is not None else Faults()
        #: Meetings kept per tenant and per (tenant, creator), for the limits.
        self._per_tenant: Counter[str] = Counter()
        self._per_user: Counter[tuple[str, str]] = Counter()
        #: `meeting.create` refused at a limit, by the limit (server, tenant, user).
        self.refused = {"server": 0, "tenant": 0, "user": 0}
        #: Seats given to a connection during the op being handled: the core routes
        #: signals to them once the op's frames (held signals first) are queued.
        self._unrouted: set[tuple[str, str]] = set()
        self._last_count_push = 0.0

    def now_ms(self) -> float:
        return self.clock() * 1000

    # -- sending --------------------------------------------------------------------

    # Meeting traffic is urgent: it goes ahead of chat queued for the same connection.

    def send(self, conn: int, frame: str) -> None:
        self.out.send_text(conn, frame, urgent=True)

    def emit(self, conns: Iterable[int], frame: str) -> None:
        self.out.send_text_many(list(conns), frame, urgent=True)

    def audience(self, m: Meeting, subject: Participant, *, others: bool, lifecycle: bool) -> list[int]:
        """Who hears an event about `subject`: everyone (broadcast: viewers hear only of
        presenters; of a viewer, lifecycle events go to nobody — `count` covers them —
        and host actions to presenters)."""
        conns = m.live_conns()
        if subject.role == VIEWER:
            conns = [] if lifecycle else m.presenter_conns()
        if others and subject.conn is not None:
            conns = [c for c in conns if c != subject.conn]
        elif not others and subject.conn is not None and subject.conn not in conns:
            conns.append(subject.conn)
        return conns

    def announce(self, m: Meeting, subject: Participant, name: str, *, others: bool, lifecycle: bool) -> None:
        """Bumps the epoch and emits the event: every event is newer than any roster sent
        before it (a viewer's own `muted` or `replaced` included)."""
        m.epoch += 1
        self.emit(
            self.audience(m, subject, others=others, lifecycle=lifecycle),
            events.event(m.mid, name, m.epoch, subject.roster()),
        )

    # -- persistence ----------------------------------------------------------------

    def save_meeting(self, m: Meeting) -> None:
        self.store.save(m.mid, m.snapshot())

    def save_seat(self, m: Meeting, p: Participant) -> None:
        self.store.save(f"{m.mid}/{p.pid}", p.snapshot())

    # -- meetings -------------------------------------------------------------------

    def check_room_for(self, tenant: str, user: str) -> None:
        """Refuses a new meeting of `user` of `tenant` past a limit (`MeetingLimits`),
        the user's first: it is the one they can do something about.

        Raises:
            OpError: `forbidden`, naming the limit.
        """
        limits = self.limits
        for name, count, limit in (
            ("user", self._per_user[(tenant, user)], limits.user),
            ("tenant", self._per_tenant[tenant], limits.tenant),
            ("server", len(self.meetings), limits.server),
        ):
            if count >= limit:
                self.refused[name] += 1
                whose = {"user": "you have", "tenant": "your tenant has", "server": "the server has"}[name]
                raise OpError("forbidden", f"{whose} {limit} meetings, the most allowed: end one first")

    def add_meeting(self, m: Meeting) -> None:
        """Keeps a new or restored meeting (counted against its tenant and creator)."""
        self.meetings[m.mid] = m
        self._per_tenant[m.tenant] += 1
        self._per_user[(m.tenant, m.creator)] += 1
        if m.key is not None:
            self.by_key[(m.tenant, m.key)] = m.mid

    def _drop_meeting(self, m: Meeting) -> None:
        if self.meetings.pop(m.mid, None) is None:
            return
        owner = (m.tenant, m.creator)
        self._per_tenant[m.tenant] -= 1
        self._per_user[owner] -= 1
        if self._per_tenant[m.tenant] <= 0:
            del self._per_tenant[m.tenant]
        if self._per_user[owner] <= 0:
            del self._per_user[owner]
        if m.key is not None and self.by_key.get((m.tenant, m.key)) == m.mid:
            del self.by_key[(m.tenant, m.key)]

    # -- seats ----------------------------------------------------------------------

    def attach(self, m: Meeting, p: Participant, conn: int) -> None:
        """Gives `p`'s seat to `conn` (routed for signals by `route_seats`)."""
        p.conn, p.state, p.deadline_ms = conn, CONNECTED, None
        self.seats_of_conn.setdefault(conn, {})[m.mid] = p.pid
        m.empty_deadline_ms = None
        self._unrouted.add((m.mid, p.pid))

    def release(self, m: Meeting, p: Participant) -> None:
        """Takes the seat away from its connection (if any)."""
        if p.conn is not None:
            held = self.seats_of_conn.get(p.conn)
            if held is not None and held.get(m.mid) == p.pid:
                del held[m.mid]
                if not held:
                    del self.seats_of_conn[p.conn]
            p.conn = None
            self.out.route_seat(m.mid, p.pid, None, p.role == VIEWER)

    def route_seats(self) -> None:
        """Hands the seats attached during the op just handled to the core's signal
        relay. Called once the op's frames are queued, so that a rejoining seat gets its
        held signals before any relayed one."""
        for mid, pid in self._unrouted:
            m = self.meetings.get(mid)
            p = m.participants.get(pid) if m is not None else None
            if p is not None:
                self.out.route_seat(mid, pid, p.conn, p.role == VIEWER)
        self._unrouted.clear()

    def add_participant(self, m: Meeting, p: Participant) -> None:
        m.participants[p.pid] = p
        if p.role == VIEWER:
            m.viewers += 1
            self.count_dirty.add(m.mid)

    def set_role(self, m: Meeting, p: Participant, role: str) -> None:
        if (p.role == VIEWER) != (role == VIEWER):
            m.viewers += 1 if role == VIEWER else -1
            self.count_dirty.add(m.mid)
        p.role = role
        if role == HOST:
            m.host = p.pid
        self.save_seat(m, p)
        self._unrouted.add((m.mid, p.pid))

    def connection_lost(self, conn: int) -> None:
        """A connection ended or is closing: its seats wait for a rejoin (idempotent)."""
        held = self.seats_of_conn.pop(conn, None)
        if not held:
            return
        deadline = self.now_ms() + self.grace_ms
        for mid, pid in held.items():
            m = self.meetings.get(mid)
            p = m.participants.get(pid) if m is not None else None
            if m is None or p is None or p.conn != conn:
                continue
            p.conn, p.state, p.deadline_ms = None, RECONNECTING, deadline
            self.out.route_seat(mid, pid, None, p.role == VIEWER)
            heapq.heappush(self.deadlines, (deadline, mid, pid))
            self.announce(m, p, "reconnecting", others=True, lifecycle=True)

    def drop_participant(self, m: Meeting, p: Participant, name: str) -> None:
        """Ends a seat (`left` or `removed`), hands the host role on, and starts the
        empty-meeting timer when it was the last one."""
        if name == "removed":
            self.announce(m, p, name, others=False, lifecycle=False)
        self.release(m, p)
        del m.participants[p.pid]
        self.out.unroute_seat(m.mid, p.pid)
        if p.role == VIEWER:
            m.viewers -= 1
            self.count_dirty.add(m.mid)
        if name != "removed":
            self.announce(m, p, name, others=True, lifecycle=True)
        self.store.delete(f"{m.mid}/{p.pid}")
        if m.host == p.pid:
            m.host = None
            self.migrate_host(m)
        self.save_meeting(m)
        if not m.participants:
            m.empty_deadline_ms = self.now_ms() + self.grace_ms
            heapq.heappush(self.deadlines, (m.empty_deadline_ms, m.mid, ""))

    def migrate_host(self, m: Meeting) -> None:
        """Gives the host role to the participant present longest (connected ones first)."""
        if not m.participants:
            return
        heir = min(m.participants.values(), key=lambda p: (p.state != CONNECTED, p.role == VIEWER, p.order))
        self.set_role(m, heir, HOST)
        m.epoch += 1
        self.emit(m.live_conns(), events.event(m.mid, "host_changed", m.epoch, heir.roster()))

    def end(self, m: Meeting) -> None:
        """Ends a meeting: everyone connected hears `ended`, every seat is gone."""
        m.epoch += 1
        self.emit(m.live_conns(), events.event(m.mid, "ended", m.epoch))
        for p in list(m.participants.values()):
            self.release(m, p)
            self.out.unroute_seat(m.mid, p.pid)
            self.store.delete(f"{m.mid}/{p.pid}")
        self._drop_meeting(m)
        self.count_dirty.discard(m.mid)
        self.store.delete(m.mid)

    # -- timers ---------------------------------------------------------------------

    def tick(self) -> None:
        """Expires seats and empty meetings whose time has come; pushes viewer counts."""
        now = self.now_ms()
        while self.deadlines and self.deadlines[0][0] <= now:
            deadline, mid, pid = heapq.heappop(self.deadlines)
            m = self.meetings.get(mid)
            if m is None:
                continue
            if not pid:
                if m.empty_deadline_ms == deadline and not m.participants:
                    self.end(m)
                continue
            p = m.participants.get(pid)
            if p is not None and p.state == RECONNECTING and p.deadline_ms == deadline:
                self.drop_participant(m, p, "left")
        if self.count_dirty and now - self._last_count_push >= COUNT_INTERVAL_MS:
            self._last_count_push = now
            dirty, self.count_dirty = self.count_dirty, set()
            for mid in dirty:
                m = self.meetings.get(mid)
                if m is not None and m.viewers != m.pushed_viewers:
                    m.pushed_viewers = m.viewers
                    self.emit(m.live_conns(), events.count(m.mid, m.viewers))

    # -- restart --------------------------------------------------------------------

    def restore(self) -> None:
        """Loads the stored meetings: every seat is `reconnecting`, its grace time
        counting from now."""
        records = self.store.load_all()
        now = self.now_ms()
        for key, text in records.items():
            if "/" in key:
                continue
            f = json.loads(text)
            m = Meeting(
                f["m"], f["t"], f["title"], f["key"], f["mode"], f["max"], f["creator"], f["created"],
                host=f["host"], epoch=f["epoch"] + 1, next_order=f["next"],
                removed_pids=set(f["removed_p"]), removed_users=set(f["removed_u"]),
            )  # fmt: skip
            self.add_meeting(m)
        for key, text in records.items():
            mid, _, pid = key.partition("/")
            owner = self.meetings.get(mid)
            if not pid or owner is None:
                continue
            f = json.loads(text)
            p = Participant(f["p"], f["u"], f["n"], f["r"], f["o"], muted=f["muted"], state=RECONNECTING)
            p.deadline_ms = now + self.grace_ms
            self.add_participant(owner, p)
            # A join saves its seat only: the order counter is recovered from the seats.
            owner.next_order = max(owner.next_order, p.order + 1)
            heapq.heappush(self.deadlines, (p.deadline_ms, mid, p.pid))
        for m in self.meetings.values():
            if not m.participants:
                m.empty_deadline_ms = now + self.grace_ms
                heapq.heappush(self.deadlines, (m.empty_deadline_ms, m.mid, ""))
