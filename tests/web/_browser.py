"""Driving the web client in Debian's Chromium with Playwright's sync API.

Playwright objects belong to the thread that made them, so every browser here is made
and driven by the test's own (main) thread. Nothing is mocked: the page talks to a real
`rushhour serve` over real sockets, and WebRTC runs between two real pages on loopback.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, expect
from playwright.sync_api import Error as PlaywrightError

#: Debian's chromium (installed by `.ci/run`); no browser is ever downloaded.
CHROMIUM = "/usr/bin/chromium"
#: Headless on a machine without a display, a GPU or a sandbox; no traffic but ours.
#: The fake media devices feed getUserMedia without a camera or a permission prompt;
#: without the loopback flag a loopback-only machine gathers no ICE candidates.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
]
#: Bound of every wait on the page (expect and locators): generous for a loaded machine.
TIMEOUT_MS = 20_000
VIEWPORT = {"width": 1100, "height": 680}

#: Records every RTCPeerConnection the page makes, so that a test can read its state and
#: stats; the page's own code runs unchanged.
RECORD_PEER_CONNECTIONS = """
window.__peerConnections = [];
window.RTCPeerConnection = class extends window.RTCPeerConnection {
  constructor(...args) { super(...args); window.__peerConnections.push(this); }
};
"""
#: [connectionState, inbound video frames decoded] of every peer connection of the page.
PEER_STATS = """async () => {
  const out = [];
  for (const pc of window.__peerConnections) {
    let frames = 0;
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded ?? s.framesReceived ?? 0;
    });
    out.push([pc.connectionState, frames]);
  }
  return out;
}"""


@dataclass
class Problem:
    """A console error or an uncaught exception of a page."""

    user: str
    kind: str
    text: str


@dataclass
class WebSession:
    """One browser of one test: its pages (one context each, like two people) and every
    console error and uncaught exception they had."""

    browser: Browser
    launch_s: float
    problems: list[Problem] = field(default_factory=list)
    #: Console errors that the test expects (e.g. refused connections while the server
    #: is down), as regular expressions matched against the whole text.
    allowed: list[re.Pattern[str]] = field(default_factory=list)
    contexts: list[BrowserContext] = field(default_factory=list)

    def page(self, user: str) -> Page:
        """A page in a fresh context (own storage, like another person's browser)."""
        context = self.browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(RECORD_PEER_CONNECTIONS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", lambda msg: self._console(user, msg))
        page.on("pageerror", lambda error: self.problems.append(Problem(user, "pageerror", str(error))))
        return page

    def _console(self, user: str, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.problems.append(Problem(user, "console", msg.text))

    def close(self) -> None:
        """Closes every page, once the events they sent are in: a test that stops its own
        server closes its pages first, or they would log their reconnection attempts."""
        for context in self.contexts:
            for page in context.pages:
                with contextlib.suppress(PlaywrightError):
                    page.evaluate("0")  # a round trip: console events sent before it are delivered
            context.close()
        self.contexts.clear()

    def unexpected_problems(self) -> list[Problem]:
        """The problems not allowed, every page closed."""
        self.close()
        return [p for p in self.problems if not any(a.fullmatch(p.text) for a in self.allowed)]


def launch(playwright: Playwright) -> WebSession:
    """Starts Chromium and measures how long that took."""
    started = time.monotonic()
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
    return WebSession(browser, time.monotonic() - started)


# ----- the page, as a person uses it ---------------------------------------------------


def sign_in(page: Page, http: str, user: str, tenant: str, fragment: str = "") -> None:
    """Opens the page (at `fragment`, e.g. `#room=general`) and signs in with a dev token."""
    page.goto(f"{http}/{fragment}")
    page.fill("#sign-in [name=user]", user)
    page.fill("#sign-in [name=tenant]", tenant)
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#conn")).to_have_attribute("data-state", "open")
    expect(page.locator("#whoami")).to_have_text(f"{user} @ {tenant}")


def open_room(page: Page, room: str) -> None:
    page.fill("#join-room [name=room]", room)
    page.press("#join-room [name=room]", "Enter")
    expect(page.locator(f"ol.messages[data-room='{room}']")).to_be_visible()


def send(page: Page, text: str) -> None:
    page.fill("#composer [name=text]", text)
    page.press("#composer [name=text]", "Enter")


def messages(page: Page, room: str) -> list[tuple[int | None, str, str]]:
    """(seq, sender, text) of every message shown in `room`, top to bottom."""
    rows: list[list[Any]] = page.eval_on_selector_all(
        f"ol.messages[data-room='{room}'] li.msg",
        "els => els.map(e => [e.dataset.seq ?? null, e.dataset.from, e.querySelector('.text').textContent])",
    )
    return [(int(seq) if seq is not None else None, sender, text) for seq, sender, text in rows]


def peer_stats(page: Page) -> list[tuple[str, int]]:
    """(connectionState, inbound video frames) of each peer connection the page made."""
    return [(state, int(frames)) for state, frames in page.evaluate(PEER_STATS)]


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_MS / 1000) -> None:
    """Polls `check` (which may drive the page) until it holds, within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s} s")
        time.sleep(0.1)
