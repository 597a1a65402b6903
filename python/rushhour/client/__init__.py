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

Layout:
- `_client.py`: `open_client`, `Client`: the Trio driver (connect, read, reconnect).
- `_requests.py`: requests awaiting replies: ids, the in-flight bound, resends.
- `_state.py`: room cursors and the reconnect policy, sans-IO.
- `_events.py`: `Message`, `Event`, `Reconnected`.
- `_errors.py`: `ClientError`, `ServerError`, `ConnectionClosed`.
"""

from rushhour.client._client import EVENT_BUFFER, Client, TokenSource, open_client
from rushhour.client._errors import ClientError, ConnectionClosed, ServerError
from rushhour.client._events import ClientEvent, Event, Message, Reconnected
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
    "ServerError",
    "TokenSource",
    "open_client",
]
