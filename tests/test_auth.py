"""Token checks: the core's signature check plus the claim checks agree with PyJWT.

Every token PyJWT accepts (with the options a `hello` uses) is accepted with the same
claims, and nothing PyJWT refuses is accepted, whatever the claims or a corrupted byte.
"""

from __future__ import annotations

import base64
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rushhour import auth
from rushhour._core import is_valid_id

SECRET = "a-session-secret-" * 5  # long enough for HS384/HS512 without a warning

_times = st.one_of(
    st.integers(-86_400, 86_400).map(lambda d: int(time.time()) + d),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=3),
    st.none(),
)
_claims = st.fixed_dictionaries(
    {},
    optional={
        "sub": st.sampled_from(["alice", "bob", ""]),
        "tenant": st.sampled_from(["acme", "x" * 3]),
        "exp": _times,
        "nbf": _times,
        "iat": _times,
        "aud": st.sampled_from(["", "other"]),
        "name": st.text(max_size=5),
    },
)


def _pyjwt_accepts(token: str, key: str) -> dict[str, Any] | None:
    try:
        payload: dict[str, Any] = jwt.decode(
            token, key, algorithms=["HS256"], options={"require": ["exp", "sub", "tenant"]}
        )
    except jwt.InvalidTokenError:
        return None
    return payload


def _ours_accepts(token: str, key: str) -> auth.Claims | None:
    try:
        return auth.verify(token, key)
    except auth.InvalidToken:
        return None


@settings(max_examples=300, deadline=None)
@given(
    claims=_claims,
    key=st.sampled_from([SECRET, SECRET + "!"]),
    algorithm=st.sampled_from(["HS256", "HS256", "HS384"]),
    corrupt=st.one_of(st.none(), st.tuples(st.integers(0, 400), st.sampled_from("AaZz09-_.=!"))),
)
def test_accepts_exactly_what_pyjwt_accepts(
    claims: dict[str, Any], key: str, algorithm: str, corrupt: tuple[int, str] | None
) -> None:
    token = jwt.encode(claims, key, algorithm=algorithm)
    if corrupt is not None:
        at, char = corrupt
        at %= len(token)
        token = token[:at] + char + token[at + 1 :]
    theirs, ours = _pyjwt_accepts(token, SECRET), _ours_accepts(token, SECRET)
    if ours is not None:
        # Ours never accepts what PyJWT refuses (it may refuse more: it does not skip
        # characters outside the base64url alphabet as Python's decoder does).
        assert theirs is not None
        assert (ours.user, ours.tenant, ours.exp) == (theirs["sub"], theirs["tenant"], int(theirs["exp"]))
    elif corrupt is None and theirs is not None:
        # An intact token is refused only for checks the session layer adds: ids, and
        # time claims within ±2**53 (PyJWT takes any float).
        times = [theirs[c] for c in ("exp", "nbf", "iat") if c in theirs]
        in_range = all(abs(t) < auth.MAX_TIME_CLAIM for t in times)
        assert not (isinstance(theirs["sub"], str) and theirs["sub"] and isinstance(theirs["tenant"], str) and in_range)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (jwt.encode({"sub": "a", "tenant": "t", "exp": 1}, SECRET, algorithm="HS256"), "token expired"),
        (jwt.encode({"sub": "a", "tenant": "t"}, SECRET, algorithm="HS256"), '"exp" claim'),
        (jwt.encode({"sub": "a", "tenant": "t", "exp": 2**40}, "wrong-" + SECRET, algorithm="HS256"), "signature"),
        (jwt.encode({"sub": "a", "tenant": "t", "exp": 2**40}, SECRET, algorithm="HS512"), "alg"),
        ("not.a.token", "malformed"),
    ],
)
def test_refusals_say_why(token: str, reason: str) -> None:
    with pytest.raises(auth.InvalidToken, match=reason):
        auth.verify(token, SECRET)


# -- arbitrary JSON, correctly signed ---------------------------------------------------


def _signed(payload: bytes, key: str = SECRET) -> str:
    """An HS256 token over exactly these payload bytes (PyJWT would re-encode them)."""
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(payload).rstrip(b"=")
    mac = hmac.digest(key.encode(), header + b"." + body, "sha256")
    return b".".join((header, body, base64.urlsafe_b64encode(mac).rstrip(b"="))).decode()


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**53 - 2, max_value=2**70)
    | st.floats()  # NaN and the infinities too: Python's json writes and reads them
    | st.sampled_from([1e308, -1e308, 2.0**53, 2.0**53 - 1, -0.0])
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
_claim_names = st.sampled_from(["exp", "nbf", "iat", "sub", "tenant", "name", "role", "rooms", "aud"])
_payloads = st.one_of(
    # A valid payload with some claims replaced by anything.
    st.dictionaries(_claim_names, _json_values, max_size=5).map(
        lambda over: {"sub": "alice", "tenant": "acme", "exp": int(time.time()) + 3600, **over}
    ),
    st.dictionaries(st.one_of(_claim_names, st.text(max_size=5)), _json_values, max_size=6),
    _json_values,
)


@settings(max_examples=500, deadline=None)
@given(payload=_payloads)
def test_any_signed_json_gives_claims_or_invalid_token(payload: object) -> None:
    """Whatever a correctly signed payload holds, `verify` returns sane Claims or raises
    InvalidToken: never another exception (NaN, Infinity or 1e400 in `exp` stopped the
    server: `int(inf)` raised OverflowError)."""
    token = _signed(json.dumps(payload).encode())
    try:
        claims = auth.verify(token, SECRET)
    except auth.InvalidToken:
        return
    assert isinstance(payload, dict)
    assert isinstance(claims.exp, int) and claims.exp == int(payload["exp"]) and claims.exp > time.time() - 1
    assert is_valid_id(claims.user) and is_valid_id(claims.tenant)
    assert claims.name is None or (isinstance(claims.name, str) and len(claims.name) <= auth.MAX_NAME_CHARS)
    assert claims.role is None or (isinstance(claims.role, str) and len(claims.role) <= auth.MAX_ROLE_CHARS)
    assert claims.rooms is None or (
        len(claims.rooms) <= auth.MAX_ROOM_PATTERNS and all(isinstance(r, str) for r in claims.rooms)
    )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"sub":"a","tenant":"t","exp":NaN}',
        b'{"sub":"a","tenant":"t","exp":Infinity}',
        b'{"sub":"a","tenant":"t","exp":1e400}',
        b'{"sub":"a","tenant":"t","exp":-Infinity}',
        b'{"sub":"a","tenant":"t","exp":4102444800,"nbf":NaN}',
        b'{"sub":"a","tenant":"t","exp":4102444800,"iat":1e400}',
        b'{"sub":"a","tenant":"t","exp":true}',
        b'{"sub":"a","tenant":"t","exp":4102444800,"name":7}',
        b'{"sub":"a","tenant":"t","exp":4102444800,"role":"' + b"r" * 65 + b'"}',
        b'{"sub":"a","tenant":"t","exp":4102444800,"rooms":[' + b'"r",' * 256 + b'"r"]}',
        b'{"sub":"a","tenant":"t","exp":4102444800,"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"sub":"a","tenant":"t","exp":' + b"9" * 5000 + b"}",
    ],
)
def test_insane_claims_refused(raw: bytes) -> None:
    with pytest.raises(auth.InvalidToken):
        auth.verify(_signed(raw), SECRET)
