"""The embedding API: `rushhour.Broker` in-process, and `rushhour.serve` in a nursery."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket_url

import rushhour


async def test_publish_history_and_subscribe_in_process() -> None:
    broker = rushhour.Broker()
    first = broker.publish("acme", "general", {"text": "one"}, sender="bot", cid="a")
    assert (first.seq, first.duplicate) == (1, False)
    assert broker.publish("acme", "general", {"text": "again"}, sender="bot", cid="a").duplicate
    with trio.fail_after(10):
        async with broker.subscribe("acme", "general", since=0) as messages:
            broker.publish("acme", "general", {"text": "two"}, sender="bot")
            got = [await messages.__anext__() for _ in range(2)]
    assert [(m.seq, m.body["text"], m.sender) for m in got] == [(1, "one", "bot"), (2, "two", "bot")]
    assert [m.seq for m in broker.history("acme", "general")] == [1, 2]
    assert broker.history("globex", "general") == []


async def test_errors_are_typed() -> None:
    broker = rushhour.Broker()
    with pytest.raises(rushhour.BadRequestError) as info:
        broker.publish("acme", "bad room", {})
    assert info.value.code == "bad_request"
    assert isinstance(info.value, rushhour.RushhourError)
    with pytest.raises(rushhour.TooLargeError):
        broker.publish("acme", "r", "x" * 70_000)


async def test_serve_in_a_nursery_shares_the_broker(tmp_path: Path) -> None:
    broker = rushhour.Broker()
    config = rushhour.Config(port=0, data_dir=tmp_path, secret="s" * 32)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            info = await nursery.start(functools.partial(rushhour.serve, config, engine=broker.engine))
            token = rushhour.auth.issue(config.signing_secret, "alice", "acme")
            async with open_websocket_url(info.url) as ws:
                await ws.send_message(json.dumps({"op": "hello", "token": token}))
                assert json.loads(await ws.get_message())["op"] == "welcome"
                await ws.send_message(json.dumps({"op": "subscribe", "id": 1, "room": "general"}))
                assert json.loads(await ws.get_message())["ok"]
                broker.publish("acme", "general", {"text": "from the app"}, sender="app")
                msg = json.loads(await ws.get_message())
                assert (msg["from"], msg["body"]) == ("app", {"text": "from the app"})
            nursery.cancel_scope.cancel()
