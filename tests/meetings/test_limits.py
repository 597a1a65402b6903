"""What a user keeps is bounded per user and per tenant as well as per server: one user,
or one tenant, cannot keep another tenant from creating meetings, even after a restart
(unjoined meetings are durable and kept a day), nor push out others' sessions."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ServerProcess, start_server
from meetings._peer import Peer
from rushhour.server._sessions import SessionRegistry
from wsutil import Honest, hello, scrape_text, ws_connect

PER_USER, PER_TENANT, SERVER = 4, 10, 16
LIMITS = (
    "--max-meetings",
    str(SERVER),
    "--max-meetings-per-tenant",
    str(PER_TENANT),
    "--max-meetings-per-user",
    str(PER_USER),
)


def _fill(srv: ServerProcess, tenant: str, users: int, tries: int = 50) -> tuple[int, list[dict[str, object]]]:
    """`users` users of `tenant` each create meetings until refused (at most `tries`):
    the meetings created and the refusals."""
    created, refusals = 0, []
    for i in range(users):
        peer = Peer(srv, f"mallory{i}", tenant)
        try:
            for _ in range(tries):
                answer = peer.req("meeting.create", title="spam")
                if answer["op"] == "error":
                    refusals.append(answer)
                    break
                created += 1
        finally:
            peer.close()
    return created, refusals


@pytest.mark.timeout(120)
def test_one_user_or_tenant_cannot_keep_another_from_creating_meetings(tmp_path: Path, tenant: str) -> None:
    attacker, victim = tenant + "-a", tenant + "-v"
    srv = start_server(tmp_path, *LIMITS)
    try:
        honest = Honest(srv.url, srv.token("reader", victim), srv.token("writer", victim))
        try:
            created, refusals = _fill(srv, attacker, users=1)
            assert created == PER_USER
            assert refusals[0]["code"] == "forbidden" and "you have" in str(refusals[0]["message"])
            honest.exchange()
            # More users of the same tenant: held to the tenant's share.
            more, refusals = _fill(srv, attacker, users=4)
            assert created + more == PER_TENANT
            assert any("your tenant has" in str(r["message"]) for r in refusals)
            honest.exchange()
            owner = Peer(srv, "owner", victim)
            try:
                for _ in range(3):
                    owner.ok("meeting.create", title="mine")
            finally:
                owner.close()
            text = scrape_text(srv.http)
            assert 'rushhour_meetings_refused_total{limit="user"}' in text
            assert 'rushhour_meetings_refused_total{limit="tenant"}' in text
        finally:
            honest.close()
    finally:
        assert srv.stop() == 0
    # After a restart the meetings are back, and counted again.
    srv = start_server(tmp_path, *LIMITS)
    try:
        _, refusals = _fill(srv, attacker, users=1, tries=1)
        assert refusals and refusals[0]["code"] == "forbidden"
        owner = Peer(srv, "owner", victim)
        try:
            owner.ok("meeting.create", title="after the restart")
        finally:
            owner.close()
    finally:
        assert srv.stop() == 0


@pytest.mark.timeout(60)
def test_an_ended_meeting_frees_its_place(tmp_path: Path, tenant: str) -> None:
    srv = start_server(tmp_path, *LIMITS)
    try:
        alice = Peer(srv, "alice", tenant)
        try:
            mids = [alice.ok("meeting.create", title=f"m{i}")["meeting"] for i in range(PER_USER)]
            alice.err("meeting.create", "forbidden", title="one too many")
            alice.ok("meeting.join", meeting=mids[0])
            alice.ok("meeting.end", meeting=mids[0])
            alice.ok("meeting.create", title="in its place")
            alice.err("meeting.create", "forbidden", title="one too many again")
        finally:
            alice.close()
    finally:
        assert srv.stop() == 0


def test_sessions_past_a_users_bound_push_out_only_their_own() -> None:
    reg = SessionRegistry(limit=100, per_user=2, per_tenant=5)
    bob, _, _ = reg.open("acme", "bob", 1, None)
    globex, _, _ = reg.open("globex", "carol", 2, None)
    alice = [reg.open("acme", "alice", 10 + i, None)[0] for i in range(50)]
    assert reg.owner(bob) == ("acme", "bob") and reg.owner(globex) == ("globex", "carol")
    assert [reg.owner(t) is not None for t in alice] == [False] * 48 + [True] * 2
    # A tenant's many users push out only that tenant's sessions.
    acme = [reg.open("acme", f"u{i}", 100 + i, None)[0] for i in range(50)]
    assert reg.owner(globex) == ("globex", "carol")
    assert sum(reg.owner(t) is not None for t in [bob, *alice, *acme]) == 5
    assert reg.evicted["user"] == 48 and reg.evicted["tenant"] > 0 and len(reg) == 6


@pytest.mark.timeout(60)
def test_logging_in_again_and_again_forgets_only_ones_own_sessions(tmp_path: Path, tenant: str) -> None:
    srv = start_server(tmp_path, "--max-sessions-per-user", "2")
    try:
        with ws_connect(srv.url) as ws:
            bob = hello(ws, srv.token("bob", tenant))["session"]
        for _ in range(5):
            with ws_connect(srv.url) as ws:
                assert hello(ws, srv.token("mallory", tenant))["op"] == "welcome"
        with ws_connect(srv.url) as ws:
            assert hello(ws, srv.token("bob", tenant), resume=bob)["resumed"] is True
        assert 'rushhour_sessions_evicted_total{limit="user"} 3.0' in scrape_text(srv.http)
    finally:
        assert srv.stop() == 0
