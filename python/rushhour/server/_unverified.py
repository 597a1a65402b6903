"""Hellos whose token fails verification, limited per source address.

A token is verified before it counts against its tenant's admission share, so a forged
token naming a tenant takes nothing of that tenant's. Each such hello is closed 4001 at
once and charged to a token bucket of its source address (its own buckets, apart from
admission's). Past its bucket an address's hellos are closed 1013 before any work (no
signature check, no JSON), with `{"retry_after_ms": M}`, until the bucket has a token
again. The happy path pays nothing for this: the peer's address is read (one
`getpeername`) only on a failure, or while some address is over its bucket.

Sans-IO: the time is passed in as `now_s` (monotonic seconds).
"""

from __future__ import annotations

import math
from collections import OrderedDict

#: Failed hellos per second per address, and the burst: far above a person mistyping
#: or a client with a stale token retrying, far below a flood.
BAD_TOKEN_RATE = 10.0
BAD_TOKEN_BURST = 50.0
#: Addresses remembered at most; the least recently failed go first (a forgotten
#: address starts with a full bucket again, which only ever lets someone in).
MAX_ADDRESSES = 100_000


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens, self.stamp = tokens, now


class AddressLimiter:
    """A token bucket of failed hellos per source address (module doc)."""

    def __init__(self, rate: float = BAD_TOKEN_RATE, burst: float = BAD_TOKEN_BURST) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("bad token rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        #: Until when some address may be over its bucket (monotonic seconds): before
        #: it, every hello's address is checked; after it, none is.
        self._blocked_until = float("-inf")

    def any_blocked(self, now_s: float) -> bool:
        """Whether some address may be over its bucket now (else none need checking)."""
        return now_s < self._blocked_until

    def wait_ms(self, address: str, now_s: float) -> int | None:
        """None when `address` may try a hello now, else how long until it may."""
        bucket = self._buckets.get(address)
        if bucket is None:
            return None
        self._refill(bucket, now_s)
        if bucket.tokens >= 1.0:
            return None
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate * 1000))

    def failed(self, address: str, now_s: float) -> None:
        """Charges a failed hello to `address`."""
        bucket = self._buckets.pop(address, None)
        if bucket is None:
            bucket = _Bucket(self.burst, now_s)
        self._buckets[address] = bucket  # most recently failed last
        while len(self._buckets) > MAX_ADDRESSES:
            self._buckets.popitem(last=False)
        self._refill(bucket, now_s)
        bucket.tokens = max(0.0, bucket.tokens - 1.0)
        if bucket.tokens < 1.0:
            self._blocked_until = max(self._blocked_until, now_s + (1.0 - bucket.tokens) / self.rate)

    def _refill(self, bucket: _Bucket, now_s: float) -> None:
        bucket.tokens = min(self.burst, bucket.tokens + max(0.0, now_s - bucket.stamp) * self.rate)
        bucket.stamp = max(bucket.stamp, now_s)
