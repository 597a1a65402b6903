"""Frame builders: every frame the meetings layer sends, `op` first, compact JSON."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(frame: dict[str, Any]) -> str:
    """Compact JSON (orjson: a meeting join builds four of these)."""
    return orjson.dumps(frame).decode()


def reply(request_id: object, **fields: Any) -> str | None:
    """The success reply, or None when the frame had no (integer) `id`."""
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        return None
    return dumps({"op": "reply", "id": request_id, "ok": True, **fields})


def error(code: str, message: str, request_id: object = None, retry_after_ms: int | None = None) -> str:
    frame: dict[str, Any] = {"op": "error"}
    if isinstance(request_id, int) and not isinstance(request_id, bool):
        frame["id"] = request_id
    frame.update(code=code, message=message)
    if retry_after_ms is not None:
        frame["retry_after_ms"] = retry_after_ms
    return dumps(frame)


def event(meeting: str, name: str, epoch: int, participant: dict[str, Any] | None = None, **extra: Any) -> str:
    """A `meeting.event`; `participant` is the subject's roster object."""
    frame: dict[str, Any] = {"op": "meeting.event", "meeting": meeting, "event": name}
    if participant is not None:
        frame["participant"] = participant
    frame.update(extra)
    frame["epoch"] = epoch
    return dumps(frame)


def count(meeting: str, viewers: int) -> str:
    return dumps({"op": "meeting.event", "meeting": meeting, "event": "count", "viewers": viewers})


def signal(meeting: str, sender: str, data_text: str) -> str:
    """A relayed signal; `data_text` is the sender's `data`, re-encoded compactly."""
    return f'{{"op":"signal","meeting":{json.dumps(meeting)},"from":{json.dumps(sender)},"data":{data_text}}}'
