"""pytest-benchmark: publish → N deliveries through the binding (N = 1, 100, 10,000).

One `publish` crosses into Rust once, stores the message, encodes its frame once and
queues it for N subscribers. Subscribers here have no socket (`attach(None)`), so this
measures the binding and the core, not the kernel. Run with `make bench`.
"""

from __future__ import annotations

import itertools
import json

import pytest
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Message

from rushhour import Engine

BODY = json.dumps({"t": "x" * 120})


@pytest.mark.parametrize("subscribers", [1, 100, 10_000])
def test_publish_to_n_subscribers(benchmark: pytest.FixtureRequest, subscribers: int) -> None:
    engine = Engine(max_queue_bytes=64 << 20, send_rate_per_s=1e12, send_burst=1e12)
    frame = Connection(ConnectionType.CLIENT).send(Message(data='{"op":"subscribe","room":"r"}'))
    for i in range(subscribers):
        conn = engine.attach(None)
        engine.open_session(conn, "acme", f"u{i}")
        assert engine.feed(conn, frame) is None
    published = itertools.count()
    before = engine.stats()["deliveries"]

    def publish() -> None:
        engine.publish("acme", "r", "bot", f"c{next(published)}", BODY)

    benchmark.pedantic(publish, rounds=200, iterations=1, warmup_rounds=5)
    delivered = engine.stats()["deliveries"] - before
    assert delivered == subscribers * next(published)
    benchmark.extra_info["deliveries_per_publish"] = subscribers
