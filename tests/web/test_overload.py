"""An overloaded server refuses the page's hello with `retry_after_ms`: the page shows a
banner counting down, waits that long, and then connects by itself."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from web._browser import WebSession, wait_for
from web._server import OwnServer
from wsutil import hello, ws_connect

#: A fresh session every three seconds, none in reserve: a hello right after another is
#: refused for about three seconds (room enough for a slow machine between the two).
ADMISSION = ("--session-rate", "0.34", "--session-burst", "1")


def test_overload_banner_counts_down_then_connects(
    web: WebSession, own_server: Callable[..., OwnServer], tenant: str
) -> None:
    server = own_server(*ADMISSION).current
    page = web.page("alice")
    page.goto(server.http + "/#room=general")
    page.fill("#sign-in [name=user]", "alice")
    page.fill("#sign-in [name=tenant]", tenant)
    with ws_connect(server.url) as ws:  # someone else takes the only session token
        assert hello(ws, server.token("carol", tenant))["op"] == "welcome"
    page.click("#sign-in button[type=submit]")

    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(page.locator("#conn")).to_have_attribute("data-state", "waiting")
    countdown = page.locator("#banner-countdown")
    first = int(countdown.get_attribute("data-seconds") or 0)
    assert first >= 1
    wait_for(lambda: int(countdown.get_attribute("data-seconds") or first) < first, "the countdown goes down")

    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    expect(banner).to_be_hidden()
    expect(page.locator("ol.messages[data-room=general]")).to_be_visible()
