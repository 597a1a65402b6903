"""Session tokens: the `session` of `welcome`, which a later `hello` may `resume`.

A resume on a new connection takes over the previous connection's subscriptions (the
core closes that one with 4009 if it is still open), so one session is never served twice
at once. The registry is bounded per user, per tenant and in all: past a bound the
oldest session *of that user* (then of that tenant, then of the server) is forgotten,
so that logging in over and over pushes out only one's own sessions, and a tenant's
only its own until the server's bound (a forgotten session's resume starts fresh).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

#: Sessions remembered at most; past it the oldest are forgotten (their resume starts fresh).
MAX_SESSIONS = 200_000
#: Sessions kept per user: a person's devices and tabs, many times over.
MAX_SESSIONS_PER_USER = 32
#: Sessions kept per tenant: a quarter of the server's.
MAX_SESSIONS_PER_TENANT = 50_000


@dataclass
class SessionRecord:
    """Whose a session token is, and its latest connection (open or ended)."""

    tenant: str
    user: str
    conn: int


class SessionRegistry:
    """Maps session tokens to their owner and current connection."""

    def __init__(
        self,
        limit: int = MAX_SESSIONS,
        *,
        per_user: int = MAX_SESSIONS_PER_USER,
        per_tenant: int = MAX_SESSIONS_PER_TENANT,
    ) -> None:
        #: Every session, least recently opened or resumed first.
        self._records: OrderedDict[str, SessionRecord] = OrderedDict()
        #: The tokens of each user and of each tenant, in the same order.
        self._of_user: dict[tuple[str, str], OrderedDict[str, None]] = {}
        self._of_tenant: dict[str, OrderedDict[str, None]] = {}
        self._limit, self._per_user, self._per_tenant = limit, per_user, per_tenant
        #: Sessions forgotten at a bound, by the bound (user, tenant, server), for the metrics.
        self.evicted = {"user": 0, "tenant": 0, "server": 0}

    def __len__(self) -> int:
        return len(self._records)

    def owner(self, token: object) -> tuple[str, str] | None:
        """(tenant, user) of a known session token, else None."""
        record = self._records.get(token) if isinstance(token, str) else None
        return (record.tenant, record.user) if record is not None else None

    def open(self, tenant: str, user: str, conn: int, resume: object) -> tuple[str, bool, int | None]:
        """Opens or resumes a session on `conn`.

        Returns:
            (token, resumed, the session's previous connection when resumed).
        """
        if isinstance(resume, str):
            record = self._records.get(resume)
            if record is not None and (record.tenant, record.user) == (tenant, user):
                previous = record.conn if record.conn != conn else None
                record.conn = conn
                self._records.move_to_end(resume)
                self._of_user[(tenant, user)].move_to_end(resume)
                self._of_tenant[tenant].move_to_end(resume)
                return resume, True, previous
        token = secrets.token_urlsafe(18)
        self._records[token] = SessionRecord(tenant, user, conn)
        mine = self._of_user.setdefault((tenant, user), OrderedDict())
        ours = self._of_tenant.setdefault(tenant, OrderedDict())
        mine[token] = ours[token] = None
        for tokens, bound, name in (
            (mine, self._per_user, "user"),
            (ours, self._per_tenant, "tenant"),
            (self._records, self._limit, "server"),
        ):
            while len(tokens) > bound:
                self._forget(next(iter(tokens)))
                self.evicted[name] += 1
        return token, False, None

    def _forget(self, token: str) -> None:
        record = self._records.pop(token)
        who = (record.tenant, record.user)
        mine, ours = self._of_user[who], self._of_tenant[record.tenant]
        del mine[token], ours[token]
        if not mine:
            del self._of_user[who]
        if not ours:
            del self._of_tenant[record.tenant]
