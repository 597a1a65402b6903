"""Shared fixtures: a real `rushhour serve` process on 127.0.0.1 and tokens for it."""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import pytest

from rushhour.bench._servers import rushhour_command

SECRET = "test-secret-" + "0123456789abcdef" * 4  # 64+ bytes: long enough for HS512 too
API_KEY = "test-api-key"
LISTENING = re.compile(r"rushhour listening on ws://([^:/]+|\[[^\]]+\]):(\d+)/ws")


@dataclass
class ServerProcess:
    """A running `rushhour serve` child process and how to reach it."""

    proc: subprocess.Popen[str]
    host: str
    port: int
    secret: str = SECRET
    api_key: str = API_KEY
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.port}"

    def token(self, user: str, tenant: str = "acme", *, ttl: float = 3600, **claims: object) -> str:
        """An HS256 token signed with the server's secret."""
        payload: dict[str, object] = {"sub": user, "tenant": tenant, "exp": int(time.time() + ttl)}
        payload.update(claims)
        return jwt.encode(payload, self.secret, algorithm="HS256")

    def stop(self, sig: int | None = None) -> int:
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def serve_command(data_dir: Path, *extra: str, dev: bool = True) -> list[str]:
    """The `rushhour serve` command line of the tests: loopback, any free port, the test
    secret and api key."""
    return rushhour_command(SECRET, data_dir, ["--api-key", API_KEY, *(["--dev"] if dev else []), *extra])


def start_server(data_dir: Path, *extra: str, env: dict[str, str] | None = None, dev: bool = True) -> ServerProcess:
    """Starts `rushhour serve` on a free port and waits for its listening line."""
    args = serve_command(data_dir, *extra, dev=dev)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=None, text=True, env={**os.environ, **(env or {})})
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = LISTENING.search(line)
        if match:
            return ServerProcess(proc, match.group(1), int(match.group(2)), args=args)
    proc.kill()
    proc.wait()
    proc.stdout.close()
    raise RuntimeError(f"server did not start: {' '.join(args)}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the whole session; tests isolate themselves with unique tenants."""
    srv = start_server(tmp_path_factory.mktemp("data"))
    yield srv
    assert srv.stop() == 0


@pytest.fixture
def tenant() -> str:
    """A tenant no other test uses, so tests sharing a server never see each other."""
    return f"t-{uuid.uuid4().hex[:12]}"
