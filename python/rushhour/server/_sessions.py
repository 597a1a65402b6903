"""Session tokens: the `session` of `welcome`, which a later `hello` may `resume`.

A resume on a new connection takes over the previous connection's subscriptions (the
core closes that one with 4009 if it is still open), so one session is never served twice
at once. The registry is bounded: the oldest sessions go first.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

#: Sessions remembered at most; past it the oldest are forgotten (their resume starts fresh).
MAX_SESSIONS = 200_000


@dataclass
class SessionRecord:
    """Whose a session token is, and its latest connection (open or ended)."""

    tenant: str
    user: str
    conn: int


class SessionRegistry:
    """Maps session tokens to their owner and current connection."""

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self._records: OrderedDict[str, SessionRecord] = OrderedDict()
        self._limit = limit

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
                return resume, True, previous
        token = secrets.token_urlsafe(18)
        self._records[token] = SessionRecord(tenant, user, conn)
        while len(self._records) > self._limit:
            self._records.popitem(last=False)
        return token, False, None
