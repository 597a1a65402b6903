"""Session tokens: HS256 JWTs signed with the server secret, verified with the algorithm
fixed by configuration (never read from the token).

Tokens are issued with PyJWT. A `hello` checks its token's signature in the core
(`verify_hs256`, ~2 µs against ~65 µs for `jwt.decode`: at 9 a.m. that check is most of
a login's cost); the claims are checked here as PyJWT would (`exp` required and in the
future, `nbf` if present not in the future).
"""

from __future__ import annotations

import json
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


def verify(token: object, secret: str) -> Claims:
    """Verifies a token and returns its claims.

    Raises:
        InvalidToken: wrong algorithm (including `none`), bad signature, a missing or
            past `exp`, or missing or malformed `sub` / `tenant` / `rooms`.
    """
    if not isinstance(token, str) or not token:
        raise InvalidToken("token missing")
    try:
        verified = verify_hs256(token, secret.encode())
        check_json(verified)  # the core's JSON limits; refuses NaN and Infinity, which json.loads takes
        payload: Any = json.loads(verified)
    except ValueError as e:  # a bad signature, another alg, malformed, or not JSON within the limits
        raise InvalidToken(f"invalid token: {e}") from None
    if not isinstance(payload, dict):
        raise InvalidToken("invalid token: the payload is not a JSON object")
    for claim in ("exp", "sub", "tenant"):
        if claim not in payload:
            raise InvalidToken(f'invalid token: Token is missing the "{claim}" claim')
    now = time.time()
    for claim in ("exp", "nbf", "iat"):
        value = payload.get(claim)
        if claim in payload and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidToken(f"invalid token: {claim} must be a number")
    if payload["exp"] <= now:
        raise InvalidToken("token expired")
    if payload.get("nbf", 0) > now:
        raise InvalidToken("invalid token: the token is not yet valid (nbf)")
    if payload.get("aud"):  # no audience is configured: such a token is meant for another
        raise InvalidToken("invalid token: Invalid audience")
    user, tenant = payload["sub"], payload["tenant"]
    if not isinstance(user, str) or not is_valid_id(user):
        raise InvalidToken("invalid sub")
    if not isinstance(tenant, str) or not is_valid_id(tenant):
        raise InvalidToken("invalid tenant")
    rooms = payload.get("rooms")
    if rooms is not None and (not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms)):
        raise InvalidToken("rooms must be a list of patterns")
    name = payload.get("name")
    role = payload.get("role")
    return Claims(
        user=user,
        tenant=tenant,
        exp=int(payload["exp"]),
        name=name if isinstance(name, str) else None,
        rooms=tuple(rooms) if rooms is not None else None,
        role=role if isinstance(role, str) else None,
    )


def issue(secret: str, user: str, tenant: str, *, ttl_s: int = DEV_TOKEN_TTL_S, **claims: object) -> str:
    """Signs a token (dev mode and tests)."""
    if not is_valid_id(user) or not is_valid_id(tenant):
        raise ValueError("user and tenant must be 1-128 chars of [A-Za-z0-9_.:@/-]")
    payload: dict[str, object] = {"sub": user, "tenant": tenant, "exp": int(time.time()) + ttl_s, **claims}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)
