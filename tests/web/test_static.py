"""The web client's files over HTTP: each under its own name with its media type, and
nothing else of the package (no path leads outside the whitelist)."""

from __future__ import annotations

import http.client
import re
from importlib import resources

import pytest

from conftest import ServerProcess

WEB = resources.files("rushhour.web")
TYPES = {"html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8"}


def get(server: ServerProcess, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    """(status, content type, body) of a request sent with `path` exactly as given."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type", ""), resp.read()
    finally:
        conn.close()


def web_files() -> list[str]:
    return sorted(e.name for e in WEB.iterdir() if e.name.rsplit(".", 1)[-1] in TYPES)


def test_every_file_is_served_with_its_type(server: ServerProcess) -> None:
    names = web_files()
    assert {"index.html", "rushhour.js", "app.js", "app.css"} <= set(names)
    for name in names:
        status, content_type, body = get(server, f"/{name}?v=1")
        assert (status, content_type) == (200, TYPES[name.rsplit(".", 1)[1]]), name
        assert body == WEB.joinpath(name).read_bytes()
    assert get(server, "/") == (200, TYPES["html"], WEB.joinpath("index.html").read_bytes())


def test_every_file_the_page_loads_is_served(server: ServerProcess) -> None:
    """The page's links and the modules' imports name served files only."""
    names = set(web_files())
    for name in names:
        text = WEB.joinpath(name).read_text()
        wanted = re.findall(r"""from '\./([^']+)'""", text) + re.findall(r'(?:href|src)="/([^"]+)"', text)
        for target in wanted:
            assert target in names, f"{name} loads {target}"
            assert get(server, f"/{target}")[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/__init__.py",
        "/../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/..%2fweb%2findex.html",
        "/web/index.html",
        "/rushhour/web/app.js",
        "/app.js/",
        "//app.js",
        "/APP.JS",
        "/app.js%00.html",
        "/index.htm",
        "/.app.js",
    ],
)
def test_nothing_else_is_served(server: ServerProcess, path: str) -> None:
    assert get(server, path)[0] == 404


def test_only_get_is_served(server: ServerProcess) -> None:
    assert get(server, "/app.js", "POST")[0] == 404
