"""rushhour: a Rust-accelerated message broker for team chat, receipts, presence and
WebRTC meeting signalling, built to survive the 9 a.m. burst.

- `serve(config)` runs the server inside your Trio nursery.
- `Broker` is the in-process broker (publish, history, subscribe) without a socket.
- `rushhour.client` is a Trio client library for the wire protocol.
"""

from rushhour import auth
from rushhour._core import (
    BadRequestError,
    ConflictError,
    Engine,
    ForbiddenError,
    InternalError,
    NotFoundError,
    OverloadedError,
    RateLimitedError,
    RushhourError,
    TooLargeError,
    UnauthorizedError,
    __version__,
)
from rushhour.broker import Broker, Published, Subscription
from rushhour.client._events import Message
from rushhour.config import Config
from rushhour.server import ServerInfo, serve

__all__ = [
    "BadRequestError",
    "Broker",
    "Config",
    "ConflictError",
    "Engine",
    "ForbiddenError",
    "InternalError",
    "Message",
    "NotFoundError",
    "OverloadedError",
    "Published",
    "RateLimitedError",
    "RushhourError",
    "ServerInfo",
    "Subscription",
    "TooLargeError",
    "UnauthorizedError",
    "__version__",
    "auth",
    "serve",
]
