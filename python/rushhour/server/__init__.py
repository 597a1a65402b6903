"""The rushhour server: `serve` runs it inside a Trio nursery."""

from rushhour.server._app import ServerInfo, serve

__all__ = ["ServerInfo", "serve"]
