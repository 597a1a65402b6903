"""Session tokens: HS256 JWTs signed with the server secret, verified with the algorithm
fixed by configuration (never read from the token).

Tokens are issued with PyJWT. A `hello` checks its token's signature in the core
(`verify_hs256`, ~2 µs against ~65 µs for `jwt.decode`: at 9 a.m. that check is most of
a login's cost); the claims are checked here as PyJWT would (`exp` required and in the
future, `nbf` and `iat` if present not in the future).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import jwt

from rushhour._core import check_json, is_valid_id, verify_hs256

ALGORITHM = "HS256"
#: Lifetime of dev tokens: a working day.
DEV_TOKEN_TTL_S = 12 * 3600


class InvalidToken(Exception):
    """The token cannot open a session; the message says why (sent as the close reason)."""


@dataclass(frozen=True)
class Claims:
    """What a verified token says about its bearer."""

    user: str
    tenant: str
    exp: int
    name: str | None = None
    rooms: tuple[str, ...] | None = None
    role: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


#: Time claims (`exp`, `nbf`, `iat`) are seconds within ±2**53, where a float is exact
#: (a time before 1970 is merely past, as PyJWT takes it; NaN, infinities and 1e400 are
#: refused).
MAX_TIME_CLAIM = 2**53
#: Longest `name` and `role`, in characters.
MAX_NAME_CHARS = 256
MAX_ROLE_CHARS = 64
#: Room patterns a token may list, and the longest one (a room name is at most 128
#: characters; a pattern adds its `*`).
MAX_ROOM_PATTERNS = 256
MAX_ROOM_PATTERN_CHARS = 256


def _time_claim(payload: dict[str, Any], claim: str) -> float | None:
    """A time claim checked for type and range: an int or a finite float of magnitude
    under `MAX_TIME_CLAIM` (a bool is not a number here); None when absent."""
    if claim not in payload:
        return None
    value = payload[claim]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"invalid token: {claim} must be a number")
    if not (math.isfinite(value) and -MAX_TIME_CLAIM < value < MAX_TIME_CLAIM):
        raise InvalidToken(f"invalid token: {claim} out of range")
    return value


def _bounded_string(payload: dict[str, Any], claim: str, limit: int) -> str | None:
    value = payload.get(claim)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidToken(f"invalid token: {claim} must be a string of at most {limit} chars")
    return value


def _rooms(payload: dict[str, Any]) -> tuple[str, ...] | None:
    rooms = payload.get("rooms")
    if rooms is None:
        return None
    if (
        not isinstance(rooms, list)
        or len(rooms) > MAX_ROOM_PATTERNS
        or not all(isinstance(r, str) and len(r) <= MAX_ROOM_PATTERN_CHARS for r in rooms)
    ):
        raise InvalidToken(
            f"rooms must be a list of at most {MAX_ROOM_PATTERNS} patterns of at most {MAX_ROOM_PATTERN_CHARS} chars"
        )
    return tuple(rooms)


def verify(token: object, secret: str) -> Claims:
    """Verifies a token and returns its claims. Every claim used is checked for type
    and range first: whatever a correctly signed payload holds, the result is `Claims`
    or `InvalidToken`.

    Raises:
        InvalidToken: wrong algorithm (including `none`), bad signature, a missing or
            past `exp`, a time claim that is not a finite number in range, or a missing
            or malformed `sub` / `tenant` / `name` / `role` / `rooms`.
    """
    if not isinstance(token, str) or not token:
        raise InvalidToken("token missing")
    try:
        verified = verify_hs256(token, secret.encode())
        check_json(verified)  # the core's JSON limits; refuses NaN and Infinity, which json.loads takes
        payload: Any = json.loads(verified)
    except ValueError as e:  # a bad signature, another alg, malformed, or not JSON within the limits
        raise InvalidToken(f"invalid token: {e}"[:200]) from None
    if not isinstance(payload, dict):
        raise InvalidToken("invalid token: the payload is not a JSON object")
    for claim in ("exp", "sub", "tenant"):
        if claim not in payload:
            raise InvalidToken(f'invalid token: Token is missing the "{claim}" claim')
    exp, nbf, iat = (_time_claim(payload, claim) for claim in ("exp", "nbf", "iat"))
    assert exp is not None  # required above
    now = time.time()
    if exp <= now:
        raise InvalidToken("token expired")
    if nbf is not None and nbf > now:
        raise InvalidToken("invalid token: the token is not yet valid (nbf)")
    if iat is not None and iat > now:  # as PyJWT: issued in the future
        raise InvalidToken("invalid token: the token is not yet valid (iat)")
    if payload.get("aud"):  # no audience is configured: such a token is meant for another
        raise InvalidToken("invalid token: Invalid audience")
    user, tenant = payload["sub"], payload["tenant"]
    if not isinstance(user, str) or not is_valid_id(user):
        raise InvalidToken("invalid sub")
    if not isinstance(tenant, str) or not is_valid_id(tenant):
        raise InvalidToken("invalid tenant")
    return Claims(
        user=user,
        tenant=tenant,
        exp=int(exp),
        name=_bounded_string(payload, "name", MAX_NAME_CHARS),
        rooms=_rooms(payload),
        role=_bounded_string(payload, "role", MAX_ROLE_CHARS),
    )


def issue(secret: str, user: str, tenant: str, *, ttl_s: int = DEV_TOKEN_TTL_S, **claims: object) -> str:
    """Signs a token (dev mode and tests)."""
    if not is_valid_id(user) or not is_valid_id(tenant):
        raise ValueError("user and tenant must be 1-128 chars of [A-Za-z0-9_.:@/-]")
    payload: dict[str, object] = {"sub": user, "tenant": tenant, "exp": int(time.time()) + ttl_s, **claims}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)
