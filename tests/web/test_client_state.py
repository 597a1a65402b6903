"""The bookkeeping of rushhour.js (`rushhour-state.js`, no sockets or timers), run in the
browser as served: backoff with full jitter, the 1013 "retry after", room cursors that
never deliver twice, batched acks and reads, and seats kept across a reload."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page

from conftest import ServerProcess
from web._browser import WebSession


def run(page: Page, body: str) -> Any:
    """Runs `body` (which may `return`) with the module's exports in scope as `m`."""
    return page.evaluate(f"async () => {{ const m = await import('/rushhour-state.js'); {body} }}")


def test_backoff_and_retry_after(web: WebSession, server: ServerProcess) -> None:
    page = web.page("alice")
    page.goto(server.http + "/")
    ceilings = run(page, "return [0, 1, 2, 3, 8, 40].map((n) => m.backoffDelay(n, 30000, () => 1));")
    assert ceilings == [200, 400, 800, 1600, 30000, 30000]
    assert run(page, "return m.backoffDelay(5, 30000, () => 0);") == 0
    spread = run(page, "return Array.from({length: 200}, () => m.backoffDelay(4, 30000));")
    assert all(0 <= d <= 3200 for d in spread) and len(set(spread)) > 150  # jittered over the window
    reasons = ['{"retry_after_ms":1500}', '{"retry_after_ms":-1}', '{"retry_after_ms":1.5}', "busy", ""]
    assert run(page, f"return {reasons!r}.map(m.retryAfterFromReason);") == [1500, None, None, None, None]
    assert run(page, "return [1006, 1013, 4008, 4009, 4001, 1008].map((c) => m.RECONNECT_CODES.has(c));") == [
        True,
        True,
        True,
        True,
        False,
        False,
    ]


def test_cursors_deliver_each_message_once(web: WebSession, server: ServerProcess) -> None:
    page = web.page("alice")
    page.goto(server.http + "/")
    result = run(
        page,
        """
        const c = new m.Cursors();
        c.subscribed('general', 5, {last_seq: 9});
        const seen = [5, 6, 6, 4, 7].map((seq) => c.accept({room: 'general', seq}));
        c.subscribed('random', null, {last_seq: 3});
        return {seen, since: c.sinceFor('general', 2), again: c.resubscriptions(),
                random: c.accept({room: 'random', seq: 3})};
        """,
    )
    assert result == {
        "seen": [False, True, False, False, True],
        "since": 7,
        "again": [["general", 7], ["random", 3]],
        "random": False,
    }


def test_acks_and_reads_are_batched(web: WebSession, server: ServerProcess) -> None:
    page = web.page("alice")
    page.goto(server.http + "/")
    result = run(
        page,
        """
        const b = new m.CursorBatch();
        const added = [b.add('ack', 'r', 3), b.add('read', 'r', 2), b.add('ack', 'r', 1)];
        const first = b.take();
        b.add('read', 'r', 5);
        b.add('ack', 'r', 4);
        const second = b.take();
        const stale = b.add('read', 'r', 5);
        b.resend();
        return {added, first, second, stale, resent: b.take()};
        """,
    )
    assert result == {
        "added": [True, True, False],
        "first": [{"op": "read", "room": "r", "seq": 2}, {"op": "ack", "room": "r", "seq": 3}],
        "second": [{"op": "read", "room": "r", "seq": 5}],  # the read covers the ack
        "stale": False,
        "resent": [{"op": "read", "room": "r", "seq": 5}],
    }


def test_seats_outlive_a_reload_of_the_tab(web: WebSession, server: ServerProcess) -> None:
    page = web.page("alice")
    page.goto(server.http + "/")
    joined = """
        const s = new m.Seats(sessionStorage);
        s.setOwner('acme', 'alice');
        s.joined({meeting: 'm-1', participant: 'p-1', seat: 'token-1'});
        s.joined({meeting: 'm-2', participant: 'p-2', seat: 'token-2'});
        return s.rejoins();
    """
    assert run(page, joined) == [["m-1", "token-1"], ["m-2", "token-2"]]
    page.reload()
    after = """
        const s = new m.Seats(sessionStorage);
        s.setOwner('acme', 'alice');
        const stored = [s.token('m-1'), s.rejoins().length];
        s.event({op: 'meeting.event', meeting: 'm-1', event: 'replaced', participant: {participant: 'p-9'}});
        const others = s.token('m-1');
        s.event({op: 'meeting.event', meeting: 'm-1', event: 'replaced', participant: {participant: 'p-1'}});
        s.event({op: 'meeting.event', meeting: 'm-2', event: 'ended'});
        const gone = [s.token('m-1'), s.token('m-2'), Object.keys(sessionStorage).length];
        s.joined({meeting: 'm-3', participant: 'p-3', seat: 'token-3'});
        s.setOwner('acme', 'bob');
        return {stored, others, gone, bob: s.token('m-3')};
    """
    assert run(page, after) == {
        "stored": ["token-1", 0],  # kept for a join; rejoined after drops only once joined
        "others": "token-1",  # another participant's fencing ends nothing of ours
        "gone": [None, None, 0],
        "bob": None,  # seats are per user
    }
