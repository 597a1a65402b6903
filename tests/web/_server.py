"""A test's own `rushhour serve`, which it may kill and start again on the same port and
data dir (the tests' command line from `tests/conftest.py`)."""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from conftest import ServerProcess, start_server
from web._browser import WebSession


@dataclass
class OwnServer:
    """The server processes of one test, newest last; each is ended by its PID."""

    data_dir: Path
    web: WebSession
    extra: tuple[str, ...] = ()
    processes: list[ServerProcess] = field(default_factory=list)

    @property
    def current(self) -> ServerProcess:
        return self.processes[-1]

    def start(self) -> ServerProcess:
        """Starts the server: on any free port the first time, on the same one after."""
        port = ("--port", str(self.current.port)) if self.processes else ()
        self.processes.append(start_server(self.data_dir, *self.extra, *port))
        return self.current

    def kill(self) -> None:
        """SIGKILL. Until the restart, the browser itself logs every refused attempt of
        the pages to reconnect: those console errors are expected, and only those."""
        refused = f"WebSocket connection to '{self.current.url}' failed: "
        self.web.allowed.append(re.compile(re.escape(refused) + r".*net::ERR_CONNECTION_REFUSED"))
        self.current.stop(signal.SIGKILL)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def publish(self, tenant: str, room: str, cid: str, text: str) -> int:
        """Publishes as `bot` through `POST /api/v1/publish`; returns the seq."""
        server = self.current
        payload = {"tenant": tenant, "room": room, "from": "bot", "cid": cid, "body": {"text": text}}
        req = urllib.request.Request(
            server.http + "/api/v1/publish",
            data=json.dumps(payload).encode(),
            headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            seq: int = json.loads(resp.read())["seq"]
        return seq
