"""The server is killed (SIGKILL) and restarted on the same port and data dir during a
chat: the pages reconnect by themselves and show every message exactly once, those
published through the HTTP API meanwhile and one typed while the server was down
included."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from web._browser import WebSession, messages, send, sign_in
from web._server import OwnServer


def test_pages_survive_a_server_kill_and_restart(
    web: WebSession, own_server: Callable[..., OwnServer], tenant: str
) -> None:
    server = own_server()
    alice = web.page("alice")
    bob = web.page("bob")
    sign_in(alice, server.current.http, "alice", tenant, "#room=general")
    sign_in(bob, server.current.http, "bob", tenant, "#room=general")
    for page in (alice, bob):
        page.evaluate("window.__samePage = true")  # gone if anything reloaded the page
    send(alice, "one")
    expect(bob.locator("li.msg[data-seq='1']")).to_be_visible()
    send(bob, "two")
    expect(alice.locator("li.msg[data-seq='2']")).to_be_visible()

    server.kill()
    for page in (alice, bob):
        expect(page.locator("#conn")).not_to_have_attribute("data-state", "open")
    send(alice, "typed while down")  # queued; sent with its cid once connected
    expect(alice.locator("li.msg.mine .status[data-status=pending]")).to_have_count(1)

    port = server.current.port
    assert server.start().port == port
    published = [server.publish(tenant, "general", f"bot-{i}", f"published {i}") for i in (1, 2)]
    assert published[1] == published[0] + 1

    for page in (alice, bob):
        expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        expect(page.locator("ol.messages[data-room=general] li.msg[data-seq]")).to_have_count(5)
    send(bob, "after the restart")
    texts = {"one", "two", "published 1", "published 2", "typed while down", "after the restart"}
    for page in (alice, bob):
        expect(page.locator("ol.messages[data-room=general] li.msg[data-seq]")).to_have_count(6)
        shown = messages(page, "general")
        assert [seq for seq, _, _ in shown] == [1, 2, 3, 4, 5, 6]  # each once, in order
        assert {text for _, _, text in shown} == texts
        assert shown[:2] == [(1, "alice", "one"), (2, "bob", "two")]
        assert shown[5] == (6, "bob", "after the restart")
        assert page.evaluate("window.__samePage") is True
    assert messages(alice, "general") == messages(bob, "general")
    for seq, text in zip(published, ("published 1", "published 2"), strict=True):
        assert (seq, "bot", text) in messages(alice, "general")
