"""Token checks: the core's signature check plus the claim checks agree with PyJWT.

Every token PyJWT accepts (with the options a `hello` uses) is accepted with the same
claims, and nothing PyJWT refuses is accepted, whatever the claims or a corrupted byte.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rushhour import auth

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
        # An intact token is refused only for claims the session layer adds: ids.
        assert not (isinstance(theirs["sub"], str) and theirs["sub"] and isinstance(theirs["tenant"], str))


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
