"""Join admission: token buckets per server and per tenant, refused with a jittered wait."""

from __future__ import annotations

import math
import random
from collections import OrderedDict

#: Tenants whose buckets are remembered; the least recently used go first (a forgotten
#: bucket starts full, which only ever lets a quiet tenant in).
MAX_TENANT_BUCKETS = 10_000
#: Extra random wait added to a refusal, so that refused clients spread over time.
JITTER_MS = 500


class _Bucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_ms(self) -> int:
        """How long until one token is there."""
        return math.ceil(max(0.0, 1.0 - self.tokens) / self.rate * 1000)


class JoinLimiter:
    """Decides whether a join may proceed now."""

    def __init__(self, server_rate: float, server_burst: float, tenant_rate: float, tenant_burst: float) -> None:
        """Rates in joins per second, bursts in joins (the flags `--meeting-server-join-*`
        and, per tenant, `--meeting-join-*`)."""
        self._server = _Bucket(server_rate, server_burst, 0.0)
        self._tenant_rate, self._tenant_burst = tenant_rate, tenant_burst
        self._tenants: OrderedDict[str, _Bucket] = OrderedDict()
        #: Joins refused so far, by the bucket that refused (for the metrics).
        self.refused = {"server": 0, "tenant": 0}

    def admit(self, tenant: str, now_s: float) -> int | None:
        """Takes a join token; returns None when admitted, else `retry_after_ms` (jittered)."""
        bucket = self._tenants.get(tenant)
        if bucket is None:
            bucket = self._tenants[tenant] = _Bucket(self._tenant_rate, self._tenant_burst, now_s)
            while len(self._tenants) > MAX_TENANT_BUCKETS:
                self._tenants.popitem(last=False)
        else:
            self._tenants.move_to_end(tenant)
        bucket.refill(now_s)
        self._server.refill(now_s)
        if bucket.tokens < 1.0 or self._server.tokens < 1.0:
            self.refused["tenant" if bucket.tokens < 1.0 else "server"] += 1
            wait = max(bucket.wait_ms(), self._server.wait_ms(), 1)
            return wait + random.randint(0, max(wait, JITTER_MS))
        bucket.tokens -= 1.0
        self._server.tokens -= 1.0
        return None
