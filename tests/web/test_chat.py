"""Two people chat in two browser contexts: order, sent / delivered / read marks, read
counts that move when the other reads, the read-by list, unread badges, presence."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

from conftest import ServerProcess
from web._browser import WebSession, messages, open_room, send, sign_in


def test_two_users_chat_with_receipts(web: WebSession, server: ServerProcess, tenant: str, screenshots: Path) -> None:
    alice = web.page("alice")
    bob = web.page("bob")
    sign_in(alice, server.http, "alice", tenant, "#room=general")
    sign_in(bob, server.http, "bob", tenant, "#room=general")
    expect(alice.locator("#online li[data-user=bob]")).to_be_visible()  # presence

    # Bob looks at another room: he still gets (and acks) general's messages, unread.
    open_room(bob, "random")
    send(alice, "hello bob")
    send(alice, "are you there?")
    mine = alice.locator("ol.messages[data-room=general] li.msg.mine .status")
    expect(mine).to_have_count(2)
    for i in range(2):
        expect(mine.nth(i)).to_have_attribute("data-status", "delivered")  # ✓✓: every member has it
        expect(mine.nth(i)).to_have_attribute("data-read", "0")
    badge = bob.locator("li.room[data-room=general] .badge")
    expect(badge).to_have_text("2")

    # Bob opens the room, which reads it: the read counts move on Alice's page.
    bob.click("li.room[data-room=general] a")
    expect(badge).to_be_hidden()
    for i in range(2):
        expect(mine.nth(i)).to_have_attribute("data-read", "1")
        expect(mine.nth(i)).to_contain_text("✓✓ · read by 1")

    send(bob, "hi alice")
    expected = [(1, "alice", "hello bob"), (2, "alice", "are you there?"), (3, "bob", "hi alice")]
    for page in (alice, bob):
        expect(page.locator("ol.messages[data-room=general] li.msg[data-seq]")).to_have_count(3)
        assert messages(page, "general") == expected
    # Alice has the room open, so she read Bob's message at once.
    expect(bob.locator("ol.messages[data-room=general] li.msg.mine .status")).to_have_attribute("data-read", "1")
    expect(alice.locator("ol.messages[data-room=general] li.msg[data-from=bob] .dot")).to_have_class("dot on")

    # A click on a message lists who read it.
    alice.click("ol.messages[data-room=general] li.msg[data-seq='1']")
    expect(alice.locator("li.msg[data-seq='1'] .read-by .reader")).to_have_text(["bob"])

    path = screenshots / "chat.png"
    alice.screenshot(path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
