"""The client's exceptions, split by fault as in wsproto: the server refused a request
(`ServerError`, carrying the protocol error code) or the connection is gone for good
(`ConnectionClosed`, carrying the WebSocket close code)."""

from __future__ import annotations

from typing import Any

from rushhour._core import RushhourError


class ClientError(RushhourError):
    """Base class of the errors raised by `rushhour.client`."""


class ServerError(ClientError):
    """The server answered a request with an `error` frame.

    Attributes:
        code: The protocol error code (`bad_request`, `forbidden`, `rate_limited`, ...).
        message: The server's explanation, for humans.
        retry_after_ms: How long to wait before trying again (`rate_limited` and
            `overloaded` only), else None.
    """

    code: str

    def __init__(self, code: str, message: str, retry_after_ms: int | None = None) -> None:
        # `args` follows the binding's convention: (message, retry_after_ms or None).
        super().__init__(message, retry_after_ms)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> ServerError:
        """Builds the error from an `error` frame (lenient about missing keys)."""
        retry = frame.get("retry_after_ms")
        return cls(
            str(frame.get("code", "internal")),
            str(frame.get("message", "")),
            retry if isinstance(retry, int) and not isinstance(retry, bool) else None,
        )

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ConnectionClosed(ClientError):
    """The connection is closed for good: no reconnect will be attempted.

    Raised by requests and by iteration when the server closed the connection with a
    final code (4001 unauthorized, a protocol error, ...), when any close is final
    because the client was opened with `reconnect=False`, when the first connection
    could not be made, and by requests made after `aclose()`.

    Attributes:
        code: The WebSocket close code (1006 when the connection dropped without a close
            frame or could not be opened). Unlike `ServerError.code` this is an int: it
            comes from the transport, not from the protocol's error codes.
        reason: The close reason sent by the server, or a description of the failure.
    """

    # The base class documents `code` as a protocol error code (str); a close code is an
    # int. The brief's API fixes `ConnectionClosed(code, reason)` with the close code.
    code: int  # type: ignore[assignment]

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(reason, None)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"connection closed ({self.code}): {self.reason}" if self.reason else f"connection closed ({self.code})"
