"""Fixtures of the browser tests: one Playwright driver for the package, one Chromium per
test (timed), the screenshot directory, and a summary of the timings at the end.

The tests are plain sync functions: pytest-trio (trio_mode) only takes over coroutine
functions, so Playwright's sync API runs on the main thread, outside any event loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Playwright, sync_playwright

from web._browser import WebSession, launch
from web._server import OwnServer

#: Seconds of this run, printed at the end: the driver's start, and per browser test its
#: Chromium start and its setup, call and teardown phases (setup includes that start).
_DRIVER_START: list[float] = []
_TIMINGS: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """Playwright's driver, started once for the browser tests."""
    started = time.monotonic()
    with sync_playwright() as driver:
        _DRIVER_START.append(time.monotonic() - started)
        yield driver


@pytest.fixture
def web(playwright: Playwright, request: pytest.FixtureRequest) -> Iterator[WebSession]:
    """A fresh Chromium for one test; at its end, no page may have logged a console error
    or thrown an uncaught exception (beyond what the test allowed)."""
    session = launch(playwright)
    _TIMINGS[request.node.nodeid] = {"chromium start": session.launch_s}
    try:
        yield session
        problems = session.unexpected_problems()
        assert not problems, "console errors or uncaught exceptions:\n" + "\n".join(map(str, problems))
    finally:
        session.browser.close()


@pytest.fixture
def own_server(web: WebSession, tmp_path: Path) -> Iterator[Callable[..., OwnServer]]:
    """Starts a server of the test's own (extra flags as arguments), which the test may
    kill and restart; ends them all, after closing the pages (which would otherwise log
    their attempts to reconnect)."""
    started: list[OwnServer] = []

    def start(*extra: str) -> OwnServer:
        server = OwnServer(tmp_path / f"data-{len(started)}", web, extra)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        web.close()
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests save their screenshots: `RUSHHOUR_SCREENSHOTS`, else a temporary
    directory of the run."""
    configured = os.environ.get("RUSHHOUR_SCREENSHOTS")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    timings = _TIMINGS.get(report.nodeid)
    if timings is not None:
        timings[report.when] = report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TIMINGS:
        return
    terminalreporter.section("web client timings (s)")
    terminalreporter.write_line(f"playwright driver start {sum(_DRIVER_START):.2f}")
    for nodeid, timings in _TIMINGS.items():
        phases = ", ".join(f"{name} {seconds:.2f}" for name, seconds in timings.items())
        terminalreporter.write_line(f"{nodeid.rsplit('::', 1)[-1]}: {phases}")
