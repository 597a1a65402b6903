"""Admission of new sessions: who may `hello` now, decided on a verified token (its
tenant and user), so that only a tenant's own logins spend its share.

Sans-IO: `Admission.admit` takes the time as `now_s` (monotonic seconds) and returns
None (go ahead) or a `Refusal`; the connection sends it and closes 1013.

- **Server bucket**: `rate` sessions/s, `burst` at most. A fresh login takes one token.
- **Fairness across tenants**: every tenant seen within `ACTIVE_WINDOW_S` is *active*
  and has a bucket, charged on each of its fresh logins and enforced only while the
  server bucket is *short* (under half full): with room to spare anyone gets in, under
  pressure a tenant gets at most its share. A tenant's share follows its demand: the
  distinct users it has waiting after a refusal, plus one (so each waiting *person*
  has the same chance whatever their company's size, and retrying faster adds no
  weight), and never less than `1 / (2 n)` of the server with `n` active tenants (a
  small tenant is never starved by a big one). Its bucket refills at `rate * share`,
  at most `burst * share`.
- **Resumes go ahead**: a `hello` resuming a known session of the same tenant and
  user is never refused; it takes a server token when there is one.
- **Refusals spread the clients out**: refused clients are remembered until their
  retry time. Served in proportion, a refused client has about everyone waiting ahead
  of it: that is `queue_pos`. The wait is the time the server
  bucket needs to serve them and this one (`base = (queue_pos + 1 - tokens) / rate`,
  at least the tenant bucket's own wait), plus a uniform jitter of up to
  `base / 2 + JITTER_MS`, capped at `MAX_RETRY_AFTER_MS`.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import OrderedDict
from dataclasses import dataclass

#: Fresh sessions per second the server takes, and the burst it absorbs: generous
#: enough that only a stampede meets them.
SESSION_RATE = 5_000.0
SESSION_BURST = 10_000.0
#: A tenant is active (shares the server) this long after its latest hello.
ACTIVE_WINDOW_S = 10.0
#: Tenants remembered at most; the least recently seen go first (a forgotten tenant's
#: bucket starts full, which only ever lets a quiet tenant in).
MAX_TENANTS = 10_000
#: Refused users remembered at most (each costs a dict and a heap entry).
MAX_QUEUE_TRACKED = 100_000
#: Jitter added to every refusal, on top of half the computed wait.
JITTER_MS = 100
#: Longest wait ever asked of a refused client.
MAX_RETRY_AFTER_MS = 60_000
#: Bucket key of a hello admitted without a tenant.
UNKNOWN_TENANT = ""


@dataclass(frozen=True)
class Refusal:
    """A refused hello: how long to wait, how many are ahead, and which bucket refused."""

    retry_after_ms: int
    queue_pos: int
    reason: str  # "server" or "tenant"


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens, self.stamp = tokens, now

    def refill(self, now: float, rate: float, burst: float) -> None:
        self.tokens = min(burst, self.tokens + max(0.0, now - self.stamp) * rate)
        self.stamp = now


class Admission:
    """Token buckets of new sessions, per server and fair across tenants (module doc)."""

    def __init__(
        self,
        rate: float = SESSION_RATE,
        burst: float = SESSION_BURST,
        *,
        enabled: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("session rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.enabled = rate, burst, enabled
        self._rng = rng if rng is not None else random.Random()
        self._server = _Bucket(burst, 0.0)
        self._started = False
        #: Tenant buckets, least recently seen first.
        self._tenants: OrderedDict[str, tuple[_Bucket, float]] = OrderedDict()
        #: Refused users still waiting, by (tenant, user), with their retry time; the
        #: (retry time, tenant, user) min-heap that expires them (stale entries skipped);
        #: and how many distinct users each tenant has waiting.
        self._waiting_users: dict[tuple[str, str | None], float] = {}
        self._waiting: list[tuple[float, str, str | None]] = []
        self._waiting_by_tenant: dict[str, int] = {}
        self._now = 0.0

    def admit(
        self, tenant: str | None, now_s: float, *, resume: bool = False, user: str | None = None
    ) -> Refusal | None:
        """Decides one hello of `user` of `tenant` (from its verified token): None admits
        it (taking its tokens), else the refusal."""
        if not self.enabled:
            return None
        self._advance(now_s)
        server = self._server
        server.refill(now_s, self.rate, self.burst)
        if resume:
            server.tokens = max(0.0, server.tokens - 1.0)
            return None
        key = tenant if tenant is not None else UNKNOWN_TENANT
        bucket = self._tenant(key, now_s)
        share = self._share(key)
        bucket.refill(now_s, self.rate * share, self.burst * share)
        short = server.tokens < self.burst / 2
        if server.tokens >= 1.0 and (not short or bucket.tokens >= 1.0):
            server.tokens -= 1.0
            bucket.tokens = max(0.0, bucket.tokens - 1.0)
            self._forget(key, user)
            return None
        queue_pos = len(self._waiting_users) - int((key, user) in self._waiting_users)
        base_s = (queue_pos + 1 - server.tokens) / self.rate
        reason = "server"
        if server.tokens >= 1.0:  # refused by its tenant bucket alone
            reason = "tenant"
            base_s = max(base_s, (1.0 - bucket.tokens) / (self.rate * share))
        base_ms = max(1, math.ceil(base_s * 1000))
        jitter = self._rng.uniform(0, base_ms / 2 + JITTER_MS)
        retry_ms = min(MAX_RETRY_AFTER_MS, base_ms + int(jitter))
        self._remember(key, user, now_s + retry_ms / 1000)
        return Refusal(retry_ms, queue_pos, reason)

    def _share(self, tenant: str) -> float:
        """The tenant's share of the server under pressure (module doc)."""
        n = len(self._tenants)
        weight = self._waiting_by_tenant.get(tenant, 0) + 1
        return max(1 / (2 * n), weight / (len(self._waiting_users) + n))

    def _remember(self, tenant: str, user: str | None, retry_s: float) -> None:
        """Counts a refused user as waiting until its retry time (a user refused again
        meanwhile keeps its first one: one heap entry per waiting user)."""
        who = (tenant, user)
        if who in self._waiting_users or len(self._waiting_users) >= MAX_QUEUE_TRACKED:
            return
        self._waiting_by_tenant[tenant] = self._waiting_by_tenant.get(tenant, 0) + 1
        self._waiting_users[who] = retry_s
        heapq.heappush(self._waiting, (retry_s, tenant, user))

    def _forget(self, tenant: str, user: str | None) -> None:
        if self._waiting_users.pop((tenant, user), None) is not None:
            left = self._waiting_by_tenant[tenant] - 1
            if left:
                self._waiting_by_tenant[tenant] = left
            else:
                del self._waiting_by_tenant[tenant]

    def queue_estimate(self, now_s: float | None = None) -> int:
        """Refused clients still waiting to retry (as of `now_s`, else the latest admit)."""
        if now_s is not None:
            self._advance(now_s)
        return len(self._waiting_users)

    def _advance(self, now_s: float) -> None:
        if not self._started:
            # The buckets start full at the first hello, whatever the clock's origin.
            self._started = True
            self._server.stamp = now_s
        self._now = max(self._now, now_s)
        waiting = self._waiting
        while waiting and waiting[0][0] <= self._now:
            retry_s, tenant, user = heapq.heappop(waiting)
            if self._waiting_users.get((tenant, user)) == retry_s:  # else admitted since
                self._forget(tenant, user)
        tenants = self._tenants
        while tenants:
            _, (_, seen) = next(iter(tenants.items()))
            if seen > self._now - ACTIVE_WINDOW_S and len(tenants) <= MAX_TENANTS:
                break
            tenants.popitem(last=False)

    def _tenant(self, tenant: str, now_s: float) -> _Bucket:
        entry = self._tenants.pop(tenant, None)
        n = len(self._tenants) + 1
        bucket = entry[0] if entry is not None else _Bucket(self.burst / n, now_s)
        self._tenants[tenant] = (bucket, now_s)
        return bucket
