"""Seat tokens: who may take a seat back after its connection dropped.

A token is `base64url(payload).base64url(HMAC-SHA256(secret, payload))`, the payload a
compact JSON object `{"m": meeting, "p": participant, "r": role, "u": user, "exp": ms}`.
It is signed with the server secret, so it survives a restart without server state of
its own; the meeting's state still decides (a removed or expired seat is refused).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass

import orjson

#: Lifetime of a seat token: a long working day; every join hands out a fresh one.
SEAT_TOKEN_TTL_MS = 24 * 3600 * 1000


class InvalidSeat(Exception):
    """The token is not one this server signed, or it has expired."""


@dataclass(frozen=True)
class Seat:
    """What a verified seat token names."""

    meeting: str
    participant: str
    role: str
    user: str
    exp_ms: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.digest(secret.encode(), b"seat:" + payload, "sha256")


def sign(secret: str, seat: Seat) -> str:
    """A token for `seat`."""
    payload = orjson.dumps(
        {"m": seat.meeting, "p": seat.participant, "r": seat.role, "u": seat.user, "exp": seat.exp_ms}
    )
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def verify(secret: str, token: object, now_ms: int) -> Seat:
    """The seat a token names.

    Raises:
        InvalidSeat: malformed, bad signature, or past its expiry.
    """
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 2048:
        raise InvalidSeat("malformed seat token")
    body, mac = token.split(".")
    try:
        payload, given = _unb64(body), _unb64(mac)
    except (binascii.Error, ValueError):
        raise InvalidSeat("malformed seat token") from None
    if not hmac.compare_digest(_mac(secret, payload), given):
        raise InvalidSeat("bad seat token signature")
    try:
        fields = json.loads(payload)
        seat = Seat(str(fields["m"]), str(fields["p"]), str(fields["r"]), str(fields["u"]), int(fields["exp"]))
    except (ValueError, KeyError, TypeError):
        raise InvalidSeat("malformed seat token") from None
    if seat.exp_ms <= now_ms:
        raise InvalidSeat("seat token expired")
    return seat
