"""Admission control of `hello`: the buckets on a simulated clock, then over real sockets
against servers started with tiny limits."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from conftest import ServerProcess, start_server
from rushhour.config import Config
from rushhour.server._admission import JITTER_MS, MAX_RETRY_AFTER_MS, Admission
from rushhour.server._unverified import AddressLimiter
from wsutil import hello, ws_connect

RATE, BURST = 5, 5


# -- the buckets, on a simulated clock ------------------------------------------------


def test_burst_then_rate() -> None:
    a = Admission(10, 10, rng=random.Random(1))
    assert all(a.admit("acme", 100.0) is None for _ in range(10))
    refusal = a.admit("acme", 100.0)
    assert refusal is not None and refusal.reason == "server" and refusal.queue_pos == 0
    # One token comes back every 100 ms.
    assert a.admit("acme", 100.15) is None
    assert a.admit("acme", 100.15) is not None


def test_jitter_bounds_and_queue() -> None:
    a = Admission(10, 1, rng=random.Random(2))
    assert a.admit("acme", 0.0) is None
    refusals = [a.admit("acme", 0.0, user=f"u{i}") for i in range(50)]
    waits = [r.retry_after_ms for r in refusals if r is not None]
    assert len(waits) == 50
    for i, r in enumerate(refusals):
        assert r is not None
        # Every refused user before it is ahead of it.
        assert r.queue_pos == i
        base = (i + 1) * 100  # ms the bucket needs for those ahead and this one
        assert base <= r.retry_after_ms <= min(MAX_RETRY_AFTER_MS, base + base // 2 + JITTER_MS)
    assert len(set(waits)) > 40, "refusals are jittered"
    assert a.queue_estimate(0.0) == 50
    assert a.queue_estimate(MAX_RETRY_AFTER_MS / 1000) == 0


def test_fairness_on_simulated_clock() -> None:
    """Big tries 300 times/s, small twice a second, on a server of 10/s: small always
    gets in, big gets the rest."""
    a = Admission(10, 10, rng=random.Random(3))
    small_ok = small_tries = big_ok = 0
    for step in range(1000):  # 10 s in steps of 10 ms
        now = step * 0.01
        big_ok += sum(a.admit("big", now) is None for _ in range(3))
        if step % 50 == 0:
            small_tries += 1
            small_ok += a.admit("small", now) is None
    assert small_ok == small_tries == 20
    assert 70 <= big_ok <= 10 + 10 * 10 - small_ok


def test_fair_share_refuses_the_flooder_first() -> None:
    """Whenever the big tenant has just been refused, a small one still gets in: the
    big one was held to its share before the server bucket ran dry."""
    a = Admission(10, 10, rng=random.Random(4))
    assert a.admit("small", 0.0) is None  # both tenants are active
    reasons = set()
    for step in range(20):
        now = step * 0.5
        for _ in range(100):
            refusal = a.admit("big", now)
            if refusal is not None:
                reasons.add(refusal.reason)
                break
        else:
            raise AssertionError("big was never refused")
        assert a.admit("small", now) is None
    assert reasons == {"tenant"}


def _jain(xs: list[float]) -> float:
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def test_service_follows_demand_across_tenants_on_simulated_clock() -> None:
    """10 tenants of Zipf sizes log in 5x faster than the server admits, every client
    obeying retry_after_ms: at every moment each tenant has about the same fraction of
    its clients served (Jain's index of served/demand), the flood ends, and a client
    retrying early gains nothing."""
    rng = random.Random(5)
    a = Admission(100, 100, rng=rng)
    sizes = [round(300 / (k + 1)) for k in range(10)]  # 300, 150, 100 … 30: 878 in all
    arrivals = sorted(
        (rng.uniform(0, 1.75), t, f"u{i}") for t, size in enumerate(sizes) for i in range(size)
    )  # 878 logins in 1.75 s: 5x the 100/s limit
    due = [(at, t, user) for at, t, user in arrivals]
    served = [0] * len(sizes)
    indices = []
    for step in range(3000):  # 30 s in steps of 10 ms
        now = step * 0.01
        ready = [d for d in due if d[0] <= now]
        due = [d for d in due if d[0] > now]
        for _, t, user in ready:
            refusal = a.admit(f"t{t}", now, user=user)
            if refusal is None:
                served[t] += 1
            else:
                due.append((now + refusal.retry_after_ms / 1000, t, user))
        if now >= 1.0 and step % 50 == 0 and due:
            indices.append(_jain([served[t] / sizes[t] for t in range(len(sizes))]))
    assert served == sizes, "everyone is served by the end"
    assert indices and min(indices) >= 0.95, indices
    # The same user refused again before its retry time counts once.
    b = Admission(1, 1, rng=random.Random(6))
    assert b.admit("x", 0.0, user="a") is None
    for _ in range(20):
        assert b.admit("x", 0.0, user="eager") is not None
    assert b.queue_estimate(0.0) == 1


def test_resume_never_refused_and_disabled_admits_all() -> None:
    a = Admission(1, 1)
    assert a.admit("acme", 0.0) is None
    assert a.admit("acme", 0.0) is not None
    assert all(a.admit("acme", 0.0, resume=True) is None for _ in range(100))
    off = Admission(1, 1, enabled=False)
    assert all(off.admit("acme", 0.0) is None for _ in range(100))
    assert off.queue_estimate(0.0) == 0


def test_config_flags() -> None:
    assert Config().admission == "on"
    with pytest.raises(ValueError):
        Config(admission="maybe")
    with pytest.raises(ValueError):
        Config(session_rate=0)


# -- over real sockets ----------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server admitting 5 fresh sessions/s, burst 5."""
    srv = start_server(tmp_path, "--session-rate", str(RATE), "--session-burst", str(BURST))
    yield srv
    assert srv.stop() == 0


def attempt(srv: ServerProcess, user: str, tenant: str, **extra: Any) -> tuple[dict[str, Any], Any]:
    """One connection and hello: (the answer, the close frame received or None)."""
    with ws_connect(srv.url) as ws:
        answer = hello(ws, srv.token(user, tenant), **extra)
        if answer["op"] == "welcome":
            return answer, None
        with pytest.raises(ConnectionClosed) as info:
            for _ in range(10):
                ws.recv(timeout=10)
        return answer, info.value.rcvd


def refused(srv: ServerProcess, tenant: str, limit: int = 200) -> tuple[dict[str, Any], Any]:
    """Fresh hellos until one is refused (at most `limit`)."""
    for i in range(limit):
        answer, close = attempt(srv, f"u{i}", tenant)
        if answer["op"] == "error":
            return answer, close
    raise AssertionError(f"no refusal in {limit} hellos")


def scrape(srv: ServerProcess) -> str:
    with urllib.request.urlopen(srv.http + "/metrics", timeout=10) as resp:
        return resp.read().decode()  # type: ignore[no-any-return]


def healthz(srv: ServerProcess) -> int:
    try:
        with urllib.request.urlopen(srv.http + "/healthz", timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        e.close()
        return e.code


@pytest.mark.timeout(60)
def test_refusal_frame_and_close(tiny: ServerProcess, tenant: str) -> None:
    answer, close = refused(tiny, tenant)
    assert list(answer) == ["op", "code", "message", "retry_after_ms", "queue_pos"]
    assert answer["code"] == "overloaded"
    assert close is not None and close.code == 1013
    assert json.loads(close.reason) == {"retry_after_ms": answer["retry_after_ms"]}
    # More refusals while flooding: waits bounded and jittered, queue positions present.
    answers = [answer] + [a for a, _ in (attempt(tiny, "late", tenant) for _ in range(8)) if a["op"] == "error"]
    assert len(answers) >= 3
    for a in answers:
        assert 1 <= a["retry_after_ms"] <= MAX_RETRY_AFTER_MS
        assert isinstance(a["queue_pos"], int) and a["queue_pos"] >= 0
    assert len({a["retry_after_ms"] for a in answers}) > 1
    assert max(a["queue_pos"] for a in answers) > 0
    # While refused clients wait to retry, /healthz still answers: 503 overloaded.
    assert healthz(tiny) == 503
    text = scrape(tiny)
    assert 'rushhour_admission_admitted_total{kind="fresh"}' in text
    assert 'rushhour_admission_refused_total{reason="server"}' in text
    assert 'rushhour_hellos_total{outcome="overloaded"}' in text
    assert "rushhour_admission_queue " in text


@pytest.mark.timeout(60)
def test_resume_goes_ahead(tiny: ServerProcess, tenant: str) -> None:
    welcome, _ = attempt(tiny, "alice", tenant)
    assert welcome["op"] == "welcome"
    for _ in range(3):
        refused(tiny, tenant)
        again, _ = attempt(tiny, "alice", tenant, resume=welcome["session"])
        assert again["op"] == "welcome" and again["resumed"] is True
    assert 'rushhour_admission_admitted_total{kind="resume"} 3.0' in scrape(tiny)


@pytest.mark.timeout(120)
def test_small_tenant_served_while_big_one_floods(tiny: ServerProcess, tenant: str) -> None:
    big, small = tenant + "-big", tenant + "-small"
    stop = threading.Event()
    big_outcomes: list[str] = []

    def flood() -> None:
        for i in range(3000):  # ignores retry_after_ms: a stampede
            if stop.is_set():
                return
            answer, _ = attempt(tiny, f"b{i}", big)
            big_outcomes.append(answer["op"])

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        # The flood has emptied the server bucket before the small tenant shows up.
        deadline = time.monotonic() + 30
        while big_outcomes.count("error") < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert big_outcomes.count("error") >= 5
        refused_before = big_outcomes.count("error")
        served = 0
        for _ in range(3):
            for _try in range(40):  # obeys retry_after_ms, as a client should
                answer, _ = attempt(tiny, "s", small)
                if answer["op"] == "welcome":
                    served += 1
                    break
                time.sleep(min(answer["retry_after_ms"], 2000) / 1000)
        assert served == 3
        assert big_outcomes.count("error") > refused_before, "the big tenant was still flooding"
    finally:
        stop.set()
        thread.join(timeout=30)
    assert 'rushhour_admission_refused_total{reason="tenant"}' in scrape(tiny)


@pytest.mark.timeout(60)
def test_admission_off_serves_everyone(tmp_path: Path, tenant: str) -> None:
    srv = start_server(
        tmp_path, "--session-rate", str(RATE), "--session-burst", str(BURST), env={"RUSHHOUR_ADMISSION": "off"}
    )
    try:
        for i in range(4 * BURST):
            answer, _ = attempt(srv, f"u{i}", tenant)
            assert answer["op"] == "welcome"
        assert "rushhour_admission_refused_total{" not in scrape(srv)
    finally:
        assert srv.stop() == 0


# -- forged tokens naming a tenant --------------------------------------------------------

#: The flood: processes sending hellos with forged tokens, each from its own loopback
#: address, each bounded in count and time.
FLOOD_PROCESSES = 3
FLOOD_MAX_HELLOS = 20_000
#: Honest users of the victim tenant logging in over and over, obeying retry_after_ms.
HONEST_USERS = 8
WINDOW_S = 10.0
FLOOD_RATE, FLOOD_BURST = 10, 20

_FLOOD_SCRIPT = r"""
import base64, os, socket, sys, time
import jwt
host, port, source, tenant = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
seconds, limit = float(sys.argv[5]), int(sys.argv[6])
sent = closed_4001 = 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline and sent < limit:
    claims = {"sub": f"f{sent}", "tenant": tenant, "exp": int(time.time()) + 3600}
    token = jwt.encode(claims, "forged" * 8, algorithm="HS256")
    try:
        s = socket.create_connection((host, port), timeout=5, source_address=(source, 0))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError
            buf += chunk
        payload = ('{"op":"hello","token":"%s"}' % token).encode()
        mask = os.urandom(4)
        head = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big")  # a token is over 125 bytes
        s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        sent += 1
        rest = buf.split(b"\r\n\r\n", 1)[1]
        while len(rest) < 4:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
        if rest[:1] == b"\x88" and rest[2:4] == (4001).to_bytes(2, "big"):
            closed_4001 += 1
        s.close()
    except OSError:
        pass
print(sent, closed_4001)
"""


def _honest_logins(srv: ServerProcess, tenant: str, seconds: float) -> int:
    """Fresh logins of `HONEST_USERS` users of `tenant` admitted within `seconds`, each
    user retrying as told by `retry_after_ms`."""
    admitted = [0] * HONEST_USERS
    deadline = time.monotonic() + seconds

    def user(i: int) -> None:
        while (left := deadline - time.monotonic()) > 0:
            answer, _ = attempt(srv, f"honest{i}", tenant)
            if answer["op"] == "welcome":
                if time.monotonic() <= deadline:
                    admitted[i] += 1
            else:
                time.sleep(min(answer["retry_after_ms"] / 1000, max(left, 0.0)))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(HONEST_USERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 30)
    return sum(admitted)


@pytest.mark.timeout(120)
def test_forged_tokens_take_nothing_of_their_tenants_share(tmp_path: Path, tenant: str) -> None:
    """A flood of unsigned hellos naming the victim tenant, from several processes and
    loopback addresses, beside the victim's honest logins: the victim gets as many in
    as without the flood (within 5 %); the forged ones are all closed 4001 (or 1013 once
    their address is over its bucket)."""
    args = ("--session-rate", str(FLOOD_RATE), "--session-burst", str(FLOOD_BURST))
    quiet = start_server(tmp_path / "quiet", *args)
    try:
        without = _honest_logins(quiet, tenant, WINDOW_S)
    finally:
        assert quiet.stop() == 0
    flooded = start_server(tmp_path / "flooded", *args)
    try:

        def flood_args(k: int) -> list[str]:
            where = [flooded.host, str(flooded.port), f"127.0.0.{2 + k}", tenant]
            return [*where, str(WINDOW_S + 1), str(FLOOD_MAX_HELLOS)]

        flood = [
            subprocess.Popen(
                [sys.executable, "-c", _FLOOD_SCRIPT, *flood_args(k)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for k in range(FLOOD_PROCESSES)
        ]
        try:
            with_flood = _honest_logins(flooded, tenant, WINDOW_S)
        finally:
            outputs = [p.communicate(timeout=60)[0] for p in flood]
        forged = [tuple(map(int, out.split())) for out in outputs]
        assert flooded.proc.poll() is None
        text = scrape(flooded)
    finally:
        assert flooded.stop() == 0
    sent = sum(s for s, _ in forged)
    print(
        f"honest logins admitted in {WINDOW_S} s: {without} without the flood, {with_flood} with {sent} forged hellos"
    )
    assert sent >= 100 * FLOOD_PROCESSES, forged
    assert all(closed > 0 for _, closed in forged), "forged hellos are closed 4001"
    assert abs(with_flood - without) < 0.05 * without, (without, with_flood, forged)
    assert 'rushhour_hellos_total{outcome="unauthorized"}' in text
    limited = re.search(r'rushhour_hellos_total\{outcome="address_limited"\} (\S+)', text)
    assert limited is not None and float(limited.group(1)) > 0, "the flood outran its addresses' buckets"


def test_failed_hellos_bucket_per_address_on_simulated_clock() -> None:
    limiter = AddressLimiter(rate=10, burst=5)
    assert not limiter.any_blocked(0.0)
    for _ in range(5):
        assert limiter.wait_ms("10.0.0.1", 0.0) is None
        limiter.failed("10.0.0.1", 0.0)
    assert limiter.any_blocked(0.0)
    assert limiter.wait_ms("10.0.0.1", 0.0) == 100  # one failure back every 100 ms
    assert limiter.wait_ms("10.0.0.2", 0.0) is None  # another address is not held back
    assert limiter.wait_ms("10.0.0.1", 0.1) is None
    assert not limiter.any_blocked(0.1)  # and the happy path checks no address again
