"""What `async for event in client` yields: frozen dataclasses named as nouns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Message:
    """A message of a room, pushed by the server (`msg`) or returned by `history`.

    Attributes:
        room: The room id.
        seq: The message's position in the room: 1, 2, 3 ... without gaps.
        sender: The user id of the sender (the frame's `from` key).
        cid: The sender's id for the message (unique per sender and room).
        ts: When the server stored it, in milliseconds since the epoch.
        body: The message's JSON value, decoded.
    """

    room: str
    seq: int
    sender: str
    cid: str
    ts: int
    body: Any

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> Message:
        """Builds a message from a `msg` frame.

        Raises:
            KeyError: a required key is missing.
        """
        return cls(frame["room"], frame["seq"], frame["from"], frame["cid"], frame["ts"], frame["body"])


@dataclass(frozen=True)
class Event:
    """Any other pushed frame: receipts, presence, `meeting.event`, `signal`, errors
    without a request id ... A seat the client could not take back after a reconnect
    is an `error` event with the `meeting` it was of (see `Client.join_meeting`).

    Attributes:
        op: The frame's `op`.
        data: The whole frame, `op` included, as decoded JSON.
    """

    op: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Reconnected:
    """The connection was replaced by a new one; comes before anything the new one pushes.

    Messages missed in between are replayed after it (each room is subscribed again from
    the last message delivered), so the application needs no action; presence and
    receipt views may want a refresh. Not delivered when the event buffer is full.

    Attributes:
        resumed: Whether the server continued the previous session (`welcome.resumed`).
    """

    resumed: bool


@dataclass(frozen=True)
class Rejoined:
    """The client took its seat of a meeting back on a new connection, by itself.

    Comes after `Reconnected` and before anything the meeting sends on the new
    connection (signals held for the seat while it was away follow it, in order). The
    participant id and role are the seat's; the others got `rejoined` and expect a new
    peer connection to be negotiated.

    Attributes:
        meeting: The meeting id.
        reply: The `meeting.join` reply (without `op` and `id`): `participant`, `seat`,
            `role`, `roster`, `epoch`, `mode` (and `viewers` in broadcast mode).
    """

    meeting: str
    reply: dict[str, Any]


#: What iterating a client yields.
ClientEvent = Message | Event | Reconnected | Rejoined
