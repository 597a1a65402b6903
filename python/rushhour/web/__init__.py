"""The web client served at `/`: the static files of this package, read once and kept.

Only the files listed by `assets` are served, each under `/<name>`: a request names a
key of that table or nothing, so no path can reach outside the package (or to its
Python files).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

#: Media types by file extension; any other extension is never served.
CONTENT_TYPES = {
    "html": b"text/html; charset=utf-8",
    "js": b"text/javascript; charset=utf-8",
    "css": b"text/css; charset=utf-8",
}
#: Names served: flat, lowercase, no dots but the extension's. Anything else in the
#: package (this module, caches, editor files) stays private.
_NAME = re.compile(r"[a-z][a-z0-9-]*\.(html|js|css)")
#: The page served for `/`.
INDEX = "index.html"


@dataclass(frozen=True)
class Asset:
    """One static file, ready to send."""

    body: bytes
    content_type: bytes


@functools.cache
def assets() -> dict[bytes, Asset]:
    """URL path → file, for every servable file of the package (read once, on first use)."""
    table: dict[bytes, Asset] = {}
    for entry in resources.files(__name__).iterdir():
        match = _NAME.fullmatch(entry.name)
        if match is None or not entry.is_file():
            continue
        table[b"/" + entry.name.encode()] = Asset(entry.read_bytes(), CONTENT_TYPES[match.group(1)])
    table[b"/"] = table[b"/" + INDEX.encode()]
    return table


def asset(path: bytes) -> Asset | None:
    """The file served at the URL path `path` (query string removed), if any."""
    return assets().get(path)
