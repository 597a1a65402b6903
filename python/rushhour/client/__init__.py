"""A Trio client for the rushhour wire protocol, built on trio-websocket.

```python
async with open_client("ws://127.0.0.1:8080/ws", token) as client:
    await client.subscribe("general")
    await client.send("general", {"text": "hi"})
    async for event in client:
        if isinstance(event, Message):
            print(event.room, event.seq, event.sender, event.body)
```

The client reconnects on its own (jittered exponential backoff), resumes the session,
resends unanswered sends with their `cid` (the server dedupes them) and subscribes
again from the last message it delivered, so each room's messages arrive in order,
exactly once.

What happens to a request in flight when the connection drops: `send`, `subscribe`,
`unsubscribe`, `leave` and `history` are idempotent (sends by their `cid`) and are
sent again on the new connection; `request()` is too with `idempotent=True`, and
otherwise raises `ConnectionClosed`, since it may or may not have been carried out.

Meetings: `create_meeting`, `join_meeting`, `leave_meeting`, `signal`, and the host
controls `mute`, `remove`, `transfer_host`, `end_meeting`. Meeting events and relayed
signals arrive through iteration as `Event("meeting.event", ...)` and
`Event("signal", ...)`. The client keeps the seat token of every meeting it joined;
after a reconnect it rejoins each with its token before sending anything else (same
participant id and role; signals held for it follow), and yields `Rejoined` for each,
or an `error` event with the `meeting` when a seat is gone (expired, removed, ended).
It stops rejoining a meeting it left, was removed from or was fenced out of
(`replaced`: another connection took the seat), or that ended.

Layout:
- `_client.py`: `open_client`, `Client`: the Trio driver (connect, read, reconnect).
- `_requests.py`: requests awaiting replies: ids, the in-flight bound, resends.
- `_state.py`: room cursors and the reconnect policy, sans-IO.
- `_meetings.py`: the seats held, and which events end them, sans-IO.
- `_events.py`: `Message`, `Event`, `Reconnected`, `Rejoined`.
- `_errors.py`: `ClientError`, `ServerError`, `ConnectionClosed`.
"""

from rushhour.client._client import EVENT_BUFFER, Client, TokenSource, open_client
from rushhour.client._errors import ClientError, ConnectionClosed, ServerError
from rushhour.client._events import ClientEvent, Event, Message, Reconnected, Rejoined
from rushhour.client._requests import MAX_IN_FLIGHT

__all__ = [
    "EVENT_BUFFER",
    "MAX_IN_FLIGHT",
    "Client",
    "ClientError",
    "ClientEvent",
    "ConnectionClosed",
    "Event",
    "Message",
    "Reconnected",
    "Rejoined",
    "ServerError",
    "TokenSource",
    "open_client",
]
