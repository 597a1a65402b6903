"""The core's inbound JSON check (`rushhour._core.check_json`) against Python's `json`,
on arbitrary JSON values: it accepts exactly the texts within the limits, and whatever
it accepts `json.loads` reads back."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rushhour._core import check_json

MAX_DEPTH = 64
MAX_NUMBER_CHARS = 100
SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]

texts = st.text(st.one_of(st.characters(), st.sampled_from(SURROGATES)), max_size=12)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**110), max_value=10**110),
    st.floats(),  # NaN and infinities included: json.dumps writes them, and they are not JSON
    texts,
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)


def wrap(value: Any, levels: int, in_objects: bool) -> Any:
    """`value` nested `levels` more deep: depths around the limit, which `recursive` seldom reaches."""
    for _ in range(levels):
        value = {"k": value} if in_objects else [value]
    return value


deep_values = st.builds(wrap, values, st.integers(0, MAX_DEPTH + 4), st.booleans())


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


def has_lone_surrogate(s: str) -> bool:
    """As `json.dumps` escapes it: a high surrogate followed by a low one is a pair."""
    i = 0
    while i < len(s):
        c = ord(s[i])
        if 0xD800 <= c <= 0xDBFF and i + 1 < len(s) and 0xDC00 <= ord(s[i + 1]) <= 0xDFFF:
            i += 2
            continue
        if 0xD800 <= c <= 0xDFFF:
            return True
        i += 1
    return False


def faults(value: Any, *, ascii_only: bool) -> set[str]:
    """What the check must refuse `json.dumps(value, ensure_ascii=ascii_only)` for."""
    found: set[str] = {"depth"} if depth(value) > MAX_DEPTH else set()

    def walk(v: Any) -> None:
        if isinstance(v, list):
            for item in v:
                walk(item)
        elif isinstance(v, dict):
            for key, item in v.items():
                walk(key)
                walk(item)
        elif isinstance(v, float) and not math.isfinite(v):
            found.add("not JSON")
        elif isinstance(v, int) and not isinstance(v, bool) and len(str(v)) > MAX_NUMBER_CHARS:
            found.add("number")
        elif isinstance(v, str) and (
            has_lone_surrogate(v) if ascii_only else any(0xD800 <= ord(c) <= 0xDFFF for c in v)
        ):
            found.add("surrogate")

    walk(value)
    return found


MESSAGE_OF = {"depth": "nested deeper than 64", "number": "100 characters", "surrogate": "surrogate"}


@settings(max_examples=400, deadline=None)
@given(deep_values, st.booleans())
def test_accepts_exactly_the_values_within_the_limits(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    expected = faults(value, ascii_only=ascii_only)
    if not expected:
        check_json(text)
        check_json(text.encode())
        decoded = json.loads(text)
        if not any(isinstance(s, str) and 0xD800 <= ord(c) <= 0xDFFF for s in strings(value) for c in s):
            assert decoded == value
        return
    with pytest.raises(ValueError) as refused:
        check_json(text)
    if len(expected) == 1 and (kind := next(iter(expected))) in MESSAGE_OF:
        assert MESSAGE_OF[kind] in str(refused.value)


def strings(value: Any) -> list[str]:
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *strings(v)]]
    return [value] if isinstance(value, str) else []


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet='[]{}",:0123456789-+.eE \\utrfalsn', max_size=40)))
def test_what_it_accepts_json_loads_reads(text: str) -> None:
    try:
        check_json(text)
    except ValueError:
        return
    json.loads(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("NaN", "not JSON"),
        ('{"exp": Infinity}', "not JSON"),
        ("[1e400]", "range"),
        ("[" * 65 + "]" * 65, "nested deeper than 64"),
        ("7" * 4301, "100 characters"),
        ('"\\udfff"', "surrogate"),
    ],
)
def test_refusals_name_the_limit(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        check_json(text)
    with pytest.raises(ValueError, match=reason):
        check_json(text.encode())


def test_bytes_must_be_utf8_and_other_types_are_refused() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        check_json(b'"\xff"')
    with pytest.raises(TypeError):
        check_json(5)  # type: ignore[arg-type]
